//! Reading manifests from the configured registries: credentials, the Bearer token dance, and
//! digest verification.
//!
//! A small client on the workspace's reqwest/rustls stack rather than `oci-client`: its current
//! release needs reqwest 0.13 and aws-lc-rs, a second TLS stack for the few GETs done here
//! (the edge resolves upstream the same way).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use damselfly_core::{Challenge, Digest, Reference, RepositoryName, TokenAnswer};
use http::StatusCode;

use crate::config::{Config, RegistryConfig};
use crate::error::{Error, Result};

/// Every modern manifest type; a registry answers 404 for types missing from `Accept`.
pub const MANIFEST_ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Largest manifest read; real ones are a few KiB.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The registries events and jobs may name, by host.
pub struct Registries {
    by_host: HashMap<String, Arc<RegistryClient>>,
}

impl Registries {
    pub fn new(config: &Config) -> Result<Self> {
        let timeout = Duration::from_secs(config.warm.request_timeout_secs);
        let mut by_host = HashMap::new();
        for r in &config.registries {
            by_host.insert(r.host.clone(), Arc::new(RegistryClient::new(r, timeout)?));
        }
        Ok(Registries { by_host })
    }

    pub fn get(&self, host: &str) -> Result<Arc<RegistryClient>> {
        self.by_host
            .get(host)
            .cloned()
            .ok_or_else(|| Error::UnknownRegistry(host.to_string()))
    }
}

/// A manifest as fetched, verified against its digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

