//! Transactions: snapshot isolation over the row tables.
//!
//! A transaction reads the tables as of its read seqno (the published seqno when it began) plus
//! its own buffered writes, and commits all its writes as one commit record. At commit, under
//! the oracle's lock, any key it wrote that another transaction committed after its read seqno
//! fails it with [`Error::SerializationFailure`] (first committer wins); otherwise it gets the
//! next seqno and its record goes to the log writer in seqno order. The lock is held for the
//! check and the hand-off only: the `fdatasync` and the apply happen after it, shared with
//! every commit queued at the same time.
//!
//! Write skew is allowed, as snapshot isolation allows it: two transactions that each read what
//! the other writes, and write disjoint keys, both commit.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use braid_storage::lsm::{format::KEY_BYTES_MAX, format::VALUE_BYTES_MAX, Scan, WriteBatch};
use bytes::Bytes;
use tokio::sync::oneshot;

use super::format::{commit_len, encode_commit, set_commit_seqno, Changes};
use super::locks::TxnId;
use super::{CommitRequest, Shared, Table, TableId};
use crate::error::{Error, Result};

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit's seqno; `None` for a transaction that wrote nothing (it touched no log).
    pub seq: Option<u64>,
    /// Commit-log position just past the commit record.
    pub log_position: Option<u64>,
}

/// An open transaction. Dropping it rolls it back.
pub struct Transaction {
    shared: Arc<Shared>,
    /// Names this transaction to the row locks.
    id: TxnId,
    read_seq: u64,
    /// Row locks held ([`Transaction::get_for_update`]), released when the transaction ends.
    locked: Vec<(TableId, Bytes)>,
    /// Keys read under their lock at a newer seqno than `read_seq`: their conflict check at
    /// commit starts there instead.
    lock_seqs: HashMap<(TableId, Bytes), u64>,
    /// Still counted among the open snapshots (until commit or rollback).
    registered: bool,
    writes: Changes,
    /// Schema stamps this transaction's writes were made under ([`Transaction::expect_schema`]).
    stamps: Vec<(TableId, u64)>,
    /// Encoded size of `writes` as a commit record, kept current to refuse oversized
    /// transactions when the write is made rather than at commit.
    bytes: usize,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("read_seq", &self.read_seq)
            .field("tables_written", &self.writes.len())
            .finish_non_exhaustive()
    }
}

impl Transaction {
    pub(super) fn begin(shared: Arc<Shared>) -> Transaction {
        let read_seq = {
            let mut st = shared.state.lock();
            let seq = shared.visible.load(std::sync::atomic::Ordering::Acquire);
            st.oracle.register(seq);
            seq
        };
        Transaction {
            id: shared
                .next_txn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            shared,
            read_seq,
            locked: Vec::new(),
            lock_seqs: HashMap::new(),
            registered: true,
            writes: Changes::new(),
            stamps: Vec::new(),
            bytes: 0,
        }
    }

    /// The seqno this transaction reads at.
    pub fn read_seq(&self) -> u64 {
        self.read_seq
    }

