//! braid-ingest: the write path between SQL and the log — partition routing, transactions and
//! applying committed log records to projections. It sees the storage crate, never pgwire.
//!
//! - [`rows`]: row tables — the database commit log, one LSM per table, snapshot-isolated
//!   transactions with first-committer-wins conflict checks, replay after a restart.
//! - [`key`]: the order-preserving encoding of typed key tuples the row tables are keyed by.

pub mod error;
pub mod key;
pub mod rows;

pub use braid_storage as storage;
pub use error::{Error, Result};
