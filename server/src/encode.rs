//! Arrow results to PostgreSQL rows: the type OID reported for each Arrow type, and text or
//! binary encoding of each value (through pgwire's `ToSql`/`ToSqlText`).

use std::sync::Arc;

use braid_planner::datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use braid_planner::datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Field, Float16Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, IntervalMonthDayNanoType, IntervalUnit, Schema,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use braid_planner::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use braid_planner::display_name;
use braid_planner::types::PG_TYPE_METADATA_KEY;
use braid_planner::types::{timestamp_text, timestamptz_text, SessionTimeZone};
use chrono::{DateTime, NaiveDate, Utc};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use rust_decimal::Decimal;

/// The PostgreSQL type for an Arrow field.
pub fn pg_type(field: &Field) -> Type {
    if let Some(t) = field.metadata().get(PG_TYPE_METADATA_KEY) {
        match t.as_str() {
            "jsonb" => return Type::JSONB,
            "uuid" => return Type::TEXT,
            _ => {}
        }
    }
    pg_type_of(field.data_type())
}

fn pg_type_of(dt: &DataType) -> Type {
    match dt {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Interval(IntervalUnit::MonthDayNano) => Type::INTERVAL,
        DataType::List(f) | DataType::LargeList(f) => match pg_type_of(f.data_type()) {
            Type::BOOL => Type::BOOL_ARRAY,
            Type::INT2 => Type::INT2_ARRAY,
            Type::INT4 => Type::INT4_ARRAY,
            Type::INT8 => Type::INT8_ARRAY,
            Type::FLOAT4 => Type::FLOAT4_ARRAY,
            Type::FLOAT8 => Type::FLOAT8_ARRAY,
            Type::TEXT => Type::TEXT_ARRAY,
            _ => Type::TEXT,
        },
        // Everything else goes out as its text rendering.
        _ => Type::TEXT,
    }
}

/// Row description for a schema and the client's requested formats.
pub fn field_infos(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = pg_type(f);
            // Types we only render as text are always sent as text.
            let fmt = if matches!(ty, Type::TEXT) && !is_text_native(f.data_type()) {
                FieldFormat::Text
            } else {
                format.format_for(i)
            };
            let size = type_size(&ty);
            FieldInfo::new(display_name(f.name()).to_string(), None, None, ty, fmt)
                .with_type_size(size)
        })
        .collect()
}

/// `pg_type.typlen` of a type braid sends, which RowDescription carries: the fixed width of
/// a value, -1 for a variable-length one (JDBC-based tools read it).
fn type_size(ty: &Type) -> i16 {
    match *ty {
        Type::BOOL | Type::CHAR => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE | Type::OID => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME => 8,
        Type::INTERVAL | Type::UUID => 16,
        Type::NAME => 64,
        _ => -1,
    }
}

fn is_text_native(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn enc_err(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::ApiError(Box::new(std::io::Error::other(e.to_string())))
}

fn timestamp_micros(col: &ArrayRef, row: usize) -> Option<i64> {
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => col
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .checked_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => col
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .checked_mul(1_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some(col.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Some(
            col.as_primitive::<TimestampNanosecondType>()
                .value(row)
                .div_euclid(1_000),
        ),
        _ => None,
    }
}

/// Encodes every row of `batch` with the types and formats in `fields`.
pub fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    tz: SessionTimeZone,
) -> PgWireResult<Vec<DataRow>> {
    let mut enc = DataRowEncoder::new(fields.clone());
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<_, _>>()
        .map_err(enc_err)?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (ci, col) in batch.columns().iter().enumerate() {
            let field = fields
                .get(ci)
                .ok_or_else(|| enc_err("column count mismatch"))?;
            encode_value(&mut enc, col, row, field, formatters.get(ci), tz)?;
        }
        rows.push(enc.take_row());
    }
    Ok(rows)
}

