//! Reading `interval` text as PostgreSQL's `interval_in` reads it, and planning every
//! text-to-interval conversion through that reader.
//!
//! Arrow's interval parser knows `1 day 2 hours` but not PostgreSQL's own output form, so
//! `interval '1 day 02:00:00'`, `'04:05:06.789'::interval`, `'-1 days -02:00:00'`, `'1-2'`
//! (SQL's years-months), `'P1Y2M'` (ISO 8601), `'@ 1 hour ago'` or `'1.5 months'` were refused:
//! what braid itself prints as an interval could not be read back, and drivers send interval
//! parameters in that form. [`parse_interval`] follows PostgreSQL's `ParseDateTime` +
//! `DecodeInterval` (IntervalStyle `postgres`), then `DecodeISO8601Interval` for what they call
//! a bad format: fields are read right to left, so that a number takes the unit after it and a
//! bare number before a time of day is days; fractions cascade down (`1.5 months` = 1 month 15
//! days, `1.5 years` = 1 year 6 months, rounded to whole months, as PostgreSQL does); `ago`
//! negates everything. Errors are PostgreSQL's: 22007 `invalid input syntax for type
//! interval`, 22015 `interval field value out of range`, 22008 `interval out of range`.
//!
//! Where it is used: the SQL text of `INTERVAL '...'` without a field qualifier is rewritten
//! before planning ([`canonical_interval_literal`]) into a form Arrow reads exactly, so it
//! stays a constant DataFusion folds; every other cast of text to interval (casts of columns
//! and parameters, and those type coercion adds) becomes a call of `interval_in`, registered as
//! a function rewrite ([`register`]); interval parameters sent as text are read by the server
//! with [`parse_interval`].

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoBuilder};
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, IntervalUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{internal_err, DFSchema, Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use crate::error::Error;

const MONTHS_PER_YEAR: i64 = 12;
const DAYS_PER_MONTH: f64 = 30.0;
const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;

/// PostgreSQL's `pg_itm_in`: the fields an interval is built from while it is read.
#[derive(Debug, Default, Clone, Copy)]
struct Fields {
    years: i64,
    months: i64,
    days: i64,
    usecs: i64,
}

/// Why a text is not an interval, as PostgreSQL's `DateTimeParseError` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    BadFormat,
    FieldOverflow,
    IntervalOverflow,
}

type Step = std::result::Result<(), Fault>;

impl Fields {
    fn add_usecs(&mut self, v: i64) -> Step {
        self.usecs = self.usecs.checked_add(v).ok_or(Fault::FieldOverflow)?;
        Ok(())
    }

    /// `AdjustMicroseconds`: `val` whole units of `scale` µs plus a fraction `frac` of one.
    fn micros(&mut self, val: i64, frac: f64, scale: i64) -> Step {
        self.add_usecs(val.checked_mul(scale).ok_or(Fault::FieldOverflow)?)?;
        self.fract_micros(frac, scale)
    }

    /// `AdjustFractMicroseconds`: a fraction (|frac| < 1) of `scale` µs, to the microsecond.
    fn fract_micros(&mut self, frac: f64, scale: i64) -> Step {
        if frac == 0.0 {
            return Ok(());
        }
        let frac = frac * scale as f64;
        let whole = frac as i64;
        let usec = whole + (frac - whole as f64).round_ties_even() as i64;
        self.add_usecs(usec)
    }

    /// `AdjustFractDays`: a fraction of `scale` days, the rest of a day going to the time.
    fn fract_days(&mut self, frac: f64, scale: f64) -> Step {
        if frac == 0.0 {
            return Ok(());
        }
        let frac = frac * scale;
        let extra = frac as i64;
        self.days = self.days.checked_add(extra).ok_or(Fault::FieldOverflow)?;
        self.fract_micros(frac - extra as f64, USECS_PER_DAY)
    }

