//! Record → row mapping: a JSON record value becomes the typed values of a
//! table's field columns. Pure (no I/O), so every conversion rule is unit
//! tested here.
//!
//! Rules: integer/double columns take JSON numbers and numeric strings; an
//! empty (or blank) string is NULL for every non-text type; NULL is
//! rejected for key and NOT NULL columns. Timestamps take RFC 3339 text,
//! text in the column's `format` (read in its `time_zone`), or epoch
//! milliseconds; a `timestamp` column stores the wall clock of its
//! `time_zone` (e.g. KST for Asia/Seoul).

use std::collections::HashMap;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::config::{ColumnSource, ColumnType, TableConfig};
use super::row::Value;

/// How one field becomes one column value.
#[derive(Debug, Clone)]
pub(crate) struct FieldMapping {
    pub(crate) column: String,
    pub(crate) field: String,
    pub(crate) kind: Kind,
    pub(crate) not_null: bool,
    /// varchar(N): longest text in characters.
    pub(crate) max_chars: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Text,
    /// Integer of this many bits (16, 32 or 64).
    Integer(u32),
    Double,
    /// An instant; text without offset is read in `tz`.
    Timestamptz {
        tz: Tz,
        format: Option<String>,
    },
    /// The wall clock in `tz`.
    Timestamp {
        tz: Tz,
        format: Option<String>,
    },
}

/// A table's record mapping: the field columns in order, and which of them
/// form the key.
#[derive(Debug, Clone)]
pub struct RecordMapping {
    pub(crate) fields: Vec<FieldMapping>,
    /// Indexes into `fields`.
    pub(crate) key: Vec<usize>,
    /// A tombstone deletes its key's row (`delete_on_tombstone`).
    pub(crate) delete_on_tombstone: bool,
}

/// What a record becomes in a table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mapped {
    /// A row to write.
    Row(Vec<Value>),
    /// A tombstone: the row of this key goes. Only the key column is set
    /// (the rest NULL), so that a batch deduplicates rows and deletes by
    /// the same key, the last record winning.
    Delete(Vec<Value>),
}

/// Why a record could not be mapped (goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("record has no value")]
    NoValue,
    #[error("tombstone without a key: no row to delete")]
    TombstoneWithoutKey,
    #[error("value is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("value is not a JSON object")]
    NotAnObject,
    #[error("column {column}: field `{field}` is missing or null but the column is NOT NULL")]
    Missing { column: String, field: String },
    #[error("column {column}: field `{field}`: {reason}")]
    Invalid {
        column: String,
        field: String,
        reason: String,
    },
}

impl RecordMapping {
    /// The mapping of a checked table config, with column facts from the
    /// database (`db_not_null`, `varchar_len`, `int_bits` by column name)
    /// when known.
    pub(crate) fn new(table: &TableConfig, db: &HashMap<String, DbColumnFacts>) -> RecordMapping {
        let mut fields = Vec::new();
        for c in table.field_columns() {
            let ColumnSource::Field(field) = &c.source else {
                continue;
            };
            let facts = db.get(&c.name).cloned().unwrap_or_default();
            let kind = match c.ty {
                ColumnType::Text | ColumnType::Varchar(_) => Kind::Text,
                ColumnType::Integer => Kind::Integer(facts.int_bits.unwrap_or(32)),
                ColumnType::BigInt => Kind::Integer(facts.int_bits.unwrap_or(64)),
                ColumnType::Double => Kind::Double,
                ColumnType::Timestamptz => Kind::Timestamptz {
                    tz: c.time_zone,
                    format: c.format.clone(),
                },
                ColumnType::Timestamp => Kind::Timestamp {
                    tz: c.time_zone,
                    format: c.format.clone(),
                },
            };
            let declared_len = match c.ty {
                ColumnType::Varchar(n) => Some(n as usize),
                _ => None,
            };
            fields.push(FieldMapping {
                column: c.name.clone(),
                field: field.clone(),
                kind,
                not_null: c.not_null || facts.not_null,
                max_chars: facts.varchar_len.or(declared_len),
            });
        }
        let key = table
            .key
            .iter()
            .filter_map(|k| fields.iter().position(|f| f.column == *k))
            .collect();
        RecordMapping {
            fields,
            key,
            delete_on_tombstone: table.delete_on_tombstone,
        }
    }

