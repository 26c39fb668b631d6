//! The prepared point-statement fast path for row tables: `SELECT exprs FROM t WHERE ...`,
//! `UPDATE t SET ... WHERE ...` and `DELETE FROM t WHERE ...` whose WHERE fixes every primary
//! key column with `=` to a parameter or constant — pgbench's statements, and most of an OLTP
//! application's.
//!
//! Why: a prepared statement run through DataFusion is re-analysed, re-optimised and
//! re-planned on every Execute (`with_param_values`, then the optimizer and the physical
//! planner): about two milliseconds of CPU, where the point read itself costs microseconds.
//! Here the statement is taken apart once, at Parse: its WHERE conjuncts, projection or
//! assignments become physical expressions over the table's columns followed by one column per
//! parameter (and one for `now()`, which DataFusion can only fold, not evaluate). An Execute
//! finds the key — straight from the bound values when each key column is fixed by one
//! `column = $n` or constant, else by binding the values into the conjuncts and running the
//! same [`key_access`] the planned scan uses — reads those rows in the session's transaction
//! (or the statement's own) and evaluates the expressions over them.
//!
//! What must stay true: the rows, errors and writes are those of the planned path. Every WHERE
//! conjunct is evaluated over every row read (the keys only narrow the reads, as the scan's
//! `Inexact` pushdown does) except a `column = $n` the key read itself guarantees; UPDATE and
//! DELETE go through the planned path's own [`RowDmlExec::run`]; and anything not recognised
//! at Parse — or bound values that do not give whole keys at Execute — is left to DataFusion.

use std::sync::Arc;

use braid_ingest::key::encode_key;
use bytes::Bytes;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Cast, DmlStatement, Expr, ExprSchemable, Filter, LogicalPlan, Operator, Projection,
    Volatility, WriteOp,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;

use super::key::{key_access, scalar_key, KeyAccess};
use super::read_rows;
use super::table::RowTable;
use super::txn::RowTxn;
use super::write::{where_mask, DmlOp, RowDmlExec, RowWriter};
use crate::error::{Error, Result};
use crate::session::Output;
use crate::types::ColumnType;

/// Name of the column standing for parameter `$n`: the placeholder's own name.
fn param_column(n: usize) -> String {
    format!("${n}")
}

/// Name of the column standing for `now()`.
pub(crate) const NOW_COLUMN: &str = "$now";

/// A statement planned once for point access by primary key.
#[derive(Debug)]
pub(crate) struct RowPoint {
    writer: RowWriter,
    kind: PointKind,
    /// The WHERE conjuncts that fix a key column (`column = value`), unqualified, with their
    /// `$n` placeholders: bound at Execute to find the keys.
    key_conjuncts: Vec<Expr>,
    /// The same conjuncts over [`RowPoint::input`], all evaluated over every row read.
    filters: Vec<Arc<dyn PhysicalExpr>>,
    /// The table's columns, then one per parameter, then `$now` when the statement calls
    /// `now()`: what every expression here is planned over.
    input: SchemaRef,
    params: usize,
    /// The type `now()` has in this statement, when it calls it.
    now: Option<DataType>,
    /// How to build the key straight from the bound values, when each key column is fixed by
    /// exactly one `column = $n` (or constant): no expression rewriting and no range analysis
    /// on every Execute. `None`: [`bind`] and [`key_access`] do it.
    fast_key: Option<Vec<KeyPart>>,
    /// [`RowPoint::filters`] without the conjuncts a read by [`RowPoint::fast_key`] cannot
    /// fail (`column = $n` of the column's own type, for types whose key bytes are equal
    /// exactly when the values are): what is left to check on the row read.
    residual: Vec<Arc<dyn PhysicalExpr>>,
    /// The table columns a SELECT list names, when it is nothing but table columns of their
    /// own types: with no residual filter the result is those columns as decoded.
    direct: Option<Vec<usize>>,
}

/// One key column of [`RowPoint::fast_key`], in key order.
#[derive(Debug)]
struct KeyPart {
    ty: ColumnType,
    source: KeySource,
    /// The cast the SQL planner put around the value, folded as [`bind`] folds it.
    cast: Option<DataType>,
}

#[derive(Debug)]
enum KeySource {
    /// `$n`, as an index into the bound values.
    Param(usize),
    Literal(ScalarValue),
}

