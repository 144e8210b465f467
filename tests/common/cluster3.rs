//! The 3-node KRaft cluster of `./dev up --brokers 3` (each node broker +
//! controller): its nodes' pids and directories, and starting the nodes
//! that are not running. Used by the broker-kill test and the chaos
//! campaign's `--brokers 3` mode.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::checkout;

/// Nodes of the cluster (node ids 1..=NODES).
pub const NODES: i32 = 3;

/// Where `./dev up --brokers 3` listens (WEIR_BOOTSTRAP3 overrides).
pub const BOOTSTRAP3: &str = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094";

/// WEIR_BOOTSTRAP3 (exported by `./dev env`), else the default ports.
pub fn bootstrap3() -> String {
    std::env::var("WEIR_BOOTSTRAP3").unwrap_or_else(|_| BOOTSTRAP3.to_string())
}

/// Starts the nodes of the 3-node cluster that are not running and waits
/// until every node lists all three brokers. Run even when WEIR_BOOTSTRAP3
/// is set: `./dev` exports it, so it does not tell whether the cluster is up,
/// and a running cluster makes this a few metadata requests.
pub fn dev_up_3() -> Result<(), String> {
    let t = Instant::now();
    let status = Command::new(checkout().join("dev"))
        .args(["up", "--brokers", "3"])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("run ./dev up --brokers 3: {e}"))?;
    eprintln!("./dev up --brokers 3: {status} in {:.1?}", t.elapsed());
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("./dev up --brokers 3 failed ({status})"))
}

pub fn node_dir(node: i32) -> PathBuf {
    checkout().join(format!(".cache/kafka3/node{node}"))
}

pub fn node_pid(node: i32) -> u32 {
    let path = node_dir(node).join("kafka.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (written by ./dev up --brokers 3)", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Alive and not a zombie waiting to be reaped.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Whether every node of the 3-node cluster is running.
pub fn cluster_running() -> bool {
    (1..=NODES).all(|n| {
        std::fs::read_to_string(node_dir(n).join("kafka.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .is_some_and(alive)
    })
}

/// Starts the killed node(s) again when dropped, also when the test fails.
pub struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        if let Err(e) = dev_up_3() {
            eprintln!("restarting the killed broker: {e}");
        }
    }
}
