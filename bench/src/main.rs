//! `braid-bench`: side-by-side benchmarks of braid against the physical limit of the machine it
//! runs on (see bench/README.md for the command, what each row means and dated results).
//!
//! Each subcommand measures braid and its raw baseline in the same run, on the same disk, so the
//! ratio between them means something even when the absolute numbers move with the machine.
//! Subcommands:
//! - `log`: LogCore appends vs a raw `pwrite` + `fdatasync` loop ([`log_bench`]).
//! - `wire`: bulk event ingest and two queries over the PostgreSQL wire protocol, the `braid`
//!   server vs PostgreSQL 15 started side by side ([`wire_bench`]).
//! - `tables`: pgbench-like row-table transactions (TPC-B-like, select-only) and queries over
//!   the wire, the `braid` server vs PostgreSQL 15 started side by side ([`tables_bench`]).

mod log_bench;
mod measure;
mod tables_bench;
mod wire_bench;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "braid-bench",
    about = "Side-by-side benchmarks: braid vs raw limits and vs PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// LogCore append (durability sync) vs a raw pwrite + fdatasync loop on the same disk.
    Log(LogArgs),
    /// Event ingest (COPY, concurrent single-row INSERTs) and queries over the wire: the braid
    /// server vs PostgreSQL 15, both started by the run on the same disk.
    Wire(WireArgs),
    /// pgbench-like row tables over the wire: TPC-B-like and select-only transactions from
    /// concurrent clients, a range scan and an aggregate; the braid server vs PostgreSQL 15,
    /// both started by the run on the same disk.
    Tables(TablesArgs),
}

/// Options of the `log` subcommand.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Directory to write in (a fresh temporary directory is made inside it and removed at the
    /// end). Must be on the disk you want to measure; default: `<repo>/target/braid-bench`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Short runs (a smoke test, numbers are noisy).
    #[arg(long)]
    pub quick: bool,
    /// Seconds each row runs for (default 2.5, or 0.3 with --quick).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Interleaved rounds each row's time is split into (1 with --quick).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Partition counts of the grid (the group-commit rows run when 1 is included).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub partitions: Vec<u32>,
    /// Record payload sizes of the grid, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    pub record_bytes: Vec<usize>,
    /// Records per append of the grid (the group-commit rows run when 1 is included).
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    pub batches: Vec<usize>,
    /// Backends to run LogCore on, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "std,uring")]
    pub backends: Vec<String>,
}

/// Options of the `wire` subcommand.
#[derive(Debug, clap::Args)]
pub struct WireArgs {
    /// Rows loaded by COPY (and queried afterwards).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Rows loaded by the concurrent single-row INSERT phase (a prefix of the same rows).
    #[arg(long, default_value_t = 100_000)]
    pub insert_rows: u64,
    /// Concurrent clients of the INSERT phase, each on its own connection.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Partitions of braid's `events_ins` stream (the INSERT phase's target). Each partition
    /// is its own file with its own `fdatasync`, so fewer partitions let one sync cover more
    /// of the concurrent single-row INSERTs.
    #[arg(long, default_value_t = 8)]
    pub insert_partitions: u32,
    /// Timed repetitions of each query (after one untimed warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Smoke test: 100,000 COPY rows, 10,000 INSERT rows, 3 repetitions (overrides the above).
    #[arg(long)]
    pub quick: bool,
    /// Directory both servers' data directories are made in (a fresh temporary directory inside
    /// it, removed at the end). Must be on the disk you want to measure; default:
    /// `<repo>/target/braid-bench`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `braid` server binary; default: `$CARGO_TARGET_DIR/release/braid`, else
    /// `<repo>/target/release/braid` (build it with `cargo build --release -p braid-server`).
    #[arg(long)]
    pub braid_bin: Option<PathBuf>,
    /// Directory holding PostgreSQL's `initdb`, `pg_ctl` and `postgres`.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
    /// OS user PostgreSQL runs as when the benchmark runs as root (created with
    /// `useradd --system` if missing).
    #[arg(long, default_value = "postgres")]
    pub pg_user: String,
}

/// Options of the `tables` subcommand.
#[derive(Debug, clap::Args)]
pub struct TablesArgs {
    /// Rows of `pgbench_accounts` (one branch per 100,000, ten tellers per branch).
    #[arg(long, default_value_t = 1_000_000)]
    pub accounts: u64,
    /// Timed seconds of each workload on each system (split over the rounds).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Interleaved rounds (braid, PostgreSQL, braid, …) each workload's time is split into.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Timed repetitions of each query (after one untimed warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Rows the long range scan reads, from `scan_accounts` (pgbench_accounts' shape, a tenth
    /// more rows than this), loaded after the transaction workloads; 0 skips it.
    #[arg(long, default_value_t = 10_000_000)]
    pub scan_rows: u64,
    /// Smoke test: 100,000 accounts, 4 s per workload in one round, 3 query repetitions,
    /// a 1,000,000-row long range scan (overrides the above).
    #[arg(long)]
    pub quick: bool,
    /// Directory both servers' data directories are made in (a fresh temporary directory inside
    /// it, removed at the end). Must be on the disk you want to measure; default:
    /// `<repo>/target/braid-bench`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `braid` server binary; default: `$CARGO_TARGET_DIR/release/braid`, else
    /// `<repo>/target/release/braid` (build it with `cargo build --release -p braid-server`).
    #[arg(long)]
    pub braid_bin: Option<PathBuf>,
    /// Directory holding PostgreSQL's `initdb`, `pg_ctl` and `postgres`.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
    /// OS user PostgreSQL runs as when the benchmark runs as root (created with
    /// `useradd --system` if missing).
    #[arg(long, default_value = "postgres")]
    pub pg_user: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Log(args) => log_bench::run(&args),
        Command::Wire(args) => wire_bench::run(&args),
        Command::Tables(args) => tables_bench::run(&args),
    }
}
