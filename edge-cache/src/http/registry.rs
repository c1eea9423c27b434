//! The read side of the OCI distribution API: `/v2/` and the routing of
//! `/v2/<name>/manifests/<reference>` and `/v2/<name>/blobs/<digest>`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::RepositoryName;
use damselfly_registry::Request;
use serde::Deserialize;

use super::{blobs, manifests};
use crate::error::{EdgeError, EdgeResult, UpstreamReply};
use crate::state::AppState;

const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// Query parameters registry clients send; containerd names the registry in `ns`.
#[derive(Debug, Default, Deserialize)]
pub struct RegistryQuery {
    pub ns: Option<String>,
}

/// `GET /v2/`: asks the upstream, so clients receive its auth challenge and authenticate the
/// way the upstream wants (containers/image only sends credentials after a challenge here).
/// With the upstream down, answers 200 so cached content stays pullable.
pub async fn ping(
    State(state): State<Arc<AppState>>,
    Query(query): Query<RegistryQuery>,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    let upstream = state.upstreams.select(query.ns.as_deref())?;
    let request = Request {
        authorization: headers.get("authorization"),
        ..Request::get("/v2/".into())
    };
    match upstream.send(request).await {
        Ok(r) if r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::FORBIDDEN => {
            let (status, upstream_headers) = (r.status(), r.headers().clone());
            let body = r.bytes().await.unwrap_or_default();
            let mut reply = UpstreamReply::new(status, &upstream_headers, body);
            reply
                .headers
                .insert(API_VERSION.0, http::HeaderValue::from_static(API_VERSION.1));
            Err(reply.into())
        }
        Ok(_) | Err(_) => Ok(([API_VERSION, ("content-type", "application/json")], "{}").into_response()),
    }
}

/// What a `/v2/<path>` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
}

/// Splits at the last `/manifests/` or `/blobs/`: names may themselves contain those words as
/// components (`a/blobs/b` is a valid repository), the reference never contains a slash.
fn parse_target(path: &str) -> Option<Target<'_>> {
    let (head, last) = path.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Target::Manifest {
            name,
            reference: last,
        }),
        "blobs" => Some(Target::Blob { name, digest: last }),
        _ => None,
    }
}

pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
    Query(query): Query<RegistryQuery>,
    method: Method,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(EdgeError::Unsupported("only pulls (GET and HEAD) are served"));
    }
    let target = parse_target(&path).ok_or_else(|| EdgeError::Unsupported("unknown registry endpoint"))?;
    let upstream = state.upstreams.select(query.ns.as_deref())?;
    let head = method == Method::HEAD;
    let mut response = match target {
        Target::Manifest { name, reference } => {
            let repo: RepositoryName = name
                .parse()
                .map_err(|_| EdgeError::NameInvalid(name.to_string()))?;
            let reference = reference
                .parse()
                .map_err(|_| EdgeError::ManifestUnknown(format!("invalid reference {reference}")))?;
            manifests::serve(&state, &upstream, &repo, &reference, &headers, head).await?
        }
        Target::Blob { name, digest } => {
            let repo: RepositoryName = name
                .parse()
                .map_err(|_| EdgeError::NameInvalid(name.to_string()))?;
            let digest = digest
                .parse()
                .map_err(|_| EdgeError::DigestInvalid(digest.to_string()))?;
            blobs::serve(&state, &upstream, &repo, &digest, &headers, head).await?
        }
    };
    // Set here, not in the handlers, so they need nothing from the router that calls them.
    response
        .headers_mut()
        .insert(API_VERSION.0, http::HeaderValue::from_static(API_VERSION.1));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_last_kind() {
        assert_eq!(
            parse_target("library/nginx/manifests/1.25"),
            Some(Target::Manifest {
                name: "library/nginx",
                reference: "1.25"
            })
        );
        assert_eq!(
            parse_target("a/blobs/b/blobs/sha256:x"),
            Some(Target::Blob {
                name: "a/blobs/b",
                digest: "sha256:x"
            })
        );
        assert_eq!(parse_target("a/tags/list"), None);
        assert_eq!(parse_target("manifests/x"), None);
    }
}
