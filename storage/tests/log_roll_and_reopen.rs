//! Appends past several segment sizes: segments roll and seal, reads cross segments, and a
//! reopen sees exactly what was acknowledged.

#[path = "support/helpers.rs"]
mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_seal_read_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    let mut next = 0;
    for chunk in 0..40u64 {
        let recs: Vec<_> = (chunk * 10..chunk * 10 + 10).map(rec).collect();
        let a = p.append(recs).await.expect("append");
        assert_eq!(a.base_offset, next);
        assert_eq!(a.last_offset, next + 9);
        next += 10;
    }
    let bases = p.segment_bases();
    assert!(bases.len() > 3, "expected several segments, got {bases:?}");
    // Every sealed segment has both index files; the active one has none yet.
    let part_dir = dir.path().join("0");
    for b in &bases[..bases.len() - 1] {
        assert!(part_dir.join(format!("{b:020}.idx")).exists());
        assert!(part_dir.join(format!("{b:020}.timeindex")).exists());
    }
    let all = read_all(&p, 0).await;
    assert_eq!(all.len(), 400);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(
            value_of(r),
            String::from_utf8(rec(i as u64).value.expect("v").to_vec()).expect("utf8")
        );
    }
    // A read from the middle of a sealed segment seeks, not scans from 0.
    let mid = p.read(123, 1).await.expect("read");
    assert_eq!(mid.records.first().map(|r| r.offset), Some(123));
    // Reads by timestamp.
    assert_eq!(
        p.offset_for_timestamp(1_000_000 + 250).await.expect("ts"),
        Some(250)
    );
    assert_eq!(p.offset_for_timestamp(0).await.expect("ts"), Some(0));
    assert_eq!(p.offset_for_timestamp(9_000_000).await.expect("ts"), None);
    topic.close().await.expect("close");
    drop(topic);

    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    assert_eq!(p.segment_bases(), bases);
    assert_eq!(p.end_offset(), 400);
    let again = read_all(&p, 0).await;
    assert_eq!(again, all);
    let a = p.append(vec![rec(400)]).await.expect("append after reopen");
    assert_eq!(a.base_offset, 400);
    topic.close().await.expect("close");
}
