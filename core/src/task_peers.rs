//! One task's peers as a scheduler keeps them, and its answer to a parents query. The edge's
//! in-process scheduler keeps one per task, and `bench sim` runs the same code for thousands
//! of simulated hosts.
//!
//! The answer, up to `max` parents:
//! - half ranked by [`rank_parents`] (holding pieces, same rack, free slots, progress), from
//!   the requester's rack alone when that gives the same answer;
//! - up to three quarters with rack-mates drawn at random ([`Drawn::Rack`]): ranking alone names
//!   the same few to every rack-mate and leaves the others' uploads idle;
//! - the rest drawn at random from other racks ([`Drawn::OtherRacks`]), the "bridges" through
//!   which pieces enter a rack;
//! - with `edge_room` asked for, the pieces handed to the requester to take from the edge
//!   ([`HandOut`]);
//! - in a rack of at least [`RACK_PLACES_FROM`] peers, the requester's place among them
//!   ([`RackPlace`]), which decides the pieces it brings into the rack from others.

use std::collections::HashMap;

use crate::api::{ParentsAnswer, PeerRecord, RackPlace};
use crate::handout::HandOut;
use crate::location::Location;
use crate::parents::{add_drawn, rank_parents_rack_first, Drawn};

/// Racks with fewer peers of a task get no places: one bringer per piece for a few hosts only
/// slows them down, and the copies into the rack are few anyway.
pub const RACK_PLACES_FROM: usize = 8;

#[derive(Default)]
pub struct TaskPeers {
    records: Vec<PeerRecord>,
    /// Host id → place in `records`.
    places: HashMap<String, usize>,
    /// Location → places in `records` of the peers there.
    racks: HashMap<Location, Vec<usize>>,
    handout: HandOut,
}

/// What a parents query asks.
#[derive(Clone, Copy)]
pub struct Asking<'a> {
    pub host_id: &'a str,
    pub location: &'a Location,
    /// Pieces it could take from the edge now and the pieces its table lists (`ParentsQuery`).
    pub edge_room: Option<u32>,
    pub known: Option<u64>,
}

impl TaskPeers {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn contains(&self, host_id: &str) -> bool {
        self.places.contains_key(host_id)
    }

    pub fn records(&self) -> impl Iterator<Item = &PeerRecord> {
        self.records.iter()
    }

    /// A task's peers read from shared state for one answer that hands nothing out (no claims
    /// are noted: that would walk every record's pieces for nothing).
    pub fn from_records(records: impl IntoIterator<Item = PeerRecord>) -> TaskPeers {
        let mut peers = TaskPeers::default();
        for record in records {
            if peers.contains(&record.host_id) {
                peers.leave(&record.host_id.clone());
            }
            peers.insert(record);
        }
        peers
    }

    /// Records (or refreshes) a peer.
    pub fn announce(&mut self, record: PeerRecord) {
        self.handout.note(&record.announcement);
        match self.places.get(&record.host_id) {
            Some(&i) if self.records[i].announcement.location == record.announcement.location => {
                self.records[i] = record;
            }
            Some(_) => {
                // Moved racks (a restarted agent with another location): placed anew.
                self.leave(&record.host_id.clone());
                self.insert(record);
            }
            None => self.insert(record),
        }
    }

    fn insert(&mut self, record: PeerRecord) {
        let i = self.records.len();
        self.places.insert(record.host_id.clone(), i);
        self.racks
            .entry(record.announcement.location.clone())
            .or_default()
            .push(i);
        self.records.push(record);
    }

    pub fn leave(&mut self, host_id: &str) {
        let Some(i) = self.places.remove(host_id) else {
            return;
        };
        let location = self.records[i].announcement.location.clone();
        self.unplace(&location, i);
        let last = self.records.len() - 1;
        if i != last {
            // The last record moves into the gap.
            let moved = self.records[last].announcement.location.clone();
            if let Some(places) = self.racks.get_mut(&moved) {
                if let Some(p) = places.iter_mut().find(|p| **p == last) {
                    *p = i;
                }
            }
            self.places.insert(self.records[last].host_id.clone(), i);
        }
        self.records.swap_remove(i);
    }

    fn unplace(&mut self, location: &Location, i: usize) {
        if let Some(places) = self.racks.get_mut(location) {
            places.retain(|p| *p != i);
            if places.is_empty() {
                self.racks.remove(location);
            }
        }
    }

    /// Drops the records `keep` refuses (peers silent for too long).
    pub fn retain(&mut self, keep: impl Fn(&PeerRecord) -> bool) {
        let gone: Vec<String> = self
            .records
            .iter()
            .filter(|r| !keep(r))
            .map(|r| r.host_id.clone())
            .collect();
        for host_id in gone {
            self.leave(&host_id);
        }
    }

