//! Byte layouts of every LogCore file, in one place: record batches (`.log`), the offset index
//! (`.idx`), the time index (`.timeindex`) and producer snapshots (`.snapshot`). Every file or
//! batch starts with a magic number and a version byte that are checked on read. All integers
//! are little-endian.
//!
//! Record batch (the unit of writing, checksumming and idempotence):
//! ```text
//!  0  base_offset        u64   offset of the first record (written by the partition writer)
//!  8  batch_len          u32   bytes of the whole batch, header included
//! 12  magic              [4]   "BRDB"
//! 16  version            u8    1
//! 17  attributes         u8    0 (reserved)
//! 18  reserved           u16   0
//! 20  crc32c             u32   over bytes 24..batch_len
//! 24  last_offset_delta  u32   offset of the last record minus base_offset
//! 28  record_count       u32   >= 1
//! 32  first_timestamp    i64   µs since the Unix epoch
//! 40  max_timestamp      i64
//! 48  producer_id        u64   0 = not idempotent
//! 56  producer_seq       u64
//! 64  records…
//! ```
//! The checksum leaves out `base_offset` and `batch_len` so that a batch can be encoded and
//! checksummed by the appending task and only stamped with its offset by the writer (Kafka does
//! the same). Those two fields are still checked: offsets must follow on from the previous
//! batch and the length must land on the next batch or the end of the file.
//!
//! Record:
//! ```text
//! record_len u32 (bytes after this field) | offset_delta u32 | timestamp i64 |
//! key_len i32 (-1 = null) | key | value_len i32 (-1 = null) | value |
//! header_count u16 | { name_len u16 | name (UTF-8) | value_len i32 | value }*
//! ```

use bytes::Bytes;

use super::ProducerSeq;

pub const BATCH_MAGIC: [u8; 4] = *b"BRDB";
pub const BATCH_VERSION: u8 = 1;
pub const BATCH_HEADER_LEN: usize = 64;
/// Largest batch a reader accepts. Appends are bounded by the topic's (smaller, changeable)
/// `batch_bytes_max`; reads use this fixed bound so that lowering the setting never makes
/// existing data look damaged.
pub const BATCH_DECODE_BYTES_MAX: u32 = 1 << 30;
/// First byte covered by the batch checksum.
pub const BATCH_CRC_START: usize = 24;
const RECORD_FIXED_LEN: usize = 4 + 4 + 8 + 4 + 4 + 2;

/// Offset and time index files: a 16-byte header, then fixed-size entries.
/// ```text
/// magic "BRDI" | version u8 = 1 | kind u8 (1 = offset, 2 = time) | reserved [10]
/// offset entry: relative_offset u32 | position u32
/// time entry:   timestamp i64 | relative_offset u32
/// ```
pub const INDEX_MAGIC: [u8; 4] = *b"BRDI";
pub const INDEX_VERSION: u8 = 1;
pub const INDEX_HEADER_LEN: usize = 16;
pub const INDEX_KIND_OFFSET: u8 = 1;
pub const INDEX_KIND_TIME: u8 = 2;
pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;

/// Producer snapshot: the idempotence state as of the segment base offset in the file name.
/// ```text
/// magic "BRDP" | version u8 = 1 | reserved [3] | entry_count u32 |
/// { producer_id u64 | batch_count u8 | { sequence u64 | base_offset u64 | last_offset u64 }* }* |
/// crc32c u32 over everything before it
/// ```
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"BRDP";
pub const SNAPSHOT_VERSION: u8 = 1;

