//! `weir run`: the consumer-group loop that feeds tasks from Kafka.
//!
//! One instance runs one blocking loop on a dedicated thread: poll a record,
//! hand it to the task of its (sub-topology, partition), produce what the
//! task returns. Every `commit_interval` it commits: flush store caches
//! (RocksDB + changelog records), flush the producer, write each task's
//! `.checkpoint`, then commit consumer offsets — at-least-once. Tasks are
//! created when their partition first delivers a record and restore their
//! stores from the changelog first. On revocation (rebalance) and on
//! shutdown the same commit runs before partitions are let go.

mod restore;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka::{client_config, ensure_topics, TopicSpec};
use crate::processor::{partition_for, Origin, Output, OutputKind, ProcessError, Task, TaskStats};
use crate::state::rocks::TaskDb;
use crate::state::{checkpoint, StoreError};
use crate::topology::{NodeKind, StoreKind, Topology};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Unreachable(#[from] crate::kafka::BrokerUnreachable),
    #[error("state: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("source topic {0} does not exist (create it, or start its producer first)")]
    MissingSource(String),
    #[error("could not deliver records to Kafka: {0}")]
    Delivery(String),
}

/// Options of `weir run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bootstrap: String,
    pub state_dir: PathBuf,
    /// How often committed repartition records are deleted.
    pub purge_interval: Duration,
}

/// Delivery reports: the highest delivered offset per partition (for
/// checkpoints) and the first error.
#[derive(Default)]
struct Deliveries {
    offsets: HashMap<(String, i32), i64>,
    error: Option<String>,
}