    /// Map a record: its value to a row, or a tombstone (no value) to the
    /// delete of its key's row when the table deletes on tombstones.
    pub(crate) fn map_record(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<Mapped, MapError> {
        match payload {
            None if self.delete_on_tombstone => self.tombstone(key).map(Mapped::Delete),
            _ => self.map_payload(payload).map(Mapped::Row),
        }
    }

    /// The record key as the value of the (one) key column, read as that
    /// column reads its field from a record value: the topic is keyed by
    /// that column's value.
    fn tombstone(&self, key: Option<&[u8]>) -> Result<Vec<Value>, MapError> {
        let key = key.ok_or(MapError::TombstoneWithoutKey)?;
        let [k] = self.key[..] else {
            return Err(MapError::NoValue);
        };
        let f = &self.fields[k];
        let invalid = |reason: String| MapError::Invalid {
            column: f.column.clone(),
            field: "(the record key)".into(),
            reason,
        };
        let text = std::str::from_utf8(key).map_err(|_| invalid("the record key is not UTF-8".into()))?;
        let value = convert(Some(&serde_json::Value::String(text.to_string())), &f.kind).map_err(invalid)?;
        if value == Value::Null {
            return Err(MapError::TombstoneWithoutKey);
        }
        let mut row = vec![Value::Null; self.fields.len()];
        row[k] = value;
        Ok(row)
    }

    /// Map a raw record value.
    pub fn map_payload(&self, payload: Option<&[u8]>) -> Result<Vec<Value>, MapError> {
        let payload = payload.ok_or(MapError::NoValue)?;
        let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| MapError::InvalidJson(e.to_string()))?;
        self.map_json(&v)
    }

    /// Map a parsed JSON value.
    pub fn map_json(&self, v: &serde_json::Value) -> Result<Vec<Value>, MapError> {
        let obj = v.as_object().ok_or(MapError::NotAnObject)?;
        let mut row = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let invalid = |reason: String| MapError::Invalid {
                column: f.column.clone(),
                field: f.field.clone(),
                reason,
            };
            let value = convert(obj.get(&f.field), &f.kind).map_err(invalid)?;
            if value == Value::Null && f.not_null {
                return Err(MapError::Missing {
                    column: f.column.clone(),
                    field: f.field.clone(),
                });
            }
            if let (Value::Text(s), Some(max)) = (&value, f.max_chars) {
                let n = s.chars().count();
                if n > max {
                    return Err(invalid(format!(
                        "text of {n} characters is longer than the column's {max}"
                    )));
                }
            }
            row.push(value);
        }
        Ok(row)
    }

    /// The key values of a mapped row.
    pub(crate) fn key_of<'a>(&self, row: &'a [Value]) -> Vec<&'a Value> {
        self.key.iter().map(|&i| &row[i]).collect()
    }
}

/// What the database says about a column, refining the mapping.
#[derive(Debug, Clone, Default)]
pub(crate) struct DbColumnFacts {
    pub(crate) not_null: bool,
    pub(crate) varchar_len: Option<usize>,
    pub(crate) int_bits: Option<u32>,
}

fn describe(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Convert one JSON field (absent = `None`) to a column value.
pub(crate) fn convert(v: Option<&serde_json::Value>, kind: &Kind) -> Result<Value, String> {
    use serde_json::Value as J;
    let v = match v {
        None | Some(J::Null) => return Ok(Value::Null),
        Some(v) => v,
    };
    if let (J::String(s), false) = (v, matches!(kind, Kind::Text)) {
        if s.trim().is_empty() {
            return Ok(Value::Null);
        }
    }
    match kind {
        Kind::Text => match v {
            J::String(s) => Ok(Value::Text(s.clone())),
            J::Number(n) => Ok(Value::Text(n.to_string())),
            J::Bool(b) => Ok(Value::Text(b.to_string())),
            other => Err(format!("expected text, got {}", describe(other))),
        },
        Kind::Integer(bits) => {
            let i = match v {
                J::Number(n) => match n.as_i64() {
                    Some(i) => i,
                    None => integral(n.as_f64().unwrap_or(f64::NAN)).ok_or_else(|| format!("{n} is not an integer"))?,
                },
                J::String(s) => {
                    let t = s.trim();
                    match t.parse::<i64>() {
                        Ok(i) => i,
                        Err(_) => t
                            .parse::<f64>()
                            .ok()
                            .and_then(integral)
                            .ok_or_else(|| format!("\"{s}\" is not an integer"))?,
                    }
                }
                other => return Err(format!("expected an integer, got {}", describe(other))),
            };
            let (min, max) = match bits {
                16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
                32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            if i < min || i > max {
                return Err(format!("{i} is out of range for a {bits}-bit integer"));
            }
            Ok(Value::Int(i))
        }
        Kind::Double => {
            let d = match v {
                J::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number"))?,
                J::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("\"{s}\" is not a number"))?,
                other => return Err(format!("expected a number, got {}", describe(other))),
            };
            if !d.is_finite() {
                return Err(format!("{d} is not a finite number"));
            }
            Ok(Value::Double(d))
        }
        Kind::Timestamptz { tz, format } => instant(v, *tz, format.as_deref()).map(Value::Timestamptz),
        Kind::Timestamp { tz, format } => {
            // Text in the column's own format and zone already is the wall
            // clock wanted: no round trip through an instant (which would
            // fail on a DST gap).
            if let (J::String(s), Some(fmt)) = (v, format) {
                if !has_offset(fmt) {
                    return parse_naive(s.trim(), fmt).map(Value::Timestamp);
                }
            }
            instant(v, *tz, format.as_deref()).map(|t| Value::Timestamp(t.with_timezone(tz).naive_local()))
        }
    }
}

fn integral(f: f64) -> Option<i64> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15).then_some(f as i64)
}

