//! Row tables: one LSM tree per table, fed by the database commit log, with snapshot-isolated
//! transactions on top. See `ingest/ROWS.md` for the design in prose.
//!
//! Directory layout (DESIGN §6): the commit log is the LogCore topic
//! `<data_dir>/log/<db>/_commit/` (one partition); table `t` lives in
//! `<data_dir>/tables/<db>/<t>/` (a `TABLE` metadata file plus the LSM's manifest and SSTables).
//!
//! What must stay true:
//! - A commit is acknowledged only after its one commit record is durable in the log, and it
//!   becomes visible to new transactions only after every commit with a lower seqno has been
//!   applied: the published seqno (`visible`) only grows and every seqno below it is applied.
//! - Commit records are appended in seqno order and applied to the LSMs in that order.
//! - On open, every table replays the log from its own `durable_log_position`, skipping records
//!   it already holds (seqno at or below its own) or that predate its creation.
//! - The log is never trimmed past [`RowStore::min_durable_log_position`].
//! - Every table keeps an LSM snapshot at or below the oldest open transaction's read seqno, so
//!   compaction never drops a version an open transaction can still read.

mod format;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod locks;
mod oracle;
mod txn;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_storage::io::{self, SharedFs};
use braid_storage::log::{Durability, Partition, Record, Topic, TopicConfig};
use braid_storage::lsm::{Lsm, LsmOptions, Snapshot, WriteBatch};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use oracle::Oracle;

pub use format::{decode_commit, CommitRecord, COMMIT_VERSION};
pub use txn::{CommitInfo, Transaction, TxnScan};

/// A table's id. Ids are chosen by the caller (the catalog); an id may be reused after a drop.
pub type TableId = u64;

/// Name of the commit-log topic inside `log/<db>/`.
pub const COMMIT_TOPIC: &str = "_commit";
const TABLE_FILE: &str = "TABLE";
const DROPPED_SUFFIX: &str = ".dropped";
/// Bytes of the log read at once during replay.
const REPLAY_READ_BYTES: usize = 4 << 20;
/// How long `drop_table` and `close` wait for readers to let go of a table before they stop it
/// anyway.
const RELEASE_WAIT_MAX: Duration = Duration::from_secs(2);

/// Settings of a row store. Every bound carries its unit.
#[derive(Debug, Clone)]
pub struct RowStoreOptions {
    /// Options of every table's LSM.
    pub lsm: LsmOptions,
    /// When a commit is acknowledged (see [`Durability`]); `Sync` unless a user asked otherwise.
    pub durability: Durability,
    /// Commit-log segment size: the log is trimmed a whole segment at a time.
    pub segment_bytes_max: u64,
    /// Most bytes of commit records written (and `fdatasync`ed) together.
    pub group_commit_bytes_max: usize,
    /// Largest encoded commit record (one transaction). A transaction's writes are held in
    /// memory until it commits and the record is one log batch, so this bounds a
    /// transaction's memory (about three times this at commit); 256 MiB takes a bulk
    /// `INSERT ... SELECT` of a million pgbench-sized rows (32 MiB did not).
    pub commit_bytes_max: usize,
    /// Open transactions' snapshots are re-pinned in every table at most this often.
    pub pin_refresh_interval: Duration,
}

impl Default for RowStoreOptions {
    fn default() -> Self {
        RowStoreOptions {
            lsm: LsmOptions::default(),
            durability: Durability::Sync,
            segment_bytes_max: 64 << 20,
            group_commit_bytes_max: 8 << 20,
            commit_bytes_max: 256 << 20,
            pin_refresh_interval: Duration::from_millis(5),
        }
    }
}

/// One open table.
struct Table {
    id: TableId,
    created_seq: u64,
    dir: PathBuf,
    lsm: Lsm,
    /// Commit-log position just past the last record applied to this table (0: none since
    /// open). When the LSM's durable position has reached it, the table needs nothing from the
    /// log.
    last_position: AtomicU64,
    /// Keeps versions that open transactions may read (see the module doc).
    pin: Mutex<Option<Snapshot>>,
}

