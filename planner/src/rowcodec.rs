//! The binary encoding of one stream row as a log record value.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! version: u8 = 1
//! ncols:   varint (LEB128)        columns written, in catalog order
//! nulls:   ceil(ncols / 8) bytes  bit i (LSB first) set = column i is NULL
//! values:  one per non-NULL column, in order:
//!   bool            u8 (0 or 1)
//!   smallint        i16          integer  i32        bigint  i64
//!   real            f32          double   f64
//!   numeric(p,s)    i128, the value times 10^s
//!   text/jsonb/uuid varint length + UTF-8 bytes
//!   bytea           varint length + bytes
//!   date            i32 days since 1970-01-01
//!   timestamp[tz]   i64 microseconds since 1970-01-01 00:00:00 (UTC for timestamptz)
//! ```
//!
//! A row with fewer columns than the catalog (written before a column was added) decodes the
//! missing ones as NULL, or as the value [`RowDecoder::with_missing`] gives for that column
//! (a row table's ADD COLUMN ... DEFAULT). Row tables keep a dropped column's slot in the
//! layout and write NULL there ([`encode_row_with`]), so slots never move. Decoding never trusts the bytes: every read is bounds-checked and a
//! short or malformed value is an error, never a panic.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    IntervalMonthDayNanoBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNano, IntervalMonthDayNanoType, TimestampMicrosecondType,
};

use crate::types::{ColumnType, UTC};

/// First byte of every encoded row.
pub const ROW_FORMAT_VERSION: u8 = 1;

/// Why a row did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("row format version {0} is not supported (expected {ROW_FORMAT_VERSION})")]
    Version(u8),
    #[error("row is truncated: needed {needed} more bytes at position {position}")]
    Truncated { position: usize, needed: usize },
    #[error("malformed varint at position {0}")]
    Varint(usize),
    #[error("invalid UTF-8 in column {0}")]
    Utf8(usize),
    #[error("empty row value")]
    Empty,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes row `row` of `columns` (arrays already of each column's Arrow type) into `out`.
pub fn encode_row(types: &[ColumnType], columns: &[ArrayRef], row: usize, out: &mut Vec<u8>) {
    encode_row_with(types, |i| columns.get(i), row, out)
}

/// Encodes row `row` into `out`, taking the array of slot `i` from `slot(i)`; a slot without
/// an array is NULL (a dropped column's slot of a row table).
pub fn encode_row_with<'a>(
    types: &[ColumnType],
    slot: impl Fn(usize) -> Option<&'a ArrayRef>,
    row: usize,
    out: &mut Vec<u8>,
) {
    out.push(ROW_FORMAT_VERSION);
    put_varint(out, types.len() as u64);
    let bitmap_at = out.len();
    out.resize(bitmap_at + types.len().div_ceil(8), 0);
    for (i, ty) in types.iter().enumerate() {
        match slot(i) {
            Some(col) if !col.is_null(row) => put_value(out, *ty, col, row),
            _ => {
                if let Some(b) = out.get_mut(bitmap_at + i / 8) {
                    *b |= 1 << (i % 8);
                }
            }
        }
    }
}

/// One value as the decoder sees it inside a row (variable-length values without their
/// length prefix), for [`RowDecoder::with_missing`]; `None` for NULL.
pub fn encode_value(ty: ColumnType, col: &ArrayRef, row: usize) -> Option<Vec<u8>> {
    if col.is_null(row) {
        return None;
    }
    Some(match ty {
        ColumnType::Text | ColumnType::Jsonb | ColumnType::Uuid => {
            col.as_string::<i32>().value(row).as_bytes().to_vec()
        }
        ColumnType::Bytea => col.as_binary::<i32>().value(row).to_vec(),
        _ => {
            let mut out = Vec::new();
            put_value(&mut out, ty, col, row);
            out
        }
    })
}

