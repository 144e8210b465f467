//! `weir run`: the consumer-group loop that feeds tasks from Kafka.
//!
//! One instance runs one blocking loop on a dedicated thread: poll a record,
//! hand it to the task of its (sub-topology, partition), produce what the
//! task returns, and commit every `commit_interval`. The parts, each
//! readable alone (along Kafka Streams' lines):
//! - [`collector`]: the producer and, under exactly-once, its transaction;
//! - [`tasks`]: the task manager: opening (restore, stream time), feeding,
//!   committing and closing tasks;
//! - [`restore`]: replaying a store's changelog tail;
//! - [`topics`]: creating the topics a topology needs, purging consumed
//!   repartition records.
//!
//! Under exactly-once a failed transaction is aborted and every task is
//! rebuilt from its last commit (RocksDB holds exactly that state, the
//! consumer is rewound to the committed offsets); a member thrown out of
//! the group (a stall past the session timeout) loses its partitions the
//! same way and rejoins. A state write that fails on a full disk is undone
//! the same way, and then the loop waits for space ([`disk`]).

mod aligned;
mod collector;
mod disk;
mod global;
mod lag;
pub(crate) mod restore;
mod tasks;
pub(crate) mod timeouts;
mod topics;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, histogram, Histogram};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset};

use crate::kafka::{client_config, ClientConfigExt};
use crate::state::StoreError;
use crate::topology::{Guarantee, Topology};
#[doc(hidden)]
pub use aligned::detach_queue;
use aligned::{Aligner, Held};
#[doc(hidden)]
pub use collector::producer_config;
use collector::{lock, Collector};
use disk::{DiskBackoff, DiskFull, Phase};
use tasks::{Now, TaskManager};
use timeouts::{MAX_POLL_INTERVAL, OFFSETS_RETRY, OFFSETS_TRY, SEEK_RETRY, SEEK_TIMEOUT};
pub(crate) use topics::topic_partitions;
use topics::{prepare_topics, Purge};

/// A topic partition.
pub(crate) type Tp = (String, i32);

/// A map keyed by topic partition, for the per-record path: hashbrown's
/// default hasher instead of SipHash (which took 7% of `weir run`'s CPU on
/// the broker), looked up by [`TpRef`] without allocating a `String`.
pub(crate) type TpMap<V> = hashbrown::HashMap<Tp, V>;

/// A borrowed [`Tp`], to look one up.
pub(crate) struct TpRef<'a>(pub &'a str, pub i32);

impl Hash for TpRef<'_> {
    /// Hashes as `(String, i32)` does: field by field, a `String` as its `str`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl hashbrown::Equivalent<Tp> for TpRef<'_> {
    fn equivalent(&self, key: &Tp) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Unreachable(#[from] crate::kafka::BrokerUnreachable),
    #[error("state: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Process(#[from] crate::processor::ProcessError),
    #[error("source topic {0} does not exist (create it, or start its producer first)")]
    MissingSource(String),
    #[error("{0}")]
    NotCopartitioned(String),
    #[error("could not deliver records to Kafka: {0}")]
    Delivery(collector::DeliveryError),
    #[error("{topic} [{partition}]: record at offset {offset} came after the position {expected} (out of order)")]
    OffsetRegression {
        topic: String,
        partition: i32,
        offset: i64,
        expected: i64,
    },
    #[error(transparent)]
    ChangelogBehind(Box<ChangelogBehind>),
    #[error("the consumer has no group metadata (not in the group yet)")]
    NoGroupMetadata,
    #[error("state directory {0} is used by another weir run (its .lock is held)")]
    StateDirLocked(String),
    #[error("state directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("could not start a thread: {0}")]
    Thread(std::io::Error),
    /// librdkafka's consumer stopped for good (e.g. another member with
    /// this `group.instance.id` fenced it).
    #[error("kafka consumer: {0}")]
    FatalConsumer(String),
}

/// A store ahead of its changelog (see `restore::restore`).
#[derive(Debug, thiserror::Error)]
#[error(
    "store {store} of task {task} is at offset {stored} of its changelog {changelog} [{partition}], \
     which ends at {end}: the changelog was deleted and created again, or truncated, and no longer \
     backs this state. Refusing to start rather than run on a state nothing backs or silently begin \
     from nothing (partial results would overwrite correct ones downstream). To reprocess from the \
     start, stop every instance and run `weir reset <topology>`; to rebuild this instance's state \
     from the changelog as it is, delete its state directory."
)]
pub struct ChangelogBehind {
    pub store: String,
    pub task: String,
    pub changelog: String,
    pub partition: i32,
    pub stored: i64,
    pub end: i64,
}

impl RuntimeError {
    /// Errors a transaction abort and a rebuild from the last commit get
    /// past (broker, producer, group membership); not local state errors,
    /// nor a record Kafka refuses for good (the rebuild would send it
    /// again).
    fn recoverable(&self) -> bool {
        use collector::DeliveryFailure::Permanent;
        match self {
            RuntimeError::Kafka(e) => collector::failure_of(e) != Permanent,
            RuntimeError::Delivery(e) => e.failure() != Permanent,
            RuntimeError::NoGroupMetadata | RuntimeError::OffsetRegression { .. } => true,
            _ => false,
        }
    }
}

/// Options of `weir run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bootstrap: String,
    pub state_dir: PathBuf,
    /// How often committed repartition records are deleted.
    pub purge_interval: Duration,
    /// Consumer group session timeout: how long a silent instance keeps its
    /// partitions.
    pub session_timeout: Duration,
    /// How long an empty, not caught-up partition holds back the others of
    /// an aligned sub-topology (see `aligned`).
    pub max_task_idle: Duration,
    /// Replication factor of the topics weir creates (-1: the broker's
    /// default).
    pub replication_factor: i32,
    /// Bytes of RocksDB block cache and memtables, shared by every task
    /// (see `state::rocks::StateMemory`).
    pub state_memory: usize,
    /// Static group membership (`group.instance.id`, KIP-345).
    pub instance_id: InstanceId,
    /// Set (by SIGUSR1) to leave the consumer group when stopping even as
    /// a static member: scaling in, not restarting.
    pub leave_group: Arc<AtomicBool>,
    /// Interactive queries (`--query-addr`): kept told which tasks are
    /// open, its address carried in the consumer's `client.id`.
    pub query: Option<Arc<crate::query::Registry>>,
}

