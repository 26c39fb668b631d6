//! Just enough of `pg_catalog` for psql's `\dt` and tools that list relations: `pg_namespace`,
//! `pg_class` (one row per stream, `relkind = 'r'`), `pg_am`, plus the functions those queries
//! call (`pg_get_userbyid`, `pg_table_is_visible`). Tables are built from the catalog on each
//! lookup, so they are always current. OIDs are synthetic: streams get `16384 + id`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;

/// Name of the schema.
pub const PG_CATALOG: &str = "pg_catalog";
/// OID of the `public` namespace (as in PostgreSQL).
const PUBLIC_OID: i64 = 2200;
const PG_CATALOG_OID: i64 = 11;
/// First OID handed to user objects (as in PostgreSQL).
const FIRST_USER_OID: i64 = 16384;
const HEAP_AM_OID: i64 = 2;
const SUPERUSER_OID: i64 = 10;

const TABLES: [&str; 3] = ["pg_namespace", "pg_class", "pg_am"];

/// The `pg_catalog` schema of one database.
#[derive(Debug)]
pub struct PgCatalogSchema {
    tables: Box<dyn TableLister>,
}

/// Lists (schema, table id, table name) for every table of a database.
pub trait TableLister: Send + Sync + std::fmt::Debug {
    fn list(&self) -> Vec<(String, u64, String)>;
}

impl PgCatalogSchema {
    pub fn new(tables: Box<dyn TableLister>) -> Self {
        PgCatalogSchema { tables }
    }

    fn build(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let (schema, columns): (SchemaRef, Vec<ArrayRef>) = match name {
            "pg_namespace" => (
                Arc::new(Schema::new(vec![
                    Field::new("oid", DataType::Int64, false),
                    Field::new("nspname", DataType::Utf8, false),
                    Field::new("nspowner", DataType::Int64, false),
                ])),
                vec![
                    Arc::new(Int64Array::from(vec![PG_CATALOG_OID, PUBLIC_OID])),
                    Arc::new(StringArray::from(vec![PG_CATALOG, "public"])),
                    Arc::new(Int64Array::from(vec![SUPERUSER_OID, SUPERUSER_OID])),
                ],
            ),
            "pg_am" => (
                Arc::new(Schema::new(vec![
                    Field::new("oid", DataType::Int64, false),
                    Field::new("amname", DataType::Utf8, false),
                ])),
                vec![
                    Arc::new(Int64Array::from(vec![HEAP_AM_OID])),
                    Arc::new(StringArray::from(vec!["heap"])),
                ],
            ),
            "pg_class" => {
                let tables: Vec<_> = self
                    .tables
                    .list()
                    .into_iter()
                    .filter(|(s, _, _)| s == "public")
                    .collect();
                let n = tables.len();
                (
                    Arc::new(Schema::new(vec![
                        Field::new("oid", DataType::Int64, false),
                        Field::new("relname", DataType::Utf8, false),
                        Field::new("relnamespace", DataType::Int64, false),
                        Field::new("relkind", DataType::Utf8, false),
                        Field::new("relowner", DataType::Int64, false),
                        Field::new("relam", DataType::Int64, false),
                    ])),
                    vec![
                        Arc::new(Int64Array::from_iter_values(
                            tables.iter().map(|(_, id, _)| FIRST_USER_OID + *id as i64),
                        )),
                        Arc::new(StringArray::from_iter_values(
                            tables.iter().map(|(_, _, n)| n),
                        )),
                        Arc::new(Int64Array::from(vec![PUBLIC_OID; n])),
                        Arc::new(StringArray::from(vec!["r"; n])),
                        Arc::new(Int64Array::from(vec![SUPERUSER_OID; n])),
                        Arc::new(Int64Array::from(vec![HEAP_AM_OID; n])),
                    ],
                )
            }
            _ => return Ok(None),
        };
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.build(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

/// Registers the `pg_catalog` functions psql's listing queries call.
pub fn register_functions(ctx: &SessionContext, user: &str) {
    let user = user.to_string();
    let owner = Arc::new(move |args: &[ColumnarValue]| {
        let rows = match args.first() {
            Some(ColumnarValue::Array(a)) => Some(a.len()),
            _ => None,
        };
        let v = ScalarValue::Utf8(Some(user.clone()));
        Ok(match rows {
            Some(n) => ColumnarValue::Array(v.to_array_of_size(n)?),
            None => ColumnarValue::Scalar(v),
        })
    });
    ctx.register_udf(create_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        owner,
    ));
    let visible = Arc::new(|args: &[ColumnarValue]| {
        let rows = match args.first() {
            Some(ColumnarValue::Array(a)) => Some(a.len()),
            _ => None,
        };
        let v = ScalarValue::Boolean(Some(true));
        Ok(match rows {
            Some(n) => ColumnarValue::Array(v.to_array_of_size(n)?),
            None => ColumnarValue::Scalar(v),
        })
    });
    ctx.register_udf(create_udf(
        "pg_table_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        visible,
    ));
}
