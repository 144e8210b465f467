//! Shared by the engine integration tests: the parking topology renamed per
//! test with its hotspot table loaded, simulator input, the expected
//! results (hourly averages, lots, free spots now) computed independently
//! of the engine, and the sentinels that close every window.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

pub const H: i64 = 3_600_000;

#[derive(Clone)]
pub struct Input {
    pub partition: i32,
    pub timestamp: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

pub fn b64(s: &str) -> Vec<u8> {
    weir::base64::decode(s).unwrap()
}

/// The hour 36 h ago. Not older: the broker deletes a segment once its
/// newest record is older than the topic's retention (7 days for inputs, 2 d
/// 1 h for the window changelog here), which would lose state between the
/// runs of a test. Not newer: brokers reject timestamps over an hour ahead
/// (message.timestamp.after.max.ms) and the sentinels come 26 h after the data.
pub fn data_start() -> String {
    let now = chrono::Utc::now().timestamp_millis();
    chrono::DateTime::from_timestamp_millis((now - 36 * H).div_euclid(H) * H)
        .unwrap()
        .to_rfc3339()
}

pub fn simulate(count: usize, seed: u64, dir: &std::path::Path) -> Vec<Input> {
    let path = dir.join("sim.jsonl");
    run_weir(&[
        "simulate",
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--start",
        &data_start(),
        "--partitions",
        "3",
        "--bad-ratio",
        "0.02",
        "--output",
        path.to_str().unwrap(),
    ]);
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let payload = match (&v["value"], &v["value_base64"]) {
                (Value::String(s), _) => s.clone().into_bytes(),
                (_, Value::String(b)) => b64(b),
                _ => panic!("no payload in {l}"),
            };
            Input {
                partition: v["partition"].as_i64().unwrap() as i32,
                timestamp: v["timestamp"].as_i64().unwrap(),
                key: v["key"].as_str().map(str::to_string),
                payload,
            }
        })
        .collect()
}

/// The parking job's filter and map steps, written out independently of
/// the engine: the record's fields and its available spots, or `None` if the
/// record is dropped (not real-time) or dead-lettered (not a JSON object,
/// counts that are not numbers).
pub fn filtered_and_mapped(payload: &[u8]) -> Option<(serde_json::Map<String, Value>, f64)> {
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    if v.get("IS_REALTIME_STATUS_PROVIDED").and_then(Value::as_str) != Some("Y") {
        return None;
    }
    let num = |f: &str| -> Option<f64> {
        match v.get(f).and_then(Value::as_str).map(str::trim) {
            None | Some("") => Some(0.0),
            Some(s) => s.parse().ok(),
        }
    };
    let available = (num("CAPACITY")? - num("OCCUPIED_SPOTS")?).max(0.0).trunc();
    Some((v, available))
}

/// The parking rules, written out independently of the engine: returns
/// (region_code, hour start) → (region, sum of available, samples).
pub fn expected(inputs: &[Input]) -> BTreeMap<(String, i64), (String, f64, u64)> {
    let mut out: BTreeMap<(String, i64), (String, f64, u64)> = BTreeMap::new();
    for i in inputs {
        let Some((v, available)) = filtered_and_mapped(&i.payload) else {
            continue;
        };
        let (Some(code), Some(region)) = (
            v.get("REGION_CODE").and_then(Value::as_str),
            v.get("REGION").and_then(Value::as_str),
        ) else {
            continue;
        };
        let e = out
            .entry((code.to_string(), i.timestamp.div_euclid(H) * H))
            .or_insert((region.to_string(), 0.0, 0));
        e.1 += available;
        e.2 += 1;
    }
    out
}

/// The hotspot the per-test hotspot table leaves out (see
/// `load_hotspots`): its lots are joined with no row, so every engine test
/// also covers the left join's miss (district null) end to end.
pub const UNLISTED_HOTSPOT: &str = "POI091";

