//! One broker of a 3-node KRaft cluster (`./dev up --brokers 3`) is
//! SIGKILLed in the middle of an exactly_once `weir run --replication-factor
//! 3`: every topic has three replicas (internal ones min.insync.replicas 2),
//! so no acknowledged write is lost. weir keeps running and every hourly
//! window comes out once and exact. The killed broker is started again at the
//! end (also when the test fails) and the cluster checked whole; a cluster
//! this test started is stopped after it (see `StopIfStarted`).
//!
//! A test binary of its own: it points this process's `WEIR_BOOTSTRAP` (read
//! by the common helpers and passed to weir) at the 3-node cluster.

mod common;
mod engine_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use rdkafka::ClientConfig;

use common::cluster3::*;
use common::*;
use engine_common::*;

/// The active KRaft controller as the nodes last wrote it down (the
/// `quorum-state` file of the metadata log; the newest epoch wins).
fn controller_leader() -> Option<i32> {
    (1..=NODES)
        .filter_map(|n| {
            let text = std::fs::read_to_string(node_dir(n).join("data/__cluster_metadata-0/quorum-state")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some((v["leaderEpoch"].as_i64()?, v["leaderId"].as_i64()? as i32))
        })
        .filter(|(_, leader)| *leader >= 0)
        .max()
        .map(|(_, leader)| leader)
}

fn metadata() -> Metadata {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    c.fetch_metadata(None, Duration::from_secs(10))
        .expect("cluster metadata")
}

/// The test's topics (all named `<id>-...`).
fn own_topics(md: &Metadata, id: &str) -> Vec<String> {
    let prefix = format!("{id}-");
    let mut names: Vec<String> = md
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(&prefix))
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}

/// Java's `String.hashCode`, which Kafka uses to place a group or a
/// transactional id on a partition of its internal topics.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The broker leading the partition of `internal_topic` (10 partitions, see
/// `./dev`) that holds `key`: the coordinator of that group or transactional
/// id.
fn coordinator(md: &Metadata, internal_topic: &str, key: &str) -> Option<i32> {
    let h = java_hash(key);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    let t = md.topics().iter().find(|t| t.name() == internal_topic)?;
    let n = t.partitions().len() as i32;
    t.partitions()
        .iter()
        .find(|p| p.id() == abs % n.max(1))
        .map(|p| p.leader())
        .filter(|l| *l > 0)
}

/// The broker to kill, the one whose loss hurts most: the coordinator of
/// weir's transactions (an open transaction there must be aborted or
/// recovered), else the group coordinator, else the one leading most
/// partitions of the test's topics; never the active KRaft controller (if
/// the quorum-state files tell).
fn pick_victim(id: &str, transactional_id: &str) -> (i32, Option<i32>) {
    let controller = controller_leader();
    let md = metadata();
    let txn = coordinator(&md, "__transaction_state", transactional_id);
    let group = coordinator(&md, "__consumer_offsets", id);
    let mut led: BTreeMap<i32, usize> = (1..=NODES).map(|n| (n, 0)).collect();
    for t in md.topics().iter().filter(|t| t.name().starts_with(&format!("{id}-"))) {
        for p in t.partitions() {
            if let Some(n) = led.get_mut(&p.leader()) {
                *n += 1;
            }
        }
    }
    eprintln!(
        "partitions led per broker: {led:?}; transaction coordinator: {txn:?}; group coordinator: {group:?}; active controller: {controller:?}"
    );
    let most_leaders = led
        .iter()
        .filter(|(n, _)| Some(**n) != controller)
        .max_by_key(|(n, count)| (**count, -**n))
        .map(|(n, _)| *n)
        .unwrap();
    let victim = [txn, group]
        .into_iter()
        .flatten()
        .find(|n| Some(*n) != controller)
        .unwrap_or(most_leaders);
    (victim, controller)
}

