//! The seeded fault campaign (`./dev chaos`, docs/chaos.md): each run builds
//! the parking pipeline with fresh names (a paced feed of simulator records
//! → `weir run` ×1–3 under exactly_once with the real 1-minute grace →
//! `weir sink` → Postgres), injects a schedule of faults drawn from its seed
//! (SIGKILL of any weir process at random moments, right after a commit,
//! during a restore; SIGSTOP of a `weir run` past the session timeout; the
//! broker SIGSTOPped; Postgres restarted; an instance's state filesystem
//! full; malformed records in the feed),
//! closes every window and checks the outputs against an expectation
//! computed independently of the engine from the input topic read back.
//!
//! Driven by WEIR_CHAOS_SEED (first seed; run k uses seed + k; default: the
//! clock), WEIR_CHAOS_RUNS (1), WEIR_CHAOS_MINUTES (length of each run's
//! feed, 1.5) and WEIR_CHAOS_ONLY (fault kinds allowed, comma-separated,
//! e.g. `kill-sink,stall-broker`; default all) and WEIR_CHAOS_BROKERS (1:
//! the single broker of `./dev up`; 3: the cluster of `./dev up --brokers
//! 3`, which WEIR_BOOTSTRAP then names, with broker kills instead of
//! network faults); WEIR_CHAOS_PLAN_ONLY=1
//! prints the schedules and runs nothing. Ignored by `cargo test`: it stops
//! the shared broker and Postgres.

mod common;
mod engine_common;
mod sink_common;

#[path = "chaos/checker.rs"]
mod checker;
#[path = "chaos/proxy.rs"]
mod proxy;
#[path = "chaos/schedule.rs"]
mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use checker::Findings;
use common::metrics::{metric, scrape};
use common::tmpfs::{Filler, Tmpfs};
use common::*;
use engine_common::*;
use schedule::{Fault, Plan, SESSION_SECS};

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// WEIR_CHAOS_BROKERS: 1 (default) or 3.
fn brokers() -> usize {
    match env_var("WEIR_CHAOS_BROKERS").as_deref().map(str::trim) {
        None | Some("1") => 1,
        Some("3") => 3,
        Some(other) => panic!("WEIR_CHAOS_BROKERS {other}: 1 or 3"),
    }
}

/// ` --only KINDS` when the campaign was filtered and ` --brokers 3` on
/// the 3-node cluster (a replay needs both: they change the plan), else
/// nothing.
fn replay_flags() -> String {
    let only = env_var("WEIR_CHAOS_ONLY").map_or_else(String::new, |k| format!(" --only {}", k.trim()));
    let brokers = if brokers() == 3 { " --brokers 3" } else { "" };
    format!("{only}{brokers}")
}

/// Prints one line of the run's story, with the time since `t0`.
fn say(t0: Instant, msg: &str) {
    eprintln!("chaos [{:7.1}s] {msg}", t0.elapsed().as_secs_f64());
}

/// Sleeps `d`, failing at once if a watched weir process died meanwhile.
fn pause(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_alive();
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
}

/// A broker SIGSTOPped; SIGCONT when dropped, whatever happens.
struct StalledBroker(String);

impl Drop for StalledBroker {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// Sets the feeder's stop flag when dropped.
struct StopFlag(Arc<AtomicBool>);

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Where the run's proxy listens (the port the broker's `PROXIED` listener
/// advertises) and what it forwards to (that listener): WEIR_BOOTSTRAP_PROXIED
/// and WEIR_PROXIED_LISTENER (`./dev env`), else the ports `./dev` derives
/// from the broker's (+11 and +10).
fn proxied_addrs() -> (std::net::SocketAddr, std::net::SocketAddr) {
    let plain = bootstrap();
    let port: u16 = plain
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("WEIR_BOOTSTRAP {plain}: host:port"));
    let addr = |var: &str, default: u16| {
        let a = env_var(var).unwrap_or_else(|| format!("127.0.0.1:{default}"));
        a.parse().unwrap_or_else(|e| panic!("{var} {a}: {e} (an ip:port)"))
    };
    (
        addr("WEIR_BOOTSTRAP_PROXIED", port + 11),
        addr("WEIR_PROXIED_LISTENER", port + 10),
    )
}

/// The run's proxy between every `weir run` and the broker, started once the
/// broker's `PROXIED` listener is known to answer.
fn start_proxy() -> proxy::Proxy {
    let (listen, upstream) = proxied_addrs();
    assert!(
        std::net::TcpStream::connect_timeout(&upstream, Duration::from_secs(2)).is_ok(),
        "the broker's PROXIED listener does not answer at {upstream}: a broker started by an older \
         ./dev (without that listener) is running; run `./dev down && ./dev up`"
    );
    proxy::Proxy::start(listen, upstream)
        .unwrap_or_else(|e| panic!("proxy on {listen} (WEIR_BOOTSTRAP_PROXIED) -> {upstream}: {e}"))
}

