//! Layer read-ahead: the next layer of an image starts downloading before the runtime asks.
//!
//! A runtime pulls an image's layers a few at a time (containerd three) and asks for the next
//! only when one is done. In a swarm every host finishes the same layers at about the same
//! moment, the last pieces passing between peers; for that while nobody asks the edge for a new
//! layer, so its link from the origin and its link to the hosts both go idle, and the time is
//! never made up (the swarm's lower bound has both links busy from start to end). So once the
//! edge is about to hold every piece of the layers this host is downloading, the next layer the
//! image's manifest names is started as if the runtime had asked: the edge begins its transfer from
//! the origin and the swarm its pieces. When the runtime asks, it joins that download.
//!
//! One layer at a time, and only while the runtime is still pulling the image (one of its own
//! downloads of it is under way): all of them at once would share the edge's link among layers the runtime needs now and layers it needs
//! later (measured slower). By default only in a swarm (other hosts on the same layers): a
//! lone host gains little, and a runtime that already holds some layers never asks for them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use damselfly_core::Digest;
use tokio::time::Instant;

use super::policy::READ_AHEAD_LEAD as LEAD;
use super::Downloader;
use crate::config::ReadAhead;
use crate::request::{BlobRequest, TaskOrigin};
use crate::store::LocalTask;

/// How often an image's downloads are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// With none of its layers downloading for this long, the runtime is done with the image.
const IDLE_END: Duration = Duration::from_secs(5);
/// An image is followed at most this long.
const FOLLOW_AT_MOST: Duration = Duration::from_secs(30 * 60);
/// Images followed at once; beyond, new ones are not read ahead.
const MAX_IMAGES: usize = 64;
/// Layers read ahead per image at most (a manifest may list more; the rest wait for the
/// runtime).
const MAX_BLOBS: usize = 256;

/// An image the runtime is pulling: what its manifest names, and how to ask for it.
pub(crate) struct ImagePull {
    /// The manifest's digest, which names the image while it is followed.
    pub(crate) manifest: Digest,
    /// The repository (and registry) the manifest came from.
    pub(crate) origin: TaskOrigin,
    /// The runtime's credentials for that repository, as it sent them for the manifest.
    pub(crate) authorization: Option<http::HeaderValue>,
    /// Config and layers, in the manifest's order.
    pub(crate) blobs: Vec<Digest>,
}

/// The images being followed, and how.
pub(crate) struct ReadAheads {
    mode: ReadAhead,
    downloader: Arc<Downloader>,
    followed: Mutex<HashSet<Digest>>,
}

impl ReadAheads {
    pub(crate) fn new(mode: ReadAhead, downloader: Arc<Downloader>) -> ReadAheads {
        ReadAheads {
            mode,
            downloader,
            followed: Mutex::new(HashSet::new()),
        }
    }

    /// Whether manifests are worth reading for it at all.
    pub(crate) fn enabled(&self) -> bool {
        self.mode != ReadAhead::Off
    }

    /// The runtime fetched an image manifest: follows the image's downloads (unless off, already
    /// followed, or too many are).
    pub(crate) fn image_pulled(self: &Arc<Self>, mut image: ImagePull) {
        if !self.enabled() || image.blobs.len() < 2 {
            return;
        }
        {
            let Ok(mut followed) = self.followed.lock() else {
                return;
            };
            if followed.len() >= MAX_IMAGES || !followed.insert(image.manifest) {
                return;
            }
        }
        image.blobs.truncate(MAX_BLOBS);
        tracing::debug!(image = %image.manifest, blobs = image.blobs.len(), "following an image's downloads");
        let this = self.clone();
        tokio::spawn(async move {
            this.follow(&image).await;
            if let Ok(mut followed) = this.followed.lock() {
                followed.remove(&image.manifest);
            }
        });
    }

