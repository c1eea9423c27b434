//! Blobs for registry clients: streamed from sealed pieces, while still arriving if need be.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::{Digest, PieceLayout, RepositoryName};
use futures::{Stream, StreamExt};

use super::blob_fallback::{with_upstream_fallback, Span};
use super::range;
use crate::access::Object;
use crate::chain::{regions_passed, MAX_REGIONS};
use crate::cluster::EDGE_HOP_HEADER;
use crate::error::{EdgeError, EdgeResult};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{Blob, BlobSource, BlobStore, IngestState};
use crate::upstream::Upstream;

/// Pieces read and decrypted ahead of the one being sent.
const READ_AHEAD: usize = 2;

pub(crate) async fn serve(
    state: &AppState,
    upstream: &Arc<Upstream>,
    repo: &RepositoryName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> EdgeResult<Response> {
    let auth = headers.get(http::header::AUTHORIZATION);
    let allowed = state
        .gate
        .check(upstream, repo, Object::Blob(*digest), auth)
        .await?;
    if head {
        let size = match state.store.open_cached(digest)? {
            Some(blob) => Some(blob.layout().await?.size),
            None => allowed.size,
        };
        let size = size.ok_or_else(|| EdgeError::UpstreamUnavailable("upstream sent no blob size".into()))?;
        return Ok(blob_response(StatusCode::OK, digest, size, None, Body::empty()));
    }
    // Another edge of the region asking for a blob it does not own: not to a third member.
    let from_member = headers.contains_key(EDGE_HOP_HEADER);
    // An edge of another region: never back into a region the request has passed through.
    let passed = regions_passed(headers);
    if passed.contains(&state.config.region) || passed.len() >= MAX_REGIONS {
        return Err(EdgeError::LoopDetected(format!(
            "the request has passed through {passed:?}; this edge is in {:?}",
            state.config.region
        )));
    }
    let source = BlobSource::Registry {
        upstream: upstream.clone(),
        repo: repo.clone(),
        authorization: auth.cloned(),
        cluster: state.cluster.clone().filter(|_| !from_member),
        parents: state.parents.clone(),
        passed,
    };
    let blob = state.store.open(digest, source.clone())?;
    let unverified = (blob.progress().state != IngestState::Complete).then(|| blob.clone());
    let layout = blob.layout().await?;
    let requested = headers.get(http::header::RANGE).and_then(|v| v.to_str().ok());
    let asked = range::parse(requested, layout.size)?;
    let (start, end) = asked.unwrap_or((0, layout.size));
    let reader = Reader {
        blob,
        store: state.store.clone(),
        source: source.clone(),
        metrics: state.metrics.clone(),
    };
    let stored = plaintext(reader, layout, start, end);
    let span = Span {
        digest: *digest,
        start,
        end,
        size: layout.size,
    };
    let body = Body::from_stream(with_upstream_fallback(stored, source, span, unverified));
    let status = if asked.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    Ok(blob_response(status, digest, layout.size, asked, body))
}

fn blob_response(
    status: StatusCode,
    digest: &Digest,
    size: u64,
    span: Option<(u64, u64)>,
    body: Body,
) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    let length = span.map_or(size, |(s, e)| e - s);
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(http::header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("docker-content-digest", v.clone());
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
            h.insert(http::header::ETAG, etag);
        }
    }
    if let Some((s, e)) = span {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{}/{size}", e - 1)) {
            h.insert(http::header::CONTENT_RANGE, v);
        }
    }
    response
}

/// What a blob response reads from, and where it turns when a piece on disk is damaged.
struct Reader {
    blob: Blob,
    store: Arc<BlobStore>,
    source: BlobSource,
    metrics: Arc<Metrics>,
}

impl Reader {
    /// The plaintext of piece `index`. A piece damaged on disk drops the cached copy and is
    /// read from a fresh transfer instead (the same bytes: the layout depends only on the size
    /// and the blob's digest is verified again), so the client never notices.
    async fn piece(&self, layout: PieceLayout, index: u64) -> EdgeResult<bytes::Bytes> {
        match self.blob.read_plain(layout, index).await {
            Err(e @ EdgeError::PieceDamaged(_)) => {
                self.store.drop_damaged(&self.blob, &e);
                let fresh = self.store.open(&self.blob.digest, self.source.clone())?;
                fresh.read_plain(layout, index).await
            }
            read => read,
        }
    }
}

/// The plaintext of `[start, end)`, piece by piece. An error mid-stream hands over to the
/// upstream (`blob_fallback`); when that fails too, the response is aborted, which the client
/// sees as a short body: never as a complete blob.
fn plaintext(
    reader: Reader,
    layout: PieceLayout,
    start: u64,
    end: u64,
) -> impl Stream<Item = Result<bytes::Bytes, EdgeError>> + Send + 'static {
    let pieces = if start < end {
        layout.piece_of(start)..layout.piece_of(end - 1) + 1
    } else {
        0..0
    };
    let reader = Arc::new(reader);
    let metrics = reader.metrics.clone();
    futures::stream::iter(pieces)
        .map(move |index| {
            let reader = reader.clone();
            async move {
                let plain = reader.piece(layout, index).await?;
                let (piece_start, _) = layout.range(index);
                let from = start.saturating_sub(piece_start) as usize;
                let to = ((end - piece_start) as usize).min(plain.len());
                Ok(plain.slice(from..to))
            }
        })
        .buffered(READ_AHEAD)
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                metrics.served("blob", c.len() as u64);
            }
        })
}
