//! `weir reset`: make an application reprocess its input from scratch, as
//! Kafka Streams' application reset tool (`kafka-streams-application-reset`)
//! does:
//! - the consumer group's committed offsets on the source topics go back to
//!   the start (or to the latest offsets, or to a point in time);
//! - the internal topics (store changelogs, repartition topics) are deleted:
//!   `weir run` creates them again, empty;
//! - the local state of the application (`<state_dir>/<application_id>`) is
//!   deleted.
//!
//! Output and dead-letter topics are never touched. It refuses while the
//! group has members (an instance running anywhere) or another `weir run`
//! holds the local state directory. `--dry-run` prints the same plan and
//! changes nothing.
//!
//! The topic names come from the compiled topology
//! ([`Topology::internal_topics`], [`Topology::external_source_topics`]),
//! the same code `weir run` creates them with; the state directory from
//! [`crate::state::app_dir`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::client_config;
use crate::support::backoff::Backoff;
use crate::topology::Topology;

/// Options of `weir reset`.
#[derive(clap::Args, Debug, Clone)]
pub struct ResetArgs {
    /// Topology file of the application to reset (its application_id is
    /// the consumer group and the prefix of its internal topics).
    pub file: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BOOTSTRAP", default_value = crate::kafka::DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    #[command(flatten)]
    pub kafka: crate::kafka::settings::KafkaArgs,
    /// Directory of the local state stores (the one `weir run` used): its
    /// `<application_id>` sub-directory is deleted.
    #[arg(long, env = "WEIR_STATE_DIR", default_value = crate::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Source topics back to their earliest offsets (the default).
    #[arg(long, group = "position")]
    pub to_earliest: bool,
    /// Source topics to their latest offsets: skip everything there is.
    #[arg(long, group = "position")]
    pub to_latest: bool,
    /// Source topics to the first record at or after this time (RFC 3339,
    /// e.g. 2026-12-01T00:00:00Z or 2026-12-01T09:00:00+09:00); partitions
    /// with nothing that recent go to their latest offset.
    #[arg(long, group = "position", value_name = "TIME", value_parser = parse_datetime)]
    pub to_datetime: Option<DateTime<Utc>>,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_datetime(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e}); write e.g. 2026-12-01T00:00:00Z"))
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Unreachable(#[from] crate::kafka::BrokerUnreachable),
    #[error(
        "consumer group {group} has {} active member(s) ({state}): stop every `weir run` of this application \
         first, with SIGUSR1 to leave the group at once (an instance stopped with SIGTERM, a static member, \
         or killed stays a member until its session times out, --session-timeout, 45 s by default)",
        .members.len()
    )]
    ActiveMembers {
        group: String,
        state: String,
        members: Vec<String>,
    },
    #[error(transparent)]
    State(#[from] crate::runtime::RuntimeError),
    #[error("state directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("internal topics still listed {}s after their deletion: {topics:?}", TOPIC_DELETE_WAIT.as_secs())]
    NotDeleted { topics: Vec<String> },
}

/// Where the source topics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    Earliest,
    Latest,
    Time(DateTime<Utc>),
}

impl std::fmt::Display for To {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            To::Earliest => f.write_str("the earliest offsets"),
            To::Latest => f.write_str("the latest offsets"),
            To::Time(t) => write!(f, "the first offsets at or after {}", t.to_rfc3339()),
        }
    }
}

/// One source partition's committed offset, now and after the reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetChange {
    pub topic: String,
    pub partition: i32,
    /// None: nothing committed.
    pub committed: Option<i64>,
    pub to: i64,
}

/// What a reset does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub group: String,
    pub to: To,
    pub offsets: Vec<OffsetChange>,
    /// Source topics that do not exist (nothing to reset).
    pub missing_sources: Vec<String>,
    /// Internal topics that exist, to delete.
    pub delete_topics: Vec<String>,
    /// The application's state directory, if it exists.
    pub state: Option<PathBuf>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "reset the committed offsets of consumer group {} to {}:",
            self.group, self.to
        );
        for o in &self.offsets {
            let from = o.committed.map_or_else(|| "none".to_string(), |c| c.to_string());
            let _ = writeln!(s, "  {} {}: {from} -> {}", o.topic, o.partition, o.to);
        }
        for t in &self.missing_sources {
            let _ = writeln!(s, "  {t}: topic does not exist, nothing to reset");
        }
        let _ = writeln!(s, "delete internal topics:");
        if self.delete_topics.is_empty() {
            let _ = writeln!(s, "  (none exist)");
        }
        for t in &self.delete_topics {
            let _ = writeln!(s, "  {t}");
        }
        match &self.state {
            Some(dir) => {
                let _ = writeln!(s, "delete local state: {}", dir.display());
            }
            None => {
                let _ = writeln!(s, "delete local state: (none)");
            }
        }
        f.write_str(&s)
    }
}

