//! Small shared helpers around rdkafka: default addresses, client
//! configuration and idempotent topic creation. Every command that talks to
//! the broker goes through these so the defaults stay in one place.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

mod murmur2;
pub use murmur2::{murmur2, partition_for as murmur2_partition};

/// Where `./dev up` starts the broker.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// A topic that should exist, with the partition count and topic configs to
/// use when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            config: Vec::new(),
        }
    }

    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }
}

/// Base client configuration shared by consumers, producers and admin clients.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap);
    cfg
}

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
            let mut nt = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1));
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
