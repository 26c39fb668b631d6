//! Writing row tables: checking rows against NOT NULL and the primary key, encoding them, and
//! the two DataFusion plans that write — the INSERT sink and the UPDATE/DELETE plan.
//!
//! Errors carry PostgreSQL's messages and DETAIL lines (23502 not-null, 23505 duplicate key)
//! so clients that match on them behave as against PostgreSQL.
//!
//! What must stay true: every write of a statement goes to one transaction — the session's
//! block, or one begun for the statement and committed (durably) before the statement
//! reports its row count. A statement reads every row it changes before it writes any
//! (UPDATE/DELETE read first; an INSERT's input scan snapshots before the first write).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::sink::DataSink;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};

use braid_ingest::rows::Transaction;

use super::index::IndexLayout;
use super::key::{KeyAccess, KeyLayout};
use super::point::BoundParams;
use super::txn::RowTxn;
use super::{read_rows, rows_error, RowsDb, StoredLayout};
use crate::catalog::TableDef;
use crate::error::{Error, Result, StorageErrorKind};

/// Rows decoded per batch when an UPDATE or DELETE evaluates its filters.
const DML_BATCH_ROWS: usize = 8192;

/// `a` converted to `t`, the type of column `name`; a value that does not convert is an error
/// naming the column.
fn as_column_type(name: &str, t: &DataType, a: ArrayRef) -> Result<ArrayRef> {
    if a.data_type() == t {
        return Ok(a);
    }
    cast(&a, t)
        .map_err(|e| Error::InvalidInput(format!("invalid value for column \"{name}\": {e}")))
}

