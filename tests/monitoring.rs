//! Monitoring, end to end on the real broker, Postgres and Prometheus:
//! `/metrics` parses and its key series hold the right values after a run,
//! `/healthz` and `/readyz` answer with the state (ready only after the
//! restore), every PromQL query of the operations dashboard returns data
//! from a real Prometheus scraping the run, every SQL query of the parking
//! dashboard returns rows from the sink's tables, and its all-regions line
//! is the sample-weighted average. The dashboards' static checks (panel
//! ids, datasource uids, documented metric names) need no service.
//!
//! Prometheus: the `prometheus` binary (Debian package; `./dev test`
//! installs it and sets `WEIR_REQUIRE_PROMETHEUS=1`, which makes its
//! absence a failure; elsewhere that part is skipped with a message).

mod common;
mod engine_common;
mod sink_common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use engine_common::*;
use serde_json::Value;
use sink_common::{start_sink, unique_ident, Pg};

// ---------------------------------------------------------------------------
// HTTP and the Prometheus text format
// ---------------------------------------------------------------------------

/// GET over HTTP/1.1: (status, body); `None` if nothing listens yet.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn get_ok(addr: &str, path: &str) -> String {
    match get(addr, path) {
        Some((200, body)) => body,
        other => panic!("GET {addr}{path}: {other:?}"),
    }
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse Prometheus text format 0.0.4 strictly: every line is a comment, a
/// `# TYPE`/`# HELP`, or `name{labels} value`, and every sample's family
/// has a `# TYPE`.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line: {line}"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in: {line}"));
                (name.to_string(), parse_labels(body, line))
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name);
        assert!(types.contains_key(family), "no # TYPE for {name}: {line}");
        out.push(Sample { name, labels, value });
    }
    out
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (k, v) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in: {line}"));
        let mut value = String::new();
        let mut chars = v.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in: {line}"),
            }
        };
        labels.insert(k.trim_start_matches(',').to_string(), value);
        rest = v[end + 1..].trim_start_matches(',');
    }
    labels
}

/// Sum of the samples named `name` whose labels satisfy `pick`.
fn sum(samples: &[Sample], name: &str, pick: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && pick(&s.labels))
        .map(|s| s.value)
        .sum()
}

fn metrics(addr: &str) -> Vec<Sample> {
    parse_metrics(&get_ok(addr, "/metrics"))
}

/// Series documented in docs/metrics.md under `## <section>`: name →
/// labels.
fn documented_labels(section: &str) -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(checkout().join("docs/metrics.md")).unwrap();
    let start = doc
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("docs/metrics.md has no section {section}"));
    let body = &doc[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    body.lines()
        .filter(|l| l.starts_with("| `weir_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let labels = cells[3]
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            (name, labels)
        })
        .collect()
}

/// Series names documented in docs/metrics.md under `## <section>`.
fn documented(section: &str) -> Vec<String> {
    documented_labels(section).into_keys().collect()
}

