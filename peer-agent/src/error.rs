//! The agent's error type and its HTTP form (OCI error JSON on the mirror).

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

/// An answer from an edge or the origin that the runtime must see as it is (401 with a
/// challenge, 404).
#[derive(Debug, Clone)]
pub struct PassedReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

const PASSED_HEADERS: [&str; 3] = [
    "www-authenticate",
    "content-type",
    "docker-distribution-api-version",
];

impl PassedReply {
    pub fn from_parts(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let mut kept = HeaderMap::new();
        for name in PASSED_HEADERS {
            for v in headers.get_all(name) {
                kept.append(name, v.clone());
            }
        }
        PassedReply {
            status,
            headers: kept,
            body,
        }
    }
}

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
    #[error("bad request: {0}")]
    BadRequest(String),
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
    /// Whether another source may succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AgentError::Unavailable(_) | AgentError::Busy(_) | AgentError::Internal(_)
        )
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AgentError::Refused(reply) => {
                let mut response = (reply.status, reply.body.clone()).into_response();
                response.headers_mut().extend(reply.headers.clone());
                return response;
            }
            AgentError::Unavailable(_) | AgentError::TransferFailed(_) => {
                (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
            }
            AgentError::BadRequest(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
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
        (status, axum::Json(body)).into_response()
    }
}
