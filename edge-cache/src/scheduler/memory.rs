//! Scheduler state in this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use damselfly_core::api::PeerRecord;
use damselfly_core::Digest;

use super::scheduler_err;
use crate::error::EdgeResult;
use crate::store::now_millis;

pub struct MemoryPeers {
    ttl_ms: u64,
    max_peers: usize,
    tasks: Mutex<HashMap<Digest, HashMap<String, PeerRecord>>>,
}

impl MemoryPeers {
    pub fn new(ttl: Duration, max_peers: usize) -> Self {
        MemoryPeers {
            ttl_ms: ttl.as_millis() as u64,
            max_peers,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    pub fn announce(&self, task: &Digest, record: PeerRecord) -> EdgeResult<()> {
        let mut tasks = self.tasks.lock().map_err(scheduler_err)?;
        let now = now_millis();
        // Dropping silent peers on write keeps the map bounded by live peers.
        tasks.retain(|_, peers| {
            peers.retain(|_, p| now.saturating_sub(p.seen_at) < self.ttl_ms);
            !peers.is_empty()
        });
        let peers = tasks.entry(*task).or_default();
        if !peers.contains_key(&record.host_id) && peers.len() >= self.max_peers {
            return Err(super::task_full(self.max_peers));
        }
        peers.insert(record.host_id.clone(), record);
        Ok(())
    }

    pub fn leave(&self, task: &Digest, host_id: &str) -> EdgeResult<()> {
        let mut tasks = self.tasks.lock().map_err(scheduler_err)?;
        if let Some(peers) = tasks.get_mut(task) {
            peers.remove(host_id);
        }
        Ok(())
    }

    /// Calls `f` with the live records of a task (heard from within the TTL), in place.
    pub fn with_live<R>(
        &self,
        task: &Digest,
        f: impl FnOnce(&mut dyn Iterator<Item = &PeerRecord>) -> R,
    ) -> EdgeResult<R> {
        let tasks = self.tasks.lock().map_err(scheduler_err)?;
        let now = now_millis();
        let mut live = tasks
            .get(task)
            .into_iter()
            .flat_map(|peers| peers.values())
            .filter(|p| now.saturating_sub(p.seen_at) < self.ttl_ms);
        Ok(f(&mut live))
    }
}
