//! The checked form of a sink file: what `check` produces from the
//! [`super::spec`] types and the rest of the sink reads. Every name here is
//! already validated (plain SQL identifiers, known types and zones).

use std::time::Duration;

use chrono_tz::Tz;

pub(crate) use super::spec::{Mode, NowMode};

/// Where the sink keeps its consumed offsets unless `offsets_table` says
/// otherwise.
pub(crate) const DEFAULT_OFFSETS_TABLE: &str = "weir.weir_sink_offsets";
pub(crate) const DEFAULT_BATCH_SIZE: usize = 5000;
pub(crate) const DEFAULT_LINGER: Duration = Duration::from_millis(200);
/// Upper bound of `batch_size`: a batch is one Postgres transaction and is
/// held in memory.
pub(crate) const MAX_BATCH_SIZE: u64 = 200_000;

/// A validated sink file.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) dead_letter: String,
    pub(crate) offsets_table: QualifiedName,
    pub(crate) consumer: Vec<(String, String)>,
    /// The `kafka:` map, checked, references not yet resolved.
    pub(crate) kafka: Vec<crate::kafka::settings::FileSetting>,
    pub(crate) tables: Vec<TableConfig>,
}

/// `schema.table`, both parts already checked as plain identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QualifiedName {
    pub(crate) schema: String,
    pub(crate) name: String,
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TableConfig {
    pub(crate) topic: String,
    pub(crate) table: QualifiedName,
    pub(crate) mode: Mode,
    /// Names of the key columns, in the order written.
    pub(crate) key: Vec<String>,
    pub(crate) auto_create: bool,
    pub(crate) id_column: Option<String>,
    /// A tombstone deletes the row of its key (see `spec::TableSpec`).
    pub(crate) delete_on_tombstone: bool,
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) columns: Vec<ColumnConfig>,
}

impl TableConfig {
    /// Columns whose values come from the record, in file order.
    pub(crate) fn field_columns(&self) -> impl Iterator<Item = &ColumnConfig> {
        self.columns
            .iter()
            .filter(|c| matches!(c.source, ColumnSource::Field(_)))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ColumnConfig {
    pub(crate) name: String,
    pub(crate) source: ColumnSource,
    pub(crate) ty: ColumnType,
    pub(crate) not_null: bool,
    pub(crate) time_zone: Tz,
    pub(crate) format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnSource {
    Field(String),
    Now(NowMode),
}

/// Column types a sink file can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Text,
    Varchar(u32),
    Integer,
    BigInt,
    Double,
    Timestamptz,
    Timestamp,
}

impl ColumnType {
    pub(crate) const NAMES: &'static [&'static str] = &[
        "text",
        "varchar(N)",
        "integer",
        "bigint",
        "double",
        "timestamptz",
        "timestamp",
    ];

    pub(crate) fn parse(s: &str) -> Option<ColumnType> {
        let s = s.trim().to_ascii_lowercase();
        Some(match s.as_str() {
            "text" => ColumnType::Text,
            "integer" | "int" | "int4" => ColumnType::Integer,
            "bigint" | "int8" => ColumnType::BigInt,
            "double" | "double precision" | "float8" => ColumnType::Double,
            "timestamptz" | "timestamp with time zone" => ColumnType::Timestamptz,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            other => {
                let inner = other
                    .strip_prefix("varchar(")
                    .or_else(|| other.strip_prefix("character varying("))?
                    .strip_suffix(')')?;
                let n: u32 = inner.trim().parse().ok()?;
                if n == 0 || n > 10_485_760 {
                    return None;
                }
                ColumnType::Varchar(n)
            }
        })
    }

    /// The type in `CREATE TABLE`.
    pub(crate) fn ddl(&self) -> String {
        match self {
            ColumnType::Text => "text".into(),
            ColumnType::Varchar(n) => format!("varchar({n})"),
            ColumnType::Integer => "integer".into(),
            ColumnType::BigInt => "bigint".into(),
            ColumnType::Double => "double precision".into(),
            ColumnType::Timestamptz => "timestamp with time zone".into(),
            ColumnType::Timestamp => "timestamp without time zone".into(),
        }
    }

    pub(crate) fn is_timestamp(&self) -> bool {
        matches!(self, ColumnType::Timestamptz | ColumnType::Timestamp)
    }
}
