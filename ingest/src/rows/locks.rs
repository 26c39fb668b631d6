//! Row locks for READ COMMITTED writes: a transaction that updates or deletes a row by its key
//! takes the row's lock first, waits while another transaction holds it, and then works on the
//! newest committed version — what PostgreSQL does for an UPDATE under READ COMMITTED, where
//! snapshot isolation would instead fail the later committer with 40001.
//!
//! A lock is held until its transaction commits (and the commit is visible) or rolls back, so
//! the next holder reads what the last one wrote. Waits form a graph (each waiting transaction
//! waits for exactly one holder); a wait that would close a cycle fails at once with
//! [`Error::Deadlock`] (40P01), which ends one transaction of the cycle as PostgreSQL's
//! deadlock detector does.
//!
//! What must stay true: a lock is released by whatever ends its transaction — commit, rollback,
//! drop — and a waiter that gives up (cancelled, its future dropped) leaves no edge behind, so
//! no stale edge can make a later wait look like a deadlock.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::TableId;
use crate::error::{Error, Result};

/// Identifies a transaction to the lock table.
pub(crate) type TxnId = u64;

#[derive(Debug)]
struct Holder {
    txn: TxnId,
    /// Woken when the lock is released.
    released: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    held: HashMap<(TableId, Bytes), Holder>,
    /// Waiting transaction → the transaction holding the lock it waits for.
    waits_for: HashMap<TxnId, TxnId>,
}

/// The row locks of one row store.
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    state: Mutex<State>,
}

/// Removes a waiter's edge however its wait ends.
struct WaitEdge<'a> {
    locks: &'a LockTable,
    txn: TxnId,
}

impl Drop for WaitEdge<'_> {
    fn drop(&mut self) {
        self.locks.state.lock().waits_for.remove(&self.txn);
    }
}

impl LockTable {
    /// Takes the lock on `key` of `table` for `txn`, waiting while another transaction holds
    /// it. Returns `true` when `txn` took it now, `false` when it already held it.
    pub async fn acquire(&self, txn: TxnId, table: TableId, key: &Bytes) -> Result<bool> {
        loop {
            let notify = {
                let mut st = self.state.lock();
                let holder = match st.held.get(&(table, key.clone())) {
                    None => {
                        st.held.insert(
                            (table, key.clone()),
                            Holder {
                                txn,
                                released: Arc::new(Notify::new()),
                            },
                        );
                        return Ok(true);
                    }
                    Some(h) if h.txn == txn => return Ok(false),
                    Some(h) => (h.txn, h.released.clone()),
                };
                // Would waiting close a cycle? Follow the holders' own waits.
                let mut at = holder.0;
                let mut steps = 0usize;
                while let Some(&next) = st.waits_for.get(&at) {
                    if next == txn {
                        return Err(Error::Deadlock {
                            table,
                            key: key.clone(),
                        });
                    }
                    at = next;
                    steps += 1;
                    if steps > st.waits_for.len() {
                        break;
                    }
                }
                if at == txn {
                    return Err(Error::Deadlock {
                        table,
                        key: key.clone(),
                    });
                }
                st.waits_for.insert(txn, holder.0);
                holder.1
            };
            let edge = WaitEdge { locks: self, txn };
            let released = notify.notified();
            tokio::pin!(released);
            // Registered before checking again, so a release between the check and the wait
            // is not missed.
            released.as_mut().enable();
            let still_held = self
                .state
                .lock()
                .held
                .get(&(table, key.clone()))
                .is_some_and(|h| h.txn != txn && Arc::ptr_eq(&h.released, &notify));
            if still_held {
                released.await;
            }
            drop(edge);
        }
    }

    /// Releases every lock in `keys` held by `txn`, waking their waiters.
    pub fn release(&self, txn: TxnId, keys: &[(TableId, Bytes)]) {
        if keys.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        for k in keys {
            if st.held.get(k).is_some_and(|h| h.txn == txn) {
                if let Some(h) = st.held.remove(k) {
                    h.released.notify_waiters();
                }
            }
        }
    }

    /// Locks held now (for tests).
    pub fn held(&self) -> usize {
        self.state.lock().held.len()
    }

    /// Transactions waiting for a lock now (for tests).
    pub fn waiting(&self) -> usize {
        self.state.lock().waits_for.len()
    }
}
