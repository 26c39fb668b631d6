//! COPY ... TO STDOUT: sends a query's rows as CopyOutResponse, one CopyData per row in
//! PostgreSQL's text or CSV format, CopyDone, then `COPY n`. Values are rendered by the same
//! text encoder as query results, then escaped (text) or quoted (CSV) the way PostgreSQL's
//! `CopyAttributeOutText` / `CopyAttributeOutCSV` do, so a dump reads back with COPY FROM.

use std::fmt::Debug;
use std::sync::Arc;

use braid_planner::{display_name, CopyFormat, Error};
use bytes::{BufMut, BytesMut};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::DataRow;
use pgwire::messages::PgWireBackendMessage;

use crate::encode::{encode_batch, field_infos};
use braid_planner::types::SessionTimeZone;

/// Runs the COPY out. The outer error is the connection's (the client went away); the inner one
/// is the statement's, answered with an ErrorResponse like any failed statement.
pub(crate) async fn send<C>(
    client: &mut C,
    schema: SchemaRef,
    mut stream: SendableRecordBatchStream,
    format: &CopyFormat,
    tz: SessionTimeZone,
) -> PgWireResult<Result<Response, Error>>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    // The first batch before the CopyOutResponse: most execution errors then arrive as a plain
    // ErrorResponse, as for a query.
    let mut next = match stream.next().await {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => return Ok(Err(Error::DataFusion(e))),
        None => None,
    };
    let fields: Arc<Vec<FieldInfo>> = Arc::new(field_infos(&schema, &Format::UnifiedText));
    let columns = fields.len();
    let columns_i16 = i16::try_from(columns).unwrap_or(i16::MAX);
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            0,
            columns_i16,
            vec![0; columns],
        )))
        .await?;
    let mut buf = BytesMut::new();
    if let CopyFormat::Csv { header: true, .. } = format {
        for (i, f) in schema.fields().iter().enumerate() {
            if i > 0 {
                put_delimiter(&mut buf, format);
            }
            put_value(
                &mut buf,
                Some(display_name(f.name()).as_bytes()),
                format,
                columns == 1,
            );
        }
        buf.put_u8(b'\n');
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(
                buf.split().freeze(),
            )))
            .await?;
    }
    let mut rows = 0usize;
    loop {
        let batch = match next.take() {
            Some(b) => b,
            None => match stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Ok(Err(Error::DataFusion(e))),
                None => break,
            },
        };
        for row in encode_batch(&batch, &fields, tz)? {
            put_row(&mut buf, &row, format, columns)?;
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(
                    buf.split().freeze(),
                )))
                .await?;
            rows += 1;
        }
        client.flush().await?;
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(Ok(Response::Execution(Tag::new("COPY").with_rows(rows))))
}

/// One row: the text-format fields of a DataRow (`i32` length, -1 for NULL, then the bytes),
/// escaped or quoted, separated by the delimiter, ended by a newline.
fn put_row(
    buf: &mut BytesMut,
    row: &DataRow,
    format: &CopyFormat,
    columns: usize,
) -> PgWireResult<()> {
    let mut data: &[u8] = &row.data;
    for i in 0..columns {
        if i > 0 {
            put_delimiter(buf, format);
        }
        let (len, rest) = data
            .split_first_chunk::<4>()
            .ok_or_else(|| encode_error("row shorter than its columns"))?;
        let len = i32::from_be_bytes(*len);
        let value = if len < 0 {
            data = rest;
            None
        } else {
            let len = len as usize;
            if rest.len() < len {
                return Err(encode_error("field longer than its row"));
            }
            let (v, rest) = rest.split_at(len);
            data = rest;
            Some(v)
        };
        put_value(buf, value, format, columns == 1);
    }
    buf.put_u8(b'\n');
    Ok(())
}

fn encode_error(msg: &str) -> PgWireError {
    PgWireError::ApiError(msg.to_string().into())
}

