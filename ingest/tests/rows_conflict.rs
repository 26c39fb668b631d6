//! Snapshot isolation and write-write conflicts: first committer wins on a shared key, disjoint
//! writers both commit, write skew is allowed (snapshot isolation, not serializability),
//! concurrent inserts of one new key never both succeed, and reads see the snapshot plus the
//! transaction's own writes.

#[path = "support/rows.rs"]
mod support;

use std::ops::Bound;

use braid_ingest::Error;
use support::*;

const T: u64 = 1;

async fn seeded(dir: &std::path::Path) -> braid_ingest::rows::RowStore {
    let store = open(&fs(), dir, small()).await;
    store.create_table(T).await.expect("create");
    let mut tx = store.begin();
    for k in ["a", "b", "c"] {
        tx.put(T, b(k), b("0")).expect("put");
    }
    tx.commit().await.expect("seed");
    store
}

#[tokio::test]
async fn second_writer_of_a_key_fails_with_a_serialization_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    t1.put(T, b("a"), b("1")).expect("put");
    t2.put(T, b("a"), b("2")).expect("put");
    t1.commit().await.expect("first committer wins");
    let err = t2.commit().await.expect_err("second committer must fail");
    assert!(err.is_serialization_failure(), "got {err}");
    assert!(
        err.to_string()
            .contains("could not serialize access due to concurrent update"),
        "{err}"
    );
    let r = store.begin();
    assert_eq!(
        r.get(T, b"a").await.expect("get").map(|v| s(&v)),
        Some("1".into())
    );

    // A delete conflicts like an update.
    let mut t3 = store.begin();
    let mut t4 = store.begin();
    t3.delete(T, b("b")).expect("delete");
    t4.put(T, b("b"), b("x")).expect("put");
    t4.commit().await.expect("commit");
    assert!(t3
        .commit()
        .await
        .expect_err("conflict")
        .is_serialization_failure());

    // A transaction that began after the commit sees it and does not conflict.
    let mut t5 = store.begin();
    t5.put(T, b("a"), b("5")).expect("put");
    t5.commit()
        .await
        .expect("no conflict after the other commit");
    store.close().await.expect("close");
}

#[tokio::test]
async fn disjoint_writers_both_commit_and_write_skew_is_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    t1.put(T, b("a"), b("1")).expect("put");
    t2.put(T, b("b"), b("2")).expect("put");
    t2.commit().await.expect("disjoint");
    t1.commit().await.expect("disjoint");

    // Write skew: each reads both keys ("on call" doctors), sees both on duty, and takes
    // itself off. Under snapshot isolation both commit; SERIALIZABLE would refuse one.
    let mut setup = store.begin();
    setup.put(T, b("x"), b("on")).expect("put");
    setup.put(T, b("y"), b("on")).expect("put");
    setup.commit().await.expect("setup");
    let mut d1 = store.begin();
    let mut d2 = store.begin();
    for tx in [&d1, &d2] {
        let on = tx
            .scan(T, Bound::Included(b"x"), Bound::Included(b"y"))
            .expect("scan")
            .collect()
            .await
            .expect("collect");
        assert_eq!(on.len(), 2);
    }
    d1.put(T, b("x"), b("off")).expect("put");
    d2.put(T, b("y"), b("off")).expect("put");
    d1.commit().await.expect("write skew commits under SI");
    d2.commit().await.expect("write skew commits under SI");
    let r = store.begin();
    assert_eq!(
        r.get(T, b"x").await.expect("get").map(|v| s(&v)),
        Some("off".into())
    );
    assert_eq!(
        r.get(T, b"y").await.expect("get").map(|v| s(&v)),
        Some("off".into())
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn concurrent_inserts_of_one_new_key_never_both_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    t1.insert(T, b("new"), b("1")).await.expect("absent for t1");
    t2.insert(T, b("new"), b("2")).await.expect("absent for t2");
    t1.commit().await.expect("first");
    assert!(t2
        .commit()
        .await
        .expect_err("the second insert must fail")
        .is_serialization_failure());
    // Once committed, the key is a unique violation for later transactions.
    let mut t3 = store.begin();
    match t3.insert(T, b("new"), b("3")).await {
        Err(Error::UniqueViolation { table, key }) => {
            assert_eq!((table, &key[..]), (T, &b"new"[..]));
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    // Within one transaction, a deleted key can be inserted again; an inserted one cannot.
    t3.delete(T, b("new")).expect("delete");
    t3.insert(T, b("new"), b("4"))
        .await
        .expect("re-insert after own delete");
    assert!(matches!(
        t3.insert(T, b("new"), b("5")).await,
        Err(Error::UniqueViolation { .. })
    ));
    t3.commit().await.expect("commit");

    // Many tasks race to insert the same keys: each key ends up inserted exactly once.
    let store = std::sync::Arc::new(store);
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for k in 0..20u64 {
                let mut tx = store.begin();
                let key = b(&format!("race{k:02}"));
                match tx.insert(T, key, b(&task.to_string())).await {
                    Ok(()) => {}
                    Err(Error::UniqueViolation { .. }) => continue,
                    Err(e) => panic!("insert: {e}"),
                }
                tokio::task::yield_now().await;
                match tx.commit().await {
                    Ok(_) => won.push(k),
                    Err(e) if e.is_serialization_failure() => {}
                    Err(e) => panic!("commit: {e}"),
                }
            }
            won
        }));
    }
    let mut winners = vec![0; 20];
    for t in tasks {
        for k in t.await.expect("task") {
            winners[k as usize] += 1;
        }
    }
    assert!(
        winners.iter().all(|&n| n == 1),
        "winners per key: {winners:?}"
    );
    let store = std::sync::Arc::into_inner(store).expect("sole owner");
    store.close().await.expect("close");
}

