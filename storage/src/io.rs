//! The disk I/O layer: a small async trait with owned buffers handed in and handed back, so
//! that a completion-based backend (io_uring) and a blocking one share one contract.
//!
//! Backends:
//! - [`StdFs`] (default): `std::fs` calls run on tokio's blocking pool, never on the async
//!   worker threads — or in place on a thread that exists to wait for the disk (a log
//!   partition's writer thread, see `wait_on_disk_here`).
//! - `UringFs` (cargo feature `io-uring`): tokio-uring on a thread of its own. [`backend_from_env`]
//!   probes it at start-up and falls back to [`StdFs`] when io_uring is refused.
//! - [`FaultyFs`]: wraps another backend and fails a chosen call, for fault-injection tests.
//!
//! What an implementer must guarantee:
//! - `write_all_at` writes every byte or returns an error; a short write is never reported as
//!   success.
//! - `sync_data` returns `Ok` only when the file's data written so far is durable
//!   (`fdatasync`); an error is returned as is and never retried inside the backend, because
//!   after a failed `fdatasync` Linux may already have dropped the dirty pages.
//! - `read_at` fills the buffer until it is full or the file ends, and returns the count.
//! - `sync_dir` makes renames, creations and removals in the directory durable.
//! - A handle from [`Fs::open_direct`] bypasses the page cache (`O_DIRECT`): it is only
//!   written through [`FileHandle::write_range_and_sync`] (and synced), with the range's
//!   address, its length and the file offset multiples of [`DIRECT_ALIGN`].

use std::fmt::Debug;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{Error, Result};

mod faulty;
mod std_fs;
#[cfg(feature = "io-uring")]
mod uring;

pub use faulty::{FaultKind, FaultyFs};
pub use std_fs::StdFs;
#[cfg(feature = "io-uring")]
pub use uring::UringFs;

thread_local! {
    static WAITS_ON_DISK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one that exists to wait for the disk (a log partition's writer
/// thread): the blocking backends then make their system calls right here instead of handing
/// them to tokio's blocking pool. The hand-off costs two thread wake-ups per call: timed inside
/// a log writer on this machine, about 50 µs around a 130 µs `pwrite` + `fdatasync`.
pub(crate) fn wait_on_disk_here() {
    WAITS_ON_DISK.with(|w| w.set(true));
}

/// Whether [`wait_on_disk_here`] marked the calling thread.
pub(crate) fn waits_on_disk_here() -> bool {
    WAITS_ON_DISK.with(|w| w.get())
}

/// Runs a blocking closure where it may block: in place on a thread marked by
/// [`wait_on_disk_here`] or outside any runtime (a plain thread, e.g. a tool), else on tokio's
/// blocking pool, never on an async worker.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    if waits_on_disk_here() {
        return f();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => match handle.spawn_blocking(f).await {
            Ok(v) => v,
            // The closure panicked: carry the panic on, it is a bug not an I/O error.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        },
        Err(_) => f(),
    }
}

/// A boxed future, so that the traits stay object safe.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a write through a direct handle ([`Fs::open_direct`]) is aligned to: its memory
/// address, its length and its file offset. 4 KiB covers the logical block size and the
/// memory alignment `O_DIRECT` asks for on the devices and file systems braid runs on (ext4
/// and XFS on 512 B or 4 KiB sectors); a file system that wants more refuses the write with
/// `EINVAL` and the log goes back to buffered writes.
pub const DIRECT_ALIGN: usize = 4096;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file is created if missing and never truncated.
    ReadWrite,
    /// Read and write; the file must not exist yet.
    CreateNew,
}

