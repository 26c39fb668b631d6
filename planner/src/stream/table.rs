//! The DataFusion `TableProvider` for a stream: the user's columns followed by the hidden
//! columns `_partition`, `_offset`, `_timestamp` and `_key`.
//!
//! Filters on `_partition` and `_offset` against constants are applied exactly by the scan
//! (partition pruning and an offset range), so DataFusion may also push a LIMIT into it.
//! Filters on `_timestamp` become a seek to the first offset at or after the lower bound
//! (via the log's time index); they stay `Inexact` because user-supplied timestamps need not
//! be monotonic.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int32Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session as DfSession;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

use super::log::StreamLog;
use super::scan::{ScanBounds, StreamScanExec};
use super::sink::{StreamSink, StreamWriter};
use super::txn::TxnBuffer;
use super::{COL_KEY, COL_OFFSET, COL_PARTITION, COL_TIMESTAMP};
use crate::catalog::TableDef;
use crate::error::Error;
use crate::types::UTC;

/// A stream as a DataFusion table.
#[derive(Debug)]
pub struct StreamTable {
    pub def: Arc<TableDef>,
    pub log: Arc<dyn StreamLog>,
    schema: SchemaRef,
}

/// The full schema of a stream: user columns then hidden columns. Hidden columns are nullable
/// so that an INSERT may leave them out.
pub fn stream_schema(def: &TableDef) -> SchemaRef {
    let mut fields: Vec<Field> = def
        .columns
        .iter()
        .map(|c| c.ty.arrow_field(&c.name, c.nullable))
        .collect();
    fields.push(Field::new(COL_PARTITION, DataType::Int32, true));
    fields.push(Field::new(COL_OFFSET, DataType::Int64, true));
    fields.push(Field::new(
        COL_TIMESTAMP,
        DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC))),
        true,
    ));
    fields.push(Field::new(COL_KEY, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

impl StreamTable {
    pub fn new(def: Arc<TableDef>, log: Arc<dyn StreamLog>) -> Self {
        let schema = stream_schema(&def);
        StreamTable { def, log, schema }
    }

    pub fn writer(&self) -> StreamWriter {
        StreamWriter {
            def: self.def.clone(),
            log: self.log.clone(),
        }
    }
}

/// A filter the scan understands: a hidden column compared with a constant.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    Partition(Operator, i64),
    Offset(Operator, i64),
    Timestamp(Operator, i64),
}

fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq => Operator::Eq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

/// The integer (or microsecond timestamp) inside a literal.
fn literal_i64(e: &Expr) -> Option<i64> {
    let v = match e {
        Expr::Literal(v, _) => v,
        Expr::Cast(c) => return literal_i64(&c.expr),
        Expr::TryCast(c) => return literal_i64(&c.expr),
        _ => return None,
    };
    match v {
        ScalarValue::Int8(Some(x)) => Some(i64::from(*x)),
        ScalarValue::Int16(Some(x)) => Some(i64::from(*x)),
        ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::UInt8(Some(x)) => Some(i64::from(*x)),
        ScalarValue::UInt16(Some(x)) => Some(i64::from(*x)),
        ScalarValue::UInt32(Some(x)) => Some(i64::from(*x)),
        ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
        ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampNanosecond(Some(x), _) => Some(x.div_euclid(1_000)),
        _ => None,
    }
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn make_bound(col: &str, op: Operator, v: i64) -> Option<Bound> {
    match col {
        COL_PARTITION => Some(Bound::Partition(op, v)),
        COL_OFFSET => Some(Bound::Offset(op, v)),
        COL_TIMESTAMP => Some(Bound::Timestamp(op, v)),
        _ => None,
    }
}

/// The bounds one filter expression gives, or `None` if the scan cannot use it.
fn bounds_of(e: &Expr) -> Option<Vec<Bound>> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if let (Some(c), Some(v)) = (column_name(left), literal_i64(right)) {
                flip(*op)?; // only comparison operators
                return make_bound(c, *op, v).map(|b| vec![b]);
            }
            if let (Some(v), Some(c)) = (literal_i64(left), column_name(right)) {
                return make_bound(c, flip(*op)?, v).map(|b| vec![b]);
            }
            None
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let c = column_name(expr)?;
            let lo = literal_i64(low)?;
            let hi = literal_i64(high)?;
            Some(vec![
                make_bound(c, Operator::GtEq, lo)?,
                make_bound(c, Operator::LtEq, hi)?,
            ])
        }
        _ => None,
    }
}

fn in_list_partitions(e: &Expr) -> Option<Vec<i64>> {
    if let Expr::InList(l) = e {
        if l.negated || column_name(&l.expr) != Some(COL_PARTITION) {
            return None;
        }
        return l.list.iter().map(literal_i64).collect();
    }
    None
}

