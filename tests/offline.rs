//! `weir test` on the parking topology with hand-computed expectations
//! (docs/design.md, "Semantics the parking job relies on": filter "N",
//! empty CAPACITY = 0, negative available clamped to 0, bad records to the dead-letter topic, one result per
//! region and hour across input partitions).

use std::io::Write;
use std::process::Command;

use chrono::TimeZone;
use serde_json::{json, Value};

fn kst(h: u32, m: u32) -> i64 {
    chrono_tz::Asia::Seoul
        .with_ymd_and_hms(2025, 3, 31, h, m, 0)
        .unwrap()
        .timestamp_millis()
}

fn lot(region: &str, code: &str, lot: &str, cap: &str, occ: &str, yn: &str, at: (u32, u32)) -> Value {
    json!({
        "REGION": region, "REGION_CODE": code, "PARKING_NAME": format!("{lot} 주차장"), "PARKING_CODE": lot,
        "TYPE": "NS", "CAPACITY": cap, "OCCUPIED_SPOTS": occ,
        "LAST_UPDATE": format!("2025-03-31 {:02}:{:02}:00", at.0, at.1),
        "IS_REALTIME_STATUS_PROVIDED": yn, "PAY_YN": "Y", "BASE_RATE": "0", "BASE_TIME": "", "ADD_RATE": "0",
        "ADD_TIME": "", "LATITUDE": "37.55", "LONGITUDE": "126.92"
    })
}

fn line(partition: i32, ts: i64, key: &str, value: &Value) -> String {
    json!({"topic": "parking_status", "partition": partition, "timestamp": ts, "key": key, "value": value.to_string()})
        .to_string()
}

fn input() -> String {
    let hongdae = "홍대 관광특구";
    let gangnam = "강남 MICE 관광특구";
    [
        line(
            0,
            kst(10, 5),
            "A",
            &lot(hongdae, "POI007", "A", "22", "2", "Y", (10, 5)),
        ), // 20
        line(
            1,
            kst(10, 10),
            "B",
            &lot(hongdae, "POI007", "B", "10", "12", "Y", (10, 10)),
        ), // clamped to 0
        line(0, kst(10, 20), "C", &lot(hongdae, "POI007", "C", "", "", "Y", (10, 20))), // empty = 0
        line(
            1,
            kst(10, 25),
            "D",
            &lot(hongdae, "POI007", "D", "30", "5", "N", (10, 25)),
        ), // filtered out
        line(
            0,
            kst(10, 28),
            "E",
            &lot(gangnam, "POI001", "E", "abc", "1", "Y", (10, 28)),
        ), // DLQ
        line(
            1,
            kst(10, 30),
            "F",
            &lot(gangnam, "POI001", "F", "8", "0", "Y", (10, 30)),
        ), // 8
        json!({"topic": "parking_status", "partition": 0, "timestamp": kst(10, 31), "key": "G", "value": "{not json"})
            .to_string(),
        line(
            0,
            kst(11, 5),
            "A",
            &lot(hongdae, "POI007", "A", "22", "12", "Y", (11, 5)),
        ), // 10, next hour
    ]
    .join("\n")
}

const PARKING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml");

fn run(flush: bool) -> Vec<Value> {
    weir_test(std::path::Path::new(PARKING), &input(), flush)
}