#[derive(Debug)]
enum PointKind {
    Select {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        /// The statement's result schema, as Describe reports it.
        schema: SchemaRef,
    },
    Update(Vec<(usize, Arc<dyn PhysicalExpr>)>),
    Delete,
}

/// Bound parameters (and the statement's `now()`) as extra columns after a table's columns.
#[derive(Debug)]
pub(crate) struct BoundParams {
    /// The table's columns, then the extra ones.
    schema: SchemaRef,
    values: Vec<ScalarValue>,
}

impl BoundParams {
    /// `batch` (the table's columns) with the bound values appended, one per row.
    pub(crate) fn extend(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for v in &self.values {
            columns.push(v.to_array_of_size(n)?);
        }
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}

/// The table scanned: a scan of a row table with nothing pushed into it yet (as the SQL
/// planner leaves it), possibly under an alias.
fn row_scan(plan: &LogicalPlan) -> Option<RowWriter> {
    let scan = match plan {
        LogicalPlan::TableScan(s) => s,
        LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
            LogicalPlan::TableScan(s) => s,
            _ => return None,
        },
        _ => return None,
    };
    if scan.projection.is_some() || !scan.filters.is_empty() || scan.fetch.is_some() {
        return None;
    }
    let provider = source_as_provider(&scan.source).ok()?;
    Some(provider.downcast_ref::<RowTable>()?.writer())
}

/// `e` as planned over the input schema: columns unqualified, `$n` as the parameter's column,
/// `now()` as [`NOW_COLUMN`]. `None` when `e` holds what a one-row evaluation cannot give the
/// planned path's answer for: a subquery, an aggregate or window, or a function that is
/// neither immutable nor `now()`.
pub(crate) fn rewrite(e: &Expr, now: &mut Option<DataType>) -> Option<Expr> {
    let mut unsupported = false;
    let out = e
        .clone()
        .transform_up(|x| {
            Ok(match x {
                Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
                Expr::Placeholder(p) => {
                    Transformed::yes(Expr::Column(Column::new_unqualified(p.id)))
                }
                Expr::ScalarFunction(ScalarFunction { func, args })
                    if func.signature().volatility != Volatility::Immutable =>
                {
                    let call = Expr::ScalarFunction(ScalarFunction {
                        func: func.clone(),
                        args: args.clone(),
                    });
                    match call.get_type(&DFSchema::empty()) {
                        Ok(t) if func.name() == "now" && args.is_empty() => {
                            *now = Some(t);
                            Transformed::yes(Expr::Column(Column::new_unqualified(NOW_COLUMN)))
                        }
                        _ => {
                            unsupported = true;
                            Transformed::no(call)
                        }
                    }
                }
                Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
                | Expr::OuterReferenceColumn(..)
                | Expr::Unnest(_) => {
                    unsupported = true;
                    Transformed::no(x)
                }
                other => Transformed::no(other),
            })
        })
        .ok()?
        .data;
    (!unsupported).then_some(out)
}

/// `e` with qualifiers dropped (placeholders kept), for [`key_access`] at Execute.
fn unqualified(e: &Expr) -> Option<Expr> {
    e.clone()
        .transform_up(|x| {
            Ok(match x {
                Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
                other => Transformed::no(other),
            })
        })
        .ok()
        .map(|t| t.data)
}

/// True when some conjunct is `column = value` (either way round) with a value that holds no
/// column: a parameter, a constant, or an expression of those.
fn fixes_column(conjuncts: &[Expr], column: &str) -> bool {
    let is_col = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    let constant = |e: &Expr| e.column_refs().is_empty();
    conjuncts.iter().any(|c| match c {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => (is_col(left) && constant(right)) || (is_col(right) && constant(left)),
        _ => false,
    })
}

/// `e` with `$n` replaced by its bound value and casts of constants folded, so [`key_access`]
/// sees `column = literal`.
fn bind(e: &Expr, params: &[ScalarValue]) -> Result<Expr> {
    Ok(e.clone()
        .transform_up(|x| {
            Ok(match x {
                Expr::Placeholder(p) => {
                    let v =
                        p.id.strip_prefix('$')
                            .and_then(|n| n.parse::<usize>().ok())
                            .and_then(|n| n.checked_sub(1))
                            .and_then(|i| params.get(i));
                    match v {
                        Some(v) => Transformed::yes(Expr::Literal(v.clone(), None)),
                        None => Transformed::no(Expr::Placeholder(p)),
                    }
                }
                Expr::Cast(Cast { expr, field }) => match expr.as_ref() {
                    Expr::Literal(v, _) => match v.cast_to(field.data_type()) {
                        Ok(v) => Transformed::yes(Expr::Literal(v, None)),
                        Err(_) => Transformed::no(Expr::Cast(Cast { expr, field })),
                    },
                    _ => Transformed::no(Expr::Cast(Cast { expr, field })),
                },
                other => Transformed::no(other),
            })
        })?
        .data)
}

