//! RocksDB backend: one database per task under
//! `<state_dir>/<application_id>/<task>/rocksdb`, one column family per
//! store, plus [`META_CF`] holding the changelog offset each store is at.
//!
//! The offsets live in RocksDB, not in a `.checkpoint` file as in Kafka
//! Streams: [`TaskDb::apply`] writes a commit's store changes and the
//! changelog offsets they reach in one atomic `WriteBatch` (the idea of
//! KIP-892/KIP-1035). Whatever survives a crash (WAL recovery keeps a
//! consistent prefix of batches) is a state together with its true
//! position, so a restart replays only the changelog after it and never
//! wipes the store. No fsync is needed for that: a lost batch takes its
//! offset with it.
//!
//! Restores write without the WAL ([`RestoreWriter`]): a restored batch
//! can always be fetched again from the changelog, so writing it twice
//! (WAL, then SST) only slowed the restore. What keeps such a store
//! consistent is that its data and its offset still go in one
//! `WriteBatch`, so they land in the same memtables, and that the database
//! flushes atomically (`atomic_flush`): every flush, whether asked for
//! ([`TaskDb::flush`]) or RocksDB's own (a full memtable, the write buffer
//! manager over its budget), switches the memtables of every column family
//! at one point between two writes and commits their files to the
//! MANIFEST in one record. A crash therefore keeps a prefix of the
//! restore's batches, data and offset alike, and the restore resumes from
//! the offset that survived. The one thing that must not happen is a
//! write *with* the WAL on a store (a commit's changes and offset) while
//! its restored data is still only in memtables: after a crash the WAL
//! would bring back that later offset without the restored data under
//! it. So a restore ends with [`TaskDb::flush`] and the task processes
//! only after it (`runtime::restore`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, FlushOptions, Options,
    WriteBatch, WriteBufferManager, WriteOptions, DB, DEFAULT_COLUMN_FAMILY_NAME,
};

use super::{Backend, Change, StoreError};

/// Column family of the changelog offsets (not a valid store name).
pub(crate) const META_CF: &str = "weir.meta";

/// The default of `weir run --state-memory`.
pub(crate) const DEFAULT_STATE_MEMORY: usize = 128 << 20;

/// The memtable size of a store (and of a task database's other column
/// families): small, the parking job's state is a few MB per task.
const WRITE_BUFFER_SIZE: usize = 4 << 20;

/// Open files a task database keeps (RocksDB's table cache; the default, -1,
/// keeps every SST file open with its table reader). Files past it are
/// reopened when read.
pub(crate) const MAX_OPEN_FILES_PER_TASK: i32 = 256;

/// The memory budget of every RocksDB database in the process: one LRU block
/// cache shared by every column family of every task (data, index and
/// filter blocks), and a write buffer manager that charges every memtable
/// to that cache and flushes when the memtables reach half the budget. Without
/// it each column family had its own 32 MiB block cache and memtables were
/// bounded per column family only, so memory grew with the number of tasks.
/// Clones share the budget.
#[derive(Clone)]
pub struct StateMemory {
    cache: Cache,
    write_buffers: WriteBufferManager,
    budget: usize,
}

