//! Direct writes of the active segment (`TopicConfig::direct_io`). Each one rewrites the
//! file's partial last block from memory and pads to a 4 KiB boundary with zeros, a lone large
//! batch is written from its own buffer and other groups are gathered: whatever the mix, what
//! is read back (also after reopening, which reads the partial block back from the file) is
//! what was appended, and the closed files hold exactly the batches. A file system that
//! refuses the direct writes' alignment leaves the log writing through the page cache, with
//! nothing lost.

#[path = "support/helpers.rs"]
mod support;

use std::collections::BTreeMap;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use braid_storage::error::{Error, Result};
use braid_storage::io::{FileHandle, Fs, IoFuture, OpenMode, SharedFs};
use braid_storage::log::{format, Durability, Partition, Record, TopicConfig};
use support::{fs, open, read_all};

/// Whether the file system under `dir` takes `O_DIRECT` at all (tmpfs does not).
fn direct_supported(dir: &Path) -> bool {
    let path = dir.join("probe-direct");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}

fn record(i: u64, value_bytes: usize) -> Record {
    Record {
        timestamp: Some(1_000_000 + i as i64),
        key: Some(format!("k{i}").into_bytes().into()),
        value: Some(vec![(i % 251) as u8; value_bytes].into()),
        headers: Vec::new(),
    }
}

fn config() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        // A few rolls over the run, each starting a new file at offset 0.
        segment_bytes_max: 3 << 20,
        maintenance_interval: None,
        segment_age_max: None,
        ..TopicConfig::default()
    }
}

/// Appends `records` as one batch and notes them in `model` at their offsets; returns the
/// batch's size on disk.
async fn append(p: &Partition, records: Vec<Record>, model: &mut BTreeMap<u64, Record>) -> u64 {
    let bytes = format::encode_batch(&records, None, 0)
        .expect("encode")
        .len() as u64;
    let a = p.append(records.clone()).await.expect("append");
    assert_eq!(a.last_offset - a.base_offset + 1, records.len() as u64);
    for (i, r) in records.into_iter().enumerate() {
        model.insert(a.base_offset + i as u64, r);
    }
    bytes
}

async fn check(p: &Partition, model: &BTreeMap<u64, Record>) {
    let read = read_all(p, 0).await;
    assert_eq!(read.len(), model.len(), "records read back");
    for r in &read {
        let want = &model[&r.offset];
        assert_eq!(r.key, want.key, "key at offset {}", r.offset);
        assert_eq!(r.value, want.value, "value at offset {}", r.offset);
        assert_eq!(
            Some(r.timestamp),
            want.timestamp,
            "timestamp at {}",
            r.offset
        );
    }
}

fn log_bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir.join("0")).expect("partition directory") {
        let e = e.expect("entry");
        if e.file_name().to_string_lossy().ends_with(".log") {
            total += e.metadata().expect("metadata").len();
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_appends_read_back_exactly_across_reopens_and_rolls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("topic");
    let fs = fs();
    let direct = direct_supported(tmp.path());
    let mut model = BTreeMap::new();
    let mut bytes = 0u64;
    let mut i = 0u64;
    for round in 0..4 {
        let topic = open(&fs, &dir, config()).await;
        let p = topic.partition(0).expect("partition 0");
        assert_eq!(
            p.writes_direct(),
            direct,
            "round {round}: direct writes where supported"
        );
        // Small records of odd sizes: the data's end is rarely on a block boundary.
        for n in 0..7 {
            bytes += append(&p, vec![record(i, 37 + 13 * n)], &mut model).await;
            i += 1;
        }
        // A lone batch over 256 KiB, written from its own buffer.
        let big: Vec<Record> = (0..300).map(|k| record(i + k, 1001)).collect();
        i += 300;
        bytes += append(&p, big, &mut model).await;
        // Concurrent appends, gathered into groups.
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let topic_p = topic.partition(0).expect("partition 0");
            let recs: Vec<Record> = (0..3)
                .map(|k| record(i + t * 3 + k, 50 + t as usize))
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut m = BTreeMap::new();
                let b = append(&topic_p, recs, &mut m).await;
                (b, m)
            }));
        }
        i += 48;
        for t in tasks {
            let (b, m) = t.await.expect("join");
            bytes += b;
            model.extend(m);
        }
        // A large batch filled by the producer (its buffer lined up for the file's end).
        let mut builder = p.batch_builder();
        let mut recs = Vec::new();
        for k in 0..700 {
            let r = record(i + k, 499);
            builder.push_record(&r).expect("push");
            recs.push(r);
        }
        i += 700;
        let batch = builder.finish(None).expect("finish");
        bytes += batch.len() as u64;
        let a = p.append_encoded(batch).await.expect("append_encoded");
        for (k, r) in recs.into_iter().enumerate() {
            model.insert(a.base_offset + k as u64, r);
        }
        check(&p, &model).await;
        topic.close().await.expect("close");
        // Closed: every segment is cut to its data, so the files hold exactly the batches.
        assert_eq!(
            log_bytes_on_disk(&dir),
            bytes,
            "round {round}: bytes on disk"
        );
    }
    let topic = open(&fs, &dir, config()).await;
    check(&topic.partition(0).expect("partition 0"), &model).await;
    topic.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_none_writes_through_the_page_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = TopicConfig {
        durability: Durability::None,
        ..config()
    };
    let topic = open(&fs(), tmp.path(), cfg).await;
    let p = topic.partition(0).expect("partition 0");
    assert!(!p.writes_direct());
    let mut model = BTreeMap::new();
    append(&p, vec![record(0, 10)], &mut model).await;
    check(&p, &model).await;
    topic.close().await.expect("close");
}

