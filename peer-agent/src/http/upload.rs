//! Serving sealed pieces to other agents: ticket required (checked with the edges' public key),
//! a bounded number of uploads at once (more get 503 and go elsewhere), an optional shared rate
//! limit. Bytes go out exactly as stored, in small chunks on a connection whose unsent backlog
//! is limited (`core::net`), so an upload slot is held until its piece has nearly left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use damselfly_core::api::TICKET_HEADER;
use damselfly_core::Digest;
use damselfly_server::progress::WatchedPermit;
use futures::StreamExt;

use crate::error::{AgentError, AgentResult};
use crate::state::AgentState;

pub(crate) async fn piece(
    State(state): State<Arc<AgentState>>,
    Path((digest, index)): Path<(String, u64)>,
    headers: HeaderMap,
) -> AgentResult<Response> {
    let digest: Digest = digest
        .parse()
        .map_err(|_| AgentError::BadRequest(format!("invalid digest {digest}")))?;
    let token = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AgentError::Unauthorized("a ticket is required".into()))?;
    state.ticket_keys.verify(token, &digest).await?;
    let task = state
        .store
        .get(&digest)
        .ok_or_else(|| AgentError::NotFound(digest.to_string()))?;
    if !task.has(index) {
        return Err(AgentError::NotFound(format!("piece {index} of {digest}")));
    }
    let permit = state
        .upload_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| AgentError::Busy("all upload slots in use"))?;
    let active = Arc::new(Active::start(&state));
    let sealed = tokio::task::spawn_blocking(move || task.read_sealed(index))
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    // A reader that stops reading gives its slot back after `server.send_stall_secs` without
    // progress (and loses its connection about then: `damselfly_server::progress`).
    let (stalled, ended) = (state.clone(), active.clone());
    let permit = Arc::new(WatchedPermit::new(
        permit,
        Duration::from_secs(state.config.server.send_stall_secs),
        move || {
            ended.end();
            stalled.metrics.uploads_stalled.inc();
            tracing::debug!(index, "upload stalled; slot taken back");
        },
    ));
    let moving = permit.clone();
    let release = UploadGuard {
        active,
        _permit: permit,
    };
    let sealed = match sealed {
        Ok(s) => s,
        Err(e) => {
            drop(release);
            return Err(e);
        }
    };
    let len = sealed.len();
    let limiter = state.clone();
    // The guard lives as long as the body is being sent.
    let chunks = futures::stream::iter(damselfly_core::net::piece_chunks(sealed))
        .then(move |chunk| {
            moving.progress();
            let limiter = limiter.clone();
            async move {
                if let Some(pacer) = &limiter.upload_pacer {
                    let wait = pacer.book(chunk.len() as u64);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                limiter.metrics.upload_bytes.inc_by(chunk.len() as u64);
                Ok::<_, std::io::Error>(chunk)
            }
        })
        .chain(futures::stream::once(async move {
            drop(release);
            Ok(bytes::Bytes::new())
        }));
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CONTENT_LENGTH, len)
        .body(Body::from_stream(chunks))
        .map_err(|e| AgentError::Internal(e.to_string()))
}

/// An upload, counted in `uploads_active` (announced to the scheduler as slots in use) until it
/// ends or loses its slot, whichever comes first.
struct Active {
    state: Arc<AgentState>,
    counted: AtomicBool,
}

impl Active {
    fn start(state: &Arc<AgentState>) -> Active {
        state.downloader.uploads_active.fetch_add(1, Ordering::Relaxed);
        state.metrics.uploads_active.inc();
        Active {
            state: state.clone(),
            counted: AtomicBool::new(true),
        }
    }

    fn end(&self) {
        if self.counted.swap(false, Ordering::Relaxed) {
            self.state
                .downloader
                .uploads_active
                .fetch_sub(1, Ordering::Relaxed);
            self.state.metrics.uploads_active.dec();
        }
    }
}

struct UploadGuard {
    active: Arc<Active>,
    _permit: Arc<WatchedPermit>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.active.end();
    }
}
