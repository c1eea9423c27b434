//! Talking to one upstream registry: credentials, the token dance, and request plumbing.
//!
//! A client's own `Authorization` is passed through untouched (its token was minted by the
//! upstream's realm for the upstream). Only when a client sends none and the operator configured
//! credentials does the edge authenticate itself, caching bearer tokens per scope.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::config::UpstreamConfig;
use crate::error::{EdgeError, EdgeResult};
use damselfly_core::{Challenge, TokenAnswer};

/// Every modern manifest type, for requests the edge makes on its own behalf.
pub const MANIFEST_ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub struct Upstream {
    registry: String,
    base: reqwest::Url,
    credentials: Option<(String, String)>,
    http: reqwest::Client,
    request_timeout: Duration,
    /// Bearer tokens the edge obtained with its own credentials, by scope.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

/// One request to an upstream registry.
pub struct UpstreamRequest<'a> {
    pub method: Method,
    /// Path below the registry root, e.g. `/v2/library/nginx/manifests/1.25`.
    pub path: String,
    /// Scope the request needs, for the edge's own token dance (`repository:<name>:pull`).
    pub scope: Option<String>,
    /// Each `Accept` line the client sent, forwarded one per line.
    pub accept: Vec<HeaderValue>,
    /// The client's `Authorization`, passed through when present.
    pub authorization: Option<&'a HeaderValue>,
    pub extra_headers: HeaderMap,
    /// Streaming bodies must not be cut by a whole-request timeout (idle timeouts guard them).
    pub streaming: bool,
}

impl<'a> UpstreamRequest<'a> {
    pub fn get(path: String) -> Self {
        UpstreamRequest {
            method: Method::GET,
            path,
            scope: None,
            accept: Vec::new(),
            authorization: None,
            extra_headers: HeaderMap::new(),
            streaming: false,
        }
    }

    pub fn head(path: String) -> Self {
        UpstreamRequest {
            method: Method::HEAD,
            ..Self::get(path)
        }
    }
}

impl Upstream {
    pub fn new(
        config: &UpstreamConfig,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> EdgeResult<Self> {
        let base = reqwest::Url::parse(&config.url)
            .map_err(|e| EdgeError::Internal(format!("bad upstream url {}: {e}", config.url)))?;
        let http = reqwest::Client::builder()
            // Bytes as the registry stores them: digests and Range offsets are over those.
            .no_gzip()
            .connect_timeout(connect_timeout)
            .danger_accept_invalid_certs(config.insecure_skip_verify)
            .user_agent(concat!("damselfly-edge/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| EdgeError::Internal(format!("http client: {e}")))?;
        let credentials = match (&config.username, &config.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        Ok(Upstream {
            registry: config.registry.clone(),
            base,
            credentials,
            http,
            request_timeout,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The registry name clients use for this upstream (the `ns` value, a cache-key prefix).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Whether the edge holds credentials of its own for this upstream.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Sends a request; connection failures become `UpstreamUnavailable`. The response is
    /// returned whatever its status, for the caller to interpret.
    pub async fn send(&self, req: UpstreamRequest<'_>) -> EdgeResult<reqwest::Response> {
        let own_auth = req.authorization.is_none() && self.credentials.is_some();
        let mut auth = match (req.authorization, own_auth) {
            (Some(client), _) => Some(client.clone()),
            (None, true) => self.cached_token(req.scope.as_deref()),
            (None, false) => None,
        };
        let mut retried = false;
        loop {
            let response = self.send_once(&req, auth.as_ref()).await?;
            if response.status() != StatusCode::UNAUTHORIZED || !own_auth || retried {
                return Ok(response);
            }
            retried = true;
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            auth = match challenge {
                Some(c) if c.scheme == "basic" => self.basic_header(),
                Some(c) if c.scheme == "bearer" => Some(self.fetch_token(&c, req.scope.as_deref()).await?),
                _ => return Ok(response),
            };
        }
    }

    async fn send_once(
        &self,
        req: &UpstreamRequest<'_>,
        auth: Option<&HeaderValue>,
    ) -> EdgeResult<reqwest::Response> {
        let url = self
            .base
            .join(&req.path)
            .map_err(|e| EdgeError::Internal(format!("bad upstream path {}: {e}", req.path)))?;
        let mut builder = self.http.request(req.method.clone(), url);
        for accept in &req.accept {
            builder = builder.header(http::header::ACCEPT, accept.clone());
        }
        if let Some(auth) = auth {
            builder = builder.header(http::header::AUTHORIZATION, auth.clone());
        }
        builder = builder.headers(req.extra_headers.clone());
        if !req.streaming {
            builder = builder.timeout(self.request_timeout);
        }
        builder
            .send()
            .await
            .map_err(|e| EdgeError::UpstreamUnavailable(format!("{}: {e}", self.registry)))
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        let (user, pass) = self.credentials.as_ref()?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).ok()
    }

    fn cached_token(&self, scope: Option<&str>) -> Option<HeaderValue> {
        let tokens = self.tokens.lock().ok()?;
        let (token, expiry) = tokens.get(scope.unwrap_or(""))?;
        if *expiry > Instant::now() {
            HeaderValue::from_str(&format!("Bearer {token}")).ok()
        } else {
            None
        }
    }

    /// The token dance with the edge's own credentials: `GET realm?service=&scope=` with Basic.
    async fn fetch_token(&self, challenge: &Challenge, scope: Option<&str>) -> EdgeResult<HeaderValue> {
        let url = challenge
            .token_url(scope)
            .map_err(EdgeError::UpstreamUnavailable)?;
        let mut builder = self.http.get(url).timeout(self.request_timeout);
        if let Some(basic) = self.basic_header() {
            builder = builder.header(http::header::AUTHORIZATION, basic);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| EdgeError::UpstreamUnavailable(format!("token: {e}")))?;
        if !response.status().is_success() {
            return Err(EdgeError::Denied(format!(
                "token endpoint answered {}",
                response.status()
            )));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| EdgeError::UpstreamUnavailable(format!("token body: {e}")))?;
        let (token, lifetime) = answer
            .into_token()
            .ok_or_else(|| EdgeError::UpstreamUnavailable("token response without token".into()))?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(
                scope.unwrap_or("").to_string(),
                (token.clone(), Instant::now() + lifetime),
            );
        }
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| EdgeError::UpstreamUnavailable("token is not a valid header".into()))
    }
}
