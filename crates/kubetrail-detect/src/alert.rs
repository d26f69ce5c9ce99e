//! Alerts: what the engine hands out, serialized as `kubetrail detect --format json` lines.

use serde::{Deserialize, Serialize};

use crate::rule::Level;

/// The rule an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    pub id: String,
    pub title: String,
}

/// Who made the requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub username: String,
}

/// One alert: a rule matched one request, or the same actor repeated it (`count` > 1), or a correlation
/// fired. The first six fields are DESIGN.md's contract; the others add to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable for a group of repeats: an update of an alert (more repeats) carries the same id.
    pub id: String,
    pub rule: AlertRule,
    pub severity: Level,
    /// Every request of the alert, in order (at most [`MAX_AUDIT_IDS`]; `count` says how many there were).
    #[serde(rename = "auditIDs")]
    pub audit_ids: Vec<String>,
    /// Event time of the first request (RFC 3339, UTC).
    pub time: String,
    pub actor: Actor,
    /// The first request's `sourceIPs`, then any others the repeats came from.
    #[serde(rename = "sourceIPs")]
    pub source_ips: Vec<String>,
    pub summary: String,
    /// Requests (or correlation firings) this alert stands for.
    pub count: u64,
    /// Event time of the last request.
    #[serde(rename = "lastTime")]
    pub last_time: String,
    /// True when this supersedes an alert already handed out with the same id (its repeats were grouped).
    #[serde(default)]
    pub update: bool,
}

/// The most auditIDs an alert lists (the count goes on).
pub const MAX_AUDIT_IDS: usize = 1000;

/// The most source IPs an alert lists.
pub const MAX_SOURCE_IPS: usize = 32;

/// FNV-1a over the parts: a short, deterministic alert id (replaying the same events gives the same ids).
pub(crate) fn alert_id(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Hashes an auditID for the per-request de-duplication set (8 bytes instead of the UUID).
pub(crate) fn hash64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub(crate) fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_string(),
        Err(_) => jiff::Timestamp::UNIX_EPOCH.to_string(),
    }
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}
