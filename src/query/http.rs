//! The query server (`weir run --query-addr`) and its client (`weir
//! query`). The API is in docs/query-api.yaml (OpenAPI) and
//! docs/queries.md:
//!
//! - `GET /v1/stores`: the topology's stores and this instance's tasks;
//! - `GET /v1/stores/{store}/keys/{key}`: a key's row (table,
//!   table_aggregate);
//! - `GET /v1/stores/{store}/keys?prefix=|from=&to=&limit=`: rows in key
//!   order, from every partition (every instance's);
//! - `GET /v1/stores/{store}/windows/{key}?from=&to=`: a group's open
//!   windows (window).
//!
//! A key's partition is Kafka's default partitioner over its bytes (as
//! weir writes its repartition topics, and as Kafka's Java clients and
//! `weir simulate` write keyed records). An instance answers a partition
//! it runs, forwards the request to the instance that has it, or answers
//! 503 with `Retry-After` (restoring, moving, or no owner yet). A
//! forwarded request (header [`FORWARDED`]) is answered locally or 503,
//! never forwarded again.

// The handlers' early answers travel as `Err(Response)`: one per request,
// off any hot path, so not boxed.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::{json, Value};

use super::read::{self, Kind};
use super::Registry;
use crate::kafka::partition_for;
use crate::topology::StoreDef;

/// Header of a request one instance forwards to another.
const FORWARDED: &str = "x-weir-forwarded";

/// Rows a scan returns when it does not say (`limit`), and at most.
const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;

/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Seconds a 503 tells the client to wait.
const RETRY_AFTER: &str = "1";

/// Connections served at once (more are closed when accepted).
const MAX_CONNECTIONS: usize = 256;

type Body = Full<Bytes>;
type HttpClient = Client<HttpConnector, Body>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for queries: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Serve queries on `addr` (bound before this returns). Inside a Tokio
/// runtime.
pub fn serve(addr: SocketAddr, registry: Arc<Registry>) -> Result<(), ServeError> {
    let err = |source| ServeError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(err)?;
    let client = http_client();
    tokio::spawn(crate::metrics::accept_loop(
        listener,
        "query",
        MAX_CONNECTIONS,
        move |req| {
            let (registry, client) = (registry.clone(), client.clone());
            async move { handle(&registry, &client, req).await }
        },
    ));
    Ok(())
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_default();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    reply(status, &json!({ "error": message.into() }))
}

/// 503 with `Retry-After`: the answer exists, but not here and now.
fn unavailable(message: impl Into<String>) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static(RETRY_AFTER),
    );
    r
}

/// The query string's parameters, percent-decoded (`+` is a space).
fn params(query: Option<&str>) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Where a partition's task is.
enum Place {
    /// Open here: its database, and whether it is restoring.
    Here(crate::state::rocks::TaskDb, bool),
    /// On the instance at this address.
    There(String),
    Nowhere(String),
}

async fn locate(reg: &Registry, sub: usize, partition: i32, forwarded: bool) -> Place {
    if let Some((db, restoring)) = reg.local(sub, partition) {
        return Place::Here(db, restoring);
    }
    if forwarded {
        return Place::Nowhere(format!(
            "partition {partition} is not on {} (it is moving)",
            reg.advertised
        ));
    }
    let Some(topic) = reg.topo.subtopology_sources(sub).into_iter().next() else {
        return Place::Nowhere("the store's sub-topology reads no topic".into());
    };
    match reg.owners.get(&reg.bootstrap, false).await {
        Ok(owners) => match owners.get(&(topic, partition)) {
            Some(addr) if addr == &reg.advertised => {
                Place::Nowhere(format!("partition {partition} is being opened on {addr}"))
            }
            Some(addr) => Place::There(addr.clone()),
            None => Place::Nowhere(format!(
                "no instance has partition {partition} right now (a rebalance is moving it)"
            )),
        },
        Err(e) => Place::Nowhere(e),
    }
}

/// Forward `path_and_query` to the instance at `addr`, returning its
/// answer as it is.
async fn forward(client: &HttpClient, addr: &str, path_and_query: &str) -> Response<Body> {
    let req = match Request::get(format!("http://{addr}{path_and_query}"))
        .header(FORWARDED, "1")
        .body(Full::new(Bytes::new()))
    {
        Ok(r) => r,
        Err(e) => return unavailable(format!("forwarding to {addr}: {e}")),
    };
    let answer = async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Response::from_parts(parts, Full::new(bytes)))
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, answer).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => unavailable(format!("the instance at {addr} did not answer: {e}")),
        Err(_) => unavailable(format!("the instance at {addr} did not answer in {FORWARD_TIMEOUT:?}")),
    }
}