/// A commit on its way through the writer and the applier.
struct CommitRequest {
    seq: u64,
    record: Vec<u8>,
    batches: Vec<(Arc<Table>, WriteBatch)>,
    reply: oneshot::Sender<Result<u64>>,
}

struct OracleState {
    oracle: Oracle,
    /// Hands records to the log writer; `None` once the store is closing.
    sender: Option<mpsc::UnboundedSender<CommitRequest>>,
    failed: Option<String>,
    pins_refreshed: Instant,
    /// Schema stamps set by [`RowStore::set_schema_stamp`]: a transaction that declared
    /// another stamp for a table fails at commit.
    stamps: HashMap<TableId, u64>,
}

pub(crate) struct Shared {
    fs: SharedFs,
    tables_dir: PathBuf,
    opts: RowStoreOptions,
    tables: RwLock<HashMap<TableId, Arc<Table>>>,
    state: Mutex<OracleState>,
    /// The published seqno: every commit at or below it is applied and readable.
    visible: AtomicU64,
    visible_tx: watch::Sender<u64>,
    /// Commit-log position just past the last record the applier has finished.
    applied_position: AtomicU64,
    partition: Arc<Partition>,
    /// Serializes create and drop.
    ddl: tokio::sync::Mutex<()>,
    /// Row locks of READ COMMITTED writes.
    locks: locks::LockTable,
    /// The next transaction's id for the row locks.
    next_txn: AtomicU64,
}

