//! Expressions: CEL (Common Expression Language) programs compiled once when
//! the topology loads and evaluated per record.
//!
//! Variables: `value` (the record value), `key`, `timestamp` (event time,
//! epoch ms), `topic`, `partition`. Functions beyond CEL's standard library
//! are the few the feed needs (`num`, `get`, `float`, `str`, `max`, `min`,
//! `parse_time`); they are documented in docs/topology.md. A plain
//! `value.FIELD` or `key` skips the interpreter altogether.

use std::collections::HashMap;
use std::sync::Arc;

use cel::extractors::Arguments;
use cel::objects::{Key, Map};
use cel::{Context, ExecutionError, FunctionContext, Program, Value};
use chrono::{NaiveDateTime, TimeZone};

/// Variables an expression may use.
pub const VARIABLES: &[&str] = &["value", "key", "timestamp", "topic", "partition"];

/// Why an expression failed for one record.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct EvalError(pub String);

/// What an expression sees of one record.
pub struct Input<'a> {
    pub value: &'a Value,
    pub key: &'a Value,
    pub timestamp: i64,
    pub topic: &'a str,
    pub partition: i32,
}

#[derive(Debug)]
enum Fast {
    /// `key`
    Key,
    /// `value.NAME`
    Field(Arc<String>),
    /// Anything else goes through the interpreter.
    No,
}

