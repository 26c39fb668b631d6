//! The block cache: decoded data blocks keyed by (file number, block offset), bounded by
//! `block_cache_bytes`, split into shards so that concurrent lookups rarely share a lock.
//!
//! Each shard is a least-recently-used list: a hash map for lookups plus an ordered map from a
//! use tick to the key for eviction (O(log n) per touch, which is noise next to a block decode).
//! File numbers are never reused, so entries of deleted files are never hit again and simply
//! age out; no invalidation is needed.
//!
//! What must stay true: a shard never holds more than its share of the byte bound once an
//! insert returns (a single block larger than a shard is not cached at all).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::format::Block;

const SHARDS: usize = 16;

type Key = (u64, u64);

/// The map's hasher: a multiply-mix of the two numbers of a key. Keys are file numbers and
/// offsets the process made itself, not input an attacker picks, so the standard library's
/// SipHash (a flood-resistant hash, a third of a lookup's cost here) buys nothing.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // Fold the high bits down: the map picks buckets from the low ones.
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Key, (Arc<Block>, u64), BuildHasherDefault<KeyHasher>>,
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
}

/// Counters, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
}

#[derive(Debug)]
pub(crate) struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes_max: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
}

impl BlockCache {
    pub fn new(block_cache_bytes: usize) -> Self {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_bytes_max: block_cache_bytes / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Bytes the cache holds at most.
    pub fn capacity(&self) -> usize {
        self.shard_bytes_max * SHARDS
    }

    fn shard(&self, key: Key) -> &Mutex<Shard> {
        let h = (key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ key.1.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
            >> 32;
        // `SHARDS` is non-zero, so the index is always in range; `get` keeps clippy honest.
        let i = (h as usize) % SHARDS;
        self.shards.get(i).unwrap_or_else(|| &self.shards[0])
    }

    pub fn get(&self, file: u64, offset: u64) -> Option<Arc<Block>> {
        let key = (file, offset);
        let mut s = self.shard(key).lock();
        s.tick += 1;
        let tick = s.tick;
        let found = match s.map.get_mut(&key) {
            Some((block, t)) => {
                let old = std::mem::replace(t, tick);
                Some((block.clone(), old))
            }
            None => None,
        };
        match found {
            Some((block, old)) => {
                s.order.remove(&old);
                s.order.insert(tick, key);
                drop(s);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(block)
            }
            None => {
                drop(s);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, file: u64, offset: u64, block: Arc<Block>) {
        let charge = block.len() + 64;
        if charge > self.shard_bytes_max {
            return;
        }
        let key = (file, offset);
        let mut s = self.shard(key).lock();
        s.tick += 1;
        let tick = s.tick;
        if let Some((_, old)) = s.map.insert(key, (block, tick)) {
            // Two readers loaded the same block: keep one charge.
            s.order.remove(&old);
            s.bytes -= charge;
        }
        s.order.insert(tick, key);
        s.bytes += charge;
        let mut evicted = 0;
        while s.bytes > self.shard_bytes_max {
            let Some((_, victim)) = s.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = s.map.remove(&victim) {
                s.bytes -= b.len() + 64;
                evicted += 1;
            }
        }
        drop(s);
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

/// The block cache as one scan uses it: lookups as usual, but the blocks the scan reads put
/// into the cache only up to a share of its capacity, counted over all of the scan's tables.
/// A scan longer than the cache would otherwise push out every block before reading it again
/// (a ten-million-row scan of a table four times the cache's size missed on every block and
/// spent a third of its time copying blocks into the cache and evicting them), and the point
/// lookups' hot blocks with them. The blocks past the share are used from the scan's
/// readahead buffer and dropped.
#[derive(Debug, Clone)]
pub(crate) struct ScanCache {
    pub cache: std::sync::Arc<BlockCache>,
    fill_budget: std::sync::Arc<AtomicU64>,
}

/// The share of the cache's capacity one scan may fill: 1/`SCAN_FILL_SHARE`.
const SCAN_FILL_SHARE: usize = 8;

impl ScanCache {
    pub fn new(cache: std::sync::Arc<BlockCache>) -> Self {
        let budget = (cache.capacity() / SCAN_FILL_SHARE) as u64;
        ScanCache {
            cache,
            fill_budget: std::sync::Arc::new(AtomicU64::new(budget)),
        }
    }

    /// Whether a block of `bytes` may go into the cache (and counts it if so).
    pub fn may_fill(&self, bytes: usize) -> bool {
        self.fill_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(bytes as u64)
            })
            .is_ok()
    }
}
