//! The embedded store: redb in `data_dir/jobs.redb`, for a single preheater.
//!
//! Jobs are JSON under their id (ids sort by creation time); the dedupe table maps an event key
//! to its expiry. The queue is in memory and rebuilt at start-up from every job not finished,
//! which is how interrupted jobs resume.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, Mutex};

use super::admission::Admission;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::{now_millis, Job};

/// job id → job JSON
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// event dedupe key → expiry (unix milliseconds)
const DEDUPE: TableDefinition<&str, u64> = TableDefinition::new("dedupe");

pub struct EmbeddedStore {
    db: Arc<Database>,
    queue_tx: mpsc::UnboundedSender<String>,
    queue_rx: Mutex<mpsc::UnboundedReceiver<String>>,
    dedupe_ttl: Duration,
    dedupe_max: usize,
    retention: usize,
}

fn encode(job: &Job) -> Result<Vec<u8>> {
    serde_json::to_vec(job).map_err(|e| Error::Internal(format!("encode job: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Job> {
    serde_json::from_slice(bytes).map_err(|e| Error::Store(format!("stored job is unreadable: {e}")))
}

/// Runs redb work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("store task: {e}")))?
}

fn store_err(e: impl Into<redb::Error>) -> Error {
    Error::from(e.into())
}

impl EmbeddedStore {
    /// Opens (or creates) the store and queues every unfinished job.
    pub async fn open(config: &Config) -> Result<Self> {
        let dir = config.data_dir.clone();
        let path: PathBuf = dir.join("jobs.redb");
        let (db, unfinished) = blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Store(format!("create {}: {e}", dir.display())))?;
            let db = Database::create(&path).map_err(store_err)?;
            let tx = db.begin_write().map_err(store_err)?;
            tx.open_table(JOBS).map_err(store_err)?;
            tx.open_table(DEDUPE).map_err(store_err)?;
            tx.commit().map_err(store_err)?;
            let mut unfinished = Vec::new();
            {
                let tx = db.begin_read().map_err(store_err)?;
                let jobs = tx.open_table(JOBS).map_err(store_err)?;
                for row in jobs.iter().map_err(store_err)? {
                    let (id, bytes) = row.map_err(store_err)?;
                    match decode(bytes.value()) {
                        Ok(job) if !job.state.is_terminal() => unfinished.push(id.value().to_string()),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(id = id.value(), error = %e, "skipping unreadable job"),
                    }
                }
            }
            Ok((db, unfinished))
        })
        .await?;
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        if !unfinished.is_empty() {
            tracing::info!(jobs = unfinished.len(), "resuming unfinished jobs");
        }
        for id in unfinished {
            let _ = queue_tx.send(id);
        }
        Ok(EmbeddedStore {
            db: Arc::new(db),
            queue_tx,
            queue_rx: Mutex::new(queue_rx),
            dedupe_ttl: Duration::from_secs(config.dedupe.ttl_secs),
            dedupe_max: config.dedupe.max_entries,
            retention: config.jobs.retention,
        })
    }

    pub async fn admit(&self, dedupe_key: Option<&str>, jobs: &[Job]) -> Result<Admission> {
        let db = self.db.clone();
        let key = dedupe_key.map(str::to_string);
        let rows: Vec<(String, Vec<u8>)> = jobs
            .iter()
            .map(|j| Ok((j.id.clone(), encode(j)?)))
            .collect::<Result<_>>()?;
        let ttl = self.dedupe_ttl.as_millis() as u64;
        let admission = blocking(move || {
            let now = now_millis();
            let tx = db.begin_write().map_err(store_err)?;
            {
                let mut dedupe = tx.open_table(DEDUPE).map_err(store_err)?;
                if let Some(key) = &key {
                    let seen = dedupe.get(key.as_str()).map_err(store_err)?.map(|v| v.value());
                    if seen.is_some_and(|expiry| expiry > now) {
                        return Ok(Admission::Duplicate);
                    }
                    dedupe.insert(key.as_str(), now + ttl).map_err(store_err)?;
                }
                let mut table = tx.open_table(JOBS).map_err(store_err)?;
                for (id, bytes) in &rows {
                    table.insert(id.as_str(), bytes.as_slice()).map_err(store_err)?;
                }
            }
            tx.commit().map_err(store_err)?;
            Ok(Admission::Created)
        })
        .await?;
        if admission == Admission::Created {
            for job in jobs {
                let _ = self.queue_tx.send(job.id.clone());
            }
        }
        Ok(admission)
    }

    pub async fn save(&self, job: &Job) -> Result<()> {
        let db = self.db.clone();
        let (id, bytes) = (job.id.clone(), encode(job)?);
        blocking(move || {
            let tx = db.begin_write().map_err(store_err)?;
            tx.open_table(JOBS)
                .map_err(store_err)?
                .insert(id.as_str(), bytes.as_slice())
                .map_err(store_err)?;
            tx.commit().map_err(store_err)
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>> {
        let db = self.db.clone();
        let id = id.to_string();
        blocking(move || {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(JOBS).map_err(store_err)?;
            let row = table.get(id.as_str()).map_err(store_err)?;
            row.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    pub async fn recent(&self, limit: usize) -> Result<Vec<Job>> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(JOBS).map_err(store_err)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(store_err)?.rev().take(limit) {
                let (_, bytes) = row.map_err(store_err)?;
                out.push(decode(bytes.value())?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn next(&self, wait: Duration) -> Result<Option<String>> {
        let mut rx = self.queue_rx.lock().await;
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(id)) => Ok(Some(id)),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    pub fn requeue(&self, id: &str) -> Result<()> {
        self.queue_tx
            .send(id.to_string())
            .map_err(|_| Error::Internal("job queue closed".into()))
    }

    /// Forgets expired dedupe keys (and the oldest beyond `max_entries`) and finished jobs beyond
    /// the retention.
    pub async fn maintain(&self) -> Result<()> {
        let db = self.db.clone();
        let (dedupe_max, retention) = (self.dedupe_max, self.retention);
        blocking(move || {
            let now = now_millis();
            let tx = db.begin_write().map_err(store_err)?;
            {
                let mut dedupe = tx.open_table(DEDUPE).map_err(store_err)?;
                let mut rows: Vec<(String, u64)> = Vec::new();
                for row in dedupe.iter().map_err(store_err)? {
                    let (k, v) = row.map_err(store_err)?;
                    rows.push((k.value().to_string(), v.value()));
                }
                rows.sort_by_key(|(_, expiry)| *expiry);
                let over = rows.len().saturating_sub(dedupe_max);
                for (i, (key, expiry)) in rows.iter().enumerate() {
                    if i < over || *expiry <= now {
                        dedupe.remove(key.as_str()).map_err(store_err)?;
                    }
                }
                let mut jobs = tx.open_table(JOBS).map_err(store_err)?;
                let excess = (jobs.len().map_err(store_err)? as usize).saturating_sub(retention);
                if excess > 0 {
                    let mut doomed = Vec::new();
                    for row in jobs.iter().map_err(store_err)? {
                        let (id, bytes) = row.map_err(store_err)?;
                        if decode(bytes.value()).is_ok_and(|j| j.state.is_terminal()) {
                            doomed.push(id.value().to_string());
                            if doomed.len() == excess {
                                break;
                            }
                        }
                    }
                    for id in doomed {
                        jobs.remove(id.as_str()).map_err(store_err)?;
                    }
                }
            }
            tx.commit().map_err(store_err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobState;

    fn config(dir: &std::path::Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn duplicates_are_refused_and_unfinished_jobs_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&config(dir.path())).await.unwrap();
        let (a, b) = (Job::sample(1), Job::sample(2));
        // Under one event key the first job is created and any later one refused.
        for (job, admission) in [(&a, Admission::Created), (&b, Admission::Duplicate)] {
            assert_eq!(
                store
                    .admit(Some("event-1"), std::slice::from_ref(job))
                    .await
                    .unwrap(),
                admission
            );
        }
        assert!(
            store.get(&b.id).await.unwrap().is_none(),
            "a duplicate stores nothing"
        );
        assert_eq!(
            store.admit(None, std::slice::from_ref(&b)).await.unwrap(),
            Admission::Created
        );
        assert_eq!(
            store.next(Duration::from_secs(1)).await.unwrap().as_deref(),
            Some(a.id.as_str())
        );
        assert_eq!(
            store.next(Duration::from_secs(1)).await.unwrap().as_deref(),
            Some(b.id.as_str())
        );
        assert_eq!(store.next(Duration::from_millis(10)).await.unwrap(), None);

        let mut finished = a.clone();
        finished.start(3);
        finished.fail("x".into(), 4);
        store.save(&finished).await.unwrap();
        let mut running = b.clone();
        running.start(3);
        store.save(&running).await.unwrap();
        let recent = store.recent(10).await.unwrap();
        assert_eq!(
            recent.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            [b.id.as_str(), a.id.as_str()]
        );
        drop(store);

        let store = EmbeddedStore::open(&config(dir.path())).await.unwrap();
        assert_eq!(store.get(&a.id).await.unwrap().unwrap().state, JobState::Failed);
        assert_eq!(
            store.next(Duration::from_secs(1)).await.unwrap().as_deref(),
            Some(b.id.as_str()),
            "the running job is queued again"
        );
        assert_eq!(store.next(Duration::from_millis(10)).await.unwrap(), None);
        assert_eq!(
            store.admit(Some("event-1"), &[Job::sample(5)]).await.unwrap(),
            Admission::Duplicate
        );
    }

    #[tokio::test]
    async fn maintenance_bounds_the_dedupe_set_and_finished_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.dedupe.max_entries = 2;
        c.jobs.retention = 1;
        let store = EmbeddedStore::open(&c).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..3u64 {
            let mut j = Job::sample(10 + i);
            j.start(20);
            j.fail("done".into(), 21);
            store.admit(Some(&format!("e{i}")), &[j.clone()]).await.unwrap();
            ids.push(j.id);
        }
        store.maintain().await.unwrap();
        assert_eq!(
            store.admit(Some("e0"), &[Job::sample(30)]).await.unwrap(),
            Admission::Created,
            "oldest key forgotten"
        );
        assert_eq!(
            store.admit(Some("e2"), &[Job::sample(31)]).await.unwrap(),
            Admission::Duplicate
        );
        assert!(store.get(&ids[0]).await.unwrap().is_none());
        assert!(store.get(&ids[2]).await.unwrap().is_some());
    }
}
