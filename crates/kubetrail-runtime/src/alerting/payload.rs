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

/// Slack's longest section and message text, field text and header (Block Kit's documented limits).
const SLACK_TEXT: usize = 3000;
const SLACK_FIELD: usize = 2000;
const SLACK_HEADER: usize = 150;

/// `s` cut to at most `max` characters, the last being `…` when cut.
fn cut(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
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
        (
            "Who",
            match &a.actor.principal {
                Some(p) => format!("{} ({p})", a.actor.username),
                None => a.actor.username.clone(),
            },
        ),
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
    // Every text within Slack's limits (a longer one is refused with 400 `invalid_blocks`, for good): names,
    // user agents and summaries come from the events, that is from whoever the alert is about.
    let mut body = serde_json::json!({
        "text": cut(esc(&format!("{head}: {}", a.summary)), SLACK_TEXT),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(head.clone(), SLACK_HEADER)}},
            {"type": "section", "fields": fields.iter().map(|(k, v)| serde_json::json!({
                "type": "mrkdwn", "text": cut(format!("*{k}*\n{}", esc(v)), SLACK_FIELD),
            })).collect::<Vec<_>>()},
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(esc(&a.summary), SLACK_TEXT)}},
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
            "text": cut(format!("*Context*\n{}", text), SLACK_TEXT)}}),
        );
    }
    if a.resolved.is_none() {
        blocks.push(
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn",
            "text": cut(format!("*First step*\n```{}```", esc(&first_step(a))), SLACK_TEXT)}}),
        );
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
        serde_json::json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(links, SLACK_TEXT)}]}),
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
            "principal": a.actor.principal.clone().unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert about someone whose name, user agent and object name are as long as they could make them:
    /// every Slack text stays within its limit, so Slack cannot refuse the alert for good.
    #[test]
    fn slack_texts_stay_within_slacks_limits_whatever_the_event_holds() {
        let long = "<&>".repeat(4000);
        let a: Alert = serde_json::from_value(serde_json::json!({
            "id": "a1", "rule": {"id": "kt-exec", "title": long}, "severity": "high",
            "auditIDs": ["x"], "time": "2026-11-25T10:00:00Z", "actor": {"username": long},
            "sourceIPs": [long], "summary": long, "count": 2, "lastTime": "2026-11-25T10:00:01Z",
            "userAgent": long,
            "target": {"verb": "create", "resource": "pods", "name": long, "namespace": long},
        }))
        .expect("alert");
        let body: serde_json::Value = serde_json::from_slice(&slack_body(&a)).unwrap();
        let chars = |v: &serde_json::Value| v.as_str().unwrap().chars().count();
        assert!(chars(&body["text"]) <= SLACK_TEXT);
        let mut texts = 0;
        for block in body["blocks"].as_array().unwrap() {
            let limit = if block["type"] == "header" {
                SLACK_HEADER
            } else {
                SLACK_TEXT
            };
            if let Some(t) = block.get("text") {
                assert!(chars(&t["text"]) <= limit, "{}", block["type"]);
                texts += 1;
            }
            for f in block["fields"].as_array().into_iter().flatten() {
                assert!(chars(&f["text"]) <= SLACK_FIELD);
                texts += 1;
            }
            for e in block["elements"].as_array().into_iter().flatten() {
                assert!(chars(&e["text"]) <= SLACK_TEXT);
                texts += 1;
            }
        }
        assert!(texts >= 8, "the message kept its parts");
        assert!(
            body["blocks"][2]["text"]["text"]
                .as_str()
                .unwrap()
                .ends_with('…')
        );
    }

    /// Who is behind the actor reaches the analyst where the alert lands: Slack's "Who", Alertmanager's
    /// annotations (PagerDuty's details and the webhook carry the whole actor).
    #[test]
    fn the_principal_behind_the_actor_travels_with_the_alert() {
        let a: Alert = serde_json::from_value(serde_json::json!({
            "id": "a1", "rule": {"id": "kt-secret-read-prod", "title": "Secret read"}, "severity": "high",
            "auditIDs": ["x"], "time": "2026-11-25T10:00:00Z", "sourceIPs": ["203.0.113.66"], "summary": "s",
            "count": 1, "lastTime": "2026-11-25T10:00:00Z",
            "actor": {"username": "kubernetes-admin",
                      "principal": "AWS role Admin (account 1), session dana@example.com"},
        }))
        .expect("alert");
        let slack = String::from_utf8(slack_body(&a)).unwrap();
        assert!(
            slack.contains(
                "kubernetes-admin (AWS role Admin (account 1), session dana@example.com)"
            ),
            "{slack}"
        );
        let am: serde_json::Value = serde_json::from_slice(&alertmanager_body(&a)).unwrap();
        assert_eq!(
            am[0]["annotations"]["principal"],
            "AWS role Admin (account 1), session dana@example.com"
        );
        let pd: serde_json::Value = serde_json::from_slice(&pagerduty_body(&a, "key")).unwrap();
        assert_eq!(
            pd["payload"]["custom_details"]["actor"]["principal"],
            "AWS role Admin (account 1), session dana@example.com"
        );
    }
}