impl RowPoint {
    /// Recognises `plan` (as the SQL planner made it, before optimisation) as a point
    /// statement. `param_types` are the inferred parameter types, `$1` first; an uninferred
    /// one leaves the statement to DataFusion.
    pub fn try_new(
        ctx: &SessionContext,
        plan: &LogicalPlan,
        param_types: &[Option<DataType>],
    ) -> Result<Option<RowPoint>> {
        // (the SELECT list or None, the assignments' projection or None, the filter)
        let (select, update, filter, delete) = match plan {
            LogicalPlan::Projection(Projection { expr, input, .. }) => match input.as_ref() {
                LogicalPlan::Filter(f) => (Some(expr), None, f, false),
                _ => return Ok(None),
            },
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Update,
                input,
                ..
            }) => match input.as_ref() {
                LogicalPlan::Projection(Projection { expr, input, .. }) => match input.as_ref() {
                    LogicalPlan::Filter(f) => (None, Some(expr), f, false),
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            },
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Delete,
                input,
                ..
            }) => match input.as_ref() {
                LogicalPlan::Filter(f) => (None, None, f, true),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let Filter {
            predicate, input, ..
        } = filter;
        let Some(writer) = row_scan(input) else {
            return Ok(None);
        };
        if writer.layout.hidden() || writer.def.columns.iter().any(|c| c.name.starts_with('$')) {
            return Ok(None);
        }
        let Some(conjuncts) = split_conjunction(predicate)
            .into_iter()
            .map(unqualified)
            .collect::<Option<Vec<Expr>>>()
        else {
            return Ok(None);
        };
        if !writer
            .layout
            .columns
            .iter()
            .all(|(_, _, name)| fixes_column(&conjuncts, name))
        {
            return Ok(None);
        }

        // The input schema: table columns, parameters, then `$now` if used.
        let mut now = None;
        let mut rw = |e: &Expr| rewrite(e, &mut now);
        let Some(filters) = conjuncts.iter().map(&mut rw).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let select = match select {
            Some(exprs) => match exprs.iter().map(&mut rw).collect::<Option<Vec<_>>>() {
                Some(v) => Some(v),
                None => return Ok(None),
            },
            None => None,
        };
        let mut assignments = Vec::new();
        if let Some(exprs) = update {
            for e in exprs {
                // The SQL planner aliases each SET expression with its column's name and
                // leaves the other columns as plain column references.
                let Expr::Alias(a) = e else { continue };
                if matches!(a.expr.as_ref(), Expr::Column(c) if c.name == a.name) {
                    continue;
                }
                let Some(i) = writer.def.columns.iter().position(|c| c.name == a.name) else {
                    return Ok(None);
                };
                let Some(r) = rw(&a.expr) else {
                    return Ok(None);
                };
                assignments.push((i, r));
            }
        }

        let mut fields: Vec<Field> = writer
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        for (i, t) in param_types.iter().enumerate() {
            let Some(t) = t else { return Ok(None) };
            fields.push(Field::new(param_column(i + 1), t.clone(), true));
        }
        if let Some(t) = &now {
            fields.push(Field::new(NOW_COLUMN, t.clone(), true));
        }
        let input_schema: SchemaRef = Arc::new(Schema::new(fields));
        let input_df = DFSchema::try_from(input_schema.as_ref().clone())?;
        let state = ctx.state();
        let physical = |e: Expr| state.create_physical_expr(e, &input_df);
        let filters = filters
            .into_iter()
            .map(physical)
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let kind = if let Some(exprs) = select {
            let exprs = exprs
                .into_iter()
                .map(physical)
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            PointKind::Select {
                schema: result_schema(plan.schema().as_arrow(), &exprs, &input_schema)?,
                exprs,
            }
        } else if delete {
            PointKind::Delete
        } else {
            PointKind::Update(
                assignments
                    .into_iter()
                    .map(|(i, e)| Ok((i, physical(e)?)))
                    .collect::<datafusion::error::Result<Vec<_>>>()?,
            )
        };
        let key_conjuncts = conjuncts
            .iter()
            .filter(|c| {
                writer
                    .layout
                    .columns
                    .iter()
                    .any(|(_, _, name)| fixes_column(std::slice::from_ref(*c), name))
            })
            .cloned()
            .collect();
        let fast_key = fast_key_plan(&writer, &conjuncts);
        let residual = match &fast_key {
            Some(_) => filters
                .iter()
                .zip(&conjuncts)
                .filter(|(_, c)| !exact_key_conjunct(&writer, c, param_types))
                .map(|(f, _)| f.clone())
                .collect(),
            None => filters.clone(),
        };
        let direct = match &kind {
            PointKind::Select { exprs, schema } => direct_columns(&writer, exprs, schema),
            _ => None,
        };
        Ok(Some(RowPoint {
            writer,
            kind,
            key_conjuncts,
            filters,
            input: input_schema,
            params: param_types.len(),
            now,
            fast_key,
            residual,
            direct,
        }))
    }

    /// Runs the statement with `params` in the session's block `block`; `None` when the bound
    /// values do not name whole keys (a NULL, a value of another type), and the planned path
    /// must run it.
    pub async fn execute(
        &self,
        params: &[ScalarValue],
        block: &Arc<RowTxn>,
    ) -> Result<Option<Output>> {
        if params.len() != self.params {
            return Err(Error::InvalidParameter(format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                params.len(),
                self.params
            )));
        }
        let (access, filters) = match self.fast_key.as_deref().and_then(|k| key_of(k, params)) {
            Some(key) => (KeyAccess::Points(vec![key]), &self.residual),
            None => {
                let bound = self
                    .key_conjuncts
                    .iter()
                    .map(|c| bind(c, params))
                    .collect::<Result<Vec<_>>>()?;
                let (access, _) = key_access(&self.writer.layout, &bound);
                if !matches!(access, KeyAccess::Points(_)) {
                    return Ok(None);
                }
                (access, &self.filters)
            }
        };
        if let (PointKind::Select { schema, .. }, Some(columns), true) =
            (&self.kind, &self.direct, filters.is_empty())
        {
            // Nothing to evaluate: the result is the named columns of the row read.
            let rows = self.read(&access, block).await?;
            let (columns, n) = self
                .writer
                .decode_columns(columns, rows.iter().map(|(_, v)| v))?;
            let out = RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .map_err(|e| Error::DataFusion(e.into()))?;
            return Ok(Some(Output::Rows {
                schema: schema.clone(),
                stream: one_batch(schema.clone(), out),
                tag: "SELECT",
            }));
        }
        let bound = self.bound_params(params.to_vec())?;
        let (op, tag) = match &self.kind {
            PointKind::Update(assignments) => (DmlOp::Update(assignments.clone()), "UPDATE"),
            PointKind::Delete => (DmlOp::Delete, "DELETE"),
            PointKind::Select { .. } => {
                return self.select(access, filters, &bound, block).await.map(Some)
            }
        };
        let (n, _) = RowDmlExec::run(
            self.writer.clone(),
            op,
            filters.clone(),
            access,
            Some(block.clone()),
            false,
            Some(&bound),
        )
        .await?;
        Ok(Some(Output::Command {
            tag: tag.into(),
            rows: Some(n),
        }))
    }

    /// The rows `access` names, read in the session's block (or a snapshot of their own).
    async fn read(&self, access: &KeyAccess, block: &Arc<RowTxn>) -> Result<Vec<(Bytes, Bytes)>> {
        let store = &self.writer.db.store;
        let mut guard = block.lock().await;
        match guard.current(store) {
            Some(txn) => read_rows(txn, self.writer.def.id, access).await,
            None => {
                let txn = store.begin();
                let rows = read_rows(&txn, self.writer.def.id, access).await;
                txn.rollback();
                rows
            }
        }
    }

    /// A point SELECT: the named rows read in the session's block (or a snapshot of their
    /// own), then the WHERE and the select list evaluated over them.
    async fn select(
        &self,
        access: KeyAccess,
        filters: &[Arc<dyn PhysicalExpr>],
        bound: &BoundParams,
        block: &Arc<RowTxn>,
    ) -> Result<Output> {
        let PointKind::Select { exprs, schema } = &self.kind else {
            return Err(Error::DataFusion(
                datafusion::error::DataFusionError::Internal(
                    "a point statement that is not a SELECT was run as one".into(),
                ),
            ));
        };
        let rows = self.read(&access, block).await?;
        let all: Vec<usize> = (0..self.writer.def.columns.len()).collect();
        let batch = self.writer.decode(&all, rows.iter().map(|(_, v)| v))?;
        let input = keep(filters, bound.extend(&batch)?)?;
        let n = input.num_rows();
        let mut columns = Vec::with_capacity(exprs.len());
        for (e, f) in exprs.iter().zip(schema.fields()) {
            let a = e.evaluate(&input)?.into_array(n)?;
            columns.push(if a.data_type() == f.data_type() {
                a
            } else {
                cast(&a, f.data_type()).map_err(|e| Error::DataFusion(e.into()))?
            });
        }
        let out = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| Error::DataFusion(e.into()))?;
        Ok(Output::Rows {
            schema: schema.clone(),
            stream: one_batch(schema.clone(), out),
            tag: "SELECT",
        })
    }

    /// The bound values as the extra columns, cast to the types planned for.
    fn bound_params(&self, params: Vec<ScalarValue>) -> Result<BoundParams> {
        let table_columns = self.writer.def.columns.len();
        let mut values = Vec::with_capacity(params.len() + 1);
        for (v, f) in params
            .into_iter()
            .zip(self.input.fields().iter().skip(table_columns))
        {
            values.push(if &v.data_type() == f.data_type() {
                v
            } else {
                v.cast_to(f.data_type())?
            });
        }
        if let Some(t) = &self.now {
            values.push(statement_time()?.cast_to(t)?);
        }
        Ok(BoundParams {
            schema: self.input.clone(),
            values,
        })
    }
}

