//! `weir sink`: loads Kafka topics into PostgreSQL tables, exactly once.
//!
//! A sink file (`docs/sink.md`) maps each topic to a table: key columns,
//! column ← field mappings with types, `upsert` or `insert`. Rows and the
//! consumed offsets are committed in one Postgres transaction and the
//! consumer always starts from the offsets stored there, so after any
//! crash or restart every record is applied exactly once.
//!
//! The file, as in `topology/`:
//! - `spec`: the YAML format (serde types with positions);
//! - `check`: its validation into `config`, the checked types (every
//!   problem with line:col).
//!
//! Postgres:
//! - `mapping` and `row`: JSON record → typed row, and the in-batch
//!   deduplication by key (pure);
//! - `sql`: SQL text and quoting (pure);
//! - `schema`: DDL and checking the tables at start;
//! - `writer`: batch writes with offsets in one transaction; `error`
//!   classifies what Postgres reports.
//!
//! Kafka:
//! - `task`: the consumer loop, `batch` collects records, `context` the
//!   rebalance callback (positions from Postgres), `dead_letter` the
//!   dead-letter producer and its header names.

mod batch;
mod check;
mod config;
mod context;
mod dead_letter;
mod error;
mod mapping;
mod row;
mod schema;
mod spec;
mod sql;
mod task;
mod tls;
mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use check::is_sink_file;
pub use config::SinkConfig;
pub use error::WriteError;
pub use row::Value;
pub use writer::{OffsetUpdate, TableRows, Writer};

use crate::support::backoff::{sleep_unless_async, Backoff};
use crate::support::diag::Diagnostics;

/// Pauses between retries: from 100 ms, doubling, at most 5 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a shutdown waits for an unreachable Postgres or dead-letter
/// topic before giving up on the last batch (nothing is lost: its offsets
/// were not stored).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The sink's retry pacing.
fn retry_backoff() -> Backoff {
    Backoff::new(FIRST_BACKOFF, MAX_BACKOFF)
}

/// Where `./dev up` starts Postgres.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://weir:weir@127.0.0.1:5433/weir";

/// Options of `weir sink`.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Sink configuration file.
    pub file: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BOOTSTRAP", default_value = crate::kafka::DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    #[command(flatten)]
    pub kafka: crate::kafka::settings::KafkaArgs,
    /// PostgreSQL connection URL (default: the `./dev up` database). It
    /// may hold a password: prefer WEIR_PG_URL (a command line is visible
    /// in `ps`); `--help` never shows its value.
    #[arg(long, env = "WEIR_PG_URL", hide_env_values = true)]
    pub postgres: Option<String>,
    /// Log Postgres' detail of a rejected row (it quotes the row's values,
    /// e.g. `Key (seq)=(5) already exists`); without it logs show only
    /// the message and code. Dead letters carry the detail either way.
    #[arg(long)]
    pub log_row_values: bool,
    /// Address serving Prometheus /metrics, /healthz and /readyz.
    #[arg(long, env = "WEIR_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Consumer group id (default: `group` from the file, else
    /// `weir-sink-<name>`).
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Config(Diagnostics),
    // Causes are part of each message (not `source`), so `{:#}` does not
    // print them twice.
    #[error("Postgres: {0}")]
    Postgres(WriteError),
    #[error("Kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    #[error(transparent)]
    Unreachable(#[from] crate::kafka::BrokerUnreachable),
    #[error("{0}")]
    Settings(#[from] crate::kafka::settings::SettingsError),
    #[error("metrics exporter: {0}")]
    Metrics(crate::metrics::InstallError),
    #[error("{0}")]
    Shutdown(String),
    /// Kafka refuses a dead letter even without its value.
    #[error("dead-letter topic: {0}")]
    DeadLetter(String),
    #[error("sink task failed: {0}")]
    Join(tokio::task::JoinError),
}

impl From<WriteError> for SinkError {
    fn from(e: WriteError) -> Self {
        SinkError::Postgres(e)
    }
}

impl From<rdkafka::error::KafkaError> for SinkError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        SinkError::Kafka(e)
    }
}

impl From<crate::metrics::InstallError> for SinkError {
    fn from(e: crate::metrics::InstallError) -> Self {
        SinkError::Metrics(e)
    }
}

impl From<tokio::task::JoinError> for SinkError {
    fn from(e: tokio::task::JoinError) -> Self {
        SinkError::Join(e)
    }
}

/// Check a sink file for `weir validate`: every problem with file:line:col.
pub fn validate_file(path: &Path) -> Result<(), Diagnostics> {
    SinkConfig::load(path).map(|_| ())
}

/// Run `weir sink` until SIGINT/SIGTERM: the current batch is written and
/// committed, then it returns.
pub async fn run(args: SinkArgs) -> Result<(), SinkError> {
    let shutdown = crate::shutdown::on_signal();
    let mut cfg = SinkConfig::load(&args.file).map_err(SinkError::Config)?;
    error::set_log_row_values(args.log_row_values);
    if let Some(g) = &args.group {
        cfg.group = g.clone();
    }
    args.kafka
        .install(crate::kafka::settings::from_file(&args.file, &cfg.kafka))?;
    // `consumer:` values may refer to secrets too.
    for (key, value) in &mut cfg.consumer {
        *value = crate::kafka::settings::resolve(value, &|name| std::env::var(name).ok()).map_err(|reason| {
            crate::kafka::settings::SettingsError(vec![format!(
                "{}: consumer property `{key}` {reason}",
                args.file.display()
            )])
        })?;
    }
    if let Some(addr) = args.metrics_addr {
        crate::metrics::install(addr)?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics, health on /healthz and /readyz");
    }
    crate::health::global().set_role(crate::health::Role::Sink);

    let (bootstrap, stop) = (args.bootstrap.clone(), shutdown.clone());
    let ready = tokio::task::spawn_blocking(move || {
        crate::kafka::wait_for_brokers(&bootstrap, crate::kafka::BROKER_WAIT, &stop)
    })
    .await
    .map_err(SinkError::Join)??;
    if !ready {
        return Ok(());
    }
    crate::kafka::ensure_topics(
        &args.bootstrap,
        &[crate::kafka::TopicSpec::new(cfg.dead_letter.clone(), 1)],
    )
    .await?;

    let url = args
        .postgres
        .clone()
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string());
    let owner = instance_id();
    let mut backoff = retry_backoff();
    let writer = loop {
        match Writer::start(&url, &cfg, &owner).await {
            Ok(w) => break w,
            Err(WriteError::Retryable { context, cause }) => {
                metrics::counter!("weir_sink_retries_total", "sink" => cfg.name.clone()).increment(1);
                crate::health::global().beat();
                let delay = backoff.next_delay().unwrap_or(MAX_BACKOFF);
                tracing::warn!(sink = %cfg.name, retry_in = ?delay, "{context}: {cause}; retrying");
                if sleep_unless_async(&shutdown, delay).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    tracing::info!(sink = %cfg.name, owner = %owner, tables = cfg.tables.len(), "Postgres tables checked");
    crate::health::global().set_postgres(true);

    let handle = tokio::runtime::Handle::current();
    let bootstrap = args.bootstrap.clone();
    tokio::task::spawn_blocking(move || task::SinkTask::new(cfg, &bootstrap, writer, handle, shutdown)?.run()).await?
}

/// Identifies this process in the offsets table's `owner` column.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}:{}:{nanos:08x}", std::process::id())
}
