//! Model test: random interleavings of up to three concurrent transactions (puts, deletes,
//! inserts, gets, scans, commits, rollbacks) with flushes, log trims, clean reopens and crash
//! reopens (stop without flush), checked step by step against an in-memory model with the
//! same snapshot-isolation rules: every read returns what the model returns, every commit
//! succeeds or fails with a serialization failure exactly where the model says, and every
//! insert of a visible key is a unique violation.

#[path = "support/rows.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use braid_ingest::rows::{RowStore, Transaction};
use braid_ingest::Error;
use proptest::prelude::*;
use support::*;

const TABLES: [u64; 2] = [10, 20];
const SLOTS: usize = 3;
const KEYS: u8 = 12;

#[derive(Debug, Clone)]
enum Op {
    Begin(usize),
    Put(usize, usize, u8),
    Delete(usize, usize, u8),
    Insert(usize, usize, u8),
    Get(usize, usize, u8),
    Scan(usize, usize, u8, u8),
    Commit(usize),
    Rollback(usize),
    Flush,
    Trim,
    Reopen { crash: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let table = 0..TABLES.len();
    let key = 0..KEYS;
    prop_oneof![
        3 => slot.clone().prop_map(Op::Begin),
        6 => (slot.clone(), table.clone(), key.clone()).prop_map(|(s, t, k)| Op::Put(s, t, k)),
        2 => (slot.clone(), table.clone(), key.clone()).prop_map(|(s, t, k)| Op::Delete(s, t, k)),
        2 => (slot.clone(), table.clone(), key.clone()).prop_map(|(s, t, k)| Op::Insert(s, t, k)),
        3 => (slot.clone(), table.clone(), key.clone()).prop_map(|(s, t, k)| Op::Get(s, t, k)),
        2 => (slot.clone(), table.clone(), key.clone(), key).prop_map(|(s, t, a, b)| Op::Scan(s, t, a.min(b), a.max(b))),
        4 => slot.clone().prop_map(Op::Commit),
        1 => slot.prop_map(Op::Rollback),
        1 => Just(Op::Flush),
        1 => Just(Op::Trim),
        1 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
    ]
}

type Key = (u64, Vec<u8>);

/// The model: committed rows, and per key the model commit number that last wrote it.
#[derive(Default)]
struct Model {
    rows: BTreeMap<Key, Vec<u8>>,
    last_write: HashMap<Key, u64>,
    commits: u64,
}

struct ModelTx {
    snapshot: BTreeMap<Key, Vec<u8>>,
    began_at: u64,
    writes: BTreeMap<Key, Option<Vec<u8>>>,
}

impl ModelTx {
    fn get(&self, k: &Key) -> Option<Vec<u8>> {
        match self.writes.get(k) {
            Some(v) => v.clone(),
            None => self.snapshot.get(k).cloned(),
        }
    }

