//! What the routes hand to the backend and get back: a preheat request in Damselfly's terms, and
//! a provider's view of one job.

use serde::{Deserialize, Serialize};

use crate::{ManifestUrl, Scope};

/// Which of Harbor's provider APIs created a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `/oapi/v1/jobs` (Harbor ≥ 2.12).
    Oapi,
    /// `/preheats` (Harbor 2.1–2.11).
    Legacy,
}

/// What a provider job remembers of Harbor's request (stored with the job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub api: Api,
    /// The manifest URL Harbor sent.
    pub url: String,
    pub scope: Scope,
}

impl Origin {
    /// The blob's URL on the same registry, as Harbor's task log shows per edge.
    pub fn blob_url(&self, repository: &str, digest: &str) -> String {
        let base = self.url.split("/v2/").next().unwrap_or(&self.url);
        format!("{base}/v2/{repository}/blobs/{digest}")
    }
}

/// A preheat as Harbor asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreheatRequest {
    pub origin: Origin,
    pub manifest: ManifestUrl,
    /// The `Authorization` header Harbor supplied: a pull-only registry token for this repository.
    pub authorization: Option<String>,
    /// `scheduler_cluster_ids`; `None` when Harbor sent `null` or nothing.
    pub cluster_ids: Option<Vec<u64>>,
}

/// Where a job is, in the four steps both Harbor APIs know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Waiting,
    Running,
    Succeeded,
    Failed,
}

/// One region's edge: what it holds and what it could not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionOutcome {
    pub cluster_id: u64,
    pub region: String,
    pub hostname: String,
    pub ip: String,
    /// Blob URLs cached at this edge.
    pub cached: Vec<String>,
    /// `(blob URL, why)` for blobs this edge failed to cache.
    pub failed: Vec<(String, String)>,
}

/// A provider job as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderJob {
    pub id: u64,
    pub progress: Progress,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
    pub origin: Origin,
    pub error: Option<String>,
    pub regions: Vec<RegionOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls_keep_the_registry_base() {
        let origin = Origin {
            api: Api::Oapi,
            url: "https://harbor.example.com:8443/v2/library/nginx/manifests/1.25.3".into(),
            scope: Scope::AllPeers,
        };
        assert_eq!(
            origin.blob_url("library/nginx", "sha256:ab"),
            "https://harbor.example.com:8443/v2/library/nginx/blobs/sha256:ab"
        );
    }
}
