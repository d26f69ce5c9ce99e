//! The engine: compiled rules over a stream of events, with per-request de-duplication, grouping of repeats,
//! correlation and tuning.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::alert::{
    Actor, Alert, AlertRule, MAX_AUDIT_IDS, MAX_SOURCE_IPS, alert_id, hash64, parse_time, rfc3339,
};
use crate::correlation::{CorrelationState, Fired};
use crate::detection::{Detection, EvalCx};
use crate::enrich::IdentityClass;
use crate::enrich::{DEFAULT_PRODUCTION_NAMESPACES, Enricher, Inputs, NamespacePatterns};
use crate::error::{EventError, LoadError, LoadErrors};
use crate::fields::{Fields, Slot, Trie};
use crate::owner::{Owner, OwnerSlots, PodOwner, Workloads, Write};
use crate::rule::{Document, Level, RuleMeta};
use crate::ruleset::RuleSet;
use crate::tuning::{CompiledException, Exception, Selection, Subject};
use crate::value::Val;

/// Non-resource URLs anonymous health probes request; such requests never alert.
pub const HEALTH_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// How the engine runs. Every limit bounds memory; when one bites, a counter in [`Stats`] says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Namespace patterns (`*` wildcards) of the `production` tier.
    pub production_namespaces: Vec<String>,
    pub exceptions: Vec<Exception>,
    pub selection: Selection,
    /// Repeats of a rule by the same actor within this many seconds of the first are one alert.
    pub group_window_secs: i64,
    /// Open groups of repeats at most (the oldest are closed early beyond it).
    pub max_groups: usize,
    /// Requests remembered for one-alert-per-request (the oldest are forgotten beyond it).
    pub max_requests: usize,
    /// How long a request's auditID is remembered for its later stages (seconds).
    pub request_ttl_secs: i64,
    /// Group keys per correlation rule at most (the least recently seen are evicted beyond it).
    pub max_correlation_keys: usize,
    /// Workload writers, and reported workload templates, remembered at most (controller-made pods).
    pub max_workloads: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            production_namespaces: DEFAULT_PRODUCTION_NAMESPACES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            exceptions: Vec::new(),
            selection: Selection::default(),
            group_window_secs: 600,
            max_groups: 100_000,
            max_requests: 1_000_000,
            request_ttl_secs: 3600,
            max_correlation_keys: 1_000_000,
            max_workloads: 100_000,
        }
    }
}

/// Counters since the engine started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub events: u64,
    /// Events that were not valid JSON.
    pub invalid: u64,
    /// Anonymous health probes, never evaluated.
    pub health_probes: u64,
    /// Rule matches, before de-duplication and exceptions.
    pub matches: u64,
    /// Matches dropped because an earlier stage of the same request had raised the rule.
    pub duplicate_stages: u64,
    /// Matches silenced by an exception.
    pub excepted: u64,
    /// Alerts handed out (first alerts of groups and correlation firings).
    pub alerts: u64,
    /// Updates of alerts already handed out (grouped repeats).
    pub updates: u64,
    /// Requests forgotten early because `max_requests` was reached.
    pub request_evictions: u64,
    /// Groups closed early because `max_groups` was reached.
    pub group_evictions: u64,
    /// Correlation group keys evicted because `max_correlation_keys` was reached.
    pub correlation_evictions: u64,
    /// Correlation group keys held now.
    pub correlation_keys: u64,
    /// Rule matches on pods the control plane created for a workload.
    pub controller_pods: u64,
    /// Of those, not raised: the workload's template was already reported, or the platform wrote it.
    pub controller_pods_covered: u64,
    /// Workload writers or reported templates forgotten early because `max_workloads` was reached.
    pub workload_evictions: u64,
}

/// An invalid [`Config`] or a rule set whose references do not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Rules(#[from] LoadErrors),
    #[error("exception {index} ({rule}): {reason}")]
    Exception {
        index: usize,
        rule: String,
        reason: String,
    },
    #[error("invalid config: {0}")]
    Config(String),
}

/// The slots the engine itself reads.
#[derive(Debug, Clone, Copy)]
struct Core {
    audit_id: Slot,
    username: Slot,
    groups: Slot,
    impersonated: Slot,
    source_ips: Slot,
    user_agent: Slot,
    request_uri: Slot,
    /// kubetrail's mark on a request that reused an earlier request's auditID (what the earlier one was).
    reuse: Slot,
    verb: Slot,
    resource: Slot,
    subresource: Slot,
    namespace: Slot,
    name: Slot,
    code: Slot,
    received: Slot,
    stage_time: Slot,
    stage: Slot,
    timestamp: Slot,
    images: Option<Slot>,
    owner: OwnerSlots,
    /// What the stream watch reads besides the above ([`Engine::process_seen`]).
    level: Slot,
    api_group: Slot,
    truncated: Slot,
    cut: Slot,
    /// `user.extra` values of [`PRINCIPAL_KEYS`], in order: who is behind the username.
    principal: [Slot; PRINCIPAL_KEYS.len()],
}

/// The `user.extra` keys [`kubetrail_model::Principal`] reads for an alert's actor.
const PRINCIPAL_KEYS: [&str; 7] = [
    "arn",
    "canonicalArn",
    "sessionName",
    "accessKeyId",
    kubetrail_model::principal::CREDENTIAL_ID,
    kubetrail_model::principal::POD_NAME,
    kubetrail_model::principal::NODE_NAME,
];

#[derive(Debug, Clone)]
struct CompiledRule {
    meta: RuleMeta,
    detection: Detection,
    /// Sigma filters, ANDed.
    filters: Vec<Detection>,
    enabled: bool,
    /// Raises its own alerts (false when only correlations use it, unless they say `generate: true`).
    alerts: bool,
    exceptions: Vec<CompiledException>,
    /// (correlation, position of this rule in its `rules`).
    feeds: Vec<(usize, usize)>,
    /// Names `kubetrail.pod.owner`: reports a pod the control plane made as its workload's (see `owner`).
    owner_aware: bool,
}

#[derive(Debug, Clone)]
struct Group {
    id: String,
    source: usize,
    actor: Box<str>,
    first: i64,
    last: i64,
    count: u64,
    /// Count when last handed out.
    emitted: u64,
    audit_ids: Vec<String>,
    source_ips: Vec<String>,
    summary: String,
    context: Context,
}

