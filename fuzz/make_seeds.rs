//! Writes the seed corpus for the fuzz targets into `fuzz/corpus/<target>/` (git-ignored):
//! batches made by `encode_batch` (null, empty and binary keys and values, headers, extreme
//! timestamps, idempotent producers), plus the `.log` batches, `.idx`, `.timeindex` and
//! `.snapshot` files of a real topic that rolled a few segments.
//!
//! Run from `fuzz/`: `cargo run --bin make_seeds` (optionally with the corpus root as argument).

use std::path::{Path, PathBuf};

use braid_storage::io::{SharedFs, StdFs};
use braid_storage::log::format::{encode_batch, set_base_offset};
use braid_storage::log::ProducerSeq;
use braid_storage::log::{Header, Record, Topic, TopicConfig};
use bytes::Bytes;

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let batch_dir = root.join("log_batch_decode");
    let index_dir = root.join("log_index_decode");
    std::fs::create_dir_all(&batch_dir).expect("create corpus dir");
    std::fs::create_dir_all(&index_dir).expect("create corpus dir");
    let mut n = 0;
    for (i, (records, producer, base)) in encoded_cases().into_iter().enumerate() {
        let b = encode_batch(&records, producer, 1_700_000_000_000_000).expect("encode");
        let mut buf = b.bytes().to_vec();
        set_base_offset(&mut buf, base);
        std::fs::write(batch_dir.join(format!("encoded-{i:02}")), buf).expect("write seed");
        n += 1;
    }
    n += from_topic(&batch_dir, &index_dir);
    println!("wrote {n} seeds under {}", root.display());
}

fn b(s: &[u8]) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s))
}

fn encoded_cases() -> Vec<(Vec<Record>, Option<ProducerSeq>, u64)> {
    let header = |k: &str, v: Option<Bytes>| Header {
        key: k.into(),
        value: v,
    };
    vec![
        (vec![Record::value("hello")], None, 0),
        (vec![Record::keyed("k", "v"), Record::default()], None, 100),
        (
            vec![Record {
                timestamp: Some(i64::MIN),
                key: b(b""),
                value: b(b""),
                headers: vec![header("", None), header("trace-id", b(b"\x00\xff\x01"))],
            }],
            None,
            u64::MAX - 1,
        ),
        (
            (0..20)
                .map(|i| Record {
                    timestamp: Some(if i % 2 == 0 { i64::MAX - i } else { -i }),
                    key: (i % 3 != 0).then(|| Bytes::from(vec![i as u8; i as usize])),
                    value: (i % 4 != 0).then(|| Bytes::from(vec![0xa5; 3 * i as usize])),
                    headers: (0..i % 3).map(|h| header(&format!("h{h}"), b(b"x"))).collect(),
                })
                .collect(),
            Some(ProducerSeq {
                producer_id: 7,
                sequence: 3,
            }),
            1 << 40,
        ),
        (
            vec![
                Record {
                    timestamp: None,
                    key: None,
                    value: None,
                    headers: vec![]
                };
                3
            ],
            Some(ProducerSeq {
                producer_id: u64::MAX,
                sequence: u64::MAX,
            }),
            42,
        ),
    ]
}

/// Runs a small topic through a few rolls with an idempotent producer and copies its files.
fn from_topic(batch_dir: &Path, index_dir: &Path) -> usize {
    let dir = std::env::temp_dir().join(format!("braid-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fs: SharedFs = std::sync::Arc::new(StdFs::new());
        let cfg = TopicConfig {
            segment_bytes_max: 4096,
            index_interval_bytes: 256,
            maintenance_interval: None,
            segment_age_max: None,
            ..TopicConfig::default()
        };
        let topic = Topic::open(fs, &dir, cfg).await.expect("open topic");
        let p = topic.partition(0).expect("partition");
        for seq in 0..40u64 {
            let recs = (0..5)
                .map(|i| Record {
                    timestamp: Some((seq * 5 + i) as i64 * 1000),
                    ..Record::keyed(
                        format!("key-{i}"),
                        format!("value-{seq}-{i}-{}", "x".repeat(i as usize * 7)),
                    )
                })
                .collect();
            let producer = ProducerSeq {
                producer_id: 1 + seq % 2,
                sequence: seq / 2,
            };
            p.append_idempotent(recs, producer).await.expect("append");
        }
        topic.close().await.expect("close");
    });
    let mut n = 0;
    let part = dir.join("0");
    let mut names: Vec<_> = std::fs::read_dir(&part)
        .expect("read partition dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let bytes = std::fs::read(part.join(&name)).expect("read file");
        if name.ends_with(".log") {
            // Split into batches: batch_len is the u32 at byte 8.
            let mut pos = 0;
            while pos + 12 <= bytes.len() {
                let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes")) as usize;
                std::fs::write(batch_dir.join(format!("{name}-{pos}")), &bytes[pos..pos + len])
                    .expect("write");
                n += 1;
                pos += len;
            }
        } else if name.ends_with(".snapshot") {
            std::fs::write(batch_dir.join(&name), &bytes).expect("write");
            n += 1;
        } else if name.ends_with(".idx") || name.ends_with(".timeindex") {
            let seg_len =
                std::fs::metadata(part.join(name.replace(".timeindex", ".log").replace(".idx", ".log")))
                    .expect("segment")
                    .len() as u32;
            let mut seed = seg_len.to_le_bytes().to_vec();
            seed.extend_from_slice(&bytes);
            std::fs::write(index_dir.join(&name), seed).expect("write");
            n += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    n
}
