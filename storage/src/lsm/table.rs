//! SSTables: the writer that turns a sorted stream of versions into an immutable file, and the
//! reader that serves point lookups and iterators from it. The byte layout is in `format.rs`.
//!
//! What must stay true:
//! - A table is written completely and `fdatasync`ed before any manifest names it, and is never
//!   modified afterwards; it is deleted only after a manifest that no longer names it is durable.
//! - Every block read from disk has its crc32c checked before a byte of it is decoded; any
//!   failure is `Error::Corruption` naming the file and the byte position.
//! - The index, bloom filter and meta block are read once at open and stay in memory, so a point
//!   lookup costs at most one data-block read (zero on a block-cache hit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::cache::{BlockCache, ScanCache};
use super::format::{
    self, split_internal_key, Block, BlockBuilder, BlockHandle, BlockIter, Bloom, DecodeError,
    Footer, Kind, TableMeta, FOOTER_LEN,
};
use crate::error::{Error, Result};
use crate::io::{FileHandle, Fs, OpenMode};

/// Restart interval of data blocks: a point lookup decodes at most this many entries linearly
/// after the binary search over restarts.
const DATA_RESTART_INTERVAL: usize = 16;
/// Buffered bytes before the writer hands them to the file (fewer, larger writes).
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Iterators read ahead of the block they need: the first read is this large and each further
/// miss doubles it up to `READAHEAD_BYTES_MAX`, so a short scan reads little and a long scan or
/// a compaction makes one read call per MiB instead of one per block (each call is a hand-off
/// to the I/O thread and back: at 256 KiB those were 5% of a ten-million-row scan).
const READAHEAD_BYTES_MIN: usize = 16 << 10;
const READAHEAD_BYTES_MAX: usize = 1 << 20;

/// `<number:020>.sst`
pub(crate) fn table_file_name(number: u64) -> String {
    format!("{number:020}.sst")
}

pub(crate) fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(table_file_name(number))
}

