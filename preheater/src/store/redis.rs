//! The Redis store, shared by several preheaters.
//!
//! Keys (under the configured prefix):
//! - `job:<id>`: hash `{json, state, updated}`; `jobs`: sorted set of ids by creation time.
//! - `queue`: list of ids waiting (LPUSH in, LMOVE out to `processing`).
//! - `processing`: ids claimed by some preheater; `lease:<id>` (with expiry) says whose and that
//!   it is alive. A claim whose lease has been missing on two consecutive sweeps goes back to the
//!   queue, so a job whose preheater died is resumed by another.
//! - `dedupe:<event key>`: one per event, with expiry, written with the event's jobs in one script.

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Direction};

use super::admission::Admission;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::Job;

/// Admits an event: KEYS = [dedupe key or "", jobs, queue, job:<id>...]; ARGV = [dedupe TTL,
/// then id, json, state, updated, created per job]. Everything that could fail is checked before
/// the first write (a script that fails half-way keeps its earlier writes), and the dedupe key is
/// written last. Returns 1 when created, 0 for a duplicate.
const ADMIT_SCRIPT: &str = r#"
if KEYS[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return redis.error_reply('job ' .. KEYS[i] .. ' exists already')
  end
end
for i = 4, #KEYS do
  local a = 2 + (i - 4) * 5
  redis.call('HSET', KEYS[i], 'json', ARGV[a + 1], 'state', ARGV[a + 2], 'updated', ARGV[a + 3])
  redis.call('ZADD', KEYS[2], ARGV[a + 4], ARGV[a])
  redis.call('LPUSH', KEYS[3], ARGV[a])
end
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], 1, 'EX', ARGV[1]) end
return 1
"#;

/// Queue poll interval when the queue is empty.
const IDLE_POLL: Duration = Duration::from_millis(200);

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// Identifies this process in lease values (for operators reading Redis).
    instance: String,
    lease: Duration,
    dedupe_ttl: Duration,
    retention: usize,
    /// Claims seen without a lease on the previous sweep.
    suspects: std::sync::Mutex<HashSet<String>>,
}

fn encode(job: &Job) -> Result<String> {
    serde_json::to_string(job).map_err(|e| Error::Internal(format!("encode job: {e}")))
}

impl RedisStore {
    pub async fn connect(url: &str, config: &Config) -> Result<Self> {
        let client = damselfly_server::tls::redis_client(url, &config.tls).map_err(Error::Store)?;
        let shown = damselfly_server::config::redact_url(url);
        let conn = damselfly_server::tls::redis_connection(&client)
            .await
            .map_err(|e| Error::Store(format!("redis at {shown}: {e}")))?;
        Ok(RedisStore {
            conn,
            prefix: config.redis_prefix.clone(),
            instance: format!("{:08x}", rand::random::<u32>()),
            lease: Duration::from_secs(config.jobs.lease_secs),
            dedupe_ttl: Duration::from_secs(config.dedupe.ttl_secs),
            retention: config.jobs.retention,
            suspects: std::sync::Mutex::new(HashSet::new()),
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub fn maintenance_interval(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(500))
    }

    /// Dedupe and job creation in one step: one Lua script, which Redis runs whole, so no crash
    /// (of this preheater or between two commands) can leave the event marked seen without its
    /// jobs, or jobs queued for an event whose retry would be admitted again.
    pub async fn admit(&self, dedupe_key: Option<&str>, jobs: &[Job]) -> Result<Admission> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ADMIT_SCRIPT)
            .arg(3 + jobs.len())
            .arg(
                dedupe_key
                    .map(|k| self.key(&format!("dedupe:{k}")))
                    .unwrap_or_default(),
            )
            .arg(self.key("jobs"))
            .arg(self.key("queue"));
        for job in jobs {
            cmd.arg(self.key(&format!("job:{}", job.id)));
        }
        cmd.arg(self.dedupe_ttl.as_secs().max(1));
        for job in jobs {
            cmd.arg(&job.id)
                .arg(encode(job)?)
                .arg(job.state.as_str())
                .arg(job.updated_at)
                .arg(job.created_at);
        }
        let created: i64 = cmd.query_async(&mut conn).await?;
        Ok(if created == 1 {
            Admission::Created
        } else {
            Admission::Duplicate
        })
    }

