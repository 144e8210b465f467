//! The record collector: owns the producer and, under exactly-once, its
//! transaction (Kafka Streams' `RecordCollector` + `StreamsProducer`).
//!
//! Under `exactly_once` every record of a commit interval (outputs,
//! repartition records, dead letters, changelog records) goes into one
//! transaction, begun with the first record; [`Collector::commit`] adds the
//! consumed offsets (`send_offsets_to_transaction` with the consumer's group
//! metadata, KIP-447: a member thrown out of the group cannot commit, so a
//! zombie is fenced) and commits. Under `at_least_once` the producer is
//! only idempotent and the offsets go through the consumer.
//!
//! The producer is a `BaseProducer` served from the engine's own thread:
//! after [`Collector::flush`] every delivery report has been seen, so the
//! changelog offsets it returns are complete. librdkafka's transaction calls
//! block until the broker answers; the engine runs on a dedicated thread,
//! never on the async runtime.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, TopicPartitionList};

use super::timeouts::{
    CALL_TIMEOUT, COMMIT_RETRY, END_TXN_RETRY, FLUSH_TIMEOUT, RENEW_RETRY, SEND_OFFSETS_WAIT, TRANSACTION_TIMEOUT,
};
use super::{RuntimeError, TpMap, TpRef};
use crate::support::backoff::Backoff;
pub(crate) use crate::support::lock::lock;

/// Bounds of the producer's queue (see `Collector::new`).
const PRODUCER_QUEUE_MESSAGES: u32 = 20_000;
const PRODUCER_QUEUE_KBYTES: u32 = 16 * 1024;
/// The slice in which a flush serves delivery reports (see `flush`).
const FLUSH_POLL: Duration = Duration::from_millis(1);

/// Delivery reports since the last flush: the highest delivered offset per
/// partition (changelog positions) and the first error.
#[derive(Default)]
struct Deliveries {
    offsets: TpMap<i64>,
    error: Option<DeliveryError>,
}

/// Records that did not reach Kafka: a refusal in a delivery report, a
/// flush that did not end, an offsets call that did not return.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{topic} [{partition}]: {error}")]
    Refused {
        topic: String,
        partition: i32,
        error: KafkaError,
    },
    #[error("{left} records or reports still pending after {waited:?}")]
    Pending { left: u64, waited: Duration },
    #[error("send_offsets_to_transaction did not return within {0:?}")]
    OffsetsHung(Duration),
}

/// What a [`DeliveryError`] asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// The broker was slow or away: abort, rebuild from the last commit,
    /// go on.
    Transient,
    /// This producer was fenced (a newer one with its transactional.id, or
    /// the coordinator bumped its epoch): abort with a new producer.
    Fenced,
    /// Every attempt meets it again (a record too large for the topic, a
    /// topic this client may not write): rebuilding would replay the same
    /// records into the same refusal, so `weir run` stops with it.
    Permanent,
}

impl DeliveryError {
    pub fn failure(&self) -> DeliveryFailure {
        match self {
            DeliveryError::Refused { error, .. } => failure_of(error),
            DeliveryError::Pending { .. } | DeliveryError::OffsetsHung(_) => DeliveryFailure::Transient,
        }
    }
}

/// How a produce error of librdkafka's is met (see [`DeliveryFailure`]),
/// also when a transaction call reports it (a commit whose records were
/// refused). librdkafka's `_FATAL` is a fenced producer too: a new one
/// recovers.
pub(super) fn failure_of(e: &KafkaError) -> DeliveryFailure {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::ProducerFenced | C::Fenced | C::InvalidProducerEpoch | C::InvalidProducerIdMapping | C::Fatal) => {
            DeliveryFailure::Fenced
        }
        Some(C::TransactionalIdAuthorizationFailed) => DeliveryFailure::Permanent,
        _ if crate::support::dead_letter::is_permanent(e) => DeliveryFailure::Permanent,
        _ => DeliveryFailure::Transient,
    }
}

