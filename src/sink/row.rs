//! A mapped row's values and the in-batch deduplication by key.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, NaiveDateTime, Utc};

/// One typed value of a row.
///
/// Equality is Postgres' equality of the column values, and `Hash`
/// agrees with it, because rows are deduplicated by key before an
/// `INSERT … ON CONFLICT DO UPDATE`, which fails (SQLSTATE 21000) if two
/// rows of one statement have keys Postgres finds equal. So `Double(0.0)`
/// equals `Double(-0.0)` (as in a `float8` key) and every NaN equals every
/// NaN (Postgres sorts NaN as one value; mapping rejects non-finite
/// numbers anyway).
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Text(String),
    Int(i64),
    Double(f64),
    Timestamptz(DateTime<Utc>),
    Timestamp(NaiveDateTime),
}

/// The bits of a double with the values Postgres finds equal made one:
/// -0.0 as 0.0, every NaN as the canonical NaN.
fn canonical_bits(d: f64) -> u64 {
    if d == 0.0 {
        0.0f64.to_bits()
    } else if d.is_nan() {
        f64::NAN.to_bits()
    } else {
        d.to_bits()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Double(a), Value::Double(b)) => canonical_bits(*a) == canonical_bits(*b),
            (Value::Timestamptz(a), Value::Timestamptz(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Text(s) => s.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Double(d) => canonical_bits(*d).hash(state),
            Value::Timestamptz(t) => t.hash(state),
            Value::Timestamp(t) => t.hash(state),
        }
    }
}

/// Keep only the last item per key, in the order of those last items. A
/// multi-row `INSERT … ON CONFLICT DO UPDATE` must not touch a row twice
/// (SQLSTATE 21000), and the last update is the one that must win.
pub(crate) fn dedup_last<T, K, F>(items: Vec<T>, key: F) -> Vec<T>
where
    K: Eq + Hash,
    F: Fn(&T) -> K,
{
    let mut last: HashMap<K, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        last.insert(key(item), i);
    }
    if last.len() == items.len() {
        return items;
    }
    let mut keep = vec![false; items.len()];
    for i in last.into_values() {
        keep[i] = true;
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(item, k)| k.then_some(item))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::DefaultHasher;

    fn hash_of(v: &Value) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn dedup_keeps_the_last_update_per_key() {
        let items = vec![("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)];
        let out = dedup_last(items, |(k, _)| *k);
        assert_eq!(out, vec![("c", 1), ("b", 2), ("a", 3)]);
        let distinct = vec![("a", 1), ("b", 1)];
        assert_eq!(dedup_last(distinct.clone(), |(k, _)| *k), distinct);
        assert!(dedup_last(Vec::<(u8, u8)>::new(), |(k, _)| *k).is_empty());
    }

    #[test]
    fn equal_values_hash_equal() {
        let pairs = [
            (Value::Double(0.0), Value::Double(-0.0)),
            (Value::Double(f64::NAN), Value::Double(f64::NAN)),
            (Value::Double(f64::NAN), Value::Double(-f64::NAN)),
            (Value::Double(1.5), Value::Double(1.5)),
            (Value::Text("a".into()), Value::Text("a".into())),
        ];
        for (a, b) in pairs {
            assert_eq!(a, b);
            assert_eq!(a, a.clone(), "reflexive");
            assert_eq!(
                hash_of(&a),
                hash_of(&b),
                "{a:?} and {b:?} are equal but hash differently"
            );
        }
        assert_ne!(Value::Double(1.0), Value::Int(1));
        assert_ne!(Value::Double(0.0), Value::Double(f64::MIN_POSITIVE));
    }

    #[test]
    fn zero_and_negative_zero_keys_are_one_row() {
        // Postgres: '0'::float8 = '-0'::float8, so both rows would hit the
        // same unique key in one INSERT … ON CONFLICT (SQLSTATE 21000).
        let rows = vec![
            (vec![Value::Double(0.0)], 1),
            (vec![Value::Double(-0.0)], 2),
            (vec![Value::Double(f64::NAN)], 3),
            (vec![Value::Double(f64::NAN)], 4),
        ];
        let out = dedup_last(rows, |(k, _)| k.clone());
        let kept: Vec<i32> = out.iter().map(|(_, v)| *v).collect();
        assert_eq!(kept, vec![2, 4], "the last row per key wins");
    }
}
