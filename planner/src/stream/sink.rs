//! Turning Arrow batches into log records and appending them durably.
//!
//! A row becomes one record: the value is the row in the [`crate::rowcodec`] format, the key
//! is the `partition_key` column as text (or the `_key` column when the stream has no
//! partition key), the timestamp is `_timestamp` when given, else the time of the append.
//! An explicit `_partition` picks the partition; otherwise the key hashes to one, and rows
//! without a key go round-robin.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Int32Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;

use braid_ingest::storage::log::{BatchBuilder, EncodedBatch};

use super::log::StreamLog;
use super::{COL_KEY, COL_PARTITION, COL_TIMESTAMP};
use crate::catalog::TableDef;
use crate::error::{Error, Result};
use crate::rowcodec::encode_row;
use crate::types::ColumnType;

/// Most encoded bytes sent to the log in one append call.
const APPEND_BYTES_MAX: usize = 4 << 20;

/// Room a new batch makes for each row it expects, before it knows the rows' sizes.
const ROW_BYTES_GUESS: usize = 128;

/// Wall clock in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Rows checked and encoded as log records, grouped by partition, not yet appended.
///
/// Each row is encoded once, straight into the record batch its partition will append (the
/// log's own format, checksummed as it is filled), so appending it later only hands bytes to
/// the log's writer.
#[derive(Debug, Default)]
pub struct Staged {
    per_partition: Vec<PartitionBatches>,
    rows: u64,
    bytes: usize,
}

/// One partition's staged records, in batches of at most about [`APPEND_BYTES_MAX`]; the
/// last one is being filled.
#[derive(Debug, Default)]
struct PartitionBatches(Vec<BatchBuilder>);

fn too_large(e: String) -> Error {
    Error::ProgramLimit(e)
}

impl Staged {
    pub fn new(partitions: u32) -> Self {
        Staged {
            per_partition: (0..partitions)
                .map(|_| PartitionBatches::default())
                .collect(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Moves `other`'s records in after this one's.
    pub fn absorb(&mut self, other: Staged) {
        if self.per_partition.len() < other.per_partition.len() {
            self.per_partition
                .resize_with(other.per_partition.len(), PartitionBatches::default);
        }
        for (mine, theirs) in self.per_partition.iter_mut().zip(other.per_partition) {
            // Batches keep their order; this one's last batch is no longer filled.
            mine.0.extend(theirs.0);
        }
        self.rows += other.rows;
        self.bytes += other.bytes;
    }

    /// Rows staged so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Key and value bytes staged so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Writes rows into one stream.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    pub def: Arc<TableDef>,
    pub log: Arc<dyn StreamLog>,
}

fn column_by_name<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    batch
        .schema()
        .index_of(name)
        .ok()
        .and_then(|i| batch.columns().get(i))
}

fn to_type(a: &ArrayRef, t: &DataType, what: &str) -> Result<ArrayRef> {
    if a.data_type() == t {
        return Ok(a.clone());
    }
    cast(a, t).map_err(|e| Error::InvalidInput(format!("invalid value for {what}: {e}")))
}

impl StreamWriter {
    /// Appends every row of `batch` (columns matched by name; missing user columns are NULL)
    /// and returns once all are durable.
    pub async fn append_batch(&self, batch: &RecordBatch) -> Result<u64> {
        let mut staged = Staged::new(self.log.partitions());
        self.encode_batch(batch, &mut staged)?;
        self.append_staged(staged).await
    }

    /// Checks and encodes every row of `batch` into `staged` without appending anything, so a
    /// caller can validate a whole load before the first record reaches the log.
    pub fn encode_batch(&self, batch: &RecordBatch, staged: &mut Staged) -> Result<()> {
        self.encode_rows(batch, staged, None).map(|_| ())
    }

    /// [`encode_batch`](Self::encode_batch), and the rows as a scan of the stream shows them
    /// (its full schema): for rows a transaction block holds until COMMIT, which the block's
    /// own reads see. `_offset` is NULL until the rows are appended.
    pub fn encode_batch_shown(
        &self,
        batch: &RecordBatch,
        staged: &mut Staged,
    ) -> Result<RecordBatch> {
        let mut placed = Vec::with_capacity(batch.num_rows());
        let (mut columns, key) = self.encode_rows(batch, staged, Some(&mut placed))?;
        let rows = batch.num_rows();
        let partitions: Int32Array = placed.iter().map(|(p, _)| Some(*p as i32)).collect();
        let timestamps =
            TimestampMicrosecondArray::from_iter_values(placed.iter().map(|(_, t)| *t))
                .with_timezone(crate::types::UTC);
        columns.push(Arc::new(partitions));
        columns.push(datafusion::arrow::array::new_null_array(
            &DataType::Int64,
            rows,
        ));
        columns.push(Arc::new(timestamps));
        columns.push(match key {
            Some(k) => k,
            None => datafusion::arrow::array::new_null_array(&DataType::Utf8, rows),
        });
        RecordBatch::try_new(super::table::stream_schema(&self.def), columns)
            .map_err(|e| Error::DataFusion(e.into()))
    }

    /// Encodes every row of `batch` into `staged`; returns the user columns (as the stream's
    /// types) and the key column, and fills `placed` with each row's partition and timestamp.
    fn encode_rows(
        &self,
        batch: &RecordBatch,
        staged: &mut Staged,
        mut placed: Option<&mut Vec<(u32, i64)>>,
    ) -> Result<(Vec<ArrayRef>, Option<ArrayRef>)> {
        let rows = batch.num_rows();
        if rows == 0 {
            let columns = self
                .def
                .columns
                .iter()
                .map(|c| datafusion::arrow::array::new_null_array(&c.ty.arrow_type(), 0))
                .collect();
            return Ok((columns, None));
        }
        let types: Vec<ColumnType> = self.def.column_types();
        let mut columns = Vec::with_capacity(types.len());
        for c in &self.def.columns {
            let arr = match column_by_name(batch, &c.name) {
                Some(a) => to_type(a, &c.ty.arrow_type(), &format!("column \"{}\"", c.name))?,
                None => datafusion::arrow::array::new_null_array(&c.ty.arrow_type(), rows),
            };
            if !c.nullable && arr.null_count() > 0 {
                return Err(Error::NotNullViolation(format!(
                    "null value in column \"{}\" of stream \"{}\" violates not-null constraint",
                    c.name, self.def.name
                )));
            }
            columns.push(arr);
        }
        let options = self.def.stream_options().cloned().unwrap_or_default();
        let key_col: Option<ArrayRef> = match &options.partition_key {
            Some(k) => column_by_name(batch, k)
                .map(|a| to_type(a, &DataType::Utf8, "the partition key"))
                .transpose()?,
            None => column_by_name(batch, COL_KEY)
                .map(|a| to_type(a, &DataType::Utf8, COL_KEY))
                .transpose()?,
        };
        let ts_col = column_by_name(batch, COL_TIMESTAMP)
            .map(|a| {
                to_type(
                    a,
                    &DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(crate::types::UTC))),
                    COL_TIMESTAMP,
                )
            })
            .transpose()?;
        let part_col = column_by_name(batch, COL_PARTITION)
            .map(|a| to_type(a, &DataType::Int32, COL_PARTITION))
            .transpose()?;

        let partitions = self.log.partitions();
        let per_partition = &mut staged.per_partition;
        per_partition.resize_with(partitions as usize, PartitionBatches::default);
        let keys = key_col.as_ref().map(|k| k.as_string::<i32>());
        let expected_rows = rows.div_ceil(partitions.max(1) as usize);
        for row in 0..rows {
            let key = keys
                .filter(|s| !s.is_null(row))
                .map(|s| s.value(row).as_bytes());
            let timestamp = ts_col.as_ref().and_then(|t| {
                let t = t.as_primitive::<TimestampMicrosecondType>();
                (!t.is_null(row)).then(|| t.value(row))
            });
            let explicit = part_col.as_ref().and_then(|p| {
                let p = p.as_primitive::<Int32Type>();
                (!p.is_null(row)).then(|| p.value(row))
            });
            let partition = match explicit {
                Some(p) if p >= 0 && (p as u32) < partitions => p as u32,
                Some(p) => {
                    return Err(Error::InvalidParameter(format!(
                        "_partition {p} is out of range: stream \"{}\" has partitions 0 to {}",
                        self.def.name,
                        partitions.saturating_sub(1)
                    )))
                }
                None => self.log.partition_for_key(key),
            };
            let Some(target) = per_partition.get_mut(partition as usize) else {
                continue;
            };
            if target
                .0
                .last()
                .is_none_or(|b| b.encoded_len() >= APPEND_BYTES_MAX)
            {
                let mut b = self.log.batch_builder(partition);
                b.reserve(expected_rows.saturating_mul(ROW_BYTES_GUESS));
                target.0.push(b);
            }
            if let Some(batch) = target.0.last_mut() {
                let before = batch.encoded_len();
                batch
                    .push_with(key, timestamp, |out| encode_row(&types, &columns, row, out))
                    .map_err(too_large)?;
                staged.bytes += batch.encoded_len() - before;
                if let Some(placed) = placed.as_deref_mut() {
                    placed.push((partition, timestamp.unwrap_or(batch.default_timestamp())));
                }
            }
        }
        staged.rows += rows as u64;
        Ok((columns, key_col))
    }

