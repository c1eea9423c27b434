//! The registries events and jobs may name, by host: a client for each (`damselfly_registry`),
//! and what the edges are told about it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use damselfly_core::{Reference, RepositoryName};
use damselfly_registry::{Manifest, OwnAuth, RegistryClient};
use http::HeaderValue;

use damselfly_server::tls::TlsConfig;

use crate::config::RegistryConfig;
use crate::error::{Error, Result};

/// Largest manifest read; real ones are a few KiB.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// The configured registries, by host.
pub struct Registries {
    by_host: HashMap<String, Arc<Registry>>,
}

impl Registries {
    /// `request_timeout` bounds each request to a registry.
    pub(crate) fn new(
        configs: &[RegistryConfig],
        request_timeout: Duration,
        tls: &TlsConfig,
    ) -> Result<Self> {
        let mut by_host = HashMap::new();
        for config in configs {
            by_host.insert(
                config.host.clone(),
                Arc::new(Registry::new(config, request_timeout, tls)?),
            );
        }
        Ok(Registries { by_host })
    }

    pub(crate) fn get(&self, host: &str) -> Result<Arc<Registry>> {
        self.by_host
            .get(host)
            .cloned()
            .ok_or_else(|| Error::UnknownRegistry(host.to_string()))
    }
}

/// One configured registry.
pub(crate) struct Registry {
    client: RegistryClient,
    /// What to send as `registry` in edge warm requests (`None`: the edge's default upstream).
    edge_registry: Option<String>,
    forward_credentials: bool,
}

impl Registry {
    fn new(config: &RegistryConfig, request_timeout: Duration, tls: &TlsConfig) -> Result<Self> {
        // The system's CAs and `tls.ca_file` (an on-premises registry's CA).
        let builder = damselfly_server::tls::client_builder(tls, false).map_err(Error::Internal)?;
        let user_agent = concat!("damselfly-preheater/", env!("CARGO_PKG_VERSION"));
        let (connect, insecure) = (Duration::from_secs(5), config.insecure_skip_verify);
        let http = damselfly_registry::registry_http(builder, connect, insecure, user_agent)?;
        // Nobody to hand a challenge to: public repositories still give anyone a token.
        let own = OwnAuth::configured(&config.username, &config.password, OwnAuth::Anonymous);
        let edge_registry = config.edge_name().map(str::to_string);
        Ok(Registry {
            client: RegistryClient::new(&config.url, own, http, request_timeout)?,
            edge_registry,
            forward_credentials: config.forward_credentials,
        })
    }

    /// What to send as `registry` in edge warm requests (`None`: the edge's default upstream).
    pub(crate) fn edge_registry(&self) -> Option<String> {
        self.edge_registry.clone()
    }

    /// The credential the edges should use upstream, when the operator chose to forward ours.
    pub(crate) fn edge_authorization(&self) -> Option<String> {
        if !self.forward_credentials {
            return None;
        }
        let basic = self.client.basic_credential()?;
        basic.to_str().ok().map(str::to_string)
    }

    /// A manifest, verified, with every modern type in `Accept`. A `presented` credential
    /// (Harbor's pull-only token) is sent as it is, instead of ours and without the token dance:
    /// it is the only credential the requester vouches for.
    pub(crate) async fn manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
        presented: Option<&str>,
    ) -> Result<Manifest> {
        let presented = presented
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| Error::BadRequest("the job's credential is not a valid header value".into()))?;
        Ok(self
            .client
            .manifest(repository, reference, presented.as_ref(), MAX_MANIFEST_BYTES)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_registry_and_credentials_follow_the_config() {
        let mut config = RegistryConfig {
            host: "r.example:5000".into(),
            url: "http://127.0.0.1:1".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            password_file: None,
            insecure_skip_verify: false,
            edge_registry: None,
            edge_default_upstream: false,
            forward_credentials: false,
        };
        let c = Registry::new(&config, Duration::from_secs(1), &TlsConfig::default()).unwrap();
        assert_eq!(c.edge_registry().as_deref(), Some("r.example:5000"));
        assert_eq!(c.edge_authorization(), None);
        config.edge_default_upstream = true;
        config.forward_credentials = true;
        let c = Registry::new(&config, Duration::from_secs(1), &TlsConfig::default()).unwrap();
        assert_eq!(c.edge_registry(), None);
        assert_eq!(c.edge_authorization().as_deref(), Some("Basic dTpw"));
    }
}