    /// The answer to `asking` (see the module's description); `random(n)` is a random number
    /// below `n` (never called with 0), `now_ms` the time in unix milliseconds.
    pub fn answer(
        &mut self,
        asking: &Asking<'_>,
        max: usize,
        now_ms: u64,
        random: &mut dyn FnMut(usize) -> usize,
    ) -> ParentsAnswer {
        let (me, location) = (asking.host_id, asking.location);
        let records = &self.records;
        let rack: &[usize] = self.racks.get(location).map_or(&[], |r| r);
        let mut parents = rank_parents_rack_first(
            me,
            location,
            rack.iter().map(|i| &records[*i]),
            || records.iter(),
            max / 2,
        );
        let from_rack = || (!rack.is_empty()).then(|| &records[rack[random(rack.len())]]);
        add_drawn(
            me,
            location,
            &mut parents,
            max * 3 / 4,
            Drawn::Rack,
            max,
            from_rack,
        );
        let anywhere = || (!records.is_empty()).then(|| &records[random(records.len())]);
        add_drawn(me, location, &mut parents, max, Drawn::OtherRacks, max, anywhere);
        let edge_pieces = asking.edge_room.map(|room| {
            let known = asking.known.unwrap_or(0);
            self.handout.hand_out(known, room as usize, now_ms)
        });
        let mine = self.places.get(me);
        let rack_place = rack
            .iter()
            .position(|i| Some(i) == mine)
            .filter(|_| rack.len() >= RACK_PLACES_FROM)
            .map(|index| RackPlace {
                index: index as u32,
                of: rack.len() as u32,
            });
        ParentsAnswer {
            parents,
            edge_pieces,
            rack_place,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PeerAnnouncement;
    use crate::bitfield::Bitfield;

    fn record(id: &str, rack: &str, pieces: &[u64]) -> PeerRecord {
        let mut bits = Bitfield::new(16);
        pieces.iter().for_each(|i| bits.set(*i));
        PeerRecord {
            host_id: id.into(),
            announcement: PeerAnnouncement {
                upload_url: format!("http://{id}"),
                location: format!("eu/z1/{rack}").parse().unwrap(),
                pieces: bits,
                fetching: None,
                uploads_active: 0,
                upload_slots: 4,
                downloaded: None,
            },
            seen_at: 0,
        }
    }

    fn ids(answer: &ParentsAnswer) -> Vec<&str> {
        answer.parents.iter().map(|p| p.host_id.as_str()).collect()
    }

    #[test]
    fn records_move_leave_and_expire_with_their_racks_kept_right() {
        let mut task = TaskPeers::default();
        for (id, rack) in [("a", "r1"), ("b", "r1"), ("c", "r2"), ("d", "r2")] {
            task.announce(record(id, rack, &[0]));
        }
        task.leave("a");
        // "b" moves to r2; "d" leaves by expiry.
        task.announce(record("b", "r2", &[0, 1]));
        task.retain(|r| r.host_id != "d");
        assert_eq!(task.len(), 2);
        let mut counter = 0;
        let mut random = |n: usize| {
            counter += 1;
            counter % n
        };
        let me: Location = "eu/z1/r1".parse().unwrap();
        let asking = Asking {
            host_id: "me",
            location: &me,
            edge_room: None,
            known: None,
        };
        let answer = task.answer(&asking, 8, 0, &mut random);
        let mut names = ids(&answer);
        names.sort_unstable();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(answer.edge_pieces, None, "none asked for");
        assert_eq!(answer.rack_place, None, "the asker has not announced itself");
        // Read from shared state, the same peers answer the same (no pieces handed out).
        let mut read = TaskPeers::from_records(task.records().cloned());
        let mut again: Vec<String> = read
            .answer(&asking, 8, 0, &mut random)
            .parents
            .into_iter()
            .map(|p| p.host_id)
            .collect();
        again.sort_unstable();
        assert_eq!(again, ["b", "c"]);
        // Every record is where its rack says.
        for (location, places) in &task.racks {
            for p in places {
                assert_eq!(&task.records[*p].announcement.location, location);
            }
        }
    }

    #[test]
    fn a_large_rack_answers_with_ranked_random_and_other_racks_peers() {
        let mut task = TaskPeers::default();
        for i in 0..200 {
            let rack = if i < 150 { "r1" } else { "r2" };
            task.announce(record(&format!("h{i:03}"), rack, &[i % 16]));
        }
        let me: Location = "eu/z1/r1".parse().unwrap();
        let asking = Asking {
            host_id: "h000",
            location: &me,
            edge_room: Some(2),
            known: Some(16),
        };
        let mut state = 7u64;
        let mut random = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        let mut named = std::collections::HashSet::new();
        for round in 0..20 {
            let answer = task.answer(&asking, 16, round, &mut random);
            // Random draws are bounded (a few may miss): never more than asked.
            assert!((12..=16).contains(&answer.parents.len()), "{:?}", ids(&answer));
            assert!(!ids(&answer).contains(&"h000"), "never the asker");
            let across = answer.parents.iter().filter(|p| p.shared < 3).count();
            assert!(across >= 1, "bridges from the other rack: {:?}", ids(&answer));
            named.extend(answer.parents.iter().map(|p| p.host_id.clone()));
            // Every piece is held: nothing to hand out.
            assert_eq!(answer.edge_pieces, Some(vec![]));
            assert_eq!(answer.rack_place, Some(RackPlace { index: 0, of: 150 }));
        }
        // Random rack-mates spread the answers over the rack, not the same 16 every time.
        assert!(named.len() > 60, "{} peers named", named.len());
    }
}
