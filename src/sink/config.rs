//! Sink files: the YAML format (`SinkSpec`, serde types) and its validation
//! into a checked `SinkConfig`. Validation collects every problem with its
//! line and column so `weir validate` can list them all at once.
//!
//! The format is documented in `docs/sink.md`; `topology/parking-sink.yaml`
//! is the shipped example.

use std::path::Path;
use std::time::Duration;

use chrono_tz::Tz;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::topology::diag::{self, did_you_mean, Diagnostic, Diagnostics};

type Str = Spanned<String>;

/// Where the sink keeps its consumed offsets unless `offsets_table` says
/// otherwise.
pub const DEFAULT_OFFSETS_TABLE: &str = "weir.weir_sink_offsets";
pub const DEFAULT_BATCH_SIZE: usize = 5000;
pub const DEFAULT_LINGER: Duration = Duration::from_millis(200);
/// Upper bound of `batch_size`: a batch is one Postgres transaction and is
/// held in memory.
pub const MAX_BATCH_SIZE: u64 = 200_000;

// ---------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------

/// A whole sink file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Names the consumer group (`weir-sink-<name>`) and the sink's rows in
    /// the offsets table.
    pub name: Str,
    /// Consumer group id; default `weir-sink-<name>`.
    #[serde(default)]
    pub group: Option<Str>,
    /// Topic for records that cannot be loaded (reason in headers).
    pub dead_letter: Str,
    /// `schema.table` of the offsets table; default `weir.weir_sink_offsets`.
    #[serde(default)]
    pub offsets_table: Option<Str>,
    /// Default rows per Postgres transaction for every table.
    #[serde(default)]
    pub batch_size: Option<Spanned<u64>>,
    /// Default longest wait before a partial batch is written, e.g. `200ms`.
    #[serde(default)]
    pub linger: Option<Str>,
    /// How a batch is written: `multi_row` (one INSERT … SELECT FROM
    /// unnest(arrays) … ON CONFLICT statement) or `copy` (binary COPY into
    /// a temporary table, then INSERT … SELECT … ON CONFLICT).
    #[serde(default)]
    pub write_method: Option<Spanned<WriteMethod>>,
    /// Extra librdkafka consumer properties (strings), e.g.
    /// `session.timeout.ms: "6000"`.
    #[serde(default)]
    pub consumer: IndexMap<String, Str>,
    /// Topic → table loads.
    pub tables: Spanned<Vec<TableSpec>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMethod {
    #[default]
    MultiRow,
    Copy,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `INSERT … ON CONFLICT (key) DO UPDATE`: one row per key.
    #[default]
    Upsert,
    /// Plain `INSERT`: one row per record.
    Insert,
}

/// One topic loaded into one table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub topic: Str,
    /// `schema.table` or `table` (schema `public`).
    pub table: Str,
    #[serde(default)]
    pub mode: Option<Spanned<Mode>>,
    /// Key columns (required for `upsert`): the conflict target, and what
    /// a batch is deduplicated by.
    #[serde(default)]
    pub key: Option<Spanned<Vec<Str>>>,
    /// Create the schema and table if they do not exist.
    #[serde(default)]
    pub auto_create: bool,
    /// With `auto_create`: add a `bigserial PRIMARY KEY` column of this
    /// name; the key columns then get a UNIQUE constraint.
    #[serde(default)]
    pub id_column: Option<Str>,
    #[serde(default)]
    pub batch_size: Option<Spanned<u64>>,
    #[serde(default)]
    pub linger: Option<Str>,
    /// Column name → where its value comes from and its type, in table
    /// order.
    pub columns: Spanned<IndexMap<String, Spanned<ColumnSpec>>>,
}

/// One column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Top-level field of the JSON value. Required unless `now` is given.
    #[serde(default)]
    pub field: Option<Str>,
    /// text, varchar(N), integer, bigint, double, timestamptz, timestamp.
    #[serde(rename = "type")]
    pub ty: Str,
    /// Reject records where the value is missing, null or empty.
    #[serde(default)]
    pub not_null: bool,
    /// timestamp: the wall-clock zone written; timestamptz: the zone of
    /// text without an offset. Default UTC.
    #[serde(default)]
    pub time_zone: Option<Str>,
    /// strftime format of text timestamps, e.g. `%Y-%m-%d %H:%M:%S`.
    /// Without it text must be RFC 3339; numbers are epoch milliseconds.
    #[serde(default)]
    pub format: Option<Str>,
    /// A database-side time instead of a field: `on_insert` (kept by
    /// upserts, like `created_at`) or `on_write` (refreshed by every
    /// upsert, like `updated_at`).
    #[serde(default)]
    pub now: Option<Spanned<NowMode>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NowMode {
    OnInsert,
    OnWrite,
}

