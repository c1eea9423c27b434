//! Everything a request handler needs, built once at start-up.

use std::sync::Arc;
use std::time::Duration;

use damselfly_core::net::Pacer;
use damselfly_core::{ClusterSecret, TicketSigner};
use damselfly_server::daemon::DaemonConfig;
use damselfly_server::tls::ServerTls;
use damselfly_server::Readiness;

use crate::access::AccessGate;
use crate::chain::Parents;
use crate::cluster::Cluster;
use crate::compression::Compression;
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::file_digests::FileDigests;
use crate::metrics::Metrics;
use crate::scheduler::{AnnouncementRate, PeerStore};
use crate::status::StatusRecorder;
use crate::store::{BlobStore, CatalogLimits, StoreOptions};
use crate::tickets::TicketChecker;
use crate::upstream::Upstreams;

/// Manifests may take this fraction of the quota at most (1/20): blobs are what a cache is for.
const MANIFEST_SHARE_OF_QUOTA: u64 = 20;

pub struct AppState {
    /// The listener's TLS (certificates reloaded when they change), when configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Scheduler writes admitted per host id.
    pub announcements: AnnouncementRate,
    /// Permits for plain-file transfers (`limits.file_ingests`).
    pub file_ingests: Arc<tokio::sync::Semaphore>,
    /// The content digests of cached file versions, as far as known.
    pub file_digests: FileDigests,
    pub config: Config,
    pub upstreams: Upstreams,
    pub gate: AccessGate,
    pub store: Arc<BlobStore>,
    pub metrics: Arc<Metrics>,
    pub tickets: TicketSigner,
    /// Checks tickets (the signature once per ticket).
    pub ticket_checker: TicketChecker,
    pub secret: ClusterSecret,
    pub peers: Arc<PeerStore>,
    /// The status page's history and hosts heard from.
    pub status: StatusRecorder,
    /// Fetches plain files under `[files] allow` (no credentials: they are public by definition).
    pub files_http: reqwest::Client,
    /// Ready once serving with the store open (and Redis answering, when configured); not
    /// ready again from the moment shutdown starts.
    pub readiness: Readiness,
    /// Permits to send a piece (`limits.piece_sends`), handed out in arrival order.
    pub piece_sends: Arc<tokio::sync::Semaphore>,
    /// `limits.piece_rate_limit` across all piece sends, if any.
    pub piece_pacer: Option<Pacer>,
    /// The region's edges as one cache, when `advertise_url` and `redis` are set.
    pub cluster: Option<Arc<Cluster>>,
    /// Edges of other regions asked for blobs before the origin (`parents`).
    pub parents: Option<Arc<Parents>>,
}

