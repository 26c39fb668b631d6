//! Column `DEFAULT` expressions of row tables.
//!
//! A default is kept in the catalog as SQL text (the PostgreSQL dialect, as sqlparser prints
//! it). At CREATE TABLE it is checked the way PostgreSQL checks it: no column references, no
//! subqueries, and it must plan and convert to the column's type (a constant that does not, like
//! `int DEFAULT 'abc'`, fails then, not at the first INSERT). At INSERT it becomes a DataFusion
//! expression that DataFusion's INSERT planning puts in place of every column the statement
//! leaves out ([`crate::rows::table::RowTable`]'s `get_column_default`), and the `DEFAULT`
//! keyword inside `VALUES` is replaced by the same expression before planning
//! ([`replace_default_keywords`]).
//!
//! COPY into a table has no INSERT plan: the defaults of the columns it leaves out are planned
//! once per COPY and evaluated for each batch of parsed rows ([`LeftOutDefaults`]).
//!
//! What must stay true: a default is evaluated per statement by the planner, like any
//! expression of the INSERT, so `now()` is the statement's time in every row, as in PostgreSQL
//! (where `now()` is the transaction's start; braid uses the statement's).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{
    visit_expressions, Expr as SqlExpr, ExprWithAlias, SetExpr, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::catalog::{ColumnDef, TableDef};
use crate::error::{Error, Result};

/// Checks a column's `DEFAULT` expression and returns the text the catalog keeps.
pub fn check_default(state: &SessionState, column: &ColumnDef, expr: &SqlExpr) -> Result<String> {
    let refused = visit_expressions(expr, |e| match e {
        SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_) => {
            ControlFlow::Break("cannot use column reference in DEFAULT expression")
        }
        SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. } => {
            ControlFlow::Break("cannot use subquery in DEFAULT expression")
        }
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(m) = refused {
        return Err(Error::Unsupported(m.into()));
    }
    // Simplifying folds constants, so a literal that does not convert to the column's type
    // fails here with the cast's error (22P02), as PostgreSQL's CREATE TABLE does.
    let empty = Arc::new(DFSchema::empty());
    let cast = default_as(state, expr, &column.ty.arrow_type())?;
    let ctx = SimplifyContext::builder()
        .with_schema(empty)
        .with_current_time()
        .build();
    ExprSimplifier::new(ctx).simplify(cast)?;
    Ok(expr.to_string())
}

/// The default `expr` planned and cast to the column's type `ty`. A cast of text to interval
/// is read as PostgreSQL reads it here: the callers fold the expression themselves, before the
/// session's rewrites would run.
fn default_as(state: &SessionState, expr: &SqlExpr, ty: &DataType) -> Result<Expr> {
    let empty = DFSchema::empty();
    let cast = plan_default(state, expr)?.cast_to(ty, &empty)?;
    Ok(crate::interval_input::read_text_casts(cast, &empty)?)
}

fn plan_default(state: &SessionState, expr: &SqlExpr) -> Result<Expr> {
    let mut expr = expr.clone();
    crate::sql::canonical_intervals(&mut expr)?;
    let with_alias = ExprWithAlias { expr, alias: None };
    let logical = state.create_logical_expr_from_sql_expr(with_alias, &DFSchema::empty())?;
    // Its callers fold it to a constant before making a physical expression: checked first,
    // so `DEFAULT 9223372036854775807 + 1` fails as in PostgreSQL instead of wrapping.
    Ok(crate::arithmetic::check(logical, &DFSchema::empty())?)
}

/// The value rows stored before `ADD COLUMN ... DEFAULT expr` read for the new column: the
/// default evaluated once, as PostgreSQL does for a non-volatile default, in the row codec's
/// encoding and hex (`None` for NULL). A default that is not constant after folding (a
/// volatile function) is refused: PostgreSQL would rewrite every row with its own value.
pub fn missing_value(
    state: &SessionState,
    column: &ColumnDef,
    expr: &SqlExpr,
) -> Result<Option<String>> {
    let empty = Arc::new(DFSchema::empty());
    let ty = column.ty.arrow_type();
    let cast = default_as(state, expr, &ty)?;
    let ctx = SimplifyContext::builder()
        .with_schema(empty)
        .with_current_time()
        .build();
    let folded = ExprSimplifier::new(ctx).simplify(cast)?;
    let Expr::Literal(value, _) = folded else {
        return Err(Error::Unsupported(format!(
            "ADD COLUMN \"{}\" with a DEFAULT that is not constant ({expr}) is not supported; \
             add the column, then UPDATE the rows",
            column.name
        )));
    };
    let array = value.to_array_of_size(1)?;
    let array = if array.data_type() == &ty {
        array
    } else {
        datafusion::arrow::compute::cast(&array, &ty).map_err(|e| Error::DataFusion(e.into()))?
    };
    Ok(crate::rowcodec::encode_value(column.ty, &array, 0).map(|b| crate::rows::encode_hex(&b)))
}

