//! The write cache is bounded: an interval's writes wait in memory until
//! the commit applies them to RocksDB, and once they outgrow half of
//! `--state-memory` the commit comes early. Against the real broker under
//! exactly-once: a table of many distinct keys (whole values kept, as
//! `queryable: true` does) and a `table_aggregate` counting its keys per
//! group, a 5 s commit interval (the longest exactly-once allows), `--state-memory 16MiB` (the smallest), a SIGKILL after
//! the first early commits and a restart on the same state directory. The
//! final counts per group and each key's last row must equal what the
//! input says, and the early-commit counter must have moved (it counts
//! only commits the bound caused).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::metrics::{metric, scrape};
use common::*;

const T: Duration = Duration::from_secs(180);
const KEYS: usize = 30_000;
const VERSIONS: usize = 3;
const GROUPS: usize = 7;

/// Version `v` of key `k`: its group moves with the version, and a
/// padding makes the whole value ~600 bytes.
fn record(k: usize, v: usize) -> (String, String) {
    let key = format!("k{k:06}");
    let grp = format!("g{}", (k + v) % GROUPS);
    let pad = "x".repeat(560);
    (
        key.clone(),
        format!(r#"{{"K":"{key}","V":{v},"GRP":"{grp}","PAD":"{pad}"}}"#),
    )
}

/// Each key's last version.
fn last_versions() -> BTreeMap<String, usize> {
    (0..KEYS).map(|k| (record(k, 0).0, VERSIONS - 1)).collect()
}

/// Keys per group after every record.
fn expected_groups() -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for k in 0..KEYS {
        *out.entry(format!("g{}", (k + VERSIONS - 1) % GROUPS)).or_insert(0) += 1;
    }
    out
}

/// `check` for `consume_until`, run only when a poll brought nothing new
/// (parsing every record read after each one took minutes).
fn when_quiet(check: impl Fn(&[Rec]) -> bool) -> impl Fn(&[Rec]) -> bool {
    let seen = std::cell::Cell::new(usize::MAX);
    move |recs| seen.replace(recs.len()) == recs.len() && check(recs)
}

/// The newest value per key on a topic (read_committed), parsed.
fn latest(records: &[Rec]) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for r in records {
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
        match &r.value {
            Some(v) => out.insert(key, serde_json::from_slice(v).unwrap()),
            None => out.remove(&key),
        };
    }
    out
}

#[test]
fn an_interval_of_writes_over_the_cache_bound_commits_early_and_stays_exact_across_a_sigkill() {
    let dir = test_dir();
    let id = unique("it_cache").replace('-', "_");
    let (input, table, groups) = (format!("{id}_in"), format!("{id}_table"), format!("{id}_groups"));
    create_topic(&input, 1);
    let topo = dir.path().join("cache.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\nprocessing_guarantee: exactly_once\ncommit_interval: 5s\n\
             sources:\n  s: {{ topic: {input} }}\nsteps:\n  - name: latest\n    \
             table: {{ key: key, queryable: true }}\n    to: {{ topic: {table}, partitions: 1 }}\n  \
             - name: per-group\n    from: latest\n    table_aggregate:\n      group_by: {{ grp: value.GRP }}\n      \
             aggregate: {{ keys: count() }}\n    to: {{ topic: {groups}, key: value.grp, partitions: 1 }}\n"
        ),
    )
    .unwrap();
    // Every version of every key, in version order; the second half comes
    // after the restart.
    let base = chrono::Utc::now().timestamp_millis() - 60 * 60_000;
    let all: Vec<(String, String)> = (0..VERSIONS)
        .flat_map(|v| (0..KEYS).map(move |k| record(k, v)))
        .collect();
    let (first, second) = all.split_at(all.len() / 2);
    let p = producer();
    let send = |records: &[(String, String)], from: usize| {
        for (i, (k, v)) in records.iter().enumerate() {
            let ts = base + (from + i) as i64;
            produce(&p, &input, 0, ts, Some(k.as_bytes()), Some(v.as_bytes()));
        }
        flush(&p);
    };
    send(first, 0);
    let state = dir.path().join("state");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let args = |addr: &str| {
        vec![
            "run".to_string(),
            topo.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "--state-memory".into(),
            "16MiB".into(),
            "--metrics-addr".into(),
            addr.to_string(),
        ]
    };
    let run = WeirProc::spawn(&args(&metrics_addr), &dir.path().join("run1.log"));
    let early = |addr: &str| {
        scrape(addr)
            .and_then(|text| metric(&text, "weir_early_commits_total", ""))
            .unwrap_or(0.0)
    };
    // 45,000 records, 30,000 keys of ~700 bytes cached each: over twice
    // the 8 MiB bound.
    wait_for("two early commits", T, || early(&metrics_addr) >= 2.0);
    run.kill();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let run = WeirProc::spawn(&args(&metrics_addr), &dir.path().join("run2.log"));
    send(second, first.len());
    let want_groups = expected_groups();
    let groups_out = consume_until(
        &groups,
        T,
        Duration::from_secs(1),
        when_quiet(|recs| {
            let got = latest(recs);
            got.len() == want_groups.len()
                && want_groups
                    .iter()
                    .all(|(g, n)| got.get(g).and_then(|v| v["keys"].as_i64()) == Some(*n))
        }),
    );
    let got_groups: BTreeMap<String, i64> = latest(&groups_out)
        .into_iter()
        .map(|(g, v)| (g, v["keys"].as_i64().unwrap()))
        .collect();
    assert_eq!(got_groups, want_groups, "keys per group");
    let want_rows = last_versions();
    let rows = consume_until(
        &table,
        T,
        Duration::from_secs(1),
        when_quiet(|recs| {
            let got = latest(recs);
            got.len() == KEYS && got.values().all(|v| v["V"].as_u64() == Some((VERSIONS - 1) as u64))
        }),
    );
    let got_rows: BTreeMap<String, usize> = latest(&rows)
        .into_iter()
        .map(|(k, v)| (k, v["V"].as_u64().unwrap() as usize))
        .collect();
    assert_eq!(got_rows, want_rows, "each key's last row");
    assert!(
        early(&metrics_addr) >= 1.0,
        "the restarted instance commits early too (the second half alone outgrows the bound)"
    );
    run.terminate();
    delete_topics(&[&input, &table, &groups, &format!("{id}-dlq")]);
}
