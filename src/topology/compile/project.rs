//! Projection: the top-level fields of a JSON source's values that its
//! sub-topology reads. Decoding a record builds a CEL map of every field
//! (most of `weir run`'s CPU per record went to it); a source whose steps
//! read only some fields decodes only those (`codec::parse_json_projected`)
//! and keeps the raw bytes, from which a record written whole (a table's
//! output, a step's `to` without `fields`, a dead letter) is decoded in full
//! when, and only if, it is written (`Record::full_value`).
//!
//! Every expression evaluated on the source's records counts: filters, map
//! values, aggregate arguments, table `newest_by`, `to` keys and `fields`,
//! a table_aggregate's group key and arguments, the fields joins take
//! from a table step's rows,
//! the event-time field. One that reads `value` as a whole (`str(value)`) or
//! leaves the direct evaluator's subset turns projection off for the source,
//! and so does a map with `drop` or `keep` (kept simple: rare, and it would
//! have to edit the raw record).

use std::collections::BTreeSet;

use super::*;
use crate::processor::table_aggregate::{REGROUP_ADD, REGROUP_SUB};

/// Set `project` on every JSON source.
pub(super) fn projections(nodes: &mut [Node]) {
    for id in 0..nodes.len() {
        let fields = match &nodes[id].kind {
            NodeKind::Source(s) if s.value == ValueFormat::Json => needed(nodes, id, s),
            _ => continue,
        };
        if let NodeKind::Source(s) = &mut nodes[id].kind {
            s.project = fields;
        }
    }
}

fn add(fields: &mut BTreeSet<String>, e: &Expr) -> Option<()> {
    fields.extend(e.value_fields()?);
    Some(())
}

/// The fields the nodes below `source` read, up to the nodes that make new
/// records (windows); `None`: the whole value.
fn needed(nodes: &[Node], source: NodeId, s: &SourceNode) -> Option<Vec<String>> {
    let mut fields = BTreeSet::new();
    if let EventTime::Field { field, .. } = &s.event_time {
        fields.insert(field.clone());
    }
    let mut seen = vec![false; nodes.len()];
    let mut stack = nodes[source].children.clone();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id], true) {
            continue;
        }
        let mut forwards = true;
        match &nodes[id].kind {
            NodeKind::Source(_) => return None,
            NodeKind::Pass => {}
            NodeKind::Filter(e) => add(&mut fields, e)?,
            NodeKind::Map(m) => {
                if !m.drop.is_empty() || m.keep.is_some() {
                    return None;
                }
                for (_, e) in &m.set {
                    add(&mut fields, e)?;
                }
            }
            NodeKind::Window(w) => {
                for a in &w.aggregates {
                    if let Some(e) = &a.arg {
                        add(&mut fields, e)?;
                    }
                }
                // Its children get the window's own result records.
                forwards = false;
            }
            NodeKind::Table(t) => {
                if let Some(e) = &t.newest_by {
                    add(&mut fields, e)?;
                }
                // What joins read of its stored rows.
                for node in nodes {
                    if let NodeKind::Join(j) = &node.kind {
                        if matches!(j.side, JoinSide::Table { node, .. } if node == id) {
                            fields.extend(j.fields.iter().map(|(_, from)| from.clone()));
                        }
                    }
                }
            }
            NodeKind::Join(j) => {
                if let JoinSide::Global(_) = j.side {
                    add(&mut fields, &j.key)?
                }
            }
            NodeKind::TableAggregate(_) => {
                // It reads the changes its repartition source decodes.
                fields.extend([REGROUP_SUB.to_string(), REGROUP_ADD.to_string()]);
                forwards = false;
            }
            NodeKind::ToTopic(t) => {
                match &t.key {
                    ToTopicKey::Record => {}
                    ToTopicKey::Expr(e) => add(&mut fields, e)?,
                    ToTopicKey::Group(parts) => {
                        for e in parts {
                            add(&mut fields, e)?;
                        }
                    }
                    // It evaluates them on the new value (the old one comes
                    // whole from the table's store).
                    ToTopicKey::Regroup(r) => {
                        for e in r.group.iter().chain(r.args.iter().filter_map(|(_, a)| a.as_ref())) {
                            add(&mut fields, e)?;
                        }
                    }
                }
                if let Some(f) = &t.fields {
                    fields.extend(f.iter().cloned());
                }
            }
        }
        if forwards {
            stack.extend(&nodes[id].children);
        }
    }
    Some(fields.into_iter().collect())
}
