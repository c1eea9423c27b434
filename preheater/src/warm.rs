//! Getting one blob or manifest cached at one region's edge: shared between jobs, bounded per
//! region, retried with jittered backoff.
//!
//! Two jobs that need the same blob at the same edge (a blob-push job and the image job that
//! follows it, or two tags of one image) wait on one warm; a blob already cached is confirmed with
//! one status request and never asked for again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use damselfly_core::api::{WarmAnswer, WarmKind, WarmRequest, WarmState};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::WarmConfig;
use crate::edge::EdgeClient;
use crate::error::{Error, Result};
use crate::job::ItemKind;
use crate::metrics::{KindLabels, Metrics, WarmLabels};

/// One thing to get cached at one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmTask {
    pub region: String,
    pub kind: ItemKind,
    pub registry: Option<String>,
    pub repository: String,
    pub digest: Option<String>,
    pub tag: Option<String>,
    pub authorization: Option<String>,
    pub size: Option<u64>,
}

impl WarmTask {
    /// Blobs are shared by digest (an edge stores each blob once); manifests by what is asked.
    fn key(&self) -> String {
        match self.kind {
            ItemKind::Blob => format!("{}|blob|{}", self.region, self.digest.as_deref().unwrap_or("")),
            ItemKind::Manifest => format!(
                "{}|manifest|{}|{}|{}|{}",
                self.region,
                self.registry.as_deref().unwrap_or(""),
                self.repository,
                self.tag.as_deref().unwrap_or(""),
                self.digest.as_deref().unwrap_or("")
            ),
        }
    }

    fn kind_label(&self) -> &'static str {
        match self.kind {
            ItemKind::Blob => "blob",
            ItemKind::Manifest => "manifest",
        }
    }
}

/// How a warm ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmOutcome {
    pub cached: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

/// `initial × 2^(attempt-1)`, capped, with "equal jitter": between half and all of it, so
/// retries from many jobs spread out but never come back immediately.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    let half = cap / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// A region's edges (several when they form a cluster) and its warms at once.
struct EdgeSlot {
    clients: Vec<EdgeClient>,
    permits: Semaphore,
}

type SharedOutcome = Shared<BoxFuture<'static, WarmOutcome>>;

pub struct Warmer {
    edges: BTreeMap<String, Arc<EdgeSlot>>,
    in_flight: Mutex<HashMap<String, SharedOutcome>>,
    config: WarmConfig,
    metrics: Arc<Metrics>,
}

impl Warmer {
    pub fn new(edges: Vec<EdgeClient>, config: WarmConfig, metrics: Arc<Metrics>) -> Self {
        let mut by_region: BTreeMap<String, Vec<EdgeClient>> = BTreeMap::new();
        for client in edges {
            by_region
                .entry(client.region().to_string())
                .or_default()
                .push(client);
        }
        let edges = by_region
            .into_iter()
            .map(|(region, clients)| {
                let slot = EdgeSlot {
                    clients,
                    permits: Semaphore::new(config.concurrency_per_region),
                };
                (region, Arc::new(slot))
            })
            .collect();
        Warmer {
            edges,
            in_flight: Mutex::new(HashMap::new()),
            config,
            metrics,
        }
    }

    pub fn regions(&self) -> Vec<String> {
        self.edges.keys().cloned().collect()
    }

