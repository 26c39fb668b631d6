//! The row store: a log-structured merge tree of byte-string keys and values with MVCC.
//!
//! The tree has no write-ahead log of its own. The database commit log (LogCore) is the WAL:
//! the caller appends a transaction there, waits until it is durable, then calls
//! [`Lsm::apply`] with the transaction's commit sequence number and the log position just past
//! it. A flush writes memtables into SSTables and records, in the manifest, the log position up
//! to which everything is now in tables ([`Lsm::durable_log_position`]); on start the caller
//! replays the log from there. The log must never be trimmed past that position.
//!
//! Modules:
//! - [`format`]: byte layouts (SST blocks, footer, manifest) and their bounds-checked decoders;
//! - `memtable`: the in-memory sorted versions (lock-free skip list);
//! - `table`: SSTable writer and reader; `cache`: the sharded LRU block cache;
//! - `iter`: per-source iterators, the merge and [`Scan`]; `version`: what a reader holds;
//! - `split`: keys cutting a range into parts of about equal size, for parallel scans;
//! - `compaction`: leveled compaction (why leveled, and how it stays out of the way, is there).
//!
//! What must stay true:
//! - Every version is `(user key, seqno, Put|Delete, value)`; order is key ascending, seqno
//!   descending. Sequence numbers passed to `apply` strictly increase; all entries of one batch
//!   share one seqno and become visible together: readers never see a seqno above
//!   `visible_seq`, which is raised only after the whole batch is in the memtable.
//! - A table is on disk and `fdatasync`ed before a manifest names it; the manifest is replaced
//!   atomically (`io::write_file_atomic`); a table is deleted only after a durable manifest no
//!   longer names it. `durable_log_position` never moves past a batch that is only in memory.
//! - Compaction keeps every version a live [`Snapshot`] (or the latest state) can see.
//! - After a failed flush or manifest write the tree refuses writes ([`Error::LsmFailed`]) until
//!   reopened; it never retries an `fdatasync`.

pub mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

mod cache;
mod compaction;
mod iter;
mod memtable;
mod split;
mod table;
mod version;

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use cache::CacheStats;
pub use format::Kind;
pub use iter::Scan;

use crate::error::{Error, Result};
use crate::io::{self, SharedFs};
use cache::BlockCache;
use compaction::{Job, Output, Shape};
use format::{ManifestData, KEY_BYTES_MAX, SEQNO_MAX, VALUE_BYTES_MAX};
use iter::{LevelIter, MemIter, Source};
use memtable::Memtable;
use table::{Table, TableIter, TableWriter};
use version::{SuperVersion, Version};

const MANIFEST_NAME: &str = "MANIFEST";

/// Tuning knobs. Every bound is named with its unit last.
#[derive(Debug, Clone)]
pub struct LsmOptions {
    /// The active memtable is frozen and queued for flush once it holds this many bytes.
    pub memtable_bytes_max: usize,
    /// Writers wait while this many frozen memtables are queued for flush.
    pub immutable_memtables_max: usize,
    /// Target size of a data block before its restart array and checksum. 16 KiB: each block
    /// costs a fixed amount to fetch, check and step into, and with 4 KiB blocks a
    /// ten-million-row scan spent a fifth of its time there (438 → 344 ms in `braid-bench
    /// tables`), while a point lookup searches the block's restart points, so a larger block
    /// adds only a few comparisons (select-only TPS unchanged in the same runs).
    pub block_bytes: usize,
    /// Bloom filter bits per distinct key (10 ≈ 1% false positives).
    pub bloom_bits_per_key: u32,
    /// Bytes of decoded data blocks kept in the block cache.
    pub block_cache_bytes: usize,
    /// Compaction cuts output tables once they reach this size.
    pub table_bytes_max: u64,
    /// Level 0 is compacted into level 1 once it holds this many tables.
    pub l0_compaction_trigger_files: usize,
    /// Writers wait while level 0 holds this many tables (only with `background_compaction`).
    pub l0_stall_files: usize,
    /// Byte budget of level 1; level n holds `level1_bytes_max · level_size_ratio^(n-1)`.
    pub level1_bytes_max: u64,
    pub level_size_ratio: u64,
    /// Number of levels, level 0 included.
    pub levels_max: usize,
    /// Pace compaction writes to this rate; `None` = as fast as the disk goes.
    pub compaction_bytes_per_sec: Option<u64>,
    /// Run compactions in the background when levels are over budget. Tests that count files
    /// turn it off and call [`Lsm::compact`] / [`Lsm::compact_full`] themselves.
    pub background_compaction: bool,
}