/// The run's proxy between `weir sink` and Postgres; the sink's URL
/// through it.
fn start_pg_proxy() -> (proxy::Proxy, String) {
    let upstream = sink_common::pg_server_addr();
    let proxy = proxy::Proxy::start("127.0.0.1:0".parse().unwrap(), upstream)
        .unwrap_or_else(|e| panic!("proxy to Postgres at {upstream}: {e}"));
    let through = sink_common::pg_url_via(proxy.addr());
    (proxy, through)
}

/// Size of each instance's state tmpfs. One instance's state in a run
/// (up to 6 task databases, each with RocksDB's preallocated MANIFEST and
/// WAL) takes ~55 MiB at most (docs/chaos.md); the filler takes the rest
/// when the `StateDiskFull` fault strikes. Memory only while filled.
const STATE_MIB: u64 = 160;

/// The processes of one run and what was read from their metrics. The
/// processes are declared before the state mounts: dropped first (SIGKILL),
/// so the mounts are free to unmount, also when the run panics.
struct Pipeline {
    t0: Instant,
    dir: PathBuf,
    topo: PathBuf,
    sink_cfg: PathBuf,
    runs: Vec<Option<WeirProc>>,
    metrics: Vec<String>,
    incarnations: Vec<usize>,
    sink: Option<WeirProc>,
    sink_incarnations: usize,
    regressions: Option<f64>,
    late: f64,
    /// Between every `weir run` and the single broker (their
    /// WEIR_BOOTSTRAP); the feeder, the checker and the sink talk to the
    /// broker directly. None on the 3-node cluster. Last: dropped after
    /// the processes (the tails of their logs show their state, not the
    /// proxy gone).
    proxy: Option<proxy::Proxy>,
    /// Between `weir sink` and Postgres (`sink_pg_url`); the checker
    /// talks to Postgres directly.
    pg_proxy: proxy::Proxy,
    sink_pg_url: String,
    state_errors: f64,
    /// A filler on an instance's state tmpfs (deleted when dropped).
    filler: Option<Filler>,
    /// Each instance's state directory: a tmpfs of its own.
    mounts: Vec<Tmpfs>,
}

impl Pipeline {
    fn state(&self, i: usize) -> PathBuf {
        self.mounts[i].path().to_path_buf()
    }

    /// A lost state directory: everything on the instance's tmpfs deleted
    /// (not the mount point).
    fn wipe(&self, i: usize) {
        self.mounts[i].wipe();
        say(self.t0, &format!("deleted the state directory of run{i}"));
    }

