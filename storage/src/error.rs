//! The storage error type. Each variant says whose fault it is: bad input from the caller
//! (`InvalidArgument`, `OffsetOutOfRange`, producer sequence errors), a resource limit
//! (`DiskFull`), the environment (`Io`), damaged data on disk (`Corruption`), or a store that
//! has stopped accepting writes after a failed `fdatasync` (`PartitionFailed`).

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed; `op` names the call and `path` the file it was made on.
    #[error("could not {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file system has no space left (ENOSPC / EDQUOT).
    #[error("disk full while trying to {op} {path}")]
    DiskFull { op: &'static str, path: PathBuf },

    /// Bytes on disk do not decode, or a checksum does not match inside a complete record.
    #[error("corruption in {path} at byte {position}: {reason}")]
    Corruption {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    /// The caller passed something the log cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A read asked for an offset the partition does not hold (deleted by retention, or not
    /// yet written).
    #[error("offset {requested} is out of range: the partition holds offsets {log_start} to {log_end} (exclusive)")]
    OffsetOutOfRange {
        requested: u64,
        log_start: u64,
        log_end: u64,
    },

    /// An idempotent producer skipped a sequence number.
    #[error("producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: u64,
        expected: u64,
        got: u64,
    },

    /// An idempotent producer retried a batch that is too old to be recognised.
    #[error("producer {producer_id} retried sequence {got}, older than the {kept} batches remembered (last is {last})")]
    DuplicateSequenceTooOld {
        producer_id: u64,
        got: u64,
        last: u64,
        kept: usize,
    },

    /// A write or `fdatasync` failed; the partition refuses writes until it has been reopened
    /// from what is on disk. `cause` is the original failure.
    #[error("partition {path} is not accepting writes after a failed write: {cause}")]
    PartitionFailed { path: PathBuf, cause: String },

    /// An LSM tree stopped accepting writes after a background flush or manifest write failed;
    /// it must be reopened from disk (the caller then replays its log from the durable
    /// position). `cause` is the original failure.
    #[error("LSM tree {path} is not accepting writes after a failed flush: {cause}")]
    LsmFailed { path: PathBuf, cause: String },

    /// The partition or topic was closed.
    #[error("the log is closed")]
    Closed,
}

impl Error {
    /// Wraps an `std::io::Error`, turning ENOSPC/EDQUOT into [`Error::DiskFull`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::DiskFull { op, path },
            _ => Error::Io { op, path, source },
        }
    }

    pub fn corruption(path: impl Into<PathBuf>, position: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }

    /// True for errors that come from damaged bytes on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}
