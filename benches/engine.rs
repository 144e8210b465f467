//! Engine hot path on one core: decode JSON → filter → map → repartition
//! key → window update (and the lot table), on real records from the
//! captured Seoul poll, through the same `Task` code `weir run` uses, with
//! in-memory stores (RocksDB and Kafka are outside this measurement).
//!
//! `whole_job` runs every sub-topology, with and without the parking
//! job's hotspot join and table aggregation.
//!
//! Run: `cargo bench --profile dev --bench engine`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir::Topology;
use weir::{GlobalTables, Origin, Output, Task};

#[path = "common/mod.rs"]
mod common;
use common::{parking_topology, parking_yaml, records, status_origin, FREE_NOW_STEP};

/// Feed `n` records of the captured poll (cycled, one second apart) to a
/// sub-topology 0 task; `keep` keeps the outputs, else they are dropped after
/// each record.
fn feed_status(
    topo: &Topology,
    task: &mut Task,
    recs: &[(Vec<u8>, Vec<u8>)],
    n: usize,
    out: &mut Vec<Output>,
    keep: bool,
) {
    for i in 0..n {
        let origin = status_origin(recs, i);
        task.process(topo, &origin, origin.timestamp, out).expect("process");
        if !keep {
            out.clear();
        }
    }
}

fn bench(c: &mut Criterion) {
    let topo = parking_topology();
    let recs = records();
    let n = 20_000usize;
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(n as u64));
    group.measurement_time(Duration::from_secs(10));

    // Sub-topology 0: decode, filter, map, repartition key, lot table.
    group.bench_function("parse_filter_map_table", |b| {
        b.iter(|| {
            let mut task = Task::in_memory(&topo, 0, 0);
            let mut out = Vec::with_capacity(64);
            feed_status(&topo, &mut task, &recs, n, &mut out, false);
            task.emit_cached(&topo, &mut out).expect("emit");
            task.flush().expect("flush");
        })
    });

    // The "pure engine path" in one task: decode → filter → map →
    // window update. The parking steps with the window grouped by the record
    // key (hourly per lot, so no repartition) and without the lot table.
    let text = parking_yaml();
    let text = text[..text.find("  - name: latest-per-lot").expect("table step")].replace(
        "        region_code: value.REGION_CODE\n        region: value.REGION\n",
        "        lot: key\n",
    );
    let single = Topology::parse(&text.replace("value.region_code + \"@\" + value.window_start", "value.lot"))
        .expect("single-task topology");
    assert_eq!(single.subtopology_count(), 1, "grouped by the key: no repartition");
    group.bench_function("parse_filter_map_window", |b| {
        b.iter(|| {
            let mut task = Task::in_memory(&single, 0, 0);
            feed_status(&single, &mut task, &recs, n, &mut Vec::with_capacity(64), false);
            task.flush().expect("flush");
        })
    });

    // Sub-topology 1: the repartitioned records into the hourly window.
    let mut repart = Vec::new();
    feed_status(&topo, &mut Task::in_memory(&topo, 0, 0), &recs, n, &mut repart, true);
    let repart: Vec<_> = repart
        .into_iter()
        .filter(|o| o.topic.ends_with("-repartition"))
        .collect();
    let rtopic = repart[0].topic.clone();
    group.throughput(Throughput::Elements(repart.len() as u64));
    group.bench_function("window_update", |b| {
        b.iter(|| {
            let mut task = Task::in_memory(&topo, 1, 0);
            let mut out = Vec::with_capacity(64);
            for (i, o) in repart.iter().enumerate() {
                let origin = Origin {
                    topic: &rtopic,
                    partition: 0,
                    offset: i as i64,
                    timestamp: o.timestamp,
                    key: o.key.as_deref(),
                    value: o.value.as_deref(),
                };
                task.process(&topo, &origin, origin.timestamp, &mut out)
                    .expect("process");
                out.clear();
            }
            task.flush().expect("flush");
        })
    });
    group.finish();
    whole_job(c, &recs);
}

/// Every record through the whole job (every sub-topology, repartition
/// records handed to the task reading them), committing every
/// `COMMIT_EVERY` records, three ways in one run: the job the peers run
/// (hourly averages and the lot table), with the hotspot join (its global
/// table loaded with data/seoul_hotspots.json), and the shipped job, which
/// adds `free-now-by-region` (a table_aggregate over the joined lot table,
/// grouped by the district the join adds). Their ratios are the join's and
/// then the table aggregation's cost per input record.
fn whole_job(c: &mut Criterion, recs: &[(Vec<u8>, Vec<u8>)]) {
    const COMMIT_EVERY: usize = 1000;
    let n = 20_000usize;
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml")).unwrap();
    let free_now_at = shipped
        .find(FREE_NOW_STEP)
        .expect("free-now-by-region in topology/parking.yaml");
    let parse = |text: &str| Topology::parse(text).expect("topology");
    let jobs = [
        ("peers_job", parking_topology()),
        ("with_join", parse(&shipped[..free_now_at])),
        ("shipped_join_and_free_now", parse(&shipped)),
        (
            "shipped_not_queryable",
            parse(&shipped.replace("      queryable: true\n", "")),
        ),
    ];
    let hotspots: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/seoul_hotspots.json")).unwrap(),
    )
    .unwrap();
    let mut group = c.benchmark_group("whole_job");
    group.throughput(Throughput::Elements(n as u64));
    group.measurement_time(Duration::from_secs(10));
    for (name, topo) in &jobs {
        // The hotspot table, as `weir run` holds it once loaded.
        let globals = Arc::new(GlobalTables::new(topo.global_tables.len()));
        if !topo.global_tables.is_empty() {
            for h in &hotspots {
                let code = h["code"].as_str().unwrap();
                globals
                    .apply(0, code.as_bytes(), Some(h.to_string().as_bytes()))
                    .unwrap();
            }
        }
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut tasks: Vec<Task> = (0..topo.subtopology_count())
                    .map(|s| {
                        let mut t = Task::in_memory(topo, s, 0);
                        t.set_global_tables(globals.clone());
                        t
                    })
                    .collect();
                let mut out = Vec::with_capacity(64);
                let mut next = Vec::with_capacity(64);
                for i in 0..n {
                    let origin = status_origin(recs, i);
                    tasks[0]
                        .process(topo, &origin, origin.timestamp, &mut out)
                        .expect("process");
                    if i % COMMIT_EVERY == COMMIT_EVERY - 1 {
                        for t in tasks.iter_mut() {
                            t.emit_cached(topo, &mut out).expect("emit");
                        }
                    }
                    for o in out.drain(..) {
                        if let Some((sub, _)) = topo.source_for(&o.topic) {
                            let origin = Origin {
                                topic: &o.topic,
                                partition: 0,
                                offset: i as i64,
                                timestamp: o.timestamp,
                                key: o.key.as_deref(),
                                value: o.value.as_deref(),
                            };
                            tasks[sub]
                                .process(topo, &origin, origin.timestamp, &mut next)
                                .expect("process");
                        }
                    }
                    next.clear();
                }
                for t in tasks.iter_mut() {
                    t.flush().expect("flush");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
