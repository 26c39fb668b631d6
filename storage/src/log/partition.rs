//! One partition: recovery from disk, the writer (group commit, rolling, idempotence,
//! failure handling) and reads (by offset, by timestamp, and follow mode).
//!
//! All appends to a partition go through one writer: on a writer thread
//! ([`super::writer_threads`]) with a backend whose calls block (the disk waits happen there,
//! never on an async worker), else as an async task. Appenders encode and checksum their batch
//! on their own task, then queue it; the writer drains whatever is queued (bounded by
//! `group_bytes_max`), stamps offsets, writes it with as few calls as it can, runs one
//! `fdatasync`, and only then publishes the new durable end and answers every appender. Readers
//! never read past the published durable end, so they never see a record that could still be
//! lost.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use super::format::{self, BatchBuilder, EncodedBatch, LogRecord, Record};
use super::index::{self, IndexBuilder};
use super::producer::{Check, ProducerState};
use super::segment::{open_segment, parse_segment_name, segment_file, Segment};
use super::{now_micros, Appended, Cleanup, Durability, ProducerSeq, ReadResult, TopicConfig};
use crate::error::{Error, Result};
use crate::io::{self, FileHandle, OpenMode, SharedFs, DIRECT_ALIGN};

/// Batches at least this big are written from their own buffer instead of being copied into
/// the group's buffer.
const WRITE_ALONE_BYTES: usize = 256 << 10;

/// Appends of at least this many records let a writer task start before they free their
/// records (tens of µs for thousands of records); below it freeing costs less than the turn.
const YIELD_BEFORE_FREEING_RECORDS_MIN: usize = 256;

/// The active segment is extended with zeros this far ahead of small appends. `fdatasync` of a
/// write that stays inside blocks already written needs no file-system journal commit (the
/// file's size and block map do not change), only the data and a cache flush — how a
/// PostgreSQL WAL file is used; appending past the end would commit the journal on every sync.
/// Recovery reads a zero tail as "nothing written here", and the file is cut to its data
/// length when the segment is sealed or closed.
const PREALLOC_BYTES: u64 = 1 << 20;

/// Most turns the writer gives other tasks before closing a group (see `Writer::run`).
const GATHER_YIELDS_MAX: usize = 4;

/// Groups at least this large extend the file as they go: the metadata write of the new size
/// is amortised over enough bytes that writing zeros ahead would only double the disk traffic.
/// A group of 64 single 1 KiB records (72 KB) stays below it.
const PREALLOC_GROUP_BYTES_MAX: u64 = 256 << 10;

/// State shared by the writer, the readers and maintenance.
#[derive(Debug)]
pub(crate) struct Shared {
    pub id: u32,
    pub dir: PathBuf,
    pub fs: SharedFs,
    pub config: TopicConfig,
    /// Segments by base offset; the last one is the active segment.
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// One past the last durable offset.
    pub durable: watch::Sender<u64>,
    /// Why the partition refuses writes, while it does.
    pub failed: Mutex<Option<String>>,
    /// Serialises retention and compaction.
    pub maintenance: tokio::sync::Mutex<()>,
    /// Set when the writer has stopped; followers end instead of waiting forever.
    pub closed: std::sync::atomic::AtomicBool,
    /// Write buffers handed back by the backend, reused by the next appends' encoding.
    pub buffers: Mutex<Vec<Vec<u8>>>,
    /// Whether the writer writes through a [`DirectWriter`]: large batches are then encoded
    /// with room in front of them for the file's partial last block.
    pub direct: AtomicBool,
}

/// Buffers kept for reuse, and the largest kept: enough for the appenders of one group commit
/// without holding on to memory after a burst.
const POOLED_BUFFERS_MAX: usize = 8;
const POOLED_BUFFER_BYTES_MAX: usize = 16 << 20;

impl Shared {
    fn take_buffer(&self) -> Vec<u8> {
        self.buffers.lock().pop().unwrap_or_default()
    }

    /// An empty batch in a recycled buffer. While the writer writes through a [`DirectWriter`]
    /// a batch it will write alone (`size_hint`, in bytes, or the recycled buffer's size says
    /// it will be at least [`WRITE_ALONE_BYTES`]) starts [`DIRECT_ALIGN`] bytes into its
    /// buffer: the writer copies the file's partial last block there and writes both from the
    /// buffer, instead of copying the batch behind it. Smaller ones are gathered with the rest
    /// of their group anyway.
    fn batch_builder(&self, size_hint: usize) -> BatchBuilder {
        let buf = self.take_buffer();
        let large = size_hint.max(buf.capacity()) >= WRITE_ALONE_BYTES;
        let start = if large && self.direct.load(Ordering::Relaxed) {
            DIRECT_ALIGN
        } else {
            0
        };
        BatchBuilder::with_buffer_at(buf, now_micros(), start)
    }

    fn return_buffers(&self, bufs: Vec<Vec<u8>>) {
        let mut pool = self.buffers.lock();
        for b in bufs {
            if pool.len() < POOLED_BUFFERS_MAX && b.capacity() <= POOLED_BUFFER_BYTES_MAX {
                pool.push(b);
            }
        }
    }
}

