//! Compilation of a topology file into the processor graph: resolve step
//! inputs, check expressions and durations, insert repartition topics,
//! name internal topics and stores. Window steps are compiled in `window`,
//! tables and their aggregations in `table`, the split into sub-topologies
//! is in `split`.

mod join;
mod project;
mod split;
mod table;
mod window;

use std::time::Duration;

use chrono_tz::Tz;
use serde_saphyr::Spanned;

use super::*;

pub(crate) fn parse_duration(s: &Spanned<String>) -> Result<Duration, Diagnostic> {
    crate::support::duration::parse(&s.value).map_err(|e| Diagnostic::at(s, e.message).with_hint(e.hint))
}

fn parse_tz(s: &Spanned<String>) -> Result<Tz, Diagnostic> {
    crate::support::tz::parse(&s.value).map_err(|e| Diagnostic::at(s, e.message).with_hint(e.hint))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Default)]
pub(super) struct Compiler {
    nodes: Vec<Node>,
    stores: Vec<StoreDef>,
    global_tables: Vec<GlobalTableDef>,
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

    /// Add the store of `node`, with its changelog topic named from the
    /// application id and the store name. (The node refers to the store by
    /// its index, `self.stores.len()` before this call.)
    fn add_store(&mut self, name: &str, kind: StoreKind, node: NodeId, retention_ms: Option<i64>) {
        self.stores.push(StoreDef {
            name: name.to_string(),
            kind,
            node,
            subtopology: 0,
            changelog: format!("{}-{name}-changelog", self.app),
            retention_ms,
        });
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

    /// The passes, in order: the top-level settings, the sources, the
    /// steps (each with its `to`), the dead-letter checks; then, when the
    /// file has no error, the split into sub-topologies and the fields
    /// each JSON source must decode.
    pub(super) fn compile(mut self, spec: spec::TopologySpec) -> Result<Topology, Vec<Diagnostic>> {
        self.application_id(&spec.application_id);
        let commit_interval = self.commit_interval(&spec);
        let (kafka, kafka_errors) = crate::kafka::settings::check_file_map(&spec.kafka);
        self.errors.extend(kafka_errors);
        let time_zone = match &spec.time_zone {
            Some(s) => parse_tz(s).map_err(|d| self.errors.push(d)).unwrap_or(Tz::UTC),
            None => Tz::UTC,
        };
        let (mut named, mut source_topics) = self.sources(&spec);
        self.global_tables(&spec, &mut source_topics);
        self.steps(&spec, &mut named, &source_topics);
        self.dead_letter(&spec, &source_topics);
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|d| (d.line, d.column));
            return Err(self.errors);
        }
        let subtopologies = self.split();
        project::projections(&mut self.nodes);
        Ok(Topology {
            application_id: self.app,
            guarantee: spec.processing_guarantee,
            commit_interval,
            dead_letter: spec.dead_letter.map(|s| s.value),
            time_zone,
            nodes: self.nodes,
            subtopologies,
            stores: self.stores,
            global_tables: self.global_tables,
            kafka,
        })
    }

    /// The application id: the prefix of every internal topic, the
    /// consumer group and the transactional ids.
    fn application_id(&mut self, id: &Spanned<String>) {
        self.app = id.value.trim().to_string();
        if self.app.is_empty()
            || !self
                .app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.errors.push(
                Diagnostic::at(id, "application_id must be a non-empty Kafka topic prefix")
                    .with_hint("use letters, digits, '-', '_' and '.'"),
            );
        }
    }

    fn commit_interval(&mut self, spec: &spec::TopologySpec) -> Duration {
        let commit_interval = match &spec.commit_interval {
            Some(s) => self.duration(s).unwrap_or(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        // Under exactly_once each commit interval is one transaction, and
        // the broker aborts (and fences) a transaction open longer than the
        // transaction timeout: every commit would fail.
        let txn_timeout = crate::runtime::timeouts::TRANSACTION_TIMEOUT;
        if let (Some(s), Guarantee::ExactlyOnce) = (&spec.commit_interval, spec.processing_guarantee) {
            if commit_interval > txn_timeout / 2 {
                self.errors.push(
                    Diagnostic::at(
                        s,
                        format!(
                            "commit_interval {} is too long for exactly_once: each interval is one Kafka \
                             transaction, and the broker aborts a transaction open longer than {} \
                             (weir's transaction.timeout.ms), fencing every commit",
                            s.value.trim(),
                            humantime::format_duration(txn_timeout)
                        ),
                    )
                    .with_hint(format!(
                        "use at most {} (half the transaction timeout, room for the commit itself)",
                        humantime::format_duration(txn_timeout / 2)
                    )),
                );
            }
        }
        commit_interval
    }

    /// One source node per source; returns the names steps can read from
    /// and the source topics (with where they are declared).
    fn sources(&mut self, spec: &spec::TopologySpec) -> (Vec<Named>, Vec<(String, Spanned<String>)>) {
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
                    let max_future = match &f.max_future {
                        Some(d) => self.duration(d).unwrap_or(DEFAULT_MAX_FUTURE),
                        None => DEFAULT_MAX_FUTURE,
                    };
                    EventTime::Field {
                        field: f.field.value.clone(),
                        format: f.format.as_ref().map(|s| s.value.clone()),
                        tz,
                        max_future_ms: millis(max_future),
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
                    project: None,
                }),
                None,
            );
            named.push(Named {
                name: name.clone(),
                output: id,
            });
            source_topics.push((src.topic.value.clone(), src.topic.clone()));
        }

        (named, source_topics)
    }

    /// The steps in file order: each reads its `from` (or the step before
    /// it) and may write to a topic.
    fn steps(
        &mut self,
        spec: &spec::TopologySpec,
        named: &mut Vec<Named>,
        source_topics: &[(String, Spanned<String>)],
    ) {
        let mut previous: Option<NodeId> = if spec.sources.len() == 1 { Some(0) } else { None };
        for step in &spec.steps {
            let name = step.name.value.trim().to_string();
            if named.iter().any(|n| n.name == name) {
                self.errors.push(
                    Diagnostic::at(&step.name, format!("duplicate name `{name}`"))
                        .with_hint("step and source names must be unique"),
                );
            }
            let Some(input) = self.step_input(spec, step, &name, named, previous) else {
                continue;
            };
            if self.forgets(input) && step.table_aggregate.is_none() {
                self.errors.push(
                    Diagnostic::at(
                        &step.name,
                        format!(
                            "step `{name}` reads from table `{}`, which has a `ttl`: what it forgets leaves as \
                             tombstones, which only its `to:` topic and a table_aggregate take",
                            self.nodes[input].name
                        ),
                    )
                    .with_hint("aggregate it with `table_aggregate` (which retracts what it forgets), read the table's topic as a source, or give the table no `ttl`"),
                );
                continue;
            }
            if matches!(self.nodes[input].kind, NodeKind::TableAggregate(_)) {
                self.errors.push(
                    Diagnostic::at(
                        &step.name,
                        format!(
                            "step `{name}` reads from table_aggregate `{}`: a group left empty leaves it as a \
                             tombstone, which only its `to:` topic takes",
                            self.nodes[input].name
                        ),
                    )
                    .with_hint("read the aggregate's topic as a source"),
                );
                continue;
            }
            let output = self.step(step, &name, input, named);
            if let (Some(out), Some(to)) = (output, &step.to) {
                self.output_topic(to, &name, out, source_topics);
            }
            if let Some(out) = output {
                named.push(Named {
                    name: name.clone(),
                    output: out,
                });
                previous = Some(out);
            }
        }
    }

    /// The node a step reads from: its `from`, else the step before it.
    fn step_input(
        &mut self,
        spec: &spec::TopologySpec,
        step: &spec::StepSpec,
        name: &str,
        named: &[Named],
        previous: Option<NodeId>,
    ) -> Option<NodeId> {
        match &step.from {
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
                        match crate::support::did_you_mean(&from.value, known) {
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
        }
    }

    /// A table with `ttl`: its output holds tombstones.
    fn forgets(&self, node: NodeId) -> bool {
        matches!(&self.nodes[node].kind, NodeKind::Table(t) if t.ttl_ms.is_some())
    }

    /// A step's `to`: the to-topic node after the step's output.
    fn output_topic(
        &mut self,
        to: &spec::ToSpec,
        name: &str,
        out: NodeId,
        source_topics: &[(String, Spanned<String>)],
    ) {
        if let (Some(k), true) = (&to.key, self.forgets(out)) {
            self.errors.push(
                Diagnostic::at(
                    k,
                    "a table with `ttl` writes to its topic by its own key: a tombstone has no value to compute `key` from",
                )
                .with_hint("remove `to.key`"),
            );
        }
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
            Some(k) => self.expr(k).map(ToTopicKey::Expr).unwrap_or(ToTopicKey::Record),
            None => ToTopicKey::Record,
        };
        if let Some(p) = to.partitions {
            if p < 1 {
                self.errors
                    .push(Diagnostic::at(&to.topic, "partitions must be at least 1"));
            }
        }
        self.add(
            format!("{name}-to"),
            NodeKind::ToTopic(ToTopic {
                topic: to.topic.value.clone(),
                key,
                fields: to.fields.clone(),
                partitions: to.partitions,
                internal: false,
            }),
            Some(out),
        );
    }

    /// The dead-letter topic: not a source, and set when a window sends
    /// late records to it.
    fn dead_letter(&mut self, spec: &spec::TopologySpec, source_topics: &[(String, Spanned<String>)]) {
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
    }

    /// Add the nodes of one step; returns the node whose output the step
    /// produces.
    fn step(&mut self, step: &spec::StepSpec, name: &str, input: NodeId, named: &[Named]) -> Option<NodeId> {
        let kinds = [
            step.filter.is_some(),
            step.map.is_some(),
            step.window.is_some(),
            step.table.is_some(),
            step.table_aggregate.is_some(),
            step.join.is_some(),
        ];
        let count = kinds.iter().filter(|k| **k).count();
        if count > 1 {
            self.errors.push(
                Diagnostic::at(
                    &step.name,
                    format!("step `{name}` has more than one of filter, map, window, table, table_aggregate, join"),
                )
                .with_hint("split it into several steps"),
            );
            return None;
        }
        if count == 0 && step.to.is_none() {
            self.errors.push(
                Diagnostic::at(&step.name, format!("step `{name}` does nothing"))
                    .with_hint("give it one of filter, map, window, table, table_aggregate, join, or a `to`"),
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
            return self.table(t, name, input);
        }
        if let Some(a) = &step.table_aggregate {
            return self.table_aggregate(a, name, &step.name, input);
        }
        if let Some(j) = &step.join {
            return self.join(j, name, &step.name, input, named);
        }
        Some(self.add(name.to_string(), NodeKind::Pass, Some(input)))
    }

    /// Insert `<name>-repartition-sink` → topic → `<name>-repartition-source`
    /// and return the new source node.
    fn repartition(&mut self, name: &str, key: ToTopicKey, fields: Option<Vec<String>>, input: NodeId) -> NodeId {
        let topic = format!("{}-{name}-repartition", self.app);
        self.add(
            format!("{name}-repartition-sink"),
            NodeKind::ToTopic(ToTopic {
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
                project: None,
            }),
            None,
        )
    }
}

impl spec::SourceSpec {
    fn event_time_is_field(&self) -> bool {
        matches!(self.event_time, spec::EventTimeSpec::Field(_))
    }
}
