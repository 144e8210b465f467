//! Helpers for the `weir sink` integration tests (real Kafka and Postgres
//! from `./dev up`): sink configs in a temp dir, the sink as a child
//! process, window records, and Postgres queries.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::json;

use crate::common;

mod dev_postgres;
mod fixture;
#[allow(unused_imports)] // for the tests that restart Postgres
pub use dev_postgres::{DevPostgres, Restart};
#[allow(unused_imports)] // for the tests of the hourly table
pub use fixture::{free_now_table_yaml, hourly_table_yaml};

pub fn pg_url() -> String {
    std::env::var("WEIR_PG_URL").unwrap_or_else(|_| "postgres://weir:weir@127.0.0.1:5433/weir".to_string())
}

/// WEIR_PG_URL (`postgres://user:pw@host:port/db`) as its part before the
/// `@`, its `host:port` and its database.
fn pg_url_parts() -> (String, String, String) {
    let url = pg_url();
    let (head, tail) = url
        .split_once('@')
        .unwrap_or_else(|| panic!("WEIR_PG_URL {url}: postgres://user:password@host:port/db"));
    let (addr, db) = tail.split_once('/').unwrap_or((tail, ""));
    (head.to_string(), addr.to_string(), db.to_string())
}

/// The address of the Postgres server WEIR_PG_URL names.
pub fn pg_server_addr() -> std::net::SocketAddr {
    let (_, addr, _) = pg_url_parts();
    std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("WEIR_PG_URL: no address {addr}"))
}

/// WEIR_PG_URL with its server at `addr` instead (a proxy before it).
pub fn pg_url_via(addr: std::net::SocketAddr) -> String {
    let (head, _, db) = pg_url_parts();
    format!("{head}@{addr}/{db}")
}

/// A lower-case name usable as a schema, topic and sink name.
pub fn unique_ident(prefix: &str) -> String {
    common::unique(prefix).replace('-', "_")
}

/// A blocking Postgres client for assertions.
pub struct Pg {
    rt: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
}

impl Pg {
    pub fn connect() -> Pg {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // host:port of postgres://user:password@host:port/db
        let url = pg_url();
        let addr = url
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default();
        common::require_service("PostgreSQL", addr);
        let mut pg = Pg { rt, client: None };
        pg.reconnect();
        pg
    }

    fn reconnect(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self
                .rt
                .block_on(tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls))
            {
                Ok((client, conn)) => {
                    self.rt.spawn(async move {
                        let _ = conn.await;
                    });
                    self.client = Some(client);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("test: Postgres not reachable yet ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("cannot connect to Postgres at {}: {e}", pg_url()),
            }
        }
    }

    /// Run a query, reconnecting once if the connection was lost.
    pub fn query(&mut self, sql: &str) -> Vec<tokio_postgres::Row> {
        for attempt in 0..20 {
            let client = self.client.as_ref().unwrap();
            match self.rt.block_on(client.query(sql, &[])) {
                Ok(rows) => return rows,
                Err(e)
                    if attempt < 19
                        && e.as_db_error()
                            .is_none_or(|d| matches!(&d.code().code()[..2], "57" | "08")) =>
                {
                    std::thread::sleep(Duration::from_millis(300));
                    self.reconnect();
                }
                Err(e) => panic!("query failed: {sql}: {e:?}"),
            }
        }
        unreachable!()
    }

