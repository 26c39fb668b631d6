//! Shared by the storage scenario tests: the I/O backend named by `BRAID_IO_BACKEND`, topic
//! configs small enough to roll quickly, and record helpers.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use braid_storage::io::{backend_from_env, SharedFs};
use braid_storage::log::{LogRecord, Partition, Record, Topic, TopicConfig};

pub fn fs() -> SharedFs {
    backend_from_env().expect("BRAID_IO_BACKEND names a backend")
}

/// One partition, small segments, no background maintenance.
pub fn small_config() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        maintenance_interval: None,
        segment_age_max: None,
        ..TopicConfig::default()
    }
}

pub async fn open(fs: &SharedFs, dir: &Path, cfg: TopicConfig) -> Topic {
    Topic::open(fs.clone(), dir, cfg).await.expect("open topic")
}

pub fn rec(i: u64) -> Record {
    Record {
        timestamp: Some(1_000_000 + i as i64),
        key: Some(format!("key-{}", i % 7).into_bytes().into()),
        value: Some(
            format!("value-{i:06}-{}", "x".repeat((i % 50) as usize))
                .into_bytes()
                .into(),
        ),
        headers: Vec::new(),
    }
}

/// Reads a whole partition from `from` to its end.
pub async fn read_all(p: &Partition, from: u64) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let mut at = from;
    while at < p.end_offset() {
        let r = p.read(at, 8192).await.expect("read");
        if r.next_offset <= at {
            break;
        }
        at = r.next_offset;
        out.extend(r.records);
    }
    out
}

pub fn value_of(r: &LogRecord) -> String {
    String::from_utf8(r.value.as_ref().expect("value").to_vec()).expect("utf8")
}

pub const SHORT: Duration = Duration::from_secs(10);

/// Like [`read_all`], but hands a failed read back to the caller instead of panicking, so a
/// test can say which round and offset it failed at.
pub async fn try_read_all(p: &Partition, from: u64) -> braid_storage::Result<Vec<LogRecord>> {
    let mut out = Vec::new();
    let mut at = from;
    while at < p.end_offset() {
        let r = p.read(at, 8192).await?;
        if r.next_offset <= at {
            break;
        }
        at = r.next_offset;
        out.extend(r.records);
    }
    Ok(out)
}

/// A small deterministic PRNG (xorshift64*) for randomised scenario tests: print the seed so a
/// failing run can be repeated.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        // Never zero: xorshift stays at zero forever.
        Prng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The seed in `var` when set (to repeat a run), else one taken from the clock.
    pub fn seed_from_env_or_time(var: &str) -> u64 {
        if let Some(s) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
            return s;
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
