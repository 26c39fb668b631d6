//! Split keys: where to cut a key range into parts holding about the same number of versions,
//! so that the parts can be scanned in parallel, each by a [`super::Scan`] of its own.
//!
//! The estimate reads nothing from disk: a table's index block (in memory since the table was
//! opened) names the last key and the length of every data block, which is a sample of the
//! table's keys one block apart; a block holds the table's versions in proportion to its
//! length. A memtable has no such index; its versions are spread evenly between its first and
//! last key in the range, reading the key bytes after their common prefix as a number (keys
//! are order-preserving encodings, so consecutive integer keys come out evenly spaced).
//!
//! Why versions and not bytes: a scan's cost is per version stepped over, and a byte means
//! different things in each source — a memtable charges a row's key, value and node, a table
//! block holds the row prefix-compressed. Cut by bytes, a freshly loaded table (a third of its
//! rows flushed, the rest in the memtable) split 63/37 in rows, and its parallel scan took as
//! long as the bigger part.
//!
//! What must stay true: the split keys are strictly increasing and strictly inside the range,
//! so the parts `[start, k1) [k1, k2) … [kn, end]` cover the range exactly once whatever the
//! estimate was. A poor estimate costs balance, never a row.

use std::ops::Bound;

use bytes::Bytes;

use super::format::{push_internal_key, user_key, BlockHandle, Kind, SEQNO_MAX};
use super::memtable::Memtable;
use super::table::Table;

/// Samples taken from each memtable.
const MEMTABLE_SAMPLES: usize = 64;

/// One sampled key with the bytes and the versions (in 1/1024ths) up to it since the
/// previous sample of its source.
pub(crate) type Sample = (Vec<u8>, u64, u64);

/// Versions are counted in 1/1024ths, so that a block's share of a table stays exact enough.
const VERSION_UNIT: u128 = 1024;

/// Whether `k` lies in `(start, end)` as bounds.
fn in_range(k: &[u8], start: &Bound<Bytes>, end: &Bound<Bytes>) -> bool {
    let after_start = match start {
        Bound::Included(s) => k >= s.as_ref(),
        Bound::Excluded(s) => k > s.as_ref(),
        Bound::Unbounded => true,
    };
    let before_end = match end {
        Bound::Included(e) => k <= e.as_ref(),
        Bound::Excluded(e) => k < e.as_ref(),
        Bound::Unbounded => true,
    };
    after_start && before_end
}

/// The last user key of every data block of `table` that lies in the range, weighted by
/// the block's length and its share of the table's versions. An index entry that does not decode is skipped: this is an estimate,
/// and the scan itself reports a corrupt table.
pub(crate) fn table_samples(
    table: &Table,
    start: &Bound<Bytes>,
    end: &Bound<Bytes>,
    out: &mut Vec<Sample>,
) {
    let mut it = table.index_iter();
    // The first block that can hold the start: the first whose last key is at or after it.
    let positioned = match start {
        Bound::Included(k) | Bound::Excluded(k) => {
            let mut target = Vec::with_capacity(k.len() + 8);
            push_internal_key(&mut target, k, SEQNO_MAX, Kind::Put);
            it.seek(&target)
        }
        Bound::Unbounded => it.seek_to_first(),
    };
    if positioned.is_err() {
        return;
    }
    let data_bytes = u128::from(table.data_bytes().max(1));
    let entries = u128::from(table.meta.entry_count);
    let weigh = |key: &[u8], len: u32| {
        let versions = u128::from(len) * entries * VERSION_UNIT / data_bytes;
        (key.to_vec(), u64::from(len), versions.max(1) as u64)
    };
    while it.valid() {
        let key = user_key(it.key());
        let past_end = match end {
            Bound::Included(e) => key > e.as_ref(),
            Bound::Excluded(e) => key >= e.as_ref(),
            Bound::Unbounded => false,
        };
        if past_end {
            // The block holding the range's end is partly in it: count it once.
            if let Ok(h) = BlockHandle::decode(it.value_slice()) {
                out.push(weigh(key, h.len));
            }
            break;
        }
        if in_range(key, start, end) {
            if let Ok(h) = BlockHandle::decode(it.value_slice()) {
                out.push(weigh(key, h.len));
            }
        }
        if it.advance().is_err() {
            break;
        }
    }
}

