//! The `pg_catalog` schema, as far as psql's describe commands (`\d`, `\dt`, `\di`,
//! `\d name`) and tools that browse a schema read it: relations (`pg_class`: tables, streams and
//! their indexes), columns (`pg_attribute`, `pg_attrdef`), indexes and constraints (`pg_index`,
//! `pg_constraint`), types, namespaces, access methods and collations, plus empty tables of the
//! right shape for what braid does not have (policies, publications, inheritance, extended
//! statistics, triggers, rules). The functions those queries call are in [`functions`]; the
//! PostgreSQL spellings DataFusion cannot plan are rewritten by [`rewrite`].
//!
//! What must stay true: every table is built from the catalog on each lookup, so it is always
//! current, and OIDs are a pure function of catalog ids, so the OID psql reads in one query
//! names the same relation in the next: a table or a secondary index (their ids share one
//! counter) is `16384 + id`, a primary key index `PKEY_OID_BASE + table id`, a constraint
//! `CONSTRAINT_OID_BASE + its index's OID`. A schema's OID is `16384 + its id` (the same
//! counter), `public`'s 2200 while it is the one a database started with; a database's is
//! `16384 + its id`, `postgres`' 5. Relations of every schema are listed, each under its
//! schema's OID; `pg_table_is_visible` and unqualified `regclass` names follow the session's
//! search path.

pub mod functions;
pub mod rewrite;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;

use crate::catalog::{ColumnDef, IndexOrder, TableDef, DEFAULT_SCHEMA};
use crate::types::ColumnType;

pub use functions::register_functions;

/// Name of the schema.
pub const PG_CATALOG: &str = "pg_catalog";
/// OID of the `public` namespace (as in PostgreSQL).
pub const PUBLIC_OID: i64 = 2200;
const PG_CATALOG_OID: i64 = 11;
/// PostgreSQL's `pg_toast` namespace.
const PG_TOAST_OID: i64 = 99;
/// `information_schema`'s OID (PostgreSQL makes it at initdb, so its number varies; this is
/// in the range initdb uses).
const INFORMATION_SCHEMA_OID: i64 = 13_000;
/// PostgreSQL 15's `pg_database_owner` role, owner of the `public` schema.
pub(crate) const DATABASE_OWNER_OID: i64 = 6171;
/// First OID handed to user objects (as in PostgreSQL).
pub const FIRST_USER_OID: i64 = 16384;
/// Primary key indexes have no catalog id of their own; their OIDs start here, far above any
/// table id, and stay below 2^32 as PostgreSQL's OIDs do.
const PKEY_OID_BASE: i64 = 1 << 30;
/// A constraint's OID is this plus the OID of the index that enforces it.
const CONSTRAINT_OID_BASE: i64 = 1 << 31;
const HEAP_AM_OID: i64 = 2;
const BTREE_AM_OID: i64 = 403;
const SUPERUSER_OID: i64 = 10;
/// `postgres`' OID in PostgreSQL; other databases get OIDs from [`FIRST_USER_OID`] on.
pub(crate) const POSTGRES_DATABASE_OID: i64 = 5;
/// PostgreSQL's `pg_default` and `pg_global` tablespaces; braid has only these two.
pub(crate) const DEFAULT_TABLESPACE_OID: i64 = 1663;
pub(crate) const GLOBAL_TABLESPACE_OID: i64 = 1664;
/// `UTF8` in `pg_encoding_to_char`'s numbering, the only encoding braid stores.
pub const UTF8_ENCODING: i32 = 6;
/// The locale braid compares text in: bytewise, as PostgreSQL's `C` collation.
const DATABASE_LOCALE: &str = "C";
/// The database's default collation (PostgreSQL's `default`).
const DEFAULT_COLLATION_OID: i64 = 100;

/// Catalog tables braid never has a row for: a query that inner-joins one returns no rows
/// ([`rewrite`] relies on this to skip planning what DataFusion cannot).
pub const EMPTY_TABLES: [&str; 9] = [
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_inherits",
    "pg_trigger",
    "pg_rewrite",
    "pg_description",
];

const TABLES: [&str; 14] = [
    "pg_database",
    "pg_tablespace",
    "pg_namespace",
    "pg_class",
    "pg_am",
    "pg_attribute",
    "pg_attrdef",
    "pg_index",
    "pg_constraint",
    "pg_type",
    "pg_collation",
    "pg_roles",
    // Views of the system catalogs, filled from the same snapshot.
    "pg_tables",
    "pg_indexes",
];

/// Lists every table of a database with its schema name.
pub trait TableLister: Send + Sync + std::fmt::Debug {
    fn list(&self) -> Vec<(String, TableDef)>;
    /// The names of all databases (`pg_database` is shared by every database).
    fn databases(&self) -> Vec<String> {
        Vec::new()
    }
    /// The database whose tables [`list`](Self::list) lists.
    fn database(&self) -> Option<String> {
        None
    }
    /// The schemas of the database with their catalog ids (0: `public`'s fixed OID).
    fn schemas(&self) -> Vec<(String, u64)> {
        vec![(DEFAULT_SCHEMA.to_string(), 0)]
    }
    /// The schemas an unqualified name is looked up in, in order (`pg_catalog` included).
    fn search_path(&self) -> Vec<String> {
        vec![PG_CATALOG.to_string(), DEFAULT_SCHEMA.to_string()]
    }
    /// Every database with its catalog id (0: `postgres`' fixed OID).
    fn database_ids(&self) -> Vec<(String, u64)> {
        self.databases().into_iter().map(|d| (d, 0)).collect()
    }
    /// Bytes a table's own data takes (a row table's tree, a stream's log), for
    /// `pg_table_size`; `None` when unknown.
    fn table_bytes(&self, _table: &TableDef) -> Option<u64> {
        None
    }
    /// Bytes a secondary index's tree takes (by the index's id).
    fn index_bytes(&self, _index_id: u64) -> Option<u64> {
        None
    }
}

