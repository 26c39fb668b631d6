//! The engine (shared by all connections) and the per-connection [`Session`] that turns SQL
//! into [`Output`]s.
//!
//! Statement routing: braid's own statements (`CREATE STREAM`/`TABLE`, `DROP STREAM`/`TABLE`,
//! `COPY ... FROM STDIN`, `SET`/`SHOW`, transaction control) are handled here; `SELECT`,
//! `INSERT`, `EXPLAIN`, and `UPDATE`/`DELETE` of row tables are planned and run by DataFusion
//! over the stream and row table providers; DataFusion's own DDL (in-memory tables and views
//! that would not survive a restart) is refused.
//!
//! Transaction blocks: BEGIN opens a block for both kinds of table — stream appends are held
//! ([`TxnBuffer`]) and row tables share one RowStore transaction ([`RowTxn`]). COMMIT commits
//! the row transaction first (it is the one that can fail with a serialization failure), then
//! appends the held stream rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    ColumnOption, CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
    CreateTableOptions, Expr as SqlExpr, Ident, ObjectName, ObjectNamePart, ObjectType, Set,
    SqlOption, Statement, TableFactor, TableObject,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tokio::sync::Mutex as AsyncMutex;

mod databases;
mod indexes;
mod schemas;

use crate::catalog::{
    Catalog, ColumnDef, FileStore, RowTableOptions, TableDef, TableKind, DEFAULT_DATABASE,
    DEFAULT_SCHEMA,
};
pub use crate::copy::CopyFormat;
use crate::error::{Error, Result};
use crate::fast_insert::FastInsert;
use crate::rows::default::LeftOutDefaults;
use crate::rows::key::check_key_type;
use crate::rows::point::RowPoint;
use crate::rows::returning::Returning;
use crate::rows::table::RowTable;
use crate::rows::txn::RowTxn;
use crate::rows::upsert::{insert_rows, ConflictPlan};
use crate::rows::write::{RowDmlExec, RowSink, RowWriter};
use crate::rows::{rows_error, RowsDb};
use crate::sql::{
    hide_hidden_columns, name_columns_as_postgres, rewrite_stream_ddl, split_statements,
};
use crate::stream::log::{StreamLog, StreamLogs};
use crate::stream::logcore::storage_error;
use crate::stream::options::StreamOptions;
use crate::stream::sink::{Staged, StreamWriter};
use crate::stream::table::StreamTable;
use crate::stream::txn::TxnBuffer;
use crate::stream::HIDDEN_COLUMNS;
use crate::types::ColumnType;
use braid_ingest::storage::io::SharedFs;
use braid_ingest::storage::log::Durability as LogDurability;

/// Start-up settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// DataFusion target partitions (parallelism of one query).
    pub target_partitions: usize,
    /// Disk the row tables' store uses; `None`: the backend named by `BRAID_IO_BACKEND`.
    pub row_fs: Option<SharedFs>,
    /// When a row-table commit is acknowledged (`Sync` unless the user asked otherwise).
    pub row_durability: LogDurability,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            row_fs: None,
            row_durability: LogDurability::Sync,
        }
    }
}

#[derive(Debug)]
struct EngineInner {
    catalog: Catalog,
    logs: Arc<dyn StreamLogs>,
    /// Open logs by table id.
    open: AsyncMutex<HashMap<u64, Arc<dyn StreamLog>>>,
    /// Every database of the catalog that is open: its row store and its sessions. A database
    /// leaves this map before DROP DATABASE removes it from the catalog, so no session can
    /// start on a database being dropped.
    databases: parking_lot::Mutex<HashMap<String, OpenDatabase>>,
    /// The disk the row stores use; also removes a dropped database's directories.
    row_fs: SharedFs,
    data_dir: std::path::PathBuf,
    /// Serializes CREATE DATABASE and DROP DATABASE, which change directories as well as the
    /// catalog.
    database_ddl: AsyncMutex<()>,
    /// Plans row tables' column defaults when a table provider is made (providers are made
    /// outside any session); braid's functions are registered on it as on a session's.
    defaults: datafusion::execution::context::SessionState,
    options: EngineOptions,
    /// Serializes the DDL that rewrites a row table's definition from a copy (ALTER TABLE,
    /// CREATE INDEX, DROP INDEX), so two of them never lose each other's change.
    table_ddl: AsyncMutex<()>,
}

/// The shared state of a running server: catalog and open stream logs.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

/// An open database: its row store and how many client sessions are connected to it.
#[derive(Debug)]
struct OpenDatabase {
    rows: Arc<RowsDb>,
    sessions: usize,
}

/// A session's place in its database's session count, given back when the session ends.
#[derive(Debug)]
struct Attached {
    engine: Arc<EngineInner>,
    database: String,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(d) = self.engine.databases.lock().get_mut(&self.database) {
            d.sessions = d.sessions.saturating_sub(1);
        }
    }
}

impl EngineInner {
    async fn log_for(&self, db: &str, def: &TableDef) -> Result<Arc<dyn StreamLog>> {
        let mut open = self.open.lock().await;
        if let Some(l) = open.get(&def.id) {
            return Ok(l.clone());
        }
        let options = def.stream_options().cloned().unwrap_or_default();
        let log = self.logs.open(db, def.id, &options.log_config()).await?;
        open.insert(def.id, log.clone());
        Ok(log)
    }

    async fn stream_table(
        &self,
        db: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<StreamTable>> {
        let Some(def) = self.catalog.table(db, schema, name) else {
            return Ok(None);
        };
        if !def.is_stream() {
            return Err(Error::Unsupported(format!(
                "\"{name}\" is a table: this statement is only supported on streams so far"
            )));
        }
        let log = self.log_for(db, &def).await?;
        Ok(Some(StreamTable::new(Arc::new(def), log)))
    }

    /// The row store of `db`.
    fn rows_for(&self, db: &str) -> Result<Arc<RowsDb>> {
        self.databases
            .lock()
            .get(db)
            .map(|d| d.rows.clone())
            .ok_or_else(|| Error::UndefinedDatabase(db.to_string()))
    }

    /// Opens database `db`: its row store (recovering it), the row tables a crash may have
    /// left out of it, and every stream log (so recovery happens now, not on first query).
    async fn open_database(&self, db: &str) -> Result<Arc<RowsDb>> {
        let rows = Arc::new(
            RowsDb::open(
                self.row_fs.clone(),
                &self.data_dir,
                &crate::catalog::database_dir(db),
                self.options.row_durability,
            )
            .await?,
        );
        for (_, def) in self.catalog.tables(db) {
            if def.is_stream() {
                self.log_for(db, &def).await?;
                continue;
            }
            // A crash between the catalog write and the store's create leaves a table the
            // store does not know: nothing of it was acknowledged, so it starts empty.
            match rows.store.create_table(def.id).await {
                Ok(()) => {
                    tracing::info!(table = %def.name, id = def.id, "created missing row table")
                }
                Err(braid_ingest::Error::TableExists(_)) => {}
                Err(e) => return Err(rows_error(e)),
            }
        }
        Ok(rows)
    }

    /// The directories database `db`'s data lives in (row trees, commit log and stream logs).
    fn database_dirs(&self, db: &str) -> [std::path::PathBuf; 2] {
        let dir = crate::catalog::database_dir(db);
        [
            self.data_dir.join("tables").join(&dir),
            self.data_dir.join("log").join(&dir),
        ]
    }

    /// Removes directories under `tables/` and `log/` that belong to no database of the
    /// catalog: what a crash between DROP DATABASE's catalog write and its removal of the
    /// files left behind. Nothing in them was reachable since that catalog write.
    async fn remove_orphan_databases(&self) -> Result<()> {
        let keep: std::collections::HashSet<String> = self
            .catalog
            .database_names()
            .iter()
            .map(|n| crate::catalog::database_dir(n))
            .collect();
        for top in ["tables", "log"] {
            let root = self.data_dir.join(top);
            if !self.row_fs.exists(&root).await.map_err(storage_error)? {
                continue;
            }
            for name in self.row_fs.list_dir(&root).await.map_err(storage_error)? {
                if keep.contains(&name) {
                    continue;
                }
                let path = root.join(&name);
                tracing::info!(path = %path.display(), "removing the files of a dropped database");
                self.row_fs
                    .remove_dir_all(&path)
                    .await
                    .map_err(storage_error)?;
            }
        }
        Ok(())
    }

    /// The table provider of any kind of table.
    async fn provider(
        &self,
        db: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(def) = self.catalog.table(db, schema, name) else {
            return Ok(None);
        };
        if def.is_stream() {
            let log = self.log_for(db, &def).await?;
            return Ok(Some(Arc::new(StreamTable::new(Arc::new(def), log))));
        }
        let rows = self.rows_for(db)?;
        let defaults = if def.columns.iter().any(|c| c.default.is_some()) {
            crate::rows::default::default_exprs(&self.defaults, &def)?
        } else {
            HashMap::new()
        };
        Ok(Some(Arc::new(
            RowTable::new(Arc::new(def), rows)?.with_defaults(defaults),
        )))
    }
}

impl Engine {
    /// Opens the catalog in `data_dir` and every stream log it lists (so recovery happens at
    /// start, not on first query).
    pub async fn open(
        files: Arc<dyn FileStore>,
        logs: Arc<dyn StreamLogs>,
        data_dir: &Path,
        options: EngineOptions,
    ) -> Result<Engine> {
        let catalog = Catalog::open(files, data_dir).await?;
        let row_fs = match &options.row_fs {
            Some(fs) => fs.clone(),
            None => braid_ingest::storage::io::backend_from_env()
                .map_err(crate::stream::logcore::storage_error)?,
        };
        let defaults_ctx = SessionContext::new();
        crate::functions::register(&defaults_ctx, DEFAULT_DATABASE, DEFAULT_DATABASE, 0);
        crate::arithmetic::register(&defaults_ctx)?;
        crate::interval_arith::register(&defaults_ctx)?;
        crate::float_text::register(&defaults_ctx, None)?;
        crate::interval_input::register(&defaults_ctx)?;
        crate::sum_numeric::register(&defaults_ctx);
        let inner = Arc::new(EngineInner {
            catalog,
            logs,
            open: AsyncMutex::new(HashMap::new()),
            databases: parking_lot::Mutex::new(HashMap::new()),
            row_fs,
            data_dir: data_dir.to_path_buf(),
            database_ddl: AsyncMutex::new(()),
            defaults: defaults_ctx.state(),
            options,
            table_ddl: AsyncMutex::new(()),
        });
        inner.remove_orphan_databases().await?;
        for db in inner.catalog.database_names() {
            let rows = inner.open_database(&db).await?;
            inner
                .databases
                .lock()
                .insert(db, OpenDatabase { rows, sessions: 0 });
        }
        Ok(Engine { inner })
    }

    pub fn database_exists(&self, db: &str) -> bool {
        self.inner.catalog.database_exists(db)
    }

    /// A new client session on `database`; `backend_pid` is the id the client got for cancel
    /// requests (what `pg_backend_pid()` returns). The session counts as a user of the
    /// database until it is dropped: DROP DATABASE refuses a database with sessions.
    pub fn session(&self, database: &str, user: &str, backend_pid: i32) -> Result<Session> {
        let attached = {
            let mut dbs = self.inner.databases.lock();
            let d = dbs
                .get_mut(database)
                .ok_or_else(|| Error::UndefinedDatabase(database.to_string()))?;
            d.sessions += 1;
            Attached {
                engine: self.inner.clone(),
                database: database.to_string(),
            }
        };
        let mut session = self.internal_session(database, user, backend_pid)?;
        session.attached = Some(attached);
        Ok(session)
    }

