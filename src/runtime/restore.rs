//! Restoring a store from its changelog topic before a task processes.
//!
//! The store's RocksDB holds the changelog offset it is at (written with
//! the data, see `state::rocks`), so after a crash only the changelog after
//! it is replayed; a store with no offset (new or lost state directory), or
//! an offset the topic no longer has, is cleared and restored from the
//! start. Every restored batch is written together with the offset it
//! reaches, so a crash in the middle of a restore resumes where it stopped.
//!
//! # Without the WAL
//!
//! Restored batches skip RocksDB's write-ahead log
//! (`state::rocks::RestoreWriter`): whatever a crash takes can be fetched
//! again from the changelog, and the WAL wrote every restored byte twice.
//! Crash safety then rests on three things:
//!
//! - **Data and offset in one batch.** Each batch holds the records and
//!   the changelog offset they reach (in the `weir.meta` column family),
//!   applied atomically to the memtables: no flush can take one without
//!   the other.
//! - **Atomic flush.** Task databases open with `atomic_flush`, so every
//!   flush switches the memtables of *all* column families at one point
//!   between two writes and records the result in one MANIFEST entry.
//!   That holds for the flushes RocksDB starts on its own in the middle of
//!   a restore, too: a store's memtable full (`write_buffer_size`), or the
//!   process's write buffer manager over its budget (`--state-memory`),
//!   which with atomic flush flushes every column family of the database
//!   it stops. Without it RocksDB would flush the data's column family
//!   alone and leave the offset in an unflushed memtable (or the reverse);
//!   a crash then kept data past its offset, which is harmless (replayed
//!   again), or an offset past its data, which silently loses records.
//!   With it, a SIGKILL mid-restore keeps exactly the batches flushed so
//!   far with the offset of the last of them, and the restart resumes from
//!   there (`tests/engine_restore.rs` kills a full restore and checks the
//!   result). A full restore's first write, the clear (with the WAL), is
//!   either flushed with later batches or replayed from the WAL on its own:
//!   either way the offset and the data agree.
//! - **A flush before the task processes.** [`restore`] ends with
//!   `TaskDb::flush` (also when cancelled), and the task starts only after
//!   it returned. The task's commits write with the WAL: one of them after
//!   restored data still only in memtables would, after a crash, come back
//!   from the WAL with its newer offset but without the restored data
//!   under it. A failed flush fails the restore (a full disk goes the way
//!   of every full-disk error, `runtime::disk`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, Counter, Gauge};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::collector::lock;
use super::timeouts::{CALL_TIMEOUT, CANCEL_WAIT, HANGING_TRANSACTION_AFTER, WATERMARK_RETRY};
use super::{ChangelogBehind, RuntimeError};
use crate::kafka::{client_config, ClientConfigExt};
use crate::state::rocks::TaskDb;

/// Records per restored batch (one RocksDB write each).
const BATCH: usize = 10_000;

/// Changelog records from which a restore raises its store's memtable
/// ([`restore_write_buffer`]); below, it keeps the usual 4 MiB (changing
/// it writes RocksDB's OPTIONS file twice, not worth it for a tail).
const BIG_RESTORE: i64 = 50_000;

/// The memtable of a restoring store: the process's memtable budget (half
/// the state memory) shared by the restores that run at once.
fn restore_write_buffer() -> usize {
    crate::state::rocks::state_memory().budget() / 2 / RESTORE_SLOTS
}

/// How often a running restore logs its progress and sets its rate.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A store's restore metrics (docs/metrics.md), looked up once: the
/// `metrics` macros build and hash their key on every call.
struct Progress {
    records: Counter,
    remaining: Gauge,
    rate: Gauge,
}

