//! Every metric the agent exports, defined in one place.

use damselfly_server::{MetricsRegistry, ServerMetrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

damselfly_server::label_sets! {
    pub struct SourceLabels {
        /// `peer`, `edge` or `origin`.
        source,
    }
}

pub struct Metrics {
    registry: MetricsRegistry,
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
        let mut r = MetricsRegistry::new("damselfly_agent");
        let m = Metrics {
            server: r.server(),
            download_bytes: r.add("download_bytes", "Blob bytes received, by source"),
            upload_bytes: r.add("upload_bytes", "Sealed piece bytes sent to other agents"),
            bad_pieces: r.add("bad_pieces", "Pieces that failed verification, by source"),
            piece_failures: r.add("piece_failures", "Piece requests that failed, by source"),
            origin_fallbacks: r.add(
                "origin_fallbacks",
                "Blob requests served from the origin directly",
            ),
            uploads_active: r.add("uploads_active", "Uploads being served now"),
            uploads_stalled: r.add(
                "uploads_stalled",
                "Uploads whose slot was taken back after send_stall_secs without progress",
            ),
            read_ahead_blobs: r.add(
                "read_ahead_blobs",
                "Image layers started before the runtime asked for them",
            ),
            registry: r,
        };
        // Every source exported from the start, at 0: dashboards and alerts see "none yet"
        // rather than no series at all.
        for source in ["peer", "edge", "origin"] {
            let labels = SourceLabels { source };
            let _ = m.download_bytes.get_or_create(&labels);
            let _ = m.bad_pieces.get_or_create(&labels);
            let _ = m.piece_failures.get_or_create(&labels);
        }
        m
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
        self.registry.encode()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