    /// A session the server runs for itself (the watchdog's probe): it does not count as a
    /// user of the database.
    pub fn internal_session(
        &self,
        database: &str,
        user: &str,
        backend_pid: i32,
    ) -> Result<Session> {
        if !self.database_exists(database) {
            return Err(Error::UndefinedDatabase(database.to_string()));
        }
        let txn = Arc::new(TxnBuffer::default());
        let rows_txn = Arc::new(RowTxn::default());
        let mut config = SessionConfig::new();
        // `timestamptz` (casts, typed literals, now()) is an instant in UTC, as braid stores
        // it; the session's TimeZone only changes how it is read and shown. Without this
        // DataFusion makes `'…'::timestamptz` a timestamp without a zone.
        config.options_mut().execution.time_zone = Some(crate::types::UTC.to_string());
        // `1.5` is `numeric`, as in PostgreSQL: `0.1 + 0.2` is exactly `0.3`, and `price * 1.1`
        // stays a `numeric`. [`crate::sql::numeric_literals`] first rewrites the constants
        // Decimal128 cannot hold as they are written.
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        let config = config
            .with_extension(txn.clone())
            .with_extension(rows_txn.clone())
            // Unqualified names go to the search path's schema provider.
            .with_default_catalog_and_schema(database, SEARCH_PATH_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_target_partitions(self.inner.options.target_partitions);
        let ctx = SessionContext::new_with_config(config);
        let time_zone = Arc::new(parking_lot::Mutex::new(
            crate::types::SessionTimeZone::default(),
        ));
        let search_path = Arc::new(SearchPath {
            engine: self.inner.clone(),
            db: database.to_string(),
            user: user.to_string(),
            names: parking_lot::Mutex::new(default_search_path()),
        });
        ctx.add_analyzer_rule(Arc::new(crate::datetime::TimestampLiterals {
            zone: time_zone.clone(),
        }));
        crate::functions::register(&ctx, database, user, backend_pid);
        let path = search_path.clone();
        crate::functions::register_current_schema(&ctx, move || path.creation_schema());
        crate::arithmetic::register(&ctx)?;
        crate::interval_arith::register(&ctx)?;
        crate::float_text::register(&ctx, Some(time_zone.clone()))?;
        crate::interval_input::register(&ctx)?;
        crate::sum_numeric::register(&ctx);
        crate::numeric_ops::register(&ctx)?;
        crate::pg_catalog::register_functions(
            &ctx,
            user,
            Arc::new(CatalogTables {
                engine: self.inner.clone(),
                db: database.to_string(),
                search_path: Some(search_path.clone()),
            }),
        );
        ctx.register_catalog(
            database,
            Arc::new(BraidCatalogProvider {
                engine: self.inner.clone(),
                db: database.to_string(),
                user: user.to_string(),
                search_path: search_path.clone(),
            }),
        );
        Ok(Session {
            engine: self.inner.clone(),
            ctx,
            database: database.to_string(),
            user: user.to_string(),
            vars: parking_lot::Mutex::new(BTreeMap::new()),
            notices: parking_lot::Mutex::new(Vec::new()),
            txn,
            rows_txn,
            unplanned: std::sync::atomic::AtomicU64::new(0),
            time_zone,
            search_path,
            attached: None,
        })
    }

    /// The name of the stream of `database` whose log id is `id` (`schema.name` outside the
    /// default schema). Read-only; the server labels metrics with it.
    pub fn stream_name(&self, database: &str, id: u64) -> Option<String> {
        self.inner
            .catalog
            .tables(database)
            .into_iter()
            .find(|(_, def)| def.id == id)
            .map(|(schema, def)| {
                if schema == DEFAULT_SCHEMA {
                    def.name
                } else {
                    format!("{schema}.{}", def.name)
                }
            })
    }

    /// Closes every open log (flushes); call once at shutdown.
    pub async fn close(&self) {
        let logs: Vec<_> = self
            .inner
            .open
            .lock()
            .await
            .drain()
            .map(|(_, l)| l)
            .collect();
        for l in logs {
            l.close().await;
        }
        // Sessions and cached plans may still hold a row store, so it is flushed rather than
        // closed: every commit is already durable in its log, and the flush saves the next
        // start from replaying it.
        let stores: Vec<(String, Arc<RowsDb>)> = self
            .inner
            .databases
            .lock()
            .iter()
            .map(|(n, d)| (n.clone(), d.rows.clone()))
            .collect();
        for (db, rows) in stores {
            if let Err(e) = rows.store.flush().await {
                tracing::warn!(database = %db, error = %e, "flushing the row tables failed");
            }
        }
    }
}

/// The name DataFusion resolves unqualified table names in: not a schema but the session's
/// search path ([`SearchPathSchema`]). No schema can take it: `$` never starts an unquoted
/// name.
const SEARCH_PATH_SCHEMA: &str = "$search_path";

/// The search path as `SET search_path` leaves it, before `$user` is resolved.
fn default_search_path() -> Vec<String> {
    vec!["$user".to_string(), DEFAULT_SCHEMA.to_string()]
}

/// A session's `search_path` and how names resolve through it, as in PostgreSQL: schemas of
/// the path that do not exist are skipped, `$user` is the schema named as the session user if
/// there is one, `pg_catalog` is searched first unless the path places it, and CREATE puts an
/// unqualified name into the first existing schema of the path.
#[derive(Debug)]
struct SearchPath {
    engine: Arc<EngineInner>,
    db: String,
    user: String,
    /// As set, `$user` unresolved.
    names: parking_lot::Mutex<Vec<String>>,
}

impl SearchPath {
    /// The existing schemas of the path, in order, each once (`pg_catalog` only where the path
    /// names it).
    fn schemas(&self) -> Vec<String> {
        let names = self.names.lock().clone();
        let mut out: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            let n = if n == "$user" { self.user.clone() } else { n };
            let exists = crate::catalog::SYSTEM_SCHEMAS.contains(&n.as_str())
                || self.engine.catalog.schema_exists(&self.db, &n);
            if exists && !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    /// The schemas an unqualified name is looked up in, in order: `pg_catalog` first unless
    /// the path places it.
    fn lookup_schemas(&self) -> Vec<String> {
        let mut out = self.schemas();
        if !out.iter().any(|s| s == crate::pg_catalog::PG_CATALOG) {
            out.insert(0, crate::pg_catalog::PG_CATALOG.to_string());
        }
        out
    }

    /// Where CREATE puts an unqualified name (what `current_schema()` returns).
    fn creation_schema(&self) -> Option<String> {
        self.schemas().into_iter().next()
    }

    /// The user schema of the path holding relation (table, stream or index) `name`.
    fn find(&self, name: &str) -> Option<String> {
        self.schemas()
            .into_iter()
            .find(|s| self.engine.catalog.relation_exists(&self.db, s, name))
    }
}

#[derive(Debug)]
struct BraidCatalogProvider {
    engine: Arc<EngineInner>,
    db: String,
    /// The session's user, the one role `pg_catalog.pg_roles` lists.
    user: String,
    search_path: Arc<SearchPath>,
}

impl BraidCatalogProvider {
    fn pg_catalog(&self) -> crate::pg_catalog::PgCatalogSchema {
        crate::pg_catalog::PgCatalogSchema::new(
            Arc::new(CatalogTables {
                engine: self.engine.clone(),
                db: self.db.clone(),
                search_path: Some(self.search_path.clone()),
            }),
            &self.user,
        )
    }
}

/// Lists a database's tables for `pg_catalog`.
#[derive(Debug)]
struct CatalogTables {
    engine: Arc<EngineInner>,
    db: String,
    /// The session's search path (`pg_table_is_visible`); `None`: only `public`.
    search_path: Option<Arc<SearchPath>>,
}

impl crate::pg_catalog::TableLister for CatalogTables {
    fn list(&self) -> Vec<(String, TableDef)> {
        self.engine.catalog.tables(&self.db)
    }

    fn schemas(&self) -> Vec<(String, u64)> {
        self.engine.catalog.schemas(&self.db)
    }

    fn search_path(&self) -> Vec<String> {
        match &self.search_path {
            Some(p) => p.lookup_schemas(),
            None => vec![DEFAULT_SCHEMA.to_string()],
        }
    }

    fn database_ids(&self) -> Vec<(String, u64)> {
        self.engine.catalog.databases()
    }

    fn databases(&self) -> Vec<String> {
        self.engine.catalog.database_names()
    }

    fn database(&self) -> Option<String> {
        Some(self.db.clone())
    }

    fn table_bytes(&self, table: &TableDef) -> Option<u64> {
        if table.is_stream() {
            // The open logs; a stream's log is opened when the engine starts or the stream is
            // created, so a miss is a moment of CREATE or DROP (the size is NULL then).
            let open = self.engine.open.try_lock().ok()?;
            return open.get(&table.id)?.size_bytes();
        }
        self.engine
            .rows_for(&self.db)
            .ok()?
            .store
            .table_bytes(table.id)
    }

    fn index_bytes(&self, index_id: u64) -> Option<u64> {
        self.engine
            .rows_for(&self.db)
            .ok()?
            .store
            .table_bytes(index_id)
    }
}

impl CatalogProvider for BraidCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.engine.catalog.schema_names(&self.db);
        names.push(crate::pg_catalog::PG_CATALOG.to_string());
        names
    }
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == crate::pg_catalog::PG_CATALOG {
            return Some(Arc::new(self.pg_catalog()));
        }
        if name == SEARCH_PATH_SCHEMA {
            return Some(Arc::new(SearchPathSchema {
                schemas: BraidSchemaProvider {
                    engine: self.engine.clone(),
                    db: self.db.clone(),
                    schema: String::new(),
                },
                pg_catalog: self.pg_catalog(),
                path: self.search_path.clone(),
            }));
        }
        // A schema that does not exist has no tables (rather than no provider), so that
        // `nosuch.t` fails as PostgreSQL's does: relation "nosuch.t" does not exist.
        Some(Arc::new(BraidSchemaProvider {
            engine: self.engine.clone(),
            db: self.db.clone(),
            schema: name.to_string(),
        }))
    }
}

/// The tables of one schema of the catalog.
#[derive(Debug, Clone)]
struct BraidSchemaProvider {
    engine: Arc<EngineInner>,
    db: String,
    schema: String,
}

impl BraidSchemaProvider {
    fn of(&self, schema: &str) -> BraidSchemaProvider {
        BraidSchemaProvider {
            schema: schema.to_string(),
            ..self.clone()
        }
    }
}

#[async_trait]
impl SchemaProvider for BraidSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.engine.catalog.table_names(&self.db, &self.schema)
    }
    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.engine
            .provider(&self.db, &self.schema, name)
            .await
            .map_err(Error::into_datafusion)
    }
    fn table_exist(&self, name: &str) -> bool {
        self.engine
            .catalog
            .table(&self.db, &self.schema, name)
            .is_some()
    }
}

/// Unqualified names: the first schema of the session's search path that has the table.
#[derive(Debug)]
struct SearchPathSchema {
    /// Any schema's provider, re-aimed per lookup.
    schemas: BraidSchemaProvider,
    pg_catalog: crate::pg_catalog::PgCatalogSchema,
    path: Arc<SearchPath>,
}

impl SearchPathSchema {
    /// The schema of the path `name` resolves in.
    fn schema_of(&self, name: &str) -> Option<String> {
        self.path.lookup_schemas().into_iter().find(|s| {
            if s == crate::pg_catalog::PG_CATALOG {
                self.pg_catalog.table_exist(name)
            } else {
                self.schemas.of(s).table_exist(name)
            }
        })
    }
}

#[async_trait]
impl SchemaProvider for SearchPathSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for s in self.path.schemas() {
            for n in self.schemas.of(&s).table_names() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }
    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.schema_of(name) {
            None => Ok(None),
            Some(s) if s == crate::pg_catalog::PG_CATALOG => self.pg_catalog.table(name).await,
            Some(s) => self.schemas.of(&s).table(name).await,
        }
    }
    fn table_exist(&self, name: &str) -> bool {
        self.schema_of(name).is_some()
    }
}

