//! Row locks (READ COMMITTED writes by key): a second writer of a locked row waits for the
//! first to end and then works on its committed value, so neither fails; a rollback releases
//! the lock with nothing changed; a cycle of waits fails one transaction with a deadlock
//! instead of hanging; and writes made without the lock keep snapshot isolation's rule.

#[path = "support/rows.rs"]
mod support;

use std::time::Duration;

use braid_ingest::Error;
use support::*;

const T: u64 = 1;

async fn seeded(dir: &std::path::Path) -> std::sync::Arc<braid_ingest::rows::RowStore> {
    let store = open(&fs(), dir, small()).await;
    store.create_table(T).await.expect("create");
    let mut tx = store.begin();
    for k in ["a", "b"] {
        tx.put(T, b(k), b("0")).expect("put");
    }
    tx.commit().await.expect("seed");
    std::sync::Arc::new(store)
}

/// Returns once `n` transactions wait for a row lock (so a test's next step meets them
/// waiting, however slowly the spawned task got going).
async fn waiting(store: &braid_ingest::rows::RowStore, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.row_lock_waiters() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the waiter starts waiting");
}

/// Two transactions: the first holding row `a`'s lock, the second row `b`'s.
async fn holding_a_and_b(
    store: &braid_ingest::rows::RowStore,
) -> (
    braid_ingest::rows::Transaction,
    braid_ingest::rows::Transaction,
) {
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    t1.get_for_update(T, b"a").await.expect("t1 locks a");
    t2.get_for_update(T, b"b").await.expect("t2 locks b");
    (t1, t2)
}

fn num(v: &Option<bytes::Bytes>) -> i64 {
    s(v.as_ref().expect("row present"))
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn a_second_locked_writer_waits_and_applies_to_the_newest_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut t1 = store.begin();
    // t2's snapshot predates t1's commit: under snapshot isolation it would fail.
    let mut t2 = store.begin();
    let v = t1.get_for_update(T, b"a").await.expect("lock a");
    t1.put(T, b("a"), (num(&v) + 1).to_string()).expect("put");
    let waiter = {
        tokio::spawn(async move {
            let v = t2.get_for_update(T, b"a").await.expect("lock a after t1");
            let seen = num(&v);
            t2.put(T, b("a"), (seen + 10).to_string()).expect("put");
            t2.commit()
                .await
                .expect("t2 commits: it read the newest row");
            seen
        })
    };
    waiting(&store, 1).await;
    assert!(!waiter.is_finished(), "t2 waits while t1 holds the lock");
    assert_eq!(store.held_row_locks(), 1);
    t1.commit().await.expect("t1 commits");
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("t2 is woken by t1's commit")
        .expect("join");
    assert_eq!(seen, 1, "t2 read t1's committed value, not its snapshot's");
    let r = store.begin();
    assert_eq!(num(&r.get(T, b"a").await.expect("get")), 11);
    assert_eq!(store.held_row_locks(), 0, "both locks released");
}

#[tokio::test]
async fn a_rollback_releases_the_lock_with_nothing_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut t1 = store.begin();
    t1.get_for_update(T, b"b").await.expect("lock");
    t1.put(T, b("b"), b("99")).expect("put");
    let s2 = store.clone();
    let waiter = tokio::spawn(async move {
        let mut t2 = s2.begin();
        let v = t2
            .get_for_update(T, b"b")
            .await
            .expect("lock after rollback");
        num(&v)
    });
    waiting(&store, 1).await;
    assert!(!waiter.is_finished());
    drop(t1);
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the rollback")
        .expect("join");
    assert_eq!(seen, 0, "the rolled-back write is not seen");
}

#[tokio::test]
async fn a_cycle_of_waits_fails_one_transaction_with_a_deadlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let (t1, mut t2) = holding_a_and_b(&store).await;
    let waiter = tokio::spawn(async move {
        let mut t1 = t1;
        let r = t1.get_for_update(T, b"b").await.map(|_| ());
        (r, t1)
    });
    waiting(&store, 1).await;
    assert!(!waiter.is_finished(), "t1 waits for t2");
    let err = t2
        .get_for_update(T, b"a")
        .await
        .expect_err("t2 closing the cycle must fail");
    assert!(matches!(err, Error::Deadlock { .. }), "got {err}");
    assert!(err.to_string().contains("deadlock detected"), "{err}");
    drop(t2);
    let (r, t1) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("t1 gets b once t2 is gone")
        .expect("join");
    r.expect("t1 takes b");
    drop(t1);
    assert_eq!(store.held_row_locks(), 0);
}

#[tokio::test]
async fn a_cancelled_wait_leaves_no_edge_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let (t1, mut t2) = holding_a_and_b(&store).await;
    // t2 waits for a, then gives up (a cancelled statement).
    let gave_up = tokio::time::timeout(Duration::from_millis(50), t2.get_for_update(T, b"a")).await;
    assert!(gave_up.is_err(), "t2 was still waiting");
    assert_eq!(
        store.row_lock_waiters(),
        0,
        "the abandoned wait left no edge"
    );
    // A stale edge t2 -> t1 would make this wait look like a cycle.
    let waiter = tokio::spawn(async move {
        let mut t1 = t1;
        let r = t1.get_for_update(T, b"b").await.map(|_| ());
        drop(t1);
        r
    });
    waiting(&store, 1).await;
    assert!(!waiter.is_finished(), "t1 waits for t2, no deadlock");
    drop(t2);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("t1 gets b")
        .expect("join")
        .expect("no deadlock");
}

#[tokio::test]
async fn writes_without_the_lock_keep_first_committer_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    // t2 locked and read a, but t1 writes a blind (no lock) and commits first.
    t2.get_for_update(T, b"a").await.expect("lock");
    t1.put(T, b("a"), b("5")).expect("put");
    t1.commit().await.expect("commit");
    t2.put(T, b("a"), b("6")).expect("put");
    let err = t2
        .commit()
        .await
        .expect_err("a commit after t2's read conflicts");
    assert!(err.is_serialization_failure(), "got {err}");
}

/// Entries derived from a locked row (a secondary index's, in another table) follow the row's
/// conflict rule with [`braid_ingest::rows::Transaction::check_like`]: a waiter that rewrites
/// the entry its predecessor wrote commits; without the call the entry fails it with 40001.
#[tokio::test]
async fn entries_checked_like_their_locked_row_do_not_conflict_with_its_previous_writer() {
    const IX: u64 = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path()).await;
    store.create_table(IX).await.expect("create index tree");
    for align in [true, false] {
        let mut t1 = store.begin();
        let mut t2 = store.begin();
        t1.get_for_update(T, b"a").await.expect("t1 locks a");
        t1.put(T, b("a"), b("1")).expect("put row");
        t1.put(IX, b("entry"), b("t1")).expect("put entry");
        let waiter = tokio::spawn(async move {
            t2.get_for_update(T, b"a").await.expect("lock a after t1");
            t2.put(T, b("a"), b("2")).expect("put row");
            t2.delete(IX, b("entry")).expect("delete entry");
            if align {
                t2.check_like(IX, b"entry", T, b"a");
            }
            t2.commit().await
        });
        waiting(&store, 1).await;
        t1.commit().await.expect("t1 commits");
        let r = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("t2 is woken")
            .expect("join");
        if align {
            r.expect("t2 commits: its entry is checked from the row's lock");
            let r = store.begin();
            assert_eq!(r.get(IX, b"entry").await.expect("get"), None);
        } else {
            let err = r.expect_err("unaligned entry conflicts with t1's write");
            assert!(matches!(err, Error::SerializationFailure { .. }), "{err}");
        }
    }
}
