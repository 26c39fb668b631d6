//! PostgreSQL session functions drivers and tools call right after connecting: `version()`,
//! `current_database()`, `current_schema()`, `current_user`, `session_user`,
//! `pg_backend_pid()`. They are constants of the session.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;

use crate::catalog::DEFAULT_SCHEMA;

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
    constant(ctx, "current_schema", text(DEFAULT_SCHEMA));
    constant(ctx, "current_user", text(user));
    constant(ctx, "session_user", text(user));
    constant(ctx, "user", text(user));
    constant(ctx, "pg_backend_pid", ScalarValue::Int32(Some(backend_pid)));
}
