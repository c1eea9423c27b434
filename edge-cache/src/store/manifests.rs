//! Cached manifests (immutable, under their verified digest) and tag mappings (revalidated),
//! both within the catalog's caps.

use std::path::Path;

use bytes::Bytes;
use damselfly_core::{Digest, RepositoryName};

use super::catalog::{Catalog, Lru};
use super::index::{Index, TagEntry};
use super::usage::now_millis;
use super::BlobStore;
use crate::error::{EdgeError, EdgeResult};
use crate::metrics::{KindLabels, Metrics};

/// Caps on what [`Catalog`] holds.
pub struct CatalogLimits {
    pub max_manifests: usize,
    /// Bytes of manifests kept at most (they also count against the quota).
    pub max_manifest_bytes: u64,
    pub max_tags: usize,
}

#[derive(Clone, Debug)]
pub struct CachedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

fn index_err(e: super::index::IndexError) -> EdgeError {
    EdgeError::Internal(format!("index: {e}"))
}

fn tag_key(registry: &str, repo: &RepositoryName, tag: &str) -> String {
    format!("{registry}/{repo}:{tag}")
}

/// The catalog as the index and the manifest files have it: a file without a row (a write cut
/// short) and a row without a file are dropped, then whatever passes the caps (they may have
/// been lowered) is evicted. Manifests' last reads are not persisted: their files' modification
/// times stand in after a restart.
pub(super) fn load_catalog(root: &Path, index: &Index, limits: &CatalogLimits) -> EdgeResult<Catalog> {
    let dir = root.join("manifests");
    let mut rows: std::collections::HashSet<String> =
        index.manifests().map_err(index_err)?.into_iter().collect();
    let mut catalog = Catalog {
        manifests: Lru::new(limits.max_manifests, limits.max_manifest_bytes),
        tags: Lru::new(limits.max_tags, u64::MAX),
    };
    let mut found = Vec::new();
    let files = std::fs::read_dir(&dir).map_err(|e| EdgeError::Internal(format!("scan manifests: {e}")))?;
    for entry in files.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(meta) = entry.metadata() else { continue };
        if !rows.remove(&name) {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        found.push((name, meta.len(), modified));
    }
    // Oldest first, so that what passes the caps is the least recently stored.
    found.sort_by_key(|(_, _, modified)| *modified);
    let mut evicted_manifests = Vec::new();
    for (name, bytes, modified) in found {
        evicted_manifests.extend(catalog.manifests.insert(name, bytes, modified));
    }
    for hex in &evicted_manifests {
        let _ = std::fs::remove_file(dir.join(hex));
    }
    evicted_manifests.extend(rows);
    index.remove_manifests(&evicted_manifests).map_err(index_err)?;
    // A row that no longer parses counts as the oldest.
    let mut tags: Vec<(String, u64)> = index
        .tags()
        .map_err(index_err)?
        .into_iter()
        .map(|(key, entry)| (key, entry.map_or(0, |e| e.confirmed_at)))
        .collect();
    tags.sort_by_key(|(_, confirmed_at)| *confirmed_at);
    let mut evicted_tags = Vec::new();
    for (key, confirmed_at) in tags {
        evicted_tags.extend(catalog.tags.insert(key, 1, confirmed_at));
    }
    index.remove_tags(&evicted_tags).map_err(index_err)?;
    Ok(catalog)
}

impl BlobStore {
    pub fn manifest(&self, digest: &Digest) -> EdgeResult<Option<CachedManifest>> {
        let Some(media_type) = self.index.manifest_media_type(&digest.hex()).map_err(index_err)? else {
            return Ok(None);
        };
        match std::fs::read(self.manifests_dir().join(digest.hex())) {
            // Re-verified on every read: manifests are small and a wrong one breaks every pull.
            Ok(body) if Digest::of(&body) == *digest => {
                if let Ok(mut catalog) = self.catalog.lock() {
                    catalog.manifests.touch(&digest.hex(), now_millis());
                }
                Ok(Some(CachedManifest {
                    digest: *digest,
                    media_type,
                    body: Bytes::from(body),
                }))
            }
            Ok(_) => {
                tracing::warn!(%digest, "cached manifest is damaged; refetching");
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EdgeError::Internal(format!("read manifest: {e}"))),
        }
    }

    /// Stores a manifest whose digest the caller verified, evicting the least recently used
    /// beyond the caps. The catalog stays locked throughout, so an eviction never crosses a
    /// store of the same manifest.
    pub fn put_manifest(&self, manifest: &CachedManifest) -> EdgeResult<()> {
        let mut catalog = self.lock_catalog()?;
        let hex = manifest.digest.hex();
        let path = self.manifests_dir().join(&hex);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &manifest.body)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| EdgeError::Internal(format!("write manifest: {e}")))?;
        self.index
            .put_manifest(&hex, &manifest.media_type)
            .map_err(index_err)?;
        let evicted = catalog
            .manifests
            .insert(hex, manifest.body.len() as u64, now_millis());
        for hex in &evicted {
            let _ = std::fs::remove_file(self.manifests_dir().join(hex));
        }
        let removed = self.index.remove_manifests(&evicted).map_err(index_err);
        self.note_catalog(&catalog, "manifest", evicted.len());
        removed
    }

    pub fn tag(&self, registry: &str, repo: &RepositoryName, tag: &str) -> EdgeResult<Option<TagEntry>> {
        let key = tag_key(registry, repo, tag);
        let entry = self.index.tag(&key).map_err(index_err)?;
        if entry.is_some() {
            if let Ok(mut catalog) = self.catalog.lock() {
                catalog.tags.touch(&key, now_millis());
            }
        }
        Ok(entry)
    }

    pub fn put_tag(
        &self,
        registry: &str,
        repo: &RepositoryName,
        tag: &str,
        entry: &TagEntry,
    ) -> EdgeResult<()> {
        let mut catalog = self.lock_catalog()?;
        let key = tag_key(registry, repo, tag);
        self.index.put_tag(&key, entry).map_err(index_err)?;
        let evicted = catalog.tags.insert(key, 1, now_millis());
        let removed = self.index.remove_tags(&evicted).map_err(index_err);
        self.note_catalog(&catalog, "tag", evicted.len());
        removed
    }

    pub(super) fn lock_catalog(&self) -> EdgeResult<std::sync::MutexGuard<'_, Catalog>> {
        self.catalog
            .lock()
            .map_err(|_| EdgeError::Internal("catalog lock poisoned".into()))
    }

    /// Counts and quota after a catalog change (`evicted` entries of `kind` went).
    fn note_catalog(&self, catalog: &Catalog, kind: &'static str, evicted: usize) {
        if evicted > 0 {
            tracing::info!(kind, evicted, "evicted cached entries to stay within their cap");
        }
        note_catalog_metrics(&self.metrics, catalog);
        self.metrics
            .evicted_catalog_entries
            .get_or_create(&KindLabels { kind })
            .inc_by(evicted as u64);
        if let Ok(mut usage) = self.usage.lock() {
            usage.metadata = catalog.manifests.cost();
        }
        self.refresh_used_metric();
    }
}

pub(super) fn note_catalog_metrics(metrics: &Metrics, catalog: &Catalog) {
    let count = |kind, n: usize| {
        metrics
            .catalog_entries
            .get_or_create(&KindLabels { kind })
            .set(n as i64)
    };
    count("manifest", catalog.manifests.len());
    count("tag", catalog.tags.len());
}
