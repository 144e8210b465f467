//! Small shared helpers around rdkafka: default addresses, client
//! configuration and idempotent topic creation. Every command that talks to
//! the broker goes through these so the defaults stay in one place.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::support::backoff::{sleep_unless, Backoff};

mod murmur2;
pub(crate) mod settings;
pub use murmur2::partition_for;

/// Where `./dev up` starts the broker.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// How long `weir run`, `weir sink` and `weir simulate` wait at start for a
/// broker that does not answer yet (it may be starting alongside them).
pub(crate) const BROKER_WAIT: Duration = Duration::from_secs(120);

/// Errors of a group-coordinator call (offset commit, offset fetch, group
/// admin) that a retry a moment later gets past: the coordinator is moving,
/// loading or away, or the call timed out.
pub(crate) fn coordinator_busy(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::NetworkException
                | C::BrokerTransportFailure
                | C::AllBrokersDown
        )
    )
}

/// Why the brokers could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum BrokerUnreachable {
    /// They did not answer within the wait.
    #[error("Kafka at {bootstrap} did not answer a metadata request within {}s (last error: {last})", waited.as_secs())]
    Timeout {
        bootstrap: String,
        waited: Duration,
        last: KafkaError,
    },
    /// They answered but refused the client's credentials or certificate.
    #[error(transparent)]
    Security(#[from] SecurityFailure),
}

/// Block until the brokers at `bootstrap` answer a metadata request, retrying
/// with backoff for at most `wait`; says on the log that it is waiting.
/// Returns false if `stop` was set meanwhile (SIGINT/SIGTERM). An
/// authentication or TLS failure ends the wait at once: it is a setting
/// to fix, not a broker still starting.
pub(crate) fn wait_for_brokers(
    bootstrap: &str,
    wait: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<bool, BrokerUnreachable> {
    let unreachable = |last| BrokerUnreachable::Timeout {
        bootstrap: bootstrap.to_string(),
        waited: wait,
        last,
    };
    let consumer: rdkafka::consumer::BaseConsumer<SecurityWatch> = client_config(bootstrap)
        .create_with_context(SecurityWatch::default())
        .map_err(unreachable)?;
    let started = std::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    backoff.deadline_within(wait);
    loop {
        use rdkafka::consumer::Consumer;
        let result = consumer.fetch_metadata(None, Duration::from_secs(2));
        // Serves the client's error events: a failed authentication or TLS
        // handshake is reported there, not by the metadata request (which
        // just times out).
        // The failure is logged as the request fails: give its event a
        // moment to arrive.
        let _ = consumer.poll(if result.is_ok() {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        });
        if let Some(failure) = consumer.context().failure(bootstrap) {
            return Err(failure.into());
        }
        match result {
            Ok(_) => {
                if backoff.attempt() > 0 {
                    tracing::info!(bootstrap, waited = ?started.elapsed(), "Kafka answers");
                }
                return Ok(true);
            }
            Err(e) => {
                let Some(delay) = backoff.next_delay() else {
                    return Err(unreachable(e));
                };
                if backoff.attempt() == 1 {
                    tracing::warn!(bootstrap, error = %e, wait = ?wait, "Kafka does not answer yet; waiting for it");
                }
                if sleep_unless(stop, delay) {
                    return Ok(false);
                }
            }
        }
    }
}

/// A topic that should exist, with the partition count, replication factor
/// and topic configs to use when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `-1`: the broker's `default.replication.factor` (KIP-464), as Kafka
    /// Streams' `replication.factor` default.
    pub replication: i32,
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: -1,
            config: Vec::new(),
        }
    }

    pub fn with_replication(mut self, replication: i32) -> Self {
        self.replication = replication;
        self
    }

    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }
}

/// Base client configuration shared by consumers, producers and admin
/// clients: weir's defaults, then the user's settings (see [`settings`]),
/// which replace them. A client then sets what it depends on with `set`
/// (the user cannot: those keys are [`settings::protected`]) and its
/// tunable defaults with [`ClientConfigExt::set_default`].
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        // TCP_NODELAY, as the Java clients set it. librdkafka leaves Nagle's
        // algorithm on by default: a small request (a produce of a few
        // records, a commit) can then wait for the broker's delayed ACK.
        .set("socket.nagle.disable", "true");
    if let Some(user) = settings::installed() {
        user.apply(&mut cfg);
    }
    cfg
}

