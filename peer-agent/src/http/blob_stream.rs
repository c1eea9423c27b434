//! Blob GETs from the runtime: streamed in order from the P2P download while later pieces are
//! still in flight, each piece decrypted once on its way out. If the P2P path cannot start, or
//! breaks mid-stream, the rest comes from the origin (by `Range`), so a runtime that reached the
//! origin never sees a 5xx from us.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use damselfly_core::{encoding, parse_range, TaskKey};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::relayed::relayed;
use crate::client::Relay;
use crate::error::{AgentError, AgentResult};
use crate::request::{BlobRequest, TaskOrigin};
use crate::state::AgentState;
use crate::store::LocalTask;

/// Longest wait for the next piece before the stream switches to the origin.
const STALL: Duration = Duration::from_secs(30);

pub(crate) async fn serve(
    state: &Arc<AgentState>,
    request: BlobRequest,
    headers: &HeaderMap,
) -> AgentResult<Response> {
    let (task, key) = match state.downloader.open(request.clone()).await {
        Ok(opened) => opened,
        Err(AgentError::Refused(reply)) => return Err(AgentError::Refused(reply)),
        Err(e) => {
            tracing::warn!(digest = %request.digest, error = %e, "P2P path unavailable; serving from the origin");
            state.metrics.origin_fallbacks.inc();
            let response = from_origin(state, &request, headers.get(http::header::RANGE)).await?;
            return Ok(relayed(response, Some((state.metrics.clone(), "origin"))));
        }
    };
    task.note_asked();
    let size = task.layout.size;
    let requested = headers.get(http::header::RANGE).and_then(|v| v.to_str().ok());
    let span = parse_range(requested, size).map_err(|e| AgentError::RangeNotSatisfiable { size: e.size })?;
    let (start, end) = span.unwrap_or((0, size));
    let cursor = Cursor {
        state: state.clone(),
        task,
        key,
        request,
        offset: start,
        end,
        origin: None,
    };
    let mut builder = Response::builder()
        .status(if span.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(http::header::CONTENT_LENGTH, end - start)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::ACCEPT_RANGES, "bytes");
    if let TaskOrigin::Registry { .. } = cursor.request.origin {
        builder = builder.header("docker-content-digest", cursor.request.digest.to_string());
    }
    if span.is_some() {
        builder = builder.header(
            http::header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    builder
        .body(Body::from_stream(cursor.into_stream()))
        .map_err(|e| AgentError::Internal(e.to_string()))
}

struct Cursor {
    state: Arc<AgentState>,
    task: Arc<LocalTask>,
    key: TaskKey,
    request: BlobRequest,
    offset: u64,
    end: u64,
    origin: Option<BoxStream<'static, Result<Bytes, std::io::Error>>>,
}

impl Cursor {
    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut c| async move {
            if c.offset >= c.end {
                return None;
            }
            if c.origin.is_none() {
                match next_piece(c.task.clone(), c.key.clone(), c.offset, c.end).await {
                    Ok(bytes) => {
                        c.offset += bytes.len() as u64;
                        return Some((Ok(bytes), c));
                    }
                    Err(e) => {
                        tracing::warn!(digest = %c.request.digest, offset = c.offset, error = %e, "P2P stream broke; continuing from the origin");
                        c.state.metrics.origin_fallbacks.inc();
                        match origin_rest(c.state.clone(), c.request.clone(), c.offset, c.end).await {
                            Ok(stream) => c.origin = Some(stream),
                            Err(e) => {
                                c.end = c.offset;
                                return Some((Err(std::io::Error::other(e.to_string())), c));
                            }
                        }
                    }
                }
            }
            let origin = c.origin.as_mut()?;
            match origin.next().await {
                Some(Ok(bytes)) => {
                    let bytes = bytes.slice(..bytes.len().min((c.end - c.offset) as usize));
                    c.offset += bytes.len() as u64;
                    c.state.metrics.downloaded("origin", bytes.len() as u64);
                    Some((Ok(bytes), c))
                }
                Some(Err(e)) => {
                    c.end = c.offset;
                    Some((Err(e), c))
                }
                None => {
                    c.end = c.offset;
                    Some((Err(std::io::Error::other("origin ended early")), c))
                }
            }
        })
    }
}

