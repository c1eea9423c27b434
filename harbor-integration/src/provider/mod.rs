//! The provider API Harbor's P2P Preheat drives when the instance's vendor is "Dragonfly".
//!
//! | Harbor | health | create | poll (every 10 s, up to 30 min) |
//! |---|---|---|---|
//! | ≥ 2.12 | `GET /healthy` | `POST /oapi/v1/jobs` | `GET /oapi/v1/jobs/<id>` |
//! | 2.1–2.11 | `GET /_ping` | `POST /preheats` | `GET /preheats/<id>` |
//!
//! Harbor checks health before every preheat and with the credentials of the instance, so the
//! health routes are authorised like the others: "Test connection" then catches a wrong token.
//! The routes only translate; a [`PreheatBackend`] owns the jobs.

pub mod auth;
mod job;
pub mod legacy;
pub mod oapi;

use std::future::Future;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;

pub use self::auth::ProviderAuth;
pub use self::job::{Api, Origin, PreheatRequest, Progress, ProviderJob, RegionOutcome};

/// Where provider jobs live: the preheater's durable job store.
pub trait PreheatBackend: Send + Sync + 'static {
    /// Records (durably) and queues a preheat; answers its first view.
    fn create(
        &self,
        request: PreheatRequest,
    ) -> impl Future<Output = Result<ProviderJob, ProviderError>> + Send;
    /// The job with that id, if it is a provider job.
    fn job(&self, id: u64) -> impl Future<Output = Result<Option<ProviderJob>, ProviderError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("missing or wrong Authorization")]
    Unauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The job store is down: nothing was recorded.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Dragonfly's manager answers errors as `{"message": …}`; Harbor puts the body in the task log.
impl IntoResponse for ProviderError {
    fn into_response(self) -> Response {
        let status = match &self {
            ProviderError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProviderError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
            ProviderError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProviderError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "provider request failed");
        }
        (status, Json(serde_json::json!({ "message": self.to_string() }))).into_response()
    }
}

pub struct ProviderConfig {
    pub auth: ProviderAuth,
    /// Largest request body accepted (413 beyond); Harbor's are well under 4 KiB.
    pub max_body_bytes: usize,
}

struct Shared<B> {
    backend: Arc<B>,
    config: ProviderConfig,
}

type Ctx<B> = State<Arc<Shared<B>>>;

/// The provider routes, for the preheater to merge into its router.
pub fn routes<B: PreheatBackend>(backend: Arc<B>, config: ProviderConfig) -> Router {
    let limit = config.max_body_bytes;
    let shared = Arc::new(Shared { backend, config });
    Router::new()
        .route("/healthy", get(healthy::<B>))
        .route("/oapi/v1/jobs", post(create::<B, Oapi>))
        .route("/oapi/v1/jobs/{id}", get(poll::<B, Oapi>))
        .route("/_ping", get(healthy::<B>))
        .route("/preheats", post(create::<B, Legacy>))
        .route("/preheats/{id}", get(poll::<B, Legacy>))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

fn authorize<B>(shared: &Shared<B>, headers: &HeaderMap) -> Result<(), ProviderError> {
    if shared.config.auth.admits(headers) {
        Ok(())
    } else {
        Err(ProviderError::Unauthorized)
    }
}

fn body<B>(shared: &Shared<B>, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ProviderError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ProviderError::PayloadTooLarge {
                limit: shared.config.max_body_bytes,
            }
        } else {
            ProviderError::BadRequest(rejection.body_text())
        }
    })
}

/// Ids are decimal integers on both APIs; anything else names no job.
fn job_id(raw: &str) -> Result<u64, ProviderError> {
    raw.parse::<u64>()
        .map_err(|_| ProviderError::NotFound(format!("job {raw:?}")))
}

async fn healthy<B: PreheatBackend>(
    State(shared): Ctx<B>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ProviderError> {
    authorize(&shared, &headers)?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// What sets Harbor's two provider APIs apart; the create and poll handlers are shared.
trait HarborApi: Send + Sync + 'static {
    /// The answer to a create.
    type Created: Serialize + for<'a> From<&'a ProviderJob>;
    /// The answer to a poll.
    type Status: Serialize + for<'a> From<&'a ProviderJob>;
    /// Reads a create request's body.
    const PARSE: fn(&[u8]) -> Result<PreheatRequest, String>;
}

/// Harbor ≥ 2.12: `/oapi/v1/jobs`.
struct Oapi;

impl HarborApi for Oapi {
    type Created = oapi::JobResponse;
    type Status = oapi::JobResponse;
    const PARSE: fn(&[u8]) -> Result<PreheatRequest, String> = oapi::parse;
}

/// Harbor 2.1–2.11: `/preheats`.
struct Legacy;

impl HarborApi for Legacy {
    type Created = legacy::Created;
    type Status = legacy::Status;
    const PARSE: fn(&[u8]) -> Result<PreheatRequest, String> = legacy::parse;
}

/// Logs a queued preheat, told apart by the API that asked for it (the older one has no scope).
fn log_queued(job: &ProviderJob) {
    match job.origin.api {
        Api::Oapi => {
            tracing::info!(job = job.id, url = %job.origin.url, scope = job.origin.scope.as_str(), "Harbor preheat queued")
        }
        Api::Legacy => {
            tracing::info!(job = job.id, url = %job.origin.url, "Harbor (Dragonfly 1.x API) preheat queued")
        }
    }
}

/// Authorises the caller, reads the request with the API's parser and queues the preheat.
async fn create<B: PreheatBackend, A: HarborApi>(
    State(shared): Ctx<B>,
    headers: HeaderMap,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Json<A::Created>, ProviderError> {
    authorize(&shared, &headers)?;
    let payload = body(&shared, payload)?;
    let request = (A::PARSE)(&payload).map_err(ProviderError::BadRequest)?;
    let job = shared.backend.create(request).await?;
    log_queued(&job);
    Ok(Json(A::Created::from(&job)))
}

/// Authorises the caller and answers the job `id` names, as the API shows it.
async fn poll<B: PreheatBackend, A: HarborApi>(
    State(shared): Ctx<B>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<A::Status>, ProviderError> {
    authorize(&shared, &headers)?;
    let id = job_id(&id)?;
    let job = shared
        .backend
        .job(id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("job {id}")))?;
    Ok(Json(A::Status::from(&job)))
}
