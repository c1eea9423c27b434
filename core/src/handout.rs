//! Pieces handed out by the scheduler for agents to take from the edge.
//!
//! In a swarm each piece should leave the edge once and pass between peers from there. Agents used to agree among themselves who takes which piece (rendezvous
//! hashing over the peers each one knows of), which works while every agent knows every other:
//! with thousands of peers each knows only its `max_parents`, and dozens take the same piece.
//! The scheduler sees every announcement, so it hands each piece nobody holds or takes to one
//! agent asking for work, which then announces it is taking it. A piece handed out and not taken
//! within [`HANDED_FOR_MS`] goes to the next agent that asks.

use crate::api::PeerAnnouncement;

/// How long a piece handed to one agent is not handed to another. An agent announces a piece
/// it takes from the edge within milliseconds; one that did not take it (its slots filled
/// meanwhile) must not hold it back long, as the edge's link would wait.
pub const HANDED_FOR_MS: u64 = 300;

/// Pieces handed out per answer at most, whatever an agent asks for (agents ask for two).
pub const MAX_HANDED_PER_ANSWER: usize = 8;

/// Pieces of a task tracked at most (a 1 TiB blob in 16 MiB pieces): announcements name their
/// own bitfield's length, and memory here must not follow what a peer claims. Pieces beyond are
/// never handed out; agents take them by their rule for late pieces.
pub const MAX_TRACKED_PIECES: u64 = 1 << 16;

/// One task's pieces as the scheduler hands them out.
#[derive(Debug, Default)]
pub struct HandOut {
    /// Pieces some peer announced holding or taking (never unset: a piece whose only holder
    /// left is taken again by the agents' own rule for late pieces).
    claimed: Vec<bool>,
    /// Per piece, until when it is handed to an agent (unix milliseconds; 0: not handed).
    handed_until: Vec<u64>,
}

impl HandOut {
    /// Notes what a peer holds and takes.
    pub fn note(&mut self, announcement: &PeerAnnouncement) {
        let pieces = announcement.pieces.len().min(MAX_TRACKED_PIECES) as usize;
        if self.claimed.len() < pieces {
            self.claimed.resize(pieces, false);
            self.handed_until.resize(pieces, 0);
        }
        let fetching = announcement.fetching.as_ref();
        for (i, claimed) in self.claimed.iter_mut().enumerate().take(pieces) {
            let i = i as u64;
            *claimed |= announcement.pieces.get(i) || fetching.is_some_and(|f| f.get(i));
        }
    }

    /// Up to `room` pieces below `known` (those in the asker's table) that nobody holds, takes
    /// or was handed lately, first in stream order; they count as handed from now on.
    pub fn hand_out(&mut self, known: u64, room: usize, now_ms: u64) -> Vec<u64> {
        let room = room.min(MAX_HANDED_PER_ANSWER);
        let mut handed = Vec::new();
        let known = (known as usize).min(self.claimed.len());
        for i in 0..known {
            if handed.len() >= room {
                break;
            }
            if !self.claimed[i] && self.handed_until[i] <= now_ms {
                self.handed_until[i] = now_ms.saturating_add(HANDED_FOR_MS);
                handed.push(i as u64);
            }
        }
        handed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitfield::Bitfield;
    use crate::location::Location;

    fn announcement(pieces: &[u64], fetching: &[u64]) -> PeerAnnouncement {
        let bits = |set: &[u64]| {
            let mut b = Bitfield::new(8);
            set.iter().for_each(|i| b.set(*i));
            b
        };
        PeerAnnouncement {
            upload_url: "http://a".into(),
            location: Location::default(),
            pieces: bits(pieces),
            fetching: Some(bits(fetching)),
            uploads_active: 0,
            upload_slots: 4,
            downloaded: None,
        }
    }

    #[test]
    fn each_piece_nobody_holds_goes_to_one_asker_at_a_time() {
        let mut out = HandOut::default();
        out.note(&announcement(&[0, 1], &[2]));
        // Pieces held (0, 1) or taken (2) are never handed; only what the asker's table lists.
        assert_eq!(out.hand_out(5, 2, 1_000), vec![3, 4]);
        // The next asker gets the next pieces, not the same ones.
        assert_eq!(out.hand_out(8, 2, 1_001), vec![5, 6]);
        assert_eq!(out.hand_out(8, 4, 1_002), vec![7]);
        // Handed and not taken: free again after HANDED_FOR_MS.
        assert_eq!(out.hand_out(8, 4, 1_000 + HANDED_FOR_MS), vec![3, 4]);
        // Taken meanwhile (announced): never handed again.
        out.note(&announcement(&[5], &[6, 7]));
        assert!(out.hand_out(8, 8, 10_000).iter().all(|i| ![5, 6, 7].contains(i)));
        assert!(out.hand_out(8, 0, 20_000).is_empty());
    }

    #[test]
    fn what_a_peer_claims_bounds_neither_memory_nor_a_hand_out() {
        let mut out = HandOut::default();
        let mut huge = announcement(&[], &[]);
        huge.pieces = Bitfield::new(1 << 24);
        huge.fetching = None;
        out.note(&huge);
        assert_eq!(out.claimed.len() as u64, MAX_TRACKED_PIECES);
        let handed = out.hand_out(u64::MAX, usize::MAX, 0);
        assert_eq!(handed, (0..MAX_HANDED_PER_ANSWER as u64).collect::<Vec<_>>());
    }
}
