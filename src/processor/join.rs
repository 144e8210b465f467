//! Joins: each record is looked up in a table and the row's named fields
//! are added to it. `inner`: a record without a row is dropped (counted as
//! `reason="join_miss"`); `left`: it goes on with the fields null. Only
//! stream records look up; a table update produces nothing.
//!
//! - A global table (`global:`, every row on every instance, see
//!   `state::global`): Kafka Streams' `KStream.join(GlobalKTable,
//!   keySelector, joiner)`. Not co-partitioned and not time-synchronised:
//!   a record sees the row the table holds when it is processed; its `key`
//!   expression is what is looked up.
//! - A table step (`table:`): Kafka Streams' `KStream.join(KTable,
//!   joiner)`. The join runs in the table's task (compilation put it in
//!   the table's sub-topology, repartitioning the stream by the join key
//!   when that is not its key), so the record's key is the table key and
//!   the table's store holds its row: the row as it is when the record is
//!   processed, not as it was at the record's timestamp (Kafka Streams'
//!   non-versioned tables). A key the table's `ttl` has forgotten is a
//!   miss.

use cel::objects::Key;
use cel::Value;

use super::{codec, Ctx, ProcessError, Record};
use crate::topology::{JoinNode, JoinSide, NodeId, NodeKind};

pub(crate) fn process(ctx: &mut Ctx<'_, '_>, id: NodeId, j: &JoinNode, rec: Record) -> Result<(), ProcessError> {
    if !matches!(rec.value, Value::Map(_)) {
        ctx.dead_letter(id, "join needs a JSON object value", Some(&rec));
        return Ok(());
    }
    let found = match j.side {
        JoinSide::Global(global) => {
            let key = match j.key.eval(&ctx.input(&rec)) {
                Ok(v) => codec::to_text(&v).into_bytes(),
                Err(err) => {
                    ctx.dead_letter(id, &err.0, Some(&rec));
                    return Ok(());
                }
            };
            ctx.globals
                .lookup(global, &key, &j.fields)
                .map(|values| values.into_iter().map(codec::from_json).collect::<Vec<_>>())
        }
        JoinSide::Table { node, .. } => table_row(ctx, node, j, &rec)?,
    };
    let values = match found {
        Some(values) => values,
        None if j.left => vec![Value::Null; j.fields.len()],
        None => {
            ctx.stats.dropped_join_miss += 1;
            return Ok(());
        }
    };
    let out = rec.edit_fields(|fields| {
        for ((name, _), v) in j.fields.iter().zip(values) {
            fields.insert(Key::String(name.clone()), v);
        }
    });
    ctx.forward(id, out)
}

