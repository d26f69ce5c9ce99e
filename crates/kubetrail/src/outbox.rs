//! Delivery of alerts to webhooks (`kubetrail serve --alert-webhook URL`): a durable outbox over
//! `DATA/alerts/alerts.jsonl`, which live detection appends to and fsyncs before anything is sent.
//!
//! Each destination has its own thread and its own cursor (`DATA/alerts/outbox/<name>.cursor`, the byte offset
//! of the next line to deliver, replaced atomically after each alert is delivered or dead-lettered), so a slow
//! or dead destination never holds back another, and a restart (even after kill -9) resumes with the alert
//! that was in flight: delivery is at least once. Every alert of the destination's severity or above is sent
//! immediately, one JSON object per POST, the exact line of `alerts.jsonl` (the shape of a `kubetrail detect
//! --format json` line), with `X-Kubetrail-Signature: sha256=<hex>`, the HMAC-SHA256 of the body under the
//! key in `DATA/alerts/webhook.key` (created on first start, mode 0600), and `X-Kubetrail-Alert-Id`.
//!
//! A 2xx is delivered. 408, 425, 429, 5xx and connection failures are retried with exponential backoff and
//! jitter (1 s doubling to 60 s), honouring `Retry-After` (up to 10 minutes), without limit: nothing is lost.
//! Any other answer is final: the alert goes to the dead-letter list `DATA/alerts/outbox/<name>.dlq.jsonl`
//! with the status and the start of the answer. `kubetrail alerts dlq replay` puts dead letters in the
//! destination's replay queue (`<name>.replay.jsonl`, its own cursor), delivered before new alerts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::http::HeaderValue;
use hyper_util::rt::TokioIo;
use kubetrail_detect::{Alert, Level};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// The longest a delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between attempts the outbox chooses itself, and the most it honours from Retry-After.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How often an idle destination looks for new alerts.
const IDLE: Duration = Duration::from_millis(100);

/// Upper bounds (seconds) of the delivery-latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// One destination's delivery counters and latency (from detection writing the alert to the destination's
/// 2xx), for `/metrics`.
#[derive(Debug, Default)]
pub struct DestinationStats {
    pub name: String,
    delivered: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then the count and the sum in microseconds.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl DestinationStats {
    fn observe(&self, secs: f64) {
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }
}

/// The delivery metrics of every destination in Prometheus text format.
pub fn render_metrics(stats: &[Arc<DestinationStats>]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if stats.is_empty() {
        return s;
    }
    let counter =
        |s: &mut String, name: &str, help: &str, get: &dyn Fn(&DestinationStats) -> u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for d in stats {
                let _ = writeln!(s, "{name}{{destination=\"{}\"}} {}", d.name, get(d));
            }
        };
    counter(
        &mut s,
        "kubetrail_alerts_delivered_total",
        "Alerts a destination accepted.",
        &|d| d.delivered.load(Ordering::Relaxed),
    );
    counter(
        &mut s,
        "kubetrail_alert_delivery_retries_total",
        "Failed delivery attempts that will be retried.",
        &|d| d.retries.load(Ordering::Relaxed),
    );
    counter(
        &mut s,
        "kubetrail_alerts_dead_lettered_total",
        "Alerts a destination refused for good.",
        &|d| d.dead_lettered.load(Ordering::Relaxed),
    );
    let name = "kubetrail_alert_delivery_seconds";
    let _ = writeln!(
        s,
        "# HELP {name} From detection writing an alert to the destination accepting it.\n# TYPE {name} histogram"
    );
    for d in stats {
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name}_bucket{{destination=\"{}\",le=\"{le}\"}} {}",
                d.name,
                d.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = d.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "{name}_bucket{{destination=\"{}\",le=\"+Inf\"}} {count}",
            d.name
        );
        let _ = writeln!(
            s,
            "{name}_sum{{destination=\"{}\"}} {}",
            d.name,
            d.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count{{destination=\"{}\"}} {count}", d.name);
    }
    s
}

/// The delivery threads, and their destinations' stats.
pub type Started = (Vec<std::thread::JoinHandle<()>>, Vec<Arc<DestinationStats>>);

/// What a destination speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The alert line itself, HMAC-signed.
    Webhook,
    /// Prometheus Alertmanager's API v2 (`POST {url}/api/v2/alerts`): labels alertname (the rule id),
    /// severity, rule, actor, namespace (when the request had one) and kubetrail_alert (the alert id); the title, summary, requests, source IPs
    /// and runbook command as annotations; `endsAt` 24 h after delivery, so Alertmanager keeps it firing, or
    /// the time an analyst resolved it.
    Alertmanager,
    /// PagerDuty Events API v2 (`url` is the enqueue endpoint, `https://events.pagerduty.com/v2/enqueue`):
    /// `trigger` with `dedup_key` = the alert id (so updates and repeats stay one incident), severity mapped
    /// to critical/error/warning/info, the context in `custom_details`; `resolve` when an analyst resolves it.
    PagerDuty { routing_key: String },
    /// Slack incoming webhook: Block Kit with what, who, where, when, the requests and the runbook command.
    Slack,
}

/// Where alerts go.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub kind: Kind,
    /// Which alerts.
    pub route: Route,
}

