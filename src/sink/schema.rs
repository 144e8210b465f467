//! Schema planning at start: create what `auto_create` asks for and the
//! offsets table, then check every target table against its config (every
//! column present with a type the sink can write, NOT NULL columns it does
//! not write have defaults, a unique key for `upsert`) and plan how its
//! rows are encoded and written.

use std::collections::HashMap;

use tokio_postgres::Transaction;

use super::config::{ColumnSource, ColumnType, Mode, SinkConfig, TableConfig};
use super::error::{classify, WriteError};
use super::mapping::{DbColumnFacts, RecordMapping};
use super::sql::{create_offsets_sql, create_table_sql, delete_sql, insert_sql, quote_ident, RowSource};

/// A key for `pg_advisory_xact_lock` around DDL, so instances starting
/// together do not race on `CREATE … IF NOT EXISTS`.
const DDL_LOCK_KEY: i64 = 0x7765_6972_5f73_6e6b; // "weir_snk"

/// In one transaction `tx` (the caller commits): create the schemas and
/// tables the sink needs, then check and plan every table in config order.
pub(crate) async fn prepare(tx: &Transaction<'_>, sink: &SinkConfig) -> Result<Vec<TablePlan>, WriteError> {
    // `IF NOT EXISTS` notices would only clutter the log.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(|e| classify("starting DDL transaction", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK_KEY])
        .await
        .map_err(|e| classify("locking for DDL", e))?;
    for s in schemas_to_create(sink) {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&s)))
            .await
            .map_err(|e| classify(&format!("creating schema {s}"), e))?;
    }
    tx.batch_execute(&create_offsets_sql(&sink.offsets_table))
        .await
        .map_err(|e| classify("creating the offsets table", e))?;
    for t in sink.tables.iter().filter(|t| t.auto_create) {
        tx.batch_execute(&create_table_sql(t))
            .await
            .map_err(|e| classify(&format!("creating table {}", t.table), e))?;
    }
    let mut tables = Vec::new();
    for t in &sink.tables {
        tables.push(plan_table(tx, t).await?);
    }
    Ok(tables)
}

/// The offsets table's schema and those of `auto_create` tables, each
/// once, in first-mention order.
fn schemas_to_create(sink: &SinkConfig) -> Vec<String> {
    let mut schemas: Vec<String> = Vec::new();
    let auto = sink.tables.iter().filter(|t| t.auto_create).map(|t| &t.table.schema);
    for s in std::iter::once(&sink.offsets_table.schema).chain(auto) {
        if !schemas.contains(s) {
            schemas.push(s.clone());
        }
    }
    schemas
}

/// The column types the writer encodes, as found in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbType {
    Text,
    Int2,
    Int4,
    Int8,
    Float8,
    Timestamptz,
    Timestamp,
}

impl DbType {
    fn from_typname(t: &str) -> Option<DbType> {
        Some(match t {
            "text" | "varchar" | "bpchar" => DbType::Text,
            "int2" => DbType::Int2,
            "int4" => DbType::Int4,
            "int8" => DbType::Int8,
            "float8" => DbType::Float8,
            "timestamptz" => DbType::Timestamptz,
            "timestamp" => DbType::Timestamp,
            _ => return None,
        })
    }

    /// May a column configured as `ty` be written into a column of this
    /// type without losing values?
    fn fits(self, ty: ColumnType) -> bool {
        match ty {
            ColumnType::Text | ColumnType::Varchar(_) => self == DbType::Text,
            ColumnType::Integer => matches!(self, DbType::Int2 | DbType::Int4 | DbType::Int8),
            ColumnType::BigInt => self == DbType::Int8,
            ColumnType::Double => self == DbType::Float8,
            ColumnType::Timestamptz => self == DbType::Timestamptz,
            ColumnType::Timestamp => self == DbType::Timestamp,
        }
    }
}

/// Everything the writer knows about one target table.
#[derive(Debug, Clone)]
pub(crate) struct TablePlan {
    pub(crate) config: TableConfig,
    pub(crate) mapping: RecordMapping,
    /// Per field column (mapping order): the encoding of its values.
    pub(crate) db_types: Vec<DbType>,
    /// `INSERT … SELECT … FROM unnest($1::t[], …) … ON CONFLICT …`.
    pub(crate) unnest_sql: String,
    /// One row: `INSERT … SELECT $1::t, … ON CONFLICT …`.
    pub(crate) single_sql: String,
    /// `DELETE … WHERE key = ANY($1)`, with `delete_on_tombstone`.
    pub(crate) delete_sql: Option<String>,
}

/// One column as found in the database.
#[derive(Debug, Clone)]
struct DbColumn {
    name: String,
    /// `format_type(atttypid, NULL)`: usable in casts.
    sql_type: String,
    /// `format_type(atttypid, atttypmod)`: for messages.
    display_type: String,
    typname: String,
    typmod: i32,
    not_null: bool,
    has_default: bool,
}

