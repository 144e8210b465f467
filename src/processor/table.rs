//! Table: the latest value per key. A record replaces the stored one when
//! its `newest_by` value (default: its timestamp) is not older; ties go to
//! the later record. Accepted records are forwarded; older ones are dropped
//! and counted as stale.
//!
//! With `emit: on_commit` an accepted record is held back, replacing the
//! one held for its key, and goes downstream at the next commit
//! ([`super::Task::emit_cached`]): Kafka Streams' record cache. A key
//! updated a thousand times between commits costs one output record, and
//! the value downstream is the same (the newest), only later. At most
//! [`CACHE_MAX_KEYS`] keys are held per table and task; reaching it sends
//! them all on at once (Kafka Streams evicts from its cache when full).
//!
//! The store keeps, per key, what the comparison needs (the order value
//! and timestamp), and the value only when something reads it back
//! (`keep_values`: a table_aggregate, which must subtract a row's old value
//! when it changes). Otherwise the values go downstream, usually to a
//! topic compacted by the same key, and storing them again would double the
//! state and the changelog for nothing.
//!
//! With `ttl`, a key whose last accepted record is `ttl` or more behind
//! stream time is forgotten: deleted from the store (a tombstone in its
//! changelog) and sent on as a tombstone (its key, no value) stamped with
//! the moment it expired, `last update + ttl`. Stream time, not the wall
//! clock, so a replay forgets the same keys at the same records. The keys
//! by last update are held in memory ([`TtlIndex`]), read from the store
//! when first needed (after a restore, too), so a table with `ttl` costs
//! memory in proportion to its keys.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::Value;
use serde::{Deserialize, Serialize};

use super::aggregate::Scalar;
use super::{Ctx, ProcessError, Record};
use crate::state::{decode, encode, key_after, Store, StoreError};
use crate::topology::{NodeId, TableEmitSpec, TableNode};

/// A table's keys by last update: (record timestamp, key).
pub(crate) type TtlIndex = BTreeSet<(i64, Vec<u8>)>;

/// Entries read at a time when loading a [`TtlIndex`] from the store.
const LOAD_CHUNK: usize = 1024;

/// Keys held back per table and task (`emit: on_commit`) before they are
/// sent on without waiting for the commit.
pub(crate) const CACHE_MAX_KEYS: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    order: Scalar,
    timestamp: i64,
    /// The value as JSON (the fields the topology reads), when the table
    /// keeps values (`keep_values`).
    value: Option<Vec<u8>>,
    /// The whole record as JSON, when the table is `queryable` (see
    /// [`whole_value`]). A `String`, not bytes: bincode writes both as a
    /// length and the bytes, but serde moves a `Vec<u8>` byte by byte
    /// (the record's ~700 bytes per write and per read cost a quarter of
    /// the parking job's throughput), a `str` at once.
    whole: Option<String>,
}

/// An entry as stores written before tables could be queryable hold it.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct EntryWithValue {
    order: Scalar,
    timestamp: i64,
    value: Option<Vec<u8>>,
}

/// An entry as stores written before tables could keep values hold it.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct EntryWithoutValue {
    order: Scalar,
    timestamp: i64,
}

/// An entry in any of the formats above (bincode is not self-describing:
/// a shorter format read as a longer one runs out of bytes).
fn decode_entry(store: &str, bytes: &[u8]) -> Result<Entry, StoreError> {
    decode::<Entry>(store, bytes).or_else(|e| {
        if let Ok(old) = decode::<EntryWithValue>(store, bytes) {
            return Ok(Entry {
                order: old.order,
                timestamp: old.timestamp,
                value: old.value,
                whole: None,
            });
        }
        match decode::<EntryWithoutValue>(store, bytes) {
            Ok(old) => Ok(Entry {
                order: old.order,
                timestamp: old.timestamp,
                value: None,
                whole: None,
            }),
            Err(_) => Err(e),
        }
    })
}

/// A queryable table's stored value: the record as its `to` writes it,
/// without decoding the source's bytes again ([`super::codec::merged_json_bytes`]).
fn whole_value(rec: &Record) -> String {
    let bytes = match &rec.raw {
        Some(raw) => super::codec::merged_json_bytes(raw, &rec.value)
            .unwrap_or_else(|| super::codec::json_bytes(&rec.full_value())),
        None => super::codec::json_bytes(&rec.value),
    };
    // A source's JSON is valid UTF-8 (checked when it is decoded), and so
    // is what serde_json writes.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A stored row as an interactive query answers it (see `query`): its
/// whole value (none unless the table is `queryable`) and timestamp.
pub(crate) fn queried_row(store: &str, bytes: &[u8]) -> Result<(Option<serde_json::Value>, i64), StoreError> {
    let entry = decode_entry(store, bytes)?;
    let value = match entry.whole.as_deref() {
        Some(json) => Some(serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
            store: store.to_string(),
            reason: format!("stored value: {e}"),
        })?),
        None => None,
    };
    Ok((value, entry.timestamp))
}

