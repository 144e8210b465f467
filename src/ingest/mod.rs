//! `weir ingest`: real feeds into Kafka.
//!
//! `weir ingest hotspots` loads the hotspot list into a compacted topic
//! (a reference table, `hotspots`).
//!
//! `weir ingest citydata` polls Seoul's real-time citydata API for a list of
//! hotspots and publishes every parking lot of every answer to
//! `parking_status`, in the message format the parking topology reads (the
//! simulator's format, keyed by `PARKING_CODE`, Kafka timestamp = when the
//! answer arrived).
//!
//! - [`citydata`]: hotspot lists, URLs, response parsing, the field mapping
//!   and per-poll deduplication (pure);
//! - [`changes`]: `--emit changed` (pure);
//! - `http`: the HTTP client (deadline, body cap, errors without the URL);
//! - `poller`: cycles, bounded concurrency, retries with backoff and
//!   jitter, the producer, metrics and logs.

pub(crate) mod changes;
pub(crate) mod citydata;
mod hotspots;
mod http;
mod poller;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use http::BaseUrlError;

/// `weir ingest <feed>`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum IngestCommand {
    /// Poll Seoul's real-time citydata API (parking) into a topic.
    Citydata(CitydataArgs),
    /// Load the hotspot list (code → name, …) into a compacted topic: a
    /// reference table for joins.
    Hotspots(hotspots::HotspotsArgs),
}

/// What `--emit` publishes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Every lot of every poll (the original pipeline's feed: each poll is a
    /// sample of the hourly average).
    All,
    /// Only lots whose occupancy, LAST_UPDATE, capacity or real-time flag
    /// changed since the previous poll.
    Changed,
}

/// Options of `weir ingest citydata`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Each cycle requests {base-url}/{KEY}/json/citydata/1/5/{AREA_CD} for every hotspot \
(at most --concurrency at a time) and publishes one message per parking lot of \
CITYDATA.PRK_STTS. A hotspot that fails (timeout, connection, HTTP error, malformed \
body, an API error result) is retried with backoff within the cycle while time \
allows, logged with the reason, and polled again next cycle; the others go on.

The key is never logged and never part of a metric. Prefer the environment \
variable to --api-key: command lines are visible to other users of the machine.

Examples:
  WEIR_CITYDATA_KEY=... weir ingest citydata
  WEIR_CITYDATA_KEY=... weir ingest citydata --emit changed --metrics-addr 127.0.0.1:9465
  weir ingest citydata --hotspots my-hotspots.json --interval 1m --cycles 1
  weir ingest citydata --cycles 1 --output poll.jsonl     # no Kafka: try the key")]
pub struct CitydataArgs {
    /// API key from data.seoul.go.kr (required).
    #[arg(long, env = "WEIR_CITYDATA_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Hotspots to poll: a JSON array of {"code": "POI…", "name": "…"}
    /// [default: the 30 hotspots of data/seoul_hotspots.json, built in].
    #[arg(long, value_name = "FILE")]
    pub hotspots: Option<PathBuf>,
    /// Time from the start of one cycle to the start of the next.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub interval: Duration,
    /// Topic to publish to.
    #[arg(long, default_value = "parking_status")]
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Hotspots requested at the same time.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// The API's address.
    #[arg(long, value_name = "URL", default_value = citydata::DEFAULT_BASE_URL)]
    pub base_url: String,
    /// Deadline of one request (connect, answer and body).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Extra attempts for a failing hotspot within a cycle (never past the
    /// start of the next cycle).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
    /// Publish every lot of every poll, or only the lots that changed.
    #[arg(long, value_enum, default_value_t = Emit::All)]
    pub emit: Emit,
    /// Stop after N cycles [default: run until SIGINT/SIGTERM].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub cycles: Option<u64>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BOOTSTRAP", default_value = crate::kafka::DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    #[command(flatten)]
    pub kafka: crate::kafka::settings::KafkaArgs,
    /// Write the records to this file (`-` for stdout) in `weir test`'s
    /// input format instead of producing them: no Kafka needed (to try a
    /// key, or record real polls as test input). Partitions as Kafka's
    /// default partitioner would place them over --partitions.
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: Option<PathBuf>,
    /// Address of the Prometheus /metrics listener.
    #[arg(long, env = "WEIR_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Emit {
    pub fn as_str(self) -> &'static str {
        match self {
            Emit::All => "all",
            Emit::Changed => "changed",
        }
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = crate::support::duration::parse_arg(s)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// Errors of `weir ingest citydata`. None of them contains the key.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "no API key: pass --api-key or set WEIR_CITYDATA_KEY (get a key at https://data.seoul.go.kr, \
         \"인증키 신청\")"
    )]
    MissingKey,
    #[error(transparent)]
    BaseUrl(#[from] BaseUrlError),
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Hotspots(#[from] citydata::HotspotsError),
    #[error("metrics exporter: {0}")]
    Metrics(#[from] crate::metrics::InstallError),
    #[error(transparent)]
    Unreachable(#[from] crate::kafka::BrokerUnreachable),
    #[error("{0}")]
    Settings(#[from] crate::kafka::settings::SettingsError),
    /// The Kafka error is part of the message: rdkafka's errors repeat their
    /// own source.
    #[error("kafka: {action}: {error}")]
    Kafka {
        action: String,
        error: rdkafka::error::KafkaError,
    },
    #[error("cannot write {path}: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{failed} record(s) could not be delivered to topic {topic}; first error: {first_error}")]
    Undelivered {
        topic: String,
        failed: u64,
        first_error: String,
    },
    #[error("no hotspot answered in {cycles} cycle(s); see the log for each hotspot's reason")]
    NoAnswer { cycles: u64 },
    #[error("ingest task failed: {0}")]
    Task(String),
}

/// Run `weir ingest`.
pub async fn run(command: IngestCommand) -> Result<(), IngestError> {
    match command {
        IngestCommand::Citydata(args) => {
            args.kafka.install(Vec::new())?;
            poller::run(args).await
        }
        IngestCommand::Hotspots(args) => {
            args.kafka.install(Vec::new())?;
            hotspots::run(args).await
        }
    }
}