// ---------------------------------------------------------------------------
// Checked configuration
// ---------------------------------------------------------------------------

/// A validated sink file.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub group: String,
    pub dead_letter: String,
    pub offsets_table: QualifiedName,
    pub write_method: WriteMethod,
    pub consumer: Vec<(String, String)>,
    pub tables: Vec<TableConfig>,
}

/// `schema.table`, both parts already checked as plain identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    /// The quoted SQL form, `"schema"."name"`.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct TableConfig {
    pub topic: String,
    pub table: QualifiedName,
    pub mode: Mode,
    /// Names of the key columns, in the order written.
    pub key: Vec<String>,
    pub auto_create: bool,
    pub id_column: Option<String>,
    pub batch_size: usize,
    pub linger: Duration,
    pub columns: Vec<ColumnConfig>,
}

impl TableConfig {
    /// Columns whose values come from the record, in file order.
    pub fn field_columns(&self) -> impl Iterator<Item = &ColumnConfig> {
        self.columns
            .iter()
            .filter(|c| matches!(c.source, ColumnSource::Field(_)))
    }
}

#[derive(Debug, Clone)]
pub struct ColumnConfig {
    pub name: String,
    pub source: ColumnSource,
    pub ty: ColumnType,
    pub not_null: bool,
    pub time_zone: Tz,
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    Field(String),
    Now(NowMode),
}

/// Column types a sink file can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Varchar(u32),
    Integer,
    BigInt,
    Double,
    Timestamptz,
    Timestamp,
}

impl ColumnType {
    pub const NAMES: &'static [&'static str] = &[
        "text",
        "varchar(N)",
        "integer",
        "bigint",
        "double",
        "timestamptz",
        "timestamp",
    ];

    pub fn parse(s: &str) -> Option<ColumnType> {
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
    pub fn ddl(&self) -> String {
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

    pub fn is_timestamp(&self) -> bool {
        matches!(self, ColumnType::Timestamptz | ColumnType::Timestamp)
    }
}

/// Quote a Postgres identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a Postgres string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

/// Load and check a sink file, collecting every problem.
pub fn load(path: &Path) -> Result<SinkConfig, Diagnostics> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Diagnostics {
        file: file.clone(),
        items: vec![Diagnostic {
            line: 1,
            column: 1,
            message: format!("cannot read file: {e}"),
            hint: None,
        }],
    })?;
    parse(&text).map_err(|items| Diagnostics { file, items })
}

/// Check sink YAML text.
pub fn parse(text: &str) -> Result<SinkConfig, Vec<Diagnostic>> {
    let spec: SinkSpec = serde_saphyr::from_str(text).map_err(|e| vec![diag::from_yaml_error(&e)])?;
    check(spec)
}

/// Is this YAML text a sink file (a top-level `tables:` key)?
pub fn is_sink_text(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("tables:"))
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

fn ident_diag<T>(span: &Spanned<T>, what: &str, s: &str) -> Diagnostic {
    let d = Diagnostic::at(span, format!("{what} `{s}` is not a plain SQL identifier"));
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        d.with_hint(format!(
            "use lower case (`{}`): names are quoted, so case matters",
            s.to_ascii_lowercase()
        ))
    } else {
        d.with_hint("use lower-case letters, digits and `_`, starting with a letter or `_`, at most 63 characters")
    }
}

fn parse_qualified(s: &Str, what: &str, errs: &mut Vec<Diagnostic>) -> Option<QualifiedName> {
    let v = s.value.trim();
    let (schema, name) = match v.split_once('.') {
        Some((a, b)) => (a, b),
        None => ("public", v),
    };
    let mut ok = true;
    for part in [schema, name] {
        if !is_ident(part) {
            errs.push(ident_diag(s, what, part));
            ok = false;
        }
    }
    ok.then(|| QualifiedName {
        schema: schema.to_string(),
        name: name.to_string(),
    })
}

