//! The scheduler, for agents holding a task's ticket:
//!
//! - `PUT /api/v1/tasks/<task>/peers/<host_id>` with a [`PeerAnnouncement`]: join or announce
//!   (also the heartbeat); `DELETE` the same path: leave.
//! - `GET /api/v1/tasks/<task>/parents?`[`ParentsQuery`] → [`ParentsAnswer`]: ranked parents.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::digest::Digest;
use crate::location::Location;

/// How often a downloading agent talks to the scheduler. Edges size their limits for it
/// (`scheduler.max_announcements_per_sec`), and `bench control` loads an edge with it.
pub mod cadence {
    use super::Duration;

    /// Parents asked for while the download can start a fetch. A piece is only passed on once
    /// its holder has announced it and the others have asked for parents again: this and
    /// [`ANNOUNCE_EVERY`] set how late the swarm learns of it.
    pub const PARENTS_EVERY: Duration = Duration::from_millis(100);
    /// New parents only matter to a download that can start a fetch; one with every slot busy
    /// asks less often (each answer costs the edge's link).
    pub const PARENTS_EVERY_WHEN_FULL: Duration = Duration::from_millis(500);
    /// A change of the pieces held is announced at most this often.
    pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);
    /// Announced even when nothing changed, so the scheduler keeps the record (also while
    /// seeding).
    pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
}

/// `/api/v1/tasks/<task>/peers/<host_id>`.
pub fn peer_path(task: &Digest, host_id: &str) -> String {
    // Host ids may be spiffe:// URIs: one path segment, percent-encoded.
    let host_id: String = url::form_urlencoded::byte_serialize(host_id.as_bytes()).collect();
    format!("/api/v1/tasks/{task}/peers/{host_id}")
}

/// `/api/v1/tasks/<task>/parents`.
pub fn parents_path(task: &Digest) -> String {
    format!("/api/v1/tasks/{task}/parents")
}

/// An agent's state in one task, sent on join and on every announcement (also a heartbeat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAnnouncement {
    /// Base URL of the agent's upload server (`http://10.0.0.7:5091`).
    pub upload_url: String,
    pub location: Location,
    pub pieces: Bitfield,
    /// Pieces it is taking from the edge right now (absent: none). Others wait for those
    /// instead of asking the edge for them too: a piece queued at a busy edge can take a while,
    /// and agents joining meanwhile would otherwise fetch it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetching: Option<Bitfield>,
    /// Uploads this agent is serving right now, and how many it allows at once.
    pub uploads_active: u32,
    pub upload_slots: u32,
    /// What this agent has downloaded since it started, by source (absent: not reported), for
    /// the edge's status page. Not stored with the peer's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloaded: Option<BytesBySource>,
}

/// Bytes by where they came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BytesBySource {
    pub peer: u64,
    pub edge: u64,
    pub origin: u64,
}

impl BytesBySource {
    /// The sum of both, source by source (saturating: the numbers come from the network).
    pub fn plus(self, other: BytesBySource) -> BytesBySource {
        BytesBySource {
            peer: self.peer.saturating_add(other.peer),
            edge: self.edge.saturating_add(other.edge),
            origin: self.origin.saturating_add(other.origin),
        }
    }
}

/// A peer as the scheduler stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub host_id: String,
    #[serde(flatten)]
    pub announcement: PeerAnnouncement,
    /// When the scheduler last heard from it (unix milliseconds).
    pub seen_at: u64,
}

/// Who asks for parents. The location travels as text (`region/zone/rack`) so that the edge
/// can answer a malformed one with its own error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentsQuery {
    pub host_id: String,
    pub location: String,
    /// Pieces the agent could take from the edge now (absent: it asks for none to be handed
    /// out, as agents before [`crate::handout`] did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_room: Option<u32>,
    /// Pieces listed in the agent's copy of the task's table: only those can be handed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<u64>,
}

impl ParentsQuery {
    pub fn new(host_id: &str, location: &Location) -> Self {
        ParentsQuery {
            host_id: host_id.to_string(),
            location: location.to_string(),
            edge_room: None,
            known: None,
        }
    }

    /// Asking as well for up to `edge_room` pieces below `known` to take from the edge.
    pub fn with_edge_room(mut self, edge_room: u32, known: u64) -> Self {
        self.edge_room = Some(edge_room);
        self.known = Some(known);
        self
    }
}

/// The parents proposed to an agent, best first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentsAnswer {
    pub parents: Vec<ParentCandidate>,
    /// Pieces handed to this agent to take from the edge ([`crate::handout`]); absent when the
    /// scheduler hands none out (the agents then share them by their own rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_pieces: Option<Vec<u64>>,
    /// The asker's place among its rack's peers of the task: a piece only other racks hold is
    /// brought into the rack by the one peer whose place it falls on, so each piece crosses
    /// into a rack once (absent: agents choose among the rack-mates they know of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_place: Option<RackPlace>,
}

