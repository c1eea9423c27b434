//! The piece store: blobs on disk as sealed pieces, one upstream transfer per digest, quota.
//!
//! Layout under the data directory:
//! - `blobs/<hex>.sealed` — every piece sealed, at offsets given by the [`PieceLayout`];
//!   its presence means the blob's digest was verified (files appear here only by rename).
//! - `blobs/<hex>.table`  — the piece table (JSON), written before the rename above.
//! - `ingest/<hex>.sealed` — transfers in progress; cleared at start-up.
//! - `manifests/<hex>`    — manifest bytes, stored under their verified digest.
//! - `index.redb`         — access times, manifest media types, tag mappings.

mod admin;
mod blob;
mod catalog;
pub mod index;
mod ingest;
mod manifests;
mod usage;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use damselfly_core::{ClusterSecret, Digest, PieceLayout};
use tokio::sync::watch;

pub use admin::{BlobListing, Purged, TagListing};
pub use blob::{Blob, IngestState, PieceHashes, Progress};
use blob::{HashLists, StoredTable};
pub use ingest::{BlobSource, FileValidators};
pub use manifests::{CachedManifest, CatalogLimits};
pub use usage::now_millis;
use usage::{Entry, Lease, Usage};

use crate::error::{EdgeError, EdgeResult};
use crate::metrics::Metrics;

/// Where a blob stands, for the warm API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobState {
    Cached,
    Ingesting,
    Failed(String),
    Absent,
}

/// Failure reasons kept for the warm API's pollers.
const MAX_RECENT_FAILURES: usize = 1024;

pub struct StoreOptions {
    pub quota: u64,
    pub high_watermark: f64,
    pub low_watermark: f64,
    pub idle_timeout: Duration,
    /// Longest wait for an upstream's answer to a transfer's request (its headers).
    pub response_timeout: Duration,
    pub resume_attempts: u32,
    pub catalog: CatalogLimits,
    /// Whether and when pieces are compressed.
    pub compression: Arc<crate::compression::Compression>,
}

pub struct BlobStore {
    root: PathBuf,
    secret: ClusterSecret,
    index: index::Index,
    usage: Arc<Mutex<Usage>>,
    /// Cached manifests and tag mappings, counted and evicted (see `catalog.rs`).
    catalog: Mutex<catalog::Catalog>,
    in_flight: Mutex<HashMap<Digest, Arc<ingest::Ingest>>>,
    /// Why recent transfers failed, for the warm API (bounded; cleared by a new attempt).
    recent_failures: Mutex<HashMap<Digest, String>>,
    metrics: Arc<Metrics>,
    options: StoreOptions,
    /// The piece hashes of complete blobs, read from their table files once: task answers and
    /// the check of every piece sent need them (see [`TableCache`]).
    tables: TableCache,
}

/// Piece hashes of complete blobs by digest, bounded by their size in memory. An entry goes
/// when its blob is evicted, purged, dropped as damaged or published again.
type TableCache = moka::sync::Cache<Digest, Arc<HashLists>>;

/// Memory the table cache may hold (two 32-byte hashes a piece: about 250,000 blobs of 256
/// pieces).
const TABLE_CACHE_BYTES: u64 = 64 << 20;

fn io_err(context: &str) -> impl Fn(std::io::Error) -> EdgeError + '_ {
    move |e| EdgeError::Internal(format!("{context}: {e}"))
}

