//! Column types braid stores, and how they map to SQL type names and Arrow types.
//!
//! Arrow has no `jsonb` or `uuid`; such columns are Utf8 in Arrow with the PostgreSQL type name
//! in the field metadata under [`PG_TYPE_METADATA_KEY`], so the wire layer can report the right
//! type OID.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::{DataType as SqlType, ExactNumberInfo};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Field metadata key naming the PostgreSQL type of an Arrow field when Arrow cannot tell.
pub const PG_TYPE_METADATA_KEY: &str = "braid.pg_type";

/// Time zone used for `timestamptz` columns.
pub const UTC: &str = "UTC";

/// A column type as persisted in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric {
        precision: u8,
        scale: i8,
    },
    Text,
    Bytea,
    Date,
    Timestamp,
    Timestamptz,
    Jsonb,
    Uuid,
    /// PostgreSQL's `interval`: months, days and microseconds, kept apart.
    Interval,
}

/// How a text column was declared when it was not plain `text`, so the catalog shows it as
/// PostgreSQL does (`character(84)`, `character varying(20)`). braid stores such columns as
/// text: it neither pads nor checks the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharType {
    /// `character varying` (`varchar`) rather than `character` (`char`).
    pub varying: bool,
    /// The declared length; `character` without one is `character(1)`, as in PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

impl CharType {
    /// The character type `t` declares, if it is one.
    pub fn from_sql(t: &SqlType) -> Option<CharType> {
        use datafusion::sql::sqlparser::ast::CharacterLength;
        use SqlType as S;
        let (varying, len) = match t {
            S::Char(l) | S::Character(l) => (false, l),
            S::Varchar(l) | S::CharacterVarying(l) | S::CharVarying(l) => (true, l),
            _ => return None,
        };
        let length = match len {
            Some(CharacterLength::IntegerLength { length, .. }) => Some(*length),
            Some(CharacterLength::Max) => None,
            None if varying => None,
            None => Some(1),
        };
        Some(CharType { varying, length })
    }
}

/// Precision and scale used for `numeric` without a type modifier.
const NUMERIC_DEFAULT: (u8, i8) = (38, 10);

impl ColumnType {
    /// Maps a parsed SQL type to a column type, or says which types are supported.
    pub fn from_sql(t: &SqlType) -> Result<Self> {
        use SqlType as S;
        Ok(match t {
            S::Boolean | S::Bool => ColumnType::Bool,
            S::SmallInt(_) | S::Int2(_) => ColumnType::Int2,
            S::Int(_) | S::Integer(_) | S::Int4(_) => ColumnType::Int4,
            S::BigInt(_) | S::Int8(_) => ColumnType::Int8,
            S::Real | S::Float4 => ColumnType::Float4,
            S::DoublePrecision | S::Double(_) | S::Float8 | S::Float(_) => ColumnType::Float8,
            S::Numeric(info) | S::Decimal(info) | S::Dec(info) => {
                let (precision, scale) = match info {
                    ExactNumberInfo::None => NUMERIC_DEFAULT,
                    ExactNumberInfo::Precision(p) => (clamp_precision(*p)?, 0),
                    ExactNumberInfo::PrecisionAndScale(p, s) => {
                        let p = clamp_precision(*p)?;
                        let s = i8::try_from(*s).map_err(|_| {
                            Error::InvalidParameter(format!("numeric scale {s} is out of range"))
                        })?;
                        if s < 0 || s as u8 > p {
                            return Err(Error::InvalidParameter(format!(
                                "numeric scale {s} must be between 0 and precision {p}"
                            )));
                        }
                        (p, s)
                    }
                };
                ColumnType::Numeric { precision, scale }
            }
            S::Text
            | S::String(_)
            | S::Varchar(_)
            | S::CharacterVarying(_)
            | S::Char(_)
            | S::Character(_) => ColumnType::Text,
            S::Bytea => ColumnType::Bytea,
            S::Date => ColumnType::Date,
            S::Timestamp(_, tz) => {
                use datafusion::sql::sqlparser::ast::TimezoneInfo as Tz;
                match tz {
                    Tz::WithTimeZone | Tz::Tz => ColumnType::Timestamptz,
                    _ => ColumnType::Timestamp,
                }
            }
            S::JSONB | S::JSON => ColumnType::Jsonb,
            S::Uuid => ColumnType::Uuid,
            S::Interval {
                fields: None,
                precision: None,
            } => ColumnType::Interval,
            S::Custom(name, _) => {
                let n = name.to_string().to_ascii_lowercase();
                match n.as_str() {
                    "timestamptz" => ColumnType::Timestamptz,
                    "jsonb" | "json" => ColumnType::Jsonb,
                    "uuid" => ColumnType::Uuid,
                    "serial" | "int" => ColumnType::Int4,
                    _ => return Err(unsupported_type(&n)),
                }
            }
            other => return Err(unsupported_type(&other.to_string())),
        })
    }