struct DeliveryContext {
    state: Mutex<Deliveries>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut s = lock(&self.state);
        match result {
            Ok(m) => {
                // Per delivered record: no `String` for the lookup.
                match s.offsets.get_mut(&TpRef(m.topic(), m.partition())) {
                    Some(e) => *e = (*e).max(m.offset()),
                    None => {
                        s.offsets.insert((m.topic().to_string(), m.partition()), m.offset());
                    }
                }
            }
            Err((e, m)) => {
                // The cause, not its consequences: once a transaction
                // fails, librdkafka purges the records still queued for
                // other partitions, whose reports may come first.
                if s.error.as_ref().is_none_or(|old| weight(e) > weight_of(old)) {
                    s.error = Some(DeliveryError::Refused {
                        topic: m.topic().to_string(),
                        partition: m.partition(),
                        error: e.clone(),
                    });
                }
            }
        }
    }
}

/// How much a delivery error says about why the records did not arrive:
/// a refusal for good most, a fenced producer, a transient error, a purge
/// (the consequence of another error) least.
fn weight(e: &KafkaError) -> u8 {
    use RDKafkaErrorCode as C;
    match failure_of(e) {
        DeliveryFailure::Permanent => 3,
        DeliveryFailure::Fenced => 2,
        DeliveryFailure::Transient if matches!(e.rdkafka_error_code(), Some(C::PurgeQueue | C::PurgeInflight)) => 0,
        DeliveryFailure::Transient => 1,
    }
}

fn weight_of(d: &DeliveryError) -> u8 {
    match d {
        DeliveryError::Refused { error, .. } => weight(error),
        _ => 1,
    }
}

/// One record to produce.
pub(super) struct Outgoing<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a [(String, String)],
}

pub(super) struct Collector {
    /// Shared only with a `send_offsets_to_transaction` call that may
    /// outlive its wait (see [`SEND_OFFSETS_WAIT`]).
    producer: Arc<BaseProducer<DeliveryContext>>,
    config: ClientConfig,
    transactional: bool,
    in_transaction: bool,
    /// This producer must not be used for another transaction: a call did
    /// not return, an end of transaction has an unknown outcome, or an
    /// error was fatal. The abort that follows replaces it.
    replace: bool,
    /// The topology's application id (metric label).
    app: String,
}

/// What a failed transaction call leaves, as librdkafka documents its
/// errors (`rd_kafka_error_is_retriable`, `_txn_requires_abort`,
/// `_is_fatal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The call may be made again (the same call, not another).
    Retriable,
    /// The transaction cannot commit: abort it (with this producer).
    Abortable,
    /// This producer cannot go on (fenced, fatal): a new one.
    Fatal,
}

impl Failure {
    pub(super) fn of(e: &KafkaError) -> Failure {
        match e {
            KafkaError::Transaction(e) if e.is_fatal() => Failure::Fatal,
            KafkaError::Transaction(e) if e.txn_requires_abort() => Failure::Abortable,
            KafkaError::Transaction(e) if e.is_retriable() => Failure::Retriable,
            _ => Failure::Abortable,
        }
    }
}

/// The settings of `weir run`'s producer; `transactional_id` makes it
/// transactional (exactly-once). Public only for `examples/passthrough.rs`
/// (the client library's floor in `./dev bench`), which must produce
/// exactly as `weir run` does.
pub fn producer_config(bootstrap: &str, transactional_id: Option<&str>) -> ClientConfig {
    use crate::kafka::ClientConfigExt;
    let mut config = crate::kafka::client_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set_default("linger.ms", "5")
        .set_default("compression.type", "lz4")
        // What may wait in the producer (defaults: 100,000 records or
        // 1 GiB). While a backlog is worked off the engine makes
        // records faster than they are acknowledged; unbounded, that
        // queue grew weir's peak RSS. 20,000 records is >100 ms of the
        // bench's output rate, far more than one linger of batching;
        // when it is full, `send` serves delivery reports and retries.
        .set_default("queue.buffering.max.messages", PRODUCER_QUEUE_MESSAGES.to_string())
        .set_default("queue.buffering.max.kbytes", PRODUCER_QUEUE_KBYTES.to_string());
    if let Some(id) = transactional_id {
        // Kafka Streams' default under EOS: a crashed instance's open
        // transaction blocks read_committed readers for at most this long.
        config
            .set("transactional.id", id)
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT.as_millis().to_string());
    }
    config
}

fn create(config: &ClientConfig, transactional: bool) -> Result<BaseProducer<DeliveryContext>, KafkaError> {
    let producer: BaseProducer<DeliveryContext> = config.create_with_context(DeliveryContext {
        state: Mutex::new(Deliveries::default()),
    })?;
    if transactional {
        // Fences an earlier incarnation with the same transactional.id and
        // aborts the transaction it left open.
        producer.init_transactions(CALL_TIMEOUT)?;
    }
    Ok(producer)
}

