//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, never on in a normal
//! build): the producer-snapshot and index decoders are crate-private, so these wrappers decode
//! arbitrary bytes and hand back the re-encoded form, which lets a target check that whatever
//! decodes also round-trips.

use super::index;
use super::producer::ProducerState;

/// Decodes a producer snapshot (`.snapshot`) and re-encodes the state it holds.
pub fn producer_snapshot_roundtrip(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    ProducerState::decode(bytes).map(|s| s.encode())
}

/// Decodes an offset index (`.idx`) checked against a segment of `segment_len` bytes and
/// re-encodes its entries.
pub fn offset_index_roundtrip(bytes: &[u8], segment_len: u64) -> Result<Vec<u8>, &'static str> {
    index::decode_offsets(bytes, segment_len).map(|e| index::encode_offsets(&e))
}

/// Decodes a time index (`.timeindex`) and re-encodes its entries.
pub fn time_index_roundtrip(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    index::decode_times(bytes).map(|e| index::encode_times(&e))
}
