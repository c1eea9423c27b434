//! Everything a request handler or a worker needs, built once at start-up.

use std::sync::Arc;
use std::time::Duration;

use damselfly_server::daemon::DaemonConfig;
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
            .map(|e| EdgeClient::new(&e.region, &e.url, config.edge_token.clone(), timeout))
            .collect::<Result<Vec<_>>>()?;
        let warmer = Arc::new(Warmer::new(edges, config.warm.clone(), metrics.clone()));
        let registries = Registries::new(&config.registries, timeout)?;
        let store = Store::open(&config).await?;
        Ok(Arc::new(AppState {
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
