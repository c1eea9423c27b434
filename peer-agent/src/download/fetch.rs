//! One piece from one source: fetched (never more than its sealed length), hashed once as
//! received and checked against the edge's table, stored sealed. It is decrypted only when
//! streamed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use damselfly_core::PieceHash;

use crate::client::PieceClient;
use crate::error::{AgentError, AgentResult};
use crate::metrics::{Metrics, SourceLabels};
use crate::store::LocalTask;

pub(crate) struct PieceFetch {
    pub(crate) task: Arc<LocalTask>,
    pub(crate) index: u64,
    /// The piece's hash in the edge's table (`None`: not listed yet, so not fetchable).
    pub(crate) expected: Option<[u8; 32]>,
    /// The kind of hash the table lists.
    pub(crate) hash: PieceHash,
    /// The piece's sealed length as the table lists it, and whether it is compressed.
    pub(crate) sealed_len: u64,
    pub(crate) compressed: bool,
    /// The upload server asked: a peer's or the edge's.
    pub(crate) base: String,
    pub(crate) ticket: String,
    /// `peer` or `edge`, for the metrics.
    pub(crate) source: &'static str,
}

impl PieceFetch {
    /// Fetches and stores the piece, counting what arrived or failed.
    pub(crate) async fn run(self, pieces: &PieceClient, metrics: &Metrics) -> AgentResult<()> {
        let labels = SourceLabels { source: self.source };
        match self.fetch_and_store(pieces).await {
            Ok(len) => {
                metrics.downloaded(self.source, len);
                Ok(())
            }
            Err(e) => {
                metrics.piece_failures.get_or_create(&labels).inc();
                if let AgentError::BadPiece(_) = e {
                    metrics.bad_pieces.get_or_create(&labels).inc();
                    tracing::warn!(index = self.index, source = %self.base, error = %e, "piece failed verification; discarded");
                }
                Err(e)
            }
        }
    }

    /// The piece's length once stored.
    async fn fetch_and_store(&self, pieces: &PieceClient) -> AgentResult<u64> {
        let index = self.index;
        let expected = self
            .expected
            .ok_or_else(|| AgentError::Internal(format!("piece {index} has no hash yet")))?;
        let max_len = self.sealed_len;
        let sealed = pieces
            .fetch(&self.base, &self.task.digest, index, &self.ticket, max_len)
            .await?;
        let len = sealed.len() as u64;
        let (task, hash) = (self.task.clone(), self.hash);
        let compressed = if self.compressed { len as u32 } else { 0 };
        tokio::task::spawn_blocking(move || -> AgentResult<()> {
            if hash.of(&sealed) != expected {
                return Err(AgentError::BadPiece(format!(
                    "piece {index} does not match the table"
                )));
            }
            task.write_piece(index, sealed, compressed)
        })
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))??;
        Ok(len)
    }
}

/// Counts an edge fetch in flight for as long as it lives.
pub(crate) struct EdgeFetch(Arc<AtomicUsize>);

impl EdgeFetch {
    pub(crate) fn start(counter: &Arc<AtomicUsize>) -> EdgeFetch {
        counter.fetch_add(1, Ordering::SeqCst);
        EdgeFetch(counter.clone())
    }
}

impl Drop for EdgeFetch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
