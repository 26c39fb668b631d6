//! Byte layouts of every LSM file, in one place: SSTable blocks (data, index, filter, meta), the
//! SSTable footer and the manifest. `storage/LSM-FORMAT.md` is the prose version of this file.
//! All fixed-width integers are little-endian; lengths inside blocks are LEB128 varints.
//!
//! What must stay true:
//! - Every decoder here takes bytes that came from disk and returns a [`DecodeError`] instead of
//!   panicking, indexing out of bounds or allocating more than the input holds.
//! - The internal key order (user key ascending, then sequence number descending) is the one
//!   order used by memtables, blocks, indexes, merges and compaction ([`compare_internal`]).
//! - A format change bumps the version byte of the structure it changes.
//!
//! SSTable file:
//! ```text
//! data block 0 | crc32c u32 | data block 1 | crc32c u32 | … | index block | crc32c u32 |
//! filter block | crc32c u32 | meta block | crc32c u32 | footer (48 bytes)
//! ```
//! Block (data and index):
//! ```text
//! { shared varint | unshared varint | value_len varint | key suffix [unshared] | value }*
//! restart offsets u32 * n | n u32
//! ```
//! An internal key is `user_key ++ trailer`, the trailer being the u64 `(seqno << 8) | kind`
//! written big-endian. Index values are `offset varint64 | len varint32` of a data block.

use std::cmp::Ordering;

use bytes::Bytes;

/// SSTable footer magic (last 4 bytes of every `.sst`).
pub const SST_MAGIC: [u8; 4] = *b"BRDT";
pub const SST_VERSION: u8 = 1;
pub const FOOTER_LEN: usize = 48;
/// Bytes after each block: its crc32c.
pub const BLOCK_TRAILER_LEN: usize = 4;
/// Manifest magic (first 4 bytes of `MANIFEST`).
pub const MANIFEST_MAGIC: [u8; 4] = *b"BRDM";
pub const MANIFEST_VERSION: u8 = 1;
pub const MANIFEST_HEADER_LEN: usize = 16;
/// Meta block version (inside the meta block, so that it can grow on its own).
pub const META_VERSION: u8 = 1;

/// Largest user key `apply` accepts, in bytes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Largest value `apply` accepts, in bytes.
pub const VALUE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Largest block a reader accepts: anything longer in a handle is corruption. A block holds at
/// least one entry, so this is above `KEY_BYTES_MAX + VALUE_BYTES_MAX`.
pub const BLOCK_DECODE_BYTES_MAX: u32 = 512 * 1024 * 1024;
/// Sequence numbers live in the top 56 bits of the trailer.
pub const SEQNO_MAX: u64 = (1 << 56) - 1;
/// Levels a manifest may describe.
pub const LEVELS_MAX: usize = 16;
const TRAILER_LEN: usize = 8;

/// Why bytes do not decode. Mapped to `Error::Corruption` with file and position by callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete: {needed} bytes needed, {available} available")]
    Incomplete { needed: usize, available: usize },
    #[error("bad magic number")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

impl DecodeError {
    fn malformed(at: usize, what: &'static str) -> Self {
        DecodeError::Malformed { at, what }
    }
}

/// Put or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Delete = 0,
    Put = 1,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Delete),
            1 => Some(Kind::Put),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Internal keys

/// Appends the internal key for `(user_key, seqno, kind)` to `out`.
pub fn push_internal_key(out: &mut Vec<u8>, user_key: &[u8], seqno: u64, kind: Kind) {
    out.extend_from_slice(user_key);
    out.extend_from_slice(&((seqno << 8) | kind as u64).to_be_bytes());
}

/// Splits an internal key into user key, seqno and kind. `None` when it is too short or the
/// kind byte is unknown.
pub fn split_internal_key(ikey: &[u8]) -> Option<(&[u8], u64, Kind)> {
    let at = ikey.len().checked_sub(TRAILER_LEN)?;
    let (user, trailer) = ikey.split_at(at);
    let trailer = u64::from_be_bytes(trailer.try_into().ok()?);
    let kind = Kind::from_u8((trailer & 0xff) as u8)?;
    Some((user, trailer >> 8, kind))
}

