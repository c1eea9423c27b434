//! One upstream transfer of one blob: cut into pieces, hashed, sealed and written as the bytes
//! arrive, resumed with `Range` when the upstream connection breaks, and published only once the
//! whole blob's digest matches.
//!
//! Pieces become readable one by one while the transfer runs (readers are streamed the blob as it
//! arrives), except the last: it is released only after the digest check, so a corrupt upstream
//! can never deliver a complete-looking blob to anyone, and nothing corrupt is ever published.
//! (A plain file fetched without a known digest has nothing to be checked against but its
//! announced length; its pieces are still sealed and hashed, so agents verify every byte.)

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Buf;
use damselfly_core::{
    Digest, PieceHash, PieceLayout, PieceTable, RepositoryName, Sha256Stream, TaskKey, TAG_LEN,
};
use damselfly_registry::Request;
use futures::StreamExt;
use http::{HeaderValue, StatusCode};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::blob::{HashLists, IngestState, Progress, StoredTable};
use super::usage::{now_millis, Entry};
use super::BlobStore;
use crate::chain::Parents;
use crate::cluster::{Cluster, OwnerRequest};
use crate::compression::{BlobCompression, Compression};
use crate::error::{EdgeError, EdgeResult};
use crate::upstream::Upstream;

/// Where a transfer fetches its bytes.
#[derive(Clone)]
pub enum BlobSource {
    /// A registry blob: the repository and credentials of the request that started it (already
    /// checked against the upstream). The task is the blob's digest, verified before publication.
    Registry {
        upstream: Arc<Upstream>,
        repo: RepositoryName,
        authorization: Option<HeaderValue>,
        /// The region's cluster, when the blob may come from its owner edge (not for a request
        /// that another edge of the region made: that one goes on to the parents or the origin).
        cluster: Option<Arc<Cluster>>,
        /// Edges of other regions asked before the origin, and the regions the request had
        /// passed through.
        parents: Option<Arc<Parents>>,
        passed: Vec<String>,
    },
    /// A plain file under an allowed URL prefix; the task is named by its URL. Its content is
    /// verified against `expected` when the caller named a digest.
    File {
        http: reqwest::Client,
        url: String,
        expected: Option<Digest>,
        /// The version the task was named after: every request is made conditional on it,
        /// so a file that changes mid-transfer fails the transfer rather than mixing versions.
        validators: FileValidators,
    },
}

/// What a file server said names a file's version.
#[derive(Clone, Debug, Default)]
pub struct FileValidators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub length: Option<u64>,
}

impl FileValidators {
    /// A response of another version (the file changed since the task was named) fails the
    /// transfer: one task never mixes two contents, and its key never seals both.
    fn check(&self, url: &str, response: &reqwest::Response) -> EdgeResult<()> {
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        let changed =
            |known: &Option<String>, now: Option<&str>| matches!((known, now), (Some(k), Some(n)) if k != n);
        let length = match response.status() {
            StatusCode::OK => response.content_length(),
            _ => header(http::header::CONTENT_RANGE)
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, total)| total.parse().ok()),
        };
        if changed(&self.etag, header(http::header::ETAG))
            || changed(&self.last_modified, header(http::header::LAST_MODIFIED))
            || matches!((self.length, length), (Some(k), Some(n)) if k != n)
        {
            return Err(EdgeError::IngestFailed(format!(
                "{url} changed while it was fetched; the next request names its new version"
            )));
        }
        Ok(())
    }
}

