//! Which peers the scheduler proposes to an agent as parents, best first.

use crate::api::{ParentCandidate, PeerRecord};
use crate::location::Location;

/// Orders peers for a requester: peers holding pieces first, by longest shared location prefix,
/// then free upload slots, then finished pieces; then peers holding nothing yet (they offer no
/// bytes, but tell the requester it is in a swarm and should leave the edge's pieces to be
/// shared). The requester itself is left out.
pub fn rank_parents<'a>(
    me: &str,
    location: &Location,
    peers: impl IntoIterator<Item = &'a PeerRecord>,
    max: usize,
) -> Vec<ParentCandidate> {
    // Each peer's rank computed once (a popcount and a location compare), then only the best
    // `max` ordered and copied out: the scheduler answers every agent several times a second
    // from thousands of records, and a full sort of clones was most of an edge's work.
    let mut ranked: Vec<(Rank, &PeerRecord)> = peers
        .into_iter()
        .filter(|p| p.host_id != me)
        .map(|p| (Rank::of(location, p), p))
        .collect();
    let best_first = |a: &(Rank, &PeerRecord), b: &(Rank, &PeerRecord)| b.0.cmp(&a.0);
    if ranked.len() > max && max > 0 {
        ranked.select_nth_unstable_by(max - 1, best_first);
    }
    ranked.truncate(max);
    // Host ids are unique within a task, so the order is total: unstable sorting is exact.
    ranked.sort_unstable_by(best_first);
    ranked.into_iter().map(|(rank, p)| candidate(&rank, p)).collect()
}

fn candidate(rank: &Rank<'_>, p: &PeerRecord) -> ParentCandidate {
    ParentCandidate {
        host_id: p.host_id.clone(),
        upload_url: p.announcement.upload_url.clone(),
        location: p.announcement.location.clone(),
        shared: rank.shared,
        pieces: p.announcement.pieces.clone(),
        fetching: p.announcement.fetching.clone(),
        free_slots: rank.free_slots,
    }
}

/// Where [`add_drawn`] takes parents from, relative to the requester's rack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drawn {
    /// Rack-mates: ranked alone, every answer of a large rack names the same few (most free
    /// slots, most pieces) and the others' uploads stay idle.
    Rack,
    /// Other racks ("bridges"): ranked, a large task's answer holds only rack-mates, and a rack
    /// would never see the pieces that entered the region through another.
    OtherRacks,
}

/// Adds peers holding pieces from `scope`, drawn at random (`draw` yields a random peer of
/// the task, `None` when it has none), to `parents` (the ranked answer) until it has `max`,
/// making at most `tries` draws. Never the requester or a parent twice.
pub fn add_drawn<'a>(
    me: &str,
    location: &Location,
    parents: &mut Vec<ParentCandidate>,
    max: usize,
    scope: Drawn,
    tries: usize,
    mut draw: impl FnMut() -> Option<&'a PeerRecord>,
) {
    for _ in 0..tries {
        if parents.len() >= max {
            return;
        }
        let Some(p) = draw() else { return };
        let rank = Rank::of(location, p);
        let in_scope = match scope {
            Drawn::Rack => rank.shared == 3,
            Drawn::OtherRacks => rank.shared < 3,
        };
        let useful = rank.holds_pieces && in_scope && p.host_id != me;
        if useful && !parents.iter().any(|c| c.host_id == p.host_id) {
            parents.push(candidate(&rank, p));
        }
    }
}

/// The same answer as [`rank_parents`] over `everyone`, from the requester's rack alone when
/// that suffices: nobody outside the rack ranks above a rack-mate holding pieces, so when at
/// least `max` rack-mates hold some, the best `max` of them are the answer. A scheduler of
/// thousands of hosts then ranks a rack's records per answer, not the whole task's; `everyone`
/// is only walked while a rack holds little (the first moments of a download).
pub fn rank_parents_rack_first<'a, R, E>(
    me: &str,
    location: &Location,
    rack: R,
    everyone: impl FnOnce() -> E,
    max: usize,
) -> Vec<ParentCandidate>
where
    R: IntoIterator<Item = &'a PeerRecord>,
    E: IntoIterator<Item = &'a PeerRecord>,
{
    let from_rack = rank_parents(me, location, rack, max);
    let rack_suffices =
        from_rack.len() == max && from_rack.iter().all(|c| c.shared == 3 && c.pieces.count() > 0);
    if rack_suffices {
        from_rack
    } else {
        rank_parents(me, location, everyone(), max)
    }
}

/// Greater is better: holding pieces, then sharing more of the location, then free upload
/// slots, then pieces held; ties go to the smaller host id.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'a> {
    holds_pieces: bool,
    shared: u8,
    free_slots: u32,
    pieces: u64,
    host_id: std::cmp::Reverse<&'a str>,
}