/// An index as `pg_class`, `pg_index` and `pg_constraint` show it: a primary key, a UNIQUE
/// constraint or a CREATE [UNIQUE] INDEX.
#[derive(Debug, Clone)]
pub struct IndexInfo {
    pub oid: i64,
    pub name: String,
    pub table_oid: i64,
    pub table_name: String,
    pub columns: Vec<String>,
    pub unique: bool,
    pub primary: bool,
    /// Made by a PRIMARY KEY or UNIQUE constraint (has a `pg_constraint` row).
    pub constraint: bool,
    /// False while CREATE INDEX fills it (PostgreSQL's invalid index).
    pub valid: bool,
    /// Each column's DESC / NULLS FIRST (empty: all ascending).
    pub order: Vec<IndexOrder>,
    pub nulls_not_distinct: bool,
}

impl IndexInfo {
    pub fn constraint_oid(&self) -> Option<i64> {
        self.constraint.then_some(CONSTRAINT_OID_BASE + self.oid)
    }

    /// `pg_get_indexdef(oid)`: `CREATE UNIQUE INDEX t_pkey ON t USING btree (id)` (the table
    /// unqualified, as PostgreSQL writes a table of a schema on the search path).
    pub fn definition(&self) -> String {
        self.definition_on(&quote_ident(&self.table_name))
    }

