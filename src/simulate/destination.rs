//! Where `weir simulate` sends records: a Kafka topic (an idempotent
//! producer with explicit murmur2 partitions, delivery reports counted) or
//! a `weir test` input file. Called a destination, not a sink: "sink" is
//! `weir sink`, the Postgres loader, and the topology's output nodes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use super::generator::SimRecord;
use super::output::jsonl_line;
use super::SimulateError;
use crate::kafka::{client_config, ClientConfigExt};

/// How long to wait for outstanding deliveries at the end.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the broker may take to answer a metadata request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Records stamped this far ahead of the wall clock explain an invalid-record
/// rejection (Kafka's default limit is 1 h).
const FUTURE_HINT_MS: i64 = 55 * 60 * 1000;

/// Where records go.
pub(super) enum Destination {
    /// `topic` is what the lines name (`--topic`), the topic the records
    /// would have gone to.
    File {
        path: String,
        topic: String,
        out: BufWriter<Box<dyn Write + Send>>,
    },
    Kafka(KafkaDestination),
}

impl Destination {
    /// `--output`: a file, or stdout for `-`.
    pub(super) fn file(path: &Path, topic: &str) -> Result<Self, SimulateError> {
        let name = path.display().to_string();
        let out: Box<dyn Write + Send> = if name == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(File::create(path).map_err(|source| SimulateError::Output {
                path: name.clone(),
                source,
            })?)
        };
        Ok(Destination::File {
            path: name,
            topic: topic.to_string(),
            out: BufWriter::with_capacity(1 << 16, out),
        })
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Destination::File { path, .. } if path == "-" => "stdout".to_string(),
            Destination::File { path, .. } => path.clone(),
            Destination::Kafka(k) => format!("topic {} ({} partitions)", k.topic, k.partitions),
        }
    }

    pub(super) fn write(&mut self, rec: &SimRecord) -> Result<(), SimulateError> {
        match self {
            Destination::File { path, topic, out } => {
                let mut line = jsonl_line(topic, rec);
                line.push(b'\n');
                out.write_all(&line).map_err(|source| SimulateError::Output {
                    path: path.clone(),
                    source,
                })
            }
            Destination::Kafka(k) => k.send(rec),
        }
    }

    /// Wait up to `d`, serving delivery reports when producing.
    pub(super) fn idle(&mut self, d: Duration) -> Result<(), SimulateError> {
        match self {
            Destination::File { path, out, .. } => {
                // Let a reader following the file see records as they come.
                out.flush().map_err(|source| SimulateError::Output {
                    path: path.clone(),
                    source,
                })?;
                std::thread::sleep(d);
                Ok(())
            }
            Destination::Kafka(k) => {
                k.producer.poll(d);
                k.check()
            }
        }
    }

    pub(super) fn finish(&mut self) -> Result<(), SimulateError> {
        match self {
            Destination::File { path, out, .. } => out.flush().map_err(|source| SimulateError::Output {
                path: path.clone(),
                source,
            }),
            Destination::Kafka(k) => k.finish(),
        }
    }
}

/// Delivery reports, counted by the producer's callback.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// The most telling delivery error so far, and its code.
    first_error: Mutex<Option<(String, Option<RDKafkaErrorCode>)>>,
    /// The broker rejected a record as invalid (its timestamp, say).
    invalid_record: AtomicBool,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let code = e.rdkafka_error_code();
                // Kafka 4 answers a timestamp too far ahead with INVALID_RECORD.
                if matches!(
                    code,
                    Some(RDKafkaErrorCode::InvalidTimestamp | RDKafkaErrorCode::InvalidRecord)
                ) {
                    self.invalid_record.store(true, Ordering::Relaxed);
                }
                // "Another record in the batch failed" says nothing: keep
                // looking for the record that did.
                let vague = |c: Option<RDKafkaErrorCode>| c == Some(RDKafkaErrorCode::InvalidDifferentRecord);
                if let Ok(mut first) = self.first_error.lock() {
                    let replace = match &*first {
                        None => true,
                        Some((_, old)) => vague(*old) && !vague(code),
                    };
                    if replace {
                        *first = Some((e.to_string(), code));
                    }
                }
            }
        }
    }
}

pub(super) struct KafkaDestination {
    producer: BaseProducer<Deliveries>,
    topic: String,
    partitions: i32,
    sent: u64,
    /// Largest record timestamp sent.
    max_timestamp_ms: i64,
}

