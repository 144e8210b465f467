//! A table with `ttl` against the real broker and Postgres: `weir run`
//! (exactly-once) forgets the keys not updated for the ttl in stream time,
//! also after a SIGKILL and a restart on its state directory (the keys by
//! last update are read back from RocksDB), and `weir sink` with
//! `delete_on_tombstone` deletes their rows: Postgres ends with exactly the
//! keys a computation over the input says are still alive. A
//! `table_aggregate` over the table counts the keys per group: what the
//! table forgets leaves the counts, and a group left empty leaves Postgres.

mod common;
mod sink_common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use sink_common::*;

const T: Duration = Duration::from_secs(120);
const TTL_MS: i64 = 60_000;

/// One input record: key, NAME, GRP, timestamp.
type In<'a> = (&'a str, &'a str, &'a str, i64);

/// The keys alive after `input` with the ttl, with their (NAME, GRP): each
/// key's last record, unless stream time (the largest timestamp) reached
/// its timestamp + ttl.
fn alive(input: &[In<'_>]) -> BTreeMap<String, (String, String)> {
    let stream_time = input.iter().map(|r| r.3).max().unwrap_or(i64::MIN);
    let mut last: BTreeMap<String, (String, String, i64)> = BTreeMap::new();
    for (k, name, grp, ts) in input {
        last.insert(k.to_string(), (name.to_string(), grp.to_string(), *ts));
    }
    last.into_iter()
        .filter(|(_, (_, _, ts))| ts + TTL_MS > stream_time)
        .map(|(k, (name, grp, _))| (k, (name, grp)))
        .collect()
}

/// The alive keys counted per group (groups without keys absent).
fn per_group(alive: &BTreeMap<String, (String, String)>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (_, grp) in alive.values() {
        *out.entry(grp.clone()).or_insert(0) += 1;
    }
    out
}

#[test]
fn keys_forgotten_by_ttl_leave_the_postgres_table_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique_ident("it_ttl");
    let (input, out, dlq) = (format!("{id}_in"), format!("{id}_out"), format!("{id}_dlq"));
    let groups = format!("{id}_groups");
    create_topic(&input, 1);
    let topo = dir.path().join("ttl.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\nprocessing_guarantee: exactly_once\ncommit_interval: 200ms\n\
             sources:\n  s: {{ topic: {input} }}\nsteps:\n  - name: latest\n    \
             table: {{ key: key, ttl: 1m }}\n    to: {{ topic: {out}, partitions: 1 }}\n  \
             - name: per-group\n    from: latest\n    table_aggregate:\n      group_by: {{ grp: value.GRP }}\n      \
             aggregate: {{ keys: count() }}\n    to: {{ topic: {groups}, key: value.grp, partitions: 1 }}\n"
        ),
    )
    .unwrap();
    let table = format!(
        "  - topic: {out}\n    table: {id}.lots\n    key: [code]\n    auto_create: true\n    delete_on_tombstone: true\n    \
         columns:\n      code: {{ field: CODE, type: \"varchar(20)\" }}\n      name: {{ field: NAME, type: text }}\n      \
         grp: {{ field: GRP, type: text }}\n"
    );
    let group_table = format!(
        "  - topic: {groups}\n    table: {id}.groups\n    key: [grp]\n    auto_create: true\n    delete_on_tombstone: true\n    \
         columns:\n      grp: {{ field: grp, type: text }}\n      keys: {{ field: keys, type: bigint }}\n"
    );
    let cfg = write_config(dir.path(), &id, &dlq, "linger: 200ms\n", &[table, group_table]);
    let base = chrono::Utc::now().timestamp_millis() - 10 * 60_000;
    // a and c expire (last updates 0 and 30 s, stream time 100 s); b was
    // refreshed at 50 s, moving from group x to y, and d is new: x is left
    // with nothing. The kill comes between the halves.
    let first = [
        ("a", "A", "x", base),
        ("b", "B", "x", base),
        ("c", "C", "y", base + 30_000),
    ];
    let second = [("b", "B2", "y", base + 50_000), ("d", "D", "y", base + 100_000)];
    let p = producer();
    let send = |records: &[In<'_>]| {
        for (k, name, grp, ts) in records {
            let v = format!(r#"{{"CODE":"{k}","NAME":"{name}","GRP":"{grp}"}}"#);
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
    let rows = |pg: &mut Pg| -> BTreeMap<String, (String, String)> {
        pg.query(&format!("SELECT code, name, grp FROM {id}.lots"))
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect()
    };
    let group_rows = |pg: &mut Pg| -> BTreeMap<String, i64> {
        pg.query(&format!("SELECT grp, keys FROM {id}.groups"))
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    wait_for("the first records in Postgres", T, || {
        pg.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{id}'")) == 2
            && rows(&mut pg) == alive(&first)
            && group_rows(&mut pg) == per_group(&alive(&first))
    });
    run.kill();
    let (args, log) = run_args("run2.log");
    let run = WeirProc::spawn(&args, &log);
    send(&second);
    let all: Vec<In<'_>> = first.iter().chain(&second).copied().collect();
    let want = alive(&all);
    assert_eq!(want.keys().map(String::as_str).collect::<Vec<_>>(), ["b", "d"]);
    wait_for("the forgotten keys' rows deleted", T, || rows(&mut pg) == want);
    let want_groups = per_group(&want);
    assert_eq!(want_groups, BTreeMap::from([("y".to_string(), 2)]));
    wait_for("the emptied group's row deleted, the other counted", T, || {
        group_rows(&mut pg) == want_groups
    });
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
    delete_topics(&[&input, &out, &dlq, &groups]);
}
