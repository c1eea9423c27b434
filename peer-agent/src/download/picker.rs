//! Which pieces to fetch next, and from whom.
//!
//! Candidates are the missing pieces (with a known hash) inside a window ahead of the first
//! missing one, rarest first among the parents' bitfields (ties broken at random so agents
//! spread out). Each goes to the best-ranked parent that holds it and has room.
//!
//! The edge is the parent of last resort, for pieces no usable peer holds. Alone, an agent
//! takes those in stream order. In a swarm, its edge budget is shared by all its downloads
//! (`edge_room`) and it draws them at random from the whole blob: agents learn of each other's
//! pieces only a few hundred milliseconds late, and drawing from the same small window would
//! have many of them fetch the same piece from the edge. Each byte should leave the edge about
//! once and then travel between peers.

use std::collections::HashMap;
use std::time::Instant;

use damselfly_core::{Bitfield, ParentCandidate};
use rand::seq::SliceRandom;

use crate::config::DownloadConfig;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Peer { host_id: String, url: String },
    Edge,
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Peer { .. } => "peer",
            Source::Edge => "edge",
        }
    }
}

/// Whether usable peers share the task (even ones holding nothing yet): then the edge's
/// pieces are to be shared, not fetched by everyone.
pub fn in_swarm(parents: &[ParentCandidate], bad: &HashMap<String, Instant>) -> bool {
    parents.iter().any(|p| !bad.contains_key(&p.host_id))
}

/// `edge_room`: how many more pieces this download may take from the edge now.
pub fn pick(
    have: &Bitfield,
    hashes: &[[u8; 32]],
    in_flight: &HashMap<u64, Source>,
    parents: &[ParentCandidate],
    bad: &HashMap<String, Instant>,
    config: &DownloadConfig,
    edge_room: usize,
) -> Vec<(u64, Source)> {
    let room = config.concurrent_pieces.saturating_sub(in_flight.len());
    if room == 0 {
        return Vec::new();
    }
    let known = hashes.len() as u64;
    let Some(first_missing) = (0..have.len()).find(|i| !have.get(*i)) else {
        return Vec::new();
    };
    let end = (first_missing + config.window).min(known).min(have.len());
    let mut candidates: Vec<(usize, u64)> = (first_missing..end)
        .filter(|i| !have.get(*i) && !in_flight.contains_key(i))
        .map(|i| (parents.iter().filter(|p| p.pieces.get(i)).count(), i))
        .collect();
    candidates.shuffle(&mut rand::thread_rng());
    candidates.sort_by_key(|(rarity, _)| *rarity);

    let mut load: HashMap<String, usize> = HashMap::new();
    for source in in_flight.values() {
        if let Source::Peer { host_id, .. } = source {
            *load.entry(host_id.clone()).or_default() += 1;
        }
    }
    let held_by_a_peer = |index: u64| {
        parents
            .iter()
            .any(|p| p.pieces.get(index) && !bad.contains_key(&p.host_id))
    };
    let mut edge_room = edge_room;
    let mut picks = Vec::new();
    if in_swarm(parents, bad) {
        edge_room = pick_edge_pieces_at_random(
            have,
            known,
            in_flight,
            &held_by_a_peer,
            edge_room.min(room),
            &mut picks,
        );
    }
    for (_, index) in candidates {
        if picks.len() >= room {
            break;
        }
        if picks.iter().any(|(i, _)| *i == index) {
            continue;
        }
        let parent = parents.iter().find(|p| {
            p.pieces.get(index)
                && !bad.contains_key(&p.host_id)
                && load.get(&p.host_id).copied().unwrap_or(0) < config.per_parent
        });
        if let Some(p) = parent {
            *load.entry(p.host_id.clone()).or_default() += 1;
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

/// Up to `budget` pieces for the edge, drawn at random from every missing piece of the blob
/// that no usable peer holds; returns the budget left.
fn pick_edge_pieces_at_random(
    have: &Bitfield,
    known: u64,
    in_flight: &HashMap<u64, Source>,
    held_by_a_peer: &dyn Fn(u64) -> bool,
    mut budget: usize,
    picks: &mut Vec<(u64, Source)>,
) -> usize {
    if budget == 0 {
        return 0;
    }
    let mut nobody_has: Vec<u64> = (0..known.min(have.len()))
        .filter(|i| !have.get(*i) && !in_flight.contains_key(i) && !held_by_a_peer(*i))
        .collect();
    nobody_has.shuffle(&mut rand::thread_rng());
    for index in nobody_has.into_iter().take(budget) {
        picks.push((index, Source::Edge));
        budget -= 1;
    }
    budget
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
            free_slots: 4,
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

    #[test]
    fn peers_first_edge_for_the_rest_within_limits() {
        let mut have = Bitfield::new(8);
        have.set(0);
        let hashes = vec![[0u8; 32]; 8];
        let parents = vec![parent("a", &[1, 2, 3])];
        let picks = pick(
            &have,
            &hashes,
            &HashMap::new(),
            &parents,
            &HashMap::new(),
            &config(),
            1,
        );
        assert_eq!(picks.len(), 3);
        // Two from the peer (its limit); the third piece it holds waits for it rather than
        // going to the edge, which gets one piece nobody else has (one at a time while peers
        // are in the task).
        for (index, source) in &picks {
            match source {
                Source::Peer { .. } => assert!([1, 2, 3].contains(index), "{picks:?}"),
                Source::Edge => assert!(![1, 2, 3].contains(index), "{picks:?}"),
            }
        }
        let peers = picks
            .iter()
            .filter(|(_, s)| matches!(s, Source::Peer { .. }))
            .count();
        assert_eq!(peers, 2, "{picks:?}");
    }

    #[test]
    fn only_pieces_with_known_hashes_and_never_bad_parents() {
        let have = Bitfield::new(8);
        let hashes = vec![[0u8; 32]; 2];
        let parents = vec![parent("a", &[0, 1])];
        let mut bad = HashMap::new();
        bad.insert("a".to_string(), Instant::now());
        let picks = pick(&have, &hashes, &HashMap::new(), &parents, &bad, &config(), 2);
        assert_eq!(picks.len(), 2);
        assert!(picks.iter().all(|(i, s)| *i < 2 && *s == Source::Edge));
    }

    #[test]
    fn in_a_swarm_edge_pieces_come_from_the_whole_blob_within_the_budget() {
        let have = Bitfield::new(64);
        let hashes = vec![[0u8; 32]; 64];
        // A peer holding nothing yet: a swarm, but no source.
        let parents = vec![parent("a", &[])];
        let config = DownloadConfig {
            concurrent_pieces: 8,
            per_parent: 2,
            window: 4,
            ..DownloadConfig::default()
        };
        let mut beyond_window = false;
        for _ in 0..50 {
            let picks = pick(
                &have,
                &hashes,
                &HashMap::new(),
                &parents,
                &HashMap::new(),
                &config,
                1,
            );
            assert_eq!(picks.len(), 1, "one edge piece at a time: {picks:?}");
            beyond_window |= picks[0].0 >= 4;
        }
        assert!(
            beyond_window,
            "edge pieces were only drawn from the stream window"
        );
        let none = pick(
            &have,
            &hashes,
            &HashMap::new(),
            &parents,
            &HashMap::new(),
            &config,
            0,
        );
        assert!(
            none.is_empty(),
            "no edge budget left, no peer holds anything: {none:?}"
        );
    }
}
