//! `policy observed`: the audit policy a cluster's kube-apiserver actually applied, read back from what it
//! recorded.
//!
//! The input is [`ObservedRow`]s: stored events counted by cluster, request (API group, resource and
//! subresource, or the URL path of a non-resource request; verb; namespace), identity (a username and its
//! groups), level and stage (`kubetrail_engine::observed` makes them with one query). [`Observed`] groups them
//! by cluster, [`IdentityClass`], [`Target`] and verb, keeping every level recorded, every stage, and how many
//! events and when. From that:
//!
//! - [`render`] writes the AuditPolicy (`audit.k8s.io/v1`) that reproduces what one cluster recorded: one rule
//!   per identity class, level, stages and set of resources sharing a set of verbs, the policy's `omitStages`
//!   the stages never recorded at all. A group recorded at several levels gets the lowest, with a comment
//!   naming the others (a per-namespace or per-user rule, or a policy that changed, explains them).
//! - [`diff`] compares the recorded levels and stages with a policy: for each group of requests, the level the
//!   policy gives a request like them (their namespace, a sample identity) against the level recorded.
//!
//! What was never observed is unknown: a request of an identity class, resource, verb or URL that never
//! appears in the range says nothing about the policy, and neither output pretends otherwise.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use jiff::Timestamp;
use kubetrail_model::{Attributes, Level, Stage};
use serde::Serialize;

use crate::{GroupResources, Policy, Rule, StageSet};

/// The control plane's own users, named in rules by `users:` (their requests carry only
/// `system:authenticated`, like anybody's).
pub const CONTROL_PLANE_USERS: [&str; 5] = [
    "system:apiserver",
    "system:cloud-controller-manager",
    "system:kube-controller-manager",
    "system:kube-proxy",
    "system:kube-scheduler",
];

const NODES: &str = "system:nodes";
const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
const UNAUTHENTICATED: &str = "system:unauthenticated";

/// The identities a policy can tell apart without naming each one. Ordered by precedence: an identity belongs
/// to the first class that fits, and the rules of [`render`] come in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityClass {
    /// A user of [`CONTROL_PLANE_USERS`] (`users: [...]`).
    ControlPlane,
    /// A member of `system:nodes`: kubelets (`userGroups: ["system:nodes"]`).
    Nodes,
    /// A member of `system:serviceaccounts` (`userGroups: ["system:serviceaccounts"]`).
    ServiceAccounts,
    /// A member of `system:unauthenticated`: anonymous requests (`userGroups: ["system:unauthenticated"]`).
    Unauthenticated,
    /// Everyone else: `system:authenticated` people and programs, and requests without any identity. Its
    /// rules name no identity, so they come last.
    Authenticated,
}

impl IdentityClass {
    pub const ALL: [IdentityClass; 5] = [
        IdentityClass::ControlPlane,
        IdentityClass::Nodes,
        IdentityClass::ServiceAccounts,
        IdentityClass::Unauthenticated,
        IdentityClass::Authenticated,
    ];

    /// The class of a request's identity: `user` is `None` when the request had none at all (as
    /// [`kubetrail_model::Event::attributes`] says).
    pub fn classify<S: AsRef<str>>(user: Option<&str>, groups: &[S]) -> IdentityClass {
        let Some(user) = user else {
            return IdentityClass::Authenticated;
        };
        let member = |g: &str| groups.iter().any(|x| x.as_ref() == g);
        if CONTROL_PLANE_USERS.contains(&user) {
            IdentityClass::ControlPlane
        } else if member(NODES) {
            IdentityClass::Nodes
        } else if member(SERVICE_ACCOUNTS) {
            IdentityClass::ServiceAccounts
        } else if member(UNAUTHENTICATED) {
            IdentityClass::Unauthenticated
        } else {
            IdentityClass::Authenticated
        }
    }

    /// The class as a key (`control-plane`, `nodes`, `service-accounts`, `unauthenticated`, `authenticated`).
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityClass::ControlPlane => "control-plane",
            IdentityClass::Nodes => "nodes",
            IdentityClass::ServiceAccounts => "service-accounts",
            IdentityClass::Unauthenticated => "unauthenticated",
            IdentityClass::Authenticated => "authenticated",
        }
    }

    /// Who they are, after "by" in a sentence.
    pub fn label(self) -> &'static str {
        match self {
            IdentityClass::ControlPlane => "the control plane",
            IdentityClass::Nodes => "nodes",
            IdentityClass::ServiceAccounts => "service accounts",
            IdentityClass::Unauthenticated => "anonymous users",
            IdentityClass::Authenticated => "users",
        }
    }

    /// The rule fields that select the class (none for everyone else).
    fn selector(self) -> (Vec<String>, Vec<String>) {
        let one = |g: &str| vec![g.to_string()];
        match self {
            IdentityClass::ControlPlane => (
                CONTROL_PLANE_USERS.iter().map(|u| u.to_string()).collect(),
                Vec::new(),
            ),
            IdentityClass::Nodes => (Vec::new(), one(NODES)),
            IdentityClass::ServiceAccounts => (Vec::new(), one(SERVICE_ACCOUNTS)),
            IdentityClass::Unauthenticated => (Vec::new(), one(UNAUTHENTICATED)),
            IdentityClass::Authenticated => (Vec::new(), Vec::new()),
        }
    }

    /// The comment above a class's rules.
    fn heading(self) -> &'static str {
        match self {
            IdentityClass::ControlPlane => "The control plane's own users.",
            IdentityClass::Nodes => "Nodes (kubelets): members of system:nodes.",
            IdentityClass::ServiceAccounts => {
                "Service accounts: members of system:serviceaccounts (not nodes)."
            }
            IdentityClass::Unauthenticated => {
                "Anonymous requests: members of system:unauthenticated."
            }
            IdentityClass::Authenticated => {
                "Everyone else (system:authenticated people and programs, and requests without an\n  # identity). These rules name no identity, so they must stay after every other class's."
            }
        }
    }
}

impl fmt::Display for IdentityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request was for: a resource (`""` is the core group; `subresource` `""` when none), or the URL path
/// of a non-resource request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    Resource {
        api_group: String,
        resource: String,
        subresource: String,
    },
    Url {
        path: String,
    },
}

impl Target {
    /// `resource` or `resource/subresource`, as a rule's `resources` lists it (for a URL, its path).
    fn rule_name(&self) -> String {
        match self {
            Target::Resource {
                resource,
                subresource,
                ..
            } if !subresource.is_empty() => format!("{resource}/{subresource}"),
            Target::Resource { resource, .. } => resource.clone(),
            Target::Url { path } => path.clone(),
        }
    }