/// A record header (Kafka-style): a name and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A record to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// µs since the Unix epoch; `None` takes the time of the append.
    pub timestamp: Option<i64>,
    pub key: Option<Bytes>,
    /// `None` is a tombstone for compacted topics.
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with just a value.
    pub fn value(v: impl Into<Bytes>) -> Self {
        Record {
            value: Some(v.into()),
            ..Default::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(k: impl Into<Bytes>, v: impl Into<Bytes>) -> Self {
        Record {
            key: Some(k.into()),
            value: Some(v.into()),
            ..Default::default()
        }
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Why bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete: {needed} bytes needed, {available} available")]
    Incomplete { needed: usize, available: usize },
    #[error("bad magic number")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("bad batch length {0}")]
    BadLength(u32),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// The fixed part of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_len: u32,
    pub crc: u32,
    pub last_offset_delta: u32,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: u64,
    pub producer_seq: u64,
}

impl BatchHeader {
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    pub fn producer(&self) -> Option<ProducerSeq> {
        (self.producer_id != 0).then_some(ProducerSeq {
            producer_id: self.producer_id,
            sequence: self.producer_seq,
        })
    }

    /// Parses and checks the header at the start of `buf` (not the checksum: see
    /// [`verify_crc`]). `batch_bytes_max` bounds `batch_len` so that a damaged length cannot
    /// make a reader allocate gigabytes.
    pub fn parse(buf: &[u8], batch_bytes_max: u32) -> Result<BatchHeader, DecodeError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(DecodeError::Incomplete {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let mut c = Cursor::new(buf);
        let base_offset = c.u64()?;
        let batch_len = c.u32()?;
        if c.take(4)? != BATCH_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = c.u8()?;
        if version != BATCH_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let _attributes = c.u8()?;
        let _reserved = c.u16()?;
        let crc = c.u32()?;
        let last_offset_delta = c.u32()?;
        let record_count = c.u32()?;
        let first_timestamp = c.i64()?;
        let max_timestamp = c.i64()?;
        let producer_id = c.u64()?;
        let producer_seq = c.u64()?;
        if (batch_len as usize) < BATCH_HEADER_LEN + RECORD_FIXED_LEN || batch_len > batch_bytes_max
        {
            return Err(DecodeError::BadLength(batch_len));
        }
        if record_count == 0 || last_offset_delta < record_count - 1 {
            return Err(DecodeError::Malformed(
                "record count does not fit the offset range",
            ));
        }
        if base_offset
            .checked_add(u64::from(last_offset_delta) + 1)
            .is_none()
        {
            return Err(DecodeError::Malformed("offset overflows"));
        }
        Ok(BatchHeader {
            base_offset,
            batch_len,
            crc,
            last_offset_delta,
            record_count,
            first_timestamp,
            max_timestamp,
            producer_id,
            producer_seq,
        })
    }
}

/// Checks the checksum of a complete batch (`buf` is exactly `batch_len` bytes).
pub fn verify_crc(header: &BatchHeader, buf: &[u8]) -> Result<(), DecodeError> {
    let Some(covered) = buf.get(BATCH_CRC_START..header.batch_len as usize) else {
        return Err(DecodeError::Incomplete {
            needed: header.batch_len as usize,
            available: buf.len(),
        });
    };
    let computed = crc32c::crc32c(covered);
    if computed != header.crc {
        return Err(DecodeError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Decodes a whole batch: header, checksum and every record. `batch` must start at the batch
/// and hold at least `batch_len` bytes.
pub fn decode_batch(
    batch: &Bytes,
    batch_bytes_max: u32,
) -> Result<(BatchHeader, Vec<LogRecord>), DecodeError> {
    let header = BatchHeader::parse(batch, batch_bytes_max)?;
    verify_crc(&header, batch)?;
    let records = decode_records(&header, &batch.slice(..header.batch_len as usize))?;
    Ok((header, records))
}

/// Decodes the records of a batch whose header and checksum were already checked.
pub fn decode_records(header: &BatchHeader, batch: &Bytes) -> Result<Vec<LogRecord>, DecodeError> {
    let body = batch.slice(BATCH_HEADER_LEN..header.batch_len as usize);
    let mut c = Cursor::new(&body);
    let mut records = Vec::with_capacity(header.record_count.min(1 << 16) as usize);
    let mut prev_delta: Option<u32> = None;
    for _ in 0..header.record_count {
        let record_len = c.u32()? as usize;
        let start = c.pos;
        let end = start
            .checked_add(record_len)
            .filter(|&e| e <= body.len())
            .ok_or(DecodeError::Malformed("record runs past the batch"))?;
        let offset_delta = c.u32()?;
        if prev_delta.is_some_and(|p| offset_delta <= p) || offset_delta > header.last_offset_delta
        {
            return Err(DecodeError::Malformed("record offsets out of order"));
        }
        prev_delta = Some(offset_delta);
        let timestamp = c.i64()?;
        let key = opt_bytes(&mut c, &body)?;
        let value = opt_bytes(&mut c, &body)?;
        let header_count = c.u16()?;
        let mut headers = Vec::with_capacity(usize::from(header_count).min(64));
        for _ in 0..header_count {
            let name_len = usize::from(c.u16()?);
            let name = std::str::from_utf8(c.take(name_len)?)
                .map_err(|_| DecodeError::Malformed("header name is not UTF-8"))?
                .to_string();
            let value = opt_bytes(&mut c, &body)?;
            headers.push(Header { key: name, value });
        }
        if c.pos != end {
            return Err(DecodeError::Malformed(
                "record length does not match its fields",
            ));
        }
        records.push(LogRecord {
            offset: header.base_offset + u64::from(offset_delta),
            timestamp,
            key,
            value,
            headers,
        });
    }
    if c.pos != body.len() {
        return Err(DecodeError::Malformed("bytes left after the last record"));
    }
    if prev_delta != Some(header.last_offset_delta) {
        return Err(DecodeError::Malformed(
            "last record does not carry the last offset",
        ));
    }
    Ok(records)
}

/// A batch encoded and checksummed by the appender, waiting for its base offset.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The batch is `buf[start..]`: the bytes before it are room the writer may use to align a
    /// direct write (see [`BatchBuilder::with_buffer_at`]).
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) record_count: u32,
    pub(crate) last_offset_delta: u32,
    pub(crate) max_timestamp: i64,
    pub(crate) producer: Option<ProducerSeq>,
    pub(crate) has_null_key: bool,
}

impl EncodedBatch {
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// The encoded bytes (base offset still 0 until the writer stamps it).
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn len_i32(n: usize, what: &str) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| format!("{what} of {n} bytes is too large"))
}

/// The encoded size of one record, with every length checked against its field's width, so
/// that [`put_record`] cannot fail afterwards.
fn checked_record_len(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> Result<usize, String> {
    let mut n = RECORD_FIXED_LEN;
    if let Some(k) = key {
        len_i32(k.len(), "key")?;
        n += k.len();
    }
    if let Some(v) = value {
        len_i32(v.len(), "value")?;
        n += v.len();
    }
    if !headers.is_empty() {
        u16::try_from(headers.len()).map_err(|_| "more than 65535 headers".to_string())?;
        for h in headers {
            u16::try_from(h.key.len())
                .map_err(|_| "header name longer than 65535 bytes".to_string())?;
            n += 2 + h.key.len() + 4;
            if let Some(v) = &h.value {
                len_i32(v.len(), "header value")?;
                n += v.len();
            }
        }
    }
    let after_len = n - 4;
    u32::try_from(after_len).map_err(|_| format!("record of {after_len} bytes is too large"))?;
    Ok(n)
}

/// The length field of an optional byte string (-1 = null). Only called on lengths that
/// [`checked_record_len`] accepted.
fn opt_len(v: Option<&[u8]>) -> i32 {
    v.map_or(-1, |b| b.len() as i32)
}

/// Appends one record of `encoded_len` bytes. The caller checked its lengths with
/// [`checked_record_len`] (that is what makes the `as` conversions lossless); encoding runs for
/// every appended record, so this is one copy for the fixed fields and one per byte string,
/// with no checks left to fail.
fn put_record(
    buf: &mut Vec<u8>,
    encoded_len: usize,
    offset_delta: u32,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) {
    let len = (encoded_len - 4) as u32;
    let mut fixed = [0u8; 20];
    fixed[..4].copy_from_slice(&len.to_le_bytes());
    fixed[4..8].copy_from_slice(&offset_delta.to_le_bytes());
    fixed[8..16].copy_from_slice(&timestamp.to_le_bytes());
    fixed[16..20].copy_from_slice(&opt_len(key).to_le_bytes());
    buf.extend_from_slice(&fixed);
    if let Some(k) = key {
        buf.extend_from_slice(k);
    }
    buf.extend_from_slice(&opt_len(value).to_le_bytes());
    if let Some(v) = value {
        buf.extend_from_slice(v);
    }
    buf.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    for h in headers {
        buf.extend_from_slice(&(h.key.len() as u16).to_le_bytes());
        buf.extend_from_slice(h.key.as_bytes());
        buf.extend_from_slice(&opt_len(h.value.as_deref()).to_le_bytes());
        if let Some(v) = &h.value {
            buf.extend_from_slice(v);
        }
    }
}

/// How much encoded data is folded into the checksum at a time: small enough to still be in
/// the core's cache, large enough for crc32c's three-way interleaved path (24 KiB blocks).
const CRC_STRETCH_BYTES: usize = 64 << 10;

/// The most [`encode_batch_into`] reserves up front from its guess of the batch's size.
const ENCODE_RESERVE_BYTES_MAX: usize = 16 << 20;

/// Writes every header field except the checksum into `buf[..BATCH_HEADER_LEN]`.
#[allow(clippy::too_many_arguments)]
fn write_header(
    buf: &mut [u8],
    base_offset: u64,
    batch_len: u32,
    last_offset_delta: u32,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: Option<ProducerSeq>,
) {
    let (pid, seq) = producer.map_or((0, 0), |p| (p.producer_id, p.sequence));
    let h = &mut buf[..BATCH_HEADER_LEN];
    h[0..8].copy_from_slice(&base_offset.to_le_bytes());
    h[8..12].copy_from_slice(&batch_len.to_le_bytes());
    h[12..16].copy_from_slice(&BATCH_MAGIC);
    h[16] = BATCH_VERSION;
    h[17] = 0;
    h[18..20].copy_from_slice(&0u16.to_le_bytes());
    h[20..24].copy_from_slice(&0u32.to_le_bytes());
    h[24..28].copy_from_slice(&last_offset_delta.to_le_bytes());
    h[28..32].copy_from_slice(&record_count.to_le_bytes());
    h[32..40].copy_from_slice(&first_timestamp.to_le_bytes());
    h[40..48].copy_from_slice(&max_timestamp.to_le_bytes());
    h[48..56].copy_from_slice(&pid.to_le_bytes());
    h[56..64].copy_from_slice(&seq.to_le_bytes());
}

/// Writes the header around records already in `buf[BATCH_HEADER_LEN..]` and checksums it.
fn finish_header(
    buf: &mut [u8],
    base_offset: u64,
    last_offset_delta: u32,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: Option<ProducerSeq>,
) -> Result<(), String> {
    let batch_len = u32::try_from(buf.len())
        .map_err(|_| format!("batch of {} bytes is too large", buf.len()))?;
    write_header(
        buf,
        base_offset,
        batch_len,
        last_offset_delta,
        record_count,
        first_timestamp,
        max_timestamp,
        producer,
    );
    let crc = crc32c::crc32c(&buf[BATCH_CRC_START..]);
    buf[20..24].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Encodes `records` as one batch with dense offsets (base offset 0 until stamped).
/// Records without a timestamp get `now_us`.
pub fn encode_batch(
    records: &[Record],
    producer: Option<ProducerSeq>,
    now_us: i64,
) -> Result<EncodedBatch, String> {
    encode_batch_into(BatchBuilder::new(now_us), records, producer)
}

/// [`encode_batch`] into an empty builder, which may hold a recycled buffer so that large
/// appends do not pay for fresh pages on every call.
pub fn encode_batch_into(
    mut builder: BatchBuilder,
    records: &[Record],
    producer: Option<ProducerSeq>,
) -> Result<EncodedBatch, String> {
    let Some(first) = records.first() else {
        return Err("a batch needs at least one record".into());
    };
    // Room for as many records as the first one, without a pass to size them all: exact for
    // the common batch of alike records, and a wrong guess only costs the vector's growth.
    let first_len =
        checked_record_len(first.key.as_deref(), first.value.as_deref(), &first.headers)?;
    builder.reserve(records.len().saturating_mul(first_len));
    for r in records {
        builder.push_record(r)?;
    }
    builder.finish(producer)
}

/// Encodes records one at a time straight into a batch, the way a Kafka producer fills its
/// record batch before sending it: a caller that makes records from something else (the SQL
/// layer turning rows into values) writes each byte once, into the batch, instead of building
/// a [`Record`] per row that [`encode_batch`] then copies; and the encoding and checksumming
/// happen on the producer's side, so that [`Partition::append_encoded`] only queues bytes that
/// are ready to be written.
///
/// One pass: each record is checked, encoded and folded into the checksum while it is still in
/// cache. The header fields the checksum covers (the largest timestamp among them) are known
/// only at [`finish`](Self::finish), so the body is checksummed on its own and the header's
/// checksum is combined in front of it.
///
/// [`Partition::append_encoded`]: super::Partition::append_encoded
#[derive(Debug)]
pub struct BatchBuilder {
    /// The batch is `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    now_us: i64,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    has_null_key: bool,
    /// Checksum of `buf[BATCH_HEADER_LEN..summed]`.
    body_crc: u32,
    summed: usize,
}

impl BatchBuilder {
    /// An empty batch; records without a timestamp get `now_us`.
    pub fn new(now_us: i64) -> BatchBuilder {
        BatchBuilder::with_buffer(Vec::new(), now_us)
    }

    /// An empty batch in a recycled buffer (its contents are discarded).
    pub fn with_buffer(buf: Vec<u8>, now_us: i64) -> BatchBuilder {
        BatchBuilder::with_buffer_at(buf, now_us, 0)
    }

    /// An empty batch that starts `start` bytes into a recycled buffer. The bytes before it are
    /// not part of the batch: a writer that writes past the page cache (`O_DIRECT`) copies the
    /// partial block the file ends in there, so that the batch goes to the disk from where it
    /// was encoded instead of being copied to an aligned buffer first.
    pub fn with_buffer_at(mut buf: Vec<u8>, now_us: i64, start: usize) -> BatchBuilder {
        buf.clear();
        buf.resize(start + BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            start,
            now_us,
            record_count: 0,
            first_timestamp: now_us,
            max_timestamp: now_us,
            has_null_key: false,
            body_crc: 0,
            summed: start + BATCH_HEADER_LEN,
        }
    }

    /// Makes room for about `bytes` more of records (bounded: a wrong guess only costs growth).
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes.min(ENCODE_RESERVE_BYTES_MAX));
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// The timestamp of records pushed without one.
    pub fn default_timestamp(&self) -> i64 {
        self.now_us
    }

    /// Bytes the batch holds so far, header included: what it will take on disk.
    pub fn encoded_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends a record.
    pub fn push_record(&mut self, r: &Record) -> Result<(), String> {
        self.push(
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
            r.timestamp,
        )
    }

    /// Appends a record made of borrowed parts.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        timestamp: Option<i64>,
    ) -> Result<(), String> {
        let len = checked_record_len(key, value, headers)?;
        let delta = self.next_delta(key.is_none(), timestamp)?;
        let ts = timestamp.unwrap_or(self.now_us);
        put_record(&mut self.buf, len, delta, ts, key, value, headers);
        self.fold_checksum();
        Ok(())
    }

    /// Appends a record with no headers whose value `write_value` writes straight into the
    /// batch (it may only append to the vector it is given). A value larger than a record can
    /// hold is an error and leaves the batch as it was.
    pub fn push_with(
        &mut self,
        key: Option<&[u8]>,
        timestamp: Option<i64>,
        write_value: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), String> {
        checked_record_len(key, Some(&[]), &[])?;
        let start = self.buf.len();
        let ts = timestamp.unwrap_or(self.now_us);
        let delta = self.record_count;
        let mut fixed = [0u8; 20];
        fixed[4..8].copy_from_slice(&delta.to_le_bytes());
        fixed[8..16].copy_from_slice(&ts.to_le_bytes());
        fixed[16..20].copy_from_slice(&opt_len(key).to_le_bytes());
        self.buf.extend_from_slice(&fixed);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        let value_len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write_value(&mut self.buf);
        let value_len = self.buf.len() - value_len_at - 4;
        // Same checks as `checked_record_len`, now that the value's length is known.
        let record_len = self.buf.len() + 2 - start - 4;
        let (Ok(value_len), Ok(record_len)) = (i32::try_from(value_len), u32::try_from(record_len))
        else {
            self.buf.truncate(start);
            return Err(format!("value of {value_len} bytes is too large"));
        };
        if let Err(e) = self.next_delta(key.is_none(), timestamp) {
            self.buf.truncate(start);
            return Err(e);
        }
        self.buf[value_len_at..value_len_at + 4].copy_from_slice(&value_len.to_le_bytes());
        self.buf[start..start + 4].copy_from_slice(&record_len.to_le_bytes());
        self.buf.extend_from_slice(&0u16.to_le_bytes());
        self.fold_checksum();
        Ok(())
    }

    /// Counts one more record and returns its offset delta.
    fn next_delta(&mut self, null_key: bool, timestamp: Option<i64>) -> Result<u32, String> {
        let delta = self.record_count;
        self.record_count = delta
            .checked_add(1)
            .ok_or_else(|| "too many records in one batch".to_string())?;
        let ts = timestamp.unwrap_or(self.now_us);
        if delta == 0 {
            self.first_timestamp = ts;
            self.max_timestamp = ts;
        } else {
            self.max_timestamp = self.max_timestamp.max(ts);
        }
        self.has_null_key |= null_key;
        Ok(delta)
    }

    /// Folds what was encoded since the last fold into the checksum, a stretch at a time.
    fn fold_checksum(&mut self) {
        if self.buf.len() - self.summed >= CRC_STRETCH_BYTES {
            self.body_crc = crc32c::crc32c_append(self.body_crc, &self.buf[self.summed..]);
            self.summed = self.buf.len();
        }
    }

    /// Writes the header and the checksum: the batch is ready to append.
    pub fn finish(mut self, producer: Option<ProducerSeq>) -> Result<EncodedBatch, String> {
        if self.record_count == 0 {
            return Err("a batch needs at least one record".into());
        }
        let body_crc = crc32c::crc32c_append(self.body_crc, &self.buf[self.summed..]);
        let start = self.start;
        let len = self.buf.len() - start;
        let batch_len =
            u32::try_from(len).map_err(|_| format!("batch of {len} bytes is too large"))?;
        let last_offset_delta = self.record_count - 1;
        write_header(
            &mut self.buf[start..],
            0,
            batch_len,
            last_offset_delta,
            self.record_count,
            self.first_timestamp,
            self.max_timestamp,
            producer,
        );
        let head_crc = crc32c::crc32c(&self.buf[start + BATCH_CRC_START..start + BATCH_HEADER_LEN]);
        let crc = crc32c_combine(head_crc, body_crc, len - BATCH_HEADER_LEN);
        self.buf[start + 20..start + 24].copy_from_slice(&crc.to_le_bytes());
        Ok(EncodedBatch {
            buf: self.buf,
            start,
            record_count: self.record_count,
            last_offset_delta,
            max_timestamp: self.max_timestamp,
            producer,
            has_null_key: self.has_null_key,
        })
    }
}

/// The crc32c of `a ‖ b` from the crc32c of `a`, that of `b`, and `b`'s length: `crc(a)`
/// shifted over `b`'s bytes, then `crc(b)` added. The shift multiplies by x^(8·len) modulo the
/// polynomial, found by squaring (zlib's `crc32_combine`), so it takes a few µs for any length;
/// the crc32c crate's combine applies a bit matrix per length bit, about 70 µs for a megabyte.
fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    /// The CRC-32C polynomial, bit-reflected: in this form x^k is `1 << (31 - k)`.
    const POLY: u32 = 0x82F6_3B78;
    /// `a · b` modulo the polynomial.
    fn mul(a: u32, mut b: u32) -> u32 {
        let mut product = 0;
        for bit in (0..32).rev() {
            if a & (1 << bit) != 0 {
                product ^= b;
            }
            b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        }
        product
    }
    let mut shift = 1u32 << 31; // x^0
    let mut square = 1u32 << (31 - 8); // x^8: one byte
    let mut n = len_b;
    while n != 0 {
        if n & 1 != 0 {
            shift = mul(square, shift);
        }
        square = mul(square, square);
        n >>= 1;
    }
    mul(shift, crc_a) ^ crc_b
}

/// Encodes records that keep their own offsets (compaction output). `records` must be sorted by
/// offset, non-empty, and span less than 2^32 offsets.
pub(crate) fn encode_batch_at_offsets(records: &[&LogRecord]) -> Result<Vec<u8>, String> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err("a batch needs at least one record".into());
    };
    let base = first.offset;
    let delta = |o: u64| u32::try_from(o - base).map_err(|_| "offset span too large".to_string());
    let mut buf = vec![0u8; BATCH_HEADER_LEN];
    let mut max_ts = i64::MIN;
    for r in records {
        max_ts = max_ts.max(r.timestamp);
        let len = checked_record_len(r.key.as_deref(), r.value.as_deref(), &r.headers)?;
        put_record(
            &mut buf,
            len,
            delta(r.offset)?,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    let count = u32::try_from(records.len()).map_err(|_| "too many records".to_string())?;
    finish_header(
        &mut buf,
        base,
        delta(last.offset)?,
        count,
        first.timestamp,
        max_ts,
        None,
    )?;
    Ok(buf)
}

/// Stamps the base offset into an encoded batch (outside the checksum).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[..8].copy_from_slice(&base_offset.to_le_bytes());
}

pub(crate) use crate::codec::Cursor;

impl From<crate::codec::CursorError> for DecodeError {
    fn from(e: crate::codec::CursorError) -> Self {
        match e {
            crate::codec::CursorError::Incomplete { needed, available } => {
                DecodeError::Incomplete { needed, available }
            }
            crate::codec::CursorError::Malformed { what, .. } => DecodeError::Malformed(what),
        }
    }
}

/// A length-prefixed optional byte string, sliced out of `whole` without copying (`whole` must
/// be the buffer `c` reads).
fn opt_bytes(c: &mut Cursor<'_>, whole: &Bytes) -> Result<Option<Bytes>, DecodeError> {
    let len = c.i32()?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("negative length"))?;
    let start = c.pos;
    c.take(len)?;
    Ok(Some(whole.slice(start..start + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode() {
        let recs = vec![
            Record::keyed("k", "v"),
            Record {
                timestamp: Some(42),
                key: None,
                value: None,
                headers: vec![Header {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"x")),
                }],
            },
        ];
        let mut b = encode_batch(&recs, None, 7).expect("encode");
        set_base_offset(&mut b.buf, 100);
        let (h, out) = decode_batch(&Bytes::from(b.buf), u32::MAX).expect("decode");
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.next_offset(), 102);
        assert_eq!(out[0].offset, 100);
        assert_eq!(out[0].timestamp, 7);
        assert_eq!(out[1].offset, 101);
        assert_eq!(out[1].timestamp, 42);
        assert_eq!(out[1].value, None);
        assert_eq!(out[1].headers[0].key, "h");
    }

    #[test]
    fn a_record_that_does_not_fit_its_field_is_refused_before_encoding() {
        let too_many_headers = Record {
            headers: vec![
                Header {
                    key: String::new(),
                    value: None,
                };
                70_000
            ],
            ..Record::value("v")
        };
        let err = encode_batch(&[too_many_headers], None, 0).expect_err("must refuse");
        assert!(err.contains("65535 headers"), "{err}");
        let long_name = Record {
            headers: vec![Header {
                key: "n".repeat(70_000),
                value: None,
            }],
            ..Record::value("v")
        };
        let err = encode_batch(&[long_name], None, 0).expect_err("must refuse");
        assert!(err.contains("header name"), "{err}");
        assert!(encode_batch(&[], None, 0).is_err());
    }

    #[test]
    fn combined_checksums_equal_the_checksum_of_the_whole() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for split in [0, 1, 7, 40, 1000, 65_536, 69_999, 70_000] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len()),
                crc32c::crc32c(&data),
                "split at {split}"
            );
        }
    }

    #[test]
    fn flipped_bit_is_a_crc_mismatch() {
        let b = encode_batch(&[Record::value("hello")], None, 1).expect("encode");
        let mut buf = b.buf;
        let last = buf.len() - 1;
        buf[last] ^= 1;
        let err = decode_batch(&Bytes::from(buf), u32::MAX).expect_err("must fail");
        assert!(matches!(err, DecodeError::CrcMismatch { .. }), "{err:?}");
    }
}
