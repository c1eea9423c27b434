//! The P2P download of one blob: pieces fetched concurrently from ranked parents (rarest first
//! inside a window ahead of the stream), the edge as the parent of last resort, each piece
//! verified against the edge's table before it is stored, progress announced to the scheduler.

mod fetch;
mod picker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use damselfly_core::api::{ParentCandidate, PeerAnnouncement};
use damselfly_core::{Bitfield, Location, TaskKey};
use tokio::sync::mpsc;

use crate::client::{EdgeClient, PieceClient, TaskInfo};
use crate::config::DownloadConfig;
use crate::error::{AgentError, AgentResult};
use crate::metrics::Metrics;
use crate::request::BlobRequest;
use crate::store::{LocalTask, PieceStore};
use fetch::PieceFetch;
use picker::{in_swarm, pick, EdgeTurn, Skip, Source};

pub struct Downloader {
    pub(crate) edges: Arc<EdgeClient>,
    pub(crate) pieces: Arc<PieceClient>,
    pub store: Arc<PieceStore>,
    pub metrics: Arc<Metrics>,
    pub host_id: String,
    pub location: Location,
    pub upload_url: String,
    pub upload_slots: u32,
    pub uploads_active: Arc<AtomicU32>,
    pub config: DownloadConfig,
    /// How long a finished task is still announced, so others can fetch from us.
    pub seed_for: Duration,
    /// Pieces being fetched from an edge by all downloads of this agent.
    pub edge_in_flight: Arc<AtomicUsize>,
}

/// Pieces one agent fetches from the edge at once, all downloads together, while peers share
/// the task (only pieces it owns: the edge sends each piece to one agent and the swarm passes
/// it on). Two keep an owner busy while many share the edge's link.
const SWARM_EDGE_PIECES: usize = 2;
/// Each period a piece stays unclaimed after it became known, one more candidate owner may take
/// it from the edge (its owner is slow, busy elsewhere or gone). Long enough for an owner whose
/// request waits in the edge's send queue: a second owner's copy costs edge bandwidth that every
/// other piece is waiting for.
const UNCLAIMED_AFTER: Duration = Duration::from_secs(5);

/// Counts an edge fetch in flight for as long as it lives.
struct EdgeFetch(Arc<AtomicUsize>);

impl EdgeFetch {
    fn start(counter: &Arc<AtomicUsize>) -> EdgeFetch {
        counter.fetch_add(1, Ordering::SeqCst);
        EdgeFetch(counter.clone())
    }
}

impl Drop for EdgeFetch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often the table (while the edge is still ingesting), parents and announcements refresh.
/// A piece is only passed on once its holder has announced it and the others have asked for
/// parents again: these two set how late the swarm learns of it.
const TABLE_EVERY: Duration = Duration::from_millis(200);
const PARENTS_EVERY: Duration = Duration::from_millis(100);
const PARENTS_EVERY_WHEN_FULL: Duration = Duration::from_millis(500);
const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);
/// In a swarm, pieces just asked of the edge are announced without waiting for
/// `ANNOUNCE_EVERY`, but not more often than this (a fast download asks for many).
const ANNOUNCE_TAKEN_EVERY: Duration = Duration::from_millis(10);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Edge failures (all edges tried) after which the download gives up (readers use the origin).
const MAX_EDGE_FAILOVERS: u32 = 3;

struct Outcome {
    index: u64,
    source: Source,
    result: AgentResult<()>,
}

impl Downloader {
    /// Asks an edge for the task (the caller's access is checked there), then joins or starts
    /// the download. Returns the local task to read and the key to open its pieces.
    pub(crate) async fn open(
        self: &Arc<Self>,
        request: BlobRequest,
    ) -> AgentResult<(Arc<LocalTask>, TaskKey)> {
        let info = self.edges.task(&request, None, None).await?;
        let (task, created) = self.store.get_or_create(&request.digest, info.table.layout)?;
        let key = info.key.clone();
        if created {
            let this = self.clone();
            let task2 = task.clone();
            tokio::spawn(async move { this.run(task2, info, request).await });
        }
        Ok((task, key))
    }

