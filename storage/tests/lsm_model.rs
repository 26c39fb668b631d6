//! Model test: random batches of puts and deletes, flushes, compactions, clean reopens and
//! crashes (drop without flush, then the caller's log replay from `durable_log_position`),
//! compared after every step with a `BTreeMap`, including point reads and scans at older
//! snapshots taken along the way.

#[path = "lsm_support/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use braid_storage::lsm::{Lsm, LsmOptions, Snapshot, WriteBatch};
use common::*;
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
/// The caller's commit log: (seqno, log position after it, the batch's entries).
type Log = Vec<(u64, u64, Vec<(Vec<u8>, Option<Vec<u8>>)>)>;

#[derive(Debug, Clone)]
enum Op {
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Flush,
    Compact,
    CompactFull,
    Reopen,
    Crash,
    TakeSnapshot,
    DropSnapshot(usize),
    CheckSnapshot(usize, u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let entry = (
        any::<u8>(),
        prop::option::weighted(0.75, prop::collection::vec(any::<u8>(), 0..48)),
    );
    prop_oneof![
        12 => prop::collection::vec(entry, 0..6).prop_map(Op::Batch),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::CompactFull),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        2 => Just(Op::TakeSnapshot),
        1 => any::<usize>().prop_map(Op::DropSnapshot),
        3 => (any::<usize>(), any::<u8>(), any::<u8>()).prop_map(|(i, a, b)| Op::CheckSnapshot(i, a, b)),
    ]
}

/// Keys of different lengths sharing prefixes, so prefix compression and restarts get work.
fn key_of(b: u8) -> Vec<u8> {
    let i = b % 64;
    let mut k = format!("k{:02}", i % 16).into_bytes();
    k.extend(std::iter::repeat_n(b'/', usize::from(i / 16)));
    k
}

fn opts() -> LsmOptions {
    LsmOptions {
        memtable_bytes_max: 2 << 10,
        immutable_memtables_max: 2,
        block_bytes: 128,
        block_cache_bytes: 8 << 10,
        table_bytes_max: 512,
        l0_compaction_trigger_files: 2,
        l0_stall_files: 6,
        level1_bytes_max: 1 << 10,
        level_size_ratio: 2,
        levels_max: 4,
        bloom_bits_per_key: 4,
        compaction_bytes_per_sec: None,
        background_compaction: true,
    }
}