/// The first request's particulars an alert carries (empty for correlations).
#[derive(Debug, Clone, Default)]
struct Context {
    groups: Vec<String>,
    principal: Option<String>,
    impersonated: Option<String>,
    user_agent: Option<String>,
    target: Option<crate::alert::Target>,
    /// The workload a controller-made pod belongs to.
    owner: Option<Owner>,
    /// A level below the rule's (a controller-made pod of a workload whose writer is unknown).
    severity: Option<Level>,
}

/// What an alert is about, for the groups.
struct Facts {
    username: String,
    /// What repeats are grouped by besides the rule, when not the actor.
    group: Option<String>,
    audit_id: Option<String>,
    source_ips: Vec<String>,
    summary: String,
    context: Context,
}

/// A pod the control plane created for a workload.
struct Made {
    owner: Owner,
    /// Where the writer wrote it from.
    source_ip: Option<String>,
    /// Only the platform wrote the workload.
    platform: bool,
    /// When anyone but the control plane last wrote it.
    written: Option<i64>,
    /// The workload's and its template version's keys.
    keys: Vec<u64>,
    /// The template version's, when the pod names one (a hash label).
    template_key: Option<u64>,
}

/// An alert on a controller-made pod is about the workload and whoever last wrote it.
fn made_facts(facts: &mut Facts, m: &Made) {
    let o = &m.owner;
    let what = format!("{} {} in namespace {}", o.kind, o.name, o.namespace);
    facts.summary = match (&o.writer, &o.written_at) {
        (Some(w), Some(at)) => format!(
            "{w} wrote {what} (last at {at}); {} created a pod from it",
            o.controller
        ),
        _ => format!(
            "{} created a pod for {what}, whose last write is not in the trail",
            o.controller
        ),
    };
    if let Some(w) = &o.writer {
        // The request is the controller's: its address, agent and groups are not the writer's.
        facts.username = w.clone();
        facts.context.groups.clear();
        facts.context.user_agent = None;
        facts.source_ips = m.source_ip.iter().cloned().collect();
    } else {
        facts.context.severity = Some(Level::Low);
    }
    facts.group = Some(format!(
        "{}\u{1f}{}/{}/{}",
        facts.username, o.kind, o.namespace, o.name
    ));
    facts.context.owner = Some(o.clone());
}

/// Compiled rules and the streaming state over events fed in order.
///
/// ```
/// use kubetrail_detect::{Config, Engine, RuleSet};
/// let mut rules = RuleSet::new();
/// rules.add_file("exec.yml", r#"
/// title: Exec into a pod
/// id: kt-exec
/// level: high
/// logsource: {product: kubernetes, service: audit}
/// detection:
///   selection: {kubetrail.request.execAttach: true}
///   condition: selection
/// "#).unwrap();
/// let mut engine = Engine::new(&rules, Config::default()).unwrap();
/// let mut alerts = Vec::new();
/// let event = r#"{"kind":"Event","auditID":"a1","stage":"ResponseComplete","verb":"create",
///   "user":{"username":"alice"},"objectRef":{"resource":"pods","subresource":"exec","namespace":"prod","name":"api"},
///   "requestReceivedTimestamp":"2026-11-25T02:00:00Z"}"#;
/// engine.process(event, &mut alerts).unwrap();
/// engine.flush(&mut alerts);
/// assert_eq!(alerts.len(), 1);
/// assert_eq!(alerts[0].rule.id, "kt-exec");
/// ```
#[derive(Debug, Clone)]
pub struct Engine {
    trie: Trie,
    core: Core,
    enricher: Enricher,
    rules: Vec<CompiledRule>,
    correlations: Vec<CorrelationState>,
    global_exceptions: Vec<CompiledException>,
    cfg: Config,
    index: RuleIndex,
    requests: HashMap<(u32, u64), i64>,
    groups: HashMap<(usize, Box<str>), Group>,
    deadlines: BinaryHeap<Reverse<(i64, usize, Box<str>)>>,
    workloads: Workloads,
    clock: i64,
    stats: Stats,
}

