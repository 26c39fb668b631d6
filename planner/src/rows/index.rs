//! Secondary indexes of row tables: UNIQUE constraints and `CREATE [UNIQUE] INDEX`.
//!
//! Each index is a tree of its own in the row store (its own table id, from the catalog's id
//! counter), written in the same transaction as the row: it commits, rolls back, conflicts and
//! replays after a crash exactly as the rows do. With `cols` the order-preserving
//! [`braid_ingest::key`] encoding of the indexed columns (a NULL as NULL) and `rowkey` the
//! row's key in its table, an entry is:
//! - unique index, no NULL in `cols`: `cols → rowkey`. Two rows with equal values need the same
//!   entry key: an insert that sees it fails with 23505, and two concurrent transactions that
//!   both write it cannot both commit (the later committer fails with 40001 on the key).
//! - plain index, or a NULL in a unique one: `cols ++ rowkey → rowkey`. NULLs never collide
//!   (PostgreSQL's default NULLS DISTINCT). A unique index made NULLS NOT DISTINCT keeps
//!   rows with NULLs in the `cols → rowkey` form too, so a second NULL conflicts.
//!
//! Every entry of a value starts with its `cols`, so a read by index scans the `cols` ranges
//! the filters leave ([`super::key::key_access`] over the indexed columns), then gets each
//! named row at the same snapshot. The filters stay above the scan (`Inexact`), so an index
//! only saves reading rows, never decides what a query returns.
//!
//! `CREATE INDEX` on a table with rows ([`fill`]): the new index's stamp
//! ([`schema_stamp`]) is set in the row store first, so any transaction whose writes were
//! planned without the index fails at commit (40001, the client retries) instead of
//! committing rows without entries; the index goes into the catalog marked `building` (kept
//! current by every new writer, not read by queries); one transaction at a snapshot that
//! includes every commit made under the old stamp writes the entries of every existing row;
//! then the index is marked ready.
//!
//! What must stay true: every write of a row writes the entries of every index of its table
//! (building or not) in the same transaction, deleting the entries of the row's old values
//! when its indexed values or its key change; an entry names a row whose indexed columns
//! encode to its `cols` at the same snapshot.

use std::ops::Bound;

use braid_ingest::key::{encode_key_into, prefix_end, KeyValue};
use braid_ingest::rows::Transaction;
use bytes::Bytes;
use datafusion::arrow::array::ArrayRef;
use datafusion::logical_expr::Expr;

use super::key::{key_access, key_value, usable_filter, KeyAccess, KeyLayout};
use super::write::{pg_text, RowWriter};
use super::{rows_error, RowsDb};
use crate::catalog::{IndexDef, TableDef};
use crate::error::{Error, Result};
use crate::types::ColumnType;

/// Rows read per step while CREATE INDEX fills an index.
const FILL_BATCH_ROWS: usize = 4096;

/// One index of a table, resolved against the table's current columns.
#[derive(Debug, Clone)]
pub struct IndexLayout {
    pub def: IndexDef,
    /// The indexed columns as a key layout, so [`key_access`] finds ranges over them.
    pub key: KeyLayout,
}

/// A fingerprint of a table's set of indexes: writers declare the one they were planned with
/// ([`braid_ingest::rows::Transaction::expect_schema`]); 0 for a table without indexes.
pub fn schema_stamp(def: &TableDef) -> u64 {
    let mut ids: Vec<u64> = def.indexes().iter().map(|i| i.id).collect();
    if ids.is_empty() {
        return 0;
    }
    ids.sort_unstable();
    // FNV-1a over the ids: distinct sets differ (a collision only costs the check).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.max(1)
}

/// Index columns must have an order-preserving encoding.
pub fn check_index_type(name: &str, ty: ColumnType) -> Result<()> {
    match ty {
        // An interval compares by its normalized length (1 day = 24 hours), which a key
        // encoding of its three fields would not follow.
        ColumnType::Numeric { .. } | ColumnType::Jsonb | ColumnType::Interval => {
            Err(Error::Unsupported(format!(
                "column \"{name}\" has type {}, which braid cannot index yet",
                ty.sql_name()
            )))
        }
        _ => Ok(()),
    }
}

