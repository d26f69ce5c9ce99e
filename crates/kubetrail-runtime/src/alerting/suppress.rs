//! Suppressions: planned silence with an expiry and a reason ("node upgrade, ops team, until 06:00").
//!
//! Kept in `DATA/alerts/suppressions.jsonl`, an append-only log of who added or lifted which suppression and
//! when, so every silence stays on record. A suppressed alert is still raised and recorded in `alerts.jsonl`
//! (status `suppressed`, with the suppression's id), so nothing is hidden from an investigation; it is only not
//! delivered. Live detection rereads the file when it changes, so the CLI and the API act on a running `serve`.
//!
//! Suppressions are governed: a selector names at least a rule or an exact identity (never only wildcards,
//! namespaces or clusters: that would silence an attacker's every alert), a suppression lasts at most
//! [`DEFAULT_MAX_DAYS`] unless configured (`alerts.max_suppression_days`), and making or lifting one raises
//! `kt-suppression-created` / `kt-suppression-lifted`, which no suppression matches (the API lets only the
//! `admin` role do either).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kubetrail_detect::Alert;
use serde::{Deserialize, Serialize};

/// The longest a suppression may last unless `alerts.max_suppression_days` says otherwise: a permanent
/// silence is a detection exception (config, reviewed like code), not this.
pub const DEFAULT_MAX_DAYS: u32 = 30;
/// The longest selector value (a Kubernetes name is at most 253 characters).
pub const MAX_SELECTOR_CHARS: usize = 253;
/// The longest reason: it travels in the governance alert to every destination.
pub const MAX_REASON_CHARS: usize = 500;

/// `t1609` or `t1609.001`.
fn is_technique(tag: &str) -> bool {
    let b = tag.as_bytes();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    match b {
        [b't', rest @ ..] => match rest.iter().position(|c| *c == b'.') {
            None => rest.len() == 4 && digits(rest),
            Some(4) => digits(&rest[..4]) && rest.len() == 8 && digits(&rest[5..]),
            _ => false,
        },
        _ => false,
    }
}

/// Which alerts a suppression silences: all the given selectors must match (at least one is required).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// A rule id, a Sigma tag (`attack.t1609`) or an ATT&CK technique (`T1609`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The actor's username, exactly, or a prefix ending in `*` (`system:serviceaccount:ci:*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The target's namespace (`*` wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.rule.is_none()
            && self.user.is_none()
            && self.namespace.is_none()
            && self.cluster.is_none()
    }

    /// Why this selector may not be used, if it may not: it must name a rule (its id, or an ATT&CK technique:
    /// `T1609`, `attack.t1609`; never a tactic such as `attack.execution`, which covers dozens of rules) or an
    /// exact identity, and no value may be longer than [`MAX_SELECTOR_CHARS`].
    pub fn governed(&self) -> Result<(), String> {
        for (name, v) in [
            ("rule", &self.rule),
            ("user", &self.user),
            ("namespace", &self.namespace),
            ("cluster", &self.cluster),
        ] {
            if let Some(v) = v
                && v.chars().count() > MAX_SELECTOR_CHARS
            {
                return Err(format!(
                    "`{name}` is longer than {MAX_SELECTOR_CHARS} characters"
                ));
            }
        }
        if let Some(r) = &self.rule
            && let Some(tag) = r.to_ascii_lowercase().strip_prefix("attack.")
            && !is_technique(tag)
        {
            return Err(format!(
                "`rule: {r}` is an ATT&CK tactic, which covers many rules: name a rule id or a technique \
                 (`attack.t1609`)"
            ));
        }
        let rule = self
            .rule
            .as_deref()
            .is_some_and(|r| !r.trim().is_empty() && !r.contains('*'));
        let user = self
            .user
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty() && !u.contains('*'));
        if rule || user {
            return Ok(());
        }
        Err("a suppression must name a rule (`rule`) or an exact identity (`user` without `*`): \
             wildcards, namespaces and clusters alone would silence every alert of whoever acts there"
            .into())
    }

    pub fn matches(&self, a: &Alert) -> bool {
        if crate::alerting::store::is_governance(&a.rule.id) {
            return false;
        }
        let rule = self.rule.as_deref().is_none_or(|r| {
            r == a.rule.id
                || a.tags.iter().any(|t| t.eq_ignore_ascii_case(r))
                || a.attack.iter().any(|t| t.eq_ignore_ascii_case(r))
        });
        let user = self
            .user
            .as_deref()
            .is_none_or(|u| match u.strip_suffix('*') {
                Some(prefix) => a.actor.username.starts_with(prefix),
                None => a.actor.username == u,
            });
        let namespace = self.namespace.as_deref().is_none_or(|p| {
            a.target
                .as_ref()
                .and_then(|t| t.namespace.as_deref())
                .is_some_and(|ns| crate::text::glob(p, ns))
        });
        let cluster = self
            .cluster
            .as_deref()
            .is_none_or(|c| a.cluster.as_deref() == Some(c));
        rule && user && namespace && cluster
    }
}

