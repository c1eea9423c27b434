//! One download's loop: its state between steps, and one method per step. Each turn it
//! refreshes the table (while the edge is still ingesting), refreshes the parents, picks and
//! starts fetches, announces what changed, then waits for a fetch to end (or a tick).
//!
//! The network is behind [`Network`], so the timing decisions are tested on paused time
//! against a fake.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use damselfly_core::api::scheduler::cadence::PARENTS_EVERY;
use damselfly_core::api::{ParentCandidate, ParentsAnswer, RackPlace};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::picker::{in_swarm, pick, EdgeTurn, Skip, Source};
use super::policy::{self, due, Announced, EdgeUse, BUSY_PARENT_PAUSE, TABLE_EVERY, TICK};
use crate::client::TaskInfo;
use crate::config::DownloadConfig;
use crate::error::{AgentError, AgentResult};
use crate::request::BlobRequest;
use crate::store::LocalTask;

/// A scheduler that does not answer (its Redis stopped, an edge overloaded) must not hold the
/// download loop, which also hands out and collects piece fetches: each parents query and
/// announcement is bounded, and after one fails the next waits longer, doubling up to
/// `SCHEDULER_BACKOFF_MAX`, while pieces keep coming from the edge.
const SCHEDULER_CALL_TIMEOUT: Duration = Duration::from_secs(1);
const SCHEDULER_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Edge failures (all edges tried) after which the download gives up (readers use the origin).
const MAX_EDGE_FAILOVERS: u32 = 3;

/// How a fetch ended.
pub(crate) struct Outcome {
    pub(crate) index: u64,
    pub(crate) source: Source,
    pub(crate) result: AgentResult<()>,
}

/// What a session asks of the edges and parents.
pub(crate) trait Network {
    /// The task's table again from its edge, with the hashes after those `held` lists.
    async fn refresh(&self, request: &BlobRequest, held: &TaskInfo) -> AgentResult<TaskInfo>;
    /// `info`'s edge failed with `cause`: not asked again for a while.
    fn edge_failed(&self, info: &TaskInfo, cause: &AgentError);
    /// The task from an edge other than `failed`'s (which starts its own transfer if needed).
    async fn task_elsewhere(&self, request: &BlobRequest, failed: &TaskInfo) -> AgentResult<TaskInfo>;
    /// Parents, and up to `edge_room` of the first `known` pieces handed to this agent to take
    /// from the edge.
    async fn parents(&self, info: &TaskInfo, edge_room: usize, known: u64) -> AgentResult<ParentsAnswer>;
    /// Tells the scheduler this agent's pieces and the ones it is taking from the edge now.
    /// Best effort: a lost announcement is repeated by the next one.
    async fn announce(&self, info: &TaskInfo, task: &LocalTask, fetching: &[u64]);
    /// Starts fetching piece `index` from `source`; its outcome arrives on `done`.
    fn fetch(
        &self,
        task: &Arc<LocalTask>,
        info: &TaskInfo,
        index: u64,
        source: Source,
        done: mpsc::Sender<Outcome>,
    );
    /// Pieces all downloads of this agent are taking from an edge now.
    fn edge_pieces_in_flight(&self) -> usize;
}

pub(crate) struct Session<'a, N> {
    net: &'a N,
    /// This agent's host id (its share of the pieces nobody holds depends on it).
    me: &'a str,
    config: &'a DownloadConfig,
    request: &'a BlobRequest,
    task: Arc<LocalTask>,
    info: TaskInfo,
    began: Instant,
    in_flight: HashMap<u64, Source>,
    parents: Vec<ParentCandidate>,
    /// Pieces the scheduler handed this download to take from the edge, in its last answer
    /// (`None`: it hands none out).
    handed: Option<Vec<u64>>,
    /// Its place among its rack's peers, in the last answer.
    rack_place: Option<RackPlace>,
    skip: Skip,
    /// When each piece became known (listed in the edge's table), to spot unclaimed ones and to
    /// see how fast the edge lists them.
    known_since: Vec<Instant>,
    last_table: Option<Instant>,
    last_parents: Option<Instant>,
    last_announce: Option<Instant>,
    announced: Option<Announced>,
    /// Scheduler calls that failed in a row, and when the next may be made.
    scheduler_failures: u32,
    scheduler_retry_at: Option<Instant>,
    failovers: u32,
    /// The run of pieces from one kind of source (`peer`, `edge`), as a span of the download's
    /// trace: one span per switch of source, not one per piece.
    pieces_from: Option<(&'static str, tracing::Span)>,
    done_tx: mpsc::Sender<Outcome>,
    done_rx: mpsc::Receiver<Outcome>,
}