impl IndexLayout {
    pub fn of(table: &TableDef, def: &IndexDef) -> Result<IndexLayout> {
        let mut columns = Vec::with_capacity(def.columns.len());
        for n in &def.columns {
            let (i, c) = table
                .columns
                .iter()
                .enumerate()
                .find(|(_, c)| &c.name == n)
                .ok_or_else(|| Error::UndefinedColumn(n.clone()))?;
            columns.push((i, c.ty, n.clone()));
        }
        Ok(IndexLayout {
            def: def.clone(),
            key: KeyLayout { columns },
        })
    }

    /// Every index of `table`.
    pub fn all(table: &TableDef) -> Result<Vec<IndexLayout>> {
        table
            .indexes()
            .iter()
            .map(|d| IndexLayout::of(table, d))
            .collect()
    }

    /// The encoded indexed columns of a row, and whether one is NULL.
    fn cols(&self, columns: &[ArrayRef], row: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(16);
        let mut null = false;
        for (i, ty, _) in &self.key.columns {
            let v = columns
                .get(*i)
                .and_then(|a| key_value(*ty, a, row))
                .unwrap_or_else(|| {
                    null = true;
                    KeyValue::Null
                });
            encode_key_into(&mut out, std::slice::from_ref(&v));
        }
        (out, null)
    }

    /// The entry key of a row stored under `row_key`, and whether it is a unique one.
    fn entry_key(&self, columns: &[ArrayRef], row: usize, row_key: &[u8]) -> (Vec<u8>, bool) {
        let (mut k, null) = self.cols(columns, row);
        let unique = self.def.unique && (!null || self.def.nulls_not_distinct);
        if !unique {
            k.extend_from_slice(row_key);
        }
        (k, unique)
    }

    /// `(a, b)=(1, x)`: the indexed values of a row as PostgreSQL's DETAIL lines show them.
    fn key_text(&self, columns: &[ArrayRef], row: usize) -> String {
        let vals: Vec<String> = self
            .key
            .columns
            .iter()
            .map(|(i, _, _)| columns.get(*i).map_or("?".into(), |a| pg_text(a, row)))
            .collect();
        format!("{}=({})", self.key.column_list(), vals.join(", "))
    }

    /// PostgreSQL's 23505 for a row whose values the index already holds.
    pub(crate) fn duplicate(&self, columns: &[ArrayRef], row: usize) -> Error {
        Error::UniqueViolation {
            message: format!(
                "duplicate key value violates unique constraint \"{}\"",
                self.def.name
            ),
            detail: Some(format!(
                "Key {} already exists.",
                self.key_text(columns, row)
            )),
        }
    }

    /// The stored row key a unique index holds for the values of row `row`, if any (`None`
    /// also when a value is NULL, unless the index says NULLS NOT DISTINCT).
    pub(crate) async fn find(
        &self,
        txn: &Transaction,
        columns: &[ArrayRef],
        row: usize,
    ) -> Result<Option<Bytes>> {
        let (k, null) = self.cols(columns, row);
        if !self.def.unique || (null && !self.def.nulls_not_distinct) {
            return Ok(None);
        }
        txn.get(self.def.id, &k).await.map_err(rows_error)
    }
}

