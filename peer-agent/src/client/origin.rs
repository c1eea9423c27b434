//! Registry requests the agent does not serve from pieces (manifests, pings, HEADs), relayed to
//! each live edge in turn and then to the origin registry; and the origin itself, the last resort
//! for blobs and plain files when the P2P path fails.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use super::edge::EdgeClient;
use crate::error::{AgentError, AgentResult};

/// The request a runtime made, to be relayed.
pub(crate) struct Relay<'a> {
    pub(crate) method: Method,
    /// `/v2/...` path, without query.
    pub(crate) path: &'a str,
    pub(crate) ns: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
}

/// Request headers a relayed request carries.
const FORWARDED: [http::HeaderName; 3] = [
    http::header::ACCEPT,
    http::header::AUTHORIZATION,
    http::header::RANGE,
];

pub(crate) struct RegistryRelay {
    edges: Arc<EdgeClient>,
    default_origin: Option<String>,
    /// Registries by the name clients give in `?ns=`, with where to reach each directly.
    registries: Vec<(String, String)>,
    /// Bodies pass through untouched.
    http: reqwest::Client,
}

impl RegistryRelay {
    pub(crate) fn new(
        edges: Arc<EdgeClient>,
        default_origin: Option<&str>,
        registries: impl IntoIterator<Item = (String, String)>,
        http: reqwest::Client,
    ) -> Self {
        RegistryRelay {
            edges,
            default_origin: default_origin.map(|u| u.trim_end_matches('/').to_string()),
            registries: registries
                .into_iter()
                .map(|(name, url)| (name, url.trim_end_matches('/').to_string()))
                .collect(),
            http,
        }
    }

    /// The origin registry for `ns` (a configured one, else `https://<ns>`), or the default.
    fn origin(&self, ns: Option<&str>) -> Option<String> {
        match ns.filter(|n| !n.is_empty()) {
            Some(ns) => Some(
                self.registries
                    .iter()
                    .find(|(name, _)| name == ns)
                    .map(|(_, url)| url.clone())
                    .unwrap_or_else(|| format!("https://{ns}")),
            ),
            None => self.default_origin.clone(),
        }
    }

    fn request(&self, base: &str, relay: &Relay<'_>, with_ns: bool) -> reqwest::RequestBuilder {
        let mut url = format!("{base}{}", relay.path);
        if let (true, Some(ns)) = (with_ns, relay.ns) {
            url.push_str("?ns=");
            url.push_str(&ns.replace(':', "%3A"));
        }
        let mut builder = self.http.request(relay.method.clone(), url);
        for name in FORWARDED {
            for v in relay.headers.get_all(&name) {
                builder = builder.header(&name, v.clone());
            }
        }
        builder
    }

    /// Relays a registry request: to each live edge in turn, then to the origin. A 4xx is an
    /// answer (returned as is); connection failures and 5xx move on to the next target. Also
    /// says who answered (`edge` or `origin`).
    pub(crate) async fn relay(&self, relay: &Relay<'_>) -> AgentResult<(reqwest::Response, &'static str)> {
        let mut last = String::from("no edge or origin configured");
        for edge in self.edges.live() {
            let url = self.edges.url(edge);
            match super::send_within(self.request(url, relay, true), self.edges.response_timeout()).await {
                Ok(r) if !r.status().is_server_error() => return Ok((r, "edge")),
                Ok(r) => last = format!("edge {url} answered {}", r.status()),
                Err(e) => {
                    self.edges.mark_dead(edge);
                    last = format!("edge {url}: {e}");
                }
            }
        }
        match self.to_origin(relay).await {
            Ok(r) => Ok((r, "origin")),
            Err(e) => Err(AgentError::Unavailable(format!("{last}; {e}"))),
        }
    }

    /// Relays a registry request to the origin registry directly.
    pub(crate) async fn to_origin(&self, relay: &Relay<'_>) -> AgentResult<reqwest::Response> {
        let origin = self
            .origin(relay.ns)
            .ok_or_else(|| AgentError::Unavailable("no origin known for this registry".into()))?;
        super::send_within(self.request(&origin, relay, false), self.edges.response_timeout())
            .await
            .map_err(|e| AgentError::Unavailable(format!("origin {origin}: {e}")))
    }

    /// A plain file straight from its server, with the caller's `Range` (the last resort).
    pub(crate) async fn file_from_origin(
        &self,
        url: &str,
        range: Option<&HeaderValue>,
    ) -> AgentResult<reqwest::Response> {
        let mut request = self.http.get(url);
        if let Some(r) = range {
            request = request.header(http::header::RANGE, r.clone());
        }
        super::send_within(request, self.edges.response_timeout())
            .await
            .map_err(|e| AgentError::Unavailable(format!("{url}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_the_configured_registry_then_the_named_host_then_the_default() {
        let http = reqwest::Client::new();
        let edges = Arc::new(EdgeClient::new(&[], http.clone(), http.clone()));
        let registries = [(
            "docker.io".to_string(),
            "https://registry-1.docker.io/".to_string(),
        )];
        let relay = RegistryRelay::new(
            edges.clone(),
            Some("http://origin:5000/"),
            registries,
            http.clone(),
        );
        assert_eq!(
            relay.origin(Some("docker.io")).as_deref(),
            Some("https://registry-1.docker.io")
        );
        assert_eq!(relay.origin(Some("ghcr.io")).as_deref(), Some("https://ghcr.io"));
        assert_eq!(relay.origin(None).as_deref(), Some("http://origin:5000"));
        assert_eq!(relay.origin(Some("")).as_deref(), Some("http://origin:5000"));
        let no_default = RegistryRelay::new(edges, None, [], http);
        assert_eq!(no_default.origin(None), None);
    }
}
