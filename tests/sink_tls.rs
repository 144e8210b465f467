//! `weir sink` to Postgres over TLS, as the URL's `sslmode` says, against
//! `./dev up`'s server (started with `ssl = on` and a certificate from the
//! throwaway CA of `.cache/kafka/tls`): `verify-full` loads the rows over
//! an encrypted connection (the server says so in `pg_stat_ssl`); a CA that
//! did not sign the server's certificate, and a wrong password over TLS,
//! stop the sink at once naming the problem. (`sslmode=require` against a
//! server without TLS: tests/sink_faults.rs.)

mod common;
mod sink_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sink_common::*;

fn ca(name: &str) -> String {
    let dir: PathBuf = std::env::var("WEIR_TLS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| common::checkout().join(".cache/kafka/tls"));
    let path = dir.join(name);
    assert!(path.exists(), "{} missing (`./dev up` makes it)", path.display());
    path.display().to_string()
}

/// `pg_url()` with `password` and TLS options.
fn url_with(password: &str, options: &str) -> String {
    let url = pg_url();
    let (_, rest) = url.split_once('@').unwrap();
    format!("postgres://weir:{password}@{rest}?{options}")
}

fn sink_config(id: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("{id}_hourly");
    common::create_topic(&topic, 1);
    let cfg = write_config(
        dir.path(),
        id,
        &format!("{id}_dlq"),
        "",
        &[hourly_table_yaml(&topic, id, "")],
    );
    (dir, cfg, topic)
}

#[test]
fn the_sink_loads_over_tls_with_verify_full() {
    let id = unique_ident("sink_tls");
    let (_dir, cfg, topic) = sink_config(&id);
    let ws = windows(3, 2, 0);
    produce_windows(&topic, 1, &ws);
    let url = url_with("weir", &format!("sslmode=verify-full&sslrootcert={}", ca("ca.pem")));
    let sink = start_sink_with_url(&cfg, &[], &url);
    let mut pg = Pg::connect();
    wait_rows(&mut pg, &id, &expected_rows(&ws), Duration::from_secs(60));
    // The sink's own session is encrypted.
    let tls = pg.count(&format!(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'weir-sink-{id}' AND ssl"
    ));
    assert!(tls >= 1, "no TLS session of weir-sink-{id} in pg_stat_ssl");
    sink.assert_running();
    sink.terminate();
}

/// `weir sink` with `url` must exit within 30 s with `want` in its log
/// (and never the password).
fn refused(cfg: &std::path::Path, url: &str, want: &[&str]) {
    let sink = start_sink_with_url(cfg, &[], url);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = sink.exited() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: still running (retrying?):\n{}",
            sink.tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    sink.unwatch();
    let text = sink.log_text();
    assert!(!status.success(), "{url}: {status}\n{text}");
    for w in want {
        assert!(text.contains(w), "{url}: {w:?} not in the log:\n{text}");
    }
    assert!(!text.contains("Wr0ngPw"), "the password is in the log:\n{text}");
}

#[test]
fn an_untrusted_server_certificate_or_a_wrong_password_stops_the_sink_at_once() {
    let id = unique_ident("sink_tls_bad");
    let (_dir, cfg, _topic) = sink_config(&id);
    refused(
        &cfg,
        &url_with(
            "weir",
            &format!("sslmode=verify-full&sslrootcert={}", ca("other-ca.pem")),
        ),
        &["refuses the connection", "TLS", "certificate verify failed"],
    );
    refused(
        &cfg,
        &url_with("Wr0ngPw", &format!("sslmode=verify-full&sslrootcert={}", ca("ca.pem"))),
        &["refuses the connection", "wrong password"],
    );
    refused(
        &cfg,
        &url_with("weir", "sslmode=verify-full&sslrootcert=/no/such/ca.pem"),
        &["sslrootcert=/no/such/ca.pem"],
    );
    refused(
        &cfg,
        &url_with("weir", "sslmode=verify_full"),
        &["sslmode=verify_full is not one of"],
    );
}
