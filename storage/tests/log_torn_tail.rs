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

/// Small appends write zeros ahead of the data (so a sync does not commit the file-system
/// journal); a crash leaves them behind. Recovery keeps them as room for the next appends,
/// a half-written batch inside them is a torn tail (not corruption), and a clean close cuts
/// the file to its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_written_ahead_survive_a_crash_and_a_write_cut_short_inside_them_is_torn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let cfg = TopicConfigExt::big_segments();
    let log = dir.path().join("0").join(format!("{:020}.log", 0));
    let topic = open(&fs, dir.path(), cfg.clone()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..10 {
        p.append(vec![rec(i)]).await.expect("append");
    }
    let on_disk = std::fs::metadata(&log).expect("stat").len();
    // A crash: the process goes away without closing. Copy the files as they are on disk.
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), crashed.path());
    topic.close().await.expect("close");
    drop(topic);
    // A clean close cuts the file to its data: ten small batches, far less than was written.
    let data_len = std::fs::metadata(&log).expect("stat").len();
    assert!(
        on_disk >= data_len + 4096,
        "zeros written ahead: file {on_disk} bytes, data {data_len}"
    );

    // The crashed copy: a repeat of the last batch, half written into the zeros.
    let crashed_log = crashed.path().join("0").join(format!("{:020}.log", 0));
    let last = {
        let topic = open(&fs, dir.path(), cfg.clone()).await;
        let p = topic.partition(0).expect("partition");
        assert_eq!(p.end_offset(), 10);
        topic.close().await.expect("close");
        let all = std::fs::read(&log).expect("read");
        all[all.len() - 60..].to_vec()
    };
    {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .write(true)
            .open(&crashed_log)
            .expect("open");
        f.write_all_at(&last[..40], data_len).expect("write");
        f.sync_all().expect("sync");
    }
    let topic = open(&fs, crashed.path(), cfg.clone()).await;
    let p = topic.partition(0).expect("partition");
    assert_eq!(p.end_offset(), 10, "the half batch is not a record");
    let a = p
        .append(vec![rec(10)])
        .await
        .expect("append after recovery");
    assert_eq!(a.base_offset, 10);
    assert_eq!(read_all(&p, 0).await.len(), 11);
    topic.close().await.expect("close");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
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
