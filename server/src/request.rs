//! What wraps every request of a listener: its metrics, one concurrency limit shared by all
//! its routes, a time limit to the response headers and a body limit.
//!
//! A request that carries a W3C `traceparent` gets an INFO span continuing that trace, whatever
//! the listener's level: work a traced caller started (a preheater's warm, an agent's task
//! request) stays one trace across daemons, and untraced traffic costs no span export.
//!
//! The concurrency limit is a middleware holding one semaphore, not tower's
//! `ConcurrencyLimitLayer` on the router: axum applies a router's layers route by route, which
//! gives each route a semaphore of its own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{HeaderValue, StatusCode};
use http_body::Frame;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Semaphore;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, MakeSpan, TraceLayer};

use crate::metrics::{method_label, RequestLabels, RouteLabels, ServerMetrics};

/// How a listener's requests are bounded and counted.
#[derive(Clone)]
pub(crate) struct RequestLimits {
    pub max_concurrent: usize,
    /// Time to produce the response headers (bodies stream as long as they make progress).
    pub timeout: Duration,
    /// Largest request body; `None` leaves the bound to the handlers' extractors.
    pub body_limit: Option<usize>,
    /// The span level of each request: INFO where request spans parent work worth tracing.
    pub trace_level: tracing::Level,
}

#[derive(Clone)]
struct Counted {
    metrics: ServerMetrics,
    route_of: fn(&str) -> &'static str,
}

/// The app with every per-request bound and the request metrics around it.
pub(crate) fn wrap(
    app: Router,
    limits: &RequestLimits,
    metrics: ServerMetrics,
    route_of: fn(&str) -> &'static str,
) -> Router {
    let app = match limits.body_limit {
        Some(limit) => app.layer(RequestBodyLimitLayer::new(limit)),
        None => app,
    };
    let permits = Arc::new(Semaphore::new(limits.max_concurrent));
    app.layer(axum::middleware::from_fn_with_state(permits, limit_concurrency))
        // Outside the limit, so a request waiting for a permit is bounded by the timeout too.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.timeout,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan(DefaultMakeSpan::new().level(limits.trace_level))),
        )
        .layer(axum::middleware::from_fn_with_state(
            Counted { metrics, route_of },
            count,
        ))
}

/// The listener's span for a request, or an INFO one continuing the caller's trace.
#[derive(Clone)]
struct RequestSpan(DefaultMakeSpan);

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        let Some(traceparent) = request.headers().get("traceparent").and_then(|v| v.to_str().ok()) else {
            return self.0.make_span(request);
        };
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        );
        crate::logging::adopt_parent(&span, Some(traceparent));
        span
    }
}

async fn limit_concurrency(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.acquire_owned().await {
        // Held until the response headers are produced, as tower's limit does.
        Ok(_permit) => next.run(request).await,
        Err(_) => busy(),
    }
}

fn busy() -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn count(State(counted): State<Counted>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = (counted.route_of)(request.uri().path());
    let method = method_label(request.method());
    let response = next.run(request).await;
    counted
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    let histogram = counted
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels { route })
        .clone();
    response.map(|body| {
        Body::new(TimedBody {
            inner: body,
            started,
            histogram: Some(histogram),
        })
    })
}

/// A response body that records the request's duration when it ends (or is dropped: a client
/// that went away is a request that ended too).
struct TimedBody {
    inner: Body,
    started: Instant,
    histogram: Option<Histogram>,
}

impl TimedBody {
    fn record(&mut self) {
        if let Some(h) = self.histogram.take() {
            h.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.record();
    }
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.record();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