    fn start_run(&mut self, i: usize) {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = self.dir.join(format!("run{i}.{}.log", self.incarnations[i]));
        self.incarnations[i] += 1;
        let state = self.state(i);
        let session = format!("{SESSION_SECS}s");
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("run"),
            self.topo.as_os_str(),
            OsStr::new("--state-dir"),
            state.as_os_str(),
            OsStr::new("--session-timeout"),
            OsStr::new(&session),
            OsStr::new("--metrics-addr"),
            OsStr::new(&addr),
        ];
        // On the 3-node cluster, three replicas of every topic weir
        // creates (min.insync.replicas 2 for its internal ones).
        let bootstrap = match &self.proxy {
            Some(proxy) => proxy.addr().to_string(),
            None => {
                args.extend([OsStr::new("--replication-factor"), OsStr::new("3")]);
                bootstrap()
            }
        };
        let run = WeirProc::spawn_env(&args, &log, &[("WEIR_BOOTSTRAP", &bootstrap)]);
        say(
            self.t0,
            &format!("started {} (pid {}, metrics {addr})", run.name, run.pid()),
        );
        self.metrics[i] = addr;
        self.runs[i] = Some(run);
    }

    /// Adds what a scrape of instance `i` says to the totals (once per
    /// incarnation: right before it is killed or stopped).
    fn account(&mut self, text: Option<&str>) {
        let Some(text) = text else { return };
        if let Some(r) = metric(text, "weir_offset_regressions_total", "") {
            *self.regressions.get_or_insert(0.0) += r;
        }
        self.late += metric(text, "weir_dropped_records_total", "reason=\"late\"").unwrap_or(0.0);
        self.state_errors += metric(text, "weir_state_errors_total", "kind=\"disk_full\"").unwrap_or(0.0);
    }

    fn commits(&self, i: usize) -> (f64, Option<String>) {
        let text = scrape(&self.metrics[i]);
        let n = text
            .as_deref()
            .and_then(|t| metric(t, "weir_commit_latency_seconds_count", ""))
            .unwrap_or(0.0);
        (n, text)
    }

    fn kill_run(&mut self, i: usize, scraped: Option<String>) {
        let text = scraped.or_else(|| scrape(&self.metrics[i]));
        self.account(text.as_deref());
        let run = self.runs[i].take().expect("instance running");
        let (name, pid) = (run.name.clone(), run.pid());
        run.kill();
        say(self.t0, &format!("SIGKILLed {name} (pid {pid})"));
    }

    /// Until `until`, the filler takes whatever space came free, every
    /// 250 ms.
    fn keep_full(&mut self, until: Instant) {
        while Instant::now() < until {
            if let Some(f) = self.filler.as_mut() {
                f.top_up();
            }
            pause(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(250)),
            );
        }
    }

    fn run(&self, i: usize) -> &WeirProc {
        self.runs[i].as_ref().expect("instance running")
    }

    fn start_sink(&mut self) {
        let log = self.dir.join(format!("sink.{}.log", self.sink_incarnations));
        self.sink_incarnations += 1;
        let sink = WeirProc::spawn_env(
            &[OsStr::new("sink"), self.sink_cfg.as_os_str()],
            &log,
            &[("WEIR_PG_URL", &self.sink_pg_url)],
        );
        say(self.t0, &format!("started {} (pid {})", sink.name, sink.pid()));
        self.sink = Some(sink);
    }

    fn proxy(&self) -> &proxy::Proxy {
        self.proxy
            .as_ref()
            .expect("network faults are drawn with the single broker only")
    }

    fn apply(&mut self, fault: &Fault) {
        let t0 = self.t0;
        match fault {
            Fault::KillRun { instance, down, wipe } => {
                self.kill_run(*instance, None);
                if *wipe {
                    self.wipe(*instance);
                }
                pause(*down);
                self.start_run(*instance);
            }
            Fault::KillRunAfterCommit { instance, down } => {
                let (before, _) = self.commits(*instance);
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut last = None;
                loop {
                    let (n, text) = self.commits(*instance);
                    last = text.or(last);
                    if n > before {
                        say(t0, &format!("run{instance} committed (commit {n})"));
                        break;
                    }
                    if Instant::now() >= deadline {
                        say(t0, &format!("run{instance}: no commit within 15 s; killing anyway"));
                        break;
                    }
                    check_alive();
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.kill_run(*instance, last);
                pause(*down);
                self.start_run(*instance);
            }
            Fault::KillRunDuringRestore {
                instance,
                down,
                after,
                wipe,
            } => {
                self.kill_run(*instance, None);
                if *wipe {
                    self.wipe(*instance);
                }
                pause(*down);
                self.start_run(*instance);
                pause(*after);
                self.kill_run(*instance, None);
                self.start_run(*instance);
            }
            Fault::StopRun { instance, stopped } => {
                let run = self.run(*instance);
                run.stop();
                say(t0, &format!("SIGSTOPped {} for {stopped:.1?}", run.name));
                pause(*stopped);
                self.run(*instance).cont();
                say(t0, &format!("SIGCONTed run{instance}"));
            }
            Fault::KillSink { down } => {
                let sink = self.sink.take().expect("sink running");
                let name = sink.name.clone();
                sink.kill();
                say(t0, &format!("SIGKILLed {name}"));
                pause(*down);
                self.start_sink();
            }
            Fault::StallBroker { node, stalled } => {
                let (pid, which) = match node {
                    Some(n) => (cluster3::node_pid(*n as i32).to_string(), format!("broker {n}")),
                    None => {
                        let pid_file = checkout().join(".cache/kafka/kafka.pid");
                        let pid = std::fs::read_to_string(&pid_file)
                            .unwrap_or_else(|e| panic!("{}: {e} (written by ./dev up)", pid_file.display()))
                            .trim()
                            .to_string();
                        (pid, "the broker".to_string())
                    }
                };
                let guard = StalledBroker(pid.clone());
                assert!(
                    Command::new("kill").args(["-STOP", &pid]).status().unwrap().success(),
                    "kill -STOP {pid}"
                );
                say(t0, &format!("SIGSTOPped {which} (pid {pid}) for {stalled:.1?}"));
                pause(*stalled);
                drop(guard);
                say(t0, &format!("SIGCONTed {which}"));
            }
            Fault::KillBroker { node, down } => {
                let pid = cluster3::node_pid(*node as i32);
                // Started again (./dev up --brokers 3) whatever happens.
                let guard = cluster3::StartAgain;
                assert!(
                    Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status()
                        .unwrap()
                        .success(),
                    "kill -KILL {pid}"
                );
                say(t0, &format!("SIGKILLed broker {node} (pid {pid}) for {down:.1?}"));
                pause(*down);
                let started = Instant::now();
                drop(guard);
                assert!(cluster3::cluster_running(), "broker {node} did not start again");
                say(
                    t0,
                    &format!(
                        "started broker {node} again (pid {}; the cluster whole after {:.1?})",
                        cluster3::node_pid(*node as i32),
                        started.elapsed()
                    ),
                );
            }
            Fault::RestartPostgres { down } => {
                let pg = sink_common::DevPostgres::find();
                let guard = sink_common::Restart(&pg);
                pg.stop();
                say(t0, &format!("stopped Postgres for {down:.1?}"));
                pause(*down);
                drop(guard);
                assert!(pg.running(), "Postgres did not start again");
                say(t0, "started Postgres");
            }
            Fault::PostgresStranded { after } => {
                let n = self.pg_proxy.strand_all();
                say(
                    t0,
                    &format!("stranded the sink's {n} Postgres connection(s) for good (silently)"),
                );
                pause(*after);
            }
            Fault::NetworkLatency { latency, lasting } => {
                self.proxy().set_latency(*latency);
                say(
                    t0,
                    &format!("network: {latency:.1?} latency each way for {lasting:.1?}"),
                );
                pause(*lasting);
                self.proxy().set_latency(Duration::ZERO);
                say(t0, "network: latency off");
            }
            Fault::NetworkReset { times, every } => {
                for k in 0..*times {
                    let n = self.proxy().reset_all();
                    say(t0, &format!("network: reset {n} connections ({}/{times})", k + 1));
                    pause(*every);
                }
            }
            Fault::NetworkPartition {
                instance: Some(i),
                lasting,
            } => {
                let (name, pid) = (self.run(*i).name.clone(), self.run(*i).pid());
                let n = self.proxy().isolate(pid);
                say(
                    t0,
                    &format!("network: {name} (pid {pid}) cut off ({n} connections black-holed) for {lasting:.1?}"),
                );
                pause(*lasting);
                let n = self.proxy().heal();
                say(t0, &format!("network: {name} reconnected, {n} connections reset"));
            }
            Fault::NetworkPartition {
                instance: None,
                lasting,
            } => {
                self.proxy().set_blackhole(true);
                say(
                    t0,
                    &format!(
                        "network: partition ({} connections black-holed) for {lasting:.1?}",
                        self.proxy().open()
                    ),
                );
                pause(*lasting);
                let n = self.proxy().reset_all();
                self.proxy().set_blackhole(false);
                say(t0, &format!("network: partition healed, {n} connections reset"));
            }
            Fault::NetworkRefuse { lasting } => {
                self.proxy().set_refuse(true);
                let n = self.proxy().reset_all();
                say(
                    t0,
                    &format!("network: {n} connections reset, new ones refused for {lasting:.1?}"),
                );
                pause(*lasting);
                self.proxy().set_refuse(false);
                say(t0, "network: connections accepted again");
            }
            Fault::StateDiskFull { instance, full, stop } => {
                let filler = self.mounts[*instance].fill();
                let (used, size) = self.mounts[*instance].usage();
                say(
                    t0,
                    &format!(
                        "filled the state filesystem of run{instance} for {full:.1?} ({} filler bytes; {used} of {size} used)",
                        filler.bytes
                    ),
                );
                // Held by the pipeline meanwhile: deleted even if the pause
                // panics (a process died). Kept full: what RocksDB gives
                // back (the preallocated tail of a file it closes) is taken
                // at once, as by another tenant that keeps writing.
                self.filler = Some(filler);
                let began = Instant::now();
                if let Some(stop) = stop {
                    self.keep_full(began + Duration::from_secs(1));
                    self.run(*instance).stop();
                    say(
                        t0,
                        &format!("SIGSTOPped run{instance} for {stop:.1?} (its tasks reopen on the full disk)"),
                    );
                    self.keep_full(Instant::now() + *stop);
                    self.run(*instance).cont();
                    say(t0, &format!("SIGCONTed run{instance}"));
                }
                self.keep_full(began + *full);
                self.filler = None;
                say(t0, &format!("freed the state filesystem of run{instance}"));
            }
            Fault::BadPayloads { .. } | Fault::FarFutureTimestamps { .. } => {}
        }
    }
}

