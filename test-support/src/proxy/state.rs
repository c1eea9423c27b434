//! Counters, request log and pending faults shared by the proxy's connection tasks.
//!
//! Everything is either atomic or behind a short-lived std mutex (never held across an await),
//! so tests can read counters and arm faults from outside while traffic flows.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{Method, StatusCode};

/// One proxied request as seen by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string, if any (containerd sends `ns=<registry>`).
    pub query: Option<String>,
    /// Status returned to the client; 0 while the upstream has not answered yet.
    pub status: u16,
    /// Response body bytes delivered to the client so far.
    pub bytes: u64,
    /// Whether the response body ended normally (false while streaming or after a cut).
    pub completed: bool,
}

/// Live counterpart of [`RequestRecord`], updated by the forwarding task.
#[derive(Debug)]
pub(crate) struct LogEntry {
    method: Method,
    path: String,
    query: Option<String>,
    status: AtomicU16,
    bytes: AtomicU64,
    completed: AtomicBool,
}

impl LogEntry {
    pub(crate) fn set_status(&self, status: StatusCode) {
        self.status.store(status.as_u16(), Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn mark_completed(&self) {
        self.completed.store(true, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestRecord {
        RequestRecord {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            status: self.status.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
        }
    }
}

/// Faults applied to the body of one blob response.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BodyFaults {
    /// Abort the body after this many bytes.
    pub(crate) cut_after: Option<u64>,
    /// Flip every bit of the byte at this body offset.
    pub(crate) corrupt_at: Option<u64>,
}

#[derive(Debug, Default)]
struct Faults {
    body: BodyFaults,
    fail_remaining: u32,
    fail_status: Option<StatusCode>,
}

/// State shared by all connections of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    blob_bytes: AtomicU64,
    blob_gets: AtomicU64,
    /// Bytes per second each blob body is paced to (0: as fast as it comes); stays set.
    blob_rate: AtomicU64,
    log: Mutex<Vec<Arc<LogEntry>>>,
    faults: Mutex<Faults>,
}

/// Locks ignoring poisoning: the protected data stays consistent even if a holder panicked,
/// because every critical section is a single assignment or push.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Appends a log entry for a new request and returns its live handle.
    pub(crate) fn record(&self, method: Method, path: String, query: Option<String>) -> Arc<LogEntry> {
        let entry = Arc::new(LogEntry {
            method,
            path,
            query,
            status: AtomicU16::new(0),
            bytes: AtomicU64::new(0),
            completed: AtomicBool::new(false),
        });
        lock(&self.log).push(Arc::clone(&entry));
        entry
    }

    pub(crate) fn count_blob_get(&self) {
        self.blob_gets.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_blob_bytes(&self, n: u64) {
        self.blob_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn blob_bytes(&self) -> u64 {
        self.blob_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_blob_rate(&self, bytes_per_sec: u64) {
        self.blob_rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    pub(crate) fn blob_rate(&self) -> u64 {
        self.blob_rate.load(Ordering::Relaxed)
    }

    pub(crate) fn blob_gets(&self) -> u64 {
        self.blob_gets.load(Ordering::Relaxed)
    }

    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).iter().map(|entry| entry.snapshot()).collect()
    }

    pub(crate) fn reset_counters(&self) {
        self.blob_bytes.store(0, Ordering::Relaxed);
        self.blob_gets.store(0, Ordering::Relaxed);
        lock(&self.log).clear();
    }

    pub(crate) fn set_cut_after(&self, n: u64) {
        lock(&self.faults).body.cut_after = Some(n);
    }

    pub(crate) fn set_corrupt_at(&self, offset: u64) {
        lock(&self.faults).body.corrupt_at = Some(offset);
    }

    pub(crate) fn set_fail(&self, count: u32, status: StatusCode) {
        let mut faults = lock(&self.faults);
        faults.fail_remaining = count;
        faults.fail_status = Some(status);
    }

    pub(crate) fn clear_faults(&self) {
        *lock(&self.faults) = Faults::default();
    }

    /// Consumes one armed failure, if any, returning the status to answer with.
    pub(crate) fn take_failure(&self) -> Option<StatusCode> {
        let mut faults = lock(&self.faults);
        if faults.fail_remaining == 0 {
            return None;
        }
        faults.fail_remaining -= 1;
        faults.fail_status
    }

    /// Consumes the armed body faults (both apply to the same response).
    pub(crate) fn take_body_faults(&self) -> BodyFaults {
        std::mem::take(&mut lock(&self.faults).body)
    }
}
