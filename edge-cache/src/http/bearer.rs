//! Bearer tokens of the edge's own APIs (warm, admin): compared in constant time; an API whose
//! token is not configured is switched off, not open.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use damselfly_core::constant_time_eq;

use crate::error::{EdgeError, EdgeResult};
use crate::state::AppState;

/// The edge's state, for a caller that presented the admin API's token (`admin_token`): a
/// handler taking it cannot run for anyone else.
pub(crate) struct Admin(pub Arc<AppState>);

/// The edge's state, for a caller that presented the warm API's token (`warm_token`).
pub(crate) struct Warmer(pub Arc<AppState>);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = EdgeError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> EdgeResult<Self> {
        require(state.config.admin_token.as_deref(), &parts.headers, "admin_token")?;
        Ok(Admin(state.clone()))
    }
}

impl FromRequestParts<Arc<AppState>> for Warmer {
    type Rejection = EdgeError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> EdgeResult<Self> {
        require(state.config.warm_token.as_deref(), &parts.headers, "warm_token")?;
        Ok(Warmer(state.clone()))
    }
}

/// Whether `headers` carry `Authorization: Bearer <expected>`; `key` names the setting.
fn require(expected: Option<&str>, headers: &HeaderMap, key: &str) -> EdgeResult<()> {
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
