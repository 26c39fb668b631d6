//! Iterators: one per source (memtable, table, level of tables), a merge over them in internal
//! key order, and [`Scan`], the user-facing range scan that keeps the newest version at or
//! below its read sequence number and hides tombstones.
//!
//! What must stay true: sources are listed newest first (active memtable, immutable memtables
//! newest first, level-0 tables newest first, then levels 1, 2, …), and when two sources hold
//! the same (user key, seqno) the earlier one wins; versions of one user key come out newest
//! first.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::cache::ScanCache;
use super::format::{push_internal_key, split_internal_key, user_key, Kind, SEQNO_MAX};
use super::memtable::{MemChunk, MemKey, Memtable};
use super::table::{Table, TableIter};
use crate::error::Result;

/// Smallest and largest memtable chunk copied per refill: start small so that a short scan
/// copies little, grow so that a long scan touches the skip list rarely.
const MEM_CHUNK_MIN: usize = 16;
const MEM_CHUNK_MAX: usize = 1024;

/// One version as a source currently shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current<'a> {
    pub user: &'a [u8],
    pub seqno: u64,
    pub kind: Kind,
}

/// Walks one memtable in chunks, so no borrow of the skip list lives across an `.await`.
pub(crate) struct MemIter {
    mem: Arc<Memtable>,
    buf: MemChunk,
    /// The last entry of the chunk just used up, where the next chunk starts after.
    last: Option<MemKey>,
    end: Bound<Bytes>,
    chunk: usize,
    done: bool,
}

impl MemIter {
    pub fn new(mem: Arc<Memtable>, end: Bound<Bytes>) -> Self {
        MemIter {
            mem,
            buf: MemChunk::default(),
            last: None,
            end,
            chunk: MEM_CHUNK_MIN,
            done: false,
        }
    }

    fn refill(&mut self, from: Bound<&MemKey>) {
        let before = self.buf.len();
        self.mem
            .chunk(from, self.end.as_ref(), self.chunk, &mut self.buf);
        if self.buf.len() - before < self.chunk {
            self.done = true;
        }
        self.chunk = (self.chunk * 2).min(MEM_CHUNK_MAX);
    }

    fn seek(&mut self, from: Option<MemKey>) {
        self.buf.clear();
        self.done = false;
        self.chunk = MEM_CHUNK_MIN;
        match &from {
            Some(k) => self.refill(Bound::Included(k)),
            None => self.refill(Bound::Unbounded),
        }
        self.last = None;
    }

    fn next(&mut self) {
        if self.buf.len() == 1 {
            // The chunk's last entry: the next chunk starts after it.
            self.last = self.buf.front().map(|(user, seqno, _)| MemKey {
                user: Bytes::copy_from_slice(user),
                seqno,
            });
        }
        self.buf.pop_front();
        if self.buf.is_empty() && !self.done {
            if let Some(last) = self.last.take() {
                self.refill(Bound::Excluded(&last));
                self.last = Some(last);
            }
        }
    }

    fn current(&self) -> Option<(Current<'_>, &[u8])> {
        self.buf.front().map(|(user, seqno, v)| {
            let kind = if v.is_some() { Kind::Put } else { Kind::Delete };
            (Current { user, seqno, kind }, v.unwrap_or(&[]))
        })
    }

    fn current_value(&self) -> Option<Bytes> {
        self.buf
            .front()
            .map(|(_, _, v)| Bytes::copy_from_slice(v.unwrap_or(&[])))
    }
}

/// The tables of one level ≥ 1 (sorted, disjoint) walked as one sequence, opening each table
/// only when the walk reaches it.
pub(crate) struct LevelIter {
    tables: Vec<Arc<Table>>,
    next_table: usize,
    cur: Option<TableIter>,
    cache: Option<ScanCache>,
}

impl LevelIter {
    pub fn new(tables: Vec<Arc<Table>>, cache: Option<ScanCache>) -> Self {
        LevelIter {
            tables,
            next_table: 0,
            cur: None,
            cache,
        }
    }

    async fn open_next(&mut self) -> Result<()> {
        while !self.cur.as_ref().is_some_and(|t| t.valid()) {
            let Some(t) = self.tables.get(self.next_table) else {
                self.cur = None;
                return Ok(());
            };
            self.next_table += 1;
            let mut it = TableIter::new(t.clone(), self.cache.clone());
            it.seek_to_first().await?;
            self.cur = Some(it);
        }
        Ok(())
    }

