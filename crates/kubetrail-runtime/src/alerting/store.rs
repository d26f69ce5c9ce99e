//! The analyst's view of alerts: what detection wrote to `DATA/alerts/alerts.jsonl` (the latest state of each
//! alert id wins: an update of a grouped alert supersedes it), with the workflow kept beside it in
//! `DATA/alerts/workflow.jsonl`, an append-only log of who acknowledged, resolved, assigned or annotated which
//! alert and when. Nothing is rewritten: every status change stays on record.
//!
//! Appends take an exclusive lock on `DATA/alerts/.workflow.lock`, so the CLI and a running `serve` (the
//! API) can both write.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kubetrail_detect::Alert;
use serde::{Deserialize, Serialize};

/// Where an alert is in the analyst's workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Acknowledged,
    Resolved,
    /// Raised while a suppression was in force: recorded, not delivered.
    Suppressed,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Open,
        Status::Acknowledged,
        Status::Resolved,
        Status::Suppressed,
    ];

    /// The name the API, the files and the command line use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
            Status::Suppressed => "suppressed",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Status, String> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a status (open, acknowledged, resolved, suppressed)")
            })
    }
}

/// One change made by an analyst.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Ack,
    Resolve,
    Reopen,
    Assign { to: String },
    Note { text: String },
}

/// A line of the workflow log (not `deny_unknown_fields`: serde cannot combine it with the flattened action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub alert: String,
    #[serde(flatten)]
    pub action: Action,
    /// Who made it: an OS user from the CLI, the authenticated caller from the API.
    pub by: String,
    /// RFC 3339 UTC.
    pub at: String,
}

/// An alert with its workflow.
#[derive(Debug, Clone, Serialize)]
pub struct Tracked {
    #[serde(flatten)]
    pub alert: Alert,
    pub status: Status,
    pub assignee: Option<String>,
    pub history: Vec<Change>,
}

pub fn alerts_dir(data: &Path) -> PathBuf {
    data.join("alerts")
}

pub(crate) fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to open `{}`", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("failed to read `{}`", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        // A line cut by a crash mid-write is the last one: skip it rather than refuse the rest.
        match serde_json::from_str(&line) {
            Ok(v) => out.push(v),
            Err(e) => {
                tracing::warn!(file = %path.display(), line = i + 1, error = %e, "unreadable line skipped")
            }
        }
    }
    Ok(out)
}

/// An alert about kubetrail itself (a sink's backlog, a damaged or unwritable log), appended to
/// `alerts.jsonl` like detection's and delivered the same way. `scope` keeps ids of the same rule apart (a
/// sink's name). A failure to write it is logged and returned (false): the condition it reports may be the
/// very reason (a full disk), so callers retry.
pub fn raise_system(
    alerts: &Path,
    rule: &str,
    title: &str,
    severity: &str,
    scope: &str,
    summary: &str,
    investigate: &[&str],
) -> bool {
    let r = append_alert(
        alerts,
        rule,
        title,
        severity,
        "kubetrail",
        scope,
        summary,
        investigate,
    );
    if let Err(e) = &r {
        tracing::error!(rule, error = %e, "failed to record an alert about kubetrail itself: {summary}");
    }
    r.is_ok()
}

/// The rules of governance alerts: a suppression made or lifted, a critical alert resolved, a suppression on
/// file ignored for breaking the rules, a governance alert a destination refused for good. No suppression
/// silences them and every destination receives them, whatever its route: whoever can silence detection is
/// watched by the same people it would silence.
pub const GOVERNANCE_RULES: [&str; 5] = [
    "kt-suppression-created",
    "kt-suppression-lifted",
    "kt-critical-resolved",
    "kt-suppression-ignored",
    "kt-governance-undelivered",
];

/// Whether `rule` is one of [`GOVERNANCE_RULES`].
pub fn is_governance(rule: &str) -> bool {
    GOVERNANCE_RULES.contains(&rule)
}