    fn add_days(&mut self, val: i64, scale: i64) -> Step {
        let d = val.checked_mul(scale).ok_or(Fault::FieldOverflow)?;
        self.days = self.days.checked_add(d).ok_or(Fault::FieldOverflow)?;
        i32::try_from(self.days).map_err(|_| Fault::FieldOverflow)?;
        Ok(())
    }

    fn add_months(&mut self, val: i64) -> Step {
        self.months = self.months.checked_add(val).ok_or(Fault::FieldOverflow)?;
        i32::try_from(self.months).map_err(|_| Fault::FieldOverflow)?;
        Ok(())
    }

    fn add_years(&mut self, val: i64, scale: i64) -> Step {
        let y = val.checked_mul(scale).ok_or(Fault::FieldOverflow)?;
        self.years = self.years.checked_add(y).ok_or(Fault::FieldOverflow)?;
        i32::try_from(self.years).map_err(|_| Fault::FieldOverflow)?;
        Ok(())
    }

    /// `AdjustFractYears`: a fraction of `scale` years, rounded to whole months.
    fn fract_years(&mut self, frac: f64, scale: i64) -> Step {
        if frac == 0.0 {
            return Ok(());
        }
        let extra = (frac * scale as f64 * MONTHS_PER_YEAR as f64).round_ties_even();
        if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&extra) {
            return Err(Fault::FieldOverflow);
        }
        self.add_months(extra as i64)
    }

    /// `itmin2interval`, then microseconds as Arrow's nanoseconds.
    fn finish(self) -> std::result::Result<IntervalMonthDayNano, Fault> {
        let months = self
            .years
            .checked_mul(MONTHS_PER_YEAR)
            .and_then(|m| m.checked_add(self.months))
            .and_then(|m| i32::try_from(m).ok())
            .ok_or(Fault::IntervalOverflow)?;
        let days = i32::try_from(self.days).map_err(|_| Fault::IntervalOverflow)?;
        let nanoseconds = self
            .usecs
            .checked_mul(1000)
            .ok_or(Fault::IntervalOverflow)?;
        Ok(IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        })
    }

    fn negate(&mut self) -> Step {
        let neg = |v: i64| v.checked_neg().ok_or(Fault::FieldOverflow);
        self.years = neg(self.years)?;
        self.months = neg(self.months)?;
        self.days = neg(self.days)?;
        self.usecs = neg(self.usecs)?;
        Ok(())
    }
}

/// The kinds of field `ParseDateTime` splits the text into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Digits, maybe with one `.` fraction.
    Number,
    /// Digits then `:`: a time of day.
    Time,
    /// Digits with `-` or `/` (SQL's `years-months`), or two `.`.
    Date,
    /// A sign, then digits (a signed number, a signed time or `years-months`).
    Signed,
    /// Letters: a unit, `ago`.
    Word,
    /// A sign, then letters.
    SignedWord,
}