/// The rows of `input` every WHERE conjunct in `filters` holds for.
fn keep(filters: &[Arc<dyn PhysicalExpr>], input: RecordBatch) -> Result<RecordBatch> {
    let mut input = input;
    for f in filters {
        let mask = where_mask(f, &input)?;
        if mask.null_count() == 0 && mask.true_count() == mask.len() {
            continue;
        }
        input = filter_record_batch(&input, &mask).map_err(|e| Error::DataFusion(e.into()))?;
    }
    Ok(input)
}

/// `column = value` (either way round) as (column name, value), the value a placeholder or a
/// literal, either maybe under one cast.
fn key_equality(e: &Expr) -> Option<(&str, KeySource, Option<DataType>)> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = e
    else {
        return None;
    };
    let value = |v: &Expr| -> Option<(KeySource, Option<DataType>)> {
        let (inner, cast) = match v {
            // A constant under a cast is the constant the cast gives: braid types `1` as
            // `1::integer` before planning.
            Expr::Cast(Cast { expr, field }) => match expr.as_ref() {
                Expr::Literal(c, _) => match c.cast_to(field.data_type()) {
                    Ok(c) => return Some((KeySource::Literal(c), None)),
                    Err(_) => (expr.as_ref(), Some(field.data_type().clone())),
                },
                e => (e, Some(field.data_type().clone())),
            },
            other => (other, None),
        };
        let source = match inner {
            Expr::Placeholder(p) => KeySource::Param(
                p.id.strip_prefix('$')?
                    .parse::<usize>()
                    .ok()?
                    .checked_sub(1)?,
            ),
            Expr::Literal(v, _) => KeySource::Literal(v.clone()),
            _ => return None,
        };
        Some((source, cast))
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), v) | (v, Expr::Column(c)) => {
            let (source, cast) = value(v)?;
            Some((c.name.as_str(), source, cast))
        }
        _ => None,
    }
}

