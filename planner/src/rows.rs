//! Row tables (`CREATE TABLE`): rows stored in the database's transactional
//! [`braid_ingest::rows::RowStore`], keyed by the primary key (or a hidden row id).
//!
//! - [`default`]: column `DEFAULT` expressions (checked at CREATE, planned at INSERT).
//! - [`index`]: secondary indexes (UNIQUE constraints, CREATE INDEX): entries, reads by index.
//! - [`key`]: the key columns, the key bytes of a row, and the key ranges filters leave.
//! - [`point`]: prepared statements that read, update or delete by whole primary keys, run
//!   without re-planning.
//! - [`table`]: the DataFusion `TableProvider` (INSERT, UPDATE, DELETE and scans).
//! - [`scan`]: the execution plan that reads a snapshot in key order (point gets, ranges).
//! - [`write`]: checking and encoding rows, and the INSERT sink and UPDATE/DELETE plan.
//! - [`upsert`]: INSERT with ON CONFLICT or RETURNING, written row by row.
//! - [`returning`]: RETURNING lists, planned once and evaluated over the written rows.
//! - [`txn`]: the session's transaction block.
//!
//! A row is stored as the [`crate::rowcodec`] encoding of every column (key columns too, so
//! a scan never decodes keys); the key is the [`braid_ingest::key`] encoding of the key
//! columns. Row store table ids are catalog table ids, which are never reused.
//!
//! Stored rows outlive ALTER TABLE without being rewritten ([`StoredLayout`]): a column keeps
//! its slot in the stored row for the table's life (a rename changes only the catalog), a
//! dropped column's slot stays (NULL in new rows), an added column takes the next slot, and a
//! row stored before a column was added is shorter and reads the column's `missing` value
//! (its ADD COLUMN default) or NULL. So any row ever stored, by any writer planned before or
//! after a change, decodes with the current layout.
//!
//! What must stay true: a statement outside a block commits in one RowStore transaction
//! and reports success only after that commit is durable; a failed statement commits
//! nothing.

pub mod default;
pub mod index;
pub mod key;
pub(crate) mod point;
pub mod returning;
pub mod scan;
pub mod table;
pub mod txn;
pub mod upsert;
pub mod write;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use braid_ingest::key::{decode_key, KeyValue};
use braid_ingest::rows::{RowStore, RowStoreOptions, TableId, Transaction};
use braid_ingest::storage::io::SharedFs;
use braid_ingest::storage::log::Durability;
use bytes::Bytes;

use crate::catalog::TableDef;
use crate::error::{Error, Result, StorageErrorKind};
use crate::rowcodec::{encode_row_with, RowDecoder};
use crate::types::ColumnType;
use datafusion::arrow::array::ArrayRef;
use key::KeyAccess;

/// Where each column of a row table is in a stored row ([`crate::catalog::TableDef`]'s
/// columns plus dropped columns' slots).
#[derive(Debug, Clone)]
pub struct StoredLayout {
    /// Types of the stored slots (shared with every decoder made from this layout).
    types: Arc<[ColumnType]>,
    /// Per slot: the column stored there (`None`: a dropped column).
    column_of_slot: Vec<Option<usize>>,
    /// Per column: its slot.
    slot_of_column: Vec<usize>,
    /// Per slot: what a row too short to hold it reads.
    missing: Arc<[Option<Vec<u8>>]>,
}

impl StoredLayout {
    pub fn of(def: &TableDef) -> Result<StoredLayout> {
        let slots = def.stored_slots();
        let mut types = Vec::with_capacity(slots.len());
        let mut column_of_slot = Vec::with_capacity(slots.len());
        let mut slot_of_column = vec![0; def.columns.len()];
        let mut missing = Vec::with_capacity(slots.len());
        for (p, s) in slots.into_iter().enumerate() {
            match s {
                Err(ty) => {
                    types.push(ty);
                    column_of_slot.push(None);
                    missing.push(None);
                }
                Ok(c) => {
                    let col = def.columns.get(c).ok_or_else(|| Error::Storage {
                        kind: StorageErrorKind::Corruption,
                        message: format!("table \"{}\" has a bad stored layout", def.name),
                    })?;
                    types.push(col.ty);
                    column_of_slot.push(Some(c));
                    if let Some(slot) = slot_of_column.get_mut(c) {
                        *slot = p;
                    }
                    missing.push(col.missing.as_deref().map(decode_hex).transpose().map_err(
                        |reason| Error::CatalogCorrupt {
                            path: "catalog".into(),
                            reason: format!(
                                "column \"{}\" of table \"{}\": {reason}",
                                col.name, def.name
                            ),
                        },
                    )?);
                }
            }
        }
        Ok(StoredLayout {
            types: types.into(),
            column_of_slot,
            slot_of_column,
            missing: missing.into(),
        })
    }

