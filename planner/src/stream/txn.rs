//! Stream appends inside a transaction block: held back until COMMIT, dropped by ROLLBACK (or
//! by a failed block, or a connection that goes away), as rows written in a PostgreSQL
//! transaction never become visible unless it commits.
//!
//! The rows are checked and encoded when the INSERT or COPY runs, so a bad row still fails
//! its statement, not the COMMIT. COMMIT appends every held batch, all streams at once, and
//! completes only when all are durable. Until then only the block itself sees the rows: a scan
//! of the stream inside the block adds them after the stored ones, with `_offset` NULL (no
//! offset is assigned before the append), as a PostgreSQL transaction sees its own inserts.

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::HashMap;
use parking_lot::Mutex;

use super::sink::{Staged, StreamWriter};
use crate::error::Result;

#[derive(Debug, Default)]
struct Block {
    /// Held rows per stream id, with the writer that will append them.
    streams: BTreeMap<u64, (StreamWriter, Staged)>,
    /// The same rows per stream id, as the block's own scans show them.
    shown: HashMap<u64, Vec<RecordBatch>>,
}

/// One session's transaction block, shared by its DataFusion sinks and the prepared-INSERT
/// path (it rides in the session's DataFusion config).
#[derive(Debug, Default)]
pub struct TxnBuffer {
    block: Mutex<Option<Block>>,
}

impl TxnBuffer {
    /// BEGIN: later appends are held. A BEGIN inside a block keeps the block (PostgreSQL
    /// warns and carries on).
    pub fn begin(&self) {
        self.block.lock().get_or_insert_with(Block::default);
    }

    pub fn is_open(&self) -> bool {
        self.block.lock().is_some()
    }

    /// Holds `batch` for `writer`'s stream if a block is open; `None` means no block is open
    /// and the caller appends as usual.
    pub fn hold(&self, writer: &StreamWriter, batch: &RecordBatch) -> Result<Option<u64>> {
        let mut guard = self.block.lock();
        let Some(block) = guard.as_mut() else {
            return Ok(None);
        };
        // Encode into a scratch buffer first, so a bad row leaves the held rows as they were.
        let mut staged = Staged::new(writer.log.partitions());
        let shown = writer.encode_batch_shown(batch, &mut staged)?;
        let rows = staged.rows();
        block
            .streams
            .entry(writer.def.id)
            .or_insert_with(|| (writer.clone(), Staged::new(writer.log.partitions())))
            .1
            .absorb(staged);
        block.shown.entry(writer.def.id).or_default().push(shown);
        Ok(Some(rows))
    }

    /// The rows the open block holds for stream `id`, as its scans show them.
    pub fn shown_rows(&self, id: u64) -> Vec<RecordBatch> {
        self.block
            .lock()
            .as_ref()
            .and_then(|b| b.shown.get(&id).cloned())
            .unwrap_or_default()
    }

    /// Holds rows a COPY already checked and encoded (`shown`: as scans show them); gives
    /// `staged` back when no block is open.
    pub fn hold_staged(
        &self,
        writer: &StreamWriter,
        staged: Staged,
        shown: Vec<RecordBatch>,
    ) -> std::result::Result<u64, Staged> {
        let mut guard = self.block.lock();
        let Some(block) = guard.as_mut() else {
            return Err(staged);
        };
        block.shown.entry(writer.def.id).or_default().extend(shown);
        let rows = staged.rows();
        block
            .streams
            .entry(writer.def.id)
            .or_insert_with(|| (writer.clone(), Staged::new(writer.log.partitions())))
            .1
            .absorb(staged);
        Ok(rows)
    }

    /// COMMIT: appends everything held and returns once it is durable.
    pub async fn commit(&self) -> Result<u64> {
        let Some(block) = self.block.lock().take() else {
            return Ok(0);
        };
        let appends = block
            .streams
            .into_values()
            .map(|(writer, staged)| async move { writer.append_staged(staged).await });
        let counts = futures::future::try_join_all(appends).await?;
        Ok(counts.into_iter().sum())
    }

    /// ROLLBACK, or a block that failed: drops everything held.
    pub fn rollback(&self) {
        self.block.lock().take();
    }
}