impl StateMemory {
    /// A budget of `bytes` (block cache and memtables together; a soft
    /// limit: blocks pinned by open iterators may exceed it briefly).
    pub fn new(bytes: usize) -> StateMemory {
        let cache = Cache::new_lru_cache(bytes);
        // No stall: a write past the budget triggers flushes instead of
        // blocking the processing thread.
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(bytes / 2, false, cache.clone());
        StateMemory {
            cache,
            write_buffers,
            budget: bytes,
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes held in the shared cache: blocks read, and the memtables
    /// charged to it.
    pub fn usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Bytes of memtables, in every task database.
    pub fn write_buffer_usage(&self) -> usize {
        self.write_buffers.get_usage()
    }

    /// Options of a task database and its column families under this budget.
    fn apply(&self, opts: &mut Options) {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        // Index and filter blocks in the cache (counted, evictable), not on
        // the heap of each open file's table reader, where they grew with
        // every task's data; kept ahead of data blocks in the LRU.
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        // A bloom filter per SST file (10 bits per key: ~1% false
        // positives, 2.4 MiB per million keys), as Kafka Streams' stores
        // have: a lookup of a key that a file does not hold skips that
        // file's data blocks. Without it every miss read and decompressed
        // a data block in each level; a table taking 2 million new keys
        // fell from ~15,000 to ~1,500 records/s past a million keys, 61%
        // of its time in LZ4 (issue 21's big-state bench).
        table.set_bloom_filter(10.0, false);
        // Partitioned indexes and filters (as Kafka Streams' documented
        // BoundedMemoryRocksDBConfig): a file's index and filter are cut
        // into 4 KiB partitions under a small top-level index, pinned, and
        // a lookup reads only the partitions it needs. With one index and
        // one filter block per file (hundreds of KB for a 64 MiB file)
        // a store bigger than the cache evicted them among the data
        // blocks, and an update of a key the store held read and
        // decompressed them again (75% of the processing thread in a
        // profile): 400,000 updates of a 2-million-key table took 249 s,
        // and 18 s with these (issue 21's big-state bench, crash row).
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        // L0 files are looked at on every lookup: their filters and
        // indexes stay in the cache.
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&self.write_buffers);
    }
}

/// The budget every task database of this process opens with.
static STATE_MEMORY: Mutex<Option<StateMemory>> = Mutex::new(None);

/// Set the budget the task databases opened from now on share (`weir run
/// --state-memory`); databases already open keep theirs.
pub(crate) fn set_state_memory(bytes: usize) {
    *crate::support::lock::lock(&STATE_MEMORY) = Some(StateMemory::new(bytes));
}

/// The process's budget ([`DEFAULT_STATE_MEMORY`] unless set).
pub(crate) fn state_memory() -> StateMemory {
    crate::support::lock::lock(&STATE_MEMORY)
        .get_or_insert_with(|| StateMemory::new(DEFAULT_STATE_MEMORY))
        .clone()
}

/// Tries to open a task database whose RocksDB LOCK is held, 50 ms
/// apart (see [`TaskDb::open_in`]).
const LOCK_TRIES: u32 = 40;

/// A store's column family options.
fn cf_options(memory: &StateMemory) -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(WRITE_BUFFER_SIZE);
    // A bloom filter over the whole keys of each memtable (2% of it): a
    // lookup of a key a memtable does not hold, the common case for a
    // table taking new keys, skips that memtable's skip list.
    o.set_memtable_prefix_bloom_ratio(0.02);
    o.set_memtable_whole_key_filtering(true);
    memory.apply(&mut o);
    o
}

/// A task's RocksDB database (clones share it).
#[derive(Clone)]
pub struct TaskDb {
    db: Arc<DB>,
    stores: Arc<Vec<String>>,
    /// Its directory, for errors.
    dir: Arc<str>,
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    format!("changelog/{topic}/{partition}").into_bytes()
}

impl TaskDb {
    /// Open (creating if needed) the database with a column family per
    /// store name, in the process's memory budget ([`state_memory`]).
    pub fn open(dir: &Path, stores: &[String]) -> Result<TaskDb, StoreError> {
        Self::open_in(dir, stores, &state_memory())
    }

    /// [`TaskDb::open`] in the budget `memory`.
    pub fn open_in(dir: &Path, stores: &[String], memory: &StateMemory) -> Result<TaskDb, StoreError> {
        super::create_private_dir(dir).map_err(|e| StoreError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Small per-task footprint: the parking job's state is a few MB.
        opts.set_write_buffer_size(WRITE_BUFFER_SIZE);
        opts.set_max_write_buffer_number(2);
        opts.set_max_open_files(MAX_OPEN_FILES_PER_TASK);
        // Restores write without the WAL: every flush must take all column
        // families at one point, so a store's data and its offset in
        // META_CF reach disk together (see the module docs).
        opts.set_atomic_flush(true);
        memory.apply(&mut opts);
        // RocksDB's default column family (unused) with the same small
        // options: left out, rust-rocksdb opens it with RocksDB's defaults,
        // whose 64 MiB write buffer made every WAL preallocate 64 MiB of
        // disk (the WAL's preallocation block follows the largest write
        // buffer): 64 MiB per task, reserved on the state disk.
        let default = (!stores.iter().any(|s| s == DEFAULT_COLUMN_FAMILY_NAME)).then_some(DEFAULT_COLUMN_FAMILY_NAME);
        let families: Vec<&str> = stores
            .iter()
            .map(String::as_str)
            .chain([META_CF])
            .chain(default)
            .collect();
        // An interactive query reading the task's database when it was
        // closed keeps it open for the few milliseconds the read takes: a
        // task opened again at once waits for it (RocksDB's LOCK file).
        let mut tries = 0;
        let db = loop {
            let cfs = families
                .iter()
                .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(memory)));
            match DB::open_cf_descriptors(&opts, dir, cfs) {
                Ok(db) => break db,
                Err(e) if tries < LOCK_TRIES && e.as_ref().contains("lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(write_error(&dir.display().to_string(), stores, e)),
            }
        };
        Ok(TaskDb {
            db: Arc::new(db),
            stores: Arc::new(stores.to_vec()),
            dir: dir.display().to_string().into(),
        })
    }