/// `weir run --instance-id`: the consumer's `group.instance.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceId {
    /// `<application_id>-<process id>` (the id the state directory keeps,
    /// as the transactional id): the same across restarts on one state
    /// directory.
    FromStateDir,
    Given(String),
    /// Dynamic membership (`--instance-id none`).
    Dynamic,
}

impl std::str::FromStr for InstanceId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("an empty instance id (say `none` for dynamic membership)".into()),
            "none" => Ok(InstanceId::Dynamic),
            "auto" => Ok(InstanceId::FromStateDir),
            id if id.len() > 249 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) => Err(
                format!("{id:?}: at most 249 of the characters a-z A-Z 0-9 . _ - (as a Kafka topic name)"),
            ),
            id => Ok(InstanceId::Given(id.to_string())),
        }
    }
}

/// librdkafka's prefetch per partition: records, and KiB; and how long a
/// fetcher waits before it looks again at a full queue. Measured with
/// `./dev bench --only weir-alos` (1M records): librdkafka's defaults 10.4 s
/// to caught up, 440 MiB peak RSS; these 11.4 s, 170 MiB; these with the
/// default 1 s backoff 33.6 s, 103 MiB.
const QUEUED_MIN_MESSAGES: u32 = 10_000;
const QUEUED_MAX_KBYTES: u32 = 8 * 1024;
const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// Records taken from the aligned partitions between two looks at the main
/// queue.
const ALIGNED_BATCH: usize = 256;

/// How long a member leaving the group waits for librdkafka to revoke its
/// partitions and send the LeaveGroup.
const LEAVE_WAIT: Duration = Duration::from_secs(10);

/// Aborted transactions in a row after which `weir run` gives up.
const MAX_ABORTS_IN_A_ROW: u32 = 10;

/// The cached writes of this process's tasks that make a commit come
/// before its interval is up: half the state memory (`--state-memory`,
/// 64 MiB by default), so the process's state takes at most about one and
/// a half times that (RocksDB's share, plus this).
fn write_cache_limit() -> usize {
    crate::state::rocks::state_memory().budget() / 2
}

/// Under exactly-once, how many times per commit interval the stores'
/// writes are sent to the changelog (the last time at the commit); see
/// `StreamThread::maybe_commit`.
const CHANGELOG_SENDS_PER_INTERVAL: u32 = 5;

/// What the rebalance callback (and an abort) leaves for the loop, which
/// reads them at the start of its next round ([`StreamThread::take_events`]).
enum Event {
    /// The assignment changed; these partitions were revoked (their tasks
    /// committed and closed, or lost).
    Rebalanced { revoked: Vec<Tp> },
    /// Every task was dropped uncommitted: the partitions that stay must
    /// go back to their committed offsets before anything else.
    Rewind,
    /// The callback met an error it cannot recover from.
    Fatal(RuntimeError),
    /// A state write failed on a full disk (every task was dropped, see
    /// `disk`): wait for space.
    DiskFull(DiskFull),
}

/// Everything the loop and the rebalance callback share.
struct Engine {
    app: String,
    tasks: TaskManager,
    collector: Collector,
    purge: Purge,
    aborts_in_a_row: u32,
    /// What happened since the loop last looked, oldest first (see
    /// [`Event`]).
    events: Vec<Event>,
    /// `weir_process_latency_seconds`, resolved once.
    process_latency: Histogram,
}

impl Engine {
    /// `held`: see `TaskManager::commit` (`None` where unknown).
    fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        held: Option<&HashSet<(String, i32)>>,
    ) -> Result<(), RuntimeError> {
        // Only a commit that committed something ends a run of aborts (one
        // with nothing to commit proves nothing).
        if self.tasks.commit(consumer, &mut self.collector, held)? {
            self.aborts_in_a_row = 0;
        }
        self.purge.after_commit(self.tasks.positions(), &self.app);
        Ok(())
    }

    /// After `err` under exactly-once: abort the transaction and drop every
    /// task (back to the last commit). Errors that cannot be recovered from,
    /// any error at-least-once, and too many aborts in a row are returned;
    /// a full state disk, under either guarantee, is recovered from this
    /// way and then waited out (see `disk`).
    fn abort(&mut self, err: RuntimeError) -> Result<(), RuntimeError> {
        if let Some(full) = err.disk_full() {
            // Under both guarantees, and not counted as an abort in a row:
            // it lasts as long as the disk stays full, and the loop waits
            // for space (see `disk`).
            self.collector.abort()?;
            self.tasks.drop_all();
            self.events.push(Event::DiskFull(full));
            self.events.push(Event::Rewind);
            return Ok(());
        }
        if !err.recoverable() {
            return Err(err);
        }
        if !self.collector.transactional() {
            // At-least-once may process records again, and must for a
            // position that jumped: back to the last commit. Other errors
            // stop it (nothing is aborted: what was sent stays sent).
            if !matches!(err, RuntimeError::OffsetRegression { .. }) {
                return Err(err);
            }
            tracing::warn!(error = %err, "rebuilding every task from its last commit");
            self.tasks.drop_all();
            self.events.push(Event::Rewind);
            return Ok(());
        }
        self.aborts_in_a_row += 1;
        if self.aborts_in_a_row > MAX_ABORTS_IN_A_ROW {
            tracing::error!(aborts = self.aborts_in_a_row, "giving up: every transaction fails");
            return Err(err);
        }
        tracing::warn!(error = %err, "transaction aborted: rebuilding every task from its last commit");
        counter!("weir_transaction_aborts_total", "topology" => self.app.clone()).increment(1);
        self.collector.abort()?;
        self.tasks.drop_all();
        self.events.push(Event::Rewind);
        Ok(())
    }
}