/// `ParseDateTime`: splits the text into fields; other punctuation (`@`, `,`) separates them.
fn split_fields(text: &str) -> std::result::Result<Vec<(Kind, String)>, Fault> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let digits = |i: &mut usize, f: &mut String| {
        while *i < b.len() && b[*i].is_ascii_digit() {
            f.push(b[*i] as char);
            *i += 1;
        }
    };
    while i < b.len() {
        let c = b[i];
        let mut f = String::new();
        let kind = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_digit() {
            digits(&mut i, &mut f);
            if i < b.len() && b[i] == b':' {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b':' || b[i] == b'.') {
                    f.push(b[i] as char);
                    i += 1;
                }
                Kind::Time
            } else if i < b.len() && matches!(b[i], b'-' | b'/' | b'.') {
                let delim = b[i];
                f.push(delim as char);
                i += 1;
                if i < b.len() && b[i].is_ascii_digit() {
                    let mut kind = if delim == b'.' {
                        Kind::Number
                    } else {
                        Kind::Date
                    };
                    digits(&mut i, &mut f);
                    if i < b.len() && b[i] == delim {
                        kind = Kind::Date;
                        while i < b.len() && (b[i].is_ascii_digit() || b[i] == delim) {
                            f.push(b[i] as char);
                            i += 1;
                        }
                    }
                    kind
                } else {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == delim) {
                        f.push(b[i].to_ascii_lowercase() as char);
                        i += 1;
                    }
                    Kind::Date
                }
            } else {
                Kind::Number
            }
        } else if c == b'.' {
            f.push('.');
            i += 1;
            digits(&mut i, &mut f);
            Kind::Number
        } else if c.is_ascii_alphabetic() {
            while i < b.len() && b[i].is_ascii_alphabetic() {
                f.push(b[i].to_ascii_lowercase() as char);
                i += 1;
            }
            // A word glued to digits or punctuation (`day1`, `a-b`) is no unit.
            if i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], b'-' | b'/' | b'.' | b'+')) {
                return Err(Fault::BadFormat);
            }
            Kind::Word
        } else if c == b'+' || c == b'-' {
            f.push(c as char);
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && b[i].is_ascii_digit() {
                while i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], b':' | b'.' | b'-')) {
                    f.push(b[i] as char);
                    i += 1;
                }
                Kind::Signed
            } else if i < b.len() && b[i].is_ascii_alphabetic() {
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    f.push(b[i].to_ascii_lowercase() as char);
                    i += 1;
                }
                Kind::SignedWord
            } else {
                return Err(Fault::BadFormat);
            }
        } else if c.is_ascii_punctuation() {
            i += 1;
            continue;
        } else {
            return Err(Fault::BadFormat);
        };
        out.push((kind, f));
    }
    Ok(out)
}

/// The units `DecodeUnits` knows for an interval (PostgreSQL's `deltatktbl`), matched on the
/// first 10 characters as it does (`microseconds` is `microsecon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Decade,
    Century,
    Millennium,
}

enum Word {
    Unit(Unit),
    Ago,
    /// `@`-style noise PostgreSQL skips.
    Ignore,
}

fn word(w: &str) -> Option<Word> {
    let w = w.get(..w.len().min(10)).unwrap_or(w);
    use Unit::*;
    Some(Word::Unit(match w {
        "us" | "usec" | "usecs" | "useconds" | "microsecon" => Microsecond,
        "ms" | "msec" | "msecs" | "mseconds" | "millisecon" => Millisecond,
        "s" | "sec" | "secs" | "second" | "seconds" => Second,
        "m" | "min" | "mins" | "minute" | "minutes" => Minute,
        "h" | "hr" | "hrs" | "hour" | "hours" => Hour,
        "d" | "day" | "days" => Day,
        "w" | "week" | "weeks" => Week,
        "mon" | "mons" | "month" | "months" => Month,
        "y" | "yr" | "yrs" | "year" | "years" => Year,
        "dec" | "decs" | "decade" | "decades" => Decade,
        "c" | "cent" | "century" | "centuries" => Century,
        "mil" | "mils" | "millennia" | "millennium" => Millennium,
        "ago" => return Some(Word::Ago),
        "at" | "on" => return Some(Word::Ignore),
        _ => return None,
    }))
}

/// `ParseFraction`: `.ddd` as a fraction.
fn fraction(s: &str) -> std::result::Result<f64, Fault> {
    if s.len() < 2 || !s[1..].bytes().all(|c| c.is_ascii_digit()) {
        return Err(Fault::BadFormat);
    }
    format!("0{s}").parse::<f64>().map_err(|_| Fault::BadFormat)
}

/// Leading digits of `s` (after one optional sign) as an i64, and the rest.
fn leading_int(s: &str) -> std::result::Result<(i64, &str), Fault> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let n = body.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        // `strtoi64` of no digits is 0 with nothing consumed, as in `-.5`.
        return Ok((0, body));
    }
    let digits = &body[..n];
    let magnitude: i128 = digits.parse().map_err(|_| Fault::FieldOverflow)?;
    let v = if s.starts_with('-') {
        -magnitude
    } else {
        magnitude
    };
    let v = i64::try_from(v).map_err(|_| Fault::FieldOverflow)?;
    Ok((v, &body[n..]))
}

