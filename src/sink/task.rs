//! The Kafka side of the sink: a consumer in the sink's group, batching by
//! size and linger, the dead-letter producer, and the loop that writes each
//! batch through the [`Writer`] with retries.
//!
//! Positions come from Postgres, never from Kafka: on every assignment the
//! rebalance callback reads the stored offsets and assigns the partitions
//! at exactly those positions (the beginning when none is stored). Kafka
//! offsets are committed asynchronously after each Postgres commit, only so
//! that consumer-lag tools see the sink's progress.
//!
//! Everything here runs on one dedicated thread; Postgres calls are driven
//! with `Handle::block_on`, which is also why the rebalance callback (it
//! runs inside `poll` on this thread) may read offsets synchronously.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::config::{Mode, SinkConfig};
use super::mapping::{dedup_last, RecordMapping, Value};
use super::postgres::{OffsetUpdate, TableRows, WriteError, Writer};
use super::SinkError;

/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long a shutdown waits for an unreachable Postgres before giving up
/// on the last batch (nothing is lost: its offsets were not stored).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Exponential backoff, capped.
struct Backoff {
    next: Duration,
    attempt: u32,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: FIRST_BACKOFF,
            attempt: 0,
        }
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        self.attempt += 1;
        d
    }
}

/// Sleep `d`, waking early if `stop` becomes true; returns whether it did.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    stop.load(Ordering::SeqCst)
}

/// What the rebalance callback tells the loop.
#[derive(Debug)]
enum Event {
    /// Assigned at these stored offsets (`None`: from the beginning). When
    /// `trusted` is false the offsets could not be read (shutting down) and
    /// the partitions must not be processed.
    Assigned {
        parts: Vec<((String, i32), Option<i64>)>,
        trusted: bool,
    },
    Revoked(Vec<(String, i32)>),
}

