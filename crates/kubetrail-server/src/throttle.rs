//! Failed authentications per source address: past [`MAX_FAILURES`] wrong tokens in a [`WINDOW`], an
//! address's wrong tokens are answered 429 (with `Retry-After`) instead of 401 until the window ends. A right
//! token, a session or a certificate is never throttled: many callers share an address (an ingress, SNAT, a
//! node's pods), and one of them must not lock the apiserver or an analyst out. Tokens have at least 128 bits
//! (32 characters), so the throttle bounds the noise and cost of guessing rather than its odds. IPv6
//! addresses count per /64 (one host usually holds the whole prefix). The table is bounded: beyond
//! [`MAX_ADDRESSES`] the oldest window goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may present per window.
pub const MAX_FAILURES: u32 = 20;
/// The window failures are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The address a client is counted by: itself, or for IPv6 its /64.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

impl Throttle {
    /// Seconds until `ip` may try again, when it is over its failures.
    pub(crate) fn blocked(&self, ip: IpAddr) -> Option<u32> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (start, failures) = map.get(&key(ip))?;
        let left = WINDOW.checked_sub(start.elapsed())?;
        (*failures >= MAX_FAILURES).then(|| left.as_secs().max(1) as u32)
    }

    /// Counts a wrong token from `ip`.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&key(ip)) {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_ADDRESSES
                && let Some(oldest) = map.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(key(ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_only_it() {
        let t = Throttle::default();
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        let b: IpAddr = "203.0.113.10".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed(a);
        }
        assert_eq!(t.blocked(a), None);
        t.failed(a);
        let secs = t.blocked(a).expect("blocked");
        assert!((1..=60).contains(&secs));
        assert_eq!(t.blocked(b), None);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::default();
        for i in 0..MAX_FAILURES {
            t.failed(format!("2001:db8::{i:x}").parse().unwrap());
        }
        assert!(t.blocked("2001:db8::ffff:1".parse().unwrap()).is_some());
        assert!(t.blocked("2001:db8:0:1::1".parse().unwrap()).is_none());
        for _ in 0..MAX_FAILURES {
            t.failed("::ffff:198.51.100.1".parse().unwrap());
        }
        assert!(t.blocked("198.51.100.1".parse().unwrap()).is_some());
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_ADDRESSES as u32 + 50) {
            t.failed(IpAddr::V4(i.into()));
        }
        assert!(t.map.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
