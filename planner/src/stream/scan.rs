//! `StreamScanExec`: reads a stream's partitions in parallel, one DataFusion output partition
//! per log partition, from a seek position to the end offset seen when the scan starts (so a
//! scan is a consistent snapshot and terminates while writers keep appending).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use super::log::{StoredRecord, StreamLog};
use crate::catalog::TableDef;
use crate::error::Error;
use crate::rowcodec::RowDecoder;
use crate::types::UTC;

/// Bytes asked of the log per read call.
const READ_BYTES_MAX: usize = 1 << 20;
/// Rows per output batch (at most).
const BATCH_ROWS_MAX: usize = 8192;

/// What the pushed-down filters leave to read.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanBounds {
    pub partitions: Vec<u32>,
    /// First offset to read in every partition.
    pub offset_start: u64,
    /// Offset to stop before, if bounded.
    pub offset_end: Option<u64>,
    /// Seek each partition to the first record with a timestamp at or after this (µs).
    pub timestamp_start: Option<i64>,
}

impl ScanBounds {
    pub fn all(partitions: u32) -> Self {
        ScanBounds {
            partitions: (0..partitions).collect(),
            offset_start: 0,
            offset_end: None,
            timestamp_start: None,
        }
    }
}

#[derive(Debug)]
pub struct StreamScanExec {
    def: Arc<TableDef>,
    log: Arc<dyn StreamLog>,
    /// Full table schema, and the projected one this plan produces.
    table_schema: SchemaRef,
    projection: Vec<usize>,
    bounds: ScanBounds,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl StreamScanExec {
    pub fn new(
        def: Arc<TableDef>,
        log: Arc<dyn StreamLog>,
        table_schema: SchemaRef,
        projection: Vec<usize>,
        bounds: ScanBounds,
        limit: Option<usize>,
    ) -> DfResult<Self> {
        let schema = Arc::new(table_schema.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(bounds.partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(StreamScanExec {
            def,
            log,
            table_schema,
            projection,
            bounds,
            limit,
            properties,
        })
    }
}

impl DisplayAs for StreamScanExec {
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
            "StreamScanExec: stream={}, partitions={:?}",
            self.def.name, self.bounds.partitions
        )?;
        if self.bounds.offset_start > 0 || self.bounds.offset_end.is_some() {
            write!(f, ", offsets=[{}, ", self.bounds.offset_start)?;
            match self.bounds.offset_end {
                Some(e) => write!(f, "{e})")?,
                None => write!(f, "end)")?,
            }
        }
        if let Some(ts) = self.bounds.timestamp_start {
            write!(f, ", seek_timestamp>={ts}")?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        write!(f, ", projection=[{}]", names.join(", "))
    }
}

/// One partition's read state.
struct PartitionReader {
    log: Arc<dyn StreamLog>,
    partition: u32,
    next: u64,
    end: u64,
    remaining: usize,
    decoder: Option<RowDecoder>,
    /// For each output column: Some(catalog column index) or the hidden column position.
    outputs: Vec<Output>,
    schema: SchemaRef,
}

#[derive(Clone, Copy)]
enum Output {
    User,
    Partition,
    Offset,
    Timestamp,
    Key,
}

impl PartitionReader {
    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        let mut records: Vec<StoredRecord> = Vec::new();
        while self.next < self.end && self.remaining > 0 && records.len() < BATCH_ROWS_MAX {
            let (batch, next) = self
                .log
                .read(self.partition, self.next, READ_BYTES_MAX)
                .await
                .map_err(Error::into_datafusion)?;
            if batch.is_empty() && next <= self.next {
                // Nothing more is readable right now; stop rather than spin.
                self.next = self.end;
                break;
            }
            for r in batch {
                if r.offset < self.next {
                    continue;
                }
                if r.offset >= self.end || self.remaining == 0 {
                    self.next = self.end;
                    break;
                }
                self.next = r.offset + 1;
                self.remaining -= 1;
                records.push(r);
            }
            self.next = self.next.max(next.min(self.end));
        }
        if records.is_empty() {
            return Ok(None);
        }
        self.build(records).map(Some)
    }

    fn build(&mut self, records: Vec<StoredRecord>) -> DfResult<RecordBatch> {
        let mut user: Vec<ArrayRef> = Vec::new();
        if let Some(dec) = &mut self.decoder {
            for r in &records {
                match &r.value {
                    Some(v) => dec.append(v).map_err(|e| {
                        DataFusionError::External(Box::new(Error::Storage {
                            kind: crate::error::StorageErrorKind::Corruption,
                            message: format!(
                                "could not decode the row at partition {} offset {}: {e}",
                                self.partition, r.offset
                            ),
                        }))
                    })?,
                    None => dec.append_nulls(),
                }
            }
            user = dec.finish();
        }
        let mut user = user.into_iter();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.outputs.len());
        for out in &self.outputs {
            let a: ArrayRef = match out {
                Output::User => user
                    .next()
                    .ok_or_else(|| DataFusionError::Internal("missing decoded column".into()))?,
                Output::Partition => {
                    Arc::new(Int32Array::from(vec![self.partition as i32; records.len()]))
                }
                Output::Offset => Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.offset as i64),
                )),
                Output::Timestamp => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        records.iter().map(|r| r.timestamp),
                    )
                    .with_timezone(UTC),
                ),
                Output::Key => Arc::new(StringArray::from_iter(records.iter().map(|r| {
                    r.key
                        .as_ref()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                }))),
            };
            columns.push(a);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(records.len()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

impl ExecutionPlan for StreamScanExec {
    fn name(&self) -> &str {
        "StreamScanExec"
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

    /// Row counts from the partitions' offsets, so `count(*)` needs no scan. Exact when the
    /// offsets between start and end are dense (delete cleanup, no timestamp seek); compaction
    /// leaves holes, so there the count is only an upper bound.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema());
        let partitions: Vec<u32> = match args.partition() {
            Some(i) => self.bounds.partitions.get(i).copied().into_iter().collect(),
            None => self.bounds.partitions.clone(),
        };
        let mut rows = 0usize;
        for p in partitions {
            let (Ok(start), Ok(end)) = (self.log.start_offset(p), self.log.end_offset(p)) else {
                return Ok(Arc::new(stats));
            };
            let from = start.max(self.bounds.offset_start);
            let to = self.bounds.offset_end.map_or(end, |e| e.min(end));
            rows =
                rows.saturating_add(usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX));
        }
        if let Some(l) = self.limit {
            rows = rows.min(l);
        }
        let dense = self
            .def
            .stream_options()
            .is_none_or(|o| o.cleanup != super::options::Cleanup::Compact);
        stats.num_rows = if dense && self.bounds.timestamp_start.is_none() {
            Precision::Exact(rows)
        } else {
            Precision::Inexact(rows)
        };
        Ok(Arc::new(stats))
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema();
        let user_cols = self.def.columns.len();
        let mut user_projection = Vec::new();
        let mut outputs = Vec::new();
        for &i in &self.projection {
            if i < user_cols {
                user_projection.push(i);
                outputs.push(Output::User);
            } else {
                outputs.push(match i - user_cols {
                    0 => Output::Partition,
                    1 => Output::Offset,
                    2 => Output::Timestamp,
                    _ => Output::Key,
                });
            }
        }
        let decoder = (!user_projection.is_empty())
            .then(|| RowDecoder::new(&self.def.column_types(), &user_projection));
        let log_partition = self.bounds.partitions.get(partition).copied();
        let log = self.log.clone();
        let bounds = self.bounds.clone();
        let limit = self.limit.unwrap_or(usize::MAX);
        let out_schema = schema.clone();
        let stream = futures::stream::once(async move {
            let Some(p) = log_partition else {
                return Ok::<_, DataFusionError>(None);
            };
            let to_df = Error::into_datafusion;
            let start = log.start_offset(p).map_err(to_df)?;
            let end_now = log.end_offset(p).map_err(to_df)?;
            let mut next = start.max(bounds.offset_start);
            if let Some(ts) = bounds.timestamp_start {
                match log.offset_for_timestamp(p, ts).await.map_err(to_df)? {
                    Some(o) => next = next.max(o),
                    None => next = end_now,
                }
            }
            let end = bounds.offset_end.map_or(end_now, |e| e.min(end_now));
            Ok(Some(PartitionReader {
                log,
                partition: p,
                next,
                end,
                remaining: limit,
                decoder,
                outputs,
                schema: out_schema,
            }))
        });
        use futures::StreamExt;
        let batches = stream.flat_map(|reader| match reader {
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            Ok(None) => futures::stream::empty().boxed(),
            Ok(Some(reader)) => futures::stream::try_unfold(reader, |mut r| async move {
                Ok(r.next_batch().await?.map(|b| (b, r)))
            })
            .boxed(),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