    async fn seek(&mut self, target: Option<&[u8]>) -> Result<()> {
        let Some(target) = target else {
            self.next_table = 0;
            self.cur = None;
            return self.open_next().await;
        };
        let user = user_key(target);
        let i = self
            .tables
            .partition_point(|t| t.meta.largest.as_ref() < user);
        self.cur = None;
        self.next_table = i + 1;
        if let Some(t) = self.tables.get(i) {
            let mut it = TableIter::new(t.clone(), self.cache.clone());
            it.seek(target).await?;
            self.cur = Some(it);
        }
        self.open_next().await
    }

    async fn next(&mut self) -> Result<()> {
        if let Some(t) = &mut self.cur {
            t.next().await?;
        }
        self.open_next().await
    }

    /// [`next`](Self::next) when it stays inside the current block; `false`: nothing done.
    fn next_in_block(&mut self) -> Result<bool> {
        match &mut self.cur {
            Some(t) => t.next_in_block(),
            None => Ok(false),
        }
    }
}

/// A source of versions in internal-key order.
pub(crate) enum Source {
    Mem(MemIter),
    Table(TableIter),
    Level(LevelIter),
}

impl Source {
    /// The table iterator the source is at, when it is a table's.
    fn table_iter(&self) -> Option<&TableIter> {
        match self {
            Source::Mem(_) => None,
            Source::Table(t) => Some(t),
            Source::Level(l) => l.cur.as_ref(),
        }
    }

    fn table_iter_mut(&mut self) -> Option<&mut TableIter> {
        match self {
            Source::Mem(_) => None,
            Source::Table(t) => Some(t),
            Source::Level(l) => l.cur.as_mut(),
        }
    }

    /// The current version and its value, borrowed: a scan copies or counts a value only
    /// when it hands the row out.
    fn current(&self) -> Option<(Current<'_>, &[u8])> {
        fn table_current(t: &TableIter) -> Option<(Current<'_>, &[u8])> {
            t.entry().and_then(|(k, b)| {
                split_internal_key(k)
                    .map(|(user, seqno, kind)| (Current { user, seqno, kind }, b.value_slice()))
            })
        }
        match self {
            Source::Mem(m) => m.current(),
            Source::Table(t) => table_current(t),
            Source::Level(l) => l.cur.as_ref().and_then(table_current),
        }
    }

    /// The current value as owned bytes (a reference count, not a copy).
    fn current_value(&self) -> Option<Bytes> {
        match self {
            Source::Mem(m) => m.current_value(),
            Source::Table(t) => t.entry().map(|(_, b)| b.value()),
            Source::Level(l) => l
                .cur
                .as_ref()
                .and_then(|t| t.entry())
                .map(|(_, b)| b.value()),
        }
    }

    fn current_key(&self) -> Option<(&[u8], u64)> {
        match self {
            Source::Mem(m) => m.buf.front().map(|(user, seqno, _)| (user, seqno)),
            Source::Table(t) => t
                .entry()
                .and_then(|(k, _)| split_internal_key(k))
                .map(|(u, s, _)| (u, s)),
            Source::Level(l) => l
                .cur
                .as_ref()
                .and_then(|t| t.entry())
                .and_then(|(k, _)| split_internal_key(k))
                .map(|(u, s, _)| (u, s)),
        }
    }

    /// Positions at the first version with internal key `>= (user, seqno)`, or at the start.
    async fn seek(&mut self, target: Option<(&[u8], u64)>) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.seek(target.map(|(u, s)| MemKey {
                    user: Bytes::copy_from_slice(u),
                    seqno: s,
                }));
                Ok(())
            }
            Source::Table(t) => match target {
                Some((u, s)) => t.seek(&ikey(u, s)).await,
                None => t.seek_to_first().await,
            },
            Source::Level(l) => match target {
                Some((u, s)) => l.seek(Some(&ikey(u, s))).await,
                None => l.seek(None).await,
            },
        }
    }

    async fn next(&mut self) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.next();
                Ok(())
            }
            Source::Table(t) => t.next().await,
            Source::Level(l) => l.next().await,
        }
    }

    /// [`next`](Self::next) without `.await` when no block has to be fetched (a memtable
    /// step never needs one); `false`: nothing done, call `next`.
    fn next_sync(&mut self) -> Result<bool> {
        match self {
            Source::Mem(m) => {
                m.next();
                Ok(true)
            }
            Source::Table(t) => t.next_in_block(),
            Source::Level(l) => l.next_in_block(),
        }
    }
}

