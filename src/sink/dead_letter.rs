//! The sink's dead-letter topic: records that cannot be mapped or that
//! Postgres rejects go there unchanged (key and value), with the reason
//! and where they came from in headers. A batch commits only after Kafka
//! has every one of its dead letters, so none is lost; one Kafka refuses
//! with its value goes without it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::runtime::Handle;

use super::batch::{Rejected, SourceRecord};
use super::SinkError;

use crate::support::dead_letter as header;

/// Produces a sink's dead letters.
pub(super) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    sink: String,
    /// Table names by index, for the `weir.table` header.
    table_names: Vec<String>,
    handle: Handle,
    shutdown: Arc<AtomicBool>,
}

impl DeadLetters {
    pub(super) fn new(
        bootstrap: &str,
        sink: &str,
        topic: &str,
        table_names: Vec<String>,
        handle: Handle,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        use crate::kafka::ClientConfigExt;
        let producer: FutureProducer = crate::kafka::client_config(bootstrap)
            .set("enable.idempotence", "true")
            .set_default("linger.ms", "5")
            .set_default("message.timeout.ms", "30000")
            .set_default("client.id", format!("weir-sink-{sink}-dlq"))
            .create()?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            sink: sink.to_string(),
            table_names,
            handle,
            shutdown,
        })
    }

    fn headers(&self, r: &SourceRecord, table: usize, reason: &str) -> OwnedHeaders {
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        [
            (header::ERROR, reason),
            (header::TOPIC, r.topic.as_str()),
            (header::PARTITION, partition.as_str()),
            (header::OFFSET, offset.as_str()),
            (header::SINK, self.sink.as_str()),
            (header::TABLE, self.table_names[table].as_str()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
    }

    /// Produce `items` (records of `records`) and wait until Kafka has
    /// them, retrying what fails; after a shutdown request, for at most
    /// the shutdown grace. A dead letter Kafka refuses as it is (too large,
    /// say: retried, it would hold the sink forever) is sent again at once
    /// without its value, as the engine does with its own; one refused even
    /// so stops the sink.
    pub(super) fn send(&self, records: &[SourceRecord], items: &[Rejected]) -> Result<(), SinkError> {
        let sink = &self.sink;
        let mut backoff = super::retry_backoff();
        // Each with the `weir.value_dropped` header once its value is dropped.
        let mut todo: Vec<(&Rejected, Option<(&str, String)>)> = items.iter().map(|item| (item, None)).collect();
        while !todo.is_empty() {
            let futures: Vec<_> = todo
                .iter()
                .map(|(item, dropped)| {
                    let r = &records[item.record];
                    let mut headers = self.headers(r, item.table, &item.reason);
                    if let Some((key, value)) = dropped {
                        headers = headers.insert(Header {
                            key,
                            value: Some(value),
                        });
                    }
                    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
                    if let Some(k) = &r.key {
                        rec = rec.key(k.as_slice());
                    }
                    if let (Some(p), None) = (&r.payload, dropped) {
                        rec = rec.payload(p.as_slice());
                    }
                    self.producer.send(rec, Duration::from_secs(10))
                })
                .collect();
            let results = self.handle.block_on(futures::future::join_all(futures));
            let mut failed = Vec::new();
            let mut refused = Vec::new();
            for ((item, dropped), res) in todo.into_iter().zip(results) {
                let r = &records[item.record];
                match res {
                    Ok(_) => {
                        tracing::warn!(sink = %sink, topic = %r.topic, partition = r.partition,
                            offset = r.offset, reason = %super::error::loggable(&item.reason), value_dropped = dropped.is_some(),
                            "record sent to the dead-letter topic");
                        let table = self.table_names[item.table].clone();
                        metrics::counter!("weir_sink_dlq_records_total", "sink" => sink.clone(), "table" => table)
                            .increment(1);
                    }
                    Err((e, _)) if header::is_permanent(&e) && dropped.is_none() => {
                        let size = r.payload.as_ref().map_or(0, Vec::len);
                        tracing::warn!(sink = %sink, topic = %r.topic, partition = r.partition, offset = r.offset,
                            bytes = size, error = %e, "Kafka refuses the dead letter: sending it without its value");
                        refused.push((item, Some(header::value_dropped(size, &e))));
                    }
                    Err((e, _)) if header::is_permanent(&e) => {
                        return Err(SinkError::DeadLetter(format!(
                            "Kafka refuses the dead letter of {}[{}]@{} on topic {}, even without its value: {e}",
                            r.topic, r.partition, r.offset, self.topic
                        )));
                    }
                    Err((e, _)) => {
                        tracing::warn!(sink = %sink, error = %e, "dead-letter produce failed");
                        failed.push((item, dropped));
                    }
                }
            }
            if !failed.is_empty() {
                metrics::counter!("weir_sink_retries_total", "sink" => sink.clone()).increment(1);
                if self.shutdown.load(Ordering::SeqCst) {
                    backoff.deadline_within(super::SHUTDOWN_GRACE);
                }
                let Some(delay) = backoff.next_delay() else {
                    return Err(SinkError::Shutdown("dead-letter topic unreachable at shutdown".into()));
                };
                std::thread::sleep(delay);
            }
            // The refused ones without their values, at once.
            todo = refused.into_iter().chain(failed).collect();
        }
        Ok(())
    }
}
