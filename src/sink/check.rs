//! Validation of a sink file: the [`super::spec`] types become the checked
//! [`super::config`] types. Every problem is collected with its line and
//! column so `weir validate` lists them all at once.
//!
//! Just over 600 lines, a third of them tests: the checks follow the
//! format key by key and read best next to each other.

use std::path::Path;
use std::time::Duration;

use chrono_tz::Tz;
use serde_saphyr::Spanned;

use super::config::{
    ColumnConfig, ColumnSource, ColumnType, Mode, QualifiedName, SinkConfig, TableConfig, DEFAULT_BATCH_SIZE,
    DEFAULT_LINGER, DEFAULT_OFFSETS_TABLE, MAX_BATCH_SIZE,
};
use super::spec::{ColumnSpec, SinkSpec, Str, TableSpec};
use crate::support::diag::{self, did_you_mean, Diagnostic, Diagnostics};

impl SinkConfig {
    /// Load and check a sink file, collecting every problem.
    pub fn load(path: &Path) -> Result<SinkConfig, Diagnostics> {
        Diagnostics::load(path, SinkConfig::parse)
    }

    /// Check sink YAML text, collecting every problem.
    pub fn parse(text: &str) -> Result<SinkConfig, Vec<Diagnostic>> {
        let spec: SinkSpec = serde_saphyr::from_str(text).map_err(|e| vec![diag::from_yaml_error(&e)])?;
        check(spec)
    }
}

