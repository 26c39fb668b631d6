//! Fault injection: the Nth write, `fdatasync` or rename fails (once, or from then on) while
//! appends roll small segments, so faults land in log writes, in group commits and inside a roll
//! (index files and producer snapshot are written as temp file + fsync + rename). A
//! `BTreeMap<offset, record>` holds exactly the acknowledged appends and proves:
//! - an append hit by a fault returns an error (`PartitionFailed` or `Io`) and is never
//!   acknowledged, and no append fails without a fault;
//! - after a single fault the partition reopens itself from disk and the next appends succeed
//!   at the next dense offsets; reading gives exactly the model, before and after a reopen on a
//!   healthy file system;
//! - under a sticky fault the failed append keeps failing on retry, nothing more is
//!   acknowledged, and a reopen on a healthy file system equals the model.

#[path = "support/helpers.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context};
use braid_storage::io::{FaultKind, FaultyFs, SharedFs};
use braid_storage::log::{Appended, Durability, LogRecord, Partition, Record, Topic, TopicConfig};
use braid_storage::Error;
use bytes::Bytes;
use support::*;

const KINDS: [FaultKind; 3] = [FaultKind::Write, FaultKind::Sync, FaultKind::Rename];
/// Which call to fail: every one of the first eight, then a few deep into the workload.
const FAIL_AT: [u64; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 13, 21, 34];
const STICKY_FAIL_AT: [u64; 4] = [1, 3, 8, 21];
/// Workload steps; each is one append, or every fifth a burst of concurrent appends.
const STEPS: u64 = 160;
const BURST: u64 = 3;
/// Steps run after a single fault before the workload stops: enough to roll again.
const STEPS_AFTER_FAILURE: u64 = 15;
/// How often a sticky failure's append is retried.
const RETRIES: usize = 5;

/// The model: exactly the acknowledged records, by offset.
type Model = BTreeMap<u64, (Option<Bytes>, Option<Bytes>)>;

fn fault_config() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        durability: Durability::Sync,
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        maintenance_interval: None,
        segment_age_max: None,
        ..TopicConfig::default()
    }
}

/// The batch of workload step `step`, append `j` of it: 1 to 4 records of about 200 bytes, so a
/// segment holds only a few batches.
fn batch(step: u64, j: u64) -> Vec<Record> {
    let n = 1 + (step + j) % 4;
    (0..n)
        .map(|i| {
            let value = format!(
                "s{step}-a{j}-r{i}-{}",
                "v".repeat(150 + ((step * 7 + i) % 100) as usize)
            );
            Record::keyed(format!("k{}", (step + i) % 11), value)
        })
        .collect()
}

fn add_to_model(model: &mut Model, a: &Appended, records: &[Record]) -> anyhow::Result<()> {
    ensure!(
        a.last_offset + 1 - a.base_offset == records.len() as u64,
        "{} records got offsets {a:?}",
        records.len()
    );
    for (off, r) in (a.base_offset..=a.last_offset).zip(records) {
        if model
            .insert(off, (r.key.clone(), r.value.clone()))
            .is_some()
        {
            bail!("offset {off} acknowledged twice");
        }
    }
    Ok(())
}

/// A failed append must say it failed because of the injected fault, as an I/O failure.
fn check_failure(e: &Error) -> anyhow::Result<()> {
    ensure!(
        matches!(e, Error::PartitionFailed { .. } | Error::Io { .. }),
        "unexpected error kind: {e:?}"
    );
    ensure!(
        e.to_string().contains("injected fault"),
        "error does not carry the fault: {e}"
    );
    Ok(())
}

/// Reads the whole partition and compares it with the model, which must be dense from 0.
async fn check_against_model(p: &Partition, model: &Model, when: &str) -> anyhow::Result<()> {
    let n = model.len() as u64;
    ensure!(
        model.keys().copied().eq(0..n),
        "{when}: acknowledged offsets are not dense: {:?}",
        model.keys().collect::<Vec<_>>()
    );
    ensure!(
        p.end_offset() == n,
        "{when}: end offset {}, model has {n}",
        p.end_offset()
    );
    let records: Vec<LogRecord> = try_read_all(p, 0)
        .await
        .with_context(|| format!("{when}: read"))?;
    ensure!(
        records.len() as u64 == n,
        "{when}: read {} records, model has {n}",
        records.len()
    );
    for (r, (&off, (key, value))) in records.iter().zip(model) {
        ensure!(
            r.offset == off && &r.key == key && &r.value == value,
            "{when}: offset {off} reads as offset {} key {:?}, model has key {key:?}",
            r.offset,
            r.key
        );
    }
    Ok(())
}

