//! A direct evaluator for the common subset of CEL used in topologies
//! (field access, literals, comparisons, boolean logic, arithmetic,
//! conditionals and weir's own functions), working on borrowed record
//! values. The CEL interpreter converts the whole record into its own value
//! tree for every evaluation, which costs far more than the expression
//! itself; this path reads only the fields an expression touches.
//!
//! An expression is translated from the AST CEL's parser produced; anything
//! outside the subset (macros, lists, maps, other functions) keeps the
//! interpreter. Semantics follow the interpreter — a differential test in
//! `expr` checks the two agree.

use std::sync::Arc;

use cel::common::ast::{Expr as Ast, IdedExpr, LiteralValue};
use cel::objects::Key;
use cel::Value;

use super::functions::{EvalError, Func, Input, FUNCTIONS};

#[derive(Debug)]
pub(super) enum Node {
    Lit(Value),
    Var(Var),
    Field(Box<Node>, Arc<String>),
    Has(Box<Node>, Arc<String>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Var {
    Value,
    Key,
    Timestamp,
    Topic,
    Partition,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Translate an AST, or `None` if it uses something outside the subset.
pub(super) fn translate(e: &IdedExpr) -> Option<Node> {
    Some(match &e.expr {
        Ast::Literal(l) => Node::Lit(match l {
            LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
            LiteralValue::Int(i) => Value::Int(*i.inner()),
            LiteralValue::UInt(u) => Value::UInt(*u.inner()),
            LiteralValue::Double(d) => Value::Float(*d.inner()),
            LiteralValue::String(s) => Value::String(Arc::new(s.inner().to_string())),
            LiteralValue::Null => Value::Null,
            LiteralValue::Bytes(_) => return None,
        }),
        Ast::Ident(name) => Node::Var(match name.as_str() {
            "value" => Var::Value,
            "key" => Var::Key,
            "timestamp" => Var::Timestamp,
            "topic" => Var::Topic,
            "partition" => Var::Partition,
            _ => return None,
        }),
        Ast::Select(s) => {
            let operand = Box::new(translate(&s.operand)?);
            let field = Arc::new(s.field.clone());
            if s.test {
                Node::Has(operand, field)
            } else {
                Node::Field(operand, field)
            }
        }
        Ast::Call(c) => {
            if c.target.is_some() {
                return None;
            }
            let mut args = Vec::with_capacity(c.args.len());
            for a in &c.args {
                args.push(translate(a)?);
            }
            match c.func_name.as_str() {
                "_==_" => bin(BinOp::Eq, args)?,
                "_!=_" => bin(BinOp::Ne, args)?,
                "_<_" => bin(BinOp::Lt, args)?,
                "_<=_" => bin(BinOp::Le, args)?,
                "_>_" => bin(BinOp::Gt, args)?,
                "_>=_" => bin(BinOp::Ge, args)?,
                "_+_" => bin(BinOp::Add, args)?,
                "_-_" => bin(BinOp::Sub, args)?,
                "_*_" => bin(BinOp::Mul, args)?,
                "_/_" => bin(BinOp::Div, args)?,
                "_%_" => bin(BinOp::Rem, args)?,
                "_&&_" | "_||_" => {
                    let or = c.func_name == "_||_";
                    let Node::Bin(_, a, b) = bin(BinOp::Eq, args)? else {
                        return None;
                    };
                    if or {
                        Node::Or(a, b)
                    } else {
                        Node::And(a, b)
                    }
                }
                "!_" | "-_" if args.len() == 1 => {
                    let a = Box::new(args.into_iter().next()?);
                    if c.func_name == "!_" {
                        Node::Not(a)
                    } else {
                        Node::Neg(a)
                    }
                }
                "_?_:_" if args.len() == 3 => {
                    let mut it = args.into_iter();
                    Node::Cond(Box::new(it.next()?), Box::new(it.next()?), Box::new(it.next()?))
                }
                name => {
                    // weir's own functions take any arity (they check it);
                    // CEL's standard ones only in their one-argument form.
                    let f = FUNCTIONS.iter().find(|f| f.name == name)?;
                    if !f.own && args.len() != 1 {
                        return None;
                    }
                    Node::Call(f.func, args)
                }
            }
        }
        _ => return None,
    })
}

fn bin(op: BinOp, args: Vec<Node>) -> Option<Node> {
    let mut it = args.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(a), Some(b), None) => Some(Node::Bin(op, Box::new(a), Box::new(b))),
        _ => None,
    }
}

fn err(msg: impl Into<String>) -> EvalError {
    EvalError(msg.into())
}

fn as_bool(v: &Value, what: &str) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(err(format!("{what}: expected a bool, got {}", other.type_of()))),
    }
}

impl Node {
    /// Add to `out` the top-level fields of `value` this expression reads;
    /// false if it reads `value` as a whole (then all of it is needed).
    /// `num(value, "F", …)` and `get(value, "F", …)` with a literal name read
    /// field `F` only.
    pub(super) fn value_fields(&self, out: &mut Vec<String>) -> bool {
        match self {
            Node::Lit(_) => true,
            Node::Var(Var::Value) => false,
            Node::Var(_) => true,
            Node::Field(operand, name) | Node::Has(operand, name) => {
                if let Node::Var(Var::Value) = **operand {
                    out.push(name.to_string());
                    true
                } else {
                    operand.value_fields(out)
                }
            }
            Node::Not(a) | Node::Neg(a) => a.value_fields(out),
            Node::And(a, b) | Node::Or(a, b) | Node::Bin(_, a, b) => a.value_fields(out) && b.value_fields(out),
            Node::Cond(a, b, c) => a.value_fields(out) && b.value_fields(out) && c.value_fields(out),
            Node::Call(f, args) => match (f, args.as_slice()) {
                (Func::Num | Func::Get, [Node::Var(Var::Value), Node::Lit(Value::String(name)), rest @ ..]) => {
                    out.push(name.to_string());
                    rest.iter().all(|a| a.value_fields(out))
                }
                _ => args.iter().all(|a| a.value_fields(out)),
            },
        }
    }

