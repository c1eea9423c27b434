//! A response from an edge or the origin, handed to the runtime as ours.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use futures::TryStreamExt;

use crate::metrics::Metrics;

/// Response headers relayed to the runtime.
const RELAYED: [&str; 10] = [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "docker-content-digest",
    "docker-distribution-api-version",
    "www-authenticate",
    "etag",
    "location",
    // Paging of tag lists.
    "link",
];

/// Turns a relayed response into ours, body streamed (and counted as `source`'s bytes when it
/// is a blob).
pub(crate) fn relayed(response: reqwest::Response, count: Option<(Arc<Metrics>, &'static str)>) -> Response {
    let builder = builder(response.status(), response.headers());
    let stream = response.bytes_stream().inspect_ok(move |chunk| {
        if let Some((metrics, source)) = &count {
            metrics.downloaded(source, chunk.len() as u64);
        }
    });
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A relayed answer whose body was read whole.
pub(crate) fn relayed_whole(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: bytes::Bytes,
) -> Response {
    builder(status, headers)
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn builder(status: http::StatusCode, headers: &http::HeaderMap) -> http::response::Builder {
    let mut builder = Response::builder().status(status);
    for name in RELAYED {
        for v in headers.get_all(name) {
            builder = builder.header(name, v.clone());
        }
    }
    builder
}