/// Raises a governance alert (high) about what `by` did, into `DATA/alerts/alerts.jsonl`. Unlike
/// [`raise_system`], a failure is the caller's error: the governed action must not happen unseen.
pub fn raise_governance(
    data: &Path,
    rule: &str,
    title: &str,
    by: &str,
    summary: &str,
    investigate: &[&str],
) -> anyhow::Result<()> {
    debug_assert!(is_governance(rule));
    let dir = alerts_dir(data);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let path = dir.join("alerts.jsonl");
    append_alert(
        &path,
        rule,
        title,
        "high",
        by,
        summary,
        summary,
        investigate,
    )
    .with_context(|| {
        format!(
            "failed to record the {rule} alert in `{}`: nothing was changed",
            path.display()
        )
    })?;
    tracing::warn!(rule, by, "governance alert: {summary}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn append_alert(
    alerts: &Path,
    rule: &str,
    title: &str,
    severity: &str,
    actor: &str,
    scope: &str,
    summary: &str,
    investigate: &[&str],
) -> std::io::Result<()> {
    let now = jiff::Timestamp::now().to_string();
    let alert = serde_json::json!({
        "id": short_hash(&format!("{rule}{scope}{now}"))[..16].to_string(),
        "rule": {"id": rule, "title": title},
        "severity": severity,
        "auditIDs": [],
        "time": now,
        "actor": {"username": actor},
        "sourceIPs": [],
        "summary": summary,
        "count": 1,
        "lastTime": now,
        "detected": now,
        "investigate": investigate,
    });
    let line = format!("{alert}\n");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(alerts)
        .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_data()))
}