/// A compiled expression.
pub struct Expr {
    source: String,
    program: Program,
    fast: Fast,
    uses: [bool; 5],
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

thread_local! {
    /// The root context holding CEL's standard library and our functions.
    /// Building it registers dozens of functions, so it is made once per
    /// thread and every evaluation opens a cheap child scope on it.
    static ROOT: Context<'static, 'static> = root_context();
}

fn root_context() -> Context<'static, 'static> {
    let mut ctx = Context::default();
    // Registration only fails on a clash with a standard function; the names
    // below are not standard CEL, so a failure is a programming error that
    // the unit tests catch.
    let _ = ctx.add_function("num", num);
    let _ = ctx.add_function("get", get);
    let _ = ctx.add_function("float", float);
    let _ = ctx.add_function("str", str_fn);
    let _ = ctx.add_function("max", max);
    let _ = ctx.add_function("min", min);
    let _ = ctx.add_function("parse_time", parse_time);
    ctx
}

impl Expr {
    /// Compile `source`. Errors are human-readable and name the problem
    /// (syntax, unknown function, unknown variable).
    pub fn compile(source: &str) -> Result<Expr, String> {
        let program = Program::compile(source).map_err(|e| {
            // CEL's message repeats the source with a caret; the first line
            // holds the reason.
            let msg = e.to_string();
            msg.lines()
                .next()
                .unwrap_or("syntax error")
                .replace("ERROR: <input>:", "syntax error at ")
        })?;
        let refs = program.references();
        for var in refs.variables() {
            if !VARIABLES.contains(&var) {
                let hint = crate::topology::diag::did_you_mean(var, VARIABLES.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!(" (variables are: {})", VARIABLES.join(", ")));
                return Err(format!("unknown variable `{var}`{hint}"));
            }
        }
        for func in refs.functions() {
            if !is_known_function(func) {
                let known = [
                    "num",
                    "get",
                    "float",
                    "str",
                    "max",
                    "min",
                    "parse_time",
                    "int",
                    "double",
                    "string",
                    "size",
                    "has",
                    "matches",
                    "contains",
                    "startsWith",
                    "endsWith",
                ];
                let hint = crate::topology::diag::did_you_mean(func, known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!("unknown function `{func}`{hint}"));
            }
        }
        let uses = [
            refs.has_variable("value"),
            refs.has_variable("key"),
            refs.has_variable("timestamp"),
            refs.has_variable("topic"),
            refs.has_variable("partition"),
        ];
        let trimmed = source.trim();
        let fast = if trimmed == "key" {
            Fast::Key
        } else if let Some(field) = trimmed.strip_prefix("value.").filter(|f| is_identifier(f)) {
            Fast::Field(Arc::new(field.to_string()))
        } else {
            Fast::No
        };
        Ok(Expr {
            source: source.to_string(),
            program,
            fast,
            uses,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True if this is exactly `key`.
    pub fn is_record_key(&self) -> bool {
        matches!(self.fast, Fast::Key)
    }

    pub fn eval(&self, input: &Input<'_>) -> Result<Value, EvalError> {
        match &self.fast {
            Fast::Key => return Ok(input.key.clone()),
            Fast::Field(name) => {
                if let Value::Map(m) = input.value {
                    return m
                        .map
                        .get(&Key::String(name.clone()))
                        .cloned()
                        .ok_or_else(|| EvalError(format!("{}: no such field `{name}`", self.source)));
                }
            }
            Fast::No => {}
        }
        ROOT.with(|root| {
            let mut ctx = root.new_inner_scope();
            if self.uses[0] {
                ctx.add_variable_from_value("value", input.value.clone());
            }
            if self.uses[1] {
                ctx.add_variable_from_value("key", input.key.clone());
            }
            if self.uses[2] {
                ctx.add_variable_from_value("timestamp", input.timestamp);
            }
            if self.uses[3] {
                ctx.add_variable_from_value("topic", input.topic.to_string());
            }
            if self.uses[4] {
                ctx.add_variable_from_value("partition", i64::from(input.partition));
            }
            self.program
                .execute(&ctx)
                .map_err(|e| EvalError(format!("{}: {}", self.source, describe_error(&e))))
        })
    }

    /// Evaluate as a filter condition: true keeps the record.
    pub fn eval_bool(&self, input: &Input<'_>) -> Result<bool, EvalError> {
        match self.eval(input)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError(format!(
                "{}: expected a bool, got {}",
                self.source,
                other.type_of()
            ))),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A function is known if calling it does not fail with "undeclared
/// reference" (any other error, such as a wrong argument count, means it
/// exists). Operators (`_+_`, `@in`, ...) are always known.
fn is_known_function(name: &str) -> bool {
    if name.starts_with('_') || name.starts_with('@') || name.starts_with('!') {
        return true;
    }
    if !is_identifier(name) {
        return true;
    }
    let Ok(program) = Program::compile(&format!("{name}()")) else {
        // Macros such as has() do not compile without arguments.
        return true;
    };
    ROOT.with(
        |root| !matches!(program.execute(root), Err(ExecutionError::UndeclaredReference(n)) if n.as_str() == name),
    )
}

fn describe_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such field `{k}`"),
        ExecutionError::UnsupportedBinaryOperator(op, a, b) => format!(
            "cannot {op} {} and {} (CEL does not mix int and double: use num() or 1.0)",
            a.type_of(),
            b.type_of()
        ),
        other => other.to_string(),
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn to_f64(ftx: &FunctionContext, v: &Value) -> Result<f64, ExecutionError> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::UInt(u) => Ok(*u as f64),
        Value::Float(f) => Ok(*f),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| ftx.error(format!("not a number: {s:?}"))),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(ftx.error(format!("cannot convert {} to a number", other.type_of()))),
    }
}

fn field_of<'v>(map: &'v Value, name: &Value) -> Option<&'v Value> {
    match (map, name) {
        (Value::Map(m), Value::String(n)) => m.map.get(&Key::String(n.clone())),
        _ => None,
    }
}

/// `num(x)`, `num(x, default)`, `num(map, "FIELD", default)`: a number as a
/// double. Empty, null or (three-argument form) missing → `default`;
/// text that is not a number is an error.
fn num(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    let (v, default) = match args.as_slice() {
        [v] => (Some(v), None),
        [v, d] => (Some(v), Some(d)),
        [m, f, d] => (field_of(m, f), Some(d)),
        _ => return Err(ftx.error("expects num(x), num(x, default) or num(map, \"field\", default)")),
    };
    match (v, default) {
        (Some(v), _) if !is_blank(v) => Ok(Value::Float(to_f64(ftx, v)?)),
        (_, Some(d)) => Ok(Value::Float(to_f64(ftx, d)?)),
        (None, None) => Err(ftx.error("missing value")),
        (Some(_), None) => Err(ftx.error("empty value and no default")),
    }
}