    /// A failed write (with where it happened: a full disk is reported
    /// with the path).
    fn failed(&self, e: rocksdb::Error) -> StoreError {
        write_error(&self.dir, &self.stores, e)
    }

    /// Cheap RocksDB properties of every store (no scan, no file access):
    /// (store, [(metric name, value)]).
    pub fn properties(&self) -> Vec<(&str, [(&'static str, u64); 4])> {
        use rocksdb::properties as p;
        let mut out = Vec::new();
        for store in self.stores.iter() {
            let Some(cf) = self.db.cf_handle(store) else { continue };
            let get = |name| self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
            out.push((
                store.as_str(),
                [
                    ("weir_store_estimated_keys", get(p::ESTIMATE_NUM_KEYS)),
                    ("weir_store_live_sst_bytes", get(p::LIVE_SST_FILES_SIZE)),
                    ("weir_store_memtable_bytes", get(p::CUR_SIZE_ALL_MEM_TABLES)),
                    ("weir_store_block_cache_bytes", get(p::BLOCK_CACHE_USAGE)),
                ],
            ));
        }
        out
    }

    /// A handle that does not keep the database open (interactive
    /// queries hold one per task: a task closed and opened again must find
    /// its database closed).
    pub fn downgrade(&self) -> WeakTaskDb {
        WeakTaskDb {
            db: Arc::downgrade(&self.db),
            stores: self.stores.clone(),
            dir: self.dir.clone(),
        }
    }

    pub fn store(&self, name: &str) -> RocksBackend {
        RocksBackend {
            db: self.db.clone(),
            cf: name.to_string(),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
            store: name.to_string(),
            reason: "column family missing".into(),
        })
    }

    /// The changelog offset the stores are at: the next changelog record to
    /// replay. `None` when nothing was ever applied.
    pub fn changelog_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        match self.db.get_cf(self.cf(META_CF)?, offset_key(topic, partition))? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                    store: META_CF.to_string(),
                    reason: format!("changelog offset of {topic}/{partition} is {} bytes", v.len()),
                })?;
                Ok(Some(i64::from_be_bytes(bytes)))
            }
        }
    }

    /// Empty `store` and forget the changelog offset it was at, in one
    /// atomic write (before a full restore). Two writes, as before, left a
    /// store emptied under its old offset when a kill fell between them:
    /// the restart then took the empty store for up to date.
    ///
    /// One range deletion, not a delete per key: the batch stays small
    /// however big the store is.
    pub fn clear(&self, store: &str, changelog: &str, partition: i32) -> Result<(), StoreError> {
        let cf = self.cf(store)?;
        let mut wb = WriteBatch::default();
        let first = self
            .db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .next()
            .transpose()?;
        let last = self.db.iterator_cf(cf, rocksdb::IteratorMode::End).next().transpose()?;
        if let (Some((first, _)), Some((last, _))) = (first, last) {
            // The range's end is exclusive: just past the last key.
            wb.delete_range_cf(cf, &first[..], &crate::state::key_after(&last)[..]);
        }
        wb.delete_cf(self.cf(META_CF)?, offset_key(changelog, partition));
        self.db.write(wb).map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Write every column family's memtables to disk, all at one point
    /// (atomic flush), and wait until they are: what a restore wrote
    /// without the WAL is then on disk with its offsets.
    pub fn flush(&self) -> Result<(), StoreError> {
        let cfs: Vec<&ColumnFamily> = self
            .stores
            .iter()
            .map(String::as_str)
            .chain([META_CF, DEFAULT_COLUMN_FAMILY_NAME])
            .filter_map(|name| self.db.cf_handle(name))
            .collect();
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &opts).map_err(|e| self.failed(e))
    }

    /// A writer of restored changelog records into `store`, each batch
    /// with the offset it reaches, without the WAL (see the module docs:
    /// [`TaskDb::flush`] must follow before anything else writes `store`).
    ///
    /// While it lives the store's memtable may grow to `write_buffer`
    /// bytes (when larger) instead of [`WRITE_BUFFER_SIZE`] (still charged to the
    /// process's budget, whose write buffer manager flushes when all
    /// memtables together exceed it): a restore then writes a few large
    /// files instead of a 4 MiB one per 4 MiB restored, each followed by
    /// a compaction of level 0.
    pub fn restore_writer(
        &self,
        store: &str,
        changelog: &str,
        partition: i32,
        write_buffer: usize,
    ) -> Result<RestoreWriter<'_>, StoreError> {
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        let cf = self.cf(store)?;
        // Each change of options writes an OPTIONS file: only for
        // restores that need it.
        let raised = write_buffer > WRITE_BUFFER_SIZE;
        if raised {
            self.db
                .set_options_cf(cf, &[("write_buffer_size", &write_buffer.to_string())])
                .map_err(|e| self.failed(e))?;
        }
        Ok(RestoreWriter {
            db: self,
            cf,
            raised,
            meta: self.cf(META_CF)?,
            offset_key: offset_key(changelog, partition),
            batch: WriteBatch::default(),
            capacity: 0,
            write,
        })
    }

    /// Apply store changes and the changelog offsets they reach in one
    /// atomic write.
    pub fn apply(&self, changes: &[(&str, &[Change])], offsets: &[(&str, i32, i64)]) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for (store, batch) in changes {
            let cf = self.cf(store)?;
            for (k, v) in batch.iter() {
                match v {
                    Some(v) => wb.put_cf(cf, k, v),
                    None => wb.delete_cf(cf, k),
                }
            }
        }
        let meta = self.cf(META_CF)?;
        for (topic, partition, offset) in offsets {
            wb.put_cf(meta, offset_key(topic, *partition), offset.to_be_bytes());
        }
        self.db.write(wb).map_err(|e| self.failed(e))?;
        Ok(())
    }
}

