//! Fuzzes the offset-index (`.idx`) and time-index (`.timeindex`) decoders. The first 4 bytes of
//! an input are the segment length the offset index is checked against (little-endian u32); the
//! rest is the file, fed to both decoders.
//!
//! Nothing may panic. What decodes must re-encode to the same bytes, except the 10 reserved
//! header bytes that the decoder ignores and the encoder writes as zeros.

#![no_main]

use braid_storage::log::format::INDEX_HEADER_LEN;
use braid_storage::log::fuzzing::{offset_index_roundtrip, time_index_roundtrip};
use libfuzzer_sys::fuzz_target;

/// magic [4] | version | kind, then the reserved bytes up to `INDEX_HEADER_LEN`.
const RESERVED_START: usize = 6;

fuzz_target!(|data: &[u8]| {
    let Some((len, file)) = data.split_first_chunk::<4>() else {
        return;
    };
    let segment_len = u64::from(u32::from_le_bytes(*len));
    if let Ok(encoded) = offset_index_roundtrip(file, segment_len) {
        assert_eq!(encoded, canonical(file), "offset index does not round-trip");
    }
    if let Ok(encoded) = time_index_roundtrip(file) {
        assert_eq!(encoded, canonical(file), "time index does not round-trip");
    }
});

/// `file` with its reserved header bytes zeroed.
fn canonical(file: &[u8]) -> Vec<u8> {
    let mut c = file.to_vec();
    c[RESERVED_START..INDEX_HEADER_LEN].fill(0);
    c
}