/// Closes the faulty topic, reopens the directory on a healthy backend, compares with the
/// model, and appends once more at the next offset.
async fn reopen_healthy(
    topic: Topic,
    healthy: &SharedFs,
    dir: &Path,
    model: &Model,
) -> anyhow::Result<()> {
    topic.close().await.context("close the faulty topic")?;
    drop(topic);
    let topic = Topic::open(healthy.clone(), dir, fault_config())
        .await
        .context("reopen on a healthy file system")?;
    let p = topic.partition(0)?;
    check_against_model(&p, model, "after reopening on a healthy file system").await?;
    let a = p
        .append(batch(STEPS, 0))
        .await
        .context("append after the healthy reopen")?;
    ensure!(
        a.base_offset == model.len() as u64,
        "the healthy reopen appended at {a:?}"
    );
    topic.close().await.context("close")?;
    Ok(())
}

/// Runs the workload with the `n`th call of `kind` failing (and, when `sticky`, every later
/// one).
async fn run_case(healthy: &SharedFs, kind: FaultKind, n: u64, sticky: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let faulty = FaultyFs::new(healthy.clone(), kind, n, sticky);
    let topic = Topic::open(Arc::new(faulty.clone()), dir.path(), fault_config())
        .await
        .context("open the topic")?;
    let p = topic.partition(0)?;
    let mut model = Model::new();
    let mut failed_step = None;
    let mut at_failure = (0, 0); // (acknowledged records, segments)
    for step in 0..STEPS {
        if failed_step.is_some_and(|f| step > f + STEPS_AFTER_FAILURE) {
            break;
        }
        let injected_before = faulty.injected();
        let appends = if step % 5 == 4 { BURST } else { 1 };
        let batches: Vec<Vec<Record>> = (0..appends).map(|j| batch(step, j)).collect();
        let results = futures::future::join_all(batches.iter().map(|b| p.append(b.clone()))).await;
        let mut first_failed = None;
        for (b, res) in batches.iter().zip(results) {
            match res {
                Ok(a) => {
                    if appends == 1 {
                        ensure!(
                            a.base_offset == model.len() as u64,
                            "step {step}: appended at {a:?}, expected base {}",
                            model.len()
                        );
                    }
                    add_to_model(&mut model, &a, b).with_context(|| format!("step {step}"))?;
                }
                Err(e) => {
                    check_failure(&e).with_context(|| format!("step {step}"))?;
                    first_failed.get_or_insert(b.clone());
                }
            }
        }
        let injected = faulty.injected() > injected_before;
        match (&first_failed, injected) {
            (None, true) => bail!("step {step}: a fault was injected but every append succeeded"),
            (Some(_), false) => bail!("step {step}: an append failed without an injected fault"),
            _ => {}
        }
        let Some(failed) = first_failed else { continue };
        if failed_step.is_some() && !sticky {
            bail!("step {step}: a second failure after a single fault");
        }
        failed_step.get_or_insert(step);
        at_failure = (model.len(), p.segment_bases().len());
        check_against_model(&p, &model, &format!("step {step}, right after the failure")).await?;
        if sticky {
            for i in 0..RETRIES {
                match p.append(failed.clone()).await {
                    Ok(a) => bail!("retry {i} of the failed append was acknowledged at {a:?}"),
                    Err(e) => check_failure(&e).with_context(|| format!("retry {i}"))?,
                }
            }
            if kind != FaultKind::Rename {
                // Every append writes and syncs, so even one that fits the segment fails.
                let small = vec![Record::value("small")];
                match p.append(small).await {
                    Ok(a) => bail!("a small append was acknowledged at {a:?}"),
                    Err(e) => check_failure(&e).context("small append")?,
                }
            }
            check_against_model(&p, &model, "after the retries").await?;
            break;
        }
    }
    ensure!(
        failed_step.is_some(),
        "the workload made only {} calls; none failed",
        faulty.calls()
    );
    if !sticky {
        ensure!(
            faulty.injected() == 1,
            "{} faults injected",
            faulty.injected()
        );
        ensure!(
            p.failure().is_none(),
            "the partition is still failed: {:?}",
            p.failure()
        );
        ensure!(
            model.len() > at_failure.0 && p.segment_bases().len() > at_failure.1,
            "after the fault: {} records acknowledged (was {}), {} segments (was {})",
            model.len(),
            at_failure.0,
            p.segment_bases().len(),
            at_failure.1
        );
        check_against_model(&p, &model, "at the end of the workload").await?;
    }
    drop(p);
    reopen_healthy(topic, healthy, dir.path(), &model).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_fault_then_recover() {
    let healthy = fs();
    for kind in KINDS {
        for n in FAIL_AT {
            run_case(&healthy, kind, n, false)
                .await
                .unwrap_or_else(|e| {
                    panic!("{kind:?} fault at call {n} on {}: {e:#}", healthy.name())
                });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_fault_acknowledges_nothing_more() {
    let healthy = fs();
    for kind in KINDS {
        for n in STICKY_FAIL_AT {
            run_case(&healthy, kind, n, true).await.unwrap_or_else(|e| {
                panic!(
                    "sticky {kind:?} fault from call {n} on {}: {e:#}",
                    healthy.name()
                )
            });
        }
    }
}
