//! Scheduler state in this process: a [`TaskPeers`] per task (records grouped by rack, pieces
//! handed out to take from the edge).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use damselfly_core::api::{ParentsAnswer, PeerRecord};
use damselfly_core::task_peers::{Asking, TaskPeers};
use damselfly_core::Digest;
use rand::Rng;

use super::scheduler_err;
use crate::error::EdgeResult;
use crate::store::now_millis;

/// Silent peers are dropped at most this often (and at least every quarter TTL): sweeping every
/// task's records on every call was most of an edge's work under thousands of peers.
const SWEEP_EVERY_MS: u64 = 1000;

pub struct MemoryPeers {
    ttl_ms: u64,
    max_peers: usize,
    tasks: Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    by_digest: HashMap<Digest, TaskPeers>,
    swept_at: u64,
}

impl MemoryPeers {
    pub fn new(ttl: Duration, max_peers: usize) -> Self {
        MemoryPeers {
            ttl_ms: ttl.as_millis() as u64,
            max_peers,
            tasks: Mutex::new(Tasks::default()),
        }
    }

    /// Drops the peers silent for the TTL, when the last sweep is old enough.
    fn sweep(&self, tasks: &mut Tasks, now: u64) {
        let every = SWEEP_EVERY_MS.min(self.ttl_ms / 4);
        if now.saturating_sub(tasks.swept_at) < every {
            return;
        }
        tasks.swept_at = now;
        let ttl = self.ttl_ms;
        tasks.by_digest.retain(|_, peers| {
            peers.retain(|p| now.saturating_sub(p.seen_at) < ttl);
            !peers.is_empty()
        });
    }

    pub fn announce(&self, task: &Digest, record: PeerRecord) -> EdgeResult<()> {
        let mut tasks = self.tasks.lock().map_err(scheduler_err)?;
        let now = now_millis();
        self.sweep(&mut tasks, now);
        let peers = tasks.by_digest.entry(*task).or_default();
        if !peers.contains(&record.host_id) && peers.len() >= self.max_peers {
            return Err(super::task_full(self.max_peers));
        }
        peers.announce(record);
        Ok(())
    }

    pub fn leave(&self, task: &Digest, host_id: &str) -> EdgeResult<()> {
        let mut tasks = self.tasks.lock().map_err(scheduler_err)?;
        if let Some(peers) = tasks.by_digest.get_mut(task) {
            peers.leave(host_id);
        }
        Ok(())
    }

    /// The answer to a parents query ([`TaskPeers::answer`]).
    pub fn answer(&self, task: &Digest, asking: &Asking<'_>, max: usize) -> EdgeResult<ParentsAnswer> {
        let mut tasks = self.tasks.lock().map_err(scheduler_err)?;
        let now = now_millis();
        self.sweep(&mut tasks, now);
        let Some(peers) = tasks.by_digest.get_mut(task) else {
            return Ok(ParentsAnswer::default());
        };
        let mut rng = rand::thread_rng();
        let mut random = |n: usize| rng.gen_range(0..n);
        Ok(peers.answer(asking, max, now, &mut random))
    }
}
