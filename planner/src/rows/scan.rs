//! `RowScanExec`: reads a row table from one snapshot, in key order — whole-key point gets,
//! key ranges, or every row — decoding only the projected columns.
//!
//! Inside a transaction block the scan reads through the block's transaction (its snapshot
//! plus its own writes). Outside one it begins a read-only transaction of its own and keeps
//! it open until the scan ends, so the versions it reads stay readable for its whole run.
//!
//! A full scan, or a scan of one key range, that holds enough bytes is split into key ranges
//! of about equal size ([`RowScanExec::split`]), one DataFusion partition each, so that
//! decoding runs on every core. The partitions read one snapshot: whichever partition starts
//! first opens the scans of all of them at once ([`Opened`]), inside the block's transaction
//! or one read-only transaction they share, and each partition takes its own. So a row is
//! read exactly once, by one partition, at one snapshot, and a block's writes made while the
//! statement runs are seen by no partition.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Bound;
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

use super::key::{KeyAccess, KeyRange};
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
    /// What each partition reads: `access` alone, or the parts it was split into.
    parts: Vec<KeyAccess>,
    /// The scans of the current run, opened together by the first partition to start.
    opened: Arc<tokio::sync::Mutex<Option<Opened>>>,
    properties: Arc<PlanProperties>,
}

/// The scans of one run of the plan, one per partition, each taken by its partition's
/// stream. Dropped once every partition has taken its own, so it never holds a snapshot
/// past the run.
struct Opened {
    /// The run's task context: partitions of one run share it, a new run has another.
    run: std::sync::Weak<TaskContext>,
    own: Option<Arc<Transaction>>,
    sources: Vec<Option<Source>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Opened")
            .field(
                "untaken",
                &self.sources.iter().filter(|s| s.is_some()).count(),
            )
            .finish()
    }
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
        Ok(RowScanExec {
            def,
            db,
            table_schema,
            projection,
            parts: vec![access.clone()],
            access,
            access_desc,
            limit,
            opened: Arc::default(),
            properties: properties(schema, 1),
        })
    }

    /// Splits a full scan, or a scan of one key range, into up to `parts` key ranges of
    /// about equal size, one partition each, when the table holds at least `bytes_min`
    /// bytes in the range (estimated from memory, [`braid_ingest::rows::RowStore::split_keys`]).
    /// A scan with a limit stays whole: its first rows in key order are what a user
    /// expects from `LIMIT` without `ORDER BY`, as from PostgreSQL's sequential scan.
    pub fn split(mut self, parts: usize, bytes_min: u64) -> Self {
        if parts < 2 || self.limit.is_some() {
            return self;
        }
        let (start, end): KeyRange = match &self.access {
            KeyAccess::Full => (Bound::Unbounded, Bound::Unbounded),
            KeyAccess::Ranges(r) => match r.as_slice() {
                [one] => one.clone(),
                _ => return self,
            },
            KeyAccess::Points(_) | KeyAccess::Index { .. } => return self,
        };
        let keys = self.db.store.split_keys(
            self.def.id,
            start.as_ref().map(|k| k.as_slice()),
            end.as_ref().map(|k| k.as_slice()),
            parts,
            bytes_min,
        );
        if keys.is_empty() {
            return self;
        }
        let mut split = Vec::with_capacity(keys.len() + 1);
        let mut lo = start;
        for k in keys {
            split.push(KeyAccess::Ranges(vec![(lo, Bound::Excluded(k.to_vec()))]));
            lo = Bound::Included(k.to_vec());
        }
        split.push(KeyAccess::Ranges(vec![(lo, end)]));
        self.properties = properties(self.properties.eq_properties.schema().clone(), split.len());
        self.parts = split;
        self
    }
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
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
        if self.parts.len() > 1 {
            write!(f, ", split into {} key ranges", self.parts.len())?;
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
    /// The scan's own read-only transaction outside a block (shared by the partitions):
    /// held so its snapshot stays readable until the scan ends.
    _own: Option<Arc<Transaction>>,
    source: Source,
    decoder: RowDecoder,
    remaining: usize,
    schema: SchemaRef,
    table: String,
}

