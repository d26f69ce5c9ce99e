//! Live detection inside `serve`: a reader of the write-ahead log with its own cursor (`detect`), so every
//! stored event is evaluated exactly as it was made durable, in order, and a restart resumes where it
//! stopped. Alerts are appended to `DATA/alerts/alerts.jsonl` (one JSON object per line, an update of a
//! grouped alert carrying the same id with `"update": true`), fsynced before the cursor moves, and logged.
//! Delivery to Alertmanager, PagerDuty, Slack and webhooks reads that file (the alerting issue).
//!
//! Each alert is enriched here before it is written: the rule's runbook, the triage context (the actor's last
//! hour, first-seen facts over 30 days kept in `DATA/alerts/seen.jsonl`, the actor's other unresolved alerts,
//! what the policy level hid), the investigation commands, the console link, and the suppression in force
//! that silences it, if any. An alert on a pod a controller made for a workload whose writer the engine did
//! not see (it predates this process) is attributed from the store: the workload's last write by anyone but
//! the control plane names the actor and restores the rule's level, or drops the alert when the platform
//! (a node, a managed cloud's component) wrote it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use kubetrail_detect::triage::{Prior, Sighting, Tracker};
use kubetrail_detect::{Alert, Engine, IdentityClass};
use kubetrail_model::Event;
use kubetrail_pipeline::metrics_labels::{KindLabel, OutcomeLabel, ReasonLabel, StateLabel};
use kubetrail_store::{Cursor, EventRecord, Wal};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The cursor's name in the log.
pub const CURSOR: &str = "detect";
/// Records evaluated per round before the cursor is committed.
const ROUND: usize = 10_000;
/// How long to wait when the log holds nothing new.
const IDLE: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("path", &self.path)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// The detection thread's state.
pub struct Detector {
    wal: Arc<Wal>,
    cursor: Cursor,
    engine: Engine,
    alerts: File,
    path: PathBuf,
    /// The cursor's position, shared with the housekeeping so log segments are never released before
    /// detection has read them.
    position: Arc<AtomicU64>,
    /// The cluster and triage context of each open alert, for its later updates (which the engine hands out
    /// without an event).
    firsts: std::collections::HashMap<String, Alert>,
    tracker: Tracker,
    /// The stream as a whole: silent sources (on this process's clock) and policy drift.
    watch: Option<kubetrail_detect::watch::Watch>,
    watch_saved: Option<std::time::Instant>,
    /// `DATA/alerts/seen.jsonl`: the tracker's first-seen facts, appended as they change.
    seen: File,
    seen_lines: usize,
    resolved: crate::alerting::store::Resolved,
    suppressions: crate::alerting::suppress::Live,
    /// The web console's address, for links (`--console-url`).
    console: Option<String>,
    dir: PathBuf,
    /// Detection's series in `/metrics` (the pipeline's registry).
    metrics: DetectionMetrics,
    /// The engine's counters when last published.
    published: kubetrail_detect::Stats,
    /// The stream watch's, likewise.
    published_watch: kubetrail_detect::watch::WatchStats,
    /// For store lookups (started on first use).
    runtime: Option<tokio::runtime::Runtime>,
    /// Alerts dropped because the platform wrote their workload: their updates are dropped too.
    dropped: std::collections::HashSet<String>,
    /// Alerts written before a crash whose round's cursor was not committed: evaluated again, they are
    /// not written (nor delivered) twice. The ids of the last alerts in `alerts.jsonl` at start.
    written: std::collections::HashSet<String>,
    /// Workloads looked up in the store: (cluster, kind, namespace, name) → the writer found, if any.
    writers: std::collections::HashMap<
        (String, String, String, String),
        Option<kubetrail_engine::EventRow>,
    >,
}

/// Whether `rule` is one the stream watch raises (about sources and policies, not one identity's requests).
fn is_stream_rule(rule: &str) -> bool {
    kubetrail_rules::stream()
        .iter()
        .any(|f| f.name.strip_suffix(".yml") == Some(rule))
}

/// What the stream watch learned, under `DATA/alerts/`.
const WATCH_STATE: &str = "watch.json";
/// How often it is written while events arrive.
const WATCH_SAVE: Duration = Duration::from_secs(30);

