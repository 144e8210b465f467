//! Table aggregation: a table's current rows aggregated by a new key,
//! Kafka Streams' `KTable.groupBy(...).aggregate(adder, subtractor)`.
//!
//! It runs in two halves around a repartition topic. On the table's side,
//! [`regroup`] turns each change of a row (its old value, from the table's
//! store, and its new one) into a subtraction from the old value's group
//! and an addition to the new value's group, keyed by the group: one
//! record `{"sub": [..], "add": [..]}` when both are the same group (so the
//! group changes once, with no intermediate result: Kafka Streams'
//! KIP-904), else the subtraction first and then the addition. The arrays
//! hold each aggregate's argument evaluated on that value (`null` for
//! `count()`), so the other side needs no expression. A row whose group or
//! arguments cannot be evaluated is dead-lettered when the table takes it
//! ([`check`]) and never counted, so leaving is no subtraction either.
//!
//! On the group's side, [`process`] keeps per group the number of rows and
//! a running [`Acc`] per aggregate (count, sum and avg: the ones a value
//! can be taken back out of), and forwards the group's new value: group
//! fields and aggregates, keyed by the group values joined by `|`, stamped
//! with the change's timestamp. A group left with no rows is deleted and
//! forwarded as a tombstone. With `emit: on_commit` the newest value per
//! group waits for the commit, like a table's.

use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value;
use serde::{Deserialize, Serialize};

use super::aggregate::{Acc, Scalar};
use super::window::group_parts;
use super::{codec, Ctx, ProcessError, Record};
use crate::state::{decode, encode, Store};
use crate::topology::{AggKind, NodeId, NodeKind, Regroup, TableAggregateNode, TableEmitSpec, ToTopic, ToTopicKey};

/// Field of a change record holding the arguments to subtract.
pub(crate) const REGROUP_SUB: &str = "sub";
/// Field of a change record holding the arguments to add.
pub(crate) const REGROUP_ADD: &str = "add";

/// What the store keeps per group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GroupState {
    rows: u64,
    accs: Vec<Acc>,
}

/// A row's part in the aggregation: its group key (a JSON array) and the
/// argument of each aggregate.
struct Contribution {
    group: Vec<u8>,
    args: Vec<serde_json::Value>,
}

/// Whether [`contribution`] would succeed, without building it.
fn evaluable(ctx: &Ctx<'_, '_>, r: &Regroup, rec: &Record) -> Result<(), String> {
    let input = ctx.input(rec);
    for e in &r.group {
        e.eval(&input).map_err(|e| e.0)?;
    }
    for (kind, arg) in &r.args {
        if let Some(e) = arg {
            number_if_summed(*kind, e, e.eval(&input).map_err(|e| e.0)?)?;
        }
    }
    Ok(())
}

/// `v` itself, unless `kind` sums or averages and `v` is not a number.
fn number_if_summed(kind: AggKind, e: &crate::topology::Expr, v: Value) -> Result<Value, String> {
    let numeric = matches!(v, Value::Null | Value::Int(_) | Value::UInt(_) | Value::Float(_));
    if matches!(kind, AggKind::Sum | AggKind::Avg) && !numeric {
        return Err(format!(
            "table_aggregate: {}({}) needs a number, got {}",
            if kind == AggKind::Sum { "sum" } else { "avg" },
            e.source(),
            codec::to_json(&v)
        ));
    }
    Ok(v)
}

fn contribution(ctx: &Ctx<'_, '_>, r: &Regroup, rec: &Record) -> Result<Contribution, String> {
    let input = ctx.input(rec);
    let mut group = Vec::with_capacity(r.group.len());
    for e in &r.group {
        group.push(codec::to_json(&e.eval(&input).map_err(|e| e.0)?));
    }
    let mut args = Vec::with_capacity(r.args.len());
    for (kind, arg) in &r.args {
        let Some(e) = arg else {
            args.push(serde_json::Value::Null);
            continue;
        };
        let v = number_if_summed(*kind, e, e.eval(&input).map_err(|e| e.0)?)?;
        args.push(codec::to_json(&v));
    }
    Ok(Contribution {
        group: serde_json::Value::Array(group).to_string().into_bytes(),
        args,
    })
}