impl<'a, N: Network> Session<'a, N> {
    pub(crate) fn new(
        net: &'a N,
        me: &'a str,
        config: &'a DownloadConfig,
        request: &'a BlobRequest,
        task: Arc<LocalTask>,
        info: TaskInfo,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::channel(64);
        Session {
            net,
            me,
            config,
            request,
            task,
            info,
            began: Instant::now(),
            in_flight: HashMap::new(),
            parents: Vec::new(),
            handed: None,
            rack_place: None,
            skip: Skip::default(),
            known_since: Vec::new(),
            last_table: None,
            last_parents: None,
            last_announce: None,
            announced: None,
            scheduler_failures: 0,
            scheduler_retry_at: None,
            failovers: 0,
            pieces_from: None,
            done_tx,
            done_rx,
        }
    }

    /// Runs until every piece is here (then answers the task as last seen) or the P2P path
    /// fails for good.
    pub(crate) async fn drive(mut self) -> AgentResult<TaskInfo> {
        loop {
            if self.task.is_complete() {
                let last = self.net.announce(&self.info, &self.task, &[]);
                let _ = tokio::time::timeout(SCHEDULER_CALL_TIMEOUT, last).await;
                return Ok(self.info);
            }
            let now = Instant::now();
            self.refresh_table(now).await?;
            self.refresh_parents(now).await;
            self.skip.expire(now);
            self.pick_and_fetch(now);
            self.task
                .note_download(self.edge_left(now), in_swarm(&self.parents, &self.skip));
            // After the picks, so pieces just asked of the edge are announced at once: the
            // others then wait for them rather than ask the edge too.
            self.announce_if_due(now).await;
            if let Ok(Some(outcome)) = tokio::time::timeout(TICK, self.done_rx.recv()).await {
                self.handle(outcome).await?;
            }
        }
    }

    /// How long until the edge holds every piece: the pieces left at the rate the table grew
    /// from the pieces first known to the last ones, less the time since (`None` before it has
    /// grown). Reads `known_since`, so it follows [`Session::note_known`].
    fn edge_left(&self, now: Instant) -> Option<Duration> {
        let pieces = self.task.layout.count();
        policy::edge_left(self.info.complete, &self.known_since, pieces, now)
    }

    /// While the edge ingests, the table grows; once it is complete, only the ticket needs
    /// renewing (the same request brings a new one).
    async fn refresh_table(&mut self, now: Instant) -> AgentResult<()> {
        let wanted = !self.info.complete || self.info.ticket_due(crate::client::unix_now());
        if !wanted || !due(self.last_table, TABLE_EVERY, now) {
            return Ok(());
        }
        self.last_table = Some(now);
        match self.net.refresh(self.request, &self.info).await {
            Ok(fresh) => self.info = fresh,
            // Refused, or the edge's own transfer failed: only the origin can do better.
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => self.fail_over(e).await?,
        }
        Ok(())
    }

    fn parents_every(&self) -> Duration {
        policy::parents_every(self.in_flight.len(), self.config)
    }

    async fn refresh_parents(&mut self, now: Instant) {
        if !due(self.last_parents, self.parents_every(), now) {
            return;
        }
        if self.scheduler_backing_off(now) {
            return;
        }
        self.last_parents = Some(now);
        // Handed pieces it could not start would wait for their hand-out to lapse.
        let free = self.config.concurrent_pieces.saturating_sub(self.in_flight.len());
        let room = self.edge_room(now).min(free);
        let known = self.info.table.pieces.len() as u64;
        let parents = self.net.parents(&self.info, room, known);
        match tokio::time::timeout(SCHEDULER_CALL_TIMEOUT, parents).await {
            Ok(Ok(answer)) => {
                self.parents = answer.parents;
                self.handed = answer.edge_pieces;
                self.rack_place = answer.rack_place;
                self.scheduler_failures = 0;
            }
            Ok(Err(_)) | Err(_) => self.scheduler_failed(now),
        }
    }

