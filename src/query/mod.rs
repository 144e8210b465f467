//! Interactive queries: `weir run --query-addr` serves what its stores hold
//! over HTTP (docs/queries.md, docs/query-api.yaml), as Kafka Streams'
//! interactive queries do, with the routing Kafka Streams leaves to every
//! application built in.
//!
//! - [`Registry`]: which tasks (sub-topology, partition) this instance has
//!   open, and whether each is restoring or running. The task manager
//!   keeps it current; it holds the task databases weakly, so a closed
//!   task's database closes.
//! - `route`: which instance owns a partition, read from the consumer
//!   group (each member's assignment, and its query address carried in
//!   its `client.id`), cached for a second.
//! - `read`: a store's committed rows as JSON (point lookups, key scans,
//!   a key's windows).
//! - `http`: the server: answers from a local running task, forwards to
//!   the owner, or says 503 with `Retry-After`.
//!
//! Reads see committed state only: a task's RocksDB receives an interval's
//! writes after the commit that sent them succeeded (see `state`), and a
//! query reads RocksDB, never the task's write cache. A restoring task's
//! database is behind (503, or with `?stale=true` its value marked stale),
//! and a partition no instance has right now (a rebalance moving it) is
//! 503: never a value another instance has already changed.

mod http;
mod read;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::state::rocks::{TaskDb, WeakTaskDb};
use crate::support::lock::{read as read_lock, write as write_lock};
use crate::topology::Topology;

pub use http::{query_command, serve, QueryArgs, ServeError};
pub(crate) use route::client_id;

/// A task this instance has open, for queries.
struct Local {
    db: WeakTaskDb,
    restoring: bool,
}

/// What an instance serves queries about: its open tasks, and where to
/// find the others.
pub struct Registry {
    topo: Arc<Topology>,
    /// `host:port` other instances (and clients redirected) reach this
    /// one's query server at.
    advertised: String,
    bootstrap: String,
    /// Partition count of every topic the topology reads (set by `weir
    /// run` once it has created or found its topics).
    partitions: RwLock<HashMap<String, i32>>,
    local: RwLock<HashMap<(usize, i32), Local>>,
    owners: route::Owners,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRegistry")
            .field("advertised", &self.advertised)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(topo: Arc<Topology>, advertised: String, bootstrap: String) -> Arc<Registry> {
        Arc::new(Registry {
            owners: route::Owners::new(&topo.application_id),
            topo,
            advertised,
            bootstrap,
            partitions: RwLock::default(),
            local: RwLock::default(),
        })
    }

    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    pub(crate) fn set_partitions(&self, partitions: &HashMap<String, i32>) {
        *write_lock(&self.partitions) = partitions.clone();
    }

    /// A stateful task opened: restoring until [`Registry::restored`].
    pub(crate) fn opened(&self, sub: usize, partition: i32, db: &TaskDb) {
        write_lock(&self.local).insert(
            (sub, partition),
            Local {
                db: db.downgrade(),
                restoring: true,
            },
        );
    }

    pub(crate) fn restored(&self, sub: usize, partition: i32) {
        if let Some(l) = write_lock(&self.local).get_mut(&(sub, partition)) {
            l.restoring = false;
        }
    }

    pub(crate) fn closed(&self, sub: usize, partition: i32) {
        write_lock(&self.local).remove(&(sub, partition));
    }

    /// Every task dropped (an abort, lost partitions, shutdown).
    pub(crate) fn clear(&self) {
        write_lock(&self.local).clear();
    }

    /// The partition count of a sub-topology (its source topics are
    /// co-partitioned), once known.
    fn partition_count(&self, sub: usize) -> Option<i32> {
        let partitions = read_lock(&self.partitions);
        self.topo
            .subtopology_sources(sub)
            .iter()
            .filter_map(|t| partitions.get(t).copied())
            .max()
    }

    /// This instance's task of (sub-topology, partition): its database,
    /// and whether it is restoring. `None`: not open here.
    fn local(&self, sub: usize, partition: i32) -> Option<(TaskDb, bool)> {
        let local = read_lock(&self.local);
        let l = local.get(&(sub, partition))?;
        Some((l.db.upgrade()?, l.restoring))
    }

    /// Local tasks, for `GET /v1/stores`: (sub-topology, partition,
    /// restoring).
    fn local_tasks(&self) -> Vec<(usize, i32, bool)> {
        let mut out: Vec<_> = read_lock(&self.local)
            .iter()
            .map(|(&(sub, p), l)| (sub, p, l.restoring))
            .collect();
        out.sort_unstable();
        out
    }
}