/// `weir test TOPOLOGY --input` the lines of `input`; the output records.
fn weir_test(topo: &std::path::Path, input: &str, flush: bool) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.arg("test").arg(topo).arg("--input").arg(&path);
    if flush {
        cmd.arg("--flush");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn on(records: &[Value], topic: &str) -> Vec<Value> {
    records.iter().filter(|r| r["topic"] == topic).cloned().collect()
}

#[test]
fn hourly_averages_follow_the_design_rules() {
    let out = run(true);
    let hourly = on(&out, "parking_hourly_avg");
    assert_eq!(hourly.len(), 3, "{hourly:#?}");
    let find = |code: &str, start: &str| {
        hourly
            .iter()
            .find(|r| r["value"]["region_code"] == code && r["value"]["window_start"] == start)
            .unwrap_or_else(|| panic!("no row for {code} {start}: {hourly:#?}"))
            .clone()
    };
    let h = find("POI007", "2025-03-31T10:00:00+09:00");
    assert_eq!(h["value"]["samples"], 3);
    assert!((h["value"]["avg_available_spots"].as_f64().unwrap() - 20.0 / 3.0).abs() < 1e-9);
    assert_eq!(h["value"]["region"], "홍대 관광특구");
    assert_eq!(h["value"]["window_end"], "2025-03-31T11:00:00+09:00");
    assert_eq!(h["key"], "POI007@2025-03-31T10:00:00+09:00");
    assert_eq!(
        h["timestamp"],
        kst(10, 20),
        "result timestamp = newest contributing record"
    );
    let g = find("POI001", "2025-03-31T10:00:00+09:00");
    assert_eq!(
        (
            g["value"]["samples"].as_i64(),
            g["value"]["avg_available_spots"].as_f64()
        ),
        (Some(1), Some(8.0))
    );
    let next = find("POI007", "2025-03-31T11:00:00+09:00");
    assert_eq!(
        (
            next["value"]["samples"].as_i64(),
            next["value"]["avg_available_spots"].as_f64()
        ),
        (Some(1), Some(10.0))
    );
    for r in &hourly {
        let key = r["key"].as_str().unwrap();
        assert_eq!(
            r["partition"],
            weir::partition_for(Some(key.as_bytes()), 3, 0),
            "output partitioned by key like Kafka"
        );
    }
}

#[test]
fn bad_records_reach_the_dead_letter_topic_and_the_rest_goes_on() {
    let out = run(false);
    let dlq = on(&out, "parking_status_dlq");
    assert_eq!(dlq.len(), 2, "{dlq:#?}");
    assert_eq!(dlq[0]["key"], "E");
    assert!(
        dlq[0]["headers"]["weir.error"]
            .as_str()
            .unwrap()
            .contains("not a number"),
        "{dlq:#?}"
    );
    assert_eq!(dlq[0]["headers"]["weir.processor"], "available");
    assert_eq!(dlq[1]["key"], "G");
    assert!(dlq[1]["headers"]["weir.error"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    assert_eq!(dlq[1]["value"], "{not json", "original payload kept");
}

#[test]
fn without_flush_open_windows_are_not_emitted() {
    let out = run(false);
    let hourly = on(&out, "parking_hourly_avg");
    // Windows close per task (repartition partition, 2 here: the input has
    // two partitions). POI007's task saw 11:05 > 10:00 + 1h + 1m grace, so
    // its 10:00 window closed; POI001's closed only if it shares the task.
    let part = |k: &str| weir::partition_for(Some(k.as_bytes()), 2, 0);
    let same = part(r#"["POI007","홍대 관광특구"]"#) == part(r#"["POI001","강남 MICE 관광특구"]"#);
    let mut keys: Vec<&str> = hourly.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort();
    let mut expected = vec!["POI007@2025-03-31T10:00:00+09:00"];
    if same {
        expected.insert(0, "POI001@2025-03-31T10:00:00+09:00");
    }
    assert_eq!(keys, expected, "{hourly:#?}");
}

#[test]
fn latest_status_per_lot_excludes_filtered_and_bad_lots() {
    let out = run(false);
    let lots = on(&out, "parking_lot_status");
    let keys: Vec<&str> = lots.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["A", "B", "C", "F", "A"]);
    let a = &lots[4]["value"];
    assert_eq!(a["AVAILABLE_SPOTS"], 10);
    assert_eq!(a["LAST_UPDATE"], "2025-03-31 11:05:00");
    assert_eq!(
        lots[1]["value"]["AVAILABLE_SPOTS"], 0,
        "negative availability clamps to 0"
    );
}

/// The parking job reading its event time from `LAST_UPDATE`, with a lot
/// whose clock says 2099. `weir test`'s clock is the largest input
/// timestamp so far, so the result does not depend on when the test runs.
#[test]
fn a_record_dated_beyond_max_future_is_dead_lettered_and_changes_no_window() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(PARKING).unwrap().replace(
        "event_time: kafka",
        r#"event_time: { field: LAST_UPDATE, format: "%Y-%m-%d %H:%M:%S", time_zone: Asia/Seoul }"#,
    );
    let topo = dir.path().join("parking-field-time.yaml");
    std::fs::write(&topo, text).unwrap();
    let hongdae = "홍대 관광특구";
    let mut wrong_clock = lot(hongdae, "POI007", "B", "10", "0", "Y", (10, 10));
    wrong_clock["LAST_UPDATE"] = "2099-01-01 00:00:00".into();
    let input = [
        line(
            0,
            kst(10, 5),
            "A",
            &lot(hongdae, "POI007", "A", "22", "2", "Y", (10, 5)),
        ), // 20
        line(0, kst(10, 10), "B", &wrong_clock), // DLQ
        line(
            0,
            kst(10, 20),
            "C",
            &lot(hongdae, "POI007", "C", "4", "0", "Y", (10, 20)),
        ), // 4
        // 59 minutes ahead of the clock (10:30): in; 61 minutes: out.
        line(
            0,
            kst(10, 30),
            "D",
            &lot(hongdae, "POI007", "D", "6", "0", "Y", (11, 29)),
        ), // 6
        line(
            0,
            kst(10, 30),
            "E",
            &lot(hongdae, "POI007", "E", "8", "0", "Y", (11, 31)),
        ), // DLQ
    ]
    .join("\n");
    let out = weir_test(&topo, &input, true);
    let dlq = on(&out, "parking_status_dlq");
    let keys: Vec<&str> = dlq.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["B", "E"], "{dlq:#?}");
    for r in &dlq {
        assert!(
            r["headers"]["weir.error"]
                .as_str()
                .unwrap()
                .contains("ahead of the clock"),
            "{r:#?}"
        );
    }
    let hourly = on(&out, "parking_hourly_avg");
    let windows: Vec<(&str, i64, f64)> = hourly
        .iter()
        .map(|r| {
            (
                r["value"]["window_start"].as_str().unwrap(),
                r["value"]["samples"].as_i64().unwrap(),
                r["value"]["avg_available_spots"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        windows,
        [
            ("2025-03-31T10:00:00+09:00", 2, 12.0),
            ("2025-03-31T11:00:00+09:00", 1, 6.0)
        ],
        "{hourly:#?}"
    );
}

/// Kafka Streams' own `KStreamWindowAggregateTest.testAggBasic`
/// (apache/kafka, streams/src/test/java/org/apache/kafka/streams/kstream/internals/
/// KStreamWindowAggregateTest.java): hopping windows of 10 ms advancing by
/// 5 ms, grace 100 ms, emit on every update, records at 0–14 ms and three
/// out-of-order ones. Its aggregate concatenates values ("0+2+2+2+1"); here
/// the same updates are checked as (count, sum) of the terms after the
/// initial "0". `TimeWindows.windowsFor` never opens a window that starts
/// before the epoch, so a record at 3 ms updates [0, 10) only, not [-5, 5):
/// Kafka Streams emits 29 updates where 36 would mean negative windows.
#[test]
fn hopping_windows_match_kafka_streams_test_agg_basic() {
    let topology = "\
application_id: agg-basic
sources:
  topic1: { topic: topic1, key: string, value: string }
steps:
  - name: agg
    window:
      group_by: { k: key }
      hopping: { size: 10ms, advance: 5ms }
      grace: 100ms
      emit: on_update
      aggregate:
        n: count()
        sum: sum(int(value))
    to: { topic: out }
";
    let input: &[(&str, &str, i64)] = &[
        ("A", "1", 0),
        ("B", "2", 1),
        ("C", "3", 2),
        ("D", "4", 3),
        ("A", "1", 4),
        ("A", "1", 5),
        ("B", "2", 6),
        ("D", "4", 7),
        ("B", "2", 8),
        ("C", "3", 9),
        ("A", "1", 10),
        ("B", "2", 11),
        ("D", "4", 12),
        ("B", "2", 13),
        ("C", "3", 14),
        ("B", "1", 3),
        ("B", "2", 2),
        ("B", "3", 9),
    ];
    // Kafka Streams' expected output: key, window [start, end), aggregate,
    // record timestamp.
    let expected: &[(&str, i64, i64, &str, i64)] = &[
        ("A", 0, 10, "0+1", 0),
        ("B", 0, 10, "0+2", 1),
        ("C", 0, 10, "0+3", 2),
        ("D", 0, 10, "0+4", 3),
        ("A", 0, 10, "0+1+1", 4),
        ("A", 0, 10, "0+1+1+1", 5),
        ("A", 5, 15, "0+1", 5),
        ("B", 0, 10, "0+2+2", 6),
        ("B", 5, 15, "0+2", 6),
        ("D", 0, 10, "0+4+4", 7),
        ("D", 5, 15, "0+4", 7),
        ("B", 0, 10, "0+2+2+2", 8),
        ("B", 5, 15, "0+2+2", 8),
        ("C", 0, 10, "0+3+3", 9),
        ("C", 5, 15, "0+3", 9),
        ("A", 5, 15, "0+1+1", 10),
        ("A", 10, 20, "0+1", 10),
        ("B", 5, 15, "0+2+2+2", 11),
        ("B", 10, 20, "0+2", 11),
        ("D", 5, 15, "0+4+4", 12),
        ("D", 10, 20, "0+4", 12),
        ("B", 5, 15, "0+2+2+2+2", 13),
        ("B", 10, 20, "0+2+2", 13),
        ("C", 5, 15, "0+3+3", 14),
        ("C", 10, 20, "0+3", 14),
        ("B", 0, 10, "0+2+2+2+1", 8),
        ("B", 0, 10, "0+2+2+2+1+2", 8),
        ("B", 0, 10, "0+2+2+2+1+2+3", 9),
        ("B", 5, 15, "0+2+2+2+2+3", 13),
    ];
    let dir = tempfile::tempdir().unwrap();
    let topo_path = dir.path().join("agg-basic.yaml");
    std::fs::write(&topo_path, topology).unwrap();
    let in_path = dir.path().join("in.jsonl");
    let lines: Vec<String> = input
        .iter()
        .map(|(k, v, ts)| json!({"topic": "topic1", "timestamp": ts, "key": k, "value": v}).to_string())
        .collect();
    std::fs::write(&in_path, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("test")
        .arg(&topo_path)
        .arg("--input")
        .arg(&in_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let got: Vec<(String, i64, i64, i64, i64, i64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["topic"] == "out")
        .map(|r| {
            let v = &r["value"];
            (
                v["k"].as_str().unwrap().to_string(),
                ms(&v["window_start"]),
                ms(&v["window_end"]),
                v["n"].as_i64().unwrap(),
                v["sum"].as_i64().unwrap(),
                r["timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64, i64, i64, i64, i64)> = expected
        .iter()
        .map(|&(k, start, end, agg, ts)| {
            let terms: Vec<i64> = agg.split('+').skip(1).map(|t| t.parse().unwrap()).collect();
            (k.to_string(), start, end, terms.len() as i64, terms.iter().sum(), ts)
        })
        .collect();
    assert_eq!(got.len(), 29, "Kafka Streams emits 29 updates: {got:#?}");
    assert_eq!(got, want);
}

/// The hotspot join (`with-hotspot`) and the district in
/// `free-now-by-region`, hand-computed: records of the global table's topic
/// set its rows in input order, so a lot seen before its hotspot's row has
/// no district and one after has; a lot of a hotspot the table lacks, or
/// without `REGION_CODE`, goes on with both fields null (a left join). The
/// region whose lots move from the null district to 마포구 is subtracted
/// from its old group (emptied: a tombstone keyed by the region) and added
/// to the new one.
#[test]
fn lots_are_joined_with_their_hotspot_and_free_now_carries_the_district() {
    let hongdae = "홍대 관광특구";
    let hotspot = |ts: i64, code: &str, district: &str, category: &str| {
        let v = json!({"code": code, "name": hongdae, "district": district, "category": category});
        json!({"topic": "parking_hotspots", "partition": 0, "timestamp": ts, "key": code, "value": v.to_string()})
            .to_string()
    };
    let mut no_code = lot("어딘가", "POI001", "G", "5", "1", "Y", (10, 40));
    no_code.as_object_mut().unwrap().remove("REGION_CODE");
    let input = [
        line(
            0,
            kst(10, 5),
            "A",
            &lot(hongdae, "POI007", "A", "22", "2", "Y", (10, 5)),
        ), // 20, before the row
        hotspot(kst(10, 6), "POI007", "마포구", "관광특구"),
        line(
            0,
            kst(10, 10),
            "B",
            &lot(hongdae, "POI007", "B", "10", "0", "Y", (10, 10)),
        ), // 10
        line(
            0,
            kst(10, 20),
            "A",
            &lot(hongdae, "POI007", "A", "22", "12", "Y", (10, 20)),
        ), // 10
        line(
            0,
            kst(10, 30),
            "F",
            &lot("미등록", "POI999", "F", "8", "0", "Y", (10, 30)),
        ), // 8, no row
        line(0, kst(10, 40), "G", &no_code),
    ]
    .join("\n");
    let out = weir_test(std::path::Path::new(PARKING), &input, false);

    let lot_records = on(&out, "parking_lot_status");
    let lots: Vec<(&str, &Value, &Value)> = lot_records
        .iter()
        .map(|r| {
            let v = &r["value"];
            (r["key"].as_str().unwrap(), &v["DISTRICT"], &v["HOTSPOT_CATEGORY"])
        })
        .collect();
    let null = Value::Null;
    let (mapo, zone) = (json!("마포구"), json!("관광특구"));
    assert_eq!(
        lots,
        [
            ("A", &null, &null),
            ("B", &mapo, &zone),
            ("A", &mapo, &zone),
            ("F", &null, &null),
            ("G", &null, &null),
        ],
        "{out:#?}"
    );

    let free: Vec<(String, Value)> = on(&out, "parking_free_now")
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect();
    let row = |code: &str, region: &str, district: Value, spots: i64, n: i64| {
        (
            code.to_string(),
            json!({"region_code": code, "region": region, "district": district,
                   "available_spots": spots, "realtime_lots": n}),
        )
    };
    assert_eq!(
        free,
        [
            row("POI007", hongdae, Value::Null, 20, 1),
            row("POI007", hongdae, mapo.clone(), 10, 1),
            // A moves to 마포구: its old group empties first.
            ("POI007".to_string(), Value::Null),
            row("POI007", hongdae, mapo.clone(), 20, 2),
            row("POI999", "미등록", Value::Null, 8, 1),
        ],
        "{out:#?}"
    );
    // Without REGION_CODE: the join looked up "" (no dead letter of its
    // own); the steps grouping by the code dead-letter it, as before.
    let dlq = on(&out, "parking_status_dlq");
    assert!(
        dlq.iter()
            .all(|d| d["key"] == "G" && d["headers"]["weir.processor"] != "with-hotspot"),
        "{dlq:#?}"
    );
}

/// The parking feed joined with a table of lot details from another topic,
/// by the lot code (the records' key) and, re-keyed, by region: `weir
/// test` on two partitions, `weir describe` and `weir validate` of a join
/// naming a step that is not a table.
#[test]
fn parking_records_join_a_lot_table_co_partitioned_and_by_region() {
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("join.yaml");
    std::fs::write(
        &topo,
        "application_id: lot-join
sources:
  parking: { topic: parking_status }
  details: { topic: lot_details }
steps:
  - name: lot-details
    from: details
    table: { key: key }
  - name: with-details
    from: parking
    join: { table: lot-details, key: key, how: left, fields: { OPERATOR: operator } }
    to: { topic: with_details, fields: [PARKING_CODE, OPERATOR] }
  - name: with-region
    from: parking
    join: { table: lot-details, key: value.REGION_CODE, how: inner, fields: { REGION_OPERATOR: operator } }
    to: { topic: with_region, fields: [PARKING_CODE, REGION_OPERATOR] }
",
    )
    .unwrap();
    let detail = |partition: i32, ts: i64, key: &str, operator: &str| {
        json!({"topic": "lot_details", "partition": partition, "timestamp": ts, "key": key,
               "value": json!({"operator": operator}).to_string()})
        .to_string()
    };
    let hongdae = "홍대 관광특구";
    let p = |key: &str| weir::partition_for(Some(key.as_bytes()), 2, 0);
    let input = [
        detail(p("A"), kst(10, 0), "A", "Mapo-gu"),
        detail(p("POI007"), kst(10, 0), "POI007", "Seoul Tourism"),
        line(
            p("A"),
            kst(10, 5),
            "A",
            &lot(hongdae, "POI007", "A", "22", "2", "Y", (10, 5)),
        ),
        // No row for B (left: OPERATOR null).
        line(
            p("B"),
            kst(10, 6),
            "B",
            &lot(hongdae, "POI007", "B", "10", "2", "Y", (10, 6)),
        ),
        detail(p("A"), kst(10, 7), "A", "Mapo-gu 2"),
        line(
            p("A"),
            kst(10, 8),
            "A",
            &lot(hongdae, "POI007", "A", "22", "3", "Y", (10, 8)),
        ),
        // Neither C nor its region has a row: null on the left, dropped
        // by the inner join.
        line(
            p("C"),
            kst(10, 9),
            "C",
            &lot("x", "POI999", "C", "5", "1", "Y", (10, 9)),
        ),
    ]
    .join("\n");
    let out = weir_test(&topo, &input, false);
    let fields = |topic: &str, field: &str| -> Vec<(String, Value, i64)> {
        on(&out, topic)
            .iter()
            .map(|r| {
                let v: &Value = &r["value"];
                (
                    r["key"].as_str().unwrap().to_string(),
                    v[field].clone(),
                    r["timestamp"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        fields("with_details", "OPERATOR"),
        [
            ("A".to_string(), json!("Mapo-gu"), kst(10, 5)),
            ("B".to_string(), Value::Null, kst(10, 6)),
            ("A".to_string(), json!("Mapo-gu 2"), kst(10, 8)),
            ("C".to_string(), Value::Null, kst(10, 9)),
        ]
    );
    // Re-keyed by region: the output's key is the region code.
    assert_eq!(
        fields("with_region", "REGION_OPERATOR"),
        [
            ("POI007".to_string(), json!("Seoul Tourism"), kst(10, 5)),
            ("POI007".to_string(), json!("Seoul Tourism"), kst(10, 6)),
            ("POI007".to_string(), json!("Seoul Tourism"), kst(10, 8)),
        ]
    );

    let describe = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("describe")
        .arg(&topo)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&describe.stdout);
    assert!(
        text.contains("Processor: with-details (stores: [lot-details])"),
        "{text}"
    );
    assert!(
        text.contains("Processor: with-region (stores: [lot-details])"),
        "{text}"
    );
    assert!(
        text.contains("Sink: with-region-repartition-sink (topic: with-region-repartition)"),
        "{text}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&topo)
            .unwrap()
            .replace("table: lot-details, key: key", "table: details, key: key"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:11:") && err.contains("join `with-details`: `details` is a source, not a `table` step"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}
