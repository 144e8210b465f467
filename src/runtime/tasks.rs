//! The task manager: which tasks this instance runs, opening them (their
//! stores restored, their stream time read back from the committed offsets),
//! feeding them records, and the commit that ties their outputs, changelog
//! records, stream time and input offsets together.
//!
//! A commit, in this order (the same for both guarantees):
//! 1. take every store's cached writes and send them to the changelog;
//! 2. flush the producer (every record of the interval delivered);
//! 3. commit the input positions with each task's stream time in the offset
//!    metadata: in the transaction (exactly-once) or through the consumer;
//! 4. only then apply the writes to RocksDB, with the changelog offsets they
//!    reach, in one atomic write per task.
//!
//! A failure before 4 leaves RocksDB at the previous commit; under
//! exactly-once the transaction is aborted and [`TaskManager::drop_all`]
//! rebuilds every task from that committed state. A crash between 3 and 4
//! leaves RocksDB one interval behind, which the changelog tail (committed)
//! restores on the next open.
//!
//! Over 600 lines on purpose: everything here reads or writes the same
//! per-partition state (tasks, restores, positions, committed offsets), and
//! the commit above reads in one place. The restore thread (`restore`), the
//! producer (`collector`) and the record order (`aligned`) live apart.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Counter, Histogram};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::collector::{Collector, Outgoing};
use super::restore::Restoring;
use super::{RuntimeError, TpMap, TpRef};
use crate::kafka::partition_for;
use crate::processor::{Origin, Output, OutputKind, Task, TaskStats};
use crate::state::rocks::TaskDb;
use crate::state::{Change, StoreError};
use crate::support::dead_letter;
use crate::topology::Topology;

/// How often consumer lag is measured (from the consumer's cached
/// watermarks: no broker round trip).
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Offset-commit metadata: the task's stream time, so a restarted or moved
/// task resumes with it and an emitted window stays final (Kafka Streams
/// keeps its partition time there too).
const META_PREFIX: &str = "weir:v1:stream_time=";

pub(crate) fn encode_stream_time(t: i64) -> String {
    format!("{META_PREFIX}{t}")
}

pub(crate) fn decode_stream_time(meta: &str) -> Option<i64> {
    meta.strip_prefix(META_PREFIX)?.parse().ok()
}

/// The clock, read once per batch of records rather than per record (a
/// clock read per record cost ~5% of `weir run`'s CPU on the broker).
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    pub instant: Instant,
    /// Wall clock, ms since the epoch.
    pub wall_ms: i64,
}

impl Now {
    pub(super) fn read() -> Now {
        Now {
            instant: Instant::now(),
            wall_ms: chrono::Utc::now().timestamp_millis(),
        }
    }
}

/// Metric handles of the per-record path, resolved once: `counter!` with
/// labels allocates and hashes its labels on every call.
struct Meters {
    e2e_latency: Histogram,
    /// Records produced, per topic.
    produced: HashMap<String, Counter>,
}

/// A task's taken store changes: (store index, changes).
type StoreChanges = Vec<(usize, Vec<Change>)>;

struct TaskEntry {
    task: Task,
    id: String,
    /// `None` for a stateless task.
    db: Option<TaskDb>,
    last_record: Instant,
    stream_time_at_last_record: i64,
    idle_after: Option<Duration>,
    exported: TaskStats,
}

pub(super) struct TaskManager {
    topo: Arc<Topology>,
    bootstrap: String,
    state_dir: PathBuf,
    app: String,
    tasks: hashbrown::HashMap<(usize, i32), TaskEntry>,
    restoring: hashbrown::HashMap<(usize, i32), Restoring>,
    /// Restores told to stop (partitions revoked, tasks dropped) whose
    /// threads have not said so yet: kept aside rather than waited for in
    /// the rebalance callback. Their stores stay open until they stop, so
    /// reopening one of those tasks waits for it (`open_task`).
    stopping: hashbrown::HashMap<(usize, i32), Restoring>,
    /// Next offset to commit per consumed partition.
    positions: TpMap<i64>,
    /// Partition count of every topic the topology reads or writes.
    partitions: hashbrown::HashMap<String, i32>,
    /// Records were consumed or produced since the last commit.
    uncommitted: bool,
    /// What the last commit committed per partition.
    committed: TpMap<i64>,
    last_lag: Instant,
    lag: super::lag::LagTracker,
    /// The instance's global tables, handed to every task it starts.
    globals: Arc<crate::state::global::GlobalTables>,
    meters: Meters,
    /// Told which tasks are open (interactive queries).
    query: Option<Arc<crate::query::Registry>>,
}

