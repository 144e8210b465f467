//! A full state filesystem (ENOSPC, EDQUOT) under `weir run`.
//!
//! Every state write weir makes is all-or-nothing: a commit's store
//! changes go to RocksDB with the changelog offsets they reach in one
//! batch, after the transaction committed (see `tasks`), and a restore
//! writes each batch with its offset. So when a write fails because the
//! disk is full, RocksDB still holds a state with its true position, and
//! the way back is the one every other task error takes: abort the open
//! transaction (nothing of it becomes visible), drop every task (their
//! caches no longer match RocksDB), close their databases (RocksDB leaves
//! its read-only background-error state only on `Resume` or a reopen), and
//! rewind the consumer to the committed offsets. Unlike other errors this
//! one lasts until someone frees space, so the loop then waits
//! ([`DiskBackoff`]): it keeps polling (its group membership, rebalances)
//! but processes nothing, so nothing is written and nothing committed;
//! after each wait it tries a small write of its own in the state
//! directory, and only when that succeeds rewinds once more and goes on:
//! the tasks reopen their databases and restore the changelog tail their
//! last commit left out. Meanwhile `/healthz` says why it is unhealthy and
//! `weir_state_errors_total{kind="disk_full"}` counts the failures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::timeouts::{DISK_FULL_BACKOFF_FIRST, DISK_FULL_BACKOFF_MAX, DISK_FULL_PROBE_BYTES};
use super::RuntimeError;
use crate::state::{disk_full_io, StoreError};

/// What a failure on a full disk concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DiskFull {
    /// The file or directory whose write failed (the state directory if
    /// unknown).
    pub path: String,
    /// `ENOSPC` or `EDQUOT`.
    pub errno: &'static str,
    /// The stores of the task database that failed ("" for files of weir's
    /// own).
    pub store: String,
    /// The error as reported.
    pub error: String,
}

impl RuntimeError {
    /// `Some` when this failed because the state's filesystem is full.
    pub(super) fn disk_full(&self) -> Option<DiskFull> {
        let store_error = |e: &StoreError| {
            let errno = e.disk_full()?;
            let (path, store) = e.location();
            Some(DiskFull {
                path: path.unwrap_or_default().to_string(),
                errno,
                store: store.unwrap_or_default().to_string(),
                error: e.to_string(),
            })
        };
        match self {
            RuntimeError::Store(e) => store_error(e),
            RuntimeError::Process(crate::processor::ProcessError::Store(e)) => store_error(e),
            RuntimeError::Io { path, source } => Some(DiskFull {
                path: path.clone(),
                errno: disk_full_io(source)?,
                store: String::new(),
                error: source.to_string(),
            }),
            _ => None,
        }
    }
}

/// The waits between attempts while the disk is full: doubling from
/// [`DISK_FULL_BACKOFF_FIRST`] up to [`DISK_FULL_BACKOFF_MAX`], so space
/// that comes back is used within that much, and a disk that stays full
/// costs a write attempt (and a log line) that often at most.
#[derive(Debug, Default)]
pub(super) struct DiskBackoff {
    /// Failures since the last success.
    failures: u32,
    /// Waiting until then.
    until: Option<Instant>,
    /// Since the last resume: healthy again once a commit interval passed
    /// without a failure.
    resumed_at: Option<Instant>,
}

/// What the loop should do this round.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Nothing wrong: process.
    Run,
    /// Waiting for space: poll, process nothing.
    Wait,
    /// The wait is over: try again.
    Retry,
}

impl DiskBackoff {
    /// The wait after the `n`th failure in a row (n ≥ 1).
    pub(super) fn delay(n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(16);
        DISK_FULL_BACKOFF_FIRST
            .saturating_mul(1 << doublings)
            .min(DISK_FULL_BACKOFF_MAX)
    }

    /// A write failed on a full disk at `now`: the wait before the next try.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        self.failures += 1;
        self.resumed_at = None;
        let d = Self::delay(self.failures);
        self.until = Some(now + d);
        d
    }

    pub(super) fn phase(&self, now: Instant) -> Phase {
        match self.until {
            None => Phase::Run,
            Some(t) if now < t => Phase::Wait,
            Some(_) => Phase::Retry,
        }
    }

    /// The retry's own check failed again (still full).
    pub(super) fn still_full(&mut self, now: Instant) -> Duration {
        self.failed(now)
    }

    /// The retry goes ahead at `now`.
    pub(super) fn resume(&mut self, now: Instant) {
        self.until = None;
        self.resumed_at = Some(now);
    }

    /// A round went well at `now`: `true` once, when the instance counts
    /// as recovered (`settle` after resuming without a failure).
    pub(super) fn round_ok(&mut self, now: Instant, settle: Duration) -> bool {
        match self.resumed_at {
            Some(t) if now.saturating_duration_since(t) >= settle => {
                self.resumed_at = None;
                self.failures = 0;
                true
            }
            _ => false,
        }
    }

    /// Failures since the last recovery.
    pub(super) fn failures(&self) -> u32 {
        self.failures
    }
}