impl Collector {
    /// `transactional_id` makes it transactional (exactly-once).
    pub(super) fn new(bootstrap: &str, app: &str, transactional_id: Option<&str>) -> Result<Collector, RuntimeError> {
        let config = producer_config(bootstrap, transactional_id);
        let producer = Arc::new(create(&config, transactional_id.is_some())?);
        Ok(Collector {
            producer,
            config,
            transactional: transactional_id.is_some(),
            in_transaction: false,
            replace: false,
            app: app.to_string(),
        })
    }

    pub(super) fn transactional(&self) -> bool {
        self.transactional
    }

    pub(super) fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Begin a transaction unless one is open (exactly-once only).
    fn begin(&mut self) -> Result<(), KafkaError> {
        if self.transactional && !self.in_transaction {
            if let Err(e) = self.producer.begin_transaction() {
                if Failure::of(&e) == Failure::Fatal {
                    self.replace = true;
                }
                return Err(e);
            }
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Produce one record (inside the open transaction, begun if needed).
    pub(super) fn send(&mut self, r: &Outgoing<'_>) -> Result<(), KafkaError> {
        self.begin()?;
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(r.topic).partition(r.partition).timestamp(r.timestamp);
        // Only records with headers (dead letters) get a header list: it is
        // a C allocation.
        if !r.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            record = record.headers(headers);
        }
        if let Some(k) = r.key {
            record = record.key(k);
        }
        if let Some(v) = r.value {
            record = record.payload(v);
        }
        let mut deadline = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // Full until deliveries free it; nothing delivered for this
                // long is a failure like a flush that times out.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < *deadline.get_or_insert_with(|| Instant::now() + FLUSH_TIMEOUT) =>
                {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Serve delivery reports (call often: the producer has no thread).
    pub(super) fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Wait until every record sent so far is delivered and its report
    /// served; returns the highest delivered offset per partition since the
    /// last flush, or the first delivery error.
    pub(super) fn flush(&mut self) -> Result<TpMap<i64>, RuntimeError> {
        crate::health::global().beat();
        let started = Instant::now();
        let deadline = started + FLUSH_TIMEOUT;
        // Not a plain `Producer::flush(FLUSH_TIMEOUT)`: rust-rdkafka's
        // (0.39) waits in 100 ms slices of `BaseProducer::poll`, which
        // always runs to the end of its slice, so flushing even one record
        // took 100 ms, and every commit held the engine that long: a tenth
        // of each 1 s commit interval lost, and the records arriving
        // meanwhile waited (measured: flush 100 ms at every commit of a
        // 1,000 records/s run). A zero-timeout flush makes librdkafka send
        // what lingers; then delivery reports are served in 1 ms slices
        // until none is in flight.
        match self.producer.flush(Duration::ZERO) {
            Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            Err(e) => return Err(e.into()),
        }
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            self.producer.poll(FLUSH_POLL);
        }
        let left = self.producer.in_flight_count();
        if left > 0 {
            return Err(RuntimeError::Delivery(DeliveryError::Pending {
                left: left as u64,
                waited: FLUSH_TIMEOUT,
            }));
        }
        if started.elapsed() > Duration::from_secs(5) {
            tracing::warn!(elapsed = ?started.elapsed(), "flushing the producer was slow (a broker down or moving?)");
        }
        let mut d = lock(&self.producer.context().state);
        if let Some(e) = d.error.take() {
            d.offsets.clear();
            if e.failure() == DeliveryFailure::Fenced {
                self.replace = true;
            }
            return Err(RuntimeError::Delivery(e));
        }
        Ok(std::mem::take(&mut d.offsets))
    }

    /// Commit the consumed `offsets` (with their metadata): as part of the
    /// transaction under exactly-once, through the consumer otherwise.
    /// Call after [`Collector::flush`].
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<(), RuntimeError> {
        if !self.transactional {
            if offsets.count() > 0 {
                commit_offsets(consumer, offsets)?;
            }
            return Ok(());
        }
        if offsets.count() > 0 {
            self.begin()?;
            let group = consumer.group_metadata().ok_or(RuntimeError::NoGroupMetadata)?;
            self.send_offsets(offsets, group)?;
        }
        if self.in_transaction {
            self.end_transaction()?;
        }
        Ok(())
    }

    /// `commit_transaction`, its errors handled as librdkafka documents
    /// them: a retriable one by calling it again (the same EndTxn, not a
    /// new one) for up to [`END_TXN_RETRY`]; an abortable one by the abort
    /// that follows. Anything else leaves the outcome unknown: the broker
    /// may still apply this EndTxn late. librdkafka does not implement
    /// KIP-890 (confluentinc/librdkafka#5423), so a late EndTxn(commit) can
    /// land on the next transaction of the same producer epoch (Jepsen,
    /// KAFKA-17754): lost writes, aborted reads. Such a producer is never
    /// used again; the abort replaces it, and the new producer's
    /// `init_transactions` bumps the epoch and fences the old request.
    fn end_transaction(&mut self) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + END_TXN_RETRY;
        loop {
            crate::health::global().beat();
            let Err(e) = self.producer.commit_transaction(CALL_TIMEOUT) else {
                self.in_transaction = false;
                return Ok(());
            };
            match Failure::of(&e) {
                Failure::Retriable if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "committing the transaction failed; calling it again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Failure::Abortable => return Err(e.into()),
                Failure::Retriable | Failure::Fatal => {
                    tracing::warn!(error = %e, "the transaction's outcome is unknown: this producer will be replaced");
                    self.replace = true;
                    return Err(e.into());
                }
            }
        }
    }

    /// A new producer with the same transactional.id (see `replace`).
    fn renew(&mut self) -> Result<(), RuntimeError> {
        crate::health::global().beat();
        counter!("weir_producer_replacements_total", "topology" => self.app.clone()).increment(1);
        // Its transaction is aborted, or completed if its EndTxn reached
        // the coordinator, by the new producer's init_transactions (same
        // transactional.id, epoch bumped); the consumer is rewound to the
        // committed offsets either way. A broker stalled longer than one
        // call (a GC pause, a VM stall) must not end the process: retried
        // for a while, as the transaction calls are.
        let deadline = Instant::now() + RENEW_RETRY;
        loop {
            match create(&self.config, true) {
                Ok(p) => {
                    self.producer = Arc::new(p);
                    return Ok(());
                }
                Err(e) if Failure::of(&e) != Failure::Fatal && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "starting a new producer failed; retrying");
                    crate::health::global().beat();
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `send_offsets_to_transaction` on a thread of its own, waited for at
    /// most [`SEND_OFFSETS_WAIT`]. If it does not return, the producer is
    /// marked for replacement (the abort that follows replaces it) and the call is
    /// left to finish, or not, with its own handle on the old producer.
    fn send_offsets(
        &mut self,
        offsets: &TopicPartitionList,
        group: rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), RuntimeError> {
        crate::health::global().beat();
        let (tx, rx) = mpsc::channel();
        let (producer, offsets) = (self.producer.clone(), offsets.clone());
        std::thread::Builder::new()
            .name("send-offsets".into())
            .spawn(move || {
                let _ = tx.send(producer.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT));
            })
            .map_err(|source| RuntimeError::Io {
                path: "send-offsets thread".into(),
                source,
            })?;
        match rx.recv_timeout(SEND_OFFSETS_WAIT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                if Failure::of(&e) == Failure::Fatal {
                    self.replace = true;
                }
                Err(e.into())
            }
            Err(_) => {
                self.replace = true;
                tracing::error!(waited = ?SEND_OFFSETS_WAIT, "adding the offsets to the transaction did not return (librdkafka lost the group coordinator): replacing the producer");
                Err(RuntimeError::Delivery(DeliveryError::OffsetsHung(SEND_OFFSETS_WAIT)))
            }
        }
    }

    /// Abort the open transaction (nothing of it becomes visible to
    /// read_committed readers). A producer that cannot abort (fenced, or a
    /// fatal error) is replaced by a new one with the same transactional.id.
    pub(super) fn abort(&mut self) -> Result<(), RuntimeError> {
        let was_open = std::mem::replace(&mut self.in_transaction, false);
        if self.transactional && std::mem::take(&mut self.replace) {
            self.renew()?;
        } else if self.transactional && was_open {
            crate::health::global().beat();
            // Retriable errors of an abort: librdkafka says call it again;
            // an abort whose outcome stays unknown is the same hazard as an
            // unknown commit, so the producer is replaced then too.
            let deadline = Instant::now() + END_TXN_RETRY;
            let aborted = loop {
                match self.producer.abort_transaction(CALL_TIMEOUT) {
                    Ok(()) => break true,
                    Err(e) if Failure::of(&e) == Failure::Retriable && Instant::now() < deadline => {
                        tracing::warn!(error = %e, "aborting the transaction failed; calling it again");
                        crate::health::global().beat();
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "aborting the transaction failed: replacing the producer");
                        break false;
                    }
                }
            };
            if !aborted {
                self.renew()?;
            }
        }
        let mut d = lock(&self.producer.context().state);
        d.offsets.clear();
        d.error = None;
        Ok(())
    }
}

