//! Compaction keeps the newest visible value of every key, drops versions no reader can see,
//! drops tombstones at the bottom level, and leaves fewer, smaller files.

#[path = "lsm_support/common.rs"]
mod common;

use braid_storage::lsm::{LsmOptions, WriteBatch};
use common::*;

#[tokio::test]
async fn compaction_drops_shadowed_versions_and_bottom_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let opts = braid_storage::lsm::LsmOptions {
        table_bytes_max: 4 << 10,
        ..small()
    };
    let lsm = open(&fs, dir.path(), opts.clone()).await;
    let mut seq = 0;
    // Five rounds of overwriting 400 keys, each round flushed to its own table(s).
    for round in 0..5 {
        for i in 0..400 {
            seq += 1;
            lsm.apply(
                put(key(i), format!("r{round}-{i}-{}", "x".repeat(20))),
                seq,
                seq,
            )
            .await
            .expect("apply");
        }
        lsm.flush().await.expect("flush");
    }
    // Delete half of them.
    for i in (0..400).filter(|i| i % 2 == 0) {
        seq += 1;
        lsm.apply(del(key(i)), seq, seq).await.expect("apply");
    }
    lsm.flush().await.expect("flush");
    let before = lsm.levels();
    let files_before: usize = before.iter().map(|l| l.tables).sum();
    let bytes_before: u64 = before.iter().map(|l| l.bytes).sum();
    let entries_before: u64 = before.iter().map(|l| l.entries).sum();
    assert_eq!(entries_before, 5 * 400 + 200);
    let want = scan_all(&lsm, seq).await;
    assert_eq!(want.len(), 200);

    // Leveled compaction moves level 0 down first.
    lsm.compact().await.expect("compact");
    let after_l0 = lsm.levels();
    assert!(
        after_l0[0].tables < lsm_l0_trigger(),
        "level 0 drained: {after_l0:?}"
    );
    assert_eq!(scan_all(&lsm, seq).await, want);

    lsm.compact_full().await.expect("compact full");
    let after = lsm.levels();
    let files_after: usize = after.iter().map(|l| l.tables).sum();
    let bytes_after: u64 = after.iter().map(|l| l.bytes).sum();
    let entries_after: u64 = after.iter().map(|l| l.entries).sum();
    assert_eq!(
        entries_after, 200,
        "one version per live key, no tombstones: {after:?}"
    );
    assert!(
        files_after < files_before,
        "{files_after} files after, {files_before} before"
    );
    assert!(
        bytes_after * 4 < bytes_before,
        "{bytes_after} bytes after, {bytes_before} before"
    );
    assert_eq!(after[0].tables, 0);
    assert_eq!(scan_all(&lsm, seq).await, want);
    for i in 0..400 {
        let v = get_str(&lsm, &key(i), seq).await;
        assert_eq!(
            v,
            (i % 2 == 1).then(|| format!("r4-{i}-{}", "x".repeat(20))),
            "key {i}"
        );
    }
    // Output tables are cut near table_bytes_max and are disjoint in level 1+.
    let deepest = after.iter().rposition(|l| l.tables > 0).expect("a level");
    assert!(after[deepest].tables >= 2, "{after:?}");

    // Survives reopen.
    lsm.close().await.expect("close");
    let lsm = open(&fs, dir.path(), opts).await;
    assert_eq!(scan_all(&lsm, u64::MAX).await, want);
    lsm.close().await.expect("close");
}

fn lsm_l0_trigger() -> usize {
    small().l0_compaction_trigger_files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_flush_and_compaction_keep_everything_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let mut opts = small();
    opts.memtable_bytes_max = 32 << 10;
    opts.background_compaction = true;
    opts.level1_bytes_max = 64 << 10;
    opts.level_size_ratio = 4;
    opts.compaction_bytes_per_sec = Some(64 << 20);
    let lsm = open(&fs, dir.path(), opts).await;
    let n = 6000u64;
    for s in 1..=n {
        let i = (s * 7) % 2000;
        lsm.apply(put(key(i), format!("{s:08}")), s, s)
            .await
            .expect("apply");
    }
    lsm.flush().await.expect("flush");
    lsm.compact().await.expect("settle");
    let levels = lsm.levels();
    assert!(
        levels.iter().skip(1).any(|l| l.tables > 0),
        "data reached level 1+: {levels:?}"
    );
    assert!(levels[0].tables < 4, "{levels:?}");
    // The newest write of each key wins.
    let mut want = std::collections::BTreeMap::new();
    for s in 1..=n {
        want.insert(key((s * 7) % 2000), format!("{s:08}").into_bytes());
    }
    let got = scan_all(&lsm, u64::MAX).await;
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    lsm.close().await.expect("close");
}

/// A tombstone in a level-1 table that a level-0 compaction pulls in may lie outside the key
/// range of the level-0 tables. It may only be dropped when no deeper level holds its key:
/// whether the output is "bottom" must be judged over every input's range, or the deleted key
/// comes back from the deeper level.
#[tokio::test]
async fn tombstone_outside_the_level0_range_is_kept_while_a_deeper_level_has_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let push_down = LsmOptions {
        l0_compaction_trigger_files: 1,
        level1_bytes_max: 1,
        level_size_ratio: 1 << 20,
        levels_max: 4,
        ..small()
    };
    let keep_in_l1 = LsmOptions {
        l0_compaction_trigger_files: 1,
        level1_bytes_max: 1 << 30,
        level_size_ratio: 2,
        levels_max: 4,
        ..small()
    };
    // "b" = old, pushed down to level 2.
    let lsm = open(&fs, dir.path(), push_down.clone()).await;
    lsm.apply(put("b", "old"), 1, 10).await.expect("apply");
    lsm.flush().await.expect("flush");
    lsm.compact().await.expect("compact");
    let levels = lsm.levels();
    assert_eq!(levels[2].tables, 1, "b is in level 2: {levels:?}");
    lsm.close().await.expect("close");

    // Level 1 gets a table spanning a..c that deletes "b".
    let lsm = open(&fs, dir.path(), keep_in_l1.clone()).await;
    let mut b = WriteBatch::new();
    b.put("a", "1");
    b.delete("b");
    b.put("c", "1");
    lsm.apply(b, 2, 20).await.expect("apply");
    lsm.flush().await.expect("flush");
    lsm.compact().await.expect("compact");
    let levels = lsm.levels();
    assert_eq!((levels[0].tables, levels[1].tables), (0, 1), "{levels:?}");
    assert_eq!(get_str(&lsm, b"b", 2).await, None);

    // A level-0 table holding only "a" pulls that level-1 table into a compaction.
    lsm.apply(put("a", "2"), 3, 30).await.expect("apply");
    lsm.flush().await.expect("flush");
    lsm.compact().await.expect("compact");
    assert_eq!(lsm.levels()[0].tables, 0);
    assert_eq!(get_str(&lsm, b"b", 3).await, None, "deleted key came back");
    assert_eq!(
        scan_all(&lsm, 3).await,
        vec![
            (b"a".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"1".to_vec())
        ]
    );
    lsm.close().await.expect("close");
}