    async fn run(self: Arc<Self>, task: Arc<LocalTask>, mut info: TaskInfo, request: BlobRequest) {
        let started = Instant::now();
        match self.drive(&task, &mut info, &request).await {
            Ok(()) => {
                let table = damselfly_core::PieceTable {
                    pieces: info.table.pieces.clone(),
                    ..info.table.clone()
                };
                let store = self.store.clone();
                let t = task.clone();
                let finished = tokio::task::spawn_blocking(move || store.finish(&t, &table)).await;
                if let Ok(Err(e)) | Err(e) = finished.map_err(|e| AgentError::Internal(e.to_string())) {
                    tracing::warn!(digest = %task.digest, error = %e, "could not persist a finished task");
                }
                tracing::info!(digest = %task.digest, ms = started.elapsed().as_millis() as u64, "blob downloaded");
                self.seed(&task, &info).await;
            }
            Err(e) => {
                tracing::warn!(digest = %task.digest, error = %e, "P2P download failed; readers fall back to the origin");
                task.fail(e.to_string());
                self.store.discard(&task.digest);
            }
        }
    }

    /// Tells the task's edge this agent's state; `fetching`: pieces it is taking from the edge
    /// now. Best effort: a lost announcement is repeated by the next one.
    async fn announce(&self, task: &LocalTask, info: &TaskInfo, fetching: &[u64]) {
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

    /// Keeps announcing a finished task for a while so others can fetch from this agent.
    async fn seed(&self, task: &LocalTask, info: &TaskInfo) {
        let until = Instant::now() + self.seed_for;
        while Instant::now() < until {
            self.announce(task, info, &[]).await;
            tokio::time::sleep(HEARTBEAT_EVERY).await;
        }
        self.edges
            .leave(info.edge, &task.digest, &self.host_id, &info.ticket)
            .await;
    }

    async fn drive(
        &self,
        task: &Arc<LocalTask>,
        info: &mut TaskInfo,
        request: &BlobRequest,
    ) -> AgentResult<()> {
        let count = task.layout.count();
        let (tx, mut rx) = mpsc::channel::<Outcome>(64);
        let mut in_flight: HashMap<u64, Source> = HashMap::new();
        let mut parents: Vec<ParentCandidate> = Vec::new();
        let mut skip = Skip::default();
        let began = Instant::now();
        // When each piece became known (listed in the edge's table), to spot unclaimed ones.
        let mut known_since: Vec<Instant> = Vec::new();
        let long_ago = began - Duration::from_secs(3600);
        let (mut last_table, mut last_parents, mut last_announce) = (long_ago, long_ago, long_ago);
        // What the last announcement said: pieces held, and pieces being taken from the edge.
        let mut announced = (u64::MAX, Vec::<u64>::new());
        let mut failovers = 0u32;
        loop {
            let have = task.bitfield();
            if have.count() == count {
                self.announce(task, info, &[]).await;
                return Ok(());
            }
            let now = Instant::now();
            if !info.complete && now.duration_since(last_table) >= TABLE_EVERY {
                last_table = now;
                match self.edges.task(request, None, Some(&info.table)).await {
                    Ok(fresh) => *info = fresh,
                    // Refused, or the edge's own transfer failed: only the origin can do better.
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => self.fail_over(info, request, &mut failovers, e).await?,
                }
            }
            // New parents only matter to a download that can start a fetch; one with every slot
            // busy asks less often (each answer costs the edge's link).
            let parents_every = if in_flight.len() < self.config.concurrent_pieces {
                PARENTS_EVERY
            } else {
                PARENTS_EVERY_WHEN_FULL
            };
            if now.duration_since(last_parents) >= parents_every {
                last_parents = now;
                if let Ok(p) = self
                    .edges
                    .parents(
                        info.edge,
                        &task.digest,
                        &info.ticket,
                        &self.host_id,
                        &self.location,
                    )
                    .await
                {
                    parents = p;
                }
            }
            skip.expire(now);
            // Agents starting together see nobody in their first answers; until the scheduler
            // has had time to show the others, each behaves as in a swarm and takes one edge
            // piece at a time (a lone agent loses well under a second).
            let settling = began.elapsed() < 2 * PARENTS_EVERY;
            let edge_room = if settling || in_swarm(&parents, &skip) {
                SWARM_EDGE_PIECES.saturating_sub(self.edge_in_flight.load(Ordering::SeqCst))
            } else {
                let mine = in_flight.values().filter(|s| **s == Source::Edge).count();
                self.config.per_parent.saturating_sub(mine)
            };
            // Scoped: the borrowed closure must not live across an await.
            let picks = {
                known_since.resize(info.table.pieces.len(), now);
                let owners = |index: u64| {
                    let waited = known_since
                        .get(index as usize)
                        .map_or(Duration::ZERO, |t| now.duration_since(*t));
                    1 + (waited.as_millis() / UNCLAIMED_AFTER.as_millis()) as usize
                };
                let edge = EdgeTurn {
                    room: edge_room,
                    me: &self.host_id,
                    owners: &owners,
                };
                pick(
                    &have,
                    &info.table.pieces,
                    &in_flight,
                    &parents,
                    &skip,
                    &self.config,
                    &edge,
                )
            };
            for (index, source) in picks {
                in_flight.insert(index, source.clone());
                self.spawn_fetch(task.clone(), info, index, source, tx.clone());
            }
            // After the picks, so pieces just asked of the edge are announced at once: the
            // others then wait for them rather than ask the edge too.
            let mut fetching: Vec<u64> = in_flight
                .iter()
                .filter(|(_, s)| **s == Source::Edge)
                .map(|(i, _)| *i)
                .collect();
            fetching.sort_unstable();
            let state = (task.bitfield().count(), fetching);
            let since = now.duration_since(last_announce);
            // Only others in the swarm care what this agent takes from the edge.
            let taking_more = in_swarm(&parents, &skip)
                && since >= ANNOUNCE_TAKEN_EVERY
                && state.1.iter().any(|i| announced.1.binary_search(i).is_err());
            if since >= HEARTBEAT_EVERY || taking_more || (state != announced && since >= ANNOUNCE_EVERY) {
                last_announce = now;
                self.announce(task, info, &state.1).await;
                announced = state;
            }
            let event = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
            let Ok(Some(outcome)) = event else { continue };
            in_flight.remove(&outcome.index);
            if let Err(e) = outcome.result {
                match &outcome.source {
                    Source::Peer { host_id, .. } => {
                        // A busy parent is asked again soon (its pieces wait for it); a
                        // failing or lying one is not trusted for much longer.
                        if matches!(e, AgentError::Busy(_)) {
                            skip.busy
                                .insert(host_id.clone(), Instant::now() + Duration::from_millis(300));
                        } else {
                            let until = Instant::now() + Duration::from_secs(self.config.bad_parent_secs);
                            skip.failed.insert(host_id.clone(), until);
                        }
                        tracing::debug!(digest = %task.digest, index = outcome.index, parent = %host_id, error = %e, "piece failed; trying elsewhere");
                    }
                    // The edge's transfer failed, or this agent cannot store pieces: only the
                    // origin can do better.
                    Source::Edge if !e.is_retryable() => return Err(e),
                    // Down: the next edge. Busy, or one bad piece: the same edge again later.
                    Source::Edge => {
                        if let AgentError::Unavailable(_) = e {
                            self.fail_over(info, request, &mut failovers, e).await?;
                        }
                    }
                }
            }
        }
    }

    /// The edge failed: ask the next one for the task (it starts its own transfer if needed).
    async fn fail_over(
        &self,
        info: &mut TaskInfo,
        request: &BlobRequest,
        failovers: &mut u32,
        cause: AgentError,
    ) -> AgentResult<()> {
        *failovers += 1;
        self.edges.mark_dead(info.edge);
        if *failovers > MAX_EDGE_FAILOVERS {
            return Err(AgentError::Unavailable(format!("edges keep failing: {cause}")));
        }
        tracing::warn!(digest = %request.digest, edge = self.edges.url(info.edge), error = %cause, "edge failed; failing over");
        let fresh = self.edges.task(request, Some(info.edge), None).await?;
        *info = fresh;
        Ok(())
    }

    fn spawn_fetch(
        &self,
        task: Arc<LocalTask>,
        info: &TaskInfo,
        index: u64,
        source: Source,
        tx: mpsc::Sender<Outcome>,
    ) {
        let fetch = PieceFetch {
            expected: info.table.pieces.get(index as usize).copied(),
            base: match &source {
                Source::Peer { url, .. } => url.clone(),
                Source::Edge => self.edges.url(info.edge).to_string(),
            },
            ticket: info.ticket.clone(),
            source: source.kind(),
            task,
            index,
        };
        let (pieces, metrics) = (self.pieces.clone(), self.metrics.clone());
        let edge_fetch = (source == Source::Edge).then(|| EdgeFetch::start(&self.edge_in_flight));
        tokio::spawn(async move {
            let result = fetch.run(&pieces, &metrics).await;
            // Released before the outcome is seen, so the next pick already has the room.
            drop(edge_fetch);
            let _ = tx
                .send(Outcome {
                    index,
                    source,
                    result,
                })
                .await;
        });
    }
}