    async fn follow(&self, image: &ImagePull) {
        let began = Instant::now();
        let mut started: HashSet<Digest> = HashSet::new();
        let mut last_active = Instant::now();
        while began.elapsed() < FOLLOW_AT_MOST {
            tokio::time::sleep(CHECK_EVERY).await;
            let tasks: Vec<Option<Arc<LocalTask>>> =
                image.blobs.iter().map(|d| self.downloader.store.get(d)).collect();
            let now = Instant::now();
            match next_step(self.mode, &image.blobs, &tasks, &started) {
                Step::Done => return,
                Step::Wait { active } => {
                    if active {
                        last_active = now;
                    } else if now.duration_since(last_active) > IDLE_END {
                        return;
                    }
                }
                Step::Start(digest) => {
                    last_active = now;
                    started.insert(digest);
                    self.start(image, digest);
                }
            }
        }
    }

    /// Starts `digest`'s download as the runtime's request would, without a reader.
    fn start(&self, image: &ImagePull, digest: Digest) {
        let request = BlobRequest {
            digest,
            origin: image.origin.clone(),
            authorization: image.authorization.clone(),
        };
        let downloader = self.downloader.clone();
        downloader.metrics.read_ahead_blobs.inc();
        tracing::debug!(%digest, image = %image.manifest, "reading a layer ahead");
        tokio::spawn(async move {
            if let Err(e) = downloader.open(request).await {
                tracing::debug!(%digest, error = %e, "a layer read ahead did not start");
            }
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Every blob is downloading or here.
    Done,
    /// Nothing to start yet; `active`: the runtime is still pulling the image (one of its own
    /// downloads of it is under way).
    Wait {
        active: bool,
    },
    Start(Digest),
}

/// What to do for an image whose blobs' local tasks are `tasks` (`None`: not asked for yet)
/// and of which `started` were read ahead already (their tasks may not exist yet).
fn next_step(
    mode: ReadAhead,
    blobs: &[Digest],
    tasks: &[Option<Arc<LocalTask>>],
    started: &HashSet<Digest>,
) -> Step {
    let downloading = |t: &&Arc<LocalTask>| !t.is_complete() && t.failure().is_none();
    let active: Vec<&Arc<LocalTask>> = tasks.iter().flatten().filter(downloading).collect();
    // The runtime's own downloads (a layer read ahead becomes one when the runtime asks for
    // it): while there are none, it is not pulling the image (or has what else it needs), and
    // nothing more is read ahead.
    let pulling = active.iter().any(|t| t.asked());
    // A read-ahead whose task the edge has not answered yet counts as downloading.
    let pending = blobs
        .iter()
        .zip(tasks)
        .any(|(d, t)| t.is_none() && started.contains(d));
    let Some(next) = blobs
        .iter()
        .zip(tasks)
        .find(|(d, t)| t.is_none() && !started.contains(d))
        .map(|(d, _)| *d)
    else {
        return Step::Done;
    };
    let waiting = Step::Wait { active: pulling };
    // One at a time, and once the edge is about to hold every layer being downloaded.
    let edge_nearly_done = |t: &&Arc<LocalTask>| t.edge_left().is_some_and(|left| left <= LEAD);
    if !pulling || pending || !active.iter().all(edge_nearly_done) {
        return waiting;
    }
    if mode == ReadAhead::Swarm && !active.iter().any(|t| t.in_swarm()) {
        return waiting;
    }
    Step::Start(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PieceStore;
    use damselfly_core::PieceLayout;

    struct Image {
        _dir: tempfile::TempDir,
        store: Arc<PieceStore>,
        blobs: Vec<Digest>,
    }

    fn image(blobs: usize) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path(), 1 << 30).unwrap();
        let blobs = (0..blobs)
            .map(|i| Digest::of(format!("blob {i}").as_bytes()))
            .collect();
        Image {
            _dir: dir,
            store,
            blobs,
        }
    }

    impl Image {
        /// Blob `i` downloads (asked for by the runtime, or read ahead); the download sees the
        /// edge `edge_left` from holding it all, and `in_swarm`.
        fn downloading(
            &self,
            i: usize,
            by_runtime: bool,
            edge_left: Option<Duration>,
            in_swarm: bool,
        ) -> Arc<LocalTask> {
            let layout = PieceLayout::for_size(1 << 20);
            let (task, _) = self.store.get_or_create(&self.blobs[i], layout).unwrap();
            if by_runtime {
                task.note_asked();
            }
            task.note_download(edge_left, in_swarm);
            task
        }

        fn asked(&self, i: usize, edge_left: Option<Duration>, in_swarm: bool) -> Arc<LocalTask> {
            self.downloading(i, true, edge_left, in_swarm)
        }

        fn tasks(&self) -> Vec<Option<Arc<LocalTask>>> {
            self.blobs.iter().map(|d| self.store.get(d)).collect()
        }

        fn step(&self, mode: ReadAhead, started: &HashSet<Digest>) -> Step {
            next_step(mode, &self.blobs, &self.tasks(), started)
        }
    }

    #[test]
    fn the_next_layer_starts_once_the_edge_holds_every_piece_being_pulled() {
        let image = image(5);
        let none = HashSet::new();
        // Nothing asked yet: the runtime has not started the image.
        assert_eq!(image.step(ReadAhead::Swarm, &none), Step::Wait { active: false });
        image.asked(0, Some(Duration::ZERO), true);
        let second = image.asked(1, None, true);
        assert_eq!(
            image.step(ReadAhead::Swarm, &none),
            Step::Wait { active: true },
            "how long the edge needs for one of them is not known yet"
        );
        second.note_download(Some(LEAD * 2), true);
        assert_eq!(
            image.step(ReadAhead::Swarm, &none),
            Step::Wait { active: true },
            "the edge is still a while from holding one of them"
        );
        second.note_download(Some(LEAD), true);
        assert_eq!(image.step(ReadAhead::Swarm, &none), Step::Start(image.blobs[2]));
        // Started, not yet answered by the edge: nothing more until it is.
        let started = HashSet::from([image.blobs[2]]);
        assert_eq!(
            image.step(ReadAhead::Swarm, &started),
            Step::Wait { active: true }
        );
        let ahead = image.downloading(2, false, None, true);
        assert_eq!(
            image.step(ReadAhead::Swarm, &started),
            Step::Wait { active: true }
        );
        ahead.note_download(Some(Duration::ZERO), true);
        assert_eq!(
            image.step(ReadAhead::Swarm, &started),
            Step::Start(image.blobs[3])
        );
        // The runtime's own downloads done: it is not pulling (the layer read ahead is not its
        // own until it asks for it).
        let layout = PieceLayout::for_size(1 << 20);
        for i in 0..2 {
            let (task, _) = image.store.get_or_create(&image.blobs[i], layout).unwrap();
            for piece in 0..layout.count() {
                task.write_piece(piece, bytes::Bytes::from(vec![0; 16]), 0)
                    .unwrap();
            }
        }
        assert_eq!(
            image.step(ReadAhead::Swarm, &started),
            Step::Wait { active: false }
        );
        ahead.note_asked();
        assert_eq!(
            image.step(ReadAhead::Swarm, &started),
            Step::Start(image.blobs[3])
        );
    }

    #[test]
    fn a_lone_host_reads_ahead_only_when_told_to_always() {
        let image = image(3);
        let none = HashSet::new();
        image.asked(0, Some(Duration::ZERO), false);
        assert_eq!(image.step(ReadAhead::Swarm, &none), Step::Wait { active: true });
        assert_eq!(image.step(ReadAhead::Always, &none), Step::Start(image.blobs[1]));
    }

    #[test]
    fn nothing_is_read_ahead_once_the_runtime_stopped_pulling_or_all_started() {
        let image = image(2);
        let none = HashSet::new();
        // The runtime's downloads failed (it goes to the origin): not active.
        let first = image.asked(0, Some(Duration::ZERO), true);
        first.fail("gone".into());
        assert_eq!(image.step(ReadAhead::Always, &none), Step::Wait { active: false });
        image.asked(1, Some(Duration::ZERO), true);
        assert_eq!(image.step(ReadAhead::Always, &none), Step::Done);
    }
}
