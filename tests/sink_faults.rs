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

/// Records for the log table only Postgres can reject, at COMMIT or in a
/// trigger: a deferred unique constraint (a `seq` seen before, or twice in
/// one batch: each row alone passes), a deferred foreign key (an unknown
/// region) and a BEFORE INSERT trigger raising P0001. They go to the
/// dead-letter topic; the rest of each batch is committed with its offsets,
/// exactly once (no crash loop).
#[test]
fn rows_rejected_at_commit_or_by_a_trigger_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("sink_commit");
    let topic = format!("{id}_hourly");
    let dlq = format!("{id}_dlq");
    common::create_topic(&topic, 1);
    let mut pg = Pg::connect();
    let codes: Vec<String> = REGIONS.iter().map(|(c, _)| format!("('{c}')")).collect();
    pg.exec(&format!(
        "CREATE SCHEMA {id};
         CREATE TABLE {id}.regions (code text PRIMARY KEY);
         INSERT INTO {id}.regions VALUES {};
         CREATE TABLE {id}.record_log (
           id bigserial PRIMARY KEY,
           seq bigint NOT NULL,
           region_code text NOT NULL REFERENCES {id}.regions (code) DEFERRABLE INITIALLY DEFERRED,
           samples bigint,
           CONSTRAINT seq_once UNIQUE (seq) DEFERRABLE INITIALLY DEFERRED);
         CREATE FUNCTION {id}.no_boom() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.samples = 666 THEN RAISE EXCEPTION 'samples 666 refused by trigger'; END IF;
             RETURN NEW;
           END $$;
         CREATE TRIGGER no_boom BEFORE INSERT ON {id}.record_log FOR EACH ROW EXECUTE FUNCTION {id}.no_boom();",
        codes.join(",")
    ));
    let cfg = write_config(
        dir.path(),
        &id,
        &dlq,
        "batch_size: 1000\nlinger: 300ms\n",
        &[hourly_table_yaml(&topic, &id, ""), log_table_yaml(&topic, &id, "")],
    );

    let good = windows(4, 3, 0);
    let w = |hour: i64, code: &str, samples: i64, seq: i64| Window {
        region: "r".into(),
        region_code: code.into(),
        hour,
        avg: 1.0,
        samples,
        seq,
    };
    // (record, what its dead letter's reason names)
    let bad = [
        (w(40, "POI001", 1, 5), "23505"),     // seq 5 is a good record's
        (w(41, "POI404", 1, 500), "23503"),   // no such region
        (w(42, "POI003", 666, 501), "P0001"), // the trigger raises
        (w(43, "POI007", 1, 502), "23505"),   // seq 502 twice in the batch:
    ];
    let twin = w(44, "POI009", 1, 502); // …this one passes, `bad[3]` comes after it
    let (first, rest) = good.split_at(good.len() / 2);
    let mut all: Vec<Window> = first.to_vec();
    all.push(twin.clone());
    all.extend(bad.iter().map(|(b, _)| b.clone()));
    all.extend(rest.iter().cloned());
    produce_windows(&topic, 1, &all);

    let sink = start_sink(&cfg, &[]);
    let want = end_offsets(&topic, 1)[&0];
    wait_for("the sink to store the topic's end offset", T, || {
        sink.assert_running();
        pg.offsets(&id, &topic).get(&0).map(|(o, _)| *o) == Some(want)
    });
    // Every record is in the upsert table (it has none of these constraints)…
    assert_eq!(table_rows(&mut pg, &id), expected_rows(&all));
    // …and the log table has each good record (and the twin) once, no bad one.
    let seqs: Vec<i64> = pg
        .query(&format!("SELECT seq FROM {id}.record_log ORDER BY seq"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want_seqs: Vec<i64> = good.iter().map(|g| g.seq).chain([twin.seq]).collect();
    want_seqs.sort();
    assert_eq!(seqs, want_seqs);
    let dead = common::consume_until(&dlq, T, Duration::from_secs(2), |r| r.len() >= bad.len());
    assert_eq!(dead.len(), bad.len(), "{dead:?}");
    for (b, reason) in &bad {
        let d = dead
            .iter()
            .find(|d| d.value.as_deref() == Some(b.json().as_bytes()))
            .unwrap_or_else(|| panic!("no dead letter for {}: {dead:?}", b.json()));
        let err = &d.headers["weir.error"];
        assert!(
            err.contains("rejected by Postgres") && err.contains(reason),
            "{err:?} should name {reason}"
        );
        assert_eq!(d.headers["weir.table"], format!("{id}.record_log"));
        assert_eq!(d.key.as_deref(), Some(b.key().as_bytes()));
        if b.region_code == "POI404" {
            // The dead letter keeps Postgres' detail (the record is there anyway)…
            assert!(err.contains("(POI404)"), "{err:?}");
        }
    }
    // …the log does not: the details quote row values (`Key
    // (region_code)=(POI404) is not present…`, `Key (seq)=(5) already
    // exists`), shown only with --log-row-values.
    let log = sink.log_text();
    assert!(log.contains("Postgres rejected the batch"), "{log}");
    assert!(log.contains("record sent to the dead-letter topic"), "{log}");
    assert!(log.contains("detail withheld"), "{log}");
    for value in ["POI404", "=(5)", "=(502)"] {
        assert!(!log.contains(value), "the log shows the row value {value}:\n{log}");
    }
    sink.terminate();
    pg.exec(&format!(
        "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
    ));
    common::delete_topics(&[&topic, &dlq]);
}

/// Run `weir sink` against `url` until it exits (within `within`): its
/// status and log.
fn run_sink_with(cfg: &std::path::Path, url: &str, within: Duration) -> (Option<std::process::ExitStatus>, String) {
    let log = cfg.with_extension(format!("{}.log", common::unique("run")));
    let mut child = std::process::Command::new(common::weir_bin())
        .arg("sink")
        .arg(cfg)
        .env("WEIR_BOOTSTRAP", common::bootstrap())
        .env("WEIR_PG_URL", url)
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// A stand-in for a Postgres server whose pg_hba.conf has no line for the
/// client (the shared test server accepts every local connection): it
/// declines TLS and answers every startup with the FATAL error Postgres
/// sends then. Returns its address.
fn pg_hba_rejecting_server() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            fn message(s: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
                let mut len = [0u8; 4];
                s.read_exact(&mut len)?;
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                s.read_exact(&mut body)?;
                Ok(body)
            }
            let Ok(body) = message(&mut s) else { continue };
            // SSLRequest: no TLS here; the startup message follows.
            if body[..4] == 80877103u32.to_be_bytes() && (s.write_all(b"N").is_err() || message(&mut s).is_err()) {
                continue;
            }
            let mut fields = Vec::new();
            for (code, value) in [
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "28000"),
                (
                    b'M',
                    "no pg_hba.conf entry for host \"127.0.0.1\", user \"weir\", database \"weir\", no encryption",
                ),
            ] {
                fields.push(code);
                fields.extend_from_slice(value.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut msg = vec![b'E'];
            msg.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
            msg.extend_from_slice(&fields);
            let _ = s.write_all(&msg);
        }
    });
    addr
}