/// Paces background writes to `bytes_per_sec` (compaction's rate limit).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_sec: u64,
    start: Instant,
    written: u64,
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            bytes_per_sec: bytes_per_sec.max(1),
            start: Instant::now(),
            written: 0,
        }
    }

    async fn pace(&mut self, bytes: usize) {
        self.written += bytes as u64;
        let due = Duration::from_secs_f64(self.written as f64 / self.bytes_per_sec as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Writes one SSTable. Entries must arrive in internal-key order.
pub(crate) struct TableWriter {
    file: Arc<dyn FileHandle>,
    pub number: u64,
    buf: Vec<u8>,
    written: u64,
    data: BlockBuilder,
    index: BlockBuilder,
    block_bytes: usize,
    bloom_bits_per_key: u32,
    hashes: Vec<u64>,
    last_user: Vec<u8>,
    meta: Option<TableMeta>,
    index_key: Vec<u8>,
}

impl TableWriter {
    pub async fn create(
        fs: &dyn Fs,
        dir: &Path,
        number: u64,
        block_bytes: usize,
        bloom_bits_per_key: u32,
    ) -> Result<Self> {
        let file = fs
            .open(&table_path(dir, number), OpenMode::CreateNew)
            .await?;
        Ok(TableWriter {
            file,
            number,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES + block_bytes * 2),
            written: 0,
            data: BlockBuilder::new(DATA_RESTART_INTERVAL),
            index: BlockBuilder::new(1),
            block_bytes: block_bytes.max(256),
            bloom_bits_per_key,
            hashes: Vec::new(),
            last_user: Vec::new(),
            meta: None,
            index_key: Vec::new(),
        })
    }

    /// Bytes the file will have if finished now (roughly).
    pub fn estimated_len(&self) -> u64 {
        self.written + self.buf.len() as u64 + self.data.estimated_len() as u64
    }

    pub async fn add(
        &mut self,
        ikey: &[u8],
        value: &[u8],
        limiter: &mut Option<RateLimiter>,
    ) -> Result<()> {
        let (user, seqno, kind) = split_internal_key(ikey)
            .ok_or_else(|| Error::InvalidArgument("internal key without a trailer".into()))?;
        if !self.data.is_empty() && self.data.estimated_len() >= self.block_bytes {
            self.finish_data_block(limiter).await?;
        }
        self.data.add(ikey, value);
        let first_of_key = self.meta.is_none() || self.last_user != user;
        if first_of_key {
            self.hashes.push(format::bloom_hash(user));
            self.last_user.clear();
            self.last_user.extend_from_slice(user);
        }
        let tomb = u64::from(kind == Kind::Delete);
        match &mut self.meta {
            None => {
                self.meta = Some(TableMeta {
                    entry_count: 1,
                    tombstone_count: tomb,
                    min_seqno: seqno,
                    max_seqno: seqno,
                    smallest: Bytes::copy_from_slice(user),
                    largest: Bytes::new(),
                })
            }
            Some(m) => {
                m.entry_count += 1;
                m.tombstone_count += tomb;
                m.min_seqno = m.min_seqno.min(seqno);
                m.max_seqno = m.max_seqno.max(seqno);
            }
        }
        Ok(())
    }

    async fn finish_data_block(&mut self, limiter: &mut Option<RateLimiter>) -> Result<()> {
        self.index_key.clear();
        self.index_key.extend_from_slice(self.data.last_key());
        let offset = self.written + self.buf.len() as u64;
        let len = self.data.finish_into(&mut self.buf);
        let mut handle = Vec::with_capacity(16);
        BlockHandle { offset, len }.encode_to(&mut handle);
        self.index.add(&self.index_key, &handle);
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.write_out(limiter).await?;
        }
        Ok(())
    }

    async fn write_out(&mut self, limiter: &mut Option<RateLimiter>) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let n = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let (res, mut buf) = self.file.write_all_at(buf, self.written).await;
        res?;
        self.written += n as u64;
        buf.clear();
        self.buf = buf;
        if let Some(l) = limiter {
            l.pace(n).await;
        }
        Ok(())
    }

    /// Writes index, filter, meta and footer, then `fdatasync`s. Returns the file size and the
    /// table's meta. The table must hold at least one entry.
    pub async fn finish(mut self, limiter: &mut Option<RateLimiter>) -> Result<(u64, TableMeta)> {
        let mut meta = self
            .meta
            .take()
            .ok_or_else(|| Error::InvalidArgument("an SSTable needs at least one entry".into()))?;
        meta.largest = Bytes::copy_from_slice(&self.last_user);
        if !self.data.is_empty() {
            self.finish_data_block(limiter).await?;
        }
        let base = self.written;
        let at = |buf: &Vec<u8>| base + buf.len() as u64;
        let index_offset = at(&self.buf);
        let index_len = self.index.finish_into(&mut self.buf);
        let filter_offset = at(&self.buf);
        let filter = format::build_bloom(&self.hashes, self.bloom_bits_per_key);
        let filter_len = filter.len() as u32;
        self.buf.extend_from_slice(&filter);
        self.buf
            .extend_from_slice(&crc32c::crc32c(&filter).to_le_bytes());
        let meta_offset = at(&self.buf);
        let meta_bytes = meta.encode();
        self.buf.extend_from_slice(&meta_bytes);
        self.buf
            .extend_from_slice(&crc32c::crc32c(&meta_bytes).to_le_bytes());
        let footer = Footer {
            index: BlockHandle {
                offset: index_offset,
                len: index_len,
            },
            filter: BlockHandle {
                offset: filter_offset,
                len: filter_len,
            },
            meta: BlockHandle {
                offset: meta_offset,
                len: meta_bytes.len() as u32,
            },
        };
        self.buf.extend_from_slice(&footer.encode());
        self.write_out(limiter).await?;
        self.file.sync_data().await?;
        Ok((self.written, meta))
    }
}

/// An open SSTable.
#[derive(Debug)]
pub(crate) struct Table {
    pub number: u64,
    pub size: u64,
    /// Where the data blocks end (the index block starts): readahead never reads past it.
    data_end: u64,
    file: Arc<dyn FileHandle>,
    index: Arc<Block>,
    bloom: Bloom,
    pub meta: TableMeta,
}

impl Table {
    /// Bytes of data blocks (the file up to its index block).
    pub fn data_bytes(&self) -> u64 {
        self.data_end
    }

