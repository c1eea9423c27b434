//! Every metric the preheater exports, defined in one place (prefix `damselfly_preheater_`).
//!
//! Labels are bounded sets (source, kind, action, state, configured region); never a digest or a
//! repository name.

use damselfly_server::{MetricsRegistry, ServerMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

damselfly_server::label_sets! {
    pub struct EventLabels {
        /// `distribution` or `harbor`.
        source,
        /// `blob`, `manifest`, `artifact` or `other`.
        kind,
        /// `push`, `pull`, `mount`, `delete`, `scan`, … or `unknown`.
        action,
    }

    pub struct SourceLabels {
        source,
    }

    pub struct StateLabels {
        /// `succeeded` or `failed`.
        state,
    }

    pub struct ReasonLabels {
        /// `store` (the job was requeued) or `panic` (the job failed; the worker carried on).
        reason,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WarmLabels {
    /// A configured region (a bounded set).
    pub region: String,
    /// `blob` or `manifest`.
    pub kind: &'static str,
    /// `cached` (already there), `warmed`, `failed`.
    pub outcome: &'static str,
}

damselfly_server::label_sets! {
    pub struct KindLabels {
        kind,
    }
}

pub struct Metrics {
    registry: MetricsRegistry,
    pub events_received: Family<EventLabels, Counter>,
    pub events_deduplicated: Family<SourceLabels, Counter>,
    pub events_ignored: Family<SourceLabels, Counter>,
    pub jobs_created: Family<SourceLabels, Counter>,
    pub jobs_finished: Family<StateLabels, Counter>,
    pub jobs_running: Gauge,
    pub jobs_interrupted: Family<ReasonLabels, Counter>,
    pub warms: Family<WarmLabels, Counter>,
    pub warm_requests_sent: Family<KindLabels, Counter>,
    pub warm_seconds: Family<KindLabels, Histogram>,
    pub warmed_bytes: Counter,
    /// Requests, connections and build information, as every daemon exports them.
    pub server: ServerMetrics,
}

fn warm_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.5, 12))
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = MetricsRegistry::new("damselfly_preheater");
        let m = Metrics {
            server: r.server(),
            events_received: r.add(
                "events_received",
                "Webhook events received, by source, kind and action",
            ),
            events_deduplicated: r.add(
                "events_deduplicated",
                "Events dropped because the same event was received before",
            ),
            events_ignored: r.add(
                "events_ignored",
                "Events that need no warming (pulls, deletes, unknown actions or registries)",
            ),
            jobs_created: r.add("jobs_created", "Preheat jobs created, by source"),
            jobs_finished: r.add("jobs_finished", "Preheat jobs finished, by final state"),
            jobs_running: r.add("jobs_running", "Preheat jobs being worked on by this instance"),
            jobs_interrupted: r.add(
                "jobs_interrupted",
                "Job runs cut short, by reason: a store failure (requeued) or a bug (failed)",
            ),
            warms: r.add("warms", "Blob and manifest warms per region, by outcome"),
            warm_requests_sent: r.add("warm_requests_sent", "POST /api/v1/warm requests sent to edges"),
            warm_seconds: r.add_made(
                "warm_seconds",
                "Time to get one blob or manifest cached at one edge",
                Family::new_with_constructor(warm_histogram),
            ),
            warmed_bytes: r.add(
                "warmed_bytes",
                "Blob bytes edges ingested because the preheater asked",
            ),
            registry: r,
        };
        // Both final states exported from the start, at 0 (dashboards and alerts see "none yet").
        for state in ["succeeded", "failed"] {
            let _ = m.jobs_finished.get_or_create(&StateLabels { state });
        }
        m
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

/// Adds `n` to `family`'s series for `source`.
pub fn count(family: &Family<SourceLabels, Counter>, source: &'static str, n: u64) {
    family.get_or_create(&SourceLabels { source }).inc_by(n);
}
