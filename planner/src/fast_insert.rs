//! The prepared-INSERT fast path: `INSERT INTO stream_or_table [(cols)] VALUES (...), ...`
//! whose values are parameters, constants or expressions of them (`now()` included, as the
//! statement's time).
//!
//! Why: a prepared statement executed through DataFusion is re-analysed, re-optimised and
//! re-planned on every Execute (`with_param_values` then `execute_logical_plan`), about half a
//! millisecond of CPU per single-row INSERT — more than the durable append itself costs when
//! group commit spreads one `fdatasync` over many clients. Here the work DataFusion would repeat
//! is done once at Parse: the VALUES rows are folded into the INSERT's projection (casts to the
//! column types, NULL for left-out columns), parameters become columns of a one-row batch, and
//! each resulting expression is turned into a physical expression. An Execute then evaluates
//! those expressions over the bound values and hands the batch to the same [`StreamWriter`]
//! or [`RowWriter`] the DataFusion sinks use, so rows, errors and durability are the same on
//! both paths. (An INSERT with RETURNING or ON CONFLICT is not taken here.)
//!
//! What must stay true: the batch built here has the schema the INSERT plan's input has, so
//! the writer sees exactly what the planned path would give it; anything this module does not
//! recognise is left to DataFusion (`try_new` returns `None`).

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, Projection, Values, WriteOp};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::rows::point;
use crate::rows::table::RowTable;
use crate::rows::txn::RowTxn;
use crate::rows::write::RowWriter;
use crate::stream::sink::StreamWriter;
use crate::stream::table::StreamTable;
use crate::stream::txn::TxnBuffer;

/// Where a fast-path INSERT writes.
#[derive(Debug, Clone)]
enum Target {
    Stream(StreamWriter),
    Rows(RowWriter),
}

/// A planned-once INSERT into a stream or a row table.
#[derive(Debug, Clone)]
pub(crate) struct FastInsert {
    target: Target,
    /// Schema of the batch handed to the writer (the INSERT plan's input schema).
    schema: SchemaRef,
    /// One field per parameter, `$1` first, then `$now` when a row calls `now()`.
    params: SchemaRef,
    /// How many parameters the statement takes.
    parameters: usize,
    /// The type of `now()` in this statement, when a row calls it.
    now: Option<DataType>,
    /// Per VALUES row, one expression per column of `schema`, over `params`.
    rows: Vec<Vec<Arc<dyn PhysicalExpr>>>,
}

/// Name of the column standing for parameter `$n` (1-based).
fn param_column(n: usize) -> String {
    format!("${n}")
}

impl FastInsert {
    /// Recognises `plan` as a fast-path INSERT. `param_types` are the inferred parameter types,
    /// `$1` first; an uninferred one sends the statement down the planned path.
    pub fn try_new(
        ctx: &SessionContext,
        plan: &LogicalPlan,
        param_types: &[Option<DataType>],
    ) -> Result<Option<FastInsert>> {
        let LogicalPlan::Dml(DmlStatement {
            target,
            op: WriteOp::Insert(InsertOp::Append),
            input,
            ..
        }) = plan
        else {
            return Ok(None);
        };
        let Ok(provider) = source_as_provider(target) else {
            return Ok(None);
        };
        let target = if let Some(stream) = provider.downcast_ref::<StreamTable>() {
            Target::Stream(stream.writer())
        } else if let Some(table) = provider.downcast_ref::<RowTable>() {
            Target::Rows(table.writer())
        } else {
            return Ok(None);
        };
        // The columns the writer gets, as expressions over the VALUES columns.
        let (exprs, values): (Vec<Expr>, &Values) = match input.as_ref() {
            LogicalPlan::Projection(Projection { expr, input, .. }) => match input.as_ref() {
                LogicalPlan::Values(v) => (expr.clone(), v),
                _ => return Ok(None),
            },
            LogicalPlan::Values(v) => (
                v.schema.columns().into_iter().map(Expr::Column).collect(),
                v,
            ),
            _ => return Ok(None),
        };
        let mut fields = Vec::with_capacity(param_types.len());
        for (i, t) in param_types.iter().enumerate() {
            let Some(t) = t else { return Ok(None) };
            fields.push(Field::new(param_column(i + 1), t.clone(), true));
        }
        if exprs
            .iter()
            .chain(values.values.iter().flatten())
            .any(has_subquery)
        {
            return Ok(None);
        }
        // Folded first, planned after: whether `now()` is called decides the input schema.
        let mut now = None;
        let mut folded_rows = Vec::with_capacity(values.values.len());
        for row in &values.values {
            let mut out = Vec::with_capacity(exprs.len());
            for e in &exprs {
                let Some(folded) = fold(e, &values.schema, row)? else {
                    return Ok(None);
                };
                let Some(folded) = point::rewrite(&folded, &mut now) else {
                    return Ok(None);
                };
                out.push(folded);
            }
            folded_rows.push(out);
        }
        if let Some(t) = &now {
            fields.push(Field::new(point::NOW_COLUMN, t.clone(), true));
        }
        let params: SchemaRef = Arc::new(Schema::new(fields));
        let param_df = DFSchema::try_from(params.as_ref().clone())?;
        let state = ctx.state();
        let mut rows = Vec::with_capacity(folded_rows.len());
        for row in folded_rows {
            rows.push(
                row.into_iter()
                    .map(|e| state.create_physical_expr(e, &param_df))
                    .collect::<datafusion::error::Result<Vec<_>>>()?,
            );
        }
        Ok(Some(FastInsert {
            target,
            schema: Arc::new(input.schema().as_arrow().clone()),
            params,
            parameters: param_types.len(),
            now,
            rows,
        }))
    }