pub(crate) struct SinkContext {
    sink: String,
    topics: Vec<String>,
    writer: Arc<Mutex<Writer>>,
    handle: Handle,
    shutdown: Arc<AtomicBool>,
    events: Mutex<Vec<Event>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here (each
    // holder only runs one Postgres call), so recover from poisoning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SinkContext {
    /// Stored offsets, retried until read or shutdown.
    fn stored_offsets(&self) -> Option<HashMap<(String, i32), i64>> {
        let mut backoff = Backoff::new();
        loop {
            let result = {
                let mut w = lock(&self.writer);
                self.handle.block_on(w.read_offsets(&self.topics))
            };
            match result {
                Ok(o) => {
                    crate::health::global().set_postgres(true);
                    return Some(o);
                }
                Err(e) => {
                    let delay = backoff.step();
                    crate::health::global().set_postgres(false);
                    crate::health::global().beat();
                    metrics::counter!("weir_sink_retries_total", "sink" => self.sink.clone()).increment(1);
                    tracing::warn!(sink = %self.sink, error = %e, retry_in = ?delay, "cannot read stored offsets; retrying");
                    if let WriteError::Fatal(_) = e {
                        lock(&self.writer).reset();
                    }
                    if sleep_unless(&self.shutdown, delay) {
                        return None;
                    }
                }
            }
        }
    }

    fn push(&self, e: Event) {
        lock(&self.events).push(e);
    }

    fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *lock(&self.events))
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    metrics::gauge!("weir_sink_lag", "sink" => self.sink.clone(), "topic" => topic.clone(), "partition" => p.to_string())
                        .set(part.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = self.stored_offsets();
                let trusted = stored.is_some();
                let stored = stored.unwrap_or_default();
                let mut assigned = Vec::new();
                for (topic, p) in &parts {
                    let at = stored.get(&(topic.clone(), *p)).copied();
                    let offset = at.map(Offset::Offset).unwrap_or(Offset::Beginning);
                    if let Err(e) = tpl.set_partition_offset(topic, *p, offset) {
                        tracing::error!(sink = %self.sink, %topic, partition = p, error = %e, "cannot set the start offset");
                    }
                    assigned.push(((topic.clone(), *p), at));
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match result {
                    Ok(()) => {
                        tracing::info!(sink = %self.sink, partitions = ?assigned, "assigned at the offsets stored in Postgres")
                    }
                    Err(e) => tracing::error!(sink = %self.sink, error = %e, "assign failed"),
                }
                self.push(Event::Assigned {
                    parts: assigned,
                    trusted,
                });
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(sink = %self.sink, partitions = ?parts, "partitions revoked");
                self.push(Event::Revoked(parts));
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(sink = %self.sink, error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(sink = %self.sink, error = ?other, "rebalance error; dropping the assignment");
                self.push(Event::Revoked(parts));
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(sink = %self.sink, error = %e, "unassign failed");
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Only lag visibility depends on it; Postgres holds the truth.
            tracing::debug!(sink = %self.sink, error = %e, "Kafka offset commit failed");
        }
    }
}

/// A consumed record kept until its batch is written.
struct SourceRecord {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// A record that goes to the dead-letter topic.
struct Rejected {
    record: usize,
    table: usize,
    reason: String,
}

/// Records of the batch being collected.
struct Batch {
    records: Vec<SourceRecord>,
    /// Per table: (record index, mapped row).
    rows: Vec<Vec<(usize, Vec<Value>)>>,
    rejected: Vec<Rejected>,
    /// Per table: records counted towards its `batch_size`, and when its
    /// first record arrived (for `linger`).
    counts: Vec<usize>,
    first: Vec<Option<Instant>>,
    /// Last offset read per partition.
    last: BTreeMap<(String, i32), i64>,
}

impl Batch {
    fn new(tables: usize) -> Self {
        Self {
            records: Vec::new(),
            rows: (0..tables).map(|_| Vec::new()).collect(),
            rejected: Vec::new(),
            counts: vec![0; tables],
            first: vec![None; tables],
            last: BTreeMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn clear(&mut self) {
        *self = Batch::new(self.rows.len());
    }
}

/// The sink's consumer loop.
pub(crate) struct Task {
    cfg: SinkConfig,
    consumer: BaseConsumer<SinkContext>,
    producer: FutureProducer,
    writer: Arc<Mutex<Writer>>,
    handle: Handle,
    shutdown: Arc<AtomicBool>,
    /// Table indexes per topic.
    by_topic: HashMap<String, Vec<usize>>,
    /// Per table, as checked against the database at start.
    mappings: Vec<RecordMapping>,
    table_names: Vec<String>,
    /// Assigned partitions: the offset stored in Postgres (as last read or
    /// written by this instance) and the next offset to accept.
    parts: HashMap<(String, i32), PartState>,
    batch: Batch,
}

/// How often an idle sink stores its position past commit markers.
const MARKER_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct PartState {
    stored: Option<i64>,
    next: i64,
}

impl Task {
    pub(crate) fn new(
        cfg: SinkConfig,
        bootstrap: &str,
        writer: Writer,
        handle: Handle,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Task, SinkError> {
        let mappings: Vec<RecordMapping> = writer.tables().iter().map(|t| t.mapping.clone()).collect();
        let table_names: Vec<String> = writer.tables().iter().map(|t| t.config.table.to_string()).collect();
        let writer = Arc::new(Mutex::new(writer));
        let mut by_topic: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in cfg.tables.iter().enumerate() {
            by_topic.entry(t.topic.clone()).or_default().push(i);
        }
        let mut topics: Vec<String> = by_topic.keys().cloned().collect();
        topics.sort();
        let ctx = SinkContext {
            sink: cfg.name.clone(),
            topics: topics.clone(),
            writer: writer.clone(),
            handle: handle.clone(),
            shutdown: shutdown.clone(),
            events: Mutex::new(Vec::new()),
        };
        let mut cc = crate::kafka::client_config(bootstrap);
        cc.set("group.id", &cfg.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("statistics.interval.ms", "5000")
            .set("client.id", format!("weir-sink-{}", cfg.name));
        for (k, v) in &cfg.consumer {
            cc.set(k, v);
        }
        let consumer: BaseConsumer<SinkContext> = cc.create_with_context(ctx)?;
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;

        let producer: FutureProducer = crate::kafka::client_config(bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .set("client.id", format!("weir-sink-{}-dlq", cfg.name))
            .create()?;
        let n = cfg.tables.len();
        // Every series from the start (at 0), so dashboards and alerts see
        // "no retries yet" rather than no data.
        metrics::counter!("weir_sink_retries_total", "sink" => cfg.name.clone()).increment(0);
        for t in &table_names {
            let labels = [("sink", cfg.name.clone()), ("table", t.clone())];
            metrics::counter!("weir_sink_rows_upserted_total", &labels).increment(0);
            metrics::counter!("weir_sink_dlq_records_total", &labels).increment(0);
        }
        Ok(Task {
            cfg,
            consumer,
            producer,
            writer,
            handle,
            shutdown,
            by_topic,
            mappings,
            table_names,
            parts: HashMap::new(),
            batch: Batch::new(n),
        })
    }

    fn sink(&self) -> String {
        self.cfg.name.clone()
    }

    /// Poll, batch and write until shutdown; then write what is pending.
    pub(crate) fn run(mut self) -> Result<(), SinkError> {
        tracing::info!(sink = %self.cfg.name, group = %self.cfg.group, "sink started");
        let mut last_error: Option<String> = None;
        let mut last_markers = Instant::now();
        loop {
            crate::health::global().beat();
            if self.shutdown.load(Ordering::SeqCst) {
                crate::health::global().stopped();
                tracing::info!(sink = %self.cfg.name, "shutting down: writing the current batch");
                self.flush()?;
                break;
            }
            let timeout = self
                .time_to_flush()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            let polled = self.consumer.poll(timeout);
            let msg = match polled {
                Some(Ok(m)) => Some(SourceRecord {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                }),
                Some(Err(e)) => {
                    let s = e.to_string();
                    if last_error.as_deref() != Some(s.as_str()) {
                        tracing::warn!(sink = %self.cfg.name, error = %s, "consumer error");
                        last_error = Some(s);
                    }
                    None
                }
                None => None,
            };
            for ev in self.consumer.context().take_events() {
                self.on_event(ev);
            }
            if let Some(rec) = msg {
                self.add(rec);
            }
            if self.due() {
                self.flush()?;
            }
            if self.batch.is_empty() && last_markers.elapsed() >= MARKER_INTERVAL {
                last_markers = Instant::now();
                self.step_over_markers();
            }
        }
        self.consumer.unsubscribe();
        tracing::info!(sink = %self.cfg.name, "sink stopped");
        Ok(())
    }

    /// With nothing pending, store the consumer's position where it passed
    /// the stored offset without a record: the commit markers of a
    /// transactional topic (weir run's exactly-once output) take offsets but
    /// are never handed out, so the offset after the last record is one
    /// short of the end and the sink would never look caught up (lag 1).
    /// Offsets only, with the same ownership check as a batch; a failure is
    /// retried next time.
    fn step_over_markers(&mut self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let offsets: Vec<OffsetUpdate> = positions
            .elements()
            .iter()
            .filter_map(|e| {
                let Offset::Offset(at) = e.offset() else { return None };
                let st = self.parts.get(&(e.topic().to_string(), e.partition()))?;
                (st.stored.is_some() && at > st.next).then(|| OffsetUpdate {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    expected: st.stored,
                    next: at,
                })
            })
            .collect();
        if offsets.is_empty() {
            return;
        }
        let result = {
            let mut w = lock(&self.writer);
            self.handle.block_on(w.write_batch(&[], &offsets))
        };
        match result {
            Ok(()) => {
                for o in &offsets {
                    if let Some(st) = self.parts.get_mut(&(o.topic.clone(), o.partition)) {
                        st.stored = Some(o.next);
                        st.next = o.next;
                    }
                }
            }
            Err(WriteError::OwnershipLost { .. }) => {
                if let Err(e) = self.resync() {
                    tracing::warn!(sink = %self.cfg.name, error = %e, "re-seeking to Postgres failed");
                }
            }
            Err(e) => {
                tracing::debug!(sink = %self.cfg.name, error = %e, "storing the position past commit markers failed")
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Assigned { parts, trusted } => {
                for (tp, stored) in parts {
                    if trusted {
                        self.parts.insert(
                            tp,
                            PartState {
                                stored,
                                next: stored.unwrap_or(0),
                            },
                        );
                    } else {
                        self.parts.remove(&tp);
                    }
                }
            }
            Event::Revoked(parts) => {
                let revoked: HashSet<(String, i32)> = parts.into_iter().collect();
                for tp in &revoked {
                    self.parts.remove(tp);
                    metrics::gauge!("weir_sink_lag", "sink" => self.sink(), "topic" => tp.0.clone(), "partition" => tp.1.to_string())
                        .set(0.0);
                }
                // The new owner re-reads these records from the offsets in
                // Postgres; writing them here could only lose the race.
                if self.batch.last.keys().any(|tp| revoked.contains(tp)) {
                    self.drop_partitions(&revoked);
                }
            }
        }
    }

    /// Remove the records of some partitions from the pending batch.
    fn drop_partitions(&mut self, drop: &HashSet<(String, i32)>) {
        let old = std::mem::replace(&mut self.batch, Batch::new(self.cfg.tables.len()));
        let dropped = old
            .records
            .iter()
            .filter(|r| drop.contains(&(r.topic.clone(), r.partition)))
            .count();
        tracing::info!(sink = %self.cfg.name, records = dropped, "dropping pending records of revoked partitions");
        let mut keep = vec![false; old.records.len()];
        for (i, r) in old.records.iter().enumerate() {
            keep[i] = !drop.contains(&(r.topic.clone(), r.partition));
        }
        // Re-add kept records in order (mapping again is cheap and keeps
        // the batch's invariants in one place).
        for (r, k) in old.records.into_iter().zip(keep) {
            if k {
                self.add_unchecked(r);
            }
        }
    }

    /// Add a consumed record if it is at or after the partition's position.
    fn add(&mut self, rec: SourceRecord) {
        let tp = (rec.topic.clone(), rec.partition);
        let Some(st) = self.parts.get_mut(&tp) else {
            tracing::debug!(topic = %rec.topic, partition = rec.partition, "record of an unassigned partition ignored");
            return;
        };
        if rec.offset < st.next {
            // Fetched before a seek; already in Postgres or re-read next.
            tracing::debug!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, "stale record ignored");
            return;
        }
        st.next = rec.offset + 1;
        metrics::counter!("weir_sink_records_consumed_total", "sink" => self.sink(), "topic" => rec.topic.clone())
            .increment(1);
        self.add_unchecked(rec);
    }

    fn add_unchecked(&mut self, rec: SourceRecord) {
        let idx = self.batch.records.len();
        let now = Instant::now();
        if let Some(tables) = self.by_topic.get(&rec.topic) {
            for &t in tables {
                match self.mappings[t].map_payload(rec.payload.as_deref()) {
                    Ok(row) => self.batch.rows[t].push((idx, row)),
                    Err(e) => self.batch.rejected.push(Rejected {
                        record: idx,
                        table: t,
                        reason: e.to_string(),
                    }),
                }
                self.batch.counts[t] += 1;
                self.batch.first[t].get_or_insert(now);
            }
        }
        let tp = (rec.topic.clone(), rec.partition);
        let last = self.batch.last.entry(tp).or_insert(rec.offset);
        *last = (*last).max(rec.offset);
        self.batch.records.push(rec);
    }

    fn time_to_flush(&self) -> Option<Duration> {
        self.cfg
            .tables
            .iter()
            .zip(&self.batch.first)
            .filter_map(|(t, first)| first.map(|f| t.linger.saturating_sub(f.elapsed())))
            .min()
    }

    fn due(&self) -> bool {
        if self.batch.is_empty() {
            return false;
        }
        self.cfg.tables.iter().enumerate().any(|(i, t)| {
            self.batch.counts[i] >= t.batch_size || self.batch.first[i].is_some_and(|f| f.elapsed() >= t.linger)
        })
    }

    /// Write the pending batch: dead letters, then rows and offsets in one
    /// transaction, retrying until it is written, re-seeking if another
    /// instance owns a partition, stopping only on a fatal error.
    fn flush(&mut self) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let sink = self.sink();
        let batch = std::mem::replace(&mut self.batch, Batch::new(self.cfg.tables.len()));

        let rejected: Vec<(usize, usize, String)> = batch
            .rejected
            .iter()
            .map(|r| (r.record, r.table, r.reason.clone()))
            .collect();
        if !rejected.is_empty() {
            self.dead_letter(&batch.records, &rejected)?;
        }

        // Last record per key wins inside a batch.
        let mut rows: Vec<Vec<(usize, &[Value])>> = Vec::with_capacity(batch.rows.len());
        for (t, table_rows) in batch.rows.iter().enumerate() {
            let mapping = &self.mappings[t];
            let items: Vec<(usize, &[Value])> = table_rows.iter().map(|(i, r)| (*i, r.as_slice())).collect();
            rows.push(match self.cfg.tables[t].mode {
                Mode::Upsert => dedup_last(items, |(_, r)| mapping.key_of(r)),
                Mode::Insert => items,
            });
        }
        let offsets: Vec<OffsetUpdate> = batch
            .last
            .iter()
            .map(|((topic, p), last)| OffsetUpdate {
                topic: topic.clone(),
                partition: *p,
                expected: self.parts.get(&(topic.clone(), *p)).and_then(|s| s.stored),
                next: last + 1,
            })
            .collect();

        let mut backoff = Backoff::new();
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let tables: Vec<TableRows<'_>> = rows
                .iter()
                .enumerate()
                .map(|(t, r)| TableRows {
                    table: t,
                    rows: r.iter().map(|(_, row)| *row).collect(),
                })
                .collect();
            let result = {
                let mut w = lock(&self.writer);
                self.handle.block_on(w.write_batch(&tables, &offsets))
            };
            match result {
                Ok(()) => {
                    crate::health::global().set_postgres(true);
                    break;
                }
                Err(WriteError::Retryable { context, cause }) => {
                    let delay = backoff.step();
                    crate::health::global().set_postgres(false);
                    crate::health::global().beat();
                    metrics::counter!("weir_sink_retries_total", "sink" => sink.clone()).increment(1);
                    tracing::warn!(sink = %sink, attempt = backoff.attempt, retry_in = ?delay, "{context}: {cause}; retrying");
                    if self.shutdown.load(Ordering::SeqCst) {
                        let deadline = *shutdown_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                        if Instant::now() >= deadline {
                            return Err(SinkError::Shutdown(format!(
                                "Postgres unreachable at shutdown ({context}: {cause}); the last batch was not written and will be re-read on restart"
                            )));
                        }
                        std::thread::sleep(delay);
                    } else {
                        sleep_unless(&self.shutdown, delay);
                    }
                }
                Err(WriteError::OwnershipLost { partitions }) => {
                    tracing::warn!(sink = %sink, ?partitions, "another instance moved these partitions' offsets; re-seeking to Postgres");
                    return self.resync();
                }
                Err(WriteError::Data {
                    table,
                    table_name,
                    message,
                }) => {
                    tracing::warn!(sink = %sink, table = %table_name, error = %message, "Postgres rejected the batch; finding the rejected rows");
                    let found = {
                        let table_rows: Vec<&[Value]> = rows[table].iter().map(|(_, r)| *r).collect();
                        let mut w = lock(&self.writer);
                        self.handle.block_on(w.find_bad_rows(table, &table_rows))
                    };
                    match found {
                        Ok(bad) if bad.is_empty() => {
                            return Err(SinkError::Postgres(WriteError::Fatal(format!(
                                "table {table_name} rejects the batch ({message}) but accepts each row alone"
                            ))))
                        }
                        Ok(bad) => {
                            let bad_idx: HashSet<usize> = bad.iter().map(|(i, _)| *i).collect();
                            let dl: Vec<(usize, usize, String)> = bad
                                .iter()
                                .map(|(i, reason)| {
                                    (rows[table][*i].0, table, format!("rejected by Postgres: {reason}"))
                                })
                                .collect();
                            self.dead_letter(&batch.records, &dl)?;
                            let kept: Vec<(usize, &[Value])> = rows[table]
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| !bad_idx.contains(i))
                                .map(|(_, r)| *r)
                                .collect();
                            rows[table] = kept;
                        }
                        Err(WriteError::Retryable { context, cause }) => {
                            let delay = backoff.step();
                            metrics::counter!("weir_sink_retries_total", "sink" => sink.clone()).increment(1);
                            tracing::warn!(sink = %sink, retry_in = ?delay, "{context}: {cause}; retrying");
                            sleep_unless(&self.shutdown, delay);
                        }
                        Err(e) => return Err(SinkError::Postgres(e)),
                    }
                }
                Err(e @ WriteError::Fatal(_)) => return Err(SinkError::Postgres(e)),
            }
        }

        // Committed: this instance's view of the stored offsets moves on.
        let mut tpl = TopicPartitionList::new();
        for o in &offsets {
            if let Some(st) = self.parts.get_mut(&(o.topic.clone(), o.partition)) {
                st.stored = Some(o.next);
            }
            if let Err(e) = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next)) {
                tracing::debug!(error = %e, "cannot build the Kafka commit");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(sink = %sink, error = %e, "Kafka offset commit failed");
        }
        for (t, r) in rows.iter().enumerate() {
            if !r.is_empty() {
                metrics::counter!("weir_sink_rows_upserted_total", "sink" => sink.clone(), "table" => self.table_names[t].clone())
                    .increment(r.len() as u64);
            }
        }
        metrics::histogram!("weir_sink_batch_duration_seconds", "sink" => sink.clone())
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            sink = %sink,
            records = batch.records.len(),
            rows = rows.iter().map(Vec::len).sum::<usize>(),
            took = ?started.elapsed(),
            "batch written"
        );
        Ok(())
    }

