//! Windowed aggregation.
//!
//! Windows are `[start, start + size)`, aligned to the epoch (shifted by the
//! time-zone offset when one is given). A window closes when the task's
//! stream time reaches `end + grace`; a record for a closed window is late:
//! dropped, counted and optionally dead-lettered. `on_update` emits the
//! current aggregate after every change; `on_window_close` emits once, when
//! the window closes.
//!
//! Store layout: key = window start (8 bytes, big-endian, sign bit flipped
//! so negative times sort first) + group key bytes, so closing is a range
//! scan from the first key up to the closing start.

use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value;
use chrono::TimeZone;
use serde::{Deserialize, Serialize};

use super::aggregate::{Acc, Scalar};
use super::codec;
use super::{Ctx, ProcessError, Record, Task};
use crate::state::{decode, encode, Store};
use crate::topology::{EmitSpec, LateSpec, NodeId, WindowNode};

/// What the window store keeps per (window, group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowState {
    /// Largest timestamp of a record in the window (the output timestamp).
    pub max_ts: i64,
    pub accs: Vec<Acc>,
}

/// Order-preserving encoding of a signed time.
pub(crate) fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1u64 << 63)).to_be_bytes()
}

fn time_from(bytes: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    (u64::from_be_bytes(b) ^ (1u64 << 63)) as i64
}

pub(crate) fn store_key(start: i64, group: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len());
    k.extend_from_slice(&time_bytes(start));
    k.extend_from_slice(group);
    k
}

/// Starts of every window containing `ts`, ascending. Saturating: an
/// extreme event time (near `i64::MIN`/`MAX`, from a corrupt timestamp or
/// an absurd date) clamps instead of overflowing.
///
/// Like Kafka Streams' `TimeWindows.windowsFor`, a record at or after the
/// epoch opens no window that starts before it: hopping windows begin at
/// `max(0, ts - size + advance)` rounded down to the advance. (The one
/// window of a record is kept even when a time-zone offset puts its start
/// before the epoch; records before the epoch, which Kafka Streams
/// rejects and sources dead-letter, would keep every window that contains
/// them.)
pub(crate) fn window_starts(w: &WindowNode, ts: i64) -> Vec<i64> {
    let last = ts
        .saturating_sub(w.offset_ms)
        .div_euclid(w.advance_ms)
        .saturating_mul(w.advance_ms)
        .saturating_add(w.offset_ms);
    let mut lower = ts.saturating_sub(w.size_ms);
    if ts >= 0 {
        lower = lower.max(last.min(0).saturating_sub(1));
    }
    let mut starts = Vec::with_capacity((w.size_ms / w.advance_ms) as usize + 1);
    let mut s = last;
    while s > lower {
        starts.push(s);
        match s.checked_sub(w.advance_ms) {
            Some(next) => s = next,
            None => break,
        }
    }
    starts.reverse();
    starts
}

pub(crate) fn process(ctx: &mut Ctx<'_, '_>, id: NodeId, w: &WindowNode, rec: &Record) -> Result<(), ProcessError> {
    let group = match super::key_bytes(&rec.key) {
        Some(g) => g,
        None => {
            ctx.dead_letter(id, "window: null group key", Some(rec));
            return Ok(());
        }
    };
    // Evaluate every aggregate argument once, before touching state, so an
    // expression error leaves no window half-updated.
    let mut inputs = Vec::with_capacity(w.aggregates.len());
    for a in &w.aggregates {
        match &a.arg {
            None => inputs.push(None),
            Some(e) => match e.eval(&ctx.input(rec)) {
                Ok(v) => inputs.push(Some(Scalar::from_value(&v))),
                Err(err) => {
                    ctx.dead_letter(id, &err.0, Some(rec));
                    return Ok(());
                }
            },
        }
    }
    let store_name = &ctx.topo.stores[w.store].name;
    let mut late_for_all = true;
    let mut updates = Vec::new();
    for start in window_starts(w, rec.timestamp) {
        let end = start.saturating_add(w.size_ms);
        if ctx.stream_time >= end.saturating_add(w.grace_ms) {
            continue;
        }
        late_for_all = false;
        let key = store_key(start, &group);
        let mut state = match ctx.store(w.store)?.get(&key)? {
            Some(bytes) => decode::<WindowState>(store_name, &bytes)?,
            None => WindowState {
                max_ts: i64::MIN,
                accs: w.aggregates.iter().map(|a| Acc::new(a.kind)).collect(),
            },
        };
        for (acc, input) in state.accs.iter_mut().zip(&inputs) {
            if let Err(e) = acc.add(input.as_ref()) {
                ctx.dead_letter(id, &format!("aggregate: {e}"), Some(rec));
                return Ok(());
            }
        }
        state.max_ts = state.max_ts.max(rec.timestamp);
        updates.push((start, key, state));
    }
    if late_for_all {
        ctx.stats.dropped_late += 1;
        tracing::debug!(processor = %ctx.topo.nodes[id].name, timestamp = rec.timestamp, stream_time = ctx.stream_time, "skipping record for expired window");
        if w.late == LateSpec::DeadLetter {
            let reason = format!(
                "late: window closed (event time {} < stream time {} - grace)",
                rec.timestamp, ctx.stream_time
            );
            // Counted once, as dropped (above), not as a dead-letter error.
            ctx.write_dead_letter(id, &reason, Some(rec));
        }
        return Ok(());
    }
    for (start, key, state) in updates {
        let bytes = encode(&state);
        ctx.store(w.store)?.put(key, bytes);
        Task::note_open(
            &mut ctx.next_close[id],
            start.saturating_add(w.size_ms).saturating_add(w.grace_ms),
        );
        if w.emit == EmitSpec::OnUpdate {
            let out = result_record(ctx.topo.time_zone, w, start, &group, &state);
            ctx.forward(id, out)?;
        }
    }
    Ok(())
}

