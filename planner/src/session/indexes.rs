//! Index DDL of row tables: UNIQUE constraints in CREATE TABLE, `CREATE [UNIQUE] INDEX` and
//! `DROP INDEX`, with PostgreSQL's names (`<table>_<cols>_key` for a constraint,
//! `<table>_<cols>_idx` for an unnamed index, a number appended while the name is taken),
//! messages and SQLSTATEs. How an index is stored, kept and filled: [`crate::rows::index`].
//!
//! What must stay true: an index's tree exists in the row store before the catalog names the
//! index, and the catalog stops naming it before its tree goes; the table's schema stamp is
//! changed before the catalog so writers planned with the old set of indexes fail at commit.

use datafusion::sql::sqlparser::ast::{
    CreateIndex, Expr as SqlExpr, IndexColumn, IndexType, NullsDistinctOption, ObjectName,
    UniqueConstraint,
};

use super::{command, ident_name, object_parts, Output, Session};
use crate::catalog::{ColumnDef, IndexDef, IndexOrder, TableDef, TableKind};
use crate::error::{Error, Result};
use crate::rows::index::{check_index_type, fill, schema_stamp};
use crate::rows::rows_error;

/// Refuses the parts of a UNIQUE constraint braid does not implement; says whether it is
/// NULLS NOT DISTINCT.
pub(super) fn check_unique_options(u: &UniqueConstraint) -> Result<bool> {
    if u.characteristics.is_some() {
        return Err(Error::Unsupported(
            "deferrable UNIQUE constraints are not supported".into(),
        ));
    }
    Ok(matches!(u.nulls_distinct, NullsDistinctOption::NotDistinct))
}

/// The column names of an index's or constraint's column list, checked against `columns`,
/// with each column's DESC / NULLS FIRST (only an index may have them).
pub(super) fn column_names(
    list: &[IndexColumn],
    columns: &[ColumnDef],
    what: &str,
) -> Result<(Vec<String>, Vec<IndexOrder>)> {
    let mut out = Vec::with_capacity(list.len());
    let mut order = Vec::with_capacity(list.len());
    for ic in list {
        let SqlExpr::Identifier(id) = &ic.column.expr else {
            return Err(Error::Unsupported(format!(
                "{what} element {} is not a column name; expression indexes are not supported",
                ic.column.expr
            )));
        };
        let desc = ic.column.options.asc == Some(false);
        let o = IndexOrder {
            desc,
            nulls_first: ic.column.options.nulls_first.unwrap_or(desc),
        };
        if what != "index" && o != IndexOrder::default() {
            return Err(Error::Syntax(format!(
                "syntax error: a {what} constraint's columns take no ordering ({})",
                ic.column
            )));
        }
        if ic.operator_class.is_some() {
            return Err(Error::Unsupported(
                "operator classes are not supported".into(),
            ));
        }
        let n = ident_name(id);
        let Some(c) = columns.iter().find(|c| c.name == n) else {
            return Err(if what == "index" {
                Error::UndefinedColumn(n)
            } else {
                Error::KeyColumnMissing(n)
            });
        };
        check_index_type(&n, c.ty)?;
        out.push(n);
        order.push(o);
    }
    // All ascending is the default, kept as no entries at all.
    if order.iter().all(|o| *o == IndexOrder::default()) {
        order.clear();
    }
    Ok((out, order))
}

impl Session {
    /// `name`, or `name1`, `name2`, … : the first not taken by a relation of `schema` or by
    /// `also` (PostgreSQL's ChooseRelationName).
    fn free_name(&self, schema: &str, base: &str, also: &[String]) -> String {
        let taken = |n: &str| {
            also.iter().any(|a| a == n)
                || self
                    .engine
                    .catalog
                    .relation_exists(&self.database, schema, n)
        };
        let mut name = base.to_string();
        let mut pass = 0;
        while taken(&name) {
            pass += 1;
            name = format!("{base}{pass}");
        }
        name
    }

