//! Where jobs, the work queue and the deduplication set live.
//!
//! [`embedded`] (redb in `data_dir`) needs nothing else and serves one preheater; [`redis`]
//! lets several preheaters share the queue, the jobs and the deduplication set. Both keep the
//! same promises: admitting an event's jobs and remembering its key is one atomic step, every job
//! change is stored before it is acted upon, and a job whose worker vanished is picked up again.

mod admission;
pub mod embedded;
pub mod redis;

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::job::Job;

pub use self::admission::Admission;
pub use self::embedded::EmbeddedStore;
pub use self::redis::RedisStore;

pub enum Store {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
}

impl Store {
    pub async fn open(config: &Config) -> Result<Store> {
        match &config.redis {
            Some(url) => Ok(Store::Redis(RedisStore::connect(url, config).await?)),
            None => Ok(Store::Embedded(EmbeddedStore::open(config).await?)),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }

    /// Stores and queues `jobs` unless `dedupe_key` was seen before (then stores nothing).
    pub async fn admit(&self, dedupe_key: Option<&str>, jobs: &[Job]) -> Result<Admission> {
        match self {
            Store::Embedded(s) => s.admit(dedupe_key, jobs).await,
            Store::Redis(s) => s.admit(dedupe_key, jobs).await,
        }
    }

    pub async fn save(&self, job: &Job) -> Result<()> {
        match self {
            Store::Embedded(s) => s.save(job).await,
            Store::Redis(s) => s.save(job).await,
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>> {
        match self {
            Store::Embedded(s) => s.get(id).await,
            Store::Redis(s) => s.get(id).await,
        }
    }

    /// The most recent jobs, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<Job>> {
        match self {
            Store::Embedded(s) => s.recent(limit).await,
            Store::Redis(s) => s.recent(limit).await,
        }
    }

    /// Claims the next queued job id, waiting up to `wait` for one.
    pub async fn next(&self, wait: Duration) -> Result<Option<String>> {
        match self {
            Store::Embedded(s) => s.next(wait).await,
            Store::Redis(s) => s.next(wait).await,
        }
    }

    /// Keeps a claimed job ours while we work on it.
    pub async fn renew(&self, id: &str) -> Result<()> {
        match self {
            Store::Embedded(_) => Ok(()),
            Store::Redis(s) => s.renew(id).await,
        }
    }

    /// Done with a claimed job (finished, or left for a restart to resume).
    pub async fn release(&self, id: &str) -> Result<()> {
        match self {
            Store::Embedded(_) => Ok(()),
            Store::Redis(s) => s.release(id).await,
        }
    }

    /// Gives a claimed job back to the queue (its run was cut short by a store failure), so a
    /// worker retries it without waiting for a restart or a lease to expire.
    pub async fn requeue(&self, id: &str) -> Result<()> {
        match self {
            Store::Embedded(s) => s.requeue(id),
            Store::Redis(s) => s.requeue(id).await,
        }
    }

    /// Periodic upkeep: expire dedupe keys, trim old jobs, requeue abandoned claims.
    pub async fn maintain(&self) -> Result<()> {
        match self {
            Store::Embedded(s) => s.maintain().await,
            Store::Redis(s) => s.maintain().await,
        }
    }

    /// How often [`Store::maintain`] should run.
    pub fn maintenance_interval(&self) -> Duration {
        match self {
            Store::Embedded(_) => Duration::from_secs(60),
            Store::Redis(s) => s.maintenance_interval(),
        }
    }
}
