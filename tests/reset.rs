//! `weir reset` against the real broker: after a run of the parking
//! topology, a dry run changes nothing; a reset puts the group's input
//! offsets back to 0, deletes the changelog and repartition topics and the
//! local state, and the next run produces the same results again; no reset
//! while an instance runs; `--to-datetime` and the other positions.

mod common;
mod engine_common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use engine_common::*;

/// `weir <args>` (this build, or `WEIR_BIN`), its output.
fn weir(args: &[&str]) -> Output {
    Command::new(weir_bin())
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run weir")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "weir failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn spawn_run(topo: &str, state: &str) -> WeirProc {
    WeirProc::spawn(
        &["run", topo, "--state-dir", state],
        &std::path::Path::new(state).with_extension("log"),
    )
}

/// Partition count of `topic`, 0 if it is not listed.
fn partitions(topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

#[test]
fn reset_makes_the_next_run_reprocess_everything_with_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-reset");
    let (topo, [status, dlq, hourly, lots]) = topology(dir.path(), &id);
    let topo = topo.to_str().unwrap().to_string();
    create_topic(&status, 3);
    let inputs = simulate(1500, 23, dir.path());
    let want = expected(&inputs);
    assert!(want.len() > 10);
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();
    let internal = [
        format!("{id}-hourly-by-region-changelog"),
        format!("{id}-latest-per-lot-changelog"),
        format!("{id}-hourly-by-region-repartition"),
    ];

    produce_inputs(&status, &inputs);
    let run1 = spawn_run(&topo, &state_s);
    let first = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    check_results(&first, &want);

    // No reset while an instance runs: its state directory is locked, and
    // from another machine (another state directory) the group has a member.
    let out = weir(&["reset", &topo, "--state-dir", &state_s]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is used by another weir run"), "{err}");
    wait_group_stable(&id, 1, &[], Duration::from_secs(30));
    let elsewhere = dir.path().join("elsewhere");
    let out = weir(&["reset", &topo, "--state-dir", elsewhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("consumer group {id} has 1 active member")),
        "{err}"
    );
    // SIGUSR1: stop and leave the group at once (a static member stopped
    // with SIGTERM stays in it up to its session timeout).
    run1.unwatch();
    run1.signal("USR1");
    wait_for("run 1 to stop", Duration::from_secs(60), || run1.exited().is_some());
    assert!(run1.exited().unwrap().success(), "{}", run1.tail(30));

    // What the reset will change, as the run left it.
    let committed = committed_offsets(&id, &status, 3);
    let ends: Vec<i64> = (0..3).map(|p| watermarks(&status, p).1).collect();
    assert_eq!(committed, ends, "run 1 committed its whole input");
    for t in &internal {
        assert!(partitions(t) > 0, "{t} exists after run 1");
    }
    assert!(state.join(&id).is_dir());
    let hourly_ends: Vec<i64> = (0..3).map(|p| watermarks(&hourly, p).1).collect();

    // A dry run prints the plan and changes nothing.
    let plan = ok(weir(&["reset", &topo, "--state-dir", &state_s, "--dry-run"]));
    for p in 0..3 {
        let line = format!("  {status} {p}: {} -> 0", ends[p as usize]);
        assert!(plan.contains(&line), "{line:?} missing from:\n{plan}");
    }
    for t in &internal {
        assert!(plan.contains(&format!("  {t}\n")), "{t} missing from:\n{plan}");
    }
    for t in [&status, &dlq, &hourly, &lots] {
        assert!(!plan.contains(&format!("  {t}\n")), "{t} is not to be deleted:\n{plan}");
    }
    assert!(
        plan.contains(&format!("delete local state: {}", state.join(&id).display())),
        "{plan}"
    );
    assert!(plan.contains("dry run: nothing changed"), "{plan}");
    assert_eq!(committed_offsets(&id, &status, 3), ends);
    for t in &internal {
        assert!(partitions(t) > 0, "{t} still exists after the dry run");
    }
    assert!(state.join(&id).is_dir());

    // The reset.
    let done = ok(weir(&["reset", &topo, "--state-dir", &state_s]));
    assert!(done.contains("done"), "{done}");
    assert_eq!(committed_offsets(&id, &status, 3), [0, 0, 0]);
    for t in &internal {
        assert_eq!(partitions(t), 0, "{t} is deleted");
    }
    // The group's offsets of the deleted repartition topic went with it.
    assert_eq!(
        committed_offsets(&id, &internal[2], 3),
        [-1, -1, -1],
        "offsets of the deleted repartition topic"
    );
    assert!(!state.join(&id).exists(), "local state deleted");
    assert!(state.is_dir(), "only the application's directory goes");
    for t in [&status, &dlq, &hourly, &lots] {
        assert!(partitions(t) > 0, "{t} is kept");
    }

    // Run 2 reads everything again (sentinels included) from empty state:
    // the same windows, once more, after run 1's.
    let run2 = spawn_run(&topo, &state_s);
    let all = consume_until(&hourly, Duration::from_secs(120), Duration::from_secs(3), |r| {
        r.len() >= first.len() + want.len()
    });
    run2.terminate();
    let second: Vec<Rec> = all
        .into_iter()
        .filter(|r| r.offset >= hourly_ends[r.partition as usize])
        .collect();
    check_results(&second, &want);
    assert_eq!(committed_offsets(&id, &status, 3), ends);
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
    let internal: Vec<&str> = internal.iter().map(String::as_str).collect();
    delete_topics(&internal);
}

#[test]
fn offsets_go_to_a_time_to_the_end_and_back_to_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-reset-time");
    let (input, output) = (format!("{id}-in"), format!("{id}-out"));
    let topo = dir.path().join("t.yaml");
    std::fs::write(
        &topo,
        format!(
            "application_id: {id}\nsources:\n  s: {{ topic: {input} }}\nsteps:\n  - name: per-key\n    window:\n      group_by: {{ k: key }}\n      tumbling: 5s\n      aggregate: {{ n: count() }}\n    to: {{ topic: {output} }}\n"
        ),
    )
    .unwrap();
    let topo = topo.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    create_topic(&input, 2);
    // Ten records a second apart in each partition, from an hour ago.
    let t0 = (chrono::Utc::now().timestamp_millis() - H).div_euclid(1000) * 1000;
    let p = producer();
    for part in 0..2 {
        for i in 0..10 {
            produce(&p, &input, part, t0 + i * 1000, Some(b"k"), Some(b"{}"));
        }
    }
    flush(&p);
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    // No run ever: the group has no offsets, nothing internal exists.
    let plan = ok(weir(&["reset", topo, "--state-dir", state, "--dry-run"]));
    assert!(plan.contains(&format!("  {input} 0: none -> 0")), "{plan}");
    assert!(plan.contains("(none exist)"), "{plan}");
    assert_eq!(committed_offsets(&id, &input, 2), [-1, -1]);

    // The first record at or after t0 + 4.5 s: the fifth (offset 5).
    ok(weir(&[
        "reset",
        topo,
        "--state-dir",
        state,
        "--to-datetime",
        &at(t0 + 4500),
    ]));
    assert_eq!(committed_offsets(&id, &input, 2), [5, 5]);
    // The same instant in another zone.
    let seoul = chrono::DateTime::from_timestamp_millis(t0 + 2000)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
        .to_rfc3339();
    let plan = ok(weir(&["reset", topo, "--state-dir", state, "--to-datetime", &seoul]));
    assert!(plan.contains(&format!("  {input} 1: 5 -> 2")), "{plan}");
    assert_eq!(committed_offsets(&id, &input, 2), [2, 2]);
    // After the last record: the end.
    ok(weir(&[
        "reset",
        topo,
        "--state-dir",
        state,
        "--to-datetime",
        &at(t0 + 60_000),
    ]));
    assert_eq!(committed_offsets(&id, &input, 2), [10, 10]);
    ok(weir(&["reset", topo, "--state-dir", state, "--to-earliest"]));
    assert_eq!(committed_offsets(&id, &input, 2), [0, 0]);
    ok(weir(&["reset", topo, "--state-dir", state, "--to-latest"]));
    assert_eq!(committed_offsets(&id, &input, 2), [10, 10]);
    delete_topics(&[&input, &output]);
}