fn put_delimiter(buf: &mut BytesMut, format: &CopyFormat) {
    let d = match format {
        CopyFormat::Text { delimiter, .. } | CopyFormat::Csv { delimiter, .. } => *delimiter,
    };
    let mut tmp = [0u8; 4];
    buf.put_slice(d.encode_utf8(&mut tmp).as_bytes());
}

fn put_value(buf: &mut BytesMut, value: Option<&[u8]>, format: &CopyFormat, single_column: bool) {
    match format {
        CopyFormat::Text { delimiter, null } => match value {
            None => buf.put_slice(null.as_bytes()),
            Some(v) => put_text(buf, v, *delimiter),
        },
        CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            null,
            ..
        } => match value {
            None => buf.put_slice(null.as_bytes()),
            Some(v) => put_csv(buf, v, *delimiter, *quote, *escape, null, single_column),
        },
    }
}

/// PostgreSQL's text format: backslash escapes for the backslash, the delimiter and the
/// control characters that would break a line or a field.
fn put_text(buf: &mut BytesMut, v: &[u8], delimiter: char) {
    let delim = u8::try_from(u32::from(delimiter)).ok();
    for &b in v {
        match b {
            b'\\' => buf.put_slice(b"\\\\"),
            b'\n' => buf.put_slice(b"\\n"),
            b'\r' => buf.put_slice(b"\\r"),
            b'\t' => buf.put_slice(b"\\t"),
            0x08 => buf.put_slice(b"\\b"),
            0x0c => buf.put_slice(b"\\f"),
            0x0b => buf.put_slice(b"\\v"),
            _ if Some(b) == delim => {
                buf.put_u8(b'\\');
                buf.put_u8(b);
            }
            _ => buf.put_u8(b),
        }
    }
}

/// PostgreSQL's CSV format: a value is quoted when it holds the delimiter, the quote, a line
/// break, equals the NULL string (so that it does not read back as NULL; an empty string is
/// `""` by default), or is `\.` alone in a one-column row. Inside quotes the quote and escape
/// characters are escaped with the escape character.
fn put_csv(
    buf: &mut BytesMut,
    v: &[u8],
    delimiter: char,
    quote: char,
    escape: char,
    null: &str,
    single_column: bool,
) {
    let byte = |c: char| u8::try_from(u32::from(c)).unwrap_or(0);
    let (d, q, e) = (byte(delimiter), byte(quote), byte(escape));
    let needs_quote = v == null.as_bytes()
        || (single_column && v == b"\\.")
        || v.iter()
            .any(|&b| b == d || b == q || b == b'\n' || b == b'\r');
    if !needs_quote {
        buf.put_slice(v);
        return;
    }
    buf.put_u8(q);
    for &b in v {
        if b == q || b == e {
            buf.put_u8(e);
        }
        buf.put_u8(b);
    }
    buf.put_u8(q);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(v: &str, null: &str) -> String {
        let mut b = BytesMut::new();
        put_csv(&mut b, v.as_bytes(), ',', '"', '"', null, false);
        String::from_utf8(b.to_vec()).expect("utf8")
    }

    fn text(v: &str) -> String {
        let mut b = BytesMut::new();
        put_text(&mut b, v.as_bytes(), '\t');
        String::from_utf8(b.to_vec()).expect("utf8")
    }

    #[test]
    fn csv_quotes_like_postgresql() {
        assert_eq!(csv("plain", ""), "plain");
        assert_eq!(csv("", ""), "\"\"");
        assert_eq!(csv("a,b", ""), "\"a,b\"");
        assert_eq!(csv("say \"hi\"", ""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv("two\nlines", ""), "\"two\nlines\"");
        assert_eq!(csv("NULL", "NULL"), "\"NULL\"");
        assert_eq!(csv("", "NULL"), "");
    }

    #[test]
    fn text_escapes_like_postgresql() {
        assert_eq!(text("a\tb"), "a\\tb");
        assert_eq!(text("back\\slash"), "back\\\\slash");
        assert_eq!(text("line\nbreak\r"), "line\\nbreak\\r");
        assert_eq!(text("ünïcode"), "ünïcode");
    }
}