    /// The definition with the table written as `table`.
    fn definition_on(&self, table: &str) -> String {
        format!(
            "CREATE {}INDEX {} ON {} USING btree ({}){}",
            if self.unique { "UNIQUE " } else { "" },
            quote_ident(&self.name),
            table,
            self.columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!(
                    "{}{}",
                    quote_ident(c),
                    self.order.get(i).map_or("", IndexOrder::suffix)
                ))
                .collect::<Vec<_>>()
                .join(", "),
            self.nulls_clause(),
        )
    }

    /// ` NULLS NOT DISTINCT` where PostgreSQL writes it, after the column list.
    fn nulls_clause(&self) -> &'static str {
        if self.unique && self.nulls_not_distinct {
            " NULLS NOT DISTINCT"
        } else {
            ""
        }
    }

    /// `pg_get_constraintdef(oid)`: `PRIMARY KEY (id)`, `UNIQUE (b)` or `UNIQUE NULLS NOT
    /// DISTINCT (b)`.
    pub fn constraint_definition(&self) -> String {
        format!(
            "{} ({})",
            if self.primary {
                "PRIMARY KEY"
            } else if self.nulls_not_distinct {
                "UNIQUE NULLS NOT DISTINCT"
            } else {
                "UNIQUE"
            },
            self.columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Quotes an identifier as PostgreSQL's `quote_ident` does: only when it is not a plain
/// lower-case name.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The OID of a schema from its catalog id ([`crate::catalog::SchemaDef::id`]).
pub fn schema_oid(id: u64) -> i64 {
    if id == 0 {
        PUBLIC_OID
    } else {
        FIRST_USER_OID + id as i64
    }
}

/// The OID of a database from its catalog id ([`crate::catalog::DatabaseDef::id`]).
pub fn database_oid(id: u64) -> i64 {
    if id == 0 {
        POSTGRES_DATABASE_OID
    } else {
        FIRST_USER_OID + id as i64
    }
}

/// The namespaces of the system, with their OIDs.
const SYSTEM_NAMESPACES: [(&str, i64); 3] = [
    (PG_CATALOG, PG_CATALOG_OID),
    ("pg_toast", PG_TOAST_OID),
    ("information_schema", INFORMATION_SCHEMA_OID),
];

/// The relations of every schema of a database at one moment, and the session's search path.
#[derive(Debug)]
pub struct Snapshot {
    tables: Vec<TableDef>,
    /// The schema of each table of `tables`, by position.
    table_schemas: Vec<String>,
    /// Every namespace (system and user) with its OID.
    namespaces: Vec<(String, i64)>,
    /// Where unqualified names are looked up, in order.
    search_path: Vec<String>,
}

impl Snapshot {
    pub fn take(lister: &dyn TableLister) -> Self {
        let (table_schemas, tables) = lister.list().into_iter().unzip();
        let namespaces = SYSTEM_NAMESPACES
            .iter()
            .map(|(n, o)| (n.to_string(), *o))
            .chain(
                lister
                    .schemas()
                    .into_iter()
                    .map(|(n, id)| (n, schema_oid(id))),
            )
            .collect();
        Snapshot {
            tables,
            table_schemas,
            namespaces,
            search_path: lister.search_path(),
        }
    }

    pub fn tables(&self) -> &[TableDef] {
        &self.tables
    }

    /// Every namespace with its OID, system ones first.
    pub fn namespaces(&self) -> &[(String, i64)] {
        &self.namespaces
    }

    /// The name of the namespace with this OID.
    pub fn namespace_name(&self, oid: i64) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|(_, o)| *o == oid)
            .map(|(n, _)| n.as_str())
    }

    /// The schema name of a table of this snapshot.
    pub fn schema_of(&self, t: &TableDef) -> &str {
        self.tables
            .iter()
            .position(|x| x.id == t.id)
            .and_then(|i| self.table_schemas.get(i))
            .map_or(DEFAULT_SCHEMA, String::as_str)
    }

    /// The OID of a table's schema.
    pub fn namespace_oid_of(&self, t: &TableDef) -> i64 {
        let schema = self.schema_of(t);
        self.namespaces
            .iter()
            .find(|(n, _)| n == schema)
            .map_or(PUBLIC_OID, |(_, o)| *o)
    }

    /// Whether an unqualified `name` finds the relation of `table` (the table itself or one
    /// of its indexes): its schema is the first of the search path with a relation so named.
    pub fn is_visible(&self, table: &TableDef, name: &str) -> bool {
        let schema = self.schema_of(table);
        self.search_path
            .iter()
            .find(|s| self.relation_in(s, name).is_some())
            .is_some_and(|s| s == schema)
    }

    /// The OID of the relation `name` of schema `schema`.
    fn relation_in(&self, schema: &str, name: &str) -> Option<i64> {
        self.tables
            .iter()
            .zip(&self.table_schemas)
            .filter(|(_, s)| *s == schema)
            .find_map(|(t, _)| {
                if t.name == name {
                    return Some(Self::table_oid(t));
                }
                Self::indexes_of(t)
                    .into_iter()
                    .find(|i| i.name == name)
                    .map(|i| i.oid)
            })
    }

    /// The table a relation OID names, or the table of the index it names.
    fn owner_table(&self, oid: i64) -> Option<&TableDef> {
        self.table(oid).or_else(|| {
            let ix = self.index(oid)?;
            self.table(ix.table_oid)
        })
    }

    /// `pg_table_is_visible(oid)`.
    pub fn oid_is_visible(&self, oid: i64) -> Option<bool> {
        let t = self.owner_table(oid)?;
        let name = self.relation_name(oid)?;
        Some(self.is_visible(t, &name))
    }

    /// A relation's name as `regclass` prints it: qualified by its schema when the search
    /// path would not find it unqualified.
    pub fn display_name(&self, oid: i64) -> Option<String> {
        let name = self.relation_name(oid)?;
        let t = self.owner_table(oid)?;
        Some(if self.is_visible(t, &name) {
            quote_ident(&name)
        } else {
            format!("{}.{}", quote_ident(self.schema_of(t)), quote_ident(&name))
        })
    }

    pub fn table_oid(t: &TableDef) -> i64 {
        FIRST_USER_OID + t.id as i64
    }

    /// The `attnum`s (1-based column positions, 0 for an unknown name) of `columns` in `t`,
    /// as `pg_index.indkey` and `pg_constraint.conkey` list them.
    fn attnums(t: &TableDef, columns: &[String]) -> Vec<i16> {
        columns
            .iter()
            .map(|c| {
                t.columns
                    .iter()
                    .position(|x| &x.name == c)
                    .map_or(0, |p| p as i16 + 1)
            })
            .collect()
    }

    /// The indexes of one table: the primary key first, then the rest in creation order.
    pub fn indexes_of(t: &TableDef) -> Vec<IndexInfo> {
        let mut out = Vec::new();
        let Some(opts) = t.row_options() else {
            return out;
        };
        let table_oid = Self::table_oid(t);
        if !opts.primary_key.is_empty() {
            out.push(IndexInfo {
                oid: PKEY_OID_BASE + t.id as i64,
                name: format!("{}_pkey", t.name),
                table_oid,
                table_name: t.name.clone(),
                columns: opts.primary_key.clone(),
                unique: true,
                primary: true,
                constraint: true,
                valid: true,
                order: Vec::new(),
                nulls_not_distinct: false,
            });
        }
        for ix in &opts.indexes {
            out.push(IndexInfo {
                oid: FIRST_USER_OID + ix.id as i64,
                name: ix.name.clone(),
                table_oid,
                table_name: t.name.clone(),
                columns: ix.columns.clone(),
                unique: ix.unique,
                primary: false,
                constraint: ix.constraint,
                valid: !ix.building,
                order: ix.order.clone(),
                nulls_not_distinct: ix.nulls_not_distinct,
            });
        }
        out
    }

    pub fn indexes(&self) -> Vec<IndexInfo> {
        self.tables.iter().flat_map(Self::indexes_of).collect()
    }

    /// `pg_get_indexdef(oid)` (and `pg_indexes.indexdef`): the index's definition with its
    /// table qualified by its schema, as PostgreSQL writes it unless asked to be pretty.
    pub fn qualified_index_definition(&self, ix: &IndexInfo) -> String {
        let table = match self.owner_table(ix.table_oid) {
            Some(t) => format!(
                "{}.{}",
                quote_ident(self.schema_of(t)),
                quote_ident(&ix.table_name)
            ),
            None => quote_ident(&ix.table_name),
        };
        ix.definition_on(&table)
    }

    /// `pg_get_indexdef(oid, 0, true)`: the index's definition, its table qualified only when
    /// the search path would not find it unqualified (as psql's `\d` shows it).
    pub fn index_definition(&self, ix: &IndexInfo) -> String {
        let table = self
            .display_name(ix.table_oid)
            .unwrap_or_else(|| quote_ident(&ix.table_name));
        ix.definition_on(&table)
    }

    pub fn table(&self, oid: i64) -> Option<&TableDef> {
        self.tables.iter().find(|t| Self::table_oid(t) == oid)
    }

    pub fn index(&self, oid: i64) -> Option<IndexInfo> {
        self.indexes().into_iter().find(|i| i.oid == oid)
    }

    /// The name of the table or index with this OID.
    pub fn relation_name(&self, oid: i64) -> Option<String> {
        self.table(oid)
            .map(|t| t.name.clone())
            .or_else(|| self.index(oid).map(|i| i.name))
    }

    /// The OID of the table or index `name` of `schema`, or, without a schema, of the first
    /// schema of the search path that has one so named.
    pub fn relation_oid(&self, schema: Option<&str>, name: &str) -> Option<i64> {
        match schema {
            Some(s) => self.relation_in(s, name),
            None => self
                .search_path
                .iter()
                .find_map(|s| self.relation_in(s, name)),
        }
    }
}

