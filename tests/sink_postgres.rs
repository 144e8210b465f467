//! `weir sink` against the real broker and Postgres: windows load into
//! exactly the expected rows (hour = KST wall clock), replays change
//! nothing, `on_update` streams leave the last value per window, the
//! shipped parking sink loads the real poll into `parking_lot_status`, bad
//! records go to the dead-letter topic with their reason, a table that does
//! not match stops the sink naming the column, SIGTERM writes the pending
//! batch, the offsets guard rejects a second writer, and a transactional
//! topic (weir run's exactly-once output) is read to its end, commit markers
//! included, keys Postgres finds equal (0.0 and -0.0) load as one row, and
//! tombstones delete their rows (`delete_on_tombstone`).

mod common;
mod sink_common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use common::wait_for;
use serde_json::Value as J;
use sink_common::*;

const T: Duration = Duration::from_secs(90);

struct Names {
    id: String,
    topic: String,
    dlq: String,
}

fn names(prefix: &str, partitions: i32) -> Names {
    let id = unique_ident(prefix);
    let n = Names {
        topic: format!("{id}_hourly"),
        dlq: format!("{id}_dlq"),
        id,
    };
    common::create_topic(&n.topic, partitions);
    n
}

fn cleanup(pg: &mut Pg, n: &Names) {
    pg.exec(&format!("DROP SCHEMA IF EXISTS {} CASCADE", n.id));
    pg.exec(&format!(
        "DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{}'",
        n.id
    ));
    common::delete_topics(&[&n.topic, &n.dlq]);
}

#[test]
fn windows_load_exactly_once_and_replays_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_win", 3);
    let cfg = write_config(
        dir.path(),
        &n.id,
        &n.dlq,
        "batch_size: 50\nlinger: 50ms\n",
        &[hourly_table_yaml(&n.topic, &n.id, "")],
    );
    let ws = windows(24, 1, 0);
    let want = expected_rows(&ws);
    assert_eq!(want.len(), 24 * REGIONS.len());
    produce_windows(&n.topic, 3, &ws);

    let sink = start_sink(&cfg, &[]);
    let mut pg = Pg::connect();
    wait_caught_up(&mut pg, &n.id, &n.topic, 3, T);
    assert_eq!(table_rows(&mut pg, &n.id), want);
    // `hour` is the KST wall clock of window_start, not UTC.
    let first: NaiveDateTime = pg.query(&format!("SELECT min(hour) FROM {}.parking_hourly_avg", n.id))[0].get(0);
    assert_eq!(first.to_string(), "2025-03-31 00:00:00");
    // The auto-created table is the original dashboard table plus the
    // unique key (docs/sink.md).
    let cols: Vec<(String, String, String)> = pg
        .query(&format!(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'parking_hourly_avg' ORDER BY ordinal_position",
            n.id
        ))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expect_cols: Vec<(String, String, String)> = [
        ("id", "bigint", "NO"),
        ("region", "character varying", "NO"),
        ("region_code", "character varying", "NO"),
        ("hour", "timestamp without time zone", "NO"),
        ("avg_available_spots", "double precision", "NO"),
        ("samples", "bigint", "NO"),
        ("created_at", "timestamp without time zone", "YES"),
        ("updated_at", "timestamp without time zone", "YES"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(cols, expect_cols);
    let stamps = |pg: &mut Pg| -> BTreeMap<String, (NaiveDateTime, NaiveDateTime)> {
        pg.query(&format!(
            "SELECT region_code || hour::text, created_at, updated_at FROM {}.parking_hourly_avg",
            n.id
        ))
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
    };
    let before = stamps(&mut pg);
    // created_at/updated_at are KST wall clock: within a minute of now+9h.
    let kst_now = chrono::Utc::now().naive_utc() + chrono::Duration::hours(9);
    for (created, _) in before.values() {
        assert!(
            (kst_now - *created).num_seconds().abs() < 120,
            "created_at {created} is not KST now ({kst_now})"
        );
    }

    // The same records again: same rows, same values, created_at kept.
    std::thread::sleep(Duration::from_millis(20));
    produce_windows(&n.topic, 3, &ws);
    wait_caught_up(&mut pg, &n.id, &n.topic, 3, T);
    assert_eq!(table_rows(&mut pg, &n.id), want);
    let after = stamps(&mut pg);
    assert_eq!(after.len(), before.len());
    let mut refreshed = 0;
    for (k, (created, updated)) in &after {
        let (c0, u0) = before[k];
        assert_eq!(*created, c0, "created_at of {k} changed");
        assert!(*updated >= u0);
        refreshed += usize::from(*updated > u0);
    }
    assert!(refreshed > 0, "upserts must refresh updated_at");
    // Each offset row names the instance that wrote it.
    let offsets = pg.offsets(&n.id, &n.topic);
    assert_eq!(offsets.len(), 3);
    assert!(offsets.values().all(|(_, owner)| owner.is_some()));
    sink.terminate();
    cleanup(&mut pg, &n);
}

#[test]
fn on_update_stream_leaves_the_last_value_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_upd", 2);
    // Small batches: updates of one window meet inside a batch (dedup) and
    // across batches (order).
    let cfg = write_config(
        dir.path(),
        &n.id,
        &n.dlq,
        "batch_size: 97\nlinger: 20ms\n",
        &[hourly_table_yaml(&n.topic, &n.id, "")],
    );
    let ws = windows(6, 25, 0);
    let want = expected_rows(&ws);
    assert_eq!(want.len(), 6 * REGIONS.len());
    assert!(want.values().all(|(_, _, samples)| *samples == 25));
    let sink = start_sink(&cfg, &[]);
    let (a, b) = ws.split_at(ws.len() / 2);
    produce_windows(&n.topic, 2, a);
    std::thread::sleep(Duration::from_millis(500));
    produce_windows(&n.topic, 2, b);
    let mut pg = Pg::connect();
    wait_caught_up(&mut pg, &n.id, &n.topic, 2, T);
    assert_eq!(table_rows(&mut pg, &n.id), want);
    sink.terminate();
    cleanup(&mut pg, &n);
}

