//! A flush whose write, `fdatasync` or manifest rename fails is never retried: the tree refuses
//! further writes with `LsmFailed` (reads still work from memory), and reopening it from disk
//! plus the caller's replay from `durable_log_position` gives back every applied batch.

#[path = "lsm_support/common.rs"]
mod common;

use std::sync::Arc;

use braid_storage::io::{FaultKind, FaultyFs, SharedFs};
use braid_storage::Error;
use common::*;

async fn scenario(kind: FaultKind, n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = fs();
    let lsm = open(&real, dir.path(), small()).await;
    for s in 1..=100 {
        lsm.apply(put(key(s), format!("v{s}")), s, s * 10)
            .await
            .expect("apply");
    }
    lsm.close().await.expect("close");

    let faulty: SharedFs = Arc::new(FaultyFs::new(real.clone(), kind, n, true));
    let lsm = open(&faulty, dir.path(), small()).await;
    for s in 101..=200 {
        lsm.apply(put(key(s), format!("v{s}")), s, s * 10)
            .await
            .expect("apply");
    }
    let err = lsm.flush().await.expect_err("the flush must fail");
    assert!(
        matches!(err, Error::LsmFailed { .. } | Error::Io { .. }),
        "{kind:?} #{n}: {err}"
    );
    let err = lsm
        .apply(put(key(201), "x"), 201, 2010)
        .await
        .expect_err("writes refused");
    assert!(
        matches!(err, Error::LsmFailed { .. }),
        "{kind:?} #{n}: {err}"
    );
    assert_eq!(
        get_str(&lsm, &key(150), u64::MAX).await.as_deref(),
        Some("v150"),
        "reads still served"
    );
    lsm.abort().await;

    let lsm = open(&real, dir.path(), small()).await;
    let from = lsm.durable_log_position();
    assert_eq!(
        from, 1000,
        "{kind:?} #{n}: the failed flush recorded nothing"
    );
    for s in (1..=200u64).filter(|s| s * 10 > from) {
        lsm.apply(put(key(s), format!("v{s}")), s, s * 10)
            .await
            .expect("replay");
    }
    let all = scan_all(&lsm, u64::MAX).await;
    assert_eq!(all.len(), 200);
    assert!(all.iter().all(|(k, v)| {
        let s: u64 = std::str::from_utf8(&k[3..])
            .expect("utf8")
            .parse()
            .expect("n");
        v == format!("v{s}").as_bytes()
    }));
    let sst_on_disk = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "sst")
        })
        .count();
    assert_eq!(
        sst_on_disk,
        lsm.table_paths().len(),
        "no half-written table left behind"
    );
    lsm.close().await.expect("close");
}

#[tokio::test]
async fn failed_fdatasync_of_the_table() {
    scenario(FaultKind::Sync, 1).await;
}

#[tokio::test]
async fn failed_fdatasync_of_the_manifest() {
    scenario(FaultKind::Sync, 2).await;
}

#[tokio::test]
async fn failed_write_of_the_table() {
    scenario(FaultKind::Write, 1).await;
}

#[tokio::test]
async fn failed_write_of_the_manifest() {
    scenario(FaultKind::Write, 2).await;
}

#[tokio::test]
async fn failed_rename_of_the_manifest() {
    scenario(FaultKind::Rename, 1).await;
}
