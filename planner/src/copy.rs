//! `COPY stream FROM STDIN` data: PostgreSQL's text and CSV formats parsed into Arrow arrays.
//!
//! Fields are parsed as text and converted with Arrow's casts, so the accepted spellings of
//! numbers, booleans and timestamps are Arrow's; a value that does not convert is an
//! [`Error::InvalidInput`] naming the line and column.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, StringArray};
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

/// Splits COPY data into rows of optional fields.
pub fn parse_rows(data: &str, format: &CopyFormat) -> Result<Vec<Vec<Option<String>>>> {
    match format {
        CopyFormat::Text { delimiter, null } => parse_text(data, *delimiter, null),
        CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            null,
            header,
        } => {
            let mut rows = parse_csv(data, *delimiter, *quote, *escape, null)?;
            if *header && !rows.is_empty() {
                rows.remove(0);
            }
            Ok(rows)
        }
    }
}

fn parse_text(data: &str, delimiter: char, null: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    for line in data.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
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
    Ok(rows)
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
) -> Result<Vec<Vec<Option<String>>>> {
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
                    return Ok(rows);
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
        if !(fields.is_empty() && !quoted && field == "\\.") {
            fields.push(finish_csv_field(&mut field, &mut quoted, null));
            rows.push(fields);
        }
    }
    Ok(rows)
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
}
