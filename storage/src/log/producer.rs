//! Idempotent producers: per partition, the last few batch sequences of each producer and the
//! offsets they were written at, so a retried append is answered with its first offsets instead
//! of being written twice. The state is rebuilt at open from the snapshot written when the
//! active segment was created plus a scan of that segment.

use std::collections::{HashMap, VecDeque};

use super::format::{Cursor, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use super::{Appended, ProducerSeq};
use crate::error::{Error, Result};

/// Batches remembered per producer (Kafka keeps five in-flight requests).
pub(crate) const BATCHES_KEPT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    sequence: u64,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ProducerState {
    producers: HashMap<u64, VecDeque<Written>>,
}

/// What to do with an incoming batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Write,
    Duplicate(Appended),
}

impl ProducerState {
    /// Decides whether `p`'s batch is new, a retry of one already written, or out of order.
    pub fn check(&self, p: ProducerSeq) -> Result<Check> {
        let Some(batches) = self.producers.get(&p.producer_id) else {
            // A producer we do not know (new, or its state aged out) may start anywhere.
            return Ok(Check::Write);
        };
        let Some(last) = batches.back() else {
            return Ok(Check::Write);
        };
        if p.sequence == last.sequence.wrapping_add(1) {
            return Ok(Check::Write);
        }
        if let Some(w) = batches.iter().find(|w| w.sequence == p.sequence) {
            return Ok(Check::Duplicate(Appended {
                base_offset: w.base_offset,
                last_offset: w.last_offset,
                duplicate: true,
            }));
        }
        if p.sequence < last.sequence {
            return Err(Error::DuplicateSequenceTooOld {
                producer_id: p.producer_id,
                got: p.sequence,
                last: last.sequence,
                kept: BATCHES_KEPT,
            });
        }
        Err(Error::OutOfOrderSequence {
            producer_id: p.producer_id,
            expected: last.sequence.wrapping_add(1),
            got: p.sequence,
        })
    }

    pub fn record(&mut self, p: ProducerSeq, base_offset: u64, last_offset: u64) {
        let q = self.producers.entry(p.producer_id).or_default();
        q.push_back(Written {
            sequence: p.sequence,
            base_offset,
            last_offset,
        });
        while q.len() > BATCHES_KEPT {
            q.pop_front();
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&SNAPSHOT_MAGIC);
        b.push(SNAPSHOT_VERSION);
        b.extend_from_slice(&[0; 3]);
        b.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let q = &self.producers[&id];
            b.extend_from_slice(&id.to_le_bytes());
            b.push(q.len() as u8);
            for w in q {
                b.extend_from_slice(&w.sequence.to_le_bytes());
                b.extend_from_slice(&w.base_offset.to_le_bytes());
                b.extend_from_slice(&w.last_offset.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, &'static str> {
        let Some(split) = bytes.len().checked_sub(4) else {
            return Err("snapshot too short");
        };
        let (body, crc) = bytes.split_at(split);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(crc);
        if crc32c::crc32c(body) != u32::from_le_bytes(stored) {
            return Err("snapshot checksum mismatch");
        }
        let mut c = Cursor::new(body);
        let bad = |_| "truncated snapshot";
        if c.take(4).map_err(bad)? != SNAPSHOT_MAGIC {
            return Err("bad snapshot magic");
        }
        if c.u8().map_err(bad)? != SNAPSHOT_VERSION {
            return Err("unsupported snapshot version");
        }
        c.take(3).map_err(bad)?;
        let n = c.u32().map_err(bad)?;
        let mut state = ProducerState::default();
        for _ in 0..n {
            let id = c.u64().map_err(bad)?;
            let k = c.u8().map_err(bad)?;
            let mut q = VecDeque::new();
            for _ in 0..k {
                q.push_back(Written {
                    sequence: c.u64().map_err(bad)?,
                    base_offset: c.u64().map_err(bad)?,
                    last_offset: c.u64().map_err(bad)?,
                });
            }
            state.producers.insert(id, q);
        }
        if c.pos != body.len() {
            return Err("bytes left after the snapshot");
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_is_recognised_and_gaps_are_refused() {
        let mut s = ProducerState::default();
        let p = |seq| ProducerSeq {
            producer_id: 9,
            sequence: seq,
        };
        assert_eq!(s.check(p(0)).ok(), Some(Check::Write));
        s.record(p(0), 10, 12);
        assert!(matches!(s.check(p(0)), Ok(Check::Duplicate(a)) if a.base_offset == 10));
        assert_eq!(s.check(p(1)).ok(), Some(Check::Write));
        assert!(matches!(
            s.check(p(5)),
            Err(Error::OutOfOrderSequence { expected: 1, .. })
        ));
        let back = ProducerState::decode(&s.encode()).expect("decode");
        assert!(matches!(back.check(p(0)), Ok(Check::Duplicate(_))));
    }
}