impl TaskManager {
    pub(super) fn new(
        topo: Arc<Topology>,
        bootstrap: &str,
        state_dir: PathBuf,
        partitions: HashMap<String, i32>,
        globals: Arc<crate::state::global::GlobalTables>,
        query: Option<Arc<crate::query::Registry>>,
    ) -> Self {
        let app = topo.application_id.clone();
        TaskManager {
            app: app.clone(),
            topo,
            bootstrap: bootstrap.to_string(),
            state_dir,
            tasks: Default::default(),
            restoring: Default::default(),
            stopping: Default::default(),
            positions: TpMap::default(),
            partitions: partitions.into_iter().collect(),
            uncommitted: false,
            committed: TpMap::default(),
            last_lag: Instant::now(),
            lag: Default::default(),
            globals,
            query,
            meters: Meters {
                e2e_latency: histogram!("weir_record_e2e_latency_seconds", "topology" => app.clone()),
                produced: HashMap::new(),
            },
        }
    }

    pub(super) fn positions(&self) -> &TpMap<i64> {
        &self.positions
    }

    /// Process one consumed record.
    pub(super) fn handle<M: Message, C: ConsumerContext>(
        &mut self,
        msg: &M,
        consumer: &BaseConsumer<C>,
        collector: &mut Collector,
        now: Now,
    ) -> Result<(), RuntimeError> {
        let topic = msg.topic();
        let partition = msg.partition();
        let Some((sub, _)) = self.topo.source_for(topic) else {
            tracing::warn!(topic, "record from a topic this topology does not read");
            return Ok(());
        };
        self.ensure_open(sub, partition, consumer)?;
        if let Some(r) = self.restoring.get_mut(&(sub, partition)) {
            // Not yet: skip it and come back to it (a seek) once the stores
            // are restored. Not `pause`: librdkafka's pause waits for the
            // partition's broker thread with no timeout, and stalled the
            // loop for good while a broker restarted.
            r.skipped.entry((topic.to_string(), partition)).or_insert(msg.offset());
            return Ok(());
        }
        match self.positions.get_mut(&TpRef(topic, partition)) {
            // Records of a partition come in offset order, or something
            // took them out of order (see `aligned::detach_queue`): the
            // position would jump past records not processed yet, and a
            // commit then skip them. Never process on: rebuild from the
            // last commit.
            Some(next) if msg.offset() < *next => {
                counter!("weir_offset_regressions_total", "topology" => self.app.clone()).increment(1);
                return Err(RuntimeError::OffsetRegression {
                    topic: topic.to_string(),
                    partition,
                    offset: msg.offset(),
                    expected: *next,
                });
            }
            Some(next) => *next = msg.offset() + 1,
            None => {
                self.positions.insert((topic.to_string(), partition), msg.offset() + 1);
            }
        }
        self.uncommitted = true;
        let origin = Origin {
            topic,
            partition,
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis().unwrap_or(0),
            key: msg.key(),
            value: msg.payload(),
        };
        let Some(entry) = self.tasks.get_mut(&(sub, partition)) else {
            return Ok(());
        };
        let mut outs = Vec::new();
        entry.task.process(&self.topo, &origin, now.wall_ms, &mut outs)?;
        entry.last_record = now.instant;
        entry.stream_time_at_last_record = entry.task.stream_time;
        self.send(outs, partition, collector, now)
    }

