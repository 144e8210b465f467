//! Stream–global-table join: each record's `key` expression is looked up
//! in a global table (every row on every instance, see `state::global`),
//! and the row's named fields are added to the record. Kafka Streams'
//! `KStream.join(GlobalKTable, keySelector, joiner)`: the table side is
//! not co-partitioned and not time-synchronised (a record sees the row the
//! table holds when it is processed); a table update produces nothing.
//! `inner`: a record without a row is dropped (counted as
//! `reason="join_miss"`); `left`: it goes on with the fields null.

use cel::objects::Key;
use cel::Value;

use super::{codec, Ctx, ProcessError, Record};
use crate::topology::{JoinNode, NodeId};

pub(crate) fn process(ctx: &mut Ctx<'_, '_>, id: NodeId, j: &JoinNode, rec: Record) -> Result<(), ProcessError> {
    if !matches!(rec.value, Value::Map(_)) {
        ctx.dead_letter(id, "join needs a JSON object value", Some(&rec));
        return Ok(());
    }
    let key = match j.key.eval(&ctx.input(&rec)) {
        Ok(v) => codec::to_text(&v).into_bytes(),
        Err(err) => {
            ctx.dead_letter(id, &err.0, Some(&rec));
            return Ok(());
        }
    };
    let values = match ctx.globals.lookup(j.global, &key, &j.fields) {
        Some(values) => values,
        None if j.left => vec![serde_json::Value::Null; j.fields.len()],
        None => {
            ctx.stats.dropped_join_miss += 1;
            return Ok(());
        }
    };
    let out = rec.edit_fields(|fields| {
        for ((name, _), v) in j.fields.iter().zip(values) {
            fields.insert(Key::String(name.clone()), codec::from_json(v));
        }
    });
    ctx.forward(id, out)
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
}