/// `DecodeTime` for an interval: `hh:mm`, `hh:mm:ss[.fff]` or `mm:ss.fff`, as microseconds.
fn time_usecs(s: &str) -> std::result::Result<i64, Fault> {
    let parse_part = |p: &str| -> std::result::Result<i64, Fault> {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(Fault::BadFormat);
        }
        p.parse::<i64>().map_err(|_| Fault::FieldOverflow)
    };
    let split_frac = |p: &str| -> std::result::Result<(i64, i64), Fault> {
        match p.split_once('.') {
            None => Ok((parse_part(p)?, 0)),
            Some((whole, frac)) => {
                let f = fraction(&format!(".{frac}"))?;
                Ok((
                    parse_part(whole)?,
                    (f * USECS_PER_SEC as f64).round_ties_even() as i64,
                ))
            }
        }
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (hour, min, sec, fsec) = match parts.as_slice() {
        [h, m] if m.contains('.') => {
            let (sec, fsec) = split_frac(m)?;
            (0, parse_part(h)?, sec, fsec)
        }
        [h, m] => (parse_part(h)?, parse_part(m)?, 0, 0),
        [h, m, s] => {
            let (sec, fsec) = split_frac(s)?;
            (parse_part(h)?, parse_part(m)?, sec, fsec)
        }
        _ => return Err(Fault::BadFormat),
    };
    if !(0..60).contains(&min) || !(0..=60).contains(&sec) || !(0..=USECS_PER_SEC).contains(&fsec) {
        return Err(Fault::FieldOverflow);
    }
    hour.checked_mul(USECS_PER_HOUR)
        .and_then(|h| h.checked_add(min * USECS_PER_MINUTE + sec * USECS_PER_SEC + fsec))
        .ok_or(Fault::FieldOverflow)
}

/// Bits of PostgreSQL's field mask: each unit may be given once.
fn unit_bit(u: Unit) -> u32 {
    1 << (u as u32)
}
const TIME_BITS: u32 =
    (1 << Unit::Hour as u32) | (1 << Unit::Minute as u32) | (1 << Unit::Second as u32);
const ALL_SECS_BITS: u32 =
    (1 << Unit::Second as u32) | (1 << Unit::Millisecond as u32) | (1 << Unit::Microsecond as u32);