/// Run a store read off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::state::StoreError> + Send + 'static,
) -> Result<T, Response<Body>> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the store: {e}"),
        )),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the store: {e}"),
        )),
    }
}

async fn handle(reg: &Arc<Registry>, client: &HttpClient, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    let forwarded = req.headers().contains_key(FORWARDED);
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let params = params(req.uri().query());
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let started = Instant::now();
    let (route, response) = match segments.as_slice() {
        ["v1", "stores"] => ("stores", stores(reg)),
        ["v1", "stores", store, "keys", key] => (
            "get",
            point(reg, client, store, key, &params, forwarded, &path_and_query, Op::Get).await,
        ),
        ["v1", "stores", store, "windows", key] => (
            "windows",
            point(
                reg,
                client,
                store,
                key,
                &params,
                forwarded,
                &path_and_query,
                Op::Windows,
            )
            .await,
        ),
        ["v1", "stores", store, "keys"] => ("scan", scan(reg, client, store, &params, forwarded).await),
        _ => (
            "other",
            error(
                StatusCode::NOT_FOUND,
                "not found: GET /v1/stores, /v1/stores/{store}/keys/{key}, /v1/stores/{store}/keys?prefix=, \
                 /v1/stores/{store}/windows/{key}",
            ),
        ),
    };
    let app = reg.topo.application_id.clone();
    let status = response.status().as_u16().to_string();
    metrics::histogram!("weir_query_latency_seconds", "topology" => app.clone(), "route" => route, "forwarded" => if forwarded { "true" } else { "false" })
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("weir_queries_total", "topology" => app, "route" => route, "status" => status).increment(1);
    response
}

/// `GET /v1/stores`.
fn stores(reg: &Registry) -> Response<Body> {
    let topo = &reg.topo;
    let list: Vec<Value> = topo
        .stores
        .iter()
        .map(|s| {
            let kind = read::kind(topo, s);
            json!({
                "name": s.name,
                "kind": kind.name(),
                "queryable": kind != Kind::TableWithoutValues,
                "partitions": reg.partition_count(s.subtopology),
            })
        })
        .collect();
    let tasks: Vec<Value> = reg
        .local_tasks()
        .into_iter()
        .map(|(sub, p, restoring)| {
            json!({ "task": format!("{sub}_{p}"), "state": if restoring { "restoring" } else { "running" } })
        })
        .collect();
    reply(
        StatusCode::OK,
        &json!({ "instance": reg.advertised, "application_id": topo.application_id, "stores": list, "tasks": tasks }),
    )
}

/// The store named `name` (its index and definition), or the response
/// saying why not.
fn store<'a>(reg: &'a Registry, name: &str, want: &[Kind]) -> Result<(usize, &'a StoreDef), Response<Body>> {
    let Some((index, store)) = reg.topo.stores.iter().enumerate().find(|(_, s)| s.name == name) else {
        let known: Vec<&str> = reg.topo.stores.iter().map(|s| s.name.as_str()).collect();
        return Err(reply(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no store `{name}`"), "stores": known }),
        ));
    };
    let kind = read::kind(&reg.topo, store);
    if kind == Kind::TableWithoutValues {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("table `{name}` does not keep its values: add `queryable: true` to its `table:` step"),
        ));
    }
    if !want.contains(&kind) {
        let how = match kind {
            Kind::Window => "a window store: GET /v1/stores/{store}/windows/{key}",
            _ => "a key-value store: GET /v1/stores/{store}/keys/{key}",
        };
        return Err(error(StatusCode::BAD_REQUEST, format!("`{name}` is {how}")));
    }
    Ok((index, store))
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Windows,
}

/// A time bound: ms since the epoch, or RFC 3339.
fn time_param(params: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, Response<Body>> {
    let Some(v) = params.get(name) else {
        return Ok(default);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("`{name}`: {v:?} is neither ms since the epoch nor RFC 3339"),
            )
        })
}

