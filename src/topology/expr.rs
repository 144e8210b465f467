//! Expressions: CEL (Common Expression Language) programs compiled once when
//! the topology loads and evaluated per record.
//!
//! Variables: `value` (the record value), `key`, `timestamp` (event time,
//! epoch ms), `topic`, `partition`. Functions beyond CEL's standard library
//! are the few the feed needs (`num`, `get`, `float`, `str`, `max`, `min`,
//! `parse_time`); they are documented in docs/topology.md. A plain
//! `value.FIELD` or `key` skips the interpreter altogether.

use std::sync::Arc;

use cel::extractors::Arguments;
use cel::objects::Key;
use cel::{Context, ExecutionError, FunctionContext, Program, Value};

use super::functions::{known_names, FUNCTIONS, VARIABLES};
pub(crate) use super::functions::{EvalError, Input};

/// Expressions that are a plain read, answered without evaluating
/// anything (neither the interpreter nor the direct evaluator).
#[derive(Debug)]
enum Shortcut {
    /// `key`
    Key,
    /// `value.NAME`
    Field(Arc<String>),
    /// Anything else goes through the interpreter.
    No,
}

/// A compiled expression.
pub(crate) struct Expr {
    source: String,
    program: Program,
    shortcut: Shortcut,
    /// The direct evaluator, when the expression is in its subset.
    direct: Option<super::direct::Node>,
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
    // Registration only fails on a clash with a standard function; weir's
    // own names are not standard CEL, so a failure is a programming error
    // that the unit tests catch.
    for f in FUNCTIONS.iter().filter(|f| f.own) {
        let func = f.func;
        let _ = ctx.add_function(f.name, move |ftx: &FunctionContext, Arguments(args): Arguments| {
            func.call(&args).map_err(|e| ftx.error(e))
        });
    }
    ctx
}

impl Expr {
    /// Compile `source`. Errors are human-readable and name the problem
    /// (syntax, unknown function, unknown variable).
    pub(crate) fn compile(source: &str) -> Result<Expr, String> {
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
                let hint = crate::support::did_you_mean(var, VARIABLES.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!(" (variables are: {})", VARIABLES.join(", ")));
                return Err(format!("unknown variable `{var}`{hint}"));
            }
        }
        for func in refs.functions() {
            if !is_known_function(func) {
                let hint = crate::support::did_you_mean(func, known_names())
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
        let shortcut = if trimmed == "key" {
            Shortcut::Key
        } else if let Some(field) = trimmed.strip_prefix("value.").filter(|f| is_identifier(f)) {
            Shortcut::Field(Arc::new(field.to_string()))
        } else {
            Shortcut::No
        };
        let direct = super::direct::translate(program.expression());
        Ok(Expr {
            source: source.to_string(),
            program,
            shortcut,
            direct,
            uses,
        })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// `Some("X")` if this is exactly `value.X`.
    pub(crate) fn field_name(&self) -> Option<&str> {
        match &self.shortcut {
            Shortcut::Field(f) => Some(f.as_str()),
            _ => None,
        }
    }

    /// The top-level fields of `value` this expression reads: `None` if it
    /// needs the whole value (uses it as a whole, or is outside the direct
    /// evaluator's subset, whose interpreter is handed the whole record).
    pub(crate) fn value_fields(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        if !self.uses[0] {
            return Some(out);
        }
        match (&self.shortcut, &self.direct) {
            (Shortcut::Field(f), _) => out.push(f.to_string()),
            (_, Some(node)) if node.value_fields(&mut out) => {}
            _ => return None,
        }
        Some(out)
    }

    /// True if this is exactly `key`.
    pub(crate) fn is_record_key(&self) -> bool {
        matches!(self.shortcut, Shortcut::Key)
    }

    pub(crate) fn eval(&self, input: &Input<'_>) -> Result<Value, EvalError> {
        match &self.shortcut {
            Shortcut::Key => return Ok(input.key.clone()),
            Shortcut::Field(name) => {
                if let Value::Map(m) = input.value {
                    return m
                        .map
                        .get(&Key::String(name.clone()))
                        .cloned()
                        .ok_or_else(|| EvalError(format!("{}: no such field `{name}`", self.source)));
                }
            }
            Shortcut::No => {}
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
    pub(crate) fn eval_bool(&self, input: &Input<'_>) -> Result<bool, EvalError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Value {
        crate::processor::codec::parse_json_bytes(json.as_bytes()).unwrap()
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
    fn direct_and_shortcut_paths_match_interpreter() {
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
}
