//! Flush and reopen: flushed data is back after a reopen, the durable log position says where
//! the caller's replay must start, and what was only in the memtable is gone (the commit log
//! holds it) without disturbing what was flushed.

#[path = "lsm_support/common.rs"]
mod common;

use common::*;

#[tokio::test]
async fn flushed_data_and_log_position_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    {
        let lsm = open(&fs, dir.path(), small()).await;
        assert_eq!(lsm.durable_log_position(), 0);
        for i in 0..200 {
            lsm.apply(put(key(i), format!("v{i}")), i + 1, (i + 1) * 100)
                .await
                .expect("apply");
        }
        lsm.flush().await.expect("flush");
        assert_eq!(lsm.durable_log_position(), 200 * 100);
        for i in 0..50 {
            lsm.apply(del(key(i)), 201 + i, (201 + i) * 100)
                .await
                .expect("apply");
        }
        lsm.flush().await.expect("flush");
        assert_eq!(lsm.durable_log_position(), 250 * 100);
        // Not flushed: dropped like a crash would drop it.
        lsm.apply(put(key(999), "lost"), 251, 251 * 100)
            .await
            .expect("apply");
        assert_eq!(lsm.durable_log_position(), 250 * 100);
        lsm.abort().await;
    }
    {
        let lsm = open(&fs, dir.path(), small()).await;
        assert_eq!(
            lsm.durable_log_position(),
            250 * 100,
            "replay starts after the last flushed batch"
        );
        assert_eq!(lsm.visible_seq(), 250);
        assert_eq!(get_str(&lsm, &key(999), u64::MAX).await, None);
        for i in 0..200 {
            let want = (i >= 50).then(|| format!("v{i}"));
            assert_eq!(get_str(&lsm, &key(i), u64::MAX).await, want, "key {i}");
        }
        // The caller replays seqno 251 from the log; then a clean close flushes it.
        lsm.apply(put(key(999), "replayed"), 251, 251 * 100)
            .await
            .expect("replay");
        // An empty batch still moves the log position.
        lsm.apply(braid_storage::lsm::WriteBatch::new(), 252, 252 * 100)
            .await
            .expect("empty");
        lsm.compact_full().await.expect("compact");
        lsm.close().await.expect("close");
    }
    let lsm = open(&fs, dir.path(), small()).await;
    assert_eq!(lsm.durable_log_position(), 252 * 100);
    assert_eq!(
        get_str(&lsm, &key(999), u64::MAX).await.as_deref(),
        Some("replayed")
    );
    assert_eq!(scan_all(&lsm, u64::MAX).await.len(), 151);
    // Only files the manifest names are left on disk.
    let mut on_disk: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    on_disk.sort();
    let mut live = lsm.table_paths();
    live.sort();
    assert_eq!(on_disk, live);
    lsm.close().await.expect("close");
}

#[tokio::test]
async fn orphan_tables_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let lsm = open(&fs, dir.path(), small()).await;
    lsm.apply(put(key(1), "one"), 1, 10).await.expect("apply");
    lsm.close().await.expect("close");
    // A table a crashed flush left behind, never named by the manifest.
    let orphan = dir.path().join(format!("{:020}.sst", 77));
    std::fs::write(&orphan, b"half a table").expect("write orphan");
    let lsm = open(&fs, dir.path(), small()).await;
    assert!(!orphan.exists(), "orphan removed");
    assert_eq!(
        get_str(&lsm, &key(1), u64::MAX).await.as_deref(),
        Some("one")
    );
    // The next file number is past the orphan's, so numbers are never reused.
    lsm.apply(put(key(2), "two"), 2, 20).await.expect("apply");
    lsm.flush().await.expect("flush");
    assert!(lsm
        .table_paths()
        .iter()
        .any(|p| p.ends_with(format!("{:020}.sst", 78))));
    lsm.close().await.expect("close");
}
