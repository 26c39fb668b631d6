//! `COPY stream FROM STDIN` data: PostgreSQL's text and CSV formats parsed into Arrow arrays.
//!
//! Fields are parsed as text and converted with Arrow's casts, so the accepted spellings of
//! numbers, booleans and timestamps are Arrow's; a value that does not convert is an
//! [`Error::InvalidInput`] naming the line and column.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, IntervalMonthDayNanoBuilder, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::FormatOptions;

use crate::catalog::ColumnDef;
use crate::error::{Error, Result};

/// Rows converted and appended per batch.
pub const COPY_BATCH_ROWS: usize = 8192;

/// Format options of a COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    Text {
        delimiter: char,
        null: String,
    },
    Csv {
        delimiter: char,
        quote: char,
        escape: char,
        null: String,
        header: bool,
    },
}

impl Default for CopyFormat {
    fn default() -> Self {
        CopyFormat::Text {
            delimiter: '\t',
            null: "\\N".into(),
        }
    }
}

/// One parsed row: a field per column, `None` for NULL.
pub type Row = Vec<Option<String>>;

/// Splits COPY data into rows of optional fields.
pub fn parse_rows(data: &str, format: &CopyFormat) -> Result<Vec<Row>> {
    let mut splitter = RowSplitter::new(format.clone());
    let mut rows = splitter.push(data.as_bytes())?;
    rows.extend(splitter.finish()?);
    Ok(rows)
}

/// Rows parsed from one piece of data, and whether the end marker `\.` was among them.
fn parse_piece(data: &str, format: &CopyFormat) -> Result<(Vec<Row>, bool)> {
    match format {
        CopyFormat::Text { delimiter, null } => parse_text(data, *delimiter, null),
        CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            null,
            ..
        } => parse_csv(data, *delimiter, *quote, *escape, null),
    }
}

/// Cuts COPY data arriving in chunks of any size at row boundaries, so rows can be parsed as
/// the data comes in instead of after the last byte. A row ends at a newline, except inside a
/// quoted CSV field; a chunk may end anywhere, even inside a UTF-8 character, since only
/// whole rows are decoded.
#[derive(Debug)]
pub struct RowSplitter {
    format: CopyFormat,
    /// Bytes received but not yet parsed (an incomplete last row).
    carry: Vec<u8>,
    /// How far `carry` has been scanned for a boundary, and the quote state there.
    scanned: usize,
    in_quotes: bool,
    /// CSV quote and escape when both are one byte; otherwise rows are cut only at the end.
    csv_bytes: Option<(u8, u8)>,
    header_pending: bool,
    ended: bool,
}

impl RowSplitter {
    pub fn new(format: CopyFormat) -> Self {
        let (csv_bytes, header_pending) = match &format {
            CopyFormat::Csv {
                quote,
                escape,
                header,
                ..
            } => (
                (quote.is_ascii() && escape.is_ascii()).then_some((*quote as u8, *escape as u8)),
                *header,
            ),
            CopyFormat::Text { .. } => (None, false),
        };
        RowSplitter {
            format,
            carry: Vec::new(),
            scanned: 0,
            in_quotes: false,
            csv_bytes,
            header_pending,
            ended: false,
        }
    }