/// How a scan or an UPDATE/DELETE reads the table for `filters`: the primary key's point gets
/// when the filters fix it; else an index whose leading columns are fixed by equality (a
/// unique one first); else a primary key range; else an index range; else every row.
pub fn choose_access(
    layout: &KeyLayout,
    indexes: &[IndexLayout],
    filters: &[Expr],
) -> (KeyAccess, String) {
    let (access, desc) = key_access(layout, filters);
    // Point gets on the key beat everything; a key range still loses to index points.
    let to_beat = match access {
        KeyAccess::Points(_) => return (access, desc),
        KeyAccess::Ranges(_) => 1,
        _ => 0,
    };
    let mut best: Option<(u8, &IndexLayout, KeyAccess, String)> = None;
    for ix in indexes.iter().filter(|i| !i.def.building) {
        let (a, d) = key_access(&ix.key, filters);
        let score = match &a {
            KeyAccess::Points(_) if ix.def.unique => 3,
            KeyAccess::Points(_) => 2,
            KeyAccess::Ranges(_) => 1,
            _ => continue,
        };
        if best.as_ref().is_none_or(|(s, ..)| score > *s) {
            best = Some((score, ix, a, d));
        }
    }
    let Some((_, ix, a, d)) = best.filter(|(score, ..)| *score > to_beat) else {
        return (access, desc);
    };
    let ranges = match a {
        // Whole values: every entry that starts with them.
        KeyAccess::Points(keys) => keys
            .into_iter()
            .map(|k| {
                let end = prefix_end(&k).map_or(Bound::Unbounded, Bound::Excluded);
                (Bound::Included(k), end)
            })
            .collect(),
        KeyAccess::Ranges(r) => r,
        KeyAccess::Full | KeyAccess::Index { .. } => return (access, desc),
    };
    (
        KeyAccess::Index {
            index: ix.def.id,
            ranges,
        },
        format!("index={} {d}", ix.def.name),
    )
}

/// True when the primary key or an index can narrow reads with `e`.
pub fn usable(layout: &KeyLayout, indexes: &[IndexLayout], e: &Expr) -> bool {
    usable_filter(layout, e)
        || indexes
            .iter()
            .any(|i| !i.def.building && usable_filter(&i.key, e))
}

impl RowWriter {
    /// Declares the table's index set to `txn` before it writes rows of the table.
    pub(crate) fn expect_schema(&self, txn: &mut Transaction) {
        txn.expect_schema(self.def.id, self.stamp);
    }

    /// The indexes `which` selects (by position; all when `None`).
    fn chosen_indexes<'a>(
        &'a self,
        which: Option<&'a [bool]>,
    ) -> impl Iterator<Item = &'a IndexLayout> + 'a {
        self.indexes
            .iter()
            .enumerate()
            .filter(move |(n, _)| which.is_none_or(|w| w.get(*n).copied().unwrap_or(true)))
            .map(|(_, ix)| ix)
    }

    /// Writes the entries of row `row` of `columns`, stored under `row_key`, into every index
    /// `which` selects (all when `None`); a unique index that holds the values is 23505.
    pub(crate) async fn insert_entries(
        &self,
        txn: &mut Transaction,
        columns: &[ArrayRef],
        row: usize,
        row_key: &[u8],
        which: Option<&[bool]>,
    ) -> Result<()> {
        for ix in self.chosen_indexes(which) {
            let (k, unique) = ix.entry_key(columns, row, row_key);
            if unique {
                // Checked from the snapshot, not from a row lock: another row may have taken
                // the value since.
                match txn.insert(ix.def.id, k, row_key.to_vec()).await {
                    Ok(()) => {}
                    Err(braid_ingest::Error::UniqueViolation { .. }) => {
                        return Err(ix.duplicate(columns, row))
                    }
                    Err(e) => return Err(rows_error(e)),
                }
            } else {
                // Only writers of the row write this entry: it follows the row's check.
                txn.put(ix.def.id, k.clone(), row_key.to_vec())
                    .map_err(rows_error)?;
                txn.check_like(ix.def.id, &k, self.def.id, row_key);
            }
        }
        Ok(())
    }

    /// Deletes the entries of row `row` of `columns`, stored under `row_key`, from every index
    /// `which` selects (all when `None`).
    pub(crate) fn delete_entries(
        &self,
        txn: &mut Transaction,
        columns: &[ArrayRef],
        row: usize,
        row_key: &[u8],
        which: Option<&[bool]>,
    ) -> Result<()> {
        for ix in self.chosen_indexes(which) {
            let (k, _) = ix.entry_key(columns, row, row_key);
            txn.delete(ix.def.id, k.clone()).map_err(rows_error)?;
            // The entry names this row: whoever wrote it last wrote the row too.
            txn.check_like(ix.def.id, &k, self.def.id, row_key);
        }
        Ok(())
    }

    /// Per index: whether the entry of a row changes when the row moves from (`old`, `old_key`)
    /// to (`new`, `new_key`).
    pub(crate) fn changed_entries(
        &self,
        old: (&[ArrayRef], usize, &[u8]),
        new: (&[ArrayRef], usize, &[u8]),
    ) -> Vec<bool> {
        // A new row key changes every entry: the key or the value names the row.
        let moved = old.2 != new.2;
        self.indexes
            .iter()
            .map(|ix| {
                moved || ix.entry_key(old.0, old.1, old.2) != ix.entry_key(new.0, new.1, new.2)
            })
            .collect()
    }

    /// The unique indexes of the table (not building: those are not arbiters yet).
    pub(crate) fn unique_indexes(&self) -> impl Iterator<Item = &IndexLayout> {
        self.indexes
            .iter()
            .filter(|i| i.def.unique && !i.def.building)
    }
}