/// Evenly spread samples of a memtable's keys in the range, weighing the share of its bytes
/// and versions that the range's part of its key span holds.
pub(crate) fn memtable_samples(
    mem: &Memtable,
    start: &Bound<Bytes>,
    end: &Bound<Bytes>,
    out: &mut Vec<Sample>,
) {
    let Some((first, last)) = mem.first_last(start, end) else {
        return;
    };
    let Some((all_first, all_last)) = mem.first_last(&Bound::Unbounded, &Bound::Unbounded) else {
        return;
    };
    let bytes = mem.approximate_bytes() as u64;
    let versions = (mem.len() as u128 * VERSION_UNIT).min(u128::from(u64::MAX)) as u64;
    // Positions in the memtable's whole key span, as numbers after the common prefix.
    let prefix = common_prefix(&all_first, &all_last);
    let span = number_after(&all_last, prefix) - number_after(&all_first, prefix);
    let (lo, hi) = (number_after(&first, prefix), number_after(&last, prefix));
    let share = |n: u64| {
        if span == 0 {
            n
        } else {
            (u128::from(n) * u128::from(hi.saturating_sub(lo)) / u128::from(span)) as u64
        }
    };
    let (in_range_bytes, in_range_versions) = (share(bytes), share(versions));
    if first == last || hi <= lo {
        out.push((
            first.to_vec(),
            in_range_bytes.max(1),
            in_range_versions.max(1),
        ));
        return;
    }
    let step = (in_range_bytes / MEMTABLE_SAMPLES as u64).max(1);
    let versions_step = (in_range_versions / MEMTABLE_SAMPLES as u64).max(1);
    for i in 1..=MEMTABLE_SAMPLES as u64 {
        let n = lo + ((hi - lo) as u128 * i as u128 / MEMTABLE_SAMPLES as u128) as u64;
        let mut k = all_first.get(..prefix).unwrap_or(&[]).to_vec();
        k.extend_from_slice(&n.to_be_bytes());
        // The zeros `number_after` padded short keys with: without them the sample is
        // the key it stands for, not one just above it.
        while k.len() > prefix && k.last() == Some(&0) {
            k.pop();
        }
        out.push((k, step, versions_step));
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count()
}

/// The 8 bytes of `k` after `prefix` as a big-endian number (missing bytes read as 0).
fn number_after(k: &[u8], prefix: usize) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(k.iter().skip(prefix)) {
        *d = *s;
    }
    u64::from_be_bytes(b)
}

