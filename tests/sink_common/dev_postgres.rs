//! The `./dev up` PostgreSQL cluster, stopped and started the way `./dev`
//! does it (`pg_ctl` as the `postgres` user), for tests that take the
//! database away (tests/sink_pg_restart.rs, tests/chaos.rs).

use std::path::PathBuf;
use std::process::Command;

use super::pg_url;
use crate::common;

/// The `./dev up` Postgres cluster.
pub struct DevPostgres {
    pg_ctl: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: String,
}

impl DevPostgres {
    pub fn find() -> DevPostgres {
        // Canonical: a worktree's .cache may be a symlink to the main
        // checkout's, whose ./dev recognises the server by the paths on its
        // command line.
        let root = common::checkout().join(".cache/pg");
        let root = root.canonicalize().unwrap_or(root);
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (./dev up installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin/pg_ctl")))
            .filter(|p| p.exists())
            .collect();
        bins.sort_by_key(|p| {
            p.parent()
                .and_then(|b| b.parent())
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
        });
        let port = pg_url()
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap_or("5433")
            .to_string();
        DevPostgres {
            pg_ctl: bins.pop().expect("pg_ctl"),
            data: root.join("data"),
            sock: root.join("run"),
            log: root.join("postgres.log"),
            port,
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        let mut cmd = if is_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&self.pg_ctl);
            c
        } else {
            Command::new(&self.pg_ctl)
        };
        cmd.arg("-D")
            .arg(&self.data)
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn running(&self) -> bool {
        self.pg_ctl(&["status"])
    }

    pub fn stop(&self) {
        assert!(
            self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]),
            "pg_ctl stop failed"
        );
    }

    pub fn start(&self) {
        assert!(self.try_start(), "pg_ctl start failed; see {}", self.log.display());
    }

    /// Starts the cluster unless it runs; false if `pg_ctl start` failed.
    /// Never panics (usable from a guard's `Drop` while unwinding).
    pub fn try_start(&self) -> bool {
        if self.running() {
            return true;
        }
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.sock.display()
        );
        let log = self.log.display().to_string();
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "-o", &opts, "start"])
    }
}

/// Restarts Postgres when dropped, whatever happened (without panicking:
/// a failed start is printed).
pub struct Restart<'a>(pub &'a DevPostgres);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if !self.0.try_start() {
            eprintln!("pg_ctl start failed; see {}", self.0.log.display());
        }
    }
}
