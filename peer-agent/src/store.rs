//! The agent's pieces on disk: one sealed file per task (pieces at the same fixed offsets as on
//! the edge), written as pieces arrive and verified, kept after completion for uploads and
//! re-pulls, evicted least-recently-used beyond the quota.
//!
//! Layout under `data_dir/tasks/`: `<hex>.partial` while downloading; `<hex>.sealed` plus
//! `<hex>.json` (the piece table) once complete. Keys are never stored: serving a blob again
//! needs the edge's access check (and key) again.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use damselfly_core::{Bitfield, Digest, PieceLayout, PieceTable};
use tokio::sync::watch;

use crate::error::{AgentError, AgentResult};

/// One task's pieces, complete or arriving.
pub struct LocalTask {
    pub digest: Digest,
    pub layout: PieceLayout,
    file: Arc<File>,
    have: Mutex<Bitfield>,
    /// Bumped whenever a piece lands (or the task fails), for readers waiting on a piece.
    changed: watch::Sender<u64>,
    failed: Mutex<Option<String>>,
    /// The pieces that landed last, while the task downloads: see [`RecentPieces`].
    recent: Mutex<RecentPieces>,
    /// What the download last saw: how long until the edge holds every piece (in ms;
    /// `u64::MAX`: not known yet), and whether other hosts download the task too. Read by the
    /// image's read-ahead.
    edge_left_ms: AtomicU64,
    in_swarm: AtomicBool,
    /// A runtime (or `get`) asked for the task, not only the read-ahead.
    asked: AtomicBool,
    /// The sealed length of each piece held compressed, 0 for the others (as the table said
    /// when the piece was stored: these bytes are read with it, whatever the edge says later).
    compressed: Mutex<Vec<u32>>,
}

/// The sealed pieces a downloading task received last, kept in memory: a runtime streaming
/// the blob (and often a peer) asks for a piece right after it lands, and reading it back from
/// disk would cost a buffer fill and a page-cache copy per byte. Bounded to
/// [`RECENT_BYTES`] (two pieces at least) per download, and dropped when the task completes or
/// fails; a piece no longer here is read from disk as before.
#[derive(Default)]
struct RecentPieces {
    pieces: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// Covers the pieces in flight around a reader streaming in order (2 MiB pieces for a
/// 512 MiB blob: 8 of them).
const RECENT_BYTES: usize = 16 << 20;

impl RecentPieces {
    fn keep(&mut self, index: u64, sealed: Bytes) {
        self.bytes += sealed.len();
        self.pieces.push_back((index, sealed));
        while self.bytes > RECENT_BYTES && self.pieces.len() > 2 {
            if let Some((_, old)) = self.pieces.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    fn get(&self, index: u64) -> Option<Bytes> {
        self.pieces
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b.clone())
    }

    fn clear(&mut self) {
        *self = RecentPieces::default();
    }
}

impl LocalTask {
    fn new(
        digest: Digest,
        layout: PieceLayout,
        file: File,
        have: Bitfield,
        mut compressed: Vec<u32>,
    ) -> LocalTask {
        let (changed, _) = watch::channel(0);
        compressed.resize(layout.count() as usize, 0);
        LocalTask {
            digest,
            layout,
            file: Arc::new(file),
            have: Mutex::new(have),
            changed,
            failed: Mutex::new(None),
            recent: Mutex::new(RecentPieces::default()),
            edge_left_ms: AtomicU64::new(u64::MAX),
            in_swarm: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            compressed: Mutex::new(compressed),
        }
    }

    pub fn has(&self, index: u64) -> bool {
        self.have.lock().map(|h| h.get(index)).unwrap_or(false)
    }