/// A stored value, as the record value it was.
fn stored_value(entry: &Entry) -> Option<Value> {
    entry
        .value
        .as_deref()
        .and_then(|bytes| super::codec::parse_json_bytes(bytes).ok())
}

pub(crate) fn process(ctx: &mut Ctx<'_, '_>, id: NodeId, t: &TableNode, rec: &Record) -> Result<(), ProcessError> {
    let Some(key) = super::key_bytes(&rec.key) else {
        ctx.dead_letter(id, "table: null key", Some(rec));
        return Ok(());
    };
    let order = match &t.newest_by {
        None => Scalar::Int(rec.timestamp),
        Some(e) => match e.eval(&ctx.input(rec)) {
            Ok(v) => Scalar::from_value(&v),
            Err(err) => {
                ctx.dead_letter(id, &err.0, Some(rec));
                return Ok(());
            }
        },
    };
    let store_name = &ctx.topo.stores[t.store].name;
    let mut previous = None;
    let mut old_bytes = None;
    if let Some(bytes) = ctx.store(t.store)?.get(&key)? {
        let old = decode_entry(store_name, &bytes)?;
        previous = Some(old.timestamp);
        old_bytes = old.value;
        match order.compare(&old.order) {
            Ok(std::cmp::Ordering::Less) => {
                ctx.stats.dropped_stale += 1;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                ctx.dead_letter(id, &format!("newest_by: {e}"), Some(rec));
                return Ok(());
            }
        }
    }
    let entry = Entry {
        order,
        timestamp: rec.timestamp,
        // What the topology reads of it (a JSON source decodes only those
        // fields, see `topology/compile/project.rs`): enough to evaluate
        // the table_aggregate's group and arguments on it again.
        value: t.keep_values.then(|| super::codec::json_bytes(&rec.value)),
        whole: t.queryable.then(|| whole_value(rec)),
    };
    if t.keep_values {
        super::table_aggregate::check(ctx, id, rec);
    }
    let mut rec = rec.clone();
    // The value this one replaces, unless a record of the key is held for
    // the commit: that one's `old` is what downstream saw last (`hold`).
    let held = t.emit == TableEmitSpec::OnCommit && ctx.table_cache[id].contains_key(&key);
    if !held {
        rec.old = old_bytes.and_then(|bytes| super::codec::parse_json_bytes(&bytes).ok());
    }
    if let Some(ttl) = t.ttl_ms {
        if let Some(index) = &mut ctx.ttl_index[id] {
            if let Some(old) = previous {
                index.remove(&(old, key.clone()));
            }
            index.insert((rec.timestamp, key.clone()));
        }
        ctx.next_close[id] = ctx.next_close[id].min(rec.timestamp.saturating_add(ttl));
    }
    match t.emit {
        TableEmitSpec::OnUpdate => {
            ctx.store(t.store)?.put(key, encode(&entry));
            ctx.forward(id, rec)
        }
        TableEmitSpec::OnCommit => {
            ctx.store(t.store)?.put(key.clone(), encode(&entry));
            hold(ctx, id, key, rec)
        }
    }
}

/// The row a join finds for `key` in table `t`: `None` without one (never
/// written, or forgotten by `ttl`: [`expire`] runs after each record, so
/// the record that moves stream time past a key's expiry still finds it,
/// as the records after it do not), else its value (`None` when it was
/// stored before the table kept values: a join added to a running table).
pub(crate) fn row(ctx: &mut Ctx<'_, '_>, t: &TableNode, key: &[u8]) -> Result<Option<Option<Value>>, ProcessError> {
    let Some(bytes) = ctx.store(t.store)?.get(key)? else {
        return Ok(None);
    };
    let entry = decode_entry(&ctx.topo.stores[t.store].name, &bytes)?;
    Ok(Some(stored_value(&entry)))
}

/// Hold `rec` back until the commit, replacing the record held for its
/// key. What downstream saw last is the value before the first held one,
/// so the held record keeps that as its `old`.
fn hold(ctx: &mut Ctx<'_, '_>, id: NodeId, key: Vec<u8>, mut rec: Record) -> Result<(), ProcessError> {
    let cache = &mut ctx.table_cache[id];
    if let Some(held) = cache.get_mut(&key) {
        rec.old = held.old.take();
        *held = rec;
    } else {
        cache.insert(key, rec);
    }
    if cache.len() >= CACHE_MAX_KEYS {
        emit(ctx, id)?;
    }
    Ok(())
}