/// Which alerts a destination gets: of `min_severity` or above, and, when the lists are not empty, of one of
/// `rules` (ids, or ATT&CK techniques such as `T1609`) and about a namespace matching one of `namespaces`
/// (`*` wildcards; an alert with no namespace never matches a namespace route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub min_severity: Level,
    pub rules: Vec<String>,
    /// Only rules with one of these Sigma tags (empty: all).
    pub tags: Vec<String>,
    pub namespaces: Vec<String>,
    /// Only alerts from these clusters (exact names; empty: all).
    pub clusters: Vec<String>,
}

impl Route {
    /// Medium or above, every rule and namespace: what `--alert-webhook` and friends get.
    pub fn medium_and_above() -> Route {
        Route {
            min_severity: Level::Medium,
            rules: Vec::new(),
            tags: Vec::new(),
            namespaces: Vec::new(),
            clusters: Vec::new(),
        }
    }

    pub fn wants(&self, a: &Alert) -> bool {
        if a.severity < self.min_severity || a.suppressed.is_some() {
            return false;
        }
        if !self.tags.is_empty()
            && !self
                .tags
                .iter()
                .any(|t| a.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
        {
            return false;
        }
        if !self.rules.is_empty()
            && !self
                .rules
                .iter()
                .any(|r| *r == a.rule.id || a.attack.iter().any(|t| t.eq_ignore_ascii_case(r)))
        {
            return false;
        }
        if !self.clusters.is_empty()
            && !a
                .cluster
                .as_ref()
                .is_some_and(|c| self.clusters.contains(c))
        {
            return false;
        }
        if !self.namespaces.is_empty() {
            let Some(ns) = a.target.as_ref().and_then(|t| t.namespace.as_deref()) else {
                return false;
            };
            return self.namespaces.iter().any(|p| glob(p, ns));
        }
        true
    }
}

/// `*` matches any run of characters; everything else is literal.
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

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
        .map(crate::detection::context_lines)
        .unwrap_or_default()
}

