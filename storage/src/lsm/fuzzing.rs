//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, never on in a normal
//! build): decode an SSTable block from arbitrary bytes the way a reader does, without a file.

use std::sync::Arc;

use bytes::Bytes;

use super::format::{Block, BlockBuilder, DecodeError};

/// Decodes a block (no crc trailer) and walks every entry, as a table reader would after the
/// crc check. Returns the entries as (internal key, value).
pub fn decode_block(bytes: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, DecodeError> {
    let block = Arc::new(Block::decode(Bytes::copy_from_slice(bytes))?);
    let mut it = block.iter();
    it.seek_to_first()?;
    let mut out = Vec::new();
    while it.valid() {
        out.push((it.key().to_vec(), it.value_slice().to_vec()));
        it.advance()?;
    }
    Ok(out)
}

/// Seeks a decoded block to `target` (an internal key) and returns the entry found, if any.
pub fn seek_block(bytes: &[u8], target: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>, DecodeError> {
    let block = Arc::new(Block::decode(Bytes::copy_from_slice(bytes))?);
    let mut it = block.iter();
    it.seek(target)?;
    Ok(it
        .valid()
        .then(|| (it.key().to_vec(), it.value_slice().to_vec())))
}

/// Encodes entries (which must be in internal-key order) as a block without its crc trailer.
pub fn encode_block(entries: &[(Vec<u8>, Vec<u8>)], restart_interval: usize) -> Vec<u8> {
    let mut b = BlockBuilder::new(restart_interval);
    for (k, v) in entries {
        b.add(k, v);
    }
    let mut out = Vec::new();
    let len = b.finish_into(&mut out) as usize;
    out.truncate(len);
    out
}
