//! The audit stream watched as a whole, beside the rules: a source that stops sending
//! (`kt-audit-silence`, then `kt-audit-resumed` naming the gap) and what the apiserver records dropping
//! (`kt-policy-drift`). Rules judge the events that arrive; these judge what no longer does, so they learn each
//! source's rhythm and each kind of request's level first.
//!
//! Time is the caller's, and the clock moves with what is observed. `kubetrail detect` feeds event time
//! ([`Watch::observe`] with no receipt): a gap inside a file alerts, its end does not. `serve` feeds each
//! record's receipt (so a gap in a backlog it reads late is judged as when it happened) and, once it has read
//! the log to its end, calls [`Watch::advance`] with its own clock, so a source is silent now whether or not
//! anything else arrives.
//!
//! - **Silence**, per (cluster, source). Each source keeps 24 hourly slots: events, and the longest pause that
//!   ended in the hour. From the full hours before its last event (after one hour of learning; hours of an
//!   alerted gap excluded) the allowed pause is the largest of `silence_after`, twice the median hourly
//!   longest pause (a source that sends every ten minutes is allowed twenty), and twenty median intervals
//!   (`20 h / median events per hour`: a Poisson source that quiet is a chance of e⁻²⁰). A source with an empty
//!   median hour never alerts: it idles. Excluding alerted gaps means a cut cannot teach the baseline to
//!   tolerate the next one; moving a median takes pauses just under the limit in half of a day's hours.
//! - **Level drift**, per (cluster, API group, resource, subresource, verb, namespace, identity class): the
//!   lowest level of the first 20 requests is the kind's floor; three requests in a row below it raise the
//!   alert (the floor moves down, so it alerts once).
//! - **Vanished kinds**, per (cluster, API group, resource, identity class) for the control plane, nodes,
//!   service accounts and the cloud's components (people come and go): present every hour for six hours, at
//!   least 20 an hour, then none for a whole hour while the cluster sent at least half its usual volume.
//!
//! Bounded: sources and kinds are capped ([`WatchConfig`]); past a cap new ones are not learned and
//! [`WatchStats`] counts them. Pure, like the rest of the crate.

use std::collections::HashMap;

use kubetrail_model::{Event, Stage};
use saphyr::LoadableYamlNode;
use serde::{Deserialize, Serialize};

use crate::alert::{alert_id, hash_parts, parse_time, rfc3339};
use crate::enrich::IdentityClass;
use crate::error::{LoadError, LoadErrors};
use crate::rule::Level;
use crate::{Actor, Alert, AlertRule, Target};

const HOUR: i64 = 3_600_000;
/// Slots of hourly history each source and kind keeps.
const HOURS: usize = 24;
/// Requests of a kind seen before its floor is trusted.
const LEARN: u32 = 20;
/// Requests in a row below the floor that make a drift.
const RUN: u32 = 3;
/// Hours a kind must have been present, and its least count in each, before its absence is a drift.
const PRESENT_HOURS: i64 = 6;
const PRESENT_MIN: u32 = 20;
/// How often [`Watch::advance`] looks for silent sources (milliseconds of its clock).
const CHECK_EVERY: i64 = 1_000;
/// A source that sent at least this many events in its median hour is busy: however its pauses grew, it is
/// never allowed more than [`BUSY_CEILING`] of quiet (a baseline trained by pauses just under the limit
/// cannot make it an idler).
const BUSY_PER_HOUR: u32 = 60;
const BUSY_CEILING: i64 = 2 * HOUR;
/// What has not been seen for this long is forgotten first when a bound is reached.
const STALE: i64 = 7 * 24 * HOUR;
/// Clusters followed at most.
const MAX_CLUSTERS: usize = 1_000;
/// The source name of `kubetrail import`: a load, not a sender (its receipts are the import's own time).
const IMPORT: &str = "import";
/// Each kube-apiserver's identity Lease is a source of its own (`apiserver-lease:<name>`), so one apiserver of
/// several whose trail is cut is seen while the others go on.
const LEASE_SOURCE: &str = "apiserver-lease:";

/// What the watch allows and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// The shortest pause that is a silence (`detection.silence_after`), in milliseconds.
    pub silence_after_ms: i64,
    /// Sources learned at most.
    pub max_sources: usize,
    /// Kinds of request learned at most (level floors and presence each).
    pub max_kinds: usize,
    /// Event times after this (ms) are not believed (`detect` sets a little past its own clock): one event
    /// dated in the future would otherwise move the clock past everything after it.
    pub latest_ms: Option<i64>,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            silence_after_ms: 5 * 60_000,
            max_sources: 10_000,
            max_kinds: 200_000,
            latest_ms: None,
        }
    }
}

/// Counters: when a bound bites, and what was raised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchStats {
    pub silences: u64,
    pub resumptions: u64,
    pub drifts: u64,
    /// New sources not learned because `max_sources` was reached.
    pub sources_over_limit: u64,
    /// New kinds not learned because `max_kinds` was reached.
    pub kinds_over_limit: u64,
    /// Events dated after `latest_ms`, not believed.
    pub future_events: u64,
}

/// What the watch reads of one event: from a parsed [`Event`] (`serve` has one) or from the fields the rules
/// engine extracted anyway ([`crate::Engine::process_seen`], so `detect` parses each event once).
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub audit_id: &'a str,
    pub level: kubetrail_model::Level,
    pub stage: Option<Stage>,
    pub verb: &'a str,
    pub request_uri: &'a str,
    pub username: &'a str,
    pub groups: Vec<&'a str>,
    pub api_group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub code: Option<i64>,
    /// The event's own time (ms): `requestReceivedTimestamp`, else `stageTimestamp`, else `timestamp`.
    pub time: Option<i64>,
    /// Cut for size by the apiserver (`audit.k8s.io/truncated`) or by kubetrail (`kubetrail.io/truncated`).
    pub truncated: bool,
}

impl<'a> From<&'a Event<'a>> for Seen<'a> {
    fn from(e: &'a Event<'a>) -> Seen<'a> {
        let o = e.object_ref.as_ref();
        let part =
            |f: for<'o> fn(&'o kubetrail_model::ObjectReference<'a>) -> &'o str| o.map_or("", f);
        Seen {
            audit_id: &e.audit_id,
            level: e.level,
            stage: Some(e.stage),
            verb: &e.verb,
            request_uri: &e.request_uri,
            username: &e.user.username,
            groups: e.user.groups.iter().map(|g| g.as_ref()).collect(),
            api_group: part(|o| &o.api_group),
            resource: part(|o| &o.resource),
            subresource: part(|o| &o.subresource),
            namespace: part(|o| &o.namespace),
            name: part(|o| &o.name),
            code: e
                .response_status
                .as_ref()
                .and_then(|s| s.code)
                .map(i64::from),
            time: e
                .request_received_timestamp
                .as_deref()
                .or(e.stage_timestamp.as_deref())
                .or(e.timestamp.as_deref())
                .and_then(parse_time),
            truncated: e.annotations.as_ref().is_some_and(|a| {
                a.contains_key("audit.k8s.io/truncated") || a.contains_key("kubetrail.io/truncated")
            }),
        }
    }
}

