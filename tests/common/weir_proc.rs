//! `weir` as a child process with its log (stdout and stderr) in a file.
//!
//! Every `WeirProc` is watched by the thread that spawned it: the waiting
//! helpers (`wait_for`, `wait_committed`, `consume_until`,
//! `wait_group_stable`, the sink helpers' waits) call [`check_alive`] on
//! every round and fail at once, with the exit status and the tail of the
//! log, when a watched process died, instead of timing out minutes later. A
//! process the test ends itself (`kill`, `terminate`) or expects to exit
//! (`unwatch`) is no longer watched. Thread-local, so tests running in
//! parallel threads of one binary do not see each other's processes.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{bootstrap, weir_bin};

struct Watched {
    child: Weak<Mutex<Child>>,
    name: String,
    log: PathBuf,
    pid: u32,
}

thread_local! {
    static WATCHED: RefCell<Vec<Watched>> = const { RefCell::new(Vec::new()) };
}

/// The last `lines` lines of the file at `log`.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A description of the first watched process (spawned by this thread)
/// that has exited, if any; it is no longer watched afterwards.
pub fn dead_process() -> Option<String> {
    WATCHED.with(|w| {
        let mut w = w.borrow_mut();
        w.retain(|x| x.child.strong_count() > 0);
        let pos = w.iter().position(|x| {
            x.child
                .upgrade()
                .is_some_and(|c| matches!(c.lock().unwrap().try_wait(), Ok(Some(_))))
        })?;
        let x = w.remove(pos);
        let status = x
            .child
            .upgrade()
            .and_then(|c| c.lock().unwrap().try_wait().ok().flatten())
            .map_or("?".to_string(), |s| s.to_string());
        Some(format!(
            "weir {} (pid {}) died: {status}; the tail of its log ({}):\n{}",
            x.name,
            x.pid,
            x.log.display(),
            log_tail(&x.log, 40)
        ))
    })
}

/// Panics if a watched `weir` process of this thread has exited.
pub fn check_alive() {
    if let Some(msg) = dead_process() {
        panic!("{msg}");
    }
}

/// `weir` as a child process, its stdout and stderr in a log file;
/// SIGKILLed when dropped (the tail of its log printed if the thread is
/// panicking).
pub struct WeirProc {
    child: Arc<Mutex<Child>>,
    pid: u32,
    /// The log file's stem ("run-0.log" → "run-0").
    pub name: String,
    pub log: PathBuf,
}

impl WeirProc {
    /// `weir <args>` (the binary of [`weir_bin`]) with `WEIR_BOOTSTRAP` set
    /// to the tests' broker and `RUST_LOG` to `WEIR_TEST_LOG` (default
    /// `info,librdkafka=warn`), its output in `log` (created or truncated).
    pub fn spawn<S: AsRef<OsStr>>(args: &[S], log: &Path) -> WeirProc {
        WeirProc::spawn_env(args, log, &[])
    }

    /// [`WeirProc::spawn`] with extra environment variables.
    pub fn spawn_env<S: AsRef<OsStr>>(args: &[S], log: &Path, env: &[(&str, &str)]) -> WeirProc {
        WeirProc::spawn_limited(args, log, env, None)
    }

    /// [`WeirProc::spawn_env`] with at most `nofile` open descriptors
    /// (`setrlimit(RLIMIT_NOFILE)` in the child, soft and hard), as under
    /// the common default of 1,024.
    pub fn spawn_limited<S: AsRef<OsStr>>(
        args: &[S],
        log: &Path,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> WeirProc {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(weir_bin());
        cmd.args(args).env("WEIR_BOOTSTRAP", bootstrap()).env(
            "RUST_LOG",
            std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: between fork and exec only setrlimit, which is
            // async-signal-safe, on a value copied in.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", weir_bin()));
        let pid = child.id();
        let name = log
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".log").unwrap_or(n).to_string())
            .unwrap_or_else(|| format!("pid {pid}"));
        let child = Arc::new(Mutex::new(child));
        WATCHED.with(|w| {
            w.borrow_mut().push(Watched {
                child: Arc::downgrade(&child),
                name: name.clone(),
                log: log.to_path_buf(),
                pid,
            })
        });
        WeirProc {
            child,
            pid,
            name,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `kill -<sig>` (e.g. "STOP", "CONT", "TERM") to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {} (pid {})", self.name, self.pid);
    }

    /// SIGSTOP: frozen (a GC pause, a stalled VM) until [`WeirProc::cont`].
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`WeirProc::stop`].
    pub fn cont(&self) {
        self.signal("CONT");
    }

    /// SIGKILL and reap: nothing gets finished, committed or aborted.
    pub fn kill(self) {
        self.unwatch();
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// No longer watched: the test expects it to exit by itself.
    pub fn unwatch(&self) {
        WATCHED.with(|w| w.borrow_mut().retain(|x| x.pid != self.pid));
    }

    /// The exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    pub fn assert_running(&self) {
        if let Some(status) = self.exited() {
            panic!(
                "weir {} exited early with {status}; the tail of its log ({}):\n{}",
                self.name,
                self.log.display(),
                self.tail(60)
            );
        }
    }

    /// SIGTERM and wait up to 60 s: the exit status, or `None` if it was
    /// still running then (it is SIGKILLed). The signal is sent once the
    /// process has logged something (up to 30 s): a signal during `exec`,
    /// before any of weir's code runs, kills any process.
    pub fn terminate_status(self) -> Option<ExitStatus> {
        self.unwatch();
        let started = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&self.log).map_or(0, |m| m.len()) == 0 && Instant::now() < started {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM (see [`WeirProc::terminate_status`]) and require a clean exit
    /// (status 0) within 60 s.
    pub fn terminate(self) {
        let (name, log) = (self.name.clone(), self.log.clone());
        match self.terminate_status() {
            Some(s) if s.success() => {}
            Some(s) => panic!(
                "weir {name} exited with {s} after SIGTERM; the tail of its log ({}):\n{}",
                log.display(),
                log_tail(&log, 60)
            ),
            None => panic!("weir {name} did not stop within 60 s of SIGTERM"),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for WeirProc {
    fn drop(&mut self) {
        // A SIGSTOPped process dies on SIGKILL too.
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- tail of weir {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.tail(40)
            );
        }
    }
}
