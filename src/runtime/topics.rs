//! Topic preparation: the internal and output topics a topology needs,
//! created before the first poll, and the purge of consumed repartition
//! records.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::RuntimeError;
use crate::kafka::{client_config, ensure_topics, TopicSpec};
use crate::support::backoff::Backoff;
use crate::topology::{NodeKind, StoreKind, Topology};

/// Deletes the records of repartition topics that this instance's tasks
/// have processed and committed (each repartition partition has one reader:
/// its task), as Kafka Streams does (`repartition.purge.interval.ms`):
/// repartition topics are created with `retention.ms=-1`, so without this
/// they would grow forever.
pub(super) struct Purge {
    admin: Arc<AdminClient<DefaultClientContext>>,
    rt: tokio::runtime::Handle,
    topics: HashSet<String>,
    interval: Duration,
    last: Instant,
}

impl Purge {
    /// After a commit: once per `interval`, delete what is below the
    /// committed position of every repartition partition this instance reads.
    /// Runs in the background; a failure is logged and retried next time.
    pub(super) fn after_commit(&mut self, positions: &super::TpMap<i64>, app: &str) {
        if self.last.elapsed() < self.interval {
            return;
        }
        self.last = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in positions {
            if self.topics.contains(topic) && *offset > 0 {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let admin = self.admin.clone();
        let app = app.to_string();
        self.rt.spawn(async move {
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            match admin.delete_records(&tpl, &opts).await {
                Ok(done) => {
                    for e in done.elements() {
                        match e.error() {
                            Ok(()) => {
                                counter!("weir_repartition_purges_total", "topology" => app.clone()).increment(1);
                                tracing::debug!(topic = e.topic(), partition = e.partition(), low_watermark = ?e.offset(), "repartition records purged")
                            }
                            Err(err) => tracing::warn!(topic = e.topic(), partition = e.partition(), error = %err, "purging repartition records failed"),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "purging repartition records failed"),
            }
        });
    }
}

impl Purge {
    pub(super) fn new(
        topo: &Topology,
        admin: AdminClient<DefaultClientContext>,
        rt: tokio::runtime::Handle,
        interval: Duration,
    ) -> Purge {
        Purge {
            admin: Arc::new(admin),
            rt,
            topics: topo
                .nodes
                .iter()
                .filter_map(|n| match &n.kind {
                    NodeKind::Source(s) if s.internal => Some(s.topic.clone()),
                    _ => None,
                })
                .collect(),
            interval,
            last: Instant::now(),
        }
    }
}

/// Create internal and output topics; returns the partition count of every
/// topic the topology reads or writes.
/// How long topic preparation is retried on broker errors (right after
/// a topic is created its leader may not be known yet:
/// `NotLeaderForPartition`, `LeaderNotAvailable`).
const PREPARE_RETRY: Duration = Duration::from_secs(120);

/// [`prepare_topics_once`], retried on Kafka errors for [`PREPARE_RETRY`].
pub(super) async fn prepare_topics(
    topo: &Topology,
    bootstrap: &str,
    replication: i32,
) -> Result<HashMap<String, i32>, RuntimeError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    backoff.deadline_within(PREPARE_RETRY);
    loop {
        match prepare_topics_once(topo, bootstrap, replication).await {
            Err(RuntimeError::Kafka(e)) => {
                let Some(delay) = backoff.next_delay() else {
                    return Err(RuntimeError::Kafka(e));
                };
                tracing::warn!(error = %e, retry_in = ?delay, "preparing topics failed; retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// Create internal and output topics; returns the partition count of every
/// topic the topology reads or writes. `replication` -1 is the broker's
/// default; 3 or more also sets `min.insync.replicas=2` on internal topics,
/// so an acknowledged (committed) write survives one broker.
async fn prepare_topics_once(
    topo: &Topology,
    bootstrap: &str,
    replication: i32,
) -> Result<HashMap<String, i32>, RuntimeError> {
    let existing = topic_partitions(bootstrap)?;
    if let Some(missing) = topo
        .external_source_topics()
        .into_iter()
        .find(|t| !existing.contains_key(t))
    {
        return Err(RuntimeError::MissingSource(missing));
    }
    // Task counts per sub-topology, repartition topics' counts (a join's
    // stream takes its table's: see `topology/partitions.rs`).
    let plan = topo.partition_plan(&existing);
    let mut parts: HashMap<String, i32> = plan.topics.clone();
    let sub_parts = plan.subtopologies;
    let mut specs = Vec::new();
    for sub in &topo.subtopologies {
        for &id in &sub.nodes {
            if let NodeKind::ToTopic(s) = &topo.nodes[id].kind {
                let p = match s.internal {
                    true => plan.topics.get(&s.topic).copied().unwrap_or(sub_parts[sub.id]),
                    false => s.partitions.unwrap_or(sub_parts[sub.id]),
                };
                let spec = if s.internal {
                    TopicSpec::new(&s.topic, p)
                        .with_config("cleanup.policy", "delete")
                        .with_config("retention.ms", "-1")
                } else {
                    TopicSpec::new(&s.topic, p)
                };
                specs.push(spec);
                parts.entry(s.topic.clone()).or_insert(p);
            }
        }
    }
    // Changelog and dead-letter records are stamped with the host's clock
    // (retention then counts from when they were written), and a broker
    // refuses a CreateTime timestamp more than
    // `message.timestamp.after.max.ms` (1 h by default since Kafka 4) ahead
    // of its own clock: a host clock that far ahead would fail every commit
    // and its replay. These topics are created with `LogAppendTime`
    // instead: the broker stamps each record with its own clock and checks
    // no producer timestamp, which is the time they were meant to carry
    // anyway. (Clamping the stamp instead would need the broker's clock,
    // which weir does not know; raising `message.timestamp.after.max.ms`
    // would fail topic creation on brokers before 3.6, which do not know
    // it.) Repartition and output records keep their CreateTime: it is the
    // event time, bounded by the sources' `max_future`. Topics that exist
    // already keep their configuration.
    const BROKER_CLOCK: (&str, &str) = ("message.timestamp.type", "LogAppendTime");
    for store in &topo.stores {
        let n = sub_parts[store.subtopology];
        let spec = match (store.kind, store.retention_ms) {
            (StoreKind::Window, Some(r)) => TopicSpec::new(&store.changelog, n)
                .with_config("cleanup.policy", "compact,delete")
                .with_config("retention.ms", &r.to_string()),
            _ => TopicSpec::new(&store.changelog, n).with_config("cleanup.policy", "compact"),
        };
        specs.push(spec.with_config(BROKER_CLOCK.0, BROKER_CLOCK.1));
    }
    if let Some(dlq) = &topo.dead_letter {
        specs.push(
            TopicSpec::new(dlq, sub_parts.iter().copied().max().unwrap_or(1))
                .with_config(BROKER_CLOCK.0, BROKER_CLOCK.1),
        );
    }
    let internal: HashSet<String> = topo.internal_topics().into_iter().collect();
    let specs: Vec<TopicSpec> = specs
        .into_iter()
        .map(|spec| {
            let is_internal = internal.contains(&spec.name);
            let spec = spec.with_replication(replication);
            if replication >= 3 && is_internal {
                spec.with_config("min.insync.replicas", "2")
            } else {
                spec
            }
        })
        .collect();
    ensure_topics(bootstrap, &specs).await?;
    // Existing topics keep their partition counts: read them back, and only
    // go on once every topic is in the metadata with a leader for each
    // partition. A created topic can be missing from a broker's metadata
    // for a while (a fresh or busy broker): a consumer that subscribes then
    // leaves it out of the group's assignment until its next metadata
    // refresh, 5 minutes later, and the sub-topology reading it stands
    // still meanwhile (seen in CI: a repartition topic never read).
    let leaders = partition_leaders(bootstrap)?;
    let waiting = not_ready(specs.iter().map(|s| s.name.as_str()), &leaders);
    if !waiting.is_empty() {
        tracing::info!(topics = ?waiting, "waiting for created topics to have leaders");
        return Err(RuntimeError::Kafka(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::LeaderNotAvailable,
        )));
    }
    for spec in &specs {
        if let Some(l) = leaders.get(&spec.name) {
            parts.insert(spec.name.clone(), l.len() as i32);
        }
    }
    topo.check_copartitioned(&parts)
        .map_err(RuntimeError::NotCopartitioned)?;
    Ok(parts)
}

/// The leader of every partition of every topic (-1: none), in partition
/// order; topics the broker reports with an error are left out.
fn partition_leaders(bootstrap: &str) -> Result<HashMap<String, Vec<i32>>, KafkaError> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| {
            let mut parts: Vec<_> = t.partitions().iter().map(|p| (p.id(), p.leader())).collect();
            parts.sort_unstable();
            (t.name().to_string(), parts.into_iter().map(|(_, l)| l).collect())
        })
        .collect())
}

/// Of `names`, the topics that are not usable yet: missing, without
/// partitions, or with a partition that has no leader.
fn not_ready<'a>(names: impl IntoIterator<Item = &'a str>, leaders: &HashMap<String, Vec<i32>>) -> Vec<&'a str> {
    names
        .into_iter()
        .filter(|name| {
            leaders
                .get(*name)
                .is_none_or(|l| l.is_empty() || l.iter().any(|&leader| leader < 0))
        })
        .collect()
}

/// Partition count of every topic that has partitions.
pub(crate) fn topic_partitions(bootstrap: &str) -> Result<HashMap<String, i32>, KafkaError> {
    Ok(partition_leaders(bootstrap)?
        .into_iter()
        .filter(|(_, leaders)| !leaders.is_empty())
        .map(|(name, leaders)| (name, leaders.len() as i32))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_ready_once_listed_with_a_leader_for_every_partition() {
        let leaders: HashMap<String, Vec<i32>> = [
            ("ready".to_string(), vec![1, 2, 1]),
            ("leaderless".to_string(), vec![1, -1, 1]),
            ("no-partitions".to_string(), vec![]),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            not_ready(["ready", "leaderless", "no-partitions", "missing"], &leaders),
            ["leaderless", "no-partitions", "missing"]
        );
        assert!(not_ready(["ready"], &leaders).is_empty());
    }
}
