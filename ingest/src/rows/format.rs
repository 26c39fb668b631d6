//! Byte layouts owned by the row store, with their writers and bounds-checked readers: the
//! commit record (the value of one commit-log record) and the table metadata file. Every
//! integer is little-endian; varints are LEB128. LogCore checksums each record (crc32c over the
//! batch), so the commit record carries no checksum of its own; the table file, which is not in
//! the log, does.
//!
//! Commit record, one per committed transaction:
//! ```text
//! magic "BRTX" | version u8 = 1 | seqno u64 | table_count varint |
//! { table_id u64 | change_count varint |
//!   { op u8 (0 = delete, 1 = put) | key_len varint | key | [value_len varint | value] }* }*
//! ```
//! Tables appear in ascending id order, keys in ascending byte order within a table, each key
//! once.
//!
//! Table metadata file `TABLE` in `tables/<db>/<table_id>/`:
//! ```text
//! magic "BRTB" | version u8 = 1 | table_id u64 | created_seq u64 | crc32c u32 of the above
//! ```
//! `created_seq` is above every seqno assigned before the table was created, so commit records
//! of an older table with the same id (dropped since) are never replayed into this one.

use std::collections::BTreeMap;

use braid_storage::codec::{Cursor, CursorError};
use bytes::Bytes;

use super::TableId;

pub const COMMIT_MAGIC: [u8; 4] = *b"BRTX";
pub const COMMIT_VERSION: u8 = 1;
pub const TABLE_MAGIC: [u8; 4] = *b"BRTB";
pub const TABLE_VERSION: u8 = 1;
pub const TABLE_FILE_LEN: usize = 4 + 1 + 8 + 8 + 4;

const OP_DELETE: u8 = 0;
const OP_PUT: u8 = 1;

/// The changes of one transaction, per table, per key: `None` is a delete.
pub type Changes = BTreeMap<TableId, BTreeMap<Bytes, Option<Bytes>>>;

/// A decoded commit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub seqno: u64,
    pub changes: Changes,
}

/// The encoded size of a commit record with these changes (what [`encode_commit`] will write).
pub fn commit_len(changes: &Changes) -> usize {
    let mut n = 4 + 1 + 8 + varint_len(changes.len() as u64);
    for rows in changes.values() {
        n += 8 + varint_len(rows.len() as u64);
        for (k, v) in rows {
            n += 1 + varint_len(k.len() as u64) + k.len();
            if let Some(v) = v {
                n += varint_len(v.len() as u64) + v.len();
            }
        }
    }
    n
}

/// Encodes a commit record. The seqno is written last by [`set_commit_seqno`] once the
/// transaction has one, so the (possibly large) body is encoded outside the commit lock.
pub fn encode_commit(changes: &Changes) -> Vec<u8> {
    let mut out = Vec::with_capacity(commit_len(changes));
    out.extend_from_slice(&COMMIT_MAGIC);
    out.push(COMMIT_VERSION);
    out.extend_from_slice(&0u64.to_le_bytes());
    put_varint(&mut out, changes.len() as u64);
    for (table, rows) in changes {
        out.extend_from_slice(&table.to_le_bytes());
        put_varint(&mut out, rows.len() as u64);
        for (k, v) in rows {
            out.push(if v.is_some() { OP_PUT } else { OP_DELETE });
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k);
            if let Some(v) = v {
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
        }
    }
    debug_assert_eq!(out.len(), commit_len(changes));
    out
}

/// Writes `seqno` into a record made by [`encode_commit`].
pub fn set_commit_seqno(record: &mut [u8], seqno: u64) {
    if let Some(slot) = record.get_mut(5..13) {
        slot.copy_from_slice(&seqno.to_le_bytes());
    }
}

