//! Streams: append-only tables stored as LogCore topics.
//!
//! - [`log`]: the small trait the planner needs from a log ([`StreamLog`], [`StreamLogs`]), so
//!   the SQL side does not depend on LogCore's internals, plus an in-memory implementation for
//!   tests.
//! - [`options`]: the `WITH (...)` options of `CREATE STREAM`.
//! - [`table`]: the DataFusion `TableProvider` (schema with hidden columns, filter pushdown).
//! - [`scan`]: the execution plan that reads partitions in parallel from seek positions.
//! - [`sink`]: turning Arrow batches into log records and appending them durably.
//! - [`txn`]: appends held inside a transaction block until COMMIT.

pub mod log;
pub mod logcore;
pub mod memlog;
pub mod options;
pub mod scan;
pub mod sink;
pub mod table;
pub mod txn;

/// Hidden column: the partition a record is in.
pub const COL_PARTITION: &str = "_partition";
/// Hidden column: the record's offset within its partition.
pub const COL_OFFSET: &str = "_offset";
/// Hidden column: the record's timestamp.
pub const COL_TIMESTAMP: &str = "_timestamp";
/// Hidden column: the record's key, as text.
pub const COL_KEY: &str = "_key";

/// All hidden columns, in schema order (after the user columns).
pub const HIDDEN_COLUMNS: [&str; 4] = [COL_PARTITION, COL_OFFSET, COL_TIMESTAMP, COL_KEY];
