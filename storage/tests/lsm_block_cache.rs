//! The block cache serves repeated point lookups without touching the disk, and its byte bound
//! holds: a small cache evicts. A scan longer than the cache does not flush it.

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

#[tokio::test]
async fn a_scan_longer_than_the_cache_leaves_the_cached_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let mut opts = small();
    // 2 MiB: less than half the table's 4.8 MB of blocks.
    opts.block_cache_bytes = 2 << 20;
    let lsm = open(&fs, dir.path(), opts).await;
    for i in 0..40_000 {
        lsm.apply(
            put(key(i), format!("value-{i}-{}", "x".repeat(100))),
            i + 1,
            i + 1,
        )
        .await
        .expect("apply");
    }
    lsm.flush().await.expect("flush");
    assert!(get_str(&lsm, &key(7), u64::MAX).await.is_some());
    let before = lsm.cache_stats();
    let rows = lsm
        .scan(.., u64::MAX)
        .expect("scan")
        .collect()
        .await
        .expect("collect");
    assert_eq!(rows.len(), 40_000);
    let after_scan = lsm.cache_stats();
    // The scan read about 9,400 blocks of 512 bytes but put only an eighth of the cache's
    // worth in (blocks are at least `block_bytes` long), and evicted nothing.
    let (lookups, inserted) = (
        after_scan.misses - before.misses,
        after_scan.inserts - before.inserts,
    );
    let budget_blocks = (2u64 << 20) / 8 / 512;
    assert!(
        inserted > 0 && inserted <= budget_blocks && after_scan.evictions == before.evictions,
        "the scan filled the cache: {before:?} → {after_scan:?}"
    );
    // It looked up only the blocks it had to read (one per readahead), not every block.
    assert!(
        lookups > 0 && lookups < 100,
        "{lookups} cache lookups missed during the scan"
    );
    assert!(get_str(&lsm, &key(7), u64::MAX).await.is_some());
    let after_get = lsm.cache_stats();
    assert_eq!(
        after_get.misses, after_scan.misses,
        "the looked-up block was pushed out by the scan"
    );
    lsm.close().await.expect("close");
}
