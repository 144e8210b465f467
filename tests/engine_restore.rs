//! Restoring a store from its changelog against the real broker, while
//! another producer's transaction is open on it: what a crashed instance
//! leaves when its successor has another transactional id (its state
//! directory was lost), until the broker times that transaction out.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use weir::Backend;
use weir::RuntimeError;
use weir::TaskDb;
use weir::{changelog_reader, restore, StoreRef};

fn transactional(id: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", id)
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

fn send(p: &BaseProducer, topic: &str, key: &str, value: &str) {
    p.send(BaseRecord::to(topic).partition(0).key(key).payload(value))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn restore_reads_past_another_producers_open_transaction() {
    let changelog = unique("it-restore-changelog");
    create_topic(&changelog, 1);
    // A: a crashed instance's transaction, left open (offset 0).
    let zombie = transactional(&unique("it-restore-a"));
    zombie.begin_transaction().unwrap();
    send(&zombie, &changelog, "a", "zombie");
    // B: its successor, under another transactional id, commits after it
    // (offsets 1 and 2, its commit marker at 3).
    let successor = transactional(&unique("it-restore-b"));
    successor.begin_transaction().unwrap();
    send(&successor, &changelog, "b", "1");
    send(&successor, &changelog, "c", "2");
    successor.commit_transaction(Duration::from_secs(30)).unwrap();
    // The coordinator writes the commit marker after commit_transaction
    // returns (asynchronously, to each partition): wait for it.
    wait_for("B's commit marker", Duration::from_secs(30), || {
        watermarks(&changelog, 0).1 == 4
    });
    assert_eq!(
        watermarks(&changelog, 0).1,
        4,
        "a record of A, two of B and B's commit marker"
    );

    let dir = tempfile::tempdir().unwrap();
    let store = "s".to_string();
    let r = changelog_reader(&bootstrap(), &unique("it-restore")).unwrap();
    let s = StoreRef {
        task: "0_0",
        store: &store,
        changelog: &changelog,
        partition: 0,
    };
    let cancel = AtomicBool::new(false);

    // 1. B's instance applied its commit locally (offset 4) and crashed; the
    // next start finds the store at 4 while A's transaction is still open.
    // The last stable offset is 0 there: taken for the end, the store looked
    // ahead of its changelog and was rebuilt up to 0, without B's records.
    let db = TaskDb::open(&dir.path().join("applied"), std::slice::from_ref(&store)).unwrap();
    let b = vec![
        (b"b".to_vec(), Some(b"1".to_vec())),
        (b"c".to_vec(), Some(b"2".to_vec())),
    ];
    db.apply(&[(store.as_str(), &b)], &[(&changelog, 0, 4)]).unwrap();
    let done = restore(&r, "it", &db, &s, &cancel).unwrap();
    assert!(!done.full, "the store at the changelog's end was rebuilt: {done:?}");
    assert_eq!(db.store(&store).get(b"b").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(db.store(&store).get(b"c").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(db.changelog_offset(&changelog, 0).unwrap(), Some(4));
    drop(db);

    // 2. A lost state directory: restored from the start, which waits until
    // A's transaction is resolved (aborted here after 2 s) and then holds
    // B's records and not A's.
    let db = TaskDb::open(&dir.path().join("lost"), std::slice::from_ref(&store)).unwrap();
    let aborter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        zombie.abort_transaction(Duration::from_secs(30)).unwrap();
    });
    let began = Instant::now();
    let done = restore(&r, "it", &db, &s, &cancel).unwrap();
    aborter.join().unwrap();
    assert!(done.full);
    assert!(
        began.elapsed() >= Duration::from_millis(1500),
        "the restore ended before A's transaction was resolved ({:?})",
        began.elapsed()
    );
    assert_eq!(done.records, 2, "B's two records");
    assert_eq!(db.store(&store).get(b"a").unwrap(), None, "A's aborted record");
    assert_eq!(db.store(&store).get(b"b").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(db.store(&store).get(b"c").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(db.changelog_offset(&changelog, 0).unwrap() >= Some(4));
    drop(db);
    drop(successor);
    delete_topics(&[&changelog]);
}

/// The changelog was deleted and created again (or truncated) under a
/// store that had reached offset 500 of it. Restoring from what is there
/// silently started over from nothing, and the partial windows that
/// followed overwrote correct rows downstream: weir must refuse, say why
/// and what to do, and leave the state as it was.
#[test]
fn a_store_ahead_of_its_changelog_refuses_to_restore_and_keeps_its_state() {
    let changelog = unique("it-restore-recreated");
    create_topic(&changelog, 1);
    let p = producer();
    produce(&p, &changelog, 0, 1, Some(b"x"), Some(b"new"));
    produce(&p, &changelog, 0, 2, Some(b"y"), Some(b"new"));
    flush(&p);

    let dir = tempfile::tempdir().unwrap();
    let store = "s".to_string();
    let db = TaskDb::open(dir.path(), std::slice::from_ref(&store)).unwrap();
    let kept = vec![(b"k".to_vec(), Some(b"old".to_vec()))];
    db.apply(&[(store.as_str(), &kept)], &[(&changelog, 0, 500)]).unwrap();

    let r = changelog_reader(&bootstrap(), &unique("it-restore")).unwrap();
    let s = StoreRef {
        task: "0_0",
        store: &store,
        changelog: &changelog,
        partition: 0,
    };
    let err = restore(&r, "it", &db, &s, &AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::ChangelogBehind(b) if b.stored == 500 && b.end == 2
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("weir reset") && msg.contains(&changelog), "no hint: {msg}");
    assert_eq!(db.store(&store).get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(db.store(&store).get(b"x").unwrap(), None);
    assert_eq!(db.changelog_offset(&changelog, 0).unwrap(), Some(500));
    delete_topics(&[&changelog]);
}

/// Deletes the records of `topic` [0] before `before` (what retention of a
/// `compact,delete` window changelog does), as the broker's DeleteRecords.
fn delete_records_before(topic: &str, before: i64) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{Offset, TopicPartitionList};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(before)).unwrap();
    let done = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin.delete_records(&tpl, &AdminOptions::new()))
        .unwrap();
    for e in done.elements() {
        e.error().unwrap();
    }
}

/// A store whose changelog offset lies before the changelog's start (its
/// records there were deleted) is cleared and restored from the start:
/// what it held before is not kept beside a tail it never saw, and the
/// restore does not jump to the end (the restore consumer's
/// `auto.offset.reset=error` and the clear that removes data and offset
/// together).
#[test]
fn a_store_behind_its_changelogs_start_is_cleared_and_restored_from_the_start() {
    let changelog = unique("it-restore-gone");
    create_topic(&changelog, 1);
    let p = producer();
    for i in 0..10 {
        let key = format!("k{i}");
        produce(&p, &changelog, 0, 1 + i, Some(key.as_bytes()), Some(b"v"));
    }
    flush(&p);
    delete_records_before(&changelog, 6);
    assert_eq!(watermarks(&changelog, 0), (6, 10));

    let dir = tempfile::tempdir().unwrap();
    let store = "s".to_string();
    let db = TaskDb::open(dir.path(), std::slice::from_ref(&store)).unwrap();
    // What the store held at offset 3, when it last stopped.
    let stale = vec![
        (b"k1".to_vec(), Some(b"v".to_vec())),
        (b"stale".to_vec(), Some(b"old".to_vec())),
    ];
    db.apply(&[(store.as_str(), &stale)], &[(&changelog, 0, 3)]).unwrap();

    let r = changelog_reader(&bootstrap(), &unique("it-restore")).unwrap();
    let s = StoreRef {
        task: "0_0",
        store: &store,
        changelog: &changelog,
        partition: 0,
    };
    restore(&r, "it", &db, &s, &AtomicBool::new(false)).unwrap();
    let st = db.store(&store);
    assert_eq!(st.get(b"stale").unwrap(), None, "the old state was kept");
    assert_eq!(st.get(b"k1").unwrap(), None, "the old state was kept");
    for i in 6..10 {
        let key = format!("k{i}");
        assert_eq!(st.get(key.as_bytes()).unwrap().as_deref(), Some(&b"v"[..]), "{key}");
    }
    assert_eq!(db.changelog_offset(&changelog, 0).unwrap(), Some(10));
    delete_topics(&[&changelog]);
}

/// The changelog of [`a_full_restore_killed_midway_resumes_to_an_exact_store`]:
/// record `i` at offset `i` puts `k{i % KEYS}` to a value naming `i`, or
/// (every 7th) deletes it, so the store after any prefix of the changelog
/// tells which prefix it is.
const KILL_RECORDS: i64 = 600_000;
const KILL_KEYS: i64 = 100_000;

fn kill_record(i: i64) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = format!("k{:06}", i % KILL_KEYS).into_bytes();
    let value = (i % 7 != 3).then(|| format!("{i:012}:{}", "v".repeat(100)).into_bytes());
    (key, value)
}

/// What the store holds after replaying offsets `0..end`.
fn store_after(end: i64) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = std::collections::BTreeMap::new();
    for i in 0..end {
        match kill_record(i) {
            (k, Some(v)) => m.insert(k, v),
            (k, None) => m.remove(&k),
        };
    }
    m
}