/// How long metadata calls are given.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long deleted topics may stay listed in the metadata.
const TOPIC_DELETE_WAIT: Duration = Duration::from_secs(60);

/// `weir reset`: print the plan, then carry it out unless `--dry-run`.
/// Blocking (call it from `spawn_blocking`); `rt` runs the admin calls.
pub fn run(topo: &Topology, args: &ResetArgs, rt: &tokio::runtime::Handle) -> Result<Plan, ResetError> {
    let to = match (args.to_latest, args.to_datetime) {
        (true, _) => To::Latest,
        (_, Some(t)) => To::Time(t),
        _ => To::Earliest,
    };
    let group = topo.application_id.as_str();
    // A local `weir run` on this state directory (it may not have joined
    // the group yet): its lock, held until this reset is done.
    let app_dir = crate::state::app_dir(&args.state_dir, group);
    let _lock = match app_dir.is_dir() {
        true => Some(crate::runtime::lock_state_dir(&app_dir)?),
        false => None,
    };
    let never = std::sync::atomic::AtomicBool::new(false);
    crate::kafka::wait_for_brokers(&args.bootstrap, Duration::from_secs(30), &never)?;
    let consumer: BaseConsumer = client_config(&args.bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // The end offsets as Kafka Streams' tool sees them (its consumer's
        // default isolation).
        .set("isolation.level", "read_uncommitted")
        .create()?;
    refuse_active_group(&consumer, group)?;
    let plan = plan(topo, &consumer, &args.bootstrap, to, app_dir)?;
    print!("{plan}");
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(plan);
    }
    execute(&plan, &consumer, &args.bootstrap, rt)?;
    println!("done: the next `weir run` of {group} reprocesses from these offsets with empty state");
    Ok(plan)
}

/// `f`, retried on transient coordinator errors
/// ([`crate::kafka::coordinator_busy`]) for up to 30 s.
fn retried<T>(what: &str, mut f: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(3));
    backoff.deadline_within(Duration::from_secs(30));
    loop {
        match f() {
            Err(e) if crate::kafka::coordinator_busy(&e) => {
                let Some(delay) = backoff.next_delay() else {
                    return Err(e);
                };
                tracing::info!(error = %e, retry_in = ?delay, "{what}: retrying");
                std::thread::sleep(delay);
            }
            other => return other,
        }
    }
}

/// Fail if the group has members: a running instance would go on from its
/// own positions and commit over the reset.
fn refuse_active_group(consumer: &BaseConsumer, group: &str) -> Result<(), ResetError> {
    let list = retried("describing the consumer group", || {
        consumer.fetch_group_list(Some(group), TIMEOUT)
    })?;
    let Some(g) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(());
    };
    let members: Vec<String> = g.members().iter().map(|m| m.id().to_string()).collect();
    // "Empty": committed offsets, nobody in it; "Dead" (or no state): no
    // such group.
    if members.is_empty() && matches!(g.state(), "Empty" | "Dead" | "") {
        return Ok(());
    }
    Err(ResetError::ActiveMembers {
        group: group.to_string(),
        state: g.state().to_string(),
        members,
    })
}

/// Partition count of every listed topic (`weir run`'s own reading of the
/// metadata), retried on transient errors.
fn partitions(bootstrap: &str) -> Result<HashMap<String, i32>, KafkaError> {
    retried("reading the metadata", || crate::runtime::topic_partitions(bootstrap))
}