    /// Takes the next chunk; returns the rows it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Row>> {
        if self.ended {
            return Ok(Vec::new());
        }
        self.carry.extend_from_slice(chunk);
        let Some(boundary) = self.boundary() else {
            return Ok(Vec::new());
        };
        let rest = self.carry.split_off(boundary);
        let whole = std::mem::replace(&mut self.carry, rest);
        self.scanned -= boundary;
        self.parse(&whole)
    }

    /// End of data: parses what is left.
    pub fn finish(&mut self) -> Result<Vec<Row>> {
        if self.ended {
            return Ok(Vec::new());
        }
        let whole = std::mem::take(&mut self.carry);
        self.scanned = 0;
        self.parse(&whole)
    }

    /// Offset just past the last complete row in `carry`, if any.
    fn boundary(&mut self) -> Option<usize> {
        let is_csv = matches!(self.format, CopyFormat::Csv { .. });
        if !is_csv {
            // Text format escapes newlines inside fields, so every newline ends a row.
            let at = memchr_last(&self.carry[self.scanned..], b'\n').map(|i| self.scanned + i + 1);
            self.scanned = self.carry.len();
            return at;
        }
        let (quote, escape) = self.csv_bytes?;
        let mut last = None;
        let mut i = self.scanned;
        let bytes = &self.carry;
        while let Some(&b) = bytes.get(i) {
            if self.in_quotes {
                if escape != quote && b == escape {
                    // An escaped quote stays inside the field; decide once the next byte is in.
                    match bytes.get(i + 1) {
                        Some(&n) if n == quote => {
                            i += 2;
                            continue;
                        }
                        Some(_) => {}
                        None => break,
                    }
                } else if b == quote {
                    // With escape == quote a doubled quote toggles twice: still inside.
                    self.in_quotes = false;
                }
            } else if b == quote {
                self.in_quotes = true;
            } else if b == b'\n' {
                last = Some(i + 1);
            }
            i += 1;
        }
        self.scanned = i;
        last
    }

    fn parse(&mut self, whole: &[u8]) -> Result<Vec<Row>> {
        if whole.is_empty() {
            return Ok(Vec::new());
        }
        let text = std::str::from_utf8(whole)
            .map_err(|e| Error::InvalidInput(format!("COPY data is not valid UTF-8: {e}")))?;
        let (mut rows, ended) = parse_piece(text, &self.format)?;
        if self.header_pending && !rows.is_empty() {
            rows.remove(0);
            self.header_pending = false;
        }
        if ended {
            self.ended = true;
            self.carry.clear();
        }
        Ok(rows)
    }
}

fn memchr_last(hay: &[u8], needle: u8) -> Option<usize> {
    hay.iter().rposition(|&b| b == needle)
}

fn parse_text(data: &str, delimiter: char, null: &str) -> Result<(Vec<Row>, bool)> {
    let mut rows = Vec::new();
    for line in data.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            return Ok((rows, true));
        }
        if line.is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        for raw in line.split(delimiter) {
            if raw == null {
                fields.push(None);
            } else {
                fields.push(Some(unescape_text(raw)));
            }
        }
        rows.push(fields);
    }
    Ok((rows, false))
}

