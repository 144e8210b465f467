//! The Postgres side of the sink: creates the offsets table (and, with
//! `auto_create`, the target tables), checks every target table against the
//! config at start, and writes a batch — rows of every table plus the
//! consumed offsets — in one transaction.
//!
//! Exactly-once rests on the offsets rows: a batch first moves each of its
//! partitions' `next_offset` from the value this instance read (compare and
//! set), so a batch whose partition another instance has advanced in the
//! meantime aborts as a whole ([`WriteError::OwnershipLost`]) and the
//! caller re-seeks. Errors are classified so the caller knows whether to
//! retry (connection lost, server restarting, deadlock), to look for the
//! rows Postgres rejects ([`WriteError::Data`]), or to stop.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use super::config::{
    quote_ident, quote_literal, ColumnSource, ColumnType, Mode, NowMode, QualifiedName, SinkConfig, TableConfig,
    WriteMethod,
};
use super::mapping::{DbColumnFacts, RecordMapping, Value};

/// A key for `pg_advisory_xact_lock` around DDL, so instances starting
/// together do not race on `CREATE … IF NOT EXISTS`.
const DDL_LOCK_KEY: i64 = 0x7765_6972_5f73_6e6b; // "weir_snk"

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Postgres is unreachable, restarting, or the transaction lost a
    /// deadlock: retry the same batch later.
    #[error("{context}: {cause}")]
    Retryable {
        context: String,
        cause: tokio_postgres::Error,
    },
    /// Another instance advanced one of the batch's partitions: abort the
    /// batch and seek to the offsets stored in Postgres.
    #[error(
        "offsets of {partitions:?} in Postgres are not where this instance left them (another instance wrote them)"
    )]
    OwnershipLost { partitions: Vec<(String, i32)> },
    /// Postgres rejected a row's data (constraint, value out of range…).
    #[error("table {table_name}: {message}")]
    Data {
        table: usize,
        table_name: String,
        message: String,
    },
    /// The table does not match the config, or another error that retrying
    /// will not fix.
    #[error("{0}")]
    Fatal(String),
}

impl WriteError {
    fn fatal(context: &str, e: tokio_postgres::Error) -> WriteError {
        let detail = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        WriteError::Fatal(format!("{context}: {detail}"))
    }
}

/// Errors worth retrying: the connection, the server's state, or
/// concurrency, not the data.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        // I/O, closed connection, timeout.
        return true;
    };
    let code = db.code();
    let class = &code.code()[..2];
    matches!(class, "08" | "53" | "57" | "58")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::IN_FAILED_SQL_TRANSACTION
}

/// Errors caused by a row's values.
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .map(|db| matches!(&db.code().code()[..2], "22" | "23" | "21"))
        .unwrap_or(false)
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({}): {d}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

fn classify(context: &str, e: tokio_postgres::Error) -> WriteError {
    if is_transient(&e) {
        WriteError::Retryable {
            context: context.to_string(),
            cause: e,
        }
    } else {
        WriteError::fatal(context, e)
    }
}

/// The column types the writer encodes, as found in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbType {
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

