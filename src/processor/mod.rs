//! Processors and the per-task processing loop.
//!
//! A [`Task`] owns one input partition of one sub-topology: its stream time,
//! its stores and the state of its windows. It turns raw input records into
//! [`Output`]s (result, repartition and dead-letter records). It never
//! touches Kafka or RocksDB: the runtime (or the offline test driver) feeds
//! it records and writes what it returns, so the same code runs under
//! `weir run` and `weir test`.
//!
//! Why the task and its graph walk ([`Ctx`]) share this file: `Ctx` is the
//! task's state lent out for one record, and filter, map and to-topic are a
//! few lines each in its `process`; each step that keeps state has its own
//! file (`table`, `window` with `aggregate`), as does decoding a source
//! record (`source`) and the JSON ⇄ CEL codec (`codec`). A new stateless
//! step is an arm in `Ctx::process`, a stateful one a file beside these.

pub(crate) mod aggregate;
pub(crate) mod codec;
mod join;
mod source;
pub(crate) mod table;
pub(crate) mod table_aggregate;
pub(crate) mod window;

use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value;

use crate::state::global::GlobalTables;
use crate::state::{Backend, CachedStore, Change, StoreError};
use crate::support::dead_letter as header;
use crate::topology::expr::Input;
use crate::topology::{NodeId, NodeKind, ToTopic, ToTopicKey, Topology};
use source::decode;

/// A record inside the graph.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub key: Value,
    /// With `raw`: only the fields the topology reads (and those maps set).
    pub value: Value,
    pub timestamp: i64,
    /// The source's JSON bytes when `value` is a projection of them (see
    /// `topology/compile/project.rs`): the rest of the record, for writing
    /// it whole.
    pub raw: Option<Arc<[u8]>>,
    /// A key a table with `ttl` forgot, or a group a table_aggregate left
    /// empty: written as the key with no value. Only a to-topic node (and,
    /// after a table, a table_aggregate) follows such a node (checked at
    /// compile).
    pub tombstone: bool,
    /// From a table that keeps values: the value this record replaces
    /// (none for a new key), what a table_aggregate subtracts (Kafka
    /// Streams' `Change.oldValue`). From a table_aggregate's tombstone:
    /// the group's last value, for `to.key`.
    pub old: Option<Value>,
}

impl Record {
    /// The record with its value's fields (a JSON object's: callers check)
    /// edited by `edit`, in place unless another branch still holds it.
    pub(crate) fn edit_fields(self, edit: impl FnOnce(&mut std::collections::HashMap<Key, Value>)) -> Record {
        let Value::Map(map) = self.value else {
            return self;
        };
        let mut fields = Arc::try_unwrap(map.map).unwrap_or_else(|shared| (*shared).clone());
        edit(&mut fields);
        Record {
            value: Value::Map(Map { map: Arc::new(fields) }),
            ..self
        }
    }

    /// The whole value: `value` itself, or the raw record decoded in full
    /// with `value`'s fields (as read or set by maps) over it.
    pub(crate) fn full_value(&self) -> std::borrow::Cow<'_, Value> {
        let (Some(raw), Value::Map(over)) = (&self.raw, &self.value) else {
            return std::borrow::Cow::Borrowed(&self.value);
        };
        // It parsed once already (projected), so it parses again.
        let Ok(Value::Map(base)) = codec::parse_json_bytes(raw) else {
            return std::borrow::Cow::Borrowed(&self.value);
        };
        let mut fields = Arc::try_unwrap(base.map).unwrap_or_else(|shared| (*shared).clone());
        for (k, v) in over.map.iter() {
            fields.insert(k.clone(), v.clone());
        }
        std::borrow::Cow::Owned(Value::Map(Map { map: Arc::new(fields) }))
    }
}

/// Where the record being processed came from (for dead-letter headers).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Result,
    Repartition,
    DeadLetter,
}

/// A record to write to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub kind: OutputKind,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub headers: Vec<(String, String)>,
}

/// Counters of one task, exported as metrics by the runtime.
#[derive(Debug, Default, Clone)]
pub struct TaskStats {
    pub consumed: u64,
    pub processed: u64,
    pub dead_letter: u64,
    pub dropped_late: u64,
    pub dropped_stale: u64,
    /// Records an inner join found no row for.
    pub dropped_join_miss: u64,
    /// Records for output topics (not repartition, changelog or DLQ).
    pub emitted: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("topic {0} is not a source of this task")]
    UnknownTopic(String),
}