/// The plaintext from `offset` to the end of its piece (or `end`), once the piece is here.
async fn next_piece(task: Arc<LocalTask>, key: TaskKey, offset: u64, end: u64) -> AgentResult<Bytes> {
    let layout = task.layout;
    let index = layout.piece_of(offset);
    let mut changes = task.subscribe();
    while !task.has(index) {
        if let Some(reason) = task.failure() {
            return Err(AgentError::Unavailable(reason));
        }
        match tokio::time::timeout(STALL, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(AgentError::Unavailable("download ended".into())),
            Err(_) => return Err(AgentError::Unavailable("download stalled".into())),
        }
    }
    let plain = tokio::task::spawn_blocking(move || -> AgentResult<Bytes> {
        // One copy into a buffer of our own, unless the piece was read from disk for us alone.
        let sealed = task
            .read_sealed(index)?
            .try_into_mut()
            .unwrap_or_else(|shared| shared.as_ref().into());
        // Decrypted in place (a compressed piece then decompressed into its length, no more).
        let plain_len = layout.plain_len(index) as usize;
        encoding::open_stored(&key, index, sealed, task.is_compressed(index), plain_len)
            .map_err(|e| AgentError::Internal(format!("piece {index} on disk: {e}")))
    })
    .await
    .map_err(|e| AgentError::Internal(e.to_string()))??;
    let (piece_start, _) = layout.range(index);
    let from = (offset - piece_start) as usize;
    let to = ((end - piece_start) as usize).min(plain.len());
    Ok(plain.slice(from..to))
}

/// The request made again to the origin itself: the registry (with the caller's headers) or
/// the file's server.
async fn from_origin(
    state: &AgentState,
    request: &BlobRequest,
    range: Option<&HeaderValue>,
) -> AgentResult<reqwest::Response> {
    match &request.origin {
        TaskOrigin::Registry { repo, ns } => {
            let mut headers = HeaderMap::new();
            if let Some(auth) = &request.authorization {
                headers.insert(http::header::AUTHORIZATION, auth.clone());
            }
            if let Some(range) = range {
                headers.insert(http::header::RANGE, range.clone());
            }
            let path = format!("/v2/{repo}/blobs/{}", request.digest);
            let relay = Relay {
                method: http::Method::GET,
                path: &path,
                ns: ns.as_deref(),
                headers: &headers,
            };
            state.relay.to_origin(&relay).await
        }
        TaskOrigin::File { url, .. } => state.relay.file_from_origin(url, range).await,
    }
}

/// The bytes `[offset, end)` straight from the origin.
async fn origin_rest(
    state: Arc<AgentState>,
    request: BlobRequest,
    offset: u64,
    end: u64,
) -> AgentResult<BoxStream<'static, Result<Bytes, std::io::Error>>> {
    let range = HeaderValue::from_str(&format!("bytes={}-{}", offset, end - 1))
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    let response = from_origin(&state, &request, Some(&range)).await?;
    let skip = match response.status() {
        StatusCode::PARTIAL_CONTENT => 0,
        // The origin ignored Range: drop what was already sent.
        StatusCode::OK => offset,
        s => return Err(AgentError::Unavailable(format!("origin answered {s}"))),
    };
    let mut to_skip = skip;
    let stream = response
        .bytes_stream()
        .map_err(std::io::Error::other)
        .try_filter_map(move |mut chunk| {
            let drop = to_skip.min(chunk.len() as u64) as usize;
            to_skip -= drop as u64;
            let rest = chunk.split_off(drop);
            futures::future::ready(Ok(if rest.is_empty() { None } else { Some(rest) }))
        });
    Ok(stream.boxed())
}