    /// The Arrow type used for this column in query plans.
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int2 => DataType::Int16,
            ColumnType::Int4 => DataType::Int32,
            ColumnType::Int8 => DataType::Int64,
            ColumnType::Float4 => DataType::Float32,
            ColumnType::Float8 => DataType::Float64,
            ColumnType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::Text | ColumnType::Jsonb | ColumnType::Uuid => DataType::Utf8,
            ColumnType::Bytea => DataType::Binary,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::Timestamptz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC)))
            }
            ColumnType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        }
    }

    /// The Arrow field for a column of this type, with the PostgreSQL type in the metadata
    /// where Arrow alone loses it.
    pub fn arrow_field(&self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.arrow_type(), nullable);
        match self {
            ColumnType::Jsonb | ColumnType::Uuid => field.with_metadata(HashMap::from([(
                PG_TYPE_METADATA_KEY.to_string(),
                self.sql_name(),
            )])),
            _ => field,
        }
    }

    /// The PostgreSQL spelling of the type.
    pub fn sql_name(&self) -> String {
        match self {
            ColumnType::Bool => "boolean".into(),
            ColumnType::Int2 => "smallint".into(),
            ColumnType::Int4 => "integer".into(),
            ColumnType::Int8 => "bigint".into(),
            ColumnType::Float4 => "real".into(),
            ColumnType::Float8 => "double precision".into(),
            ColumnType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            ColumnType::Text => "text".into(),
            ColumnType::Bytea => "bytea".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamp without time zone".into(),
            ColumnType::Timestamptz => "timestamp with time zone".into(),
            ColumnType::Jsonb => "jsonb".into(),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Interval => "interval".into(),
        }
    }
}

fn clamp_precision(p: u64) -> Result<u8> {
    if (1..=38).contains(&p) {
        Ok(p as u8)
    } else {
        Err(Error::InvalidParameter(format!(
            "numeric precision {p} must be between 1 and 38"
        )))
    }
}

fn unsupported_type(name: &str) -> Error {
    Error::Unsupported(format!(
        "type {name} is not supported; use boolean, smallint, integer, bigint, real, double \
         precision, numeric, text, varchar, bytea, date, timestamp, timestamptz, interval, jsonb \
         or uuid"
    ))
}

/// A session's `TimeZone` setting, as timestamptz output uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimeZone {
    /// A zone of the IANA database (`UTC`, `Europe/Berlin`, …).
    Named(chrono_tz::Tz),
    /// A fixed offset east of UTC, in seconds (`SET TIME ZONE -7` is -25200).
    Fixed(i32),
}

