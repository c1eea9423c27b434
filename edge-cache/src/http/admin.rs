//! The admin API, for operators (`Authorization: Bearer <admin_token>`; off without one):
//!
//! - `GET /api/v1/admin/blobs`: the blobs held, with sizes, last read and pins.
//! - `DELETE /api/v1/admin/blobs/<digest>`: purge a blob now (204; 404 if not held; 409 while
//!   a transfer of it runs).
//! - `PUT`/`DELETE /api/v1/admin/pins/<digest>`: pin a blob against eviction, or unpin it.
//! - `GET /api/v1/admin/tags`: the tag mappings held.
//! - `DELETE /api/v1/admin/tags/<registry>/<repository>:<tag>`, `DELETE
//!   /api/v1/admin/repositories/<registry>/<repository>`: forget a tag, or every tag of a
//!   repository (`{"purged": n}`); the next pull by tag asks the upstream.

use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use damselfly_core::Digest;
use serde_json::json;

use super::bearer::Admin;
use crate::error::{EdgeError, EdgeResult};
use crate::store::{BlobListing, Purged, TagListing};

fn digest(text: &str) -> EdgeResult<Digest> {
    text.parse()
        .map_err(|_| EdgeError::DigestInvalid(text.to_string()))
}

pub(crate) async fn blobs(Admin(state): Admin) -> EdgeResult<Json<Vec<BlobListing>>> {
    Ok(Json(state.store.list_blobs()?))
}

pub(crate) async fn purge_blob(Admin(state): Admin, Path(text): Path<String>) -> EdgeResult<Response> {
    Ok(match state.store.purge_blob(&digest(&text)?)? {
        Purged::Removed => StatusCode::NO_CONTENT.into_response(),
        Purged::Absent => EdgeError::BlobUnknown(text).into_response(),
        Purged::InFlight => (
            StatusCode::CONFLICT,
            Json(json!({"error": "a transfer of this blob is running; purge it once it is done"})),
        )
            .into_response(),
    })
}

/// `PUT` pins, `DELETE` unpins.
pub(crate) async fn pin(
    Admin(state): Admin,
    method: Method,
    Path(text): Path<String>,
) -> EdgeResult<StatusCode> {
    state.store.set_pinned(&digest(&text)?, method == Method::PUT)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn tags(Admin(state): Admin) -> EdgeResult<Json<Vec<TagListing>>> {
    Ok(Json(state.store.list_tags()?))
}

pub(crate) async fn purge_tag(
    Admin(state): Admin,
    Path(tag): Path<String>,
) -> EdgeResult<Json<serde_json::Value>> {
    let purged = state.store.purge_tags(|key| key == tag)?;
    Ok(Json(json!({ "purged": purged })))
}

pub(crate) async fn purge_repository(
    Admin(state): Admin,
    Path(name): Path<String>,
) -> EdgeResult<Json<serde_json::Value>> {
    // A tag key is `<registry>/<repository>:<tag>`; tags have no `/`, so the last `:` splits it.
    let purged = state
        .store
        .purge_tags(|key| key.rsplit_once(':').is_some_and(|(repo, _)| repo == name))?;
    Ok(Json(json!({ "purged": purged })))
}
