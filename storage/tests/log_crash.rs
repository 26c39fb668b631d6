//! Crash test: a child process appends to a two-partition topic from several tasks at once and
//! is killed with SIGKILL at a random moment, over and over on the same directory. After every
//! kill the parent reopens the topic and proves what an acknowledged append promised:
//! - every acknowledged record is there, at its acknowledged offset, with the same key and value;
//! - offsets run dense from 0 to the end of each partition (no gap, no duplicate), and every
//!   record read back is one the child wrote (its value carries its own checksum);
//! - reads never fail, from the start or from the middle of a sealed segment;
//! - the next child resumes exactly at the end the parent saw, so offsets continue;
//! - an append is all or nothing: every record carries its append's first seq and size, and
//!   an append is either wholly present or absent. Some appends are large (about 800 KB, many
//!   pages of one write), so kills also land while a large batch is half in the file.
//!
//! Segments are small, so kills also land inside a roll (index files, producer snapshot, new
//! segment). The test binary is its own child: with `BRAID_CRASH_CHILD=<dir>` set, the test
//! function runs the appending role instead. Repeat a run with `BRAID_CRASH_SEED=<seed>` (the
//! seed is printed on stderr).

#[path = "support/helpers.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use braid_storage::io::SharedFs;
use braid_storage::log::{Durability, Header, LogRecord, Record, Topic, TopicConfig};
use bytes::Bytes;
use support::*;

/// Set in the child: the topic directory. Its presence selects the child role.
const CHILD_ENV: &str = "BRAID_CRASH_CHILD";
const CHILD_ROUND_ENV: &str = "BRAID_CRASH_ROUND";
const CHILD_SEED_ENV: &str = "BRAID_CRASH_CHILD_SEED";
/// This test's name, as the harness filters it in the child.
const TEST_NAME: &str = "kill_while_appending_then_reopen";

const ROUNDS: u64 = 36;
const PARTITIONS: u32 = 2;
const CHILD_TASKS: u64 = 6;
const KILL_DELAY_MIN_MS: u64 = 20;
const KILL_DELAY_MAX_MS: u64 = 300;
/// Longest pause of a child task between two appends.
const CHILD_PAUSE_MAX_MS: u64 = 8;
/// Records of an occasional large append: about 800 KB in one batch.
const LARGE_APPEND: u64 = 4000;
/// The record header naming a record's append: `<first seq>+<records>`.
const APPEND_HEADER: &str = "append";
/// A child still alive after this long was orphaned by a dead parent: it exits on its own.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(30);

fn crash_config() -> TopicConfig {
    TopicConfig {
        partitions: PARTITIONS,
        durability: Durability::Sync,
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 1024,
        maintenance_interval: None,
        segment_age_max: None,
        ..TopicConfig::default()
    }
}

/// The key and value of record `seq` of task `task` in child round `round`. The value ends in
/// a checksum of the rest, so any record read back can be told apart from garbage.
fn crash_record(round: u64, task: u64, seq: u64) -> (String, String) {
    let body = format!(
        "r{round}-t{task}-s{seq}-{}",
        "p".repeat((seq % 13 * 23) as usize)
    );
    let crc = crc32c::crc32c(body.as_bytes());
    (
        format!("k{round}-{task}-{seq}"),
        format!("{body}|{crc:08x}"),
    )
}

/// Checks a value's trailing checksum and returns its `(round, task, seq)`.
fn parse_value(v: &str) -> anyhow::Result<(u64, u64, u64)> {
    let (body, crc) = v.rsplit_once('|').context("value has no checksum")?;
    let crc = u32::from_str_radix(crc, 16).context("parse the value checksum")?;
    ensure!(
        crc32c::crc32c(body.as_bytes()) == crc,
        "value checksum mismatch in {v:?}"
    );
    let mut it = body.split('-');
    let mut num = |prefix: char| -> anyhow::Result<u64> {
        let part = it.next().context("value too short")?;
        part.strip_prefix(prefix)
            .context("unexpected value layout")?
            .parse()
            .context("parse a value field")
    };
    Ok((num('r')?, num('t')?, num('s')?))
}