/// Restored changelog records of one store, written in batches without
/// the WAL, each batch with the changelog offset it reaches
/// ([`TaskDb::restore_writer`]). The records are copied once, from the
/// fetched message into the batch.
pub struct RestoreWriter<'a> {
    db: &'a TaskDb,
    cf: &'a ColumnFamily,
    meta: &'a ColumnFamily,
    offset_key: Vec<u8>,
    batch: WriteBatch,
    /// The size of the last batch written, to allocate the next at once.
    capacity: usize,
    /// Whether the store's write buffer size was raised for the restore.
    raised: bool,
    write: WriteOptions,
}

impl Drop for RestoreWriter<'_> {
    fn drop(&mut self) {
        // Back to the small memtable of a processing store.
        if !self.raised {
            return;
        }
        if let Err(e) = self
            .db
            .db
            .set_options_cf(self.cf, &[("write_buffer_size", &WRITE_BUFFER_SIZE.to_string())])
        {
            tracing::warn!(path = %self.db.dir, error = %e, "could not reset a store's write buffer size after its restore");
        }
    }
}

impl RestoreWriter<'_> {
    /// Add a changelog record: a put, or a delete (a tombstone).
    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(v) => self.batch.put_cf(self.cf, key, v),
            None => self.batch.delete_cf(self.cf, key),
        }
    }

    /// Records added since the last write.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Write the records added so far and `offset` (the next changelog
    /// record to replay) in one atomic write, without the WAL.
    pub fn write(&mut self, offset: i64) -> Result<(), StoreError> {
        self.capacity = self.capacity.max(self.batch.size_in_bytes());
        let mut batch = std::mem::replace(&mut self.batch, WriteBatch::with_capacity_bytes(self.capacity));
        batch.put_cf(self.meta, &self.offset_key, offset.to_be_bytes());
        self.db.db.write_opt(batch, &self.write).map_err(|e| self.db.failed(e))
    }
}

fn write_error(dir: &str, stores: &[String], source: rocksdb::Error) -> StoreError {
    StoreError::Write {
        path: dir.to_string(),
        stores: stores.join(","),
        source,
    }
}

/// A [`TaskDb`] that is not kept open by this handle.
#[derive(Clone)]
pub struct WeakTaskDb {
    db: std::sync::Weak<DB>,
    stores: Arc<Vec<String>>,
    dir: Arc<str>,
}