/// A stream rule's metadata (the files of `kubetrail_rules::stream()`): what its alerts carry.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRule {
    pub id: String,
    pub title: String,
    pub level: Level,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub falsepositives: Vec<String>,
    pub runbook: Option<String>,
}

impl StreamRule {
    /// Reads a stream rule file: Sigma's metadata keys (`id`, `title` and `level` required), no detection.
    pub fn parse(file: &str, yaml: &str) -> Result<StreamRule, LoadErrors> {
        let fail = |reason: String| LoadErrors(vec![LoadError::new(file, 1, 1, reason)]);
        let docs = crate::yaml::Node::load_from_str(yaml)
            .map_err(|e| fail(format!("invalid YAML: {}", e.info())))?;
        let doc = docs
            .first()
            .map(crate::yaml::to_json)
            .ok_or_else(|| fail("the file is empty".into()))?;
        let text = |key: &str| doc.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let need = |key: &str| text(key).ok_or_else(|| fail(format!("`{key}` is required")));
        let level = need("level")?;
        let list = |key: &str| -> Vec<String> {
            doc.get(key)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(StreamRule {
            id: need("id")?,
            title: need("title")?,
            level: level.parse::<Level>().map_err(fail)?,
            tags: list("tags"),
            falsepositives: list("falsepositives"),
            description: text("description"),
            runbook: text("runbook"),
        })
    }
}

/// The three rules the watch raises; `None` where the rule is disabled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamRules {
    pub silence: Option<StreamRule>,
    pub resumed: Option<StreamRule>,
    pub drift: Option<StreamRule>,
}

impl StreamRules {
    /// The rules of `files` (name, YAML), keeping those `enabled` accepts by id.
    pub fn load<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
        enabled: impl Fn(&StreamRule) -> bool,
    ) -> Result<StreamRules, LoadErrors> {
        let mut out = StreamRules::default();
        for (name, yaml) in files {
            let rule = StreamRule::parse(name, yaml)?;
            if !enabled(&rule) {
                continue;
            }
            let slot = match rule.id.as_str() {
                "kt-audit-silence" => &mut out.silence,
                "kt-audit-resumed" => &mut out.resumed,
                "kt-policy-drift" => &mut out.drift,
                other => {
                    return Err(LoadErrors(vec![LoadError::new(
                        name,
                        1,
                        1,
                        format!("`{other}` is not a stream rule this build raises"),
                    )]));
                }
            };
            *slot = Some(rule);
        }
        Ok(out)
    }
}

/// One hour of a rhythm.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Slot {
    hour: i64,
    count: u32,
    /// The longest pause that ended in this hour (ms).
    max_gap: i64,
    /// Part of an alerted gap: left out of the baseline.
    cut: bool,
}

/// The last [`HOURS`] hours, by hour number modulo the ring.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hours([Slot; HOURS]);

impl Hours {
    /// The slot of `hour`, started afresh when it held an older hour; `None` for an hour older than the one
    /// it holds (a late event of a day ago must not wipe this hour's count).
    fn slot(&mut self, hour: i64) -> Option<&mut Slot> {
        let s = &mut self.0[hour.rem_euclid(HOURS as i64) as usize];
        if s.hour > hour {
            return None;
        }
        if s.hour != hour {
            *s = Slot {
                hour,
                ..Slot::default()
            };
        }
        Some(s)
    }

    fn add(&mut self, hour: i64) {
        if let Some(s) = self.slot(hour) {
            s.count = s.count.saturating_add(1);
        }
    }

    fn get(&self, hour: i64) -> Option<Slot> {
        let s = self.0[hour.rem_euclid(HOURS as i64) as usize];
        (s.hour == hour).then_some(s)
    }

    fn count(&self, hour: i64) -> u32 {
        self.get(hour).map_or(0, |s| s.count)
    }
}

/// The first hour that starts at or after `ms`.
fn ceil_hour(ms: i64) -> i64 {
    ms.saturating_add(HOUR - 1).div_euclid(HOUR)
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> Option<T> {
    v.sort_unstable();
    // The lower median: with two hours, the quieter one.
    v.get(v.len().saturating_sub(1) / 2).copied()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Source {
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    name: String,
    first: i64,
    last: i64,
    last_audit_id: String,
    hours: Hours,
    /// Alerted silent (since `last`).
    silent: bool,
    /// Once sent at least [`BUSY_PER_HOUR`] in its median hour (see [`BUSY_CEILING`]).
    #[serde(default)]
    busy: bool,
}

impl Source {
    /// The longest pause allowed after `last`, from the full hours before it; `None` while learning or for a
    /// source that idles.
    fn allowed(&self, silence_after: i64) -> Option<i64> {
        let end = self.last.div_euclid(HOUR);
        // Hours that began at or after the first event: whole hours of history.
        let start = ceil_hour(self.first).max(end - HOURS as i64 + 1);
        let (mut counts, mut gaps) = (Vec::new(), Vec::new());
        for h in start..end {
            let s = self.hours.get(h);
            if s.is_some_and(|s| s.cut) {
                continue;
            }
            let (c, g) = s.map_or((0, HOUR), |s| (s.count, s.max_gap));
            counts.push(c);
            gaps.push(g);
        }
        let count = median(counts);
        let learned = match count {
            None | Some(0) => None,
            Some(count) => {
                let gap = median(gaps).unwrap_or(HOUR);
                Some(
                    silence_after
                        .max(gap.saturating_mul(2))
                        .max(20 * HOUR / i64::from(count)),
                )
            }
        };
        if self.busy {
            // Learning again (or trained into idling) is no excuse for a source that was busy.
            return Some(
                learned
                    .unwrap_or(BUSY_CEILING)
                    .min(BUSY_CEILING)
                    .max(silence_after),
            );
        }
        learned
    }

    /// The median events of its full hours before `last`.
    fn per_hour(&self) -> u32 {
        let end = self.last.div_euclid(HOUR);
        median(
            ((end - HOURS as i64 + 1).max(ceil_hour(self.first))..end)
                .filter(|h| !self.hours.get(*h).is_some_and(|s| s.cut))
                .map(|h| self.hours.count(h))
                .collect(),
        )
        .unwrap_or(0)
    }
}

/// What was recorded of one kind of request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Floor {
    seen: u32,
    floor: kubetrail_model::Level,
    run: u32,
    since: i64,
    #[serde(default)]
    last: i64,
}

/// A kind of request by an identity class, hour by hour.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Presence {
    cluster: String,
    group: String,
    resource: String,
    class: IdentityClass,
    hours: Hours,
    last: i64,
    alerted: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ClusterRhythm {
    hour: i64,
    hours: Hours,
}

/// What a [`Watch`] has learned, to carry it across a restart of `serve` ([`Watch::state`],
/// [`Watch::restore`]): without it, a restart would start learning again and miss a source that stays silent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchState {
    sources: Vec<((String, String), Source)>,
    floors: Vec<(u64, Floor)>,
    presence: Vec<(u64, Presence)>,
    clusters: Vec<(u64, ClusterRhythm)>,
    clock: i64,
}

