//! Topology files: the YAML format (`spec`), expressions (`expr`),
//! validation with file positions (`diag`), compilation into a processor
//! graph (this module) and `describe` output.
//!
//! Compilation resolves step inputs, inserts repartition topics where a
//! window or table groups by something other than the record key (as Kafka
//! Streams does for `groupBy`), splits the graph into sub-topologies at
//! those topics and names every internal topic and store from the file, so
//! names stay stable when steps are added.

pub mod describe;
pub mod diag;
pub mod expr;
mod fast;
pub(crate) mod functions;
pub mod spec;

use std::path::Path;
use std::time::Duration;

use chrono_tz::Tz;
use serde_saphyr::Spanned;

pub use diag::{Diagnostic, Diagnostics};
pub use expr::Expr;
pub use spec::{EmitSpec, Guarantee, LateSpec, ValueFormat};

/// Largest record value weir processes; bigger ones go to the dead-letter
/// topic. Below the producer's `message.max.bytes` (1,000,000) with room to
/// spare, so what a record turns into (a table's changelog and output
/// record, a repartition record) still fits: a record the producer refuses
/// inside a commit would fail that commit on every replay.
pub const MAX_RECORD_BYTES: usize = 900 * 1024;

/// A checked, compiled topology.
#[derive(Debug)]
pub struct Topology {
    pub application_id: String,
    pub guarantee: Guarantee,
    pub commit_interval: Duration,
    pub dead_letter: Option<String>,
    pub time_zone: Tz,
    pub nodes: Vec<Node>,
    pub subtopologies: Vec<SubTopology>,
    pub stores: Vec<StoreDef>,
}

pub type NodeId = usize;

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub children: Vec<NodeId>,
    pub parents: Vec<NodeId>,
    pub subtopology: usize,
}

#[derive(Debug)]
pub enum NodeKind {
    Source(SourceNode),
    Filter(Expr),
    Map(MapNode),
    Window(WindowNode),
    Table(TableNode),
    /// A step with only `to`: forwards records unchanged.
    Pass,
    Sink(SinkNode),
}

#[derive(Debug)]
pub struct SourceNode {
    pub topic: String,
    pub value: ValueFormat,
    pub key: ValueFormat,
    pub event_time: EventTime,
    /// Reads a repartition topic written by this topology.
    pub internal: bool,
}

#[derive(Debug, Clone)]
pub enum EventTime {
    Kafka,
    Field {
        field: String,
        format: Option<String>,
        tz: Tz,
    },
}

#[derive(Debug)]
pub struct MapNode {
    pub set: Vec<(std::sync::Arc<String>, Expr)>,
    pub drop: Vec<String>,
    pub keep: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
}

#[derive(Debug)]
pub struct Aggregate {
    pub name: String,
    pub kind: AggKind,
    /// None for `count()`.
    pub arg: Option<Expr>,
}

#[derive(Debug)]
pub struct WindowNode {
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
pub struct TableNode {
    pub newest_by: Option<Expr>,
    pub store: usize,
}

/// How a sink computes the record key.
#[derive(Debug)]
pub enum SinkKey {
    /// The incoming record's key.
    Record,
    /// One expression, as text.
    Expr(Expr),
    /// Group key parts, written as a JSON array (repartition for windows).
    Group(Vec<Expr>),
}

#[derive(Debug)]
pub struct SinkNode {
    pub topic: String,
    pub key: SinkKey,
    pub fields: Option<Vec<String>>,
    pub partitions: Option<i32>,
    /// Writes a repartition topic read back by this topology.
    pub internal: bool,
}

#[derive(Debug)]
pub struct SubTopology {
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
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Diagnostics {
            file: file.clone(),
            items: vec![Diagnostic {
                line: 1,
                column: 1,
                message: format!("cannot read file: {e}"),
                hint: None,
            }],
        })?;
        Self::parse(&text).map_err(|items| Diagnostics { file, items })
    }

    /// Compile topology YAML text.
    pub fn parse(text: &str) -> Result<Topology, Vec<Diagnostic>> {
        let spec: spec::TopologySpec = serde_saphyr::from_str(text).map_err(|e| vec![diag::from_yaml_error(&e)])?;
        Compiler::default().compile(spec)
    }

    /// Internal topic name for a repartition or changelog topic.
    pub fn internal_topic(&self, name: &str) -> String {
        format!("{}-{}", self.application_id, name)
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

pub fn parse_duration(s: &Spanned<String>) -> Result<Duration, Diagnostic> {
    crate::support::duration::parse(&s.value).map_err(|e| Diagnostic::at(s, e.message).with_hint(e.hint))
}

fn parse_tz(s: &Spanned<String>) -> Result<Tz, Diagnostic> {
    crate::support::tz::parse(&s.value).map_err(|e| Diagnostic::at(s, e.message).with_hint(e.hint))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Default)]
