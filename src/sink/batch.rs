//! The batch being collected: consumed records, their mapped rows per
//! table, the records that cannot be mapped, and when each table's batch
//! is due (`batch_size`, `linger`).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::config::TableConfig;
use super::mapping::{Mapped, RecordMapping};
use super::row::Value;

/// A consumed record kept until its batch is written.
pub(super) struct SourceRecord {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
}

/// A record that goes to the dead-letter topic.
#[derive(Debug, Clone)]
pub(super) struct Rejected {
    /// Index into the batch's records.
    pub(super) record: usize,
    /// Index of the table it was meant for.
    pub(super) table: usize,
    pub(super) reason: String,
}

/// Records of the batch being collected.
pub(super) struct Batch {
    pub(super) records: Vec<SourceRecord>,
    /// Per table: (record index, mapped row).
    pub(super) rows: Vec<Vec<(usize, Vec<Value>)>>,
    /// Per table: the record indexes in `rows` that are tombstones, whose
    /// rows are deleted rather than written.
    pub(super) deletes: Vec<HashSet<usize>>,
    pub(super) rejected: Vec<Rejected>,
    /// Per table: records counted towards its `batch_size`, and when its
    /// first record arrived (for `linger`).
    counts: Vec<usize>,
    first: Vec<Option<Instant>>,
    /// Last offset read per partition.
    pub(super) last: BTreeMap<(String, i32), i64>,
}

impl Batch {
    pub(super) fn new(tables: usize) -> Self {
        Self {
            records: Vec::new(),
            rows: (0..tables).map(|_| Vec::new()).collect(),
            deletes: (0..tables).map(|_| HashSet::new()).collect(),
            rejected: Vec::new(),
            counts: vec![0; tables],
            first: vec![None; tables],
            last: BTreeMap::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Take the collected batch, leaving an empty one.
    pub(super) fn take(&mut self) -> Batch {
        std::mem::replace(self, Batch::new(self.rows.len()))
    }

    /// Add a record, mapped for each of `tables` (the tables loaded from
    /// its topic).
    pub(super) fn add(&mut self, rec: SourceRecord, tables: &[usize], mappings: &[RecordMapping]) {
        let idx = self.records.len();
        let now = Instant::now();
        for &t in tables {
            match mappings[t].map_record(rec.key.as_deref(), rec.payload.as_deref()) {
                Ok(Mapped::Row(row)) => self.rows[t].push((idx, row)),
                Ok(Mapped::Delete(row)) => {
                    self.rows[t].push((idx, row));
                    self.deletes[t].insert(idx);
                }
                Err(e) => self.rejected.push(Rejected {
                    record: idx,
                    table: t,
                    reason: e.to_string(),
                }),
            }
            self.counts[t] += 1;
            self.first[t].get_or_insert(now);
        }
        let last = self
            .last
            .entry((rec.topic.clone(), rec.partition))
            .or_insert(rec.offset);
        *last = (*last).max(rec.offset);
        self.records.push(rec);
    }

    /// How long until the first table's `linger` runs out, if any table
    /// has records.
    pub(super) fn time_to_flush(&self, tables: &[TableConfig]) -> Option<Duration> {
        tables
            .iter()
            .zip(&self.first)
            .filter_map(|(t, first)| first.map(|f| t.linger.saturating_sub(f.elapsed())))
            .min()
    }

    /// Is some table's batch full or its `linger` over?
    pub(super) fn due(&self, tables: &[TableConfig]) -> bool {
        if self.is_empty() {
            return false;
        }
        tables
            .iter()
            .enumerate()
            .any(|(i, t)| self.counts[i] >= t.batch_size || self.first[i].is_some_and(|f| f.elapsed() >= t.linger))
    }
}
