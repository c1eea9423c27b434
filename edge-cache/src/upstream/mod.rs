//! Upstream registries: which one a request goes to, and how the edge talks to it.
//!
//! A request names its registry with containerd's `?ns=`; without it, the default upstream
//! answers. Only configured registries are reachable, so the edge is never an open proxy.
//!
//! The edge is a pass-through proxy: a client's own `Authorization` goes upstream untouched (its
//! token was minted by the upstream's realm for the upstream) and the upstream's challenges come
//! back to the client. Only when a client sends none and the operator configured credentials
//! does the edge authenticate itself (`damselfly_registry` does the token dance).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use damselfly_registry::{OwnAuth, RegistryClient, Request};
use damselfly_server::tls::TlsConfig;

use crate::config::{Config, UpstreamConfig};
use crate::error::{EdgeError, EdgeResult};

pub(crate) use damselfly_registry::MANIFEST_ACCEPT;

/// One upstream registry, by the name clients use for it.
pub struct Upstream {
    registry: String,
    client: RegistryClient,
}

impl Upstream {
    fn new(
        config: &UpstreamConfig,
        tls: &TlsConfig,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> EdgeResult<Self> {
        // The system's CAs and `tls.ca_file` (an on-premises registry's CA).
        let builder = damselfly_server::tls::client_builder(tls, false)
            .map_err(EdgeError::Internal)?
            .pool_idle_timeout(Duration::from_secs(60));
        let user_agent = concat!("damselfly-edge/", env!("CARGO_PKG_VERSION"));
        let insecure = config.insecure_skip_verify;
        let http = damselfly_registry::registry_http(builder, connect_timeout, insecure, user_agent)?;
        // Without credentials of its own the edge hands challenges to its clients.
        let own = OwnAuth::configured(&config.username, &config.password, OwnAuth::None);
        Ok(Upstream {
            registry: config.registry.clone(),
            client: RegistryClient::new(&config.url, own, http, request_timeout)?,
        })
    }

    /// The registry name clients use for this upstream (the `ns` value, a cache-key prefix).
    pub(crate) fn registry(&self) -> &str {
        &self.registry
    }

    /// Sends a request; the response is returned whatever its status, for the caller to interpret.
    pub(crate) async fn send(&self, request: Request<'_>) -> EdgeResult<reqwest::Response> {
        Ok(self.client.send(request).await?)
    }
}

/// Every configured upstream, by registry name, and the default one.
pub struct Upstreams {
    default: Option<Arc<Upstream>>,
    by_registry: HashMap<String, Arc<Upstream>>,
}

/// Docker Hub answers to several names; clients send `docker.io` in `ns`.
fn canonical_registry(name: &str) -> &str {
    match name {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other,
    }
}

impl Upstreams {
    pub(crate) fn from_config(config: &Config) -> EdgeResult<Self> {
        let connect_timeout = Duration::from_secs(config.limits.upstream_connect_timeout_secs);
        let request_timeout = Duration::from_secs(config.limits.upstream_timeout_secs);
        let mut by_registry = HashMap::new();
        for u in &config.upstreams {
            let upstream = Upstream::new(u, &config.tls, connect_timeout, request_timeout)?;
            by_registry.insert(canonical_registry(&u.registry).to_string(), Arc::new(upstream));
        }
        let default = match &config.upstream {
            None => None,
            Some(url) => {
                let host = registry_of_url(url)?;
                match by_registry.get(canonical_registry(&host)) {
                    // The default names a configured registry: share its credentials and tokens.
                    Some(existing) => Some(existing.clone()),
                    None => {
                        let plain = UpstreamConfig {
                            registry: host.clone(),
                            url: url.clone(),
                            username: None,
                            password: None,
                            password_file: None,
                            insecure_skip_verify: false,
                        };
                        let upstream = Arc::new(Upstream::new(
                            &plain,
                            &config.tls,
                            connect_timeout,
                            request_timeout,
                        )?);
                        by_registry.insert(canonical_registry(&host).to_string(), upstream.clone());
                        Some(upstream)
                    }
                }
            }
        };
        Ok(Upstreams { default, by_registry })
    }

    /// The upstream for a request's `ns` parameter, or the default one.
    pub(crate) fn select(&self, ns: Option<&str>) -> EdgeResult<Arc<Upstream>> {
        match ns {
            Some(ns) if !ns.is_empty() => self
                .by_registry
                .get(canonical_registry(ns))
                .cloned()
                .ok_or_else(|| EdgeError::UnknownNamespace(ns.to_string())),
            _ => self
                .default
                .clone()
                .ok_or_else(|| EdgeError::UnknownNamespace("(no ns, no default)".into())),
        }
    }
}

/// `http://127.0.0.1:5000/` → `127.0.0.1:5000`: the name clients use for that registry.
fn registry_of_url(url: &str) -> EdgeResult<String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| EdgeError::Internal(format!("bad upstream url: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| EdgeError::Internal(format!("no host in {url}")))?;
    Ok(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_ns_then_default() {
        let mut config = Config {
            upstream: Some("http://127.0.0.1:5000".into()),
            ..Config::default()
        };
        config.upstreams.push(UpstreamConfig {
            registry: "docker.io".into(),
            url: "https://registry-1.docker.io".into(),
            username: None,
            password: None,
            password_file: None,
            insecure_skip_verify: false,
        });
        let ups = Upstreams::from_config(&config).unwrap();
        assert_eq!(ups.select(None).unwrap().registry(), "127.0.0.1:5000");
        assert_eq!(
            ups.select(Some("127.0.0.1:5000")).unwrap().registry(),
            "127.0.0.1:5000"
        );
        assert_eq!(ups.select(Some("docker.io")).unwrap().registry(), "docker.io");
        assert!(matches!(
            ups.select(Some("evil.example")),
            Err(EdgeError::UnknownNamespace(_))
        ));
    }
}