fn parse_linger(s: &Str, errs: &mut Vec<Diagnostic>) -> Option<Duration> {
    match humantime::parse_duration(s.value.trim()) {
        Ok(d) if d <= Duration::from_secs(600) => Some(d),
        Ok(_) => {
            errs.push(Diagnostic::at(
                s,
                format!("linger `{}` is longer than 10 minutes", s.value),
            ));
            None
        }
        Err(e) => {
            errs.push(
                Diagnostic::at(s, format!("invalid duration `{}`: {e}", s.value)).with_hint("write e.g. `200ms`, `1s`"),
            );
            None
        }
    }
}

fn parse_batch_size(s: &Spanned<u64>, errs: &mut Vec<Diagnostic>) -> Option<usize> {
    if s.value == 0 || s.value > MAX_BATCH_SIZE {
        errs.push(Diagnostic::at(
            s,
            format!("batch_size must be between 1 and {MAX_BATCH_SIZE}, not {}", s.value),
        ));
        None
    } else {
        Some(s.value as usize)
    }
}

fn non_empty(s: &Str, what: &str, errs: &mut Vec<Diagnostic>) -> bool {
    if s.value.trim().is_empty() {
        errs.push(Diagnostic::at(s, format!("{what} must not be empty")));
        false
    } else {
        true
    }
}

/// Does a strftime format parse without errors?
fn format_is_valid(fmt: &str) -> bool {
    use chrono::format::{Item, StrftimeItems};
    !StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error))
}

/// Validate a parsed file into a `SinkConfig`, collecting every problem.
pub fn check(spec: SinkSpec) -> Result<SinkConfig, Vec<Diagnostic>> {
    let mut errs = Vec::new();

    let name = spec.name.value.trim().to_string();
    if non_empty(&spec.name, "name", &mut errs)
        && !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errs.push(
            Diagnostic::at(
                &spec.name,
                format!("name `{name}` may only contain letters, digits, `-`, `_` and `.`"),
            )
            .with_hint("it is part of the consumer group id"),
        );
    }
    let group = match &spec.group {
        Some(g) if non_empty(g, "group", &mut errs) => g.value.trim().to_string(),
        _ => format!("weir-sink-{name}"),
    };
    non_empty(&spec.dead_letter, "dead_letter", &mut errs);
    let offsets_table = match &spec.offsets_table {
        Some(t) => parse_qualified(t, "offsets table", &mut errs),
        None => Some(QualifiedName {
            schema: "weir".into(),
            name: "weir_sink_offsets".into(),
        }),
    };
    let batch_size = spec
        .batch_size
        .as_ref()
        .and_then(|b| parse_batch_size(b, &mut errs))
        .unwrap_or(DEFAULT_BATCH_SIZE);
    let linger = spec
        .linger
        .as_ref()
        .and_then(|l| parse_linger(l, &mut errs))
        .unwrap_or(DEFAULT_LINGER);
    let consumer: Vec<(String, String)> = spec
        .consumer
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    for (k, v) in &spec.consumer {
        if matches!(
            k.as_str(),
            "group.id" | "enable.auto.commit" | "isolation.level" | "bootstrap.servers"
        ) {
            errs.push(
                Diagnostic::at(
                    v,
                    format!("consumer property `{k}` is set by the sink and cannot be overridden"),
                )
                .with_hint(if k == "group.id" { "use `group:`" } else { "remove it" }),
            );
        }
    }

    if spec.tables.value.is_empty() {
        errs.push(Diagnostic::at(
            &spec.tables,
            "tables must list at least one topic → table load",
        ));
    }
    let mut tables = Vec::new();
    let mut seen: Vec<(String, QualifiedName)> = Vec::new();
    for t in &spec.tables.value {
        if let Some(tc) = check_table(t, batch_size, linger, &mut errs) {
            if seen
                .iter()
                .any(|(topic, table)| *topic == tc.topic && *table == tc.table)
            {
                errs.push(Diagnostic::at(
                    &t.table,
                    format!("topic `{}` is already loaded into `{}`", tc.topic, tc.table),
                ));
            }
            seen.push((tc.topic.clone(), tc.table.clone()));
            tables.push(tc);
        }
    }

    if !errs.is_empty() {
        return Err(errs);
    }
    let offsets_table = offsets_table.ok_or_else(Vec::new)?;
    Ok(SinkConfig {
        name,
        group,
        dead_letter: spec.dead_letter.value.trim().to_string(),
        offsets_table,
        write_method: spec.write_method.map(|m| m.value).unwrap_or_default(),
        consumer,
        tables,
    })
}