impl Shared {
    pub fn start_offset(&self) -> u64 {
        self.segments.read().keys().next().copied().unwrap_or(0)
    }

    pub fn end_offset(&self) -> u64 {
        *self.durable.borrow()
    }

    fn segment_at(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        segs.range(..=offset)
            .next_back()
            .or_else(|| segs.iter().next())
            .map(|(_, s)| s.clone())
    }

    fn segment_after(&self, base: u64) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .range(base + 1..)
            .next()
            .map(|(_, s)| s.clone())
    }

    pub async fn ensure_index(&self, seg: &Segment) -> Result<()> {
        seg.ensure_index(
            &*self.fs,
            self.config.index_interval_bytes,
            format::BATCH_DECODE_BYTES_MAX,
        )
        .await
    }

    /// Reads from `from`, up to about `max_bytes` of batches, never past the durable end.
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<ReadResult> {
        let end = self.end_offset();
        let start = self.start_offset();
        if from < start || from > end {
            return Err(Error::OffsetOutOfRange {
                requested: from,
                log_start: start,
                log_end: end,
            });
        }
        let mut cur = from;
        while cur < end {
            let Some(seg) = self.segment_at(cur) else {
                break;
            };
            if seg.base > cur {
                // Retention removed the segment holding `cur` while we read.
                cur = seg.base;
            }
            self.ensure_index(&seg).await?;
            let pos = seg.position_for(cur);
            let (records, next) = seg
                .read(pos, cur, end, max_bytes, format::BATCH_DECODE_BYTES_MAX)
                .await?;
            match next {
                Some(n) if !records.is_empty() => {
                    return Ok(ReadResult {
                        records,
                        next_offset: n,
                    })
                }
                Some(n) if n > cur => cur = n,
                _ => match self.segment_after(seg.base) {
                    Some(s) => cur = s.base.max(cur),
                    None => break,
                },
            }
        }
        Ok(ReadResult {
            records: Vec::new(),
            next_offset: cur.max(from),
        })
    }

    /// The first offset whose record has a timestamp at or after `ts`, if any.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let segs: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let end = self.end_offset();
        for seg in segs {
            self.ensure_index(&seg).await?;
            if seg.max_timestamp() < ts {
                continue;
            }
            let mut from = seg.offset_for_timestamp_hint(ts).max(seg.base);
            loop {
                let pos = seg.position_for(from);
                let (records, next) = seg
                    .read(pos, from, end, 1 << 20, format::BATCH_DECODE_BYTES_MAX)
                    .await?;
                if let Some(r) = records.iter().find(|r| r.timestamp >= ts) {
                    return Ok(Some(r.offset));
                }
                match next {
                    Some(n) if n > from => from = n,
                    _ => break,
                }
            }
        }
        Ok(None)
    }
}

struct Pending {
    batch: EncodedBatch,
    reply: oneshot::Sender<Result<Appended>>,
}

enum Request {
    Append(Pending),
    Close(oneshot::Sender<()>),
}

/// What the writer owns between groups.
#[derive(Debug)]
struct WriterState {
    active: Arc<Segment>,
    builder: IndexBuilder,
    next_offset: u64,
    producers: ProducerState,
    active_since: Instant,
    /// Bytes of the active file written so far, data plus zeros ahead of it (>= its length).
    allocated: u64,
    /// Direct writes of the active segment; `None` writes through the page cache.
    direct: Option<DirectWriter>,
}

/// Writes the active segment's commits from block boundaries: each write starts at the
/// [`DIRECT_ALIGN`] boundary at or below the data's end, so it writes the file's partial last
/// block again (kept here, as PostgreSQL rewrites the current WAL page), and ends on one,
/// padded with zeros, which the file holds after its data anyway (see [`PREALLOC_BYTES`]).
/// Small commits go through `file` (`O_DIRECT`), large batches through the page cache (see
/// [`write_from_block`]).
#[derive(Debug)]
struct DirectWriter {
    file: Arc<dyn FileHandle>,
    /// The file's bytes from the last aligned position at or below the data's end up to it.
    tail: Vec<u8>,
    /// Where a group of several batches is gathered into one aligned write.
    gather: Vec<u8>,
}

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Request>,
    /// Answered when the writer has ended.
    writer: Mutex<Option<oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Append(p) => write!(f, "Append({} bytes)", p.batch.len()),
            Request::Close(_) => write!(f, "Close"),
        }
    }
}

