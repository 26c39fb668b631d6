//! `RETURNING` of INSERT, UPDATE and DELETE on row tables: the list planned once against the
//! table's columns (qualified by the table's name, or its alias when the statement gives one),
//! and evaluated over the rows the statement wrote — the new rows of an INSERT or UPDATE, the
//! old rows of a DELETE — as PostgreSQL returns them.
//!
//! Column names follow PostgreSQL's rules for a select list (a column keeps its name, a function
//! call is named after the function, anything else is `?column?`), because clients read rows by
//! name. Subqueries and parameters are not supported inside RETURNING.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, ExprWithAlias, SelectItem};

use crate::error::{Error, Result};
use crate::sql::{fold_ident as fold, pg_column_name};

/// A planned RETURNING list.
#[derive(Debug, Clone)]
pub struct Returning {
    /// One expression per output column, over `input`.
    exprs: Vec<Expr>,
    /// The table's columns, qualified by the name RETURNING may use for the table.
    input: Arc<DFSchema>,
    output: SchemaRef,
}

/// The table's columns qualified by `qualifier`.
pub fn qualified_schema(table: &SchemaRef, qualifier: &str) -> Result<DFSchema> {
    Ok(DFSchema::try_from_qualified_schema(
        TableReference::bare(qualifier),
        table.as_ref(),
    )?)
}

impl Returning {
    /// Plans `items` over the table's columns `table`, which the list may qualify as
    /// `qualifier`.
    pub fn plan(
        state: &SessionState,
        table: &SchemaRef,
        qualifier: &str,
        items: &[SelectItem],
    ) -> Result<Returning> {
        let input = Arc::new(qualified_schema(table, qualifier)?);
        let mut exprs = Vec::new();
        let all = |exprs: &mut Vec<Expr>| {
            // Named by the column alone, as PostgreSQL names them (not `t.id`).
            for (q, f) in input.iter() {
                exprs.push(
                    Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()))
                        .alias(f.name()),
                );
            }
        };
        for item in items {
            match item {
                SelectItem::Wildcard(_) => all(&mut exprs),
                SelectItem::QualifiedWildcard(kind, _) => {
                    let name = kind.to_string();
                    let last = name.rsplit('.').next().unwrap_or(&name);
                    if !last.eq_ignore_ascii_case(qualifier) {
                        return Err(Error::UndefinedTable(format!(
                            "missing FROM-clause entry for table \"{last}\""
                        )));
                    }
                    all(&mut exprs)
                }
                SelectItem::UnnamedExpr(e) => {
                    let planned = Self::plan_expr(state, &input, e)?;
                    exprs.push(planned.alias(pg_column_name(e)));
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let planned = Self::plan_expr(state, &input, expr)?;
                    exprs.push(planned.alias(fold(alias)));
                }
                SelectItem::ExprWithAliases { .. } => {
                    return Err(Error::Unsupported(format!(
                        "RETURNING item {item} is not supported"
                    )))
                }
            }
        }
        let mut fields = Vec::with_capacity(exprs.len());
        for e in &exprs {
            let (_, field) = e.to_field(input.as_ref())?;
            fields.push(Field::new(
                e.schema_name().to_string(),
                field.data_type().clone(),
                true,
            ));
        }
        Ok(Returning {
            exprs,
            input,
            output: Arc::new(Schema::new(fields)),
        })
    }

    fn plan_expr(state: &SessionState, input: &DFSchema, e: &SqlExpr) -> Result<Expr> {
        let with_alias = ExprWithAlias {
            expr: e.clone(),
            alias: None,
        };
        Ok(state.create_logical_expr_from_sql_expr(with_alias, input)?)
    }

    /// The schema of the rows RETURNING produces.
    pub fn schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// The RETURNING rows for the written rows `batches` (each of the table's schema).
    pub fn evaluate(
        &self,
        state: &SessionState,
        batches: &[RecordBatch],
    ) -> Result<Vec<RecordBatch>> {
        let physical = self.physical(state)?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let mut columns = Vec::with_capacity(physical.len());
            for (p, f) in physical.iter().zip(self.output.fields()) {
                let a = p.evaluate(b)?.into_array(b.num_rows())?;
                // Planning and evaluation agree on types except where the schema's logical
                // view differs (string views); cast to what the row description promised.
                let a = if a.data_type() == f.data_type() {
                    a
                } else {
                    datafusion::arrow::compute::cast(&a, f.data_type())
                        .map_err(|e| Error::DataFusion(e.into()))?
                };
                columns.push(a);
            }
            let opts = datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(b.num_rows()));
            out.push(
                RecordBatch::try_new_with_options(self.output.clone(), columns, &opts)
                    .map_err(|e| Error::DataFusion(e.into()))?,
            );
        }
        Ok(out)
    }

    fn physical(&self, state: &SessionState) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        // Simplified first so that `now()` and friends are folded to the statement's values,
        // as the planner's optimizer does for a query.
        let ctx = SimplifyContext::builder()
            .with_schema(self.input.clone())
            .with_current_time()
            .build();
        let simplifier = ExprSimplifier::new(ctx);
        self.exprs
            .iter()
            .map(|e| {
                // Coerced and made overflow-checked before folding, so a constant cannot
                // wrap.
                let checked = crate::arithmetic::check(e.clone(), &self.input)?;
                let simple = simplifier.simplify(checked)?;
                Ok(state.create_physical_expr(simple, &self.input)?)
            })
            .collect()
    }
}
