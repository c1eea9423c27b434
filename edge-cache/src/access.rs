//! Who may read what: the upstream decides, the edge remembers.
//!
//! Before the edge hands out a cached manifest, blob, piece table or piece, the caller must
//! show that the upstream lets them read that object in that repository. The edge asks the
//! upstream (`HEAD` with the caller's credentials) and remembers a "yes" for the credential's
//! lifetime (capped by `access.ttl_secs`). A "no" is never cached: the upstream's own answer,
//! challenge included, goes back to the caller. While the upstream is unreachable, an earlier
//! "yes" is honoured for `stale_if_error_secs`, so cached content survives an origin outage.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use damselfly_core::{Digest, RepositoryName};
use damselfly_registry::{Request, MANIFEST_ACCEPT};
use http::{HeaderValue, StatusCode};

use crate::error::{EdgeError, EdgeResult, PassedReply};
use crate::upstream::Upstream;

/// What is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Object {
    Blob(Digest),
    Manifest(Digest),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AccessKey {
    upstream: String,
    repo: RepositoryName,
    object: Object,
    credential: [u8; 32],
}

#[derive(Clone, Copy, Debug)]
struct Grant {
    fresh_until: Instant,
    stale_until: Instant,
    size: Option<u64>,
}

/// The upstream said yes; for blobs, with the size it reported.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Allowed {
    pub(crate) size: Option<u64>,
}

pub struct AccessGate {
    ttl: Duration,
    stale_if_error: Duration,
    /// Keyed by what callers send (repository, digest, credential): bounded in count, and an
    /// entry goes once it is past use (`stale_if_error`), so no stream of distinct requests can
    /// grow it.
    grants: moka::sync::Cache<AccessKey, Grant>,
}

/// Grants kept at most (~200 bytes each): the least used go first beyond this.
const MAX_GRANTS: u64 = 100_000;

impl AccessGate {
    pub(crate) fn new(ttl: Duration, stale_if_error: Duration) -> Self {
        Self::with_capacity(ttl, stale_if_error, MAX_GRANTS)
    }

    fn with_capacity(ttl: Duration, stale_if_error: Duration, max_grants: u64) -> Self {
        AccessGate {
            ttl,
            stale_if_error,
            grants: moka::sync::Cache::builder()
                .max_capacity(max_grants)
                .time_to_live(stale_if_error.max(ttl))
                .build(),
        }
    }

    fn key(
        upstream: &Upstream,
        repo: &RepositoryName,
        object: Object,
        auth: Option<&HeaderValue>,
    ) -> AccessKey {
        let credential = auth
            .map(|a| *Digest::of(a.as_bytes()).as_bytes())
            .unwrap_or([0; 32]);
        AccessKey {
            upstream: upstream.registry().to_string(),
            repo: repo.clone(),
            object,
            credential,
        }
    }

    /// Checks that `auth` may read `object` in `repo` upstream.
    pub(crate) async fn check(
        &self,
        upstream: &Upstream,
        repo: &RepositoryName,
        object: Object,
        auth: Option<&HeaderValue>,
    ) -> EdgeResult<Allowed> {
        let key = Self::key(upstream, repo, object, auth);
        let now = Instant::now();
        let previous = self.grants.get(&key);
        if let Some(grant) = previous.filter(|g| g.fresh_until > now) {
            return Ok(Allowed { size: grant.size });
        }
        let (path, accept) = match object {
            Object::Blob(d) => (format!("/v2/{repo}/blobs/{d}"), vec![]),
            Object::Manifest(d) => (
                format!("/v2/{repo}/manifests/{d}"),
                MANIFEST_ACCEPT
                    .iter()
                    .map(|a| HeaderValue::from_static(a))
                    .collect(),
            ),
        };
        let request = Request {
            scope: Some(format!("repository:{repo}:pull")),
            accept,
            authorization: auth,
            ..Request::head(path)
        };
        let outcome = upstream.send(request).await;
        let unavailable = match &outcome {
            Err(e) => Some(e.to_string()),
            Ok(r) if r.status().is_server_error() => Some(format!("upstream answered {}", r.status())),
            Ok(_) => None,
        };
        if let Some(reason) = unavailable {
            return match previous.filter(|g| g.stale_until > now) {
                Some(grant) => {
                    tracing::info!(%repo, ?object, reason, "upstream unreachable, honouring an earlier grant");
                    Ok(Allowed { size: grant.size })
                }
                None => Err(EdgeError::UpstreamUnavailable(reason)),
            };
        }
        let response = outcome?;
        let status = response.status();
        if status.is_success() {
            let size = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            self.remember(key, auth, size);
            return Ok(Allowed { size });
        }
        Err(refusal(status, response.headers(), object))
    }