/// What `pg_type` and `pg_attribute` say about a column type.
pub struct TypeInfo {
    pub oid: i64,
    pub name: &'static str,
    pub len: i16,
    pub byval: bool,
    pub align: &'static str,
    pub storage: &'static str,
    pub collation: i64,
    pub category: &'static str,
}

/// A [`TypeInfo`] from its fields in declaration order.
macro_rules! ty {
    ($oid:expr, $name:expr, $len:expr, $byval:expr, $align:expr, $storage:expr, $collation:expr, $category:expr $(,)?) => {
        TypeInfo {
            oid: $oid,
            name: $name,
            len: $len,
            byval: $byval,
            align: $align,
            storage: $storage,
            collation: $collation,
            category: $category,
        }
    };
}

/// The types braid's columns can have, plus those its catalog columns use.
pub const TYPES: [TypeInfo; 20] = [
    ty!(16, "bool", 1, true, "c", "p", 0, "B"),
    ty!(17, "bytea", -1, false, "i", "x", 0, "U"),
    ty!(19, "name", 64, false, "c", "p", 950, "S"),
    ty!(20, "int8", 8, true, "d", "p", 0, "N"),
    ty!(21, "int2", 2, true, "s", "p", 0, "N"),
    ty!(23, "int4", 4, true, "i", "p", 0, "N"),
    ty!(25, "text", -1, false, "i", "x", DEFAULT_COLLATION_OID, "S"),
    ty!(26, "oid", 4, true, "i", "p", 0, "N"),
    ty!(114, "json", -1, false, "i", "x", 0, "U"),
    ty!(700, "float4", 4, true, "i", "p", 0, "N"),
    ty!(701, "float8", 8, true, "d", "p", 0, "N"),
    ty!(
        1042,
        "bpchar",
        -1,
        false,
        "i",
        "x",
        DEFAULT_COLLATION_OID,
        "S",
    ),
    ty!(
        1043,
        "varchar",
        -1,
        false,
        "i",
        "x",
        DEFAULT_COLLATION_OID,
        "S",
    ),
    ty!(1082, "date", 4, true, "i", "p", 0, "D"),
    ty!(1114, "timestamp", 8, true, "d", "p", 0, "D"),
    ty!(1184, "timestamptz", 8, true, "d", "p", 0, "D"),
    ty!(1186, "interval", 16, false, "d", "p", 0, "T"),
    ty!(1700, "numeric", -1, false, "i", "m", 0, "N"),
    ty!(2950, "uuid", 16, false, "c", "p", 0, "U"),
    ty!(3802, "jsonb", -1, false, "i", "x", 0, "U"),
];

/// The `pg_type` OID and type modifier (`atttypmod`) of a column type.
pub fn type_of(t: ColumnType) -> (i64, i32) {
    match t {
        ColumnType::Bool => (16, -1),
        ColumnType::Int2 => (21, -1),
        ColumnType::Int4 => (23, -1),
        ColumnType::Int8 => (20, -1),
        ColumnType::Float4 => (700, -1),
        ColumnType::Float8 => (701, -1),
        // PostgreSQL packs numeric(p,s) as ((p << 16) | s) + 4 (VARHDRSZ).
        ColumnType::Numeric { precision, scale } => (
            1700,
            ((i32::from(precision) << 16) | i32::from(scale as u8)) + 4,
        ),
        ColumnType::Text => (25, -1),
        ColumnType::Bytea => (17, -1),
        ColumnType::Date => (1082, -1),
        ColumnType::Timestamp => (1114, -1),
        ColumnType::Timestamptz => (1184, -1),
        ColumnType::Jsonb => (3802, -1),
        ColumnType::Uuid => (2950, -1),
        ColumnType::Interval => (1186, -1),
    }
}

/// The `pg_type` OID and type modifier of a column, as declared.
pub fn column_type(c: &ColumnDef) -> (i64, i32) {
    match c.char_type {
        // PostgreSQL's typmod of character(n) and character varying(n) is n + 4 (VARHDRSZ).
        Some(ct) => (
            if ct.varying { 1043 } else { 1042 },
            ct.length
                .and_then(|l| i32::try_from(l).ok())
                .map_or(-1, |l| l.saturating_add(4)),
        ),
        None => type_of(c.ty),
    }
}

pub fn type_info(oid: i64) -> Option<&'static TypeInfo> {
    TYPES.iter().find(|t| t.oid == oid)
}

