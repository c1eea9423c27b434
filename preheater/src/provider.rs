//! The preheater behind Harbor's P2P Preheat: `damselfly_harbor::provider` speaks Harbor's
//! provider APIs, and this backend turns each request into an ordinary durable job — queued in
//! the same store, run by the same workers, resumed after a restart, its blobs shared with every
//! other job warming them at the same edge.
//!
//! Harbor names the artifact by manifest URL: its host must be a configured `[[registries]]`
//! entry (so a request cannot send the preheater anywhere else), and Harbor's pull-only token is
//! the credential used to resolve it and handed to the edges to fetch it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use damselfly_harbor::provider::{
    self, PreheatBackend, PreheatRequest, Progress, ProviderAuth, ProviderConfig, ProviderError, ProviderJob,
    RegionOutcome,
};

use crate::config::regions_of;
use crate::error::Error;
use crate::events::Intent;
use crate::job::{
    id_for_number, now_millis, number_of_id, Item, ItemKind, Job, JobSpec, JobState, WarmState,
};
use crate::metrics::SourceLabels;
use crate::state::AppState;

/// Metric and job `source` of jobs Harbor's P2P Preheat created.
pub const SOURCE: &str = "harbor-p2p";

/// The provider routes over this preheater's state.
pub fn routes(state: Arc<AppState>) -> Router {
    let harbor = &state.config.harbor;
    let auth = ProviderAuth::new(harbor.provider_tokens.clone(), harbor.provider_basic.clone());
    if auth.is_open() {
        tracing::warn!(
            "the Harbor provider API (/oapi/v1/jobs, /preheats) accepts unauthenticated requests; \
            set harbor.provider_tokens"
        );
    }
    let config = ProviderConfig {
        auth,
        max_body_bytes: state.config.limits.max_body_bytes,
    };
    provider::routes(Arc::new(Backend { state }), config)
}

pub struct Backend {
    state: Arc<AppState>,
}

fn unavailable(e: Error) -> ProviderError {
    if e.is_retryable() {
        ProviderError::Unavailable(e.to_string())
    } else {
        ProviderError::BadRequest(e.to_string())
    }
}