    /// A decoder producing the columns `projection` (column indexes) from stored rows, sized
    /// for `rows` rows.
    pub fn decoder(&self, projection: &[usize], rows: usize) -> RowDecoder {
        let slots: Vec<usize> = projection
            .iter()
            .filter_map(|c| self.slot_of_column.get(*c).copied())
            .collect();
        RowDecoder::shared(self.types.clone(), &slots, rows).with_missing(self.missing.clone())
    }

    /// Encodes row `row` of `columns` (every column, in catalog order) as a stored row.
    pub fn encode(&self, columns: &[ArrayRef], row: usize, out: &mut Vec<u8>) {
        encode_row_with(
            &self.types,
            |slot| {
                self.column_of_slot
                    .get(slot)
                    .copied()
                    .flatten()
                    .and_then(|c| columns.get(c))
            },
            row,
            out,
        )
    }
}

/// Hex (two lower- or upper-case digits a byte) to bytes.
pub(crate) fn decode_hex(s: &str) -> std::result::Result<Vec<u8>, String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{s:?} is not hex")),
    };
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(format!("{s:?} has an odd number of hex digits"));
    }
    pairs
        .map(|p| match p {
            [h, l] => Ok(digit(*h)? << 4 | digit(*l)?),
            _ => Err(format!("{s:?} is not hex")),
        })
        .collect()
}