/// A line of the suppression log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Entry {
    Add {
        id: String,
        #[serde(flatten)]
        selector: Selector,
        /// RFC 3339 UTC: silent until then.
        until: String,
        reason: String,
        by: String,
        at: String,
    },
    Lift {
        id: String,
        by: String,
        at: String,
    },
}

/// A suppression as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    pub id: String,
    #[serde(flatten)]
    pub selector: Selector,
    pub until: String,
    pub reason: String,
    pub by: String,
    pub at: String,
    /// Who lifted it early, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted: Option<(String, String)>,
}

impl Suppression {
    /// Why this suppression may not silence anything, if it may not: its selector is not governed, or it
    /// was made to last longer than `max_days`.
    pub fn lawful(&self, max_days: u32) -> Result<(), String> {
        self.selector.governed()?;
        let (Ok(at), Ok(until)) = (
            self.at.parse::<jiff::Timestamp>(),
            self.until.parse::<jiff::Timestamp>(),
        ) else {
            return Err("its times are not RFC 3339".into());
        };
        if until.duration_since(at).as_secs() > i64::from(max_days) * 86_400 + 60 {
            return Err(format!("it lasts longer than {max_days} days"));
        }
        Ok(())
    }

    /// In force at `now` (not expired, not lifted).
    pub fn active(&self, now: jiff::Timestamp) -> bool {
        self.lifted.is_none()
            && self
                .until
                .parse::<jiff::Timestamp>()
                .is_ok_and(|until| now < until)
    }
}

pub fn path(data: &Path) -> PathBuf {
    crate::alerting::store::alerts_dir(data).join("suppressions.jsonl")
}

/// Every suppression ever made, oldest first.
pub fn load(data: &Path) -> anyhow::Result<Vec<Suppression>> {
    let mut out: Vec<Suppression> = Vec::new();
    for e in crate::alerting::store::read_lines::<Entry>(&path(data))? {
        match e {
            Entry::Add {
                id,
                selector,
                until,
                reason,
                by,
                at,
            } => out.push(Suppression {
                id,
                selector,
                until,
                reason,
                by,
                at,
                lifted: None,
            }),
            Entry::Lift { id, by, at } => {
                if let Some(s) = out.iter_mut().find(|s| s.id == id) {
                    s.lifted = Some((by, at));
                }
            }
        }
    }
    Ok(out)
}

fn append(data: &Path, entry: &Entry) -> anyhow::Result<()> {
    let dir = crate::alerting::store::alerts_dir(data);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let p = path(data);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .with_context(|| format!("failed to open `{}`", p.display()))?;
    f.write_all(format!("{}\n", serde_json::to_string(entry)?).as_bytes())
        .and_then(|()| f.sync_data())
        .with_context(|| format!("failed to write `{}`", p.display()))
}

