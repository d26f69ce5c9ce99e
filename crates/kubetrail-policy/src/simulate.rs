//! `policy simulate`: replay recorded events through a policy and report what it would keep and cost.
//!
//! Bytes kept are estimated from the recorded event: a level below the recorded one drops `responseObject`
//! (Request) or both bodies (Metadata); a level above it cannot add bodies that were never recorded. Group
//! counters are bounded ([`MAX_GROUPS`] keys per grain; the rest is counted as overflow), so any input size
//! runs in bounded memory.

use std::collections::HashMap;

use kubetrail_model::{Event, Level, Stage};
use serde::Serialize;

use crate::{Decision, Policy};

/// Share of kept events above which a group is reported as noisy.
pub const NOISY_SHARE: f64 = 0.10;
/// Distinct keys tracked per grain before new keys are counted as overflow.
pub const MAX_GROUPS: usize = 100_000;

/// Groups that say nothing about an identity (every authenticated request carries them).
const UNINFORMATIVE_GROUPS: &[&str] = &["system:authenticated", "system:unauthenticated"];

/// The grain of a noisy group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    User,
    UserVerb,
    UserVerbResource,
    UserGroup,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    grain: Grain,
    /// The username, or the group name for [`Grain::UserGroup`].
    who: String,
    verb: Option<String>,
    /// `(apiGroup, resource[/subresource])` for resource requests, `("", path)` for non-resource ones.
    target: Option<Target>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Resource { group: String, resource: String },
    Url(String),
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub events: u64,
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, bytes: u64) {
        self.events += 1;
        self.bytes += bytes;
    }
}

/// Volume per rule of the policy.
#[derive(Debug, Clone, Serialize)]
pub struct RuleVolume {
    /// 0-based rule index; `None` for events no rule matched (level None).
    pub index: Option<usize>,
    pub line: Option<usize>,
    pub level: Level,
    pub events: u64,
    pub bytes: u64,
    /// Share of all input events this rule matched.
    pub share: f64,
}

/// A group over [`NOISY_SHARE`] of the kept events, with the None rule that would silence it.
#[derive(Debug, Clone, Serialize)]
pub struct NoisyGroup {
    pub grain: Grain,
    pub user: Option<String>,
    pub group: Option<String>,
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub events: u64,
    pub bytes: u64,
    /// Share of kept events.
    pub share: f64,
    /// The YAML of a None rule that silences this group (place it before the rule that keeps it).
    pub suggestion: String,
}

/// Events whose level changes between two policies.
#[derive(Debug, Clone, Serialize)]
pub struct LevelChange {
    pub from: Level,
    pub to: Level,
    pub events: u64,
    /// A few examples: `user verb resource` (first seen).
    pub examples: Vec<String>,
}

/// The comparison with `--against`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub events_kept: u64,
    pub bytes_kept: u64,
    pub gb_per_day: Option<f64>,
    /// `against` minus `policy`.
    pub events_kept_delta: i64,
    pub bytes_kept_delta: i64,
    pub changes: Vec<LevelChange>,
}

/// The simulation report (`--format json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub events_in: u64,
    pub events_kept: u64,
    pub bytes_in: u64,
    pub bytes_kept: u64,
    /// Time covered by the input (first to last request), in seconds.
    pub span_seconds: Option<f64>,
    /// `bytes_kept` extrapolated to a day from the input's span (decimal GB).
    pub gb_per_day: Option<f64>,
    pub rules: Vec<RuleVolume>,
    pub noisy: Vec<NoisyGroup>,
    /// Events whose group could not be tracked because a grain hit [`MAX_GROUPS`].
    pub groups_overflow: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<Comparison>,
}

/// The per-event row of `simulate --per-event --format json` (DESIGN.md contract).
#[derive(Debug, Clone, Serialize)]
pub struct EventRow<'a> {
    #[serde(rename = "auditID")]
    pub audit_id: &'a str,
    pub stage: Stage,
    pub level: Level,
    #[serde(rename = "omitStages")]
    pub omit_stages: crate::StageSet,
    #[serde(rename = "omitManagedFields")]
    pub omit_managed_fields: bool,
    pub rule: Option<usize>,
    pub kept: bool,
}

