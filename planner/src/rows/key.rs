//! Primary keys of row tables: which columns form the key, how a row's key columns become the
//! order-preserving bytes of [`braid_ingest::key`], and which key ranges a query's filters
//! leave to read.
//!
//! What must stay true: [`KeyAccess`] never excludes a row the filters would keep. The table
//! reports these filters as `Inexact`, so DataFusion still applies every filter above the
//! scan; a range here only saves reading rows, it never decides what a query returns.

use std::ops::Bound;

use braid_ingest::key::{encode_key, encode_key_into, prefix_end, KeyValue};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::catalog::TableDef;
use crate::error::{Error, Result};
use crate::types::ColumnType;

/// Most point gets or ranges one scan builds from `IN` lists before it falls back to fewer,
/// wider ranges.
const KEY_TUPLES_MAX: usize = 1024;

/// The key of a row table: its primary key columns, or a hidden row id.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    /// (column index, type, name) of each primary key column, in key order. Empty: hidden
    /// row id.
    pub columns: Vec<(usize, ColumnType, String)>,
}

impl KeyLayout {
    pub fn new(def: &TableDef) -> Result<KeyLayout> {
        let names = def
            .row_options()
            .map(|o| o.primary_key.clone())
            .unwrap_or_default();
        let mut columns = Vec::with_capacity(names.len());
        for n in names {
            let (i, c) = def
                .columns
                .iter()
                .enumerate()
                .find(|(_, c)| c.name == n)
                .ok_or_else(|| Error::UndefinedColumn(n.clone()))?;
            check_key_type(&c.name, c.ty)?;
            columns.push((i, c.ty, n));
        }
        Ok(KeyLayout { columns })
    }

    /// True when rows are keyed by a hidden row id.
    pub fn hidden(&self) -> bool {
        self.columns.is_empty()
    }

    /// The key of row `row` of `columns` (every table column, in catalog order), or `None`
    /// when a key column is NULL (the caller reports the not-null violation first).
    pub fn row_key(&self, columns: &[ArrayRef], row: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(16);
        for (i, ty, _) in &self.columns {
            let v = key_value(*ty, columns.get(*i)?, row)?;
            encode_key_into(&mut out, &[v]);
        }
        Some(out)
    }

    /// The key of hidden row id `id`.
    pub fn rowid_key(id: i64) -> Vec<u8> {
        encode_key(&[KeyValue::Int64(id)])
    }

    /// `"(a, b)"`: the key columns as PostgreSQL's DETAIL lines name them.
    pub fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(_, _, n)| n.as_str()).collect();
        format!("({})", names.join(", "))
    }
}

/// Key columns must have an order-preserving encoding.
pub fn check_key_type(name: &str, ty: ColumnType) -> Result<()> {
    match ty {
        // An interval compares by its normalized length (1 day = 24 hours), which a key
        // encoding of its three fields would not follow.
        ColumnType::Numeric { .. } | ColumnType::Jsonb | ColumnType::Interval => {
            Err(Error::Unsupported(format!(
            "primary key column \"{name}\" has type {}, which braid cannot key rows by yet; use \
             an integer, text, uuid, bytea, boolean, float, date or timestamp column",
            ty.sql_name()
        )))
        }
        _ => Ok(()),
    }
}