#[tokio::test]
async fn reads_see_the_snapshot_plus_own_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut t1 = store.begin();
    // A commit after t1 began is invisible to it.
    let mut other = store.begin();
    other.put(T, b("a"), b("other")).expect("put");
    other.put(T, b("d"), b("other")).expect("put");
    other.commit().await.expect("commit");
    assert_eq!(
        t1.get(T, b"a").await.expect("get").map(|v| s(&v)),
        Some("0".into())
    );
    assert_eq!(t1.get(T, b"d").await.expect("get"), None);
    t1.put(T, b("b"), b("mine")).expect("put");
    t1.delete(T, b("c")).expect("delete");
    t1.put(T, b("bb"), b("mine")).expect("put");
    t1.put(T, b("z"), b("mine")).expect("put");
    let rows: Vec<(String, String)> = t1
        .scan(T, Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect()
        .await
        .expect("collect")
        .iter()
        .map(|(k, v)| (s(k), s(v)))
        .collect();
    let want: Vec<(String, String)> = [("a", "0"), ("b", "mine"), ("bb", "mine"), ("z", "mine")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(rows, want);
    let part = t1
        .scan(T, Bound::Excluded(b"a"), Bound::Excluded(b"z"))
        .expect("scan")
        .collect()
        .await
        .expect("collect");
    assert_eq!(part.len(), 2);
    // Rollback discards; a read-only commit does not touch the log.
    t1.rollback();
    let (_, end) = store.log_range();
    let r = store.begin();
    assert_eq!(
        r.get(T, b"b").await.expect("get").map(|v| s(&v)),
        Some("0".into())
    );
    let info = r.commit().await.expect("read-only commit");
    assert_eq!(info.seq, None);
    assert_eq!(
        store.log_range().1,
        end,
        "a read-only commit appended to the log"
    );
    // Writes to a missing table fail at once.
    let mut t = store.begin();
    assert!(matches!(
        t.put(99, b("k"), b("v")),
        Err(Error::TableNotFound(99))
    ));
    store.close().await.expect("close");
}

#[tokio::test]
async fn an_old_snapshot_reads_its_versions_after_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let old = store.begin();
    for round in 0..20 {
        let mut tx = store.begin();
        for k in ["a", "b", "c"] {
            tx.put(T, b(k), b(&format!("{round}-{}", "v".repeat(500))))
                .expect("put");
        }
        tx.delete(T, b("c")).expect("delete");
        tx.commit().await.expect("commit");
    }
    // Other transactions come and go (each end moves the pins up to the oldest open snapshot).
    for _ in 0..5 {
        store.begin().rollback();
        tokio::time::sleep(std::time::Duration::from_millis(6)).await;
    }
    store.compact().await.expect("compact");
    for k in ["a", "b", "c"] {
        assert_eq!(
            old.get(T, k.as_bytes()).await.expect("get").map(|v| s(&v)),
            Some("0".to_string()),
            "the old snapshot lost its version of {k}"
        );
    }
    let rows = old
        .scan(T, Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect()
        .await
        .expect("collect");
    assert_eq!(rows.len(), 3);
    drop(old);
    let new = store.begin();
    assert_eq!(new.get(T, b"c").await.expect("get"), None);
    store.close().await.expect("close");
}

/// A writer that declared the schema stamp a table had when it wrote fails at commit once the
/// stamp changed (an index was created meanwhile), and writers with the new stamp commit; the
/// seqno returned by the change covers every commit made under the old stamp.
#[tokio::test]
async fn a_changed_schema_stamp_fails_writers_of_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut before = store.begin();
    before.put(T, b("late"), b("1")).expect("put");
    before.expect_schema(T, 0);
    let mut done = store.begin();
    done.put(T, b("early"), b("1")).expect("put");
    done.expect_schema(T, 0);
    let early = done.commit().await.expect("commits under the old stamp");
    // A table creation takes a seqno too; it is not a commit to wait for.
    store.create_table(T + 1).await.expect("create");
    let last = store.set_schema_stamp(T, 7);
    assert!(early.seq.is_some_and(|s| s <= last), "{early:?} <= {last}");
    tokio::time::timeout(std::time::Duration::from_secs(10), store.wait_visible(last))
        .await
        .expect("the last commit becomes visible")
        .expect("visible");
    let err = before.commit().await.expect_err("old stamp must fail");
    assert!(err.is_serialization_failure(), "{err}");
    let mut after = store.begin();
    after.put(T, b("late"), b("2")).expect("put");
    after.expect_schema(T, 7);
    after.commit().await.expect("new stamp commits");
    let mut unrelated = store.begin();
    unrelated.put(T, b("x"), b("3")).expect("put");
    unrelated
        .commit()
        .await
        .expect("a writer that declares nothing is not checked");
}