/// Commit `tpl` through the consumer, retrying errors that clear by
/// themselves once the group coordinator is back (after a broker restart the
/// first commits answer NotCoordinator or CoordinatorLoadInProgress); any
/// other error, or one that lasts [`COMMIT_RETRY`], is returned.
fn commit_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, tpl: &TopicPartitionList) -> Result<(), KafkaError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    backoff.deadline_within(COMMIT_RETRY);
    loop {
        match consumer.commit(tpl, CommitMode::Sync) {
            Err(e @ KafkaError::ConsumerCommit(_)) if crate::kafka::coordinator_busy(&e) => {
                let Some(delay) = backoff.next_delay() else {
                    return Err(e);
                };
                tracing::warn!(error = %e, retry_in = ?delay, "offset commit failed; retrying");
                std::thread::sleep(delay);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryFailure::*;
    use RDKafkaErrorCode as C;

    fn refused(code: RDKafkaErrorCode) -> DeliveryError {
        DeliveryError::Refused {
            topic: "out".into(),
            partition: 0,
            error: KafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn a_refusal_every_attempt_meets_again_is_permanent_a_slow_broker_transient_a_fence_fenced() {
        for code in [
            C::MessageSizeTooLarge,
            C::TopicAuthorizationFailed,
            C::InvalidRecord,
            C::PolicyViolation,
            C::TransactionalIdAuthorizationFailed,
        ] {
            assert_eq!(refused(code).failure(), Permanent, "{code:?}");
        }
        for code in [
            C::MessageTimedOut,
            C::NotLeaderForPartition,
            C::RequestTimedOut,
            C::NotEnoughReplicas,
            C::BrokerTransportFailure,
        ] {
            assert_eq!(refused(code).failure(), Transient, "{code:?}");
        }
        for code in [C::ProducerFenced, C::Fenced, C::InvalidProducerEpoch, C::Fatal] {
            assert_eq!(refused(code).failure(), Fenced, "{code:?}");
        }
        let pending = DeliveryError::Pending {
            left: 3,
            waited: FLUSH_TIMEOUT,
        };
        assert_eq!(pending.failure(), Transient);
        assert_eq!(DeliveryError::OffsetsHung(SEND_OFFSETS_WAIT).failure(), Transient);
    }

    #[test]
    fn the_engine_recovers_from_transient_and_fenced_delivery_errors_and_stops_on_permanent_ones() {
        assert!(RuntimeError::Delivery(refused(C::MessageTimedOut)).recoverable());
        assert!(RuntimeError::Delivery(refused(C::ProducerFenced)).recoverable());
        let too_large = RuntimeError::Delivery(refused(C::MessageSizeTooLarge));
        assert!(!too_large.recoverable());
        assert!(too_large.to_string().contains("out [0]"), "{too_large}");
        // Refused when queued (the producer's own size check) likewise.
        assert!(!RuntimeError::Kafka(KafkaError::MessageProduction(C::MessageSizeTooLarge)).recoverable());
        assert!(RuntimeError::Kafka(KafkaError::MessageProduction(C::QueueFull)).recoverable());
    }

    #[test]
    fn a_purge_never_hides_the_error_that_caused_it() {
        let w = |c| weight(&KafkaError::MessageProduction(c));
        assert!(w(C::MessageSizeTooLarge) > w(C::ProducerFenced));
        assert!(w(C::ProducerFenced) > w(C::MessageTimedOut));
        assert!(w(C::MessageTimedOut) > w(C::PurgeQueue));
        assert!(w(C::MessageTimedOut) > w(C::PurgeInflight));
    }
}