    /// Produce records to the dead-letter topic and wait until Kafka has
    /// them (retrying), so none is lost when the batch commits.
    fn dead_letter(&self, records: &[SourceRecord], items: &[(usize, usize, String)]) -> Result<(), SinkError> {
        let sink = self.sink();
        let mut backoff = Backoff::new();
        let mut todo: Vec<&(usize, usize, String)> = items.iter().collect();
        while !todo.is_empty() {
            let futures: Vec<_> = todo
                .iter()
                .map(|(ri, t, reason)| {
                    let r = &records[*ri];
                    let table = self.table_names[*t].as_str();
                    let partition = r.partition.to_string();
                    let offset = r.offset.to_string();
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "weir.error",
                            value: Some(reason.as_str()),
                        })
                        .insert(Header {
                            key: "weir.topic",
                            value: Some(r.topic.as_str()),
                        })
                        .insert(Header {
                            key: "weir.partition",
                            value: Some(partition.as_str()),
                        })
                        .insert(Header {
                            key: "weir.offset",
                            value: Some(offset.as_str()),
                        })
                        .insert(Header {
                            key: "weir.sink",
                            value: Some(sink.as_str()),
                        })
                        .insert(Header {
                            key: "weir.table",
                            value: Some(table),
                        });
                    let mut rec: FutureRecord<'_, [u8], [u8]> =
                        FutureRecord::to(&self.cfg.dead_letter).headers(headers);
                    if let Some(k) = &r.key {
                        rec = rec.key(k.as_slice());
                    }
                    if let Some(p) = &r.payload {
                        rec = rec.payload(p.as_slice());
                    }
                    self.producer.send(rec, Duration::from_secs(10))
                })
                .collect();
            let results = self.handle.block_on(futures::future::join_all(futures));
            let mut failed = Vec::new();
            for (item, res) in todo.iter().zip(results) {
                match res {
                    Ok(_) => {
                        tracing::warn!(sink = %sink, topic = %records[item.0].topic, partition = records[item.0].partition,
                            offset = records[item.0].offset, reason = %item.2, "record sent to the dead-letter topic");
                        let table = self.table_names[item.1].clone();
                        metrics::counter!("weir_sink_dlq_records_total", "sink" => sink.clone(), "table" => table)
                            .increment(1);
                    }
                    Err((e, _)) => {
                        tracing::warn!(sink = %sink, error = %e, "dead-letter produce failed");
                        failed.push(*item);
                    }
                }
            }
            todo = failed;
            if !todo.is_empty() {
                let delay = backoff.step();
                metrics::counter!("weir_sink_retries_total", "sink" => sink.clone()).increment(1);
                if self.shutdown.load(Ordering::SeqCst) && backoff.attempt > 10 {
                    return Err(SinkError::Shutdown("dead-letter topic unreachable at shutdown".into()));
                }
                std::thread::sleep(delay);
            }
        }
        Ok(())
    }

    /// Seek every assigned partition to its offset in Postgres (after
    /// another instance wrote one of them), dropping the pending batch.
    fn resync(&mut self) -> Result<(), SinkError> {
        self.batch.clear();
        let Some(stored) = self.consumer.context().stored_offsets() else {
            return Ok(()); // shutting down: nothing more is written
        };
        for (tp, st) in self.parts.iter_mut() {
            let at = stored.get(tp).copied();
            let offset = at.map(Offset::Offset).unwrap_or(Offset::Beginning);
            let mut attempts = 0;
            loop {
                match self.consumer.seek(&tp.0, tp.1, offset, Duration::from_secs(5)) {
                    Ok(()) => break,
                    Err(e) if attempts < 5 => {
                        attempts += 1;
                        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "seek failed; retrying");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(SinkError::Kafka(e)),
                }
            }
            *st = PartState {
                stored: at,
                next: at.unwrap_or(0),
            };
        }
        tracing::info!(sink = %self.cfg.name, "re-seeked to the offsets stored in Postgres");
        Ok(())
    }
}