/// Malformed records (each kind the parking job must dead-letter or drop).
fn bad_payload(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 => br#"{"REGION":"x","REGION_CODE":"POI001","CAPACITY":"1"#.to_vec(),
        1 => b"not json at all".to_vec(),
        2 => b"[1,2,3]".to_vec(),
        3 => Vec::new(),
        4 => br#"{"REGION":"x","REGION_CODE":"POI001","PARKING_CODE":"BAD","CAPACITY":"abc","OCCUPIED_SPOTS":"1","IS_REALTIME_STATUS_PROVIDED":"Y","LAST_UPDATE":"2025-03-31 10:00:00"}"#.to_vec(),
        _ => vec![0xff, 0xfe, b'{', 0x00],
    }
}

/// The event-time field of runs with `Plan::field_time`.
const TIME_FIELD: &str = "OBSERVED_AT";

/// The value's `OBSERVED_AT`, if it is a JSON object with one.
fn observed_at(payload: &[u8]) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()?
        .get(TIME_FIELD)?
        .as_i64()
}

/// `payload` with `OBSERVED_AT` set to `at`, if it is a JSON object.
fn with_observed_at(payload: &[u8], at: i64) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v.as_object_mut()?.insert(TIME_FIELD.into(), at.into());
    Some(v.to_string().into_bytes())
}

