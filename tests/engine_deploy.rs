//! Deploying `weir run`: what a rolling restart costs with and without
//! static membership (`--instance-id`), and the metrics/health endpoint
//! under a flood of idle connections with the common 1,024 descriptor
//! limit. Real broker; results checked against the input computed
//! independently (tests/engine_common).
//!
//! The tests of this file run one at a time (they time pauses and count
//! descriptors: a neighbour's three instances would distort both).

mod common;
mod engine_common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use engine_common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// GET `path` with timeouts: the status line's code, or `None` when the
/// server does not answer (refused, closed, silent).
fn status_of(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let code = body.split(' ').nth(1)?.parse().ok()?;
    Some((code, body))
}

/// The value of an unlabelled-but-for-topology counter in `/metrics`.
fn counter(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = status_of(addr, "/metrics")?;
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `weir run` with its own state directory and metrics address.
struct Instance {
    state: PathBuf,
    addr: SocketAddr,
    extra: Vec<String>,
    nofile: Option<u64>,
    proc: Option<WeirProc>,
    starts: usize,
}

impl Instance {
    fn new(dir: &Path, name: &str, extra: &[&str], nofile: Option<u64>) -> Instance {
        Instance {
            state: dir.join(name),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nofile,
            proc: None,
            starts: 0,
        }
    }

    fn start(&mut self, topo: &Path) {
        let mut args: Vec<std::ffi::OsString> = vec!["run".into(), topo.into()];
        args.extend(["--state-dir".into(), self.state.clone().into_os_string()]);
        args.extend(["--metrics-addr".into(), self.addr.to_string().into()]);
        args.extend(self.extra.iter().map(Into::into));
        self.starts += 1;
        let log = self.state.with_extension(format!("{}.log", self.starts));
        self.proc = Some(WeirProc::spawn_limited(&args, &log, &[], self.nofile));
    }

    fn ready(&self) -> bool {
        matches!(status_of(self.addr, "/readyz"), Some((200, _)))
    }

    /// Tasks it runs (`weir_tasks_running`), 0 before it reports any.
    fn tasks_running(&self) -> f64 {
        counter(self.addr, "weir_tasks_running").unwrap_or(0.0)
    }

    fn rebalances(&self) -> f64 {
        counter(self.addr, "weir_rebalances_total").unwrap_or(f64::NAN)
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().unwrap().pid()
    }
}

/// `(lot key, LAST_UPDATE)` of an input or a lot-status record: what
/// matches an output record to the input it reflects.
fn lot_id(key: Option<&[u8]>, payload: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some((
        String::from_utf8_lossy(key?).into_owned(),
        v.get("LAST_UPDATE")?.as_str()?.to_string(),
    ))
}

/// Sends `inputs` paced at `per_second`, noting when each lot update was
/// sent; stops early when `stop` is set. Returns the unsent rest.
fn feed(
    topic: &str,
    inputs: &[Input],
    per_second: usize,
    sent: &Mutex<HashMap<(String, String), Instant>>,
    stop: &AtomicBool,
) -> usize {
    let p = producer();
    let started = Instant::now();
    for (n, i) in inputs.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            flush(&p);
            return n;
        }
        let due = started + Duration::from_secs_f64(n as f64 / per_second as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Some(id) = lot_id(i.key.as_deref().map(str::as_bytes), &i.payload) {
            sent.lock().unwrap().entry(id).or_insert_with(Instant::now);
        }
        produce(
            &p,
            topic,
            i.partition,
            i.timestamp,
            i.key.as_deref().map(str::as_bytes),
            Some(&i.payload),
        );
        if n % 50 == 0 {
            flush(&p);
        }
    }
    flush(&p);
    inputs.len()
}

/// Reads the lot-status topic (read_committed) until `stop`: when each
/// lot update first appeared.
fn watch_lots(topic: &str, stop: &AtomicBool) -> HashMap<(String, String), Instant> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("it-lat"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut seen = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if let Some(id) = lot_id(m.key(), m.payload().unwrap_or_default()) {
                seen.entry(id).or_insert_with(Instant::now);
            }
        }
    }
    seen
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Roll {
    /// Rebalances the instances not restarted counted during each restart.
    rebalances: Vec<f64>,
    /// Per restart: seconds from SIGTERM until the instance was ready again.
    downtime: Vec<f64>,
    /// Lot-status latency (sent → visible, read_committed) of the updates
    /// sent during the roll: p50, p99, max (seconds), and how many.
    p50: f64,
    p99: f64,
    max: f64,
    samples: usize,
}

