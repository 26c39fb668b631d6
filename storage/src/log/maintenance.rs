//! Retention and compaction of sealed segments. The active segment is never touched, and no
//! change is visible until it is durable: deletions remove a segment from the map before its
//! files, and a compacted segment replaces the old one by an atomic rename.
//!
//! Retention (`cleanup = delete`, as Kafka): oldest sealed segments go first; by age when their
//! newest record is older than `retention_age`, by size while the partition minus the segment
//! is still at least `retention_bytes`.
//!
//! Compaction (`cleanup = compact`): for every key only the record with the highest offset is
//! kept; a tombstone (null value) that is the last record of its key is kept until its
//! timestamp is older than `tombstone_retention`. Offsets are preserved (gaps remain). The map
//! of keys is held in memory.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{self, LogRecord};
use super::partition::Shared;
use super::segment::{open_segment, parse_segment_name, segment_file, write_index_files, Segment};
use super::Cleanup;
use crate::error::{Error, Result};
use crate::io::OpenMode;

/// Target size of the batches a compacted segment is written in.
const COMPACTED_BATCH_BYTES: usize = 1 << 20;

pub(crate) async fn run(shared: &Shared, now_us: i64) -> Result<()> {
    let _guard = shared.maintenance.lock().await;
    match shared.config.cleanup {
        Cleanup::Delete => apply_retention(shared, now_us).await,
        Cleanup::Compact => compact(shared, now_us).await,
    }
}

fn sealed_segments(shared: &Shared) -> Vec<Arc<Segment>> {
    let segs = shared.segments.read();
    let n = segs.len();
    segs.values().take(n.saturating_sub(1)).cloned().collect()
}

async fn apply_retention(shared: &Shared, now_us: i64) -> Result<()> {
    let cfg = &shared.config;
    if cfg.retention_age.is_none() && cfg.retention_bytes.is_none() {
        return Ok(());
    }
    let sealed = sealed_segments(shared);
    let mut total: u64 = shared.segments.read().values().map(|s| s.len()).sum();
    let cutoff = cfg
        .retention_age
        .map(|a| now_us.saturating_sub(i64::try_from(a.as_micros()).unwrap_or(i64::MAX)));
    for seg in sealed {
        shared.ensure_index(&seg).await?;
        let expired = cutoff.is_some_and(|c| seg.max_timestamp() < c);
        let oversize = cfg
            .retention_bytes
            .is_some_and(|max| total.saturating_sub(seg.len()) >= max);
        if !(expired || oversize) {
            break;
        }
        tracing::info!(
            segment = %seg.path.display(),
            expired,
            oversize,
            "retention deletes a segment"
        );
        total = total.saturating_sub(seg.len());
        delete_segment(shared, &seg).await?;
    }
    Ok(())
}

/// Deletes sealed segments, oldest first, while the next segment starts at or below `offset`.
pub(crate) async fn trim_before(shared: &Shared, offset: u64) -> Result<()> {
    let _guard = shared.maintenance.lock().await;
    let bases: Vec<u64> = shared.segments.read().keys().copied().collect();
    let sealed = sealed_segments(shared);
    for (seg, next_base) in sealed.iter().zip(bases.iter().skip(1)) {
        if *next_base > offset {
            break;
        }
        tracing::info!(segment = %seg.path.display(), offset, "trimming a segment below a consumer's position");
        delete_segment(shared, seg).await?;
    }
    Ok(())
}

