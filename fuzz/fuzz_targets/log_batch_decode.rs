//! Fuzzes the record-batch decoder (`format::decode_batch`: `BatchHeader::parse`, `verify_crc`,
//! `decode_records`) and the producer-snapshot decoder with the same bytes.
//!
//! Nothing may panic or allocate without bound. When a batch decodes, its records are encoded
//! again with `encode_batch` (same producer, same timestamps, same base offset) and must decode
//! to the same records; when the input's offsets are dense the re-encoded record bytes must
//! equal the input's, since the record encoding is canonical. libFuzzer almost never guesses a
//! CRC32C, so every input is also tried with its checksum recomputed, which lets mutations reach
//! the record decoder.

#![no_main]

use braid_storage::log::format::{
    decode_batch, encode_batch, set_base_offset, BATCH_CRC_START, BATCH_HEADER_LEN,
};
use braid_storage::log::fuzzing::producer_snapshot_roundtrip;
use braid_storage::log::{LogRecord, Record};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// Large enough for any input libFuzzer makes (`-max_len` defaults to 4 KiB), small enough that
/// a damaged length is refused before anything is allocated for it.
const BATCH_BYTES_MAX: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    check_batch(data);
    if let Some(fixed) = with_batch_crc(data) {
        check_batch(&fixed);
    }
    check_snapshot(data);
    if let Some(fixed) = with_snapshot_crc(data) {
        check_snapshot(&fixed);
    }
});

fn check_batch(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let Ok((header, records)) = decode_batch(&bytes, BATCH_BYTES_MAX) else {
        return;
    };
    let batch_len = header.batch_len as usize;
    assert!(batch_len <= data.len() && batch_len <= BATCH_BYTES_MAX as usize);
    assert_eq!(records.len(), header.record_count as usize);
    assert!(
        records.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets not increasing"
    );
    assert!(records.first().is_some_and(|r| r.offset >= header.base_offset));
    assert_eq!(records.last().map(|r| r.offset), Some(header.last_offset()));

    let input: Vec<Record> = records
        .iter()
        .map(|r| Record {
            timestamp: Some(r.timestamp),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
        })
        .collect();
    // `now_us` is never used: every record carries its timestamp.
    let encoded = encode_batch(&input, header.producer(), i64::MIN).expect("decoded records re-encode");
    let mut buf = encoded.bytes().to_vec();
    set_base_offset(&mut buf, header.base_offset);
    let (again_header, again) =
        decode_batch(&Bytes::from(buf.clone()), u32::MAX).expect("a re-encoded batch decodes");
    assert_eq!(again_header.base_offset, header.base_offset);
    assert_eq!(again_header.record_count, header.record_count);
    assert_eq!(again_header.producer(), header.producer());
    assert_eq!(again_header.first_timestamp, records[0].timestamp);
    assert_eq!(
        again_header.max_timestamp,
        records.iter().map(|r| r.timestamp).max().unwrap_or(i64::MIN)
    );
    // encode_batch numbers records densely; compare everything but the offsets.
    let strip = |r: &LogRecord| (r.timestamp, r.key.clone(), r.value.clone(), r.headers.clone());
    assert_eq!(
        again.iter().map(strip).collect::<Vec<_>>(),
        records.iter().map(strip).collect::<Vec<_>>()
    );
    let dense = header.last_offset_delta == header.record_count - 1;
    if dense {
        assert_eq!(again, records);
        assert_eq!(again_header.last_offset_delta, header.last_offset_delta);
        assert_eq!(
            &buf[BATCH_HEADER_LEN..],
            &data[BATCH_HEADER_LEN..batch_len],
            "record bytes differ"
        );
        assert_eq!(&buf[BATCH_CRC_START..32], &data[BATCH_CRC_START..32]);
    }
}

/// `data` with the batch checksum recomputed over `24..min(batch_len, len)`.
fn with_batch_crc(data: &[u8]) -> Option<Vec<u8>> {
    let len_field: [u8; 4] = data.get(8..12)?.try_into().ok()?;
    let end =
        (u32::from_le_bytes(len_field) as usize).clamp(BATCH_CRC_START, data.len().max(BATCH_CRC_START));
    let crc = crc32c::crc32c(data.get(BATCH_CRC_START..end)?);
    let mut fixed = data.to_vec();
    fixed[20..24].copy_from_slice(&crc.to_le_bytes());
    (fixed != data).then_some(fixed)
}

fn check_snapshot(data: &[u8]) {
    let Ok(encoded) = producer_snapshot_roundtrip(data) else {
        return;
    };
    // A snapshot decodes to a state; encoding that state is canonical (sorted producers,
    // duplicates collapsed), so it decodes and re-encodes to itself and is never longer.
    assert!(encoded.len() <= data.len());
    let again = producer_snapshot_roundtrip(&encoded).expect("a re-encoded snapshot decodes");
    assert_eq!(again, encoded);
}

/// `data` with its trailing snapshot checksum recomputed.
fn with_snapshot_crc(data: &[u8]) -> Option<Vec<u8>> {
    let split = data.len().checked_sub(4)?;
    let mut fixed = data.to_vec();
    let crc = crc32c::crc32c(&data[..split]);
    fixed[split..].copy_from_slice(&crc.to_le_bytes());
    (fixed != data).then_some(fixed)
}
