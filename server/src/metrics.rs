//! The process-wide Prometheus metrics and the hooks that move them: connections, statements
//! by kind with a latency histogram, errors by SQLSTATE, rows and bytes appended per stream,
//! `fdatasync` latency, log bytes on disk and projection lag.
//!
//! Storage numbers come from two thin wrappers installed when the engine opens, so neither the
//! planner nor storage knows about metrics: [`MeteredFs`] times every data sync of the I/O
//! backend, and [`MeteredLogs`] counts what each stream log acknowledges.
//!
//! What must stay true: label values come from small fixed sets (statement kinds, SQLSTATEs,
//! stream names), never from client text, so a client cannot grow the registry without bound.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use braid_planner::stream::log::{StoredRecord, StreamLog, StreamLogConfig, StreamLogs};
use braid_planner::Engine;
use braid_storage::io::{FileHandle, Fs, IoFuture, OpenMode, SharedFs};
use braid_storage::log::{BatchBuilder, EncodedBatch};
use braid_storage::Result as IoResult;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_accepted: Counter,
    pub connections_rejected: Family<Labels, Counter>,
    pub connections_timed_out: Family<Labels, Counter>,
    statements: Family<Labels, Counter>,
    statements_unplanned: Family<Labels, Counter>,
    statement_seconds: Family<Labels, Histogram>,
    errors: Family<Labels, Counter>,
    appended_rows: Family<Labels, Counter>,
    appended_bytes: Family<Labels, Counter>,
    fsync_seconds: Histogram,
    log_bytes: Gauge,
    projection_lag: Family<Labels, Gauge>,
}

/// The metrics of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s: from a cached point query to a large COPY.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("braid"),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_rejected: Family::default(),
            connections_timed_out: Family::default(),
            statements: Family::default(),
            statements_unplanned: Family::default(),
            statement_seconds: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            appended_rows: Family::default(),
            appended_bytes: Family::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            log_bytes: Gauge::default(),
            projection_lag: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "connections",
            "Client connections open now",
            m.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "Client connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_rejected",
            "Client connections refused, by reason (too_many = SQLSTATE 53300)",
            m.connections_rejected.clone(),
        );
        r.register(
            "connections_timed_out",
            "Client connections closed because the client stalled, by phase",
            m.connections_timed_out.clone(),
        );
        r.register(
            "statements",
            "Statements executed, by kind",
            m.statements.clone(),
        );
        r.register(
            "statements_unplanned",
            "Statements run from the plan made when they were parsed, without planning them \
             again (prepared INSERTs of rows, reads and writes by primary key), by kind",
            m.statements_unplanned.clone(),
        );
        r.register(
            "statement_duration_seconds",
            "Time from receiving a statement to its first result, by kind",
            m.statement_seconds.clone(),
        );
        r.register(
            "errors",
            "Errors sent to clients, by SQLSTATE",
            m.errors.clone(),
        );
        r.register(
            "stream_appended_rows",
            "Rows durably appended, by stream",
            m.appended_rows.clone(),
        );
        r.register(
            "stream_appended_bytes",
            "Bytes durably appended to the log (record batches as written), by stream",
            m.appended_bytes.clone(),
        );
        r.register(
            "fsync_duration_seconds",
            "Time of each durable flush of log and catalog data (fdatasync, with the write it \
             completes when the backend does both in one call)",
            m.fsync_seconds.clone(),
        );
        r.register(
            "log_disk_bytes",
            "Bytes of all stream log files on disk",
            m.log_bytes.clone(),
        );
        r.register(
            "projection_lag_records",
            "Records a projection has not applied yet, by projection (none exist yet)",
            m.projection_lag.clone(),
        );
        m
    }

    /// Counts an error sent to a client.
    pub fn error(&self, sqlstate: &str) {
        // SQLSTATEs are five characters from a fixed alphabet; anything else is a bug upstream
        // and is counted under one label rather than growing the registry.
        let code = if sqlstate.len() == 5 && sqlstate.bytes().all(|b| b.is_ascii_alphanumeric()) {
            sqlstate.to_string()
        } else {
            "other".to_string()
        };
        self.errors.get_or_create(&vec![("sqlstate", code)]).inc();
    }

    /// The Prometheus text exposition (format 0.0.4), with the log size measured just before.
    pub fn encode(&self, log_disk_bytes: u64) -> String {
        self.log_bytes
            .set(i64::try_from(log_disk_bytes).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The statement kinds `braid_statements_total` and friends are labelled with: the leading
/// keyword, lower-cased, then `empty` and `other`.
const KINDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "copy",
    "create",
    "drop",
    "alter",
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "set",
    "show",
    "with",
    "values",
    "explain",
    "truncate",
    "prepare",
    "execute",
    "deallocate",
    "discard",
    "reset",
    "empty",
    "other",
];

const KIND_EMPTY: usize = KINDS.len() - 2;
const KIND_OTHER: usize = KINDS.len() - 1;

/// The kind of a statement (an index into [`KINDS`]): its first keyword, from a fixed list.
fn statement_kind(sql: &str) -> usize {
    let word = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    if word.is_empty() {
        return KIND_EMPTY;
    }
    KINDS[..KIND_EMPTY]
        .iter()
        .position(|k| k.eq_ignore_ascii_case(word))
        .unwrap_or(KIND_OTHER)
}

/// One statement kind's series, looked up once: a label lookup in each family on every
/// statement (a `String` label, hashing and the family's lock) cost more than the
/// statement-level work of a prepared point read.
struct KindMetrics {
    statements: Counter,
    unplanned: Counter,
    seconds: Histogram,
}

fn kind_metrics(kind: usize) -> Option<&'static KindMetrics> {
    static HANDLES: std::sync::OnceLock<Vec<KindMetrics>> = std::sync::OnceLock::new();
    HANDLES
        .get_or_init(|| {
            KINDS
                .iter()
                .map(|k| {
                    let labels = vec![("kind", k.to_string())];
                    KindMetrics {
                        statements: METRICS.statements.get_or_create(&labels).clone(),
                        unplanned: METRICS.statements_unplanned.get_or_create(&labels).clone(),
                        seconds: METRICS.statement_seconds.get_or_create(&labels).clone(),
                    }
                })
                .collect()
        })
        .get(kind)
}

