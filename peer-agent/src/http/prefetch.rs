//! Layers downloaded as soon as their image manifest passes through the mirror
//! (`download.prefetch_layers`).
//!
//! A runtime asks for an image's layers a few at a time (containerd three, podman six), each
//! after the previous ones finished. In a swarm, every host waits at the same layer boundaries
//! and the edge's link, the scarcest one, idles while the next requests come. Started from the
//! manifest, the downloads run back to back; the runtime's blob requests then join them.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use damselfly_core::{Digest, RepositoryName};
use serde::Deserialize;

use super::relayed::{relayed, relayed_head};
use crate::request::{BlobRequest, TaskOrigin};
use crate::state::AgentState;

/// Manifests larger than this pass through unread (registries refuse manifests over 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Layers prefetched from one manifest at the most.
const MAX_LAYERS: usize = 256;

const IMAGE_MANIFESTS: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Deserialize)]
struct ImageManifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

/// Who asked for the manifest: its layers are fetched with the same credentials, from the same
/// repository and registry.
pub(crate) struct ManifestCaller {
    pub(crate) repo: RepositoryName,
    pub(crate) ns: Option<String>,
    pub(crate) authorization: Option<HeaderValue>,
}

/// Hands the manifest answer to the runtime unchanged; an image manifest's layers start
/// downloading on the way.
pub(crate) async fn pass_manifest(
    state: &Arc<AgentState>,
    response: reqwest::Response,
    caller: ManifestCaller,
) -> Response {
    let image_manifest = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| IMAGE_MANIFESTS.iter().any(|m| t.starts_with(m)));
    let small = response
        .content_length()
        .is_some_and(|len| len <= MAX_MANIFEST_BYTES);
    if response.status() != StatusCode::OK || !image_manifest || !small {
        return relayed(response, None);
    }
    let (status, headers) = (response.status(), response.headers().clone());
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return relayed_head(StatusCode::BAD_GATEWAY, &http::HeaderMap::new())
                .body(Body::from(format!("manifest body: {e}")))
                .unwrap_or_default()
        }
    };
    match serde_json::from_slice::<ImageManifest>(&body) {
        Ok(manifest) => start(state, manifest, &caller),
        Err(e) => tracing::debug!(repo = %caller.repo, error = %e, "manifest unreadable; no prefetch"),
    }
    relayed_head(status, &headers)
        .body(Body::from(body))
        .unwrap_or_default()
}

/// Starts (or joins) the download of each layer in the background.
fn start(state: &Arc<AgentState>, manifest: ImageManifest, caller: &ManifestCaller) {
    for layer in manifest.layers.into_iter().take(MAX_LAYERS) {
        let Ok(digest) = layer.digest.parse::<Digest>() else {
            continue;
        };
        let request = BlobRequest {
            digest,
            origin: TaskOrigin::Registry {
                repo: caller.repo.to_string(),
                ns: caller.ns.clone(),
            },
            authorization: caller.authorization.clone(),
        };
        let state = state.clone();
        state.metrics.prefetched_layers.inc();
        tokio::spawn(async move {
            if let Err(e) = state.downloader.open(request).await {
                tracing::debug!(%digest, error = %e, "prefetch did not start; the runtime's request will try again");
            }
        });
    }
}