fn plan(
    topo: &Topology,
    consumer: &BaseConsumer,
    bootstrap: &str,
    to: To,
    app_dir: PathBuf,
) -> Result<Plan, ResetError> {
    let group = topo.application_id.clone();
    let existing = partitions(bootstrap)?;
    let mut missing_sources = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for topic in topo.external_source_topics() {
        match existing.get(&topic) {
            Some(&n) => {
                for p in 0..n {
                    tpl.add_partition(&topic, p);
                }
            }
            None => missing_sources.push(topic),
        }
    }
    let committed = match tpl.count() {
        0 => TopicPartitionList::new(),
        _ => retried("reading the committed offsets", || {
            consumer.committed_offsets(tpl.clone(), TIMEOUT)
        })?,
    };
    // By time: the first offset whose timestamp is at or after it.
    let by_time = match to {
        To::Time(t) if tpl.count() > 0 => {
            let mut q = TopicPartitionList::new();
            for e in tpl.elements() {
                q.add_partition_offset(e.topic(), e.partition(), Offset::Offset(t.timestamp_millis()))?;
            }
            Some(retried("looking offsets up by time", || {
                consumer.offsets_for_times(q.clone(), TIMEOUT)
            })?)
        }
        _ => None,
    };
    let mut offsets = Vec::new();
    for e in tpl.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let (low, high) = retried("reading the watermarks", || {
            consumer.fetch_watermarks(topic, partition, TIMEOUT)
        })?;
        let target = match to {
            To::Earliest => low,
            To::Latest => high,
            To::Time(_) => match by_time
                .as_ref()
                .and_then(|l| l.find_partition(topic, partition))
                .map(|e| e.offset())
            {
                // Nothing at or after the time: the end.
                Some(Offset::Offset(o)) if o >= 0 => o.clamp(low, high),
                _ => high,
            },
        };
        let current = match committed.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        offsets.push(OffsetChange {
            topic: topic.to_string(),
            partition,
            committed: current,
            to: target,
        });
    }
    let delete_topics = topo
        .internal_topics()
        .into_iter()
        .filter(|t| existing.contains_key(t))
        .collect();
    Ok(Plan {
        group,
        to,
        offsets,
        missing_sources,
        delete_topics,
        state: app_dir.is_dir().then_some(app_dir),
    })
}

/// Offsets first: a group that got a member since the check refuses the
/// commit, and nothing else is done.
fn execute(
    plan: &Plan,
    consumer: &BaseConsumer,
    bootstrap: &str,
    rt: &tokio::runtime::Handle,
) -> Result<(), ResetError> {
    if !plan.offsets.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for o in &plan.offsets {
            tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.to))?;
        }
        // Committed outside the group's generations, as a consumer that is
        // not subscribed: the broker takes it only while the group is empty.
        retried("committing the offsets", || consumer.commit(&tpl, CommitMode::Sync))?;
        tracing::info!(group = %plan.group, partitions = plan.offsets.len(), "offsets reset");
    }
    if !plan.delete_topics.is_empty() {
        let names: Vec<&str> = plan.delete_topics.iter().map(String::as_str).collect();
        rt.block_on(crate::kafka::delete_topics(bootstrap, &names))?;
        // Deletion completes in the background: wait until the topics are
        // gone, so that a `weir run` started next creates them afresh
        // instead of finding them half deleted.
        let started = Instant::now();
        loop {
            let listed = partitions(bootstrap)?;
            let left: Vec<String> = plan
                .delete_topics
                .iter()
                .filter(|t| listed.contains_key(*t))
                .cloned()
                .collect();
            if left.is_empty() {
                break;
            }
            if started.elapsed() > TOPIC_DELETE_WAIT {
                return Err(ResetError::NotDeleted { topics: left });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tracing::info!(topics = ?plan.delete_topics, "internal topics deleted");
    }
    if let Some(dir) = &plan.state {
        std::fs::remove_dir_all(dir).map_err(|source| ResetError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        tracing::info!(dir = %dir.display(), "local state deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_a_zone() {
        assert_eq!(
            parse_datetime("2026-12-01T09:00:00+09:00").unwrap(),
            parse_datetime("2026-12-01T00:00:00Z").unwrap()
        );
        let e = parse_datetime("2026-12-01 00:00").unwrap_err();
        assert!(e.contains("2026-12-01T00:00:00Z"), "{e}");
    }

    #[test]
    fn the_plan_lists_offsets_topics_and_state() {
        let plan = Plan {
            group: "app".into(),
            to: To::Earliest,
            offsets: vec![OffsetChange {
                topic: "in".into(),
                partition: 0,
                committed: Some(42),
                to: 0,
            }],
            missing_sources: vec!["gone".into()],
            delete_topics: vec!["app-s-changelog".into()],
            state: Some(PathBuf::from("state/app")),
        };
        assert_eq!(
            plan.to_string(),
            "reset the committed offsets of consumer group app to the earliest offsets:\n  in 0: 42 -> 0\n  gone: topic \
             does not exist, nothing to reset\ndelete internal topics:\n  app-s-changelog\ndelete local state: state/app\n"
        );
    }
}
