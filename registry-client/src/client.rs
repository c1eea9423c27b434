//! One registry: requests as the caller shaped them, and the token dance when this client
//! authenticates itself.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use damselfly_core::{Challenge, TokenAnswer};
use http::{HeaderValue, Method, StatusCode};

use crate::error::{Error, Result};
use crate::tokens::{TokenCache, CAPACITY};

/// A `reqwest` builder for registry traffic. Bodies are never decoded (`no_gzip`): digests and
/// `Range` offsets are over the bytes as the registry stores them. The daemon adds its TLS
/// trust, timeouts and user agent, and hands the client to [`RegistryClient::new`].
pub fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_gzip()
}

/// The HTTP client for one registry, from the daemon's `builder` (its TLS trust): bodies as the
/// registry stores them (see [`http_builder`]), `connect_timeout`, certificates checked unless
/// `accept_invalid_certs`, and the daemon's `user_agent`.
pub fn registry_http(
    builder: reqwest::ClientBuilder,
    connect_timeout: std::time::Duration,
    accept_invalid_certs: bool,
    user_agent: &str,
) -> Result<reqwest::Client> {
    builder
        .no_gzip()
        .connect_timeout(connect_timeout)
        .danger_accept_invalid_certs(accept_invalid_certs)
        .user_agent(user_agent)
        .build()
        .map_err(|e| Error::Invalid(format!("http client: {e}")))
}

/// Who the client is for requests that carry no credential of the caller's.
pub enum OwnAuth {
    /// Nobody: a challenge goes back to the caller, who authenticates at the registry's realm
    /// (a pass-through proxy without credentials of its own).
    None,
    /// The token dance without credentials: registries hand out pull tokens for public
    /// repositories to anyone.
    Anonymous,
    /// Basic, or the token dance with these credentials.
    Credentials { username: String, password: String },
}

impl OwnAuth {
    /// `Credentials` when a configuration names both, else `otherwise`.
    pub fn configured(username: &Option<String>, password: &Option<String>, otherwise: OwnAuth) -> OwnAuth {
        match (username, password) {
            (Some(username), Some(password)) => OwnAuth::Credentials {
                username: username.clone(),
                password: password.clone(),
            },
            _ => otherwise,
        }
    }
}

/// One request to the registry.
pub struct Request<'a> {
    pub method: Method,
    /// Joined to the registry's base URL: `/v2/<name>/blobs/<digest>` from the root,
    /// `v2/…` below a base path.
    pub path: String,
    /// The scope a token for this request needs (`repository:<name>:pull`).
    pub scope: Option<String>,
    /// Sent one per line, as given.
    pub accept: Vec<HeaderValue>,
    /// The caller's credential, sent as it is; the client then never authenticates itself.
    pub authorization: Option<&'a HeaderValue>,
    pub range: Option<HeaderValue>,
    /// Streaming bodies must not be cut by a whole-request timeout (idle timeouts guard them).
    pub streaming: bool,
}

impl Request<'_> {
    pub fn get(path: String) -> Self {
        Request {
            method: Method::GET,
            path,
            scope: None,
            accept: Vec::new(),
            authorization: None,
            range: None,
            streaming: false,
        }
    }

    pub fn head(path: String) -> Self {
        Request {
            method: Method::HEAD,
            ..Self::get(path)
        }
    }
}

/// How the client authenticates itself, with the Basic header computed once.
enum Identity {
    None,
    Anonymous,
    Basic(HeaderValue),
}

pub struct RegistryClient {
    base: reqwest::Url,
    /// `host[:port]` of the base URL, to say which registry failed.
    authority: String,
    identity: Identity,
    http: reqwest::Client,
    request_timeout: Duration,
    tokens: Mutex<TokenCache>,
}

