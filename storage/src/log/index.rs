//! The sparse offset index and the time index of one segment: in-memory entries, their file
//! encoding (see [`super::format`]) and the look-ups. Indexes are hints: a missing or damaged
//! file is rebuilt from the log, never trusted blindly.

use super::format::{
    Cursor, INDEX_HEADER_LEN, INDEX_KIND_OFFSET, INDEX_KIND_TIME, INDEX_MAGIC, INDEX_VERSION,
    OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};

/// Offset `base + rel` starts the batch at byte `pos` of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel: u32,
    pub pos: u32,
}

/// Every record before offset `base + rel` has a timestamp at most `ts`. The last entry of a
/// sealed segment has `rel` = the segment's record span and `ts` = its newest timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub ts: i64,
    pub rel: u32,
}

/// Both indexes of one segment, as held in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// The byte position to start scanning at for `rel`: the last entry at or before it.
    pub fn position_for(&self, rel: u64) -> u64 {
        let i = self.offsets.partition_point(|e| u64::from(e.rel) <= rel);
        match i {
            0 => 0,
            i => u64::from(self.offsets[i - 1].pos),
        }
    }

    /// The relative offset to start scanning at for the first record with a timestamp at least
    /// `ts`: every record before it is older.
    pub fn rel_for_timestamp(&self, ts: i64) -> u64 {
        let i = self.times.partition_point(|e| e.ts < ts);
        match i {
            0 => 0,
            i => u64::from(self.times[i - 1].rel),
        }
    }

    /// Newest timestamp in the segment, from the closing entry.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.times.last().map(|e| e.ts)
    }
}

fn header(kind: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(INDEX_HEADER_LEN);
    h.extend_from_slice(&INDEX_MAGIC);
    h.push(INDEX_VERSION);
    h.push(kind);
    h.resize(INDEX_HEADER_LEN, 0);
    h
}

pub(crate) fn encode_offsets(entries: &[OffsetEntry]) -> Vec<u8> {
    let mut b = header(INDEX_KIND_OFFSET);
    for e in entries {
        b.extend_from_slice(&e.rel.to_le_bytes());
        b.extend_from_slice(&e.pos.to_le_bytes());
    }
    b
}

pub(crate) fn encode_times(entries: &[TimeEntry]) -> Vec<u8> {
    let mut b = header(INDEX_KIND_TIME);
    for e in entries {
        b.extend_from_slice(&e.ts.to_le_bytes());
        b.extend_from_slice(&e.rel.to_le_bytes());
    }
    b
}

fn check_header(bytes: &[u8], kind: u8, entry_len: usize) -> Result<&[u8], &'static str> {
    let (Some(h), Some(body)) = (bytes.get(..INDEX_HEADER_LEN), bytes.get(INDEX_HEADER_LEN..))
    else {
        return Err("index file shorter than its header");
    };
    if h[..4] != INDEX_MAGIC {
        return Err("bad index magic");
    }
    if h[4] != INDEX_VERSION {
        return Err("unsupported index version");
    }
    if h[5] != kind {
        return Err("wrong index kind");
    }
    if body.len() % entry_len != 0 {
        return Err("index length is not a whole number of entries");
    }
    Ok(body)
}

/// Decodes an offset index and checks that it is strictly increasing and inside a segment of
/// `segment_len` bytes.
pub(crate) fn decode_offsets(
    bytes: &[u8],
    segment_len: u64,
) -> Result<Vec<OffsetEntry>, &'static str> {
    let body = check_header(bytes, INDEX_KIND_OFFSET, OFFSET_ENTRY_LEN)?;
    let mut c = Cursor::new(body);
    let mut out = Vec::with_capacity(body.len() / OFFSET_ENTRY_LEN);
    while c.pos < body.len() {
        let rel = c.u32().map_err(|_| "truncated entry")?;
        let pos = c.u32().map_err(|_| "truncated entry")?;
        if let Some(prev) = out.last() {
            let prev: &OffsetEntry = prev;
            if rel <= prev.rel || pos <= prev.pos {
                return Err("index entries are not increasing");
            }
        }
        if u64::from(pos) >= segment_len {
            return Err("index entry points past the end of the segment");
        }
        out.push(OffsetEntry { rel, pos });
    }
    Ok(out)
}

/// Decodes a time index and checks that timestamps and offsets never go down.
pub(crate) fn decode_times(bytes: &[u8]) -> Result<Vec<TimeEntry>, &'static str> {
    let body = check_header(bytes, INDEX_KIND_TIME, TIME_ENTRY_LEN)?;
    let mut c = Cursor::new(body);
    let mut out: Vec<TimeEntry> = Vec::with_capacity(body.len() / TIME_ENTRY_LEN);
    while c.pos < body.len() {
        let ts = c.i64().map_err(|_| "truncated entry")?;
        let rel = c.u32().map_err(|_| "truncated entry")?;
        if let Some(prev) = out.last() {
            if ts < prev.ts || rel < prev.rel {
                return Err("time index entries go backwards");
            }
        }
        out.push(TimeEntry { ts, rel });
    }
    if out.is_empty() {
        return Err("time index has no closing entry");
    }
    Ok(out)
}

/// Builds index entries while batches are appended or scanned, one entry per
/// `interval_bytes` of log.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    pub index: SegmentIndex,
    interval_bytes: u64,
    last_entry_pos: Option<u64>,
    /// Newest timestamp seen so far.
    pub max_ts: i64,
    /// One past the last offset seen so far, relative to the base.
    pub next_rel: u64,
}

impl IndexBuilder {
    pub fn new(interval_bytes: u32) -> Self {
        IndexBuilder {
            index: SegmentIndex::default(),
            interval_bytes: u64::from(interval_bytes),
            last_entry_pos: None,
            max_ts: i64::MIN,
            next_rel: 0,
        }
    }

    /// Notes a batch at byte `pos` holding relative offsets `rel_first..=rel_last`.
    pub fn add_batch(&mut self, pos: u64, rel_first: u64, rel_last: u64, max_ts: i64) {
        let due = match self.last_entry_pos {
            None => true,
            Some(last) => pos - last >= self.interval_bytes,
        };
        // Positions and relative offsets fit in u32: segments are at most 1 GiB and a batch
        // spans less than 2^32 offsets; a segment that somehow grew past that just stops
        // getting entries, and lookups scan further.
        if let (true, Ok(rel), Ok(p)) = (due, u32::try_from(rel_first), u32::try_from(pos)) {
            self.index.offsets.push(OffsetEntry { rel, pos: p });
            if self.max_ts != i64::MIN || self.index.times.is_empty() {
                self.index.times.push(TimeEntry {
                    ts: self.max_ts,
                    rel,
                });
            }
            self.last_entry_pos = Some(pos);
        }
        self.max_ts = self.max_ts.max(max_ts);
        self.next_rel = rel_last + 1;
    }

    /// The index with its closing time entry, as written when the segment is sealed.
    pub fn sealed(&self) -> SegmentIndex {
        let mut idx = self.index.clone();
        let rel = u32::try_from(self.next_rel).unwrap_or(u32::MAX);
        idx.times.push(TimeEntry {
            ts: self.max_ts,
            rel,
        });
        idx
    }
}
