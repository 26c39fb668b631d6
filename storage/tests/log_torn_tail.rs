//! A torn tail (an incomplete last batch, as a crash mid-write leaves) is cut off on open, and
//! cutting again gives the same file. Zeros where the tail should be count as torn too.

#[path = "support/helpers.rs"]
mod support;

use std::fs::OpenOptions;
use std::io::Write;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_truncated_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let cfg = TopicConfigExt::big_segments();
    let topic = open(&fs, dir.path(), cfg.clone()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..10 {
        p.append(vec![rec(i), rec(i + 100)]).await.expect("append");
    }
    topic.close().await.expect("close");
    drop(topic);
    let log = dir.path().join("0").join(format!("{:020}.log", 0));
    let good_len = std::fs::metadata(&log).expect("stat").len();

    // A second copy of the last batch, cut in half: the start of a write that never finished.
    let bytes = std::fs::read(&log).expect("read");
    let mut f = OpenOptions::new().append(true).open(&log).expect("open");
    f.write_all(&bytes[bytes.len() - 40..bytes.len() - 10])
        .expect("write");
    f.sync_all().expect("sync");
    drop(f);

    for round in 0..2 {
        let topic = open(&fs, dir.path(), cfg.clone()).await;
        let p = topic.partition(0).expect("partition");
        assert_eq!(p.end_offset(), 20, "round {round}");
        assert_eq!(read_all(&p, 0).await.len(), 20);
        topic.close().await.expect("close");
        drop(topic);
        assert_eq!(
            std::fs::metadata(&log).expect("stat").len(),
            good_len,
            "round {round}"
        );
    }

    // Zeros after the last batch (blocks allocated but never written) are a torn tail too.
    let mut f = OpenOptions::new().append(true).open(&log).expect("open");
    f.write_all(&[0u8; 4096]).expect("write");
    drop(f);
    let topic = open(&fs, dir.path(), cfg.clone()).await;
    let p = topic.partition(0).expect("partition");
    assert_eq!(p.end_offset(), 20);
    let a = p.append(vec![rec(1)]).await.expect("append after recovery");
    assert_eq!(a.base_offset, 20);
    assert_eq!(read_all(&p, 0).await.len(), 21);
    topic.close().await.expect("close");
}

/// Helpers local to this scenario.
struct TopicConfigExt;
impl TopicConfigExt {
    fn big_segments() -> braid_storage::log::TopicConfig {
        braid_storage::log::TopicConfig {
            segment_bytes_max: 1 << 20,
            ..small_config()
        }
    }
}
