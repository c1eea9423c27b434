//! The region's scheduler as the edge keeps it in process: a [`TaskPeers`] per task (the real
//! records, the real answer: ranked, random rack-mates, other racks' peers, pieces handed out).
//! Sizes of the messages are measured on a sample of them as the JSON the edge and agents
//! exchange.

use damselfly_core::api::{ParentsAnswer, PeerAnnouncement, PeerRecord};
use damselfly_core::task_peers::{Asking, TaskPeers};
use rand::Rng;

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

    /// Bytes of every announcement and parents answer, from the sampled mean sizes (JSON
    /// before compression; a query's request line and a table refresh are not counted).
    pub fn bytes(&self) -> f64 {
        let mean = |(bytes, n): (u64, u64)| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
        self.announcements as f64 * mean(self.announcement_bytes)
            + self.parents_queries as f64 * mean(self.answer_bytes)
    }
}

pub struct Scheduler {
    max_parents: usize,
    tasks: Vec<TaskPeers>,
    /// Simulated milliseconds, for the hand-outs' expiry.
    pub now_ms: u64,
    pub traffic: Traffic,
}

impl Scheduler {
    pub fn new(tasks: usize, max_parents: usize) -> Scheduler {
        Scheduler {
            max_parents,
            tasks: (0..tasks).map(|_| TaskPeers::default()).collect(),
            now_ms: 0,
            traffic: Traffic::default(),
        }
    }

    /// A peer's announcement (join, change or heartbeat).
    pub fn announce(&mut self, task: usize, host_id: &str, announcement: PeerAnnouncement) {
        self.traffic.announcements += 1;
        if self.traffic.announcements.is_multiple_of(SIZE_SAMPLE) {
            let bytes = serde_json::to_vec(&announcement).map_or(0, |b| b.len() as u64);
            self.traffic.announcement_bytes.0 += bytes;
            self.traffic.announcement_bytes.1 += 1;
        }
        self.tasks[task].announce(PeerRecord {
            host_id: host_id.to_string(),
            announcement,
            seen_at: self.now_ms,
        });
    }

    /// The answer to a parents query.
    pub fn parents(&mut self, task: usize, asking: &Asking<'_>) -> ParentsAnswer {
        let mut rng = rand::thread_rng();
        let mut random = |n: usize| rng.gen_range(0..n);
        let answer = self.tasks[task].answer(asking, self.max_parents, self.now_ms, &mut random);
        self.traffic.parents_queries += 1;
        if self.traffic.parents_queries.is_multiple_of(SIZE_SAMPLE) {
            let bytes = serde_json::to_vec(&answer).map_or(0, |b| b.len() as u64);
            self.traffic.answer_bytes.0 += bytes;
            self.traffic.answer_bytes.1 += 1;
        }
        answer
    }
}