#[test]
fn kill_while_appending_then_reopen() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_main(PathBuf::from(dir));
    }
    let seed = Prng::seed_from_env_or_time("BRAID_CRASH_SEED");
    eprintln!("log_crash: seed {seed} (repeat with BRAID_CRASH_SEED={seed})");
    let mut rng = Prng::new(seed);
    let data = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir for child stderr");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fs = rt.block_on(async { fs() });
    let started = Instant::now();

    let mut acked: BTreeMap<(u32, u64), (String, String)> = BTreeMap::new();
    let mut ends = [0u64; PARTITIONS as usize];
    let mut killed_with_acks = 0;
    // How often a kill left an atomic replace half done, or a torn batch at a segment's end.
    let (mut killed_in_roll, mut killed_mid_write) = (0, 0);
    for round in 0..ROUNDS {
        let child_seed = rng.next_u64();
        let delay = Duration::from_millis(rng.range(KILL_DELAY_MIN_MS, KILL_DELAY_MAX_MS));
        let lines = run_child_and_kill(data.path(), logs.path(), round, child_seed, delay)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e:#}"));
        let new_acks = check_child_output(&lines, round, &ends, &mut acked)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e:#}"));
        if new_acks > 0 {
            killed_with_acks += 1;
        }
        let before = inspect_disk(data.path());
        rt.block_on(verify_reopened(
            &fs,
            data.path(),
            &acked,
            &mut ends,
            &mut rng,
        ))
        .unwrap_or_else(|e| panic!("round {round} (seed {seed}): after the kill: {e:#}"));
        let after = inspect_disk(data.path());
        if before.tmp_files > 0 {
            killed_in_roll += 1;
        }
        if before
            .tail_lens
            .iter()
            .zip(&after.tail_lens)
            .any(|(b, a)| a < b)
        {
            killed_mid_write += 1;
        }
    }

    // The scenario only proves something if the children got far enough to roll segments.
    let segments = rt.block_on(async {
        let topic = open(&fs, data.path(), crash_config()).await;
        let n: Vec<usize> = (0..PARTITIONS)
            .map(|i| topic.partition(i).expect("partition").segment_bases().len())
            .collect();
        topic.close().await.expect("close");
        n
    });
    eprintln!(
        "log_crash: {} backend, {ROUNDS} kills ({killed_with_acks} after acknowledged appends, \
         {killed_in_roll} inside a roll, {killed_mid_write} leaving a torn tail), {} acknowledged \
         records, ends {ends:?}, segments {segments:?}, {:.1} s",
        fs.name(),
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        killed_with_acks >= ROUNDS / 4,
        "too few rounds got to append before the kill"
    );
    assert!(
        segments.iter().all(|&n| n > 2),
        "segments never rolled: {segments:?}"
    );
}

/// What a kill left on disk, seen before and after the parent's reopen.
struct DiskState {
    /// Temporary files of an interrupted write-temp + fsync + rename.
    tmp_files: usize,
    /// Length of the last `.log` file of each partition.
    tail_lens: Vec<u64>,
}