/// The watch: see the module docs.
#[derive(Debug)]
pub struct Watch {
    cfg: WatchConfig,
    rules: StreamRules,
    /// By [`hash_parts`] of (cluster, source): a lookup per event compares no strings.
    sources: HashMap<u64, Source>,
    floors: HashMap<u64, Floor>,
    presence: HashMap<u64, Presence>,
    /// By [`hash_parts`] of the cluster's name.
    clusters: HashMap<u64, ClusterRhythm>,
    clock: i64,
    checked: i64,
    stats: WatchStats,
}

impl Watch {
    pub fn new(cfg: WatchConfig, rules: StreamRules) -> Watch {
        Watch {
            cfg,
            rules,
            sources: HashMap::new(),
            floors: HashMap::new(),
            presence: HashMap::new(),
            clusters: HashMap::new(),
            clock: i64::MIN,
            checked: i64::MIN,
            stats: WatchStats::default(),
        }
    }

    /// What the watch has learned (see [`WatchState`]).
    pub fn state(&self) -> WatchState {
        WatchState {
            sources: self
                .sources
                .values()
                .map(|v| ((v.cluster.clone(), v.name.clone()), v.clone()))
                .collect(),
            floors: self.floors.iter().map(|(k, v)| (*k, *v)).collect(),
            presence: self.presence.iter().map(|(k, v)| (*k, v.clone())).collect(),
            clusters: self.clusters.iter().map(|(k, v)| (*k, v.clone())).collect(),
            clock: self.clock,
        }
    }

    /// Takes back what an earlier watch learned, within this watch's limits and never later than `now`
    /// (ms; a clock that ran ahead before the restart must not blind the watch until it is caught up).
    pub fn restore(&mut self, state: WatchState, now: i64) {
        let max = self.cfg.max_sources;
        self.sources.extend(
            state
                .sources
                .into_iter()
                .take(max)
                .map(|((cluster, name), mut s)| {
                    s.last = s.last.min(now);
                    s.first = s.first.min(s.last);
                    (s.cluster, s.name) = (cluster, name);
                    (hash_parts(&[&s.cluster, &s.name]), s)
                }),
        );
        let max = self.cfg.max_kinds;
        self.floors.extend(state.floors.into_iter().take(max));
        self.presence.extend(state.presence.into_iter().take(max));
        self.clusters
            .extend(state.clusters.into_iter().take(MAX_CLUSTERS));
        self.clock = self.clock.max(state.clock.min(now));
    }

    /// Event times after `latest` (ms) are not believed (see [`WatchConfig::latest_ms`]).
    pub fn believing_until(mut self, latest: i64) -> Self {
        self.cfg.latest_ms = Some(latest);
        self
    }

    pub fn stats(&self) -> &WatchStats {
        &self.stats
    }

    /// Takes in one stored event of `cluster` from `source`. `received` is when the collector received it
    /// (ms since the epoch; `serve`); without it the event's own time is used and moves the clock (`detect`).
    pub fn observe(
        &mut self,
        cluster: &str,
        source: &str,
        received: Option<i64>,
        event: &Seen<'_>,
        out: &mut Vec<Alert>,
    ) {
        let event_time = event.time;
        // An import's receipts are the import's own time: its events are judged on their own, and it is no
        // sender that can fall silent.
        let import = source == IMPORT;
        let received = received.filter(|_| !import);
        let Some(at) = received.or(event_time) else {
            return;
        };
        if received.is_none() && self.cfg.latest_ms.is_some_and(|l| at > l) {
            self.stats.future_events += 1;
            return;
        }
        let failed = event.code.is_some_and(|c| c >= 400);
        if !import {
            // Receipts come in the log's order and event times in the file's: either moves the clock, so a
            // gap in a backlog read late is judged as when it happened.
            self.advance_ms(at, out);
            self.source(cluster, source, at, event, out);
            if let Some(name) = apiserver_lease(event).filter(|_| !failed) {
                let sub = format!("{LEASE_SOURCE}{name}");
                if event.verb == "delete" {
                    // An apiserver removed for good (its Lease collected) is not a silence.
                    self.sources.remove(&hash_parts(&[cluster, &sub]));
                } else {
                    self.source(cluster, &sub, at, event, out);
                }
            }
        }
        // Levels are learned from requests that did something: a refused or failed request's resource and
        // namespace are the caller's to choose, so they would let anyone fill the kinds with names. An event
        // the apiserver (or kubetrail) cut for size is recorded at a lower level than its rule says.
        if event.stage == Some(Stage::RequestReceived) || failed || event.truncated {
            return;
        }
        let class = IdentityClass::of(event.username, event.groups.iter().copied());
        self.floor(cluster, class, at, event, out);
        self.presence(cluster, class, at, event, out);
    }

    /// Moves the clock to `now` (`serve`: its wall clock, every second or so, once it has read what the log
    /// holds): sources silent for longer than they are allowed alert.
    pub fn advance(&mut self, now: jiff::Timestamp, out: &mut Vec<Alert>) {
        let now = now.as_millisecond();
        // A wall clock set back by more than an hour checks again at once (event times going back, a watch's
        // late stage, never do: that would be a check per such event).
        if now < self.checked.saturating_sub(HOUR) {
            self.checked = i64::MIN;
        }
        self.advance_ms(now, out);
    }