impl Partition {
    /// Opens (creating if needed) the partition in `dir`, recovering it from disk.
    pub(crate) async fn open(
        id: u32,
        dir: PathBuf,
        fs: SharedFs,
        config: TopicConfig,
    ) -> Result<Partition> {
        let (durable, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            id,
            dir,
            fs,
            config,
            segments: RwLock::new(BTreeMap::new()),
            durable,
            failed: Mutex::new(None),
            maintenance: tokio::sync::Mutex::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
            buffers: Mutex::new(Vec::new()),
            direct: AtomicBool::new(false),
        });
        let state = recover(&shared).await?;
        let (tx, rx) = mpsc::channel(shared.config.queue_depth_max);
        let writer = Writer {
            shared: shared.clone(),
            state: Some(state),
        };
        let handle = if shared.fs.waits_in_place() {
            super::writer_threads::spawn(writer.run(rx))
                .await
                .map_err(|e| Error::io("start the writer thread", &shared.dir, e))?
        } else {
            let (ended, handle) = oneshot::channel();
            tokio::spawn(async move {
                writer.run(rx).await;
                let _ = ended.send(());
            });
            handle
        };
        Ok(Partition {
            shared,
            tx,
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn id(&self) -> u32 {
        self.shared.id
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends records as one batch; returns once they are durable.
    pub async fn append(&self, records: Vec<Record>) -> Result<Appended> {
        self.append_batch(records, None).await
    }

    /// Appends as an idempotent producer: a retry of a sequence already written returns the
    /// first write's offsets with `duplicate = true` and writes nothing.
    pub async fn append_idempotent(
        &self,
        records: Vec<Record>,
        producer: ProducerSeq,
    ) -> Result<Appended> {
        if producer.producer_id == 0 {
            return Err(Error::InvalidArgument("producer id 0 is reserved".into()));
        }
        self.append_batch(records, Some(producer)).await
    }

    async fn append_batch(
        &self,
        records: Vec<Record>,
        producer: Option<ProducerSeq>,
    ) -> Result<Appended> {
        let hint = records.first().map_or(0, |r| {
            let len =
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            len.saturating_mul(records.len())
        });
        let batch = format::encode_batch_into(self.shared.batch_builder(hint), &records, producer)
            .map_err(Error::InvalidArgument)?;
        let durable = self.submit(batch).await?;
        // Free the records while the writer writes and syncs, not after: for a large batch this
        // is thousands of frees the caller would otherwise wait for on top of the fdatasync. A
        // writer thread has started already; a writer task (io_uring) was woken into this
        // worker's LIFO slot, where it would wait until this task yields, so yield first.
        if records.len() >= YIELD_BEFORE_FREEING_RECORDS_MIN && !self.shared.fs.waits_in_place() {
            tokio::task::yield_now().await;
        }
        drop(records);
        durable.await.map_err(|_| Error::Closed)?
    }

    /// An empty batch for [`append_encoded`](Self::append_encoded), in a buffer a finished
    /// write handed back, so a steady producer fills the same pages again.
    pub fn batch_builder(&self) -> BatchBuilder {
        self.shared.batch_builder(0)
    }

    /// Appends a batch the caller already encoded ([`BatchBuilder`], [`format::encode_batch`]);
    /// returns once it is durable. Only the base offset is stamped into it: the records and
    /// the checksum are written as they are.
    pub async fn append_encoded(&self, batch: EncodedBatch) -> Result<Appended> {
        self.submit(batch).await?.await.map_err(|_| Error::Closed)?
    }

    /// Queues a batch for the writer; the receiver answers once it is durable.
    async fn submit(&self, batch: EncodedBatch) -> Result<oneshot::Receiver<Result<Appended>>> {
        if batch.len() > self.shared.config.batch_bytes_max as usize {
            return Err(Error::InvalidArgument(format!(
                "batch of {} bytes is larger than batch_bytes_max ({})",
                batch.len(),
                self.shared.config.batch_bytes_max
            )));
        }
        if self.shared.config.cleanup == Cleanup::Compact && batch.has_null_key {
            return Err(Error::InvalidArgument(
                "records appended to a compacted topic need a key".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Append(Pending { batch, reply }))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    /// See [`Shared::read`].
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<ReadResult> {
        self.shared.read(from, max_bytes).await
    }

    /// The first offset still held (older ones were removed by retention).
    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset()
    }

    /// One past the last durable offset: the offset the next append gets.
    pub fn end_offset(&self) -> u64 {
        self.shared.end_offset()
    }

    /// Whether the writer writes the active segment with `O_DIRECT` now (see
    /// [`TopicConfig::direct_io`]).
    pub fn writes_direct(&self) -> bool {
        self.shared.direct.load(Ordering::Relaxed)
    }

    /// The first offset whose record has a timestamp (µs) at or after `ts`.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        self.shared.offset_for_timestamp(ts).await
    }

    /// Follows the partition from `from`: [`Follower::next`] returns the next records as soon
    /// as they are durable, waiting (without polling) when there are none.
    pub fn follow(&self, from: u64) -> Follower {
        Follower {
            shared: self.shared.clone(),
            rx: self.shared.durable.subscribe(),
            next: from,
            max_bytes: 1 << 20,
        }
    }

    /// Bytes on disk in `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.shared.segments.read().values().map(|s| s.len()).sum()
    }

    /// Base offsets of the segments, oldest first (the last is active).
    pub fn segment_bases(&self) -> Vec<u64> {
        self.shared.segments.read().keys().copied().collect()
    }

    /// Why the partition refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().clone()
    }

    /// Applies retention or compaction now (`now_us` = the current time in µs).
    pub async fn run_maintenance(&self, now_us: i64) -> Result<()> {
        super::maintenance::run(&self.shared, now_us).await
    }

    /// Deletes every sealed segment whose records all lie below `offset` (a consumer such as the
    /// database commit log says what it no longer needs; nothing at or above `offset` and never
    /// the active segment is removed). Returns the new start offset.
    pub async fn trim_before(&self, offset: u64) -> Result<u64> {
        super::maintenance::trim_before(&self.shared, offset).await?;
        Ok(self.shared.start_offset())
    }

    /// Stops the writer after the queued appends; later appends fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        Ok(())
    }
}

/// Follow mode. See [`Partition::follow`].
#[derive(Debug)]
pub struct Follower {
    shared: Arc<Shared>,
    rx: watch::Receiver<u64>,
    next: u64,
    max_bytes: usize,
}

impl Follower {
    /// The offset the next call starts at.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Waits for and returns the next durable records (never an empty batch). Once the
    /// partition is closed and everything durable was returned, fails with [`Error::Closed`].
    pub async fn next(&mut self) -> Result<Vec<LogRecord>> {
        loop {
            let end = *self.rx.borrow_and_update();
            if self.next >= end && self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if self.next < end {
                let r = self.shared.read(self.next, self.max_bytes).await?;
                self.next = r.next_offset.max(self.next);
                if !r.records.is_empty() {
                    return Ok(r.records);
                }
                if self.next < end {
                    continue;
                }
            }
            self.rx.changed().await.map_err(|_| Error::Closed)?;
        }
    }
}

/// Rebuilds the partition's in-memory state from its directory: sealed segments are trusted
/// (their indexes load lazily), the active one is scanned and checked batch by batch, a torn
/// tail is cut off, and the producer state is reloaded.
async fn recover(shared: &Shared) -> Result<WriterState> {
    let fs = &*shared.fs;
    let dir = &shared.dir;
    fs.create_dir_all(dir).await?;
    let names = fs.list_dir(dir).await?;
    for name in &names {
        // Leftovers of an interrupted atomic replace or compaction.
        if name.ends_with(".tmp") || name.ends_with(".cleaned") {
            fs.remove_file(&dir.join(name)).await?;
        }
    }
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_name(n, "log"))
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        let path = segment_file(dir, 0, "log");
        fs.open(&path, OpenMode::CreateNew).await?;
        fs.sync_dir(dir).await?;
        bases.push(0);
    }
    let Some((&active_base, sealed)) = bases.split_last() else {
        return Err(Error::InvalidArgument("no segments".into()));
    };
    let mut segments = BTreeMap::new();
    for &base in sealed {
        let seg = open_segment(fs, dir, base, true).await?;
        segments.insert(base, Arc::new(seg));
    }
    let active = open_segment(fs, dir, active_base, false).await?;
    let file_len = active.len();
    let mut seen = Vec::new();
    let end = active
        .scan(
            file_len,
            true,
            shared.config.index_interval_bytes,
            format::BATCH_DECODE_BYTES_MAX,
            |h| {
                if let Some(p) = h.producer() {
                    seen.push((p, h.base_offset, h.last_offset()));
                }
            },
        )
        .await?;
    let mut allocated = end.valid_len;
    if end.torn_bytes > 0 && end.zero_tail {
        // Zeros written ahead of the data (or blocks never written): later appends overwrite
        // them, so they stay.
        tracing::debug!(
            segment = %active.path.display(),
            valid_bytes = end.valid_len,
            zero_bytes = end.torn_bytes,
            "active segment ends in zeros"
        );
        allocated = file_len;
    } else if end.torn_bytes > 0 {
        tracing::warn!(
            segment = %active.path.display(),
            valid_bytes = end.valid_len,
            torn_bytes = end.torn_bytes,
            "truncating a torn tail"
        );
        active.file.set_len(end.valid_len).await?;
        active.file.sync_data().await?;
    }
    active.len.store(end.valid_len, Ordering::Release);
    active.max_ts.store(end.builder.max_ts, Ordering::Release);
    *active.index.write() = Some(end.builder.index.clone());

    let snap_path = segment_file(dir, active_base, "snapshot");
    let mut producers = if fs.exists(&snap_path).await? {
        match ProducerState::decode(&io::read_file(fs, &snap_path).await?) {
            Ok(s) => s,
            Err(reason) => {
                tracing::warn!(path = %snap_path.display(), "ignoring producer snapshot: {reason}");
                ProducerState::default()
            }
        }
    } else {
        ProducerState::default()
    };
    for (p, base, last) in seen {
        producers.record(p, base, last);
    }
    let next_offset = active_base + end.builder.next_rel;
    let direct = open_direct(shared, &active, end.valid_len).await;
    shared.direct.store(direct.is_some(), Ordering::Relaxed);
    let active = Arc::new(active);
    segments.insert(active_base, active.clone());
    *shared.segments.write() = segments;
    shared.durable.send_replace(next_offset);
    Ok(WriterState {
        active,
        builder: end.builder,
        next_offset,
        producers,
        active_since: Instant::now(),
        allocated,
        direct,
    })
}

