//! Catching up without losing records, with the real 1-minute grace: a
//! backlog of hours in 3 input partitions waiting before `weir run` starts,
//! and a `weir run` killed for longer than the grace while the feed goes on.
//! Read in librdkafka's fetch order, one partition runs hours ahead of the
//! others and the window drops most records as late; weir takes them in
//! event-time order (`runtime::aligned`). Each test compares the output topic
//! with the hourly table computed independently from the input, and reads
//! `weir_dropped_records_total{reason="late"}` from `/metrics`.

mod common;
mod engine_common;

use std::time::Duration;

use common::metrics::metric;
use common::*;
use engine_common::*;

/// No record was taken out of a partition's offset order (the counter
/// exists from the start, so its absence is a failure too).
fn assert_no_offset_regression(text: &str) {
    assert!(
        text.contains("weir_offset_regressions_total"),
        "the counter is not exported"
    );
    let n = metric(text, "weir_offset_regressions_total", "").unwrap_or(0.0);
    assert_eq!(n, 0.0, "records processed out of offset order");
}

fn start(topo: &std::path::Path, state: &std::path::Path, metrics: &str) -> WeirProc {
    WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-addr",
            metrics,
        ],
        &state.with_extension("log"),
    )
}

#[test]
fn a_backlog_of_hours_is_caught_up_without_late_drops() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-backlog");
    let (topo, [status, dlq, hourly, lots]) = topology_real_grace(dir.path(), &id);
    create_topic(&status, 3);
    // ~4.7 hours of the feed, all of it waiting before weir starts.
    let inputs = simulate(30_000, 11, dir.path());
    let span = inputs.iter().map(|i| i.timestamp).max().unwrap() - inputs.iter().map(|i| i.timestamp).min().unwrap();
    assert!(span > 4 * H, "the backlog spans {span} ms");
    produce_inputs(&status, &inputs);
    let want = expected(&inputs);

    let metrics = format!("127.0.0.1:{}", free_port());
    let run = start(&topo, &dir.path().join("state"), &metrics);
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    let text = http_get(&metrics, "/metrics");
    run.terminate();
    let late = metric(&text, "weir_dropped_records_total", "reason=\"late\"").unwrap_or(0.0);
    assert_eq!(late, 0.0, "records dropped as late while catching up");
    assert_no_offset_regression(&text);
    check_results(&results, &want);
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
}

#[test]
fn a_run_stopped_longer_than_the_grace_catches_up_without_late_drops() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-downtime");
    let (topo, [status, dlq, hourly, lots]) = topology_real_grace(dir.path(), &id);
    create_topic(&status, 3);
    let inputs = simulate(24_000, 12, dir.path());
    let (before, during) = inputs.split_at(inputs.len() / 3);
    let want = expected(&inputs);
    let state = dir.path().join("state");

    produce_inputs(&status, before);
    let run = start(&topo, &state, &format!("127.0.0.1:{}", free_port()));
    wait_committed(&id, &status, 3, Duration::from_secs(90));
    // Killed: whatever was not committed is processed again.
    drop(run);
    // Hours of the feed arrive while weir is down (far more than the grace).
    produce_inputs(&status, during);
    let metrics = format!("127.0.0.1:{}", free_port());
    let run = start(&topo, &state, &metrics);
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    let text = http_get(&metrics, "/metrics");
    run.terminate();
    let late = metric(&text, "weir_dropped_records_total", "reason=\"late\"").unwrap_or(0.0);
    assert_eq!(late, 0.0, "records dropped as late after the downtime");
    assert_no_offset_regression(&text);
    check_results(&results, &want);
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
}
