//! Compaction: choosing which tables to merge and merging them.
//!
//! Leveled, not tiered. braid's row tables serve point lookups on primary keys (pgbench
//! select-only is the benchmark): leveled keeps at most one table per level ≥ 1 to probe for a
//! key, so read amplification is `L0 tables + levels` bloom probes and at most that many block
//! reads, and space amplification stays near 1.1×. Tiered would write less but make every
//! lookup probe many overlapping runs. Level 0 takes memtable flushes as they come (its tables
//! overlap); once it holds `l0_compaction_trigger_files` tables they are all merged with the
//! overlapping part of level 1. Level `n ≥ 1` may hold `level1_bytes_max · ratio^(n-1)` bytes;
//! the level most over its budget sends one table (round robin through the key space) into
//! the next level.
//!
//! How foreground latency is kept bounded:
//! - one compaction at a time (one background task, and a lock shared with `compact_full`), so
//!   at most one compaction's worth of disk bandwidth and one core are taken from foreground work;
//! - writes of a compaction can be paced to `compaction_bytes_per_sec`;
//! - compaction reads bypass the block cache, so the hot set of point lookups is not flushed out,
//!   and read ahead up to 256 KiB at a time, so a compaction costs few read calls;
//! - a compaction yields to the runtime every `YIELD_EVERY_ENTRIES` merged entries;
//! - flushes run on their own task and never wait for a compaction (they only share the short
//!   manifest update), so memtables keep draining while a large compaction runs;
//! - writers stall (wait, not fail) only when `l0_stall_files` tables pile up in level 0 or
//!   `immutable_memtables_max` memtables wait for flush, which bounds read amplification and
//!   memory instead of letting them grow without limit.
//!
//! What must stay true: versions of one user key never span two output tables (a table is cut
//! only between user keys), versions newer than the oldest live snapshot are all kept, the newest
//! version at or below it is kept, and a tombstone is dropped only when no level below the output
//! holds the key's range.

use std::sync::Arc;

use super::format::{push_internal_key, Kind};
use super::iter::{LevelIter, MergeIter, Source};
use super::table::{RateLimiter, Table, TableIter, TableWriter};
use super::version::Version;
use crate::error::Result;
use crate::io::Fs;

/// Entries merged between voluntary yields to the runtime (a power of two: checked with a mask),
/// so that a long compaction on a worker thread never holds it for more than a fraction of a
/// millisecond.
pub(crate) const YIELD_EVERY_ENTRIES: u64 = 512;

/// A chosen compaction.
#[derive(Debug)]
pub(crate) struct Job {
    /// Input tables per level, each level's list in the version's order.
    pub inputs: Vec<(usize, Vec<Arc<Table>>)>,
    pub output_level: usize,
    /// No table below `output_level` overlaps the inputs: tombstones can go.
    pub bottom: bool,
}

impl Job {
    pub fn input_numbers(&self) -> Vec<u64> {
        self.inputs
            .iter()
            .flat_map(|(_, ts)| ts.iter().map(|t| t.number))
            .collect()
    }

    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .flat_map(|(_, ts)| ts.iter().map(|t| t.size))
            .sum()
    }
}

/// Knobs the picker needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub l0_compaction_trigger_files: usize,
    pub level1_bytes_max: u64,
    pub level_size_ratio: u64,
}

fn key_range(tables: &[Arc<Table>]) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = tables.iter().map(|t| t.meta.smallest.as_ref()).min()?;
    let hi = tables.iter().map(|t| t.meta.largest.as_ref()).max()?;
    Some((lo.to_vec(), hi.to_vec()))
}

fn overlapping(v: &Version, level: usize, lo: &[u8], hi: &[u8]) -> Vec<Arc<Table>> {
    v.levels
        .get(level)
        .map(|l| l.iter().filter(|t| t.overlaps(lo, hi)).cloned().collect())
        .unwrap_or_default()
}

fn is_bottom(v: &Version, output_level: usize, lo: &[u8], hi: &[u8]) -> bool {
    (output_level + 1..v.levels.len()).all(|l| overlapping(v, l, lo, hi).is_empty())
}

/// Picks the most urgent compaction, if any. `pointers[level]` is the largest key of the last
/// table compacted out of that level (round robin).
pub(crate) fn pick(v: &Version, shape: Shape, pointers: &mut [Vec<u8>]) -> Option<Job> {
    let last = v.levels.len().checked_sub(1)?;
    let l0 = v.levels.first()?;
    if l0.len() >= shape.l0_compaction_trigger_files.max(1) && last >= 1 {
        let (lo, hi) = key_range(l0)?;
        let next = overlapping(v, 1, &lo, &hi);
        return Some(job(v, vec![(0, l0.clone()), (1, next)], 1));
    }
    let mut best: Option<(f64, usize)> = None;
    let mut budget = shape.level1_bytes_max.max(1);
    for level in 1..last {
        let score = v.level_bytes(level) as f64 / budget as f64;
        if score > 1.0 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, level));
        }
        budget = budget.saturating_mul(shape.level_size_ratio.max(2));
    }
    let (_, level) = best?;
    let tables = v.levels.get(level)?;
    let pointer = pointers.get(level).cloned().unwrap_or_default();
    let table = tables
        .iter()
        .find(|t| t.meta.smallest.as_ref() > pointer.as_slice())
        .or_else(|| tables.first())?
        .clone();
    if let Some(p) = pointers.get_mut(level) {
        *p = table.meta.largest.to_vec();
    }
    let (lo, hi) = (table.meta.smallest.to_vec(), table.meta.largest.to_vec());
    let next = overlapping(v, level + 1, &lo, &hi);
    Some(job(
        v,
        vec![(level, vec![table]), (level + 1, next)],
        level + 1,
    ))
}

