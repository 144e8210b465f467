//! weir's CEL functions as plain code, and what both evaluators share: the
//! variables, the record an expression sees, the evaluation error, and the
//! one table of function names. A leaf module: the interpreter setup in
//! `expr` and the direct evaluator in `direct` both build on it, neither on
//! the other.

use std::sync::Arc;

use cel::objects::Key;
use cel::Value;
use chrono::{NaiveDateTime, TimeZone};

/// Variables an expression may use.
pub(crate) const VARIABLES: &[&str] = &["value", "key", "timestamp", "topic", "partition"];

/// Why an expression failed for one record.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub(crate) struct EvalError(pub String);

/// What an expression sees of one record.
pub(crate) struct Input<'a> {
    pub value: &'a Value,
    pub key: &'a Value,
    pub timestamp: i64,
    pub topic: &'a str,
    pub partition: i32,
}

/// A function both evaluators run with the code below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Num,
    Get,
    Float,
    Str,
    Max,
    Min,
    Int,
    Double,
    ParseTime,
}

/// One entry of [`FUNCTIONS`].
pub(crate) struct Function {
    pub name: &'static str,
    pub func: Func,
    /// weir's own (registered with the CEL interpreter); otherwise a CEL
    /// standard function the direct evaluator implements for one argument.
    pub own: bool,
}

/// The one table of function names: weir's own functions, then the CEL
/// standard conversions the direct evaluator runs itself.
pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "num",
        func: Func::Num,
        own: true,
    },
    Function {
        name: "get",
        func: Func::Get,
        own: true,
    },
    Function {
        name: "float",
        func: Func::Float,
        own: true,
    },
    Function {
        name: "str",
        func: Func::Str,
        own: true,
    },
    Function {
        name: "max",
        func: Func::Max,
        own: true,
    },
    Function {
        name: "min",
        func: Func::Min,
        own: true,
    },
    Function {
        name: "parse_time",
        func: Func::ParseTime,
        own: true,
    },
    Function {
        name: "int",
        func: Func::Int,
        own: false,
    },
    Function {
        name: "double",
        func: Func::Double,
        own: false,
    },
];

/// Other CEL standard functions a misspelt name may be closest to.
pub(crate) const STANDARD_FUNCTIONS: &[&str] =
    &["string", "size", "has", "matches", "contains", "startsWith", "endsWith"];

/// Every function name a "did you mean" may suggest.
pub(crate) fn known_names() -> impl Iterator<Item = &'static str> {
    FUNCTIONS
        .iter()
        .map(|f| f.name)
        .chain(STANDARD_FUNCTIONS.iter().copied())
}

impl Func {
    /// Run the function on evaluated arguments.
    pub(crate) fn call(self, args: &[Value]) -> Result<Value, String> {
        match self {
            Func::Num => num(args),
            Func::Get => get(args),
            Func::Float => float(args),
            Func::Str => str_of(args),
            Func::Max => extreme(args, std::cmp::Ordering::Greater),
            Func::Min => extreme(args, std::cmp::Ordering::Less),
            Func::ParseTime => parse_time(args),
            Func::Int => int(args),
            Func::Double => double(args),
        }
    }
}

type R = Result<Value, String>;

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

pub(crate) fn to_f64(v: &Value) -> Result<f64, String> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::UInt(u) => Ok(*u as f64),
        Value::Float(f) => Ok(*f),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| format!("not a number: {s:?}")),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(format!("cannot convert {} to a number", other.type_of())),
    }
}

fn field_of<'v>(map: &'v Value, name: &Value) -> Option<&'v Value> {
    match (map, name) {
        (Value::Map(m), Value::String(n)) => m.map.get(&Key::String(n.clone())),
        _ => None,
    }
}

/// `num(x)`, `num(x, default)`, `num(map, "FIELD", default)`: a number
/// as a double. Empty, null or (three-argument form) missing →
/// `default`; text that is not a number is an error.
pub(crate) fn num(args: &[Value]) -> R {
    let (v, default) = match args {
        [v] => (Some(v), None),
        [v, d] => (Some(v), Some(d)),
        [m, f, d] => (field_of(m, f), Some(d)),
        _ => return Err("expects num(x), num(x, default) or num(map, \"field\", default)".into()),
    };
    match (v, default) {
        (Some(v), _) if !is_blank(v) => Ok(Value::Float(to_f64(v)?)),
        (_, Some(d)) => Ok(Value::Float(to_f64(d)?)),
        (None, None) => Err("missing value".into()),
        (Some(_), None) => Err("empty value and no default".into()),
    }
}