fn ikey(user: &[u8], seqno: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 8);
    push_internal_key(&mut k, user, seqno, Kind::Put);
    k
}

fn cmp_version(a: (&[u8], u64), b: (&[u8], u64)) -> Ordering {
    cmp_key(a.0, b.0).then_with(|| b.1.cmp(&a.1))
}

/// Byte-wise order of two user keys, compared inline when they are short, as row keys mostly
/// are: a long scan compares keys several times per row (the merge, the range end, the
/// versions of one key), and a `memcmp` call for each was a third of its CPU.
#[inline]
pub(crate) fn cmp_key(a: &[u8], b: &[u8]) -> Ordering {
    if a.len().min(b.len()) > 16 {
        return a.cmp(b);
    }
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Whether two user keys are equal (see [`cmp_key`]).
#[inline]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && cmp_key(a, b) == Ordering::Equal
}

/// Merges sources (newest first) into one internal-key-ordered sequence. A linear pick over
/// the sources: there are few (memtables + level-0 tables + one per level), so a heap would
/// save little and cost an owned key per entry.
///
/// The pick also remembers the runner-up (the smallest version among the other sources).
/// Stepping moves only the current source, so the others keep their places: while the
/// current source's next version stays below the runner-up it is still the smallest, found
/// with one comparison instead of a pass over every source. When sources cover disjoint key
/// ranges (rows loaded in key order, flushed into tables one after another) almost every step
/// takes that path.
pub(crate) struct MergeIter {
    sources: Vec<Source>,
    cur: Option<usize>,
    /// The source holding the smallest version after `cur`'s, when there is one.
    runner_up: Option<usize>,
    /// `cur`'s version is known to be strictly below the runner-up's: no other source holds
    /// the same version, so a step needs no duplicate check.
    below_runner_up: bool,
    /// The current user key while stepping past it (reused: no allocation per entry).
    scratch: Vec<u8>,
}

impl MergeIter {
    pub fn new(sources: Vec<Source>) -> Self {
        MergeIter {
            sources,
            cur: None,
            runner_up: None,
            below_runner_up: false,
            scratch: Vec::new(),
        }
    }

    fn pick(&mut self) {
        let mut best: Option<(usize, (&[u8], u64))> = None;
        let mut second: Option<(usize, (&[u8], u64))> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if let Some(k) = s.current_key() {
                if best.is_none_or(|(_, b)| cmp_version(k, b) == Ordering::Less) {
                    second = best;
                    best = Some((i, k));
                } else if second.is_none_or(|(_, b)| cmp_version(k, b) == Ordering::Less) {
                    second = Some((i, k));
                }
            }
        }
        self.below_runner_up = match (best, second) {
            (Some((_, b)), Some((_, s))) => cmp_version(b, s) == Ordering::Less,
            _ => true,
        };
        self.cur = best.map(|(i, _)| i);
        self.runner_up = second.map(|(i, _)| i);
    }

    pub async fn seek(&mut self, target: Option<(&[u8], u64)>) -> Result<()> {
        for s in &mut self.sources {
            s.seek(target).await?;
        }
        self.pick();
        Ok(())
    }

    pub fn current(&self) -> Option<(Current<'_>, &[u8])> {
        self.cur
            .and_then(|i| self.sources.get(i))
            .and_then(|s| s.current())
    }

    /// The current value as owned bytes.
    pub fn current_value(&self) -> Option<Bytes> {
        self.cur
            .and_then(|i| self.sources.get(i))
            .and_then(|s| s.current_value())
    }

    /// Steps past the current version; a later source holding the very same version (which
    /// should not happen, but costs nothing to tolerate) is stepped past too.
    pub async fn next(&mut self) -> Result<()> {
        if self.next_sync()? {
            return Ok(());
        }
        let Some(i) = self.cur else { return Ok(()) };
        // Only the runner-up can hold the same version: every other source is above it.
        let duplicate = match (
            self.sources.get(i).and_then(|s| s.current_key()),
            self.runner_up
                .and_then(|r| self.sources.get(r))
                .and_then(|s| s.current_key()),
        ) {
            (None, _) => return Ok(()),
            (Some(c), Some(r)) => cmp_version(c, r) == Ordering::Equal,
            (Some(_), None) => false,
        };
        if duplicate {
            return self.next_all(i).await;
        }
        if let Some(s) = self.sources.get_mut(i) {
            s.next().await?;
        }
        self.after_step(i);
        Ok(())
    }

    /// [`next`](Self::next) when it needs no `.await` (the current source's next version is
    /// in memory, and no other source holds the same version): `true` when done, `false`
    /// with nothing done. A long scan takes almost every step here, as plain calls.
    fn next_sync(&mut self) -> Result<bool> {
        let Some(i) = self.cur else { return Ok(true) };
        if !self.below_runner_up {
            let runner_up = self
                .runner_up
                .and_then(|r| self.sources.get(r))
                .and_then(|s| s.current_key());
            match (self.sources.get(i).and_then(|s| s.current_key()), runner_up) {
                (None, _) => return Ok(true),
                (Some(c), Some(r)) if cmp_version(c, r) == Ordering::Equal => return Ok(false),
                _ => {}
            }
        }
        let Some(s) = self.sources.get_mut(i) else {
            return Ok(true);
        };
        if !s.next_sync()? {
            return Ok(false);
        }
        self.after_step(i);
        Ok(true)
    }

    /// After source `i` (the current one) stepped: it stays current while its version is
    /// still below the runner-up's (one comparison), else every source is looked at again.
    fn after_step(&mut self, i: usize) {
        let still_smallest = match (
            self.sources.get(i).and_then(|s| s.current_key()),
            self.runner_up
                .and_then(|r| self.sources.get(r))
                .and_then(|s| s.current_key()),
        ) {
            (Some(c), Some(r)) => cmp_version(c, r) == Ordering::Less,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if still_smallest {
            self.below_runner_up = true;
        } else {
            self.pick();
        }
    }

    /// Steps every source from `i` on that holds the current version, then picks again.
    async fn next_all(&mut self, i: usize) -> Result<()> {
        let seqno = match self.sources.get(i).and_then(|s| s.current_key()) {
            Some((u, s)) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(u);
                s
            }
            None => return Ok(()),
        };
        let key = std::mem::take(&mut self.scratch);
        for s in self.sources.iter_mut().skip(i) {
            if s.current_key()
                .is_some_and(|k| cmp_version(k, (&key, seqno)) == Ordering::Equal)
            {
                s.next().await?;
            }
        }
        self.scratch = key;
        self.pick();
        Ok(())
    }
}

