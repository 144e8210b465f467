//! The sink's consumer loop: polls the sink's topics, collects batches
//! by size and linger, and writes each batch through the [`Writer`] with
//! retries; dead letters go through [`DeadLetters`].
//!
//! Positions come from Postgres, never from Kafka (see [`super::context`]).
//! Kafka offsets are committed asynchronously after each Postgres commit,
//! only so that consumer-lag tools see the sink's progress.
//!
//! Everything here runs on one dedicated thread; Postgres calls are driven
//! with `Handle::block_on`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use crate::kafka::ClientConfigExt;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::batch::{Batch, Rejected, SourceRecord};
use super::config::{Mode, SinkConfig};
use super::context::{Event, SinkContext};
use super::dead_letter::DeadLetters;
use super::error::WriteError;
use super::mapping::RecordMapping;
use super::row::{dedup_last, Value};
use super::writer::{OffsetUpdate, TableRows, Writer};
use super::SinkError;
use crate::support::backoff::{sleep_unless, Backoff};
use crate::support::lock::lock;

/// A table's rows of a batch: (record index, row).
type Rows<'b> = Vec<(usize, &'b [Value])>;

/// How a batch write ended, when not with an error.
enum Outcome {
    Committed,
    /// Another instance had moved a partition: the batch was dropped and
    /// the partitions re-seeked to the offsets in Postgres.
    Resynced,
}