/// Bytes to lower-case hex.
pub(crate) fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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
    /// Opens (recovering) the row store under `data_dir` whose directories are named `dir`
    /// ([`crate::catalog::database_dir`] of the database's name).
    pub async fn open(
        fs: SharedFs,
        data_dir: &Path,
        dir: &str,
        durability: Durability,
    ) -> Result<RowsDb> {
        let opts = RowStoreOptions {
            durability,
            ..RowStoreOptions::default()
        };
        let store = RowStore::open(fs, data_dir, dir, opts)
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
        E::Deadlock { .. } => Error::Deadlock,
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

/// Every (key, value) of `table` in `start..end` that `txn` reads.
async fn scan_range(
    txn: &Transaction,
    table: TableId,
    start: &Bound<Vec<u8>>,
    end: &Bound<Vec<u8>>,
) -> Result<Vec<(Bytes, Bytes)>> {
    txn.scan(
        table,
        start.as_ref().map(|v| v.as_slice()),
        end.as_ref().map(|v| v.as_slice()),
    )
    .map_err(rows_error)?
    .collect()
    .await
    .map_err(rows_error)
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
                out.extend(scan_range(txn, table, s, e).await?);
            }
        }
        KeyAccess::Index { index, ranges } => {
            // Each row has one entry per index and the ranges are disjoint, but a row is
            // fetched once whatever happens.
            let mut seen = std::collections::HashSet::new();
            for (s, e) in ranges {
                let entries = scan_range(txn, *index, s, e).await?;
                for (_, row_key) in entries {
                    if !seen.insert(row_key.clone()) {
                        continue;
                    }
                    if let Some(v) = txn.get(table, &row_key).await.map_err(rows_error)? {
                        out.push((row_key, v));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Deletes every row of `table` that `txn` sees (TRUNCATE). The deletes are ordinary writes of
/// the transaction, so the commit record grows with the table: a table whose keys exceed
/// `commit_bytes_max` cannot be truncated in one statement (54000).
pub(crate) async fn delete_all(txn: &mut Transaction, def: &TableDef) -> Result<u64> {
    txn.expect_schema(def.id, index::schema_stamp(def));
    let n = delete_keys(txn, def.id).await?;
    // The index trees are emptied in the same transaction: TRUNCATE commits or rolls back
    // rows and entries together.
    for ix in def.indexes() {
        delete_keys(txn, ix.id).await?;
    }
    Ok(n)
}

/// Deletes every key of one row store table that `txn` sees; returns how many.
async fn delete_keys(txn: &mut Transaction, table: TableId) -> Result<u64> {
    let mut scan = txn
        .scan(table, Bound::Unbounded, Bound::Unbounded)
        .map_err(rows_error)?;
    let mut keys = Vec::new();
    while let Some((k, _)) = scan.next().await.map_err(rows_error)? {
        keys.push(k);
    }
    drop(scan);
    let n = keys.len() as u64;
    for k in keys {
        txn.delete(table, k).map_err(rows_error)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    use super::*;
    use crate::catalog::{ColumnDef, DroppedColumn, RowTableOptions, TableKind};

    fn col(name: &str, ty: ColumnType) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            nullable: true,
            char_type: None,
            default: None,
            missing: None,
        }
    }

    fn encode(def: &TableDef, columns: &[ArrayRef]) -> Vec<u8> {
        let mut out = Vec::new();
        StoredLayout::of(def)
            .expect("layout")
            .encode(columns, 0, &mut out);
        out
    }

    fn decode(def: &TableDef, row: &[u8]) -> Vec<ArrayRef> {
        let all: Vec<usize> = (0..def.columns.len()).collect();
        let mut dec = StoredLayout::of(def).expect("layout").decoder(&all, 1);
        dec.append(row).expect("decodes");
        dec.finish()
    }

    /// A row stored before DROP COLUMN and ADD COLUMN ... DEFAULT reads as PostgreSQL shows
    /// it after the change, and a row stored after reads back what was written.
    #[test]
    fn rows_stored_before_alter_read_with_the_new_layout() {
        let v1 = TableDef {
            id: 1,
            name: "t".into(),
            columns: vec![
                col("id", ColumnType::Int4),
                col("a", ColumnType::Text),
                col("b", ColumnType::Int4),
            ],
            kind: TableKind::Table(RowTableOptions {
                primary_key: vec!["id".into()],
                dropped: Vec::new(),
                indexes: Vec::new(),
            }),
        };
        let old = encode(
            &v1,
            &[
                Arc::new(Int32Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["gone"])),
                Arc::new(Int32Array::from(vec![7])),
            ],
        );
        let mut v2 = v1.clone();
        v2.columns.remove(1);
        if let TableKind::Table(o) = &mut v2.kind {
            o.dropped.push(DroppedColumn {
                position: 1,
                ty: ColumnType::Text,
            });
        }
        let mut c = col("c", ColumnType::Text);
        c.missing = Some(encode_hex(b"dflt"));
        v2.columns.push(c);
        v2.columns.push(col("d", ColumnType::Int4));

        let got = decode(&v2, &old);
        assert_eq!(got[0].as_primitive::<Int32Type>().value(0), 1);
        assert_eq!(got[1].as_primitive::<Int32Type>().value(0), 7);
        assert_eq!(got[2].as_string::<i32>().value(0), "dflt");
        assert!(got[3].is_null(0));

        let new = encode(
            &v2,
            &[
                Arc::new(Int32Array::from(vec![2])),
                Arc::new(Int32Array::from(vec![8])),
                Arc::new(StringArray::from(vec![None::<&str>])),
                Arc::new(Int32Array::from(vec![9])),
            ],
        );
        let got = decode(&v2, &new);
        assert_eq!(got[0].as_primitive::<Int32Type>().value(0), 2);
        assert_eq!(got[1].as_primitive::<Int32Type>().value(0), 8);
        // Written NULL is NULL, not the value rows from before the ADD COLUMN read.
        assert!(got[2].is_null(0));
        assert_eq!(got[3].as_primitive::<Int32Type>().value(0), 9);
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(decode_hex(&encode_hex(&bytes)), Ok(bytes));
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