/// A store as the task holds it.
pub(crate) type TaskStore = CachedStore<Box<dyn Backend + Send>>;

impl Backend for Box<dyn Backend + Send> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }
    fn range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<crate::state::Entries, StoreError> {
        (**self).range(from, to, limit)
    }
    fn first_key(&self, from: &[u8], skip: &dyn Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).first_key(from, skip)
    }
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        (**self).write(batch)
    }
}

/// One sub-topology × partition.
pub struct Task {
    pub subtopology: usize,
    pub partition: i32,
    /// Largest event time seen; never decreases. `i64::MIN` before the
    /// first record.
    pub stream_time: i64,
    /// Indexed like `Topology::stores`; `None` for other sub-topologies'.
    pub stores: Vec<Option<TaskStore>>,
    pub stats: TaskStats,
    /// Per window node: stream time from which a close scan can find
    /// something (avoids a range scan per record).
    next_close: Vec<i64>,
    /// Per table node with `emit: on_commit`: the newest accepted record of
    /// each key since the last [`Task::emit_cached`] (see `table`).
    table_cache: Vec<TableCache>,
    /// Per table node with `ttl`: its keys by last update, loaded from the
    /// store when first needed (see `table`).
    ttl_index: Vec<Option<table::TtlIndex>>,
    /// The rows of the topology's global tables, shared by every task of
    /// the instance (empty until [`Task::set_global_tables`]).
    globals: Arc<GlobalTables>,
}

/// Records a table holds back until the commit, by key bytes, in the order
/// their keys first came.
pub(crate) type TableCache = indexmap::IndexMap<Vec<u8>, Record>;

/// Everything a processor may touch while handling one record.
pub(crate) struct Ctx<'a, 'o> {
    pub topo: &'a Topology,
    pub stores: &'a mut [Option<TaskStore>],
    pub out: &'a mut Vec<Output>,
    pub stats: &'a mut TaskStats,
    pub stream_time: i64,
    pub partition: i32,
    pub origin: Option<&'a Origin<'o>>,
    /// Per window node: the earliest stream time at which one of its open
    /// windows closes (see `Task::close_windows`).
    pub next_close: &'a mut [i64],
    pub table_cache: &'a mut [TableCache],
    pub ttl_index: &'a mut [Option<table::TtlIndex>],
    pub globals: &'a GlobalTables,
}

impl Task {
    /// A task whose stores are given by `open(store_index)`.
    pub fn new(
        topo: &Topology,
        subtopology: usize,
        partition: i32,
        mut open: impl FnMut(usize) -> Result<Box<dyn Backend + Send>, StoreError>,
    ) -> Result<Task, StoreError> {
        let mut stores = Vec::with_capacity(topo.stores.len());
        for (i, s) in topo.stores.iter().enumerate() {
            stores.push(if s.subtopology == subtopology {
                Some(CachedStore::new(open(i)?))
            } else {
                None
            });
        }
        Ok(Task {
            subtopology,
            partition,
            stream_time: i64::MIN,
            stores,
            stats: TaskStats::default(),
            next_close: vec![i64::MIN; topo.nodes.len()],
            table_cache: (0..topo.nodes.len()).map(|_| TableCache::default()).collect(),
            ttl_index: (0..topo.nodes.len()).map(|_| None).collect(),
            globals: Arc::new(GlobalTables::new(topo.global_tables.len())),
        })
    }

    /// Look join steps up in `globals` (the instance's global tables).
    pub fn set_global_tables(&mut self, globals: Arc<GlobalTables>) {
        self.globals = globals;
    }

    /// An in-memory task (tests and `weir test`).
    pub fn in_memory(topo: &Topology, subtopology: usize, partition: i32) -> Task {
        // The in-memory backend cannot fail to open.
        Task::new(topo, subtopology, partition, |_| {
            Ok(Box::new(crate::state::MemBackend::default()))
        })
        .unwrap_or_else(|_| unreachable!("in-memory stores always open"))
    }