    /// Whether kube-apiserver treats the request as long-running (its default `--long-running-request-regexp`
    /// and watches), so that it writes a `ResponseStarted` stage.
    fn long_running(&self, verb: &str) -> bool {
        verb == "watch"
            || matches!(self, Target::Resource { subresource, .. }
                if matches!(subresource.as_str(), "proxy" | "log" | "exec" | "attach" | "portforward"))
    }

    /// Whether a rule can match exactly this target: a valid API group, no wildcard (a literal `*` or a
    /// `/` in a resource name would match more than itself), a URL path from its leading `/`.
    fn expressible(&self) -> bool {
        let mut rule = Rule::new(Level::Metadata);
        match self {
            Target::Resource {
                api_group,
                resource,
                subresource,
            } => {
                if resource.is_empty()
                    || [resource, subresource]
                        .iter()
                        .any(|s| s.contains(['*', '/']))
                {
                    return false;
                }
                rule.resources.push(GroupResources {
                    group: api_group.clone(),
                    resources: vec![self.rule_name()],
                    resource_names: Vec::new(),
                });
            }
            Target::Url { path } => {
                if path.contains('*') {
                    return false;
                }
                rule.non_resource_urls.push(path.clone());
            }
        }
        let policy = Policy {
            rules: vec![rule],
            ..Policy::default()
        };
        crate::validate(&policy).is_empty()
    }
}

impl fmt::Display for Target {
    /// `secrets`, `pods/exec`, `deployments.apps/scale`, `/healthz`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Resource {
                api_group,
                resource,
                subresource,
            } => {
                f.write_str(resource)?;
                if !api_group.is_empty() {
                    write!(f, ".{api_group}")?;
                }
                if !subresource.is_empty() {
                    write!(f, "/{subresource}")?;
                }
                Ok(())
            }
            Target::Url { path } => f.write_str(path),
        }
    }
}

/// Events of one kind of request at one level and stage: the input, as the engine's query counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRow {
    pub cluster: String,
    /// `""` is the core group.
    pub api_group: String,
    /// `""` for a non-resource request.
    pub resource: String,
    pub subresource: String,
    /// The URL path (without the query) of a non-resource request; ignored for resource requests.
    pub path: String,
    pub verb: String,
    /// `""` for cluster-scoped requests.
    pub namespace: String,
    /// A username of the identities counted here (`""` with no groups: no identity at all).
    pub user: String,
    pub groups: Vec<String>,
    pub level: Level,
    pub stage: Stage,
    /// Events.
    pub count: u64,
    /// When the first and last of them were received.
    pub first: Timestamp,
    pub last: Timestamp,
}

impl ObservedRow {
    fn target(&self) -> Target {
        if self.resource.is_empty() {
            Target::Url {
                path: self.path.clone(),
            }
        } else {
            Target::Resource {
                api_group: self.api_group.clone(),
                resource: self.resource.clone(),
                subresource: self.subresource.clone(),
            }
        }
    }

    fn user(&self) -> Option<&str> {
        (!self.user.is_empty() || !self.groups.is_empty()).then_some(self.user.as_str())
    }
}

/// A time as RFC 3339 text.
fn rfc3339<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// How many events, and when the first and last were received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub events: u64,
    #[serde(serialize_with = "rfc3339")]
    pub first: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    pub last: Timestamp,
}

impl Seen {
    fn merge(self, other: Seen) -> Seen {
        Seen {
            events: self.events + other.events,
            first: self.first.min(other.first),
            last: self.last.max(other.last),
        }
    }

    fn add(this: &mut Option<Seen>, other: Seen) {
        *this = Some(this.map_or(other, |s| s.merge(other)));
    }
}

/// Requests of one group from one namespace and identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PartKey {
    namespace: String,
    user: Option<String>,
    groups: Vec<String>,
}

/// Per level recorded, per stage recorded: how many events and when.
type Recorded = BTreeMap<Level, BTreeMap<Stage, Seen>>;

/// The key of an observed group: what kind of request, by which class of identity, in which cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GroupKey {
    pub cluster: String,
    pub class: IdentityClass,
    pub target: Target,
    pub verb: String,
}

impl GroupKey {
    /// `secrets create by users`.
    fn describe(&self) -> String {
        format!("{} {} by {}", self.target, self.verb, self.class.label())
    }
}

/// What was recorded for one group of requests.
#[derive(Debug, Clone, Default)]
pub struct Group {
    parts: BTreeMap<PartKey, Recorded>,
}

impl Group {
    /// Each level recorded, with its events.
    pub fn levels(&self) -> BTreeMap<Level, Seen> {
        let mut out: BTreeMap<Level, Option<Seen>> = BTreeMap::new();
        for rec in self.parts.values() {
            for (level, stages) in rec {
                let slot = out.entry(*level).or_default();
                for s in stages.values() {
                    Seen::add(slot, *s);
                }
            }
        }
        out.into_iter()
            .filter_map(|(l, s)| s.map(|s| (l, s)))
            .collect()
    }

    /// The lowest level recorded: what the observed policy gives the group.
    pub fn level(&self) -> Level {
        self.levels().keys().next().copied().unwrap_or(Level::None)
    }

    /// Every stage recorded.
    pub fn stages(&self) -> StageSet {
        self.parts
            .values()
            .flat_map(|rec| rec.values())
            .flat_map(|stages| stages.keys().copied())
            .collect()
    }

    /// All events of the group.
    pub fn seen(&self) -> Option<Seen> {
        let mut out = None;
        for s in self.levels().into_values() {
            Seen::add(&mut out, s);
        }
        out
    }

    /// The namespaces its requests were in (`""`: cluster-scoped), at `level` only if given.
    pub fn namespaces(&self, level: Option<Level>) -> BTreeSet<&str> {
        self.parts
            .iter()
            .filter(|(_, rec)| level.is_none_or(|l| rec.contains_key(&l)))
            .map(|(k, _)| k.namespace.as_str())
            .collect()
    }
}

/// The stages kube-apiserver writes for every request of a group unless its policy omits them:
/// `RequestReceived` and `ResponseComplete`, and `ResponseStarted` for long-running requests (`Panic` only
/// when a request panics; `ResponseStarted` only when a request is long-running).
fn expected_stages(target: &Target, verb: &str) -> StageSet {
    let mut s: StageSet = [Stage::RequestReceived, Stage::ResponseComplete]
        .into_iter()
        .collect();
    if target.long_running(verb) {
        s.insert(Stage::ResponseStarted);
    }
    s
}

/// What one cluster recorded overall.
#[derive(Debug, Clone, Copy, Default)]
struct ClusterSeen {
    seen: Option<Seen>,
    stages: StageSet,
}

/// The recorded requests, grouped by cluster, identity class, target and verb.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    groups: BTreeMap<GroupKey, Group>,
    clusters: BTreeMap<String, ClusterSeen>,
}

impl Observed {
    pub fn new() -> Observed {
        Observed::default()
    }

