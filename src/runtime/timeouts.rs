//! Every time limit of `weir run`'s loop, in one place, and the rules that
//! tie them together (checked by the tests below).
//!
//! The loop runs on one thread and blocks in librdkafka calls. Three
//! watchers judge it from outside, and each must not mistake a slow but
//! healthy call for a dead loop:
//!
//! | watcher | judges | limit |
//! |---|---|---|
//! | the liveness probe (`/healthz`) | time since the loop's last beat | [`crate::health::STALLED_AFTER`] (90 s) |
//! | the group coordinator | time between two `poll`s | [`MAX_POLL_INTERVAL`] (600 s) |
//! | the transaction coordinator | age of an open transaction | [`TRANSACTION_TIMEOUT`] (10 s) |
//!
//! Rules:
//! - The loop beats before every blocking call (`Collector` does, for each
//!   transaction call and flush), so the liveness limit only has to exceed
//!   the longest *single* call (`LONGEST_CALL` in the tests).
//! - The group's poll limit exceeds the longest *sequence* of calls between
//!   two polls: a failed commit (flush, offsets, end of transaction with
//!   its retries), the abort and a new producer, then the rewind
//!   (`WORST_ROUND` in the tests). Beyond it, a healthy instance would be thrown out
//!   of the group during a coordinator outage.
//! - The transaction timeout is short on purpose (Kafka Streams' default):
//!   a crashed instance's open transaction blocks `read_committed` readers
//!   for at most that long. A live instance's transaction lasts one commit
//!   interval plus the commit; one that takes longer is aborted by the
//!   broker, and the commit fails and is retried from the last commit.
//! - Cancelled restores are not waited for in the rebalance callback: they
//!   are told to stop and kept aside; a task opened again while its old
//!   restore still runs waits for it, and shutdown waits for them together,
//!   not one after another: at most [`CANCEL_WAIT`] for all of them.

use std::time::Duration;

/// One librdkafka transaction call (`init_transactions`,
/// `commit_transaction`, `abort_transaction`) or offset lookup.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a retriable `commit_transaction` error is retried (the same
/// call again, as librdkafka documents) before the outcome counts as
/// unknown and the producer is replaced.
pub(super) const END_TXN_RETRY: Duration = Duration::from_secs(30);

/// How long starting a replacement producer (`init_transactions`) is
/// retried while the broker does not answer.
pub(super) const RENEW_RETRY: Duration = Duration::from_secs(60);

/// How long `send_offsets_to_transaction` is waited for. librdkafka (2.12)
/// can block in it forever when the group coordinator's broker dies: its
/// coordinator lookup ignores the call's timeout (confluentinc/librdkafka
/// #5456, #5511).
pub(super) const SEND_OFFSETS_WAIT: Duration = Duration::from_secs(30);

/// How long a commit waits for its records to be delivered.
pub(super) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an offset commit (at-least-once) is retried while the group
/// coordinator is unavailable.
pub(super) const COMMIT_RETRY: Duration = Duration::from_secs(30);

/// How long a rewind retries reading the committed offsets (each try at
/// most [`OFFSETS_TRY`]) while the group coordinator does not answer: a
/// network partition or a stalled broker outlasting one call must not end
/// `weir run` (chaos seed 5035: a 23 s partition right after a full disk
/// was waited out, and the one 30 s call that spanned it timed out).
pub(super) const OFFSETS_RETRY: Duration = Duration::from_secs(60);
pub(super) const OFFSETS_TRY: Duration = Duration::from_secs(10);

/// One seek of a partition, and how long a rewind retries its seeks.
pub(super) const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const SEEK_RETRY: Duration = Duration::from_secs(20);

/// The broker aborts a transaction open this long.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest time between two `poll`s before the group coordinator
/// drops the member (`max.poll.interval.ms`).
pub(super) const MAX_POLL_INTERVAL: Duration = Duration::from_secs(600);

/// How long a restore's position may stay below the changelog's end
/// without a record before it says that a transaction looks hung there: the
/// broker aborts an expired transaction within the transaction timeout plus
/// its clean-up interval (`transaction.abort.timed.out.transaction.cleanup.interval.ms`,
/// 10 s by default), so a position held longer than that is held by an
/// open transaction the broker has forgotten (docs/chaos.md, findings).
pub(super) const HANGING_TRANSACTION_AFTER: Duration = Duration::from_secs(60);

/// How long cancelled restores are waited for, all together (when one of
/// their tasks is opened again, at shutdown).
pub(super) const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// How long reading a changelog's offsets is retried (a leader moving).
pub(super) const WATERMARK_RETRY: Duration = Duration::from_secs(120);

/// The first wait after a state write failed on a full disk (see `disk`),
/// doubled after each failure in a row up to [`DISK_FULL_BACKOFF_MAX`]:
/// space freed is used within that much. The loop polls meanwhile (one
/// poll at most 100 ms), so none of these holds it up.
pub(super) const DISK_FULL_BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub(super) const DISK_FULL_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Bytes the probe of a full disk writes before the tasks reopen their
/// databases (a page: a filesystem with less is still full for RocksDB).
pub(super) const DISK_FULL_PROBE_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::STALLED_AFTER;

    /// The longest single blocking call of the loop.
    const LONGEST_CALL: Duration = max(
        max(CALL_TIMEOUT, END_TXN_RETRY),
        max(
            max(SEND_OFFSETS_WAIT, FLUSH_TIMEOUT),
            max(COMMIT_RETRY, max(SEEK_RETRY, OFFSETS_TRY)),
        ),
    );

    /// The longest round of the loop between two polls: a commit that fails at
    /// its end (flush, offsets, end of transaction retried), the abort
    /// (`abort_transaction`, then a new producer's `init_transactions`), and
    /// the rewind (committed offsets, seeks).
    ///
    /// A retry loop's last call may start just before its deadline: each
    /// retried phase counts one call more than its retry time.
    const WORST_ROUND: Duration = Duration::from_secs(
        FLUSH_TIMEOUT.as_secs()
            + SEND_OFFSETS_WAIT.as_secs()
            + (END_TXN_RETRY.as_secs() + CALL_TIMEOUT.as_secs())
            + (END_TXN_RETRY.as_secs() + CALL_TIMEOUT.as_secs())
            + (RENEW_RETRY.as_secs() + CALL_TIMEOUT.as_secs())
            + (OFFSETS_RETRY.as_secs() + OFFSETS_TRY.as_secs())
            + SEEK_RETRY.as_secs()
            + SEEK_TIMEOUT.as_secs(),
    );

    const fn max(a: Duration, b: Duration) -> Duration {
        if a.as_nanos() > b.as_nanos() {
            a
        } else {
            b
        }
    }

    #[test]
    fn liveness_outlasts_the_longest_call() {
        assert!(
            STALLED_AFTER > LONGEST_CALL * 2,
            "{STALLED_AFTER:?} vs {LONGEST_CALL:?}"
        );
    }

    #[test]
    fn a_hanging_transaction_is_told_from_an_expiring_one() {
        // The broker's default clean-up interval of timed-out transactions.
        let cleanup = Duration::from_secs(10);
        assert!(HANGING_TRANSACTION_AFTER >= (TRANSACTION_TIMEOUT + cleanup) * 2);
    }

    #[test]
    fn the_group_outlasts_the_worst_round() {
        assert!(
            MAX_POLL_INTERVAL > WORST_ROUND,
            "{MAX_POLL_INTERVAL:?} vs {WORST_ROUND:?}"
        );
    }
}