impl BlobStore {
    /// Opens the store, reconciling the index with the files: partial transfers are dropped,
    /// completed blobs missing from the index are adopted, index rows without files forgotten.
    pub fn load(
        root: &Path,
        secret: ClusterSecret,
        options: StoreOptions,
        metrics: Arc<Metrics>,
    ) -> EdgeResult<Arc<Self>> {
        for dir in ["blobs", "manifests"] {
            std::fs::create_dir_all(root.join(dir)).map_err(io_err("create data dir"))?;
        }
        // A transfer interrupted by a restart cannot be trusted to resume: its hash state is gone.
        let _ = std::fs::remove_dir_all(root.join("ingest"));
        std::fs::create_dir_all(root.join("ingest")).map_err(io_err("create ingest dir"))?;
        let index = index::Index::open(&root.join("index.redb"))
            .map_err(|e| EdgeError::Internal(format!("open index: {e}")))?;
        let mut usage = Usage::new(options.quota, options.high_watermark, options.low_watermark);
        let rows = index
            .blobs()
            .map_err(|e| EdgeError::Internal(format!("read index: {e}")))?;
        let mut known: HashMap<String, (u64, u64)> = rows.into_iter().map(|(h, s, a)| (h, (s, a))).collect();
        let mut stale_rows: Vec<String> = Vec::new();
        let mut adopted = Vec::new();
        for entry in std::fs::read_dir(root.join("blobs"))
            .map_err(io_err("scan blobs"))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(hex) = name.strip_suffix(".sealed") else {
                continue;
            };
            let table = root.join("blobs").join(format!("{hex}.table"));
            let digest: Option<Digest> = format!("sha256:{hex}").parse().ok();
            let (Some(digest), true) = (digest, table.exists()) else {
                let _ = std::fs::remove_file(entry.path());
                continue;
            };
            let (size, access) = match known.remove(hex) {
                Some(row) => row,
                None => match read_table(&table) {
                    // Published but not yet indexed when the process stopped.
                    Some(t) if t.digest == digest => {
                        adopted.push((hex.to_string(), t.layout.size, usage::now_millis()));
                        (t.layout.size, usage::now_millis())
                    }
                    _ => {
                        let _ = std::fs::remove_file(entry.path());
                        continue;
                    }
                },
            };
            let sealed_on_disk = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if PieceLayout::for_size(size).sealed_size() != sealed_on_disk {
                tracing::warn!(%digest, "sealed file has the wrong size; dropping it");
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            usage.insert(
                digest,
                Entry {
                    size,
                    last_access: access,
                },
            );
        }
        stale_rows.extend(known.into_keys());
        index
            .remove_blobs(&stale_rows)
            .map_err(|e| EdgeError::Internal(format!("index: {e}")))?;
        index
            .put_blobs(&adopted)
            .map_err(|e| EdgeError::Internal(format!("index: {e}")))?;
        for hex in index
            .pins()
            .map_err(|e| EdgeError::Internal(format!("read index: {e}")))?
        {
            if let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() {
                usage.pinned.insert(digest);
            }
        }
        metrics.pinned_blobs.set(usage.pinned.len() as i64);
        let catalog = manifests::load_catalog(root, &index, &options.catalog)?;
        usage.metadata = catalog.manifests.cost();
        manifests::note_catalog_metrics(&metrics, &catalog);
        metrics.cache_used_bytes.set(usage.footprint() as i64);
        tracing::info!(
            blobs = usage.entries.len(),
            bytes = usage.used,
            manifests = catalog.manifests.len(),
            tags = catalog.tags.len(),
            "piece store opened"
        );
        Ok(Arc::new(BlobStore {
            root: root.to_path_buf(),
            secret,
            index,
            usage: Arc::new(Mutex::new(usage)),
            catalog: Mutex::new(catalog),
            in_flight: Mutex::new(HashMap::new()),
            recent_failures: Mutex::new(HashMap::new()),
            metrics,
            options,
            tables: moka::sync::Cache::builder()
                .max_capacity(TABLE_CACHE_BYTES)
                .weigher(|_, lists: &Arc<HashLists>| {
                    ((lists.sha256.len() + lists.blake3.len()) * 32 + lists.zstd.len() * 4)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .build(),
        }))
    }

    /// The piece hashes of a complete blob, from the cache or its table file.
    fn stored_hashes(&self, digest: &Digest) -> PieceHashes {
        let read = || -> Result<Arc<HashLists>, String> {
            let text = std::fs::read(self.table_path(digest)).map_err(|e| format!("piece table: {e}"))?;
            let stored: StoredTable =
                serde_json::from_slice(&text).map_err(|e| format!("piece table: {e}"))?;
            Ok(Arc::new(HashLists {
                sha256: stored.table.pieces,
                blake3: stored.blake3,
                zstd: stored.table.zstd,
            }))
        };
        match self.tables.try_get_with(*digest, read) {
            Ok(lists) => PieceHashes::Stored(lists),
            Err(e) => PieceHashes::Unreadable(e.to_string()),
        }
    }

    /// Forgets the cached hashes of a blob whose files are going or being replaced.
    pub(super) fn forget_table(&self, digest: &Digest) {
        self.tables.invalidate(digest);
    }

    fn sealed_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(format!("{}.sealed", digest.hex()))
    }

    fn table_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(format!("{}.table", digest.hex()))
    }

