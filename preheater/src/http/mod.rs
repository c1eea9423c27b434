//! The HTTP surface: webhooks (`/webhooks/distribution`, `/webhooks/harbor`), the job API
//! (`/api/v1/jobs`) and its pages (`/`, `/jobs/<id>`), Harbor's provider API (see
//! [`crate::provider`]), and operations
//! (`/healthz`, `/readyz`, `/metrics`).

mod jobs;
mod pages;
mod webhooks;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Every route; the listener adds the request bounds and metrics (`damselfly_server`).
pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    // Harbor's P2P Preheat ("Dragonfly" provider): /healthy, /oapi/v1/jobs, /_ping, /preheats.
    let provider = crate::provider::routes(state.clone());
    Router::new()
        .route("/webhooks/distribution", post(webhooks::distribution))
        .route("/webhooks/harbor", post(webhooks::harbor))
        .route("/api/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .with_state(state.clone())
        .merge(provider)
        .merge(damselfly_server::ops::routes_of(state))
        .layer(DefaultBodyLimit::max(max_body))
}

/// A bounded route label for metrics (never a job id).
pub(crate) fn route_of(path: &str) -> &'static str {
    if path.starts_with("/webhooks/") {
        "webhook"
    } else if path.starts_with("/api/v1/jobs") {
        "jobs"
    } else if path == "/" || path.starts_with("/jobs/") {
        "page"
    } else if path.starts_with("/oapi/")
        || path.starts_with("/preheats")
        || path == "/healthy"
        || path == "/_ping"
    {
        "provider"
    } else if damselfly_server::ops::is_ops_path(path) {
        damselfly_server::ops::ROUTE
    } else {
        "other"
    }
}

/// The request body, or the error that explains why there is none (413 beyond the limit).
fn body(state: &AppState, body: std::result::Result<Bytes, BytesRejection>) -> Result<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: state.config.limits.max_body_bytes,
            }
        } else {
            Error::BadRequest(rejection.body_text())
        }
    })
}

/// The media type of the request without parameters, lowercased; 415 unless it is one of `accepted`.
fn content_type<'a>(headers: &HeaderMap, accepted: &[&'a str]) -> Result<&'a str> {
    let raw = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    accepted
        .iter()
        .find(|a| **a == media_type)
        .copied()
        .ok_or_else(|| Error::UnsupportedMediaType(format!("{raw} (accepted: {})", accepted.join(", "))))
}

/// Compares the whole `Authorization` value with `expected` in constant time; `None` accepts all.
fn authorize(headers: &HeaderMap, expected: Option<&str>) -> Result<()> {
    let Some(expected) = expected else { return Ok(()) };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if damselfly_core::constant_time_eq(presented, expected.as_bytes()) {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_types_ignore_parameters_and_case() {
        let accepted = ["application/json", "application/cloudevents+json"];
        let h = headers(&[("content-type", "Application/JSON; charset=utf-8")]);
        assert_eq!(content_type(&h, &accepted).unwrap(), "application/json");
        assert!(matches!(
            content_type(&headers(&[("content-type", "text/plain")]), &accepted),
            Err(Error::UnsupportedMediaType(_))
        ));
        assert!(content_type(&headers(&[]), &accepted).is_err());
    }

    #[test]
    fn authorization_compares_the_whole_value() {
        let ok = headers(&[("authorization", "Bearer s3cret")]);
        assert!(authorize(&ok, Some("Bearer s3cret")).is_ok());
        assert!(authorize(&ok, Some("Bearer s3cre")).is_err());
        assert!(authorize(
            &headers(&[("authorization", "bearer s3cret")]),
            Some("Bearer s3cret")
        )
        .is_err());
        assert!(authorize(&headers(&[]), Some("Bearer s3cret")).is_err());
        assert!(authorize(&headers(&[]), None).is_ok());
    }
}
