//! The scheduler API for agents, all under a task and all requiring that task's ticket:
//!
//! - `PUT /api/v1/tasks/<digest>/peers/<host_id>` — join or announce (also the heartbeat).
//! - `DELETE /api/v1/tasks/<digest>/peers/<host_id>` — leave.
//! - `GET /api/v1/tasks/<digest>/parents?host_id=&location=` — ranked parent candidates.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use damselfly_core::api::{ParentsAnswer, ParentsQuery, PeerAnnouncement, PeerRecord, TICKET_HEADER};
use damselfly_core::{rank_parents, Digest, Location};

use super::agent_api::unix_now;
use crate::error::{EdgeError, EdgeResult};
use crate::state::AppState;
use crate::store::now_millis;

fn authorise(state: &AppState, digest: &str, headers: &HeaderMap) -> EdgeResult<Digest> {
    let digest: Digest = digest
        .parse()
        .map_err(|_| EdgeError::DigestInvalid(digest.to_string()))?;
    let token = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| EdgeError::Unauthorized("a ticket for this task is required".into()))?;
    state
        .ticket_verifier
        .verify(token, &digest, unix_now())
        .map_err(|e| EdgeError::Unauthorized(e.to_string()))?;
    Ok(digest)
}

fn check_host_id(host_id: &str) -> EdgeResult<()> {
    let ok = !host_id.is_empty()
        && host_id.len() <= 128
        && host_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(EdgeError::NameInvalid(format!("host id {host_id:?}")))
    }
}

pub(crate) async fn announce(
    State(state): State<Arc<AppState>>,
    Path((digest, host_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(announcement): Json<PeerAnnouncement>,
) -> EdgeResult<Response> {
    let digest = authorise(&state, &digest, &headers)?;
    check_host_id(&host_id)?;
    let record = PeerRecord {
        host_id,
        announcement,
        seen_at: now_millis(),
    };
    state.peers.announce(&digest, record).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn leave(
    State(state): State<Arc<AppState>>,
    Path((digest, host_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    let digest = authorise(&state, &digest, &headers)?;
    state.peers.leave(&digest, &host_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn parents(
    State(state): State<Arc<AppState>>,
    Path(digest): Path<String>,
    Query(query): Query<ParentsQuery>,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    let digest = authorise(&state, &digest, &headers)?;
    let location: Location = query
        .location
        .parse()
        .map_err(|e: damselfly_core::location::LocationError| EdgeError::NameInvalid(e.to_string()))?;
    let peers = state.peers.peers(&digest).await?;
    let ranked = rank_parents(
        &query.host_id,
        &location,
        &peers,
        state.config.scheduler.max_parents,
    );
    Ok(Json(ParentsAnswer { parents: ranked }).into_response())
}