fn put_value(out: &mut Vec<u8>, ty: ColumnType, col: &ArrayRef, row: usize) {
    match ty {
        ColumnType::Bool => out.push(col.as_boolean().value(row) as u8),
        ColumnType::Int2 => {
            out.extend_from_slice(&col.as_primitive::<Int16Type>().value(row).to_le_bytes())
        }
        ColumnType::Int4 => {
            out.extend_from_slice(&col.as_primitive::<Int32Type>().value(row).to_le_bytes())
        }
        ColumnType::Int8 => {
            out.extend_from_slice(&col.as_primitive::<Int64Type>().value(row).to_le_bytes())
        }
        ColumnType::Float4 => {
            out.extend_from_slice(&col.as_primitive::<Float32Type>().value(row).to_le_bytes())
        }
        ColumnType::Float8 => {
            out.extend_from_slice(&col.as_primitive::<Float64Type>().value(row).to_le_bytes())
        }
        ColumnType::Numeric { .. } => out.extend_from_slice(
            &col.as_primitive::<Decimal128Type>()
                .value(row)
                .to_le_bytes(),
        ),
        ColumnType::Text | ColumnType::Jsonb | ColumnType::Uuid => {
            let s = col.as_string::<i32>().value(row);
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        ColumnType::Bytea => {
            let b = col.as_binary::<i32>().value(row);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        ColumnType::Date => {
            out.extend_from_slice(&col.as_primitive::<Date32Type>().value(row).to_le_bytes())
        }
        ColumnType::Timestamp | ColumnType::Timestamptz => out.extend_from_slice(
            &col.as_primitive::<TimestampMicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        ColumnType::Interval => {
            let v = col.as_primitive::<IntervalMonthDayNanoType>().value(row);
            out.extend_from_slice(&v.months.to_le_bytes());
            out.extend_from_slice(&v.days.to_le_bytes());
            out.extend_from_slice(&v.nanoseconds.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                position: self.pos,
                needed: n.saturating_sub(self.buf.len().saturating_sub(self.pos)),
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let [b] = self.array::<1>()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint(start))
    }
}

/// Rows a decoder's builders have room for when the caller does not say: Arrow's own default.
pub(crate) const DEFAULT_ROWS: usize = 1024;

/// Builds Arrow arrays for a set of projected columns from encoded rows.
///
/// A row is walked once, slot by slot, only as far as the last projected slot: values of
/// other slots are stepped over (a length read, no copy), nothing is allocated per row, and
/// the bytes after the last projected slot are not read at all.
pub struct RowDecoder {
    /// (index in the catalog column list, builder)
    columns: Vec<(usize, ColumnBuilder)>,
    /// Shared with the table's layout: a point read builds a decoder per statement, and
    /// copying these per decoder showed in its profile.
    types: Arc<[ColumnType]>,
    /// Per column: the value a row too short to hold it reads instead of NULL.
    missing: Arc<[Option<Vec<u8>>]>,
    /// Slots a row is read up to (one past the last projected slot).
    slots_needed: usize,
    /// Where each slot's value is in the row being decoded (reused across rows).
    spans: Vec<Span>,
    /// When every projected column has a fixed width and so has every slot before it: each
    /// projected column's (offset after the null bitmap, width), and the bytes all of them
    /// need. A row without NULLs in those slots is then read at fixed places
    /// ([`RowDecoder::append_fixed`]) instead of being walked slot by slot.
    fixed: Option<(Vec<(usize, usize)>, usize)>,
}

/// Bytes a value of `ty` takes in a row, when that does not depend on the value.
fn fixed_width(ty: ColumnType) -> Option<usize> {
    match ty {
        ColumnType::Bool => Some(1),
        ColumnType::Int2 => Some(2),
        ColumnType::Int4 | ColumnType::Float4 | ColumnType::Date => Some(4),
        ColumnType::Int8 | ColumnType::Float8 | ColumnType::Timestamp | ColumnType::Timestamptz => {
            Some(8)
        }
        ColumnType::Numeric { .. } | ColumnType::Interval => Some(16),
        ColumnType::Text | ColumnType::Jsonb | ColumnType::Uuid | ColumnType::Bytea => None,
    }
}

/// See [`RowDecoder::fixed`].
fn fixed_places(
    types: &[ColumnType],
    columns: &[(usize, ColumnBuilder)],
) -> Option<(Vec<(usize, usize)>, usize)> {
    // Each slot's start, while every slot before it has a fixed width.
    let mut starts = Vec::with_capacity(types.len());
    let mut at = Some(0usize);
    for ty in types {
        starts.push(at);
        at = at.zip(fixed_width(*ty)).map(|(a, w)| a + w);
    }
    let places = columns
        .iter()
        .map(|(i, _)| Some(((*starts.get(*i)?)?, fixed_width(*types.get(*i)?)?)))
        .collect::<Option<Vec<_>>>()?;
    let need = places.iter().map(|(s, w)| s + w).max().unwrap_or(0);
    Some((places, need))
}

/// Where a slot's value is in one row.
#[derive(Debug, Clone, Copy)]
enum Span {
    Null,
    /// Bytes `start..end` of the row.
    Row(usize, usize),
    /// The row is too short to hold the slot: its `missing` value (or NULL).
    Missing,
}

enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Numeric(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Interval(IntervalMonthDayNanoBuilder),
}

impl ColumnBuilder {
    /// A builder with room for `rows` values (text: `rows` values of 16 bytes) before it grows.
    fn new(ty: ColumnType, rows: usize) -> Self {
        match ty {
            ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Int2 => ColumnBuilder::Int2(Int16Builder::with_capacity(rows)),
            ColumnType::Int4 => ColumnBuilder::Int4(Int32Builder::with_capacity(rows)),
            ColumnType::Int8 => ColumnBuilder::Int8(Int64Builder::with_capacity(rows)),
            ColumnType::Float4 => ColumnBuilder::Float4(Float32Builder::with_capacity(rows)),
            ColumnType::Float8 => ColumnBuilder::Float8(Float64Builder::with_capacity(rows)),
            ColumnType::Numeric { precision, scale } => {
                ColumnBuilder::Numeric(Decimal128Builder::with_capacity(rows), precision, scale)
            }
            ColumnType::Text | ColumnType::Jsonb | ColumnType::Uuid => {
                ColumnBuilder::Text(StringBuilder::with_capacity(rows, rows * 16))
            }
            ColumnType::Bytea => {
                ColumnBuilder::Bytea(BinaryBuilder::with_capacity(rows, rows * 16))
            }
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(rows)),
            ColumnType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows), false)
            }
            ColumnType::Timestamptz => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows), true)
            }
            ColumnType::Interval => {
                ColumnBuilder::Interval(IntervalMonthDayNanoBuilder::with_capacity(rows))
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int2(b) => b.append_null(),
            ColumnBuilder::Int4(b) => b.append_null(),
            ColumnBuilder::Int8(b) => b.append_null(),
            ColumnBuilder::Float4(b) => b.append_null(),
            ColumnBuilder::Float8(b) => b.append_null(),
            ColumnBuilder::Numeric(b, _, _) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Bytea(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b, _) => b.append_null(),
            ColumnBuilder::Interval(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Int2(b) => Arc::new(b.finish()),
            ColumnBuilder::Int4(b) => Arc::new(b.finish()),
            ColumnBuilder::Int8(b) => Arc::new(b.finish()),
            ColumnBuilder::Float4(b) => Arc::new(b.finish()),
            ColumnBuilder::Float8(b) => Arc::new(b.finish()),
            ColumnBuilder::Numeric(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|_| Decimal128Builder::new().finish()),
            ),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytea(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Interval(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b, tz) => {
                let a = b.finish();
                if *tz {
                    Arc::new(a.with_timezone(UTC))
                } else {
                    Arc::new(a)
                }
            }
        }
    }
}