/// The key plan of [`RowPoint::fast_key`]: each key column fixed by exactly one conjunct.
fn fast_key_plan(writer: &RowWriter, conjuncts: &[Expr]) -> Option<Vec<KeyPart>> {
    let mut parts = Vec::with_capacity(writer.layout.columns.len());
    for (_, ty, name) in &writer.layout.columns {
        let mut found = conjuncts.iter().filter(|c| {
            matches!(c, Expr::BinaryExpr(BinaryExpr { left, right, .. })
                if matches!(left.as_ref(), Expr::Column(x) if &x.name == name)
                    || matches!(right.as_ref(), Expr::Column(x) if &x.name == name))
        });
        let (first, second) = (found.next()?, found.next());
        if second.is_some() {
            return None;
        }
        let (column, source, cast) = key_equality(first)?;
        if column != name {
            return None;
        }
        parts.push(KeyPart {
            ty: *ty,
            source,
            cast,
        });
    }
    Some(parts)
}

/// The encoded key `parts` name with `params` bound; `None` when a value is NULL or does not
/// convert exactly (the generic path then decides, as it would have).
fn key_of(parts: &[KeyPart], params: &[ScalarValue]) -> Option<Vec<u8>> {
    let mut values = Vec::with_capacity(parts.len());
    for p in parts {
        let v = match &p.source {
            KeySource::Param(i) => params.get(*i)?,
            KeySource::Literal(v) => v,
        };
        let key = match &p.cast {
            Some(t) if &v.data_type() != t => scalar_key(p.ty, &v.cast_to(t).ok()?)?,
            _ => scalar_key(p.ty, v)?,
        };
        values.push(key);
    }
    Some(encode_key(&values))
}