impl<'a> EventRow<'a> {
    pub fn new(event: &'a Event<'a>, d: &Decision) -> Self {
        EventRow {
            audit_id: &event.audit_id,
            stage: event.stage,
            level: d.level,
            omit_stages: d.omit_stages,
            omit_managed_fields: d.omit_managed_fields,
            rule: d.rule,
            kept: d.keeps(event.stage),
        }
    }
}

/// Accumulates a simulation, one event at a time.
#[derive(Debug)]
pub struct Simulator<'p> {
    policy: &'p Policy,
    against: Option<&'p Policy>,
    events_in: u64,
    bytes_in: u64,
    kept: Counts,
    kept_against: Counts,
    per_rule: Vec<Counts>,
    no_rule: Counts,
    groups: HashMap<GroupKey, Counts>,
    groups_per_grain: HashMap<Grain, usize>,
    groups_overflow: u64,
    changes: HashMap<(Level, Level), (u64, Vec<String>)>,
    first: Option<jiff::Timestamp>,
    last: Option<jiff::Timestamp>,
}

impl<'p> Simulator<'p> {
    pub fn new(policy: &'p Policy, against: Option<&'p Policy>) -> Self {
        Simulator {
            policy,
            against,
            events_in: 0,
            bytes_in: 0,
            kept: Counts::default(),
            kept_against: Counts::default(),
            per_rule: vec![Counts::default(); policy.rules.len()],
            no_rule: Counts::default(),
            groups: HashMap::new(),
            groups_per_grain: HashMap::new(),
            groups_overflow: 0,
            changes: HashMap::new(),
            first: None,
            last: None,
        }
    }