/// (committed offset, end offset) of every partition of `topic` for group
/// `group`; Err while the brokers cannot answer (coordinator or leader
/// moving).
fn progress(group: &str, topic: &str, partitions: i32) -> rdkafka::error::KafkaResult<Vec<(i64, i64)>> {
    let committed = fetch_committed(group, topic, partitions)?;
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create()?;
    (0..partitions)
        .zip(committed)
        .map(|(p, committed)| Ok((committed, c.fetch_watermarks(topic, p, Duration::from_secs(5))?.1)))
        .collect()
}

/// Wait until weir (group `group`) has committed the end of every partition
/// of `topics`, failing as soon as weir exits; on timeout, says which
/// partitions lag.
fn wait_caught_up(run: &WeirProc, log: &Path, group: &str, topics: &[&str], timeout: Duration, when: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        assert_running(run, log, when);
        let state: Vec<_> = topics.iter().map(|t| (*t, progress(group, t, 3))).collect();
        let done = state.iter().all(|(_, r)| {
            r.as_ref()
                .is_ok_and(|ps| ps.iter().all(|(committed, high)| *high == 0 || committed >= high))
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "weir did not commit everything within {timeout:?} {when}; (committed, end) per partition: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn assert_running(run: &WeirProc, log: &Path, when: &str) {
    if let Some(status) = run.exited() {
        panic!(
            "weir run exited ({status}) {when}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Prints weir's warnings and errors when dropped; everything it logged if
/// the test failed.
struct ShowLog(PathBuf);

impl Drop for ShowLog {
    fn drop(&mut self) {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        if std::thread::panicking() {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- weir run log (last 300 of {} lines) ----\n{}",
                lines.len(),
                lines[lines.len().saturating_sub(300)..].join("\n")
            );
        } else {
            let notable: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("task restored"))
                .collect();
            eprintln!(
                "---- weir run: {} warnings/errors/restores in {} lines ----",
                notable.len(),
                text.lines().count()
            );
            for l in notable.iter().take(60) {
                eprintln!("{l}");
            }
        }
    }
}

fn describe_topic_configs(topics: &[&str]) -> BTreeMap<String, (Option<String>, ConfigSource)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let results = rt
        .block_on(admin.describe_configs(
            &specs,
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("describe_configs");
    topics
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let res = r.unwrap_or_else(|e| panic!("describe_configs {t}: {e:?}"));
            let e = res
                .entries
                .into_iter()
                .find(|e| e.name == "min.insync.replicas")
                .unwrap_or_else(|| panic!("{t}: no min.insync.replicas"));
            (t.to_string(), (e.value, e.source))
        })
        .collect()
}

/// Stops the 3-node cluster when dropped if this test started it: its three
/// JVMs left running would slow every test binary after this one on a
/// 2-core machine (a cluster someone started by hand stays up).
struct StopIfStarted(bool);

impl Drop for StopIfStarted {
    fn drop(&mut self) {
        if !self.0 {
            return;
        }
        let status = Command::new(checkout().join("dev"))
            .args(["down", "--brokers", "3"])
            .stdout(Stdio::null())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("./dev down --brokers 3: {status:?}");
        }
    }
}

#[test]
fn a_broker_killed_mid_run_loses_nothing_with_replicated_topics() {
    let t0 = Instant::now();
    let _stop = StopIfStarted(!cluster_running());
    dev_up_3().unwrap();
    let bootstrap3 = bootstrap3();
    // Before any helper runs (they read it), in the only test of this binary.
    std::env::set_var("WEIR_BOOTSTRAP", &bootstrap3);
    assert_eq!(bootstrap(), bootstrap3);

    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-brokers");
    let (topo, [status, dlq, hourly, lots]) = topology_eos(dir.path(), &id);
    create_topic_replicated(&status, 3, 3);
    let inputs = simulate(3000, 17, dir.path());
    let want = expected(&inputs);
    let (first, second) = inputs.split_at(inputs.len() / 2);
    produce_inputs(&status, first);

    let log = dir.path().join("weir-run.log");
    let _show_log = ShowLog(log.clone());
    let state = dir.path().join("state");
    let run = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--replication-factor",
            "3",
        ],
        &log,
    );
    wait_caught_up(
        &run,
        &log,
        &id,
        &[&status],
        Duration::from_secs(90),
        "before the broker was killed",
    );

    // SIGKILL one broker (see `pick_victim`) while weir is in the middle of
    // transactions: right after part of the second half arrives.
    let process_id = std::fs::read_to_string(state.join(&id).join("process.id")).expect("weir's process.id");
    let (victim, controller) = pick_victim(&id, &format!("{id}-{}", process_id.trim()));
    let pid = node_pid(victim);
    assert!(alive(pid), "broker {victim} (pid {pid}) is not running");
    let start_again = StartAgain;
    let (during, after) = second.split_at(second.len() / 3);
    produce_inputs(&status, during);
    eprintln!(
        "{:.1?}: SIGKILL broker {victim} (pid {pid}); controller {controller:?}",
        t0.elapsed()
    );
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    wait_for("the killed broker to go", Duration::from_secs(10), || !alive(pid));

    produce_inputs(&status, after);
    eprintln!("{:.1?}: second half produced", t0.elapsed());
    let repartition = format!("{id}-hourly-by-region-repartition");
    wait_caught_up(
        &run,
        &log,
        &id,
        &[&status, &repartition],
        Duration::from_secs(120),
        "after a broker was killed",
    );
    eprintln!("{:.1?}: second half committed", t0.elapsed());
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    assert_running(&run, &log, "after the windows closed");
    check_results(&results, &want);
    eprintln!(
        "{:.1?}: {} windows exact and once, broker {victim} still down",
        t0.elapsed(),
        results.len()
    );
    assert!(!alive(pid), "the killed broker came back by itself");

    // Every topic weir created has three replicas; internal ones (changelogs,
    // repartition) set min.insync.replicas=2 themselves.
    let md = metadata();
    let topics = own_topics(&md, &id);
    let internal: Vec<&str> = topics
        .iter()
        .map(String::as_str)
        .filter(|t| t.ends_with("-changelog") || t.ends_with("-repartition"))
        .collect();
    assert!(
        internal.contains(&repartition.as_str()) && internal.iter().any(|t| t.ends_with("-changelog")),
        "internal topics: {internal:?} (all: {topics:?})"
    );
    for name in [&status, &dlq, &hourly, &lots] {
        assert!(topics.contains(name), "{name} not in metadata ({topics:?})");
    }
    for t in md.topics().iter().filter(|t| topics.contains(&t.name().to_string())) {
        let name = t.name();
        assert!(!t.partitions().is_empty(), "{name}: no partitions");
        for p in t.partitions() {
            assert_eq!(p.replicas().len(), 3, "{name}-{}: replicas {:?}", p.id(), p.replicas());
        }
    }
    let configs = describe_topic_configs(&internal);
    for (name, (value, source)) in &configs {
        assert_eq!(value.as_deref(), Some("2"), "{name}: min.insync.replicas");
        assert_eq!(
            *source,
            ConfigSource::DynamicTopic,
            "{name}: min.insync.replicas=2 must be set on the topic, not inherited"
        );
    }
    eprintln!("internal topics, 3 replicas and min.insync.replicas=2 on each: {internal:?}");

    run.terminate();
    drop(start_again);
    let new_pid = node_pid(victim);
    assert!(
        alive(new_pid) && new_pid != pid,
        "broker {victim} was not started again"
    );
    // Whole again: the restarted broker is back in every ISR of the test's topics.
    wait_for(
        "the restarted broker to rejoin the ISRs",
        Duration::from_secs(60),
        || {
            let md = metadata();
            md.topics()
                .iter()
                .filter(|t| topics.contains(&t.name().to_string()))
                .all(|t| t.partitions().iter().all(|p| p.isr().len() == 3))
        },
    );
    delete_topics(&topics.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("{:.1?}: done", t0.elapsed());
}