/// The result of one statement.
pub enum Output {
    /// Rows; `tag` is the command tag (`SELECT`, `EXPLAIN`, `SHOW`).
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        tag: &'static str,
    },
    /// A command; the server prints `tag` and, when given, the row count (`INSERT 0 n`).
    Command { tag: String, rows: Option<u64> },
    /// The server must now receive COPY data and pass it to [`CopyIn::finish`].
    CopyIn(CopyIn),
    /// `COPY ... TO STDOUT`: the server sends these rows as COPY data in `format`.
    CopyOut {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        format: CopyFormat,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows { tag, .. } => write!(f, "Rows({tag})"),
            Output::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Output::CopyIn(c) => write!(f, "CopyIn({} columns)", c.columns.len()),
            Output::CopyOut { format, .. } => write!(f, "CopyOut({format:?})"),
        }
    }
}

fn command(tag: &str) -> Output {
    Output::Command {
        tag: tag.to_string(),
        rows: None,
    }
}

/// What a COPY FROM STDIN loads.
#[derive(Debug)]
enum CopyInto {
    /// A stream: appended durably at the end (or held by the session's block until COMMIT).
    Stream {
        table: StreamTable,
        txn: Arc<TxnBuffer>,
    },
    /// A row table: inserted at the end in the session's block, or in a transaction of its
    /// own committed before the COPY reports its row count.
    Rows {
        writer: RowWriter,
        block: Arc<RowTxn>,
        /// Defaults of the columns the COPY leaves out.
        defaults: LeftOutDefaults,
    },
}

/// A pending `COPY stream_or_table FROM STDIN`.
#[derive(Debug)]
pub struct CopyIn {
    into: CopyInto,
    columns: Vec<ColumnDef>,
    pub format: CopyFormat,
}

impl CopyIn {
    /// Number of columns the client sends per row.
    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// Starts loading: the returned [`CopyLoad`] takes the data as it arrives, parses and
    /// checks it off the async threads, and writes it all at the end.
    pub fn start(self) -> CopyLoad {
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(COPY_QUEUE_CHUNKS);
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (target, worker) = match self.into {
            CopyInto::Stream { table, txn } => {
                let writer = table.writer();
                // Inside a block the block's own scans see the rows: keep them as shown too.
                let in_block = txn.is_open();
                let worker = {
                    let writer = writer.clone();
                    let cancelled = cancelled.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut staged = Staged::new(writer.log.partitions());
                        let mut shown = Vec::new();
                        parse_copy(rx, &self.columns, self.format, &cancelled, |batch| {
                            if in_block {
                                shown.push(writer.encode_batch_shown(&batch, &mut staged)?);
                                Ok(())
                            } else {
                                writer.encode_batch(&batch, &mut staged)
                            }
                        })?;
                        Ok(CopyStaged::Stream(staged, shown))
                    })
                };
                (CopyLoadTarget::Stream { writer, txn }, worker)
            }
            CopyInto::Rows {
                writer,
                block,
                defaults,
            } => {
                let worker = {
                    let cancelled = cancelled.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut batches = Vec::new();
                        parse_copy(rx, &self.columns, self.format, &cancelled, |batch| {
                            batches.push(defaults.fill(batch)?);
                            Ok(())
                        })?;
                        Ok(CopyStaged::Rows(batches))
                    })
                };
                (CopyLoadTarget::Rows { writer, block }, worker)
            }
        };
        CopyLoad {
            tx: Some(tx),
            worker: Some(worker),
            target,
            cancelled,
        }
    }
}

/// What the parser of a COPY produced: encoded stream records, or a row table's batches.
#[derive(Debug)]
enum CopyStaged {
    /// Encoded records, and the rows as a block's scans show them (inside a block only).
    Stream(Staged, Vec<RecordBatch>),
    Rows(Vec<RecordBatch>),
}

/// Where a [`CopyLoad`] writes at the end.
#[derive(Debug)]
enum CopyLoadTarget {
    Stream {
        writer: StreamWriter,
        txn: Arc<TxnBuffer>,
    },
    Rows {
        writer: RowWriter,
        block: Arc<RowTxn>,
    },
}

/// COPY data chunks queued between the connection and the parser: enough to keep the parser
/// busy while the next messages arrive, few enough that a slow parse pushes back on the client.
const COPY_QUEUE_CHUNKS: usize = 256;

/// Parses COPY data chunk by chunk into batches and hands each to `stage` (which encodes or
/// keeps it, writing nothing): a bad row anywhere fails the whole COPY before anything is
/// written, as a COPY in PostgreSQL is all or nothing.
fn parse_copy(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    columns: &[ColumnDef],
    format: CopyFormat,
    cancelled: &std::sync::atomic::AtomicBool,
    mut keep: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    use crate::copy::{rows_to_batch, RowSplitter, COPY_BATCH_ROWS};
    let header = matches!(format, CopyFormat::Csv { header: true, .. }) as usize;
    let mut splitter = RowSplitter::new(format);
    let mut rows = Vec::new();
    let mut line = 1 + header;
    let mut stage = |rows: &mut Vec<crate::copy::Row>, line: &mut usize| -> Result<()> {
        let batch = rows_to_batch(rows, columns, *line)?;
        keep(batch)?;
        *line += rows.len();
        rows.clear();
        Ok(())
    };
    while let Some(chunk) = rx.blocking_recv() {
        if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::InvalidInput("COPY cancelled".into()));
        }
        rows.extend(splitter.push(&chunk)?);
        while rows.len() >= COPY_BATCH_ROWS {
            let rest = rows.split_off(COPY_BATCH_ROWS);
            stage(&mut rows, &mut line)?;
            rows = rest;
        }
    }
    rows.extend(splitter.finish()?);
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(COPY_BATCH_ROWS));
        stage(&mut rows, &mut line)?;
        rows = rest;
    }
    Ok(())
}

/// A COPY in progress: see [`CopyIn::start`].
#[derive(Debug)]
pub struct CopyLoad {
    tx: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    worker: Option<tokio::task::JoinHandle<Result<CopyStaged>>>,
    target: CopyLoadTarget,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl CopyLoad {
    /// Where the connection sends CopyData payloads. Sending fails once the parser has stopped
    /// on an error; the error is reported by [`CopyLoad::finish`].
    pub fn sender(&self) -> Option<tokio::sync::mpsc::Sender<bytes::Bytes>> {
        self.tx.clone()
    }

    /// End of data: waits for the parser, appends every staged record durably and returns
    /// the row count.
    pub async fn finish(mut self) -> Result<u64> {
        self.tx = None;
        let worker = self
            .worker
            .take()
            .ok_or_else(|| Error::InvalidInput("COPY already finished".into()))?;
        let staged = worker
            .await
            .map_err(|e| Error::InvalidInput(format!("COPY parser stopped: {e}")))??;
        match (&self.target, staged) {
            (CopyLoadTarget::Stream { writer, txn }, CopyStaged::Stream(staged, shown)) => {
                match txn.hold_staged(writer, staged, shown) {
                    Ok(rows) => Ok(rows),
                    Err(staged) => writer.append_staged(staged).await,
                }
            }
            (CopyLoadTarget::Rows { writer, block }, CopyStaged::Rows(batches)) => {
                writer.insert_batches(block, &batches).await
            }
            _ => Err(Error::InvalidInput(
                "COPY parser produced data for another kind of table".into(),
            )),
        }
    }
}

impl Drop for CopyLoad {
    /// A COPY abandoned (CopyFail, a dropped connection) stops its parser at the next chunk.
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.cancelled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A statement parsed (and, where DataFusion runs it, planned) once and executed many times.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    kind: PreparedKind,
}

#[derive(Debug, Clone)]
enum PreparedKind {
    Empty,
    Plan {
        /// Boxed: a plan is large and most statements prepared are short-lived.
        plan: Box<LogicalPlan>,
        params: Vec<Option<DataType>>,
        /// Set when the statement is an INSERT the fast path runs without DataFusion.
        fast: Option<Arc<FastInsert>>,
        /// Set when the statement reads, updates or deletes row-table rows by whole primary
        /// keys, which [`RowPoint`] runs without DataFusion.
        point: Option<Arc<RowPoint>>,
        /// The catalog generation the plan was made against.
        generation: u64,
        /// RETURNING / ON CONFLICT of a row-table write, run by braid around the plan.
        clauses: Option<Arc<RowClauses>>,
    },
    Direct {
        statement: Box<Statement>,
        stream_ddl: bool,
    },
    /// CREATE DATABASE or DROP DATABASE, which sqlparser does not read as PostgreSQL writes
    /// them.
    Database(databases::DatabaseDdl),
}

/// The clauses of an INSERT, UPDATE or DELETE on a row table that DataFusion does not plan:
/// they are taken off the statement before planning and applied around the planned write.
#[derive(Debug)]
pub struct RowClauses {
    returning: Option<Returning>,
    on_conflict: Option<ConflictPlan>,
}

impl Prepared {
    /// Parameter types in `$n` order (`None` = not inferred).
    pub fn param_types(&self) -> Vec<Option<DataType>> {
        match &self.kind {
            PreparedKind::Plan { params, .. } => params.clone(),
            _ => Vec::new(),
        }
    }

    /// The schema of the rows the statement returns, if it returns rows.
    pub fn result_schema(&self) -> Option<SchemaRef> {
        match &self.kind {
            PreparedKind::Plan {
                clauses: Some(c), ..
            } => c.returning.as_ref().map(Returning::schema),
            PreparedKind::Plan { plan, .. } => match plan.as_ref() {
                LogicalPlan::Dml(_) => None,
                p => Some(Arc::new(p.schema().as_arrow().clone())),
            },
            PreparedKind::Direct { statement, .. } => match statement.as_ref() {
                Statement::ShowVariable { variable } => Some(show_schema(&show_name(variable))),
                _ => None,
            },
            PreparedKind::Empty | PreparedKind::Database(_) => None,
        }
    }
}

/// One connection's session.
pub struct Session {
    engine: Arc<EngineInner>,
    ctx: SessionContext,
    database: String,
    user: String,
    vars: parking_lot::Mutex<BTreeMap<String, String>>,
    /// Stream appends held by an open transaction block.
    txn: Arc<TxnBuffer>,
    /// The row-table transaction of an open block.
    rows_txn: Arc<RowTxn>,
    /// Statements run from the plan made at Parse, without DataFusion planning them again.
    unplanned: std::sync::atomic::AtomicU64,
    /// The `TimeZone` setting, read once when set (every result with a timestamptz uses it).
    time_zone: Arc<parking_lot::Mutex<crate::types::SessionTimeZone>>,
    /// The `search_path` setting, shared with the session's catalog provider.
    search_path: Arc<SearchPath>,
    /// Counts the session as a user of its database (none for the server's own sessions).
    attached: Option<Attached>,
    /// NOTICEs the running statement raised, for the server to send before its result.
    notices: parking_lot::Mutex<Vec<Notice>>,
}

/// A NOTICE for the client, as PostgreSQL raises them: `CREATE TABLE IF NOT EXISTS` of a
/// table that exists, `DROP ... IF EXISTS` of one that does not, what `DROP SCHEMA ... CASCADE`
/// dropped with it. psql prints them; drivers hand them to a notice callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The SQLSTATE PostgreSQL gives the same notice (`42P07` for a relation that already
    /// exists, `00000` for one that does not).
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("database", &self.database)
            .finish()
    }
}

/// Normalises an identifier as PostgreSQL does: unquoted names fold to lower case.
fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn object_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => ident_name(i),
            other => other.to_string(),
        })
        .collect()
}