/// The key value of one non-NULL cell of a column of type `ty`.
pub(crate) fn key_value(ty: ColumnType, a: &ArrayRef, row: usize) -> Option<KeyValue> {
    if row >= a.len() || a.is_null(row) {
        return None;
    }
    Some(match ty {
        ColumnType::Bool => KeyValue::Bool(a.as_boolean_opt()?.value(row)),
        ColumnType::Int2 => KeyValue::Int16(a.as_primitive_opt::<Int16Type>()?.value(row)),
        ColumnType::Int4 => KeyValue::Int32(a.as_primitive_opt::<Int32Type>()?.value(row)),
        ColumnType::Int8 => KeyValue::Int64(a.as_primitive_opt::<Int64Type>()?.value(row)),
        ColumnType::Float4 => {
            KeyValue::Float64(f64::from(a.as_primitive_opt::<Float32Type>()?.value(row)))
        }
        ColumnType::Float8 => KeyValue::Float64(a.as_primitive_opt::<Float64Type>()?.value(row)),
        ColumnType::Text | ColumnType::Uuid => {
            KeyValue::Text(a.as_string_opt::<i32>()?.value(row).to_string())
        }
        ColumnType::Bytea => KeyValue::Bytes(a.as_binary_opt::<i32>()?.value(row).to_vec()),
        ColumnType::Date => KeyValue::Int32(a.as_primitive_opt::<Date32Type>()?.value(row)),
        ColumnType::Timestamp | ColumnType::Timestamptz => {
            KeyValue::Int64(a.as_primitive_opt::<TimestampMicrosecondType>()?.value(row))
        }
        ColumnType::Numeric { .. } | ColumnType::Jsonb | ColumnType::Interval => return None,
    })
}