impl BlobSource {
    /// The content from byte `from` on (a `Range` request when `from` > 0).
    pub(crate) async fn fetch(&self, task: &Digest, from: u64) -> EdgeResult<reqwest::Response> {
        let range = (from > 0)
            .then(|| HeaderValue::from_str(&format!("bytes={from}-")).ok())
            .flatten();
        match self {
            BlobSource::Registry {
                upstream,
                repo,
                authorization,
                cluster,
                parents,
                passed,
            } => {
                // From the blob's owner if another edge of the region owns it, else from a
                // parent region, and from the origin when none of them can serve.
                let blob = OwnerRequest {
                    digest: task,
                    repo,
                    registry: upstream.registry(),
                    authorization: authorization.as_ref(),
                    passed,
                };
                if let Some(cluster) = cluster {
                    if let Some(response) = cluster.fetch_owned(&blob, from).await {
                        return Ok(response);
                    }
                }
                if let Some(parents) = parents {
                    if let Some(response) = parents.fetch(&blob, passed, from).await {
                        return Ok(response);
                    }
                }
                let request = Request {
                    scope: Some(format!("repository:{repo}:pull")),
                    authorization: authorization.as_ref(),
                    range,
                    streaming: true,
                    ..Request::get(format!("/v2/{repo}/blobs/{task}"))
                };
                upstream.send(request).await
            }
            BlobSource::File {
                http,
                url,
                validators,
                ..
            } => {
                let mut request = http.get(url);
                if let Some(v) = range {
                    request = request.header(http::header::RANGE, v);
                }

                let response = request
                    .send()
                    .await
                    .map_err(|e| EdgeError::UpstreamUnavailable(format!("{url}: {e}")))?;
                validators.check(url, &response)?;
                Ok(response)
            }
        }
    }

    /// What compression rules match (`CompressionConfig::rules`): `<registry>/<repository>`
    /// for a registry blob, the URL for a file.
    fn name(&self) -> String {
        match self {
            BlobSource::Registry { upstream, repo, .. } => format!("{}/{repo}", upstream.registry()),
            BlobSource::File { url, .. } => url.clone(),
        }
    }

    /// The sha256 the whole content must have before it is published, when known.
    fn expected(&self, task: &Digest) -> Option<Digest> {
        match self {
            BlobSource::Registry { .. } => Some(*task),
            BlobSource::File { expected, .. } => *expected,
        }
    }
}

pub(super) struct Ingest {
    pub digest: Digest,
    pub key: TaskKey,
    pub file: Arc<File>,
    path: PathBuf,
    pub progress: watch::Sender<Progress>,
    pub hashes: Arc<Mutex<HashLists>>,
}

impl Ingest {
    pub fn create(store: &BlobStore, digest: Digest) -> EdgeResult<Arc<Ingest>> {
        let path = store.root.join("ingest").join(format!("{}.sealed", digest.hex()));
        let file = damselfly_core::piece::create_pieces_file(&path)
            .map_err(|e| EdgeError::Internal(format!("create {}: {e}", path.display())))?;
        let (progress, _) = watch::channel(Progress {
            layout: None,
            sealed: 0,
            state: IngestState::Running,
        });
        Ok(Arc::new(Ingest {
            digest,
            key: store.secret.task_key(&digest),
            file: Arc::new(file),
            path,
            progress,
            hashes: Arc::new(Mutex::new(HashLists::default())),
        }))
    }
}

