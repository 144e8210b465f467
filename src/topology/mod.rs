//! Topology files: the YAML format (`spec`), expressions (`expr`, with
//! the CEL functions in `functions` and a direct evaluator in `direct`),
//! diagnostics with file positions (`diag`), compilation into the
//! processor graph defined here (`compile`) and `describe` output.
//!
//! Compilation resolves step inputs, inserts repartition topics where a
//! window or table groups by something other than the record key (as Kafka
//! Streams does for `groupBy`), splits the graph into sub-topologies at
//! those topics and names every internal topic and store from the file, so
//! names stay stable when steps are added.

mod compile;
pub(crate) mod describe;
mod direct;
pub(crate) mod expr;
pub(crate) mod functions;
mod partitions;
pub(crate) mod spec;

use std::path::Path;
use std::time::Duration;

use compile::Compiler;

use chrono_tz::Tz;

pub use crate::support::diag::{Diagnostic, Diagnostics};
pub(crate) use expr::Expr;
pub(crate) use spec::{EmitSpec, Guarantee, JoinHow, LateSpec, TableEmitSpec, ValueFormat};

/// Largest record value weir processes; bigger ones go to the dead-letter
/// topic. Below the producer's `message.max.bytes` (1,000,000) with room to
/// spare, so what a record turns into (a table's changelog and output
/// record, a repartition record) still fits: a record the producer refuses
/// inside a commit would fail that commit on every replay.
pub(crate) const MAX_RECORD_BYTES: usize = 900 * 1024;

/// A checked, compiled topology.
#[derive(Debug)]
pub struct Topology {
    pub application_id: String,
    pub guarantee: Guarantee,
    pub commit_interval: Duration,
    pub dead_letter: Option<String>,
    pub time_zone: Tz,
    pub(crate) nodes: Vec<Node>,
    pub(crate) subtopologies: Vec<SubTopology>,
    pub stores: Vec<StoreDef>,
    /// Read in full by every instance before it processes (see
    /// `runtime::global`), looked up by join steps.
    pub global_tables: Vec<GlobalTableDef>,
    /// The file's `kafka:` client settings, checked but not yet resolved.
    pub kafka: Vec<crate::kafka::settings::FileSetting>,
}

pub(crate) type NodeId = usize;

#[derive(Debug)]
pub(crate) struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub children: Vec<NodeId>,
    pub parents: Vec<NodeId>,
    pub subtopology: usize,
}

#[derive(Debug)]
pub(crate) enum NodeKind {
    Source(SourceNode),
    Filter(Expr),
    Map(MapNode),
    Window(WindowNode),
    Table(TableNode),
    /// A lookup in a global table or in a table step's store.
    Join(JoinNode),
    /// The aggregate of a table's rows by group, fed by a [`Regroup`]
    /// through a repartition topic.
    TableAggregate(TableAggregateNode),
    /// A step with only `to`: forwards records unchanged.
    Pass,
    ToTopic(ToTopic),
}