/// Forget the keys of table `id` (with `ttl`) whose last update is `ttl`
/// or more behind stream time, oldest first.
pub(crate) fn expire(ctx: &mut Ctx<'_, '_>, id: NodeId, t: &TableNode) -> Result<(), ProcessError> {
    let Some(ttl) = t.ttl_ms else {
        return Ok(());
    };
    if ctx.ttl_index[id].is_none() {
        ctx.ttl_index[id] = Some(load_index(ctx, t)?);
    }
    let horizon = ctx.stream_time.saturating_sub(ttl);
    while let Some((updated, key)) = ctx.ttl_index[id].as_mut().and_then(|index| {
        let &(updated, _) = index.first()?;
        (updated <= horizon).then(|| index.pop_first()).flatten()
    }) {
        let old = match t.keep_values {
            true => match ctx.store(t.store)?.get(&key)? {
                Some(bytes) => stored_value(&decode_entry(&ctx.topo.stores[t.store].name, &bytes)?),
                None => None,
            },
            false => None,
        };
        ctx.store(t.store)?.delete(key.clone());
        let tombstone = Record {
            // As the records' keys were (text), so expressions over `key`
            // see the same value in a row and in its tombstone.
            key: match std::str::from_utf8(&key) {
                Ok(text) => Value::String(Arc::new(text.to_string())),
                Err(_) => Value::Bytes(Arc::new(key.clone())),
            },
            value: Value::Null,
            timestamp: updated.saturating_add(ttl),
            raw: None,
            tombstone: true,
            old,
        };
        match t.emit {
            TableEmitSpec::OnUpdate => ctx.forward(id, tombstone)?,
            TableEmitSpec::OnCommit => hold(ctx, id, key, tombstone)?,
        }
    }
    ctx.next_close[id] = ctx.ttl_index[id]
        .as_ref()
        .and_then(|index| index.first())
        .map_or(i64::MAX, |(updated, _)| updated.saturating_add(ttl));
    Ok(())
}

/// Every key of the table's store with its last update, read a chunk at a
/// time (unflushed writes included). A range needs an upper bound: `0xff`
/// is above every text key (see [`super::key_bytes`]); a raw bytes key at
/// or above it starts a further range of its own.
fn load_index(ctx: &mut Ctx<'_, '_>, t: &TableNode) -> Result<TtlIndex, ProcessError> {
    let name = ctx.topo.stores[t.store].name.clone();
    let mut index = TtlIndex::new();
    let mut from = Vec::new();
    let mut to = vec![0xff];
    loop {
        let chunk = ctx.store(t.store)?.range(&from, &to, LOAD_CHUNK)?;
        for (key, bytes) in &chunk {
            let entry = decode_entry(&name, bytes)?;
            index.insert((entry.timestamp, key.clone()));
        }
        match chunk.last() {
            Some((last, _)) if chunk.len() == LOAD_CHUNK => from = key_after(last),
            _ => match ctx.store(t.store)?.first_key(&to)? {
                Some(key) => {
                    to = key.iter().copied().chain([0xff]).collect();
                    from = key;
                }
                None => return Ok(index),
            },
        }
    }
}

/// Send downstream every record table `id` holds back.
pub(crate) fn emit(ctx: &mut Ctx<'_, '_>, id: NodeId) -> Result<(), ProcessError> {
    for (_, rec) in std::mem::take(&mut ctx.table_cache[id]) {
        ctx.forward(id, rec)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_every_earlier_format_still_decode() {
        let order = || Scalar::Int(5);
        let now = encode(&Entry {
            order: order(),
            timestamp: 7,
            value: Some(b"{}".to_vec()),
            whole: Some(r#"{"A":1}"#.to_string()),
        });
        let e = decode_entry("t", &now).unwrap();
        assert_eq!(
            (e.timestamp, e.value.as_deref(), e.whole.as_deref().map(str::as_bytes)),
            (7, Some(&b"{}"[..]), Some(&br#"{"A":1}"#[..]))
        );
        let with_value = encode(&EntryWithValue {
            order: order(),
            timestamp: 8,
            value: Some(b"{}".to_vec()),
        });
        let e = decode_entry("t", &with_value).unwrap();
        assert_eq!((e.timestamp, e.value.as_deref(), e.whole), (8, Some(&b"{}"[..]), None));
        let without = encode(&EntryWithoutValue {
            order: order(),
            timestamp: 9,
        });
        let e = decode_entry("t", &without).unwrap();
        assert_eq!((e.timestamp, e.value, e.whole), (9, None, None));
        assert!(decode_entry("t", &[1, 0]).is_err());
    }
}
