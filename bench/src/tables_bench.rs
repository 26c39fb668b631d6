//! `braid-bench tables`: pgbench-like row-table workloads over the PostgreSQL wire protocol, the
//! `braid` server against PostgreSQL 15, both started by the run, side by side on one machine.
//!
//! The run starts the release `braid` binary (default `sync` durability) and PostgreSQL 15 (its
//! defaults: `fsync=on`, `synchronous_commit=on`) on fresh data directories in one temporary
//! directory on the same disk, each on a free loopback port. On both it creates pgbench's four
//! tables with the same DDL and loads them with the same rows (`accounts` accounts, one branch
//! per 100,000 accounts, ten tellers per branch, an empty history) through
//! `INSERT ... SELECT ... FROM generate_series` in batches. Then, for both systems:
//! - times a range scan (`sum(abalance)` over 10,001 consecutive `aid`s) and an aggregate over
//!   the whole table (`GROUP BY bid`), a few repetitions each, interleaved, median reported;
//! - runs `clients` connections of pgbench's select-only script (`-S`: one prepared point
//!   lookup by `aid`) for `seconds`, then of its TPC-B-like script (BEGIN, UPDATE accounts,
//!   SELECT abalance, UPDATE tellers, UPDATE branches, INSERT history, COMMIT; prepared
//!   statements), split into interleaved rounds (braid, PostgreSQL, braid, …) so drift in the
//!   machine's load hits both alike. Both run READ COMMITTED, where a second writer of a row
//!   (the contended rows are the few branches) waits for the first; a transaction that fails
//!   anyway with 40001 or 40P01 is rolled back and retried with the same values, as
//!   `pgbench --max-tries` does; retries are counted and reported;
//! - checks pgbench's invariant afterwards: the sums of `abalance`, `tbalance`, `bbalance` and
//!   the history's `delta` are equal, and the history holds one row per committed transaction.
//!
//! What must stay true for the ratios to mean anything: both systems get the same DDL, the same
//! rows and the same random draws (each client's generator is seeded by its index, the same on
//! both), from the same client process; both acknowledge a COMMIT only once it is durable;
//! both data directories are on the same file system; neither server is tuned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::BytesMut;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::log_bench::mem_total;
use crate::measure::{print_table, si};
use crate::wire_bench::{
    all_rows, command_output, connect, first_row, load_average, median, modified_ago,
    print_queries, run_until_signal, verdict, BraidServer, PgServer, QueryRow, RunEnv,
};
use crate::TablesArgs;

/// pgbench's accounts per branch (its scale factor 1).
const ACCOUNTS_PER_BRANCH: u64 = 100_000;
/// pgbench's tellers per branch.
const TELLERS_PER_BRANCH: u64 = 10;
/// Rows per load statement: one transaction each, well under braid's 32 MiB commit bound
/// (≈ 110 bytes a row).
const LOAD_BATCH_ROWS: u64 = 100_000;
/// Rows covered by the range scan (`aid BETWEEN x AND x + RANGE_SPAN`).
const RANGE_SPAN: u64 = 10_000;
/// pgbench's `filler` for accounts: its loader sends an empty string, which `char(84)` pads to
/// 84 blanks; both systems get the blanks spelled out so they store the same bytes.
const FILLER_84: &str =
    "                                                                                    ";

/// Runs the whole `tables` benchmark. Both servers are stopped at the end, on error and on
/// Ctrl-C / SIGTERM (their guards' `Drop` runs when the run's future is dropped).
pub fn run(args: &TablesArgs) -> anyhow::Result<()> {
    run_until_signal(run_all(args))
}

/// The effective settings of one run.
#[derive(Debug, Clone, Copy)]
struct Settings {
    accounts: u64,
    branches: u64,
    tellers: u64,
    clients: usize,
    /// Timed seconds per workload and system, split over `rounds`.
    seconds: f64,
    rounds: usize,
    /// Untimed seconds per workload and system before the first round.
    warmup_seconds: f64,
    reps: usize,
    /// Rows of the long range scan (0: none); `scan_accounts` holds a tenth more.
    scan_rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Braid,
    Postgres,
}

#[derive(Debug)]
struct System {
    name: &'static str,
    conninfo: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// pgbench `-S`: `SELECT abalance FROM pgbench_accounts WHERE aid = $1`.
    SelectOnly,
    /// pgbench's builtin `tpcb-like` script.
    TpcB,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::SelectOnly => "select-only (point lookup by aid)",
            Workload::TpcB => "TPC-B-like (5 statements in BEGIN/COMMIT)",
        }
    }
}

