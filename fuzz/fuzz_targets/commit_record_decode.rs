//! Fuzzes the row store's commit-record decoder (the value of every record in a database's
//! commit log) and its table metadata file decoder.
//!
//! Nothing may panic or allocate without bound. A commit record that decodes must survive
//! encode → decode unchanged (same seqno, tables, keys and values), and a table file that
//! decodes must encode back to its bytes.

#![no_main]

use braid_ingest::rows::fuzzing::{
    decode_commit, decode_table_meta, encode_commit, encode_table_meta, set_commit_seqno,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(record) = decode_commit(&bytes) {
        let mut again = encode_commit(&record.changes);
        set_commit_seqno(&mut again, record.seqno);
        let back = decode_commit(&Bytes::from(again)).expect("a re-encoded record decodes");
        assert_eq!(back, record, "encode after decode keeps the transaction");
    }
    if let Ok(meta) = decode_table_meta(data) {
        assert_eq!(encode_table_meta(&meta).as_slice(), data);
    }
});
