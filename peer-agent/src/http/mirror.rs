//! The registry mirror the local runtime talks to. Manifests and pings are relayed to the edge
//! (then the origin); blob GETs take the P2P path; a blob GET never fails with a 5xx while the
//! origin can still be reached (containers/image does not fall back per blob).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use damselfly_core::api::RegistryTarget;
use damselfly_core::{Digest, RepositoryName};
use serde::Deserialize;

use super::blob_stream;
use super::relayed::relayed;
use crate::client::Relay;
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
    method: Method,
    headers: HeaderMap,
) -> AgentResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(AgentError::Unsupported);
    }
    let target =
        RegistryTarget::parse(&path).ok_or_else(|| AgentError::BadRequest("unknown endpoint".into()))?;
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
            let relay = Relay {
                method,
                path: &full_path,
                ns: query.ns.as_deref(),
                headers: &headers,
            };
            let (response, _) = state.relay.relay(&relay).await?;
            Ok(relayed(response, None))
        }
    }
}