    pub async fn save(&self, job: &Job) -> Result<()> {
        let mut conn = self.conn.clone();
        let json = encode(job)?;
        let _: () = conn
            .hset_multiple(
                self.key(&format!("job:{}", job.id)),
                &[
                    ("json", json.as_str()),
                    ("state", job.state.as_str()),
                    ("updated", &job.updated_at.to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.hget(self.key(&format!("job:{id}")), "json").await?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| Error::Store(format!("stored job is unreadable: {e}")))
        })
        .transpose()
    }

    pub async fn recent(&self, limit: usize) -> Result<Vec<Job>> {
        let mut conn = self.conn.clone();
        let stop = limit.saturating_sub(1) as isize;
        let ids: Vec<String> = conn.zrevrange(self.key("jobs"), 0, stop).await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(self.key(&format!("job:{id}")), "json");
        }
        let rows: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(rows
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect())
    }

    pub async fn next(&self, wait: Duration) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let id: Option<String> = conn
                .lmove(
                    self.key("queue"),
                    self.key("processing"),
                    Direction::Right,
                    Direction::Left,
                )
                .await?;
            if let Some(id) = id {
                self.renew(&id).await?;
                return Ok(Some(id));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
    }

    pub async fn renew(&self, id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(
                self.key(&format!("lease:{id}")),
                &self.instance,
                self.lease.as_secs(),
            )
            .await?;
        Ok(())
    }

    pub async fn release(&self, id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .lrem(self.key("processing"), 1, id)
            .ignore()
            .del(self.key(&format!("lease:{id}")))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn requeue(&self, id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .lrem(self.key("processing"), 1, id)
            .ignore()
            .del(self.key(&format!("lease:{id}")))
            .ignore()
            .rpush(self.key("queue"), id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Requeues claims whose lease stayed missing for two sweeps, and trims finished jobs beyond
    /// the retention. Dedupe keys expire on their own.
    pub async fn maintain(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let claimed: Vec<String> = conn.lrange(self.key("processing"), 0, -1).await?;
        let mut orphans = Vec::new();
        for id in &claimed {
            let alive: bool = conn.exists(self.key(&format!("lease:{id}"))).await?;
            if !alive {
                orphans.push(id.clone());
            }
        }
        let requeue: Vec<String> = {
            let mut suspects = self
                .suspects
                .lock()
                .map_err(|_| Error::Internal("suspect set poisoned".into()))?;
            let requeue = orphans
                .iter()
                .filter(|id| suspects.contains(*id))
                .cloned()
                .collect();
            *suspects = orphans.into_iter().collect();
            requeue
        };
        for id in requeue {
            // LREM decides which sweeper wins when several preheaters find the same orphan.
            let removed: usize = conn.lrem(self.key("processing"), 1, &id).await?;
            if removed == 1 {
                tracing::info!(job = %id, "requeueing a job whose preheater stopped renewing it");
                let _: () = conn.rpush(self.key("queue"), &id).await?;
            }
        }
        let total: usize = conn.zcard(self.key("jobs")).await?;
        let excess = total.saturating_sub(self.retention);
        if excess > 0 {
            let oldest: Vec<String> = conn.zrange(self.key("jobs"), 0, excess as isize - 1).await?;
            for id in oldest {
                let state: Option<String> = conn.hget(self.key(&format!("job:{id}")), "state").await?;
                if matches!(state.as_deref(), Some("succeeded" | "failed") | None) {
                    let _: () = redis::pipe()
                        .del(self.key(&format!("job:{id}")))
                        .ignore()
                        .zrem(self.key("jobs"), &id)
                        .ignore()
                        .query_async(&mut conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