struct Compiler {
    nodes: Vec<Node>,
    stores: Vec<StoreDef>,
    errors: Vec<Diagnostic>,
    app: String,
}

/// What a step name resolves to when another step reads from it.
struct Named {
    name: String,
    output: NodeId,
}

impl Compiler {
    fn add(&mut self, name: String, kind: NodeKind, parent: Option<NodeId>) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            name,
            kind,
            children: Vec::new(),
            parents: Vec::new(),
            subtopology: 0,
        });
        if let Some(p) = parent {
            self.nodes[p].children.push(id);
            self.nodes[id].parents.push(p);
        }
        id
    }

    fn expr(&mut self, s: &Spanned<String>) -> Option<Expr> {
        match Expr::compile(&s.value) {
            Ok(e) => Some(e),
            Err(msg) => {
                self.errors
                    .push(Diagnostic::at(s, format!("expression {:?}: {msg}", s.value)));
                None
            }
        }
    }

    fn duration(&mut self, s: &Spanned<String>) -> Option<Duration> {
        parse_duration(s).map_err(|d| self.errors.push(d)).ok()
    }

    fn compile(mut self, spec: spec::TopologySpec) -> Result<Topology, Vec<Diagnostic>> {
        self.app = spec.application_id.value.trim().to_string();
        if self.app.is_empty()
            || !self
                .app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.errors.push(
                Diagnostic::at(
                    &spec.application_id,
                    "application_id must be a non-empty Kafka topic prefix",
                )
                .with_hint("use letters, digits, '-', '_' and '.'"),
            );
        }
        let commit_interval = match &spec.commit_interval {
            Some(s) => self.duration(s).unwrap_or(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        let time_zone = match &spec.time_zone {
            Some(s) => parse_tz(s).map_err(|d| self.errors.push(d)).unwrap_or(Tz::UTC),
            None => Tz::UTC,
        };
        if spec.sources.is_empty() {
            self.errors.push(Diagnostic {
                line: 1,
                column: 1,
                message: "no sources".into(),
                hint: Some("add `sources:` with at least one topic".into()),
            });
        }
        let mut named: Vec<Named> = Vec::new();
        let mut source_topics: Vec<(String, Spanned<String>)> = Vec::new();
        for (name, src) in &spec.sources {
            let event_time = match &src.event_time {
                spec::EventTimeSpec::Kafka | spec::EventTimeSpec::Keyword(_) => EventTime::Kafka,
                spec::EventTimeSpec::Field(f) => {
                    let tz = match &f.time_zone {
                        Some(z) => parse_tz(z).map_err(|d| self.errors.push(d)).unwrap_or(Tz::UTC),
                        None => Tz::UTC,
                    };
                    EventTime::Field {
                        field: f.field.value.clone(),
                        format: f.format.as_ref().map(|s| s.value.clone()),
                        tz,
                    }
                }
            };
            if src.event_time_is_field() && src.value != ValueFormat::Json {
                self.errors.push(Diagnostic::at(
                    &src.topic,
                    format!("source `{name}`: event_time from a field needs `value: json`"),
                ));
            }
            let id = self.add(
                name.clone(),
                NodeKind::Source(SourceNode {
                    topic: src.topic.value.clone(),
                    value: src.value,
                    key: src.key,
                    event_time,
                    internal: false,
                }),
                None,
            );
            named.push(Named {
                name: name.clone(),
                output: id,
            });
            source_topics.push((src.topic.value.clone(), src.topic.clone()));
        }

        let mut previous: Option<NodeId> = if spec.sources.len() == 1 { Some(0) } else { None };
        for step in &spec.steps {
            let name = step.name.value.trim().to_string();
            if named.iter().any(|n| n.name == name) {
                self.errors.push(
                    Diagnostic::at(&step.name, format!("duplicate name `{name}`"))
                        .with_hint("step and source names must be unique"),
                );
            }
            let input = match &step.from {
                Some(from) => match named.iter().find(|n| n.name == from.value) {
                    Some(n) => Some(n.output),
                    None => {
                        let later = spec.steps.iter().any(|s| s.name.value == from.value);
                        let d = if later || from.value == name {
                            Diagnostic::at(
                                from,
                                format!(
                                    "step `{name}` reads from `{}`, which is not defined before it",
                                    from.value
                                ),
                            )
                            .with_hint("steps may only read from sources and earlier steps (no cycles)")
                        } else {
                            let d = Diagnostic::at(from, format!("unknown step or source `{}`", from.value));
                            let known = named
                                .iter()
                                .map(|n| n.name.as_str())
                                .chain(spec.steps.iter().map(|s| s.name.value.as_str()));
                            match diag::did_you_mean(&from.value, known) {
                                Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                                None => d,
                            }
                        };
                        self.errors.push(d);
                        None
                    }
                },
                None => {
                    if previous.is_none() {
                        self.errors.push(
                            Diagnostic::at(&step.name, format!("step `{name}` needs `from:`"))
                                .with_hint("with several sources, the first step must say which one it reads"),
                        );
                    }
                    previous
                }
            };
            let Some(input) = input else { continue };
            let output = self.step(step, &name, input);
            if let (Some(out), Some(to)) = (output, &step.to) {
                if let Some((_, span)) = source_topics.iter().find(|(t, _)| *t == to.topic.value) {
                    self.errors.push(
                        Diagnostic::at(
                            &to.topic,
                            format!("output topic `{}` is also a source topic", to.topic.value),
                        )
                        .with_hint(format!(
                            "the source is declared at line {}; writing to it would loop records forever",
                            span.referenced.line()
                        )),
                    );
                }
                let key = match &to.key {
                    Some(k) => self.expr(k).map(SinkKey::Expr).unwrap_or(SinkKey::Record),
                    None => SinkKey::Record,
                };
                if let Some(p) = to.partitions {
                    if p < 1 {
                        self.errors
                            .push(Diagnostic::at(&to.topic, "partitions must be at least 1"));
                    }
                }
                self.add(
                    format!("{name}-to"),
                    NodeKind::Sink(SinkNode {
                        topic: to.topic.value.clone(),
                        key,
                        fields: to.fields.clone(),
                        partitions: to.partitions,
                        internal: false,
                    }),
                    Some(out),
                );
            }
            if let Some(out) = output {
                named.push(Named {
                    name: name.clone(),
                    output: out,
                });
                previous = Some(out);
            }
        }
        if let (Some(dlq), true) = (&spec.dead_letter, !source_topics.is_empty()) {
            if source_topics.iter().any(|(t, _)| *t == dlq.value) {
                self.errors
                    .push(Diagnostic::at(dlq, "the dead-letter topic is also a source topic"));
            }
        }
        let needs_dlq = self
            .nodes
            .iter()
            .any(|n| matches!(&n.kind, NodeKind::Window(w) if w.late == LateSpec::DeadLetter));
        if needs_dlq && spec.dead_letter.is_none() {
            self.errors.push(Diagnostic {
                line: 1,
                column: 1,
                message: "a window sends late records to the dead-letter topic, but `dead_letter` is not set".into(),
                hint: Some("add `dead_letter: <topic>` at the top level".into()),
            });
        }
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|d| (d.line, d.column));
            return Err(self.errors);
        }
        let subtopologies = self.split();
        Ok(Topology {
            application_id: self.app,
            guarantee: spec.processing_guarantee,
            commit_interval,
            dead_letter: spec.dead_letter.map(|s| s.value),
            time_zone,
            nodes: self.nodes,
            subtopologies,
            stores: self.stores,
        })
    }

    /// Add the nodes of one step; returns the node whose output the step
    /// produces.
    fn step(&mut self, step: &spec::StepSpec, name: &str, input: NodeId) -> Option<NodeId> {
        let kinds = [
            step.filter.is_some(),
            step.map.is_some(),
            step.window.is_some(),
            step.table.is_some(),
        ];
        let count = kinds.iter().filter(|k| **k).count();
        if count > 1 {
            self.errors.push(
                Diagnostic::at(
                    &step.name,
                    format!("step `{name}` has more than one of filter, map, window, table"),
                )
                .with_hint("split it into several steps"),
            );
            return None;
        }
        if count == 0 && step.to.is_none() {
            self.errors.push(
                Diagnostic::at(&step.name, format!("step `{name}` does nothing"))
                    .with_hint("give it one of filter, map, window, table, or a `to`"),
            );
            return None;
        }
        if let Some(f) = &step.filter {
            let e = self.expr(f)?;
            return Some(self.add(name.to_string(), NodeKind::Filter(e), Some(input)));
        }
        if let Some(m) = &step.map {
            let mut set = Vec::new();
            for (field, src) in &m.set {
                if let Some(e) = self.expr(src) {
                    set.push((std::sync::Arc::new(field.clone()), e));
                }
            }
            if m.set.is_empty() && m.drop.is_empty() && m.keep.is_none() {
                self.errors.push(
                    Diagnostic::at(&step.name, format!("map step `{name}` changes nothing"))
                        .with_hint("use set, drop or keep"),
                );
            }
            return Some(self.add(
                name.to_string(),
                NodeKind::Map(MapNode {
                    set,
                    drop: m.drop.clone(),
                    keep: m.keep.clone(),
                }),
                Some(input),
            ));
        }
        if let Some(w) = &step.window {
            return self.window(w, name, &step.name, input);
        }
        if let Some(t) = &step.table {
            let key = self.expr(&t.key)?;
            let newest_by = match &t.newest_by {
                Some(s) => Some(self.expr(s)?),
                None => None,
            };
            let parent = if key.is_record_key() {
                input
            } else {
                self.repartition(name, SinkKey::Expr(key), None, input)
            };
            let store = self.stores.len();
            let node = self.add(
                name.to_string(),
                NodeKind::Table(TableNode { newest_by, store }),
                Some(parent),
            );
            self.stores.push(StoreDef {
                name: name.to_string(),
                kind: StoreKind::KeyValue,
                node,
                subtopology: 0,
                changelog: format!("{}-{name}-changelog", self.app),
                retention_ms: None,
            });
            return Some(node);
        }
        Some(self.add(name.to_string(), NodeKind::Pass, Some(input)))
    }

    fn window(&mut self, w: &spec::WindowSpec, name: &str, at: &Spanned<String>, input: NodeId) -> Option<NodeId> {
        if w.group_by.is_empty() {
            self.errors
                .push(Diagnostic::at(at, format!("window `{name}` has no key")).with_hint(
                    "add `group_by: {name: expression}`, e.g. `group_by: {region_code: value.REGION_CODE}`",
                ));
        }
        let (size, advance) = match (&w.tumbling, &w.hopping) {
            (Some(t), None) => {
                let s = self.duration(t)?;
                (s, s)
            }
            (None, Some(h)) => {
                let (s, a) = (self.duration(&h.size)?, self.duration(&h.advance)?);
                if a.is_zero() || a > s {
                    self.errors
                        .push(Diagnostic::at(&h.advance, "hopping advance must be > 0 and ≤ size"));
                    return None;
                }
                (s, a)
            }
            _ => {
                self.errors.push(Diagnostic::at(
                    at,
                    format!("window `{name}` needs exactly one of `tumbling` or `hopping`"),
                ));
                return None;
            }
        };
        if size.as_millis() == 0 {
            self.errors.push(Diagnostic::at(at, "window size must be > 0"));
            return None;
        }
        let grace = match &w.grace {
            Some(g) => self.duration(g)?,
            None => Duration::ZERO,
        };
        let offset_ms = match &w.time_zone {
            Some(z) => {
                let tz = parse_tz(z).map_err(|d| self.errors.push(d)).unwrap_or(Tz::UTC);
                use chrono::Offset;
                use chrono::TimeZone;
                // Align to local midnight: shift boundaries by the zone's
                // (fixed) offset. Zones with DST move by an hour twice a
                // year; the offset at the epoch is used, as Spark does.
                let off = tz
                    .offset_from_utc_datetime(&chrono::DateTime::UNIX_EPOCH.naive_utc())
                    .fix();
                -i64::from(off.local_minus_utc()) * 1000
            }
            None => 0,
        };
        let close_idle_after = match &w.close_idle_after {
            Some(d) => Some(self.duration(d)?),
            None => None,
        };
        let mut aggregates = Vec::new();
        for (out, src) in &w.aggregate {
            match parse_aggregate(&src.value) {
                Ok((kind, arg)) => {
                    let arg = match arg {
                        Some(a) => match Expr::compile(&a) {
                            Ok(e) => Some(e),
                            Err(msg) => {
                                self.errors
                                    .push(Diagnostic::at(src, format!("aggregate `{out}`: {msg}")));
                                continue;
                            }
                        },
                        None => None,
                    };
                    aggregates.push(Aggregate {
                        name: out.clone(),
                        kind,
                        arg,
                    });
                }
                Err(msg) => self.errors.push(
                    Diagnostic::at(src, format!("aggregate `{out}`: {msg}"))
                        .with_hint("use count(), sum(x), avg(x), min(x), max(x), first(x) or last(x)"),
                ),
            }
        }
        if w.aggregate.is_empty() {
            self.errors.push(
                Diagnostic::at(at, format!("window `{name}` has no aggregates"))
                    .with_hint("add e.g. `aggregate: {samples: count()}`"),
            );
        }
        let mut group = Vec::new();
        for src in w.group_by.values() {
            group.push(self.expr(src)?);
        }
        let group_is_record_key = group.len() == 1 && group[0].is_record_key();
        let parent = if group_is_record_key {
            input
        } else {
            // Ship only the fields the aggregates read, when they are plain
            // `value.FIELD`s: the repartition topic then carries a fraction
            // of each record.
            let fields: Option<Vec<String>> = aggregates
                .iter()
                .filter_map(|a| a.arg.as_ref())
                .map(|e| e.field_name().map(str::to_string))
                .collect();
            self.repartition(name, SinkKey::Group(group), fields, input)
        };
        let store = self.stores.len();
        let size_ms = millis(size);
        let grace_ms = millis(grace);
        let node = self.add(
            name.to_string(),
            NodeKind::Window(WindowNode {
                group_names: w.group_by.keys().cloned().collect(),
                group_is_record_key,
                size_ms,
                advance_ms: millis(advance),
                grace_ms,
                offset_ms,
                close_idle_after,
                emit: w.emit,
                late: w.late,
                aggregates,
                store,
            }),
            Some(parent),
        );
        self.stores.push(StoreDef {
            name: name.to_string(),
            kind: StoreKind::Window,
            node,
            subtopology: 0,
            changelog: format!("{}-{name}-changelog", self.app),
            retention_ms: Some(size_ms.saturating_add(grace_ms).saturating_add(86_400_000)),
        });
        Some(node)
    }

    /// Insert `<name>-repartition-sink` → topic → `<name>-repartition-source`
    /// and return the new source node.
    fn repartition(&mut self, name: &str, key: SinkKey, fields: Option<Vec<String>>, input: NodeId) -> NodeId {
        let topic = format!("{}-{name}-repartition", self.app);
        self.add(
            format!("{name}-repartition-sink"),
            NodeKind::Sink(SinkNode {
                topic: topic.clone(),
                key,
                fields,
                partitions: None,
                internal: true,
            }),
            Some(input),
        );
        self.add(
            format!("{name}-repartition-source"),
            NodeKind::Source(SourceNode {
                topic,
                value: ValueFormat::Json,
                key: ValueFormat::String,
                event_time: EventTime::Kafka,
                internal: true,
            }),
            None,
        )
    }

    /// Number connected components in node creation order (the repartition
    /// topics are the only cuts) and order each one's nodes like Kafka
    /// Streams: by descending subtree size, then name.
    fn split(&mut self) -> Vec<SubTopology> {
        let n = self.nodes.len();
        let mut comp: Vec<Option<usize>> = vec![None; n];
        let mut count = 0;
        for start in 0..n {
            if comp[start].is_some() {
                continue;
            }
            let mut stack = vec![start];
            while let Some(x) = stack.pop() {
                if comp[x].is_some() {
                    continue;
                }
                comp[x] = Some(count);
                stack.extend(self.nodes[x].children.iter().copied());
                stack.extend(self.nodes[x].parents.iter().copied());
            }
            count += 1;
        }
        for (i, c) in comp.iter().enumerate() {
            self.nodes[i].subtopology = c.unwrap_or(0);
        }
        for s in &mut self.stores {
            s.subtopology = self.nodes[s.node].subtopology;
        }
        let sizes: Vec<usize> = (0..n).map(|i| subtree_size(&self.nodes, i)).collect();
        (0..count)
            .map(|id| {
                let mut nodes: Vec<NodeId> = (0..n).filter(|&i| self.nodes[i].subtopology == id).collect();
                nodes.sort_by(|&a, &b| {
                    sizes[b]
                        .cmp(&sizes[a])
                        .then_with(|| self.nodes[a].name.cmp(&self.nodes[b].name))
                });
                let source_topics = nodes
                    .iter()
                    .filter_map(|&i| match &self.nodes[i].kind {
                        NodeKind::Source(s) => Some(s.topic.clone()),
                        _ => None,
                    })
                    .collect();
                SubTopology {
                    id,
                    nodes,
                    source_topics,
                }
            })
            .collect()
    }
}

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

