//! The region's scheduler as the edge keeps it: one record per peer and task (the real
//! [`PeerRecord`]), grouped by rack, and parents ranked by the real [`rank_parents_rack_first`]
//! (the same answer as ranking every peer of the task, from the rack's records when those
//! suffice). Sizes of the messages are measured on a sample of them as the JSON the edge and
//! agents exchange.

use damselfly_core::api::{ParentCandidate, ParentsAnswer, PeerAnnouncement, PeerRecord};
use damselfly_core::{rank_parents_rack_first, Location};

/// One in this many messages is serialised to measure its size.
const SIZE_SAMPLE: u64 = 64;

#[derive(Default)]
pub struct Traffic {
    pub announcements: u64,
    pub parents_queries: u64,
    pub table_refreshes: u64,
    /// Bytes of the sampled messages, and how many were sampled.
    announcement_bytes: (u64, u64),
    answer_bytes: (u64, u64),
}

impl Traffic {
    pub fn messages(&self) -> u64 {
        self.announcements + self.parents_queries + self.table_refreshes
    }

    /// Bytes of every message, from the sampled mean sizes (a parents query is a GET with its
    /// host id and location; its answer is counted, not its request line).
    pub fn bytes(&self) -> f64 {
        let mean = |(bytes, n): (u64, u64)| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
        self.announcements as f64 * mean(self.announcement_bytes)
            + self.parents_queries as f64 * mean(self.answer_bytes)
    }
}

pub struct Scheduler {
    max_parents: usize,
    /// Per task, per rack, the records of that rack's peers.
    tasks: Vec<Vec<Vec<PeerRecord>>>,
    /// Per task, per host: its record's place in its rack's list.
    places: Vec<Vec<Option<usize>>>,
    pub traffic: Traffic,
}

impl Scheduler {
    pub fn new(tasks: usize, racks: usize, hosts: usize, max_parents: usize) -> Scheduler {
        Scheduler {
            max_parents,
            tasks: (0..tasks).map(|_| vec![Vec::new(); racks]).collect(),
            places: vec![vec![None; hosts]; tasks],
            traffic: Traffic::default(),
        }
    }

    /// A peer's announcement (join, change or heartbeat).
    pub fn announce(
        &mut self,
        task: usize,
        host: usize,
        rack: usize,
        host_id: &str,
        announcement: PeerAnnouncement,
    ) {
        self.traffic.announcements += 1;
        if self.traffic.announcements.is_multiple_of(SIZE_SAMPLE) {
            let bytes = serde_json::to_vec(&announcement).map_or(0, |b| b.len() as u64);
            self.traffic.announcement_bytes.0 += bytes;
            self.traffic.announcement_bytes.1 += 1;
        }
        let records = &mut self.tasks[task][rack];
        let record = PeerRecord {
            host_id: host_id.to_string(),
            announcement,
            seen_at: 0,
        };
        match self.places[task][host] {
            Some(i) => records[i] = record,
            None => {
                self.places[task][host] = Some(records.len());
                records.push(record);
            }
        }
    }

    /// The parents proposed to `host_id` in `rack` at `location`.
    pub fn parents(
        &mut self,
        task: usize,
        rack: usize,
        host_id: &str,
        location: &Location,
    ) -> Vec<ParentCandidate> {
        let racks = &self.tasks[task];
        let parents = rank_parents_rack_first(
            host_id,
            location,
            &racks[rack],
            || racks.iter().flatten(),
            self.max_parents,
        );
        self.traffic.parents_queries += 1;
        if self.traffic.parents_queries.is_multiple_of(SIZE_SAMPLE) {
            let answer = ParentsAnswer { parents };
            let bytes = serde_json::to_vec(&answer).map_or(0, |b| b.len() as u64);
            self.traffic.answer_bytes.0 += bytes;
            self.traffic.answer_bytes.1 += 1;
            return answer.parents;
        }
        parents
    }
}
