//! The record codec: JSON bytes to CEL values (with object keys shared
//! between consecutive records) and CEL values back to JSON, for the
//! processors. The plain CEL→JSON conversion itself lives with the CEL
//! functions (`str()` needs it).

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value;

use crate::topology::functions::key_text;
pub(crate) use crate::topology::functions::to_json;

/// Parse JSON bytes straight into a CEL value (no intermediate
/// `serde_json::Value`); UTF-8 is checked by the parser, in one pass.
pub(crate) fn parse_json_bytes(raw: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<CelJson>(raw).map(|c| c.0)
}

/// Parse JSON bytes keeping, of a top-level object, only the fields named
/// in `fields` (sorted); the others are checked as JSON and skipped. Other
/// top-level values are parsed whole. The bytes must be valid UTF-8 (the
/// caller checks: skipped strings are not).
pub(crate) fn parse_json_projected(raw: &[u8], fields: &[String]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let seed = CelSeed {
        depth: 0,
        project: Some(fields),
    };
    let v = serde::de::DeserializeSeed::deserialize(seed, &mut de)?;
    de.end()?;
    Ok(v)
}

struct CelJson(Value);

impl<'de> serde::Deserialize<'de> for CelJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::DeserializeSeed::deserialize(CelSeed::at(0), d).map(CelJson)
    }
}

/// A JSON value at nesting depth `depth` (for key sharing, see
/// [`intern_key`]); with `project`, an object keeps only those fields
/// (sorted; see [`parse_json_projected`]).
#[derive(Clone, Copy)]
struct CelSeed<'f> {
    depth: usize,
    project: Option<&'f [String]>,
}

impl CelSeed<'_> {
    /// Everything, at `depth`.
    fn at(depth: usize) -> Self {
        CelSeed { depth, project: None }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for CelSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(CelVisitor(self))
    }
}

struct CelVisitor<'f>(CelSeed<'f>);

impl<'de> serde::de::Visitor<'de> for CelVisitor<'_> {
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
        while let Some(v) = seq.next_element_seed(CelSeed::at(self.0.depth + 1))? {
            items.push(v);
        }
        Ok(Value::List(Arc::new(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let CelSeed { depth, project } = self.0;
        let capacity = project.map_or(access.size_hint().unwrap_or(16), <[String]>::len);
        let mut map = HashMap::with_capacity(capacity);
        let mut index = 0;
        while let Some(k) = access.next_key_seed(InternedKey { depth, index, project })? {
            match k {
                Some(k) => {
                    let v = access.next_value_seed(CelSeed::at(depth + 1))?;
                    map.insert(Key::String(k), v);
                }
                None => {
                    access.next_value::<serde::de::IgnoredAny>()?;
                }
            }
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

/// An object key, shared (see [`intern_key`]); `None` if a projection
/// leaves its field out.
struct InternedKey<'f> {
    depth: usize,
    index: usize,
    project: Option<&'f [String]>,
}

impl<'de> serde::de::DeserializeSeed<'de> for InternedKey<'_> {
    type Value = Option<Arc<String>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for InternedKey<'_> {
    type Value = Option<Arc<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        if let Some(fields) = self.project {
            if fields.binary_search_by(|f| f.as_str().cmp(v)).is_err() {
                return Ok(None);
            }
        }
        Ok(Some(intern_key(self.depth, self.index, v)))
    }
}

/// Serialize a CEL value as JSON bytes, map keys sorted (deterministic
/// output), without building a `serde_json::Value` first.
pub(crate) fn json_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, and every CEL value has a JSON form.
    let _ = serde_json::to_writer(&mut out, &JsonOut(v));
    out
}

/// A projected record as JSON without decoding its source bytes again: the
/// source's JSON object `raw` with the fields of `over` (the projection:
/// the fields read, and those maps set) written after its own. A field in
/// both appears twice; every JSON reader of weir (and serde_json's maps)
/// keeps the last, `over`'s. For a table's stored value (`queryable`),
/// where decoding each record whole (`Record::full_value`) cost more than
/// the rest of the job.
pub(crate) fn merged_json_bytes(raw: &[u8], over: &Value) -> Option<Vec<u8>> {
    let over = json_bytes(over);
    let end = raw.iter().rposition(|&b| b == b'}')?;
    let body = &raw[..end];
    let over_fields = over.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let raw_empty = body.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut out = Vec::with_capacity(raw.len() + over.len() + 1);
    out.extend_from_slice(body);
    if !over_fields.is_empty() {
        if !raw_empty {
            out.push(b',');
        }
        out.extend_from_slice(over_fields);
    }
    out.push(b'}');
    Some(out)
}

/// A CEL value as a JSON document, map keys sorted as [`json_bytes`]
/// writes them.
pub(crate) fn json_value(v: &Value) -> serde_json::Value {
    serde_json::to_value(JsonOut(v)).unwrap_or(serde_json::Value::Null)
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
pub(crate) fn from_json(v: serde_json::Value) -> Value {
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

/// A CEL value as text for keys and group keys (strings unquoted).
pub(crate) fn to_text(v: &Value) -> String {
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

    #[test]
    fn a_merged_record_reads_as_its_fields_with_the_projection_last() {
        let raw = br#"{"A":"1","B":"x","C":{"d":[1,2]}} "#;
        let over = record(r#"{"A":"1","N":7}"#);
        let merged = merged_json_bytes(raw, &over).unwrap();
        let read: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(read, serde_json::json!({"A":"1","B":"x","C":{"d":[1,2]},"N":7}));
        assert_eq!(to_json(&parse_json_bytes(&merged).unwrap()), read);
        // A set field replaces the source's.
        let over = record(r#"{"B":"y"}"#);
        let read: serde_json::Value = serde_json::from_slice(&merged_json_bytes(raw, &over).unwrap()).unwrap();
        assert_eq!(read["B"], "y");
        // Empty on either side.
        assert_eq!(
            merged_json_bytes(b"{ }", &record(r#"{"N":1}"#)).unwrap(),
            br#"{ "N":1}"#.to_vec()
        );
        assert_eq!(
            merged_json_bytes(br#"{"A":1}"#, &record("{}")).unwrap(),
            br#"{"A":1}"#.to_vec()
        );
        assert_eq!(merged_json_bytes(b"[1]", &record("{}")), None);
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
