//! Property tests for LogCore.
//!
//! - Codec: `encode_batch` → stamp a base offset → `decode_batch` is the identity for arbitrary
//!   records (null, empty and binary keys and values, headers, timestamps up to the i64
//!   extremes), producers and base offsets; every strict prefix of a batch is refused, never
//!   half-decoded.
//! - Model: random operations on a two-partition topic with tiny segments (appends that fit,
//!   appends bigger than a segment, idempotent appends and their retries, reads from any offset
//!   with any byte budget, look-ups by timestamp, close and reopen) are checked after every
//!   step against an in-memory model, a `Vec` of records per partition.
//!
//! Each case builds its own tokio runtime and temporary directory; case counts keep the file
//! well under a minute in a debug build.

#[path = "support/helpers.rs"]
mod support;

use std::collections::HashMap;

use braid_storage::log::format::{decode_batch, encode_batch, set_base_offset, DecodeError};
use braid_storage::log::BatchBuilder;
use braid_storage::log::{Durability, Header, LogRecord, ProducerSeq, Record, Topic, TopicConfig};
use braid_storage::Error;
use bytes::Bytes;
use proptest::prelude::*;
use support::*;

// ---------------------------------------------------------------------------------------------
// Strategies

fn bytes(max_len: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max_len).prop_map(Bytes::from)
}

/// Timestamps: mostly a small range (so look-ups hit and ties happen), sometimes the extremes.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => -50i64..1000,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    ("\\PC{0,6}", prop::option::of(bytes(8))).prop_map(|(key, value)| Header { key, value })
}

fn record(value_max: usize) -> impl Strategy<Value = Record> {
    (
        prop::option::of(timestamp()),
        prop::option::of(bytes(8)),
        prop::option::of(bytes(value_max)),
        prop::collection::vec(header(), 0..3),
    )
        .prop_map(|(timestamp, key, value, headers)| Record {
            timestamp,
            key,
            value,
            headers,
        })
}

/// A record that always carries its timestamp, so the model knows it.
fn timed_record(value_max: usize) -> impl Strategy<Value = Record> {
    (timestamp(), record(value_max)).prop_map(|(ts, r)| Record {
        timestamp: Some(ts),
        ..r
    })
}