impl RowDecoder {
    /// A decoder for the catalog columns `types`, producing arrays for `projection` (indexes
    /// into `types`) in that order.
    pub fn new(types: &[ColumnType], projection: &[usize]) -> Self {
        Self::shared(types.into(), projection, DEFAULT_ROWS)
    }

    /// [`new`](Self::new) over types the caller keeps, with builders sized for `rows` rows
    /// (they grow past it): a point read decodes one row, a scan a batch.
    pub fn shared(types: Arc<[ColumnType]>, projection: &[usize], rows: usize) -> Self {
        let columns: Vec<(usize, ColumnBuilder)> = projection
            .iter()
            .filter_map(|&i| types.get(i).map(|t| (i, ColumnBuilder::new(*t, rows))))
            .collect();
        let slots_needed = columns.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        let fixed = fixed_places(&types, &columns);
        RowDecoder {
            columns,
            types,
            missing: Arc::new([]),
            slots_needed,
            spans: Vec::with_capacity(slots_needed),
            fixed,
        }
    }

    /// Values (from [`encode_value`]) that rows written before a column existed read for it,
    /// indexed like `types`; columns without one read NULL.
    pub fn with_missing(mut self, missing: Arc<[Option<Vec<u8>>]>) -> Self {
        self.missing = missing;
        self
    }

    /// Decodes one row and appends its projected values. On error nothing is appended.
    pub fn append(&mut self, value: &[u8]) -> Result<(), DecodeError> {
        if self.append_fixed(value) {
            return Ok(());
        }
        locate_values(&self.types, value, self.slots_needed, &mut self.spans)?;
        let spans = &self.spans;
        let missing = &self.missing;
        let slice = |slot: usize| -> Option<&[u8]> {
            match spans.get(slot) {
                Some(Span::Row(s, e)) => value.get(*s..*e),
                Some(Span::Missing) => missing.get(slot).and_then(|m| m.as_deref()),
                Some(Span::Null) | None => None,
            }
        };
        // Check text first so that a bad row leaves every builder untouched.
        for (idx, builder) in &self.columns {
            if let (ColumnBuilder::Text(_), Some(v)) = (builder, slice(*idx)) {
                std::str::from_utf8(v).map_err(|_| DecodeError::Utf8(*idx))?;
            }
        }
        for (idx, builder) in &mut self.columns {
            match slice(*idx) {
                None => builder.append_null(),
                Some(v) => append_value(builder, v, *idx)?,
            }
        }
        Ok(())
    }

