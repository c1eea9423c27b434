//! Everything a request handler or a worker needs, built once at start-up.

use std::sync::Arc;
use std::time::Duration;

use damselfly_core::ClusterSecret;
use damselfly_server::daemon::DaemonConfig;
use damselfly_server::tls::ServerTls;
use damselfly_server::Readiness;

use crate::config::Config;
use crate::edge::EdgeClient;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::registry::Registries;
use crate::store::Store;
use crate::warm::Warmer;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub registries: Registries,
    pub warmer: Arc<Warmer>,
    pub metrics: Arc<Metrics>,
    /// Ready once serving with the job store open; not ready again from the moment shutdown
    /// starts, so load balancers stop sending webhooks here.
    pub readiness: Readiness,
    /// Seals the credentials jobs keep until they end.
    pub secret: ClusterSecret,
    /// The listener's TLS (certificates reloaded when they change), when configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Registries whose events were ignored because they are not configured, each warned
    /// about once (a busy registry would otherwise fill the log).
    unconfigured_seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl AppState {
    /// Validates the configuration and opens the job store (resuming unfinished jobs).
    pub async fn new(config: Config) -> Result<Arc<Self>> {
        config
            .validate()
            .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
        let metrics = Arc::new(Metrics::new());
        let timeout = Duration::from_secs(config.warm.request_timeout_secs);
        let edges = config
            .edges
            .iter()
            .map(|e| EdgeClient::new(&e.region, &e.url, config.edge_token.clone(), timeout, &config.tls))
            .collect::<Result<Vec<_>>>()?;
        let warmer = Arc::new(Warmer::new(edges, config.warm.clone(), metrics.clone()));
        let registries = Registries::new(&config.registries, timeout, &config.tls)?;
        let store = Store::open(&config).await?;
        let internal = crate::error::Error::Internal;
        let secret = damselfly_server::secret_file::load_or_create(
            config.cluster_secret_file.as_deref(),
            &config.data_dir,
        )
        .and_then(|bytes| ClusterSecret::new(&bytes).map_err(|e| format!("cluster secret: {e}")))
        .map_err(internal)?;
        let tls = match config.tls.enabled() {
            true => Some(ServerTls::load(&config.tls).map_err(internal)?),
            false => None,
        };
        Ok(Arc::new(AppState {
            secret,
            tls,
            config,
            store,
            registries,
            warmer,
            metrics,
            readiness: Readiness::new(),
            unconfigured_seen: Default::default(),
        }))
    }
}

impl AppState {
    /// Whether this is the first event from `registry`, which is not configured (bounded: past
    /// a few hundred names, every one is reported again).
    pub(crate) fn first_from_unconfigured(&self, registry: &str) -> bool {
        let Ok(mut seen) = self.unconfigured_seen.lock() else {
            return true;
        };
        if seen.len() >= 256 {
            seen.clear();
        }
        seen.insert(registry.to_string())
    }
}

impl damselfly_server::ops::OpsState for AppState {
    fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}