    /// Whether the transaction has buffered writes.
    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty()
    }

    /// The value of `key` in `table` as this transaction sees it.
    pub async fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Bytes>> {
        let t = self.shared.table(table)?;
        if let Some(v) = self.writes.get(&table).and_then(|w| w.get(key)) {
            return Ok(v.clone());
        }
        Ok(t.lsm.get(key, self.read_seq).await?)
    }

    /// The newest committed value of `key` in `table` (or this transaction's own write), read
    /// under the row's lock: waits while another transaction holds the lock, and keeps it
    /// until this transaction ends. A write of the key after this read conflicts at commit
    /// only with commits after this read, not after the snapshot — READ COMMITTED's update
    /// rule. Fails with [`Error::Deadlock`] when waiting would close a cycle of waits.
    pub async fn get_for_update(&mut self, table: TableId, key: &[u8]) -> Result<Option<Bytes>> {
        let t = self.shared.table(table)?;
        let key = Bytes::copy_from_slice(key);
        if self.shared.locks.acquire(self.id, table, &key).await? {
            self.locked.push((table, key.clone()));
        }
        if let Some(v) = self.writes.get(&table).and_then(|w| w.get(&key)) {
            return Ok(v.clone());
        }
        // Every commit up to `visible` is applied, and the lock keeps any other locking writer
        // of this key from committing until this transaction ends.
        let latest = self
            .shared
            .visible
            .load(std::sync::atomic::Ordering::Acquire)
            .max(self.read_seq);
        self.lock_seqs.entry((table, key.clone())).or_insert(latest);
        Ok(t.lsm.get(&key, latest).await?)
    }

    /// Declares that this transaction's writes to `table` were made for schema stamp `stamp`
    /// ([`super::RowStore::set_schema_stamp`]): if the table's stamp differs when it commits,
    /// the commit fails with [`Error::SerializationFailure`] (its writes may lack, say, the
    /// entries of an index created meanwhile).
    pub fn expect_schema(&mut self, table: TableId, stamp: u64) {
        if !self.stamps.contains(&(table, stamp)) {
            self.stamps.push((table, stamp));
        }
    }

    /// Makes the commit-time conflict check of `key` in `table` start where that of `row_key`
    /// in `row_table` does: at the seqno the row was read at under its lock
    /// ([`Transaction::get_for_update`]), or at the snapshot when it was not locked. For
    /// entries derived from a locked row (a secondary index's), which only the row's lock
    /// holder writes: a READ COMMITTED update that waited for the row's previous writer then
    /// rewrites the entries that writer made instead of failing with 40001 on them.
    pub fn check_like(&mut self, table: TableId, key: &[u8], row_table: TableId, row_key: &[u8]) {
        if self.lock_seqs.is_empty() {
            return;
        }
        let row = (row_table, Bytes::copy_from_slice(row_key));
        if let Some(seq) = self.lock_seqs.get(&row).copied() {
            self.lock_seqs
                .insert((table, Bytes::copy_from_slice(key)), seq);
        }
    }

    /// Rows of `table` with keys in `(start, end)`, in key order, as this transaction sees them
    /// (its own writes merged over its snapshot).
    pub fn scan(&self, table: TableId, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<TxnScan> {
        let t = self.shared.table(table)?;
        let owned = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let base = t.lsm.scan((owned(start), owned(end)), self.read_seq)?;
        let own: VecDeque<(Bytes, Option<Bytes>)> = match self.writes.get(&table) {
            Some(w) if !empty_range(start, end) => w
                .range::<[u8], _>((start, end))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => VecDeque::new(),
        };
        Ok(TxnScan {
            _table: t,
            base,
            head: None,
            base_done: false,
            own,
        })
    }

    /// Writes `value` under `key` (insert or overwrite).
    pub fn put(
        &mut self,
        table: TableId,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        if value.len() > VALUE_BYTES_MAX {
            return Err(Error::ValueTooLarge {
                bytes: value.len(),
                max: VALUE_BYTES_MAX,
            });
        }
        self.write(table, key, Some(value))
    }

    /// Deletes `key` (a no-op on the data when it is absent; it still counts as a write for
    /// conflict checks, as PostgreSQL's row lock on a deleted row would).
    pub fn delete(&mut self, table: TableId, key: impl Into<Bytes>) -> Result<()> {
        self.write(table, key.into(), None)
    }

    /// Inserts `key` unless this transaction already sees it, in which case it fails with
    /// [`Error::UniqueViolation`] (SQLSTATE 23505). Two transactions inserting the same new key
    /// concurrently both see it absent; the later committer then fails with
    /// [`Error::SerializationFailure`], so never both succeed.
    pub async fn insert(
        &mut self,
        table: TableId,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<()> {
        let key = key.into();
        if self.get(table, &key).await?.is_some() {
            return Err(Error::UniqueViolation { table, key });
        }
        self.put(table, key, value)
    }

    fn write(&mut self, table: TableId, key: Bytes, value: Option<Bytes>) -> Result<()> {
        if key.len() > KEY_BYTES_MAX {
            return Err(Error::KeyTooLarge {
                bytes: key.len(),
                max: KEY_BYTES_MAX,
            });
        }
        // Fail early for a table that does not exist; a drop before commit is caught there.
        self.shared.table(table)?;
        let rows = self.writes.entry(table).or_default();
        if rows.is_empty() {
            self.bytes += 8 + 10;
        }
        let entry_len = |k: &Bytes, v: &Option<Bytes>| {
            1 + 10 + k.len() + v.as_ref().map_or(0, |v| 10 + v.len())
        };
        let added = entry_len(&key, &value);
        let removed = rows.get(&key).map_or(0, |old| entry_len(&key, old));
        let bytes = (self.bytes + added).saturating_sub(removed);
        let max = self.shared.opts.commit_bytes_max;
        if bytes > max {
            return Err(Error::TransactionTooLarge { bytes, max });
        }
        self.bytes = bytes;
        rows.insert(key, value);
        Ok(())
    }

    /// Commits: returns once the commit record is durable and the writes are visible to new
    /// transactions. A transaction without writes commits without touching the log.
    pub async fn commit(mut self) -> Result<CommitInfo> {
        if self.writes.is_empty() {
            self.finish();
            return Ok(CommitInfo {
                seq: None,
                log_position: None,
            });
        }
        let writes = std::mem::take(&mut self.writes);
        let bytes = commit_len(&writes);
        let max = self.shared.opts.commit_bytes_max;
        if bytes > max {
            self.finish();
            return Err(Error::TransactionTooLarge { bytes, max });
        }
        // Encode and build the batches outside the lock; only the seqno is written under it.
        let record = encode_commit(&writes);
        let keys: Vec<(TableId, Bytes)> = writes
            .iter()
            .flat_map(|(t, rows)| rows.keys().map(move |k| (*t, k.clone())))
            .collect();
        let batches: Vec<(TableId, WriteBatch)> = writes
            .into_iter()
            .map(|(t, rows)| (t, super::write_batch(rows)))
            .collect();
        let (seq, done) = self.sequence(record, keys, batches)?;
        let position = done.await.map_err(|_| Error::Closed)??;
        Ok(CommitInfo {
            seq: Some(seq),
            log_position: Some(position),
        })
    }

    /// The commit's critical section: conflict check, seqno, hand-off to the log writer. Runs
    /// under the oracle lock and never waits.
    fn sequence(
        &mut self,
        mut record: Vec<u8>,
        keys: Vec<(TableId, Bytes)>,
        batches: Vec<(TableId, WriteBatch)>,
    ) -> Result<(u64, oneshot::Receiver<Result<u64>>)> {
        let shared = self.shared.clone();
        let mut st = shared.state.lock();
        self.registered = false;
        st.oracle.deregister(self.read_seq);
        shared.check_accepting(&st)?;
        for (table, stamp) in &self.stamps {
            if st.stamps.get(table).is_some_and(|s| s != stamp) {
                return Err(Error::SerializationFailure {
                    table: *table,
                    key: Bytes::new(),
                });
            }
        }
        let read_seq = self.read_seq;
        let lock_seqs = &self.lock_seqs;
        if let Some((table, key)) = st.oracle.first_conflict(keys.iter().map(|(t, k)| {
            let since = if lock_seqs.is_empty() {
                read_seq
            } else {
                lock_seqs.get(&(*t, k.clone())).copied().unwrap_or(read_seq)
            };
            (*t, k, since)
        })) {
            return Err(Error::SerializationFailure { table, key });
        }
        let mut resolved: Vec<(Arc<Table>, WriteBatch)> = Vec::with_capacity(batches.len());
        {
            let tables = shared.tables.read();
            for (t, batch) in batches {
                let table = tables.get(&t).cloned().ok_or(Error::TableNotFound(t))?;
                resolved.push((table, batch));
            }
        }
        let seq = st.oracle.next_seq;
        let (reply, done) = oneshot::channel();
        set_commit_seqno(&mut record, seq);
        let request = CommitRequest {
            seq,
            record,
            batches: resolved,
            reply,
        };
        let sent = st.sender.as_ref().is_some_and(|s| s.send(request).is_ok());
        if !sent {
            return Err(Error::Closed);
        }
        st.oracle.next_seq += 1;
        st.oracle.record_commit(seq, keys);
        let watermark = st
            .oracle
            .watermark(shared.visible.load(std::sync::atomic::Ordering::Acquire));
        st.oracle.prune(watermark);
        shared.refresh_pins(&mut st);
        Ok((seq, done))
    }

    /// Discards every buffered write.
    pub fn rollback(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        // After a commit this runs once it is visible, so the next holder reads it.
        self.shared.locks.release(self.id, &self.locked);
        self.locked.clear();
        if std::mem::take(&mut self.registered) {
            let mut st = self.shared.state.lock();
            st.oracle.deregister(self.read_seq);
            let watermark = st.oracle.watermark(
                self.shared
                    .visible
                    .load(std::sync::atomic::Ordering::Acquire),
            );
            st.oracle.prune(watermark);
            self.shared.refresh_pins(&mut st);
        }
        self.writes.clear();
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.finish();
    }
}

fn empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

/// A range scan at a transaction's view: the snapshot's rows merged with the transaction's own
/// writes (which win; its deletes hide rows).
pub struct TxnScan {
    /// Keeps the table open while the scan runs.
    _table: Arc<Table>,
    base: Scan,
    head: Option<(Bytes, Bytes)>,
    base_done: bool,
    own: VecDeque<(Bytes, Option<Bytes>)>,
}

impl std::fmt::Debug for TxnScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnScan")
            .field("own_pending", &self.own.len())
            .finish_non_exhaustive()
    }
}

