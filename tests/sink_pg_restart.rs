//! `weir sink` while Postgres is stopped for ~10 s in the middle of a run:
//! the sink retries with backoff (counted in `weir_sink_retries_total`),
//! keeps running, resumes by itself and leaves a complete table with every
//! record applied once.
//!
//! Stops and starts the `./dev up` cluster the way `./dev` does
//! (`pg_ctl` as the `postgres` user); a guard restarts it even if the test
//! fails. In its own test binary so no other sink test runs meanwhile, and
//! its tests take turns ([`ONE_AT_A_TIME`]): a Postgres stopped by one would
//! break the other's connection.
//!
//! And the sink's connection dropped silently by the network (through the
//! chaos campaign's proxy): noticed and replaced within seconds.

mod common;
#[path = "chaos/proxy.rs"]
mod proxy;
mod sink_common;

use std::time::{Duration, Instant};

use sink_common::*;

const T: Duration = Duration::from_secs(120);

/// Stopping Postgres drops every connection: the tests of this binary run
/// one at a time (a stranded connection cannot be found once the other
/// test's restart has closed it).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scrape(port: u16) -> String {
    common::metrics::scrape(&format!("127.0.0.1:{port}")).expect("the sink's /metrics answers")
}

fn metric(text: &str, name: &str) -> f64 {
    common::metrics::metric(text, name, "").unwrap_or(0.0)
}

/// A 3-partition topic loaded into the hourly and the record-log tables in
/// small, quick batches: (sink name, topic, dead-letter topic, config).
fn hourly_and_log_sink(dir: &std::path::Path, prefix: &str) -> (String, String, String, std::path::PathBuf) {
    let id = unique_ident(prefix);
    let topic = format!("{id}_hourly");
    let dlq = format!("{id}_dlq");
    common::create_topic(&topic, 3);
    let cfg = write_config(
        dir,
        &id,
        &dlq,
        "batch_size: 500\nlinger: 50ms\n",
        &[hourly_table_yaml(&topic, &id, ""), log_table_yaml(&topic, &id, "")],
    );
    (id, topic, dlq, cfg)
}

/// The hourly table holds the last value of every window of `all`, and the
/// record log every record exactly once.
fn assert_loaded_once(pg: &mut Pg, id: &str, all: &[Window]) {
    assert_eq!(table_rows(pg, id), expected_rows(all));
    let r = &pg.query(&format!("SELECT count(*), count(DISTINCT seq) FROM {id}.record_log"))[0];
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1)),
        (all.len() as i64, all.len() as i64),
        "every record exactly once"
    );
}

#[test]
fn postgres_down_for_10s_then_the_sink_recovers_and_loads_everything() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pg_server = DevPostgres::find();
    assert!(pg_server.running(), "Postgres from ./dev up must be running");
    let dir = tempfile::tempdir().unwrap();
    let (id, topic, dlq, cfg) = hourly_and_log_sink(dir.path(), "sink_pgdown");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let sink = start_sink(&cfg, &["--metrics-addr", &addr]);
    let mut pg = Pg::connect();

    let wave1 = windows(20, 10, 0);
    produce_windows(&topic, 3, &wave1);
    wait_caught_up(&mut pg, &id, &topic, 3, T);

    let wave2 = windows(20, 10, wave1.len() as i64).into_iter().map(|mut w| {
        w.samples += 10;
        w
    });
    let wave2: Vec<Window> = wave2.collect();
    {
        let _restart = Restart(&pg_server);
        pg_server.stop();
        let down_at = Instant::now();
        // Records keep arriving while the database is away.
        produce_windows(&topic, 3, &wave2);
        while down_at.elapsed() < Duration::from_secs(10) {
            sink.assert_running();
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(
            metric(&scrape(port), "weir_sink_retries_total") > 0.0,
            "retries must be counted while Postgres is down"
        );
    }
    assert!(pg_server.running());
    sink.assert_running();
    wait_caught_up(&mut pg, &id, &topic, 3, T);

    let all: Vec<Window> = wave1.iter().chain(&wave2).cloned().collect();
    assert_loaded_once(&mut pg, &id, &all);

    let m = scrape(port);
    assert!(metric(&m, "weir_sink_rows_upserted_total") >= all.len() as f64, "{m}");
    assert!(m.contains("weir_sink_batch_duration_seconds_bucket"), "{m}");
    assert!(sink.log_text().contains("retrying"));
    sink.terminate();
    pg.exec(&format!(
        "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
    ));
    common::delete_topics(&[&topic, &dlq]);
}

/// The sink's Postgres connection cut silently for good (as by a NAT or a
/// load balancer that forgot it: no RST, no FIN) between two waves of
/// records: the sink notices within its TCP limits (unacknowledged data
/// 20 s, keepalive), connects again and loads the second wave, every record
/// once. Without those limits it waited for the kernel's ~15 minutes of
/// retransmissions (the chaos campaign's `PostgresStranded`).
#[test]
fn a_silently_dropped_postgres_connection_is_noticed_and_replaced() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (id, topic, dlq, cfg) = hourly_and_log_sink(dir.path(), "sink_strand");
    // The sink reaches Postgres through the proxy; the test directly.
    let proxy = proxy::Proxy::start("127.0.0.1:0".parse().unwrap(), pg_server_addr()).unwrap();
    let through = pg_url_via(proxy.addr());
    let port = common::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let sink = start_sink_with_url(&cfg, &["--metrics-addr", &metrics], &through);
    let mut pg = Pg::connect();
    let wave1 = windows(20, 10, 0);
    produce_windows(&topic, 3, &wave1);
    wait_caught_up(&mut pg, &id, &topic, 3, T);

    let stranded = proxy.strand_all();
    assert!(stranded >= 1, "the sink holds a connection");
    let cut = Instant::now();
    let wave2: Vec<Window> = windows(20, 10, wave1.len() as i64)
        .into_iter()
        .map(|mut w| {
            w.samples += 10;
            w
        })
        .collect();
    produce_windows(&topic, 3, &wave2);
    // Well under the kernel's retransmission limit (~15 min), over the
    // sink's own (20 s unacknowledged) plus a reconnect.
    wait_caught_up(&mut pg, &id, &topic, 3, Duration::from_secs(90));
    eprintln!("caught up {:.1?} after the connection was cut", cut.elapsed());
    sink.assert_running();
    assert!(proxy.open() >= 1, "a new connection through the proxy");

    let all: Vec<Window> = wave1.iter().chain(&wave2).cloned().collect();
    assert_loaded_once(&mut pg, &id, &all);
    assert!(
        metric(&scrape(port), "weir_sink_retries_total") > 0.0,
        "the failed write is counted as a retry"
    );
    sink.terminate();
    pg.exec(&format!(
        "DROP SCHEMA {id} CASCADE; DELETE FROM weir.weir_sink_offsets WHERE sink_name = '{id}'"
    ));
    common::delete_topics(&[&topic, &dlq]);
}
