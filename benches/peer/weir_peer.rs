//! weir's side of the Kafka Streams peer comparison (`benches/peer/run.sh`):
//! the parking job end to end through both sub-topologies — decode, filter,
//! map, lot table and repartition in sub-topology 0, then every repartition
//! record straight into sub-topology 1's window — on the same records as
//! `benches/engine.rs`, timed as a whole.
//!
//! Usage (run.sh runs the built binary directly, one mode per process, so
//! peak RSS is per mode):
//!
//! ```text
//! weir_peer [MODE] [RECORDS] [RUNS] [WARMUPS] [WARMUP_RECORDS]
//! ```
//!
//! Modes (the store flush is weir's commit: cache → backend, changelog
//! entries returned):
//! - `mem-commit-each`: in-memory stores, both tasks flushed after every
//!   record, as `weir test` does and as Kafka Streams' TopologyTestDriver
//!   commits (the like-for-like mode for the driver's numbers).
//! - `mem-commit-end`: in-memory stores, flushed once at the end (the cache
//!   absorbs repeated updates, as a long commit interval does; what
//!   `benches/engine.rs` measures).
//! - `rocks-commit-each`: RocksDB stores (weir's `TaskDb`, one database per
//!   task under `$WEIR_PEER_STATE_ROOT` or the temp dir), flushed after
//!   every record: one write batch per store per record.
//!
//! Output: a `weir-check ...` line (what was emitted, for comparing with
//! Kafka Streams) and a `weir mode=... records_per_sec=... peak_rss_mb=...`
//! line (median of the runs; peak RSS is the process's VmHWM).

use std::time::Instant;

use weir::TaskDb;
use weir::Topology;
use weir::{Origin, Output, OutputKind, Task};

#[path = "../common/mod.rs"]
mod common;
use common::{parking_topology, records, status_origin};

const HOURLY: &str = "parking_hourly_avg";
const LOT: &str = "parking_lot_status";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    MemEach,
    MemEnd,
    RocksEach,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "mem-commit-each" => Mode::MemEach,
            "mem-commit-end" => Mode::MemEnd,
            "rocks-commit-each" => Mode::RocksEach,
            other => panic!("mode: mem-commit-each | mem-commit-end | rocks-commit-each, not {other}"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mode::MemEach => "mem-commit-each",
            Mode::MemEnd => "mem-commit-end",
            Mode::RocksEach => "rocks-commit-each",
        }
    }
}

#[derive(Default)]
struct Counts {
    hourly: u64,
    lot: u64,
    dlq: u64,
    other: u64,
    repartition: u64,
    changelog: u64,
    stale: u64,
    hourly_samples: u64,
    hourly_avg_sum: f64,
}

impl Counts {
    fn result(&mut self, o: &Output) {
        match o.kind {
            OutputKind::DeadLetter => self.dlq += 1,
            OutputKind::Repartition => self.repartition += 1,
            OutputKind::Result if o.topic == LOT => self.lot += 1,
            OutputKind::Result if o.topic == HOURLY => {
                self.hourly += 1;
                let v: serde_json::Value =
                    serde_json::from_slice(o.value.as_deref().unwrap_or(b"null")).unwrap_or_default();
                self.hourly_samples += v["samples"].as_u64().unwrap_or(0);
                self.hourly_avg_sum += v["avg_available_spots"].as_f64().unwrap_or(0.0);
            }
            OutputKind::Result => self.other += 1,
        }
    }
}

/// Keeps the RocksDB databases (and their directory) alive for one run.
struct Stores {
    _dir: Option<tempfile::TempDir>,
    task0: Task,
    task1: Task,
}