fn check_table(
    t: &TableSpec,
    default_batch: usize,
    default_linger: Duration,
    errs: &mut Vec<Diagnostic>,
) -> Option<TableConfig> {
    let before = errs.len();
    non_empty(&t.topic, "topic", errs);
    let table = parse_qualified(&t.table, "table name", errs);
    let mode = t.mode.as_ref().map(|m| m.value).unwrap_or_default();
    let batch_size = t
        .batch_size
        .as_ref()
        .and_then(|b| parse_batch_size(b, errs))
        .unwrap_or(default_batch);
    let linger = t
        .linger
        .as_ref()
        .and_then(|l| parse_linger(l, errs))
        .unwrap_or(default_linger);

    if t.columns.value.is_empty() {
        errs.push(Diagnostic::at(&t.columns, "columns must map at least one column"));
    }
    let mut columns = Vec::new();
    for (cname, c) in &t.columns.value {
        if let Some(col) = check_column(cname, c, errs) {
            columns.push(col);
        }
    }
    if !columns.is_empty() && !columns.iter().any(|c| matches!(c.source, ColumnSource::Field(_))) {
        errs.push(Diagnostic::at(
            &t.columns,
            "at least one column must come from a `field`",
        ));
    }

    let names: Vec<&str> = t.columns.value.keys().map(String::as_str).collect();
    let mut key = Vec::new();
    match (&t.key, mode) {
        (None, Mode::Upsert) => errs.push(
            Diagnostic::at(&t.table, "mode `upsert` needs `key:` (the columns of the unique key)")
                .with_hint("e.g. `key: [region_code, hour]`, or `mode: insert`"),
        ),
        (Some(k), Mode::Upsert) if k.value.is_empty() => {
            errs.push(Diagnostic::at(k, "mode `upsert` needs at least one key column"))
        }
        _ => {}
    }
    if let Some(k) = &t.key {
        for kc in &k.value {
            let kname = kc.value.trim();
            match t.columns.value.get(kname) {
                None => {
                    let d = Diagnostic::at(kc, format!("key column `{kname}` is not in `columns`"));
                    errs.push(match did_you_mean(kname, names.iter().copied()) {
                        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                        None => d,
                    });
                }
                Some(c) if c.value.now.is_some() => errs.push(Diagnostic::at(
                    kc,
                    format!("key column `{kname}` cannot be a `now` column"),
                )),
                Some(_) => {
                    if key.iter().any(|k: &String| k == kname) {
                        errs.push(Diagnostic::at(kc, format!("key column `{kname}` is listed twice")));
                    }
                    key.push(kname.to_string());
                }
            }
        }
    }
    let id_column = t.id_column.as_ref().and_then(|id| {
        let v = id.value.trim();
        if !t.auto_create {
            errs.push(Diagnostic::at(id, "`id_column` only applies with `auto_create: true`"));
            None
        } else if !is_ident(v) {
            errs.push(ident_diag(id, "column name", v));
            None
        } else if t.columns.value.contains_key(v) {
            errs.push(Diagnostic::at(id, format!("`id_column` `{v}` is also in `columns`")));
            None
        } else {
            Some(v.to_string())
        }
    });
    // Key columns are never NULL.
    for c in &mut columns {
        if key.contains(&c.name) {
            c.not_null = true;
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(TableConfig {
        topic: t.topic.value.trim().to_string(),
        table: table?,
        mode,
        key,
        auto_create: t.auto_create,
        id_column,
        batch_size,
        linger,
        columns,
    })
}

fn check_column(name: &str, c: &Spanned<ColumnSpec>, errs: &mut Vec<Diagnostic>) -> Option<ColumnConfig> {
    let before = errs.len();
    if !is_ident(name) {
        errs.push(ident_diag(c, "column name", name));
    }
    let spec = &c.value;
    let ty = ColumnType::parse(&spec.ty.value);
    if ty.is_none() {
        errs.push(
            Diagnostic::at(&spec.ty, format!("column `{name}`: unknown type `{}`", spec.ty.value))
                .with_hint(format!("one of: {}", ColumnType::NAMES.join(", "))),
        );
    }
    let time_zone = match &spec.time_zone {
        Some(tz) => match tz.value.trim().parse::<Tz>() {
            Ok(z) => Some(z),
            Err(_) => {
                errs.push(
                    Diagnostic::at(tz, format!("column `{name}`: unknown time zone `{}`", tz.value))
                        .with_hint("an IANA name such as `Asia/Seoul` or `UTC`"),
                );
                None
            }
        },
        None => Some(Tz::UTC),
    };
    if let Some(ty) = ty {
        if !ty.is_timestamp() {
            if let Some(tz) = &spec.time_zone {
                errs.push(Diagnostic::at(
                    tz,
                    format!("column `{name}`: `time_zone` only applies to timestamp types"),
                ));
            }
            if let Some(f) = &spec.format {
                errs.push(Diagnostic::at(
                    f,
                    format!("column `{name}`: `format` only applies to timestamp types"),
                ));
            }
            if let Some(n) = &spec.now {
                errs.push(Diagnostic::at(
                    n,
                    format!("column `{name}`: `now` only applies to timestamp types"),
                ));
            }
        }
    }
    if let Some(f) = &spec.format {
        if f.value.is_empty() || !format_is_valid(&f.value) {
            errs.push(
                Diagnostic::at(f, format!("column `{name}`: invalid strftime format `{}`", f.value))
                    .with_hint("e.g. `%Y-%m-%d %H:%M:%S`"),
            );
        }
    }
    let source = match (&spec.field, &spec.now) {
        (Some(f), None) => {
            non_empty(f, "field", errs);
            Some(ColumnSource::Field(f.value.trim().to_string()))
        }
        (None, Some(n)) => Some(ColumnSource::Now(n.value)),
        (Some(f), Some(_)) => {
            errs.push(Diagnostic::at(
                f,
                format!("column `{name}`: give either `field` or `now`, not both"),
            ));
            None
        }
        (None, None) => {
            errs.push(
                Diagnostic::at(c, format!("column `{name}` needs `field:` (or `now:` for a timestamp)"))
                    .with_hint("e.g. `field: window_start`"),
            );
            None
        }
    };
    if let (Some(_), Some(n)) = (&spec.format, &spec.now) {
        errs.push(Diagnostic::at(
            n,
            format!("column `{name}`: `format` does not apply to a `now` column"),
        ));
    }
    if errs.len() > before {
        return None;
    }
    Some(ColumnConfig {
        name: name.to_string(),
        source: source?,
        ty: ty?,
        not_null: spec.not_null,
        time_zone: time_zone?,
        format: spec.format.as_ref().map(|f| f.value.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: parking
dead_letter: parking_sink_dlq
batch_size: 1000
linger: 50ms
tables:
  - topic: parking_hourly_avg
    table: parking.parking_hourly_avg
    mode: upsert
    key: [region_code, hour]
    auto_create: true
    id_column: id
    columns:
      region: { field: region, type: "varchar(255)", not_null: true }
      region_code: { field: region_code, type: "varchar(50)" }
      hour: { field: window_start, type: timestamp, time_zone: Asia/Seoul }
      avg_available_spots: { field: avg_available_spots, type: double, not_null: true }
      samples: { field: samples, type: bigint, not_null: true }
      created_at: { type: timestamp, time_zone: Asia/Seoul, now: on_insert }
      updated_at: { type: timestamp, time_zone: Asia/Seoul, now: on_write }
"#;

    fn errors(text: &str) -> Vec<(u64, u64, String)> {
        match parse(text) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.into_iter().map(|d| (d.line, d.column, d.message)).collect(),
        }
    }

    #[test]
    fn parses_a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.group, "weir-sink-parking");
        assert_eq!(c.offsets_table.sql(), "\"weir\".\"weir_sink_offsets\"");
        let t = &c.tables[0];
        assert_eq!(
            t.table,
            QualifiedName {
                schema: "parking".into(),
                name: "parking_hourly_avg".into()
            }
        );
        assert_eq!(t.key, vec!["region_code", "hour"]);
        assert_eq!(t.batch_size, 1000);
        assert_eq!(t.linger, Duration::from_millis(50));
        assert_eq!(t.columns.len(), 7);
        assert_eq!(t.columns[1].ty, ColumnType::Varchar(50));
        assert!(t.columns[1].not_null, "key columns are NOT NULL");
        assert_eq!(t.columns[2].time_zone, chrono_tz::Asia::Seoul);
        assert_eq!(t.columns[6].source, ColumnSource::Now(NowMode::OnWrite));
        assert_eq!(t.field_columns().count(), 5);
    }

    #[test]
    fn the_shipped_parking_sink_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/parking-sink.yaml");
        let c = load(&path).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(c.tables.len(), 2);
        assert!(is_sink_text(&std::fs::read_to_string(path).unwrap()));
    }

    #[test]
    fn reports_every_error_with_line_and_column() {
        let text = r#"name: parking
dead_letter: dlq
tables:
  - topic: parking_hourly_avg
    table: parking.Hourly
    key: [region_code, hour]
    columns:
      region_code: { field: region_code, type: strng }
      hour: { field: window_start, type: timestamp, time_zone: Asia/Seol }
      samples: { type: bigint }
"#;
        let errs = errors(text);
        let has = |line: u64, col: u64, needle: &str| {
            errs.iter()
                .any(|(l, c, m)| *l == line && *c == col && m.contains(needle))
        };
        assert!(has(5, 12, "`Hourly` is not a plain SQL identifier"), "{errs:?}");
        assert!(has(8, 48, "unknown type `strng`"), "{errs:?}");
        assert!(has(9, 64, "unknown time zone `Asia/Seol`"), "{errs:?}");
        assert!(has(10, 16, "`samples` needs `field:`"), "{errs:?}");
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn key_must_name_a_column_and_upsert_needs_a_key() {
        let text = "name: s\ndead_letter: d\ntables:\n  - topic: t\n    table: x\n    key: [regoin_code]\n    columns:\n      region_code: { field: a, type: text }\n  - topic: t2\n    table: y\n    columns:\n      a: { field: a, type: text }\n";
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|(l, c, m)| *l == 6 && *c == 11 && m.contains("`regoin_code` is not in `columns`")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|(l, _, m)| *l == 10 && m.contains("needs `key:`")),
            "{errs:?}"
        );
        let d = parse(text).unwrap_err();
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `region_code`?"));
    }

    #[test]
    fn unknown_field_names_its_position() {
        let text = "name: s\ndead_letter: d\ntables:\n  - topic: t\n    table: x\n    mode: upsert\n    kye: [a]\n    columns:\n      a: { field: a, type: text }\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1);
        let (line, _, msg) = &errs[0];
        assert_eq!(*line, 7, "{msg}");
        assert!(msg.contains("kye"), "{msg}");
    }

    #[test]
    fn bad_mode_format_and_durations() {
        let text = "name: s\ndead_letter: d\nlinger: soon\ntables:\n  - topic: t\n    table: x\n    mode: merge\n    columns:\n      a: { field: a, type: text }\n";
        let errs = errors(text);
        assert_eq!(errs[0].0, 7, "{errs:?}");
        let text = "name: s\ndead_letter: d\nlinger: soon\nbatch_size: 0\ntables:\n  - topic: t\n    table: x\n    mode: insert\n    columns:\n      a: { field: a, type: integer, format: \"%Y\" }\n      b: { field: b, type: timestamp, format: \"%Q\" }\n";
        let errs = errors(text);
        assert!(
            errs.iter().any(|(l, _, m)| *l == 3 && m.contains("invalid duration")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|(l, _, m)| *l == 4 && m.contains("batch_size")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|(l, _, m)| *l == 10 && m.contains("`format` only applies")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|(l, _, m)| *l == 11 && m.contains("invalid strftime")),
            "{errs:?}"
        );
    }

    #[test]
    fn column_types() {
        assert_eq!(ColumnType::parse("VARCHAR(255)"), Some(ColumnType::Varchar(255)));
        assert_eq!(ColumnType::parse("double precision"), Some(ColumnType::Double));
        assert_eq!(ColumnType::parse("varchar(0)"), None);
        assert_eq!(ColumnType::parse("numeric"), None);
        assert_eq!(ColumnType::Timestamp.ddl(), "timestamp without time zone");
    }
}