    /// Groups rows (any order; rows of the same request kind add up).
    pub fn from_rows<'r>(rows: impl IntoIterator<Item = &'r ObservedRow>) -> Observed {
        let mut o = Observed::new();
        for r in rows {
            o.add(r);
        }
        o
    }

    /// Adds one row.
    pub fn add(&mut self, row: &ObservedRow) {
        if row.count == 0 {
            return;
        }
        let user = row.user();
        let key = GroupKey {
            cluster: row.cluster.clone(),
            class: IdentityClass::classify(user, &row.groups),
            target: row.target(),
            verb: row.verb.clone(),
        };
        let part = PartKey {
            namespace: row.namespace.clone(),
            user: user.map(str::to_string),
            groups: row.groups.clone(),
        };
        let seen = Seen {
            events: row.count,
            first: row.first.min(row.last),
            last: row.last.max(row.first),
        };
        self.groups
            .entry(key)
            .or_default()
            .parts
            .entry(part)
            .or_default()
            .entry(row.level)
            .or_default()
            .entry(row.stage)
            .and_modify(|s| *s = s.merge(seen))
            .or_insert(seen);
        let c = self.clusters.entry(row.cluster.clone()).or_default();
        Seen::add(&mut c.seen, seen);
        c.stages.insert(row.stage);
    }

    /// The groups, by key.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupKey, &Group)> {
        self.groups.iter()
    }

    /// The clusters observed, by name.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.clusters.keys().map(String::as_str)
    }

    /// Every event observed in `cluster` (all clusters when `None`).
    pub fn seen(&self, cluster: Option<&str>) -> Option<Seen> {
        let mut out = None;
        for (name, c) in &self.clusters {
            if cluster.is_none_or(|want| want == name)
                && let Some(s) = c.seen
            {
                Seen::add(&mut out, s);
            }
        }
        out
    }

    /// The stages `cluster` never recorded for any request: the observed policy's `omitStages`.
    pub fn never_recorded(&self, cluster: &str) -> StageSet {
        self.clusters
            .get(cluster)
            .map_or(StageSet::ALL, |c| c.stages.invert())
    }

    /// One summary per group, for printing as rows.
    pub fn summaries(&self) -> Vec<GroupSummary> {
        self.groups
            .iter()
            .filter_map(|(k, g)| {
                let seen = g.seen()?;
                Some(GroupSummary {
                    cluster: k.cluster.clone(),
                    class: k.class,
                    target: k.target.clone(),
                    verb: k.verb.clone(),
                    levels: g.levels(),
                    stages: g.stages(),
                    namespaces: g.namespaces(None).len(),
                    events: seen.events,
                    first: seen.first,
                    last: seen.last,
                })
            })
            .collect()
    }
}

/// One observed group, as rows print it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub cluster: String,
    pub class: IdentityClass,
    pub target: Target,
    pub verb: String,
    /// Each level recorded, with its events.
    pub levels: BTreeMap<Level, Seen>,
    pub stages: StageSet,
    /// How many namespaces (cluster scope counts as one).
    pub namespaces: usize,
    pub events: u64,
    #[serde(serialize_with = "rfc3339")]
    pub first: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    pub last: Timestamp,
}

// ---------------------------------------------------------------------------------------------------------
// The policy that reproduces it

/// What [`render`] writes: the policy of one cluster, and what the header says about the input.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions<'a> {
    pub cluster: &'a str,
    /// The range asked for (`--since`, `--until`; open when `None`).
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// The input is incomplete (the query's row limit cut it): said in the header.
    pub truncated: bool,
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// A double-quoted YAML string: JSON's quoting, with every character outside printable ASCII escaped
/// (`\uXXXX`), since YAML 1.1 parsers (kube-apiserver's) break lines at U+0085, U+2028 and U+2029 even inside
/// quotes, and names in it come from requests.
fn yaml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// A YAML flow sequence of double-quoted strings.
fn yaml_list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| yaml_string(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// Namespaces for a sentence: `prod`, `prod, staging and 3 more`; cluster scope as `(cluster scope)`.
fn namespaces_text<'n>(names: impl IntoIterator<Item = &'n str>) -> String {
    let names: Vec<&str> = names
        .into_iter()
        .map(|n| if n.is_empty() { "(cluster scope)" } else { n })
        .collect();
    const SHOWN: usize = 3;
    let mut out = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        let _ = write!(out, " and {} more", names.len() - SHOWN);
    }
    out
}

