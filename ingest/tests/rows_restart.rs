//! Restart: rows and seqnos survive a clean close and a crash (stop without flush), memtables
//! flush along the way so replay starts in the middle of the commit log, the log is trimmed only
//! up to what every table made durable, and a dropped table's rows never come back, not even in
//! a new table with the same id.

#[path = "support/rows.rs"]
mod support;

use std::collections::BTreeMap;
use std::ops::Bound;

use braid_ingest::rows::RowStore;
use support::*;

const USERS: u64 = 1;
const ORDERS: u64 = 2;

async fn contents(store: &RowStore, table: u64) -> BTreeMap<String, String> {
    store
        .begin()
        .scan(table, Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect()
        .await
        .expect("collect")
        .iter()
        .map(|(k, v)| (s(k), s(v)))
        .collect()
}

/// Writes `n` transactions touching both tables; returns the expected contents.
async fn write_some(
    store: &RowStore,
    from: u64,
    n: u64,
    model: &mut [BTreeMap<String, String>; 2],
) {
    for i in from..from + n {
        let mut tx = store.begin();
        let (k, v) = (
            format!("u{:04}", i % 150),
            format!("user-{i}-{}", "x".repeat(40)),
        );
        tx.put(USERS, b(&k), b(&v)).expect("put");
        model[0].insert(k, v);
        let (k, v) = (format!("o{i:05}"), format!("order-{i}"));
        tx.put(ORDERS, b(&k), b(&v)).expect("put");
        model[1].insert(k, v);
        if i % 7 == 0 {
            let k = format!("u{:04}", (i * 3) % 150);
            tx.delete(USERS, b(&k)).expect("delete");
            model[0].remove(&k);
        }
        tx.commit().await.expect("commit");
    }
}

async fn check(store: &RowStore, model: &[BTreeMap<String, String>; 2]) {
    assert_eq!(&contents(store, USERS).await, &model[0], "users differ");
    assert_eq!(&contents(store, ORDERS).await, &model[1], "orders differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_and_seqnos_survive_close_crash_and_trim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let mut model: [BTreeMap<String, String>; 2] = Default::default();

    let store = open(&fs, dir.path(), small()).await;
    store.create_table(USERS).await.expect("create users");
    store.create_table(ORDERS).await.expect("create orders");
    write_some(&store, 0, 300, &mut model).await;
    let seq = store.visible_seq();
    store.close().await.expect("close");

    // Clean reopen: everything was flushed, nothing to replay.
    let store = open(&fs, dir.path(), small()).await;
    assert_eq!(store.visible_seq(), seq, "seqno after a clean reopen");
    assert_eq!(store.tables(), vec![USERS, ORDERS]);
    check(&store, &model).await;
    write_some(&store, 300, 300, &mut model).await;
    let seq = store.visible_seq();
    let durable = store.min_durable_log_position();
    let (_, end) = store.log_range();
    assert!(
        durable > 0 && durable < end,
        "small memtables should have flushed part of the log: durable {durable}, end {end}"
    );
    // Crash: memtables are lost; replay must start mid-log and bring them back.
    store.abort().await;

    let store = open(&fs, dir.path(), small()).await;
    assert_eq!(store.visible_seq(), seq, "seqno after a crash");
    check(&store, &model).await;
    // New commits continue above the old seqnos.
    let mut tx = store.begin();
    tx.put(USERS, b("after"), b("crash")).expect("put");
    model[0].insert("after".into(), "crash".into());
    let info = tx.commit().await.expect("commit");
    assert_eq!(info.seq, Some(seq + 1));

    // Trim: only what every table made durable goes.
    let (start0, _) = store.log_range();
    let min = store.min_durable_log_position();
    let start = store.trim_log().await.expect("trim");
    assert!(
        start <= min,
        "trimmed to {start}, past the durable minimum {min}"
    );
    store.flush().await.expect("flush");
    let start = store.trim_log().await.expect("trim after flush");
    assert!(
        start > start0,
        "a full flush should let whole segments go ({start0} → {start})"
    );
    write_some(&store, 600, 100, &mut model).await;
    let seq = store.visible_seq();
    store.abort().await;

    let store = open(&fs, dir.path(), small()).await;
    assert_eq!(store.visible_seq(), seq);
    check(&store, &model).await;
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_stays_dropped_across_crashes_and_id_reuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let store = open(&fs, dir.path(), small()).await;
    store.create_table(USERS).await.expect("create");
    store.create_table(ORDERS).await.expect("create");
    for i in 0..50 {
        let mut tx = store.begin();
        tx.put(USERS, b(&format!("old{i:03}")), b("old"))
            .expect("put");
        tx.put(ORDERS, b(&format!("o{i:03}")), b("kept"))
            .expect("put");
        tx.commit().await.expect("commit");
    }
    let mut pending = store.begin();
    pending.put(USERS, b("late"), b("x")).expect("put");
    store.drop_table(USERS).await.expect("drop");
    assert!(matches!(
        pending.commit().await,
        Err(braid_ingest::Error::TableNotFound(USERS))
    ));
    assert!(
        !dir.path().join("tables/app/1").exists(),
        "table dir left behind"
    );
    store
        .create_table(USERS)
        .await
        .expect("recreate with the same id");
    let mut tx = store.begin();
    tx.put(USERS, b("new"), b("new")).expect("put");
    tx.commit().await.expect("commit");
    // Crash: the log still holds the old table's records; replay must not resurrect them.
    store.abort().await;

    let store = open(&fs, dir.path(), small()).await;
    let users = contents(&store, USERS).await;
    assert_eq!(
        users.into_iter().collect::<Vec<_>>(),
        vec![("new".to_string(), "new".to_string())]
    );
    assert_eq!(contents(&store, ORDERS).await.len(), 50);
    assert!(matches!(
        store.create_table(ORDERS).await,
        Err(braid_ingest::Error::TableExists(ORDERS))
    ));
    store.close().await.expect("close");
}
