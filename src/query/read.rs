//! A store's rows as JSON: what a task's RocksDB holds (committed state),
//! decoded by the processor that wrote it.

use serde_json::{json, Value};

use crate::processor::{table, table_aggregate, window};
use crate::state::rocks::TaskDb;
use crate::state::{key_after, Backend, StoreError};
use crate::topology::{NodeKind, StoreDef, Topology};

/// What a store is, for queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A `table` step keeping its values (`queryable: true`).
    Table,
    /// A `table` step without `queryable: true`: its values are not kept.
    TableWithoutValues,
    TableAggregate,
    Window,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Table | Kind::TableWithoutValues => "table",
            Kind::TableAggregate => "table_aggregate",
            Kind::Window => "window",
        }
    }
}

pub(super) fn kind(topo: &Topology, store: &StoreDef) -> Kind {
    match &topo.nodes[store.node].kind {
        NodeKind::Table(t) if t.queryable => Kind::Table,
        NodeKind::Table(_) => Kind::TableWithoutValues,
        NodeKind::TableAggregate(_) => Kind::TableAggregate,
        _ => Kind::Window,
    }
}

/// A row of a key-value store (table, table_aggregate) as JSON: `key`,
/// `value`, and a table's row `timestamp`.
fn row(topo: &Topology, store: &StoreDef, key: &[u8], bytes: &[u8]) -> Result<Value, StoreError> {
    let key_text = String::from_utf8_lossy(key);
    match &topo.nodes[store.node].kind {
        NodeKind::Table(_) => {
            let (value, timestamp) = table::queried_row(&store.name, bytes)?;
            Ok(json!({ "key": key_text, "value": value, "timestamp": timestamp }))
        }
        NodeKind::TableAggregate(a) => {
            let value = table_aggregate::queried_group(a, &store.name, key, bytes)?;
            Ok(json!({ "key": key_text, "value": value }))
        }
        _ => Err(StoreError::Corrupt {
            store: store.name.clone(),
            reason: "not a key-value store".into(),
        }),
    }
}

/// A key's row, `None` if the store has none.
pub(super) fn get(topo: &Topology, store: &StoreDef, db: &TaskDb, key: &[u8]) -> Result<Option<Value>, StoreError> {
    match db.store(&store.name).get(key)? {
        Some(bytes) => Ok(Some(row(topo, store, key, &bytes)?)),
        None => Ok(None),
    }
}

/// Rows with keys in `[from, to)` (`to` empty: no upper bound), at most
/// `limit`, in key order.
pub(super) fn scan(
    topo: &Topology,
    store: &StoreDef,
    db: &TaskDb,
    from: &[u8],
    to: &[u8],
    limit: usize,
) -> Result<Vec<(Vec<u8>, Value)>, StoreError> {
    // No upper bound: past every key (keys are text, never 0xFF bytes).
    let to = if to.is_empty() { vec![0xFF; 8] } else { to.to_vec() };
    let entries = db.store(&store.name).range(from, &to, limit)?;
    entries
        .into_iter()
        .map(|(k, v)| Ok((k.clone(), row(topo, store, &k, &v)?)))
        .collect()
}

/// The smallest key after every key starting with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// A group's windows that start in `[from, to]` (ms), oldest first: each
/// with its `start`, `end`, the result it would emit now (`value`) and
/// that result's `timestamp`. The store holds the windows not yet closed;
/// a closed window's final result is in the output topic.
pub(super) fn windows(
    topo: &Topology,
    store: &StoreDef,
    db: &TaskDb,
    group: &[u8],
    from: i64,
    to: i64,
) -> Result<Vec<Value>, StoreError> {
    let NodeKind::Window(w) = &topo.nodes[store.node].kind else {
        return Ok(Vec::new());
    };
    let lo = window::time_bytes(from).to_vec();
    let hi = key_after(&window::time_bytes(to));
    let mut out = Vec::new();
    let mut at = lo;
    loop {
        let chunk = db.store(&store.name).range(&at, &hi, window::CLOSE_CHUNK)?;
        let exhausted = chunk.len() < window::CLOSE_CHUNK;
        if let Some((last, _)) = chunk.last() {
            at = key_after(last);
        }
        for (key, bytes) in chunk {
            if key.len() < 8 || &key[8..] != group {
                continue;
            }
            let (start, value, timestamp) = window::queried_window(topo.time_zone, w, &store.name, &key, &bytes)?;
            out.push(json!({
                "start": start,
                "end": start.saturating_add(w.size_ms),
                "closes_at": start.saturating_add(w.size_ms).saturating_add(w.grace_ms),
                "value": value,
                "timestamp": timestamp,
            }));
        }
        if exhausted {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(
            prefix_end(b"[\"POI001\","),
            b"[\"POI001\",".iter().take(9).chain(b"-").copied().collect::<Vec<_>>()
        );
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }
}
