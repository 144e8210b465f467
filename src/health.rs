//! Liveness and readiness of `weir run` and `weir sink`, served on the
//! metrics address as `/healthz` and `/readyz` (see [`crate::metrics`]).
//!
//! One [`Health`] per process, like the metrics recorder: the consumer
//! loops, the rebalance callback and the task manager update it with plain
//! atomics; the HTTP server only reads it.
//!
//! - **alive** (`/healthz`): the process answers and, once its main loop
//!   runs, the loop came round within [`STALLED_AFTER`] (a loop stuck in a
//!   client call is what a restart cures).
//! - **ready** (`/readyz`): alive, the loop is running, and for `weir run`
//!   the instance is in its consumer group (received an assignment) with no
//!   task restoring its stores; for `weir sink` the last Postgres operation
//!   succeeded.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A main loop that has not come round for this long counts as stalled:
/// neither alive nor ready. Longer than any single blocking call of the
/// loops (a commit, a rewind, reading committed offsets: 60 s at most).
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(90);

/// Which process this is: readiness means something else for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Nothing set yet (only `/metrics` users, tests).
    Unknown = 0,
    Run = 1,
    Sink = 2,
}

/// The state the health endpoints report.
#[derive(Debug)]
pub(crate) struct Health {
    epoch: Instant,
    role: AtomicU8,
    /// The main loop started.
    running: AtomicBool,
    /// Milliseconds since `epoch` at the loop's last round.
    beat_ms: AtomicU64,
    /// `weir run`: in the consumer group with an assignment.
    in_group: AtomicBool,
    /// `weir run`: an assignment arrived and its tasks are not opened yet
    /// (until they are, nothing counts as restoring).
    assigning: AtomicBool,
    /// `weir run`: tasks restoring their stores.
    restoring: AtomicUsize,
    /// `weir sink`: the last Postgres operation succeeded.
    postgres: AtomicBool,
    /// `weir run`: why its state cannot be written (a full disk), while
    /// it waits for space.
    state_error: std::sync::Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub(crate) fn new() -> Self {
        Health {
            epoch: Instant::now(),
            role: AtomicU8::new(Role::Unknown as u8),
            running: AtomicBool::new(false),
            beat_ms: AtomicU64::new(0),
            in_group: AtomicBool::new(false),
            assigning: AtomicBool::new(false),
            restoring: AtomicUsize::new(0),
            postgres: AtomicBool::new(false),
            state_error: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Relaxed);
    }

    fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Run,
            2 => Role::Sink,
            _ => Role::Unknown,
        }
    }

    /// The main loop came round (also marks it running).
    pub(crate) fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.beat_ms.store(ms, Ordering::Relaxed);
        self.running.store(true, Ordering::Relaxed);
    }

    /// The main loop ended (shutting down): not ready anymore.
    pub(crate) fn stopped(&self) {
        self.running.store(false, Ordering::Relaxed);
        self.in_group.store(false, Ordering::Relaxed);
    }

    /// Partitions were assigned (the rebalance callback).
    pub(crate) fn assigned(&self) {
        self.assigning.store(true, Ordering::SeqCst);
    }

    /// The loop opened the tasks of the assignment (their restores, if
    /// any, are counted now): in the group.
    pub(crate) fn tasks_opened(&self) {
        if self.assigning.swap(false, Ordering::SeqCst) {
            self.in_group.store(true, Ordering::SeqCst);
        }
    }

    /// Out of the group (partitions lost), or back in it (tests).
    pub(crate) fn set_in_group(&self, v: bool) {
        self.in_group.store(v, Ordering::SeqCst);
        self.assigning.store(false, Ordering::SeqCst);
    }

    pub(crate) fn set_restoring(&self, n: usize) {
        self.restoring.store(n, Ordering::SeqCst);
    }

    pub(crate) fn set_postgres(&self, v: bool) {
        self.postgres.store(v, Ordering::Relaxed);
    }

    /// The state cannot be written (`Some(why)`), or can again (`None`).
    pub(crate) fn set_state_error(&self, why: Option<String>) {
        *crate::support::lock::lock(&self.state_error) = why;
    }

    fn since_beat(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.beat_ms.load(Ordering::Relaxed)))
    }

    /// `Ok` when alive, else why not.
    pub(crate) fn liveness(&self) -> Result<(), String> {
        if self.running.load(Ordering::Relaxed) && self.since_beat() > STALLED_AFTER {
            return Err(format!(
                "main loop stalled: last round {} s ago",
                self.since_beat().as_secs()
            ));
        }
        // Not alive either: nothing is processed or committed meanwhile
        // (a restart does no harm, and cures nothing either).
        if let Some(why) = crate::support::lock::lock(&self.state_error).as_deref() {
            return Err(why.to_string());
        }
        Ok(())
    }

    /// `Ok` when ready, else why not.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        self.liveness()?;
        if !self.running.load(Ordering::Relaxed) {
            return Err("starting (waiting for the broker, creating topics) or stopping".into());
        }
        match self.role() {
            Role::Run => {
                if self.assigning.load(Ordering::SeqCst) {
                    return Err("partitions assigned, opening their tasks".into());
                }
                if !self.in_group.load(Ordering::SeqCst) {
                    return Err("not in the consumer group yet (no assignment)".into());
                }
                let n = self.restoring.load(Ordering::SeqCst);
                if n > 0 {
                    return Err(format!("{n} task(s) restoring their stores"));
                }
                Ok(())
            }
            Role::Sink => match self.postgres.load(Ordering::Relaxed) {
                true => Ok(()),
                false => Err("not connected to Postgres".into()),
            },
            Role::Unknown => Ok(()),
        }
    }
}

