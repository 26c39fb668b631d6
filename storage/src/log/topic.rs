//! A topic: N partitions under one directory (`<dir>/<partition>/`), key routing, and the
//! background task that applies retention or compaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use super::format::Record;
use super::partition::Partition;
use super::{now_micros, Appended, TopicConfig};
use crate::error::{Error, Result};
use crate::io::{Fs, SharedFs};

#[derive(Debug)]
pub struct Topic {
    dir: PathBuf,
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
    round_robin: AtomicU32,
    maintenance: Option<tokio::task::JoinHandle<()>>,
}

impl Topic {
    /// Opens the topic in `dir`, creating it if needed, and recovers every partition.
    pub async fn open(fs: SharedFs, dir: impl Into<PathBuf>, config: TopicConfig) -> Result<Topic> {
        config.validate()?;
        let dir = dir.into();
        fs.create_dir_all(&dir).await?;
        let existing = fs
            .list_dir(&dir)
            .await?
            .iter()
            .filter_map(|n| n.parse::<u32>().ok())
            .max();
        if let Some(max) = existing {
            if max >= config.partitions {
                return Err(Error::InvalidArgument(format!(
                    "topic {} has {} partitions on disk; the partition count cannot shrink to {}",
                    dir.display(),
                    max + 1,
                    config.partitions
                )));
            }
        }
        let opens = (0..config.partitions)
            .map(|i| Partition::open(i, dir.join(i.to_string()), fs.clone(), config.clone()));
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in futures::future::join_all(opens).await {
            partitions.push(Arc::new(p?));
        }
        fs.sync_dir(&dir).await?;
        let mut topic = Topic {
            dir,
            config,
            partitions,
            round_robin: AtomicU32::new(0),
            maintenance: None,
        };
        if let Some(every) = topic.config.maintenance_interval {
            let weak: Vec<Weak<Partition>> = topic.partitions.iter().map(Arc::downgrade).collect();
            topic.maintenance = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    for w in &weak {
                        let Some(p) = w.upgrade() else { return };
                        if let Err(e) = p.run_maintenance(now_micros()).await {
                            tracing::error!(partition = %p.dir().display(), "maintenance failed: {e}");
                        }
                    }
                }
            }));
        }
        Ok(topic)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn partition(&self, i: u32) -> Result<Arc<Partition>> {
        self.partitions.get(i as usize).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "partition {i} does not exist (the topic has {})",
                self.partitions.len()
            ))
        })
    }

    /// `crc32c(key) % partitions`, stable across versions; round-robin without a key.
    pub fn partition_for_key(&self, key: Option<&[u8]>) -> u32 {
        let n = self.partitions.len() as u32;
        match key {
            Some(k) => crc32c::crc32c(k) % n,
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    /// Appends `records` to one partition as one batch; returns once durable.
    pub async fn append(&self, partition: u32, records: Vec<Record>) -> Result<Appended> {
        self.partition(partition)?.append(records).await
    }

    /// Applies retention or compaction to every partition now.
    pub async fn run_maintenance(&self, now_us: i64) -> Result<()> {
        for p in &self.partitions {
            p.run_maintenance(now_us).await?;
        }
        Ok(())
    }

    /// Stops every partition's writer after its queued appends.
    pub async fn close(&self) -> Result<()> {
        if let Some(m) = &self.maintenance {
            m.abort();
        }
        for p in &self.partitions {
            p.close().await?;
        }
        Ok(())
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        if let Some(m) = &self.maintenance {
            m.abort();
        }
    }
}

/// Deletes a topic's directory and everything in it (the topic must be closed).
pub async fn remove_topic(fs: &dyn Fs, dir: &Path) -> Result<()> {
    if fs.exists(dir).await? {
        fs.remove_dir_all(dir).await?;
        if let Some(parent) = dir.parent() {
            fs.sync_dir(parent).await?;
        }
    }
    Ok(())
}
