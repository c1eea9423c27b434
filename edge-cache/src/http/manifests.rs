//! Manifests: cached under their digest forever, tags revalidated after `tag_ttl_secs`.
//!
//! A tag hit within the TTL is served from disk (after the access check). A stale tag is
//! revalidated with a `HEAD` (digest compare) before the cached bytes are reused; a changed tag
//! is fetched again. With the upstream unreachable, the last known mapping is served.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use damselfly_core::{Digest, Reference, RepositoryName};
use damselfly_registry::Request;

use crate::access::Object;
use crate::error::{EdgeError, EdgeResult, UpstreamReply};
use crate::state::AppState;
use crate::store::index::TagEntry;
use crate::store::CachedManifest;
use crate::upstream::Upstream;

pub(crate) async fn serve(
    state: &AppState,
    upstream: &Upstream,
    repo: &RepositoryName,
    reference: &Reference,
    headers: &HeaderMap,
    head: bool,
) -> EdgeResult<Response> {
    let accept: Vec<HeaderValue> = headers.get_all(http::header::ACCEPT).iter().cloned().collect();
    let auth = headers.get(http::header::AUTHORIZATION);
    let manifest = match reference {
        Reference::Digest(digest) => by_digest(state, upstream, repo, digest, &accept, auth).await?,
        Reference::Tag(tag) => by_tag(state, upstream, repo, tag, &accept, auth).await?,
    };
    state
        .metrics
        .served("manifest", if head { 0 } else { manifest.body.len() as u64 });
    Ok(respond(manifest, head))
}

async fn by_digest(
    state: &AppState,
    upstream: &Upstream,
    repo: &RepositoryName,
    digest: &Digest,
    accept: &[HeaderValue],
    auth: Option<&HeaderValue>,
) -> EdgeResult<CachedManifest> {
    if let Some(cached) = state
        .store
        .manifest(digest)?
        .filter(|m| accepts(accept, &m.media_type))
    {
        state
            .gate
            .check(upstream, repo, Object::Manifest(*digest), auth)
            .await?;
        state.metrics.hit("manifest");
        return Ok(cached);
    }
    state.metrics.miss("manifest");
    let fetched = fetch(state, upstream, repo, &digest.to_string(), accept, auth).await?;
    if fetched.digest != *digest {
        return Err(EdgeError::UpstreamUnavailable(format!(
            "upstream sent a manifest that is not {digest}"
        )));
    }
    Ok(fetched)
}

async fn by_tag(
    state: &AppState,
    upstream: &Upstream,
    repo: &RepositoryName,
    tag: &str,
    accept: &[HeaderValue],
    auth: Option<&HeaderValue>,
) -> EdgeResult<CachedManifest> {
    let registry = upstream.registry();
    let known = state.store.tag(registry, repo, tag)?;
    let cached = match &known {
        Some(entry) => match entry.digest.parse::<Digest>() {
            Ok(d) => state
                .store
                .manifest(&d)?
                .filter(|m| accepts(accept, &m.media_type)),
            Err(_) => None,
        },
        None => None,
    };
    let (Some(entry), Some(cached)) = (known, cached) else {
        state.metrics.miss("manifest");
        return fetch_tag(state, upstream, repo, tag, accept, auth).await;
    };
    let ttl = Duration::from_secs(state.config.cache.tag_ttl_secs).as_millis() as u64;
    if crate::store::now_millis().saturating_sub(entry.confirmed_at) < ttl {
        state
            .gate
            .check(upstream, repo, Object::Manifest(cached.digest), auth)
            .await?;
        state.metrics.hit("manifest");
        return Ok(cached);
    }
    // Stale: ask whether the tag still points where it did.
    let request = Request {
        scope: Some(format!("repository:{repo}:pull")),
        accept: accept.to_vec(),
        authorization: auth,
        ..Request::head(format!("/v2/{repo}/manifests/{tag}"))
    };
    match upstream.send(request).await {
        Ok(r) if r.status().is_success() => {
            let current = r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok());
            if current == Some(entry.digest.as_str()) {
                let refreshed = TagEntry {
                    confirmed_at: crate::store::now_millis(),
                    ..entry
                };
                state.store.put_tag(registry, repo, tag, &refreshed)?;
                state
                    .gate
                    .record(upstream, repo, Object::Manifest(cached.digest), auth, None);
                state.metrics.hit("manifest");
                return Ok(cached);
            }
            state.metrics.miss("manifest");
            fetch_tag(state, upstream, repo, tag, accept, auth).await
        }
        Ok(r) if !r.status().is_server_error() => {
            let reply = UpstreamReply::new(r.status(), r.headers(), Bytes::new());
            Err(reply.into())
        }
        // Upstream down: the last known mapping, for callers who were allowed before.
        _ => {
            state
                .gate
                .check(upstream, repo, Object::Manifest(cached.digest), auth)
                .await?;
            tracing::info!(%repo, tag, "upstream unreachable, serving the last known tag mapping");
            state.metrics.hit("manifest");
            Ok(cached)
        }
    }
}