    /// Process one raw record from `origin.topic`. `now_ms` is the wall
    /// clock (epoch ms) that event times read from a field must not be more
    /// than `max_future` ahead of: `weir run` passes the clock it reads per
    /// batch, `weir test` a clock of its own that depends only on the input
    /// (see `testkit`).
    pub fn process(
        &mut self,
        topo: &Topology,
        origin: &Origin<'_>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), ProcessError> {
        self.stats.consumed += 1;
        let (sub, source_id) = topo
            .source_for(origin.topic)
            .ok_or_else(|| ProcessError::UnknownTopic(origin.topic.to_string()))?;
        if sub != self.subtopology {
            return Err(ProcessError::UnknownTopic(origin.topic.to_string()));
        }
        let NodeKind::Source(source) = &topo.nodes[source_id].kind else {
            return Err(ProcessError::UnknownTopic(origin.topic.to_string()));
        };
        let record = match decode(source, origin, now_ms) {
            Ok(r) => r,
            Err(reason) => {
                let mut ctx = self.ctx(topo, out, Some(origin));
                ctx.dead_letter(source_id, &reason, None);
                return Ok(());
            }
        };
        if record.timestamp > self.stream_time {
            self.stream_time = record.timestamp;
        }
        self.stats.processed += 1;
        {
            let mut ctx = self.ctx(topo, out, Some(origin));
            ctx.forward(source_id, record)?;
        }
        self.close_windows(topo, out)
    }

    /// Move stream time forward (idle feeds, `weir test --flush`) and close
    /// what that closes. Never moves it back.
    pub fn advance_stream_time(&mut self, topo: &Topology, to: i64, out: &mut Vec<Output>) -> Result<(), ProcessError> {
        if to > self.stream_time {
            self.stream_time = to;
            self.close_windows(topo, out)?;
        }
        Ok(())
    }

    fn ctx<'a, 'o>(
        &'a mut self,
        topo: &'a Topology,
        out: &'a mut Vec<Output>,
        origin: Option<&'a Origin<'o>>,
    ) -> Ctx<'a, 'o> {
        Ctx {
            topo,
            stores: &mut self.stores,
            out,
            stats: &mut self.stats,
            stream_time: self.stream_time,
            partition: self.partition,
            origin,
            next_close: &mut self.next_close,
            table_cache: &mut self.table_cache,
            ttl_index: &mut self.ttl_index,
            globals: &self.globals,
        }
    }

