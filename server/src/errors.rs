//! The one place where internal errors become PostgreSQL errors: a SQLSTATE and a message that
//! says what to change. Classes follow whose fault it is — 42 the query, 22 the data, 0A a
//! missing feature, 53 a resource limit, 58/XX the server.

use braid_planner::datafusion::arrow::error::ArrowError;
use braid_planner::datafusion::common::SchemaError;
use braid_planner::datafusion::error::DataFusionError;
use braid_planner::{Error, StorageErrorKind};
use pgwire::error::{ErrorInfo, PgWireError};

/// Builds the wire error for `code` and `message`.
pub fn error_info(code: &str, message: impl Into<String>) -> ErrorInfo {
    crate::metrics::METRICS.error(code);
    ErrorInfo::new("ERROR".to_string(), code.to_string(), message.into())
}

/// Maps a planner error to the wire error.
pub fn to_pg(e: &Error) -> ErrorInfo {
    let (code, message) = sqlstate(e);
    let mut info = error_info(code, message);
    info.detail = detail(e).map(str::to_string);
    info.hint = hint(e).map(str::to_string);
    info
}

/// The HINT line of an error, looking through DataFusion's wrappers.
fn hint(e: &Error) -> Option<&str> {
    match e {
        Error::DataFusion(d) => datafusion_hint(d),
        other => other.hint(),
    }
}

