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
use crate::error::{EdgeError, EdgeResult, PassedReply};
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
    let lookup = Lookup {
        state,
        upstream,
        repo,
        accept: headers.get_all(http::header::ACCEPT).iter().cloned().collect(),
        auth: headers.get(http::header::AUTHORIZATION),
    };
    let manifest = match reference {
        Reference::Digest(digest) => lookup.by_digest(digest).await?,
        Reference::Tag(tag) => lookup.by_tag(tag).await?,
    };
    state
        .metrics
        .served("manifest", if head { 0 } else { manifest.body.len() as u64 });
    Ok(respond(manifest, head))
}

/// One client's request for manifests of one repository: its Accept lines and credentials go
/// upstream with every call made for it.
struct Lookup<'a> {
    state: &'a AppState,
    upstream: &'a Upstream,
    repo: &'a RepositoryName,
    accept: Vec<HeaderValue>,
    auth: Option<&'a HeaderValue>,
}

impl Lookup<'_> {
    async fn by_digest(&self, digest: &Digest) -> EdgeResult<CachedManifest> {
        if let Some(cached) = self.cached(digest)? {
            return self.serve_cached(cached).await;
        }
        self.state.metrics.miss("manifest");
        let fetched = self.fetch(&digest.to_string()).await?;
        if fetched.digest != *digest {
            return Err(EdgeError::UpstreamUnavailable(format!(
                "upstream sent a manifest that is not {digest}"
            )));
        }
        Ok(fetched)
    }

    async fn by_tag(&self, tag: &str) -> EdgeResult<CachedManifest> {
        let (state, repo) = (self.state, self.repo);
        let registry = self.upstream.registry();
        let known = state.store.tag(registry, repo, tag)?;
        let cached = match known.as_ref().map(|entry| entry.digest.parse::<Digest>()) {
            Some(Ok(digest)) => self.cached(&digest)?,
            _ => None,
        };
        let (Some(entry), Some(cached)) = (known, cached) else {
            state.metrics.miss("manifest");
            return self.fetch_tag(tag).await;
        };
        let ttl = Duration::from_secs(state.config.cache.tag_ttl_secs).as_millis() as u64;
        if crate::store::now_millis().saturating_sub(entry.confirmed_at) < ttl {
            return self.serve_cached(cached).await;
        }
        // Stale: ask whether the tag still points where it did.
        let request = self.request(Request::head(format!("/v2/{repo}/manifests/{tag}")));
        match self.upstream.send(request).await {
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
                    let object = Object::Manifest(cached.digest);
                    state.gate.record(self.upstream, repo, object, self.auth, None);
                    state.metrics.hit("manifest");
                    return Ok(cached);
                }
                state.metrics.miss("manifest");
                self.fetch_tag(tag).await
            }
            Ok(r) if !r.status().is_server_error() => {
                let reply = PassedReply::new(r.status(), r.headers(), Bytes::new());
                Err(reply.into())
            }
            // Upstream down: the last known mapping, for callers who were allowed before.
            _ => {
                let served = self.serve_cached(cached).await?;
                tracing::info!(%repo, tag, "upstream unreachable, serving the last known tag mapping");
                Ok(served)
            }
        }
    }

    /// The manifest stored under `digest`, when it is one of the types the client accepts.
    fn cached(&self, digest: &Digest) -> EdgeResult<Option<CachedManifest>> {
        let stored = self.state.store.manifest(digest)?;
        Ok(stored.filter(|m| accepts(&self.accept, &m.media_type)))
    }

    /// A cached manifest, for a caller the upstream lets read it.
    async fn serve_cached(&self, cached: CachedManifest) -> EdgeResult<CachedManifest> {
        let object = Object::Manifest(cached.digest);
        self.state
            .gate
            .check(self.upstream, self.repo, object, self.auth)
            .await?;
        self.state.metrics.hit("manifest");
        Ok(cached)
    }

    async fn fetch_tag(&self, tag: &str) -> EdgeResult<CachedManifest> {
        let manifest = self.fetch(tag).await?;
        let entry = TagEntry {
            digest: manifest.digest.to_string(),
            media_type: manifest.media_type.clone(),
            confirmed_at: crate::store::now_millis(),
        };
        self.state
            .store
            .put_tag(self.upstream.registry(), self.repo, tag, &entry)?;
        Ok(manifest)
    }

    /// `request` with the client's Accept lines and credentials, scoped to the repository.
    fn request<'r>(&'r self, request: Request<'r>) -> Request<'r> {
        Request {
            scope: Some(format!("repository:{}:pull", self.repo)),
            accept: self.accept.clone(),
            authorization: self.auth,
            ..request
        }
    }

    /// GETs a manifest upstream with the client's Accept lines and credentials, verifies its
    /// digest and caches it. Upstream refusals come back to the client unchanged.
    async fn fetch(&self, reference: &str) -> EdgeResult<CachedManifest> {
        let (state, repo) = (self.state, self.repo);
        let request = self.request(Request::get(format!("/v2/{repo}/manifests/{reference}")));
        let response = self.upstream.send(request).await?;
        let status = response.status();
        let upstream_headers = response.headers().clone();
        let body = damselfly_registry::read_bounded(response, state.config.cache.max_manifest_bytes).await?;
        if !status.is_success() {
            return Err(EdgeError::from(PassedReply::new(status, &upstream_headers, body)));
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
        let size = Some(manifest.body.len() as u64);
        let object = Object::Manifest(digest);
        state.gate.record(self.upstream, repo, object, self.auth, size);
        Ok(manifest)
    }
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
