//! `weir simulate` against the real broker (`./dev up`; `WEIR_BOOTSTRAP`,
//! default 127.0.0.1:9092): what lands in Kafka is exactly what
//! `--output` writes for the same seed and options.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use weir::base64;
use weir::partition_for;
use weir::SIMULATED_FIELDS as FIELDS;

const COUNT: usize = 5000;
const PARTITIONS: i32 = 3;

/// Two days ago at a whole hour, KST. Recent on purpose: the topic keeps the
/// broker's 7-day retention, and older records could be deleted by a
/// retention check while the test reads them.
fn start() -> String {
    let kst = FixedOffset::east_opt(9 * 3600).unwrap();
    let t = chrono::Utc::now().with_timezone(&kst) - chrono::Duration::days(2);
    t.format("%Y-%m-%d %H:00:00").to_string()
}

fn bootstrap() -> String {
    std::env::var("WEIR_BOOTSTRAP").unwrap_or_else(|_| weir::DEFAULT_BOOTSTRAP.to_string())
}

fn fresh_topic(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("weir_test_simulate_{what}_{}_{nanos}", std::process::id())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    partition: i32,
    timestamp: i64,
    key: String,
    value: Vec<u8>,
}

/// Run `weir simulate` with `args`; returns its stderr.
fn simulate(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("simulate")
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "weir simulate {args:?} failed: {}\n{stderr}",
        out.status
    );
    stderr
}

/// Read the whole topic from the beginning: wait for `expected` records (at
/// most 60 s), then make sure nothing more arrives for 2 s.
fn consume_all(topic: &str, expected: usize) -> Vec<Rec> {
    let consumer: BaseConsumer = weir::client_config(&bootstrap())
        .set("group.id", format!("{topic}_reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    assert_eq!(partitions, PARTITIONS as usize, "topic created with --partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).expect("assign");

    let mut recs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if recs.len() >= expected {
            let until = *quiet_until.get_or_insert(now + Duration::from_secs(2));
            if now >= until {
                break;
            }
        } else if now >= deadline {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.expect("consume");
        let timestamp = match msg.timestamp() {
            Timestamp::CreateTime(t) => t,
            other => panic!("expected a CreateTime timestamp, got {other:?}"),
        };
        recs.push(Rec {
            partition: msg.partition(),
            timestamp,
            key: String::from_utf8(msg.key().expect("key").to_vec()).expect("UTF-8 key"),
            value: msg.payload().expect("value").to_vec(),
        });
    }
    recs
}

fn read_output(path: &Path, topic: &str) -> Vec<Rec> {
    let text = std::fs::read_to_string(path).expect("read --output file");
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["topic"], topic);
            let value = match (v.get("value"), v.get("value_base64")) {
                (Some(Value::String(s)), None) => s.as_bytes().to_vec(),
                (None, Some(Value::String(b64))) => b64.as_bytes().to_vec(),
                _ => panic!("need exactly one of value / value_base64: {line}"),
            };
            Rec {
                partition: v["partition"].as_i64().unwrap() as i32,
                timestamp: v["timestamp"].as_i64().unwrap(),
                key: v["key"].as_str().unwrap().to_string(),
                value,
            }
        })
        .collect()
}

/// Records per partition, in order. Kafka values that are not UTF-8 are
/// compared through their base64 text, which is what the file holds.
fn by_partition(recs: &[Rec], base64_invalid_utf8: bool) -> BTreeMap<i32, Vec<Rec>> {
    let mut map: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    for r in recs {
        let mut r = r.clone();
        if base64_invalid_utf8 && std::str::from_utf8(&r.value).is_err() {
            r.value = base64::encode(&r.value).into_bytes();
        }
        map.entry(r.partition).or_default().push(r);
    }
    map
}

fn kst_ms(s: &str) -> i64 {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap_or_else(|e| panic!("{e}: {s:?}"));
    FixedOffset::east_opt(9 * 3600)
        .unwrap()
        .from_local_datetime(&naive)
        .unwrap()
        .timestamp_millis()
}

/// Run `body` on a fresh topic and delete the topic afterwards, pass or fail.
async fn with_topic(what: &str, body: impl FnOnce(String)) {
    let topic = fresh_topic(what);
    let result = AssertUnwindSafe(async { body(topic.clone()) }).catch_unwind().await;
    let deleted = weir::delete_topics(&bootstrap(), &[topic.as_str()]).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    deleted.expect("delete the test topic");
}