impl Progress {
    fn new(app: &str, task: &str, store: &str) -> Progress {
        let labels = [
            ("topology", app.to_string()),
            ("store", store.to_string()),
            ("task", task.to_string()),
        ];
        let records = counter!("weir_restore_records_total", &labels);
        // Registered at 0 when there is nothing to restore.
        records.increment(0);
        Progress {
            records,
            remaining: gauge!("weir_restore_remaining_records", &labels),
            rate: gauge!("weir_restore_records_per_second", &labels),
        }
    }
}

/// Restores that read at once; the others wait for a free slot, without
/// Kafka clients. Each has two clients and a RocksDB write stream: with 96
/// partitions restoring at once, librdkafka's prefetch and the threads
/// alone took hundreds of MiB. Four, not two: a restore keeps about one
/// core busy between its consumer, the memtable inserts and RocksDB's
/// flushes, and with two slots the third of three equal stores restored
/// alone, after the others (a 0.9M-record full restore of three
/// partitions on 2 cores: 2.0–2.5 s with four slots against 2.8–3.2 s
/// with two; BENCHMARKS.md, 2026-12-05).
const RESTORE_SLOTS: usize = 4;

/// What a restore consumer prefetches (librdkafka's default: 64 MiB).
const RESTORE_PREFETCH_KBYTES: u32 = 4 * 1024;

/// How long a restore consumer's fetcher waits once its prefetch queue is
/// full before it looks again (librdkafka's `fetch.queue.backoff.ms`,
/// default 1000). A restore empties 4 MiB in a few ms, so with the default
/// its fetcher sat idle most of each second: a full restore of 0.9M
/// records took 1.7 s with it and 0.8 s with 10 ms, at the same prefetch
/// (bigger fetches and queues got there too, 8 MiB into 16 MiB, but at
/// +170 MB peak RSS): 2026-12-05 in BENCHMARKS.md.
const RESTORE_FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// Full restores of one store in a row after its changelog's start moved
/// past the position being read, before giving up.
const MAX_RESTARTS: u32 = 3;

/// A counting semaphore of the process.
type Semaphore = (Mutex<usize>, Condvar);

/// The restore slots of the process.
fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| (Mutex::new(RESTORE_SLOTS), Condvar::new()))
}

/// Readers being dropped after their restore (see [`Reader`]: that can
/// take long), as many as there are slots: a finished restore frees its
/// slot at once and drops its reader while the next restore connects (the
/// drop took 0.1–0.7 s, the slot idle meanwhile), and at most twice
/// [`RESTORE_SLOTS`] readers exist.
fn closing() -> &'static Semaphore {
    static CLOSING: OnceLock<Semaphore> = OnceLock::new();
    CLOSING.get_or_init(|| (Mutex::new(RESTORE_SLOTS), Condvar::new()))
}

