//! Interactive queries against the real broker: three `weir run
//! --query-addr` instances of the parking job (exactly-once) share the
//! partitions; every lot and every region, asked through each instance's
//! address, answers what is computed independently from the input topic
//! (answered locally or forwarded to the owner). Then an instance is added
//! and one removed while hundreds of queries run: each answers the right
//! value or 503, never a wrong one.
#![cfg(feature = "integration")]

mod common;
mod engine_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use engine_common::*;
use serde_json::Value;

/// A GET: (status, JSON body), or `None` when the instance cannot be
/// reached.
fn get(addr: &str, path: &str) -> Option<(u16, Value)> {
    let (status, body) = common::metrics::get(addr, path)?;
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// A key as a path segment.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn lot_path(lot: &str) -> String {
    format!("/v1/stores/latest-per-lot/keys/{}", enc(lot))
}

/// The free-now store's key of a region: its group key, a JSON array of
/// the group values (code, name, district: null for a hotspot the table
/// does not list).
fn region_key(code: &str, (region, district, _, _): &(String, Option<String>, i64, i64)) -> String {
    serde_json::json!([code, region, district]).to_string()
}

fn region_path(code: &str, want: &(String, Option<String>, i64, i64)) -> String {
    format!("/v1/stores/free-now-by-region/keys/{}", enc(&region_key(code, want)))
}

/// What a region's answer says, as `expected_free_now` has it: (region,
/// district, available spots, lots).
fn region_of(v: &Value) -> (String, Option<String>, i64, i64) {
    (
        v["region"].as_str().unwrap_or_default().to_string(),
        v["district"].as_str().map(str::to_string),
        v["available_spots"].as_i64().unwrap_or(-1),
        v["realtime_lots"].as_i64().unwrap_or(-1),
    )
}

/// Whether an answer's value is the right one.
type Check = Box<dyn Fn(&Value) -> bool>;

struct Instance {
    proc: WeirProc,
    addr: String,
}

fn start(topo: &std::path::Path, dir: &std::path::Path, n: usize) -> Instance {
    let addr = format!("127.0.0.1:{}", free_port());
    let state = dir.join(format!("state-{n}"));
    let proc = WeirProc::spawn(
        &[
            "run",
            topo.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--query-addr",
            &addr,
            // Leaving on SIGTERM: a removed instance gives its partitions
            // up at once (a scale-in), and the test needs no session wait.
            "--instance-id",
            "none",
        ],
        &dir.join(format!("run-{n}.log")),
    );
    Instance { proc, addr }
}

