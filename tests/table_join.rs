//! A co-partitioned stream–table join on the real broker under
//! exactly_once: a table of lots from one topic (2 partitions), a stream of
//! readings keyed by sensor from another (3 partitions), joined on the lot
//! (`value.LOT`), so weir repartitions the stream into the table's 2
//! partitions. The table changes between batches of readings; `weir run`
//! is SIGKILLed and restarted on its state directory, and once on an empty
//! one (the table's rows come back from its changelog), and a second
//! instance joins the group for a while (the `range` assignor keeps
//! partition p of both topics together). Each reading's
//! output is what the lot's row held when it was sent, computed here from
//! what the test wrote, and comes out once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

#[test]
fn readings_are_joined_with_their_lots_current_row_across_partitions_restarts_and_a_lost_state_directory() {
    let dir = test_dir();
    let id = unique("it-tjoin");
    let (lots, readings, out, lots_out) = (
        format!("{id}-lots"),
        format!("{id}-readings"),
        format!("{id}-out"),
        format!("{id}-lots-out"),
    );
    create_topic(&lots, 2);
    create_topic(&readings, 3);
    let topo = dir.path().join("join.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\nprocessing_guarantee: exactly_once\ncommit_interval: 200ms\n\
             sources:\n  l: {{ topic: {lots} }}\n  r: {{ topic: {readings} }}\n\
             steps:\n  - name: lot-rows\n    from: l\n    table: {{ key: key }}\n    to: {{ topic: {lots_out} }}\n  \
             - name: with-lot\n    from: r\n    \
             join: {{ table: lot-rows, key: value.LOT, how: inner, fields: {{ LOT_NAME: name, CAP: capacity }} }}\n    \
             to: {{ topic: {out}, partitions: 2 }}\n"
        ),
    )
    .unwrap();
    let mut feed = Feed {
        p: producer(),
        lots: lots.clone(),
        readings: readings.clone(),
        rows: BTreeMap::new(),
        // Recent: records older than the topics' retention (7 days) may
        // be deleted by the broker while the test reads them.
        clock: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - 600_000,
        expected: BTreeMap::new(),
        seq: 0,
    };
    // The table's updates reach its output topic once processed (and
    // committed): the readings after them must see them.
    let table_done = |n: usize| {
        let got = consume_until(&lots_out, T, Duration::ZERO, |r| r.len() >= n);
        assert_eq!(got.len(), n, "table records processed");
    };
    let run_in = |state: &str, log: &str| {
        WeirProc::spawn(
            &[
                "run",
                topo.to_str().unwrap(),
                "--state-dir",
                dir.path().join(state).to_str().unwrap(),
            ],
            &dir.path().join(log),
        )
    };

    let first: Vec<(usize, &str)> = (0..10).map(|l| (l, "v1")).collect();
    let mut table_records = feed.set_lots(&first);
    let run = run_in("a", "run-a.log");
    table_done(table_records);
    feed.send_readings(200);
    wait_joined(&out, &feed.expected);
    // Rows change (and the readings after them see the change) while it runs.
    let changed: Vec<(usize, &str)> = (0..5).map(|l| (l, "v2")).collect();
    table_records += feed.set_lots(&changed);
    table_done(table_records);
    feed.send_readings(200);
    wait_joined(&out, &feed.expected);
    // SIGKILL, and a restart on the same state directory: the rows are in
    // its RocksDB (and the changelog's tail).
    run.kill();
    table_records += feed.set_lots(&[(3, "v3"), (7, "v3")]);
    let run = run_in("a", "run-a2.log");
    table_done(table_records);
    feed.send_readings(200);
    wait_joined(&out, &feed.expected);
    // SIGKILL, and an instance on an empty state directory: the table comes
    // back from its changelog before the task joins anything.
    run.kill();
    let run = run_in("b", "run-b.log");
    feed.send_readings(200);
    wait_joined(&out, &feed.expected);
    // A second instance joins the group: the tasks are split between the
    // two (partition p of the lots and of the repartitioned readings on
    // one of them, or its joins would miss rows), then it leaves again.
    let second = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            dir.path().join("c").to_str().unwrap(),
            "--instance-id",
            "none",
        ],
        &dir.path().join("run-c.log"),
    );
    wait_for("the second instance to get partitions", T, || {
        second
            .log_text()
            .lines()
            .any(|l| l.contains("partitions assigned") && !l.contains("partitions=0"))
    });
    table_records += feed.set_lots(&[(1, "v4"), (8, "v4"), (9, "v4")]);
    table_done(table_records);
    feed.send_readings(200);
    wait_joined(&out, &feed.expected);
    second.assert_running();
    second.terminate();
    feed.send_readings(100);
    let got = wait_joined(&out, &feed.expected);
    run.assert_running();
    run.terminate();
    let expected = feed.expected;

    // Every reading with a row once, with the row it was sent after; the
    // others nowhere.
    let want: BTreeMap<u64, Value> = expected.iter().filter_map(|(s, v)| Some((*s, v.clone()?))).collect();
    assert!(want.len() < expected.len(), "some readings must miss");
    assert_eq!(got.len(), want.len(), "each joined reading exactly once");
    assert_eq!(got, want);
    // The stream was repartitioned into the table's 2 partitions.
    let repartition = format!("{id}-with-lot-repartition");
    assert!(
        watermarks(&repartition, 1).1 > 0,
        "partition 1 of the repartition topic"
    );
    delete_topics(&[&lots, &readings, &out, &lots_out, &repartition]);
}

