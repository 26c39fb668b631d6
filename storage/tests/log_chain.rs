//! Large appends are written as a chain of batches (every batch but the last marked
//! `continued`) so that writing starts before the whole append is encoded. A chain is still one
//! append: it reads back whole, and a chain that never got its last batch — a crash mid-write,
//! a failed write, an appender that failed half-way through encoding — leaves nothing behind,
//! on open as much as while running.

#[path = "support/helpers.rs"]
mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use braid_storage::io::{FaultKind, FaultyFs, SharedFs};
use braid_storage::log::format::{BatchHeader, BATCH_DECODE_BYTES_MAX};
use braid_storage::log::{Header, Record, Topic, TopicConfig};
use bytes::Bytes;
use support::*;

/// Enough 100-byte records to encode to about 2.5 MB: a chain of about ten parts.
const RECORDS: u64 = 20_000;

fn config() -> TopicConfig {
    TopicConfig {
        segment_bytes_max: 64 << 20,
        index_interval_bytes: 4096,
        ..small_config()
    }
}

fn big_record(i: u64) -> Record {
    Record {
        timestamp: Some(2_000_000 + i as i64),
        key: None,
        value: Some(Bytes::from(format!("{i:>100}"))),
        headers: Vec::new(),
    }
}

fn big_append() -> Vec<Record> {
    (0..RECORDS).map(big_record).collect()
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("0").join(format!("{:020}.log", 0))
}

/// The batch headers of a segment file with their positions, up to the first one that does
/// not parse.
fn headers(bytes: &[u8]) -> Vec<(usize, BatchHeader)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(h) = BatchHeader::parse(&bytes[pos..], BATCH_DECODE_BYTES_MAX) {
        out.push((pos, h));
        pos += h.batch_len as usize;
        if pos >= bytes.len() {
            break;
        }
    }
    out
}

async fn check_small_then_big(topic: &Topic, small: u64) {
    let p = topic.partition(0).expect("partition");
    assert_eq!(p.end_offset(), small + RECORDS);
    let all = read_all(&p, 0).await;
    assert_eq!(all.len() as u64, small + RECORDS);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64, "offsets are dense");
    }
    for (i, r) in all[small as usize..].iter().enumerate() {
        assert_eq!(
            r.value.as_deref(),
            big_record(i as u64).value.as_deref(),
            "record {i}"
        );
        assert_eq!(r.timestamp, 2_000_000 + i as i64);
    }
    // A read from the middle of the chain seeks through the index to the right record.
    let mid = small + 12_345;
    let r = p.read(mid, 4096).await.expect("read");
    assert_eq!(r.records.first().map(|r| r.offset), Some(mid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_append_is_a_chain_that_reads_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), config()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..3 {
        p.append(vec![rec(i)]).await.expect("small append");
    }
    let a = p.append(big_append()).await.expect("large append");
    assert_eq!((a.base_offset, a.last_offset), (3, 3 + RECORDS - 1));
    check_small_then_big(&topic, 3).await;
    topic.close().await.expect("close");
    drop(topic);

    let bytes = std::fs::read(log_path(dir.path())).expect("read log");
    let hs = headers(&bytes);
    let chain: Vec<_> = hs.iter().filter(|(_, h)| h.base_offset >= 3).collect();
    assert!(chain.len() > 4, "written as {} batches", chain.len());
    let continued = chain.iter().filter(|(_, h)| h.continued()).count();
    assert_eq!(
        continued,
        chain.len() - 1,
        "every part but the last continues"
    );
    assert!(!chain.last().expect("parts").1.continued());

    let topic = open(&fs, dir.path(), config()).await;
    check_small_then_big(&topic, 3).await;
    topic.close().await.expect("close");
}