    pub fn bitfield(&self) -> Bitfield {
        self.have.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Records what the download sees of the edge and the swarm (see the fields).
    pub(crate) fn note_download(&self, edge_left: Option<Duration>, in_swarm: bool) {
        let ms = edge_left.map_or(u64::MAX, |d| d.as_millis().min(u64::MAX as u128 - 1) as u64);
        self.edge_left_ms.store(ms, Ordering::Relaxed);
        self.in_swarm.store(in_swarm, Ordering::Relaxed);
    }

    /// How long until the edge holds every piece, as the download last estimated it.
    pub(crate) fn edge_left(&self) -> Option<Duration> {
        match self.edge_left_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// A reader asked for the task (see `asked`).
    pub(crate) fn note_asked(&self) {
        self.asked.store(true, Ordering::Relaxed);
    }

    /// Whether a runtime (or `get`) asked for the task, not only the read-ahead.
    pub(crate) fn asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Whether other hosts were downloading the task when the download last looked.
    pub(crate) fn in_swarm(&self) -> bool {
        self.in_swarm.load(Ordering::Relaxed)
    }

    pub fn is_complete(&self) -> bool {
        self.have.lock().map(|h| h.is_complete()).unwrap_or(false)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    pub fn fail(&self, reason: String) {
        if let Ok(mut f) = self.failed.lock() {
            *f = Some(reason);
        }
        self.forget_recent();
        self.changed.send_modify(|v| *v += 1);
    }

    /// Stores a sealed piece that was already verified against the piece table, which says
    /// whether it is `compressed` (its sealed length then, else 0).
    pub fn write_piece(&self, index: u64, sealed: Bytes, compressed: u32) -> AgentResult<()> {
        if let Some(slot) = self
            .compressed
            .lock()
            .ok()
            .as_mut()
            .and_then(|c| c.get_mut(index as usize))
        {
            *slot = compressed;
        }
        self.file
            .write_all_at(&sealed, self.layout.sealed_offset(index))
            .map_err(|e| AgentError::Internal(format!("write piece {index}: {e}")))?;
        if let Ok(mut recent) = self.recent.lock() {
            recent.keep(index, sealed);
        }
        if let Ok(mut have) = self.have.lock() {
            have.set(index);
        }
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The sealed bytes of a piece this agent holds.
    pub fn read_sealed(&self, index: u64) -> AgentResult<Bytes> {
        if let Some(sealed) = self.recent.lock().ok().and_then(|r| r.get(index)) {
            return Ok(sealed);
        }
        let len = match self.compressed_len(index) {
            0 => self.layout.sealed_len(index),
            n => u64::from(n).min(self.layout.sealed_len(index)),
        };
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, self.layout.sealed_offset(index))
            .map_err(|e| AgentError::Internal(format!("read piece {index}: {e}")))?;
        Ok(Bytes::from(buf))
    }

    /// Whether piece `index` is held compressed.
    pub fn is_compressed(&self, index: u64) -> bool {
        self.compressed_len(index) > 0
    }

    fn compressed_len(&self, index: u64) -> u32 {
        let held = self.compressed.lock().ok();
        held.and_then(|c| c.get(index as usize).copied()).unwrap_or(0)
    }

    /// Drops the pieces kept in memory (the task completed or failed).
    pub(crate) fn forget_recent(&self) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.clear();
        }
    }
}

pub struct PieceStore {
    root: PathBuf,
    quota: u64,
    tasks: Mutex<HashMap<Digest, Arc<LocalTask>>>,
}

impl PieceStore {
    /// Opens the store: complete tasks are kept, partial ones dropped (their pieces would need
    /// re-verification against a table this agent may no longer get).
    pub fn open(root: &Path, quota: u64) -> AgentResult<Arc<PieceStore>> {
        let dir = root.join("tasks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::Internal(format!("create {}: {e}", dir.display())))?;
        let mut tasks = HashMap::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| AgentError::Internal(e.to_string()))?
            .flatten()
        {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".partial") || name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if let Some(hex) = name.strip_suffix(".sealed") {
                // A crash between the two renames of `finish` leaves a sealed file without its
                // table: unusable, so reclaimed.
                if !dir.join(format!("{hex}.json")).exists() {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let table: Option<PieceTable> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let sealed_path = dir.join(format!("{hex}.sealed"));
            let file = File::open(&sealed_path).ok();
            match (table, file) {
                (Some(t), Some(f)) if f.metadata().map(|m| m.len()).ok() == Some(t.layout.sealed_size()) => {
                    let full = Bitfield::full(t.layout.count());
                    let task = LocalTask::new(t.digest, t.layout, f, full, t.zstd);
                    tasks.insert(t.digest, Arc::new(task));
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(&sealed_path);
                }
            }
        }
        tracing::info!(tasks = tasks.len(), "piece store opened");
        Ok(Arc::new(PieceStore {
            root: dir,
            quota,
            tasks: Mutex::new(tasks),
        }))
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<LocalTask>> {
        self.tasks.lock().ok()?.get(digest).cloned()
    }

    /// The task for `digest`: the one held, or a new empty one with `layout`.
    pub fn get_or_create(&self, digest: &Digest, layout: PieceLayout) -> AgentResult<(Arc<LocalTask>, bool)> {
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| AgentError::Internal("store lock".into()))?;
        if let Some(t) = tasks.get(digest).filter(|t| t.failure().is_none()) {
            if t.is_complete() {
                // The table's mtime is the task's last use: eviction takes the oldest first.
                let table = self.root.join(format!("{}.json", digest.hex()));
                let _ = File::options()
                    .write(true)
                    .open(table)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            }
            return Ok((t.clone(), false));
        }
        self.evict_for(&mut tasks, layout.sealed_size());
        let path = self.root.join(format!("{}.partial", digest.hex()));
        let file = damselfly_core::piece::create_pieces_file(&path)
            .map_err(|e| AgentError::Internal(format!("create {}: {e}", path.display())))?;
        file.set_len(layout.sealed_size())
            .map_err(|e| AgentError::Internal(format!("allocate: {e}")))?;
        let task = Arc::new(LocalTask::new(
            *digest,
            layout,
            file,
            Bitfield::new(layout.count()),
            Vec::new(),
        ));
        tasks.insert(*digest, task.clone());
        Ok((task, true))
    }

    /// Makes a complete task durable: table written, then the file renamed (the commit point).
    pub fn finish(&self, task: &LocalTask, table: &PieceTable) -> AgentResult<()> {
        let fail = |e: std::io::Error| AgentError::Internal(format!("finish {}: {e}", task.digest));
        task.file.sync_data().map_err(fail)?;
        let hex = task.digest.hex();
        let json = serde_json::to_vec(table).map_err(|e| AgentError::Internal(e.to_string()))?;
        let tmp = self.root.join(format!("{hex}.json.tmp"));
        std::fs::write(&tmp, json).map_err(fail)?;
        std::fs::rename(
            self.root.join(format!("{hex}.partial")),
            self.root.join(format!("{hex}.sealed")),
        )
        .map_err(fail)?;
        std::fs::rename(&tmp, self.root.join(format!("{hex}.json"))).map_err(fail)?;
        task.forget_recent();
        Ok(())
    }

    /// Every task held: (digest, plain size, pieces held, pieces in all), for the status page.
    pub fn summary(&self) -> (u64, Vec<(Digest, u64, u64, u64)>) {
        let tasks = match self.tasks.lock() {
            Ok(tasks) => tasks
                .values()
                .map(|t| (t.digest, t.layout.size, t.bitfield().count(), t.layout.count()))
                .collect(),
            Err(_) => Vec::new(),
        };
        (self.quota, tasks)
    }

    /// Forgets a failed task so the next request starts afresh.
    pub fn discard(&self, digest: &Digest) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.remove(digest);
        }
        let _ = std::fs::remove_file(self.root.join(format!("{}.partial", digest.hex())));
    }