/// A job over `inputs`. Whether it is "bottom" (tombstones may go) is judged over the key range
/// of every input, not only of the tables that triggered it: the overlapping tables of the next
/// level can reach further, and a tombstone out there must stay while a deeper level still
/// holds an older version of its key.
fn job(v: &Version, inputs: Vec<(usize, Vec<Arc<Table>>)>, output_level: usize) -> Job {
    let all: Vec<Arc<Table>> = inputs
        .iter()
        .flat_map(|(_, ts)| ts.iter().cloned())
        .collect();
    let bottom = match key_range(&all) {
        Some((lo, hi)) => is_bottom(v, output_level, &lo, &hi),
        None => true,
    };
    Job {
        inputs,
        output_level,
        bottom,
    }
}

/// Everything in the tree merged into its deepest used level (at least level 1).
pub(crate) fn pick_full(v: &Version) -> Option<Job> {
    let inputs: Vec<(usize, Vec<Arc<Table>>)> = v
        .levels
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i, l.clone()))
        .collect();
    let deepest = inputs
        .last()?
        .0
        .max(1)
        .min(v.levels.len().saturating_sub(1));
    Some(Job {
        inputs,
        output_level: deepest,
        bottom: true,
    })
}

/// Where merged output goes.
pub(crate) struct Output<'a> {
    pub fs: &'a dyn Fs,
    pub dir: &'a std::path::Path,
    pub block_bytes: usize,
    pub bloom_bits_per_key: u32,
    pub table_bytes_max: u64,
    pub bytes_per_sec: Option<u64>,
}

/// Merges the job's inputs and writes new tables. `alloc` hands out file numbers; `watermark`
/// is the oldest sequence number a reader may still ask for. Returns the new tables, opened.
pub(crate) async fn run<F>(
    job: &Job,
    out: Output<'_>,
    watermark: u64,
    mut alloc: F,
) -> Result<Vec<Arc<Table>>>
where
    F: FnMut() -> futures::future::BoxFuture<'static, u64>,
{
    let mut sources = Vec::new();
    for (level, tables) in &job.inputs {
        if *level == 0 {
            sources.extend(
                tables
                    .iter()
                    .map(|t| Source::Table(TableIter::new(t.clone(), None))),
            );
        } else if !tables.is_empty() {
            sources.push(Source::Level(LevelIter::new(tables.clone(), None)));
        }
    }
    let mut merge = MergeIter::new(sources);
    merge.seek(None).await?;

    let mut limiter = out.bytes_per_sec.map(RateLimiter::new);
    let mut done: Vec<Arc<Table>> = Vec::new();
    let mut writer: Option<TableWriter> = None;
    let mut written_numbers = Vec::new();
    let mut last_user: Option<Vec<u8>> = None;
    let mut newest_below_kept = false;
    let mut ikey = Vec::new();
    let mut merged = 0u64;

    let result: Result<()> = async {
        while let Some((cur, value)) = merge.current() {
            let new_user = last_user.as_deref() != Some(cur.user);
            if new_user {
                let l = last_user.get_or_insert_with(Vec::new);
                l.clear();
                l.extend_from_slice(cur.user);
                newest_below_kept = false;
                // Cut only between user keys, so a level never splits one key's versions.
                if writer
                    .as_ref()
                    .is_some_and(|w| w.estimated_len() >= out.table_bytes_max)
                {
                    if let Some(w) = writer.take() {
                        let number = w.number;
                        let (size, _) = w.finish(&mut limiter).await?;
                        done.push(Arc::new(Table::open(out.fs, out.dir, number, size).await?));
                    }
                }
            }
            let keep = if cur.seqno > watermark {
                true
            } else if newest_below_kept {
                false // shadowed by a newer version every reader can see
            } else {
                newest_below_kept = true;
                !(cur.kind == Kind::Delete && job.bottom)
            };
            if keep {
                if writer.is_none() {
                    let number = alloc().await;
                    written_numbers.push(number);
                    writer = Some(
                        TableWriter::create(
                            out.fs,
                            out.dir,
                            number,
                            out.block_bytes,
                            out.bloom_bits_per_key,
                        )
                        .await?,
                    );
                }
                ikey.clear();
                push_internal_key(&mut ikey, cur.user, cur.seqno, cur.kind);
                if let Some(w) = &mut writer {
                    w.add(&ikey, value, &mut limiter).await?;
                }
            }
            merge.next().await?;
            merged += 1;
            if merged & (YIELD_EVERY_ENTRIES - 1) == 0 {
                // Merging cached blocks never waits on I/O; give foreground tasks their turn.
                tokio::task::yield_now().await;
            }
        }
        if let Some(w) = writer.take() {
            let number = w.number;
            let (size, _) = w.finish(&mut limiter).await?;
            done.push(Arc::new(Table::open(out.fs, out.dir, number, size).await?));
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // Nothing names the half-written outputs; remove them now (open removes any left).
        for n in written_numbers {
            let _ = out
                .fs
                .remove_file(&super::table::table_path(out.dir, n))
                .await;
        }
        return Err(e);
    }
    Ok(done)
}
