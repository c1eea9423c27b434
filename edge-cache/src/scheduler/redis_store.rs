//! Scheduler state in Redis, shared by the edges of a region.
//!
//! One hash per task (`damselfly:peers:<hex>`), a field per host holding its JSON record. The
//! key expires after the peer TTL past its last write, so abandoned tasks vanish; records of
//! silent peers inside a live task are filtered by their `seen_at` on read.

use std::time::{Duration, Instant};

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
    /// Until when calls fail at once because Redis did not answer the last one.
    unanswered_until: std::sync::Mutex<Option<Instant>>,
}

/// After Redis fails to answer (timeout, connection lost), scheduler calls fail at once for this
/// long instead of each waiting out the response timeout: agents back off on their own, and a
/// stopped Redis must not hold the edge's request slots.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(2);

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
            unanswered_until: std::sync::Mutex::new(None),
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

    /// Refuses at once while Redis is known not to answer.
    fn check_answering(&self) -> EdgeResult<()> {
        let until = self.unanswered_until.lock().ok().and_then(|u| *u);
        match until {
            Some(until) if Instant::now() < until => Err(scheduler_err(
                "Redis did not answer a moment ago; trying again shortly",
            )),
            _ => Ok(()),
        }
    }

    /// Passes `result` on, remembering when Redis did not answer.
    fn note<T>(&self, result: redis::RedisResult<T>) -> EdgeResult<T> {
        result.map_err(|e| {
            if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                if let Ok(mut until) = self.unanswered_until.lock() {
                    *until = Some(Instant::now() + PAUSE_AFTER_FAILURE);
                }
            }
            scheduler_err(e)
        })
    }

    pub async fn announce(&self, task: &Digest, record: PeerRecord) -> EdgeResult<()> {
        self.check_answering()?;
        let json = serde_json::to_string(&record).map_err(scheduler_err)?;
        let mut c = self.connection.clone();
        let k = key(task);
        // Checked before the write: edges racing may overshoot by a few records, never grow
        // a task without bound.
        let (known, count): (bool, usize) = self.note(
            redis::pipe()
                .hexists(&k, &record.host_id)
                .hlen(&k)
                .query_async(&mut c)
                .await,
        )?;
        if !known && count >= self.max_peers {
            return Err(super::task_full(self.max_peers));
        }
        self.note(
            redis::pipe()
                .hset(&k, &record.host_id, json)
                .ignore()
                .expire(&k, self.ttl.as_secs().max(1) as i64)
                .ignore()
                .query_async::<()>(&mut c)
                .await,
        )
    }

    pub async fn leave(&self, task: &Digest, host_id: &str) -> EdgeResult<()> {
        self.check_answering()?;
        let mut c = self.connection.clone();
        self.note(c.hdel::<_, _, ()>(key(task), host_id).await)
    }

    pub async fn peers(&self, task: &Digest) -> EdgeResult<Vec<PeerRecord>> {
        self.check_answering()?;
        let mut c = self.connection.clone();
        let all: Vec<(String, String)> = self.note(c.hgetall(key(task)).await)?;
        let now = now_millis();
        let ttl_ms = self.ttl.as_millis() as u64;
        Ok(all
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str::<PeerRecord>(&json).ok())
            .filter(|p| now.saturating_sub(p.seen_at) < ttl_ms)
            .collect())
    }
}