impl Default for LsmOptions {
    fn default() -> Self {
        LsmOptions {
            memtable_bytes_max: 64 << 20,
            immutable_memtables_max: 2,
            block_bytes: 16 << 10,
            bloom_bits_per_key: 10,
            block_cache_bytes: 256 << 20,
            table_bytes_max: 64 << 20,
            l0_compaction_trigger_files: 4,
            l0_stall_files: 12,
            level1_bytes_max: 256 << 20,
            level_size_ratio: 10,
            levels_max: 7,
            compaction_bytes_per_sec: None,
            background_compaction: true,
        }
    }
}

/// Changes that become visible together at one sequence number. A later entry for the same key
/// replaces an earlier one.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    entries: Vec<(Bytes, Option<Bytes>)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> &mut Self {
        self.entries.push((key.into(), Some(value.into())));
        self
    }

    pub fn delete(&mut self, key: impl Into<Bytes>) -> &mut Self {
        self.entries.push((key.into(), None));
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A registered read sequence number: while it lives, compaction keeps every version it can
/// see. Dropping it releases them.
#[derive(Debug)]
pub struct Snapshot {
    seq: u64,
    registry: Arc<Mutex<BTreeMap<u64, usize>>>,
}

impl Snapshot {
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut r = self.registry.lock();
        if let Some(n) = r.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.seq);
            }
        }
    }
}

/// Size of one level, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LevelInfo {
    pub tables: usize,
    pub bytes: u64,
    pub entries: u64,
}

struct WriterState {
    last_seqno: u64,
    next_memtable_id: u64,
}

struct Inner {
    fs: SharedFs,
    dir: PathBuf,
    opts: LsmOptions,
    state: RwLock<Arc<SuperVersion>>,
    /// Serializes `apply` and memtable rotation (a rotated memtable never changes again).
    writer: Mutex<WriterState>,
    /// Highest seqno whose batch is completely in the memtable.
    visible_seq: AtomicU64,
    /// Serializes version edits and manifest writes; holds the next file number.
    manifest: tokio::sync::Mutex<u64>,
    /// One compaction at a time; holds the per-level round-robin pointers.
    compaction: tokio::sync::Mutex<Vec<Vec<u8>>>,
    snapshots: Arc<Mutex<BTreeMap<u64, usize>>>,
    cache: Arc<BlockCache>,
    flush_wake: Notify,
    compact_wake: Notify,
    /// Woken after every flush and compaction (stalled writers, `flush` callers).
    progress: Notify,
    closed: AtomicBool,
    failed: Mutex<Option<String>>,
}

