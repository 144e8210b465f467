//! The state directory's filesystem fills up under a running `weir run`
//! (exactly_once), against the real broker: its state dir is a small tmpfs
//! of its own, filled to the last byte by a filler file while records flow;
//! a second instance is then killed, so the first must create the
//! databases of the tasks it takes over on the full disk; then the disk is
//! freed. The results must be exact (computed here from the input
//! topic read back, never from the engine), the instance must say what
//! happened (`/healthz`, `weir_state_errors_total`) and heal by itself,
//! without a restart. Needs root (mount).

mod common;
mod engine_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::metrics::{get, metric};
use common::tmpfs::Tmpfs;
use common::*;
use engine_common::*;
use serde_json::Value;

/// Size of the state tmpfs: the parking job's state of one instance
/// (3 + 3 task databases, each with RocksDB's preallocated MANIFEST, 4 MiB,
/// and WAL, 4.4 MiB) takes ~53 MiB of it.
const STATE_MIB: u64 = 128;

fn assert_each_window_once(results: &[Rec]) {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in results {
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let k = (
            v["region_code"].as_str().unwrap().to_string(),
            v["window_start"].as_str().unwrap().to_string(),
        );
        *seen.entry(k).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "windows emitted more than once: {twice:?}");
}

#[test]
fn a_full_state_disk_loses_nothing_and_heals_without_a_restart() {
    let began = Instant::now();
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("WEIR_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("test: keeping {}", dir.path().display());
    }
    let id = unique("it-disk-full");
    let (topo, [status, dlq, hourly, lots]) = topology_eos(dir.path(), &id);
    create_topic(&status, 3);
    // Declared before the process: dropped (unmounted) after it is killed.
    let fs = Tmpfs::mount(&dir.path().join("state"), STATE_MIB);
    // `weir run` on a state directory, its metrics on a free port.
    let spawn_run = |state: &std::path::Path, log: &str| {
        let addr = format!("127.0.0.1:{}", free_port());
        let args = [
            std::ffi::OsStr::new("run"),
            topo.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--session-timeout".as_ref(),
            "6s".as_ref(),
            "--metrics-addr".as_ref(),
            addr.as_ref(),
        ];
        (WeirProc::spawn(&args, &dir.path().join(log)), addr)
    };
    let (run, addr) = spawn_run(fs.path(), "run.log");
    // A second instance, its state on the ordinary disk: killed while the
    // tmpfs is full, its tasks move to the first, which must create their
    // databases there. A fresh database needs new space (its MANIFEST,
    // WAL, OPTIONS), so the fault bites for certain; a reopen of tasks it
    // held before may not, as closing them gives back the WAL space
    // RocksDB preallocated, and the same process takes it again at once.
    let (other, _) = spawn_run(&dir.path().join("state-other"), "run-other.log");
    let sim = simulate(16_000, 43, dir.path());
    let total = sim.len();
    wait_group_stable(&id, 2, &[], Duration::from_secs(120));
    // ~40 s of feed: 160 slices 250 ms apart.
    let feeder = {
        let (topic, size) = (status.clone(), total.div_ceil(160));
        std::thread::spawn(move || {
            for slice in sim.chunks(size) {
                produce_inputs(&topic, slice);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(8));
    let (used, size) = fs.usage();
    eprintln!("test: state tmpfs before the fault: {used} of {size} bytes used");
    // Full, and kept full (whatever RocksDB gives back is taken), while
    // records flow.
    let mut filler = fs.fill();
    eprintln!(
        "test: filled the state filesystem ({} filler bytes) after {:?}",
        filler.bytes,
        began.elapsed()
    );
    let mut unhealthy: Option<String> = None;
    // Watches for `d`, or until the full disk was both reported unhealthy
    // and counted, then `after` more (the instance keeps retrying on a
    // disk still full); returns whether it was.
    let mut watch = |filler: &mut common::tmpfs::Filler, d: Duration, after: Duration| {
        let mut until = Instant::now() + d;
        let mut noticed = false;
        while Instant::now() < until {
            check_alive();
            filler.top_up();
            if let Some((code, body)) = get(&addr, "/healthz") {
                if code != 200 && unhealthy.is_none() {
                    eprintln!("test: /healthz {code} while full: {}", body.trim());
                    unhealthy = Some(body);
                }
            }
            let counted = get(&addr, "/metrics")
                .and_then(|(_, b)| metric(&b, "weir_state_errors_total", "kind=\"disk_full\""))
                .is_some_and(|n| n > 0.0);
            if !noticed && unhealthy.is_some() && counted {
                noticed = true;
                until = until.min(Instant::now() + after);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        noticed
    };
    watch(&mut filler, Duration::from_secs(2), Duration::ZERO);
    other.kill();
    eprintln!("test: SIGKILLed the other instance after {:?}", began.elapsed());
    let noticed = watch(&mut filler, Duration::from_secs(45), Duration::from_secs(6));
    eprintln!("test: full disk noticed: {noticed}, after {:?}", began.elapsed());
    let during = get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    filler.free();
    eprintln!("test: freed the state filesystem after {:?}", began.elapsed());
    feeder.join().unwrap();

    // Healthy again by itself (the same process: it is watched).
    wait_for("/healthz 200 after the disk was freed", Duration::from_secs(90), || {
        check_alive();
        get(&addr, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    let inputs = read_inputs(&status, total);
    let want = expected(&inputs);
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    assert_each_window_once(&results);
    check_results(&results, &want);

    let errors = metric(&during, "weir_state_errors_total", "kind=\"disk_full\"").unwrap_or(0.0);
    let log = run.log_text();
    eprintln!(
        "test: weir_state_errors_total{{kind=\"disk_full\"}} {errors}; log lines naming ENOSPC: {}",
        log.lines().filter(|l| l.contains("ENOSPC")).count()
    );
    assert!(
        errors > 0.0,
        "the full disk was never noticed (no weir_state_errors_total)"
    );
    let reason = unhealthy.expect("/healthz stayed 200 while the state disk was full");
    assert!(reason.contains("No space left") || reason.contains("full"), "{reason}");
    assert!(
        log.lines()
            .any(|l| l.contains("ENOSPC") && l.contains(&fs.path().display().to_string())),
        "no log line naming the path and the errno"
    );
    let now = get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    assert!(
        metric(&now, "weir_commit_latency_seconds_count", "").unwrap_or(0.0) > 0.0,
        "no commit since"
    );
    run.terminate();
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
    eprintln!("test: done in {:?}", began.elapsed());
}
