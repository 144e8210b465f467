//! Global tables under `weir run`: before the instance joins its group,
//! each global table's topic is read from the beginning up to the end it
//! had when the instance started (so a record never meets a table missing
//! a row the topic already held: Kafka Streams' global-store bootstrap),
//! then a thread of its own follows the topics while the instance runs.
//!
//! One consumer without a group (`assign`, nothing committed), reading
//! committed records only. A record whose value is not a JSON object is
//! skipped, logged and counted (`weir_global_table_invalid_records_total`);
//! a tombstone deletes its key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::timeouts::CALL_TIMEOUT;
use super::RuntimeError;
use crate::kafka::client_config;
use crate::state::global::GlobalTables;
use crate::topology::Topology;

/// How long a poll of the follower waits.
const POLL: Duration = Duration::from_millis(200);

/// Read every global table of `topo` to the end its topic has now, then
/// follow the topics on a thread until `shutdown`. `Ok(None)` when
/// `shutdown` came first.
pub(super) fn start(
    topo: &Topology,
    bootstrap: &str,
    shutdown: &Arc<AtomicBool>,
) -> Result<Option<Arc<GlobalTables>>, RuntimeError> {
    let tables = Arc::new(GlobalTables::new(topo.global_tables.len()));
    if topo.global_tables.is_empty() {
        return Ok(Some(tables));
    }
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", format!("{}-global", topo.application_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    // (topic, partition) → the end offset to reach before processing.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let by_topic: HashMap<String, usize> = topo
        .global_tables
        .iter()
        .enumerate()
        .map(|(i, g)| (g.topic.clone(), i))
        .collect();
    for g in &topo.global_tables {
        let md = consumer.fetch_metadata(Some(&g.topic), CALL_TIMEOUT)?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == g.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(RuntimeError::MissingSource(g.topic.clone()));
        }
        for p in partitions {
            assignment.add_partition_offset(&g.topic, p, Offset::Beginning)?;
            let (_, high) = consumer.fetch_watermarks(&g.topic, p, CALL_TIMEOUT)?;
            if high > 0 {
                ends.insert((g.topic.clone(), p), high);
            }
        }
    }
    consumer.assign(&assignment)?;
    let app = topo.application_id.clone();
    let started = Instant::now();
    let mut read = 0u64;
    while !ends.is_empty() {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(m) = consumer.poll(POLL) {
            let m = m?;
            apply(&tables, &by_topic, &app, m.topic(), m.key(), m.payload());
            read += 1;
        }
        // Positions, not record offsets: transaction markers take offsets
        // no record has.
        let positions = consumer.position()?;
        ends.retain(
            |(topic, p), end| match positions.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(at)) => at < *end,
                _ => true,
            },
        );
    }
    for (i, g) in topo.global_tables.iter().enumerate() {
        tracing::info!(table = %g.name, topic = %g.topic, rows = tables.rows(i), "global table loaded");
        gauge!("weir_global_table_rows", "topology" => app.clone(), "table" => g.name.clone())
            .set(tables.rows(i) as f64);
    }
    tracing::info!(
        records = read,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "global tables ready"
    );
    let follow = tables.clone();
    let names: Vec<String> = topo.global_tables.iter().map(|g| g.name.clone()).collect();
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("weir-global".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                match consumer.poll(POLL) {
                    Some(Ok(m)) => {
                        apply(&follow, &by_topic, &app, m.topic(), m.key(), m.payload());
                        if let Some(&i) = by_topic.get(m.topic()) {
                            gauge!("weir_global_table_rows", "topology" => app.clone(), "table" => names[i].clone())
                                .set(follow.rows(i) as f64);
                        }
                    }
                    // librdkafka retries; the tables keep the rows they have.
                    Some(Err(e)) => tracing::warn!(error = %e, "reading a global table"),
                    None => {}
                }
            }
        })
        .map_err(RuntimeError::Thread)?;
    Ok(Some(tables))
}

fn apply(
    tables: &GlobalTables,
    by_topic: &HashMap<String, usize>,
    app: &str,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some(&i) = by_topic.get(topic) else { return };
    let Some(key) = key else {
        tracing::warn!(topic, "global table record without a key skipped");
        counter!("weir_global_table_invalid_records_total", "topology" => app.to_string(), "topic" => topic.to_string())
            .increment(1);
        return;
    };
    if let Err(reason) = tables.apply(i, key, value) {
        tracing::warn!(topic, key = %String::from_utf8_lossy(key), reason, "global table record skipped");
        counter!("weir_global_table_invalid_records_total", "topology" => app.to_string(), "topic" => topic.to_string())
            .increment(1);
    }
}
