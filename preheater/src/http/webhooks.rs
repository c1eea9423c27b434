//! Webhook receivers. They only record work: every event is classified, deduplicated and turned
//! into queued jobs in one store write, then answered `202` at once (registries time out after
//! about a second and retry forever; Harbor after three).
//!
//! Answers: `202 {"accepted","duplicates","ignored","jobs"}` for every well-formed delivery,
//! including events that need no work; `400` malformed, `401` wrong `Authorization`, `413` too
//! large, `415` wrong content type, `503` when the job store is down (the sender retries).

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use super::{authorize, body, content_type};
use crate::error::{Error, Result};
use crate::events::{distribution, harbor, ClassifiedEvent};
use crate::job::{now_millis, Job, JobSpec};
use crate::metrics::{count, EventLabels};
use crate::state::AppState;
use crate::store::Admission;

#[derive(Debug, Default, Serialize)]
pub struct Receipt {
    /// Events that created jobs.
    pub accepted: usize,
    /// Events seen before: nothing new was queued.
    pub duplicates: usize,
    /// Events that need no warming (pulls, deletes, unknown actions, unconfigured registries).
    pub ignored: usize,
    /// Ids of the jobs created.
    pub jobs: Vec<String>,
}

pub async fn distribution(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    payload: std::result::Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    let expected = state.config.webhook_token.as_ref().map(|t| format!("Bearer {t}"));
    authorize(&headers, expected.as_deref())?;
    content_type(&headers, &distribution::CONTENT_TYPES)?;
    let payload = body(&state, payload)?;
    let envelope = distribution::parse(&payload).map_err(Error::BadRequest)?;
    let mut receipt = Receipt::default();
    for event in &envelope.events {
        admit(&state, "distribution", event.classify(), &mut receipt).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

pub async fn harbor(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    payload: std::result::Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    authorize(&headers, state.config.harbor_auth.as_deref())?;
    let format = content_type(
        &headers,
        &[harbor::DEFAULT_CONTENT_TYPE, harbor::CLOUDEVENTS_CONTENT_TYPE],
    )?;
    let payload = body(&state, payload)?;
    let event = if format == harbor::CLOUDEVENTS_CONTENT_TYPE {
        harbor::parse_cloudevent(&payload)
    } else {
        harbor::parse_default(&payload)
    }
    .map_err(Error::BadRequest)?;
    let mut receipt = Receipt::default();
    admit(&state, "harbor", event, &mut receipt).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

/// Counts the event and queues its jobs unless it was seen before.
async fn admit(
    state: &AppState,
    source: &'static str,
    event: ClassifiedEvent,
    receipt: &mut Receipt,
) -> Result<()> {
    state
        .metrics
        .events_received
        .get_or_create(&EventLabels {
            source,
            kind: event.kind,
            action: event.action,
        })
        .inc();
    let regions = state.warmer.regions();
    let mut jobs = Vec::new();
    let mut reasons = event.ignored.clone().into_iter().collect::<Vec<_>>();
    for intent in &event.intents {
        match state.registries.get(intent.registry()) {
            Ok(_) if regions.is_empty() => reasons.push("no edges are configured".into()),
            Ok(_) => jobs.push(Job::new(
                JobSpec::from_intent(source, intent, Vec::new(), regions.clone()),
                now_millis(),
            )),
            Err(e) => {
                if state.first_from_unconfigured(intent.registry()) {
                    tracing::warn!(
                        source,
                        registry = intent.registry(),
                        "event from a registry that is not under [[registries]] ignored: add it (host as \
                         events name it, url where the preheater reaches it) to warm its pushes"
                    );
                }
                reasons.push(e.to_string())
            }
        }
    }
    if jobs.is_empty() {
        count(&state.metrics.events_ignored, source, 1);
        receipt.ignored += 1;
        tracing::debug!(source, key = %event.dedupe_key, action = event.action, reasons = ?reasons, "event needs no warming");
        return Ok(());
    }
    match state.store.admit(Some(&event.dedupe_key), &jobs).await? {
        Admission::Created => {
            count(&state.metrics.jobs_created, source, jobs.len() as u64);
            receipt.accepted += 1;
            for job in &jobs {
                tracing::info!(source, job = %job.id, registry = %job.registry, repository = %job.repository,
                    target = ?job.target, "job queued");
                receipt.jobs.push(job.id.clone());
            }
        }
        Admission::Duplicate => {
            count(&state.metrics.events_deduplicated, source, 1);
            receipt.duplicates += 1;
            tracing::debug!(source, key = %event.dedupe_key, "duplicate event");
        }
    }
    Ok(())
}