    /// Opens a table and loads its footer, index, filter and meta. `expected_size` comes from
    /// the manifest; a different length is corruption (a truncated or replaced file).
    pub async fn open(fs: &dyn Fs, dir: &Path, number: u64, expected_size: u64) -> Result<Table> {
        let path = table_path(dir, number);
        let file = fs.open(&path, OpenMode::Read).await?;
        let size = file.len().await?;
        if size != expected_size {
            return Err(Error::corruption(
                &path,
                size,
                format!("file is {size} bytes, the manifest says {expected_size}"),
            ));
        }
        let footer_at = size
            .checked_sub(FOOTER_LEN as u64)
            .ok_or_else(|| Error::corruption(&path, 0, "file is shorter than a footer"))?;
        let (res, buf) = file.read_at(vec![0; FOOTER_LEN], footer_at).await;
        let n = res?;
        let footer = buf
            .get(..n)
            .ok_or_else(|| Error::corruption(&path, footer_at, "short read"))
            .and_then(|b| {
                Footer::decode(b, footer_at)
                    .map_err(|e| Error::corruption(&path, footer_at, e.to_string()))
            })?;
        let index_bytes = read_block(&*file, footer.index).await?;
        let index = Block::decode(index_bytes).map_err(|e| {
            Error::corruption(&path, footer.index.offset, format!("index block: {e}"))
        })?;
        let bloom = Bloom::decode(read_block(&*file, footer.filter).await?).map_err(|e| {
            Error::corruption(&path, footer.filter.offset, format!("filter block: {e}"))
        })?;
        let meta = TableMeta::decode(&read_block(&*file, footer.meta).await?).map_err(|e| {
            Error::corruption(&path, footer.meta.offset, format!("meta block: {e}"))
        })?;
        Ok(Table {
            number,
            size,
            data_end: footer.index.offset,
            file,
            index: Arc::new(index),
            bloom,
            meta,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    fn corruption(&self, position: u64, e: DecodeError) -> Error {
        Error::corruption(self.path(), position, e.to_string())
    }

    /// An iterator over the index block (one entry per data block: its last internal key
    /// and its handle), which is in memory.
    pub fn index_iter(&self) -> BlockIter {
        self.index.iter()
    }

    /// Whether the table's key range overlaps `[lo, hi]` (user keys).
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.meta.smallest.as_ref() <= hi && self.meta.largest.as_ref() >= lo
    }

    /// A data block, from the cache when there (and inserted into it when `cache` is given).
    async fn data_block(&self, h: BlockHandle, cache: Option<&BlockCache>) -> Result<Arc<Block>> {
        if let Some(c) = cache {
            if let Some(b) = c.get(self.number, h.offset) {
                return Ok(b);
            }
        }
        let bytes = read_block(&*self.file, h).await?;
        let block = Arc::new(Block::decode(bytes).map_err(|e| self.corruption(h.offset, e))?);
        if let Some(c) = cache {
            c.insert(self.number, h.offset, block.clone());
        }
        Ok(block)
    }

    /// The newest version of `user` with seqno <= the one in `target` (the internal key
    /// `(user, read_seq)`), if this table has one. `hash` is `bloom_hash(user)`; `scratch` is a
    /// key buffer reused across lookups.
    pub async fn get(
        &self,
        target: &[u8],
        user: &[u8],
        hash: u64,
        read_seq: u64,
        cache: &BlockCache,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<(Kind, Bytes)>> {
        if user < self.meta.smallest.as_ref()
            || user > self.meta.largest.as_ref()
            || read_seq < self.meta.min_seqno
            || !self.bloom.may_contain(hash)
        {
            return Ok(None);
        }
        let mut idx = self.index.iter_with(std::mem::take(scratch));
        idx.seek(target).map_err(|e| self.corruption(0, e))?;
        let handle = if idx.valid() {
            Some(BlockHandle::decode(idx.value_slice()).map_err(|e| self.corruption(0, e))?)
        } else {
            None
        };
        *scratch = idx.into_key_buf();
        let Some(h) = handle else { return Ok(None) };
        let block = self.data_block(h, Some(cache)).await?;
        let mut it = block.iter_with(std::mem::take(scratch));
        it.seek(target)
            .map_err(|e| self.corruption(h.offset + it.position() as u64, e))?;
        let found = if it.valid() {
            match split_internal_key(it.key()) {
                Some((u, _, kind)) if u == user => Some((kind, it.value())),
                _ => None,
            }
        } else {
            None
        };
        *scratch = it.into_key_buf();
        Ok(found)
    }
}

/// Reads a block plus its crc trailer and checks the crc; hands back the block alone.
async fn read_block(file: &dyn FileHandle, h: BlockHandle) -> Result<Bytes> {
    let path = file.path();
    if h.len > format::BLOCK_DECODE_BYTES_MAX {
        return Err(Error::corruption(
            path,
            h.offset,
            "block longer than the block bound",
        ));
    }
    let want = h.len_on_disk() as usize;
    let (res, mut buf) = file.read_at(vec![0; want], h.offset).await;
    let n = res?;
    if n != want {
        return Err(Error::corruption(
            path,
            h.offset,
            format!("block needs {want} bytes, file holds {n}"),
        ));
    }
    format::verify_block_crc(&buf).map_err(|e| Error::corruption(path, h.offset, e.to_string()))?;
    buf.truncate(h.len as usize);
    Ok(Bytes::from(buf))
}

/// A table iterator's current data block, lent out for a walk through it.
pub(crate) struct BlockRun<'a> {
    /// At the current entry.
    pub block: &'a mut BlockIter,
    /// The block's last internal key, as the table's index says.
    last: &'a [u8],
    /// The block's offset in the file.
    offset: u64,
    table: &'a Table,
}

impl BlockRun<'_> {
    /// Steps to the next entry of the block; `false` at the block's end, once the last
    /// entry was checked against the index (a scan that trusted the index to bound the
    /// block must not hand out rows past it unnoticed).
    pub fn step(&mut self) -> Result<bool> {
        if self.block.has_next() {
            self.block.advance().map_err(|e| {
                self.table
                    .corruption(self.offset + self.block.position() as u64, e)
            })?;
            return Ok(true);
        }
        if self.block.key() != self.last {
            return Err(self.table.corruption(
                self.offset,
                DecodeError::Malformed {
                    at: 0,
                    what: "data block ends on another key than its index entry",
                },
            ));
        }
        Ok(false)
    }
}

/// A buffer of `len` bytes for the next readahead: the previous one (`readahead`, taken) when
/// nothing else holds it any more (its blocks were used and dropped), so a long scan does not
/// allocate and zero a fresh MiB per read.
fn spare_buffer(readahead: &mut Option<(u64, Bytes)>, len: usize) -> Vec<u8> {
    let mut buf = match readahead.take().map(|(_, b)| b.try_into_mut()) {
        Some(Ok(old)) => Vec::from(old),
        _ => Vec::new(),
    };
    buf.resize(len, 0);
    buf
}

/// Walks a table's entries in order, one data block at a time, reading ahead.
pub(crate) struct TableIter {
    table: Arc<Table>,
    index: BlockIter,
    block: Option<(BlockIter, u64)>,
    cache: Option<ScanCache>,
    /// Bytes read ahead and the file offset they start at.
    readahead: Option<(u64, Bytes)>,
    readahead_len: usize,
}

impl TableIter {
    /// `cache`: `None` for compaction, whose one-pass reads would only push hot blocks out.
    pub fn new(table: Arc<Table>, cache: Option<ScanCache>) -> Self {
        let index = table.index.iter();
        TableIter {
            table,
            index,
            block: None,
            cache,
            readahead: None,
            readahead_len: READAHEAD_BYTES_MIN,
        }
    }

