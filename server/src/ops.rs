//! The operations routes every daemon serves: `/healthz` (the process answers), `/readyz`
//! (it should be sent work: see [`Readiness`]) and `/metrics` (OpenMetrics text).

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::readiness::Readiness;

/// Renders the daemon's metrics registry.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// The route label of the ops routes, for a daemon's route classifier.
pub const ROUTE: &str = "ops";

pub fn is_ops_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// What the ops routes need of a daemon's state.
pub trait OpsState: Send + Sync + 'static {
    fn readiness(&self) -> &Readiness;
    /// Every metric of the daemon, in the text format.
    fn metrics_text(&self) -> String;
}

/// [`routes`] for a daemon's state.
pub fn routes_of<S: Clone + Send + Sync + 'static>(state: Arc<impl OpsState>) -> Router<S> {
    routes(state.readiness().clone(), Arc::new(move || state.metrics_text()))
}

pub fn routes<S: Clone + Send + Sync + 'static>(readiness: Readiness, metrics: RenderMetrics) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness.check().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
}