/// A batch stamped with its offsets, waiting to be written.
struct Staged {
    reply: oneshot::Sender<Result<Appended>>,
    /// The batch is `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    base_offset: u64,
    last_offset: u64,
    max_ts: i64,
    producer: Option<ProducerSeq>,
}

struct Writer {
    shared: Arc<Shared>,
    /// `None` while the partition is failed and could not be reopened.
    state: Option<WriterState>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let cfg = self.shared.config.clone();
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = rx.recv().await else { break };
            let mut group = Vec::new();
            let mut bytes = 0usize;
            let take = |req: Request, group: &mut Vec<Pending>, bytes: &mut usize| match req {
                Request::Append(p) => {
                    *bytes += p.batch.len();
                    group.push(p);
                    None
                }
                Request::Close(tx) => Some(tx),
            };
            closing = take(first, &mut group, &mut bytes);
            // The replies of the last group woke its appenders, whose next appends are on
            // their way: give them a few turns of the driver to send before the group is
            // closed (while the queue grows), or they wait a whole write and sync for the next
            // group. Without this 64 appenders settled into two alternating groups of 32, each
            // paying its own write and sync (121 k appends/s against 175 k with it, 1 KiB
            // records here). Not for a large batch: grouping gains it little.
            if closing.is_none() && bytes < WRITE_ALONE_BYTES {
                let mut queued = rx.len();
                for _ in 0..GATHER_YIELDS_MAX {
                    tokio::task::yield_now().await;
                    let now = rx.len();
                    if now == queued {
                        break;
                    }
                    queued = now;
                }
            }
            if let (Durability::Group { max_wait_us }, None) = (cfg.durability, &closing) {
                if max_wait_us > 0 {
                    let deadline = tokio::time::Instant::now() + Duration::from_micros(max_wait_us);
                    while closing.is_none() && bytes < cfg.group_bytes_max {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(r)) => closing = take(r, &mut group, &mut bytes),
                            _ => break,
                        }
                    }
                }
            }
            while closing.is_none() && bytes < cfg.group_bytes_max {
                match rx.try_recv() {
                    Ok(r) => closing = take(r, &mut group, &mut bytes),
                    Err(_) => break,
                }
            }
            self.handle(group).await;
        }
        rx.close();
        // A clean close leaves the active file at its data length.
        if let Some(state) = &self.state {
            if state.allocated > state.active.len() {
                let len = state.active.len();
                let cut = async {
                    state.active.file.set_len(len).await?;
                    state.active.file.sync_data().await
                };
                if let Err(e) = cut.await {
                    tracing::warn!(partition = %self.shared.dir.display(), "could not cut the zeros after the data at close: {e}");
                }
            }
        }
        // Answer whatever raced with the close.
        while let Ok(req) = rx.try_recv() {
            if let Request::Append(p) = req {
                let _ = p.reply.send(Err(Error::Closed));
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        // Wake followers so they see the close.
        self.shared.durable.send_modify(|_| {});
        if let Some(tx) = closing {
            let _ = tx.send(());
        }
    }

    async fn handle(&mut self, group: Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        if self.state.is_none() {
            self.reopen().await;
        }
        let Some(state) = self.state.as_mut() else {
            let cause = self.shared.failed.lock().clone().unwrap_or_default();
            for p in group {
                let _ = p.reply.send(Err(Error::PartitionFailed {
                    path: self.shared.dir.clone(),
                    cause: cause.clone(),
                }));
            }
            return;
        };
        let cfg = &self.shared.config;
        let mut staged: Vec<Staged> = Vec::new();
        let mut staged_bytes = 0u64;
        let mut in_group: Vec<(ProducerSeq, u64, u64)> = Vec::new();
        let mut iter = group.into_iter();
        while let Some(p) = iter.next() {
            if let Some(ps) = p.batch.producer {
                match check_producer(&state.producers, &in_group, ps) {
                    Ok(Check::Write) => {}
                    Ok(Check::Duplicate(a)) => {
                        let _ = p.reply.send(Ok(a));
                        continue;
                    }
                    Err(e) => {
                        let _ = p.reply.send(Err(e));
                        continue;
                    }
                }
            }
            let size = p.batch.len() as u64;
            let used = state.active.len() + staged_bytes;
            let too_big = used > 0 && used + size > cfg.segment_bytes_max;
            let too_old = used > 0
                && cfg
                    .segment_age_max
                    .is_some_and(|age| state.active_since.elapsed() >= age);
            if too_big || too_old {
                let res = match flush(&self.shared, state, std::mem::take(&mut staged)).await {
                    Ok(()) => roll(&self.shared, state).await,
                    Err(e) => Err(e),
                };
                staged_bytes = 0;
                in_group.clear();
                if let Err(e) = res {
                    let rest: Vec<Pending> = std::iter::once(p).chain(iter).collect();
                    for q in rest {
                        let _ = q.reply.send(Err(failed_error(&self.shared.dir, &e)));
                    }
                    self.fail(e).await;
                    return;
                }
            }
            let mut buf = p.batch.buf;
            let start = p.batch.start;
            let base = state.next_offset;
            format::set_base_offset(&mut buf[start..], base);
            let last = base + u64::from(p.batch.last_offset_delta);
            state.next_offset = last + 1;
            if let Some(ps) = p.batch.producer {
                in_group.push((ps, base, last));
            }
            staged_bytes += size;
            staged.push(Staged {
                reply: p.reply,
                buf,
                start,
                base_offset: base,
                last_offset: last,
                max_ts: p.batch.max_timestamp,
                producer: p.batch.producer,
            });
        }
        if let Err(e) = flush(&self.shared, state, staged).await {
            self.fail(e).await;
        }
    }

    /// A write, sync or roll failed. Nothing of the failed batches was acknowledged; cut the
    /// file back to its last durable length so no unacknowledged byte survives, then reopen
    /// from disk. While either step fails the partition stays failed.
    async fn fail(&mut self, err: Error) {
        tracing::error!(partition = %self.shared.dir.display(), "write failed, reopening from disk: {err}");
        *self.shared.failed.lock() = Some(err.to_string());
        if let Some(state) = self.state.take() {
            let durable = state.active.len();
            let cut = async {
                state.active.file.set_len(durable).await?;
                state.active.file.sync_data().await
            };
            if let Err(e) = cut.await {
                tracing::error!(partition = %self.shared.dir.display(), "could not cut back to the durable length: {e}");
                return;
            }
        }
        self.reopen().await;
    }

    async fn reopen(&mut self) {
        match recover(&self.shared).await {
            Ok(state) => {
                tracing::info!(partition = %self.shared.dir.display(), "reopened after a failed write");
                self.state = Some(state);
                *self.shared.failed.lock() = None;
            }
            Err(e) => {
                tracing::error!(partition = %self.shared.dir.display(), "reopen failed: {e}");
                *self.shared.failed.lock() = Some(e.to_string());
            }
        }
    }
}