/// Three instances, restarted one by one (SIGTERM, start again, wait until
/// it is ready and the group stable) while records are fed at a steady
/// rate; the results then checked exact.
fn rolling_restart(instance_id: Option<&str>) -> Roll {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-roll");
    let (topo, [status, _dlq, hourly, lots]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let inputs = simulate(9_000, 45, dir.path());
    let want = expected(&inputs);
    let want_lots = expected_lots(&inputs);
    // A session long enough for a restart; heartbeats come every second.
    let mut extra = vec!["--session-timeout", "30s"];
    if let Some(i) = instance_id {
        extra.extend(["--instance-id", i]);
    }
    let mut instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| Instance::new(dir.path(), n, &extra, None))
        .collect();
    let (warm, rest) = inputs.split_at(600);
    produce_inputs(&status, warm);
    for i in &mut instances {
        i.start(&topo);
    }
    wait_for("three members, every instance ready", Duration::from_secs(120), || {
        stable_members(&id) == 3 && instances.iter().all(Instance::ready)
    });
    wait_committed(&id, &status, 3, Duration::from_secs(90));

    let sent = Arc::new(Mutex::new(HashMap::new()));
    let stop_feed = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (status, rest) = (status.clone(), rest.iter().map(clone_input).collect::<Vec<_>>());
        let (sent, stop) = (sent.clone(), stop_feed.clone());
        std::thread::spawn(move || feed(&status, &rest, 100, &sent, &stop))
    };
    let watcher = {
        let (lots, stop) = (lots.clone(), stop_watch.clone());
        std::thread::spawn(move || watch_lots(&lots, &stop))
    };
    std::thread::sleep(Duration::from_secs(5));
    let roll_started = Instant::now();
    let (mut rebalances, mut downtime) = (Vec::new(), Vec::new());
    for n in 0..instances.len() {
        let before: f64 = (0..3).filter(|&o| o != n).map(|o| instances[o].rebalances()).sum();
        let down = Instant::now();
        instances[n].proc.take().unwrap().terminate();
        instances[n].start(&topo);
        wait_for("the restarted instance ready", Duration::from_secs(120), || {
            instances[n].ready()
        });
        downtime.push(down.elapsed().as_secs_f64());
        wait_for("three members again", Duration::from_secs(120), || {
            stable_members(&id) == 3 && instances.iter().all(Instance::ready)
        });
        // Let a rebalance the restart set off happen (and be counted).
        std::thread::sleep(Duration::from_secs(5));
        let after: f64 = (0..3).filter(|&o| o != n).map(|o| instances[o].rebalances()).sum();
        rebalances.push(after - before);
    }
    let roll_ended = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    stop_feed.store(true, Ordering::Relaxed);
    let fed = feeder.join().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    stop_watch.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();

    // The rest of the input, then every window closed: exact results.
    produce_inputs(&status, &rest[fed..]);
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    check_results(&results, &want);
    check_lots(&read_lots(&lots, &want_lots), &want_lots);
    for i in &mut instances {
        i.proc.take().unwrap().terminate();
    }

    let sent = sent.lock().unwrap();
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter(|(_, at)| **at >= roll_started && **at <= roll_ended)
        .filter_map(|(k, at)| Some(seen.get(k)?.saturating_duration_since(*at).as_secs_f64()))
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Roll {
        rebalances,
        downtime,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        samples: latencies.len(),
    }
}

fn clone_input(i: &Input) -> Input {
    Input {
        partition: i.partition,
        timestamp: i.timestamp,
        key: i.key.clone(),
        payload: i.payload.clone(),
    }
}

fn report(what: &str, r: &Roll) {
    eprintln!(
        "ROLL {what}: rebalances seen by the others per restart {:?}; restart → ready {:?} s; \
         lot-status latency during the roll over {} updates: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        r.rebalances,
        r.downtime.iter().map(|d| (d * 10.0).round() / 10.0).collect::<Vec<_>>(),
        r.samples,
        r.p50,
        r.p99,
        r.max
    );
}

