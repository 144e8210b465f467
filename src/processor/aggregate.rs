//! Aggregate values and running aggregates, kept in the stores of windows
//! (`Acc`, one per aggregate) and tables (`Scalar`, the `newest_by` order).

use std::sync::Arc;

use cel::Value;
use serde::{Deserialize, Serialize};

use super::codec;
use crate::topology::AggKind;

/// A value as aggregates keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Scalar {
    pub(crate) fn from_value(v: &Value) -> Scalar {
        match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Int(i) => Scalar::Int(*i),
            Value::UInt(u) => i64::try_from(*u).map(Scalar::Int).unwrap_or(Scalar::Float(*u as f64)),
            Value::Float(f) => Scalar::Float(*f),
            Value::String(s) => Scalar::Str(s.to_string()),
            other => Scalar::Str(codec::to_json(other).to_string()),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::Int(*i),
            Scalar::Float(f) => Value::Float(*f),
            Scalar::Str(s) => Value::String(Arc::new(s.clone())),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Order for min/max/newest: numbers by value, strings by text.
    pub(crate) fn compare(&self, other: &Scalar) -> Result<std::cmp::Ordering, String> {
        match (self, other) {
            (Scalar::Str(a), Scalar::Str(b)) => Ok(a.cmp(b)),
            (Scalar::Bool(a), Scalar::Bool(b)) => Ok(a.cmp(b)),
            _ => match (self.number(), other.number()) {
                (Some(a), Some(b)) => a.partial_cmp(&b).ok_or_else(|| "cannot compare NaN".to_string()),
                _ => Err(format!("cannot compare {self:?} with {other:?}")),
            },
        }
    }
}

/// Running state of one aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Acc {
    Count(u64),
    Sum {
        int: i64,
        float: f64,
        all_int: bool,
    },
    Avg {
        sum: f64,
        n: u64,
    },
    Min(Option<Scalar>),
    Max(Option<Scalar>),
    First(Option<Scalar>),
    Last(Option<Scalar>),
    /// `sum` of a table_aggregate, where values also leave: the integers
    /// and the other numbers apart, with how many of those are in, so the
    /// sum is an integer again once the last fraction left (and carries no
    /// floating-point rest of it). A variant of its own: window stores
    /// keep `Sum` as it was.
    TableSum {
        int: i128,
        float: f64,
        non_int: u64,
    },
}

impl Acc {
    pub(crate) fn new(kind: AggKind) -> Acc {
        match kind {
            AggKind::Count => Acc::Count(0),
            AggKind::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                all_int: true,
            },
            AggKind::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggKind::Min => Acc::Min(None),
            AggKind::Max => Acc::Max(None),
            AggKind::First => Acc::First(None),
            AggKind::Last => Acc::Last(None),
        }
    }

    /// Add one input. `None` is `count()` (no argument). Nulls are skipped
    /// by every aggregate but `count()`, as in SQL.
    pub(crate) fn add(&mut self, v: Option<&Scalar>) -> Result<(), String> {
        if let (Acc::Count(n), None) = (&mut *self, v) {
            *n += 1;
            return Ok(());
        }
        let Some(v) = v else { return Ok(()) };
        if *v == Scalar::Null {
            return Ok(());
        }
        let number = || v.number().ok_or_else(|| format!("expected a number, got {v:?}"));
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum { int, float, all_int } => match v {
                Scalar::Int(i) if *all_int => match int.checked_add(*i) {
                    Some(s) => *int = s,
                    None => {
                        *all_int = false;
                        *float = *int as f64 + *i as f64;
                    }
                },
                _ => {
                    if *all_int {
                        *float = *int as f64;
                        *all_int = false;
                    }
                    *float += number()?;
                }
            },
            Acc::Avg { sum, n } => {
                *sum += number()?;
                *n += 1;
            }
            Acc::TableSum { int, float, non_int } => match v {
                Scalar::Int(i) => *int += i128::from(*i),
                _ => {
                    *float += number()?;
                    *non_int += 1;
                }
            },
            Acc::Min(cur) => replace_if(cur, v, std::cmp::Ordering::Less)?,
            Acc::Max(cur) => replace_if(cur, v, std::cmp::Ordering::Greater)?,
            Acc::First(cur) => {
                if cur.is_none() {
                    *cur = Some(v.clone());
                }
            }
            Acc::Last(cur) => *cur = Some(v.clone()),
        }
        Ok(())
    }

    /// The running state of a table_aggregate's aggregate of `kind`.
    pub(crate) fn for_table(kind: AggKind) -> Acc {
        match kind {
            AggKind::Sum => Acc::TableSum {
                int: 0,
                float: 0.0,
                non_int: 0,
            },
            other => Acc::new(other),
        }
    }

    /// Take one input back out (a table row's old value): the inverse of
    /// [`Acc::add`] for count, avg and `TableSum`, the aggregates a
    /// table_aggregate keeps. Others are left as they are.
    pub(crate) fn remove(&mut self, v: Option<&Scalar>) {
        if let (Acc::Count(n), None) = (&mut *self, v) {
            *n = n.saturating_sub(1);
            return;
        }
        let Some(v) = v else { return };
        if *v == Scalar::Null {
            return;
        }
        // Only numbers were added to sum and avg (the table_aggregate
        // checks before its repartition).
        let x = v.number().unwrap_or(0.0);
        match self {
            Acc::Count(n) => *n = n.saturating_sub(1),
            // Only windows keep `Sum`, and nothing leaves a window.
            Acc::Sum { .. } => {}
            Acc::Avg { sum, n } => {
                *n = n.saturating_sub(1);
                // No drift left over once nothing is averaged.
                *sum = if *n == 0 { 0.0 } else { *sum - x };
            }
            Acc::TableSum { int, float, non_int } => match v {
                Scalar::Int(i) => *int -= i128::from(*i),
                _ => {
                    *non_int = non_int.saturating_sub(1);
                    *float = if *non_int == 0 { 0.0 } else { *float - x };
                }
            },
            Acc::Min(_) | Acc::Max(_) | Acc::First(_) | Acc::Last(_) => {}
        }
    }

    pub(crate) fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
            Acc::Sum { int, float, all_int } => {
                if *all_int {
                    Value::Int(*int)
                } else {
                    Value::Float(*float)
                }
            }
            Acc::Avg { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float(sum / *n as f64)
                }
            }
            Acc::TableSum { int, float, non_int } => match i64::try_from(*int) {
                Ok(i) if *non_int == 0 => Value::Int(i),
                _ => Value::Float(*int as f64 + *float),
            },
            Acc::Min(v) | Acc::Max(v) | Acc::First(v) | Acc::Last(v) => {
                v.as_ref().map(Scalar::to_value).unwrap_or(Value::Null)
            }
        }
    }
}

fn replace_if(cur: &mut Option<Scalar>, v: &Scalar, want: std::cmp::Ordering) -> Result<(), String> {
    let replace = match cur {
        None => true,
        Some(c) => v.compare(c)? == want,
    };
    if replace {
        *cur = Some(v.clone());
    }
    Ok(())
}