async fn delete_segment(shared: &Shared, seg: &Segment) -> Result<()> {
    shared.segments.write().remove(&seg.base);
    let fs = &*shared.fs;
    for ext in ["log", "idx", "timeindex"] {
        let p = segment_file(&shared.dir, seg.base, ext);
        if fs.exists(&p).await? {
            fs.remove_file(&p).await?;
        }
    }
    // Producer snapshots at or below a deleted base are never needed again. A segment roll
    // removes old snapshots too, concurrently: one it removed first is not an error.
    for name in fs.list_dir(&shared.dir).await? {
        if parse_segment_name(&name, "snapshot").is_some_and(|b| b <= seg.base) {
            match fs.remove_file(&shared.dir.join(name)).await {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    fs.sync_dir(&shared.dir).await
}

async fn compact(shared: &Shared, now_us: i64) -> Result<()> {
    let sealed = sealed_segments(shared);
    if sealed.is_empty() {
        return Ok(());
    }
    let end = shared.end_offset();
    let all: Vec<Arc<Segment>> = shared.segments.read().values().cloned().collect();
    let bmax = format::BATCH_DECODE_BYTES_MAX;
    // Pass 1: the last offset of every key, over the whole partition.
    let mut latest: HashMap<Bytes, u64> = HashMap::new();
    for seg in &all {
        shared.ensure_index(seg).await?;
        for r in seg.read_all(end, bmax).await? {
            if let Some(k) = r.key {
                latest.insert(k, r.offset);
            }
        }
    }
    let tombstone_cutoff = now_us.saturating_sub(
        i64::try_from(shared.config.tombstone_retention.as_micros()).unwrap_or(i64::MAX),
    );
    // Pass 2: rewrite each sealed segment that holds something to drop.
    for seg in sealed {
        let records = seg.read_all(end, bmax).await?;
        let keep: Vec<&LogRecord> = records
            .iter()
            .filter(|r| match &r.key {
                None => true,
                Some(k) => {
                    latest.get(k) == Some(&r.offset)
                        && !(r.value.is_none() && r.timestamp < tombstone_cutoff)
                }
            })
            .collect();
        if keep.len() == records.len() {
            continue;
        }
        if keep.is_empty() {
            tracing::info!(segment = %seg.path.display(), "compaction empties a segment");
            delete_segment(shared, &seg).await?;
            continue;
        }
        rewrite_segment(shared, &seg, &keep).await?;
    }
    Ok(())
}

/// Writes `keep` to `<base>.log.cleaned`, syncs it, drops the old indexes (a crash now leaves
/// the old log with no index, which is rebuilt), renames the new log into place, syncs the
/// directory, then writes fresh indexes and swaps the segment in memory.
async fn rewrite_segment(shared: &Shared, seg: &Segment, keep: &[&LogRecord]) -> Result<()> {
    let fs = &*shared.fs;
    let dir = &shared.dir;
    let mut bytes = Vec::new();
    let mut batch: Vec<&LogRecord> = Vec::new();
    let mut batch_bytes = 0usize;
    for r in keep {
        let size =
            64 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
        let span_ok = batch
            .first()
            .is_none_or(|f| r.offset - f.offset < u64::from(u32::MAX));
        if !batch.is_empty() && (batch_bytes + size > COMPACTED_BATCH_BYTES || !span_ok) {
            bytes.extend(
                format::encode_batch_at_offsets(&batch).map_err(crate::Error::InvalidArgument)?,
            );
            batch.clear();
            batch_bytes = 0;
        }
        batch.push(r);
        batch_bytes += size;
    }
    if !batch.is_empty() {
        bytes.extend(
            format::encode_batch_at_offsets(&batch).map_err(crate::Error::InvalidArgument)?,
        );
    }
    let log_path = segment_file(dir, seg.base, "log");
    let mut cleaned = log_path.clone().into_os_string();
    cleaned.push(".cleaned");
    let cleaned = std::path::PathBuf::from(cleaned);
    if fs.exists(&cleaned).await? {
        fs.remove_file(&cleaned).await?;
    }
    let f = fs.open(&cleaned, OpenMode::CreateNew).await?;
    let (res, _) = f.write_all_at(bytes, 0).await;
    res?;
    f.sync_data().await?;
    drop(f);
    for ext in ["idx", "timeindex"] {
        let p = segment_file(dir, seg.base, ext);
        if fs.exists(&p).await? {
            fs.remove_file(&p).await?;
        }
    }
    fs.sync_dir(dir).await?;
    fs.rename(&cleaned, &log_path).await?;
    fs.sync_dir(dir).await?;
    let new = open_segment(fs, dir, seg.base, true).await?;
    let end = new
        .scan(
            new.len(),
            false,
            shared.config.index_interval_bytes,
            format::BATCH_DECODE_BYTES_MAX,
            |_| {},
        )
        .await?;
    let idx = end.builder.sealed();
    write_index_files(fs, dir, seg.base, &idx).await?;
    new.max_ts.store(end.builder.max_ts, Ordering::Release);
    *new.index.write() = Some(idx);
    tracing::info!(segment = %log_path.display(), kept = keep.len(), "compacted a segment");
    shared.segments.write().insert(seg.base, Arc::new(new));
    Ok(())
}