/// A permit of a [`Semaphore`], given back when dropped.
struct Slot(&'static Semaphore);

impl Slot {
    /// Wait for a free permit of `of`, unless `cancel` is set meanwhile.
    fn take(of: &'static Semaphore, cancel: &AtomicBool) -> Option<Slot> {
        let (free, freed) = of;
        let mut n = lock(free);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            if *n > 0 {
                *n -= 1;
                return Some(Slot(of));
            }
            n = freed
                .wait_timeout(n, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (free, freed) = self.0;
        *lock(free) += 1;
        freed.notify_one();
    }
}

/// A task whose stores are being restored, on a thread of their own so that
/// polling and the other tasks go on meanwhile.
pub(super) struct Restoring {
    pub(super) id: String,
    pub(super) db: TaskDb,
    /// The stream time the task committed last.
    pub(super) stream_time: Option<i64>,
    cancel: Arc<AtomicBool>,
    /// The restore thread's result (changelog records replayed), sent
    /// before it drops its consumer: the task starts without waiting for
    /// librdkafka to tear that down.
    done: mpsc::Receiver<Result<i64, RuntimeError>>,
    pub(super) started: Instant,
    /// Input partitions that delivered records meanwhile → the first record
    /// not processed (skipped; the partition is sought back to it).
    pub(super) skipped: HashMap<(String, i32), i64>,
}

impl Restoring {
    /// Restore the `stores` ((name, changelog)) of task `id` on `partition`
    /// into `db`.
    pub(super) fn start(
        bootstrap: &str,
        app: &str,
        id: String,
        partition: i32,
        stores: Vec<(String, String)>,
        db: TaskDb,
        stream_time: Option<i64>,
    ) -> Result<Restoring, RuntimeError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let (thread_db, thread_cancel, task) = (db.clone(), cancel.clone(), id.clone());
        let (bootstrap, app) = (bootstrap.to_string(), app.to_string());
        // Detached: it reports through `done`, and whatever dropping its
        // consumer costs afterwards (see `Reader`) holds up nobody. It lets
        // go of the stores first: the task has its own handle, and a later
        // reopen needs the lock.
        std::thread::Builder::new()
            .name(format!("restore-{id}"))
            .spawn(move || {
                let (db, cancel) = (thread_db, thread_cancel);
                let Some(slot) = Slot::take(slots(), &cancel) else {
                    drop(db);
                    let _ = tx.send(Ok(0));
                    return;
                };
                let reader = match reader(&bootstrap, &app) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut replayed = Ok(0);
                for (store, changelog) in &stores {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let s = StoreRef {
                        task: &task,
                        store,
                        changelog,
                        partition,
                    };
                    replayed = replayed.and_then(|n| Ok(n + restore(&reader, &app, &db, &s, &cancel)?.records));
                    if replayed.is_err() {
                        break;
                    }
                }
                drop(db);
                let _ = tx.send(replayed);
                // The slot goes to the next restore once this reader
                // holds a closing permit (waiting for one never stops:
                // cancelled, the reader is dropped all the same).
                let never = AtomicBool::new(false);
                let closing = Slot::take(closing(), &never);
                drop(slot);
                drop(reader);
                drop(closing);
            })
            .map_err(|source| RuntimeError::Io {
                path: format!("restore thread of task {id}"),
                source,
            })?;
        Ok(Restoring {
            id,
            db,
            stream_time,
            cancel,
            done,
            started: Instant::now(),
            skipped: HashMap::new(),
        })
    }

    /// The restore's result (changelog records replayed) once it is over.
    pub(super) fn finished(&self) -> Option<Result<i64, RuntimeError>> {
        match self.done.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(RuntimeError::Io {
                path: format!("restore thread of task {}", self.id),
                source: std::io::Error::other("the restore thread panicked"),
            })),
        }
    }

    /// Tell the restore thread to stop (it notices within a poll, 50 ms,
    /// or a metadata request, 10 s) without waiting for it: see
    /// [`Restoring::cancel_all`] for who waits.
    pub(super) fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Stop these restores and wait until they have. All are told first,
    /// then waited for together, at most [`CANCEL_WAIT`] in all (one after
    /// the other, 96 slow ones would have taken an hour). The task manager
    /// does not wait when it revokes or drops tasks (in the rebalance
    /// callback, or recovering): it tells them and keeps them aside, and
    /// waits only when one of those tasks is opened again (its stores stay
    /// open until its restore stops) or weir shuts down.
    pub(super) fn cancel_all(restores: impl IntoIterator<Item = Restoring>) {
        let restores: Vec<Restoring> = restores.into_iter().collect();
        for r in &restores {
            r.cancel.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        for r in restores {
            // It notices within a poll (50 ms) or a metadata request (10 s).
            // Its stores stay open until it does, so the task could not be
            // opened again meanwhile: say so if it does not.
            match r.done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::error!(task = %r.id, waited = ?CANCEL_WAIT, "the restore did not stop; its stores stay open until it does")
                }
                _ => tracing::info!(task = %r.id, "restore stopped"),
            }
        }
    }
}

