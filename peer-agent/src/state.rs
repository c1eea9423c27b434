//! Everything the agent's handlers share.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use damselfly_core::net::Pacer;
use damselfly_server::Readiness;
use tokio::sync::Semaphore;

use crate::client::{Clients, RegistryRelay, TicketKeys};
use crate::config::Config;
use crate::download::read_ahead::ReadAheads;
use crate::download::Downloader;
use crate::error::{AgentError, AgentResult};
use crate::metrics::Metrics;
use crate::store::PieceStore;

pub struct AgentState {
    pub config: Config,
    pub(crate) relay: Arc<RegistryRelay>,
    pub store: Arc<PieceStore>,
    pub(crate) downloader: Arc<Downloader>,
    /// Images whose next layers start before the runtime asks.
    pub(crate) read_aheads: Arc<ReadAheads>,
    pub metrics: Arc<Metrics>,
    pub(crate) ticket_keys: Arc<TicketKeys>,
    pub upload_slots: Arc<Semaphore>,
    /// `upload.rate_limit` across all uploads, if any.
    pub upload_pacer: Option<Pacer>,
    /// Ready once both listeners serve; not ready again from the moment shutdown starts.
    pub readiness: Readiness,
    /// For the status page's uptime.
    pub started: std::time::Instant,
}

impl AgentState {
    pub fn new(config: Config) -> AgentResult<Arc<AgentState>> {
        let bad = |e: damselfly_server::config::ConfigError| AgentError::Internal(e.to_string());
        let quota = config.quota_bytes().map_err(bad)?;
        let upload_rate = config.upload_rate_bytes().map_err(bad)?;
        let store = PieceStore::open(&config.data_dir, quota)?;
        let clients = Clients::new(&config)?;
        let metrics = Arc::new(Metrics::new());
        let downloader = Arc::new(Downloader {
            edges: clients.edges,
            pieces: clients.pieces,
            store: store.clone(),
            metrics: metrics.clone(),
            host_id: config.host_id(),
            location: config.location.clone(),
            upload_url: config.advertise(),
            upload_slots: config.upload.slots,
            uploads_active: Arc::new(AtomicU32::new(0)),
            config: config.download.clone(),
            seed_for: Duration::from_secs(300),
            edge_in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        let read_aheads = Arc::new(ReadAheads::new(config.download.read_ahead, downloader.clone()));
        Ok(Arc::new(AgentState {
            read_aheads,
            upload_slots: Arc::new(Semaphore::new(config.upload.slots as usize)),
            upload_pacer: Pacer::new(upload_rate),
            config,
            relay: clients.relay,
            store,
            downloader,
            metrics,
            ticket_keys: clients.ticket_keys,
            readiness: Readiness::new(),
            started: std::time::Instant::now(),
        }))
    }
}

impl damselfly_server::ops::OpsState for AgentState {
    fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}
