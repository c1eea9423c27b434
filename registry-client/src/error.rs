//! What can go wrong talking to a registry, and whether trying again may help.

use damselfly_core::Digest;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL, path or credential the client was given cannot be used: a configuration or
    /// programming error.
    #[error("{0}")]
    Invalid(String),
    /// The registry or its token endpoint could not be reached, or did not answer in time.
    #[error("{authority}: {source}")]
    Unreachable {
        authority: String,
        #[source]
        source: reqwest::Error,
    },
    /// A response body broke off or stalled while being read.
    #[error("reading the body: {0}")]
    BodyCut(#[source] reqwest::Error),
    /// The registry's challenge names no token endpoint that can be asked.
    #[error("unusable challenge: {0}")]
    BadChallenge(String),
    /// The token endpoint refused this client's credentials (or anonymous access).
    #[error("token endpoint answered {status}")]
    TokenDenied { status: StatusCode },
    /// The token endpoint's answer could not be read as a token answer.
    #[error("token body: {0}")]
    TokenUnreadable(#[source] reqwest::Error),
    /// The token endpoint answered without a token that can be sent.
    #[error("token endpoint answered {0}")]
    TokenUnusable(&'static str),
    /// The registry answered something other than success for an object this client reads itself.
    #[error("{message}")]
    Status { status: StatusCode, message: String },
    #[error("manifest larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("manifest {reference} hashes to {actual}, not {expected}")]
    DigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("manifest {0} has no known media type")]
    UnknownMediaType(String),
}

impl Error {
    /// The message with every cause under it (`…: invalid peer certificate: UnknownIssuer`):
    /// reqwest's own message names only the request, not why it failed.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            let next = e.to_string();
            if !text.contains(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            cause = e.source();
        }
        text
    }

    /// Whether the same request may succeed if tried again later: the network failed, or the
    /// registry said it is overloaded or broken (5xx, 429). Refusals and bad content stay as they are.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::BodyCut(_) | Error::TokenUnreadable(_) => true,
            Error::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Error::Invalid(_)
            | Error::BadChallenge(_)
            | Error::TokenDenied { .. }
            | Error::TokenUnusable(_)
            | Error::TooLarge { .. }
            | Error::DigestMismatch { .. }
            | Error::UnknownMediaType(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        let status = |status| Error::Status {
            status,
            message: String::new(),
        };
        assert!(status(StatusCode::SERVICE_UNAVAILABLE).is_retryable());
        assert!(status(StatusCode::TOO_MANY_REQUESTS).is_retryable());
        assert!(!status(StatusCode::NOT_FOUND).is_retryable());
        assert!(!status(StatusCode::UNAUTHORIZED).is_retryable());
        assert!(!Error::TokenDenied {
            status: StatusCode::UNAUTHORIZED
        }
        .is_retryable());
        assert!(!Error::TooLarge { limit: 1 }.is_retryable());
        assert!(!Error::Invalid("bad url".into()).is_retryable());
    }
}
