//! Unit tests of the processors on in-memory stores.

use super::aggregate::{Acc, Scalar};
use super::window::window_starts;
use super::*;
use crate::topology::{AggKind, Topology};

const H: i64 = 3_600_000;
/// 2025-03-31 14:00:00 KST = 05:00:00 UTC.
const T14: i64 = 1_743_397_200_000;

fn topo(window: &str) -> Topology {
    let yaml = format!(
        r#"
application_id: t
dead_letter: dlq
time_zone: Asia/Seoul
sources:
  s: {{ topic: in }}
steps:
  - name: w
    window:
      group_by: {{ g: key }}
{window}
    to: {{ topic: out }}
"#
    );
    Topology::parse(&yaml).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
}

fn window_yaml(extra: &str) -> String {
    format!("      tumbling: 1h\n      grace: 1m\n{extra}      aggregate:\n        n: count()\n        avg: avg(v)\n")
}

/// Feed one record with key `k` and value `value` at `ts`; returns the
/// outputs.
fn input(task: &mut Task, topo: &Topology, k: &str, ts: i64, value: &str) -> Vec<Output> {
    let origin = Origin {
        topic: "in",
        partition: 0,
        offset: 0,
        timestamp: ts,
        key: Some(k.as_bytes()),
        value: Some(value.as_bytes()),
    };
    let mut out = Vec::new();
    task.process(topo, &origin, origin.timestamp, &mut out).unwrap();
    out
}

/// Feed one record `{"v": v}` with key `k` at `ts`; returns the outputs.
fn feed(task: &mut Task, topo: &Topology, k: &str, ts: i64, v: f64) -> Vec<Output> {
    input(task, topo, k, ts, &format!(r#"{{"v":{v}}}"#))
}

fn values(out: &[Output]) -> Vec<serde_json::Value> {
    out.iter()
        .filter(|o| o.kind == OutputKind::Result)
        .map(|o| serde_json::from_slice(o.value.as_deref().unwrap()).unwrap())
        .collect()
}

#[test]
fn event_at_the_hour_belongs_to_the_window_starting_then() {
    let t = topo(&window_yaml(""));
    let NodeKind::Window(w) = &t.nodes[1].kind else {
        panic!()
    };
    assert_eq!(window_starts(w, T14), vec![T14]);
    assert_eq!(window_starts(w, T14 - 1), vec![T14 - H]);
    assert_eq!(window_starts(w, T14 + H - 1), vec![T14]);
}

#[test]
fn hopping_event_lands_in_size_over_advance_windows() {
    let t = topo("      hopping: { size: 1h, advance: 15m }\n      aggregate: { n: count() }\n");
    let NodeKind::Window(w) = &t.nodes[1].kind else {
        panic!()
    };
    let starts = window_starts(w, T14 + 20 * 60_000);
    assert_eq!(starts.len(), 4);
    for s in &starts {
        assert!(*s <= T14 + 20 * 60_000 && T14 + 20 * 60_000 < s + H);
    }
    assert_eq!(starts[3], T14 + 15 * 60_000);
}

#[test]
fn window_closes_exactly_at_end_plus_grace() {
    let t = topo(&window_yaml(""));
    let mut task = Task::in_memory(&t, 0, 0);
    assert!(feed(&mut task, &t, "a", T14 + 10, 4.0).is_empty());
    // Stream time one ms before end + grace: still open.
    assert!(values(&feed(&mut task, &t, "b", T14 + H + 60_000 - 1, 1.0)).is_empty());
    // A record for the open window is still accepted.
    assert!(feed(&mut task, &t, "a", T14 + 20, 6.0).is_empty());
    // Stream time = end + grace: closes, one final record.
    let out = values(&feed(&mut task, &t, "b", T14 + H + 60_000, 1.0));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["g"], "a");
    assert_eq!(out[0]["n"], 2);
    assert_eq!(out[0]["avg"], 5.0);
    assert_eq!(out[0]["window_start"], "2025-03-31T14:00:00+09:00");
    assert_eq!(out[0]["window_end"], "2025-03-31T15:00:00+09:00");
}

#[test]
fn late_records_are_dropped_counted_and_dead_lettered_on_request() {
    let t = topo(&window_yaml("      late: dead_letter\n"));
    let mut task = Task::in_memory(&t, 0, 0);
    feed(&mut task, &t, "a", T14, 1.0);
    feed(&mut task, &t, "a", T14 + H + 60_000, 1.0); // closes [14,15)
    let out = feed(&mut task, &t, "a", T14 + 5, 100.0);
    assert_eq!(task.stats.dropped_late, 1);
    assert_eq!(task.stats.dead_letter, 0, "a late record is counted as dropped only");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, OutputKind::DeadLetter);
    assert!(out[0]
        .headers
        .iter()
        .any(|(k, v)| k == "weir.error" && v.starts_with("late")));
    // The closed window was not reopened.
    let flushed = {
        let mut o = Vec::new();
        task.advance_stream_time(&t, i64::MAX, &mut o).unwrap();
        values(&o)
    };
    assert_eq!(flushed.len(), 1, "only the [15,16) window remains");
    assert_eq!(flushed[0]["window_start"], "2025-03-31T15:00:00+09:00");
}