/// How long one store lookup of a workload's writer may take (detection waits for it).
const LOOKUP: Duration = Duration::from_secs(3);

/// Detection's series in the collector's `/metrics`.
#[derive(Default)]
struct DetectionMetrics {
    unreadable: Family<ReasonLabel, Counter>,
    events: Counter,
    alerts: Family<KindLabel, Counter>,
    evictions: Family<StateLabel, Counter>,
    controller_pods: Family<OutcomeLabel, Counter>,
    state_bytes: prometheus_client::metrics::gauge::Gauge,
}

/// Alerts remembered for their updates, at most (then the memory starts over).
const MAX_FIRSTS: usize = 10_000;

impl Detector {
    pub fn open(
        dir: &Path,
        wal: Arc<Wal>,
        engine: Engine,
        console: Option<String>,
    ) -> anyhow::Result<Detector> {
        let alerts_dir = dir.join("alerts");
        std::fs::create_dir_all(&alerts_dir)
            .with_context(|| format!("failed to create `{}`", alerts_dir.display()))?;
        let path = alerts_dir.join("alerts.jsonl");
        let alerts = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        let cursor = wal.cursor(CURSOR)?;
        let position = cursor.position();
        let (tracker, seen, seen_lines) = open_seen(&alerts_dir)?;
        let mut engine = engine;
        let written = remember_alerts(&path, &mut engine)?;
        Ok(Detector {
            wal,
            cursor,
            engine,
            alerts,
            path,
            position: Arc::new(AtomicU64::new(position)),
            firsts: std::collections::HashMap::new(),
            tracker,
            watch: None,
            watch_saved: None,
            seen,
            seen_lines,
            resolved: crate::alerting::store::Resolved::new(dir),
            suppressions: crate::alerting::suppress::Live::new(
                dir,
                crate::alerting::suppress::DEFAULT_MAX_DAYS,
            ),
            console: console.map(|c| c.trim_end_matches('/').to_string()),
            dir: dir.to_path_buf(),
            metrics: DetectionMetrics::default(),
            published: kubetrail_detect::Stats::default(),
            published_watch: Default::default(),
            runtime: None,
            dropped: std::collections::HashSet::new(),
            writers: std::collections::HashMap::new(),
            written,
        })
    }

    /// Applies only suppressions that last at most `days` (`alerts.max_suppression_days`).
    pub fn max_suppression_days(mut self, days: u32) -> Self {
        self.suppressions = crate::alerting::suppress::Live::new(&self.dir, days);
        self
    }

