//! braid-planner: the DataFusion session, the persisted catalog, DDL and the table providers.
//!
//! The server hands SQL text (or a prepared statement plus parameter values) to a [`Session`]
//! and gets [`Output`]s back: Arrow record batch streams, command tags, or a request to start a
//! COPY. Nothing here knows the PostgreSQL wire protocol; errors leave as [`Error`], which the
//! server maps to a SQLSTATE in one place.
//!
//! What must stay true:
//! - The catalog on disk is replaced atomically, so a crash leaves the old or the new version.
//! - An INSERT or COPY into a stream reports its row count only after every record is durable in
//!   the log.
//! - A write to a row table reports success only after its transaction's commit is durable
//!   (at the end of the statement, or at COMMIT inside a block).

pub mod arithmetic;
pub mod catalog;
pub mod copy;
pub mod datetime;
pub mod error;
mod fast_insert;
mod float_text;
pub mod functions;
pub mod interval_arith;
pub mod interval_input;
mod numeric_ops;
pub mod pg_catalog;
pub mod rowcodec;
pub mod rows;
pub mod session;
mod sql;
pub mod stream;
mod sum_numeric;
pub mod types;

pub use datafusion;
pub use error::{Error, Result, StorageErrorKind};
pub use session::{
    CopyFormat, CopyIn, CopyLoad, Engine, EngineOptions, Notice, Output, Prepared, Session,
};
pub use sql::display_name;