/// The key value of a literal compared with a column of type `ty`, when the conversion is
/// exact (anything else is left to the filter above the scan).
pub(crate) fn scalar_key(ty: ColumnType, v: &ScalarValue) -> Option<KeyValue> {
    let int = |v: &ScalarValue| -> Option<i64> {
        match v {
            ScalarValue::Int8(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int16(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int64(Some(x)) => Some(*x),
            ScalarValue::UInt8(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt16(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt32(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
            _ => None,
        }
    };
    Some(match ty {
        ColumnType::Bool => match v {
            ScalarValue::Boolean(Some(b)) => KeyValue::Bool(*b),
            _ => return None,
        },
        ColumnType::Int2 => KeyValue::Int16(i16::try_from(int(v)?).ok()?),
        ColumnType::Int4 => KeyValue::Int32(i32::try_from(int(v)?).ok()?),
        ColumnType::Int8 => KeyValue::Int64(int(v)?),
        ColumnType::Float4 => match v {
            ScalarValue::Float32(Some(f)) => KeyValue::Float64(f64::from(*f)),
            _ => return None,
        },
        ColumnType::Float8 => match v {
            ScalarValue::Float64(Some(f)) => KeyValue::Float64(*f),
            _ => return None,
        },
        ColumnType::Text | ColumnType::Uuid => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => KeyValue::Text(s.clone()),
            _ => return None,
        },
        ColumnType::Bytea => match v {
            ScalarValue::Binary(Some(b))
            | ScalarValue::BinaryView(Some(b))
            | ScalarValue::LargeBinary(Some(b)) => KeyValue::Bytes(b.clone()),
            _ => return None,
        },
        ColumnType::Date => match v {
            ScalarValue::Date32(Some(d)) => KeyValue::Int32(*d),
            _ => return None,
        },
        ColumnType::Timestamp | ColumnType::Timestamptz => match v {
            ScalarValue::TimestampMicrosecond(Some(t), _) => KeyValue::Int64(*t),
            _ => return None,
        },
        ColumnType::Numeric { .. } | ColumnType::Jsonb | ColumnType::Interval => return None,
    })
}

/// How a scan reads the table.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyAccess {
    /// Every row, in key order.
    Full,
    /// Point gets of whole keys, ascending, without duplicates.
    Points(Vec<Vec<u8>>),
    /// Key ranges, ascending and disjoint.
    Ranges(Vec<KeyRange>),
    /// Ranges of a secondary index's tree (row store table `index`), whose entries name the
    /// rows to get ([`super::index`]).
    Index { index: u64, ranges: Vec<KeyRange> },
}

/// A range of encoded keys: (start, end).
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// What one filter says about one key column: (key column position, range bounds as
/// (operator, value), equality values).
type FilterConstraint = (usize, Vec<(Operator, KeyValue)>, Option<Vec<KeyValue>>);

/// What the filters say about one key column.
#[derive(Debug, Default)]
struct ColumnConstraint {
    /// Equal to one of these (from `=` or `IN`).
    equal: Option<Vec<KeyValue>>,
    /// Lower bound (value, inclusive).
    lower: Option<(KeyValue, bool)>,
    /// Upper bound (value, inclusive).
    upper: Option<(KeyValue, bool)>,
}

fn column_of(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

fn literal_of(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq => Operator::Eq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

/// One filter as (column, what it says), when it is a comparison of a key column with
/// literals the key encoding can express.
fn constraint_of(layout: &KeyLayout, e: &Expr) -> Option<FilterConstraint> {
    let key_col = |name: &str| {
        layout
            .columns
            .iter()
            .position(|(_, _, n)| n == name)
            .map(|pos| (pos, layout.columns.get(pos).map(|c| c.1)))
    };
    match e {
        // DataFusion turns short IN lists into `k = a OR k = b`.
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (lp, lr, le) = constraint_of(layout, left)?;
            let (rp, rr, re) = constraint_of(layout, right)?;
            if lp != rp || !lr.is_empty() || !rr.is_empty() {
                return None;
            }
            let mut values = le?;
            values.extend(re?);
            Some((lp, Vec::new(), Some(values)))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (name, lit, op) = match (column_of(left), literal_of(right)) {
                (Some(c), Some(v)) => (c, v, flip(*op).map(|_| *op)?),
                _ => (column_of(right)?, literal_of(left)?, flip(*op)?),
            };
            let (pos, ty) = key_col(name)?;
            let v = scalar_key(ty?, lit)?;
            if op == Operator::Eq {
                Some((pos, Vec::new(), Some(vec![v])))
            } else {
                Some((pos, vec![(op, v)], None))
            }
        }
        Expr::InList(l) if !l.negated => {
            let (pos, ty) = key_col(column_of(&l.expr)?)?;
            let ty = ty?;
            let values: Option<Vec<KeyValue>> = l
                .list
                .iter()
                .map(|x| literal_of(x).and_then(|v| scalar_key(ty, v)))
                .collect();
            Some((pos, Vec::new(), Some(values?)))
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let (pos, ty) = key_col(column_of(expr)?)?;
            let ty = ty?;
            let lo = scalar_key(ty, literal_of(low)?)?;
            let hi = scalar_key(ty, literal_of(high)?)?;
            Some((pos, vec![(Operator::GtEq, lo), (Operator::LtEq, hi)], None))
        }
        _ => None,
    }
}

/// True when the scan can narrow its reads with `e`.
pub fn usable_filter(layout: &KeyLayout, e: &Expr) -> bool {
    constraint_of(layout, e).is_some()
}

/// The tighter of two lower bounds.
fn max_lower(a: Option<(KeyValue, bool)>, b: (KeyValue, bool)) -> (KeyValue, bool) {
    match a {
        None => b,
        Some(a) => match a.0.sql_cmp(&b.0) {
            std::cmp::Ordering::Greater => a,
            std::cmp::Ordering::Less => b,
            std::cmp::Ordering::Equal => (a.0, a.1 && b.1),
        },
    }
}

fn min_upper(a: Option<(KeyValue, bool)>, b: (KeyValue, bool)) -> (KeyValue, bool) {
    match a {
        None => b,
        Some(a) => match a.0.sql_cmp(&b.0) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal => (a.0, a.1 && b.1),
        },
    }
}

fn sorted_unique(mut v: Vec<KeyValue>) -> Vec<KeyValue> {
    v.sort_by(|a, b| a.sql_cmp(b));
    v.dedup_by(|a, b| a.sql_cmp(b) == std::cmp::Ordering::Equal);
    v
}

/// What to read for `filters`, and a one-line description for EXPLAIN.
pub fn key_access(layout: &KeyLayout, filters: &[Expr]) -> (KeyAccess, String) {
    if layout.hidden() {
        return (KeyAccess::Full, "full scan".into());
    }
    let mut cons: Vec<ColumnConstraint> = layout
        .columns
        .iter()
        .map(|_| ColumnConstraint::default())
        .collect();
    for f in filters {
        let Some((pos, ranges, equal)) = constraint_of(layout, f) else {
            continue;
        };
        let Some(c) = cons.get_mut(pos) else { continue };
        if let Some(eq) = equal {
            // Two equality filters on one column: keep the values both allow.
            let eq = sorted_unique(eq);
            c.equal = Some(match c.equal.take() {
                None => eq,
                Some(old) => old.into_iter().filter(|v| eq.contains(v)).collect(),
            });
        }
        for (op, v) in ranges {
            match op {
                Operator::Gt => c.lower = Some(max_lower(c.lower.take(), (v, false))),
                Operator::GtEq => c.lower = Some(max_lower(c.lower.take(), (v, true))),
                Operator::Lt => c.upper = Some(min_upper(c.upper.take(), (v, false))),
                Operator::LtEq => c.upper = Some(min_upper(c.upper.take(), (v, true))),
                _ => {}
            }
        }
    }
    // Leading columns fixed by equality form prefixes; the next column may add a range.
    let mut prefixes: Vec<Vec<KeyValue>> = vec![Vec::new()];
    let mut fixed = 0;
    for c in &cons {
        let Some(eq) = &c.equal else { break };
        if prefixes.len().saturating_mul(eq.len().max(1)) > KEY_TUPLES_MAX {
            break;
        }
        let mut next = Vec::with_capacity(prefixes.len() * eq.len());
        for p in &prefixes {
            for v in eq {
                let mut t = p.clone();
                t.push(v.clone());
                next.push(t);
            }
        }
        prefixes = next;
        fixed += 1;
    }
    let names: Vec<&str> = layout.columns.iter().map(|c| c.2.as_str()).collect();
    let show = |t: &[KeyValue]| -> String {
        let vals: Vec<String> = t.iter().map(show_value).collect();
        format!("({})", vals.join(", "))
    };
    if fixed == layout.columns.len() {
        let keys: Vec<Vec<u8>> = prefixes.iter().map(|p| encode_key(p)).collect();
        let desc = format!(
            "get ({}) in [{}]",
            names.join(", "),
            prefixes
                .iter()
                .map(|p| show(p))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return (KeyAccess::Points(keys), desc);
    }
    let next = cons.get(fixed);
    let lower = next.and_then(|c| c.lower.clone());
    let upper = next.and_then(|c| c.upper.clone());
    if fixed == 0 && lower.is_none() && upper.is_none() {
        return (KeyAccess::Full, "full scan".into());
    }
    let mut ranges = Vec::with_capacity(prefixes.len());
    for p in &prefixes {
        let pb = encode_key(p);
        let start = match &lower {
            Some((v, incl)) => {
                let mut b = pb.clone();
                encode_key_into(&mut b, std::slice::from_ref(v));
                if *incl {
                    Bound::Included(b)
                } else {
                    match prefix_end(&b) {
                        Some(e) => Bound::Included(e),
                        None => continue, // nothing sorts above it
                    }
                }
            }
            None if pb.is_empty() => Bound::Unbounded,
            None => Bound::Included(pb.clone()),
        };
        let end = match &upper {
            Some((v, incl)) => {
                let mut b = pb.clone();
                encode_key_into(&mut b, std::slice::from_ref(v));
                if *incl {
                    prefix_end(&b).map_or(Bound::Unbounded, Bound::Excluded)
                } else {
                    Bound::Excluded(b)
                }
            }
            None if pb.is_empty() => Bound::Unbounded,
            None => prefix_end(&pb).map_or(Bound::Unbounded, Bound::Excluded),
        };
        if !range_is_empty(&start, &end) {
            ranges.push((start, end));
        }
    }
    let mut desc = format!("range ({})", names.join(", "));
    if fixed > 0 {
        desc.push_str(&format!(
            " prefix ({}) in [{}]",
            names.get(..fixed).unwrap_or_default().join(", "),
            prefixes
                .iter()
                .map(|p| show(p))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(name) = names.get(fixed) {
        if let Some((v, incl)) = &lower {
            desc.push_str(&format!(
                " {name} {} {}",
                if *incl { ">=" } else { ">" },
                show_value(v)
            ));
        }
        if let Some((v, incl)) = &upper {
            desc.push_str(&format!(
                " {name} {} {}",
                if *incl { "<=" } else { "<" },
                show_value(v)
            ));
        }
    }
    (KeyAccess::Ranges(ranges), desc)
}

/// True when no key lies between `start` and `end` (contradictory filters): such a range is
/// never handed to the store.
fn range_is_empty(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

/// A key value as EXPLAIN shows it.
fn show_value(v: &KeyValue) -> String {
    match v {
        KeyValue::Null => "NULL".into(),
        KeyValue::Bool(b) => b.to_string(),
        KeyValue::Int16(i) => i.to_string(),
        KeyValue::Int32(i) => i.to_string(),
        KeyValue::Int64(i) => i.to_string(),
        KeyValue::Float64(f) => f.to_string(),
        KeyValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
        KeyValue::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("'\\x{hex}'")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn layout() -> KeyLayout {
        KeyLayout {
            columns: vec![
                (0, ColumnType::Int4, "a".into()),
                (1, ColumnType::Text, "b".into()),
            ],
        }
    }

    fn k(a: i32, b: Option<&str>) -> Vec<u8> {
        let mut t = vec![KeyValue::Int32(a)];
        if let Some(b) = b {
            t.push(KeyValue::Text(b.into()));
        }
        encode_key(&t)
    }

    #[test]
    fn whole_key_equality_is_a_point_get() {
        let (access, _) = key_access(&layout(), &[col("b").eq(lit("x")), lit(1i32).eq(col("a"))]);
        assert_eq!(access, KeyAccess::Points(vec![k(1, Some("x"))]));
    }

    #[test]
    fn in_lists_and_or_chains_are_sorted_prefixes() {
        let expected = KeyAccess::Ranges(vec![
            (
                Bound::Included(k(1, None)),
                Bound::Excluded(prefix_end(&k(1, None)).expect("end")),
            ),
            (
                Bound::Included(k(2, None)),
                Bound::Excluded(prefix_end(&k(2, None)).expect("end")),
            ),
        ]);
        let (access, _) = key_access(
            &layout(),
            &[col("a").in_list(vec![lit(2i32), lit(1i32)], false)],
        );
        assert_eq!(access, expected);
        let (access, _) = key_access(
            &layout(),
            &[col("a").eq(lit(2i32)).or(col("a").eq(lit(1i32)))],
        );
        assert_eq!(access, expected);
    }

    #[test]
    fn ranges_on_the_first_column() {
        let (access, _) = key_access(
            &layout(),
            &[col("a").gt(lit(1i32)), col("a").lt_eq(lit(3i32))],
        );
        assert_eq!(
            access,
            KeyAccess::Ranges(vec![(
                Bound::Included(prefix_end(&k(1, None)).expect("end")),
                Bound::Excluded(prefix_end(&k(3, None)).expect("end")),
            )])
        );
        let (access, _) = key_access(&layout(), &[col("a").gt(lit(3i32)), col("a").lt(lit(2i32))]);
        assert_eq!(access, KeyAccess::Ranges(Vec::new()));
    }

    #[test]
    fn filters_off_the_leading_column_scan_everything() {
        let (access, desc) = key_access(&layout(), &[col("b").eq(lit("x"))]);
        assert_eq!(access, KeyAccess::Full);
        assert_eq!(desc, "full scan");
        // A literal the column type cannot hold exactly is left to the filter above the scan.
        let (access, _) = key_access(&layout(), &[col("a").eq(lit(1.5f64))]);
        assert_eq!(access, KeyAccess::Full);
    }
}