    pub fn valid(&self) -> bool {
        self.block.as_ref().is_some_and(|(b, _)| b.valid())
    }

    /// Current `(internal key, value)`; only when `valid()`.
    pub fn entry(&self) -> Option<(&[u8], &BlockIter)> {
        self.block
            .as_ref()
            .filter(|(b, _)| b.valid())
            .map(|(b, _)| (b.key(), b))
    }

    /// A data block: from the readahead buffer, else from the cache, else from a new read that
    /// also fills the buffer. The crc of bytes read is checked whichever way they came.
    ///
    /// The buffer comes first: a block already read costs only its crc to use, about what a
    /// cache lookup costs, and a long scan of a table larger than the cache would otherwise
    /// look up (and miss) every block. The cache still saves every read it can.
    async fn fetch_block(&mut self, h: BlockHandle) -> Result<Arc<Block>> {
        let table = &self.table;
        let want = h.len_on_disk();
        let end = h
            .offset
            .checked_add(want)
            .ok_or_else(|| Error::corruption(table.path(), h.offset, "block handle overflows"))?;
        let buffered = self.readahead.as_ref().and_then(|(at, buf)| {
            let start = h.offset.checked_sub(*at)? as usize;
            buf.get(start..(end - at) as usize)?;
            Some(buf.slice(start..(end - at) as usize))
        });
        let raw = match buffered {
            Some(raw) => raw,
            None => {
                if let Some(b) = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.cache.get(table.number, h.offset))
                {
                    return Ok(b);
                }
                let len = (self.readahead_len as u64)
                    .min(table.data_end.saturating_sub(h.offset))
                    .max(want);
                let len = usize::try_from(len)
                    .map_err(|_| Error::corruption(table.path(), h.offset, "block too large"))?;
                let (res, mut buf) = table
                    .file
                    .read_at(spare_buffer(&mut self.readahead, len), h.offset)
                    .await;
                let n = res?;
                if (n as u64) < want {
                    return Err(Error::corruption(
                        table.path(),
                        h.offset,
                        format!("block needs {want} bytes, file holds {n}"),
                    ));
                }
                buf.truncate(n);
                self.readahead_len = (self.readahead_len * 2).min(READAHEAD_BYTES_MAX);
                let buf = Bytes::from(buf);
                self.readahead = Some((h.offset, buf.clone()));
                buf.slice(..want as usize)
            }
        };
        format::verify_block_crc(&raw)
            .map_err(|e| Error::corruption(table.path(), h.offset, e.to_string()))?;
        let body = raw.slice(..h.len as usize);
        let block = match &self.cache {
            // A cached block must not pin the whole readahead buffer.
            Some(c) if c.may_fill(body.len()) => {
                let block = Arc::new(
                    Block::decode(Bytes::copy_from_slice(&body))
                        .map_err(|e| table.corruption(h.offset, e))?,
                );
                c.cache.insert(table.number, h.offset, block.clone());
                block
            }
            _ => Arc::new(Block::decode(body).map_err(|e| table.corruption(h.offset, e))?),
        };
        Ok(block)
    }