/// An LSM tree in one directory. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Lsm {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Lsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lsm")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Lsm {
    /// Opens (or creates) the tree in `dir`: reads the manifest, opens every live table, removes
    /// files no manifest names (outputs of a flush or compaction cut short by a crash) and
    /// starts the background flush and compaction tasks. Must run inside a tokio runtime.
    pub async fn open(fs: SharedFs, dir: impl AsRef<Path>, opts: LsmOptions) -> Result<Lsm> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).await?;
        let manifest_path = dir.join(MANIFEST_NAME);
        let levels_max = opts.levels_max.clamp(2, format::LEVELS_MAX);
        let mut m = if fs.exists(&manifest_path).await? {
            let bytes = io::read_file(&*fs, &manifest_path).await?;
            format::decode_manifest(&bytes)
                .map_err(|e| Error::corruption(&manifest_path, 0, e.to_string()))?
        } else {
            ManifestData {
                next_file_number: 1,
                ..ManifestData::default()
            }
        };
        while m.levels.len() < levels_max {
            m.levels.push(Vec::new());
        }
        let live: std::collections::HashSet<u64> =
            m.levels.iter().flatten().map(|f| f.number).collect();
        let mut next_file_number = m.next_file_number.max(1);
        for name in fs.list_dir(&dir).await? {
            let path = dir.join(&name);
            if name.ends_with(".tmp") {
                fs.remove_file(&path).await?;
            } else if let Some(n) = name
                .strip_suffix(".sst")
                .and_then(|s| s.parse::<u64>().ok())
            {
                next_file_number = next_file_number.max(n + 1);
                if !live.contains(&n) {
                    tracing::info!(path = %path.display(), "removing an SSTable no manifest names");
                    fs.remove_file(&path).await?;
                }
            }
        }
        let mut levels = Vec::with_capacity(m.levels.len());
        for files in &m.levels {
            let opened = futures::future::try_join_all(
                files
                    .iter()
                    .map(|f| Table::open(&*fs, &dir, f.number, f.size)),
            )
            .await?;
            levels.push(opened.into_iter().map(Arc::new).collect::<Vec<_>>());
        }
        let version = Version {
            levels,
            durable_log_position: m.durable_log_position,
            last_seqno: m.last_seqno,
        };
        if !fs.exists(&manifest_path).await? {
            io::write_file_atomic(
                &*fs,
                &manifest_path,
                format::encode_manifest(&version.to_manifest(next_file_number)),
            )
            .await?;
        }
        let level_count = version.levels.len();
        let inner = Arc::new(Inner {
            cache: Arc::new(BlockCache::new(opts.block_cache_bytes)),
            fs,
            dir,
            state: RwLock::new(Arc::new(SuperVersion {
                active: Arc::new(Memtable::new(1)),
                immutables: Vec::new(),
                version: Arc::new(version),
            })),
            writer: Mutex::new(WriterState {
                last_seqno: m.last_seqno,
                next_memtable_id: 2,
            }),
            visible_seq: AtomicU64::new(m.last_seqno),
            manifest: tokio::sync::Mutex::new(next_file_number),
            compaction: tokio::sync::Mutex::new(vec![Vec::new(); level_count]),
            snapshots: Arc::new(Mutex::new(BTreeMap::new())),
            flush_wake: Notify::new(),
            compact_wake: Notify::new(),
            progress: Notify::new(),
            closed: AtomicBool::new(false),
            failed: Mutex::new(None),
            opts,
        });
        let mut tasks = vec![tokio::spawn(flush_loop(inner.clone()))];
        if inner.opts.background_compaction {
            tasks.push(tokio::spawn(compaction_loop(inner.clone())));
            inner.compact_wake.notify_one();
        }
        Ok(Lsm {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// Applies one committed transaction: every entry becomes visible at `seqno`, all at once.
    /// `log_position` is the commit-log position just past this transaction, so that once it is
    /// flushed, replay can start there. `seqno` must be above every seqno applied before (and
    /// at most 2^56 - 1): the caller applies transactions one at a time, in commit order (the
    /// ingest layer's apply task). Waits, without failing, while too many memtables or level-0
    /// tables wait for background work.
    pub async fn apply(&self, batch: WriteBatch, seqno: u64, log_position: u64) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        if seqno > SEQNO_MAX {
            return Err(Error::InvalidArgument(format!(
                "sequence number {seqno} is above 2^56 - 1"
            )));
        }
        for (k, v) in &batch.entries {
            if k.len() > KEY_BYTES_MAX {
                return Err(Error::InvalidArgument(format!(
                    "key of {} bytes is over {KEY_BYTES_MAX}",
                    k.len()
                )));
            }
            if v.as_ref().is_some_and(|v| v.len() > VALUE_BYTES_MAX) {
                return Err(Error::InvalidArgument(format!(
                    "value over {VALUE_BYTES_MAX} bytes"
                )));
            }
        }
        inner.wait_for_room().await?;
        let full = {
            let mut w = inner.writer.lock();
            if seqno <= w.last_seqno {
                return Err(Error::InvalidArgument(format!(
                    "sequence number {seqno} is not above the last applied {}",
                    w.last_seqno
                )));
            }
            let active = inner.state.read().active.clone();
            for (k, v) in batch.entries {
                active.insert(k, seqno, v);
            }
            active.note_batch(seqno, log_position);
            w.last_seqno = seqno;
            inner.visible_seq.store(seqno, Ordering::Release);
            active.approximate_bytes() >= inner.opts.memtable_bytes_max
        };
        if full {
            inner.rotate(false);
        }
        Ok(())
    }

    /// The value of `key` as of `read_seq` (clamped to the latest applied seqno). Reads at an
    /// older seqno are only guaranteed while a [`Snapshot`] at or below it is alive.
    pub async fn get(&self, key: &[u8], read_seq: u64) -> Result<Option<Bytes>> {
        let inner = &self.inner;
        let read_seq = read_seq.min(inner.visible_seq.load(Ordering::Acquire));
        let sv = inner.current();
        if let Some(v) = sv.active.get(key, read_seq) {
            return Ok(v);
        }
        for m in &sv.immutables {
            if let Some(v) = m.get(key, read_seq) {
                return Ok(v);
            }
        }
        let hash = format::bloom_hash(key);
        let mut target = Vec::with_capacity(key.len() + 8);
        format::push_internal_key(&mut target, key, read_seq, Kind::Put);
        // One buffer for the keys the block iterators decode, reused across every table.
        let mut scratch = Vec::with_capacity(key.len() + 32);
        let levels = &sv.version.levels;
        for (i, level) in levels.iter().enumerate() {
            let candidates: &[Arc<Table>] = if i == 0 {
                level
            } else {
                let at = level.partition_point(|t| t.meta.largest.as_ref() < key);
                level.get(at..at + 1).unwrap_or(&[])
            };
            for t in candidates {
                if let Some((kind, v)) = t
                    .get(&target, key, hash, read_seq, &inner.cache, &mut scratch)
                    .await?
                {
                    return Ok((kind == Kind::Put).then_some(v));
                }
            }
        }
        Ok(None)
    }

    /// Keys and values in `range` as of `read_seq` (clamped like [`Lsm::get`]), in key order.
    pub fn scan<R: RangeBounds<Vec<u8>>>(&self, range: R, read_seq: u64) -> Result<Scan> {
        let inner = &self.inner;
        let read_seq = read_seq.min(inner.visible_seq.load(Ordering::Acquire));
        let sv = inner.current();
        let own = |b: Bound<&Vec<u8>>| match b {
            Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
            Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (start, end) = (own(range.start_bound()), own(range.end_bound()));
        let mut sources = Vec::with_capacity(2 + sv.immutables.len() + sv.version.levels.len() + 4);
        let scan_cache = cache::ScanCache::new(inner.cache.clone());
        sources.push(Source::Mem(MemIter::new(sv.active.clone(), end.clone())));
        for m in &sv.immutables {
            sources.push(Source::Mem(MemIter::new(m.clone(), end.clone())));
        }
        for (i, level) in sv.version.levels.iter().enumerate() {
            // Only tables that can hold keys of the range take part.
            let in_range: Vec<Arc<Table>> = level
                .iter()
                .filter(|t| overlaps_range(t, &start, &end))
                .cloned()
                .collect();
            if in_range.is_empty() {
                continue;
            }
            if i == 0 {
                sources.extend(
                    in_range
                        .into_iter()
                        .map(|t| Source::Table(TableIter::new(t, Some(scan_cache.clone())))),
                );
            } else {
                sources.push(Source::Level(LevelIter::new(
                    in_range,
                    Some(scan_cache.clone()),
                )));
            }
        }
        Ok(Scan::new(sources, read_seq, start, end))
    }

    /// Up to `parts - 1` keys cutting `range` into parts of about equal size for parallel
    /// scans (`split`), or none when the range holds less than `bytes_min` bytes (as far
    /// as the tables' indexes and the memtables' sizes tell; nothing is read from disk).
    /// The keys increase strictly and lie inside the range.
    pub fn split_keys<R: RangeBounds<Vec<u8>>>(
        &self,
        range: R,
        parts: usize,
        bytes_min: u64,
    ) -> Vec<Bytes> {
        let sv = self.inner.current();
        let own = |b: Bound<&Vec<u8>>| match b {
            Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
            Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (start, end) = (own(range.start_bound()), own(range.end_bound()));
        let mut samples = Vec::new();
        split::memtable_samples(&sv.active, &start, &end, &mut samples);
        for m in &sv.immutables {
            split::memtable_samples(m, &start, &end, &mut samples);
        }
        for level in &sv.version.levels {
            for t in level.iter().filter(|t| overlaps_range(t, &start, &end)) {
                split::table_samples(t, &start, &end, &mut samples);
            }
        }
        split::split_keys(samples, parts, bytes_min, &start, &end)
    }

    /// Registers the latest applied seqno as a snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut r = self.inner.snapshots.lock();
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        *r.entry(seq).or_insert(0) += 1;
        Snapshot {
            seq,
            registry: self.inner.snapshots.clone(),
        }
    }

    /// Registers `seq` (clamped to the latest applied seqno) as a snapshot. Unlike
    /// [`Lsm::snapshot`] the caller picks the seqno: a layer above that publishes commits later
    /// than it applies them pins the seqno its readers were given. The caller must know that the
    /// versions visible at `seq` are still there, e.g. because it holds an older snapshot while
    /// it registers this one (compaction keeps every version above the oldest snapshot).
    pub fn snapshot_at(&self, seq: u64) -> Snapshot {
        let mut r = self.inner.snapshots.lock();
        let seq = seq.min(self.inner.visible_seq.load(Ordering::Acquire));
        *r.entry(seq).or_insert(0) += 1;
        Snapshot {
            seq,
            registry: self.inner.snapshots.clone(),
        }
    }

    /// The highest seqno applied (every batch up to it is visible).
    pub fn visible_seq(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// The commit-log position to replay from after a restart: every batch before it is in an
    /// SSTable named by a durable manifest.
    pub fn durable_log_position(&self) -> u64 {
        self.inner.current().version.durable_log_position
    }

    /// Writes every applied batch to SSTables and waits until the manifest records them.
    pub async fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        let target = inner.rotate(true);
        inner.flush_wake.notify_one();
        let Some(target) = target else { return Ok(()) };
        loop {
            let notified = inner.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            inner.check_writable()?;
            if inner.current().immutables.iter().all(|m| m.id > target) {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Runs compactions until no level is over its budget (what the background task does).
    pub async fn compact(&self) -> Result<()> {
        while self.inner.compact_once(false).await? {}
        Ok(())
    }

    /// Merges every table into the deepest used level: shadowed versions no snapshot needs and
    /// all tombstones at or below the oldest snapshot are dropped.
    pub async fn compact_full(&self) -> Result<()> {
        self.inner.compact_once(true).await.map(|_| ())
    }

    /// Tables and bytes per level.
    pub fn levels(&self) -> Vec<LevelInfo> {
        self.inner
            .current()
            .version
            .levels
            .iter()
            .map(|l| LevelInfo {
                tables: l.len(),
                bytes: l.iter().map(|t| t.size).sum(),
                entries: l.iter().map(|t| t.meta.entry_count).sum(),
            })
            .collect()
    }

    /// Bytes the tree holds: its live SSTables' files, plus what its memtables hold (rows
    /// that are on disk only in the write-ahead log until the next flush).
    pub fn size_bytes(&self) -> u64 {
        let sv = self.inner.current();
        let tables: u64 = sv.version.levels.iter().flatten().map(|t| t.size).sum();
        let memtables: usize = std::iter::once(&sv.active)
            .chain(sv.immutables.iter())
            .map(|m| m.approximate_bytes())
            .sum();
        tables + memtables as u64
    }

    /// Paths of every live SSTable.
    pub fn table_paths(&self) -> Vec<PathBuf> {
        self.inner
            .current()
            .version
            .levels
            .iter()
            .flatten()
            .map(|t| t.path().to_path_buf())
            .collect()
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Flushes, stops the background tasks and waits for them.
    pub async fn close(self) -> Result<()> {
        let res = if self.inner.failed.lock().is_none() {
            self.flush().await
        } else {
            Ok(())
        };
        self.stop_tasks().await;
        res
    }

    /// Stops the background tasks without flushing: what is only in memtables is dropped, as a
    /// crash would drop it (the caller replays it from the commit log). A flush or compaction
    /// already running finishes first, so that no task touches the directory after this
    /// returns. Used after a failed commit-log write and by crash tests.
    pub async fn abort(self) {
        self.stop_tasks().await;
    }

    async fn stop_tasks(&self) {
        self.inner.shut_down();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Dropping without [`Lsm::close`] is like [`Lsm::abort`] except that it does not wait: the
/// background tasks stop after their current step and unflushed memtables are dropped.
impl Drop for Lsm {
    fn drop(&mut self) {
        self.inner.shut_down();
    }
}

fn overlaps_range(t: &Table, start: &Bound<Bytes>, end: &Bound<Bytes>) -> bool {
    let below_start = match start {
        Bound::Included(s) => t.meta.largest < *s,
        Bound::Excluded(s) => t.meta.largest <= *s,
        Bound::Unbounded => false,
    };
    let above_end = match end {
        Bound::Included(e) => t.meta.smallest > *e,
        Bound::Excluded(e) => t.meta.smallest >= *e,
        Bound::Unbounded => false,
    };
    !below_start && !above_end
}

impl Inner {
    fn current(&self) -> Arc<SuperVersion> {
        self.state.read().clone()
    }

    fn shut_down(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wake.notify_one();
        self.compact_wake.notify_one();
        self.progress.notify_waiters();
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(cause) = self.failed.lock().clone() {
            return Err(Error::LsmFailed {
                path: self.dir.clone(),
                cause,
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn fail(&self, e: &Error) {
        tracing::error!(dir = %self.dir.display(), error = %e, "LSM flush failed; refusing writes until reopened");
        self.failed.lock().get_or_insert_with(|| e.to_string());
        self.progress.notify_waiters();
    }

    /// Waits while memtables or level-0 tables pile up faster than background work drains them.
    async fn wait_for_room(&self) -> Result<()> {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.check_writable()?;
            let sv = self.current();
            let l0 = sv.version.levels.first().map_or(0, |l| l.len());
            let l0_full = self.opts.background_compaction && l0 >= self.opts.l0_stall_files;
            if sv.immutables.len() < self.opts.immutable_memtables_max.max(1) && !l0_full {
                return Ok(());
            }
            if l0_full {
                self.compact_wake.notify_one();
            }
            notified.await;
        }
    }

    /// Freezes the active memtable and queues it for flush. With `force`, also an empty one
    /// that carries a newer log position. Returns the id of the newest memtable that must be
    /// flushed for everything applied so far to be durable (`None` when nothing is pending).
    fn rotate(&self, force: bool) -> Option<u64> {
        let mut w = self.writer.lock();
        let mut st = self.state.write();
        let active = &st.active;
        let pending_log = active.max_log_position() > st.version.durable_log_position;
        let rotate = !active.is_empty() || (force && pending_log);
        if !rotate {
            // Nothing new; a forced flush still waits for memtables already queued.
            return if force {
                st.immutables.first().map(|m| m.id)
            } else {
                None
            };
        }
        let id = w.next_memtable_id;
        w.next_memtable_id += 1;
        let mut next = (**st).clone();
        let frozen = std::mem::replace(&mut next.active, Arc::new(Memtable::new(id)));
        let frozen_id = frozen.id;
        next.immutables.insert(0, frozen);
        *st = Arc::new(next);
        drop(st);
        drop(w);
        self.flush_wake.notify_one();
        Some(frozen_id)
    }

    async fn write_manifest(&self, v: &Version, next_file_number: u64) -> Result<()> {
        let bytes = format::encode_manifest(&v.to_manifest(next_file_number));
        io::write_file_atomic(&*self.fs, &self.dir.join(MANIFEST_NAME), bytes).await
    }

    async fn alloc_file_number(&self) -> u64 {
        let mut m = self.manifest.lock().await;
        let n = *m;
        *m += 1;
        n
    }

    /// Flushes frozen memtables, oldest first, until none is left.
    async fn flush_immutables(&self) -> Result<()> {
        loop {
            let Some(mem) = self.current().immutables.last().cloned() else {
                return Ok(());
            };
            let table = if mem.is_empty() {
                None
            } else {
                let number = self.alloc_file_number().await;
                Some(Arc::new(self.write_memtable(&mem, number).await?))
            };
            let next_number = self.manifest.lock().await;
            let sv = self.current();
            let mut v = (*sv.version).clone();
            if let (Some(t), Some(l0)) = (table, v.levels.first_mut()) {
                l0.insert(0, t);
            }
            v.durable_log_position = v.durable_log_position.max(mem.max_log_position());
            v.last_seqno = v.last_seqno.max(mem.max_seqno());
            self.write_manifest(&v, *next_number).await?;
            {
                let mut st = self.state.write();
                let mut next = (**st).clone();
                next.version = Arc::new(v);
                next.immutables.retain(|m| m.id != mem.id);
                *st = Arc::new(next);
            }
            drop(next_number);
            self.progress.notify_waiters();
            self.compact_wake.notify_one();
        }
    }

    async fn write_memtable(&self, mem: &Arc<Memtable>, number: u64) -> Result<Table> {
        let mut w = TableWriter::create(
            &*self.fs,
            &self.dir,
            number,
            self.opts.block_bytes,
            self.opts.bloom_bits_per_key,
        )
        .await?;
        let res: Result<u64> = async {
            let mut it = iter::MergeIter::new(vec![Source::Mem(MemIter::new(
                mem.clone(),
                Bound::Unbounded,
            ))]);
            it.seek(None).await?;
            let mut ikey = Vec::new();
            let mut no_limit = None;
            let mut written = 0u64;
            while let Some((cur, value)) = it.current() {
                ikey.clear();
                format::push_internal_key(&mut ikey, cur.user, cur.seqno, cur.kind);
                w.add(&ikey, value, &mut no_limit).await?;
                it.next().await?;
                written += 1;
                if written & (compaction::YIELD_EVERY_ENTRIES - 1) == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let (size, _) = w.finish(&mut no_limit).await?;
            Ok(size)
        }
        .await;
        match res {
            Ok(size) => Table::open(&*self.fs, &self.dir, number, size).await,
            Err(e) => {
                let _ = self
                    .fs
                    .remove_file(&table::table_path(&self.dir, number))
                    .await;
                Err(e)
            }
        }
    }

    /// The oldest seqno any reader may still ask for.
    fn watermark(&self) -> u64 {
        let r = self.snapshots.lock();
        match r.keys().next() {
            Some(&s) => s,
            None => self.visible_seq.load(Ordering::Acquire),
        }
    }

    /// Runs one compaction (`full`: everything into the deepest level). Returns whether there
    /// was anything to do.
    async fn compact_once(self: &Arc<Self>, full: bool) -> Result<bool> {
        let mut pointers = self.compaction.lock().await;
        let sv = self.current();
        let shape = Shape {
            l0_compaction_trigger_files: self.opts.l0_compaction_trigger_files,
            level1_bytes_max: self.opts.level1_bytes_max,
            level_size_ratio: self.opts.level_size_ratio,
        };
        let job: Option<Job> = if full {
            compaction::pick_full(&sv.version)
        } else {
            compaction::pick(&sv.version, shape, &mut pointers)
        };
        let Some(job) = job else { return Ok(false) };
        let watermark = self.watermark();
        let started = std::time::Instant::now();
        let me = self.clone();
        let outputs = compaction::run(
            &job,
            Output {
                fs: &*self.fs,
                dir: &self.dir,
                block_bytes: self.opts.block_bytes,
                bloom_bits_per_key: self.opts.bloom_bits_per_key,
                table_bytes_max: self.opts.table_bytes_max,
                bytes_per_sec: self.opts.compaction_bytes_per_sec,
            },
            watermark,
            move || {
                let me = me.clone();
                Box::pin(async move { me.alloc_file_number().await })
            },
        )
        .await?;
        let gone = job.input_numbers();
        let out_bytes: u64 = outputs.iter().map(|t| t.size).sum();
        let out_count = outputs.len();
        {
            let next_number = self.manifest.lock().await;
            let mut v = (*self.current().version).clone();
            v.apply_compaction(&gone, job.output_level, outputs);
            if let Err(e) = self.write_manifest(&v, *next_number).await {
                self.fail(&e);
                return Err(e);
            }
            let mut st = self.state.write();
            let mut next = (**st).clone();
            next.version = Arc::new(v);
            *st = Arc::new(next);
        }
        for n in &gone {
            if let Err(e) = self.fs.remove_file(&table::table_path(&self.dir, *n)).await {
                tracing::warn!(error = %e, "could not remove a compacted SSTable; the next open removes it");
            }
        }
        tracing::debug!(
            inputs = gone.len(),
            input_bytes = job.input_bytes(),
            outputs = out_count,
            output_bytes = out_bytes,
            output_level = job.output_level,
            ms = started.elapsed().as_millis() as u64,
            "compaction done"
        );
        drop(pointers);
        self.progress.notify_waiters();
        Ok(true)
    }
}

async fn flush_loop(inner: Arc<Inner>) {
    loop {
        // `close` has already flushed; after `abort` nothing more may reach the disk.
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.flush_immutables().await {
            inner.fail(&e);
            return;
        }
        inner.flush_wake.notified().await;
    }
}

async fn compaction_loop(inner: Arc<Inner>) {
    loop {
        inner.compact_wake.notified().await;
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            match inner.compact_once(false).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    // The inputs are untouched; wait for the next flush to try again.
                    tracing::error!(dir = %inner.dir.display(), error = %e, "compaction failed");
                    break;
                }
            }
        }
    }
}