/// Static membership (the default: the instance id kept in the state
/// directory): a restart within the session timeout gets its tasks back
/// with no rebalance of the others, and results stay exact.
#[test]
fn rolling_restart_with_static_membership_rebalances_nothing() {
    let _one = one_at_a_time();
    let r = rolling_restart(None);
    report("static (--instance-id auto)", &r);
    assert_eq!(r.rebalances, vec![0.0; 3], "rebalances per restart");
    assert!(r.samples > 100, "too few lot updates timed: {}", r.samples);
}

/// Dynamic membership (`--instance-id none`): each restart is counted as
/// rebalances by the others (it leaves, then joins); results stay exact.
#[test]
fn rolling_restart_with_dynamic_membership_rebalances() {
    let _one = one_at_a_time();
    let r = rolling_restart(Some("none"));
    report("dynamic (--instance-id none)", &r);
    assert!(
        r.rebalances.iter().all(|&n| n > 0.0),
        "every restart should rebalance the others: {:?}",
        r.rebalances
    );
}

/// Holds up to `target` connections to `addr`, each with half a request
/// sent, reconnecting those the server closes, until `stop`. Returns how
/// many connections it opened.
fn flood(addr: SocketAddr, target: usize, stop: &AtomicBool, open_now: &AtomicUsize) -> usize {
    let mut held: Vec<TcpStream> = Vec::new();
    let mut opened = 0;
    while !stop.load(Ordering::Relaxed) {
        // Forget the ones the server closed.
        held.retain(|s| {
            let mut b = [0u8; 1];
            let _ = s.set_nonblocking(true);
            match s.peek(&mut b) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        });
        let mut added = 0;
        while held.len() < target && added < 300 && !stop.load(Ordering::Relaxed) {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(mut s) => {
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Slow:");
                    held.push(s);
                    opened += 1;
                    added += 1;
                }
                Err(_) => break,
            }
        }
        open_now.store(held.len(), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
    }
    opened
}

/// Under a 1,024 descriptor limit, thousands of idle half-sent requests to
/// `--metrics-addr` leave `weir run` descriptors to work with: while they
/// come, it takes over a crashed instance's tasks (new RocksDB files, a
/// restore consumer, new broker connections), processes and commits the
/// new input, and its results are exact; the endpoint answers again once
/// the flood stops.
#[test]
fn a_flood_of_idle_metrics_connections_leaves_weir_descriptors() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-flood");
    let (topo, [status, _dlq, hourly, _lots]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let inputs = simulate(6_000, 77, dir.path());
    let want = expected(&inputs);
    let (first, second) = inputs.split_at(inputs.len() / 2);
    let extra = ["--session-timeout", "6s"];
    let mut a = Instance::new(dir.path(), "a", &extra, Some(1024));
    let mut b = Instance::new(dir.path(), "b", &extra, None);
    produce_inputs(&status, first);
    a.start(&topo);
    b.start(&topo);
    wait_for("both instances ready in one group", Duration::from_secs(120), || {
        stable_members(&id) == 2 && a.ready() && b.ready()
    });
    wait_committed(&id, &status, 3, Duration::from_secs(90));
    let baseline = open_fds(a.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let open_now = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let (stop, open_now, addr) = (stop.clone(), open_now.clone(), a.addr);
        std::thread::spawn(move || flood(addr, 3_000, &stop, &open_now))
    };
    // The flood is on: weir holds a bounded number of its connections.
    std::thread::sleep(Duration::from_secs(8));
    let during = open_fds(a.pid());
    eprintln!(
        "FLOOD: weir a had {baseline} descriptors before, {during} during (limit 1024); the flood holds {}",
        open_now.load(Ordering::Relaxed)
    );
    assert!(
        during < 1024 - 200,
        "the flood took weir's descriptors: {during} open of 1024 (before: {baseline})"
    );
    // B crashes: A must open its tasks (RocksDB, restore) during the flood.
    b.proc.take().unwrap().kill();
    produce_inputs(&status, second);
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    check_results(&results, &want);
    let log = a.proc.as_ref().unwrap().log_text();
    assert!(
        !log.contains("Too many open files"),
        "{}",
        a.proc.as_ref().unwrap().tail(40)
    );
    assert!(
        open_fds(a.pid()) < 1024 - 100,
        "descriptors at the end of the flood: {}",
        open_fds(a.pid())
    );
    stop.store(true, Ordering::Relaxed);
    let opened = flooder.join().unwrap();
    eprintln!("FLOOD: {opened} connections opened in all");
    assert!(opened > 2_000, "the flood opened only {opened} connections");
    // Once it stops, the endpoint answers again.
    wait_for("/metrics answering after the flood", Duration::from_secs(30), || {
        matches!(status_of(a.addr, "/metrics"), Some((200, _)))
    });
    a.proc.take().unwrap().terminate();
}

