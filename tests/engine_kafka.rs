//! `weir run` against the real broker: simulator records → parking
//! topology → `parking_hourly_avg`, checked against averages computed here
//! from the same input; 3 input partitions must still give one result per
//! (region, hour); deleting the state directory and restarting must restore
//! the open windows from the changelog.

mod common;
mod engine_common;

use std::time::Duration;

use common::*;
use engine_common::*;
use serde_json::Value;

#[test]
fn hourly_averages_match_and_state_is_restored_from_the_changelog() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-engine");
    let (topo, [status, dlq, hourly, lots]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let inputs = simulate(4000, 7, dir.path());
    let want = expected(&inputs);
    assert!(want.len() > 20, "the simulation should span several region-hours");
    let (first, second) = inputs.split_at(inputs.len() / 2);
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();

    // Run 1: first half. With a 1-day grace nothing closes yet: every window
    // lives only in the state stores when weir stops.
    produce_inputs(&status, first);
    let run1 = WeirProc::spawn(
        &["run", topo.to_str().unwrap(), "--state-dir", &state_s],
        &dir.path().join("run1.log"),
    );
    wait_committed(&id, &status, 3, Duration::from_secs(90));
    wait_committed(
        &id,
        &format!("{id}-hourly-by-region-repartition"),
        3,
        Duration::from_secs(90),
    );
    run1.terminate();
    let changelog = consume_until(
        &format!("{id}-hourly-by-region-changelog"),
        Duration::from_secs(20),
        Duration::ZERO,
        |r| !r.is_empty(),
    );
    assert!(!changelog.is_empty(), "window store changes reach the changelog topic");

    // Lose the local state; run 2 must rebuild it from the changelog.
    std::fs::remove_dir_all(&state).unwrap();
    produce_inputs(&status, second);
    let run2 = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            &state_s,
            "--repartition-purge-interval",
            "500ms",
        ],
        &dir.path().join("run2.log"),
    );
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    // Processed and committed repartition records are deleted (the topic
    // keeps them forever otherwise), never beyond the committed position.
    let repartition = format!("{id}-hourly-by-region-repartition");
    let mut purged = Vec::new();
    wait_for(
        "committed repartition records to be deleted",
        Duration::from_secs(20),
        || {
            purged = (0..3).map(|p| watermarks(&repartition, p).0).collect();
            purged.iter().all(|&low| low > 0)
        },
    );
    let committed = committed_offsets(&id, &repartition, 3);
    for (p, low) in purged.iter().enumerate() {
        assert!(
            *low <= committed[p],
            "partition {p}: purged to {low}, committed {}",
            committed[p]
        );
    }
    run2.terminate();
    check_results(&results, &want);
    for r in &results {
        assert!((0..3).contains(&r.partition));
        assert_eq!(r.partition, weir::partition_for(r.key.as_deref(), 3, 0));
    }
    // Each window task's RocksDB holds the changelog offset its state is at
    // (written with the state, in one batch): a restart replays only what
    // follows it.
    let changelog = format!("{id}-hourly-by-region-changelog");
    let (_, end) = watermarks(&changelog, 0);
    let db = weir::TaskDb::open(
        &state.join(&id).join("1_0").join("rocksdb"),
        &["hourly-by-region".to_string()],
    )
    .unwrap();
    let at = db.changelog_offset(&changelog, 0).unwrap();
    assert!(
        matches!(at, Some(o) if o > 0 && o <= end),
        "stored changelog offset {at:?}, end {end}"
    );

    // Bad records went to the dead-letter topic with their reason.
    let bad = inputs
        .iter()
        .filter(|i| serde_json::from_slice::<Value>(&i.payload).is_err())
        .count();
    assert!(bad > 0);
    let dead = consume_until(&dlq, Duration::from_secs(30), Duration::from_secs(1), |r| {
        r.len() >= bad
    });
    assert!(
        dead.len() >= bad,
        "{} dead letters for {bad} undecodable records",
        dead.len()
    );
    assert!(dead
        .iter()
        .all(|d| d.headers.contains_key("weir.error") && d.headers.contains_key("weir.offset")));
    // Written with the time they were dead-lettered (the DLQ's retention
    // counts from then), the original timestamp in a header.
    let started = chrono::Utc::now().timestamp_millis() - 10 * 60_000;
    for d in &dead {
        assert!(
            d.timestamp > started,
            "dead letter timestamp {} is not recent",
            d.timestamp
        );
        let original: i64 = d.headers["weir.timestamp"].parse().unwrap();
        assert!(inputs.iter().any(|i| i.timestamp == original));
    }
    // The latest status of every lot, computed from the input.
    let want_lots = expected_lots(&inputs);
    assert!(want_lots.len() > 100, "{} lots", want_lots.len());
    check_lots(&read_lots(&lots, &want_lots), &want_lots);
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
}