/// What one restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Changelog records replayed.
    pub records: i64,
    /// Whether the store was cleared and rebuilt from the start.
    pub full: bool,
}

/// One store of a task, and the changelog partition behind it.
pub struct StoreRef<'a> {
    pub task: &'a str,
    pub store: &'a str,
    pub changelog: &'a str,
    pub partition: i32,
}

/// The clients a restore reads the changelog with.
///
/// Dropping it can take long: rust-rdkafka closes a consumer with a group
/// and polls until librdkafka reports it closed, which waits for the
/// fetchers of its partitions to stop, with no timeout, and while the
/// partition leader's broker is down that may not come. So the restore
/// thread reports its result before it drops this.
pub struct Reader {
    /// Reads the changelog, committed records only. It only assigns
    /// partitions and never commits, but librdkafka assigns only in a
    /// group.
    committed: BaseConsumer,
    /// Asks for the changelog's end: the high watermark. The same question
    /// from a read_committed client is answered with the last stable
    /// offset, which stays at the first record of any open transaction: a
    /// crashed predecessor's (with another transactional id, e.g. after its
    /// state directory was lost) stays open until the broker times it out,
    /// and records committed after it by a later instance lie beyond that
    /// offset. A restore that ended there lost them (seen in the
    /// exactly-once kill test: a window short of samples).
    log_end: BaseConsumer,
}