    /// Close the windows and forget the table keys that stream time has
    /// passed the end (grace included) or the `ttl` of.
    fn close_windows(&mut self, topo: &Topology, out: &mut Vec<Output>) -> Result<(), ProcessError> {
        let sub = &topo.subtopologies[self.subtopology];
        for &id in &sub.nodes {
            match &topo.nodes[id].kind {
                NodeKind::Window(w) if self.stream_time >= self.next_close[id] => {
                    window::close(&mut self.ctx(topo, out, None), id, w)?
                }
                NodeKind::Table(t) if t.ttl_ms.is_some() && self.stream_time >= self.next_close[id] => {
                    table::expire(&mut self.ctx(topo, out, None), id, t)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Send downstream what tables with `emit: on_commit` held back (call
    /// before every commit; the runtime does, and so does the offline
    /// driver after each record, as Kafka Streams' `TopologyTestDriver`
    /// commits after each). Tables are emptied in graph order, so a table
    /// fed by another one gets its records in the same call.
    pub fn emit_cached(&mut self, topo: &Topology, out: &mut Vec<Output>) -> Result<(), ProcessError> {
        let mut any = false;
        for id in 0..self.table_cache.len() {
            if !self.table_cache[id].is_empty() {
                table::emit(&mut self.ctx(topo, out, None), id)?;
                any = true;
            }
        }
        if any {
            self.close_windows(topo, out)?;
        }
        Ok(())
    }

    /// Records held back by tables (`emit: on_commit`).
    pub fn cached_records(&self) -> usize {
        self.table_cache.iter().map(TableCache::len).sum()
    }

    /// Note that a window node holds a window closing at `close_at`.
    pub(crate) fn note_open(next_close: &mut i64, close_at: i64) {
        if close_at < *next_close {
            *next_close = close_at;
        }
    }

    /// Roughly the memory of every store's cached writes (see
    /// [`crate::state::CachedStore::cached_bytes`]).
    pub fn cached_bytes(&self) -> usize {
        self.stores.iter().flatten().map(|s| s.cached_bytes()).sum()
    }

    /// Hand every store's writes not sent yet to `send` with the store's
    /// index (see [`crate::state::CachedStore::send_unsent`]); returns how
    /// many were handed.
    pub fn send_unsent<E>(
        &mut self,
        mut send: impl FnMut(usize, &[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut n = 0;
        for (i, s) in self.stores.iter_mut().enumerate() {
            if let Some(s) = s {
                n += s.send_unsent(|k, v| send(i, k, v))?;
            }
        }
        Ok(n)
    }

    /// Take every store's cached writes, sent or not, without applying
    /// them (the runtime applies them once its commit succeeded); (store
    /// index, changes).
    pub fn take_changes(&mut self) -> Vec<(usize, Vec<Change>)> {
        let mut out = Vec::new();
        for (i, s) in self.stores.iter_mut().enumerate() {
            if let Some(s) = s {
                let changes = s.take_changes();
                if !changes.is_empty() {
                    out.push((i, changes));
                }
            }
        }
        out
    }

    /// Flush every store's cache; returns (store index, changes) for the
    /// changelog.
    pub fn flush(&mut self) -> Result<Vec<(usize, Vec<Change>)>, StoreError> {
        let mut out = Vec::new();
        for (i, s) in self.stores.iter_mut().enumerate() {
            if let Some(s) = s {
                let changes = s.flush()?;
                if !changes.is_empty() {
                    out.push((i, changes));
                }
            }
        }
        Ok(out)
    }
}

impl Ctx<'_, '_> {
    pub(crate) fn store(&mut self, idx: usize) -> Result<&mut TaskStore, StoreError> {
        self.stores
            .get_mut(idx)
            .and_then(|s| s.as_mut())
            .ok_or_else(|| StoreError::Corrupt {
                store: idx.to_string(),
                reason: "store not owned by this task".into(),
            })
    }

    pub(crate) fn input<'r>(&'r self, rec: &'r Record) -> Input<'r> {
        Input {
            value: &rec.value,
            key: &rec.key,
            timestamp: rec.timestamp,
            topic: self.origin.map(|o| o.topic).unwrap_or(""),
            partition: self.partition,
        }
    }

    /// Count the record being processed as a dead-letter error and send it
    /// to the dead-letter topic (or just count it when the topology has
    /// none).
    pub(crate) fn dead_letter(&mut self, node: NodeId, reason: &str, rec: Option<&Record>) {
        self.stats.dead_letter += 1;
        tracing::debug!(processor = %self.topo.nodes[node].name, reason, "record to dead-letter topic");
        self.write_dead_letter(node, reason, rec);
    }

    /// Send the record being processed to the dead-letter topic, if the
    /// topology has one, without counting it (the caller counts it under
    /// its own name, e.g. a late record as dropped).
    pub(crate) fn write_dead_letter(&mut self, node: NodeId, reason: &str, rec: Option<&Record>) {
        let Some(topic) = &self.topo.dead_letter else { return };
        let mut headers = vec![
            (header::ERROR.to_string(), reason.to_string()),
            (header::PROCESSOR.to_string(), self.topo.nodes[node].name.clone()),
        ];
        let (key, value, timestamp) = match self.origin {
            Some(o) => {
                headers.push((header::TOPIC.into(), o.topic.to_string()));
                headers.push((header::PARTITION.into(), o.partition.to_string()));
                headers.push((header::OFFSET.into(), o.offset.to_string()));
                (o.key.map(<[u8]>::to_vec), o.value.map(<[u8]>::to_vec), o.timestamp)
            }
            None => match rec {
                Some(r) => (
                    key_bytes(&r.key),
                    Some(codec::to_json(&r.full_value()).to_string().into_bytes()),
                    r.timestamp,
                ),
                None => (None, None, self.stream_time),
            },
        };
        headers.push((header::TIMESTAMP.into(), timestamp.to_string()));
        self.out.push(Output {
            kind: OutputKind::DeadLetter,
            topic: topic.clone(),
            key,
            value,
            timestamp,
            headers,
        });
    }

    /// Hand `rec` to every child of `node` (the last child gets it without a
    /// copy, so a map step after a single-child step edits it in place).
    pub(crate) fn forward(&mut self, node: NodeId, rec: Record) -> Result<(), ProcessError> {
        let topo = self.topo;
        let children = &topo.nodes[node].children;
        if let Some((&last, rest)) = children.split_last() {
            for &child in rest {
                self.process(child, rec.clone())?;
            }
            self.process(last, rec)?;
        }
        Ok(())
    }

    fn process(&mut self, id: NodeId, rec: Record) -> Result<(), ProcessError> {
        let topo = self.topo;
        match &topo.nodes[id].kind {
            NodeKind::Source(_) => self.forward(id, rec),
            NodeKind::Pass => self.forward(id, rec),
            NodeKind::Filter(e) => match e.eval_bool(&self.input(&rec)) {
                Ok(true) => self.forward(id, rec),
                Ok(false) => Ok(()),
                Err(err) => {
                    self.dead_letter(id, &err.0, Some(&rec));
                    Ok(())
                }
            },
            NodeKind::Map(m) => {
                if !matches!(rec.value, Value::Map(_)) {
                    self.dead_letter(id, "map needs a JSON object value", Some(&rec));
                    return Ok(());
                }
                // Every expression sees the record as it came in.
                let mut set = Vec::with_capacity(m.set.len());
                for (name, e) in &m.set {
                    match e.eval(&self.input(&rec)) {
                        Ok(v) => set.push((name, v)),
                        Err(err) => {
                            self.dead_letter(id, &err.0, Some(&rec));
                            return Ok(());
                        }
                    }
                }
                let out = rec.edit_fields(|fields| {
                    for (name, v) in set {
                        fields.insert(Key::String(name.clone()), v);
                    }
                    for name in &m.drop {
                        fields.remove(&Key::String(Arc::new(name.clone())));
                    }
                    if let Some(keep) = &m.keep {
                        fields.retain(|k, _| matches!(k, Key::String(s) if keep.iter().any(|f| f == s.as_str())));
                    }
                });
                self.forward(id, out)
            }
            NodeKind::Window(w) => window::process(self, id, w, &rec),
            NodeKind::Table(t) => table::process(self, id, t, &rec),
            NodeKind::TableAggregate(a) => table_aggregate::process(self, id, a, &rec),
            NodeKind::Join(j) => join::process(self, id, j, rec),
            NodeKind::ToTopic(s) => {
                self.write_to_topic(id, s, &rec);
                Ok(())
            }
        }
    }

    /// Write `rec` to the node's topic (an output or repartition record).
    fn write_to_topic(&mut self, id: NodeId, s: &ToTopic, rec: &Record) {
        let key = match &s.key {
            ToTopicKey::Record => key_bytes(&rec.key),
            ToTopicKey::Regroup(r) => return table_aggregate::regroup(self, s, r, rec),
            // A table_aggregate's tombstone: the key its last value had.
            ToTopicKey::Expr(e) if rec.tombstone && rec.old.is_some() => {
                let old = Record {
                    value: rec.old.clone().unwrap_or(Value::Null),
                    old: None,
                    ..rec.clone()
                };
                match e.eval(&self.input(&old)) {
                    Ok(v) => key_bytes(&v),
                    Err(err) => return self.dead_letter(id, &err.0, Some(rec)),
                }
            }
            // Otherwise a tombstone's node is a table with `ttl`, which has
            // no `to.key`.
            _ if rec.tombstone => key_bytes(&rec.key),
            ToTopicKey::Expr(e) => match e.eval(&self.input(rec)) {
                Ok(v) => key_bytes(&v),
                Err(err) => return self.dead_letter(id, &err.0, Some(rec)),
            },
            ToTopicKey::Group(parts) => {
                let mut values = Vec::with_capacity(parts.len());
                for p in parts {
                    match p.eval(&self.input(rec)) {
                        Ok(v) => values.push(codec::to_json(&v)),
                        Err(err) => return self.dead_letter(id, &err.0, Some(rec)),
                    }
                }
                Some(serde_json::Value::Array(values).to_string().into_bytes())
            }
        };
        let value = match (&s.fields, &rec.value) {
            _ if rec.tombstone => None,
            (Some(fields), cel::Value::Map(m)) => {
                // Only the named fields: look them up rather than copy the
                // whole record and drop the rest.
                let kept: std::collections::HashMap<Key, Value> = fields
                    .iter()
                    .filter_map(|f| {
                        let k = Key::String(Arc::new(f.clone()));
                        m.map.get(&k).map(|v| (k, v.clone()))
                    })
                    .collect();
                Some(codec::json_bytes(&Value::Map(Map { map: Arc::new(kept) })))
            }
            _ => Some(codec::json_bytes(&rec.full_value())),
        };
        self.push_output(s, key, value, rec.timestamp);
    }

    /// Queue a record for the node's topic.
    pub(crate) fn push_output(&mut self, s: &ToTopic, key: Option<Vec<u8>>, value: Option<Vec<u8>>, timestamp: i64) {
        if !s.internal {
            self.stats.emitted += 1;
        }
        self.out.push(Output {
            kind: if s.internal {
                OutputKind::Repartition
            } else {
                OutputKind::Result
            },
            topic: s.topic.clone(),
            key,
            value,
            timestamp,
            headers: Vec::new(),
        });
    }
}

/// Record key as bytes: strings as UTF-8, null as no key, anything else as
/// JSON.
pub(crate) fn key_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::Bytes(b) => Some(b.to_vec()),
        other => Some(codec::to_text(other).into_bytes()),
    }
}

#[cfg(test)]
mod tests;
