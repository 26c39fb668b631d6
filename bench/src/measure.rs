//! What one benchmark row measured, and the markdown table it is printed as.
//!
//! A row is summarised from every acknowledged operation: throughput is the sum of the
//! concurrent workers' rates (see [`Summary::new`]), latency is the distribution of
//! per-operation acknowledgement latencies (call to return) over all workers and rounds.

use std::time::Duration;

/// What one worker (a raw writer thread or an appender task) did in one round.
#[derive(Debug, Default)]
pub struct Worker {
    /// One entry per acknowledged operation: its latency in nanoseconds.
    pub latencies_ns: Vec<u64>,
    pub records: u64,
    pub bytes: u64,
    /// Time spent inside the measured calls (the sum of the latencies): what the benchmark
    /// harness does between calls (cloning the records) is not charged to the system measured.
    pub span: Duration,
}

/// The samples of one row, over its rounds. Workers keep their index from round to round.
#[derive(Debug, Default)]
pub struct Samples {
    latencies_ns: Vec<u64>,
    /// Per worker: records, bytes and time summed over the rounds.
    workers: Vec<(u64, u64, Duration)>,
}

impl Samples {
    /// Adds one round's workers.
    pub fn add_round(&mut self, round: Vec<Worker>) {
        if self.workers.len() < round.len() {
            self.workers.resize(round.len(), (0, 0, Duration::ZERO));
        }
        for (acc, w) in self.workers.iter_mut().zip(round) {
            acc.0 += w.records;
            acc.1 += w.bytes;
            acc.2 += w.span;
            self.latencies_ns.extend(w.latencies_ns);
        }
    }
}

/// One summarised row.
#[derive(Debug, Clone)]
pub struct Summary {
    pub ops: u64,
    pub records_per_s: f64,
    /// Bytes written to disk per second, in 10^6 bytes.
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Summary {
    /// Throughput is the sum of the workers' own rates (each worker's records over the time it
    /// spent in calls), so that the last operation of a slow worker, which ends after the
    /// deadline, is counted with the time it took instead of stretching everyone's clock (with
    /// few large operations per round that tail would otherwise dominate), and the harness's
    /// own work between calls is not charged.
    pub fn new(mut samples: Samples) -> Summary {
        samples.latencies_ns.sort_unstable();
        let rate = |pick: fn(&(u64, u64, Duration)) -> u64| -> f64 {
            samples
                .workers
                .iter()
                .map(|w| pick(w) as f64 / w.2.as_secs_f64().max(1e-9))
                .sum()
        };
        Summary {
            ops: samples.latencies_ns.len() as u64,
            records_per_s: rate(|w| w.0),
            mb_per_s: rate(|w| w.1) / 1e6,
            p50_us: percentile_us(&samples.latencies_ns, 0.50),
            p99_us: percentile_us(&samples.latencies_ns, 0.99),
        }
    }
}

/// Nearest-rank percentile of sorted nanosecond samples, in microseconds (0 when empty).
fn percentile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns.get(rank - 1).copied().unwrap_or(0) as f64 / 1e3
}

/// A compact human number: 1234567 → "1.23 M".
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A latency in µs with sensible precision.
pub fn us(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Prints a markdown table: `header` cells, then one line per row.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", header.join(" | "));
    let aligns: Vec<&str> = header.iter().map(|_| "---:").collect();
    println!("|{}|", aligns.join("|"));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}
