//! Every metric the edge exports, defined in one place.
//!
//! Labels are bounded sets (kind, route, status class); never a digest or repository name.

use damselfly_server::{MetricsRegistry, ServerMetrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;

damselfly_server::label_sets! {
    pub struct KindLabels {
        /// `blob`, `manifest` or `piece` (`manifest` or `tag` for the catalog's counts).
        kind,
    }

    pub struct EncodingLabels {
        /// `identity` or `zstd`.
        encoding,
    }

    pub struct DecisionLabels {
        /// `compressed`, `sampled_out`, `skipped_for_load` or `off`.
        decision,
    }
}

pub struct Metrics {
    registry: MetricsRegistry,
    /// Requests, connections and build information, as every daemon exports them.
    pub server: ServerMetrics,
    pub cache_hits: Family<KindLabels, Counter>,
    pub cache_misses: Family<KindLabels, Counter>,
    pub upstream_bytes: Counter,
    pub served_bytes: Family<KindLabels, Counter>,
    pub coalesced_requests: Counter,
    pub upstream_resumes: Counter,
    pub ingest_failures: Counter,
    pub ingests_in_flight: Gauge,
    pub evicted_blobs: Counter,
    pub cache_used_bytes: Gauge,
    /// Manifests and tag mappings held, and those evicted to stay within their caps.
    pub catalog_entries: Family<KindLabels, Gauge>,
    /// Blobs an operator pinned against eviction.
    pub pinned_blobs: Gauge,
    pub evicted_catalog_entries: Family<KindLabels, Counter>,
    /// Piece sends whose permit was taken back because their reader stopped reading.
    pub piece_sends_stalled: Counter,
    /// Pieces that failed authentication when read from disk (the blob is dropped and fetched
    /// again).
    pub damaged_pieces: Counter,
    /// Blobs larger than the cache quota: streamed through to their readers, not stored.
    pub uncached_blobs: Counter,
    /// 1 when the edge hands task keys without client certificates (`--insecure`).
    pub insecure: Gauge,
    /// Pieces stored, by encoding: their plaintext bytes and their sealed bytes.
    pub compression_logical_bytes: Family<EncodingLabels, Counter>,
    pub compression_stored_bytes: Family<EncodingLabels, Counter>,
    /// Time spent compressing pieces (one core busy the whole time).
    pub compression_seconds: Counter<f64, AtomicU64>,
    /// What was decided for each blob (see `compression.rs`).
    pub compression_decisions: Family<DecisionLabels, Counter>,
    /// Sealed piece bytes sent to agents, by encoding.
    pub piece_sent_bytes: Family<EncodingLabels, Counter>,
    /// Live members of the region's cluster as this edge sees them (0: no cluster).
    pub cluster_members: Gauge,
    /// Blob transfers fetched from their owner edge, and owners that could not serve one.
    pub owner_fetches: Counter,
    pub owner_failures: Counter,
    /// Blob transfers fetched from a parent edge (another region), and parents that could not
    /// serve one.
    pub parent_fetches: Counter,
    pub parent_failures: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = MetricsRegistry::new("damselfly_edge");
        let m = Metrics {
            server: r.server(),
            cache_hits: r.add("cache_hits", "Requests answered from the cache"),
            cache_misses: r.add("cache_misses", "Requests that needed the upstream"),
            upstream_bytes: r.add("upstream_bytes", "Bytes received from upstream registries"),
            served_bytes: r.add("served_bytes", "Bytes sent to clients and agents"),
            coalesced_requests: r.add("coalesced_requests", "Blob requests that joined a transfer already in flight"),
            upstream_resumes: r.add("upstream_resumes", "Interrupted upstream transfers resumed with Range"),
            ingest_failures: r.add("ingest_failures", "Blob transfers abandoned"),
            ingests_in_flight: r.add("ingests_in_flight", "Blob transfers running now"),
            evicted_blobs: r.add("evicted_blobs", "Blobs evicted to stay within the quota"),
            cache_used_bytes: r.add("cache_used_bytes", "Disk bytes held by cached blobs and manifests"),
            catalog_entries: r.add("catalog_entries", "Cached manifests and tag mappings (kind=manifest|tag), within cache.max_manifests and cache.max_tags"),
            pinned_blobs: r.add("pinned_blobs", "Blobs pinned against eviction through the admin API"),
            evicted_catalog_entries: r.add("evicted_catalog_entries", "Manifests and tag mappings evicted to stay within their caps"),
            piece_sends_stalled: r.add("piece_sends_stalled", "Piece sends whose permit was taken back after send_stall_secs without progress"),
            damaged_pieces: r.add("damaged_pieces", "Pieces on disk that failed authentication; their blob was dropped"),
            uncached_blobs: r.add("uncached_blobs", "Blobs larger than the cache quota, streamed through and not stored"),
            insecure: r.add("insecure", "1 when task keys are handed to callers without a TLS client certificate (--insecure)"),
            compression_logical_bytes: r.add("compression_logical_bytes", "Plaintext bytes of the pieces stored, by encoding (identity|zstd)"),
            compression_stored_bytes: r.add("compression_stored_bytes", "Sealed bytes of the pieces stored, by encoding (identity|zstd)"),
            compression_seconds: r.add("compression_seconds", "Seconds spent compressing pieces"),
            compression_decisions: r.add("compression_decisions", "Blobs by what was decided for them: compressed, sampled_out (the first piece did not pay), skipped_for_load, off"),
            piece_sent_bytes: r.add("piece_sent_bytes", "Sealed piece bytes sent to agents, by encoding (identity|zstd)"),
            cluster_members: r.add("cluster_members", "Live members of the region's edge cluster as this edge sees them (0: no cluster)"),
            owner_fetches: r.add("owner_fetches", "Blob transfers fetched from the blob's owner edge instead of the origin"),
            owner_failures: r.add("owner_failures", "Owner edges that could not serve a transfer (it went to the origin)"),
            parent_fetches: r.add("parent_fetches", "Blob transfers fetched from a parent edge in another region instead of the origin"),
            parent_failures: r.add("parent_failures", "Parent edges that could not serve a transfer (the next one, then the origin, was asked)"),
            registry: r,
        };
        for encoding in ["identity", "zstd"] {
            let labels = EncodingLabels { encoding };
            let _ = m.compression_logical_bytes.get_or_create(&labels);
            let _ = m.compression_stored_bytes.get_or_create(&labels);
            let _ = m.piece_sent_bytes.get_or_create(&labels);
        }
        for decision in ["compressed", "sampled_out", "skipped_for_load", "off"] {
            let _ = m
                .compression_decisions
                .get_or_create(&DecisionLabels { decision });
        }
        // Every kind exported from the start, at 0: dashboards and alerts see "none yet"
        // rather than no series at all.
        for kind in ["blob", "manifest", "piece"] {
            let _ = m.served_bytes.get_or_create(&KindLabels { kind });
        }
        for kind in ["blob", "manifest"] {
            let _ = m.cache_hits.get_or_create(&KindLabels { kind });
            let _ = m.cache_misses.get_or_create(&KindLabels { kind });
        }
        for kind in ["manifest", "tag"] {
            let _ = m.catalog_entries.get_or_create(&KindLabels { kind });
            let _ = m.evicted_catalog_entries.get_or_create(&KindLabels { kind });
        }
        m
    }

    pub fn encode(&self) -> String {
        self.registry.encode()
    }

    pub fn hit(&self, kind: &'static str) {
        self.cache_hits.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn miss(&self, kind: &'static str) {
        self.cache_misses.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn compression_decision(&self, decision: &'static str) {
        self.compression_decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    pub fn compression_stored(&self, encoding: &'static str, logical: u64, stored: u64) {
        let labels = EncodingLabels { encoding };
        self.compression_logical_bytes
            .get_or_create(&labels)
            .inc_by(logical);
        self.compression_stored_bytes
            .get_or_create(&labels)
            .inc_by(stored);
    }

    pub fn served(&self, kind: &'static str, bytes: u64) {
        self.served_bytes
            .get_or_create(&KindLabels { kind })
            .inc_by(bytes);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
