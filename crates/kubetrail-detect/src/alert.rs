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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub username: String,
    /// The authenticated user's groups (of the first request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The user the request impersonated, if it did.
    #[serde(
        default,
        rename = "impersonatedUser",
        skip_serializing_if = "Option::is_none"
    )]
    pub impersonated_user: Option<String>,
    /// Who is behind the username, as its authenticator said (`kubetrail_model::Principal::summary`): an EKS
    /// identity's AWS role and session, the pod and node of a service account's bound token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// What the first request was done to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub verb: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The request URI (non-resource requests have nothing else).
    #[serde(
        default,
        rename = "requestURI",
        skip_serializing_if = "String::is_empty"
    )]
    pub request_uri: String,
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
    /// What the first request was done to (absent for correlation alerts, which span requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The first request's user agent.
    #[serde(default, rename = "userAgent", skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The rule's ATT&CK techniques (`T1552.007`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attack: Vec<String>,
    /// The rule's Sigma tags (`attack.t1552.007`, `kubetrail.production`, ...), for routing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The rule's runbook for a tier-1 analyst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// The cluster the first request came from, when the caller knows it (`serve` does; the engine does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// When an analyst resolved it (RFC 3339): set on the copy the workflow hands to the destinations, so
    /// they close it (Alertmanager's `endsAt`); never set by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// When kubetrail raised it (RFC 3339, wall clock; `serve` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<String>,
    /// The triage context (`serve` adds it: it watches every event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::triage::Triage>,
    /// The alert in the web console, when its address is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// The commands that investigate it (`kubetrail scope ...`, `kubetrail timeline ...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub investigate: Vec<String>,
    /// The suppression that silenced it (recorded, not delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<String>,
    /// For a pod the control plane created: the workload it belongs to and who last wrote it (the actor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::owner::Owner>,
}

/// The most auditIDs an alert lists (the count goes on).
pub const MAX_AUDIT_IDS: usize = 1000;

/// The most source IPs an alert lists.
pub const MAX_SOURCE_IPS: usize = 32;

/// FNV-1a over the parts: a short, deterministic alert id (replaying the same events gives the same ids).
pub(crate) fn alert_id(parts: &[&str]) -> String {
    format!("{:016x}", hash_parts(parts))
}

/// FNV-1a over the parts, each followed by a separator no name holds (0x1f), so no two lists of parts hash
/// from the same bytes.
pub(crate) fn hash_parts(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
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

/// Parses an RFC 3339 timestamp into milliseconds since the epoch. kube-apiserver's own form
/// (`2026-11-25T02:00:00.123456Z`) takes a fast path; anything else goes through jiff.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    fast_utc(s).or_else(|| {
        s.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` only; `None` for anything else (the slow path decides).
fn fast_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let mut n = 0i64;
        for &c in b.get(from..to)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut ms = 0i64;
    match &b[19..] {
        [b'Z'] => {}
        [b'.', frac @ .., b'Z']
            if !frac.is_empty() && frac.len() <= 9 && frac.iter().all(u8::is_ascii_digit) =>
        {
            for (c, scale) in frac.iter().zip([100, 10, 1]) {
                ms += i64::from(c - b'0') * scale;
            }
        }
        _ => return None,
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > month_days[(mo - 1) as usize] {
        return None;
    }
    // Days since the epoch from the civil date (Howard Hinnant's days_from_civil).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_time_parse_agrees_with_jiff() {
        for s in [
            "2026-11-25T02:00:00Z",
            "2026-11-25T02:00:00.123456Z",
            "2024-02-29T23:59:59.9Z",
            "1970-01-01T00:00:00Z",
            "2000-03-01T12:34:56.000001Z",
            "2017-09-11T20:29:04Z",
            "1969-12-31T23:59:59.5Z",
        ] {
            let want = s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
            assert_eq!(fast_utc(s), Some(want), "{s}");
        }
        for s in [
            "2026-02-30T00:00:00Z",
            "2026-11-25T02:00:00+01:00",
            "2026-11-25 02:00:00Z",
            "x",
            "2026-13-01T00:00:00Z",
        ] {
            assert_eq!(fast_utc(s), None, "{s}");
        }
        assert_eq!(
            parse_time("2026-11-25T03:00:00+01:00"),
            parse_time("2026-11-25T02:00:00Z")
        );
        assert_eq!(parse_time("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_time("garbage"), None);
    }
}