fn check_producer(
    state: &ProducerState,
    in_group: &[(ProducerSeq, u64, u64)],
    ps: ProducerSeq,
) -> Result<Check> {
    // A batch of this group not yet written counts as the producer's latest.
    if let Some(&(prev, base, last)) = in_group
        .iter()
        .rev()
        .find(|(p, _, _)| p.producer_id == ps.producer_id)
    {
        if ps.sequence == prev.sequence {
            return Ok(Check::Duplicate(Appended {
                base_offset: base,
                last_offset: last,
                duplicate: true,
            }));
        }
        if ps.sequence == prev.sequence.wrapping_add(1) {
            return Ok(Check::Write);
        }
        if let Some(&(_, b, l)) = in_group.iter().find(|(p, _, _)| *p == ps) {
            return Ok(Check::Duplicate(Appended {
                base_offset: b,
                last_offset: l,
                duplicate: true,
            }));
        }
        return Err(Error::OutOfOrderSequence {
            producer_id: ps.producer_id,
            expected: prev.sequence.wrapping_add(1),
            got: ps.sequence,
        });
    }
    state.check(ps)
}

/// An error for the other appenders of a group that failed (the first cause is logged).
fn failed_error(dir: &Path, e: &Error) -> Error {
    match e {
        Error::DiskFull { op, path } => Error::DiskFull {
            op,
            path: path.clone(),
        },
        other => Error::PartitionFailed {
            path: dir.to_path_buf(),
            cause: other.to_string(),
        },
    }
}