/// One key's partition: a row (`Get`) or windows (`Windows`).
#[allow(clippy::too_many_arguments)]
async fn point(
    reg: &Arc<Registry>,
    client: &HttpClient,
    name: &str,
    key: &str,
    params: &HashMap<String, String>,
    forwarded: bool,
    path_and_query: &str,
    op: Op,
) -> Response<Body> {
    let want: &[Kind] = match op {
        Op::Get => &[Kind::Table, Kind::TableAggregate],
        Op::Windows => &[Kind::Window],
    };
    let (store_index, store) = match store(reg, name, want) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (from, to) = match (time_param(params, "from", i64::MIN), time_param(params, "to", i64::MAX)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let Some(count) = reg.partition_count(store.subtopology) else {
        return unavailable("starting: the topics are not known yet");
    };
    let partition = partition_for(Some(key.as_bytes()), count, 0);
    let stale_ok = params.get("stale").is_some_and(|v| v == "true" || v == "1");
    let (db, restoring) = match locate(reg, store.subtopology, partition, forwarded).await {
        Place::Here(db, restoring) => (db, restoring),
        Place::There(addr) => return forward(client, &addr, path_and_query).await,
        Place::Nowhere(why) => return unavailable(why),
    };
    if restoring && !stale_ok {
        return unavailable(format!(
            "partition {partition} of `{name}` is restoring on {} (ask with ?stale=true for its last committed value)",
            reg.advertised
        ));
    }
    let (topo, key_bytes) = (reg.topo.clone(), key.as_bytes().to_vec());
    let read = blocking(move || {
        let store = &topo.stores[store_index];
        match op {
            Op::Get => read::get(&topo, store, &db, &key_bytes),
            Op::Windows => {
                read::windows(&topo, store, &db, &key_bytes, from, to).map(|w| Some(json!({ "windows": w })))
            }
        }
    })
    .await;
    let found = match read {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut body = match found {
        Some(Value::Object(o)) => o,
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                &json!({ "error": "no such key", "store": name, "key": key, "partition": partition }),
            )
        }
    };
    body.insert("store".into(), json!(name));
    body.insert("key".into(), json!(key));
    body.insert("partition".into(), json!(partition));
    body.insert("served_by".into(), json!(reg.advertised));
    if restoring {
        body.insert("stale".into(), json!(true));
    }
    reply(StatusCode::OK, &Value::Object(body))
}

/// Rows of every partition in a key range, merged in key order.
async fn scan(
    reg: &Arc<Registry>,
    client: &HttpClient,
    name: &str,
    params: &HashMap<String, String>,
    forwarded: bool,
) -> Response<Body> {
    let (store_index, store) = match store(reg, name, &[Kind::Table, Kind::TableAggregate]) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, format!("`limit`: 1 to {MAX_LIMIT}")),
    };
    if params.contains_key("prefix") && (params.contains_key("from") || params.contains_key("to")) {
        return error(StatusCode::BAD_REQUEST, "give `prefix` or `from`/`to`, not both");
    }
    let (from, to) = match params.get("prefix") {
        Some(p) => (p.as_bytes().to_vec(), read::prefix_end(p.as_bytes())),
        None => (
            params.get("from").map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
            params.get("to").map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
        ),
    };
    let Some(count) = reg.partition_count(store.subtopology) else {
        return unavailable("starting: the topics are not known yet");
    };
    // The partitions asked for: all, or those a forwarding instance names.
    let wanted: Vec<i32> = match params.get("partitions") {
        Some(list) => list.split(',').filter_map(|p| p.trim().parse().ok()).collect(),
        None => (0..count).collect(),
    };
    let stale_ok = params.get("stale").is_some_and(|v| v == "true" || v == "1");
    let mut here = Vec::new();
    let mut there: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut stale = false;
    for &p in &wanted {
        match locate(reg, store.subtopology, p, forwarded).await {
            Place::Here(db, restoring) => {
                if restoring && !stale_ok {
                    return unavailable(format!("partition {p} of `{name}` is restoring on {}", reg.advertised));
                }
                stale |= restoring;
                here.push(db);
            }
            Place::There(addr) => there.entry(addr).or_default().push(p),
            Place::Nowhere(why) => return unavailable(why),
        }
    }
    let mut rows: Vec<(Vec<u8>, Value)> = Vec::new();
    for (addr, partitions) in there {
        let mut q: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.as_str() != "partitions")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        q.push(format!(
            "partitions={}",
            partitions.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
        ));
        let path = format!("/v1/stores/{}/keys?{}", encode(name), q.join("&"));
        let res = forward(client, &addr, &path).await;
        if res.status() != StatusCode::OK {
            return res;
        }
        let body = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return unavailable(format!("reading {addr}'s answer: {e}")),
        };
        let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
            return unavailable(format!("{addr} answered something else than JSON"));
        };
        stale |= answer["stale"].as_bool().unwrap_or(false);
        for r in answer["rows"].as_array().cloned().unwrap_or_default() {
            let key = r["key"].as_str().unwrap_or_default().as_bytes().to_vec();
            rows.push((key, r));
        }
    }
    let topo = reg.topo.clone();
    let local = blocking(move || {
        let mut out = Vec::new();
        for db in here {
            out.extend(read::scan(&topo, &topo.stores[store_index], &db, &from, &to, limit)?);
        }
        Ok(out)
    })
    .await;
    match local {
        Ok(r) => rows.extend(r),
        Err(r) => return r,
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let more = rows.len() > limit;
    rows.truncate(limit);
    let mut body = json!({
        "store": name,
        "rows": rows.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        "served_by": reg.advertised,
    });
    if more {
        // The next page starts right after the last key returned.
        let last = String::from_utf8_lossy(&rows.last().map(|r| r.0.clone()).unwrap_or_default()).into_owned();
        body["next_from"] = json!(format!("{last}\u{0}"));
    }
    if stale {
        body["stale"] = json!(true);
    }
    reply(StatusCode::OK, &body)
}