struct DeliveryContext {
    state: Arc<Mutex<Deliveries>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut s = lock(&self.state);
        match result {
            Ok(m) => {
                let e = s.offsets.entry((m.topic().to_string(), m.partition())).or_insert(-1);
                *e = (*e).max(m.offset());
            }
            Err((e, m)) => {
                if s.error.is_none() {
                    s.error = Some(format!("{} [{}]: {e}", m.topic(), m.partition()));
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct TaskEntry {
    task: Task,
    id: String,
    /// Checkpointed changelog offsets (next offset to restore from).
    checkpoint: checkpoint::Offsets,
    dir: PathBuf,
    last_record: Instant,
    stream_time_at_last_record: i64,
    idle_after: Option<Duration>,
    exported: TaskStats,
}

/// Everything the loop and the rebalance callback share.
struct Engine {
    topo: Arc<Topology>,
    opts: RunOptions,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Mutex<Deliveries>>,
    tasks: HashMap<(usize, i32), TaskEntry>,
    /// Next offset to commit per consumed partition.
    positions: HashMap<(String, i32), i64>,
    partitions: HashMap<String, i32>,
    app: String,
    fatal: Option<RuntimeError>,
    last_lag: Instant,
    purge: Purge,
}

/// Deletes the records of repartition topics that this instance's tasks
/// have processed and committed (each repartition partition has one reader:
/// its task), as Kafka Streams does (`repartition.purge.interval.ms`):
/// repartition topics are created with `retention.ms=-1`, so without this
/// they would grow forever.
struct Purge {
    admin: Arc<AdminClient<DefaultClientContext>>,
    rt: tokio::runtime::Handle,
    topics: HashSet<String>,
    interval: Duration,
    last: Instant,
}

impl Purge {
    /// After a commit: once per `interval`, delete what is below the
    /// committed position of every repartition partition this instance reads.
    /// Runs in the background; a failure is logged and retried next time.
    fn after_commit(&mut self, positions: &HashMap<(String, i32), i64>, app: &str) {
        if self.last.elapsed() < self.interval {
            return;
        }
        self.last = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in positions {
            if self.topics.contains(topic) && *offset > 0 {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let admin = self.admin.clone();
        let app = app.to_string();
        self.rt.spawn(async move {
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            match admin.delete_records(&tpl, &opts).await {
                Ok(done) => {
                    for e in done.elements() {
                        match e.error() {
                            Ok(()) => {
                                counter!("weir_repartition_purges_total", "topology" => app.clone()).increment(1);
                                tracing::debug!(topic = e.topic(), partition = e.partition(), low_watermark = ?e.offset(), "repartition records purged")
                            }
                            Err(err) => tracing::warn!(topic = e.topic(), partition = e.partition(), error = %err, "purging repartition records failed"),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "purging repartition records failed"),
            }
        });
    }
}

/// How long an offset commit is retried while the group coordinator is
/// unavailable (a broker restarting or a coordinator moving).
const COMMIT_RETRY: Duration = Duration::from_secs(60);

/// Commit `tpl`, retrying errors that clear by themselves once the group
/// coordinator is back (after a broker restart the first commits answer
/// NotCoordinator or CoordinatorLoadInProgress); any other error, or one that
/// lasts [`COMMIT_RETRY`], is returned.
fn commit_offsets<C: ClientContext + ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> Result<(), KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = Instant::now() + COMMIT_RETRY;
    let mut delay = Duration::from_millis(100);
    loop {
        match consumer.commit(tpl, CommitMode::Sync) {
            Err(KafkaError::ConsumerCommit(
                code @ (Code::NotCoordinator
                | Code::CoordinatorLoadInProgress
                | Code::CoordinatorNotAvailable
                | Code::RequestTimedOut
                | Code::OperationTimedOut
                | Code::NetworkException
                | Code::BrokerTransportFailure
                | Code::AllBrokersDown),
            )) if Instant::now() < deadline => {
                tracing::warn!(error = %code, retry_in = ?delay, "offset commit failed; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// How often consumer lag is measured (one metadata round trip per
/// partition).
const LAG_INTERVAL: Duration = Duration::from_secs(10);

struct RebalanceContext {
    engine: Arc<Mutex<Engine>>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut engine = lock(&self.engine);
        counter!("weir_rebalances_total", "topology" => engine.app.clone()).increment(1);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(
                    partitions = tpl.count(),
                    "partitions revoked: committing and closing their tasks"
                );
                if let Err(e) = engine.commit(consumer) {
                    tracing::error!(error = %e, "commit before revocation failed");
                    engine.fatal.get_or_insert(e);
                }
                let revoked: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                engine.close_tasks(&revoked);
            }
            Rebalance::Assign(tpl) => tracing::info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Run `topo` until `shutdown` is set. Blocking: call it from a dedicated
/// thread (`spawn_blocking`).
pub fn run(
    topo: Topology,
    opts: RunOptions,
    shutdown: Arc<AtomicBool>,
    rt: tokio::runtime::Handle,
) -> Result<(), RuntimeError> {
    if topo.guarantee == crate::topology::Guarantee::ExactlyOnce {
        tracing::warn!("processing_guarantee exactly_once is not implemented yet: running at-least-once");
    }
    if !crate::kafka::wait_for_brokers(&opts.bootstrap, crate::kafka::BROKER_WAIT, &shutdown)? {
        return Ok(());
    }
    let topo = Arc::new(topo);
    let partitions = rt.block_on(prepare_topics(&topo, &opts.bootstrap))?;
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let producer: ThreadedProducer<DeliveryContext> = client_config(&opts.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create_with_context(DeliveryContext {
            state: deliveries.clone(),
        })?;
    let engine = Arc::new(Mutex::new(Engine {
        app: topo.application_id.clone(),
        topo: topo.clone(),
        opts: opts.clone(),
        producer,
        deliveries,
        tasks: HashMap::new(),
        positions: HashMap::new(),
        partitions,
        fatal: None,
        last_lag: Instant::now(),
        purge: Purge {
            admin: Arc::new(client_config(&opts.bootstrap).create()?),
            rt: rt.clone(),
            topics: topo
                .nodes
                .iter()
                .filter_map(|n| match &n.kind {
                    NodeKind::Source(s) if s.internal => Some(s.topic.clone()),
                    _ => None,
                })
                .collect(),
            interval: opts.purge_interval,
            last: Instant::now(),
        },
    }));
    let consumer: BaseConsumer<RebalanceContext> = client_config(&opts.bootstrap)
        .set("group.id", &topo.application_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create_with_context(RebalanceContext { engine: engine.clone() })?;
    let topics = topo.source_topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    tracing::info!(application_id = %topo.application_id, topics = ?topics, "running");

    let mut last_commit = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(100));
        let mut engine = lock(&engine);
        if let Some(e) = engine.fatal.take() {
            return Err(e);
        }
        match polled {
            Some(Ok(msg)) => {
                let started = Instant::now();
                engine.handle(&msg)?;
                histogram!("weir_process_latency_seconds", "topology" => engine.app.clone())
                    .record(started.elapsed().as_secs_f64());
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        engine.close_idle()?;
        if last_commit.elapsed() >= topo.commit_interval {
            engine.commit(&consumer)?;
            last_commit = Instant::now();
        }
    }
    tracing::info!("shutting down: committing");
    let mut engine = lock(&engine);
    engine.commit(&consumer)?;
    let all: Vec<(String, i32)> = engine.positions.keys().cloned().collect();
    engine.close_tasks(&all);
    drop(engine);
    consumer.unsubscribe();
    Ok(())
}

/// Create internal and output topics; returns the partition count of every
/// topic the topology reads or writes.
async fn prepare_topics(topo: &Topology, bootstrap: &str) -> Result<HashMap<String, i32>, RuntimeError> {
    let existing = topic_partitions(bootstrap, None)?;
    let mut parts: HashMap<String, i32> = HashMap::new();
    let mut sub_parts = vec![1i32; topo.subtopologies.len()];
    let mut specs = Vec::new();
    // Sub-topologies are numbered so that a repartition topic's writer
    // comes before its reader.
    for sub in &topo.subtopologies {
        let mut n = 0;
        for &id in &sub.nodes {
            if let NodeKind::Source(s) = &topo.nodes[id].kind {
                let p = if s.internal {
                    *parts.get(&s.topic).unwrap_or(&1)
                } else {
                    *existing
                        .get(&s.topic)
                        .ok_or_else(|| RuntimeError::MissingSource(s.topic.clone()))?
                };
                parts.insert(s.topic.clone(), p);
                n = n.max(p);
            }
        }
        sub_parts[sub.id] = n.max(1);
        for &id in &sub.nodes {
            if let NodeKind::Sink(s) = &topo.nodes[id].kind {
                let p = s.partitions.unwrap_or(sub_parts[sub.id]);
                let spec = if s.internal {
                    TopicSpec::new(&s.topic, p)
                        .with_config("cleanup.policy", "delete")
                        .with_config("retention.ms", "-1")
                } else {
                    TopicSpec::new(&s.topic, p)
                };
                specs.push(spec);
                parts.entry(s.topic.clone()).or_insert(p);
            }
        }
    }
    for store in &topo.stores {
        let n = sub_parts[store.subtopology];
        let spec = match (store.kind, store.retention_ms) {
            (StoreKind::Window, Some(r)) => TopicSpec::new(&store.changelog, n)
                .with_config("cleanup.policy", "compact,delete")
                .with_config("retention.ms", &r.to_string()),
            _ => TopicSpec::new(&store.changelog, n).with_config("cleanup.policy", "compact"),
        };
        specs.push(spec);
    }
    if let Some(dlq) = &topo.dead_letter {
        specs.push(TopicSpec::new(dlq, sub_parts.iter().copied().max().unwrap_or(1)));
    }
    ensure_topics(bootstrap, &specs).await?;
    // Existing topics keep their partition counts: read them back.
    let actual = topic_partitions(bootstrap, None)?;
    for spec in &specs {
        if let Some(p) = actual.get(&spec.name) {
            parts.insert(spec.name.clone(), *p);
        }
    }
    Ok(parts)
}

/// Partition count of every topic (or of one).
pub fn topic_partitions(bootstrap: &str, topic: Option<&str>) -> Result<HashMap<String, i32>, KafkaError> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    let md = consumer.fetch_metadata(topic, Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

impl Engine {
    fn handle(&mut self, msg: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), RuntimeError> {
        let topic = msg.topic();
        let partition = msg.partition();
        self.positions.insert((topic.to_string(), partition), msg.offset() + 1);
        let Some((sub, _)) = self.topo.source_for(topic) else {
            tracing::warn!(topic, "record from a topic this topology does not read");
            return Ok(());
        };
        let origin = Origin {
            topic,
            partition,
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis().unwrap_or(0),
            key: msg.key(),
            value: msg.payload(),
        };
        let topo = self.topo.clone();
        let entry = self.task(sub, partition)?;
        let mut outs = Vec::new();
        entry.task.process(&topo, &origin, &mut outs)?;
        entry.last_record = Instant::now();
        entry.stream_time_at_last_record = entry.task.stream_time;
        self.send(outs, partition)
    }

    fn task(&mut self, sub: usize, partition: i32) -> Result<&mut TaskEntry, RuntimeError> {
        if !self.tasks.contains_key(&(sub, partition)) {
            let entry = self.open_task(sub, partition)?;
            self.tasks.insert((sub, partition), entry);
        }
        self.tasks.get_mut(&(sub, partition)).ok_or_else(|| {
            RuntimeError::Store(StoreError::Corrupt {
                store: String::new(),
                reason: "task vanished".into(),
            })
        })
    }

    /// Open a task's RocksDB stores and bring them up to date with their
    /// changelogs.
    fn open_task(&mut self, sub: usize, partition: i32) -> Result<TaskEntry, RuntimeError> {
        let id = format!("{sub}_{partition}");
        let dir = self.opts.state_dir.join(&self.topo.application_id).join(&id);
        let names: Vec<String> = self.topo.stores_of(sub).map(|(_, s)| s.name.clone()).collect();
        let mut checkpoint = checkpoint::read(&dir.join(".checkpoint"))?;
        let task = if names.is_empty() {
            // A stateless sub-topology: the opener is never called.
            Task::new(&self.topo, sub, partition, |i| {
                Err(StoreError::Corrupt {
                    store: i.to_string(),
                    reason: "stateless task has no store".into(),
                })
            })?
        } else {
            let db = TaskDb::open(&dir.join("rocksdb"), &names)?;
            for (_, store) in self.topo.stores_of(sub) {
                let mut backend = db.store(&store.name);
                let next = restore::restore(
                    &self.opts.bootstrap,
                    &self.app,
                    &id,
                    &store.name,
                    &store.changelog,
                    partition,
                    checkpoint.get(&(store.changelog.clone(), partition)).copied(),
                    &mut backend,
                )?;
                checkpoint.insert((store.changelog.clone(), partition), next);
            }
            checkpoint::write(&dir.join(".checkpoint"), &checkpoint)?;
            let topo = self.topo.clone();
            Task::new(&self.topo, sub, partition, |i| {
                Ok(Box::new(db.store(&topo.stores[i].name)))
            })?
        };
        tracing::info!(task = %id, "task ready");
        Ok(TaskEntry {
            task,
            id,
            checkpoint,
            dir,
            last_record: Instant::now(),
            stream_time_at_last_record: i64::MIN,
            idle_after: self.topo.close_idle_after(sub),
            exported: TaskStats::default(),
        })
    }

    fn send(&mut self, outs: Vec<Output>, fallback_partition: i32) -> Result<(), RuntimeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        for out in outs {
            let n = self.partitions.get(&out.topic).copied().unwrap_or(1);
            let p = partition_for(out.key.as_deref(), n, fallback_partition);
            if out.kind == OutputKind::Result {
                histogram!("weir_record_e2e_latency_seconds", "topology" => self.app.clone())
                    .record((now_ms - out.timestamp).max(0) as f64 / 1000.0);
            }
            counter!("weir_records_produced_total", "topology" => self.app.clone(), "topic" => out.topic.clone())
                .increment(1);
            let mut headers = OwnedHeaders::new();
            for (k, v) in &out.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            // A dead letter carries the time it was dead-lettered, so the
            // dead-letter topic's retention counts from then: with the
            // original (possibly days old) timestamp the broker could delete
            // it at its next retention check. The original is in the
            // `weir.timestamp` header.
            let timestamp = match out.kind {
                OutputKind::DeadLetter => now_ms,
                _ => out.timestamp,
            };
            self.produce(
                &out.topic,
                p,
                out.key.as_deref(),
                out.value.as_deref(),
                timestamp,
                headers,
            )?;
        }
        Ok(())
    }

    fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: OwnedHeaders,
    ) -> Result<(), RuntimeError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(partition).timestamp(timestamp);
        if headers.count() > 0 {
            record = record.headers(headers);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Stream time of an idle task follows the wall clock once it has been
    /// idle for `close_idle_after`, so the windows of a paused feed close.
    fn close_idle(&mut self) -> Result<(), RuntimeError> {
        let topo = self.topo.clone();
        let mut sends = Vec::new();
        for entry in self.tasks.values_mut() {
            let Some(idle) = entry.idle_after else { continue };
            if entry.stream_time_at_last_record == i64::MIN {
                continue;
            }
            let elapsed = entry.last_record.elapsed();
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
            self.send(outs, p)?;
        }
        Ok(())
    }

    /// Flush stores and changelogs, flush the producer, checkpoint, commit
    /// offsets.
    fn commit<C: ClientContext + ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let topo = self.topo.clone();
        let mut changelog = Vec::new();
        for entry in self.tasks.values_mut() {
            for (store, changes) in entry.task.flush()? {
                changelog.push((topo.stores[store].changelog.clone(), entry.task.partition, changes));
            }
        }
        for (topic, partition, changes) in &changelog {
            for (k, v) in changes {
                self.produce(
                    topic,
                    *partition,
                    Some(k),
                    v.as_deref(),
                    chrono::Utc::now().timestamp_millis(),
                    OwnedHeaders::new(),
                )?;
            }
        }
        self.producer.flush(Duration::from_secs(60))?;
        let delivered = {
            let mut d = lock(&self.deliveries);
            if let Some(e) = d.error.take() {
                return Err(RuntimeError::Delivery(e));
            }
            d.offsets.clone()
        };
        for entry in self.tasks.values_mut() {
            let mut changed = false;
            for (key, next) in entry.checkpoint.iter_mut() {
                if let Some(&last) = delivered.get(key) {
                    if last + 1 > *next {
                        *next = last + 1;
                        changed = true;
                    }
                }
            }
            if changed {
                checkpoint::write(&entry.dir.join(".checkpoint"), &entry.checkpoint)?;
            }
            export_stats(&self.app, entry);
        }
        if !self.positions.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &self.positions {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
            commit_offsets(consumer, &tpl)?;
            self.purge.after_commit(&self.positions, &self.app);
        }
        if self.last_lag.elapsed() >= LAG_INTERVAL {
            self.last_lag = Instant::now();
            for ((topic, partition), offset) in &self.positions {
                if let Ok((_, high)) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(1)) {
                    gauge!("weir_consumer_lag", "topology" => self.app.clone(), "topic" => topic.clone(), "partition" => partition.to_string())
                        .set((high - offset).max(0) as f64);
                }
            }
        }
        histogram!("weir_commit_latency_seconds", "topology" => self.app.clone())
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Drop the tasks reading the given partitions (after a commit).
    fn close_tasks(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            self.positions.remove(&(topic.clone(), *partition));
            if let Some((sub, _)) = self.topo.source_for(topic) {
                if let Some(entry) = self.tasks.remove(&(sub, *partition)) {
                    tracing::info!(task = %entry.id, "task closed");
                }
            }
        }
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
    if entry.task.stream_time != i64::MIN {
        gauge!("weir_task_stream_time_seconds", &labels).set(entry.task.stream_time as f64 / 1000.0);
    }
    entry.exported = s.clone();
}

/// Where a task keeps its state.
pub fn task_dir(state_dir: &Path, app: &str, sub: usize, partition: i32) -> PathBuf {
    state_dir.join(app).join(format!("{sub}_{partition}"))
}