impl Backend {
    /// The regions a request targets, with the cluster id Harbor knows each by.
    fn regions(&self, request: &PreheatRequest) -> Result<Vec<(u64, String)>, ProviderError> {
        let config = &self.state.config;
        let clusters = config.harbor.clusters(&config.edges);
        let mut selected: Vec<(u64, String)> = match &request.cluster_ids {
            None => regions_of(&config.edges)
                .into_iter()
                .map(|region| (cluster_of(&clusters, &region), region))
                .collect(),
            Some(ids) => ids
                .iter()
                .map(|id| {
                    clusters.iter().find(|(c, _)| c == id).cloned().ok_or_else(|| {
                        ProviderError::BadRequest(format!(
                            "scheduler cluster {id} is not mapped to a region (known: {})",
                            clusters
                                .iter()
                                .map(|(c, r)| format!("{c}={r}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        // Harbor may name a cluster twice; each region is warmed once, in first-named order.
        let mut seen = std::collections::HashSet::new();
        selected.retain(|(_, region)| seen.insert(region.clone()));
        if selected.is_empty() {
            return Err(ProviderError::BadRequest("no edges are configured".into()));
        }
        if !request.origin.scope.every_region() {
            selected.truncate(1);
        }
        Ok(selected)
    }

    /// The job as Harbor sees it: state, and per region what is cached and what failed.
    fn view(&self, number: u64, job: &Job) -> Option<ProviderJob> {
        let origin = job.provider.clone()?;
        let config = &self.state.config;
        let clusters = config.harbor.clusters(&config.edges);
        let progress = match job.state {
            JobState::Pending => Progress::Waiting,
            JobState::Running => Progress::Running,
            JobState::Succeeded => Progress::Succeeded,
            JobState::Failed => Progress::Failed,
        };
        let regions = job
            .regions
            .iter()
            .map(|region| {
                let host = config
                    .edges
                    .iter()
                    .find(|e| &e.region == region)
                    .and_then(|e| reqwest::Url::parse(&e.url).ok())
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                let ip = host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                let mut outcome = RegionOutcome {
                    cluster_id: cluster_of(&clusters, region),
                    region: region.clone(),
                    hostname: host,
                    ip,
                    cached: Vec::new(),
                    failed: Vec::new(),
                };
                for item in &job.items {
                    let Some(state) = item.regions.get(region) else {
                        continue;
                    };
                    let url = item_url(&origin, &job.repository, item);
                    match state.state {
                        WarmState::Cached => outcome.cached.push(url),
                        WarmState::Failed => outcome
                            .failed
                            .push((url, state.error.clone().unwrap_or_else(|| "not cached".into()))),
                        WarmState::Pending | WarmState::Warming => {}
                    }
                }
                outcome
            })
            .collect();
        Some(ProviderJob {
            id: number,
            progress,
            created_at: job.created_at,
            updated_at: job.updated_at,
            origin,
            error: job.error.clone(),
            regions,
        })
    }
}

/// Regions without a mapped cluster id show as cluster 0.
fn cluster_of(clusters: &[(u64, String)], region: &str) -> u64 {
    clusters
        .iter()
        .find(|(_, r)| r == region)
        .map(|(c, _)| *c)
        .unwrap_or(0)
}

fn item_url(origin: &provider::Origin, repository: &str, item: &Item) -> String {
    let reference = item.tag.as_deref().or(item.digest.as_deref()).unwrap_or("");
    match item.kind {
        ItemKind::Blob => origin.blob_url(repository, reference),
        ItemKind::Manifest => origin.blob_url(repository, reference).replacen(
            &format!("/v2/{repository}/blobs/"),
            &format!("/v2/{repository}/manifests/"),
            1,
        ),
    }
}

impl PreheatBackend for Backend {
    async fn create(&self, request: PreheatRequest) -> Result<ProviderJob, ProviderError> {
        let state = &self.state;
        let host = request.manifest.host.clone();
        state
            .registries
            .get(&host)
            .map_err(|e| ProviderError::BadRequest(e.to_string()))?;
        let regions = self.regions(&request)?;
        let intent = Intent::Image {
            registry: host,
            repository: request.manifest.repository.clone(),
            reference: request.manifest.reference.clone(),
            digest: None,
        };
        let spec = JobSpec::from_intent(
            SOURCE,
            &intent,
            Vec::new(),
            regions.into_iter().map(|(_, r)| r).collect(),
        );
        let (number, mut job) = Job::new_numbered(spec, now_millis());
        job.authorization = request
            .authorization
            .map(|a| self.state.secret.seal_value(crate::job::CREDENTIAL, &a));
        job.provider = Some(request.origin);
        // No event key: Harbor sends one request per artifact and execution, and a repeat is a
        // new execution. Blobs already cached, or being warmed for another job, are not fetched again.
        state
            .store
            .admit(None, std::slice::from_ref(&job))
            .await
            .map_err(unavailable)?;
        state
            .metrics
            .jobs_created
            .get_or_create(&SourceLabels { source: SOURCE })
            .inc();
        tracing::info!(job = %job.id, number, registry = %job.registry, repository = %job.repository,
            regions = ?job.regions, "job queued");
        self.view(number, &job)
            .ok_or_else(|| ProviderError::Unavailable("job lost its provider origin".into()))
    }

    async fn job(&self, number: u64) -> Result<Option<ProviderJob>, ProviderError> {
        let id = id_for_number(number);
        if number_of_id(&id) != Some(number) {
            return Ok(None);
        }
        let job = self.state.store.get(&id).await.map_err(unavailable)?;
        Ok(job.and_then(|job| self.view(number, &job)))
    }
}