/// Percent-encode a path segment or query value.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `weir query`: one lookup against a running instance.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The topology file (checks the store, and picks keys or windows).
    pub file: std::path::PathBuf,
    /// A store: the name of a `table` (with `queryable: true`),
    /// `table_aggregate` or `window` step.
    pub store: String,
    /// The key as the store holds it: a record key, or a group key (a JSON
    /// array of the group values, e.g. '["POI001","강남 MICE 관광특구"]').
    /// Left out: every row (or with --prefix, those starting with it).
    pub key: Option<String>,
    /// Any instance's query address (`weir run --query-addr`).
    #[arg(long, env = "WEIR_QUERY_ADDR", default_value = "127.0.0.1:9470")]
    pub addr: String,
    /// Rows whose key starts with this (table, table_aggregate).
    #[arg(long, conflicts_with = "key")]
    pub prefix: Option<String>,
    /// Windows starting at or after this time (ms or RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Windows starting at or before this time (ms or RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// Rows at most (scans).
    #[arg(long)]
    pub limit: Option<usize>,
    /// A restoring store's last committed value, marked stale, rather
    /// than waiting.
    #[arg(long)]
    pub stale: bool,
    /// How long to retry while the answer is 503 (restoring, moving).
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub wait: Duration,
}

/// Run `weir query`: prints the answer's JSON; exit 0 on a row, 1 when
/// there is none (404) or the request is refused, 2 when no instance
/// could answer in `--wait`.
pub async fn query_command(args: QueryArgs) -> anyhow::Result<u8> {
    let topo = crate::Topology::load(&args.file).map_err(|d| anyhow::anyhow!("{d}"))?;
    let Some(store) = topo.stores.iter().find(|s| s.name == args.store) else {
        let known: Vec<&str> = topo.stores.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "no store `{}` in {} (stores: {})",
            args.store,
            args.file.display(),
            known.join(", ")
        );
    };
    let kind = read::kind(&topo, store);
    let mut q = Vec::new();
    for (name, value) in [("from", &args.from), ("to", &args.to), ("prefix", &args.prefix)] {
        if let Some(v) = value {
            q.push(format!("{name}={}", encode(v)));
        }
    }
    if let Some(l) = args.limit {
        q.push(format!("limit={l}"));
    }
    if args.stale {
        q.push("stale=true".into());
    }
    let path = match (&args.key, kind) {
        (Some(key), Kind::Window) => format!("/v1/stores/{}/windows/{}", encode(&store.name), encode(key)),
        (Some(key), _) => format!("/v1/stores/{}/keys/{}", encode(&store.name), encode(key)),
        (None, Kind::Window) => anyhow::bail!("`{}` is a window store: give a group key", store.name),
        (None, _) => format!("/v1/stores/{}/keys", encode(&store.name)),
    };
    let url = format!(
        "http://{}{path}?{}",
        args.addr.trim_start_matches("http://"),
        q.join("&")
    );
    let client = http_client();
    let deadline = Instant::now() + args.wait;
    loop {
        let req = Request::get(&url).body(Full::new(Bytes::new()))?;
        let res = client.request(req).await;
        let (status, body) = match res {
            Ok(r) => {
                let status = r.status();
                (status, r.into_body().collect().await?.to_bytes())
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "query failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                eprintln!("no answer from {}: {e}", args.addr);
                return Ok(2);
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        print!("{}", String::from_utf8_lossy(&body));
        return Ok(match status {
            StatusCode::OK => 0,
            StatusCode::SERVICE_UNAVAILABLE => 2,
            _ => 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let p = params(Some("prefix=%5B%22POI001%22%2C&limit=5&x&a+b=c+d"));
        assert_eq!(p["prefix"], "[\"POI001\",");
        assert_eq!(p["limit"], "5");
        assert_eq!(p["x"], "");
        assert_eq!(p["a b"], "c d");
        assert!(params(None).is_empty());
    }

    #[test]
    fn times_are_ms_or_rfc3339() {
        let p = params(Some("from=1000&to=2025-03-20T14%3A00%3A00%2B09%3A00&bad=yesterday"));
        assert_eq!(time_param(&p, "from", 0).ok(), Some(1000));
        assert_eq!(time_param(&p, "to", 0).ok(), Some(1_742_446_800_000));
        assert_eq!(time_param(&p, "none", 7).ok(), Some(7));
        assert_eq!(time_param(&p, "bad", 0).unwrap_err().status(), StatusCode::BAD_REQUEST);
    }
}
