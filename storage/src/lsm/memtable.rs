//! The memtable: every applied version not yet in an SSTable, ordered like an SSTable
//! (user key ascending, sequence number descending).
//!
//! Why a lock-free skip list (crossbeam-skiplist) and not a `BTreeMap` behind a lock: there is
//! one writer (batches are applied in commit order) and many readers; with the skip list a
//! point lookup or a scan never waits for the writer and the writer never waits for a long
//! scan, and a scan can walk the live table without copying it.
//!
//! The list is crossbeam's `base::SkipList`, not its `SkipMap` wrapper: the wrapper pins the
//! epoch and counts a reference on every entry an iterator steps over, while here a walk pins
//! once per chunk and borrows entries under that pin (a scan's memtable steps cost a third
//! as much).
//!
//! What must stay true: a memtable only grows while it is active; once it is immutable (queued
//! for flush) it never changes, so a flush and any reader see the same contents.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtOrd};

use bytes::Bytes;
use crossbeam_epoch as epoch;
use crossbeam_skiplist::SkipList;

use super::iter::cmp_key;

/// A memtable key: user key ascending, then seqno descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemKey {
    pub user: Bytes,
    pub seqno: u64,
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.user
            .cmp(&other.user)
            .then_with(|| other.seqno.cmp(&self.seqno))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A borrowed view of a memtable key, so that a point lookup can probe the skip list with the
/// caller's `&[u8]` instead of allocating a `MemKey` (the map accepts any `Q` its key borrows
/// as, and `dyn KeyView` orders exactly like `MemKey`).
pub(crate) trait KeyView {
    fn user(&self) -> &[u8];
    fn seqno(&self) -> u64;
}

impl KeyView for MemKey {
    fn user(&self) -> &[u8] {
        &self.user
    }
    fn seqno(&self) -> u64 {
        self.seqno
    }
}

impl KeyView for (&[u8], u64) {
    fn user(&self) -> &[u8] {
        self.0
    }
    fn seqno(&self) -> u64 {
        self.1
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.user() == other.user() && self.seqno() == other.seqno()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.user()
            .cmp(other.user())
            .then_with(|| other.seqno().cmp(&self.seqno()))
    }
}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for MemKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

/// Bytes charged per entry on top of key and value (skip-list node, `Bytes` headers).
const ENTRY_OVERHEAD_BYTES: usize = 64;

#[derive(Debug)]
pub(crate) struct Memtable {
    /// Increasing id, to tell memtables apart in flush bookkeeping.
    pub id: u64,
    map: SkipList<MemKey, Option<Bytes>>,
    bytes: AtomicUsize,
    /// Versions inserted.
    len: AtomicUsize,
    /// Highest log position applied to this memtable (0 = none).
    max_log_position: AtomicU64,
    max_seqno: AtomicU64,
}

impl Memtable {
    pub fn new(id: u64) -> Self {
        Memtable {
            id,
            map: SkipList::new(epoch::default_collector().clone()),
            bytes: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            max_log_position: AtomicU64::new(0),
            max_seqno: AtomicU64::new(0),
        }
    }

    /// Only the single writer calls this (under the LSM's write lock).
    pub fn insert(&self, user: Bytes, seqno: u64, value: Option<Bytes>) {
        let charge = user.len() + value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD_BYTES;
        let guard = &epoch::pin();
        self.map
            .insert(MemKey { user, seqno }, value, guard)
            .release(guard);
        self.bytes.fetch_add(charge, AtOrd::Relaxed);
        self.len.fetch_add(1, AtOrd::Relaxed);
    }

    /// Versions the memtable holds.
    pub fn len(&self) -> usize {
        self.len.load(AtOrd::Relaxed)
    }

