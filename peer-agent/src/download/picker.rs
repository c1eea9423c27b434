//! Which pieces to fetch next, and from whom.
//!
//! Candidates are the missing pieces (with a known hash) inside a window ahead of the first
//! missing one, rarest first among the parents' bitfields (ties broken at random so agents
//! spread out). Each goes to the best-ranked parent that holds it and has room.
//!
//! The edge is the parent of last resort, for pieces no usable peer holds. Alone, an agent
//! takes those in stream order. In a swarm, its edge budget is shared by all its downloads, and
//! every piece nobody holds has one owner among the members (rendezvous hashing over host ids,
//! so all agents agree without talking): only the owner takes it from the edge, the others get
//! it from the owner. Agents learn of each other's pieces a few hundred milliseconds late and
//! chase the same freshly sealed pieces while the edge is still ingesting; without an owner,
//! several would fetch each of them. A piece unclaimed for too long (owner slow or gone) passes
//! to the next candidate owner as well, one more each period.

use std::collections::HashMap;
use tokio::time::Instant;

use damselfly_core::api::{ParentCandidate, RackPlace};
use damselfly_core::Bitfield;
use rand::seq::SliceRandom;

use crate::config::DownloadConfig;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Peer { host_id: String, url: String },
    Edge,
}

impl Source {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Source::Peer { .. } => "peer",
            Source::Edge => "edge",
        }
    }
}

/// Parents to leave alone for a while.
#[derive(Default)]
pub struct Skip {
    /// Failed, timed out or sent a piece not matching the table: not trusted to hold anything.
    pub failed: HashMap<String, Instant>,
    /// Answered "busy": still holds its pieces (they wait for it rather than go to the edge),
    /// but is not asked for a moment.
    pub busy: HashMap<String, Instant>,
}

impl Skip {
    pub fn expire(&mut self, now: Instant) {
        self.failed.retain(|_, until| *until > now);
        self.busy.retain(|_, until| *until > now);
    }

    fn trusted(&self, host: &str) -> bool {
        !self.failed.contains_key(host)
    }

    fn askable(&self, host: &str) -> bool {
        self.trusted(host) && !self.busy.contains_key(host)
    }
}

/// Whether usable peers share the task (even ones holding nothing yet): then the edge's
/// pieces are to be shared, not fetched by everyone.
pub fn in_swarm(parents: &[ParentCandidate], skip: &Skip) -> bool {
    parents.iter().any(|p| skip.trusted(&p.host_id))
}

/// How this download may use the edge now.
pub struct EdgeTurn<'a> {
    /// Pieces it may still take from the edge.
    pub room: usize,
    /// This agent's host id: in a swarm, each piece nobody holds has one owner among the
    /// members (rendezvous hashing), who takes it from the edge; the others wait for it.
    pub me: &'a str,
    /// How many of a piece's candidate owners may take it: 1 normally, more the longer it
    /// stays unclaimed (its first owner is slow or gone), so a late piece is fetched twice
    /// rather than by everyone.
    pub owners: &'a dyn Fn(u64) -> usize,
    /// Pieces the scheduler handed to this agent (`core::handout`), when it hands them out:
    /// then those are its share, not the ones rendezvous hashing over its parents gives it (a
    /// late piece still goes by the hashing).
    pub handed: Option<&'a [u64]>,
    /// This agent's place among its rack's peers (`ParentsAnswer::rack_place`, given in large
    /// racks): a piece only other racks hold is brought in by the place it falls on.
    pub rack_place: Option<RackPlace>,
}

/// A member's hash, computed once per pick: its score for each piece mixes it with the index.
fn member_key(member: &str) -> u64 {
    fnv1a(member.as_bytes())
}

