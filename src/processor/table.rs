//! Table: the latest value per key. A record replaces the stored one when
//! its `newest_by` value (default: its timestamp) is not older; ties go to
//! the later record. Accepted records are forwarded; older ones are dropped
//! and counted as stale.
//!
//! The store keeps, per key, only what the comparison needs (the order value
//! and timestamp): the values themselves go downstream, usually to a topic
//! compacted by the same key, so storing them again would double the state
//! and the changelog for nothing.

use serde::{Deserialize, Serialize};

use super::aggregate::Scalar;
use super::{Ctx, ProcessError, Record};
use crate::state::{decode, encode, Store};
use crate::topology::{NodeId, TableNode};

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
    ctx.store(t.store)?.put(key, encode(&entry));
    ctx.forward(id, rec.clone())
}