/// A time a device with a wrong clock could send: 2099, hours to weeks
/// past the wall clock (beyond the 1 h `max_future`), or before 1970.
fn wrong_clock(rng: &mut rand::rngs::StdRng) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    match rng.gen_range(0..3) {
        0 => 4_070_908_800_000, // 2099-01-01T00:00:00Z
        1 => now + rng.gen_range(2 * H..30 * 24 * H),
        _ => -rng.gen_range(1..1_000_000_000_000i64),
    }
}

/// The feed: `plan.rate` simulator records a second for `plan.feed`,
/// their timestamps spread evenly from `t_first`, with the plan's bursts
/// of malformed records mixed in. With `field_time`, every JSON object
/// gets `OBSERVED_AT` = its timestamp, and the plan's far-future records
/// (copies of valid ones whose `OBSERVED_AT` is wrong) are mixed in too.
fn feed_records(plan: &Plan, dir: &Path, t_first: i64) -> Vec<Input> {
    let feed_ms = plan.feed.as_millis() as i64;
    let count = (plan.rate as u64 * plan.feed.as_secs()).max(100) as usize;
    let mut out = simulate(count, plan.sim_seed, dir);
    let n = out.len() as i64;
    for (i, r) in out.iter_mut().enumerate() {
        r.timestamp = t_first + i as i64 * feed_ms / n;
    }
    let valid: Vec<usize> = (0..out.len())
        .filter(|&i| engine_common::filtered_and_mapped(&out[i].payload).is_some() && out[i].key.is_some())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed ^ 0xBAD);
    let mut wrong = Vec::new();
    for step in &plan.steps {
        match step.fault {
            Fault::BadPayloads { count } => {
                for k in 0..count {
                    out.push(Input {
                        partition: rng.gen_range(0..3),
                        timestamp: t_first + step.at.as_millis() as i64,
                        key: (k % 3 != 0).then(|| format!("BAD-{k}")),
                        payload: bad_payload(&mut rng),
                    });
                }
            }
            Fault::FarFutureTimestamps { count } => {
                for _ in 0..count {
                    let like = &out[valid[rng.gen_range(0..valid.len())]];
                    let at = wrong_clock(&mut rng);
                    wrong.push(Input {
                        partition: like.partition,
                        timestamp: t_first + step.at.as_millis() as i64,
                        key: like.key.clone(),
                        payload: with_observed_at(&like.payload, at).expect("a valid record is an object"),
                    });
                }
            }
            _ => {}
        }
    }
    if plan.field_time {
        for r in &mut out {
            if let Some(p) = with_observed_at(&r.payload, r.timestamp) {
                r.payload = p;
            }
        }
    }
    out.extend(wrong);
    out.sort_by_key(|r| r.timestamp);
    out
}