/// The hotspot table the engine tests load, read from
/// data/seoul_hotspots.json on its own (not through weir): code →
/// (district, category), without `UNLISTED_HOTSPOT`.
pub fn hotspot_table() -> BTreeMap<String, (String, String)> {
    let list: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(checkout().join("data/seoul_hotspots.json")).unwrap()).unwrap();
    let table: BTreeMap<String, (String, String)> = list
        .iter()
        .filter(|h| h["code"] != UNLISTED_HOTSPOT)
        .map(|h| {
            let text = |f: &str| {
                h[f].as_str()
                    .unwrap_or_else(|| panic!("hotspot {h}: no {f}"))
                    .to_string()
            };
            (text("code"), (text("district"), text("category")))
        })
        .collect();
    assert_eq!(table.len(), list.len() - 1, "{UNLISTED_HOTSPOT} in the list once");
    table
}

/// The hotspot join's rules, written out independently of the engine: the
/// lot's `DISTRICT` and `HOTSPOT_CATEGORY` from its `REGION_CODE`'s row,
/// both null when the table has no row for it (or it has no code).
pub fn add_hotspot(v: &mut serde_json::Map<String, Value>, table: &BTreeMap<String, (String, String)>) {
    let row = v.get("REGION_CODE").and_then(Value::as_str).and_then(|c| table.get(c));
    let (district, category) = match row {
        Some((d, c)) => (Value::from(d.as_str()), Value::from(c.as_str())),
        None => (Value::Null, Value::Null),
    };
    v.insert("DISTRICT".into(), district);
    v.insert("HOTSPOT_CATEGORY".into(), category);
}

/// The lot table's rules, written out independently of the engine: per lot
/// (input key), the newest status by `LAST_UPDATE` (ties: the later record)
/// among the records that pass the filter and the map, with the map's
/// `AVAILABLE_SPOTS` and the hotspot join's fields (`add_hotspot`) added.
pub fn expected_lots(inputs: &[Input]) -> BTreeMap<String, Value> {
    let hotspots = hotspot_table();
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for i in inputs {
        let (Some(key), Some((mut v, available))) = (&i.key, filtered_and_mapped(&i.payload)) else {
            continue;
        };
        let Some(updated) = v.get("LAST_UPDATE").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        v.insert("AVAILABLE_SPOTS".into(), Value::from(available as i64));
        add_hotspot(&mut v, &hotspots);
        let newer = match out.get(key) {
            Some(old) => updated.as_str() >= old["LAST_UPDATE"].as_str().unwrap(),
            None => true,
        };
        if newer {
            out.insert(key.clone(), Value::Object(v));
        }
    }
    out
}

/// The lots after the sentinels too (see `sentinels`): each is a lot of its
/// region, real-time, with 1 spot available.
pub fn expected_lots_with_sentinels(inputs: &[Input]) -> BTreeMap<String, Value> {
    let at = sentinel_time(inputs);
    let mut all = inputs.to_vec();
    all.extend(sentinels(inputs).into_iter().map(|(k, v)| Input {
        partition: 0,
        timestamp: at,
        key: Some(k),
        payload: v,
    }));
    expected_lots(&all)
}

/// Free spots per region now: region code → (region, district (`None`:
/// the hotspot table has no row for the region), available spots, lots).
pub type FreeNow = BTreeMap<String, (String, Option<String>, i64, i64)>;

/// `free-now-by-region`'s rules, written out independently of the engine:
/// over each lot's latest status (`lots`, from `expected_lots`), per region
/// code: (region, its district, sum of available spots, number of lots).
pub fn expected_free_now(lots: &BTreeMap<String, Value>) -> FreeNow {
    let mut out = FreeNow::new();
    for v in lots.values() {
        let (Some(code), Some(region)) = (v["REGION_CODE"].as_str(), v["REGION"].as_str()) else {
            continue;
        };
        let district = v["DISTRICT"].as_str().map(str::to_string);
        let e = out
            .entry(code.to_string())
            .or_insert((region.to_string(), district, 0, 0));
        e.2 += v["AVAILABLE_SPOTS"].as_i64().unwrap();
        e.3 += 1;
    }
    out
}