/// A server that refuses the sink (wrong password, no such role or
/// database, pg_hba.conf, TLS required) stops it at once, exit 1, with a
/// message naming what is wrong and never the password; an unreachable
/// server is still waited for.
#[test]
fn postgres_refusing_the_connection_stops_the_sink_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("sink_auth");
    let topic = format!("{id}_hourly");
    let dlq = format!("{id}_dlq");
    common::create_topic(&topic, 1);
    let cfg = write_config(dir.path(), &id, &dlq, "", &[hourly_table_yaml(&topic, &id, "")]);
    let server = pg_url()
        .rsplit('@')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let hba = pg_hba_rejecting_server();
    let base = pg_url().rsplit_once('/').unwrap().0.to_string();
    let cases = [
        (
            format!("postgres://weir:Wr0ngPw@{server}/weir"),
            "wrong password, or no such role",
        ),
        (
            format!("postgres://no_such_role:Wr0ngPw@{server}/weir"),
            "wrong password, or no such role",
        ),
        (format!("{base}/no_such_db"), "no such database"),
        // A server without TLS (the `./dev up` one has it).
        (
            format!("postgres://weir:Wr0ngPw@{hba}/weir?sslmode=require"),
            "server does not support TLS",
        ),
        (format!("postgres://weir:Wr0ngPw@{hba}/weir"), "pg_hba.conf"),
    ];
    for (url, want) in &cases {
        let (status, log) = run_sink_with(&cfg, url, Duration::from_secs(30));
        let status = status.unwrap_or_else(|| panic!("{url}: still running after 30 s (retrying?); log:\n{log}"));
        assert!(!status.success(), "{url}: exit {status}; log:\n{log}");
        assert!(
            log.contains("refuses the connection") && log.contains(want),
            "{url}: log should say {want:?}:\n{log}"
        );
        assert!(!log.contains("Wr0ngPw"), "{url}: the password is in the log:\n{log}");
    }

    // Nothing listens: an outage, waited for.
    let closed = common::free_port();
    let (status, log) = run_sink_with(
        &cfg,
        &format!("postgres://weir:weir@127.0.0.1:{closed}/weir"),
        Duration::from_secs(8),
    );
    assert!(
        status.is_none(),
        "an unreachable Postgres is waited for; exit {status:?}; log:\n{log}"
    );
    assert!(log.contains("retrying"), "{log}");
    common::delete_topics(&[&topic, &dlq]);
}

