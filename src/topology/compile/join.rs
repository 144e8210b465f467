//! Compiling `global_tables` (compacted topics every instance reads in
//! full) and `join` steps, which look records up in them or in a `table`
//! step's store (co-partitioned: the join runs in the table's
//! sub-topology, see `split.rs`).

use serde_saphyr::Spanned;

use super::super::*;
use super::Compiler;

impl Compiler {
    /// One [`GlobalTableDef`] per entry; their topics join `source_topics`
    /// (no step may write to them).
    pub(super) fn global_tables(
        &mut self,
        spec: &spec::TopologySpec,
        source_topics: &mut Vec<(String, Spanned<String>)>,
    ) {
        for (name, g) in &spec.global_tables {
            if spec.sources.contains_key(name) {
                self.errors.push(
                    Diagnostic::at(&g.topic, format!("global table `{name}` has the name of a source"))
                        .with_hint("source and global table names must be unique"),
                );
            }
            if let Some((_, span)) = source_topics.iter().find(|(t, _)| *t == g.topic.value) {
                self.errors.push(
                    Diagnostic::at(
                        &g.topic,
                        format!(
                            "topic `{}` is read as a source too (line {})",
                            g.topic.value,
                            span.referenced.line()
                        ),
                    )
                    .with_hint("a topic is either a stream (`sources:`) or a global table"),
                );
            }
            self.global_tables.push(GlobalTableDef {
                name: name.clone(),
                topic: g.topic.value.clone(),
            });
            source_topics.push((g.topic.value.clone(), g.topic.clone()));
        }
    }

    /// A join step: with `global`, a lookup in a global table; with
    /// `table`, in a table step's store, in the same task as the table
    /// (see [`Compiler::table_side`]).
    pub(super) fn join(
        &mut self,
        j: &spec::JoinSpec,
        name: &str,
        at: &Spanned<String>,
        input: NodeId,
        named: &[super::Named],
    ) -> Option<NodeId> {
        let side = match (&j.global, &j.table) {
            (Some(_), Some(table)) => {
                self.errors.push(
                    Diagnostic::at(table, format!("join `{name}` names both a global table and a table"))
                        .with_hint("a join looks records up in one table: keep `global:` or `table:`"),
                );
                return None;
            }
            (None, None) => {
                self.errors
                    .push(Diagnostic::at(at, format!("join `{name}` names no table")).with_hint(
                        "add `table: STEP` (a `table` step before it, co-partitioned) or `global: NAME` \
                             (a table under `global_tables:`)",
                    ));
                return None;
            }
            (Some(global), None) => self.global_side(global)?,
            (None, Some(table)) => self.table_side(table, name, named)?,
        };
        let key = self.expr(&j.key)?;
        if j.fields.is_empty() {
            self.errors.push(
                Diagnostic::at(&j.key, format!("join `{name}` adds no fields"))
                    .with_hint("add `fields: {OUTPUT_FIELD: table_field}`"),
            );
        }
        let fields = j
            .fields
            .iter()
            .map(|(out, from)| (std::sync::Arc::new(out.clone()), from.value.trim().to_string()))
            .collect();
        // A table's rows are keyed by the table's key: the stream goes
        // through a repartition topic keyed by the join key unless its key
        // already is that (Kafka Streams repartitions a re-keyed stream
        // before a join the same way).
        let parent = match side {
            JoinSide::Table { .. } if !key.is_record_key() => {
                let by = self.expr(&j.key)?;
                self.repartition(name, ToTopicKey::Expr(by), None, input)
            }
            _ => input,
        };
        Some(self.add(
            name.to_string(),
            NodeKind::Join(JoinNode {
                side,
                key,
                left: j.how == JoinHow::Left,
                fields,
            }),
            Some(parent),
        ))
    }

    fn global_side(&mut self, global: &Spanned<String>) -> Option<JoinSide> {
        let Some(index) = self.global_tables.iter().position(|g| g.name == global.value) else {
            let known = self.global_tables.iter().map(|g| g.name.as_str());
            let hint = match crate::support::did_you_mean(&global.value, known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "declare it under `global_tables:` (name → topic)".into(),
            };
            self.errors
                .push(Diagnostic::at(global, format!("unknown global table `{}`", global.value)).with_hint(hint));
            return None;
        };
        Some(JoinSide::Global(index))
    }

    /// The table step a join names: defined before the join, a `table`
    /// step. Its store then keeps each row's value (the fields the joins
    /// read: see `project.rs`).
    fn table_side(&mut self, table: &Spanned<String>, name: &str, named: &[super::Named]) -> Option<JoinSide> {
        let wanted = table.value.trim();
        let Some(found) = named.iter().find(|n| n.name == wanted) else {
            let hint = match crate::support::did_you_mean(wanted, named.iter().map(|n| n.name.as_str())) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "name a `table` step defined before the join".into(),
            };
            let message = if wanted == name {
                format!("join `{name}` names itself as its table")
            } else if self.global_tables.iter().any(|g| g.name == wanted) {
                return self.wrong_table(
                    table,
                    name,
                    format!("`{wanted}` is a global table"),
                    "write `global: NAME` for a global table",
                );
            } else {
                format!("unknown table step `{wanted}`")
            };
            self.errors.push(Diagnostic::at(table, message).with_hint(hint));
            return None;
        };
        let node = found.output;
        let kind = match &mut self.nodes[node].kind {
            NodeKind::Table(t) => {
                t.keep_values = true;
                return Some(JoinSide::Table { node, store: t.store });
            }
            NodeKind::Source(_) => "a source",
            NodeKind::Filter(_) => "a filter step",
            NodeKind::Map(_) => "a map step",
            NodeKind::Window(_) => "a window step",
            NodeKind::TableAggregate(_) => "a table_aggregate step",
            NodeKind::Join(_) => "a join step",
            NodeKind::Pass | NodeKind::ToTopic(_) => "a step without a table",
        };
        self.wrong_table(
            table,
            name,
            format!("`{wanted}` is {kind}, not a `table` step"),
            "join a `table:` step (the latest row per key), e.g. a step `table: {key: key}` reading the table's topic",
        )
    }

    fn wrong_table(&mut self, at: &Spanned<String>, name: &str, what: String, hint: &str) -> Option<JoinSide> {
        self.errors
            .push(Diagnostic::at(at, format!("join `{name}`: {what}")).with_hint(hint));
        None
    }
}
