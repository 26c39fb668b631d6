//! The io_uring backend: [`UringFs`] runs tokio-uring on one dedicated OS thread (the ring
//! thread) and serves positional reads, writes, `fdatasync` and `statx` from it, many operations
//! in flight at once.
//!
//! What it owns: the ring thread, its io_uring instance, and the ring side of every open file.
//! tokio-uring files are `!Send`, so they live on the ring thread in a map keyed by a `u64` id;
//! callers hold a `Send + Sync` handle carrying the id and the command sender, which closes the
//! ring side when dropped.
//!
//! What must stay true:
//! - The ring thread handles commands in the order they arrive: a file is registered before any
//!   command that names its id, and its `Close` comes after every command its handle sent. Each
//!   operation then runs as a task of its own, so calls that are not awaited one after another
//!   may complete in any order, as on any backend; `sync_data` covers the writes that completed
//!   before it was called.
//! - A buffer belongs to the ring thread while the kernel may write into it, so dropping a
//!   call's future early never frees memory under the kernel: the operation runs to completion
//!   and its result is thrown away.
//! - No call hangs once the ring thread is gone: a command that cannot be sent, or whose reply
//!   sender died with the thread's tasks, is an I/O error, and so is every later call. The
//!   buffer handed back with such an error may be empty.
//! - [`UringFs::start`] is a real probe: it creates the ring and writes, `fdatasync`s, reads and
//!   `statx`es a temporary file through it, so a kernel or seccomp filter that refuses io_uring
//!   (ENOSYS, EPERM) or one of those operations is found at start-up, where `open_backend` can
//!   still fall back to the blocking backend.
//!
//! Not through io_uring: opening, `set_len` and directory work use `std::fs` on tokio's blocking
//! pool. tokio-uring 0.5 has no truncate operation (IORING_OP_FTRUNCATE needs Linux 6.9) and no
//! safe way back from its file to a `std::fs::File`, and `unsafe` is denied; so a file is opened
//! with `std::fs`, its descriptor is duplicated and the copy is handed to the ring. A writable
//! file thus holds two descriptors (the `std` one serves `set_len`); a read-only file holds one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_uring::buf::BoundedBuf;

use super::std_fs::list_dir_blocking;
use super::{blocking, FileHandle, Fs, IoFuture, OpenMode};
use crate::error::{Error, Result};

/// Submission queue entries of the ring. tokio-uring submits early when the queue is full, so
/// this bounds one batch of submissions, not the number of operations in flight.
const RING_SQ_ENTRIES: u32 = 256;

/// Largest length of one read or write submission. The kernel takes a 32-bit length and
/// tokio-uring casts without checking, so a larger buffer is split here rather than letting the
/// length wrap (a 4 GiB read would otherwise ask for 0 bytes and look like the end of the file).
const IO_CHUNK_BYTES_MAX: usize = 1 << 30;

/// Bytes the start-up probe writes and reads back.
const PROBE_BYTES: &[u8] = b"braid io_uring probe";

type Reply<T> = oneshot::Sender<T>;