    fn scheduler_backing_off(&self, now: Instant) -> bool {
        self.scheduler_retry_at.is_some_and(|at| now < at)
    }

    fn scheduler_failed(&mut self, now: Instant) {
        self.scheduler_failures = self.scheduler_failures.saturating_add(1);
        let wait = PARENTS_EVERY
            .saturating_mul(1 << self.scheduler_failures.min(16))
            .min(SCHEDULER_BACKOFF_MAX);
        self.scheduler_retry_at = Some(now + wait);
    }

    fn pick_and_fetch(&mut self, now: Instant) {
        self.note_known(now);
        let have = self.task.bitfield();
        let owners = |index: u64| self.owners(index, now);
        let edge = EdgeTurn {
            room: self.edge_room(now),
            me: self.me,
            owners: &owners,
            handed: self.handed.as_deref(),
            rack_place: self.rack_place,
        };
        let picks = pick(
            &have,
            &self.info.table.pieces,
            &self.in_flight,
            &self.parents,
            &self.skip,
            self.config,
            &edge,
        );
        for (index, source) in picks {
            self.in_flight.insert(index, source.clone());
            self.net
                .fetch(&self.task, &self.info, index, source, self.done_tx.clone());
        }
    }

    /// Remembers when pieces first appeared in the table.
    fn note_known(&mut self, now: Instant) {
        self.known_since.resize(self.info.table.pieces.len(), now);
    }

    /// How many of piece `index`'s candidate owners may take it from the edge: one more for each
    /// period it has stayed unclaimed since it became known.
    fn owners(&self, index: u64, now: Instant) -> usize {
        policy::owners(self.known_since.get(index as usize).copied(), now)
    }

    /// Pieces this download may take from the edge now.
    fn edge_room(&self, now: Instant) -> usize {
        let edge = EdgeUse {
            running_for: now.duration_since(self.began),
            in_swarm: in_swarm(&self.parents, &self.skip),
            agent_in_flight: self.net.edge_pieces_in_flight(),
            own_in_flight: self.in_flight.values().filter(|s| **s == Source::Edge).count(),
        };
        policy::edge_room(&edge, self.config)
    }

    async fn announce_if_due(&mut self, now: Instant) {
        let state = Announced::now(self.task.bitfield().count(), &self.in_flight);
        if !self.announcement_due(&state, now) || self.scheduler_backing_off(now) {
            return;
        }
        self.last_announce = Some(now);
        let announce = self.net.announce(&self.info, &self.task, &state.fetching);
        if tokio::time::timeout(SCHEDULER_CALL_TIMEOUT, announce)
            .await
            .is_err()
        {
            self.scheduler_failed(now);
        }
        self.announced = Some(state);
    }

    fn announcement_due(&self, state: &Announced, now: Instant) -> bool {
        let last = self.last_announce.zip(self.announced.as_ref());
        policy::announcement_due(last, state, in_swarm(&self.parents, &self.skip), now)
    }

    async fn handle(&mut self, outcome: Outcome) -> AgentResult<()> {
        self.in_flight.remove(&outcome.index);
        let Err(error) = outcome.result else {
            let kind = outcome.source.kind();
            if self.pieces_from.as_ref().is_none_or(|(from, _)| *from != kind) {
                // The previous run's span ends here (dropped), the next one starts.
                let span = tracing::info_span!("pieces", source = kind, first = outcome.index);
                self.pieces_from = Some((kind, span));
            }
            return Ok(());
        };
        match outcome.source {
            Source::Peer { host_id, .. } => {
                // A busy parent is asked again soon (its pieces wait for it); a failing or
                // lying one is not trusted for much longer.
                tracing::debug!(digest = %self.task.digest, index = outcome.index, parent = %host_id, %error, "piece failed; trying elsewhere");
                let now = Instant::now();
                if let AgentError::Busy(_) = error {
                    self.skip.busy.insert(host_id, now + BUSY_PARENT_PAUSE);
                } else {
                    let distrust = Duration::from_secs(self.config.bad_parent_secs);
                    self.skip.failed.insert(host_id, now + distrust);
                }
            }
            // The edge's transfer failed, or this agent cannot store pieces: only the origin
            // can do better.
            Source::Edge if !error.is_retryable() => return Err(error),
            // Down: the next edge. Busy, or one bad piece: the same edge again later.
            Source::Edge => {
                if let AgentError::Unavailable(_) = error {
                    self.fail_over(error).await?;
                }
            }
        }
        Ok(())
    }

