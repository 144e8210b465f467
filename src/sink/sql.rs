//! SQL text of the sink, pure and unit tested: identifier and literal
//! quoting, the batch and single-row `INSERT … ON CONFLICT`, `auto_create`
//! DDL, and the offsets table's statements.

use super::config::{ColumnSource, ColumnType, Mode, NowMode, QualifiedName, TableConfig};

/// The quoted SQL form of a table name, here rather than beside the type
/// (`config`) so that the configuration does not depend on the SQL text.
impl QualifiedName {
    /// `"schema"."name"`.
    pub(crate) fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Quote a Postgres identifier.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a Postgres string literal.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The source of the rows in an INSERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowSource {
    /// Column arrays, `unnest($1::t[], …)`: a batch.
    Unnest,
    /// One parameter per column, `$1::t, …`: a single row.
    Single,
}

/// `INSERT … ON CONFLICT` for a table (pure, unit tested).
/// `DELETE` of the rows whose (one) key column is in `$1`, an array of
/// `key_type` (`delete_on_tombstone`).
pub(crate) fn delete_sql(table: &TableConfig, key_type: &str) -> String {
    format!(
        "DELETE FROM {} WHERE {} = ANY($1::{key_type}[])",
        table.table.sql(),
        quote_ident(&table.key[0])
    )
}

pub(crate) fn insert_sql(table: &TableConfig, sql_types: &[String], source: RowSource) -> String {
    let field_cols: Vec<&str> = table.field_columns().map(|c| c.name.as_str()).collect();
    let now_cols: Vec<(&str, NowMode, String)> = table
        .columns
        .iter()
        .filter_map(|c| match c.source {
            ColumnSource::Now(mode) => {
                let expr = match c.ty {
                    ColumnType::Timestamptz => "now()".to_string(),
                    _ => format!("(now() AT TIME ZONE {})", quote_literal(c.time_zone.name())),
                };
                Some((c.name.as_str(), mode, expr))
            }
            ColumnSource::Field(_) => None,
        })
        .collect();
    let all: Vec<String> = field_cols
        .iter()
        .copied()
        .chain(now_cols.iter().map(|(n, _, _)| *n))
        .map(quote_ident)
        .collect();
    let selected: Vec<String> = match source {
        RowSource::Single => sql_types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::{t}", i + 1))
            .collect(),
        RowSource::Unnest => field_cols.iter().map(|c| format!("u.{}", quote_ident(c))).collect(),
    };
    let selected: Vec<String> = selected
        .into_iter()
        .chain(now_cols.iter().map(|(_, _, e)| e.clone()))
        .collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT {}",
        table.table.sql(),
        all.join(", "),
        selected.join(", ")
    );
    let aliases = field_cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    match source {
        RowSource::Unnest => {
            let arrays: Vec<String> = sql_types
                .iter()
                .enumerate()
                .map(|(i, t)| format!("${}::{t}[]", i + 1))
                .collect();
            sql.push_str(&format!(" FROM unnest({}) AS u({aliases})", arrays.join(", ")));
        }
        RowSource::Single => {}
    }
    if table.mode == Mode::Upsert && source == RowSource::Unnest {
        // Key order: better index locality, and concurrent writers lock
        // rows in the same order (no deadlocks between them).
        let key: Vec<String> = table.key.iter().map(|k| format!("u.{}", quote_ident(k))).collect();
        sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
    }
    if table.mode == Mode::Upsert {
        let key: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
        let updates: Vec<String> = field_cols
            .iter()
            .filter(|c| !table.key.iter().any(|k| k == *c))
            .copied()
            .chain(
                now_cols
                    .iter()
                    .filter(|(_, m, _)| *m == NowMode::OnWrite)
                    .map(|(n, _, _)| *n),
            )
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        if updates.is_empty() {
            sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                updates.join(", ")
            ));
        }
    }
    sql
}

/// `CREATE TABLE IF NOT EXISTS` for `auto_create` (pure, unit tested).
pub(crate) fn create_table_sql(table: &TableConfig) -> String {
    let mut defs = Vec::new();
    if let Some(id) = &table.id_column {
        defs.push(format!("{} bigserial PRIMARY KEY", quote_ident(id)));
    }
    for c in &table.columns {
        let mut d = format!("{} {}", quote_ident(&c.name), c.ty.ddl());
        if c.not_null {
            d.push_str(" NOT NULL");
        }
        if let ColumnSource::Now(_) = c.source {
            match c.ty {
                ColumnType::Timestamptz => d.push_str(" DEFAULT now()"),
                _ => d.push_str(&format!(
                    " DEFAULT (now() AT TIME ZONE {})",
                    quote_literal(c.time_zone.name())
                )),
            }
        }
        defs.push(d);
    }
    if !table.key.is_empty() {
        let key: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
        let kind = if table.id_column.is_some() {
            "UNIQUE"
        } else {
            "PRIMARY KEY"
        };
        defs.push(format!("{kind} ({})", key.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
        table.table.sql(),
        defs.join(",\n  ")
    )
}

pub(crate) fn create_offsets_sql(t: &QualifiedName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
  sink_name   text NOT NULL,
  topic       text NOT NULL,
  partition   integer NOT NULL,
  next_offset bigint NOT NULL,
  owner       text,
  updated_at  timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (sink_name, topic, partition)
)",
        t.sql()
    )
}

