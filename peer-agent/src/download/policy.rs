//! The download loop's rules of timing and of the edge's budget, as functions of the loop's
//! state. [`super::session::Session`] runs them for one download; `bench sim` runs the same
//! functions for thousands of simulated hosts, so what it measures is this code's behaviour.

use std::collections::HashMap;
use std::time::Duration;

use damselfly_core::api::scheduler::cadence::{
    ANNOUNCE_EVERY, HEARTBEAT_EVERY, PARENTS_EVERY, PARENTS_EVERY_WHEN_FULL,
};
use tokio::time::Instant;

use super::picker::Source;
use crate::config::DownloadConfig;

/// How often the table refreshes while the edge is still ingesting. Parents and announcements
/// keep the protocol's cadence (`core::api::scheduler::cadence`).
pub const TABLE_EVERY: Duration = Duration::from_millis(200);
/// In a swarm, pieces just asked of the edge are announced without waiting for
/// `ANNOUNCE_EVERY`, but not more often than this (a fast download asks for many).
pub const ANNOUNCE_TAKEN_EVERY: Duration = Duration::from_millis(10);
/// With no fetch ending, the loop still turns this often to refresh and pick.
pub const TICK: Duration = Duration::from_millis(100);
/// A busy parent is not asked for this long; its pieces wait for it rather than go to the edge.
pub const BUSY_PARENT_PAUSE: Duration = Duration::from_millis(300);
/// Pieces one agent fetches from the edge at once, all downloads together, while peers share
/// the task (only pieces it owns: the edge sends each piece to one agent and the swarm passes
/// it on). Two keep an owner busy while many share the edge's link.
pub const SWARM_EDGE_PIECES: usize = 2;
/// Each period a piece stays unclaimed after it became known, one more candidate owner may take
/// it from the edge (its owner is slow, busy elsewhere or gone). Long enough for an owner whose
/// request waits in the edge's send queue: a second owner's copy costs edge bandwidth that every
/// other piece is waiting for.
pub const UNCLAIMED_AFTER: Duration = Duration::from_secs(5);

/// Layer read-ahead (`read_ahead.rs`) starts an image's next layer when the edge is this close
/// to holding every piece of the layers being pulled: about what it takes the download to see
/// that (tables every 200 ms), to ask the edge and the edge to ask the origin, so the edge's
/// link from the origin does not pause.
pub const READ_AHEAD_LEAD: Duration = Duration::from_millis(500);

/// Whether `every` has passed since `last` (or nothing happened yet).
pub fn due(last: Option<Instant>, every: Duration, now: Instant) -> bool {
    last.is_none_or(|t| now.duration_since(t) >= every)
}

/// How often parents are asked: often while a fetch could start, less while every slot is busy.
pub fn parents_every(in_flight: usize, config: &DownloadConfig) -> Duration {
    if in_flight < config.concurrent_pieces {
        PARENTS_EVERY
    } else {
        PARENTS_EVERY_WHEN_FULL
    }
}

/// How many of a piece's candidate owners may take it from the edge: one more for each
/// [`UNCLAIMED_AFTER`] it has stayed unclaimed since it became known (`known_since`).
pub fn owners(known_since: Option<Instant>, now: Instant) -> usize {
    let waited = known_since.map_or(Duration::ZERO, |t| now.duration_since(t));
    1 + (waited.as_millis() / UNCLAIMED_AFTER.as_millis()) as usize
}

/// What a download's use of the edge looks like now.
pub struct EdgeUse {
    /// Since the download began.
    pub running_for: Duration,
    /// Whether usable peers share the task ([`super::picker::in_swarm`]).
    pub in_swarm: bool,
    /// Pieces all downloads of this agent are taking from an edge.
    pub agent_in_flight: usize,
    /// Pieces this download is taking from the edge.
    pub own_in_flight: usize,
}

/// Pieces this download may take from the edge now.
pub fn edge_room(edge: &EdgeUse, config: &DownloadConfig) -> usize {
    // Agents starting together see nobody in their first answers; until the scheduler has had
    // time to show the others, each behaves as in a swarm and takes one edge piece at a time (a
    // lone agent loses well under a second).
    let settling = edge.running_for < 2 * PARENTS_EVERY;
    if settling || edge.in_swarm {
        SWARM_EDGE_PIECES.saturating_sub(edge.agent_in_flight)
    } else {
        config.per_parent.saturating_sub(edge.own_in_flight)
    }
}

/// What an announcement said.
#[derive(Debug, PartialEq, Eq)]
pub struct Announced {
    pub held: u64,
    /// Pieces being taken from the edge, sorted.
    pub fetching: Vec<u64>,
}

impl Announced {
    /// What an announcement would say now: `held` pieces, and those of `in_flight` taken from
    /// the edge.
    pub fn now(held: u64, in_flight: &HashMap<u64, Source>) -> Announced {
        let mut fetching: Vec<u64> = in_flight
            .iter()
            .filter(|(_, s)| **s == Source::Edge)
            .map(|(i, _)| *i)
            .collect();
        fetching.sort_unstable();
        Announced { held, fetching }
    }
}

/// A change at most every `ANNOUNCE_EVERY`; in a swarm, pieces newly taken from the edge at
/// once (at most every [`ANNOUNCE_TAKEN_EVERY`]); a heartbeat every `HEARTBEAT_EVERY`. `last`:
/// when the previous announcement went out and what it said.
pub fn announcement_due(
    last: Option<(Instant, &Announced)>,
    state: &Announced,
    in_swarm: bool,
    now: Instant,
) -> bool {
    let Some((last, announced)) = last else {
        return true;
    };
    let since = now.duration_since(last);
    // Only others in the swarm care what this agent takes from the edge.
    let taking_more = in_swarm
        && since >= ANNOUNCE_TAKEN_EVERY
        && state
            .fetching
            .iter()
            .any(|i| announced.fetching.binary_search(i).is_err());
    since >= HEARTBEAT_EVERY || taking_more || (state != announced && since >= ANNOUNCE_EVERY)
}

/// How long until the edge holds every one of a task's `pieces`: the pieces left at the rate
/// the table grew from the pieces first listed (`known_since`: when each was) to the last ones,
/// less the time since (`None` before it has grown; zero once the table is `complete`).
pub fn edge_left(complete: bool, known_since: &[Instant], pieces: u64, now: Instant) -> Option<Duration> {
    if complete {
        return Some(Duration::ZERO);
    }
    let (first, last) = (*known_since.first()?, *known_since.last()?);
    let took = last.duration_since(first);
    if took.is_zero() {
        return None;
    }
    let known_at_first = known_since.iter().take_while(|t| **t == first).count();
    let grown = known_since.len() - known_at_first;
    let remaining = (pieces as usize).saturating_sub(known_since.len());
    let left = took.mul_f64(remaining as f64 / grown as f64);
    Some(left.saturating_sub(now.duration_since(last)))
}