impl<'a> Rank<'a> {
    fn of(location: &Location, p: &'a PeerRecord) -> Rank<'a> {
        let pieces = p.announcement.pieces.count();
        Rank {
            holds_pieces: pieces > 0,
            shared: location.shared_prefix(&p.announcement.location),
            free_slots: p
                .announcement
                .upload_slots
                .saturating_sub(p.announcement.uploads_active),
            pieces,
            host_id: std::cmp::Reverse(p.host_id.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PeerAnnouncement;
    use crate::bitfield::Bitfield;

    fn peer(id: &str, loc: &str, pieces: u64, active: u32) -> PeerRecord {
        let mut bits = Bitfield::new(10);
        for i in 0..pieces {
            bits.set(i);
        }
        PeerRecord {
            host_id: id.into(),
            announcement: PeerAnnouncement {
                upload_url: format!("http://{id}"),
                location: loc.parse().unwrap(),
                pieces: bits,
                fetching: None,
                uploads_active: active,
                upload_slots: 4,
                downloaded: None,
            },
            seen_at: 0,
        }
    }

    fn host_ids(parents: Vec<ParentCandidate>) -> Vec<String> {
        parents.into_iter().map(|c| c.host_id).collect()
    }

    /// A deterministic xorshift stream from `state`: each call answers a number below `n`.
    fn xorshift(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        }
    }

    #[test]
    fn prefers_rack_then_slots_then_progress() {
        let me: Location = "eu/z1/r1".parse().unwrap();
        let peers = vec![
            peer("other-zone", "eu/z2/r1", 10, 0),
            peer("rack-busy", "eu/z1/r1", 10, 4),
            peer("rack-free", "eu/z1/r1", 2, 0),
            peer("zone", "eu/z1/r2", 10, 0),
            peer("empty", "eu/z1/r1", 0, 0),
            peer("me", "eu/z1/r1", 10, 0),
        ];
        let ranked = host_ids(rank_parents("me", &me, &peers, 10));
        assert_eq!(
            ranked,
            vec!["rack-free", "rack-busy", "zone", "other-zone", "empty"]
        );
        assert_eq!(rank_parents("me", &me, &peers, 2).len(), 2);
    }

    /// The ordering as first written: every peer cloned, the whole list sorted by the rules.
    fn reference(me: &str, location: &Location, peers: &[PeerRecord], max: usize) -> Vec<String> {
        let mut all: Vec<&PeerRecord> = peers.iter().filter(|p| p.host_id != me).collect();
        let free = |p: &PeerRecord| {
            p.announcement
                .upload_slots
                .saturating_sub(p.announcement.uploads_active)
        };
        all.sort_by(|a, b| {
            let (ca, cb) = (a.announcement.pieces.count(), b.announcement.pieces.count());
            (cb > 0)
                .cmp(&(ca > 0))
                .then(
                    location
                        .shared_prefix(&b.announcement.location)
                        .cmp(&location.shared_prefix(&a.announcement.location)),
                )
                .then(free(b).cmp(&free(a)))
                .then(cb.cmp(&ca))
                .then(a.host_id.cmp(&b.host_id))
        });
        all.into_iter().take(max).map(|p| p.host_id.clone()).collect()
    }

    #[test]
    fn the_best_few_are_those_a_full_sort_puts_first() {
        let me: Location = "eu/z1/r1".parse().unwrap();
        // A deterministic spread of locations, progress and busy slots, with many ties.
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let peers: Vec<PeerRecord> = (0..500)
            .map(|i| {
                let loc = format!("eu/z{}/r{}", next(3), next(4));
                peer(&format!("h{i:03}"), &loc, next(11), next(5) as u32)
            })
            .collect();
        for max in [0, 1, 2, 7, 32, 499, 500, 600] {
            let fast = host_ids(rank_parents("h007", &me, &peers, max));
            assert_eq!(fast, reference("h007", &me, &peers, max), "max {max}");
        }
    }

    #[test]
    fn drawn_parents_are_holders_of_their_scope_added_up_to_the_maximum() {
        let me: Location = "eu/z1/r1".parse().unwrap();
        let peers = [
            peer("rack", "eu/z1/r1", 5, 0),
            peer("empty", "eu/z1/r2", 0, 0),
            peer("zone", "eu/z1/r2", 5, 0),
            peer("me", "eu/z2/r1", 5, 0),
            peer("far", "eu/z2/r1", 5, 0),
            peer("rack2", "eu/z1/r1", 5, 0),
        ];
        let mut parents = rank_parents("me", &me, &peers[..1], 1);
        let mut next = 0;
        let mut draw = || {
            next += 1;
            peers.get(next % peers.len())
        };
        add_drawn("me", &me, &mut parents, 3, Drawn::OtherRacks, 20, &mut draw);
        let ids: Vec<&str> = parents.iter().map(|c| c.host_id.as_str()).collect();
        // Never a rack-mate, an empty peer, itself or one twice; at most `max` in all.
        assert_eq!(ids, ["rack", "zone", "far"]);
        add_drawn("me", &me, &mut parents, 8, Drawn::OtherRacks, 20, || {
            peers.first()
        });
        assert_eq!(parents.len(), 3, "a rack-mate is no bridge");
        add_drawn("me", &me, &mut parents, 8, Drawn::Rack, 20, &mut draw);
        let ids: Vec<&str> = parents.iter().map(|c| c.host_id.as_str()).collect();
        assert_eq!(ids, ["rack", "zone", "far", "rack2"], "rack-mates not named yet");
    }

    #[test]
    fn ranking_the_rack_first_gives_the_answer_of_ranking_everyone() {
        let me: Location = "eu/z1/r1".parse().unwrap();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            // Racks holding more and more: from "the rack has too few" to "the rack suffices".
            let holding = round % 8;
            let peers: Vec<PeerRecord> = (0..300)
                .map(|i| {
                    let loc = format!("eu/z{}/r{}", next(2), next(3));
                    let pieces = if next(8) < holding { next(11) } else { 0 };
                    peer(&format!("h{i:03}"), &loc, pieces, next(5) as u32)
                })
                .collect();
            for max in [1, 4, 16, 32] {
                let rack = peers.iter().filter(|p| p.announcement.location == me);
                let fast = host_ids(rank_parents_rack_first("h007", &me, rack, || peers.iter(), max));
                assert_eq!(
                    fast,
                    reference("h007", &me, &peers, max),
                    "round {round} max {max}"
                );
            }
        }
    }
}
