//! An open blob, complete or still arriving, and reading its pieces.
//!
//! Readers wait for a piece to be sealed, then read it from disk: sealed bytes as they are for
//! agents, or opened (authenticated and decrypted) for registry clients. The GCM tag is checked
//! on every read, so a bit flipped on disk is an error, never a wrong byte.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use damselfly_core::piece::compressed_lengths;
use damselfly_core::{encoding, Digest, PieceHash, PieceLayout, PieceTable, TaskKey};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::usage::Lease;
use crate::error::{EdgeError, EdgeResult};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestState {
    Running,
    Complete,
    Failed(String),
}

/// What readers may use so far.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Known once the upstream has answered with the blob's size.
    pub layout: Option<PieceLayout>,
    /// Pieces `0..sealed` are on disk and readable. The last piece is only counted once the
    /// whole blob's digest has been verified, so nobody can finish reading an unverified blob.
    pub sealed: u64,
    pub state: IngestState,
}

/// Where piece hashes come from: the running ingest, or the table file of a complete blob (as
/// the store read it once), or why that file could not be read.
#[derive(Clone)]
pub enum PieceHashes {
    Growing(Arc<Mutex<HashLists>>),
    Stored(Arc<HashLists>),
    Unreadable(String),
}

impl PieceHashes {
    /// Piece `index`'s BLAKE3 hash, when known.
    fn blake3(&self, index: u64) -> Option<[u8; 32]> {
        let index = usize::try_from(index).ok()?;
        self.with(|h| h.blake3.get(index).copied())
    }

    /// Piece `index`'s sealed length when it is compressed.
    fn compressed(&self, index: u64) -> Option<u64> {
        let index = usize::try_from(index).ok()?;
        self.with(|h| h.zstd.get(index).copied())
            .filter(|&n| n > 0)
            .map(u64::from)
    }

    fn with<T>(&self, f: impl FnOnce(&HashLists) -> Option<T>) -> Option<T> {
        match self {
            PieceHashes::Growing(h) => f(&*h.lock().ok()?),
            PieceHashes::Stored(h) => f(h),
            PieceHashes::Unreadable(_) => None,
        }
    }
}

/// The hashes of the pieces sealed so far, in both kinds a table can list (`PieceHash`): an
/// agent gets the one it asks for, agents from before the choice get SHA-256.
#[derive(Clone, Debug, Default)]
pub struct HashLists {
    pub sha256: Vec<[u8; 32]>,
    pub blake3: Vec<[u8; 32]>,
    /// The sealed length of each compressed piece, 0 for the others; empty while no piece is
    /// compressed (`PieceTable::zstd`).
    pub zstd: Vec<u32>,
}

impl HashLists {
    /// Both hashes of the next sealed piece, and its sealed length if it is compressed.
    pub fn push(&mut self, sealed: &[u8], compressed: u32) {
        self.sha256.push(PieceHash::Sha256.of(sealed));
        self.blake3.push(PieceHash::Blake3.of(sealed));
        if compressed > 0 && self.zstd.is_empty() {
            self.zstd.resize(self.sha256.len() - 1, 0);
        }
        if compressed > 0 || !self.zstd.is_empty() {
            self.zstd.push(compressed);
        }
    }

    /// The first `count` hashes of kind `wanted` when there are as many of them as of SHA-256
    /// (a blob cached before BLAKE3 has none), else of SHA-256; which kind they are; and the
    /// compressed lengths of those pieces.
    fn listed(&self, wanted: PieceHash, count: usize) -> (PieceHash, Vec<[u8; 32]>, Vec<u32>) {
        let (hash, list) = match wanted {
            PieceHash::Blake3 if self.blake3.len() >= self.sha256.len() => (PieceHash::Blake3, &self.blake3),
            _ => (PieceHash::Sha256, &self.sha256),
        };
        let pieces: Vec<_> = list.iter().take(count).copied().collect();
        let zstd = compressed_lengths(self.zstd.iter().take(pieces.len()).copied().collect());
        (hash, pieces, zstd)
    }
}

/// A complete blob's table file: the SHA-256 table (which is all a file from before BLAKE3
/// holds, and all older readers look at) and the BLAKE3 hashes beside it.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredTable {
    #[serde(flatten)]
    pub table: PieceTable,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "damselfly_core::piece::hex_list"
    )]
    pub blake3: Vec<[u8; 32]>,
}

#[derive(Clone)]
pub struct Blob {
    pub digest: Digest,
    pub key: TaskKey,
    pub(super) file: Arc<File>,
    pub(super) progress: watch::Receiver<Progress>,
    pub(super) hashes: PieceHashes,
    pub(super) _lease: Arc<Lease>,
    /// Longest wait for the next piece before a reader gives up.
    pub(super) stall_timeout: Duration,
}