impl Engine {
    /// Compiles a rule set: every field path into one extraction trie, filters onto their rules,
    /// correlations onto the rules they count. Fails if a reference does not resolve or the config is invalid.
    pub fn new(rules: &RuleSet, cfg: Config) -> Result<Engine, EngineError> {
        rules.check_references()?;
        if cfg.group_window_secs < 0 || cfg.request_ttl_secs < 0 {
            return Err(EngineError::Config("durations must not be negative".into()));
        }
        let mut trie = Trie::default();
        let mut ins = |p: &str| trie.insert(p);
        let mut core = Core {
            audit_id: ins("auditID"),
            username: ins("user.username"),
            groups: ins("user.groups"),
            impersonated: ins("impersonatedUser.username"),
            source_ips: ins("sourceIPs"),
            user_agent: ins("userAgent"),
            request_uri: ins("requestURI"),
            reuse: ins("annotations.kubetrail.io/audit-id-reuse"),
            verb: ins("verb"),
            resource: ins("objectRef.resource"),
            subresource: ins("objectRef.subresource"),
            namespace: ins("objectRef.namespace"),
            name: ins("objectRef.name"),
            code: ins("responseStatus.code"),
            received: ins("requestReceivedTimestamp"),
            stage_time: ins("stageTimestamp"),
            stage: ins("stage"),
            timestamp: ins("timestamp"),
            images: None,
            level: ins("level"),
            api_group: ins("objectRef.apiGroup"),
            truncated: ins("annotations.audit.k8s.io/truncated"),
            cut: ins("annotations.kubetrail.io/truncated"),
            principal: PRINCIPAL_KEYS.map(|k| ins(&format!("user.extra.{k}"))),
            owner: OwnerSlots::new(&mut trie),
        };
        let mut enricher = Enricher::new(
            Inputs {
                username: core.username,
                groups: core.groups,
                namespace: core.namespace,
                resource: core.resource,
                subresource: core.subresource,
                verb: core.verb,
                source_ips: core.source_ips,
                owner: core.owner,
                name: core.name,
                reuse: core.reuse,
                stage_time: core.stage_time,
            },
            NamespacePatterns::new(&cfg.production_namespaces),
        );

        let resolve = |id: &str| -> Option<String> { rules.get(id).map(|d| d.meta().id.clone()) };
        let mut compiled = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for r in rules.rules() {
            let mut detection = r.detection.clone();
            detection.bind(&mut trie, &mut |f, t| enricher.request(f, t));
            let sel = &cfg.selection;
            let named = |list: &[String]| {
                list.iter()
                    .any(|x| resolve(x).as_deref() == Some(r.meta.id.as_str()))
            };
            let enabled = named(&sel.enabled)
                || !(named(&sel.disabled)
                    || r.meta.tags.iter().any(|t| sel.disabled_tags.contains(t)));
            index.insert(r.meta.id.clone(), compiled.len());
            let owner_aware = r.detection.fields().any(|f| f == "kubetrail.pod.owner");
            compiled.push(CompiledRule {
                owner_aware,
                meta: r.meta.clone(),
                detection,
                filters: Vec::new(),
                enabled,
                alerts: true,
                exceptions: Vec::new(),
                feeds: Vec::new(),
            });
        }
        for f in rules.filters() {
            for (r, _) in &f.rules {
                if let Some(&i) = resolve(r).and_then(|id| index.get(&id)) {
                    let mut d = f.detection.clone();
                    d.bind(&mut trie, &mut |f, t| enricher.request(f, t));
                    compiled[i].filters.push(d);
                }
            }
        }
        let mut correlations = Vec::new();
        let mut errors: Vec<LoadError> = Vec::new();
        for c in rules.correlations() {
            let ci = correlations.len();
            let mut members = Vec::new();
            for (pos, (r, loc)) in c.rules.iter().enumerate() {
                let Some(&i) = resolve(r).and_then(|id| index.get(&id)) else {
                    errors.push(loc.error(format!("no loaded rule has the id or name `{r}`")));
                    continue;
                };
                compiled[i].feeds.push((ci, pos));
                if !c.generate {
                    compiled[i].alerts = false;
                }
                members.push((
                    r.clone(),
                    compiled[i].meta.id.clone(),
                    compiled[i].meta.name.clone(),
                ));
            }
            correlations.push(CorrelationState::new(
                ci,
                c,
                &members,
                &mut trie,
                &mut |f, t| enricher.request(f, t),
                cfg.max_correlation_keys,
            ));
        }
        if !errors.is_empty() {
            return Err(EngineError::Rules(LoadErrors(errors)));
        }
        let mut global_exceptions = Vec::new();
        for (n, e) in cfg.exceptions.iter().enumerate() {
            let err = |reason: String| EngineError::Exception {
                index: n,
                rule: e.rule.clone().unwrap_or_else(|| "all rules".into()),
                reason,
            };
            let ce = CompiledException::new(e).map_err(err)?;
            if ce.image.is_some() && core.images.is_none() {
                core.images = Some(enricher.request("kubetrail.pod.images", &mut trie));
            }
            match &e.rule {
                None => global_exceptions.push(ce),
                Some(r) => match resolve(r).and_then(|id| index.get(&id).copied()) {
                    Some(i) => compiled[i].exceptions.push(ce),
                    None => return Err(err(format!("no loaded rule has the id or name `{r}`"))),
                },
            }
        }
        let index = RuleIndex::new(&compiled, core.resource, core.verb);
        Ok(Engine {
            index,
            trie,
            core,
            enricher,
            rules: compiled,
            correlations,
            global_exceptions,
            cfg,
            requests: HashMap::new(),
            groups: HashMap::new(),
            deadlines: BinaryHeap::new(),
            workloads: Workloads::default(),
            clock: i64::MIN,
            stats: Stats::default(),
        })
    }

    /// Remembers an alert raised before this engine started (a collector's restart): a rule that reported a
    /// workload (a controller-made pod's `owner`, or a workload template the alert's `target` names) does
    /// not report that workload's pods again until someone writes it. `cluster` is the alert's.
    pub fn remember(&mut self, cluster: &str, alert: &Alert) {
        if alert.update
            || !self
                .rules
                .iter()
                .any(|r| r.owner_aware && r.meta.id == alert.rule.id)
        {
            return;
        }
        let Some(rule) = self.rules.iter().position(|r| r.meta.id == alert.rule.id) else {
            return;
        };
        let workload = match (&alert.owner, &alert.target) {
            (Some(o), _) => Some((o.kind.as_str(), o.namespace.as_str(), o.name.as_str())),
            (None, Some(t)) => t
                .resource
                .as_deref()
                .and_then(crate::owner::workload)
                .zip(t.name.as_deref())
                .map(|((kind, _), name)| (kind, t.namespace.as_deref().unwrap_or(""), name)),
            _ => None,
        };
        let Some((kind, ns, name)) = workload else {
            return;
        };
        let at = parse_time(&alert.time).unwrap_or(0);
        let key = crate::owner::key(cluster, kind, ns, name, "");
        self.workloads
            .report(rule as u32, key, at, self.cfg.max_workloads);
    }

    /// The rules the engine runs (enabled or not), in load order.
    pub fn rules(&self) -> impl Iterator<Item = (&RuleMeta, bool)> {
        self.rules.iter().map(|r| (&r.meta, r.enabled))
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.correlation_evictions = self.correlations.iter().map(|c| c.evictions).sum();
        s.correlation_keys = self.correlations.iter().map(|c| c.keys() as u64).sum();
        s.workload_evictions = self.workloads.evictions;
        s
    }

    /// Approximate bytes of streaming state (requests remembered, open groups, correlation keys).
    pub fn state_bytes(&self) -> usize {
        let requests = self.requests.capacity() * (size_of::<((u32, u64), i64)>() + 1);
        let groups: usize = self
            .groups
            .values()
            .map(|g| {
                size_of::<Group>()
                    + g.summary.len()
                    + g.audit_ids.iter().map(|a| a.len() + 24).sum::<usize>()
                    + g.source_ips.iter().map(|a| a.len() + 24).sum::<usize>()
            })
            .sum();
        requests
            + groups
            + self.workloads.approx_bytes()
            + self
                .correlations
                .iter()
                .map(CorrelationState::approx_bytes)
                .sum::<usize>()
    }

    /// The rules that match one event, without state, exceptions or health-probe suppression: what
    /// `rules test` checks fixtures with. Disabled rules are included (a fixture tests its rule).
    pub fn matching_rules(&self, json: &str) -> Result<Vec<&RuleMeta>, EventError> {
        let f = self.fields(json)?;
        let cx = EvalCx::new(&f, json);
        Ok(self
            .rules
            .iter()
            .filter(|r| r.detection.eval(&cx) && r.filters.iter().all(|d| d.eval(&cx)))
            .map(|r| &r.meta)
            .collect())
    }