#[derive(Debug)]
pub(crate) struct SourceNode {
    pub topic: String,
    pub value: ValueFormat,
    pub key: ValueFormat,
    pub event_time: EventTime,
    /// Reads a repartition topic written by this topology.
    pub internal: bool,
    /// JSON values: the only top-level fields the topology reads, sorted
    /// (`None`: all). See `compile/project.rs`.
    pub project: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub(crate) enum EventTime {
    Kafka,
    Field {
        field: String,
        format: Option<String>,
        tz: Tz,
        /// A record whose event time is further ahead of the wall clock
        /// than this is dead-lettered (see `processor::decode`).
        max_future_ms: i64,
    },
}

/// Default `max_future` of a field event time: a Kafka 4 broker rejects a
/// record timestamp more than `message.timestamp.after.max.ms` (1 h by
/// default) ahead of its clock, and a record's event time becomes the
/// timestamp of its repartition and output records.
pub(crate) const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(3600);

/// Most windows one record may fall in (hopping `size / advance`): each is
/// a store read and write per record, and `size: 1d, advance: 1ms` would be
/// 86 million.
pub(crate) const MAX_WINDOWS_PER_RECORD: u64 = 10_000;

#[derive(Debug)]
pub(crate) struct MapNode {
    pub set: Vec<(std::sync::Arc<String>, Expr)>,
    pub drop: Vec<String>,
    pub keep: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggKind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
}

#[derive(Debug)]
pub(crate) struct Aggregate {
    pub name: String,
    pub kind: AggKind,
    /// None for `count()`.
    pub arg: Option<Expr>,
}

#[derive(Debug)]
pub(crate) struct WindowNode {
    /// Output names of the group key parts, in order.
    pub group_names: Vec<String>,
    /// True when the group key is the record key itself (no repartition):
    /// the key is then one part, used as is.
    pub group_is_record_key: bool,
    pub size_ms: i64,
    pub advance_ms: i64,
    pub grace_ms: i64,
    /// Offset of window boundaries from the epoch (time zone alignment).
    pub offset_ms: i64,
    pub close_idle_after: Option<Duration>,
    pub emit: EmitSpec,
    pub late: LateSpec,
    pub aggregates: Vec<Aggregate>,
    pub store: usize,
}

#[derive(Debug)]
pub(crate) struct TableNode {
    pub newest_by: Option<Expr>,
    pub emit: TableEmitSpec,
    pub store: usize,
    /// `ttl` in ms: a key whose last update is this far behind stream time
    /// is removed (see `processor::table`).
    pub ttl_ms: Option<i64>,
    /// The store keeps each key's value too, and forwarded records carry
    /// the value they replace (`Record::old`): set when a table_aggregate
    /// reads the table, so it can subtract what a row contributed.
    pub keep_values: bool,
    /// The store keeps each key's whole value (`queryable: true`), for
    /// interactive queries (see `query`).
    pub queryable: bool,
}

#[derive(Debug)]
pub(crate) struct JoinNode {
    pub side: JoinSide,
    /// For a global table: the key to look up. For a table step: the
    /// stream's key (`key`, or the expression the stream was repartitioned
    /// by, which its key then is).
    pub key: Expr,
    /// A record without a row goes on (fields null) instead of dropped.
    pub left: bool,
    /// (output field, field of the row's value).
    pub fields: Vec<(std::sync::Arc<String>, String)>,
}

/// What a join looks records up in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JoinSide {
    /// Index into [`Topology::global_tables`].
    Global(usize),
    /// A `table` step in the join's sub-topology: its node and store.
    Table { node: NodeId, store: usize },
}

/// A global table: a compacted topic every instance reads in full.
#[derive(Debug, Clone)]
pub struct GlobalTableDef {
    pub name: String,
    pub topic: String,
}

#[derive(Debug)]
pub(crate) struct TableAggregateNode {
    /// Output names of the group key parts, in order.
    pub group_names: Vec<String>,
    /// Only count, sum and avg (retractable); their arguments are
    /// evaluated by the [`Regroup`] before the repartition topic.
    pub aggregates: Vec<Aggregate>,
    /// Per aggregate: whether it has an argument (`count(x)` counts
    /// non-null `x`, `count()` rows).
    pub has_arg: Vec<bool>,
    pub emit: TableEmitSpec,
    pub store: usize,
}

/// The writing half of a table_aggregate's repartition: a table row's
/// change becomes a subtraction from its old group and an addition to its
/// new one (one record when the group is the same: Kafka Streams'
/// KIP-904), keyed by the group, carrying each aggregate's argument.
#[derive(Debug)]
pub(crate) struct Regroup {
    pub group: Vec<Expr>,
    /// Per aggregate: its kind and argument (`None` for `count()`).
    pub args: Vec<(AggKind, Option<Expr>)>,
}

/// How a [`ToTopic`] node computes the record key.
#[derive(Debug)]
pub(crate) enum ToTopicKey {
    /// The incoming record's key.
    Record,
    /// One expression, as text.
    Expr(Expr),
    /// Group key parts, written as a JSON array (repartition for windows).
    Group(Vec<Expr>),
    /// A table row's change for a table_aggregate (key and value).
    Regroup(Regroup),
}

/// A node writing records to a Kafka topic (a step's `to:`, or the
/// writing half of a repartition). Kafka Streams calls it a sink node and
/// `describe()` prints it as `Sink:` (kept, for compatibility); in the code
/// it is "to topic", because in weir "sink" is `weir sink`, the Postgres
/// loader.
#[derive(Debug)]
pub(crate) struct ToTopic {
    pub topic: String,
    pub key: ToTopicKey,
    pub fields: Option<Vec<String>>,
    pub partitions: Option<i32>,
    /// Writes a repartition topic read back by this topology.
    pub internal: bool,
}

