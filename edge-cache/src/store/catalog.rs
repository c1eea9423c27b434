//! Bounds on what clients' requests add besides blobs: cached manifests and tag mappings.
//!
//! Each manifest and tag a client asks for becomes a file or an index row. Without a bound, a
//! caller walking an upstream's tags (or pushing many small images) grows them until the disk or
//! the index is full. They are counted here and the least recently used go first: a manifest
//! evicted is fetched again on its next request, a tag evicted is asked of the upstream again,
//! so eviction costs a round trip and never a wrong answer.

use std::collections::HashMap;
use std::hash::Hash;

/// Evicting down to this share of a cap leaves room for many inserts before the next sort.
const AFTER_EVICTION: f64 = 0.9;

/// Entries with a cost (bytes, or 1 for a row) and a last access, under a count and a cost cap.
pub(super) struct Lru<K> {
    entries: HashMap<K, (u64, u64)>,
    cost: u64,
    max_entries: usize,
    max_cost: u64,
}

impl<K: Clone + Eq + Hash> Lru<K> {
    pub(super) fn new(max_entries: usize, max_cost: u64) -> Self {
        Lru {
            entries: HashMap::new(),
            cost: 0,
            max_entries,
            max_cost,
        }
    }

    /// Records `key` (replacing an earlier entry) and returns what must go to stay within the
    /// caps, least recently used first; `key` itself is never among them.
    pub(super) fn insert(&mut self, key: K, cost: u64, access: u64) -> Vec<K> {
        if let Some((old, _)) = self.entries.insert(key.clone(), (cost, access)) {
            self.cost -= old;
        }
        self.cost += cost;
        if self.entries.len() <= self.max_entries && self.cost <= self.max_cost {
            return Vec::new();
        }
        let keep_entries = ((self.max_entries as f64 * AFTER_EVICTION) as usize).max(1);
        let keep_cost = (self.max_cost as f64 * AFTER_EVICTION) as u64;
        let mut oldest: Vec<(K, u64)> = self
            .entries
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, (_, at))| (k.clone(), *at))
            .collect();
        oldest.sort_by_key(|(_, at)| *at);
        let mut evicted = Vec::new();
        for (k, _) in oldest {
            if self.entries.len() <= keep_entries && self.cost <= keep_cost {
                break;
            }
            self.remove(&k);
            evicted.push(k);
        }
        evicted
    }

    pub(super) fn touch(&mut self, key: &K, access: u64) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.1 = access;
        }
    }

    pub(super) fn remove(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some((cost, _)) => {
                self.cost -= cost;
                true
            }
            None => false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn cost(&self) -> u64 {
        self.cost
    }
}

/// The manifests (by digest hex, costing their bytes) and tags (by key, one each) on this edge.
pub(super) struct Catalog {
    pub(super) manifests: Lru<String>,
    pub(super) tags: Lru<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_down_to_nine_tenths() {
        let mut lru = Lru::new(10, u64::MAX);
        for i in 0..10u64 {
            assert!(lru.insert(i, 1, 100 + i).is_empty());
        }
        lru.touch(&0, 500);
        let evicted = lru.insert(10, 1, 600);
        // 11 entries, 9 kept: the two oldest after 0 was read again.
        assert_eq!(evicted, vec![1, 2]);
        assert_eq!(lru.len(), 9);
    }

    #[test]
    fn the_cost_cap_holds_and_the_newcomer_stays() {
        let mut lru = Lru::new(1000, 100);
        assert!(lru.insert("a", 60, 1).is_empty());
        assert!(lru.insert("b", 30, 2).is_empty());
        assert_eq!(lru.insert("c", 50, 3), vec!["a"]);
        assert_eq!(lru.cost(), 80);
        // Larger than the cap alone: everything else goes, the newcomer is kept (it is on disk
        // already; the next insert evicts it in turn).
        assert_eq!(lru.insert("d", 150, 4), vec!["b", "c"]);
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn replacing_an_entry_counts_its_cost_once() {
        let mut lru = Lru::new(10, 100);
        lru.insert("a", 40, 1);
        lru.insert("a", 50, 2);
        assert_eq!(lru.cost(), 50);
        assert!(lru.remove(&"a"));
        assert_eq!(lru.cost(), 0);
        assert!(!lru.remove(&"a"));
    }
}