impl Engine {
    /// This member's partitions went to others without a chance to commit:
    /// forget everything since the last commit (its transaction, if any,
    /// could not commit anyway).
    fn lose(&mut self) -> Result<(), RuntimeError> {
        counter!("weir_partitions_lost_total", "topology" => self.app.clone()).increment(1);
        crate::health::global().set_in_group(false);
        self.collector.abort()?;
        self.tasks.drop_all();
        self.events.push(Event::Rewind);
        Ok(())
    }
}

/// Seek every assigned partition back to its committed offset (after an
/// abort: the records after it are processed again).
fn rewind<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Result<(), RuntimeError> {
    let assigned = consumer.assignment()?;
    if assigned.count() == 0 {
        return Ok(());
    }
    crate::health::global().beat();
    let deadline = Instant::now() + OFFSETS_RETRY;
    let committed = loop {
        match consumer.committed_offsets(assigned.clone(), OFFSETS_TRY) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "reading the committed offsets to rewind to failed; retrying");
                crate::health::global().beat();
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let deadline = Instant::now() + SEEK_RETRY;
    for e in committed.elements() {
        let to = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        while let Err(err) = consumer.seek(e.topic(), e.partition(), to, SEEK_TIMEOUT) {
            if Instant::now() >= deadline {
                return Err(err.into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// A fatal consumer error, as the error callback saw it.
struct Fatal {
    why: String,
    /// This static member was fenced right after librdkafka timed its own
    /// session out (a stalled or unreachable coordinator): it rejoined
    /// under its `group.instance.id`, which fenced its own older member id
    /// (librdkafka #3437). Not another instance with the same id.
    self_fenced: bool,
}

/// A fence this long after librdkafka timed the session out is taken as
/// the member fencing itself: the rejoin goes out at the timeout, and its
/// answer comes once the coordinator answers again.
const SELF_FENCE_WINDOW: Duration = Duration::from_secs(120);

/// At most this many rejoins after a self-fence in [`REJOIN_SPAN`]: two
/// instances that do share an id fence each other on every join, and must
/// stop with the error rather than take turns.
const MAX_REJOINS: usize = 3;
const REJOIN_SPAN: Duration = Duration::from_secs(600);

impl Fatal {
    /// A fatal consumer error: `reason` is librdkafka's; `session_timed_out`
    /// when librdkafka last timed this member's session out.
    fn new(reason: &str, session_timed_out: Option<Instant>, now: Instant) -> Fatal {
        let fenced = reason.contains("group.instance.id");
        let self_fenced = fenced && session_timed_out.is_some_and(|at| now.duration_since(at) < SELF_FENCE_WINDOW);
        let why = match fenced {
            true => format!(
                "{reason}: another `weir run` has this instance id (the same --instance-id twice, \
                 or a copied state directory; see docs/operations.md, Deploying)"
            ),
            false => reason.to_string(),
        };
        Fatal { why, self_fenced }
    }
}

/// Whether a member may rejoin after `fatal`, given when it rejoined
/// before (`rejoins`, pruned to [`REJOIN_SPAN`] and, if so, added to).
fn may_rejoin(fatal: &Fatal, rejoins: &mut Vec<Instant>, now: Instant) -> bool {
    rejoins.retain(|at| now.duration_since(*at) < REJOIN_SPAN);
    if !fatal.self_fenced || rejoins.len() >= MAX_REJOINS {
        return false;
    }
    rejoins.push(now);
    true
}

struct RebalanceContext {
    engine: Arc<Mutex<Engine>>,
    /// librdkafka's fatal consumer error (e.g. this static member fenced
    /// by another with its `group.instance.id`), for the loop to act on.
    /// Not an [`Event`]: the error callback may run where the engine's
    /// lock is held.
    fatal: Mutex<Option<Fatal>>,
    /// When librdkafka last logged that this member's session timed out
    /// (`SESSTMOUT`): it then rejoins the group by itself.
    session_timed_out: Mutex<Option<Instant>>,
    /// Source topics of aligned sub-topologies (see [`aligned::detach_queue`]).
    aligned_topics: HashSet<String>,
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "SESSTMOUT" {
            *lock(&self.session_timed_out) = Some(Instant::now());
        }
        rdkafka::client::DefaultClientContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            // End-of-partition events (`enable.partition.eof`, for the
            // aligner) of partition queues arrive here too: not errors.
            KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(reason, "end of partition")
            }
            // librdkafka reconnects by itself (a broker down or restarting).
            KafkaError::Global(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                | rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
            ) => tracing::warn!(error = %error, reason, "librdkafka"),
            // librdkafka reports a fatal consumer error with its cause's
            // code (a fenced static member), or as `Fatal`.
            KafkaError::Global(
                rdkafka::types::RDKafkaErrorCode::Fatal | rdkafka::types::RDKafkaErrorCode::FencedInstanceId,
            ) => {
                tracing::error!(error = %error, reason, "librdkafka: fatal consumer error");
                let fatal = Fatal::new(reason, *lock(&self.session_timed_out), Instant::now());
                lock(&self.fatal).get_or_insert(fatal);
            }
            _ => tracing::error!(error = %error, reason, "librdkafka"),
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut engine = lock(&self.engine);
        counter!("weir_rebalances_total", "topology" => engine.app.clone()).increment(1);
        let mut revoked = Vec::new();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                revoked = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                if consumer.assignment_lost() {
                    // Thrown out of the group (e.g. stalled past the session
                    // timeout): another member owns these partitions now.
                    tracing::warn!(
                        partitions = revoked.len(),
                        "partitions lost: dropping their tasks uncommitted"
                    );
                    if let Err(e) = engine.lose() {
                        engine.events.push(Event::Fatal(e));
                    }
                } else {
                    tracing::info!(
                        partitions = revoked.len(),
                        "partitions revoked: committing and closing their tasks"
                    );
                    if let Err(e) = engine.commit(consumer, None) {
                        tracing::warn!(error = %e, "commit before revocation failed");
                        if let Err(e) = engine.abort(e) {
                            engine.events.push(Event::Fatal(e));
                        }
                    }
                }
                engine.tasks.close(&revoked);
            }
            Rebalance::Assign(tpl) => {
                // Before librdkafka's assign starts fetching (see
                // `detach_queue`): the lock rule is kept, this touches
                // only librdkafka.
                for e in tpl.elements() {
                    if self.aligned_topics.contains(e.topic())
                        && !aligned::detach_queue(consumer, e.topic(), e.partition())
                    {
                        tracing::warn!(
                            topic = e.topic(),
                            partition = e.partition(),
                            "could not give the partition its own queue"
                        );
                    }
                }
                crate::health::global().assigned();
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
        engine.events.push(Event::Rebalanced { revoked });
    }
}

/// This instance's id, kept in the state directory like Kafka Streams'
/// process id: the transactional id is derived from it, so a restarted
/// instance fences its crashed predecessor and aborts the transaction it
/// left open at once instead of after `transaction.timeout.ms`.
fn process_id(app_dir: &Path) -> Result<String, RuntimeError> {
    use std::io::{Read, Write};
    let path = app_dir.join("process.id");
    let io = |source| RuntimeError::Io {
        path: path.display().to_string(),
        source,
    };
    // Read and written through one descriptor opened without following a
    // link (see `state::open_no_follow`).
    let mut file = crate::state::open_no_follow(&path).map_err(io)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    if !text.trim().is_empty() {
        return Ok(text.trim().to_string());
    }
    let id = format!("{:016x}", rand::random::<u64>());
    file.set_len(0)
        .and_then(|()| file.write_all(id.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    Ok(id)
}

/// [`process_id`], waiting (with [`DiskBackoff`]) while the state disk is
/// too full to write it; `None` if shut down meanwhile.
fn process_id_when_space(app: &str, app_dir: &Path, shutdown: &AtomicBool) -> Result<Option<String>, RuntimeError> {
    let mut backoff = DiskBackoff::default();
    loop {
        match process_id(app_dir) {
            Ok(id) => {
                crate::health::global().set_state_error(None);
                return Ok(Some(id));
            }
            Err(e) => {
                let Some(full) = e.disk_full() else { return Err(e) };
                let wait = backoff.failed(Instant::now());
                counter!("weir_state_errors_total", "topology" => app.to_string(), "store" => "", "kind" => "disk_full")
                    .increment(1);
                tracing::error!(path = %full.path, errno = full.errno, error = %full.error, retry_in = ?wait, "state directory full: cannot write the process id; waiting for space");
                crate::health::global().set_state_error(Some(format!(
                    "state directory full: {} ({}): {}; waiting for space",
                    full.path, full.errno, full.error
                )));
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if shutdown.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Hold `<app_dir>/.lock` while running: two instances on one state
/// directory would share task stores and the transactional id. Opened
/// without following a symbolic link (see `state::open_no_follow`).
pub(crate) fn lock_state_dir(app_dir: &Path) -> Result<std::fs::File, RuntimeError> {
    let path = app_dir.join(".lock");
    let file = crate::state::open_no_follow(&path).map_err(|source| RuntimeError::Io {
        path: path.display().to_string(),
        source: match source.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                source.kind(),
                "is a symbolic link (refused: weir opens its lock file only as a plain file)",
            ),
            _ => source,
        },
    })?;
    file.try_lock()
        .map_err(|_| RuntimeError::StateDirLocked(app_dir.display().to_string()))?;
    Ok(file)
}

/// Create `<state_dir>/<application_id>` readable by its owner only and
/// lock it (see [`lock_state_dir`]).
pub(crate) fn open_app_dir(app_dir: &Path) -> Result<std::fs::File, RuntimeError> {
    crate::state::create_private_dir(app_dir).map_err(|source| RuntimeError::Io {
        path: app_dir.display().to_string(),
        source,
    })?;
    lock_state_dir(app_dir)
}

/// Run `topo` until `shutdown` is set. Blocking: call it from a dedicated
/// thread (`spawn_blocking`).
pub fn run(
    topo: Arc<Topology>,
    opts: RunOptions,
    shutdown: Arc<AtomicBool>,
    rt: tokio::runtime::Handle,
) -> Result<(), RuntimeError> {
    let health = crate::health::global();
    health.set_role(crate::health::Role::Run);
    let app_dir = crate::state::app_dir(&opts.state_dir, &topo.application_id);
    let _lock = open_app_dir(&app_dir)?;
    crate::state::rocks::set_state_memory(opts.state_memory);
    if !crate::kafka::wait_for_brokers(&opts.bootstrap, crate::kafka::BROKER_WAIT, &shutdown)? {
        return Ok(());
    }
    let partitions = rt.block_on(prepare_topics(&topo, &opts.bootstrap, opts.replication_factor))?;
    let exactly_once = topo.guarantee == Guarantee::ExactlyOnce;
    // One id per state directory names this instance to the broker twice:
    // as the producer's transactional id (exactly-once) and as the static
    // group member (see docs/operations.md, Deploying).
    let needs_process_id = exactly_once || opts.instance_id == InstanceId::FromStateDir;
    let process = match needs_process_id {
        true => match process_id_when_space(&topo.application_id, &app_dir, &shutdown)? {
            Some(id) => Some(format!("{}-{id}", topo.application_id)),
            None => return Ok(()),
        },
        false => None,
    };
    let transactional_id = process.clone().filter(|_| exactly_once);
    let instance_id = match &opts.instance_id {
        InstanceId::FromStateDir => process.clone(),
        InstanceId::Given(id) => Some(id.clone()),
        InstanceId::Dynamic => None,
    };
    // Every global table loaded before the instance joins its group.
    let Some(globals) = global::start(&topo, &opts.bootstrap, &shutdown)? else {
        return Ok(());
    };
    if let Some(q) = &opts.query {
        q.set_partitions(&partitions);
    }
    let collector = Collector::new(&opts.bootstrap, &topo.application_id, transactional_id.as_deref())?;
    let engine = Arc::new(Mutex::new(Engine {
        app: topo.application_id.clone(),
        tasks: TaskManager::new(
            topo.clone(),
            &opts.bootstrap,
            opts.state_dir.clone(),
            partitions,
            globals,
            opts.query.clone(),
        ),
        collector,
        purge: Purge::new(
            &topo,
            client_config(&opts.bootstrap).create()?,
            rt.clone(),
            opts.purge_interval,
        ),
        aborts_in_a_row: 0,
        events: Vec::new(),
        process_latency: histogram!("weir_process_latency_seconds", "topology" => topo.application_id.clone()),
    }));
    let mut config = consumer_config(
        &opts.bootstrap,
        &topo.application_id,
        opts.session_timeout,
        instance_id.as_deref(),
    );
    config.set("partition.assignment.strategy", assignment_strategy(&topo));
    if let Some(q) = &opts.query {
        // Other instances find this one's query server by its client id
        // in the group (see `query::route`).
        let id = crate::query::client_id(config.get("client.id"), &topo.application_id, q.advertised());
        config.set("client.id", id);
    }
    let consumer = group_consumer(&config, &engine, &topo)?;
    let topics = topo.source_topics();
    tracing::info!(
        application_id = %topo.application_id,
        topics = ?topics,
        guarantee = if exactly_once { "exactly_once" } else { "at_least_once" },
        transactional_id = ?transactional_id,
        group_instance_id = ?instance_id,
        "running"
    );

    // Counters of rare events exist from the start (at 0): "none yet" is
    // not "no data" for dashboards and alerts.
    for name in [
        "weir_transaction_aborts_total",
        "weir_partitions_lost_total",
        "weir_rebalances_total",
        "weir_offset_regressions_total",
        "weir_producer_replacements_total",
        "weir_early_commits_total",
    ] {
        counter!(name, "topology" => topo.application_id.clone()).increment(0);
    }
    // Failed state writes are labelled with their stores once they happen.
    counter!(
        "weir_state_errors_total",
        "topology" => topo.application_id.clone(),
        "store" => "",
        "kind" => "disk_full"
    )
    .increment(0);
    let mut thread = StreamThread {
        app_dir,
        disk: DiskBackoff::default(),
        aligner: Aligner::new(topo.clone(), opts.max_task_idle),
        max_task_idle: opts.max_task_idle,
        topo,
        consumer: Arc::new(consumer),
        consumer_config: config,
        rejoins: Vec::new(),
        engine,
        last_commit: Instant::now(),
        last_changelog_send: Instant::now(),
        write_cache_limit: write_cache_limit(),
        busy: false,
        static_member: instance_id.is_some(),
        leave_group: opts.leave_group.clone(),
    };
    while !shutdown.load(Ordering::Relaxed) {
        thread.run_once()?;
    }
    thread.shut_down()
}

/// Incremental rebalancing (`cooperative-sticky`): tasks that stay on
/// this instance keep running through a rebalance; only moved partitions
/// are revoked. But it assigns each topic's partitions on its own, and a
/// task of a join with a table step reads partition `p` of two topics,
/// which must be on one instance: there, `range`, which gives every
/// member the same partition numbers of every topic with as many
/// partitions (checked at start, `topology/partitions.rs`), as Kafka
/// Streams' joins relied on before its own assignor. Its rebalances are
/// eager: every task is committed and closed, then reopened (restoring
/// only what its local store lacks).
fn assignment_strategy(topo: &Topology) -> &'static str {
    if topo.needs_copartitioned_assignment() {
        "range"
    } else {
        "cooperative-sticky"
    }
}

/// The settings of `weir run`'s group consumer, all but the query server's
/// `client.id`: `group` is the application id, `instance_id` the static
/// member's `group.instance.id` (`None`: dynamic membership). Public only
/// for `examples/passthrough.rs` (the client library's floor in `./dev
/// bench`), which must consume exactly as `weir run` does.
#[doc(hidden)]
pub fn consumer_config(
    bootstrap: &str,
    group: &str,
    session_timeout: Duration,
    instance_id: Option<&str>,
) -> rdkafka::ClientConfig {
    let session_ms = session_timeout.as_millis().max(1000);
    let mut config = client_config(bootstrap);
    if let Some(id) = instance_id {
        // Static membership: a member that comes back with this id within
        // the session timeout gets its partitions back without a
        // rebalance, and one that stops does not leave the group (see
        // `StreamThread::shut_down`).
        config.set("group.instance.id", id);
    }
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // End-of-partition events tell the aligner a partition is caught up.
        .set("enable.partition.eof", "true")
        // Incremental rebalancing (a topology with a join on a table step
        // replaces it: `assignment_strategy`).
        .set("partition.assignment.strategy", "cooperative-sticky")
        // What librdkafka prefetches per partition (defaults: 100,000
        // records or 64 MiB each). Under a backlog it filled them all, and
        // weir's memory grew with the backlog (440 MiB at 1M records).
        // With small queues the fetcher must not sleep its default 1 s
        // when one is full: it then left the loop idle, 3× slower.
        .set_default("queued.min.messages", QUEUED_MIN_MESSAGES.to_string())
        .set_default("queued.max.messages.kbytes", QUEUED_MAX_KBYTES.to_string())
        .set_default("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string())
        .set("session.timeout.ms", session_ms.to_string())
        // Set, not left to librdkafka's default, because it must exceed
        // the loop's worst round (see `timeouts`).
        .set("max.poll.interval.ms", MAX_POLL_INTERVAL.as_millis().to_string())
        // A member learns of a rebalance at its next heartbeat, and a
        // cooperative rebalance takes two rounds: at librdkafka's 3 s a
        // task moved to a joining instance waited up to 6 s more for it
        // (issue 21's scale-out, where it restored in 0.17 s). One a
        // second costs the coordinator one small request per member.
        .set_default("heartbeat.interval.ms", (session_ms / 3).min(1000).to_string());
    config
}

/// The group's consumer, subscribed to the topology's source topics.
fn group_consumer(
    config: &rdkafka::ClientConfig,
    engine: &Arc<Mutex<Engine>>,
    topo: &Topology,
) -> Result<BaseConsumer<RebalanceContext>, RuntimeError> {
    let consumer: BaseConsumer<RebalanceContext> = config.create_with_context(RebalanceContext {
        engine: engine.clone(),
        fatal: Mutex::new(None),
        session_timed_out: Mutex::new(None),
        aligned_topics: Aligner::<RebalanceContext>::aligned_topics(topo),
    })?;
    let topics = topo.source_topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    Ok(consumer)
}

/// The loop of `weir run`, in the phases of Kafka Streams' `StreamThread`:
/// poll, handle what the rebalance callback left, process, maybe commit,
/// start the tasks whose restore finished; any error goes to
/// [`StreamThread::recover`].
///
/// The lock rule: the rebalance callback runs inside `consumer.poll`, on
/// this thread, and takes the engine's lock. So the loop never holds the
/// lock while it polls the main queue (that would deadlock), and holds it
/// for the rest of the round. What the callback decides for the loop goes
/// through [`Engine::events`], read at the start of the next round.
struct StreamThread {
    topo: Arc<Topology>,
    /// `<state_dir>/<application_id>`.
    app_dir: PathBuf,
    /// Waiting for space on a full state disk (see `disk`).
    disk: DiskBackoff,
    consumer: Arc<BaseConsumer<RebalanceContext>>,
    /// What [`group_consumer`] makes the consumer from, again after a
    /// self-fence.
    consumer_config: rdkafka::ClientConfig,
    /// When this member rejoined after fencing itself (see [`Fatal`]).
    rejoins: Vec<Instant>,
    engine: Arc<Mutex<Engine>>,
    aligner: Aligner<RebalanceContext>,
    max_task_idle: Duration,
    /// When the last commit started.
    last_commit: Instant,
    /// When the changelog last got the stores' writes (exactly-once: see
    /// `maybe_commit`).
    last_changelog_send: Instant,
    /// See [`write_cache_limit`].
    write_cache_limit: usize,
    /// The last round processed records: look at the main queue in passing.
    busy: bool,
    /// A static group member (`group.instance.id` set).
    static_member: bool,
    /// Leave the group when stopping, static or not (SIGUSR1).
    leave_group: Arc<AtomicBool>,
}

/// What the callback's events mean for this round.
#[derive(Default)]
struct Round {
    /// Partitions newly assigned (their tasks are opened first).
    assigned: Vec<Tp>,
    /// The consumer went back to the committed offsets.
    rewound: bool,
}

impl StreamThread {
    fn run_once(&mut self) -> Result<(), RuntimeError> {
        let health = crate::health::global();
        // Records waiting in partition queues: only look at the main queue
        // (rebalances, other partitions) in passing.
        let wait = match (self.busy, self.aligner.active()) {
            (true, _) => Duration::ZERO,
            (false, true) => Duration::from_millis(5),
            (false, false) => Duration::from_millis(100),
        };
        let consumer = self.consumer.clone();
        let mut polled = consumer.poll(wait);
        let fatal = lock(&consumer.context().fatal).take();
        if let Some(fatal) = fatal {
            drop(polled);
            drop(consumer);
            return self.after_fatal(fatal);
        }
        let engine = self.engine.clone();
        let mut guard = lock(&engine);
        let engine = &mut *guard;
        health.beat();
        let round = self.take_events(engine)?;
        if round.rewound {
            // The record just polled may lie past a committed offset that
            // the dropped tasks had not committed: it comes again.
            polled = None;
        }
        match self.disk.phase(Instant::now()) {
            Phase::Run => {}
            // Nothing processed, so nothing written or committed; what is
            // polled meanwhile is fetched again after the rewind below.
            Phase::Wait => {
                self.busy = false;
                return Ok(());
            }
            Phase::Retry => {
                if let Err(e) = disk::probe(&self.app_dir) {
                    let wait = self.disk.still_full(Instant::now());
                    tracing::warn!(error = %e, retry_in = ?wait, failures = self.disk.failures(), "state directory still full");
                    self.busy = false;
                    return Ok(());
                }
                tracing::info!(
                    path = %self.app_dir.display(),
                    "space in the state directory again: resuming from the last commit"
                );
                self.disk.resume(Instant::now());
                self.rewind()?;
                polled = None;
                self.last_commit = Instant::now();
            }
        }
        engine.collector.poll();
        let result = self
            .process(engine, &consumer, polled, &round.assigned)
            .and_then(|did| {
                self.maybe_commit(engine)?;
                self.start_restored(engine)?;
                Ok(did)
            });
        match result {
            Ok(did) => {
                self.busy = did;
                if self.disk.round_ok(Instant::now(), self.topo.commit_interval) {
                    tracing::info!("state directory writable again: recovered");
                    health.set_state_error(None);
                }
            }
            Err(e) => self.recover(engine, e)?,
        }
        Ok(())
    }

    /// A state write failed on a full disk (the tasks are dropped already,
    /// see [`Engine::abort`]): say so, and wait before trying again.
    fn disk_full(&mut self, engine: &Engine, full: DiskFull) {
        let wait = self.disk.failed(Instant::now());
        let path = match full.path.is_empty() {
            true => self.app_dir.display().to_string(),
            false => full.path,
        };
        counter!(
            "weir_state_errors_total",
            "topology" => engine.app.clone(),
            "store" => full.store.clone(),
            "kind" => "disk_full"
        )
        .increment(1);
        tracing::error!(
            path = %path,
            errno = full.errno,
            store = %full.store,
            error = %full.error,
            retry_in = ?wait,
            failures = self.disk.failures(),
            "state directory full: transaction aborted, every task back to its last commit; \
             processing nothing until there is space"
        );
        crate::health::global().set_state_error(Some(format!(
            "state directory full: {path} ({}): {}; processing nothing until there is space",
            full.errno, full.error
        )));
    }

    /// Act on what the rebalance callback left, oldest first: a fatal
    /// error ends the loop; dropped tasks rewind the consumer; a new
    /// assignment gives the aligned partitions their queues.
    fn take_events(&mut self, engine: &mut Engine) -> Result<Round, RuntimeError> {
        let mut round = Round::default();
        let mut rebalanced = false;
        for event in std::mem::take(&mut engine.events) {
            match event {
                Event::Fatal(e) => return Err(e),
                Event::DiskFull(full) => self.disk_full(engine, full),
                Event::Rewind => round.rewound = true,
                Event::Rebalanced { revoked } => {
                    self.aligner.forget(&revoked);
                    rebalanced = true;
                }
            }
        }
        if round.rewound {
            self.rewind()?;
        }
        if rebalanced {
            self.aligner.reassign(&self.consumer);
            if let Ok(tpl) = self.consumer.assignment() {
                round.assigned = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
            }
        }
        Ok(round)
    }

    /// Open the newly assigned tasks, then process the polled record and a
    /// batch from the aligned partitions; advance idle tasks' stream time.
    /// Returns whether any record was processed.
    fn process(
        &mut self,
        engine: &mut Engine,
        consumer: &BaseConsumer<RebalanceContext>,
        polled: Option<rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>>,
        assigned: &[Tp],
    ) -> Result<bool, RuntimeError> {
        engine.tasks.open_assigned(assigned, consumer)?;
        crate::health::global().tasks_opened();
        // One clock read for the batch (up to ALIGNED_BATCH + 1 records,
        // a few ms at most): per record it cost ~5% of the CPU.
        let now = Now::read();
        let mut handled = 0;
        match polled {
            Some(Ok(msg)) => {
                if let Some(msg) = self.aligner.offer(msg) {
                    engine.tasks.handle(&msg, consumer, &mut engine.collector, now)?;
                    handled += 1;
                }
            }
            // End of a partition (see `aligned`): not an error.
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        while handled < ALIGNED_BATCH {
            let tasks = &engine.tasks;
            let Some(msg) = self.aligner.next(now.instant, &|sub, p| tasks.is_restoring(sub, p)) else {
                break;
            };
            match msg {
                Held::Queued(m) => engine.tasks.handle(&m, consumer, &mut engine.collector, now)?,
                Held::Copied(m) => engine.tasks.handle(&m, consumer, &mut engine.collector, now)?,
            }
            handled += 1;
        }
        if handled > 0 {
            // The batch's mean per record, once for each record.
            let took = now.instant.elapsed().as_secs_f64();
            engine.process_latency.record_many(took / handled as f64, handled);
        }
        engine.tasks.close_idle(&mut engine.collector, now)?;
        Ok(handled > 0)
    }

    /// Commit once the interval has passed. The interval counts from the
    /// start of the last commit (as Kafka Streams counts it): counted from
    /// its end, every cycle grew by the commit's own duration, and so did
    /// the time an exactly-once output waits to become visible.
    ///
    /// Under exactly-once the changelog also gets the stores' writes
    /// [`CHANGELOG_SENDS_PER_INTERVAL`] times per interval, inside the open
    /// transaction (see `state`'s module doc): sent all at the commit, they
    /// were most of its flush, 70–270 ms of every commit at 10,000
    /// records/s, which every output of the interval waited for. More
    /// often would send a key written all the time (a window) more often
    /// for nothing; at-least-once keeps one send per commit, because there
    /// a changelog record is visible at once and a crash before the commit
    /// would restore a store ahead of its committed input.
    ///
    /// A commit also comes early once the interval's cached writes outgrow
    /// [`write_cache_limit`]: they wait in memory for the commit to apply
    /// them to RocksDB, so on a backlog of many keys one interval could
    /// hold hundreds of MB (Kafka Streams bounds its record cache the same
    /// way, with `statestore.cache.max.bytes`, evicting into the store).
    fn maybe_commit(&mut self, engine: &mut Engine) -> Result<(), RuntimeError> {
        let interval = self.topo.commit_interval;
        if self.last_commit.elapsed() < interval {
            if engine.tasks.cached_bytes() < self.write_cache_limit {
                return self.maybe_send_changelog(engine);
            }
            counter!("weir_early_commits_total", "topology" => engine.app.clone()).increment(1);
        }
        let started = Instant::now();
        engine.commit(&self.consumer, Some(&self.aligner.held()))?;
        self.last_commit = started;
        self.last_changelog_send = started;
        Ok(())
    }

    /// Under exactly-once, send the stores' writes to the changelog when a
    /// fifth of the interval passed since they were last sent (see
    /// `maybe_commit`).
    fn maybe_send_changelog(&mut self, engine: &mut Engine) -> Result<(), RuntimeError> {
        if engine.collector.transactional()
            && self.last_changelog_send.elapsed() >= self.topo.commit_interval / CHANGELOG_SENDS_PER_INTERVAL
        {
            self.last_changelog_send = Instant::now();
            engine
                .tasks
                .send_changelog(&mut engine.collector, tasks::Now::read().wall_ms)?;
        }
        Ok(())
    }

    /// Tasks whose restore finished start only now, after this round's
    /// records: their partitions are sought back to the first record they
    /// skipped, and a record fetched before that seek (like the polled
    /// one) must not be processed after it.
    fn start_restored(&mut self, engine: &mut Engine) -> Result<(), RuntimeError> {
        for tp in engine.tasks.poll_restores(&self.consumer)? {
            self.aligner.drop_buffered(&tp);
        }
        Ok(())
    }

    /// The one way back from an error in a round: abort and drop every
    /// task (see [`Engine::abort`], which returns what it cannot recover
    /// from), then rewind to the committed offsets at once.
    fn recover(&mut self, engine: &mut Engine, err: RuntimeError) -> Result<(), RuntimeError> {
        engine.abort(err)?;
        engine.events.retain(|e| !matches!(e, Event::Rewind));
        for event in std::mem::take(&mut engine.events) {
            match event {
                Event::DiskFull(full) => self.disk_full(engine, full),
                other => engine.events.push(other),
            }
        }
        self.rewind()?;
        self.last_commit = Instant::now();
        self.busy = false;
        Ok(())
    }

    /// A fatal consumer error ends the loop, except a static member that
    /// fenced itself (see [`Fatal`]): it gives up its tasks as if its
    /// partitions were lost and joins again with a new consumer under the
    /// same `group.instance.id`. The group gives it its partitions back,
    /// and the tasks reopen from their stores. Exiting instead stopped
    /// `weir run` after a broker stall longer than the session timeout
    /// (chaos seed 11014).
    fn after_fatal(&mut self, fatal: Fatal) -> Result<(), RuntimeError> {
        if !may_rejoin(&fatal, &mut self.rejoins, Instant::now()) {
            return Err(RuntimeError::FatalConsumer(fatal.why));
        }
        tracing::warn!(
            reason = %fatal.why,
            rejoins = self.rejoins.len(),
            "fenced by this member's own group.instance.id after its session timed out: \
             dropping every task and joining the group again with a new consumer"
        );
        {
            let mut engine = lock(&self.engine);
            engine.lose()?;
            // The rewind and rebalances were the old consumer's.
            engine
                .events
                .retain(|e| !matches!(e, Event::Rewind | Event::Rebalanced { .. }));
        }
        // The aligner's partition queues belong to the old consumer: both
        // go (closing it may call the rebalance callback, which locks the
        // engine: not held here).
        self.aligner = Aligner::new(self.topo.clone(), self.max_task_idle);
        self.consumer = Arc::new(group_consumer(&self.consumer_config, &self.engine, &self.topo)?);
        self.last_commit = Instant::now();
        self.busy = false;
        Ok(())
    }

    /// Every assigned partition back to its committed offset, and what the
    /// aligner held forgotten.
    fn rewind(&mut self) -> Result<(), RuntimeError> {
        rewind(&self.consumer)?;
        self.aligner.clear();
        Ok(())
    }

    /// Commit what was processed and close every task.
    fn shut_down(self) -> Result<(), RuntimeError> {
        tracing::info!("shutting down: committing");
        crate::health::global().stopped();
        let mut guard = lock(&self.engine);
        let engine = &mut *guard;
        if let Err(e) = engine.commit(&self.consumer, Some(&self.aligner.held())) {
            engine.abort(e)?;
        }
        let all = engine.tasks.consumed();
        engine.tasks.close(&all);
        engine.tasks.finish_stopping();
        drop(guard);
        // Unsubscribing sends a LeaveGroup, static member or not: the
        // group rebalances at once. A static member that only restarts
        // does not: it closes the consumer (when dropped), which
        // librdkafka does without a LeaveGroup for it (KIP-345), and its
        // partitions wait for it up to the session timeout.
        if !self.static_member || self.leave_group.load(Ordering::Relaxed) {
            if self.static_member {
                tracing::info!("leaving the consumer group (SIGUSR1): its partitions move to the others now");
            }
            self.consumer.unsubscribe();
            // librdkafka sends the LeaveGroup only once the revocation is
            // done, which needs the rebalance callback served by a poll; a
            // static member closed before that is "terminating" and sends
            // none. Records polled meanwhile are not processed (the next
            // owner reads them from the committed offsets).
            let deadline = Instant::now() + LEAVE_WAIT;
            while Instant::now() < deadline {
                let _ = self.consumer.poll(Duration::from_millis(100));
                if self.consumer.assignment().is_ok_and(|a| a.count() == 0) {
                    // The LeaveGroup goes out after the unassign: a few
                    // more rounds for it.
                    for _ in 0..5 {
                        let _ = self.consumer.poll(Duration::from_millis(100));
                    }
                    break;
                }
            }
        } else {
            tracing::info!("static member: not leaving the consumer group; its partitions wait for this instance up to the session timeout");
        }
        Ok(())
    }
}

/// Where a task keeps its state.
pub(crate) fn task_dir(state_dir: &Path, app: &str, sub: usize, partition: i32) -> PathBuf {
    crate::state::app_dir(state_dir, app).join(format!("{sub}_{partition}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    const FENCED: &str =
        "Fatal consumer error: Broker: Static consumer fenced by other consumer with same group.instance.id";

    #[test]
    fn a_fence_right_after_the_sessions_own_timeout_is_the_member_fencing_itself() {
        let now = Instant::now();
        let just_now = Some(now - Duration::from_secs(1));
        assert!(Fatal::new(FENCED, just_now, now).self_fenced);
        // No session timeout, or one long ago: another instance has the id.
        let never = Fatal::new(FENCED, None, now);
        assert!(!never.self_fenced);
        assert!(
            never.why.contains("another `weir run` has this instance id"),
            "{}",
            never.why
        );
        assert!(!Fatal::new(FENCED, Some(now - SELF_FENCE_WINDOW - Duration::from_secs(1)), now).self_fenced);
        // Other fatal errors never rejoin.
        let other = Fatal::new("Fatal consumer error: something else", just_now, now);
        assert!(!other.self_fenced);
        assert_eq!(other.why, "Fatal consumer error: something else");
    }

    #[test]
    fn rejoins_are_limited_so_two_members_sharing_an_id_stop() {
        let start = Instant::now();
        let fatal = Fatal::new(FENCED, Some(start), start);
        let mut rejoins = Vec::new();
        for n in 0..MAX_REJOINS {
            let at = start + Duration::from_secs(n as u64);
            assert!(may_rejoin(&fatal, &mut rejoins, at), "rejoin {n}");
        }
        assert!(!may_rejoin(&fatal, &mut rejoins, start + Duration::from_secs(30)));
        // Once the earlier ones are older than the span, it may again.
        assert!(may_rejoin(
            &fatal,
            &mut rejoins,
            start + REJOIN_SPAN + Duration::from_secs(1)
        ));
        let other = Fatal::new(FENCED, None, start);
        assert!(!may_rejoin(&other, &mut Vec::new(), start));
    }

    #[test]
    fn the_state_directory_is_private_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("state").join("app");
        let lock = open_app_dir(&app).unwrap();
        assert_eq!(mode(&app), 0o700, "created 0700");
        assert_eq!(mode(&dir.path().join("state")), 0o700, "a missing --state-dir too");
        assert!(matches!(open_app_dir(&app), Err(RuntimeError::StateDirLocked(_))));
        drop(lock);
        // An existing, world-readable application directory is made private.
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _lock = open_app_dir(&app).unwrap();
        assert_eq!(mode(&app), 0o700);
        // The process id, written without following links, reads back.
        let id = process_id(&app).unwrap();
        assert_eq!(process_id(&app).unwrap(), id);
    }

    #[test]
    fn a_symlinked_lock_or_process_id_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, app.join(".lock")).unwrap();
        let err = open_app_dir(&app).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(app.join(".lock")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), app.join("process.id")).unwrap();
        assert!(
            process_id(&app).is_err(),
            "a dangling link is not followed (nor created)"
        );
        assert!(!dir.path().join("elsewhere").exists());
    }
}