/// Records `user` as the last key a scan has seen.
#[inline]
fn remember_key(last: &mut Option<Vec<u8>>, user: &[u8]) {
    let l = last.get_or_insert_with(Vec::new);
    if user.len() <= 16 {
        // Byte by byte: a `memcpy` call per row cost more than the copy. Row keys of one
        // table mostly have one length, so the buffer is overwritten in place.
        if l.len() != user.len() {
            l.resize(user.len(), 0);
        }
        for (d, s) in l.iter_mut().zip(user) {
            *d = *s;
        }
    } else {
        l.clear();
        l.extend_from_slice(user);
    }
}

/// Why [`Scan::visit_in_memory`] stopped.
enum Pause {
    /// `rows_max` rows handed out, or the end of the range.
    Done,
    /// The current version is used up and the step past it needs `.await`.
    Step,
    /// As `Step`, and `visit` asked to stop.
    StepThenDone,
}

/// What [`Scan::block_run`] did.
enum Run {
    /// Nothing: the block does not qualify; take the merge's way.
    No,
    /// Stop the in-memory loop, as [`Scan::visit_in_memory`] would.
    Pause(Pause),
}

/// What the merge's current version is to a scan.
enum Verdict {
    /// The end of the range (or of every source).
    End,
    /// The row to hand out.
    Row,
    /// An older version, one the snapshot does not see, or a tombstone.
    Skip,
}

/// A range scan at one read sequence number: yields `(key, value)` for the newest version of
/// each key at or below `read_seq`, skipping keys whose newest such version is a tombstone.
/// Holds the tables and memtables it started with, so compaction and flush do not disturb it.
pub struct Scan {
    merge: MergeIter,
    read_seq: u64,
    start: Bound<Bytes>,
    end: Bound<Bytes>,
    last_user: Option<Vec<u8>>,
    started: bool,
    done: bool,
    /// The block (table file number, offset) [`Scan::block_run`] last looked at: a block
    /// that did not qualify is not looked at again on each of its rows.
    run_tried: Option<(u64, u64)>,
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("read_seq", &self.read_seq)
            .finish_non_exhaustive()
    }
}