/// The `pg_catalog` schema of one database.
#[derive(Debug)]
pub struct PgCatalogSchema {
    tables: Arc<dyn TableLister>,
    user: String,
}

fn oid(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}
fn i16v(v: i16) -> ScalarValue {
    ScalarValue::Int16(Some(v))
}
fn i32v(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}
fn b(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}
fn s(v: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(v.to_string()))
}
fn null_text() -> ScalarValue {
    ScalarValue::Utf8(None)
}
fn int2_list(v: &[i16]) -> ScalarValue {
    let values: Vec<ScalarValue> = v.iter().map(|x| i16v(*x)).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Int16))
}

/// Column types of the catalog tables, by PostgreSQL's type: OIDs are `bigint` (braid's
/// synthetic OIDs are plain integers), `name` and `"char"` are text.
#[derive(Clone, Copy)]
enum C {
    Oid,
    Text,
    Bool,
    I16,
    I32,
    F32,
    I16List,
    OidList,
    TextList,
}

fn schema(cols: &[(&str, C)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(n, c)| {
                let dt = match c {
                    C::Oid => DataType::Int64,
                    C::Text => DataType::Utf8,
                    C::Bool => DataType::Boolean,
                    C::I16 => DataType::Int16,
                    C::I32 => DataType::Int32,
                    C::F32 => DataType::Float32,
                    C::I16List => {
                        DataType::List(Arc::new(Field::new_list_field(DataType::Int16, true)))
                    }
                    C::OidList => {
                        DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
                    }
                    C::TextList => {
                        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
                    }
                };
                Field::new(*n, dt, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// The columns of each catalog table, in PostgreSQL 15's order (columns braid has nothing for,
/// such as ACLs and options, are left out).
fn columns_of(name: &str) -> Option<Vec<(&'static str, C)>> {
    use C::*;
    Some(match name {
        "pg_database" => vec![
            ("oid", Oid),
            ("datname", Text),
            ("datdba", Oid),
            ("encoding", I32),
            ("datlocprovider", Text),
            ("datistemplate", Bool),
            ("datallowconn", Bool),
            ("datconnlimit", I32),
            ("datcollate", Text),
            ("datctype", Text),
            ("daticulocale", Text),
            ("datacl", TextList),
            ("dattablespace", Oid),
        ],
        "pg_tablespace" => vec![
            ("oid", Oid),
            ("spcname", Text),
            ("spcowner", Oid),
            ("spcacl", TextList),
            ("spcoptions", TextList),
        ],
        "pg_namespace" => vec![
            ("oid", Oid),
            ("nspname", Text),
            ("nspowner", Oid),
            ("nspacl", TextList),
        ],
        "pg_am" => vec![("oid", Oid), ("amname", Text), ("amtype", Text)],
        "pg_class" => vec![
            ("oid", Oid),
            ("relname", Text),
            ("relnamespace", Oid),
            ("reltype", Oid),
            ("reloftype", Oid),
            ("relowner", Oid),
            ("relam", Oid),
            ("relfilenode", Oid),
            ("reltablespace", Oid),
            ("relpages", I32),
            ("reltuples", F32),
            ("relallvisible", I32),
            ("reltoastrelid", Oid),
            ("relhasindex", Bool),
            ("relisshared", Bool),
            ("relpersistence", Text),
            ("relkind", Text),
            ("relnatts", I16),
            ("relchecks", I16),
            ("relhasrules", Bool),
            ("relhastriggers", Bool),
            ("relhassubclass", Bool),
            ("relrowsecurity", Bool),
            ("relforcerowsecurity", Bool),
            ("relispopulated", Bool),
            ("relreplident", Text),
            ("relispartition", Bool),
            ("relrewrite", Oid),
            ("relfrozenxid", Oid),
            ("relminmxid", Oid),
            ("relpartbound", Text),
            // braid keeps no storage parameters: NULL in every row (see the rewrite of
            // psql's `array(... unnest(tc.reloptions) ...)`).
            ("reloptions", TextList),
        ],
        "pg_attribute" => vec![
            ("attrelid", Oid),
            ("attname", Text),
            ("atttypid", Oid),
            ("attstattarget", I32),
            ("attlen", I16),
            ("attnum", I16),
            ("attndims", I32),
            ("attcacheoff", I32),
            ("atttypmod", I32),
            ("attbyval", Bool),
            ("attalign", Text),
            ("attstorage", Text),
            ("attcompression", Text),
            ("attnotnull", Bool),
            ("atthasdef", Bool),
            ("atthasmissing", Bool),
            ("attidentity", Text),
            ("attgenerated", Text),
            ("attisdropped", Bool),
            ("attislocal", Bool),
            ("attinhcount", I32),
            ("attcollation", Oid),
        ],
        "pg_attrdef" => vec![
            ("oid", Oid),
            ("adrelid", Oid),
            ("adnum", I16),
            ("adbin", Text),
        ],
        "pg_index" => vec![
            ("indexrelid", Oid),
            ("indrelid", Oid),
            ("indnatts", I16),
            ("indnkeyatts", I16),
            ("indisunique", Bool),
            ("indnullsnotdistinct", Bool),
            ("indisprimary", Bool),
            ("indisexclusion", Bool),
            ("indimmediate", Bool),
            ("indisclustered", Bool),
            ("indisvalid", Bool),
            ("indcheckxmin", Bool),
            ("indisready", Bool),
            ("indislive", Bool),
            ("indisreplident", Bool),
            ("indkey", I16List),
            ("indexprs", Text),
            ("indpred", Text),
        ],
        "pg_constraint" => vec![
            ("oid", Oid),
            ("conname", Text),
            ("connamespace", Oid),
            ("contype", Text),
            ("condeferrable", Bool),
            ("condeferred", Bool),
            ("convalidated", Bool),
            ("conrelid", Oid),
            ("contypid", Oid),
            ("conindid", Oid),
            ("conparentid", Oid),
            ("confrelid", Oid),
            ("confupdtype", Text),
            ("confdeltype", Text),
            ("confmatchtype", Text),
            ("conislocal", Bool),
            ("coninhcount", I32),
            ("connoinherit", Bool),
            ("conkey", I16List),
            ("confkey", I16List),
            ("conbin", Text),
        ],
        "pg_type" => vec![
            ("oid", Oid),
            ("typname", Text),
            ("typnamespace", Oid),
            ("typowner", Oid),
            ("typlen", I16),
            ("typbyval", Bool),
            ("typtype", Text),
            ("typcategory", Text),
            ("typisdefined", Bool),
            ("typrelid", Oid),
            ("typelem", Oid),
            ("typnotnull", Bool),
            ("typbasetype", Oid),
            ("typtypmod", I32),
            ("typndims", I32),
            ("typcollation", Oid),
        ],
        "pg_collation" => vec![
            ("oid", Oid),
            ("collname", Text),
            ("collnamespace", Oid),
            ("collowner", Oid),
            ("collprovider", Text),
            ("collisdeterministic", Bool),
            ("collencoding", I32),
            ("collcollate", Text),
            ("collctype", Text),
        ],
        "pg_roles" => vec![
            ("oid", Oid),
            ("rolname", Text),
            ("rolsuper", Bool),
            ("rolcanlogin", Bool),
        ],
        "pg_tables" => vec![
            ("schemaname", Text),
            ("tablename", Text),
            ("tableowner", Text),
            ("tablespace", Text),
            ("hasindexes", Bool),
            ("hasrules", Bool),
            ("hastriggers", Bool),
            ("rowsecurity", Bool),
        ],
        "pg_indexes" => vec![
            ("schemaname", Text),
            ("tablename", Text),
            ("indexname", Text),
            ("tablespace", Text),
            ("indexdef", Text),
        ],
        "pg_policy" => vec![
            ("oid", Oid),
            ("polname", Text),
            ("polrelid", Oid),
            ("polcmd", Text),
            ("polpermissive", Bool),
            ("polroles", OidList),
            ("polqual", Text),
            ("polwithcheck", Text),
        ],
        "pg_statistic_ext" => vec![
            ("oid", Oid),
            ("stxrelid", Oid),
            ("stxname", Text),
            ("stxnamespace", Oid),
            ("stxowner", Oid),
            ("stxstattarget", I32),
            ("stxkeys", I16List),
            ("stxkind", TextList),
            ("stxexprs", Text),
        ],
        "pg_publication" => vec![
            ("oid", Oid),
            ("pubname", Text),
            ("pubowner", Oid),
            ("puballtables", Bool),
            ("pubinsert", Bool),
            ("pubupdate", Bool),
            ("pubdelete", Bool),
            ("pubtruncate", Bool),
            ("pubviaroot", Bool),
        ],
        "pg_publication_rel" => vec![
            ("oid", Oid),
            ("prpubid", Oid),
            ("prrelid", Oid),
            ("prqual", Text),
            ("prattrs", I16List),
        ],
        "pg_publication_namespace" => {
            vec![("oid", Oid), ("pnpubid", Oid), ("pnnspid", Oid)]
        }
        "pg_inherits" => vec![
            ("inhrelid", Oid),
            ("inhparent", Oid),
            ("inhseqno", I32),
            ("inhdetachpending", Bool),
        ],
        "pg_trigger" => vec![
            ("oid", Oid),
            ("tgrelid", Oid),
            ("tgparentid", Oid),
            ("tgname", Text),
            ("tgfoid", Oid),
            ("tgtype", I16),
            ("tgenabled", Text),
            ("tgisinternal", Bool),
            ("tgconstrrelid", Oid),
            ("tgconstrindid", Oid),
            ("tgconstraint", Oid),
            ("tgdeferrable", Bool),
            ("tginitdeferred", Bool),
            ("tgnargs", I16),
            ("tgattr", I16List),
            ("tgqual", Text),
            ("tgoldtable", Text),
            ("tgnewtable", Text),
        ],
        "pg_rewrite" => vec![
            ("oid", Oid),
            ("rulename", Text),
            ("ev_class", Oid),
            ("ev_type", Text),
            ("ev_enabled", Text),
            ("is_instead", Bool),
            ("ev_qual", Text),
            ("ev_action", Text),
        ],
        "pg_description" => vec![
            ("objoid", Oid),
            ("classoid", Oid),
            ("objsubid", I32),
            ("description", Text),
        ],
        _ => return None,
    })
}

impl PgCatalogSchema {
    pub fn new(tables: Arc<dyn TableLister>, user: &str) -> Self {
        PgCatalogSchema {
            tables,
            user: user.to_string(),
        }
    }

    /// The rows of a catalog table, in the column order of [`columns_of`].
    fn rows(&self, name: &str) -> Vec<Vec<ScalarValue>> {
        let snap = Snapshot::take(self.tables.as_ref());
        match name {
            "pg_database" => self
                .tables
                .database_ids()
                .iter()
                .map(|(name, id)| {
                    vec![
                        oid(database_oid(*id)),
                        s(name),
                        oid(SUPERUSER_OID),
                        i32v(UTF8_ENCODING),
                        s("c"),
                        b(false),
                        b(true),
                        i32v(-1),
                        s(DATABASE_LOCALE),
                        s(DATABASE_LOCALE),
                        null_text(),
                        // Default privileges: PostgreSQL's NULL `datacl`.
                        ScalarValue::new_null_list(DataType::Utf8, true, 1),
                        oid(DEFAULT_TABLESPACE_OID),
                    ]
                })
                .collect(),
            "pg_tablespace" => [
                (DEFAULT_TABLESPACE_OID, "pg_default"),
                (GLOBAL_TABLESPACE_OID, "pg_global"),
            ]
            .into_iter()
            .map(|(o, name)| {
                vec![
                    oid(o),
                    s(name),
                    oid(SUPERUSER_OID),
                    ScalarValue::new_null_list(DataType::Utf8, true, 1),
                    ScalarValue::new_null_list(DataType::Utf8, true, 1),
                ]
            })
            .collect(),
            "pg_namespace" => snap
                .namespaces()
                .iter()
                .map(|(name, o)| {
                    vec![
                        oid(*o),
                        s(name),
                        // PostgreSQL 15 gives `public` to the database's owner role.
                        oid(if *o == PUBLIC_OID {
                            DATABASE_OWNER_OID
                        } else {
                            SUPERUSER_OID
                        }),
                        // NULL ACLs: default privileges.
                        ScalarValue::new_null_list(DataType::Utf8, true, 1),
                    ]
                })
                .collect(),
            "pg_am" => vec![
                vec![oid(HEAP_AM_OID), s("heap"), s("t")],
                vec![oid(BTREE_AM_OID), s("btree"), s("i")],
            ],
            "pg_class" => pg_class_rows(&snap),
            "pg_attribute" => pg_attribute_rows(&snap),
            "pg_attrdef" => snap
                .tables()
                .iter()
                .flat_map(|t| {
                    t.columns.iter().enumerate().filter_map(move |(i, c)| {
                        let num = i as i64 + 1;
                        c.default.as_ref().map(|d| {
                            // Unique per (table, column): PostgreSQL allows 1600 columns.
                            let def_oid = 3 * PKEY_OID_BASE + t.id as i64 * 1600 + num;
                            vec![
                                oid(def_oid),
                                oid(Snapshot::table_oid(t)),
                                i16v(num as i16),
                                s(d),
                            ]
                        })
                    })
                })
                .collect(),
            "pg_index" => snap
                .tables()
                .iter()
                .flat_map(|t| {
                    Snapshot::indexes_of(t).into_iter().map(move |ix| {
                        let key = Snapshot::attnums(t, &ix.columns);
                        let n = ix.columns.len() as i16;
                        vec![
                            oid(ix.oid),
                            oid(ix.table_oid),
                            i16v(n),
                            i16v(n),
                            b(ix.unique),
                            b(ix.nulls_not_distinct),
                            b(ix.primary),
                            b(false),
                            b(true),
                            b(false),
                            b(ix.valid),
                            b(false),
                            b(ix.valid),
                            b(true),
                            b(false),
                            int2_list(&key),
                            null_text(),
                            null_text(),
                        ]
                    })
                })
                .collect(),
            "pg_constraint" => snap
                .tables()
                .iter()
                .flat_map(|t| {
                    let namespace = snap.namespace_oid_of(t);
                    Snapshot::indexes_of(t).into_iter().filter_map(move |ix| {
                        let con = ix.constraint_oid()?;
                        let key = Snapshot::attnums(t, &ix.columns);
                        Some(vec![
                            oid(con),
                            s(&ix.name),
                            oid(namespace),
                            s(if ix.primary { "p" } else { "u" }),
                            b(false),
                            b(false),
                            b(true),
                            oid(ix.table_oid),
                            oid(0),
                            oid(ix.oid),
                            oid(0),
                            oid(0),
                            s(" "),
                            s(" "),
                            s(" "),
                            b(true),
                            i32v(0),
                            b(true),
                            int2_list(&key),
                            ScalarValue::List(ScalarValue::new_list_nullable(
                                &[],
                                &DataType::Int16,
                            )),
                            null_text(),
                        ])
                    })
                })
                .collect(),
            "pg_type" => TYPES
                .iter()
                .map(|t| {
                    vec![
                        oid(t.oid),
                        s(t.name),
                        oid(PG_CATALOG_OID),
                        oid(SUPERUSER_OID),
                        i16v(t.len),
                        b(t.byval),
                        s("b"),
                        s(t.category),
                        b(true),
                        oid(0),
                        oid(0),
                        b(false),
                        oid(0),
                        i32v(-1),
                        i32v(0),
                        oid(t.collation),
                    ]
                })
                .collect(),
            "pg_collation" => [
                (DEFAULT_COLLATION_OID, "default", "d", None),
                (950, "C", "c", Some("C")),
                (951, "POSIX", "c", Some("POSIX")),
            ]
            .into_iter()
            .map(|(o, name, provider, locale)| {
                let locale = locale.map_or(null_text(), s);
                vec![
                    oid(o),
                    s(name),
                    oid(PG_CATALOG_OID),
                    oid(SUPERUSER_OID),
                    s(provider),
                    b(true),
                    i32v(-1),
                    locale.clone(),
                    locale,
                ]
            })
            .collect(),
            "pg_roles" => vec![vec![oid(SUPERUSER_OID), s(&self.user), b(true), b(true)]],
            // PostgreSQL's views: tables (relkind `r`) with their owner, and every index with
            // `pg_get_indexdef`'s definition (the table always schema-qualified). The
            // tablespace is NULL: the database's default.
            "pg_tables" => snap
                .tables()
                .iter()
                .map(|t| {
                    vec![
                        s(snap.schema_of(t)),
                        s(&t.name),
                        s(&self.user),
                        null_text(),
                        b(!Snapshot::indexes_of(t).is_empty()),
                        b(false),
                        b(false),
                        b(false),
                    ]
                })
                .collect(),
            "pg_indexes" => snap
                .tables()
                .iter()
                .flat_map(|t| {
                    let snap = &snap;
                    Snapshot::indexes_of(t).into_iter().map(move |ix| {
                        vec![
                            s(snap.schema_of(t)),
                            s(&t.name),
                            s(&ix.name),
                            null_text(),
                            s(&snap.qualified_index_definition(&ix)),
                        ]
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn build(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(cols) = columns_of(name) else {
            return Ok(None);
        };
        let schema = schema(&cols);
        let rows = self.rows(name);
        let batch = if rows.is_empty() {
            RecordBatch::new_empty(schema.clone())
        } else {
            let columns = (0..cols.len())
                .map(|i| {
                    ScalarValue::iter_to_array(
                        rows.iter()
                            .map(|r| r.get(i).cloned().unwrap_or(ScalarValue::Null)),
                    )
                })
                .collect::<DfResult<Vec<ArrayRef>>>()?;
            RecordBatch::try_new(schema.clone(), columns)?
        };
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }
}

fn pg_class_rows(snap: &Snapshot) -> Vec<Vec<ScalarValue>> {
    let mut rows = Vec::new();
    let row = |oid_: i64,
               name: &str,
               namespace: i64,
               kind: &str,
               am: i64,
               natts: usize,
               has_index: bool| {
        vec![
            oid(oid_),
            s(name),
            oid(namespace),
            oid(0),
            oid(0),
            oid(SUPERUSER_OID),
            oid(am),
            oid(oid_),
            oid(0),
            i32v(0),
            ScalarValue::Float32(Some(-1.0)),
            i32v(0),
            oid(0),
            b(has_index),
            b(false),
            s("p"),
            s(kind),
            i16v(natts as i16),
            i16v(0),
            b(false),
            b(false),
            b(false),
            b(false),
            b(false),
            b(true),
            s(if kind == "i" { "n" } else { "d" }),
            b(false),
            oid(0),
            oid(0),
            oid(0),
            null_text(),
            ScalarValue::new_null_list(DataType::Utf8, true, 1),
        ]
    };
    for t in snap.tables() {
        let indexes = Snapshot::indexes_of(t);
        let namespace = snap.namespace_oid_of(t);
        rows.push(row(
            Snapshot::table_oid(t),
            &t.name,
            namespace,
            "r",
            HEAP_AM_OID,
            t.columns.len(),
            !indexes.is_empty(),
        ));
        for ix in indexes {
            rows.push(row(
                ix.oid,
                &ix.name,
                namespace,
                "i",
                BTREE_AM_OID,
                ix.columns.len(),
                false,
            ));
        }
    }
    rows
}

fn pg_attribute_rows(snap: &Snapshot) -> Vec<Vec<ScalarValue>> {
    let mut rows = Vec::new();
    let row = |rel: i64, num: usize, c: &ColumnDef, notnull: bool, hasdef: bool| {
        let (type_oid, typmod) = column_type(c);
        let info = type_info(type_oid);
        vec![
            oid(rel),
            s(&c.name),
            oid(type_oid),
            i32v(-1),
            i16v(info.map_or(-1, |i| i.len)),
            i16v(num as i16),
            i32v(0),
            i32v(-1),
            i32v(typmod),
            b(info.is_some_and(|i| i.byval)),
            s(info.map_or("i", |i| i.align)),
            s(info.map_or("p", |i| i.storage)),
            s(""),
            b(notnull),
            b(hasdef),
            b(false),
            s(""),
            s(""),
            b(false),
            b(true),
            i32v(0),
            // The type's own collation: psql shows a Collation only where they differ.
            oid(info.map_or(0, |i| i.collation)),
        ]
    };
    for t in snap.tables() {
        let rel = Snapshot::table_oid(t);
        for (i, c) in t.columns.iter().enumerate() {
            rows.push(row(rel, i + 1, c, !c.nullable, c.default.is_some()));
        }
        for ix in Snapshot::indexes_of(t) {
            let columns = ix
                .columns
                .iter()
                .filter_map(|name| t.columns.iter().find(|c| &c.name == name));
            for (i, c) in columns.enumerate() {
                rows.push(row(ix.oid, i + 1, c, false, false));
            }
        }
    }
    rows
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES
            .iter()
            .chain(EMPTY_TABLES.iter())
            .map(|s| s.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.build(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name) || EMPTY_TABLES.contains(&name)
    }
}
