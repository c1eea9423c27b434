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
    let mut builder = Response::builder().status(response.status());
    for name in RELAYED {
        for v in response.headers().get_all(name) {
            builder = builder.header(name, v.clone());
        }
    }
    let stream = response.bytes_stream().inspect_ok(move |chunk| {
        if let Some((metrics, source)) = &count {
            metrics.downloaded(source, chunk.len() as u64);
        }
    });
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
