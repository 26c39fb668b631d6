//! With a backend that waits in place (the blocking one), partition writers run on writer
//! threads, a thread each up to a bound and shared past it: a topic with more partitions than
//! the bound takes concurrent appends to every partition, all durable and read back after a
//! reopen, while the process never runs more writer threads than the bound, and closing and
//! reopening topics does not start new ones. With io_uring the writers stay async tasks and
//! no writer thread is started.

#[path = "support/helpers.rs"]
mod support;

use std::collections::BTreeSet;

use braid_storage::log::{Record, TopicConfig};
use support::{fs, open, read_all, value_of};

/// The bound in `storage/src/log/writer_threads.rs`.
const WRITER_THREADS_MAX: usize = 64;

/// The names of the writer threads this process runs now.
fn writer_threads() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for task in std::fs::read_dir("/proc/self/task").expect("list /proc/self/task") {
        let task = task.expect("a task entry");
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue; // the thread ended while listing
        };
        if comm.starts_with("braid-log-") {
            names.insert(comm.trim().to_string());
        }
    }
    names
}

fn config(partitions: u32) -> TopicConfig {
    TopicConfig {
        partitions,
        maintenance_interval: None,
        ..TopicConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_partitions_than_writer_threads_all_append_and_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let partitions = WRITER_THREADS_MAX as u32 + 16;
    let topic = open(&fs, dir.path(), config(partitions)).await;
    let threads = writer_threads();
    let expected = if fs.waits_in_place() {
        WRITER_THREADS_MAX
    } else {
        0
    };
    assert_eq!(
        threads.len(),
        expected,
        "writer threads for {partitions} partitions on {}: {threads:?}",
        fs.name()
    );
    let mut appends = Vec::new();
    for p in 0..partitions {
        let partition = topic.partition(p).expect("partition");
        appends.push(tokio::spawn(async move {
            for i in 0..3u64 {
                let value = format!("p{p}-{i}");
                let a = partition
                    .append(vec![Record::value(value.into_bytes())])
                    .await
                    .expect("append");
                assert_eq!(a.base_offset, i, "offsets of partition {p} are dense");
            }
        }));
    }
    for a in appends {
        a.await.expect("appender");
    }
    topic.close().await.expect("close");
    drop(topic);

    // Reopening starts no thread beyond the ones the first open started.
    let topic = open(&fs, dir.path(), config(partitions)).await;
    let after = writer_threads();
    assert_eq!(
        after, threads,
        "a reopen runs on the threads already started"
    );
    for p in 0..partitions {
        let partition = topic.partition(p).expect("partition");
        let values: Vec<String> = read_all(&partition, 0).await.iter().map(value_of).collect();
        assert_eq!(
            values,
            (0..3).map(|i| format!("p{p}-{i}")).collect::<Vec<_>>(),
            "partition {p} holds its appends"
        );
    }
    topic.close().await.expect("close");
}