/// `get(map, "FIELD", default)`: the field, or `default` when it is
/// missing or null.
pub(crate) fn get(args: &[Value]) -> R {
    let [m, f, d] = args else {
        return Err("expects get(map, \"field\", default)".into());
    };
    if !matches!(m, Value::Map(_)) {
        return Err(format!("first argument must be a map, got {}", m.type_of()));
    }
    Ok(match field_of(m, f) {
        Some(Value::Null) | None => d.clone(),
        Some(v) => v.clone(),
    })
}

/// `float(x)`: a number or numeric text as a double.
pub(crate) fn float(args: &[Value]) -> R {
    let [v] = args else {
        return Err("expects float(x)".into());
    };
    Ok(Value::Float(to_f64(v)?))
}

/// `str(x)`: any scalar as text.
pub(crate) fn str_of(args: &[Value]) -> R {
    let [v] = args else { return Err("expects str(x)".into()) };
    Ok(match v {
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(Arc::new(match other {
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            other => to_json(other).to_string(),
        })),
    })
}

fn numeric_cmp(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => to_f64(a)?
            .partial_cmp(&to_f64(b)?)
            .ok_or_else(|| "cannot compare NaN".to_string()),
    }
}

/// `max(a, b, ...)` / `max(list)` (and `min`); ints and doubles compare
/// by value; the winner keeps its type.
pub(crate) fn extreme(args: &[Value], want: std::cmp::Ordering) -> R {
    let items: &[Value] = match args {
        [Value::List(l)] => l.as_slice(),
        _ => args,
    };
    let mut best: Option<&Value> = None;
    for item in items {
        best = match best {
            Some(b) if numeric_cmp(item, b)? != want => Some(b),
            _ => Some(item),
        };
    }
    Ok(best.cloned().unwrap_or(Value::Null))
}

/// CEL's `int(x)` for the values records hold.
pub(crate) fn int(args: &[Value]) -> R {
    let [v] = args else { return Err("expects int(x)".into()) };
    match v {
        Value::Int(i) => Ok(Value::Int(*i)),
        Value::UInt(u) => i64::try_from(*u).map(Value::Int).map_err(|_| "integer overflow".into()),
        Value::Float(f) if f.is_finite() && *f > i64::MIN as f64 && *f < i64::MAX as f64 => Ok(Value::Int(*f as i64)),
        Value::Float(_) => Err("integer overflow".into()),
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|e| format!("cannot convert {s:?} to int: {e}")),
        other => Err(format!("cannot convert {} to int", other.type_of())),
    }
}

/// CEL's `double(x)` for the values records hold.
pub(crate) fn double(args: &[Value]) -> R {
    let [v] = args else {
        return Err("expects double(x)".into());
    };
    match v {
        Value::String(s) => s
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|e| format!("cannot convert {s:?} to double: {e}")),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => Ok(Value::Float(to_f64(v)?)),
        other => Err(format!("cannot convert {} to double", other.type_of())),
    }
}

/// `parse_time(text, format, zone)`: epoch milliseconds of a local time.
pub(crate) fn parse_time(args: &[Value]) -> R {
    let [Value::String(text), Value::String(format), Value::String(zone)] = args else {
        return Err("expects parse_time(text, format, zone) with three strings".into());
    };
    let tz = crate::support::tz::parse(zone).map_err(|e| e.to_string())?;
    parse_local_millis(text, format, tz).map(Value::Int)
}

/// Epoch milliseconds of `text` read with strftime `format` as wall-clock
/// time in `tz`. Shared with event-time extraction.
pub(crate) fn parse_local_millis(text: &str, format: &str, tz: chrono_tz::Tz) -> Result<i64, String> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), format)
        .map_err(|e| format!("cannot parse time {text:?} with {format:?}: {e}"))?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("{text:?} does not exist in {tz}"))
}

/// Convert a CEL value to JSON. Maps are written with sorted keys so the
/// output is deterministic.
pub(crate) fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        Value::List(l) => serde_json::Value::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => {
            let mut entries: Vec<(String, serde_json::Value)> =
                m.map.iter().map(|(k, v)| (key_text(k), to_json(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().collect())
        }
        Value::Timestamp(t) => serde_json::Value::String(t.to_rfc3339()),
        Value::Duration(d) => serde_json::Value::from(d.num_milliseconds()),
        other => serde_json::Value::String(format!("{other:?}")),
    }
}

pub(crate) fn key_text(k: &Key) -> String {
    match k {
        Key::String(s) => s.to_string(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}
