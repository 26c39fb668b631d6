//! The row store's byte codecs, reachable from the fuzz targets in `fuzz/` (feature
//! `fuzzing`) and nowhere else: the commit record and the table metadata file.

pub use super::format::{
    decode_commit, decode_table_meta, encode_commit, encode_table_meta, set_commit_seqno,
    CommitRecord,
};