    fn scan(&self, t: u64, lo: &[u8], hi: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut view = self.snapshot.clone();
        for (k, v) in &self.writes {
            match v {
                Some(v) => view.insert(k.clone(), v.clone()),
                None => view.remove(k),
            };
        }
        view.range((t, lo.to_vec())..=(t, hi.to_vec()))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn key(k: u8) -> Vec<u8> {
    format!("k{k:02}").into_bytes()
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let mut store = Some(open(&fs, dir.path(), small()).await);
    for t in TABLES {
        store
            .as_ref()
            .expect("open")
            .create_table(t)
            .await
            .expect("create");
    }
    let mut model = Model::default();
    let mut txs: Vec<Option<(Transaction, ModelTx)>> = (0..SLOTS).map(|_| None).collect();
    let mut value_no = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        let st: &RowStore = store.as_ref().expect("store is open");
        match op {
            Op::Begin(s) => {
                txs[s] = Some((
                    st.begin(),
                    ModelTx {
                        snapshot: model.rows.clone(),
                        began_at: model.commits,
                        writes: BTreeMap::new(),
                    },
                ));
            }
            Op::Put(s, t, k) | Op::Insert(s, t, k) | Op::Delete(s, t, k) => {
                let Some((tx, m)) = txs[s].as_mut() else {
                    continue;
                };
                let mk = (TABLES[t], key(k));
                value_no += 1;
                // Large enough that memtables flush and levels compact every few commits.
                let v = format!("v{value_no}-step{step}-{}", "p".repeat(300)).into_bytes();
                match op {
                    Op::Put(..) => {
                        tx.put(TABLES[t], key(k), v.clone()).expect("put");
                        m.writes.insert(mk, Some(v));
                    }
                    Op::Delete(..) => {
                        tx.delete(TABLES[t], key(k)).expect("delete");
                        m.writes.insert(mk, None);
                    }
                    _ => {
                        let present = m.get(&mk).is_some();
                        match tx.insert(TABLES[t], key(k), v.clone()).await {
                            Ok(()) => {
                                prop_assert!(
                                    !present,
                                    "step {step}: insert of a visible key succeeded"
                                );
                                m.writes.insert(mk, Some(v));
                            }
                            Err(Error::UniqueViolation { .. }) => {
                                prop_assert!(
                                    present,
                                    "step {step}: unique violation on an absent key"
                                );
                            }
                            Err(e) => panic!("step {step}: insert: {e}"),
                        }
                    }
                }
            }
            Op::Get(s, t, k) => {
                let Some((tx, m)) = txs[s].as_ref() else {
                    continue;
                };
                let got = tx
                    .get(TABLES[t], &key(k))
                    .await
                    .expect("get")
                    .map(|b| b.to_vec());
                prop_assert_eq!(got, m.get(&(TABLES[t], key(k))), "step {}: get", step);
            }
            Op::Scan(s, t, lo, hi) => {
                let Some((tx, m)) = txs[s].as_ref() else {
                    continue;
                };
                let (lo, hi) = (key(lo), key(hi));
                let got: Vec<(Vec<u8>, Vec<u8>)> = tx
                    .scan(TABLES[t], Bound::Included(&lo), Bound::Included(&hi))
                    .expect("scan")
                    .collect()
                    .await
                    .expect("collect")
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                prop_assert_eq!(got, m.scan(TABLES[t], &lo, &hi), "step {}: scan", step);
                // The value-only scan gives the same rows' values, own writes included.
                let mut values = tx
                    .scan(TABLES[t], Bound::Included(&lo), Bound::Included(&hi))
                    .expect("scan");
                let mut got_values = Vec::new();
                while let Some(v) = values.next_value().await.expect("next_value") {
                    got_values.push(v.to_vec());
                }
                let want: Vec<Vec<u8>> = m
                    .scan(TABLES[t], &lo, &hi)
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                prop_assert_eq!(got_values, want, "step {}: value scan", step);
            }
            Op::Commit(s) => {
                let Some((tx, m)) = txs[s].take() else {
                    continue;
                };
                let conflict = m
                    .writes
                    .keys()
                    .any(|k| model.last_write.get(k).is_some_and(|&c| c > m.began_at));
                match tx.commit().await {
                    Ok(_) => {
                        prop_assert!(
                            !conflict,
                            "step {step}: commit succeeded, the model has a conflict"
                        );
                        if !m.writes.is_empty() {
                            model.commits += 1;
                            for (k, v) in m.writes {
                                model.last_write.insert(k.clone(), model.commits);
                                match v {
                                    Some(v) => model.rows.insert(k, v),
                                    None => model.rows.remove(&k),
                                };
                            }
                        }
                    }
                    Err(e) if e.is_serialization_failure() => {
                        prop_assert!(conflict, "step {step}: unexpected conflict: {e}");
                    }
                    Err(e) => panic!("step {step}: commit: {e}"),
                }
            }
            Op::Rollback(s) => {
                if let Some((tx, _)) = txs[s].take() {
                    tx.rollback();
                }
            }
            Op::Flush => st.flush().await.expect("flush"),
            Op::Trim => {
                let min = st.min_durable_log_position();
                let start = st.trim_log().await.expect("trim");
                prop_assert!(start <= min, "step {step}: trimmed to {start} past {min}");
            }
            Op::Reopen { crash } => {
                for t in txs.iter_mut() {
                    *t = None;
                }
                let old = store.take().expect("open");
                let seq = old.visible_seq();
                if crash {
                    old.abort().await;
                } else {
                    old.close().await.expect("close");
                }
                let reopened = open(&fs, dir.path(), small()).await;
                prop_assert_eq!(
                    reopened.visible_seq(),
                    seq,
                    "step {}: seqno after reopen",
                    step
                );
                let all: Vec<(Vec<u8>, Vec<u8>)> = {
                    let tx = reopened.begin();
                    let mut out = Vec::new();
                    for t in TABLES {
                        for (k, v) in tx
                            .scan(t, Bound::Unbounded, Bound::Unbounded)
                            .expect("scan")
                            .collect()
                            .await
                            .expect("collect")
                        {
                            let mut full = t.to_be_bytes().to_vec();
                            full.extend_from_slice(&k);
                            out.push((full, v.to_vec()));
                        }
                    }
                    out
                };
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .rows
                    .iter()
                    .map(|((t, k), v)| {
                        let mut full = t.to_be_bytes().to_vec();
                        full.extend_from_slice(k);
                        (full, v.clone())
                    })
                    .collect();
                prop_assert_eq!(
                    all,
                    want,
                    "step {}: contents after reopen (crash {})",
                    step,
                    crash
                );
                store = Some(reopened);
            }
        }
    }
    drop(txs);
    if let Some(s) = store {
        s.close().await.expect("close");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn row_store_matches_the_si_model(ops in prop::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops))?;
    }
}