const COLUMNS_SQL: &str =
    "SELECT a.attname::text, format_type(a.atttypid, NULL), format_type(a.atttypid, a.atttypmod), \
     t.typname::text, a.atttypmod, a.attnotnull, (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const UNIQUE_KEYS_SQL: &str = "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
     GROUP BY i.indexrelid";

/// Check a table against its config; on success return the plan.
async fn plan_table(client: &Transaction<'_>, table: &TableConfig) -> Result<TablePlan, WriteError> {
    let name = table.table.to_string();
    let regname = table.table.sql();
    let rows = client
        .query(COLUMNS_SQL, &[&regname])
        .await
        .map_err(|e| classify("reading table columns", e))?;
    if rows.is_empty() {
        return Err(WriteError::Fatal(format!(
            "table {name} does not exist (create it, or set `auto_create: true` for topic {})",
            table.topic
        )));
    }
    let cols: Vec<DbColumn> = rows
        .iter()
        .map(|r| DbColumn {
            name: r.get(0),
            sql_type: r.get(1),
            display_type: r.get(2),
            typname: r.get(3),
            typmod: r.get(4),
            not_null: r.get(5),
            has_default: r.get(6),
        })
        .collect();
    let mut problems = Vec::new();
    let mut facts = HashMap::new();
    let mut db_types = Vec::new();
    let mut sql_types = Vec::new();
    for c in &table.columns {
        let Some(db) = cols.iter().find(|d| d.name == c.name) else {
            let from = match &c.source {
                ColumnSource::Field(f) => format!("field `{f}`"),
                ColumnSource::Now(_) => "`now`".to_string(),
            };
            problems.push(format!("column \"{}\" (from {from}) does not exist", c.name));
            continue;
        };
        let dbt = DbType::from_typname(&db.typname).filter(|t| t.fits(c.ty));
        let Some(dbt) = dbt else {
            problems.push(format!(
                "column \"{}\" has type {}, which the sink cannot write as {}",
                c.name,
                db.display_type,
                c.ty.ddl()
            ));
            continue;
        };
        if let ColumnSource::Field(_) = c.source {
            let int_bits = match dbt {
                DbType::Int2 => Some(16),
                DbType::Int4 => Some(32),
                DbType::Int8 => Some(64),
                _ => None,
            };
            let varchar_len = (matches!(db.typname.as_str(), "varchar" | "bpchar") && db.typmod > 4)
                .then(|| (db.typmod - 4) as usize);
            facts.insert(
                c.name.clone(),
                DbColumnFacts {
                    not_null: db.not_null,
                    varchar_len,
                    int_bits,
                },
            );
            db_types.push(dbt);
            sql_types.push(db.sql_type.clone());
        }
    }
    for db in &cols {
        if db.not_null && !db.has_default && !table.columns.iter().any(|c| c.name == db.name) {
            problems.push(format!(
                "column \"{}\" is NOT NULL without a default, but the sink does not write it",
                db.name
            ));
        }
    }
    if table.mode == Mode::Upsert && problems.is_empty() {
        let mut want: Vec<String> = table.key.clone();
        want.sort();
        let keys = client
            .query(UNIQUE_KEYS_SQL, &[&regname])
            .await
            .map_err(|e| classify("reading table keys", e))?;
        let found = keys.iter().any(|r| r.get::<_, Vec<String>>(0) == want);
        if !found {
            problems.push(format!(
                "no primary key or unique constraint on ({}), which `mode: upsert` needs for ON CONFLICT",
                table.key.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(WriteError::Fatal(format!(
            "table {name} does not match the sink config (topic {}): {}",
            table.topic,
            problems.join("; ")
        )));
    }
    let mapping = RecordMapping::new(table, &facts);
    let delete = match (table.delete_on_tombstone, &mapping.key[..]) {
        (true, &[k]) => Some(delete_sql(table, &sql_types[k])),
        _ => None,
    };
    Ok(TablePlan {
        unnest_sql: insert_sql(table, &sql_types, RowSource::Unnest),
        single_sql: insert_sql(table, &sql_types, RowSource::Single),
        delete_sql: delete,
        config: table.clone(),
        mapping,
        db_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatible_types() {
        assert!(DbType::Int8.fits(ColumnType::Integer));
        assert!(!DbType::Int4.fits(ColumnType::BigInt));
        assert!(!DbType::Text.fits(ColumnType::Double));
        assert!(DbType::Text.fits(ColumnType::Varchar(3)));
        assert!(!DbType::Timestamptz.fits(ColumnType::Timestamp));
    }

    #[test]
    fn each_schema_is_created_once() {
        // Offsets in `weir`, tables in `parking`, then `weir` again: not
        // adjacent duplicates, still one CREATE SCHEMA each.
        let text = include_str!("../../topology/parking-sink.yaml")
            .replace("table: parking.parking_lot_status", "table: weir.parking_lot_status");
        let sink = SinkConfig::parse(&text).unwrap();
        assert_eq!(schemas_to_create(&sink), vec!["weir", "parking"]);
    }
}