/// An open file. Positional reads and writes only: there is no shared cursor.
// `len` is an I/O call (it asks the backend); an `is_empty` would only be a second one.
#[allow(clippy::len_without_is_empty)]
pub trait FileHandle: Send + Sync + Debug {
    /// Reads into `buf` from `offset` until `buf` is full or the file ends. Returns the byte
    /// count and the buffer.
    fn read_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<usize>, Vec<u8>)>;
    /// Writes all of `buf` at `offset` and hands the buffer back.
    fn write_all_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<()>, Vec<u8>)>;
    /// `fdatasync`.
    fn sync_data(&self) -> IoFuture<'_, Result<()>>;
    /// Writes the buffers one after another from `offset`, then runs `fdatasync` when `sync`:
    /// a whole group commit in one trip to the backend, so a commit costs one hand-off between
    /// threads instead of one per call. Stops at the first error. The default chains
    /// [`FileHandle::write_all_at`] and [`FileHandle::sync_data`]; backends override it to save
    /// the hand-offs.
    fn write_all_and_sync(
        &self,
        bufs: Vec<Vec<u8>>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<Vec<u8>>)> {
        Box::pin(async move {
            let mut back = Vec::with_capacity(bufs.len());
            let mut at = offset;
            let mut rest = bufs.into_iter();
            while let Some(buf) = rest.next() {
                let n = buf.len() as u64;
                let (res, buf) = self.write_all_at(buf, at).await;
                back.push(buf);
                if let Err(e) = res {
                    back.extend(rest);
                    return (Err(e), back);
                }
                at += n;
            }
            if sync {
                if let Err(e) = self.sync_data().await {
                    return (Err(e), back);
                }
            }
            (Ok(()), back)
        })
    }
    /// Writes `buf[range]` at `offset`, then runs `fdatasync` when `sync`: one trip to the
    /// backend, like [`FileHandle::write_all_and_sync`], for a buffer whose bytes to write do
    /// not start at its beginning (a direct write starts at an aligned address inside it). The
    /// default copies the range out and calls [`FileHandle::write_all_and_sync`].
    fn write_range_and_sync(
        &self,
        buf: Vec<u8>,
        range: Range<usize>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        Box::pin(async move {
            let Some(bytes) = buf.get(range.clone()).map(<[u8]>::to_vec) else {
                let e = std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("range {range:?} is outside a buffer of {} bytes", buf.len()),
                );
                return (Err(Error::io("write", self.path(), e)), buf);
            };
            let (res, _) = self.write_all_and_sync(vec![bytes], offset, sync).await;
            (res, buf)
        })
    }
    /// Current length in bytes.
    fn len(&self) -> IoFuture<'_, Result<u64>>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> IoFuture<'_, Result<()>>;
    /// The path the file was opened at (for error messages).
    fn path(&self) -> &Path;
}

/// A file system: opens files and changes directories.
pub trait Fs: Send + Sync + Debug + 'static {
    fn open(&self, path: &Path, mode: OpenMode) -> IoFuture<'_, Result<Arc<dyn FileHandle>>>;
    /// Opens an existing file a second time for direct writes (`O_DIRECT`: no copy into the
    /// page cache, the device reads the caller's buffer), or `None` when the backend or the file
    /// system does not offer them (tmpfs refuses `O_DIRECT`). The handle only writes: see the
    /// module docs for its alignment rules.
    fn open_direct(&self, path: &Path) -> IoFuture<'_, Result<Option<Arc<dyn FileHandle>>>> {
        let _ = path;
        Box::pin(async { Ok(None) })
    }
    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list_dir(&self, path: &Path) -> IoFuture<'_, Result<Vec<String>>>;
    /// Atomic rename; not durable until [`Fs::sync_dir`] on the parent.
    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, Result<()>>;
    fn remove_file(&self, path: &Path) -> IoFuture<'_, Result<()>>;
    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>>;
    /// `fsync` of a directory.
    fn sync_dir(&self, path: &Path) -> IoFuture<'_, Result<()>>;
    /// Whether a path exists.
    fn exists(&self, path: &Path) -> IoFuture<'_, Result<bool>>;
    /// A short name for logs and benchmark tables.
    fn name(&self) -> &'static str;
    /// Whether the backend's calls block the calling thread when it is marked as one that
    /// waits on the disk (the blocking backend then makes its system calls in place). A log
    /// partition's writer gets a writer thread for such a backend; for one that completes its
    /// I/O elsewhere (io_uring's ring thread) the writer stays an async task, where a thread
    /// of its own would only add two thread hops to every commit (a single appender's
    /// acknowledgement on io_uring went from ~150 to ~205 µs that way).
    fn waits_in_place(&self) -> bool {
        false
    }
}

