//! The registry mirror the local runtime talks to. Manifests and pings are relayed to the edge
//! (then the origin); blob GETs take the P2P path; a blob GET never fails with a 5xx while the
//! origin can still be reached (containers/image does not fall back per blob).

use std::sync::Arc;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use damselfly_core::api::RegistryTarget;
use damselfly_core::{Digest, RepositoryName};
use serde::Deserialize;

use super::blob_stream;
use super::relayed::{relayed, relayed_whole};
use crate::client::Relay;
use crate::download::read_ahead::ImagePull;
use crate::error::{AgentError, AgentResult};
use crate::request::{BlobRequest, TaskOrigin};
use crate::state::AgentState;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct MirrorQuery {
    ns: Option<String>,
}

pub(crate) async fn ping(
    State(state): State<Arc<AgentState>>,
    Query(query): Query<MirrorQuery>,
    headers: HeaderMap,
) -> AgentResult<Response> {
    let relay = Relay {
        method: Method::GET,
        path: "/v2/",
        ns: query.ns.as_deref(),
        headers: &headers,
    };
    let (response, _) = state.relay.relay(&relay).await?;
    Ok(relayed(response, None))
}

pub(crate) async fn dispatch(
    State(state): State<Arc<AgentState>>,
    Path(path): Path<String>,
    Query(query): Query<MirrorQuery>,
    RawQuery(raw_query): RawQuery,
    method: Method,
    headers: HeaderMap,
) -> AgentResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(AgentError::Unsupported);
    }
    let Some(target) = RegistryTarget::parse(&path) else {
        let Some(name) = path.strip_suffix("/tags/list") else {
            return Err(AgentError::BadRequest("unknown endpoint".into()));
        };
        let request = TagsRequest {
            name,
            ns: query.ns.as_deref(),
            raw_query: raw_query.as_deref(),
        };
        return tags_list(&state, request, method, &headers).await;
    };
    let name = target.name();
    let repo: RepositoryName = name
        .parse()
        .map_err(|_| AgentError::BadRequest(format!("invalid name {name}")))?;
    match target {
        RegistryTarget::Blob { digest, .. } if method == Method::GET => {
            let digest: Digest = digest
                .parse()
                .map_err(|_| AgentError::BadRequest(format!("invalid digest {digest}")))?;
            let request = BlobRequest {
                digest,
                origin: TaskOrigin::Registry {
                    repo: repo.to_string(),
                    ns: query.ns.clone(),
                },
                authorization: headers.get(http::header::AUTHORIZATION).cloned(),
            };
            blob_stream::serve(&state, request, &headers).await
        }
        RegistryTarget::Blob { .. } | RegistryTarget::Manifest { .. } => {
            let full_path = format!("/v2/{path}");
            let manifest_get = method == Method::GET && matches!(target, RegistryTarget::Manifest { .. });
            let relay = Relay {
                method,
                path: &full_path,
                ns: query.ns.as_deref(),
                headers: &headers,
            };
            let (response, _) = state.relay.relay(&relay).await?;
            if manifest_get && state.read_aheads.enabled() {
                let origin = TaskOrigin::Registry {
                    repo: repo.to_string(),
                    ns: query.ns.clone(),
                };
                return manifest_through(&state, response, origin, &headers).await;
            }
            Ok(relayed(response, None))
        }
    }
}

/// Image manifests, whose layers may be read ahead (`download/read_ahead.rs`).
const IMAGE_MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Larger manifests stream through unread.
const MAX_READ_MANIFEST: u64 = 4 << 20;