async fn run_all(args: &TablesArgs) -> anyhow::Result<()> {
    let accounts = if args.quick {
        100_000
    } else {
        args.accounts.max(RANGE_SPAN + 1)
    };
    let branches = accounts.div_ceil(ACCOUNTS_PER_BRANCH);
    let seconds = if args.quick {
        4.0
    } else {
        args.seconds.max(1.0)
    };
    let s = Settings {
        accounts,
        branches,
        tellers: branches * TELLERS_PER_BRANCH,
        clients: args.clients.max(1),
        seconds,
        rounds: if args.quick { 1 } else { args.rounds.max(1) },
        warmup_seconds: if args.quick { 0.5 } else { 2.0 },
        reps: if args.quick { 3 } else { args.reps.max(1) },
        scan_rows: if args.quick {
            1_000_000
        } else {
            args.scan_rows
        },
    };
    let env = RunEnv::prepare(
        args.braid_bin.as_ref(),
        &args.pg_bin,
        args.dir.as_ref(),
        "tables-",
    )?;
    let postgres = args.pg_bin.join("postgres");

    println!("# braid-bench tables");
    println!();
    println!(
        "dir: {} ({}, {}); cores: {}; memory: {}; kernel: {}; load average at start: {}",
        env.base.display(),
        env.device,
        env.fs_type,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        load_average(),
    );
    println!(
        "braid: {} (built {}), durability sync (default); PostgreSQL: {} ({}), defaults",
        env.braid_bin.display(),
        modified_ago(&env.braid_bin),
        command_output(std::process::Command::new(&postgres).arg("--version"))
            .unwrap_or_else(|e| format!("? ({e})")),
        args.pg_bin.display(),
    );
    println!(
        "accounts: {}; branches: {}; tellers: {}; clients: {}; {:.0} s per workload and system \
         in {} interleaved round(s) after a {:.1} s warm-up; query repetitions: {} (median); \
         long range scan: {} rows",
        s.accounts,
        s.branches,
        s.tellers,
        s.clients,
        s.seconds,
        s.rounds,
        s.warmup_seconds,
        s.reps,
        s.scan_rows
    );
    println!();

    let braid = BraidServer::start(&env.braid_bin, &env.tmp.path().join("braid")).await?;
    let pg = PgServer::start(&args.pg_bin, &args.pg_user, &env.tmp.path().join("pg")).await?;
    let systems = [
        System {
            name: "braid",
            conninfo: braid.conninfo(),
            kind: Kind::Braid,
        },
        System {
            name: "PostgreSQL",
            conninfo: pg.conninfo(),
            kind: Kind::Postgres,
        },
    ];

    // Load.
    let mut load_secs = Vec::new();
    for sys in &systems {
        let secs = load(sys, &s).await?;
        eprintln!(
            "{:>10} load: {} accounts in {secs:.1} s ({} rows/s)",
            sys.name,
            s.accounts,
            si(s.accounts as f64 / secs)
        );
        load_secs.push(secs);
    }
    let disk_after_load = [
        crate::wire_bench::dir_bytes(braid.data_dir()),
        crate::wire_bench::dir_bytes(pg.data_dir()),
    ];
    if let Some(pid) = braid.pid() {
        let waited = settle(pid).await;
        eprintln!("braid settled after the load in {waited:.1} s");
    }

    // Queries over the freshly loaded accounts.
    let queries = run_queries(&systems, &s, &account_queries(&s)).await?;

    // The two client workloads, select-only first (it changes nothing).
    let mut results = Vec::new();
    for w in [Workload::SelectOnly, Workload::TpcB] {
        results.push(run_workload(&systems, w, &s).await?);
    }

    // pgbench's invariant after TPC-B.
    let mut checks = Vec::new();
    for (i, sys) in systems.iter().enumerate() {
        let committed = results
            .iter()
            .find(|r| r.workload == Workload::TpcB)
            .and_then(|r| r.per_system.get(i))
            .map_or(0, |x| x.committed_total);
        checks.push(consistency(sys, committed).await?);
    }

    // The long range scan, over a table loaded last so that its load and compaction do not
    // share the machine with the workloads.
    let mut scan_load = Vec::new();
    let mut scan_settle = 0.0;
    let mut scan_queries = Vec::new();
    if s.scan_rows > 0 {
        let rows = scan_table_rows(&s);
        for sys in &systems {
            let secs = load_scan_table(sys, rows).await?;
            eprintln!(
                "{:>10} load: {rows} scan_accounts rows in {secs:.1} s",
                sys.name
            );
            scan_load.push(secs);
        }
        if let Some(pid) = braid.pid() {
            let waited = settle(pid).await;
            eprintln!("braid settled (background flush and compaction) in {waited:.1} s");
            scan_settle = waited;
        }
        scan_queries = run_queries(&systems, &s, &[long_range(&s)]).await?;
    }

    println!("## Load (untimed setup, for reference)");
    println!();
    let header = [
        "system",
        "accounts",
        "load s",
        "rows/s",
        "data dir after load MB",
    ];
    let lines: Vec<Vec<String>> = systems
        .iter()
        .zip(&load_secs)
        .zip(disk_after_load)
        .map(|((sys, secs), bytes)| {
            vec![
                sys.name.to_string(),
                s.accounts.to_string(),
                format!("{secs:.1}"),
                si(s.accounts as f64 / secs),
                format!("{:.0}", bytes as f64 / 1e6),
            ]
        })
        .collect();
    print_table(&header, &lines);
    println!();
    println!(
        "braid: `INSERT ... SELECT ... FROM generate_series` in {LOAD_BATCH_ROWS}-row statements; \
         PostgreSQL: the same statements, then `VACUUM ANALYZE` (as `pgbench -i` does; in the time)."
    );
    println!();

    println!(
        "## Transactions ({} clients, prepared statements)",
        s.clients
    );
    println!();
    let header = [
        "workload",
        "braid TPS",
        "PostgreSQL TPS",
        "braid / PostgreSQL",
        "braid p50/p99 ms",
        "PostgreSQL p50/p99 ms",
        "braid retries (40001, 40P01)",
    ];
    let lines: Vec<Vec<String>> = results
        .iter()
        .filter_map(|r| match r.per_system.as_slice() {
            [b, p] => Some(vec![
                r.workload.label().to_string(),
                format!("{:.0}", b.tps),
                format!("{:.0}", p.tps),
                format!("{:.2}", b.tps / p.tps.max(1e-9)),
                format!("{:.2} / {:.2}", b.p50_ms, b.p99_ms),
                format!("{:.2} / {:.2}", p.p50_ms, p.p99_ms),
                format!(
                    "{} ({:.1}% of attempts)",
                    b.retries,
                    100.0 * b.retries as f64 / (b.retries + b.committed).max(1) as f64
                ),
            ]),
            _ => None,
        })
        .collect();
    print_table(&header, &lines);
    println!();
    println!(
        "TPS = committed transactions / wall time, summed over the rounds; latency is one \
         transaction (BEGIN to COMMIT's answer, retries included)."
    );
    println!();

    print_queries(
        &format!("Queries (over the {} freshly loaded accounts)", s.accounts),
        &queries,
    );
    if let [b, p] = scan_load.as_slice() {
        print_queries(
            &format!(
                "Long range scan (`scan_accounts`: {} rows, loaded after the workloads in \
                 {b:.1} s on braid, {p:.1} s on PostgreSQL including `VACUUM ANALYZE`; braid \
                 then given {:.1} s to finish its flush and compaction)",
                scan_table_rows(&s),
                scan_settle
            ),
            &scan_queries,
        );
    }

    println!("## Consistency after TPC-B (pgbench's invariant)");
    println!();
    let mut consistent = true;
    for (sys, c) in systems.iter().zip(&checks) {
        let ok = c.ok();
        consistent &= ok;
        println!(
            "- {}: sum(abalance) {}, sum(tbalance) {}, sum(bbalance) {}, sum(history.delta) {}; \
             history rows {} for {} committed transactions — {}",
            sys.name,
            c.accounts,
            c.tellers,
            c.branches,
            c.history,
            c.history_rows,
            c.committed,
            verdict(ok)
        );
    }
    println!();

    println!("## Targets (issue 5)");
    println!();
    for r in &results {
        if let [b, p] = r.per_system.as_slice() {
            let target = match r.workload {
                Workload::SelectOnly => 1.2,
                Workload::TpcB => 1.0,
            };
            let x = b.tps / p.tps.max(1e-9);
            println!(
                "- {} braid ≥ {target}× PostgreSQL: {:.0} vs {:.0} TPS = {x:.2}× — {}",
                r.workload.label(),
                b.tps,
                p.tps,
                verdict(x >= target)
            );
        }
    }
    for q in queries.iter().chain(&scan_queries).filter(|q| q.target) {
        println!(
            "- {} braid faster than PostgreSQL: {:.1} vs {:.1} ms = {:.2}× PostgreSQL's time — {}",
            q.label,
            q.braid_ms,
            q.pg_ms,
            q.braid_ms / q.pg_ms.max(1e-9),
            verdict(q.braid_ms < q.pg_ms)
        );
    }
    println!();
    println!("load average at the end: {}", load_average());

    let problems = braid.stop()?;
    pg.stop();
    if problems.is_empty() {
        println!("braid logged no WARN or ERROR lines.");
    } else {
        println!(
            "braid logged {} WARN/ERROR lines, first: {}",
            problems.len(),
            problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    ensure!(consistent, "pgbench's consistency check failed (see above)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Schema and load.

/// pgbench's tables (as `pgbench -i` creates them, with the primary keys it adds after the
/// load declared up front: braid's row tables are keyed by their primary key from the start).
const DDL: &str = "\
    CREATE TABLE pgbench_branches (bid int NOT NULL PRIMARY KEY, bbalance int, filler char(88)); \
    CREATE TABLE pgbench_tellers (tid int NOT NULL PRIMARY KEY, bid int, tbalance int, filler char(84)); \
    CREATE TABLE pgbench_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, filler char(84)); \
    CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))";

/// `FROM` clause over `generate_series(lo, hi)` whose column is `value` on both systems
/// (DataFusion's table function names it so; PostgreSQL takes the column alias).
fn series(kind: Kind, lo: u64, hi: u64) -> String {
    match kind {
        Kind::Braid => format!("generate_series({lo}, {hi})"),
        Kind::Postgres => format!("generate_series({lo}, {hi}) AS g(value)"),
    }
}

/// Creates and fills the tables; returns the seconds it took.
async fn load(sys: &System, s: &Settings) -> anyhow::Result<f64> {
    let c = connect(&sys.conninfo).await?;
    let t = Instant::now();
    c.batch_execute(DDL)
        .await
        .with_context(|| format!("create the tables on {}", sys.name))?;
    c.batch_execute(&format!(
        "INSERT INTO pgbench_branches (bid, bbalance) SELECT value, 0 FROM {}; \
         INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT value, (value - 1) / {TELLERS_PER_BRANCH} + 1, 0 FROM {}",
        series(sys.kind, 1, s.branches),
        series(sys.kind, 1, s.tellers),
    ))
    .await
    .with_context(|| format!("load branches and tellers on {}", sys.name))?;
    let mut lo = 1;
    while lo <= s.accounts {
        let hi = (lo + LOAD_BATCH_ROWS - 1).min(s.accounts);
        let n = c
            .execute(
                &format!(
                    "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) \
                     SELECT value, (value - 1) / {ACCOUNTS_PER_BRANCH} + 1, 0, '{FILLER_84}' FROM {}",
                    series(sys.kind, lo, hi)
                ),
                &[],
            )
            .await
            .with_context(|| format!("load accounts {lo}..={hi} on {}", sys.name))?;
        ensure!(
            n == hi - lo + 1,
            "{}: loading accounts {lo}..={hi} inserted {n} rows",
            sys.name
        );
        lo = hi + 1;
    }
    if sys.kind == Kind::Postgres {
        c.batch_execute("VACUUM ANALYZE")
            .await
            .context("VACUUM ANALYZE on PostgreSQL")?;
    }
    let secs = t.elapsed().as_secs_f64();
    let mut counts = Vec::new();
    for t in ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"] {
        counts.push(first_row(
            &c.simple_query(&format!("SELECT count(*) FROM {t}"))
                .await
                .with_context(|| format!("count the rows of {t} on {}", sys.name))?,
        ));
    }
    let counts = counts.join(", ");
    let expected = format!("{}, {}, {}", s.accounts, s.tellers, s.branches);
    ensure!(
        counts == expected,
        "{}: loaded row counts {counts}, expected {expected}",
        sys.name
    );
    Ok(secs)
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// A timed query: a label, the SQL (a fresh random range per repetition where it has one)
/// and whether it is one of the targets.
struct QuerySpec {
    label: String,
    sql: Box<dyn Fn(&mut Prng) -> String + Send + Sync>,
    target: bool,
}

/// The queries over the freshly loaded accounts: a short range (not a target: its time is
/// mostly planning) and the analytic aggregate over the whole table (a target).
fn account_queries(s: &Settings) -> Vec<QuerySpec> {
    let accounts = s.accounts;
    vec![
        QuerySpec {
            label: format!("short range scan: {} consecutive aid", RANGE_SPAN + 1),
            sql: Box::new(move |rng| {
                let x = rng.range(1, accounts - RANGE_SPAN);
                format!(
                    "SELECT sum(abalance), count(*) FROM pgbench_accounts WHERE aid BETWEEN {x} AND {}",
                    x + RANGE_SPAN
                )
            }),
            target: false,
        },
        QuerySpec {
            label: "aggregate over the whole table (GROUP BY bid)".to_string(),
            sql: Box::new(|_| {
                "SELECT bid, count(*), sum(abalance), avg(abalance) FROM pgbench_accounts \
                 GROUP BY bid ORDER BY bid"
                    .to_string()
            }),
            target: true,
        },
    ]
}

/// Rows of `scan_accounts`: the long range plus a tenth, so the range starts at a random aid.
fn scan_table_rows(s: &Settings) -> u64 {
    s.scan_rows + s.scan_rows / 10
}

/// The range scan of ten million rows: `scan_rows` consecutive aid of `scan_accounts`.
fn long_range(s: &Settings) -> QuerySpec {
    let (rows, span) = (scan_table_rows(s), s.scan_rows);
    QuerySpec {
        label: format!("long range scan: {span} consecutive aid"),
        sql: Box::new(move |rng| {
            let x = rng.range(1, rows - span + 1);
            format!(
                "SELECT sum(abalance), count(*) FROM scan_accounts WHERE aid BETWEEN {x} AND {}",
                x + span - 1
            )
        }),
        target: true,
    }
}

/// Creates and fills `scan_accounts` (then `VACUUM ANALYZE` on PostgreSQL); returns the seconds.
async fn load_scan_table(sys: &System, rows: u64) -> anyhow::Result<f64> {
    let c = connect(&sys.conninfo).await?;
    let t = Instant::now();
    c.batch_execute(
        "CREATE TABLE scan_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, \
         filler char(84))",
    )
    .await
    .with_context(|| format!("create scan_accounts on {}", sys.name))?;
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + LOAD_BATCH_ROWS - 1).min(rows);
        c.execute(
            &format!(
                "INSERT INTO scan_accounts (aid, bid, abalance, filler) \
                 SELECT value, (value - 1) / {ACCOUNTS_PER_BRANCH} + 1, value % 1000, '{FILLER_84}' FROM {}",
                series(sys.kind, lo, hi)
            ),
            &[],
        )
        .await
        .with_context(|| format!("load scan_accounts {lo}..={hi} on {}", sys.name))?;
        lo = hi + 1;
    }
    if sys.kind == Kind::Postgres {
        c.batch_execute("VACUUM ANALYZE scan_accounts")
            .await
            .context("VACUUM ANALYZE scan_accounts on PostgreSQL")?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Waits (at most 120 s) until the braid process has used under 3% of a core for three
/// seconds in a row: its flushes and compactions after a bulk load are done (as PostgreSQL's
/// `VACUUM ANALYZE` is, in its load time). Returns the seconds.
async fn settle(pid: u32) -> f64 {
    let cpu = || -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    };
    let t = Instant::now();
    let mut quiet = 0;
    let mut last = cpu();
    while quiet < 3 && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu();
        match (last, now) {
            // Clock ticks are 1/100 s: under 3 ticks in a second is under 3% of a core.
            (Some(a), Some(b)) if b.saturating_sub(a) < 3 => quiet += 1,
            (Some(_), Some(_)) => quiet = 0,
            _ => break,
        }
        last = now;
    }
    t.elapsed().as_secs_f64()
}

/// Times each query, braid and PostgreSQL alternating repetition by repetition after one
/// untimed warm-up each; both must give the same answer.
async fn run_queries(
    systems: &[System; 2],
    s: &Settings,
    specs: &[QuerySpec],
) -> anyhow::Result<Vec<QueryRow>> {
    let [braid_sys, pg_sys] = systems;
    let braid = connect(&braid_sys.conninfo).await?;
    let pg = connect(&pg_sys.conninfo).await?;
    let mut rng = Prng(0x7ab1e5);
    let mut out = Vec::new();
    for spec in specs {
        let label = spec.label.clone();
        let pick_sql = |rng: &mut Prng| (spec.sql)(rng);
        let example = pick_sql(&mut rng);
        let mut plans = Vec::new();
        let b_plan = all_rows(&braid.simple_query(&format!("EXPLAIN {example}")).await?);
        if let Some(scan) = b_plan.iter().find(|l| l.contains("RowScanExec")) {
            let scan = scan.split_whitespace().collect::<Vec<_>>().join(" ");
            let at = scan.find("RowScanExec").unwrap_or(0);
            plans.push(format!("braid `{}`", scan.get(at..).unwrap_or(&scan)));
        }
        let p_plan = all_rows(&pg.simple_query(&format!("EXPLAIN {example}")).await?);
        let p_nodes: Vec<String> = p_plan
            .iter()
            .filter(|l| l.contains("Scan") || l.contains("Aggregate"))
            .map(|l| {
                l.trim()
                    .trim_start_matches("->")
                    .trim()
                    .split("  (")
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        if !p_nodes.is_empty() {
            plans.push(format!("PostgreSQL `{}`", p_nodes.join(" ← ")));
        }
        let (mut b_ms, mut p_ms) = (Vec::new(), Vec::new());
        let (mut b_res, mut p_res) = (String::new(), String::new());
        for rep in 0..=s.reps {
            let sql = pick_sql(&mut rng);
            let t = Instant::now();
            let r = braid
                .simple_query(&sql)
                .await
                .with_context(|| format!("braid: {sql}"))?;
            let bt = t.elapsed().as_secs_f64() * 1e3;
            b_res = summary(&r);
            let t = Instant::now();
            let r = pg
                .simple_query(&sql)
                .await
                .with_context(|| format!("PostgreSQL: {sql}"))?;
            let pt = t.elapsed().as_secs_f64() * 1e3;
            p_res = summary(&r);
            ensure!(
                same_numbers(&b_res, &p_res),
                "{label}: braid answered {b_res}, PostgreSQL {p_res} ({sql})"
            );
            if rep > 0 {
                b_ms.push(bt);
                p_ms.push(pt);
            }
        }
        let (bm, pm) = (median(&mut b_ms), median(&mut p_ms));
        eprintln!("{label}: braid {bm:.1} ms ({b_res}), PostgreSQL {pm:.1} ms ({p_res})");
        out.push(QueryRow {
            label,
            braid_sql: example.clone(),
            pg_sql: example,
            braid_ms: bm,
            pg_ms: pm,
            braid_result: b_res,
            pg_result: p_res,
            plans: plans.join("; "),
            target: spec.target,
        });
    }
    Ok(out)
}

/// The first row and the row count of a result: `first row (n rows)`.
fn summary(messages: &[SimpleQueryMessage]) -> String {
    let rows = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    if rows == 1 {
        first_row(messages)
    } else {
        format!("{} ({rows} rows)", first_row(messages))
    }
}

/// Whether two results agree, numbers compared as numbers (PostgreSQL prints `avg` of an int
/// column as `0.00000000000000000000`, braid as `0.0`).
fn same_numbers(a: &str, b: &str) -> bool {
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (split(a), split(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            x == y
                || matches!((x.parse::<f64>(), y.parse::<f64>()), (Ok(p), Ok(q)) if (p - q).abs() <= 1e-9 * p.abs().max(1.0))
        })
}

// ---------------------------------------------------------------------------------------------
// Client workloads.

/// splitmix64: each client's draws, the same on both systems.
#[derive(Debug, Clone)]
struct Prng(u64);

impl Prng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// An integer parameter sent as whatever integer type the server announced for the
/// placeholder (PostgreSQL says `int4` for a comparison with an `int` column; braid may say
/// `int8`), so the client's work is the same for both.
#[derive(Debug, Clone, Copy)]
struct Int(i64);

impl ToSql for Int {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *ty {
            Type::INT2 => i16::try_from(self.0)?.to_sql(ty, out),
            Type::INT4 => i32::try_from(self.0)?.to_sql(ty, out),
            _ => self.0.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
    }

    to_sql_checked!();
}

/// One system's totals for one workload.
#[derive(Debug, Default)]
struct SystemRun {
    tps: f64,
    /// Timed committed transactions.
    committed: u64,
    /// Committed transactions including the warm-up (the history rows TPC-B left).
    committed_total: u64,
    retries: u64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug)]
struct WorkloadResult {
    workload: Workload,
    /// braid, then PostgreSQL.
    per_system: Vec<SystemRun>,
}

/// Runs `workload` on both systems: a warm-up each, then `rounds` interleaved timed rounds.
async fn run_workload(
    systems: &[System; 2],
    workload: Workload,
    s: &Settings,
) -> anyhow::Result<WorkloadResult> {
    let mut per_system: Vec<SystemRun> = systems.iter().map(|_| SystemRun::default()).collect();
    let mut latencies: Vec<Vec<u64>> = systems.iter().map(|_| Vec::new()).collect();
    let mut seconds = [0.0f64; 2];
    // Round 0 is the warm-up; every round draws other values (the seed moves with it) and
    // both systems get the same draws in a round.
    for round in 0..=s.rounds {
        let secs = if round == 0 {
            s.warmup_seconds
        } else {
            s.seconds / s.rounds as f64
        };
        for (i, sys) in systems.iter().enumerate() {
            let r = run_clients(sys, workload, s, secs, round as u64).await?;
            let Some(acc) = per_system.get_mut(i) else {
                continue;
            };
            acc.committed_total += r.committed;
            if round > 0 {
                acc.committed += r.committed;
                acc.retries += r.retries;
                if let (Some(l), Some(t)) = (latencies.get_mut(i), seconds.get_mut(i)) {
                    l.extend(r.latencies_ns);
                    *t += r.seconds;
                }
                eprintln!(
                    "{:>10} {} round {round}: {:.0} TPS ({} committed, {} retries, {:.1} s)",
                    sys.name,
                    workload.label(),
                    r.committed as f64 / r.seconds,
                    r.committed,
                    r.retries,
                    r.seconds
                );
            }
        }
    }
    for ((acc, l), t) in per_system.iter_mut().zip(&mut latencies).zip(seconds) {
        acc.tps = acc.committed as f64 / t.max(1e-9);
        l.sort_unstable();
        acc.p50_ms = percentile_ms(l, 0.50);
        acc.p99_ms = percentile_ms(l, 0.99);
    }
    Ok(WorkloadResult {
        workload,
        per_system,
    })
}

fn percentile_ms(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns.get(rank - 1).copied().unwrap_or(0) as f64 / 1e6
}

/// What one round of one system did.
#[derive(Debug)]
struct ClientsRun {
    committed: u64,
    retries: u64,
    latencies_ns: Vec<u64>,
    /// From the moment every client was connected and prepared until the last one stopped.
    seconds: f64,
}

/// The prepared statements of one client.
struct Prepared {
    select: tokio_postgres::Statement,
    update_account: Option<tokio_postgres::Statement>,
    update_teller: Option<tokio_postgres::Statement>,
    update_branch: Option<tokio_postgres::Statement>,
    insert_history: Option<tokio_postgres::Statement>,
}

async fn prepare(client: &Client, workload: Workload) -> Result<Prepared, tokio_postgres::Error> {
    let select = client
        .prepare("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
        .await?;
    if workload == Workload::SelectOnly {
        return Ok(Prepared {
            select,
            update_account: None,
            update_teller: None,
            update_branch: None,
            insert_history: None,
        });
    }
    Ok(Prepared {
        select,
        update_account: Some(
            client
                .prepare("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2")
                .await?,
        ),
        update_teller: Some(
            client
                .prepare("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2")
                .await?,
        ),
        update_branch: Some(
            client
                .prepare("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2")
                .await?,
        ),
        insert_history: Some(
            client
                .prepare(
                    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                     VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
                )
                .await?,
        ),
    })
}

/// `clients` connections run `workload` for `secs` seconds.
async fn run_clients(
    sys: &System,
    workload: Workload,
    s: &Settings,
    secs: f64,
    round: u64,
) -> anyhow::Result<ClientsRun> {
    let barrier = Arc::new(tokio::sync::Barrier::new(s.clients + 1));
    let retries = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(s.clients);
    for c in 0..s.clients {
        let client = connect(&sys.conninfo).await?;
        let p = prepare(&client, workload)
            .await
            .with_context(|| format!("prepare the {workload:?} statements on {}", sys.name))?;
        let barrier = barrier.clone();
        let retries = retries.clone();
        let name = sys.name;
        let s = *s;
        let seed = (round << 32) ^ (c as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
        tasks.push(tokio::spawn(async move {
            let mut rng = Prng(seed);
            let mut latencies_ns = Vec::new();
            barrier.wait().await;
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            while Instant::now() < deadline {
                let aid = Int(rng.range(1, s.accounts) as i64);
                let t = Instant::now();
                match workload {
                    Workload::SelectOnly => {
                        let rows = client
                            .query(&p.select, &[&aid])
                            .await
                            .with_context(|| format!("select-only on {name}"))?;
                        ensure!(rows.len() == 1, "{name}: account {} not found", aid.0);
                    }
                    Workload::TpcB => {
                        let bid = Int(rng.range(1, s.branches) as i64);
                        let tid = Int(rng.range(1, s.tellers) as i64);
                        let delta = Int(rng.range(0, 10_000) as i64 - 5_000);
                        loop {
                            match tpcb(&client, &p, aid, bid, tid, delta).await {
                                Ok(()) => break,
                                // As `pgbench --max-tries` retries: serialization
                                // failures and deadlocks.
                                Err(e)
                                    if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                                        || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) =>
                                {
                                    retries.fetch_add(1, Ordering::Relaxed);
                                    // A failed COMMIT has ended the block; a failed statement
                                    // has not. ROLLBACK outside a block is harmless.
                                    client
                                        .batch_execute("ROLLBACK")
                                        .await
                                        .with_context(|| format!("ROLLBACK on {name}"))?;
                                }
                                Err(e) => {
                                    return Err(anyhow::Error::new(e)
                                        .context(format!("TPC-B transaction on {name}")))
                                }
                            }
                        }
                    }
                }
                latencies_ns.push(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(latencies_ns)
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut latencies_ns = Vec::new();
    for t in tasks {
        latencies_ns.extend(t.await.context("join a client")??);
    }
    Ok(ClientsRun {
        committed: latencies_ns.len() as u64,
        retries: retries.load(Ordering::Relaxed),
        latencies_ns,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// pgbench's `tpcb-like` script, each statement prepared (`-M prepared`); BEGIN and COMMIT go
/// as simple queries, as pgbench sends them too.
async fn tpcb(
    client: &Client,
    p: &Prepared,
    aid: Int,
    bid: Int,
    tid: Int,
    delta: Int,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    if let Some(st) = &p.update_account {
        client.execute(st, &[&delta, &aid]).await?;
    }
    client.query(&p.select, &[&aid]).await?;
    if let Some(st) = &p.update_teller {
        client.execute(st, &[&delta, &tid]).await?;
    }
    if let Some(st) = &p.update_branch {
        client.execute(st, &[&delta, &bid]).await?;
    }
    if let Some(st) = &p.insert_history {
        client.execute(st, &[&tid, &bid, &aid, &delta]).await?;
    }
    client.batch_execute("COMMIT").await
}

// ---------------------------------------------------------------------------------------------
// Consistency.

#[derive(Debug)]
struct Consistency {
    accounts: i64,
    tellers: i64,
    branches: i64,
    history: i64,
    history_rows: i64,
    committed: u64,
}

impl Consistency {
    fn ok(&self) -> bool {
        self.accounts == self.tellers
            && self.tellers == self.branches
            && self.branches == self.history
            && u64::try_from(self.history_rows).is_ok_and(|n| n == self.committed)
    }
}

/// Every committed TPC-B transaction added the same `delta` to one account, one teller, one
/// branch and one history row, so the four sums are equal and the history has one row per
/// commit; a lost update or a partial transaction breaks it.
async fn consistency(sys: &System, committed: u64) -> anyhow::Result<Consistency> {
    let c = connect(&sys.conninfo).await?;
    let mut v = Vec::new();
    for sql in [
        "SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts",
        "SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers",
        "SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches",
        "SELECT coalesce(sum(delta), 0) FROM pgbench_history",
        "SELECT count(*) FROM pgbench_history",
    ] {
        let text = first_row(
            &c.simple_query(sql)
                .await
                .with_context(|| format!("{}: {sql}", sys.name))?,
        );
        v.push(
            text.parse::<i64>()
                .with_context(|| format!("{}: {sql} gave {text:?}", sys.name))?,
        );
    }
    match v.as_slice() {
        [a, t, b, h, n] => Ok(Consistency {
            accounts: *a,
            tellers: *t,
            branches: *b,
            history: *h,
            history_rows: *n,
            committed,
        }),
        _ => bail!("{}: consistency queries gave {v:?}", sys.name),
    }
}
