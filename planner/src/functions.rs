//! PostgreSQL session functions drivers and tools call right after connecting: `version()`,
//! `current_database()`, `current_schema()`, `current_user`, `session_user`,
//! `pg_backend_pid()`. They are constants of the session, except `current_schema()`, which
//! follows `search_path`. Also `pg_typeof(any)`.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;

/// The text `version()` returns; tools parse the "PostgreSQL <major>.<minor>" prefix.
pub fn version_text() -> String {
    format!("PostgreSQL 15.0 (braid {})", env!("CARGO_PKG_VERSION"))
}

fn constant(ctx: &SessionContext, name: &str, value: ScalarValue) {
    let dt = value.data_type();
    let f = Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone())));
    ctx.register_udf(create_udf(name, vec![], dt, Volatility::Stable, f));
}

/// Registers the session functions on `ctx`.
pub fn register(ctx: &SessionContext, database: &str, user: &str, backend_pid: i32) {
    let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
    constant(ctx, "version", text(&version_text()));
    constant(ctx, "current_database", text(database));
    constant(ctx, "current_catalog", text(database));
    constant(ctx, "current_user", text(user));
    constant(ctx, "session_user", text(user));
    constant(ctx, "user", text(user));
    constant(ctx, "pg_backend_pid", ScalarValue::Int32(Some(backend_pid)));
    register_type_functions(ctx);
}

/// `current_schema()`: the first existing schema of the session's search path (where CREATE
/// puts an unqualified name), NULL when none exists; `schema` reads it when the query runs.
pub fn register_current_schema(
    ctx: &SessionContext,
    schema: impl Fn() -> Option<String> + Send + Sync + 'static,
) {
    let f =
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(schema()))));
    ctx.register_udf(create_udf(
        "current_schema",
        vec![],
        datafusion::arrow::datatypes::DataType::Utf8,
        Volatility::Stable,
        f,
    ));
}

/// `pg_typeof(any)`: the PostgreSQL name of its argument's type (`integer`, `bigint`, `text`,
/// `timestamp with time zone`, `jsonb`, `integer[]`, ...), read from the argument's field at
/// planning time, as PostgreSQL reads it from the expression's type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let name = args
            .arg_fields
            .first()
            .map_or_else(|| "unknown".to_string(), |f| pg_type_name(f));
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// The PostgreSQL name of the type a field of a query carries.
pub(crate) fn pg_type_name(field: &datafusion::arrow::datatypes::Field) -> String {
    use datafusion::arrow::datatypes::DataType;
    if let Some(t) = field.metadata().get(crate::types::PG_TYPE_METADATA_KEY) {
        return t.clone();
    }
    fn of(dt: &DataType) -> String {
        match dt {
            DataType::Null => "unknown".into(),
            DataType::Boolean => "boolean".into(),
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
            DataType::Int32 | DataType::UInt16 => "integer".into(),
            DataType::Int64 | DataType::UInt32 => "bigint".into(),
            DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => {
                "numeric".into()
            }
            DataType::Float16 | DataType::Float32 => "real".into(),
            DataType::Float64 => "double precision".into(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
            DataType::Date32 | DataType::Date64 => "date".into(),
            DataType::Timestamp(_, None) => "timestamp without time zone".into(),
            DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
            DataType::Time32(_) | DataType::Time64(_) => "time without time zone".into(),
            DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                format!("{}[]", pg_type_name(f))
            }
            DataType::Struct(_) => "record".into(),
            other => other.to_string(),
        }
    }
    of(field.data_type())
}

/// Registers the type functions (`pg_typeof`) on `ctx`.
pub fn register_type_functions(ctx: &SessionContext) {
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        PgTypeof {
            signature: datafusion::logical_expr::Signature::any(1, Volatility::Immutable),
        },
    ));
}