#[derive(Debug)]
pub(crate) struct SubTopology {
    pub id: usize,
    /// Nodes in `describe` order.
    pub nodes: Vec<NodeId>,
    /// Source topics (external and repartition) feeding this sub-topology.
    pub source_topics: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Window,
    KeyValue,
}

#[derive(Debug)]
pub struct StoreDef {
    pub name: String,
    pub kind: StoreKind,
    pub node: NodeId,
    pub subtopology: usize,
    /// `<application_id>-<store>-changelog`.
    pub changelog: String,
    /// Changelog retention for window stores (size + grace + 1 day).
    pub retention_ms: Option<i64>,
}

impl Topology {
    /// Load and compile a topology file, collecting every problem.
    pub fn load(path: &Path) -> Result<Topology, Diagnostics> {
        Diagnostics::load(path, Self::parse)
    }

    /// Compile topology YAML text.
    pub fn parse(text: &str) -> Result<Topology, Vec<Diagnostic>> {
        let spec: spec::TopologySpec =
            serde_saphyr::from_str(text).map_err(|e| vec![crate::support::diag::from_yaml_error(&e)])?;
        Compiler::default().compile(spec)
    }

    /// Internal topic name for a repartition or changelog topic.
    pub fn internal_topic(&self, name: &str) -> String {
        format!("{}-{}", self.application_id, name)
    }

    /// The topics this topology owns, named from its application id:
    /// every store's changelog and every repartition topic, in that order.
    /// `weir run` creates them (with internal configs) and `weir reset`
    /// deletes them; output and dead-letter topics are not among them.
    pub fn internal_topics(&self) -> Vec<String> {
        let mut out: Vec<String> = self.stores.iter().map(|s| s.changelog.clone()).collect();
        for n in &self.nodes {
            if let NodeKind::ToTopic(t) = &n.kind {
                if t.internal && !out.contains(&t.topic) {
                    out.push(t.topic.clone());
                }
            }
        }
        out
    }

    /// The topics this topology reads that it does not write itself (its
    /// `sources:`), in sub-topology order.
    pub fn external_source_topics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for sub in &self.subtopologies {
            for &id in &sub.nodes {
                if let NodeKind::Source(s) = &self.nodes[id].kind {
                    if !s.internal && !out.contains(&s.topic) {
                        out.push(s.topic.clone());
                    }
                }
            }
        }
        out
    }

    /// Every topic an instance reads: external sources and repartition
    /// topics.
    pub fn source_topics(&self) -> Vec<String> {
        self.subtopologies
            .iter()
            .flat_map(|s| s.source_topics.iter().cloned())
            .collect()
    }

    /// The sub-topology and source node reading `topic`.
    pub fn source_for(&self, topic: &str) -> Option<(usize, NodeId)> {
        self.nodes.iter().enumerate().find_map(|(id, n)| match &n.kind {
            NodeKind::Source(s) if s.topic == topic => Some((n.subtopology, id)),
            _ => None,
        })
    }

    /// How many sub-topologies the graph was split into (one task per
    /// sub-topology and input partition).
    /// The topics a sub-topology reads.
    pub fn subtopology_sources(&self, sub: usize) -> Vec<String> {
        self.subtopologies[sub]
            .nodes
            .iter()
            .filter_map(|&id| match &self.nodes[id].kind {
                NodeKind::Source(s) => Some(s.topic.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn subtopology_count(&self) -> usize {
        self.subtopologies.len()
    }

    /// Stores owned by a sub-topology.
    pub fn stores_of(&self, subtopology: usize) -> impl Iterator<Item = (usize, &StoreDef)> {
        self.stores
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.subtopology == subtopology)
    }

    /// Every window node, for idle closing.
    pub fn close_idle_after(&self, subtopology: usize) -> Option<Duration> {
        self.nodes
            .iter()
            .filter(|n| n.subtopology == subtopology)
            .filter_map(|n| match &n.kind {
                NodeKind::Window(w) => w.close_idle_after,
                _ => None,
            })
            .min()
    }
}

/// Nodes reachable from `id` (itself included): Kafka Streams orders a
/// sub-topology's nodes by it.
pub(crate) fn subtree_size(nodes: &[Node], id: NodeId) -> usize {
    let mut seen = vec![false; nodes.len()];
    let mut stack = vec![id];
    let mut size = 0;
    while let Some(x) = stack.pop() {
        if !seen[x] {
            seen[x] = true;
            size += 1;
            stack.extend(nodes[x].children.iter().copied());
        }
    }
    size
}

#[cfg(test)]
mod tests;