fn has_offset(fmt: &str) -> bool {
    fmt.contains("%z") || fmt.contains("%:z") || fmt.contains("%#z") || fmt.contains("%::z")
}

fn parse_naive(s: &str, fmt: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(s, fmt)
        .or_else(|e| {
            NaiveDate::parse_from_str(s, fmt)
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
                .map_err(|_| e)
        })
        .map_err(|e| format!("\"{s}\" does not match format \"{fmt}\": {e}"))
}

/// An instant from RFC 3339 text, formatted text, or epoch milliseconds.
fn instant(v: &serde_json::Value, tz: Tz, format: Option<&str>) -> Result<DateTime<Utc>, String> {
    use serde_json::Value as J;
    match v {
        J::Number(n) => {
            let ms = n.as_i64().ok_or_else(|| format!("{n} is not epoch milliseconds"))?;
            DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("{ms} is out of range"))
        }
        J::String(s) => {
            let s = s.trim();
            match format {
                Some(fmt) if has_offset(fmt) => DateTime::parse_from_str(s, fmt)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("\"{s}\" does not match format \"{fmt}\": {e}")),
                Some(fmt) => {
                    let naive = parse_naive(s, fmt)?;
                    match tz.from_local_datetime(&naive) {
                        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
                        // A repeated hour: the earlier instant, like Postgres.
                        LocalResult::Ambiguous(a, _) => Ok(a.with_timezone(&Utc)),
                        LocalResult::None => Err(format!("\"{s}\" does not exist in {tz} (clock change)")),
                    }
                }
                None => DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("\"{s}\" is not an RFC 3339 timestamp ({e}); set `format` for other text")),
            }
        }
        other => Err(format!("expected a timestamp, got {}", describe(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::row::dedup_last;
    use chrono_tz::Asia::Seoul;
    use serde_json::json;

    fn ts(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn conv(v: serde_json::Value, kind: Kind) -> Result<Value, String> {
        convert(Some(&v), &kind)
    }

    #[test]
    fn integers_from_numbers_and_strings() {
        assert_eq!(conv(json!(22), Kind::Integer(32)), Ok(Value::Int(22)));
        assert_eq!(conv(json!("22"), Kind::Integer(32)), Ok(Value::Int(22)));
        assert_eq!(conv(json!(" 7 "), Kind::Integer(64)), Ok(Value::Int(7)));
        assert_eq!(conv(json!(22.0), Kind::Integer(32)), Ok(Value::Int(22)));
        assert_eq!(conv(json!("22.0"), Kind::Integer(32)), Ok(Value::Int(22)));
        assert!(conv(json!(22.5), Kind::Integer(32)).is_err());
        assert!(conv(json!("abc"), Kind::Integer(32))
            .unwrap_err()
            .contains("\"abc\" is not an integer"));
        assert!(conv(json!(3_000_000_000i64), Kind::Integer(32))
            .unwrap_err()
            .contains("out of range"));
        assert_eq!(
            conv(json!(3_000_000_000i64), Kind::Integer(64)),
            Ok(Value::Int(3_000_000_000))
        );
        assert!(conv(json!(true), Kind::Integer(64)).is_err());
    }

    #[test]
    fn empty_strings_and_missing_fields_are_null() {
        assert_eq!(conv(json!(""), Kind::Integer(32)), Ok(Value::Null));
        assert_eq!(conv(json!("  "), Kind::Double), Ok(Value::Null));
        assert_eq!(
            conv(
                json!(""),
                Kind::Timestamp {
                    tz: Seoul,
                    format: None
                }
            ),
            Ok(Value::Null)
        );
        assert_eq!(convert(None, &Kind::Double), Ok(Value::Null));
        assert_eq!(conv(json!(null), Kind::Text), Ok(Value::Null));
        // Text keeps an empty string.
        assert_eq!(conv(json!(""), Kind::Text), Ok(Value::Text(String::new())));
    }

    #[test]
    fn doubles_and_text() {
        assert_eq!(conv(json!(12.5), Kind::Double), Ok(Value::Double(12.5)));
        assert_eq!(conv(json!("37.55639535"), Kind::Double), Ok(Value::Double(37.55639535)));
        assert_eq!(conv(json!(3), Kind::Double), Ok(Value::Double(3.0)));
        assert!(conv(json!("NaN"), Kind::Double).is_err());
        assert!(conv(json!("1,5"), Kind::Double).is_err());
        assert_eq!(conv(json!(5), Kind::Text), Ok(Value::Text("5".into())));
        assert!(conv(json!({"a": 1}), Kind::Text).is_err());
    }

    #[test]
    fn rfc3339_to_kst_wall_clock() {
        let k = Kind::Timestamp {
            tz: Seoul,
            format: None,
        };
        assert_eq!(
            conv(json!("2025-03-31T10:00:00+09:00"), k.clone()),
            Ok(Value::Timestamp(ts("2025-03-31 10:00:00")))
        );
        // The same instant written in UTC is the same KST wall clock.
        assert_eq!(
            conv(json!("2025-03-31T01:00:00Z"), k.clone()),
            Ok(Value::Timestamp(ts("2025-03-31 10:00:00")))
        );
        assert_eq!(
            conv(json!("2025-03-31T20:30:00-05:00"), k.clone()),
            Ok(Value::Timestamp(ts("2025-04-01 10:30:00")))
        );
        // Epoch milliseconds: 2025-03-31T01:00:00Z.
        assert_eq!(
            conv(json!(1_743_382_800_000i64), k.clone()),
            Ok(Value::Timestamp(ts("2025-03-31 10:00:00")))
        );
        assert!(conv(json!("2025-03-31 10:00:00"), k).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn formatted_text_in_a_zone() {
        let fmt = Some("%Y-%m-%d %H:%M:%S".to_string());
        let k = Kind::Timestamp {
            tz: Seoul,
            format: fmt.clone(),
        };
        assert_eq!(
            conv(json!("2025-03-31 10:16:20"), k.clone()),
            Ok(Value::Timestamp(ts("2025-03-31 10:16:20")))
        );
        assert!(conv(json!("31/03/2025"), k)
            .unwrap_err()
            .contains("does not match format"));
        let k = Kind::Timestamptz { tz: Seoul, format: fmt };
        let want = Utc.with_ymd_and_hms(2025, 3, 31, 1, 16, 20).unwrap();
        assert_eq!(conv(json!("2025-03-31 10:16:20"), k), Ok(Value::Timestamptz(want)));
        let k = Kind::Timestamptz {
            tz: Tz::UTC,
            format: None,
        };
        assert_eq!(
            conv(json!("2025-03-31T10:16:20+09:00"), k),
            Ok(Value::Timestamptz(want))
        );
        // A wall clock in UTC from KST text without format.
        let k = Kind::Timestamp {
            tz: Tz::UTC,
            format: None,
        };
        assert_eq!(
            conv(json!("2025-03-31T10:16:20+09:00"), k),
            Ok(Value::Timestamp(ts("2025-03-31 01:16:20")))
        );
        // Date-only formats are midnight.
        let k = Kind::Timestamp {
            tz: Seoul,
            format: Some("%Y-%m-%d".into()),
        };
        assert_eq!(
            conv(json!("2025-03-31"), k),
            Ok(Value::Timestamp(ts("2025-03-31 00:00:00")))
        );
    }

    fn mapping() -> RecordMapping {
        RecordMapping {
            fields: vec![
                FieldMapping {
                    column: "region_code".into(),
                    field: "region_code".into(),
                    kind: Kind::Text,
                    not_null: true,
                    max_chars: Some(6),
                },
                FieldMapping {
                    column: "hour".into(),
                    field: "window_start".into(),
                    kind: Kind::Timestamp {
                        tz: Seoul,
                        format: None,
                    },
                    not_null: true,
                    max_chars: None,
                },
                FieldMapping {
                    column: "avg".into(),
                    field: "avg_available_spots".into(),
                    kind: Kind::Double,
                    not_null: false,
                    max_chars: None,
                },
            ],
            key: vec![0, 1],
            delete_on_tombstone: false,
        }
    }

    /// A lot table keyed by an integer code, deleting on tombstones.
    fn lots() -> RecordMapping {
        RecordMapping {
            fields: vec![
                FieldMapping {
                    column: "name".into(),
                    field: "NAME".into(),
                    kind: Kind::Text,
                    not_null: false,
                    max_chars: None,
                },
                FieldMapping {
                    column: "code".into(),
                    field: "CODE".into(),
                    kind: Kind::Integer(64),
                    not_null: true,
                    max_chars: None,
                },
            ],
            key: vec![1],
            delete_on_tombstone: true,
        }
    }

    #[test]
    fn a_tombstone_is_the_delete_of_its_keys_row_read_like_the_key_field() {
        let m = lots();
        assert_eq!(
            m.map_record(Some(b"1587410"), None),
            Ok(Mapped::Delete(vec![Value::Null, Value::Int(1587410)]))
        );
        // A value is a row, as without tombstones.
        assert_eq!(
            m.map_record(Some(b"7"), Some(br#"{"NAME":"a","CODE":"7"}"#)),
            Ok(Mapped::Row(vec![Value::Text("a".into()), Value::Int(7)]))
        );
        assert_eq!(m.map_record(None, None), Err(MapError::TombstoneWithoutKey));
        assert!(matches!(
            m.map_record(Some(b"abc"), None),
            Err(MapError::Invalid { ref field, .. }) if field == "(the record key)"
        ));
        assert!(matches!(
            m.map_record(Some(&[0xff, 0xfe]), None),
            Err(MapError::Invalid { .. })
        ));
        // Without delete_on_tombstone a tombstone is a record without a value.
        assert_eq!(mapping().map_record(Some(b"k"), None), Err(MapError::NoValue));
    }

    #[test]
    fn maps_a_record_and_names_what_is_wrong() {
        let m = mapping();
        let row = m
            .map_payload(Some(
                br#"{"region_code":"POI007","window_start":"2025-03-31T10:00:00+09:00","avg_available_spots":12.5}"#,
            ))
            .unwrap();
        assert_eq!(
            row,
            vec![
                Value::Text("POI007".into()),
                Value::Timestamp(ts("2025-03-31 10:00:00")),
                Value::Double(12.5)
            ]
        );
        assert_eq!(m.key_of(&row), vec![&row[0], &row[1]]);

        let err = m
            .map_payload(Some(br#"{"window_start":"2025-03-31T10:00:00+09:00"}"#))
            .unwrap_err();
        assert_eq!(
            err,
            MapError::Missing {
                column: "region_code".into(),
                field: "region_code".into()
            }
        );
        let err = m
            .map_payload(Some(br#"{"region_code":"POI007","window_start":"x"}"#))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("column hour: field `window_start`: \"x\" is not an RFC 3339"),
            "{err}"
        );
        let err = m
            .map_payload(Some(
                br#"{"region_code":"POI007","window_start":"2025-03-31T10:00:00+09:00","avg_available_spots":"abc"}"#,
            ))
            .unwrap_err();
        assert!(err.to_string().contains("\"abc\" is not a number"), "{err}");
        assert!(matches!(
            m.map_payload(Some(b"{not json")),
            Err(MapError::InvalidJson(_))
        ));
        assert_eq!(m.map_payload(Some(b"[1]")), Err(MapError::NotAnObject));
        assert_eq!(m.map_payload(None), Err(MapError::NoValue));
        let err = m
            .map_payload(Some(
                br#"{"region_code":"POI0077","window_start":"2025-03-31T10:00:00+09:00"}"#,
            ))
            .unwrap_err();
        assert!(err.to_string().contains("longer than the column's 6"), "{err}");
        // A nullable column may be empty.
        let row = m
            .map_payload(Some(
                br#"{"region_code":"POI007","window_start":"2025-03-31T10:00:00+09:00","avg_available_spots":""}"#,
            ))
            .unwrap();
        assert_eq!(row[2], Value::Null);
    }

    #[test]
    fn dedup_on_mapped_rows() {
        let m = mapping();
        let rec = |avg: f64| {
            m.map_json(
                &json!({"region_code":"POI007","window_start":"2025-03-31T10:00:00+09:00","avg_available_spots": avg}),
            )
            .unwrap()
        };
        let other = m
            .map_json(&json!({"region_code":"POI008","window_start":"2025-03-31T10:00:00+09:00"}))
            .unwrap();
        let rows = vec![rec(1.0), other.clone(), rec(2.0), rec(3.5)];
        let out = dedup_last(rows, |r| m.key_of(r).into_iter().cloned().collect::<Vec<_>>());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], other);
        assert_eq!(out[1][2], Value::Double(3.5));
    }
}