#[test]
fn any_instance_answers_for_any_key_and_a_rebalance_answers_right_or_503() {
    let id = unique("query");
    let dir = test_dir();
    let (topo, names) = topology_eos(dir.path(), &id);
    let [status, dlq, hourly, lots_topic] = names.clone();
    create_topic(&status, 3);
    produce_inputs(&status, &simulate(6_000, 11, dir.path()));
    // The expectation from what the broker holds, not from what was sent.
    let inputs = read_inputs(&status, 6_000);
    let lots = expected_lots(&inputs);
    let regions = expected_free_now(&lots);
    assert!(
        lots.len() > 20 && regions.len() > 10,
        "{} lots, {} regions",
        lots.len(),
        regions.len()
    );

    let mut instances: Vec<Instance> = (0..3).map(|n| start(&topo, dir.path(), n)).collect();
    wait_group_stable(&id, 3, &[], Duration::from_secs(90));
    // Every input record processed and committed (reads see committed
    // state only).
    wait_committed(&id, &status, 3, Duration::from_secs(120));
    wait_committed(
        &id,
        &format!("{id}-free-now-by-region-repartition"),
        3,
        Duration::from_secs(120),
    );
    // RocksDB takes a commit's writes right after it.
    std::thread::sleep(Duration::from_secs(1));

    // Each instance answers for every lot and every region.
    let mut forwarded = 0;
    for inst in &instances {
        for (lot, want) in &lots {
            let (code, body) = wait_answer(&inst.addr, &lot_path(lot));
            assert_eq!(code, 200, "lot {lot} via {}: {body}", inst.addr);
            assert_eq!(&body["value"], want, "lot {lot} via {}", inst.addr);
            assert_eq!(body["key"].as_str(), Some(lot.as_str()));
            if body["served_by"].as_str() != Some(inst.addr.as_str()) {
                forwarded += 1;
            }
        }
        for (code, want) in &regions {
            let (status, body) = wait_answer(&inst.addr, &region_path(code, want));
            assert_eq!(status, 200, "region {code} via {}: {body}", inst.addr);
            assert_eq!(&region_of(&body["value"]), want, "region {code} via {}", inst.addr);
        }
        // A key no lot has: 404, from whichever instance owns it.
        let (status, body) = wait_answer(&inst.addr, &lot_path("no-such-lot"));
        assert_eq!(status, 404, "{body}");
        // The whole table by a scan over every partition (every instance).
        let (status, body) = wait_answer(&inst.addr, "/v1/stores/free-now-by-region/keys?limit=1000");
        assert_eq!(status, 200, "{body}");
        let scanned: FreeNow = body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["value"]["region_code"].as_str().unwrap().to_string(),
                    region_of(&r["value"]),
                )
            })
            .collect();
        assert_eq!(scanned, regions, "scan via {}", inst.addr);
    }
    // Two thirds of the lots live elsewhere than the instance asked.
    assert!(forwarded > lots.len(), "only {forwarded} answers were forwarded");

    // The move: queries through every live instance while a fourth joins
    // and the first leaves. Each answer is the right value or 503.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(Mutex::new(Vec::<String>::new()));
    let live: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(instances.iter().map(|i| i.addr.clone()).collect()));
    let lots = Arc::new(lots);
    let regions = Arc::new(regions);
    let queriers: Vec<_> = (0..2)
        .map(|t| {
            let (stop, answered, unavailable, wrong, live, lots, regions) = (
                stop.clone(),
                answered.clone(),
                unavailable.clone(),
                wrong.clone(),
                live.clone(),
                lots.clone(),
                regions.clone(),
            );
            std::thread::spawn(move || {
                let lot_keys: Vec<&String> = lots.keys().collect();
                let region_keys: Vec<&String> = regions.keys().collect();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let addrs = live.lock().unwrap().clone();
                    let addr = &addrs[i % addrs.len()];
                    let (path, check): (String, Check) = if i % 3 == 0 {
                        let code = region_keys[i % region_keys.len()];
                        let want = regions[code].clone();
                        (region_path(code, &want), Box::new(move |v| region_of(v) == want))
                    } else {
                        let lot = lot_keys[i % lot_keys.len()];
                        let want = lots[lot].clone();
                        (lot_path(lot), Box::new(move |v| *v == want))
                    };
                    match get(addr, &path) {
                        Some((200, body)) if check(&body["value"]) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((503, _)) => {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        // The instance leaving stops listening.
                        None => {}
                        Some((code, body)) => wrong.lock().unwrap().push(format!("{addr}{path}: {code} {body}")),
                    }
                }
            })
        })
        .collect();
    let during = |what: &str, d: Duration| {
        let before = answered.load(Ordering::Relaxed) + unavailable.load(Ordering::Relaxed);
        std::thread::sleep(d);
        let after = answered.load(Ordering::Relaxed) + unavailable.load(Ordering::Relaxed);
        eprintln!("{what}: {} queries", after - before);
    };
    during("before the move", Duration::from_secs(2));
    let fourth = start(&topo, dir.path(), 3);
    live.lock().unwrap().push(fourth.addr.clone());
    instances.push(fourth);
    let move_started = Instant::now();
    wait_group_stable(&id, 4, &[], Duration::from_secs(90));
    during("after the fourth joined", Duration::from_secs(3));
    let leaving = instances.remove(0);
    live.lock().unwrap().retain(|a| a != &leaving.addr);
    leaving.proc.unwatch();
    leaving.proc.signal("TERM");
    wait_group_stable(&id, 3, &[], Duration::from_secs(90));
    during("after the first left", Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for q in queriers {
        q.join().unwrap();
    }
    let (ok, busy) = (answered.load(Ordering::Relaxed), unavailable.load(Ordering::Relaxed));
    eprintln!(
        "during the move ({:?}): {ok} right answers, {busy} 503s",
        move_started.elapsed()
    );
    let wrong = wrong.lock().unwrap();
    assert!(
        wrong.is_empty(),
        "{} wrong answers, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(ok + busy >= 300, "only {} queries answered during the move", ok + busy);
    assert!(ok > 0);

    // Settled: every lot right again through every live instance.
    for inst in &instances {
        for (lot, want) in lots.iter() {
            let (code, body) = wait_answer(&inst.addr, &lot_path(lot));
            assert_eq!(code, 200, "after the move, lot {lot} via {}: {body}", inst.addr);
            assert_eq!(&body["value"], want);
        }
    }
    drop(instances);
    delete_topics(&[
        &status,
        &dlq,
        &hourly,
        &lots_topic,
        &free_now_topic(&id),
        &hotspots_topic(&id),
    ]);
}

/// The answer once it is not 503 (a task still opening), within 60 s.
fn wait_answer(addr: &str, path: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(addr, path) {
            Some((503, body)) if Instant::now() < deadline => {
                let _ = body;
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(answer) => return answer,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => panic!("{addr} unreachable"),
        }
    }
}