/// Is this YAML text a sink file rather than a topology (a top-level
/// `tables:` key)?
pub fn is_sink_file(text: &str) -> bool {
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

/// `schema.table`, or `table` in schema `public`.
fn split_qualified(v: &str) -> (&str, &str) {
    v.split_once('.').unwrap_or(("public", v))
}

fn parse_qualified(s: &Str, what: &str, errs: &mut Vec<Diagnostic>) -> Option<QualifiedName> {
    let (schema, name) = split_qualified(s.value.trim());
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

fn default_offsets_table() -> QualifiedName {
    let (schema, name) = split_qualified(DEFAULT_OFFSETS_TABLE);
    QualifiedName {
        schema: schema.to_string(),
        name: name.to_string(),
    }
}

/// `write_method` is obsolete: `multi_row` is the only method.
fn check_write_method(m: &Str, errs: &mut Vec<Diagnostic>) {
    match m.value.trim() {
        "multi_row" => {}
        "copy" => errs.push(
            Diagnostic::at(
                m,
                "`write_method: copy` is no longer supported: it wrote no faster than the default `multi_row` (docs/sink.md, Performance)",
            )
            .with_hint("delete the `write_method` line"),
        ),
        other => errs.push(
            Diagnostic::at(m, format!("unknown write_method `{other}`"))
                .with_hint("the only method is `multi_row` (the default); delete the line"),
        ),
    }
}

fn parse_linger(s: &Str, errs: &mut Vec<Diagnostic>) -> Option<Duration> {
    match crate::support::duration::parse(&s.value) {
        Ok(d) if d <= Duration::from_secs(600) => Some(d),
        Ok(_) => {
            errs.push(Diagnostic::at(
                s,
                format!("linger `{}` is longer than 10 minutes", s.value),
            ));
            None
        }
        Err(e) => {
            errs.push(Diagnostic::at(s, format!("linger: {}", e.message)).with_hint(e.hint));
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
fn check(spec: SinkSpec) -> Result<SinkConfig, Vec<Diagnostic>> {
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
        None => Some(default_offsets_table()),
    };
    if let Some(m) = &spec.write_method {
        check_write_method(m, &mut errs);
    }
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
        if let Err(reason) = crate::kafka::settings::check(k, &v.value) {
            let d = Diagnostic::at(v, format!("consumer property `{k}` {reason}"));
            errs.push(if k == "group.id" {
                d.with_hint("use `group:`")
            } else {
                d
            });
        }
    }
    let (kafka, kafka_errors) = crate::kafka::settings::check_file_map(&spec.kafka);
    errs.extend(kafka_errors);

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
        consumer,
        kafka,
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
    let delete_on_tombstone = match &t.delete_on_tombstone {
        Some(d) if d.value => {
            if mode != Mode::Upsert {
                errs.push(
                    Diagnostic::at(
                        d,
                        "`delete_on_tombstone` needs `mode: upsert` (a row per key to delete)",
                    )
                    .with_hint("remove it, or load the topic with `mode: upsert` and a `key:`"),
                );
            } else if key.len() > 1 {
                errs.push(
                    Diagnostic::at(
                        d,
                        format!(
                            "`delete_on_tombstone` needs one key column: a tombstone's record key is the value of \
                             that column, but the key is ({})",
                            key.join(", ")
                        ),
                    )
                    .with_hint("key the topic by one column, or leave tombstones to the dead-letter topic"),
                );
            }
            true
        }
        _ => false,
    };
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
        delete_on_tombstone,
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
        Some(tz) => match crate::support::tz::parse(&tz.value) {
            Ok(z) => Some(z),
            Err(e) => {
                errs.push(Diagnostic::at(tz, format!("column `{name}`: {}", e.message)).with_hint(e.hint));
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
    use crate::sink::config::NowMode;

    /// The shipped example, the fixture of every sink test.
    const GOOD: &str = include_str!("../../topology/parking-sink.yaml");

    fn errors(text: &str) -> Vec<(u64, u64, String)> {
        match SinkConfig::parse(text) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.into_iter().map(|d| (d.line, d.column, d.message)).collect(),
        }
    }

    #[test]
    fn parses_a_good_file() {
        let c = SinkConfig::parse(GOOD).unwrap();
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
        assert_eq!(t.batch_size, 5000);
        assert_eq!(t.linger, Duration::from_millis(200));
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
        let c = SinkConfig::load(&path).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(c.tables.len(), 3);
        assert!(c.tables[2].delete_on_tombstone);
        assert!(is_sink_file(GOOD));
        assert!(!is_sink_file(include_str!("../../topology/parking.yaml")));
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
        assert!(has(9, 64, "unknown time zone \"Asia/Seol\""), "{errs:?}");
        let hints: Vec<_> = SinkConfig::parse(text)
            .unwrap_err()
            .into_iter()
            .filter_map(|d| d.hint)
            .collect();
        assert!(hints.iter().any(|h| h == "did you mean `Asia/Seoul`?"), "{hints:?}");
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
        let d = SinkConfig::parse(text).unwrap_err();
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `region_code`?"));
    }

    #[test]
    fn delete_on_tombstone_needs_upsert_and_one_key_column() {
        let table = |mode: &str, key: &str| {
            format!(
                "name: s\ndead_letter: d\ntables:\n  - topic: t\n    table: x\n    mode: {mode}\n    key: {key}\n    \
                 delete_on_tombstone: true\n    columns:\n      a: {{ field: a, type: text }}\n      b: {{ field: b, type: text }}\n"
            )
        };
        let ok = SinkConfig::parse(&table("upsert", "[a]")).unwrap();
        assert!(ok.tables[0].delete_on_tombstone);
        let errs = errors(&table("insert", "[a]"));
        assert!(
            errs.iter()
                .any(|(l, c, m)| *l == 8 && *c == 26 && m.contains("needs `mode: upsert`")),
            "{errs:?}"
        );
        let errs = errors(&table("upsert", "[a, b]"));
        assert!(
            errs.iter()
                .any(|(l, _, m)| *l == 8 && m.contains("needs one key column") && m.contains("(a, b)")),
            "{errs:?}"
        );
        // Off unless asked.
        let off =
            SinkConfig::parse(&table("upsert", "[a]").replace("delete_on_tombstone: true", "batch_size: 10")).unwrap();
        assert!(!off.tables[0].delete_on_tombstone);
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
            errs.iter()
                .any(|(l, _, m)| *l == 3 && m.contains("bad duration \"soon\"")),
            "{errs:?}"
        );
        // One grammar with the topology's: a bare number is not a duration.
        let bare = errors("name: s\ndead_letter: d\nlinger: 10\ntables:\n  - topic: t\n    table: x\n    mode: insert\n    columns:\n      a: { field: a, type: text }\n");
        assert!(
            bare.iter()
                .any(|(l, _, m)| *l == 3 && m.contains("\"10\" is not a duration; write \"10s\"")),
            "{bare:?}"
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

    #[test]
    fn write_method_copy_is_an_error_at_its_line() {
        let text = GOOD.replace("linger: 200ms\n", "linger: 200ms\nwrite_method: copy\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let (line, col, msg) = &errs[0];
        let at = text.lines().position(|l| l == "write_method: copy").unwrap() as u64 + 1;
        assert_eq!((*line, *col), (at, 15), "{msg}");
        assert!(msg.contains("`write_method: copy` is no longer supported"), "{msg}");
        let text = GOOD.replace("linger: 200ms\n", "linger: 200ms\nwrite_method: multi_row\n");
        assert!(SinkConfig::parse(&text).is_ok(), "multi_row is still accepted");
    }

    #[test]
    fn default_offsets_table_is_the_constant() {
        let c = SinkConfig::parse(GOOD).unwrap();
        assert_eq!(c.offsets_table.to_string(), DEFAULT_OFFSETS_TABLE);
    }
}
