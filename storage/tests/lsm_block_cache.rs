//! The block cache serves repeated point lookups without touching the disk, and its byte bound
//! holds: a small cache evicts.

#[path = "lsm_support/common.rs"]
mod common;

use common::*;

#[tokio::test]
async fn repeated_lookups_hit_the_block_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let lsm = open(&fs, dir.path(), small()).await;
    for i in 0..2000 {
        lsm.apply(put(key(i), format!("value-{i}")), i + 1, i + 1)
            .await
            .expect("apply");
    }
    lsm.flush().await.expect("flush");
    let start = lsm.cache_stats();
    assert_eq!(
        get_str(&lsm, &key(1234), u64::MAX).await.as_deref(),
        Some("value-1234")
    );
    let first = lsm.cache_stats();
    assert_eq!(first.misses - start.misses, 1, "first read loads one block");
    for _ in 0..100 {
        assert_eq!(
            get_str(&lsm, &key(1234), u64::MAX).await.as_deref(),
            Some("value-1234")
        );
    }
    let after = lsm.cache_stats();
    assert_eq!(after.misses, first.misses, "no more disk reads");
    assert_eq!(after.hits - first.hits, 100);
    // Absent keys inside the table's range are stopped by the bloom filter, mostly before any
    // block is read.
    let before_absent = lsm.cache_stats();
    for i in 0..1000 {
        assert_eq!(
            lsm.get(format!("key{i:06}x").as_bytes(), u64::MAX)
                .await
                .expect("get"),
            None
        );
    }
    let absent = lsm.cache_stats();
    let reads = (absent.hits + absent.misses) - (before_absent.hits + before_absent.misses);
    assert!(reads < 50, "{reads} block reads for 1000 absent keys");
    lsm.close().await.expect("close");

    // A tiny cache stays within its bound by evicting.
    let mut opts = small();
    opts.block_cache_bytes = 16 * 1024;
    let lsm = open(&fs, dir.path(), opts).await;
    for i in 0..2000 {
        lsm.get(&key(i), u64::MAX).await.expect("get");
    }
    let s = lsm.cache_stats();
    assert!(s.evictions > 0, "{s:?}");
    lsm.close().await.expect("close");
}
