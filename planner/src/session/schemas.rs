//! Schemas: `CREATE SCHEMA`, `DROP SCHEMA ... [CASCADE | RESTRICT]` and `SET search_path`,
//! with PostgreSQL's messages and SQLSTATEs. How names resolve through the path:
//! [`super::SearchPath`].
//!
//! What must stay true: DROP SCHEMA removes the schema and all its tables from the catalog in
//! one atomic write before any table's storage goes, so a crash in between leaves only
//! directories no catalog entry names (under ids never used again).

use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, ObjectName, SchemaName, Value};

use super::{command, ident_name, object_parts, Output, Session};
use crate::catalog::{TableDef, SYSTEM_SCHEMAS};
use crate::error::{Error, Result};
use crate::pg_catalog::quote_ident;
use crate::rows::rows_error;

impl Session {
    /// `CREATE SCHEMA [IF NOT EXISTS] name [AUTHORIZATION role]` and `CREATE SCHEMA
    /// AUTHORIZATION role` (a schema named as the role).
    pub(super) async fn create_schema(
        &self,
        name: &SchemaName,
        if_not_exists: bool,
    ) -> Result<Output> {
        let (name, role) = match name {
            SchemaName::Simple(n) => (self.schema_name(n)?, None),
            SchemaName::UnnamedAuthorization(r) => (ident_name(r), Some(ident_name(r))),
            SchemaName::NamedAuthorization(n, r) => (self.schema_name(n)?, Some(ident_name(r))),
        };
        if let Some(role) = role {
            // The session's user is the one role braid has.
            if role != self.user {
                return Err(Error::UndefinedObject(format!(
                    "role \"{role}\" does not exist"
                )));
            }
        }
        // PostgreSQL checks the prefix first, IF NOT EXISTS or not (so `pg_catalog` too).
        if name.starts_with("pg_") {
            return Err(Error::ReservedName {
                message: format!("unacceptable schema name \"{name}\""),
                detail: "The prefix \"pg_\" is reserved for system schemas.".into(),
            });
        }
        if SYSTEM_SCHEMAS.contains(&name.as_str()) {
            if if_not_exists {
                self.schema_exists_notice(&name);
                return Ok(command("CREATE SCHEMA"));
            }
            return Err(Error::DuplicateSchema(name));
        }
        match self
            .engine
            .catalog
            .create_schema(&self.database, &name)
            .await
        {
            Ok(()) => {
                tracing::info!(schema = %name, "created schema");
                Ok(command("CREATE SCHEMA"))
            }
            Err(Error::DuplicateSchema(_)) if if_not_exists => {
                self.schema_exists_notice(&name);
                Ok(command("CREATE SCHEMA"))
            }
            Err(e) => Err(e),
        }
    }

    fn schema_exists_notice(&self, name: &str) {
        self.notice(
            "42P06",
            format!("schema \"{name}\" already exists, skipping"),
        );
    }

    /// A schema name, which may be qualified by the current database only.
    fn schema_name(&self, name: &ObjectName) -> Result<String> {
        match object_parts(name).as_slice() {
            [s] => Ok(s.clone()),
            [d, s] if *d == self.database => Ok(s.clone()),
            [d, _] => Err(Error::Unsupported(format!(
                "cross-database references are not implemented: {d}"
            ))),
            _ => Err(Error::Syntax(format!("improper qualified name: {name}"))),
        }
    }

