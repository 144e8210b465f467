//! The client library's floor in `./dev bench` (`passthrough-alos`,
//! `passthrough-eos` in benches/broker/run.sh): what consuming and
//! producing cost on the librdkafka settings `weir run` uses, with none of
//! its work (no decoding, no state, no tasks).
//!
//! ```text
//! passthrough BOOTSTRAP GROUP INPUT OUTPUT at_least_once|exactly_once [COMMIT_MS]
//! ```
//!
//! One thread. It consumes INPUT as a member of GROUP with `weir run`'s
//! consumer settings ([`weir::run_consumer_config`]: read_committed,
//! cooperative-sticky, its prefetch bounds, a static member as `weir run`
//! is by default) and produces every record unchanged (key, value,
//! headers, timestamp) to the same partition number of OUTPUT with `weir
//! run`'s producer settings ([`weir::run_producer_config`]: idempotent,
//! linger 5 ms, lz4, its queue bounds). Every COMMIT_MS (default 1000):
//!
//! - `at_least_once`: flush the producer, then commit the consumed offsets
//!   through the consumer (synchronously), as `weir run` does;
//! - `exactly_once`: one transaction per interval, begun with its first
//!   record: the producer is flushed, the consumed offsets go into the
//!   transaction (`send_offsets_to_transaction` with the consumer's group
//!   metadata) and it commits. The transactional id is `GROUP-passthrough`.
//!
//! The loop polls as `weir run`'s does: without waiting while records
//! come, else for at most 100 ms. Nothing is recovered from: any error ends
//! the process (exit 1). SIGTERM or SIGINT: one last commit, then exit 0.
//!
//! Built by `./dev bench` (`cargo build --features integration --example
//! passthrough`, the dev profile like every build of `./dev`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

// Copies of `weir run`'s values (private to the library):
/// `weir run --session-timeout`'s default (src/main.rs).
const SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// A transaction call, and how long a commit waits for its records to be
/// delivered (`CALL_TIMEOUT`, `FLUSH_TIMEOUT` in src/runtime/timeouts.rs).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// The slice in which a flush serves delivery reports (`FLUSH_POLL` in
/// src/runtime/collector.rs; see [`flush`]).
const FLUSH_POLL: Duration = Duration::from_millis(1);
/// How long an idle round of the loop waits for a record (`run_once` in
/// src/runtime/mod.rs).
const IDLE_POLL: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The first delivery error since the last flush.
#[derive(Default)]
struct Deliveries {
    error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut first = self.error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| format!("{} [{}]: {e}", m.topic(), m.partition()));
        }
    }
}

struct Passthrough {
    producer: BaseProducer<Deliveries>,
    input: String,
    output: String,
    exactly_once: bool,
    in_transaction: bool,
    /// The next offset per input partition, of what was produced since the
    /// last commit.
    positions: BTreeMap<i32, i64>,
}

impl Passthrough {
    fn pass(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> Result<()> {
        if self.exactly_once && !self.in_transaction {
            self.producer.begin_transaction()?;
            self.in_transaction = true;
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.output).partition(m.partition());
        if let Some(ts) = m.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        if let Some(h) = m.headers().filter(|h| h.count() > 0) {
            record = record.headers(h.detach());
        }
        // As `weir run` (`Collector::send`): a full queue is served and
        // tried again, for at most FLUSH_TIMEOUT.
        let mut deadline = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < *deadline.get_or_insert_with(|| Instant::now() + FLUSH_TIMEOUT) =>
                {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        self.positions.insert(m.partition(), m.offset() + 1);
        Ok(())
    }

    /// `weir run`'s flush (`Collector::flush`, a copy): a zero-timeout
    /// flush makes librdkafka send what lingers, then delivery reports are
    /// served in 1 ms slices until none is in flight (rust-rdkafka's own
    /// `flush` waits in 100 ms slices).
    fn flush(&self) -> Result<()> {
        match self.producer.flush(Duration::ZERO) {
            Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            Err(e) => return Err(e).context("flushing"),
        }
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            self.producer.poll(FLUSH_POLL);
        }
        let left = self.producer.in_flight_count();
        if left > 0 {
            bail!("{left} records still in flight after {FLUSH_TIMEOUT:?}");
        }
        let error = self
            .producer
            .context()
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match error {
            Some(e) => bail!("a record was not delivered: {e}"),
            None => Ok(()),
        }
    }

    /// Flush, then commit the offsets: in the transaction (exactly-once),
    /// through the consumer (at-least-once).
    fn commit(&mut self, consumer: &BaseConsumer) -> Result<()> {
        self.flush()?;
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &self.positions {
            tpl.add_partition_offset(&self.input, p, Offset::Offset(o))?;
        }
        if self.exactly_once {
            if tpl.count() > 0 {
                let group = consumer.group_metadata().ok_or_else(|| anyhow!("no group metadata"))?;
                self.producer
                    .send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT)
                    .context("send_offsets_to_transaction")?;
            }
            if self.in_transaction {
                self.producer
                    .commit_transaction(CALL_TIMEOUT)
                    .context("commit_transaction")?;
                self.in_transaction = false;
            }
        } else if tpl.count() > 0 {
            consumer.commit(&tpl, CommitMode::Sync).context("committing offsets")?;
        }
        self.positions.clear();
        Ok(())
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, group, input, output, guarantee, rest @ ..] = &args[..] else {
        bail!("usage: passthrough BOOTSTRAP GROUP INPUT OUTPUT at_least_once|exactly_once [COMMIT_MS]");
    };
    let exactly_once = match guarantee.as_str() {
        "at_least_once" => false,
        "exactly_once" => true,
        g => bail!("guarantee {g}: at_least_once or exactly_once"),
    };
    let commit_interval = Duration::from_millis(match rest {
        [] => 1000,
        [ms] => ms.parse().context("COMMIT_MS")?,
        _ => bail!("too many arguments"),
    });
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    }
    // `weir run`'s static member id and transactional id are one id per
    // instance; here one for both as well.
    let id = format!("{group}-passthrough");
    let consumer: BaseConsumer = weir::run_consumer_config(bootstrap, group, SESSION_TIMEOUT, Some(&id)).create()?;
    let producer: BaseProducer<Deliveries> = weir::run_producer_config(bootstrap, exactly_once.then_some(id.as_str()))
        .create_with_context(Deliveries::default())?;
    if exactly_once {
        producer.init_transactions(CALL_TIMEOUT).context("init_transactions")?;
    }
    consumer.subscribe(&[input.as_str()])?;
    eprintln!("passthrough: {input} -> {output}, group {group}, {guarantee}, commit every {commit_interval:?}");
    let mut p = Passthrough {
        producer,
        input: input.clone(),
        output: output.clone(),
        exactly_once,
        in_transaction: false,
        positions: BTreeMap::new(),
    };
    let (mut busy, mut last_commit, mut passed) = (false, Instant::now(), 0u64);
    while !STOP.load(Ordering::Relaxed) {
        let polled = consumer.poll(if busy { Duration::ZERO } else { IDLE_POLL });
        busy = false;
        match polled {
            Some(Ok(m)) => {
                p.pass(&m)?;
                busy = true;
                passed += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            // As `weir run`: a consumer error is said, not fatal.
            Some(Err(e)) => eprintln!("passthrough: consumer error: {e}"),
        }
        p.producer.poll(Duration::ZERO);
        if last_commit.elapsed() >= commit_interval {
            let started = Instant::now();
            p.commit(&consumer)?;
            last_commit = started;
        }
    }
    p.commit(&consumer)?;
    eprintln!("passthrough: stopped after {passed} records");
    Ok(())
}
