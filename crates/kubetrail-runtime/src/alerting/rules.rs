//! Assembling detection: the built-in pack plus rule files and directories into one `RuleSet`, the engine's
//! configuration from the `detection:` section of the config file, and alerts rendered for people.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kubetrail_detect::{Alert, Config as EngineConfig, Engine, Exception, RuleSet, Selection};
use serde::Deserialize;

/// The `detection:` section of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Sigma rule files or directories added to the built-in pack.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Load the built-in pack (default true).
    pub builtin: Option<bool>,
    /// Namespace patterns (`*` wildcards) of the production tier (default prod, prod-*, *-prod, production*).
    pub production_namespaces: Option<Vec<String>>,
    /// Exceptions: `{rule, user, namespace, image, userAgentPrefix, sourceCIDR, reason}`, exact or prefix.
    #[serde(default)]
    pub exceptions: Vec<Exception>,
    /// Rule ids that do not run.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Tags whose rules do not run (e.g. `attack.discovery`).
    #[serde(default)]
    pub disabled_tags: Vec<String>,
    /// Rule ids that run even if a tag of theirs is disabled.
    #[serde(default)]
    pub enabled: Vec<String>,
    /// The shortest pause of a source that is a silence (`kt-audit-silence`), default `5m`; a source that
    /// normally idles is allowed more (see `kubetrail_detect::watch`).
    pub silence_after: Option<String>,
}

/// Where the rules come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub builtin: bool,
    pub paths: Vec<PathBuf>,
}

impl DetectionConfig {
    pub fn engine_config(&self) -> EngineConfig {
        let mut cfg = EngineConfig::default();
        if let Some(p) = &self.production_namespaces {
            cfg.production_namespaces = p.clone();
        }
        cfg.exceptions = self.exceptions.clone();
        cfg.selection = Selection {
            disabled: self.disabled.clone(),
            disabled_tags: self.disabled_tags.clone(),
            enabled: self.enabled.clone(),
        };
        cfg
    }
}

impl DetectionConfig {
    /// `silence_after`, checked: at least a minute.
    pub fn silence_after(&self) -> anyhow::Result<std::time::Duration> {
        let Some(text) = &self.silence_after else {
            return Ok(std::time::Duration::from_secs(300));
        };
        let d = crate::duration::parse(text)
            .map_err(|e| anyhow::anyhow!("`detection.silence_after`: {e}"))?;
        if d.as_secs() < 60 {
            bail!(
                "`detection.silence_after` is `{text}`: it must be at least 1m (a webhook batches events for up \
                 to 30 s, so shorter pauses are routine)"
            );
        }
        Ok(d.unsigned_abs())
    }

    /// The stream watch (`kt-audit-silence`, `kt-audit-resumed`, `kt-policy-drift`): its rules come with the
    /// built-in pack (none when `builtin` is off) and obey `disabled`, `disabled_tags` and `enabled` as the
    /// pack's other rules do.
    pub fn watch(&self, builtin: bool) -> anyhow::Result<kubetrail_detect::watch::Watch> {
        use kubetrail_detect::watch::{StreamRules, Watch, WatchConfig};
        let rules = if builtin {
            StreamRules::load(
                kubetrail_rules::stream().iter().map(|f| (f.name, f.yaml)),
                |r| {
                    self.enabled.contains(&r.id)
                        || !(self.disabled.contains(&r.id)
                            || r.tags.iter().any(|t| self.disabled_tags.contains(t)))
                },
            )
            .map_err(|e| anyhow::anyhow!("the stream rules do not load: {e}"))?
        } else {
            StreamRules::default()
        };
        let cfg = WatchConfig {
            silence_after_ms: i64::try_from(self.silence_after()?.as_millis()).unwrap_or(i64::MAX),
            ..WatchConfig::default()
        };
        Ok(Watch::new(cfg, rules))
    }
}

/// The `.yml`/`.yaml` files of `path` (a file, or a directory walked recursively), in name order.
fn rule_files(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("failed to list `{}`", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("failed to list `{}`", path.display()))?;
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            rule_files(&p, out)?;
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Loads the rules: the built-in pack (as `builtin/<file>`) and every rule file under `paths`. Every error
/// of every file is reported (file:line:column: reason) before giving up.
pub fn load_rules(sources: &Sources) -> anyhow::Result<RuleSet> {
    let mut rules = RuleSet::new();
    let mut errors = Vec::new();
    if sources.builtin {
        for f in kubetrail_rules::builtin() {
            if let Err(e) = rules.add_file(&format!("builtin/{}", f.name), f.yaml) {
                errors.push(e.to_string());
            }
        }
    }
    let mut files = Vec::new();
    for p in &sources.paths {
        rule_files(p, &mut files)?;
    }
    for f in &files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("failed to read rule file `{}`", f.display()))?;
        if let Err(e) = rules.add_file(&f.display().to_string(), &text) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty()
        && let Err(e) = rules.check_references()
    {
        errors.push(e.to_string());
    }
    if !errors.is_empty() {
        bail!("the rules do not load:\n{}", errors.join("\n"));
    }
    if rules.is_empty() {
        bail!("no rules to run: give --rules PATH, or leave the built-in pack on");
    }
    Ok(rules)
}

