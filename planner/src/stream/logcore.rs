//! The [`StreamLogs`] implementation over LogCore (`braid_storage::log`), and the catalog's
//! [`FileStore`] over `braid_storage::io`.
//!
//! Layout: a stream's topic lives in `<data_dir>/log/<database dir>/<stream id>/` (the
//! directory of the database's name, [`crate::catalog::database_dir`]); ids are never
//! reused, so a dropped and re-created stream of the same name starts empty even if removing
//! the old directory was interrupted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use braid_ingest::storage::io::{read_file, write_file_atomic, SharedFs};
use braid_ingest::storage::log::{
    self as lc, BatchBuilder, Durability, EncodedBatch, Topic, TopicConfig,
};
use braid_ingest::storage::Error as StorageError;

use super::log::{CleanupPolicy, StoredRecord, StreamLog, StreamLogConfig, StreamLogs};
use crate::catalog::FileStore;
use crate::error::{Error, Result, StorageErrorKind};

/// Converts a storage error, keeping whose fault it is.
pub fn storage_error(e: StorageError) -> Error {
    let kind = match &e {
        StorageError::DiskFull { .. } => StorageErrorKind::DiskFull,
        StorageError::Corruption { .. } => StorageErrorKind::Corruption,
        StorageError::Io { .. } | StorageError::PartitionFailed { .. } => StorageErrorKind::Io,
        StorageError::InvalidArgument(_) | StorageError::OffsetOutOfRange { .. } => {
            StorageErrorKind::InvalidArgument
        }
        _ => StorageErrorKind::Other,
    };
    Error::Storage {
        kind,
        message: e.to_string(),
    }
}

/// Stream logs stored as LogCore topics.
#[derive(Debug)]
pub struct LogCoreStreams {
    fs: SharedFs,
    root: PathBuf,
    durability: Durability,
}

impl LogCoreStreams {
    /// Logs under `<data_dir>/log`.
    pub fn new(fs: SharedFs, data_dir: &Path, durability: Durability) -> Self {
        LogCoreStreams {
            fs,
            root: data_dir.join("log"),
            durability,
        }
    }

    fn dir(&self, database: &str, id: u64) -> PathBuf {
        self.root
            .join(crate::catalog::database_dir(database))
            .join(id.to_string())
    }
}

#[async_trait]
impl StreamLogs for LogCoreStreams {
    async fn open(
        &self,
        database: &str,
        id: u64,
        config: &StreamLogConfig,
    ) -> Result<Arc<dyn StreamLog>> {
        let tc = TopicConfig {
            partitions: config.partitions,
            durability: self.durability,
            retention_age: config.retention,
            retention_bytes: config.retention_bytes,
            cleanup: match config.cleanup {
                CleanupPolicy::Delete => lc::Cleanup::Delete,
                CleanupPolicy::Compact => lc::Cleanup::Compact,
            },
            ..TopicConfig::default()
        };
        let topic = Topic::open(self.fs.clone(), self.dir(database, id), tc)
            .await
            .map_err(storage_error)?;
        Ok(Arc::new(LogCoreStream { topic }))
    }

    async fn remove(&self, database: &str, id: u64) -> Result<()> {
        lc::remove_topic(&*self.fs, &self.dir(database, id))
            .await
            .map_err(storage_error)
    }
}

/// One stream's topic.
#[derive(Debug)]
pub struct LogCoreStream {
    topic: Topic,
}

#[async_trait]
impl StreamLog for LogCoreStream {
    fn partitions(&self) -> u32 {
        self.topic.partitions()
    }

    fn partition_for_key(&self, key: Option<&[u8]>) -> u32 {
        self.topic.partition_for_key(key)
    }

    fn batch_builder(&self, partition: u32) -> BatchBuilder {
        // The partition's pool hands back the buffer of a finished write, so a steady stream
        // of appends fills the same pages again.
        match self.topic.partition(partition) {
            Ok(p) => p.batch_builder(),
            Err(_) => BatchBuilder::new(crate::stream::sink::now_micros()),
        }
    }

    async fn append(&self, partition: u32, batch: EncodedBatch) -> Result<(u64, u64)> {
        let a = self
            .topic
            .partition(partition)
            .map_err(storage_error)?
            .append_encoded(batch)
            .await
            .map_err(storage_error)?;
        Ok((a.base_offset, a.last_offset))
    }

    fn start_offset(&self, partition: u32) -> Result<u64> {
        Ok(self
            .topic
            .partition(partition)
            .map_err(storage_error)?
            .start_offset())
    }

    fn end_offset(&self, partition: u32) -> Result<u64> {
        Ok(self
            .topic
            .partition(partition)
            .map_err(storage_error)?
            .end_offset())
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<(Vec<StoredRecord>, u64)> {
        let p = self.topic.partition(partition).map_err(storage_error)?;
        let r = p.read(from, max_bytes).await.map_err(storage_error)?;
        let records = r
            .records
            .into_iter()
            .map(|r| StoredRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
            })
            .collect();
        Ok((records, r.next_offset))
    }

    async fn offset_for_timestamp(&self, partition: u32, ts_micros: i64) -> Result<Option<u64>> {
        let p = self.topic.partition(partition).map_err(storage_error)?;
        p.offset_for_timestamp(ts_micros)
            .await
            .map_err(storage_error)
    }

    fn size_bytes(&self) -> Option<u64> {
        let mut total = 0;
        for i in 0..self.topic.partitions() {
            total += self.topic.partition(i).ok()?.size_bytes();
        }
        Some(total)
    }

    async fn close(&self) {
        if let Err(e) = self.topic.close().await {
            tracing::warn!(error = %e, "closing a stream log failed");
        }
    }
}

/// The catalog's durable files through the storage I/O layer.
#[derive(Debug)]
pub struct StorageFiles {
    fs: SharedFs,
}

impl StorageFiles {
    pub fn new(fs: SharedFs) -> Self {
        StorageFiles { fs }
    }
}

fn catalog_io(op: &'static str, path: &Path, e: StorageError) -> Error {
    Error::CatalogIo {
        op,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[async_trait]
impl FileStore for StorageFiles {
    async fn write_atomic(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        write_file_atomic(&*self.fs, path, bytes)
            .await
            .map_err(|e| catalog_io("write", path, e))
    }

    async fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        if !self
            .fs
            .exists(path)
            .await
            .map_err(|e| catalog_io("stat", path, e))?
        {
            return Ok(None);
        }
        read_file(&*self.fs, path)
            .await
            .map(Some)
            .map_err(|e| catalog_io("read", path, e))
    }

    async fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.fs
            .create_dir_all(path)
            .await
            .map_err(|e| catalog_io("create", path, e))
    }
}

pub use braid_ingest::storage::log::Durability as LogDurability;

/// The catalog files and stream logs for `data_dir`, on the I/O backend named by
/// `BRAID_IO_BACKEND` (blocking `std` by default).
pub fn open_storage(
    data_dir: &Path,
    durability: LogDurability,
) -> Result<(Arc<dyn FileStore>, Arc<dyn StreamLogs>)> {
    let fs = braid_ingest::storage::io::backend_from_env().map_err(storage_error)?;
    Ok((
        Arc::new(StorageFiles::new(fs.clone())),
        Arc::new(LogCoreStreams::new(fs, data_dir, durability)),
    ))
}