fn show_name(variable: &[Ident]) -> String {
    variable
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn show_schema(name: &str) -> SchemaRef {
    if name == "all" {
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]))
    } else {
        Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
    }
}

/// Whether row table `table` holds a row now.
async fn has_rows(rows: &RowsDb, table: u64) -> Result<bool> {
    use std::ops::Bound;
    let txn = rows.store.begin();
    let mut scan = txn
        .scan(table, Bound::Unbounded, Bound::Unbounded)
        .map_err(rows_error)?;
    Ok(scan.next().await.map_err(rows_error)?.is_some())
}

/// PostgreSQL's 22023 for a time zone braid cannot read.
fn check_time_zone(value: &str) -> Result<crate::types::SessionTimeZone> {
    match crate::types::SessionTimeZone::parse(value) {
        Some(z) => Ok(z),
        None => Err(Error::InvalidParameter(format!(
            "invalid value for parameter \"TimeZone\": \"{value}\""
        ))),
    }
}

/// The isolation a BEGIN or SET TRANSACTION names: `Some(true)` for READ COMMITTED (and READ
/// UNCOMMITTED, which PostgreSQL runs as READ COMMITTED), `Some(false)` for REPEATABLE READ
/// and SERIALIZABLE, `None` when it names none.
fn isolation_of(modes: &[datafusion::sql::sqlparser::ast::TransactionMode]) -> Option<bool> {
    use datafusion::sql::sqlparser::ast::{TransactionIsolationLevel as L, TransactionMode};
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::IsolationLevel(l) => {
            Some(matches!(l, L::ReadCommitted | L::ReadUncommitted))
        }
        _ => None,
    })
}

/// Settings every session starts with; drivers read several of them.
fn default_settings() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "read committed"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("max_identifier_length", "63"),
        ("search_path", "\"$user\", public"),
        ("server_encoding", "UTF8"),
        ("server_version", "15.0"),
        ("server_version_num", "150000"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
    ])
}

fn literal_text(e: &SqlExpr) -> String {
    let s = e.to_string();
    let t = s.trim();
    if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
        t[1..t.len() - 1].replace("''", "'")
    } else {
        t.to_string()
    }
}