/// Cuts the file as a crash could leave it; on open the unfinished chain must go, the file must
/// end where the data before it ends, and appends must go on from there. Twice, to show the cut
/// is idempotent.
async fn cut_and_reopen(fs: &SharedFs, dir: &Path, keep: &[u8], tail: &[u8], good_len: u64) {
    let log = log_path(dir);
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .expect("open");
    f.write_all(keep).expect("write");
    f.write_all(tail).expect("write");
    f.sync_all().expect("sync");
    drop(f);
    for round in 0..2 {
        let topic = open(fs, dir, config()).await;
        let p = topic.partition(0).expect("partition");
        assert_eq!(p.end_offset(), 3, "round {round}: the chain is gone");
        assert_eq!(read_all(&p, 0).await.len(), 3);
        drop(p);
        drop(topic);
        assert_eq!(
            std::fs::metadata(&log).expect("stat").len(),
            good_len,
            "round {round}: the file is cut where the chain began"
        );
    }
    let topic = open(fs, dir, config()).await;
    let p = topic.partition(0).expect("partition");
    let a = p.append(vec![rec(9)]).await.expect("append after the cut");
    assert_eq!(a.base_offset, 3);
    topic.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_without_its_last_batch_is_cut_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), config()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..3 {
        p.append(vec![rec(i)]).await.expect("small append");
    }
    p.append(big_append()).await.expect("large append");
    topic.close().await.expect("close");
    drop(topic);
    let bytes = std::fs::read(log_path(dir.path())).expect("read log");
    let hs = headers(&bytes);
    let (chain_start, _) = *hs
        .iter()
        .find(|(_, h)| h.base_offset == 3)
        .expect("chain start");
    let parts: Vec<_> = hs.iter().filter(|(p, _)| *p >= chain_start).collect();
    let &&(last_start, last) = parts.last().expect("parts");
    assert!(!last.continued() && parts.len() > 4);
    let good_len = chain_start as u64;

    // Every part but the last is complete and checksums: only the missing last batch says the
    // append never finished.
    cut_and_reopen(&fs, dir.path(), &bytes[..last_start], &[], good_len).await;
    // The same, with the zeros of blocks never written after it.
    cut_and_reopen(
        &fs,
        dir.path(),
        &bytes[..last_start],
        &[0u8; 8192],
        good_len,
    )
    .await;
    // Two parts complete, the third cut half-way.
    let third = parts[2].0;
    cut_and_reopen(&fs, dir.path(), &bytes[..third + 1000], &[], good_len).await;
    // Only the first part's header made it.
    cut_and_reopen(&fs, dir.path(), &bytes[..chain_start + 64], &[], good_len).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_fails_half_way_through_encoding_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), config()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..3 {
        p.append(vec![rec(i)]).await.expect("small append");
    }
    // Record 15,000 cannot be encoded (a header name longer than a u16 length); the parts
    // before it are already written when encoding reaches it.
    let mut records = big_append();
    records[15_000].headers.push(Header {
        key: "h".repeat(70_000),
        value: None,
    });
    let err = p
        .append(records)
        .await
        .expect_err("a bad record fails the append");
    assert!(
        matches!(err, braid_storage::Error::InvalidArgument(_)),
        "{err}"
    );
    // Nothing of it is visible, and the next append takes the next offset.
    assert_eq!(p.end_offset(), 3);
    let a = p
        .append(vec![rec(3)])
        .await
        .expect("append after the failed one");
    assert_eq!(a.base_offset, 3);
    let a = p.append(big_append()).await.expect("large append");
    assert_eq!(a.base_offset, 4);
    topic.close().await.expect("close");
    drop(topic);
    let topic = open(&fs, dir.path(), config()).await;
    check_small_then_big(&topic, 4).await;
    topic.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_mid_chain_is_not_acknowledged_and_reopen_is_consistent() {
    for fail_at in [1u64, 2, 3, 5] {
        let dir = tempfile::tempdir().expect("tempdir");
        let healthy = fs();
        let topic = open(&healthy, dir.path(), config()).await;
        let p = topic.partition(0).expect("partition");
        for i in 0..3 {
            p.append(vec![rec(i)]).await.expect("small append");
        }
        topic.close().await.expect("close");
        drop(topic);

        let faulty = FaultyFs::new(healthy.clone(), FaultKind::Write, fail_at, false);
        let faulty_fs: SharedFs = std::sync::Arc::new(faulty.clone());
        let topic = open(&faulty_fs, dir.path(), config()).await;
        let p = topic.partition(0).expect("partition");
        let res = p.append(big_append()).await;
        assert_eq!(faulty.injected(), 1, "fail_at {fail_at}: the fault hit");
        assert!(
            res.is_err(),
            "fail_at {fail_at}: a failed write is not acknowledged"
        );
        // The partition reopens itself; the next append lands at the next offset.
        let a = p
            .append(vec![rec(3)])
            .await
            .expect("append after the fault");
        assert_eq!(a.base_offset, 3, "fail_at {fail_at}");
        topic.close().await.expect("close");
        drop(topic);

        let topic = open(&healthy, dir.path(), config()).await;
        let p = topic.partition(0).expect("partition");
        assert_eq!(p.end_offset(), 4, "fail_at {fail_at}");
        assert_eq!(read_all(&p, 0).await.len(), 4);
        topic.close().await.expect("close");
    }
}