/// Moves partitions' `next_offset` from the value this instance expects
/// (compare and set): `$1` sink, `$2` owner, then arrays of topic,
/// partition, expected and next offset.
pub(crate) fn update_offsets_sql(t: &QualifiedName) -> String {
    format!(
        "UPDATE {} AS o SET next_offset = v.next, owner = $2, updated_at = now() \
         FROM unnest($3::text[], $4::int4[], $5::int8[], $6::int8[]) AS v(topic, partition, expected, next) \
         WHERE o.sink_name = $1 AND o.topic = v.topic AND o.partition = v.partition AND o.next_offset = v.expected",
        t.sql()
    )
}

/// First offsets of partitions: `$1` sink, `$2` owner, then arrays of
/// topic, partition and next offset. A row that exists already fails the
/// primary key (another instance stored it first).
pub(crate) fn insert_offsets_sql(t: &QualifiedName) -> String {
    format!(
        "INSERT INTO {} (sink_name, topic, partition, next_offset, owner, updated_at) \
         SELECT $1, v.topic, v.partition, v.next, $2, now() \
         FROM unnest($3::text[], $4::int4[], $5::int8[]) AS v(topic, partition, next)",
        t.sql()
    )
}

/// Stored offsets of a sink (`$1`) for some topics (`$2`).
pub(crate) fn read_offsets_sql(t: &QualifiedName) -> String {
    format!(
        "SELECT topic, partition, next_offset FROM {} WHERE sink_name = $1 AND topic = ANY($2)",
        t.sql()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkConfig;

    /// The hourly table of the shipped sink file.
    fn table() -> TableConfig {
        SinkConfig::parse(include_str!("../../topology/parking-sink.yaml"))
            .unwrap()
            .tables
            .remove(0)
    }

    #[test]
    fn ddl_matches_the_design() {
        let sql = create_table_sql(&table());
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"parking\".\"parking_hourly_avg\" (\n  \"id\" bigserial PRIMARY KEY,\n  \
             \"region\" varchar(255) NOT NULL,\n  \"region_code\" varchar(50) NOT NULL,\n  \
             \"hour\" timestamp without time zone NOT NULL,\n  \"avg_available_spots\" double precision NOT NULL,\n  \
             \"samples\" bigint NOT NULL,\n  \
             \"created_at\" timestamp without time zone DEFAULT (now() AT TIME ZONE 'Asia/Seoul'),\n  \
             \"updated_at\" timestamp without time zone DEFAULT (now() AT TIME ZONE 'Asia/Seoul'),\n  \
             UNIQUE (\"region_code\", \"hour\")\n)"
        );
    }

    #[test]
    fn upsert_refreshes_updated_at_and_keeps_created_at() {
        let types: Vec<String> = [
            "character varying",
            "character varying",
            "timestamp without time zone",
            "double precision",
            "bigint",
        ]
        .map(String::from)
        .into();
        let sql = insert_sql(&table(), &types, RowSource::Unnest);
        assert_eq!(
            sql,
            "INSERT INTO \"parking\".\"parking_hourly_avg\" (\"region\", \"region_code\", \"hour\", \"avg_available_spots\", \"samples\", \"created_at\", \"updated_at\") \
             SELECT u.\"region\", u.\"region_code\", u.\"hour\", u.\"avg_available_spots\", u.\"samples\", (now() AT TIME ZONE 'Asia/Seoul'), (now() AT TIME ZONE 'Asia/Seoul') \
             FROM unnest($1::character varying[], $2::character varying[], $3::timestamp without time zone[], $4::double precision[], $5::bigint[]) \
             AS u(\"region\", \"region_code\", \"hour\", \"avg_available_spots\", \"samples\") \
             ORDER BY u.\"region_code\", u.\"hour\" ON CONFLICT (\"region_code\", \"hour\") DO UPDATE SET \"region\" = EXCLUDED.\"region\", \
             \"avg_available_spots\" = EXCLUDED.\"avg_available_spots\", \"samples\" = EXCLUDED.\"samples\", \
             \"updated_at\" = EXCLUDED.\"updated_at\""
        );
        let single = insert_sql(&table(), &types, RowSource::Single);
        assert!(
            single.contains("SELECT $1::character varying, $2::character varying, $3::timestamp without time zone, $4::double precision, $5::bigint, (now()"),
            "{single}"
        );
        assert!(!single.contains("ORDER BY"), "{single}");
        let mut insert_only = table();
        insert_only.mode = Mode::Insert;
        assert!(!insert_sql(&insert_only, &types, RowSource::Unnest).contains("ON CONFLICT"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        let t = QualifiedName {
            schema: "weir".into(),
            name: "weir_sink_offsets".into(),
        };
        assert!(read_offsets_sql(&t).contains("FROM \"weir\".\"weir_sink_offsets\""));
    }
}