    /// Evaluates the rows for `params` and appends them to the stream (or holds them in the
    /// open transaction block `txn`), or inserts them into the row table (in the block
    /// `rows_txn`, or in a transaction of their own committed here); returns the row count
    /// once durable (or held).
    pub async fn execute(
        &self,
        params: Vec<ScalarValue>,
        txn: &TxnBuffer,
        rows_txn: &RowTxn,
    ) -> Result<u64> {
        let batch = self.batch(params)?;
        match &self.target {
            Target::Stream(writer) => {
                if let Some(rows) = txn.hold(writer, &batch)? {
                    return Ok(rows);
                }
                writer.append_batch(&batch).await
            }
            Target::Rows(writer) => writer.insert_batches(rows_txn, &[batch]).await,
        }
    }

    fn batch(&self, mut values: Vec<ScalarValue>) -> Result<RecordBatch> {
        if values.len() != self.parameters {
            return Err(Error::InvalidParameter(format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                values.len(),
                self.parameters
            )));
        }
        if self.now.is_some() {
            values.push(point::statement_time()?);
        }
        let mut columns = Vec::with_capacity(values.len());
        for (v, f) in values.into_iter().zip(self.params.fields()) {
            let a = v.to_array_of_size(1)?;
            columns.push(if a.data_type() == f.data_type() {
                a
            } else {
                cast(&a, f.data_type()).map_err(arrow)?
            });
        }
        let input = RecordBatch::try_new_with_options(
            self.params.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )
        .map_err(arrow)?;
        let width = self.schema.fields().len();
        let mut per_column: Vec<Vec<ArrayRef>> = vec![Vec::with_capacity(self.rows.len()); width];
        for row in &self.rows {
            for ((e, f), out) in row.iter().zip(self.schema.fields()).zip(&mut per_column) {
                let a = e.evaluate(&input)?.into_array(1)?;
                out.push(if a.data_type() == f.data_type() {
                    a
                } else if a.data_type() == &DataType::Null {
                    new_null_array(f.data_type(), 1)
                } else {
                    cast(&a, f.data_type()).map_err(arrow)?
                });
            }
        }
        let columns = per_column
            .iter()
            .map(|parts| {
                if parts.len() == 1 {
                    Ok(parts[0].clone())
                } else {
                    let refs: Vec<&dyn datafusion::arrow::array::Array> =
                        parts.iter().map(|a| a.as_ref()).collect();
                    concat(&refs)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow)?;
        // The plan's nullability is not the writer's concern (it checks NOT NULL itself), so a
        // schema with every field nullable keeps Arrow from rejecting a NULL here first.
        let schema = Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(self.rows.len())),
        )
        .map_err(arrow)
    }
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| {
        Ok(matches!(
            x,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// `e` with each VALUES column replaced by that row's expression and each `$n` by the
/// parameter column; `None` when `e` holds something this path does not handle (a subquery,
/// a column that is not a VALUES column).
fn fold(e: &Expr, values: &DFSchema, row: &[Expr]) -> Result<Option<Expr>> {
    let mut unsupported = false;
    let out = e
        .clone()
        .transform_up(|x| {
            Ok(match x {
                Expr::Column(c) => match values.index_of_column(&c).ok().and_then(|i| row.get(i)) {
                    Some(v) => Transformed::yes(
                        v.clone()
                            .transform_up(|y| {
                                Ok(match y {
                                    Expr::Placeholder(p) => Transformed::yes(Expr::Column(
                                        Column::from_name(p.id.clone()),
                                    )),
                                    other => Transformed::no(other),
                                })
                            })?
                            .data,
                    ),
                    None => {
                        unsupported = true;
                        Transformed::no(Expr::Column(c))
                    }
                },
                Expr::Placeholder(p) => {
                    Transformed::yes(Expr::Column(Column::from_name(p.id.clone())))
                }
                other => Transformed::no(other),
            })
        })?
        .data;
    Ok((!unsupported).then_some(out))
}
