//! Readiness polling.
//!
//! Third-party daemons become usable at an unpredictable moment after spawn. Sleeping a fixed
//! amount is either flaky (too short on a loaded CI box) or slow (too long everywhere else), so
//! every wait in this crate polls a cheap probe at a short interval instead.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::time::Instant;

/// Default interval between two probes: short enough that readiness is noticed within a few
/// milliseconds, long enough not to burn a core while a daemon boots.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Outcome of one probe.
#[derive(Debug)]
pub enum Probe<T> {
    /// The condition holds; polling stops and the value is returned.
    Ready(T),
    /// Not yet; the reason is kept so a timeout error can say what was last observed.
    NotYet(String),
}

/// Calls `probe` every [`POLL_INTERVAL`] until it reports [`Probe::Ready`] or `timeout` elapses.
///
/// A probe returning `Err` aborts the wait at once: that is how callers signal a condition that
/// can never become ready (for example the daemon process already exited).
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await? {
            Probe::Ready(value) => return Ok(value),
            Probe::NotYet(reason) => reason,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last observation: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[tokio::test]
    async fn returns_value_once_ready() -> Result<()> {
        let mut calls = 0;
        let value = poll_until("counter", Duration::from_secs(5), || {
            calls += 1;
            let seen = calls;
            async move {
                Ok(if seen >= 3 {
                    Probe::Ready(seen)
                } else {
                    Probe::NotYet(format!("seen {seen}"))
                })
            }
        })
        .await?;
        assert_eq!(value, 3);
        Ok(())
    }

    #[tokio::test]
    async fn timeout_reports_last_observation() {
        let err = poll_until::<(), _, _>("never", Duration::from_millis(60), || async {
            Ok(Probe::NotYet("still booting".into()))
        })
        .await
        .expect_err("must time out");
        let text = err.to_string();
        assert!(text.contains("never") && text.contains("still booting"), "{text}");
    }

    #[tokio::test]
    async fn probe_error_aborts_immediately() {
        let err = poll_until::<(), _, _>("doomed", Duration::from_secs(60), || async {
            Err(anyhow!("process exited"))
        })
        .await
        .expect_err("must fail");
        assert!(err.to_string().contains("process exited"));
    }
}
