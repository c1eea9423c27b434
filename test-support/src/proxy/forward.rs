//! Request forwarding: one incoming request becomes one upstream request, verbatim.
//!
//! Registries are sensitive to details a typical proxy normalises away: every `Accept` value
//! matters for manifest negotiation, `Authorization` and `WWW-Authenticate` drive the auth
//! dance, and `Content-Length`/`Docker-Content-Digest` must survive HEAD requests. So all
//! end-to-end headers pass in both directions with repeated values intact, bodies stream
//! without buffering, and only hop-by-hop headers (which describe a single connection) are
//! dropped.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};

use super::state::{BodyFaults, Shared};
use super::tap::tap;

/// Response body type served by the proxy.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Connection-scoped headers that must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Everything a request handler needs.
pub(crate) struct Forwarder {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: reqwest::Client,
    /// `http://host:port` of the upstream.
    pub(crate) upstream: String,
}

/// Whether a request is a blob download: a registry blob, or a sealed piece (`/pieces/`) when
/// the proxy stands between agents and an edge. Upload-session paths (`/blobs/uploads/`) are
/// excluded: they carry pushes, not the pull traffic the counters and faults are about.
pub(crate) fn is_blob_get(method: &Method, path: &str) -> bool {
    let blob = path.contains("/blobs/") && !path.contains("/blobs/uploads");
    method == Method::GET && (blob || path.starts_with("/pieces/"))
}

impl Forwarder {
    /// Proxies one request. Never fails at the HTTP layer: upstream errors become 502.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let blob_get = is_blob_get(&parts.method, &path);
        let entry = self
            .shared
            .record(parts.method.clone(), path, parts.uri.query().map(str::to_owned));
        if blob_get {
            self.shared.count_blob_get();
            if let Some(status) = self.shared.take_failure() {
                entry.set_status(status);
                entry.mark_completed();
                return Ok(empty_response(status));
            }
        }

        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut request = self
            .client
            .request(parts.method.clone(), format!("{}{path_and_query}", self.upstream));
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        request = request.headers(headers);
        if !body.is_end_stream() {
            let frames = http_body_util::BodyStream::new(body);
            let data = frames.try_filter_map(|frame: Frame<Bytes>| async move { Ok(frame.into_data().ok()) });
            request = request.body(reqwest::Body::wrap_stream(data));
        }

        let upstream = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!("upstream request failed: {err}");
                entry.set_status(StatusCode::BAD_GATEWAY);
                entry.mark_completed();
                let mut response = Response::new(full(format!("fault proxy: upstream error: {err}\n")));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                return Ok(response);
            }
        };

        let status = upstream.status();
        entry.set_status(status);
        let faults = if blob_get && status.is_success() {
            self.shared.take_body_faults()
        } else {
            BodyFaults::default()
        };
        let mut builder = Response::builder().status(status);
        if let Some(out) = builder.headers_mut() {
            let mut headers = upstream.headers().clone();
            strip_hop_by_hop(&mut headers);
            *out = headers;
        }
        let counter = blob_get.then(|| Arc::clone(&self.shared));
        let expected_len = upstream.content_length();
        let stream = tap(
            upstream.bytes_stream().boxed(),
            expected_len,
            faults,
            entry,
            counter,
        );
        let body = StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync();
        Ok(builder.body(body).unwrap_or_else(|err| {
            let mut response = Response::new(full(format!("fault proxy: bad upstream response: {err}\n")));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }))
    }
}

/// Removes hop-by-hop headers, including any named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn empty_response(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn full(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn blob_gets_exclude_uploads_and_other_methods() {
        assert!(is_blob_get(&Method::GET, "/v2/a/b/blobs/sha256:00"));
        assert!(!is_blob_get(&Method::HEAD, "/v2/a/blobs/sha256:00"));
        assert!(!is_blob_get(&Method::GET, "/v2/a/blobs/uploads/123"));
        assert!(is_blob_get(&Method::GET, "/pieces/sha256:00/3"));
        assert!(!is_blob_get(&Method::GET, "/api/v1/tasks/sha256:00"));
        assert!(!is_blob_get(&Method::GET, "/v2/a/manifests/v1"));
    }

    #[test]
    fn hop_by_hop_headers_are_removed_but_repeats_kept() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT, HeaderValue::from_static("a/one"));
        headers.append(header::ACCEPT, HeaderValue::from_static("a/two"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.get_all(header::ACCEPT).iter().count(), 2);
        assert_eq!(headers.len(), 2, "{headers:?}");
    }
}