/// Loads the rules and builds an engine over them.
pub fn engine(sources: &Sources, cfg: &DetectionConfig) -> anyhow::Result<(RuleSet, Engine)> {
    let rules = load_rules(sources)?;
    let engine = Engine::new(&rules, cfg.engine_config())
        .map_err(|e| anyhow::anyhow!("the rules cannot run together: {e}"))?;
    Ok((rules, engine))
}

/// An alert for people: severity, rule, who, from where, when, what, the requests, and where the runbook is.
pub fn render(alert: &Alert) -> String {
    let mut s = format!(
        "{:<8} {}  {}{}\n",
        alert.severity.as_str().to_uppercase(),
        alert.rule.id,
        alert.rule.title,
        if alert.attack.is_empty() {
            String::new()
        } else {
            format!("  [{}]", alert.attack.join(", "))
        }
    );
    let when = if alert.count > 1 {
        format!(
            "{} .. {} ({} requests)",
            alert.time, alert.last_time, alert.count
        )
    } else {
        alert.time.clone()
    };
    s.push_str(&format!(
        "         {when}  {} from {}\n",
        alert.actor.username,
        if alert.source_ips.is_empty() {
            "-".to_string()
        } else {
            alert.source_ips.join(", ")
        }
    ));
    let a = &alert.actor;
    if !a.groups.is_empty() || a.impersonated_user.is_some() || alert.user_agent.is_some() {
        let mut who = Vec::new();
        if !a.groups.is_empty() {
            who.push(format!("groups {}", a.groups.join(",")));
        }
        if let Some(i) = &a.impersonated_user {
            who.push(format!("impersonating {i}"));
        }
        if let Some(ua) = &alert.user_agent {
            who.push(format!("with {ua}"));
        }
        s.push_str(&format!("         {}\n", who.join("; ")));
    }
    s.push_str(&format!("         {}\n", alert.summary));
    let shown: Vec<&str> = alert.audit_ids.iter().take(5).map(String::as_str).collect();
    s.push_str(&format!(
        "         auditIDs: {}{}\n",
        shown.join(", "),
        if alert.audit_ids.len() > shown.len() {
            format!(" (+{} more)", alert.audit_ids.len() - shown.len())
        } else {
            String::new()
        }
    ));
    s.push_str(&format!(
        "         runbook: kubetrail rules show {}\n",
        alert.rule.id
    ));
    s
}

/// The triage context for people: the actor's last hour, first-seen facts, other alerts, the policy's gap.
pub fn render_context(ctx: &kubetrail_detect::triage::Triage) -> String {
    let mut s = String::from("\ncontext:\n");
    for l in context_lines(ctx) {
        s += &format!("  {l}\n");
    }
    s
}

/// The triage context as short lines (the CLI, Slack and Alertmanager show these).
pub fn context_lines(ctx: &kubetrail_detect::triage::Triage) -> Vec<String> {
    let mut out = Vec::new();
    let a = &ctx.activity;
    let top: Vec<String> = a
        .top
        .iter()
        .take(5)
        .map(|l| {
            if l.failures > 0 {
                format!(
                    "{} {} {} ({} failed)",
                    l.requests, l.verb, l.resource, l.failures
                )
            } else {
                format!("{} {} {}", l.requests, l.verb, l.resource)
            }
        })
        .collect();
    out.push(format!(
        "last hour (since {}): {} requests, {} failed{}{}",
        a.since,
        a.requests,
        a.failures,
        if top.is_empty() { "" } else { ": " },
        top.join(", ")
    ));
    let f = &ctx.first_seen;
    let fact = |what: &str, s: &kubetrail_detect::triage::Seen| {
        if s.is_new {
            format!("{what} {} is NEW (not seen in the 30 days before)", s.value)
        } else {
            format!(
                "{what} {} seen before (since {})",
                s.value,
                s.first_seen.as_deref().unwrap_or("?")
            )
        }
    };
    let mut facts = Vec::new();
    facts.extend(f.identity.as_ref().map(|s| fact("identity", s)));
    facts.extend(f.source_ips.iter().map(|s| fact("source IP", s)));
    facts.extend(f.user_agent.as_ref().map(|s| fact("user agent", s)));
    if !facts.is_empty() {
        out.push(format!(
            "first seen (kubetrail has watched since {}): {}",
            f.since,
            facts.join("; ")
        ));
    }
    if !ctx.other_alerts.is_empty() {
        let others: Vec<String> = ctx
            .other_alerts
            .iter()
            .take(5)
            .map(|o| format!("{} {} ({})", o.id, o.rule, o.severity))
            .collect();
        out.push(format!(
            "other unresolved alerts of this actor: {}",
            others.join(", ")
        ));
    }
    if let Some(p) = &ctx.policy {
        out.push(format!("policy: {p}"));
    }
    out
}