    fn advance_ms(&mut self, now: i64, out: &mut Vec<Alert>) {
        self.clock = self.clock.max(now);
        // Checked every second of the clock.
        if now < self.checked.saturating_add(CHECK_EVERY) {
            return;
        }
        self.checked = now;
        // An apiserver's Lease is silent only while its cluster's other sources go on: when the whole
        // stream stops, that is the one alert.
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for s in self.sources.values() {
            if !s.name.starts_with(LEASE_SOURCE) {
                let l = latest.entry(s.cluster.as_str()).or_insert(i64::MIN);
                *l = (*l).max(s.last);
            }
        }
        let silence_after = self.cfg.silence_after_ms;
        let mut found: Vec<(&str, &str, u64, i64)> = self
            .sources
            .iter()
            .filter(|(_, s)| !s.silent)
            .filter_map(|(k, s)| {
                let allowed = s.allowed(silence_after)?;
                let quiet = now.saturating_sub(s.last) > allowed;
                let others_go_on = !s.name.starts_with(LEASE_SOURCE)
                    || latest
                        .get(s.cluster.as_str())
                        .is_some_and(|l| l.saturating_sub(s.last) > allowed);
                (quiet && others_go_on).then_some((
                    s.cluster.as_str(),
                    s.name.as_str(),
                    *k,
                    allowed,
                ))
            })
            .collect();
        found.sort();
        let found: Vec<(u64, i64)> = found.into_iter().map(|(_, _, k, a)| (k, a)).collect();
        for (key, allowed) in found {
            let Some(s) = self.sources.get_mut(&key) else {
                continue;
            };
            let (cluster, source) = (s.cluster.clone(), s.name.clone());
            s.silent = true;
            self.stats.silences += 1;
            let Some(rule) = &self.rules.silence else {
                continue;
            };
            let summary = format!(
                "{} sent no audit event since {} (over {}; it allows {} of quiet, and sent about {} events an \
                 hour): its audit trail may be cut",
                who(&cluster, &source),
                rfc3339(s.last),
                span(now.saturating_sub(s.last)),
                span(allowed),
                s.per_hour(),
            );
            out.push(stream_alert(
                rule,
                &["kt-audit-silence", &cluster, &source, &s.last.to_string()],
                &cluster,
                &source,
                vec![s.last_audit_id.clone()],
                s.last,
                now,
                summary,
            ));
        }
    }

    fn source(
        &mut self,
        cluster: &str,
        source: &str,
        at: i64,
        event: &Seen<'_>,
        out: &mut Vec<Alert>,
    ) {
        let key = hash_parts(&[cluster, source]);
        if !self.sources.contains_key(&key) {
            if self.sources.len() >= self.cfg.max_sources {
                // Full: what has not sent for a week goes first.
                let clock = self.clock;
                self.sources
                    .retain(|_, s| clock.saturating_sub(s.last) < STALE);
                if self.sources.len() >= self.cfg.max_sources {
                    self.stats.sources_over_limit += 1;
                    return;
                }
            }
            self.sources.insert(
                key,
                Source {
                    cluster: cluster.to_string(),
                    name: source.to_string(),
                    first: at,
                    last: at,
                    last_audit_id: String::new(),
                    hours: Hours::default(),
                    silent: false,
                    busy: false,
                },
            );
        }
        let Some(s) = self.sources.get_mut(&key) else {
            return;
        };
        let hour = at.div_euclid(HOUR);
        if at < s.last {
            // Out of order (a late stage, a replayed batch): counted, never a pause.
            if s.hours.get(hour).is_some() {
                s.hours.add(hour);
            }
            return;
        }
        let gap = at - s.last;
        let from = s.last;
        if hour > from.div_euclid(HOUR) && !s.busy {
            // A new hour: judge whether the source is busy from the hours it completed.
            s.busy = s.per_hour() >= BUSY_PER_HOUR;
        }
        if s.silent {
            s.silent = false;
            for h in from.div_euclid(HOUR).max(hour - HOURS as i64)..=hour {
                if let Some(slot) = s.hours.slot(h) {
                    slot.cut = true;
                }
            }
            self.stats.resumptions += 1;
            if let Some(rule) = &self.rules.resumed {
                let summary = format!(
                    "{} sent audit events again at {} after {} without any (since {}): nothing that happened in \
                     between is in the trail",
                    who(cluster, source),
                    rfc3339(at),
                    span(gap),
                    rfc3339(from),
                );
                out.push(stream_alert(
                    rule,
                    &["kt-audit-resumed", cluster, source, &from.to_string()],
                    cluster,
                    source,
                    vec![s.last_audit_id.clone(), event.audit_id.to_string()],
                    at,
                    at,
                    summary,
                ));
            }
        } else if let Some(slot) = s.hours.slot(hour) {
            slot.max_gap = slot.max_gap.max(gap);
        }
        s.hours.add(hour);
        s.last = at;
        s.last_audit_id.clear();
        s.last_audit_id.push_str(event.audit_id);
    }

    fn floor(
        &mut self,
        cluster: &str,
        class: IdentityClass,
        at: i64,
        event: &Seen<'_>,
        out: &mut Vec<Alert>,
    ) {
        let (group, resource, sub, ns) = (
            event.api_group,
            event.resource,
            event.subresource,
            event.namespace,
        );
        let key = hash_parts(&[
            cluster,
            group,
            resource,
            sub,
            event.verb,
            ns,
            class.as_str(),
        ]);
        let level = event.level;
        if !self.floors.contains_key(&key) && self.floors.len() >= self.cfg.max_kinds {
            // Full: kinds not seen for a week go first.
            let clock = self.clock;
            self.floors
                .retain(|_, f| clock.saturating_sub(f.last) < STALE);
            if self.floors.len() >= self.cfg.max_kinds {
                self.stats.kinds_over_limit += 1;
                return;
            }
        }
        let f = self.floors.entry(key).or_insert(Floor {
            seen: 0,
            floor: level,
            run: 0,
            since: at,
            last: at,
        });
        f.last = f.last.max(at);
        if f.seen < LEARN {
            f.seen += 1;
            f.floor = f.floor.min(level);
            return;
        }
        f.seen = f.seen.saturating_add(1);
        if level >= f.floor {
            f.run = 0;
            return;
        }
        if f.run == 0 {
            f.since = at;
        }
        f.run += 1;
        if f.run < RUN {
            return;
        }
        let (was, since, seen) = (f.floor, f.since, f.seen - RUN);
        f.floor = level;
        f.run = 0;
        self.stats.drifts += 1;
        let Some(rule) = &self.rules.drift else {
            return;
        };
        let what = kind(event.verb, group, resource, sub, ns, class);
        let lost = match (was, level) {
            (kubetrail_model::Level::RequestResponse, kubetrail_model::Level::Request) => {
                "the response bodies are no longer recorded"
            }
            (_, kubetrail_model::Level::Metadata) => "the request bodies are no longer recorded",
            _ => "less of each request is recorded",
        };
        let summary = format!(
            "{what} in cluster `{cluster}` was recorded at {} ({seen} requests), and at {} since {}: {lost}",
            was.as_str(),
            level.as_str(),
            rfc3339(since),
        );
        let mut a = stream_alert(
            rule,
            &[
                "kt-policy-drift",
                cluster,
                &key.to_string(),
                &since.to_string(),
            ],
            cluster,
            event.username,
            vec![event.audit_id.to_string()],
            since,
            at,
            summary,
        );
        a.actor.groups = event.groups.iter().map(|g| g.to_string()).collect();
        a.target = Some(Target {
            verb: event.verb.to_string(),
            resource: (!resource.is_empty()).then(|| resource.to_string()),
            subresource: (!sub.is_empty()).then(|| sub.to_string()),
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: None,
            request_uri: event.request_uri.to_string(),
        });
        out.push(a);
    }