/// The shipped `topology/parking-sink.yaml`, pointed at test topics and a
/// test schema.
fn shipped_config(dir: &std::path::Path, id: &str, hourly: &str, lots: &str, dlq: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking-sink.yaml"))
        .unwrap()
        .replace("name: parking", &format!("name: {id}"))
        .replace("dead_letter: parking_sink_dlq", &format!("dead_letter: {dlq}"))
        .replace("topic: parking_hourly_avg", &format!("topic: {hourly}"))
        .replace("topic: parking_lot_status", &format!("topic: {lots}"))
        .replace("table: parking.", &format!("table: {id}."))
        .replace("linger: 200ms", "linger: 50ms");
    let path = dir.join("parking-sink.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn shipped_sink_loads_the_real_poll_into_lot_status() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_lot", 2);
    let lots = format!("{}_lots", n.id);
    common::create_topic(&lots, 3);
    let cfg = shipped_config(dir.path(), &n.id, &n.topic, &lots, &n.dlq);

    // What the engine's latest-per-lot branch writes: realtime lots with
    // AVAILABLE_SPOTS added as a number.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/citydata_parking_poll.jsonl")).unwrap();
    let mut records = Vec::new();
    for line in text.lines() {
        let mut v: serde_json::Map<String, J> = serde_json::from_str(line).unwrap();
        if v["IS_REALTIME_STATUS_PROVIDED"] != "Y" {
            continue;
        }
        let num = |f: &str| v[f].as_str().unwrap().trim().parse::<i64>().unwrap_or(0);
        let available = (num("CAPACITY") - num("OCCUPIED_SPOTS")).max(0);
        v.insert("AVAILABLE_SPOTS".into(), J::from(available));
        records.push(v);
    }
    assert!(records.len() > 40, "the fixture has 54 realtime records");
    let p = common::producer();
    let now = chrono::Utc::now().timestamp_millis();
    for v in &records {
        let key = v["PARKING_CODE"].as_str().unwrap();
        let part = weir::partition_for(Some(key.as_bytes()), 3, 0);
        common::produce(
            &p,
            &lots,
            part,
            now,
            Some(key.as_bytes()),
            Some(J::Object(v.clone()).to_string().as_bytes()),
        );
    }
    common::flush(&p);

    let sink = start_sink(&cfg, &[]);
    let mut pg = Pg::connect();
    wait_caught_up(&mut pg, &n.id, &lots, 3, T);

    // Expected: the last record per lot; numbers from strings, "" → NULL,
    // LAST_UPDATE as the KST wall clock it already is.
    type Lot = (
        String,
        String,
        Option<i32>,
        Option<i32>,
        Option<i32>,
        Option<NaiveDateTime>,
        String,
        Option<f64>,
    );
    let mut want: BTreeMap<String, Lot> = BTreeMap::new();
    for v in &records {
        let s = |f: &str| v[f].as_str().unwrap().to_string();
        let int = |f: &str| match v[f].as_str().unwrap().trim() {
            "" => None,
            t => Some(t.parse::<i32>().unwrap()),
        };
        let last = match s("LAST_UPDATE").as_str() {
            "" => None,
            t => Some(NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap()),
        };
        let lat = s("LATITUDE").parse::<f64>().ok();
        want.insert(
            s("PARKING_CODE"),
            (
                s("PARKING_NAME"),
                s("REGION_CODE"),
                int("CAPACITY"),
                int("OCCUPIED_SPOTS"),
                v["AVAILABLE_SPOTS"].as_i64().map(|a| a as i32),
                last,
                s("PAY_YN"),
                lat,
            ),
        );
    }
    let got: BTreeMap<String, Lot> = pg
        .query(&format!(
            "SELECT parking_code::text, parking_name::text, region_code::text, capacity, occupied_spots, available_spots, \
             last_update, pay_yn, latitude FROM {}.parking_lot_status",
            n.id
        ))
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8))))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM {}.parking_lot_status WHERE is_realtime = 'Y'",
            n.id
        )),
        want.len() as i64
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM {}.parking_lot_status WHERE updated_at IS NULL",
            n.id
        )),
        0
    );
    sink.terminate();
    common::delete_topics(&[&lots]);
    cleanup(&mut pg, &n);
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_dlq", 1);
    let mut pg = Pg::connect();
    // A table the sink accepts but that rejects negative samples: only
    // Postgres can find that record.
    pg.exec(&format!(
        "CREATE SCHEMA {0}; CREATE TABLE {0}.parking_hourly_avg (
           id bigserial PRIMARY KEY, region varchar(255) NOT NULL, region_code varchar(50) NOT NULL,
           hour timestamp NOT NULL, avg_available_spots double precision NOT NULL,
           samples bigint NOT NULL CHECK (samples >= 0),
           created_at timestamp DEFAULT (now() AT TIME ZONE 'Asia/Seoul'),
           updated_at timestamp DEFAULT (now() AT TIME ZONE 'Asia/Seoul'),
           UNIQUE (region_code, hour))",
        n.id
    ));
    let cfg = write_config(
        dir.path(),
        &n.id,
        &n.dlq,
        "batch_size: 1000\nlinger: 300ms\n",
        &[hourly_table_yaml(&n.topic, &n.id, "")],
    );
    let good = windows(3, 1, 0);
    let w = |hour: i64, code: &str| Window {
        region: "r".into(),
        region_code: code.into(),
        hour,
        avg: 1.0,
        samples: 1,
        seq: 0,
    };
    let long = "가".repeat(300);
    let bad: Vec<(String, &str)> = vec![
        ("{oops".to_string(), "not valid JSON"),
        (
            r#"{"region":"r","window_start":"2025-03-31T10:00:00+09:00","avg_available_spots":1,"samples":1}"#
                .to_string(),
            "column region_code: field `region_code` is missing",
        ),
        (
            w(50, "POI900")
                .json()
                .replace("\"avg_available_spots\":1.0", "\"avg_available_spots\":\"abc\""),
            "\"abc\" is not a number",
        ),
        (
            w(51, "POI901").json().replace("2025-04-02T03:00:00+09:00", "yesterday"),
            "\"yesterday\" is not an RFC 3339 timestamp",
        ),
        (
            w(52, "POI902")
                .json()
                .replace("\"region\":\"r\"", &format!("\"region\":\"{long}\"")),
            "longer than the column's 255",
        ),
        (
            w(53, "POI903").json().replace("\"samples\":1", "\"samples\":-1"),
            "rejected by Postgres",
        ),
    ];
    // Each replace() must have changed the record.
    for (i, (hour, code)) in [(50, "POI900"), (51, "POI901"), (52, "POI902"), (53, "POI903")]
        .iter()
        .enumerate()
    {
        assert_ne!(bad[i + 2].0, w(*hour, code).json());
    }
    let p = common::producer();
    let now = chrono::Utc::now().timestamp_millis();
    let (first, rest) = good.split_at(good.len() / 2);
    for g in first {
        common::produce(
            &p,
            &n.topic,
            0,
            now,
            Some(g.key().as_bytes()),
            Some(g.json().as_bytes()),
        );
    }
    for (payload, _) in &bad {
        common::produce(&p, &n.topic, 0, now, Some(b"bad"), Some(payload.as_bytes()));
    }
    for g in rest {
        common::produce(
            &p,
            &n.topic,
            0,
            now,
            Some(g.key().as_bytes()),
            Some(g.json().as_bytes()),
        );
    }
    common::flush(&p);

    let sink = start_sink(&cfg, &[]);
    wait_caught_up(&mut pg, &n.id, &n.topic, 1, T);
    assert_eq!(table_rows(&mut pg, &n.id), expected_rows(&good));
    let dlq = common::consume_until(&n.dlq, T, Duration::from_secs(2), |r| r.len() >= bad.len());
    assert_eq!(dlq.len(), bad.len(), "{dlq:?}");
    for ((payload, reason), rec) in bad.iter().zip(&dlq) {
        assert_eq!(
            rec.value.as_deref(),
            Some(payload.as_bytes()),
            "DLQ keeps the original value, in order"
        );
        let err = &rec.headers["weir.error"];
        assert!(err.contains(reason), "reason {err:?} should contain {reason:?}");
        assert_eq!(rec.headers["weir.topic"], n.topic);
        assert_eq!(rec.headers["weir.partition"], "0");
        let offset: i64 = rec.headers["weir.offset"].parse().unwrap();
        assert!(offset >= first.len() as i64 && offset < (first.len() + bad.len()) as i64);
        assert_eq!(rec.key.as_deref(), Some(&b"bad"[..]));
    }
    sink.terminate();
    cleanup(&mut pg, &n);
}