impl AppState {
    pub async fn new(config: Config) -> EdgeResult<Arc<Self>> {
        config
            .validate()
            .map_err(|e| EdgeError::Internal(e.to_string()))?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| EdgeError::Internal(format!("create {}: {e}", config.data_dir.display())))?;
        let secret = crate::secret::load_or_create(&config)?;
        let metrics = Arc::new(Metrics::new());
        let quota = config
            .quota_bytes()
            .map_err(|e| EdgeError::Internal(e.to_string()))?;
        let options = StoreOptions {
            quota,
            high_watermark: config.cache.high_watermark,
            low_watermark: config.cache.low_watermark,
            idle_timeout: Duration::from_secs(config.limits.upstream_idle_timeout_secs),
            response_timeout: Duration::from_secs(config.limits.upstream_timeout_secs),
            resume_attempts: config.limits.upstream_resume_attempts,
            catalog: CatalogLimits {
                max_manifests: config.cache.max_manifests,
                max_manifest_bytes: quota / MANIFEST_SHARE_OF_QUOTA,
                max_tags: config.cache.max_tags,
            },
            compression: Compression::new(config.compression.clone(), metrics.clone()),
        };
        options.compression.watch_cpu();
        let store = BlobStore::load(&config.data_dir, secret.clone(), options, metrics.clone())?;
        let gate = AccessGate::new(
            Duration::from_secs(config.access.ttl_secs),
            Duration::from_secs(config.access.stale_if_error_secs),
        );
        let peer_ttl = Duration::from_secs(config.scheduler.peer_ttl_secs);
        let redis = config
            .redis
            .as_deref()
            .map(|url| damselfly_server::tls::redis_client(url, &config.tls))
            .transpose()
            .map_err(EdgeError::Internal)?;
        let peers = Arc::new(
            PeerStore::connect(redis.as_ref(), peer_ttl, config.scheduler.max_peers_per_task).await?,
        );
        let readiness = Readiness::new();
        if config.redis.is_some() {
            let peers = peers.clone();
            readiness.add_check(
                "redis",
                Arc::new(move || {
                    let peers = peers.clone();
                    Box::pin(async move { peers.ping().await.map_err(|e| e.to_string()) })
                }),
            );
        }
        let files_http = damselfly_server::tls::client_builder(&config.tls, false)
            .map_err(EdgeError::Internal)?
            // The file's own bytes (digests and Range offsets are over those), never a re-encoding.
            .no_gzip()
            .connect_timeout(Duration::from_secs(config.limits.upstream_connect_timeout_secs))
            .user_agent(concat!("damselfly-edge/", env!("CARGO_PKG_VERSION")))
            // Redirects could leave the allowed prefixes.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EdgeError::Internal(format!("http client: {e}")))?;
        let tls = match config.tls.enabled() {
            true => Some(ServerTls::load(&config.tls).map_err(EdgeError::Internal)?),
            false => None,
        };
        metrics.insecure.set(i64::from(config.insecure));
        // Other edges' bytes as they send them: the digest is over those.
        let edges_http = damselfly_server::tls::client_builder(&config.tls, false)
            .map_err(EdgeError::Internal)?
            .no_gzip()
            .connect_timeout(Duration::from_secs(config.limits.upstream_connect_timeout_secs))
            .user_agent(concat!("damselfly-edge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EdgeError::Internal(format!("http client: {e}")))?;
        let parents = (!config.parents.is_empty()).then(|| {
            Arc::new(Parents::new(
                &config.region,
                &config.parents,
                edges_http.clone(),
                metrics.clone(),
            ))
        });
        let cluster = match (&redis, &config.advertise_url) {
            (Some(redis), Some(me)) => {
                let http = edges_http.clone();
                let timing = (
                    Duration::from_millis(config.cluster.heartbeat_ms),
                    Duration::from_millis(config.cluster.member_timeout_ms),
                );
                let joined = Cluster::join(redis, me, &config.region, timing, http, metrics.clone()).await?;
                tracing::info!(me = joined.me(), members = ?joined.members(), "joined the region's edge cluster");
                Some(joined)
            }
            _ => None,
        };
        Ok(Arc::new(AppState {
            cluster,
            parents,
            tls,
            announcements: AnnouncementRate::new(config.scheduler.max_announcements_per_sec),
            file_ingests: Arc::new(tokio::sync::Semaphore::new(config.limits.file_ingests)),
            file_digests: FileDigests::default(),
            files_http,
            peers,
            status: StatusRecorder::new(Duration::from_secs(config.scheduler.peer_ttl_secs)),
            upstreams: Upstreams::from_config(&config)?,
            gate,
            store,
            metrics,
            ticket_checker: TicketChecker::new(TicketSigner::new(&secret).verifier()),
            tickets: TicketSigner::new(&secret),
            secret,
            readiness,
            piece_sends: Arc::new(tokio::sync::Semaphore::new(config.limits.piece_sends)),
            piece_pacer: Pacer::new(
                config
                    .piece_rate_bytes()
                    .map_err(|e| EdgeError::Internal(e.to_string()))?,
            ),
            config,
        }))
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
