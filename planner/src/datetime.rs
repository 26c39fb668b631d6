//! PostgreSQL's timestamp input, which DataFusion does not read.
//!
//! DataFusion (arrow's cast) reads `'2024-01-01 12:00:00'` but not the shorter forms PostgreSQL
//! users type (`'2024-01-01 12:00'`, `'2024-01-01'` as a timestamp, `'… +02'`, a zone name
//! after the time), and it reads a `timestamptz` written without a zone as UTC where PostgreSQL
//! reads it in the session's `TimeZone`. So a string literal on its way to a timestamp is read
//! here as PostgreSQL reads it and handed on as the one spelling arrow reads the same way
//! everywhere (`2024-01-01T11:00:00.000000Z`):
//! - every cast of a string literal to a timestamp in a planned statement — explicit casts,
//!   typed literals, and the casts DataFusion's type coercion adds (`WHERE at = '…'`) — by an
//!   analyzer rule ([`TimestampLiterals`]);
//! - the `VALUES` cells of an INSERT into a timestamp column before planning
//!   ([`normalize_values_timestamps`]): braid's INSERT paths convert those to the column's type
//!   themselves, without DataFusion's analyzer;
//! - timestamp parameters sent as text, by the server when it decodes them.
//!
//! Text this reader does not know is left as it was, so DataFusion's own error stands.

use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use datafusion::sql::sqlparser::ast::{Expr, SetExpr, Value};

use datafusion::arrow::datatypes::DataType as ArrowType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::{Cast, Expr as LogicalExpr, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

use crate::types::{ColumnType, SessionTimeZone};

/// A zone written in the input.
enum InputZone {
    /// Seconds east of UTC.
    Offset(i32),
    Named(chrono_tz::Tz),
}

/// Splits `s` into its date-time part and a trailing zone, if it has one.
fn split_zone(s: &str) -> (&str, Option<InputZone>) {
    let s = s.trim();
    if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        return (rest, Some(InputZone::Offset(0)));
    }
    // A zone name after a space: `UTC`, `Europe/Berlin`.
    if let Some((head, tail)) = s.rsplit_once(' ') {
        if tail.chars().any(|c| c.is_ascii_alphabetic()) {
            if let Some(SessionTimeZone::Named(tz)) = SessionTimeZone::parse(tail) {
                return (head, Some(InputZone::Named(tz)));
            }
            if tail.eq_ignore_ascii_case("gmt") {
                return (head, Some(InputZone::Offset(0)));
            }
        }
    }
    // A numeric offset after the time: `+02`, `-0530`, `+05:30`.
    if let Some(pos) = s.rfind(['+', '-']) {
        let (head, tail) = s.split_at(pos);
        // Only after a time (`12:00+02`), never the date's own dashes.
        if head.contains(':') {
            if let Some(secs) = parse_offset(tail) {
                return (head, Some(InputZone::Offset(secs)));
            }
        }
    }
    (s, None)
}