impl Blob {
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Follows the transfer's progress as it changes.
    pub fn progress_updates(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits until the size is known (the upstream answered), or the transfer failed.
    pub async fn layout(&self) -> EdgeResult<PieceLayout> {
        let mut rx = self.progress.clone();
        let outcome = tokio::time::timeout(self.stall_timeout, async {
            loop {
                let p = rx.borrow_and_update().clone();
                if let IngestState::Failed(reason) = p.state {
                    return Err(EdgeError::IngestFailed(reason));
                }
                if let Some(layout) = p.layout {
                    return Ok(layout);
                }
                if rx.changed().await.is_err() {
                    return Err(EdgeError::IngestFailed("transfer ended without a size".into()));
                }
            }
        })
        .await;
        outcome.unwrap_or_else(|_| Err(EdgeError::IngestFailed("upstream sent no answer in time".into())))
    }

    /// Waits until piece `index` is readable.
    pub async fn wait_piece(&self, index: u64) -> EdgeResult<()> {
        let mut rx = self.progress.clone();
        loop {
            let p = rx.borrow_and_update().clone();
            match p.state {
                IngestState::Failed(reason) => return Err(EdgeError::IngestFailed(reason)),
                IngestState::Complete => return Ok(()),
                IngestState::Running if p.sealed > index => return Ok(()),
                IngestState::Running => {}
            }
            match tokio::time::timeout(self.stall_timeout, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(EdgeError::IngestFailed("transfer ended".into())),
                Err(_) => return Err(EdgeError::IngestFailed("transfer stalled".into())),
            }
        }
    }

    /// The sealed bytes of piece `index` (ciphertext and tag), exactly as stored, once they
    /// authenticate.
    pub async fn read_sealed(&self, layout: PieceLayout, index: u64) -> EdgeResult<Bytes> {
        self.wait_piece(index).await?;
        let file = self.file.clone();
        let (offset, len) = (
            layout.sealed_offset(index),
            self.stored_len(layout, index) as usize,
        );
        let key = self.key.clone();
        let expected = self.hashes.blake3(index);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| EdgeError::Internal(format!("read piece {index}: {e}")))?;
            // Never sent unless it is what was sealed: a bit flipped on disk would otherwise
            // reach agents, which would reject it against the table and blame the wrong source.
            // Against the table's BLAKE3 hash where there is one (no copy, no decryption: a
            // third of the CPU of sending a piece), else by authenticating it.
            match expected {
                Some(hash) if PieceHash::Blake3.of(&buf) != hash => {
                    return Err(EdgeError::PieceDamaged(format!(
                        "piece {index} does not match its table"
                    )))
                }
                Some(_) => {}
                None => key
                    .verify(index, &buf)
                    .map_err(|e| EdgeError::PieceDamaged(format!("piece {index}: {e}")))?,
            }
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| EdgeError::Internal(format!("read task: {e}")))?
    }

    /// The plaintext of piece `index`: read, authenticated and decrypted in one blocking step.
    pub async fn read_plain(&self, layout: PieceLayout, index: u64) -> EdgeResult<Bytes> {
        self.wait_piece(index).await?;
        let (file, key) = (self.file.clone(), self.key.clone());
        let (offset, len) = (
            layout.sealed_offset(index),
            self.stored_len(layout, index) as usize,
        );
        let compressed = self.is_compressed(index);
        tokio::task::spawn_blocking(move || {
            let mut buf = bytes::BytesMut::zeroed(len);
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| EdgeError::Internal(format!("read piece {index}: {e}")))?;
            let plain_len = layout.plain_len(index) as usize;
            encoding::open_stored(&key, index, buf, compressed, plain_len)
                .map_err(|e| EdgeError::PieceDamaged(format!("piece {index}: {e}")))
        })
        .await
        .map_err(|e| EdgeError::Internal(format!("read task: {e}")))?
    }

    /// Whether piece `index` is stored compressed (as far as the table is known).
    pub fn is_compressed(&self, index: u64) -> bool {
        self.hashes.compressed(index).is_some()
    }

    /// The sealed length of piece `index` as stored (within its slot, whatever the table says).
    fn stored_len(&self, layout: PieceLayout, index: u64) -> u64 {
        let slot = layout.sealed_len(index);
        self.hashes.compressed(index).map_or(slot, |n| n.min(slot))
    }

    /// Whether this is a complete blob opened from the cache (not a transfer in flight).
    pub fn is_cached(&self) -> bool {
        !matches!(self.hashes, PieceHashes::Growing(_))
    }

    /// The piece table as far as it is known: hashes of the pieces sealed so far, of kind
    /// `wanted` when this edge has them for every piece (a blob cached before BLAKE3 has only
    /// SHA-256), else SHA-256. The table says which.
    pub fn piece_table(&self, layout: PieceLayout, wanted: PieceHash) -> EdgeResult<PieceTable> {
        // Never advertise a hash for a piece readers cannot have yet.
        let sealed = self.progress().sealed as usize;
        let (hash, pieces, zstd) = match &self.hashes {
            PieceHashes::Growing(h) => h.lock().map(|h| h.listed(wanted, sealed)).unwrap_or((
                PieceHash::Sha256,
                Vec::new(),
                Vec::new(),
            )),
            PieceHashes::Stored(h) => h.listed(wanted, sealed),
            PieceHashes::Unreadable(e) => return Err(EdgeError::Internal(e.clone())),
        };
        Ok(PieceTable {
            digest: self.digest,
            layout,
            hash,
            pieces,
            zstd,
        })
    }
}