/// What the free-now topic says last per region (a tombstone removes it).
pub fn free_now_of(records: &[Rec]) -> FreeNow {
    let mut last = BTreeMap::new();
    for r in records {
        let key = String::from_utf8(r.key.clone().expect("free-now without key")).unwrap();
        match r.value.as_deref() {
            None => {
                last.remove(&key);
            }
            Some(bytes) => {
                let v: Value = serde_json::from_slice(bytes).unwrap();
                let region = v["region"].as_str().unwrap().to_string();
                assert!(v.get("district").is_some(), "free-now without district: {v}");
                last.insert(
                    key,
                    (
                        region,
                        v["district"].as_str().map(str::to_string),
                        v["available_spots"].as_i64().unwrap(),
                        v["realtime_lots"].as_i64().unwrap(),
                    ),
                );
            }
        }
    }
    last
}

/// Read the free-now topic until its last record per region says `want`
/// (or 120 s), and return what it says.
pub fn read_free_now(topic: &str, want: &FreeNow) -> FreeNow {
    free_now_of(&consume_until(
        topic,
        Duration::from_secs(120),
        Duration::from_secs(2),
        |r| free_now_of(r) == *want,
    ))
}

/// The lot-status topic's last record per lot (sentinel lots `S-…` left
/// out) equals `want`.
pub fn check_lots(records: &[Rec], want: &BTreeMap<String, Value>) {
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    for r in records {
        let key = String::from_utf8(r.key.clone().expect("lot status without key")).unwrap();
        if key.starts_with("S-") {
            continue;
        }
        last.insert(key, serde_json::from_slice(r.value.as_deref().unwrap()).unwrap());
    }
    assert_eq!(
        last.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "lots in the lot-status topic"
    );
    for (k, v) in want {
        assert_eq!(&last[k], v, "latest status of lot {k}");
    }
}

/// Read the lot-status topic until it holds every lot of `want`.
pub fn read_lots(lots: &str, want: &BTreeMap<String, Value>) -> Vec<Rec> {
    consume_until(lots, Duration::from_secs(60), Duration::from_secs(2), |r| {
        let keys: BTreeSet<&[u8]> = r.iter().filter_map(|r| r.key.as_deref()).collect();
        want.keys().all(|k| keys.contains(k.as_bytes()))
    })
}

/// The renamed topology's hotspot table topic (its global table).
pub fn hotspots_topic(id: &str) -> String {
    format!("{id}-hotspots")
}

/// `weir ingest hotspots` into `hotspots_topic(id)`, from a copy of
/// data/seoul_hotspots.json without `UNLISTED_HOTSPOT`.
pub fn load_hotspots(dir: &std::path::Path, id: &str) {
    let mut list: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(checkout().join("data/seoul_hotspots.json")).unwrap()).unwrap();
    list.retain(|h| h["code"] != UNLISTED_HOTSPOT);
    let path = dir.join("hotspots.json");
    std::fs::write(&path, serde_json::to_string(&list).unwrap()).unwrap();
    run_weir(&[
        "ingest",
        "hotspots",
        "--hotspots",
        path.to_str().unwrap(),
        "--topic",
        &hotspots_topic(id),
    ]);
}

