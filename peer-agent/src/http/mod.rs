//! The agent's HTTP faces: the registry mirror for the local runtime (plus health and
//! metrics), the upload server other agents fetch pieces from, and the ops routes for probes
//! and Prometheus with the agent's status page.

mod blob_stream;
mod files;
mod mirror;
mod relayed;
mod status_page;
mod upload;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::state::AgentState;

/// The mirror for the local runtime, with `/healthz`, `/readyz` and `/metrics`; the listener
/// adds the request bounds and metrics (`damselfly_server`).
pub fn mirror_app(state: Arc<AgentState>) -> Router {
    let routes = Router::new()
        .route("/v2/", get(mirror::ping))
        .route("/v2", get(mirror::ping))
        .route("/v2/{*path}", axum::routing::any(mirror::dispatch))
        .route("/api/v1/files", get(files::get));
    with_ops(routes, state)
}

/// `/healthz`, `/readyz` and `/metrics` on a listener of their own, with the status page
/// (`/`, `/api/v1/status`).
pub fn ops_app(state: Arc<AgentState>) -> Router {
    let routes = Router::new()
        .route("/", get(status_page::page))
        .route("/api/v1/status", get(status_page::json));
    with_ops(routes, state)
}

/// `routes` plus `/healthz`, `/readyz` and `/metrics`, which the mirror and the ops listener
/// both carry.
fn with_ops(routes: Router<Arc<AgentState>>, state: Arc<AgentState>) -> Router {
    routes
        .with_state(state.clone())
        .merge(damselfly_server::ops::routes_of(state))
}

/// Pieces for other agents.
pub fn upload_app(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/pieces/{digest}/{index}", get(upload::piece))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// A bounded route label for the mirror's metrics (never the repository or digest).
pub(crate) fn mirror_route(path: &str) -> &'static str {
    if path.contains("/blobs/") {
        "blob"
    } else if path.contains("/manifests/") {
        "manifest"
    } else if path.ends_with("/tags/list") {
        "tags"
    } else if path.starts_with("/api/v1/files") {
        "file"
    } else if path.starts_with("/v2") {
        "ping"
    } else {
        damselfly_server::ops::ROUTE
    }
}

pub(crate) fn upload_route(path: &str) -> &'static str {
    if path.starts_with("/pieces/") {
        "upload"
    } else {
        damselfly_server::ops::ROUTE
    }
}
