//! A bounded window of recently stored records, to store apiserver retries once and to notice a reused
//! auditID.
//!
//! A record's identity is (cluster, auditID, stage); its content is a keyed digest of the event as stored
//! (redacted). A duplicate is a true retry: same identity **and** same content. kube-apiserver takes a
//! client's `Audit-ID` header as the event's auditID, so the same identity with other content is another
//! request (an attacker hiding a secret read behind an earlier request's ID): it is stored, and reported as a
//! reuse with what the first request was.
//!
//! The digest is SipHash-1-3 under a key derived from the installation's redaction key: a client that can
//! choose request contents cannot compute digests, so cannot craft a request whose digest collides with an
//! earlier one's to have it dropped as a retry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use siphasher::sip::SipHasher13;

/// Descriptions of first requests kept, for naming them when their auditID is reused (a few hundred bytes
/// each; the window itself keeps only 16 bytes per record).
const FIRSTS: usize = 1 << 16;
/// The longest description kept.
pub const MAX_DESCRIPTION: usize = 512;

/// The 64-bit key of a record's identity: auditIDs are unique per apiserver (unless a client chose one), so
/// two clusters' events never collide.
pub fn key(cluster: &str, audit_id: &str, stage: &str) -> u64 {
    let mut h = DefaultHasher::new();
    cluster.hash(&mut h);
    audit_id.hash(&mut h);
    stage.hash(&mut h);
    h.finish()
}

/// The key of a record's identity and content together.
pub fn full_key(id: u64, digest: u64) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    digest.hash(&mut h);
    h.finish()
}

/// Keyed digests of stored event text.
#[derive(Clone)]
pub struct Digester {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digester(..)")
    }
}

impl Digester {
    pub fn new(key: [u8; 32]) -> Digester {
        let (k0, k1) = key.split_at(8);
        Digester {
            k0: u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(k1[..8].try_into().expect("8 bytes")),
        }
    }

    pub fn digest(&self, event: &str) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(event.as_bytes());
        h.finish()
    }
}

/// The form of a digest in a record's `variant`.
pub fn variant(digest: u64) -> String {
    format!("{digest:016x}")
}

/// The digest a record's `variant` carries.
pub fn parse_variant(v: &str) -> Option<u64> {
    u64::from_str_radix(v, 16).ok()
}

/// What [`Window::insert`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A new identity.
    First,
    /// Same identity and content as a record in the window: a retry, not stored.
    Duplicate,
    /// Same identity, other content: a reused auditID. What the first request was, if still remembered.
    Reuse(Option<Box<str>>),
}

/// The last `capacity` records: their full keys for lookups, their identities (with a count, as several
/// records can share one), and a queue for eviction in arrival order.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    stored: HashSet<u64>,
    ids: HashMap<u64, u32>,
    order: VecDeque<(u64, u64)>,
    firsts: HashMap<u64, Box<str>>,
    firsts_order: VecDeque<u64>,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            capacity: capacity.max(1),
            stored: HashSet::default(),
            ids: HashMap::default(),
            order: VecDeque::new(),
            firsts: HashMap::default(),
            firsts_order: VecDeque::new(),
        }
    }

    pub fn contains(&self, full: u64) -> bool {
        self.stored.contains(&full)
    }

    /// Adds a record; `describe` says what its request was, asked only for a new identity.
    pub fn insert(&mut self, full: u64, id: u64, describe: impl FnOnce() -> Box<str>) -> Seen {
        if !self.stored.insert(full) {
            return Seen::Duplicate;
        }
        self.order.push_back((full, id));
        let n = self.ids.entry(id).or_insert(0);
        *n += 1;
        let seen = if *n == 1 {
            self.firsts.insert(id, describe());
            self.firsts_order.push_back(id);
            while self.firsts_order.len() > FIRSTS {
                if let Some(old) = self.firsts_order.pop_front() {
                    self.firsts.remove(&old);
                }
            }
            Seen::First
        } else {
            Seen::Reuse(self.firsts.get(&id).cloned())
        };
        self.evict();
        seen
    }

    /// Adds a record known only by its keys (its log segment was released): no description of it is kept,
    /// so a reuse of its identity is reported without one.
    pub fn insert_undescribed(&mut self, full: u64, id: u64) {
        if !self.stored.insert(full) {
            return;
        }
        self.order.push_back((full, id));
        *self.ids.entry(id).or_insert(0) += 1;
        self.evict();
    }

    fn evict(&mut self) {
        while self.order.len() > self.capacity {
            if let Some((old_full, old_id)) = self.order.pop_front() {
                self.stored.remove(&old_full);
                self.release_id(old_id);
            }
        }
    }

    fn release_id(&mut self, id: u64) {
        if let Some(n) = self.ids.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.ids.remove(&id);
            }
        }
    }

    /// Forgets records reserved for a batch that was not stored (so its retry is not taken for a duplicate,
    /// nor a reuse).
    pub fn remove_all(&mut self, keys: &[(u64, u64)]) {
        for (full, id) in keys {
            if self.stored.remove(full) {
                self.release_id(*id);
                if !self.ids.contains_key(id) {
                    self.firsts.remove(id);
                }
            }
        }
        self.order.retain(|(full, _)| self.stored.contains(full));
        self.firsts_order.retain(|id| self.firsts.contains_key(id));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stored.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> impl FnOnce() -> Box<str> + '_ {
        move || s.into()
    }

    #[test]
    fn window_evicts_oldest_and_forgets_failed_batches() {
        let mut w = Window::new(2);
        assert_eq!(w.insert(1, 10, d("a")), Seen::First);
        assert_eq!(w.insert(2, 20, d("b")), Seen::First);
        assert_eq!(w.insert(2, 20, d("b")), Seen::Duplicate);
        assert_eq!(w.insert(3, 30, d("c")), Seen::First);
        assert!(!w.contains(1) && w.contains(2) && w.contains(3));
        w.remove_all(&[(3, 30)]);
        assert!(!w.contains(3) && w.len() == 1);
        // The failed batch's identity is forgotten too: its retry is a first, not a reuse.
        assert_eq!(w.insert(4, 30, d("c")), Seen::First);
        assert_ne!(
            key("c", "a", "ResponseComplete"),
            key("c", "a", "RequestReceived")
        );
        assert_ne!(
            key("c1", "a", "ResponseComplete"),
            key("c2", "a", "ResponseComplete")
        );
    }

    #[test]
    fn same_identity_other_content_is_a_reuse_naming_the_first() {
        let mut w = Window::new(10);
        let id = key("c", "x", "ResponseComplete");
        let (a, b) = (full_key(id, 1), full_key(id, 2));
        assert_eq!(w.insert(a, id, d("get pods/web")), Seen::First);
        assert_eq!(
            w.insert(b, id, d("get secrets/db")),
            Seen::Reuse(Some("get pods/web".into()))
        );
        assert_eq!(w.insert(b, id, d("get secrets/db")), Seen::Duplicate);
        assert_eq!(w.insert(a, id, d("get pods/web")), Seen::Duplicate);
    }

    #[test]
    fn digests_are_keyed() {
        let a = Digester::new([1; 32]);
        let b = Digester::new([2; 32]);
        assert_eq!(a.digest("x"), a.digest("x"));
        assert_ne!(a.digest("x"), a.digest("y"));
        assert_ne!(a.digest("x"), b.digest("x"));
        assert_eq!(parse_variant(&variant(a.digest("x"))), Some(a.digest("x")));
    }
}
