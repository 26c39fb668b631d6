//! Shared by the row-store scenario tests: the I/O backend named by `BRAID_IO_BACKEND`, options
//! small enough that a few hundred rows flush memtables and roll log segments, and a seeded PRNG.
#![allow(dead_code)]

use std::path::Path;

use braid_ingest::rows::{RowStore, RowStoreOptions};
use braid_storage::io::{backend_from_env, SharedFs};
use braid_storage::lsm::LsmOptions;
use bytes::Bytes;

pub const DB: &str = "app";

pub fn fs() -> SharedFs {
    backend_from_env().expect("BRAID_IO_BACKEND names a backend")
}

/// Tiny memtables (flushes after a few KiB), log segments and levels, so that flushes, segment
/// rolls and background compactions (which must keep what open transactions read) happen often.
pub fn small() -> RowStoreOptions {
    RowStoreOptions {
        lsm: LsmOptions {
            memtable_bytes_max: 4 << 10,
            block_bytes: 512,
            block_cache_bytes: 1 << 20,
            table_bytes_max: 16 << 10,
            l0_compaction_trigger_files: 2,
            level1_bytes_max: 32 << 10,
            background_compaction: true,
            ..LsmOptions::default()
        },
        segment_bytes_max: 8 << 10,
        ..RowStoreOptions::default()
    }
}

pub async fn open(fs: &SharedFs, dir: &Path, opts: RowStoreOptions) -> RowStore {
    RowStore::open(fs.clone(), dir, DB, opts)
        .await
        .expect("open the row store")
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn s(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).expect("utf8")
}

/// xorshift64*: deterministic and dependency-free.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed.max(1))
    }

    /// Seed from `var` when set, else from the clock.
    pub fn seed_from_env_or_time(var: &str) -> u64 {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