fn investigate(a: &Alert) -> Vec<String> {
    if a.investigate.is_empty() {
        vec![format!(
            "kubetrail scope --user {} --since 7d",
            crate::cmd::alerts::shell_word(&a.actor.username)
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

/// A parsed destination URL.
struct Target {
    host: String,
    port: u16,
    authority: HeaderValue,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("`{url}`: an alert webhook URL starts with https:// or http://"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("`{url}` names no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .with_context(|| format!("`{host}` is not a valid TLS server name"))?;
            let tls = kubetrail_sinks::tls::client_config(None, &[b"http/1.1"])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some((TlsConnector::from(tls), name))
        } else {
            None
        };
        Ok(Target {
            host,
            port,
            authority: HeaderValue::from_str(authority.as_str())?,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            tls,
        })
    }
}

/// The signing key of `DATA/alerts/webhook.key`, created (32 random bytes, hex, mode 0600) if missing.
pub fn signing_key(alerts_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = alerts_dir.join("webhook.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .context("failed to read /dev/urandom")?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&path)
            .with_context(|| format!("failed to create `{}`", path.display()))?;
        f.write_all(format!("{hex}\n").as_bytes())?;
        f.sync_all()?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read `{}`", path.display()))?;
    Ok(text.trim().as_bytes().to_vec())
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    let out = mac.finalize().into_bytes();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// `scheme://host[:port]/…`: a URL without what may be a credential (Slack and some webhooks carry their
/// token in the path or query).
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            let more = rest.len() > host.len();
            format!("{scheme}://{host}{}", if more { "/…" } else { "" })
        }
        None => "(invalid URL)".into(),
    }
}

/// A file-system-safe name for a destination: its host and port and a short hash of the whole URL.
fn dest_name(url: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(url.as_bytes());
    let short: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
    let host: String = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("webhook-{host}-{short}")
}

fn read_cursor(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("`{}` is not an outbox cursor", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("failed to read `{}`", path.display())),
    }
}

/// Replaces a cursor atomically (written aside, synced, renamed over).
fn write_cursor(path: &Path, position: u64) -> anyhow::Result<()> {
    let tmp = path.with_extension("cursor.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{position}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(())
}

/// One dead letter, as `kubetrail alerts dlq list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The destination's outbox name.
    #[serde(default)]
    pub destination: String,
    pub time: String,
    pub url: String,
    pub status: u16,
    pub reason: String,
    pub alert: serde_json::Value,
}

/// Every dead letter waiting in `DATA/alerts/outbox`, by destination then time.
pub fn dead_letters(data: &Path) -> anyhow::Result<Vec<DeadLetter>> {
    let outbox = data.join("alerts").join("outbox");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&outbox) {
        Ok(d) => d
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".dlq.jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to list `{}`", outbox.display())),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_end_matches(".dlq.jsonl")
            .to_string();
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("failed to read `{}`", f.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(mut d) = serde_json::from_str::<DeadLetter>(line) {
                d.destination = name.clone();
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// Puts the dead letters of `destination` (every destination when `None`) back in their destinations'
/// replay queues, delivered before new alerts; the dead-letter files are kept, renamed `.replayed-<time>`.
/// Returns how many were queued.
pub fn replay(data: &Path, destination: Option<&str>) -> anyhow::Result<usize> {
    let outbox = data.join("alerts").join("outbox");
    let mut n = 0;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut by_dest: std::collections::BTreeMap<String, Vec<DeadLetter>> = Default::default();
    for d in dead_letters(data)? {
        if destination.is_none_or(|want| want == d.destination) {
            by_dest.entry(d.destination.clone()).or_default().push(d);
        }
    }
    for (dest, letters) in by_dest {
        let queue = outbox.join(format!("{dest}.replay.jsonl"));
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&queue)
            .with_context(|| format!("failed to open `{}`", queue.display()))?;
        let mut buf = String::new();
        for d in &letters {
            buf.push_str(&serde_json::to_string(&d.alert)?);
            buf.push('\n');
        }
        f.write_all(buf.as_bytes())?;
        f.sync_data()?;
        let dlq = outbox.join(format!("{dest}.dlq.jsonl"));
        std::fs::rename(
            &dlq,
            outbox.join(format!("{dest}.dlq.replayed-{stamp}.jsonl")),
        )
        .with_context(|| format!("failed to set `{}` aside", dlq.display()))?;
        n += letters.len();
    }
    Ok(n)
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Final {
        status: u16,
        why: String,
    },
}

/// One destination's delivery loop.
struct Delivery {
    /// The destination without its path and query (a Slack webhook's path is its secret): for logs and the
    /// dead-letter list.
    url: String,
    kind: Kind,
    target: Target,
    route: Route,
    key: Vec<u8>,
    alerts: PathBuf,
    cursor: PathBuf,
    dlq: PathBuf,
    /// Dead letters put back by `kubetrail alerts dlq replay`, delivered before new alerts.
    replay: PathBuf,
    replay_cursor: PathBuf,
    stats: Arc<DestinationStats>,
}

/// Starts one delivery thread per webhook; they stop when `stop` is set (an alert in flight is sent again
/// after a restart).
pub fn start(data: &Path, webhooks: &[Webhook], stop: Arc<AtomicBool>) -> anyhow::Result<Started> {
    if webhooks.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut stats = Vec::new();
    let alerts_dir = data.join("alerts");
    let outbox = alerts_dir.join("outbox");
    std::fs::create_dir_all(&outbox)
        .with_context(|| format!("failed to create `{}`", outbox.display()))?;
    let key = signing_key(&alerts_dir)?;
    let mut threads = Vec::new();
    for w in webhooks {
        let name = dest_name(&w.url);
        let url = match w.kind {
            Kind::Alertmanager => format!("{}/api/v2/alerts", w.url.trim_end_matches('/')),
            _ => w.url.clone(),
        };
        let d = Delivery {
            target: Target::parse(&url)?,
            url: redacted(&url),
            kind: w.kind.clone(),
            route: w.route.clone(),
            key: key.clone(),
            alerts: alerts_dir.join("alerts.jsonl"),
            cursor: outbox.join(format!("{name}.cursor")),
            dlq: outbox.join(format!("{name}.dlq.jsonl")),
            replay: outbox.join(format!("{name}.replay.jsonl")),
            replay_cursor: outbox.join(format!("{name}.replay.cursor")),
            stats: Arc::new(DestinationStats {
                name: name.clone(),
                ..DestinationStats::default()
            }),
        };
        stats.push(d.stats.clone());
        let stop = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name(name)
                .spawn(move || d.run(&stop))?,
        );
    }
    Ok((threads, stats))
}

impl Delivery {
    fn run(self, stop: &AtomicBool) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(url = %self.url, error = %e, "alert delivery cannot start");
                return;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            match self.next(stop, &rt) {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(IDLE),
                Err(e) => {
                    tracing::error!(url = %self.url, error = %format!("{e:#}"), "alert delivery failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// The next queue with a complete line waiting: the replayed dead letters first, then the alerts log.
    fn pending(&self) -> anyhow::Result<Option<(&Path, u64, Vec<u8>)>> {
        for (file, cursor) in [
            (&self.replay, &self.replay_cursor),
            (&self.alerts, &self.cursor),
        ] {
            let position = read_cursor(cursor)?;
            let mut f = match File::open(file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to open `{}`", file.display()));
                }
            };
            f.seek(SeekFrom::Start(position))?;
            let mut line = Vec::new();
            BufReader::new(f).read_until(b'\n', &mut line)?;
            // Nothing, or a line still being written.
            if line.ends_with(b"\n") {
                return Ok(Some((cursor, position, line)));
            }
        }
        Ok(None)
    }

    /// Handles the next alert, if a complete line waits: sends it (retrying until delivered, dead-lettered
    /// or stopped), then moves its queue's cursor past it. Whether there was one.
    fn next(&self, stop: &AtomicBool, rt: &tokio::runtime::Runtime) -> anyhow::Result<bool> {
        let Some((cursor, position, line)) = self.pending()? else {
            return Ok(false);
        };
        let commit = |next: u64| write_cursor(cursor, next);
        let next = position + line.len() as u64;
        let body = Bytes::from(line[..line.len() - 1].to_vec());
        let alert: Alert = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => {
                self.dead_letter(&body, 0, &format!("not an alert: {e}"))?;
                commit(next)?;
                return Ok(true);
            }
        };
        if !self.route.wants(&alert) {
            commit(next)?;
            return Ok(true);
        }
        let body = match &self.kind {
            Kind::Webhook => body,
            Kind::Alertmanager => Bytes::from(alertmanager_body(&alert)),
            Kind::PagerDuty { routing_key } => Bytes::from(pagerduty_body(&alert, routing_key)),
            Kind::Slack => Bytes::from(slack_body(&alert)),
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let started = std::time::Instant::now();
            let attempt = rt.block_on(async {
                tokio::time::timeout(ATTEMPT_TIMEOUT, self.send(&alert.id, body.clone()))
                    .await
                    .unwrap_or_else(|_| Attempt::Retry {
                        after: None,
                        why: "timed out".into(),
                    })
            });
            match attempt {
                Attempt::Delivered => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(detected) = alert
                        .detected
                        .as_deref()
                        .and_then(|d| d.parse::<jiff::Timestamp>().ok())
                    {
                        let secs = jiff::Timestamp::now()
                            .duration_since(detected)
                            .as_secs_f64()
                            .max(0.0);
                        self.stats.observe(secs);
                    }
                    tracing::info!(
                        url = %self.url,
                        alert = %alert.id,
                        ms = started.elapsed().as_millis() as u64,
                        "alert delivered"
                    );
                    break;
                }
                Attempt::Final { status, why } => {
                    tracing::error!(url = %self.url, alert = %alert.id, status, "alert refused: {why}; dead-lettered");
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    self.dead_letter(&body, status, &why)?;
                    break;
                }
                Attempt::Retry { after, why } => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = match after {
                        Some(a) => a.min(MAX_RETRY_AFTER),
                        None => jitter(backoff),
                    };
                    tracing::warn!(url = %self.url, alert = %alert.id, wait_ms = wait.as_millis() as u64, "alert not delivered ({why}); retrying");
                    sleep_unless_stopped(wait, stop);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        commit(next)?;
        Ok(true)
    }

    async fn send(&self, alert_id: &str, body: Bytes) -> Attempt {
        let retry = |why: String| Attempt::Retry { after: None, why };
        let tcp = match TcpStream::connect((self.target.host.as_str(), self.target.port)).await {
            Ok(t) => t,
            Err(e) => return retry(format!("cannot connect: {e}")),
        };
        let mut req = hyper::Request::post(self.target.path.as_str())
            .body(Full::new(body.clone()))
            .expect("a valid request");
        let h = req.headers_mut();
        h.insert(HOST, self.target.authority.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, HeaderValue::from_static("kubetrail"));
        if let Ok(v) = HeaderValue::from_str(&signature(&self.key, &body)) {
            h.insert("x-kubetrail-signature", v);
        }
        if let Ok(v) = HeaderValue::from_str(alert_id) {
            h.insert("x-kubetrail-alert-id", v);
        }
        let response = match &self.target.tls {
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(stream) => exchange(TokioIo::new(stream), req).await,
                Err(e) => return retry(format!("TLS handshake failed: {e}")),
            },
            None => exchange(TokioIo::new(tcp), req).await,
        };
        let (status, retry_after, text) = match response {
            Ok(r) => r,
            Err(e) => return retry(e),
        };
        match status {
            200..=299 => Attempt::Delivered,
            408 | 425 | 429 | 500..=599 => Attempt::Retry {
                after: retry_after,
                why: format!("HTTP {status}"),
            },
            _ => Attempt::Final {
                status,
                why: format!("HTTP {status}: {text}"),
            },
        }
    }

    fn dead_letter(&self, body: &[u8], status: u16, why: &str) -> anyhow::Result<()> {
        let alert: serde_json::Value =
            serde_json::from_slice(body).unwrap_or_else(|_| String::from_utf8_lossy(body).into());
        let entry = serde_json::json!({
            "time": jiff::Timestamp::now().to_string(),
            "url": self.url,
            "status": status,
            "reason": why,
            "alert": alert,
        });
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dlq)
            .with_context(|| format!("failed to open `{}`", self.dlq.display()))?;
        f.write_all(format!("{entry}\n").as_bytes())?;
        f.sync_data()?;
        Ok(())
    }
}

/// One request on a fresh connection: the status, Retry-After, and the first 300 characters of the body.
async fn exchange<S>(
    io: TokioIo<S>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Option<Duration>, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move { conn.await.ok() });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = http_body_util::Limited::new(resp.into_body(), 64 << 10)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
    Ok((status, retry_after, text))
}

