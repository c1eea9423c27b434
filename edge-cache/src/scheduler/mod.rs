//! The scheduler for the peers of this region: who holds which pieces of which task, and
//! which parents to propose to an agent.
//!
//! State lives in this process by default. With `redis` configured, it lives in Redis so that
//! several edges of a region share one view of their peers.

mod memory;
mod rate;
mod redis_store;

use std::time::Duration;

use damselfly_core::api::{ParentsAnswer, PeerRecord};
use damselfly_core::task_peers::{Asking, TaskPeers};
use damselfly_core::Digest;

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

    /// The answer to a parents query ([`TaskPeers::answer`]: ranked, random rack-mates and
    /// other racks' peers). Pieces are handed out to take from the edge only by the in-process
    /// state: with Redis, each edge of a region would hand out the same pieces, so none are,
    /// and agents share them by their own rule.
    pub async fn parents(&self, task: &Digest, asking: &Asking<'_>, max: usize) -> EdgeResult<ParentsAnswer> {
        match self {
            PeerStore::Memory(m) => m.answer(task, asking, max),
            PeerStore::Redis(r) => {
                let mut peers = TaskPeers::from_records(r.peers(task).await?);
                let asking = Asking {
                    edge_room: None,
                    ..*asking
                };
                let mut rng = rand::thread_rng();
                let mut random = |n: usize| rand::Rng::gen_range(&mut rng, 0..n);
                Ok(peers.answer(&asking, max, crate::store::now_millis(), &mut random))
            }
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
