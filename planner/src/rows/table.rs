//! The DataFusion `TableProvider` for a row table: the user's columns (a hidden row id is
//! never shown), INSERT through [`RowSink`], UPDATE and DELETE through [`RowDmlExec`], and
//! scans through [`RowScanExec`].
//!
//! Comparisons of primary key or indexed columns with constants (`=`, `IN`, `<`, `<=`, `>`,
//! `>=`, `BETWEEN`) are pushed down as `Inexact`: the scan narrows its reads to point gets, key
//! ranges or index ranges ([`super::index::choose_access`]), and DataFusion still checks every
//! filter above it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session as DfSession;
use datafusion::common::DFSchema;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::index::{choose_access, schema_stamp, usable, IndexLayout};
use super::key::KeyLayout;
use super::scan::RowScanExec;
use super::txn::RowTxn;
use super::write::{DmlOp, RowDmlExec, RowSink, RowWriter};
use super::{RowsDb, StoredLayout};
use crate::catalog::TableDef;
use crate::error::{Error, Result};

/// A row table as a DataFusion table.
#[derive(Debug)]
pub struct RowTable {
    pub def: Arc<TableDef>,
    pub db: Arc<RowsDb>,
    layout: KeyLayout,
    indexes: Arc<Vec<IndexLayout>>,
    schema: SchemaRef,
    stored: Arc<StoredLayout>,
    /// Planned `DEFAULT` expressions by column name ([`super::default`]).
    defaults: HashMap<String, Expr>,
}

/// The schema of a row table: its columns, NOT NULL ones (and key columns) non-nullable.
pub fn row_schema(def: &TableDef) -> SchemaRef {
    let key: Vec<&str> = def
        .row_options()
        .map(|o| o.primary_key.iter().map(String::as_str).collect())
        .unwrap_or_default();
    Arc::new(Schema::new(
        def.columns
            .iter()
            .map(|c| {
                c.ty.arrow_field(&c.name, c.nullable && !key.contains(&c.name.as_str()))
            })
            .collect::<Vec<_>>(),
    ))
}

impl RowTable {
    pub fn new(def: Arc<TableDef>, db: Arc<RowsDb>) -> Result<Self> {
        let layout = KeyLayout::new(&def)?;
        let indexes = Arc::new(IndexLayout::all(&def)?);
        let schema = row_schema(&def);
        let stored = Arc::new(StoredLayout::of(&def)?);
        Ok(RowTable {
            def,
            db,
            layout,
            indexes,
            schema,
            stored,
            defaults: HashMap::new(),
        })
    }

    /// The table with its columns' planned defaults.
    pub fn with_defaults(mut self, defaults: HashMap<String, Expr>) -> Self {
        self.defaults = defaults;
        self
    }

    pub(crate) fn writer(&self) -> RowWriter {
        RowWriter {
            def: self.def.clone(),
            db: self.db.clone(),
            layout: self.layout.clone(),
            schema: self.schema.clone(),
            stored: self.stored.clone(),
            indexes: self.indexes.clone(),
            stamp: schema_stamp(&self.def),
        }
    }
}

#[async_trait]
impl TableProvider for RowTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if usable(&self.layout, &self.indexes, f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
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
        // DataFusion's knobs for splitting file scans say when a row scan is split too:
        // into `target_partitions` key ranges once it reads `repartition_file_min_size`
        // bytes.
        let opts = state.config_options();
        let parts = if opts.optimizer.repartition_file_scans {
            opts.execution.target_partitions
        } else {
            1
        };
        let bytes_min = opts.optimizer.repartition_file_min_size as u64;
        Ok(Arc::new(
            RowScanExec::new(
                self.def.clone(),
                self.db.clone(),
                self.schema.clone(),
                projection,
                choose_access(&self.layout, &self.indexes, filters),
                limit,
            )?
            .split(parts, bytes_min),
        ))
    }

    async fn insert_into(
        &self,
        state: &dyn DfSession,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(Error::Unsupported(format!(
                "{insert_op} is not supported on table \"{}\"",
                self.def.name
            ))
            .into_datafusion());
        }
        let nullable: Vec<_> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let sink = RowSink {
            writer: self.writer(),
            schema: Arc::new(Schema::new(nullable)),
            txn: state.config().get_extension::<RowTxn>(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn DfSession,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.dml(state, DmlOp::Delete, filters)
    }

    async fn update(
        &self,
        state: &dyn DfSession,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let mut exprs = Vec::with_capacity(assignments.len());
        for (name, e) in assignments {
            let i = self
                .def
                .columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| Error::UndefinedColumn(name.clone()).into_datafusion())?;
            exprs.push((i, state.create_physical_expr(e, &df_schema)?));
        }
        self.dml(state, DmlOp::Update(exprs), filters)
    }
}

impl RowTable {
    fn dml(
        &self,
        state: &dyn DfSession,
        op: DmlOp,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let access = choose_access(&self.layout, &self.indexes, &filters);
        let physical = filters
            .into_iter()
            .map(|f| state.create_physical_expr(f, &df_schema))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(RowDmlExec::new(
            self.writer(),
            op,
            physical,
            access,
            state.config().get_extension::<RowTxn>(),
        )))
    }
}