    fn presence(
        &mut self,
        cluster: &str,
        class: IdentityClass,
        at: i64,
        event: &Seen<'_>,
        out: &mut Vec<Alert>,
    ) {
        let hour = at.div_euclid(HOUR);
        // The cluster's hour turns: judge the hour that just ended.
        let cluster_key = hash_parts(&[cluster]);
        if !self.clusters.contains_key(&cluster_key) {
            if self.clusters.len() >= MAX_CLUSTERS {
                self.stats.kinds_over_limit += 1;
                return;
            }
            self.clusters.insert(cluster_key, ClusterRhythm::default());
        }
        let Some(rhythm) = self.clusters.get_mut(&cluster_key) else {
            return;
        };
        let turned = (hour > rhythm.hour).then_some(rhythm.hour);
        if turned.is_some() {
            rhythm.hour = hour;
        }
        rhythm.hours.add(hour);
        if let Some(ended) = turned
            && ended == hour - 1
        {
            self.vanished(cluster, ended, out);
        }
        // The control plane and the nodes never sleep; people, workloads and operators come and go (and
        // anyone who runs a workload could page by stopping one).
        if !matches!(class, IdentityClass::ControlPlane | IdentityClass::Node) {
            return;
        }
        if event.resource.is_empty() {
            return;
        }
        let key = hash_parts(&[cluster, event.api_group, event.resource, class.as_str()]);
        if !self.presence.contains_key(&key) && self.presence.len() >= self.cfg.max_kinds {
            let clock = self.clock;
            self.presence
                .retain(|_, p| clock.saturating_sub(p.last) < STALE);
            if self.presence.len() >= self.cfg.max_kinds {
                self.stats.kinds_over_limit += 1;
                return;
            }
        }
        let p = self.presence.entry(key).or_insert_with(|| Presence {
            cluster: cluster.to_string(),
            group: event.api_group.to_string(),
            resource: event.resource.to_string(),
            class,
            hours: Hours::default(),
            last: at,
            alerted: false,
        });
        p.hours.add(hour);
        p.last = p.last.max(at);
        p.alerted = false;
    }

    /// Kinds of `cluster` present every hour that are absent in `ended`, while the cluster was not silent.
    /// The hour before `ended` may be partly present (a kind cut early in an hour is judged in the next one);
    /// the six before it must each hold [`PRESENT_MIN`].
    fn vanished(&mut self, cluster: &str, ended: i64, out: &mut Vec<Alert>) {
        let Some(rhythm) = self.clusters.get(&hash_parts(&[cluster])) else {
            return;
        };
        let sent = rhythm.hours.count(ended);
        if sent == 0 {
            return; // the whole cluster was silent: that is kt-audit-silence's
        }
        let before = ended - 1 - PRESENT_HOURS..ended - 1;
        let mut gone: Vec<&mut Presence> = self
            .presence
            .values_mut()
            .filter(|p| {
                !p.alerted
                    && p.cluster == cluster
                    && p.hours.count(ended) == 0
                    && p.hours.count(ended - 1) > 0
                    && before.clone().all(|h| p.hours.count(h) >= PRESENT_MIN)
            })
            .collect();
        gone.sort_by(|a, b| {
            (&a.group, &a.resource, a.class.as_str()).cmp(&(
                &b.group,
                &b.resource,
                b.class.as_str(),
            ))
        });
        for p in gone {
            p.alerted = true;
            self.stats.drifts += 1;
            let Some(rule) = &self.rules.drift else {
                continue;
            };
            let usual_kind =
                median(before.clone().map(|h| p.hours.count(h)).collect()).unwrap_or(0);
            let resource = match p.group.as_str() {
                "" => p.resource.clone(),
                g => format!("{}.{g}", p.resource),
            };
            let summary = format!(
                "`{resource}` requests by {} identities in cluster `{cluster}` are no longer recorded: about \
                 {usual_kind} an hour for {PRESENT_HOURS} hours, the last at {}, then none in the hour from {} \
                 while the cluster sent {sent} events",
                p.class.as_str(),
                rfc3339(p.last),
                rfc3339(ended * HOUR),
            );
            let mut a = stream_alert(
                rule,
                &[
                    "kt-policy-drift",
                    cluster,
                    &resource,
                    p.class.as_str(),
                    &ended.to_string(),
                ],
                cluster,
                &format!("({} identities)", p.class.as_str()),
                Vec::new(),
                p.last,
                (ended + 1) * HOUR,
                summary,
            );
            a.target = Some(Target {
                verb: String::new(),
                resource: Some(p.resource.clone()),
                ..Target::default()
            });
            out.push(a);
        }
    }
}

/// The name of the kube-apiserver identity Lease an event writes (by `system:apiserver`, in kube-system,
/// named `apiserver-*`), if it does.
fn apiserver_lease<'e>(event: &Seen<'e>) -> Option<&'e str> {
    (event.resource == "leases"
        && event.namespace == "kube-system"
        && event.name.starts_with("apiserver-")
        && event.username == "system:apiserver"
        && matches!(event.verb, "create" | "update" | "patch" | "delete"))
    .then_some(event.name)
}

fn who(cluster: &str, source: &str) -> String {
    if let Some(lease) = source.strip_prefix(LEASE_SOURCE) {
        let of = if cluster.is_empty() {
            String::new()
        } else {
            format!(" of cluster `{cluster}`")
        };
        return format!(
            "kube-apiserver `{lease}`{of} (the renewals of its identity Lease, while the cluster's other \
             requests go on)"
        );
    }
    match (cluster, source) {
        ("", "") => "the audit input".to_string(),
        ("", s) => format!("source `{s}`"),
        (c, "") => format!("cluster `{c}`"),
        (c, s) => format!("cluster `{c}`'s source `{s}`"),
    }
}

fn kind(
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    ns: &str,
    class: IdentityClass,
) -> String {
    let mut r = resource.to_string();
    if !sub.is_empty() {
        r = format!("{r}/{sub}");
    }
    if !group.is_empty() {
        r = format!("{r}.{group}");
    }
    let place = if ns.is_empty() {
        String::new()
    } else {
        format!(" in namespace `{ns}`")
    };
    format!("`{verb} {r}`{place} by {} identities", class.as_str())
}

/// A length of time as people read it: `32m 10s`, `2h 5m`, `45s`.
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m {s}s"),
        (h, m) => format!("{h}h {m}m"),
    }
}

