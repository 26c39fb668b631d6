//! braid-storage: everything that touches the disk.
//!
//! - [`io`]: the small disk I/O trait (owned buffers in and out) with a blocking backend run off
//!   the async threads and an io_uring backend, plus a fault-injecting wrapper for tests.
//! - [`log`]: LogCore, the durable, checksummed, partitioned log that every write goes through.
//!
//! This crate never sees DataFusion or pgwire; upper layers talk to it through typed APIs and
//! the [`Error`] enum.

pub mod codec;
pub mod error;
pub mod io;
pub mod log;
pub mod lsm;

pub use error::{Error, Result};