impl KafkaDestination {
    /// Create the producer and check that the broker answers.
    pub(super) fn connect(bootstrap: &str) -> Result<Self, SimulateError> {
        // A refused password or certificate is named at once; a broker
        // that does not answer is reported by the metadata request below.
        let never = std::sync::atomic::AtomicBool::new(false);
        if let Err(crate::kafka::BrokerUnreachable::Security(failure)) =
            crate::kafka::wait_for_brokers(bootstrap, CONNECT_TIMEOUT, &never)
        {
            return Err(failure.into());
        }
        let producer: BaseProducer<Deliveries> = client_config(bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set_default("client.id", "weir-simulate")
            .set_default("linger.ms", "5")
            .set_default("compression.type", "lz4")
            .set_default("message.timeout.ms", "60000")
            .create_with_context(Deliveries::default())
            .map_err(|source| SimulateError::Kafka {
                action: "creating the producer".into(),
                error: source,
            })?;
        producer
            .client()
            .fetch_metadata(None, CONNECT_TIMEOUT)
            .map_err(|source| SimulateError::Kafka {
                action: format!(
                    "cannot reach the broker at {bootstrap} within {} s (is it running? `./dev up` starts one)",
                    CONNECT_TIMEOUT.as_secs()
                ),
                error: source,
            })?;
        Ok(Self {
            producer,
            topic: String::new(),
            partitions: 0,
            sent: 0,
            max_timestamp_ms: i64::MIN,
        })
    }

    /// Use `topic` and return its partition count (a topic created a moment
    /// ago may not list its partitions yet).
    pub(super) fn load_partitions(&mut self, topic: &str) -> Result<i32, SimulateError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let partitions = loop {
            let metadata = self
                .producer
                .client()
                .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
                .map_err(|source| SimulateError::Kafka {
                    action: format!("reading metadata of topic {topic}"),
                    error: source,
                })?;
            let n = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len());
            if n > 0 {
                break i32::try_from(n).unwrap_or(i32::MAX);
            }
            if Instant::now() >= deadline {
                return Err(SimulateError::Kafka {
                    action: format!("topic {topic} has no partitions"),
                    error: KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        self.topic = topic.to_string();
        self.partitions = partitions;
        Ok(partitions)
    }

    fn send(&mut self, rec: &SimRecord) -> Result<(), SimulateError> {
        // Explicit partition = murmur2(key) % partitions, so the broker holds
        // exactly what `--output` would have written.
        let mut record = BaseRecord::to(&self.topic)
            .key(rec.key.as_str())
            .payload(rec.payload.as_slice())
            .partition(rec.partition)
            .timestamp(rec.timestamp_ms);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                    self.check()?;
                }
                Err((source, _)) => {
                    return Err(SimulateError::Kafka {
                        action: format!("producing to topic {}", self.topic),
                        error: source,
                    })
                }
            }
        }
        self.sent += 1;
        self.max_timestamp_ms = self.max_timestamp_ms.max(rec.timestamp_ms);
        self.producer.poll(Duration::ZERO);
        self.check()
    }

    /// Fail as soon as a delivery has failed.
    fn check(&self) -> Result<(), SimulateError> {
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let mut first_error = ctx
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|(text, _)| text.clone()))
            .unwrap_or_default();
        let future = self.max_timestamp_ms > Utc::now().timestamp_millis() + FUTURE_HINT_MS;
        if ctx.invalid_record.load(Ordering::Relaxed) && future {
            first_error.push_str(
                " (the broker refuses timestamps more than message.timestamp.after.max.ms, 1 h by default, \
                 ahead of its clock: use an earlier --start, fewer records or a smaller --speedup)",
            );
        }
        Err(SimulateError::Delivery {
            topic: self.topic.clone(),
            failed,
            first_error,
        })
    }

    pub(super) fn finish(&mut self) -> Result<(), SimulateError> {
        let flushed = self.producer.flush(Timeout::After(FLUSH_TIMEOUT));
        self.check()?;
        if let Err(source) = flushed {
            let pending = self.producer.in_flight_count();
            return Err(SimulateError::Kafka {
                action: format!(
                    "{pending} record(s) still undelivered to topic {} after {} s",
                    self.topic,
                    FLUSH_TIMEOUT.as_secs()
                ),
                error: source,
            });
        }
        let delivered = self.producer.context().delivered.load(Ordering::Relaxed);
        if delivered != self.sent {
            return Err(SimulateError::Delivery {
                topic: self.topic.clone(),
                failed: self.sent.saturating_sub(delivered),
                first_error: "no delivery report".into(),
            });
        }
        Ok(())
    }
}