    /// [`append`](Self::append) for a row whose projected values sit at fixed places (see
    /// [`RowDecoder::fixed`]): it has every slot up to the last projected one, none of them
    /// NULL, and the bytes they need. `false`, with nothing appended, for any other row (or
    /// any doubt), which then takes the slot-by-slot walk and its errors.
    #[inline]
    fn append_fixed(&mut self, value: &[u8]) -> bool {
        let Some((places, need)) = &self.fixed else {
            return false;
        };
        let [version, ncols, rest @ ..] = value else {
            return false;
        };
        // A one-byte varint: fewer than 128 columns.
        let ncols = usize::from(*ncols);
        if *version != ROW_FORMAT_VERSION || ncols >= 0x80 || ncols < self.slots_needed {
            return false;
        }
        let Some((bitmap, values)) = rest.split_at_checked(ncols.div_ceil(8)) else {
            return false;
        };
        if values.len() < *need {
            return false;
        }
        let mut slot = 0;
        for b in bitmap {
            if slot >= self.slots_needed {
                break;
            }
            let in_byte = (self.slots_needed - slot).min(8);
            let mask = if in_byte == 8 {
                0xff
            } else {
                (1u8 << in_byte) - 1
            };
            if b & mask != 0 {
                return false;
            }
            slot += 8;
        }
        for ((idx, builder), (start, width)) in self.columns.iter_mut().zip(places) {
            // In range: `values` holds `need` bytes, the end of the farthest place. Fixed-width
            // values of the right length cannot fail.
            if let Some(v) = values.get(*start..start + width) {
                let _ = append_value(builder, v, *idx);
            }
        }
        true
    }

    /// Appends a row of NULLs (a record with no value, a tombstone).
    pub fn append_nulls(&mut self) {
        for (_, b) in &mut self.columns {
            b.append_null();
        }
    }

    /// Returns the arrays built so far and resets the builders.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns.iter_mut().map(|(_, b)| b.finish()).collect()
    }
}

/// Finds where the values of slots `0..slots` are in a row, into `spans` (cleared first).
/// Reads the row only as far as those slots go; every read is bounds-checked.
fn locate_values(
    types: &[ColumnType],
    value: &[u8],
    slots: usize,
    spans: &mut Vec<Span>,
) -> Result<(), DecodeError> {
    spans.clear();
    let mut r = Reader { buf: value, pos: 0 };
    let [version] = r.array::<1>().map_err(|_| DecodeError::Empty)?;
    if version != ROW_FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let ncols = usize::try_from(r.varint()?).map_err(|_| DecodeError::Varint(1))?;
    let bitmap = r.take(ncols.div_ceil(8))?;
    for (i, ty) in types.iter().enumerate().take(slots) {
        if i >= ncols {
            spans.push(Span::Missing);
            continue;
        }
        if bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
            spans.push(Span::Null);
            continue;
        }
        let len = match ty {
            ColumnType::Bool => 1,
            ColumnType::Int2 => 2,
            ColumnType::Int4 | ColumnType::Float4 | ColumnType::Date => 4,
            ColumnType::Int8
            | ColumnType::Float8
            | ColumnType::Timestamp
            | ColumnType::Timestamptz => 8,
            ColumnType::Numeric { .. } | ColumnType::Interval => 16,
            ColumnType::Text | ColumnType::Jsonb | ColumnType::Uuid | ColumnType::Bytea => {
                usize::try_from(r.varint()?).map_err(|_| DecodeError::Varint(r.pos))?
            }
        };
        let start = r.pos;
        r.take(len)?;
        spans.push(Span::Row(start, r.pos));
    }
    Ok(())
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], DecodeError> {
    v.try_into().map_err(|_| DecodeError::Truncated {
        position: 0,
        needed: N,
    })
}