/// Evaluates one WHERE conjunct over `batch`: a boolean per row (NULL keeps no row).
pub(crate) fn where_mask(
    f: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<datafusion::arrow::array::BooleanArray> {
    let v = f.evaluate(batch)?.into_array(batch.num_rows())?;
    v.as_any()
        .downcast_ref::<datafusion::arrow::array::BooleanArray>()
        .cloned()
        .ok_or_else(|| {
            Error::DataFusion(DataFusionError::Internal(
                "a WHERE filter did not give booleans".into(),
            ))
        })
}

/// Checks and encodes rows of one table.
#[derive(Debug, Clone)]
pub struct RowWriter {
    pub def: Arc<TableDef>,
    pub db: Arc<RowsDb>,
    pub layout: KeyLayout,
    pub schema: SchemaRef,
    /// Where each column goes in a stored row.
    pub stored: Arc<StoredLayout>,
    /// The table's secondary indexes, each written with every row ([`super::index`]).
    pub indexes: Arc<Vec<IndexLayout>>,
    /// [`super::index::schema_stamp`] of the definition this writer was made from.
    pub stamp: u64,
}

/// One cell as PostgreSQL prints it in a DETAIL line.
pub(crate) fn pg_text(a: &ArrayRef, row: usize) -> String {
    if a.is_null(row) {
        return "null".into();
    }
    match a.data_type() {
        DataType::Boolean => match a.as_boolean_opt() {
            Some(b) if b.value(row) => "t".into(),
            Some(_) => "f".into(),
            None => "?".into(),
        },
        // PostgreSQL prints 0 and 1.5, Arrow 0.0 and 1.5.
        DataType::Float64 => a
            .as_primitive_opt::<Float64Type>()
            .map_or("?".into(), |f| f.value(row).to_string()),
        DataType::Float32 => a
            .as_primitive_opt::<Float32Type>()
            .map_or("?".into(), |f| f.value(row).to_string()),
        _ => array_value_to_string(a, row).unwrap_or_else(|_| "?".into()),
    }
}

impl RowWriter {
    /// The columns of `batch` in catalog order, cast to the column types; columns the batch
    /// does not have are NULL.
    pub fn columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let rows = batch.num_rows();
        let mut out = Vec::with_capacity(self.def.columns.len());
        for c in &self.def.columns {
            let t = c.ty.arrow_type();
            let a = match batch
                .schema()
                .index_of(&c.name)
                .ok()
                .and_then(|i| batch.columns().get(i))
            {
                Some(a) => as_column_type(&c.name, &t, a.clone())?,
                None => new_null_array(&t, rows),
            };
            out.push(a);
        }
        Ok(out)
    }

    /// The new values `v` of column `i` (an UPDATE's SET), as the column's type; `None` when
    /// the table has no column `i`.
    pub(crate) fn assigned(&self, i: usize, v: ArrayRef) -> Result<Option<ArrayRef>> {
        match self.def.columns.get(i) {
            Some(c) => as_column_type(&c.name, &c.ty.arrow_type(), v).map(Some),
            None => Ok(None),
        }
    }

    /// PostgreSQL's 23502 for a NULL in a NOT NULL (or key) column of row `row`.
    pub(crate) fn check_not_null(&self, columns: &[ArrayRef], row: usize) -> Result<()> {
        let key_cols: HashSet<usize> = self.layout.columns.iter().map(|c| c.0).collect();
        for (i, (c, a)) in self.def.columns.iter().zip(columns).enumerate() {
            if (!c.nullable || key_cols.contains(&i)) && a.is_null(row) {
                let cells: Vec<String> = columns.iter().map(|a| pg_text(a, row)).collect();
                return Err(Error::NotNullRow {
                    message: format!(
                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                        c.name, self.def.name
                    ),
                    detail: format!("Failing row contains ({}).", cells.join(", ")),
                });
            }
        }
        Ok(())
    }

    /// PostgreSQL's 23505 for the key of row `row`.
    pub(crate) fn duplicate(&self, columns: &[ArrayRef], row: usize) -> Error {
        let vals: Vec<String> = self
            .layout
            .columns
            .iter()
            .map(|(i, _, _)| columns.get(*i).map_or("?".into(), |a| pg_text(a, row)))
            .collect();
        Error::UniqueViolation {
            message: format!(
                "duplicate key value violates unique constraint \"{}_pkey\"",
                self.def.name
            ),
            detail: Some(format!(
                "Key {}=({}) already exists.",
                self.layout.column_list(),
                vals.join(", ")
            )),
        }
    }

    /// Stored rows `values` decoded into a batch of the columns `indices` of the table's
    /// schema (`indices` must be every column for the batch to have the table's schema).
    pub(crate) fn decode<'a>(
        &self,
        indices: &[usize],
        values: impl ExactSizeIterator<Item = &'a Bytes>,
    ) -> Result<RecordBatch> {
        let (columns, n) = self.decode_columns(indices, values)?;
        let whole = indices.len() == self.schema.fields().len()
            && indices.iter().enumerate().all(|(i, c)| i == *c);
        let schema = if whole {
            self.schema.clone()
        } else {
            Arc::new(
                self.schema
                    .project(indices)
                    .map_err(|e| Error::DataFusion(e.into()))?,
            )
        };
        RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }

    /// [`decode`](Self::decode)'s arrays and row count, for a caller that has its own schema.
    pub(crate) fn decode_columns<'a>(
        &self,
        indices: &[usize],
        values: impl ExactSizeIterator<Item = &'a Bytes>,
    ) -> Result<(Vec<ArrayRef>, usize)> {
        let mut dec = self.stored.decoder(indices, values.len());
        let mut n = 0;
        for v in values {
            dec.append(v).map_err(|e| Error::Storage {
                kind: StorageErrorKind::Corruption,
                message: format!("could not decode a row of table \"{}\": {e}", self.def.name),
            })?;
            n += 1;
        }
        Ok((dec.finish(), n))
    }

    pub(crate) fn encode(&self, columns: &[ArrayRef], row: usize) -> Vec<u8> {
        let mut value = Vec::with_capacity(64);
        self.stored.encode(columns, row, &mut value);
        value
    }

    pub(crate) fn key_of(&self, columns: &[ArrayRef], row: usize) -> Result<Vec<u8>> {
        self.layout.row_key(columns, row).ok_or_else(|| {
            Error::DataFusion(DataFusionError::Internal(
                "a key column is NULL after the not-null check".into(),
            ))
        })
    }

    /// Reserves hidden row ids for `n` rows (tables without a primary key), before any lock.
    pub async fn reserve(&self, n: usize) -> Result<Option<i64>> {
        if !self.layout.hidden() || n == 0 {
            return Ok(None);
        }
        Ok(Some(self.db.allocate_rowids(self.def.id, n as u64).await?))
    }

    /// Inserts every row of `columns` (from [`RowWriter::columns`]) into `txn`.
    pub async fn insert(
        &self,
        txn: &mut Transaction,
        columns: &[ArrayRef],
        rows: usize,
        first_rowid: Option<i64>,
    ) -> Result<u64> {
        self.expect_schema(txn);
        for row in 0..rows {
            self.check_not_null(columns, row)?;
            let value = self.encode(columns, row);
            let key = match first_rowid {
                Some(first) => KeyLayout::rowid_key(first.saturating_add(row as i64)),
                None => self.key_of(columns, row)?,
            };
            match txn.insert(self.def.id, key.clone(), value).await {
                Ok(()) => {}
                Err(braid_ingest::Error::UniqueViolation { .. }) => {
                    return Err(self.duplicate(columns, row))
                }
                Err(e) => return Err(rows_error(e)),
            }
            self.insert_entries(txn, columns, row, &key, None).await?;
        }
        Ok(rows as u64)
    }
}