/// Runs a transfer to its end and settles it: published and readable from disk, or failed,
/// removed, and reported to every waiting reader.
pub(super) async fn run(store: Arc<BlobStore>, ingest: Arc<Ingest>, source: BlobSource) {
    store.metrics.ingests_in_flight.inc();
    let mut reserved = 0u64;
    // A blob larger than the whole cache is streamed through to its readers, verified, and not
    // stored: keeping it would evict everything else and still not fit.
    let mut keep = true;
    let compression = Arc::new(store.options.compression.for_blob(&source.name()));
    let mut outcome = transfer(&store, &ingest, &source, &compression, &mut reserved, &mut keep).await;
    if keep {
        if let Ok(table) = outcome {
            outcome = publish(&store, &ingest, table).await;
        }
    }
    {
        // Settled under the in-flight lock, so `BlobStore::open` never misses the blob between
        // "no longer in flight" and "complete on disk".
        let in_flight = store.in_flight.lock();
        if let Ok(mut usage) = store.usage.lock() {
            usage.release_reservation(reserved);
            if let (Ok(table), true) = (&outcome, keep) {
                let entry = Entry {
                    size: table.layout.size,
                    last_access: now_millis(),
                };
                usage.insert(ingest.digest, entry);
            }
        }
        if outcome.is_ok() && !keep {
            // Readers hold the file open and finish from it; nobody new finds it.
            let _ = std::fs::remove_file(&ingest.path);
        }
        match &outcome {
            Ok(table) => {
                ingest.progress.send_modify(|p| {
                    p.sealed = table.layout.count();
                    p.state = IngestState::Complete;
                });
            }
            Err(e) => {
                let _ = std::fs::remove_file(&ingest.path);
                store.remember_failure(ingest.digest, e.to_string());
                ingest
                    .progress
                    .send_modify(|p| p.state = IngestState::Failed(e.to_string()));
            }
        }
        if let Ok(mut map) = in_flight {
            map.remove(&ingest.digest);
        }
    }
    store.refresh_used_metric();
    store.metrics.ingests_in_flight.dec();
    match outcome {
        Ok(table) if keep => tracing::info!(digest = %ingest.digest, size = table.layout.size, "blob cached"),
        Ok(table) => {
            store.metrics.uncached_blobs.inc();
            tracing::warn!(
                digest = %ingest.digest,
                size = table.layout.size,
                quota = store.options.quota,
                "blob larger than the cache quota streamed through, verified, and not stored"
            );
        }
        Err(e) => {
            store.metrics.ingest_failures.inc();
            tracing::warn!(digest = %ingest.digest, error = %e, "blob transfer failed; nothing was cached");
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100 * (1 << attempt.min(6)));
    base.min(Duration::from_secs(5)) + Duration::from_millis(rand::thread_rng().gen_range(0..100))
}

/// Fetches, cuts, hashes, seals and writes the whole blob; returns its piece table.
async fn transfer(
    store: &BlobStore,
    ingest: &Arc<Ingest>,
    source: &BlobSource,
    compression: &Arc<BlobCompression>,
    reserved: &mut u64,
    keep: &mut bool,
) -> EdgeResult<PieceTable> {
    let digest = ingest.digest;
    let expected = source.expected(&digest);
    let mut layout: Option<PieceLayout> = None;
    let mut received = 0u64;
    let mut whole = Sha256Stream::new();
    let mut piece = Vec::new();
    let mut next_piece = 0u64;
    let mut pending: Option<JoinHandle<EdgeResult<()>>> = None;
    let mut failures = 0u32;
    loop {
        if failures > store.options.resume_attempts {
            return Err(EdgeError::IngestFailed(format!(
                "gave up after {failures} failed attempts"
            )));
        }
        if failures > 0 {
            tokio::time::sleep(backoff(failures)).await;
        }
        // Bounded like the body's silences: an upstream that accepts the request and never
        // answers would otherwise hold the transfer, and every reader joining it, for ever.
        let answer = tokio::time::timeout(store.options.response_timeout, source.fetch(&digest, received));
        let response = match answer.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(%digest, error = %e, "upstream unreachable, retrying");
                failures += 1;
                continue;
            }
            Err(_) => {
                tracing::warn!(%digest, timeout_secs = store.options.response_timeout.as_secs(), "upstream sent no answer in time, retrying");
                failures += 1;
                continue;
            }
        };
        let status = response.status();
        let mut skip = 0u64;
        match (layout, status) {
            (None, StatusCode::OK) => {
                let size = response.content_length().ok_or_else(|| {
                    EdgeError::IngestFailed("upstream sent a blob without Content-Length".into())
                })?;
                let l = PieceLayout::try_for_size(size)
                    .map_err(|e| EdgeError::IngestFailed(format!("upstream Content-Length: {e}")))?;
                if l.sealed_size() > store.options.quota {
                    *keep = false;
                } else {
                    store.admit(l.sealed_size())?;
                    *reserved = l.sealed_size();
                }
                ingest
                    .file
                    .set_len(l.sealed_size())
                    .map_err(|e| EdgeError::Internal(format!("allocate: {e}")))?;
                piece.reserve(l.piece_length as usize + TAG_LEN);
                layout = Some(l);
                ingest.progress.send_modify(|p| p.layout = Some(l));
            }
            (Some(_), StatusCode::PARTIAL_CONTENT) => {
                let start = response
                    .headers()
                    .get(http::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(damselfly_core::ContentRange::parse)
                    .map(|r| r.start);
                if start != Some(received) {
                    return Err(EdgeError::IngestFailed(format!(
                        "upstream resumed at {start:?}, not {received}"
                    )));
                }
                store.metrics.upstream_resumes.inc();
            }
            // Without a digest, a file resent from the start may have changed in between: the
            // two halves would be spliced into something that never existed.
            (Some(_), StatusCode::OK) if expected.is_none() => {
                return Err(EdgeError::IngestFailed(
                    "the server ignored Range on resume and the file has no digest to verify a restart"
                        .into(),
                ));
            }
            // The upstream ignored Range: read from the start and drop what we already have.
            (Some(_), StatusCode::OK) => {
                skip = received;
                store.metrics.upstream_resumes.inc();
            }
            (_, s) if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                tracing::warn!(%digest, status = %s, "upstream failed, retrying");
                failures += 1;
                continue;
            }
            (_, s) => return Err(EdgeError::IngestFailed(format!("upstream answered {s}"))),
        }
        let Some(l) = layout else { continue };
        let mut body = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(store.options.idle_timeout, body.next()).await;
            let mut chunk = match next {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::warn!(%digest, received, error = %e, "upstream transfer broke, resuming");
                    break;
                }
                Err(_) => {
                    tracing::warn!(%digest, received, "upstream transfer stalled, resuming");
                    break;
                }
            };
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                chunk.advance(n as usize);
                skip -= n;
            }
            if received + chunk.len() as u64 > l.size {
                return Err(EdgeError::IngestFailed(
                    "upstream sent more bytes than it announced".into(),
                ));
            }
            store.metrics.upstream_bytes.inc_by(chunk.len() as u64);
            if expected.is_some() {
                // A plain file without a digest has nothing to be compared with: not hashed.
                whole.update(&chunk);
            }
            received += chunk.len() as u64;
            let mut data = &chunk[..];
            while !data.is_empty() {
                let want = l.plain_len(next_piece) as usize - piece.len();
                let take = want.min(data.len());
                piece.extend_from_slice(&data[..take]);
                data = &data[take..];
                if piece.len() as u64 == l.plain_len(next_piece) {
                    let is_last = next_piece + 1 == l.count();
                    if is_last && expected.is_some_and(|e| whole.clone().finish() != e) {
                        return Err(EdgeError::IngestFailed(
                            "upstream bytes do not match the digest".into(),
                        ));
                    }
                    // One piece is sealed in the background while the next one arrives.
                    if let Some(previous) = pending.take() {
                        join(previous).await?;
                    }
                    let full =
                        std::mem::replace(&mut piece, Vec::with_capacity(l.piece_length as usize + TAG_LEN));
                    let sealing = Sealing {
                        ingest: ingest.clone(),
                        policy: store.options.compression.clone(),
                        blob: compression.clone(),
                    };
                    pending = Some(sealing.seal_and_write(l, next_piece, full, is_last));
                    next_piece += 1;
                }
            }
        }
        if received == l.size {
            break;
        }
        failures += 1;
    }
    if let Some(last) = pending.take() {
        join(last).await?;
    }
    let layout = layout.ok_or_else(|| EdgeError::IngestFailed("no layout".into()))?;
    if layout.count() == 0 && expected.is_some_and(|e| whole.finish() != e) {
        return Err(EdgeError::IngestFailed(
            "upstream bytes do not match the digest".into(),
        ));
    }
    let (pieces, zstd) = ingest
        .hashes
        .lock()
        .map(|h| (h.sha256.clone(), h.zstd.clone()))
        .unwrap_or_default();
    Ok(PieceTable {
        digest,
        layout,
        hash: PieceHash::Sha256,
        pieces,
        zstd,
    })
}

