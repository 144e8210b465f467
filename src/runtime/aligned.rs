//! Catching up in event-time order.
//!
//! librdkafka hands out whole fetched chunks of one partition before the
//! next, so while a backlog is read one input partition runs far ahead of
//! the others. For a sub-topology that writes a repartition topic that is
//! fatal: the records of all its tasks meet in the repartition topic, and
//! the downstream window's stream time jumps past the grace before the
//! other partitions' older records arrive (they are dropped as late). Kafka
//! Streams orders records only within a task; weir orders them across every
//! task of such a sub-topology on the instance.
//!
//! Each partition of an aligned sub-topology gets its own librdkafka queue
//! (`split_partition_queue`); the next record is the one with the smallest
//! timestamp among the partitions' heads. A partition with nothing buffered
//! is waited for, unless it is caught up (the fetcher reported its end:
//! `enable.partition.eof`) or it has been empty for `max_idle` (like Kafka Streams'
//! `max.task.idle.ms`): one idle partition cannot stall the others for
//! long. librdkafka keeps fetching only up to its queue limits, so what a
//! partition buffers here is one record. A sub-topology reading several
//! topics (a join with a table step) is aligned too: its table's updates
//! and its stream's records go in event-time order, as in Kafka Streams.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};

use crate::topology::{NodeKind, Topology};

/// A record taken from librdkafka, held until its turn.
pub(super) enum Held {
    /// From the partition's own queue: librdkafka's buffer, not copied (a
    /// copy per record, `detach`, was ~4% of `weir run`'s CPU).
    ///
    /// `'static` is a lie the aligner keeps true: rust-rdkafka ties a
    /// message to the queue it came from so that it cannot outlive the
    /// client, but librdkafka keeps a message valid until it is destroyed,
    /// as long as the client handle exists. Held messages live only in the
    /// aligner, which holds the consumer (`Aligner::client`, dropped after
    /// every held message) and never hands them out of the engine thread
    /// (`BorrowedMessage` is not `Send`).
    Queued(BorrowedMessage<'static>),
    /// From the main queue: a copy. An aligned partition's records no
    /// longer reach the main queue (see [`detach_queue`]); kept for a fetch
    /// that librdkafka forwarded anyway, whose order the task manager's
    /// offset check then guards.
    Copied(OwnedMessage),
}

impl Held {
    fn timestamp_ms(&self) -> i64 {
        match self {
            Held::Queued(m) => m.timestamp(),
            Held::Copied(m) => m.timestamp(),
        }
        .to_millis()
        .unwrap_or(0)
    }
}

/// Stop librdkafka from forwarding a partition's fetched records to the
/// consumer's main queue: they stay in the partition's own queue, which
/// [`Aligner::reassign`] then hands out. Call it in the rebalance callback
/// *before* the partition is assigned.
///
/// Why then: librdkafka forwards a partition's fetch queue to the main
/// queue when it starts fetching (`rd_kafka_toppar_op_fetch_start`),
/// unless the application has set the queue's forwarding itself
/// (`RD_KAFKA_Q_F_FWD_APP`, set by `rd_kafka_queue_forward` and never
/// cleared). Split after the assign, as weir did, the first fetch could
/// already sit in the main queue: records the main queue delivered later
/// were processed after newer ones from the partition's queue, the
/// position jumped past records not yet processed, and a commit in
/// between committed it (a kill then lost them). Split before the assign,
/// no record of the partition ever reaches the main queue.
///
/// Returns whether librdkafka knew the partition (it creates it if not).
pub fn detach_queue<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> bool {
    use rdkafka::bindings as rd;
    let Ok(name) = std::ffi::CString::new(topic) else {
        return false;
    };
    let client = consumer.client().native_ptr();
    // SAFETY: `client` is a live consumer handle; the queue handle is
    // destroyed here and the forwarding flag stays on the partition's
    // fetch queue (owned by librdkafka).
    unsafe {
        let queue = rd::rd_kafka_queue_get_partition(client, name.as_ptr(), partition);
        if queue.is_null() {
            return false;
        }
        rd::rd_kafka_queue_forward(queue, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
    }
    true
}

struct Partition<C: ConsumerContext + 'static> {
    sub: usize,
    /// Records taken from the queue (or from the main queue before the
    /// partition was split), oldest first. Declared before `queue`: dropped
    /// before it.
    buffered: VecDeque<Held>,
    queue: Option<PartitionQueue<C>>,
    empty_since: Option<Instant>,
    /// The fetcher reported the end of the partition and nothing came since.
    caught_up: bool,
}

impl<C: ConsumerContext + 'static> Partition<C> {
    fn new(sub: usize) -> Self {
        Partition {
            sub,
            queue: None,
            buffered: VecDeque::new(),
            empty_since: None,
            caught_up: false,
        }
    }
}