    /// The edge failed: the task from the next one, up to `MAX_EDGE_FAILOVERS` times.
    async fn fail_over(&mut self, cause: AgentError) -> AgentResult<()> {
        self.failovers += 1;
        self.net.edge_failed(&self.info, &cause);
        if self.failovers > MAX_EDGE_FAILOVERS {
            return Err(AgentError::Unavailable(format!("edges keep failing: {cause}")));
        }
        self.info = self.net.task_elsewhere(self.request, &self.info).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use bytes::Bytes;
    use damselfly_core::{Bitfield, Digest, PieceHash, PieceLayout, PieceTable, TaskKey};
    use tokio::time::advance;

    use super::*;
    use crate::request::TaskOrigin;
    use crate::store::PieceStore;

    const MS: Duration = Duration::from_millis(1);

    /// What the fake's piece fetches do.
    #[derive(Clone, Copy)]
    enum Fetches {
        /// Never end.
        Hang,
        /// Store the piece and succeed.
        Deliver,
        /// The edge answers that its transfer from the origin failed.
        FailTransfer,
    }

    /// The network as a recorder: every call and when it was made.
    struct FakeNet {
        fetches: Fetches,
        fetches_started: AtomicUsize,
        parents: Vec<ParentCandidate>,
        /// What the next table refresh fails with.
        refresh_fails: Mutex<Option<AgentError>>,
        refreshes: Mutex<Vec<Instant>>,
        parent_requests: Mutex<Vec<Instant>>,
        announcements: Mutex<Vec<(Instant, Vec<u64>)>>,
        failed_edges: Mutex<Vec<usize>>,
    }

    impl FakeNet {
        fn new(fetches: Fetches) -> Self {
            FakeNet {
                fetches,
                fetches_started: AtomicUsize::new(0),
                parents: Vec::new(),
                refresh_fails: Mutex::new(None),
                refreshes: Mutex::new(Vec::new()),
                parent_requests: Mutex::new(Vec::new()),
                announcements: Mutex::new(Vec::new()),
                failed_edges: Mutex::new(Vec::new()),
            }
        }
    }

    impl Network for FakeNet {
        async fn refresh(&self, _: &BlobRequest, held: &TaskInfo) -> AgentResult<TaskInfo> {
            self.refreshes.lock().unwrap().push(Instant::now());
            match self.refresh_fails.lock().unwrap().take() {
                Some(e) => Err(e),
                None => Ok(held.clone()),
            }
        }

        fn edge_failed(&self, info: &TaskInfo, _: &AgentError) {
            self.failed_edges.lock().unwrap().push(info.edge);
        }

        async fn task_elsewhere(&self, _: &BlobRequest, failed: &TaskInfo) -> AgentResult<TaskInfo> {
            Ok(TaskInfo {
                edge: failed.edge + 1,
                ..failed.clone()
            })
        }

        async fn parents(&self, _: &TaskInfo, _: usize, _: u64) -> AgentResult<ParentsAnswer> {
            self.parent_requests.lock().unwrap().push(Instant::now());
            Ok(ParentsAnswer {
                parents: self.parents.clone(),
                edge_pieces: None,
                rack_place: None,
            })
        }

        async fn announce(&self, _: &TaskInfo, _: &LocalTask, fetching: &[u64]) {
            let call = (Instant::now(), fetching.to_vec());
            self.announcements.lock().unwrap().push(call);
        }

        fn fetch(
            &self,
            task: &Arc<LocalTask>,
            _: &TaskInfo,
            index: u64,
            source: Source,
            done: mpsc::Sender<Outcome>,
        ) {
            // A loop that keeps fetching without end fails its test rather than hang it.
            let started = self.fetches_started.fetch_add(1, Ordering::SeqCst);
            assert!(started < 10_000, "the download keeps fetching and never ends");
            let result = match self.fetches {
                Fetches::Hang => return,
                Fetches::Deliver => task.write_piece(index, sealed(task, index), 0),
                Fetches::FailTransfer => Err(AgentError::TransferFailed("digest mismatch".into())),
            };
            tokio::spawn(async move {
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
            0
        }
    }

    fn sealed(task: &LocalTask, index: u64) -> Bytes {
        Bytes::from(vec![0; task.layout.sealed_len(index) as usize])
    }

    /// A task of `pieces` pieces whose first `listed` hashes the edge has sent, and the fake
    /// network its session runs over.
    struct Download {
        _dir: tempfile::TempDir,
        config: DownloadConfig,
        request: BlobRequest,
        task: Arc<LocalTask>,
        info: TaskInfo,
        net: FakeNet,
    }

    impl Download {
        fn new(pieces: u64, listed: usize, fetches: Fetches) -> Download {
            let dir = tempfile::tempdir().unwrap();
            let store = PieceStore::open(dir.path(), u64::MAX).unwrap();
            let digest = Digest::of(b"blob");
            let layout = PieceLayout::for_size(pieces * damselfly_core::piece::MIN_PIECE_LENGTH);
            let (task, _) = store.get_or_create(&digest, layout).unwrap();
            Download {
                _dir: dir,
                config: DownloadConfig::default(),
                request: BlobRequest {
                    digest,
                    origin: TaskOrigin::Registry {
                        repo: "demo/app".into(),
                        ns: None,
                    },
                    authorization: None,
                },
                info: TaskInfo {
                    table: PieceTable {
                        digest,
                        layout,
                        hash: PieceHash::Sha256,
                        pieces: vec![[0; 32]; listed],
                        zstd: Vec::new(),
                    },
                    complete: listed as u64 == pieces,
                    key: TaskKey::from_bytes([0; 32]),
                    ticket: "ticket".into(),
                    ticket_since: 0,
                    ticket_expires_at: u64::MAX,
                    edge: 0,
                },
                task,
                net: FakeNet::new(fetches),
            }
        }

        fn session(&self) -> Session<'_, FakeNet> {
            Session::new(
                &self.net,
                "me",
                &self.config,
                &self.request,
                self.task.clone(),
                self.info.clone(),
            )
        }

        fn land(&self, index: u64) {
            self.task
                .write_piece(index, sealed(&self.task, index), 0)
                .unwrap();
        }
    }

    fn peer(host_id: &str) -> ParentCandidate {
        ParentCandidate {
            host_id: host_id.into(),
            upload_url: format!("http://{host_id}"),
            location: "eu/z1/r1".parse().unwrap(),
            shared: 3,
            pieces: Bitfield::new(8),
            fetching: None,
            free_slots: 4,
        }
    }

    fn from_peer(host_id: &str) -> Source {
        Source::Peer {
            host_id: host_id.into(),
            url: format!("http://{host_id}"),
        }
    }

    fn failed(index: u64, source: Source, error: AgentError) -> Outcome {
        Outcome {
            index,
            source,
            result: Err(error),
        }
    }

    /// Milliseconds since `start` of each recorded call.
    fn times(calls: &[Instant], start: Instant) -> Vec<u128> {
        calls
            .iter()
            .map(|t| t.duration_since(start).as_millis())
            .collect()
    }

    /// Runs a step at each offset (milliseconds since the first).
    async fn at_offsets<F: AsyncFnMut(Instant)>(offsets: &[u64], mut step: F) {
        let start = Instant::now();
        for offset in offsets {
            let target = start + Duration::from_millis(*offset);
            advance(target.duration_since(Instant::now())).await;
            step(Instant::now()).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_announced_at_most_every_50_ms_and_a_heartbeat_every_5_s() {
        let download = Download::new(8, 8, Fetches::Hang);
        let mut session = download.session();
        let start = Instant::now();
        session.announce_if_due(start).await;
        download.land(0);
        // The change waits out 50 ms since the first announcement; then nothing changes.
        at_offsets(&[49, 50, 51, 5049, 5050], async |now| {
            session.announce_if_due(now).await
        })
        .await;
        let announced = download.net.announcements.lock().unwrap();
        let calls: Vec<Instant> = announced.iter().map(|c| c.0).collect();
        assert_eq!(times(&calls, start), vec![0, 50, 5050]);
    }

    #[tokio::test(start_paused = true)]
    async fn in_a_swarm_pieces_newly_taken_from_the_edge_are_announced_at_once_but_at_most_every_10_ms() {
        let download = Download::new(8, 8, Fetches::Hang);
        let mut session = download.session();
        // A member holding nothing yet: a swarm.
        session.parents = vec![peer("other")];
        let start = Instant::now();
        session.announce_if_due(start).await;
        session.in_flight.insert(1, Source::Edge);
        at_offsets(&[5, 10, 20], async |now| session.announce_if_due(now).await).await;
        // Alone, what it takes from the edge interests nobody: it is a change like any other.
        session.parents.clear();
        session.in_flight.insert(2, Source::Edge);
        // From t = 20 ms: 30 and 59 are too soon after the announcement at 10, 60 is not.
        at_offsets(&[10, 39, 40], async |now| session.announce_if_due(now).await).await;
        let calls = download.net.announcements.lock().unwrap();
        let instants: Vec<Instant> = calls.iter().map(|c| c.0).collect();
        assert_eq!(times(&instants, start), vec![0, 10, 60]);
        let fetching: Vec<&[u64]> = calls.iter().map(|c| c.1.as_slice()).collect();
        assert_eq!(fetching, vec![&[][..], &[1][..], &[1, 2][..]]);
    }

    #[tokio::test(start_paused = true)]
    async fn parents_are_asked_every_100_ms_and_every_500_ms_while_every_fetch_slot_is_busy() {
        let mut download = Download::new(8, 8, Fetches::Hang);
        download.config.concurrent_pieces = 2;
        let mut session = download.session();
        let start = Instant::now();
        at_offsets(&[0, 99, 100], async |now| session.refresh_parents(now).await).await;
        session.in_flight.insert(0, from_peer("a"));
        session.in_flight.insert(1, Source::Edge);
        at_offsets(&[100, 499, 500], async |now| session.refresh_parents(now).await).await;
        let calls = download.net.parent_requests.lock().unwrap();
        assert_eq!(times(&calls, start), vec![0, 100, 600]);
    }

    #[tokio::test(start_paused = true)]
    async fn how_long_the_edge_needs_for_the_rest_follows_how_fast_its_table_grew() {
        let download = Download::new(8, 2, Fetches::Hang);
        let mut session = download.session();
        session.note_known(Instant::now());
        assert_eq!(session.edge_left(Instant::now()), None, "no growth seen yet");
        advance(500 * MS).await;
        // 2 more of 8 listed in 0.5 s: the 4 left take 1 s, less the time since.
        session.info.table.pieces.extend([[0; 32]; 2]);
        session.note_known(Instant::now());
        assert_eq!(session.edge_left(Instant::now()), Some(1000 * MS));
        advance(300 * MS).await;
        assert_eq!(session.edge_left(Instant::now()), Some(700 * MS));
        session.info.complete = true;
        assert_eq!(session.edge_left(Instant::now()), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_piece_unclaimed_for_5_s_may_be_taken_by_one_more_owner_each_period() {
        let download = Download::new(8, 2, Fetches::Hang);
        let mut session = download.session();
        let start = Instant::now();
        session.note_known(start);
        assert_eq!(session.owners(0, start), 1);
        advance(4999 * MS).await;
        assert_eq!(session.owners(0, Instant::now()), 1);
        advance(MS).await;
        assert_eq!(session.owners(0, Instant::now()), 2);
        advance(5000 * MS).await;
        assert_eq!(session.owners(1, Instant::now()), 3);
        // A piece listed later counts from when it appeared.
        session.info.table.pieces.extend([[0; 32]; 2]);
        session.note_known(Instant::now());
        assert_eq!(session.owners(3, Instant::now()), 1);
        assert_eq!(session.owners(0, Instant::now()), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_parent_is_left_alone_300_ms_and_a_failing_one_bad_parent_secs() {
        let mut download = Download::new(8, 8, Fetches::Hang);
        download.config.bad_parent_secs = 30;
        let mut session = download.session();
        let busy = failed(0, from_peer("busy"), AgentError::Busy("all upload slots in use"));
        let lying = failed(1, from_peer("liar"), AgentError::BadPiece("piece 1".into()));
        session.handle(busy).await.unwrap();
        session.handle(lying).await.unwrap();
        let skipped = async |session: &mut Session<'_, FakeNet>, after: Duration| {
            advance(after).await;
            session.skip.expire(Instant::now());
            (
                session.skip.busy.contains_key("busy"),
                session.skip.failed.contains_key("liar"),
            )
        };
        assert_eq!(skipped(&mut session, 299 * MS).await, (true, true));
        assert_eq!(skipped(&mut session, MS).await, (false, true));
        assert_eq!(skipped(&mut session, 29_699 * MS).await, (false, true));
        assert_eq!(skipped(&mut session, MS).await, (false, false));
        assert!(
            download.net.failed_edges.lock().unwrap().is_empty(),
            "a peer is not an edge"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_edge_is_failed_over_a_busy_one_asked_again_a_failed_transfer_ends_it() {
        let download = Download::new(8, 8, Fetches::Hang);
        let mut session = download.session();
        session
            .handle(failed(0, Source::Edge, AgentError::Busy("busy")))
            .await
            .unwrap();
        let bad = AgentError::BadPiece("piece 1".into());
        session.handle(failed(1, Source::Edge, bad)).await.unwrap();
        assert_eq!(session.info.edge, 0, "busy or one bad piece: the same edge");
        let down = || failed(2, Source::Edge, AgentError::Unavailable("refused".into()));
        session.handle(down()).await.unwrap();
        assert_eq!(session.info.edge, 1);
        let transfer = AgentError::TransferFailed("digest mismatch".into());
        let end = session.handle(failed(3, Source::Edge, transfer)).await;
        assert!(matches!(end, Err(AgentError::TransferFailed(_))), "{end:?}");
        // Edges that keep failing end it too, after three failovers.
        session.handle(down()).await.unwrap();
        session.handle(down()).await.unwrap();
        let end = session.handle(down()).await;
        assert!(matches!(end, Err(AgentError::Unavailable(_))), "{end:?}");
        assert_eq!(*download.net.failed_edges.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_refreshed_every_200_ms_until_complete_and_a_refusal_ends_the_download() {
        let download = Download::new(8, 2, Fetches::Hang);
        let mut session = download.session();
        let start = Instant::now();
        at_offsets(&[0, 199, 200], async |now| {
            session.refresh_table(now).await.unwrap()
        })
        .await;
        assert_eq!(
            times(&download.net.refreshes.lock().unwrap(), start),
            vec![0, 200]
        );
        *download.net.refresh_fails.lock().unwrap() = Some(AgentError::Unavailable("reset".into()));
        advance(200 * MS).await;
        session.refresh_table(Instant::now()).await.unwrap();
        assert_eq!(session.info.edge, 1, "an unreachable edge: the next one");
        *download.net.refresh_fails.lock().unwrap() = Some(AgentError::TransferFailed("gone".into()));
        advance(200 * MS).await;
        let end = session.refresh_table(Instant::now()).await;
        assert!(matches!(end, Err(AgentError::TransferFailed(_))), "{end:?}");
        session.info.complete = true;
        advance(200 * MS).await;
        session.refresh_table(Instant::now()).await.unwrap();
        assert_eq!(
            download.net.refreshes.lock().unwrap().len(),
            4,
            "a complete table is not asked again"
        );
        // ...until its ticket is in the last third of its life: the same request renews it.
        let now = crate::client::unix_now();
        (session.info.ticket_since, session.info.ticket_expires_at) = (now - 500, now + 100);
        advance(200 * MS).await;
        session.refresh_table(Instant::now()).await.unwrap();
        assert_eq!(
            download.net.refreshes.lock().unwrap().len(),
            5,
            "an aging ticket is renewed"
        );
    }

    /// A loop that waits without end fails its test (a minute of paused time passes at once).
    async fn within_a_minute<T>(drive: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), drive)
            .await
            .expect("the download never ended")
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_ends_with_every_piece_and_a_last_announcement() {
        let download = Download::new(8, 8, Fetches::Deliver);
        let info = within_a_minute(download.session().drive()).await.unwrap();
        assert!(download.task.is_complete());
        assert_eq!(info.table.pieces.len(), 8);
        let calls = download.net.announcements.lock().unwrap();
        assert_eq!(calls.last().map(|c| c.1.as_slice()), Some(&[][..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_ends_when_the_edge_says_its_transfer_failed() {
        let download = Download::new(8, 8, Fetches::FailTransfer);
        let end = within_a_minute(download.session().drive()).await;
        assert!(matches!(end, Err(AgentError::TransferFailed(_))), "{end:?}");
        assert!(!download.task.is_complete());
    }
}