#[tokio::test(flavor = "multi_thread")]
async fn produces_keyed_timestamped_records_identical_to_output_file() {
    with_topic("good", |topic| {
        let start = start();
        let count = COUNT.to_string();
        let parts = PARTITIONS.to_string();
        let common = [
            "--count",
            &count,
            "--seed",
            "42",
            "--partitions",
            &parts,
            "--topic",
            &topic,
            "--start",
            &start,
        ];
        let stderr = simulate(&common);
        assert!(stderr.contains(&format!("{COUNT} records")), "summary line: {stderr}");

        let recs = consume_all(&topic, COUNT);
        assert_eq!(recs.len(), COUNT, "records in the topic");
        let mut with_last_update = 0;
        for r in &recs {
            let v: Value = serde_json::from_slice(&r.value).expect("JSON value");
            let obj = v.as_object().expect("object");
            assert_eq!(obj.len(), 16, "{v}");
            for f in FIELDS {
                assert!(obj.get(f).is_some_and(Value::is_string), "{f} is a string in {v}");
            }
            assert_eq!(obj["PARKING_CODE"], r.key.as_str(), "key = PARKING_CODE");
            assert_eq!(
                r.partition,
                partition_for(Some(r.key.as_bytes()), PARTITIONS, 0),
                "murmur2 partition of {}",
                r.key
            );
            let last_update = obj["LAST_UPDATE"].as_str().unwrap();
            if !last_update.is_empty() {
                with_last_update += 1;
                assert_eq!(kst_ms(last_update), r.timestamp, "timestamp = LAST_UPDATE in KST");
            }
        }
        assert!(
            with_last_update > COUNT * 8 / 10,
            "{with_last_update} records carry LAST_UPDATE"
        );
        assert_eq!(recs.iter().map(|r| r.timestamp).min(), Some(kst_ms(&start)));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("feed.jsonl");
        let mut args = common.to_vec();
        args.extend(["--output", file.to_str().unwrap()]);
        simulate(&args);
        let from_file = read_output(&file, &topic);
        assert_eq!(from_file.len(), COUNT);
        assert_eq!(by_partition(&recs, false), by_partition(&from_file, false));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_and_late_records_reach_kafka_byte_for_byte() {
    with_topic("bad_late", |topic| {
        let start = start();
        let parts = PARTITIONS.to_string();
        let common = [
            "--count",
            "2000",
            "--seed",
            "7",
            "--partitions",
            &parts,
            "--topic",
            &topic,
            "--start",
            &start,
            "--bad-ratio",
            "0.1",
            "--late-ratio",
            "0.05",
        ];
        let stderr = simulate(&common);
        assert!(stderr.contains("2000 records"), "summary line: {stderr}");
        let recs = consume_all(&topic, 2000);
        assert_eq!(recs.len(), 2000);
        let invalid_utf8 = recs.iter().filter(|r| std::str::from_utf8(&r.value).is_err()).count();
        let not_json = recs
            .iter()
            .filter(|r| serde_json::from_slice::<Value>(&r.value).is_err())
            .count();
        assert!(
            invalid_utf8 > 10 && not_json > invalid_utf8,
            "{invalid_utf8} invalid UTF-8, {not_json} not JSON"
        );
        // Late records: behind the largest timestamp seen before them in their partition.
        let mut late = 0;
        for recs in by_partition(&recs, false).values() {
            let mut max = i64::MIN;
            for r in recs {
                if r.timestamp + 3_600_000 <= max {
                    late += 1;
                }
                max = max.max(r.timestamp);
            }
        }
        assert!((50..=150).contains(&late), "{late} late records");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("feed.jsonl");
        let mut args = common.to_vec();
        args.extend(["--output", file.to_str().unwrap()]);
        simulate(&args);
        let from_file = read_output(&file, &topic);
        assert_eq!(by_partition(&recs, true), by_partition(&from_file, true));
    })
    .await;
}

/// SIGTERM (what `docker stop`, systemd and `./dev` send) stops a running
/// `weir simulate` cleanly: it stops generating, waits for the deliveries
/// of what it produced, prints its summary and exits 0; every record the
/// summary counts is in the topic.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_delivers_what_was_produced() {
    with_topic("sigterm", |topic| {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;

        let parts = PARTITIONS.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["simulate", "--rate", "200", "--seed", "5", "--partitions", &parts])
            .args(["--topic", &topic, "--start", &start()])
            .env("WEIR_BOOTSTRAP", bootstrap())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir simulate");
        // Signal once it has started producing (a signal during exec would
        // kill any process, handlers or not).
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        while !log.contains("simulating the Seoul parking feed") {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "simulate exited early:\n{log}"
            );
            log.push_str(&line);
        }
        std::thread::sleep(Duration::from_secs(1));
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let reader = std::thread::spawn(move || {
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
            rest
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("weir simulate still running 30 s after SIGTERM:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        log.push_str(&reader.join().unwrap());
        assert!(status.success(), "exit status {status} after SIGTERM:\n{log}");
        let summary = log
            .lines()
            .find_map(|l| l.strip_prefix("simulate: "))
            .unwrap_or_else(|| panic!("no summary line:\n{log}"));
        let produced: usize = summary.split(' ').next().unwrap().parse().unwrap();
        assert!(produced > 0, "{summary}");
        assert_eq!(consume_all(&topic, produced).len(), produced, "records in the topic");
    })
    .await;
}