/// This process's health state.
pub(crate) fn global() -> &'static Health {
    static HEALTH: OnceLock<Health> = OnceLock::new();
    HEALTH.get_or_init(Health::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_is_ready_only_in_the_group_with_nothing_restoring() {
        let h = Health::new();
        h.set_role(Role::Run);
        assert!(h.liveness().is_ok(), "alive while starting");
        assert!(h.readiness().unwrap_err().contains("starting"));
        h.beat();
        assert!(h.readiness().unwrap_err().contains("consumer group"));
        h.assigned();
        assert!(h.readiness().unwrap_err().contains("opening"), "tasks not opened yet");
        h.set_restoring(2);
        h.tasks_opened();
        assert_eq!(h.readiness().unwrap_err(), "2 task(s) restoring their stores");
        h.set_restoring(0);
        assert_eq!(h.readiness(), Ok(()));
        h.set_in_group(false);
        assert!(h.readiness().is_err(), "partitions lost: out of the group");
        h.set_in_group(true);
        h.stopped();
        assert!(h.readiness().is_err(), "stopping");
    }

    #[test]
    fn a_state_that_cannot_be_written_is_neither_alive_nor_ready() {
        let h = Health::new();
        h.set_role(Role::Run);
        h.beat();
        h.assigned();
        h.tasks_opened();
        assert_eq!(h.readiness(), Ok(()));
        h.set_state_error(Some("state directory /s full (ENOSPC)".into()));
        assert_eq!(h.liveness().unwrap_err(), "state directory /s full (ENOSPC)");
        assert!(h.readiness().unwrap_err().contains("ENOSPC"));
        h.set_state_error(None);
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn sink_is_ready_while_postgres_answers() {
        let h = Health::new();
        h.set_role(Role::Sink);
        h.beat();
        assert!(h.readiness().unwrap_err().contains("Postgres"));
        h.set_postgres(true);
        assert_eq!(h.readiness(), Ok(()));
        h.set_postgres(false);
        assert!(h.readiness().is_err());
    }

    #[test]
    fn a_stalled_loop_is_neither_alive_nor_ready() {
        let Some(epoch) = Instant::now().checked_sub(STALLED_AFTER + Duration::from_secs(1)) else {
            return; // the machine booted less than STALLED_AFTER ago
        };
        // Its last round was at the epoch, longer than STALLED_AFTER ago.
        let h = Health { epoch, ..Health::new() };
        h.set_role(Role::Sink);
        h.set_postgres(true);
        h.running.store(true, Ordering::Relaxed);
        assert!(h.liveness().unwrap_err().contains("stalled"));
        assert!(h.readiness().is_err());
        h.beat();
        assert_eq!(h.readiness(), Ok(()));
    }
}
