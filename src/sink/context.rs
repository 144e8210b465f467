//! The sink consumer's context: positions come from Postgres, never from
//! Kafka. On every assignment the rebalance callback reads the stored
//! offsets and assigns the partitions at exactly those positions (the
//! beginning when none is stored), then tells the task loop what changed.
//! The callback runs inside `poll` on the task's thread, which is why it
//! may read offsets synchronously.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::error::WriteError;
use super::writer::Writer;
use crate::support::backoff::sleep_unless;
use crate::support::lock::lock;

/// What the rebalance callback tells the loop.
#[derive(Debug)]
pub(super) enum Event {
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
    pub(super) sink: String,
    pub(super) topics: Vec<String>,
    pub(super) writer: Arc<Mutex<Writer>>,
    pub(super) handle: Handle,
    pub(super) shutdown: Arc<AtomicBool>,
    pub(super) events: Mutex<Vec<Event>>,
    /// Postgres refused the connection while reading offsets: the loop
    /// stops with it (the callback cannot return it).
    pub(super) refused: Mutex<Option<WriteError>>,
}

impl SinkContext {
    /// Stored offsets, retried until read or shutdown; `None` at shutdown
    /// or when Postgres refuses the connection (kept for [`Self::take_refused`]).
    pub(super) fn stored_offsets(&self) -> Option<HashMap<(String, i32), i64>> {
        let mut backoff = super::retry_backoff();
        loop {
            let result = {
                let mut w = lock(&self.writer);
                self.handle.block_on(w.read_offsets(&self.topics))
            };
            let e = match result {
                Ok(o) => {
                    crate::health::global().set_postgres(true);
                    return Some(o);
                }
                Err(e) => e,
            };
            crate::health::global().set_postgres(false);
            if let WriteError::Refused(_) = e {
                // A password changed or a role dropped while running:
                // retrying cannot help.
                *lock(&self.refused) = Some(e);
                return None;
            }
            crate::health::global().beat();
            metrics::counter!("weir_sink_retries_total", "sink" => self.sink.clone()).increment(1);
            if let WriteError::Fatal(_) = e {
                lock(&self.writer).reset();
            }
            let delay = backoff.next_delay()?;
            tracing::warn!(sink = %self.sink, error = %e, retry_in = ?delay, "cannot read stored offsets; retrying");
            if sleep_unless(&self.shutdown, delay) {
                return None;
            }
        }
    }

    fn push(&self, e: Event) {
        lock(&self.events).push(e);
    }

    pub(super) fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *lock(&self.events))
    }

    /// Why Postgres refused the connection, if it did while reading offsets.
    pub(super) fn take_refused(&self) -> Option<WriteError> {
        lock(&self.refused).take()
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
