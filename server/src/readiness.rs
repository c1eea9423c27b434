//! The readiness latch: a daemon starts *not ready*, is marked ready once its listeners are
//! bound and its dependencies are up, and is not ready again from the moment it starts to drain,
//! so load balancers stop sending it work before it stops accepting.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// A dependency checked on every `/readyz` (Redis reachable, …): `Err` names what is missing.
pub type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Readiness {
    state: Arc<AtomicU8>,
    checks: Arc<Mutex<Vec<(&'static str, Check)>>>,
}

impl Readiness {
    /// Not ready until [`Readiness::set_ready`].
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_ready(&self) {
        // Never back from draining: a shutdown that has begun is not undone.
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.state.load(Ordering::SeqCst) == DRAINING
    }

    /// Adds a dependency that must answer for the daemon to be ready.
    pub fn add_check(&self, name: &'static str, check: Check) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.push((name, check));
        }
    }

    /// `Ok` when ready; otherwise why not (`starting`, `draining`, or the failing dependency).
    pub async fn check(&self) -> Result<(), String> {
        match self.state.load(Ordering::SeqCst) {
            STARTING => return Err("starting".into()),
            DRAINING => return Err("draining".into()),
            _ => {}
        }
        let checks: Vec<(&'static str, Check)> = match self.checks.lock() {
            Ok(c) => c.clone(),
            Err(_) => Vec::new(),
        };
        for (name, check) in checks {
            check().await.map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_not_ready_and_draining_is_final() {
        let r = Readiness::new();
        assert_eq!(r.check().await, Err("starting".into()));
        r.set_ready();
        assert_eq!(r.check().await, Ok(()));
        r.set_draining();
        r.set_ready();
        assert_eq!(r.check().await, Err("draining".into()));
    }

    #[tokio::test]
    async fn a_failing_dependency_is_named() {
        let r = Readiness::new();
        r.set_ready();
        r.add_check(
            "redis",
            Arc::new(|| Box::pin(async { Err("connection refused".into()) })),
        );
        assert_eq!(r.check().await, Err("redis: connection refused".into()));
    }
}