/// Writes staged batches at the end of the active segment, syncs, then publishes and answers.
async fn flush(shared: &Shared, state: &mut WriterState, staged: Vec<Staged>) -> Result<()> {
    if staged.is_empty() {
        return Ok(());
    }
    let start = state.active.len();
    let mut pos = start;
    let mut bufs = Vec::with_capacity(staged.len());
    let mut positions = Vec::with_capacity(staged.len());
    let mut replies = Vec::with_capacity(staged.len());
    for s in staged {
        positions.push((pos, s.base_offset, s.last_offset, s.max_ts, s.producer));
        pos += (s.buf.len() - s.start) as u64;
        replies.push((s.reply, s.base_offset, s.last_offset));
        bufs.push((s.buf, s.start));
    }
    let sync = shared.config.durability != Durability::None;
    // Cross into fresh blocks once per PREALLOC_BYTES, not on every small append.
    let fill_to = if sync && pos > state.allocated && pos - start < PREALLOC_GROUP_BYTES_MAX {
        pos.div_ceil(PREALLOC_BYTES) * PREALLOC_BYTES
    } else {
        pos
    };
    let mut written = None;
    if let Some(d) = state.direct.as_mut() {
        let (res, back) =
            write_from_block(d, &state.active.file, bufs, start, pos, fill_to, sync).await;
        match res {
            Ok(end) => {
                state.allocated = state.allocated.max(end);
                written = Some(back.into_iter().map(|(buf, _)| buf).collect());
                bufs = Vec::new();
            }
            Err(e) if refused_direct(&e) => {
                // Nothing was written: the file system wants another alignment. Stay buffered.
                tracing::warn!(partition = %shared.dir.display(), "direct writes refused, writing through the page cache: {e}");
                state.direct = None;
                shared.direct.store(false, Ordering::Relaxed);
                bufs = back;
            }
            Err(e) => {
                for (reply, _, _) in replies {
                    let _ = reply.send(Err(failed_error(&shared.dir, &e)));
                }
                return Err(e);
            }
        }
    }
    let written = match written {
        Some(w) => w,
        None => {
            let (result, w) = write_buffered(state, bufs, start, pos, fill_to, sync).await;
            if let Err(e) = result {
                for (reply, _, _) in replies {
                    let _ = reply.send(Err(failed_error(&shared.dir, &e)));
                }
                return Err(e);
            }
            state.allocated = state.allocated.max(fill_to);
            w
        }
    };
    let base = state.active.base;
    let before = state.builder.index.offsets.len();
    let before_t = state.builder.index.times.len();
    for (p, first, last, max_ts, producer) in positions {
        state
            .builder
            .add_batch(p, first - base, last - base, max_ts);
        if let Some(ps) = producer {
            state.producers.record(ps, first, last);
        }
    }
    if state.builder.index.offsets.len() > before || state.builder.index.times.len() > before_t {
        let mut idx = state.active.index.write();
        if let Some(idx) = idx.as_mut() {
            idx.offsets
                .extend_from_slice(&state.builder.index.offsets[before..]);
            idx.times
                .extend_from_slice(&state.builder.index.times[before_t..]);
        }
    }
    state
        .active
        .max_ts
        .store(state.builder.max_ts, Ordering::Release);
    state.active.len.store(pos, Ordering::Release);
    shared.durable.send_replace(state.next_offset);
    for (reply, b, l) in replies {
        let _ = reply.send(Ok(Appended {
            base_offset: b,
            last_offset: l,
            duplicate: false,
        }));
    }
    // After the replies: recycling is not on the acknowledgement's path.
    shared.return_buffers(written);
    Ok(())
}

