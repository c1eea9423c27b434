//! Send progress: a reader that stops reading must not hold what others need.
//!
//! Two bounds, because they protect different things:
//! - [`WatchedPermit`]: a send permit (the edge's piece sends, an agent's upload slots) is
//!   released when its body has not moved for a short while, so a few stalled readers cannot
//!   freeze every other transfer waiting for a permit;
//! - [`ProgressIo`]: a connection whose writes stay blocked while it takes less than a minimum
//!   rate for longer than a grace period is closed, so stalled readers do not pile up.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// A semaphore permit that is given back when the send holding it makes no progress for
/// `stall`, however long the (stalled) send itself goes on.
pub struct WatchedPermit {
    shared: Arc<Watched>,
    watchdog: tokio::task::JoinHandle<()>,
}

struct Watched {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// Milliseconds since `started` of the last progress.
    last_progress_ms: AtomicU64,
    started: Instant,
}

impl WatchedPermit {
    /// `on_release` runs if the permit is taken away for lack of progress (a metric, a log).
    pub fn new(
        permit: OwnedSemaphorePermit,
        stall: Duration,
        on_release: impl FnOnce() + Send + 'static,
    ) -> Self {
        let shared = Arc::new(Watched {
            permit: Mutex::new(Some(permit)),
            last_progress_ms: AtomicU64::new(0),
            started: Instant::now(),
        });
        let watched = shared.clone();
        let watchdog = tokio::spawn(async move {
            loop {
                let last =
                    watched.started + Duration::from_millis(watched.last_progress_ms.load(Ordering::Relaxed));
                let deadline = last + stall;
                if Instant::now() >= deadline {
                    let taken = watched.permit.lock().map(|mut p| p.take()).unwrap_or(None);
                    if taken.is_some() {
                        on_release();
                    }
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            }
        });
        WatchedPermit { shared, watchdog }
    }

    /// The send moved (a chunk was taken to be written).
    pub fn progress(&self) {
        let elapsed = self.shared.started.elapsed().as_millis() as u64;
        self.shared.last_progress_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Whether the permit is still held.
    pub fn held(&self) -> bool {
        self.shared.permit.lock().map(|p| p.is_some()).unwrap_or(false)
    }
}

impl Drop for WatchedPermit {
    fn drop(&mut self) {
        // Given back now, not whenever the aborted watchdog is dropped.
        if let Ok(mut permit) = self.shared.permit.lock() {
            permit.take();
        }
        self.watchdog.abort();
    }
}

/// The minimum a reader must take while the server is waiting on it.
#[derive(Clone, Copy, Debug)]
pub struct SendProgress {
    /// Bytes per second.
    pub min_rate: u64,
    /// How long a reader may stay under `min_rate` while writes are blocked.
    pub grace: Duration,
}

/// A connection that fails its writes once the peer has taken less than `min_rate` for `grace`
/// while writes were blocked on it. A server with nothing to send is never penalised: only time
/// spent blocked on the peer counts.
pub struct ProgressIo<I> {
    inner: I,
    rule: SendProgress,
    /// Start of the current measuring window (while blocked), and bytes written since.
    window: Option<(Instant, u64)>,
    timer: Pin<Box<Sleep>>,
}

impl<I> ProgressIo<I> {
    pub fn new(inner: I, rule: SendProgress) -> Self {
        ProgressIo {
            inner,
            rule,
            window: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn written(&mut self, n: usize) {
        if let Some((_, bytes)) = &mut self.window {
            *bytes += n as u64;
        }
    }

    /// What a write gave: bytes it wrote are counted, and a blocked one is timed.
    fn sent(&mut self, cx: &mut Context<'_>, sent: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match sent {
            Poll::Ready(Ok(n)) => {
                self.written(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self
                .blocked(cx)
                .map_or_else(|e| Poll::Ready(Err(e)), |()| Poll::Pending),
            other => other,
        }
    }

    /// Called when a write is blocked: `Err` once the reader has been too slow for too long;
    /// otherwise makes sure the task wakes at the end of the window.
    fn blocked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let now = Instant::now();
        let (start, bytes) = *self.window.get_or_insert((now, 0));
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= self.rule.grace {
            let owed = (self.rule.min_rate as f64 * elapsed.as_secs_f64()) as u64;
            if bytes < owed {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer took {bytes} bytes in {elapsed:?} while the server waited on it"),
                ));
            }
            // Fast enough over this window: measure the next one.
            self.window = Some((now, 0));
        }
        let (start, _) = self.window.unwrap_or((now, 0));
        self.timer.as_mut().reset(start + self.rule.grace);
        let _ = self.timer.as_mut().poll(cx);
        Ok(())
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ProgressIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ProgressIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let sent = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.sent(cx, sent)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let sent = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.sent(cx, sent)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => match self.blocked(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test(start_paused = true)]
    async fn a_permit_without_progress_is_given_back_and_one_with_progress_is_kept() {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let released = Arc::new(AtomicBool::new(false));
        let flag = released.clone();
        let watched = WatchedPermit::new(
            permits.clone().acquire_owned().await.unwrap(),
            Duration::from_secs(1),
            move || flag.store(true, Ordering::SeqCst),
        );
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            watched.progress();
        }
        assert!(watched.held(), "a send that moves keeps its permit");
        assert_eq!(permits.available_permits(), 0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!watched.held());
        assert!(released.load(Ordering::SeqCst));
        assert_eq!(
            permits.available_permits(),
            1,
            "the stalled send's permit is back"
        );
        drop(watched);
        assert_eq!(permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_cut_after_the_grace_period() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(1024);
        let rule = SendProgress {
            min_rate: 1024,
            grace: Duration::from_millis(300),
        };
        let mut io = ProgressIo::new(server, rule);
        let started = std::time::Instant::now();
        let chunk = vec![0u8; 4096];
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        drop(client);
    }

    #[tokio::test]
    async fn a_reader_keeping_up_is_never_cut() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let rule = SendProgress {
            min_rate: 1024,
            grace: Duration::from_millis(100),
        };
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut total = 0;
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut io = ProgressIo::new(server, rule);
        for _ in 0..20 {
            io.write_all(&[1u8; 4096]).await.unwrap();
        }
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 20 * 4096);
    }
}
