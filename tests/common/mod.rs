//! Helpers shared by the integration tests (real broker from `./dev up`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub mod cluster3;
pub mod metrics;
pub mod tmpfs;
mod weir_proc;
#[allow(unused_imports)] // not every test binary spawns weir
pub use weir_proc::{check_alive, WeirProc};

pub fn bootstrap() -> String {
    let bootstrap = std::env::var("WEIR_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| require_service("Kafka", bootstrap.split(',').next().unwrap_or_default()));
    bootstrap
}

/// Fail at once, saying what to do, when a service the integration tests
/// need does not answer (rather than with each client's own retries and
/// connection errors).
pub fn require_service(what: &str, addr: &str) {
    use std::net::{TcpStream, ToSocketAddrs};
    let reachable = addr
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "{what} does not answer at {addr}. The integration tests need the services of `./dev up` \
         (then `eval \"$(./dev env)\"`), or run everything with `./dev test`."
    );
}

/// The checkout whose `./dev up` services the tests use (its `.cache/`).
/// Read when the test runs (cargo sets `CARGO_MANIFEST_DIR` for it): the
/// compile-time value can name another checkout that shares the target
/// directory, whose unchanged test binaries cargo then reuses.
pub fn checkout() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The test's directory (topology, state, logs); kept for a post-mortem
/// when `WEIR_TEST_KEEP` is set.
pub fn test_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("WEIR_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("test: keeping {}", dir.path().display());
    }
    dir
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn run_weir(args: &[&str]) -> std::process::Output {
    let out = Command::new(weir_bin())
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap())
        .output()
        .expect("run weir");
    assert!(
        out.status.success(),
        "weir {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

/// Read `topic` (read_committed) from the beginning until `want` returns
/// true for what was read, or `timeout` passes; then keep reading for
/// `settle` to catch extras. Returns everything read. Fails at once if a
/// watched `weir` process died (see [`check_alive`]).
pub fn consume_until(topic: &str, timeout: Duration, settle: Duration, want: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
    consume_until_isolated(topic, "read_committed", timeout, settle, want)
}

/// [`consume_until`] with the given `isolation.level` ("read_committed" or
/// "read_uncommitted": the latter also returns records of aborted and open
/// transactions).
pub fn consume_until_isolated(
    topic: &str,
    isolation: &str,
    timeout: Duration,
    settle: Duration,
    want: impl Fn(&[Rec]) -> bool,
) -> Vec<Rec> {
    // Reads by assignment, not through a consumer group: a group needs the
    // group coordinator, which a freshly started broker may still be loading.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("it-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let deadline = Instant::now() + timeout;
    // The topic may not exist yet: weir creates it when it starts.
    let partitions = loop {
        let n = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|md| {
                md.topics()
                    .first()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.partitions().len())
            })
            .unwrap_or(0);
        if n > 0 || Instant::now() >= deadline {
            break n;
        }
        check_alive();
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut done_at: Option<Instant> = None;
    while Instant::now() < deadline {
        if let Some(at) = done_at {
            if at.elapsed() >= settle {
                break;
            }
        }
        check_alive();
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        headers.insert(
                            hd.key.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Rec {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis().unwrap_or(-1),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
            // Informational (librdkafka reconnects by itself): one broker
            // of a cluster is down, the others serve the partitions.
            Some(Err(KafkaError::MessageConsumption(
                code @ (RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown),
            ))) => eprintln!("consume_until({topic}): {code}; continuing"),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
        if done_at.is_none() && want(&out) {
            done_at = Some(Instant::now());
        }
    }
    out
}

pub fn producer() -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

pub fn produce(
    p: &BaseProducer,
    topic: &str,
    partition: i32,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(partition).timestamp(timestamp);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    loop {
        match p.send(rec) {
            Ok(()) => break,
            Err((_, r)) => {
                rec = r;
                p.poll(Duration::from_millis(10));
            }
        }
    }
    p.poll(Duration::ZERO);
}

pub fn flush(p: &BaseProducer) {
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Wait until consumer group `group` has committed the end offset of every
/// partition of `topic`.
pub fn wait_committed(group: &str, topic: &str, partitions: i32, timeout: Duration) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        // A fresh broker answers NotCoordinator / CoordinatorLoadInProgress
        // until __consumer_offsets is loaded: those are "not yet", not failures.
        let done = fetch_committed(group, topic, partitions).and_then(|committed| {
            for (p, got) in committed.iter().enumerate() {
                let (_, high) = c.fetch_watermarks(topic, p as i32, Duration::from_secs(10))?;
                if high > 0 && *got < high {
                    return Ok(false);
                }
            }
            Ok(true)
        });
        check_alive();
        match &done {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => eprintln!("wait_committed({group}, {topic}): {e}; retrying"),
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not commit the end of {topic} in time (last: {done:?})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Poll `f` until it returns true, or panic naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        check_alive();
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (low, high) watermark of one partition. Asked read_uncommitted:
/// librdkafka's default, read_committed, is answered with the last stable
/// offset, short of the end while a transaction is open.
pub fn watermarks(topic: &str, partition: i32) -> (i64, i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    c.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap()
}

/// Offsets committed by `group` for partitions 0..partitions of `topic`
/// (-1 where none).
pub fn committed_offsets(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    fetch_committed(group, topic, partitions).unwrap()
}

/// [`committed_offsets`], an error while the group coordinator cannot
/// answer (loading, moving).
pub fn fetch_committed(group: &str, topic: &str, partitions: i32) -> rdkafka::error::KafkaResult<Vec<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect())
}

pub fn create_topic(name: &str, partitions: i32) {
    create_topic_replicated(name, partitions, -1);
}

/// `create_topic` with `replication` replicas (-1: the broker's
/// `default.replication.factor`).
pub fn create_topic_replicated(name: &str, partitions: i32, replication: i32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(weir::ensure_topics(
        &bootstrap(),
        // Kept forever: several tests produce records with fixed 2025
        // timestamps, which a 7-day retention would let the broker delete at
        // its next retention check (30 s after start, then every 5 min).
        &[weir::TopicSpec::new(name, partitions)
            .with_replication(replication)
            .with_config("retention.ms", "-1")],
    ))
    .unwrap();
}

pub fn delete_topics(names: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ = rt.block_on(weir::delete_topics(&bootstrap(), names));
}

/// State ("Stable", "PreparingRebalance", "Empty", ...) and member ids of
/// the (classic protocol) consumer group `group`; None while the broker
/// cannot answer or does not know the group.
pub fn group_members(group: &str) -> Option<(String, Vec<String>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .ok()?;
    let list = c.fetch_group_list(Some(group), Duration::from_secs(10)).ok()?;
    let g = list.groups().iter().find(|g| g.name() == group)?;
    Some((
        g.state().to_string(),
        g.members().iter().map(|m| m.id().to_string()).collect(),
    ))
}

/// Wait until group `group` is Stable with `n` members, none of them in
/// `gone` (members of killed instances stay in the group until their
/// session times out). Returns the member ids.
pub fn wait_group_stable(group: &str, n: usize, gone: &[String], timeout: Duration) -> Vec<String> {
    let mut last = None;
    let deadline = Instant::now() + timeout;
    loop {
        let got = group_members(group);
        if let Some((state, members)) = &got {
            if state == "Stable" && members.len() == n && !members.iter().any(|m| gone.contains(m)) {
                return members.clone();
            }
        }
        last = got.or(last);
        check_alive();
        assert!(
            Instant::now() < deadline,
            "group {group} not Stable with {n} live members within {timeout:?} (last: {last:?}, gone: {gone:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `weir` binary to run: this build's, unless `WEIR_BIN` names another
/// (e.g. an older build, to see a test fail on the engine it guards
/// against; checkouts sharing one target directory overwrite each other's
/// `target/debug/weir`).
pub fn weir_bin() -> std::ffi::OsString {
    std::env::var_os("WEIR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weir").into())
}

/// A TCP port nothing listens on right now (for `--metrics-addr`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from `addr` over plain HTTP/1.1: the raw response.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}
