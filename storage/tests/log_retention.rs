//! Retention deletes whole sealed segments, oldest first: by age (newest record older than
//! `retention_age`) and by size (while the partition minus the segment is still at least
//! `retention_bytes`). The active segment is never deleted and offsets are never reused.

#[path = "support/helpers.rs"]
mod support;

use std::time::Duration;

use braid_storage::log::{Record, TopicConfig};
use braid_storage::Error;
use support::*;

fn at(ts: i64, i: u64) -> Record {
    Record {
        timestamp: Some(ts),
        ..rec(i)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let hour = 3_600_000_000i64;
    let cfg = TopicConfig {
        retention_age: Some(Duration::from_secs(24 * 3600)),
        ..small_config()
    };
    let topic = open(&fs, dir.path(), cfg.clone()).await;
    let p = topic.partition(0).expect("partition");
    let now = 100 * 24 * hour;
    // Three days old, then one hour old.
    for i in 0..60 {
        p.append(vec![at(now - 72 * hour, i)])
            .await
            .expect("append");
    }
    let old_end = p.end_offset();
    for i in 60..120 {
        p.append(vec![at(now - hour, i)]).await.expect("append");
    }
    let before = p.segment_bases();
    p.run_maintenance(now).await.expect("retention");
    let after = p.segment_bases();
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    let start = p.start_offset();
    assert!(
        start > 0 && start <= old_end,
        "start {start}, old end {old_end}"
    );
    // Everything kept is complete from the new start, and new data is kept.
    let kept = read_all(&p, start).await;
    assert_eq!(kept.first().map(|r| r.offset), Some(start));
    assert_eq!(kept.last().map(|r| r.offset), Some(119));
    assert!(kept.iter().filter(|r| r.timestamp == now - hour).count() == 60);
    // The segment holding old records that straddles into new ones is kept.
    assert!(matches!(
        p.read(0, 100).await,
        Err(Error::OffsetOutOfRange { requested: 0, .. })
    ));
    // Deleted files are gone from disk.
    for b in before.iter().filter(|b| !after.contains(b)) {
        assert!(!dir.path().join("0").join(format!("{b:020}.log")).exists());
    }
    topic.close().await.expect("close");
    drop(topic);
    // After reopen the start stays, and offsets continue.
    let topic = open(&fs, dir.path(), cfg).await;
    let p = topic.partition(0).expect("partition");
    assert_eq!(p.start_offset(), start);
    assert_eq!(
        p.append(vec![rec(1)]).await.expect("append").base_offset,
        120
    );
    topic.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let cfg = TopicConfig {
        retention_bytes: Some(10_000),
        ..small_config()
    };
    let topic = open(&fs, dir.path(), cfg).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..400 {
        p.append(vec![rec(i)]).await.expect("append");
    }
    let size_before = p.size_bytes();
    assert!(size_before > 30_000);
    p.run_maintenance(support_now()).await.expect("retention");
    let size = p.size_bytes();
    assert!(size >= 10_000, "never below the limit: {size}");
    // At most one more segment than needed survives.
    assert!(size < 10_000 + 4096 + 1024, "{size}");
    assert_eq!(p.end_offset(), 400);
    let kept = read_all(&p, p.start_offset()).await;
    assert_eq!(kept.last().map(|r| r.offset), Some(399));
    assert_eq!(kept.len() as u64, 400 - p.start_offset());
    // Running it again changes nothing.
    let bases = p.segment_bases();
    p.run_maintenance(support_now()).await.expect("retention");
    assert_eq!(p.segment_bases(), bases);
    topic.close().await.expect("close");
}

fn support_now() -> i64 {
    braid_storage::log::now_micros()
}
