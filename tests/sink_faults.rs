//! `weir sink` under faults, against the real broker and Postgres: killed
//! with SIGKILL in the middle of its work several times, and two instances
//! sharing one consumer group (joining, leaving). Besides the upsert table,
//! each test loads the same topic into an insert-mode log table with one
//! row per record (`seq`): any record applied twice or never shows up
//! there as a wrong count.

mod common;
mod sink_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wait_for;
use sink_common::*;

const T: Duration = Duration::from_secs(120);

/// Rows of the log table: exactly one per record, seq 0..n.
fn assert_log_exact(pg: &mut Pg, schema: &str, n: i64) {
    let r = &pg.query(&format!(
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM {schema}.record_log"
    ))[0];
    let (count, distinct, min, max): (i64, i64, Option<i64>, Option<i64>) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(distinct, n, "records missing from the log table (a gap)");
    assert_eq!(count, n, "records applied twice (duplicates in the log table)");
    assert_eq!((min, max), (Some(0), Some(n - 1)));
}

fn stored_total(pg: &mut Pg, sink: &str, topic: &str) -> i64 {
    pg.offsets(sink, topic).values().map(|(o, _)| *o).sum()
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

const FAST_GROUP: &str = "consumer:\n  session.timeout.ms: \"6000\"\n  heartbeat.interval.ms: \"1000\"\n";

#[test]
fn kill_9_mid_batch_then_restart_loads_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("sink_kill");
    let topic = format!("{id}_hourly");
    let dlq = format!("{id}_dlq");
    common::create_topic(&topic, 3);
    let top = format!("batch_size: 1000\nlinger: 100ms\n{FAST_GROUP}");
    let cfg = write_config(
        dir.path(),
        &id,
        &dlq,
        &top,
        &[hourly_table_yaml(&topic, &id, ""), log_table_yaml(&topic, &id, "")],
    );

    // 8 regions × 50 hours × 100 on_update emits.
    let ws = windows(50, 100, 0);
    let n = ws.len() as i64;
    produce_windows(&topic, 3, &ws);

    let mut pg = Pg::connect();
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill points seeded with {rng}");
    let mut kills = 0;
    let mut done_before = 0;
    for round in 0..5 {
        let sink = start_sink(&cfg, &[]);
        // Kill after a random amount of further progress, while the sink
        // is busy with the backlog.
        let step = 1500 + (xorshift(&mut rng) % 4000) as i64;
        let deadline = Instant::now() + T;
        loop {
            sink.assert_running();
            let done = stored_total(&mut pg, &id, &topic);
            if done >= done_before + step || done >= n {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: no progress past {done}");
            std::thread::sleep(Duration::from_millis(1 + xorshift(&mut rng) % 15));
        }
        let done = stored_total(&mut pg, &id, &topic);
        if done >= n {
            sink.kill();
            break;
        }
        // Somewhere inside the next batch: collecting, mapping or writing.
        std::thread::sleep(Duration::from_millis(xorshift(&mut rng) % 120));
        sink.kill();
        kills += 1;
        let after = stored_total(&mut pg, &id, &topic);
        eprintln!("round {round}: killed at {after}/{n} records stored");
        done_before = after;
    }
    assert!(
        kills >= 3,
        "the backlog was loaded before the sink could be killed often enough ({kills} kills)"
    );

    let sink = start_sink(&cfg, &[]);
    wait_caught_up(&mut pg, &id, &topic, 3, T);
    assert_eq!(table_rows(&mut pg, &id), expected_rows(&ws));
    assert_log_exact(&mut pg, &id, n);
    sink.terminate();
    pg.exec(&format!(
        "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
    ));
    common::delete_topics(&[&topic, &dlq]);
}

/// Stored offsets per partition with their owner.
type Offsets = BTreeMap<i32, (i64, Option<String>)>;

/// Samples the offsets rows while instances run: a partition's stored
/// offset must never move backwards (two writers of one partition would
/// make it jump back and forth).
struct Monitor {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    history: Arc<Mutex<Vec<Offsets>>>,
}

impl Monitor {
    fn start(sink: &str, topic: &str) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let (s, h, sink, topic) = (stop.clone(), history.clone(), sink.to_string(), topic.to_string());
        let handle = std::thread::spawn(move || {
            let mut pg = Pg::connect();
            while !s.load(Ordering::SeqCst) {
                let o = pg.offsets(&sink, &topic);
                h.lock().unwrap().push(o);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Monitor {
            stop,
            handle: Some(handle),
            history,
        }
    }

    fn finish(mut self) -> Vec<Offsets> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        std::mem::take(&mut *self.history.lock().unwrap())
    }
}

fn owner_pid(owner: &Option<String>) -> u32 {
    owner
        .as_deref()
        .and_then(|o| o.split(':').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[test]
fn two_instances_in_one_group_split_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("sink_pair");
    let topic = format!("{id}_hourly");
    let dlq = format!("{id}_dlq");
    common::create_topic(&topic, 4);
    let top = format!("batch_size: 500\nlinger: 50ms\n{FAST_GROUP}");
    let cfg = write_config(
        dir.path(),
        &id,
        &dlq,
        &top,
        &[hourly_table_yaml(&topic, &id, ""), log_table_yaml(&topic, &id, "")],
    );
    let mut pg = Pg::connect();
    let monitor = Monitor::start(&id, &topic);

    // Wave 1 with one instance, wave 2 with two, wave 3 after the first
    // leaves with SIGTERM.
    let wave1 = windows(20, 10, 0);
    let wave2 = windows(20, 10, wave1.len() as i64)
        .into_iter()
        .map(|mut w| {
            w.samples += 10;
            w
        })
        .collect::<Vec<_>>();
    let wave3 = windows(20, 10, (wave1.len() + wave2.len()) as i64)
        .into_iter()
        .map(|mut w| {
            w.samples += 20;
            w
        })
        .collect::<Vec<_>>();

    let a = start_sink(&cfg, &[]);
    let pid_a = a.pid();
    produce_windows(&topic, 4, &wave1);
    wait_caught_up(&mut pg, &id, &topic, 4, T);

    let b = start_sink(&cfg, &[]);
    let pid_b = b.pid();
    wait_for("the second instance's assignment", T, || {
        b.log_text().contains("assigned at the offsets stored in Postgres")
    });
    // Let the group settle (A is revoked and re-assigned half).
    wait_for("the first instance's new assignment", T, || {
        a.log_text()
            .matches("assigned at the offsets stored in Postgres")
            .count()
            >= 2
    });
    produce_windows(&topic, 4, &wave2);
    wait_caught_up(&mut pg, &id, &topic, 4, T);
    let owners: BTreeMap<i32, u32> = pg
        .offsets(&id, &topic)
        .iter()
        .map(|(p, (_, o))| (*p, owner_pid(o)))
        .collect();
    let by_a = owners.values().filter(|p| **p == pid_a).count();
    let by_b = owners.values().filter(|p| **p == pid_b).count();
    assert!(
        by_a >= 1 && by_b >= 1 && by_a + by_b == 4,
        "both instances must own partitions: {owners:?} (a={pid_a}, b={pid_b})"
    );

    a.terminate();
    produce_windows(&topic, 4, &wave3);
    b.assert_running();
    wait_caught_up(&mut pg, &id, &topic, 4, T);
    let owners: BTreeMap<i32, u32> = pg
        .offsets(&id, &topic)
        .iter()
        .map(|(p, (_, o))| (*p, owner_pid(o)))
        .collect();
    assert!(
        owners.values().all(|p| *p == pid_b),
        "after A left, B owns every partition: {owners:?}"
    );

    let all: Vec<Window> = wave1.iter().chain(&wave2).chain(&wave3).cloned().collect();
    assert_eq!(table_rows(&mut pg, &id), expected_rows(&all));
    assert_log_exact(&mut pg, &id, all.len() as i64);
    b.terminate();

    let history = monitor.finish();
    assert!(history.len() > 10);
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for snap in &history {
        for (p, (o, _)) in snap {
            let prev = last.insert(*p, *o).unwrap_or(0);
            assert!(
                *o >= prev,
                "partition {p}'s stored offset moved back from {prev} to {o}"
            );
        }
    }
    pg.exec(&format!(
        "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
    ));
    common::delete_topics(&[&topic, &dlq]);
}

#[test]
fn positions_come_from_postgres_not_from_kafka() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("sink_pos");
    let topic = format!("{id}_hourly");
    let dlq = format!("{id}_dlq");
    common::create_topic(&topic, 2);
    let top = format!("batch_size: 500\nlinger: 50ms\n{FAST_GROUP}");
    let cfg = write_config(
        dir.path(),
        &id,
        &dlq,
        &top,
        &[hourly_table_yaml(&topic, &id, ""), log_table_yaml(&topic, &id, "")],
    );
    let mut pg = Pg::connect();
    let set_kafka_offsets = |at: &dyn Fn(i32) -> Offset| {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", common::bootstrap())
            .set("group.id", format!("weir-sink-{id}"))
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset(&topic, p, at(p)).unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    };

    let wave1 = windows(10, 5, 0);
    produce_windows(&topic, 2, &wave1);
    let sink = start_sink(&cfg, &[]);
    wait_caught_up(&mut pg, &id, &topic, 2, T);
    sink.terminate();
    // Kafka's committed offsets rewound to the start: a sink trusting them
    // would apply wave 1 twice.
    set_kafka_offsets(&|_| Offset::Offset(0));
    let wave2 = windows(10, 5, wave1.len() as i64);
    produce_windows(&topic, 2, &wave2);
    let sink = start_sink(&cfg, &[]);
    wait_caught_up(&mut pg, &id, &topic, 2, T);
    sink.terminate();
    assert_log_exact(&mut pg, &id, (wave1.len() + wave2.len()) as i64);

    // Kafka's committed offsets moved past wave 3: a sink trusting them
    // would skip it.
    let wave3 = windows(10, 5, (wave1.len() + wave2.len()) as i64);
    produce_windows(&topic, 2, &wave3);
    let ends = end_offsets(&topic, 2);
    set_kafka_offsets(&|p| Offset::Offset(ends[&p]));
    let sink = start_sink(&cfg, &[]);
    wait_caught_up(&mut pg, &id, &topic, 2, T);
    sink.terminate();
    let all: Vec<Window> = wave1.iter().chain(&wave2).chain(&wave3).cloned().collect();
    assert_log_exact(&mut pg, &id, all.len() as i64);
    assert_eq!(table_rows(&mut pg, &id), expected_rows(&all));
    pg.exec(&format!(
        "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
    ));
    common::delete_topics(&[&topic, &dlq]);
}