/// The shipped parking topology (exactly_once) with this test's names and
/// 200 ms commits; `long_grace` replaces the 1 m grace and 2 m idle close
/// with a day. Its hotspot table (`hotspots_topic`) is loaded here, before
/// any instance starts (as `./dev demo` does).
fn renamed_topology(dir: &std::path::Path, id: &str, long_grace: bool) -> (std::path::PathBuf, [String; 4]) {
    let names = [
        format!("{id}-status"),
        format!("{id}-dlq"),
        format!("{id}-hourly"),
        format!("{id}-lots"),
    ];
    let mut text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml"))
        .unwrap()
        .replace("application_id: parking-hourly", &format!("application_id: {id}"))
        .replace("parking_status_dlq", &names[1])
        .replace("parking_status", &names[0])
        .replace("parking_hourly_avg", &names[2])
        .replace("parking_lot_status", &names[3])
        .replace("parking_free_now", &free_now_topic(id))
        .replace("topic: parking_hotspots", &format!("topic: {}", hotspots_topic(id)))
        .replace("commit_interval: 1s", "commit_interval: 200ms")
        // The sentinels come 26 h after the data (see `sentinel_time`):
        // with the shipped 1-day ttl they would make the lot table forget
        // every lot, and these tests check the lots' latest statuses. What
        // the ttl forgets is tested in tests/table_ttl.rs and by the unit
        // tests.
        .replace("ttl: 1d", "ttl: 7d");
    assert!(
        text.contains("grace: 1m")
            && text.contains("close_idle_after: 2m")
            && text.contains("ttl: 7d")
            && text.contains(&hotspots_topic(id)),
        "{text}"
    );
    if long_grace {
        text = text
            .replace("grace: 1m", "grace: 1d")
            .replace("close_idle_after: 2m", "close_idle_after: 1d");
    }
    let path = dir.join("parking.yaml");
    std::fs::write(&path, text).unwrap();
    load_hotspots(dir, id);
    (path, names)
}

/// The renamed topology's `free-now-by-region` output topic.
pub fn free_now_topic(id: &str) -> String {
    format!("{id}-free-now")
}

/// The parking topology with a 1-day grace: while instances own different
/// input partitions (several instances, restarts of one among others) one
/// may run more than a minute of event time ahead of another; a long grace
/// keeps every record in its window so the expectation does not depend on
/// that. (Within one instance records are taken in event-time order: see
/// `topology_real_grace` and tests/engine_catchup.rs.)
pub fn topology(dir: &std::path::Path, id: &str) -> (std::path::PathBuf, [String; 4]) {
    renamed_topology(dir, id, true)
}

/// When the sentinels are dated: a grace (1 d) plus a window (1 h) and an
/// hour after the data.
pub fn sentinel_time(inputs: &[Input]) -> i64 {
    inputs.iter().map(|i| i.timestamp).max().unwrap() + 26 * H
}