    /// The indexes of a new table's UNIQUE constraints, named as PostgreSQL names them. A
    /// constraint on the primary key's columns, or repeating another, adds nothing (as in
    /// PostgreSQL). Ids are assigned by the catalog.
    pub(super) fn constraint_indexes(
        &self,
        schema: &str,
        table: &str,
        columns: &[ColumnDef],
        primary_key: &[String],
        uniques: Vec<(Option<String>, Vec<String>, bool)>,
    ) -> Result<Vec<IndexDef>> {
        let mut out: Vec<IndexDef> = Vec::new();
        let mut names: Vec<String> = vec![table.to_string()];
        if !primary_key.is_empty() {
            names.push(format!("{table}_pkey"));
        }
        for (name, cols, nulls_not_distinct) in uniques {
            for c in &cols {
                let Some(col) = columns.iter().find(|x| &x.name == c) else {
                    return Err(Error::KeyColumnMissing(c.clone()));
                };
                check_index_type(c, col.ty)?;
            }
            if cols.as_slice() == primary_key || out.iter().any(|i| i.columns == cols) {
                continue;
            }
            let name = match name {
                Some(n) => {
                    if names.contains(&n)
                        || self
                            .engine
                            .catalog
                            .relation_exists(&self.database, schema, &n)
                    {
                        return Err(Error::DuplicateTable(n));
                    }
                    n
                }
                None => self.free_name(schema, &format!("{table}_{}_key", cols.join("_")), &names),
            };
            names.push(name.clone());
            out.push(IndexDef {
                id: 0,
                name,
                columns: cols,
                unique: true,
                constraint: true,
                building: false,
                order: Vec::new(),
                nulls_not_distinct,
            });
        }
        Ok(out)
    }

    /// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] [name] ON t [USING btree] (a, b)`: creates the
    /// index's tree, sets the table's new schema stamp, adds the index to the catalog as
    /// building, fills it from the rows at a snapshot that includes every commit made without
    /// it, then marks it ready. A failure removes it again.
    pub(super) async fn create_index(&self, ci: &CreateIndex) -> Result<Output> {
        let (schema, table) = self.resolve(&ci.table_name)?;
        if !matches!(ci.using, None | Some(IndexType::BTree)) {
            return Err(Error::Unsupported(format!(
                "index method {} is not supported; braid indexes are btree",
                ci.using.as_ref().map(|u| u.to_string()).unwrap_or_default()
            )));
        }
        if ci.predicate.is_some() || !ci.include.is_empty() || !ci.with.is_empty() {
            return Err(Error::Unsupported(
                "partial indexes, INCLUDE and WITH (...) on indexes are not supported".into(),
            ));
        }
        let rows = self.engine.rows_for(&self.database)?;
        let _ddl = self.engine.table_ddl.lock().await;
        let Some(def) = self.engine.catalog.table(&self.database, &schema, &table) else {
            return Err(Error::UndefinedTable(table));
        };
        if def.is_stream() {
            return Err(Error::Unsupported(format!(
                "CREATE INDEX is not supported on stream \"{table}\""
            )));
        }
        let (columns, order) = column_names(&ci.columns, &def.columns, "index")?;
        let name = match &ci.name {
            Some(n) => {
                let parts = object_parts(n);
                let n = parts.last().cloned().unwrap_or_default();
                if self
                    .engine
                    .catalog
                    .relation_exists(&self.database, &schema, &n)
                {
                    if ci.if_not_exists {
                        self.notice(
                            "42P07",
                            format!("relation \"{n}\" already exists, skipping"),
                        );
                        return Ok(command("CREATE INDEX"));
                    }
                    return Err(Error::DuplicateTable(n));
                }
                n
            }
            None => self.free_name(&schema, &format!("{table}_{}_idx", columns.join("_")), &[]),
        };
        let id = self.engine.catalog.allocate_ids(1).await?;
        rows.store.create_table(id).await.map_err(rows_error)?;
        let index = IndexDef {
            id,
            name: name.clone(),
            columns,
            unique: ci.unique,
            constraint: false,
            building: true,
            order,
            // Only a unique index treats NULLs at all (PostgreSQL accepts the words on any).
            nulls_not_distinct: ci.nulls_distinct == Some(false),
        };
        let mut building = def.clone();
        if let TableKind::Table(o) = &mut building.kind {
            o.indexes.push(index.clone());
        }
        let last = rows.store.set_schema_stamp(def.id, schema_stamp(&building));
        let result = async {
            self.engine
                .catalog
                .alter_table(&self.database, &schema, &table, building.clone())
                .await?;
            rows.store.wait_visible(last).await.map_err(rows_error)?;
            fill(&rows, &building, &index).await?;
            let mut ready = building.clone();
            if let TableKind::Table(o) = &mut ready.kind {
                for ix in &mut o.indexes {
                    if ix.id == id {
                        ix.building = false;
                    }
                }
            }
            self.engine
                .catalog
                .alter_table(&self.database, &schema, &table, ready)
                .await
        }
        .await;
        if let Err(e) = result {
            // Back to the table as it was: the catalog first, then the stamp, then the tree.
            if self
                .engine
                .catalog
                .table(&self.database, &schema, &table)
                .is_some_and(|d| d.indexes().iter().any(|i| i.id == id))
            {
                let _ = self
                    .engine
                    .catalog
                    .alter_table(&self.database, &schema, &table, def.clone())
                    .await;
            }
            rows.store.set_schema_stamp(def.id, schema_stamp(&def));
            let _ = rows.store.drop_table(id).await;
            return Err(e);
        }
        tracing::info!(index = %name, table = %table, id, "created index");
        Ok(command("CREATE INDEX"))
    }

