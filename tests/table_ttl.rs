//! A table with `ttl` against the real broker and Postgres: `weir run`
//! (exactly-once) forgets the keys not updated for the ttl in stream time,
//! also after a SIGKILL and a restart on its state directory (the keys by
//! last update are read back from RocksDB), and `weir sink` with
//! `delete_on_tombstone` deletes their rows: Postgres ends with exactly the
//! keys a computation over the input says are still alive.

mod common;
mod sink_common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use sink_common::*;

const T: Duration = Duration::from_secs(120);
const TTL_MS: i64 = 60_000;

/// The keys alive after `input` (key, value, timestamp) with the ttl: each
/// key's last record, unless stream time (the largest timestamp) reached
/// its timestamp + ttl.
fn alive(input: &[(&str, &str, i64)]) -> BTreeMap<String, String> {
    let stream_time = input.iter().map(|r| r.2).max().unwrap_or(i64::MIN);
    let mut last: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for (k, name, ts) in input {
        last.insert(k.to_string(), (name.to_string(), *ts));
    }
    last.into_iter()
        .filter(|(_, (_, ts))| ts + TTL_MS > stream_time)
        .map(|(k, (name, _))| (k, name))
        .collect()
}

#[test]
fn keys_forgotten_by_ttl_leave_the_postgres_table_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("it_ttl");
    let (input, out, dlq) = (format!("{id}_in"), format!("{id}_out"), format!("{id}_dlq"));
    create_topic(&input, 1);
    let topo = dir.path().join("ttl.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\nprocessing_guarantee: exactly_once\ncommit_interval: 200ms\n\
             sources:\n  s: {{ topic: {input} }}\nsteps:\n  - name: latest\n    \
             table: {{ key: key, ttl: 1m }}\n    to: {{ topic: {out}, partitions: 1 }}\n"
        ),
    )
    .unwrap();
    let table = format!(
        "  - topic: {out}\n    table: {id}.lots\n    key: [code]\n    auto_create: true\n    delete_on_tombstone: true\n    \
         columns:\n      code: {{ field: CODE, type: \"varchar(20)\" }}\n      name: {{ field: NAME, type: text }}\n"
    );
    let cfg = write_config(dir.path(), &id, &dlq, "linger: 200ms\n", &[table]);
    let base = chrono::Utc::now().timestamp_millis() - 10 * 60_000;
    // a and c expire (last updates 0 and 30 s, stream time 100 s); b was
    // refreshed at 50 s and d is new. The kill comes between the halves.
    let first = [("a", "A", base), ("b", "B", base), ("c", "C", base + 30_000)];
    let second = [("b", "B2", base + 50_000), ("d", "D", base + 100_000)];
    let p = producer();
    let send = |records: &[(&str, &str, i64)]| {
        for (k, name, ts) in records {
            let v = format!(r#"{{"CODE":"{k}","NAME":"{name}"}}"#);
            produce(&p, &input, 0, *ts, Some(k.as_bytes()), Some(v.as_bytes()));
        }
        flush(&p);
    };
    let state = dir.path().join("state");
    let run_args = |log: &str| {
        (
            vec![
                "run".to_string(),
                topo.display().to_string(),
                "--state-dir".into(),
                state.display().to_string(),
            ],
            dir.path().join(log),
        )
    };
    let (args, log) = run_args("run1.log");
    let run = WeirProc::spawn(&args, &log);
    let sink = start_sink(&cfg, &[]);
    let mut pg = Pg::connect();
    send(&first);
    let rows = |pg: &mut Pg| -> BTreeMap<String, String> {
        pg.query(&format!("SELECT code, name FROM {id}.lots"))
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    wait_for("the first records in Postgres", T, || {
        pg.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{id}'")) == 1
            && rows(&mut pg) == alive(&first)
    });
    run.kill();
    let (args, log) = run_args("run2.log");
    let run = WeirProc::spawn(&args, &log);
    send(&second);
    let all: Vec<(&str, &str, i64)> = first.iter().chain(&second).copied().collect();
    let want = alive(&all);
    assert_eq!(want.keys().map(String::as_str).collect::<Vec<_>>(), ["b", "d"]);
    wait_for("the forgotten keys' rows deleted", T, || rows(&mut pg) == want);
    // On the topic: a tombstone (no value) for each forgotten key, stamped
    // with its last update + ttl.
    let recs = consume_until(&out, T, Duration::from_secs(2), |r| {
        r.iter().filter(|r| r.value.is_none()).count() >= 2
    });
    let mut tombstones: Vec<(String, i64)> = recs
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| (String::from_utf8(r.key.clone().unwrap()).unwrap(), r.timestamp))
        .collect();
    tombstones.sort();
    assert_eq!(
        tombstones,
        [
            ("a".to_string(), base + TTL_MS),
            ("c".to_string(), base + 30_000 + TTL_MS)
        ]
    );
    run.assert_running();
    sink.assert_running();
    run.terminate();
    sink.terminate();
    pg.exec(&format!("DROP SCHEMA IF EXISTS {id} CASCADE"));
    pg.exec(&format!("DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"));
    delete_topics(&[&input, &out, &dlq]);
}
