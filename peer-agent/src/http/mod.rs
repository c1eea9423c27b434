//! The agent's two HTTP faces: the registry mirror for the local runtime (plus health and
//! metrics), and the upload server other agents fetch pieces from.

mod blob_stream;
mod files;
mod mirror;
mod relayed;
mod upload;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::metrics::RequestLabels;
use crate::state::AgentState;

/// Neither face takes uploads of any size.
const MAX_REQUEST_BODY: usize = 64 * 1024;

pub fn mirror_app(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/v2/", get(mirror::ping))
        .route("/v2", get(mirror::ping))
        .route("/v2/{*path}", axum::routing::any(mirror::dispatch))
        .route("/api/v1/files", get(files::get))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(300),
        ))
        .layer(ConcurrencyLimitLayer::new(512))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .with_state(state)
}

pub fn upload_app(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/pieces/{digest}/{index}", get(upload::piece))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn count_requests(State(state): State<Arc<AgentState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let route = if path.contains("/blobs/") {
        "blob"
    } else if path.contains("/manifests/") {
        "manifest"
    } else if path.starts_with("/api/v1/files") {
        "file"
    } else if path.starts_with("/v2") {
        "ping"
    } else {
        "ops"
    };
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
