//! The P2P download of one blob: pieces fetched concurrently from ranked parents (rarest first
//! inside a window ahead of the stream), the edge as the parent of last resort, each piece
//! verified against the edge's table before it is stored, progress announced to the scheduler.
//!
//! [`Downloader`] starts one download per task and does its network work; the loop's state and
//! decisions are a [`session::Session`], its timing rules [`policy`]'s; which pieces to fetch
//! from whom is [`picker`]'s. The last two are public for `bench sim`, which runs them for
//! thousands of simulated hosts.

mod fetch;
pub mod picker;
pub mod policy;
pub(crate) mod read_ahead;
mod session;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use damselfly_core::api::{ParentsAnswer, PeerAnnouncement};
use damselfly_core::{Bitfield, Location, TaskKey};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{EdgeClient, PieceClient, TaskInfo};
use crate::config::DownloadConfig;
use crate::error::{AgentError, AgentResult};
use crate::metrics::Metrics;
use crate::request::{BlobRequest, TaskOrigin};
use crate::store::{LocalTask, PieceStore};
use damselfly_core::api::scheduler::cadence::HEARTBEAT_EVERY;
use fetch::{EdgeFetch, PieceFetch};
use picker::Source;
use session::{Network, Outcome, Session};

pub(crate) struct Downloader {
    pub(crate) edges: Arc<EdgeClient>,
    pub(crate) pieces: Arc<PieceClient>,
    pub(crate) store: Arc<PieceStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) host_id: String,
    pub(crate) location: Location,
    pub(crate) upload_url: String,
    pub(crate) upload_slots: u32,
    pub(crate) uploads_active: Arc<AtomicU32>,
    pub(crate) config: DownloadConfig,
    /// How long a finished task is still announced, so others can fetch from us.
    pub(crate) seed_for: Duration,
    /// Pieces being fetched from an edge by all downloads of this agent.
    pub(crate) edge_in_flight: Arc<AtomicUsize>,
}

impl Downloader {
    /// Asks an edge for the task (the caller's access is checked there), then joins or starts
    /// the download. Returns the local task to read and the key to open its pieces.
    pub(crate) async fn open(
        self: &Arc<Self>,
        request: BlobRequest,
    ) -> AgentResult<(Arc<LocalTask>, TaskKey)> {
        // One span per download, from the first task request to the last piece: the trace of
        // a pull through this agent (its pieces' sources are child spans, see `session.rs`).
        let span = tracing::info_span!("download", digest = %request.digest);
        let info = self
            .edges
            .task(&request, None, None)
            .instrument(span.clone())
            .await?;
        // The task the edge answered with: a blob's own digest, a file's current version (its
        // URL names the request, not the content).
        let task_id = info.table.digest;
        if matches!(request.origin, TaskOrigin::Registry { .. }) && task_id != request.digest {
            return Err(AgentError::Unavailable(format!(
                "the edge answered task {task_id} for blob {}",
                request.digest
            )));
        }
        let (task, created) = self.store.get_or_create(&task_id, info.table.layout)?;
        let key = info.key.clone();
        if created {
            let this = self.clone();
            let task2 = task.clone();
            tokio::spawn(async move { this.run(task2, info, request, span).await });
        }
        Ok((task, key))
    }

    /// Drives the download within `span` (which ends with the last piece, so that the trace is
    /// exported then), then seeds.
    async fn run(
        self: Arc<Self>,
        task: Arc<LocalTask>,
        info: TaskInfo,
        request: BlobRequest,
        span: tracing::Span,
    ) {
        let started = Instant::now();
        let session = Session::new(
            self.as_ref(),
            &self.host_id,
            &self.config,
            &request,
            task.clone(),
            info,
        );
        match session.drive().instrument(span).await {
            Ok(info) => {
                let (store, t, table) = (self.store.clone(), task.clone(), info.table.clone());
                let finished = tokio::task::spawn_blocking(move || store.finish(&t, &table)).await;
                if let Ok(Err(e)) | Err(e) = finished.map_err(|e| AgentError::Internal(e.to_string())) {
                    tracing::warn!(digest = %task.digest, error = %e, "could not persist a finished task");
                }
                tracing::info!(digest = %task.digest, ms = started.elapsed().as_millis() as u64, "blob downloaded");
                self.seed(&task, info, &request).await;
            }
            Err(e) => {
                tracing::warn!(digest = %task.digest, error = %e, "P2P download failed; readers fall back to the origin");
                task.fail(e.to_string());
                self.store.discard(&task.digest);
            }
        }
    }