/// What the test writes, and what it expects from it.
struct Feed {
    p: rdkafka::producer::BaseProducer,
    lots: String,
    readings: String,
    /// The table as the test wrote it: lot → (name, capacity).
    rows: BTreeMap<String, (String, i64)>,
    /// The last timestamp given.
    clock: i64,
    /// Per reading (SEQ): its output, `None` when its lot has no row.
    expected: BTreeMap<u64, Option<Value>>,
    seq: u64,
}

impl Feed {
    /// Set the rows of `lots` (lot number, version); returns how many.
    fn set_lots(&mut self, lots: &[(usize, &str)]) -> usize {
        for &(lot, version) in lots {
            let key = format!("lot{lot}");
            let (name, cap) = (format!("Lot {lot} {version}"), (lot * 10) as i64);
            self.clock += 1;
            produce(
                &self.p,
                &self.lots,
                weir::partition_for(Some(key.as_bytes()), 2, 0),
                self.clock,
                Some(key.as_bytes()),
                Some(json!({"name": name, "capacity": cap}).to_string().as_bytes()),
            );
            self.rows.insert(key, (name, cap));
        }
        flush(&self.p);
        lots.len()
    }

    /// `n` readings keyed by sensor, over lots 0..12 (lots 10 and 11 never
    /// get a row: an inner join drops them).
    fn send_readings(&mut self, n: usize) {
        for _ in 0..n {
            let seq = self.seq;
            let lot = format!("lot{}", (seq * 7) % 12);
            let sensor = format!("sensor{seq}");
            self.clock += 1;
            let ts = self.clock;
            produce(
                &self.p,
                &self.readings,
                weir::partition_for(Some(sensor.as_bytes()), 3, 0),
                ts,
                Some(sensor.as_bytes()),
                Some(json!({"LOT": lot, "SEQ": seq}).to_string().as_bytes()),
            );
            let row = self.rows.get(&lot);
            self.expected.insert(
                seq,
                row.map(|(name, cap)| json!({"LOT": lot, "SEQ": seq, "LOT_NAME": name, "CAP": cap, "ts": ts})),
            );
            self.seq += 1;
        }
        flush(&self.p);
    }
}

/// Read the output until it holds every expected joined reading; returns
/// them by SEQ, with the output record's timestamp as `ts` (and fails on a
/// SEQ seen twice).
fn wait_joined(out: &str, expected: &BTreeMap<u64, Option<Value>>) -> BTreeMap<u64, Value> {
    let n = expected.values().filter(|v| v.is_some()).count();
    let records = consume_until(out, T, Duration::from_secs(1), |r| r.len() >= n);
    let mut got = BTreeMap::new();
    for r in records {
        let mut v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let seq = v["SEQ"].as_u64().unwrap();
        assert_eq!(
            r.key.as_deref(),
            v["LOT"].as_str().map(str::as_bytes),
            "keyed by the join key"
        );
        v["ts"] = json!(r.timestamp);
        assert!(got.insert(seq, v).is_none(), "reading {seq} twice");
    }
    assert_eq!(got.len(), n, "joined readings so far");
    got
}

/// A stream joined by its own key with a table of another partition count
/// cannot be co-partitioned: `weir run` stops at start, naming the join
/// and each topic's count, before it processes anything.
#[test]
fn run_refuses_a_join_whose_stream_and_table_have_different_partition_counts() {
    let dir = test_dir();
    let id = unique("it-tjoin-count");
    let (lots, readings, out) = (format!("{id}-lots"), format!("{id}-readings"), format!("{id}-out"));
    create_topic(&lots, 2);
    create_topic(&readings, 3);
    let topo = dir.path().join("join.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\nsources:\n  l: {{ topic: {lots} }}\n  r: {{ topic: {readings} }}\n\
             steps:\n  - name: lot-rows\n    from: l\n    table: {{ key: key }}\n  \
             - name: with-lot\n    from: r\n    join: {{ table: lot-rows, key: key, fields: {{ N: name }} }}\n    \
             to: {{ topic: {out} }}\n"
        ),
    )
    .unwrap();
    let run = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
        ],
        &dir.path().join("run.log"),
    );
    run.unwatch();
    wait_for("weir run to stop", T, || run.exited().is_some());
    assert!(!run.exited().unwrap().success());
    let log = run.log_text();
    assert!(
        log.contains("join `with-lot` with table `lot-rows`")
            && log.contains(&format!("{lots} (2)"))
            && log.contains(&format!("{readings} (3)")),
        "{log}"
    );
    delete_topics(&[&lots, &readings, &out, &format!("{id}-lot-rows-changelog")]);
}