fn score(key: u64, index: u64) -> u64 {
    mix(key ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// `me`'s place among `members` (their [`member_key`]s) as owner of piece `index` (0: the owner;
/// highest score wins, so a member joining or leaving moves only its own share).
fn owner_rank(index: u64, me: u64, members: &[u64]) -> usize {
    let mine = score(me, index);
    members.iter().filter(|m| score(**m, index) > mine).count()
}

#[cfg(test)]
fn owner<'a>(index: u64, members: &[&'a str]) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| score(member_key(m), index))
        .copied()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn pick(
    have: &Bitfield,
    hashes: &[[u8; 32]],
    in_flight: &HashMap<u64, Source>,
    parents: &[ParentCandidate],
    skip: &Skip,
    config: &DownloadConfig,
    edge: &EdgeTurn<'_>,
) -> Vec<(u64, Source)> {
    let room = config.concurrent_pieces.saturating_sub(in_flight.len());
    if room == 0 {
        return Vec::new();
    }
    let known = hashes.len() as u64;
    let Some(first_missing) = have.first_clear() else {
        return Vec::new();
    };
    let end = (first_missing + config.window).min(known).min(have.len());
    // Pieces in flight, as a bitfield: the loops below ask for every piece.
    let mut flying = Bitfield::new(have.len());
    in_flight
        .keys()
        .filter(|i| **i < have.len())
        .for_each(|i| flying.set(*i));
    let mut candidates: Vec<(usize, u64)> = (first_missing..end)
        .filter(|i| !have.get(*i) && !flying.get(*i))
        .map(|i| (parents.iter().filter(|p| p.pieces.get(i)).count(), i))
        .collect();
    candidates.shuffle(&mut rand::thread_rng());
    candidates.sort_by_key(|(rarity, _)| *rarity);

    // What the skip lists say of each parent, looked up once: the loops below ask it for
    // every piece.
    let trusted: Vec<bool> = parents.iter().map(|p| skip.trusted(&p.host_id)).collect();
    let askable: Vec<bool> = parents.iter().map(|p| skip.askable(&p.host_id)).collect();
    // Pieces in flight from each parent.
    let mut load = vec![0usize; parents.len()];
    for source in in_flight.values() {
        if let Source::Peer { host_id, .. } = source {
            if let Some(i) = parents.iter().position(|p| p.host_id == *host_id) {
                load[i] += 1;
            }
        }
    }
    let held_by_a_peer = |index: u64| {
        parents
            .iter()
            .zip(&trusted)
            .any(|(p, trusted)| *trusted && p.pieces.get(index))
    };
    let me = member_key(edge.me);
    let mut edge_room = edge.room;
    let mut picks = Vec::new();
    if trusted.iter().any(|t| *t) {
        // In a swarm ([`in_swarm`]).
        let mut members: Vec<u64> = parents
            .iter()
            .zip(&trusted)
            .filter(|(_, trusted)| **trusted)
            .map(|(p, _)| member_key(&p.host_id))
            .collect();
        members.push(me);
        let mine = |index: u64| {
            let owners = (edge.owners)(index);
            match edge.handed {
                Some(handed) if owners == 1 => handed.contains(&index),
                _ => owner_rank(index, me, &members) < owners,
            }
        };
        // A piece another member is taking from the edge is left to it, unless it is late.
        let coming = |index: u64| {
            (edge.owners)(index) == 1
                && parents
                    .iter()
                    .zip(&trusted)
                    .any(|(p, trusted)| *trusted && p.fetching(index))
        };
        let takes = edge_room.min(room);
        if takes > 0 {
            // The cheapest test first: with pieces handed out, `mine` is a lookup in a few;
            // without, a rendezvous over the members.
            let handed = edge.handed.is_some();
            let mut owned_by_me: Vec<u64> = (0..known.min(have.len()))
                .filter(|i| !have.get(*i) && !flying.get(*i) && (!handed || mine(*i)))
                .filter(|i| !held_by_a_peer(*i) && !coming(*i) && (handed || mine(*i)))
                .collect();
            owned_by_me.shuffle(&mut rand::thread_rng());
            for index in owned_by_me.into_iter().take(takes) {
                picks.push((index, Source::Edge));
            }
        }
        // In a swarm, the edge serves only the pieces this agent owns (or late ones).
        edge_room = 0;
    }
    // In a rack the scheduler gives places in (a large one), a piece only parents in other
    // racks hold is brought across by the rack-mate whose place it falls on (by anyone once it
    // is late), and a piece a rack-mate holds comes from one: the rack's uplink then carries
    // each piece once, not once per host. In a small rack anyone may bring it (one bringer
    // for a few hosts only slows them down).
    let held_in_rack = |index: u64| {
        parents
            .iter()
            .zip(&trusted)
            .any(|(p, t)| *t && p.shared >= 3 && p.pieces.get(index))
    };
    let may_bring = |index: u64| match edge.rack_place {
        None => true,
        Some(place) => !held_in_rack(index) && ((edge.owners)(index) > 1 || place.brings(index)),
    };
    for (_, index) in candidates {
        if picks.len() >= room {
            break;
        }
        if picks.iter().any(|(i, _)| *i == index) {
            continue;
        }
        let parent = (0..parents.len())
            .find(|i| parents[*i].pieces.get(index) && askable[*i] && load[*i] < config.per_parent);
        if let Some(i) = parent {
            let p = &parents[i];
            if p.shared < 3 && !may_bring(index) {
                continue;
            }
            load[i] += 1;
            picks.push((
                index,
                Source::Peer {
                    host_id: p.host_id.clone(),
                    url: p.upload_url.clone(),
                },
            ));
        } else if !held_by_a_peer(index) && edge_room > 0 {
            // A piece some usable peer holds waits for that peer: the edge is the last resort.
            edge_room -= 1;
            picks.push((index, Source::Edge));
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(id: &str, pieces: &[u64]) -> ParentCandidate {
        let mut bits = Bitfield::new(8);
        for p in pieces {
            bits.set(*p);
        }
        ParentCandidate {
            host_id: id.into(),
            upload_url: format!("http://{id}"),
            location: "r/z/k".parse().unwrap(),
            shared: 3,
            pieces: bits,
            fetching: None,
            free_slots: 4,
        }
    }

    const FIRST_OWNER: &dyn Fn(u64) -> usize = &|_| 1;

    fn turn(room: usize) -> EdgeTurn<'static> {
        EdgeTurn {
            room,
            me: "me",
            owners: FIRST_OWNER,
            handed: None,
            rack_place: None,
        }
    }

    fn config() -> DownloadConfig {
        DownloadConfig {
            concurrent_pieces: 4,
            per_parent: 2,
            window: 8,
            ..DownloadConfig::default()
        }
    }

    /// A download as `pick` sees it: pieces held, hashes known, parents to skip, limits;
    /// nothing in flight.
    struct Download {
        have: Bitfield,
        hashes: Vec<[u8; 32]>,
        skip: Skip,
        config: DownloadConfig,
    }

    impl Download {
        /// `len` pieces, `known` of them with hashes, none held, no parent skipped.
        fn new(len: u64, known: usize) -> Self {
            Download {
                have: Bitfield::new(len),
                hashes: vec![[0u8; 32]; known],
                skip: Skip::default(),
                config: config(),
            }
        }

        fn pick(&self, parents: &[ParentCandidate], turn: &EdgeTurn<'_>) -> Vec<(u64, Source)> {
            pick(
                &self.have,
                &self.hashes,
                &HashMap::new(),
                parents,
                &self.skip,
                &self.config,
                turn,
            )
        }
    }

    #[test]
    fn peers_first_edge_for_the_rest_within_limits() {
        let mut download = Download::new(8, 8);
        download.have.set(0);
        let picks = download.pick(&[parent("a", &[1, 2, 3])], &turn(1));
        // Two from the peer (its limit); the third piece it holds waits for it rather than
        // going to the edge. The edge serves at most one piece nobody else has, and only one
        // this agent owns among the members (here: "a" and "me").
        let members = ["a", "me"];
        for (index, source) in &picks {
            match source {
                Source::Peer { .. } => assert!([1, 2, 3].contains(index), "{picks:?}"),
                Source::Edge => {
                    assert!(![1, 2, 3].contains(index), "{picks:?}");
                    assert_eq!(owner(*index, &members), Some("me"), "{picks:?}");
                }
            }
        }
        let peers = picks
            .iter()
            .filter(|(_, s)| matches!(s, Source::Peer { .. }))
            .count();
        assert_eq!(peers, 2, "{picks:?}");
        let owned = (4..8).any(|i| owner(i, &members) == Some("me"));
        assert_eq!(picks.len(), if owned { 3 } else { 2 }, "{picks:?}");
    }

    #[test]
    fn only_pieces_with_known_hashes_and_never_bad_parents() {
        let mut download = Download::new(8, 2);
        download.skip.failed.insert("a".to_string(), Instant::now());
        let picks = download.pick(&[parent("a", &[0, 1])], &turn(2));
        assert_eq!(picks.len(), 2);
        assert!(picks.iter().all(|(i, s)| *i < 2 && *s == Source::Edge));
    }

    #[test]
    fn in_a_swarm_each_agent_takes_only_its_own_share_from_the_edge() {
        let mut download = Download::new(64, 64);
        download.config = DownloadConfig {
            concurrent_pieces: 8,
            per_parent: 2,
            window: 4,
            ..DownloadConfig::default()
        };
        // Peers holding nothing yet: a swarm, but no source.
        let parents = vec![parent("a", &[]), parent("b", &[]), parent("c", &[])];
        let members = ["a", "b", "c", "me"];
        let mut taken = std::collections::HashSet::new();
        for _ in 0..200 {
            let picks = download.pick(&parents, &turn(1));
            assert_eq!(picks.len(), 1, "one edge piece at a time: {picks:?}");
            assert_eq!(owner(picks[0].0, &members), Some("me"), "{picks:?}");
            taken.insert(picks[0].0);
        }
        // Drawn from the whole blob, not the stream window, and every member owns a share.
        assert!(taken.iter().any(|i| *i >= 4), "{taken:?}");
        for m in members {
            assert!((0..64).any(|i| owner(i, &members) == Some(m)), "{m} owns nothing");
        }
        // Long-unclaimed pieces pass to more owners: with all four allowed, every piece is ours.
        let all: &dyn Fn(u64) -> usize = &|_| 4;
        let late = EdgeTurn {
            room: 64,
            me: "me",
            owners: all,
            handed: None,
            rack_place: None,
        };
        download.config.concurrent_pieces = 64;
        assert_eq!(download.pick(&parents, &late).len(), 64);
        let none = download.pick(&parents, &turn(0));
        assert!(
            none.is_empty(),
            "no edge budget left, no peer holds anything: {none:?}"
        );
    }

    #[test]
    fn pieces_of_a_busy_parent_wait_for_it_instead_of_going_to_the_edge() {
        let parents = [parent("a", &[0, 1, 2, 3, 4, 5, 6, 7])];
        let mut download = Download::new(8, 8);
        download.skip.busy.insert("a".to_string(), Instant::now());
        let picks = download.pick(&parents, &turn(1));
        assert!(picks.is_empty(), "{picks:?}");
        // A parent that failed is not trusted to hold anything: the edge serves.
        let mut download = Download::new(8, 8);
        download.skip.failed.insert("a".to_string(), Instant::now());
        let picks = download.pick(&parents, &turn(2));
        assert_eq!(picks.len(), 2);
        assert!(picks.iter().all(|(_, s)| *s == Source::Edge));
    }

    /// The pieces of an empty download of 8 a pick takes from sources `from` accepts, sorted.
    fn picked(parents: &[ParentCandidate], turn: &EdgeTurn<'_>, from: fn(&Source) -> bool) -> Vec<u64> {
        let mut download = Download::new(8, 8);
        download.config.concurrent_pieces = 8;
        download.config.per_parent = 8;
        let mut picked: Vec<u64> = download
            .pick(parents, turn)
            .into_iter()
            .filter(|(_, s)| from(s))
            .map(|(i, _)| i)
            .collect();
        picked.sort_unstable();
        picked
    }

    #[test]
    fn in_a_swarm_the_edge_serves_the_pieces_the_scheduler_handed_out_and_late_ones() {
        let parents = [parent("a", &[])];
        let edge = |s: &Source| *s == Source::Edge;
        let handed = EdgeTurn {
            handed: Some(&[2, 5]),
            ..turn(8)
        };
        assert_eq!(
            picked(&parents, &handed, edge),
            [2, 5],
            "only what was handed out"
        );
        let none = EdgeTurn {
            handed: Some(&[]),
            ..turn(8)
        };
        assert!(picked(&parents, &none, edge).is_empty());
        // Late pieces go by rendezvous hashing again: with both members allowed, all are ours.
        let late = EdgeTurn {
            handed: Some(&[]),
            owners: &|_| 2,
            ..turn(8)
        };
        assert_eq!(picked(&parents, &late, edge), (0..8).collect::<Vec<u64>>());
    }

    #[test]
    fn a_piece_only_other_racks_hold_is_brought_in_by_the_place_it_falls_on() {
        let mut remote = parent("far", &[0, 1, 2, 3, 4, 5, 6, 7]);
        remote.shared = 1;
        // A rack-mate holding piece 0: that one never comes from the other rack.
        let parents = [parent("mate", &[0]), remote];
        let from_far = |s: &Source| matches!(s, Source::Peer { host_id, .. } if host_id == "far");
        let of = 3;
        let mut all = Vec::new();
        for index in 0..of {
            let place = RackPlace { index, of };
            let turn = EdgeTurn {
                rack_place: Some(place),
                ..turn(0)
            };
            let across = picked(&parents, &turn, from_far);
            assert!(across.iter().all(|i| place.brings(*i)), "{across:?}");
            all.extend(across);
        }
        all.sort_unstable();
        // Each piece but the rack-mate's crosses once, by exactly one place.
        assert_eq!(all, [1, 2, 3, 4, 5, 6, 7]);
        // Without a place (a small rack), anyone may bring any of them.
        assert_eq!(picked(&parents, &turn(0), from_far), [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_piece_another_member_takes_from_the_edge_is_left_to_it_until_late() {
        let mut download = Download::new(8, 8);
        download.config.concurrent_pieces = 8;
        // Another member holding nothing: this agent takes its own share of the pieces.
        let mine = (0..8).filter(|i| owner(*i, &["a", "me"]) == Some("me")).count();
        assert!(mine > 0);
        assert_eq!(download.pick(&[parent("a", &[])], &turn(8)).len(), mine);
        // The same member already taking every piece from the edge: nothing to take.
        let mut taking = parent("a", &[]);
        taking.fetching = Some(Bitfield::full(8));
        let picks = download.pick(std::slice::from_ref(&taking), &turn(8));
        assert!(picks.is_empty(), "{picks:?}");
        // Unless they are late (a second owner may take each one): then all are this agent's.
        let late = EdgeTurn {
            owners: &|_| 2,
            ..turn(8)
        };
        assert_eq!(download.pick(&[taking], &late).len(), 8);
    }
}
