//! Versions: the immutable picture of the tree a reader works from. A [`Version`] is the set of
//! live tables per level plus what they make durable; a [`SuperVersion`] adds the memtables.
//! Readers clone an `Arc<SuperVersion>` and never take a lock again for the rest of the read.
//!
//! What must stay true:
//! - Level 0 is ordered newest first and its tables may overlap; every level ≥ 1 is sorted by
//!   key and its tables are disjoint in user keys (no user key spans two tables of a level).
//! - For any user key, every version in level `n` is newer than every version in level `n+1`,
//!   and every version in a memtable is newer than every version in a table. That is what lets
//!   a point lookup stop at the first source holding the key.
//! - A version changes only under the manifest lock, and only after the manifest naming its
//!   tables is durable.

use std::sync::Arc;

use super::format::{ManifestData, ManifestFile};
use super::memtable::Memtable;
use super::table::Table;

#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub levels: Vec<Vec<Arc<Table>>>,
    pub durable_log_position: u64,
    pub last_seqno: u64,
}

impl Version {
    pub fn to_manifest(&self, next_file_number: u64) -> ManifestData {
        ManifestData {
            next_file_number,
            durable_log_position: self.durable_log_position,
            last_seqno: self.last_seqno,
            levels: self
                .levels
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|t| ManifestFile {
                            number: t.number,
                            size: t.size,
                        })
                        .collect()
                })
                .collect(),
        }
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels
            .get(level)
            .map_or(0, |l| l.iter().map(|t| t.size).sum())
    }

    /// Removes the tables numbered in `gone` and adds `added` to `level` (kept sorted by key).
    pub fn apply_compaction(&mut self, gone: &[u64], level: usize, added: Vec<Arc<Table>>) {
        for l in &mut self.levels {
            l.retain(|t| !gone.contains(&t.number));
        }
        if let Some(l) = self.levels.get_mut(level) {
            l.extend(added);
            l.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SuperVersion {
    pub active: Arc<Memtable>,
    /// Newest first.
    pub immutables: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}