/// Dead-letter `rec`, just taken by table `table`, for each table_aggregate
/// reading the table that cannot evaluate its group or arguments on it.
/// Done when the record comes, with its origin (a table emitting at the
/// commit hands it on later, when the input record is long gone); the row
/// then counts in no group of that aggregate.
pub(crate) fn check(ctx: &mut Ctx<'_, '_>, table: NodeId, rec: &Record) {
    let topo = ctx.topo;
    for &child in &topo.nodes[table].children {
        if let NodeKind::ToTopic(ToTopic {
            key: ToTopicKey::Regroup(r),
            ..
        }) = &topo.nodes[child].kind
        {
            if let Err(reason) = evaluable(ctx, r, rec) {
                ctx.dead_letter(child, &reason, Some(rec));
            }
        }
    }
}

/// Write a table row's change to the repartition topic `s` (the writing
/// half of a table_aggregate).
pub(crate) fn regroup(ctx: &mut Ctx<'_, '_>, s: &ToTopic, r: &Regroup, rec: &Record) {
    // The old value was counted when it came (or failed then too).
    let old = rec.old.as_ref().and_then(|value| {
        let old = Record {
            key: rec.key.clone(),
            value: value.clone(),
            timestamp: rec.timestamp,
            raw: None,
            tombstone: false,
            old: None,
        };
        contribution(ctx, r, &old).ok()
    });
    // A value that cannot be evaluated was dead-lettered when the table
    // took it (`check`): it counts nowhere.
    let new = (!rec.tombstone).then(|| contribution(ctx, r, rec).ok()).flatten();
    let mut write = |group: Vec<u8>, sub: Option<Vec<serde_json::Value>>, add: Option<Vec<serde_json::Value>>| {
        let mut value = serde_json::Map::new();
        if let Some(sub) = sub {
            value.insert(REGROUP_SUB.into(), serde_json::Value::Array(sub));
        }
        if let Some(add) = add {
            value.insert(REGROUP_ADD.into(), serde_json::Value::Array(add));
        }
        let bytes = serde_json::Value::Object(value).to_string().into_bytes();
        ctx.push_output(s, Some(group), Some(bytes), rec.timestamp);
    };
    match (old, new) {
        (Some(old), Some(new)) if old.group == new.group => write(new.group, Some(old.args), Some(new.args)),
        (old, new) => {
            if let Some(old) = old {
                write(old.group, Some(old.args), None);
            }
            if let Some(new) = new {
                write(new.group, None, Some(new.args));
            }
        }
    }
}

/// The arguments under `field` of a change record, one per aggregate
/// (`None` for `count()`); `Ok(None)` when the field is absent.
fn arguments(a: &TableAggregateNode, value: &Value, field: &str) -> Result<Option<Vec<Option<Scalar>>>, String> {
    let Value::Map(m) = value else {
        return Err("table_aggregate: a change record is a JSON object".into());
    };
    let Some(list) = m.map.get(&Key::String(Arc::new(field.to_string()))) else {
        return Ok(None);
    };
    let Value::List(items) = list else {
        return Err(format!("table_aggregate: `{field}` of a change record is an array"));
    };
    if items.len() != a.aggregates.len() {
        return Err(format!(
            "table_aggregate: `{field}` has {} arguments for {} aggregates (was the topology changed without `weir reset`?)",
            items.len(),
            a.aggregates.len()
        ));
    }
    Ok(Some(
        a.has_arg
            .iter()
            .zip(items.iter())
            .map(|(&has_arg, v)| has_arg.then(|| Scalar::from_value(v)))
            .collect(),
    ))
}

