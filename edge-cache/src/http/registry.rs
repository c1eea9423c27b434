//! The read side of the OCI distribution API: `/v2/` and the routing of
//! `/v2/<name>/manifests/<reference>` and `/v2/<name>/blobs/<digest>`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::api::registry::API_VERSION;
use damselfly_core::api::RegistryTarget;
use damselfly_core::RepositoryName;
use damselfly_registry::Request;
use serde::Deserialize;

use super::{blobs, manifests};
use crate::error::{EdgeError, EdgeResult, PassedReply};
use crate::state::AppState;

/// Query parameters registry clients send; containerd names the registry in `ns`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RegistryQuery {
    pub(crate) ns: Option<String>,
}

/// `GET /v2/`: asks the upstream, so clients receive its auth challenge and authenticate the
/// way the upstream wants (containers/image only sends credentials after a challenge here).
/// With the upstream down, answers 200 so cached content stays pullable.
pub(crate) async fn ping(
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
            let mut reply = PassedReply::new(status, &upstream_headers, body);
            reply
                .headers
                .insert(API_VERSION.0, http::HeaderValue::from_static(API_VERSION.1));
            Err(reply.into())
        }
        Ok(_) | Err(_) => Ok(([API_VERSION, ("content-type", "application/json")], "{}").into_response()),
    }
}

pub(crate) async fn dispatch(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
    Query(query): Query<RegistryQuery>,
    method: Method,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(EdgeError::Unsupported("only pulls (GET and HEAD) are served"));
    }
    let target =
        RegistryTarget::parse(&path).ok_or_else(|| EdgeError::Unsupported("unknown registry endpoint"))?;
    let upstream = state.upstreams.select(query.ns.as_deref())?;
    let head = method == Method::HEAD;
    let mut response = match target {
        RegistryTarget::Manifest { name, reference } => {
            let repo = repository(name)?;
            let reference = reference
                .parse()
                .map_err(|_| EdgeError::ManifestUnknown(format!("invalid reference {reference}")))?;
            manifests::serve(&state, &upstream, &repo, &reference, &headers, head).await?
        }
        RegistryTarget::Blob { name, digest } => {
            let repo = repository(name)?;
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

fn repository(name: &str) -> EdgeResult<RepositoryName> {
    name.parse().map_err(|_| EdgeError::NameInvalid(name.to_string()))
}
