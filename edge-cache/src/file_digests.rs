//! What a cached file version's content hashes to, so a request naming a digest is never
//! answered with a copy that has another.
//!
//! A file's task is its version (URL and validators), not its content: hosts that name a
//! digest and hosts that do not share one transfer. The content's sha256 is learnt when a
//! transfer that was given a digest verifies it, or by hashing the cached copy once when a
//! later request names one. Bounded: a forgotten entry is only learnt again.

use std::time::Duration;

use damselfly_core::{Digest, Sha256Stream};

use crate::error::{EdgeError, EdgeResult};
use crate::store::{Blob, IngestState};

/// File versions remembered at once.
const MAX_VERSIONS: u64 = 100_000;

pub struct FileDigests {
    /// Versions whose content is verified (the transfer checked it, or it was hashed since).
    known: moka::sync::Cache<Digest, Digest>,
    /// Versions arriving by a transfer that will check this digest before it completes.
    expected: moka::sync::Cache<Digest, Digest>,
}

impl Default for FileDigests {
    fn default() -> Self {
        let cache = || {
            moka::sync::Cache::builder()
                .max_capacity(MAX_VERSIONS)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build()
        };
        FileDigests {
            known: cache(),
            expected: cache(),
        }
    }
}

impl FileDigests {
    /// A transfer started with `expected` verifies it before it completes: once `blob` is
    /// complete, its content is known to be `expected`.
    pub fn learn_when_complete(&self, blob: &Blob, expected: Digest) {
        let (known, pending) = (self.known.clone(), self.expected.clone());
        let version = blob.digest;
        pending.insert(version, expected);
        let mut progress = blob.progress_updates();
        tokio::spawn(async move {
            loop {
                match progress.borrow_and_update().state {
                    IngestState::Complete => {
                        known.insert(version, expected);
                        break;
                    }
                    IngestState::Failed(_) => break,
                    IngestState::Running => {}
                }
                if progress.changed().await.is_err() {
                    break;
                }
            }
            pending.invalidate(&version);
        });
    }

    /// Refuses `blob` (a file version already cached or arriving) to a caller expecting
    /// `expected` unless its content is that.
    pub async fn check(&self, blob: &Blob, expected: &Digest) -> EdgeResult<()> {
        let actual = match self
            .known
            .get(&blob.digest)
            .or_else(|| self.expected.get(&blob.digest))
        {
            // Verified, or arriving by a transfer that checks this before it completes.
            Some(known) => known,
            None if blob.progress().state == IngestState::Complete => {
                let hashed = hash_content(blob).await?;
                self.known.insert(blob.digest, hashed);
                hashed
            }
            // Arriving without a digest to check: its content is not known yet.
            None => {
                return Err(EdgeError::Busy(
                    "this file is being fetched without a digest; ask again once it is cached",
                ))
            }
        };
        if actual == *expected {
            Ok(())
        } else {
            Err(EdgeError::DigestInvalid(format!(
                "the file's content is {actual}, not the expected {expected}"
            )))
        }
    }
}

async fn hash_content(blob: &Blob) -> EdgeResult<Digest> {
    let layout = blob.layout().await?;
    let mut hash = Sha256Stream::new();
    for index in 0..layout.count() {
        hash.update(&blob.read_plain(layout, index).await?);
    }
    Ok(hash.finish())
}
