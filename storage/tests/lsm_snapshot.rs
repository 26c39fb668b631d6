//! MVCC: a snapshot sees one consistent state while writers keep committing, flushing and
//! compacting underneath it; versions it needs survive compaction until it is dropped.

#[path = "lsm_support/common.rs"]
mod common;

use std::sync::Arc;

use braid_storage::lsm::WriteBatch;
use common::*;

const ACCOUNTS: u64 = 50;

fn balance(v: &[u8]) -> i64 {
    std::str::from_utf8(v)
        .expect("utf8")
        .parse()
        .expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reads_are_consistent_while_writes_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let mut opts = small();
    opts.memtable_bytes_max = 16 << 10; // rotate often so flushes happen mid-test
    opts.background_compaction = true;
    opts.l0_compaction_trigger_files = 2;
    let lsm = Arc::new(open(&fs, dir.path(), opts).await);

    // Every account starts at 100; each transaction moves an amount between two accounts in
    // one batch, so the total is 100 * ACCOUNTS at every seqno.
    let mut b = WriteBatch::new();
    for i in 0..ACCOUNTS {
        b.put(key(i), "100");
    }
    lsm.apply(b, 1, 1).await.expect("seed");

    let writer = {
        let lsm = lsm.clone();
        tokio::spawn(async move {
            let mut balances = vec![100i64; ACCOUNTS as usize];
            for seq in 2..3000u64 {
                let from = (seq * 7919) % ACCOUNTS;
                let to = (seq * 104_729 + 1) % ACCOUNTS;
                if from == to {
                    lsm.apply(WriteBatch::new(), seq, seq).await.expect("apply");
                    continue;
                }
                let amount = (seq % 13) as i64;
                balances[from as usize] -= amount;
                balances[to as usize] += amount;
                let mut b = WriteBatch::new();
                b.put(key(from), balances[from as usize].to_string());
                b.put(key(to), balances[to as usize].to_string());
                lsm.apply(b, seq, seq).await.expect("apply");
            }
        })
    };

    let mut checked = 0;
    while !writer.is_finished() {
        let snap = lsm.snapshot();
        let first = scan_all(&lsm, snap.seq()).await;
        assert_eq!(first.len() as u64, ACCOUNTS);
        let total: i64 = first.iter().map(|(_, v)| balance(v)).sum();
        assert_eq!(
            total,
            100 * ACCOUNTS as i64,
            "scan at seq {} is not a consistent cut",
            snap.seq()
        );
        tokio::task::yield_now().await;
        // Point reads at the same snapshot agree with its scan, however much was written since.
        let mut total = 0;
        for (k, v) in &first {
            let got = lsm.get(k, snap.seq()).await.expect("get").expect("present");
            assert_eq!(&got[..], &v[..]);
            total += balance(&got);
        }
        assert_eq!(total, 100 * ACCOUNTS as i64);
        checked += 1;
    }
    writer.await.expect("writer");
    assert!(checked > 3, "only {checked} snapshots checked");

    // An old snapshot survives flush and full compaction; dropping it lets compaction drop
    // the versions only it could see.
    let old = lsm.snapshot();
    let before = scan_all(&lsm, old.seq()).await;
    let mut b = WriteBatch::new();
    for i in 0..ACCOUNTS {
        b.put(key(i), "0");
    }
    lsm.apply(b, 5000, 5000).await.expect("zero all");
    lsm.flush().await.expect("flush");
    lsm.compact_full().await.expect("compact");
    assert_eq!(
        scan_all(&lsm, old.seq()).await,
        before,
        "old snapshot changed under compaction"
    );
    let entries_with_snapshot: u64 = lsm.levels().iter().map(|l| l.entries).sum();
    assert_eq!(
        entries_with_snapshot,
        2 * ACCOUNTS,
        "old and new version of each key kept"
    );
    drop(old);
    lsm.compact_full().await.expect("compact");
    let entries: u64 = lsm.levels().iter().map(|l| l.entries).sum();
    assert_eq!(entries, ACCOUNTS, "only the newest version is left");
    assert!(scan_all(&lsm, lsm.visible_seq())
        .await
        .iter()
        .all(|(_, v)| v == b"0"));
    Arc::try_unwrap(lsm)
        .expect("sole owner")
        .close()
        .await
        .expect("close");
}