/// Every series documented for `section` is served (a histogram by its
/// `_bucket` series).
fn assert_documented_series_exported(section: &str, samples: &[Sample], allowed_missing: &[&str]) {
    let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let documented = documented(section);
    assert!(
        documented.len() >= 5,
        "docs/metrics.md lists too few series for {section}"
    );
    for name in documented {
        if allowed_missing.contains(&name.as_str()) {
            continue;
        }
        assert!(
            names.contains(name.as_str()) || names.contains(format!("{name}_bucket").as_str()),
            "{name} is documented for {section} but not served; served: {names:?}"
        );
    }
    // And with the documented labels.
    for (name, labels) in documented_labels(section) {
        for s in samples
            .iter()
            .filter(|s| s.name == name || s.name == format!("{name}_bucket"))
        {
            let served: BTreeSet<String> = s.labels.keys().filter(|k| *k != "le").cloned().collect();
            assert_eq!(served, labels, "labels of {} (docs/metrics.md)", s.name);
        }
    }
    // Every weir_ series served is documented.
    let documented: BTreeSet<String> = documented_labels(section).into_keys().collect();
    for s in samples.iter().filter(|s| s.name.starts_with("weir_")) {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|x| s.name.strip_suffix(x).filter(|b| documented.contains(*b)))
            .unwrap_or(&s.name);
        assert!(
            documented.contains(base),
            "{} is served but not in docs/metrics.md",
            s.name
        );
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// `weir run` with its log in a file (for the readiness check).
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn start(topo: &Path, state: &Path, metrics: &str, log: PathBuf) -> Run {
        Run::start_with(topo, state, metrics, log, &[])
    }

    fn start_with(topo: &Path, state: &Path, metrics: &str, log: PathBuf, extra: &[&str]) -> Run {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(weir_bin())
            .args(["run", topo.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
            .args(["--metrics-addr", metrics, "--repartition-purge-interval", "500ms"])
            .args(extra)
            .env("WEIR_BOOTSTRAP", bootstrap())
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn weir run");
        Run { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "weir run exited with {status}; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- log of weir run ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A real Prometheus scraping the given jobs every second, on a free port,
/// with its data in `dir`. `None` when the binary is not installed (a
/// failure under `WEIR_REQUIRE_PROMETHEUS=1`).
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

fn prometheus_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_PROMETHEUS_BIN") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

fn require_prometheus() -> bool {
    std::env::var("WEIR_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1")
}

impl Prometheus {
    fn start(dir: &Path, jobs: &[(&str, &str)]) -> Option<Prometheus> {
        let Some(bin) = prometheus_bin() else {
            assert!(
                !require_prometheus(),
                "WEIR_REQUIRE_PROMETHEUS=1 but no prometheus binary (apt-get install prometheus)"
            );
            eprintln!("SKIPPED: the PromQL part of this test needs the prometheus binary (apt-get install prometheus)");
            return None;
        };
        let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
        for (job, target) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus { child, addr, log };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            matches!(get(&p.addr, "/-/ready"), Some((200, _)))
        });
        Some(p)
    }

    /// Instant query: the result vector (or scalar) as JSON.
    fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = get(&self.addr, &path).expect("Prometheus answers");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(status, 200, "query {promql}: {body}");
        assert_eq!(v["status"], "success", "query {promql}: {body}");
        match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "---- prometheus log (last 3000 chars) ----\n{}",
                &log[log.len().saturating_sub(3000)..]
            );
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------

fn dashboard(file: &str) -> Value {
    let path = checkout().join("ops/grafana/dashboards").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

/// (panel title, query text) of every target, under `field` (`expr` or
/// `rawSql`).
fn queries<'a>(d: &'a Value, field: &str) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(q) = t[field].as_str() {
                out.push((p["title"].as_str().unwrap_or(""), q));
            }
        }
    }
    out
}

fn provisioned_datasources() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(checkout().join("ops/grafana/provisioning/datasources/weir.yaml")).unwrap();
    // uid → type, from the `- name:` blocks (a small YAML subset).
    let mut out = BTreeMap::new();
    let mut uid = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("- name:") {
            uid = None;
        }
        if let Some(u) = l.strip_prefix("uid:") {
            uid = Some(u.trim().to_string());
        }
        if let (Some(t), Some(u)) = (l.strip_prefix("type:"), &uid) {
            out.insert(u.clone(), t.trim().to_string());
        }
    }
    out
}

/// The operations dashboard's PromQL with its variables substituted.
fn substitute_promql(expr: &str, topology: &str, sink: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$topology", topology)
        .replace("$instance", ".*")
        .replace("$sink_instance", ".*")
        .replace("$sink", sink)
}