async fn check(lsm: &Lsm, seq: u64, model: &Model, lo: u8, hi: u8) {
    for b in 0..64u8 {
        let k = key_of(b);
        let got = lsm.get(&k, seq).await.expect("get").map(|v| v.to_vec());
        assert_eq!(
            got.as_ref(),
            model.get(&k),
            "get {:?} at {seq}",
            String::from_utf8_lossy(&k)
        );
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scan_all(lsm, seq).await, all, "full scan at {seq}");
    let (a, b) = (key_of(lo.min(hi)), key_of(lo.max(hi)));
    let (a, b) = (a.clone().min(b.clone()), a.max(b));
    let got: Vec<(Vec<u8>, Vec<u8>)> = lsm
        .scan(
            (Bound::Excluded(a.clone()), Bound::Included(b.clone())),
            seq,
        )
        .expect("scan")
        .collect()
        .await
        .expect("collect")
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model
        .range((Bound::Excluded(a.clone()), Bound::Included(b.clone())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want, "range scan at {seq}");
    let (start, end) = (Bound::Excluded(a), Bound::Included(b));
    assert_eq!(
        scan_split(lsm, seq, start.clone(), end.clone(), 3, 3, false).await,
        want,
        "range scan split into parts at {seq}"
    );
    assert_eq!(
        scan_split(lsm, seq, Bound::Unbounded, Bound::Unbounded, 4, 3, false).await,
        all,
        "full scan split into parts at {seq}"
    );
    // Whole blocks per call; and a visitor that stops each call after its second row.
    assert_eq!(
        scan_split(lsm, seq, Bound::Unbounded, Bound::Unbounded, 1, 1000, false).await,
        all,
        "full scan in long visits at {seq}"
    );
    assert_eq!(
        scan_split(lsm, seq, start, end, 2, 1000, true).await,
        want,
        "range scan in long visits at {seq}"
    );
}

/// Scans `(start, end)` the way a parallel scan does: cut at [`Lsm::split_keys`] (no size
/// threshold), each part read by a scan of its own through [`braid_storage::lsm::Scan::visit`]
/// `rows_max` rows at a time (with `stop_early`, the visitor stops each call at its second
/// row), the parts' rows concatenated. The cuts must be increasing and inside the range, so
/// the parts hold every row once.
async fn scan_split(
    lsm: &Lsm,
    seq: u64,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    parts: usize,
    rows_max: usize,
    stop_early: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bounds = split_ranges(lsm, start, end, parts);
    let mut out = Vec::new();
    for range in bounds {
        let mut scan = lsm.scan(range, seq).expect("scan");
        loop {
            let mut rows = Vec::new();
            let n = scan
                .visit(rows_max, &mut |k, v| {
                    rows.push((k.to_vec(), v.to_vec()));
                    !stop_early || rows.len() < 2
                })
                .await
                .expect("visit");
            assert_eq!(n, rows.len());
            if n == 0 {
                break;
            }
            out.extend(rows);
        }
    }
    out
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let mut lsm = Some(open(&fs, dir.path(), opts()).await);
    let mut model = Model::new();
    let mut log: Log = Vec::new();
    let mut snapshots: Vec<(Snapshot, Model)> = Vec::new();
    let mut seq = 0u64;
    for op in ops {
        let db = lsm.as_ref().expect("open");
        match op {
            Op::Batch(entries) => {
                seq += 1;
                let entries: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                    entries.into_iter().map(|(k, v)| (key_of(k), v)).collect();
                let mut b = WriteBatch::new();
                for (k, v) in &entries {
                    match v {
                        Some(v) => model.insert(k.clone(), v.clone()),
                        None => model.remove(k),
                    };
                    match v {
                        Some(v) => b.put(k.clone(), v.clone()),
                        None => b.delete(k.clone()),
                    };
                }
                let pos = seq * 1000;
                db.apply(b, seq, pos).await.expect("apply");
                log.push((seq, pos, entries));
            }
            Op::Flush => db.flush().await.expect("flush"),
            Op::Compact => db.compact().await.expect("compact"),
            Op::CompactFull => db.compact_full().await.expect("compact full"),
            Op::Reopen | Op::Crash => {
                snapshots.clear();
                let db = lsm.take().expect("open");
                if matches!(op, Op::Reopen) {
                    db.close().await.expect("close");
                } else {
                    db.abort().await;
                }
                let db = open(&fs, dir.path(), opts()).await;
                let from = db.durable_log_position();
                for (s, pos, entries) in log.iter().filter(|(_, pos, _)| *pos > from) {
                    let mut b = WriteBatch::new();
                    for (k, v) in entries {
                        match v {
                            Some(v) => b.put(k.clone(), v.clone()),
                            None => b.delete(k.clone()),
                        };
                    }
                    db.apply(b, *s, *pos).await.expect("replay");
                }
                assert_eq!(db.visible_seq(), seq);
                lsm = Some(db);
            }
            Op::TakeSnapshot => {
                let s = db.snapshot();
                assert_eq!(s.seq(), seq);
                snapshots.push((s, model.clone()));
            }
            Op::DropSnapshot(i) => {
                if !snapshots.is_empty() {
                    let n = snapshots.len();
                    snapshots.remove(i % n);
                }
            }
            Op::CheckSnapshot(i, lo, hi) => {
                if !snapshots.is_empty() {
                    let n = snapshots.len();
                    let (s, m) = &snapshots[i % n];
                    check(db, s.seq(), m, lo, hi).await;
                }
            }
        }
        check(lsm.as_ref().expect("open"), seq, &model, 0, 63).await;
    }
    for (s, m) in &snapshots {
        check(lsm.as_ref().expect("open"), s.seq(), m, 3, 40).await;
    }
    snapshots.clear();
    lsm.take().expect("open").close().await.expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn lsm_matches_a_btreemap(ops in prop::collection::vec(op(), 1..150)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops));
    }
}
