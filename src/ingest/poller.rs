//! The citydata poller: cycles of hotspot polls, each hotspot on its own
//! (timeout, retries with backoff and jitter, bounded concurrency), records
//! handed to an idempotent producer as soon as a hotspot answers, metrics
//! and log lines that never carry the API key.
//!
//! Over 600 lines, a seventh of them tests: one poll cycle's state machine
//! (cycle → hotspot → attempt → records), kept together so its timeouts and
//! counters can be read in one place; the API's formats are in `citydata`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use metrics::{counter, gauge, histogram};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tokio::task::JoinHandle;

use super::changes::Changes;
use super::citydata::{
    self, api_code_hint, api_code_is_transient, api_code_label, display_url, map_response, parse_response, request_url,
    ApiKey, Hotspot, ResponseError,
};
use super::http::{check_base_url, snippet, FetchError, HttpClient};
use super::{CitydataArgs, Emit, IngestError};
use crate::kafka::{client_config, ensure_topics, wait_for_brokers, ClientConfigExt, TopicSpec, BROKER_WAIT};
use crate::support::backoff::Backoff;

/// First pause before a retry; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long undelivered records may wait in the producer (broker down).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the end of a run waits for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(130);

/// Can a retry that waits `delay` and then takes up to `timeout` end
/// before `deadline` (the start of the next cycle)?
fn fits_before(now: Instant, delay: Duration, timeout: Duration, deadline: Instant) -> bool {
    now + delay + timeout <= deadline
}

/// Why one hotspot poll failed.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Fetch(FetchError),
    Response(ResponseError),
}

impl Failure {
    /// The `reason` label: a small fixed set.
    fn reason(&self) -> &'static str {
        match self {
            Failure::Fetch(FetchError::Timeout(_)) => "timeout",
            Failure::Fetch(FetchError::Connect(_)) => "connect",
            Failure::Fetch(FetchError::Request(_)) => "request",
            Failure::Fetch(FetchError::Status { .. }) => "http_status",
            Failure::Fetch(FetchError::TooLarge) => "too_large",
            Failure::Response(ResponseError::Api { .. }) => "api_error",
            Failure::Response(ResponseError::Malformed(_)) => "malformed",
        }
    }

    /// Worth another attempt in this cycle? Network trouble, server errors
    /// and cut-short bodies clear up; a bad key, a used-up quota or a
    /// refused request do not (retrying a quota error only burns quota).
    fn retryable(&self) -> bool {
        match self {
            Failure::Fetch(FetchError::Status { status, .. }) => *status >= 500 || *status == 429 || *status == 408,
            Failure::Fetch(FetchError::TooLarge) => false,
            Failure::Fetch(_) => true,
            Failure::Response(ResponseError::Api { code, .. }) => api_code_is_transient(code),
            Failure::Response(ResponseError::Malformed(_)) => true,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Fetch(e) => e.fmt(f),
            Failure::Response(e) => e.fmt(f),
        }
    }
}

/// How one hotspot poll of a cycle ended.
#[derive(Debug, Default, Clone, Copy)]
struct PollOutcome {
    ok: bool,
    /// Why it failed (the `reason` label), if it did.
    failure: Option<&'static str>,
    /// Answered, but without parking data.
    empty: bool,
    lots: usize,
    sent: usize,
    unchanged: usize,
    duplicates: usize,
}

/// `--output`: records as lines of `weir test`'s input format.
struct Output {
    path: String,
    partitions: i32,
    out: std::io::BufWriter<Box<dyn Write + Send>>,
}