    /// Open the task of (sub-topology, partition) unless it runs already.
    fn ensure_open<C: ConsumerContext>(
        &mut self,
        sub: usize,
        partition: i32,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RuntimeError> {
        if !self.tasks.contains_key(&(sub, partition)) && !self.restoring.contains_key(&(sub, partition)) {
            self.open_task(sub, partition, consumer)?;
        }
        Ok(())
    }

    /// Open the tasks of newly assigned partitions (restoring their stores)
    /// before they process anything, as Kafka Streams does on assignment.
    pub(super) fn open_assigned<C: ConsumerContext>(
        &mut self,
        assigned: &[(String, i32)],
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RuntimeError> {
        for (topic, partition) in assigned {
            if let Some((sub, _)) = self.topo.source_for(topic) {
                self.ensure_open(sub, *partition, consumer)?;
            }
        }
        self.warn_split(assigned, consumer);
        Ok(())
    }

    /// A task reading several topics (a join with a table step) needs all
    /// of its partitions on this instance. The `range` assignor such a
    /// topology's group uses gives them to one member (see
    /// `assignment_strategy`); a member that got only some (another
    /// assignor in the group, racks: librdkafka's range assignor prefers
    /// rack-local partitions when `client.rack` is set) would join a
    /// stream with a table it does not update: said, so that it is seen.
    fn warn_split<C: ConsumerContext>(&self, assigned: &[(String, i32)], consumer: &BaseConsumer<C>) {
        let Ok(holding) = consumer.assignment() else { return };
        let mut warned = HashSet::new();
        for (topic, partition) in assigned {
            let Some((sub, _)) = self.topo.source_for(topic) else {
                continue;
            };
            let sources = self.sources(sub);
            if sources.len() < 2 || !warned.insert((sub, *partition)) {
                continue;
            }
            let missing: Vec<&String> = sources
                .iter()
                .filter(|t| holding.find_partition(t, *partition).is_none())
                .collect();
            if !missing.is_empty() {
                tracing::warn!(
                    task = %format!("{sub}_{partition}"),
                    ?missing,
                    "a join task's partitions are not all assigned to this instance: its stream and its table \
                     are processed apart, and its joins miss rows (is `client.rack` set?)"
                );
            }
        }
    }

    /// The source topics of a sub-topology.
    fn sources(&self, sub: usize) -> Vec<String> {
        self.topo.subtopology_sources(sub)
    }

    /// The stream time a task committed last (the largest over its input
    /// partitions), `None` if it never committed one.
    fn committed_stream_time<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        sub: usize,
        partition: i32,
    ) -> Result<Option<i64>, RuntimeError> {
        let mut tpl = TopicPartitionList::new();
        for topic in self.sources(sub) {
            tpl.add_partition(&topic, partition);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let committed = loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "reading committed offsets failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| decode_stream_time(e.metadata()))
            .max())
    }

    /// Open a task. A stateless one runs at once; a stateful one first
    /// restores its stores (only the changelog after the offset its RocksDB
    /// holds) on a thread of its own, so polling and the other tasks go on
    /// meanwhile; [`TaskManager::poll_restores`] starts it when done. Its
    /// stream time comes from the committed offsets.
    fn open_task<C: ConsumerContext>(
        &mut self,
        sub: usize,
        partition: i32,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RuntimeError> {
        let id = format!("{sub}_{partition}");
        let stores: Vec<(String, String)> = self
            .topo
            .stores_of(sub)
            .map(|(_, s)| (s.name.clone(), s.changelog.clone()))
            .collect();
        let stream_time = self.committed_stream_time(consumer, sub, partition)?;
        if let Some(r) = self.stopping.remove(&(sub, partition)) {
            // Its stores are still open in the stopping restore.
            Restoring::cancel_all([r]);
        }
        if !stores.is_empty() {
            let dir = super::task_dir(&self.state_dir, &self.app, sub, partition);
            let names: Vec<String> = stores.iter().map(|(n, _)| n.clone()).collect();
            let db = TaskDb::open(&dir.join("rocksdb"), &names)?;
            if let Some(q) = &self.query {
                q.opened(sub, partition, &db);
            }
            let r = Restoring::start(&self.bootstrap, &self.app, id, partition, stores, db, stream_time)?;
            self.restoring.insert((sub, partition), r);
            gauge!("weir_tasks_restoring", "topology" => self.app.clone()).set(self.restoring.len() as f64);
            crate::health::global().set_restoring(self.restoring.len());
            return Ok(());
        }
        let task = Task::new(&self.topo, sub, partition, |i| {
            Err(StoreError::Corrupt {
                store: i.to_string(),
                reason: "stateless task has no store".into(),
            })
        })?;
        self.start_task(sub, partition, id, task, None, stream_time);
        Ok(())
    }

    fn start_task(
        &mut self,
        sub: usize,
        partition: i32,
        id: String,
        mut task: Task,
        db: Option<TaskDb>,
        stream_time: Option<i64>,
    ) {
        if let Some(t) = stream_time {
            task.stream_time = t;
        }
        task.set_global_tables(self.globals.clone());
        tracing::info!(task = %id, stream_time = ?stream_time, "task ready");
        counter!("weir_tasks_created_total", "topology" => self.app.clone()).increment(1);
        self.tasks.insert(
            (sub, partition),
            TaskEntry {
                task,
                id,
                db,
                last_record: Instant::now(),
                stream_time_at_last_record: i64::MIN,
                idle_after: self.topo.close_idle_after(sub),
                exported: TaskStats::default(),
            },
        );
    }

    /// Start the tasks whose restore finished: their input partitions,
    /// skipped while they restored, go back to the first record they
    /// skipped. Returns those partitions (whatever was
    /// buffered for them is fetched again).
    pub(super) fn poll_restores<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<Vec<(String, i32)>, RuntimeError> {
        self.stopping.retain(|_, r| match r.finished() {
            None => true,
            Some(_) => {
                tracing::info!(task = %r.id, "restore stopped");
                false
            }
        });
        let done: Vec<_> = self
            .restoring
            .iter()
            .filter_map(|(key, r)| r.finished().map(|result| (*key, result)))
            .collect();
        let mut resumed = Vec::new();
        for (key, result) in done {
            let Some(mut r) = self.restoring.remove(&key) else {
                continue;
            };
            let replayed = result?;
            tracing::info!(task = %r.id, records = replayed, elapsed_ms = r.started.elapsed().as_millis() as u64, "task restored");
            let topo = self.topo.clone();
            let db = r.db.clone();
            let task = Task::new(&self.topo, key.0, key.1, |i| {
                Ok(Box::new(db.store(&topo.stores[i].name)))
            })?;
            self.start_task(key.0, key.1, r.id.clone(), task, Some(r.db.clone()), r.stream_time);
            if let Some(q) = &self.query {
                q.restored(key.0, key.1);
            }
            for ((topic, partition), offset) in r.skipped.drain() {
                consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(10))?;
                resumed.push((topic, partition));
            }
        }
        gauge!("weir_tasks_restoring", "topology" => self.app.clone()).set(self.restoring.len() as f64);
        crate::health::global().set_restoring(self.restoring.len());
        Ok(resumed)
    }

    /// Whether the task of (sub-topology, partition) is restoring its stores.
    pub(super) fn is_restoring(&self, sub: usize, partition: i32) -> bool {
        self.restoring.contains_key(&(sub, partition))
    }

    /// Partitions whose records are held back by a restore.
    pub(super) fn restoring_partitions(&self) -> HashSet<(String, i32)> {
        self.restoring
            .values()
            .flat_map(|r| r.skipped.keys().cloned())
            .collect()
    }

    fn send(
        &mut self,
        outs: Vec<Output>,
        fallback_partition: i32,
        collector: &mut Collector,
        now: Now,
    ) -> Result<(), RuntimeError> {
        if outs.is_empty() {
            return Ok(());
        }
        self.uncommitted = true;
        let now_ms = now.wall_ms;
        for out in outs {
            let n = self.partitions.get(&out.topic).copied().unwrap_or(1);
            let partition = partition_for(out.key.as_deref(), n, fallback_partition);
            if out.kind == OutputKind::Result {
                self.meters
                    .e2e_latency
                    .record((now_ms - out.timestamp).max(0) as f64 / 1000.0);
            }
            self.produced(&out.topic).increment(1);
            // A dead letter carries the time it was dead-lettered, so the
            // dead-letter topic's retention counts from then: with the
            // original (possibly days old) timestamp the broker could delete
            // it at its next retention check. The original is in the
            // `weir.timestamp` header. (A dead-letter topic weir creates
            // takes the broker's clock instead: see `topics.rs`.)
            let timestamp = match out.kind {
                OutputKind::DeadLetter => now_ms,
                _ => out.timestamp,
            };
            let record = Outgoing {
                topic: &out.topic,
                partition,
                key: out.key.as_deref(),
                value: out.value.as_deref(),
                timestamp,
                headers: &out.headers,
            };
            match collector.send(&record) {
                Err(e) if dead_letter::is_too_large(&e) => {
                    self.send_too_large(&out, partition, now_ms, collector, &e)?
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// The "records produced" counter of `topic`.
    fn produced(&mut self, topic: &str) -> &Counter {
        if !self.meters.produced.contains_key(topic) {
            let c =
                counter!("weir_records_produced_total", "topology" => self.app.clone(), "topic" => topic.to_string());
            self.meters.produced.insert(topic.to_string(), c);
        }
        &self.meters.produced[topic]
    }

    /// A record over the producer's `message.max.bytes` would fail the
    /// commit again on every replay (a crash loop): it goes to the
    /// dead-letter topic instead, without its value, with the reason.
    fn send_too_large(
        &mut self,
        out: &Output,
        partition: i32,
        now_ms: i64,
        collector: &mut Collector,
        refused: &KafkaError,
    ) -> Result<(), RuntimeError> {
        let size = out.value.as_ref().map_or(0, Vec::len);
        tracing::warn!(topic = %out.topic, bytes = size, "record too large for the producer: dead-lettered without its value");
        let Some(dlq) = self.topo.dead_letter.clone() else {
            return Ok(());
        };
        let mut headers = out.headers.clone();
        if out.kind != OutputKind::DeadLetter {
            headers.push((
                dead_letter::ERROR.into(),
                format!("output record for {} too large: {size} bytes", out.topic),
            ));
            headers.push((dead_letter::TIMESTAMP.into(), out.timestamp.to_string()));
        }
        let (name, why) = dead_letter::value_dropped(size, refused);
        headers.push((name.into(), why));
        let n = self.partitions.get(&dlq).copied().unwrap_or(1);
        collector.send(&Outgoing {
            topic: &dlq,
            partition: partition_for(out.key.as_deref(), n, partition.min(n - 1)),
            key: out.key.as_deref(),
            value: None,
            timestamp: now_ms,
            headers: &headers,
        })?;
        Ok(())
    }

    /// Stream time of an idle task follows the wall clock once it has been
    /// idle for `close_idle_after`, so the windows of a paused feed close.
    pub(super) fn close_idle(&mut self, collector: &mut Collector, now: Now) -> Result<(), RuntimeError> {
        let topo = self.topo.clone();
        let mut sends = Vec::new();
        for entry in self.tasks.values_mut() {
            let Some(idle) = entry.idle_after else { continue };
            if entry.stream_time_at_last_record == i64::MIN {
                continue;
            }
            let elapsed = now.instant.saturating_duration_since(entry.last_record);
            if elapsed < idle {
                continue;
            }
            let target = entry
                .stream_time_at_last_record
                .saturating_add(elapsed.as_millis() as i64);
            let mut outs = Vec::new();
            entry.task.advance_stream_time(&topo, target, &mut outs)?;
            if !outs.is_empty() {
                tracing::info!(task = %entry.id, stream_time = target, records = outs.len(), "idle task: stream time advanced by the wall clock");
                sends.push((outs, entry.task.partition));
            }
        }
        for (outs, p) in sends {
            self.send(outs, p, collector, now)?;
        }
        Ok(())
    }

    /// The positions to commit, each with its task's stream time.
    ///
    /// Given `held` (the partitions with records taken but not processed),
    /// a partition holding nothing commits the consumer's position when it
    /// is further: after the last record of a transaction comes its commit
    /// marker, which takes an offset but is never handed out, and the
    /// position steps over it (as Kafka Streams does, KAFKA-6607). Without
    /// this a read_committed group never reaches the end of a transactional
    /// topic and its lag never drops below 1.
    ///
    /// That includes a partition of a running task that no record of has
    /// reached yet: assigned where only a marker is left (its previous
    /// owner, revoked, committed its last record + 1), its position steps
    /// over the marker without a record (chaos seed 511, docs/chaos.md).
    /// librdkafka's position is invalid after a seek until a record comes,
    /// so a partition sought back after its restore is not committed ahead.
    fn offsets<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        held: Option<&HashSet<(String, i32)>>,
    ) -> Result<TopicPartitionList, KafkaError> {
        let consumer_at: HashMap<(String, i32), i64> = match held {
            None => HashMap::new(),
            Some(_) => consumer
                .position()?
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
        };
        let skipping = self.restoring_partitions();
        let mut tpl = TopicPartitionList::new();
        let untouched: Vec<((String, i32), i64)> = match held {
            None => Vec::new(),
            Some(held) => consumer_at
                .iter()
                .filter(|(tp, _)| !self.positions.contains_key(*tp) && !held.contains(*tp) && !skipping.contains(*tp))
                .filter(|((topic, partition), _)| {
                    self.topo
                        .source_for(topic)
                        .is_some_and(|(sub, _)| self.tasks.contains_key(&(sub, *partition)))
                })
                .map(|(tp, &at)| (tp.clone(), at))
                .collect(),
        };
        for (tp, offset) in self.positions.iter().chain(untouched.iter().map(|(tp, at)| (tp, at))) {
            let (topic, partition) = tp;
            let offset = match (consumer_at.get(tp), held) {
                (Some(&at), Some(held)) if at > *offset && !held.contains(tp) && !skipping.contains(tp) => at,
                _ => *offset,
            };
            // Never behind the last commit: it may have stepped over a
            // transaction marker that the position has not (a partition
            // that holds records now, and did not then). Behind it, the
            // group's offset would move backwards.
            let offset = self.committed.get(tp).map_or(offset, |&c| offset.max(c));
            tpl.add_partition_offset(topic, *partition, Offset::Offset(offset))?;
            let stream_time = self
                .topo
                .source_for(topic)
                .and_then(|(sub, _)| self.tasks.get(&(sub, *partition)))
                .map(|t| t.task.stream_time)
                .filter(|t| *t != i64::MIN);
            if let (Some(t), Some(mut elem)) = (stream_time, tpl.find_partition(topic, *partition)) {
                elem.set_metadata(encode_stream_time(t));
            }
        }
        Ok(tpl)
    }

    /// Commit (see the module doc). Does nothing when nothing happened since
    /// the last commit.
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        collector: &mut Collector,
        held: Option<&HashSet<(String, i32)>>,
    ) -> Result<bool, RuntimeError> {
        let started = Instant::now();
        self.export_gauges(consumer);
        let topo = self.topo.clone();
        // What tables held back (`emit: on_commit`) belongs to this commit.
        let now = Now::read();
        let mut sends = Vec::new();
        for entry in self.tasks.values_mut() {
            let mut outs = Vec::new();
            entry.task.emit_cached(&topo, &mut outs)?;
            if !outs.is_empty() {
                sends.push((outs, entry.task.partition));
            }
        }
        for (outs, p) in sends {
            self.send(outs, p, collector, now)?;
        }
        self.send_changelog(collector, now.wall_ms)?;
        let mut pending: Vec<((usize, i32), StoreChanges)> = Vec::new();
        for (key, entry) in self.tasks.iter_mut() {
            let changes = entry.task.take_changes();
            if !changes.is_empty() {
                pending.push((*key, changes));
            }
        }
        let offsets = self.offsets(consumer, held)?;
        let moved = offsets
            .elements()
            .iter()
            .any(|e| self.committed.get(&(e.topic().to_string(), e.partition())).copied() != e.offset().to_raw());
        if pending.is_empty() && !self.uncommitted && !collector.in_transaction() && !moved {
            return Ok(false);
        }
        let flush_started = Instant::now();
        let delivered = collector.flush()?;
        let flushed = flush_started.elapsed();
        collector.commit(consumer, &offsets)?;
        let committed = flush_started.elapsed() - flushed;
        self.uncommitted = false;
        for e in offsets.elements() {
            if let Some(o) = e.offset().to_raw() {
                self.committed.insert((e.topic().to_string(), e.partition()), o);
            }
        }
        for (key, changes) in pending {
            let Some(entry) = self.tasks.get(&key) else { continue };
            let Some(db) = &entry.db else { continue };
            let batches: Vec<(&str, &[Change])> = changes
                .iter()
                .map(|(i, c)| (topo.stores[*i].name.as_str(), c.as_slice()))
                .collect();
            let reached: Vec<(&str, i32, i64)> = changes
                .iter()
                .filter_map(|(i, _)| {
                    let changelog = topo.stores[*i].changelog.as_str();
                    delivered
                        .get(&(changelog.to_string(), key.1))
                        .map(|last| (changelog, key.1, last + 1))
                })
                .collect();
            db.apply(&batches, &reached)?;
        }
        for entry in self.tasks.values_mut() {
            export_stats(&self.app, entry);
        }
        tracing::debug!(
            total = ?started.elapsed(),
            flush = ?flushed,
            commit = ?committed,
            "committed"
        );
        histogram!("weir_commit_latency_seconds", "topology" => self.app.clone())
            .record(started.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Roughly the memory the tasks' cached writes take (what the next
    /// commit applies to RocksDB).
    pub(super) fn cached_bytes(&self) -> usize {
        self.tasks.values().map(|e| e.task.cached_bytes()).sum()
    }

    /// Send every store's writes that the changelog has not got yet (all
    /// of them stay cached until the commit applies them to RocksDB).
    /// Called by the commit, and under exactly-once also between commits
    /// (see `state`'s module doc): inside the open transaction nothing of
    /// it is visible before the commit, and the commit only has to send
    /// what changed since. Returns how many records were sent.
    pub(super) fn send_changelog(&mut self, collector: &mut Collector, now_ms: i64) -> Result<usize, RuntimeError> {
        let topo = &self.topo;
        let mut sent = 0;
        for entry in self.tasks.values_mut() {
            let partition = entry.task.partition;
            sent += entry.task.send_unsent(|store, k, v| {
                collector.send(&Outgoing {
                    topic: &topo.stores[store].changelog,
                    partition,
                    key: Some(k),
                    value: v,
                    timestamp: now_ms,
                    headers: &[],
                })
            })?;
        }
        Ok(sent)
    }

    /// Every `LAG_INTERVAL`, idle or not: the running tasks, and the
    /// consumer lag of every consumed partition in records and seconds
    /// (see `lag`), measured from what was committed, which steps over
    /// transaction markers (`offsets`).
    fn export_gauges<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if self.last_lag.elapsed() < LAG_INTERVAL {
            return;
        }
        let now = Instant::now();
        self.last_lag = now;
        gauge!("weir_tasks_running", "topology" => self.app.clone()).set(self.tasks.len() as f64);
        self.lag
            .export(&self.app, consumer, &self.positions, &self.committed, now);
    }

    /// Close the tasks reading the given partitions (after a commit).
    pub(super) fn close(&mut self, partitions: &[(String, i32)]) {
        let mut cancelled = Vec::new();
        for (topic, partition) in partitions {
            self.lag.forget(&self.app, &(topic.clone(), *partition));
            self.positions.remove(&(topic.clone(), *partition));
            self.committed.remove(&(topic.clone(), *partition));
            if let Some((sub, _)) = self.topo.source_for(topic) {
                if let Some(q) = &self.query {
                    q.closed(sub, *partition);
                }
                if let Some(entry) = self.tasks.remove(&(sub, *partition)) {
                    if let Some(db) = &entry.db {
                        crate::state::rocks::export_properties(db, &self.app, &entry.id, false);
                    }
                    tracing::info!(task = %entry.id, "task closed");
                }
                if let Some(r) = self.restoring.remove(&(sub, *partition)) {
                    cancelled.push(((sub, *partition), r));
                }
            }
        }
        self.stop_restores(cancelled);
    }

    /// Tell these restores to stop and keep them aside (see `stopping`).
    fn stop_restores(&mut self, restores: impl IntoIterator<Item = ((usize, i32), Restoring)>) {
        for (key, r) in restores {
            r.cancel();
            tracing::info!(task = %r.id, "stopping its restore");
            self.stopping.insert(key, r);
        }
    }

    /// Wait for every stopping restore (at shutdown: their threads write
    /// to the stores until they notice).
    pub(super) fn finish_stopping(&mut self) {
        Restoring::cancel_all(self.stopping.drain().map(|(_, r)| r));
    }

    /// Drop every task without committing: what they did since the last
    /// commit is forgotten (their RocksDB holds the committed state), and
    /// they are opened again from it when their partitions deliver.
    pub(super) fn drop_all(&mut self) {
        if let Some(q) = &self.query {
            q.clear();
        }
        let restoring: Vec<_> = self.restoring.drain().collect();
        self.stop_restores(restoring);
        if !self.tasks.is_empty() {
            tracing::info!(
                tasks = self.tasks.len(),
                "closing every task dirty: back to the last commit"
            );
        }
        self.tasks.clear();
        self.positions.clear();
        self.committed.clear();
        self.uncommitted = false;
    }

    /// Every consumed partition, for closing on shutdown.
    pub(super) fn consumed(&self) -> Vec<(String, i32)> {
        self.positions.keys().cloned().collect()
    }
}

fn export_stats(app: &str, entry: &mut TaskEntry) {
    let s = &entry.task.stats;
    let e = &entry.exported;
    let labels = [("topology", app.to_string()), ("task", entry.id.clone())];
    counter!("weir_records_consumed_total", &labels).increment(s.consumed - e.consumed);
    counter!("weir_records_processed_total", &labels).increment(s.processed - e.processed);
    counter!("weir_dead_letter_records_total", &labels).increment(s.dead_letter - e.dead_letter);
    counter!("weir_result_records_total", &labels).increment(s.emitted - e.emitted);
    let late = [
        ("topology", app.to_string()),
        ("task", entry.id.clone()),
        ("reason", "late".to_string()),
    ];
    counter!("weir_dropped_records_total", &late).increment(s.dropped_late - e.dropped_late);
    let stale = [
        ("topology", app.to_string()),
        ("task", entry.id.clone()),
        ("reason", "stale".to_string()),
    ];
    counter!("weir_dropped_records_total", &stale).increment(s.dropped_stale - e.dropped_stale);
    let join_miss = [
        ("topology", app.to_string()),
        ("task", entry.id.clone()),
        ("reason", "join_miss".to_string()),
    ];
    counter!("weir_dropped_records_total", &join_miss).increment(s.dropped_join_miss - e.dropped_join_miss);
    if entry.task.stream_time != i64::MIN {
        gauge!("weir_task_stream_time_seconds", &labels).set(entry.task.stream_time as f64 / 1000.0);
    }
    if let Some(db) = &entry.db {
        crate::state::rocks::export_properties(db, app, &entry.id, true);
    }
    entry.exported = s.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_time_round_trips_through_commit_metadata() {
        for t in [0, 1_743_397_200_000, -5, i64::MAX] {
            assert_eq!(decode_stream_time(&encode_stream_time(t)), Some(t));
        }
        assert_eq!(decode_stream_time(""), None, "committed without metadata");
        assert_eq!(decode_stream_time("something else"), None);
    }
}
