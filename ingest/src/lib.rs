//! braid-ingest: the write path between SQL and the log — partition routing, transactions and
//! applying committed log records to projections. It sees the storage crate, never pgwire.

pub use braid_storage as storage;
