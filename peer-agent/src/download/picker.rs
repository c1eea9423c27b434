//! Which pieces to fetch next, and from whom.
//!
//! Candidates are the missing pieces (with a known hash) inside a window ahead of the first
//! missing one, rarest first among the parents' bitfields (ties broken at random so agents
//! spread out). Each goes to the best-ranked parent that holds it and has room; a piece no
//! usable parent holds goes to the edge, which is the parent of last resort.

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

pub fn pick(
    have: &Bitfield,
    hashes: &[[u8; 32]],
    in_flight: &HashMap<u64, Source>,
    parents: &[ParentCandidate],
    bad: &HashMap<String, Instant>,
    config: &DownloadConfig,
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
    let mut edge_load = 0usize;
    for source in in_flight.values() {
        match source {
            Source::Peer { host_id, .. } => *load.entry(host_id.clone()).or_default() += 1,
            Source::Edge => edge_load += 1,
        }
    }
    // With peers in the task, each agent takes few pieces from the edge at a time: the swarm
    // spreads the edge's pieces among agents instead of every agent fetching each one.
    let edge_limit = if parents.is_empty() { config.per_parent } else { 1 };
    let mut picks = Vec::new();
    for (_, index) in candidates {
        if picks.len() >= room {
            break;
        }
        let parent = parents.iter().find(|p| {
            p.pieces.get(index)
                && !bad.contains_key(&p.host_id)
                && load.get(&p.host_id).copied().unwrap_or(0) < config.per_parent
        });
        let held_by_a_peer = parents
            .iter()
            .any(|p| p.pieces.get(index) && !bad.contains_key(&p.host_id));
        if let Some(p) = parent {
            *load.entry(p.host_id.clone()).or_default() += 1;
            picks.push((
                index,
                Source::Peer {
                    host_id: p.host_id.clone(),
                    url: p.upload_url.clone(),
                },
            ));
        } else if !held_by_a_peer && edge_load < edge_limit {
            // A piece some usable peer holds waits for that peer: the edge is the last resort.
            edge_load += 1;
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
        let picks = pick(&have, &hashes, &HashMap::new(), &parents, &bad, &config());
        assert_eq!(picks.len(), 1);
        assert!(picks.iter().all(|(i, s)| *i < 2 && *s == Source::Edge));
    }
}
