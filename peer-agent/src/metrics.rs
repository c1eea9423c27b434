//! Every metric the agent exports, defined in one place.

use damselfly_server::ServerMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `peer`, `edge` or `origin`.
    pub source: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub download_bytes: Family<SourceLabels, Counter>,
    pub upload_bytes: Counter,
    pub bad_pieces: Family<SourceLabels, Counter>,
    pub piece_failures: Family<SourceLabels, Counter>,
    pub origin_fallbacks: Counter,
    /// Requests, connections and build information, as every daemon exports them.
    pub server: ServerMetrics,
    pub uploads_active: Gauge,
    /// Uploads whose slot was taken back because their reader stopped reading.
    pub uploads_stalled: Counter,
    /// Layers started before the runtime asked (`download.read_ahead`).
    pub read_ahead_blobs: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("damselfly_agent");
        let m = Metrics {
            registry: Registry::default(),
            download_bytes: Family::default(),
            upload_bytes: Counter::default(),
            bad_pieces: Family::default(),
            piece_failures: Family::default(),
            origin_fallbacks: Counter::default(),
            server: ServerMetrics::register(&mut registry),
            uploads_active: Gauge::default(),
            uploads_stalled: Counter::default(),
            read_ahead_blobs: Counter::default(),
        };
        registry.register(
            "download_bytes",
            "Blob bytes received, by source",
            m.download_bytes.clone(),
        );
        registry.register(
            "upload_bytes",
            "Sealed piece bytes sent to other agents",
            m.upload_bytes.clone(),
        );
        registry.register(
            "bad_pieces",
            "Pieces that failed verification, by source",
            m.bad_pieces.clone(),
        );
        registry.register(
            "piece_failures",
            "Piece requests that failed, by source",
            m.piece_failures.clone(),
        );
        registry.register(
            "origin_fallbacks",
            "Blob requests served from the origin directly",
            m.origin_fallbacks.clone(),
        );
        registry.register(
            "uploads_active",
            "Uploads being served now",
            m.uploads_active.clone(),
        );
        registry.register(
            "uploads_stalled",
            "Uploads whose slot was taken back after send_stall_secs without progress",
            m.uploads_stalled.clone(),
        );
        registry.register(
            "read_ahead_blobs",
            "Image layers started before the runtime asked for them",
            m.read_ahead_blobs.clone(),
        );
        // Every source exported from the start, at 0: dashboards and alerts see "none yet"
        // rather than no series at all.
        for source in ["peer", "edge", "origin"] {
            let labels = SourceLabels { source };
            let _ = m.download_bytes.get_or_create(&labels);
            let _ = m.bad_pieces.get_or_create(&labels);
            let _ = m.piece_failures.get_or_create(&labels);
        }
        Metrics { registry, ..m }
    }

    pub fn downloaded(&self, source: &'static str, bytes: u64) {
        self.download_bytes
            .get_or_create(&SourceLabels { source })
            .inc_by(bytes);
    }

    /// Bytes downloaded since start, by source, as the edge's status page is told.
    pub fn downloaded_by_source(&self) -> damselfly_core::api::BytesBySource {
        let bytes = |source| self.download_bytes.get_or_create(&SourceLabels { source }).get();
        damselfly_core::api::BytesBySource {
            peer: bytes("peer"),
            edge: bytes("edge"),
            origin: bytes("origin"),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