#[test]
fn stream_time_never_goes_back() {
    let t = topo(&window_yaml(""));
    let mut task = Task::in_memory(&t, 0, 0);
    feed(&mut task, &t, "a", T14 + 1000, 1.0);
    feed(&mut task, &t, "a", T14, 1.0);
    assert_eq!(task.stream_time, T14 + 1000);
    let mut o = Vec::new();
    task.advance_stream_time(&t, T14, &mut o).unwrap();
    assert_eq!(task.stream_time, T14 + 1000);
}

#[test]
fn on_update_emits_every_change_and_on_close_once() {
    let t = topo(&window_yaml("      emit: on_update\n"));
    let mut task = Task::in_memory(&t, 0, 0);
    let a = values(&feed(&mut task, &t, "a", T14, 2.0));
    let b = values(&feed(&mut task, &t, "a", T14 + 1, 4.0));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!((a[0]["n"].as_i64(), b[0]["n"].as_i64()), (Some(1), Some(2)));
    assert_eq!(b[0]["avg"], 3.0);
    // Closing emits nothing more for on_update.
    assert!(values(&feed(&mut task, &t, "z", T14 + 2 * H, 0.0)).len() == 1); // z's own update only

    let t = topo(&window_yaml(""));
    let mut task = Task::in_memory(&t, 0, 0);
    for i in 0..5 {
        assert!(values(&feed(&mut task, &t, "a", T14 + i, 1.0)).is_empty());
    }
    let mut all = values(&feed(&mut task, &t, "z", T14 + 2 * H, 0.0));
    let mut o = Vec::new();
    task.advance_stream_time(&t, T14 + 10 * H, &mut o).unwrap();
    all.extend(values(&o));
    let a_windows: Vec<_> = all.iter().filter(|v| v["g"] == "a").collect();
    assert_eq!(a_windows.len(), 1);
    assert_eq!(a_windows[0]["n"], 5);
}

