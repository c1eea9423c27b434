//! One simulated host's download of one task: the state the agent's download loop keeps, and
//! its turn, step for step as `peer-agent/src/download/session.rs` takes it (refresh the table,
//! refresh the parents, expire skips, pick, announce), with the agent's own decision functions
//! ([`picker::pick`], [`policy`]). Only the network calls are the model's.

use std::collections::HashMap;

use damselfly_agent::config::DownloadConfig;
use damselfly_agent::picker::{self, EdgeTurn, Skip, Source};
use damselfly_agent::policy::{self, due, Announced, EdgeUse, TABLE_EVERY};
use damselfly_core::api::{ParentCandidate, ParentsAnswer, RackPlace};
use damselfly_core::Bitfield;
use tokio::time::Instant;

pub struct Download {
    pub task: usize,
    /// Asked for by the runtime (else read ahead, until the runtime asks).
    pub asked: bool,
    pub have: Bitfield,
    pub in_flight: HashMap<u64, Source>,
    pub parents: Vec<ParentCandidate>,
    /// Pieces the scheduler handed this download to take from the edge (its last answer).
    pub handed: Option<Vec<u64>>,
    pub rack_place: Option<RackPlace>,
    pub skip: Skip,
    /// Pieces listed in this host's copy of the edge's table, and when each first was.
    pub known_since: Vec<Instant>,
    pub table_complete: bool,
    began: Instant,
    last_table: Option<Instant>,
    last_parents: Option<Instant>,
    last_announce: Option<Instant>,
    announced: Option<Announced>,
    /// A fetch of this download ended since its last turn.
    woken: bool,
    last_turn: Option<Instant>,
}

/// What the rest of the world looks like to one download's turn.
pub trait World {
    /// The edge's table of the task: pieces listed, and whether it is complete.
    fn table(&mut self, task: usize) -> (u64, bool);
    /// Parents, and pieces handed out to take from the edge: up to `edge_room` of the first
    /// `known`.
    fn parents(&mut self, task: usize, edge_room: usize, known: u64) -> ParentsAnswer;
    /// Pieces this host takes from the edge now, all its downloads together.
    fn edge_in_flight(&self) -> usize;
    fn fetch(&mut self, task: usize, index: u64, source: &Source);
    fn announce(&mut self, task: usize, pieces: &Bitfield, fetching: &[u64]);
}

impl Download {
    pub fn new(task: usize, pieces: u64, asked: bool, now: Instant) -> Download {
        Download {
            task,
            asked,
            have: Bitfield::new(pieces),
            in_flight: HashMap::new(),
            parents: Vec::new(),
            handed: None,
            rack_place: None,
            skip: Skip::default(),
            known_since: Vec::new(),
            table_complete: false,
            began: now,
            last_table: None,
            last_parents: None,
            last_announce: None,
            announced: None,
            woken: true,
            last_turn: None,
        }
    }

    /// The agent's loop turns when a fetch ends, or after [`policy::TICK`] without one.
    pub fn turn_due(&self, now: Instant) -> bool {
        self.woken
            || self
                .last_turn
                .is_none_or(|t| now.duration_since(t) >= policy::TICK)
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// How long until the edge holds the whole task, as the agent estimates it.
    pub fn edge_left(&self, now: Instant) -> Option<std::time::Duration> {
        policy::edge_left(self.table_complete, &self.known_since, self.have.len(), now)
    }

    pub fn in_swarm(&self) -> bool {
        picker::in_swarm(&self.parents, &self.skip)
    }

    /// One turn of the loop (`Session::drive`'s body), for a download not yet complete.
    pub fn turn<W: World>(
        &mut self,
        world: &mut W,
        me: &str,
        config: &DownloadConfig,
        hashes: &[[u8; 32]],
        now: Instant,
    ) {
        self.woken = false;
        self.last_turn = Some(now);
        if !self.table_complete && due(self.last_table, TABLE_EVERY, now) {
            self.last_table = Some(now);
            let (listed, complete) = world.table(self.task);
            self.known_since.resize(listed as usize, now);
            self.table_complete = complete;
        }
        let edge_use = |parents: &[ParentCandidate], skip: &Skip, world: &W| EdgeUse {
            running_for: now.duration_since(self.began),
            in_swarm: picker::in_swarm(parents, skip),
            agent_in_flight: world.edge_in_flight(),
            own_in_flight: self.in_flight.values().filter(|s| **s == Source::Edge).count(),
        };
        if due(
            self.last_parents,
            policy::parents_every(self.in_flight.len(), config),
            now,
        ) {
            self.last_parents = Some(now);
            let free = config.concurrent_pieces.saturating_sub(self.in_flight.len());
            let room = policy::edge_room(&edge_use(&self.parents, &self.skip, world), config).min(free);
            let known = self.known_since.len() as u64;
            let answer = world.parents(self.task, room, known);
            (self.parents, self.handed, self.rack_place) =
                (answer.parents, answer.edge_pieces, answer.rack_place);
        }
        self.skip.expire(now);
        let in_swarm = picker::in_swarm(&self.parents, &self.skip);
        let edge_use = edge_use(&self.parents, &self.skip, world);
        let known_since = &self.known_since;
        let owners = |index: u64| policy::owners(known_since.get(index as usize).copied(), now);
        let edge = EdgeTurn {
            room: policy::edge_room(&edge_use, config),
            me,
            owners: &owners,
            handed: self.handed.as_deref(),
            rack_place: self.rack_place,
        };
        let picks = picker::pick(
            &self.have,
            &hashes[..self.known_since.len()],
            &self.in_flight,
            &self.parents,
            &self.skip,
            config,
            &edge,
        );
        for (index, source) in picks {
            world.fetch(self.task, index, &source);
            self.in_flight.insert(index, source);
        }
        self.announce_if_due(world, in_swarm, now);
    }

    fn announce_if_due(&mut self, world: &mut impl World, in_swarm: bool, now: Instant) {
        let state = Announced::now(self.have.count(), &self.in_flight);
        let last = self.last_announce.zip(self.announced.as_ref());
        if !policy::announcement_due(last, &state, in_swarm, now) {
            return;
        }
        self.last_announce = Some(now);
        world.announce(self.task, &self.have, &state.fetching);
        self.announced = Some(state);
    }

    /// A piece arrived.
    pub fn landed(&mut self, index: u64) {
        self.in_flight.remove(&index);
        self.have.set(index);
        self.woken = true;
    }

    /// A parent answered "busy" (every upload slot taken): left alone for a moment, as the
    /// agent does.
    pub fn parent_busy(&mut self, index: u64, now: Instant) {
        self.woken = true;
        if let Some(Source::Peer { host_id, .. }) = self.in_flight.remove(&index) {
            self.skip.busy.insert(host_id, now + policy::BUSY_PARENT_PAUSE);
        }
    }
}
