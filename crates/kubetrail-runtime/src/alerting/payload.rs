//! What each kind of alert destination is sent for one alert: the alert line itself (the webhook, signed by
//! the outbox), Prometheus Alertmanager's API v2 body, PagerDuty's Events API v2 body, Slack's Block Kit
//! message. Pure functions of the alert; the outbox sends them over the one HTTP client.

use kubetrail_detect::{Alert, Level};

/// How long Alertmanager keeps an alert firing after it was delivered.
const ALERTMANAGER_HOLD: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The PagerDuty Events API v2 body for one alert.
pub fn pagerduty_body(a: &Alert, routing_key: &str) -> Vec<u8> {
    let body = if a.resolved.is_some() {
        serde_json::json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": a.id,
        })
    } else {
        let severity = match a.severity {
            Level::Critical => "critical",
            Level::High => "error",
            Level::Medium => "warning",
            Level::Low | Level::Informational => "info",
        };
        let summary: String = format!("{}: {}", a.rule.title, a.summary)
            .chars()
            .take(1024)
            .collect();
        serde_json::json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": a.id,
            "payload": {
                "summary": summary,
                "source": a.source_ips.first().map_or("kubernetes", String::as_str),
                "severity": severity,
                "timestamp": a.time,
                "component": a.target.as_ref().and_then(|t| t.resource.clone()).unwrap_or_default(),
                "group": a.target.as_ref().and_then(|t| t.namespace.clone()).unwrap_or_default(),
                "class": a.rule.id,
                "custom_details": {
                    "rule": a.rule,
                    "attack": a.attack,
                    "actor": a.actor,
                    "target": a.target,
                    "user_agent": a.user_agent,
                    "source_ips": a.source_ips,
                    "audit_ids": a.audit_ids.iter().take(20).collect::<Vec<_>>(),
                    "count": a.count,
                    "cluster": a.cluster,
                    "context": a.context,
                    "first_step": first_step(a),
                    "runbook": a.runbook.clone().unwrap_or_else(|| format!("kubetrail rules show {}", a.rule.id)),
                    "investigate": investigate(a),
                },
            },
            "client": "kubetrail",
            "links": a.console.iter().map(|u| serde_json::json!({"href": u, "text": "kubetrail console"})).collect::<Vec<_>>(),
        })
    };
    serde_json::to_vec(&body).expect("JSON serialises")
}

/// The runbook's first step (its text up to the line that starts step 2), or the command that shows it.
pub fn first_step(a: &Alert) -> String {
    let Some(r) = a.runbook.as_deref() else {
        return format!("kubetrail rules show {}", a.rule.id);
    };
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let t = line.trim_start();
        let numbered = t
            .split_once('.')
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if i > 0 && numbered && line.len() == t.len() {
            break;
        }
        out.push(line);
    }
    out.join("\n").trim().to_string()
}

/// The triage context as lines, when the alert has it.
fn context_lines(a: &Alert) -> Vec<String> {
    a.context
        .as_ref()
        .map(crate::alerting::rules::context_lines)
        .unwrap_or_default()
}

fn investigate(a: &Alert) -> Vec<String> {
    if a.investigate.is_empty() {
        vec![format!(
            "kubetrail scope --user {} --since 7d",
            crate::text::shell_word(&a.actor.username)
        )]
    } else {
        a.investigate.clone()
    }
}

