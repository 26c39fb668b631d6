//! Fuzzes the SSTable block decoder (`lsm::format::Block::decode` and `BlockIter`: restart
//! array, prefix-compressed entries, internal-key trailers, seek), and with the same bytes the
//! other LSM decoders: block crc check, bloom filter, meta block, footer and manifest.
//!
//! Nothing may panic or allocate without bound. When a block decodes and its keys are in
//! internal-key order, encoding the entries again must decode to the same entries, and seeking
//! to any entry's key must land on that entry. The input is tried as a bare block (what the
//! reader decodes after the crc check) and as a block followed by its crc32c, recomputed, so
//! that mutations reach past the checksum.

#![no_main]

use std::cmp::Ordering;

use braid_storage::lsm::format::{
    compare_internal, decode_manifest, verify_block_crc, Bloom, Footer, TableMeta,
};
use braid_storage::lsm::fuzzing::{decode_block, encode_block, seek_block};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_block(data);
    let mut with_crc = data.to_vec();
    with_crc.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let body = verify_block_crc(&with_crc).expect("a freshly computed crc verifies");
    assert_eq!(body, data);
    let _ = verify_block_crc(data);

    if let Ok(bloom) = Bloom::decode(Bytes::copy_from_slice(data)) {
        let _ = bloom.may_contain(braid_storage::lsm::format::bloom_hash(data));
    }
    if let Ok(meta) = TableMeta::decode(data) {
        assert_eq!(TableMeta::decode(&meta.encode()).expect("meta round-trips"), meta);
    }
    let _ = Footer::decode(data, data.len() as u64);
    let _ = decode_manifest(data);
});

fn check_block(data: &[u8]) {
    let Ok(entries) = decode_block(data) else { return };
    assert!(entries.len() <= data.len(), "more entries than bytes");
    let sorted = entries
        .windows(2)
        .all(|w| compare_internal(&w[0].0, &w[1].0) == Ordering::Less);
    if !sorted {
        return;
    }
    let interval = usize::from(data.first().copied().unwrap_or(1) % 17).max(1);
    let again = encode_block(&entries, interval);
    let round = decode_block(&again).expect("an encoded block decodes");
    assert_eq!(round, entries, "block does not round-trip");
    for (k, v) in entries.iter().take(64) {
        let found = seek_block(data, k).expect("seek in a block that decodes");
        assert_eq!(found.as_ref().map(|(fk, fv)| (fk, fv)), Some((k, v)), "seek missed an entry");
    }
}