    /// `DROP SCHEMA [IF EXISTS] name [, ...] [CASCADE | RESTRICT]`. Every name is checked
    /// before anything is dropped; RESTRICT (the default) refuses a schema that holds tables
    /// (2BP01, naming them), CASCADE drops them as DROP TABLE / DROP STREAM would.
    pub(super) async fn drop_schemas(
        &self,
        names: &[ObjectName],
        if_exists: bool,
        cascade: bool,
    ) -> Result<Output> {
        let mut targets: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            let name = self.schema_name(n)?;
            if name == crate::pg_catalog::PG_CATALOG || name == "pg_toast" {
                return Err(Error::DependentObjects(format!(
                    "cannot drop schema {name} because it is required by the database system"
                )));
            }
            if SYSTEM_SCHEMAS.contains(&name.as_str()) {
                // PostgreSQL's information_schema holds its views, which depend on it.
                return Err(Error::DependentObjects(format!(
                    "cannot drop schema {name} because other objects depend on it"
                )));
            }
            if !self.engine.catalog.schema_exists(&self.database, &name) {
                if if_exists {
                    self.skipped_missing("schema", &name);
                    continue;
                }
                return Err(Error::UndefinedSchema(name));
            }
            if !cascade {
                let mut tables: Vec<TableDef> = self
                    .engine
                    .catalog
                    .tables(&self.database)
                    .into_iter()
                    .filter(|(s, _)| *s == name)
                    .map(|(_, t)| t)
                    .collect();
                if !tables.is_empty() {
                    // Oldest first, as PostgreSQL lists dependents in the order they were made.
                    tables.sort_by_key(|t| t.id);
                    let detail = tables
                        .iter()
                        .map(|t| {
                            format!(
                                "table {}.{} depends on schema {}",
                                quote_ident(&name),
                                quote_ident(&t.name),
                                quote_ident(&name)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(Error::DependentObjectsExist {
                        message: format!(
                            "cannot drop schema {} because other objects depend on it",
                            quote_ident(&name)
                        ),
                        detail,
                        hint: "Use DROP ... CASCADE to drop the dependent objects too.".into(),
                    });
                }
            }
            if !targets.contains(&name) {
                targets.push(name);
            }
        }
        let _ddl = self.engine.table_ddl.lock().await;
        let mut cascaded = Vec::new();
        for name in targets {
            let Some(tables) = self
                .engine
                .catalog
                .drop_schema(&self.database, &name)
                .await?
            else {
                continue;
            };
            for def in &tables {
                self.remove_table_storage(def).await?;
            }
            tracing::info!(schema = %name, tables = tables.len(), "dropped schema");
            let mut tables = tables;
            tables.sort_by_key(|t| t.id);
            cascaded.extend(tables.iter().map(|t| {
                format!(
                    "drop cascades to {} {}.{}",
                    if t.is_stream() { "stream" } else { "table" },
                    quote_ident(&name),
                    quote_ident(&t.name)
                )
            }));
        }
        // PostgreSQL's one NOTICE for everything CASCADE took along: the object itself when it
        // is one, else their count with one line each in the detail.
        match cascaded.len() {
            0 => {}
            1 => self.notice("00000", cascaded.remove(0)),
            n => self.notices.lock().push(super::Notice {
                code: "00000",
                message: format!("drop cascades to {n} other objects"),
                detail: Some(cascaded.join("\n")),
            }),
        }
        Ok(command("DROP SCHEMA"))
    }

    /// Removes the storage of a table or stream the catalog no longer names: a row table's
    /// tree and its indexes' trees, or a stream's log. A removal that fails only leaves an
    /// orphan under an id that is never used again.
    pub(super) async fn remove_table_storage(&self, def: &TableDef) -> Result<()> {
        if def.is_stream() {
            let log = self.engine.open.lock().await.remove(&def.id);
            if let Some(log) = log {
                log.close().await;
            }
            self.engine.logs.remove(&self.database, def.id).await?;
            tracing::info!(stream = %def.name, id = def.id, "dropped stream");
            return Ok(());
        }
        let rows = self.engine.rows_for(&self.database)?;
        rows.store.drop_table(def.id).await.map_err(rows_error)?;
        for ix in def.indexes() {
            rows.store.drop_table(ix.id).await.map_err(rows_error)?;
        }
        rows.forget(def.id).await;
        tracing::info!(table = %def.name, id = def.id, "dropped table");
        Ok(())
    }

    /// `SET search_path TO a, "B", 'c'` (or `DEFAULT`): the schema names, folded as
    /// identifiers (a string is taken as written), and the text `SHOW search_path` prints —
    /// each name quoted where PostgreSQL's `quote_ident` would, as PostgreSQL shows it.
    pub(super) fn set_search_path(&self, values: &[SqlExpr]) -> Result<String> {
        let mut names = Vec::with_capacity(values.len());
        for v in values {
            let name = match v {
                SqlExpr::Identifier(i) if i.quote_style.is_none() && values.len() == 1 => {
                    if i.value.eq_ignore_ascii_case("default") {
                        names = super::default_search_path();
                        break;
                    }
                    ident_name(i)
                }
                SqlExpr::Identifier(i) => ident_name(i),
                SqlExpr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                    other => {
                        return Err(Error::InvalidParameter(format!(
                            "invalid value for parameter \"search_path\": \"{other}\""
                        )))
                    }
                },
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "invalid value for parameter \"search_path\": \"{other}\""
                    )))
                }
            };
            names.push(name);
        }
        let text = names
            .iter()
            .map(|n| quote_ident(n))
            .collect::<Vec<_>>()
            .join(", ");
        *self.search_path.names.lock() = names;
        Ok(text)
    }
}