    /// Evicts complete tasks nobody holds (least recently used first) to fit `incoming`.
    fn evict_for(&self, tasks: &mut HashMap<Digest, Arc<LocalTask>>, incoming: u64) {
        let used: u64 = tasks.values().map(|t| t.layout.sealed_size()).sum();
        if used + incoming <= self.quota {
            return;
        }
        let mut victims: Vec<(std::time::SystemTime, Digest, u64)> = tasks
            .values()
            // Only the map holds it: no reader, uploader or download is using it.
            .filter(|t| Arc::strong_count(t) == 1 && t.is_complete())
            .map(|t| {
                let path = self.root.join(format!("{}.json", t.digest.hex()));
                let at = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (at, t.digest, t.layout.sealed_size())
            })
            .collect();
        victims.sort();
        let mut used = used;
        for (_, digest, size) in victims {
            if used + incoming <= self.quota {
                break;
            }
            tasks.remove(&digest);
            for ext in ["sealed", "json"] {
                let _ = std::fs::remove_file(self.root.join(format!("{}.{ext}", digest.hex())));
            }
            used -= size;
            tracing::info!(%digest, "evicted task to stay within quota");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use damselfly_core::PieceHash;

    const MIB: u64 = 1024 * 1024;

    /// A complete task of `size` bytes (content irrelevant here: the store keeps what it is given).
    fn complete(store: &PieceStore, name: &str, size: u64) -> Digest {
        let digest = Digest::of(name.as_bytes());
        let layout = PieceLayout::for_size(size);
        let (task, created) = store.get_or_create(&digest, layout).unwrap();
        assert!(created);
        for i in 0..layout.count() {
            task.write_piece(i, Bytes::from(vec![7u8; layout.sealed_len(i) as usize]), 0)
                .unwrap();
        }
        let table = PieceTable {
            digest,
            layout,
            hash: PieceHash::Sha256,
            pieces: vec![[0u8; 32]; layout.count() as usize],
            zstd: Vec::new(),
        };
        store.finish(&task, &table).unwrap();
        digest
    }

    #[test]
    fn pieces_just_landed_are_read_from_memory_and_the_rest_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path(), 1024 * MIB).unwrap();
        // 64 MiB: pieces of 256 KiB, so the memory bound keeps the last 64 of them.
        let layout = PieceLayout::for_size(64 * MIB);
        let kept = RECENT_BYTES / layout.sealed_len(0) as usize;
        let (task, _) = store.get_or_create(&Digest::of(b"recent"), layout).unwrap();
        let piece = |i: u64| Bytes::from(vec![i as u8; layout.sealed_len(i) as usize]);
        let pieces = kept as u64 + 10;
        for i in 0..pieces {
            task.write_piece(i, piece(i), 0).unwrap();
        }
        let in_memory = |i: u64| task.recent.lock().unwrap().get(i).is_some();
        assert!((0..10).all(|i| !in_memory(i)), "the oldest went over the bound");
        assert!((10..pieces).all(in_memory));
        // Wherever a piece is read from, it is what was written (and memory is handed out as
        // is, without a copy).
        for i in 0..pieces {
            assert_eq!(task.read_sealed(i).unwrap(), piece(i), "piece {i}");
        }
        let last = task.read_sealed(pieces - 1).unwrap();
        assert_eq!(last.as_ptr(), task.read_sealed(pieces - 1).unwrap().as_ptr());
        // Done downloading: memory is given back, the disk still answers.
        task.forget_recent();
        assert!(!in_memory(pieces - 1));
        assert_eq!(task.read_sealed(pieces - 1).unwrap(), piece(pieces - 1));
        // A failed task gives its memory back too.
        task.write_piece(0, piece(0), 0).unwrap();
        task.fail("test".into());
        assert!(!in_memory(0));
    }

