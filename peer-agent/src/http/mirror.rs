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
