//! The HTTP surface: the OCI registry API (`/v2/`), the agent API (`/api/v1/tasks`,
//! `/pieces`), and operations (`/healthz`, `/readyz`, `/metrics`).

mod agent_api;
mod blobs;
pub(crate) mod manifests;
mod ops;
mod range;
mod registry;
mod scheduler_api;
mod warm;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::metrics::RequestLabels;
use crate::state::AppState;

/// The edge takes no uploads: request bodies beyond this are refused.
const MAX_REQUEST_BODY: usize = 64 * 1024;

pub fn app(state: Arc<AppState>) -> Router {
    let limits = &state.config.limits;
    Router::new()
        .route("/v2/", get(registry::ping))
        .route("/v2", get(registry::ping))
        .route("/v2/{*path}", axum::routing::any(registry::dispatch))
        .merge(scheduler_json())
        .route("/pieces/{digest}/{index}", get(agent_api::piece))
        .route("/api/v1/ticket-key", get(agent_api::ticket_key))
        .route(
            "/api/v1/tasks/{digest}/peers/{host_id}",
            axum::routing::put(scheduler_api::announce).delete(scheduler_api::leave),
        )
        .route("/api/v1/warm", axum::routing::post(warm::warm))
        .route("/api/v1/warm/{digest}", get(warm::status))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(limits.request_timeout_secs),
        ))
        .layer(ConcurrencyLimitLayer::new(limits.max_concurrent_requests))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .with_state(state)
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

/// A bounded route label for metrics (never the repository or digest).
fn route_of(path: &str) -> &'static str {
    if path == "/v2/" || path == "/v2" {
        "ping"
    } else if path.starts_with("/v2/") && path.contains("/blobs/") {
        "blob"
    } else if path.starts_with("/v2/") && path.contains("/manifests/") {
        "manifest"
    } else if path.starts_with("/api/v1/warm") {
        "warm"
    } else if path.starts_with("/api/v1/tasks/") && (path.contains("/peers/") || path.ends_with("/parents")) {
        "scheduler"
    } else if path.starts_with("/api/v1/tasks/") {
        "task"
    } else if path.starts_with("/pieces/") {
        "piece"
    } else if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        "ops"
    } else {
        "other"
    }
}

async fn count_requests(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = route_of(request.uri().path());
    let method = match *request.method() {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        _ => "other",
    };
    let response = next.run(request).await;
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}