fn unescape_text(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(d @ '0'..='7') => {
                let mut v = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(x) => {
                            v = v * 8 + x;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn parse_csv(
    data: &str,
    delimiter: char,
    quote: char,
    escape: char,
    null: &str,
) -> Result<(Vec<Row>, bool)> {
    let mut rows = Vec::new();
    let mut fields: Vec<Option<String>> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = data.chars().peekable();
    let mut line_has_content = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == escape && escape != quote && chars.peek() == Some(&quote) {
                field.push(quote);
                chars.next();
            } else if c == quote {
                if escape == quote && chars.peek() == Some(&quote) {
                    field.push(quote);
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        if c == quote {
            in_quotes = true;
            quoted = true;
            line_has_content = true;
        } else if c == delimiter {
            fields.push(finish_csv_field(&mut field, &mut quoted, null));
            line_has_content = true;
        } else if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            if line_has_content || !field.is_empty() {
                if fields.is_empty() && !quoted && field == "\\." {
                    return Ok((rows, true));
                }
                fields.push(finish_csv_field(&mut field, &mut quoted, null));
                rows.push(std::mem::take(&mut fields));
            }
            line_has_content = false;
        } else {
            field.push(c);
            line_has_content = true;
        }
    }
    if in_quotes {
        return Err(Error::InvalidInput(
            "unterminated CSV quoted field in COPY data".into(),
        ));
    }
    if line_has_content || !field.is_empty() {
        if fields.is_empty() && !quoted && field == "\\." {
            return Ok((rows, true));
        }
        fields.push(finish_csv_field(&mut field, &mut quoted, null));
        rows.push(fields);
    }
    Ok((rows, false))
}

fn finish_csv_field(field: &mut String, quoted: &mut bool, null: &str) -> Option<String> {
    let f = std::mem::take(field);
    let was_quoted = std::mem::replace(quoted, false);
    if !was_quoted && f == null {
        None
    } else {
        Some(f)
    }
}

fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Converts parsed rows into a batch with one column per `columns` entry (named as the
/// column), `first_line` being the 1-based line number of `rows[0]` for error messages.
pub fn rows_to_batch(
    rows: &[Vec<Option<String>>],
    columns: &[ColumnDef],
    first_line: usize,
) -> Result<RecordBatch> {
    for (i, r) in rows.iter().enumerate() {
        if r.len() != columns.len() {
            let what = if r.len() < columns.len() {
                "missing data for a column"
            } else {
                "extra data after last expected column"
            };
            return Err(Error::InvalidInput(format!(
                "COPY line {}: {what} (expected {} columns, got {})",
                first_line + i,
                columns.len(),
                r.len()
            )));
        }
    }
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    let mut fields = Vec::with_capacity(columns.len());
    for (ci, col) in columns.iter().enumerate() {
        let target = col.ty.arrow_type();
        let texts = rows.iter().map(|r| r.get(ci).cloned().flatten());
        let array: ArrayRef = if target == DataType::Binary {
            let mut b = BinaryBuilder::new();
            for (i, t) in texts.enumerate() {
                match t {
                    None => b.append_null(),
                    Some(t) if t.starts_with("\\x") => match decode_bytea(&t) {
                        Some(v) => b.append_value(v),
                        None => {
                            return Err(Error::InvalidInput(format!(
                                "COPY line {}, column {}: invalid hexadecimal bytea \"{t}\"",
                                first_line + i,
                                col.name
                            )))
                        }
                    },
                    Some(t) => b.append_value(t.as_bytes()),
                }
            }
            Arc::new(b.finish())
        } else if matches!(target, DataType::Interval(_)) {
            // PostgreSQL's interval text, which Arrow's cast does not read; its errors are
            // PostgreSQL's (22007 and the rest), as COPY reports them.
            let mut b = IntervalMonthDayNanoBuilder::with_capacity(rows.len());
            for t in texts {
                b.append_option(
                    t.map(|t| crate::interval_input::parse_interval(&t))
                        .transpose()?,
                );
            }
            Arc::new(b.finish())
        } else {
            let strings: ArrayRef = Arc::new(texts.collect::<StringArray>());
            let options = CastOptions {
                safe: false,
                format_options: FormatOptions::default(),
            };
            cast_with_options(&strings, &target, &options).map_err(|e| {
                // Find the first bad value for a message that points at it.
                let bad = (0..strings.len()).find_map(|i| {
                    let one = strings.slice(i, 1);
                    cast_with_options(&one, &target, &options).err().map(|_| i)
                });
                match bad {
                    Some(i) => Error::InvalidInput(format!(
                        "COPY line {}, column {}: invalid input syntax for type {}: \"{}\"",
                        first_line + i,
                        col.name,
                        col.ty.sql_name(),
                        rows.get(i)
                            .and_then(|r| r.get(ci))
                            .cloned()
                            .flatten()
                            .unwrap_or_default()
                    )),
                    None => Error::InvalidInput(format!("COPY column {}: {e}", col.name)),
                }
            })?
        };
        fields.push(Field::new(&col.name, target, true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| Error::DataFusion(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_unescapes_and_nulls() {
        let rows = parse_rows("1\ta\\tb\n2\t\\N\n\\.\n", &CopyFormat::default()).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1].as_deref(), Some("a\tb"));
        assert_eq!(rows[1][1], None);
    }

    #[test]
    fn csv_quotes_and_header() {
        let f = CopyFormat::Csv {
            delimiter: ',',
            quote: '"',
            escape: '"',
            null: String::new(),
            header: true,
        };
        let rows = parse_rows("id,name\n1,\"x,\"\"y\"\"\"\n2,\n3,\"\"\n", &f).expect("parses");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][1].as_deref(), Some("x,\"y\""));
        assert_eq!(rows[1][1], None);
        assert_eq!(rows[2][1].as_deref(), Some(""));
    }

    /// Rows of awkward text: delimiters, quotes, backslashes, newlines and multi-byte
    /// characters, so chunk cuts land inside escapes, quoted fields and UTF-8 sequences.
    fn rows() -> impl proptest::strategy::Strategy<Value = Vec<Row>> {
        use proptest::prelude::*;
        let field = prop::option::weighted(
            0.9,
            prop::collection::vec(
                prop::sample::select(vec![
                    "a", "7", "\t", "\n", "\r\n", "\\", "\"", ",", "é", "∑", " ", ".",
                ]),
                0..6,
            )
            .prop_map(|parts| parts.concat()),
        );
        prop::collection::vec(prop::collection::vec(field, 3), 0..20)
    }

    fn to_text(rows: &[Row]) -> String {
        let mut out = String::new();
        for r in rows {
            let fields: Vec<String> = r
                .iter()
                .map(|f| match f {
                    None => "\\N".to_string(),
                    Some(s) => s
                        .replace('\\', "\\\\")
                        .replace('\t', "\\t")
                        .replace('\n', "\\n")
                        .replace('\r', "\\r"),
                })
                .collect();
            out.push_str(&fields.join("\t"));
            out.push('\n');
        }
        out
    }

    fn to_csv(rows: &[Row]) -> String {
        let mut out = String::from("a,b,c\r\n");
        for r in rows {
            let fields: Vec<String> = r
                .iter()
                .map(|f| match f {
                    None => String::new(),
                    Some(s) => format!("\"{}\"", s.replace('"', "\"\"")),
                })
                .collect();
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        out
    }

    fn split_at_random(data: &[u8], format: &CopyFormat, cuts: &[usize]) -> Vec<Row> {
        let mut s = RowSplitter::new(format.clone());
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            let end = (at + c).min(data.len());
            out.extend(s.push(&data[at..end]).expect("push"));
            at = end;
        }
        out.extend(s.push(&data[at..]).expect("push"));
        out.extend(s.finish().expect("finish"));
        out
    }

    proptest::proptest! {
        #[test]
        fn rows_survive_any_chunking(
            rows in rows(),
            cuts in proptest::collection::vec(0usize..9, 0..200),
        ) {
            let text = to_text(&rows);
            let got = split_at_random(text.as_bytes(), &CopyFormat::default(), &cuts);
            proptest::prop_assert_eq!(&got, &rows);

            let csv = CopyFormat::Csv {
                delimiter: ',',
                quote: '"',
                escape: '"',
                null: String::new(),
                header: true,
            };
            let data = to_csv(&rows);
            let got = split_at_random(data.as_bytes(), &csv, &cuts);
            proptest::prop_assert_eq!(&got, &rows);
        }
    }

    #[test]
    fn end_marker_stops_the_data_across_chunks() {
        let mut s = RowSplitter::new(CopyFormat::default());
        let mut rows = s.push(b"1\ta\n\\").expect("push");
        rows.extend(s.push(b".\n2\tb\n").expect("push"));
        rows.extend(s.finish().expect("finish"));
        assert_eq!(
            rows,
            vec![vec![Some("1".to_string()), Some("a".to_string())]]
        );
    }

    #[test]
    fn unterminated_csv_quote_is_an_error_at_the_end() {
        let f = CopyFormat::Csv {
            delimiter: ',',
            quote: '"',
            escape: '"',
            null: String::new(),
            header: false,
        };
        let mut s = RowSplitter::new(f);
        assert!(s.push(b"1,\"open\n2,x\n").expect("push").is_empty());
        assert!(s.finish().is_err());
    }
}
