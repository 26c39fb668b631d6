//! INSERT into a row table when the statement has `ON CONFLICT` or `RETURNING`: the rows
//! DataFusion planned (every column, defaults filled, cast to the column types) are written
//! here row by row, instead of by [`super::write::RowSink`], so that each proposed row can be
//! checked against the row already stored under its primary key and the written rows can be
//! handed back for RETURNING.
//!
//! PostgreSQL's rules, which this keeps:
//! - the conflict target must be the columns (in any order) of the primary key or of a unique
//!   index, or the name of the primary key `<table>_pkey` or of a UNIQUE constraint; anything
//!   else is 42P10 / 42704. That key or index is the arbiter: the row it finds holding the
//!   proposed values is the conflicting one. Without a target only DO NOTHING is allowed, and
//!   every unique key and index is an arbiter.
//! - DO NOTHING skips a row whose key is taken, also by a row this statement inserted.
//! - DO UPDATE sets the stored row's columns from expressions over the stored row (the table's
//!   name or alias) and the proposed row (`excluded`); its WHERE leaves rows it rejects as they
//!   are. A key this statement already inserted or updated is 21000: PostgreSQL refuses to
//!   change a row twice in one command.
//!
//! What must stay true: as for every write, one transaction per statement (or the block's),
//! and the block lock is never held while the input produces rows.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::concat;
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, ConflictTarget, Expr as SqlExpr, ExprWithAlias, OnConflict, OnConflictAction,
};
use futures::StreamExt;

use braid_ingest::rows::Transaction;

use super::key::KeyLayout;
use super::returning::qualified_schema;
use super::rows_error;
use super::txn::RowTxn;
use super::write::RowWriter;
use crate::catalog::TableDef;
use crate::error::{Error, Result};

/// The name under which DO UPDATE sees the proposed row.
const EXCLUDED: &str = "excluded";

/// What finds the row a proposed row conflicts with.
#[derive(Debug, Clone, PartialEq)]
pub enum Arbiter {
    /// No conflict target: the primary key and every unique index.
    Any,
    PrimaryKey,
    /// The unique index of this name.
    Index(String),
}

/// A planned ON CONFLICT clause.
#[derive(Debug, Clone)]
pub enum ConflictPlan {
    Nothing {
        arbiter: Arbiter,
    },
    Update {
        arbiter: Arbiter,
        /// (column index, new value over [stored row, excluded row]).
        assignments: Vec<(usize, Expr)>,
        filter: Option<Expr>,
        /// The stored row's columns (qualified by the table's name or alias), then the proposed
        /// row's (qualified `excluded`).
        schema: Arc<DFSchema>,
    },
}