    /// Appends staged records, every partition at once, and returns the row count once all
    /// are durable.
    pub async fn append_staged(&self, staged: Staged) -> Result<u64> {
        let mut parts = Vec::new();
        for (p, batches) in staged.per_partition.into_iter().enumerate() {
            let batches: Vec<EncodedBatch> = batches
                .0
                .into_iter()
                .filter(|b| !b.is_empty())
                .map(|b| b.finish(None))
                .collect::<std::result::Result<_, String>>()
                .map_err(too_large)?;
            if !batches.is_empty() {
                parts.push((p as u32, batches));
            }
        }
        let appends = parts
            .into_iter()
            .map(|(p, batches)| self.append_partition(p, batches));
        futures::future::try_join_all(appends).await?;
        Ok(staged.rows)
    }

    async fn append_partition(&self, partition: u32, batches: Vec<EncodedBatch>) -> Result<()> {
        // One after another: a partition's batches must land in order.
        for b in batches {
            self.log.append(partition, b).await?;
        }
        Ok(())
    }
}

/// DataFusion sink for `INSERT INTO stream ...`.
#[derive(Debug)]
pub struct StreamSink {
    pub writer: StreamWriter,
    pub schema: SchemaRef,
    /// The session's transaction block: inside one, rows are held until COMMIT.
    pub txn: Option<Arc<super::txn::TxnBuffer>>,
}

impl DisplayAs for StreamSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StreamSink: stream={}", self.writer.def.name)
    }
}

#[async_trait]
impl DataSink for StreamSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let mut count = 0;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            let held = match &self.txn {
                Some(t) => t
                    .hold(&self.writer, &batch)
                    .map_err(Error::into_datafusion)?,
                None => None,
            };
            count += match held {
                Some(n) => n,
                None => self
                    .writer
                    .append_batch(&batch)
                    .await
                    .map_err(Error::into_datafusion)?,
            };
        }
        Ok(count)
    }
}
