//! Triage context for an alert, so a tier-1 analyst can decide without opening a second tool: the actor's
//! activity in the hour before (requests and failures by verb and resource), the objects it changed and the
//! exec/attach/port-forward sessions it opened in that hour, whether the identity, source IP and user agent
//! were seen in the 30 days before (first-seen), the actor's other alerts, and what the audit policy's level
//! hid from the rule.
//!
//! [`Tracker`] watches every event in order (it is fed by the caller beside [`crate::Engine`]). Its memory is
//! bounded: per-actor activity in 60 one-minute slots for at most [`MAX_ACTORS`] actors, first-seen days for
//! at most [`MAX_SEEN`] values. The first-seen facts outlive a restart through [`Sighting`]s, which the caller
//! persists as they are handed out and gives back to [`Tracker::restore`].

use std::collections::{HashMap, VecDeque};

use kubetrail_model::{Event, Level as LogLevel};
use serde::{Deserialize, Serialize};

use crate::{Alert, BodyNeed};

/// Actors whose last hour is kept, at most (beyond, the least recently active are forgotten).
pub const MAX_ACTORS: usize = 20_000;
/// Identities, source IPs and user agents whose first and last day are kept, at most.
pub const MAX_SEEN: usize = 300_000;
/// How far back first-seen looks, in days.
pub const SEEN_DAYS: i64 = 30;
/// Distinct (verb, resource) pairs kept per actor (beyond, counted as `other`).
const MAX_PAIRS: usize = 64;
/// Alerts of one actor remembered for "other alerts".
const MAX_ACTOR_ALERTS: usize = 20;
/// The most (verb, resource) lines an alert's activity lists.
const TOP: usize = 10;
/// Objects changed and sessions opened remembered per actor (the latest).
const MAX_TOUCHED: usize = 10;

/// The actor's requests in the hour up to the alert's request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Start of the window (RFC 3339): an hour before the request, or when kubetrail started watching.
    pub since: String,
    pub requests: u64,
    /// Requests denied or failed (response code 400 or above).
    pub failures: u64,
    /// The busiest (verb, resource) pairs, most requests first.
    pub top: Vec<ActivityLine>,
}

/// Requests of one verb on one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityLine {
    pub verb: String,
    /// `pods/exec` for a subresource; the path for a non-resource request.
    pub resource: String,
    pub requests: u64,
    pub failures: u64,
}

/// Whether a value was seen in the 30 days before the alert's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub value: String,
    /// True when it was not seen in the 30 days before (as far as kubetrail has watched: see `since`).
    #[serde(rename = "new")]
    pub is_new: bool,
    /// The first day it was seen within those 30 days (`YYYY-MM-DD`).
    #[serde(default, rename = "firstSeen", skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
}

/// First-seen facts for the alert's request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstSeen {
    /// The first day kubetrail watched (first-seen cannot look further back).
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Seen>,
    #[serde(default, rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<Seen>,
    #[serde(default, rename = "userAgent", skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Seen>,
}

/// Another alert of the same actor that is not resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherAlert {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub time: String,
}

/// An object the actor wrote successfully in the hour up to the alert's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedObject {
    pub resource: String,
    /// Its API group (empty: the core group).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The verbs, in the order first used (`create`, `patch`).
    pub verbs: Vec<String>,
    /// Its last write by the actor (RFC 3339).
    pub last: String,
    /// The command that shows each change, by anyone (`kubetrail history deployments/api -n prod`).
    pub history: String,
}

/// An exec, attach or port-forward the actor opened in the hour up to the alert's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLine {
    /// `exec`, `attach` or `portforward`.
    pub kind: String,
    /// `namespace/pod`.
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command line (exec; passwords redacted), or the ports (port-forward).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    pub time: String,
}

/// Everything [`Tracker::context`] adds to an alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triage {
    pub activity: Activity,
    #[serde(rename = "firstSeen")]
    pub first_seen: FirstSeen,
    #[serde(default, rename = "otherAlerts", skip_serializing_if = "Vec::is_empty")]
    pub other_alerts: Vec<OtherAlert>,
    /// What the audit policy's level hid (at Metadata the pod spec was not logged, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The objects the actor changed in the hour, the latest first.
    #[serde(
        default,
        rename = "changedObjects",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub changed_objects: Vec<ChangedObject>,
    /// The sessions the actor opened in the hour, the latest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionLine>,
}

/// What a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Identity,
    Ip,
    Agent,
}

