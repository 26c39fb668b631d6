//! Shared by the LSM scenario tests: the I/O backend named by `BRAID_IO_BACKEND`, options small
//! enough that a few hundred keys make several blocks and tables, and batch helpers.
#![allow(dead_code)]

use std::path::Path;

use braid_storage::io::{backend_from_env, SharedFs};
use braid_storage::lsm::{Lsm, LsmOptions, WriteBatch};
use bytes::Bytes;

pub fn fs() -> SharedFs {
    backend_from_env().expect("BRAID_IO_BACKEND names a backend")
}

/// Small blocks and memtables, no background compaction (tests call `compact*` themselves).
pub fn small() -> LsmOptions {
    LsmOptions {
        memtable_bytes_max: 1 << 20,
        block_bytes: 512,
        block_cache_bytes: 1 << 20,
        table_bytes_max: 16 << 10,
        background_compaction: false,
        ..LsmOptions::default()
    }
}

pub async fn open(fs: &SharedFs, dir: &Path, opts: LsmOptions) -> Lsm {
    Lsm::open(fs.clone(), dir, opts).await.expect("open lsm")
}

pub fn key(i: u64) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

pub fn put(k: impl Into<Bytes>, v: impl Into<Bytes>) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(k, v);
    b
}

pub fn del(k: impl Into<Bytes>) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.delete(k);
    b
}

pub async fn get_str(lsm: &Lsm, k: &[u8], seq: u64) -> Option<String> {
    lsm.get(k, seq)
        .await
        .expect("get")
        .map(|v| String::from_utf8(v.to_vec()).expect("utf8"))
}

pub async fn scan_all(lsm: &Lsm, seq: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    lsm.scan(.., seq)
        .expect("scan")
        .collect()
        .await
        .expect("scan collect")
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// A key range, as [`Lsm::scan`] takes it.
pub type KeyRange = (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>);

/// `(start, end)` cut where [`Lsm::split_keys`] says (no size threshold) into at most `parts`
/// ranges, checking what a parallel scan relies on: the cuts are increasing and inside the
/// range, so the parts hold every row once.
pub fn split_ranges(
    lsm: &Lsm,
    start: std::ops::Bound<Vec<u8>>,
    end: std::ops::Bound<Vec<u8>>,
    parts: usize,
) -> Vec<KeyRange> {
    use std::ops::{Bound, RangeBounds};
    let cuts = lsm.split_keys((start.clone(), end.clone()), parts, 0);
    assert!(cuts.len() < parts, "{} cuts for {parts} parts", cuts.len());
    assert!(cuts.windows(2).all(|w| w[0] < w[1]), "cuts not increasing");
    let mut ranges = Vec::new();
    let mut lo = start;
    for c in cuts {
        let c = c.to_vec();
        let inside: (Bound<&Vec<u8>>, Bound<&Vec<u8>>) = (lo.as_ref(), end.as_ref());
        assert!(
            RangeBounds::<Vec<u8>>::contains(&inside, &c),
            "cut outside the range"
        );
        ranges.push((lo, Bound::Excluded(c.clone())));
        lo = Bound::Included(c);
    }
    ranges.push((lo, end));
    ranges
}