/// Times a statement from [`statement`] until dropped.
pub struct StatementTimer {
    kind: usize,
    started: Instant,
    unplanned: bool,
}

impl StatementTimer {
    /// The statement ran without being planned again.
    pub fn unplanned(&mut self) {
        self.unplanned = true;
    }
}

/// Starts timing a statement; keep the guard alive until its result is ready.
pub fn statement(sql: &str) -> StatementTimer {
    StatementTimer {
        kind: statement_kind(sql),
        started: Instant::now(),
        unplanned: false,
    }
}

impl Drop for StatementTimer {
    fn drop(&mut self) {
        let Some(m) = kind_metrics(self.kind) else {
            return;
        };
        m.statements.inc();
        if self.unplanned {
            m.unplanned.inc();
        }
        m.seconds.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Sum of the file sizes under `dir` (the stream logs), read on a blocking thread.
pub async fn log_disk_bytes(dir: PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || dir_bytes(&dir))
        .await
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += dir_bytes(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// An I/O backend that times every data sync of the backend it wraps.
#[derive(Debug)]
pub struct MeteredFs {
    inner: SharedFs,
}

impl MeteredFs {
    pub fn wrap(inner: SharedFs) -> SharedFs {
        Arc::new(MeteredFs { inner })
    }
}

impl Fs for MeteredFs {
    fn open(&self, path: &Path, mode: OpenMode) -> IoFuture<'_, IoResult<Arc<dyn FileHandle>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let file = self.inner.open(&path, mode).await?;
            Ok(Arc::new(MeteredFile { inner: file }) as Arc<dyn FileHandle>)
        })
    }
    fn open_direct(&self, path: &Path) -> IoFuture<'_, IoResult<Option<Arc<dyn FileHandle>>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let file = self.inner.open_direct(&path).await?;
            Ok(file.map(|inner| Arc::new(MeteredFile { inner }) as Arc<dyn FileHandle>))
        })
    }
    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, IoResult<()>> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> IoFuture<'_, IoResult<Vec<String>>> {
        self.inner.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, IoResult<()>> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> IoFuture<'_, IoResult<()>> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, IoResult<()>> {
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> IoFuture<'_, IoResult<()>> {
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> IoFuture<'_, IoResult<bool>> {
        self.inner.exists(path)
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn waits_in_place(&self) -> bool {
        self.inner.waits_in_place()
    }
}

#[derive(Debug)]
struct MeteredFile {
    inner: Arc<dyn FileHandle>,
}