impl RegistryClient {
    /// A client for the registry at `base_url`. `http` should come from [`http_builder`];
    /// `request_timeout` bounds every request that is not streaming.
    pub fn new(
        base_url: &str,
        own: OwnAuth,
        http: reqwest::Client,
        request_timeout: Duration,
    ) -> Result<Self> {
        let base = reqwest::Url::parse(base_url)
            .map_err(|e| Error::Invalid(format!("bad registry url {base_url}: {e}")))?;
        let authority = match (base.host_str(), base.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(Error::Invalid(format!("no host in registry url {base_url}"))),
        };
        let identity = match own {
            OwnAuth::None => Identity::None,
            OwnAuth::Anonymous => Identity::Anonymous,
            OwnAuth::Credentials { username, password } => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                let basic = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| Error::Invalid("credentials do not fit a header".into()))?;
                Identity::Basic(basic)
            }
        };
        Ok(RegistryClient {
            base,
            authority,
            identity,
            http,
            request_timeout,
            tokens: Mutex::new(TokenCache::new(CAPACITY)),
        })
    }

    /// `host[:port]` of the registry's URL.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The client's own credentials as a Basic `Authorization` value, when it has some.
    pub fn basic_credential(&self) -> Option<&HeaderValue> {
        match &self.identity {
            Identity::Basic(basic) => Some(basic),
            Identity::None | Identity::Anonymous => None,
        }
    }

    /// Sends `req` and answers the registry's response whatever its status, for the caller to
    /// interpret. A request with the caller's credential, or from a client without an identity
    /// of its own, is sent once and a challenge comes back untouched. Otherwise the client sends
    /// its cached token for the scope, and on a challenge authenticates and sends once more.
    pub async fn send(&self, req: Request<'_>) -> Result<reqwest::Response> {
        let authenticates_itself = req.authorization.is_none() && !matches!(self.identity, Identity::None);
        let scope = req.scope.as_deref();
        let auth = match req.authorization {
            Some(caller) => Some(caller.clone()),
            None if authenticates_itself => self.cached_token(scope),
            None => None,
        };
        let response = self.send_once(&req, auth.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED || !authenticates_itself {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let answer = match (challenge, &self.identity) {
            (Some(c), _) if c.scheme == "bearer" => self.fetch_token(&c, scope).await?,
            (Some(c), Identity::Basic(basic)) if c.scheme == "basic" => basic.clone(),
            _ => return Ok(response),
        };
        self.send_once(&req, Some(&answer)).await
    }

    async fn send_once(&self, req: &Request<'_>, auth: Option<&HeaderValue>) -> Result<reqwest::Response> {
        let url = self
            .base
            .join(&req.path)
            .map_err(|e| Error::Invalid(format!("bad registry path {}: {e}", req.path)))?;
        let mut builder = self.http.request(req.method.clone(), url);
        for accept in &req.accept {
            builder = builder.header(http::header::ACCEPT, accept.clone());
        }
        if let Some(auth) = auth {
            builder = builder.header(http::header::AUTHORIZATION, auth.clone());
        }
        if let Some(range) = &req.range {
            builder = builder.header(http::header::RANGE, range.clone());
        }
        if !req.streaming {
            builder = builder.timeout(self.request_timeout);
        }
        builder.send().await.map_err(|source| Error::Unreachable {
            authority: self.authority.clone(),
            source,
        })
    }

    fn cached_token(&self, scope: Option<&str>) -> Option<HeaderValue> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(scope.unwrap_or(""), Instant::now())
    }

    /// The token dance: `GET realm?service=&scope=`, with the client's credentials as Basic
    /// when it has some. The token is cached for its scope.
    async fn fetch_token(&self, challenge: &Challenge, scope: Option<&str>) -> Result<HeaderValue> {
        let url = challenge.token_url(scope).map_err(Error::BadChallenge)?;
        let authority = url.host_str().unwrap_or_default().to_string();
        let mut builder = self.http.get(url).timeout(self.request_timeout);
        if let Some(basic) = self.basic_credential() {
            builder = builder.header(http::header::AUTHORIZATION, basic.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|source| Error::Unreachable { authority, source })?;
        if !response.status().is_success() {
            return Err(Error::TokenDenied {
                status: response.status(),
            });
        }
        let answer: TokenAnswer = response.json().await.map_err(Error::TokenUnreadable)?;
        let (token, lifetime) = answer
            .into_token()
            .ok_or(Error::TokenUnusable("without a token"))?;
        let authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::TokenUnusable("a token that is not a valid header"))?;
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.insert(
            scope.unwrap_or(""),
            authorization.clone(),
            lifetime,
            Instant::now(),
        );
        Ok(authorization)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str, own: OwnAuth) -> Result<RegistryClient> {
        let http = http_builder().build().unwrap();
        RegistryClient::new(base, own, http, Duration::from_secs(1))
    }

    #[test]
    fn the_authority_names_host_and_port() {
        assert_eq!(
            client("http://127.0.0.1:5000", OwnAuth::None)
                .unwrap()
                .authority(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            client("https://registry.example/", OwnAuth::None)
                .unwrap()
                .authority(),
            "registry.example"
        );
        assert!(matches!(
            client("not a url", OwnAuth::None),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn own_credentials_become_one_basic_header() {
        let own = OwnAuth::Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let c = client("http://r.example", own).unwrap();
        assert_eq!(
            c.basic_credential(),
            Some(&HeaderValue::from_static("Basic dTpw"))
        );
        let anonymous = client("http://r.example", OwnAuth::Anonymous).unwrap();
        assert_eq!(anonymous.basic_credential(), None);
    }
}