/// `get(map, "FIELD", default)`: the field, or `default` when it is
/// missing or null.
fn get(ftx: &FunctionContext, m: Value, f: Value, d: Value) -> Result<Value, ExecutionError> {
    if !matches!(m, Value::Map(_)) {
        return Err(ftx.error(format!("first argument must be a map, got {}", m.type_of())));
    }
    Ok(match field_of(&m, &f) {
        Some(Value::Null) | None => d,
        Some(v) => v.clone(),
    })
}

/// `float(x)`: a number or numeric text as a double.
fn float(ftx: &FunctionContext, v: Value) -> Result<Value, ExecutionError> {
    Ok(Value::Float(to_f64(ftx, &v)?))
}

/// `str(x)`: any scalar as text.
fn str_fn(v: Value) -> Value {
    Value::String(Arc::new(match v {
        Value::String(s) => return Value::String(s),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => format!("{other:?}"),
    }))
}

fn numeric_cmp(ftx: &FunctionContext, a: &Value, b: &Value) -> Result<std::cmp::Ordering, ExecutionError> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => {
            let (x, y) = (to_f64(ftx, a)?, to_f64(ftx, b)?);
            x.partial_cmp(&y).ok_or_else(|| ftx.error("cannot compare NaN"))
        }
    }
}

fn extreme(ftx: &FunctionContext, args: &[Value], want: std::cmp::Ordering) -> Result<Value, ExecutionError> {
    let items: &[Value] = match args {
        [Value::List(l)] => l.as_slice(),
        _ => args,
    };
    let mut best: Option<&Value> = None;
    for item in items {
        best = match best {
            Some(b) if numeric_cmp(ftx, item, b)? != want => Some(b),
            _ => Some(item),
        };
    }
    Ok(best.cloned().unwrap_or(Value::Null))
}

/// `max(a, b, ...)` / `max(list)`; ints and doubles compare by value.
fn max(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    extreme(ftx, &args, std::cmp::Ordering::Greater)
}

/// `min(a, b, ...)` / `min(list)`.
fn min(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    extreme(ftx, &args, std::cmp::Ordering::Less)
}

/// `parse_time(text, format, zone)`: epoch milliseconds of a local time,
/// e.g. `parse_time(value.LAST_UPDATE, "%Y-%m-%d %H:%M:%S", "Asia/Seoul")`.
fn parse_time(
    ftx: &FunctionContext,
    text: Arc<String>,
    format: Arc<String>,
    zone: Arc<String>,
) -> Result<Value, ExecutionError> {
    let tz: chrono_tz::Tz = zone
        .parse()
        .map_err(|_| ftx.error(format!("unknown time zone {zone:?}")))?;
    parse_local_millis(&text, &format, tz)
        .map(Value::Int)
        .map_err(|e| ftx.error(e))
}

/// Epoch milliseconds of `text` read with strftime `format` as wall-clock
/// time in `tz`. Shared with event-time extraction.
pub fn parse_local_millis(text: &str, format: &str, tz: chrono_tz::Tz) -> Result<i64, String> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), format)
        .map_err(|e| format!("cannot parse time {text:?} with {format:?}: {e}"))?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("{text:?} does not exist in {tz}"))
}