impl Scan {
    pub(crate) fn new(
        sources: Vec<Source>,
        read_seq: u64,
        start: Bound<Bytes>,
        end: Bound<Bytes>,
    ) -> Self {
        Scan {
            merge: MergeIter::new(sources),
            read_seq,
            start,
            end,
            last_user: None,
            started: false,
            done: false,
            run_tried: None,
        }
    }

    /// The next `(key, value)` in key order, or `None` at the end of the range.
    pub async fn next(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        if !self.find().await? {
            return Ok(None);
        }
        let out = match (self.merge.current(), self.merge.current_value()) {
            (Some((cur, _)), Some(v)) => Some((Bytes::copy_from_slice(cur.user), v)),
            _ => None,
        };
        self.merge.next().await?;
        Ok(out)
    }

    /// The next value in key order, without copying out its key (a scan that needs only the
    /// rows saves an allocation per row).
    pub async fn next_value(&mut self) -> Result<Option<Bytes>> {
        if !self.find().await? {
            return Ok(None);
        }
        let out = self.merge.current_value();
        self.merge.next().await?;
        Ok(out)
    }

    /// Hands up to `rows_max` rows, in key order, to `visit` as borrowed `(key, value)`
    /// slices, and returns how many it handed over (0 only at the end of the range). Nothing
    /// is copied and no reference count is touched per row: a long scan that decodes each
    /// row into columns at once pays only the merge. `visit` returns `false` to stop early
    /// (the row it was given counts as read).
    pub async fn visit(
        &mut self,
        rows_max: usize,
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> bool + Send),
    ) -> Result<usize> {
        if self.done {
            return Ok(0);
        }
        self.start().await?;
        // A block a batch boundary cut short qualifies for the rest of its rows.
        self.run_tried = None;
        let mut n = 0;
        loop {
            match self.visit_in_memory(rows_max, &mut n, visit)? {
                Pause::Done => return Ok(n),
                Pause::Step => self.merge.next().await?,
                Pause::StepThenDone => {
                    self.merge.next().await?;
                    return Ok(n);
                }
            }
        }
    }

    /// The loop of [`visit`](Self::visit) as plain calls, for as long as every step finds its
    /// next version in memory (memtable entries, the current block of each table); it pauses
    /// when a step needs a block read, which `visit` does with `.await` before coming back.
    fn visit_in_memory(
        &mut self,
        rows_max: usize,
        n: &mut usize,
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> bool + Send),
    ) -> Result<Pause> {
        loop {
            if *n >= rows_max {
                return Ok(Pause::Done);
            }
            match self.block_run(rows_max, n, visit)? {
                Run::No => {}
                Run::Pause(p) => return Ok(p),
            }
            match self.classify() {
                Verdict::End => return Ok(Pause::Done),
                Verdict::Skip => {}
                Verdict::Row => {
                    let more = match self.merge.current() {
                        Some((cur, v)) => visit(cur.user, v),
                        None => false,
                    };
                    *n += 1;
                    if !more {
                        return Ok(if self.merge.next_sync()? {
                            Pause::Done
                        } else {
                            Pause::StepThenDone
                        });
                    }
                }
            }
            if !self.merge.next_sync()? {
                return Ok(Pause::Step);
            }
        }
    }

    /// Walks the current table block without the merge, when its whole rest comes before
    /// every other source's version and inside the range: rows loaded in key order sit in
    /// tables that do not overlap, so a long scan spends nearly all of its rows here, with no
    /// comparison against the other sources and no pass through the merge's layers per row.
    /// Each entry is judged as [`classify`](Self::classify) judges it (snapshot, newest
    /// version, tombstone). A block is looked at once (see `run_tried`).
    fn block_run(
        &mut self,
        rows_max: usize,
        n: &mut usize,
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> bool + Send),
    ) -> Result<Run> {
        let Scan {
            merge,
            read_seq,
            end,
            last_user,
            run_tried,
            ..
        } = self;
        let Some(i) = merge.cur else {
            return Ok(Run::No);
        };
        let Some((last, block)) = merge
            .sources
            .get(i)
            .and_then(Source::table_iter)
            .and_then(TableIter::block_bounds)
        else {
            return Ok(Run::No);
        };
        if *run_tried == Some(block) {
            return Ok(Run::No);
        }
        *run_tried = Some(block);
        if !merge.below_runner_up {
            return Ok(Run::No);
        }
        let Some((last_user_key, last_seqno, _)) = split_internal_key(last) else {
            return Ok(Run::No);
        };
        let runner_up = merge
            .runner_up
            .and_then(|r| merge.sources.get(r))
            .and_then(Source::current_key);
        let below =
            runner_up.is_none_or(|r| cmp_version((last_user_key, last_seqno), r) == Ordering::Less);
        let inside = match &*end {
            Bound::Included(e) => cmp_key(last_user_key, e) != Ordering::Greater,
            Bound::Excluded(e) => cmp_key(last_user_key, e) == Ordering::Less,
            Bound::Unbounded => true,
        };
        if !below || !inside {
            return Ok(Run::No);
        }
        let Some(mut run) = merge
            .sources
            .get_mut(i)
            .and_then(Source::table_iter_mut)
            .and_then(TableIter::block_run)
        else {
            return Ok(Run::No);
        };
        loop {
            let mut more = true;
            if let Some((user, seqno, kind)) = split_internal_key(run.block.key()) {
                let seen = last_user.as_deref().is_some_and(|l| same_key(l, user));
                if seqno <= *read_seq && !seen {
                    remember_key(last_user, user);
                    if kind == Kind::Put {
                        more = visit(user, run.block.value_slice());
                        *n += 1;
                    }
                }
            }
            // The block's last entry is stepped past by the merge, which reads the next block.
            let stepped = run.step()?;
            if !more {
                return Ok(Run::Pause(if stepped {
                    Pause::Done
                } else {
                    Pause::StepThenDone
                }));
            }
            if !stepped {
                return Ok(Run::Pause(Pause::Step));
            }
            if *n >= rows_max {
                return Ok(Run::Pause(Pause::Done));
            }
        }
    }

    /// Seeks to the start of the range, once.
    async fn start(&mut self) -> Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        match &self.start {
            Bound::Unbounded => self.merge.seek(None).await,
            Bound::Included(k) => self.merge.seek(Some((k, SEQNO_MAX))).await,
            Bound::Excluded(k) => {
                // Every version of `k` counts as already seen.
                self.last_user = Some(k.to_vec());
                self.merge.seek(Some((k, SEQNO_MAX))).await
            }
        }
    }

    /// What the merge's current version is to the scan; a row's key is recorded as seen, so
    /// its older versions are skipped.
    fn classify(&mut self) -> Verdict {
        let Some((cur, _)) = self.merge.current() else {
            self.done = true;
            return Verdict::End;
        };
        let past_end = match &self.end {
            Bound::Included(e) => cmp_key(cur.user, e) == Ordering::Greater,
            Bound::Excluded(e) => cmp_key(cur.user, e) != Ordering::Less,
            Bound::Unbounded => false,
        };
        if past_end {
            self.done = true;
            return Verdict::End;
        }
        let seen = self
            .last_user
            .as_deref()
            .is_some_and(|l| same_key(l, cur.user));
        if cur.seqno <= self.read_seq && !seen {
            remember_key(&mut self.last_user, cur.user);
            if cur.kind == Kind::Put {
                return Verdict::Row;
            }
        }
        Verdict::Skip
    }

    /// Moves the merge to the next row to hand out (the newest version of its key at or
    /// below `read_seq`, a put) and records its key as seen; `false` at the end of the range.
    async fn find(&mut self) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        self.start().await?;
        loop {
            match self.classify() {
                Verdict::End => return Ok(false),
                Verdict::Row => return Ok(true),
                Verdict::Skip => self.merge.next().await?,
            }
        }
    }

    /// Drains the rest of the scan into a vector.
    pub async fn collect(mut self) -> Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        while let Some(kv) = self.next().await? {
            out.push(kv);
        }
        Ok(out)
    }

    /// The scan as a `futures::Stream`.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<(Bytes, Bytes)>> {
        futures::stream::try_unfold(self, |mut s| async move {
            Ok(s.next().await?.map(|kv| (kv, s)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The inline comparison orders keys exactly as slices order, short or long, with
        /// shared prefixes and zero bytes (a prefix of a key sorts before it).
        #[test]
        fn cmp_key_orders_like_slices(
            prefix in proptest::collection::vec(0u8..3, 0..20),
            a in proptest::collection::vec(0u8..3, 0..6),
            b in proptest::collection::vec(0u8..3, 0..6),
        ) {
            let a: Vec<u8> = prefix.iter().chain(&a).copied().collect();
            let b: Vec<u8> = prefix.iter().chain(&b).copied().collect();
            prop_assert_eq!(cmp_key(&a, &b), a.cmp(&b));
            prop_assert_eq!(same_key(&a, &b), a == b);
        }
    }
}