/// The joined fields of the table row keyed by the record's key (a field
/// the row lacks is null), or `None` without a row. A record without a
/// key finds none (Kafka Streams' left join since KIP-962 too).
fn table_row(
    ctx: &mut Ctx<'_, '_>,
    node: NodeId,
    j: &JoinNode,
    rec: &Record,
) -> Result<Option<Vec<Value>>, ProcessError> {
    let topo = ctx.topo;
    let NodeKind::Table(t) = &topo.nodes[node].kind else {
        return Ok(None);
    };
    let Some(key) = super::key_bytes(&rec.key) else {
        return Ok(None);
    };
    let Some(row) = super::table::row(ctx, t, &key)? else {
        return Ok(None);
    };
    let field = |name: &str| match &row {
        Some(Value::Map(m)) => m
            .map
            .get(&Key::String(std::sync::Arc::new(name.to_string())))
            .cloned()
            .unwrap_or(Value::Null),
        _ => Value::Null,
    };
    Ok(Some(j.fields.iter().map(|(_, from)| field(from)).collect()))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value as Json};

    use crate::testkit::{run, InputRecord};
    use crate::topology::Topology;

    fn topology(how: &str) -> Topology {
        Topology::parse(&format!(
            r#"
application_id: t
sources: {{ s: {{ topic: in }} }}
global_tables: {{ spots: {{ topic: hotspots }} }}
steps:
  - name: named
    join: {{ global: spots, key: value.CODE, how: {how}, fields: {{ SPOT: name, KIND: kind }} }}
    to: {{ topic: out }}
"#
        ))
        .unwrap()
    }

    fn rec(topic: &str, ts: i64, key: &str, value: Option<Json>) -> InputRecord {
        InputRecord {
            topic: topic.into(),
            partition: 0,
            timestamp: ts,
            key: Some(key.into()),
            value: value.map(|v| v.to_string()),
            value_json: None,
            value_base64: None,
        }
    }

    fn input() -> Vec<InputRecord> {
        vec![
            rec(
                "hotspots",
                1,
                "P1",
                Some(json!({"code": "P1", "name": "Gangnam", "kind": "zone"})),
            ),
            rec("in", 2, "lot1", Some(json!({"CODE": "P1", "N": 1}))),
            // No row for P2 yet.
            rec("in", 3, "lot2", Some(json!({"CODE": "P2", "N": 2}))),
            // A row changes and another comes: records from then on see them.
            rec("hotspots", 4, "P1", Some(json!({"code": "P1", "name": "Gangnam 2"}))),
            rec(
                "hotspots",
                5,
                "P2",
                Some(json!({"code": "P2", "name": "Hongdae", "kind": "street"})),
            ),
            rec("in", 6, "lot1", Some(json!({"CODE": "P1", "N": 3}))),
            rec("in", 7, "lot2", Some(json!({"CODE": "P2", "N": 4}))),
            // A tombstone deletes the row.
            rec("hotspots", 8, "P2", None),
            rec("in", 9, "lot2", Some(json!({"CODE": "P2", "N": 5}))),
        ]
    }

    fn outputs(t: &Topology) -> Vec<(i64, Json)> {
        run(t, &input(), false)
            .unwrap()
            .into_iter()
            .map(|o| {
                assert_eq!(o.topic, "out");
                (o.timestamp, o.value)
            })
            .collect()
    }

    #[test]
    fn an_inner_join_adds_the_row_it_finds_when_the_record_comes_and_drops_records_without_one() {
        assert_eq!(
            outputs(&topology("inner")),
            [
                (2, json!({"CODE": "P1", "N": 1, "SPOT": "Gangnam", "KIND": "zone"})),
                (6, json!({"CODE": "P1", "N": 3, "SPOT": "Gangnam 2", "KIND": null})),
                (7, json!({"CODE": "P2", "N": 4, "SPOT": "Hongdae", "KIND": "street"})),
            ]
        );
    }

    #[test]
    fn a_left_join_keeps_records_without_a_row_with_the_fields_null() {
        let out = outputs(&topology("left"));
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(out[1], (3, json!({"CODE": "P2", "N": 2, "SPOT": null, "KIND": null})));
        assert_eq!(out[4], (9, json!({"CODE": "P2", "N": 5, "SPOT": null, "KIND": null})));
    }

    #[test]
    fn a_join_names_a_declared_global_table_and_describe_shows_it() {
        let bad = "application_id: t\nsources: { s: { topic: in } }\nglobal_tables: { spots: { topic: hotspots } }\n\
                   steps:\n  - name: j\n    join: { global: spot, key: value.CODE, fields: { S: name } }\n";
        let errors: Vec<String> = Topology::parse(bad)
            .unwrap_err()
            .into_iter()
            .map(|d| format!("{}:{} {} {:?}", d.line, d.column, d.message, d.hint))
            .collect();
        assert!(
            errors
                .iter()
                .any(|m| m.starts_with("6:") && m.contains("unknown global table `spot`") && m.contains("spots")),
            "{errors:?}"
        );
        let t = topology("left");
        let text = crate::topology::describe::text(&t);
        assert!(
            text.contains("Sub-topology: 1 for global store (will not generate tasks)\n    Source: spots-source (topics: [hotspots])"),
            "{text}"
        );
        let m = crate::topology::describe::mermaid(&t);
        assert!(m.contains("left join spots on value.CODE: SPOT, KIND"), "{m}");
        assert!(m.contains("t_hotspots -. lookup .-> named"), "{m}");
        assert_eq!(
            t.external_source_topics(),
            ["in"],
            "a global table is not a stream source"
        );
    }

    // ------------------------------------------------ joins with a table step

    /// A stream `in` joined with a table step over topic `lots`; `key` is
    /// the join key expression, `table` extra settings of the table.
    fn table_topology(how: &str, key: &str, table: &str) -> Topology {
        Topology::parse(&format!(
            r#"
application_id: t
dead_letter: dlq
sources:
  s: {{ topic: in }}
  l: {{ topic: lots }}
steps:
  - name: lots-table
    from: l
    table: {{ key: key{table} }}
  - name: with-lot
    from: s
    join: {{ table: lots-table, key: {key}, how: {how}, fields: {{ LOT_NAME: name, CAP: capacity }} }}
    to: {{ topic: out }}
"#
        ))
        .unwrap()
    }

    fn on(partition: i32, r: InputRecord) -> InputRecord {
        InputRecord { partition, ..r }
    }

    /// (timestamp, key, value) of each output.
    fn joined(t: &Topology, input: &[InputRecord]) -> Vec<(i64, String, Json)> {
        run(t, input, false)
            .unwrap()
            .into_iter()
            .map(|o| {
                assert_eq!(o.topic, "out", "{o:?}");
                (o.timestamp, o.key.unwrap_or_default(), o.value)
            })
            .collect()
    }

    fn co_partitioned_input() -> Vec<InputRecord> {
        vec![
            // Before the table has the row: a miss.
            on(0, rec("in", 10, "A", Some(json!({"N": 1})))),
            on(
                0,
                rec(
                    "lots",
                    20,
                    "A",
                    Some(json!({"name": "Alpha", "capacity": 5, "extra": true})),
                ),
            ),
            // Partition 1's task has its own rows: B only.
            on(1, rec("lots", 21, "B", Some(json!({"name": "Beta"})))),
            on(0, rec("in", 30, "A", Some(json!({"N": 2})))),
            on(1, rec("in", 31, "B", Some(json!({"N": 3})))),
            // A on partition 1 is another task's key: no row there.
            on(1, rec("in", 32, "A", Some(json!({"N": 7})))),
            // A table update changes what later records see, and emits nothing.
            on(0, rec("lots", 40, "A", Some(json!({"name": "Alpha 2", "capacity": 6})))),
            // A late stream record sees the row as it is now.
            on(0, rec("in", 15, "A", Some(json!({"N": 4})))),
            // A stale table update (older than the row) is dropped by the table.
            on(0, rec("lots", 35, "A", Some(json!({"name": "old"})))),
            on(0, rec("in", 50, "A", Some(json!({"N": 5})))),
            // No row for C anywhere.
            on(1, rec("in", 60, "C", Some(json!({"N": 6})))),
        ]
    }

    #[test]
    fn an_inner_join_with_a_table_sees_the_current_row_of_its_partition_and_only_stream_records_emit() {
        assert_eq!(
            joined(&table_topology("inner", "key", ""), &co_partitioned_input()),
            [
                (30, "A".to_string(), json!({"N": 2, "LOT_NAME": "Alpha", "CAP": 5})),
                (31, "B".to_string(), json!({"N": 3, "LOT_NAME": "Beta", "CAP": null})),
                (15, "A".to_string(), json!({"N": 4, "LOT_NAME": "Alpha 2", "CAP": 6})),
                (50, "A".to_string(), json!({"N": 5, "LOT_NAME": "Alpha 2", "CAP": 6})),
            ]
        );
    }

    #[test]
    fn a_left_join_with_a_table_keeps_the_misses_with_null_fields() {
        let out = joined(&table_topology("left", "key", ""), &co_partitioned_input());
        let misses: Vec<_> = out.iter().filter(|(_, _, v)| v["LOT_NAME"].is_null()).collect();
        assert_eq!(
            misses,
            [
                &(10, "A".to_string(), json!({"N": 1, "LOT_NAME": null, "CAP": null})),
                &(32, "A".to_string(), json!({"N": 7, "LOT_NAME": null, "CAP": null})),
                &(60, "C".to_string(), json!({"N": 6, "LOT_NAME": null, "CAP": null})),
            ]
        );
        assert_eq!(out.len(), 7, "{out:?}");
    }

    #[test]
    fn an_inner_join_counts_its_misses() {
        let t = table_topology("inner", "key", "");
        let mut task = crate::processor::Task::in_memory(&t, 0, 0);
        let mut out = Vec::new();
        for r in co_partitioned_input().iter().filter(|r| r.partition == 1) {
            let value = r.value.as_deref().map(str::as_bytes);
            let origin = crate::processor::Origin {
                topic: &r.topic,
                partition: 1,
                offset: 0,
                timestamp: r.timestamp,
                key: r.key.as_deref().map(str::as_bytes),
                value,
            };
            task.process(&t, &origin, r.timestamp, &mut out).unwrap();
        }
        assert_eq!(task.stats.dropped_join_miss, 2);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn a_stream_keyed_otherwise_is_repartitioned_by_the_join_key() {
        let t = table_topology("left", "value.LOT", "");
        // Two lots on different partitions of a 2-partition topic.
        let part = |k: &str| crate::kafka::partition_for(Some(k.as_bytes()), 2, 0);
        let b = ["B", "C", "D", "E", "F"]
            .into_iter()
            .find(|k| part(k) != part("A"))
            .unwrap();
        let input = vec![
            on(part("A"), rec("lots", 1, "A", Some(json!({"name": "Alpha"})))),
            on(part(b), rec("lots", 2, b, Some(json!({"name": "Beta"})))),
            // Keyed by sensor, on any partition: they meet A's and b's rows.
            on(1, rec("in", 3, "s1", Some(json!({"LOT": "A", "N": 1})))),
            on(0, rec("in", 4, "s2", Some(json!({"LOT": b, "N": 2})))),
            on(0, rec("in", 5, "s3", Some(json!({"LOT": "Z", "N": 3})))),
        ];
        assert_eq!(
            joined(&t, &input),
            [
                (
                    3,
                    "A".to_string(),
                    json!({"LOT": "A", "N": 1, "LOT_NAME": "Alpha", "CAP": null})
                ),
                (
                    4,
                    b.to_string(),
                    json!({"LOT": b, "N": 2, "LOT_NAME": "Beta", "CAP": null})
                ),
                (
                    5,
                    "Z".to_string(),
                    json!({"LOT": "Z", "N": 3, "LOT_NAME": null, "CAP": null})
                ),
            ]
        );
        let text = crate::topology::describe::text(&t);
        assert!(
            text.contains("Sink: with-lot-repartition-sink (topic: with-lot-repartition)"),
            "{text}"
        );
    }

    #[test]
    fn a_row_the_table_forgot_is_a_miss_from_the_record_after_the_one_that_passed_its_ttl() {
        let t = table_topology("left", "key", ", ttl: 10ms");
        let input = vec![
            rec("lots", 100, "A", Some(json!({"name": "Alpha"}))),
            // Stream time reaches 110 = last update + ttl with this record:
            // the row is forgotten after it.
            rec("in", 110, "A", Some(json!({"N": 1}))),
            rec("in", 111, "A", Some(json!({"N": 2}))),
            // A new row for the key.
            rec("lots", 112, "A", Some(json!({"name": "Alpha 2"}))),
            rec("in", 105, "A", Some(json!({"N": 3}))),
        ];
        let names: Vec<(i64, Json)> = joined(&t, &input)
            .into_iter()
            .map(|(ts, _, v)| (ts, v["LOT_NAME"].clone()))
            .collect();
        assert_eq!(
            names,
            [(110, json!("Alpha")), (111, Json::Null), (105, json!("Alpha 2"))]
        );
    }

    #[test]
    fn a_join_with_a_table_shares_the_tables_sub_topology_and_lists_its_store() {
        // The table's source comes first: its sub-topology still reads the
        // stream's repartition topic after the one writing it.
        let t = Topology::parse(
            r#"
application_id: t
sources:
  l: { topic: lots }
  s: { topic: in }
steps:
  - name: lots-table
    from: l
    table: { key: key }
  - name: with-lot
    from: s
    join: { table: lots-table, key: value.LOT, fields: { LOT_NAME: name } }
    to: { topic: out }
"#,
        )
        .unwrap();
        let text = crate::topology::describe::text(&t);
        let expected = "Topologies:
   Sub-topology: 0
    Source: s (topics: [in])
      --> with-lot-repartition-sink
    Sink: with-lot-repartition-sink (topic: with-lot-repartition)
      <-- s

  Sub-topology: 1
    Source: with-lot-repartition-source (topics: [with-lot-repartition])
      --> with-lot
    Source: l (topics: [lots])
      --> lots-table
    Processor: with-lot (stores: [lots-table])
      --> with-lot-to
      <-- with-lot-repartition-source
    Processor: lots-table (stores: [lots-table])
      --> none
      <-- l
    Sink: with-lot-to (topic: out)
      <-- with-lot

";
        assert_eq!(text, expected);
        let m = crate::topology::describe::mermaid(&t);
        assert!(m.contains("s_lots_table -. lookup .-> with_lot"), "{m}");
        assert!(m.contains("inner join lots-table on value.LOT: LOT_NAME"), "{m}");
    }

    #[test]
    fn a_stream_and_a_table_of_one_topic_join_through_a_repartition_topic_their_task_reads_too() {
        // Lots with their region's row: the table and the stream are the
        // same topic, the stream re-keyed by region.
        let t = Topology::parse(
            r#"
application_id: t
sources:
  l: { topic: lots }
steps:
  - name: rows
    table: { key: key }
  - name: with-region
    from: l
    join: { table: rows, key: value.REGION, how: left, fields: { REGION_NAME: name } }
    to: { topic: out }
"#,
        )
        .unwrap();
        assert_eq!(t.subtopology_count(), 1, "{}", crate::topology::describe::text(&t));
        let plan = t.partition_plan(&[("lots".to_string(), 3)].into_iter().collect());
        assert_eq!(plan.topics["t-with-region-repartition"], 3);
        let input = vec![
            rec("lots", 1, "R1", Some(json!({"name": "Region one", "REGION": "-"}))),
            rec("lots", 2, "L1", Some(json!({"name": "Lot one", "REGION": "R1"}))),
        ];
        let names: Vec<(String, Json)> = joined(&t, &input)
            .into_iter()
            .map(|(_, k, v)| (k, v["REGION_NAME"].clone()))
            .collect();
        assert_eq!(
            names,
            [("-".to_string(), Json::Null), ("R1".to_string(), json!("Region one"))]
        );
    }

    fn errors(steps: &str) -> Vec<String> {
        let yaml = format!(
            "application_id: t\nsources: {{ s: {{ topic: in }}, l: {{ topic: lots }} }}\n\
             global_tables: {{ spots: {{ topic: hotspots }} }}\nsteps:\n\
             \x20 - name: rows\n    from: l\n    table: {{ key: key }}\n\
             \x20 - name: only-some\n    from: s\n    filter: 'true'\n{steps}"
        );
        Topology::parse(&yaml)
            .unwrap_err()
            .into_iter()
            .map(|d| format!("{}: {} ({})", d.line, d.message, d.hint.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn validate_refuses_a_join_naming_both_tables_neither_or_no_table_step() {
        let cases = [
            (
                "{ global: spots, table: rows, key: key, fields: { X: x } }",
                "13: join `j` names both a global table and a table",
            ),
            ("{ key: key, fields: { X: x } }", "11: join `j` names no table"),
            (
                "{ table: rowz, key: key, fields: { X: x } }",
                "13: unknown table step `rowz` (did you mean `rows`?)",
            ),
            (
                "{ table: only-some, key: key, fields: { X: x } }",
                "13: join `j`: `only-some` is a filter step, not a `table` step",
            ),
            (
                "{ table: l, key: key, fields: { X: x } }",
                "13: join `j`: `l` is a source, not a `table` step",
            ),
            (
                "{ table: spots, key: key, fields: { X: x } }",
                "13: join `j`: `spots` is a global table",
            ),
        ];
        for (join, expected) in cases {
            let errs = errors(&format!("  - name: j\n    from: s\n    join: {join}\n"));
            assert!(errs.iter().any(|e| e.starts_with(expected)), "{join}: {errs:?}");
        }
    }
}