async fn fetch_tag(
    state: &AppState,
    upstream: &Upstream,
    repo: &RepositoryName,
    tag: &str,
    accept: &[HeaderValue],
    auth: Option<&HeaderValue>,
) -> EdgeResult<CachedManifest> {
    let manifest = fetch(state, upstream, repo, tag, accept, auth).await?;
    let entry = TagEntry {
        digest: manifest.digest.to_string(),
        media_type: manifest.media_type.clone(),
        confirmed_at: crate::store::now_millis(),
    };
    state.store.put_tag(upstream.registry(), repo, tag, &entry)?;
    Ok(manifest)
}

/// GETs a manifest upstream with the client's Accept lines and credentials, verifies its
/// digest and caches it. Upstream refusals come back to the client unchanged.
async fn fetch(
    state: &AppState,
    upstream: &Upstream,
    repo: &RepositoryName,
    reference: &str,
    accept: &[HeaderValue],
    auth: Option<&HeaderValue>,
) -> EdgeResult<CachedManifest> {
    let request = Request {
        scope: Some(format!("repository:{repo}:pull")),
        accept: accept.to_vec(),
        authorization: auth,
        ..Request::get(format!("/v2/{repo}/manifests/{reference}"))
    };
    let response = upstream.send(request).await?;
    let status = response.status();
    let upstream_headers = response.headers().clone();
    let body = damselfly_registry::read_bounded(response, state.config.cache.max_manifest_bytes).await?;
    if !status.is_success() {
        return Err(EdgeError::from(UpstreamReply::new(
            status,
            &upstream_headers,
            body,
        )));
    }
    let digest = Digest::of(&body);
    if let Some(claimed) = upstream_headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if claimed.starts_with("sha256:") && claimed != digest.to_string() {
            return Err(EdgeError::UpstreamUnavailable(format!(
                "manifest body is {digest}, upstream claimed {claimed}"
            )));
        }
    }
    let media_type = damselfly_registry::content_type(&upstream_headers)
        .or_else(|| damselfly_registry::media_type_in_body(&body))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    let manifest = CachedManifest {
        digest,
        media_type,
        body,
    };
    state.store.put_manifest(&manifest)?;
    state.gate.record(
        upstream,
        repo,
        Object::Manifest(digest),
        auth,
        Some(manifest.body.len() as u64),
    );
    Ok(manifest)
}

/// Whether a client's Accept lines admit `media_type` (no Accept at all admits anything).
fn accepts(accept: &[HeaderValue], media_type: &str) -> bool {
    let mut any = false;
    for line in accept {
        let Ok(line) = line.to_str() else { continue };
        for item in line.split(',') {
            any = true;
            let item = item.split(';').next().unwrap_or("").trim();
            if item == "*/*" || item.eq_ignore_ascii_case(media_type) {
                return true;
            }
        }
    }
    !any
}

fn respond(manifest: CachedManifest, head: bool) -> Response {
    let len = manifest.body.len();
    let body = if head { Bytes::new() } else { manifest.body };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&manifest.media_type) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&manifest.digest.to_string()) {
        h.insert("docker-content-digest", v.clone());
        h.insert(http::header::ETAG, v);
    }
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matching_handles_lists_params_and_wildcards() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        assert!(accepts(&[], oci));
        assert!(accepts(
            &[HeaderValue::from_static(
                "application/vnd.oci.image.manifest.v1+json"
            )],
            oci
        ));
        assert!(accepts(
            &[HeaderValue::from_static(
                "text/x, application/vnd.oci.image.manifest.v1+json; q=0.5"
            )],
            oci
        ));
        assert!(accepts(&[HeaderValue::from_static("*/*")], oci));
        assert!(!accepts(
            &[HeaderValue::from_static(
                "application/vnd.docker.distribution.manifest.v2+json"
            )],
            oci
        ));
    }
}
