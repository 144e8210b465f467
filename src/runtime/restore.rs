//! Restoring a store from its changelog topic before a task processes.

use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::RuntimeError;
use crate::kafka::client_config;
use crate::state::rocks::RocksBackend;
use crate::state::{Backend, Change};

/// Bring `backend` up to the end of `changelog`/`partition`, starting at the
/// checkpointed offset (or from scratch, clearing the store, when there is
/// no checkpoint or it is ahead of the topic). Returns the next offset.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    bootstrap: &str,
    app: &str,
    task: &str,
    store: &str,
    changelog: &str,
    partition: i32,
    checkpointed: Option<i64>,
    backend: &mut RocksBackend,
) -> Result<i64, RuntimeError> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", format!("{app}-restore"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()?;
    let (low, high) = consumer.fetch_watermarks(changelog, partition, Duration::from_secs(10))?;
    let start = match checkpointed {
        Some(off) if off >= low && off <= high => off,
        other => {
            if other.is_some() {
                tracing::warn!(task, store, checkpoint = ?other, low, high, "checkpoint outside the changelog: restoring from scratch");
            }
            backend.clear()?;
            low
        }
    };
    if start >= high {
        tracing::info!(task, store, offset = start, "store up to date, nothing to restore");
        return Ok(high);
    }
    let total = high - start;
    tracing::info!(
        task,
        store,
        changelog,
        partition,
        from = start,
        to = high,
        "restoring store from changelog"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let began = Instant::now();
    let mut batch: Vec<Change> = Vec::new();
    let mut restored = 0i64;
    let mut last_log = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                batch.push((m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec)));
                restored += 1;
                if batch.len() >= 10_000 {
                    backend.write(&batch)?;
                    batch.clear();
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Compaction and transaction markers leave offset gaps: the
                // position, not the last record, says when we are done.
                let pos = consumer.position()?;
                let done = pos
                    .elements()
                    .iter()
                    .any(|e| matches!(e.offset(), Offset::Offset(o) if o >= high));
                if done {
                    break;
                }
            }
        }
        if last_log.elapsed() > Duration::from_secs(2) {
            tracing::info!(task, store, restored, total, "restoring");
            last_log = Instant::now();
        }
        gauge!("weir_restore_remaining_records", "store" => store.to_string(), "task" => task.to_string())
            .set((total - restored).max(0) as f64);
    }
    backend.write(&batch)?;
    counter!("weir_restore_records_total", "store" => store.to_string(), "task" => task.to_string())
        .increment(restored as u64);
    gauge!("weir_restore_remaining_records", "store" => store.to_string(), "task" => task.to_string()).set(0.0);
    tracing::info!(
        task,
        store,
        records = restored,
        elapsed_ms = began.elapsed().as_millis() as u64,
        "restore done"
    );
    Ok(high)
}