/// Up to `parts - 1` keys cutting `samples` into parts of about equal versions, strictly
/// increasing and strictly inside the range; none when the range holds fewer than
/// `bytes_min` bytes.
pub(crate) fn split_keys(
    mut samples: Vec<Sample>,
    parts: usize,
    bytes_min: u64,
    start: &Bound<Bytes>,
    end: &Bound<Bytes>,
) -> Vec<Bytes> {
    let bytes: u64 = samples.iter().map(|(_, b, _)| *b).sum();
    let total: u64 = samples.iter().map(|(_, _, w)| *w).sum();
    if parts < 2 || total == 0 || bytes < bytes_min {
        return Vec::new();
    }
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<Bytes> = Vec::with_capacity(parts - 1);
    let mut acc = 0u64;
    let mut next = 1usize;
    for (k, _, w) in samples {
        if next >= parts {
            break;
        }
        acc += w;
        // Cut after the sample whose versions reach the next share: its key ends that part.
        if acc as u128 * parts as u128 >= total as u128 * next as u128 {
            next += 1;
            // A part ends after `k`, so the next one starts at the key just above it.
            let mut cut = k;
            cut.push(0);
            let fresh = out.last().is_none_or(|l| l.as_ref() < cut.as_slice());
            let starts_after = match start {
                Bound::Included(s) => cut.as_slice() > s.as_ref(),
                Bound::Excluded(s) => cut.as_slice() > s.as_ref(),
                Bound::Unbounded => true,
            };
            let ends_before = match end {
                Bound::Included(e) => cut.as_slice() <= e.as_ref(),
                Bound::Excluded(e) => cut.as_slice() < e.as_ref(),
                Bound::Unbounded => true,
            };
            if fresh && starts_after && ends_before {
                out.push(Bytes::from(cut));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u32) -> Vec<u8> {
        let mut v = vec![0x21];
        v.extend_from_slice(&n.to_be_bytes());
        v
    }

    #[test]
    fn even_samples_split_evenly() {
        let samples: Vec<Sample> = (0..100).map(|i| (k(i), 10, 10)).collect();
        let keys = split_keys(samples, 4, 0, &Bound::Unbounded, &Bound::Unbounded);
        assert_eq!(keys.len(), 3);
        let mut want = k(24);
        want.push(0);
        assert_eq!(keys[0].as_ref(), want.as_slice());
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn split_keys_stay_inside_the_range_and_need_enough_bytes() {
        let samples: Vec<Sample> = (0..10).map(|i| (k(i), 10, 10)).collect();
        assert!(split_keys(
            samples.clone(),
            2,
            1000,
            &Bound::Unbounded,
            &Bound::Unbounded
        )
        .is_empty());
        let end = Bound::Included(Bytes::from(k(4)));
        let keys = split_keys(samples, 2, 0, &Bound::Unbounded, &end);
        assert!(keys.iter().all(|c| c.as_ref() <= k(4).as_slice()));
    }

    #[test]
    fn a_narrow_range_of_a_memtable_weighs_its_share() {
        let mem = Memtable::new(1);
        for i in 0..1000u32 {
            mem.insert(Bytes::from(k(i)), 1, Some(Bytes::from(vec![0u8; 100])));
        }
        let (start, end) = (
            Bound::Included(Bytes::from(k(100))),
            Bound::Included(Bytes::from(k(199))),
        );
        let mut samples = Vec::new();
        memtable_samples(&mem, &start, &end, &mut samples);
        let total: u64 = samples.iter().map(|(_, b, _)| *b).sum();
        let all = mem.approximate_bytes() as u64;
        assert!(total * 8 < all && total * 12 > all, "{total} of {all}");
        let versions: u64 = samples.iter().map(|(_, _, v)| *v).sum();
        let all = 1000 * VERSION_UNIT as u64;
        assert!(
            versions * 8 < all && versions * 12 > all,
            "{versions} of {all}"
        );
        assert!(samples.iter().all(|(s, _, _)| {
            s.as_slice() >= k(100).as_slice() && s.as_slice() <= k(199).as_slice()
        }));
    }

    #[test]
    fn cuts_fall_by_versions_not_bytes() {
        // Ten heavy samples (a memtable's bytes per row) then ten light ones (a table's) of
        // ten versions each: by bytes the cut would fall after the sixth, by versions it
        // falls in the middle.
        let samples: Vec<Sample> = (0..20)
            .map(|i| (k(i), if i < 10 { 170 } else { 60 }, 10))
            .collect();
        let keys = split_keys(samples, 2, 0, &Bound::Unbounded, &Bound::Unbounded);
        let mut want = k(9);
        want.push(0);
        assert_eq!(keys, vec![Bytes::from(want)]);
    }

    #[test]
    fn numbers_after_a_prefix() {
        assert_eq!(number_after(&[1, 2, 3], 1), 0x0203_0000_0000_0000);
        assert_eq!(number_after(&[1], 1), 0);
    }
}
