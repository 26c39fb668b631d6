//! The ingest error type. Each variant says whose fault it is, which decides the SQLSTATE the
//! server edge sends: a concurrent transaction (`SerializationFailure` → 40001, `Deadlock` →
//! 40P01), the user's data
//! (`UniqueViolation` → 23505, `KeyTooLarge`/`ValueTooLarge`/`TransactionTooLarge` → 54000), the
//! user's query (`TableNotFound` → 42P01, `TableExists` → 42P07), damaged bytes on disk
//! (`CorruptCommitLog`, `CorruptTableMeta`, `CorruptKey` → XX001), a store that stopped after a
//! failed write (`StoreFailed` → 58030), or the storage layer below (`Storage`).

use std::path::PathBuf;

use bytes::Bytes;

use crate::rows::TableId;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another transaction committed a write to a key this transaction also wrote, after this
    /// transaction's snapshot was taken (first committer wins). Retrying the whole transaction
    /// is safe.
    #[error(
        "could not serialize access due to concurrent update (table {table}, key {})",
        show_key(key)
    )]
    SerializationFailure { table: TableId, key: Bytes },

    /// Waiting for a row lock would close a cycle of transactions waiting for each other;
    /// this transaction is the one that gives up. Retrying the whole transaction is safe.
    #[error(
        "deadlock detected (waiting for a row of table {table}, key {})",
        show_key(key)
    )]
    Deadlock { table: TableId, key: Bytes },

    /// An insert found the key already present in the transaction's view.
    #[error(
        "duplicate key value violates unique constraint (table {table}, key {})",
        show_key(key)
    )]
    UniqueViolation { table: TableId, key: Bytes },

    #[error("table {0} does not exist")]
    TableNotFound(TableId),

    #[error("table {0} already exists")]
    TableExists(TableId),

    #[error("key of {bytes} bytes is over the limit of {max} bytes")]
    KeyTooLarge { bytes: usize, max: usize },

    #[error("value of {bytes} bytes is over the limit of {max} bytes")]
    ValueTooLarge { bytes: usize, max: usize },

    /// The encoded commit record would not fit in one commit-log batch.
    #[error("transaction of {bytes} bytes is over the limit of {max} bytes per commit")]
    TransactionTooLarge { bytes: usize, max: usize },

    /// A commit record in the commit log does not decode.
    #[error("commit log record at offset {offset} is corrupt: {reason}")]
    CorruptCommitLog { offset: u64, reason: String },

    /// A table's metadata file does not decode.
    #[error("table metadata {path} is corrupt: {reason}")]
    CorruptTableMeta { path: PathBuf, reason: String },

    /// An encoded key tuple does not decode.
    #[error("key bytes do not decode at byte {at}: {reason}")]
    CorruptKey { at: usize, reason: &'static str },

    /// A commit-log append or an apply to a table failed; the store refuses commits until it
    /// is reopened from disk. `cause` is the original failure. A commit that gets this error
    /// may or may not be durable (like a connection lost during COMMIT in PostgreSQL).
    #[error("the row store is not accepting commits after a failed write: {cause}")]
    StoreFailed { cause: String },

    /// The store was closed.
    #[error("the row store is closed")]
    Closed,

    #[error(transparent)]
    Storage(#[from] braid_storage::Error),
}

impl Error {
    /// True for the errors a client should answer by retrying the transaction (SQLSTATE 40001).
    pub fn is_serialization_failure(&self) -> bool {
        matches!(self, Error::SerializationFailure { .. })
    }
}

/// A key for an error message: printable ASCII as is, anything else as hex, cut at 64 bytes.
fn show_key(key: &[u8]) -> String {
    let cut = &key[..key.len().min(64)];
    let mut s = if cut.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(cut).into_owned()
    } else {
        let mut h = String::from("\\x");
        for b in cut {
            h.push_str(&format!("{b:02x}"));
        }
        h
    };
    if key.len() > 64 {
        s.push('…');
    }
    s
}