fn producer() -> impl Strategy<Value = Option<ProducerSeq>> {
    prop::option::of(
        (1..=u64::MAX, any::<u64>()).prop_map(|(producer_id, sequence)| ProducerSeq {
            producer_id,
            sequence,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Codec

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn batch_encode_decode_is_identity(
        records in prop::collection::vec(record(64), 1..8),
        producer in producer(),
        now_us in timestamp(),
        base_choice in prop_oneof![Just(0u64), 0u64..1 << 40, any::<u64>(), Just(u64::MAX)],
        trailing in bytes(16),
    ) {
        let n = records.len() as u64;
        // The last offset must leave room for "one past it".
        let base = base_choice.min(u64::MAX - n);
        let encoded = encode_batch(&records, producer, now_us).expect("encode");
        let mut buf = encoded.bytes().to_vec();
        set_base_offset(&mut buf, base);
        let batch_len = buf.len();

        let (h, out) = decode_batch(&Bytes::from(buf.clone()), batch_len as u32).expect("decode");
        let want: Vec<LogRecord> = records
            .iter()
            .zip(base..)
            .map(|(r, offset)| LogRecord {
                offset,
                timestamp: r.timestamp.unwrap_or(now_us),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            })
            .collect();
        prop_assert_eq!(&out, &want);
        prop_assert_eq!(h.base_offset, base);
        prop_assert_eq!(h.batch_len as usize, batch_len);
        prop_assert_eq!(h.record_count as u64, n);
        prop_assert_eq!(h.last_offset(), base + n - 1);
        prop_assert_eq!(h.producer(), producer);
        prop_assert_eq!(h.first_timestamp, want[0].timestamp);
        prop_assert_eq!(Some(h.max_timestamp), want.iter().map(|r| r.timestamp).max());

        // Bytes after the batch (the next batch, or garbage) do not change what it decodes to.
        let mut longer = buf.clone();
        longer.extend_from_slice(&trailing);
        let (h2, out2) = decode_batch(&Bytes::from(longer), u32::MAX).expect("decode with trailing bytes");
        prop_assert_eq!(h2, h);
        prop_assert_eq!(out2, want);

        // A batch longer than batch_bytes_max is refused by its length alone.
        let too_long = decode_batch(&Bytes::from(buf.clone()), batch_len as u32 - 1);
        prop_assert_eq!(too_long.err(), Some(DecodeError::BadLength(batch_len as u32)));

        // Every strict prefix is refused (a torn write never half-decodes).
        for cut in 0..batch_len {
            prop_assert!(decode_batch(&Bytes::copy_from_slice(&buf[..cut]), u32::MAX).is_err(), "prefix of {cut} bytes decoded");
        }
    }

    /// A batch a producer fills record by record is the same bytes `encode_batch` makes: with
    /// `push` for every record, and with `push_with` writing the value in place for records
    /// that have one and no headers.
    #[test]
    fn batch_builder_makes_the_bytes_encode_batch_makes(
        records in prop::collection::vec(record(300), 1..40),
        producer in producer(),
        now_us in timestamp(),
        reserve in 0usize..4096,
    ) {
        let want = encode_batch(&records, producer, now_us).expect("encode");
        let mut by_push = BatchBuilder::new(now_us);
        let mut in_place = BatchBuilder::with_buffer(vec![7u8; 100], now_us);
        in_place.reserve(reserve);
        prop_assert!(in_place.is_empty());
        for r in &records {
            by_push.push(r.key.as_deref(), r.value.as_deref(), &r.headers, r.timestamp).expect("push");
            match (&r.value, r.headers.is_empty()) {
                (Some(v), true) => in_place
                    .push_with(r.key.as_deref(), r.timestamp, |buf| buf.extend_from_slice(v))
                    .expect("push_with"),
                _ => in_place.push_record(r).expect("push_record"),
            }
        }
        prop_assert_eq!(by_push.record_count() as usize, records.len());
        prop_assert_eq!(in_place.encoded_len(), want.len());
        let by_push = by_push.finish(producer).expect("finish");
        let in_place = in_place.finish(producer).expect("finish");
        prop_assert_eq!(by_push.bytes(), want.bytes());
        prop_assert_eq!(in_place.bytes(), want.bytes());
    }
}

#[test]
fn an_empty_batch_builder_does_not_finish() {
    assert!(BatchBuilder::new(0).finish(None).is_err());
}

// ---------------------------------------------------------------------------------------------
// Model

const PARTITIONS: u32 = 2;
const PRODUCERS: u64 = 2;

#[derive(Debug, Clone)]
enum Op {
    /// Appends `records` to partition `p` as one batch.
    Append {
        p: u32,
        records: Vec<Record>,
    },
    /// Several appends to partition `p` in flight at once, so the writer commits them as one
    /// group (and may roll in the middle of it).
    Concurrent {
        p: u32,
        batches: Vec<Vec<Record>>,
    },
    /// An idempotent append: the producer's next sequence, or (`retry`) a resend of one of its
    /// last `BATCHES_KEPT` sequences, picked by `pick`.
    Idempotent {
        p: u32,
        producer_id: u64,
        retry: bool,
        pick: usize,
        records: Vec<Record>,
    },
    /// Reads from `end * from_pct / 100` (or past the end when `from_pct` > 100).
    Read {
        p: u32,
        from_pct: u32,
        max_bytes: usize,
    },
    OffsetForTimestamp {
        p: u32,
        ts: i64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PARTITIONS;
    prop_oneof![
        8 => (p.clone(), prop::collection::vec(timed_record(200), 1..6))
            .prop_map(|(p, records)| Op::Append { p, records }),
        // Bigger than a quarter of a segment and up to twice one: forces rolls, and batches
        // larger than segment_bytes_max.
        3 => (p.clone(), prop::collection::vec(timed_record(3000), 1..4))
            .prop_map(|(p, records)| Op::Append { p, records }),
        2 => (p.clone(), prop::collection::vec(prop::collection::vec(timed_record(1500), 1..4), 2..8))
            .prop_map(|(p, batches)| Op::Concurrent { p, batches }),
        3 => (p.clone(), 1..=PRODUCERS, any::<bool>(), 0..8usize, prop::collection::vec(timed_record(100), 1..4))
            .prop_map(|(p, producer_id, retry, pick, records)| Op::Idempotent { p, producer_id, retry, pick, records }),
        6 => (p.clone(), 0..=105u32, prop_oneof![Just(0usize), 1..600usize, 0..12_000usize])
            .prop_map(|(p, from_pct, max_bytes)| Op::Read { p, from_pct, max_bytes }),
        3 => (p, timestamp()).prop_map(|(p, ts)| Op::OffsetForTimestamp { p, ts }),
        1 => Just(Op::Reopen),
    ]
}

/// Batches an idempotent producer's retry is still recognised for (the log keeps five).
const BATCHES_KEPT: usize = 5;

/// An idempotent batch as written: (sequence, base_offset, last_offset).
type Written = (u64, u64, u64);

#[derive(Debug, Default)]
struct Model {
    records: Vec<Vec<LogRecord>>,
    /// Per partition and producer: every batch written.
    producers: Vec<HashMap<u64, Vec<Written>>>,
}

impl Model {
    fn new() -> Self {
        Model {
            records: vec![Vec::new(); PARTITIONS as usize],
            producers: vec![HashMap::new(); PARTITIONS as usize],
        }
    }

    fn end(&self, p: u32) -> u64 {
        self.records[p as usize].len() as u64
    }

    fn append(&mut self, p: u32, records: &[Record]) -> (u64, u64) {
        let log = &mut self.records[p as usize];
        let base = log.len() as u64;
        for (r, offset) in records.iter().zip(base..) {
            log.push(LogRecord {
                offset,
                timestamp: r.timestamp.expect("model records carry timestamps"),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            });
        }
        (base, log.len() as u64 - 1)
    }

    fn offset_for_timestamp(&self, p: u32, ts: i64) -> Option<u64> {
        self.records[p as usize]
            .iter()
            .find(|r| r.timestamp >= ts)
            .map(|r| r.offset)
    }
}

fn model_config(index_interval_bytes: u32, durability: Durability) -> TopicConfig {
    TopicConfig {
        partitions: PARTITIONS,
        durability,
        index_interval_bytes,
        ..small_config()
    }
}

async fn check_all(topic: &Topic, model: &Model, step: usize) {
    for p in 0..PARTITIONS {
        let part = topic.partition(p).expect("partition");
        assert_eq!(
            part.end_offset(),
            model.end(p),
            "step {step}: end offset of partition {p}"
        );
        assert_eq!(
            part.start_offset(),
            0,
            "step {step}: start offset of partition {p}"
        );
        let all = read_all(&part, 0).await;
        assert_eq!(
            all, model.records[p as usize],
            "step {step}: contents of partition {p}"
        );
    }
}

async fn run_model(ops: Vec<Op>, index_interval_bytes: u32, durability: Durability) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let cfg = model_config(index_interval_bytes, durability);
    let mut topic = open(&fs, dir.path(), cfg.clone()).await;
    let mut model = Model::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { p, records } => {
                let a = topic.append(p, records.clone()).await.expect("append");
                let (base, last) = model.append(p, &records);
                assert_eq!(
                    (a.base_offset, a.last_offset, a.duplicate),
                    (base, last, false),
                    "step {step}"
                );
            }
            Op::Concurrent { p, batches } => {
                let part = topic.partition(p).expect("partition");
                let appends = batches.iter().map(|b| part.append(b.clone()));
                let mut done: Vec<_> = futures::future::join_all(appends)
                    .await
                    .into_iter()
                    .zip(&batches)
                    .map(|(a, b)| (a.expect("concurrent append"), b))
                    .collect();
                // The writer may order queued appends as it likes; together they must fill
                // the offsets after the old end without gaps, each batch contiguous.
                done.sort_by_key(|(a, _)| a.base_offset);
                for (a, records) in done {
                    let (base, last) = model.append(p, records);
                    assert_eq!(
                        (a.base_offset, a.last_offset, a.duplicate),
                        (base, last, false),
                        "step {step}"
                    );
                }
            }
            Op::Idempotent {
                p,
                producer_id,
                retry,
                pick,
                records,
            } => {
                let sent = model.producers[p as usize].entry(producer_id).or_default();
                let kept = &sent[sent.len().saturating_sub(BATCHES_KEPT)..];
                let part = topic.partition(p).expect("partition");
                if retry && !kept.is_empty() {
                    let (sequence, base, last) = kept[pick % kept.len()];
                    let a = part
                        .append_idempotent(
                            records,
                            ProducerSeq {
                                producer_id,
                                sequence,
                            },
                        )
                        .await
                        .expect("retry");
                    assert_eq!(
                        (a.base_offset, a.last_offset, a.duplicate),
                        (base, last, true),
                        "step {step}: retry of {sequence}"
                    );
                } else {
                    let sequence = sent.last().map_or(0, |s| s.0 + 1);
                    let a = part
                        .append_idempotent(
                            records.clone(),
                            ProducerSeq {
                                producer_id,
                                sequence,
                            },
                        )
                        .await
                        .expect("idempotent append");
                    let (base, last) = model.append(p, &records);
                    model.producers[p as usize]
                        .get_mut(&producer_id)
                        .expect("entry made above")
                        .push((sequence, base, last));
                    assert_eq!(
                        (a.base_offset, a.last_offset, a.duplicate),
                        (base, last, false),
                        "step {step}"
                    );
                }
            }
            Op::Read {
                p,
                from_pct,
                max_bytes,
            } => {
                let end = model.end(p);
                let from = if from_pct > 100 {
                    end + u64::from(from_pct - 100)
                } else {
                    end * u64::from(from_pct) / 100
                };
                let part = topic.partition(p).expect("partition");
                let res = part.read(from, max_bytes).await;
                if from > end {
                    assert!(
                        matches!(res, Err(Error::OffsetOutOfRange { requested, log_end, .. }) if requested == from && log_end == end),
                        "step {step}: read past the end from {from} (end {end}): {res:?}"
                    );
                    continue;
                }
                let res = res.expect("read");
                let n = res.records.len() as u64;
                if from < end {
                    assert!(
                        n > 0,
                        "step {step}: read from {from} (end {end}, max_bytes {max_bytes}) returned nothing"
                    );
                }
                let want = &model.records[p as usize][from as usize..(from + n) as usize];
                assert_eq!(
                    res.records, want,
                    "step {step}: read from {from}, max_bytes {max_bytes}"
                );
                assert_eq!(
                    res.next_offset,
                    from + n,
                    "step {step}: next offset after reading from {from}"
                );
            }
            Op::OffsetForTimestamp { p, ts } => {
                let got = topic
                    .partition(p)
                    .expect("partition")
                    .offset_for_timestamp(ts)
                    .await
                    .expect("offset_for_timestamp");
                assert_eq!(
                    got,
                    model.offset_for_timestamp(p, ts),
                    "step {step}: offset_for_timestamp({ts})"
                );
            }
            Op::Reopen => {
                topic.close().await.expect("close");
                drop(topic);
                topic = open(&fs, dir.path(), cfg.clone()).await;
                check_all(&topic, &model, step).await;
            }
        }
        for p in 0..PARTITIONS {
            assert_eq!(
                topic.partition(p).expect("partition").end_offset(),
                model.end(p),
                "step {step}: end offset"
            );
        }
    }
    check_all(&topic, &model, usize::MAX).await;
    topic.close().await.expect("close");
    drop(topic);
    let topic = open(&fs, dir.path(), cfg).await;
    check_all(&topic, &model, usize::MAX).await;
    topic.close().await.expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..120),
        index_interval_bytes in prop_oneof![Just(1u32), 1..600u32, Just(4096u32)],
        durability in prop_oneof![
            Just(Durability::None),
            Just(Durability::Sync),
            (0..300u64).prop_map(|max_wait_us| Durability::Group { max_wait_us }),
        ],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run_model(ops, index_interval_bytes, durability));
    }
}