/// A backend whose direct writes are refused with `EINVAL`, as a file system that wants a
/// larger alignment than 4 KiB refuses them.
#[derive(Debug)]
struct RefusingDirect {
    inner: SharedFs,
}

#[derive(Debug)]
struct RefusingFile {
    inner: Arc<dyn FileHandle>,
}

impl FileHandle for RefusingFile {
    fn read_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<usize>, Vec<u8>)> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: Vec<u8>, offset: u64) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> IoFuture<'_, Result<()>> {
        self.inner.sync_data()
    }
    fn write_range_and_sync(
        &self,
        buf: Vec<u8>,
        _range: Range<usize>,
        _offset: u64,
        _sync: bool,
    ) -> IoFuture<'_, (Result<()>, Vec<u8>)> {
        Box::pin(async move {
            let e = std::io::Error::from_raw_os_error(libc::EINVAL);
            (Err(Error::io("write", self.inner.path(), e)), buf)
        })
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

impl Fs for RefusingDirect {
    fn open(&self, path: &Path, mode: OpenMode) -> IoFuture<'_, Result<Arc<dyn FileHandle>>> {
        self.inner.open(path, mode)
    }
    fn open_direct(&self, path: &Path) -> IoFuture<'_, Result<Option<Arc<dyn FileHandle>>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let file = self.inner.open(&path, OpenMode::ReadWrite).await?;
            Ok(Some(
                Arc::new(RefusingFile { inner: file }) as Arc<dyn FileHandle>
            ))
        })
    }
    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, Result<()>> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> IoFuture<'_, Result<Vec<String>>> {
        self.inner.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, Result<()>> {
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
        "refusing-direct"
    }
    fn waits_in_place(&self) -> bool {
        self.inner.waits_in_place()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_direct_writes_fall_back_to_the_page_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs: SharedFs = Arc::new(RefusingDirect { inner: fs() });
    let mut model = BTreeMap::new();
    let topic = open(&fs, tmp.path(), config()).await;
    let p = topic.partition(0).expect("partition 0");
    assert!(p.writes_direct(), "the backend offers a direct handle");
    // A batch lined up for a direct write, appended after direct writes were turned off.
    let mut builder = p.batch_builder();
    let r = record(1, 300_000);
    builder.push_record(&r).expect("push");
    // The first append meets the refusal and is written through the page cache instead.
    append(&p, vec![record(0, 100)], &mut model).await;
    assert!(
        !p.writes_direct(),
        "a refused direct write turns direct writes off"
    );
    let a = p
        .append_encoded(builder.finish(None).expect("finish"))
        .await
        .expect("append_encoded");
    model.insert(a.base_offset, r);
    append(&p, (2..400).map(|i| record(i, 1000)).collect(), &mut model).await;
    check(&p, &model).await;
    topic.close().await.expect("close");
    let topic = open(&fs, tmp.path(), config()).await;
    check(&topic.partition(0).expect("partition 0"), &model).await;
    topic.close().await.expect("close");
}