/// The row store of one database. Share it behind an `Arc`; every method takes `&self` except
/// `close`/`abort`.
pub struct RowStore {
    shared: Arc<Shared>,
    topic: Topic,
    writer: Option<tokio::task::JoinHandle<()>>,
    applier: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStore")
            .field("tables_dir", &self.shared.tables_dir)
            .field("visible_seq", &self.shared.visible.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RowStore {
    /// Opens (or creates) database `db` under `data_dir`: opens every table, opens the commit
    /// log and replays it into the tables, then starts the commit pipeline. Must run inside a
    /// tokio runtime.
    pub async fn open(
        fs: SharedFs,
        data_dir: impl AsRef<Path>,
        db: &str,
        opts: RowStoreOptions,
    ) -> Result<RowStore> {
        let data_dir = data_dir.as_ref();
        let tables_dir = data_dir.join("tables").join(db);
        let log_dir = data_dir.join("log").join(db).join(COMMIT_TOPIC);
        fs.create_dir_all(&tables_dir).await?;
        let tables = open_tables(&fs, &tables_dir, &opts.lsm).await?;

        let topic = Topic::open(fs.clone(), &log_dir, commit_topic_config(&opts)).await?;
        let partition = topic.partition(0)?;
        let replayed = replay(&partition, &tables).await?;

        // The last commit is what readers see; the next seqno is also above every table's
        // creation seqno (which no commit carries).
        let mut last_seq = replayed.last_seq;
        let mut next_seq = 1;
        for t in tables.values() {
            last_seq = last_seq.max(t.lsm.visible_seq());
            next_seq = next_seq.max(t.created_seq + 1);
        }
        let next_seq = next_seq.max(last_seq + 1);
        for t in tables.values() {
            *t.pin.lock() = Some(t.lsm.snapshot_at(last_seq));
        }
        tracing::info!(
            db,
            tables = tables.len(),
            replayed_records = replayed.records,
            replayed_from = replayed.from,
            last_seq,
            "row store opened"
        );
        let (sender, requests) = mpsc::unbounded_channel();
        let (visible_tx, _) = watch::channel(last_seq);
        let shared = Arc::new(Shared {
            fs,
            tables_dir,
            tables: RwLock::new(tables),
            state: Mutex::new(OracleState {
                oracle: Oracle::new(next_seq, last_seq),
                sender: Some(sender),
                failed: None,
                pins_refreshed: Instant::now(),
                stamps: HashMap::new(),
            }),
            visible: AtomicU64::new(last_seq),
            visible_tx,
            applied_position: AtomicU64::new(partition.end_offset()),
            partition: partition.clone(),
            ddl: tokio::sync::Mutex::new(()),
            locks: locks::LockTable::default(),
            next_txn: AtomicU64::new(1),
            opts,
        });
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(shared.clone(), requests, apply_tx));
        let applier = tokio::spawn(apply_loop(shared.clone(), apply_rx));
        Ok(RowStore {
            shared,
            topic,
            writer: Some(writer),
            applier: Some(applier),
        })
    }

    /// Starts a transaction reading the latest published commit.
    pub fn begin(&self) -> Transaction {
        Transaction::begin(self.shared.clone())
    }

    /// Up to `parts - 1` keys of `table` cutting `(start, end)` into parts of about equal
    /// size, for scanning them in parallel; none when the range holds less than `bytes_min`
    /// bytes or the table does not exist. An estimate from what is in memory: it reads
    /// nothing from disk, and any keys it returns cover the range exactly once.
    pub fn split_keys(
        &self,
        table: TableId,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        parts: usize,
        bytes_min: u64,
    ) -> Vec<Bytes> {
        let Ok(t) = self.shared.table(table) else {
            return Vec::new();
        };
        let owned = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        t.lsm
            .split_keys((owned(start), owned(end)), parts, bytes_min)
    }

    /// Sets the schema stamp of `table` (a caller's fingerprint of what every writer of the
    /// table must also write, e.g. its secondary indexes). From now on a transaction that
    /// declared another stamp for the table ([`Transaction::expect_schema`]) fails at commit
    /// with [`Error::SerializationFailure`]. Returns the last seqno sequenced before the
    /// change: every commit made under the old stamp is at or below it (see
    /// [`RowStore::wait_visible`]). Stamps live in memory: after a restart no transaction
    /// from before it is open.
    pub fn set_schema_stamp(&self, table: TableId, stamp: u64) -> u64 {
        let mut st = self.shared.state.lock();
        st.stamps.insert(table, stamp);
        // Not `next_seq - 1`: a table creation takes a seqno that never becomes visible.
        st.oracle.last_commit_seq
    }

    /// Waits until every commit up to `seq` is applied and visible to new transactions.
    pub async fn wait_visible(&self, seq: u64) -> Result<()> {
        self.shared.wait_visible(seq).await
    }

    /// Creates an empty table. Durable when this returns.
    pub async fn create_table(&self, id: TableId) -> Result<()> {
        let s = &self.shared;
        let _ddl = s.ddl.lock().await;
        if s.tables.read().contains_key(&id) {
            return Err(Error::TableExists(id));
        }
        // A seqno above every one handed out so far: records of an older table with this id
        // are older than the new table.
        let created_seq = {
            let mut st = s.state.lock();
            s.check_accepting(&st)?;
            let seq = st.oracle.next_seq;
            st.oracle.next_seq += 1;
            seq
        };
        let dir = s.tables_dir.join(id.to_string());
        s.fs.create_dir_all(&dir).await?;
        let meta = format::TableMeta {
            table_id: id,
            created_seq,
        };
        io::write_file_atomic(
            &*s.fs,
            &dir.join(TABLE_FILE),
            format::encode_table_meta(&meta),
        )
        .await?;
        s.fs.sync_dir(&s.tables_dir).await?;
        let lsm = Lsm::open(s.fs.clone(), &dir, s.opts.lsm.clone()).await?;
        let table = Arc::new(Table {
            id,
            created_seq,
            dir,
            lsm,
            last_position: AtomicU64::new(0),
            pin: Mutex::new(None),
        });
        let st = s.state.lock();
        *table.pin.lock() = Some(table.lsm.snapshot_at(0));
        s.tables.write().insert(id, table);
        drop(st);
        Ok(())
    }

    /// Drops a table: it disappears for new reads and commits at once (transactions that wrote
    /// to it fail at commit with [`Error::TableNotFound`]); its directory is deleted once every
    /// commit already sequenced has been applied. The commit log still holds its old records
    /// until trimmed; replay skips them because the table's directory is gone (and a table
    /// created later with the same id starts at a higher seqno).
    pub async fn drop_table(&self, id: TableId) -> Result<()> {
        let s = &self.shared;
        let _ddl = s.ddl.lock().await;
        let (table, barrier) = {
            let st = s.state.lock();
            let table = s
                .tables
                .write()
                .remove(&id)
                .ok_or(Error::TableNotFound(id))?;
            (table, st.oracle.last_commit_seq)
        };
        s.wait_visible(barrier).await?;
        let dir = table.dir.clone();
        let _ = stop_table(table, false).await;
        let mut gone = dir.clone().into_os_string();
        gone.push(DROPPED_SUFFIX);
        let gone = PathBuf::from(gone);
        s.fs.rename(&dir, &gone).await?;
        s.fs.sync_dir(&s.tables_dir).await?;
        s.fs.remove_dir_all(&gone).await?;
        s.fs.sync_dir(&s.tables_dir).await?;
        Ok(())
    }

    /// Bytes table `id` holds ([`Lsm::size_bytes`]); `None` when the store has no such table.
    pub fn table_bytes(&self, id: TableId) -> Option<u64> {
        self.shared.table(id).ok().map(|t| t.lsm.size_bytes())
    }

    /// Ids of the open tables, ascending.
    pub fn tables(&self) -> Vec<TableId> {
        let mut v: Vec<TableId> = self.shared.tables.read().keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The latest published commit seqno.
    pub fn visible_seq(&self) -> u64 {
        self.shared.visible.load(Ordering::Acquire)
    }

    /// Row locks held now by open transactions (READ COMMITTED writes).
    pub fn held_row_locks(&self) -> usize {
        self.shared.locks.held()
    }

    /// Transactions waiting for a row lock now.
    pub fn row_lock_waiters(&self) -> usize {
        self.shared.locks.waiting()
    }

    /// Keys currently tracked for write-write conflict checks.
    pub fn tracked_conflict_keys(&self) -> usize {
        self.shared.state.lock().oracle.tracked_keys()
    }

    /// The commit-log position below which no table needs the log any more: the minimum, over
    /// tables with changes not yet in SSTables, of their LSM's durable position (and never past
    /// what the applier has finished). Trimming below it is safe.
    pub fn min_durable_log_position(&self) -> u64 {
        let s = &self.shared;
        // Read the applier's progress first: a record it is applying right now is below it.
        let mut min = s.applied_position.load(Ordering::Acquire);
        for t in s.tables.read().values() {
            let durable = t.lsm.durable_log_position();
            if t.last_position.load(Ordering::Acquire) > durable {
                min = min.min(durable);
            }
        }
        min
    }

    /// Commit-log offsets held: `(start, end)`.
    pub fn log_range(&self) -> (u64, u64) {
        let p = &self.shared.partition;
        (p.start_offset(), p.end_offset())
    }

    /// Deletes whole commit-log segments below [`RowStore::min_durable_log_position`]; returns
    /// the log's new start offset.
    pub async fn trim_log(&self) -> Result<u64> {
        let upto = self.min_durable_log_position();
        Ok(self.shared.partition.trim_before(upto).await?)
    }

    /// Flushes every table's memtables to SSTables (which moves their durable positions, so a
    /// later [`RowStore::trim_log`] can free more).
    pub async fn flush(&self) -> Result<()> {
        let tables: Vec<Arc<Table>> = self.shared.tables.read().values().cloned().collect();
        for t in tables {
            t.lsm.flush().await?;
        }
        Ok(())
    }

    /// Flushes and fully compacts every table: shadowed versions no open transaction can read
    /// and old tombstones go.
    pub async fn compact(&self) -> Result<()> {
        let tables: Vec<Arc<Table>> = self.shared.tables.read().values().cloned().collect();
        for t in tables {
            t.lsm.flush().await?;
            t.lsm.compact_full().await?;
        }
        Ok(())
    }

    /// Stops taking commits, waits for the ones in flight, flushes every table and closes the
    /// log.
    pub async fn close(mut self) -> Result<()> {
        self.stop_pipeline().await;
        let tables: Vec<Arc<Table>> = self.shared.tables.write().drain().map(|(_, t)| t).collect();
        let mut first_err = None;
        for t in tables {
            if let Err(e) = stop_table(t, true).await {
                first_err.get_or_insert(e);
            }
        }
        self.topic.close().await?;
        first_err.map_or(Ok(()), Err)
    }

    /// Stops without flushing, as a crash would: what is only in memtables is dropped and comes
    /// back from the commit log on the next open. For tests and after a failed write.
    pub async fn abort(mut self) {
        self.stop_pipeline().await;
        let tables: Vec<Arc<Table>> = self.shared.tables.write().drain().map(|(_, t)| t).collect();
        for t in tables {
            let _ = stop_table(t, false).await;
        }
        let _ = self.topic.close().await;
    }

    async fn stop_pipeline(&mut self) {
        self.shared.state.lock().sender = None;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        if let Some(a) = self.applier.take() {
            let _ = a.await;
        }
    }
}

/// Dropping without `close` stops taking commits; the pipeline finishes what it has and the
/// tables stop without a flush (like [`RowStore::abort`], without waiting).
impl Drop for RowStore {
    fn drop(&mut self) {
        self.shared.state.lock().sender = None;
    }
}

impl Shared {
    fn check_accepting(&self, st: &OracleState) -> Result<()> {
        if let Some(cause) = &st.failed {
            return Err(Error::StoreFailed {
                cause: cause.clone(),
            });
        }
        if st.sender.is_none() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn table(&self, id: TableId) -> Result<Arc<Table>> {
        self.tables
            .read()
            .get(&id)
            .cloned()
            .ok_or(Error::TableNotFound(id))
    }

    fn fail(&self, cause: String) {
        tracing::error!(dir = %self.tables_dir.display(), %cause, "row store stops taking commits");
        self.state.lock().failed.get_or_insert(cause);
        self.visible_tx.send_modify(|_| {});
    }

    fn failure(&self) -> Option<String> {
        self.state.lock().failed.clone()
    }

    async fn wait_visible(&self, seq: u64) -> Result<()> {
        let mut rx = self.visible_tx.subscribe();
        loop {
            if self.visible.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            if let Some(cause) = self.failure() {
                return Err(Error::StoreFailed { cause });
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Moves every table's pin up to the oldest snapshot still needed, at most every
    /// `pin_refresh_interval` (an older pin only keeps a few more versions around).
    fn refresh_pins(&self, st: &mut OracleState) {
        if st.pins_refreshed.elapsed() < self.opts.pin_refresh_interval {
            return;
        }
        st.pins_refreshed = Instant::now();
        let watermark = st.oracle.watermark(self.visible.load(Ordering::Acquire));
        for t in self.tables.read().values() {
            let mut pin = t.pin.lock();
            if pin.as_ref().is_some_and(|p| p.seq() >= watermark) {
                continue;
            }
            // Register the new pin before the old one goes: the old one protects every version
            // above it while the new one is taken.
            let new = t.lsm.snapshot_at(watermark);
            *pin = Some(new);
        }
    }
}

fn commit_topic_config(opts: &RowStoreOptions) -> TopicConfig {
    TopicConfig {
        partitions: 1,
        durability: opts.durability,
        segment_bytes_max: opts.segment_bytes_max,
        segment_age_max: None,
        // The row store decides what may go (trim_log); time or size retention never may.
        retention_age: None,
        retention_bytes: None,
        maintenance_interval: None,
        batch_bytes_max: u32::try_from(
            opts.group_commit_bytes_max
                .max(opts.commit_bytes_max)
                .saturating_add(1 << 16),
        )
        .unwrap_or(u32::MAX)
        .min(1 << 30),
        group_bytes_max: opts.group_commit_bytes_max.max(opts.commit_bytes_max) + (1 << 16),
        ..TopicConfig::default()
    }
}

/// Opens every table directory; removes leftovers of interrupted drops and creates.
async fn open_tables(
    fs: &SharedFs,
    tables_dir: &Path,
    lsm_opts: &LsmOptions,
) -> Result<HashMap<TableId, Arc<Table>>> {
    let mut tables = HashMap::new();
    for name in fs.list_dir(tables_dir).await? {
        let dir = tables_dir.join(&name);
        if name.ends_with(DROPPED_SUFFIX) {
            tracing::info!(dir = %dir.display(), "finishing an interrupted table drop");
            fs.remove_dir_all(&dir).await?;
            continue;
        }
        let Ok(id) = name.parse::<TableId>() else {
            continue;
        };
        let meta_path = dir.join(TABLE_FILE);
        if !fs.exists(&meta_path).await? {
            // The create never finished (the metadata file is written first): nothing in it
            // was ever acknowledged.
            tracing::info!(dir = %dir.display(), "removing an interrupted table create");
            fs.remove_dir_all(&dir).await?;
            continue;
        }
        let bytes = io::read_file(&**fs, &meta_path).await?;
        let meta = format::decode_table_meta(&bytes).map_err(|reason| Error::CorruptTableMeta {
            path: meta_path.clone(),
            reason,
        })?;
        if meta.table_id != id {
            return Err(Error::CorruptTableMeta {
                path: meta_path,
                reason: format!("names table {} in the directory of {id}", meta.table_id),
            });
        }
        let lsm = Lsm::open(fs.clone(), &dir, lsm_opts.clone()).await?;
        tables.insert(
            id,
            Arc::new(Table {
                id,
                created_seq: meta.created_seq,
                dir,
                lsm,
                last_position: AtomicU64::new(0),
                pin: Mutex::new(None),
            }),
        );
    }
    fs.sync_dir(tables_dir).await?;
    Ok(tables)
}

struct Replayed {
    from: u64,
    records: u64,
    last_seq: u64,
}

/// Applies every commit record the tables do not hold yet, from the lowest durable position
/// on.
async fn replay(partition: &Partition, tables: &HashMap<TableId, Arc<Table>>) -> Result<Replayed> {
    let start = partition.start_offset();
    let end = partition.end_offset();
    // A table whose durable position is below the log's start had nothing pending when the log
    // was trimmed (the trim rule), so starting at the log's start is complete for it.
    let from = tables
        .values()
        .map(|t| t.lsm.durable_log_position())
        .min()
        .unwrap_or(end)
        .max(start);
    let mut out = Replayed {
        from,
        records: 0,
        last_seq: 0,
    };
    let mut at = from;
    while at < end {
        let read = partition.read(at, REPLAY_READ_BYTES).await?;
        if read.next_offset <= at {
            break;
        }
        at = read.next_offset;
        for rec in read.records {
            let value = rec.value.ok_or_else(|| Error::CorruptCommitLog {
                offset: rec.offset,
                reason: "record has no value".into(),
            })?;
            let commit = decode_commit(&value).map_err(|reason| Error::CorruptCommitLog {
                offset: rec.offset,
                reason,
            })?;
            if commit.seqno <= out.last_seq {
                return Err(Error::CorruptCommitLog {
                    offset: rec.offset,
                    reason: format!(
                        "seqno {} is not above the previous record's {}",
                        commit.seqno, out.last_seq
                    ),
                });
            }
            out.last_seq = commit.seqno;
            out.records += 1;
            let position = rec.offset + 1;
            for (table_id, rows) in commit.changes {
                let Some(t) = tables.get(&table_id) else {
                    continue; // dropped since
                };
                if commit.seqno <= t.created_seq || commit.seqno <= t.lsm.visible_seq() {
                    continue;
                }
                t.lsm
                    .apply(write_batch(rows), commit.seqno, position)
                    .await?;
                t.last_position.store(position, Ordering::Release);
            }
        }
    }
    Ok(out)
}

fn write_batch(rows: BTreeMap<Bytes, Option<Bytes>>) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in rows {
        match v {
            Some(v) => b.put(k, v),
            None => b.delete(k),
        };
    }
    b
}

/// Stops a table's LSM, waiting (boundedly) for readers to let go so its background tasks can
/// be joined; `flush` first when closing cleanly.
async fn stop_table(mut table: Arc<Table>, flush: bool) -> Result<()> {
    let deadline = Instant::now() + RELEASE_WAIT_MAX;
    loop {
        match Arc::try_unwrap(table) {
            Ok(t) => {
                drop(t.pin.into_inner());
                return if flush {
                    t.lsm.close().await.map_err(Error::from)
                } else {
                    t.lsm.abort().await;
                    Ok(())
                };
            }
            Err(shared) if Instant::now() < deadline => {
                table = shared;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(shared) => {
                tracing::warn!(
                    table = shared.id,
                    "a reader still holds the table; stopping it without waiting"
                );
                return if flush {
                    shared.lsm.flush().await.map_err(Error::from)
                } else {
                    Ok(())
                };
            }
        }
    }
}

/// The log writer: takes sequenced commits in seqno order, appends everything queued as one
/// LogCore batch (one write + `fdatasync` for the whole group) and passes them to the applier.
/// While a sync runs, new commits queue up and go together in the next one.
async fn write_loop(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<CommitRequest>,
    apply_tx: mpsc::UnboundedSender<(CommitRequest, u64)>,
) {
    let max = shared.opts.group_commit_bytes_max;
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        let mut bytes = group[0].record.len();
        while bytes < max {
            match requests.try_recv() {
                Ok(r) => {
                    bytes += r.record.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        if let Some(cause) = shared.failure() {
            for r in group {
                let _ = r.reply.send(Err(Error::StoreFailed {
                    cause: cause.clone(),
                }));
            }
            continue;
        }
        let records: Vec<Record> = group
            .iter_mut()
            .map(|r| Record::value(std::mem::take(&mut r.record)))
            .collect();
        match shared.partition.append(records).await {
            Ok(appended) => {
                for (i, r) in group.into_iter().enumerate() {
                    let position = appended.base_offset + i as u64 + 1;
                    if let Err(mpsc::error::SendError((r, _))) = apply_tx.send((r, position)) {
                        let _ = r.reply.send(Err(Error::Closed));
                    }
                }
            }
            Err(e) => {
                let cause = format!("appending to the commit log failed: {e}");
                shared.fail(cause.clone());
                for r in group {
                    let _ = r.reply.send(Err(Error::StoreFailed {
                        cause: cause.clone(),
                    }));
                }
            }
        }
    }
}

/// The applier: applies durable commits to their tables in seqno order, then publishes each.
async fn apply_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(CommitRequest, u64)>) {
    while let Some((req, position)) = rx.recv().await {
        if let Some(cause) = shared.failure() {
            let _ = req.reply.send(Err(Error::StoreFailed { cause }));
            continue;
        }
        let mut failed = None;
        for (table, batch) in req.batches {
            if let Err(e) = table.lsm.apply(batch, req.seq, position).await {
                failed = Some(format!(
                    "applying commit {} to table {} failed (the commit is durable in the log and \
                     comes back on reopen): {e}",
                    req.seq, table.id
                ));
                break;
            }
            table.last_position.store(position, Ordering::Release);
        }
        if let Some(cause) = failed {
            shared.fail(cause.clone());
            let _ = req.reply.send(Err(Error::StoreFailed { cause }));
            continue;
        }
        shared.applied_position.store(position, Ordering::Release);
        shared.visible.store(req.seq, Ordering::Release);
        shared.visible_tx.send_replace(req.seq);
        let _ = req.reply.send(Ok(position));
    }
}