/// `avg(available)` → (Avg, Some("value.available")). A bare identifier
/// names a field of the value.
fn parse_aggregate(src: &str) -> Result<(AggKind, Option<String>), String> {
    let src = src.trim();
    let (func, rest) = src
        .split_once('(')
        .ok_or_else(|| format!("{src:?} is not an aggregate call"))?;
    let inner = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("{src:?}: missing ')'"))?
        .trim();
    let kind = match func.trim() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "avg" => AggKind::Avg,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "first" => AggKind::First,
        "last" => AggKind::Last,
        other => {
            let names = ["count", "sum", "avg", "min", "max", "first", "last"];
            let hint = diag::did_you_mean(other, names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!("unknown aggregate `{other}`{hint}"));
        }
    };
    if inner.is_empty() {
        return match kind {
            AggKind::Count => Ok((kind, None)),
            _ => Err(format!("{}() needs an argument", func.trim())),
        };
    }
    let bare = inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !functions::VARIABLES.contains(&inner)
        && !inner.chars().next().is_some_and(|c| c.is_ascii_digit());
    Ok((
        kind,
        Some(if bare {
            format!("value.{inner}")
        } else {
            inner.to_string()
        }),
    ))
}

impl spec::SourceSpec {
    fn event_time_is_field(&self) -> bool {
        matches!(self.event_time, spec::EventTimeSpec::Field(_))
    }
}

#[cfg(test)]
mod tests;
