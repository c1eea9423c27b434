//! What the status page shows (`GET /`, `GET /api/v1/status`): one report assembled from the
//! store, the metrics, the hosts heard from and a short history of the byte counters.
//!
//! The history is sampled here rather than read back from Prometheus so that the page works on
//! an edge nobody scrapes: one sample every [`SAMPLE_EVERY`], an hour kept.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use damselfly_core::api::BytesBySource;
use serde::{Deserialize, Serialize};

use crate::metrics::{KindLabels, Metrics};
use crate::state::AppState;
use crate::store::now_millis;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// An hour of samples.
const SAMPLES_KEPT: usize = 360;
/// Hosts remembered for the racks table; beyond it the least recently heard go first.
const MAX_HOSTS: u64 = 100_000;
/// Repositories in the recent preheats table.
const PREHEATS_KEPT: usize = 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub region: String,
    pub version: String,
    pub uptime_secs: u64,
    pub cache: CacheStatus,
    /// Hits over requests since start, by kind (`None` before the first request).
    pub hit_ratio: BTreeMap<String, Option<f64>>,
    pub bytes: ByteTotals,
    /// Byte counters as sampled, oldest first: the page plots their rates.
    pub history: Vec<Sample>,
    pub ingests: Vec<IngestStatus>,
    /// Hosts heard from within the scheduler's peer TTL, by location.
    pub racks: Vec<RackStatus>,
    /// What those hosts' agents report having downloaded since they started, by source.
    pub agents_downloaded: BytesBySource,
    /// Repositories the preheater warmed here lately, most recent first.
    pub preheats: Vec<PreheatStatus>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreheatStatus {
    /// `<registry>/<repository>` (the registry empty for the default upstream).
    pub repository: String,
    pub blobs: u64,
    pub manifests: u64,
    pub last_at_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheStatus {
    /// Blobs and manifests on disk plus room reserved by transfers in flight.
    pub used_bytes: u64,
    pub quota_bytes: u64,
    pub high_watermark_bytes: u64,
    pub low_watermark_bytes: u64,
    pub blobs: usize,
    pub pinned_blobs: usize,
    pub manifests: u64,
    pub tags: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ByteTotals {
    /// Received from upstream registries.
    pub upstream: u64,
    /// Sent, by kind: `blob` (to runtimes), `piece` (to agents), `manifest`.
    pub served: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub upstream_bytes: u64,
    pub served_bytes: u64,
    /// The agents' reported totals (those heard from at the time).
    pub agents: BytesBySource,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestStatus {
    pub digest: String,
    /// Known once the upstream has told the size.
    pub size: Option<u64>,
    pub pieces_sealed: u64,
    pub pieces: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RackStatus {
    pub location: String,
    pub hosts: usize,
    pub uploads_active: u64,
    pub upload_slots: u64,
}

/// A host's last announcement, as the racks table needs it.
#[derive(Clone, Debug)]
struct HostSeen {
    location: String,
    uploads_active: u32,
    upload_slots: u32,
    downloaded: BytesBySource,
}

/// What the status page keeps between requests.
pub struct StatusRecorder {
    started: Instant,
    history: Mutex<VecDeque<Sample>>,
    hosts: moka::sync::Cache<String, HostSeen>,
    preheats: Mutex<VecDeque<PreheatStatus>>,
}

const KINDS: [&str; 3] = ["blob", "piece", "manifest"];

fn served(metrics: &Metrics, kind: &'static str) -> u64 {
    metrics.served_bytes.get_or_create(&KindLabels { kind }).get()
}

fn sample_of(metrics: &Metrics, agents: BytesBySource) -> Sample {
    Sample {
        at_ms: now_millis(),
        upstream_bytes: metrics.upstream_bytes.get(),
        served_bytes: KINDS.iter().map(|k| served(metrics, k)).sum(),
        agents,
    }
}

impl StatusRecorder {
    /// `host_ttl`: how long a host counts after its last announcement (the scheduler's).
    pub fn new(host_ttl: Duration) -> Self {
        StatusRecorder {
            started: Instant::now(),
            history: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
            hosts: moka::sync::Cache::builder()
                .max_capacity(MAX_HOSTS)
                .time_to_live(host_ttl)
                .build(),
            preheats: Mutex::new(VecDeque::with_capacity(PREHEATS_KEPT)),
        }
    }

    /// Notes an announcement of `host_id` (called by the scheduler API).
    pub fn heard(
        &self,
        host_id: &str,
        location: String,
        uploads_active: u32,
        upload_slots: u32,
        downloaded: Option<BytesBySource>,
    ) {
        let downloaded = downloaded
            .or_else(|| self.hosts.get(host_id).map(|h| h.downloaded))
            .unwrap_or_default();
        self.hosts.insert(
            host_id.to_string(),
            HostSeen {
                location,
                uploads_active,
                upload_slots,
                downloaded,
            },
        );
    }

    /// Notes a warm of `repository` (called by the warm API).
    pub fn warmed(&self, repository: String, blob: bool) {
        let Ok(mut preheats) = self.preheats.lock() else {
            return;
        };
        let mut entry = preheats
            .iter()
            .position(|p| p.repository == repository)
            .and_then(|at| preheats.remove(at))
            .unwrap_or(PreheatStatus {
                repository,
                blobs: 0,
                manifests: 0,
                last_at_ms: 0,
            });
        if blob {
            entry.blobs += 1;
        } else {
            entry.manifests += 1;
        }
        entry.last_at_ms = now_millis();
        preheats.push_front(entry);
        preheats.truncate(PREHEATS_KEPT);
    }

    fn agents_downloaded(&self) -> BytesBySource {
        self.hosts
            .iter()
            .fold(BytesBySource::default(), |sum, (_, host)| {
                sum.plus(host.downloaded)
            })
    }

    /// Takes one sample of the byte counters (every [`SAMPLE_EVERY`], by the server).
    pub fn sample(&self, metrics: &Metrics) {
        let sample = sample_of(metrics, self.agents_downloaded());
        if let Ok(mut history) = self.history.lock() {
            if history.len() == SAMPLES_KEPT {
                history.pop_front();
            }
            history.push_back(sample);
        }
    }

    /// The samples kept, and one taken now: the last stretch of the plot is never stale.
    fn history_until_now(&self, metrics: &Metrics) -> Vec<Sample> {
        let mut history: Vec<Sample> = self
            .history
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        history.push(sample_of(metrics, self.agents_downloaded()));
        history
    }

    fn racks(&self) -> Vec<RackStatus> {
        let mut by_location: BTreeMap<String, RackStatus> = BTreeMap::new();
        for (_, host) in self.hosts.iter() {
            let rack = by_location
                .entry(host.location.clone())
                .or_insert_with(|| RackStatus {
                    location: host.location.clone(),
                    hosts: 0,
                    uploads_active: 0,
                    upload_slots: 0,
                });
            rack.hosts += 1;
            rack.uploads_active += u64::from(host.uploads_active);
            rack.upload_slots += u64::from(host.upload_slots);
        }
        by_location.into_values().collect()
    }
}

/// The report as of now.
pub async fn report(state: &AppState) -> StatusReport {
    let metrics = &state.metrics;
    let recorder = &state.status;
    let quota = state.config.quota_bytes().unwrap_or(0);
    let (blobs, pinned_blobs) = state.store.blob_counts().unwrap_or_default();
    let catalog = |kind| {
        metrics
            .catalog_entries
            .get_or_create(&KindLabels { kind })
            .get()
            .max(0) as u64
    };
    let cache = CacheStatus {
        used_bytes: state.store.footprint(),
        quota_bytes: quota,
        high_watermark_bytes: (quota as f64 * state.config.cache.high_watermark) as u64,
        low_watermark_bytes: (quota as f64 * state.config.cache.low_watermark) as u64,
        blobs,
        pinned_blobs,
        manifests: catalog("manifest"),
        tags: catalog("tag"),
    };
    let hit_ratio = ["blob", "manifest"]
        .into_iter()
        .map(|kind| {
            let hits = metrics.cache_hits.get_or_create(&KindLabels { kind }).get();
            let misses = metrics.cache_misses.get_or_create(&KindLabels { kind }).get();
            let total = hits + misses;
            (kind.to_string(), (total > 0).then(|| hits as f64 / total as f64))
        })
        .collect();
    let bytes = ByteTotals {
        upstream: metrics.upstream_bytes.get(),
        served: KINDS
            .iter()
            .map(|k| (k.to_string(), served(metrics, k)))
            .collect(),
    };
    let mut warnings = Vec::new();
    if state.config.insecure {
        warnings.push("insecure: task keys go to callers without a client certificate".to_string());
    }
    if cache.used_bytes >= cache.high_watermark_bytes && quota > 0 {
        warnings.push("the cache is at its high watermark: blobs are being evicted".to_string());
    }
    let failures = metrics.ingest_failures.get();
    if failures > 0 {
        warnings.push(format!(
            "{failures} upstream transfers failed since start (see the log)"
        ));
    }
    let redis_answers = async {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), state.peers.ping()).await,
            Ok(Ok(()))
        )
    };
    if state.config.redis.is_some() && !redis_answers.await {
        warnings.push("Redis does not answer: the scheduler runs without shared state".to_string());
    }
    StatusReport {
        region: state.config.region.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: recorder.started.elapsed().as_secs(),
        cache,
        hit_ratio,
        bytes,
        history: recorder.history_until_now(metrics),
        ingests: state
            .store
            .ingests()
            .into_iter()
            .map(|(digest, progress)| IngestStatus {
                digest: digest.to_string(),
                size: progress.layout.map(|l| l.size),
                pieces_sealed: progress.sealed,
                pieces: progress.layout.map(|l| l.count()),
            })
            .collect(),
        racks: recorder.racks(),
        agents_downloaded: recorder.agents_downloaded(),
        preheats: recorder
            .preheats
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default(),
        warnings,
    }
}
