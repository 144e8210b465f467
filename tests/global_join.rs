//! A join against a global table on the real broker: `weir ingest
//! hotspots` loads the hotspot list into a compacted topic, and `weir run`
//! reads it in full before it processes, so a backlog waiting on the input
//! is joined with every row the table already had (none of its records
//! comes out without its hotspot's name); an instance started afresh (a
//! new state directory, after a SIGKILL) loads it again before it joins;
//! a row changed while it runs reaches the records that come after.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

#[test]
fn records_are_joined_with_every_row_the_global_table_held_when_the_instance_started() {
    let dir = test_dir();
    let id = unique("it-global");
    let (input, out, hotspots) = (format!("{id}-in"), format!("{id}-out"), format!("{id}-hotspots"));
    create_topic(&input, 3);
    // The shipped list, whose names and districts are what every record
    // must carry (`ingest hotspots` writes every field of an entry).
    let list: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(checkout().join("data/seoul_hotspots.json")).unwrap()).unwrap();
    let names: BTreeMap<String, String> = list
        .iter()
        .map(|h| {
            (
                h["code"].as_str().unwrap().to_string(),
                h["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let districts: BTreeMap<String, String> = list
        .iter()
        .map(|h| {
            (
                h["code"].as_str().unwrap().to_string(),
                h["district"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    run_weir(&["ingest", "hotspots", "--topic", &hotspots, "--partitions", "2"]);
    let topo = dir.path().join("join.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\nprocessing_guarantee: exactly_once\ncommit_interval: 200ms\n\
             sources:\n  s: {{ topic: {input} }}\nglobal_tables:\n  hotspots: {{ topic: {hotspots} }}\n\
             steps:\n  - name: named\n    join: {{ global: hotspots, key: value.REGION_CODE, how: left, fields: {{ HOTSPOT: name, DISTRICT: district }} }}\n    \
             to: {{ topic: {out}, partitions: 3 }}\n"
        ),
    )
    .unwrap();
    // A backlog on the input before any instance starts: the first records
    // are processed right after the table is loaded.
    let p = producer();
    let codes: Vec<&String> = names.keys().collect();
    // Recent timestamps: records older than the topic's retention (7 days)
    // make the broker roll their segment and delete it under the test.
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let send = |from: usize, n: usize| {
        for i in from..from + n {
            let code = codes[i % codes.len()];
            let v = json!({"REGION_CODE": code, "SEQ": i}).to_string();
            let key = format!("lot{i}");
            let partition = weir::partition_for(Some(key.as_bytes()), 3, 0);
            produce(
                &p,
                &input,
                partition,
                base + i as i64,
                Some(key.as_bytes()),
                Some(v.as_bytes()),
            );
        }
        flush(&p);
    };
    send(0, 300);
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
    let run = run_in("a", "run-a.log");
    let joined = |n: usize| {
        consume_until(&out, T, Duration::from_secs(1), |r| r.len() >= n)
            .into_iter()
            .map(|r| serde_json::from_slice::<Value>(r.value.as_deref().unwrap()).unwrap())
            .collect::<Vec<Value>>()
    };
    let check = |records: &[Value], want: &dyn Fn(&str) -> String| {
        for r in records {
            let code = r["REGION_CODE"].as_str().unwrap();
            assert_eq!(r["HOTSPOT"].as_str(), Some(want(code).as_str()), "record {r}");
            // The renamed row below has no district.
            let district = if r["HOTSPOT"] == "renamed" {
                None
            } else {
                Some(districts[code].as_str())
            };
            assert_eq!(r["DISTRICT"].as_str(), district, "record {r}");
        }
    };
    let first = joined(300);
    assert_eq!(first.len(), 300);
    check(&first, &|code| names[code].clone());
    // Killed, and a new instance on an empty state directory: it loads the
    // table again before it joins the rest of the backlog.
    run.kill();
    send(300, 300);
    let run = run_in("b", "run-b.log");
    let both = joined(600);
    assert_eq!(both.len(), 600, "each record once (exactly-once)");
    check(&both, &|code| names[code].clone());
    // A row changed while the instance runs: records that come after it
    // get the new name (the table side is not time-synchronised: the
    // update applies when the instance reads it, as in Kafka Streams).
    let renamed = codes[0].clone();
    let v = json!({"code": renamed, "name": "renamed"}).to_string();
    produce(
        &p,
        &hotspots,
        weir::partition_for(Some(renamed.as_bytes()), 2, 0),
        base + 100_000,
        Some(renamed.as_bytes()),
        Some(v.as_bytes()),
    );
    flush(&p);
    // The follower polls every 200 ms; a few seconds on a busy machine.
    std::thread::sleep(Duration::from_secs(3));
    send(600, codes.len());
    let all = joined(600 + codes.len());
    let after: Vec<Value> = all.into_iter().filter(|r| r["SEQ"].as_u64() >= Some(600)).collect();
    assert_eq!(after.len(), codes.len());
    check(&after, &|code| {
        if *code == *renamed {
            "renamed".to_string()
        } else {
            names[code].clone()
        }
    });
    run.assert_running();
    run.terminate();
    delete_topics(&[&input, &out, &hotspots]);
}