    pub fn exec(&mut self, sql: &str) {
        let client = self.client.as_ref().unwrap();
        self.rt
            .block_on(client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub fn count(&mut self, sql: &str) -> i64 {
        self.query(sql)[0].get(0)
    }

    /// `next_offset` per partition stored for `sink` and `topic`.
    /// Empty until the sink has created its offsets table (a fresh cluster
    /// has none before the first sink starts).
    pub fn offsets(&mut self, sink: &str, topic: &str) -> BTreeMap<i32, (i64, Option<String>)> {
        if self.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'weir' AND tablename = 'weir_sink_offsets'")
            == 0
        {
            return BTreeMap::new();
        }
        self.query(&format!(
            "SELECT partition, next_offset, owner FROM weir.weir_sink_offsets WHERE sink_name = '{sink}' AND topic = '{topic}'"
        ))
        .iter()
        .map(|r| (r.get::<_, i32>(0), (r.get::<_, i64>(1), r.get::<_, Option<String>>(2))))
        .collect()
    }
}

/// End offset of every partition of `topic`.
pub fn end_offsets(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| (p, c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1))
        .collect()
}

/// Wait until the sink has stored the end offset of every partition.
pub fn wait_caught_up(pg: &mut Pg, sink: &str, topic: &str, partitions: i32, timeout: Duration) {
    let want = end_offsets(topic, partitions);
    let deadline = Instant::now() + timeout;
    loop {
        let got = pg.offsets(sink, topic);
        if want
            .iter()
            .all(|(p, end)| *end == 0 || got.get(p).map(|(o, _)| *o) == Some(*end))
        {
            return;
        }
        common::check_alive();
        assert!(
            Instant::now() < deadline,
            "sink {sink} did not reach {want:?} on {topic} in {timeout:?}; stored {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `weir sink <config> <extra>` as a [`common::WeirProc`] (watched, SIGKILLed
/// when dropped) with `WEIR_PG_URL` set, its log next to `config`.
pub fn start_sink(config: &Path, extra: &[&str]) -> common::WeirProc {
    start_sink_with_url(config, extra, &pg_url())
}

/// [`start_sink`] reaching Postgres at `url` (through a proxy, over TLS,
/// with wrong credentials).
pub fn start_sink_with_url(config: &Path, extra: &[&str], url: &str) -> common::WeirProc {
    let log = config.with_extension(format!("{}.log", common::unique("run")));
    let mut args = vec![std::ffi::OsStr::new("sink"), config.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    common::WeirProc::spawn_env(&args, &log, &[("WEIR_PG_URL", url)])
}

/// An insert-mode table with one row per record (by its `seq` field):
/// a duplicate or a gap in delivery shows up as a wrong row count.
pub fn log_table_yaml(topic: &str, schema: &str, batch: &str) -> String {
    format!(
        r#"  - topic: {topic}
    table: {schema}.record_log
    mode: insert
    auto_create: true
    id_column: id
{batch}    columns:
      seq:         {{ field: seq, type: bigint, not_null: true }}
      region_code: {{ field: region_code, type: text, not_null: true }}
      samples:     {{ field: samples, type: bigint }}
"#
    )
}

pub fn write_config(dir: &Path, name: &str, dlq: &str, extra_top: &str, tables: &[String]) -> PathBuf {
    let text = format!(
        "name: {name}\ndead_letter: {dlq}\n{extra_top}tables:\n{}",
        tables.concat()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One `parking_hourly_avg` record as the engine writes it.
#[derive(Debug, Clone)]
pub struct Window {
    pub region: String,
    pub region_code: String,
    /// Hours after 2025-03-31T00:00+09:00.
    pub hour: i64,
    pub avg: f64,
    pub samples: i64,
    pub seq: i64,
}

impl Window {
    pub fn start(&self) -> DateTime<FixedOffset> {
        let base = DateTime::parse_from_rfc3339("2025-03-31T00:00:00+09:00").unwrap();
        base + chrono::Duration::hours(self.hour)
    }

    pub fn key(&self) -> String {
        format!("{}@{}", self.region_code, self.start().to_rfc3339())
    }

    pub fn json(&self) -> String {
        let start = self.start();
        json!({
            "region": self.region,
            "region_code": self.region_code,
            "window_start": start.to_rfc3339(),
            "window_end": (start + chrono::Duration::hours(1)).to_rfc3339(),
            "avg_available_spots": self.avg,
            "samples": self.samples,
            "seq": self.seq,
        })
        .to_string()
    }

    /// The KST wall clock the `hour` column must hold.
    pub fn kst_hour(&self) -> NaiveDateTime {
        self.start().naive_local()
    }
}

pub const REGIONS: &[(&str, &str)] = &[
    ("POI001", "강남 MICE 관광특구"),
    ("POI003", "명동 관광특구"),
    ("POI007", "홍대 관광특구"),
    ("POI009", "잠실 관광특구"),
    ("POI013", "광화문·덕수궁"),
    ("POI014", "보신각"),
    ("POI033", "여의도"),
    ("POI049", "서울역"),
];

/// `updates` emits per window for `regions × hours` windows, interleaved
/// (window-major order would hide ordering bugs), with `seq` 0.. in
/// production order. The last emit of a window has `samples == updates`.
pub fn windows(hours: i64, updates: i64, seq0: i64) -> Vec<Window> {
    let mut out = Vec::new();
    let mut seq = seq0;
    for u in 1..=updates {
        for h in 0..hours {
            for (i, (code, name)) in REGIONS.iter().enumerate() {
                out.push(Window {
                    region: name.to_string(),
                    region_code: code.to_string(),
                    hour: h,
                    avg: ((i as i64 * 31 + h * 7 + u * 13) % 400) as f64 / 4.0,
                    samples: u,
                    seq,
                });
                seq += 1;
            }
        }
    }
    out
}

/// The table the sink must leave: the last emit per (region_code, hour).
pub fn expected_rows(ws: &[Window]) -> BTreeMap<(String, NaiveDateTime), (String, f64, i64)> {
    let mut m = BTreeMap::new();
    for w in ws {
        m.insert(
            (w.region_code.clone(), w.kst_hour()),
            (w.region.clone(), w.avg, w.samples),
        );
    }
    m
}

pub fn table_rows(pg: &mut Pg, schema: &str) -> BTreeMap<(String, NaiveDateTime), (String, f64, i64)> {
    let rows = pg.query(&format!(
        "SELECT region_code::text, hour, region::text, avg_available_spots, samples FROM {schema}.parking_hourly_avg"
    ));
    let mut m = BTreeMap::new();
    for r in rows {
        let prev = m.insert((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4)));
        assert!(
            prev.is_none(),
            "duplicate row for ({}, {})",
            r.get::<_, String>(0),
            r.get::<_, NaiveDateTime>(1)
        );
    }
    m
}

/// Produce windows keyed like the engine, partitioned by the key.
pub fn produce_windows(topic: &str, partitions: i32, ws: &[Window]) {
    let p = common::producer();
    let now = chrono::Utc::now().timestamp_millis();
    for w in ws {
        let key = w.key();
        let part = weir::partition_for(Some(key.as_bytes()), partitions, 0);
        common::produce(&p, topic, part, now, Some(key.as_bytes()), Some(w.json().as_bytes()));
    }
    common::flush(&p);
}

/// The rows the sink must leave: the expectation keyed like the table
/// ((region_code, KST wall clock of the hour)).
pub fn engine_rows(
    want: &BTreeMap<(String, i64), (String, f64, u64)>,
) -> BTreeMap<(String, NaiveDateTime), (String, f64, i64)> {
    want.iter()
        .map(|((code, start), (region, sum, n))| {
            let kst = chrono::DateTime::from_timestamp_millis(*start).unwrap().naive_utc() + chrono::Duration::hours(9);
            ((code.clone(), kst), (region.clone(), sum / *n as f64, *n as i64))
        })
        .collect()
}

pub fn compare_rows(
    got: &BTreeMap<(String, NaiveDateTime), (String, f64, i64)>,
    want: &BTreeMap<(String, NaiveDateTime), (String, f64, i64)>,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} rows, want {}", got.len(), want.len()));
    }
    for (k, (region, avg, n)) in want {
        let Some((g_region, g_avg, g_n)) = got.get(k) else {
            return Err(format!("no row for {k:?}"));
        };
        if g_region != region || g_n != n || (g_avg - avg).abs() >= 1e-6 {
            return Err(format!(
                "row {k:?}: got ({g_region}, avg {g_avg}, samples {g_n}), want ({region}, avg {avg}, samples {n})"
            ));
        }
    }
    Ok(())
}

/// Wait until the hourly table in `schema` equals `want` (see
/// `compare_rows`), or panic with the difference after `timeout`.
pub fn wait_rows(
    pg: &mut Pg,
    schema: &str,
    want: &BTreeMap<(String, NaiveDateTime), (String, f64, i64)>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = if pg.count(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'parking_hourly_avg'"
        )) == 0
        {
            BTreeMap::new()
        } else {
            table_rows(pg, schema)
        };
        common::check_alive();
        match compare_rows(&got, want) {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("the Postgres table differs from the expectation: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}