    fn fields<'a>(&self, json: &'a str) -> Result<Fields<'a>, EventError> {
        let mut f = self
            .trie
            .extract(json)
            .map_err(|e| EventError::Json(e.to_string()))?;
        if self.enricher.is_active() {
            self.enricher.compute(&mut f);
        }
        Ok(f)
    }

    /// Evaluates one event (a JSON object as kube-apiserver writes it), appending the alerts it raises and any
    /// groups or correlation windows its time closes. Events must be fed in order; time is the event's own
    /// (`requestReceivedTimestamp`, else `stageTimestamp`), so a replay gives the same alerts.
    pub fn process(&mut self, json: &str, out: &mut Vec<Alert>) -> Result<(), EventError> {
        self.process_from("", json, out)
    }

    /// [`Engine::process`] for an event of a named cluster (as `serve` stores it): what the engine remembers
    /// about workloads is kept per cluster, so one cluster's requests never cover another's.
    pub fn process_from(
        &mut self,
        cluster: &str,
        json: &str,
        out: &mut Vec<Alert>,
    ) -> Result<(), EventError> {
        self.process_received(cluster, None, json, out)
    }

    /// [`Engine::process_from`] for an event kubetrail received at `received` (ms since the epoch; `serve`
    /// knows it): `kubetrail.stream.delaySeconds` is computed from it.
    pub fn process_received(
        &mut self,
        cluster: &str,
        received: Option<i64>,
        json: &str,
        out: &mut Vec<Alert>,
    ) -> Result<(), EventError> {
        self.process_inner(cluster, received, json, out, None)
    }

    /// [`Engine::process_received`], handing `seen` what the stream watch reads of the event, taken from the
    /// fields extracted for the rules: one pass over the event's JSON for both.
    pub fn process_seen(
        &mut self,
        cluster: &str,
        received: Option<i64>,
        json: &str,
        out: &mut Vec<Alert>,
        seen: &mut dyn FnMut(&crate::watch::Seen<'_>),
    ) -> Result<(), EventError> {
        self.process_inner(cluster, received, json, out, Some(seen))
    }

    /// What the watch reads of an event, from its extracted fields and its `time` (computed once, for both).
    fn seen<'f>(&self, f: &'f Fields<'_>, time: Option<i64>) -> crate::watch::Seen<'f> {
        let c = self.core;
        let s = |slot| f.first_str(slot).unwrap_or("");
        crate::watch::Seen {
            audit_id: s(c.audit_id),
            level: kubetrail_model::Level::parse(s(c.level))
                .unwrap_or(kubetrail_model::Level::Metadata),
            stage: kubetrail_model::Stage::parse(s(c.stage)),
            verb: s(c.verb),
            request_uri: s(c.request_uri),
            username: s(c.username),
            groups: f.get(c.groups).filter_map(Val::as_str).collect(),
            api_group: s(c.api_group),
            resource: s(c.resource),
            subresource: s(c.subresource),
            namespace: s(c.namespace),
            name: s(c.name),
            code: f.get(c.code).find_map(Val::number).map(|n| n as i64),
            time,
            truncated: f.has(c.truncated) || f.has(c.cut),
        }
    }

    fn process_inner(
        &mut self,
        cluster: &str,
        received: Option<i64>,
        json: &str,
        out: &mut Vec<Alert>,
        seen: Option<&mut dyn FnMut(&crate::watch::Seen<'_>)>,
    ) -> Result<(), EventError> {
        self.enricher.received = received;
        self.stats.events += 1;
        let f = match self.fields(json) {
            Ok(f) => f,
            Err(e) => {
                self.stats.invalid += 1;
                return Err(e);
            }
        };
        let c = self.core;
        let time = [c.received, c.stage_time, c.timestamp]
            .into_iter()
            .find_map(|s| f.first_str(s).and_then(parse_time));
        if let Some(seen) = seen {
            seen(&self.seen(&f, time));
        }
        let now = time.unwrap_or(self.clock.max(0));
        if now > self.clock {
            self.clock = now;
            self.close(now, out);
        }
        if self.is_health_probe(&f) {
            self.stats.health_probes += 1;
            return Ok(());
        }
        let workload_write = self.note_workload_write(&f, cluster, now);
        let cx = EvalCx::new(&f, json);
        let mut matched: Vec<usize> = Vec::new();
        for i in self.index.candidates(&f) {
            let r = &self.rules[i];
            if r.enabled && r.detection.eval(&cx) && r.filters.iter().all(|d| d.eval(&cx)) {
                matched.push(i);
            }
        }
        if matched.is_empty() {
            return Ok(());
        }
        self.stats.matches += matched.len() as u64;
        // Rules that name `kubetrail.pod.owner` report a controller-made pod as its workload's; others see
        // the controller's request as it is.
        let made = if matched.iter().any(|&i| self.rules[i].owner_aware) {
            self.controller_made(&f, cluster)
        } else {
            None
        };
        let (aware, plain): (Vec<usize>, Vec<usize>) = match &made {
            Some(_) => matched.iter().partition(|&&i| self.rules[i].owner_aware),
            None => (Vec::new(), matched),
        };
        let facts = self.facts(&f);
        let mut fired: Vec<Fired> = Vec::new();
        let user = f.first_str(c.username).unwrap_or("");
        self.raise_matches(
            &plain,
            &f,
            &facts,
            user,
            None,
            workload_write,
            now,
            out,
            &mut fired,
        );
        if let Some(m) = &made {
            self.stats.controller_pods += aware.len() as u64;
            if m.platform {
                self.stats.controller_pods_covered += aware.len() as u64;
            } else {
                let mut facts = facts;
                made_facts(&mut facts, m);
                let user = m.owner.writer.as_deref().unwrap_or(user);
                self.raise_matches(
                    &aware,
                    &f,
                    &facts,
                    user,
                    Some(m),
                    None,
                    now,
                    out,
                    &mut fired,
                );
            }
        }
        for fire in fired {
            self.raise_fired(fire, out);
        }
        Ok(())
    }

    /// Moves the clock to `now` (live use: call it every second or so with the wall clock, so groups close and
    /// their updates go out while no events arrive). Never moves time backwards.
    pub fn advance(&mut self, now: jiff::Timestamp, out: &mut Vec<Alert>) {
        let now = now.as_millisecond();
        if now > self.clock {
            self.clock = now;
            self.close(now, out);
        }
    }

    /// Ends the stream: closes every correlation window and group, handing out what they hold.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        let mut fired = Vec::new();
        for c in &mut self.correlations {
            c.flush(&mut fired);
        }
        for fire in fired {
            self.raise_fired(fire, out);
        }
        let mut all: Vec<Group> = self.groups.drain().map(|(_, g)| g).collect();
        all.sort_by(|a, b| (a.first, &a.id).cmp(&(b.first, &b.id)));
        self.deadlines.clear();
        for g in all {
            self.emit_update(g, out);
        }
    }

    fn close(&mut self, now: i64, out: &mut Vec<Alert>) {
        let mut fired = Vec::new();
        for c in &mut self.correlations {
            c.expire(now, &mut fired);
        }
        for fire in fired {
            self.raise_fired(fire, out);
        }
        while let Some(Reverse((deadline, _, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((_, source, actor))) = self.deadlines.pop() else {
                break;
            };
            if let Some(g) = self.groups.remove(&(source, actor)) {
                self.emit_update(g, out);
            }
        }
    }

    fn emit_update(&mut self, g: Group, out: &mut Vec<Alert>) {
        if g.count > g.emitted {
            self.stats.updates += 1;
            out.push(self.alert(&g, true));
        }
    }

    fn is_health_probe(&self, f: &Fields<'_>) -> bool {
        let c = self.core;
        let user = f.first_str(c.username).unwrap_or("");
        let anonymous = user == "system:anonymous"
            || f.get(c.groups)
                .any(|g| g.as_str() == Some("system:unauthenticated"));
        if !anonymous {
            return false;
        }
        let Some(uri) = f.first_str(c.request_uri) else {
            return false;
        };
        let path = uri.split(['?', '#']).next().unwrap_or("");
        HEALTH_PATHS.iter().any(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Raises (or counts, or feeds to correlations) the rules that matched one event, all about the same
    /// actor (`user`, for exceptions) and facts.
    #[allow(clippy::too_many_arguments)]
    fn raise_matches(
        &mut self,
        matched: &[usize],
        f: &Fields<'_>,
        facts: &Facts,
        user: &str,
        made: Option<&Made>,
        workload_write: Option<u64>,
        now: i64,
        out: &mut Vec<Alert>,
        fired: &mut Vec<Fired>,
    ) {
        if matched.is_empty() {
            return;
        }
        let c = self.core;
        let subject = Subject {
            user,
            namespace: f.first_str(c.namespace),
            images: c
                .images
                .map(|s| f.get(s).filter_map(Val::as_str).collect())
                .unwrap_or_default(),
            user_agent: f.first_str(c.user_agent),
            source_ips: f.get(c.source_ips).filter_map(Val::as_str).collect(),
        };
        let audit_id = f.first_str(c.audit_id).filter(|a| !a.is_empty());
        for &i in matched {
            let r = &self.rules[i];
            if r.exceptions
                .iter()
                .chain(&self.global_exceptions)
                .any(|e| e.matches(&subject))
            {
                self.stats.excepted += 1;
                continue;
            }
            if let Some(a) = audit_id
                && !self.first_stage(i as u32, a, now)
            {
                self.stats.duplicate_stages += 1;
                continue;
            }
            let max = self.cfg.max_workloads;
            if let Some(m) = made {
                // One alert per template: not when this version of the template was reported, nor when
                // the workload's template was and nobody has written the workload since.
                let rule = i as u32;
                let covered = |(k, t): (&u64, i64)| {
                    m.template_key == Some(*k) || m.written.is_none_or(|w| t >= w)
                };
                if m.keys
                    .iter()
                    .filter_map(|k| self.workloads.reported(rule, *k).map(|t| (k, t)))
                    .any(covered)
                {
                    self.stats.controller_pods_covered += 1;
                    continue;
                }
                let k = m.template_key.unwrap_or(m.keys[0]);
                self.workloads.report(rule, k, now, max);
            } else if let Some(k) = workload_write {
                self.workloads.report(i as u32, k, now, max);
            }
            for &(ci, pos) in &self.rules[i].feeds {
                self.correlations[ci].observe(
                    pos,
                    f,
                    now,
                    audit_id,
                    &facts.username,
                    &facts.source_ips,
                    fired,
                );
            }
            if self.rules[i].alerts {
                self.raise(
                    i,
                    facts,
                    1,
                    now,
                    now,
                    facts.audit_id.iter().cloned().collect(),
                    facts.source_ips.clone(),
                    out,
                );
            }
        }
    }

    /// Remembers who wrote a workload (a successful create, update or patch of the workload itself, by anyone
    /// but the control plane); its key, for a workload write whose template a rule may report.
    fn note_workload_write(&mut self, f: &Fields<'_>, cluster: &str, now: i64) -> Option<u64> {
        let c = self.core;
        let (kind, _) = crate::owner::workload(f.first_str(c.resource)?)?;
        if !matches!(f.first_str(c.verb), Some("create" | "update" | "patch"))
            || f.first_str(c.subresource).is_some_and(|s| !s.is_empty())
            || self.failed(f)
            || f.first_str(c.request_uri).is_some_and(dry_run)
        {
            return None;
        }
        let ns = f.first_str(c.namespace).unwrap_or("");
        let name = f.first_str(c.name).filter(|n| !n.is_empty())?;
        let key = crate::owner::key(cluster, kind, ns, name, "");
        let class = self.class(f);
        if class != IdentityClass::ControlPlane {
            let username = f.first_str(c.username).unwrap_or("").into();
            let w = Write {
                username,
                class,
                time: now,
                source_ip: f
                    .get(c.source_ips)
                    .filter_map(Val::as_str)
                    .last()
                    .map(Into::into),
            };
            self.workloads.wrote(key, w, self.cfg.max_workloads);
        }
        Some(key)
    }

    fn class(&self, f: &Fields<'_>) -> IdentityClass {
        IdentityClass::of(
            f.first_str(self.core.username).unwrap_or(""),
            f.get(self.core.groups).filter_map(Val::as_str),
        )
    }

    /// A request that failed or was not answered yet.
    fn failed(&self, f: &Fields<'_>) -> bool {
        matches!(f.get(self.core.code).next(), Some(Val::Num(code)) if *code >= 400.0)
            || f.first_str(self.core.stage) == Some("RequestReceived")
    }

    /// A pod the control plane creates for a workload: the workload, its writer and the keys under which
    /// its template may have been reported.
    fn controller_made(&self, f: &Fields<'_>, cluster: &str) -> Option<Made> {
        let c = self.core;
        if f.first_str(c.resource) != Some("pods")
            || f.first_str(c.verb) != Some("create")
            || f.first_str(c.subresource).is_some_and(|s| !s.is_empty())
            || self.class(f) != IdentityClass::ControlPlane
        {
            return None;
        }
        let PodOwner {
            mut kind,
            mut name,
            direct,
            template,
        } = crate::owner::pod_owner(f, c.owner)?;
        let ns = f.first_str(c.namespace).unwrap_or("");
        let key = |kind: &str, name: &str, template: &str| {
            crate::owner::key(cluster, kind, ns, name, template)
        };
        let mut via = "";
        if let Some((dkind, dname)) = direct {
            // A ReplicaSet or Job someone other than the control plane wrote is theirs: the link to a
            // Deployment or CronJob is only a guess from its name.
            if self.workloads.writer(key(dkind, dname, "")).is_some() {
                (kind, name) = (dkind, dname);
            } else {
                via = dname;
            }
        }
        let owner_key = key(kind, name, "");
        let versioned = !template.is_empty();
        let template_key = if versioned {
            key(kind, name, &format!("{via}\u{1f}{template}"))
        } else {
            owner_key
        };
        let writer = self.workloads.writer(owner_key);
        let author = writer.map(|w| w.author());
        Some(Made {
            owner: Owner {
                kind: kind.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
                controller: f.first_str(c.username).unwrap_or("").to_string(),
                writer: author.map(|w| w.username.to_string()),
                written_at: author.map(|w| rfc3339(w.time)),
            },
            source_ip: author.and_then(|w| w.source_ip.as_deref().map(str::to_string)),
            platform: author.is_some_and(Write::by_platform),
            written: writer.map(|w| w.last.time),
            keys: vec![owner_key, template_key],
            template_key: versioned.then_some(template_key),
        })
    }

    /// Records a (rule, request) pair; false if an earlier stage already raised it.
    fn first_stage(&mut self, rule: u32, audit_id: &str, now: i64) -> bool {
        let key = (rule, hash64(audit_id));
        if self.requests.contains_key(&key) {
            return false;
        }
        if self.requests.len() >= self.cfg.max_requests.max(1) {
            let ttl = self.cfg.request_ttl_secs.saturating_mul(1000);
            let before = self.requests.len();
            self.requests.retain(|_, t| now.saturating_sub(*t) < ttl);
            if self.requests.len() >= self.cfg.max_requests.max(1) {
                let n = evict_oldest(&mut self.requests, |t| *t);
                self.stats.request_evictions += n as u64;
            } else {
                let _ = before;
            }
        }
        self.requests.insert(key, now);
        true
    }

    fn facts(&self, f: &Fields<'_>) -> Facts {
        let c = self.core;
        let s = |slot| f.first_str(slot).unwrap_or("");
        let username = s(c.username).to_string();
        let mut ips: Vec<String> = f
            .get(c.source_ips)
            .filter_map(Val::as_str)
            .map(str::to_string)
            .collect();
        ips.reverse();
        ips.truncate(MAX_SOURCE_IPS);
        let mut what = String::new();
        let resource = s(c.resource);
        if resource.is_empty() {
            what.push_str(s(c.request_uri));
        } else {
            what.push_str(resource);
            if !s(c.subresource).is_empty() {
                what.push('/');
                what.push_str(s(c.subresource));
            }
            if !s(c.name).is_empty() {
                what.push(' ');
                what.push_str(s(c.name));
            }
            if !s(c.namespace).is_empty() {
                what.push_str(" in namespace ");
                what.push_str(s(c.namespace));
            }
        }
        let mut summary = format!(
            "{} {} {}",
            if username.is_empty() {
                "(no user)"
            } else {
                &username
            },
            s(c.verb),
            what
        );
        if !s(c.impersonated).is_empty() {
            summary.push_str(" as ");
            summary.push_str(s(c.impersonated));
        }
        if let Some(Val::Num(code)) = f.get(c.code).next() {
            summary.push_str(&format!(" ({code})"));
        }
        // Two requests share this auditID: say which the other was, or the alert would name one of two.
        if let Some(earlier) = f.first_str(c.reuse).filter(|v| !v.is_empty()) {
            summary.push_str("; auditID reused, ");
            summary.push_str(earlier);
        }
        let opt = |slot| {
            f.first_str(slot)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        // Values come out last first (as for sourceIPs above).
        let mut groups: Vec<String> = f
            .get(c.groups)
            .filter_map(Val::as_str)
            .map(str::to_string)
            .collect();
        groups.reverse();
        groups.truncate(64);
        let principal = kubetrail_model::Principal::from_lookup(|key| {
            let i = PRINCIPAL_KEYS.iter().position(|k| *k == key)?;
            let v = f.first_str(c.principal[i])?;
            Some(
                v.chars()
                    .take(kubetrail_model::principal::MAX_VALUE)
                    .collect(),
            )
        })
        .summary(s(c.username));
        let context = Context {
            groups,
            principal,
            impersonated: opt(c.impersonated),
            user_agent: opt(c.user_agent),
            target: Some(crate::alert::Target {
                verb: s(c.verb).to_string(),
                resource: opt(c.resource),
                subresource: opt(c.subresource),
                namespace: opt(c.namespace),
                name: opt(c.name),
                request_uri: s(c.request_uri).to_string(),
            }),
            owner: None,
            severity: None,
        };
        Facts {
            username,
            group: None,
            audit_id: f
                .first_str(c.audit_id)
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            source_ips: ips,
            summary,
            context,
        }
    }

    fn source(&self, source: usize) -> Option<&RuleMeta> {
        match self.rules.get(source) {
            Some(r) => Some(&r.meta),
            None => self
                .correlations
                .get(source - self.rules.len())
                .map(|c| &c.meta),
        }
    }

    fn source_attack(&self, source: usize) -> Vec<String> {
        self.source(source)
            .map(|m| m.attack_techniques().collect())
            .unwrap_or_default()
    }

    fn source_tags(&self, source: usize) -> &[String] {
        self.source(source).map_or(&[], |m| &m.tags)
    }

    /// What the rule `id` reads of a request (`None` for correlations and unknown ids).
    pub fn body_need(&self, id: &str) -> Option<crate::BodyNeed> {
        self.rules.iter().find(|r| r.meta.id == id).map(|r| {
            crate::rule::Rule {
                meta: r.meta.clone(),
                detection: r.detection.clone(),
            }
            .needs()
            .body
        })
    }

    fn source_meta(&self, source: usize) -> (&str, &str, Level) {
        if let Some(r) = self.rules.get(source) {
            return (&r.meta.id, &r.meta.title, r.meta.level);
        }
        match self.correlations.get(source - self.rules.len()) {
            Some(c) => (&c.meta.id, &c.meta.title, c.meta.level),
            None => ("", "", Level::Informational),
        }
    }

    fn raise_fired(&mut self, f: Fired, out: &mut Vec<Alert>) {
        let source = self.rules.len() + f.correlation;
        let facts = Facts {
            username: f.username,
            group: None,
            audit_id: f.audit_ids.first().cloned(),
            source_ips: f.source_ips,
            summary: f.summary,
            context: Context::default(),
        };
        self.raise(
            source,
            &facts,
            f.count,
            f.first,
            f.last,
            f.audit_ids,
            facts.source_ips.clone(),
            out,
        );
    }

    /// Hands out a new alert, or adds to the open group of the same rule and actor.
    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        source: usize,
        facts: &Facts,
        count: u64,
        first: i64,
        last: i64,
        audit_ids: Vec<String>,
        source_ips: Vec<String>,
        out: &mut Vec<Alert>,
    ) {
        let key = (
            source,
            Box::<str>::from(facts.group.as_deref().unwrap_or(&facts.username)),
        );
        if let Some(g) = self.groups.get_mut(&key) {
            g.count += count;
            g.last = g.last.max(last);
            for a in audit_ids {
                if g.audit_ids.len() < MAX_AUDIT_IDS {
                    g.audit_ids.push(a);
                }
            }
            for ip in source_ips {
                if g.source_ips.len() < MAX_SOURCE_IPS && !g.source_ips.contains(&ip) {
                    g.source_ips.push(ip);
                }
            }
            return;
        }
        if self.groups.len() >= self.cfg.max_groups.max(1) {
            // Close the oldest group early (its update goes out now).
            while let Some(Reverse((_, s, a))) = self.deadlines.pop() {
                if let Some(g) = self.groups.remove(&(s, a)) {
                    self.stats.group_evictions += 1;
                    self.emit_update(g, out);
                    break;
                }
            }
        }
        let (rule_id, _, _) = self.source_meta(source);
        let id = alert_id(&[
            rule_id,
            &facts.username,
            facts.audit_id.as_deref().unwrap_or(""),
            &first.to_string(),
        ]);
        let mut g = Group {
            id,
            source,
            actor: facts.username.as_str().into(),
            first,
            last,
            count,
            emitted: count,
            audit_ids,
            source_ips,
            summary: facts.summary.clone(),
            context: facts.context.clone(),
        };
        g.audit_ids.truncate(MAX_AUDIT_IDS);
        self.stats.alerts += 1;
        out.push(self.alert(&g, false));
        g.emitted = g.count;
        let deadline = first.saturating_add(self.cfg.group_window_secs.saturating_mul(1000));
        self.deadlines
            .push(Reverse((deadline, source, key.1.clone())));
        self.groups.insert(key, g);
    }

    fn alert(&self, g: &Group, update: bool) -> Alert {
        let (id, title, level) = self.source_meta(g.source);
        let summary = if g.count > 1 {
            format!("{} (and {} more like it)", g.summary, g.count - 1)
        } else {
            g.summary.clone()
        };
        Alert {
            id: g.id.clone(),
            rule: AlertRule {
                id: id.to_string(),
                title: title.to_string(),
            },
            severity: g.context.severity.map_or(level, |s| s.min(level)),
            audit_ids: g.audit_ids.clone(),
            time: rfc3339(g.first),
            actor: Actor {
                username: g.actor.to_string(),
                groups: g.context.groups.clone(),
                impersonated_user: g.context.impersonated.clone(),
                principal: g.context.principal.clone(),
            },
            source_ips: g.source_ips.clone(),
            summary,
            count: g.count,
            last_time: rfc3339(g.last),
            update,
            target: g.context.target.clone(),
            user_agent: g.context.user_agent.clone(),
            attack: self.source_attack(g.source),
            tags: self.source_tags(g.source).to_vec(),
            runbook: self
                .source(g.source)
                .and_then(|m| m.extra_str("runbook"))
                .map(|r| r.trim_end().to_string()),
            cluster: None,
            resolved: None,
            detected: None,
            context: None,
            console: None,
            investigate: Vec::new(),
            suppressed: None,
            owner: g.context.owner.clone(),
        }
    }
}

/// Rules by the `objectRef.resource` (else `verb`) values they need, so an event is only tested against the
/// rules that can match it. Rules that need neither are always tested.
#[derive(Debug, Clone)]
struct RuleIndex {
    resource: Slot,
    verb: Slot,
    by_resource: HashMap<Box<str>, Vec<usize>>,
    by_verb: HashMap<Box<str>, Vec<usize>>,
    always: Vec<usize>,
}

impl RuleIndex {
    fn new(rules: &[CompiledRule], resource: Slot, verb: Slot) -> RuleIndex {
        let mut ix = RuleIndex {
            resource,
            verb,
            by_resource: HashMap::new(),
            by_verb: HashMap::new(),
            always: Vec::new(),
        };
        for (i, r) in rules.iter().enumerate() {
            if let Some(values) = r.detection.necessary(resource) {
                for v in values {
                    ix.by_resource.entry(v.into()).or_default().push(i);
                }
            } else if let Some(values) = r.detection.necessary(verb) {
                for v in values {
                    ix.by_verb.entry(v.into()).or_default().push(i);
                }
            } else {
                ix.always.push(i);
            }
        }
        ix
    }

    /// The rules that can match, in load order.
    fn candidates(&self, f: &Fields<'_>) -> Vec<usize> {
        let mut c = self.always.clone();
        for (slot, map) in [
            (self.resource, &self.by_resource),
            (self.verb, &self.by_verb),
        ] {
            for v in f.get(slot) {
                if let Some(t) = v.text()
                    && let Some(rules) = map.get(crate::value::lower(&t).as_ref())
                {
                    c.extend_from_slice(rules);
                }
            }
        }
        c.sort_unstable();
        c.dedup();
        c
    }
}

/// A server-side dry run: a `dryRun` query parameter read as kube-apiserver reads it
/// (`kubetrail_history::replay::dry_run`): `?fieldManager=dryRun=All` and `?dryRun=All;` (a pair Go drops)
/// are real writes.
pub(crate) fn dry_run(uri: &str) -> bool {
    kubetrail_history::replay::dry_run(uri)
}

/// Removes the oldest tenth (at least one) of a map by a time key, exactly that many even when times tie.
/// Returns how many were removed.
pub(crate) fn evict_oldest<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    time: impl Fn(&V) -> i64,
) -> usize {
    let n = (map.len() / 10).max(1);
    let mut times: Vec<i64> = map.values().map(&time).collect();
    if times.is_empty() {
        return 0;
    }
    let (_, cut, _) = times.select_nth_unstable(n - 1);
    let cut = *cut;
    let older = times.iter().filter(|t| **t < cut).count();
    let mut ties = n.saturating_sub(older);
    let before = map.len();
    map.retain(|_, v| {
        let t = time(v);
        if t < cut {
            false
        } else if t == cut && ties > 0 {
            ties -= 1;
            false
        } else {
            true
        }
    });
    before - map.len()
}

impl Document {
    /// Whether the document is a detection rule.
    pub fn is_rule(&self) -> bool {
        matches!(self, Document::Rule(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule index never hides a rule that a full scan would match (real events, all rules loaded).
    #[test]
    fn index_agrees_with_a_full_scan() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut set = RuleSet::new();
        let mut files: Vec<String> = std::fs::read_dir(format!("{dir}/sigma"))
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
        files.push(format!("{dir}/pack/pack.yml"));
        for f in &files {
            set.add_file(f, &std::fs::read_to_string(f).unwrap())
                .unwrap();
        }
        let engine = Engine::new(&set, Config::default()).unwrap();
        assert!(
            engine.index.always.len() < engine.rules.len() / 2,
            "most rules are indexed"
        );
        let mut lines = Vec::new();
        for e in std::fs::read_dir(format!("{dir}/falco")).unwrap() {
            lines.extend(
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
        for f in [
            "panther/native_k8s_audit_events.jsonl",
            "audit2rbac/demo_full_501d132.log",
        ] {
            lines.extend(
                std::fs::read_to_string(format!("{dir}/{f}"))
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
        let mut matched = 0;
        for l in lines.iter().filter(|l| !l.trim().is_empty()) {
            let f = engine.fields(l).unwrap();
            let cx = EvalCx::new(&f, l);
            let full: Vec<usize> = (0..engine.rules.len())
                .filter(|&i| engine.rules[i].detection.eval(&cx))
                .collect();
            let indexed: Vec<usize> = engine
                .index
                .candidates(&f)
                .into_iter()
                .filter(|&i| engine.rules[i].detection.eval(&cx))
                .collect();
            assert_eq!(full, indexed, "{l}");
            matched += full.len();
        }
        assert!(matched > 300, "{matched}");
    }

    /// The stream signs: an event received ten minutes after its stage time, one claiming a time ahead of its
    /// receipt, and the apiserver's identity Lease created; unknown receipt (files) computes no delay.
    #[test]
    fn stream_signs_are_enrichment_fields() {
        let mut rules = RuleSet::new();
        rules
            .add_file(
                "t.yml",
                "title: Late\nid: t-late\nlevel: medium\nlogsource: {product: kubernetes, service: audit}\n\
                 detection:\n  s: {kubetrail.stream.delaySeconds|gte: 300}\n  condition: s\n---\n\
                 title: Future\nid: t-future\nlevel: medium\nlogsource: {product: kubernetes, service: audit}\n\
                 detection:\n  s: {kubetrail.stream.delaySeconds|lte: -300}\n  condition: s\n---\n\
                 title: Start\nid: t-start\nlevel: low\nlogsource: {product: kubernetes, service: audit}\n\
                 detection:\n  s: {kubetrail.stream.apiserverStart: true}\n  condition: s\n",
            )
            .unwrap();
        let mut e = Engine::new(&rules, Config::default()).unwrap();
        let event = |id: &str, verb: &str| {
            format!(
                r#"{{"auditID":"{id}","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"system:apiserver"}},"objectRef":{{"resource":"leases","namespace":"kube-system","name":"apiserver-abc"}},"requestReceivedTimestamp":"2026-11-25T02:00:00Z","stageTimestamp":"2026-11-25T02:00:00Z"}}"#
            )
        };
        let stage = 1_795_572_000_000; // 2026-11-25T02:00:00Z
        let mut out = Vec::new();
        let mut fired = |e: &mut Engine, json: &str, received: Option<i64>| {
            out.clear();
            e.process_received("c", received, json, &mut out).unwrap();
            let mut ids: Vec<String> = out.iter().map(|a| a.rule.id.clone()).collect();
            ids.sort();
            ids
        };
        assert_eq!(
            fired(&mut e, &event("1", "update"), Some(stage + 600_000)),
            ["t-late"]
        );
        assert_eq!(
            fired(&mut e, &event("2", "update"), Some(stage - 600_000)),
            ["t-future"]
        );
        assert!(fired(&mut e, &event("3", "update"), Some(stage + 20_000)).is_empty());
        assert!(
            fired(&mut e, &event("4", "update"), None).is_empty(),
            "no receipt, no delay"
        );
        assert_eq!(
            fired(&mut e, &event("5", "create"), Some(stage)),
            ["t-start"]
        );
    }

    /// What the watch reads of an event is the same from the engine's fields (one parse in `detect`) as
    /// from a parsed event (`serve`).
    #[test]
    fn the_watch_sees_the_same_from_fields_as_from_the_event() {
        let rules = RuleSet::new();
        let mut e = Engine::new(&rules, Config::default()).unwrap();
        let json = r#"{"kind":"Event","level":"Request","auditID":"a-1","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/prod/deployments/web/scale","verb":"patch","user":{"username":"alice","groups":["devs","system:authenticated"]},"objectRef":{"resource":"deployments","subresource":"scale","namespace":"prod","name":"web","apiGroup":"apps"},"responseStatus":{"code":403},"annotations":{"audit.k8s.io/truncated":"true"},"requestReceivedTimestamp":"2026-11-25T02:00:00.5Z","stageTimestamp":"2026-11-25T02:00:01Z"}"#;
        let mut got = None;
        e.process_seen("c", None, json, &mut Vec::new(), &mut |s| {
            got = Some(format!("{s:?}"));
        })
        .unwrap();
        let event = kubetrail_model::Event::parse(json).unwrap();
        let mut want = crate::watch::Seen::from(&event);
        // The fields hold a list's values last first; the order of groups means nothing to the watch.
        want.groups.reverse();
        assert_eq!(got.unwrap(), format!("{want:?}"));
    }
}
