//! The `.checkpoint` file: which changelog offsets a task's local stores
//! hold. Same text format as Kafka Streams' `OffsetCheckpoint`: a version
//! line `0`, a count, then `<topic> <partition> <offset>` lines. Written to
//! a temporary file and renamed, so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::StoreError;

/// Changelog (topic, partition) → the next offset to restore from.
pub type Offsets = BTreeMap<(String, i32), i64>;

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn write(path: &Path, offsets: &Offsets) -> Result<(), StoreError> {
    let mut text = format!("0\n{}\n", offsets.len());
    for ((topic, partition), offset) in offsets {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Read a checkpoint; a missing file is an empty checkpoint.
pub fn read(path: &Path) -> Result<Offsets, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Offsets::new()),
        Err(e) => return Err(io(path, e)),
    };
    let bad = |reason: &str| StoreError::Corrupt {
        store: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(bad("unknown checkpoint version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| bad("missing count"))?;
    let mut out = Offsets::new();
    for line in lines.take(count) {
        let mut parts = line.split_whitespace();
        let (Some(t), Some(p), Some(o)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("malformed line"));
        };
        let p: i32 = p.parse().map_err(|_| bad("bad partition"))?;
        let o: i64 = o.parse().map_err(|_| bad("bad offset"))?;
        out.insert((t.to_string(), p), o);
    }
    if out.len() != count {
        return Err(bad("fewer entries than announced"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_kafka_streams_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".checkpoint");
        let mut offsets = Offsets::new();
        offsets.insert(("app-store-changelog".into(), 2), 42);
        write(&path, &offsets).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0\n1\napp-store-changelog 2 42\n"
        );
        assert_eq!(read(&path).unwrap(), offsets);
        assert!(read(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(&path, "0\n2\nt 0 1\n").unwrap();
        assert!(read(&path).is_err());
    }
}