/// Writes a group through the page cache: batches of at least [`WRITE_ALONE_BYTES`] from
/// their own buffers, the small ones gathered into one, then zeros up to `fill_to`.
async fn write_buffered(
    state: &WriterState,
    bufs: Vec<(Vec<u8>, usize)>,
    start: u64,
    pos: u64,
    fill_to: u64,
    sync: bool,
) -> (Result<()>, Vec<Vec<u8>>) {
    let mut writes: Vec<Vec<u8>> = Vec::new();
    let mut small: Vec<u8> = Vec::new();
    for (mut buf, at) in bufs {
        if at > 0 {
            // Room left for a direct writer's tail that has since been turned off: a rare move.
            buf.drain(..at);
        }
        if buf.len() >= WRITE_ALONE_BYTES {
            if !small.is_empty() {
                writes.push(std::mem::take(&mut small));
            }
            writes.push(buf);
        } else if small.is_empty() {
            small = buf;
        } else {
            small.extend_from_slice(&buf);
        }
    }
    if !small.is_empty() {
        writes.push(small);
    }
    if fill_to > pos {
        writes.push(vec![0u8; (fill_to - pos) as usize]);
    }
    state
        .active
        .file
        .write_all_and_sync(writes, start, sync)
        .await
}

/// Whether a direct write failed because the file system refused its alignment (`EINVAL` is
/// checked before any byte is written).
fn refused_direct(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EINVAL))
}

/// Gathered groups larger than this give their buffer back after the write (a zero fill of
/// up to [`PREALLOC_BYTES`] passes through it).
const GATHER_KEEP_BYTES_MAX: usize = 256 << 10;