fn open(topo: &Topology, mode: Mode) -> Stores {
    if mode != Mode::RocksEach {
        return Stores {
            _dir: None,
            task0: Task::in_memory(topo, 0, 0),
            task1: Task::in_memory(topo, 1, 0),
        };
    }
    let root = std::env::var_os("WEIR_PEER_STATE_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("weir-peer-")
        .tempdir_in(root)
        .expect("state dir");
    let mut tasks = (0..2).map(|sub| {
        let names: Vec<String> = topo.stores_of(sub).map(|(_, s)| s.name.clone()).collect();
        let db = TaskDb::open(&dir.path().join(format!("{sub}_0")), &names).expect("rocksdb");
        Task::new(topo, sub, 0, |i| Ok(Box::new(db.store(&topo.stores[i].name)))).expect("task")
    });
    let task0 = tasks.next().expect("task 0");
    let task1 = tasks.next().expect("task 1");
    Stores {
        _dir: Some(dir),
        task0,
        task1,
    }
}

fn run(topo: &Topology, recs: &[(Vec<u8>, Vec<u8>)], n: usize, mode: Mode) -> (f64, Counts) {
    let Stores {
        _dir,
        mut task0,
        mut task1,
    } = open(topo, mode);
    let each = mode != Mode::MemEnd;
    let mut c = Counts::default();
    let mut out0: Vec<Output> = Vec::with_capacity(16);
    let mut out1: Vec<Output> = Vec::with_capacity(16);
    let mut offset1 = 0i64;
    let t0 = Instant::now();
    for i in 0..n {
        let origin = status_origin(recs, i);
        task0
            .process(topo, &origin, origin.timestamp, &mut out0)
            .expect("process 0");
        if each {
            task0.emit_cached(topo, &mut out0).expect("emit 0");
            c.changelog += task0
                .flush()
                .expect("flush 0")
                .iter()
                .map(|(_, ch)| ch.len() as u64)
                .sum::<u64>();
        }
        for o in out0.drain(..) {
            c.result(&o);
            if o.kind != OutputKind::Repartition {
                continue;
            }
            // Sub-topology 1 reads the repartition topic (one partition, as
            // the driver's single task does).
            let origin = Origin {
                topic: &o.topic,
                partition: 0,
                offset: offset1,
                timestamp: o.timestamp,
                key: o.key.as_deref(),
                value: o.value.as_deref(),
            };
            offset1 += 1;
            task1
                .process(topo, &origin, origin.timestamp, &mut out1)
                .expect("process 1");
            if each {
                c.changelog += task1
                    .flush()
                    .expect("flush 1")
                    .iter()
                    .map(|(_, ch)| ch.len() as u64)
                    .sum::<u64>();
            }
            for o in out1.drain(..) {
                c.result(&o);
            }
        }
    }
    // What the lot table held back (`emit: on_commit`) at the last commit.
    task0.emit_cached(topo, &mut out0).expect("emit 0");
    for o in out0.drain(..) {
        c.result(&o);
    }
    c.changelog += task0
        .flush()
        .expect("flush 0")
        .iter()
        .map(|(_, ch)| ch.len() as u64)
        .sum::<u64>();
    c.changelog += task1
        .flush()
        .expect("flush 1")
        .iter()
        .map(|(_, ch)| ch.len() as u64)
        .sum::<u64>();
    let secs = t0.elapsed().as_secs_f64();
    c.stale = task0.stats.dropped_stale + task1.stats.dropped_stale;
    (secs, c)
}

fn proc_status_mb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb >> 10)
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, d: usize| args.get(i).map(|s| s.parse::<usize>().expect("number")).unwrap_or(d);
    let mode = Mode::parse(args.first().map(String::as_str).unwrap_or("mem-commit-each"));
    let n = arg(1, 100_000);
    let runs = arg(2, 5).max(1);
    let warmups = arg(3, 3);
    let warm_n = arg(4, 20_000);

    let topo = parking_topology();
    let recs = records();
    let poll_bytes: usize = recs.iter().map(|(k, v)| k.len() + v.len()).sum();

    for _ in 0..warmups {
        run(&topo, &recs, warm_n, mode);
    }
    let mut rates = Vec::with_capacity(runs);
    let mut last = Counts::default();
    for _ in 0..runs {
        let (secs, c) = run(&topo, &recs, n, mode);
        rates.push(n as f64 / secs);
        last = c;
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let median = if runs % 2 == 1 {
        rates[runs / 2]
    } else {
        (rates[runs / 2 - 1] + rates[runs / 2]) / 2.0
    };
    let c = last;
    println!(
        "weir-check mode={} records={n} poll_records={} poll_bytes={poll_bytes} hourly={} lot={} dlq={} \
         stale={} other={} hourly_samples={} hourly_avg_sum={:.4} repartition={} changelog={}",
        mode.name(),
        recs.len(),
        c.hourly,
        c.lot,
        c.dlq,
        c.stale,
        c.other,
        c.hourly_samples,
        c.hourly_avg_sum,
        c.repartition,
        c.changelog
    );
    println!(
        "weir mode={} records={n} runs={runs} records_per_sec={median:.0} min={:.0} max={:.0} peak_rss_mb={} rss_mb={}",
        mode.name(),
        rates[0],
        rates[runs - 1],
        proc_status_mb("VmHWM:"),
        proc_status_mb("VmRSS:")
    );
}