    /// Records that a whole batch (possibly empty) was applied: a flush of this memtable makes
    /// the log durable up to `log_position` and the tree up to `seqno`.
    pub fn note_batch(&self, seqno: u64, log_position: u64) {
        self.max_seqno.fetch_max(seqno, AtOrd::Relaxed);
        self.max_log_position
            .fetch_max(log_position, AtOrd::Relaxed);
    }

    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtOrd::Relaxed)
    }

    pub fn max_log_position(&self) -> u64 {
        self.max_log_position.load(AtOrd::Relaxed)
    }

    pub fn max_seqno(&self) -> u64 {
        self.max_seqno.load(AtOrd::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The newest version of `user` with seqno <= `read_seq`: `Some(None)` is a tombstone.
    pub fn get(&self, user: &[u8], read_seq: u64) -> Option<Option<Bytes>> {
        let probe: (&[u8], u64) = (user, read_seq);
        let guard = &epoch::pin();
        let e = self
            .map
            .lower_bound(Bound::Included(&probe as &dyn KeyView), guard)?;
        if e.key().user != user {
            return None;
        }
        Some(e.value().clone())
    }

    /// The first and last user keys in `(start, end)`, if the memtable holds any.
    pub fn first_last(&self, start: &Bound<Bytes>, end: &Bound<Bytes>) -> Option<(Bytes, Bytes)> {
        // Versions of one key sort seqno descending: (k, MAX) is before all of them, (k, 0)
        // after all of them.
        let lo: Option<(&[u8], u64)> = match start {
            Bound::Included(k) => Some((k.as_ref(), u64::MAX)),
            Bound::Excluded(k) => Some((k.as_ref(), 0)),
            Bound::Unbounded => None,
        };
        let guard = &epoch::pin();
        let first = match (&lo, start) {
            (Some(p), Bound::Excluded(_)) => self
                .map
                .lower_bound(Bound::Excluded(p as &dyn KeyView), guard),
            (Some(p), _) => self
                .map
                .lower_bound(Bound::Included(p as &dyn KeyView), guard),
            (None, _) => self.map.front(guard),
        }?;
        let hi: Option<(&[u8], u64)> = match end {
            Bound::Included(k) => Some((k.as_ref(), 0)),
            Bound::Excluded(k) => Some((k.as_ref(), u64::MAX)),
            Bound::Unbounded => None,
        };
        let last = match (&hi, end) {
            (Some(p), Bound::Excluded(_)) => self
                .map
                .upper_bound(Bound::Excluded(p as &dyn KeyView), guard),
            (Some(p), _) => self
                .map
                .upper_bound(Bound::Included(p as &dyn KeyView), guard),
            (None, _) => self.map.back(guard),
        }?;
        let (first, last) = (first.key().user.clone(), last.key().user.clone());
        (first <= last).then_some((first, last))
    }

    /// Up to `max` entries from `from` on, in order, stopping past `end`, copied into `out`.
    /// Used by scans and flushes to walk the table in chunks without holding a borrow across
    /// `.await`.
    pub fn chunk(&self, from: Bound<&MemKey>, end: Bound<&Bytes>, max: usize, out: &mut MemChunk) {
        let guard = &epoch::pin();
        for e in self
            .map
            .range::<MemKey, _>((from, Bound::Unbounded), guard)
            .take(max)
        {
            let past = match end {
                Bound::Included(k) => cmp_key(&e.key().user, k) == Ordering::Greater,
                Bound::Excluded(k) => cmp_key(&e.key().user, k) != Ordering::Less,
                Bound::Unbounded => false,
            };
            if past {
                break;
            }
            out.push(&e.key().user, e.key().seqno, e.value().as_deref());
        }
    }
}

/// Entries copied out of a memtable, keys and values back to back in one reused buffer: a
/// copy of a short row costs less than the reference counts (and, the first time, the
/// allocation that makes a `Bytes` shareable) of cloning its key and value.
#[derive(Debug, Default)]
pub(crate) struct MemChunk {
    bytes: Vec<u8>,
    entries: std::collections::VecDeque<ChunkEntry>,
}

/// One entry of a [`MemChunk`], borrowed: user key, seqno, value (`None`: a tombstone).
pub(crate) type ChunkItem<'a> = (&'a [u8], u64, Option<&'a [u8]>);

#[derive(Debug, Clone, Copy)]
struct ChunkEntry {
    key: (usize, usize),
    seqno: u64,
    /// `None`: a tombstone.
    value: Option<(usize, usize)>,
}

impl MemChunk {
    fn push(&mut self, user: &[u8], seqno: u64, value: Option<&[u8]>) {
        let k = self.bytes.len();
        self.bytes.extend_from_slice(user);
        let key = (k, self.bytes.len());
        let value = value.map(|v| {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(v);
            (at, self.bytes.len())
        });
        self.entries.push_back(ChunkEntry { key, seqno, value });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every entry, keeping the buffers.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
    }

    /// The first entry: user key, seqno, value (`None` for a tombstone).
    pub fn front(&self) -> Option<ChunkItem<'_>> {
        let e = self.entries.front()?;
        let user = self.bytes.get(e.key.0..e.key.1).unwrap_or(&[]);
        let value = e.value.map(|(a, b)| self.bytes.get(a..b).unwrap_or(&[]));
        Some((user, e.seqno, value))
    }

    /// Drops the first entry; the buffer is reused once the chunk is empty.
    pub fn pop_front(&mut self) {
        self.entries.pop_front();
        if self.entries.is_empty() {
            self.bytes.clear();
        }
    }
}