/// Run the sink expecting it to fail at start; returns its stderr.
fn run_expecting_failure(cfg: &std::path::Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("sink")
        .arg(cfg)
        .env("WEIR_BOOTSTRAP", common::bootstrap())
        .env("WEIR_PG_URL", pg_url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "the sink must fail; stderr:\n{err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the sink did not stop on a schema mismatch");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn schema_mismatch_stops_the_sink_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_schema", 1);
    let mut pg = Pg::connect();
    pg.exec(&format!(
        "CREATE SCHEMA {0}; CREATE TABLE {0}.parking_hourly_avg (
           id bigserial PRIMARY KEY, region text NOT NULL, region_code text NOT NULL, hour timestamp NOT NULL,
           avg_available_spots double precision, samples text, created_at timestamp, updated_at timestamp,
           UNIQUE (region_code, hour))",
        n.id
    ));
    let cfg = write_config(dir.path(), &n.id, &n.dlq, "", &[hourly_table_yaml(&n.topic, &n.id, "")]);
    let err = run_expecting_failure(&cfg);
    assert!(err.contains("column \"samples\" has type text"), "{err}");

    pg.exec(&format!(
        "ALTER TABLE {0}.parking_hourly_avg DROP COLUMN samples, DROP COLUMN avg_available_spots",
        n.id
    ));
    let err = run_expecting_failure(&cfg);
    assert!(
        err.contains("column \"avg_available_spots\" (from field `avg_available_spots`) does not exist"),
        "{err}"
    );
    assert!(err.contains("column \"samples\""), "{err}");

    // No unique key on (region_code, hour): upserts cannot work.
    pg.exec(&format!(
        "DROP TABLE {0}.parking_hourly_avg; CREATE TABLE {0}.parking_hourly_avg (region text NOT NULL, region_code text NOT NULL,
           hour timestamp NOT NULL, avg_available_spots double precision, samples bigint, created_at timestamp, updated_at timestamp)",
        n.id
    ));
    let err = run_expecting_failure(&cfg);
    assert!(
        err.contains("no primary key or unique constraint on (region_code, hour)"),
        "{err}"
    );
    cleanup(&mut pg, &n);
}