/// A comment's text on one line: control characters (a line break would end the comment) as spaces.
fn comment_safe(s: &str) -> String {
    // Printable ASCII only: a YAML 1.1 parser ends a comment at U+0085, U+2028 or U+2029 too, and what
    // follows would be read as rules.
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// What the rules of one [`RuleKey`] hold: per target, its verbs and their events, and comments about
/// groups recorded at several levels.
#[derive(Debug, Default)]
struct RuleBody {
    targets: BTreeMap<Target, BTreeMap<String, u64>>,
    notes: BTreeMap<Target, Vec<String>>,
}

/// The rule's key: identity class, whether it is for URLs, level, and the stages it omits beyond the policy's.
type RuleKey = (IdentityClass, bool, Level, Vec<Stage>);

/// The stages a group's rule must omit beyond the policy's: those kube-apiserver would have written for
/// every request of it but that were never recorded.
fn rule_omits(target: &Target, verb: &str, recorded: StageSet, policy: StageSet) -> StageSet {
    let mut out = StageSet::EMPTY;
    for s in expected_stages(target, verb).iter() {
        if !recorded.contains(s) && !policy.contains(s) {
            out.insert(s);
        }
    }
    out
}

/// The observed policy of `opts.cluster` as commented YAML that kube-apiserver (and [`crate::load`]) accepts
/// without a diagnostic, when anything was observed there.
pub fn render(observed: &Observed, opts: &RenderOptions<'_>) -> String {
    let cluster = opts.cluster;
    let policy_omits = observed.never_recorded(cluster);
    let mut rules: BTreeMap<RuleKey, RuleBody> = BTreeMap::new();
    let mut skipped: Vec<String> = Vec::new();
    for (key, group) in observed.groups.iter().filter(|(k, _)| k.cluster == cluster) {
        let levels = group.levels();
        let Some((&level, _)) = levels.iter().next() else {
            continue;
        };
        if !key.target.expressible() {
            skipped.push(comment_safe(&key.describe()));
            continue;
        }
        let omits = rule_omits(&key.target, &key.verb, group.stages(), policy_omits);
        let rk = (
            key.class,
            matches!(key.target, Target::Url { .. }),
            level,
            omits.iter().collect(),
        );
        let body = rules.entry(rk).or_default();
        body.targets
            .entry(key.target.clone())
            .or_default()
            .insert(key.verb.clone(), levels.values().map(|s| s.events).sum());
        for (other, seen) in levels.iter().skip(1) {
            body.notes
                .entry(key.target.clone())
                .or_default()
                .push(comment_safe(&format!(
                    "{} was also recorded at {other}: {} in {}, {} to {}.",
                    key.describe(),
                    plural(seen.events, "event", "events"),
                    namespaces_text(group.namespaces(Some(*other))),
                    seen.first,
                    seen.last,
                )));
        }
    }

    let mut y = String::new();
    header(&mut y, observed, opts, &skipped);
    let _ = writeln!(y, "apiVersion: audit.k8s.io/v1\nkind: Policy");
    if !policy_omits.is_empty() {
        let _ = writeln!(y, "# Never recorded in this range, for any request.");
        let _ = writeln!(
            y,
            "omitStages: {}",
            yaml_list(policy_omits.iter().map(Stage::as_str))
        );
    }
    let _ = writeln!(y, "rules:");
    let mut class = None;
    for ((c, _, level, omits), body) in &rules {
        if class != Some(*c) {
            class = Some(*c);
            let _ = writeln!(y, "\n  # {}", c.heading());
        }
        // Targets sharing a verb set share a rule.
        let mut by_verbs: BTreeMap<Vec<&str>, Vec<&Target>> = BTreeMap::new();
        for (t, verbs) in &body.targets {
            by_verbs
                .entry(verbs.keys().map(String::as_str).collect())
                .or_default()
                .push(t);
        }
        for (verbs, targets) in by_verbs {
            let events: u64 = targets.iter().flat_map(|t| body.targets[*t].values()).sum();
            let _ = writeln!(y, "  # {}.", plural(events, "event", "events"));
            let notes: Vec<&String> = targets
                .iter()
                .filter_map(|t| body.notes.get(*t))
                .flatten()
                .collect();
            for note in &notes {
                let _ = writeln!(y, "  # {note}");
            }
            if !notes.is_empty() {
                let _ = writeln!(
                    y,
                    "  # The rule keeps the lowest level: a per-namespace or per-user rule, or a policy that changed in the\n  \
                     # range, explains the others."
                );
            }
            let (users, groups) = c.selector();
            let _ = writeln!(y, "  - level: {level}");
            if !users.is_empty() {
                let _ = writeln!(y, "    users: {}", yaml_list(&users));
            }
            if !groups.is_empty() {
                let _ = writeln!(y, "    userGroups: {}", yaml_list(&groups));
            }
            let _ = writeln!(y, "    verbs: {}", yaml_list(verbs));
            let mut by_group: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            let mut urls = Vec::new();
            for t in targets {
                match t {
                    Target::Resource { api_group, .. } => {
                        by_group.entry(api_group).or_default().push(t.rule_name())
                    }
                    Target::Url { path } => urls.push(path.as_str()),
                }
            }
            if !by_group.is_empty() {
                let _ = writeln!(y, "    resources:");
                for (g, names) in by_group {
                    let _ = writeln!(y, "      - group: {}", yaml_string(g));
                    let _ = writeln!(y, "        resources: {}", yaml_list(names));
                }
            }
            if !urls.is_empty() {
                let _ = writeln!(y, "    nonResourceURLs: {}", yaml_list(urls));
            }
            if !omits.is_empty() {
                let _ = writeln!(
                    y,
                    "    omitStages: {}",
                    yaml_list(omits.iter().map(|s| s.as_str()))
                );
            }
        }
    }
    y.push_str(
        "\n  # Not a rule: anything never observed is unknown. A request of an identity class, resource, URL or\n  \
         # verb that does not appear above (or appears only in a later class) says nothing about the policy that\n  \
         # was applied; here it gets the level of a later class's rule for the same resource and verb, if any,\n  \
         # else level None.\n",
    );
    y
}

fn header(y: &mut String, observed: &Observed, opts: &RenderOptions<'_>, skipped: &[String]) {
    let cluster = comment_safe(opts.cluster);
    let _ = writeln!(
        y,
        "# The audit policy kube-apiserver applied in cluster `{cluster}`, as `kubetrail policy observed` read it back"
    );
    match observed.seen(Some(opts.cluster)) {
        Some(s) => {
            let _ = writeln!(
                y,
                "# from the {} recorded there, received from {} to {}.",
                plural(s.events, "event", "events"),
                s.first,
                s.last
            );
        }
        None => {
            let _ = writeln!(y, "# from no event: nothing was recorded there.");
        }
    }
    // To the second: `--since 7d` is a time with nanoseconds.
    let bound =
        |t: Option<Timestamp>, open: &str| t.map_or(open.to_string(), |t| format!("{t:.0}"));
    let _ = writeln!(
        y,
        "# Range asked for: {} to {}.",
        bound(opts.since, "the first event"),
        bound(opts.until, "now")
    );
    if opts.truncated {
        let _ = writeln!(
            y,
            "# INCOMPLETE: the range holds more kinds of requests than were read; narrow it (--since, --until,\n\
             # --cluster) to see them all."
        );
    }
    y.push_str(
        "# Each group of requests observed (identity class; API group, resource and subresource, or URL; verb) gets\n\
         # the level it was recorded at, the lowest one when there were several (its rule says so), and omits\n\
         # the stages it never recorded. Rules within one identity class are disjoint (each resource or URL and\n\
         # verb is in one rule), so their order does not matter. The classes come in a fixed order: a class's\n\
         # rules would also match identities of the classes before it (no rule can say \"not a node\"), so keep it.\n\
         # Anything never observed is unknown: see the end.\n",
    );
    if !skipped.is_empty() {
        let _ = writeln!(
            y,
            "# No rule can match exactly (a wildcard character, or an invalid group or path): {}{}.",
            skipped
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            if skipped.len() > 10 {
                format!(" and {} more", skipped.len() - 10)
            } else {
                String::new()
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// The difference with a policy

/// How a policy and the recorded requests disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "difference", rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The policy gives the requests another level than the one recorded.
    Level { policy: Level, recorded: Level },
    /// The policy omits stages that were recorded.
    StagesRecorded { stages: StageSet },
    /// The policy keeps stages kube-apiserver writes for every such request, but none was recorded.
    StagesMissing { stages: StageSet },
}

impl DifferenceKind {
    fn order(&self) -> (u8, Level, Level, u8) {
        let bits = |s: &StageSet| s.iter().fold(0u8, |b, st| b | 1 << (st as u8));
        match self {
            DifferenceKind::Level { policy, recorded } => (0, *policy, *recorded, 0),
            DifferenceKind::StagesRecorded { stages } => {
                (1, Level::None, Level::None, bits(stages))
            }
            DifferenceKind::StagesMissing { stages } => (2, Level::None, Level::None, bits(stages)),
        }
    }
}

/// One disagreement between a policy and a group of recorded requests.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub cluster: String,
    pub class: IdentityClass,
    pub target: Target,
    pub verb: String,
    #[serde(flatten)]
    pub kind: DifferenceKind,
    /// The namespaces of the requests concerned (`""`: cluster-scoped).
    pub namespaces: Vec<String>,
    /// The policy's rule that decided (0-based) and its line; `None` when no rule matched.
    pub rule: Option<usize>,
    pub line: Option<usize>,
    /// The events concerned (for stages never recorded, the group's), and when the first and last were
    /// received.
    pub events: u64,
    #[serde(serialize_with = "rfc3339")]
    pub first: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    pub last: Timestamp,
}

impl Difference {
    /// One line: `secrets create by users in prod: POLICY says Request, recorded Metadata (since ...)`, with
    /// `policy` for POLICY and the cluster first when `with_cluster`.
    pub fn describe(&self, policy: &str, with_cluster: bool) -> String {
        let mut s = String::new();
        if with_cluster {
            let _ = write!(s, "[{}] ", self.cluster);
        }
        let _ = write!(s, "{} {} by {}", self.target, self.verb, self.class.label());
        if self.namespaces.iter().any(|n| !n.is_empty()) {
            let _ = write!(
                s,
                " in {}",
                namespaces_text(self.namespaces.iter().map(String::as_str))
            );
        }
        let rule = match (self.rule, self.line) {
            (Some(r), Some(l)) if l > 0 => format!(" (rule {r}, line {l})"),
            (Some(r), _) => format!(" (rule {r})"),
            (None, _) => " (no rule matches)".to_string(),
        };
        let events = plural(self.events, "event", "events");
        match self.kind {
            DifferenceKind::Level {
                policy: p,
                recorded,
            } => {
                let _ = write!(
                    s,
                    ": {policy} says {p}{rule}, recorded {recorded} (since {}, {events})",
                    self.first
                );
            }
            DifferenceKind::StagesRecorded { stages } => {
                let _ = write!(
                    s,
                    ": {policy} omits {}{rule}, recorded (since {}, {events})",
                    stage_names(stages),
                    self.first
                );
            }
            DifferenceKind::StagesMissing { stages } => {
                let _ = write!(
                    s,
                    ": {policy} keeps {}{rule}, never recorded ({events} without)",
                    stage_names(stages)
                );
            }
        }
        comment_safe(&s)
    }
}

fn stage_names(s: StageSet) -> String {
    s.iter().map(Stage::as_str).collect::<Vec<_>>().join(", ")
}

/// A difference's key: the group, the kind of difference ([`DifferenceKind::order`]), the rule that decided.
type DiffKey<'o> = (&'o GroupKey, (u8, Level, Level, u8), Option<usize>);

/// The parts of a group one decision (rule and stages omitted) applies to.
#[derive(Debug, Default)]
struct Decided {
    omits: StageSet,
    /// Every stage they recorded.
    recorded: StageSet,
    parts: Acc,
    /// The stages they recorded that the decision omits, and where and when.
    omitted: StageSet,
    omitted_parts: Acc,
}

#[derive(Debug, Default)]
struct Acc {
    namespaces: BTreeSet<String>,
    seen: Option<Seen>,
}

impl Acc {
    fn add(&mut self, namespace: &str, seen: Option<Seen>) {
        self.namespaces.insert(namespace.to_string());
        if let Some(s) = seen {
            Seen::add(&mut self.seen, s);
        }
    }
}

/// The requests of a part as the policy sees them: its namespace, its sample identity.
fn evaluate(policy: &Policy, key: &GroupKey, part: &PartKey) -> crate::Decision {
    let groups: Vec<Cow<'_, str>> = part
        .groups
        .iter()
        .map(|g| Cow::Borrowed(g.as_str()))
        .collect();
    let (api_group, resource, subresource, path) = match &key.target {
        Target::Resource {
            api_group,
            resource,
            subresource,
        } => (
            api_group.as_str(),
            resource.as_str(),
            subresource.as_str(),
            "",
        ),
        Target::Url { path } => ("", "", "", path.as_str()),
    };
    let resource_request = matches!(key.target, Target::Resource { .. });
    policy.evaluate(&Attributes {
        user: part.user.as_deref(),
        groups: &groups,
        verb: &key.verb,
        namespace: if resource_request {
            &part.namespace
        } else {
            ""
        },
        api_group,
        resource,
        subresource,
        name: "",
        path,
        is_resource_request: resource_request,
    })
}

/// Where `policy` and what was recorded disagree: for each group, each namespace and identity of it, the
/// level the policy gives such a request against each level recorded; the stages the policy omits that were
/// recorded; the stages it keeps that kube-apiserver writes for every such request (`RequestReceived`,
/// `ResponseComplete`, and `ResponseStarted` of long-running ones) but that were never recorded.
///
/// Each part is evaluated with its namespace, groups and username: exact for `users` rules when the rows keep
/// apart every username `policy` names (the engine's query does for the names it is given; a username that
/// stands for others is evaluated for them all). Rules naming objects (`resourceNames`) never match here:
/// names are not part of a group.
pub fn diff(observed: &Observed, policy: &Policy) -> Vec<Difference> {
    let mut out: BTreeMap<DiffKey<'_>, (DifferenceKind, Acc)> = BTreeMap::new();
    for (key, group) in &observed.groups {
        let mut decided: BTreeMap<(Option<usize>, Vec<Stage>), Decided> = BTreeMap::new();
        for (part, recorded) in &group.parts {
            let d = evaluate(policy, key, part);
            for (level, stages) in recorded {
                if *level == d.level || *level == Level::None {
                    continue;
                }
                let kind = DifferenceKind::Level {
                    policy: d.level,
                    recorded: *level,
                };
                let mut seen = None;
                for s in stages.values() {
                    Seen::add(&mut seen, *s);
                }
                out.entry((key, kind.order(), d.rule))
                    .or_insert_with(|| (kind, Acc::default()))
                    .1
                    .add(&part.namespace, seen);
            }
            if d.level == Level::None {
                continue;
            }
            let entry = decided
                .entry((d.rule, d.omit_stages.iter().collect()))
                .or_insert_with(|| Decided {
                    omits: d.omit_stages,
                    ..Decided::default()
                });
            let mut seen = None;
            for stages in recorded.values() {
                for (stage, s) in stages {
                    entry.recorded.insert(*stage);
                    Seen::add(&mut seen, *s);
                    if d.omit_stages.contains(*stage) {
                        entry.omitted.insert(*stage);
                        entry.omitted_parts.add(&part.namespace, Some(*s));
                    }
                }
            }
            entry.parts.add(&part.namespace, seen);
        }
        let expected = expected_stages(&key.target, &key.verb);
        for ((rule, _), d) in decided {
            if !d.omitted.is_empty() {
                let kind = DifferenceKind::StagesRecorded { stages: d.omitted };
                out.insert((key, kind.order(), rule), (kind, d.omitted_parts));
            }
            let missing: StageSet = expected
                .iter()
                .filter(|s| !d.omits.contains(*s) && !d.recorded.contains(*s))
                .collect();
            if !missing.is_empty() {
                let kind = DifferenceKind::StagesMissing { stages: missing };
                out.insert((key, kind.order(), rule), (kind, d.parts));
            }
        }
    }
    out.into_iter()
        .filter_map(|((key, _, rule), (kind, acc))| {
            let seen = acc.seen?;
            Some(Difference {
                cluster: key.cluster.clone(),
                class: key.class,
                target: key.target.clone(),
                verb: key.verb.clone(),
                kind,
                namespaces: acc.namespaces.into_iter().collect(),
                rule,
                line: rule.and_then(|r| policy.rules.get(r)).map(|r| r.line),
                events: seen.events,
                first: seen.first,
                last: seen.last,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const USERS: &[&str] = &["oidc:dev", "system:authenticated"];
    const NODE: &[&str] = &["system:nodes", "system:authenticated"];
    const SA: &[&str] = &[
        "system:serviceaccounts",
        "system:serviceaccounts:ci",
        "system:authenticated",
    ];
    const ANON: &[&str] = &["system:unauthenticated"];
    const AUTH: &[&str] = &["system:authenticated"];
    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T03:00:00Z";

    /// A row of one event in cluster `prod` from `USER GROUPS VERB TARGET NAMESPACE LEVEL STAGE TIME`: `-` for
    /// an empty user or namespace; GROUPS one of `USERS`, `NODE`, `SA`, `ANON`, `AUTH`, `-` (none); TARGET
    /// `[group:]resource[/subresource]`, or a URL path; TIME `T0`, `T1` or RFC 3339.
    fn row(spec: &str) -> ObservedRow {
        let f: Vec<&str> = spec.split_whitespace().collect();
        let [user, groups, verb, target, ns, level, stage, t] = f[..] else {
            panic!("{spec}");
        };
        let dash = |s: &str| {
            if s == "-" {
                String::new()
            } else {
                s.to_string()
            }
        };
        let groups: &[&str] = match groups {
            "USERS" => USERS,
            "NODE" => NODE,
            "SA" => SA,
            "ANON" => ANON,
            "AUTH" => AUTH,
            _ => &[],
        };
        let (api_group, rest) = target.split_once(':').unwrap_or(("", target));
        let (resource, subresource, path) = if rest.starts_with('/') {
            ("", "", rest)
        } else {
            let (r, s) = rest.split_once('/').unwrap_or((rest, ""));
            (r, s, "")
        };
        let t = ts(match t {
            "T0" => T0,
            "T1" => T1,
            other => other,
        });
        ObservedRow {
            cluster: "prod".into(),
            api_group: api_group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            path: path.into(),
            verb: verb.into(),
            namespace: dash(ns),
            user: dash(user),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            level: Level::parse(level).unwrap(),
            stage: Stage::parse(stage).unwrap(),
            count: 1,
            first: t,
            last: t,
        }
    }

    fn rows(specs: &[&str]) -> Vec<ObservedRow> {
        specs.iter().map(|s| row(s)).collect()
    }

    /// One cluster's traffic: every identity class, a URL, subresources, a watch with ResponseStarted, a
    /// group recorded at two levels, RequestReceived for some groups only, and targets no rule can name.
    fn traffic() -> Vec<ObservedRow> {
        rows(&[
            "system:kube-controller-manager AUTH watch pods - Metadata ResponseStarted T0",
            "system:kube-controller-manager AUTH watch pods - Metadata ResponseComplete T0",
            "system:kube-scheduler AUTH create pods/binding prod Request ResponseComplete T0",
            "system:node:n1 NODE patch pods/status prod Request ResponseComplete T0",
            "system:node:n1 NODE update coordination.k8s.io:leases kube-node-lease Request ResponseComplete T0",
            "system:node:n2 NODE get nodes - Metadata ResponseComplete T0",
            "system:serviceaccount:ci:runner SA create secrets ci Metadata ResponseComplete T0",
            "system:serviceaccount:ci:runner SA create secrets ci Metadata RequestReceived T0",
            "system:serviceaccount:ci:runner SA create pods ci Request ResponseComplete T0",
            "system:anonymous ANON get /healthz - Metadata ResponseComplete T0",
            "system:anonymous ANON get /readyz - Metadata ResponseComplete T0",
            "alice USERS create secrets prod Request ResponseComplete T0",
            "bob USERS create secrets prod Metadata ResponseComplete T1",
            "alice USERS create apps:deployments prod Request ResponseComplete T0",
            "alice USERS get apps:deployments/scale prod Metadata ResponseComplete T0",
            "alice USERS get /version - Metadata ResponseComplete T0",
            "- - get /api - Metadata ResponseComplete T0",
            "alice USERS get Bad_Group:things - Metadata ResponseComplete T0",
            "alice USERS get * - Metadata ResponseComplete T0",
        ])
    }

    #[test]
    fn identities_fall_in_the_first_class_that_fits() {
        use IdentityClass::*;
        let c = |user: Option<&str>, groups: &[&str]| IdentityClass::classify(user, groups);
        assert_eq!(
            c(Some("system:kube-controller-manager"), AUTH),
            ControlPlane
        );
        assert_eq!(c(Some("system:kube-scheduler"), AUTH), ControlPlane);
        assert_eq!(
            c(Some("system:apiserver"), &["system:masters"]),
            ControlPlane
        );
        assert_eq!(c(Some("system:kube-proxy"), NODE), ControlPlane);
        assert_eq!(c(Some("system:node:n1"), NODE), Nodes);
        assert_eq!(
            c(
                Some("system:node:n1"),
                &["system:nodes", "system:serviceaccounts"]
            ),
            Nodes
        );
        assert_eq!(
            c(Some("system:serviceaccount:ci:runner"), SA),
            ServiceAccounts
        );
        assert_eq!(c(Some("system:anonymous"), ANON), Unauthenticated);
        assert_eq!(c(Some("alice"), USERS), Authenticated);
        // A name alone is not membership: only groups say node or service account.
        assert_eq!(
            c(Some("system:serviceaccount:ci:runner"), AUTH),
            Authenticated
        );
        assert_eq!(c(Some("system:node:n1"), AUTH), Authenticated);
        assert_eq!(c(None, &[] as &[&str]), Authenticated);
        assert_eq!(
            IdentityClass::ALL.map(IdentityClass::as_str),
            [
                "control-plane",
                "nodes",
                "service-accounts",
                "unauthenticated",
                "authenticated"
            ]
        );
    }

    #[test]
    fn groups_keep_every_level_stage_and_namespace() {
        let mut rows = traffic();
        rows.push(ObservedRow {
            count: 0,
            ..rows[0].clone()
        });
        let mut other = rows[0].clone();
        other.cluster = "dev".into();
        rows.push(other);
        let o = Observed::from_rows(&rows);
        assert_eq!(o.clusters().collect::<Vec<_>>(), ["dev", "prod"]);
        assert_eq!(o.seen(None).unwrap().events, 20);
        assert_eq!(o.seen(Some("prod")).unwrap().events, 19);
        assert_eq!(
            o.never_recorded("prod").iter().collect::<Vec<_>>(),
            [Stage::Panic]
        );
        assert_eq!(o.never_recorded("dev").len(), 3);

        let key = |class, target: Target, verb: &str| GroupKey {
            cluster: "prod".into(),
            class,
            target,
            verb: verb.into(),
        };
        let res = |group: &str, resource: &str, sub: &str| Target::Resource {
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
        };
        let groups: BTreeMap<&GroupKey, &Group> = o.groups().collect();
        // alice's Request and bob's Metadata: one group, both levels, each with its time.
        let secrets = groups[&key(
            IdentityClass::Authenticated,
            res("", "secrets", ""),
            "create",
        )];
        let levels = secrets.levels();
        assert_eq!(
            levels.keys().copied().collect::<Vec<_>>(),
            [Level::Metadata, Level::Request]
        );
        assert_eq!(levels[&Level::Metadata].first, ts(T1));
        assert_eq!(levels[&Level::Request].last, ts(T0));
        assert_eq!(secrets.level(), Level::Metadata);
        assert_eq!(secrets.seen().unwrap().events, 2);
        assert_eq!(
            secrets.namespaces(None).into_iter().collect::<Vec<_>>(),
            ["prod"]
        );
        // The ci runner's secrets are another class's group, with two stages.
        let ci = groups[&key(
            IdentityClass::ServiceAccounts,
            res("", "secrets", ""),
            "create",
        )];
        assert_eq!(
            ci.stages().iter().collect::<Vec<_>>(),
            [Stage::RequestReceived, Stage::ResponseComplete]
        );
        let watch = groups[&key(IdentityClass::ControlPlane, res("", "pods", ""), "watch")];
        assert_eq!(watch.stages().len(), 2);
        assert_eq!(watch.seen().unwrap().events, 2);
        // The scheduler is the control plane; a request without identity is everyone else's; URLs are targets.
        assert!(groups.contains_key(&key(
            IdentityClass::ControlPlane,
            res("", "pods", "binding"),
            "create"
        )));
        assert!(groups.contains_key(&key(
            IdentityClass::Authenticated,
            Target::Url {
                path: "/api".into()
            },
            "get"
        )));
        let summaries = o.summaries();
        assert_eq!(summaries.len(), o.groups().count());
        let json = serde_json::to_value(&summaries[0]).unwrap();
        assert_eq!(json["cluster"], "dev");
        assert_eq!(json["class"], "control-plane");
        assert_eq!(json["target"]["kind"], "resource");
        assert_eq!(json["levels"]["Metadata"]["first"], "2026-01-01T00:00:00Z");
    }

    /// Loads `yaml` as kube-apiserver would and insists on no diagnostic at all.
    fn load_clean(yaml: &str) -> Policy {
        let loaded = crate::load(yaml);
        assert!(
            loaded.diagnostics.is_empty(),
            "{:#?}\n{yaml}",
            loaded.diagnostics
        );
        loaded.policy.unwrap()
    }

    #[test]
    fn the_observed_policy_reproduces_what_was_recorded() {
        let o = Observed::from_rows(&traffic());
        let yaml = render(
            &o,
            &RenderOptions {
                cluster: "prod",
                since: Some(ts("2025-12-25T00:00:00Z")),
                until: None,
                truncated: false,
            },
        );
        let policy = load_clean(&yaml);
        assert!(yaml.contains("from the 19 events recorded there"), "{yaml}");
        assert!(
            yaml.contains("Range asked for: 2025-12-25T00:00:00Z to now."),
            "{yaml}"
        );
        assert!(yaml.contains("their order does not matter"), "{yaml}");
        assert!(yaml.contains("omitStages: [\"Panic\"]\n"), "{yaml}");
        assert!(yaml.contains("userGroups: [\"system:nodes\"]"), "{yaml}");
        assert!(
            yaml.contains("nonResourceURLs: [\"/healthz\", \"/readyz\"]"),
            "{yaml}"
        );
        assert!(
            yaml.contains("secrets create by users was also recorded at Request: 1 event in prod"),
            "{yaml}"
        );
        assert!(
            yaml.contains("No rule can match exactly (a wildcard character, or an invalid group or path): * get by users; things.Bad_Group get by users."),
            "{yaml}"
        );
        assert!(yaml.trim_end().ends_with("else level None."), "{yaml}");
        assert!(!yaml.contains("INCOMPLETE"));

        // Each group, each of its identities and namespaces, evaluates to its (lowest) level, with the stages
        // it recorded kept and the stages it would have had but never recorded omitted.
        for (key, group) in o.groups() {
            let expressible = key.target.expressible();
            for part in group.parts.keys() {
                let d = evaluate(&policy, key, part);
                if !expressible {
                    continue;
                }
                assert_eq!(d.level, group.level(), "{key:?} {part:?}\n{yaml}");
                for s in group.stages().iter() {
                    assert!(d.keeps(s), "{key:?} {s:?}\n{yaml}");
                }
                for s in expected_stages(&key.target, &key.verb).iter() {
                    assert_eq!(
                        d.keeps(s),
                        group.stages().contains(s),
                        "{key:?} {s:?}\n{yaml}"
                    );
                }
            }
        }
        // RequestReceived was recorded for the ci runner's secrets only: the other rules omit it.
        assert!(yaml.contains("omitStages: [\"RequestReceived\"]"), "{yaml}");
        // The watch recorded ResponseStarted: kept.
        let watch = policy.rules.iter().find(|r| r.verbs == ["watch"]).unwrap();
        assert!(!watch.omit_stages.contains(Stage::ResponseStarted));

        // Against itself, only what it cannot say: the group's other level and the unnameable targets.
        let differences = diff(&o, &policy);
        let lines: Vec<String> = differences
            .iter()
            .map(|d| d.describe("OBSERVED", false))
            .collect();
        let secrets = policy
            .rules
            .iter()
            .position(|r| {
                r.user_groups.is_empty()
                    && r.verbs == ["create"]
                    && r.resources
                        .first()
                        .is_some_and(|g| g.resources == ["secrets"])
            })
            .unwrap();
        assert_eq!(
            lines,
            [
                "* get by users: OBSERVED says None (no rule matches), recorded Metadata (since 2026-01-01T00:00:00Z, 1 event)".to_string(),
                format!(
                    "secrets create by users in prod: OBSERVED says Metadata (rule {secrets}, line {}), recorded Request (since 2026-01-01T00:00:00Z, 1 event)",
                    policy.rules[secrets].line
                ),
                "things.Bad_Group get by users: OBSERVED says None (no rule matches), recorded Metadata (since 2026-01-01T00:00:00Z, 1 event)".to_string(),
            ],
            "{yaml}"
        );
    }

    #[test]
    fn generated_traffic_round_trips_through_its_observed_policy() {
        for stages in [false, true] {
            let cfg = kubetrail_gen::Config {
                attacks: true,
                stages,
                seed: 9,
                ..kubetrail_gen::Config::default()
            };
            let rows: Vec<ObservedRow> = kubetrail_gen::Generator::new(cfg)
                .take(20_000)
                .map(|line| {
                    let ev = kubetrail_model::Event::parse(&line).unwrap();
                    let a = ev.attributes();
                    let t = ev.received_at().unwrap();
                    ObservedRow {
                        cluster: "gen".into(),
                        api_group: a.api_group.into(),
                        resource: a.resource.into(),
                        subresource: a.subresource.into(),
                        path: a.path.into(),
                        verb: a.verb.into(),
                        namespace: a.namespace.into(),
                        user: a.user.unwrap_or_default().into(),
                        groups: a.groups.iter().map(|g| g.to_string()).collect(),
                        level: ev.level,
                        stage: ev.stage,
                        count: 1,
                        first: t,
                        last: t,
                    }
                })
                .collect();
            let o = Observed::from_rows(&rows);
            let yaml = render(
                &o,
                &RenderOptions {
                    cluster: "gen",
                    ..RenderOptions::default()
                },
            );
            let policy = load_clean(&yaml);
            for class in IdentityClass::ALL {
                assert!(o.groups().any(|(k, _)| k.class == class), "{class}");
            }
            let differences: Vec<String> = diff(&o, &policy)
                .iter()
                .map(|d| d.describe("OBSERVED", false))
                .collect();
            assert!(
                differences.is_empty(),
                "stages {stages}: {differences:#?}\n{yaml}"
            );
            assert_eq!(
                yaml.contains("\"RequestReceived\""),
                !stages,
                "stages {stages}\n{yaml}"
            );
        }
    }

    #[test]
    fn a_policy_that_disagrees_is_named_rule_by_rule() {
        use Level::*;
        let rows = rows(&[
            "alice USERS create secrets prod Request ResponseComplete T0",
            "bob USERS create secrets prod Metadata ResponseComplete T1",
            "bob USERS create secrets prod Metadata ResponseComplete 2026-01-01T04:00:00Z",
            "bob USERS create secrets staging Metadata ResponseComplete T0",
            "system:node:n1 NODE watch pods - Metadata ResponseComplete T0",
            "system:node:n1 NODE watch pods - Metadata RequestReceived T0",
            "system:anonymous ANON get /healthz - Metadata ResponseComplete T0",
            "system:anonymous ANON get /healthz - Metadata RequestReceived T0",
        ]);
        let o = Observed::from_rows(&rows);
        let policy = load_clean(
            r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Request
    verbs: ["create"]
    resources:
      - group: ""
        resources: ["secrets"]
    namespaces: ["prod"]
  - level: None
    nonResourceURLs: ["/healthz"]
  - level: Metadata
    omitStages: ["ResponseComplete"]
    userGroups: ["system:nodes"]
  - level: Metadata
"#,
        );
        let differences = diff(&o, &policy);
        let lines: Vec<String> = differences
            .iter()
            .map(|d| d.describe("p.yaml", false))
            .collect();
        assert_eq!(
            lines,
            [
                "pods watch by nodes: p.yaml omits RequestReceived, ResponseComplete (rule 2, line 13), recorded (since 2026-01-01T00:00:00Z, 2 events)",
                "pods watch by nodes: p.yaml keeps ResponseStarted (rule 2, line 13), never recorded (2 events without)",
                "/healthz get by anonymous users: p.yaml says None (rule 1, line 11), recorded Metadata (since 2026-01-01T00:00:00Z, 2 events)",
                "secrets create by users in prod: p.yaml says Request (rule 0, line 5), recorded Metadata (since 2026-01-01T03:00:00Z, 2 events)",
            ]
        );
        let d = &differences[3];
        assert_eq!(
            d.kind,
            DifferenceKind::Level {
                policy: Request,
                recorded: Metadata
            }
        );
        assert_eq!((d.first, d.last), (ts(T1), ts("2026-01-01T04:00:00Z")));
        assert_eq!(d.namespaces, ["prod"]);
        let json = serde_json::to_value(d).unwrap();
        assert_eq!(json["difference"], "level");
        assert_eq!(json["policy"], "Request");
        assert_eq!(json["recorded"], "Metadata");
        assert_eq!(json["target"]["resource"], "secrets");
        assert_eq!(json["first"], "2026-01-01T03:00:00Z");
        assert!(
            d.describe("p.yaml", true)
                .starts_with("[prod] secrets create")
        );

        // The policy that agrees says nothing.
        let agrees = load_clean(&render(
            &o,
            &RenderOptions {
                cluster: "prod",
                ..RenderOptions::default()
            },
        ));
        assert_eq!(
            diff(&o, &agrees).len(),
            1,
            "only the second level of secrets create"
        );
    }

    #[test]
    fn comments_and_strings_cannot_break_out() {
        let mut r = row("alice USERS get pods - Metadata ResponseComplete T0");
        r.cluster = "evil\nkind: Other".into();
        r.verb = "get\"\n  - level: None".into();
        let o = Observed::from_rows([&r]);
        let yaml = render(
            &o,
            &RenderOptions {
                cluster: "evil\nkind: Other",
                ..RenderOptions::default()
            },
        );
        let policy = load_clean(&yaml);
        assert_eq!(policy.rules.len(), 1);
        assert_eq!(policy.rules[0].verbs, [r.verb.clone()]);
        assert!(diff(&o, &policy).is_empty());
    }

    /// Names come from requests: no character a YAML 1.1 parser breaks lines at survives into the output,
    /// in values or comments, and escaped values read back as they were.
    #[test]
    fn names_cannot_break_out_of_strings_or_comments() {
        let evil = "x\u{2028}  - level: None\u{2029}\u{85}#\"\\😀";
        let quoted = yaml_string(evil);
        assert!(quoted.is_ascii(), "{quoted}");
        assert_eq!(
            quoted,
            r#""x\u2028  - level: None\u2029\u0085#\"\\\U0001f600""#
        );
        let back: Vec<saphyr::Yaml> = saphyr::LoadableYamlNode::load_from_str(&quoted).unwrap();
        assert_eq!(back[0].as_str(), Some(evil));
        assert!(comment_safe(evil).is_ascii());
        assert!(!comment_safe(evil).contains('\u{2028}'));
    }
}