impl WeakTaskDb {
    /// The database, if its task still has it open.
    pub fn upgrade(&self) -> Option<TaskDb> {
        Some(TaskDb {
            db: self.db.upgrade()?,
            stores: self.stores.clone(),
            dir: self.dir.clone(),
        })
    }
}

/// One column family of a task database.
pub struct RocksBackend {
    db: Arc<DB>,
    cf: String,
}

impl RocksBackend {
    fn handle(&self) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(&self.cf).ok_or_else(|| StoreError::Corrupt {
            store: self.cf.clone(),
            reason: "column family missing".into(),
        })
    }
}

impl Backend for RocksBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.handle()?, key)?)
    }

    fn range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<crate::state::Entries, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let cf = self.handle()?;
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(cf, rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if k.as_ref() >= to || out.len() == limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn first_key(&self, from: &[u8], skip: &dyn Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.handle()?;
        for item in self
            .db
            .iterator_cf(cf, rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward))
        {
            let (k, _) = item?;
            if !skip(&k) {
                return Ok(Some(k.to_vec()));
            }
        }
        Ok(None)
    }

    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        let cf = self.handle()?;
        let mut wb = WriteBatch::default();
        for (k, v) in batch {
            match v {
                Some(v) => wb.put_cf(cf, k, v),
                None => wb.delete_cf(cf, k),
            }
        }
        self.db.write(wb)?;
        Ok(())
    }
}