/// Dead letters Kafka refuses with their value — one over the sink
/// producer's `message.max.bytes` (refused when queued), one over the
/// dead-letter topic's `max.message.bytes` (refused by the broker) — go
/// without it, with key and reason, and the sink goes on; before, it
/// retried them forever.
#[test]
fn dead_letters_too_large_for_kafka_go_without_their_value() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("sink_bigdlq");
    let topic = format!("{id}_hourly");
    let dlq = format!("{id}_dlq");
    common::create_topic(&topic, 1);
    // Created here, small: the sink keeps a topic that exists.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(weir::ensure_topics(
        &common::bootstrap(),
        &[weir::TopicSpec::new(dlq.as_str(), 1).with_config("max.message.bytes", "4096")],
    ))
    .unwrap();
    let cfg = write_config(
        dir.path(),
        &id,
        &dlq,
        "batch_size: 1000\nlinger: 300ms\n",
        &[hourly_table_yaml(&topic, &id, "")],
    );
    let good = windows(2, 2, 0);
    // Not JSON: dead letters carrying the whole value. 1,040,000 bytes is
    // under the broker's limit for the input topic, over the producer's.
    let huge = format!("{{{}", "x".repeat(1_040_000));
    let big = format!("{{{}", "x".repeat(10_000));
    let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .set("message.max.bytes", "1048000")
        .create()
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let (first, rest) = good.split_at(good.len() / 2);
    let send = |ws: &[Window]| {
        for g in ws {
            common::produce(&p, &topic, 0, now, Some(g.key().as_bytes()), Some(g.json().as_bytes()));
        }
    };
    send(first);
    common::produce(&p, &topic, 0, now, Some(b"HUGE"), Some(huge.as_bytes()));
    common::produce(&p, &topic, 0, now, Some(b"BIG"), Some(big.as_bytes()));
    send(rest);
    common::flush(&p);

    let mut pg = Pg::connect();
    let sink = start_sink(&cfg, &[]);
    let want = end_offsets(&topic, 1)[&0];
    wait_for(
        "the sink to store the topic's end offset",
        Duration::from_secs(60),
        || {
            sink.assert_running();
            pg.offsets(&id, &topic).get(&0).map(|(o, _)| *o) == Some(want)
        },
    );
    assert_eq!(table_rows(&mut pg, &id), expected_rows(&good));
    let dead = common::consume_until(&dlq, T, Duration::from_secs(1), |r| r.len() >= 2);
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (key, size) in [(&b"HUGE"[..], huge.len()), (&b"BIG"[..], big.len())] {
        let d = dead
            .iter()
            .find(|d| d.key.as_deref() == Some(key))
            .expect("dead letter");
        assert!(d.value.is_none(), "sent without its value");
        assert!(d.headers["weir.error"].contains("not valid JSON"), "{:?}", d.headers);
        let dropped = &d.headers["weir.value_dropped"];
        assert!(dropped.starts_with(&format!("{size} bytes")), "{dropped}");
        assert!(dropped.contains("too large"), "{dropped}");
        assert_eq!(d.headers["weir.topic"], topic);
    }
    sink.terminate();
    pg.exec(&format!(
        "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
    ));
    common::delete_topics(&[&topic, &dlq]);
}