/// The Slack incoming-webhook body (Block Kit) for one alert.
pub fn slack_body(a: &Alert) -> Vec<u8> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let head = if a.resolved.is_some() {
        format!("Resolved: {}", a.rule.title)
    } else {
        format!("{}: {}", a.severity.as_str().to_uppercase(), a.rule.title)
    };
    let target = a.target.as_ref().map_or(String::new(), |t| {
        let mut s = t.verb.clone();
        if let Some(r) = &t.resource {
            s.push(' ');
            s.push_str(r);
        }
        if let Some(n) = &t.name {
            s.push(' ');
            s.push_str(n);
        }
        if let Some(ns) = &t.namespace {
            s.push_str(" in ");
            s.push_str(ns);
        }
        s
    });
    let fields = [
        ("Who", a.actor.username.clone()),
        ("From", a.source_ips.join(", ")),
        (
            "What",
            if target.is_empty() {
                a.summary.clone()
            } else {
                target
            },
        ),
        (
            "When",
            if a.count > 1 {
                format!("{} .. {} ({} requests)", a.time, a.last_time, a.count)
            } else {
                a.time.clone()
            },
        ),
    ];
    let mut body = serde_json::json!({
        "text": esc(&format!("{head}: {}", a.summary)),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head.chars().take(150).collect::<String>()}},
            {"type": "section", "fields": fields.iter().map(|(k, v)| serde_json::json!({
                "type": "mrkdwn", "text": format!("*{k}*\n{}", esc(v)),
            })).collect::<Vec<_>>()},
            {"type": "section", "text": {"type": "mrkdwn", "text": esc(&a.summary)}},
        ],
    });
    let blocks = body["blocks"].as_array_mut().expect("blocks");
    let context = context_lines(a);
    if !context.is_empty() && a.resolved.is_none() {
        let text: String = context
            .iter()
            .map(|l| format!("• {}", esc(l)))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*Context*\n{}", text).chars().take(3000).collect::<String>()}}),
        );
    }
    if a.resolved.is_none() {
        blocks.push(serde_json::json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*First step*\n```{}```", esc(&first_step(a))).chars().take(3000).collect::<String>()}}));
    }
    let mut links = format!(
        "Rule `{}`{} · alert `{}` · runbook: `kubetrail rules show {}` · investigate: `{}`",
        a.rule.id,
        if a.attack.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.attack.join(", "))
        },
        a.id,
        a.rule.id,
        esc(&investigate(a)[0]),
    );
    if let Some(url) = &a.console {
        links += &format!(" · <{}|open in the console>", esc(url));
    }
    blocks.push(
        serde_json::json!({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]}),
    );
    serde_json::to_vec(&body).expect("JSON serialises")
}

/// The Alertmanager v2 body for one alert.
pub fn alertmanager_body(a: &Alert) -> Vec<u8> {
    // Resolved by an analyst: it ends then; otherwise it stays firing for a day after delivery.
    let ends = match &a.resolved {
        Some(at) => at.clone(),
        None => jiff::Timestamp::now()
            .checked_add(ALERTMANAGER_HOLD)
            .unwrap_or(jiff::Timestamp::MAX)
            .to_string(),
    };
    let ids: Vec<&str> = a.audit_ids.iter().take(20).map(String::as_str).collect();
    let mut labels = serde_json::json!({
        "alertname": a.rule.id,
        "severity": a.severity.as_str(),
        "rule": a.rule.id,
        "actor": a.actor.username,
        "kubetrail_alert": a.id,
        "source": "kubetrail",
    });
    if let Some(ns) = a.target.as_ref().and_then(|t| t.namespace.as_ref()) {
        labels["namespace"] = ns.clone().into();
    }
    if let Some(c) = &a.cluster {
        labels["cluster"] = c.clone().into();
    }
    let mut body = serde_json::json!([{
        "labels": labels,
        "annotations": {
            "title": a.rule.title,
            "summary": a.summary,
            "count": a.count.to_string(),
            "audit_ids": ids.join(","),
            "source_ips": a.source_ips.join(","),
            "runbook": format!("kubetrail rules show {}", a.rule.id),
            "first_step": first_step(a),
            "context": context_lines(a).join("\n"),
            "attack": a.attack.join(","),
            "user_agent": a.user_agent.clone().unwrap_or_default(),
            "investigate": investigate(a).join("\n"),
        },
        "startsAt": a.time,
        "endsAt": ends,
    }]);
    if let Some(url) = &a.console {
        body[0]["generatorURL"] = url.clone().into();
    }
    serde_json::to_vec(&body).expect("JSON serialises")
}