fn store_contents(db: &TaskDb, store: &str) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    db.store(store)
        .range(&[], &[0xff; 8], usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

/// The child of [`a_full_restore_killed_midway_resumes_to_an_exact_store`]
/// (this test binary run again with `WEIR_TEST_RESTORE_CHILD=dir,changelog`):
/// restores the store in `dir` from `changelog` until it is SIGKILLed.
fn restore_child(spec: &str) {
    let (dir, changelog) = spec.split_once(',').unwrap();
    let store = "s".to_string();
    let db = TaskDb::open(Path::new(dir), std::slice::from_ref(&store)).unwrap();
    let r = changelog_reader(&bootstrap(), &unique("it-restore-child")).unwrap();
    let s = StoreRef {
        task: "0_0",
        store: &store,
        changelog,
        partition: 0,
    };
    println!("child: restoring");
    let done = restore(&r, "it", &db, &s, &AtomicBool::new(false)).unwrap();
    println!("child: restore finished before the kill: {done:?}");
}

/// A full restore (state directory lost) SIGKILLed in its middle, after
/// RocksDB flushed some of it on its own: restored batches skip the WAL,
/// so what survives is whatever the atomic flushes wrote, and it must be a
/// store together with its true offset (every store column family and the
/// offsets flushed at one point). The restart resumes from that offset and
/// ends with exactly the store the whole changelog gives, computed here
/// from the records produced, not from weir.
#[test]
fn a_full_restore_killed_midway_resumes_to_an_exact_store() {
    if let Ok(spec) = std::env::var("WEIR_TEST_RESTORE_CHILD") {
        return restore_child(&spec);
    }
    let changelog = unique("it-restore-killed");
    create_topic(&changelog, 1);
    let p = producer();
    for i in 0..KILL_RECORDS {
        let (k, v) = kill_record(i);
        produce(&p, &changelog, 0, 1_000 + i, Some(&k), v.as_deref());
    }
    flush(&p);
    assert_eq!(watermarks(&changelog, 0), (0, KILL_RECORDS));

    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_full_restore_killed_midway_resumes_to_an_exact_store",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("WEIR_TEST_RESTORE_CHILD", format!("{},{changelog}", db_dir.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once RocksDB has flushed part of the restore on its own (an
    // SST file appeared and the MANIFEST recorded it: it grew since before
    // the file appeared), with newer batches unflushed in the memtables.
    let files = |d: &Path| -> (bool, u64) {
        let mut sst = false;
        let mut manifest = 0;
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            sst |= name.ends_with(".sst");
            if name.starts_with("MANIFEST-") {
                manifest += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        (sst, manifest)
    };
    let (mut before_flush, deadline) = (0, Instant::now() + Duration::from_secs(120));
    loop {
        let (sst, manifest) = files(&db_dir);
        if !sst {
            before_flush = manifest;
        }
        if (sst && manifest > before_flush) || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no flush within 120 s of the restore");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        !status.success() && !out.contains("finished before the kill"),
        "{status}: {out}"
    );

    // What survived: a prefix of the changelog with its offset.
    let store = "s".to_string();
    let db = TaskDb::open(&db_dir, std::slice::from_ref(&store)).unwrap();
    let at = db.changelog_offset(&changelog, 0).unwrap();
    eprintln!("test: killed mid-restore; the store is at offset {at:?} of {KILL_RECORDS}");
    let survived = store_contents(&db, &store);
    let Some(at) = at else {
        panic!(
            "no offset survived a kill after a flush, and {} keys did: data flushed without its offset",
            survived.len()
        )
    };
    assert!(at > 0 && at < KILL_RECORDS, "offset {at}");
    assert!(
        survived == store_after(at),
        "the store does not hold what offsets 0..{at} give: {} keys vs {}",
        survived.len(),
        store_after(at).len()
    );

    // The restart resumes from there and ends exact.
    let r = changelog_reader(&bootstrap(), &unique("it-restore")).unwrap();
    let s = StoreRef {
        task: "0_0",
        store: &store,
        changelog: &changelog,
        partition: 0,
    };
    let done = restore(&r, "it", &db, &s, &AtomicBool::new(false)).unwrap();
    assert!(!done.full, "restored from the start again: {done:?}");
    assert_eq!(done.records, KILL_RECORDS - at);
    assert_eq!(db.changelog_offset(&changelog, 0).unwrap(), Some(KILL_RECORDS));
    assert!(
        store_contents(&db, &store) == store_after(KILL_RECORDS),
        "the store after the restart is not exact"
    );
    drop(db);
    delete_topics(&[&changelog]);
}
