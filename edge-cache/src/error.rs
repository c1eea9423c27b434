//! The edge's one error type, and the one place it becomes an HTTP answer.
//!
//! Registry routes answer OCI error JSON (`{"errors":[{"code","message","detail"}]}`), which
//! every client understands; upstream refusals (401 with a challenge, 403, 404) are handed back
//! as the upstream wrote them so clients fetch tokens from the real realm.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::api::TRANSFER_FAILED_HEADER;
pub use damselfly_registry::PassedReply;
use serde_json::json;

impl From<PassedReply> for EdgeError {
    fn from(reply: PassedReply) -> Self {
        EdgeError::Upstream(Box::new(reply))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("blob unknown to registry")]
    BlobUnknown(String),
    #[error("manifest unknown")]
    ManifestUnknown(String),
    #[error("invalid repository name")]
    NameInvalid(String),
    #[error("invalid digest")]
    DigestInvalid(String),
    #[error("this registry is a read-only cache: {0}")]
    Unsupported(&'static str),
    #[error("authentication required")]
    Unauthorized(String),
    #[error("access denied")]
    Denied(String),
    /// `size`: the whole body's length in bytes (answered as `Content-Range: bytes */<size>`).
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("piece {index} does not exist: the task has {count} pieces")]
    PieceUnknown { index: u64, count: u64 },
    #[error("no upstream registry is configured for {0:?}")]
    UnknownNamespace(String),
    #[error("upstream answered {}", .0.status)]
    Upstream(Box<PassedReply>),
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("blob transfer failed: {0}")]
    IngestFailed(String),
    /// A piece on disk failed authentication: its blob is dropped and fetched again, and the
    /// caller should come back or go elsewhere.
    #[error("piece damaged on disk: {0}")]
    PieceDamaged(String),
    /// Too much queued already: the caller should go elsewhere or come back.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// The blob's pieces need a newer sealed piece format than the caller reads (a blob stored
    /// compressed, asked by an agent from before compression).
    #[error("this blob's pieces are stored in piece format {needed}; the caller reads format {read} only (upgrade the agent, or set compression.mode = \"off\" on the edge)")]
    FormatUnsupported { needed: u32, read: u32 },
    /// A request between edges that has already passed through this edge's region.
    #[error("edge chain loop: {0}")]
    LoopDetected(String),
    /// The caller asks too often: come back in a second.
    #[error("too many requests: {0}")]
    RateLimited(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EdgeError {
    /// Whether the same request may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EdgeError::UpstreamUnavailable(_)
                | EdgeError::IngestFailed(_)
                | EdgeError::PieceDamaged(_)
                | EdgeError::Internal(_)
        ) || matches!(self, EdgeError::Upstream(r) if r.status.is_server_error())
    }

    fn oci_code(&self) -> (StatusCode, &'static str) {
        match self {
            EdgeError::BlobUnknown(_) | EdgeError::PieceUnknown { .. } => {
                (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
            }
            EdgeError::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            EdgeError::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            EdgeError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            EdgeError::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            EdgeError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            EdgeError::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            EdgeError::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
            EdgeError::UnknownNamespace(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            EdgeError::Upstream(r) => (r.status, "UPSTREAM"),
            EdgeError::UpstreamUnavailable(_) | EdgeError::IngestFailed(_) => {
                (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
            }
            EdgeError::Busy(_) | EdgeError::PieceDamaged(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            EdgeError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            // A server error, so that an agent from before compression treats it as an edge that
            // cannot serve, tries the others and then fetches the blob from the origin itself.
            EdgeError::FormatUnsupported { .. } => (StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED"),
            EdgeError::LoopDetected(_) => (StatusCode::LOOP_DETECTED, "UNSUPPORTED"),
            EdgeError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            EdgeError::BlobUnknown(d)
            | EdgeError::ManifestUnknown(d)
            | EdgeError::NameInvalid(d)
            | EdgeError::DigestInvalid(d)
            | EdgeError::Unauthorized(d)
            | EdgeError::Denied(d)
            | EdgeError::UnknownNamespace(d)
            | EdgeError::UpstreamUnavailable(d)
            | EdgeError::IngestFailed(d)
            | EdgeError::RateLimited(d)
            | EdgeError::LoopDetected(d)
            | EdgeError::PieceDamaged(d)
            | EdgeError::Internal(d) => json!(d),
            EdgeError::Unsupported(d) | EdgeError::Busy(d) => json!(d),
            EdgeError::RangeNotSatisfiable { size } => json!({ "size": size }),
            EdgeError::PieceUnknown { index, count } => json!({ "index": index, "count": count }),
            EdgeError::FormatUnsupported { needed, read } => json!({ "needed": needed, "read": read }),
            EdgeError::Upstream(_) => serde_json::Value::Null,
        }
    }
}

impl From<damselfly_registry::Error> for EdgeError {
    fn from(e: damselfly_registry::Error) -> Self {
        use damselfly_registry::Error as Registry;
        match e {
            Registry::Invalid(_) => EdgeError::Internal(e.to_string()),
            // The token endpoint refused the edge's own credentials: no client credential can
            // change that, and the operator must.
            Registry::TokenDenied { .. } => EdgeError::Denied(e.to_string()),
            _ => EdgeError::UpstreamUnavailable(e.with_causes()),
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        if let EdgeError::Upstream(reply) = self {
            let PassedReply {
                status,
                headers,
                body,
            } = *reply;
            return (status, headers, body).into_response();
        }
        let (status, code) = self.oci_code();
        if status.is_server_error() {
            tracing::warn!(error = %self, detail = %self.detail(), "request failed");
        }
        let body = json!({"errors": [{"code": code, "message": self.to_string(), "detail": self.detail()}]});
        let mut response = (status, axum::Json(body)).into_response();
        if let EdgeError::RangeNotSatisfiable { size } = &self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert("content-range", v);
            }
        }
        if let EdgeError::IngestFailed(_) = &self {
            // The edge is healthy; what it fetched was not. Agents stop asking this edge (or
            // another, which would fetch the same) and go to the origin themselves.
            response
                .headers_mut()
                .insert(TRANSFER_FAILED_HEADER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"damselfly-ticket\""),
            );
        }
        response
    }
}

pub type EdgeResult<T> = Result<T, EdgeError>;

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    async fn answer(error: EdgeError) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 64 * 1024).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_piece_past_the_end_is_unknown_not_a_range_error() {
        let (status, headers, body) = answer(EdgeError::PieceUnknown { index: 9, count: 4 }).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers.get("content-range").is_none());
        assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(
            body["errors"][0]["message"],
            "piece 9 does not exist: the task has 4 pieces"
        );
        let (status, headers, _) = answer(EdgeError::RangeNotSatisfiable { size: 1000 }).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(headers["content-range"], "bytes */1000");
    }
}
