//! One segment: a `.log` file of record batches plus its indexes. Owns scanning (recovery and
//! index rebuild) and reading records at an offset. A sealed segment never changes; the active
//! one only grows, and readers only look below its durable length.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::format::{self, BatchHeader, DecodeError, LogRecord, BATCH_HEADER_LEN};
use super::index::{self, IndexBuilder, SegmentIndex};
use crate::error::{Error, Result};
use crate::io::{self, FileHandle, Fs, OpenMode};

/// Bytes read at once while scanning.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// Smallest read when serving records.
const READ_CHUNK_MIN_BYTES: usize = 64 << 10;

pub(crate) fn segment_file(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn FileHandle>,
    /// Bytes readers may look at: the durable length for the active segment, the file length
    /// for a sealed one.
    pub len: AtomicU64,
    /// Loaded lazily for sealed segments; always present for the active one, where the writer
    /// appends entries as batches become durable.
    pub index: RwLock<Option<SegmentIndex>>,
    /// Newest record timestamp (i64::MIN when empty or not yet known).
    pub max_ts: AtomicI64,
    pub sealed: AtomicBool,
}

/// Where a scan stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Bytes of whole, valid batches from the start of the file.
    pub valid_len: u64,
    /// Bytes after `valid_len` that are a torn tail (0 when the file ends cleanly).
    pub torn_bytes: u64,
    /// The torn tail is zeros only: space written ahead of the data, not a broken write.
    pub zero_tail: bool,
    pub builder: IndexBuilder,
}

impl Segment {
    pub fn new(
        base: u64,
        path: PathBuf,
        file: Arc<dyn FileHandle>,
        len: u64,
        sealed: bool,
    ) -> Self {
        Segment {
            base,
            path,
            file,
            len: AtomicU64::new(len),
            index: RwLock::new(None),
            max_ts: AtomicI64::new(i64::MIN),
            sealed: AtomicBool::new(sealed),
        }
    }

    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn corruption(&self, pos: u64, e: DecodeError) -> Error {
        Error::corruption(&self.path, pos, e.to_string())
    }

    /// Scans batches from the start of the file, checking each checksum and that offsets follow
    /// on (`dense`: exactly; otherwise never backwards, as after compaction). `on_batch` sees
    /// each valid header. A torn tail (an incomplete batch, or zeros where a batch should be,
    /// as a power loss leaves) ends the scan; a damaged complete batch is an error.
    pub async fn scan(
        &self,
        file_len: u64,
        dense: bool,
        interval_bytes: u32,
        batch_bytes_max: u32,
        mut on_batch: impl FnMut(&BatchHeader),
    ) -> Result<ScanEnd> {
        let mut builder = IndexBuilder::new(interval_bytes);
        let mut pos = 0u64;
        let mut expected = self.base;
        let mut buf = Vec::new();
        let mut buf_pos = 0u64; // file position of buf[0]
        loop {
            if pos == file_len {
                return Ok(ScanEnd {
                    valid_len: pos,
                    torn_bytes: 0,
                    zero_tail: false,
                    builder,
                });
            }
            let rel = (pos - buf_pos) as usize;
            let avail = buf.len().saturating_sub(rel);
            let want = BATCH_HEADER_LEN.min((file_len - pos) as usize);
            if avail < want {
                buf = self.read_chunk(pos, SCAN_CHUNK_BYTES, file_len).await?;
                buf_pos = pos;
                continue;
            }
            let here = &buf[rel..];
            let torn = |builder: IndexBuilder, zero_tail: bool| -> Result<ScanEnd> {
                Ok(ScanEnd {
                    valid_len: pos,
                    torn_bytes: file_len - pos,
                    zero_tail,
                    builder,
                })
            };
            let header = match BatchHeader::parse(here, batch_bytes_max) {
                Ok(h) => h,
                Err(DecodeError::Incomplete { .. }) => return torn(builder, false),
                Err(e) => {
                    if self.zeros_to_end(pos, file_len).await? {
                        return torn(builder, true);
                    }
                    // Part of a header, then the zeros written ahead of it: a write cut short.
                    let header_end = (pos + BATCH_HEADER_LEN as u64).min(file_len);
                    if self.zeros_to_end(header_end, file_len).await? {
                        return torn(builder, false);
                    }
                    return Err(self.corruption(pos, e));
                }
            };
            let end = pos + u64::from(header.batch_len);
            if end > file_len {
                return torn(builder, false);
            }
            if (dense && header.base_offset != expected) || header.base_offset < expected {
                return Err(Error::corruption(
                    &self.path,
                    pos,
                    format!(
                        "batch starts at offset {}, expected {expected}",
                        header.base_offset
                    ),
                ));
            }
            let batch_len = header.batch_len as usize;
            if here.len() < batch_len {
                // Read the whole batch into one buffer.
                buf = self
                    .read_chunk(pos, batch_len.max(SCAN_CHUNK_BYTES), file_len)
                    .await?;
                buf_pos = pos;
                if buf.len() < batch_len {
                    return torn(builder, false);
                }
            }
            let rel = (pos - buf_pos) as usize;
            let batch = &buf[rel..rel + batch_len];
            if let Err(e) = format::verify_crc(&header, batch) {
                // The last batch of a file with its tail still zero is a write that never
                // reached the disk, not damage — also when only the zeros written ahead of the
                // data follow it.
                if batch.iter().rev().take_while(|&&b| b == 0).count()
                    >= 512.min(batch_len - BATCH_HEADER_LEN)
                    && (end == file_len || self.zeros_to_end(end, file_len).await?)
                {
                    return torn(builder, false);
                }
                return Err(self.corruption(pos, e));
            }
            on_batch(&header);
            builder.add_batch(
                pos,
                header.base_offset - self.base,
                header.last_offset() - self.base,
                header.max_timestamp,
            );
            expected = header.next_offset();
            pos = end;
        }
    }