impl ScanState {
    fn corrupt(&self, e: crate::rowcodec::DecodeError) -> DataFusionError {
        Error::Storage {
            kind: StorageErrorKind::Corruption,
            message: format!("could not decode a row of table \"{}\": {e}", self.table),
        }
        .into_datafusion()
    }

    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        let mut n = 0;
        let mut bad = None;
        match &mut self.source {
            Source::Rows(it) => {
                while n < BATCH_ROWS_MAX && self.remaining > 0 {
                    let Some((_, v)) = it.next() else { break };
                    if let Err(e) = self.decoder.append(&v) {
                        bad = Some(e);
                        break;
                    }
                    n += 1;
                    self.remaining -= 1;
                }
            }
            // Rows are decoded straight from the merge's blocks and memtable entries, a
            // batch at a time.
            Source::Scans(scans) => loop {
                let want = (BATCH_ROWS_MAX - n).min(self.remaining);
                if want == 0 {
                    break;
                }
                let Some(s) = scans.front_mut() else { break };
                let decoder = &mut self.decoder;
                let mut visit = |_: &[u8], v: &[u8]| match decoder.append(v) {
                    Ok(()) => true,
                    Err(e) => {
                        bad = Some(e);
                        false
                    }
                };
                let got = s
                    .visit(want, &mut visit)
                    .await
                    .map_err(|e| rows_error(e).into_datafusion())?;
                if bad.is_some() {
                    break;
                }
                if got == 0 {
                    scans.pop_front();
                    continue;
                }
                n += got;
                self.remaining -= got;
            },
        }
        if let Some(e) = bad {
            return Err(self.corrupt(e));
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

/// Partition `partition`'s scan of this run (`run`: the task context every partition of one
/// run is given): taken from the scans the first partition to start opened for every
/// partition, or, when none are open for this run or this partition's was already taken (a
/// new run of the plan), all of them opened now at one snapshot.
async fn take_source(
    opened: &tokio::sync::Mutex<Option<Opened>>,
    partition: usize,
    run: &Arc<TaskContext>,
    block: Option<Arc<RowTxn>>,
    db: &RowsDb,
    table: u64,
    parts: &[KeyAccess],
) -> DfResult<(Source, Option<Arc<Transaction>>)> {
    let mut slot = opened.lock().await;
    let fresh = slot.as_ref().is_none_or(|o| {
        o.run.upgrade().is_none_or(|r| !Arc::ptr_eq(&r, run))
            || o.sources.get(partition).is_none_or(|s| s.is_none())
    });
    if fresh {
        let mut guard = match &block {
            Some(b) => Some(b.lock().await),
            None => None,
        };
        let mut sources = Vec::with_capacity(parts.len());
        let own = match guard.as_mut().and_then(|g| g.current(&db.store)) {
            Some(txn) => {
                for access in parts {
                    sources.push(Some(open_source(txn, table, access).await?));
                }
                None
            }
            None => {
                let txn = db.store.begin();
                for access in parts {
                    sources.push(Some(open_source(&txn, table, access).await?));
                }
                Some(Arc::new(txn))
            }
        };
        drop(guard);
        *slot = Some(Opened {
            run: Arc::downgrade(run),
            own,
            sources,
        });
    }
    let Some(o) = slot.as_mut() else {
        return Err(DataFusionError::Internal("row scan was not opened".into()));
    };
    let source = o
        .sources
        .get_mut(partition)
        .and_then(Option::take)
        .ok_or_else(|| DataFusionError::Internal("row scan partition taken twice".into()))?;
    let own = o.own.clone();
    if o.sources.iter().all(Option::is_none) {
        *slot = None;
    }
    Ok((source, own))
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
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition >= self.parts.len() {
            return Err(DataFusionError::Internal(format!(
                "RowScanExec has {} partitions, partition {partition} was asked for",
                self.parts.len()
            )));
        }
        let schema = self.schema();
        let block = context.session_config().get_extension::<RowTxn>();
        let db = self.db.clone();
        let table = self.def.id;
        let table_name = self.def.name.clone();
        let decoder = StoredLayout::of(&self.def)
            .map_err(Error::into_datafusion)?
            .decoder(
                &self.projection,
                self.limit.map_or(crate::rowcodec::DEFAULT_ROWS, |l| {
                    l.clamp(1, crate::rowcodec::DEFAULT_ROWS)
                }),
            );
        let remaining = self.limit.unwrap_or(usize::MAX);
        let out_schema = schema.clone();
        let parts = self.parts.clone();
        let opened = self.opened.clone();
        let start = async move {
            let (source, own) =
                take_source(&opened, partition, &context, block, &db, table, &parts).await?;
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
                // A batch of a long scan is decoded without an `.await` that waits; yield
                // before each one so the runtime gets to wake an idle worker.
                tokio::task::yield_now().await;
                Ok(s.next_batch().await?.map(|b| (b, s)))
            })
            .boxed(),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
