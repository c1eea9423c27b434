//! The HTTP surface: the OCI registry API (`/v2/`), the agent API (`/api/v1/tasks`,
//! `/pieces`), the warm and admin APIs, the status page (`/`, `/api/v1/status`), and operations
//! (`/healthz`, `/readyz`, `/metrics`).

mod admin;
mod agent_api;
mod bearer;
mod blob_fallback;
mod blobs;
mod caller;
pub(crate) mod manifests;
mod range;
mod registry;
mod scheduler_api;
mod status_page;
mod warm;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tower_http::compression::CompressionLayer;

use crate::state::AppState;

/// Every route; the listener adds the request bounds and metrics (`damselfly_server`).
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2/", get(registry::ping))
        .route("/v2", get(registry::ping))
        .route("/v2/{*path}", axum::routing::any(registry::dispatch))
        .merge(scheduler_json())
        .route("/pieces/{digest}/{index}", get(agent_api::piece))
        .route("/api/v1/ticket-key", get(agent_api::ticket_key))
        .route("/api/v1/cluster", get(cluster))
        .route(
            "/api/v1/tasks/{digest}/peers/{host_id}",
            axum::routing::put(scheduler_api::announce).delete(scheduler_api::leave),
        )
        .route("/api/v1/warm", axum::routing::post(warm::warm))
        .route("/api/v1/warm/{digest}", get(warm::status))
        .merge(admin_api())
        .route("/", get(status_page::page))
        .route("/api/v1/status", get(status_page::json))
        .with_state(state.clone())
        .merge(damselfly_server::ops::routes_of(state))
}

/// `GET /api/v1/cluster`: this edge's view of its region's cluster (`cluster.rs`).
async fn cluster(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    let (me, members) = match &state.cluster {
        Some(c) => (Some(c.me().to_string()), c.members()),
        None => (None, Vec::new()),
    };
    axum::Json(serde_json::json!({
        "region": state.config.region,
        "me": me,
        "members": members,
    }))
}

/// Piece tables and parent lists, gzip-compressed for agents that accept it: every download
/// asks several times a second, and on a small edge link these answers took a fifth of what the
/// edge sent. Nothing else is compressed (pieces are sealed, registry bodies pass as stored).
fn scheduler_json() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/tasks/{digest}", get(agent_api::task))
        .route("/api/v1/tasks/{digest}/parents", get(scheduler_api::parents))
        .layer(CompressionLayer::new().gzip(true))
}

fn admin_api() -> Router<Arc<AppState>> {
    use axum::routing::delete;
    Router::new()
        .route("/api/v1/admin/blobs", get(admin::blobs))
        .route("/api/v1/admin/blobs/{digest}", delete(admin::purge_blob))
        .route(
            "/api/v1/admin/pins/{digest}",
            axum::routing::put(admin::pin).delete(admin::pin),
        )
        .route("/api/v1/admin/tags", get(admin::tags))
        .route("/api/v1/admin/tags/{*tag}", delete(admin::purge_tag))
        .route(
            "/api/v1/admin/repositories/{*name}",
            delete(admin::purge_repository),
        )
}

/// A bounded route label for metrics (never the repository or digest).
pub(crate) fn route_of(path: &str) -> &'static str {
    if path == "/v2/" || path == "/v2" {
        "ping"
    } else if path.starts_with("/v2/") && path.contains("/blobs/") {
        "blob"
    } else if path.starts_with("/v2/") && path.contains("/manifests/") {
        "manifest"
    } else if path.starts_with("/api/v1/warm") {
        "warm"
    } else if path.starts_with("/api/v1/admin/") {
        "admin"
    } else if path == "/" || path == "/api/v1/status" {
        "status"
    } else if path.starts_with("/api/v1/tasks/") && (path.contains("/peers/") || path.ends_with("/parents")) {
        "scheduler"
    } else if path.starts_with("/api/v1/tasks/") {
        "task"
    } else if path.starts_with("/pieces/") {
        "piece"
    } else if damselfly_server::ops::is_ops_path(path) {
        damselfly_server::ops::ROUTE
    } else {
        "other"
    }
}