pub struct RegistryClient {
    config: RegistryConfig,
    base: reqwest::Url,
    http: reqwest::Client,
    timeout: Duration,
    /// Bearer tokens by scope, until their expiry.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl RegistryClient {
    pub fn new(config: &RegistryConfig, timeout: Duration) -> Result<Self> {
        let base = reqwest::Url::parse(&config.url)
            .map_err(|e| Error::Internal(format!("bad registry url {}: {e}", config.url)))?;
        let http = reqwest::Client::builder()
            // Manifests are hashed as the registry sends them.
            .no_gzip()
            .connect_timeout(Duration::from_secs(5))
            .danger_accept_invalid_certs(config.insecure_skip_verify)
            .user_agent(concat!("damselfly-preheater/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        Ok(RegistryClient {
            config: config.clone(),
            base,
            http,
            timeout,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn host(&self) -> &str {
        &self.config.host
    }

    /// What to send as `registry` in edge warm requests (`None`: the edge's default upstream).
    pub fn edge_registry(&self) -> Option<String> {
        if self.config.edge_default_upstream {
            None
        } else {
            Some(
                self.config
                    .edge_registry
                    .clone()
                    .unwrap_or_else(|| self.config.host.clone()),
            )
        }
    }

    /// The credential the edges should use upstream, when the operator chose to forward ours.
    pub fn edge_authorization(&self) -> Option<String> {
        if self.config.forward_credentials {
            self.basic()
        } else {
            None
        }
    }

    fn basic(&self) -> Option<String> {
        let (user, pass) = (self.config.username.as_ref()?, self.config.password.as_ref()?);
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Some(format!("Basic {encoded}"))
    }

    /// `GET /v2/<repo>/manifests/<reference>` with every modern type in `Accept`. A `presented`
    /// credential (Harbor's pull-only token) is sent as it is, instead of ours and without the
    /// token dance: it is the only credential the requester vouches for.
    pub async fn manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
        presented: Option<&str>,
    ) -> Result<Manifest> {
        let path = format!("v2/{repository}/manifests/{reference}");
        let url = self
            .base
            .join(&path)
            .map_err(|e| Error::Internal(format!("bad manifest path {path}: {e}")))?;
        let scope = format!("repository:{repository}:pull");
        let mut auth = match presented {
            Some(credential) => Some(credential.to_string()),
            None => self.cached_token(&scope),
        };
        let mut retried = presented.is_some();
        let response = loop {
            let mut request = self.http.get(url.clone()).timeout(self.timeout);
            for accept in MANIFEST_ACCEPT {
                request = request.header(http::header::ACCEPT, accept);
            }
            if let Some(a) = &auth {
                request = request.header(http::header::AUTHORIZATION, a);
            }
            let response = request
                .send()
                .await
                .map_err(|e| Error::RegistryUnavailable(format!("{}: {e}", self.config.host)))?;
            if response.status() != StatusCode::UNAUTHORIZED || retried {
                break response;
            }
            retried = true;
            let challenge = response
                .headers()
                .get(http::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            auth = match challenge {
                Some(c) if c.scheme == "bearer" => Some(self.fetch_token(&c, &scope).await?),
                Some(c) if c.scheme == "basic" && self.basic().is_some() => self.basic(),
                _ => break response,
            };
        };
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = format!(
                "{} answered {status} for {repository}:{reference}: {}",
                self.config.host,
                body.chars().take(300).collect::<String>()
            );
            return Err(
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    Error::RegistryUnavailable(message)
                } else {
                    Error::RegistryRefused(message)
                },
            );
        }
        let header_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = read_limited(response, MAX_MANIFEST_BYTES).await?;
        let digest = Digest::of(&bytes);
        let expected = match reference {
            Reference::Digest(d) => Some(*d),
            Reference::Tag(_) => header_digest,
        };
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(Error::RegistryRefused(format!(
                "manifest {repository}:{reference} hashes to {digest}, not {expected}"
            )));
        }
        let media_type = match header_type.filter(|t| MANIFEST_ACCEPT.contains(&t.as_str())) {
            Some(t) => t,
            None => body_media_type(&bytes).ok_or_else(|| {
                Error::RegistryRefused(format!(
                    "manifest {repository}:{reference} has no known media type"
                ))
            })?,
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        let (token, expiry) = tokens.get(scope)?;
        (*expiry > Instant::now()).then(|| format!("Bearer {token}"))
    }

    /// `GET realm?service=&scope=`, with our credentials as Basic when configured.
    async fn fetch_token(&self, challenge: &Challenge, scope: &str) -> Result<String> {
        let url = challenge.token_url(Some(scope)).map_err(Error::RegistryRefused)?;
        let mut request = self.http.get(url).timeout(self.timeout);
        if let Some(basic) = self.basic() {
            request = request.header(http::header::AUTHORIZATION, basic);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::RegistryUnavailable(format!("token endpoint: {e}")))?;
        if !response.status().is_success() {
            return Err(Error::RegistryRefused(format!(
                "token endpoint answered {}",
                response.status()
            )));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| Error::RegistryUnavailable(format!("token body: {e}")))?;
        let (token, lifetime) = answer
            .into_token()
            .ok_or_else(|| Error::RegistryRefused("token response without token".into()))?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(scope.to_string(), (token.clone(), Instant::now() + lifetime));
        }
        Ok(format!("Bearer {token}"))
    }
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Bytes> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Error::RegistryRefused(format!(
            "manifest larger than {limit} bytes"
        )));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::RegistryUnavailable(format!("reading manifest: {e}")))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(Error::RegistryRefused(format!(
                "manifest larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The `mediaType` field of a manifest body, for registries that send a generic Content-Type.
fn body_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Doc>(bytes)
        .ok()?
        .media_type
        .filter(|t| MANIFEST_ACCEPT.contains(&t.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_falls_back_to_the_body() {
        assert_eq!(
            body_media_type(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#)
                .as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(body_media_type(br#"{"mediaType":"text/html"}"#), None);
        assert_eq!(body_media_type(b"{"), None);
    }

    #[test]
    fn edge_registry_and_credentials_follow_the_config() {
        let mut config = RegistryConfig {
            host: "r.example:5000".into(),
            url: "http://127.0.0.1:1".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            insecure_skip_verify: false,
            edge_registry: None,
            edge_default_upstream: false,
            forward_credentials: false,
        };
        let c = RegistryClient::new(&config, Duration::from_secs(1)).unwrap();
        assert_eq!(c.edge_registry().as_deref(), Some("r.example:5000"));
        assert_eq!(c.edge_authorization(), None);
        config.edge_default_upstream = true;
        config.forward_credentials = true;
        let c = RegistryClient::new(&config, Duration::from_secs(1)).unwrap();
        assert_eq!(c.edge_registry(), None);
        assert_eq!(c.edge_authorization().as_deref(), Some("Basic dTpw"));
    }
}