/// `DecodeInterval` (IntervalStyle `postgres`, no field qualifier).
fn decode(fields: &[(Kind, String)]) -> std::result::Result<Fields, Fault> {
    let mut itm = Fields::default();
    let mut unit: Option<Unit> = None;
    let mut mask = 0u32;
    let mut ago = false;
    let mut pending_unit = false;
    for (kind, f) in fields.iter().rev() {
        let bits;
        match kind {
            Kind::Time => {
                itm.add_usecs(time_usecs(f)?)?;
                bits = TIME_BITS;
                unit = Some(Unit::Day);
            }
            Kind::Signed if f[1..].contains(':') && time_usecs(&f[1..]).is_ok() => {
                let t = time_usecs(&f[1..])?;
                itm.add_usecs(if f.starts_with('-') { -t } else { t })?;
                bits = TIME_BITS;
                unit = Some(Unit::Day);
            }
            Kind::Number | Kind::Date | Kind::Signed => {
                pending_unit = false;
                let mut u = unit.unwrap_or(Unit::Second);
                let (mut val, rest) = leading_int(f)?;
                let mut frac = 0.0;
                if let Some(months) = rest.strip_prefix('-') {
                    // SQL's `years-months`.
                    if months.is_empty() || !months.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(Fault::BadFormat);
                    }
                    let m: i64 = months.parse().map_err(|_| Fault::FieldOverflow)?;
                    if m >= MONTHS_PER_YEAR {
                        return Err(Fault::FieldOverflow);
                    }
                    let m = if f.starts_with('-') { -m } else { m };
                    val = val
                        .checked_mul(MONTHS_PER_YEAR)
                        .and_then(|v| v.checked_add(m))
                        .ok_or(Fault::FieldOverflow)?;
                    u = Unit::Month;
                } else if rest.starts_with('.') {
                    frac = fraction(rest)?;
                    if f.starts_with('-') {
                        frac = -frac;
                    }
                } else if !rest.is_empty() {
                    return Err(Fault::BadFormat);
                }
                bits = match u {
                    Unit::Microsecond => {
                        itm.micros(val, frac, 1)?;
                        unit_bit(u)
                    }
                    Unit::Millisecond => {
                        itm.micros(val, frac, 1000)?;
                        unit_bit(u)
                    }
                    Unit::Second => {
                        itm.micros(val, frac, USECS_PER_SEC)?;
                        if frac == 0.0 {
                            unit_bit(u)
                        } else {
                            ALL_SECS_BITS
                        }
                    }
                    Unit::Minute => {
                        itm.micros(val, frac, USECS_PER_MINUTE)?;
                        unit_bit(u)
                    }
                    Unit::Hour => {
                        itm.micros(val, frac, USECS_PER_HOUR)?;
                        unit = Some(Unit::Day);
                        unit_bit(u)
                    }
                    Unit::Day => {
                        itm.add_days(val, 1)?;
                        itm.fract_micros(frac, USECS_PER_DAY)?;
                        unit_bit(u)
                    }
                    Unit::Week => {
                        itm.add_days(val, 7)?;
                        itm.fract_days(frac, 7.0)?;
                        unit_bit(u)
                    }
                    Unit::Month => {
                        itm.add_months(val)?;
                        itm.fract_days(frac, DAYS_PER_MONTH)?;
                        unit_bit(u)
                    }
                    Unit::Year => {
                        itm.add_years(val, 1)?;
                        itm.fract_years(frac, 1)?;
                        unit_bit(u)
                    }
                    Unit::Decade => {
                        itm.add_years(val, 10)?;
                        itm.fract_years(frac, 10)?;
                        unit_bit(u)
                    }
                    Unit::Century => {
                        itm.add_years(val, 100)?;
                        itm.fract_years(frac, 100)?;
                        unit_bit(u)
                    }
                    Unit::Millennium => {
                        itm.add_years(val, 1000)?;
                        itm.fract_years(frac, 1000)?;
                        unit_bit(u)
                    }
                };
            }
            Kind::Word | Kind::SignedWord => {
                if pending_unit {
                    return Err(Fault::BadFormat);
                }
                match word(f.trim_start_matches(['+', '-'])) {
                    Some(Word::Unit(u)) => {
                        unit = Some(u);
                        pending_unit = true;
                    }
                    Some(Word::Ago) => ago = true,
                    Some(Word::Ignore) => {}
                    None => return Err(Fault::BadFormat),
                }
                continue;
            }
        }
        if bits & mask != 0 {
            return Err(Fault::BadFormat);
        }
        mask |= bits;
    }
    if mask == 0 || pending_unit {
        return Err(Fault::BadFormat);
    }
    if ago {
        itm.negate()?;
    }
    Ok(itm)
}

/// `ParseISO8601Number`: a signed decimal number, as its whole part and fraction.
fn iso_number(s: &str) -> std::result::Result<(i64, f64, &str), Fault> {
    let b = s.as_bytes();
    if !b
        .first()
        .is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'.')
    {
        return Err(Fault::BadFormat);
    }
    let mut end = usize::from(b[0] == b'-');
    let mut seen_digit = false;
    while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
        seen_digit |= b[end].is_ascii_digit();
        end += 1;
    }
    if !seen_digit {
        return Err(Fault::BadFormat);
    }
    let v: f64 = s[..end].parse().map_err(|_| Fault::BadFormat)?;
    if !(-1e18..=1e18).contains(&v) {
        return Err(Fault::FieldOverflow);
    }
    let whole = v.trunc();
    Ok((whole as i64, v - whole, &s[end..]))
}