/// A static member stopped with SIGTERM stays in the group (its partitions
/// wait for it up to the session timeout); one stopped with SIGUSR1
/// (scaling in) leaves at once and the other takes its partitions.
#[test]
fn sigterm_keeps_a_static_member_in_the_group_and_sigusr1_leaves() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-leave");
    let (topo, [status, ..]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let extra = ["--session-timeout", "60s"];
    let mut a = Instance::new(dir.path(), "a", &extra, None);
    let mut b = Instance::new(dir.path(), "b", &extra, None);
    a.start(&topo);
    b.start(&topo);
    // Both running tasks, all 9 of them: a cooperative join takes two
    // rounds and the group is Stable in between; a static member stopped
    // then leaves the second round waiting for it until it comes back.
    wait_for("both instances ready in one group", Duration::from_secs(120), || {
        let (ta, tb) = (a.tasks_running(), b.tasks_running());
        stable_members(&id) == 2 && a.ready() && b.ready() && ta > 0.0 && tb > 0.0 && ta + tb == 9.0
    });
    let before = a.rebalances();
    // SIGTERM: still a member 15 s later, and A saw no rebalance.
    b.proc.take().unwrap().terminate();
    std::thread::sleep(Duration::from_secs(15));
    // Read until the group answers (a loaded broker may time a lookup
    // out): had B left, it would be Stable with 1 member for good, and
    // this fails.
    wait_for(
        "B still in the Stable group of 2 (a static member stopped with SIGTERM must not leave)",
        Duration::from_secs(10),
        || stable_members(&id) == 2,
    );
    assert_eq!(a.rebalances(), before, "A rebalanced while B was away");
    // Back within the session timeout: no rebalance either.
    b.start(&topo);
    wait_for("B ready again", Duration::from_secs(60), || b.ready());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.rebalances(), before, "A rebalanced when B came back");
    // SIGUSR1: B leaves now, well before the 60 s session timeout.
    let proc = b.proc.take().unwrap();
    proc.unwatch();
    proc.signal("USR1");
    let left = Instant::now();
    wait_for("B to exit after SIGUSR1", Duration::from_secs(60), || {
        proc.exited().is_some()
    });
    assert!(proc.exited().unwrap().success(), "{}", proc.tail(30));
    wait_for(
        "A alone in the group, with every partition",
        Duration::from_secs(30),
        || stable_members(&id) == 1 && a.ready() && a.rebalances() > before,
    );
    assert!(
        left.elapsed() < Duration::from_secs(30),
        "B's partitions moved only after {:?}",
        left.elapsed()
    );
    a.proc.take().unwrap().terminate();
}

/// Two instances given one `--instance-id` (or sharing a copied state
/// directory): the newer fences the older, which stops with an error that
/// says so instead of running on without a group.
#[test]
fn a_second_instance_with_the_same_instance_id_fences_the_first() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-fenced");
    let (topo, [status, ..]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let extra = ["--session-timeout", "30s", "--instance-id", "same-name"];
    let mut a = Instance::new(dir.path(), "a", &extra, None);
    let mut b = Instance::new(dir.path(), "b", &extra, None);
    a.start(&topo);
    wait_for("A ready", Duration::from_secs(120), || a.ready());
    a.proc.as_ref().unwrap().unwatch();
    b.start(&topo);
    wait_for("B ready", Duration::from_secs(120), || b.ready());
    let first = a.proc.take().unwrap();
    wait_for("A to stop, fenced", Duration::from_secs(60), || {
        first.exited().is_some()
    });
    let status = first.exited().unwrap();
    assert!(!status.success(), "A exited 0 after being fenced");
    let log = first.log_text();
    assert!(
        log.contains("another `weir run` has this instance id"),
        "{}",
        first.tail(30)
    );
    assert!(b.proc.as_mut().unwrap().exited().is_none(), "B stopped too");
    b.proc.take().unwrap().terminate();
}
