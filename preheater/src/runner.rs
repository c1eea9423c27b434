//! Working through the queue: each worker claims a job, resolves it if needed, warms every item
//! at every target region, and stores each step before taking the next.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use damselfly_core::{Digest, Reference, RepositoryName};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::job::{now_millis, Item, ItemKind, Job, RegionState, Target, WarmState};
use crate::metrics::{ReasonLabels, StateLabels};
use crate::platform::PlatformFilter;
use crate::resolve::resolve;
use crate::state::AppState;
use crate::warm::{backoff, WarmTask};

/// How long a worker waits on an empty queue before checking for shutdown.
const CLAIM_WAIT: Duration = Duration::from_secs(1);

/// Claims and runs jobs until `stop` turns true. A job interrupted by `stop` stays `running` in
/// the store and is resumed by the next start (or, with Redis, by another preheater). A job cut
/// short by a store failure goes back to the queue; a job that panics fails, and the worker
/// carries on.
pub async fn worker(state: Arc<AppState>, worker: usize, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = tokio::select! {
            claimed = state.store.next(CLAIM_WAIT) => claimed,
            _ = stop.changed() => return,
        };
        let id = match claimed {
            Ok(Some(id)) => id,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(worker, error = %e, "cannot claim a job; retrying");
                tokio::time::sleep(CLAIM_WAIT).await;
                continue;
            }
        };
        state.metrics.jobs_running.inc();
        let run = with_lease(&state, &id, run_job(&state, &id, worker));
        let outcome = AssertUnwindSafe(run).catch_unwind().await;
        state.metrics.jobs_running.dec();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(job = %id, error = %e, "job interrupted by a store failure; requeueing it");
                state
                    .metrics
                    .jobs_interrupted
                    .get_or_create(&ReasonLabels { reason: "store" })
                    .inc();
                if !requeue(&state, &id, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                // The panic itself was logged by the panic hook.
                tracing::error!(job = %id, "job panicked; failing it");
                state
                    .metrics
                    .jobs_interrupted
                    .get_or_create(&ReasonLabels { reason: "panic" })
                    .inc();
                let failed = fail_job(
                    &state,
                    &id,
                    "internal error while running the job (see the preheater's log)",
                );
                if let Err(e) = failed.await {
                    tracing::warn!(job = %id, error = %e, "cannot mark the panicked job failed");
                }
            }
        }
        if let Err(e) = state.store.release(&id).await {
            tracing::warn!(job = %id, error = %e, "cannot release a finished job");
        }
    }
}

/// Gives `id` back to the queue once the store answers again, backing off between tries.
/// False when `stop` came first (the job then resumes at the next start or lease expiry).
async fn requeue(state: &AppState, id: &str, stop: &mut watch::Receiver<bool>) -> bool {
    let (initial, max) = (Duration::from_millis(500), Duration::from_secs(30));
    for attempt in 1.. {
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt, initial, max)) => {}
            _ = stop.changed() => return false,
        }
        match state.store.requeue(id).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(job = %id, error = %e, attempt, "cannot requeue the job yet"),
        }
    }
    unreachable!("the attempts never run out")
}

async fn fail_job(state: &AppState, id: &str, reason: &str) -> Result<()> {
    if let Some(mut job) = state.store.get(id).await? {
        job.fail(reason.to_string(), now_millis());
        finish(state, &job).await?;
    }
    Ok(())
}

/// Runs `worker` again whenever it panics outside a job (a job's own panic is contained in
/// [`worker`]), so the pool never shrinks.
pub async fn supervised(state: Arc<AppState>, n: usize, stop: watch::Receiver<bool>) {
    loop {
        let run = AssertUnwindSafe(worker(state.clone(), n, stop.clone()));
        if run.catch_unwind().await.is_ok() {
            return;
        }
        tracing::error!(worker = n, "worker panicked; starting it again");
        tokio::time::sleep(CLAIM_WAIT).await;
    }
}

/// Renews the job's lease while `work` runs.
async fn with_lease(
    state: &AppState,
    id: &str,
    work: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let every = state.store.maintenance_interval();
    let renew = async {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = state.store.renew(id).await {
                tracing::warn!(job = %id, error = %e, "cannot renew job lease");
            }
        }
    };
    tokio::select! {
        result = work => result,
        _ = renew => Ok(()),
    }
}

/// Runs one job to its end; Err only when the store failed (the job is then left to resume).
pub async fn run_job(state: &AppState, id: &str, worker: usize) -> Result<()> {
    let Some(job) = state.store.get(id).await? else {
        tracing::warn!(job = %id, "claimed job does not exist");
        return Ok(());
    };
    let span = tracing::info_span!("job", job = %id, worker);
    damselfly_server::logging::adopt_parent(&span, job.traceparent.as_deref());
    process(state, job).instrument(span).await
}

async fn process(state: &AppState, mut job: Job) -> Result<()> {
    if !job.start(now_millis()) {
        return Ok(());
    }
    state.store.save(&job).await?;
    tracing::info!(registry = %job.registry, repository = %job.repository, target = ?job.target, "job started");
    if !job.is_resolved() {
        match resolve_items(state, &job).await {
            Ok((items, digest, media_type)) => {
                job.resolved_digest = digest;
                job.resolved_media_type = media_type;
                job.set_items(items, now_millis());
            }
            Err(e) => {
                tracing::warn!(error = %e, "job failed: cannot resolve");
                job.fail(e.to_string(), now_millis());
                return finish(state, &job).await;
            }
        }
        state.store.save(&job).await?;
    }
    warm_items(state, &mut job).await?;
    job.finish(now_millis());
    finish(state, &job).await
}

