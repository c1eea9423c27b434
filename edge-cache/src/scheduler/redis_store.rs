//! Scheduler state in Redis, shared by the edges of a region.
//!
//! One hash per task (`damselfly:peers:<hex>`), a field per host holding its JSON record. The
//! key expires after the peer TTL past its last write, so abandoned tasks vanish; records of
//! silent peers inside a live task are filtered by their `seen_at` on read.

use std::time::Duration;

use damselfly_core::api::PeerRecord;
use damselfly_core::Digest;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::scheduler_err;
use crate::error::EdgeResult;
use crate::store::now_millis;

pub struct RedisPeers {
    ttl: Duration,
    max_peers: usize,
    connection: ConnectionManager,
}

/// Longest wait for Redis to answer a readiness probe.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

fn key(task: &Digest) -> String {
    format!("damselfly:peers:{}", task.hex())
}

impl RedisPeers {
    pub async fn connect(client: &redis::Client, ttl: Duration, max_peers: usize) -> EdgeResult<Self> {
        let connection = damselfly_server::tls::redis_connection(client)
            .await
            .map_err(scheduler_err)?;
        Ok(RedisPeers {
            ttl,
            max_peers,
            connection,
        })
    }

    /// A `PING`, bounded in time: readiness must not hang on a Redis that stopped answering.
    pub async fn ping(&self) -> EdgeResult<()> {
        let mut c = self.connection.clone();
        let pong = tokio::time::timeout(PING_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut c)).await;
        match pong {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(scheduler_err(e)),
            Err(_) => Err(scheduler_err(format!("no answer within {PING_TIMEOUT:?}"))),
        }
    }

    pub async fn announce(&self, task: &Digest, record: PeerRecord) -> EdgeResult<()> {
        let json = serde_json::to_string(&record).map_err(scheduler_err)?;
        let mut c = self.connection.clone();
        let k = key(task);
        // Checked before the write: edges racing may overshoot by a few records, never grow
        // a task without bound.
        let (known, count): (bool, usize) = redis::pipe()
            .hexists(&k, &record.host_id)
            .hlen(&k)
            .query_async(&mut c)
            .await
            .map_err(scheduler_err)?;
        if !known && count >= self.max_peers {
            return Err(super::task_full(self.max_peers));
        }
        redis::pipe()
            .hset(&k, &record.host_id, json)
            .ignore()
            .expire(&k, self.ttl.as_secs().max(1) as i64)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(scheduler_err)
    }

    pub async fn leave(&self, task: &Digest, host_id: &str) -> EdgeResult<()> {
        let mut c = self.connection.clone();
        c.hdel::<_, _, ()>(key(task), host_id)
            .await
            .map_err(scheduler_err)
    }

    pub async fn peers(&self, task: &Digest) -> EdgeResult<Vec<PeerRecord>> {
        let mut c = self.connection.clone();
        let all: Vec<(String, String)> = c.hgetall(key(task)).await.map_err(scheduler_err)?;
        let now = now_millis();
        let ttl_ms = self.ttl.as_millis() as u64;
        Ok(all
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str::<PeerRecord>(&json).ok())
            .filter(|p| now.saturating_sub(p.seen_at) < ttl_ms)
            .collect())
    }
}
