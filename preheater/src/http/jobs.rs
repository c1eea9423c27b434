//! The job API.
//!
//! - `POST /api/v1/jobs` `{"image": "host[:port]/repo[:tag][@digest]", "platforms"?, "regions"?}`
//!   → `201` with the job.
//! - `GET /api/v1/jobs/<id>` → the job: `state` (`pending|running|succeeded|failed`), `error`, and
//!   per item (blob or manifest) per region `{state, attempts, error}`.
//! - `GET /api/v1/jobs?limit=N` → `{"jobs": [...]}`, newest first.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use damselfly_core::{Reference, RepositoryName};
use serde::Deserialize;
use serde_json::json;

use super::{authorize, body, content_type};
use crate::error::{Error, Result};
use crate::events::Intent;
use crate::job::{now_millis, Job, JobSpec};
use crate::metrics::SourceLabels;
use crate::platform::PlatformFilter;
use crate::state::AppState;

const MAX_LIST: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub image: String,
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub regions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub limit: Option<usize>,
}

fn check_token(state: &AppState, headers: &HeaderMap) -> Result<()> {
    let expected = state.config.api_token.as_ref().map(|t| format!("Bearer {t}"));
    authorize(headers, expected.as_deref())
}

/// `host[:port]/repo[:tag][@digest]` → (host, repository, reference); the digest wins over a tag.
pub fn parse_image(image: &str) -> Result<(String, RepositoryName, Reference)> {
    let bad = |why: String| Error::BadRequest(format!("image {image:?}: {why}"));
    let (host, rest) = image
        .split_once('/')
        .ok_or_else(|| bad("expected host[:port]/repository[:tag][@digest]".into()))?;
    if host.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(bad(
            "name the registry host explicitly (e.g. registry.example.com/app:v1)".into(),
        ));
    }
    let (name, digest) = match rest.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (rest, None),
    };
    let (repository, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (name, None),
    };
    let repository: RepositoryName = repository.parse().map_err(|e| bad(format!("{e}")))?;
    let reference = match (digest, tag) {
        (Some(d), _) => Reference::Digest(d.parse().map_err(|e| bad(format!("{e}")))?),
        (None, Some(t)) => t.parse().map_err(|e| bad(format!("{e}")))?,
        (None, None) => Reference::Tag("latest".into()),
    };
    Ok((host.to_string(), repository, reference))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    payload: std::result::Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    check_token(&state, &headers)?;
    content_type(&headers, &["application/json"])?;
    let payload = body(&state, payload)?;
    let request: CreateJob =
        serde_json::from_slice(&payload).map_err(|e| Error::BadRequest(format!("not a job request: {e}")))?;
    let (registry, repository, reference) = parse_image(&request.image)?;
    state.registries.get(&registry)?;
    PlatformFilter::parse(&request.platforms).map_err(Error::BadRequest)?;
    let configured = state.warmer.regions();
    let regions = match request.regions {
        Some(r) if r.is_empty() => return Err(Error::BadRequest("regions must not be empty".into())),
        Some(r) => r,
        None => configured.clone(),
    };
    if regions.is_empty() {
        return Err(Error::BadRequest("no edges are configured".into()));
    }
    if let Some(unknown) = regions.iter().find(|r| !configured.contains(r)) {
        return Err(Error::BadRequest(format!(
            "unknown region {unknown:?} (configured: {})",
            configured.join(", ")
        )));
    }
    let intent = Intent::Image {
        registry,
        repository,
        reference,
        digest: None,
    };
    let job = Job::new(
        JobSpec::from_intent("api", &intent, request.platforms, regions),
        now_millis(),
    );
    state.store.admit(None, std::slice::from_ref(&job)).await?;
    state
        .metrics
        .jobs_created
        .get_or_create(&SourceLabels { source: "api" })
        .inc();
    tracing::info!(job = %job.id, image = %request.image, "job queued");
    let location = format!("/api/v1/jobs/{}", job.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        Json(job),
    ))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    check_token(&state, &headers)?;
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotFound(format!("job {id:?}")));
    }
    match state.store.get(&id).await? {
        Some(job) => Ok(Json(job.redacted())),
        None => Err(Error::NotFound(format!("job {id}"))),
    }
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse> {
    check_token(&state, &headers)?;
    let Query(query) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIST);
    let jobs: Vec<Job> = state
        .store
        .recent(limit)
        .await?
        .into_iter()
        .map(Job::redacted)
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_parse() {
        let (h, r, t) = parse_image("127.0.0.1:5000/demo/app:v1").unwrap();
        assert_eq!(
            (h.as_str(), r.as_str(), t.to_string().as_str()),
            ("127.0.0.1:5000", "demo/app", "v1")
        );
        let d = "sha256:03cc45ff66629019e7534c87ad763aae88abd5ba9beffd50f0c88b30537308d5";
        let (_, _, t) = parse_image(&format!("registry.example.com/a/b:v1@{d}")).unwrap();
        assert_eq!(t.to_string(), d);
        let (_, _, t) = parse_image("localhost/a").unwrap();
        assert_eq!(t.to_string(), "latest");
        for bad in [
            "nginx",
            "library/nginx:1",
            "r.example.com/",
            "r.example.com/A:b",
            "r:1/a@sha256:xyz",
            "r:1/a:b c",
        ] {
            assert!(parse_image(bad).is_err(), "{bad}");
        }
    }
}