    async fn zeros_to_end(&self, pos: u64, file_len: u64) -> Result<bool> {
        let mut at = pos;
        while at < file_len {
            let chunk = self.read_chunk(at, SCAN_CHUNK_BYTES, file_len).await?;
            if chunk.is_empty() {
                break;
            }
            if chunk.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += chunk.len() as u64;
        }
        Ok(true)
    }

    async fn read_chunk(&self, pos: u64, want: usize, limit: u64) -> Result<Vec<u8>> {
        let n = (limit.saturating_sub(pos)).min(want as u64) as usize;
        let (res, mut buf) = self.file.read_at(vec![0u8; n], pos).await;
        let got = res?;
        buf.truncate(got);
        Ok(buf)
    }

    /// Makes sure the indexes are in memory, loading or rebuilding them for a sealed segment.
    pub async fn ensure_index(
        &self,
        fs: &dyn Fs,
        interval_bytes: u32,
        batch_bytes_max: u32,
    ) -> Result<()> {
        if self.index.read().is_some() {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let len = self.len();
        let idx_path = segment_file(dir, self.base, "idx");
        let time_path = segment_file(dir, self.base, "timeindex");
        let idx = match self
            .load_index(fs, &idx_path, &time_path, len, batch_bytes_max)
            .await
        {
            Ok(idx) => idx,
            Err(reason) => {
                tracing::warn!(segment = %self.path.display(), "rebuilding index: {reason}");
                let end = self
                    .scan(len, false, interval_bytes, batch_bytes_max, |_| {})
                    .await?;
                if end.torn_bytes > 0 {
                    return Err(Error::corruption(
                        &self.path,
                        end.valid_len,
                        "sealed segment ends in an incomplete batch",
                    ));
                }
                let idx = end.builder.sealed();
                write_index_files(fs, dir, self.base, &idx).await?;
                idx
            }
        };
        if let Some(ts) = idx.max_timestamp() {
            self.max_ts.store(ts, Ordering::Release);
        }
        let mut slot = self.index.write();
        if slot.is_none() {
            *slot = Some(idx);
        }
        Ok(())
    }

    /// Byte position to start reading at for `offset` (index must be loaded).
    pub fn position_for(&self, offset: u64) -> u64 {
        self.index
            .read()
            .as_ref()
            .map_or(0, |i| i.position_for(offset.saturating_sub(self.base)))
    }

    /// Offset to start scanning at for the first record at or after `ts` (index must be loaded).
    pub fn offset_for_timestamp_hint(&self, ts: i64) -> u64 {
        self.base
            + self
                .index
                .read()
                .as_ref()
                .map_or(0, |i| i.rel_for_timestamp(ts))
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_ts.load(Ordering::Acquire)
    }

    async fn load_index(
        &self,
        fs: &dyn Fs,
        idx_path: &Path,
        time_path: &Path,
        len: u64,
        batch_bytes_max: u32,
    ) -> std::result::Result<SegmentIndex, String> {
        let bytes = io::read_file(fs, idx_path)
            .await
            .map_err(|e| e.to_string())?;
        let offsets = index::decode_offsets(&bytes, len.max(1)).map_err(|e| e.to_string())?;
        let bytes = io::read_file(fs, time_path)
            .await
            .map_err(|e| e.to_string())?;
        let times = index::decode_times(&bytes).map_err(|e| e.to_string())?;
        // Spot-check: the last entry must point at the batch holding that offset.
        if let Some(last) = offsets.last() {
            let head = self
                .read_chunk(u64::from(last.pos), BATCH_HEADER_LEN, len)
                .await
                .map_err(|e| e.to_string())?;
            let h = BatchHeader::parse(&head, batch_bytes_max).map_err(|e| e.to_string())?;
            if h.base_offset != self.base + u64::from(last.rel) {
                return Err("index entry does not match the batch it points at".into());
            }
        }
        Ok(SegmentIndex { offsets, times })
    }

    /// Reads records with offsets in `from..until`, about `max_bytes` of batches (at least one
    /// whole batch). Returns the records and the offset to continue at within this segment
    /// (`None` when the segment holds nothing at or after `from`).
    pub async fn read(
        &self,
        start_pos: u64,
        from: u64,
        until: u64,
        max_bytes: usize,
        batch_bytes_max: u32,
    ) -> Result<(Vec<LogRecord>, Option<u64>)> {
        let len = self.len();
        let mut pos = start_pos;
        let mut out = Vec::new();
        let mut next = None;
        let mut bytes_taken = 0usize;
        while pos < len && bytes_taken < max_bytes.max(1) {
            let chunk = Bytes::from(
                self.read_chunk(pos, max_bytes.max(READ_CHUNK_MIN_BYTES), len)
                    .await?,
            );
            let mut off = 0usize;
            let mut progressed = false;
            while off < chunk.len() && bytes_taken < max_bytes.max(1) {
                let here = chunk.slice(off..);
                let header = match BatchHeader::parse(&here, batch_bytes_max) {
                    Ok(h) => h,
                    Err(DecodeError::Incomplete { .. }) => break,
                    Err(e) => return Err(self.corruption(pos + off as u64, e)),
                };
                let blen = header.batch_len as usize;
                let batch = if here.len() >= blen {
                    here.slice(..blen)
                } else if off == 0 {
                    // A batch bigger than the chunk: read it whole.
                    let whole = self.read_chunk(pos, blen, len).await?;
                    if whole.len() < blen {
                        return Err(Error::corruption(
                            &self.path,
                            pos,
                            "batch runs past the readable end of the segment",
                        ));
                    }
                    Bytes::from(whole)
                } else {
                    break;
                };
                progressed = true;
                let at = pos + off as u64;
                off += blen;
                if header.base_offset >= until {
                    return Ok((out, next));
                }
                if header.last_offset() < from {
                    continue;
                }
                format::verify_crc(&header, &batch).map_err(|e| self.corruption(at, e))?;
                let records =
                    format::decode_records(&header, &batch).map_err(|e| self.corruption(at, e))?;
                out.extend(
                    records
                        .into_iter()
                        .filter(|r| r.offset >= from && r.offset < until),
                );
                next = Some(header.next_offset().min(until));
                bytes_taken += blen;
                if header.batch_len as usize > chunk.len() {
                    break;
                }
            }
            if !progressed {
                return Err(Error::corruption(
                    &self.path,
                    pos,
                    "batch runs past the readable end of the segment",
                ));
            }
            pos += off as u64;
        }
        Ok((out, next))
    }

    /// Reads every record of the segment (compaction and tests).
    pub async fn read_all(&self, until: u64, batch_bytes_max: u32) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        let mut from = self.base;
        let mut pos = 0;
        loop {
            let (recs, next) = self
                .read(pos, from, until, 4 << 20, batch_bytes_max)
                .await?;
            out.extend(recs);
            match next {
                Some(n) if n > from => {
                    from = n;
                    pos = self.position_for(from);
                }
                _ => return Ok(out),
            }
        }
    }
}

/// Writes both index files of a sealed segment, each atomically.
pub(crate) async fn write_index_files(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    idx: &SegmentIndex,
) -> Result<()> {
    io::write_file_atomic(
        fs,
        &segment_file(dir, base, "idx"),
        index::encode_offsets(&idx.offsets),
    )
    .await?;
    io::write_file_atomic(
        fs,
        &segment_file(dir, base, "timeindex"),
        index::encode_times(&idx.times),
    )
    .await
}

/// Opens an existing segment file.
pub(crate) async fn open_segment(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    sealed: bool,
) -> Result<Segment> {
    let path = segment_file(dir, base, "log");
    let mode = if sealed {
        OpenMode::Read
    } else {
        OpenMode::ReadWrite
    };
    let file = fs.open(&path, mode).await?;
    let len = file.len().await?;
    Ok(Segment::new(base, path, file, len, sealed))
}
