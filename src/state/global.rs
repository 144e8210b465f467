//! Global tables' rows: every instance holds every row of each global
//! table in memory (reference data: a few thousand rows, like the Seoul
//! hotspots), read from its compacted topic before the instance processes
//! and kept up to date while it runs (`runtime::global`); join steps look
//! them up. Kept in memory, not in RocksDB: an instance reads the whole
//! topic at every start anyway (Kafka Streams checkpoints a global store
//! to resume, a refinement for big global tables).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Row = serde_json::Map<String, serde_json::Value>;

/// The rows of each global table of a topology, by key bytes.
#[derive(Debug, Default)]
pub struct GlobalTables {
    tables: Vec<RwLock<HashMap<Vec<u8>, Row>>>,
}

impl GlobalTables {
    pub fn new(count: usize) -> GlobalTables {
        GlobalTables {
            tables: (0..count).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    /// Apply one record of table `table`'s topic: a JSON object value sets
    /// the key's row, no value (a tombstone) deletes it. A value that is
    /// not a JSON object changes nothing and is an error.
    pub fn apply(&self, table: usize, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let Some(rows) = self.tables.get(table) else {
            return Err(format!("no global table {table}"));
        };
        let row = match value {
            None => None,
            Some(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(serde_json::Value::Object(row)) => Some(row),
                Ok(_) => return Err("a global table's value must be a JSON object".into()),
                Err(e) => return Err(format!("invalid JSON: {e}")),
            },
        };
        let mut rows = rows.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match row {
            Some(row) => rows.insert(key.to_vec(), row),
            None => rows.remove(key),
        };
        Ok(())
    }

    /// The values of `fields` (null where the row has none) in the row of
    /// `key`, or `None` without a row.
    pub(crate) fn lookup(
        &self,
        table: usize,
        key: &[u8],
        fields: &[(Arc<String>, String)],
    ) -> Option<Vec<serde_json::Value>> {
        let rows = self
            .tables
            .get(table)?
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let row = rows.get(key)?;
        Some(
            fields
                .iter()
                .map(|(_, f)| row.get(f).cloned().unwrap_or(serde_json::Value::Null))
                .collect(),
        )
    }

    /// Rows of table `table`.
    pub fn rows(&self, table: usize) -> usize {
        self.tables.get(table).map_or(0, |rows| {
            rows.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_set_replaced_and_deleted_and_bad_values_change_nothing() {
        let g = GlobalTables::new(1);
        let f = [
            (Arc::new("N".to_string()), "name".to_string()),
            (Arc::new("X".to_string()), "x".to_string()),
        ];
        g.apply(0, b"a", Some(br#"{"name":"A"}"#)).unwrap();
        assert_eq!(g.lookup(0, b"a", &f), Some(vec!["A".into(), serde_json::Value::Null]));
        g.apply(0, b"a", Some(br#"{"name":"A2","x":1}"#)).unwrap();
        assert_eq!(g.lookup(0, b"a", &f), Some(vec!["A2".into(), 1.into()]));
        assert!(g.apply(0, b"a", Some(b"[1]")).is_err());
        assert!(g.apply(0, b"a", Some(b"{")).is_err());
        assert_eq!(g.lookup(0, b"a", &f).unwrap()[0], "A2");
        g.apply(0, b"a", None).unwrap();
        assert_eq!(g.lookup(0, b"a", &f), None);
        assert_eq!(g.rows(0), 0);
    }
}