/// Decodes a commit record; values and keys share `bytes`' buffer.
pub fn decode_commit(bytes: &Bytes) -> Result<CommitRecord, String> {
    let mut c = Cursor::new(bytes);
    let e = |e: CursorError| format!("{e:?}");
    if c.take(4).map_err(e)? != COMMIT_MAGIC {
        return Err("bad magic (not a commit record)".into());
    }
    let version = c.u8().map_err(e)?;
    if version != COMMIT_VERSION {
        return Err(format!(
            "unsupported commit record version {version} (this build reads {COMMIT_VERSION})"
        ));
    }
    let seqno = c.u64().map_err(e)?;
    let tables = c.varint64().map_err(e)?;
    let mut changes = Changes::new();
    let mut last_table = None;
    for _ in 0..tables {
        let table = c.u64().map_err(e)?;
        if last_table.is_some_and(|t| t >= table) {
            return Err(format!("table {table} out of order"));
        }
        last_table = Some(table);
        let count = c.varint64().map_err(e)?;
        let mut rows = BTreeMap::new();
        let mut last_key: Option<Bytes> = None;
        for _ in 0..count {
            let op = c.u8().map_err(e)?;
            let key = slice_of(bytes, &mut c)?;
            if last_key.as_ref().is_some_and(|k| *k >= key) {
                return Err(format!("keys of table {table} out of order"));
            }
            let value = match op {
                OP_PUT => Some(slice_of(bytes, &mut c)?),
                OP_DELETE => None,
                other => return Err(format!("unknown change op {other}")),
            };
            last_key = Some(key.clone());
            rows.insert(key, value);
        }
        changes.insert(table, rows);
    }
    if c.remaining() != 0 {
        return Err(format!("{} trailing bytes", c.remaining()));
    }
    Ok(CommitRecord { seqno, changes })
}

fn slice_of(bytes: &Bytes, c: &mut Cursor<'_>) -> Result<Bytes, String> {
    let len = c.varint64().map_err(|e| format!("{e:?}"))?;
    let len = usize::try_from(len).map_err(|_| "length out of range".to_string())?;
    let start = c.pos;
    c.take(len).map_err(|e| format!("{e:?}"))?;
    Ok(bytes.slice(start..start + len))
}

/// The table metadata file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableMeta {
    pub table_id: TableId,
    pub created_seq: u64,
}

pub fn encode_table_meta(m: &TableMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(TABLE_FILE_LEN);
    out.extend_from_slice(&TABLE_MAGIC);
    out.push(TABLE_VERSION);
    out.extend_from_slice(&m.table_id.to_le_bytes());
    out.extend_from_slice(&m.created_seq.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode_table_meta(bytes: &[u8]) -> Result<TableMeta, String> {
    if bytes.len() != TABLE_FILE_LEN {
        return Err(format!("{} bytes, expected {TABLE_FILE_LEN}", bytes.len()));
    }
    let mut c = Cursor::new(bytes);
    let e = |e: CursorError| format!("{e:?}");
    if c.take(4).map_err(e)? != TABLE_MAGIC {
        return Err("bad magic".into());
    }
    let version = c.u8().map_err(e)?;
    if version != TABLE_VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let table_id = c.u64().map_err(e)?;
    let created_seq = c.u64().map_err(e)?;
    let body = bytes.get(..TABLE_FILE_LEN - 4).unwrap_or_default();
    let crc = c.u32().map_err(e)?;
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(TableMeta {
        table_id,
        created_seq,
    })
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn changes() -> impl Strategy<Value = Changes> {
        let rows = prop::collection::btree_map(
            prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)),
            0..6,
        );
        prop::collection::btree_map(any::<u64>(), rows, 0..4)
    }

    proptest! {
        #[test]
        fn commit_record_round_trips(ch in changes(), seq in any::<u64>()) {
            let mut b = encode_commit(&ch);
            prop_assert_eq!(b.len(), commit_len(&ch));
            set_commit_seqno(&mut b, seq);
            let back = decode_commit(&Bytes::from(b)).expect("decode");
            prop_assert_eq!(back, CommitRecord { seqno: seq, changes: ch });
        }

        #[test]
        fn truncated_or_garbled_records_are_errors(ch in changes(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
            let b = encode_commit(&ch);
            let at = cut.index(b.len());
            prop_assert!(decode_commit(&Bytes::copy_from_slice(&b[..at])).is_err());
            // A flipped byte either fails to decode or decodes to something; it never panics.
            let mut g = b.clone();
            let i = flip.index(g.len());
            g[i] ^= 0x5A;
            let _ = decode_commit(&Bytes::from(g));
        }

        #[test]
        fn garbage_never_panics(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut v = COMMIT_MAGIC.to_vec();
            v.push(COMMIT_VERSION);
            v.extend(b);
            let _ = decode_commit(&Bytes::from(v));
        }
    }

    #[test]
    fn table_meta_round_trips_and_checks_its_crc() {
        let m = TableMeta {
            table_id: 42,
            created_seq: 7,
        };
        let mut b = encode_table_meta(&m);
        assert_eq!(decode_table_meta(&b), Ok(m));
        b[6] ^= 1;
        assert!(decode_table_meta(&b).is_err());
        assert!(decode_table_meta(&b[..10]).is_err());
    }
}