/// Writes a group from the aligned position at or below `start` (the kept tail first) to
/// `fill_to` rounded up to [`DIRECT_ALIGN`], padded with zeros, then syncs. Small groups are
/// gathered into an aligned buffer and written directly. A lone batch of at least
/// [`WRITE_ALONE_BYTES`] is written through the page cache (`buffered`), from its own buffer
/// with the tail copied in front of it: on this machine a direct write of a megabyte took
/// longer inside the log than the buffered write and its share of the sync (8 partitions of
/// 1.26 MB batches: 1.4 against 1.9 GB/s), while small direct commits are what the io_uring
/// backend needs to complete a commit in one operation. Starting at the block boundary keeps
/// the kernel from reading back the partial block a direct write left out of the page cache.
/// Returns the end of the write and the buffers to recycle; on an error the batches are
/// handed back as they came.
async fn write_from_block(
    d: &mut DirectWriter,
    buffered: &Arc<dyn FileHandle>,
    mut bufs: Vec<(Vec<u8>, usize)>,
    start: u64,
    pos: u64,
    fill_to: u64,
    sync: bool,
) -> (Result<u64>, Vec<(Vec<u8>, usize)>) {
    let align = DIRECT_ALIGN as u64;
    let head = d.tail.len();
    debug_assert_eq!(
        start % align,
        head as u64,
        "the kept tail is the file's partial block"
    );
    let w_off = start - head as u64;
    let w_end = fill_to.div_ceil(align) * align;
    let w_len = (w_end - w_off) as usize;
    // The tail after this write: the file's bytes from the last boundary up to `pos`.
    let tail_at = (pos / align * align - w_off) as usize..(pos - w_off) as usize;
    if let [(buf, at)] = bufs.as_mut_slice() {
        let batch_len = buf.len() - *at;
        if batch_len >= WRITE_ALONE_BYTES {
            if *at < head {
                // Built without room for the tail (direct writes were off then): make it.
                buf.resize(DIRECT_ALIGN + batch_len, 0);
                buf.copy_within(*at..*at + batch_len, DIRECT_ALIGN);
                buf.truncate(DIRECT_ALIGN + batch_len);
                *at = DIRECT_ALIGN;
            }
            let first = *at - head;
            let batch_end = buf.len();
            buf[first..*at].copy_from_slice(&d.tail);
            buf.resize(first + w_len, 0);
            let taken = std::mem::take(buf);
            let (res, mut buf) = buffered
                .write_range_and_sync(taken, first..first + w_len, w_off, sync)
                .await;
            if res.is_ok() {
                d.tail.clear();
                d.tail
                    .extend_from_slice(&buf[first + tail_at.start..first + tail_at.end]);
            }
            buf.truncate(batch_end);
            bufs[0].0 = buf;
            return (res.map(|()| w_end), bufs);
        }
    }
    let mut g = std::mem::take(&mut d.gather);
    g.clear();
    g.reserve(w_len + DIRECT_ALIGN);
    let first = (DIRECT_ALIGN - g.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
    g.resize(first, 0);
    g.extend_from_slice(&d.tail);
    for (buf, at) in &bufs {
        g.extend_from_slice(&buf[*at..]);
    }
    g.resize(first + w_len, 0);
    let range: Range<usize> = first..first + w_len;
    let (res, g) = d.file.write_range_and_sync(g, range, w_off, sync).await;
    if res.is_ok() {
        d.tail.clear();
        d.tail
            .extend_from_slice(&g[first + tail_at.start..first + tail_at.end]);
    }
    if g.capacity() <= GATHER_KEEP_BYTES_MAX {
        d.gather = g;
    }
    (res.map(|()| w_end), bufs)
}

/// Opens the active segment for direct writes when the topic asks for them and the file
/// system allows it, with the file's partial last block below `len` read back. Any failure
/// leaves the partition writing through the page cache (logged): direct writes are a speed-up,
/// never a condition for opening.
async fn open_direct(shared: &Shared, seg: &Segment, len: u64) -> Option<DirectWriter> {
    if !shared.config.direct_io || shared.config.durability == Durability::None {
        return None;
    }
    let opened = async {
        let Some(file) = shared.fs.open_direct(&seg.path).await? else {
            return Ok(None);
        };
        let align = DIRECT_ALIGN as u64;
        let tail_len = (len % align) as usize;
        let (res, tail) = seg
            .file
            .read_at(vec![0; tail_len], len - tail_len as u64)
            .await;
        if res? != tail_len {
            return Err(Error::corruption(
                &seg.path,
                len,
                "the file ended while its last block was read back",
            ));
        }
        Ok(Some(DirectWriter {
            file,
            tail,
            gather: Vec::new(),
        }))
    };
    match opened.await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(segment = %seg.path.display(), "writing through the page cache: {e}");
            None
        }
    }
}

/// Seals the active segment and starts a new one at the next offset.
async fn roll(shared: &Shared, state: &mut WriterState) -> Result<()> {
    let fs = &*shared.fs;
    let dir = &shared.dir;
    let old = state.active.clone();
    if old.len() == 0 {
        return Ok(());
    }
    // A sealed segment is read to its file length: cut the zeros written ahead before the next
    // segment exists (recovery treats the newest segment as active and scans it).
    if state.allocated > old.len() {
        old.file.set_len(old.len()).await?;
        old.file.sync_data().await?;
    } else if shared.config.durability == Durability::None {
        old.file.sync_data().await?;
    }
    let sealed = state.builder.sealed();
    let base = state.next_offset;
    // The sealed segment's index files and the producer snapshot the next segment starts from,
    // synced together: a roll sits on the path of the append that triggers it.
    io::write_files_atomic(
        fs,
        dir,
        vec![
            (
                segment_file(dir, old.base, "idx"),
                index::encode_offsets(&sealed.offsets),
            ),
            (
                segment_file(dir, old.base, "timeindex"),
                index::encode_times(&sealed.times),
            ),
            (
                segment_file(dir, base, "snapshot"),
                state.producers.encode(),
            ),
        ],
    )
    .await?;
    *old.index.write() = Some(sealed);
    old.sealed.store(true, Ordering::Release);
    let path = segment_file(dir, base, "log");
    let file = fs.open(&path, OpenMode::CreateNew).await?;
    fs.sync_dir(dir).await?;
    let seg = Segment::new(base, path, file, 0, false);
    *seg.index.write() = Some(Default::default());
    // The old segment's direct handle goes with its state.
    state.direct = open_direct(shared, &seg, 0).await;
    shared
        .direct
        .store(state.direct.is_some(), Ordering::Relaxed);
    let seg = Arc::new(seg);
    shared.segments.write().insert(base, seg.clone());
    state.active = seg;
    state.builder = IndexBuilder::new(shared.config.index_interval_bytes);
    state.active_since = Instant::now();
    state.allocated = 0;
    // Snapshots older than the previous segment's are never read again.
    if let Ok(names) = fs.list_dir(dir).await {
        for n in names {
            if let Some(b) = parse_segment_name(&n, "snapshot") {
                if b < old.base {
                    let _ = fs.remove_file(&dir.join(n)).await;
                }
            }
        }
    }
    Ok(())
}
