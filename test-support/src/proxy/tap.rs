//! The response-body wrapper that counts bytes and injects body faults.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};

use super::state::{BodyFaults, LogEntry, Shared};

/// Pause between sending the last bytes before a cut and aborting the connection, so hyper
/// flushes exactly the promised prefix instead of discarding buffered data with the socket.
const CUT_FLUSH_DELAY: Duration = Duration::from_millis(50);

/// Upstream body chunks.
pub(crate) type Upstream = BoxStream<'static, Result<Bytes, reqwest::Error>>;

enum Phase {
    Streaming,
    /// Exactly `cut_after` bytes were sent; cut if the upstream has more.
    AtCutPoint,
    Cutting,
    Done,
}

struct Tap {
    upstream: Upstream,
    faults: BodyFaults,
    offset: u64,
    phase: Phase,
    /// Body length announced by the upstream, if any. Reaching it marks the request completed
    /// when the last chunk is handed out, not later when the upstream stream is polled to its
    /// end, so the log is already accurate once the client has read the whole body.
    expected_len: Option<u64>,
    entry: Arc<LogEntry>,
    /// Set for blob GETs, whose bytes feed the blob counter (and are paced to its rate).
    blob_counter: Option<Arc<Shared>>,
    started: Instant,
}

/// Wraps `upstream`, accounting every delivered byte to `entry` (and to the blob counter when
/// `blob_counter` is given) and applying `faults`.
pub(crate) fn tap(
    upstream: Upstream,
    expected_len: Option<u64>,
    faults: BodyFaults,
    entry: Arc<LogEntry>,
    blob_counter: Option<Arc<Shared>>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let state = Tap {
        upstream,
        faults,
        offset: 0,
        phase: Phase::Streaming,
        expected_len,
        entry,
        blob_counter,
        started: Instant::now(),
    };
    futures::stream::unfold(state, |mut tap| async move {
        let item = tap.next_item().await?;
        Some((item, tap))
    })
}

impl Tap {
    async fn next_item(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Cutting => {
                    tokio::time::sleep(CUT_FLUSH_DELAY).await;
                    self.phase = Phase::Done;
                    return Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "injected fault: response body cut",
                    )));
                }
                Phase::Streaming | Phase::AtCutPoint => {}
            }
            let chunk = match self.upstream.next().await {
                None => {
                    self.phase = Phase::Done;
                    self.entry.mark_completed();
                    return None;
                }
                Some(Err(err)) => {
                    self.phase = Phase::Done;
                    return Some(Err(std::io::Error::other(err)));
                }
                Some(Ok(chunk)) if matches!(self.phase, Phase::AtCutPoint) => {
                    drop(chunk);
                    self.phase = Phase::Cutting;
                    continue;
                }
                Some(Ok(chunk)) => chunk,
            };
            let chunk = self.apply(chunk);
            if chunk.is_empty() {
                continue;
            }
            let len = chunk.len() as u64;
            self.offset += len;
            self.entry.add_bytes(len);
            if let Some(shared) = &self.blob_counter {
                shared.add_blob_bytes(len);
                let rate = shared.blob_rate();
                if rate > 0 {
                    // Hands this chunk out when the body's average falls back to the rate.
                    let due = Duration::from_secs_f64(self.offset as f64 / rate as f64);
                    tokio::time::sleep_until(self.started + due).await;
                }
            }
            if !matches!(self.phase, Phase::Cutting) && Some(self.offset) == self.expected_len {
                self.entry.mark_completed();
            }
            return Some(Ok(chunk));
        }
    }

    /// Applies corruption and truncation to a chunk starting at `self.offset`.
    fn apply(&mut self, mut chunk: Bytes) -> Bytes {
        let start = self.offset;
        let end = start + chunk.len() as u64;
        if let Some(pos) = self.faults.corrupt_at.filter(|pos| (start..end).contains(pos)) {
            let mut owned = BytesMut::from(&chunk[..]);
            // In range by the filter above, so the index fits in usize.
            let index = usize::try_from(pos - start).unwrap_or(0);
            owned[index] ^= 0xff;
            chunk = owned.freeze();
            self.faults.corrupt_at = None;
        }
        if let Some(limit) = self.faults.cut_after {
            if end > limit {
                chunk.truncate(usize::try_from(limit.saturating_sub(start)).unwrap_or(0));
                self.phase = Phase::Cutting;
            } else if end == limit {
                self.phase = Phase::AtCutPoint;
            }
        }
        chunk
    }
}