#[test]
fn sigterm_writes_the_pending_batch_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_term", 1);
    // Nothing is written before shutdown: the batch neither fills nor
    // lingers out.
    let cfg = write_config(
        dir.path(),
        &n.id,
        &n.dlq,
        "batch_size: 100000\nlinger: 10m\n",
        &[hourly_table_yaml(&n.topic, &n.id, "")],
    );
    let sink = start_sink(&cfg, &[]);
    wait_for("the assignment", T, || {
        sink.log_text().contains("assigned at the offsets stored in Postgres")
    });
    let ws = windows(5, 2, 0);
    produce_windows(&n.topic, 1, &ws);
    std::thread::sleep(Duration::from_secs(3));
    let mut pg = Pg::connect();
    assert_eq!(
        pg.count(&format!("SELECT count(*) FROM {}.parking_hourly_avg", n.id)),
        0,
        "linger holds the batch"
    );
    sink.terminate();
    assert_eq!(table_rows(&mut pg, &n.id), expected_rows(&ws));
    assert_eq!(pg.offsets(&n.id, &n.topic)[&0].0, ws.len() as i64);
    cleanup(&mut pg, &n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_guard_rejects_a_second_writer() {
    use weir::{OffsetUpdate, SinkConfig, SqlValue as Value, TableRows, WriteError, Writer};
    let id = unique_ident("sink_guard");
    let text = format!(
        "name: {id}\ndead_letter: d\ntables:\n{}",
        hourly_table_yaml("t", &id, "")
    );
    let cfg = SinkConfig::parse(&text).unwrap();
    let mut a = Writer::start(&pg_url(), &cfg, "instance-a").await.unwrap();
    let mut b = Writer::start(&pg_url(), &cfg, "instance-b").await.unwrap();
    fn a_row(w: &Writer, code: &str, samples: i64) -> Vec<Value> {
        let v = serde_json::json!({"region":"r","region_code":code,"window_start":"2025-03-31T10:00:00+09:00","avg_available_spots":1.5,"samples":samples});
        w.mapping(0).map_json(&v).unwrap()
    }
    let upd = |expected: Option<i64>, next: i64| {
        vec![OffsetUpdate {
            topic: "t".into(),
            partition: 0,
            expected,
            next,
        }]
    };
    let r1 = a_row(&a, "A", 1);
    let r2 = a_row(&a, "B", 2);
    let r3 = a_row(&a, "C", 3);
    a.write_batch(
        &[TableRows {
            table: 0,
            rows: vec![&r1],
            deletes: Vec::new(),
        }],
        &upd(None, 10),
    )
    .await
    .unwrap();
    // B still believes nothing is stored: its batch must not commit.
    let err = b
        .write_batch(
            &[TableRows {
                table: 0,
                rows: vec![&r2],
                deletes: Vec::new(),
            }],
            &upd(None, 10),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::OwnershipLost { .. }), "{err:?}");
    // After reading the stored offset, B continues from there.
    let stored = b.read_offsets(&["t".to_string()]).await.unwrap();
    assert_eq!(stored[&("t".to_string(), 0)], 10);
    b.write_batch(
        &[TableRows {
            table: 0,
            rows: vec![&r2],
            deletes: Vec::new(),
        }],
        &upd(Some(10), 20),
    )
    .await
    .unwrap();
    // A, now a zombie that thinks it is at 10, is fenced off.
    let err = a
        .write_batch(
            &[TableRows {
                table: 0,
                rows: vec![&r3],
                deletes: Vec::new(),
            }],
            &upd(Some(10), 20),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::OwnershipLost { .. }), "{err:?}");

    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let codes: Vec<String> = client
        .query(
            &format!("SELECT region_code::text FROM {id}.parking_hourly_avg ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(codes, vec!["A", "B"], "rows of rejected batches must not be written");
    let owner: String = client
        .query_one(
            &format!("SELECT owner FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "instance-b");
    client
        .batch_execute(&format!(
            "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
        ))
        .await
        .unwrap();
}

/// Windows produced in Kafka transactions, as `weir run` writes them under
/// exactly-once: each transaction ends with a commit marker that takes an
/// offset but is never delivered. The sink must still store the end offset
/// (lag 0), not the offset after the last record.
#[test]
fn transactional_topic_is_loaded_to_its_end_past_commit_markers() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_txn", 3);
    let cfg = write_config(
        dir.path(),
        &n.id,
        &n.dlq,
        "batch_size: 50\nlinger: 50ms\n",
        &[hourly_table_yaml(&n.topic, &n.id, "")],
    );
    let ws = windows(6, 1, 0);
    let want = expected_rows(&ws);
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .set("transactional.id", format!("{}-txn", n.id))
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for chunk in ws.chunks(10) {
        p.begin_transaction().unwrap();
        for w in chunk {
            let key = w.key();
            let json = w.json();
            let part = weir::partition_for(Some(key.as_bytes()), 3, 0);
            p.send(
                BaseRecord::to(&n.topic)
                    .partition(part)
                    .timestamp(now)
                    .key(key.as_bytes())
                    .payload(json.as_bytes()),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }
        p.commit_transaction(Duration::from_secs(30)).unwrap();
    }
    let sink = start_sink(&cfg, &[]);
    let mut pg = Pg::connect();
    // The end offsets count the markers: reached only by stepping over them.
    // Read again each time: the transaction coordinator writes the markers
    // after commit_transaction returns, so the end moves for a while.
    wait_for("the sink to store the end offsets, commit markers included", T, || {
        let end = end_offsets(&n.topic, 3);
        let got = pg.offsets(&n.id, &n.topic);
        end.iter().all(|(p, e)| got.get(p).map(|(o, _)| *o) == Some(*e))
    });
    assert_eq!(table_rows(&mut pg, &n.id), want);
    sink.terminate();
    cleanup(&mut pg, &n);
}

/// A `double` key column: 0.0 and -0.0 are one key in Postgres, so a batch
/// holding both must be deduplicated to one row (the last); two rows for
/// one key make Postgres reject the whole statement (SQLSTATE 21000), and
/// since each row alone is accepted the sink would stop.
#[test]
fn zero_and_negative_zero_keys_are_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_zero", 1);
    let table = format!(
        "  - topic: {}\n    table: {}.by_double\n    key: [k]\n    auto_create: true\n    columns:\n      \
         k: {{ field: k, type: double }}\n      v: {{ field: v, type: bigint }}\n",
        n.topic, n.id
    );
    // One batch: everything is in the topic before the sink starts.
    let cfg = write_config(dir.path(), &n.id, &n.dlq, "linger: 2s\n", &[table]);
    let p = common::producer();
    let now = chrono::Utc::now().timestamp_millis();
    for (i, v) in [r#"{"k":0.0,"v":1}"#, r#"{"k":-0.0,"v":2}"#, r#"{"k":1.5,"v":3}"#]
        .iter()
        .enumerate()
    {
        common::produce(&p, &n.topic, 0, now + i as i64, None, Some(v.as_bytes()));
    }
    common::flush(&p);

    let sink = start_sink(&cfg, &[]);
    let mut pg = Pg::connect();
    wait_caught_up(&mut pg, &n.id, &n.topic, 1, T);
    sink.assert_running();
    let rows: Vec<(f64, i64)> = pg
        .query(&format!("SELECT k, v FROM {}.by_double ORDER BY k", n.id))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(0.0, 2), (1.5, 3)], "the last record per key wins");
    sink.terminate();
    cleanup(&mut pg, &n);
}

/// `delete_on_tombstone`: a record with a key and no value deletes the row
/// of that key (the JDBC sink's `delete.enabled`), the last record per key
/// winning within a batch; a tombstone for a key without a row changes
/// nothing; one without a key goes to the dead-letter topic.
#[test]
fn tombstones_delete_their_rows_and_the_last_record_per_key_wins() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("sink_tomb", 1);
    let table = format!(
        "  - topic: {}\n    table: {}.lots\n    key: [code]\n    auto_create: true\n    delete_on_tombstone: true\n    \
         columns:\n      code: {{ field: CODE, type: \"varchar(20)\" }}\n      name: {{ field: NAME, type: text }}\n",
        n.topic, n.id
    );
    let cfg = write_config(dir.path(), &n.id, &n.dlq, "linger: 2s\n", &[table]);
    let p = common::producer();
    let now = chrono::Utc::now().timestamp_millis();
    let row = |code: &str, name: &str| format!(r#"{{"CODE":"{code}","NAME":"{name}"}}"#);
    // One batch (all in the topic before the sink starts): `e` written then
    // deleted, `f` deleted then written again, `b` deleted.
    let first: Vec<(&str, Option<String>)> = vec![
        ("a", Some(row("a", "A"))),
        ("b", Some(row("b", "B"))),
        ("c", Some(row("c", "C"))),
        ("e", Some(row("e", "E"))),
        ("f", Some(row("f", "F"))),
        ("b", None),
        ("e", None),
        ("f", None),
        ("f", Some(row("f", "F2"))),
    ];
    for (i, (key, value)) in first.iter().enumerate() {
        common::produce(
            &p,
            &n.topic,
            0,
            now + i as i64,
            Some(key.as_bytes()),
            value.as_deref().map(str::as_bytes),
        );
    }
    common::flush(&p);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let sink = start_sink(&cfg, &["--metrics-addr", &addr]);
    let mut pg = Pg::connect();
    let rows = |pg: &mut Pg| -> Vec<(String, String)> {
        pg.query(&format!("SELECT code, name FROM {}.lots ORDER BY code", n.id))
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    wait_caught_up(&mut pg, &n.id, &n.topic, 1, T);
    assert_eq!(rows(&mut pg), pairs(&[("a", "A"), ("c", "C"), ("f", "F2")]));

    // Later batches: `c` deleted, `x` never had a row, a keyless tombstone.
    common::produce(&p, &n.topic, 0, now + 20, Some(b"c"), None);
    common::produce(&p, &n.topic, 0, now + 21, Some(b"x"), None);
    common::produce(&p, &n.topic, 0, now + 22, None, None);
    common::flush(&p);
    wait_caught_up(&mut pg, &n.id, &n.topic, 1, T);
    assert_eq!(rows(&mut pg), pairs(&[("a", "A"), ("f", "F2")]));
    let dlq = common::consume_until(&n.dlq, T, Duration::from_secs(2), |r| !r.is_empty());
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert!(
        dlq[0].headers["weir.error"].contains("tombstone without a key"),
        "{dlq:?}"
    );
    sink.assert_running();
    // b and e in the first batch, c and x later: tombstones applied.
    let text = common::http_get(&addr, "/metrics");
    let deleted = common::metrics::metric(&text, "weir_sink_rows_deleted_total", "").unwrap_or(0.0);
    assert_eq!(deleted, 4.0, "{text}");
    sink.terminate();
    cleanup(&mut pg, &n);
}