/// What a write-all-then-sync request answers: the failed step and its error, or success, plus
/// the buffers for reuse.
type WriteAllSyncResult = (
    std::result::Result<(), (&'static str, io::Error)>,
    Vec<Vec<u8>>,
);

/// The same for one buffer written from a range.
type WriteRangeSyncResult = (std::result::Result<(), (&'static str, io::Error)>, Vec<u8>);

/// What a caller asks of the ring thread. Every command that expects an answer carries the
/// sender its caller waits on, so the unbounded queue holds at most one command per call in
/// progress (plus `Register` and `Close`, one each per open file): callers bound it.
enum Command {
    /// Hands the ring the descriptor of file `id`.
    Register { id: u64, file: File },
    Read {
        id: u64,
        buf: Vec<u8>,
        offset: u64,
        reply: Reply<(io::Result<usize>, Vec<u8>)>,
    },
    Write {
        id: u64,
        buf: Vec<u8>,
        offset: u64,
        reply: Reply<(io::Result<()>, Vec<u8>)>,
    },
    SyncData {
        id: u64,
        reply: Reply<io::Result<()>>,
    },
    /// Writes the buffers back to back, then `fdatasync` when `sync`: a group commit in one
    /// round trip to the ring thread. The error names the call that failed.
    WriteAllSync {
        id: u64,
        bufs: Vec<Vec<u8>>,
        offset: u64,
        sync: bool,
        reply: Reply<WriteAllSyncResult>,
    },
    /// Writes `buf[range]` at `offset`, then `fdatasync` when `sync`.
    WriteRangeSync {
        id: u64,
        buf: Vec<u8>,
        range: Range<usize>,
        offset: u64,
        sync: bool,
        reply: Reply<WriteRangeSyncResult>,
    },
    Len {
        id: u64,
        reply: Reply<io::Result<u64>>,
    },
    /// The handle of file `id` was dropped.
    Close { id: u64 },
    /// Test only: a call that never completes, to stand for an operation in flight.
    #[cfg(test)]
    Stall { reply: Reply<io::Result<()>> },
    /// Test only: kills the ring thread.
    #[cfg(test)]
    Crash,
}

fn ring_stopped() -> io::Error {
    io::Error::other("the io_uring thread has stopped")
}

/// The sending side of the ring thread's command queue.
#[derive(Debug, Clone)]
struct Ring {
    tx: mpsc::UnboundedSender<Command>,
}

impl Ring {
    /// Queues a command; hands it back when the ring thread is gone.
    fn send(&self, cmd: Command) -> std::result::Result<(), Command> {
        self.tx.send(cmd).map_err(|e| e.0)
    }

    /// Whether the ring thread still takes commands. Its receiver is dropped when it exits or
    /// panics, so this turns false for good at that point.
    fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Sends a command without a buffer and waits for its answer.
    async fn call<T>(&self, make: impl FnOnce(Reply<io::Result<T>>) -> Command) -> io::Result<T> {
        let (reply, answer) = oneshot::channel();
        if self.send(make(reply)).is_err() {
            return Err(ring_stopped());
        }
        // The reply sender is dropped unanswered only when the task holding it died with the
        // ring thread.
        answer.await.unwrap_or_else(|_| Err(ring_stopped()))
    }

    /// Sends a command that owns `buf` and waits for the answer and the buffer.
    async fn call_with_buf<T>(
        &self,
        buf: Vec<u8>,
        make: impl FnOnce(Vec<u8>, Reply<(io::Result<T>, Vec<u8>)>) -> Command,
    ) -> (io::Result<T>, Vec<u8>) {
        let (reply, answer) = oneshot::channel();
        if let Err(cmd) = self.send(make(buf, reply)) {
            let buf = match cmd {
                Command::Read { buf, .. } | Command::Write { buf, .. } => buf,
                _ => Vec::new(),
            };
            return (Err(ring_stopped()), buf);
        }
        match answer.await {
            Ok(answer) => answer,
            // The buffer died with the ring thread's task.
            Err(_) => (Err(ring_stopped()), Vec::new()),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct UringFs {
    ring: Ring,
    next_id: AtomicU64,
}

impl UringFs {
    /// Starts the ring thread and probes io_uring with a temporary file in
    /// [`std::env::temp_dir`]. Returns an error, never panics, when the kernel or a seccomp
    /// filter refuses io_uring or one of the operations this backend uses.
    ///
    /// Blocks the calling thread until the probe is done (a handful of system calls), so it
    /// may be called once at start-up from async code too.
    pub fn start() -> Result<UringFs> {
        const OP: &str = "start io_uring with the probe file";
        let probe_path = probe_path();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_probe_path = probe_path.clone();
        std::thread::Builder::new()
            .name("braid-uring".to_string())
            .spawn(move || run_ring(rx, &thread_probe_path, ready_tx))
            .map_err(|e| Error::io(OP, &probe_path, e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(UringFs {
                ring: Ring { tx },
                next_id: AtomicU64::new(0),
            }),
            Ok(Err(e)) => Err(Error::io(OP, &probe_path, e)),
            // The thread died without answering: tokio-uring panicked while setting up.
            Err(_) => Err(Error::io(
                OP,
                &probe_path,
                io::Error::other("the io_uring thread stopped during the probe"),
            )),
        }
    }

    /// Runs a directory operation with `std::fs` on the blocking pool, unless the ring thread
    /// is gone: then this backend is broken and says so on every call.
    async fn dir_op<T: Send + 'static>(
        &self,
        op: &'static str,
        path: &Path,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        if !self.ring.is_alive() {
            return Err(Error::io(op, path, ring_stopped()));
        }
        blocking(f).await.map_err(|e| Error::io(op, path, e))
    }
}

/// A unique path for the start-up probe: pid, a counter and the clock, so that neither another
/// process nor a file left over by a crashed one collides with it.
fn probe_path() -> PathBuf {
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "braid-uring-probe-{}-{n}-{nanos}",
        std::process::id()
    ))
}

/// The ring thread: sets up the ring, reports the probe's outcome on `ready`, then serves
/// commands until every sender is dropped.
fn run_ring(
    commands: mpsc::UnboundedReceiver<Command>,
    probe_path: &Path,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let mut builder = tokio_uring::builder();
    builder.entries(RING_SQ_ENTRIES);
    // `Runtime::new` rather than `tokio_uring::start`, which panics when the ring is refused.
    let runtime = match tokio_uring::Runtime::new(&builder) {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let probed = probe(probe_path).await;
        let ok = probed.is_ok();
        // A failed send means `start` is gone and nobody holds a sender: nothing to serve.
        if ready.send(probed).is_err() || !ok {
            return;
        }
        serve(commands).await;
    });
}

/// Exercises every ring operation this backend uses on a fresh temporary file.
async fn probe(path: &Path) -> io::Result<()> {
    tokio_uring::no_op().await?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let res = probe_file(tokio_uring::fs::File::from_std(file)).await;
    // Best effort: a leftover probe file in the temporary directory is harmless.
    let _ = std::fs::remove_file(path);
    res
}

async fn probe_file(file: tokio_uring::fs::File) -> io::Result<()> {
    let (res, _) = write_all_at(&file, PROBE_BYTES.to_vec(), 0).await;
    res?;
    file.sync_data().await?;
    let (res, buf) = read_full_at(&file, vec![0; PROBE_BYTES.len()], 0).await;
    let n = res?;
    if buf.get(..n) != Some(PROBE_BYTES) {
        return Err(io::Error::other(
            "io_uring read back other bytes than it wrote",
        ));
    }
    let size = file.statx().await?.stx_size;
    if size != PROBE_BYTES.len() as u64 {
        return Err(io::Error::other(format!(
            "io_uring statx reported {size} bytes for a {}-byte file",
            PROBE_BYTES.len()
        )));
    }
    Ok(())
}

fn not_open(id: u64) -> io::Error {
    io::Error::other(format!("file {id} is not open on the io_uring thread"))
}

/// The command loop of the ring thread. Lookups and registrations happen here, in arrival
/// order; each operation runs as a task of its own so that many are in flight at once.
async fn serve(mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut files: HashMap<u64, Rc<tokio_uring::fs::File>> = HashMap::new();
    while let Some(cmd) = commands.recv().await {
        match cmd {
            Command::Register { id, file } => {
                files.insert(id, Rc::new(tokio_uring::fs::File::from_std(file)));
            }
            Command::Close { id } => {
                // Tasks still running on the file hold their own reference; the descriptor is
                // closed when the last of them finishes.
                files.remove(&id);
            }
            Command::Read {
                id,
                buf,
                offset,
                reply,
            } => match files.get(&id) {
                Some(file) => {
                    let file = Rc::clone(file);
                    tokio_uring::spawn(async move {
                        // A failed send means the caller stopped waiting.
                        let _ = reply.send(read_full_at(&file, buf, offset).await);
                    });
                }
                None => {
                    let _ = reply.send((Err(not_open(id)), buf));
                }
            },
            Command::Write {
                id,
                buf,
                offset,
                reply,
            } => match files.get(&id) {
                Some(file) => {
                    let file = Rc::clone(file);
                    tokio_uring::spawn(async move {
                        let _ = reply.send(write_all_at(&file, buf, offset).await);
                    });
                }
                None => {
                    let _ = reply.send((Err(not_open(id)), buf));
                }
            },
            Command::SyncData { id, reply } => match files.get(&id) {
                Some(file) => {
                    let file = Rc::clone(file);
                    tokio_uring::spawn(async move {
                        // Never retried: after a failed fdatasync the pages may be gone.
                        let _ = reply.send(file.sync_data().await);
                    });
                }
                None => {
                    let _ = reply.send(Err(not_open(id)));
                }
            },
            Command::WriteAllSync {
                id,
                bufs,
                offset,
                sync,
                reply,
            } => match files.get(&id) {
                Some(file) => {
                    let file = Rc::clone(file);
                    tokio_uring::spawn(async move {
                        let _ = reply.send(write_all_then_sync(&file, bufs, offset, sync).await);
                    });
                }
                None => {
                    let _ = reply.send((Err(("write", not_open(id))), bufs));
                }
            },
            Command::WriteRangeSync {
                id,
                buf,
                range,
                offset,
                sync,
                reply,
            } => match files.get(&id) {
                Some(file) => {
                    let file = Rc::clone(file);
                    tokio_uring::spawn(async move {
                        let _ = reply
                            .send(write_range_then_sync(&file, buf, range, offset, sync).await);
                    });
                }
                None => {
                    let _ = reply.send((Err(("write", not_open(id))), buf));
                }
            },
            Command::Len { id, reply } => match files.get(&id) {
                Some(file) => {
                    let file = Rc::clone(file);
                    tokio_uring::spawn(async move {
                        let _ = reply.send(file.statx().await.map(|s| s.stx_size));
                    });
                }
                None => {
                    let _ = reply.send(Err(not_open(id)));
                }
            },
            #[cfg(test)]
            Command::Stall { reply } => {
                tokio_uring::spawn(async move {
                    std::future::pending::<()>().await;
                    drop(reply);
                });
            }
            #[cfg(test)]
            Command::Crash => panic!("test asked the io_uring thread to crash"),
        }
    }
}

fn past_max_offset() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the range ends past the largest file offset",
    )
}

/// Reads into `buf[..buf.len()]` from `offset` until it is full or the file ends. The spare
/// capacity beyond `buf.len()` is never touched: tokio-uring would read into it and grow the
/// vector, but the contract is to fill the buffer as handed in.
async fn read_full_at(
    file: &tokio_uring::fs::File,
    mut buf: Vec<u8>,
    offset: u64,
) -> (io::Result<usize>, Vec<u8>) {
    let want = buf.len();
    if offset.checked_add(want as u64).is_none() {
        return (Err(past_max_offset()), buf);
    }
    let mut filled = 0usize;
    while filled < want {
        let end = want.min(filled.saturating_add(IO_CHUNK_BYTES_MAX));
        // The slice is initialised (it lies below `buf.len()`), so the length stays `want`.
        let (res, slice) = file
            .read_at(buf.slice(filled..end), offset + filled as u64)
            .await;
        buf = slice.into_inner();
        match res {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(filled), buf)
}

/// Writes all of `buf` at `offset`, resubmitting the rest after a short write.
async fn write_all_at(
    file: &tokio_uring::fs::File,
    buf: Vec<u8>,
    offset: u64,
) -> (io::Result<()>, Vec<u8>) {
    let len = buf.len();
    write_range_at(file, buf, 0..len, offset).await
}

/// Writes all of `buf[range]` at `offset`, resubmitting the rest after a short write.
async fn write_range_at(
    file: &tokio_uring::fs::File,
    mut buf: Vec<u8>,
    range: Range<usize>,
    offset: u64,
) -> (io::Result<()>, Vec<u8>) {
    if range.start > range.end || range.end > buf.len() {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {range:?} is outside a buffer of {} bytes", buf.len()),
        );
        return (Err(e), buf);
    }
    let len = range.len();
    if offset.checked_add(len as u64).is_none() {
        return (Err(past_max_offset()), buf);
    }
    let mut written = 0usize;
    while written < len {
        let end = len.min(written.saturating_add(IO_CHUNK_BYTES_MAX));
        let (res, slice) = file
            .write_at(
                buf.slice(range.start + written..range.start + end),
                offset + written as u64,
            )
            .submit()
            .await;
        buf = slice.into_inner();
        match res {
            // Would loop forever: report it, a short write is never success.
            Ok(0) => {
                return (
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the kernel accepted none of the bytes",
                    )),
                    buf,
                )
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// Writes each buffer after the previous one, then syncs; stops at the first error.
async fn write_all_then_sync(
    file: &tokio_uring::fs::File,
    bufs: Vec<Vec<u8>>,
    offset: u64,
    sync: bool,
) -> (
    std::result::Result<(), (&'static str, io::Error)>,
    Vec<Vec<u8>>,
) {
    let mut back = Vec::with_capacity(bufs.len());
    let mut at = offset;
    let mut rest = bufs.into_iter();
    while let Some(buf) = rest.next() {
        let n = buf.len() as u64;
        let (res, buf) = write_all_at(file, buf, at).await;
        back.push(buf);
        if let Err(e) = res {
            back.extend(rest);
            return (Err(("write", e)), back);
        }
        at += n;
    }
    if sync {
        // Never retried: after a failed fdatasync the pages may be gone.
        if let Err(e) = file.sync_data().await {
            return (Err(("fdatasync", e)), back);
        }
    }
    (Ok(()), back)
}

/// Writes `buf[range]`, then syncs when `sync`.
async fn write_range_then_sync(
    file: &tokio_uring::fs::File,
    buf: Vec<u8>,
    range: Range<usize>,
    offset: u64,
    sync: bool,
) -> WriteRangeSyncResult {
    let (res, buf) = write_range_at(file, buf, range, offset).await;
    if let Err(e) = res {
        return (Err(("write", e)), buf);
    }
    if sync {
        // Never retried: after a failed fdatasync the pages may be gone.
        if let Err(e) = file.sync_data().await {
            return (Err(("fdatasync", e)), buf);
        }
    }
    (Ok(()), buf)
}

/// A file open on the ring thread, seen from any thread.
#[derive(Debug)]
struct UringFile {
    id: u64,
    path: PathBuf,
    ring: Ring,
    /// The `std` descriptor of a writable file, for `set_len`; `None` when opened read-only.
    std_file: Option<Arc<File>>,
    /// Opened with `O_DSYNC`: a completed write is already durable.
    dsync: bool,
}

impl Drop for UringFile {
    fn drop(&mut self) {
        // When the ring thread is gone its files went with it: nothing left to close.
        let _ = self.ring.send(Command::Close { id: self.id });
    }
}

impl FileHandle for UringFile {
    fn read_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<usize>, Vec<u8>)> {
        let id = self.id;
        Box::pin(async move {
            let (res, buf) = self
                .ring
                .call_with_buf(buf, |buf, reply| Command::Read {
                    id,
                    buf,
                    offset,
                    reply,
                })
                .await;
            (res.map_err(|e| Error::io("read", &self.path, e)), buf)
        })
    }

    fn write_all_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        let id = self.id;
        Box::pin(async move {
            let (res, buf) = self
                .ring
                .call_with_buf(buf, |buf, reply| Command::Write {
                    id,
                    buf,
                    offset,
                    reply,
                })
                .await;
            (res.map_err(|e| Error::io("write", &self.path, e)), buf)
        })
    }

    fn write_all_and_sync(
        &self,
        bufs: Vec<Vec<u8>>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<Vec<u8>>)> {
        let id = self.id;
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let cmd = Command::WriteAllSync {
                id,
                bufs,
                offset,
                sync,
                reply,
            };
            if let Err(cmd) = self.ring.send(cmd) {
                let bufs = match cmd {
                    Command::WriteAllSync { bufs, .. } => bufs,
                    _ => Vec::new(),
                };
                return (Err(Error::io("write", &self.path, ring_stopped())), bufs);
            }
            match answer.await {
                Ok((res, bufs)) => (res.map_err(|(op, e)| Error::io(op, &self.path, e)), bufs),
                Err(_) => (
                    Err(Error::io("write", &self.path, ring_stopped())),
                    Vec::new(),
                ),
            }
        })
    }

    fn write_range_and_sync(
        &self,
        buf: Vec<u8>,
        range: Range<usize>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        let id = self.id;
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let cmd = Command::WriteRangeSync {
                id,
                buf,
                range,
                offset,
                sync: sync && !self.dsync,
                reply,
            };
            if let Err(cmd) = self.ring.send(cmd) {
                let buf = match cmd {
                    Command::WriteRangeSync { buf, .. } => buf,
                    _ => Vec::new(),
                };
                return (Err(Error::io("write", &self.path, ring_stopped())), buf);
            }
            match answer.await {
                Ok((res, buf)) => (res.map_err(|(op, e)| Error::io(op, &self.path, e)), buf),
                Err(_) => (
                    Err(Error::io("write", &self.path, ring_stopped())),
                    Vec::new(),
                ),
            }
        })
    }

    fn sync_data(&self) -> IoFuture<'_, Result<()>> {
        let id = self.id;
        Box::pin(async move {
            self.ring
                .call(|reply| Command::SyncData { id, reply })
                .await
                .map_err(|e| Error::io("fdatasync", &self.path, e))
        })
    }

    fn len(&self) -> IoFuture<'_, Result<u64>> {
        let id = self.id;
        Box::pin(async move {
            self.ring
                .call(|reply| Command::Len { id, reply })
                .await
                .map_err(|e| Error::io("stat", &self.path, e))
        })
    }

    fn set_len(&self, len: u64) -> IoFuture<'_, Result<()>> {
        let file = self.std_file.clone();
        Box::pin(async move {
            let res = match file {
                _ if !self.ring.is_alive() => Err(ring_stopped()),
                Some(file) => blocking(move || file.set_len(len)).await,
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the file was opened read-only",
                )),
            };
            res.map_err(|e| Error::io("truncate", &self.path, e))
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens `path` with `std::fs` and returns the descriptor for the ring and, for a writable
/// file, a duplicate kept for `set_len`.
fn open_pair(path: &Path, mode: OpenMode) -> io::Result<(File, Option<File>)> {
    let mut o = OpenOptions::new();
    o.read(true);
    match mode {
        OpenMode::Read => {}
        OpenMode::ReadWrite => {
            o.write(true).create(true);
        }
        OpenMode::CreateNew => {
            o.write(true).create_new(true);
        }
    }
    let file = o.open(path)?;
    match mode {
        // A read-only descriptor cannot be truncated: one descriptor is enough.
        OpenMode::Read => Ok((file, None)),
        OpenMode::ReadWrite | OpenMode::CreateNew => {
            let ring_side = file.try_clone()?;
            Ok((ring_side, Some(file)))
        }
    }
}

