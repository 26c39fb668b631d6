//! A fault-injecting wrapper around a real backend: the Nth call of a chosen kind (counting
//! from 1) fails with an I/O error, and optionally every later call of that kind too. The files
//! underneath are real; only the chosen call is refused. Used by the fault-injection tests.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{FileHandle, Fs, IoFuture, OpenMode, SharedFs, DIRECT_ALIGN};
use crate::error::{Error, Result};

/// The call to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Write,
    Sync,
    Rename,
}

#[derive(Debug)]
struct Plan {
    kind: FaultKind,
    fail_at: AtomicU64,
    sticky: bool,
    calls: AtomicU64,
    injected: AtomicU64,
}

impl Plan {
    /// Counts a call of `kind` and says whether it must fail.
    fn should_fail(&self, kind: FaultKind) -> bool {
        if kind != self.kind {
            return false;
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.fail_at.load(Ordering::SeqCst);
        let fail = at != 0 && (n == at || (self.sticky && n > at));
        if fail {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fail
    }
}

fn injected(op: &'static str, path: &Path) -> Error {
    Error::io(op, path, std::io::Error::other("injected fault"))
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct FaultyFs {
    inner: SharedFs,
    plan: Arc<Plan>,
}

impl FaultyFs {
    /// Fails the `n`th call of `kind` (1-based); with `sticky`, every later one too.
    pub fn new(inner: SharedFs, kind: FaultKind, n: u64, sticky: bool) -> Self {
        FaultyFs {
            inner,
            plan: Arc::new(Plan {
                kind,
                fail_at: AtomicU64::new(n),
                sticky,
                calls: AtomicU64::new(0),
                injected: AtomicU64::new(0),
            }),
        }
    }

    /// How many calls of the planned kind were made so far.
    pub fn calls(&self) -> u64 {
        self.plan.calls.load(Ordering::SeqCst)
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.plan.injected.load(Ordering::SeqCst)
    }

    /// Stops injecting faults.
    pub fn disarm(&self) {
        self.plan.fail_at.store(0, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn FileHandle>,
    plan: Arc<Plan>,
    /// Opened for direct writes: a prefix written before a fault keeps their alignment.
    direct: bool,
}

impl FileHandle for FaultyFile {
    fn read_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<usize>, Vec<u8>)> {
        self.inner.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        if self.plan.should_fail(FaultKind::Write) {
            // A failed write may still have written a prefix, as a real one can.
            let half = buf.len() / 2;
            return Box::pin(async move {
                let prefix = buf[..half].to_vec();
                let _ = self.inner.write_all_at(prefix, offset).await;
                (Err(injected("write", self.inner.path())), buf)
            });
        }
        self.inner.write_all_at(buf, offset)
    }

    fn write_range_and_sync(
        &self,
        buf: Vec<u8>,
        range: Range<usize>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        Box::pin(async move {
            if self.plan.should_fail(FaultKind::Write) {
                // A failed write may still have written a prefix, as a real one can.
                let mut half = range.len() / 2;
                if self.direct {
                    half -= half % DIRECT_ALIGN;
                }
                let (_, buf) = self
                    .inner
                    .write_range_and_sync(buf, range.start..range.start + half, offset, false)
                    .await;
                return (Err(injected("write", self.inner.path())), buf);
            }
            let (res, buf) = self
                .inner
                .write_range_and_sync(buf, range, offset, false)
                .await;
            if res.is_err() || !sync {
                return (res, buf);
            }
            (self.sync_data().await, buf)
        })
    }

    fn sync_data(&self) -> IoFuture<'_, Result<()>> {
        if self.plan.should_fail(FaultKind::Sync) {
            return Box::pin(async move { Err(injected("fdatasync", self.inner.path())) });
        }
        self.inner.sync_data()
    }

    fn len(&self) -> IoFuture<'_, Result<u64>> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> IoFuture<'_, Result<()>> {
        self.inner.set_len(len)
    }

    fn path(&self) -> &Path {
        self.inner.path()
    }
}

impl Fs for FaultyFs {
    fn open(&self, path: &Path, mode: OpenMode) -> IoFuture<'_, Result<Arc<dyn FileHandle>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let inner = self.inner.open(&path, mode).await?;
            Ok(Arc::new(FaultyFile {
                inner,
                plan: self.plan.clone(),
                direct: false,
            }) as Arc<dyn FileHandle>)
        })
    }

    fn open_direct(&self, path: &Path) -> IoFuture<'_, Result<Option<Arc<dyn FileHandle>>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let inner = self.inner.open_direct(&path).await?;
            Ok(inner.map(|inner| {
                Arc::new(FaultyFile {
                    inner,
                    plan: self.plan.clone(),
                    direct: true,
                }) as Arc<dyn FileHandle>
            }))
        })
    }

    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        self.inner.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> IoFuture<'_, Result<Vec<String>>> {
        self.inner.list_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, Result<()>> {
        if self.plan.should_fail(FaultKind::Rename) {
            let from = from.to_path_buf();
            return Box::pin(async move { Err(injected("rename", &from)) });
        }
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        self.inner.remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> IoFuture<'_, Result<bool>> {
        self.inner.exists(path)
    }

    fn name(&self) -> &'static str {
        "faulty"
    }

    fn waits_in_place(&self) -> bool {
        self.inner.waits_in_place()
    }
}
