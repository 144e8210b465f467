//! Compiling a `table` step (latest value per key, with a repartition when
//! its key is not the record key) and a `table_aggregate` step (a table's
//! rows aggregated by a new key, always through a repartition topic, as
//! Kafka Streams' `KTable.groupBy` always repartitions).

use serde_saphyr::Spanned;

use super::super::*;
use super::{millis, Compiler};

impl Compiler {
    pub(super) fn table(&mut self, t: &spec::TableSpec, name: &str, input: NodeId) -> Option<NodeId> {
        let key = self.expr(&t.key)?;
        let newest_by = match &t.newest_by {
            Some(s) => Some(self.expr(s)?),
            None => None,
        };
        let parent = if key.is_record_key() {
            input
        } else {
            self.repartition(name, ToTopicKey::Expr(key), None, input)
        };
        let ttl_ms = match &t.ttl {
            Some(s) => {
                let d = self.duration(s)?;
                if d.is_zero() {
                    self.errors.push(
                        Diagnostic::at(s, "ttl must be longer than 0").with_hint("e.g. `ttl: 1d`, or leave it out"),
                    );
                    return None;
                }
                Some(millis(d))
            }
            None => None,
        };
        let store = self.stores.len();
        let node = self.add(
            name.to_string(),
            NodeKind::Table(TableNode {
                newest_by,
                emit: t.emit,
                store,
                ttl_ms,
                keep_values: false,
                queryable: t.queryable,
            }),
            Some(parent),
        );
        self.add_store(name, StoreKind::KeyValue, node, None);
        Some(node)
    }

    /// `input` must be a table: its changes (old and new value of a row)
    /// are what the aggregation adds and subtracts.
    pub(super) fn table_aggregate(
        &mut self,
        a: &spec::TableAggregateSpec,
        name: &str,
        at: &Spanned<String>,
        input: NodeId,
    ) -> Option<NodeId> {
        let NodeKind::Table(table) = &mut self.nodes[input].kind else {
            let from = self.nodes[input].name.clone();
            self.errors.push(
                Diagnostic::at(
                    at,
                    format!("table_aggregate `{name}` reads `{from}`, which is not a table"),
                )
                .with_hint(
                    "a table_aggregate aggregates a table's current rows: put a `table:` step before it \
                         (`from:` that step); to aggregate every record, use a `window`",
                ),
            );
            return None;
        };
        table.keep_values = true;
        if a.group_by.is_empty() {
            self.errors.push(
                Diagnostic::at(at, format!("table_aggregate `{name}` has no key"))
                    .with_hint("add `group_by: {name: expression}`, e.g. `group_by: {region: value.REGION}`"),
            );
        }
        if a.aggregate.is_empty() {
            self.errors.push(
                Diagnostic::at(at, format!("table_aggregate `{name}` has no aggregates"))
                    .with_hint("add e.g. `aggregate: {rows: count()}`"),
            );
        }
        let aggregates = self.aggregates(&a.aggregate);
        for agg in &aggregates {
            if !matches!(agg.kind, AggKind::Count | AggKind::Sum | AggKind::Avg) {
                let src = &a.aggregate[&agg.name];
                self.errors.push(
                    Diagnostic::at(
                        src,
                        format!(
                            "aggregate `{}`: {} cannot be kept over a table: when a row changes or leaves, its old \
                             value must be subtracted, and {} cannot take a value back out",
                            agg.name,
                            src.value.trim(),
                            src.value.trim().split('(').next().unwrap_or_default()
                        ),
                    )
                    .with_hint("use count(), count(x), sum(x) or avg(x)"),
                );
            }
        }
        let mut group = Vec::new();
        for src in a.group_by.values() {
            group.push(self.expr(src)?);
        }
        // The arguments are evaluated on the table's side, before the
        // repartition; the aggregation node only needs the kinds.
        let mut aggregates = aggregates;
        let has_arg = aggregates.iter().map(|agg| agg.arg.is_some()).collect();
        let args = aggregates.iter_mut().map(|agg| (agg.kind, agg.arg.take())).collect();
        let parent = self.repartition(name, ToTopicKey::Regroup(Regroup { group, args }), None, input);
        let store = self.stores.len();
        let node = self.add(
            name.to_string(),
            NodeKind::TableAggregate(TableAggregateNode {
                group_names: a.group_by.keys().cloned().collect(),
                aggregates,
                has_arg,
                emit: a.emit,
                store,
            }),
            Some(parent),
        );
        self.add_store(name, StoreKind::KeyValue, node, None);
        Some(node)
    }
}