#[allow(clippy::too_many_arguments)]
fn stream_alert(
    rule: &StreamRule,
    id: &[&str],
    cluster: &str,
    actor: &str,
    audit_ids: Vec<String>,
    from: i64,
    to: i64,
    summary: String,
) -> Alert {
    Alert {
        id: alert_id(id),
        rule: AlertRule {
            id: rule.id.clone(),
            title: rule.title.clone(),
        },
        severity: rule.level,
        audit_ids: audit_ids.into_iter().filter(|a| !a.is_empty()).collect(),
        time: rfc3339(from),
        actor: Actor {
            username: if actor.is_empty() {
                "(audit input)".to_string()
            } else {
                actor.to_string()
            },
            ..Actor::default()
        },
        source_ips: Vec::new(),
        summary,
        count: 1,
        last_time: rfc3339(to),
        update: false,
        target: None,
        user_agent: None,
        attack: rule
            .tags
            .iter()
            .filter_map(|t| {
                let t = t.strip_prefix("attack.t")?;
                Some(format!("T{}", t.to_ascii_uppercase()))
            })
            .collect(),
        tags: rule.tags.clone(),
        runbook: rule.runbook.clone(),
        cluster: (!cluster.is_empty()).then(|| cluster.to_string()),
        resolved: None,
        detected: None,
        context: None,
        console: None,
        investigate: Vec::new(),
        suppressed: None,
        owner: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn rules() -> StreamRules {
        StreamRules::load(
            kubetrail_rules::stream().iter().map(|f| (f.name, f.yaml)),
            |_| true,
        )
        .expect("the stream rules load")
    }

    fn watch() -> Watch {
        Watch::new(WatchConfig::default(), rules())
    }

    struct Req<'a> {
        user: &'a str,
        groups: &'a str,
        verb: &'a str,
        resource: &'a str,
        ns: &'a str,
        level: &'a str,
    }

    const LEASE: Req<'static> = Req {
        user: "system:node:n1",
        groups: r#""system:nodes""#,
        verb: "update",
        resource: "leases",
        ns: "kube-node-lease",
        level: "Metadata",
    };

    fn json(at: i64, id: u64, r: &Req<'_>) -> String {
        format!(
            r#"{{"kind":"Event","level":"{}","auditID":"a{id}","stage":"ResponseComplete","verb":"{}","requestURI":"/x","user":{{"username":"{}","groups":[{}]}},"objectRef":{{"resource":"{}","namespace":"{}"}},"requestReceivedTimestamp":"{}","stageTimestamp":"{}"}}"#,
            r.level,
            r.verb,
            r.user,
            r.groups,
            r.resource,
            r.ns,
            rfc3339(at),
            rfc3339(at)
        )
    }

    fn feed(w: &mut Watch, at: i64, id: u64, r: &Req<'_>, received: bool, out: &mut Vec<Alert>) {
        let text = json(at, id, r);
        let e = Event::parse(&text).expect("event");
        w.observe(
            "c1",
            "webhook:apiserver",
            received.then_some(at),
            &Seen::from(&e),
            out,
        );
    }

    fn ids(out: &[Alert]) -> Vec<&str> {
        out.iter().map(|a| a.rule.id.as_str()).collect()
    }

    #[test]
    fn a_gap_inside_the_stream_alerts_and_its_end_does_not() {
        let mut w = watch();
        let mut out = Vec::new();
        let mut id = 0;
        // Two hours every 10 s, 30 minutes of nothing, an hour more.
        for at in (T0..T0 + 2 * HOUR)
            .step_by(10_000)
            .chain((T0 + 2 * HOUR + 30 * 60_000..T0 + 3 * HOUR).step_by(10_000))
        {
            id += 1;
            feed(&mut w, at, id, &LEASE, false, &mut out);
        }
        assert_eq!(
            ids(&out),
            ["kt-audit-silence", "kt-audit-resumed"],
            "{out:#?}"
        );
        let last = T0 + 2 * HOUR - 10_000;
        assert_eq!(
            out[0].time,
            rfc3339(last),
            "the silence starts at the last event"
        );
        assert_eq!(out[0].severity, Level::Critical);
        assert!(out[1].summary.contains("30m 10s"), "{}", out[1].summary);
        assert_eq!(out[0].cluster.as_deref(), Some("c1"));
        assert!(
            out[0]
                .runbook
                .as_deref()
                .unwrap_or("")
                .contains("kubetrail gaps")
        );
    }

    #[test]
    fn a_cut_does_not_teach_the_baseline_to_tolerate_the_next() {
        let mut w = watch();
        let mut out = Vec::new();
        let mut at = T0;
        let mut id = 0;
        for cut in 0..3 {
            let end = at + 2 * HOUR;
            while at < end {
                id += 1;
                feed(&mut w, at, id, &LEASE, false, &mut out);
                at += 10_000;
            }
            at += (20 + cut * 10) * 60_000;
        }
        let silences = out
            .iter()
            .filter(|a| a.rule.id == "kt-audit-silence")
            .count();
        assert_eq!(
            silences,
            2,
            "both cuts followed by traffic alert: {:?}",
            ids(&out)
        );
    }

    #[test]
    fn a_source_that_idles_never_pages() {
        // A quiet cluster: a request now and then (exponential pauses, mean 100 s) for two days.
        let mut w = watch();
        let mut out = Vec::new();
        let mut seed: u64 = 7;
        let mut at = T0;
        for id in 0..1800 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let u = ((seed >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            at += (-u.ln() * 100_000.0) as i64;
            feed(&mut w, at, id, &LEASE, false, &mut out);
        }
        assert!(
            out.is_empty(),
            "{:?}",
            out.iter().map(|a| &a.summary).collect::<Vec<_>>()
        );
    }

    #[test]
    fn serve_judges_silence_on_its_own_clock_after_learning() {
        let mut w = watch();
        let mut out = Vec::new();
        // Half an hour of history is still learning: silence is not judged.
        for (id, at) in (T0..T0 + HOUR / 2).step_by(10_000).enumerate() {
            feed(&mut w, at, id as u64, &LEASE, true, &mut out);
        }
        w.advance_ms(T0 + 3 * HOUR, &mut out);
        assert!(out.is_empty(), "{:?}", ids(&out));
        let mut w = watch();
        for (id, at) in (T0..T0 + 3 * HOUR).step_by(10_000).enumerate() {
            feed(&mut w, at, id as u64, &LEASE, true, &mut out);
        }
        let last = T0 + 3 * HOUR - 10_000;
        w.advance_ms(last + 4 * 60_000, &mut out);
        assert!(out.is_empty(), "four minutes is within silence_after");
        w.advance_ms(last + 6 * 60_000, &mut out);
        assert_eq!(ids(&out), ["kt-audit-silence"]);
        w.advance_ms(last + 60 * 60_000, &mut out);
        assert_eq!(out.len(), 1, "a silence alerts once");
        feed(&mut w, last + 61 * 60_000, 9_999, &LEASE, true, &mut out);
        assert_eq!(ids(&out), ["kt-audit-silence", "kt-audit-resumed"]);
        assert!(out[1].summary.contains("1h 1m"), "{}", out[1].summary);
    }

    #[test]
    fn disabled_stream_rules_raise_nothing() {
        let rules = StreamRules::load(
            kubetrail_rules::stream().iter().map(|f| (f.name, f.yaml)),
            |r| r.id != "kt-audit-silence",
        )
        .expect("load");
        let mut w = Watch::new(WatchConfig::default(), rules);
        let mut out = Vec::new();
        for (id, at) in (T0..T0 + 3 * HOUR).step_by(10_000).enumerate() {
            feed(&mut w, at, id as u64, &LEASE, true, &mut out);
        }
        w.advance_ms(T0 + 5 * HOUR, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.stats().silences, 1, "still counted");
    }

    #[test]
    fn a_level_that_drops_is_a_drift_once() {
        let mut w = watch();
        let mut out = Vec::new();
        let mut create = Req {
            user: "alice",
            groups: r#""system:authenticated""#,
            verb: "create",
            resource: "secrets",
            ns: "prod",
            level: "Request",
        };
        let mut at = T0;
        for id in 0..30 {
            feed(&mut w, at, id, &create, false, &mut out);
            at += 60_000;
        }
        // A lone lower request is not a drift; three in a row are, once.
        create.level = "Metadata";
        feed(&mut w, at, 100, &create, false, &mut out);
        create.level = "Request";
        feed(&mut w, at + 1, 101, &create, false, &mut out);
        assert!(out.is_empty(), "{:?}", ids(&out));
        create.level = "Metadata";
        for id in 200..210 {
            at += 60_000;
            feed(&mut w, at, id, &create, false, &mut out);
        }
        assert_eq!(ids(&out), ["kt-policy-drift"]);
        let s = &out[0].summary;
        assert!(
            s.contains("`create secrets` in namespace `prod` by human identities")
                && s.contains("recorded at Request")
                && s.contains("at Metadata since"),
            "{s}"
        );
        assert_eq!(out[0].time, rfc3339(T0 + 31 * 60_000));
        assert_eq!(
            out[0].target.as_ref().map(|t| t.verb.as_str()),
            Some("create")
        );
    }

    #[test]
    fn mixed_levels_while_learning_set_the_floor() {
        let mut w = watch();
        let mut out = Vec::new();
        let mut r = Req {
            user: "alice",
            groups: "",
            verb: "update",
            resource: "configmaps",
            ns: "prod",
            level: "Request",
        };
        for id in 0..100 {
            r.level = if id % 4 == 0 { "Metadata" } else { "Request" };
            feed(&mut w, T0 + id as i64 * 1000, id, &r, false, &mut out);
        }
        assert!(out.is_empty(), "{:?}", ids(&out));
    }

    #[test]
    fn a_kind_that_vanishes_while_the_cluster_sends_is_a_drift() {
        let mut w = watch();
        let mut out = Vec::new();
        let pods = Req {
            user: "system:kube-controller-manager",
            groups: "",
            verb: "list",
            resource: "pods",
            ns: "",
            level: "Metadata",
        };
        let human = Req {
            user: "bob",
            groups: "",
            verb: "get",
            resource: "deployments",
            ns: "prod",
            level: "Metadata",
        };
        let mut id = 0;
        // Eight hours: node leases, people and the controller manager; then a policy that drops leases.
        for at in (T0..T0 + 10 * HOUR).step_by(30_000) {
            let hour = (at - T0) / HOUR;
            let mut reqs = vec![&pods, &pods, &pods];
            if hour < 8 {
                reqs.push(&LEASE);
                reqs.push(&human);
            }
            for r in reqs {
                id += 1;
                feed(&mut w, at, id, r, false, &mut out);
            }
        }
        assert_eq!(ids(&out), ["kt-policy-drift"], "{out:#?}");
        let s = &out[0].summary;
        assert!(
            s.contains("`leases.coordination.k8s.io`") || s.contains("`leases`"),
            "{s}"
        );
        assert!(
            s.contains("node identities"),
            "people come and go: only the node's lease: {s}"
        );
    }

    #[test]
    fn refused_requests_teach_nothing_and_the_kinds_are_bounded() {
        let mut w = Watch::new(
            WatchConfig {
                max_kinds: 10,
                ..WatchConfig::default()
            },
            rules(),
        );
        let mut out = Vec::new();
        // A flood of 404s to made-up namespaces learns nothing.
        for id in 0..1000 {
            let ns = format!("ns-{id}");
            let text = json(T0 + id as i64, id, &Req { ns: &ns, ..LEASE })
                .replace(r#""stage":"#, r#""responseStatus":{"code":404},"stage":"#);
            let e = Event::parse(&text).unwrap();
            w.observe("c1", "s", None, &Seen::from(&e), &mut out);
        }
        assert_eq!(w.state().floors.len(), 0);
        // Successful ones fill the kinds up to the bound, and the rest are counted.
        for id in 0..20 {
            let ns = format!("ns-{id}");
            let text = json(T0 + 2000 + id as i64, id, &Req { ns: &ns, ..LEASE });
            let e = Event::parse(&text).unwrap();
            w.observe("c1", "s", None, &Seen::from(&e), &mut out);
        }
        assert_eq!(w.state().floors.len(), 10);
        assert_eq!(w.stats().kinds_over_limit, 10);
    }

    fn apiserver_renewal(name: &str) -> Req<'_> {
        Req {
            user: "system:apiserver",
            groups: r#""system:masters""#,
            verb: "update",
            resource: "leases",
            ns: "kube-system",
            level: "Metadata",
        }
        .named(name)
    }

    impl<'a> Req<'a> {
        /// The request with an object name (through the namespace field's JSON, which `json` prints raw).
        fn named(self, name: &'a str) -> Req<'a> {
            Req {
                resource: "leases",
                ns: leak(format!(r#"kube-system","name":"{name}"#)),
                ..self
            }
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// Three apiservers behind one webhook identity: when one's trail is cut (its Lease renewals stop while
    /// the others go on) that apiserver alone is silent; when the whole stream stops, only the source is.
    #[test]
    fn one_apiserver_of_several_cut_is_seen_and_a_whole_cut_alerts_once() {
        let mut w = watch();
        let mut out = Vec::new();
        let names = ["apiserver-aaa", "apiserver-bbb", "apiserver-ccc"];
        let mut id = 0;
        let mut feed_all = |w: &mut Watch, at: i64, with: &[&str], out: &mut Vec<Alert>| {
            for n in with {
                id += 1;
                feed(w, at, id, &apiserver_renewal(n), true, out);
            }
            id += 1;
            feed(w, at + 1, id, &LEASE, true, out);
        };
        for at in (T0..T0 + 3 * HOUR).step_by(10_000) {
            feed_all(&mut w, at, &names, &mut out);
        }
        // apiserver-bbb's audit output is cut; the other two go on.
        for at in (T0 + 3 * HOUR..T0 + 4 * HOUR).step_by(10_000) {
            feed_all(&mut w, at, &[names[0], names[2]], &mut out);
        }
        assert_eq!(ids(&out), ["kt-audit-silence"], "{out:#?}");
        assert!(
            out[0].summary.contains("kube-apiserver `apiserver-bbb`"),
            "{}",
            out[0].summary
        );
        // Then everything stops: one alert for the source, none for the apiservers' Leases.
        out.clear();
        w.advance_ms(T0 + 5 * HOUR, &mut out);
        assert_eq!(ids(&out), ["kt-audit-silence"]);
        assert!(
            out[0].summary.contains("webhook:apiserver"),
            "{}",
            out[0].summary
        );
    }

    /// A line dated in the future (a skewed clock, a forged line) in `detect` is not believed: the cut
    /// after it is still seen.
    #[test]
    fn a_future_event_does_not_blind_detect() {
        let mut w = watch().believing_until(T0 + 10 * HOUR);
        let mut out = Vec::new();
        let mut id = 0;
        for at in (T0..T0 + 2 * HOUR).step_by(10_000) {
            id += 1;
            feed(&mut w, at, id, &LEASE, false, &mut out);
        }
        feed(&mut w, T0 + 1000 * HOUR, 0, &LEASE, false, &mut out);
        assert!(out.is_empty(), "{:?}", ids(&out));
        assert_eq!(w.stats().future_events, 1);
        for at in (T0 + 2 * HOUR + 30 * 60_000..T0 + 3 * HOUR).step_by(10_000) {
            id += 1;
            feed(&mut w, at, id, &LEASE, false, &mut out);
        }
        assert_eq!(ids(&out), ["kt-audit-silence", "kt-audit-resumed"]);
    }

    /// A late event of a day ago must not wipe the hour that now uses its slot.
    #[test]
    fn an_old_hour_never_wipes_the_current_one() {
        let mut h = Hours::default();
        for _ in 0..5 {
            h.add(100);
        }
        h.add(100 - HOURS as i64);
        assert_eq!(h.count(100), 5);
        assert!(h.slot(100 - HOURS as i64).is_none());
    }

    /// Events the apiserver cut for size are recorded at a lower level than their rule: they teach no floor
    /// and raise no drift (else three big objects would lower the floor for good).
    #[test]
    fn truncated_events_are_no_drift() {
        let mut w = watch();
        let mut out = Vec::new();
        let mut r = Req {
            user: "alice",
            groups: "",
            verb: "create",
            resource: "pods",
            ns: "prod",
            level: "Request",
        };
        for id in 0..30 {
            feed(&mut w, T0 + id as i64 * 1000, id, &r, false, &mut out);
        }
        r.level = "Metadata";
        for id in 30..40 {
            let text = json(T0 + id as i64 * 1000, id, &r).replace(
                r#""stage":"#,
                r#""annotations":{"audit.k8s.io/truncated":"true"},"stage":"#,
            );
            let e = Event::parse(&text).unwrap();
            w.observe("c1", "s", None, &Seen::from(&e), &mut out);
        }
        assert!(out.is_empty(), "{:?}", ids(&out));
    }

    /// A busy source whose pauses were trained to grow (or that learns again) is never allowed more than
    /// two hours of quiet.
    #[test]
    fn a_busy_source_has_a_ceiling() {
        let mut s = Source {
            cluster: String::new(),
            name: String::new(),
            first: T0,
            last: T0 + 30 * HOUR,
            last_audit_id: String::new(),
            hours: Hours::default(),
            silent: false,
            busy: false,
        };
        // Every hour: a pause of 90 minutes ended in it, and few events.
        for h in T0 / HOUR..T0 / HOUR + 30 {
            let slot = s.hours.slot(h).unwrap();
            slot.count = 2;
            slot.max_gap = 90 * 60_000;
        }
        assert_eq!(
            s.allowed(300_000),
            Some(10 * HOUR),
            "trained: twenty of its intervals"
        );
        s.busy = true;
        assert_eq!(s.allowed(300_000), Some(BUSY_CEILING));
        s.hours = Hours::default();
        assert_eq!(
            s.allowed(300_000),
            Some(BUSY_CEILING),
            "idling is no excuse"
        );
    }

    /// What was learned comes back after a restart, but a clock that ran ahead does not.
    #[test]
    fn restore_takes_back_what_was_learned_but_not_a_clock_ahead() {
        let mut w = watch();
        let mut out = Vec::new();
        for (id, at) in (T0..T0 + 3 * HOUR).step_by(10_000).enumerate() {
            feed(&mut w, at, id as u64, &LEASE, true, &mut out);
        }
        w.advance_ms(T0 + 100 * HOUR, &mut out);
        out.clear();
        let state: WatchState =
            serde_json::from_str(&serde_json::to_string(&w.state()).unwrap()).unwrap();
        let mut back = watch();
        back.restore(state, T0 + 3 * HOUR);
        assert!(back.clock <= T0 + 3 * HOUR);
        back.sources.values_mut().for_each(|s| s.silent = false);
        back.advance_ms(T0 + 3 * HOUR + 10 * 60_000, &mut out);
        assert_eq!(
            ids(&out),
            ["kt-audit-silence"],
            "judged at once, without learning again"
        );
    }

    /// Node leases cut a minute into an hour, being most of the cluster's volume: still a drift, judged in
    /// the next hour (a cut early in an hour, or a cut of most of the traffic, must not hide it).
    #[test]
    fn a_kind_cut_early_in_an_hour_and_most_of_the_volume_is_a_drift() {
        let mut w = watch();
        let mut out = Vec::new();
        let pods = Req {
            user: "system:kube-controller-manager",
            groups: "",
            verb: "list",
            resource: "pods",
            ns: "",
            level: "Metadata",
        };
        let cut = T0 + 8 * HOUR + 60_000;
        let mut id = 0;
        for at in (T0..T0 + 11 * HOUR).step_by(10_000) {
            let reqs: &[&Req<'_>] = if at < cut {
                &[&LEASE, &LEASE, &LEASE, &LEASE, &pods]
            } else {
                &[&pods]
            };
            for r in reqs {
                id += 1;
                feed(&mut w, at, id, r, false, &mut out);
            }
        }
        assert_eq!(ids(&out), ["kt-policy-drift"], "{out:#?}");
        assert!(
            out[0].summary.contains("node identities"),
            "{}",
            out[0].summary
        );
    }
}