/// `pg_catalog.f(...)` → `f(...)`: DataFusion resolves functions by bare name, and psql
/// qualifies every catalog function it calls.
fn strip_pg_catalog_functions(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::visit_expressions_mut;
    let _ = visit_expressions_mut(stmt, |e| {
        if let SqlExpr::Function(f) = e {
            if f.name.0.len() == 2
                && f.name
                    .0
                    .first()
                    .is_some_and(|p| p.to_string().eq_ignore_ascii_case("pg_catalog"))
            {
                let last = f.name.0.pop();
                f.name.0 = last.into_iter().collect();
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

fn one_batch_stream(schema: SchemaRef, batch: RecordBatch) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(vec![Ok(batch)]),
    ))
}

fn parse_error(e: impl std::fmt::Display) -> Error {
    Error::Syntax(e.to_string())
}

impl Session {
    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Splits a simple-query string into statements.
    pub fn split(sql: &str) -> Vec<String> {
        split_statements(sql)
    }

    /// Parses one statement; `stream_ddl` says it was spelled CREATE/DROP STREAM.
    fn parse_one(&self, sql: &str) -> Result<Option<(Statement, bool)>> {
        let (text, stream_ddl) = match rewrite_stream_ddl(sql) {
            Some(t) => (t, true),
            None => (sql.to_string(), false),
        };
        let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, &text).map_err(parse_error)?;
        match stmts.len() {
            0 => Ok(None),
            1 => Ok(stmts.pop().map(|s| (s, stream_ddl))),
            _ => Err(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            )),
        }
    }

    /// Resolves a relation name to (schema, name): an unqualified name to the first schema of
    /// the search path that holds a relation of that name (or, when none does, the schema
    /// CREATE would use, so that the caller reports the name missing).
    fn resolve(&self, name: &ObjectName) -> Result<(String, String)> {
        let parts = object_parts(name);
        match parts.as_slice() {
            [t] => {
                let schema = self
                    .search_path
                    .find(t)
                    .or_else(|| self.search_path.creation_schema())
                    .unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
                Ok((schema, t.clone()))
            }
            [s, t] => Ok((s.clone(), t.clone())),
            [d, s, t] if *d == self.database => Ok((s.clone(), t.clone())),
            [d, _, _] => Err(Error::Unsupported(format!(
                "cross-database references are not implemented: {d}"
            ))),
            _ => Err(Error::Syntax(format!("improper qualified name: {name}"))),
        }
    }

    /// Where CREATE puts `name`: its schema, which must exist, or the first existing schema
    /// of the search path.
    fn creation_target(&self, name: &ObjectName) -> Result<(String, String)> {
        let (schema, table) = match object_parts(name).as_slice() {
            [t] => (
                self.search_path
                    .creation_schema()
                    .ok_or(Error::NoSchemaSelected)?,
                t.clone(),
            ),
            _ => self.resolve(name)?,
        };
        if crate::catalog::SYSTEM_SCHEMAS.contains(&schema.as_str()) {
            return Err(Error::PermissionDenied {
                message: format!("permission denied to create \"{schema}.{table}\""),
                detail: Some("System catalog modifications are currently disallowed.".into()),
            });
        }
        if !self.engine.catalog.schema_exists(&self.database, &schema) {
            return Err(Error::UndefinedSchema(schema));
        }
        Ok((schema, table))
    }

    fn is_row_table(&self, name: &ObjectName) -> bool {
        self.stream_def(name).is_some_and(|d| !d.is_stream())
    }

    fn stream_def(&self, name: &ObjectName) -> Option<TableDef> {
        let (schema, table) = self.resolve(name).ok()?;
        self.engine.catalog.table(&self.database, &schema, &table)
    }

    async fn stream_table(&self, name: &ObjectName) -> Result<StreamTable> {
        let (schema, table) = self.resolve(name)?;
        self.engine
            .stream_table(&self.database, &schema, &table)
            .await?
            .ok_or(Error::UndefinedTable(table))
    }

    /// Applies braid's rewrites (hidden columns, INSERT column lists) to a statement.
    fn rewrite(&self, stmt: &mut Statement) -> Result<()> {
        let columns_of = |name: &ObjectName| -> Option<Vec<String>> {
            self.stream_def(name)
                .map(|d| d.columns.iter().map(|c| c.name.clone()).collect())
        };
        strip_pg_catalog_functions(stmt);
        let zone = *self.time_zone.lock();
        match stmt {
            Statement::Query(q) => {
                hide_hidden_columns(q, &columns_of);
                name_columns_as_postgres(q);
                crate::pg_catalog::rewrite::rewrite_catalog_query(q);
                crate::sql::type_integer_constants(q);
            }
            Statement::Explain { statement, .. } => self.rewrite(statement)?,
            Statement::Insert(insert) => {
                if let Some(src) = &mut insert.source {
                    hide_hidden_columns(src, &columns_of);
                    // Rows go in by position, but DataFusion still refuses a source with two
                    // output columns of one name (`SELECT v, v`, `SELECT 1, 1`).
                    name_columns_as_postgres(src);
                    crate::sql::nested_values_as_selects(src);
                }
                let target = match &insert.table {
                    TableObject::TableName(name) => self.stream_def(name),
                    _ => None,
                };
                if let Some(def) = &target {
                    self.normalize_insert_timestamps(insert, def, &zone);
                }
                if let TableObject::TableName(name) = &insert.table {
                    match self.stream_def(name) {
                        Some(def) if !def.is_stream() => self.rewrite_row_insert(insert, &def)?,
                        _ => {
                            if insert.columns.is_empty() {
                                if let Some(cols) = columns_of(name) {
                                    insert.columns = cols
                                        .into_iter()
                                        .map(|c| ObjectName::from(vec![Ident::with_quote('"', c)]))
                                        .collect();
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads the string literals an INSERT's VALUES gives timestamp columns as PostgreSQL does
    /// ([`crate::datetime`]); targets are the listed columns, else the table's in order.
    fn normalize_insert_timestamps(
        &self,
        insert: &mut datafusion::sql::sqlparser::ast::Insert,
        def: &TableDef,
        zone: &crate::types::SessionTimeZone,
    ) {
        let targets: Vec<ColumnType> = if insert.columns.is_empty() {
            def.column_types()
        } else {
            insert
                .columns
                .iter()
                .map(|n| {
                    let name = object_parts(n).last().cloned().unwrap_or_default();
                    def.columns
                        .iter()
                        .find(|c| c.name == name)
                        .map_or(ColumnType::Text, |c| c.ty)
                })
                .collect()
        };
        if let Some(src) = insert.source.as_deref_mut() {
            crate::datetime::normalize_values_timestamps(&mut src.body, &targets, zone);
        }
    }

    /// An INSERT into a row table, made plannable by DataFusion as PostgreSQL reads it:
    /// `DEFAULT VALUES` becomes a row of `DEFAULT`s; without a column list, `VALUES` rows
    /// shorter than the table fill its first columns (the rest take their defaults); the
    /// `DEFAULT` keyword in `VALUES` becomes the column's default expression.
    fn rewrite_row_insert(
        &self,
        insert: &mut datafusion::sql::sqlparser::ast::Insert,
        def: &TableDef,
    ) -> Result<()> {
        use datafusion::sql::sqlparser::ast::SetExpr;
        let quoted = |c: &str| ObjectName::from(vec![Ident::with_quote('"', c)]);
        if insert.source.is_none() && insert.columns.is_empty() {
            let row = vec!["DEFAULT"; def.columns.len()].join(", ");
            let query = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&format!("VALUES ({row})"))
                .and_then(|mut p| p.parse_query())
                .map_err(parse_error)?;
            insert.source = Some(query);
        }
        if insert.columns.is_empty() {
            let width = match insert.source.as_deref().map(|q| q.body.as_ref()) {
                Some(SetExpr::Values(v)) => v.rows.first().map_or(0, |r| r.content.len()),
                _ => def.columns.len(),
            };
            insert.columns = def
                .columns
                .iter()
                .take(width.max(1))
                .map(|c| quoted(&c.name))
                .collect();
            if width > def.columns.len() {
                return Err(Error::SyntaxRule(
                    "INSERT has more expressions than target columns".into(),
                ));
            }
        }
        let targets: Vec<&ColumnDef> = insert
            .columns
            .iter()
            .map(|n| {
                let parts = object_parts(n);
                let name = parts.last().cloned().unwrap_or_default();
                def.columns.iter().find(|c| c.name == name)
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        if let Some(src) = insert.source.as_deref_mut() {
            if targets.len() == insert.columns.len() {
                crate::rows::default::replace_default_keywords(&mut src.body, &targets)?;
            }
        }
        Ok(())
    }

    /// Runs one statement of a simple query.
    pub async fn execute(&self, sql: &str) -> Result<Output> {
        let prepared = self.prepare(sql).await?;
        self.execute_prepared(&prepared, Vec::new()).await
    }

    /// Parses and, for statements DataFusion runs, plans `sql`.
    pub async fn prepare(&self, sql: &str) -> Result<Prepared> {
        if let Some(ddl) = databases::parse_database_ddl(sql) {
            return Ok(Prepared {
                sql: sql.to_string(),
                kind: PreparedKind::Database(ddl?),
            });
        }
        let Some((mut stmt, stream_ddl)) = self.parse_one(sql)? else {
            return Ok(Prepared {
                sql: sql.to_string(),
                kind: PreparedKind::Empty,
            });
        };
        // Every statement, also those run directly (SET), but DDL: a column DEFAULT is kept in
        // the catalog as the user wrote it, and read when it is planned
        // (`rows::default::plan_default`).
        if !matches!(stmt, Statement::CreateTable(_) | Statement::AlterTable(_)) {
            crate::sql::canonical_intervals(&mut stmt)?;
            crate::sql::numeric_literals(&mut stmt)?;
        }
        let planned = match &stmt {
            Statement::Query(_) | Statement::Insert(_) | Statement::Explain { .. } => true,
            // UPDATE and DELETE of row tables run in DataFusion; on streams (and missing
            // tables) they stay with execute_direct, which explains the refusal.
            Statement::Update(u) => match &u.table.relation {
                TableFactor::Table { name, .. } => self.is_row_table(name),
                _ => false,
            },
            Statement::Delete(d) => match &d.from {
                datafusion::sql::sqlparser::ast::FromTable::WithFromKeyword(t)
                | datafusion::sql::sqlparser::ast::FromTable::WithoutKeyword(t) => {
                    t.len() == 1
                        && t.iter().all(|t| match &t.relation {
                            TableFactor::Table { name, .. } => self.is_row_table(name),
                            _ => false,
                        })
                }
            },
            _ => false,
        };
        if !planned {
            return Ok(Prepared {
                sql: sql.to_string(),
                kind: PreparedKind::Direct {
                    statement: Box::new(stmt),
                    stream_ddl,
                },
            });
        }
        self.rewrite(&mut stmt)?;
        let clauses = self.take_row_clauses(&mut stmt)?.map(Arc::new);
        let generation = self.engine.catalog.generation();
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await?;
        let plan = self.relax_values_nullability(plan)?;
        let plan = type_cast_placeholders(plan)?;
        let types = plan.get_parameter_types()?;
        let mut params: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(k, v)| {
                k.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, v))
            })
            .collect();
        params.sort_by_key(|(i, _)| *i);
        let count = params.last().map_or(0, |(i, _)| *i);
        let mut ordered = vec![None; count];
        for (i, t) in params {
            if let Some(slot) = ordered.get_mut(i.saturating_sub(1)) {
                *slot = t;
            }
        }
        let fast = match clauses {
            Some(_) => None,
            None => FastInsert::try_new(&self.ctx, &plan, &ordered)?.map(Arc::new),
        };
        let point = match (&clauses, &fast) {
            (None, None) => RowPoint::try_new(&self.ctx, &plan, &ordered)?.map(Arc::new),
            _ => None,
        };
        Ok(Prepared {
            sql: sql.to_string(),
            kind: PreparedKind::Plan {
                plan: Box::new(plan),
                params: ordered,
                fast,
                point,
                generation,
                clauses,
            },
        })
    }

    /// `INSERT INTO table VALUES ...`: DataFusion types the VALUES with the table's columns,
    /// nullability included, so a NULL for a NOT NULL column would fail inside Arrow with a
    /// message about `column2`. For row tables the VALUES are made nullable and the table's
    /// sink reports the violation as PostgreSQL does (column, relation, failing row).
    fn relax_values_nullability(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::common::DFSchema;
        use datafusion::logical_expr::Values;
        let LogicalPlan::Dml(d) = &plan else {
            return Ok(plan);
        };
        let to_row_table = matches!(d.op, WriteOp::Insert(_))
            && datafusion::datasource::source_as_provider(&d.target)
                .is_ok_and(|p| p.downcast_ref::<RowTable>().is_some());
        if !to_row_table {
            return Ok(plan);
        }
        let input = d.input.as_ref().clone().transform_up(|p| match p {
            LogicalPlan::Values(v) => {
                let fields: Vec<Field> = v
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect();
                let schema =
                    DFSchema::from_unqualified_fields(fields.into(), v.schema.metadata().clone())?;
                Ok(Transformed::yes(LogicalPlan::Values(Values {
                    schema: Arc::new(schema),
                    values: v.values,
                })))
            }
            other => other.recompute_schema().map(Transformed::yes),
        })?;
        let mut d = d.clone();
        d.input = Arc::new(input.data);
        Ok(LogicalPlan::Dml(d))
    }

    /// The transaction block failed (an error inside it): what it holds will never commit, and
    /// a COMMIT now ends it as a ROLLBACK.
    pub fn transaction_failed(&self) {
        if self.txn.is_open() {
            self.txn.rollback();
            self.txn.begin();
        }
        self.rows_txn.fail();
    }

    /// Executes a prepared statement with parameter values (`$1` first).
    pub async fn execute_prepared(&self, p: &Prepared, params: Vec<ScalarValue>) -> Result<Output> {
        match &p.kind {
            PreparedKind::Empty => Ok(command("")),
            PreparedKind::Database(ddl) => self.database_ddl(ddl).await,
            PreparedKind::Direct {
                statement,
                stream_ddl,
            } => self.execute_direct(statement, *stream_ddl).await,
            PreparedKind::Plan {
                generation,
                params: types,
                ..
            } if *generation != self.engine.catalog.generation() => {
                // A table was created or dropped since Parse: the plan may name a dropped
                // stream's log. Plan again, as PostgreSQL re-plans a cached statement, and
                // refuse (as it does) when the statement would now take or return other types.
                let again = Box::pin(self.prepare(&p.sql)).await?;
                if again.param_types() != *types || again.result_schema() != p.result_schema() {
                    return Err(Error::Unsupported(
                        "cached plan must not change result type".into(),
                    ));
                }
                Box::pin(self.execute_prepared(&again, params)).await
            }
            PreparedKind::Plan {
                fast: Some(fast), ..
            } => {
                let rows = fast.execute(params, &self.txn, &self.rows_txn).await?;
                self.count_unplanned();
                Ok(Output::Command {
                    tag: "INSERT".into(),
                    rows: Some(rows),
                })
            }
            PreparedKind::Plan {
                point: Some(point),
                plan,
                clauses,
                ..
            } => match point.execute(&params, &self.rows_txn).await? {
                Some(out) => {
                    self.count_unplanned();
                    Ok(out)
                }
                None => self.execute_planned(plan, clauses.as_deref(), params).await,
            },
            PreparedKind::Plan { plan, clauses, .. } => {
                self.execute_planned(plan, clauses.as_deref(), params).await
            }
        }
    }

    /// The session's `TimeZone`, for timestamptz output.
    pub fn time_zone(&self) -> crate::types::SessionTimeZone {
        *self.time_zone.lock()
    }

    fn count_unplanned(&self) {
        self.unplanned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The NOTICEs raised since the last call, oldest first; the server sends them ahead of
    /// the statement's result (or error).
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock())
    }

    /// Raises a NOTICE with PostgreSQL's SQLSTATE for it.
    pub(crate) fn notice(&self, code: &'static str, message: String) {
        self.notices.lock().push(Notice {
            code,
            message,
            detail: None,
        });
    }

    /// `... IF EXISTS` of an object that does not exist: PostgreSQL's `<kind> "<name>" does
    /// not exist, skipping`.
    pub(crate) fn skipped_missing(&self, kind: &str, name: &str) {
        self.notice(
            "00000",
            format!("{kind} \"{name}\" does not exist, skipping"),
        );
    }

    /// How many statements this session ran from the plan made at Parse, without DataFusion
    /// planning them again (prepared INSERTs of rows, and reads and writes by primary key).
    pub fn unplanned_statements(&self) -> u64 {
        self.unplanned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a planned statement through DataFusion with its parameters bound.
    async fn execute_planned(
        &self,
        plan: &LogicalPlan,
        clauses: Option<&RowClauses>,
        params: Vec<ScalarValue>,
    ) -> Result<Output> {
        let plan = if params.is_empty() {
            plan.clone()
        } else {
            plan.clone().with_param_values(params)?
        };
        match clauses {
            Some(c) => self.execute_with_clauses(plan, c).await,
            None => self.execute_plan(plan).await,
        }
    }

    /// Takes RETURNING and ON CONFLICT (and the INSERT's table alias, which only they can use)
    /// off an INSERT, UPDATE or DELETE of a row table and plans them; `None` when the
    /// statement has neither.
    fn take_row_clauses(&self, stmt: &mut Statement) -> Result<Option<RowClauses>> {
        use datafusion::sql::sqlparser::ast::{FromTable, OnInsert};
        let (name, alias, returning, on) = match stmt {
            Statement::Insert(insert) => {
                let TableObject::TableName(name) = &insert.table else {
                    return Ok(None);
                };
                if !self.is_row_table(name) {
                    return Ok(None);
                }
                // Only RETURNING and ON CONFLICT can use the alias; DataFusion refuses it.
                let alias = insert.table_alias.take().map(|a| ident_name(&a.alias));
                if insert.returning.is_none() && insert.on.is_none() {
                    return Ok(None);
                }
                let on = match insert.on.take() {
                    None => None,
                    Some(OnInsert::OnConflict(c)) => Some(c),
                    Some(other) => {
                        return Err(Error::Unsupported(format!(
                            "{} is not supported; use ON CONFLICT",
                            other.to_string().trim()
                        )))
                    }
                };
                (name.clone(), alias, insert.returning.take(), on)
            }
            Statement::Update(u) => {
                let TableFactor::Table { name, alias, .. } = &u.table.relation else {
                    return Ok(None);
                };
                if u.returning.is_none() || !self.is_row_table(name) {
                    return Ok(None);
                }
                let alias = alias.as_ref().map(|a| ident_name(&a.name));
                (name.clone(), alias, u.returning.take(), None)
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t)) = &d.from;
                let Some(TableFactor::Table { name, alias, .. }) = t.first().map(|t| &t.relation)
                else {
                    return Ok(None);
                };
                if d.returning.is_none() || !self.is_row_table(name) {
                    return Ok(None);
                }
                let alias = alias.as_ref().map(|a| ident_name(&a.name));
                (name.clone(), alias, d.returning.take(), None)
            }
            _ => return Ok(None),
        };
        let def = self
            .stream_def(&name)
            .ok_or_else(|| Error::UndefinedTable(name.to_string()))?;
        let qualifier = alias.unwrap_or_else(|| def.name.clone());
        let schema = crate::rows::table::row_schema(&def);
        let state = self.ctx.state();
        let returning = returning
            .map(|items| Returning::plan(&state, &schema, &qualifier, &items))
            .transpose()?;
        let on_conflict = on
            .map(|on| ConflictPlan::plan(&state, &def, &schema, &qualifier, &on))
            .transpose()?;
        Ok(Some(RowClauses {
            returning,
            on_conflict,
        }))
    }

    /// Runs a row-table write with RETURNING or ON CONFLICT: DataFusion plans the write, and
    /// its physical plan is taken apart — the INSERT's input rows go through
    /// [`insert_rows`], an UPDATE/DELETE runs producing the rows it changed — and RETURNING is
    /// evaluated over the rows written.
    async fn execute_with_clauses(&self, plan: LogicalPlan, c: &RowClauses) -> Result<Output> {
        use datafusion::datasource::sink::DataSinkExec;
        let tag = match &plan {
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Insert(_),
                ..
            }) => "INSERT",
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Update,
                ..
            }) => "UPDATE",
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Delete,
                ..
            }) => "DELETE",
            _ => return self.execute_plan(plan).await,
        };
        let state = self.ctx.state();
        let physical = self
            .ctx
            .execute_logical_plan(plan)
            .await?
            .create_physical_plan()
            .await?;
        let task = self.ctx.task_ctx();
        let internal = |what: &str| {
            Error::DataFusion(datafusion::error::DataFusionError::Internal(format!(
                "the planned {what} is not a row table write"
            )))
        };
        let (count, rows) = if tag == "INSERT" {
            let sink_exec = physical
                .downcast_ref::<DataSinkExec>()
                .ok_or_else(|| internal("INSERT"))?;
            let sink = sink_exec
                .sink()
                .downcast_ref::<RowSink>()
                .ok_or_else(|| internal("INSERT"))?;
            let input = datafusion::physical_plan::execute_stream(sink_exec.input().clone(), task)?;
            let outcome = insert_rows(
                &state,
                &sink.writer,
                sink.txn.clone(),
                input,
                c.on_conflict.as_ref(),
                c.returning.is_some(),
            )
            .await?;
            (outcome.count, outcome.rows)
        } else {
            // The row table's plan may sit under wrappers DataFusion adds; it is the write.
            let mut node = physical.clone();
            while node.downcast_ref::<RowDmlExec>().is_none() {
                let next = match node.children().as_slice() {
                    [only] => Arc::clone(only),
                    _ => return Err(internal(tag)),
                };
                node = next;
            }
            let dml = node
                .downcast_ref::<RowDmlExec>()
                .ok_or_else(|| internal(tag))?;
            let exec: Arc<dyn datafusion::physical_plan::ExecutionPlan> =
                Arc::new(dml.with_returning());
            let rows = datafusion::physical_plan::collect(exec, task).await?;
            let n = rows.iter().map(|b| b.num_rows() as u64).sum();
            (n, rows)
        };
        let Some(returning) = &c.returning else {
            return Ok(Output::Command {
                tag: tag.into(),
                rows: Some(count),
            });
        };
        let batches = returning.evaluate(&state, &rows)?;
        let schema = returning.schema();
        Ok(Output::Rows {
            schema: schema.clone(),
            stream: Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter(batches.into_iter().map(Ok)),
            )),
            // The server adds the row count: "INSERT 0 n", "UPDATE n", "DELETE n".
            tag: if tag == "INSERT" { "INSERT 0" } else { tag },
        })
    }

    async fn execute_plan(&self, plan: LogicalPlan) -> Result<Output> {
        match &plan {
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Insert(_),
                ..
            }) => {
                let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
                let mut rows = 0;
                for b in &batches {
                    if let Some(c) = b.column_by_name("count") {
                        if let Some(a) = c.as_primitive_opt::<UInt64Type>() {
                            rows += a.iter().flatten().sum::<u64>();
                        }
                    }
                }
                Ok(Output::Command {
                    tag: "INSERT".into(),
                    rows: Some(rows),
                })
            }
            LogicalPlan::Dml(DmlStatement {
                op: op @ (WriteOp::Update | WriteOp::Delete),
                ..
            }) => {
                let tag = if matches!(op, WriteOp::Update) {
                    "UPDATE"
                } else {
                    "DELETE"
                };
                let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
                let mut rows = 0;
                for b in &batches {
                    if let Some(c) = b.column_by_name("count") {
                        if let Some(a) = c.as_primitive_opt::<UInt64Type>() {
                            rows += a.iter().flatten().sum::<u64>();
                        }
                    }
                }
                Ok(Output::Command {
                    tag: tag.into(),
                    rows: Some(rows),
                })
            }
            LogicalPlan::Dml(d) => Err(Error::Unsupported(format!(
                "{} is not supported on \"{}\"",
                d.op, d.table_name
            ))),
            LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::DescribeTable(_) => Err(Error::Unsupported(
                "this statement is not supported by braid".into(),
            )),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let stream = df.execute_stream().await?;
                Ok(Output::Rows {
                    schema,
                    stream,
                    tag: "EXPLAIN",
                })
            }
            _ => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let stream = df.execute_stream().await?;
                Ok(Output::Rows {
                    schema,
                    stream,
                    tag: "SELECT",
                })
            }
        }
    }

    async fn execute_direct(&self, stmt: &Statement, stream_ddl: bool) -> Result<Output> {
        match stmt {
            Statement::CreateTable(ct) if stream_ddl => self.create_stream(ct).await,
            Statement::CreateTable(ct) => self.create_table(ct).await,
            Statement::CreateIndex(ci) => self.create_index(ci).await,
            Statement::Drop {
                object_type: ObjectType::Index,
                if_exists,
                names,
                ..
            } => self.drop_indexes(names, *if_exists).await,
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => self.drop_streams(names, *if_exists, stream_ddl).await,
            Statement::CreateSchema {
                schema_name,
                if_not_exists,
                with: None,
                options: None,
                default_collate_spec: None,
                clone: None,
            } => self.create_schema(schema_name, *if_not_exists).await,
            Statement::Drop {
                object_type: ObjectType::Schema,
                if_exists,
                names,
                cascade,
                ..
            } => self.drop_schemas(names, *if_exists, *cascade).await,
            Statement::StartTransaction { modes, .. } => {
                self.txn.begin();
                self.rows_txn.begin(isolation_of(modes)).await;
                Ok(command("BEGIN"))
            }
            Statement::Commit { .. } => {
                if let Some(t) = self.rows_txn.end().await {
                    if let Err(e) = t.commit().await {
                        // The block is over either way, as after a failed COMMIT in PostgreSQL.
                        self.txn.rollback();
                        return Err(rows_error(e));
                    }
                }
                self.txn.commit().await?;
                Ok(command("COMMIT"))
            }
            Statement::Rollback { .. } => {
                drop(self.rows_txn.end().await);
                self.txn.rollback();
                Ok(command("ROLLBACK"))
            }
            Statement::Set(set) => self.set(set).await,
            Statement::ShowVariable { variable } => self.show(&show_name(variable)),
            Statement::Discard { .. } => Ok(command("DISCARD ALL")),
            // The server drops the named statement from the connection's statement store.
            Statement::Deallocate { .. } => Ok(command("DEALLOCATE")),
            Statement::Update(u) => {
                if let TableFactor::Table { name, .. } = &u.table.relation {
                    self.refuse_write_on(name, "UPDATE").await?;
                }
                Err(Error::Unsupported("UPDATE is not supported".into()))
            }
            Statement::Delete(d) => {
                let names: Vec<ObjectName> = match &d.from {
                    datafusion::sql::sqlparser::ast::FromTable::WithFromKeyword(t)
                    | datafusion::sql::sqlparser::ast::FromTable::WithoutKeyword(t) => t
                        .iter()
                        .filter_map(|t| match &t.relation {
                            TableFactor::Table { name, .. } => Some(name.clone()),
                            _ => None,
                        })
                        .collect(),
                };
                for n in &names {
                    self.refuse_write_on(n, "DELETE").await?;
                }
                Err(Error::Unsupported("DELETE is not supported".into()))
            }
            Statement::Truncate(t) => self.truncate(t).await,
            Statement::AlterTable(at) => self.alter_table(at).await,
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                self.copy(source, *to, target, options, legacy_options)
                    .await
            }
            other => {
                let name = other.to_string();
                let first = name
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                Err(Error::Unsupported(format!(
                    "{first} is not supported by braid"
                )))
            }
        }
    }

    async fn create_table(
        &self,
        ct: &datafusion::sql::sqlparser::ast::CreateTable,
    ) -> Result<Output> {
        let (schema, name) = self.creation_target(&ct.name)?;
        let rows = self.engine.rows_for(&self.database)?;
        if ct.query.is_some() {
            return Err(Error::Unsupported(
                "CREATE TABLE ... AS SELECT is not supported; create the table, then INSERT ... SELECT"
                    .into(),
            ));
        }
        if !matches!(ct.table_options, CreateTableOptions::None) {
            return Err(Error::Unsupported(
                "table options (WITH ...) are not supported on tables yet".into(),
            ));
        }
        let mut columns: Vec<ColumnDef> = Vec::with_capacity(ct.columns.len());
        let mut primary_key: Option<Vec<String>> = None;
        // UNIQUE constraints: (constraint name, columns).
        let mut uniques: Vec<(Option<String>, Vec<String>, bool)> = Vec::new();
        let multiple = || {
            Error::InvalidTableDefinition(format!(
                "multiple primary keys for table \"{name}\" are not allowed"
            ))
        };
        for c in &ct.columns {
            let cname = ident_name(&c.name);
            if columns.iter().any(|x| x.name == cname) {
                return Err(Error::DuplicateColumn(format!(
                    "column \"{cname}\" specified more than once"
                )));
            }
            let mut nullable = true;
            let ty = ColumnType::from_sql(&c.data_type)?;
            let mut default = None;
            for o in &c.options {
                match &o.option {
                    ColumnOption::NotNull => nullable = false,
                    ColumnOption::Null => nullable = true,
                    ColumnOption::Default(e) => {
                        if default.is_some() {
                            return Err(Error::SyntaxRule(format!(
                                "multiple default values specified for column \"{cname}\" of table \"{name}\""
                            )));
                        }
                        let probe = ColumnDef {
                            name: cname.clone(),
                            ty,
                            nullable,
                            char_type: None,
                            default: None,
                            missing: None,
                        };
                        default = Some(crate::rows::default::check_default(
                            &self.ctx.state(),
                            &probe,
                            e,
                        )?);
                    }
                    ColumnOption::PrimaryKey(_) => {
                        if primary_key.is_some() {
                            return Err(multiple());
                        }
                        primary_key = Some(vec![cname.clone()]);
                    }
                    ColumnOption::Unique(u) => {
                        let not_distinct = indexes::check_unique_options(u)?;
                        uniques.push((
                            o.name.as_ref().map(ident_name),
                            vec![cname.clone()],
                            not_distinct,
                        ));
                    }
                    other => {
                        return Err(Error::Unsupported(format!(
                            "column option {other} is not supported on tables yet"
                        )))
                    }
                }
            }
            columns.push(ColumnDef {
                name: cname,
                ty,
                nullable,
                char_type: crate::types::CharType::from_sql(&c.data_type),
                default,
                missing: None,
            });
        }
        for tc in &ct.constraints {
            match tc {
                datafusion::sql::sqlparser::ast::TableConstraint::PrimaryKey(pk) => {
                    if primary_key.is_some() {
                        return Err(multiple());
                    }
                    let mut cols = Vec::with_capacity(pk.columns.len());
                    for ic in &pk.columns {
                        let SqlExpr::Identifier(id) = &ic.column.expr else {
                            return Err(Error::Unsupported(format!(
                                "primary key element {} is not a column name",
                                ic.column.expr
                            )));
                        };
                        let n = ident_name(id);
                        if !columns.iter().any(|c| c.name == n) {
                            return Err(Error::KeyColumnMissing(n));
                        }
                        if cols.contains(&n) {
                            return Err(Error::DuplicateColumn(format!(
                                "column \"{n}\" appears twice in primary key constraint"
                            )));
                        }
                        cols.push(n);
                    }
                    primary_key = Some(cols);
                }
                datafusion::sql::sqlparser::ast::TableConstraint::Unique(u) => {
                    let not_distinct = indexes::check_unique_options(u)?;
                    let (cols, _) = indexes::column_names(&u.columns, &columns, "unique")?;
                    uniques.push((u.name.as_ref().map(ident_name), cols, not_distinct));
                }
                other => {
                    return Err(Error::Unsupported(format!(
                        "constraint {other} is not supported yet; only PRIMARY KEY and UNIQUE are"
                    )))
                }
            }
        }
        let primary_key = primary_key.unwrap_or_default();
        for c in &mut columns {
            if primary_key.contains(&c.name) {
                check_key_type(&c.name, c.ty)?;
                // PostgreSQL makes primary key columns NOT NULL.
                c.nullable = false;
            }
        }
        let indexes = self.constraint_indexes(&schema, &name, &columns, &primary_key, uniques)?;
        let def = TableDef {
            id: 0,
            name: name.clone(),
            columns,
            kind: TableKind::Table(RowTableOptions {
                primary_key,
                dropped: Vec::new(),
                indexes,
            }),
        };
        let Some(def) = self.add_to_catalog(&schema, def, ct.if_not_exists).await? else {
            return Ok(command("CREATE TABLE"));
        };
        let mut created = rows.store.create_table(def.id).await;
        for ix in def.indexes() {
            if created.is_ok() {
                created = rows.store.create_table(ix.id).await;
            }
        }
        if let Err(e) = created {
            // Keep catalog and store consistent: a table the store could not create is not
            // left behind in the catalog.
            let _ = self
                .engine
                .catalog
                .drop_table(&self.database, &schema, &name)
                .await;
            return Err(rows_error(e));
        }
        tracing::info!(table = %name, id = def.id, "created table");
        Ok(command("CREATE TABLE"))
    }

    /// Adds `def` to the catalog (durably). `None` when the name is taken and IF NOT EXISTS
    /// asked to skip; otherwise a taken name is 42P07.
    async fn add_to_catalog(
        &self,
        schema: &str,
        def: TableDef,
        if_not_exists: bool,
    ) -> Result<Option<TableDef>> {
        let def_name = def.name.clone();
        match self
            .engine
            .catalog
            .create_table(&self.database, schema, def)
            .await
        {
            Ok(d) => Ok(Some(d)),
            Err(Error::DuplicateTable(_)) if if_not_exists => {
                self.notice(
                    "42P07",
                    format!("relation \"{}\" already exists, skipping", def_name),
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn drop_table_def(&self, schema: &str, name: &str, def: &TableDef) -> Result<()> {
        if self
            .engine
            .catalog
            .drop_table(&self.database, schema, name)
            .await?
            .is_none()
        {
            return Ok(());
        }
        // The catalog no longer names it; what follows only frees its storage.
        self.remove_table_storage(def).await
    }

    /// `TRUNCATE t [, ...]` of row tables: every row of every named table is deleted in one
    /// transaction (the block's, or one of its own), so it commits, rolls back and conflicts
    /// like any other write, all tables or none. Names are checked before anything is deleted.
    /// `RESTART IDENTITY` and `CASCADE` have nothing to act on (no sequences, no foreign keys)
    /// and are accepted.
    async fn truncate(&self, t: &datafusion::sql::sqlparser::ast::Truncate) -> Result<Output> {
        let mut tables = Vec::with_capacity(t.table_names.len());
        for target in &t.table_names {
            let (schema, name) = self.resolve(&target.name)?;
            let def = match self.engine.catalog.table(&self.database, &schema, &name) {
                Some(d) => d,
                None if t.if_exists => continue,
                None => return Err(Error::UndefinedTable(name)),
            };
            if def.is_stream() {
                self.refuse_write_on(&target.name, "TRUNCATE").await?;
            }
            if !tables.iter().any(|d: &TableDef| d.id == def.id) {
                tables.push(def);
            }
        }
        let rows = self.engine.rows_for(&self.database)?;
        let mut guard = self.rows_txn.lock().await;
        let mut own = None;
        let txn = match guard.current(&rows.store) {
            Some(t) => t,
            None => own.insert(rows.store.begin()),
        };
        for def in &tables {
            crate::rows::delete_all(txn, def).await?;
        }
        drop(guard);
        if let Some(t) = own {
            t.commit().await.map_err(rows_error)?;
        }
        Ok(command("TRUNCATE TABLE"))
    }

    /// `ALTER TABLE` of a row table: ADD COLUMN, DROP COLUMN, RENAME COLUMN, RENAME TO. Only
    /// the catalog changes (one atomic write for all the statement's operations); stored rows
    /// are never rewritten, see [`crate::rows::StoredLayout`].
    async fn alter_table(
        &self,
        at: &datafusion::sql::sqlparser::ast::AlterTable,
    ) -> Result<Output> {
        use crate::catalog::DroppedColumn;
        use datafusion::sql::sqlparser::ast::{AlterTableOperation as Op, RenameTableNameKind};
        let (schema, name) = self.resolve(&at.name)?;
        let _ddl = self.engine.table_ddl.lock().await;
        let Some(def) = self.engine.catalog.table(&self.database, &schema, &name) else {
            if at.if_exists {
                self.skipped_missing("relation", &name);
                return Ok(command("ALTER TABLE"));
            }
            return Err(Error::UndefinedTable(name));
        };
        if def.is_stream() {
            return Err(Error::Unsupported(format!(
                "ALTER TABLE is not supported on stream \"{name}\""
            )));
        }
        let rows = self.engine.rows_for(&self.database)?;
        let state = self.ctx.state();
        let mut new = def.clone();
        let exists = |c: &str| {
            Error::DuplicateColumn(format!(
                "column \"{c}\" of relation \"{name}\" already exists"
            ))
        };
        for op in &at.operations {
            match op {
                Op::AddColumn {
                    if_not_exists,
                    column_def,
                    column_position,
                    ..
                } => {
                    if column_position.is_some() {
                        return Err(Error::Unsupported(
                            "ADD COLUMN ... FIRST/AFTER is not supported".into(),
                        ));
                    }
                    let cname = ident_name(&column_def.name);
                    if new.columns.iter().any(|c| c.name == cname) {
                        if *if_not_exists {
                            self.notice(
                                "42701",
                                format!(
                                    "column \"{cname}\" of relation \"{name}\" already exists, skipping"
                                ),
                            );
                            continue;
                        }
                        return Err(exists(&cname));
                    }
                    let mut col = ColumnDef {
                        name: cname.clone(),
                        ty: ColumnType::from_sql(&column_def.data_type)?,
                        nullable: true,
                        char_type: crate::types::CharType::from_sql(&column_def.data_type),
                        default: None,
                        missing: None,
                    };
                    for o in &column_def.options {
                        match &o.option {
                            ColumnOption::NotNull => col.nullable = false,
                            ColumnOption::Null => col.nullable = true,
                            ColumnOption::Default(e) => {
                                col.default =
                                    Some(crate::rows::default::check_default(&state, &col, e)?);
                                col.missing = crate::rows::default::missing_value(&state, &col, e)?;
                            }
                            other => {
                                return Err(Error::Unsupported(format!(
                                    "ADD COLUMN with {other} is not supported"
                                )))
                            }
                        }
                    }
                    if !col.nullable && col.missing.is_none() && has_rows(&rows, def.id).await? {
                        return Err(Error::NotNullViolation(format!(
                            "column \"{cname}\" of relation \"{name}\" contains null values"
                        )));
                    }
                    new.columns.push(col);
                }
                Op::DropColumn {
                    column_names,
                    if_exists,
                    ..
                } => {
                    for c in column_names {
                        let cname = ident_name(c);
                        let Some(i) = new.columns.iter().position(|x| x.name == cname) else {
                            if *if_exists {
                                self.skipped_missing(
                                    "column",
                                    &format!("{cname}\" of relation \"{name}"),
                                );
                                continue;
                            }
                            return Err(Error::UndefinedColumn(format!(
                                "{cname}\" of relation \"{name}"
                            )));
                        };
                        let key = new.row_options().map(|o| o.primary_key.clone());
                        if key.is_some_and(|k| k.contains(&cname)) {
                            return Err(Error::Unsupported(format!(
                                "dropping primary key column \"{cname}\" of table \"{name}\" is not supported"
                            )));
                        }
                        if new.columns.len() == 1 {
                            return Err(Error::Unsupported(format!(
                                "dropping the last column of table \"{name}\" is not supported"
                            )));
                        }
                        let position = new
                            .stored_slots()
                            .iter()
                            .position(|s| *s == Ok(i))
                            .ok_or_else(|| {
                                Error::DataFusion(datafusion::error::DataFusionError::Internal(
                                    format!("column \"{cname}\" has no stored slot"),
                                ))
                            })?;
                        let ty = new.columns.remove(i).ty;
                        if let TableKind::Table(o) = &mut new.kind {
                            o.dropped.push(DroppedColumn { position, ty });
                            o.dropped.sort_by_key(|d| d.position);
                            // PostgreSQL drops the indexes (and UNIQUE constraints) that
                            // use the column.
                            o.indexes.retain(|ix| !ix.columns.contains(&cname));
                        }
                    }
                }
                Op::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    let (old, to) = (ident_name(old_column_name), ident_name(new_column_name));
                    if new.columns.iter().any(|c| c.name == to) {
                        return Err(exists(&to));
                    }
                    let col = new
                        .columns
                        .iter_mut()
                        .find(|c| c.name == old)
                        .ok_or_else(|| Error::UndefinedColumn(old.clone()))?;
                    col.name = to.clone();
                    if let TableKind::Table(o) = &mut new.kind {
                        for k in &mut o.primary_key {
                            if *k == old {
                                *k = to.clone();
                            }
                        }
                        for ix in &mut o.indexes {
                            for k in &mut ix.columns {
                                if *k == old {
                                    *k = to.clone();
                                }
                            }
                        }
                    }
                }
                Op::RenameTable { table_name } => {
                    let (RenameTableNameKind::To(n) | RenameTableNameKind::As(n)) = table_name;
                    let parts = object_parts(n);
                    let [to] = parts.as_slice() else {
                        return Err(Error::SyntaxRule(
                            "a table cannot be renamed into another schema".into(),
                        ));
                    };
                    new.name = to.clone();
                }
                other => {
                    return Err(Error::Unsupported(format!(
                        "ALTER TABLE ... {other} is not supported; ADD COLUMN, DROP COLUMN, \
                         RENAME COLUMN and RENAME TO are"
                    )))
                }
            }
        }
        if new.name != name
            && self
                .engine
                .catalog
                .relation_exists(&self.database, &schema, &new.name)
        {
            return Err(Error::DuplicateTable(new.name));
        }
        let gone: Vec<u64> = def
            .indexes()
            .iter()
            .filter(|i| !new.indexes().iter().any(|n| n.id == i.id))
            .map(|i| i.id)
            .collect();
        if !gone.is_empty() {
            // Writers planned with the dropped indexes fail (40001) rather than write into
            // trees about to go.
            rows.store
                .set_schema_stamp(def.id, crate::rows::index::schema_stamp(&new));
        }
        if let Err(e) = self
            .engine
            .catalog
            .alter_table(&self.database, &schema, &name, new)
            .await
        {
            rows.store
                .set_schema_stamp(def.id, crate::rows::index::schema_stamp(&def));
            return Err(e);
        }
        for id in gone {
            rows.store.drop_table(id).await.map_err(rows_error)?;
        }
        Ok(command("ALTER TABLE"))
    }

    async fn refuse_write_on(&self, name: &ObjectName, what: &str) -> Result<()> {
        let t = self.stream_table(name).await?;
        Err(Error::Unsupported(format!(
            "streams are append-only: {what} is not allowed on stream \"{}\"; \
             use retention or cleanup = 'compact' to remove old records",
            t.def.name
        )))
    }

    async fn set(&self, set: &Set) -> Result<Output> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = object_parts(variable).join(".");
                let value = values
                    .iter()
                    .map(literal_text)
                    .collect::<Vec<_>>()
                    .join(", ");
                if name == "search_path" {
                    let text = self.set_search_path(values)?;
                    self.vars.lock().insert(name, text);
                } else if name.starts_with("datafusion.") {
                    let state_ref = self.ctx.state_ref();
                    let mut state = state_ref.write();
                    state
                        .config_mut()
                        .options_mut()
                        .set(&name, &value)
                        .map_err(|e| Error::InvalidParameter(e.to_string()))?;
                } else {
                    if name == "timezone" || name == "time zone" {
                        *self.time_zone.lock() = check_time_zone(&value)?;
                    }
                    if name == "default_transaction_isolation" {
                        self.rows_txn.set_default_isolation(
                            value.trim().eq_ignore_ascii_case("read committed"),
                        );
                    }
                    self.vars.lock().insert(name, value);
                }
            }
            Set::SetTransaction { modes, session, .. } => {
                if let Some(rc) = isolation_of(modes) {
                    if *session {
                        self.rows_txn.set_default_isolation(rc);
                    } else {
                        self.rows_txn.set_isolation(rc).await;
                    }
                }
            }
            Set::SetTimeZone { value, .. } => {
                let value = literal_text(value);
                *self.time_zone.lock() = check_time_zone(&value)?;
                self.vars.lock().insert("timezone".into(), value);
            }
            _ => {}
        }
        Ok(command("SET"))
    }

    fn setting(&self, name: &str) -> Option<String> {
        let key = match name {
            "time zone" => "timezone",
            other => other,
        };
        self.vars
            .lock()
            .get(key)
            .cloned()
            .or_else(|| default_settings().get(key).map(|v| v.to_string()))
    }

    fn show(&self, name: &str) -> Result<Output> {
        let schema = show_schema(name);
        let batch = if name == "all" {
            let mut all: BTreeMap<String, String> = default_settings()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            all.extend(self.vars.lock().clone());
            let (names, values): (Vec<String>, Vec<String>) = all.into_iter().unzip();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(values)),
                ],
            )
        } else {
            let value = self.setting(name).ok_or_else(|| {
                Error::UndefinedObject(format!("unrecognized configuration parameter \"{name}\""))
            })?;
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(vec![value]))],
            )
        }
        .map_err(|e| Error::DataFusion(e.into()))?;
        Ok(Output::Rows {
            stream: one_batch_stream(schema.clone(), batch),
            schema,
            tag: "SHOW",
        })
    }

    async fn create_stream(
        &self,
        ct: &datafusion::sql::sqlparser::ast::CreateTable,
    ) -> Result<Output> {
        let (schema, name) = self.creation_target(&ct.name)?;
        if ct.query.is_some() {
            return Err(Error::Unsupported(
                "CREATE STREAM ... AS SELECT is not supported; create the stream, then INSERT ... SELECT"
                    .into(),
            ));
        }
        if ct.columns.is_empty() {
            return Err(Error::InvalidParameter(format!(
                "stream \"{name}\" needs at least one column"
            )));
        }
        let mut columns = Vec::with_capacity(ct.columns.len());
        for c in &ct.columns {
            let cname = ident_name(&c.name);
            if HIDDEN_COLUMNS.contains(&cname.as_str()) {
                return Err(Error::InvalidParameter(format!(
                    "column name \"{cname}\" is reserved for the hidden stream column; choose another name"
                )));
            }
            if columns.iter().any(|x: &ColumnDef| x.name == cname) {
                return Err(Error::InvalidParameter(format!(
                    "column \"{cname}\" specified more than once"
                )));
            }
            let mut nullable = true;
            for o in &c.options {
                match &o.option {
                    ColumnOption::NotNull => nullable = false,
                    ColumnOption::Null => nullable = true,
                    other => {
                        return Err(Error::Unsupported(format!(
                            "column option {other} is not supported on streams"
                        )))
                    }
                }
            }
            columns.push(ColumnDef {
                name: cname,
                ty: ColumnType::from_sql(&c.data_type)?,
                nullable,
                char_type: crate::types::CharType::from_sql(&c.data_type),
                default: None,
                missing: None,
            });
        }
        if !ct.constraints.is_empty() {
            return Err(Error::Unsupported(
                "constraints (PRIMARY KEY, UNIQUE, CHECK, FOREIGN KEY) are not supported on streams"
                    .into(),
            ));
        }
        let raw_options: Vec<(String, String)> = match &ct.table_options {
            CreateTableOptions::None => Vec::new(),
            CreateTableOptions::With(opts) => {
                let mut out = Vec::new();
                for o in opts {
                    match o {
                        SqlOption::KeyValue { key, value } => {
                            out.push((key.value.to_ascii_lowercase(), literal_text(value)))
                        }
                        other => {
                            return Err(Error::InvalidParameter(format!(
                                "stream option {other} must be written as name = value"
                            )))
                        }
                    }
                }
                out
            }
            _ => {
                return Err(Error::InvalidParameter(
                    "stream options go in WITH (name = value, ...)".into(),
                ))
            }
        };
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let options = StreamOptions::parse(&raw_options, &names)?;
        let def = TableDef {
            id: 0,
            name: name.clone(),
            columns,
            kind: TableKind::Stream(options),
        };
        let Some(def) = self.add_to_catalog(&schema, def, ct.if_not_exists).await? else {
            return Ok(command("CREATE STREAM"));
        };
        if let Err(e) = self.engine.log_for(&self.database, &def).await {
            // Keep catalog and logs consistent: a stream whose log cannot be created is not
            // left behind in the catalog.
            let _ = self
                .engine
                .catalog
                .drop_table(&self.database, &schema, &name)
                .await;
            return Err(e);
        }
        tracing::info!(stream = %name, id = def.id, "created stream");
        Ok(command("CREATE STREAM"))
    }

    async fn drop_streams(
        &self,
        names: &[ObjectName],
        if_exists: bool,
        stream_ddl: bool,
    ) -> Result<Output> {
        for n in names {
            let (schema, name) = self.resolve(n)?;
            match self.engine.catalog.table(&self.database, &schema, &name) {
                None if if_exists => {
                    self.skipped_missing(if stream_ddl { "stream" } else { "table" }, &name);
                    continue;
                }
                None => {
                    return Err(Error::UndefinedToDrop {
                        kind: if stream_ddl { "stream" } else { "table" },
                        name,
                    })
                }
                Some(def) if !def.is_stream() => {
                    if stream_ddl {
                        return Err(Error::WrongObjectType(format!(
                            "\"{name}\" is a table; use DROP TABLE {name}"
                        )));
                    }
                    self.drop_table_def(&schema, &name, &def).await?;
                }
                Some(def) => {
                    if !stream_ddl {
                        return Err(Error::WrongObjectType(format!(
                            "\"{name}\" is a stream; use DROP STREAM {name}"
                        )));
                    }
                    self.drop_table_def(&schema, &name, &def).await?;
                }
            }
        }
        Ok(command(if stream_ddl {
            "DROP STREAM"
        } else {
            "DROP TABLE"
        }))
    }

    async fn copy(
        &self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<Output> {
        let format = copy_format(options, legacy)?;
        if to {
            return self.copy_to(source, target, format).await;
        }
        if !matches!(target, CopyTarget::Stdin) {
            return Err(Error::Unsupported(
                "COPY FROM a file or program is not supported; use COPY ... FROM STDIN (psql's \\copy)"
                    .into(),
            ));
        }
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(Error::Syntax("COPY FROM needs a table name".into()));
        };
        let def = self
            .stream_def(table_name)
            .ok_or_else(|| Error::UndefinedTable(table_name.to_string()))?;
        let cols: Vec<ColumnDef> = if columns.is_empty() {
            def.columns.clone()
        } else {
            let mut out = Vec::new();
            for c in columns {
                let n = ident_name(c);
                let col = def
                    .columns
                    .iter()
                    .find(|x| x.name == n)
                    .ok_or_else(|| Error::UndefinedColumn(n.clone()))?;
                out.push(col.clone());
            }
            out
        };
        let into = if def.is_stream() {
            CopyInto::Stream {
                table: self.stream_table(table_name).await?,
                txn: self.txn.clone(),
            }
        } else {
            // Columns left out take their DEFAULT, as in PostgreSQL.
            let defaults = LeftOutDefaults::plan(&self.ctx.state(), &def, &cols)?;
            let rows = self.engine.rows_for(&self.database)?;
            CopyInto::Rows {
                writer: RowTable::new(Arc::new(def), rows)?.writer(),
                block: self.rows_txn.clone(),
                defaults,
            }
        };
        Ok(Output::CopyIn(CopyIn {
            into,
            columns: cols,
            format,
        }))
    }

    /// `COPY table [(cols)] TO STDOUT` and `COPY (query) TO STDOUT`: runs the query and hands
    /// its rows to the server to send as COPY data.
    async fn copy_to(
        &self,
        source: &CopySource,
        target: &CopyTarget,
        format: CopyFormat,
    ) -> Result<Output> {
        if !matches!(target, CopyTarget::Stdout) {
            return Err(Error::Unsupported(
                "COPY TO a file or program is not supported; use COPY ... TO STDOUT (psql's \\copy)"
                    .into(),
            ));
        }
        let sql = match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                if self.stream_def(table_name).is_none() {
                    let (_, name) = self.resolve(table_name)?;
                    return Err(Error::UndefinedTable(name));
                }
                let cols = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("SELECT {cols} FROM {table_name}")
            }
            CopySource::Query(q) => q.to_string(),
        };
        match Box::pin(self.execute(&sql)).await? {
            Output::Rows { schema, stream, .. } => Ok(Output::CopyOut {
                schema,
                stream,
                format,
            }),
            _ => Err(Error::Unsupported(
                "COPY (query) TO needs a query that returns rows".into(),
            )),
        }
    }
}