/// `DecodeISO8601Interval`: `P1Y2M3DT4H5M6S` (any number may carry a sign and a fraction), and
/// the alternative format `P0001-02-03T04:05:06`.
fn decode_iso(text: &str) -> std::result::Result<Fields, Fault> {
    let mut itm = Fields::default();
    let mut s = text.strip_prefix('P').ok_or(Fault::BadFormat)?;
    let mut date_part = true;
    let mut have_field = false;
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix('T') {
            date_part = false;
            have_field = false;
            s = rest;
            continue;
        }
        let (val, frac, rest) = iso_number(s)?;
        let unit = rest.as_bytes().first().copied();
        s = rest.get(1..).unwrap_or("");
        if date_part {
            match unit {
                Some(b'Y') => {
                    itm.add_years(val, 1)?;
                    itm.fract_years(frac, 1)?;
                }
                Some(b'M') => {
                    itm.add_months(val)?;
                    itm.fract_days(frac, DAYS_PER_MONTH)?;
                }
                Some(b'W') => {
                    itm.add_days(val, 7)?;
                    itm.fract_days(frac, 7.0)?;
                }
                Some(b'D') => {
                    itm.add_days(val, 1)?;
                    itm.fract_micros(frac, USECS_PER_DAY)?;
                }
                Some(b'T' | b'-') | None => {
                    if have_field {
                        return Err(Fault::BadFormat);
                    }
                    itm.add_years(val, 1)?;
                    itm.fract_years(frac, 1)?;
                    match unit {
                        None => return Ok(itm),
                        Some(b'T') => {
                            date_part = false;
                            have_field = false;
                            continue;
                        }
                        _ => {}
                    }
                    let (val, frac, rest) = iso_number(s)?;
                    itm.add_months(val)?;
                    itm.fract_days(frac, DAYS_PER_MONTH)?;
                    s = rest;
                    if s.is_empty() {
                        return Ok(itm);
                    }
                    if let Some(rest) = s.strip_prefix('T') {
                        s = rest;
                        date_part = false;
                        have_field = false;
                        continue;
                    }
                    s = s.strip_prefix('-').ok_or(Fault::BadFormat)?;
                    let (val, frac, rest) = iso_number(s)?;
                    itm.add_days(val, 1)?;
                    itm.fract_micros(frac, USECS_PER_DAY)?;
                    s = rest;
                    if s.is_empty() {
                        return Ok(itm);
                    }
                    s = s.strip_prefix('T').ok_or(Fault::BadFormat)?;
                    date_part = false;
                    have_field = false;
                    continue;
                }
                _ => return Err(Fault::BadFormat),
            }
        } else {
            match unit {
                Some(b'H') => itm.micros(val, frac, USECS_PER_HOUR)?,
                Some(b'M') => itm.micros(val, frac, USECS_PER_MINUTE)?,
                Some(b'S') => itm.micros(val, frac, USECS_PER_SEC)?,
                Some(b':') | None => {
                    if have_field {
                        return Err(Fault::BadFormat);
                    }
                    itm.micros(val, frac, USECS_PER_HOUR)?;
                    if unit.is_none() {
                        return Ok(itm);
                    }
                    let (val, frac, rest) = iso_number(s)?;
                    itm.micros(val, frac, USECS_PER_MINUTE)?;
                    s = rest;
                    if s.is_empty() {
                        return Ok(itm);
                    }
                    s = s.strip_prefix(':').ok_or(Fault::BadFormat)?;
                    let (val, frac, rest) = iso_number(s)?;
                    itm.micros(val, frac, USECS_PER_SEC)?;
                    if !rest.is_empty() {
                        return Err(Fault::BadFormat);
                    }
                    return Ok(itm);
                }
                _ => return Err(Fault::BadFormat),
            }
        }
        have_field = true;
    }
    Ok(itm)
}

