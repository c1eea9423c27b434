//! Which peers the scheduler proposes to an agent as parents, best first.

use crate::api::{ParentCandidate, PeerRecord};
use crate::location::Location;

/// Orders peers for a requester: peers holding pieces first, by longest shared location prefix,
/// then free upload slots, then finished pieces; then peers holding nothing yet (they offer no
/// bytes, but tell the requester it is in a swarm and should leave the edge's pieces to be
/// shared). The requester itself is left out.
pub fn rank_parents(me: &str, location: &Location, peers: &[PeerRecord], max: usize) -> Vec<ParentCandidate> {
    let mut candidates: Vec<ParentCandidate> = peers
        .iter()
        .filter(|p| p.host_id != me)
        .map(|p| ParentCandidate {
            host_id: p.host_id.clone(),
            upload_url: p.announcement.upload_url.clone(),
            location: p.announcement.location.clone(),
            shared: location.shared_prefix(&p.announcement.location),
            pieces: p.announcement.pieces.clone(),
            fetching: p.announcement.fetching.clone(),
            free_slots: p
                .announcement
                .upload_slots
                .saturating_sub(p.announcement.uploads_active),
        })
        .collect();
    candidates.sort_by(|a, b| {
        (b.pieces.count() > 0)
            .cmp(&(a.pieces.count() > 0))
            .then(b.shared.cmp(&a.shared))
            .then(b.free_slots.cmp(&a.free_slots))
            .then(b.pieces.count().cmp(&a.pieces.count()))
            .then(a.host_id.cmp(&b.host_id))
    });
    candidates.truncate(max);
    candidates
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
        let ranked: Vec<String> = rank_parents("me", &me, &peers, 10)
            .into_iter()
            .map(|c| c.host_id)
            .collect();
        assert_eq!(
            ranked,
            vec!["rack-free", "rack-busy", "zone", "other-zone", "empty"]
        );
        assert_eq!(rank_parents("me", &me, &peers, 2).len(), 2);
    }
}