/// One row of a batch's column arrays, typed for the target column.
enum Array<'a> {
    Text(Vec<Option<&'a str>>),
    I16(Vec<Option<i16>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    F64(Vec<Option<f64>>),
    Tstz(Vec<Option<DateTime<Utc>>>),
    Ts(Vec<Option<NaiveDateTime>>),
}

impl<'a> Array<'a> {
    fn with_capacity(ty: DbType, n: usize) -> Self {
        match ty {
            DbType::Text => Array::Text(Vec::with_capacity(n)),
            DbType::Int2 => Array::I16(Vec::with_capacity(n)),
            DbType::Int4 => Array::I32(Vec::with_capacity(n)),
            DbType::Int8 => Array::I64(Vec::with_capacity(n)),
            DbType::Float8 => Array::F64(Vec::with_capacity(n)),
            DbType::Timestamptz => Array::Tstz(Vec::with_capacity(n)),
            DbType::Timestamp => Array::Ts(Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, v: &'a Value) -> Result<(), String> {
        let mismatch = || format!("value {v:?} does not fit the column");
        match (self, v) {
            (Array::Text(a), Value::Null) => a.push(None),
            (Array::I16(a), Value::Null) => a.push(None),
            (Array::I32(a), Value::Null) => a.push(None),
            (Array::I64(a), Value::Null) => a.push(None),
            (Array::F64(a), Value::Null) => a.push(None),
            (Array::Tstz(a), Value::Null) => a.push(None),
            (Array::Ts(a), Value::Null) => a.push(None),
            (Array::Text(a), Value::Text(s)) => a.push(Some(s)),
            (Array::I16(a), Value::Int(i)) => a.push(Some(i16::try_from(*i).map_err(|_| mismatch())?)),
            (Array::I32(a), Value::Int(i)) => a.push(Some(i32::try_from(*i).map_err(|_| mismatch())?)),
            (Array::I64(a), Value::Int(i)) => a.push(Some(*i)),
            (Array::F64(a), Value::Double(d)) => a.push(Some(*d)),
            (Array::F64(a), Value::Int(i)) => a.push(Some(*i as f64)),
            (Array::Tstz(a), Value::Timestamptz(t)) => a.push(Some(*t)),
            (Array::Ts(a), Value::Timestamp(t)) => a.push(Some(*t)),
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Array::Text(a) => a,
            Array::I16(a) => a,
            Array::I32(a) => a,
            Array::I64(a) => a,
            Array::F64(a) => a,
            Array::Tstz(a) => a,
            Array::Ts(a) => a,
        }
    }

    /// Element `i` as a single parameter (for COPY).
    fn element(&self, i: usize) -> &(dyn ToSql + Sync) {
        match self {
            Array::Text(a) => &a[i],
            Array::I16(a) => &a[i],
            Array::I32(a) => &a[i],
            Array::I64(a) => &a[i],
            Array::F64(a) => &a[i],
            Array::Tstz(a) => &a[i],
            Array::Ts(a) => &a[i],
        }
    }
}

/// Column arrays of a batch of rows.
fn build_arrays<'a>(rows: &[&'a [Value]], types: &[DbType]) -> Result<Vec<Array<'a>>, String> {
    let mut arrays: Vec<Array<'a>> = types.iter().map(|t| Array::with_capacity(*t, rows.len())).collect();
    for row in rows {
        for (a, v) in arrays.iter_mut().zip(row.iter()) {
            a.push(v)?;
        }
    }
    Ok(arrays)
}

/// Everything the writer knows about one target table.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub config: TableConfig,
    pub mapping: RecordMapping,
    /// Per field column (mapping order): the encoding and the SQL type name
    /// for casts.
    db_types: Vec<DbType>,
    sql_types: Vec<String>,
    /// `INSERT … SELECT … FROM unnest($1::t[], …) … ON CONFLICT …`.
    pub unnest_sql: String,
    /// `INSERT … SELECT … FROM <stage> … ON CONFLICT …`.
    pub merge_sql: String,
    /// One row: `INSERT … SELECT $1::t, … ON CONFLICT …`.
    pub single_sql: String,
    stage_name: String,
}

/// The source of the rows in an INSERT.
enum RowSource<'a> {
    Unnest,
    Stage(&'a str),
    Single,
}

