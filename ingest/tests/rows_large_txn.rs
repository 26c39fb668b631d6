//! Large transactions: one of 80 MB (a bulk `INSERT ... SELECT` of a million narrow rows is
//! about that) commits with the default options as one commit record, and survives a crash by
//! replay; a transaction over a configured `commit_bytes_max` is refused with
//! `TransactionTooLarge` and leaves nothing behind.

#[path = "support/rows.rs"]
mod support;

use std::ops::Bound;

use braid_ingest::rows::RowStoreOptions;
use braid_ingest::Error;
use support::*;

const T: u64 = 1;

fn row(i: u64) -> (String, String) {
    (format!("k{i:09}"), format!("{i:0>100}"))
}

async fn count(store: &braid_ingest::rows::RowStore) -> (usize, bool) {
    let rows = store
        .begin()
        .scan(T, Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect()
        .await
        .expect("collect");
    let intact = rows.iter().enumerate().all(|(i, (k, v))| {
        let (wk, wv) = row(i as u64);
        s(k) == wk && s(v) == wv
    });
    (rows.len(), intact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_the_old_32_mib_limit_commits_and_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let store = open(&fs, dir.path(), RowStoreOptions::default()).await;
    store.create_table(T).await.expect("create");
    // 600,000 rows of about 130 bytes in the commit record: about 80 MB.
    const ROWS: u64 = 600_000;
    let mut tx = store.begin();
    for i in 0..ROWS {
        let (k, v) = row(i);
        tx.put(T, b(&k), b(&v))
            .expect("put within the default limit");
    }
    tx.commit().await.expect("commit");
    assert_eq!(count(&store).await, (ROWS as usize, true));
    // Crash: the memtable is lost, the one commit record brings every row back.
    store.abort().await;
    let store = open(&fs, dir.path(), RowStoreOptions::default()).await;
    assert_eq!(count(&store).await, (ROWS as usize, true), "after replay");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_the_limit_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let opts = RowStoreOptions {
        commit_bytes_max: 64 << 10,
        ..RowStoreOptions::default()
    };
    let store = open(&fs, dir.path(), opts.clone()).await;
    store.create_table(T).await.expect("create");
    let mut tx = store.begin();
    let mut refused = None;
    for i in 0..1_000 {
        let (k, v) = row(i);
        if let Err(e) = tx.put(T, b(&k), b(&v)) {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(Error::TransactionTooLarge { bytes, max }) => {
            assert_eq!(max, 64 << 10);
            assert!(bytes > max);
        }
        other => panic!("expected TransactionTooLarge, got {other:?}"),
    }
    drop(tx);
    assert_eq!(count(&store).await, (0, true));
    store.close().await.expect("close");
}