fn encode_value(
    enc: &mut DataRowEncoder,
    col: &ArrayRef,
    row: usize,
    field: &FieldInfo,
    formatter: Option<&ArrayFormatter>,
    tz: SessionTimeZone,
) -> PgWireResult<()> {
    if col.is_null(row) {
        return enc.encode_field(&None::<i32>);
    }
    let ty = field.datatype().clone();
    match col.data_type() {
        DataType::Boolean => enc.encode_field(&col.as_boolean().value(row)),
        DataType::Int8 => enc.encode_field(&i16::from(col.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => enc.encode_field(&col.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => enc.encode_field(&col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => enc.encode_field(&col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => enc.encode_field(&i16::from(col.as_primitive::<UInt8Type>().value(row))),
        DataType::UInt16 => {
            enc.encode_field(&i32::from(col.as_primitive::<UInt16Type>().value(row)))
        }
        DataType::UInt32 => {
            enc.encode_field(&i64::from(col.as_primitive::<UInt32Type>().value(row)))
        }
        DataType::UInt64 => {
            enc.encode_field(&Decimal::from(col.as_primitive::<UInt64Type>().value(row)))
        }
        DataType::Float16 => {
            enc.encode_field(&f32::from(col.as_primitive::<Float16Type>().value(row)))
        }
        DataType::Float32 if is_text(field) => {
            let v = col.as_primitive::<Float32Type>().value(row);
            encode_as_text(enc, &braid_planner::types::float4_text(v), &ty)
        }
        DataType::Float64 if is_text(field) => {
            let v = col.as_primitive::<Float64Type>().value(row);
            encode_as_text(enc, &braid_planner::types::float8_text(v), &ty)
        }
        DataType::Float32 => enc.encode_field(&col.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => enc.encode_field(&col.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<Decimal128Type>().value(row);
            match Decimal::try_from_i128_with_scale(v, (*scale).max(0) as u32) {
                Ok(d) => enc.encode_field(&d),
                Err(_) => encode_text(enc, formatter, row, &ty),
            }
        }
        DataType::Utf8 if ty == Type::JSONB => {
            let s = col.as_string::<i32>().value(row);
            match serde_json::from_str::<serde_json::Value>(s) {
                Ok(v) => enc.encode_field(&v),
                Err(_) => enc.encode_field(&s),
            }
        }
        DataType::Utf8 => enc.encode_field(&col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => enc.encode_field(&col.as_string::<i64>().value(row)),
        DataType::Utf8View => enc.encode_field(&col.as_string_view().value(row)),
        DataType::Binary => enc.encode_field(&col.as_binary::<i32>().value(row)),
        DataType::LargeBinary => enc.encode_field(&col.as_binary::<i64>().value(row)),
        DataType::BinaryView => enc.encode_field(&col.as_binary_view().value(row)),
        DataType::Date32 => {
            let days = col.as_primitive::<Date32Type>().value(row);
            match NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163)) {
                Some(d) => enc.encode_field(&d),
                None => encode_text(enc, formatter, row, &ty),
            }
        }
        DataType::Date64 => {
            let ms = col.as_primitive::<Date64Type>().value(row);
            match DateTime::from_timestamp_millis(ms) {
                Some(d) => enc.encode_field(&d.date_naive()),
                None => encode_text(enc, formatter, row, &ty),
            }
        }
        DataType::Timestamp(_, zone) => {
            let Some(us) = timestamp_micros(col, row) else {
                return encode_text(enc, formatter, row, &ty);
            };
            match DateTime::<Utc>::from_timestamp_micros(us) {
                // PostgreSQL's text form, in the session's time zone (binary is UTC).
                Some(_) if is_text(field) && zone.is_some() => match timestamptz_text(us, tz) {
                    Some(text) => encode_as_text(enc, &text, &ty),
                    None => encode_text(enc, formatter, row, &ty),
                },
                Some(_) if is_text(field) => match timestamp_text(us) {
                    Some(text) => encode_as_text(enc, &text, &ty),
                    None => encode_text(enc, formatter, row, &ty),
                },
                Some(dt) if zone.is_some() => enc.encode_field(&dt),
                Some(dt) => enc.encode_field(&dt.naive_utc()),
                None => encode_text(enc, formatter, row, &ty),
            }
        }
        DataType::List(_) | DataType::LargeList(_) if ty != Type::TEXT => {
            encode_list(enc, col, row, formatter, &ty)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            // PostgreSQL keeps microseconds; so do its text and binary forms.
            let v = col.as_primitive::<IntervalMonthDayNanoType>().value(row);
            if is_text(field) {
                encode_as_text(enc, &braid_planner::interval_arith::interval_text(v), &ty)
            } else {
                enc.encode_field(&pg_interval::Interval {
                    months: v.months,
                    days: v.days,
                    microseconds: v.nanoseconds.div_euclid(1000),
                })
            }
        }
        _ => encode_text(enc, formatter, row, &ty),
    }
}

fn is_text(field: &FieldInfo) -> bool {
    field.format() == FieldFormat::Text
}

/// Writes already-rendered text for a text-format field of type `ty`.
fn encode_as_text(enc: &mut DataRowEncoder, text: &str, ty: &Type) -> PgWireResult<()> {
    enc.encode_field_with_type_and_format(&text, ty, FieldFormat::Text, &Default::default())
}

/// Arrays of scalars: encoded as Vec<Option<T>>.
fn encode_list(
    enc: &mut DataRowEncoder,
    col: &ArrayRef,
    row: usize,
    formatter: Option<&ArrayFormatter>,
    ty: &Type,
) -> PgWireResult<()> {
    let values: ArrayRef = match col.data_type() {
        DataType::List(_) => col.as_list::<i32>().value(row),
        DataType::LargeList(_) => col.as_list::<i64>().value(row),
        _ => return encode_text(enc, formatter, row, ty),
    };
    fn collect<T: Clone>(a: &ArrayRef, f: impl Fn(usize) -> T) -> Vec<Option<T>> {
        (0..a.len())
            .map(|i| (!a.is_null(i)).then(|| f(i)))
            .collect()
    }
    match values.data_type() {
        DataType::Boolean => enc.encode_field(&collect(&values, |i| values.as_boolean().value(i))),
        DataType::Int16 => enc.encode_field(&collect(&values, |i| {
            values.as_primitive::<Int16Type>().value(i)
        })),
        DataType::Int32 => enc.encode_field(&collect(&values, |i| {
            values.as_primitive::<Int32Type>().value(i)
        })),
        DataType::Int64 => enc.encode_field(&collect(&values, |i| {
            values.as_primitive::<Int64Type>().value(i)
        })),
        DataType::Float32 => enc.encode_field(&collect(&values, |i| {
            values.as_primitive::<Float32Type>().value(i)
        })),
        DataType::Float64 => enc.encode_field(&collect(&values, |i| {
            values.as_primitive::<Float64Type>().value(i)
        })),
        DataType::Utf8 => enc.encode_field(&collect(&values, |i| {
            values.as_string::<i32>().value(i).to_string()
        })),
        DataType::Utf8View => enc.encode_field(&collect(&values, |i| {
            values.as_string_view().value(i).to_string()
        })),
        _ => encode_text(enc, formatter, row, ty),
    }
}

fn encode_text(
    enc: &mut DataRowEncoder,
    formatter: Option<&ArrayFormatter>,
    row: usize,
    _ty: &Type,
) -> PgWireResult<()> {
    let text = match formatter {
        Some(f) => f.value(row).to_string(),
        None => String::new(),
    };
    // Fields rendered here were described as TEXT (see `field_infos`).
    enc.encode_field_with_type_and_format(
        &text,
        &Type::TEXT,
        FieldFormat::Text,
        &Default::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f8(v: f64) -> String {
        braid_planner::types::float8_text(v)
    }

    fn f4(v: f32) -> String {
        braid_planner::types::float4_text(v)
    }

    fn timestamptz_text(dt: &DateTime<Utc>, tz: SessionTimeZone) -> String {
        braid_planner::types::timestamptz_text(dt.timestamp_micros(), tz)
            .expect("an instant in chrono's range")
    }

    /// Expected values are PostgreSQL 15.18's output after the same `SET TIME ZONE`.
    #[test]
    fn timestamptz_text_follows_the_session_time_zone() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("a test instant")
                .with_timezone(&Utc)
        };
        let zone = |s: &str| SessionTimeZone::parse(s).expect("a zone braid reads");
        let noon = at("2024-01-02T12:00:00Z");
        let summer = at("2024-07-01T23:30:00.5Z");
        assert_eq!(
            timestamptz_text(&noon, zone("UTC")),
            "2024-01-02 12:00:00+00"
        );
        assert_eq!(
            timestamptz_text(&noon, zone("Europe/Berlin")),
            "2024-01-02 13:00:00+01"
        );
        assert_eq!(
            timestamptz_text(&summer, zone("europe/berlin")),
            "2024-07-02 01:30:00.5+02"
        );
        assert_eq!(
            timestamptz_text(&summer, zone("asia/kolkata")),
            "2024-07-02 05:00:00.5+05:30"
        );
        assert_eq!(
            timestamptz_text(&noon, zone("-7")),
            "2024-01-02 05:00:00-07"
        );
        assert_eq!(
            timestamptz_text(&noon, zone("America/St_Johns")),
            "2024-01-02 08:30:00-03:30"
        );
        // An offset with seconds (local mean times before 1900) is printed in full, as
        // PostgreSQL prints Amsterdam's `+00:19:32`; here as a fixed offset, since which zones
        // have one depends on the time zone database's version.
        assert_eq!(
            timestamptz_text(&at("1900-01-01T00:00:00Z"), SessionTimeZone::Fixed(1172)),
            "1900-01-01 00:19:32+00:19:32"
        );
        assert_eq!(
            timestamptz_text(&at("1900-01-01T00:00:00Z"), SessionTimeZone::Fixed(-2588)),
            "1899-12-31 23:16:52-00:43:08"
        );
        assert_eq!(zone("LOCAL"), zone("UTC"));
        assert!(SessionTimeZone::parse("Mars/Olympus").is_none());
        assert!(SessionTimeZone::parse("99").is_none(), "past ±15:59:59");
    }

    /// Expected values are PostgreSQL 15's output for the same literals.
    #[test]
    fn floats_render_like_postgresql() {
        assert_eq!(f8(1e20), "1e+20");
        assert_eq!(f8(1e15), "1e+15");
        assert_eq!(f8(1e14), "100000000000000");
        assert_eq!(f8(123456789012345678.0), "1.2345678901234568e+17");
        assert_eq!(f8(0.0001), "0.0001");
        assert_eq!(f8(0.00001), "1e-05");
        assert_eq!(f8(1.5e-7), "1.5e-07");
        assert_eq!(f8(-2.5e300), "-2.5e+300");
        assert_eq!(f8(1.5), "1.5");
        assert_eq!(f8(0.0), "0");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(f8(f64::NAN), "NaN");
        assert_eq!(f8(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(f4(1e14), "1e+14");
        assert_eq!(f4(123456.0), "123456");
        assert_eq!(f4(1234567.0), "1.234567e+06");
        assert_eq!(f4(123456789012345678.0), "1.2345679e+17");
        assert_eq!(f4(0.1), "0.1");
    }

    #[test]
    fn timestamps_keep_only_needed_fraction_digits() {
        let at = timestamp_text;
        assert_eq!(at(0).as_deref(), Some("1970-01-01 00:00:00"));
        assert_eq!(at(500_000).as_deref(), Some("1970-01-01 00:00:00.5"));
        assert_eq!(at(123_456).as_deref(), Some("1970-01-01 00:00:00.123456"));
        assert_eq!(at(120_000).as_deref(), Some("1970-01-01 00:00:00.12"));
    }
}
