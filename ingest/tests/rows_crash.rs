//! Crash test: a child process runs bank transfers between 100 accounts from several tasks at
//! once (each transfer also writes a ledger row in a second table, in the same transaction) and
//! is killed with SIGKILL at a random moment, over and over on the same directory, while small
//! memtables flush and a background task trims the commit log. After every kill the parent
//! reopens the store and proves:
//! - every acknowledged transfer's ledger row is there;
//! - the balances sum to the starting total;
//! - no transaction is partial: replaying the ledger rows that exist over the starting balances
//!   gives exactly the balances that exist (a transfer's three writes are all there or none);
//! - seqnos never go back: the next child starts at or above the last acknowledged commit.
//!
//! The test binary is its own child: with `BRAID_ROWS_CRASH_CHILD=<dir>` set, the test function
//! runs the transfer role instead. Repeat a run with `BRAID_CRASH_SEED=<seed>`.

#[path = "support/rows.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use braid_ingest::rows::RowStore;
use support::*;

const CHILD_ENV: &str = "BRAID_ROWS_CRASH_CHILD";
const CHILD_ROUND_ENV: &str = "BRAID_ROWS_CRASH_ROUND";
const CHILD_SEED_ENV: &str = "BRAID_ROWS_CRASH_CHILD_SEED";
const TEST_NAME: &str = "kill_during_bank_transfers_then_reopen";

const ROUNDS: u64 = 24;
const ACCOUNTS: u64 = 100;
const START_BALANCE: i64 = 1000;
const CHILD_TASKS: u64 = 8;
const KILL_DELAY_MIN_MS: u64 = 150;
const KILL_DELAY_MAX_MS: u64 = 700;
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(30);

const ACCOUNTS_TABLE: u64 = 1;
const LEDGER_TABLE: u64 = 2;

fn account_key(i: u64) -> Vec<u8> {
    format!("acct{i:03}").into_bytes()
}

/// A ledger row: key `r<round>-t<task>-<n>`, value `<from> <to> <amount>`.
fn ledger_key(round: u64, task: u64, n: u64) -> String {
    format!("r{round:03}-t{task}-{n:06}")
}

#[test]
fn kill_during_bank_transfers_then_reopen() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_main(PathBuf::from(dir));
    }
    let seed = Prng::seed_from_env_or_time("BRAID_CRASH_SEED");
    eprintln!("rows_crash: seed {seed} (repeat with BRAID_CRASH_SEED={seed})");
    let mut rng = Prng::new(seed);
    let data = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir for child stderr");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let mut acked: HashSet<String> = HashSet::new();
    let mut last_seq = 0u64;
    let mut log_start = 0u64;
    let (mut commits, mut child_secs, mut rounds_with_acks) = (0u64, 0f64, 0u64);
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.range(KILL_DELAY_MIN_MS, KILL_DELAY_MAX_MS));
        let out = run_child_and_kill(data.path(), logs.path(), round, rng.next_u64(), delay)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e:#}"));
        let report = check_child_output(&out, round, last_seq, &mut acked)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e:#}"));
        if report.transfers > 0 {
            rounds_with_acks += 1;
            commits += report.transfers;
            child_secs += report.transfer_secs;
        }
        last_seq = last_seq.max(report.last_seq);
        let (seq, start) = rt
            .block_on(verify_reopened(
                data.path(),
                &acked,
                last_seq,
                round % 3 == 0,
            ))
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): after the kill: {e:#}"));
        last_seq = seq;
        log_start = start;
    }
    eprintln!(
        "rows_crash: {} backend, {ROUNDS} kills ({rounds_with_acks} after acknowledged transfers), \
         {} acknowledged transfers, {:.0} commits/s while running ({CHILD_TASKS} tasks), last seqno \
         {last_seq}, commit log starts at {log_start} after trims, {:.1} s",
        fs().name(),
        acked.len(),
        commits as f64 / child_secs.max(1e-9),
        started.elapsed().as_secs_f64()
    );
    assert!(
        rounds_with_acks >= ROUNDS / 2,
        "too few rounds got to transfer before the kill"
    );
    assert!(log_start > 0, "the commit log was never trimmed");
}