#[inline]
fn append_value(b: &mut ColumnBuilder, v: &[u8], col: usize) -> Result<(), DecodeError> {
    match b {
        ColumnBuilder::Bool(b) => b.append_value(v.first().is_some_and(|x| *x != 0)),
        ColumnBuilder::Int2(b) => b.append_value(i16::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Int4(b) => b.append_value(i32::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Int8(b) => b.append_value(i64::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Float4(b) => b.append_value(f32::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Float8(b) => b.append_value(f64::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Numeric(b, _, _) => b.append_value(i128::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Text(b) => {
            b.append_value(std::str::from_utf8(v).map_err(|_| DecodeError::Utf8(col))?)
        }
        ColumnBuilder::Bytea(b) => b.append_value(v),
        ColumnBuilder::Date(b) => b.append_value(i32::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Timestamp(b, _) => b.append_value(i64::from_le_bytes(fixed(v)?)),
        ColumnBuilder::Interval(b) => {
            let v: [u8; 16] = fixed(v)?;
            let (months, rest) = v.split_at(4);
            let (days, nanos) = rest.split_at(4);
            b.append_value(IntervalMonthDayNano {
                months: i32::from_le_bytes(fixed(months)?),
                days: i32::from_le_bytes(fixed(days)?),
                nanoseconds: i64::from_le_bytes(fixed(nanos)?),
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    #[test]
    fn encode_then_decode_is_identity() {
        let types = [ColumnType::Int8, ColumnType::Text, ColumnType::Int8];
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec![Some("héllo"), Some("")])),
            Arc::new(Int64Array::from(vec![None, Some(-7)])),
        ];
        let mut dec = RowDecoder::new(&types, &[2, 1, 0]);
        for row in 0..2 {
            let mut buf = Vec::new();
            encode_row(&types, &cols, row, &mut buf);
            dec.append(&buf).expect("decodes");
        }
        let out = dec.finish();
        assert_eq!(out[0].as_ref(), cols[2].as_ref());
        assert_eq!(out[1].as_ref(), cols[1].as_ref());
        assert_eq!(out[2].as_ref(), cols[0].as_ref());
    }

    /// Rows the fixed-place path reads (no NULL up to the last projected slot) and rows it
    /// leaves to the walk (a NULL there, a row written before a column existed) decode alike.
    #[test]
    fn fixed_places_and_the_walk_agree() {
        use datafusion::arrow::array::Int32Array;
        let types = [
            ColumnType::Int4,
            ColumnType::Int8,
            ColumnType::Text,
            ColumnType::Int4,
        ];
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3), Some(-4)])),
            Arc::new(Int64Array::from(vec![
                Some(10),
                Some(20),
                None,
                Some(i64::MIN),
            ])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("c"),
                Some("dd"),
            ])),
            Arc::new(Int32Array::from(vec![Some(7), Some(8), Some(9), None])),
        ];
        let mut rows = Vec::new();
        for row in 0..4 {
            let mut buf = Vec::new();
            encode_row(&types, &cols, row, &mut buf);
            rows.push(buf);
        }
        // A row written when the table had one column.
        let mut old = Vec::new();
        encode_row(&types[..1], &cols[..1], 0, &mut old);
        rows.push(old);
        let mut dec = RowDecoder::new(&types, &[1, 0]);
        assert!(
            dec.fixed.is_some(),
            "int8 and int4 after int4 sit at fixed places"
        );
        assert!(
            RowDecoder::new(&types, &[3]).fixed.is_none(),
            "after a text slot"
        );
        let two_texts = [ColumnType::Text, ColumnType::Text, ColumnType::Int4];
        assert!(RowDecoder::new(&two_texts, &[2]).fixed.is_none());
        for r in &rows {
            dec.append(r).expect("decodes");
        }
        let out = dec.finish();
        let want_1: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(10),
            Some(20),
            None,
            Some(i64::MIN),
            None,
        ]));
        let want_0: ArrayRef = Arc::new(Int32Array::from(vec![
            Some(1),
            None,
            Some(3),
            Some(-4),
            Some(1),
        ]));
        assert_eq!(out[0].as_ref(), want_1.as_ref());
        assert_eq!(out[1].as_ref(), want_0.as_ref());
        // A row cut inside a fixed place is an error, as on the walk.
        let mut dec = RowDecoder::new(&types, &[1]);
        let first = rows.first().expect("rows");
        assert!(dec.append(&first[..first.len().min(8)]).is_err());
    }

    #[test]
    fn truncated_rows_are_errors() {
        let types = [ColumnType::Int8, ColumnType::Text];
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1)])),
            Arc::new(StringArray::from(vec![Some("abc")])),
        ];
        let mut buf = Vec::new();
        encode_row(&types, &cols, 0, &mut buf);
        for cut in 0..buf.len() {
            let mut dec = RowDecoder::new(&types, &[0, 1]);
            assert!(dec.append(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert!(RowDecoder::new(&types, &[0]).append(&[9, 0]).is_err());
    }
}