/// Relays a manifest; an image manifest is read whole on the way (they are small) and its
/// config and layers handed to the read-ahead.
async fn manifest_through(
    state: &AgentState,
    response: reqwest::Response,
    origin: TaskOrigin,
    headers: &HeaderMap,
) -> AgentResult<Response> {
    let image = response.status() == http::StatusCode::OK
        && response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| IMAGE_MANIFEST_TYPES.contains(&t.split(';').next().unwrap_or("").trim()));
    if !image || response.content_length().is_none_or(|l| l > MAX_READ_MANIFEST) {
        return Ok(relayed(response, None));
    }
    let (status, response_headers) = (response.status(), response.headers().clone());
    let body = response
        .bytes()
        .await
        .map_err(|e| AgentError::Unavailable(format!("reading a manifest: {e}")))?;
    if let Some(blobs) = image_blobs(&body) {
        state.read_aheads.image_pulled(ImagePull {
            manifest: Digest::of(&body),
            origin,
            authorization: headers.get(http::header::AUTHORIZATION).cloned(),
            blobs,
        });
    }
    Ok(relayed_whole(status, &response_headers, body))
}

/// The config and layer digests an image manifest names, in order, each once; `None` for
/// anything that does not read as one.
fn image_blobs(body: &[u8]) -> Option<Vec<Digest>> {
    #[derive(Deserialize)]
    struct Descriptor {
        digest: String,
    }
    #[derive(Deserialize)]
    struct ImageManifest {
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let manifest: ImageManifest = serde_json::from_slice(body).ok()?;
    let mut seen = std::collections::HashSet::new();
    let mut blobs: Vec<Digest> = Vec::new();
    for d in manifest.config.iter().chain(&manifest.layers) {
        let digest: Digest = d.digest.parse().ok()?;
        if seen.insert(digest) {
            blobs.push(digest);
        }
    }
    Some(blobs)
}

/// `GET /v2/<name>/tags/list[?n=&last=]`, as `docker pull --all-tags` asks it.
struct TagsRequest<'a> {
    name: &'a str,
    ns: Option<&'a str>,
    raw_query: Option<&'a str>,
}

/// A repository's tags, asked of the origin itself: edges keep no tag lists, and only the
/// registry knows every tag. Paging (`n`, `last`) passes on as given, and the answer's `Link`
/// back.
async fn tags_list(
    state: &AgentState,
    request: TagsRequest<'_>,
    method: Method,
    headers: &HeaderMap,
) -> AgentResult<Response> {
    let repo: RepositoryName = request
        .name
        .parse()
        .map_err(|_| AgentError::BadRequest(format!("invalid name {}", request.name)))?;
    let path = tags_path(&repo, request.raw_query);
    let relay = Relay {
        method,
        path: &path,
        ns: request.ns,
        headers,
    };
    let response = state.relay.to_origin(&relay).await?;
    Ok(relayed(response, None))
}

/// The registry's tags path for `repo`, with the paging parameters of the caller's query.
fn tags_path(repo: &RepositoryName, raw_query: Option<&str>) -> String {
    let paging: Vec<&str> = raw_query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| pair.starts_with("n=") || pair.starts_with("last="))
        .collect();
    let mut path = format!("/v2/{repo}/tags/list");
    if !paging.is_empty() {
        path.push('?');
        path.push_str(&paging.join("&"));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_manifest_lists_its_config_then_layers_once_each() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},
               "layers":[{{"digest":"{}","size":2}},{{"digest":"{}","size":3}},{{"digest":"{}","size":2}}]}}"#,
            digest('c'),
            digest('a'),
            digest('b'),
            digest('a')
        );
        let blobs: Vec<String> = image_blobs(body.as_bytes())
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(blobs, [digest('c'), digest('a'), digest('b')]);
        assert!(image_blobs(br#"{"layers":[{"digest":"md5:x"}]}"#).is_none());
        assert!(image_blobs(b"not json").is_none());
        // An index names manifests, not layers: nothing to read ahead.
        assert_eq!(image_blobs(br#"{"manifests":[]}"#), Some(Vec::new()));
    }

    #[test]
    fn a_tags_path_keeps_paging_and_drops_the_rest() {
        let repo: RepositoryName = "library/app".parse().unwrap();
        assert_eq!(tags_path(&repo, None), "/v2/library/app/tags/list");
        assert_eq!(
            tags_path(&repo, Some("ns=docker.io&n=2&last=1.0")),
            "/v2/library/app/tags/list?n=2&last=1.0"
        );
        assert_eq!(
            tags_path(&repo, Some("ns=docker.io")),
            "/v2/library/app/tags/list"
        );
    }
}