    /// Gets the task's object cached, joining a warm of the same object already running.
    pub async fn warm(self: &Arc<Self>, task: WarmTask) -> WarmOutcome {
        let key = task.key();
        let shared = {
            let Ok(mut in_flight) = self.in_flight.lock() else {
                return WarmOutcome {
                    cached: false,
                    attempts: 0,
                    error: Some("warm bookkeeping poisoned".into()),
                };
            };
            match in_flight.get(&key) {
                Some(existing) => existing.clone(),
                None => {
                    let this = self.clone();
                    let own_key = key.clone();
                    // Spawned, so the warm finishes even if the job that started it stops waiting.
                    let handle = tokio::spawn(
                        async move {
                            let outcome = this.run(&task).await;
                            if let Ok(mut in_flight) = this.in_flight.lock() {
                                in_flight.remove(&own_key);
                            }
                            outcome
                        }
                        .in_current_span(),
                    );
                    let shared = async move {
                        handle.await.unwrap_or_else(|e| WarmOutcome {
                            cached: false,
                            attempts: 0,
                            error: Some(format!("warm task ended: {e}")),
                        })
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared.await
    }

    async fn run(&self, task: &WarmTask) -> WarmOutcome {
        let Some(slot) = self.edges.get(&task.region) else {
            return WarmOutcome {
                cached: false,
                attempts: 0,
                error: Some(format!("no edge is configured for region {:?}", task.region)),
            };
        };
        let started = Instant::now();
        let kind = task.kind_label();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The region's edges in turn, one per attempt: an edge of a cluster that is down
            // (or failing) leaves the warm to the next, which routes it to the blob's owner.
            let client = &slot.clients[(attempt as usize - 1) % slot.clients.len()];
            let result = {
                let _permit = slot.permits.acquire().await;
                match task.kind {
                    ItemKind::Blob => self.warm_blob(client, task).await,
                    ItemKind::Manifest => self.warm_manifest(client, task).await,
                }
            };
            let outcome = match result {
                Ok(fresh) => {
                    let outcome = if fresh { "warmed" } else { "cached" };
                    self.count(task, outcome);
                    self.metrics
                        .warm_seconds
                        .get_or_create(&KindLabels { kind })
                        .observe(started.elapsed().as_secs_f64());
                    if fresh && task.kind == ItemKind::Blob {
                        self.metrics.warmed_bytes.inc_by(task.size.unwrap_or(0));
                    }
                    WarmOutcome {
                        cached: true,
                        attempts: attempt,
                        error: None,
                    }
                }
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => {
                    let delay = backoff(
                        attempt,
                        Duration::from_millis(self.config.backoff_initial_ms),
                        Duration::from_millis(self.config.backoff_max_ms),
                    );
                    tracing::info!(region = %task.region, kind, digest = ?task.digest, attempt, error = %e,
                        delay_ms = delay.as_millis() as u64, "warm failed; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(region = %task.region, kind, digest = ?task.digest, attempt, error = %e, "warm failed");
                    self.count(task, "failed");
                    WarmOutcome {
                        cached: false,
                        attempts: attempt,
                        error: Some(e.to_string()),
                    }
                }
            };
            return outcome;
        }
    }

    fn count(&self, task: &WarmTask, outcome: &'static str) {
        self.metrics
            .warms
            .get_or_create(&WarmLabels {
                region: task.region.clone(),
                kind: task.kind_label(),
                outcome,
            })
            .inc();
    }

    fn request(&self, task: &WarmTask, kind: WarmKind) -> WarmRequest {
        self.metrics
            .warm_requests_sent
            .get_or_create(&KindLabels { kind: kind.as_str() })
            .inc();
        WarmRequest {
            registry: task.registry.clone(),
            repository: task.repository.clone(),
            kind,
            digest: task.digest.clone(),
            tag: task.tag.clone(),
            authorization: task.authorization.clone(),
        }
    }

    /// The manifest warm is synchronous at the edge. By tag, the digest is not sent: the edge
    /// resolves the tag itself and records the mapping.
    async fn warm_manifest(&self, edge: &EdgeClient, task: &WarmTask) -> Result<bool> {
        let mut request = self.request(task, WarmKind::Manifest);
        if request.tag.is_some() {
            request.digest = None;
        }
        let answer = match edge.warm(&request).await {
            // Distribution announces a tagged push before it links the tag, so the edge may not
            // find a tag we already resolved: worth the bounded retries, not an instant failure.
            Err(Error::EdgeRefused {
                region,
                status: 404,
                message,
            }) if task.tag.is_some() && task.digest.is_some() => {
                return Err(Error::EdgeUnavailable {
                    region,
                    message: format!("tag not readable at the origin yet: {message}"),
                })
            }
            other => other?,
        };
        if answer.state != WarmState::Cached {
            return Err(unexpected(edge, &answer));
        }
        if let (Some(want), Some(got), Some(tag)) = (&task.digest, &answer.digest, &task.tag) {
            if want != got {
                tracing::warn!(region = edge.region(), tag, resolved = %want, edge_has = %got,
                    "tag moved since it was resolved");
            }
        }
        Ok(true)
    }

    /// Ok(true) when our request made the edge ingest it, Ok(false) when it was already there.
    async fn warm_blob(&self, edge: &EdgeClient, task: &WarmTask) -> Result<bool> {
        let digest = task
            .digest
            .as_deref()
            .ok_or_else(|| Error::Internal("blob warm without digest".into()))?;
        let status = edge.status(digest).await?;
        let fresh = match status.state {
            WarmState::Cached => return Ok(false),
            WarmState::Ingesting => false,
            WarmState::Absent | WarmState::Failed => {
                let answer = edge.warm(&self.request(task, WarmKind::Blob)).await?;
                match answer.state {
                    WarmState::Cached => return Ok(true),
                    WarmState::Ingesting => true,
                    WarmState::Absent | WarmState::Failed => return Err(unexpected(edge, &answer)),
                }
            }
        };
        self.wait_cached(edge, digest).await?;
        Ok(fresh)
    }

    /// Polls the edge every 200 ms, backing off to 2 s, until the ingest ends.
    async fn wait_cached(&self, edge: &EdgeClient, digest: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(self.config.poll_timeout_secs);
        let mut interval = Duration::from_millis(self.config.poll_initial_ms);
        let max = Duration::from_millis(self.config.poll_max_ms);
        loop {
            tokio::time::sleep(interval).await;
            let status = edge.status(digest).await?;
            match status.state {
                WarmState::Cached => return Ok(()),
                WarmState::Ingesting => {}
                WarmState::Failed => {
                    return Err(Error::EdgeUnavailable {
                        region: edge.region().to_string(),
                        message: format!(
                            "ingest failed: {}",
                            status.error.as_deref().unwrap_or("no reason given")
                        ),
                    })
                }
                WarmState::Absent => {
                    return Err(Error::EdgeUnavailable {
                        region: edge.region().to_string(),
                        message: format!("ingest of {digest} stopped without caching it"),
                    })
                }
            }
            if Instant::now() > deadline {
                return Err(Error::EdgeUnavailable {
                    region: edge.region().to_string(),
                    message: format!("{digest} not cached after {}s", self.config.poll_timeout_secs),
                });
            }
            interval = (interval * 2).min(max);
        }
    }
}

fn unexpected(edge: &EdgeClient, answer: &WarmAnswer) -> Error {
    Error::EdgeUnavailable {
        region: edge.region().to_string(),
        message: format!(
            "unexpected warm state {:?}{}",
            answer.state,
            answer
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..200 {
            let first = backoff(1, initial, max);
            assert!(
                first >= Duration::from_millis(50) && first <= initial,
                "{first:?}"
            );
            let third = backoff(3, initial, max);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            let late = backoff(40, initial, max);
            assert!(late >= Duration::from_secs(1) && late <= max, "{late:?}");
        }
    }

    #[test]
    fn blobs_share_by_digest_and_manifests_by_reference() {
        let blob = WarmTask {
            region: "eu".into(),
            kind: ItemKind::Blob,
            registry: Some("r".into()),
            repository: "a/b".into(),
            digest: Some("sha256:1".into()),
            tag: None,
            authorization: None,
            size: None,
        };
        let other_repo = WarmTask {
            repository: "c/d".into(),
            ..blob.clone()
        };
        assert_eq!(blob.key(), other_repo.key());
        let other_region = WarmTask {
            region: "us".into(),
            ..blob.clone()
        };
        assert_ne!(blob.key(), other_region.key());
        let manifest = WarmTask {
            kind: ItemKind::Manifest,
            tag: Some("v1".into()),
            ..blob.clone()
        };
        let manifest_elsewhere = WarmTask {
            repository: "c/d".into(),
            ..manifest.clone()
        };
        assert_ne!(manifest.key(), manifest_elsewhere.key());
    }
}