    /// Replays one event of `bytes` serialized bytes; returns the policy's decision for it.
    pub fn observe(&mut self, event: &Event<'_>, bytes: u64) -> Decision {
        let attrs = event.attributes();
        let d = self.policy.evaluate(&attrs);
        self.events_in += 1;
        self.bytes_in += bytes;
        if let Some(t) = event.received_at() {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        let kept_bytes = kept_bytes(event, bytes, d.level);
        let slot = match d.rule {
            Some(i) => &mut self.per_rule[i],
            None => &mut self.no_rule,
        };
        slot.add(if d.keeps(event.stage) { kept_bytes } else { 0 });
        if d.keeps(event.stage) {
            self.kept.add(kept_bytes);
            self.count_groups(event, kept_bytes);
        }
        if let Some(other) = self.against {
            let o = other.evaluate(&attrs);
            let o_level = if o.keeps(event.stage) {
                o.level
            } else {
                Level::None
            };
            let level = if d.keeps(event.stage) {
                d.level
            } else {
                Level::None
            };
            if o.keeps(event.stage) {
                self.kept_against
                    .add(self::kept_bytes(event, bytes, o.level));
            }
            if o_level != level {
                let entry = self.changes.entry((level, o_level)).or_default();
                entry.0 += 1;
                let example = describe(event);
                if entry.1.len() < 3 && !entry.1.contains(&example) {
                    entry.1.push(example);
                }
            }
        }
        d
    }

    fn count_groups(&mut self, event: &Event<'_>, bytes: u64) {
        let user = event.user.username.to_string();
        let verb = event.verb.to_string();
        let target = match &event.object_ref {
            Some(o) if o.subresource.is_empty() => Target::Resource {
                group: o.api_group.to_string(),
                resource: o.resource.to_string(),
            },
            Some(o) => Target::Resource {
                group: o.api_group.to_string(),
                resource: format!("{}/{}", o.resource, o.subresource),
            },
            None => Target::Url(
                event
                    .request_uri
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
        };
        self.bump(
            GroupKey {
                grain: Grain::User,
                who: user.clone(),
                verb: None,
                target: None,
            },
            bytes,
        );
        self.bump(
            GroupKey {
                grain: Grain::UserVerb,
                who: user.clone(),
                verb: Some(verb.clone()),
                target: None,
            },
            bytes,
        );
        self.bump(
            GroupKey {
                grain: Grain::UserVerbResource,
                who: user,
                verb: Some(verb),
                target: Some(target),
            },
            bytes,
        );
        for g in &event.user.groups {
            if !UNINFORMATIVE_GROUPS.contains(&g.as_ref()) {
                self.bump(
                    GroupKey {
                        grain: Grain::UserGroup,
                        who: g.to_string(),
                        verb: None,
                        target: None,
                    },
                    bytes,
                );
            }
        }
    }

    fn bump(&mut self, key: GroupKey, bytes: u64) {
        if let Some(c) = self.groups.get_mut(&key) {
            c.add(bytes);
            return;
        }
        let n = self.groups_per_grain.entry(key.grain).or_default();
        if *n >= MAX_GROUPS {
            self.groups_overflow += 1;
            return;
        }
        *n += 1;
        self.groups.entry(key).or_default().add(bytes);
    }

    /// Finishes the simulation.
    pub fn report(self) -> Report {
        let span_seconds = match (self.first, self.last) {
            (Some(f), Some(l)) => Some(l.duration_since(f).as_secs_f64()),
            _ => None,
        };
        let per_day = |bytes: u64| {
            span_seconds
                .filter(|s| *s > 0.0)
                .map(|s| bytes as f64 / s * 86_400.0 / 1e9)
        };
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };

        let mut rules: Vec<RuleVolume> = self
            .per_rule
            .iter()
            .enumerate()
            .map(|(i, c)| RuleVolume {
                index: Some(i),
                line: Some(self.policy.rules[i].line),
                level: self.policy.rules[i].level,
                events: c.events,
                bytes: c.bytes,
                share: share(c.events, self.events_in),
            })
            .collect();
        rules.push(RuleVolume {
            index: None,
            line: None,
            level: Level::None,
            events: self.no_rule.events,
            bytes: 0,
            share: share(self.no_rule.events, self.events_in),
        });

        let mut noisy: Vec<NoisyGroup> = self
            .groups
            .iter()
            .filter(|(_, c)| share(c.events, self.kept.events) > NOISY_SHARE)
            .map(|(k, c)| noisy_group(k, *c, share(c.events, self.kept.events)))
            .collect();
        noisy.sort_by(|a, b| {
            b.events
                .cmp(&a.events)
                .then_with(|| grain_rank(b.grain).cmp(&grain_rank(a.grain)))
        });

        let against = self.against.map(|_| {
            let mut changes: Vec<LevelChange> = self
                .changes
                .into_iter()
                .map(|((from, to), (events, examples))| LevelChange {
                    from,
                    to,
                    events,
                    examples,
                })
                .collect();
            changes.sort_by(|a, b| {
                b.events
                    .cmp(&a.events)
                    .then(a.from.cmp(&b.from))
                    .then(a.to.cmp(&b.to))
            });
            Comparison {
                events_kept: self.kept_against.events,
                bytes_kept: self.kept_against.bytes,
                gb_per_day: per_day(self.kept_against.bytes),
                events_kept_delta: self.kept_against.events as i64 - self.kept.events as i64,
                bytes_kept_delta: self.kept_against.bytes as i64 - self.kept.bytes as i64,
                changes,
            }
        });

        Report {
            events_in: self.events_in,
            events_kept: self.kept.events,
            bytes_in: self.bytes_in,
            bytes_kept: self.kept.bytes,
            span_seconds,
            gb_per_day: per_day(self.kept.bytes),
            rules,
            noisy,
            groups_overflow: self.groups_overflow,
            against,
        }
    }
}

/// Finer grains sort first among equals: they make the most precise suggestion.
fn grain_rank(g: Grain) -> u8 {
    match g {
        Grain::UserVerbResource => 3,
        Grain::UserVerb => 2,
        Grain::User => 1,
        Grain::UserGroup => 0,
    }
}

/// The bytes this event would take if written at `level`, estimated from the recorded event.
fn kept_bytes(event: &Event<'_>, bytes: u64, level: Level) -> u64 {
    let len = |v: Option<&serde_json::value::RawValue>| v.map_or(0, |r| r.get().len() as u64 + 20);
    let drop = match level {
        Level::None => return 0,
        Level::Metadata => len(event.request_object) + len(event.response_object),
        Level::Request => len(event.response_object),
        Level::RequestResponse => 0,
    };
    bytes.saturating_sub(drop)
}

fn describe(event: &Event<'_>) -> String {
    let target = match &event.object_ref {
        Some(o) if o.subresource.is_empty() => o.resource.to_string(),
        Some(o) => format!("{}/{}", o.resource, o.subresource),
        None => event
            .request_uri
            .split('?')
            .next()
            .unwrap_or("")
            .to_string(),
    };
    format!("{} {} {}", event.user.username, event.verb, target)
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// What a suggested None rule silences besides the identity and verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleTarget<'a> {
    /// `resource[/subresource]` of API group `group` (`""` for the core group).
    Resource { group: &'a str, resource: &'a str },
    /// A non-resource URL path.
    Url(&'a str),
}

/// Who a suggested None rule silences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleWho<'a> {
    User(&'a str),
    Group(&'a str),
}

/// The YAML of the None rule that silences a noisy group, as `policy simulate` suggests it: a whole identity
/// (no verb) is silenced for reads only, so its writes stay audited.
pub fn none_rule(who: RuleWho<'_>, verb: Option<&str>, target: Option<RuleTarget<'_>>) -> String {
    let mut yaml = String::from("- level: None\n");
    match who {
        RuleWho::Group(g) => yaml.push_str(&format!("  userGroups: [{}]\n", quoted(g))),
        RuleWho::User(u) => yaml.push_str(&format!("  users: [{}]\n", quoted(u))),
    }
    match verb {
        Some(v) => yaml.push_str(&format!("  verbs: [{}]\n", quoted(v))),
        // A whole identity is too coarse to silence: an attacker using it would vanish too. Silence its
        // reads only, and keep its writes (and, placed after the secrets and RBAC rules, its secret reads).
        None => yaml.push_str(
            "  # reads only: its writes stay audited; keep this after the rules for secrets and RBAC\n  \
             verbs: [\"get\", \"list\", \"watch\"]\n",
        ),
    }
    match target {
        Some(RuleTarget::Resource { group, resource }) => yaml.push_str(&format!(
            "  resources:\n  - group: {}\n    resources: [{}]\n",
            quoted(group),
            quoted(resource)
        )),
        Some(RuleTarget::Url(path)) => {
            yaml.push_str(&format!("  nonResourceURLs: [{}]\n", quoted(path)))
        }
        None => {}
    }
    yaml
}

fn noisy_group(k: &GroupKey, c: Counts, share: f64) -> NoisyGroup {
    let (who, user, group) = match k.grain {
        Grain::UserGroup => (RuleWho::Group(&k.who), None, Some(k.who.clone())),
        _ => (RuleWho::User(&k.who), Some(k.who.clone()), None),
    };
    let target = k.target.as_ref().map(|t| match t {
        Target::Resource { group, resource } => RuleTarget::Resource { group, resource },
        Target::Url(path) => RuleTarget::Url(path),
    });
    let yaml = none_rule(who, k.verb.as_deref(), target);
    let resource = k.target.as_ref().map(|t| match t {
        Target::Resource { group, resource } if group.is_empty() => resource.clone(),
        Target::Resource { group, resource } => format!("{resource}.{group}"),
        Target::Url(path) => path.clone(),
    });
    NoisyGroup {
        grain: k.grain,
        user,
        group,
        verb: k.verb.clone(),
        resource,
        events: c.events,
        bytes: c.bytes,
        share,
        suggestion: yaml,
    }
}