/// The shared handle every store holds.
pub type SharedFs = Arc<dyn Fs>;

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Std,
    Uring,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "std" | "blocking" | "" => Ok(Backend::Std),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            other => Err(Error::InvalidArgument(format!(
                "unknown I/O backend {other:?}: use \"std\" or \"uring\""
            ))),
        }
    }
}

/// Opens the requested backend. `Uring` is probed first; when the kernel or a seccomp filter
/// refuses io_uring (or the crate was built without the feature) the blocking backend is used
/// and a warning says so.
pub fn open_backend(backend: Backend) -> SharedFs {
    match backend {
        Backend::Std => Arc::new(StdFs::new()),
        Backend::Uring => {
            #[cfg(feature = "io-uring")]
            {
                match UringFs::start() {
                    Ok(fs) => return Arc::new(fs),
                    Err(e) => {
                        tracing::warn!(
                            "io_uring is not available ({e}); using the blocking I/O backend"
                        )
                    }
                }
            }
            #[cfg(not(feature = "io-uring"))]
            tracing::warn!("built without the io-uring feature; using the blocking I/O backend");
            Arc::new(StdFs::new())
        }
    }
}

/// The backend named by `BRAID_IO_BACKEND` (`std` when unset). Tests use this so that the same
/// suite runs on every backend. With `BRAID_REQUIRE_URING=1` a refused io_uring is an error
/// instead of a fallback, so that CI cannot pass on the blocking backend by accident.
pub fn backend_from_env() -> Result<SharedFs> {
    let choice: Backend = std::env::var("BRAID_IO_BACKEND")
        .unwrap_or_default()
        .parse()?;
    let fs = open_backend(choice);
    let required = std::env::var("BRAID_REQUIRE_URING").is_ok_and(|v| v == "1");
    if choice == Backend::Uring && required && fs.name() != "uring" {
        return Err(Error::InvalidArgument(
            "BRAID_REQUIRE_URING=1 but io_uring is not available".into(),
        ));
    }
    Ok(fs)
}

/// Durable replace: write `bytes` to a temporary file beside `path`, `fdatasync` it, rename it
/// over `path` and `fsync` the directory. A crash leaves either the old or the new file.
pub async fn write_file_atomic(fs: &dyn Fs, path: &Path, bytes: Vec<u8>) -> Result<()> {
    let tmp = tmp_path(path);
    if fs.exists(&tmp).await? {
        fs.remove_file(&tmp).await?;
    }
    let file = fs.open(&tmp, OpenMode::CreateNew).await?;
    let (res, _) = file.write_all_at(bytes, 0).await;
    res?;
    file.sync_data().await?;
    drop(file);
    fs.rename(&tmp, path).await?;
    let dir = parent_dir(path);
    fs.sync_dir(&dir).await
}

/// [`write_file_atomic`] for several files at once, all in `dir`: the temporary files are
/// written and `fdatasync`ed concurrently (one device flush's wait instead of one per file),
/// then renamed in the order given, then the directory is `fsync`ed once. A crash leaves each
/// file either old or new, and a file whose rename is durable was durable before it.
pub async fn write_files_atomic(
    fs: &dyn Fs,
    dir: &Path,
    files: Vec<(PathBuf, Vec<u8>)>,
) -> Result<()> {
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    futures::future::try_join_all(files.into_iter().map(|(path, bytes)| async move {
        let tmp = tmp_path(&path);
        if fs.exists(&tmp).await? {
            fs.remove_file(&tmp).await?;
        }
        let file = fs.open(&tmp, OpenMode::CreateNew).await?;
        let (res, _) = file.write_all_at(bytes, 0).await;
        res?;
        file.sync_data().await
    }))
    .await?;
    for path in &paths {
        fs.rename(&tmp_path(path), path).await?;
    }
    fs.sync_dir(dir).await
}

/// Reads a whole file.
pub async fn read_file(fs: &dyn Fs, path: &Path) -> Result<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read).await?;
    let len = file.len().await?;
    let len = usize::try_from(len)
        .map_err(|_| Error::corruption(path, 0, "file is larger than memory can hold"))?;
    let (res, mut buf) = file.read_at(vec![0; len], 0).await;
    let n = res?;
    buf.truncate(n);
    Ok(buf)
}

/// The temporary name used by [`write_file_atomic`].
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
