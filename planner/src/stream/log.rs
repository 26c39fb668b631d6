//! What the planner needs from a partitioned log. An implementer must guarantee:
//! - `append` returns only once the records are durable, and assigns dense, increasing offsets
//!   within the partition;
//! - `end_offset` never counts a record that `append` has not acknowledged;
//! - reads return records in offset order, starting at the first offset >= `from`.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use braid_ingest::storage::log::{BatchBuilder, EncodedBatch};
use bytes::Bytes;

use crate::error::Result;

/// A record read back.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// How old records are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

/// Settings of one stream's log.
#[derive(Debug, Clone)]
pub struct StreamLogConfig {
    pub partitions: u32,
    pub retention: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub cleanup: CleanupPolicy,
}

/// One stream's log: N partitions.
#[async_trait]
pub trait StreamLog: Send + Sync + Debug {
    fn partitions(&self) -> u32;
    /// The partition a key routes to (round-robin when `None`).
    fn partition_for_key(&self, key: Option<&[u8]>) -> u32;
    /// An empty batch of records for `partition`, filled by the caller and then appended with
    /// [`append`](Self::append). Records without a timestamp get the time of this call.
    fn batch_builder(&self, _partition: u32) -> BatchBuilder {
        BatchBuilder::new(crate::stream::sink::now_micros())
    }
    /// Appends the batch's records durably, in order; returns (first offset, last offset).
    async fn append(&self, partition: u32, batch: EncodedBatch) -> Result<(u64, u64)>;
    /// First offset still held.
    fn start_offset(&self, partition: u32) -> Result<u64>;
    /// The next offset to be written (everything below is durable).
    fn end_offset(&self, partition: u32) -> Result<u64>;
    /// Reads up to about `max_bytes` starting at `from`; returns records and the next offset.
    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<(Vec<StoredRecord>, u64)>;
    /// The first offset whose timestamp is >= `ts_micros`, if any.
    async fn offset_for_timestamp(&self, partition: u32, ts_micros: i64) -> Result<Option<u64>>;
    /// Bytes the log holds on disk (`pg_table_size`); `None` when the log cannot tell.
    fn size_bytes(&self) -> Option<u64> {
        None
    }
    /// Flushes and closes the log.
    async fn close(&self);
}

/// Opens and removes stream logs by (database, stream id).
#[async_trait]
pub trait StreamLogs: Send + Sync + Debug {
    /// Opens the log, creating it if it does not exist.
    async fn open(
        &self,
        database: &str,
        id: u64,
        config: &StreamLogConfig,
    ) -> Result<Arc<dyn StreamLog>>;
    /// Removes a closed log and all its data.
    async fn remove(&self, database: &str, id: u64) -> Result<()>;
}