#[test]
fn idle_feed_closes_its_windows_by_the_wall_clock_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-idle");
    let (input, output) = (format!("{id}-in"), format!("{id}-out"));
    let topo = dir.path().join("idle.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\ncommit_interval: 200ms\nsources:\n  s: {{ topic: {input} }}\nsteps:\n  - name: per-key\n    window:\n      group_by: {{ k: key }}\n      tumbling: 5s\n      close_idle_after: 1s\n      aggregate: {{ n: count() }}\n    to: {{ topic: {output} }}\n"
        ),
    )
    .unwrap();
    create_topic(&input, 1);
    // An hour ago (recent, so retention keeps it), a multiple of 5 s; nothing
    // newer ever comes, so only the wall clock can close [t0, t0 + 5 s).
    let t0 = (chrono::Utc::now().timestamp_millis() - H).div_euclid(5000) * 5000;
    let p = producer();
    for i in 0..3 {
        produce(&p, &input, 0, t0 + i * 1000, Some(b"a"), Some(br#"{"x":1}"#));
    }
    flush(&p);
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let state = dir.path().join("state");
    let run = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-addr",
            &metrics,
        ],
        &dir.path().join("run.log"),
    );
    let out = consume_until(&output, Duration::from_secs(60), Duration::from_millis(500), |r| {
        !r.is_empty()
    });
    assert_eq!(out.len(), 1, "exactly one final result");
    let v: Value = serde_json::from_slice(out[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(v["n"], 3);
    assert_eq!(v["k"], "a");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(v["window_start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis(),
        t0
    );
    // Prometheus exposition, after a commit has exported the task counters.
    std::thread::sleep(Duration::from_millis(500));
    let body = http_get(&metrics, "/metrics");
    for name in [
        "weir_records_processed_total",
        "weir_result_records_total",
        "weir_commit_latency_seconds_bucket",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("weir_records_processed_total") && l.ends_with(" 3")),
        "{body}"
    );
    run.terminate();
    delete_topics(&[&input, &output]);
}

#[test]
fn two_instances_share_the_work_and_results_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-group");
    let (topo, [status, dlq, hourly, lots]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let inputs = simulate(3000, 11, dir.path());
    let want = expected(&inputs);
    let (first, second) = inputs.split_at(inputs.len() / 2);
    let topo_s = topo.to_str().unwrap().to_string();
    let state_a = dir.path().join("a").to_str().unwrap().to_string();
    let state_b = dir.path().join("b").to_str().unwrap().to_string();

    produce_inputs(&status, first);
    let a = WeirProc::spawn(&["run", &topo_s, "--state-dir", &state_a], &dir.path().join("a.log"));
    wait_committed(&id, &status, 3, Duration::from_secs(90));
    // B joins: the group rebalances, A commits and hands over tasks, which B
    // restores from their changelogs (it has no local state).
    let b = WeirProc::spawn(&["run", &topo_s, "--state-dir", &state_b], &dir.path().join("b.log"));
    // Let B join the group before the second half arrives.
    std::thread::sleep(Duration::from_secs(8));
    produce_inputs(&status, second);
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    let task_dirs = |state: &str| {
        std::fs::read_dir(std::path::Path::new(state).join(&id))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let (dirs_a, dirs_b) = (task_dirs(&state_a), task_dirs(&state_b));
    a.terminate();
    b.terminate();
    check_results(&results, &want);
    assert!(dirs_b > 0, "the second instance ran tasks (a: {dirs_a}, b: {dirs_b})");
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
}

/// A record near the broker's size limit (over the producer's
/// `message.max.bytes`, so its dead letter cannot carry it either) goes to
/// the dead-letter topic without its value; exactly-once `weir run` keeps
/// running and processes what follows (a record refused inside a commit
/// would fail every replay of it: a crash loop).
#[test]
fn a_record_near_the_size_limit_is_dead_lettered_and_processing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-big");
    let (topo, [status, dlq, hourly, lots]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let inputs = simulate(600, 31, dir.path());
    let want = expected(&inputs);
    let (first, second) = inputs.split_at(inputs.len() / 2);
    produce_inputs(&status, first);
    // 1,040,000 bytes of valid JSON: under the broker's 1,048,588-byte
    // limit, over the producer's 1,000,000 and weir's 900 KiB.
    let big = format!(
        r#"{{"REGION":"x","REGION_CODE":"POI999","PARKING_CODE":"BIG","CAPACITY":"1","OCCUPIED_SPOTS":"0","IS_REALTIME_STATUS_PROVIDED":"Y","LAST_UPDATE":"2025-03-31 10:00:00","PAD":"{}"}}"#,
        "x".repeat(1_040_000 - 170)
    );
    let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("message.max.bytes", "1048000")
        .create()
        .unwrap();
    let ts = first.last().unwrap().timestamp;
    produce(&p, &status, 0, ts, Some(b"BIG"), Some(big.as_bytes()));
    flush(&p);
    produce_inputs(&status, second);
    let run = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            dir.path().join("s").to_str().unwrap(),
        ],
        &dir.path().join("run.log"),
    );
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    assert!(run.exited().is_none(), "weir run kept running");
    check_results(&results, &want);
    let dead = consume_until(&dlq, Duration::from_secs(30), Duration::ZERO, |r| {
        r.iter().any(|d| d.key.as_deref() == Some(b"BIG".as_slice()))
    });
    let d = dead
        .iter()
        .find(|d| d.key.as_deref() == Some(b"BIG".as_slice()))
        .expect("the big record is dead-lettered");
    assert!(d.headers["weir.error"].contains("too large"), "{:?}", d.headers);
    assert!(d.headers.contains_key("weir.value_dropped"), "{:?}", d.headers);
    assert!(d.value.is_none(), "its value is dropped");
    run.terminate();
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
}