#[test]
fn dashboards_reference_provisioned_datasources_and_documented_metrics() {
    let sources = provisioned_datasources();
    assert_eq!(
        sources.get("weir-prometheus").map(String::as_str),
        Some("prometheus"),
        "{sources:?}"
    );
    assert_eq!(
        sources.get("weir-postgres").map(String::as_str),
        Some("grafana-postgresql-datasource"),
        "{sources:?}"
    );
    let mut documented_names = documented("weir run");
    documented_names.extend(documented("weir sink"));
    for (file, uid, title) in [
        ("weir-operations.json", "weir-operations", "weir — operations"),
        ("seoul-parking.json", "weir-seoul-parking", "Seoul parking"),
    ] {
        let d = dashboard(file);
        assert_eq!(d["uid"], uid, "{file}: stable uid");
        assert_eq!(d["title"], title);
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let id = p["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{file}: panel without id: {p}"));
            assert!(ids.insert(id), "{file}: duplicate panel id {id}");
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: {} has no targets", p["title"]));
            assert!(!targets.is_empty(), "{file}: {} has no query", p["title"]);
            for ds in std::iter::once(&p["datasource"]).chain(targets.iter().map(|t| &t["datasource"])) {
                let uid = ds["uid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: {}: no datasource uid", p["title"]));
                assert_eq!(
                    sources.get(uid),
                    ds["type"].as_str().map(str::to_string).as_ref(),
                    "{file}: {}: datasource {ds} is not provisioned",
                    p["title"]
                );
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if let Some(uid) = v["datasource"]["uid"].as_str() {
                assert!(
                    sources.contains_key(uid),
                    "{file}: variable {}: datasource {uid}",
                    v["name"]
                );
            }
        }
    }
    // The operations dashboard queries only series that exist (the docs
    // list them; the run test checks the docs against /metrics).
    let ops = dashboard("weir-operations.json");
    let exprs = queries(&ops, "expr");
    assert!(exprs.len() >= 20, "operations dashboard: {} queries", exprs.len());
    for (title, expr) in exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("weir_") {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .filter(|b| documented_names.iter().any(|n| n == b))
                .unwrap_or(word);
            assert!(
                documented_names.iter().any(|n| n == base),
                "panel {title}: {word} is not in docs/metrics.md"
            );
        }
    }
}

#[test]
fn shipped_prometheus_configs_are_valid() {
    let promtool = prometheus_bin()
        .map(|p| p.with_file_name("promtool"))
        .filter(|p| p.is_file());
    let Some(promtool) = promtool else {
        assert!(!require_prometheus(), "WEIR_REQUIRE_PROMETHEUS=1 but no promtool");
        eprintln!("SKIPPED: promtool not installed");
        return;
    };
    for file in ["prometheus.yml", "prometheus-compose.yml"] {
        let path = checkout().join("ops/prometheus").join(file);
        let out = Command::new(&promtool)
            .args(["check", "config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check config {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for job in ["job_name: weir-run", "job_name: weir-sink"] {
            assert!(text.contains(job), "{file}: the dashboards select {job}");
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "integration"),
    ignore = "needs the broker and PostgreSQL of ./dev up (--features integration)"
)]
fn sink_is_not_ready_while_postgres_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_ident("it_mon_sink_down");
    let config = sink_common::write_config(
        dir.path(),
        &name,
        &format!("{name}_dlq"),
        "",
        &[sink_common::hourly_table_yaml(&format!("{name}_in"), &name, "")],
    );
    create_topic(&format!("{name}_in"), 1);
    let addr = format!("127.0.0.1:{}", free_port());
    // Nothing listens on this port: every connection attempt fails.
    let dead_pg = format!("postgres://weir:weir@127.0.0.1:{}/weir", free_port());
    let sink = start_sink(&config, &["--metrics-addr", &addr, "--postgres", &dead_pg]);
    let mut last = None;
    wait_for(
        "the sink to report Postgres unreachable",
        Duration::from_secs(60),
        || {
            sink.assert_running();
            last = get(&addr, "/readyz");
            matches!(&last, Some((503, body)) if body.contains("Postgres"))
        },
    );
    assert_eq!(get(&addr, "/healthz").map(|r| r.0), Some(200), "alive while retrying");
    wait_for("retries to be counted", Duration::from_secs(30), || {
        sum(&metrics(&addr), "weir_sink_retries_total", |l| l["sink"] == name) > 0.0
    });
    assert_eq!(get(&addr, "/nothing-here").map(|r| r.0), Some(404));
    sink.kill();
    delete_topics(&[&format!("{name}_in"), &format!("{name}_dlq")]);
}