/// A peer's place among the `of` peers of its rack in a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RackPlace {
    pub index: u32,
    pub of: u32,
}

impl RackPlace {
    /// Whether piece `index` falls on this place (the pieces spread evenly over the places).
    pub fn brings(&self, piece: u64) -> bool {
        let mut x = piece.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        self.of > 0 && x % u64::from(self.of) == u64::from(self.index)
    }
}

/// A proposed parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentCandidate {
    pub host_id: String,
    pub upload_url: String,
    pub location: Location,
    /// Shared location labels: 3 same rack, 2 same zone, 1 same region.
    pub shared: u8,
    pub pieces: Bitfield,
    /// Pieces it is taking from the edge right now (see [`PeerAnnouncement::fetching`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetching: Option<Bitfield>,
    pub free_slots: u32,
}

impl ParentCandidate {
    /// Whether it is taking piece `index` from the edge now.
    pub fn fetching(&self, index: u64) -> bool {
        self.fetching.as_ref().is_some_and(|f| f.get(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(fetching: Option<Bitfield>) -> PeerAnnouncement {
        let mut pieces = Bitfield::new(10);
        pieces.set(3);
        PeerAnnouncement {
            upload_url: "http://10.0.0.7:5091".into(),
            location: "eu/z1/r1".parse().unwrap(),
            pieces,
            fetching,
            uploads_active: 1,
            upload_slots: 4,
            downloaded: None,
        }
    }

    #[test]
    fn records_keep_the_announcement_at_the_top_level() {
        let record = PeerRecord {
            host_id: "h1".into(),
            announcement: announcement(None),
            seen_at: 42,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["upload_url"], "http://10.0.0.7:5091");
        assert_eq!(json["location"], "eu/z1/r1");
        assert!(json.get("fetching").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<PeerRecord>(json).unwrap(), record);
    }

    #[test]
    fn each_piece_falls_on_one_place_in_a_rack_and_all_places_get_some() {
        for of in [1u32, 2, 7, 100] {
            let places: Vec<RackPlace> = (0..of).map(|index| RackPlace { index, of }).collect();
            let mut per_place = vec![0; of as usize];
            for piece in 0..2000u64 {
                let bringers: Vec<u32> = places
                    .iter()
                    .filter(|p| p.brings(piece))
                    .map(|p| p.index)
                    .collect();
                assert_eq!(bringers.len(), 1, "piece {piece} of {of}");
                per_place[bringers[0] as usize] += 1;
            }
            assert!(per_place.iter().all(|n| *n > 0), "{per_place:?}");
        }
        assert!(!RackPlace { index: 0, of: 0 }.brings(3));
    }

    #[test]
    fn pieces_being_fetched_round_trip_and_may_be_absent() {
        let mut fetching = Bitfield::new(10);
        fetching.set(5);
        let sent = announcement(Some(fetching));
        let read: PeerAnnouncement = serde_json::from_str(&serde_json::to_string(&sent).unwrap()).unwrap();
        assert_eq!(read, sent);
        let answer = ParentsAnswer {
            parents: vec![ParentCandidate {
                host_id: "h1".into(),
                upload_url: sent.upload_url.clone(),
                location: sent.location.clone(),
                shared: 3,
                pieces: sent.pieces.clone(),
                fetching: sent.fetching.clone(),
                free_slots: 3,
            }],
            edge_pieces: None,
            rack_place: None,
        };
        let read: ParentsAnswer = serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
        assert_eq!(read, answer);
        assert!(read.parents[0].fetching(5) && !read.parents[0].fetching(3));
        // Pieces handed out travel; an answer without them (an edge before hand-outs) reads
        // as none, and a query's new fields are optional the same way.
        let handed = ParentsAnswer {
            edge_pieces: Some(vec![4, 9]),
            ..answer
        };
        let text = serde_json::to_string(&handed).unwrap();
        assert!(text.contains(r#""edge_pieces":[4,9]"#), "{text}");
        let old: ParentsAnswer = serde_json::from_str(r#"{"parents":[]}"#).unwrap();
        assert_eq!((old.edge_pieces, old.rack_place), (None, None));
        let query: ParentsQuery = serde_json::from_str(r#"{"host_id":"a","location":"r/z/k"}"#).unwrap();
        assert_eq!((query.edge_room, query.known), (None, None));
    }

    #[test]
    fn paths_and_queries() {
        let d = Digest::of(b"blob");
        assert_eq!(peer_path(&d, "h1"), format!("/api/v1/tasks/{d}/peers/h1"));
        assert_eq!(parents_path(&d), format!("/api/v1/tasks/{d}/parents"));
        let query = ParentsQuery::new("h1", &"eu/z1/r1".parse().unwrap());
        assert_eq!(
            serde_json::to_value(&query).unwrap(),
            serde_json::json!({"host_id": "h1", "location": "eu/z1/r1"})
        );
    }
}