/// A record the broker refuses for good (here every lot record: the lot
/// topic's `max.message.bytes` is below them) stops exactly-once `weir run`
/// at once, with the topic named: an abort and a rebuild would send the
/// same records into the same refusal (before typed delivery errors: ten
/// aborts and rebuilds, then the exit).
#[test]
fn an_output_record_the_broker_refuses_for_good_stops_weir_run_with_the_topic_named() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-refused");
    let (topo, [status, dlq, hourly, lots]) = topology_eos(dir.path(), &id);
    create_topic(&status, 3);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(weir::ensure_topics(
            &bootstrap(),
            &[weir::TopicSpec::new(&lots, 3).with_config("max.message.bytes", "100")],
        ))
        .unwrap();
    produce_inputs(&status, &simulate(300, 3, dir.path()));
    let run = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            dir.path().join("s").to_str().unwrap(),
        ],
        &dir.path().join("run.log"),
    );
    run.unwatch();
    wait_for("weir run to stop", Duration::from_secs(90), || run.exited().is_some());
    let exit = run.exited().unwrap();
    let log = run.log_text();
    assert!(!exit.success(), "{exit}: {log}");
    assert!(
        log.contains(&format!("{lots} [")) && log.contains("MessageSizeTooLarge"),
        "the refusal, with its topic: {log}"
    );
    assert!(
        !log.contains("transaction aborted: rebuilding"),
        "no rebuild for a refusal every attempt meets: {log}"
    );
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
}