pub(crate) fn process(
    ctx: &mut Ctx<'_, '_>,
    id: NodeId,
    a: &TableAggregateNode,
    rec: &Record,
) -> Result<(), ProcessError> {
    let Some(group) = super::key_bytes(&rec.key) else {
        ctx.dead_letter(id, "table_aggregate: null group key", Some(rec));
        return Ok(());
    };
    let (sub, add) = match (
        arguments(a, &rec.value, REGROUP_SUB),
        arguments(a, &rec.value, REGROUP_ADD),
    ) {
        (Ok(sub), Ok(add)) => (sub, add),
        (Err(reason), _) | (_, Err(reason)) => {
            ctx.dead_letter(id, &reason, Some(rec));
            return Ok(());
        }
    };
    let store_name = &ctx.topo.stores[a.store].name;
    let stored = match ctx.store(a.store)?.get(&group)? {
        Some(bytes) => Some(decode::<GroupState>(store_name, &bytes)?),
        None => None,
    };
    let parts = group_parts(&String::from_utf8_lossy(&group));
    // The group's value before, for its tombstone's `to.key`: only a
    // subtraction without an addition can empty it.
    let before = match (&sub, &add, &stored) {
        (Some(_), None, Some(state)) => Some(result_value(a, &parts, state)),
        _ => None,
    };
    let mut state = stored.unwrap_or_else(|| GroupState {
        rows: 0,
        accs: a.aggregates.iter().map(|agg| Acc::for_table(agg.kind)).collect(),
    });
    if let Some(sub) = sub {
        if state.rows == 0 {
            // Only if the group's store lost what the table's still has.
            tracing::warn!(processor = %ctx.topo.nodes[id].name, group = %String::from_utf8_lossy(&group), "table_aggregate: a row leaves a group that holds none; ignored");
        } else {
            state.rows -= 1;
            for (acc, v) in state.accs.iter_mut().zip(&sub) {
                acc.remove(v.as_ref());
            }
        }
    }
    if let Some(add) = add {
        state.rows += 1;
        for (acc, v) in state.accs.iter_mut().zip(&add) {
            if let Err(e) = acc.add(v.as_ref()) {
                ctx.dead_letter(id, &format!("aggregate: {e}"), Some(rec));
                return Ok(());
            }
        }
    }
    let key = Value::String(Arc::new(output_key(&parts)));
    let out = if state.rows == 0 {
        if before.is_none() {
            return Ok(());
        }
        ctx.store(a.store)?.delete(group.clone());
        Record {
            key,
            value: Value::Null,
            timestamp: rec.timestamp,
            raw: None,
            tombstone: true,
            old: before,
        }
    } else {
        let value = result_value(a, &parts, &state);
        ctx.store(a.store)?.put(group.clone(), encode(&state));
        Record {
            key,
            value,
            timestamp: rec.timestamp,
            raw: None,
            tombstone: false,
            old: None,
        }
    };
    match a.emit {
        TableEmitSpec::OnUpdate => ctx.forward(id, out),
        TableEmitSpec::OnCommit => {
            let cache = &mut ctx.table_cache[id];
            cache.insert(group, out);
            if cache.len() >= super::table::CACHE_MAX_KEYS {
                super::table::emit(ctx, id)?;
            }
            Ok(())
        }
    }
}

