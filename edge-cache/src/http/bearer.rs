//! Bearer tokens of the edge's own APIs (warm, admin): compared in constant time; an API whose
//! token is not configured is switched off, not open.

use axum::http::HeaderMap;
use damselfly_core::constant_time_eq;

use crate::error::{EdgeError, EdgeResult};

/// Whether `headers` carry `Authorization: Bearer <expected>`; `key` names the setting.
pub(crate) fn require(expected: Option<&str>, headers: &HeaderMap, key: &str) -> EdgeResult<()> {
    let Some(expected) = expected else {
        return Err(EdgeError::Denied(format!(
            "this API is disabled on this edge (no {key})"
        )));
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(EdgeError::Unauthorized(format!("a valid {key} is required")))
    }
}