    pub(super) fn eval(&self, input: &Input<'_>) -> Result<Value, EvalError> {
        match self {
            Node::Lit(v) => Ok(v.clone()),
            Node::Var(v) => Ok(match v {
                Var::Value => input.value.clone(),
                Var::Key => input.key.clone(),
                Var::Timestamp => Value::Int(input.timestamp),
                Var::Topic => Value::String(Arc::new(input.topic.to_string())),
                Var::Partition => Value::Int(i64::from(input.partition)),
            }),
            Node::Field(operand, name) => {
                // `value.X` reads the field without cloning the record.
                if let Node::Var(Var::Value) = **operand {
                    return field(input.value, name);
                }
                field(&operand.eval(input)?, name)
            }
            Node::Has(operand, name) => match operand.eval(input)? {
                Value::Map(m) => Ok(Value::Bool(m.map.contains_key(&Key::String(name.clone())))),
                other => Err(err(format!("has(): {} has no fields", other.type_of()))),
            },
            Node::Not(a) => Ok(Value::Bool(!as_bool(&a.eval(input)?, "!")?)),
            Node::Neg(a) => match a.eval(input)? {
                Value::Int(i) => i.checked_neg().map(Value::Int).ok_or_else(|| err("integer overflow")),
                Value::Float(f) => Ok(Value::Float(-f)),
                other => Err(err(format!("cannot negate {}", other.type_of()))),
            },
            // CEL's && and || are commutative over errors: false && error is
            // false whichever side the error is on.
            Node::And(a, b) | Node::Or(a, b) => {
                let short = matches!(self, Node::Or(..));
                let l = a.eval(input).and_then(|v| as_bool(&v, "&&/||"));
                if l == Ok(short) {
                    return Ok(Value::Bool(short));
                }
                let r = b.eval(input).and_then(|v| as_bool(&v, "&&/||"));
                if r == Ok(short) {
                    return Ok(Value::Bool(short));
                }
                l?;
                r?;
                Ok(Value::Bool(!short))
            }
            Node::Cond(c, t, f) => {
                if as_bool(&c.eval(input)?, "?:")? {
                    t.eval(input)
                } else {
                    f.eval(input)
                }
            }
            Node::Bin(op, a, b) => binary(*op, a.eval(input)?, b.eval(input)?),
            Node::Call(func, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(input)?);
                }
                func.call(&vals).map_err(err)
            }
        }
    }
}

fn field(v: &Value, name: &Arc<String>) -> Result<Value, EvalError> {
    match v {
        Value::Map(m) => m
            .map
            .get(&Key::String(name.clone()))
            .cloned()
            .ok_or_else(|| err(format!("no such field `{name}`"))),
        other => Err(err(format!("{} has no field `{name}`", other.type_of()))),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, EvalError> {
    use std::cmp::Ordering::*;
    let cmp = |a: &Value, b: &Value| {
        a.partial_cmp(b)
            .ok_or_else(|| err(format!("cannot compare {} and {}", a.type_of(), b.type_of())))
    };
    let mismatch = |name: &str, a: &Value, b: &Value| {
        err(format!(
            "cannot {name} {} and {} (CEL does not mix int and double: use num() or 1.0)",
            a.type_of(),
            b.type_of()
        ))
    };
    Ok(match op {
        BinOp::Eq => Value::Bool(a == b),
        BinOp::Ne => Value::Bool(a != b),
        BinOp::Lt => Value::Bool(cmp(&a, &b)? == Less),
        BinOp::Le => Value::Bool(cmp(&a, &b)? != Greater),
        BinOp::Gt => Value::Bool(cmp(&a, &b)? == Greater),
        BinOp::Ge => Value::Bool(cmp(&a, &b)? != Less),
        BinOp::Add => match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_add(*y).ok_or_else(|| err("integer overflow"))?),
            (Value::Float(x), Value::Float(y)) => Value::Float(x + y),
            (Value::String(x), Value::String(y)) => Value::String(Arc::new(format!("{x}{y}"))),
            _ => return Err(mismatch("add", &a, &b)),
        },
        BinOp::Sub => match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_sub(*y).ok_or_else(|| err("integer overflow"))?),
            (Value::Float(x), Value::Float(y)) => Value::Float(x - y),
            _ => return Err(mismatch("sub", &a, &b)),
        },
        BinOp::Mul => match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_mul(*y).ok_or_else(|| err("integer overflow"))?),
            (Value::Float(x), Value::Float(y)) => Value::Float(x * y),
            _ => return Err(mismatch("mul", &a, &b)),
        },
        BinOp::Div => match (&a, &b) {
            (Value::Int(_), Value::Int(0)) => return Err(err("division by zero")),
            (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_div(*y).ok_or_else(|| err("integer overflow"))?),
            (Value::Float(x), Value::Float(y)) => Value::Float(x / y),
            _ => return Err(mismatch("div", &a, &b)),
        },
        BinOp::Rem => match (&a, &b) {
            (Value::Int(_), Value::Int(0)) => return Err(err("modulus by zero")),
            (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_rem(*y).ok_or_else(|| err("integer overflow"))?),
            _ => return Err(mismatch("rem", &a, &b)),
        },
    })
}
