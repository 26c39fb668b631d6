//! `braid-bench`: side-by-side benchmarks of braid against the physical limit of the machine it
//! runs on (see bench/README.md for the command, what each row means and dated results).
//!
//! Each subcommand measures braid and its raw baseline in the same run, on the same disk, so the
//! ratio between them means something even when the absolute numbers move with the machine.
//! Subcommands:
//! - `log`: LogCore appends vs a raw `pwrite` + `fdatasync` loop ([`log_bench`]).

mod log_bench;
mod measure;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "braid-bench", about = "Side-by-side benchmarks: braid vs raw limits")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// LogCore append (durability sync) vs a raw pwrite + fdatasync loop on the same disk.
    Log(LogArgs),
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Log(args) => log_bench::run(&args),
    }
}
