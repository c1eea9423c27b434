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
use damselfly_core::api::{ParentsQuery, PeerAnnouncement, PeerRecord};
use damselfly_core::task_peers::Asking;
use damselfly_core::{Digest, Location};

use super::caller::Caller;
use crate::error::{EdgeError, EdgeResult};
use crate::state::AppState;
use crate::store::now_millis;

fn parse_digest(digest: &str) -> EdgeResult<Digest> {
    digest
        .parse()
        .map_err(|_| EdgeError::DigestInvalid(digest.to_string()))
}

/// Host ids are what agents are known by: a certificate's CN or `spiffe://` URI, or in a lab
/// without certificates a name of the agent's choosing.
fn check_host_id(host_id: &str) -> EdgeResult<()> {
    let ok = !host_id.is_empty()
        && host_id.len() <= 255
        && host_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(EdgeError::NameInvalid(format!("host id {host_id:?}")))
    }
}

/// An identified caller writes only its own record; a lab edge without identities trusts the
/// path.
fn check_own_record(caller: &Caller, host_id: &str) -> EdgeResult<()> {
    match caller.name() {
        Some(name) if name != host_id => Err(EdgeError::Denied(format!(
            "{name} may not write the scheduler record of {host_id}"
        ))),
        _ => Ok(()),
    }
}

/// Other agents will send requests (with their tickets) to the announced upload URL: it must
/// name an address the caller is known by, or an attacker could point them anywhere.
fn check_upload_url(state: &AppState, caller: &Caller, upload_url: &str) -> EdgeResult<()> {
    let url = reqwest::Url::parse(upload_url)
        .map_err(|e| EdgeError::NameInvalid(format!("upload_url {upload_url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EdgeError::NameInvalid(format!(
            "upload_url {upload_url:?} is not http(s)"
        )));
    }
    let host = url.host_str().unwrap_or("");
    if state.config.insecure && caller.identity.is_none() || caller.known_by(host) {
        Ok(())
    } else {
        Err(EdgeError::Denied(format!(
            "upload_url host {host} is neither in the caller's certificate nor the address it connects from"
        )))
    }
}

pub(crate) async fn announce(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((digest, host_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(mut announcement): Json<PeerAnnouncement>,
) -> EdgeResult<Response> {
    let digest = parse_digest(&digest)?;
    caller.ticket(&state, &headers, &digest)?;
    check_host_id(&host_id)?;
    check_own_record(&caller, &host_id)?;
    check_upload_url(&state, &caller, &announcement.upload_url)?;
    state.announcements.admit(&host_id)?;
    // The byte totals are for the status page only: not kept with the peer's record (every
    // parents answer would carry them).
    let downloaded = announcement.downloaded.take();
    state.status.heard(
        &host_id,
        announcement.location.to_string(),
        announcement.uploads_active,
        announcement.upload_slots,
        downloaded,
    );
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
    caller: Caller,
    Path((digest, host_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    let digest = parse_digest(&digest)?;
    caller.ticket(&state, &headers, &digest)?;
    check_own_record(&caller, &host_id)?;
    state.peers.leave(&digest, &host_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn parents(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(digest): Path<String>,
    Query(query): Query<ParentsQuery>,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    let digest = parse_digest(&digest)?;
    caller.ticket(&state, &headers, &digest)?;
    let location: Location = query
        .location
        .parse()
        .map_err(|e: damselfly_core::location::LocationError| EdgeError::NameInvalid(e.to_string()))?;
    // An identified caller is left out of its own parents by its identity, whatever it asked.
    let me = caller.name().unwrap_or(&query.host_id);
    let asking = Asking {
        host_id: me,
        location: &location,
        edge_room: query.edge_room,
        known: query.known,
    };
    let answer = state
        .peers
        .parents(&digest, &asking, state.config.scheduler.max_parents)
        .await?;
    Ok(Json(answer).into_response())
}