    /// Watches the stream as a whole too: sources are judged silent on this process's clock once the log
    /// is read to its end (a backlog read after a restart is not a silence).
    /// What it learned before a restart is taken back from `DATA/alerts/watch.json`.
    pub fn watching(mut self, mut watch: kubetrail_detect::watch::Watch) -> Self {
        let path = self.dir.join("alerts").join(WATCH_STATE);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => watch.restore(state, jiff::Timestamp::now().as_millisecond()),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot read what the stream watch learned; it learns again (an hour before silence is judged)"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the stream watch's state")
            }
        }
        self.watch = Some(watch);
        self
    }

    /// Writes what the stream watch learned (whole, then renamed), at most every [`WATCH_SAVE`] unless `now`.
    fn save_watch(&mut self, force: bool) {
        let Some(w) = &self.watch else { return };
        if !force && self.watch_saved.is_some_and(|t| t.elapsed() < WATCH_SAVE) {
            return;
        }
        self.watch_saved = Some(std::time::Instant::now());
        let path = self.dir.join("alerts").join(WATCH_STATE);
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec(&w.state())
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let mut f = File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the stream watch's state");
        }
    }

    /// Publishes detection's counters (unreadable events, the engine's `Stats`) in `metrics`, the registry
    /// `/metrics` renders.
    pub fn report_to(mut self, metrics: &kubetrail_pipeline::Metrics) -> Self {
        self.metrics = DetectionMetrics {
            unreadable: metrics.detection_unreadable.clone(),
            events: metrics.detection_events.clone(),
            alerts: metrics.detection_alerts.clone(),
            evictions: metrics.detection_evictions.clone(),
            controller_pods: metrics.detection_controller_pods.clone(),
            state_bytes: metrics.detection_state_bytes.clone(),
        };
        self
    }

    /// Adds what the engine counted since the last call to the `/metrics` series.
    fn publish(&mut self) {
        let now = self.engine.stats();
        let was = std::mem::replace(&mut self.published, now.clone());
        let watch = self
            .watch
            .as_ref()
            .map(|w| w.stats().clone())
            .unwrap_or_default();
        let m = &self.metrics;
        m.events.inc_by(now.events.saturating_sub(was.events));
        for (state, n, w) in [
            ("requests", now.request_evictions, was.request_evictions),
            ("groups", now.group_evictions, was.group_evictions),
            (
                "correlation_keys",
                now.correlation_evictions,
                was.correlation_evictions,
            ),
            ("workloads", now.workload_evictions, was.workload_evictions),
            (
                "stream_sources",
                watch.sources_over_limit,
                self.published_watch.sources_over_limit,
            ),
            (
                "stream_kinds",
                watch.kinds_over_limit,
                self.published_watch.kinds_over_limit,
            ),
        ] {
            let label = StateLabel {
                state: state.into(),
            };
            m.evictions
                .get_or_create(&label)
                .inc_by(n.saturating_sub(w));
        }
        for (outcome, n, w) in [
            (
                "reported",
                now.controller_pods - now.controller_pods_covered,
                was.controller_pods - was.controller_pods_covered,
            ),
            (
                "covered",
                now.controller_pods_covered,
                was.controller_pods_covered,
            ),
        ] {
            let label = OutcomeLabel {
                outcome: outcome.into(),
            };
            m.controller_pods
                .get_or_create(&label)
                .inc_by(n.saturating_sub(w));
        }
        m.state_bytes
            .set(i64::try_from(self.engine.state_bytes()).unwrap_or(i64::MAX));
        self.published_watch = watch;
    }

    fn unreadable(&self, reason: &str, n: u64, seq: u64, error: &str) {
        if n == 0 {
            return;
        }
        self.metrics
            .unreadable
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc_by(n);
        tracing::warn!(
            count = n,
            first_seq = seq,
            error,
            "stored events that detection could not {}: they raised no alert",
            if reason == "record" {
                "read"
            } else {
                "evaluate"
            }
        );
    }

    /// The cursor's position as it moves.
    pub fn position(&self) -> Arc<AtomicU64> {
        self.position.clone()
    }

    /// Evaluates what the log holds beyond the cursor, until `stop`; then what is left, and the open groups
    /// and windows are flushed.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            match self.round() {
                Ok(0) if stopping => break,
                Ok(0) => std::thread::sleep(IDLE),
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "live detection failed; retrying");
                    if stopping {
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let mut out = Vec::new();
        self.engine.flush(&mut out);
        out.retain(|a| !self.dropped.contains(&a.id));
        for a in &mut out {
            self.enrich(a, &Prior::default());
        }
        if let Err(e) = self.write(&out) {
            tracing::error!(error = %format!("{e:#}"), "failed to write the last alerts");
        }
        self.save_watch(true);
    }

    /// One round: at most [`ROUND`] records, their alerts written and fsynced, then the cursor committed.
    /// Returns how many records were read.
    fn round(&mut self) -> anyhow::Result<usize> {
        self.round_at(jiff::Timestamp::now())
    }

    /// [`Detector::round`] at the wall-clock time `now`.
    fn round_at(&mut self, now: jiff::Timestamp) -> anyhow::Result<usize> {
        let from = self.cursor.position();
        let mut out = Vec::new();
        let mut sightings = Vec::new();
        let mut next = from;
        let mut n = 0;
        // Counted per round and warned about once per round: a flood never floods the log.
        let mut failed: [(u64, u64, String); 2] = Default::default();
        let mut fail = |i: usize, seq: u64, e: String| {
            if failed[i].0 == 0 {
                failed[i] = (0, seq, e);
            }
            failed[i].0 += 1;
        };
        for item in self.wal.read_from(from)? {
            let (seq, bytes) = item?;
            next = seq + 1;
            n += 1;
            match EventRecord::decode(&bytes) {
                Ok(rec) => {
                    let before = out.len();
                    let event = Event::parse(&rec.event).ok();
                    let prior = event
                        .as_ref()
                        .map(|e| self.tracker.prior(e))
                        .unwrap_or_default();
                    if let Err(e) = self.engine.process_received(
                        &rec.cluster,
                        Some(rec.received_us.div_euclid(1000)),
                        &rec.event,
                        &mut out,
                    ) {
                        fail(1, seq, e.to_string());
                    }
                    if let Some(e) = &event {
                        sightings.extend(self.tracker.observe(e));
                        if let Some(w) = &mut self.watch {
                            let received = rec.received_us.div_euclid(1000);
                            let seen = kubetrail_detect::watch::Seen::from(e);
                            w.observe(&rec.cluster, &rec.source, Some(received), &seen, &mut out);
                        }
                    }
                    let mut fresh = out.split_off(before);
                    for a in &mut fresh {
                        if a.cluster.is_none() && !a.update {
                            a.cluster = Some(rec.cluster.to_string());
                        }
                    }
                    fresh.retain_mut(|a| self.attribute(a));
                    for a in &mut fresh {
                        self.enrich(a, &prior);
                    }
                    out.extend(fresh);
                }
                Err(e) => fail(0, seq, e.to_string()),
            }
            if n >= ROUND {
                break;
            }
        }
        for (reason, (count, seq, error)) in ["record", "event"].into_iter().zip(failed) {
            self.unreadable(reason, count, seq, &error);
        }
        let mut fresh = Vec::new();
        self.engine.advance(now, &mut fresh);
        if n < ROUND
            && let Some(w) = &mut self.watch
        {
            w.advance(now, &mut fresh);
        }
        fresh.retain(|a| !self.dropped.contains(&a.id));
        for a in &mut fresh {
            self.enrich(a, &Prior::default());
        }
        out.extend(fresh);
        self.write_seen(&sightings)?;
        self.write(&out)?;
        if next > from {
            self.cursor.commit(next)?;
            self.position.store(next, Ordering::SeqCst);
        }
        // What the watch learned, and a silence it raised (no record moved for it), survive a restart.
        if next > from || out.iter().any(|a| is_stream_rule(&a.rule.id)) {
            self.save_watch(false);
        }
        self.publish();
        Ok(n)
    }

    /// Attributes an alert on a controller-made pod whose workload writer the engine did not see, from the
    /// store; false when the platform wrote the workload (the alert is dropped, and its updates).
    fn attribute(&mut self, a: &mut Alert) -> bool {
        if self.dropped.contains(&a.id) {
            return false;
        }
        let Some(owner) = a.owner.as_ref().filter(|o| o.writer.is_none() && !a.update) else {
            return true;
        };
        let Some(resource) = owner.resource() else {
            return true;
        };
        let scope = kubetrail_engine::Scope {
            cluster: a.cluster.clone(),
            ..Default::default()
        };
        let root = self.dir.join("store");
        let (ns, name) = (owner.namespace.clone(), owner.name.clone());
        let cache_key = (
            a.cluster.clone().unwrap_or_default(),
            owner.kind.clone(),
            ns.clone(),
            name.clone(),
        );
        if let Some(found) = self.writers.get(&cache_key).cloned() {
            return match found {
                Some(row) => self.attributed(a, row),
                None => true,
            };
        }
        let runtime = match &self.runtime {
            Some(r) => r,
            None => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => self.runtime.insert(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up a workload's writer");
                    return true;
                }
            },
        };
        let found = runtime.block_on(async {
            let engine = kubetrail_engine::Engine::open(&root, &scope)?;
            let rows = tokio::time::timeout(LOOKUP, engine.last_writes(resource, &ns, &name, 50))
                .await
                .map_err(|_| anyhow::anyhow!("timed out after {LOOKUP:?}"))??;
            // The last person or tool to write it, else the platform (its reconciling after a person's
            // change does not make the change the platform's); never the control plane itself.
            let class = |r: &kubetrail_engine::EventRow| {
                IdentityClass::of(&r.user, r.groups.iter().map(String::as_str))
            };
            let platform = |c| matches!(c, IdentityClass::Node | IdentityClass::CloudManaged);
            let mut writes = rows
                .into_iter()
                .filter(|r| class(r) != IdentityClass::ControlPlane)
                .peekable();
            let latest = writes.peek().cloned();
            anyhow::Ok(writes.find(|r| !platform(class(r))).or(latest))
        });
        let row = match found {
            Ok(found) => {
                // Once per workload: a flood of its pods never queries the store again.
                if self.writers.len() >= MAX_FIRSTS {
                    self.writers.clear();
                }
                self.writers.insert(cache_key, found.clone());
                match found {
                    Some(row) => row,
                    None => return true,
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), workload = %format!("{}/{ns}/{name}", owner.kind), "cannot look up a workload's writer in the store");
                return true;
            }
        };
        self.attributed(a, row)
    }

    /// Names the store's writer of an alert's workload; false when it is the platform (the alert is dropped).
    fn attributed(&mut self, a: &mut Alert, row: kubetrail_engine::EventRow) -> bool {
        let class = IdentityClass::of(&row.user, row.groups.iter().map(String::as_str));
        if matches!(class, IdentityClass::Node | IdentityClass::CloudManaged) {
            let label = OutcomeLabel {
                outcome: "platform".into(),
            };
            self.metrics.controller_pods.get_or_create(&label).inc();
            if self.dropped.len() >= MAX_FIRSTS {
                self.dropped.clear();
            }
            self.dropped.insert(a.id.clone());
            return false;
        }
        let level = self
            .engine
            .rules()
            .find(|(m, _)| m.id == a.rule.id)
            .map(|(m, _)| m.level);
        let at = row.time();
        let Some(owner) = a.owner.as_mut() else {
            return true;
        };
        owner.writer = Some(row.user.clone());
        owner.written_at = Some(at.clone());
        a.summary = format!(
            "{} wrote {} {} in namespace {} (last at {at}, found in the store); {} created a pod from it",
            row.user, owner.kind, owner.name, owner.namespace, owner.controller
        );
        a.actor = kubetrail_detect::Actor {
            username: row.user.clone(),
            groups: row.groups.clone(),
            impersonated_user: None,
            principal: row
                .event
                .as_deref()
                .and_then(kubetrail_history::parse_event)
                .and_then(|e| kubetrail_model::Principal::from_user(&e["user"]).summary(&row.user)),
        };
        // The pod's request was the controller's: its address and agent are not the writer's.
        a.source_ips = row.source_ips.clone();
        a.user_agent = None;
        if let Some(level) = level {
            a.severity = level;
        }
        true
    }

    /// Adds what the engine cannot know: cluster (for updates), runbook links, triage context, suppression.
    fn enrich(&mut self, a: &mut Alert, prior: &Prior) {
        a.detected = Some(jiff::Timestamp::now().to_string());
        if a.update
            && let Some(first) = self.firsts.get(&a.id).cloned()
        {
            // An update of an alert attributed from the store keeps that attribution.
            if first.owner.as_ref().is_some_and(|o| o.writer.is_some())
                && a.owner.as_ref().is_some_and(|o| o.writer.is_none())
            {
                a.actor = first.actor.clone();
                a.severity = first.severity;
                a.owner = first.owner.clone();
                a.summary = if a.count > 1 {
                    format!("{} (and {} more like it)", first.summary, a.count - 1)
                } else {
                    first.summary.clone()
                };
            }
            // An update (more repeats) keeps its first request's cluster, first-seen facts and policy note;
            // the activity is counted again.
            a.cluster = a.cluster.take().or_else(|| first.cluster.clone());
            let mut ctx = self.context(a, &Prior::default());
            if let Some(old) = &first.context {
                ctx.first_seen = old.first_seen.clone();
                ctx.policy = old.policy.clone();
            }
            a.context = Some(ctx);
            a.suppressed = first.suppressed.clone();
        } else {
            a.context = Some(self.context(a, prior));
            a.suppressed = self.suppressions.silencing(a);
        }
        let user = crate::text::shell_word(&a.actor.username);
        a.investigate = if is_stream_rule(&a.rule.id) {
            vec![
                "kubetrail gaps --since 24h".to_string(),
                "kubetrail policy observed --since 24h".to_string(),
                format!("kubetrail alerts show {}", a.id),
            ]
        } else {
            let mut commands = vec![
                format!("kubetrail scope --user {user} --since 7d"),
                format!("kubetrail timeline --user {user} --since 24h"),
            ];
            // The object the alert is about, change by change; the sessions, for an exec or attach.
            if let Some(t) = &a.target
                && let Some(resource) = t.resource.as_deref().filter(|r| !r.is_empty())
                && let Some(name) = t.name.as_deref().filter(|n| !n.is_empty())
            {
                if matches!(
                    t.subresource.as_deref(),
                    Some("exec" | "attach" | "portforward")
                ) {
                    commands.push(format!("kubetrail sessions --user {user} --since 24h"));
                } else {
                    commands.push(format!(
                        "{} --since 30d",
                        kubetrail_history::history_command(
                            resource,
                            "",
                            t.namespace.as_deref().unwrap_or(""),
                            name
                        )
                    ));
                }
            }
            commands.push(format!("kubetrail alerts show {}", a.id));
            commands
        };
        if let Some(base) = &self.console {
            a.console = Some(format!("{base}/alerts/{}", a.id));
        }
        if !a.update {
            self.tracker.remember(a);
            if self.firsts.len() >= MAX_FIRSTS {
                self.firsts.clear();
            }
            self.firsts.insert(a.id.clone(), a.clone());
        }
    }

    fn context(&mut self, a: &Alert, prior: &Prior) -> kubetrail_detect::triage::Triage {
        self.resolved.refresh();
        let resolved = &self.resolved;
        self.tracker
            .context(a, prior, self.engine.body_need(&a.rule.id), |id| {
                !resolved.is_resolved(id)
            })
    }

    /// Appends first-seen facts that changed (before the cursor moves: a crash re-reads their events).
    fn write_seen(&mut self, sightings: &[Sighting]) -> anyhow::Result<()> {
        if sightings.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for s in sightings {
            serde_json::to_writer(&mut buf, s)?;
            buf.push(b'\n');
        }
        self.seen
            .write_all(&buf)
            .and_then(|()| self.seen.sync_data())
            .context("failed to write alerts/seen.jsonl")?;
        self.seen_lines += sightings.len();
        // Rewritten compactly when it holds many more lines than values.
        if self.seen_lines > 4 * self.tracker.seen_len() + 100_000 {
            let dir = crate::alerting::store::alerts_dir(&self.dir);
            self.seen = rewrite_seen(&dir, &self.tracker)?;
            self.seen_lines = self.tracker.seen_len();
        }
        Ok(())
    }

    fn write(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut kept = Vec::with_capacity(alerts.len());
        for a in alerts {
            // Raised again after a crash that came between writing it and committing the cursor.
            if !a.update && self.written.remove(&a.id) {
                continue;
            }
            kept.push(a);
        }
        for a in &kept {
            serde_json::to_writer(&mut buf, a)?;
            buf.push(b'\n');
            tracing::warn!(
                alert = %a.id,
                rule = %a.rule.id,
                severity = a.severity.as_str(),
                user = %a.actor.username,
                count = a.count,
                update = a.update,
                suppressed = a.suppressed.as_deref().unwrap_or(""),
                "alert: {}",
                a.rule.title
            );
        }
        self.alerts
            .write_all(&buf)
            .and_then(|()| self.alerts.sync_data())
            .with_context(|| format!("failed to write alerts to `{}`", self.path.display()))?;
        for a in kept {
            let kind = if a.update { "update" } else { "new" };
            self.metrics
                .alerts
                .get_or_create(&KindLabel { kind: kind.into() })
                .inc();
        }
        Ok(())
    }
}