    /// Keeps announcing a finished task for a while so others can fetch from this agent,
    /// renewing the ticket as it ages (an edge refusing to renew it ends the seeding).
    async fn seed(&self, task: &LocalTask, mut info: TaskInfo, request: &BlobRequest) {
        let until = Instant::now() + self.seed_for;
        while Instant::now() < until {
            if info.ticket_due(crate::client::unix_now()) {
                match self.edges.task(request, None, Some(&info.table)).await {
                    Ok(fresh) => info = fresh,
                    Err(e) => {
                        tracing::debug!(digest = %task.digest, error = %e, "no new ticket; seeding ends");
                        break;
                    }
                }
            }
            self.announce(&info, task, &[]).await;
            tokio::time::sleep(HEARTBEAT_EVERY).await;
        }
        self.edges
            .leave(info.edge, &task.digest, &self.host_id, &info.ticket)
            .await;
    }
}

impl Network for Downloader {
    async fn refresh(&self, request: &BlobRequest, held: &TaskInfo) -> AgentResult<TaskInfo> {
        self.edges.task(request, None, Some(&held.table)).await
    }

    fn edge_failed(&self, info: &TaskInfo, cause: &AgentError) {
        tracing::warn!(digest = %info.table.digest, edge = self.edges.url(info.edge), error = %cause, "edge failed");
        self.edges.mark_dead(info.edge);
    }

    async fn task_elsewhere(&self, request: &BlobRequest, failed: &TaskInfo) -> AgentResult<TaskInfo> {
        self.edges.task(request, Some(failed.edge), None).await
    }

    async fn parents(&self, info: &TaskInfo, edge_room: usize, known: u64) -> AgentResult<ParentsAnswer> {
        self.edges
            .parents(
                info.edge,
                &info.table.digest,
                &info.ticket,
                &self.host_id,
                &self.location,
                edge_room,
                known,
            )
            .await
    }

    async fn announce(&self, info: &TaskInfo, task: &LocalTask, fetching: &[u64]) {
        let fetching = (!fetching.is_empty()).then(|| {
            let mut bits = Bitfield::new(task.layout.count());
            fetching.iter().for_each(|i| bits.set(*i));
            bits
        });
        let announcement = PeerAnnouncement {
            upload_url: self.upload_url.clone(),
            location: self.location.clone(),
            pieces: task.bitfield(),
            fetching,
            uploads_active: self.uploads_active.load(Ordering::Relaxed),
            upload_slots: self.upload_slots,
            downloaded: Some(self.metrics.downloaded_by_source()),
        };
        let _ = self
            .edges
            .announce(
                info.edge,
                &task.digest,
                &self.host_id,
                &info.ticket,
                &announcement,
            )
            .await;
    }

    fn fetch(
        &self,
        task: &Arc<LocalTask>,
        info: &TaskInfo,
        index: u64,
        source: Source,
        done: mpsc::Sender<Outcome>,
    ) {
        let fetch = PieceFetch {
            task: task.clone(),
            index,
            expected: info.table.pieces.get(index as usize).copied(),
            hash: info.table.hash,
            sealed_len: info.table.stored_len(index),
            compressed: info.table.is_compressed(index),
            base: match &source {
                Source::Peer { url, .. } => url.clone(),
                Source::Edge => self.edges.url(info.edge).to_string(),
            },
            ticket: info.ticket.clone(),
            source: source.kind(),
        };
        let (pieces, metrics) = (self.pieces.clone(), self.metrics.clone());
        let edge_fetch = (source == Source::Edge).then(|| EdgeFetch::start(&self.edge_in_flight));
        tokio::spawn(async move {
            let result = fetch.run(&pieces, &metrics).await;
            // Released before the outcome is seen, so the next pick already has the room.
            drop(edge_fetch);
            let _ = done
                .send(Outcome {
                    index,
                    source,
                    result,
                })
                .await;
        });
    }

    fn edge_pieces_in_flight(&self) -> usize {
        self.edge_in_flight.load(Ordering::SeqCst)
    }
}