/// A first-seen fact to persist: `value` was seen on days `first..=last` (days since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub kind: Kind,
    pub value: String,
    pub first: i64,
    pub last: i64,
}

/// The first-seen facts of one event, taken before the tracker watched it.
#[derive(Debug, Clone, Default)]
pub struct Prior {
    identity: Option<Seen>,
    ips: Vec<Seen>,
    agent: Option<Seen>,
    level: Option<LogLevel>,
    resource: String,
}

/// One actor's last hour: per (verb, resource), requests and failures in 60 one-minute slots; the latest
/// objects it changed and sessions it opened, with their times.
#[derive(Debug, Default)]
struct Window {
    minute: i64,
    pairs: HashMap<(String, String), Slots>,
    changed: VecDeque<(i64, ChangedObject)>,
    sessions: VecDeque<(i64, SessionLine)>,
}

impl Window {
    /// Remembers what `ev` (at `t`, by this actor) changed or opened, if anything.
    fn touch(&mut self, ev: &Event<'_>, t: i64) {
        let Some(o) = &ev.object_ref else { return };
        if o.resource.is_empty() || o.name.is_empty() || ev.code().is_some_and(|c| c >= 400) {
            return;
        }
        // Every event passes here: reads (most of them) leave before anything is formatted.
        let write = matches!(&*ev.verb, "create" | "update" | "patch" | "delete");
        let direct =
            o.resource == "pods" && matches!(&*o.subresource, "exec" | "attach" | "portforward");
        let via_node = o.resource == "nodes" && o.subresource == "proxy";
        if !(write || direct || via_node) {
            return;
        }
        let time = jiff::Timestamp::from_microsecond(t)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let namespace = (!o.namespace.is_empty()).then(|| o.namespace.to_string());
        let proxied = via_node
            .then(|| kubetrail_history::session::parse_node_proxy(&ev.request_uri))
            .flatten();
        if direct || proxied.is_some() {
            let (pod, session, kind) = match proxied {
                // Straight on the node's kubelet.
                Some((ns, pod, s)) => {
                    let kind = match s.kind {
                        kubetrail_history::SessionKind::Exec => "exec",
                        kubetrail_history::SessionKind::Attach => "attach",
                        kubetrail_history::SessionKind::PortForward => "portforward",
                    };
                    (
                        format!("{ns}/{pod}"),
                        Some(s),
                        format!("{kind} via nodes/proxy"),
                    )
                }
                None => (
                    format!("{}/{}", o.namespace, o.name),
                    kubetrail_history::session::parse(&o.subresource, &ev.request_uri),
                    o.subresource.to_string(),
                ),
            };
            let line = SessionLine {
                kind,
                pod,
                container: session.as_ref().and_then(|s| s.container.clone()),
                command: session.map(|s| s.command_line()).unwrap_or_default(),
                time,
            };
            // Each stage of one request is the same session.
            if self.sessions.iter().any(|(at, l)| *at == t && *l == line) {
                return;
            }
            if self.sessions.len() >= MAX_TOUCHED {
                self.sessions.pop_back();
            }
            self.sessions.push_front((t, line));
            return;
        }
        if !write || kubetrail_history::replay::dry_run(&ev.request_uri) {
            return;
        }
        let same = |c: &ChangedObject| {
            c.resource == o.resource
                && c.group == o.api_group
                && c.namespace.as_deref() == namespace.as_deref()
                && c.name == o.name
        };
        let mut entry = match self.changed.iter().position(|(_, c)| same(c)) {
            Some(i) => self.changed.remove(i).map(|(_, c)| c),
            None => None,
        }
        .unwrap_or_else(|| ChangedObject {
            resource: o.resource.to_string(),
            group: o.api_group.to_string(),
            history: kubetrail_history::history_command(
                &o.resource,
                &o.api_group,
                &o.namespace,
                &o.name,
            ),
            namespace,
            name: o.name.to_string(),
            verbs: Vec::new(),
            last: String::new(),
        });
        if !entry.verbs.iter().any(|v| v == &*ev.verb) {
            entry.verbs.push(ev.verb.to_string());
        }
        entry.last = time;
        if self.changed.len() >= MAX_TOUCHED {
            self.changed.pop_back();
        }
        self.changed.push_front((t, entry));
    }
}

#[derive(Debug, Clone)]
struct Slots {
    minute: i64,
    requests: [u32; 60],
    failures: [u32; 60],
}

