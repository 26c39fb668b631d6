//! Format compatibility: a small LSM tree written by format version 1 (SSTables in two levels
//! with tombstones and several versions per key, plus the manifest) is committed under
//! `tests/fixtures/lsm-v1/` and must keep opening and reading the same. A format change that
//! breaks this test needs a migration, not a new fixture. Regenerate only for a new version:
//! `BRAID_WRITE_FIXTURE=1 cargo test -p braid-storage --test lsm_format_fixture`.

#[path = "lsm_support/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use braid_storage::lsm::{LsmOptions, WriteBatch};
use common::*;

fn fixture_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures/lsm-v1")
}

fn opts() -> LsmOptions {
    LsmOptions {
        block_bytes: 256,
        table_bytes_max: 2048,
        ..small()
    }
}

/// Batch `s` of the fixture, deterministic: puts of varied lengths, some deletes.
fn fixture_batch(s: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    (0..3)
        .map(|j| {
            let k = (s * 7 + j * 13) % 120;
            let key = format!("row/{k:03}/{}", "x".repeat((k % 5) as usize)).into_bytes();
            let value = (s % 11 != 3)
                .then(|| format!("v{s}.{j}:{}", "y".repeat((s % 30) as usize)).into_bytes());
            (key, value)
        })
        .collect()
}

const BATCHES: u64 = 300;

fn model(upto: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for s in 1..=upto {
        for (k, v) in fixture_batch(s) {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
    }
    m
}

async fn write_fixture(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let fs = fs();
    let lsm = open(&fs, dir, opts()).await;
    for s in 1..=BATCHES {
        let mut b = WriteBatch::new();
        for (k, v) in fixture_batch(s) {
            match v {
                Some(v) => b.put(k, v),
                None => b.delete(k),
            };
        }
        lsm.apply(b, s, s * 100).await.expect("apply");
        if s == 150 {
            lsm.flush().await.expect("flush");
            lsm.compact_full().await.expect("compact into level 1");
        } else if s % 50 == 0 {
            lsm.flush().await.expect("flush");
        }
    }
    lsm.close().await.expect("close");
}

#[tokio::test]
async fn version_1_tree_still_reads() {
    let src = fixture_dir();
    if std::env::var("BRAID_WRITE_FIXTURE").is_ok_and(|v| v == "1") {
        write_fixture(&src).await;
    }
    // Work on a copy: opening may remove stray files and the test must not change the fixture.
    let dir = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(&src).expect("fixture exists") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
    }
    let fs = fs();
    let lsm = open(&fs, dir.path(), opts()).await;
    assert_eq!(lsm.durable_log_position(), BATCHES * 100);
    assert_eq!(lsm.visible_seq(), BATCHES);
    let levels = lsm.levels();
    assert!(levels[0].tables >= 2 && levels[1].tables >= 2, "{levels:?}");
    let want: Vec<(Vec<u8>, Vec<u8>)> = model(BATCHES).into_iter().collect();
    assert_eq!(scan_all(&lsm, u64::MAX).await, want);
    // Versions older than the newest survive in level 0 and are still readable by seqno.
    for s in [151, 200, 260] {
        let m = model(s);
        for b in 0..120u64 {
            let key = format!("row/{b:03}/{}", "x".repeat((b % 5) as usize)).into_bytes();
            let got = lsm.get(&key, s).await.expect("get").map(|v| v.to_vec());
            assert_eq!(got.as_ref(), m.get(&key), "key {b} at seq {s}");
        }
    }
    lsm.close().await.expect("close");
}

/// This package's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test; the value
/// compiled in may name another checkout that shares the target directory (cargo reuses a
/// test binary across checkouts of the same workspace).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
