//! Split keys for parallel scans: keys in tables and in the memtable, updated and deleted,
//! are cut into parts of about equal size, and the parts scanned one by one hold every row of
//! the range exactly once, in order.

#[path = "lsm_support/common.rs"]
mod common;

use std::ops::Bound;

use braid_storage::lsm::{Lsm, WriteBatch};
use common::*;

fn int_key(i: i32) -> Vec<u8> {
    // The shape of braid's int4 keys: a tag, then big-endian with the sign bit flipped.
    let mut k = vec![0x21];
    k.extend_from_slice(&((i as u32) ^ 0x8000_0000).to_be_bytes());
    k
}

async fn scan_parts(
    lsm: &Lsm,
    seq: u64,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    parts: usize,
) -> (usize, Vec<(Vec<u8>, Vec<u8>)>) {
    let ranges = split_ranges(lsm, start, end, parts);
    let n = ranges.len();
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    for r in ranges {
        let part: Vec<(Vec<u8>, Vec<u8>)> = lsm
            .scan(r, seq)
            .expect("scan")
            .collect()
            .await
            .expect("collect")
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        sizes.push(part.len());
        rows.extend(part);
    }
    // About equal: no part holds more than twice its share.
    let total: usize = sizes.iter().sum();
    assert!(
        sizes.iter().all(|s| *s <= 2 * total / n + 1),
        "unbalanced parts {sizes:?}"
    );
    (n, rows)
}

#[tokio::test]
async fn parts_hold_every_row_once_across_tables_and_memtable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let lsm = open(&fs, dir.path(), small()).await;
    let mut seq = 0;
    let mut model = std::collections::BTreeMap::new();
    for chunk in 0..8 {
        seq += 1;
        let mut b = WriteBatch::new();
        for i in chunk * 500..(chunk + 1) * 500 {
            b.put(int_key(i), format!("v{i}").into_bytes());
            model.insert(int_key(i), format!("v{i}").into_bytes());
        }
        lsm.apply(b, seq, seq).await.expect("apply");
    }
    lsm.flush().await.expect("flush");
    // Newer versions and tombstones in the memtable over the tables, and new keys.
    seq += 1;
    let mut b = WriteBatch::new();
    for i in 1000..1100 {
        b.put(int_key(i), b"updated".to_vec());
        model.insert(int_key(i), b"updated".to_vec());
    }
    for i in 2000..2100 {
        b.delete(int_key(i));
        model.remove(&int_key(i));
    }
    for i in 4000..4500 {
        b.put(int_key(i), b"new".to_vec());
        model.insert(int_key(i), b"new".to_vec());
    }
    lsm.apply(b, seq, seq).await.expect("apply");

    let all: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
    let (n, rows) = scan_parts(&lsm, seq, Bound::Unbounded, Bound::Unbounded, 4).await;
    assert_eq!(n, 4, "a full scan of 4,400 rows is split in 4");
    assert_eq!(rows, all);

    let (lo, hi) = (int_key(500), int_key(3000));
    let want: Vec<(Vec<u8>, Vec<u8>)> = model
        .range((Bound::Excluded(lo.clone()), Bound::Included(hi.clone())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (n, rows) = scan_parts(&lsm, seq, Bound::Excluded(lo), Bound::Included(hi), 3).await;
    assert_eq!(n, 3, "a range of 2,400 rows is split in 3");
    assert_eq!(rows, want);

    // Below the size threshold nothing is split.
    assert!(lsm.split_keys(.., 4, u64::MAX).is_empty());
}

#[tokio::test]
async fn a_memtable_alone_is_split_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let lsm = open(&fs, dir.path(), small()).await;
    let mut b = WriteBatch::new();
    for i in 1..=4000 {
        b.put(int_key(i), b"filler".to_vec());
    }
    lsm.apply(b, 1, 1).await.expect("apply");
    let (n, rows) = scan_parts(&lsm, 1, Bound::Unbounded, Bound::Unbounded, 4).await;
    assert_eq!(n, 4);
    assert_eq!(rows.len(), 4000);
}