/// Adds a suppression until `until` (at most `max_days` ahead), raising `kt-suppression-created`; returns it.
pub fn add(
    data: &Path,
    selector: Selector,
    until: jiff::Timestamp,
    reason: &str,
    by: &str,
    max_days: u32,
) -> anyhow::Result<Suppression> {
    let now = jiff::Timestamp::now();
    if let Err(e) = selector.governed() {
        bail!("{e}");
    }
    if reason.trim().is_empty() {
        bail!("say why (--reason): the suppression is on record for whoever investigates later");
    }
    if reason.trim().chars().count() > MAX_REASON_CHARS {
        bail!("the reason is longer than {MAX_REASON_CHARS} characters: link a ticket instead");
    }
    if until <= now {
        bail!("the suppression would end at {until}, which is not in the future");
    }
    if until.duration_since(now).as_secs() > i64::from(max_days) * 86_400 {
        bail!(
            "a suppression lasts at most {max_days} days (alerts.max_suppression_days); for a permanent one, add \
             a detection exception to the config"
        );
    }
    let id = format!(
        "s-{}",
        &crate::alerting::store::short_hash(&format!("{selector:?}{until}{now}{by}"))[..10]
    );
    let at = now.to_string();
    let until = until.to_string();
    crate::alerting::store::raise_governance(
        data,
        "kt-suppression-created",
        "A suppression was created",
        by,
        &format!(
            "{by} suppressed alerts of {} until {until} (suppression {id}): {}",
            describe(&selector),
            reason.trim()
        ),
        &[
            "kubetrail alerts suppressions --all",
            &format!("kubetrail alerts unsuppress {id}"),
        ],
    )?;
    append(
        data,
        &Entry::Add {
            id: id.clone(),
            selector: selector.clone(),
            until: until.clone(),
            reason: reason.trim().to_string(),
            by: by.to_string(),
            at: at.clone(),
        },
    )?;
    Ok(Suppression {
        id,
        selector,
        until,
        reason: reason.trim().to_string(),
        by: by.to_string(),
        at,
        lifted: None,
    })
}

/// Lifts the suppression `id` before its expiry.
pub fn lift(data: &Path, id: &str, by: &str) -> anyhow::Result<Suppression> {
    let all = load(data)?;
    let Some(s) = all.iter().find(|s| s.id == id) else {
        bail!("no suppression `{id}`: `kubetrail alerts suppressions --all` lists them");
    };
    if !s.active(jiff::Timestamp::now()) {
        bail!("suppression `{id}` is no longer in force (expired or lifted)");
    }
    let at = jiff::Timestamp::now().to_string();
    crate::alerting::store::raise_governance(
        data,
        "kt-suppression-lifted",
        "A suppression was lifted",
        by,
        &format!(
            "{by} lifted suppression {id} of {} (it was to last until {}): {}",
            describe(&s.selector),
            s.until,
            s.reason
        ),
        &["kubetrail alerts suppressions --all"],
    )?;
    append(
        data,
        &Entry::Lift {
            id: id.to_string(),
            by: by.to_string(),
            at: at.clone(),
        },
    )?;
    Ok(Suppression {
        lifted: Some((by.to_string(), at)),
        ..s.clone()
    })
}

/// `rule kt-exec, user alice`: what a selector names.
pub fn describe(s: &Selector) -> String {
    let mut parts = Vec::new();
    parts.extend(s.rule.as_ref().map(|r| format!("rule {r}")));
    parts.extend(s.user.as_ref().map(|u| format!("user {u}")));
    parts.extend(s.namespace.as_ref().map(|n| format!("namespace {n}")));
    parts.extend(s.cluster.as_ref().map(|c| format!("cluster {c}")));
    parts.join(", ")
}

/// The suppressions live detection applies, reloaded when the file changes.
#[derive(Debug, Default)]
pub struct Live {
    data: PathBuf,
    seen: Option<(u64, std::time::SystemTime)>,
    all: Vec<Suppression>,
    max_days: u32,
    /// Unlawful suppressions already reported.
    reported: std::collections::HashSet<String>,
}

impl Live {
    /// Applies the suppressions of `data` that keep the rules, with `max_days` the longest allowed.
    pub fn new(data: &Path, max_days: u32) -> Live {
        Live {
            data: data.to_path_buf(),
            max_days,
            ..Live::default()
        }
    }

    fn refresh(&mut self) {
        let stamp = std::fs::metadata(path(&self.data))
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        if stamp == self.seen {
            return;
        }
        match load(&self.data) {
            Ok(all) => {
                self.all = all;
                self.seen = stamp;
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "failed to read the suppressions"),
        }
    }

