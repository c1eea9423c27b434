//! The agent's error type and its HTTP form (OCI error JSON on the mirror).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use damselfly_registry::PassedReply;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Boxed: a whole reply would make every `AgentResult` carry its size.
    #[error("refused upstream ({})", .0.status)]
    Refused(Box<PassedReply>),
    #[error("no edge or origin reachable: {0}")]
    Unavailable(String),
    /// The edge answered that its own transfer from the origin failed (bad bytes, gone): no
    /// other edge would do better, only the origin directly.
    #[error("the edge's transfer from the origin failed: {0}")]
    TransferFailed(String),
    /// A peer or edge sent a piece that is not the one in the table (or more bytes than it has).
    #[error("bad piece: {0}")]
    BadPiece(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `size`: the blob's length in bytes.
    #[error("range not satisfiable for {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("authentication required: {0}")]
    Unauthorized(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("busy: {0}")]
    Busy(&'static str),
    #[error("this mirror only serves pulls")]
    Unsupported,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type AgentResult<T> = Result<T, AgentError>;

impl AgentError {
    /// Whether asking again may succeed: the same peer or edge later, or another one. Not when
    /// only the origin itself can do better (a refusal passed on from it, an edge's failed
    /// transfer from it), nor for a request this agent cannot serve or a failure of its own.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AgentError::Unavailable(_) | AgentError::Busy(_) | AgentError::BadPiece(_)
        )
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AgentError::Refused(reply) => {
                let PassedReply {
                    status,
                    headers,
                    body,
                } = (**reply).clone();
                return (status, headers, body).into_response();
            }
            AgentError::Unavailable(_) | AgentError::TransferFailed(_) | AgentError::BadPiece(_) => {
                (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
            }
            AgentError::BadRequest(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            AgentError::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
            AgentError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            AgentError::NotFound(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            AgentError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "TOOMANYREQUESTS"),
            AgentError::Unsupported => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            AgentError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        };
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "request failed");
        }
        let body = json!({"errors": [{"code": code, "message": self.to_string(), "detail": null}]});
        let mut response = (status, axum::Json(body)).into_response();
        if let AgentError::RangeNotSatisfiable { size } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(http::header::CONTENT_RANGE, v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_past_the_end_is_a_416_naming_the_size() {
        let response = AgentError::RangeNotSatisfiable { size: 1000 }.into_response();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()["content-range"], "bytes */1000");
    }

    #[test]
    fn only_failures_another_peer_or_edge_may_not_repeat_are_retryable() {
        let retryable = [
            AgentError::Unavailable("edge down".into()),
            AgentError::Busy("all upload slots in use"),
            AgentError::BadPiece("piece 3 does not match the table".into()),
        ];
        assert!(retryable.iter().all(AgentError::is_retryable));
        let reply = PassedReply::new(
            StatusCode::NOT_FOUND,
            &axum::http::HeaderMap::new(),
            bytes::Bytes::new(),
        );
        let final_ = [
            AgentError::Refused(Box::new(reply)),
            AgentError::TransferFailed("digest mismatch".into()),
            AgentError::Internal("disk full".into()),
            AgentError::BadRequest("invalid digest".into()),
        ];
        assert!(final_.iter().all(|e| !e.is_retryable()));
    }

    #[test]
    fn a_bad_piece_is_a_bad_gateway_not_a_bad_request() {
        let response = AgentError::BadPiece("piece 3".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }
}
