//! A bounded window of recently stored (cluster, auditID, stage) keys, to store apiserver retries once.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The 64-bit key of an event: auditIDs are unique per apiserver, so two clusters' events never collide.
pub fn key(cluster: &str, audit_id: &str, stage: &str) -> u64 {
    let mut h = DefaultHasher::new();
    cluster.hash(&mut h);
    audit_id.hash(&mut h);
    stage.hash(&mut h);
    h.finish()
}

/// The last `capacity` keys: a set for lookups and a queue for eviction in arrival order.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            capacity: capacity.max(1),
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn contains(&self, k: u64) -> bool {
        self.set.contains(&k)
    }

    /// Adds a key; false if it was already present.
    pub fn insert(&mut self, k: u64) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Forgets keys reserved for a batch that was not stored (so its retry is not taken for a duplicate).
    pub fn remove_all(&mut self, keys: &[u64]) {
        for k in keys {
            self.set.remove(k);
        }
        self.order.retain(|k| self.set.contains(k));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_evicts_oldest_and_forgets_failed_batches() {
        let mut w = Window::new(2);
        assert!(w.insert(1) && w.insert(2));
        assert!(!w.insert(2));
        assert!(w.insert(3));
        assert!(!w.contains(1) && w.contains(2) && w.contains(3));
        w.remove_all(&[3]);
        assert!(!w.contains(3) && w.len() == 1);
        assert_ne!(
            key("c", "a", "ResponseComplete"),
            key("c", "a", "RequestReceived")
        );
        assert_ne!(
            key("c1", "a", "ResponseComplete"),
            key("c2", "a", "ResponseComplete")
        );
    }
}
