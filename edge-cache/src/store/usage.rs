//! Disk accounting: the quota with high/low watermarks, LRU order, and leases that keep a blob
//! from being evicted while anyone reads it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use damselfly_core::{Digest, PieceLayout};

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Plain size of the blob (the sealed file is larger by one tag per piece).
    pub size: u64,
    pub last_access: u64,
}

impl Entry {
    pub fn sealed_size(&self) -> u64 {
        PieceLayout::for_size(self.size).sealed_size()
    }
}

pub struct Usage {
    high: u64,
    low: u64,
    pub entries: HashMap<Digest, Entry>,
    leases: HashMap<Digest, usize>,
    /// Never evicted (an operator's pin); counted against the quota like any other blob.
    pub pinned: HashSet<Digest>,
    pub used: u64,
    reserved: u64,
    /// Bytes of cached manifests: they count against the quota (blobs make room for them) and
    /// are evicted by their own cap (`catalog.rs`), a twentieth of the quota.
    pub metadata: u64,
    dirty: HashSet<Digest>,
}

impl Usage {
    pub fn new(limit: u64, high: f64, low: f64) -> Self {
        Usage {
            high: (limit as f64 * high) as u64,
            low: (limit as f64 * low) as u64,
            entries: HashMap::new(),
            leases: HashMap::new(),
            pinned: HashSet::new(),
            used: 0,
            reserved: 0,
            metadata: 0,
            dirty: HashSet::new(),
        }
    }

    pub fn insert(&mut self, digest: Digest, entry: Entry) {
        if let Some(old) = self.entries.insert(digest, entry) {
            self.used -= old.sealed_size();
        }
        self.used += entry.sealed_size();
    }

    pub fn touch(&mut self, digest: &Digest) {
        if let Some(e) = self.entries.get_mut(digest) {
            e.last_access = now_millis();
            self.dirty.insert(*digest);
        }
    }

    /// Access times changed since the last call, for persisting in one batch.
    pub fn take_dirty(&mut self) -> Vec<(Digest, Entry)> {
        let dirty: Vec<Digest> = self.dirty.drain().collect();
        dirty
            .into_iter()
            .filter_map(|d| self.entries.get(&d).map(|e| (d, *e)))
            .collect()
    }

    pub fn is_leased(&self, digest: &Digest) -> bool {
        self.leases.get(digest).is_some_and(|n| *n > 0)
    }

    /// Reserves room for a new blob of `size` sealed bytes. When usage would pass the high
    /// watermark, least-recently-used blobs nobody is reading are chosen for eviction until it
    /// falls to the low watermark; they are returned for the caller to delete. Blobs in use, and
    /// pinned ones, are never chosen, so a quota smaller than what is being read (or pinned) at
    /// once is exceeded rather than breaking readers.
    pub fn admit(&mut self, size: u64) -> Vec<(Digest, Entry)> {
        self.reserved += size;
        if self.footprint() <= self.high {
            return Vec::new();
        }
        let mut candidates: Vec<(Digest, Entry)> = self
            .entries
            .iter()
            .filter(|(d, _)| !self.is_leased(d) && !self.pinned.contains(*d))
            .map(|(d, e)| (*d, *e))
            .collect();
        candidates.sort_by_key(|(_, e)| e.last_access);
        let mut evicted = Vec::new();
        for (digest, entry) in candidates {
            if self.footprint() <= self.low {
                break;
            }
            self.entries.remove(&digest);
            self.dirty.remove(&digest);
            self.used -= entry.sealed_size();
            evicted.push((digest, entry));
        }
        evicted
    }

    /// Forgets a blob (its files are deleted by the caller).
    pub fn remove(&mut self, digest: &Digest) -> Option<Entry> {
        let entry = self.entries.remove(digest)?;
        self.dirty.remove(digest);
        self.used -= entry.sealed_size();
        Some(entry)
    }

    pub fn release_reservation(&mut self, size: u64) {
        self.reserved = self.reserved.saturating_sub(size);
    }

    pub fn footprint(&self) -> u64 {
        self.used + self.reserved + self.metadata
    }
}

/// Keeps a blob from eviction while it is alive.
pub struct Lease {
    usage: Arc<Mutex<Usage>>,
    digest: Digest,
}

impl Lease {
    /// Must be called with the lock held (`usage` is that guard's target).
    pub fn acquire(shared: &Arc<Mutex<Usage>>, usage: &mut Usage, digest: Digest) -> Lease {
        *usage.leases.entry(digest).or_default() += 1;
        Lease {
            usage: shared.clone(),
            digest,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut usage) = self.usage.lock() {
            if let Some(n) = usage.leases.get_mut(&self.digest) {
                *n -= 1;
                if *n == 0 {
                    usage.leases.remove(&self.digest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn evicts_lru_down_to_low_watermark_but_never_leased() {
        // Entries of 9 plain bytes occupy 25 sealed bytes (one 16-byte tag).
        let shared = Arc::new(Mutex::new(Usage::new(100, 0.9, 0.5)));
        let mut usage = shared.lock().unwrap();
        for (i, access) in [(1u8, 10u64), (2, 5), (3, 20)] {
            usage.insert(
                d(i),
                Entry {
                    size: 9,
                    last_access: access,
                },
            );
        }
        // d(2) is the oldest but leased: d(1) and then d(3) go instead.
        let lease = Lease::acquire(&shared, &mut usage, d(2));
        let evicted: Vec<Digest> = usage.admit(20).into_iter().map(|(d, _)| d).collect();
        assert_eq!(evicted, vec![d(1), d(3)]);
        assert_eq!(usage.footprint(), 45);
        drop(usage);
        drop(lease);
        assert!(!shared.lock().unwrap().is_leased(&d(2)));
    }

    #[test]
    fn a_pinned_blob_is_never_chosen() {
        let mut usage = Usage::new(100, 0.9, 0.5);
        for (i, access) in [(1u8, 10u64), (2, 20)] {
            usage.insert(
                d(i),
                Entry {
                    size: 9,
                    last_access: access,
                },
            );
        }
        usage.pinned.insert(d(1));
        let evicted: Vec<Digest> = usage.admit(50).into_iter().map(|(d, _)| d).collect();
        assert_eq!(
            evicted,
            vec![d(2)],
            "the newer blob goes, the pinned older one stays"
        );
    }

    #[test]
    fn no_eviction_below_high_watermark() {
        let mut usage = Usage::new(100, 0.9, 0.5);
        usage.insert(
            d(1),
            Entry {
                size: 34,
                last_access: 1,
            },
        );
        assert!(usage.admit(40).is_empty());
        usage.release_reservation(40);
        assert_eq!(usage.footprint(), 50);
    }
}