/// Parses a stored default back into SQL, its interval constants in the words DataFusion
/// reads (they are stored as the user wrote them).
pub fn parse_default(text: &str) -> Result<SqlExpr> {
    let mut expr = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::CatalogCorrupt {
            path: "catalog".into(),
            reason: format!("a column default does not parse ({text}): {e}"),
        })?;
    crate::sql::canonical_intervals(&mut expr)?;
    Ok(expr)
}

/// The planned defaults of `def`'s columns, by column name (columns without one are absent).
pub fn default_exprs(state: &SessionState, def: &TableDef) -> Result<HashMap<String, Expr>> {
    let mut out = HashMap::new();
    for c in &def.columns {
        if let Some(text) = &c.default {
            out.insert(c.name.clone(), plan_default(state, &parse_default(text)?)?);
        }
    }
    Ok(out)
}

/// Whether `e` is the bare keyword `DEFAULT` (sqlparser reads it as an identifier in VALUES).
fn is_default_keyword(e: &SqlExpr) -> bool {
    matches!(e, SqlExpr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// Replaces `DEFAULT` in the rows of an `INSERT ... VALUES` by the column's default (or NULL).
/// `columns[i]` is the target column of the i-th value of a row.
pub fn replace_default_keywords(body: &mut SetExpr, columns: &[&ColumnDef]) -> Result<()> {
    let SetExpr::Values(values) = body else {
        return Ok(());
    };
    for row in &mut values.rows {
        for (i, cell) in row.content.iter_mut().enumerate() {
            if !is_default_keyword(cell) {
                continue;
            }
            *cell = match columns.get(i).and_then(|c| c.default.as_deref()) {
                Some(text) => SqlExpr::Nested(Box::new(parse_default(text)?)),
                None => SqlExpr::value(Value::Null),
            };
        }
    }
    Ok(())
}

/// The defaults of the columns a COPY leaves out, ready to evaluate for each batch of parsed
/// rows: COPY has no INSERT plan to put them in, so they are planned here, once per COPY,
/// with the statement's time folded in (`now()` is the same in every row, as in INSERT).
#[derive(Debug, Clone, Default)]
pub struct LeftOutDefaults(Vec<(Field, Arc<dyn PhysicalExpr>)>);

impl LeftOutDefaults {
    /// Plans the default of every column of `def` that has one and is not in `given`.
    pub fn plan(state: &SessionState, def: &TableDef, given: &[ColumnDef]) -> Result<Self> {
        let empty = Arc::new(DFSchema::empty());
        let mut out = Vec::new();
        for c in &def.columns {
            let Some(text) = &c.default else { continue };
            if given.iter().any(|g| g.name == c.name) {
                continue;
            }
            let ty = c.ty.arrow_type();
            let logical = default_as(state, &parse_default(text)?, &ty)?;
            let ctx = SimplifyContext::builder()
                .with_schema(empty.clone())
                .with_current_time()
                .build();
            let simple = ExprSimplifier::new(ctx).simplify(logical)?;
            let physical = state.create_physical_expr(simple, &empty)?;
            out.push((Field::new(&c.name, ty, true), physical));
        }
        Ok(LeftOutDefaults(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `batch` with one more column per planned default, evaluated for each of its rows (a
    /// volatile default such as `random()` gives each row its own value).
    pub fn fill(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.0.is_empty() {
            return Ok(batch);
        }
        let rows = batch.num_rows();
        let no_columns = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            Vec::new(),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| Error::DataFusion(e.into()))?;
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = batch.columns().to_vec();
        for (field, expr) in &self.0 {
            columns.push(expr.evaluate(&no_columns)?.into_array(rows)?);
            fields.push(field.clone());
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::DataFusion(e.into()))
    }
}