/// Defaults a client sets only where the user's settings did not.
pub(crate) trait ClientConfigExt {
    /// Set `key` unless it is set already (by the user's settings).
    fn set_default(&mut self, key: &str, value: impl Into<String>) -> &mut Self;
}

impl ClientConfigExt for ClientConfig {
    fn set_default(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        if self.get(key).is_none() {
            self.set(key, value);
        }
        self
    }
}

/// A client could not connect because of its security settings: the
/// broker refused its credentials, or the TLS handshake failed (an
/// untrusted certificate, a missing client certificate). librdkafka
/// retries these like any connection failure, forever; weir stops at once
/// and says why, since no retry will fix a wrong password.
#[derive(Debug, thiserror::Error)]
#[error("Kafka at {bootstrap}: {what}: {reason} (check the Kafka client settings: security.protocol, sasl.*, ssl.*)")]
pub struct SecurityFailure {
    pub bootstrap: String,
    pub what: &'static str,
    pub reason: String,
}

/// What a client context saw of security failures.
#[derive(Default)]
pub(crate) struct SecurityWatch {
    failure: std::sync::Mutex<Option<(&'static str, String)>>,
}

impl SecurityWatch {
    /// Note `error` if it is an authentication or TLS failure.
    pub(crate) fn observe(&self, error: &KafkaError, reason: &str) -> bool {
        let what = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                "authentication failed"
            }
            Some(RDKafkaErrorCode::SSL) => "TLS handshake failed",
            // The broker ends the TLS session with an alert, e.g. under
            // TLS 1.3 when it refuses the client's certificate after the
            // handshake: librdkafka reports a transport failure whose text
            // is OpenSSL's ("sslv3 alert bad certificate: SSL alert number 42").
            Some(RDKafkaErrorCode::BrokerTransportFailure) if reason.contains("SSL alert number") => {
                "the broker refused the TLS session (its alert usually means the client certificate is missing or \
                 not trusted)"
            }
            _ => return false,
        };
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert_with(|| (what, reason.to_string()));
        true
    }

    /// The first failure seen, if any.
    pub(crate) fn failure(&self, bootstrap: &str) -> Option<SecurityFailure> {
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.as_ref().map(|(what, reason)| SecurityFailure {
            bootstrap: bootstrap.to_string(),
            what,
            reason: reason.clone(),
        })
    }
}

impl rdkafka::ClientContext for SecurityWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if !self.observe(&error, reason) {
            tracing::warn!(target: "librdkafka", error = %error, "librdkafka: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for SecurityWatch {}

/// Create every topic in `topics` that does not exist yet. Existing topics
/// are left as they are (their partition count is not changed).
pub async fn ensure_topics(bootstrap: &str, topics: &[TopicSpec]) -> Result<(), KafkaError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let mut nt = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(t.replication));
            for (k, v) in &t.config {
                nt = nt.set(k, v);
            }
            nt
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).map_err(|e| {
                    tracing::error!(topic = %name, error = %e, "creating topic failed");
                    e
                })
            }
        }
    }
    Ok(())
}

/// Delete topics, ignoring ones that do not exist (used by tests).
pub async fn delete_topics(bootstrap: &str, names: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(names, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use super::*;

    /// Nothing listens on port 9 (discard) of this machine.
    const NOBODY: &str = "127.0.0.1:9";

    #[test]
    fn an_unreachable_broker_is_waited_for_then_reported() {
        let started = Instant::now();
        let err = wait_for_brokers(NOBODY, Duration::from_secs(3), &AtomicBool::new(false)).unwrap_err();
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "gave up after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(15));
        let msg = err.to_string();
        assert!(
            msg.contains("Kafka at 127.0.0.1:9 did not answer") && msg.contains("within 3s"),
            "{msg}"
        );
    }

    #[test]
    fn a_stop_request_ends_the_wait() {
        let started = Instant::now();
        let waited = wait_for_brokers(NOBODY, Duration::from_secs(60), &AtomicBool::new(true)).unwrap();
        assert!(!waited);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