/// True when `conjunct` holds for every row a [`RowPoint::fast_key`] read returns: `column =
/// $n` or `column = constant` with no cast and the value of the column's own type, for a type
/// whose key bytes are equal exactly when the values are (not floats: `-0 = 0` and NaN).
fn exact_key_conjunct(
    writer: &RowWriter,
    conjunct: &Expr,
    param_types: &[Option<DataType>],
) -> bool {
    let Some((column, source, None)) = key_equality(conjunct) else {
        return false;
    };
    let Some((i, ty, _)) = writer.layout.columns.iter().find(|(_, _, n)| n == column) else {
        return false;
    };
    let exact_type = matches!(
        ty,
        ColumnType::Bool
            | ColumnType::Int2
            | ColumnType::Int4
            | ColumnType::Int8
            | ColumnType::Text
            | ColumnType::Uuid
            | ColumnType::Bytea
            | ColumnType::Date
            | ColumnType::Timestamp
            | ColumnType::Timestamptz
    );
    let Some(field) = writer.schema.fields().get(*i) else {
        return false;
    };
    let value_type = match &source {
        KeySource::Param(p) => param_types.get(*p).cloned().flatten(),
        // An integer constant of another width reads the key of its exact value, or no key
        // at all ([`key_of`] is `None` when it does not fit), so it is exact too.
        KeySource::Literal(v) if v.data_type().is_integer() && field.data_type().is_integer() => {
            return exact_type;
        }
        KeySource::Literal(v) => Some(v.data_type()),
    };
    exact_type && value_type.as_ref() == Some(field.data_type())
}

/// The table columns of a SELECT list of plain columns, each of the type the result gives it.
fn direct_columns(
    writer: &RowWriter,
    exprs: &[Arc<dyn PhysicalExpr>],
    schema: &SchemaRef,
) -> Option<Vec<usize>> {
    let table_columns = writer.def.columns.len();
    exprs
        .iter()
        .zip(schema.fields())
        .map(|(e, f)| {
            let c = e
                .as_ref()
                .downcast_ref::<datafusion::physical_expr::expressions::Column>()?;
            let i = c.index();
            (i < table_columns && writer.schema.fields().get(i)?.data_type() == f.data_type())
                .then_some(i)
        })
        .collect()
}

/// The statement's `now()`: the time it started, in UTC.
pub(crate) fn statement_time() -> Result<ScalarValue> {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Error::InvalidInput(format!("the system clock is before 1970: {e}")))?
        .as_nanos();
    let ns = i64::try_from(ns)
        .map_err(|_| Error::InvalidInput("the system clock is past year 2262".into()))?;
    Ok(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("+00:00".into()),
    ))
}

/// The statement's result schema, with a `numeric` column's scale taken from the expression
/// that computes it: a rewrite made while creating the physical expression (`numeric / numeric`
/// in [`crate::numeric_ops`]) can give another scale than the plan, planned before it, says,
/// and the planned path returns the rewritten one.
fn result_schema(
    planned: &Schema,
    exprs: &[Arc<dyn PhysicalExpr>],
    input: &Schema,
) -> Result<SchemaRef> {
    let mut fields = Vec::with_capacity(planned.fields().len());
    for (f, e) in planned.fields().iter().zip(exprs) {
        let computed = e.data_type(input)?;
        fields.push(match (f.data_type(), &computed) {
            (DataType::Decimal128(..), DataType::Decimal128(..)) => {
                f.as_ref().clone().with_data_type(computed)
            }
            _ => f.as_ref().clone(),
        });
    }
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        planned.metadata().clone(),
    )))
}

fn one_batch(schema: SchemaRef, batch: RecordBatch) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(vec![Ok(batch)]),
    ))
}