/// What one child run acknowledged.
struct ChildReport {
    transfers: u64,
    /// From the child's first transfer to its last acknowledged one.
    transfer_secs: f64,
    last_seq: u64,
}

/// Starts the child on `dir`, collects its complete stdout lines, kills it after `delay`.
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
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout reader panicked"))?
        .context("read the child's stdout")
}

fn check_child_output(
    lines: &[String],
    round: u64,
    last_seq: u64,
    acked: &mut HashSet<String>,
) -> anyhow::Result<ChildReport> {
    let mut report = ChildReport {
        transfers: 0,
        transfer_secs: 0.0,
        last_seq: 0,
    };
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            f.get(i)
                .context("short line")?
                .parse()
                .with_context(|| format!("parse {line:?}"))
        };
        match f.first().copied() {
            Some("open") => {
                let seq = num(1)?;
                ensure!(
                    seq >= last_seq,
                    "the child opened at seqno {seq}, below the last acknowledged {last_seq}"
                );
            }
            Some("ack") => {
                let (r, task, n, seq, micros) = (num(1)?, num(2)?, num(3)?, num(4)?, num(5)?);
                ensure!(r == round, "ack from round {r} in round {round}");
                ensure!(
                    acked.insert(ledger_key(r, task, n)),
                    "transfer {r}/{task}/{n} acknowledged twice"
                );
                report.transfers += 1;
                report.transfer_secs = report.transfer_secs.max(micros as f64 / 1e6);
                report.last_seq = report.last_seq.max(seq);
            }
            Some("error") => bail!("the child reported: {line}"),
            _ => {}
        }
    }
    Ok(report)
}