/// The shipped sink file, reading this test's topics into `schema`.
fn sink_config(dir: &Path, name: &str, [hourly, lots, free_now]: [&str; 3], schema: &str) -> PathBuf {
    let text = std::fs::read_to_string(checkout().join("topology/parking-sink.yaml"))
        .unwrap()
        .replace("name: parking\n", &format!("name: {name}\n"))
        .replace("parking_sink_dlq", &format!("{name}_dlq"))
        .replace("topic: parking_hourly_avg", &format!("topic: {hourly}"))
        .replace("topic: parking_lot_status", &format!("topic: {lots}"))
        .replace("topic: parking_free_now", &format!("topic: {free_now}"))
        .replace("table: parking.", &format!("table: {schema}."));
    assert!(text.contains(&format!("table: {schema}.parking_hourly_avg")), "{text}");
    let path = dir.join("sink.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Substitute the parking dashboard's variables the way Grafana does for
/// Postgres (multi-value: quoted, comma-separated) and point it at `schema`.
fn substitute_sql(sql: &str, schema: &str, vars: &[(&str, String)]) -> String {
    let mut out = sql.replace("parking.", &format!("{schema}."));
    // $__timeFilter(expr) → expr BETWEEN from AND to (a range covering everything).
    while let Some(i) = out.find("$__timeFilter(") {
        let open = i + "$__timeFilter(".len();
        let mut depth = 1;
        let mut close = open;
        for (j, c) in out[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                close = open + j;
                break;
            }
        }
        let expr = out[open..close].to_string();
        out.replace_range(
            i..=close,
            &format!("{expr} BETWEEN '1970-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'"),
        );
    }
    // Longest names first ($lot before $l…).
    let mut vars: Vec<&(&str, String)> = vars.iter().collect();
    vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    for (name, value) in vars {
        out = out.replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "unsubstituted variable in: {out}");
    out
}

fn quoted(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The run: simulated feed → weir run → weir sink, a real Prometheus
/// scraping both; then the checks on /metrics, health, the dashboards'
/// queries; then a restart with the state directory lost: not ready until
/// every store is restored.
#[test]
#[cfg_attr(
    not(feature = "integration"),
    ignore = "needs the broker and PostgreSQL of ./dev up (--features integration)"
)]
fn metrics_health_and_dashboards_on_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-mon");
    let (topo, [status, dlq, hourly, lots]) = topology(dir.path(), &id);
    create_topic(&status, 3);
    let inputs = simulate(3000, 5, dir.path());
    let want = expected(&inputs);
    let sentinel_count = sentinels(&inputs).len();
    let schema = unique_ident("it_mon");
    let sink_name = schema.clone();
    let free_now = free_now_topic(&id);
    let sink_cfg = sink_config(dir.path(), &sink_name, [&hourly, &lots, &free_now], &schema);
    let run_addr = format!("127.0.0.1:{}", free_port());
    let sink_addr = format!("127.0.0.1:{}", free_port());
    let prometheus = Prometheus::start(dir.path(), &[("weir-run", &run_addr), ("weir-sink", &sink_addr)]);
    let state = dir.path().join("state");

    produce_inputs(&status, &inputs);
    let query_addr = format!("127.0.0.1:{}", free_port());
    let run = Run::start_with(
        &topo,
        &state,
        &run_addr,
        dir.path().join("run1.log"),
        &["--query-addr", &query_addr],
    );
    let sink = start_sink(&sink_cfg, &["--metrics-addr", &sink_addr]);
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    check_results(&results, &want);

    // --- /metrics of weir run: parses, and the key series are right.
    let sent = (inputs.len() + sentinel_count) as f64;
    let is_source_task = |l: &BTreeMap<String, String>| l["topology"] == id && l["task"].starts_with("0_");
    let mut m = Vec::new();
    wait_for("weir run to count every record sent", Duration::from_secs(60), || {
        m = metrics(&run_addr);
        sum(&m, "weir_records_consumed_total", is_source_task) >= sent
    });
    // An aborted transaction (rare) replays records: they count again. The
    // exact checks hold for a run without one.
    let exact = sum(&m, "weir_transaction_aborts_total", |_| true) == 0.0;
    if exact {
        assert_eq!(sum(&m, "weir_records_consumed_total", is_source_task), sent);
    }
    let dead_letters = consume_until(&dlq, Duration::from_secs(30), Duration::from_secs(1), |r| !r.is_empty());
    assert!(!dead_letters.is_empty(), "the simulator sends some malformed records");
    wait_for(
        "the dead-letter counter to match the topic",
        Duration::from_secs(30),
        || {
            m = metrics(&run_addr);
            let counted = sum(&m, "weir_dead_letter_records_total", |l| l["topology"] == id);
            match exact {
                true => counted == dead_letters.len() as f64,
                false => counted >= dead_letters.len() as f64,
            }
        },
    );
    assert!(
        sum(&m, "weir_records_processed_total", is_source_task) >= sent - dead_letters.len() as f64,
        "records processed"
    );
    // One interactive query, so its series exist (tests/queries.rs tests
    // the queries themselves).
    assert_eq!(get(&query_addr, "/v1/stores").map(|r| r.0), Some(200));
    // Lag back to 0 on every consumed partition: 3 of the input and 3 of
    // each repartition topic (hourly-by-region's and free-now-by-region's).
    wait_for("consumer lag to return to 0", Duration::from_secs(60), || {
        m = metrics(&run_addr);
        let lag: Vec<&Sample> = m.iter().filter(|s| s.name == "weir_consumer_lag").collect();
        let secs: Vec<&Sample> = m.iter().filter(|s| s.name == "weir_consumer_lag_seconds").collect();
        lag.len() == 9 && secs.len() == 9 && lag.iter().chain(&secs).all(|s| s.value == 0.0)
    });
    let lot_keys = sum(&m, "weir_store_estimated_keys", |l| l["store"] == "latest-per-lot");
    let lot_codes: BTreeSet<String> = inputs.iter().filter_map(|i| i.key.clone()).collect();
    // RocksDB's estimate counts every version of a key still in a memtable
    // (a lot rewritten at each of several commits counts several times:
    // 1,151 for 501 lots once on a loaded machine), never more than the
    // records the table took (a size in bytes would exceed that).
    assert!(
        lot_keys >= 1.0 && lot_keys <= (inputs.len() + sentinel_count) as f64,
        "estimated lot keys {lot_keys} for {} lots, {} records",
        lot_codes.len(),
        inputs.len()
    );
    assert!(sum(&m, "weir_store_memtable_bytes", |_| true) > 0.0);
    assert_eq!(sum(&m, "weir_tasks_restoring", |_| true), 0.0);
    assert_eq!(
        sum(&m, "weir_tasks_running", |_| true),
        9.0,
        "3 sub-topologies x 3 partitions"
    );
    assert!(sum(&m, "weir_commit_latency_seconds_count", |_| true) > 0.0);
    assert_eq!(
        sum(&m, "weir_queries_total", |l| l["route"] == "stores"
            && l["status"] == "200"),
        1.0
    );
    // Histograms: cumulative buckets ending in +Inf = _count.
    let inf = sum(&m, "weir_process_latency_seconds_bucket", |l| l["le"] == "+Inf");
    assert_eq!(inf, sum(&m, "weir_process_latency_seconds_count", |_| true));
    assert!(inf >= sent, "every record's process latency is recorded");
    // The parking job has no global table (tests/global_join.rs has).
    assert_documented_series_exported(
        "weir run",
        &m,
        &["weir_global_table_rows", "weir_global_table_invalid_records_total"],
    );
    assert_eq!(get(&run_addr, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(get(&run_addr, "/readyz"), Some((200, "ready\n".to_string())));
    assert_eq!(get(&run_addr, "/").map(|r| r.0), Some(404));

    // --- the sink: rows in Postgres, its metrics, ready.
    let total_samples: u64 = want.values().map(|(_, _, n)| n).sum();
    let mut pg = Pg::connect();
    wait_for("the sink to load every hourly result", Duration::from_secs(60), || {
        sink.assert_running();
        pg.count(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'parking_hourly_avg'"
        )) == 1
            && pg.count(&format!(
                "SELECT coalesce(sum(samples), 0)::bigint FROM {schema}.parking_hourly_avg"
            )) == total_samples as i64
    });
    // The dashboard's "free spots now" rows: what the lots' latest statuses
    // add up to per region.
    let want_free = expected_free_now(&expected_lots_with_sentinels(&inputs));
    wait_for(
        "the sink to load the free spots per region",
        Duration::from_secs(60),
        || {
            sink.assert_running();
            let rows: FreeNow = pg
                .query(&format!(
                    "SELECT region_code, region, district, available_spots, realtime_lots::bigint FROM {schema}.parking_free_now"
                ))
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
                .collect();
            rows == want_free
        },
    );
    let sm = metrics(&sink_addr);
    let hourly_rows = sum(&sm, "weir_sink_rows_upserted_total", |l| {
        l["sink"] == sink_name && l["table"] == format!("{schema}.parking_hourly_avg")
    });
    assert!(hourly_rows >= want.len() as f64, "rows upserted {hourly_rows}");
    // Deletes: only when a region's last real-time lot leaves (none here).
    assert_documented_series_exported("weir sink", &sm, &["weir_sink_rows_deleted_total"]);
    assert_eq!(get(&sink_addr, "/readyz"), Some((200, "ready\n".to_string())));

    // --- every PromQL of the operations dashboard returns data.
    if let Some(prom) = &prometheus {
        let ops = dashboard("weir-operations.json");
        for v in ops["templating"]["list"].as_array().unwrap() {
            let q = v["query"].as_str().unwrap();
            let series = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(s, _)| substitute_promql(s, &id, &sink_name))
                .unwrap();
            wait_for(
                &format!("variable {}: {series}", v["name"]),
                Duration::from_secs(60),
                || !prom.query(&series).is_empty(),
            );
        }
        for (title, expr) in queries(&ops, "expr") {
            let q = substitute_promql(expr, &id, &sink_name);
            let deadline = Instant::now() + Duration::from_secs(60);
            while prom.query(&q).is_empty() {
                assert!(Instant::now() < deadline, "panel {title}: no data for {q}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        // The scrape saw what /metrics says.
        let q = format!("sum(weir_records_consumed_total{{topology=\"{id}\",task=~\"0_.*\"}})");
        let r = prom.query(&q);
        let scraped: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(
            if exact { scraped == sent } else { scraped >= sent },
            "{q}: {scraped}, sent {sent}"
        );
    }

    // --- every SQL of the parking dashboard returns rows.
    let parking = dashboard("seoul-parking.json");
    let var_sql = |name: &str| -> String {
        parking["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["query"].as_str())
            .unwrap()
            .to_string()
    };
    let values = |pg: &mut Pg, sql: &str| -> Vec<String> {
        pg.query(sql)
            .iter()
            .map(|r| r.get::<_, Option<String>>("__value").unwrap_or_default())
            .collect()
    };
    let regions = values(&mut pg, &substitute_sql(&var_sql("region"), &schema, &[]));
    assert!(regions.len() >= 5, "regions: {regions:?}");
    let region_var = ("region", quoted(&regions));
    let lots_all = values(
        &mut pg,
        &substitute_sql(&var_sql("lot"), &schema, std::slice::from_ref(&region_var)),
    );
    assert!(lots_all.len() >= 20, "lots: {}", lots_all.len());
    let vars = [
        region_var,
        ("lot", quoted(&lots_all)),
        ("stale_minutes", "60".to_string()),
    ];
    for (title, sql) in queries(&parking, "rawSql") {
        let sql = substitute_sql(sql, &schema, &vars);
        let rows = pg.query(&sql);
        assert!(!rows.is_empty(), "panel {title}: no rows from {sql}");
    }
    // The district panel: the regions' free spots now summed per district
    // (each region's district read from data/seoul_hotspots.json by the
    // expectation, `(unknown)` for the hotspot the test's table leaves out).
    let (_, district_sql) = queries(&parking, "rawSql")
        .into_iter()
        .find(|(t, _)| t.contains("by district"))
        .expect("a district panel");
    let got: BTreeMap<String, i64> = pg
        .query(&substitute_sql(district_sql, &schema, &vars))
        .iter()
        .map(|r| (r.get("district"), r.get("free spots")))
        .collect();
    let mut by_district: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (code, (_, district, spots, lots)) in &want_free {
        if regions.contains(code) {
            let e = by_district
                .entry(district.clone().unwrap_or_else(|| "(unknown)".into()))
                .or_default();
            e.0 += spots;
            e.1 += lots;
        }
    }
    let want_districts: BTreeMap<String, i64> = by_district
        .into_iter()
        .map(|(d, (spots, lots))| (format!("{d} ({lots} lots)"), spots))
        .collect();
    assert!(
        want_districts.len() >= 3 && want_districts.keys().any(|d| d.starts_with("(unknown)")),
        "{want_districts:?}"
    );
    assert_eq!(got, want_districts, "free spots now by district");
    // The all-regions line is the sample-weighted average of the regions.
    let (_, all_sql) = queries(&parking, "rawSql")
        .into_iter()
        .find(|(t, _)| t.contains("all regions"))
        .expect("an all-regions panel");
    let rows = pg.query(&substitute_sql(all_sql, &schema, &vars));
    let mut by_hour: BTreeMap<i64, (f64, u64, f64, u64)> = BTreeMap::new();
    for ((_, hour), (_, total, n)) in &want {
        let e = by_hour.entry(*hour).or_default();
        e.0 += total;
        e.1 += n;
        e.2 += total / *n as f64;
        e.3 += 1;
    }
    assert_eq!(rows.len(), by_hour.len(), "one point per hour");
    let mut weighting_matters = false;
    for r in &rows {
        let t: chrono::DateTime<chrono::Utc> = r.get("time");
        let got: f64 = r.get("all regions");
        let (total, n, sum_of_avgs, regions) = by_hour[&t.timestamp_millis()];
        let want_avg = total / n as f64;
        assert!((got - want_avg).abs() < 1e-9, "hour {t}: got {got}, want {want_avg}");
        weighting_matters |= (sum_of_avgs / regions as f64 - want_avg).abs() > 1e-6;
    }
    assert!(
        weighting_matters,
        "the data should tell a weighted from an unweighted average"
    );

    // --- restart with the state directory lost: ready only once restored.
    run.stop();
    std::fs::remove_dir_all(&state).unwrap();
    let run_addr2 = format!("127.0.0.1:{}", free_port());
    let run2 = Run::start(&topo, &state, &run_addr2, dir.path().join("run2.log"));
    let mut not_ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match get(&run_addr2, "/readyz") {
            Some((200, _)) => break,
            Some((503, why)) => not_ready.push(why),
            Some(other) => panic!("/readyz: {other:?}"),
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "not ready after 120 s: {:?}",
            not_ready.last()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Logged before the task starts, so before readiness can change.
    let log = run2.log_text();
    let restored = log.lines().filter(|l| l.contains("task restored")).count();
    assert_eq!(
        restored, 9,
        "every stateful task (3 stores x 3 partitions) restored before /readyz said ready:\n{log}"
    );
    let m2 = metrics(&run_addr2);
    assert_eq!(sum(&m2, "weir_tasks_restoring", |_| true), 0.0);
    assert!(
        sum(&m2, "weir_restore_records_total", |l| l["topology"] == id) > 0.0,
        "a lost state directory is restored from the changelog"
    );
    assert!(
        !not_ready.is_empty(),
        "/readyz answered 503 before the restore finished"
    );
    assert!(
        not_ready
            .iter()
            .any(|w| w.contains("consumer group") || w.contains("restoring")),
        "{not_ready:?}"
    );
    run2.stop();
    sink.terminate();
    pg.exec(&format!("DROP SCHEMA {schema} CASCADE"));
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id), &free_now]);
}