async fn finish(state: &AppState, job: &Job) -> Result<()> {
    state.store.save(job).await?;
    state
        .metrics
        .jobs_finished
        .get_or_create(&StateLabels {
            state: job.state.as_str(),
        })
        .inc();
    match &job.error {
        None => tracing::info!(
            state = job.state.as_str(),
            items = job.items.len(),
            "job finished"
        ),
        Some(error) => tracing::warn!(state = job.state.as_str(), %error, "job finished"),
    }
    Ok(())
}

type Resolved = (Vec<Item>, Option<String>, Option<String>);

/// The requester's credential, opened. One that cannot be opened (sealed by a preheater with
/// another cluster secret) fails the job with a clear reason rather than warming as anyone else.
fn credential(state: &AppState, job: &Job) -> Result<Option<String>> {
    job.authorization
        .as_ref()
        .map(|sealed| {
            state
                .secret
                .open_value(crate::job::CREDENTIAL, sealed)
                .map_err(|_| {
                    Error::BadRequest(
                        "the job's credential cannot be opened: preheaters sharing a store need one \
                     cluster_secret_file"
                            .into(),
                    )
                })
        })
        .transpose()
}

/// The job's items: the blob or manifest itself, or an image's whole tree.
async fn resolve_items(state: &AppState, job: &Job) -> Result<Resolved> {
    match &job.target {
        Target::Blob { digest, size } => Ok((
            vec![Item::new(ItemKind::Blob, Some(digest.clone()), None).with_size(*size)],
            Some(digest.clone()),
            None,
        )),
        Target::Manifest { digest } => Ok((
            vec![Item::new(ItemKind::Manifest, Some(digest.clone()), None)],
            Some(digest.clone()),
            None,
        )),
        Target::Image { reference, digest } => {
            let client = state.registries.get(&job.registry)?;
            let repository: RepositoryName = job
                .repository
                .parse()
                .map_err(|e| Error::BadRequest(format!("{e}")))?;
            let reference: Reference = reference.parse().map_err(|e| Error::BadRequest(format!("{e}")))?;
            let pinned: Option<Digest> = match digest {
                Some(d) => Some(d.parse().map_err(|e| Error::BadRequest(format!("{e}")))?),
                None => None,
            };
            let platforms = if job.platforms.is_empty() {
                &state.config.platforms
            } else {
                &job.platforms
            };
            let filter = PlatformFilter::parse(platforms).map_err(Error::BadRequest)?;
            let credential = credential(state, job)?;
            let attempts = state.config.jobs.resolve_attempts;
            let mut attempt = 0;
            loop {
                attempt += 1;
                match resolve(
                    &client,
                    &repository,
                    &reference,
                    pinned,
                    &filter,
                    credential.as_deref(),
                )
                .await
                {
                    Ok(r) => {
                        return Ok((r.items, Some(r.digest.to_string()), Some(r.media_type)));
                    }
                    Err(e) if e.is_retryable() && attempt < attempts => {
                        let delay = backoff(
                            attempt,
                            Duration::from_millis(state.config.warm.backoff_initial_ms),
                            Duration::from_millis(state.config.warm.backoff_max_ms),
                        );
                        tracing::info!(attempt, error = %e, "cannot resolve yet; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Warms every outstanding (item, region), storing each result as it arrives.
async fn warm_items(state: &AppState, job: &mut Job) -> Result<()> {
    let (registry, authorization) = match state.registries.get(&job.registry) {
        // A credential the requester supplied (Harbor's pull-only token) is what the edges use.
        Ok(client) => (
            client.edge_registry(),
            credential(state, job)?.or_else(|| client.edge_authorization()),
        ),
        // Blob and manifest jobs from a registry we cannot resolve from: let the edge decide.
        Err(_) => (Some(job.registry.clone()), None),
    };
    let outstanding = job.outstanding();
    // Blobs first: a tag should appear at an edge only once its layers are there.
    let (blobs, manifests): (Vec<_>, Vec<_>) = outstanding
        .into_iter()
        .partition(|(i, _)| job.items[*i].kind == ItemKind::Blob);
    for batch in [blobs, manifests] {
        let mut running = FuturesUnordered::new();
        for (index, region) in batch {
            let item = &job.items[index];
            let span = tracing::info_span!("warm", region = %region, digest = ?item.digest, tag = ?item.tag);
            let task = WarmTask {
                region: region.clone(),
                kind: item.kind,
                registry: registry.clone(),
                repository: job.repository.clone(),
                digest: item.digest.clone(),
                tag: item.tag.clone(),
                authorization: authorization.clone(),
                size: item.size,
            };
            job.set_warm_state(
                index,
                &region,
                RegionState {
                    state: WarmState::Warming,
                    attempts: 0,
                    error: None,
                },
                now_millis(),
            );
            let warmer = state.warmer.clone();
            running.push(async move { (index, region, warmer.warm(task).instrument(span).await) });
        }
        state.store.save(job).await?;
        while let Some((index, region, outcome)) = running.next().await {
            let region_state = RegionState {
                state: if outcome.cached {
                    WarmState::Cached
                } else {
                    WarmState::Failed
                },
                attempts: outcome.attempts,
                error: outcome.error,
            };
            job.set_warm_state(index, &region, region_state, now_millis());
            state.store.save(job).await?;
        }
    }
    Ok(())
}
