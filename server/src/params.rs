//! Bind parameters to DataFusion values: each parameter is decoded (text or binary) by its
//! PostgreSQL type, then cast to the Arrow type DataFusion inferred for the placeholder.

use std::sync::Arc;

use braid_planner::datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, IntervalUnit};
use braid_planner::datafusion::common::ScalarValue;
use braid_planner::datetime::normalize_timestamp;
use braid_planner::types::SessionTimeZone;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use pgwire::api::portal::Portal;
use pgwire::api::results::FieldFormat;
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use rust_decimal::Decimal;

use crate::errors::error_info;

/// The PostgreSQL type announced for a parameter DataFusion typed as `dt` (TEXT when unknown,
/// so that drivers send the value as text and we convert it).
pub fn param_pg_type(dt: Option<&DataType>) -> Type {
    match dt {
        Some(DataType::Boolean) => Type::BOOL,
        Some(DataType::Int8 | DataType::Int16) => Type::INT2,
        Some(DataType::Int32) => Type::INT4,
        Some(DataType::Int64) => Type::INT8,
        Some(DataType::Float32) => Type::FLOAT4,
        Some(DataType::Float64) => Type::FLOAT8,
        Some(DataType::Decimal128(..)) => Type::NUMERIC,
        Some(DataType::Binary | DataType::LargeBinary | DataType::BinaryView) => Type::BYTEA,
        Some(DataType::Date32) => Type::DATE,
        Some(DataType::Timestamp(_, None)) => Type::TIMESTAMP,
        Some(DataType::Timestamp(_, Some(_))) => Type::TIMESTAMPTZ,
        Some(DataType::Interval(IntervalUnit::MonthDayNano)) => Type::INTERVAL,
        _ => Type::TEXT,
    }
}

fn bad(e: impl std::fmt::Display) -> pgwire::error::PgWireError {
    pgwire::error::PgWireError::UserError(Box::new(error_info(
        "22P02",
        format!("invalid parameter value: {e}"),
    )))
}

/// Decodes all parameters of `portal`. `inferred` are DataFusion's placeholder types; `zone`
/// is the session's TimeZone, in which a timestamptz sent as text without an offset is read.
pub fn decode_params<S: Clone>(
    portal: &Portal<S>,
    inferred: &[Option<DataType>],
    zone: &SessionTimeZone,
) -> PgWireResult<Vec<ScalarValue>> {
    let mut out = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let target = inferred.get(i).cloned().flatten();
        let ty = portal
            .statement
            .parameter_types
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or_else(|| param_pg_type(target.as_ref()));
        let v = if ty == Type::INTERVAL {
            interval(portal, i)?
        } else if let Some(v) = text_timestamp(portal, i, &ty, zone)? {
            v
        } else {
            decode_one(portal, i, &ty)?
        };
        let v = match &target {
            Some(t) if &v.data_type() != t && !v.is_null() => {
                v.cast_to(t).map_err(|e| bad(format!("${}: {e}", i + 1)))?
            }
            Some(t) if v.is_null() => ScalarValue::try_from(t).unwrap_or(v),
            _ => v,
        };
        out.push(v);
    }
    Ok(out)
}

/// A timestamp or timestamptz parameter sent as text, read as PostgreSQL reads it (the short
/// forms, a zone name, the session's zone for a timestamptz without an offset: see
/// `braid_planner::datetime`). `None` for other parameters, and for text that reader does not
/// know, which then goes to the driver-format decoding below (and its error).
fn text_timestamp<S: Clone>(
    portal: &Portal<S>,
    i: usize,
    ty: &Type,
    zone: &SessionTimeZone,
) -> PgWireResult<Option<ScalarValue>> {
    let with_zone = match *ty {
        Type::TIMESTAMP => false,
        Type::TIMESTAMPTZ => true,
        _ => return Ok(None),
    };
    if portal.parameter_format.format_for(i) != FieldFormat::Text {
        return Ok(None);
    }
    let Some(text) = portal.parameter::<String>(i, &Type::TEXT)? else {
        return Ok(None);
    };
    let Some(canonical) = normalize_timestamp(&text, with_zone, zone) else {
        return Ok(None);
    };
    let micros = if with_zone {
        DateTime::parse_from_rfc3339(&canonical).map(|d| d.timestamp_micros())
    } else {
        NaiveDateTime::parse_from_str(&canonical, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|d| d.and_utc().timestamp_micros())
    }
    .map_err(|e| bad(format!("${}: {e}", i + 1)))?;
    Ok(Some(ScalarValue::TimestampMicrosecond(
        Some(micros),
        with_zone.then(|| Arc::from("UTC")),
    )))
}