#[test]
fn aggregates_compute_what_they_say() {
    let inputs = [Scalar::Int(3), Scalar::Float(1.5), Scalar::Null, Scalar::Int(7)];
    let run = |kind| {
        let mut acc = Acc::new(kind);
        for v in &inputs {
            acc.add(Some(v)).unwrap();
        }
        acc.result()
    };
    use cel::Value;
    assert_eq!(run(AggKind::Sum), Value::Float(11.5));
    assert_eq!(run(AggKind::Avg), Value::Float(11.5 / 3.0));
    assert_eq!(run(AggKind::Min), Value::Float(1.5));
    assert_eq!(run(AggKind::Max), Value::Int(7));
    assert_eq!(run(AggKind::First), Value::Int(3));
    assert_eq!(run(AggKind::Last), Value::Int(7));
    assert_eq!(run(AggKind::Count), Value::Int(3), "count(x) skips nulls");
    let mut c = Acc::new(AggKind::Count);
    c.add(None).unwrap();
    c.add(None).unwrap();
    assert_eq!(c.result(), Value::Int(2));
    let mut s = Acc::new(AggKind::Sum);
    s.add(Some(&Scalar::Int(2))).unwrap();
    s.add(Some(&Scalar::Int(3))).unwrap();
    assert_eq!(s.result(), Value::Int(5), "integer sums stay integers");
    assert!(Acc::new(AggKind::Avg).add(Some(&Scalar::Str("x".into()))).is_err());
    assert_eq!(Acc::new(AggKind::Avg).result(), Value::Null);
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_with_origin_headers() {
    let t = topo(&window_yaml(""));
    let mut task = Task::in_memory(&t, 0, 0);
    let cases: [(Option<&[u8]>, &str); 4] = [
        (Some(b"not json"), "invalid JSON"),
        (Some(&[0xff, 0xfe]), "invalid UTF-8"),
        (None, "tombstone"),
        (Some(br#"{"v":"abc"}"#), "expected a number"),
    ];
    for (i, (payload, reason)) in cases.iter().enumerate() {
        let origin = Origin {
            topic: "in",
            partition: 0,
            offset: i as i64 + 10,
            timestamp: T14,
            key: Some(b"k"),
            value: *payload,
        };
        let mut out = Vec::new();
        task.process(&t, &origin, origin.timestamp, &mut out).unwrap();
        assert_eq!(out.len(), 1, "{reason}");
        let o = &out[0];
        assert_eq!((o.kind, o.topic.as_str()), (OutputKind::DeadLetter, "dlq"));
        assert_eq!(o.value.as_deref(), *payload, "the original bytes are kept");
        let h: std::collections::HashMap<_, _> = o.headers.iter().cloned().collect();
        assert!(h["weir.error"].contains(reason), "{reason}: {}", h["weir.error"]);
        assert_eq!(h["weir.offset"], (i as i64 + 10).to_string());
        assert_eq!(h["weir.topic"], "in");
        assert_eq!(h["weir.timestamp"], T14.to_string());
    }
    assert_eq!(task.stats.dead_letter, 4);
    let big = vec![b' '; crate::topology::MAX_RECORD_BYTES + 1];
    let origin = Origin {
        topic: "in",
        partition: 0,
        offset: 0,
        timestamp: T14,
        key: None,
        value: Some(&big),
    };
    let mut out = Vec::new();
    task.process(&t, &origin, origin.timestamp, &mut out).unwrap();
    assert!(out[0].headers.iter().any(|(_, v)| v.contains("too large")));
}

/// Feed one record with key `k` and JSON value `v` at timestamp 1 (the
/// table tests); returns the outputs.
fn table_input(task: &mut Task, topo: &Topology, k: &str, v: &str) -> Vec<Output> {
    input(task, topo, k, 1, v)
}

#[test]
fn table_keeps_the_newest_by_field() {
    let t = Topology::parse(
        r#"
application_id: t
sources: { s: { topic: in } }
steps:
  - name: latest
    table: { key: key, newest_by: value.T }
    to: { topic: out }
"#,
    )
    .unwrap();
    let mut task = Task::in_memory(&t, 0, 0);
    let mut send = |v: &str| values(&table_input(&mut task, &t, "lot", v));
    assert_eq!(send(r#"{"T":"2025-03-31 10:00:00","x":1}"#).len(), 1);
    assert_eq!(
        send(r#"{"T":"2025-03-31 09:00:00","x":2}"#).len(),
        0,
        "older snapshot ignored"
    );
    let out = send(r#"{"T":"2025-03-31 11:00:00","x":3}"#);
    assert_eq!(out[0]["x"], 3);
    assert_eq!(task.stats.dropped_stale, 1);
}

#[test]
fn a_table_emitting_on_commit_sends_the_newest_per_key_once_per_commit() {
    let t = Topology::parse(
        r#"
application_id: t
sources: { s: { topic: in } }
steps:
  - name: latest
    table: { key: key, newest_by: value.T, emit: on_commit }
    to: { topic: out }
"#,
    )
    .unwrap();
    let mut task = Task::in_memory(&t, 0, 0);
    let send = |task: &mut Task, k: &str, v: &str| {
        let out = table_input(task, &t, k, v);
        assert!(out.is_empty(), "nothing goes out before the commit");
    };
    send(&mut task, "a", r#"{"T":2,"x":"a2"}"#);
    send(&mut task, "b", r#"{"T":1,"x":"b1"}"#);
    send(&mut task, "a", r#"{"T":3,"x":"a3"}"#);
    send(&mut task, "a", r#"{"T":1,"x":"a1 (stale)"}"#);
    send(&mut task, "b", r#"{"T":2,"x":"b2"}"#);
    assert_eq!(task.cached_records(), 2);
    let mut out = Vec::new();
    task.emit_cached(&t, &mut out).unwrap();
    let got: Vec<(String, serde_json::Value)> = out
        .iter()
        .map(|o| {
            let v: serde_json::Value = serde_json::from_slice(o.value.as_deref().unwrap()).unwrap();
            (String::from_utf8(o.key.clone().unwrap()).unwrap(), v["x"].clone())
        })
        .collect();
    assert_eq!(got, [("a".to_string(), "a3".into()), ("b".to_string(), "b2".into())]);
    assert_eq!(task.stats.dropped_stale, 1);
    assert_eq!(task.cached_records(), 0);
    out.clear();
    task.emit_cached(&t, &mut out).unwrap();
    assert!(out.is_empty(), "emitted once");
    // The store decides staleness across commits too.
    send(&mut task, "a", r#"{"T":2,"x":"a2 again"}"#);
    assert_eq!(task.cached_records(), 0);
    assert_eq!(task.stats.dropped_stale, 2);
}

/// Feed one record with key `k` and JSON value `v` at timestamp `ts`;
/// returns (key, value or None for a tombstone, timestamp) of the outputs.
fn at(task: &mut Task, topo: &Topology, ts: i64, k: &str, v: &str) -> Vec<(String, Option<serde_json::Value>, i64)> {
    records(input(task, topo, k, ts, v))
}

fn records(out: Vec<Output>) -> Vec<(String, Option<serde_json::Value>, i64)> {
    out.into_iter()
        .map(|o| {
            let v = o.value.map(|v| serde_json::from_slice(&v).unwrap());
            (String::from_utf8(o.key.unwrap()).unwrap(), v, o.timestamp)
        })
        .collect()
}

fn ttl_table(emit: &str) -> Topology {
    Topology::parse(&format!(
        r#"
application_id: t
sources: {{ s: {{ topic: in }} }}
steps:
  - name: latest
    table: {{ key: key, ttl: 10s, emit: {emit} }}
    to: {{ topic: out }}
"#
    ))
    .unwrap()
}

#[test]
fn a_table_forgets_a_key_not_updated_for_its_ttl_at_the_exact_millisecond() {
    let t = ttl_table("on_update");
    let mut task = Task::in_memory(&t, 0, 0);
    assert_eq!(at(&mut task, &t, 0, "a", r#"{"x":1}"#).len(), 1);
    assert_eq!(at(&mut task, &t, 5_000, "b", r#"{"x":2}"#).len(), 1);
    // One millisecond short of a's ttl: nothing is forgotten.
    assert_eq!(at(&mut task, &t, 9_999, "c", r#"{"x":3}"#).len(), 1);
    // Stream time reaches a's last update + ttl: a's tombstone, stamped
    // with that moment, after the record that moved stream time.
    let out = at(&mut task, &t, 10_000, "c", r#"{"x":4}"#);
    assert_eq!(out[1], ("a".to_string(), None, 10_000), "{out:?}");
    assert_eq!(out.len(), 2, "{out:?}");
    // b updated at 12 s lives on from there; c expires at 20 s (its last
    // update was 10 s), b at 22 s.
    assert_eq!(at(&mut task, &t, 12_000, "b", r#"{"x":5}"#).len(), 1);
    let mut out = Vec::new();
    task.advance_stream_time(&t, 21_000, &mut out).unwrap();
    assert_eq!(records(out), [("c".to_string(), None, 20_000)]);
    let mut out = Vec::new();
    task.advance_stream_time(&t, 22_000, &mut out).unwrap();
    assert_eq!(records(out), [("b".to_string(), None, 22_000)]);
    // Forgotten means gone from the store: a record for a is new again.
    // One already older than the ttl goes in and out at once.
    let out = at(&mut task, &t, 1, "a", r#"{"x":6}"#);
    assert_eq!(
        out,
        [
            ("a".to_string(), Some(serde_json::json!({"x": 6})), 1),
            ("a".to_string(), None, 10_001)
        ]
    );
    assert_eq!(
        at(&mut task, &t, 22_500, "a", r#"{"x":7}"#).len(),
        1,
        "a fresh one stays"
    );
}

#[test]
fn a_ttl_table_emitting_on_commit_sends_the_tombstone_in_place_of_the_row() {
    let t = ttl_table("on_commit");
    let mut task = Task::in_memory(&t, 0, 0);
    assert!(at(&mut task, &t, 0, "a", r#"{"x":1}"#).is_empty());
    assert!(
        at(&mut task, &t, 10_000, "b", r#"{"x":2}"#).is_empty(),
        "nothing before the commit"
    );
    let mut out = Vec::new();
    task.emit_cached(&t, &mut out).unwrap();
    assert_eq!(
        records(out),
        [
            ("a".to_string(), None, 10_000),
            ("b".to_string(), Some(serde_json::json!({"x": 2})), 10_000)
        ],
        "a's row never went out: its tombstone replaces it"
    );
}

#[test]
fn a_ttl_table_restored_from_its_store_forgets_what_the_old_task_would_have() {
    let t = ttl_table("on_update");
    let mut task = Task::in_memory(&t, 0, 0);
    at(&mut task, &t, 0, "a", r#"{"x":1}"#);
    at(&mut task, &t, 4_000, "b", r#"{"x":2}"#);
    // A new task over the same store contents, as after a restore.
    let changes = task.stores[0].as_mut().unwrap().flush().unwrap();
    let mut backend = crate::state::MemBackend::default();
    crate::state::Backend::write(&mut backend, &changes).unwrap();
    let mut restored = Task::new(&t, 0, 0, move |_| Ok(Box::new(std::mem::take(&mut backend)))).unwrap();
    let mut out = Vec::new();
    restored.advance_stream_time(&t, 10_000, &mut out).unwrap();
    assert_eq!(records(out), [("a".to_string(), None, 10_000)]);
}

#[test]
fn only_the_topic_of_a_ttl_table_may_read_it_and_the_ttl_is_positive() {
    let base = "application_id: t\nsources: { s: { topic: in } }\nsteps:\n  - name: latest\n    table: { key: key, ttl: 1d }\n";
    let err = |text: &str| {
        Topology::parse(text)
            .unwrap_err()
            .into_iter()
            .map(|d| d.message)
            .collect::<Vec<_>>()
    };
    let e = err(&format!("{base}  - name: only-a\n    filter: value.x == 1\n"));
    assert!(
        e.iter()
            .any(|m| m.contains("reads from table `latest`, which has a `ttl`")),
        "{e:?}"
    );
    let e = err(&format!("{base}    to: {{ topic: out, key: value.x }}\n"));
    assert!(
        e.iter().any(|m| m.contains("writes to its topic by its own key")),
        "{e:?}"
    );
    let e = err(&base.replace("ttl: 1d", "ttl: 0s"));
    assert!(e.iter().any(|m| m.contains("ttl must be longer than 0")), "{e:?}");
    let ok = Topology::parse(&format!("{base}    to: {{ topic: out }}\n")).unwrap();
    let text = crate::topology::describe::mermaid(&ok);
    assert!(text.contains("table: latest per key, ttl 1day"), "{text}");
}

#[test]
fn a_full_table_cache_sends_its_records_without_waiting_for_the_commit() {
    let t = Topology::parse(
        "application_id: t\nsources: { s: { topic: in } }\nsteps:\n  - name: latest\n    table: { key: key, emit: on_commit }\n    to: { topic: out }\n",
    )
    .unwrap();
    let mut task = Task::in_memory(&t, 0, 0);
    let mut out = Vec::new();
    for i in 0..table::CACHE_MAX_KEYS + 5 {
        let key = format!("k{i}");
        let origin = Origin {
            topic: "in",
            partition: 0,
            offset: i as i64,
            timestamp: 1,
            key: Some(key.as_bytes()),
            value: Some(b"{}"),
        };
        task.process(&t, &origin, origin.timestamp, &mut out).unwrap();
    }
    assert_eq!(out.len(), table::CACHE_MAX_KEYS, "sent when the cache filled up");
    assert_eq!(task.cached_records(), 5);
}

#[test]
fn a_window_opened_within_grace_closes_on_time() {
    let t = topo(&window_yaml(""));
    let mut task = Task::in_memory(&t, 0, 0);
    // Only [15:00, 16:00) is open: the next close check is at 16:01.
    feed(&mut task, &t, "a", T14 + H + 10_000, 1.0);
    // Within grace, a record opens the earlier [14:00, 15:00) window...
    assert!(values(&feed(&mut task, &t, "b", T14 + H - 30_000, 2.0)).is_empty());
    // ...which must close at 15:01, not wait for 16:01.
    let out = values(&feed(&mut task, &t, "c", T14 + H + 60_000, 0.0));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["g"], "b");
    assert_eq!(out[0]["window_start"], "2025-03-31T14:00:00+09:00");
}

#[test]
fn extreme_event_times_do_not_overflow_window_arithmetic() {
    let t = topo(&window_yaml(""));
    let NodeKind::Window(w) = &t.nodes[1].kind else {
        panic!("not a window")
    };
    for ts in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
        let starts = window_starts(w, ts);
        assert!(starts.len() <= 1, "{ts}: {starts:?}");
    }
    let mut task = Task::in_memory(&t, 0, 0);
    feed(&mut task, &t, "a", i64::MIN + 1, 1.0);
    feed(&mut task, &t, "a", T14, 1.0);
    feed(&mut task, &t, "a", i64::MAX, 1.0);
    assert_eq!(task.stream_time, i64::MAX);
    let mut o = Vec::new();
    task.advance_stream_time(&t, i64::MAX, &mut o).unwrap();
}

#[test]
fn taken_changes_are_the_writes_of_the_interval() {
    let t = topo(&window_yaml(""));
    let mut task = Task::in_memory(&t, 0, 0);
    feed(&mut task, &t, "a", T14, 1.0);
    feed(&mut task, &t, "b", T14, 1.0);
    let changes = task.take_changes();
    assert_eq!(changes.len(), 1, "one store");
    assert_eq!(changes[0].1.len(), 2, "one window per key");
    assert!(task.take_changes().is_empty(), "taken once");
}

/// Near the epoch a hopping window starts no earlier than 0 (Kafka
/// Streams' `windowsFor`), but the one window of a record is kept even
/// when the time zone puts its start before the epoch (daily windows in
/// KST start at 15:00 UTC).
#[test]
fn windows_near_the_epoch_start_at_zero_unless_the_time_zone_shifts_the_only_one() {
    let t = topo("      hopping: { size: 10ms, advance: 5ms }\n      aggregate: { n: count() }\n");
    let NodeKind::Window(w) = &t.nodes[1].kind else {
        panic!()
    };
    assert_eq!(window_starts(w, 3), vec![0]);
    assert_eq!(window_starts(w, 7), vec![0, 5]);
    assert_eq!(window_starts(w, -3), vec![-10, -5], "before the epoch: every window");
    let t = topo("      tumbling: 1d\n      time_zone: Asia/Seoul\n      aggregate: { n: count() }\n");
    let NodeKind::Window(w) = &t.nodes[1].kind else {
        panic!()
    };
    assert_eq!(window_starts(w, H), vec![-9 * H]);
}

/// Event time from the field `at` (epoch ms, or RFC 3339 text), with
/// `extra` inside the `event_time` map (e.g. `, max_future: 10m`); an hourly
/// count per key and a table of the latest record per key.
fn field_time_topo(extra: &str) -> Topology {
    let yaml = format!(
        r#"
application_id: t
dead_letter: dlq
sources:
  s: {{ topic: in, event_time: {{ field: at{extra} }} }}
steps:
  - name: w
    window: {{ group_by: {{ g: key }}, tumbling: 1h, aggregate: {{ n: count() }} }}
    to: {{ topic: out }}
  - name: latest
    from: s
    table: {{ key: key }}
    to: {{ topic: lots }}
"#
    );
    Topology::parse(&yaml).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
}

/// Feed `{"at": at}` with key "a", the clock at `now`.
fn feed_at(task: &mut Task, topo: &Topology, at: serde_json::Value, now: i64) -> Vec<Output> {
    let value = serde_json::json!({ "at": at }).to_string();
    let origin = Origin {
        topic: "in",
        partition: 0,
        offset: 7,
        timestamp: now,
        key: Some(b"a"),
        value: Some(value.as_bytes()),
    };
    let mut out = Vec::new();
    task.process(topo, &origin, now, &mut out).unwrap();
    out
}

fn only_dead_letter(out: &[Output]) -> String {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].kind, out[0].topic.as_str()), (OutputKind::DeadLetter, "dlq"));
    out[0]
        .headers
        .iter()
        .find(|(k, _)| k == "weir.error")
        .map(|(_, v)| v.clone())
        .unwrap()
}

/// A device with a wrong clock: one record dated 2099 must not move stream
/// time (closing every window and making every later record late), reach a
/// window or a table, or be written with a timestamp the broker refuses.
#[test]
fn a_record_dated_further_ahead_than_max_future_is_dead_lettered_and_moves_nothing() {
    let t = field_time_topo("");
    let mut task = Task::in_memory(&t, 0, 0);
    let out = feed_at(&mut task, &t, T14.into(), T14);
    assert_eq!(out.len(), 1, "the table forwards it: {out:?}");
    let y2099 = 4_070_908_800_000i64;
    let reason = only_dead_letter(&feed_at(&mut task, &t, y2099.into(), T14 + 5));
    assert!(
        reason.contains("more than max_future (1h) ahead of the clock") && reason.contains("2099-01-01T00:00:00"),
        "{reason}"
    );
    assert_eq!(task.stream_time, T14, "stream time unchanged");
    assert_eq!(task.stats.dead_letter, 1);
    // Its window was never opened and the earlier one is still open: a
    // later record of the same hour counts with the first.
    assert_eq!(feed_at(&mut task, &t, (T14 + 10).into(), T14 + 10).len(), 1);
    let mut o = Vec::new();
    task.advance_stream_time(&t, i64::MAX, &mut o).unwrap();
    let windows = values(&o);
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["n"], 2);
    assert_eq!(windows[0]["window_start"], "2025-03-31T05:00:00+00:00");
}

#[test]
fn a_record_just_inside_max_future_is_accepted() {
    for (extra, ahead) in [("", H), (", max_future: 10m", 10 * 60_000)] {
        let t = field_time_topo(extra);
        let mut task = Task::in_memory(&t, 0, 0);
        let out = feed_at(&mut task, &t, (T14 + ahead).into(), T14);
        assert!(out.iter().all(|o| o.kind == OutputKind::Result), "{extra}: {out:?}");
        assert_eq!(task.stream_time, T14 + ahead, "{extra}");
        let reason = only_dead_letter(&feed_at(&mut task, &t, (T14 + ahead + 1).into(), T14));
        assert!(reason.contains("max_future"), "{extra}: {reason}");
        assert_eq!(task.stream_time, T14 + ahead, "{extra}");
    }
}

#[test]
fn event_times_before_1970_are_dead_lettered() {
    let t = field_time_topo("");
    let mut task = Task::in_memory(&t, 0, 0);
    for at in [serde_json::json!(-1), serde_json::json!("1969-12-31T23:00:00Z")] {
        let reason = only_dead_letter(&feed_at(&mut task, &t, at.clone(), T14));
        assert!(reason.contains("before 1970"), "{at}: {reason}");
    }
    assert_eq!(task.stream_time, i64::MIN, "nothing moved");
    // A Kafka timestamp before 1970 (only `weir test` input can have one).
    let t = topo(&window_yaml(""));
    let mut task = Task::in_memory(&t, 0, 0);
    let reason = only_dead_letter(&feed(&mut task, &t, "a", -5, 1.0));
    assert!(reason.contains("before 1970"), "{reason}");
    assert_eq!(feed(&mut task, &t, "a", 0, 1.0).len(), 0, "the epoch itself is fine");
}

fn parking() -> Topology {
    Topology::parse(include_str!("../../topology/parking.yaml")).unwrap()
}

#[test]
fn the_parking_source_decodes_only_the_fields_its_steps_read() {
    let t = parking();
    let (_, id) = t.source_for("parking_status").unwrap();
    let NodeKind::Source(s) = &t.nodes[id].kind else {
        unreachable!()
    };
    assert_eq!(
        s.project.as_deref(),
        Some(
            &[
                "AVAILABLE_SPOTS",
                "CAPACITY",
                "DISTRICT",
                "IS_REALTIME_STATUS_PROVIDED",
                "LAST_UPDATE",
                "OCCUPIED_SPOTS",
                "REGION",
                "REGION_CODE"
            ]
            .map(String::from)[..]
        )
    );
    // Reading the value as a whole, or a map that drops fields: all of it.
    for (step, what) in [
        ("filter: str(value) != \"\"", "str(value)"),
        ("filter: size(value) > 0", "outside the direct evaluator"),
        ("map: { drop: [CAPACITY] }", "drop"),
    ] {
        let text = include_str!("../../topology/parking.yaml").replace(
            "  - name: available\n",
            &format!("  - name: extra\n    {step}\n\n  - name: available\n"),
        );
        let t = Topology::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        let (_, id) = t.source_for("parking_status").unwrap();
        let NodeKind::Source(s) = &t.nodes[id].kind else {
            unreachable!()
        };
        assert_eq!(s.project, None, "{what}");
    }
}

/// Every output of the parking job, tables emptied every 7 records.
fn run_all(t: &Topology, inputs: &[(Option<Vec<u8>>, Vec<u8>)]) -> Vec<Output> {
    let mut tasks: Vec<Task> = (0..t.subtopologies.len()).map(|s| Task::in_memory(t, s, 0)).collect();
    let mut all = Vec::new();
    // Repartition records go to the task reading their topic, the rest to
    // `all`.
    let route = |tasks: &mut Vec<Task>, out: Vec<Output>, all: &mut Vec<Output>| {
        for o in out {
            if o.kind != OutputKind::Repartition {
                all.push(o);
                continue;
            }
            let (sub, _) = t.source_for(&o.topic).unwrap();
            let origin = Origin {
                topic: &o.topic,
                partition: 0,
                offset: 0,
                timestamp: o.timestamp,
                key: o.key.as_deref(),
                value: o.value.as_deref(),
            };
            let mut next = Vec::new();
            tasks[sub].process(t, &origin, origin.timestamp, &mut next).unwrap();
            all.extend(next);
            all.push(o);
        }
    };
    for (i, (key, value)) in inputs.iter().enumerate() {
        let origin = Origin {
            topic: "parking_status",
            partition: 0,
            offset: i as i64,
            timestamp: T14 + i as i64 * 60_000,
            key: key.as_deref(),
            value: Some(value),
        };
        let mut out = Vec::new();
        tasks[0].process(t, &origin, origin.timestamp, &mut out).unwrap();
        if i % 7 == 0 {
            tasks[0].emit_cached(t, &mut out).unwrap();
        }
        route(&mut tasks, out, &mut all);
    }
    let mut out = Vec::new();
    tasks[0].emit_cached(t, &mut out).unwrap();
    route(&mut tasks, out, &mut all);
    for task in tasks.iter_mut().skip(1) {
        task.advance_stream_time(t, i64::MAX, &mut all).unwrap();
        task.emit_cached(t, &mut all).unwrap();
    }
    all
}

#[test]
fn projected_decoding_writes_exactly_what_decoding_everything_writes() {
    let projected = parking();
    let mut whole = parking();
    for n in &mut whole.nodes {
        if let NodeKind::Source(s) = &mut n.kind {
            s.project = None;
        }
    }
    // The real poll (half of it made real-time), and records that go wrong
    // in the fields projection skips or keeps.
    let mut inputs: Vec<(Option<Vec<u8>>, Vec<u8>)> = include_str!("../../data/citydata_parking_poll.jsonl")
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if i % 2 == 0 {
                v["IS_REALTIME_STATUS_PROVIDED"] = "Y".into();
                v["LAST_UPDATE"] = format!("2025-03-31 14:{:02}:00", i % 60).into();
            }
            (
                v["PARKING_CODE"].as_str().map(|k| k.as_bytes().to_vec()),
                v.to_string().into_bytes(),
            )
        })
        .collect();
    let y = r#""IS_REALTIME_STATUS_PROVIDED":"Y","REGION":"r","REGION_CODE":"R1","LAST_UPDATE":"2025-03-31 15:00:00""#;
    let mut odd: Vec<Vec<u8>> = [
        format!(r#"{{{y},"CAPACITY":"10","OCCUPIED_SPOTS":"3","NOTE":"caf\u00e9 \"quoted\"","NEST":{{"a":[1,2.5,null,true]}}}}"#),
        format!(r#"{{{y},"CAPACITY":"10","OCCUPIED_SPOTS":"abc"}}"#),
        format!(r#"{{{y},"CAPACITY":"10","CAPACITY":"20","OCCUPIED_SPOTS":"1"}}"#),
        format!(r#"{{{y},"CAPACITY":"10","OCCUPIED_SPOTS":"1","AVAILABLE_SPOTS":"stale"}}"#),
        format!(r#"{{{y},"CAPACITY":10,"OCCUPIED_SPOTS":1,"BIG":18446744073709551615}}"#),
        format!(r#"{{{y},"CAPACITY":"10","SKIPPED":[1,{{"x":}}]}}"#),
        format!(r#"{{{y},"CAPACITY":"10","SKIPPED":"unterminated}}"#),
        format!(r#"{{{y},"CAPACITY":"10"}} trailing"#),
        r#"["not","an","object"]"#.to_string(),
        r#""text""#.to_string(),
        "{}".to_string(),
    ]
    .map(String::into_bytes)
    .to_vec();
    let mut bad_utf8 = format!(r#"{{{y},"CAPACITY":"10","SKIPPED":"x"}}"#).into_bytes();
    let at = bad_utf8.len() - 3;
    bad_utf8[at] = 0xff;
    odd.push(bad_utf8);
    for (i, v) in odd.into_iter().enumerate() {
        let key = if i == 0 {
            "nested".to_string()
        } else {
            format!("odd-{}", i % 3)
        };
        inputs.push((Some(key.into_bytes()), v));
    }
    inputs.push((None, format!(r#"{{{y},"CAPACITY":"5"}}"#).into_bytes()));

    let a = run_all(&projected, &inputs);
    let b = run_all(&whole, &inputs);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    let kinds = |k: OutputKind| a.iter().filter(|o| o.kind == k).count();
    assert!(kinds(OutputKind::DeadLetter) >= 6, "{}", kinds(OutputKind::DeadLetter));
    assert!(kinds(OutputKind::Result) > 100);
    let lot = a
        .iter()
        .find(|o| o.key.as_deref() == Some(&b"nested"[..]) && o.topic == "parking_lot_status");
    let lot: serde_json::Value = serde_json::from_slice(lot.unwrap().value.as_deref().unwrap()).unwrap();
    assert_eq!(lot["NEST"]["a"][1], 2.5, "skipped fields are written whole: {lot}");
}

/// A backend that remembers the most entries one `range` call returned.
struct Recording {
    inner: crate::state::MemBackend,
    largest: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend for Recording {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<crate::state::Entries, StoreError> {
        let out = self.inner.range(from, to, limit)?;
        self.largest.fetch_max(out.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(out)
    }
    fn first_key(&self, from: &[u8], skip: &dyn Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.first_key(from, skip)
    }
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        self.inner.write(batch)
    }
}

/// Stream time jumping past thousands of open windows (an outage, a
/// backlog) emits and deletes each once, reading them from the store a
/// chunk at a time, and leaves the store empty.
#[test]
fn closing_many_windows_reads_them_a_chunk_at_a_time() {
    let t = topo(&window_yaml(""));
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut task = Task::new(&t, 0, 0, |_| {
        Ok(Box::new(Recording {
            inner: crate::state::MemBackend::default(),
            largest: largest.clone(),
        }))
    })
    .unwrap();
    let groups = 2 * super::window::CLOSE_CHUNK + 500;
    for g in 0..groups {
        feed(&mut task, &t, &format!("g{g:05}"), T14 + g as i64, 1.0);
        if g == groups / 2 {
            // Half of them stored, half still in the write cache.
            task.flush().unwrap();
        }
    }
    // A few of the stored ones updated in the cache.
    for g in 0..10 {
        feed(&mut task, &t, &format!("g{g:05}"), T14 + 1, 2.0);
    }
    let out = values(&feed(&mut task, &t, "late-comer", T14 + 5 * H, 1.0));
    let mut seen: Vec<String> = out.iter().map(|v| v["g"].as_str().unwrap().to_string()).collect();
    assert_eq!(seen.len(), groups, "every window once");
    seen.dedup();
    assert_eq!(seen.len(), groups, "in key order, none twice");
    assert_eq!(out[0]["n"], 2, "the cached update is what is emitted");
    assert_eq!(out[0]["avg"], 1.5);
    let read = largest.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=super::window::CLOSE_CHUNK).contains(&read),
        "{read} windows read at once (chunk {})",
        super::window::CLOSE_CHUNK
    );
    task.flush().unwrap();
    // Only the late-comer's window is left.
    let more = values(&feed(&mut task, &t, "z", T14 + 10 * H, 1.0));
    assert_eq!(more.len(), 1);
    assert_eq!(more[0]["g"], "late-comer");
}