/// The format a COPY's options ask for (text unless `FORMAT csv` / `CSV`).
fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat> {
    let mut csv = false;
    let mut delimiter = None;
    let mut null = None;
    let mut header = false;
    let mut quote = '"';
    let mut escape = None;
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                other => {
                    return Err(Error::Unsupported(format!(
                        "COPY format {other} is not supported; use text or csv"
                    )))
                }
            },
            CopyOption::Delimiter(c) => delimiter = Some(*c),
            CopyOption::Null(s) => null = Some(s.clone()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(c) => quote = *c,
            CopyOption::Escape(c) => escape = Some(*c),
            _ => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(csv_opts) => {
                csv = true;
                for c in csv_opts {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(q) => quote = *q,
                        CopyLegacyCsvOption::Escape(e) => escape = Some(*e),
                        _ => {}
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
            CopyLegacyOption::Null(s) => null = Some(s.clone()),
            _ => {}
        }
    }
    Ok(if csv {
        CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(','),
            quote,
            escape: escape.unwrap_or(quote),
            null: null.unwrap_or_default(),
            header,
        }
    } else {
        CopyFormat::Text {
            delimiter: delimiter.unwrap_or('\t'),
            null: null.unwrap_or_else(|| "\\N".into()),
        }
    })
}

/// `$n::type` types the parameter, as in PostgreSQL: DataFusion infers a placeholder's type
/// from what it is compared with or inserted into, not from a cast around it, and would leave
/// `$1` in `WHERE id = $1::bigint` untyped (sent to the client as text). A placeholder some
/// other use already types keeps that type; casts to types the parameter decoder does not
/// read keep it untyped too (its text is then cast at run time).
fn type_cast_placeholders(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::expr::Placeholder;
    use datafusion::logical_expr::{Cast, Expr};
    let typed = plan.get_parameter_types()?;
    let decodable = |t: &DataType| {
        matches!(
            t,
            DataType::Boolean
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Float32
                | DataType::Float64
                | DataType::Decimal128(..)
                | DataType::Binary
                | DataType::Date32
                | DataType::Timestamp(..)
                | DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano)
                | DataType::Utf8
        )
    };
    let untyped = |id: &str| matches!(typed.get(id), Some(None));
    if !typed.values().any(Option::is_none) {
        return Ok(plan);
    }
    let out = plan.transform_up_with_subqueries(|p| {
        p.map_expressions(|e| {
            e.transform_up(|x| match x {
                Expr::Cast(Cast { expr, field }) => match *expr {
                    Expr::Placeholder(Placeholder { id, field: None })
                        if untyped(&id) && decodable(field.data_type()) =>
                    {
                        let typed = Arc::new(Field::new(&id, field.data_type().clone(), true));
                        Ok(Transformed::yes(Expr::Cast(Cast {
                            expr: Box::new(Expr::Placeholder(Placeholder {
                                id,
                                field: Some(typed),
                            })),
                            field,
                        })))
                    }
                    other => Ok(Transformed::no(Expr::Cast(Cast {
                        expr: Box::new(other),
                        field,
                    }))),
                },
                other => Ok(Transformed::no(other)),
            })
        })
    })?;
    Ok(out.data)
}