/// `io`, a call that ends in an `fdatasync`, timed into the fsync histogram.
fn timed_sync<'a, T: Send + 'a>(io: IoFuture<'a, T>) -> IoFuture<'a, T> {
    Box::pin(async move {
        let started = Instant::now();
        let r = io.await;
        METRICS
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        r
    })
}

impl FileHandle for MeteredFile {
    fn read_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (IoResult<usize>, Vec<u8>)> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (IoResult<()>, Vec<u8>)> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> IoFuture<'_, IoResult<()>> {
        timed_sync(self.inner.sync_data())
    }
    fn write_all_and_sync(
        &self,
        bufs: Vec<Vec<u8>>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (IoResult<()>, Vec<Vec<u8>>)> {
        let io = self.inner.write_all_and_sync(bufs, offset, sync);
        if sync {
            timed_sync(io)
        } else {
            io
        }
    }
    fn write_range_and_sync(
        &self,
        buf: Vec<u8>,
        range: Range<usize>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (IoResult<()>, Vec<u8>)> {
        let io = self.inner.write_range_and_sync(buf, range, offset, sync);
        if sync {
            timed_sync(io)
        } else {
            io
        }
    }
    fn len(&self) -> IoFuture<'_, IoResult<u64>> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> IoFuture<'_, IoResult<()>> {
        self.inner.set_len(len)
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// Stream logs that count what every log acknowledges, and how many were opened (recovery
/// progress).
#[derive(Debug)]
pub struct MeteredLogs {
    inner: Arc<dyn StreamLogs>,
    /// Set once the engine is open; names streams in labels.
    engine: Arc<OnceLock<Engine>>,
    opened: Arc<AtomicUsize>,
}

impl MeteredLogs {
    pub fn new(inner: Arc<dyn StreamLogs>) -> MeteredLogs {
        MeteredLogs {
            inner,
            engine: Arc::new(OnceLock::new()),
            opened: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Where to look up stream names once the engine exists.
    pub fn engine_slot(&self) -> Arc<OnceLock<Engine>> {
        self.engine.clone()
    }

    /// Logs opened so far.
    pub fn opened(&self) -> Arc<AtomicUsize> {
        self.opened.clone()
    }
}

#[async_trait]
impl StreamLogs for MeteredLogs {
    async fn open(
        &self,
        database: &str,
        id: u64,
        config: &StreamLogConfig,
    ) -> braid_planner::Result<Arc<dyn StreamLog>> {
        let log = self.inner.open(database, id, config).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(MeteredLog {
            inner: log,
            database: database.to_string(),
            id,
            engine: self.engine.clone(),
            labels: OnceLock::new(),
        }))
    }

    async fn remove(&self, database: &str, id: u64) -> braid_planner::Result<()> {
        self.inner.remove(database, id).await
    }
}

#[derive(Debug)]
struct MeteredLog {
    inner: Arc<dyn StreamLog>,
    database: String,
    id: u64,
    engine: Arc<OnceLock<Engine>>,
    labels: OnceLock<Labels>,
}

impl MeteredLog {
    fn labels(&self) -> &Labels {
        self.labels.get_or_init(|| {
            // The first append comes through the catalog, so the name is known by then.
            let name = self
                .engine
                .get()
                .and_then(|e| e.stream_name(&self.database, self.id))
                .unwrap_or_else(|| format!("#{}", self.id));
            vec![("database", self.database.clone()), ("stream", name)]
        })
    }
}

#[async_trait]
impl StreamLog for MeteredLog {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    fn partition_for_key(&self, key: Option<&[u8]>) -> u32 {
        self.inner.partition_for_key(key)
    }
    fn batch_builder(&self, partition: u32) -> BatchBuilder {
        self.inner.batch_builder(partition)
    }
    async fn append(
        &self,
        partition: u32,
        batch: EncodedBatch,
    ) -> braid_planner::Result<(u64, u64)> {
        let rows = u64::from(batch.record_count());
        let bytes = batch.len() as u64;
        let r = self.inner.append(partition, batch).await?;
        // Counted only once durable: the metric promises what clients were promised.
        let labels = self.labels();
        METRICS.appended_rows.get_or_create(labels).inc_by(rows);
        METRICS.appended_bytes.get_or_create(labels).inc_by(bytes);
        Ok(r)
    }
    fn start_offset(&self, partition: u32) -> braid_planner::Result<u64> {
        self.inner.start_offset(partition)
    }
    fn end_offset(&self, partition: u32) -> braid_planner::Result<u64> {
        self.inner.end_offset(partition)
    }
    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> braid_planner::Result<(Vec<StoredRecord>, u64)> {
        self.inner.read(partition, from, max_bytes).await
    }
    async fn offset_for_timestamp(
        &self,
        partition: u32,
        ts_micros: i64,
    ) -> braid_planner::Result<Option<u64>> {
        self.inner.offset_for_timestamp(partition, ts_micros).await
    }
    fn size_bytes(&self) -> Option<u64> {
        self.inner.size_bytes()
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_storage::io::{StdFs, DIRECT_ALIGN};
    use std::os::unix::fs::OpenOptionsExt;

    /// The server wraps its backend in [`MeteredFs`]: the wrapper must keep what LogCore
    /// asks of the backend — direct writes of the active segment, and waiting in place on a
    /// writer thread — or every stream and the commit log silently lose them.
    #[tokio::test]
    async fn the_metered_backend_keeps_direct_writes_and_in_place_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = MeteredFs::wrap(Arc::new(StdFs::new()));
        assert!(fs.waits_in_place(), "the blocking backend waits in place");
        let path = dir.path().join("segment");
        fs.open(&path, OpenMode::ReadWrite).await.expect("open");
        let refused = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .is_err();
        let direct = fs.open_direct(&path).await.expect("open_direct");
        let Some(direct) = direct else {
            assert!(
                refused,
                "O_DIRECT works here, but the wrapper opened no direct handle"
            );
            return;
        };
        // An aligned block inside a larger buffer, as the log's writer hands it over.
        let mut buf = vec![0u8; 3 * DIRECT_ALIGN];
        let first = (DIRECT_ALIGN - buf.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        buf[first..first + DIRECT_ALIGN].fill(b'x');
        let (res, _) = direct
            .write_range_and_sync(buf, first..first + DIRECT_ALIGN, 0, true)
            .await;
        res.expect("direct write");
        let on_disk = std::fs::read(&path).expect("read back");
        assert_eq!(on_disk, vec![b'x'; DIRECT_ALIGN]);
    }
}
