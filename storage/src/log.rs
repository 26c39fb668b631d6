//! LogCore: the durable, checksummed, partitioned log that is braid's source of truth.
//!
//! A [`Topic`] has N partitions; each [`Partition`] is a directory of segments named by their
//! base offset (`00000000000000000000.log`) with a sparse offset index (`.idx`), a time index
//! (`.timeindex`) and, at each roll, a producer-state snapshot (`.snapshot`). Exactly one segment
//! per partition is active; the others are sealed and immutable.
//!
//! What must stay true:
//! - An append returns its offsets only after its bytes are durable under the partition's
//!   [`Durability`]; readers never see a record before that point.
//! - Offsets are per partition, dense as written, never reused (compaction leaves gaps, never
//!   renumbers).
//! - After a failed write or `fdatasync` nothing of the failed batch is acknowledged; the
//!   partition truncates back to its last durable length and reopens from disk before it takes
//!   another write.
//! - Recovery truncates a torn tail, and reports a checksum mismatch inside a complete batch as
//!   [`Error::Corruption`](crate::Error::Corruption) naming file and position.
//!
//! The byte layout of every file lives in [`format`]; see `storage/LOG-FORMAT.md` for the
//! assumptions about the disk.

pub mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod maintenance;
mod partition;
mod producer;
mod segment;
mod topic;
mod writer_threads;

use std::time::Duration;

pub use format::{BatchBuilder, EncodedBatch, Header, LogRecord, Record};
pub use partition::{Follower, Partition};
pub use topic::{remove_topic, Topic};

use crate::error::{Error, Result};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` before every acknowledgement. Appends that queue up while a sync is running
    /// share the next write and sync (group commit without waiting).
    Sync,
    /// Like `Sync`, but the writer waits up to `max_wait_us` for more appends before it writes,
    /// trading latency for fewer syncs.
    Group { max_wait_us: u64 },
    /// No `fdatasync` at all: acknowledged once in the page cache. UNSAFE: a power loss or
    /// kernel crash loses acknowledged records. A process crash does not.
    None,
}

/// What happens to old sealed segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Whole sealed segments are deleted by age and size.
    Delete,
    /// Sealed segments are rewritten to keep only the last record per key; tombstones (null
    /// value) are dropped once older than `tombstone_retention`.
    Compact,
}

/// Per-topic settings. Every bound carries its unit in its name.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    pub partitions: u32,
    pub durability: Durability,
    /// The active segment rolls when the next write would take it past this size.
    pub segment_bytes_max: u64,
    /// The active segment rolls when its first batch is older than this.
    pub segment_age_max: Option<Duration>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// Delete the oldest sealed segments while a partition is larger than this.
    pub retention_bytes: Option<u64>,
    pub cleanup: Cleanup,
    /// How long a tombstone survives compaction (measured from its timestamp).
    pub tombstone_retention: Duration,
    /// One offset- and time-index entry per this many log bytes.
    pub index_interval_bytes: u32,
    /// Largest accepted encoded batch.
    pub batch_bytes_max: u32,
    /// Most bytes one group commit writes at once.
    pub group_bytes_max: usize,
    /// Appends waiting for a partition's writer before `append` waits for room.
    pub queue_depth_max: usize,
    /// How often the background task applies retention and compaction; `None` = only when
    /// asked through [`Topic::run_maintenance`].
    pub maintenance_interval: Option<Duration>,
    /// Write small commits to the active segment with `O_DIRECT` where the file system allows
    /// it (see `DirectWriter` in `log/partition.rs`): on the io_uring backend the descriptor
    /// is also `O_DSYNC`, so a commit is one ring operation instead of a write and an
    /// `fdatasync` (single-appender p50 150 µs against 230 µs here). Batches of 256 KiB and
    /// more, reads, and file systems that refuse `O_DIRECT` stay on the page cache. Ignored
    /// with [`Durability::None`].
    pub direct_io: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            durability: Durability::Sync,
            segment_bytes_max: 128 << 20,
            segment_age_max: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_age: None,
            retention_bytes: None,
            cleanup: Cleanup::Delete,
            tombstone_retention: Duration::from_secs(24 * 3600),
            index_interval_bytes: 4096,
            batch_bytes_max: 64 << 20,
            group_bytes_max: 16 << 20,
            queue_depth_max: 4096,
            maintenance_interval: Some(Duration::from_secs(60)),
            direct_io: true,
        }
    }
}

/// Upper bound for `segment_bytes_max`: index positions are 32-bit.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;

impl TopicConfig {
    /// Checks every setting and says which one is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.partitions == 0 || self.partitions > 4096 {
            return bad(format!(
                "partitions must be between 1 and 4096, got {}",
                self.partitions
            ));
        }
        if self.segment_bytes_max < 4096 || self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return bad(format!(
                "segment_bytes_max must be between 4096 and {SEGMENT_BYTES_LIMIT}, got {}",
                self.segment_bytes_max
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if u64::from(self.batch_bytes_max) > SEGMENT_BYTES_LIMIT
            || (self.batch_bytes_max as usize) < format::BATCH_HEADER_LEN
        {
            return bad(format!(
                "batch_bytes_max out of range: {}",
                self.batch_bytes_max
            ));
        }
        if self.group_bytes_max == 0 || self.queue_depth_max == 0 {
            return bad("group_bytes_max and queue_depth_max must be positive".into());
        }
        if let Durability::Group { max_wait_us } = self.durability {
            if max_wait_us > 1_000_000 {
                return bad(format!(
                    "group commit wait must be at most 1 s, got {max_wait_us} us"
                ));
            }
        }
        Ok(())
    }
}

/// Offsets assigned to one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
    /// True when an idempotent producer's retry was recognised and nothing was written.
    pub duplicate: bool,
}

/// What one read returns.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub records: Vec<LogRecord>,
    /// The offset to read next.
    pub next_offset: u64,
}

/// An idempotent producer's identity and per-partition batch sequence (0, 1, 2, … per
/// partition). A retried append with a sequence already written returns the first offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSeq {
    /// Non-zero producer id.
    pub producer_id: u64,
    pub sequence: u64,
}

/// Wall clock in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
