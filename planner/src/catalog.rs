//! The persisted catalog: databases, schemas, tables (with kind and options) and columns. A
//! table's kind is a stream (a LogCore topic) or a row table (rows in the database's
//! [`braid_ingest::rows::RowStore`], keyed by the primary key columns named here).
//!
//! Every database listed is a whole database: its own row store and commit log under
//! `tables/<dir>/` and `log/<dir>/`, where `<dir>` is [`database_dir`] of its name. Schemas are
//! namespaces inside a database; `pg_catalog` and `information_schema` are the system's and are
//! never listed here (see [`SYSTEM_SCHEMAS`]).
//!
//! On disk it is one file, `catalog/catalog.json`, replaced atomically on every change (write a
//! temporary file, fdatasync, rename, fsync the directory — see [`FileStore::write_atomic`]), so
//! a crash or SIGKILL leaves the old or the new catalog, never a mix. The file is JSON with a
//! `format` tag and a `version` number checked on open. The catalog is small and DDL is rare,
//! so rewriting the whole file is cheaper than keeping a catalog log.
//!
//! What must stay true: the in-memory state changes only after the new file is durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

use crate::error::{Error, Result};
use crate::stream::options::StreamOptions;
use crate::types::ColumnType;

/// `format` field of the catalog file.
pub const CATALOG_FORMAT: &str = "braid-catalog";
/// `version` field of the catalog file; bump on an incompatible change.
pub const CATALOG_VERSION: u32 = 1;
/// The database and user a fresh data directory starts with.
pub const DEFAULT_DATABASE: &str = "postgres";
/// The schema tables go into unless qualified.
pub const DEFAULT_SCHEMA: &str = "public";
/// Schemas every database has that belong to the system: they cannot be created or dropped,
/// and no table of braid's lives in them.
pub const SYSTEM_SCHEMAS: [&str; 3] = ["pg_catalog", "information_schema", "pg_toast"];
/// PostgreSQL's template databases: `CREATE DATABASE ... TEMPLATE` may name them, and their
/// names are taken, but braid keeps nothing in them.
pub const TEMPLATE_DATABASES: [&str; 2] = ["template0", "template1"];

/// The directory name of database `name` under `tables/` and `log/`: the name itself when it
/// is made of ASCII letters, digits, `_` and `-` (so `postgres` keeps the directories it always
/// had), every other byte written `%XX`. A database name can hold any character, `/` and `..`
/// included; this keeps each database inside its own directory.
pub fn database_dir(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Durable file operations the catalog needs. `write_atomic` must leave either the old or the
/// new contents after a crash at any point, and be durable when it returns.
#[async_trait]
pub trait FileStore: Send + Sync + Debug {
    async fn write_atomic(&self, path: &Path, bytes: Vec<u8>) -> Result<()>;
    /// Reads a whole file, `None` if it does not exist.
    async fn read(&self, path: &Path) -> Result<Option<Vec<u8>>>;
    async fn create_dir_all(&self, path: &Path) -> Result<()>;
}

/// The kind of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TableKind {
    Stream(StreamOptions),
    Table(RowTableOptions),
}

/// What the catalog keeps about a row table besides its columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowTableOptions {
    /// The primary key columns, in key order. Empty: the table has no primary key and its
    /// rows are keyed by a hidden row id.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Columns dropped by ALTER TABLE ... DROP COLUMN: their values stay in rows stored before
    /// the drop, so their slots keep their places in every stored row (new rows store NULL
    /// there) and the other columns never move. Absent when nothing was dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedColumn>,
    /// Secondary indexes (UNIQUE constraints and CREATE INDEX), each a tree of its own in the
    /// row store. Absent in catalogs written before indexes existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexDef>,
}

