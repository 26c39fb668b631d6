//! The commit oracle: sequence numbers, the read snapshots of open transactions, and the
//! recently committed keys that write-write conflicts are checked against (as Badger's oracle).
//!
//! What must stay true:
//! - A key is in `recent` with the seqno of its last commit for as long as some open
//!   transaction's snapshot is below that seqno; entries at or below the oldest open snapshot
//!   (or the published seqno when none is open) can never conflict again and are pruned.
//! - Everything here runs under one short lock: conflict check, seqno assignment, recording the
//!   keys and handing the record to the commit-log writer, so that log order is seqno order.
//!   Nothing under the lock waits for I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use super::TableId;

#[derive(Debug, Default)]
pub(crate) struct Oracle {
    /// The seqno the next commit (or table creation) gets.
    pub next_seq: u64,
    /// The seqno of the last commit handed to the writer (tables' creation seqnos excluded).
    pub last_commit_seq: u64,
    /// Read seqnos of open transactions, with how many share each.
    active: BTreeMap<u64, usize>,
    recent: HashMap<(TableId, Bytes), u64>,
    /// Commits in `recent`, oldest first, for pruning in seqno order.
    recent_log: VecDeque<(u64, Vec<(TableId, Bytes)>)>,
}

impl Oracle {
    pub fn new(next_seq: u64, last_commit_seq: u64) -> Self {
        Oracle {
            next_seq,
            last_commit_seq,
            ..Oracle::default()
        }
    }

    pub fn register(&mut self, read_seq: u64) {
        *self.active.entry(read_seq).or_insert(0) += 1;
    }

    pub fn deregister(&mut self, read_seq: u64) {
        if let Some(n) = self.active.get_mut(&read_seq) {
            *n -= 1;
            if *n == 0 {
                self.active.remove(&read_seq);
            }
        }
    }

    /// The oldest seqno an open transaction reads at, or `visible` when none is open: no
    /// transaction, present or future, reads below it.
    pub fn watermark(&self, visible: u64) -> u64 {
        self.active.keys().next().copied().unwrap_or(visible)
    }

    /// The first key (in the given order) committed by another transaction after the seqno
    /// given with it (the snapshot it was read at).
    pub fn first_conflict<'a>(
        &self,
        keys: impl Iterator<Item = (TableId, &'a Bytes, u64)>,
    ) -> Option<(TableId, Bytes)> {
        if self.recent.is_empty() {
            return None;
        }
        let mut probe = (0, Bytes::new());
        for (t, k, since) in keys {
            probe.0 = t;
            probe.1 = k.clone();
            if self.recent.get(&probe).is_some_and(|&s| s > since) {
                return Some(probe);
            }
        }
        None
    }

    pub fn record_commit(&mut self, seq: u64, keys: Vec<(TableId, Bytes)>) {
        for k in &keys {
            self.recent.insert(k.clone(), seq);
        }
        self.recent_log.push_back((seq, keys));
        self.last_commit_seq = seq;
    }

    /// Forgets commits at or below `watermark`.
    pub fn prune(&mut self, watermark: u64) {
        while self
            .recent_log
            .front()
            .is_some_and(|(seq, _)| *seq <= watermark)
        {
            let Some((seq, keys)) = self.recent_log.pop_front() else {
                break;
            };
            for k in keys {
                if self.recent.get(&k) == Some(&seq) {
                    self.recent.remove(&k);
                }
            }
        }
    }

    /// Keys tracked for conflict checks (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_conflicts_only_with_snapshots_before_its_commit_and_is_pruned() {
        let mut o = Oracle::new(1, 0);
        let k = Bytes::from_static(b"k");
        o.register(0);
        o.record_commit(5, vec![(1, k.clone())]);
        assert!(o.first_conflict([(1, &k, 4)].into_iter()).is_some());
        assert!(o.first_conflict([(1, &k, 5)].into_iter()).is_none());
        assert!(o.first_conflict([(2, &k, 4)].into_iter()).is_none());
        o.prune(o.watermark(5));
        assert_eq!(o.tracked_keys(), 1, "snapshot 0 is still open");
        o.deregister(0);
        o.prune(o.watermark(5));
        assert_eq!(o.tracked_keys(), 0);
    }
}