    #[test]
    fn complete_tasks_survive_a_restart_and_leftovers_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let kept = {
            let store = PieceStore::open(dir.path(), 100 * MIB).unwrap();
            let kept = complete(&store, "kept", 3 * MIB);
            let (_partial, _) = store
                .get_or_create(&Digest::of(b"partial"), PieceLayout::for_size(MIB))
                .unwrap();
            kept
        };
        // A crash between finish's two renames: a sealed file without its table.
        let orphan = dir
            .path()
            .join("tasks")
            .join(format!("{}.sealed", Digest::of(b"orphan").hex()));
        std::fs::write(&orphan, b"x").unwrap();
        let store = PieceStore::open(dir.path(), 100 * MIB).unwrap();
        assert!(store.get(&kept).is_some_and(|t| t.is_complete()));
        assert!(store.get(&Digest::of(b"partial")).is_none());
        assert!(!orphan.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tasks"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 2, "only the kept task's sealed file and table remain");
    }

    #[test]
    fn compressed_pieces_are_read_at_their_own_length_before_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PieceLayout::for_size(MIB);
        let digest = Digest::of(b"compressed");
        let piece = |i: u64, len: usize| Bytes::from(vec![i as u8 + 1; len]);
        {
            let store = PieceStore::open(dir.path(), 100 * MIB).unwrap();
            let (task, _) = store.get_or_create(&digest, layout).unwrap();
            for i in 0..layout.count() {
                match i % 2 {
                    0 => task.write_piece(i, piece(i, 1000 + i as usize), 1000 + i as u32),
                    _ => task.write_piece(i, piece(i, layout.sealed_len(i) as usize), 0),
                }
                .unwrap();
            }
            task.forget_recent();
            assert_eq!(task.read_sealed(2).unwrap(), piece(2, 1002), "from disk");
            assert!(task.is_compressed(2) && !task.is_compressed(1));
            let table = PieceTable {
                digest,
                layout,
                hash: PieceHash::Sha256,
                pieces: vec![[0u8; 32]; 4],
                zstd: vec![1000, 0, 1002, 0],
            };
            store.finish(&task, &table).unwrap();
        }
        let store = PieceStore::open(dir.path(), 100 * MIB).unwrap();
        let task = store.get(&digest).unwrap();
        for i in 0..layout.count() {
            let expected = match i % 2 {
                0 => piece(i, 1000 + i as usize),
                _ => piece(i, layout.sealed_len(i) as usize),
            };
            assert_eq!(task.read_sealed(i).unwrap(), expected, "piece {i}");
        }
    }

    #[test]
    fn eviction_takes_the_least_recently_used_task_nobody_holds() {
        let dir = tempfile::tempdir().unwrap();
        let quota = PieceLayout::for_size(4 * MIB).sealed_size() * 2 + MIB;
        let store = PieceStore::open(dir.path(), quota).unwrap();
        let old = complete(&store, "old", 4 * MIB);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let newer = complete(&store, "newer", 4 * MIB);
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Using the older task makes it the most recently used.
        let (_, created) = store.get_or_create(&old, PieceLayout::for_size(4 * MIB)).unwrap();
        assert!(!created);
        complete(&store, "third", 4 * MIB);
        assert!(store.get(&old).is_some(), "the recently used task was evicted");
        assert!(
            store.get(&newer).is_none(),
            "the least recently used task was kept"
        );
    }
}