async fn join(task: JoinHandle<EdgeResult<()>>) -> EdgeResult<()> {
    task.await
        .map_err(|e| EdgeError::Internal(format!("seal task: {e}")))?
}

/// What sealing a transfer's pieces needs.
struct Sealing {
    ingest: Arc<Ingest>,
    policy: Arc<Compression>,
    blob: Arc<BlobCompression>,
}

impl Sealing {
    /// Compresses (when it pays), seals and hashes one piece, writes it at its offset, and
    /// makes it readable (unless it is the last piece, which waits for publication). A
    /// compressed piece takes the start of its slot; the rest of the slot is never written, so
    /// it stays a hole in the sparse file and costs no disk.
    fn seal_and_write(
        self,
        layout: PieceLayout,
        index: u64,
        piece: Vec<u8>,
        is_last: bool,
    ) -> JoinHandle<EdgeResult<()>> {
        tokio::task::spawn_blocking(move || {
            let Sealing { ingest, policy, blob } = self;
            let sealed = policy.seal(&blob, &ingest.key, index, piece);
            ingest
                .file
                .write_all_at(&sealed.bytes, layout.sealed_offset(index))
                .map_err(|e| EdgeError::Internal(format!("write piece {index}: {e}")))?;
            // The table proves sealed bytes: receivers hash what they receive once, store it as
            // it is, and decrypt it once when they stream it.
            if let Ok(mut hashes) = ingest.hashes.lock() {
                hashes.push(&sealed.bytes, sealed.compressed);
            }
            if !is_last {
                ingest.progress.send_modify(|p| p.sealed = index + 1);
            }
            Ok(())
        })
    }
}