/// Produces `records` as their timestamps come due (event time advances
/// with the wall clock from `t_first`); returns how many were produced.
fn start_feeder(
    topic: String,
    records: Vec<Input>,
    t_first: i64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let p = producer();
        let start = Instant::now();
        let mut n = 0;
        for r in &records {
            let due = start + Duration::from_millis((r.timestamp - t_first).max(0) as u64);
            while Instant::now() < due {
                if stop.load(Ordering::SeqCst) {
                    return n;
                }
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
            produce(
                &p,
                &topic,
                r.partition,
                r.timestamp,
                r.key.as_deref().map(str::as_bytes),
                Some(&r.payload),
            );
            n += 1;
        }
        // The broker may be stalled right now: wait for it.
        while !stop.load(Ordering::SeqCst) {
            if rdkafka::producer::Producer::flush(&p, Duration::from_secs(5)).is_ok() {
                break;
            }
        }
        n
    })
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// One run: the pipeline, the faults, then the checks into `f`. Panics
/// (a process died, a wait timed out) are caught by the caller.
fn execute(plan: &Plan, dir: &Path, id: &str, f: &mut Findings) {
    let t0 = Instant::now();
    let (topo, [status, dlq, hourly, lots]) = topology_real_grace(dir, id);
    if plan.field_time {
        let text = std::fs::read_to_string(&topo).unwrap();
        assert!(text.contains("event_time: kafka"), "{text}");
        let field = format!("event_time: {{ field: {TIME_FIELD} }}");
        std::fs::write(&topo, text.replace("event_time: kafka", &field)).unwrap();
    }
    let free_now = free_now_topic(id);
    create_topic(&status, 3);
    create_topic(&hourly, 3);
    create_topic(&free_now, 3);
    let h0 = chrono::DateTime::parse_from_rfc3339(&data_start())
        .unwrap()
        .timestamp_millis();
    // The hour ends 75 s before the feed does (at least 5 s into it): its
    // windows close (end + 1 m grace) while faults still happen.
    let feed_ms = plan.feed.as_millis() as i64;
    let boundary = (feed_ms - 75_000).clamp(5_000, feed_ms / 2);
    let t_first = h0 + H - boundary;
    let records = feed_records(plan, dir, t_first);
    let total = records.len();
    let sink_cfg = sink_common::write_config(
        dir,
        id,
        &format!("{id}_sink_dlq"),
        "batch_size: 20\nlinger: 20ms\nconsumer:\n  session.timeout.ms: \"6000\"\n  heartbeat.interval.ms: \"1000\"\n",
        &[
            sink_common::hourly_table_yaml(&hourly, id, ""),
            sink_common::free_now_table_yaml(&free_now, id),
        ],
    );
    let n = plan.instances;
    let (pg_proxy, sink_pg_url) = start_pg_proxy();
    let mut p = Pipeline {
        t0,
        dir: dir.to_path_buf(),
        topo,
        sink_cfg,
        runs: (0..n).map(|_| None).collect(),
        metrics: vec![String::new(); n],
        incarnations: vec![0; n],
        sink: None,
        sink_incarnations: 0,
        regressions: None,
        late: 0.0,
        proxy: (plan.brokers == 1).then(start_proxy),
        pg_proxy,
        sink_pg_url,
        state_errors: 0.0,
        filler: None,
        mounts: (0..n)
            .map(|i| Tmpfs::mount(&dir.join(format!("state-{i}")), STATE_MIB))
            .collect(),
    };
    p.start_sink();
    for i in 0..n {
        p.start_run(i);
    }
    wait_group_stable(id, n, &[], Duration::from_secs(120));
    say(t0, &format!("group stable with {n} instances; feeding {total} records"));

    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopFlag(stop.clone());
    let feeder = start_feeder(status.clone(), records, t_first, stop.clone());
    let fed_at = Instant::now();
    for step in &plan.steps {
        *f.faults.entry(step.fault.kind()).or_default() += 1;
        if matches!(
            step.fault,
            Fault::BadPayloads { .. } | Fault::FarFutureTimestamps { .. }
        ) {
            continue;
        }
        pause((fed_at + step.at).saturating_duration_since(Instant::now()));
        say(t0, &format!("fault: {:?}", step.fault));
        p.apply(&step.fault);
    }
    while !feeder.is_finished() {
        pause(Duration::from_millis(200));
    }
    let produced = feeder.join().expect("feeder");
    say(t0, &format!("all faults done, {produced} records produced"));

    // The expectation, from what the input topic holds.
    let mut inputs = read_inputs(&status, produced);
    f.inputs = inputs.len();
    if plan.field_time {
        // Records whose OBSERVED_AT is not their timestamp are the wrong
        // clocks: dead-lettered, counted nowhere.
        let all = inputs.len();
        inputs.retain(|i| observed_at(&i.payload).is_none_or(|t| t == i.timestamp));
        f.wrong_clocks = all - inputs.len();
    }
    let want = expected(&inputs);
    let repartition = format!("{id}-hourly-by-region-repartition");
    wait_committed(id, &status, 3, Duration::from_secs(300));
    wait_committed(id, &repartition, 3, Duration::from_secs(300));
    say(t0, "input and repartition topics committed; sending the sentinels");
    if plan.field_time {
        // The sentinels' event time in their OBSERVED_AT too.
        let p = producer();
        let future = sentinel_time(&inputs);
        for (k, v) in sentinels(&inputs) {
            let v = with_observed_at(&v, future).expect("a sentinel is an object");
            let partition = weir::partition_for(Some(k.as_bytes()), 3, 0);
            produce(&p, &status, partition, future, Some(k.as_bytes()), Some(&v));
        }
        flush(&p);
    } else {
        send_sentinels(&status, &inputs);
    }
    let committed = consume_until(&hourly, Duration::from_secs(240), Duration::from_secs(5), |r| {
        r.len() >= want.len()
    });
    let uncommitted = consume_until_isolated(
        &hourly,
        "read_uncommitted",
        Duration::from_secs(60),
        Duration::from_secs(3),
        |r| r.len() >= committed.len(),
    );
    checker::check_windows(&committed, uncommitted.len(), &want, f);
    say(
        t0,
        &format!(
            "{} windows expected, {} committed results, {} read_uncommitted",
            want.len(),
            committed.len(),
            uncommitted.len()
        ),
    );
    let want_lots = expected_lots(&inputs);
    let lot_records = consume_until(&lots, Duration::from_secs(120), Duration::from_secs(3), |r| {
        let keys: BTreeSet<&[u8]> = r.iter().filter_map(|r| r.key.as_deref()).collect();
        want_lots.keys().all(|k| keys.contains(k.as_bytes()))
    });
    checker::check_lots(&lot_records, &want_lots, f);
    // The free spots per region now: the lots' latest statuses (the
    // sentinels' among them) added up per region.
    let want_free = expected_free_now(&expected_lots_with_sentinels(&inputs));
    f.regions_wrong = checker::diff_free_now(&read_free_now(&free_now, &want_free), &want_free).0;
    if f.wrong_clocks > 0 {
        // Each wrong clock on the dead-letter topic, once, with its reason.
        let dead = consume_until(&dlq, Duration::from_secs(60), Duration::from_secs(3), |r| {
            r.iter().filter(|d| checker::is_wrong_clock(d)).count() >= f.wrong_clocks
        });
        let n = dead.iter().filter(|d| checker::is_wrong_clock(d)).count();
        f.wrong_clocks_unaccounted = n.abs_diff(f.wrong_clocks);
    }
    // The lot table emits at every commit: most aborted records are there.
    let lots_uncommitted = consume_until_isolated(
        &lots,
        "read_uncommitted",
        Duration::from_secs(60),
        Duration::from_secs(3),
        |r| r.len() >= lot_records.len(),
    );
    f.aborted += lots_uncommitted.len() as i64 - lot_records.len() as i64;

    // The Postgres table, once the sink has caught up (or 120 s).
    let rows_want = sink_common::engine_rows(&want);
    let mut pg = sink_common::Pg::connect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let exists = pg.count(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{id}' AND tablename = 'parking_hourly_avg'"
        )) > 0;
        let got = if exists {
            sink_common::table_rows(&mut pg, id)
        } else {
            BTreeMap::new()
        };
        let (mut wrong, mut detail) = checker::diff_rows(&got, &rows_want);
        let free_exists = pg.count(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{id}' AND tablename = 'parking_free_now'"
        )) > 0;
        let free: checker::FreeNow = if free_exists {
            pg.query(&format!(
                "SELECT region_code, region, district, available_spots, realtime_lots::bigint FROM {id}.parking_free_now"
            ))
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect()
        } else {
            BTreeMap::new()
        };
        let (free_wrong, free_detail) = checker::diff_free_now(&free, &want_free);
        if detail.is_empty() {
            detail = free_detail;
        }
        wrong += free_wrong;
        (f.pg_wrong, f.pg_detail) = (wrong, detail);
        if wrong == 0 || Instant::now() >= deadline {
            break;
        }
        pause(Duration::from_millis(500));
    }
    say(t0, &format!("Postgres: {} rows wrong", f.pg_wrong));

    // Healthy to the end: each process exits 0 on SIGTERM.
    for i in 0..n {
        let text = scrape(&p.metrics[i]);
        p.account(text.as_deref());
        let run = p.runs[i].take().expect("instance running");
        let name = run.name.clone();
        match run.terminate_status() {
            Some(s) if s.success() => {}
            Some(s) => f.unhealthy.push(format!("{name}: {s} after SIGTERM")),
            None => f.unhealthy.push(format!("{name}: still running 60 s after SIGTERM")),
        }
    }
    let sink = p.sink.take().expect("sink running");
    let name = sink.name.clone();
    match sink.terminate_status() {
        Some(s) if s.success() => {}
        Some(s) => f.unhealthy.push(format!("{name}: {s} after SIGTERM")),
        None => f.unhealthy.push(format!("{name}: still running 60 s after SIGTERM")),
    }
    f.regressions = p.regressions;
    f.late = p.late;
    f.state_errors = p.state_errors;
    for (i, m) in p.mounts.iter().enumerate() {
        let (used, size) = m.usage();
        say(
            t0,
            &format!("state tmpfs of run{i} at the end: {used} of {size} bytes used"),
        );
    }
}