    /// `DROP INDEX [IF EXISTS] name [, ...]`. The index of a UNIQUE constraint cannot be
    /// dropped on its own (2BP01), as in PostgreSQL.
    pub(super) async fn drop_indexes(
        &self,
        names: &[ObjectName],
        if_exists: bool,
    ) -> Result<Output> {
        let rows = self.engine.rows_for(&self.database)?;
        let _ddl = self.engine.table_ddl.lock().await;
        for n in names {
            let (schema, name) = self.resolve(n)?;
            let Some(def) = self
                .engine
                .catalog
                .table_of_index(&self.database, &schema, &name)
            else {
                if self
                    .engine
                    .catalog
                    .table(&self.database, &schema, &name)
                    .is_some()
                {
                    return Err(Error::WrongObjectType(format!(
                        "\"{name}\" is not an index"
                    )));
                }
                if if_exists {
                    self.skipped_missing("index", &name);
                    continue;
                }
                return Err(Error::UndefinedObject(format!(
                    "index \"{name}\" does not exist"
                )));
            };
            let Some(ix) = def.indexes().iter().find(|i| i.name == name).cloned() else {
                continue;
            };
            if ix.constraint {
                return Err(Error::DependentObjects(format!(
                    "cannot drop index {name} because constraint {name} on table {} requires it",
                    def.name
                )));
            }
            let mut new: TableDef = def.clone();
            if let TableKind::Table(o) = &mut new.kind {
                o.indexes.retain(|i| i.id != ix.id);
            }
            rows.store.set_schema_stamp(def.id, schema_stamp(&new));
            if let Err(e) = self
                .engine
                .catalog
                .alter_table(&self.database, &schema, &def.name, new)
                .await
            {
                rows.store.set_schema_stamp(def.id, schema_stamp(&def));
                return Err(e);
            }
            rows.store.drop_table(ix.id).await.map_err(rows_error)?;
            tracing::info!(index = %name, table = %def.name, "dropped index");
        }
        Ok(command("DROP INDEX"))
    }
}