/// `YYYY-MM-DD HH:MM:SS` in KST, as `LAST_UPDATE` is written.
pub fn kst_text(ms: i64) -> String {
    use chrono::TimeZone;
    chrono_tz::Asia::Seoul
        .timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One record per region at `sentinel_time` (also its `LAST_UPDATE`, for
/// topologies reading the event time from it): every repartition task's
/// stream time passes every earlier window's end + grace.
pub fn sentinels(inputs: &[Input]) -> Vec<(String, Vec<u8>)> {
    let last_update = kst_text(sentinel_time(inputs));
    let mut regions = BTreeSet::new();
    for i in inputs {
        if let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(&i.payload) {
            if let (Some(c), Some(r)) = (
                v.get("REGION_CODE").and_then(Value::as_str),
                v.get("REGION").and_then(Value::as_str),
            ) {
                regions.insert((c.to_string(), r.to_string()));
            }
        }
    }
    regions
        .into_iter()
        .map(|(code, region)| {
            let v = serde_json::json!({"REGION": region, "REGION_CODE": code, "PARKING_CODE": format!("S-{code}"),
                "CAPACITY": "1", "OCCUPIED_SPOTS": "0", "IS_REALTIME_STATUS_PROVIDED": "Y", "LAST_UPDATE": last_update.as_str()});
            (format!("S-{code}"), v.to_string().into_bytes())
        })
        .collect()
}

/// Produce the sentinels (see `sentinels`) to their lots' partitions.
pub fn send_sentinels(topic: &str, inputs: &[Input]) {
    let p = producer();
    let future = sentinel_time(inputs);
    for (k, v) in sentinels(inputs) {
        produce(
            &p,
            topic,
            weir::partition_for(Some(k.as_bytes()), 3, 0),
            future,
            Some(k.as_bytes()),
            Some(&v),
        );
    }
    flush(&p);
}

/// Once the group `id` has committed everything on the input and the
/// repartition topic, send the sentinels and read the hourly results.
/// Only then: sent earlier, a sentinel could overtake data of its region
/// still queued in another input partition.
pub fn close_windows_and_collect(id: &str, status: &str, hourly: &str, inputs: &[Input], want: usize) -> Vec<Rec> {
    wait_committed(id, status, 3, Duration::from_secs(90));
    wait_committed(
        id,
        &format!("{id}-hourly-by-region-repartition"),
        3,
        Duration::from_secs(90),
    );
    send_sentinels(status, inputs);
    consume_until(hourly, Duration::from_secs(120), Duration::from_secs(3), |r| {
        r.len() >= want
    })
}

pub fn produce_inputs(topic: &str, inputs: &[Input]) {
    let p = producer();
    for i in inputs {
        produce(
            &p,
            topic,
            i.partition,
            i.timestamp,
            i.key.as_deref().map(str::as_bytes),
            Some(&i.payload),
        );
    }
    flush(&p);
}

pub fn check_results(records: &[Rec], want: &BTreeMap<(String, i64), (String, f64, u64)>) {
    let mut seen: BTreeMap<(String, i64), Value> = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339(v["window_start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let code = v["region_code"].as_str().unwrap().to_string();
        assert!(
            seen.insert((code.clone(), start), v.clone()).is_none(),
            "two results for {code} {start}"
        );
        assert_eq!(
            r.key.as_deref(),
            Some(format!("{code}@{}", v["window_start"].as_str().unwrap()).as_bytes())
        );
    }
    let got: BTreeSet<_> = seen.keys().cloned().collect();
    let exp: BTreeSet<_> = want.keys().cloned().collect();
    assert_eq!(got, exp, "result windows differ");
    for (k, (region, sum, n)) in want {
        let v = &seen[k];
        assert_eq!(v["samples"].as_u64(), Some(*n), "{k:?}");
        assert_eq!(v["region"].as_str(), Some(region.as_str()));
        let avg = v["avg_available_spots"].as_f64().unwrap();
        assert!(
            (avg - sum / *n as f64).abs() < 1e-6,
            "{k:?}: got {avg}, want {}",
            sum / *n as f64
        );
    }
}

/// `topology()` (renamed, 200 ms commits, 1-day grace), checked to run
/// `processing_guarantee: exactly_once` (the shipped setting).
pub fn topology_eos(dir: &std::path::Path, id: &str) -> (std::path::PathBuf, [String; 4]) {
    let (path, names) = topology(dir, id);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nprocessing_guarantee: exactly_once\n"), "{text}");
    (path, names)
}

/// The parking topology renamed like `topology()`, exactly_once, 200 ms
/// commits, but with the real window grace (1 m) and idle close (2 m).
pub fn topology_real_grace(dir: &std::path::Path, id: &str) -> (std::path::PathBuf, [String; 4]) {
    let (path, names) = renamed_topology(dir, id, false);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nprocessing_guarantee: exactly_once\n"), "{text}");
    (path, names)
}

/// Read `topic` back (read_committed) until at least `at_least` records
/// came, as inputs: expectations are computed from what the broker holds.
pub fn read_inputs(topic: &str, at_least: usize) -> Vec<Input> {
    let recs = consume_until(topic, Duration::from_secs(90), Duration::from_secs(1), |r| {
        r.len() >= at_least
    });
    assert!(
        recs.len() >= at_least,
        "read {} records back from {topic}, want {at_least}",
        recs.len()
    );
    recs.into_iter()
        .map(|r| Input {
            partition: r.partition,
            timestamp: r.timestamp,
            key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            payload: r.value.unwrap_or_default(),
        })
        .collect()
}

/// Members of the consumer group `group` once it is Stable (else 0).
pub fn stable_members(group: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    c.fetch_group_list(Some(group), Duration::from_secs(5))
        .ok()
        .and_then(|l| {
            l.groups()
                .iter()
                .find(|g| g.name() == group)
                .map(|g| if g.state() == "Stable" { g.members().len() } else { 0 })
        })
        .unwrap_or(0)
}
