//! `weir simulate`: a realistic Seoul parking feed.
//!
//! Layers:
//! - `catalog`: the simulated city, built from real data compiled into the
//!   binary (30 hotspots, one captured poll of their lots);
//! - `generator`: a pure, seeded iterator of `SimRecord`s (occupancy
//!   `curve`, noise, bad and late records), whose values `payload` writes
//!   as the city API does;
//! - `drive`: options, pacing, SIGINT/SIGTERM and the summary line;
//!   `destination`: the Kafka producer (explicit murmur2 partition,
//!   idempotent, acks=all) or the `--output` file (lines from `output`).
//!
//! Same seed and options (including an explicit `--start`) give the same
//! records, byte for byte, whether they go to Kafka or to a file, as long as the
//! generator's own clock is used (`--rate 0`, the default without
//! `--speedup`).

pub(crate) mod catalog;
pub(crate) mod curve;
mod destination;
mod drive;
pub(crate) mod generator;
pub(crate) mod output;
pub(crate) mod parse;
pub(crate) mod payload;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::error::KafkaError;

pub(crate) use generator::{RecordKind, SimRecord};
pub(crate) use output::jsonl_line;
pub use payload::FIELDS;

/// Options of `weir simulate`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Event time: with --rate 0 (the default unless --speedup is given) records are \
generated as fast as possible on a simulated clock that starts at --start and \
polls every lot once per --poll-interval; the output is then fully determined \
by --seed and the other options. With a rate, the simulated clock runs \
--speedup times faster than wall time from --start. Event times have whole-second \
precision; the Kafka timestamp equals LAST_UPDATE read as KST. Kafka rejects \
timestamps more than 1 h ahead of the broker's clock (message.timestamp.after.max.ms), \
hence the default --start of fast bounded runs.

Examples:
  weir simulate --count 100000 --seed 42 --start '2025-03-20 00:00:00'
  weir simulate --speedup 1440 --duration 1m      # a simulated day per minute
  weir simulate --speedup 1                       # a live feed (~2 records/s)
  weir simulate --count 5000 --seed 7 --bad-ratio 0.02 --late-ratio 0.01 --output feed.jsonl")]
pub struct SimulateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BOOTSTRAP", default_value = crate::kafka::DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    #[command(flatten)]
    pub kafka: crate::kafka::settings::KafkaArgs,
    /// Records per second of wall time ("100" or "100/s"); 0 = as fast as
    /// possible on the deterministic simulated clock. Default: 0, or with
    /// --speedup the rate that polls every lot once per --poll-interval of
    /// simulated time.
    #[arg(long, value_name = "N", value_parser = parse::parse_rate)]
    pub rate: Option<f64>,
    /// Stop after N records [default: no limit].
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this much wall time, e.g. 30s, 5m, 1h30m [default: no limit].
    #[arg(long, value_name = "DURATION", value_parser = crate::support::duration::parse_arg)]
    pub duration: Option<Duration>,
    /// Event time of the first record: RFC 3339, or "YYYY-MM-DD HH:MM:SS" in
    /// KST [default: now, or for a bounded run whose clock outruns the wall
    /// clock (--rate 0, --speedup > 1), so early that it ends about now].
    #[arg(long, value_name = "TIME", value_parser = parse::parse_start)]
    pub start: Option<DateTime<Utc>>,
    /// Simulated time runs X times faster than wall time (1440 = a day per
    /// minute). Applies when a rate is in effect [default: 1].
    #[arg(long, value_name = "X", value_parser = parse::parse_speedup)]
    pub speedup: Option<f64>,
    /// Simulated time between two polls of the same lot.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::support::duration::parse_arg)]
    pub poll_interval: Duration,
    /// Seed of every random choice; same seed and options, same records
    /// [default: random, printed in the summary].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of malformed records (not JSON, invalid UTF-8, "CAPACITY":"abc",
    /// a missing field), 0–1.
    #[arg(long, value_name = "RATIO", default_value_t = 0.0, value_parser = parse::parse_ratio)]
    pub bad_ratio: f64,
    /// Share of records stamped 1–3 hours behind stream time, 0–1.
    #[arg(long, value_name = "RATIO", default_value_t = 0.0, value_parser = parse::parse_ratio)]
    pub late_ratio: f64,
    /// Topic to produce to.
    #[arg(long, default_value = "parking_status")]
    pub topic: String,
    /// Partitions of the topic if it has to be created (an existing topic
    /// keeps its own count, which then places the keys).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Write the records to this file (`-` for stdout) in `weir test`'s input
    /// format instead of producing them. Values that are not valid UTF-8
    /// are written as "value_base64" (standard base64) instead of "value".
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: Option<PathBuf>,
}

/// Errors of `weir simulate`.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("built-in parking catalog is broken: {0}")]
    Catalog(String),
    #[error("cannot write {path}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The Kafka error is part of the message rather than the `source`:
    /// rdkafka's errors repeat their own source, which would print twice.
    #[error("kafka: {action}: {error}")]
    Kafka { action: String, error: KafkaError },
    #[error("{failed} record(s) could not be delivered to topic {topic}; first error: {first_error}")]
    Delivery {
        topic: String,
        failed: u64,
        first_error: String,
    },
    #[error("simulate task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Security(#[from] crate::kafka::SecurityFailure),
    #[error("{0}")]
    Settings(#[from] crate::kafka::settings::SettingsError),
}

/// Run `weir simulate`: generate records and produce them to Kafka, or write
/// them to `--output`. Prints a summary line on stderr.
pub async fn run(args: SimulateArgs) -> Result<(), SimulateError> {
    args.kafka.install(Vec::new())?;
    drive::run(args).await
}