/// `+HH`, `+HHMM`, `+HH:MM` (or `-`), within PostgreSQL's ±15:59.
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits = digits.trim();
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    if h.is_empty() || h.len() > 2 || m.len() > 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 16 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]]`: the local date and time of the input.
fn parse_local(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    if time.is_empty() {
        return date.and_hms_opt(0, 0, 0);
    }
    let mut parts = time.splitn(3, ':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let (sec, micros) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            if !frac.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            // PostgreSQL keeps microseconds and rounds what lies beyond (half up).
            let mut digits: String = frac.chars().take(7).collect();
            while digits.len() < 7 {
                digits.push('0');
            }
            let tenths: i64 = digits.parse().ok()?;
            (whole.parse().ok()?, (tenths + 5) / 10)
        }
    };
    // A rounded-up 1,000,000 µs carries into the next second (and day).
    date.and_hms_opt(h, m, sec)?
        .checked_add_signed(chrono::TimeDelta::microseconds(micros))
}

/// The instant `local` names in `zone` (a time a DST change skips is read with the offset
/// before the change, a repeated one as its first occurrence).
fn instant_in(local: &NaiveDateTime, zone: &SessionTimeZone) -> Option<NaiveDateTime> {
    let offset = match zone {
        SessionTimeZone::Fixed(secs) => *secs,
        SessionTimeZone::Named(tz) => match tz.offset_from_local_datetime(local) {
            chrono::LocalResult::Single(o) | chrono::LocalResult::Ambiguous(o, _) => {
                chrono::Offset::fix(&o).local_minus_utc()
            }
            // In a gap (clocks moved forward), PostgreSQL uses the offset in effect before it.
            chrono::LocalResult::None => zone.offset_at(&(*local - chrono::TimeDelta::days(1))),
        },
    };
    local.checked_sub_signed(chrono::TimeDelta::seconds(i64::from(offset)))
}

/// Reads a timestamp as PostgreSQL does and returns the spelling arrow reads the same way:
/// for `timestamptz`, the UTC instant (a zone in the text wins, else `session`'s); for
/// `timestamp`, the local date and time (a zone in the text is ignored, as in PostgreSQL).
/// `None` when the text is not one of the forms known here.
pub fn normalize_timestamp(
    text: &str,
    with_zone: bool,
    session: &SessionTimeZone,
) -> Option<String> {
    let (local_text, zone) = split_zone(text);
    let local = parse_local(local_text)?;
    if !with_zone {
        return Some(local.format("%Y-%m-%dT%H:%M:%S%.6f").to_string());
    }
    let utc = match zone {
        Some(InputZone::Offset(secs)) => {
            local.checked_sub_signed(chrono::TimeDelta::seconds(i64::from(secs)))?
        }
        Some(InputZone::Named(tz)) => instant_in(&local, &SessionTimeZone::Named(tz))?,
        None => instant_in(&local, session)?,
    };
    Some(utc.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

fn normalize_literal(value: &mut Value, with_zone: bool, session: &SessionTimeZone) {
    if let Value::SingleQuotedString(s) = value {
        if let Some(n) = normalize_timestamp(s, with_zone, session) {
            *s = n;
        }
    }
}

/// Rewrites the string literals of a `VALUES` list whose target column (`targets[i]` for the
/// i-th value of a row) is a timestamp.
pub fn normalize_values_timestamps(
    body: &mut SetExpr,
    targets: &[ColumnType],
    session: &SessionTimeZone,
) {
    let SetExpr::Values(values) = body else {
        return;
    };
    for row in &mut values.rows {
        for (cell, ty) in row.content.iter_mut().zip(targets) {
            let with_zone = match ty {
                ColumnType::Timestamp => false,
                ColumnType::Timestamptz => true,
                _ => continue,
            };
            if let Expr::Value(v) = cell {
                normalize_literal(&mut v.value, with_zone, session);
            }
        }
    }
}

/// The last step of DataFusion's analysis: a string literal the type coercion cast to a
/// timestamp (`WHERE at = '2024-01-01 12:00'`, where PostgreSQL reads the literal as the
/// column's type) is read here as PostgreSQL reads it, like the literals rewritten before
/// planning. It holds the session's time zone, which `SET TIME ZONE` changes.
#[derive(Debug)]
pub struct TimestampLiterals {
    pub zone: std::sync::Arc<parking_lot::Mutex<SessionTimeZone>>,
}

impl AnalyzerRule for TimestampLiterals {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        let zone = *self.zone.lock();
        let rewrite = |e: LogicalExpr| -> DfResult<Transformed<LogicalExpr>> {
            let LogicalExpr::Cast(cast) = &e else {
                return Ok(Transformed::no(e));
            };
            let (ArrowType::Timestamp(_, tz), LogicalExpr::Literal(ScalarValue::Utf8(Some(s)), _)) =
                (cast.field.data_type(), cast.expr.as_ref())
            else {
                return Ok(Transformed::no(e));
            };
            match normalize_timestamp(s, tz.is_some(), &zone) {
                Some(n) if n != *s => {
                    Ok(Transformed::yes(LogicalExpr::Cast(Cast::new_from_field(
                        Box::new(LogicalExpr::Literal(ScalarValue::Utf8(Some(n)), None)),
                        cast.field.clone(),
                    ))))
                }
                _ => Ok(Transformed::no(e)),
            }
        };
        plan.transform_up_with_subqueries(|p| p.map_expressions(|e| e.transform_up(rewrite)))
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "braid_timestamp_literals"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> SessionTimeZone {
        SessionTimeZone::parse(name).expect("zone")
    }

    #[test]
    fn reads_postgresql_forms_in_the_session_zone() {
        let utc = tz("UTC");
        let berlin = tz("Europe/Berlin");
        let cases = [
            ("2024-01-01 12:00", &utc, "2024-01-01T12:00:00.000000Z"),
            ("2024-01-01 12:00", &berlin, "2024-01-01T11:00:00.000000Z"),
            (
                "2024-07-01 12:00:30",
                &berlin,
                "2024-07-01T10:00:30.000000Z",
            ),
            ("2024-01-01", &berlin, "2023-12-31T23:00:00.000000Z"),
            (
                "2024-01-01 12:00+02",
                &berlin,
                "2024-01-01T10:00:00.000000Z",
            ),
            (
                "2024-01-01T12:00:00-05:30",
                &utc,
                "2024-01-01T17:30:00.000000Z",
            ),
            (
                "2024-01-01 12:00:00Z",
                &berlin,
                "2024-01-01T12:00:00.000000Z",
            ),
            (
                "2024-01-01 12:00 UTC",
                &berlin,
                "2024-01-01T12:00:00.000000Z",
            ),
            (
                "2024-01-01 12:00 America/New_York",
                &utc,
                "2024-01-01T17:00:00.000000Z",
            ),
            (
                "2024-01-01 12:00:00.1234567",
                &utc,
                "2024-01-01T12:00:00.123457Z",
            ),
            (
                "2024-01-01 23:59:59.9999996",
                &utc,
                "2024-01-02T00:00:00.000000Z",
            ),
            ("2024-01-01 12:00", &tz("-7"), "2024-01-01T19:00:00.000000Z"),
        ];
        for (text, zone, want) in cases {
            assert_eq!(
                normalize_timestamp(text, true, zone).as_deref(),
                Some(want),
                "{text}"
            );
        }
        assert_eq!(
            normalize_timestamp("2024-01-01 12:00+02", false, &berlin).as_deref(),
            Some("2024-01-01T12:00:00.000000")
        );
        for bad in [
            "",
            "tomorrow",
            "2024-13-01",
            "2024-01-01 25:00",
            "12:00",
            "2024-01-01 12:00 Nowhere/Else",
        ] {
            assert_eq!(normalize_timestamp(bad, true, &utc), None, "{bad}");
        }
    }
}