/// Tells the engine which workloads' templates earlier alerts reported, so a restart does not report their
/// pods again (only lines that can name a workload are parsed; a torn last line is skipped), and returns the
/// ids of the last new alerts written (at most two rounds' worth: a crash loses one round's cursor at most).
fn remember_alerts(
    path: &Path,
    engine: &mut Engine,
) -> anyhow::Result<std::collections::HashSet<String>> {
    use std::io::BufRead as _;
    const WORKLOADS: [&str; 7] = [
        "deployments",
        "replicasets",
        "daemonsets",
        "statefulsets",
        "jobs",
        "cronjobs",
        "replicationcontrollers",
    ];
    let file = File::open(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let mut recent = std::collections::VecDeque::new();
    // Byte lines: a damaged line (not UTF-8) is skipped, never a reason for the collector not to start.
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("failed to read `{}`", path.display()))?;
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        // Serialized with `id` first (`{"id":"…"`); updates carry `"update":true`.
        if let Some(id) = line
            .strip_prefix("{\"id\":\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(id, _)| id)
            .filter(|_| !line.contains("\"update\":true"))
        {
            if recent.len() >= 2 * ROUND {
                recent.pop_front();
            }
            recent.push_back(id.to_string());
        }
        let names_workload = line.contains("\"owner\":")
            || WORKLOADS
                .iter()
                .any(|r| line.contains(&format!("\"resource\":\"{r}\"")));
        if !names_workload {
            continue;
        }
        if let Ok(a) = serde_json::from_str::<Alert>(line) {
            engine.remember(a.cluster.as_deref().unwrap_or(""), &a);
        }
    }
    Ok(recent.into_iter().collect())
}

