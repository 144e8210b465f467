//! State stores. Processors see only the [`Store`] trait: a byte-keyed,
//! ordered key-value store with a write cache in front of a [`Backend`]
//! (RocksDB under `weir run`, a BTreeMap under `weir test` and in unit
//! tests).
//!
//! Writes land in the cache, so RocksDB sees one write per key per commit
//! interval, like Kafka Streams' record cache. On commit `weir run` takes
//! the cached writes ([`CachedStore::take_changes`]) and applies them to
//! RocksDB only once the commit succeeded ([`rocks::TaskDb::apply`]): the
//! local store is never ahead of what was committed. `weir test` and unit
//! tests apply them at once ([`CachedStore::flush`]).
//!
//! The changelog gets them earlier: under exactly-once `weir run` sends
//! the writes not sent yet ([`CachedStore::send_unsent`]) a few times per
//! interval inside the open transaction, and the rest at the commit, so a
//! commit no longer waits for a whole interval's changelog records to be
//! produced (the exactly-once latency, issue 21). A sent write stays in a
//! second layer of the cache (`sent`) until the commit applies it, so
//! reads see it; the changelog gets at most one record per key per send.

pub(crate) mod global;
pub(crate) mod rocks;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// The default `--state-dir` of `weir run` and `weir reset`.
pub const DEFAULT_STATE_DIR: &str = "state";

/// An application's local state: `<state_dir>/<application_id>`, holding a
/// directory per task, `process.id` and `.lock`.
pub(crate) fn app_dir(state_dir: &Path, application_id: &str) -> PathBuf {
    state_dir.join(application_id)
}

/// Create `dir` (and missing parents) readable by its owner only (0700):
/// it holds every record of the state stores. An existing `dir` is set to
/// 0700 too (weir owns it); existing parents, such as a `--state-dir`
/// mount point, are left as they are.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Open (create) a file of the state directory for writing without
/// following a symbolic link in its last component (`O_NOFOLLOW`): a link
/// planted there (`.lock` → another user's file) fails with ELOOP instead
/// of making weir create or truncate the file it points to. Not
/// truncated: the caller decides.
pub(crate) fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("state directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("corrupt state in store {store}: {reason}")]
    Corrupt { store: String, reason: String },
    /// A write to a task database (or its opening) failed: where, and
    /// which stores it holds.
    #[error("rocksdb at {path} (stores {stores}): {source}")]
    Write {
        path: String,
        stores: String,
        source: rocksdb::Error,
    },
}

impl StoreError {
    /// `Some(errno name)` when this failed because the state's filesystem
    /// is full (see [`disk_full_io`], [`disk_full_message`]).
    pub fn disk_full(&self) -> Option<&'static str> {
        match self {
            StoreError::Rocks(e) | StoreError::Write { source: e, .. } => disk_full_message(e.as_ref()),
            StoreError::Io { source, .. } => disk_full_io(source),
            StoreError::Corrupt { .. } => None,
        }
    }

    /// The path and the stores it concerns, when known.
    pub fn location(&self) -> (Option<&str>, Option<&str>) {
        match self {
            StoreError::Write { path, stores, .. } => (Some(path), Some(stores)),
            StoreError::Io { path, .. } => (Some(path), None),
            StoreError::Corrupt { store, .. } => (None, Some(store)),
            StoreError::Rocks(_) => (None, None),
        }
    }
}

/// ENOSPC (no space left on device) and EDQUOT (disk quota exceeded) on
/// Linux.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// `Some(errno name)` when an I/O error says the filesystem is full: no
/// space left, or the quota used up (both clear once space is freed).
pub(crate) fn disk_full_io(e: &std::io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(ENOSPC) => Some("ENOSPC"),
        Some(EDQUOT) => Some("EDQUOT"),
        Some(_) => None,
        None if e.kind() == std::io::ErrorKind::StorageFull => Some("ENOSPC"),
        None => disk_full_message(&e.to_string()),
    }
}

/// `Some(errno name)` when an error message (RocksDB's `Status`, whose
/// `NoSpace` subcode reads "No space left on device" and whose POSIX
/// errors carry `strerror`) says the filesystem is full. RocksDB keeps
/// answering writes with that error while it is in its background-error
/// (read-only) state after a failed flush or compaction.
pub(crate) fn disk_full_message(msg: &str) -> Option<&'static str> {
    if msg.contains("No space left on device") || msg.contains("ENOSPC") {
        Some("ENOSPC")
    } else if msg.contains("Disk quota exceeded") || msg.contains("EDQUOT") {
        Some("EDQUOT")
    } else {
        None
    }
}

