//! The scheduler for the peers of this region: who holds which pieces of which task, and
//! which parents to propose to an agent.
//!
//! State lives in this process by default. With `redis` configured, it lives in Redis so that
//! several edges of a region share one view of their peers.

mod memory;
mod rate;
mod redis_store;

use std::time::Duration;

use damselfly_core::api::{ParentCandidate, PeerRecord};
use damselfly_core::{rank_parents, Digest, Location};

use crate::error::{EdgeError, EdgeResult};

pub use memory::MemoryPeers;
pub use rate::AnnouncementRate;
pub use redis_store::RedisPeers;

pub enum PeerStore {
    Memory(MemoryPeers),
    Redis(RedisPeers),
}

impl PeerStore {
    /// `max_peers`: records kept per task; a newcomer beyond that is refused (the task's
    /// existing peers still refresh theirs).
    pub async fn connect(
        redis: Option<&redis::Client>,
        ttl: Duration,
        max_peers: usize,
    ) -> EdgeResult<PeerStore> {
        match redis {
            None => Ok(PeerStore::Memory(MemoryPeers::new(ttl, max_peers))),
            Some(client) => Ok(PeerStore::Redis(
                RedisPeers::connect(client, ttl, max_peers).await?,
            )),
        }
    }

    /// Whether the shared state answers (always, in process).
    pub async fn ping(&self) -> EdgeResult<()> {
        match self {
            PeerStore::Memory(_) => Ok(()),
            PeerStore::Redis(r) => r.ping().await,
        }
    }

    /// Records (or refreshes) a peer's state in a task.
    pub async fn announce(&self, task: &Digest, record: PeerRecord) -> EdgeResult<()> {
        match self {
            PeerStore::Memory(m) => m.announce(task, record),
            PeerStore::Redis(r) => r.announce(task, record).await,
        }
    }

    pub async fn leave(&self, task: &Digest, host_id: &str) -> EdgeResult<()> {
        match self {
            PeerStore::Memory(m) => m.leave(task, host_id),
            PeerStore::Redis(r) => r.leave(task, host_id).await,
        }
    }

    /// The best `max` live parents of a task for the host `me` at `location`
    /// ([`rank_parents`]), ranked where the records are: in process, without copying them.
    pub async fn parents(
        &self,
        task: &Digest,
        me: &str,
        location: &Location,
        max: usize,
    ) -> EdgeResult<Vec<ParentCandidate>> {
        match self {
            PeerStore::Memory(m) => m.with_live(task, |live| rank_parents(me, location, live, max)),
            PeerStore::Redis(r) => Ok(rank_parents(me, location, &r.peers(task).await?, max)),
        }
    }
}

pub(crate) fn task_full(max: usize) -> EdgeError {
    EdgeError::Busy(if max == 0 {
        "the scheduler keeps no peers"
    } else {
        "this task has as many peers as the scheduler keeps (scheduler.max_peers_per_task)"
    })
}

pub(crate) fn scheduler_err(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Internal(format!("scheduler state: {e}"))
}