/// The user-key part of a validated internal key (callers only pass keys that were checked
/// when decoded or built here).
pub fn user_key(ikey: &[u8]) -> &[u8] {
    ikey.get(..ikey.len().saturating_sub(TRAILER_LEN))
        .unwrap_or(&[])
}

fn trailer(ikey: &[u8]) -> u64 {
    ikey.len()
        .checked_sub(TRAILER_LEN)
        .and_then(|at| ikey.get(at..))
        .and_then(|t| t.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// User key ascending, then sequence number descending (newest version first).
pub fn compare_internal(a: &[u8], b: &[u8]) -> Ordering {
    user_key(a)
        .cmp(user_key(b))
        .then_with(|| trailer(b).cmp(&trailer(a)))
}

// ---------------------------------------------------------------------------------------------
// Varints and a bounds-checked cursor

pub fn put_varint32(out: &mut Vec<u8>, v: u32) {
    put_varint64(out, u64::from(v))
}

pub fn put_varint64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub use crate::codec::Cursor;

impl From<crate::codec::CursorError> for DecodeError {
    fn from(e: crate::codec::CursorError) -> Self {
        match e {
            crate::codec::CursorError::Incomplete { needed, available } => {
                DecodeError::Incomplete { needed, available }
            }
            crate::codec::CursorError::Malformed { at, what } => {
                DecodeError::Malformed { at, what }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks

/// Where a block lives in an SSTable: `len` excludes the 4-byte crc trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHandle {
    pub offset: u64,
    pub len: u32,
}

impl BlockHandle {
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        put_varint64(out, self.offset);
        put_varint32(out, self.len);
    }

    pub fn decode(bytes: &[u8]) -> Result<BlockHandle, DecodeError> {
        let mut c = Cursor::new(bytes);
        let offset = c.varint64()?;
        let len = c.varint32()?;
        if c.remaining() != 0 {
            return Err(DecodeError::malformed(
                c.pos,
                "trailing bytes after block handle",
            ));
        }
        if len > BLOCK_DECODE_BYTES_MAX {
            return Err(DecodeError::malformed(
                0,
                "block handle longer than the block bound",
            ));
        }
        Ok(BlockHandle { offset, len })
    }

    /// Bytes on disk including the crc trailer.
    pub fn len_on_disk(&self) -> u64 {
        u64::from(self.len) + BLOCK_TRAILER_LEN as u64
    }
}

/// Builds a block: prefix-compressed entries with a restart point (full key) every
/// `restart_interval` entries, so that a reader can binary-search the restarts and decode at
/// most `restart_interval` entries linearly.
#[derive(Debug)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    restart_interval: usize,
    since_restart: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    pub fn new(restart_interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::with_capacity(4096 + 512),
            restarts: Vec::new(),
            restart_interval: restart_interval.max(1),
            since_restart: 0,
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Adds an entry; keys must arrive in internal-key order.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(
            self.entries == 0 || compare_internal(&self.last_key, key) == Ordering::Less,
            "block keys out of order"
        );
        let shared = if self.entries == 0 || self.since_restart >= self.restart_interval {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let suffix = key.get(shared..).unwrap_or(&[]);
        put_varint32(&mut self.buf, shared as u32);
        put_varint32(&mut self.buf, suffix.len() as u32);
        put_varint32(&mut self.buf, value.len() as u32);
        self.buf.extend_from_slice(suffix);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.since_restart += 1;
        self.entries += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes the finished block will take, restarts included.
    pub fn estimated_len(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Finishes the block and appends it plus its crc32c trailer to `out`; returns the block's
    /// length without the trailer. The builder is reset for the next block.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) -> u32 {
        let start = out.len();
        out.extend_from_slice(&self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        let len = out.len() - start;
        let crc = crc32c::crc32c(out.get(start..).unwrap_or(&[]));
        out.extend_from_slice(&crc.to_le_bytes());
        self.buf.clear();
        self.restarts.clear();
        self.since_restart = 0;
        self.last_key.clear();
        self.entries = 0;
        len as u32
    }
}

/// Checks a block's crc32c trailer; `raw` is the block followed by its 4-byte crc. Returns the
/// block without the trailer.
pub fn verify_block_crc(raw: &[u8]) -> Result<&[u8], DecodeError> {
    let at = raw
        .len()
        .checked_sub(BLOCK_TRAILER_LEN)
        .ok_or(DecodeError::Incomplete {
            needed: BLOCK_TRAILER_LEN,
            available: raw.len(),
        })?;
    let (body, crc) = raw.split_at(at);
    let stored = u32::from_le_bytes(
        crc.try_into()
            .map_err(|_| DecodeError::malformed(at, "crc"))?,
    );
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(DecodeError::CrcMismatch { stored, computed });
    }
    Ok(body)
}

/// A decoded block (data or index): the entries stay encoded; only the restart array was
/// checked. Cheap to share: the block cache hands out `Arc<Block>`.
#[derive(Debug, Clone)]
pub struct Block {
    data: Bytes,
    /// Where the restart array starts (= end of the entries).
    restarts_at: usize,
    restart_count: usize,
}

impl Block {
    /// Checks the restart array of a block (crc already verified): its count fits, every
    /// restart lies inside the entries, they increase and the first is 0.
    pub fn decode(data: Bytes) -> Result<Block, DecodeError> {
        let len = data.len();
        let mut c = Cursor::at(
            &data,
            len.checked_sub(4).ok_or(DecodeError::Incomplete {
                needed: 4,
                available: len,
            })?,
        );
        let count = c.u32()? as usize;
        let restarts_at = count
            .checked_mul(4)
            .and_then(|n| len.checked_sub(4)?.checked_sub(n))
            .ok_or(DecodeError::malformed(
                len.saturating_sub(4),
                "restart count larger than the block",
            ))?;
        if count == 0 && restarts_at != 0 {
            return Err(DecodeError::malformed(0, "entries without a restart point"));
        }
        let mut c = Cursor::at(&data, restarts_at);
        let mut prev: Option<u32> = None;
        for _ in 0..count {
            let at = c.pos;
            let r = c.u32()?;
            let ok = match prev {
                None => r == 0,
                Some(p) => r > p && (r as usize) < restarts_at,
            };
            if !ok {
                return Err(DecodeError::malformed(at, "restart points out of order"));
            }
            prev = Some(r);
        }
        Ok(Block {
            data,
            restarts_at,
            restart_count: count,
        })
    }

    /// Bytes held (for the block cache's accounting).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.restart_count == 0
    }

    fn restart(&self, i: usize) -> Result<usize, DecodeError> {
        let at = self.restarts_at + 4 * i;
        Ok(Cursor::at(&self.data, at).u32()? as usize)
    }

    /// Restart point `i`, or `usize::MAX` past the last one.
    fn restart_at_or_max(&self, i: usize) -> Result<usize, DecodeError> {
        if i < self.restart_count {
            self.restart(i)
        } else {
            Ok(usize::MAX)
        }
    }

    /// An iterator positioned before the first entry.
    pub fn iter(self: &std::sync::Arc<Self>) -> BlockIter {
        self.iter_with(Vec::new())
    }

    /// Like [`Block::iter`], decoding keys into `key_buf` (hand it back with
    /// [`BlockIter::into_key_buf`] to reuse its allocation).
    pub fn iter_with(self: &std::sync::Arc<Self>, mut key_buf: Vec<u8>) -> BlockIter {
        key_buf.clear();
        BlockIter {
            block: self.clone(),
            next_at: 0,
            next_restart: 0,
            // `Block::decode` checked that the first restart point is 0.
            next_restart_at: if self.restart_count > 0 {
                0
            } else {
                usize::MAX
            },
            key: key_buf,
            value: (0, 0),
            valid: false,
        }
    }
}

/// Walks a block's entries in order. Every step checks lengths against the block and that the
/// key still has a valid internal-key trailer.
#[derive(Debug)]
pub struct BlockIter {
    block: std::sync::Arc<Block>,
    /// Offset of the next entry to decode.
    next_at: usize,
    /// Index of the first restart point at or after `next_at`: a sequential walk checks that
    /// every restart lands on the start of an entry that shares nothing, exactly as a seek that
    /// jumps there assumes.
    next_restart: usize,
    /// Where restart point `next_restart` is (`usize::MAX` past the last): read once per
    /// restart instead of twice per entry.
    next_restart_at: usize,
    key: Vec<u8>,
    value: (usize, usize),
    valid: bool,
}

impl BlockIter {
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The key buffer, for reuse by the next iterator.
    pub fn into_key_buf(self) -> Vec<u8> {
        self.key
    }

    /// The current internal key (valid only when `valid()`).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The current value, sliced from the block without copying.
    pub fn value(&self) -> Bytes {
        self.block.data.slice(self.value.0..self.value.1)
    }

    pub fn value_slice(&self) -> &[u8] {
        self.block
            .data
            .get(self.value.0..self.value.1)
            .unwrap_or(&[])
    }

    /// Whether an entry follows the current one in this block.
    pub fn has_next(&self) -> bool {
        self.next_at < self.block.restarts_at
    }

    /// Offset inside the block of the entry after the current one (for error positions).
    pub fn position(&self) -> usize {
        self.next_at
    }

    /// Decodes the entry at `next_at`; `valid` turns false at the end of the entries.
    pub fn advance(&mut self) -> Result<(), DecodeError> {
        if self.next_at >= self.block.restarts_at {
            self.valid = false;
            return Ok(());
        }
        let entries = self.block.data.get(..self.block.restarts_at).unwrap_or(&[]);
        let start = self.next_at;
        let (shared, unshared, value_len, mut c) = match entries.get(start..start + 3) {
            // The three lengths of a short entry are one byte each: read them at once.
            Some(&[a, b, v]) if (a | b | v) < 0x80 => (
                usize::from(a),
                usize::from(b),
                usize::from(v),
                Cursor::at(entries, start + 3),
            ),
            _ => {
                let mut c = Cursor::at(entries, start);
                let shared = c.varint32()? as usize;
                let unshared = c.varint32()? as usize;
                let value_len = c.varint32()? as usize;
                (shared, unshared, value_len, c)
            }
        };
        let at_restart = self.next_restart_at == start;
        if shared > self.key.len() || ((!self.valid || at_restart) && shared != 0) {
            return Err(DecodeError::malformed(
                start,
                "shared prefix longer than the previous key",
            ));
        }
        let suffix = c.take(unshared)?;
        let value_at = c.pos;
        c.take(value_len)?;
        if at_restart {
            self.next_restart += 1;
            self.next_restart_at = self.block.restart_at_or_max(self.next_restart)?;
        }
        if self.next_restart_at < c.pos {
            return Err(DecodeError::malformed(
                start,
                "restart point inside an entry",
            ));
        }
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        if split_internal_key(&self.key).is_none() {
            return Err(DecodeError::malformed(
                start,
                "entry key has no valid internal-key trailer",
            ));
        }
        self.value = (value_at, value_at + value_len);
        self.next_at = c.pos;
        self.valid = true;
        Ok(())
    }

    fn set_next_restart(&mut self, i: usize) -> Result<(), DecodeError> {
        self.next_restart = i;
        self.next_restart_at = self.block.restart_at_or_max(i)?;
        Ok(())
    }

    /// Positions at the first entry (invalid when the block is empty).
    pub fn seek_to_first(&mut self) -> Result<(), DecodeError> {
        self.valid = false;
        self.key.clear();
        self.next_at = 0;
        self.set_next_restart(0)?;
        self.advance()
    }

    /// Positions at the first entry whose internal key is `>= target`; invalid if none.
    pub fn seek(&mut self, target: &[u8]) -> Result<(), DecodeError> {
        // Binary search for the last restart whose key is < target.
        let (mut lo, mut hi) = (0usize, self.block.restart_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.valid = false;
            self.key.clear();
            self.next_at = self.block.restart(mid)?;
            self.set_next_restart(mid)?;
            self.advance()?;
            if compare_internal(&self.key, target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // Restart `lo` has key >= target (or lo == count); scan from the one before.
        let from = lo.saturating_sub(1);
        self.valid = false;
        self.key.clear();
        self.next_at = if self.block.restart_count == 0 {
            0
        } else {
            self.block.restart(from)?
        };
        self.set_next_restart(from)?;
        loop {
            self.advance()?;
            if !self.valid || compare_internal(&self.key, target) != Ordering::Less {
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bloom filter

/// A 64-bit hash of a user key for the bloom filter: 8 bytes at a time, multiply-rotate, then
/// the splitmix64 finalizer so that every input bit reaches every output bit. Part of the
/// format: changing it makes old filters answer wrongly.
pub fn bloom_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x5bd1_e995_u64 ^ (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(chunks.remainder()) {
        *d = *s;
    }
    h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
    // splitmix64 finalizer
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Builds a filter block: `bits` bytes then the probe count `k` as one byte. Probes use double
/// hashing (Kirsch–Mitzenmacher): bit_i = (h1 + i·h2) mod m with h1, h2 the halves of the hash.
pub fn build_bloom(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let k = ((bits_per_key as f64) * 0.69).round().clamp(1.0, 30.0) as u8;
    let bits = (hashes.len() as u64 * u64::from(bits_per_key)).max(64);
    let bytes = bits.div_ceil(8) as usize;
    let m = (bytes * 8) as u64;
    let mut out = vec![0u8; bytes + 1];
    for &h in hashes {
        let (mut a, b) = (h & 0xffff_ffff, (h >> 32) | 1);
        for _ in 0..k {
            let bit = a % m;
            if let Some(byte) = out.get_mut((bit / 8) as usize) {
                *byte |= 1 << (bit % 8);
            }
            a = a.wrapping_add(b);
        }
    }
    if let Some(last) = out.last_mut() {
        *last = k;
    }
    out
}

/// A filter block as read from disk (crc already verified).
#[derive(Debug, Clone)]
pub struct Bloom {
    bits: Bytes,
    k: u8,
}

impl Bloom {
    pub fn decode(data: Bytes) -> Result<Bloom, DecodeError> {
        let n = data.len();
        let k = *data.last().ok_or(DecodeError::Incomplete {
            needed: 1,
            available: 0,
        })?;
        if k == 0 || k > 30 || n < 2 {
            return Err(DecodeError::malformed(
                n.saturating_sub(1),
                "bad bloom probe count",
            ));
        }
        Ok(Bloom {
            bits: data.slice(..n - 1),
            k,
        })
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, h: u64) -> bool {
        let m = (self.bits.len() * 8) as u64;
        let (mut a, b) = (h & 0xffff_ffff, (h >> 32) | 1);
        for _ in 0..self.k {
            let bit = a % m;
            match self.bits.get((bit / 8) as usize) {
                Some(byte) if byte & (1 << (bit % 8)) != 0 => {}
                _ => return false,
            }
            a = a.wrapping_add(b);
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Meta block and footer

/// What an SSTable says about itself (the meta block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    pub entry_count: u64,
    pub tombstone_count: u64,
    pub min_seqno: u64,
    pub max_seqno: u64,
    /// Smallest and largest user keys in the table.
    pub smallest: Bytes,
    pub largest: Bytes,
}

impl TableMeta {
    /// `version u8 | entry_count u64 | tombstone_count u64 | min_seqno u64 | max_seqno u64 |
    /// smallest_len u32 | smallest | largest_len u32 | largest`
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(45 + self.smallest.len() + self.largest.len());
        out.push(META_VERSION);
        out.extend_from_slice(&self.entry_count.to_le_bytes());
        out.extend_from_slice(&self.tombstone_count.to_le_bytes());
        out.extend_from_slice(&self.min_seqno.to_le_bytes());
        out.extend_from_slice(&self.max_seqno.to_le_bytes());
        out.extend_from_slice(&(self.smallest.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.smallest);
        out.extend_from_slice(&(self.largest.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.largest);
        out
    }

    pub fn decode(data: &[u8]) -> Result<TableMeta, DecodeError> {
        let mut c = Cursor::new(data);
        let v = c.u8()?;
        if v != META_VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        let meta = TableMeta {
            entry_count: c.u64()?,
            tombstone_count: c.u64()?,
            min_seqno: c.u64()?,
            max_seqno: c.u64()?,
            smallest: Bytes::copy_from_slice(c.bytes32()?),
            largest: Bytes::copy_from_slice(c.bytes32()?),
        };
        if c.remaining() != 0 {
            return Err(DecodeError::malformed(
                c.pos,
                "trailing bytes in meta block",
            ));
        }
        if meta.smallest > meta.largest || meta.min_seqno > meta.max_seqno || meta.entry_count == 0
        {
            return Err(DecodeError::malformed(
                0,
                "meta block bounds are inconsistent",
            ));
        }
        Ok(meta)
    }
}

/// The fixed-size tail of an SSTable.
/// ```text
///  0 index_offset u64 |  8 index_len u32 | 12 filter_offset u64 | 20 filter_len u32 |
/// 24 meta_offset u64  | 32 meta_len u32  | 36 version u8 | 37 reserved [3] |
/// 40 crc32c u32 over bytes 0..40 | 44 magic "BRDT"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub index: BlockHandle,
    pub filter: BlockHandle,
    pub meta: BlockHandle,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        for h in [self.index, self.filter, self.meta] {
            out.extend_from_slice(&h.offset.to_le_bytes());
            out.extend_from_slice(&h.len.to_le_bytes());
        }
        out.push(SST_VERSION);
        out.extend_from_slice(&[0; 3]);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&SST_MAGIC);
        let mut a = [0u8; FOOTER_LEN];
        a.copy_from_slice(&out);
        a
    }

    /// Decodes a footer and checks every handle lies before `footer_at` (the footer's offset).
    pub fn decode(data: &[u8], footer_at: u64) -> Result<Footer, DecodeError> {
        let mut c = Cursor::new(data);
        let body = c.take(40)?;
        let stored = c.u32()?;
        if c.take(4)? != SST_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let mut b = Cursor::new(body);
        let mut handle = || -> Result<BlockHandle, DecodeError> {
            Ok(BlockHandle {
                offset: b.u64()?,
                len: b.u32()?,
            })
        };
        let (index, filter, meta) = (handle()?, handle()?, handle()?);
        let version = Cursor::at(body, 36).u8()?;
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DecodeError::CrcMismatch { stored, computed });
        }
        if version != SST_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        for h in [index, filter, meta] {
            let end = h.offset.checked_add(h.len_on_disk());
            if h.len > BLOCK_DECODE_BYTES_MAX || end.is_none_or(|e| e > footer_at) {
                return Err(DecodeError::malformed(
                    0,
                    "footer block handle outside the file",
                ));
            }
        }
        Ok(Footer {
            index,
            filter,
            meta,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest

/// One live SSTable as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestFile {
    pub number: u64,
    pub size: u64,
}

/// The durable state of an LSM directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestData {
    /// Next SSTable file number to hand out; above every live and every orphaned file.
    pub next_file_number: u64,
    /// Log position from which the caller must replay: every batch before it is in an SST.
    pub durable_log_position: u64,
    /// Highest sequence number in any SST.
    pub last_seqno: u64,
    /// Live tables per level; level 0 newest first, other levels by key.
    pub levels: Vec<Vec<ManifestFile>>,
}

/// ```text
/// header: magic "BRDM" | version u8 | reserved [3] | body_len u32 | crc32c u32 over body
/// body:   next_file_number u64 | durable_log_position u64 | last_seqno u64 | level_count u8 |
///         per level: file_count u32 | per file: number u64 | size u64
/// ```
pub fn encode_manifest(m: &ManifestData) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(25 + m.levels.iter().map(|l| 4 + 16 * l.len()).sum::<usize>());
    body.extend_from_slice(&m.next_file_number.to_le_bytes());
    body.extend_from_slice(&m.durable_log_position.to_le_bytes());
    body.extend_from_slice(&m.last_seqno.to_le_bytes());
    body.push(m.levels.len() as u8);
    for level in &m.levels {
        body.extend_from_slice(&(level.len() as u32).to_le_bytes());
        for f in level {
            body.extend_from_slice(&f.number.to_le_bytes());
            body.extend_from_slice(&f.size.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(MANIFEST_HEADER_LEN + body.len());
    out.extend_from_slice(&MANIFEST_MAGIC);
    out.push(MANIFEST_VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn decode_manifest(data: &[u8]) -> Result<ManifestData, DecodeError> {
    let mut c = Cursor::new(data);
    if c.take(4)? != MANIFEST_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = c.u8()?;
    if version != MANIFEST_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    c.take(3)?;
    let len = c.u32()? as usize;
    let stored = c.u32()?;
    let body = c.take(len)?;
    if c.remaining() != 0 {
        return Err(DecodeError::malformed(
            c.pos,
            "trailing bytes after the manifest body",
        ));
    }
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(DecodeError::CrcMismatch { stored, computed });
    }
    let mut b = Cursor::new(body);
    let mut m = ManifestData {
        next_file_number: b.u64()?,
        durable_log_position: b.u64()?,
        last_seqno: b.u64()?,
        levels: Vec::new(),
    };
    let level_count = b.u8()? as usize;
    if level_count > LEVELS_MAX {
        return Err(DecodeError::malformed(24, "too many levels"));
    }
    for _ in 0..level_count {
        let n = b.u32()? as usize;
        if n.saturating_mul(16) > b.remaining() {
            return Err(DecodeError::malformed(
                b.pos,
                "file count larger than the manifest",
            ));
        }
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            files.push(ManifestFile {
                number: b.u64()?,
                size: b.u64()?,
            });
        }
        m.levels.push(files);
    }
    if b.remaining() != 0 {
        return Err(DecodeError::malformed(
            MANIFEST_HEADER_LEN + b.pos,
            "trailing bytes in the manifest body",
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ik(k: &str, s: u64) -> Vec<u8> {
        let mut v = Vec::new();
        push_internal_key(&mut v, k.as_bytes(), s, Kind::Put);
        v
    }

    #[test]
    fn internal_order() {
        assert_eq!(compare_internal(&ik("a", 5), &ik("a", 3)), Ordering::Less);
        assert_eq!(compare_internal(&ik("a", 1), &ik("ab", 9)), Ordering::Less);
        assert_eq!(
            compare_internal(&ik("b", 1), &ik("ab", 9)),
            Ordering::Greater
        );
    }

    #[test]
    fn block_roundtrip_and_seek() {
        let mut b = BlockBuilder::new(4);
        let keys: Vec<Vec<u8>> = (0..100u64).map(|i| ik(&format!("key{i:04}"), 7)).collect();
        for k in &keys {
            b.add(k, b"value");
        }
        let mut out = Vec::new();
        let len = b.finish_into(&mut out) as usize;
        let body = verify_block_crc(&out).expect("crc");
        assert_eq!(body.len(), len);
        let block = Arc::new(Block::decode(Bytes::copy_from_slice(body)).expect("decode"));
        let mut it = block.iter();
        it.seek_to_first().expect("first");
        let mut n = 0;
        while it.valid() {
            assert_eq!(it.key(), &keys[n][..]);
            n += 1;
            it.advance().expect("next");
        }
        assert_eq!(n, 100);
        it.seek(&ik("key0050", 100)).expect("seek");
        assert_eq!(it.key(), &keys[50][..]);
        it.seek(&ik("key0050", 1)).expect("seek");
        assert_eq!(it.key(), &keys[51][..]);
        it.seek(&ik("zzz", 1)).expect("seek");
        assert!(!it.valid());
    }

    #[test]
    fn restart_pointing_into_a_shared_entry_is_malformed() {
        let mut b = BlockBuilder::new(16);
        b.add(&ik("abc", 1), b"x");
        b.add(&ik("abd", 1), b"y");
        let mut out = Vec::new();
        let len = b.finish_into(&mut out) as usize;
        let mut body = out[..len].to_vec();
        // One restart (at 0): make it two, the second on entry 1, which shares a prefix.
        let entry1 = 3 + 11 + 1;
        let n = body.len();
        body.truncate(n - 4);
        body.extend_from_slice(&(entry1 as u32).to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        let block =
            Arc::new(Block::decode(Bytes::from(body)).expect("restart array is well formed"));
        let mut it = block.iter();
        it.seek_to_first().expect("first entry");
        assert!(matches!(it.advance(), Err(DecodeError::Malformed { .. })));
        assert!(matches!(
            it.seek(&ik("abd", 1)),
            Err(DecodeError::Malformed { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn block_encode_then_decode_is_identity(
            keys in proptest::collection::btree_set(proptest::collection::vec(0u8..4, 0..12), 1..80),
            interval in 1usize..20,
        ) {
            let entries: Vec<(Vec<u8>, Vec<u8>)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let mut key = Vec::new();
                    push_internal_key(&mut key, k, i as u64, if i % 3 == 0 { Kind::Delete } else { Kind::Put });
                    (key, vec![i as u8; i % 7])
                })
                .collect();
            let mut b = BlockBuilder::new(interval);
            for (k, v) in &entries {
                b.add(k, v);
            }
            let mut out = Vec::new();
            b.finish_into(&mut out);
            let body = verify_block_crc(&out).expect("crc");
            let block = Arc::new(Block::decode(Bytes::copy_from_slice(body)).expect("decode"));
            let mut it = block.iter();
            it.seek_to_first().expect("first");
            for (k, v) in &entries {
                proptest::prop_assert!(it.valid());
                proptest::prop_assert_eq!(it.key(), &k[..]);
                proptest::prop_assert_eq!(it.value_slice(), &v[..]);
                it.advance().expect("next");
            }
            proptest::prop_assert!(!it.valid());
            for (k, _) in &entries {
                it.seek(k).expect("seek");
                proptest::prop_assert_eq!(it.key(), &k[..]);
            }
        }
    }

    #[test]
    fn bloom_has_no_false_negatives() {
        let hashes: Vec<u64> = (0..1000u32).map(|i| bloom_hash(&i.to_be_bytes())).collect();
        let f = Bloom::decode(Bytes::from(build_bloom(&hashes, 10))).expect("bloom");
        assert!(hashes.iter().all(|&h| f.may_contain(h)));
        let fp = (1000..11000u32)
            .filter(|i| f.may_contain(bloom_hash(&i.to_be_bytes())))
            .count();
        assert!(fp < 300, "false positives {fp}");
    }

    #[test]
    fn manifest_roundtrip() {
        let m = ManifestData {
            next_file_number: 9,
            durable_log_position: 77,
            last_seqno: 5,
            levels: vec![
                vec![ManifestFile {
                    number: 3,
                    size: 100,
                }],
                vec![],
            ],
        };
        assert_eq!(decode_manifest(&encode_manifest(&m)).expect("decode"), m);
    }
}