/// A secondary index of a row table (see [`crate::rows::index`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Row store table id of the index's tree; taken from the same counter as table ids, so
    /// never reused.
    pub id: u64,
    /// Unique among the relations of the schema, as in PostgreSQL.
    pub name: String,
    /// Indexed columns, in index order (renamed with the columns).
    pub columns: Vec<String>,
    pub unique: bool,
    /// Made by a UNIQUE constraint (CREATE TABLE), not by CREATE INDEX: only constraints can
    /// be named by `ON CONFLICT ON CONSTRAINT`.
    #[serde(default)]
    pub constraint: bool,
    /// Still being filled by CREATE INDEX: writers keep it current, queries do not read it
    /// yet. One left behind by a crash stays unused (PostgreSQL's invalid index) until
    /// dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub building: bool,
    /// Per indexed column, DESC and NULLS FIRST as the statement gave them (empty: every
    /// column ASC NULLS LAST). The tree is kept in ascending order either way: braid reads an
    /// index by equality and ranges, never for its order, so only the catalog shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<IndexOrder>,
    /// UNIQUE NULLS NOT DISTINCT: a NULL is a value like any other, so a second row with the
    /// same values, NULLs included, conflicts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nulls_not_distinct: bool,
}

/// How one column of an index is ordered, as `CREATE INDEX ... (c DESC NULLS LAST)` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexOrder {
    pub desc: bool,
    pub nulls_first: bool,
}

impl IndexOrder {
    /// PostgreSQL's words for it after the column in `pg_get_indexdef`: NULLS FIRST is the
    /// default of DESC, NULLS LAST that of ASC.
    pub fn suffix(&self) -> &'static str {
        match (self.desc, self.nulls_first) {
            (false, false) => "",
            (false, true) => " NULLS FIRST",
            (true, true) => " DESC",
            (true, false) => " DESC NULLS LAST",
        }
    }
}

/// The slot of a dropped column in a row table's stored rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedColumn {
    /// Position of the value in a stored row.
    pub position: usize,
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub nullable: bool,
    /// For a text column declared `character(n)` or `character varying(n)`: how, for the
    /// catalog to show it. Absent for every other column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub char_type: Option<crate::types::CharType>,
    /// `DEFAULT` expression as SQL text (PostgreSQL dialect), evaluated for each row an INSERT
    /// does not give a value for. Absent in catalogs written before defaults existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// What rows stored before the column was added (ALTER TABLE ... ADD COLUMN ... DEFAULT)
    /// read for it: the row codec's encoding of the one value, in hex. Absent: NULL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Never reused; names the table's data directories, so a dropped and re-created table
    /// never sees old data.
    pub id: u64,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    #[serde(flatten)]
    pub kind: TableKind,
}