/// `INSERT … ON CONFLICT` for a table (pure, unit tested).
fn insert_sql(table: &TableConfig, sql_types: &[String], source: RowSource<'_>) -> String {
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
        _ => field_cols.iter().map(|c| format!("u.{}", quote_ident(c))).collect(),
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
        RowSource::Stage(name) => sql.push_str(&format!(" FROM {} AS u", quote_ident(name))),
        RowSource::Single => {}
    }
    if table.mode == Mode::Upsert && !matches!(source, RowSource::Single) {
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
pub fn create_table_sql(table: &TableConfig) -> String {
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

fn create_offsets_sql(t: &QualifiedName) -> String {
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
async fn plan_table(client: &tokio_postgres::Transaction<'_>, table: &TableConfig) -> Result<TablePlan, WriteError> {
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
    let stage_name = format!("weir_stage_{}_{}", table.table.schema, table.table.name);
    let stage_name: String = stage_name.chars().take(63).collect();
    Ok(TablePlan {
        unnest_sql: insert_sql(table, &sql_types, RowSource::Unnest),
        merge_sql: insert_sql(table, &sql_types, RowSource::Stage(&stage_name)),
        single_sql: insert_sql(table, &sql_types, RowSource::Single),
        config: table.clone(),
        mapping,
        db_types,
        sql_types,
        stage_name,
    })
}

/// A batch's new position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetUpdate {
    pub topic: String,
    pub partition: i32,
    /// `next_offset` as last read from (or written to) Postgres by this
    /// instance; `None` when no row exists yet.
    pub expected: Option<i64>,
    pub next: i64,
}

/// Rows for one table in a batch.
pub struct TableRows<'a> {
    pub table: usize,
    pub rows: Vec<&'a [Value]>,
}

/// Prepared statements of one connection.
struct Session {
    client: Client,
    unnest: Vec<Statement>,
    single: Vec<Statement>,
    merge: Vec<Statement>,
    copy_types: Vec<Vec<Type>>,
    cas_update: Statement,
    cas_insert: Statement,
    read_offsets: Statement,
}

/// Writes batches into Postgres; reconnects as needed.
pub struct Writer {
    config: tokio_postgres::Config,
    sink: String,
    owner: String,
    offsets: QualifiedName,
    method: WriteMethod,
    tables: Vec<TablePlan>,
    session: Option<Session>,
}

impl Writer {
    /// Connect, create what `auto_create` asks for and the offsets table,
    /// and check every table. A mismatch is `WriteError::Fatal` naming the
    /// column; an unreachable server is `Retryable`.
    pub async fn start(url: &str, sink: &SinkConfig, owner: &str) -> Result<Writer, WriteError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| WriteError::fatal("invalid Postgres URL", e))?;
        config.connect_timeout(Duration::from_secs(5));
        if config.get_application_name().is_none() {
            config.application_name(format!("weir-sink-{}", sink.name));
        }
        let mut client = connect(&config).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| classify("starting DDL transaction", e))?;
        // `IF NOT EXISTS` notices would only clutter the log.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await
            .map_err(|e| classify("starting DDL transaction", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK_KEY])
            .await
            .map_err(|e| classify("locking for DDL", e))?;
        let mut schemas = vec![sink.offsets_table.schema.clone()];
        schemas.extend(
            sink.tables
                .iter()
                .filter(|t| t.auto_create)
                .map(|t| t.table.schema.clone()),
        );
        schemas.dedup();
        for s in schemas {
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
            tables.push(plan_table(&tx, t).await?);
        }
        tx.commit().await.map_err(|e| classify("committing DDL", e))?;
        let mut writer = Writer {
            config,
            sink: sink.name.clone(),
            owner: owner.to_string(),
            offsets: sink.offsets_table.clone(),
            method: sink.write_method,
            tables,
            session: None,
        };
        writer.session = Some(writer.new_session(client).await?);
        Ok(writer)
    }

    pub fn tables(&self) -> &[TablePlan] {
        &self.tables
    }

    /// Switch the write method (the next write reconnects and prepares
    /// its statements).
    pub fn set_method(&mut self, method: WriteMethod) {
        self.method = method;
        self.session = None;
    }

    async fn new_session(&self, client: Client) -> Result<Session, WriteError> {
        let ctx = "preparing statements";
        let mut unnest = Vec::new();
        let mut single = Vec::new();
        let mut merge = Vec::new();
        let mut copy_types = Vec::new();
        for t in &self.tables {
            unnest.push(client.prepare(&t.unnest_sql).await.map_err(|e| classify(ctx, e))?);
            single.push(client.prepare(&t.single_sql).await.map_err(|e| classify(ctx, e))?);
            if self.method == WriteMethod::Copy {
                let cols: Vec<String> = t
                    .config
                    .field_columns()
                    .zip(&t.sql_types)
                    .map(|(c, ty)| format!("{} {ty}", quote_ident(&c.name)))
                    .collect();
                client
                    .batch_execute(&format!(
                        "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS",
                        quote_ident(&t.stage_name),
                        cols.join(", ")
                    ))
                    .await
                    .map_err(|e| classify("creating the staging table", e))?;
                let names: Vec<String> = t.config.field_columns().map(|c| quote_ident(&c.name)).collect();
                let probe = client
                    .prepare(&format!(
                        "SELECT {} FROM {}",
                        names.join(", "),
                        quote_ident(&t.stage_name)
                    ))
                    .await
                    .map_err(|e| classify(ctx, e))?;
                copy_types.push(probe.columns().iter().map(|c| c.type_().clone()).collect());
                merge.push(client.prepare(&t.merge_sql).await.map_err(|e| classify(ctx, e))?);
            }
        }
        let o = self.offsets.sql();
        let cas_update = client
            .prepare(&format!(
                "UPDATE {o} AS o SET next_offset = v.next, owner = $2, updated_at = now() \
                 FROM unnest($3::text[], $4::int4[], $5::int8[], $6::int8[]) AS v(topic, partition, expected, next) \
                 WHERE o.sink_name = $1 AND o.topic = v.topic AND o.partition = v.partition AND o.next_offset = v.expected"
            ))
            .await
            .map_err(|e| classify(ctx, e))?;
        let cas_insert = client
            .prepare(&format!(
                "INSERT INTO {o} (sink_name, topic, partition, next_offset, owner, updated_at) \
                 SELECT $1, v.topic, v.partition, v.next, $2, now() \
                 FROM unnest($3::text[], $4::int4[], $5::int8[]) AS v(topic, partition, next)"
            ))
            .await
            .map_err(|e| classify(ctx, e))?;
        let read_offsets = client
            .prepare(&format!(
                "SELECT topic, partition, next_offset FROM {o} WHERE sink_name = $1 AND topic = ANY($2)"
            ))
            .await
            .map_err(|e| classify(ctx, e))?;
        Ok(Session {
            client,
            unnest,
            single,
            merge,
            copy_types,
            cas_update,
            cas_insert,
            read_offsets,
        })
    }

    /// The current session, connecting if there is none.
    async fn session(&mut self) -> Result<&mut Session, WriteError> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        if self.session.is_none() {
            let client = connect(&self.config).await?;
            let s = self.new_session(client).await?;
            tracing::info!(sink = %self.sink, "connected to Postgres");
            self.session = Some(s);
        }
        match self.session.as_mut() {
            Some(s) => Ok(s),
            None => Err(WriteError::Fatal("no Postgres session".into())),
        }
    }

    /// Forget the connection (after an error that may have broken it).
    pub fn reset(&mut self) {
        self.session = None;
    }

    /// Stored `next_offset` per (topic, partition) of this sink.
    pub async fn read_offsets(&mut self, topics: &[String]) -> Result<HashMap<(String, i32), i64>, WriteError> {
        let sink = self.sink.clone();
        let s = self.session().await?;
        let rows = s
            .client
            .query(&s.read_offsets, &[&sink, &topics])
            .await
            .map_err(|e| classify("reading stored offsets", e))?;
        Ok(rows
            .iter()
            .map(|r| ((r.get::<_, String>(0), r.get::<_, i32>(1)), r.get::<_, i64>(2)))
            .collect())
    }

    /// Write one batch and its offsets in one transaction.
    pub async fn write_batch(&mut self, batch: &[TableRows<'_>], offsets: &[OffsetUpdate]) -> Result<(), WriteError> {
        let result = self.write_batch_inner(batch, offsets).await;
        if let Err(WriteError::Retryable { .. }) = &result {
            // The connection may be gone; a fresh one costs little.
            if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
                self.session = None;
            }
        }
        result
    }

    async fn write_batch_inner(&mut self, batch: &[TableRows<'_>], offsets: &[OffsetUpdate]) -> Result<(), WriteError> {
        let sink = self.sink.clone();
        let owner = self.owner.clone();
        let method = self.method;
        self.session().await?;
        let Writer { session, tables, .. } = self;
        let Some(s) = session.as_mut() else {
            return Err(WriteError::Fatal("no Postgres session".into()));
        };
        let tx = s
            .client
            .transaction()
            .await
            .map_err(|e| classify("starting a transaction", e))?;

        // Offsets first: this takes the partitions' row locks, so a second
        // instance writing the same partitions waits here and then fails
        // the compare instead of doing the batch's work twice.
        let (known, new): (Vec<&OffsetUpdate>, Vec<&OffsetUpdate>) = offsets.iter().partition(|o| o.expected.is_some());
        if !known.is_empty() {
            let topics: Vec<&str> = known.iter().map(|o| o.topic.as_str()).collect();
            let parts: Vec<i32> = known.iter().map(|o| o.partition).collect();
            let expected: Vec<i64> = known.iter().map(|o| o.expected.unwrap_or_default()).collect();
            let next: Vec<i64> = known.iter().map(|o| o.next).collect();
            let n = tx
                .execute(&s.cas_update, &[&sink, &owner, &topics, &parts, &expected, &next])
                .await
                .map_err(|e| classify("updating offsets", e))?;
            if n != known.len() as u64 {
                return Err(WriteError::OwnershipLost {
                    partitions: known.iter().map(|o| (o.topic.clone(), o.partition)).collect(),
                });
            }
        }
        if !new.is_empty() {
            let topics: Vec<&str> = new.iter().map(|o| o.topic.as_str()).collect();
            let parts: Vec<i32> = new.iter().map(|o| o.partition).collect();
            let next: Vec<i64> = new.iter().map(|o| o.next).collect();
            if let Err(e) = tx
                .execute(&s.cas_insert, &[&sink, &owner, &topics, &parts, &next])
                .await
            {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(WriteError::OwnershipLost {
                        partitions: new.iter().map(|o| (o.topic.clone(), o.partition)).collect(),
                    });
                }
                return Err(classify("inserting offsets", e));
            }
        }

        for tr in batch {
            if tr.rows.is_empty() {
                continue;
            }
            let plan = &tables[tr.table];
            let data_err = |e: tokio_postgres::Error| {
                if is_data_error(&e) {
                    WriteError::Data {
                        table: tr.table,
                        table_name: plan.config.table.to_string(),
                        message: db_message(&e),
                    }
                } else {
                    classify(&format!("writing {}", plan.config.table), e)
                }
            };
            let arrays = build_arrays(&tr.rows, &plan.db_types)
                .map_err(|m| WriteError::Fatal(format!("table {}: {m}", plan.config.table)))?;
            match method {
                WriteMethod::MultiRow => {
                    let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::as_param).collect();
                    tx.execute(&s.unnest[tr.table], &params).await.map_err(data_err)?;
                }
                WriteMethod::Copy => {
                    let Some(types) = s.copy_types.get(tr.table) else {
                        return Err(WriteError::Fatal("COPY statements were not prepared".into()));
                    };
                    let names: Vec<String> = plan.config.field_columns().map(|c| quote_ident(&c.name)).collect();
                    let copy = format!(
                        "COPY {} ({}) FROM STDIN (FORMAT binary)",
                        quote_ident(&plan.stage_name),
                        names.join(", ")
                    );
                    let sink = tx.copy_in(&copy).await.map_err(data_err)?;
                    let writer = BinaryCopyInWriter::new(sink, types);
                    futures::pin_mut!(writer);
                    let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(arrays.len());
                    for i in 0..tr.rows.len() {
                        row.clear();
                        row.extend(arrays.iter().map(|a| a.element(i)));
                        writer.as_mut().write(&row).await.map_err(data_err)?;
                    }
                    writer.finish().await.map_err(data_err)?;
                    tx.execute(&s.merge[tr.table], &[]).await.map_err(data_err)?;
                }
            }
        }
        tx.commit().await.map_err(|e| classify("committing", e))?;
        Ok(())
    }

    /// Which rows of `rows` Postgres rejects, each written alone inside a
    /// savepoint of a transaction that is then rolled back. Used after a
    /// batch failed with [`WriteError::Data`].
    pub async fn find_bad_rows(&mut self, table: usize, rows: &[&[Value]]) -> Result<Vec<(usize, String)>, WriteError> {
        let plan = self.tables[table].clone();
        let s = self.session().await?;
        let stmt = s.single[table].clone();
        let mut tx = s
            .client
            .transaction()
            .await
            .map_err(|e| classify("starting a transaction", e))?;
        let mut bad = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let arrays = build_arrays(&[*row], &plan.db_types)
                .map_err(|m| WriteError::Fatal(format!("table {}: {m}", plan.config.table)))?;
            let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a.element(0)).collect();
            let sp = tx.savepoint("weir_row").await.map_err(|e| classify("savepoint", e))?;
            match sp.execute(&stmt, &params).await {
                Ok(_) => sp.commit().await.map_err(|e| classify("releasing savepoint", e))?,
                Err(e) if is_data_error(&e) => {
                    bad.push((i, db_message(&e)));
                    sp.rollback()
                        .await
                        .map_err(|e| classify("rolling back to savepoint", e))?;
                }
                Err(e) => return Err(classify(&format!("writing {}", plan.config.table), e)),
            }
        }
        tx.rollback().await.map_err(|e| classify("rolling back", e))?;
        Ok(bad)
    }

    /// One row in its own implicit transaction, with a prepared statement
    /// (the row-at-a-time baseline of the benchmark).
    pub async fn write_row_autocommit(&mut self, table: usize, row: &[Value]) -> Result<(), WriteError> {
        let arrays = build_arrays(&[row], &self.tables[table].db_types).map_err(WriteError::Fatal)?;
        let s = self.session().await?;
        let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a.element(0)).collect();
        s.client
            .execute(&s.single[table], &params)
            .await
            .map_err(|e| classify("writing a row", e))?;
        Ok(())
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, WriteError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| WriteError::Retryable {
        context: "connecting to Postgres".into(),
        cause: e,
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Postgres connection ended");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::config;

    fn table() -> TableConfig {
        let text = r#"
name: parking
dead_letter: dlq
tables:
  - topic: parking_hourly_avg
    table: parking.parking_hourly_avg
    key: [region_code, hour]
    auto_create: true
    id_column: id
    columns:
      region: { field: region, type: "varchar(255)", not_null: true }
      region_code: { field: region_code, type: "varchar(50)" }
      hour: { field: window_start, type: timestamp, time_zone: Asia/Seoul }
      samples: { field: samples, type: bigint, not_null: true }
      created_at: { type: timestamp, time_zone: Asia/Seoul, now: on_insert }
      updated_at: { type: timestamp, time_zone: Asia/Seoul, now: on_write }
"#;
        config::parse(text).unwrap().tables.remove(0)
    }

    #[test]
    fn ddl_matches_the_design() {
        let sql = create_table_sql(&table());
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"parking\".\"parking_hourly_avg\" (\n  \"id\" bigserial PRIMARY KEY,\n  \
             \"region\" varchar(255) NOT NULL,\n  \"region_code\" varchar(50) NOT NULL,\n  \
             \"hour\" timestamp without time zone NOT NULL,\n  \"samples\" bigint NOT NULL,\n  \
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
            "bigint",
        ]
        .map(String::from)
        .into();
        let sql = insert_sql(&table(), &types, RowSource::Unnest);
        assert_eq!(
            sql,
            "INSERT INTO \"parking\".\"parking_hourly_avg\" (\"region\", \"region_code\", \"hour\", \"samples\", \"created_at\", \"updated_at\") \
             SELECT u.\"region\", u.\"region_code\", u.\"hour\", u.\"samples\", (now() AT TIME ZONE 'Asia/Seoul'), (now() AT TIME ZONE 'Asia/Seoul') \
             FROM unnest($1::character varying[], $2::character varying[], $3::timestamp without time zone[], $4::bigint[]) \
             AS u(\"region\", \"region_code\", \"hour\", \"samples\") \
             ORDER BY u.\"region_code\", u.\"hour\" ON CONFLICT (\"region_code\", \"hour\") DO UPDATE SET \"region\" = EXCLUDED.\"region\", \"samples\" = EXCLUDED.\"samples\", \
             \"updated_at\" = EXCLUDED.\"updated_at\""
        );
        let single = insert_sql(&table(), &types, RowSource::Single);
        assert!(single.contains("SELECT $1::character varying, $2::character varying, $3::timestamp without time zone, $4::bigint, (now()"), "{single}");
        let mut insert_only = table();
        insert_only.mode = Mode::Insert;
        assert!(!insert_sql(&insert_only, &types, RowSource::Stage("s")).contains("ON CONFLICT"));
    }

    #[test]
    fn compatible_types() {
        assert!(DbType::Int8.fits(ColumnType::Integer));
        assert!(!DbType::Int4.fits(ColumnType::BigInt));
        assert!(!DbType::Text.fits(ColumnType::Double));
        assert!(DbType::Text.fits(ColumnType::Varchar(3)));
        assert!(!DbType::Timestamptz.fits(ColumnType::Timestamp));
    }
}