pub(super) struct Aligner<C: ConsumerContext + 'static> {
    /// Sub-topologies whose tasks feed a repartition topic.
    aligned: HashSet<usize>,
    topo: Arc<Topology>,
    partitions: HashMap<(String, i32), Partition<C>>,
    max_idle: Duration,
    app: String,
    /// Scratch of `next`, per sub-topology: the oldest and newest head.
    heads: Vec<Option<(i64, i64)>>,
    /// Scratch of `next`, per sub-topology: must wait.
    blocked: Vec<bool>,
    /// When the skew gauges were last set (`None`: never, set them at the
    /// first chance).
    skew_set: Option<Instant>,
    /// The consumer the partition queues belong to. Last: dropped after
    /// every held message (see [`Held`]).
    client: Option<Arc<BaseConsumer<C>>>,
}

/// How often `weir_partition_skew_seconds` is set.
const SKEW_INTERVAL: Duration = Duration::from_secs(1);

impl<C: ConsumerContext + 'static> Aligner<C> {
    /// Sub-topologies whose tasks feed a repartition topic, and those that
    /// read several topics (a join with a table step: the table's updates
    /// and the stream's records are handed over in event-time order, as
    /// Kafka Streams orders a task's input partitions, so a backlog is
    /// joined with the rows the table had at each record's time).
    fn aligned_subs(topo: &Topology) -> HashSet<usize> {
        topo.subtopologies
            .iter()
            .filter(|sub| {
                sub.source_topics.len() > 1
                    || sub
                        .nodes
                        .iter()
                        .any(|&id| matches!(&topo.nodes[id].kind, NodeKind::ToTopic(s) if s.internal))
            })
            .map(|sub| sub.id)
            .collect()
    }

    /// The source topics of aligned sub-topologies: their partitions get
    /// their own queue before they are assigned ([`detach_queue`]).
    pub(super) fn aligned_topics(topo: &Topology) -> HashSet<String> {
        let subs = Self::aligned_subs(topo);
        topo.source_topics()
            .into_iter()
            .filter(|t| topo.source_for(t).is_some_and(|(sub, _)| subs.contains(&sub)))
            .collect()
    }

    pub(super) fn new(topo: Arc<Topology>, max_idle: Duration) -> Self {
        let aligned = Self::aligned_subs(&topo);
        Aligner {
            aligned,
            app: topo.application_id.clone(),
            topo,
            partitions: HashMap::new(),
            max_idle,
            heads: Vec::new(),
            blocked: Vec::new(),
            skew_set: None,
            client: None,
        }
    }

    fn aligned_sub(&self, topic: &str) -> Option<usize> {
        self.topo
            .source_for(topic)
            .map(|(sub, _)| sub)
            .filter(|sub| self.aligned.contains(sub))
    }

    /// Take a record the main queue delivered: `None` if it belongs to an
    /// aligned partition (buffered here until its turn), else the record.
    pub(super) fn offer<'a>(&mut self, msg: BorrowedMessage<'a>) -> Option<BorrowedMessage<'a>> {
        let Some(sub) = self.aligned_sub(msg.topic()) else {
            return Some(msg);
        };
        let key = (msg.topic().to_string(), msg.partition());
        let owned = msg.detach();
        self.partitions
            .entry(key)
            .or_insert_with(|| Partition::new(sub))
            .buffered
            .push_back(Held::Copied(owned));
        None
    }

    /// Match the assignment: give every newly assigned aligned partition its
    /// own queue; forget revoked ones. Call after every rebalance (an
    /// assignment deactivates earlier partition queues, so all are split
    /// again).
    pub(super) fn reassign(&mut self, consumer: &Arc<BaseConsumer<C>>) {
        self.client = Some(consumer.clone());
        let assigned: HashSet<(String, i32)> = match consumer.assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the assignment failed");
                return;
            }
        };
        self.partitions.retain(|k, _| assigned.contains(k));
        for (topic, partition) in assigned {
            let Some(sub) = self.aligned_sub(&topic) else { continue };
            let queue = consumer.split_partition_queue(&topic, partition);
            let p = self
                .partitions
                .entry((topic, partition))
                .or_insert_with(|| Partition::new(sub));
            p.queue = queue;
            p.caught_up = false;
        }
    }

    /// Forget revoked partitions and what they buffered: if one comes back
    /// its records are fetched again from the committed offset.
    pub(super) fn forget(&mut self, revoked: &[(String, i32)]) {
        for tp in revoked {
            self.partitions.remove(tp);
        }
    }

    /// Drop what a partition buffered (it was sought back: the records come
    /// again); its queue stays.
    pub(super) fn drop_buffered(&mut self, tp: &(String, i32)) {
        if let Some(p) = self.partitions.get_mut(tp) {
            p.buffered.clear();
            p.empty_since = None;
            p.caught_up = false;
        }
    }

    /// Forget every buffered record (after the consumer was rewound).
    pub(super) fn clear(&mut self) {
        for p in self.partitions.values_mut() {
            p.buffered.clear();
            p.empty_since = None;
        }
    }

    /// The next record to process, if one may go now. `restoring(sub,
    /// partition)`: that task is still restoring its stores; its
    /// sub-topology waits for it (handing out the others' records meanwhile
    /// would let them run ahead of it, and the window drop its records as
    /// late once it starts). `now`: the batch's clock reading.
    ///
    /// Called once per record: it allocates nothing, and the skew gauges
    /// are set at most once per `SKEW_INTERVAL`.
    pub(super) fn next(&mut self, now: Instant, restoring: &dyn Fn(usize, i32) -> bool) -> Option<Held> {
        for ((topic, partition), p) in self.partitions.iter_mut() {
            if p.buffered.is_empty() {
                if let Some(q) = &p.queue {
                    match q.poll(Duration::ZERO) {
                        // SAFETY: see `Held`: the consumer outlives it.
                        Some(Ok(m)) => p.buffered.push_back(Held::Queued(unsafe {
                            std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(m)
                        })),
                        // The fetcher reached the end of the partition
                        // (`enable.partition.eof`): nothing to wait for.
                        Some(Err(KafkaError::PartitionEOF(_))) => p.caught_up = true,
                        Some(Err(e)) => tracing::warn!(topic, partition, error = %e, "consumer error"),
                        None => {}
                    }
                }
            }
            if p.buffered.is_empty() {
                p.empty_since.get_or_insert(now);
            } else {
                p.empty_since = None;
                p.caught_up = false;
            }
        }
        // Per aligned sub-topology: ready when every partition has a record,
        // is caught up or has waited long enough.
        let subs = self.topo.subtopologies.len();
        self.heads.clear();
        self.heads.resize(subs, None);
        self.blocked.clear();
        self.blocked.resize(subs, false);
        for ((_, partition), p) in &self.partitions {
            if restoring(p.sub, *partition) {
                self.blocked[p.sub] = true;
            }
            match p.buffered.front() {
                Some(m) => {
                    let ts = m.timestamp_ms();
                    let e = self.heads[p.sub].get_or_insert((ts, ts));
                    e.0 = e.0.min(ts);
                    e.1 = e.1.max(ts);
                }
                None => {
                    let waited = p
                        .empty_since
                        .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
                    if !p.caught_up && waited < self.max_idle {
                        self.blocked[p.sub] = true;
                    }
                }
            }
        }
        let due = self
            .skew_set
            .is_none_or(|at| now.saturating_duration_since(at) >= SKEW_INTERVAL);
        if due && self.heads.iter().any(Option::is_some) {
            self.skew_set = Some(now);
            for (sub, head) in self.heads.iter().enumerate() {
                if let Some((lo, hi)) = head {
                    gauge!("weir_partition_skew_seconds", "topology" => self.app.clone(), "subtopology" => sub.to_string())
                        .set((hi - lo) as f64 / 1000.0);
                }
            }
        }
        // The oldest head among the ready sub-topologies.
        let mut pick: Option<(&mut Partition<C>, i64)> = None;
        for p in self.partitions.values_mut() {
            if self.blocked[p.sub] {
                continue;
            }
            if let Some(m) = p.buffered.front() {
                let ts = m.timestamp_ms();
                if pick.as_ref().is_none_or(|(_, b)| ts < *b) {
                    pick = Some((p, ts));
                }
            }
        }
        pick?.0.buffered.pop_front()
    }

    /// Partitions with records taken from librdkafka but not processed yet:
    /// the consumer's position is ahead of what was processed there.
    pub(super) fn held(&self) -> HashSet<(String, i32)> {
        self.partitions
            .iter()
            .filter(|(_, p)| !p.buffered.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether any aligned partition is assigned.
    pub(super) fn active(&self) -> bool {
        !self.partitions.is_empty()
    }
}