/// Reads `text` as PostgreSQL's `interval_in` does (see the module's text).
pub fn parse_interval(text: &str) -> crate::error::Result<IntervalMonthDayNano> {
    let decoded = match split_fields(text).and_then(|f| decode(&f)) {
        Err(Fault::BadFormat) => decode_iso(text),
        other => other,
    };
    match decoded.and_then(Fields::finish) {
        Ok(v) => Ok(v),
        Err(Fault::BadFormat) => Err(Error::InvalidDatetimeInput {
            type_name: "interval",
            text: text.to_string(),
        }),
        Err(Fault::FieldOverflow) => Err(Error::DatetimeFieldOverflow {
            type_name: "interval",
            text: text.to_string(),
        }),
        Err(Fault::IntervalOverflow) => Err(Error::IntervalOutOfRange),
    }
}

/// The text of an interval in the words Arrow's parser reads exactly (months, days and
/// microseconds, each as one integer), for an `INTERVAL '...'` constant that should stay a
/// constant.
pub fn canonical_interval_literal(text: &str) -> crate::error::Result<String> {
    let v = parse_interval(text)?;
    // Nanoseconds are whole microseconds here, and Arrow multiplies microseconds by 1000.
    Ok(format!(
        "{} months {} days {} microseconds",
        v.months,
        v.days,
        v.nanoseconds / 1000
    ))
}

/// `interval_in(text)`: PostgreSQL's reading of text as an interval, per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalIn {
    signature: Signature,
}

const INTERVAL: DataType = DataType::Interval(IntervalUnit::MonthDayNano);

impl ScalarUDFImpl for IntervalIn {
    fn name(&self) -> &str {
        "interval_in"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(INTERVAL)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return internal_err!("interval_in takes one argument");
        };
        let read = |s: &str| parse_interval(s).map_err(Error::into_datafusion);
        match arg {
            ColumnarValue::Scalar(v) => {
                let text = match v {
                    ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => {
                        s.as_deref()
                    }
                    _ => return internal_err!("interval_in of {}", v.data_type()),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(
                    text.map(read).transpose()?,
                )))
            }
            ColumnarValue::Array(a) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                let strings = a.as_string::<i32>();
                let mut out = IntervalMonthDayNanoBuilder::with_capacity(strings.len());
                for s in strings.iter() {
                    out.append_option(s.map(read).transpose()?);
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
            }
        }
    }
}

static INTERVAL_IN: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::from(IntervalIn {
        signature: Signature::uniform(
            1,
            vec![DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8],
            Volatility::Immutable,
        ),
    }))
});

/// Rewrites a cast of text to interval into `interval_in`.
#[derive(Debug, Default)]
struct IntervalText;