    async fn load_block(&mut self) -> Result<()> {
        if !self.index.valid() {
            self.block = None;
            return Ok(());
        }
        let h = BlockHandle::decode(self.index.value_slice())
            .map_err(|e| self.table.corruption(0, e))?;
        // The block walked so far holds a slice of the readahead buffer: let it go, so that
        // the buffer can be reused if the next block needs a new read (its key buffer is).
        let key_buf = self
            .block
            .take()
            .map(|(b, _)| b.into_key_buf())
            .unwrap_or_default();
        let block = self.fetch_block(h).await?;
        self.block = Some((block.iter_with(key_buf), h.offset));
        Ok(())
    }

    /// Moves to the next block while the current one is exhausted.
    async fn skip_empty_blocks(&mut self) -> Result<()> {
        while self.block.as_ref().is_some_and(|(b, _)| !b.valid()) {
            self.index
                .advance()
                .map_err(|e| self.table.corruption(0, e))?;
            self.load_block().await?;
            if let Some((b, off)) = &mut self.block {
                let off = *off;
                b.seek_to_first()
                    .map_err(|e| self.table.corruption(off + b.position() as u64, e))?;
                if !b.valid() {
                    return Err(self.table.corruption(
                        off,
                        DecodeError::Malformed {
                            at: 0,
                            what: "empty data block",
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    pub async fn seek_to_first(&mut self) -> Result<()> {
        self.index
            .seek_to_first()
            .map_err(|e| self.table.corruption(0, e))?;
        self.load_block().await?;
        if let Some((b, off)) = &mut self.block {
            let off = *off;
            b.seek_to_first()
                .map_err(|e| self.table.corruption(off + b.position() as u64, e))?;
        }
        self.skip_empty_blocks().await
    }

    /// Positions at the first entry `>= target` (an internal key).
    pub async fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.index
            .seek(target)
            .map_err(|e| self.table.corruption(0, e))?;
        self.load_block().await?;
        if let Some((b, off)) = &mut self.block {
            let off = *off;
            b.seek(target)
                .map_err(|e| self.table.corruption(off + b.position() as u64, e))?;
        }
        self.skip_empty_blocks().await
    }

    /// The current data block's last internal key (its index entry) and where the block is
    /// (table file number, offset), while the iterator is inside a block.
    pub fn block_bounds(&self) -> Option<(&[u8], (u64, u64))> {
        match &self.block {
            Some((b, off)) if b.valid() && self.index.valid() => {
                Some((self.index.key(), (self.table.number, *off)))
            }
            _ => None,
        }
    }

    /// The current data block, to walk it entry by entry without the merge (see
    /// `Scan::block_run`), with what its errors need.
    pub fn block_run(&mut self) -> Option<BlockRun<'_>> {
        let TableIter {
            table,
            index,
            block,
            ..
        } = self;
        match block {
            Some((b, off)) if b.valid() && index.valid() => Some(BlockRun {
                block: b,
                last: index.key(),
                offset: *off,
                table,
            }),
            _ => None,
        }
    }

    /// Steps to the next entry when it lies in the current block: no read and no `.await`,
    /// which is most steps of a scan (a 4 KiB block holds tens of rows). `false`, with nothing
    /// done, when the step needs the next block: then [`next`](Self::next) takes it.
    pub fn next_in_block(&mut self) -> Result<bool> {
        let Some((b, off)) = &mut self.block else {
            return Ok(false);
        };
        if !b.valid() || !b.has_next() {
            return Ok(false);
        }
        let off = *off;
        b.advance()
            .map_err(|e| self.table.corruption(off + b.position() as u64, e))?;
        Ok(b.valid())
    }

    pub async fn next(&mut self) -> Result<()> {
        if let Some((b, off)) = &mut self.block {
            let off = *off;
            b.advance()
                .map_err(|e| self.table.corruption(off + b.position() as u64, e))?;
        }
        self.skip_empty_blocks().await
    }
}