impl RowWriter {
    /// Inserts the rows of `batches` as one statement: in the session's block `block`, or in
    /// a transaction of their own committed (durably) before the count is returned. A
    /// duplicate key or a NULL in a NOT NULL column fails them all with PostgreSQL's error.
    pub async fn insert_batches(&self, block: &RowTxn, batches: &[RecordBatch]) -> Result<u64> {
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        // Hidden row ids first, before the block's lock, as the INSERT sink takes them.
        let mut next_rowid = self.reserve(total).await?;
        let store = &self.db.store;
        let mut guard = block.lock().await;
        let mut own = None;
        let txn = match guard.current(store) {
            Some(t) => t,
            None => own.insert(store.begin()),
        };
        let mut count = 0;
        for batch in batches {
            let n = batch.num_rows();
            let columns = self.columns(batch)?;
            count += self.insert(txn, &columns, n, next_rowid).await?;
            next_rowid = next_rowid.map(|id| id.saturating_add(n as i64));
        }
        drop(guard);
        if let Some(t) = own {
            t.commit().await.map_err(rows_error)?;
        }
        Ok(count)
    }
}

/// DataFusion sink for `INSERT INTO table ...`.
#[derive(Debug)]
pub struct RowSink {
    pub writer: RowWriter,
    /// The table's schema with every column nullable: NOT NULL is checked here, with
    /// PostgreSQL's message, rather than by DataFusion's generic check on the sink schema.
    pub schema: SchemaRef,
    /// The session's transaction block.
    pub txn: Option<Arc<RowTxn>>,
}

impl DisplayAs for RowSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RowSink: table={}", self.writer.def.name)
    }
}

#[async_trait]
impl DataSink for RowSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let to_df = Error::into_datafusion;
        let mut own: Option<Transaction> = None;
        let mut count = 0;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            let rows = batch.num_rows();
            if rows == 0 {
                continue;
            }
            let columns = self.writer.columns(&batch).map_err(to_df)?;
            let first_rowid = self.writer.reserve(rows).await.map_err(to_df)?;
            // The block lock is taken per batch, after the input produced it: the input may
            // be a scan of this session that needs the lock itself.
            let mut guard = match &self.txn {
                Some(t) => Some(t.lock().await),
                None => None,
            };
            let store = &self.writer.db.store;
            let txn = match guard.as_mut().and_then(|g| g.current(store)) {
                Some(t) => t,
                None => own.get_or_insert_with(|| store.begin()),
            };
            count += self
                .writer
                .insert(txn, &columns, rows, first_rowid)
                .await
                .map_err(to_df)?;
        }
        if let Some(t) = own {
            t.commit().await.map_err(|e| to_df(rows_error(e)))?;
        }
        Ok(count)
    }
}

/// A row an UPDATE moves to a new key: (new key, value, its batch's columns, row index).
type MovedRow = (Vec<u8>, Vec<u8>, Vec<ArrayRef>, usize);

/// What an UPDATE or DELETE does to each row it selects.
#[derive(Debug, Clone)]
pub enum DmlOp {
    Delete,
    /// New values: (column index, expression over the old row).
    Update(Vec<(usize, Arc<dyn PhysicalExpr>)>),
}