/// A stored group as an interactive query answers it (see `query`): the
/// value its last output carried.
pub(crate) fn queried_group(
    a: &TableAggregateNode,
    store: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<serde_json::Value, crate::state::StoreError> {
    let state = decode::<GroupState>(store, bytes)?;
    let parts = group_parts(&String::from_utf8_lossy(key));
    Ok(codec::json_value(&result_value(a, &parts, &state)))
}

/// The output key: the group values as text, joined by `|`.
fn output_key(parts: &[Value]) -> String {
    parts.iter().map(codec::to_text).collect::<Vec<_>>().join("|")
}

/// A group's value: its fields, then the aggregates.
fn result_value(a: &TableAggregateNode, parts: &[Value], state: &GroupState) -> Value {
    let mut fields = std::collections::HashMap::new();
    for (name, v) in a.group_names.iter().zip(parts) {
        fields.insert(Key::String(Arc::new(name.clone())), v.clone());
    }
    for (agg, acc) in a.aggregates.iter().zip(&state.accs) {
        fields.insert(Key::String(Arc::new(agg.name.clone())), acc.result());
    }
    Value::Map(Map { map: Arc::new(fields) })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value as Json};

    use crate::testkit::{run, InputRecord};
    use crate::topology::Topology;

    fn topology(table: &str, emit: &str) -> Topology {
        Topology::parse(&format!(
            r#"
application_id: t
sources: {{ s: {{ topic: in }} }}
steps:
  - name: latest
    table: {{ key: key{table} }}
  - name: by-g
    from: latest
    table_aggregate:
      group_by: {{ g: value.G }}
      aggregate: {{ total: sum(N), rows: count(), mean: avg(N), with_n: count(N) }}
      emit: {emit}
    to: {{ topic: out }}
"#
        ))
        .unwrap()
    }

    fn rec(ts: i64, key: &str, value: Json) -> InputRecord {
        InputRecord {
            topic: "in".into(),
            partition: 0,
            timestamp: ts,
            key: Some(key.into()),
            value: Some(value.to_string()),
            value_json: None,
            value_base64: None,
        }
    }

    /// (key, value or null, timestamp) of the `out` records.
    fn outputs(t: &Topology, input: &[InputRecord]) -> Vec<(String, Json, i64)> {
        run(t, input, false)
            .unwrap()
            .into_iter()
            .filter(|o| o.topic == "out")
            .map(|o| (o.key.unwrap_or_default(), o.value, o.timestamp))
            .collect()
    }

    fn group(g: &str, total: i64, rows: i64, mean: Option<f64>, with_n: i64) -> Json {
        json!({"g": g, "total": total, "rows": rows, "mean": mean, "with_n": with_n})
    }

    #[test]
    fn a_changed_row_moves_its_contribution_and_a_group_left_empty_is_deleted() {
        let t = topology("", "on_update");
        let out = outputs(
            &t,
            &[
                rec(1, "lot1", json!({"G": "a", "N": 10})),
                rec(2, "lot2", json!({"G": "a", "N": 4})),
                // Same group: one update (no intermediate without lot1).
                rec(3, "lot1", json!({"G": "a", "N": 6})),
                // Another group: the old one first, then the new one.
                rec(4, "lot2", json!({"G": "b", "N": 5})),
                // A null argument: counted as a row, not in sum/avg/count(N).
                rec(5, "lot3", json!({"G": "b", "N": null})),
                // The last row of a leaves: a's tombstone.
                rec(6, "lot1", json!({"G": "b", "N": 1})),
            ],
        );
        assert_eq!(
            out,
            [
                ("a".into(), group("a", 10, 1, Some(10.0), 1), 1),
                ("a".into(), group("a", 14, 2, Some(7.0), 2), 2),
                ("a".into(), group("a", 10, 2, Some(5.0), 2), 3),
                ("a".into(), group("a", 6, 1, Some(6.0), 1), 4),
                ("b".into(), group("b", 5, 1, Some(5.0), 1), 4),
                ("b".into(), group("b", 5, 2, Some(5.0), 1), 5),
                ("a".into(), Json::Null, 6),
                ("b".into(), group("b", 6, 3, Some(3.0), 2), 6),
            ]
        );
    }

    #[test]
    fn a_sum_is_an_integer_again_once_the_last_fraction_left() {
        let t = topology("", "on_update");
        let out = outputs(
            &t,
            &[
                rec(1, "lot1", json!({"G": "a", "N": 1})),
                rec(2, "lot2", json!({"G": "a", "N": 0.1})),
                rec(3, "lot3", json!({"G": "a", "N": 0.2})),
                rec(4, "lot2", json!({"G": "a", "N": 2})),
                rec(5, "lot3", json!({"G": "a", "N": 3})),
            ],
        );
        let totals: Vec<Json> = out.iter().map(|(_, v, _)| v["total"].clone()).collect();
        assert_eq!(totals[2], json!(1.3));
        // No 5.999999999999999 left over from 0.1 and 0.2, and an integer.
        assert_eq!(totals[4], json!(6), "{totals:?}");
        assert!(totals[4].is_i64());
    }

    #[test]
    fn a_row_the_table_forgets_leaves_its_group_at_the_expiry_time() {
        let t = topology(", ttl: 10s", "on_update");
        let out = outputs(
            &t,
            &[
                rec(0, "lot1", json!({"G": "a", "N": 3})),
                rec(5_000, "lot2", json!({"G": "a", "N": 4})),
                // Stream time reaches lot1's update + ttl exactly.
                rec(10_000, "lot2", json!({"G": "a", "N": 4})),
                // lot2 (updated at 10 s) expires at 20 s: a is empty.
                rec(20_000, "lot9", json!({"G": "z", "N": 1})),
            ],
        );
        assert_eq!(
            out,
            [
                ("a".into(), group("a", 3, 1, Some(3.0), 1), 0),
                ("a".into(), group("a", 7, 2, Some(3.5), 2), 5_000),
                ("a".into(), group("a", 7, 2, Some(3.5), 2), 10_000),
                ("a".into(), group("a", 4, 1, Some(4.0), 1), 10_000),
                ("z".into(), group("z", 1, 1, Some(1.0), 1), 20_000),
                ("a".into(), Json::Null, 20_000),
            ]
        );
    }

    #[test]
    fn stale_rows_change_nothing_and_bad_arguments_are_dead_lettered_and_never_counted() {
        let t = Topology::parse(
            r#"
application_id: t
dead_letter: dlq
sources: { s: { topic: in } }
steps:
  - name: latest
    table: { key: key, newest_by: value.V }
  - name: by-g
    from: latest
    table_aggregate:
      group_by: { g: value.G }
      aggregate: { total: sum(N) }
    to: { topic: out }
"#,
        )
        .unwrap();
        let all = run(
            &t,
            &[
                rec(1, "lot1", json!({"G": "a", "N": 2, "V": 5})),
                // Older by newest_by: dropped by the table, nothing here.
                rec(2, "lot1", json!({"G": "a", "N": 100, "V": 4})),
                // Not a number: dead-lettered, the row is in no group...
                rec(3, "lot2", json!({"G": "a", "N": "many", "V": 1})),
                // ...so its next value is only added.
                rec(4, "lot2", json!({"G": "a", "N": 1, "V": 2})),
            ],
            false,
        )
        .unwrap();
        let out: Vec<(String, Json)> = all
            .iter()
            .filter(|o| o.topic == "out")
            .map(|o| (o.key.clone().unwrap(), o.value.clone()))
            .collect();
        assert_eq!(
            out,
            [
                ("a".into(), json!({"g": "a", "total": 2})),
                ("a".into(), json!({"g": "a", "total": 3})),
            ]
        );
        let dead: Vec<&String> = all
            .iter()
            .filter(|o| o.topic == "dlq")
            .filter_map(|o| o.headers.get("weir.error"))
            .collect();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert!(dead[0].contains("sum(value.N) needs a number"), "{dead:?}");
    }

    #[test]
    fn on_commit_sends_each_group_once_per_commit_with_its_final_value() {
        use crate::processor::{Origin, OutputKind, Task};
        let t = topology(", emit: on_commit", "on_commit");
        let (mut table, mut agg) = (Task::in_memory(&t, 0, 0), Task::in_memory(&t, 1, 0));
        let mut repartition = Vec::new();
        for (ts, key, value) in [
            (1, "lot1", json!({"G": "a", "N": 1})),
            (2, "lot1", json!({"G": "a", "N": 2})),
            (3, "lot2", json!({"G": "b", "N": 3})),
            (4, "lot2", json!({"G": "a", "N": 3})),
        ] {
            let value = value.to_string();
            let origin = Origin {
                topic: "in",
                partition: 0,
                offset: ts,
                timestamp: ts,
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
            };
            table.process(&t, &origin, ts, &mut repartition).unwrap();
        }
        assert!(repartition.is_empty(), "the table holds its rows until the commit");
        table.emit_cached(&t, &mut repartition).unwrap();
        let mut results = Vec::new();
        for (i, r) in repartition.iter().enumerate() {
            assert_eq!(r.kind, OutputKind::Repartition);
            let origin = Origin {
                topic: &r.topic,
                partition: 0,
                offset: i as i64,
                timestamp: r.timestamp,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
            };
            agg.process(&t, &origin, r.timestamp, &mut results).unwrap();
        }
        agg.emit_cached(&t, &mut results).unwrap();
        let out: Vec<(String, Json)> = results
            .iter()
            .map(|o| {
                let value = serde_json::from_slice(o.value.as_deref().unwrap()).unwrap();
                (String::from_utf8(o.key.clone().unwrap()).unwrap(), value)
            })
            .collect();
        // b never went out, so there is nothing to delete downstream.
        assert_eq!(out, [("a".into(), group("a", 5, 2, Some(2.5), 2))]);
    }

    #[test]
    fn only_retractable_aggregates_over_a_table_are_accepted() {
        let base = "application_id: t\nsources: { s: { topic: in } }\nsteps:\n  - name: latest\n    table: { key: key }\n  - name: agg\n    from: latest\n    table_aggregate:\n      group_by: { g: value.G }\n      aggregate: { top: max(N) }\n";
        let errors: Vec<String> = Topology::parse(base)
            .unwrap_err()
            .into_iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect();
        assert!(
            errors
                .iter()
                .any(|m| m.starts_with("10:") && m.contains("max(N) cannot be kept over a table")),
            "{errors:?}"
        );
        let not_a_table = base
            .replace("table: { key: key }", "filter: value.G != \"\"")
            .replace("max(N)", "sum(N)");
        let errors: Vec<String> = Topology::parse(&not_a_table)
            .unwrap_err()
            .into_iter()
            .map(|d| d.message)
            .collect();
        assert!(
            errors
                .iter()
                .any(|m| m.contains("reads `latest`, which is not a table")),
            "{errors:?}"
        );
        let reads_the_aggregate = format!(
            "{}  - name: after\n    from: agg\n    filter: value.top > 0\n",
            base.replace("max(N)", "sum(N)")
        );
        let errors: Vec<String> = Topology::parse(&reads_the_aggregate)
            .unwrap_err()
            .into_iter()
            .map(|d| d.message)
            .collect();
        assert!(
            errors.iter().any(|m| m.contains("reads from table_aggregate `agg`")),
            "{errors:?}"
        );
        let ok = Topology::parse(&base.replace("max(N)", "sum(N)")).unwrap();
        let text = crate::topology::describe::text(&ok);
        assert!(
            text.contains("Sink: agg-repartition-sink (topic: agg-repartition)"),
            "{text}"
        );
        assert!(text.contains("Processor: agg (stores: [agg])"), "{text}");
    }
}