impl TxnScan {
    /// The next row in key order, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        loop {
            if self.head.is_none() && !self.base_done {
                self.head = self.base.next().await?;
                self.base_done = self.head.is_none();
            }
            let take_own = match (&self.head, self.own.front()) {
                (None, None) => return Ok(None),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((ok, _))) => {
                    if bk < ok {
                        false
                    } else {
                        if bk == ok {
                            self.head = None; // shadowed by the transaction's own write
                        }
                        true
                    }
                }
            };
            if take_own {
                if let Some((k, Some(v))) = self.own.pop_front() {
                    return Ok(Some((k, v)));
                }
            } else {
                return Ok(self.head.take());
            }
        }
    }

    /// The next row's value in key order, or `None` at the end: [`TxnScan::next`] without
    /// the key, which saves copying it when the transaction has no writes in the range.
    pub async fn next_value(&mut self) -> Result<Option<Bytes>> {
        if self.own.is_empty() && self.head.is_none() {
            if self.base_done {
                return Ok(None);
            }
            let v = self.base.next_value().await?;
            self.base_done = v.is_none();
            return Ok(v);
        }
        Ok(self.next().await?.map(|(_, v)| v))
    }

    /// Hands up to `rows_max` rows, in key order, to `visit` as borrowed `(key, value)`
    /// slices; returns how many (0 only at the end). Without writes of the transaction left
    /// in the range the rows come straight from the snapshot's merge, copied nowhere
    /// ([`braid_storage::lsm::Scan::visit`]); otherwise row by row through
    /// [`TxnScan::next`]. `visit` returns `false` to stop early.
    pub async fn visit(
        &mut self,
        rows_max: usize,
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> bool + Send),
    ) -> Result<usize> {
        if self.own.is_empty() && self.head.is_none() {
            if self.base_done {
                return Ok(0);
            }
            let n = self.base.visit(rows_max, visit).await?;
            self.base_done = n == 0;
            return Ok(n);
        }
        let mut n = 0;
        while n < rows_max {
            let Some((k, v)) = self.next().await? else {
                break;
            };
            n += 1;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(n)
    }

    /// Every remaining row.
    pub async fn collect(mut self) -> Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        while let Some(row) = self.next().await? {
            out.push(row);
        }
        Ok(out)
    }
}
