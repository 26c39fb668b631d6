//! The blocking backend: `std::fs` and `pread`/`pwrite`/`fdatasync`, each call moved to tokio's
//! blocking pool so that the async worker threads never wait on the disk — except on a thread
//! that exists to wait for it (a log partition's writer), where the call runs in place and
//! saves the pool's two thread wake-ups.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{blocking, FileHandle, Fs, IoFuture, OpenMode};
use crate::error::{Error, Result};

#[derive(Debug, Default, Clone)]
pub struct StdFs;

impl StdFs {
    pub fn new() -> Self {
        StdFs
    }
}

#[derive(Debug)]
struct StdFile {
    file: Arc<File>,
    path: PathBuf,
}

impl FileHandle for StdFile {
    fn read_at(&self, mut buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<usize>, Vec<u8>)> {
        let file = self.file.clone();
        Box::pin(async move {
            let (res, buf) = blocking(move || {
                let mut filled = 0usize;
                let res = loop {
                    if filled == buf.len() {
                        break Ok(filled);
                    }
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break Ok(filled),
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                (res, buf)
            })
            .await;
            (res.map_err(|e| Error::io("read", &self.path, e)), buf)
        })
    }

    fn write_all_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        let file = self.file.clone();
        Box::pin(async move {
            let (res, buf) = blocking(move || {
                let res = file.write_all_at(&buf, offset);
                (res, buf)
            })
            .await;
            (res.map_err(|e| Error::io("write", &self.path, e)), buf)
        })
    }

    fn sync_data(&self) -> IoFuture<'_, Result<()>> {
        let file = self.file.clone();
        Box::pin(async move {
            blocking(move || file.sync_data())
                .await
                .map_err(|e| Error::io("fdatasync", &self.path, e))
        })
    }

    fn write_all_and_sync(
        &self,
        bufs: Vec<Vec<u8>>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<Vec<u8>>)> {
        let file = self.file.clone();
        Box::pin(async move {
            let (res, bufs) = blocking(move || {
                let mut at = offset;
                for buf in &bufs {
                    if let Err(e) = file.write_all_at(buf, at) {
                        return (Err(("write", e)), bufs);
                    }
                    at += buf.len() as u64;
                }
                if sync {
                    if let Err(e) = file.sync_data() {
                        return (Err(("fdatasync", e)), bufs);
                    }
                }
                (Ok(()), bufs)
            })
            .await;
            (res.map_err(|(op, e)| Error::io(op, &self.path, e)), bufs)
        })
    }

    fn write_range_and_sync(
        &self,
        buf: Vec<u8>,
        range: Range<usize>,
        offset: u64,
        sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        let file = self.file.clone();
        Box::pin(async move {
            let (res, buf) = blocking(move || {
                let Some(bytes) = buf.get(range.clone()) else {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("range {range:?} is outside a buffer of {} bytes", buf.len()),
                    );
                    return (Err(("write", e)), buf);
                };
                if let Err(e) = file.write_all_at(bytes, offset) {
                    return (Err(("write", e)), buf);
                }
                if sync {
                    if let Err(e) = file.sync_data() {
                        return (Err(("fdatasync", e)), buf);
                    }
                }
                (Ok(()), buf)
            })
            .await;
            (res.map_err(|(op, e)| Error::io(op, &self.path, e)), buf)
        })
    }

    fn len(&self) -> IoFuture<'_, Result<u64>> {
        let file = self.file.clone();
        Box::pin(async move {
            blocking(move || file.metadata().map(|m| m.len()))
                .await
                .map_err(|e| Error::io("stat", &self.path, e))
        })
    }

    fn set_len(&self, len: u64) -> IoFuture<'_, Result<()>> {
        let file = self.file.clone();
        Box::pin(async move {
            blocking(move || file.set_len(len))
                .await
                .map_err(|e| Error::io("truncate", &self.path, e))
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Fs for StdFs {
    fn open(&self, path: &Path, mode: OpenMode) -> IoFuture<'_, Result<Arc<dyn FileHandle>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            let file = blocking(move || {
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
                o.open(&p)
            })
            .await
            .map_err(|e| Error::io("open", &path, e))?;
            Ok(Arc::new(StdFile {
                file: Arc::new(file),
                path,
            }) as Arc<dyn FileHandle>)
        })
    }

    fn open_direct(&self, path: &Path) -> IoFuture<'_, Result<Option<Arc<dyn FileHandle>>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            let file = blocking(move || open_direct_file(&p, 0))
                .await
                .map_err(|e| Error::io("open for direct writes", &path, e))?;
            Ok(file.map(|file| {
                Arc::new(StdFile {
                    file: Arc::new(file),
                    path,
                }) as Arc<dyn FileHandle>
            }))
        })
    }

    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            blocking(move || std::fs::create_dir_all(&p))
                .await
                .map_err(|e| Error::io("create directory", &path, e))
        })
    }

    fn list_dir(&self, path: &Path) -> IoFuture<'_, Result<Vec<String>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            blocking(move || list_dir_blocking(&p))
                .await
                .map_err(|e| Error::io("list directory", &path, e))
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, Result<()>> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        Box::pin(async move {
            let (f, t) = (from.clone(), to);
            blocking(move || std::fs::rename(&f, &t))
                .await
                .map_err(|e| Error::io("rename", &from, e))
        })
    }

    fn remove_file(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            blocking(move || std::fs::remove_file(&p))
                .await
                .map_err(|e| Error::io("remove", &path, e))
        })
    }

    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            blocking(move || std::fs::remove_dir_all(&p))
                .await
                .map_err(|e| Error::io("remove directory", &path, e))
        })
    }

    fn sync_dir(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            blocking(move || File::open(&p).and_then(|d| d.sync_all()))
                .await
                .map_err(|e| Error::io("fsync directory", &path, e))
        })
    }

    fn exists(&self, path: &Path) -> IoFuture<'_, Result<bool>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let p = path.clone();
            blocking(move || p.try_exists())
                .await
                .map_err(|e| Error::io("stat", &path, e))
        })
    }

    fn name(&self) -> &'static str {
        "std"
    }

    fn waits_in_place(&self) -> bool {
        true
    }
}

/// Shared by the backends that do directory work with `std::fs`.
pub(crate) fn list_dir_blocking(path: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Opens an existing file write-only with `O_DIRECT` and the extra `flags`; `None` when the file
/// system refuses direct I/O (`EINVAL`: tmpfs and some FUSE file systems).
pub(super) fn open_direct_file(path: &Path, flags: i32) -> std::io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | flags)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}