    fn lock_usage(&self) -> EdgeResult<std::sync::MutexGuard<'_, Usage>> {
        self.usage
            .lock()
            .map_err(|_| EdgeError::Internal("usage lock poisoned".into()))
    }

    /// Whether a verified copy of `digest` is on disk.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.usage
            .lock()
            .map(|u| u.entries.contains_key(digest))
            .unwrap_or(false)
    }

    /// Opens a complete blob without starting any transfer.
    pub fn open_cached(&self, digest: &Digest) -> EdgeResult<Option<Blob>> {
        let (lease, layout) = {
            let mut usage = self.lock_usage()?;
            let Some(entry) = usage.entries.get(digest).copied() else {
                return Ok(None);
            };
            usage.touch(digest);
            (
                Lease::acquire(&self.usage, &mut usage, *digest),
                PieceLayout::for_size(entry.size),
            )
        };
        let file = File::open(self.sealed_path(digest)).map_err(io_err("open cached blob"))?;
        let (_tx, progress) = watch::channel(Progress {
            layout: Some(layout),
            sealed: layout.count(),
            state: IngestState::Complete,
        });
        Ok(Some(Blob {
            digest: *digest,
            key: self.secret.task_key(digest),
            file: Arc::new(file),
            progress,
            hashes: self.stored_hashes(digest),
            _lease: Arc::new(lease),
            stall_timeout: self.stall_timeout(),
        }))
    }

    /// Opens `digest`: from disk when complete, else by joining the transfer in flight, else by
    /// starting one from `source`. However many callers arrive at once, one transfer runs.
    pub fn open(self: &Arc<Self>, digest: &Digest, source: BlobSource) -> EdgeResult<Blob> {
        let mut in_flight = self
            .in_flight
            .lock()
            .map_err(|_| EdgeError::Internal("lock poisoned".into()))?;
        // Checked under the in-flight lock: a finishing transfer publishes to the usage table
        // before leaving the in-flight map, so a blob is always found in one of the two.
        if let Some(blob) = self.open_cached(digest)? {
            self.metrics.hit("blob");
            return Ok(blob);
        }
        if let Some(running) = in_flight.get(digest) {
            self.metrics.coalesced_requests.inc();
            return self.join(running);
        }
        self.metrics.miss("blob");
        if let Ok(mut failures) = self.recent_failures.lock() {
            failures.remove(digest);
        }
        let running = ingest::Ingest::create(self, *digest)?;
        in_flight.insert(*digest, running.clone());
        let blob = self.join(&running)?;
        // A span of its own, child of the request that started it: a traced warm or task
        // request follows the transfer from the upstream.
        let span = tracing::info_span!("ingest", %digest);
        tokio::spawn(tracing::Instrument::instrument(
            ingest::run(self.clone(), running, source),
            span,
        ));
        Ok(blob)
    }

    pub fn state(&self, digest: &Digest) -> BlobState {
        if self.contains(digest) {
            return BlobState::Cached;
        }
        if self
            .in_flight
            .lock()
            .map(|m| m.contains_key(digest))
            .unwrap_or(false)
        {
            return BlobState::Ingesting;
        }
        // Checked again: the transfer may have just finished.
        if self.contains(digest) {
            return BlobState::Cached;
        }
        match self
            .recent_failures
            .lock()
            .ok()
            .and_then(|f| f.get(digest).cloned())
        {
            Some(reason) => BlobState::Failed(reason),
            None => BlobState::Absent,
        }
    }

    /// Transfers in flight and how far each is, for the status page.
    pub fn ingests(&self) -> Vec<(Digest, Progress)> {
        self.in_flight
            .lock()
            .map(|m| {
                m.values()
                    .map(|ingest| (ingest.digest, ingest.progress.borrow().clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn remember_failure(&self, digest: Digest, reason: String) {
        if let Ok(mut failures) = self.recent_failures.lock() {
            if failures.len() >= MAX_RECENT_FAILURES {
                failures.clear();
            }
            failures.insert(digest, reason);
        }
    }

    /// Opens `digest` for a caller already following its transfer (an agent refreshing its
    /// piece table): a transfer that just failed is reported rather than started again, so the
    /// caller turns to the origin instead of waiting on a retry that would fail the same way.
    pub fn follow(self: &Arc<Self>, digest: &Digest, source: BlobSource) -> EdgeResult<Blob> {
        if let Some(blob) = self.open_existing(digest)? {
            return Ok(blob);
        }
        if let BlobState::Failed(reason) = self.state(digest) {
            return Err(EdgeError::IngestFailed(reason));
        }
        self.open(digest, source)
    }

    /// Opens `digest` if it is complete or arriving; never starts a transfer.
    pub fn open_existing(&self, digest: &Digest) -> EdgeResult<Option<Blob>> {
        let in_flight = self
            .in_flight
            .lock()
            .map_err(|_| EdgeError::Internal("lock poisoned".into()))?;
        if let Some(blob) = self.open_cached(digest)? {
            return Ok(Some(blob));
        }
        in_flight
            .get(digest)
            .map(|running| self.join(running))
            .transpose()
    }

    fn join(&self, running: &ingest::Ingest) -> EdgeResult<Blob> {
        let lease = {
            let mut usage = self.lock_usage()?;
            Lease::acquire(&self.usage, &mut usage, running.digest)
        };
        Ok(Blob {
            digest: running.digest,
            key: running.key.clone(),
            file: running.file.clone(),
            progress: running.progress.subscribe(),
            hashes: PieceHashes::Growing(running.hashes.clone()),
            _lease: Arc::new(lease),
            stall_timeout: self.stall_timeout(),
        })
    }

    fn stall_timeout(&self) -> Duration {
        // A reader waits as long as the transfer may legitimately take to make progress,
        // including its resume attempts.
        self.options.idle_timeout * (self.options.resume_attempts + 2)
    }

    /// Makes room for `sealed_size` new bytes, deleting evicted blobs.
    fn admit(&self, sealed_size: u64) -> EdgeResult<()> {
        let evicted = self.lock_usage()?.admit(sealed_size);
        if evicted.is_empty() {
            return Ok(());
        }
        let mut hexes = Vec::new();
        for (digest, entry) in &evicted {
            self.forget_table(digest);
            let _ = std::fs::remove_file(self.sealed_path(digest));
            let _ = std::fs::remove_file(self.table_path(digest));
            hexes.push(digest.hex());
            tracing::info!(%digest, bytes = entry.sealed_size(), "evicted blob to stay within quota");
        }
        self.metrics.evicted_blobs.inc_by(evicted.len() as u64);
        self.index
            .remove_blobs(&hexes)
            .map_err(|e| EdgeError::Internal(format!("index: {e}")))?;
        self.refresh_used_metric();
        Ok(())
    }

    /// A piece of `blob` failed authentication when read (`error`): the copy on disk is
    /// dropped, so the next request fetches the blob again instead of meeting the same damage.
    /// A copy published since `blob` was opened is kept.
    pub fn drop_damaged(&self, blob: &Blob, error: &EdgeError) {
        use std::os::unix::fs::MetadataExt;
        self.metrics.damaged_pieces.inc();
        tracing::error!(digest = %blob.digest, %error, "a piece on disk failed authentication; dropping the blob");
        if !blob.is_cached() {
            return;
        }
        // Under the in-flight lock, like every change between "cached" and "absent".
        let Ok(in_flight) = self.in_flight.lock() else {
            return;
        };
        let path = self.sealed_path(&blob.digest);
        let same_copy = match (std::fs::metadata(&path), blob.file.metadata()) {
            (Ok(on_disk), Ok(read)) => on_disk.dev() == read.dev() && on_disk.ino() == read.ino(),
            _ => false,
        };
        if !same_copy {
            return;
        }
        let removed = match self.lock_usage() {
            Ok(mut usage) => usage.remove(&blob.digest).is_some(),
            Err(_) => false,
        };
        if removed {
            self.forget_table(&blob.digest);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(self.table_path(&blob.digest));
            if let Err(e) = self.index.remove_blobs(&[blob.digest.hex()]) {
                tracing::warn!(error = %e, "index: could not forget a damaged blob");
            }
        }
        drop(in_flight);
        self.refresh_used_metric();
    }

    fn refresh_used_metric(&self) {
        if let Ok(u) = self.usage.lock() {
            self.metrics.cache_used_bytes.set((u.used + u.metadata) as i64);
        }
    }

    /// Writes access times changed since the last flush to the index (called periodically
    /// and at shutdown, so LRU order survives restarts).
    pub fn flush_access_times(&self) {
        let dirty = match self.usage.lock() {
            Ok(mut u) => u.take_dirty(),
            Err(_) => return,
        };
        if dirty.is_empty() {
            return;
        }
        let rows: Vec<(String, u64, u64)> = dirty
            .into_iter()
            .map(|(d, e)| (d.hex(), e.size, e.last_access))
            .collect();
        if let Err(e) = self.index.put_blobs(&rows) {
            tracing::warn!(error = %e, "could not persist access times");
        }
    }

    /// Disk bytes in use (complete blobs plus transfers in flight).
    pub fn footprint(&self) -> u64 {
        self.usage.lock().map(|u| u.footprint()).unwrap_or(0)
    }

    pub fn index(&self) -> &index::Index {
        &self.index
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }
}

fn read_table(path: &Path) -> Option<damselfly_core::PieceTable> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
