//! What an operator may see and change in the store: the blobs and tags held, a blob purged
//! (it must go: withdrawn, or suspected), tags purged (the next pull asks the upstream), a blob
//! pinned against eviction.

use damselfly_core::Digest;
use serde::{Deserialize, Serialize};

use super::{now_millis, BlobStore};
use crate::error::{EdgeError, EdgeResult};

fn index_err(e: super::index::IndexError) -> EdgeError {
    EdgeError::Internal(format!("index: {e}"))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobListing {
    pub digest: String,
    pub size: u64,
    /// On disk: the sealed file, one tag per piece larger.
    pub sealed_bytes: u64,
    pub last_access_ms: u64,
    pub pinned: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagListing {
    /// `<registry>/<repository>:<tag>`
    pub tag: String,
    pub digest: String,
    pub confirmed_at_ms: u64,
}

/// What a purge did.
#[derive(Debug, PartialEq, Eq)]
pub enum Purged {
    Removed,
    Absent,
    /// A transfer of it is running: purging now would leave its readers' copy to be published.
    InFlight,
}

impl BlobStore {
    /// Every complete blob, most recently read first.
    pub fn list_blobs(&self) -> EdgeResult<Vec<BlobListing>> {
        let usage = self.lock_usage()?;
        let mut blobs: Vec<BlobListing> = usage
            .entries
            .iter()
            .map(|(digest, entry)| BlobListing {
                digest: digest.to_string(),
                size: entry.size,
                sealed_bytes: entry.sealed_size(),
                last_access_ms: entry.last_access,
                pinned: usage.pinned.contains(digest),
            })
            .collect();
        blobs.sort_by_key(|b| std::cmp::Reverse(b.last_access_ms));
        Ok(blobs)
    }

    /// Blobs held and how many of those are pinned, without listing them (the status page).
    pub fn blob_counts(&self) -> EdgeResult<(usize, usize)> {
        let usage = self.lock_usage()?;
        let pinned = usage
            .pinned
            .iter()
            .filter(|d| usage.entries.contains_key(d))
            .count();
        Ok((usage.entries.len(), pinned))
    }

    /// Deletes a complete blob now, pinned or not. Readers that have it open finish from the
    /// file they hold; the next request fetches it from the upstream again.
    pub fn purge_blob(&self, digest: &Digest) -> EdgeResult<Purged> {
        // Under the in-flight lock, like every change between "cached" and "absent".
        let in_flight = self
            .in_flight
            .lock()
            .map_err(|_| EdgeError::Internal("lock poisoned".into()))?;
        if in_flight.contains_key(digest) {
            return Ok(Purged::InFlight);
        }
        let removed = self.lock_usage()?.remove(digest).is_some();
        if removed {
            self.forget_table(digest);
            let _ = std::fs::remove_file(self.sealed_path(digest));
            let _ = std::fs::remove_file(self.table_path(digest));
            self.index.remove_blobs(&[digest.hex()]).map_err(index_err)?;
        }
        drop(in_flight);
        self.refresh_used_metric();
        if removed {
            tracing::warn!(%digest, "blob purged by an operator");
            Ok(Purged::Removed)
        } else {
            Ok(Purged::Absent)
        }
    }

    /// Pins `digest` (or unpins it): a pinned blob is never evicted, and the pin outlives
    /// restarts. A digest not cached yet may be pinned; it is kept once it arrives.
    pub fn set_pinned(&self, digest: &Digest, pinned: bool) -> EdgeResult<()> {
        if pinned {
            self.index
                .put_pin(&digest.hex(), now_millis())
                .map_err(index_err)?;
            self.lock_usage()?.pinned.insert(*digest);
        } else {
            self.index.remove_pin(&digest.hex()).map_err(index_err)?;
            self.lock_usage()?.pinned.remove(digest);
        }
        self.metrics
            .pinned_blobs
            .set(self.lock_usage()?.pinned.len() as i64);
        Ok(())
    }

    /// Every tag mapping held, by name.
    pub fn list_tags(&self) -> EdgeResult<Vec<TagListing>> {
        let tags = self.index.tags().map_err(index_err)?;
        Ok(tags
            .into_iter()
            .filter_map(|(tag, entry)| {
                entry.map(|e| TagListing {
                    tag,
                    digest: e.digest,
                    confirmed_at_ms: e.confirmed_at,
                })
            })
            .collect())
    }

    /// Forgets the tag mappings `matches` selects (by `<registry>/<repository>:<tag>`); returns
    /// how many went. Their manifests stay (content-addressed, they are never wrong); the next
    /// pull by tag asks the upstream.
    pub fn purge_tags(&self, matches: impl Fn(&str) -> bool) -> EdgeResult<usize> {
        let mut catalog = self.lock_catalog()?;
        let gone: Vec<String> = self
            .index
            .tags()
            .map_err(index_err)?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| matches(key))
            .collect();
        self.index.remove_tags(&gone).map_err(index_err)?;
        for key in &gone {
            catalog.tags.remove(key);
        }
        super::manifests::note_catalog_metrics(&self.metrics, &catalog);
        if !gone.is_empty() {
            tracing::warn!(count = gone.len(), "tags purged by an operator");
        }
        Ok(gone.len())
    }
}