impl Slots {
    fn new(minute: i64) -> Slots {
        Slots {
            minute,
            requests: [0; 60],
            failures: [0; 60],
        }
    }

    fn add(&mut self, minute: i64, failed: bool) {
        if minute > self.minute {
            let gap = (minute - self.minute).min(60);
            for m in (minute - gap + 1)..=minute {
                let i = m.rem_euclid(60) as usize;
                self.requests[i] = 0;
                self.failures[i] = 0;
            }
            self.minute = minute;
        } else if self.minute - minute >= 60 {
            return;
        }
        let i = minute.rem_euclid(60) as usize;
        self.requests[i] = self.requests[i].saturating_add(1);
        self.failures[i] = self.failures[i].saturating_add(u32::from(failed));
    }

    /// Requests and failures in the hour ending at `minute`.
    fn sum(&self, minute: i64) -> (u64, u64) {
        let (mut r, mut f) = (0u64, 0u64);
        for m in (minute - 59)..=minute.min(self.minute) {
            if self.minute - m >= 60 {
                continue;
            }
            let i = m.rem_euclid(60) as usize;
            r += u64::from(self.requests[i]);
            f += u64::from(self.failures[i]);
        }
        (r, f)
    }
}

#[derive(Debug, Clone, Copy)]
struct Days {
    first: i64,
    last: i64,
}

/// Watches every event; answers [`Triage`] for alerts.
#[derive(Debug, Default)]
pub struct Tracker {
    windows: HashMap<String, Window>,
    seen: HashMap<(Kind, String), Days>,
    alerts: HashMap<String, VecDeque<OtherAlert>>,
    /// The first minute this tracker watched (activity cannot look further back).
    started_minute: Option<i64>,
    /// The first day of the first-seen facts (restored or watched).
    first_day: Option<i64>,
}

const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