fn datafusion_hint(e: &DataFusionError) -> Option<&str> {
    match e {
        DataFusionError::Context(_, inner) => datafusion_hint(inner),
        DataFusionError::Shared(inner) => datafusion_hint(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_hint(inner),
        DataFusionError::Collection(errs) => errs.first().and_then(datafusion_hint),
        DataFusionError::External(b) => {
            if let Some(pe) = b.downcast_ref::<Error>() {
                hint(pe)
            } else if let Some(d) = b.downcast_ref::<DataFusionError>() {
                datafusion_hint(d)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The DETAIL line of an error, looking through DataFusion's wrappers.
fn detail(e: &Error) -> Option<&str> {
    match e {
        Error::DataFusion(d) => datafusion_detail(d),
        other => other.detail(),
    }
}

fn datafusion_detail(e: &DataFusionError) -> Option<&str> {
    match e {
        DataFusionError::Context(_, inner) => datafusion_detail(inner),
        DataFusionError::Shared(inner) => datafusion_detail(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_detail(inner),
        DataFusionError::Collection(errs) => errs.first().and_then(datafusion_detail),
        DataFusionError::External(b) => {
            if let Some(pe) = b.downcast_ref::<Error>() {
                detail(pe)
            } else if let Some(d) = b.downcast_ref::<DataFusionError>() {
                datafusion_detail(d)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Same as [`to_pg`], wrapped for pgwire's handler results.
pub fn to_pgwire(e: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(to_pg(e)))
}

/// The SQLSTATE and message for a planner error.
pub fn sqlstate(e: &Error) -> (&'static str, String) {
    let code = match e {
        Error::Syntax(_) | Error::SyntaxRule(_) => "42601",
        Error::UndefinedTable(_) | Error::UndefinedToDrop { .. } => "42P01",
        Error::DuplicateTable(_) => "42P07",
        Error::UndefinedColumn(_) => "42703",
        Error::DuplicateColumn(_) => "42701",
        Error::KeyColumnMissing(_) => "42703",
        Error::InvalidTableDefinition(_) => "42P16",
        Error::WrongObjectType(_) => "42809",
        Error::InvalidParameter(_) => "22023",
        Error::InvalidInput(_) => "22P02",
        Error::NotNullViolation(_) | Error::NotNullRow { .. } => "23502",
        Error::UniqueViolation { .. } => "23505",
        Error::SerializationFailure => "40001",
        Error::Deadlock => "40P01",
        Error::InvalidColumnReference(_) => "42P10",
        Error::CardinalityViolation { .. } => "21000",
        Error::ProgramLimit(_) => "54000",
        Error::Unsupported(_) => "0A000",
        Error::UndefinedDatabase(_) => "3D000",
        Error::DuplicateDatabase(_) => "42P04",
        Error::UndefinedSchema(_) | Error::NoSchemaSelected => "3F000",
        Error::DuplicateSchema(_) => "42P06",
        Error::ReservedName { .. } => "42939",
        Error::ObjectInUse { .. } => "55006",
        Error::PermissionDenied { .. } => "42501",
        Error::ActiveTransaction(_) => "25001",
        Error::DependentObjectsExist { .. } => "2BP01",
        Error::UndefinedObject(_) => "42704",
        Error::DependentObjects(_) => "2BP01",
        Error::InFailedTransaction => "25P02",
        Error::OutOfRange(_) | Error::FloatOutOfRange(_) | Error::NumericOverflow => "22003",
        Error::IntervalOutOfRange => "22008",
        Error::InvalidDatetimeInput { .. } => "22007",
        Error::DatetimeFieldOverflow { .. } => "22015",
        Error::Storage { kind, .. } => match kind {
            StorageErrorKind::DiskFull => "53100",
            StorageErrorKind::Corruption => "XX001",
            StorageErrorKind::Io => "58030",
            StorageErrorKind::InvalidArgument => "22023",
            StorageErrorKind::Other => "XX000",
        },
        Error::CatalogIo { .. } => "58030",
        Error::CatalogCorrupt { .. } => "XX001",
        Error::DataFusion(d) => return datafusion_sqlstate(d),
    };
    (code, e.to_string())
}

/// The relation named in a DataFusion message as the query wrote it: DataFusion quotes the
/// resolved `database.schema.name`; the database goes, and so does the schema when the query
/// named none (DataFusion then shows braid's search-path pseudo-schema, `$search_path`), so
/// `'db.$search_path.s'` → `s` and `'db.s1.t'` → `s1.t`, as PostgreSQL writes them.
fn quoted_name(msg: &str) -> Option<String> {
    let start = msg.find('\'')? + 1;
    let len = msg.get(start..)?.find('\'')?;
    let full = msg.get(start..start + len)?;
    let parts: Vec<&str> = full.split('.').collect();
    Some(match parts.as_slice() {
        [_, "$search_path", t] => t.to_string(),
        [_, s, t] => format!("{s}.{t}"),
        _ => full.rsplit('.').next().unwrap_or(full).to_string(),
    })
}

fn arrow_sqlstate(e: &ArrowError) -> (&'static str, String) {
    match e {
        ArrowError::DivideByZero => ("22012", "division by zero".into()),
        ArrowError::ArithmeticOverflow(m) => ("22003", format!("value out of range: {m}")),
        ArrowError::CastError(m) | ArrowError::ParseError(m) => {
            if let Some(type_name) = integer_cast_out_of_range(m) {
                ("22003", format!("{type_name} out of range"))
            } else if m.to_ascii_lowercase().contains("overflow") || m.contains("out of range") {
                ("22003", m.clone())
            } else {
                ("22P02", format!("invalid input syntax: {m}"))
            }
        }
        ArrowError::ComputeError(m) if m.to_ascii_lowercase().contains("overflow") => {
            ("22003", m.clone())
        }
        ArrowError::ExternalError(inner) => match inner.downcast_ref::<DataFusionError>() {
            Some(d) => datafusion_sqlstate(d),
            None => ("XX000", e.to_string()),
        },
        other => {
            let m = other.to_string();
            if m.contains("non-nullable") {
                (
                    "23502",
                    format!("null value violates not-null constraint ({m})"),
                )
            } else {
                ("XX000", m)
            }
        }
    }
}

/// The PostgreSQL name of the integer type a number did not fit into, from Arrow's message
/// for it (`Can't cast value 3000000000 to type Int32`): a value too big for an `integer`
/// column or cast is 22003 `integer out of range` in PostgreSQL, not bad input.
fn integer_cast_out_of_range(m: &str) -> Option<&'static str> {
    let to = m
        .strip_prefix("Can't cast value ")?
        .rsplit_once(" to type ")?
        .1;
    match to {
        "Int16" => Some("smallint"),
        "Int32" => Some("integer"),
        "Int64" => Some("bigint"),
        _ => None,
    }
}

/// The SQLSTATE and message for a DataFusion error, looking through its wrappers.
pub fn datafusion_sqlstate(e: &DataFusionError) -> (&'static str, String) {
    match e {
        DataFusionError::Context(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Shared(inner) => datafusion_sqlstate(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Collection(errs) => match errs.first() {
            Some(first) => datafusion_sqlstate(first),
            None => ("XX000", e.to_string()),
        },
        DataFusionError::External(b) => {
            if let Some(pe) = b.downcast_ref::<Error>() {
                sqlstate(pe)
            } else if let Some(d) = b.downcast_ref::<DataFusionError>() {
                datafusion_sqlstate(d)
            } else if let Some(a) = b.downcast_ref::<ArrowError>() {
                arrow_sqlstate(a)
            } else {
                ("XX000", b.to_string())
            }
        }
        DataFusionError::ArrowError(a, _) => arrow_sqlstate(a),
        DataFusionError::SQL(p, _) => ("42601", format!("syntax error: {p}")),
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                ("42703", format!("column \"{}\" does not exist", field.name))
            }
            SchemaError::AmbiguousReference { field } => (
                "42702",
                format!("column reference \"{}\" is ambiguous", field.name),
            ),
            _ => ("42701", s.to_string()),
        },
        DataFusionError::NotImplemented(m) => ("0A000", format!("not supported: {m}")),
        DataFusionError::Plan(m) => plan_sqlstate(m),
        DataFusionError::Execution(m) => {
            let lower = m.to_ascii_lowercase();
            if lower.contains("divide by zero") || lower.contains("division by zero") {
                ("22012", "division by zero".into())
            } else if lower.contains("cannot cast") || lower.contains("invalid input") {
                ("22P02", m.clone())
            } else if lower.contains("overflow") {
                ("22003", m.clone())
            } else if lower.contains("non-nullable") {
                (
                    "23502",
                    format!("null value violates not-null constraint ({m})"),
                )
            } else {
                ("XX000", m.clone())
            }
        }
        DataFusionError::ResourcesExhausted(m) => ("53200", m.clone()),
        DataFusionError::Configuration(m) => ("22023", m.clone()),
        DataFusionError::IoError(io) => ("58030", io.to_string()),
        other => ("XX000", other.to_string()),
    }
}

fn plan_sqlstate(m: &str) -> (&'static str, String) {
    let lower = m.to_ascii_lowercase();
    if lower.starts_with("table '") || (lower.contains("table '") && lower.contains("not found")) {
        let name = quoted_name(m).unwrap_or_default();
        return ("42P01", format!("relation \"{name}\" does not exist"));
    }
    if lower.contains("no field named") {
        return ("42703", m.to_string());
    }
    // braid's own "function f(type) does not exist", wrapped by DataFusion's coercion error.
    if let Some(at) = m.find("function ") {
        if let Some(len) = m[at..].find(" does not exist") {
            let message = &m[at..at + len + " does not exist".len()];
            return ("42883", message.to_string());
        }
    }
    if lower.contains("invalid function")
        || lower.contains("function") && lower.contains("not found")
    {
        return ("42883", m.to_string());
    }
    if lower.contains("cannot infer") || lower.contains("coerc") || lower.contains("cannot be cast")
    {
        return ("42804", m.to_string());
    }
    if lower.contains("divide by zero") {
        return ("22012", "division by zero".into());
    }
    if lower.contains("unsupported") || lower.contains("not supported") {
        return ("0A000", m.to_string());
    }
    ("42601", m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_relation_is_named_as_the_query_wrote_it() {
        let msg = |m: &str| plan_sqlstate(m);
        assert_eq!(
            msg("table 'postgres.$search_path.t' not found"),
            ("42P01", "relation \"t\" does not exist".to_string())
        );
        assert_eq!(
            msg("table 'postgres.s.t' not found"),
            ("42P01", "relation \"s.t\" does not exist".to_string())
        );
    }
}