/// Closed windows read from the store at a time.
pub(crate) const CLOSE_CHUNK: usize = 1024;

/// Emit (for `on_window_close`) and delete every window that stream time
/// has closed, then note when the oldest window still open will close, so
/// no scan runs before then.
pub(crate) fn close(ctx: &mut Ctx<'_, '_>, id: NodeId, w: &WindowNode) -> Result<(), ProcessError> {
    let store_name = ctx.topo.stores[w.store].name.clone();
    // start + size + grace <= stream_time  <=>  start <= stream_time - size - grace
    let last_closed_start = ctx.stream_time.saturating_sub(w.size_ms).saturating_sub(w.grace_ms);
    let to = time_bytes(last_closed_start.saturating_add(1));
    // Chunk by chunk: after an outage stream time may jump a day, closing
    // every window of it at once; one chunk of them is in memory at a time
    // (their deletes, keys only, wait in the store's write cache).
    let mut from = time_bytes(i64::MIN).to_vec();
    loop {
        let closed = ctx.store(w.store)?.range(&from, &to, CLOSE_CHUNK)?;
        let exhausted = closed.len() < CLOSE_CHUNK;
        if let Some((last, _)) = closed.last() {
            from = crate::state::key_after(last);
        }
        for (key, bytes) in closed {
            let state = decode::<WindowState>(&store_name, &bytes)?;
            let start = time_from(&key);
            if w.emit == EmitSpec::OnWindowClose {
                let out = result_record(ctx.topo.time_zone, w, start, &key[8..], &state);
                ctx.forward(id, out)?;
            }
            ctx.store(w.store)?.delete(key);
        }
        if exhausted {
            break;
        }
    }
    // The oldest open window says when the next scan can find work.
    ctx.next_close[id] = match ctx.store(w.store)?.first_key(&to)? {
        Some(key) => time_from(&key).saturating_add(w.size_ms).saturating_add(w.grace_ms),
        None => i64::MAX,
    };
    Ok(())
}

/// A stored window as an interactive query answers it (see `query`):
/// from a key of the window store, the window's start and group key, and
/// the result the window would emit now, with its timestamp.
pub(crate) fn queried_window(
    tz: chrono_tz::Tz,
    w: &WindowNode,
    store: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<(i64, serde_json::Value, i64), crate::state::StoreError> {
    let state = decode::<WindowState>(store, bytes)?;
    let start = time_from(key);
    let out = result_record(tz, w, start, &key[8..], &state);
    Ok((start, codec::json_value(&out.value), out.timestamp))
}

/// The group values of a repartitioned group key (a JSON array).
pub(crate) fn group_parts(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Vec<serde_json::Value>>(text) {
        Ok(v) => v.into_iter().map(codec::from_json).collect(),
        Err(_) => vec![Value::String(Arc::new(text.to_string()))],
    }
}

/// Window result: group fields, `window_start`, `window_end` (RFC 3339 in
/// the topology's time zone), then the aggregates. Key:
/// `<group parts joined by |>@<window_start>`.
fn result_record(tz: chrono_tz::Tz, w: &WindowNode, start: i64, group: &[u8], state: &WindowState) -> Record {
    let fmt = |ms: i64| match tz.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => t.to_rfc3339(),
        _ => ms.to_string(),
    };
    let group_text = String::from_utf8_lossy(group);
    let parts: Vec<Value> = if w.group_is_record_key {
        vec![Value::String(Arc::new(group_text.to_string()))]
    } else {
        group_parts(&group_text)
    };
    let mut fields = std::collections::HashMap::new();
    for (name, v) in w.group_names.iter().zip(&parts) {
        fields.insert(Key::String(Arc::new(name.clone())), v.clone());
    }
    let start_text = fmt(start);
    fields.insert(
        Key::String(Arc::new("window_start".into())),
        Value::String(Arc::new(start_text.clone())),
    );
    fields.insert(
        Key::String(Arc::new("window_end".into())),
        Value::String(Arc::new(fmt(start.saturating_add(w.size_ms)))),
    );
    for (a, acc) in w.aggregates.iter().zip(&state.accs) {
        fields.insert(Key::String(Arc::new(a.name.clone())), acc.result());
    }
    let key_text = parts.iter().map(codec::to_text).collect::<Vec<_>>().join("|");
    Record {
        key: Value::String(Arc::new(format!("{key_text}@{start_text}"))),
        value: Value::Map(Map { map: Arc::new(fields) }),
        timestamp: state.max_ts,
        raw: None,
        tombstone: false,
        old: None,
    }
}