/// Export a task's store properties as gauges labelled topology, task,
/// store (see docs/metrics.md). A closed task (`open` false: moved to
/// another instance) reports its stores as 0, so sums across instances
/// count each store once.
pub(crate) fn export_properties(db: &TaskDb, app: &str, task: &str, open: bool) {
    for (store, props) in db.properties() {
        let labels = [
            ("topology", app.to_string()),
            ("task", task.to_string()),
            ("store", store.to_string()),
        ];
        for (name, value) in props {
            metrics::gauge!(name, &labels).set(if open { value as f64 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CachedStore, Store};

    #[test]
    fn changes_and_changelog_offsets_are_applied_together() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["w".to_string()];
        {
            let db = TaskDb::open(dir.path(), &names).unwrap();
            assert_eq!(db.changelog_offset("c", 0).unwrap(), None);
            let batch: Vec<Change> = vec![(vec![1], Some(b"x".to_vec())), (vec![2], Some(b"y".to_vec()))];
            db.apply(&[("w", &batch)], &[("c", 0, 42)]).unwrap();
            db.apply(&[("w", &[(vec![2], None)])], &[("c", 0, 43)]).unwrap();
            // A store that is not there fails the whole batch.
            assert!(db.apply(&[("nope", &batch)], &[("c", 0, 99)]).is_err());
        }
        let db = TaskDb::open(dir.path(), &names).unwrap();
        assert_eq!(db.changelog_offset("c", 0).unwrap(), Some(43));
        assert_eq!(db.changelog_offset("c", 1).unwrap(), None);
        assert_eq!(
            db.store("w").range(&[0], &[9], 10).unwrap(),
            vec![(vec![1], b"x".to_vec())]
        );
    }

    #[test]
    fn rocks_store_persists_flushed_writes_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["w".to_string(), "t".to_string()];
        {
            let db = TaskDb::open(dir.path(), &names).unwrap();
            let mut s = CachedStore::new(db.store("w"));
            s.put(vec![0, 1], b"a".to_vec());
            s.put(vec![0, 2], b"b".to_vec());
            s.put(vec![0, 3], b"c".to_vec());
            s.flush().unwrap();
            s.delete(vec![0, 2]);
            s.flush().unwrap();
            s.put(vec![0, 4], b"unflushed".to_vec());
        }
        let db = TaskDb::open(dir.path(), &names).unwrap();
        let mut s = CachedStore::new(db.store("w"));
        assert_eq!(
            s.range(&[0], &[1], 10).unwrap(),
            vec![(vec![0, 1], b"a".to_vec()), (vec![0, 3], b"c".to_vec())]
        );
        assert_eq!(CachedStore::new(db.store("t")).get(&[0, 1]).unwrap(), None);
    }

    /// A full restore begins with this: the data and the offset go in one
    /// write, so no crash can leave an empty store under an old offset;
    /// the other stores keep theirs.
    #[test]
    fn clearing_a_store_forgets_its_data_and_offset_together() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["w".to_string(), "t".to_string()];
        let db = TaskDb::open(dir.path(), &names).unwrap();
        let batch: Vec<Change> = vec![(vec![0], Some(b"a".to_vec())), (vec![255, 255], Some(b"z".to_vec()))];
        db.apply(&[("w", &batch), ("t", &batch)], &[("cw", 0, 10), ("ct", 0, 20)])
            .unwrap();
        db.clear("w", "cw", 0).unwrap();
        assert!(db.store("w").range(&[], &[255, 255, 255], 10).unwrap().is_empty());
        assert_eq!(db.changelog_offset("cw", 0).unwrap(), None);
        assert_eq!(db.store("t").range(&[], &[255, 255, 255], 10).unwrap().len(), 2);
        assert_eq!(db.changelog_offset("ct", 0).unwrap(), Some(20));
        // An empty store clears too.
        db.clear("w", "cw", 0).unwrap();
    }

    /// A task database reserves little disk: its WAL's preallocation
    /// follows the write buffers (4 MiB), not RocksDB's default 64 MiB of
    /// the default column family (64 MiB per task on the state disk).
    #[test]
    fn a_task_database_preallocates_a_small_wal() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let db = TaskDb::open(dir.path(), &["w".to_string()]).unwrap();
        db.apply(&[("w", &[(vec![1], Some(vec![2; 100]))])], &[("c", 0, 1)])
            .unwrap();
        let allocated: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().blocks() * 512)
            .sum();
        assert!(allocated < 16 << 20, "{allocated} bytes allocated on disk");
    }

    /// (capacity, usage) of the block cache of `store`, as RocksDB reports it.
    fn block_cache(db: &TaskDb, store: &str) -> (u64, u64) {
        use rocksdb::properties as p;
        let cf = db.db.cf_handle(store).unwrap();
        let get = |name| db.db.property_int_value_cf(cf, name).unwrap().unwrap();
        (get(p::BLOCK_CACHE_CAPACITY), get(p::BLOCK_CACHE_USAGE))
    }

    #[test]
    fn task_databases_share_one_block_cache_that_their_memtables_are_charged_to() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["w".to_string(), "t".to_string()];
        // An odd size: not RocksDB's default 32 MiB per column family.
        let memory = StateMemory::new(24 << 20);
        let a = TaskDb::open_in(&dir.path().join("a"), &names, &memory).unwrap();
        let b = TaskDb::open_in(&dir.path().join("b"), &names, &memory).unwrap();
        for db in [&a, &b] {
            for store in ["w", "t", META_CF] {
                assert_eq!(block_cache(db, store).0, 24 << 20, "capacity of {store}");
            }
        }
        let before = block_cache(&b, "t").1;
        // 2 MiB into a's memtable: charged to the one cache, so b's column
        // families (another database) see the usage grow.
        let batch: Vec<Change> = (0..2048u32)
            .map(|i| (i.to_be_bytes().to_vec(), Some(vec![7; 1024])))
            .collect();
        a.apply(&[("w", &batch)], &[]).unwrap();
        assert!(
            memory.write_buffer_usage() >= 2 << 20,
            "{}",
            memory.write_buffer_usage()
        );
        let after = block_cache(&b, "t").1;
        assert!(after >= before + (2 << 20), "b's cache usage {before} -> {after}");
        assert_eq!(after as usize, memory.usage());
        assert_eq!(memory.budget(), 24 << 20);
    }

    #[test]
    fn store_properties_report_keys_and_memtable() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["w".to_string(), "t".to_string()];
        let db = TaskDb::open(dir.path(), &names).unwrap();
        let batch: Vec<Change> = (0..100u32)
            .map(|i| (i.to_be_bytes().to_vec(), Some(vec![7; 100])))
            .collect();
        db.apply(&[("w", &batch)], &[]).unwrap();
        let props = db.properties();
        let stores: Vec<&str> = props.iter().map(|(s, _)| *s).collect();
        assert_eq!(stores, ["w", "t"], "one entry per store, not the meta family");
        let get = |store: &str, name: &str| {
            let (_, p) = props.iter().find(|(s, _)| *s == store).unwrap();
            p.iter().find(|(n, _)| *n == name).unwrap().1
        };
        assert_eq!(get("w", "weir_store_estimated_keys"), 100);
        assert_eq!(get("t", "weir_store_estimated_keys"), 0);
        assert!(get("w", "weir_store_memtable_bytes") > get("t", "weir_store_memtable_bytes"));
    }
}
