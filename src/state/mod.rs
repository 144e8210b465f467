//! State stores. Processors see only the [`Store`] trait: a byte-keyed,
//! ordered key-value store with a write cache in front of a [`Backend`]
//! (RocksDB under `weir run`, a BTreeMap under `weir test` and in unit
//! tests).
//!
//! Writes land in the cache, so RocksDB and the changelog topic see one
//! write per key per commit interval, like Kafka Streams' record cache. On
//! commit `weir run` takes the cached writes ([`CachedStore::take_changes`]),
//! sends them to the changelog inside the commit, and applies them to
//! RocksDB only once the commit succeeded ([`rocks::TaskDb::apply`]): the
//! local store is never ahead of what was committed. `weir test` and unit
//! tests apply them at once ([`CachedStore::flush`]).

pub mod rocks;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// The default `--state-dir` of `weir run` and `weir reset`.
pub const DEFAULT_STATE_DIR: &str = "state";

/// An application's local state: `<state_dir>/<application_id>`, holding a
/// directory per task, `process.id` and `.lock`.
pub fn app_dir(state_dir: &Path, application_id: &str) -> PathBuf {
    state_dir.join(application_id)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("state directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("corrupt state in store {store}: {reason}")]
    Corrupt { store: String, reason: String },
}

/// One change to replicate to a changelog topic: `None` is a delete
/// (tombstone).
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Where flushed entries are kept.
pub trait Backend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `from <= key < to`, in key order.
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Entries, StoreError>;
    /// The first key `>= from` for which `skip` is false, stopping early.
    fn first_key(&self, from: &[u8], skip: &dyn Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>, StoreError>;
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError>;
}

/// What processors use.
pub trait Store {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    /// Entries with `from <= key < to`, in key order, including unflushed
    /// writes.
    fn range(&mut self, from: &[u8], to: &[u8]) -> Result<Entries, StoreError>;
    /// The smallest key `>= from`, including unflushed writes.
    fn first_key(&mut self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// In-memory backend (tests and `weir test`).
#[derive(Debug, Default)]
pub struct MemBackend {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Backend for MemBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Result<Entries, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
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

/// A store with a write cache over a backend.
pub struct CachedStore<B> {
    pub backend: B,
    dirty: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<B: Backend> CachedStore<B> {
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            dirty: BTreeMap::new(),
        }
    }

    /// Remove the cached writes and return them, without applying them:
    /// the caller applies them to the backend once they are committed (until
    /// then reads no longer see them, so take them only to commit).
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.dirty).into_iter().collect()
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
        match self.dirty.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.backend.get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.dirty.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.dirty.insert(key, None);
    }

    fn range(&mut self, from: &[u8], to: &[u8]) -> Result<Entries, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .backend
            .range(from, to)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for (k, v) in self
            .dirty
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
        {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    fn first_key(&mut self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let dirty = &self.dirty;
        let stored = self.backend.first_key(from, &|k| matches!(dirty.get(k), Some(None)))?;
        let cached = dirty
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .find(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone());
        Ok(match (stored, cached) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

/// Store values start with this version byte so the encoding can change.
pub const VALUE_VERSION: u8 = 1;

/// Encode a value with the version byte (bincode 2, serde).
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    // Encoding plain serde structs into a Vec cannot fail.
    if let Ok(bytes) = bincode::serde::encode_to_vec(value, bincode::config::standard()) {
        out.extend_from_slice(&bytes);
    }
    out
}

pub fn decode<T: serde::de::DeserializeOwned>(store: &str, bytes: &[u8]) -> Result<T, StoreError> {
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
        assert_eq!(s.range(b"a", b"z").unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
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

    #[test]
    fn repeated_writes_flush_once() {
        let mut s = CachedStore::new(MemBackend::default());
        for i in 0..10u8 {
            s.put(b"k".to_vec(), vec![i]);
        }
        assert_eq!(s.flush().unwrap(), vec![(b"k".to_vec(), Some(vec![9]))]);
    }

    #[test]
    fn versioned_codec_round_trips_and_rejects_unknown_versions() {
        let bytes = encode(&(7u64, "x".to_string()));
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(decode::<(u64, String)>("s", &bytes).unwrap(), (7, "x".to_string()));
        assert!(decode::<(u64, String)>("s", &[9, 1]).is_err());
    }
}