    /// Records a grant learned from a successful upstream GET (no extra HEAD needed then).
    pub(crate) fn record(
        &self,
        upstream: &Upstream,
        repo: &RepositoryName,
        object: Object,
        auth: Option<&HeaderValue>,
        size: Option<u64>,
    ) {
        self.remember(Self::key(upstream, repo, object, auth), auth, size);
    }

    fn remember(&self, key: AccessKey, auth: Option<&HeaderValue>, size: Option<u64>) {
        let now = Instant::now();
        let ttl = auth
            .and_then(bearer_lifetime)
            .map_or(self.ttl, |left| left.min(self.ttl));
        let grant = Grant {
            fresh_until: now + ttl,
            stale_until: now + self.stale_if_error,
            size,
        };
        self.grants.insert(key, grant);
    }
}

/// An upstream refusal in OCI form. HEAD answers carry no body, so one is written here; the
/// challenge header is kept so the client can authenticate against the real realm.
fn refusal(status: StatusCode, headers: &http::HeaderMap, object: Object) -> EdgeError {
    let (code, message) = match (status, object) {
        (StatusCode::NOT_FOUND, Object::Blob(_)) => ("BLOB_UNKNOWN", "blob unknown to registry"),
        (StatusCode::NOT_FOUND, Object::Manifest(_)) => ("MANIFEST_UNKNOWN", "manifest unknown"),
        (StatusCode::UNAUTHORIZED, _) => ("UNAUTHORIZED", "authentication required"),
        (StatusCode::FORBIDDEN, _) => ("DENIED", "requested access to the resource is denied"),
        _ => ("UNKNOWN", "upstream refused the request"),
    };
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    let mut reply = PassedReply::new(status, headers, Bytes::from(body.to_string()));
    reply
        .headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    reply.into()
}

/// Time left on a JWT bearer token (its `exp` claim), when the credential is one. The signature
/// is not checked: the upstream checked it, and this only shortens how long its "yes" is reused.
fn bearer_lifetime(auth: &HeaderValue) -> Option<Duration> {
    let token = auth.to_str().ok()?.strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<serde_json::Value>(&json)
        .ok()?
        .get("exp")?
        .as_u64()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_expiry_caps_the_grant() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", now + 30));
        let header = HeaderValue::from_str(&format!("Bearer eyJhbGciOiJSUzI1NiJ9.{claims}.sig")).unwrap();
        let left = bearer_lifetime(&header).unwrap();
        assert!(left <= Duration::from_secs(30) && left >= Duration::from_secs(28));
        assert_eq!(bearer_lifetime(&HeaderValue::from_static("Basic dTpw")), None);
        assert_eq!(bearer_lifetime(&HeaderValue::from_static("Bearer opaque")), None);
    }

    #[test]
    fn grants_stay_bounded_however_many_distinct_requests_arrive() {
        let day = Duration::from_secs(86_400);
        let gate = AccessGate::with_capacity(day, day, 64);
        let repo: RepositoryName = "a/b".parse().unwrap();
        for n in 0..5_000u32 {
            let key = AccessKey {
                upstream: "registry:5000".into(),
                repo: repo.clone(),
                object: Object::Blob(Digest::of(&n.to_be_bytes())),
                credential: [0; 32],
            };
            gate.remember(key, None, Some(1));
        }
        gate.grants.run_pending_tasks();
        assert!(
            gate.grants.entry_count() <= 64,
            "{} grants kept",
            gate.grants.entry_count()
        );
    }
}
