//! An in-memory [`StreamLogs`] for unit tests; nothing is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use braid_ingest::storage::log::format::{decode_batch, BATCH_DECODE_BYTES_MAX};
use braid_ingest::storage::log::EncodedBatch;
use bytes::Bytes;

use super::log::{StoredRecord, StreamLog, StreamLogConfig, StreamLogs};
use crate::error::{Error, Result, StorageErrorKind};

/// In-memory logs, kept until the process exits.
#[derive(Debug, Default)]
pub struct MemLogs {
    logs: Mutex<HashMap<(String, u64), Arc<MemLog>>>,
}

#[derive(Debug)]
pub struct MemLog {
    partitions: Vec<Mutex<Vec<StoredRecord>>>,
    next: AtomicU32,
}

fn bad_partition(p: u32) -> Error {
    Error::Storage {
        kind: StorageErrorKind::InvalidArgument,
        message: format!("partition {p} does not exist"),
    }
}

fn hash_key(key: &[u8]) -> u32 {
    // FNV-1a: stable across runs, unlike the std hasher.
    let mut h: u32 = 0x811c9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    h
}

#[async_trait]
impl StreamLog for MemLog {
    fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }
    fn partition_for_key(&self, key: Option<&[u8]>) -> u32 {
        let n = self.partitions().max(1);
        match key {
            Some(k) => hash_key(k) % n,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
    async fn append(&self, partition: u32, batch: EncodedBatch) -> Result<(u64, u64)> {
        let p = self
            .partitions
            .get(partition as usize)
            .ok_or_else(|| bad_partition(partition))?;
        let (_, records) = decode_batch(
            &Bytes::copy_from_slice(batch.bytes()),
            BATCH_DECODE_BYTES_MAX,
        )
        .map_err(|e| Error::Storage {
            kind: StorageErrorKind::InvalidArgument,
            message: format!("batch does not decode: {e}"),
        })?;
        let mut p = p.lock();
        let base = p.len() as u64;
        for r in records {
            let offset = p.len() as u64;
            p.push(StoredRecord {
                offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
            });
        }
        Ok((base, (p.len() as u64).saturating_sub(1)))
    }
    fn start_offset(&self, partition: u32) -> Result<u64> {
        self.partitions
            .get(partition as usize)
            .map(|_| 0)
            .ok_or_else(|| bad_partition(partition))
    }
    fn end_offset(&self, partition: u32) -> Result<u64> {
        self.partitions
            .get(partition as usize)
            .map(|p| p.lock().len() as u64)
            .ok_or_else(|| bad_partition(partition))
    }
    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<(Vec<StoredRecord>, u64)> {
        let p = self
            .partitions
            .get(partition as usize)
            .ok_or_else(|| bad_partition(partition))?;
        let p = p.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next = from;
        for r in p.iter().skip(from as usize) {
            bytes += r.value.as_ref().map_or(0, |v| v.len()) + 16;
            out.push(r.clone());
            next = r.offset + 1;
            if bytes >= max_bytes {
                break;
            }
        }
        Ok((out, next.max(from)))
    }
    async fn offset_for_timestamp(&self, partition: u32, ts: i64) -> Result<Option<u64>> {
        let p = self
            .partitions
            .get(partition as usize)
            .ok_or_else(|| bad_partition(partition))?;
        Ok(p.lock()
            .iter()
            .find(|r| r.timestamp >= ts)
            .map(|r| r.offset))
    }
    async fn close(&self) {}
}

#[async_trait]
impl StreamLogs for MemLogs {
    async fn open(
        &self,
        database: &str,
        id: u64,
        config: &StreamLogConfig,
    ) -> Result<Arc<dyn StreamLog>> {
        let mut logs = self.logs.lock();
        let log = logs
            .entry((database.to_string(), id))
            .or_insert_with(|| {
                Arc::new(MemLog {
                    partitions: (0..config.partitions)
                        .map(|_| Mutex::new(Vec::new()))
                        .collect(),
                    next: AtomicU32::new(0),
                })
            })
            .clone();
        Ok(log)
    }
    async fn remove(&self, database: &str, id: u64) -> Result<()> {
        self.logs.lock().remove(&(database.to_string(), id));
        Ok(())
    }
}