impl Output {
    fn open(path: &std::path::Path, partitions: i32) -> Result<Self, IngestError> {
        let name = path.display().to_string();
        let out: Box<dyn Write + Send> = if name == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::File::create(path).map_err(|source| IngestError::Output {
                path: name.clone(),
                source,
            })?)
        };
        Ok(Self {
            path: name,
            partitions,
            out: std::io::BufWriter::new(out),
        })
    }

    /// One poll's records, flushed so a reader following the file sees them.
    fn write(&mut self, topic: &str, lots: &[citydata::LotStatus], timestamp_ms: i64) -> std::io::Result<()> {
        for lot in lots {
            let key = lot.parking_code();
            let rec = crate::simulate::SimRecord {
                partition: crate::kafka::partition_for(Some(key.as_bytes()), self.partitions, 0),
                timestamp_ms,
                key: key.to_string(),
                payload: lot.to_json(),
                kind: crate::simulate::RecordKind::Good,
            };
            self.out.write_all(&crate::simulate::jsonl_line(topic, &rec))?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

/// Delivery results of a run, shared with the delivery waiters.
#[derive(Debug, Default)]
struct Deliveries {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

struct Poller {
    key: ApiKey,
    base_url: String,
    hotspots: Vec<Hotspot>,
    interval: Duration,
    timeout: Duration,
    retries: u32,
    concurrency: usize,
    emit: Emit,
    topic: String,
    http: HttpClient,
    /// Where records go: the producer, or `--output`.
    producer: Option<FutureProducer>,
    output: Option<Mutex<Output>>,
    changes: Arc<Mutex<Changes>>,
    deliveries: Arc<Mutex<Deliveries>>,
    waiters: Mutex<Vec<JoinHandle<()>>>,
}

pub(super) async fn run(args: CitydataArgs) -> Result<(), IngestError> {
    let key = ApiKey::new(args.api_key.clone().unwrap_or_default());
    if key.is_empty() {
        return Err(IngestError::MissingKey);
    }
    check_base_url(&args.base_url)?;
    let hotspots = match &args.hotspots {
        Some(path) => citydata::load_hotspots(path)?,
        None => citydata::default_hotspots()?,
    };
    if let Some(addr) = args.metrics_addr {
        crate::metrics::install(addr)?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    }
    let stop = crate::shutdown::on_signal();

    let (producer, output) = match &args.output {
        Some(path) => (None, Some(Mutex::new(Output::open(path, args.partitions)?))),
        None => match connect(&args, &stop).await? {
            Some(producer) => (Some(producer), None),
            None => return Ok(()),
        },
    };
    let poller = Poller {
        http: HttpClient::new(args.timeout).map_err(IngestError::Tls)?,
        key,
        base_url: args.base_url.trim_end_matches('/').to_string(),
        hotspots,
        interval: args.interval,
        timeout: args.timeout,
        retries: args.retries,
        concurrency: args.concurrency as usize,
        emit: args.emit,
        topic: args.topic.clone(),
        producer,
        output,
        changes: Arc::new(Mutex::new(Changes::new())),
        deliveries: Arc::new(Mutex::new(Deliveries::default())),
        waiters: Mutex::new(Vec::new()),
    };
    tracing::info!(
        hotspots = poller.hotspots.len(),
        base_url = %poller.base_url,
        interval = %humantime::format_duration(poller.interval),
        timeout = %humantime::format_duration(poller.timeout),
        retries = poller.retries,
        concurrency = poller.concurrency,
        emit = %poller.emit.as_str(),
        topic = %poller.topic,
        to = %poller.output.as_ref().and_then(|o| o.lock().ok().map(|o| o.path.clone())).unwrap_or_else(|| "kafka".into()),
        "polling the Seoul citydata API"
    );
    poller.run_cycles(args.cycles, &stop).await
}

/// Wait for Kafka, create the topic if needed, and make the producer; None
/// if a signal came while waiting.
async fn connect(args: &CitydataArgs, stop: &Arc<AtomicBool>) -> Result<Option<FutureProducer>, IngestError> {
    let (bootstrap, flag) = (args.bootstrap.clone(), stop.clone());
    let reachable = tokio::task::spawn_blocking(move || wait_for_brokers(&bootstrap, BROKER_WAIT, &flag))
        .await
        .map_err(|e| IngestError::Task(e.to_string()))??;
    if !reachable {
        return Ok(None);
    }
    ensure_topics(&args.bootstrap, &[TopicSpec::new(&args.topic, args.partitions)])
        .await
        .map_err(|error| IngestError::Kafka {
            action: format!("creating topic {}", args.topic),
            error,
        })?;
    let producer: FutureProducer = client_config(&args.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set_default("client.id", "weir-ingest-citydata")
        .set_default("linger.ms", "20")
        .set_default("compression.type", "lz4")
        // Java's default partitioner for keyed records, as `weir simulate`
        // places them: a lot lands on the same partition either way.
        .set("partitioner", "murmur2_random")
        .set_default("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
        .create()
        .map_err(|error| IngestError::Kafka {
            action: "creating the producer".into(),
            error,
        })?;
    Ok(Some(producer))
}

/// Resolves once `stop` is set.
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Poller {
    async fn run_cycles(&self, cycles: Option<u64>, stop: &AtomicBool) -> Result<(), IngestError> {
        let mut answered = 0usize;
        let mut done = 0u64;
        let mut start = tokio::time::Instant::now();
        while cycles.is_none_or(|n| done < n) {
            // Fixed rate: cycles start `interval` apart; retries stop
            // before the next start.
            let next = start + self.interval;
            let n = done + 1;
            tokio::select! {
                ok = self.cycle(n, next.into_std()) => answered += ok,
                _ = stopped(stop) => {
                    tracing::info!(cycle = n, "stopping: the current cycle is abandoned");
                    break;
                }
            }
            done = n;
            self.prune_waiters();
            if cycles.is_some_and(|c| done >= c) {
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= next {
                tracing::warn!(
                    cycle = n,
                    took_ms = (now - start).as_millis() as u64,
                    interval = %humantime::format_duration(self.interval),
                    "the cycle took longer than --interval; starting the next one now"
                );
                start = now;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => start = next,
                _ = stopped(stop) => break,
            }
        }
        self.finish().await?;
        if cycles.is_some() && done > 0 && answered == 0 {
            return Err(IngestError::NoAnswer { cycles: done });
        }
        Ok(())
    }

    /// One cycle: every hotspot once, at most `concurrency` at a time.
    /// Returns how many hotspots answered.
    async fn cycle(&self, n: u64, deadline: Instant) -> usize {
        let started = Instant::now();
        let outcomes: Vec<PollOutcome> = futures::stream::iter(&self.hotspots)
            .map(|h| self.poll_hotspot(h, deadline))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let took = started.elapsed();
        counter!("weir_ingest_cycles_total").increment(1);
        histogram!("weir_ingest_cycle_duration_seconds").record(took.as_secs_f64());
        let ok = outcomes.iter().filter(|o| o.ok).count();
        let sum = |f: fn(&PollOutcome) -> usize| outcomes.iter().map(f).sum::<usize>();
        let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
        for reason in outcomes.iter().filter_map(|o| o.failure) {
            *reasons.entry(reason).or_default() += 1;
        }
        let failed_by_reason: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}:{n}")).collect();
        tracing::info!(
            cycle = n,
            hotspots = outcomes.len(),
            ok,
            failed = outcomes.len() - ok,
            failed_by_reason = %failed_by_reason.join(","),
            without_parking_data = outcomes.iter().filter(|o| o.empty).count(),
            lots = sum(|o| o.lots),
            sent = sum(|o| o.sent),
            unchanged = sum(|o| o.unchanged),
            duplicates = sum(|o| o.duplicates),
            took_ms = took.as_millis() as u64,
            "poll cycle done"
        );
        ok
    }

    /// Poll one hotspot, retrying while it is worth it and the next cycle
    /// is not due, then publish its lots or report why it failed.
    async fn poll_hotspot(&self, hotspot: &Hotspot, deadline: Instant) -> PollOutcome {
        let started = Instant::now();
        let url = request_url(&self.base_url, &self.key, &hotspot.code);
        // Jittered, so hotspots failing together (the API restarting) do
        // not retry in lockstep; no deadline: `fits_before` decides.
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            let result = match self.http.get(&url, self.timeout).await {
                Ok(body) => parse_response(&body).map_err(|e| (Failure::Response(e), body)),
                Err(e) => Err((Failure::Fetch(e), Default::default())),
            };
            let (failure, body) = match result {
                Ok(response) => break Ok(response),
                Err(failed) => failed,
            };
            if !failure.retryable() || attempt > self.retries {
                break Err((failure, body));
            }
            let Some(delay) = backoff.next_delay() else {
                break Err((failure, body));
            };
            if !fits_before(Instant::now(), delay, self.timeout, deadline) {
                break Err((failure, body));
            }
            counter!("weir_ingest_retries_total", "hotspot" => hotspot.code.clone(), "reason" => failure.reason())
                .increment(1);
            tracing::debug!(
                hotspot = %hotspot.code,
                attempt,
                reason = failure.reason(),
                error = %self.key.redact(&failure.to_string()),
                retry_in_ms = delay.as_millis() as u64,
                "request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        };
        let elapsed = started.elapsed();
        histogram!("weir_ingest_poll_latency_seconds", "hotspot" => hotspot.code.clone()).record(elapsed.as_secs_f64());
        match result {
            Ok(response) => {
                let received_ms = chrono::Utc::now().timestamp_millis();
                gauge!("weir_ingest_last_success_timestamp_seconds", "hotspot" => hotspot.code.clone())
                    .set(received_ms as f64 / 1000.0);
                let outcome = self.publish(hotspot, &response, received_ms).await;
                let kind = if outcome.empty { "empty" } else { "ok" };
                counter!("weir_ingest_polls_total", "hotspot" => hotspot.code.clone(), "outcome" => kind).increment(1);
                if outcome.empty {
                    tracing::debug!(hotspot = %hotspot.code, name = %hotspot.name, "no parking data for this hotspot");
                }
                outcome
            }
            Err((failure, body)) => {
                self.report_failure(hotspot, &failure, &body, attempt, elapsed);
                PollOutcome {
                    failure: Some(failure.reason()),
                    ..PollOutcome::default()
                }
            }
        }
    }

    fn report_failure(&self, hotspot: &Hotspot, failure: &Failure, body: &[u8], attempts: u32, elapsed: Duration) {
        let code = hotspot.code.clone();
        counter!("weir_ingest_polls_total", "hotspot" => code.clone(), "outcome" => "failed").increment(1);
        counter!("weir_ingest_poll_failures_total", "hotspot" => code.clone(), "reason" => failure.reason())
            .increment(1);
        let error = self.key.redact(&failure.to_string());
        let url = display_url(&self.base_url, &hotspot.code);
        let took_ms = elapsed.as_millis() as u64;
        match failure {
            Failure::Response(ResponseError::Api { code: api_code, .. }) => {
                counter!("weir_ingest_api_errors_total", "hotspot" => code, "code" => api_code_label(api_code).to_string())
                    .increment(1);
                let key_problem = matches!(api_code.as_str(), "INFO-100" | "INFO-300" | "INFO-400");
                if key_problem {
                    tracing::error!(hotspot = %hotspot.code, name = %hotspot.name, api_code = %api_code, attempts, %url, "{error}; retrying next cycle");
                } else if api_code_hint(api_code).is_some() {
                    tracing::warn!(hotspot = %hotspot.code, name = %hotspot.name, api_code = %api_code, attempts, %url, "{error}; retrying next cycle");
                } else {
                    tracing::warn!(hotspot = %hotspot.code, name = %hotspot.name, api_code = %api_code, attempts, %url, "{error} (undocumented result code); retrying next cycle");
                }
            }
            Failure::Response(ResponseError::Malformed(_)) => {
                let start = self.key.redact(&snippet(body));
                tracing::warn!(hotspot = %hotspot.code, name = %hotspot.name, reason = failure.reason(), attempts, took_ms, %url, body_start = %start, "hotspot poll failed: {error}; retrying next cycle");
            }
            Failure::Fetch(_) => {
                tracing::warn!(hotspot = %hotspot.code, name = %hotspot.name, reason = failure.reason(), attempts, took_ms, %url, "hotspot poll failed: {error}; retrying next cycle");
            }
        }
    }

    /// Map, deduplicate, select (`--emit changed`) and hand the lots to the
    /// producer. Delivery is awaited in the background: a slow broker does
    /// not hold up the polls.
    async fn publish(&self, hotspot: &Hotspot, response: &citydata::Response, timestamp_ms: i64) -> PollOutcome {
        let mapped = map_response(hotspot, response);
        let lots_count = mapped.lots.len();
        if mapped.duplicates > 0 {
            counter!("weir_ingest_duplicate_entries_total", "hotspot" => hotspot.code.clone())
                .increment(mapped.duplicates as u64);
        }
        if mapped.without_code > 0 || response.skipped > 0 {
            tracing::debug!(hotspot = %hotspot.code, without_code = mapped.without_code, not_objects = response.skipped, "PRK_STTS entries skipped");
        }
        let (lots, unchanged) = match self.emit {
            Emit::All => (mapped.lots, 0),
            Emit::Changed => match self.changes.lock() {
                Ok(mut changes) => changes.select(&hotspot.code, mapped.lots),
                Err(poisoned) => poisoned.into_inner().select(&hotspot.code, mapped.lots),
            },
        };
        if unchanged > 0 {
            counter!("weir_ingest_records_unchanged_total", "topic" => self.topic.clone()).increment(unchanged as u64);
        }
        let Some(producer) = &self.producer else {
            return self.write_output(hotspot, lots, timestamp_ms, lots_count, unchanged, mapped.duplicates);
        };
        let mut pending = Vec::with_capacity(lots.len());
        for lot in &lots {
            let payload = lot.to_json();
            let key = lot.parking_code();
            let mut record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(payload.as_slice())
                .timestamp(timestamp_ms);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push((key.to_string(), delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err((error, _)) => {
                        self.delivery_failed(hotspot, key, &error.to_string());
                        break;
                    }
                }
            }
        }
        let sent = pending.len();
        if !pending.is_empty() {
            let (deliveries, changes, emit) = (self.deliveries.clone(), self.changes.clone(), self.emit);
            let (topic, hotspot_code) = (self.topic.clone(), hotspot.code.clone());
            let waiter = tokio::spawn(async move {
                let mut delivered = 0u64;
                let mut failed: Vec<(String, String)> = Vec::new();
                for (key, delivery) in pending {
                    match delivery.await {
                        Ok(Ok(_)) => delivered += 1,
                        Ok(Err((e, _))) => failed.push((key, e.to_string())),
                        Err(_) => failed.push((key, "the producer went away".into())),
                    }
                }
                counter!("weir_ingest_records_published_total", "topic" => topic.clone()).increment(delivered);
                if failed.is_empty() {
                    if let Ok(mut d) = deliveries.lock() {
                        d.delivered += delivered;
                    }
                    return;
                }
                counter!("weir_ingest_delivery_failures_total", "topic" => topic.clone())
                    .increment(failed.len() as u64);
                tracing::warn!(hotspot = %hotspot_code, %topic, failed = failed.len(), first_error = %failed[0].1, "records not delivered; they are sent again at the next poll");
                if emit == Emit::Changed {
                    if let Ok(mut c) = changes.lock() {
                        for (key, _) in &failed {
                            c.forget(&hotspot_code, key);
                        }
                    }
                }
                if let Ok(mut d) = deliveries.lock() {
                    d.delivered += delivered;
                    d.failed += failed.len() as u64;
                    d.first_error.get_or_insert_with(|| failed[0].1.clone());
                }
            });
            if let Ok(mut w) = self.waiters.lock() {
                w.push(waiter);
            }
        }
        PollOutcome {
            ok: true,
            failure: None,
            empty: lots_count == 0,
            lots: lots_count,
            sent,
            unchanged,
            duplicates: mapped.duplicates,
        }
    }

    /// `--output`: write the poll's records; a write error counts as a
    /// delivery failure of every record of the poll.
    fn write_output(
        &self,
        hotspot: &Hotspot,
        lots: Vec<citydata::LotStatus>,
        timestamp_ms: i64,
        lots_count: usize,
        unchanged: usize,
        duplicates: usize,
    ) -> PollOutcome {
        let written = match &self.output {
            Some(output) => match output.lock() {
                Ok(mut out) => out.write(&self.topic, &lots, timestamp_ms).map_err(|e| e.to_string()),
                Err(_) => Err("output lock poisoned".to_string()),
            },
            None => Err("no output".to_string()),
        };
        match written {
            Ok(()) => {
                counter!("weir_ingest_records_published_total", "topic" => self.topic.clone())
                    .increment(lots.len() as u64);
                if let Ok(mut d) = self.deliveries.lock() {
                    d.delivered += lots.len() as u64;
                }
            }
            Err(error) => {
                for lot in &lots {
                    self.delivery_failed(hotspot, lot.parking_code(), &error);
                }
            }
        }
        PollOutcome {
            ok: true,
            failure: None,
            empty: lots_count == 0,
            lots: lots_count,
            sent: lots.len(),
            unchanged,
            duplicates,
        }
    }

    fn delivery_failed(&self, hotspot: &Hotspot, key: &str, error: &str) {
        counter!("weir_ingest_delivery_failures_total", "topic" => self.topic.clone()).increment(1);
        tracing::warn!(hotspot = %hotspot.code, topic = %self.topic, parking_code = key, %error, "record not produced");
        if self.emit == Emit::Changed {
            if let Ok(mut c) = self.changes.lock() {
                c.forget(&hotspot.code, key);
            }
        }
        if let Ok(mut d) = self.deliveries.lock() {
            d.failed += 1;
            d.first_error.get_or_insert_with(|| error.to_string());
        }
    }

    /// Drop the handles of delivery waiters that are done.
    fn prune_waiters(&self) {
        if let Ok(mut w) = self.waiters.lock() {
            w.retain(|h| !h.is_finished());
        }
    }

    /// Deliver what is outstanding; fail if records were lost.
    async fn finish(&self) -> Result<(), IngestError> {
        if let Some(producer) = self.producer.clone() {
            let flushed = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(FLUSH_TIMEOUT)))
                .await
                .map_err(|e| IngestError::Task(e.to_string()))?;
            if let Err(e) = flushed {
                tracing::warn!(error = %e, "not every record was delivered before the flush timeout");
            }
        }
        let waiters: Vec<JoinHandle<()>> = match self.waiters.lock() {
            Ok(mut w) => w.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for w in waiters {
            let _ = w.await;
        }
        let delivered = match self.deliveries.lock() {
            Ok(d) if d.failed > 0 => {
                return Err(IngestError::Undelivered {
                    topic: self.topic.clone(),
                    failed: d.failed,
                    first_error: d.first_error.clone().unwrap_or_default(),
                })
            }
            Ok(d) => d.delivered,
            Err(_) => 0,
        };
        tracing::info!(topic = %self.topic, delivered, "ingest stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_never_run_into_the_next_cycle() {
        let now = Instant::now();
        let s = Duration::from_secs;
        // --interval 30s, --timeout 10s: a retry after 0.5 s at 10.5 s fits,
        // a third attempt at 21 s does not.
        assert!(fits_before(
            now + Duration::from_millis(10_000),
            Duration::from_millis(500),
            s(10),
            now + s(30)
        ));
        assert!(!fits_before(now + s(21), s(1), s(10), now + s(30)));
        // A timeout longer than the interval: never retried.
        assert!(!fits_before(now + s(10), Duration::from_millis(250), s(10), now + s(5)));
    }

    #[test]
    fn failures_have_bounded_reasons_and_sensible_retries() {
        let cases = [
            (
                Failure::Fetch(FetchError::Timeout(Duration::from_secs(1))),
                "timeout",
                true,
            ),
            (Failure::Fetch(FetchError::Connect("refused".into())), "connect", true),
            (
                Failure::Fetch(FetchError::Status {
                    status: 500,
                    snippet: String::new(),
                }),
                "http_status",
                true,
            ),
            (
                Failure::Fetch(FetchError::Status {
                    status: 429,
                    snippet: String::new(),
                }),
                "http_status",
                true,
            ),
            (
                Failure::Fetch(FetchError::Status {
                    status: 404,
                    snippet: String::new(),
                }),
                "http_status",
                false,
            ),
            (Failure::Fetch(FetchError::TooLarge), "too_large", false),
            (
                Failure::Response(ResponseError::Malformed("cut short".into())),
                "malformed",
                true,
            ),
            (
                Failure::Response(ResponseError::Api {
                    code: "INFO-100".into(),
                    message: String::new(),
                }),
                "api_error",
                false,
            ),
            (
                Failure::Response(ResponseError::Api {
                    code: "ERROR-337".into(),
                    message: String::new(),
                }),
                "api_error",
                false,
            ),
            (
                Failure::Response(ResponseError::Api {
                    code: "ERROR-500".into(),
                    message: String::new(),
                }),
                "api_error",
                true,
            ),
        ];
        for (failure, reason, retry) in cases {
            assert_eq!(failure.reason(), reason, "{failure:?}");
            assert_eq!(failure.retryable(), retry, "{failure:?}");
        }
    }
}