/// The sink's consumer loop.
pub(crate) struct SinkTask {
    cfg: SinkConfig,
    consumer: BaseConsumer<SinkContext>,
    dead_letters: DeadLetters,
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

impl SinkTask {
    pub(crate) fn new(
        cfg: SinkConfig,
        bootstrap: &str,
        writer: Writer,
        handle: Handle,
        shutdown: Arc<AtomicBool>,
    ) -> Result<SinkTask, SinkError> {
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
            refused: Mutex::new(None),
        };
        let mut cc = crate::kafka::client_config(bootstrap);
        cc.set("group.id", &cfg.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set_default("session.timeout.ms", "10000")
            // weir_sink_lag is read from the statistics.
            .set_default("statistics.interval.ms", "5000")
            .set_default("client.id", format!("weir-sink-{}", cfg.name));
        for (k, v) in &cfg.consumer {
            cc.set(k, v);
        }
        let consumer: BaseConsumer<SinkContext> = cc.create_with_context(ctx)?;
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;

        let dead_letters = DeadLetters::new(
            bootstrap,
            &cfg.name,
            &cfg.dead_letter,
            table_names.clone(),
            handle.clone(),
            shutdown.clone(),
        )?;
        let n = cfg.tables.len();
        // Every series from the start (at 0), so dashboards and alerts see
        // "no retries yet" rather than no data.
        metrics::counter!("weir_sink_retries_total", "sink" => cfg.name.clone()).increment(0);
        for (t, table) in table_names.iter().zip(&cfg.tables) {
            let labels = [("sink", cfg.name.clone()), ("table", t.clone())];
            metrics::counter!("weir_sink_rows_upserted_total", &labels).increment(0);
            metrics::counter!("weir_sink_dlq_records_total", &labels).increment(0);
            if table.delete_on_tombstone {
                metrics::counter!("weir_sink_rows_deleted_total", &labels).increment(0);
            }
        }
        Ok(SinkTask {
            cfg,
            consumer,
            dead_letters,
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
                .batch
                .time_to_flush(&self.cfg.tables)
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
            if let Some(e) = self.consumer.context().take_refused() {
                return Err(SinkError::Postgres(e));
            }
            if let Some(rec) = msg {
                self.add(rec);
            }
            if self.batch.due(&self.cfg.tables) {
                self.flush()?;
            }
            if self.batch.is_empty() && last_markers.elapsed() >= MARKER_INTERVAL {
                last_markers = Instant::now();
                self.step_over_markers()?;
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
    /// retried next time, unless Postgres refuses the connection.
    fn step_over_markers(&mut self) -> Result<(), SinkError> {
        let Ok(positions) = self.consumer.position() else {
            return Ok(());
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
            return Ok(());
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
            Err(e @ WriteError::Refused(_)) => return Err(SinkError::Postgres(e)),
            Err(e) => {
                tracing::debug!(sink = %self.cfg.name, error = %e, "storing the position past commit markers failed")
            }
        }
        Ok(())
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
        let old = self.batch.take();
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
        let tables = self.by_topic.get(&rec.topic).map(Vec::as_slice).unwrap_or(&[]);
        self.batch.add(rec, tables, &self.mappings);
    }

    /// Write the pending batch: dead letters, then rows and offsets in one
    /// transaction, retrying until it is written, re-seeking if another
    /// instance owns a partition, stopping only on a fatal error.
    fn flush(&mut self) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let batch = self.batch.take();
        if !batch.rejected.is_empty() {
            self.dead_letters.send(&batch.records, &batch.rejected)?;
        }
        let (mut rows, deletes) = self.rows_to_write(&batch);
        let offsets = self.offset_updates(&batch);
        match self.write_until_committed(&batch.records, &mut rows, &deletes, &offsets)? {
            Outcome::Committed => {
                self.committed(&offsets);
                self.record_written(&batch, &rows, &deletes, started);
            }
            Outcome::Resynced => {}
        }
        Ok(())
    }

    /// Per table, the rows to write and the rows to delete (with their
    /// record indexes): for `upsert` the last record per key, since one
    /// statement must not update a row twice (SQLSTATE 21000) and the last
    /// update must win, a tombstone too (a row written then deleted in one
    /// batch is deleted; deleted then written, written).
    fn rows_to_write<'b>(&self, batch: &'b Batch) -> (Vec<Rows<'b>>, Vec<Rows<'b>>) {
        batch
            .rows
            .iter()
            .enumerate()
            .map(|(t, table_rows)| {
                let items: Rows<'b> = table_rows.iter().map(|(i, r)| (*i, r.as_slice())).collect();
                let last = match self.cfg.tables[t].mode {
                    Mode::Upsert => dedup_last(items, |(_, r)| self.mappings[t].key_of(r)),
                    Mode::Insert => items,
                };
                last.into_iter().partition(|(i, _)| !batch.deletes[t].contains(i))
            })
            .unzip()
    }

    /// Each partition's new position after the batch, with the position
    /// this instance last saw in Postgres (the compare of compare-and-set).
    fn offset_updates(&self, batch: &Batch) -> Vec<OffsetUpdate> {
        batch
            .last
            .iter()
            .map(|((topic, p), last)| OffsetUpdate {
                topic: topic.clone(),
                partition: *p,
                expected: self.parts.get(&(topic.clone(), *p)).and_then(|s| s.stored),
                next: last + 1,
            })
            .collect()
    }

    /// Write rows and offsets in one transaction until it commits:
    /// retrying while Postgres is unreachable (after a shutdown request
    /// for at most [`super::SHUTDOWN_GRACE`]), dead-lettering the rows
    /// Postgres rejects, re-seeking when another instance moved a
    /// partition.
    fn write_until_committed(
        &mut self,
        records: &[SourceRecord],
        rows: &mut [Rows<'_>],
        deletes: &[Rows<'_>],
        offsets: &[OffsetUpdate],
    ) -> Result<Outcome, SinkError> {
        let sink = self.sink();
        let mut backoff = super::retry_backoff();
        'write: loop {
            match self.write(rows, deletes, offsets) {
                Ok(()) => {
                    crate::health::global().set_postgres(true);
                    return Ok(Outcome::Committed);
                }
                Err(WriteError::Retryable { context, cause }) => {
                    self.pause_before_retry(&mut backoff, &format!("{context}: {cause}"))?
                }
                Err(WriteError::OwnershipLost { partitions }) => {
                    tracing::warn!(sink = %sink, ?partitions, "another instance moved these partitions' offsets; re-seeking to Postgres");
                    self.resync()?;
                    return Ok(Outcome::Resynced);
                }
                Err(WriteError::Data {
                    table,
                    table_name,
                    message,
                }) => {
                    let at = table_name.map_or_else(|| "at COMMIT".into(), |t| format!("table {t}"));
                    tracing::warn!(sink = %sink, at = %at, error = %super::error::loggable(&message), "Postgres rejected the batch; finding the rejected rows");
                    // At COMMIT (a deferred constraint) the rows of any
                    // table may be the cause.
                    let suspects: Vec<usize> = match table {
                        Some(t) => vec![t],
                        None => (0..rows.len()).filter(|t| !rows[*t].is_empty()).collect(),
                    };
                    let mut found = false;
                    for t in suspects {
                        match self.find_bad_rows(t, &rows[t]) {
                            Ok(bad) if bad.is_empty() => {}
                            Ok(bad) => {
                                found = true;
                                self.dead_letter_bad_rows(records, t, &mut rows[t], &bad)?;
                            }
                            Err(WriteError::Retryable { context, cause }) => {
                                self.pause_before_retry(&mut backoff, &format!("{context}: {cause}"))?;
                                continue 'write;
                            }
                            Err(e) => return Err(SinkError::Postgres(e)),
                        }
                    }
                    if !found {
                        // Writing it again would fail again, forever.
                        return Err(SinkError::Postgres(WriteError::Fatal(format!(
                            "{at}: Postgres rejects the batch ({message}) but accepts its rows written without the rest of the batch"
                        ))));
                    }
                }
                Err(e @ (WriteError::Fatal(_) | WriteError::Refused(_))) => return Err(SinkError::Postgres(e)),
            }
        }
    }

    /// One attempt at writing the batch.
    fn write(&self, rows: &[Rows<'_>], deletes: &[Rows<'_>], offsets: &[OffsetUpdate]) -> Result<(), WriteError> {
        let tables: Vec<TableRows<'_>> = rows
            .iter()
            .zip(deletes)
            .enumerate()
            .map(|(t, (r, d))| TableRows {
                table: t,
                rows: r.iter().map(|(_, row)| *row).collect(),
                deletes: d.iter().map(|(_, row)| *row).collect(),
            })
            .collect();
        let mut w = lock(&self.writer);
        self.handle.block_on(w.write_batch(&tables, offsets))
    }

    /// Which of a table's rows Postgres rejects (their indexes in `rows`).
    fn find_bad_rows(&self, table: usize, rows: &Rows<'_>) -> Result<Vec<(usize, String)>, WriteError> {
        let table_rows: Vec<&[Value]> = rows.iter().map(|(_, r)| *r).collect();
        let mut w = lock(&self.writer);
        self.handle.block_on(w.find_bad_rows(table, &table_rows))
    }

    /// Send the rows Postgres rejects to the dead-letter topic and drop
    /// them from the batch.
    fn dead_letter_bad_rows(
        &self,
        records: &[SourceRecord],
        table: usize,
        rows: &mut Rows<'_>,
        bad: &[(usize, String)],
    ) -> Result<(), SinkError> {
        let rejected: Vec<Rejected> = bad
            .iter()
            .map(|(i, reason)| Rejected {
                record: rows[*i].0,
                table,
                reason: format!("rejected by Postgres: {reason}"),
            })
            .collect();
        self.dead_letters.send(records, &rejected)?;
        let bad_idx: HashSet<usize> = bad.iter().map(|(i, _)| *i).collect();
        let mut i = 0;
        rows.retain(|_| {
            i += 1;
            !bad_idx.contains(&(i - 1))
        });
        Ok(())
    }

    /// Count a retry, log it and wait: interrupted by a shutdown request,
    /// after which retries go on for at most the shutdown grace.
    fn pause_before_retry(&self, backoff: &mut Backoff, error: &str) -> Result<(), SinkError> {
        let sink = self.sink();
        crate::health::global().set_postgres(false);
        crate::health::global().beat();
        metrics::counter!("weir_sink_retries_total", "sink" => sink.clone()).increment(1);
        let stopping = self.shutdown.load(Ordering::SeqCst);
        if stopping {
            backoff.deadline_within(super::SHUTDOWN_GRACE);
        }
        let Some(delay) = backoff.next_delay() else {
            return Err(SinkError::Shutdown(format!(
                "Postgres unreachable at shutdown ({error}); the last batch was not written and will be re-read on restart"
            )));
        };
        tracing::warn!(sink = %sink, attempt = backoff.attempt(), retry_in = ?delay, "{error}; retrying");
        if stopping {
            std::thread::sleep(delay);
        } else {
            sleep_unless(&self.shutdown, delay);
        }
        Ok(())
    }

    /// After the commit: this instance's view of the stored offsets moves
    /// on, and Kafka learns the position (for lag tools only).
    fn committed(&mut self, offsets: &[OffsetUpdate]) {
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            if let Some(st) = self.parts.get_mut(&(o.topic.clone(), o.partition)) {
                st.stored = Some(o.next);
            }
            if let Err(e) = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next)) {
                tracing::debug!(error = %e, "cannot build the Kafka commit");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(sink = %self.cfg.name, error = %e, "Kafka offset commit failed");
        }
    }

    fn record_written(&self, batch: &Batch, rows: &[Rows<'_>], deletes: &[Rows<'_>], started: Instant) {
        let sink = self.sink();
        for (t, r) in rows.iter().enumerate() {
            if !r.is_empty() {
                metrics::counter!("weir_sink_rows_upserted_total", "sink" => sink.clone(), "table" => self.table_names[t].clone())
                    .increment(r.len() as u64);
            }
        }
        for (t, d) in deletes.iter().enumerate() {
            if !d.is_empty() {
                metrics::counter!("weir_sink_rows_deleted_total", "sink" => sink.clone(), "table" => self.table_names[t].clone())
                    .increment(d.len() as u64);
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
    }

    /// Seek every assigned partition to its offset in Postgres (after
    /// another instance wrote one of them), dropping the pending batch.
    fn resync(&mut self) -> Result<(), SinkError> {
        self.batch = Batch::new(self.cfg.tables.len());
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