/// One change to replicate to a changelog topic: `None` is a delete
/// (tombstone).
pub(crate) type Change = (Vec<u8>, Option<Vec<u8>>);

/// Key-value pairs in key order.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Where flushed entries are kept.
pub trait Backend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The first `limit` entries with `from <= key < to`, in key order.
    fn range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, StoreError>;
    /// The first key `>= from` for which `skip` is false, stopping early.
    fn first_key(&self, from: &[u8], skip: &dyn Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>, StoreError>;
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError>;
}

/// What processors use.
pub(crate) trait Store {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    /// The first `limit` entries with `from <= key < to`, in key order,
    /// including unflushed writes. Bounded so that a scan over a large
    /// store (closing a day of windows after an outage) holds one chunk in
    /// memory at a time: fewer than `limit` entries means the range is
    /// exhausted.
    fn range(&mut self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, StoreError>;
    /// The smallest key `>= from`, including unflushed writes.
    fn first_key(&mut self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// In-memory backend (tests and `weir test`).
#[derive(Debug, Default)]
pub(crate) struct MemBackend {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Backend for MemBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn first_key(&self, from: &[u8], skip: &dyn Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .map(|(k, _)| k)
            .find(|k| !skip(k))
            .cloned())
    }

    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        for (k, v) in batch {
            match v {
                Some(v) => self.map.insert(k.clone(), v.clone()),
                None => self.map.remove(k),
            };
        }
        Ok(())
    }
}

/// Cached writes by key: `None` is a delete.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A store with a write cache over a backend, in two layers: writes not
/// sent to the changelog yet (`dirty`), over writes sent but not applied
/// to the backend yet (`sent`); reads see both.
pub struct CachedStore<B> {
    pub backend: B,
    dirty: Writes,
    sent: Writes,
    /// Bytes of keys and values held in both layers (see
    /// [`CachedStore::cached_bytes`]).
    bytes: usize,
}

/// What one cached write holds: its key and value bytes, plus what the
/// map and the two allocations cost around them (a rough, fixed figure).
fn write_size(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    const OVERHEAD: usize = 64;
    key.len() + value.as_ref().map_or(0, Vec::len) + OVERHEAD
}

/// Insert a write into a layer, keeping `bytes` right.
fn insert_write(layer: &mut Writes, bytes: &mut usize, key: Vec<u8>, value: Option<Vec<u8>>) {
    let key_len = key.len();
    *bytes += write_size(&key, &value);
    if let Some(old) = layer.insert(key, value) {
        // The replaced write, whose key had the same length.
        *bytes -= key_len + write_size(&[], &old);
    }
}

impl<B: Backend> CachedStore<B> {
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            dirty: BTreeMap::new(),
            sent: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// Roughly how much memory the cached writes take (keys, values and a
    /// fixed overhead per write): `weir run` commits early when its tasks'
    /// caches outgrow their share of the state memory.
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// Hand every write not sent yet to `send` (in key order, the newest
    /// value of each key), then keep them as sent: reads still see them,
    /// and [`CachedStore::take_changes`] still returns them. Returns how
    /// many were handed. On an error the writes handed so far count as
    /// sent (the caller aborts and drops the store).
    pub fn send_unsent<E>(&mut self, mut send: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>) -> Result<usize, E> {
        let unsent = std::mem::take(&mut self.dirty);
        let n = unsent.len();
        for (k, v) in unsent {
            let sent = send(&k, v.as_deref());
            // Moved from one layer to the other: counted again by the
            // insert, so taken off first.
            self.bytes -= write_size(&k, &v);
            insert_write(&mut self.sent, &mut self.bytes, k, v);
            sent?;
        }
        Ok(n)
    }

    /// Remove every cached write, sent or not, and return them (the newest
    /// per key, in key order) without applying them: the caller applies
    /// them to the backend once they are committed (until then reads no
    /// longer see them, so take them only to commit).
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut all = std::mem::take(&mut self.sent);
        all.append(&mut self.dirty);
        self.bytes = 0;
        all.into_iter().collect()
    }

    /// The cached write of `key`, if any: `Some(None)` is a delete.
    fn cached(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.dirty.get(key).or_else(|| self.sent.get(key))
    }

