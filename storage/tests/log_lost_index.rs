//! A sealed segment whose index files are missing or damaged is still read correctly: the
//! indexes are rebuilt from the log and written back.

#[path = "support/helpers.rs"]
mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..60u64 {
        p.append((i * 5..i * 5 + 5).map(rec).collect())
            .await
            .expect("append");
    }
    let bases = p.segment_bases();
    assert!(bases.len() >= 4, "{bases:?}");
    let expected = read_all(&p, 0).await;
    topic.close().await.expect("close");
    drop(topic);

    let pdir = dir.path().join("0");
    let idx = |b: u64, ext: &str| pdir.join(format!("{b:020}.{ext}"));
    let good_idx = std::fs::read(idx(bases[1], "idx")).expect("idx");
    // Segment 0: both indexes gone.
    std::fs::remove_file(idx(bases[0], "idx")).expect("rm");
    std::fs::remove_file(idx(bases[0], "timeindex")).expect("rm");
    // Segment 1: the offset index points into the middle of a batch.
    let mut bad = good_idx.clone();
    let n = bad.len();
    bad[n - 4] = bad[n - 4].wrapping_add(3);
    std::fs::write(idx(bases[1], "idx"), &bad).expect("write");
    // Segment 2: garbage.
    std::fs::write(idx(bases[2], "idx"), b"not an index").expect("write");

    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    assert_eq!(read_all(&p, 0).await, expected);
    // Seeks into each repaired segment land on the right record.
    for b in &bases[..3] {
        let target = b + 3;
        let r = p.read(target, 1).await.expect("read");
        assert_eq!(r.records.first().map(|r| r.offset), Some(target));
    }
    assert!(idx(bases[0], "idx").exists() && idx(bases[0], "timeindex").exists());
    assert_eq!(std::fs::read(idx(bases[1], "idx")).expect("idx"), good_idx);
    assert_eq!(
        p.offset_for_timestamp(1_000_000 + 7).await.expect("ts"),
        Some(7)
    );
    topic.close().await.expect("close");
}
