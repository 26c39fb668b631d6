//! A flipped bit inside a complete batch is corruption: opening (active segment) or reading
//! (sealed segment) fails with `Error::Corruption` naming the file and the batch position, and
//! nothing is silently dropped or truncated.

#[path = "support/helpers.rs"]
mod support;

use braid_storage::log::Topic;
use braid_storage::Error;
use support::*;

fn flip(path: &std::path::Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

/// Byte positions of the batches of a segment file (walking the length fields).
fn batch_positions(path: &std::path::Path) -> Vec<u64> {
    let bytes = std::fs::read(path).expect("read");
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 12 <= bytes.len() {
        out.push(pos as u64);
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes"));
        pos += len as usize;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_mismatch_in_active_segment_fails_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let cfg = braid_storage::log::TopicConfig {
        segment_bytes_max: 1 << 20,
        ..small_config()
    };
    let topic = open(&fs, dir.path(), cfg.clone()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..10 {
        p.append(vec![rec(i)]).await.expect("append");
    }
    topic.close().await.expect("close");
    drop(topic);
    let log = dir.path().join("0").join(format!("{:020}.log", 0));
    let len_before = std::fs::metadata(&log).expect("stat").len();
    let positions = batch_positions(&log);
    let victim = positions[5];
    flip(&log, victim + 80); // inside the records of batch 5

    let err = Topic::open(fs.clone(), dir.path(), cfg.clone())
        .await
        .expect_err("a damaged batch must not open silently");
    match &err {
        Error::Corruption { path, position, .. } => {
            assert_eq!(path, &log);
            assert_eq!(*position, victim);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(err.to_string().contains("checksum"), "{err}");
    // Nothing was truncated.
    assert_eq!(std::fs::metadata(&log).expect("stat").len(), len_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_mismatch_in_sealed_segment_fails_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..100 {
        p.append(vec![rec(i)]).await.expect("append");
    }
    let bases = p.segment_bases();
    assert!(bases.len() >= 3);
    topic.close().await.expect("close");
    drop(topic);
    let log = dir.path().join("0").join(format!("{:020}.log", bases[0]));
    let positions = batch_positions(&log);
    let victim = positions[positions.len() / 2];
    flip(&log, victim + 70);

    // Sealed segments are not rescanned at open (that would make start-up O(data)) ...
    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    // ... but every read checks the checksum of what it returns.
    let mut at = 0;
    let err = loop {
        match p.read(at, 64).await {
            Ok(r) => {
                assert!(r.next_offset > at, "reads must not skip the damaged batch");
                at = r.next_offset;
            }
            Err(e) => break e,
        }
    };
    match &err {
        Error::Corruption { path, position, .. } => {
            assert_eq!(path, &log);
            assert_eq!(*position, victim);
        }
        other => panic!("expected corruption, got {other}"),
    }
    // Reads past the damaged batch (in later segments) still work.
    let later = p.read(bases[1], 1 << 20).await.expect("later segment");
    assert_eq!(later.records.first().map(|r| r.offset), Some(bases[1]));
    topic.close().await.expect("close");
}