fn fold(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn no_matching_constraint() -> Error {
    Error::InvalidColumnReference(
        "there is no unique or exclusion constraint matching the ON CONFLICT specification".into(),
    )
}

impl ConflictPlan {
    /// Plans `on` for table `def` (whose DataFusion schema is `table`), named `qualifier` in
    /// the statement.
    pub fn plan(
        state: &SessionState,
        def: &TableDef,
        table: &datafusion::arrow::datatypes::SchemaRef,
        qualifier: &str,
        on: &OnConflict,
    ) -> Result<ConflictPlan> {
        let key: Vec<&str> = def
            .row_options()
            .map(|o| o.primary_key.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let unique = || def.indexes().iter().filter(|i| i.unique && !i.building);
        let arbiter = match &on.conflict_target {
            None => Arbiter::Any,
            Some(ConflictTarget::Columns(cols)) => {
                let mut named = Vec::with_capacity(cols.len());
                for c in cols {
                    let n = fold(c);
                    if !def.columns.iter().any(|x| x.name == n) {
                        return Err(Error::UndefinedColumn(n));
                    }
                    named.push(n);
                }
                let named: HashSet<&str> = named.iter().map(String::as_str).collect();
                let key_set: HashSet<&str> = key.iter().copied().collect();
                if !key.is_empty() && named == key_set {
                    Arbiter::PrimaryKey
                } else if let Some(ix) = unique().find(|i| {
                    i.columns
                        .iter()
                        .map(String::as_str)
                        .collect::<HashSet<&str>>()
                        == named
                }) {
                    Arbiter::Index(ix.name.clone())
                } else {
                    return Err(no_matching_constraint());
                }
            }
            Some(ConflictTarget::OnConstraint(name)) => {
                let n = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(fold)
                    .unwrap_or_default();
                if !key.is_empty() && n == format!("{}_pkey", def.name) {
                    Arbiter::PrimaryKey
                } else if unique().any(|i| i.constraint && i.name == n) {
                    Arbiter::Index(n)
                } else {
                    return Err(Error::UndefinedObject(format!(
                        "constraint \"{n}\" for table \"{}\" does not exist",
                        def.name
                    )));
                }
            }
        };
        let update = match &on.action {
            OnConflictAction::DoNothing => return Ok(ConflictPlan::Nothing { arbiter }),
            OnConflictAction::DoUpdate(u) => u,
        };
        if on.conflict_target.is_none() {
            return Err(Error::SyntaxRule(
                "ON CONFLICT DO UPDATE requires inference specification or constraint name".into(),
            ));
        }
        let mut schema = qualified_schema(table, qualifier)?;
        schema.merge(&qualified_schema(table, EXCLUDED)?);
        let schema = Arc::new(schema);
        let plan_expr = |e: &SqlExpr| -> Result<Expr> {
            let with_alias = ExprWithAlias {
                expr: e.clone(),
                alias: None,
            };
            Ok(state.create_logical_expr_from_sql_expr(with_alias, &schema)?)
        };
        let mut assignments: Vec<(usize, Expr)> = Vec::new();
        for a in &update.assignments {
            let AssignmentTarget::ColumnName(target) = &a.target else {
                return Err(Error::Unsupported(
                    "ON CONFLICT DO UPDATE SET (a, b) = ... is not supported; assign each column"
                        .into(),
                ));
            };
            let name = target
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(fold)
                .unwrap_or_default();
            let Some(i) = def.columns.iter().position(|c| c.name == name) else {
                return Err(Error::UndefinedColumn(format!(
                    "{name}\" of relation \"{}",
                    def.name
                )));
            };
            if assignments.iter().any(|(j, _)| *j == i) {
                return Err(Error::SyntaxRule(format!(
                    "multiple assignments to same column \"{name}\""
                )));
            }
            assignments.push((i, plan_expr(&a.value)?));
        }
        let filter = update.selection.as_ref().map(plan_expr).transpose()?;
        Ok(ConflictPlan::Update {
            arbiter,
            assignments,
            filter,
            schema,
        })
    }
}

/// [`ConflictPlan`] made executable for one run.
enum ConflictExec {
    /// No ON CONFLICT: a taken key is 23505.
    Plain,
    Nothing(Arbiter),
    Update {
        arbiter: Arbiter,
        assignments: Vec<(usize, Arc<dyn PhysicalExpr>)>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: Arc<DFSchema>,
    },
}

fn physical(
    state: &SessionState,
    schema: &Arc<DFSchema>,
    e: &Expr,
) -> Result<Arc<dyn PhysicalExpr>> {
    let ctx = SimplifyContext::builder()
        .with_schema(schema.clone())
        .with_current_time()
        .build();
    let simplifier = ExprSimplifier::new(ctx);
    // Coerced and made overflow-checked before folding, so a constant cannot wrap.
    let checked = crate::arithmetic::check(e.clone(), schema)?;
    let simple = simplifier.simplify(checked)?;
    Ok(state.create_physical_expr(simple, schema)?)
}

impl ConflictExec {
    fn new(state: &SessionState, plan: Option<&ConflictPlan>) -> Result<ConflictExec> {
        Ok(match plan {
            None => ConflictExec::Plain,
            Some(ConflictPlan::Nothing { arbiter }) => ConflictExec::Nothing(arbiter.clone()),
            Some(ConflictPlan::Update {
                arbiter,
                assignments,
                filter,
                schema,
            }) => ConflictExec::Update {
                arbiter: arbiter.clone(),
                assignments: assignments
                    .iter()
                    .map(|(i, e)| Ok((*i, physical(state, schema, e)?)))
                    .collect::<Result<_>>()?,
                filter: filter
                    .as_ref()
                    .map(|e| physical(state, schema, e))
                    .transpose()?,
                schema: schema.clone(),
            },
        })
    }
}

/// What an INSERT with ON CONFLICT / RETURNING did.
#[derive(Debug, Default)]
pub struct InsertOutcome {
    /// Rows inserted plus rows updated (PostgreSQL's count for the command tag).
    pub count: u64,
    /// The rows written (new values), in the table's schema, when asked for.
    pub rows: Vec<RecordBatch>,
}

/// The rows of one statement being written: the keys it touched and the rows to return.
struct Progress {
    touched: HashSet<Vec<u8>>,
    /// One-row column slices of every written row, when RETURNING wants them.
    out: Option<Vec<Vec<ArrayRef>>>,
    count: u64,
}

impl Progress {
    fn wrote(&mut self, columns: &[ArrayRef], row: usize) {
        self.count += 1;
        if let Some(out) = &mut self.out {
            out.push(columns.iter().map(|a| a.slice(row, 1)).collect());
        }
    }
}

/// Writes every row of `input` into the table of `writer` with the ON CONFLICT rule `plan`
/// (`None`: a plain INSERT, a taken key is 23505), returning the written rows when
/// `returning`.
pub async fn insert_rows(
    state: &SessionState,
    writer: &RowWriter,
    block: Option<Arc<RowTxn>>,
    mut input: SendableRecordBatchStream,
    plan: Option<&ConflictPlan>,
    returning: bool,
) -> Result<InsertOutcome> {
    let exec = ConflictExec::new(state, plan)?;
    let mut own: Option<Transaction> = None;
    let mut progress = Progress {
        touched: HashSet::new(),
        out: returning.then(Vec::new),
        count: 0,
    };
    while let Some(batch) = input.next().await {
        let batch = batch?;
        let rows = batch.num_rows();
        if rows == 0 {
            continue;
        }
        let columns = writer.columns(&batch)?;
        let first_rowid = writer.reserve(rows).await?;
        // Taken per batch, after the input produced it: the input may be a scan of this
        // session that needs the block lock itself.
        let mut guard = match &block {
            Some(t) => Some(t.lock().await),
            None => None,
        };
        let store = &writer.db.store;
        let txn = match guard.as_mut().and_then(|g| g.current(store)) {
            Some(t) => t,
            None => own.get_or_insert_with(|| store.begin()),
        };
        writer.expect_schema(txn);
        for row in 0..rows {
            write_row(
                writer,
                txn,
                &exec,
                &columns,
                row,
                first_rowid,
                &mut progress,
            )
            .await?;
        }
    }
    if let Some(t) = own {
        t.commit().await.map_err(rows_error)?;
    }
    let mut out = Vec::new();
    if let Some(rows) = progress.out.filter(|r| !r.is_empty()) {
        let mut columns = Vec::with_capacity(writer.schema.fields().len());
        for i in 0..writer.schema.fields().len() {
            let parts: Vec<&dyn datafusion::arrow::array::Array> = rows
                .iter()
                .filter_map(|r| r.get(i).map(|a| a.as_ref()))
                .collect();
            columns.push(concat(&parts).map_err(|e| Error::DataFusion(e.into()))?);
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        out.push(
            RecordBatch::try_new_with_options(writer.schema.clone(), columns, &opts)
                .map_err(|e| Error::DataFusion(e.into()))?,
        );
    }
    Ok(InsertOutcome {
        count: progress.count,
        rows: out,
    })
}

/// The stored row (key, value) that row `row` of `columns` (to be stored under `key`)
/// conflicts with under `arbiter`, if any.
async fn find_conflict(
    writer: &RowWriter,
    txn: &Transaction,
    arbiter: &Arbiter,
    columns: &[ArrayRef],
    row: usize,
    key: &[u8],
) -> Result<Option<(Vec<u8>, Bytes)>> {
    let table = writer.def.id;
    // A hidden row id never conflicts.
    if matches!(arbiter, Arbiter::Any | Arbiter::PrimaryKey) && !writer.layout.hidden() {
        if let Some(v) = txn.get(table, key).await.map_err(rows_error)? {
            return Ok(Some((key.to_vec(), v)));
        }
    }
    for ix in writer.unique_indexes() {
        let wanted = match arbiter {
            Arbiter::Any => true,
            Arbiter::PrimaryKey => false,
            Arbiter::Index(n) => *n == ix.def.name,
        };
        if !wanted {
            continue;
        }
        if let Some(row_key) = ix.find(txn, columns, row).await? {
            if let Some(v) = txn.get(table, &row_key).await.map_err(rows_error)? {
                return Ok(Some((row_key.to_vec(), v)));
            }
        }
    }
    Ok(None)
}

async fn write_row(
    writer: &RowWriter,
    txn: &mut Transaction,
    exec: &ConflictExec,
    columns: &[ArrayRef],
    row: usize,
    first_rowid: Option<i64>,
    progress: &mut Progress,
) -> Result<()> {
    let table = writer.def.id;
    writer.check_not_null(columns, row)?;
    let value = writer.encode(columns, row);
    let key = match first_rowid {
        Some(first) => KeyLayout::rowid_key(first.saturating_add(row as i64)),
        None => writer.key_of(columns, row)?,
    };
    let stored = match exec {
        ConflictExec::Plain => None,
        ConflictExec::Nothing(arbiter) | ConflictExec::Update { arbiter, .. } => {
            find_conflict(writer, txn, arbiter, columns, row, &key).await?
        }
    };
    let Some((key, stored)) = stored else {
        match txn.insert(table, key.clone(), value).await {
            Ok(()) => {}
            Err(braid_ingest::Error::UniqueViolation { .. }) => {
                return Err(writer.duplicate(columns, row))
            }
            Err(e) => return Err(rows_error(e)),
        }
        writer.insert_entries(txn, columns, row, &key, None).await?;
        progress.touched.insert(key);
        progress.wrote(columns, row);
        return Ok(());
    };
    let (assignments, filter, schema) = match exec {
        ConflictExec::Plain | ConflictExec::Nothing(_) => return Ok(()),
        ConflictExec::Update {
            assignments,
            filter,
            schema,
            ..
        } => (assignments, filter, schema),
    };
    if progress.touched.contains(&key) {
        return Err(Error::CardinalityViolation {
            message: "ON CONFLICT DO UPDATE command cannot affect row a second time".into(),
            hint: "Ensure that no rows proposed for insertion within the same command have \
                   duplicate constrained values."
                .into(),
        });
    }
    let all: Vec<usize> = (0..writer.def.columns.len()).collect();
    let old = writer
        .decode(&all, std::iter::once(&stored))?
        .columns()
        .to_vec();
    let mut both: Vec<ArrayRef> = old.clone();
    both.extend(columns.iter().map(|a| a.slice(row, 1)));
    let opts = RecordBatchOptions::new().with_row_count(Some(1));
    let arrow_schema = Arc::new(schema.as_arrow().clone());
    let batch = RecordBatch::try_new_with_options(arrow_schema, both, &opts)
        .map_err(|e| Error::DataFusion(e.into()))?;
    if let Some(f) = filter {
        let v = f.evaluate(&batch)?.into_array(1)?;
        let pass = v
            .as_any()
            .downcast_ref::<BooleanArray>()
            .is_some_and(|b| b.is_valid(0) && b.value(0));
        if !pass {
            return Ok(());
        }
    }
    let mut new = old.clone();
    for (i, e) in assignments {
        let v = e.evaluate(&batch)?.into_array(1)?;
        if let (Some(v), Some(slot)) = (writer.assigned(*i, v)?, new.get_mut(*i)) {
            *slot = v;
        }
    }
    writer.check_not_null(&new, 0)?;
    let value = writer.encode(&new, 0);
    let new_key = if writer.layout.hidden() {
        key.clone()
    } else {
        writer.key_of(&new, 0)?
    };
    let which = writer.changed_entries((&old, 0, &key), (&new, 0, &new_key));
    writer.delete_entries(txn, &old, 0, &key, Some(&which))?;
    if new_key == key {
        txn.put(table, key.clone(), value).map_err(rows_error)?;
    } else {
        txn.delete(table, key.clone()).map_err(rows_error)?;
        match txn.insert(table, new_key.clone(), value).await {
            Ok(()) => {}
            Err(braid_ingest::Error::UniqueViolation { .. }) => {
                return Err(writer.duplicate(&new, 0))
            }
            Err(e) => return Err(rows_error(e)),
        }
        progress.touched.insert(new_key.clone());
    }
    writer
        .insert_entries(txn, &new, 0, &new_key, Some(&which))
        .await?;
    progress.touched.insert(key);
    progress.wrote(&new, 0);
    Ok(())
}