/// Makes a verified blob durable and visible: data synced, table written, then the sealed
/// file renamed into `blobs/` (the rename is the commit point), then indexed.
async fn publish(store: &Arc<BlobStore>, ingest: &Arc<Ingest>, table: PieceTable) -> EdgeResult<PieceTable> {
    let (store2, ingest2) = (store.clone(), ingest.clone());
    tokio::task::spawn_blocking(move || -> EdgeResult<PieceTable> {
        let fail = |what: &str, e: std::io::Error| EdgeError::Internal(format!("publish {what}: {e}"));
        ingest2.file.sync_data().map_err(|e| fail("sync", e))?;
        let digest = ingest2.digest;
        let table_path = store2.table_path(&digest);
        let tmp = table_path.with_extension("table.tmp");
        let stored = StoredTable {
            table,
            blake3: ingest2
                .hashes
                .lock()
                .map(|h| h.blake3.clone())
                .unwrap_or_default(),
        };
        let json = serde_json::to_vec(&stored).map_err(|e| EdgeError::Internal(format!("table: {e}")))?;
        let table = stored.table;
        std::fs::write(&tmp, json).map_err(|e| fail("table", e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail("table sync", e))?;
        std::fs::rename(&tmp, &table_path).map_err(|e| fail("table rename", e))?;
        store2.forget_table(&digest);
        std::fs::rename(&ingest2.path, store2.sealed_path(&digest)).map_err(|e| fail("rename", e))?;
        File::open(store2.root.join("blobs"))
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("dir sync", e))?;
        let row = (digest.hex(), table.layout.size, now_millis());
        store2
            .index
            .put_blobs(&[row])
            .map_err(|e| EdgeError::Internal(format!("index: {e}")))?;
        Ok(table)
    })
    .await
    .map_err(|e| EdgeError::Internal(format!("publish task: {e}")))?
}