    /// Apply the cached writes to the backend and return them for the
    /// changelog.
    pub fn flush(&mut self) -> Result<Vec<Change>, StoreError> {
        let batch = self.take_changes();
        if !batch.is_empty() {
            self.backend.write(&batch)?;
        }
        Ok(batch)
    }
}

impl<B: Backend> Store for CachedStore<B> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cached(key) {
            Some(v) => Ok(v.clone()),
            None => self.backend.get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        insert_write(&mut self.dirty, &mut self.bytes, key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        insert_write(&mut self.dirty, &mut self.bytes, key, None);
    }

    fn range(&mut self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        let mut start = from.to_vec();
        // Chunk by chunk of the backend: a chunk of `limit` stored entries
        // covers the keys up to its last one, merged there with the cached
        // writes (a cached delete removes a stored entry, so a merged chunk
        // may come out shorter and the next one is read).
        while out.len() < limit && start.as_slice() < to {
            let stored = self.backend.range(&start, to, limit)?;
            let upper = match stored.last() {
                Some((last, _)) if stored.len() == limit => key_after(last),
                _ => to.to_vec(),
            };
            let mut merged: Writes = stored.into_iter().map(|(k, v)| (k, Some(v))).collect();
            let bounds = (Bound::Included(start.as_slice()), Bound::Excluded(upper.as_slice()));
            // The older layer first: a newer write of a key replaces it.
            for layer in [&self.sent, &self.dirty] {
                for (k, v) in layer.range::<[u8], _>(bounds) {
                    merged.insert(k.clone(), v.clone());
                }
            }
            let room = limit - out.len();
            out.extend(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(room));
            start = upper;
        }
        Ok(out)
    }

