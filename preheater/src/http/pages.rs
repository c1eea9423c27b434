//! The preheater's pages: `GET /` lists the latest jobs with their progress per region,
//! `GET /jobs/<id>` shows one job item by item and region by region, with errors.
//!
//! They show what the job API shows, so they take the same `api_token`: as a bearer token, or
//! as the password of HTTP Basic (any user name), which lets a browser ask for it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use damselfly_server::page::{self, bytes, escape, section};

use crate::job::{Job, Target};
use crate::state::AppState;

const LISTED: usize = 50;

/// Whether the caller presented the API token (bearer, or Basic's password).
fn allowed(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.api_token.as_ref().is_none_or(|token| {
        damselfly_core::constant_time_eq(page::presented_secret(headers).as_bytes(), token.as_bytes())
    })
}

fn refused() -> Response {
    page::ask_for_secret("Damselfly preheater", "job API token")
}

fn target(job: &Job) -> String {
    let what = match &job.target {
        Target::Image { reference, .. } => format!(":{reference}"),
        Target::Manifest { digest } | Target::Blob { digest, .. } => format!("@{digest}"),
    };
    format!("{}/{}{what}", job.registry, job.repository)
}

/// Items cached over items, per region.
fn progress(job: &Job) -> String {
    if job.items.is_empty() {
        return "resolving".into();
    }
    job.regions
        .iter()
        .map(|region| {
            let (done, all) = job.cached_at(region);
            format!(
                "{} <progress max=\"{all}\" value=\"{done}\"></progress> {done}/{all}",
                escape(region)
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

fn state_of(job: &Job) -> String {
    serde_json::to_value(job.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub async fn jobs(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !allowed(&state, &headers) {
        return refused();
    }
    let jobs = match state.store.recent(LISTED).await {
        Ok(jobs) => jobs,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("job store: {e}\n")).into_response(),
    };
    let rows = jobs
        .iter()
        .map(|job| {
            vec![
                format!(
                    "<a href=\"/jobs/{id}\"><code>{short}</code></a>",
                    id = job.id,
                    short = &job.id[..job.id.len().min(12)]
                ),
                escape(&job.source),
                escape(&target(job)),
                state_of(job),
                progress(job),
                escape(job.error.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    let mut body = String::new();
    let headers = ["job", "source", "image", "state", "cached per region", "error"];
    section(&mut body, "Latest jobs", "no jobs yet", &headers, rows);
    let subtitle = format!(
        "version {} · the {LISTED} newest jobs · refreshes every 10 s · <a href=\"/metrics\">metrics</a>",
        env!("CARGO_PKG_VERSION")
    );
    Html(page::document("Damselfly preheater", &subtitle, &[], &body)).into_response()
}

pub async fn job(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !allowed(&state, &headers) {
        return refused();
    }
    let found = if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        state.store.get(&id).await.ok().flatten()
    } else {
        None
    };
    let Some(job) = found else {
        return (StatusCode::NOT_FOUND, "no such job\n").into_response();
    };
    let rows = job
        .items
        .iter()
        .flat_map(|item| {
            let name = item
                .tag
                .clone()
                .or_else(|| item.digest.clone())
                .unwrap_or_default();
            let kind = format!("{:?}", item.kind).to_lowercase();
            let size = item.size.map_or(String::new(), bytes);
            item.regions.iter().map(move |(region, r)| {
                vec![
                    format!("<code>{}</code>", escape(&name)),
                    kind.clone(),
                    size.clone(),
                    escape(region),
                    format!("{:?}", r.state).to_lowercase(),
                    r.attempts.to_string(),
                    escape(r.error.as_deref().unwrap_or("")),
                ]
            })
        })
        .collect();
    let mut body = String::new();
    page::cards(
        &mut body,
        &[
            (
                "state",
                state_of(&job),
                escape(job.error.as_deref().unwrap_or("")),
            ),
            ("items", job.items.len().to_string(), progress(&job)),
        ],
    );
    let headers = ["item", "kind", "size", "region", "state", "attempts", "error"];
    section(&mut body, "Items by region", "not resolved yet", &headers, rows);
    let subtitle = format!(
        "{} · from {} · <a href=\"/\">all jobs</a>",
        escape(&target(&job)),
        escape(&job.source)
    );
    let title = format!("Damselfly preheater · job {}", job.id);
    Html(page::document(&title, &subtitle, &[], &body)).into_response()
}