/// The first hex digits of a SHA-256, for short ids.
pub fn short_hash(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Which alerts are resolved, as live detection needs it ("other open alerts of the actor"): the workflow
/// log read incrementally.
#[derive(Debug, Default)]
pub struct Resolved {
    path: PathBuf,
    offset: u64,
    resolved: std::collections::HashSet<String>,
}

impl Resolved {
    pub fn new(data: &Path) -> Resolved {
        Resolved {
            path: alerts_dir(data).join("workflow.jsonl"),
            ..Resolved::default()
        }
    }

    /// Reads what the workflow log gained since the last call.
    pub fn refresh(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.metadata().is_ok_and(|m| m.len() <= self.offset) {
            return;
        }
        let mut buf = String::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_string(&mut buf).is_err() {
            return;
        }
        // Only whole lines: a line being written is read next time.
        let whole = buf.rfind('\n').map_or(0, |i| i + 1);
        for line in buf[..whole].lines() {
            if let Ok(c) = serde_json::from_str::<Change>(line) {
                match c.action {
                    Action::Resolve => {
                        self.resolved.insert(c.alert);
                    }
                    Action::Reopen => {
                        self.resolved.remove(&c.alert);
                    }
                    _ => {}
                }
            }
        }
        self.offset += whole as u64;
    }

    pub fn is_resolved(&self, id: &str) -> bool {
        self.resolved.contains(id)
    }
}

/// Every alert with its workflow, oldest first.
pub fn load(data: &Path) -> anyhow::Result<Vec<Tracked>> {
    let dir = alerts_dir(data);
    let mut by_id: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for a in read_lines::<Alert>(&dir.join("alerts.jsonl"))? {
        match by_id.get_mut(&a.id) {
            // A resolution or reopening notice for the destinations: the workflow log holds the status.
            Some(_) if a.resolved.is_some() => {}
            Some(t) => t.alert = a,
            None => {
                order.push(a.id.clone());
                let status = if a.suppressed.is_some() {
                    Status::Suppressed
                } else {
                    Status::Open
                };
                by_id.insert(
                    a.id.clone(),
                    Tracked {
                        alert: a,
                        status,
                        assignee: None,
                        history: Vec::new(),
                    },
                );
            }
        }
    }
    for c in read_lines::<Change>(&dir.join("workflow.jsonl"))? {
        let Some(t) = by_id.get_mut(&c.alert) else {
            continue;
        };
        match &c.action {
            Action::Ack => t.status = Status::Acknowledged,
            Action::Resolve => t.status = Status::Resolved,
            Action::Reopen => t.status = Status::Open,
            Action::Assign { to } => t.assignee = Some(to.clone()),
            Action::Note { .. } => {}
        }
        t.history.push(c);
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

/// The alert whose id is `id`, or starts with it when that is unambiguous.
pub fn find(data: &Path, id: &str) -> anyhow::Result<Tracked> {
    let all = load(data)?;
    if let Some(t) = all.iter().find(|t| t.alert.id == id) {
        return Ok(t.clone());
    }
    let matches: Vec<&Tracked> = all
        .iter()
        .filter(|t| !id.is_empty() && t.alert.id.starts_with(id))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no alert `{id}`: `kubetrail alerts list` shows their ids"),
        many => bail!(
            "`{id}` is the start of {} alert ids: give more of it",
            many.len()
        ),
    }
}

/// Records a change of the alert `id` (or an unambiguous prefix) made by `by`; returns the alert after it.
/// Resolving a critical alert raises `kt-critical-resolved` first (see [`GOVERNANCE_RULES`]); a governance
/// alert is resolved only by someone other than who it reports, and its resolution is not delivered.
pub fn record(data: &Path, id: &str, action: Action, by: &str) -> anyhow::Result<Tracked> {
    let alert = find(data, id)?;
    if let Action::Assign { to } | Action::Note { text: to } = &action
        && to.trim().is_empty()
    {
        bail!("say who to assign it to, or what the note says");
    }
    let governance = is_governance(&alert.alert.rule.id);
    if governance && matches!(action, Action::Resolve) && alert.alert.actor.username == by {
        bail!(
            "`{by}` made the change this governance alert reports ({}): someone else resolves it",
            alert.alert.rule.id
        );
    }
    if matches!(action, Action::Resolve)
        && alert.status != Status::Resolved
        && alert.alert.severity == kubetrail_detect::Level::Critical
    {
        let a = &alert.alert;
        raise_governance(
            data,
            "kt-critical-resolved",
            "A critical alert was resolved",
            by,
            &format!(
                "{by} resolved critical alert {} ({}: {}, actor {})",
                a.id, a.rule.id, a.rule.title, a.actor.username
            ),
            &[&format!("kubetrail alerts show {}", a.id)],
        )?;
    }
    let dir = alerts_dir(data);
    std::fs::create_dir_all(&dir)?;
    let lock_path = dir.join(".workflow.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("failed to open `{}`", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("failed to lock `{}`", lock_path.display()))?;
    let change = Change {
        alert: alert.alert.id.clone(),
        action,
        by: by.to_string(),
        at: jiff::Timestamp::now().to_string(),
    };
    let path = dir.join("workflow.jsonl");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("failed to open `{}`", path.display()))?;
    f.write_all(format!("{}\n", serde_json::to_string(&change)?).as_bytes())?;
    f.sync_data()?;
    // Tell the destinations (the outbox reads alerts.jsonl): a resolution closes the alert there, a reopening
    // fires it again. Not for a governance alert: the destinations keep it as it was raised (a resolution sent
    // before a receiver's first flush could hide it).
    let notice = match change.action {
        _ if governance => None,
        Action::Resolve => Some(Alert {
            resolved: Some(change.at.clone()),
            update: true,
            ..alert.alert.clone()
        }),
        Action::Reopen => Some(Alert {
            resolved: None,
            update: true,
            ..alert.alert.clone()
        }),
        _ => None,
    };
    if let Some(notice) = notice {
        let path = dir.join("alerts.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        // One write: a line appended whole beside the detection thread's appends.
        f.write_all(format!("{}\n", serde_json::to_string(&notice)?).as_bytes())?;
        f.sync_data()?;
    }
    drop(lock);
    find(data, &change.alert)
}