/// An interval parameter: PostgreSQL's binary form (microseconds, days, months: 16 bytes,
/// another length is 22P03 as in PostgreSQL, never a panic), or text read as PostgreSQL's `interval_in` reads
/// it, with its errors (22007, 22015, 22008).
fn interval<S: Clone>(portal: &Portal<S>, i: usize) -> PgWireResult<ScalarValue> {
    let value = if portal.parameter_format.format_for(i) == FieldFormat::Text {
        match portal.parameter::<String>(i, &Type::TEXT)? {
            None => None,
            Some(text) => Some(
                braid_planner::interval_input::parse_interval(&text)
                    .map_err(|e| crate::errors::to_pgwire(&e))?,
            ),
        }
    } else {
        match portal.parameters.get(i).and_then(|p| p.as_deref()) {
            None => None,
            Some(raw) => {
                let Ok(raw) = <&[u8; 16]>::try_from(raw) else {
                    return Err(pgwire::error::PgWireError::UserError(Box::new(error_info(
                        "22P03",
                        format!("incorrect binary data format in bind parameter {}", i + 1),
                    ))));
                };
                Some(binary_interval(raw).ok_or_else(|| {
                    crate::errors::to_pgwire(&braid_planner::error::Error::IntervalOutOfRange)
                })?)
            }
        }
    };
    Ok(ScalarValue::IntervalMonthDayNano(value))
}

/// PostgreSQL's `interval_recv`: a big-endian i64 of microseconds, i32 days, i32 months.
/// `None` when the microseconds do not fit Arrow's nanoseconds.
fn binary_interval(raw: &[u8; 16]) -> Option<IntervalMonthDayNano> {
    let [m0, m1, m2, m3, m4, m5, m6, m7, d0, d1, d2, d3, o0, o1, o2, o3] = *raw;
    Some(IntervalMonthDayNano {
        months: i32::from_be_bytes([o0, o1, o2, o3]),
        days: i32::from_be_bytes([d0, d1, d2, d3]),
        nanoseconds: i64::from_be_bytes([m0, m1, m2, m3, m4, m5, m6, m7]).checked_mul(1000)?,
    })
}

fn decode_one<S: Clone>(portal: &Portal<S>, i: usize, ty: &Type) -> PgWireResult<ScalarValue> {
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, ty)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, ty)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, ty)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, ty)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, ty)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, ty)?),
        Type::NUMERIC => match portal.parameter::<Decimal>(i, ty)? {
            None => ScalarValue::Decimal128(None, 38, 10),
            Some(d) => ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8),
        },
        Type::BYTEA => ScalarValue::Binary(portal.parameter::<Vec<u8>>(i, ty)?),
        Type::DATE => ScalarValue::Date32(
            portal
                .parameter::<NaiveDate>(i, ty)?
                .map(|d| d.signed_duration_since(NaiveDate::default()).num_days() as i32),
        ),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<NaiveDateTime>(i, ty)?
                .map(|d| d.and_utc().timestamp_micros()),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<DateTime<chrono::FixedOffset>>(i, ty)?
                .map(|d| d.timestamp_micros()),
            Some(Arc::from("UTC")),
        ),
        Type::JSON | Type::JSONB => ScalarValue::Utf8(
            portal
                .parameter::<serde_json::Value>(i, ty)?
                .map(|v| v.to_string()),
        ),
        _ => ScalarValue::Utf8(portal.parameter::<String>(i, ty)?),
    })
}