/// Convert a parsed JSON document into a CEL value.
pub fn from_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => match n.as_u64() {
                Some(u) => Value::UInt(u),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        serde_json::Value::String(s) => Value::String(Arc::new(s)),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.into_iter().map(from_json).collect())),
        serde_json::Value::Object(o) => {
            let map: HashMap<Key, Value> = o
                .into_iter()
                .map(|(k, v)| (Key::String(Arc::new(k)), from_json(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// Convert a CEL value to JSON. Maps are written with sorted keys so the
/// output is deterministic.
pub fn to_json(v: &Value) -> serde_json::Value {
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

fn key_text(k: &Key) -> String {
    match k {
        Key::String(s) => s.to_string(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}

/// A CEL value as text for keys and group keys (strings unquoted).
pub fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Null => String::new(),
        other => to_json(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Value {
        from_json(serde_json::from_str(json).unwrap())
    }

    fn eval(src: &str, value: &Value) -> Result<Value, EvalError> {
        let key = Value::String(Arc::new("k1".into()));
        let input = Input {
            value,
            key: &key,
            timestamp: 1_000,
            topic: "t",
            partition: 0,
        };
        Expr::compile(src).unwrap().eval(&input)
    }

    #[test]
    fn num_handles_empty_missing_and_garbage() {
        let v = record(r#"{"CAPACITY":"22","OCC":"","BAD":"abc"}"#);
        assert_eq!(eval("num(value.CAPACITY, 0)", &v), Ok(Value::Float(22.0)));
        assert_eq!(eval("num(value.OCC, 0)", &v), Ok(Value::Float(0.0)));
        assert_eq!(eval("num(value, \"MISSING\", 0)", &v), Ok(Value::Float(0.0)));
        assert!(eval("num(value.BAD, 0)", &v).unwrap_err().0.contains("not a number"));
    }

    #[test]
    fn max_mixes_int_and_double() {
        let v = record(r#"{"C":"10","O":"12"}"#);
        assert_eq!(eval("max(num(value.C, 0) - num(value.O, 0), 0)", &v), Ok(Value::Int(0)));
        assert_eq!(
            eval("max(num(value.O, 0) - num(value.C, 0), 0)", &v),
            Ok(Value::Float(2.0))
        );
        assert_eq!(eval("min(3, 1.5, 2)", &v), Ok(Value::Float(1.5)));
    }

    #[test]
    fn fast_paths_match_interpreter() {
        let v = record(r#"{"A":"x"}"#);
        assert_eq!(eval("value.A", &v), Ok(Value::String(Arc::new("x".into()))));
        assert_eq!(eval("key", &v), Ok(Value::String(Arc::new("k1".into()))));
        assert!(eval("value.B", &v).unwrap_err().0.contains("no such field `B`"));
        assert_eq!(eval("timestamp + 1", &v), Ok(Value::Int(1001)));
    }

    #[test]
    fn conditionals_and_strings() {
        let v = record(r#"{"Y":"Y"}"#);
        assert_eq!(
            eval("value.Y == \"Y\" ? \"real\" : \"no\"", &v),
            Ok(Value::String(Arc::new("real".into())))
        );
        assert_eq!(
            eval("get(value, \"Z\", \"d\")", &v),
            Ok(Value::String(Arc::new("d".into())))
        );
    }

    #[test]
    fn parse_time_reads_kst() {
        let v = record(r#"{"T":"2025-03-31 10:16:20"}"#);
        // 2025-03-31 01:16:20 UTC
        assert_eq!(
            eval("parse_time(value.T, \"%Y-%m-%d %H:%M:%S\", \"Asia/Seoul\")", &v),
            Ok(Value::Int(1_743_383_780_000))
        );
    }

    #[test]
    fn compile_rejects_unknown_names() {
        let err = Expr::compile("nmu(value.A)").unwrap_err();
        assert!(
            err.contains("unknown function `nmu`") && err.contains("did you mean `num`"),
            "{err}"
        );
        let err = Expr::compile("valeu.A == 1").unwrap_err();
        assert!(
            err.contains("unknown variable `valeu`") && err.contains("`value`"),
            "{err}"
        );
        assert!(Expr::compile("value.A ==").unwrap_err().contains("syntax error"));
        assert!(Expr::compile("size(value.A) > 1").is_ok());
    }

    #[test]
    fn json_round_trip() {
        let v = record(r#"{"a":1,"b":[true,null],"c":1.5,"d":"x"}"#);
        assert_eq!(to_json(&v).to_string(), r#"{"a":1,"b":[true,null],"c":1.5,"d":"x"}"#);
    }
}