/// `d` give or take 20% (the alert outbox and the sinks back off with it).
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let factor = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    d.mul_f64(factor)
}

/// Sleeps `d`, waking early when `stop` is set.
pub(crate) fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(end - std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn destination_names_are_safe_and_distinct() {
        let a = dest_name("https://hooks.example.com/services/T0/B0/x");
        let b = dest_name("https://hooks.example.com/services/T0/B0/y");
        assert!(a.starts_with("webhook-hooks_example_com-"), "{a}");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        );
    }

    #[test]
    fn logged_urls_carry_no_credentials() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/secretsecret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted("https://user:pw@example.com:8443/x?token=1"),
            "https://example.com:8443/…"
        );
        assert_eq!(redacted("http://127.0.0.1:9093"), "http://127.0.0.1:9093");
    }

    #[test]
    fn routes_choose_by_severity_rule_technique_and_namespace() {
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "id": "a", "rule": {"id": "kt-exec-prod-system", "title": "t"}, "severity": "high",
            "auditIDs": [], "time": "2026-01-01T00:00:00Z", "actor": {"username": "u"}, "sourceIPs": [],
            "summary": "s", "count": 1, "lastTime": "2026-01-01T00:00:00Z", "attack": ["T1609"],
            "target": {"verb": "create", "namespace": "prod-payments"},
        }))
        .unwrap();
        let route = |min, rules: &[&str], ns: &[&str]| Route {
            min_severity: min,
            rules: rules.iter().map(|s| s.to_string()).collect(),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            ..Route::medium_and_above()
        };
        assert!(Route::medium_and_above().wants(&alert));
        assert!(!route(Level::Critical, &[], &[]).wants(&alert));
        assert!(route(Level::Low, &["kt-exec-prod-system"], &[]).wants(&alert));
        assert!(route(Level::Low, &["t1609"], &[]).wants(&alert));
        assert!(!route(Level::Low, &["kt-other"], &[]).wants(&alert));
        assert!(route(Level::Low, &[], &["prod-*"]).wants(&alert));
        assert!(!route(Level::Low, &[], &["staging", "*-prod"]).wants(&alert));
        assert!(glob("*pay*", "prod-payments") && !glob("pay*", "prod-payments"));
        let by_cluster = |c: &[&str]| Route {
            clusters: c.iter().map(|s| s.to_string()).collect(),
            ..Route::medium_and_above()
        };
        assert!(
            !by_cluster(&["prod-eu"]).wants(&alert),
            "an alert of no known cluster"
        );
        let mut eu = alert.clone();
        eu.cluster = Some("prod-eu".into());
        assert!(by_cluster(&["prod-eu"]).wants(&eu));
        assert!(!by_cluster(&["prod-us"]).wants(&eu));
        let by_tag = |t: &[&str]| Route {
            tags: t.iter().map(|s| s.to_string()).collect(),
            ..Route::medium_and_above()
        };
        let mut tagged = alert.clone();
        tagged.tags = vec!["attack.execution".into(), "attack.t1609".into()];
        assert!(by_tag(&["attack.Execution"]).wants(&tagged));
        assert!(!by_tag(&["attack.persistence"]).wants(&tagged));
        assert!(
            !by_tag(&["attack.execution"]).wants(&alert),
            "an untagged alert"
        );
        let mut silenced = alert.clone();
        silenced.suppressed = Some("s-1".into());
        assert!(
            !Route::medium_and_above().wants(&silenced),
            "suppressed alerts are not delivered"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://127.0.0.1:9/hook").is_ok());
    }
}
