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
        .route("/oapi/v1/jobs", post(create_oapi::<B>))
        .route("/oapi/v1/jobs/{id}", get(get_oapi::<B>))
        .route("/_ping", get(healthy::<B>))
        .route("/preheats", post(create_legacy::<B>))
        .route("/preheats/{id}", get(get_legacy::<B>))
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

async fn create_oapi<B: PreheatBackend>(
    State(shared): Ctx<B>,
    headers: HeaderMap,
    payload: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ProviderError> {
    let job = create(&shared, &headers, payload, oapi::parse).await?;
    tracing::info!(job = job.id, url = %job.origin.url, scope = job.origin.scope.as_str(), "Harbor preheat queued");
    Ok(Json(oapi::JobResponse::from(&job)))
}

async fn get_oapi<B: PreheatBackend>(
    State(shared): Ctx<B>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ProviderError> {
    let job = find(&shared, &headers, &id).await?;
    Ok(Json(oapi::JobResponse::from(&job)))
}

async fn create_legacy<B: PreheatBackend>(
    State(shared): Ctx<B>,
    headers: HeaderMap,
    payload: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ProviderError> {
    let job = create(&shared, &headers, payload, legacy::parse).await?;
    tracing::info!(job = job.id, url = %job.origin.url, "Harbor (Dragonfly 1.x API) preheat queued");
    Ok(Json(legacy::Created::from(&job)))
}

async fn get_legacy<B: PreheatBackend>(
    State(shared): Ctx<B>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ProviderError> {
    let job = find(&shared, &headers, &id).await?;
    Ok(Json(legacy::Status::from(&job)))
}

/// Authorises the caller, reads the request with the API's `parse` and queues the preheat.
async fn create<B: PreheatBackend>(
    shared: &Shared<B>,
    headers: &HeaderMap,
    payload: Result<Bytes, BytesRejection>,
    parse: fn(&[u8]) -> Result<PreheatRequest, String>,
) -> Result<ProviderJob, ProviderError> {
    authorize(shared, headers)?;
    let payload = body(shared, payload)?;
    let request = parse(&payload).map_err(ProviderError::BadRequest)?;
    shared.backend.create(request).await
}

/// Authorises the caller and finds the job `raw` names.
async fn find<B: PreheatBackend>(
    shared: &Shared<B>,
    headers: &HeaderMap,
    raw: &str,
) -> Result<ProviderJob, ProviderError> {
    authorize(shared, headers)?;
    let id = job_id(raw)?;
    shared
        .backend
        .job(id)
        .await?
        .ok_or_else(|| ProviderError::NotFound(format!("job {id}")))
}