    /// The id of the suppression in force now that silences `a`, if any. A suppression on file that breaks
    /// the rules (written before them, or by hand) silences nothing; it is logged and reported once.
    pub fn silencing(&mut self, a: &Alert) -> Option<String> {
        self.refresh();
        let now = jiff::Timestamp::now();
        let mut unlawful = Vec::new();
        let mut silencer = None;
        for s in self
            .all
            .iter()
            .filter(|s| s.active(now) && s.selector.matches(a))
        {
            match s.lawful(self.max_days) {
                Ok(()) => {
                    silencer = Some(s.id.clone());
                    break;
                }
                Err(why) => unlawful.push((s.clone(), why)),
            }
        }
        for (s, why) in unlawful {
            if !self.reported.insert(s.id.clone()) {
                continue;
            }
            tracing::error!(
                suppression = s.id,
                "a suppression on file is ignored: {why}"
            );
            let alerts = crate::alerting::store::alerts_dir(&self.data).join("alerts.jsonl");
            crate::alerting::store::raise_system(
                &alerts,
                "kt-suppression-ignored",
                "A suppression on file breaks the rules and is ignored",
                "high",
                &s.id,
                &format!(
                    "suppression {} ({}, by {}) silences nothing: {why}",
                    s.id,
                    describe(&s.selector),
                    s.by
                ),
                &["kubetrail alerts suppressions --all"],
            );
        }
        silencer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        serde_json::from_value(serde_json::json!({
            "id": "a1", "rule": {"id": "kt-exec", "title": "Exec"}, "severity": "high",
            "auditIDs": ["x"], "time": "2026-11-25T10:00:00Z", "actor": {"username": "system:serviceaccount:ci:deployer"},
            "sourceIPs": [], "summary": "", "count": 1, "lastTime": "2026-11-25T10:00:00Z",
            "target": {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": "prod-web"},
            "tags": ["attack.execution", "attack.t1609"], "attack": ["T1609"], "cluster": "eu-1"
        }))
        .expect("alert")
    }

    #[test]
    fn selectors_match_rule_tag_user_prefix_namespace_and_cluster() {
        let a = alert();
        let sel = |rule: Option<&str>,
                   user: Option<&str>,
                   ns: Option<&str>,
                   cluster: Option<&str>| Selector {
            rule: rule.map(Into::into),
            user: user.map(Into::into),
            namespace: ns.map(Into::into),
            cluster: cluster.map(Into::into),
        };
        assert!(sel(Some("kt-exec"), None, None, None).matches(&a));
        assert!(sel(Some("attack.t1609"), None, None, None).matches(&a));
        assert!(sel(Some("t1609"), None, None, None).matches(&a));
        assert!(!sel(Some("kt-other"), None, None, None).matches(&a));
        assert!(sel(None, Some("system:serviceaccount:ci:*"), None, None).matches(&a));
        assert!(
            !sel(None, Some("system:serviceaccount:ci"), None, None).matches(&a),
            "exact unless *"
        );
        assert!(sel(None, None, Some("prod-*"), Some("eu-1")).matches(&a));
        assert!(
            !sel(Some("kt-exec"), None, Some("dev-*"), None).matches(&a),
            "all must match"
        );
        assert!(!sel(None, None, None, Some("us-1")).matches(&a));
    }

    #[test]
    fn suppressions_expire_are_lifted_and_stay_on_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
        let rule = Selector {
            rule: Some("kt-exec".into()),
            ..Selector::default()
        };
        let max = DEFAULT_MAX_DAYS;
        assert!(
            add(dir.path(), Selector::default(), until, "x", "ann", max).is_err(),
            "needs a selector"
        );
        assert!(
            add(dir.path(), rule.clone(), until, " ", "ann", max).is_err(),
            "needs a reason"
        );
        let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
        assert!(
            add(dir.path(), rule.clone(), past, "x", "ann", max).is_err(),
            "must end in the future"
        );
        let s = add(dir.path(), rule, until, "node upgrade", "ann", max).expect("added");
        let mut live = Live::new(dir.path(), DEFAULT_MAX_DAYS);
        assert_eq!(live.silencing(&alert()).as_deref(), Some(s.id.as_str()));
        lift(dir.path(), &s.id, "bob").expect("lifted");
        assert_eq!(
            live.silencing(&alert()),
            None,
            "a lifted suppression silences nothing"
        );
        let all = load(dir.path()).expect("load");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].reason, "node upgrade");
        assert_eq!(all[0].by, "ann");
        assert_eq!(all[0].lifted.as_ref().map(|l| l.0.as_str()), Some("bob"));
        assert!(lift(dir.path(), &s.id, "bob").is_err(), "cannot lift twice");
    }

    #[test]
    fn selectors_must_name_a_rule_or_an_exact_identity() {
        let dir = tempfile::tempdir().expect("tmp");
        let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
        let refused = [
            Selector {
                user: Some("*".into()),
                ..Selector::default()
            },
            Selector {
                user: Some("system:serviceaccount:ci:*".into()),
                ..Selector::default()
            },
            Selector {
                rule: Some("*".into()),
                ..Selector::default()
            },
            Selector {
                namespace: Some("*".into()),
                cluster: Some("eu-1".into()),
                ..Selector::default()
            },
        ];
        for sel in refused {
            let e = add(dir.path(), sel.clone(), until, "x", "ann", DEFAULT_MAX_DAYS)
                .expect_err("refused");
            assert!(e.to_string().contains("exact identity"), "{sel:?}: {e}");
        }
        assert!(load(dir.path()).expect("load").is_empty());
        assert!(
            crate::alerting::store::load(dir.path())
                .expect("alerts")
                .is_empty(),
            "a refused suppression raises nothing"
        );
        let user = Selector {
            user: Some("system:serviceaccount:ci:deployer".into()),
            namespace: Some("prod-*".into()),
            ..Selector::default()
        };
        add(
            dir.path(),
            user,
            until,
            "deploy window",
            "ann",
            DEFAULT_MAX_DAYS,
        )
        .expect("exact user");
    }

    #[test]
    fn suppressions_are_capped_and_raise_governance_alerts_nothing_silences() {
        let dir = tempfile::tempdir().expect("tmp");
        let day = jiff::SignedDuration::from_hours(24);
        let everything = Selector {
            rule: Some("kt-exec".into()),
            ..Selector::default()
        };
        let long = jiff::Timestamp::now() + day * 31;
        let e = add(
            dir.path(),
            everything.clone(),
            long,
            "x",
            "ann",
            DEFAULT_MAX_DAYS,
        )
        .expect_err("over 30 days");
        assert!(e.to_string().contains("at most 30 days"), "{e}");
        add(dir.path(), everything.clone(), long, "x", "ann", 45).expect("45 configured");
        let s = add(
            dir.path(),
            everything,
            jiff::Timestamp::now() + day,
            "ci noise",
            "api:platform-security",
            DEFAULT_MAX_DAYS,
        )
        .expect("added");
        lift(dir.path(), &s.id, "api:soc-lead").expect("lifted");
        let alerts = crate::alerting::store::load(dir.path()).expect("alerts");
        let rules: Vec<&str> = alerts.iter().map(|t| t.alert.rule.id.as_str()).collect();
        assert_eq!(
            rules,
            [
                "kt-suppression-created",
                "kt-suppression-created",
                "kt-suppression-lifted"
            ]
        );
        let created = &alerts[1].alert;
        assert_eq!(created.severity, kubetrail_detect::Level::High);
        assert_eq!(created.actor.username, "api:platform-security");
        assert!(created.summary.contains("rule kt-exec") && created.summary.contains("ci noise"));
        assert!(alerts[2].alert.summary.contains(&s.id));
        // No selector silences a governance alert, not even one naming its rule.
        for rule in crate::alerting::store::GOVERNANCE_RULES {
            let mut a = created.clone();
            a.rule.id = rule.into();
            let sel = Selector {
                rule: Some(rule.into()),
                ..Selector::default()
            };
            assert!(!sel.matches(&a), "{rule}");
        }
    }

    #[test]
    fn tactics_long_values_and_long_reasons_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
        let rule = |r: &str| Selector {
            rule: Some(r.into()),
            ..Selector::default()
        };
        for tactic in [
            "attack.execution",
            "ATTACK.Persistence",
            "attack.t16",
            "attack.t1609.1",
        ] {
            let e = add(
                dir.path(),
                rule(tactic),
                until,
                "x",
                "ann",
                DEFAULT_MAX_DAYS,
            )
            .expect_err(tactic);
            assert!(e.to_string().contains("tactic"), "{tactic}: {e}");
        }
        for technique in ["attack.t1609", "attack.T1552.007", "T1609", "kt-exec"] {
            add(
                dir.path(),
                rule(technique),
                until,
                "x",
                "ann",
                DEFAULT_MAX_DAYS,
            )
            .expect(technique);
        }
        let long = "x".repeat(MAX_SELECTOR_CHARS + 1);
        assert!(add(dir.path(), rule(&long), until, "x", "ann", DEFAULT_MAX_DAYS).is_err());
        let reason = "r".repeat(MAX_REASON_CHARS + 1);
        let e = add(
            dir.path(),
            rule("kt-exec"),
            until,
            &reason,
            "ann",
            DEFAULT_MAX_DAYS,
        )
        .expect_err("long reason");
        assert!(e.to_string().contains("reason"), "{e}");
    }

    /// A suppression written to the file by hand (or before the rules) silences nothing and is reported.
    #[test]
    fn unlawful_suppressions_on_file_silence_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = jiff::Timestamp::now();
        let lines = [
            Entry::Add {
                id: "s-everything".into(),
                selector: Selector {
                    namespace: Some("*".into()),
                    ..Selector::default()
                },
                until: (now + jiff::SignedDuration::from_hours(24)).to_string(),
                reason: "x".into(),
                by: "root".into(),
                at: now.to_string(),
            },
            Entry::Add {
                id: "s-too-long".into(),
                selector: Selector {
                    rule: Some("kt-exec".into()),
                    ..Selector::default()
                },
                until: (now + jiff::SignedDuration::from_hours(24 * 89)).to_string(),
                reason: "x".into(),
                by: "root".into(),
                at: now.to_string(),
            },
        ];
        for l in &lines {
            append(dir.path(), l).expect("append");
        }
        let mut live = Live::new(dir.path(), DEFAULT_MAX_DAYS);
        assert_eq!(live.silencing(&alert()), None);
        let reported = crate::alerting::store::load(dir.path()).expect("alerts");
        let rules: Vec<&str> = reported.iter().map(|t| t.alert.rule.id.as_str()).collect();
        assert_eq!(rules, ["kt-suppression-ignored", "kt-suppression-ignored"]);
        assert!(reported[0].alert.summary.contains("s-everything"));
        assert_eq!(live.silencing(&alert()), None);
        assert_eq!(
            crate::alerting::store::load(dir.path())
                .expect("alerts")
                .len(),
            2,
            "not reported twice"
        );
        // With a longer maximum configured, the 89-day one is lawful.
        let mut live = Live::new(dir.path(), 90);
        assert_eq!(live.silencing(&alert()).as_deref(), Some("s-too-long"));
    }

    /// A governance alert is resolved only by someone other than who it reports, and its resolution is not
    /// sent to the destinations.
    #[test]
    fn governance_alerts_are_not_resolved_by_their_subject_nor_resolved_at_the_destinations() {
        use crate::alerting::store::{self, Action};
        let dir = tempfile::tempdir().expect("tmp");
        let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
        let sel = Selector {
            rule: Some("kt-exec".into()),
            ..Selector::default()
        };
        add(
            dir.path(),
            sel,
            until,
            "x",
            "api:platform-security",
            DEFAULT_MAX_DAYS,
        )
        .expect("added");
        let id = store::load(dir.path()).expect("alerts")[0].alert.id.clone();
        let lines = || {
            std::fs::read_to_string(store::alerts_dir(dir.path()).join("alerts.jsonl"))
                .expect("alerts.jsonl")
                .lines()
                .count()
        };
        let e = store::record(dir.path(), &id, Action::Resolve, "api:platform-security")
            .expect_err("its subject");
        assert!(e.to_string().contains("someone else"), "{e}");
        let t = store::record(dir.path(), &id, Action::Resolve, "api:soc-lead").expect("another");
        assert_eq!(t.status, store::Status::Resolved);
        assert_eq!(lines(), 1, "no resolution notice for the destinations");
    }
}
