//! Row tables (`CREATE TABLE`): rows stored in the database's transactional
//! [`braid_ingest::rows::RowStore`], keyed by the primary key (or a hidden row id).
//!
//! - [`key`]: the key columns, the key bytes of a row, and the key ranges filters leave.
//! - [`table`]: the DataFusion `TableProvider` (INSERT, UPDATE, DELETE and scans).
//! - [`scan`]: the execution plan that reads a snapshot in key order (point gets, ranges).
//! - [`write`]: checking and encoding rows, and the INSERT sink and UPDATE/DELETE plan.
//! - [`txn`]: the session's transaction block.
//!
//! A row is stored as the [`crate::rowcodec`] encoding of every column (key columns too, so
//! a scan never decodes keys); the key is the [`braid_ingest::key`] encoding of the key
//! columns. Row store table ids are catalog table ids, which are never reused.
//!
//! What must stay true: a statement outside a block commits in one RowStore transaction
//! and reports success only after that commit is durable; a failed statement commits
//! nothing.

pub mod key;
pub mod scan;
pub mod table;
pub mod txn;
pub mod write;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

use braid_ingest::key::{decode_key, KeyValue};
use braid_ingest::rows::{RowStore, RowStoreOptions, TableId, Transaction};
use braid_ingest::storage::io::SharedFs;
use braid_ingest::storage::log::Durability;
use bytes::Bytes;

use crate::error::{Error, Result, StorageErrorKind};
use key::KeyAccess;

/// The row tables of one database.
#[derive(Debug)]
pub struct RowsDb {
    pub store: RowStore,
    /// Next hidden row id per table without a primary key, found on first use (from the
    /// largest key stored) and then handed out from memory. Ids of rolled-back rows are
    /// skipped, as a sequence's are.
    next_rowid: tokio::sync::Mutex<HashMap<TableId, i64>>,
}

impl RowsDb {
    /// Opens (recovering) the row store of `db` under `data_dir`.
    pub async fn open(
        fs: SharedFs,
        data_dir: &Path,
        db: &str,
        durability: Durability,
    ) -> Result<RowsDb> {
        let opts = RowStoreOptions {
            durability,
            ..RowStoreOptions::default()
        };
        let store = RowStore::open(fs, data_dir, db, opts)
            .await
            .map_err(rows_error)?;
        Ok(RowsDb {
            store,
            next_rowid: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Reserves `n` hidden row ids of `table`; returns the first.
    pub async fn allocate_rowids(&self, table: TableId, n: u64) -> Result<i64> {
        let mut next = self.next_rowid.lock().await;
        let first = match next.get(&table) {
            Some(v) => *v,
            None => self.largest_rowid(table).await?.saturating_add(1),
        };
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        next.insert(table, first.saturating_add(n));
        Ok(first)
    }

    /// Forgets a dropped table's row id counter.
    pub async fn forget(&self, table: TableId) {
        self.next_rowid.lock().await.remove(&table);
    }

    /// The largest row id stored in `table` (0 when empty). Reads every key once: a table
    /// without a primary key pays this on its first insert after a start.
    async fn largest_rowid(&self, table: TableId) -> Result<i64> {
        let txn = self.store.begin();
        let mut scan = txn
            .scan(table, Bound::Unbounded, Bound::Unbounded)
            .map_err(rows_error)?;
        let mut last: Option<Bytes> = None;
        while let Some((k, _)) = scan.next().await.map_err(rows_error)? {
            last = Some(k);
        }
        let Some(k) = last else { return Ok(0) };
        match decode_key(&k).map_err(rows_error)?.as_slice() {
            [KeyValue::Int64(id)] => Ok(*id),
            _ => Err(Error::Storage {
                kind: StorageErrorKind::Corruption,
                message: format!("row table {table} holds a key that is not a row id"),
            }),
        }
    }
}

/// Converts a row store error, keeping whose fault it is.
pub fn rows_error(e: braid_ingest::Error) -> Error {
    use braid_ingest::Error as E;
    match e {
        E::SerializationFailure { .. } => Error::SerializationFailure,
        E::UniqueViolation { table, .. } => Error::UniqueViolation {
            message: format!("duplicate key value violates unique constraint (table {table})"),
            detail: None,
        },
        E::TableNotFound(id) => Error::UndefinedTable(format!("table id {id}")),
        E::TableExists(id) => Error::DuplicateTable(format!("table id {id}")),
        E::KeyTooLarge { .. } | E::ValueTooLarge { .. } | E::TransactionTooLarge { .. } => {
            Error::ProgramLimit(e.to_string())
        }
        E::CorruptCommitLog { .. } | E::CorruptTableMeta { .. } | E::CorruptKey { .. } => {
            Error::Storage {
                kind: StorageErrorKind::Corruption,
                message: e.to_string(),
            }
        }
        E::StoreFailed { .. } | E::Closed => Error::Storage {
            kind: StorageErrorKind::Io,
            message: e.to_string(),
        },
        E::Storage(s) => crate::stream::logcore::storage_error(s),
    }
}

/// Every row of `access` as `txn` sees it, in key order.
pub(crate) async fn read_rows(
    txn: &Transaction,
    table: TableId,
    access: &KeyAccess,
) -> Result<Vec<(Bytes, Bytes)>> {
    let mut out = Vec::new();
    match access {
        KeyAccess::Full => {
            out = txn
                .scan(table, Bound::Unbounded, Bound::Unbounded)
                .map_err(rows_error)?
                .collect()
                .await
                .map_err(rows_error)?;
        }
        KeyAccess::Points(keys) => {
            for k in keys {
                if let Some(v) = txn.get(table, k).await.map_err(rows_error)? {
                    out.push((Bytes::copy_from_slice(k), v));
                }
            }
        }
        KeyAccess::Ranges(ranges) => {
            for (s, e) in ranges {
                let rows = txn
                    .scan(
                        table,
                        s.as_ref().map(|v| v.as_slice()),
                        e.as_ref().map(|v| v.as_slice()),
                    )
                    .map_err(rows_error)?
                    .collect()
                    .await
                    .map_err(rows_error)?;
                out.extend(rows);
            }
        }
    }
    Ok(out)
}
