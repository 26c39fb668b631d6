//! Format compatibility: a small topic written by format version 1 is committed under
//! `tests/fixtures/log-v1/` and must keep opening and reading the same. A format change that
//! breaks this test needs a migration, not a new fixture. Regenerate only for a new version:
//! `BRAID_WRITE_FIXTURE=1 cargo test -p braid-storage --test log_format_fixture`.

#[path = "support/helpers.rs"]
mod support;

use std::path::{Path, PathBuf};

use braid_storage::log::{Header, ProducerSeq, Record, TopicConfig};
use support::*;

fn fixture_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures/log-v1")
}

fn config() -> TopicConfig {
    TopicConfig {
        partitions: 2,
        ..small_config()
    }
}

/// The records of the fixture, deterministic.
fn fixture_record(i: u64) -> Record {
    Record {
        timestamp: Some(1_700_000_000_000_000 + i as i64 * 1000),
        key: (!i.is_multiple_of(3)).then(|| format!("k{}", i % 11).into_bytes().into()),
        value: (i % 17 != 5).then(|| {
            format!("value {i} {}", "v".repeat((i % 40) as usize))
                .into_bytes()
                .into()
        }),
        headers: if i.is_multiple_of(4) {
            vec![Header {
                key: "trace".into(),
                value: Some(format!("t{i}").into_bytes().into()),
            }]
        } else {
            Vec::new()
        },
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_fixture_still_reads() {
    let fs = fs();
    if std::env::var("BRAID_WRITE_FIXTURE").is_ok_and(|v| v == "1") {
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        let topic = open(&fs, &dir, config()).await;
        for i in 0..120u64 {
            let part = (i % 2) as u32;
            let p = topic.partition(part).expect("partition");
            if i % 5 == 0 {
                let seq = ProducerSeq {
                    producer_id: 42,
                    sequence: i / 10,
                };
                p.append_idempotent(vec![fixture_record(i)], seq)
                    .await
                    .expect("append");
            } else {
                p.append(vec![fixture_record(i)]).await.expect("append");
            }
        }
        topic.close().await.expect("close");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), tmp.path());
    let topic = open(&fs, tmp.path(), config()).await;
    for part in 0..2u32 {
        let p = topic.partition(part).expect("partition");
        assert!(
            p.segment_bases().len() > 1,
            "the fixture has sealed segments"
        );
        let got = read_all(&p, 0).await;
        let want: Vec<Record> = (0..120u64)
            .filter(|i| i % 2 == u64::from(part))
            .map(fixture_record)
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(Some(g.timestamp), w.timestamp);
            assert_eq!(g.key, w.key);
            assert_eq!(g.value, w.value);
            assert_eq!(g.headers, w.headers);
        }
        assert_eq!(
            p.offset_for_timestamp(1_700_000_000_000_000 + 61_000)
                .await
                .expect("ts"),
            Some(if part == 0 { 31 } else { 30 })
        );
    }
    // The producer state came back from the snapshot and the scan: the last idempotent batch
    // of partition 0 (i = 110, sequence 11) is recognised as a retry.
    let p0 = topic.partition(0).expect("partition");
    let retry = p0
        .append_idempotent(
            vec![fixture_record(110)],
            ProducerSeq {
                producer_id: 42,
                sequence: 11,
            },
        )
        .await
        .expect("retry");
    assert!(retry.duplicate);
    topic.close().await.expect("close");
}

/// This package's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test; the value
/// compiled in may name another checkout that shares the target directory (cargo reuses a
/// test binary across checkouts of the same workspace).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
