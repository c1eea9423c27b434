//! How often one agent may write to the scheduler: a token bucket per host id, so one agent (or
//! one stolen certificate) cannot flood the edge or the shared Redis with announcements.
//!
//! The buckets live in a bounded cache: in a lab without certificates host ids are whatever
//! callers send, and a flood of new ones must evict old buckets, not grow memory (an evicted
//! bucket only starts full again).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{EdgeError, EdgeResult};

/// Host ids remembered at once.
const MAX_HOSTS: u64 = 100_000;

pub struct AnnouncementRate {
    per_sec: f64,
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl AnnouncementRate {
    /// `per_sec` writes a second per host, with bursts of up to twice that.
    pub fn new(per_sec: u32) -> Self {
        AnnouncementRate {
            per_sec: f64::from(per_sec.max(1)),
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_HOSTS)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }

    pub fn admit(&self, host_id: &str) -> EdgeResult<()> {
        let burst = 2.0 * self.per_sec;
        let bucket = self.buckets.get_with(host_id.to_string(), || {
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }))
        });
        let mut bucket = bucket.lock().map_err(|e| EdgeError::Internal(e.to_string()))?;
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(EdgeError::RateLimited(format!(
                "{host_id} writes to the scheduler more than {} times a second",
                self.per_sec
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_host() {
        let rate = AnnouncementRate::new(10);
        for _ in 0..20 {
            rate.admit("a").unwrap();
        }
        assert!(matches!(rate.admit("a"), Err(EdgeError::RateLimited(_))));
        rate.admit("b").unwrap();
        std::thread::sleep(Duration::from_millis(250));
        rate.admit("a").unwrap();
    }
}