/// Reopens the store and checks it against everything acknowledged; returns its seqno and the
/// commit log's start offset.
async fn verify_reopened(
    dir: &Path,
    acked: &HashSet<String>,
    last_seq: u64,
    clean_close: bool,
) -> anyhow::Result<(u64, u64)> {
    let store = RowStore::open(fs(), dir, DB, small())
        .await
        .context("reopen the store")?;
    let seq = store.visible_seq();
    ensure!(
        seq >= last_seq,
        "reopened at seqno {seq}, below the last acknowledged {last_seq}"
    );
    let tables = store.tables();
    if !(tables.contains(&ACCOUNTS_TABLE) && tables.contains(&LEDGER_TABLE)) {
        // Killed while creating the tables; nothing can have been acknowledged yet.
        ensure!(acked.is_empty(), "a table is gone: {tables:?}");
        store.abort().await;
        return Ok((seq, 0));
    }
    let tx = store.begin();
    let scan = |t| {
        tx.scan(t, Bound::Unbounded, Bound::Unbounded)
            .context("scan")
    };
    let accounts = scan(ACCOUNTS_TABLE)?
        .collect()
        .await
        .context("read accounts")?;
    let ledger = scan(LEDGER_TABLE)?
        .collect()
        .await
        .context("read the ledger")?;
    drop(tx);
    let mut balances: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (k, v) in &accounts {
        let b: i64 = s(v).parse().context("parse a balance")?;
        balances.insert(k.to_vec(), b);
    }
    if balances.is_empty() {
        ensure!(
            acked.is_empty(),
            "accounts vanished after acknowledged transfers"
        );
        store.abort().await;
        return Ok((seq, 0));
    }
    ensure!(
        balances.len() as u64 == ACCOUNTS,
        "{} accounts, expected {ACCOUNTS} (a partial seed?)",
        balances.len()
    );
    let total: i64 = balances.values().sum();
    ensure!(
        total == START_BALANCE * ACCOUNTS as i64,
        "balances sum to {total}"
    );
    // Replaying the ledger over the starting balances must give the balances exactly.
    let mut replayed: BTreeMap<Vec<u8>, i64> = (0..ACCOUNTS)
        .map(|i| (account_key(i), START_BALANCE))
        .collect();
    let mut present = HashSet::new();
    for (k, v) in &ledger {
        let v = s(v);
        let f: Vec<&str> = v.split(' ').collect();
        ensure!(f.len() == 3, "bad ledger row {v:?}");
        let (from, to, amount): (u64, u64, i64) = (f[0].parse()?, f[1].parse()?, f[2].parse()?);
        *replayed.entry(account_key(from)).or_default() -= amount;
        *replayed.entry(account_key(to)).or_default() += amount;
        present.insert(s(k));
    }
    ensure!(
        replayed == balances,
        "balances do not match the ledger: a transaction is partial"
    );
    let missing: Vec<&String> = acked.iter().filter(|k| !present.contains(*k)).collect();
    ensure!(
        missing.is_empty(),
        "{} acknowledged transfers are missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let (start, _) = store.log_range();
    if clean_close {
        store.close().await.context("close")?;
    } else {
        store.abort().await;
    }
    Ok((seq, start))
}

/// The child: seeds the accounts if needed, then transfers from several tasks until killed.
fn child_main(dir: PathBuf) -> ! {
    let round: u64 = std::env::var(CHILD_ROUND_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let res = rt.block_on(child_run(dir, round, seed));
    if let Err(e) = res {
        println!("error {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn child_run(dir: PathBuf, round: u64, seed: u64) -> anyhow::Result<()> {
    let store = Arc::new(
        RowStore::open(fs(), &dir, DB, small())
            .await
            .context("open")?,
    );
    say(&format!("open {}", store.visible_seq()));
    for t in [ACCOUNTS_TABLE, LEDGER_TABLE] {
        if !store.tables().contains(&t) {
            store.create_table(t).await.context("create a table")?;
        }
    }
    let mut seed_tx = store.begin();
    if seed_tx
        .get(ACCOUNTS_TABLE, &account_key(0))
        .await?
        .is_none()
    {
        for i in 0..ACCOUNTS {
            seed_tx.put(ACCOUNTS_TABLE, account_key(i), START_BALANCE.to_string())?;
        }
        seed_tx.commit().await.context("seed the accounts")?;
    } else {
        seed_tx.rollback();
    }
    // Flushes happen on their own (small memtables); trims run beside the transfers so kills
    // also land inside a trim.
    let trimmer = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(40)).await;
                if let Err(e) = store.trim_log().await {
                    say(&format!("error trim: {e}"));
                }
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..CHILD_TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Prng::new(seed ^ (task + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for n in 0.. {
                if started.elapsed() > CHILD_LIFETIME_MAX {
                    return Ok::<(), anyhow::Error>(());
                }
                let from = rng.range(0, ACCOUNTS - 1);
                let to = (from + rng.range(1, ACCOUNTS - 1)) % ACCOUNTS;
                let amount = rng.range(1, 50) as i64;
                let mut tx = store.begin();
                let read = |v: Option<bytes::Bytes>| -> anyhow::Result<i64> {
                    Ok(s(&v.context("account missing")?).parse()?)
                };
                let a = read(tx.get(ACCOUNTS_TABLE, &account_key(from)).await?)?;
                let b = read(tx.get(ACCOUNTS_TABLE, &account_key(to)).await?)?;
                if a < amount {
                    tx.rollback();
                    continue;
                }
                tx.put(ACCOUNTS_TABLE, account_key(from), (a - amount).to_string())?;
                tx.put(ACCOUNTS_TABLE, account_key(to), (b + amount).to_string())?;
                tx.put(
                    LEDGER_TABLE,
                    ledger_key(round, task, n).into_bytes(),
                    format!("{from} {to} {amount}"),
                )?;
                match tx.commit().await {
                    Ok(info) => say(&format!(
                        "ack {round} {task} {n} {} {}",
                        info.seq.unwrap_or(0),
                        started.elapsed().as_micros()
                    )),
                    Err(e) if e.is_serialization_failure() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.context("join a task")??;
    }
    trimmer.abort();
    Ok(())
}
