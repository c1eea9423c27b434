//! A registry's refusal as the caller must see it.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// A registry's answer that a proxy hands to its client as it is (401 with a challenge, 403,
/// 404), so that the client fetches tokens from the real realm and sees the real reason.
#[derive(Debug, Clone)]
pub struct PassedReply {
    pub status: StatusCode,
    /// Only the headers worth passing on ([`PASSED_HEADERS`]).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Headers of a registry's error answer worth passing to the client.
const PASSED_HEADERS: [&str; 3] = [
    "www-authenticate",
    "content-type",
    "docker-distribution-api-version",
];

impl PassedReply {
    /// The answer, keeping of `headers` only those worth passing on.
    pub fn new(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
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