/// Writes (and deletes) a small file in the state directory: whether
/// there is room again, before the tasks reopen their databases (a reopen
/// writes a new MANIFEST, WAL and OPTIONS file, and flushes what the WAL
/// holds).
pub(super) fn probe(app_dir: &Path) -> Result<(), RuntimeError> {
    use std::io::Write;
    let path: PathBuf = app_dir.join(".space-probe");
    let io = |source| RuntimeError::Io {
        path: path.display().to_string(),
        source,
    };
    // The directory itself may be gone (deleted to rebuild the state).
    let result = crate::state::create_private_dir(app_dir)
        .and_then(|()| std::fs::File::create(&path))
        .and_then(|mut f| {
            f.write_all(&[0u8; DISK_FULL_PROBE_BYTES])?;
            f.sync_all()
        });
    let _ = std::fs::remove_file(&path);
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        assert_eq!(DiskBackoff::delay(1), DISK_FULL_BACKOFF_FIRST);
        assert_eq!(DiskBackoff::delay(2), DISK_FULL_BACKOFF_FIRST * 2);
        assert_eq!(DiskBackoff::delay(3), DISK_FULL_BACKOFF_FIRST * 4);
        assert_eq!(DiskBackoff::delay(40), DISK_FULL_BACKOFF_MAX);
        assert_eq!(DiskBackoff::delay(u32::MAX), DISK_FULL_BACKOFF_MAX);
        let mut last = Duration::ZERO;
        for n in 1..30 {
            let d = DiskBackoff::delay(n);
            assert!(d >= last && d <= DISK_FULL_BACKOFF_MAX, "{n}: {d:?}");
            last = d;
        }
    }

    #[test]
    fn a_failure_waits_then_retries_and_recovers_after_a_quiet_interval() {
        let settle = Duration::from_millis(200);
        let t0 = Instant::now();
        let mut b = DiskBackoff::default();
        assert_eq!(b.phase(t0), Phase::Run);
        let d = b.failed(t0);
        assert_eq!(d, DISK_FULL_BACKOFF_FIRST);
        assert_eq!(b.phase(t0), Phase::Wait);
        assert_eq!(b.phase(t0 + d), Phase::Retry);
        // Still full at the retry: a longer wait.
        assert_eq!(b.still_full(t0 + d), DISK_FULL_BACKOFF_FIRST * 2);
        let t1 = t0 + d + DISK_FULL_BACKOFF_FIRST * 2;
        assert_eq!(b.phase(t1), Phase::Retry);
        b.resume(t1);
        assert_eq!(b.phase(t1), Phase::Run);
        assert!(!b.round_ok(t1, settle), "not before a commit interval");
        // A failure right after resuming: not recovered, and the wait grows.
        assert_eq!(b.failed(t1), DISK_FULL_BACKOFF_FIRST * 4);
        assert_eq!(b.failures(), 3);
        let t2 = t1 + DISK_FULL_BACKOFF_MAX;
        b.resume(t2);
        assert!(b.round_ok(t2 + settle, settle));
        assert!(!b.round_ok(t2 + settle * 2, settle), "reported once");
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(t2), DISK_FULL_BACKOFF_FIRST, "from the start again");
    }

    #[test]
    fn runtime_errors_on_a_full_disk_are_recognised_with_their_path() {
        let io = RuntimeError::Io {
            path: "/state/app/process.id".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let f = io.disk_full().unwrap();
        assert_eq!((f.path.as_str(), f.errno), ("/state/app/process.id", "ENOSPC"));
        let other = RuntimeError::Io {
            path: "/state/app/process.id".into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        assert_eq!(other.disk_full(), None, "EACCES");
        let store = RuntimeError::Store(StoreError::Io {
            path: "/state/app/1_2/rocksdb".into(),
            source: std::io::Error::from_raw_os_error(122),
        });
        assert_eq!(store.disk_full().unwrap().errno, "EDQUOT");
        assert_eq!(RuntimeError::NoGroupMetadata.disk_full(), None);
    }

    #[test]
    fn the_probe_writes_nothing_that_stays() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let gone = dir.path().join("missing");
        probe(&gone).unwrap();
        assert!(gone.is_dir(), "a deleted state directory is made again");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(probe(&dir.path().join("file")).is_err(), "not a directory");
    }
}
