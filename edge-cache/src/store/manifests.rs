//! Cached manifests (immutable, under their verified digest) and tag mappings (revalidated).

use bytes::Bytes;
use damselfly_core::{Digest, RepositoryName};

use super::index::TagEntry;
use super::BlobStore;
use crate::error::{EdgeError, EdgeResult};

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

impl BlobStore {
    pub fn manifest(&self, digest: &Digest) -> EdgeResult<Option<CachedManifest>> {
        let Some(media_type) = self.index.manifest_media_type(&digest.hex()).map_err(index_err)? else {
            return Ok(None);
        };
        match std::fs::read(self.manifests_dir().join(digest.hex())) {
            // Re-verified on every read: manifests are small and a wrong one breaks every pull.
            Ok(body) if Digest::of(&body) == *digest => Ok(Some(CachedManifest {
                digest: *digest,
                media_type,
                body: Bytes::from(body),
            })),
            Ok(_) => {
                tracing::warn!(%digest, "cached manifest is damaged; refetching");
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EdgeError::Internal(format!("read manifest: {e}"))),
        }
    }

    /// Stores a manifest whose digest the caller verified.
    pub fn put_manifest(&self, manifest: &CachedManifest) -> EdgeResult<()> {
        let path = self.manifests_dir().join(manifest.digest.hex());
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &manifest.body)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| EdgeError::Internal(format!("write manifest: {e}")))?;
        self.index
            .put_manifest(&manifest.digest.hex(), &manifest.media_type)
            .map_err(index_err)
    }

    pub fn tag(&self, registry: &str, repo: &RepositoryName, tag: &str) -> EdgeResult<Option<TagEntry>> {
        self.index.tag(&tag_key(registry, repo, tag)).map_err(index_err)
    }

    pub fn put_tag(
        &self,
        registry: &str,
        repo: &RepositoryName,
        tag: &str,
        entry: &TagEntry,
    ) -> EdgeResult<()> {
        self.index
            .put_tag(&tag_key(registry, repo, tag), entry)
            .map_err(index_err)
    }
}