pub fn reader(bootstrap: &str, app: &str) -> Result<Reader, RuntimeError> {
    Ok(Reader {
        committed: client_config(bootstrap)
            .set("group.id", format!("{app}-restore"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            // A position the changelog no longer has (its start moved past
            // it: window changelogs are `compact,delete`) is an error here,
            // not a silent jump to the end (librdkafka's default `latest`),
            // which marked the store restored with its tail missing.
            .set("auto.offset.reset", "error")
            .set_default("queued.max.messages.kbytes", RESTORE_PREFETCH_KBYTES.to_string())
            .set_default("fetch.queue.backoff.ms", RESTORE_FETCH_QUEUE_BACKOFF_MS.to_string())
            .create()?,
        log_end: client_config(bootstrap)
            .set("isolation.level", "read_uncommitted")
            .create()?,
    })
}

/// Bring `store` up to the end of its changelog partition, unless `cancel`
/// is set meanwhile (what was restored so far is kept, with its offset).
///
/// The end is the high watermark, read committed: an open transaction
/// (another producer's; this instance's own were aborted when its producer
/// started) holds the restore back until the broker resolves it, at most
/// its transaction timeout plus the broker's check interval.
///
/// Where the stored offset lies decides the start:
/// - within the changelog: the tail after it is replayed;
/// - before its start (retention of a `compact,delete` window changelog
///   deleted what the store was at) or none stored: the store is cleared
///   and restored from the changelog's start;
/// - after its end: the changelog lost records the store holds (it was
///   deleted and created again, or truncated). Restoring would keep a
///   state that no changelog backs, and clearing would silently start
///   from nothing and overwrite correct results downstream with partial
///   ones: weir refuses to start and says what to do.
pub fn restore(
    reader: &Reader,
    app: &str,
    db: &TaskDb,
    s: &StoreRef<'_>,
    cancel: &AtomicBool,
) -> Result<Restored, RuntimeError> {
    let restored = restore_passes(reader, app, db, s, cancel);
    // What was restored without the WAL reaches disk before anything
    // writes this store with it (see the module docs); after a failure
    // too, since the database may be used again.
    let flushed = db.flush();
    let restored = restored?;
    flushed?;
    Ok(restored)
}

fn restore_passes(
    reader: &Reader,
    app: &str,
    db: &TaskDb,
    s: &StoreRef<'_>,
    cancel: &AtomicBool,
) -> Result<Restored, RuntimeError> {
    let mut restarts = 0;
    loop {
        match restore_once(reader, app, db, s, cancel)? {
            Pass::Done(r) => return Ok(r),
            // The changelog's start moved past the position being read
            // while it was read: what is left is restored from scratch.
            Pass::StartGone(e) if restarts < MAX_RESTARTS => {
                restarts += 1;
                tracing::warn!(task = s.task, store = s.store, error = %e, "the changelog's start moved past the restore: restoring from its new start");
                db.clear(s.store, s.changelog, s.partition)?;
            }
            Pass::StartGone(e) => return Err(e.into()),
        }
    }
}

/// How one pass over the changelog ended.
enum Pass {
    Done(Restored),
    /// The position being read is no longer in the changelog.
    StartGone(KafkaError),
}

/// The changelog's offsets (low and high watermark). The partition's leader
/// may be moving (a broker down): retried for a while, as librdkafka does
/// for fetches.
fn watermarks(reader: &Reader, s: &StoreRef<'_>, cancel: &AtomicBool) -> Result<(i64, i64), RuntimeError> {
    let deadline = Instant::now() + WATERMARK_RETRY;
    loop {
        match reader.log_end.fetch_watermarks(s.changelog, s.partition, CALL_TIMEOUT) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() < deadline && !cancel.load(Ordering::Relaxed) => {
                tracing::warn!(task = s.task, store = s.store, error = %e, "reading the changelog's offsets failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn restore_once(
    reader: &Reader,
    app: &str,
    db: &TaskDb,
    s: &StoreRef<'_>,
    cancel: &AtomicBool,
) -> Result<Pass, RuntimeError> {
    let StoreRef {
        task,
        store,
        changelog,
        partition,
    } = *s;
    let (low, high) = watermarks(reader, s, cancel)?;
    let at = db.changelog_offset(changelog, partition)?;
    let (start, full) = match at {
        Some(off) if off > high => {
            return Err(RuntimeError::ChangelogBehind(Box::new(ChangelogBehind {
                store: store.to_string(),
                task: task.to_string(),
                changelog: changelog.to_string(),
                partition,
                stored: off,
                end: high,
            })))
        }
        Some(off) if off >= low => (off, false),
        other => {
            if other.is_some() {
                tracing::warn!(task, store, offset = ?other, low, high, "the changelog no longer starts at or before the stored offset (retention): restoring from its start");
            }
            db.clear(store, changelog, partition)?;
            (low, true)
        }
    };
    let progress = Progress::new(app, task, store);
    if start >= high {
        if at != Some(high) {
            db.apply(&[], &[(changelog, partition, high)])?;
        }
        progress.remaining.set(0.0);
        progress.rate.set(0.0);
        tracing::info!(task, store, offset = start, "store up to date, nothing to restore");
        return Ok(Pass::Done(Restored { records: 0, full }));
    }
    let total = high - start;
    tracing::info!(
        task,
        store,
        changelog,
        partition,
        from = start,
        to = high,
        full,
        "restoring store from changelog"
    );
    let consumer = &reader.committed;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let began = Instant::now();
    // A small tail fits the usual memtable.
    let write_buffer = if total >= BIG_RESTORE {
        restore_write_buffer()
    } else {
        0
    };
    let mut batch = db.restore_writer(store, changelog, partition, write_buffer)?;
    let mut next = start;
    let mut restored = 0i64;
    // Records and time at the last progress report.
    let mut last_log = (Instant::now(), 0i64);
    progress.remaining.set(total as f64);
    // The position on the last empty poll, since when, and when a hanging
    // transaction was last reported there.
    let mut held: Option<(i64, Instant, Option<Instant>)> = None;
    // Logs the progress and sets the rate every PROGRESS_EVERY; called per
    // batch and per empty poll, not per record (the clock read per record
    // showed in the profile).
    let report = |last_log: &mut (Instant, i64), restored: i64, next: i64| {
        let since = last_log.0.elapsed();
        if since > PROGRESS_EVERY {
            let rate = (restored - last_log.1) as f64 / since.as_secs_f64();
            let remaining = (high - next).max(0);
            progress.rate.set(rate);
            progress.remaining.set(remaining as f64);
            tracing::info!(
                task,
                store,
                restored,
                total,
                remaining,
                records_per_s = rate.round() as u64,
                "restoring"
            );
            *last_log = (Instant::now(), restored);
        }
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            let n = batch.len();
            batch.write(next)?;
            progress.records.increment(n as u64);
            return Ok(Pass::Done(Restored {
                records: restored,
                full,
            }));
        }
        // Short: under exactly-once the changelog ends with a commit marker
        // that is never delivered, so the end is noticed on an empty poll.
        // A message already fetched is taken without a timeout: with one,
        // librdkafka and rust-rdkafka read the clock on every call.
        match consumer
            .poll(Duration::ZERO)
            .or_else(|| consumer.poll(Duration::from_millis(50)))
        {
            Some(Ok(m)) => {
                batch.push(m.key().unwrap_or_default(), m.payload());
                restored += 1;
                next = m.offset() + 1;
                if batch.len() >= BATCH {
                    batch.write(next)?;
                    progress.records.increment(BATCH as u64);
                    progress.remaining.set((high - next).max(0) as f64);
                    report(&mut last_log, restored, next);
                }
                if next >= high {
                    break;
                }
                continue;
            }
            // A broker down or restarting: librdkafka reconnects by itself.
            Some(Err(KafkaError::MessageConsumption(
                code @ (RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown),
            ))) => {
                tracing::warn!(task, store, error = %code, "restore consumer: broker unreachable; retrying");
            }
            // `auto.offset.reset=error`: the position is gone. What was
            // applied so far stays with its offset until the clear.
            Some(Err(
                e @ KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ),
            )) => return Ok(Pass::StartGone(e)),
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Compaction and transaction markers leave offset gaps: the
                // position, not the last record, says when we are done. (An
                // open transaction of a crashed instance holds the position
                // back until the broker aborts it: transaction.timeout.ms.)
                let pos = consumer.position()?;
                let at = pos.elements().iter().find_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
                if at.is_some_and(|o| o >= high) {
                    break;
                }
                // Held back longer than any open transaction lives: one the
                // broker forgot to abort (its markers skipped, e.g. while it
                // had fenced itself after a stall). Only an operator can
                // end it; say so instead of restoring silently forever.
                if let Some(o) = at {
                    match &mut held {
                        Some((p, since, told)) if *p == o => {
                            if since.elapsed() >= HANGING_TRANSACTION_AFTER
                                && told.is_none_or(|t| t.elapsed() >= HANGING_TRANSACTION_AFTER)
                            {
                                tracing::error!(
                                    task,
                                    store,
                                    changelog,
                                    partition,
                                    position = o,
                                    end = high,
                                    held_for = ?since.elapsed(),
                                    "the changelog's last stable offset has not moved past an open transaction for longer than the broker takes to abort one: a hanging transaction? `kafka-transactions.sh find-hanging` lists it, `kafka-transactions.sh abort` ends it"
                                );
                                *told = Some(Instant::now());
                            }
                        }
                        _ => held = Some((o, Instant::now(), None)),
                    }
                }
            }
        }
        report(&mut last_log, restored, next);
    }
    let n = batch.len();
    batch.write(high)?;
    progress.records.increment(n as u64);
    progress.remaining.set(0.0);
    let elapsed = began.elapsed();
    let rate = restored as f64 / elapsed.as_secs_f64().max(1e-3);
    progress.rate.set(rate);
    tracing::info!(
        task,
        store,
        records = restored,
        full,
        elapsed_ms = elapsed.as_millis() as u64,
        records_per_s = rate.round() as u64,
        "restore done"
    );
    Ok(Pass::Done(Restored {
        records: restored,
        full,
    }))
}
