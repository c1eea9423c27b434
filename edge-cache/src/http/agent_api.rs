//! The agent API: piece tables and sealed pieces, for callers who proved read access.
//!
//! `GET /api/v1/tasks/<digest>?repo=<name>[&ns=<registry>]` checks the caller's credentials
//! against the upstream (as a blob pull would), starts the transfer if needed, and answers the
//! piece table so far, the task key and a short-lived ticket. `GET /pieces/<digest>/<index>`
//! answers the sealed bytes of one piece to a ticket holder (header `X-Damselfly-Ticket`) or to
//! a caller whose credentials pass the same check (`?repo=` plus `Authorization`).
//!
//! A plain file is a task too: `GET /api/v1/tasks/<id>?url=<url>[&digest=sha256:…]`, where `<id>`
//! is the file's task id (derived from its normalised URL) and the URL lies under a prefix the
//! operator allowed in `[files]`. Its content is checked against `digest` when given.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use damselfly_core::api::{TaskAnswer, TaskQuery, TicketKeyAnswer, TICKET_HEADER};
use damselfly_core::{Digest, RepositoryName};
use damselfly_server::progress::WatchedPermit;
use futures::StreamExt;

use super::caller::Caller;
use crate::access::Object;
use crate::error::{EdgeError, EdgeResult};
use crate::metrics::EncodingLabels;
use crate::state::AppState;
use crate::store::{Blob, BlobSource, BlobState, FileValidators, IngestState};
use crate::upstream::Upstream;

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_digest(s: &str) -> EdgeResult<Digest> {
    s.parse().map_err(|_| EdgeError::DigestInvalid(s.to_string()))
}

fn parse_repo(query: &TaskQuery) -> EdgeResult<RepositoryName> {
    let repo = query
        .repo
        .as_deref()
        .ok_or_else(|| EdgeError::NameInvalid("?repo= is required".into()))?;
    repo.parse().map_err(|_| EdgeError::NameInvalid(repo.to_string()))
}

/// The upstream and repository a request names (`?ns=`, `?repo=`), once the caller's
/// credentials pass the upstream's check for the blob.
async fn allowed_repo(
    state: &AppState,
    digest: &Digest,
    query: &TaskQuery,
    headers: &HeaderMap,
) -> EdgeResult<(Arc<Upstream>, RepositoryName)> {
    let repo = parse_repo(query)?;
    let upstream = state.upstreams.select(query.ns.as_deref())?;
    let auth = headers.get(http::header::AUTHORIZATION);
    state
        .gate
        .check(&upstream, &repo, Object::Blob(*digest), auth)
        .await?;
    Ok((upstream, repo))
}

/// A registry blob, once the caller's credentials pass the upstream's check.
async fn registry_source(
    state: &AppState,
    digest: &Digest,
    query: &TaskQuery,
    headers: &HeaderMap,
) -> EdgeResult<BlobSource> {
    let (upstream, repo) = allowed_repo(state, digest, query, headers).await?;
    let auth = headers.get(http::header::AUTHORIZATION);
    Ok(BlobSource::Registry {
        upstream,
        repo,
        authorization: auth.cloned(),
        cluster: state.cluster.clone(),
        parents: state.parents.clone(),
        passed: Vec::new(),
    })
}

/// A plain file: only under an allowed prefix, only under the task id its URL names, and as
/// the version of it the server has now. Returns the version's task id with its source: a file
/// that changed is a new task (new key, new nonces), and a caller naming a digest gets a task of
/// its own, verified against it, never another caller's copy.
async fn file_source(
    state: &AppState,
    task: &Digest,
    url: &str,
    digest: Option<&str>,
) -> EdgeResult<(Digest, BlobSource)> {
    let bad = |e: damselfly_core::FileUrlError| EdgeError::NameInvalid(e.to_string());
    let normalised = damselfly_core::normalise_url(url).map_err(bad)?;
    if !state.config.files.allows(&normalised) {
        return Err(EdgeError::Denied(format!(
            "{normalised} is not under a prefix in this edge's [files] allow list"
        )));
    }
    if damselfly_core::file_task_id(&normalised).map_err(bad)? != *task {
        return Err(EdgeError::DigestInvalid(format!(
            "{task} is not the task id of {normalised}"
        )));
    }
    let expected = digest.map(parse_digest).transpose()?;
    let validators = file_validators(state, &normalised).await?;
    let version = damselfly_core::file_version_id(
        &normalised,
        [
            validators.etag.as_deref().unwrap_or(""),
            validators.last_modified.as_deref().unwrap_or(""),
            &validators.length.map(|l| l.to_string()).unwrap_or_default(),
        ],
        // Not the expected digest: callers naming one and callers naming none share a version.
        None,
    );
    Ok((
        version,
        BlobSource::File {
            http: state.files_http.clone(),
            url: normalised,
            expected,
            validators,
        },
    ))
}

