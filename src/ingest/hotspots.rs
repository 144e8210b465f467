//! `weir ingest hotspots`: the hotspot list (code → name, and whatever
//! else a list file gives per hotspot) into a compacted topic, keyed by
//! code: the reference table the parking records' `REGION_CODE` can be
//! joined against (a global table, see docs/topology.md). Idempotent: the
//! same list loaded again leaves the compacted topic with the same rows.

use std::path::PathBuf;

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{citydata, IngestError};
use crate::kafka::{client_config, ensure_topics, ClientConfigExt, TopicSpec};

/// Options of `weir ingest hotspots`.
#[derive(clap::Args, Debug, Clone)]
pub struct HotspotsArgs {
    /// A JSON array of {"code": "POI…", "name": "…", …} objects (every field
    /// of an object goes into its row) [default: the 30 hotspots of
    /// data/seoul_hotspots.json, built in].
    #[arg(long, value_name = "FILE")]
    pub hotspots: Option<PathBuf>,
    /// The compacted topic to write (created with `cleanup.policy=compact`
    /// if missing).
    #[arg(long, default_value = "seoul_hotspots")]
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BOOTSTRAP", default_value = crate::kafka::DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    #[command(flatten)]
    pub kafka: crate::kafka::settings::KafkaArgs,
}

pub(super) async fn run(args: HotspotsArgs) -> Result<(), IngestError> {
    let (name, text) = match &args.hotspots {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|source| {
                IngestError::Hotspots(citydata::HotspotsError::Read {
                    path: path.display().to_string(),
                    source,
                })
            })?,
        ),
        None => (
            "built-in hotspot list".to_string(),
            citydata::DEFAULT_HOTSPOTS_JSON.to_string(),
        ),
    };
    // Checked as `ingest citydata` checks a list (codes present, distinct).
    citydata::parse_hotspots(&name, &text)?;
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&text).map_err(|e| citydata::HotspotsError::Format {
            path: name.clone(),
            error: e.to_string(),
        })?;
    let kafka = |action: &str| {
        let action = action.to_string();
        move |error| IngestError::Kafka { action, error }
    };
    ensure_topics(
        &args.bootstrap,
        &[TopicSpec::new(&args.topic, args.partitions).with_config("cleanup.policy", "compact")],
    )
    .await
    .map_err(kafka(&format!("creating topic {}", args.topic)))?;
    let producer: FutureProducer = client_config(&args.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set_default("client.id", "weir-ingest-hotspots")
        .set("partitioner", "murmur2_random")
        .create()
        .map_err(kafka("creating the producer"))?;
    for row in &rows {
        let code = row.get("code").and_then(|c| c.as_str()).unwrap_or_default().trim();
        let value = serde_json::Value::Object(row.clone()).to_string();
        producer
            .send(
                FutureRecord::to(&args.topic).key(code).payload(&value),
                std::time::Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| IngestError::Kafka {
                action: format!("writing hotspot {code} to {}", args.topic),
                error,
            })?;
    }
    tracing::info!(topic = %args.topic, hotspots = rows.len(), "hotspots loaded");
    eprintln!("{} hotspots written to {}", rows.len(), args.topic);
    Ok(())
}
