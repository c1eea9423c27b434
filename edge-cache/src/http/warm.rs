//! The warm API, for the preheater: fetch a blob or manifest into the cache before anyone pulls.
//!
//! `POST /api/v1/warm` starts a blob transfer exactly as a pull would (and returns at once) or
//! fetches a manifest (synchronously: they are small). `GET /api/v1/warm/<digest>` reports
//! where a blob stands. Both require `Authorization: Bearer <warm_token>`.
//!
//! A warm also records the upstream's answer for the credential it used (none = anonymous), so
//! callers with the same access can pull the warmed content even while the origin is down.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use damselfly_core::api::{WarmAnswer, WarmKind, WarmRequest, WarmState};
use damselfly_core::{Digest, Reference, RepositoryName};

use super::bearer::Warmer;
use super::manifests;
use crate::access::Object;
use crate::error::{EdgeError, EdgeResult};
use crate::store::{BlobSource, BlobState};
use crate::upstream::MANIFEST_ACCEPT;

pub(crate) async fn warm(Warmer(state): Warmer, Json(request): Json<WarmRequest>) -> EdgeResult<Response> {
    state.status.warmed(
        format!(
            "{}/{}",
            request.registry.as_deref().unwrap_or(""),
            request.repository
        ),
        matches!(request.kind, WarmKind::Blob),
    );
    let upstream = state.upstreams.select(request.registry.as_deref())?;
    let repo: RepositoryName = request
        .repository
        .parse()
        .map_err(|_| EdgeError::NameInvalid(request.repository.clone()))?;
    let auth = match &request.authorization {
        Some(v) => Some(HeaderValue::from_str(v).map_err(|_| EdgeError::Denied("bad authorization".into()))?),
        None => None,
    };
    let digest: Option<Digest> = match &request.digest {
        Some(d) => Some(d.parse().map_err(|_| EdgeError::DigestInvalid(d.clone()))?),
        None => None,
    };
    match request.kind {
        WarmKind::Blob => {
            let digest =
                digest.ok_or_else(|| EdgeError::DigestInvalid("a blob warm needs a digest".into()))?;
            let allowed = state
                .gate
                .check(&upstream, &repo, Object::Blob(digest), auth.as_ref())
                .await?;
            let status = if state.store.contains(&digest) {
                WarmState::Cached
            } else {
                let source = BlobSource::Registry {
                    upstream: upstream.clone(),
                    repo: repo.clone(),
                    authorization: auth,
                    cluster: state.cluster.clone(),
                    parents: state.parents.clone(),
                    passed: Vec::new(),
                };
                // The handle is dropped at once: the transfer runs on without a reader.
                state.store.open(&digest, source)?;
                WarmState::Ingesting
            };
            tracing::info!(%repo, %digest, ?status, "warm requested");
            let answer = WarmAnswer {
                size: allowed.size,
                ..WarmAnswer::new(status)
            };
            Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
        }
        WarmKind::Manifest => {
            let reference = match (&request.tag, digest) {
                (Some(tag), _) => tag
                    .parse()
                    .map_err(|_| EdgeError::ManifestUnknown(format!("bad tag {tag}")))?,
                (None, Some(d)) => Reference::Digest(d),
                (None, None) => {
                    return Err(EdgeError::ManifestUnknown(
                        "a manifest warm needs a tag or digest".into(),
                    ))
                }
            };
            let mut client_headers = HeaderMap::new();
            for accept in MANIFEST_ACCEPT {
                client_headers.append(http::header::ACCEPT, HeaderValue::from_static(accept));
            }
            if let Some(a) = auth {
                client_headers.insert(http::header::AUTHORIZATION, a);
            }
            let response =
                manifests::serve(&state, &upstream, &repo, &reference, &client_headers, true).await?;
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            tracing::info!(%repo, %reference, "manifest warmed");
            let answer = WarmAnswer {
                digest: header("docker-content-digest"),
                media_type: header("content-type"),
                ..WarmAnswer::new(WarmState::Cached)
            };
            Ok(Json(answer).into_response())
        }
    }
}

pub(crate) async fn status(Warmer(state): Warmer, Path(digest): Path<String>) -> EdgeResult<Response> {
    let digest: Digest = digest
        .parse()
        .map_err(|_| EdgeError::DigestInvalid(digest.clone()))?;
    let answer = match state.store.state(&digest) {
        BlobState::Cached => WarmAnswer::new(WarmState::Cached),
        BlobState::Ingesting => WarmAnswer::new(WarmState::Ingesting),
        BlobState::Failed(reason) => WarmAnswer {
            error: Some(reason),
            ..WarmAnswer::new(WarmState::Failed)
        },
        BlobState::Absent => WarmAnswer::new(WarmState::Absent),
    };
    Ok(Json(answer).into_response())
}
