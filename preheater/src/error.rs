//! The preheater's one error type, and the one place it becomes an HTTP answer.
//!
//! Every variant knows whether trying again may help: the job runner retries only those, and the
//! webhook receivers answer 5xx only for them (a registry retries a failed delivery forever, so a
//! 4xx must mean "this request will never be accepted").

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body is not what the endpoint accepts (truncated JSON, missing fields).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("missing or wrong Authorization")]
    Unauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    /// A registry named by an event or job that is not in the configuration.
    #[error("registry {0:?} is not configured (add it under [[registries]])")]
    UnknownRegistry(String),
    /// The registry could not be reached or answered 5xx/429.
    #[error("registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry refused or does not have the object (401/403/404, bad manifest).
    #[error("registry refused: {0}")]
    RegistryRefused(String),
    /// An edge could not be reached, answered 5xx/429, or its transfer failed.
    #[error("edge {region} unavailable: {message}")]
    EdgeUnavailable { region: String, message: String },
    /// An edge refused the warm request (4xx): retrying the same request cannot help.
    #[error("edge {region} refused: {message}")]
    EdgeRefused {
        region: String,
        status: u16,
        message: String,
    },
    /// The job store (redb or Redis) failed.
    #[error("job store: {0}")]
    Store(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RegistryUnavailable(_)
                | Error::EdgeUnavailable { .. }
                | Error::Store(_)
                | Error::Internal(_)
        )
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
            Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Error::UnknownRegistry(_) => (StatusCode::BAD_REQUEST, "UNKNOWN_REGISTRY"),
            Error::RegistryUnavailable(_) | Error::EdgeUnavailable { .. } => {
                (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
            }
            Error::RegistryRefused(_) | Error::EdgeRefused { .. } => (StatusCode::BAD_GATEWAY, "REFUSED"),
            Error::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

impl From<damselfly_registry::Error> for Error {
    fn from(e: damselfly_registry::Error) -> Self {
        match e {
            damselfly_registry::Error::Invalid(_) => Error::Internal(e.to_string()),
            e if e.is_retryable() => Error::RegistryUnavailable(e.with_causes()),
            e => Error::RegistryRefused(e.with_causes()),
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Store(format!("redis: {e}"))
    }
}

/// Answers `{"error": {"code": "...", "message": "..."}}` with the variant's status.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut response = (
            status,
            axum::Json(json!({"error": {"code": code, "message": self.to_string()}})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                http::HeaderValue::from_static("Bearer realm=\"damselfly-preheater\""),
            );
        }
        response
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_variants_are_the_transient_ones() {
        assert!(Error::RegistryUnavailable("x".into()).is_retryable());
        assert!(Error::EdgeUnavailable {
            region: "eu".into(),
            message: "503".into()
        }
        .is_retryable());
        assert!(!Error::RegistryRefused("404".into()).is_retryable());
        assert!(!Error::EdgeRefused {
            region: "eu".into(),
            status: 401,
            message: "401".into()
        }
        .is_retryable());
        assert!(!Error::BadRequest("x".into()).is_retryable());
    }

    #[test]
    fn registry_errors_keep_their_retryability() {
        let status = |status| damselfly_registry::Error::Status {
            status,
            message: String::new(),
        };
        let busy = Error::from(status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(matches!(busy, Error::RegistryUnavailable(_)) && busy.is_retryable());
        let missing = Error::from(status(StatusCode::NOT_FOUND));
        assert!(matches!(missing, Error::RegistryRefused(_)) && !missing.is_retryable());
    }

    #[test]
    fn errors_become_json_with_their_status() {
        let r = Error::PayloadTooLarge { limit: 1 }.into_response();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = Error::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(
            Error::UnsupportedMediaType("text/plain".into())
                .into_response()
                .status(),
            415
        );
    }
}