impl SessionTimeZone {
    /// Reads a `SET TIME ZONE` / `SET timezone` value as PostgreSQL does for the forms braid
    /// knows: an IANA zone name (any case), `LOCAL` / `DEFAULT` (UTC, the server's zone), or a
    /// number of hours east of UTC. `None` for anything else (PostgreSQL's POSIX forms such as
    /// `'+02:00'`, which it reads with the sign inverted, are not supported).
    pub fn parse(value: &str) -> Option<SessionTimeZone> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("local") || v.eq_ignore_ascii_case("default") {
            return Some(SessionTimeZone::Named(chrono_tz::Tz::UTC));
        }
        if let Ok(hours) = v.parse::<f64>() {
            let secs = (hours * 3600.0).round();
            // PostgreSQL accepts offsets up to 15:59:59.
            return (secs.abs() < 16.0 * 3600.0).then_some(SessionTimeZone::Fixed(secs as i32));
        }
        // PostgreSQL matches zone names in any case.
        v.parse::<chrono_tz::Tz>()
            .ok()
            .or_else(|| {
                chrono_tz::TZ_VARIANTS
                    .iter()
                    .find(|z| z.name().eq_ignore_ascii_case(v))
                    .copied()
            })
            .map(SessionTimeZone::Named)
    }

    /// The UTC offset in seconds at `utc` (an instant in this zone).
    pub fn offset_at(&self, utc: &chrono::NaiveDateTime) -> i32 {
        use chrono::{Offset, TimeZone};
        match self {
            SessionTimeZone::Named(tz) => tz.offset_from_utc_datetime(utc).fix().local_minus_utc(),
            SessionTimeZone::Fixed(secs) => *secs,
        }
    }
}

impl Default for SessionTimeZone {
    fn default() -> Self {
        SessionTimeZone::Named(chrono_tz::Tz::UTC)
    }
}

/// PostgreSQL's text for a timestamp (`timestamp_out`, DateStyle ISO): seconds with only the
/// fractional digits needed. `micros` counts from the Unix epoch; `None` outside chrono's range.
pub fn timestamp_text(micros: i64) -> Option<String> {
    let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)?;
    let base = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = dt.timestamp_subsec_micros();
    Some(if frac == 0 {
        base
    } else {
        let frac = format!("{frac:06}");
        format!("{base}.{}", frac.trim_end_matches('0'))
    })
}

/// PostgreSQL's text for a timestamptz (`timestamptz_out`) shown in zone `tz`: local time,
/// then the offset as `+hh`, `+hh:mm` or `+hh:mm:ss` (only as long as it needs).
pub fn timestamptz_text(micros: i64, tz: SessionTimeZone) -> Option<String> {
    let utc = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)?.naive_utc();
    let offset = tz.offset_at(&utc);
    let local = micros.checked_add(i64::from(offset) * 1_000_000)?;
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    let zone = match (m, s) {
        (0, 0) => format!("{sign}{h:02}"),
        (_, 0) => format!("{sign}{h:02}:{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}:{s:02}"),
    };
    Some(format!("{}{zone}", timestamp_text(local)?))
}

/// Decimal digits a float4 / float8 always round-trips (`FLT_DIG`, `DBL_DIG`): PostgreSQL
/// switches to scientific notation at this exponent.
const FLT_DIG: i32 = 6;
const DBL_DIG: i32 = 15;

/// PostgreSQL's text for a float (`float4out` / `float8out` with the default
/// `extra_float_digits = 1`): the shortest digits that read back to the same value, in fixed
/// notation when the decimal exponent is in `-4..digits`, else as `1.5e+20` / `1e-05` (at least
/// two exponent digits); `NaN`, `Infinity`, `-Infinity`. `sci` and `fixed` are Rust's shortest
/// round-trip renderings (`{:e}` and `{}`) of the value at its own width.
fn float_text(v: f64, sci: String, fixed: String, digits: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return fixed;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return fixed;
    };
    if v == 0.0 || (-4..digits).contains(&exp) {
        return fixed;
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

/// PostgreSQL's text for a `float8` (`float8out`): see [`float_text`].
pub fn float8_text(v: f64) -> String {
    float_text(v, format!("{v:e}"), v.to_string(), DBL_DIG)
}

/// PostgreSQL's text for a `float4` (`float4out`): see [`float_text`].
pub fn float4_text(v: f32) -> String {
    float_text(f64::from(v), format!("{v:e}"), v.to_string(), FLT_DIG)
}