impl Fs for UringFs {
    fn open(&self, path: &Path, mode: OpenMode) -> IoFuture<'_, Result<Arc<dyn FileHandle>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            if !self.ring.is_alive() {
                return Err(Error::io("open", &path, ring_stopped()));
            }
            let p = path.clone();
            let (ring_file, std_file) = blocking(move || open_pair(&p, mode))
                .await
                .map_err(|e| Error::io("open", &path, e))?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            // Registering needs no answer: the queue is ordered, so every later command on
            // `id` finds the file. If the send fails the descriptors are simply dropped.
            if self
                .ring
                .send(Command::Register {
                    id,
                    file: ring_file,
                })
                .is_err()
            {
                return Err(Error::io("open", &path, ring_stopped()));
            }
            Ok(Arc::new(UringFile {
                id,
                path,
                ring: self.ring.clone(),
                std_file: std_file.map(Arc::new),
                dsync: false,
            }) as Arc<dyn FileHandle>)
        })
    }

    fn open_direct(&self, path: &Path) -> IoFuture<'_, Result<Option<Arc<dyn FileHandle>>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            if !self.ring.is_alive() {
                return Err(Error::io("open for direct writes", &path, ring_stopped()));
            }
            let p = path.clone();
            // O_DSYNC: each write is durable when it completes, so a commit is one ring
            // operation instead of a write and an `fdatasync`, each a hop to a kernel worker.
            let Some(file) = blocking(move || super::std_fs::open_direct_file(&p, libc::O_DSYNC))
                .await
                .map_err(|e| Error::io("open for direct writes", &path, e))?
            else {
                return Ok(None);
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if self.ring.send(Command::Register { id, file }).is_err() {
                return Err(Error::io("open for direct writes", &path, ring_stopped()));
            }
            Ok(Some(Arc::new(UringFile {
                id,
                path,
                ring: self.ring.clone(),
                std_file: None,
                dsync: true,
            }) as Arc<dyn FileHandle>))
        })
    }

    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            self.dir_op("create directory", &path, move || {
                std::fs::create_dir_all(&p)
            })
            .await
        })
    }

    fn list_dir(&self, path: &Path) -> IoFuture<'_, Result<Vec<String>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            self.dir_op("list directory", &path, move || list_dir_blocking(&p))
                .await
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, Result<()>> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        Box::pin(async move {
            let f = from.clone();
            self.dir_op("rename", &from, move || std::fs::rename(&f, &to))
                .await
        })
    }

    fn remove_file(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            self.dir_op("remove", &path, move || std::fs::remove_file(&p))
                .await
        })
    }

    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            self.dir_op("remove directory", &path, move || {
                std::fs::remove_dir_all(&p)
            })
            .await
        })
    }

    fn sync_dir(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            self.dir_op("fsync directory", &path, move || {
                File::open(&p).and_then(|d| d.sync_all())
            })
            .await
        })
    }

    fn exists(&self, path: &Path) -> IoFuture<'_, Result<bool>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            self.dir_op("stat", &path, move || p.try_exists()).await
        })
    }

    fn name(&self) -> &'static str {
        "uring"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::io::{open_backend, read_file, write_file_atomic, Backend, SharedFs};

    /// The backend under test, or `None` where io_uring is refused: the test is then skipped,
    /// unless `BRAID_REQUIRE_URING` is set (on machines known to allow io_uring).
    fn uring() -> Option<UringFs> {
        match UringFs::start() {
            Ok(fs) => Some(fs),
            Err(e) => {
                assert!(
                    std::env::var_os("BRAID_REQUIRE_URING").is_none(),
                    "io_uring is required but refused: {e}"
                );
                eprintln!("skipping: io_uring is not available here ({e})");
                None
            }
        }
    }

    async fn read_vec(file: &dyn FileHandle, len: usize, offset: u64) -> Result<Vec<u8>> {
        let (res, mut buf) = file.read_at(vec![0; len], offset).await;
        let n = res?;
        buf.truncate(n);
        Ok(buf)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn write_read_sync_len_set_len_round_trip() -> anyhow::Result<()> {
        let Some(fs) = uring() else { return Ok(()) };
        let fs: SharedFs = Arc::new(fs);
        assert_eq!(fs.name(), "uring");
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a");
        let file = fs.open(&path, OpenMode::CreateNew).await?;
        assert_eq!(file.path(), path);

        let (res, buf) = file.write_all_at(b"hello".to_vec(), 0).await;
        res?;
        assert_eq!(buf, b"hello", "the buffer comes back unchanged");
        let (res, _) = file.write_all_at(b"world".to_vec(), 10).await;
        res?;
        file.sync_data().await?;
        assert_eq!(file.len().await?, 15);
        assert_eq!(read_vec(&*file, 15, 0).await?, b"hello\0\0\0\0\0world");

        // Past the end: a short count, and the buffer keeps the length it was handed in with.
        let (res, buf) = file.read_at(vec![7; 100], 0).await;
        assert_eq!(res?, 15);
        assert_eq!(buf.len(), 100);
        assert_eq!(buf.get(15..), Some(&[7u8; 85][..]));
        assert_eq!(read_vec(&*file, 10, 100).await?, b"");

        // Spare capacity is not read into: the buffer is filled to its length only.
        let mut small = Vec::with_capacity(64);
        small.extend_from_slice(&[0; 4]);
        let (res, small) = file.read_at(small, 1).await;
        assert_eq!(res?, 4);
        assert_eq!(small, b"ello");

        // Empty buffers are no-ops.
        let (res, _) = file.write_all_at(Vec::new(), 3).await;
        res?;
        let (res, _) = file.read_at(Vec::new(), 0).await;
        assert_eq!(res?, 0);

        file.set_len(5).await?;
        assert_eq!(file.len().await?, 5);
        assert_eq!(read_vec(&*file, 100, 0).await?, b"hello");
        file.set_len(8).await?;
        assert_eq!(read_vec(&*file, 100, 0).await?, b"hello\0\0\0");
        file.sync_data().await?;
        drop(file);

        // Rename into a subdirectory, make it durable, and read it back through a new handle.
        let sub = dir.path().join("sub/deeper");
        fs.create_dir_all(&sub).await?;
        let moved = sub.join("b");
        fs.rename(&path, &moved).await?;
        fs.sync_dir(&sub).await?;
        fs.sync_dir(dir.path()).await?;
        assert!(!fs.exists(&path).await?);
        assert!(fs.exists(&moved).await?);
        assert_eq!(fs.list_dir(&sub).await?, vec!["b".to_string()]);
        let file = fs.open(&moved, OpenMode::Read).await?;
        assert_eq!(file.len().await?, 8);
        assert_eq!(read_vec(&*file, 8, 0).await?, b"hello\0\0\0");
        // A read-only handle refuses writes and truncation with an error, not a panic.
        let (res, _) = file.write_all_at(b"x".to_vec(), 0).await;
        assert!(res.is_err());
        assert!(file.set_len(0).await.is_err());
        drop(file);

        // ReadWrite opens an existing file without truncating it.
        let file = fs.open(&moved, OpenMode::ReadWrite).await?;
        assert_eq!(file.len().await?, 8);
        let (res, _) = file.write_all_at(b"J".to_vec(), 0).await;
        res?;
        assert_eq!(read_vec(&*file, 8, 0).await?, b"Jello\0\0\0");
        drop(file);

        // The durable-replace helper and whole-file read run on this backend too.
        let manifest = dir.path().join("manifest");
        write_file_atomic(&*fs, &manifest, b"v1".to_vec()).await?;
        write_file_atomic(&*fs, &manifest, b"version 2".to_vec()).await?;
        assert_eq!(read_file(&*fs, &manifest).await?, b"version 2");
        assert!(!fs.exists(&crate::io::tmp_path(&manifest)).await?);

        fs.remove_file(&moved).await?;
        assert!(!fs.exists(&moved).await?);
        fs.remove_dir_all(&dir.path().join("sub")).await?;
        assert_eq!(fs.list_dir(dir.path()).await?, vec!["manifest".to_string()]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn open_errors_are_io_errors() -> anyhow::Result<()> {
        let Some(fs) = uring() else { return Ok(()) };
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("missing");
        match fs.open(&missing, OpenMode::Read).await {
            Err(Error::Io { op, path, source }) => {
                assert_eq!(op, "open");
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected a not-found error, got {other:?}"),
        }
        let path = dir.path().join("f");
        drop(fs.open(&path, OpenMode::CreateNew).await?);
        match fs.open(&path, OpenMode::CreateNew).await {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists)
            }
            other => panic!("expected an already-exists error, got {other:?}"),
        }
        assert!(fs.remove_file(&missing).await.is_err());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn many_operations_in_flight_at_once() -> anyhow::Result<()> {
        let Some(fs) = uring() else { return Ok(()) };
        const TASKS: usize = 64;
        const BLOCK_BYTES: usize = 4096;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("blocks");
        let file = fs.open(&path, OpenMode::CreateNew).await?;

        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let file = Arc::clone(&file);
            tasks.push(tokio::spawn(async move {
                let byte = u8::try_from(i).unwrap_or(u8::MAX);
                let offset = (i * BLOCK_BYTES) as u64;
                let (res, _) = file.write_all_at(vec![byte; BLOCK_BYTES], offset).await;
                res
            }));
        }
        for task in tasks {
            task.await??;
        }
        file.sync_data().await?;
        assert_eq!(file.len().await?, (TASKS * BLOCK_BYTES) as u64);

        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let file = Arc::clone(&file);
            tasks.push(tokio::spawn(async move {
                let (res, buf) = file
                    .read_at(vec![0; BLOCK_BYTES], (i * BLOCK_BYTES) as u64)
                    .await;
                res.map(|n| (i, n, buf))
            }));
        }
        for task in tasks {
            let (i, n, buf) = task.await??;
            let byte = u8::try_from(i).unwrap_or(u8::MAX);
            assert_eq!(n, BLOCK_BYTES);
            assert!(
                buf.iter().all(|b| *b == byte),
                "block {i} reads back what was written"
            );
        }

        // A larger buffer in one call, read back whole.
        let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (res, big_back) = file.write_all_at(big.clone(), 0).await;
        res?;
        assert_eq!(big_back, big);
        assert_eq!(read_vec(&*file, big.len(), 0).await?, big);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dead_ring_thread_fails_pending_and_later_calls() -> anyhow::Result<()> {
        let Some(fs) = uring() else { return Ok(()) };
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let file = fs.open(&path, OpenMode::CreateNew).await?;
        let (res, _) = file.write_all_at(b"before".to_vec(), 0).await;
        res?;

        // A call in flight on the ring thread when it dies...
        let mut stalled = Box::pin(fs.ring.call(|reply| Command::Stall { reply }));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut stalled)
                .await
                .is_err(),
            "the stalled call is in flight"
        );
        assert!(fs.ring.send(Command::Crash).is_ok());
        // ...fails rather than hangs.
        let res = tokio::time::timeout(Duration::from_secs(10), stalled).await?;
        assert!(res.is_err());
        assert!(!fs.ring.is_alive());

        // So does every later call.
        let (res, buf) = file.write_all_at(b"after".to_vec(), 0).await;
        assert!(res.is_err());
        assert_eq!(buf, b"after", "an unsent buffer is handed back");
        let (res, _) = file.read_at(vec![0; 6], 0).await;
        assert!(res.is_err());
        assert!(file.sync_data().await.is_err());
        assert!(file.len().await.is_err());
        assert!(file.set_len(0).await.is_err());
        assert!(fs.open(&path, OpenMode::Read).await.is_err());
        assert!(fs.exists(&path).await.is_err());
        drop(file);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn open_backend_picks_uring_when_it_starts() {
        if uring().is_none() {
            return;
        }
        assert_eq!(open_backend(Backend::Uring).name(), "uring");
    }
}