/// Folds pushed-down filters into scan bounds.
pub(crate) fn scan_bounds(filters: &[Expr], partitions: u32) -> ScanBounds {
    let mut b = ScanBounds::all(partitions);
    for f in filters {
        if let Some(list) = in_list_partitions(f) {
            b.partitions.retain(|p| list.contains(&i64::from(*p)));
            continue;
        }
        for bound in bounds_of(f).unwrap_or_default() {
            match bound {
                Bound::Partition(op, v) => b.partitions.retain(|p| {
                    let p = i64::from(*p);
                    match op {
                        Operator::Eq => p == v,
                        Operator::Lt => p < v,
                        Operator::LtEq => p <= v,
                        Operator::Gt => p > v,
                        Operator::GtEq => p >= v,
                        _ => true,
                    }
                }),
                Bound::Offset(op, v) => {
                    let (lo, hi) = match op {
                        Operator::Eq => (Some(v), Some(v.saturating_add(1))),
                        Operator::Lt => (None, Some(v)),
                        Operator::LtEq => (None, Some(v.saturating_add(1))),
                        Operator::Gt => (Some(v.saturating_add(1)), None),
                        Operator::GtEq => (Some(v), None),
                        _ => (None, None),
                    };
                    if let Some(lo) = lo {
                        b.offset_start = b.offset_start.max(lo.max(0) as u64);
                    }
                    if let Some(hi) = hi {
                        let hi = hi.max(0) as u64;
                        b.offset_end = Some(b.offset_end.map_or(hi, |e| e.min(hi)));
                    }
                }
                Bound::Timestamp(op, v) => match op {
                    Operator::Eq | Operator::GtEq => {
                        b.timestamp_start = Some(b.timestamp_start.map_or(v, |t| t.max(v)))
                    }
                    Operator::Gt => {
                        let v = v.saturating_add(1);
                        b.timestamp_start = Some(b.timestamp_start.map_or(v, |t| t.max(v)))
                    }
                    _ => {}
                },
            }
        }
    }
    b
}

/// The rows of `batch` (a stream's full schema) whose `_partition` is in `partitions`.
fn keep_partitions(batch: &RecordBatch, partitions: &[u32]) -> DfResult<RecordBatch> {
    let Some(column) = batch
        .column_by_name(COL_PARTITION)
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
    else {
        return Ok(batch.clone());
    };
    let keep: datafusion::arrow::array::BooleanArray = column
        .iter()
        .map(|p| Some(p.is_some_and(|p| partitions.contains(&(p as u32)))))
        .collect();
    Ok(filter_record_batch(batch, &keep)?)
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if in_list_partitions(f).is_some() {
                    return TableProviderFilterPushDown::Exact;
                }
                match bounds_of(f) {
                    Some(bounds) if bounds.iter().all(|b| !matches!(b, Bound::Timestamp(..))) => {
                        TableProviderFilterPushDown::Exact
                    }
                    Some(_) => TableProviderFilterPushDown::Inexact,
                    None => TableProviderFilterPushDown::Unsupported,
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let bounds = scan_bounds(filters, self.log.partitions());
        // Rows the session's open block holds for this stream come after the stored ones.
        // The filters the scan applies exactly apply to them here: any `_offset` bound leaves
        // none (theirs is NULL), `_partition` ones keep the rows of the partitions kept.
        let offset_bounded = filters.iter().any(|f| {
            bounds_of(f).is_some_and(|b| b.iter().any(|x| matches!(x, Bound::Offset(..))))
        });
        let held: Vec<RecordBatch> = match state.config().get_extension::<TxnBuffer>() {
            Some(txn) if !offset_bounded => txn
                .shown_rows(self.def.id)
                .into_iter()
                .map(|b| keep_partitions(&b, &bounds.partitions))
                .collect::<DfResult<_>>()?,
            _ => Vec::new(),
        };
        let stored: Arc<dyn ExecutionPlan> = Arc::new(StreamScanExec::new(
            self.def.clone(),
            self.log.clone(),
            self.schema.clone(),
            projection.clone(),
            bounds,
            limit,
        )?);
        if held.iter().all(|b| b.num_rows() == 0) {
            return Ok(stored);
        }
        let held =
            MemorySourceConfig::try_new_exec(&[held], self.schema.clone(), Some(projection))?;
        UnionExec::try_new(vec![stored, held])
    }

    async fn insert_into(
        &self,
        state: &dyn DfSession,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(Error::Unsupported(format!(
                "streams are append-only: {insert_op} is not supported on stream \"{}\"",
                self.def.name
            ))
            .into_datafusion());
        }
        let sink = StreamSink {
            writer: self.writer(),
            schema: self.schema.clone(),
            txn: state.config().get_extension::<super::txn::TxnBuffer>(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}
