//! `RowScanExec`: reads a row table from one snapshot, in key order — whole-key point gets,
//! key ranges, or every row — decoding only the projected columns.
//!
//! Inside a transaction block the scan reads through the block's transaction (its snapshot
//! plus its own writes). Outside one it begins a read-only transaction of its own and keeps
//! it open until the scan ends, so the versions it reads stay readable for its whole run.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use braid_ingest::rows::{Transaction, TxnScan};
use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use super::key::KeyAccess;
use super::txn::RowTxn;
use super::{rows_error, RowsDb, StoredLayout};
use crate::catalog::TableDef;
use crate::error::{Error, StorageErrorKind};
use crate::rowcodec::RowDecoder;

/// Rows per output batch (at most).
const BATCH_ROWS_MAX: usize = 8192;

#[derive(Debug)]
pub struct RowScanExec {
    def: Arc<TableDef>,
    db: Arc<RowsDb>,
    table_schema: SchemaRef,
    projection: Vec<usize>,
    access: KeyAccess,
    access_desc: String,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl RowScanExec {
    pub fn new(
        def: Arc<TableDef>,
        db: Arc<RowsDb>,
        table_schema: SchemaRef,
        projection: Vec<usize>,
        (access, access_desc): (KeyAccess, String),
        limit: Option<usize>,
    ) -> DfResult<Self> {
        let schema = Arc::new(table_schema.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(RowScanExec {
            def,
            db,
            table_schema,
            projection,
            access,
            access_desc,
            limit,
            properties,
        })
    }
}

impl DisplayAs for RowScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self
            .projection
            .iter()
            .filter_map(|i| {
                self.table_schema
                    .fields()
                    .get(*i)
                    .map(|f| f.name().as_str())
            })
            .collect();
        write!(
            f,
            "RowScanExec: table={}, {}",
            self.def.name, self.access_desc
        )?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        write!(f, ", projection=[{}]", names.join(", "))
    }
}

/// Where the rows come from.
enum Source {
    /// Rows already read (point gets).
    Rows(std::vec::IntoIter<(Bytes, Bytes)>),
    /// Range scans, read in turn.
    Scans(VecDeque<TxnScan>),
}

struct ScanState {
    /// The scan's own read-only transaction outside a block: held so its snapshot stays
    /// readable until the scan ends.
    _own: Option<Transaction>,
    source: Source,
    decoder: RowDecoder,
    remaining: usize,
    schema: SchemaRef,
    table: String,
}

impl ScanState {
    async fn next_value(&mut self) -> DfResult<Option<Bytes>> {
        match &mut self.source {
            Source::Rows(it) => Ok(it.next().map(|(_, v)| v)),
            Source::Scans(scans) => loop {
                let Some(s) = scans.front_mut() else {
                    return Ok(None);
                };
                match s
                    .next_value()
                    .await
                    .map_err(|e| rows_error(e).into_datafusion())?
                {
                    Some(v) => return Ok(Some(v)),
                    None => {
                        scans.pop_front();
                    }
                }
            },
        }
    }

    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        let mut n = 0;
        while n < BATCH_ROWS_MAX && self.remaining > 0 {
            let Some(v) = self.next_value().await? else {
                break;
            };
            self.decoder.append(&v).map_err(|e| {
                Error::Storage {
                    kind: StorageErrorKind::Corruption,
                    message: format!("could not decode a row of table \"{}\": {e}", self.table),
                }
                .into_datafusion()
            })?;
            n += 1;
            self.remaining -= 1;
        }
        if n == 0 {
            return Ok(None);
        }
        let columns = self.decoder.finish();
        let opts = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &opts,
        )?))
    }
}

/// Opens the reads of `access` on `txn`: point gets now, range scans as iterators.
async fn open_source(
    txn: &Transaction,
    table: u64,
    access: &KeyAccess,
) -> Result<Source, DataFusionError> {
    let to_df = |e| rows_error(e).into_datafusion();
    Ok(match access {
        KeyAccess::Points(_) | KeyAccess::Index { .. } => {
            let rows = super::read_rows(txn, table, access)
                .await
                .map_err(Error::into_datafusion)?;
            Source::Rows(rows.into_iter())
        }
        KeyAccess::Full => Source::Scans(VecDeque::from(vec![txn
            .scan(
                table,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
            )
            .map_err(to_df)?])),
        KeyAccess::Ranges(ranges) => {
            let mut scans = VecDeque::with_capacity(ranges.len());
            for (s, e) in ranges {
                scans.push_back(
                    txn.scan(
                        table,
                        s.as_ref().map(|v| v.as_slice()),
                        e.as_ref().map(|v| v.as_slice()),
                    )
                    .map_err(to_df)?,
                );
            }
            Source::Scans(scans)
        }
    })
}

impl ExecutionPlan for RowScanExec {
    fn name(&self) -> &str {
        "RowScanExec"
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
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema();
        let block = context.session_config().get_extension::<RowTxn>();
        let db = self.db.clone();
        let table = self.def.id;
        let table_name = self.def.name.clone();
        let access = self.access.clone();
        let decoder = StoredLayout::of(&self.def)
            .map_err(Error::into_datafusion)?
            .decoder(&self.projection);
        let remaining = self.limit.unwrap_or(usize::MAX);
        let out_schema = schema.clone();
        let start = async move {
            let mut guard = match &block {
                Some(b) => Some(b.lock().await),
                None => None,
            };
            let (source, own) = match guard.as_mut().and_then(|g| g.current(&db.store)) {
                Some(txn) => (open_source(txn, table, &access).await?, None),
                None => {
                    let txn = db.store.begin();
                    (open_source(&txn, table, &access).await?, Some(txn))
                }
            };
            drop(guard);
            Ok::<_, DataFusionError>(ScanState {
                _own: own,
                source,
                decoder,
                remaining,
                schema: out_schema,
                table: table_name,
            })
        };
        use futures::StreamExt;
        let batches = futures::stream::once(start).flat_map(|state| match state {
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            Ok(state) => futures::stream::try_unfold(state, |mut s| async move {
                Ok(s.next_batch().await?.map(|b| (b, s)))
            })
            .boxed(),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