/// What names the file's current version: a `HEAD` to its server.
async fn file_validators(state: &AppState, url: &str) -> EdgeResult<FileValidators> {
    let timeout = Duration::from_secs(state.config.limits.upstream_timeout_secs);
    let response = state
        .files_http
        .head(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| EdgeError::UpstreamUnavailable(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        return Err(EdgeError::UpstreamUnavailable(format!(
            "{url} answered {} to HEAD",
            response.status()
        )));
    }
    let text = |name: http::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Ok(FileValidators {
        etag: text(http::header::ETAG),
        last_modified: text(http::header::LAST_MODIFIED),
        // The header itself: a HEAD answer has no body, so its size hint says 0.
        length: text(http::header::CONTENT_LENGTH).and_then(|l| l.parse().ok()),
    })
}

/// Keeps one of `limits.file_ingests` permits for as long as a file's transfer runs.
fn hold_while_ingesting(blob: &Blob, permit: tokio::sync::OwnedSemaphorePermit) {
    let mut progress = blob.progress_updates();
    tokio::spawn(async move {
        let _permit = permit;
        while progress.borrow_and_update().state == IngestState::Running {
            if progress.changed().await.is_err() {
                return;
            }
        }
    });
}

pub(crate) async fn task(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(digest): Path<String>,
    Query(query): Query<TaskQuery>,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    caller.may_hold_keys(&state)?;
    let requested = parse_digest(&digest)?;
    let (digest, source) = match &query.url {
        Some(url) => file_source(&state, &requested, url, query.digest.as_deref()).await?,
        None => (
            requested,
            registry_source(&state, &requested, &query, &headers).await?,
        ),
    };
    let expected_file = match &source {
        BlobSource::File { expected, .. } => *expected,
        BlobSource::Registry { .. } => None,
    };
    let starts = matches!(
        state.store.state(&digest),
        BlobState::Absent | BlobState::Failed(_)
    );
    // A file transfer not yet running takes one of a bounded number of permits: files are
    // fetched from servers the operator allowed, but by anyone who asks.
    let file_permit =
        match (&query.url, starts) {
            (Some(_), true) => {
                Some(state.file_ingests.clone().try_acquire_owned().map_err(|_| {
                    EdgeError::Busy("as many file transfers as limits.file_ingests are running")
                })?)
            }
            _ => None,
        };
    let blob = if query.follow {
        state.store.follow(&digest, source)?
    } else {
        state.store.open(&digest, source)?
    };
    if let Some(permit) = file_permit {
        hold_while_ingesting(&blob, permit);
    }
    // A file version is shared by callers naming a digest and callers naming none: a copy
    // whose content is not the one named is refused, never served.
    match (expected_file, starts) {
        (Some(expected), true) => state.file_digests.learn_when_complete(&blob, expected),
        (Some(expected), false) => state.file_digests.check(&blob, &expected).await?,
        (None, _) => {}
    }
    let layout = blob.layout().await?;
    // One snapshot: the state is read before the table, so `complete` is never said of a table
    // taken while the last piece was still held back for the digest check.
    let progress = blob.progress();
    let wanted = query.hash.unwrap_or_default();
    let mut table = blob.piece_table(layout, wanted)?;
    // This edge has no other copy of a compressed blob's pieces to offer an agent that reads
    // only format 1 (an agent from before compression): it is told why (501), and pulls from
    // the origin.
    let reads = query.format.unwrap_or(1);
    if table.format() > reads {
        return Err(EdgeError::FormatUnsupported {
            needed: table.format(),
            read: reads,
        });
    }
    let complete = progress.state == IngestState::Complete && table.pieces.len() as u64 == layout.count();
    // Agents refresh the table several times a second while a blob arrives: the hashes they
    // already have would be most of the scheduler's bytes on the edge's link. Hashes of another
    // kind than the caller's are sent whole.
    let known = if table.hash == wanted {
        query.known.unwrap_or(0)
    } else {
        0
    };
    let pieces_from = table.drain_front(known);
    let expires_at = unix_now() + state.config.access.ticket_ttl_secs;
    let body = TaskAnswer {
        pieces_from,
        complete,
        table,
        task_key: blob.key.clone(),
        // Bound to the caller's identity: a ticket sniffed off the peer-to-peer path is refused
        // by every edge.
        ticket: match caller.name() {
            Some(name) => state.tickets.issue_to(&digest, expires_at, name),
            None => state.tickets.issue(&digest, expires_at),
        },
        ticket_expires_at: expires_at,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The public key agents use to check tickets (they cannot mint them).
pub(crate) async fn ticket_key(State(state): State<Arc<AppState>>) -> Response {
    Json(TicketKeyAnswer::ed25519(
        state.ticket_checker.verifier().to_base64(),
    ))
    .into_response()
}

pub(crate) async fn piece(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((digest, index)): Path<(String, u64)>,
    Query(query): Query<TaskQuery>,
    headers: HeaderMap,
) -> EdgeResult<Response> {
    let digest = parse_digest(&digest)?;
    let blob = authorised_blob(&state, &caller, &digest, &query, &headers).await?;
    let layout = blob.layout().await?;
    if index >= layout.count() {
        return Err(EdgeError::PieceUnknown {
            index,
            count: layout.count(),
        });
    }
    // A piece still arriving holds no send permit while it is awaited.
    blob.wait_piece(index).await?;
    // Queued in arrival order: a few sends at full speed, not every request at a crawl.
    let permit = tokio::time::timeout(PIECE_QUEUE_WAIT, state.piece_sends.clone().acquire_owned())
        .await
        .map_err(|_| EdgeError::Busy("piece sends queued too long"))?
        .map_err(|_| EdgeError::Internal("piece send limiter closed".into()))?;
    // A reader that stops reading gives its permit back after `limits.piece_send_stall_ms`
    // without progress (its connection goes later, by `server.send_stall_secs`:
    // `damselfly_server::progress`), so a few stalled readers cannot hold every send.
    let stalled = state.clone();
    let permit = Arc::new(WatchedPermit::new(
        permit,
        Duration::from_millis(state.config.limits.piece_send_stall_ms),
        move || {
            stalled.metrics.piece_sends_stalled.inc();
            tracing::debug!(index, "piece send stalled; permit taken back");
        },
    ));
    let moving = permit.clone();
    let sealed = match blob.read_sealed(layout, index).await {
        Ok(sealed) => sealed,
        Err(e @ EdgeError::PieceDamaged(_)) => {
            // The caller goes elsewhere; the next task request fetches the blob again.
            state.store.drop_damaged(&blob, &e);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    state.metrics.served("piece", sealed.len() as u64);
    let encoding = if blob.is_compressed(index) {
        "zstd"
    } else {
        "identity"
    };
    state
        .metrics
        .piece_sent_bytes
        .get_or_create(&EncodingLabels { encoding })
        .inc_by(sealed.len() as u64);
    let len = sealed.len();
    let pacing = state.clone();
    // The permit goes when the last chunk is handed over: with the connection's unsent bytes
    // limited (`core::net`), that is when the piece has nearly left.
    let chunks = futures::stream::iter(damselfly_core::net::piece_chunks(sealed))
        .then(move |chunk| {
            moving.progress();
            let wait = pacing
                .piece_pacer
                .as_ref()
                .map_or(Duration::ZERO, |p| p.book(chunk.len() as u64));
            async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok::<_, std::io::Error>(chunk)
            }
        })
        .chain(futures::stream::once(async move {
            drop(permit);
            Ok(bytes::Bytes::new())
        }));
    Ok((
        [
            (http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (http::header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// How long a piece request may wait for a send permit before it is told to go elsewhere.
const PIECE_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// A ticket, or credentials the upstream accepts, opens a blob that is cached or arriving.
/// Pieces never start a transfer: that takes the task call, which knows where to fetch from.
async fn authorised_blob(
    state: &AppState,
    caller: &Caller,
    digest: &Digest,
    query: &TaskQuery,
    headers: &HeaderMap,
) -> EdgeResult<Blob> {
    if headers.contains_key(TICKET_HEADER) {
        caller.ticket(state, headers, digest)?;
    } else if query.repo.is_some() {
        allowed_repo(state, digest, query, headers).await?;
    } else {
        return Err(EdgeError::Unauthorized(
            "a ticket or ?repo= with credentials is required".into(),
        ));
    }
    state
        .store
        .open_existing(digest)?
        .ok_or_else(|| EdgeError::BlobUnknown(digest.to_string()))
}
