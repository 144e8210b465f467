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
    /// The direct evaluator, when the expression is in its subset.
    direct: Option<super::fast::Node>,
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
        let direct = super::fast::translate(program.expression());
        Ok(Expr {
            source: source.to_string(),
            program,
            fast,
            direct,
            uses,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// `Some("X")` if this is exactly `value.X`.
    pub fn field_name(&self) -> Option<&str> {
        match &self.fast {
            Fast::Field(f) => Some(f.as_str()),
            _ => None,
        }
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
        if let Some(node) = &self.direct {
            return node
                .eval(input)
                .map_err(|e| EvalError(format!("{}: {}", self.source, e.0)));
        }
        self.interpret(input)
    }

    /// Evaluate with the CEL interpreter.
    fn interpret(&self, input: &Input<'_>) -> Result<Value, EvalError> {
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
    // Try it as a global function and as a method (`"".startsWith()`).
    [format!("{name}()"), format!("''.{name}()"), format!("[].{name}()")]
        .iter()
        .any(|src| {
            let Ok(program) = Program::compile(src) else {
                // Macros such as has() do not compile without arguments.
                return true;
            };
            ROOT.with(|root| {
            !matches!(program.execute(root), Err(ExecutionError::UndeclaredReference(n)) if n.as_str() == name)
        })
        })
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

/// The CEL-registered wrappers around [`funcs`].
fn num(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    funcs::num(&args).map_err(|e| ftx.error(e))
}

fn get(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    funcs::get(&args).map_err(|e| ftx.error(e))
}

fn float(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    funcs::float(&args).map_err(|e| ftx.error(e))
}

fn str_fn(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    funcs::str_of(&args).map_err(|e| ftx.error(e))
}

fn max(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    funcs::extreme(&args, std::cmp::Ordering::Greater).map_err(|e| ftx.error(e))
}

fn min(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    funcs::extreme(&args, std::cmp::Ordering::Less).map_err(|e| ftx.error(e))
}

fn parse_time(ftx: &FunctionContext, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    funcs::parse_time(&args).map_err(|e| ftx.error(e))
}

/// weir's functions as plain code, shared by the interpreter (through the
/// wrappers above) and the direct evaluator in `fast`.
pub(crate) mod funcs {
    use std::sync::Arc;

    use cel::objects::Key;
    use cel::Value;

    type R = Result<Value, String>;

    fn is_blank(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    pub fn to_f64(v: &Value) -> Result<f64, String> {
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
    pub fn num(args: &[Value]) -> R {
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
    pub fn get(args: &[Value]) -> R {
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
    pub fn float(args: &[Value]) -> R {
        let [v] = args else {
            return Err("expects float(x)".into());
        };
        Ok(Value::Float(to_f64(v)?))
    }

    /// `str(x)`: any scalar as text.
    pub fn str_of(args: &[Value]) -> R {
        let [v] = args else { return Err("expects str(x)".into()) };
        Ok(match v {
            Value::String(s) => Value::String(s.clone()),
            other => Value::String(Arc::new(match other {
                Value::Int(i) => i.to_string(),
                Value::UInt(u) => u.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                other => super::to_json(other).to_string(),
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
    pub fn extreme(args: &[Value], want: std::cmp::Ordering) -> R {
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
    pub fn int(args: &[Value]) -> R {
        let [v] = args else { return Err("expects int(x)".into()) };
        match v {
            Value::Int(i) => Ok(Value::Int(*i)),
            Value::UInt(u) => i64::try_from(*u).map(Value::Int).map_err(|_| "integer overflow".into()),
            Value::Float(f) if f.is_finite() && *f > i64::MIN as f64 && *f < i64::MAX as f64 => {
                Ok(Value::Int(*f as i64))
            }
            Value::Float(_) => Err("integer overflow".into()),
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|e| format!("cannot convert {s:?} to int: {e}")),
            other => Err(format!("cannot convert {} to int", other.type_of())),
        }
    }

    /// CEL's `double(x)` for the values records hold.
    pub fn double(args: &[Value]) -> R {
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
    pub fn parse_time(args: &[Value]) -> R {
        let [Value::String(text), Value::String(format), Value::String(zone)] = args else {
            return Err("expects parse_time(text, format, zone) with three strings".into());
        };
        let tz = crate::support::tz::parse(zone).map_err(|e| e.to_string())?;
        super::parse_local_millis(text, format, tz).map(Value::Int)
    }
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

/// Parse JSON text straight into a CEL value (no intermediate
/// `serde_json::Value`).
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<CelJson>(text).map(|c| c.0)
}

/// [`parse_json`] on bytes: UTF-8 is checked by the parser, in one pass.
pub fn parse_json_bytes(raw: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<CelJson>(raw).map(|c| c.0)
}

struct CelJson(Value);

impl<'de> serde::Deserialize<'de> for CelJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::DeserializeSeed::deserialize(CelSeed(0), d).map(CelJson)
    }
}

/// A JSON value at nesting depth `.0` (for key sharing, see [`intern_key`]).
#[derive(Clone, Copy)]
struct CelSeed(usize);

impl<'de> serde::de::DeserializeSeed<'de> for CelSeed {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(CelVisitor(self.0))
    }
}

struct CelVisitor(usize);

impl<'de> serde::de::Visitor<'de> for CelVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map(Value::Int).unwrap_or(Value::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(Arc::new(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(Arc::new(v)))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(CelSeed(self.0 + 1))? {
            items.push(v);
        }
        Ok(Value::List(Arc::new(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = HashMap::with_capacity(access.size_hint().unwrap_or(16));
        let mut index = 0;
        while let Some(k) = access.next_key_seed(InternedKey { depth: self.0, index })? {
            let v = access.next_value_seed(CelSeed(self.0 + 1))?;
            map.insert(Key::String(k), v);
            index += 1;
        }
        Ok(Value::Map(Map { map: Arc::new(map) }))
    }
}

/// Object keys of consecutive records, by nesting depth and position. A
/// feed's records mostly repeat the same fields in the same order, so the key
/// at a position is usually the one the previous record had there: it is
/// then shared (an `Arc` clone) instead of allocated.
const INTERNED_DEPTHS: usize = 4;
const INTERNED_KEYS: usize = 64;

thread_local! {
    static KEYS: std::cell::RefCell<[Vec<Arc<String>>; INTERNED_DEPTHS]> =
        const { std::cell::RefCell::new([const { Vec::new() }; INTERNED_DEPTHS]) };
}

fn intern_key(depth: usize, index: usize, key: &str) -> Arc<String> {
    if depth >= INTERNED_DEPTHS || index >= INTERNED_KEYS {
        return Arc::new(key.to_string());
    }
    KEYS.with(|keys| {
        let keys = &mut keys.borrow_mut()[depth];
        if let Some(k) = keys.get(index) {
            if k.as_str() == key {
                return k.clone();
            }
        }
        let k = Arc::new(key.to_string());
        if index < keys.len() {
            keys[index] = k.clone();
        } else if index == keys.len() {
            keys.push(k.clone());
        }
        k
    })
}

struct InternedKey {
    depth: usize,
    index: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for InternedKey {
    type Value = Arc<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Arc<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for InternedKey {
    type Value = Arc<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Arc<String>, E> {
        Ok(intern_key(self.depth, self.index, v))
    }
}

/// Serialize a CEL value as JSON bytes, map keys sorted (deterministic
/// output), without building a `serde_json::Value` first.
pub fn json_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, and every CEL value has a JSON form.
    let _ = serde_json::to_writer(&mut out, &JsonOut(v));
    out
}

struct JsonOut<'a>(&'a Value);

impl serde::Serialize for JsonOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::String(v) => s.serialize_str(v),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for item in l.iter() {
                    seq.serialize_element(&JsonOut(item))?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut entries: Vec<(std::borrow::Cow<'_, str>, &Value)> = m
                    .map
                    .iter()
                    .map(|(k, v)| match k {
                        Key::String(s) => (std::borrow::Cow::Borrowed(s.as_str()), v),
                        other => (std::borrow::Cow::Owned(key_text(other)), v),
                    })
                    .collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k.as_ref(), &JsonOut(v))?;
                }
                map.end()
            }
            other => to_json(other).serialize(s),
        }
    }
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

    /// The direct evaluator must agree with the CEL interpreter.
    #[test]
    fn direct_evaluator_matches_the_interpreter() {
        let records = [
            r#"{"CAPACITY":"22","OCC":"2","Y":"Y","N":3,"F":1.5,"E":"","S":"abc","B":true,"Z":null}"#,
            r#"{"CAPACITY":"","OCC":"30","Y":"N","N":-7,"F":-0.5,"E":" ","S":"","B":false,"Z":1}"#,
            r#"{"Y":"Y"}"#,
        ];
        let exprs = [
            "value.Y == \"Y\"",
            "value.Y != \"Y\" || value.N > 0",
            "value.MISSING == 1 && false",
            "false && value.MISSING == 1",
            "value.MISSING == 1 || true",
            "!value.B",
            "-value.N",
            "value.N + 1",
            "value.N - 10 * 2",
            "value.N / 2",
            "value.N % 4",
            "value.F * 2.0",
            "value.F + 1",
            "value.S + \"x\"",
            "value.N < value.F",
            "value.N >= 3",
            "value.S <= \"abd\"",
            "has(value.Z)",
            "has(value.MISSING)",
            "value.B ? 1 : 2",
            "value.N ? 1 : 2",
            "num(value.CAPACITY, 0)",
            "num(value, \"OCC\", 0)",
            "num(value.S, 0)",
            "int(max(num(value, \"CAPACITY\", 0) - num(value, \"OCC\", 0), 0))",
            "min(value.N, value.F, 2)",
            "get(value, \"Z\", \"d\")",
            "float(value.OCC)",
            "str(value.N)",
            "int(value.F)",
            "int(value.OCC)",
            "double(value.N)",
            "double(value.OCC)",
            "timestamp - 500",
            "key + \"-\" + value.Y",
            "partition == 0 && topic == \"t\"",
            "value.N == 3.0",
            "value.Z == null",
        ];
        let key = Value::String(Arc::new("k1".into()));
        for r in records {
            let value = record(r);
            let input = Input {
                value: &value,
                key: &key,
                timestamp: 1_000,
                topic: "t",
                partition: 0,
            };
            for src in exprs {
                let e = Expr::compile(src).unwrap();
                assert!(e.direct.is_some(), "{src} should take the direct path");
                let (direct, interp) = (e.eval(&input), e.interpret(&input));
                match (&direct, &interp) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{src} on {r}"),
                    (Err(_), Err(_)) => {}
                    _ => panic!("{src} on {r}: direct {direct:?} vs interpreter {interp:?}"),
                }
            }
        }
        // Outside the subset: the interpreter runs.
        assert!(Expr::compile("value.S.startsWith(\"a\")").unwrap().direct.is_none());
    }

    #[test]
    fn json_round_trip() {
        let v = record(r#"{"a":1,"b":[true,null],"c":1.5,"d":"x"}"#);
        assert_eq!(to_json(&v).to_string(), r#"{"a":1,"b":[true,null],"c":1.5,"d":"x"}"#);
    }

    fn keys(v: &Value) -> Vec<Arc<String>> {
        let Value::Map(m) = v else { panic!("not a map") };
        let mut k: Vec<Arc<String>> = m
            .map
            .keys()
            .map(|k| match k {
                Key::String(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        k.sort();
        k
    }

    #[test]
    fn parsed_records_share_repeated_keys_and_keep_every_value() {
        let a = parse_json_bytes(br#"{"CODE":"1","N":1,"NEST":{"CODE":"x","Z":2}}"#).unwrap();
        let b = parse_json_bytes(br#"{"CODE":"2","N":2,"NEST":{"CODE":"y","Z":3}}"#).unwrap();
        for (ka, kb) in keys(&a).iter().zip(keys(&b).iter()) {
            assert!(Arc::ptr_eq(ka, kb), "{ka} is allocated again");
        }
        let nested = |v: &Value| match v {
            Value::Map(m) => m.map[&Key::String(Arc::new("NEST".into()))].clone(),
            _ => unreachable!(),
        };
        for (ka, kb) in keys(&nested(&a)).iter().zip(keys(&nested(&b)).iter()) {
            assert!(Arc::ptr_eq(ka, kb), "nested {ka} is allocated again");
        }
        // Another order, fewer and other fields: values land on the right keys.
        let c = parse_json_bytes(br#"{"N":3,"OTHER":"o","CODE":"3"}"#).unwrap();
        assert_eq!(to_json(&c).to_string(), r#"{"CODE":"3","N":3,"OTHER":"o"}"#);
        assert_eq!(
            to_json(&b).to_string(),
            r#"{"CODE":"2","N":2,"NEST":{"CODE":"y","Z":3}}"#
        );
        assert!(
            parse_json_bytes(b"{\"a\":\"\xff\"}").is_err(),
            "invalid UTF-8 inside a string"
        );
    }
}