impl TableDef {
    pub fn column_types(&self) -> Vec<ColumnType> {
        self.columns.iter().map(|c| c.ty).collect()
    }
    pub fn stream_options(&self) -> Option<&StreamOptions> {
        match &self.kind {
            TableKind::Stream(o) => Some(o),
            TableKind::Table(_) => None,
        }
    }
    pub fn row_options(&self) -> Option<&RowTableOptions> {
        match &self.kind {
            TableKind::Table(o) => Some(o),
            TableKind::Stream(_) => None,
        }
    }
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, TableKind::Stream(_))
    }

    /// The table's secondary indexes (none for a stream).
    pub fn indexes(&self) -> &[IndexDef] {
        self.row_options().map_or(&[], |o| &o.indexes)
    }

    /// For each slot of a stored row, in order: the index of the column stored there, or the
    /// type of the dropped column whose slot it is.
    pub fn stored_slots(&self) -> Vec<Result<usize, ColumnType>> {
        let dropped: &[DroppedColumn] = self.row_options().map_or(&[], |o| &o.dropped);
        let n = self.columns.len() + dropped.len();
        let mut next = 0;
        (0..n)
            .map(|p| match dropped.iter().find(|d| d.position == p) {
                Some(d) => Err(d.ty),
                None => {
                    next += 1;
                    Ok(next - 1)
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SchemaDef {
    /// Taken from the table id counter when the schema was created (so never reused); 0 for
    /// the `public` schema a database starts with, which PostgreSQL gives the fixed OID 2200.
    /// Absent in catalogs written before CREATE SCHEMA existed, where only `public` exists.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    pub tables: BTreeMap<String, TableDef>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseDef {
    /// Taken from the table id counter when the database was created; 0 for the database a
    /// data directory starts with (`postgres`). Absent in catalogs written before CREATE
    /// DATABASE existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    pub schemas: BTreeMap<String, SchemaDef>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl DatabaseDef {
    /// A new database as PostgreSQL's `template1` makes one: an empty `public` schema.
    fn new(id: u64) -> Self {
        let mut schemas = BTreeMap::new();
        schemas.insert(DEFAULT_SCHEMA.to_string(), SchemaDef::default());
        DatabaseDef { id, schemas }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CatalogFile {
    format: String,
    version: u32,
    next_table_id: u64,
    databases: BTreeMap<String, DatabaseDef>,
}

impl CatalogFile {
    fn fresh() -> Self {
        let mut databases = BTreeMap::new();
        databases.insert(DEFAULT_DATABASE.to_string(), DatabaseDef::new(0));
        CatalogFile {
            format: CATALOG_FORMAT.into(),
            version: CATALOG_VERSION,
            next_table_id: 1,
            databases,
        }
    }
}

/// The catalog, shared by all sessions.
#[derive(Debug)]
pub struct Catalog {
    files: Arc<dyn FileStore>,
    path: PathBuf,
    state: parking_lot::RwLock<CatalogFile>,
    /// Serialises writers so two DDL statements cannot lose each other's change.
    write_lock: AsyncMutex<()>,
    /// Bumped by every change, so prepared statements can tell that they must be planned again.
    generation: std::sync::atomic::AtomicU64,
}

impl Catalog {
    /// Opens `<data_dir>/catalog/catalog.json`, creating a fresh catalog if there is none.
    pub async fn open(files: Arc<dyn FileStore>, data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("catalog");
        files.create_dir_all(&dir).await?;
        let path = dir.join("catalog.json");
        let state = match files.read(&path).await? {
            Some(bytes) => decode(&path, &bytes)?,
            None => {
                let fresh = CatalogFile::fresh();
                files.write_atomic(&path, encode(&fresh)?).await?;
                fresh
            }
        };
        Ok(Catalog {
            files,
            path,
            state: parking_lot::RwLock::new(state),
            write_lock: AsyncMutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Changes with every DDL statement that committed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn database_exists(&self, db: &str) -> bool {
        self.state.read().databases.contains_key(db)
    }

    /// Every database's name, sorted.
    pub fn database_names(&self) -> Vec<String> {
        self.state.read().databases.keys().cloned().collect()
    }

    pub fn schema_names(&self, db: &str) -> Vec<String> {
        self.state
            .read()
            .databases
            .get(db)
            .map(|d| d.schemas.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn table_names(&self, db: &str, schema: &str) -> Vec<String> {
        self.state
            .read()
            .databases
            .get(db)
            .and_then(|d| d.schemas.get(schema))
            .map(|s| s.tables.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn table(&self, db: &str, schema: &str, name: &str) -> Option<TableDef> {
        self.state
            .read()
            .databases
            .get(db)
            .and_then(|d| d.schemas.get(schema))
            .and_then(|s| s.tables.get(name))
            .cloned()
    }

    /// All tables of a database (for opening their logs at start).
    pub fn tables(&self, db: &str) -> Vec<(String, TableDef)> {
        let st = self.state.read();
        let mut out = Vec::new();
        if let Some(d) = st.databases.get(db) {
            for (s, sd) in &d.schemas {
                for t in sd.tables.values() {
                    out.push((s.clone(), t.clone()));
                }
            }
        }
        out
    }

    pub fn schema_exists(&self, db: &str, schema: &str) -> bool {
        self.state
            .read()
            .databases
            .get(db)
            .is_some_and(|d| d.schemas.contains_key(schema))
    }

    /// Every schema of `db` with its id (see [`SchemaDef::id`]), sorted by name.
    pub fn schemas(&self, db: &str) -> Vec<(String, u64)> {
        self.state
            .read()
            .databases
            .get(db)
            .map(|d| d.schemas.iter().map(|(n, s)| (n.clone(), s.id)).collect())
            .unwrap_or_default()
    }

    /// Every database with its id (see [`DatabaseDef::id`]), sorted by name.
    pub fn databases(&self) -> Vec<(String, u64)> {
        self.state
            .read()
            .databases
            .iter()
            .map(|(n, d)| (n.clone(), d.id))
            .collect()
    }

    /// Adds an empty schema, durably. [`Error::DuplicateSchema`] if the name is taken.
    pub async fn create_schema(&self, db: &str, schema: &str) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        let id = next.next_table_id;
        next.next_table_id += 1;
        let d = next
            .databases
            .get_mut(db)
            .ok_or_else(|| Error::UndefinedDatabase(db.to_string()))?;
        if d.schemas.contains_key(schema) {
            return Err(Error::DuplicateSchema(schema.to_string()));
        }
        d.schemas.insert(
            schema.to_string(),
            SchemaDef {
                id,
                tables: BTreeMap::new(),
            },
        );
        self.files.write_atomic(&self.path, encode(&next)?).await?;
        *self.state.write() = next;
        self.bump();
        Ok(())
    }

    /// Removes a schema and every table in it, durably, in one catalog write; returns the
    /// tables (their storage is the caller's to remove), or `None` if the schema did not exist.
    pub async fn drop_schema(&self, db: &str, schema: &str) -> Result<Option<Vec<TableDef>>> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        let Some(removed) = next
            .databases
            .get_mut(db)
            .and_then(|d| d.schemas.remove(schema))
        else {
            return Ok(None);
        };
        self.files.write_atomic(&self.path, encode(&next)?).await?;
        *self.state.write() = next;
        self.bump();
        Ok(Some(removed.tables.into_values().collect()))
    }

    /// Adds a database with an empty `public` schema, durably. [`Error::DuplicateDatabase`]
    /// if the name is taken.
    pub async fn create_database(&self, db: &str) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        if next.databases.contains_key(db) {
            return Err(Error::DuplicateDatabase(db.to_string()));
        }
        let id = next.next_table_id;
        next.next_table_id += 1;
        next.databases.insert(db.to_string(), DatabaseDef::new(id));
        self.files.write_atomic(&self.path, encode(&next)?).await?;
        *self.state.write() = next;
        self.bump();
        Ok(())
    }

    /// Removes a database and everything in it from the catalog, durably; `false` if it did
    /// not exist. Its files are the caller's to remove, after this returns.
    pub async fn drop_database(&self, db: &str) -> Result<bool> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        if next.databases.remove(db).is_none() {
            return Ok(false);
        }
        self.files.write_atomic(&self.path, encode(&next)?).await?;
        *self.state.write() = next;
        self.bump();
        Ok(true)
    }

    /// Takes `n` fresh ids from the table id counter (for index trees), durably.
    pub async fn allocate_ids(&self, n: u64) -> Result<u64> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        let first = next.next_table_id;
        next.next_table_id += n;
        self.files.write_atomic(&self.path, encode(&next)?).await?;
        *self.state.write() = next;
        Ok(first)
    }

    /// The table holding index `name` in `schema`, if any.
    pub fn table_of_index(&self, db: &str, schema: &str, name: &str) -> Option<TableDef> {
        self.state
            .read()
            .databases
            .get(db)
            .and_then(|d| d.schemas.get(schema))
            .and_then(|s| {
                s.tables
                    .values()
                    .find(|t| t.indexes().iter().any(|i| i.name == name))
            })
            .cloned()
    }

    /// True when `name` names a table or an index of `schema` (one namespace in PostgreSQL).
    pub fn relation_exists(&self, db: &str, schema: &str, name: &str) -> bool {
        self.table(db, schema, name).is_some() || self.table_of_index(db, schema, name).is_some()
    }

    /// Adds a table, assigning its id. Fails with [`Error::DuplicateTable`] if the name is
    /// taken. Returns the stored definition once it is durable.
    pub async fn create_table(
        &self,
        db: &str,
        schema: &str,
        mut def: TableDef,
    ) -> Result<TableDef> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        def.id = next.next_table_id;
        next.next_table_id += 1;
        // The ids of the table's constraint indexes come right after the table's own.
        if let TableKind::Table(o) = &mut def.kind {
            for ix in &mut o.indexes {
                ix.id = next.next_table_id;
                next.next_table_id += 1;
            }
        }
        let s = next
            .databases
            .get_mut(db)
            .ok_or_else(|| Error::UndefinedDatabase(db.to_string()))?
            .schemas
            .get_mut(schema)
            .ok_or_else(|| Error::UndefinedSchema(schema.to_string()))?;
        let taken = |s: &SchemaDef, n: &str| {
            s.tables.contains_key(n)
                || s.tables
                    .values()
                    .any(|t| t.indexes().iter().any(|i| i.name == n))
        };
        if taken(s, &def.name) {
            return Err(Error::DuplicateTable(def.name));
        }
        for ix in def.indexes() {
            if taken(s, &ix.name) {
                return Err(Error::DuplicateTable(ix.name.clone()));
            }
        }
        s.tables.insert(def.name.clone(), def.clone());
        self.files.write_atomic(&self.path, encode(&next)?).await?;
        *self.state.write() = next;
        self.bump();
        Ok(def)
    }

    /// Replaces the table `name` by `def` (same id; `def.name` may differ: a rename). Fails
    /// with [`Error::UndefinedTable`] if `name` does not exist and [`Error::DuplicateTable`] if
    /// a rename takes a name in use.
    pub async fn alter_table(
        &self,
        db: &str,
        schema: &str,
        name: &str,
        def: TableDef,
    ) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        let s = next
            .databases
            .get_mut(db)
            .and_then(|d| d.schemas.get_mut(schema))
            .ok_or_else(|| Error::UndefinedTable(name.to_string()))?;
        if s.tables.remove(name).is_none() {
            return Err(Error::UndefinedTable(name.to_string()));
        }
        if s.tables.contains_key(&def.name) {
            return Err(Error::DuplicateTable(def.name));
        }
        s.tables.insert(def.name.clone(), def);
        self.files.write_atomic(&self.path, encode(&next)?).await?;
        *self.state.write() = next;
        self.bump();
        Ok(())
    }

    /// Removes a table; returns its definition, or `None` if it did not exist.
    pub async fn drop_table(&self, db: &str, schema: &str, name: &str) -> Result<Option<TableDef>> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.state.read().clone();
        let removed = next
            .databases
            .get_mut(db)
            .and_then(|d| d.schemas.get_mut(schema))
            .and_then(|s| s.tables.remove(name));
        if removed.is_some() {
            self.files.write_atomic(&self.path, encode(&next)?).await?;
            *self.state.write() = next;
            self.bump();
        }
        Ok(removed)
    }
}

fn encode(c: &CatalogFile) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(c).map_err(|e| Error::CatalogCorrupt {
        path: "<memory>".into(),
        reason: format!("could not encode: {e}"),
    })
}

fn decode(path: &Path, bytes: &[u8]) -> Result<CatalogFile> {
    let corrupt = |reason: String| Error::CatalogCorrupt {
        path: path.display().to_string(),
        reason,
    };
    let c: CatalogFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if c.format != CATALOG_FORMAT {
        return Err(corrupt(format!(
            "format is '{}', expected '{CATALOG_FORMAT}'",
            c.format
        )));
    }
    if c.version != CATALOG_VERSION {
        return Err(corrupt(format!(
            "version {} is not supported (this braid reads version {CATALOG_VERSION})",
            c.version
        )));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_dirs_stay_inside_their_directory() {
        assert_eq!(database_dir("postgres"), "postgres");
        assert_eq!(database_dir("shop_2-b"), "shop_2-b");
        assert_eq!(database_dir(".."), "%2E%2E");
        assert_eq!(database_dir("a/b c"), "a%2Fb%20c");
        assert_eq!(database_dir("é"), "%C3%A9");
        // Distinct names never share a directory: `%` itself is escaped.
        assert_ne!(database_dir("%2E"), database_dir("."));
    }
}