/// Writes the entries of every row of table `def` into its index `index` (CREATE INDEX), in
/// one transaction at a snapshot that must include every commit made without the index (see
/// the module doc). A unique index over duplicate values fails with PostgreSQL's 23505.
pub(crate) async fn fill(
    db: &std::sync::Arc<RowsDb>,
    def: &TableDef,
    index: &IndexDef,
) -> Result<()> {
    let table = super::table::RowTable::new(std::sync::Arc::new(def.clone()), db.clone())?;
    let writer = table.writer();
    let ix = IndexLayout::of(def, index)?;
    let mut txn = db.store.begin();
    let rows = txn
        .scan(def.id, Bound::Unbounded, Bound::Unbounded)
        .map_err(rows_error)?
        .collect()
        .await
        .map_err(rows_error)?;
    let all: Vec<usize> = (0..def.columns.len()).collect();
    for chunk in rows.chunks(FILL_BATCH_ROWS) {
        let batch = writer.decode(&all, chunk.iter().map(|(_, v)| v))?;
        let columns = batch.columns();
        for (row, (row_key, _)) in chunk.iter().enumerate() {
            let (k, unique) = ix.entry_key(columns, row, row_key);
            if unique {
                // A writer planned with the building index may have written this row's entry
                // already; any other row holding the values is a duplicate.
                match txn.get(index.id, &k).await.map_err(rows_error)? {
                    Some(v) if v == *row_key => continue,
                    Some(_) => {
                        return Err(Error::UniqueViolation {
                            message: format!("could not create unique index \"{}\"", index.name),
                            detail: Some(format!(
                                "Key {} is duplicated.",
                                ix.key_text(columns, row)
                            )),
                        })
                    }
                    None => {}
                }
            }
            txn.put(index.id, k, row_key.clone()).map_err(rows_error)?;
        }
    }
    txn.commit().await.map_err(rows_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, RowTableOptions, TableKind};
    use braid_ingest::key::encode_key;
    use datafusion::prelude::{col, lit};

    fn table() -> TableDef {
        let c = |name: &str, ty| ColumnDef {
            name: name.into(),
            ty,
            nullable: true,
            char_type: None,
            default: None,
            missing: None,
        };
        let ix = |id, name: &str, columns: &[&str], unique| IndexDef {
            id,
            name: name.into(),
            columns: columns.iter().map(|s| s.to_string()).collect(),
            unique,
            constraint: false,
            building: false,
            order: Vec::new(),
            nulls_not_distinct: false,
        };
        TableDef {
            id: 1,
            name: "t".into(),
            columns: vec![
                c("id", ColumnType::Int4),
                c("city", ColumnType::Text),
                c("age", ColumnType::Int4),
                c("email", ColumnType::Text),
            ],
            kind: TableKind::Table(RowTableOptions {
                primary_key: vec!["id".into()],
                dropped: Vec::new(),
                indexes: vec![
                    ix(2, "t_city_age", &["city", "age"], false),
                    ix(3, "t_email_key", &["email"], true),
                ],
            }),
        }
    }

    fn access(filters: &[Expr]) -> (KeyAccess, String) {
        let def = table();
        let layout = KeyLayout::new(&def).expect("layout");
        let indexes = IndexLayout::all(&def).expect("indexes");
        choose_access(&layout, &indexes, filters)
    }

    #[test]
    fn the_primary_key_comes_before_any_index() {
        let (a, _) = access(&[col("id").eq(lit(1i32)), col("email").eq(lit("a"))]);
        assert_eq!(
            a,
            KeyAccess::Points(vec![encode_key(&[KeyValue::Int32(1)])])
        );
    }

    #[test]
    fn index_points_beat_a_key_range_and_a_key_range_beats_an_index_range() {
        let (a, desc) = access(&[col("id").gt(lit(1i32)), col("email").eq(lit("a"))]);
        assert!(matches!(a, KeyAccess::Index { index: 3, .. }), "{desc}");
        let (a, desc) = access(&[col("id").gt(lit(1i32)), col("email").gt(lit("a"))]);
        assert!(matches!(a, KeyAccess::Ranges(_)), "{desc}");
    }

    #[test]
    fn a_unique_index_fixed_by_equality_wins_over_a_prefix() {
        let (a, desc) = access(&[col("city").eq(lit("oslo")), col("email").eq(lit("a"))]);
        let k = encode_key(&[KeyValue::Text("a".into())]);
        let end = prefix_end(&k).expect("end");
        assert_eq!(
            a,
            KeyAccess::Index {
                index: 3,
                ranges: vec![(Bound::Included(k), Bound::Excluded(end))],
            }
        );
        assert!(desc.starts_with("index=t_email_key "), "{desc}");
    }

    #[test]
    fn leading_columns_only_and_building_indexes_are_not_read() {
        // `age` is the second column of t_city_age: no range on the index.
        let (a, desc) = access(&[col("age").eq(lit(30i32))]);
        assert_eq!(a, KeyAccess::Full, "{desc}");
        let mut def = table();
        if let TableKind::Table(o) = &mut def.kind {
            for i in &mut o.indexes {
                i.building = true;
            }
        }
        let layout = KeyLayout::new(&def).expect("layout");
        let indexes = IndexLayout::all(&def).expect("indexes");
        let (a, _) = choose_access(&layout, &indexes, &[col("email").eq(lit("a"))]);
        assert_eq!(a, KeyAccess::Full);
    }

    #[test]
    fn null_values_never_share_a_unique_entry() {
        use datafusion::arrow::array::{Int32Array, StringArray};
        use std::sync::Arc;
        let def = table();
        let ix = IndexLayout::of(&def, &def.indexes()[1]).expect("layout");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("x"), Some("x"), Some("x")])),
            Arc::new(Int32Array::from(vec![1, 1, 1])),
            Arc::new(StringArray::from(vec![None, None, Some("a")])),
        ];
        let (k1, u1) = ix.entry_key(&columns, 0, b"r1");
        let (k2, u2) = ix.entry_key(&columns, 1, b"r2");
        let (k3, u3) = ix.entry_key(&columns, 2, b"r3");
        assert!(!u1 && !u2 && u3);
        assert_ne!(k1, k2, "two NULLs are two entries");
        assert_eq!(k3, encode_key(&[KeyValue::Text("a".into())]));
        assert_ne!(schema_stamp(&def), 0);
    }
}