    fn first_key(&mut self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let this = &*self;
        let stored = this
            .backend
            .first_key(from, &|k| matches!(this.cached(k), Some(None)))?;
        // The first key of either layer whose newest write is a put.
        let cached = [&self.dirty, &self.sent]
            .into_iter()
            .filter_map(|layer| {
                layer
                    .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
                    .find(|(k, _)| matches!(self.cached(k), Some(Some(_))))
                    .map(|(k, _)| k.clone())
            })
            .min();
        Ok(match (stored, cached) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

/// The smallest key greater than `key` (in byte order).
pub(crate) fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Store values start with this version byte so the encoding can change.
pub(crate) const VALUE_VERSION: u8 = 1;

/// Encode a value with the version byte (bincode 2, serde).
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    // Encoding plain serde structs into a Vec cannot fail.
    if let Ok(bytes) = bincode::serde::encode_to_vec(value, bincode::config::standard()) {
        out.extend_from_slice(&bytes);
    }
    out
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(store: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        store: store.to_string(),
        reason,
    };
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => bincode::serde::decode_from_slice(rest, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| corrupt(e.to_string())),
        Some((v, _)) => Err(corrupt(format!("unknown value version {v}"))),
        None => Err(corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_shadows_backend_until_flush() {
        let mut s = CachedStore::new(MemBackend::default());
        s.put(b"a".to_vec(), b"1".to_vec());
        s.put(b"b".to_vec(), b"2".to_vec());
        assert!(s.backend.map.is_empty());
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        let changes = s.flush().unwrap();
        assert_eq!(changes.len(), 2);
        s.delete(b"a".to_vec());
        assert_eq!(s.get(b"a").unwrap(), None);
        assert_eq!(s.range(b"a", b"z", 10).unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
        let changes = s.flush().unwrap();
        assert_eq!(changes, vec![(b"a".to_vec(), None)]);
        assert!(!s.backend.map.contains_key(b"a".as_slice()));
    }

    #[test]
    fn first_key_sees_cache_and_skips_deleted() {
        let mut s = CachedStore::new(MemBackend::default());
        s.put(b"b".to_vec(), vec![1]);
        s.put(b"d".to_vec(), vec![1]);
        s.flush().unwrap();
        assert_eq!(s.first_key(b"a").unwrap(), Some(b"b".to_vec()));
        s.delete(b"b".to_vec());
        assert_eq!(s.first_key(b"a").unwrap(), Some(b"d".to_vec()), "deleted in the cache");
        s.put(b"c".to_vec(), vec![1]);
        assert_eq!(s.first_key(b"a").unwrap(), Some(b"c".to_vec()), "unflushed write");
        assert_eq!(s.first_key(b"e").unwrap(), None);
    }

    #[test]
    fn taken_changes_are_not_applied() {
        let mut s = CachedStore::new(MemBackend::default());
        s.put(b"a".to_vec(), b"1".to_vec());
        assert_eq!(s.take_changes(), vec![(b"a".to_vec(), Some(b"1".to_vec()))]);
        assert!(s.dirty.is_empty());
        assert!(s.backend.map.is_empty(), "the caller applies them after its commit");
        assert_eq!(s.get(b"a").unwrap(), None);
    }

    /// Writes sent to the changelog between commits stay visible until the
    /// commit takes them; a later write of a key is sent again and wins;
    /// the commit takes each key's newest write, sent or not, once.
    #[test]
    fn sent_writes_stay_visible_until_taken_and_newer_writes_win() {
        let mut s = CachedStore::new(MemBackend::default());
        s.put(b"a".to_vec(), b"0".to_vec());
        s.put(b"c".to_vec(), b"0".to_vec());
        s.flush().unwrap();
        s.put(b"a".to_vec(), b"1".to_vec());
        s.put(b"b".to_vec(), b"1".to_vec());
        s.delete(b"c".to_vec());
        let mut got = Vec::new();
        let n = s
            .send_unsent(|k, v| {
                got.push((k.to_vec(), v.map(<[u8]>::to_vec)));
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"1".to_vec())),
                (b"c".to_vec(), None)
            ]
        );
        assert_eq!(s.send_unsent(|_, _| Err("nothing new to send")), Ok(0));
        assert_eq!(s.backend.map.get(b"a".as_slice()), Some(&b"0".to_vec()), "not applied");
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"c").unwrap(), None, "a sent delete hides the stored row");
        assert_eq!(s.first_key(b"").unwrap(), Some(b"a".to_vec()));
        assert_eq!(s.first_key(b"b\0").unwrap(), None, "c is deleted");
        // Newer writes after the send: the range shows the newest layer.
        s.put(b"c".to_vec(), b"2".to_vec());
        s.delete(b"b".to_vec());
        assert_eq!(
            s.range(b"", b"z", 10).unwrap(),
            vec![(b"a".to_vec(), b"1".to_vec()), (b"c".to_vec(), b"2".to_vec())]
        );
        assert_eq!(s.first_key(b"b").unwrap(), Some(b"c".to_vec()));
        let mut again = Vec::new();
        s.send_unsent(|k, v| {
            again.push((k.to_vec(), v.map(<[u8]>::to_vec)));
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(again, vec![(b"b".to_vec(), None), (b"c".to_vec(), Some(b"2".to_vec()))]);
        s.put(b"d".to_vec(), b"3".to_vec());
        assert_eq!(
            s.take_changes(),
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), None),
                (b"c".to_vec(), Some(b"2".to_vec())),
                (b"d".to_vec(), Some(b"3".to_vec()))
            ]
        );
        assert_eq!(s.get(b"a").unwrap(), Some(b"0".to_vec()), "taken: back to the backend");
        assert_eq!(s.cached_bytes(), 0);
    }

    /// The cache's size follows its writes: a key written again counts
    /// once per layer with its newest value, and the commit empties it.
    #[test]
    fn cached_bytes_count_each_key_once_per_layer() {
        let mut s = CachedStore::new(MemBackend::default());
        let one = write_size(b"key", &Some(vec![0; 100]));
        s.put(b"key".to_vec(), vec![0; 10]);
        s.put(b"key".to_vec(), vec![0; 100]);
        assert_eq!(s.cached_bytes(), one);
        s.send_unsent(|_, _| Ok::<_, ()>(())).unwrap();
        assert_eq!(s.cached_bytes(), one, "moved, not copied");
        s.put(b"key".to_vec(), vec![0; 100]);
        assert_eq!(s.cached_bytes(), 2 * one, "in both layers until the next send");
        s.send_unsent(|_, _| Ok::<_, ()>(())).unwrap();
        assert_eq!(s.cached_bytes(), one);
        s.delete(b"key".to_vec());
        assert_eq!(s.cached_bytes(), one + write_size(b"key", &None));
        s.flush().unwrap();
        assert_eq!(s.cached_bytes(), 0);
    }

    #[test]
    fn repeated_writes_flush_once() {
        let mut s = CachedStore::new(MemBackend::default());
        for i in 0..10u8 {
            s.put(b"k".to_vec(), vec![i]);
        }
        assert_eq!(s.flush().unwrap(), vec![(b"k".to_vec(), Some(vec![9]))]);
    }

    #[test]
    fn disk_full_errors_are_told_from_others() {
        use std::io::{Error, ErrorKind};
        assert_eq!(disk_full_io(&Error::from_raw_os_error(28)), Some("ENOSPC"));
        assert_eq!(disk_full_io(&Error::from_raw_os_error(122)), Some("EDQUOT"));
        assert_eq!(disk_full_io(&Error::from(ErrorKind::StorageFull)), Some("ENOSPC"));
        assert_eq!(disk_full_io(&Error::from_raw_os_error(5)), None, "EIO");
        assert_eq!(disk_full_io(&Error::from_raw_os_error(30)), None, "EROFS");
        assert_eq!(disk_full_io(&Error::from(ErrorKind::PermissionDenied)), None);
        // RocksDB's statuses as they read (a failed WAL append; a write
        // while in the background-error state after a failed flush).
        for msg in [
            "IO error: No space left on device: While appending to file: /s/app/0_1/rocksdb/000012.log: No space left on device",
            "IO error: No space left on device: While open a file for appending: /s/app/1_0/rocksdb/000009.sst: No space left on device",
        ] {
            assert_eq!(disk_full_message(msg), Some("ENOSPC"), "{msg}");
        }
        assert_eq!(disk_full_message("IO error: Disk quota exceeded"), Some("EDQUOT"));
        assert_eq!(disk_full_message("IO error: Input/output error"), None);
        assert_eq!(disk_full_message("Corruption: block checksum mismatch"), None);
        let e = StoreError::Io {
            path: "/s/app/0_0".into(),
            source: Error::from_raw_os_error(28),
        };
        assert_eq!(e.disk_full(), Some("ENOSPC"));
        assert_eq!(e.location().0, Some("/s/app/0_0"));
        let corrupt = StoreError::Corrupt {
            store: "w".into(),
            reason: "No space left on device".into(),
        };
        assert_eq!(corrupt.disk_full(), None, "corrupt data is not a full disk");
    }

    /// A bounded range over stored entries and cached writes (puts and
    /// deletes on both sides of every chunk border) returns exactly the
    /// first `limit` entries of the unbounded merged view, and walking it
    /// chunk by chunk visits every live entry once.
    #[test]
    fn a_bounded_range_is_the_start_of_the_merged_view() {
        // The deletes in the same cache layer as the puts, or in the sent
        // layer under them.
        for send_between in [false, true] {
            bounded_ranges_of_the_merged_view(send_between);
        }
    }

    fn bounded_ranges_of_the_merged_view(send_between: bool) {
        let mut s = CachedStore::new(MemBackend::default());
        let key = |i: u32| i.to_be_bytes().to_vec();
        for i in 0..100 {
            s.put(key(i), vec![1]);
        }
        s.flush().unwrap();
        for i in (0..100).step_by(3) {
            s.delete(key(i));
        }
        if send_between {
            assert_eq!(s.send_unsent(|_, _| Ok::<_, ()>(())), Ok(34));
        }
        for i in (1..120).step_by(7) {
            s.put(key(i), vec![2]);
        }
        let all = s.range(&key(0), &key(200), usize::MAX).unwrap();
        // 34 deleted (0, 3, .., 99), 5 of them put again (15, 36, 57, 78,
        // 99), 2 new (106, 113).
        assert_eq!(all.len(), 100 - 34 + 5 + 2);
        for limit in [1, 2, 5, 10, 33, 66, 69, 500] {
            assert_eq!(
                s.range(&key(0), &key(200), limit).unwrap(),
                all[..limit.min(all.len())],
                "{limit}"
            );
            let mut walked = Vec::new();
            let mut from = key(0);
            loop {
                let chunk = s.range(&from, &key(200), limit).unwrap();
                let done = chunk.len() < limit;
                if let Some((last, _)) = chunk.last() {
                    from = key_after(last);
                }
                walked.extend(chunk);
                if done {
                    break;
                }
            }
            assert_eq!(walked, all, "walked in chunks of {limit}");
        }
        assert!(s.range(&key(5), &key(5), 10).unwrap().is_empty());
        assert!(s.range(&key(0), &key(200), 0).unwrap().is_empty());
    }

    #[test]
    fn versioned_codec_round_trips_and_rejects_unknown_versions() {
        let bytes = encode(&(7u64, "x".to_string()));
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(decode::<(u64, String)>("s", &bytes).unwrap(), (7, "x".to_string()));
        assert!(decode::<(u64, String)>("s", &[9, 1]).is_err());
    }
}