/// Loads `seen.jsonl` into a tracker (a torn last line is skipped) and opens it for appending.
fn open_seen(dir: &Path) -> anyhow::Result<(Tracker, File, usize)> {
    let path = dir.join("seen.jsonl");
    let mut tracker = Tracker::new();
    let lines = crate::alerting::store::read_lines::<Sighting>(&path)?;
    let n = lines.len();
    for s in lines {
        tracker.restore(s);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("failed to open `{}`", path.display()))?;
    Ok((tracker, file, n))
}

/// Rewrites `seen.jsonl` with one line per value (through a temporary file and a rename).
fn rewrite_seen(dir: &Path, tracker: &Tracker) -> anyhow::Result<File> {
    let path = dir.join("seen.jsonl");
    let tmp = dir.join("seen.jsonl.tmp");
    let mut buf = Vec::new();
    for s in tracker.sightings() {
        serde_json::to_writer(&mut buf, &s)?;
        buf.push(b'\n');
    }
    let mut f =
        File::create(&tmp).with_context(|| format!("failed to create `{}`", tmp.display()))?;
    f.write_all(&buf)?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("failed to replace `{}`", path.display()))?;
    OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("failed to open `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_store::WalOptions;

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/secrets","verb":"list","user":{"username":"eve"},"objectRef":{"resource":"secrets"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2026-11-25T02:00:00Z"}"#;

    /// A data directory whose log holds EVENT, and a detector over it with one rule matching it.
    fn detector(dir: &Path) -> Detector {
        let opts = WalOptions {
            fsync: false,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(&dir.join("wal"), opts).unwrap();
        let rec = EventRecord {
            received_us: 1,
            cluster: "c".into(),
            source: "test".into(),
            audit_id: "a1".into(),
            stage: "ResponseComplete".into(),
            variant: "".into(),
            event: EVENT.into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        wal.append(&[bytes.as_slice()]).unwrap();
        let mut rules = kubetrail_detect::RuleSet::new();
        rules
            .add_file(
                "t.yml",
                "title: Secrets listed\nid: t-list\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s: {verb: list, objectRef.resource: secrets}\n  condition: s\n",
            )
            .unwrap();
        let engine = Engine::new(&rules, kubetrail_detect::Config::default()).unwrap();
        Detector::open(dir, Arc::new(wal), engine, None).unwrap()
    }

    fn lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("alerts/alerts.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A crash after an alert was written but before the cursor moved: the event is evaluated again after
    /// the restart, and its alert is not written (nor delivered) a second time.
    #[test]
    fn an_alert_raised_again_after_a_crash_is_not_written_twice() {
        let first = tempfile::tempdir().unwrap();
        let mut d = detector(first.path());
        assert_eq!(d.round().unwrap(), 1);
        let written = lines(first.path());
        assert_eq!(written.len(), 1, "{written:?}");

        // The same log and the alert on disk, the cursor still at the start.
        let crashed = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crashed.path().join("alerts")).unwrap();
        // A damaged line before it (not UTF-8) is skipped, not a reason to refuse to start.
        let mut file = b"\xff\xfe damaged\n".to_vec();
        file.extend_from_slice(format!("{}\n", written[0]).as_bytes());
        std::fs::write(crashed.path().join("alerts/alerts.jsonl"), file).unwrap();
        let mut d = detector(crashed.path());
        assert_eq!(d.round().unwrap(), 1);
        let after = std::fs::read(crashed.path().join("alerts/alerts.jsonl")).unwrap();
        assert_eq!(String::from_utf8_lossy(&after).lines().count(), 2);
    }

    /// Replayed traffic with a cut, as `serve` receives it (each record's receipt is its event's time): 30
    /// minutes of nothing from its one source, and secret writes that fall from Request to Metadata. Live
    /// detection raises exactly the silence, its end and the drift; read to its end, the log is not a silence.
    #[test]
    fn a_cut_trail_raises_silence_resumed_and_drift_once() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            fsync: false,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(&dir.path().join("wal"), opts).unwrap();
        let events = kubetrail_gen::cut::cut_trail(
            kubetrail_gen::Config {
                nodes: 5,
                rate: 1.0,
                ..kubetrail_gen::Config::default()
            },
            &kubetrail_gen::cut::Cut::four_hours(),
        );
        for (at, line) in &events {
            let e = Event::parse(line).unwrap();
            let rec = EventRecord {
                received_us: *at,
                cluster: "c1".into(),
                source: "webhook:apiserver-1".into(),
                audit_id: e.audit_id.clone(),
                stage: e.stage.as_str().into(),
                variant: "".into(),
                event: line.as_str().into(),
            };
            let mut bytes = Vec::new();
            rec.encode(&mut bytes);
            wal.append(&[bytes.as_slice()]).unwrap();
        }
        let rules = crate::alerting::rules::load_rules(&crate::alerting::rules::Sources {
            builtin: true,
            paths: Vec::new(),
        })
        .unwrap();
        let engine = Engine::new(&rules, kubetrail_detect::Config::default()).unwrap();
        let cfg = crate::alerting::rules::DetectionConfig::default();
        let mut d = Detector::open(dir.path(), Arc::new(wal), engine, None)
            .unwrap()
            .watching(cfg.watch(true).unwrap());
        let caught_up =
            jiff::Timestamp::from_microsecond(events.last().unwrap().0 + 10_000_000).unwrap();
        while d.round_at(caught_up).unwrap() > 0 {}
        let stream: Vec<Alert> = lines(dir.path())
            .iter()
            .map(|l| serde_json::from_str::<Alert>(l).unwrap())
            .filter(|a| is_stream_rule(&a.rule.id))
            .collect();
        let ids: Vec<&str> = stream.iter().map(|a| a.rule.id.as_str()).collect();
        assert_eq!(
            ids,
            ["kt-audit-silence", "kt-audit-resumed", "kt-policy-drift"],
            "{:#?}",
            stream.iter().map(|a| &a.summary).collect::<Vec<_>>()
        );
        assert_eq!(stream[0].cluster.as_deref(), Some("c1"));
        assert!(
            stream[0].summary.contains("webhook:apiserver-1"),
            "{}",
            stream[0].summary
        );
        assert_eq!(stream[0].investigate[0], "kubetrail gaps --since 24h");
        assert!(
            stream[1].summary.contains("after 30m"),
            "{}",
            stream[1].summary
        );
        assert!(
            stream[2]
                .summary
                .contains("`create secrets` in namespace `prod`")
                && stream[2].summary.contains("recorded at Request"),
            "{}",
            stream[2].summary
        );
        // A restart keeps what was learned: the new detector judges the source silent too, without an hour
        // of learning (the last state is written when the detector stops; here, by hand).
        d.save_watch(true);
        let wal = d.wal.clone();
        drop(d);
        let rules = crate::alerting::rules::load_rules(&crate::alerting::rules::Sources {
            builtin: true,
            paths: Vec::new(),
        })
        .unwrap();
        let engine = Engine::new(&rules, kubetrail_detect::Config::default()).unwrap();
        let mut d = Detector::open(dir.path(), wal, engine, None)
            .unwrap()
            .watching(cfg.watch(true).unwrap());
        // Later, on the collector's own clock, the source that stopped is silent now.
        let later =
            jiff::Timestamp::from_microsecond(events.last().unwrap().0 + 20 * 60_000_000).unwrap();
        d.round_at(later).unwrap();
        let silences = lines(dir.path())
            .iter()
            .filter(|l| l.contains("\"kt-audit-silence\""))
            .count();
        assert_eq!(silences, 2, "the live clock judges the source that stopped");
    }
}