fn day_string(day: i64) -> String {
    jiff::Timestamp::from_second(day * 86_400)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn minute_string(minute: i64) -> String {
    jiff::Timestamp::from_second(minute * 60)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn event_micros(ev: &Event<'_>) -> Option<i64> {
    ev.received_at().map(|t| t.as_microsecond())
}

fn resource_of(ev: &Event<'_>) -> String {
    match &ev.object_ref {
        Some(o) if !o.resource.is_empty() && !o.subresource.is_empty() => {
            format!("{}/{}", o.resource, o.subresource)
        }
        Some(o) if !o.resource.is_empty() => o.resource.to_string(),
        _ => ev.request_uri.split('?').next().unwrap_or("").to_string(),
    }
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Gives back a persisted first-seen fact (the newest for a value wins).
    pub fn restore(&mut self, s: Sighting) {
        self.first_day = Some(self.first_day.map_or(s.first, |d| d.min(s.first)));
        let e = self.seen.entry((s.kind, s.value)).or_insert(Days {
            first: s.first,
            last: s.last,
        });
        e.first = e.first.min(s.first);
        e.last = e.last.max(s.last);
    }

    /// How many values the first-seen memory holds.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// The persisted form of everything remembered (to rewrite a grown log compactly).
    pub fn sightings(&self) -> Vec<Sighting> {
        self.seen
            .iter()
            .map(|((kind, value), d)| Sighting {
                kind: *kind,
                value: value.clone(),
                first: d.first,
                last: d.last,
            })
            .collect()
    }

    fn lookup(&self, kind: Kind, value: &str, day: i64) -> Seen {
        // Seen on an earlier day within the window; a value seen only today counts as new on its first day.
        let hit = self
            .seen
            .get(&(kind, value.to_string()))
            .filter(|d| d.last >= day - SEEN_DAYS && d.first < day);
        Seen {
            value: value.to_string(),
            is_new: hit.is_none(),
            first_seen: hit.map(|d| day_string(d.first.max(day - SEEN_DAYS))),
        }
    }

    /// The first-seen facts of `ev`, before it is watched. Values seen earlier the same day count as seen.
    pub fn prior(&self, ev: &Event<'_>) -> Prior {
        let Some(t) = event_micros(ev) else {
            return Prior::default();
        };
        let day = t.div_euclid(MICROS_PER_DAY);
        let seen_today = |kind: Kind, v: &str| -> Seen {
            let mut s = self.lookup(kind, v, day);
            if s.is_new
                && let Some(d) = self.seen.get(&(kind, v.to_string()))
                && d.last == day
                && d.first == day
            {
                // First seen today, before this request: new in the 30-day sense all the same.
                s.first_seen = Some(day_string(day));
            }
            s
        };
        Prior {
            identity: (!ev.user.username.is_empty())
                .then(|| seen_today(Kind::Identity, &ev.user.username)),
            ips: ev
                .source_ips
                .iter()
                .take(4)
                .map(|ip| seen_today(Kind::Ip, ip))
                .collect(),
            agent: ev
                .user_agent
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(|u| seen_today(Kind::Agent, u)),
            level: Some(ev.level),
            resource: resource_of(ev),
        }
    }

    /// Watches `ev`; returns the first-seen facts that changed (a new value, or a value's first sighting on
    /// a new day), for the caller to persist.
    pub fn observe(&mut self, ev: &Event<'_>) -> Vec<Sighting> {
        let Some(t) = event_micros(ev) else {
            return Vec::new();
        };
        let minute = t.div_euclid(MICROS_PER_MINUTE);
        let day = t.div_euclid(MICROS_PER_DAY);
        self.started_minute.get_or_insert(minute);
        self.first_day.get_or_insert(day);

        let actor = ev.user.username.to_string();
        if !actor.is_empty() {
            if !self.windows.contains_key(&actor) && self.windows.len() >= MAX_ACTORS {
                self.forget_idle(minute);
            }
            if self.windows.contains_key(&actor) || self.windows.len() < MAX_ACTORS {
                let w = self.windows.entry(actor).or_default();
                w.minute = w.minute.max(minute);
                let mut key = (ev.verb.to_string(), resource_of(ev));
                if !w.pairs.contains_key(&key) && w.pairs.len() >= MAX_PAIRS {
                    key = (key.0, "other".to_string());
                }
                let failed = ev.code().is_some_and(|c| c >= 400);
                w.pairs
                    .entry(key)
                    .or_insert_with(|| Slots::new(minute))
                    .add(minute, failed);
                w.touch(ev, t);
            }
        }

        let mut changed = Vec::new();
        let mut see = |kind: Kind, value: &str| {
            if value.is_empty() {
                return;
            }
            let key = (kind, value.to_string());
            match self.seen.get_mut(&key) {
                Some(d) if d.last >= day && d.first <= day => {}
                Some(d) => {
                    d.first = d.first.min(day);
                    d.last = d.last.max(day);
                    changed.push(Sighting {
                        kind,
                        value: value.to_string(),
                        first: d.first,
                        last: d.last,
                    });
                }
                None => {
                    changed.push(Sighting {
                        kind,
                        value: value.to_string(),
                        first: day,
                        last: day,
                    });
                    self.seen.insert(
                        key,
                        Days {
                            first: day,
                            last: day,
                        },
                    );
                }
            }
        };
        see(Kind::Identity, &ev.user.username);
        for ip in ev.source_ips.iter().take(4) {
            see(Kind::Ip, ip);
        }
        if let Some(ua) = ev.user_agent.as_deref() {
            see(Kind::Agent, ua);
        }
        if self.seen.len() > MAX_SEEN {
            self.forget_old_values(day);
        }
        changed
    }

    /// Drops actors idle for more than an hour; if none is, the least recently active tenth.
    fn forget_idle(&mut self, minute: i64) {
        self.windows.retain(|_, w| minute - w.minute < 60);
        if self.windows.len() >= MAX_ACTORS {
            let mut minutes: Vec<i64> = self.windows.values().map(|w| w.minute).collect();
            minutes.sort_unstable();
            let cut = minutes[minutes.len() / 10];
            self.windows.retain(|_, w| w.minute > cut);
        }
    }

    /// Drops values not seen in the window; if that is not enough, the least recently seen tenth.
    fn forget_old_values(&mut self, day: i64) {
        self.seen.retain(|_, d| d.last >= day - SEEN_DAYS);
        if self.seen.len() > MAX_SEEN {
            let mut lasts: Vec<i64> = self.seen.values().map(|d| d.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 10];
            self.seen.retain(|_, d| d.last > cut);
        }
    }

    /// The actor's activity in the hour ending at `time_us`.
    fn activity(&self, actor: &str, time_us: i64) -> Activity {
        let minute = time_us.div_euclid(MICROS_PER_MINUTE);
        let since = (minute - 59).max(self.started_minute.unwrap_or(minute));
        let mut a = Activity {
            since: minute_string(since),
            ..Activity::default()
        };
        if let Some(w) = self.windows.get(actor) {
            let mut lines: Vec<ActivityLine> = w
                .pairs
                .iter()
                .filter_map(|((verb, resource), s)| {
                    let (requests, failures) = s.sum(minute);
                    (requests > 0).then(|| ActivityLine {
                        verb: verb.clone(),
                        resource: resource.clone(),
                        requests,
                        failures,
                    })
                })
                .collect();
            a.requests = lines.iter().map(|l| l.requests).sum();
            a.failures = lines.iter().map(|l| l.failures).sum();
            lines.sort_by(|x, y| {
                y.requests
                    .cmp(&x.requests)
                    .then_with(|| (&x.verb, &x.resource).cmp(&(&y.verb, &y.resource)))
            });
            lines.truncate(TOP);
            a.top = lines;
        }
        a
    }

    /// The objects the actor changed and the sessions it opened in the hour ending at `time_us`.
    fn touched(&self, actor: &str, time_us: i64) -> (Vec<ChangedObject>, Vec<SessionLine>) {
        let Some(w) = self.windows.get(actor) else {
            return (Vec::new(), Vec::new());
        };
        // An alert's time is in milliseconds; the request that raised it is in its millisecond.
        let end = time_us.saturating_add(999);
        let hour = |t: i64| t <= end && end - t < 60 * MICROS_PER_MINUTE;
        (
            w.changed
                .iter()
                .filter(|(t, _)| hour(*t))
                .map(|(_, c)| c.clone())
                .collect(),
            w.sessions
                .iter()
                .filter(|(t, _)| hour(*t))
                .map(|(_, s)| s.clone())
                .collect(),
        )
    }

    /// The triage context of `alert`, raised by the event whose facts `prior` holds (a default [`Prior`]
    /// for alerts raised without one, such as a group's later update). `still_open` says whether another
    /// alert id is not resolved; `body` is what the rule reads of the request, when known.
    pub fn context(
        &self,
        alert: &Alert,
        prior: &Prior,
        body: Option<BodyNeed>,
        still_open: impl Fn(&str) -> bool,
    ) -> Triage {
        let time_us = alert
            .last_time
            .parse::<jiff::Timestamp>()
            .or_else(|_| alert.time.parse::<jiff::Timestamp>())
            .map(|t| t.as_microsecond())
            .unwrap_or(0);
        let other_alerts = self
            .alerts
            .get(&alert.actor.username)
            .map(|list| {
                list.iter()
                    .rev()
                    .filter(|o| o.id != alert.id && still_open(&o.id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let (changed_objects, sessions) = self.touched(&alert.actor.username, time_us);
        Triage {
            changed_objects,
            sessions,
            activity: self.activity(&alert.actor.username, time_us),
            first_seen: FirstSeen {
                since: self.first_day.map(day_string).unwrap_or_default(),
                identity: prior.identity.clone(),
                source_ips: prior.ips.clone(),
                user_agent: prior.agent.clone(),
            },
            other_alerts,
            policy: prior
                .level
                .and_then(|l| policy_consequence(l, &prior.resource, body)),
        }
    }

    /// Remembers a raised alert for the actor's later alerts.
    pub fn remember(&mut self, alert: &Alert) {
        if alert.update || alert.actor.username.is_empty() {
            return;
        }
        if !self.alerts.contains_key(&alert.actor.username) && self.alerts.len() >= MAX_ACTORS {
            self.alerts.clear();
        }
        let list = self.alerts.entry(alert.actor.username.clone()).or_default();
        if list.len() >= MAX_ACTOR_ALERTS {
            list.pop_front();
        }
        list.push_back(OtherAlert {
            id: alert.id.clone(),
            rule: alert.rule.title.clone(),
            severity: alert.severity.as_str().to_string(),
            time: alert.time.clone(),
        });
    }
}

/// What the audit level of the request hid, in an analyst's words, or `None` when nothing that matters was.
pub fn policy_consequence(
    level: LogLevel,
    resource: &str,
    body: Option<BodyNeed>,
) -> Option<String> {
    let base = resource.split('/').next().unwrap_or("");
    let what = match base {
        "pods" => "the pod spec (images, privileges, host mounts)",
        "deployments" | "daemonsets" | "statefulsets" | "replicasets" | "jobs" | "cronjobs" => {
            "the workload's pod template (images, privileges, host mounts)"
        }
        "rolebindings" | "clusterrolebindings" => "the binding's subjects and role",
        "roles" | "clusterroles" => "the rules granted",
        "configmaps" => "the data written",
        "serviceaccounts" if resource.ends_with("/token") => "the token's audience and expiry",
        _ => "the request body",
    };
    if base == "secrets" {
        return None;
    }
    match (level, body) {
        (LogLevel::None, _) => {
            Some("the policy logs this request at None: nothing of it was recorded".into())
        }
        (LogLevel::Metadata, Some(BodyNeed::Request | BodyNeed::Response)) => Some(format!(
            "logged at Metadata: the rule reads the request body, so it cannot see {what}; raise this \
             resource to Request in the audit policy"
        )),
        (LogLevel::Request, Some(BodyNeed::Response)) => Some(
            "logged at Request: the rule reads the response body, which was not recorded; raise this \
             resource to RequestResponse"
                .to_string(),
        ),
        (LogLevel::Metadata, _) => Some(format!(
            "logged at Metadata: {what} was not recorded, so what was sent is unknown"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, AlertRule, Level};

    fn event(user: &str, verb: &str, resource: &str, code: i32, time: &str, ip: &str) -> String {
        serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": format!("{user}-{time}-{verb}"), "stage": "ResponseComplete",
            "requestURI": format!("/api/v1/{resource}"), "verb": verb,
            "user": {"username": user}, "sourceIPs": [ip], "userAgent": "kubectl/v1.31",
            "objectRef": {"resource": resource, "namespace": "prod"},
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": time, "stageTimestamp": time,
        })
        .to_string()
    }

    fn alert(id: &str, user: &str, time: &str) -> Alert {
        Alert {
            id: id.into(),
            rule: AlertRule {
                id: "r".into(),
                title: "Rule".into(),
            },
            severity: Level::High,
            audit_ids: vec![],
            time: time.into(),
            actor: Actor {
                username: user.into(),
                ..Actor::default()
            },
            source_ips: vec![],
            summary: String::new(),
            count: 1,
            last_time: time.into(),
            update: false,
            target: None,
            user_agent: None,
            attack: vec![],
            tags: vec![],
            cluster: None,
            resolved: None,
            runbook: None,
            detected: None,
            context: None,
            console: None,
            investigate: vec![],
            suppressed: None,
            owner: None,
        }
    }

    fn watch(t: &mut Tracker, json: &str) -> (Prior, Vec<Sighting>) {
        let ev = Event::parse(json).expect("valid event");
        let p = t.prior(&ev);
        (p, t.observe(&ev))
    }

    /// A write or a session of `user` on one named object at `time`.
    /// (verb, resource, subresource, name, URI query, code, time).
    type Touch<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, i32, &'a str);

    fn touch(user: &str, (verb, resource, sub, name, query, code, time): Touch<'_>) -> String {
        serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": format!("{user}-{time}-{verb}-{name}"), "stage": "ResponseComplete",
            "requestURI": format!("/apis/apps/v1/namespaces/prod/{resource}/{name}{query}"), "verb": verb,
            "user": {"username": user}, "sourceIPs": ["10.0.0.9"],
            "objectRef": {"resource": resource, "subresource": sub, "namespace": "prod", "name": name},
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": time, "stageTimestamp": time,
        })
        .to_string()
    }

    #[test]
    fn context_names_the_objects_changed_and_the_sessions_opened_in_the_hour() {
        let mut t = Tracker::new();
        let q = "?command=mysql&command=-uroot&command=-pkubetrail-redacted%3Alen%3D7%3Ahmac%3DAAAAAAAAAAAAAAAAAAAAAA&container=db&stdin=true&tty=true";
        for (verb, resource, sub, name, query, code, time) in [
            // Two hours before: out of the window.
            (
                "patch",
                "deployments",
                "",
                "old",
                "",
                200,
                "2026-11-25T08:00:00Z",
            ),
            (
                "patch",
                "deployments",
                "",
                "api",
                "",
                200,
                "2026-11-25T09:20:00Z",
            ),
            // Refused: nothing changed.
            (
                "delete",
                "deployments",
                "",
                "refused",
                "",
                403,
                "2026-11-25T09:21:00Z",
            ),
            // Reads change nothing.
            (
                "get",
                "deployments",
                "",
                "read-only",
                "",
                200,
                "2026-11-25T09:22:00Z",
            ),
            (
                "update",
                "deployments",
                "",
                "api",
                "",
                200,
                "2026-11-25T09:25:00Z",
            ),
            (
                "create",
                "pods",
                "exec",
                "db-0",
                q,
                101,
                "2026-11-25T09:30:00Z",
            ),
        ] {
            watch(
                &mut t,
                &touch("eve", (verb, resource, sub, name, query, code, time)),
            );
        }
        // Someone else's write is not eve's.
        watch(
            &mut t,
            &touch(
                "bob",
                (
                    "delete",
                    "deployments",
                    "",
                    "bobs",
                    "",
                    200,
                    "2026-11-25T09:31:00Z",
                ),
            ),
        );
        let ctx = t.context(
            &alert("a", "eve", "2026-11-25T09:40:00Z"),
            &Prior::default(),
            None,
            |_| true,
        );
        assert_eq!(ctx.changed_objects.len(), 1, "{:?}", ctx.changed_objects);
        let api = &ctx.changed_objects[0];
        assert_eq!(
            (api.name.as_str(), api.verbs.clone()),
            ("api", vec!["patch".to_string(), "update".to_string()])
        );
        assert_eq!(api.history, "kubetrail history deployments/api -n prod");
        assert_eq!(api.last, "2026-11-25T09:25:00Z");
        assert_eq!(ctx.sessions.len(), 1);
        assert_eq!(ctx.sessions[0].pod, "prod/db-0");
        assert_eq!(ctx.sessions[0].container.as_deref(), Some("db"));
        assert_eq!(ctx.sessions[0].command, "mysql -uroot '-p[redacted]'");
        // The alert raised by a write names it: alerts carry milliseconds, events microseconds.
        watch(
            &mut t,
            &touch(
                "eve",
                (
                    "patch",
                    "deployments",
                    "",
                    "now",
                    "",
                    200,
                    "2026-11-25T09:41:00.000400Z",
                ),
            ),
        );
        let own = t.context(
            &alert("n", "eve", "2026-11-25T09:41:00.000Z"),
            &Prior::default(),
            None,
            |_| true,
        );
        assert_eq!(own.changed_objects[0].name, "now", "{own:?}");
        // An alert before them sees none of them.
        let early = t.context(
            &alert("b", "eve", "2026-11-25T09:00:00Z"),
            &Prior::default(),
            None,
            |_| true,
        );
        assert!(
            early.changed_objects.is_empty() && early.sessions.is_empty(),
            "{early:?}"
        );
        // Bounded: the latest ten objects.
        for i in 0..30 {
            watch(
                &mut t,
                &touch(
                    "eve",
                    (
                        "patch",
                        "configmaps",
                        "",
                        &format!("cm-{i}"),
                        "",
                        200,
                        "2026-11-25T09:35:00Z",
                    ),
                ),
            );
        }
        let many = t.context(
            &alert("c", "eve", "2026-11-25T09:40:00Z"),
            &Prior::default(),
            None,
            |_| true,
        );
        assert_eq!(many.changed_objects.len(), MAX_TOUCHED);
        assert_eq!(many.changed_objects[0].name, "cm-29", "the latest first");
    }

    #[test]
    fn activity_counts_the_last_hour_by_verb_and_resource_with_failures() {
        let mut t = Tracker::new();
        // Two hours ago: outside the window.
        watch(
            &mut t,
            &event(
                "eve",
                "list",
                "pods",
                200,
                "2026-11-25T08:00:00Z",
                "10.0.0.1",
            ),
        );
        watch(
            &mut t,
            &event(
                "eve",
                "get",
                "secrets",
                403,
                "2026-11-25T09:30:00Z",
                "10.0.0.1",
            ),
        );
        watch(
            &mut t,
            &event(
                "eve",
                "get",
                "secrets",
                403,
                "2026-11-25T09:31:00Z",
                "10.0.0.1",
            ),
        );
        watch(
            &mut t,
            &event(
                "eve",
                "list",
                "secrets",
                200,
                "2026-11-25T09:59:00Z",
                "10.0.0.1",
            ),
        );
        watch(
            &mut t,
            &event(
                "bob",
                "list",
                "secrets",
                200,
                "2026-11-25T09:59:00Z",
                "10.0.0.2",
            ),
        );
        let (prior, _) = watch(
            &mut t,
            &event(
                "eve",
                "list",
                "secrets",
                200,
                "2026-11-25T10:00:00Z",
                "10.0.0.1",
            ),
        );
        let ctx = t.context(
            &alert("a1", "eve", "2026-11-25T10:00:00Z"),
            &prior,
            None,
            |_| true,
        );
        assert_eq!(ctx.activity.requests, 4, "{:?}", ctx.activity);
        assert_eq!(ctx.activity.failures, 2);
        assert_eq!(ctx.activity.top[0].verb, "get");
        assert_eq!(ctx.activity.top[0].resource, "secrets");
        assert_eq!(ctx.activity.top[0].failures, 2);
        assert_eq!(ctx.activity.since, "2026-11-25T09:01:00Z");
    }

    #[test]
    fn first_seen_says_new_for_values_unseen_in_30_days_and_survives_restore() {
        let mut t = Tracker::new();
        let mut log = Vec::new();
        let (_, s) = watch(
            &mut t,
            &event(
                "eve",
                "get",
                "pods",
                200,
                "2026-10-01T00:00:00Z",
                "10.0.0.1",
            ),
        );
        log.extend(s);
        let (_, s) = watch(
            &mut t,
            &event(
                "eve",
                "get",
                "pods",
                200,
                "2026-11-20T00:00:00Z",
                "10.0.0.1",
            ),
        );
        log.extend(s);
        // Restart: only the persisted sightings come back.
        let mut t = Tracker::new();
        for s in log {
            t.restore(s);
        }
        let (prior, _) = watch(
            &mut t,
            &event(
                "eve",
                "get",
                "pods",
                200,
                "2026-11-25T10:00:00Z",
                "192.0.2.9",
            ),
        );
        let ctx = t.context(
            &alert("a", "eve", "2026-11-25T10:00:00Z"),
            &prior,
            None,
            |_| true,
        );
        let id = ctx.first_seen.identity.expect("identity");
        assert!(!id.is_new, "eve was seen on 2026-11-20");
        assert_eq!(
            id.first_seen.as_deref(),
            Some("2026-10-26"),
            "clipped to the 30-day window"
        );
        assert!(
            ctx.first_seen.source_ips[0].is_new,
            "192.0.2.9 was never seen"
        );
        assert_eq!(ctx.first_seen.since, "2026-10-01");

        // A value last seen more than 30 days ago is new again.
        let mut t = Tracker::new();
        watch(
            &mut t,
            &event(
                "mallory",
                "get",
                "pods",
                200,
                "2026-09-01T00:00:00Z",
                "10.0.0.1",
            ),
        );
        let (prior, _) = watch(
            &mut t,
            &event(
                "mallory",
                "get",
                "pods",
                200,
                "2026-11-25T00:00:00Z",
                "10.0.0.1",
            ),
        );
        let ctx = t.context(
            &alert("a", "mallory", "2026-11-25T00:00:00Z"),
            &prior,
            None,
            |_| true,
        );
        assert!(ctx.first_seen.identity.expect("identity").is_new);
    }

    #[test]
    fn other_alerts_lists_the_actors_unresolved_alerts_only() {
        let mut t = Tracker::new();
        t.remember(&alert("a1", "eve", "2026-11-25T09:00:00Z"));
        t.remember(&alert("a2", "eve", "2026-11-25T09:10:00Z"));
        t.remember(&alert("b1", "bob", "2026-11-25T09:10:00Z"));
        let ctx = t.context(
            &alert("a3", "eve", "2026-11-25T10:00:00Z"),
            &Prior::default(),
            None,
            |id| id != "a1",
        );
        let ids: Vec<&str> = ctx.other_alerts.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["a2"]);
    }

    #[test]
    fn policy_consequence_names_what_metadata_hid() {
        let pods =
            policy_consequence(LogLevel::Metadata, "pods", Some(BodyNeed::Request)).expect("hid");
        assert!(
            pods.contains("pod spec") && pods.contains("Request"),
            "{pods}"
        );
        assert!(policy_consequence(LogLevel::Request, "pods", Some(BodyNeed::Request)).is_none());
        assert!(policy_consequence(LogLevel::Metadata, "secrets", None).is_none());
        let resp = policy_consequence(LogLevel::Request, "pods/exec", Some(BodyNeed::Response))
            .expect("hid");
        assert!(resp.contains("RequestResponse"));
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Tracker::new();
        for i in 0..(MAX_ACTORS + 10) {
            let ev = event(
                &format!("u{i}"),
                "get",
                "pods",
                200,
                "2026-11-25T10:00:00Z",
                "10.0.0.1",
            );
            watch(&mut t, &ev);
        }
        assert!(t.windows.len() <= MAX_ACTORS);
    }
}
