//! `cleanup = compact` keeps the last record per key in sealed segments, keeps offsets, and
//! drops tombstones once they are older than `tombstone_retention` — also after a reopen.

#[path = "support/helpers.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use braid_storage::log::{Cleanup, Record, TopicConfig};
use braid_storage::Error;
use support::*;

fn kv(k: u32, v: Option<String>, ts: i64) -> Record {
    Record {
        timestamp: Some(ts),
        key: Some(format!("k{k}").into_bytes().into()),
        value: v.map(|v| v.into_bytes().into()),
        headers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_last_value_and_expires_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let cfg = TopicConfig {
        cleanup: Cleanup::Compact,
        tombstone_retention: Duration::from_secs(3600),
        ..small_config()
    };
    let topic = open(&fs, dir.path(), cfg.clone()).await;
    let p = topic.partition(0).expect("partition");
    let hour = 3_600_000_000i64;
    let now = 1000 * hour;
    // Compacted topics refuse records without a key.
    assert!(matches!(
        p.append(vec![Record::value("no key")]).await,
        Err(Error::InvalidArgument(_))
    ));
    let mut model: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    for round in 0..30u32 {
        for k in 0..10u32 {
            // Keys 0 and 1 end as tombstones: key 0 old (expired), key 1 recent (kept).
            let value = match (k, round) {
                (0, 29) | (1, 29) => None,
                _ => Some(format!("v{k}-{round}")),
            };
            let ts = if k == 0 && round == 29 {
                now - 2 * hour
            } else {
                now - 10
            };
            let a = p
                .append(vec![kv(k, value.clone(), ts)])
                .await
                .expect("append");
            model.insert(format!("k{k}"), (a.base_offset, value));
        }
    }
    // Filler under other keys pushes the tombstones out of the active segment.
    for i in 0..100u32 {
        let a = p
            .append(vec![kv(1000 + i, Some(format!("f{i}")), now - 5)])
            .await
            .expect("append");
        model.insert(
            format!("k{}", 1000 + i),
            (a.base_offset, Some(format!("f{i}"))),
        );
    }
    let end = p.end_offset();
    assert_eq!(end, 400);
    let tombstone_k0 = model["k0"].0;
    assert!(tombstone_k0 < *p.segment_bases().last().expect("active"));
    let size_before = p.size_bytes();
    p.run_maintenance(now).await.expect("compact");
    assert!(
        p.size_bytes() < size_before / 2,
        "{} -> {}",
        size_before,
        p.size_bytes()
    );
    topic.close().await.expect("close");
    drop(topic);

    let topic = open(&fs, dir.path(), cfg).await;
    let p = topic.partition(0).expect("partition");
    assert_eq!(p.end_offset(), end);
    let all = read_all(&p, p.start_offset()).await;
    // Offsets only increase and every key's last record is present at its original offset.
    assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));
    let sealed_end = *p.segment_bases().last().expect("active");
    let mut last_seen: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    for r in &all {
        let k = String::from_utf8(r.key.clone().expect("key").to_vec()).expect("utf8");
        let v = r
            .value
            .as_ref()
            .map(|v| String::from_utf8(v.to_vec()).expect("utf8"));
        // In sealed segments a key appears once at most.
        if r.offset < sealed_end {
            assert!(
                last_seen.get(&k).is_none_or(|(o, _)| *o >= sealed_end),
                "duplicate key {k} in sealed segments"
            );
        }
        last_seen.insert(k, (r.offset, v));
    }
    assert!(tombstone_k0 < sealed_end);
    for (k, (off, v)) in &model {
        if k == "k0" {
            // The expired tombstone is gone, and so is every older value of its key.
            assert!(!last_seen.contains_key(k), "expired tombstone kept");
        } else {
            assert_eq!(last_seen.get(k), Some(&(*off, v.clone())), "key {k}");
        }
    }
    // The recent tombstone is kept.
    assert_eq!(last_seen.get("k1").map(|(_, v)| v.clone()), Some(None));
    topic.close().await.expect("close");
}
