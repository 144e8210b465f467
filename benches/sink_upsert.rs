//! Postgres upsert throughput of the sink's writer: 1M `parking_hourly_avg`
//! window records (generated here, not read from Kafka) mapped and written
//! in batches, each batch one transaction with its offsets row (INSERT …
//! SELECT FROM unnest(arrays) … ON CONFLICT), as new rows and again as
//! updates of existing rows. The table is the shipped
//! `topology/parking-sink.yaml`'s. (A binary COPY into a temporary table,
//! then INSERT … SELECT … ON CONFLICT, measured no faster and was
//! removed; see docs/sink.md, Performance.)
//! Baseline: one `INSERT … ON CONFLICT` per row in autocommit (what a
//! row-at-a-time JDBC sink does), measured on fewer rows.
//!
//! Needs the Postgres of `./dev up` (or WEIR_PG_URL).
//! Run: `cargo bench --profile dev --bench sink_upsert`
//! Knobs: SINK_BENCH_ROWS (1000000), SINK_BENCH_BATCH (5000),
//! SINK_BENCH_BASELINE_ROWS (20000).
#![cfg_attr(test, allow(dead_code))]

use std::time::{Duration, Instant};

use weir::{OffsetUpdate, SinkConfig, SqlValue as Value, TableRows, Writer};

#[path = "../tests/sink_common/fixture.rs"]
mod fixture;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Window record `i` (1000 regions × hours), as the engine writes it.
fn record(i: usize, version: usize) -> String {
    let region = i % 1000;
    let hour = i / 1000;
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00+09:00").unwrap()
        + chrono::Duration::hours(hour as i64);
    let end = start + chrono::Duration::hours(1);
    serde_json::json!({
        "region": format!("지역 {region}"),
        "region_code": format!("POI{region:04}"),
        "window_start": start.to_rfc3339(),
        "window_end": end.to_rfc3339(),
        "avg_available_spots": ((i * 7 + version * 13) % 500) as f64 / 4.0,
        "samples": (version + 1) as i64,
    })
    .to_string()
}

struct Result {
    label: String,
    rows: usize,
    took: Duration,
}

impl Result {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.took.as_secs_f64()
    }
}

async fn write_all(
    writer: &mut Writer,
    rows: &[Vec<Value>],
    batch: usize,
    offset: &mut i64,
    sink_topic: &str,
) -> Duration {
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let refs: Vec<&[Value]> = chunk.iter().map(Vec::as_slice).collect();
        let next = *offset + chunk.len() as i64;
        let expected = (*offset > 0).then_some(*offset);
        let off = [OffsetUpdate {
            topic: sink_topic.to_string(),
            partition: 0,
            expected,
            next,
        }];
        writer
            .write_batch(
                &[TableRows {
                    table: 0,
                    rows: refs,
                    deletes: Vec::new(),
                }],
                &off,
            )
            .await
            .expect("write_batch");
        *offset = next;
    }
    started.elapsed()
}

async fn reset(admin: &tokio_postgres::Client, schema: &str, name: &str) {
    admin
        .batch_execute(&format!(
            "TRUNCATE {schema}.parking_hourly_avg; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{name}'"
        ))
        .await
        .expect("truncate");
}

async fn run() {
    let url = std::env::var("WEIR_PG_URL").unwrap_or_else(|_| weir::DEFAULT_POSTGRES_URL.to_string());
    let n = env_usize("SINK_BENCH_ROWS", 1_000_000);
    let batch = env_usize("SINK_BENCH_BATCH", 5000);
    let n_base = env_usize("SINK_BENCH_BASELINE_ROWS", 20_000);
    let schema = format!("bench_sink_{}", std::process::id());
    let name = format!("bench-{}", std::process::id());
    let text = format!(
        "name: {name}\ndead_letter: unused\ntables:\n{}",
        fixture::hourly_table_yaml("parking_hourly_avg", &schema, "")
    );
    let cfg = SinkConfig::parse(&text).expect("bench config");
    let mut writer = Writer::start(&url, &cfg, "bench")
        .await
        .expect("connect to Postgres (./dev up)");
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);

    println!(
        "sink_upsert: {n} window records, batches of {batch}, Postgres {}",
        url.rsplit('@').next().unwrap_or("")
    );
    // Mapping (JSON text → typed row) is measured apart from the writes.
    let t = Instant::now();
    let payloads: Vec<String> = (0..n).map(|i| record(i, 0)).collect();
    let gen = t.elapsed();
    let t = Instant::now();
    let mapping = writer.mapping(0).clone();
    let rows: Vec<Vec<Value>> = payloads
        .iter()
        .map(|p| mapping.map_payload(Some(p.as_bytes())).expect("map"))
        .collect();
    let mapped = Result {
        label: "map JSON → row (CPU only)".into(),
        rows: n,
        took: t.elapsed(),
    };
    drop(payloads);
    let updates: Vec<Vec<Value>> = (0..n)
        .map(|i| mapping.map_payload(Some(record(i, 1).as_bytes())).expect("map"))
        .collect();
    eprintln!("generated in {gen:?}");

    let mut results = vec![mapped];
    {
        let label = "multi_row (unnest)";
        reset(&admin, &schema, &name).await;
        let mut offset = 0;
        let took = write_all(&mut writer, &rows, batch, &mut offset, "t").await;
        results.push(Result {
            label: format!("{label}: insert new rows"),
            rows: n,
            took,
        });
        let took = write_all(&mut writer, &updates, batch, &mut offset, "t").await;
        results.push(Result {
            label: format!("{label}: update existing"),
            rows: n,
            took,
        });
        let count: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM {schema}.parking_hourly_avg WHERE samples = 2"),
                &[],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(count as usize, n, "every row updated once");
    }

    // Baseline: one statement per row, each its own transaction.
    reset(&admin, &schema, &name).await;
    let t = Instant::now();
    for row in rows.iter().take(n_base) {
        writer.write_row_autocommit(0, row).await.expect("row");
    }
    let base = Result {
        label: "baseline: 1 upsert per row, autocommit".into(),
        rows: n_base.min(n),
        took: t.elapsed(),
    };
    let base_rate = base.rate();

    println!();
    println!(
        "| {:<42} | {:>9} | {:>8} | {:>10} | {:>9} |",
        "case", "rows", "seconds", "rows/s", "× base"
    );
    println!("|{:-<44}|{:->11}|{:->10}|{:->12}|{:->11}|", "", "", "", "", "");
    for r in results.iter().chain(std::iter::once(&base)) {
        println!(
            "| {:<42} | {:>9} | {:>8.2} | {:>10.0} | {:>9.1} |",
            r.label,
            r.rows,
            r.took.as_secs_f64(),
            r.rate(),
            r.rate() / base_rate
        );
    }
    let best = results[1..].iter().map(Result::rate).fold(f64::INFINITY, f64::min);
    println!();
    println!(
        "slowest batched case: {best:.0} rows/s = {:.1}× the row-at-a-time baseline (targets: ≥ 50000 rows/s, ≥ 20×)",
        best / base_rate
    );

    admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{name}'"
        ))
        .await
        .expect("cleanup");
}

pub fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}
