//! Every metric the preheater exports, defined in one place (prefix `damselfly_preheater_`).
//!
//! Labels are bounded sets (source, kind, action, state, configured region); never a digest or a
//! repository name.

use damselfly_server::ServerMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `distribution` or `harbor`.
    pub source: &'static str,
    /// `blob`, `manifest`, `artifact` or `other`.
    pub kind: &'static str,
    /// `push`, `pull`, `mount`, `delete`, `scan`, … or `unknown`.
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `succeeded` or `failed`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `store` (the job was requeued) or `panic` (the job failed; the worker carried on).
    pub reason: &'static str,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
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
        let mut registry = Registry::with_prefix("damselfly_preheater");
        let m = Metrics {
            server: ServerMetrics::register(&mut registry),
            events_received: Family::default(),
            events_deduplicated: Family::default(),
            events_ignored: Family::default(),
            jobs_created: Family::default(),
            jobs_finished: Family::default(),
            jobs_running: Gauge::default(),
            jobs_interrupted: Family::default(),
            warms: Family::default(),
            warm_requests_sent: Family::default(),
            warm_seconds: Family::new_with_constructor(warm_histogram),
            warmed_bytes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events_received",
            "Webhook events received, by source, kind and action",
            m.events_received.clone(),
        );
        registry.register(
            "events_deduplicated",
            "Events dropped because the same event was received before",
            m.events_deduplicated.clone(),
        );
        registry.register(
            "events_ignored",
            "Events that need no warming (pulls, deletes, unknown actions or registries)",
            m.events_ignored.clone(),
        );
        registry.register(
            "jobs_created",
            "Preheat jobs created, by source",
            m.jobs_created.clone(),
        );
        registry.register(
            "jobs_finished",
            "Preheat jobs finished, by final state",
            m.jobs_finished.clone(),
        );
        registry.register(
            "jobs_running",
            "Preheat jobs being worked on by this instance",
            m.jobs_running.clone(),
        );
        registry.register(
            "jobs_interrupted",
            "Job runs cut short, by reason: a store failure (requeued) or a bug (failed)",
            m.jobs_interrupted.clone(),
        );
        registry.register(
            "warms",
            "Blob and manifest warms per region, by outcome",
            m.warms.clone(),
        );
        registry.register(
            "warm_requests_sent",
            "POST /api/v1/warm requests sent to edges",
            m.warm_requests_sent.clone(),
        );
        registry.register(
            "warm_seconds",
            "Time to get one blob or manifest cached at one edge",
            m.warm_seconds.clone(),
        );
        registry.register(
            "warmed_bytes",
            "Blob bytes edges ingested because the preheater asked",
            m.warmed_bytes.clone(),
        );
        // Both final states exported from the start, at 0 (dashboards and alerts see "none yet").
        for state in ["succeeded", "failed"] {
            let _ = m.jobs_finished.get_or_create(&StateLabels { state });
        }
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