/// Deletes the run's topics, its Postgres schema and sink offsets.
fn clean_up(id: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topics: Vec<String> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create::<BaseConsumer>()
        .ok()
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(10)).ok())
        .map(|md| {
            md.topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|t| t.starts_with(id))
                .collect()
        })
        .unwrap_or_default();
    delete_topics(&topics.iter().map(String::as_str).collect::<Vec<_>>());
    let _ = std::panic::catch_unwind(|| {
        let mut pg = sink_common::Pg::connect();
        pg.exec(&format!("DROP SCHEMA IF EXISTS {id} CASCADE"));
        pg.exec(&format!("DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"));
    });
}

fn run_one(plan: &Plan, minutes: f64) -> Findings {
    let id = sink_common::unique_ident(&format!("chaos_s{}", plan.seed));
    let dir = std::env::temp_dir().join(format!("weir-chaos-{}", plan.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = Findings::default();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| execute(plan, &dir, &id, &mut f)));
    if let Err(e) = outcome {
        f.failure = Some(panic_message(&*e));
    }
    // Panics of any incarnation (the killed ones included).
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for l in checker::panic_lines(&text) {
                f.panics
                    .push(format!("{}: {l}", path.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    clean_up(&id);
    if f.anomalies().is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "chaos: seed {} FAILED; logs kept in {}; replay: ./dev chaos --seed {} --runs 1 --minutes {minutes}{}",
            plan.seed,
            dir.display(),
            plan.seed,
            replay_flags()
        );
    }
    f
}

#[test]
#[ignore = "the chaos campaign stops the shared broker and Postgres: ./dev chaos"]
fn chaos_campaign() {
    let first: u64 = env_var("WEIR_CHAOS_SEED").map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % 1_000_000
        },
        |s| s.trim().parse().expect("WEIR_CHAOS_SEED: a number"),
    );
    let runs: u64 = env_var("WEIR_CHAOS_RUNS").map_or(1, |s| s.trim().parse().expect("WEIR_CHAOS_RUNS: a number"));
    let minutes: f64 =
        env_var("WEIR_CHAOS_MINUTES").map_or(1.5, |s| s.trim().parse().expect("WEIR_CHAOS_MINUTES: minutes"));
    let feed = Duration::from_secs_f64((minutes * 60.0).max(20.0));
    let plan_only = env_var("WEIR_CHAOS_PLAN_ONLY").is_some_and(|v| v != "0");
    let only: Vec<String> = env_var("WEIR_CHAOS_ONLY")
        .map(|s| {
            s.split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "chaos: {runs} run(s) from seed {first}, {minutes} min of feed each, {} broker(s){}",
        brokers(),
        if only.is_empty() {
            String::new()
        } else {
            format!(", only {}", only.join(","))
        }
    );
    let began = Instant::now();
    let mut done: Vec<(Plan, Findings)> = Vec::new();
    for k in 0..runs {
        let plan = schedule::draw(first.wrapping_add(k), feed, &only, brokers());
        eprintln!(
            "\n==== chaos run {}/{runs}: seed {}, {} instance(s), {} broker(s), event time from {}, {:?} of feed at {}/s, simulator seed {} ====",
            k + 1,
            plan.seed,
            plan.instances,
            plan.brokers,
            if plan.field_time { TIME_FIELD } else { "the Kafka timestamp" },
            plan.feed,
            plan.rate,
            plan.sim_seed
        );
        for s in &plan.steps {
            eprintln!("  {s}");
        }
        if plan_only {
            continue;
        }
        let f = run_one(&plan, minutes);
        eprintln!(
            "==== seed {}: {} ====",
            plan.seed,
            if f.anomalies().is_empty() {
                "ok".to_string()
            } else {
                f.anomalies().join(", ")
            }
        );
        done.push((plan, f));
    }

    // Summary.
    eprintln!("\n==== chaos summary: {runs} run(s) in {:.0?} ====", began.elapsed());
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, f) in &done {
        for (k, n) in &f.faults {
            *by_kind.entry(k).or_default() += n;
        }
    }
    eprintln!("faults injected by kind:");
    for (k, n) in &by_kind {
        eprintln!("  {k:<26} {n}");
    }
    eprintln!(
        "\n{:>8} {:>4} {:>6} {:>6} {:>6} {:>7} {:>5} {:>5} {:>5} {:>5} {:>6} {:>7} {:>5} {:>4} {:>7} {:>5} {:>6}  result",
        "seed",
        "inst",
        "clocks",
        "faults",
        "inputs",
        "windows",
        "lost",
        "dup",
        "twice",
        "wrong",
        "badcom",
        "aborted",
        "lots",
        "pg",
        "regress",
        "late",
        "stfull"
    );
    let mut failed = Vec::new();
    for (plan, f) in &done {
        let anomalies = f.anomalies();
        eprintln!(
            "{:>8} {:>4} {:>6} {:>6} {:>6} {:>7} {:>5} {:>5} {:>5} {:>5} {:>6} {:>7} {:>5} {:>4} {:>7} {:>5} {:>6}  {}",
            plan.seed,
            plan.instances,
            if plan.field_time {
                f.wrong_clocks.to_string()
            } else {
                "-".into()
            },
            f.faults.values().sum::<usize>(),
            f.inputs,
            f.windows,
            f.lost,
            f.duplicated,
            f.twice,
            f.wrong,
            f.bad_committed,
            f.aborted,
            f.lots_wrong,
            f.pg_wrong,
            f.regressions.map_or("absent".to_string(), |r| r.to_string()),
            f.late,
            f.state_errors,
            if anomalies.is_empty() {
                "ok".to_string()
            } else {
                anomalies.join("; ")
            }
        );
        if !f.pg_detail.is_empty() && f.pg_wrong > 0 {
            eprintln!("{:>8}   Postgres: {}", "", f.pg_detail);
        }
        for u in &f.unhealthy {
            eprintln!("{:>8}   unhealthy: {u}", "");
        }
        for l in f.panics.iter().take(5) {
            eprintln!("{:>8}   panic: {l}", "");
        }
        if let Some(msg) = &f.failure {
            eprintln!(
                "{:>8}   failure: {}",
                "",
                msg.lines().take(12).collect::<Vec<_>>().join("\n            ")
            );
        }
        if !anomalies.is_empty() {
            failed.push(plan.seed);
        }
    }
    if !failed.is_empty() {
        eprintln!("\nreplay:");
        for seed in &failed {
            eprintln!(
                "  ./dev chaos --seed {seed} --runs 1 --minutes {minutes}{}",
                replay_flags()
            );
        }
    }
    assert!(
        failed.is_empty(),
        "chaos: anomalies with seeds {failed:?} (replay commands above)"
    );
}