fn inspect_disk(dir: &Path) -> DiskState {
    let mut state = DiskState {
        tmp_files: 0,
        tail_lens: Vec::new(),
    };
    for pi in 0..PARTITIONS {
        let Ok(entries) = std::fs::read_dir(dir.join(pi.to_string())) else {
            state.tail_lens.push(0);
            continue;
        };
        let mut logs = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                state.tmp_files += 1;
            } else if name.ends_with(".log") {
                logs.push((name, e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
        logs.sort();
        state.tail_lens.push(logs.last().map_or(0, |l| l.1));
    }
    state
}

/// Starts the child on `dir`, collects its stdout lines, kills it after `delay`.
fn run_child_and_kill(
    dir: &Path,
    logs: &Path,
    round: u64,
    seed: u64,
    delay: Duration,
) -> anyhow::Result<Vec<String>> {
    let stderr_path = logs.join(format!("child-{round}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).context("create the child's stderr file")?;
    let mut child = Command::new(std::env::current_exe().context("find the test binary")?)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("spawn the child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        let mut r = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                return Ok(lines);
            }
            // A line cut short by the kill was never a complete acknowledgement.
            if buf.last() == Some(&b'\n') {
                buf.pop();
                lines.push(String::from_utf8_lossy(&buf).into_owned());
            }
        }
    });
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().context("poll the child")? {
        let mut err = String::new();
        std::fs::File::open(&stderr_path)
            .and_then(|mut f| f.read_to_string(&mut err))
            .ok();
        bail!("the child exited on its own ({status}) before the kill; its stderr:\n{err}");
    }
    child.kill().context("kill the child")?;
    child.wait().context("reap the child")?;
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout reader panicked"))?
        .context("read the child's stdout")?;
    Ok(lines)
}

/// Applies the child's report to `acked`: `open` lines must resume at the ends the parent saw,
/// `ack` lines add records at offsets never acknowledged before. Returns the records added.
fn check_child_output(
    lines: &[String],
    round: u64,
    ends: &[u64],
    acked: &mut BTreeMap<(u32, u64), (String, String)>,
) -> anyhow::Result<usize> {
    let mut added = 0;
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .context("short line")?
                .parse()
                .with_context(|| format!("parse {line:?}"))
        };
        match fields.first().copied() {
            Some("open") => {
                let (p, end) = (num(1)? as usize, num(2)?);
                ensure!(
                    end == ends[p],
                    "the child reopened partition {p} at end {end}, the parent saw {}",
                    ends[p]
                );
            }
            Some("ack") => {
                let (p, base, last) = (num(1)? as u32, num(2)?, num(3)?);
                let (r, task, seq0) = (num(4)?, num(5)?, num(6)?);
                ensure!(r == round, "ack from round {r} in round {round}");
                ensure!(
                    base >= ends[p as usize],
                    "partition {p}: acknowledged base {base} is below the end {} before this round",
                    ends[p as usize]
                );
                for (i, off) in (base..=last).enumerate() {
                    let rec = crash_record(round, task, seq0 + i as u64);
                    if let Some(old) = acked.insert((p, off), rec) {
                        bail!("partition {p} offset {off} acknowledged twice (first {old:?})");
                    }
                    added += 1;
                }
            }
            Some("error") => bail!("the child reported: {line}"),
            _ => {} // the test harness's own output
        }
    }
    Ok(added)
}

/// Reopens the topic and checks it against everything acknowledged so far.
async fn verify_reopened(
    fs: &SharedFs,
    dir: &Path,
    acked: &BTreeMap<(u32, u64), (String, String)>,
    ends: &mut [u64],
    rng: &mut Prng,
) -> anyhow::Result<()> {
    let topic = Topic::open(fs.clone(), dir, crash_config())
        .await
        .context("reopen the topic")?;
    for pi in 0..PARTITIONS {
        let p = topic.partition(pi)?;
        let end = p.end_offset();
        ensure!(
            p.start_offset() == 0,
            "partition {pi} lost its start: {}",
            p.start_offset()
        );
        ensure!(
            end >= ends[pi as usize],
            "partition {pi} shrank from {} to {end}",
            ends[pi as usize]
        );
        let records = try_read_all(&p, 0)
            .await
            .with_context(|| format!("read partition {pi} from 0"))?;
        ensure!(
            records.len() as u64 == end,
            "partition {pi}: read {} records, end offset is {end}",
            records.len()
        );
        let mut seen = HashSet::new();
        // (round, task, first seq) -> (records of the append, records present).
        let mut appends: HashMap<(u64, u64, u64), (u64, u64)> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            ensure!(
                r.offset == i as u64,
                "partition {pi}: record {i} has offset {}",
                r.offset
            );
            let (key, value) = key_value(r)?;
            let id = parse_value(&value).with_context(|| format!("partition {pi} offset {i}"))?;
            ensure!(
                key == crash_record(id.0, id.1, id.2).0,
                "partition {pi} offset {i}: key {key:?} does not belong to value {value:?}"
            );
            ensure!(
                seen.insert(id),
                "partition {pi}: record {id:?} appears twice (again at {i})"
            );
            let (first, n) = append_of(r).with_context(|| format!("partition {pi} offset {i}"))?;
            ensure!(
                (first..first + n).contains(&id.2),
                "partition {pi} offset {i}: seq {} is not in its append {first}+{n}",
                id.2
            );
            appends.entry((id.0, id.1, first)).or_insert((n, 0)).1 += 1;
        }
        for ((round, task, first), (n, present)) in &appends {
            ensure!(
                n == present,
                "partition {pi}: append {first}+{n} of round {round} task {task} is partial: \
                 {present} of {n} records"
            );
        }
        for (&(_, off), (key, value)) in acked.range((pi, 0)..(pi + 1, 0)) {
            let r = records.get(off as usize).with_context(|| {
                format!("partition {pi}: acknowledged offset {off} is gone (end {end})")
            })?;
            let got = key_value(r)?;
            ensure!(
                (&got.0, &got.1) == (key, value),
                "partition {pi} offset {off}: read {got:?}, acknowledged {:?}",
                (key, value)
            );
        }
        // Reads starting mid-log seek through the (sealed segments') indexes.
        for _ in 0..4 {
            if end == 0 {
                break;
            }
            let at = rng.range(0, end - 1);
            let r = p
                .read(at, 1)
                .await
                .with_context(|| format!("read partition {pi} at {at}"))?;
            ensure!(
                r.records.first().map(|r| r.offset) == Some(at),
                "partition {pi}: a read at {at} started at {:?}",
                r.records.first().map(|r| r.offset)
            );
        }
        ends[pi as usize] = end;
    }
    topic.close().await.context("close the topic")?;
    Ok(())
}

