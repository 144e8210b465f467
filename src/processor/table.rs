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
//! The store keeps, per key, only what the comparison needs (the order value
//! and timestamp): the values themselves go downstream, usually to a topic
//! compacted by the same key, so storing them again would double the state
//! and the changelog for nothing.

use serde::{Deserialize, Serialize};

use super::aggregate::Scalar;
use super::{Ctx, ProcessError, Record};
use crate::state::{decode, encode, Store};
use crate::topology::{NodeId, TableEmitSpec, TableNode};

/// Keys held back per table and task (`emit: on_commit`) before they are
/// sent on without waiting for the commit.
pub(crate) const CACHE_MAX_KEYS: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    order: Scalar,
    timestamp: i64,
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
    if let Some(bytes) = ctx.store(t.store)?.get(&key)? {
        let old: Entry = decode(store_name, &bytes)?;
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
    };
    match t.emit {
        TableEmitSpec::OnUpdate => {
            ctx.store(t.store)?.put(key, encode(&entry));
            ctx.forward(id, rec.clone())
        }
        TableEmitSpec::OnCommit => {
            ctx.store(t.store)?.put(key.clone(), encode(&entry));
            let cache = &mut ctx.table_cache[id];
            cache.insert(key, rec.clone());
            if cache.len() >= CACHE_MAX_KEYS {
                emit(ctx, id)?;
            }
            Ok(())
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
