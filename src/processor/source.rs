//! Decoding a source record: its bytes into a [`Record`] as its source
//! says (JSON, projected to the fields the topology reads, or text), with
//! its event time; what cannot be decoded is a dead-letter reason.

use std::sync::Arc;

use cel::objects::Key;
use cel::Value;

use super::{codec, Origin, Record};
use crate::topology::functions::parse_local_millis;
use crate::topology::{EventTime, SourceNode, ValueFormat, MAX_RECORD_BYTES};

/// Decode a raw record as its source says; the error is the dead-letter
/// reason. An event time that cannot be right (before 1970, or a field's
/// more than `max_future` ahead of `now_ms`) is such an error too: one
/// record dated 2099 would otherwise move stream time to 2099, close every
/// window and make every later record late, and its repartition and output
/// records would carry a timestamp the broker refuses.
pub(super) fn decode(source: &SourceNode, o: &Origin<'_>, now_ms: i64) -> Result<Record, String> {
    let raw = o.value.ok_or("null value (tombstone)")?;
    if raw.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record too large: {} bytes (limit {MAX_RECORD_BYTES})",
            raw.len()
        ));
    }
    let (value, raw) = match (&source.project, source.value) {
        (Some(fields), ValueFormat::Json) => {
            // Skipped fields' strings are not checked by the parser.
            std::str::from_utf8(raw).map_err(|e| format!("value: invalid UTF-8 ({e})"))?;
            let value = codec::parse_json_projected(raw, fields).map_err(|e| format!("value: invalid JSON ({e})"))?;
            let raw = matches!(value, Value::Map(_)).then(|| Arc::from(raw));
            (value, raw)
        }
        _ => (
            decode_bytes(source.value, raw).map_err(|e| format!("value: {e}"))?,
            None,
        ),
    };
    let key = match o.key {
        None => Value::Null,
        Some(k) => decode_bytes(source.key, k).map_err(|e| format!("key: {e}"))?,
    };
    let timestamp = match &source.event_time {
        EventTime::Kafka => o.timestamp,
        EventTime::Field {
            field,
            format,
            tz,
            max_future_ms,
        } => {
            let t = event_time_from(&value, field, format.as_deref(), *tz)?;
            if t > now_ms.saturating_add(*max_future_ms) {
                return Err(format!(
                    "event time: {field} is {}, more than max_future ({}) ahead of the clock ({})",
                    rfc3339(t),
                    humantime::format_duration(std::time::Duration::from_millis(*max_future_ms as u64)),
                    rfc3339(now_ms)
                ));
            }
            t
        }
    };
    if timestamp < 0 {
        return Err(format!(
            "event time: {timestamp} ms is before 1970 ({})",
            rfc3339(timestamp)
        ));
    }
    Ok(Record {
        key,
        value,
        timestamp,
        raw,
        tombstone: false,
        old: None,
    })
}

/// An epoch-ms time as RFC 3339 UTC text, for messages (the number when it
/// is out of chrono's range).
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| format!("{ms} ms"), |t| t.to_rfc3339())
}

fn decode_bytes(format: ValueFormat, raw: &[u8]) -> Result<Value, String> {
    match format {
        ValueFormat::Bytes => Ok(Value::Bytes(Arc::new(raw.to_vec()))),
        ValueFormat::String | ValueFormat::Json => {
            if format == ValueFormat::String {
                let text = std::str::from_utf8(raw).map_err(|e| format!("invalid UTF-8 ({e})"))?;
                return Ok(Value::String(Arc::new(text.to_string())));
            }
            // The JSON parser checks UTF-8 as it goes (no separate pass); on
            // failure, say whether the bytes were text at all.
            codec::parse_json_bytes(raw).map_err(|e| match std::str::from_utf8(raw) {
                Err(u) => format!("invalid UTF-8 ({u})"),
                Ok(_) => format!("invalid JSON ({e})"),
            })
        }
    }
}

fn event_time_from(value: &Value, field: &str, format: Option<&str>, tz: chrono_tz::Tz) -> Result<i64, String> {
    let Value::Map(m) = value else {
        return Err("event time: value is not a JSON object".into());
    };
    let v = m
        .map
        .get(&Key::String(Arc::new(field.to_string())))
        .ok_or_else(|| format!("event time: missing field {field}"))?;
    match (v, format) {
        (Value::Int(ms), None) => Ok(*ms),
        (Value::String(s), Some(f)) => parse_local_millis(s, f, tz).map_err(|e| format!("event time: {e}")),
        (Value::String(s), None) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("event time: {field} {s:?} is not RFC 3339 ({e})")),
        (other, _) => Err(format!("event time: {field} has type {}", other.type_of())),
    }
}
