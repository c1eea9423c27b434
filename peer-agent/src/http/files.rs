//! Plain files through the P2P path, for `peer-agent get` (and any local HTTP client):
//! `GET /api/v1/files?url=<url>[&digest=sha256:…]` streams the file, `Range` supported.
//!
//! The task id comes from the normalised URL, so every host fetching one file joins one task
//! however the URL was spelled. The edge fetches only URLs under its allowed prefixes; when no
//! edge can serve the file, this agent fetches it from its server directly.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use damselfly_core::{file_task_id, normalise_url, Digest};
use serde::Deserialize;

use super::blob_stream;
use crate::error::{AgentError, AgentResult};
use crate::request::{BlobRequest, TaskOrigin};
use crate::state::AgentState;

#[derive(Debug, Deserialize)]
pub(crate) struct FileQuery {
    url: String,
    digest: Option<String>,
}

pub(crate) async fn get(
    State(state): State<Arc<AgentState>>,
    Query(query): Query<FileQuery>,
    headers: HeaderMap,
) -> AgentResult<Response> {
    let url = normalise_url(&query.url).map_err(|e| AgentError::BadRequest(e.to_string()))?;
    let task = file_task_id(&url).map_err(|e| AgentError::BadRequest(e.to_string()))?;
    let expected: Option<Digest> = query
        .digest
        .as_deref()
        .map(|d| {
            d.parse()
                .map_err(|e: damselfly_core::DigestError| AgentError::BadRequest(e.to_string()))
        })
        .transpose()?;
    let request = BlobRequest {
        digest: task,
        origin: TaskOrigin::File { url, expected },
        authorization: None,
    };
    blob_stream::serve(&state, request, &headers).await
}