/// `UPDATE table ... WHERE ...` / `DELETE FROM table WHERE ...`: reads the rows the key
/// ranges leave (in the statement's transaction), keeps those every filter accepts, and
/// writes them back changed or deletes them. Produces one row: `count`.
#[derive(Debug)]
pub struct RowDmlExec {
    writer: RowWriter,
    op: DmlOp,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    access: KeyAccess,
    access_desc: String,
    txn: Option<Arc<RowTxn>>,
    /// Produce the rows changed (new values of an UPDATE, old rows of a DELETE) in the
    /// table's schema instead of the count, for RETURNING.
    returning: bool,
    properties: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl RowDmlExec {
    pub fn new(
        writer: RowWriter,
        op: DmlOp,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        (access, access_desc): (KeyAccess, String),
        txn: Option<Arc<RowTxn>>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        RowDmlExec {
            writer,
            op,
            filters,
            access,
            access_desc,
            txn,
            returning: false,
            properties,
        }
    }

    /// The same statement producing the rows it changes (in the table's schema) instead of
    /// their count.
    pub fn with_returning(&self) -> RowDmlExec {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(self.writer.schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        RowDmlExec {
            writer: self.writer.clone(),
            op: self.op.clone(),
            filters: self.filters.clone(),
            access: self.access.clone(),
            access_desc: self.access_desc.clone(),
            txn: self.txn.clone(),
            returning: true,
            properties,
        }
    }

    /// Runs the statement; `params`, when given, are the bound parameters of a prepared
    /// statement whose filters and assignments were planned over the table's columns followed
    /// by one column per parameter ([`super::point`]).
    pub(crate) async fn run(
        writer: RowWriter,
        op: DmlOp,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        access: KeyAccess,
        block: Option<Arc<RowTxn>>,
        returning: bool,
        params: Option<&BoundParams>,
    ) -> Result<(u64, Vec<RecordBatch>)> {
        let mut own: Option<Transaction> = None;
        let mut guard = match &block {
            Some(t) => Some(t.lock().await),
            None => None,
        };
        let store = &writer.db.store;
        let read_committed = match (&block, &guard) {
            (Some(b), Some(g)) => b.read_committed(g),
            _ => false,
        };
        let txn = match guard.as_mut().and_then(|g| g.current(store)) {
            Some(t) => t,
            None => own.get_or_insert_with(|| store.begin()),
        };
        let table = writer.def.id;
        writer.expect_schema(txn);
        let rows = match &access {
            // READ COMMITTED: each named row under its lock, at its newest commit.
            KeyAccess::Points(keys) if read_committed => {
                let mut rows = Vec::with_capacity(keys.len());
                for k in keys {
                    if let Some(v) = txn.get_for_update(table, k).await.map_err(rows_error)? {
                        rows.push((Bytes::copy_from_slice(k), v));
                    }
                }
                rows
            }
            _ => read_rows(txn, table, &access).await?,
        };
        let all: Vec<usize> = (0..writer.def.columns.len()).collect();
        let mut count = 0u64;
        // Changes are computed for every row first and written after, so the statement never
        // sees its own writes (and a key may move onto a key another row moves away from).
        let mut deletes: Vec<Bytes> = Vec::new();
        let mut puts: Vec<(Bytes, Vec<u8>)> = Vec::new();
        // Rows whose key changes: (new key, value, the new row's columns and row index for a
        // duplicate-key message).
        let mut inserts: Vec<MovedRow> = Vec::new();
        let mut changed: Vec<RecordBatch> = Vec::new();
        let indexed = !writer.indexes.is_empty();
        // Index entries to add, after every entry to remove is gone (so rows may trade
        // values): (chunk's new columns, row, row key, which indexes).
        let mut new_entries: Vec<(usize, usize, Vec<u8>, Vec<bool>)> = Vec::new();
        let mut chunk_columns: Vec<Vec<ArrayRef>> = Vec::new();
        for chunk in rows.chunks(DML_BATCH_ROWS) {
            let batch = writer.decode(&all, chunk.iter().map(|(_, v)| v))?;
            let opts = RecordBatchOptions::new().with_row_count(Some(chunk.len()));
            // What filters and assignments see: the row, then the parameters (if any).
            let input = match params {
                Some(p) => p.extend(&batch)?,
                None => batch.clone(),
            };
            let mut keep = vec![true; chunk.len()];
            for f in &filters {
                let b = where_mask(f, &input)?;
                for (i, k) in keep.iter_mut().enumerate() {
                    *k = *k && b.is_valid(i) && b.value(i);
                }
            }
            let new_columns: Option<Vec<ArrayRef>> = match &op {
                DmlOp::Delete => None,
                DmlOp::Update(assignments) => {
                    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
                    for (i, e) in assignments {
                        let v = e.evaluate(&input)?.into_array(input.num_rows())?;
                        if let (Some(v), Some(slot)) = (writer.assigned(*i, v)?, cols.get_mut(*i)) {
                            *slot = v;
                        }
                    }
                    Some(cols)
                }
            };
            if returning {
                let rows = match &new_columns {
                    None => batch.clone(),
                    Some(cols) => RecordBatch::try_new_with_options(
                        writer.schema.clone(),
                        cols.clone(),
                        &opts,
                    )
                    .map_err(|e| Error::DataFusion(e.into()))?,
                };
                let mask = datafusion::arrow::array::BooleanArray::from(keep.clone());
                changed.push(
                    datafusion::arrow::compute::filter_record_batch(&rows, &mask)
                        .map_err(|e| Error::DataFusion(e.into()))?,
                );
            }
            let chunk_no = chunk_columns.len();
            if let (true, Some(cols)) = (indexed, &new_columns) {
                chunk_columns.push(cols.clone());
            }
            for (row, ((old_key, _), keep)) in chunk.iter().zip(&keep).enumerate() {
                if !keep {
                    continue;
                }
                count += 1;
                let Some(cols) = &new_columns else {
                    if indexed {
                        writer.delete_entries(txn, batch.columns(), row, old_key, None)?;
                    }
                    deletes.push(old_key.clone());
                    continue;
                };
                writer.check_not_null(cols, row)?;
                let value = writer.encode(cols, row);
                let new_key = if writer.layout.hidden() {
                    old_key.to_vec()
                } else {
                    writer.key_of(cols, row)?
                };
                if indexed {
                    let which = writer
                        .changed_entries((batch.columns(), row, old_key), (cols, row, &new_key));
                    if which.iter().any(|c| *c) {
                        writer.delete_entries(txn, batch.columns(), row, old_key, Some(&which))?;
                        new_entries.push((chunk_no, row, new_key.clone(), which));
                    }
                }
                if new_key.as_slice() == old_key.as_ref() {
                    puts.push((old_key.clone(), value));
                } else {
                    deletes.push(old_key.clone());
                    inserts.push((new_key, value, cols.clone(), row));
                }
            }
        }
        for k in deletes {
            txn.delete(table, k).map_err(rows_error)?;
        }
        for (k, v) in puts {
            txn.put(table, k, v).map_err(rows_error)?;
        }
        for (k, v, cols, row) in inserts {
            match txn.insert(table, k, v).await {
                Ok(()) => {}
                Err(braid_ingest::Error::UniqueViolation { .. }) => {
                    return Err(writer.duplicate(&cols, row))
                }
                Err(e) => return Err(rows_error(e)),
            }
        }
        for (chunk_no, row, key, which) in new_entries {
            if let Some(cols) = chunk_columns.get(chunk_no) {
                writer
                    .insert_entries(txn, cols, row, &key, Some(&which))
                    .await?;
            }
        }
        drop(guard);
        if let Some(t) = own {
            t.commit().await.map_err(rows_error)?;
        }
        Ok((count, changed))
    }
}

impl DisplayAs for RowDmlExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let what = match self.op {
            DmlOp::Delete => "delete",
            DmlOp::Update(_) => "update",
        };
        write!(
            f,
            "RowDmlExec: {what} table={}, {}",
            self.writer.def.name, self.access_desc
        )?;
        if !self.filters.is_empty() {
            let fs: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", filters=[{}]", fs.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for RowDmlExec {
    fn name(&self) -> &str {
        "RowDmlExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let writer = self.writer.clone();
        let op = self.op.clone();
        let filters = self.filters.clone();
        let access = self.access.clone();
        let block = self.txn.clone();
        let returning = self.returning;
        let schema = if returning {
            self.writer.schema.clone()
        } else {
            count_schema()
        };
        let out = schema.clone();
        let stream = futures::stream::once(async move {
            let (n, rows) = RowDmlExec::run(writer, op, filters, access, block, returning, None)
                .await
                .map_err(Error::into_datafusion)?;
            let batches = if returning {
                rows
            } else {
                vec![RecordBatch::try_new(
                    out,
                    vec![Arc::new(UInt64Array::from(vec![n]))],
                )?]
            };
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