impl FunctionRewrite for IntervalText {
    fn name(&self) -> &str {
        "braid_interval_in"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> DfResult<Transformed<Expr>> {
        let Expr::Cast(cast) = expr else {
            return Ok(Transformed::no(expr));
        };
        let from_text = matches!(
            cast.expr.get_type(schema),
            Ok(DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
        );
        if from_text && cast.field.data_type() == &INTERVAL {
            return Ok(Transformed::yes(INTERVAL_IN.call(vec![*cast.expr])));
        }
        Ok(Transformed::no(Expr::Cast(cast)))
    }
}

/// `expr` with its casts of text to interval read as PostgreSQL reads them, for code that
/// simplifies (folds constants) an expression itself, before any function rewrite of a
/// session would run.
pub fn read_text_casts(expr: Expr, schema: &DFSchema) -> DfResult<Expr> {
    use datafusion::common::tree_node::TreeNode;
    let options = ConfigOptions::default();
    Ok(expr
        .transform_up(|e| IntervalText.rewrite(e, schema, &options))?
        .data)
}

/// Makes every cast of text to interval in `ctx` read the text as PostgreSQL does.
pub fn register(ctx: &SessionContext) -> DfResult<()> {
    crate::arithmetic::register_rewrite(ctx, Arc::new(IntervalText))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> (i32, i32, i64) {
        let v = parse_interval(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (v.months, v.days, v.nanoseconds / 1000)
    }

    const H: i64 = USECS_PER_HOUR;
    const M: i64 = USECS_PER_MINUTE;
    const S: i64 = USECS_PER_SEC;

    #[test]
    fn postgres_output_form_reads_back() {
        assert_eq!(iv("1 day 02:00:00"), (0, 1, 2 * H));
        assert_eq!(iv("04:05:06.789"), (0, 0, 4 * H + 5 * M + 6 * S + 789_000));
        assert_eq!(iv("-1 days -02:00:00"), (0, -1, -2 * H));
        assert_eq!(iv("1 year 2 mons 3 days"), (14, 3, 0));
        assert_eq!(
            iv("-1 years -2 mons +3 days -04:05:06"),
            (-14, 3, -(4 * H + 5 * M + 6 * S))
        );
        assert_eq!(iv("00:00:00.000001"), (0, 0, 1));
    }

    #[test]
    fn units_fractions_and_sql_forms() {
        assert_eq!(iv("1.5 months"), (1, 15, 0));
        assert_eq!(iv("1.5 years"), (18, 0, 0));
        assert_eq!(iv("1.5 weeks"), (0, 10, 12 * H));
        assert_eq!(iv("1.5 days"), (0, 1, 12 * H));
        assert_eq!(iv("1day"), (0, 1, 0));
        assert_eq!(iv("2 hours 30 minutes"), (0, 0, 2 * H + 30 * M));
        assert_eq!(iv("1 hour 30"), (0, 0, H + 30 * S));
        assert_eq!(iv("5"), (0, 0, 5 * S));
        assert_eq!(iv("1 2:03:04"), (0, 1, 2 * H + 3 * M + 4 * S));
        assert_eq!(iv("1-2"), (14, 0, 0));
        assert_eq!(iv("-1-2"), (-14, 0, 0));
        assert_eq!(iv("02:00"), (0, 0, 2 * H));
        assert_eq!(iv("1:30.5"), (0, 0, M + 30 * S + 500_000));
        assert_eq!(iv("@ 1 hour ago"), (0, 0, -H));
        assert_eq!(iv("1 day ago"), (0, -1, 0));
        assert_eq!(iv("3 mil"), (36_000, 0, 0));
        assert_eq!(iv("2 centuries 1 decade"), (2_520, 0, 0));
        assert_eq!(iv("10 ms 5 us"), (0, 0, 10_005));
        assert_eq!(iv("1 microseconds"), (0, 0, 1));
        assert_eq!(iv("  1   DAY  "), (0, 1, 0));
    }

    #[test]
    fn iso_8601() {
        assert_eq!(iv("P1Y2M"), (14, 0, 0));
        assert_eq!(iv("P1Y2M3DT4H5M6S"), (14, 3, 4 * H + 5 * M + 6 * S));
        assert_eq!(iv("PT1.5S"), (0, 0, 1_500_000));
        assert_eq!(iv("P1W"), (0, 7, 0));
        assert_eq!(iv("P-1D"), (0, -1, 0));
        assert_eq!(iv("P0001-02-03T04:05:06"), (14, 3, 4 * H + 5 * M + 6 * S));
    }

    #[test]
    fn bad_text_is_postgres_error() {
        for s in [
            "",
            "abc",
            "1 2",
            "1 hour 02:00",
            "1 day 1 day",
            "day",
            "1 fortnight",
            "P1X",
        ] {
            match parse_interval(s) {
                Err(Error::InvalidDatetimeInput { .. }) => {}
                other => panic!("{s:?}: {other:?}"),
            }
        }
        for s in ["00:60:00", "99999999999999999999 days", "2147483648 days"] {
            match parse_interval(s) {
                Err(Error::DatetimeFieldOverflow { .. }) => {}
                other => panic!("{s:?}: {other:?}"),
            }
        }
        match parse_interval("178956971 years") {
            Err(Error::IntervalOutOfRange) => {}
            other => panic!("{other:?}"),
        }
    }
}
