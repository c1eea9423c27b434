//! The registry mirror the local runtime talks to. Manifests and pings are relayed to the edge
//! (then the origin); blob GETs take the P2P path; a blob GET never fails with a 5xx while the
//! origin can still be reached (containers/image does not fall back per blob).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use damselfly_core::{Digest, RepositoryName};
use futures::TryStreamExt;
use serde::Deserialize;

use super::blob_stream;
use crate::download::{BlobRequest, TaskOrigin};
use crate::edges::Relay;
use crate::error::{AgentError, AgentResult};
use crate::state::AgentState;

#[derive(Debug, Default, Deserialize)]
pub struct MirrorQuery {
    pub ns: Option<String>,
}

/// Response headers relayed to the runtime.
const RELAYED: [&str; 9] = [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "docker-content-digest",
    "docker-distribution-api-version",
    "www-authenticate",
    "etag",
    "location",
];

/// Turns a relayed response into ours, body streamed (and counted when it is a blob).
pub fn relayed(
    response: reqwest::Response,
    count: Option<(Arc<crate::metrics::Metrics>, &'static str)>,
) -> Response {
    let mut builder = Response::builder().status(response.status());
    for name in RELAYED {
        for v in response.headers().get_all(name) {
            builder = builder.header(name, v.clone());
        }
    }
    let stream = response.bytes_stream().inspect_ok(move |chunk| {
        if let Some((metrics, source)) = &count {
            metrics.downloaded(source, chunk.len() as u64);
        }
    });
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub async fn ping(
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
    let (response, _) = state.edges.relay(&relay).await?;
    Ok(relayed(response, None))
}

pub async fn dispatch(
    State(state): State<Arc<AgentState>>,
    Path(path): Path<String>,
    Query(query): Query<MirrorQuery>,
    method: Method,
    headers: HeaderMap,
) -> AgentResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(AgentError::Unsupported);
    }
    let full_path = format!("/v2/{path}");
    let (head, last) = path
        .rsplit_once('/')
        .ok_or_else(|| AgentError::BadRequest("unknown endpoint".into()))?;
    let (name, kind) = head
        .rsplit_once('/')
        .ok_or_else(|| AgentError::BadRequest("unknown endpoint".into()))?;
    let repo: RepositoryName = name
        .parse()
        .map_err(|_| AgentError::BadRequest(format!("invalid name {name}")))?;
    let relay = Relay {
        method: method.clone(),
        path: &full_path,
        ns: query.ns.as_deref(),
        headers: &headers,
    };
    match (kind, method) {
        ("blobs", Method::GET) => {
            let digest: Digest = last
                .parse()
                .map_err(|_| AgentError::BadRequest(format!("invalid digest {last}")))?;
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
        ("blobs", _) | ("manifests", _) => {
            let (response, _) = state.edges.relay(&relay).await?;
            Ok(relayed(response, None))
        }
        _ => Err(AgentError::BadRequest("unknown endpoint".into())),
    }
}
