//! A session's row-table transaction block: one [`braid_ingest::rows::Transaction`] from
//! the first statement after BEGIN that touches a row table until COMMIT or ROLLBACK.
//!
//! Outside a block there is nothing here: each statement runs in a transaction of its own
//! (autocommit), begun and committed by the scan or write that needs it. Inside a block every
//! read and write of row tables goes through the block's transaction, so the block reads its
//! own writes and commits them as one commit record. The snapshot is taken on first use, as
//! PostgreSQL takes a REPEATABLE READ snapshot at the block's first statement, not at BEGIN.
//!
//! Isolation: REPEATABLE READ and SERIALIZABLE blocks are snapshot isolation (a concurrent
//! write to a row the block also wrote fails the later COMMIT with 40001). READ COMMITTED —
//! PostgreSQL's default, and braid's — differs for UPDATE and DELETE of rows named by whole
//! keys: they take the row's lock, wait while another transaction holds it, and apply to the
//! newest committed row, as PostgreSQL's READ COMMITTED does; other writes keep the snapshot
//! rule. Reads always see the block's snapshot.
//!
//! What must stay true: a block that failed never commits (COMMIT then rolls back), and the
//! lock is never held while a plan pulls rows from its input (the input may be a scan of the
//! same session that needs it).

use std::sync::atomic::{AtomicBool, Ordering};

use braid_ingest::rows::{RowStore, Transaction};
use tokio::sync::{Mutex, MutexGuard};

/// The block state behind the lock.
#[derive(Debug, Default)]
pub struct BlockState {
    open: bool,
    txn: Option<Transaction>,
    /// The block's isolation is READ COMMITTED (else REPEATABLE READ or SERIALIZABLE, both
    /// snapshot isolation here).
    read_committed: bool,
}

impl BlockState {
    /// The block's transaction (begun now if this is its first use), or `None` outside a block.
    pub fn current(&mut self, store: &RowStore) -> Option<&mut Transaction> {
        if !self.open {
            return None;
        }
        Some(self.txn.get_or_insert_with(|| store.begin()))
    }
}

/// One session's row-table transaction block, shared by its scans and writes through the
/// session's DataFusion config.
#[derive(Debug)]
pub struct RowTxn {
    state: Mutex<BlockState>,
    /// Set when a statement in the block failed: the block can only roll back.
    failed: AtomicBool,
    /// The session's `default_transaction_isolation` is READ COMMITTED (PostgreSQL's default).
    read_committed_default: AtomicBool,
}

impl Default for RowTxn {
    fn default() -> Self {
        RowTxn {
            state: Mutex::default(),
            failed: AtomicBool::new(false),
            read_committed_default: AtomicBool::new(true),
        }
    }
}

impl RowTxn {
    pub async fn lock(&self) -> MutexGuard<'_, BlockState> {
        self.state.lock().await
    }

    /// BEGIN, with the isolation it names (READ COMMITTED = `Some(true)`), else the session's
    /// default. A BEGIN inside a block keeps the block (PostgreSQL warns and carries on).
    pub async fn begin(&self, read_committed: Option<bool>) {
        let mut st = self.state.lock().await;
        if !st.open {
            st.open = true;
            st.txn = None;
            st.read_committed = read_committed
                .unwrap_or_else(|| self.read_committed_default.load(Ordering::Relaxed));
            self.failed.store(false, Ordering::Release);
        }
    }

    /// `SET TRANSACTION ISOLATION LEVEL` inside a block (outside one it does nothing, as in
    /// PostgreSQL, which warns).
    pub async fn set_isolation(&self, read_committed: bool) {
        let mut st = self.state.lock().await;
        if st.open {
            st.read_committed = read_committed;
        }
    }

    /// `default_transaction_isolation` (and `SET SESSION CHARACTERISTICS`).
    pub fn set_default_isolation(&self, read_committed: bool) {
        self.read_committed_default
            .store(read_committed, Ordering::Relaxed);
    }

    /// Whether writes by key take row locks and work on the newest committed row (READ
    /// COMMITTED) — in the open block of `st`, else for a statement outside a block.
    pub fn read_committed(&self, st: &BlockState) -> bool {
        if st.open {
            st.read_committed
        } else {
            self.read_committed_default.load(Ordering::Relaxed)
        }
    }

    /// A statement of the block failed: its writes are dropped now, and COMMIT rolls back.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        if let Ok(mut st) = self.state.try_lock() {
            st.txn = None;
        }
    }

    /// Ends the block and hands back its transaction for COMMIT, or `None` when there is
    /// nothing to commit (no block, nothing touched, or the block failed).
    pub async fn end(&self) -> Option<Transaction> {
        let mut st = self.state.lock().await;
        st.open = false;
        let txn = st.txn.take();
        if self.failed.swap(false, Ordering::AcqRel) {
            return None;
        }
        txn
    }
}