/// The `(first seq, records)` of the append a record was part of.
fn append_of(r: &LogRecord) -> anyhow::Result<(u64, u64)> {
    let h = r
        .headers
        .iter()
        .find(|h| h.key == APPEND_HEADER)
        .context("record without its append header")?;
    let v = std::str::from_utf8(h.value.as_deref().context("null append header")?)?;
    let (first, n) = v.split_once('+').context("append header layout")?;
    Ok((first.parse()?, n.parse()?))
}

fn key_value(r: &LogRecord) -> anyhow::Result<(String, String)> {
    let s = |b: &Option<Bytes>| -> anyhow::Result<String> {
        Ok(String::from_utf8(
            b.as_ref().context("null field")?.to_vec(),
        )?)
    };
    Ok((s(&r.key)?, s(&r.value)?))
}

/// The child role: append from several tasks until killed, reporting every acknowledgement.
fn child_main(dir: PathBuf) -> ! {
    let env_u64 = |name: &str| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| report_and_exit(&format!("{name} is not set")))
    };
    let round = env_u64(CHILD_ROUND_ENV);
    let seed = env_u64(CHILD_SEED_ENV);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| report_and_exit(&format!("runtime: {e}")));
    rt.block_on(async move {
        let topic = Topic::open(fs(), &dir, crash_config())
            .await
            .unwrap_or_else(|e| report_and_exit(&format!("open the topic: {e}")));
        for pi in 0..PARTITIONS {
            let end = topic
                .partition(pi)
                .map(|p| p.end_offset())
                .unwrap_or(u64::MAX);
            emit(&format!("open {pi} {end}"));
        }
        let topic = Arc::new(topic);
        for task in 0..CHILD_TASKS {
            let topic = topic.clone();
            let mut rng = Prng::new(seed.wrapping_add(task));
            tokio::spawn(async move {
                let mut seq = 0u64;
                loop {
                    let p = (rng.next_u64() % u64::from(PARTITIONS)) as u32;
                    let n = match rng.range(0, 9) {
                        0 if task == 0 => LARGE_APPEND,
                        0..=3 => 1,
                        _ => rng.range(2, 30),
                    };
                    let append = Bytes::from(format!("{seq}+{n}"));
                    let records: Vec<Record> = (seq..seq + n)
                        .map(|s| {
                            let (k, v) = crash_record(round, task, s);
                            Record {
                                headers: vec![Header {
                                    key: APPEND_HEADER.into(),
                                    value: Some(append.clone()),
                                }],
                                ..Record::keyed(k, v)
                            }
                        })
                        .collect();
                    match topic.append(p, records).await {
                        Ok(a) if a.last_offset + 1 - a.base_offset == n => {
                            emit(&format!(
                                "ack {p} {} {} {round} {task} {seq}",
                                a.base_offset, a.last_offset
                            ));
                        }
                        Ok(a) => report_and_exit(&format!("{n} records got offsets {a:?}")),
                        Err(e) => report_and_exit(&format!("append to partition {p}: {e}")),
                    }
                    seq += n;
                    // Pace the tasks a little: the parent rereads everything after every kill.
                    tokio::time::sleep(Duration::from_millis(rng.range(0, CHILD_PAUSE_MAX_MS)))
                        .await;
                }
            });
        }
        tokio::time::sleep(CHILD_LIFETIME_MAX).await;
    });
    std::process::exit(0)
}

/// One whole line per call, flushed, so a kill cuts at most the line being written.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let res = out
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush());
    if res.is_err() {
        // The parent is gone.
        std::process::exit(4);
    }
}

fn report_and_exit(msg: &str) -> ! {
    emit(&format!("error {msg}"));
    std::process::exit(3)
}
