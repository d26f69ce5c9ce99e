//! Delivery of alerts (`kubetrail serve --alert-webhook URL`, `alerts.destinations`): every destination is a
//! worker of the delivery engine ([`crate::delivery`]) over `DATA/alerts/alerts.jsonl`, which live detection
//! appends to and fsyncs before anything is sent.
//!
//! Each destination reads the alerts log through its own cursor (`DATA/alerts/outbox/<name>.cursor`, the byte
//! offset of the next line), so a slow or dead destination never holds back another, and a restart (even after
//! kill -9) resumes with the alert that was in flight: at least once. Every alert its [`Route`] wants is sent
//! immediately, one per request, over the shared HTTP client (`kubetrail_sinks::http`: the system's CAs plus
//! an optional CA file, credentials and headers, HTTPS_PROXY/NO_PROXY): the webhook gets the exact line of
//! `alerts.jsonl` (the shape of a `kubetrail detect --format json` line) with `X-Kubetrail-Signature:
//! sha256=<hex>`, the HMAC-SHA256 of the body under the key in `DATA/alerts/webhook.key` (created on first
//! start, mode 0600), and `X-Kubetrail-Alert-Id`; Alertmanager, PagerDuty and Slack get [`payload`]'s bodies.
//!
//! Answers are classified as for the sinks (`kubetrail_sinks::http::classify`): 2xx is delivered; 401, 403,
//! 407, 408, 425, 429, 5xx and connection failures are retried without limit (credentials are configuration:
//! the alert waits until they are fixed), honouring Retry-After; anything else is final and the alert goes to
//! `DATA/alerts/outbox/<name>.dlq.jsonl` with the status and the start of the answer. `kubetrail alerts dlq
//! replay` puts dead letters in the destination's replay queue, delivered before new alerts.
//!
//! [`payload`]: crate::alerting::payload

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use kubetrail_detect::{Alert, Level};
use kubetrail_sinks::Outcome;
use kubetrail_sinks::Secret;
use kubetrail_sinks::http::{Auth, Class, HttpClient, HttpConfig, Request, redact_url};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::alerting::payload;
use crate::delivery::{self, Files, LinesQueue, Worker};

/// Upper bounds (seconds) of the delivery-latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The series of alert delivery.
const NAMES: delivery::Names = delivery::Names {
    delivered: ("alerts_delivered", "Alerts a destination accepted."),
    retried: (
        "alert_delivery_retries",
        "Failed delivery attempts that will be retried.",
    ),
    failed: (
        "alert_delivery_failures",
        "Delivery attempts that failed (retried or not).",
    ),
    dead_lettered: (
        "alerts_dead_lettered",
        "Alerts a destination refused for good.",
    ),
};

/// The governance alert a destination's refusal of another raises.
const UNDELIVERED: &str = "kt-governance-undelivered";

/// The delivery threads.
pub type Started = Vec<std::thread::JoinHandle<()>>;

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
    PagerDuty { routing_key: Secret },
    /// Slack incoming webhook: Block Kit with what, who, where, when, the requests and the runbook command.
    Slack,
}

/// Where alerts go.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub kind: Kind,
    /// Which alerts.
    pub route: Route,
    /// How to reach it: an extra CA file, credentials, headers, the proxy.
    pub http: HttpConfig,
}

/// Without the URL's path and query, which may be its secret (Slack's).
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &redact_url(&self.url))
            .field("kind", &self.kind)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The URL without what may be a credential, for logs and messages.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The client for the URL's scheme, host and port, and the path (and query) each alert is posted to;
    /// an error names what is wrong with the URL.
    pub fn endpoint(&self) -> anyhow::Result<(HttpClient, String)> {
        let url = match self.kind {
            Kind::Alertmanager => format!("{}/api/v2/alerts", self.url.trim_end_matches('/')),
            _ => self.url.clone(),
        };
        let shown = redact_url(&url);
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("`{shown}` is not a URL"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            bail!(
                "`{shown}`: an alert destination URL starts with https:// or http:// and names a host"
            );
        };
        if authority.as_str().contains('@') {
            bail!(
                "`{shown}`: put credentials in the destination's token_file or user/password_file, not in the URL"
            );
        }
        let client = HttpClient::new(&format!("{scheme}://{authority}"), &self.http)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok((client, path))
    }
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

    /// Whether the destination gets `a`. Governance alerts (a suppression made or lifted, a critical alert
    /// resolved) go to every destination whatever its route.
    pub fn wants(&self, a: &Alert) -> bool {
        if a.suppressed.is_some() {
            return false;
        }
        if crate::alerting::store::is_governance(&a.rule.id) {
            return true;
        }
        if a.severity < self.min_severity {
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
            return self.namespaces.iter().any(|p| crate::text::glob(p, ns));
        }
        true
    }
}

/// The config file's `alerts:` section.
///
/// ```yaml
/// alerts:
///   console_url: https://kubetrail.example.com
///   destinations:
///     - type: webhook              # the alert line, HMAC-signed
///       url: https://soar.example/hooks/kubetrail
///       token_file: /etc/kubetrail/soar.token       # Authorization: Bearer (or user + password_file)
///       ca_file: /etc/kubetrail/soar-ca.pem         # a private CA, beside the system's
///       header_files: {X-Api-Key: /etc/kubetrail/soar.key}
///     - type: alertmanager
///       url: http://alertmanager:9093
///       min_severity: high
///     - type: pagerduty
///       routing_key_file: /etc/kubetrail/pagerduty.key
///       rules: [T1609, kt-secret-bulk-read]
///     - type: slack
///       url_file: /etc/kubetrail/slack.url          # the webhook's path is its secret
///       namespaces: ["prod-*"]
/// ```
///
/// Entries written before `type:` (`webhook: URL`, `alertmanager: URL`, `slack: URL`,
/// `pagerduty_routing_key_file: FILE` with `pagerduty_url`) still work; `config check` says how to
/// rewrite them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// The web console's address as analysts reach it (`https://kubetrail.example.com`): alerts link to
    /// `<console_url>/alerts/<id>`.
    pub console_url: Option<String>,
    /// The longest suppression the API accepts, in days (default 30).
    pub max_suppression_days: Option<u32>,
}

/// What a destination speaks, in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationType {
    Webhook,
    Alertmanager,
    Pagerduty,
    Slack,
}

/// One destination and its route.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    #[serde(rename = "type")]
    pub kind: Option<DestinationType>,
    /// Where to send (PagerDuty: its enqueue endpoint, default `https://events.pagerduty.com/v2/enqueue`).
    pub url: Option<String>,
    /// A file holding the URL, for URLs that are secrets (Slack's).
    pub url_file: Option<PathBuf>,
    /// PagerDuty: a file holding the integration's routing key.
    pub routing_key_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted beside the system's.
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token (`Authorization: Bearer`).
    pub token_file: Option<PathBuf>,
    /// Basic authentication: the user, with `password_file`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Headers whose values are read from files (`X-Api-Key: /etc/kubetrail/key`).
    #[serde(default)]
    pub header_files: std::collections::BTreeMap<String, PathBuf>,
    /// Only alerts of this severity or above (default medium).
    pub min_severity: Option<Level>,
    /// Only these rule ids or ATT&CK techniques (default: all).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only rules with one of these Sigma tags (`attack.privilege-escalation`, `kubetrail.production`;
    /// default: all).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only alerts about these namespaces (`*` wildcards; default: all).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only alerts from these clusters (default: all).
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Deprecated: `type: webhook` with `url`.
    pub webhook: Option<String>,
    /// Deprecated: `type: alertmanager` with `url`.
    pub alertmanager: Option<String>,
    /// Deprecated: `type: pagerduty` with `routing_key_file`.
    pub pagerduty_routing_key_file: Option<PathBuf>,
    /// Deprecated: `type: pagerduty` with `url`.
    pub pagerduty_url: Option<String>,
    /// Deprecated: `type: slack` with `url` or `url_file`.
    pub slack: Option<String>,
}

/// Without URLs (they may be secrets); files are named, never read.
impl std::fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = [
            &self.url,
            &self.webhook,
            &self.alertmanager,
            &self.slack,
            &self.pagerduty_url,
        ]
        .into_iter()
        .find_map(|u| u.as_deref().map(redact_url));
        f.debug_struct("DestinationConfig")
            .field("kind", &self.kind)
            .field("url", &url)
            .field("url_file", &self.url_file)
            .field("min_severity", &self.min_severity)
            .finish_non_exhaustive()
    }
}

/// The trimmed, non-empty content of a secret file; errors name the key and the file, never the content.
fn secret_file(what: &str, p: &Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(p)
        .with_context(|| format!("{what} `{}` cannot be read", p.display()))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        bail!("{what} `{}` is empty", p.display());
    }
    Ok(s)
}

const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

impl DestinationConfig {
    /// The keys of the old form in use and what to write instead (`None` when there are none).
    pub fn deprecated(&self) -> Option<(String, &'static str)> {
        let old: Vec<&str> = [
            (self.webhook.is_some(), "webhook"),
            (self.alertmanager.is_some(), "alertmanager"),
            (
                self.pagerduty_routing_key_file.is_some(),
                "pagerduty_routing_key_file",
            ),
            (self.pagerduty_url.is_some(), "pagerduty_url"),
            (self.slack.is_some(), "slack"),
        ]
        .into_iter()
        .filter_map(|(used, key)| used.then_some(key))
        .collect();
        let new = if self.slack.is_some() {
            "type: slack, url_file: FILE (the webhook's path is its secret) or url: URL"
        } else if self.webhook.is_some() {
            "type: webhook, url: URL"
        } else if self.alertmanager.is_some() {
            "type: alertmanager, url: URL"
        } else {
            "type: pagerduty, routing_key_file: FILE (and url: URL)"
        };
        (!old.is_empty()).then(|| (old.join(", "), new))
    }

    /// The destination as the outbox takes it, its files read; an error names what is wrong with it.
    pub fn webhook(&self) -> anyhow::Result<Webhook> {
        let (url, kind) = match self.kind {
            Some(t) => self.typed(t)?,
            None => self.legacy()?,
        };
        let mut http = HttpConfig {
            extra_ca: self.ca_file.clone(),
            ..HttpConfig::default()
        };
        http.auth = match (&self.token_file, &self.user, &self.password_file) {
            (Some(t), None, None) => Auth::Bearer(secret_file("token_file", t)?.into()),
            (None, Some(user), Some(p)) => Auth::Basic {
                user: user.clone(),
                password: secret_file("password_file", p)?.into(),
            },
            (None, None, None) => Auth::None,
            (Some(_), _, _) => bail!("give `token_file` or `user` with `password_file`, not both"),
            (None, Some(_), None) => bail!("`user` needs `password_file`"),
            (None, None, Some(_)) => bail!("`password_file` needs `user`"),
        };
        for (name, file) in &self.header_files {
            if [
                "authorization",
                "host",
                "content-length",
                "content-type",
                "x-kubetrail-signature",
            ]
            .contains(&name.to_ascii_lowercase().as_str())
            {
                bail!(
                    "header_files: `{name}` is set by kubetrail (credentials go in token_file or user/password_file)"
                );
            }
            http.headers.push((
                name.clone(),
                secret_file(&format!("header_files.{name}"), file)?.into(),
            ));
        }
        if let Some(ca) = &self.ca_file {
            File::open(ca).with_context(|| format!("ca_file `{}` cannot be read", ca.display()))?;
        }
        let w = Webhook {
            url,
            kind,
            route: Route {
                min_severity: self.min_severity.unwrap_or(Level::Medium),
                rules: self.rules.clone(),
                tags: self.tags.clone(),
                namespaces: self.namespaces.clone(),
                clusters: self.clusters.clone(),
            },
            http,
        };
        w.endpoint()?;
        Ok(w)
    }

    fn typed(&self, t: DestinationType) -> anyhow::Result<(String, Kind)> {
        if let Some((key, _)) = self.deprecated() {
            bail!(
                "`{key}` is the form without `type:`; with `type:` write `url:` (and `routing_key_file:`)"
            );
        }
        if self.routing_key_file.is_some() && t != DestinationType::Pagerduty {
            bail!("`routing_key_file` is for `type: pagerduty`");
        }
        let url = match (&self.url, &self.url_file) {
            (Some(u), None) => Some(u.clone()),
            (None, Some(f)) => Some(secret_file("url_file", f)?),
            (None, None) => None,
            (Some(_), Some(_)) => bail!("give `url` or `url_file`, not both"),
        };
        let kind = match t {
            DestinationType::Webhook => Kind::Webhook,
            DestinationType::Alertmanager => Kind::Alertmanager,
            DestinationType::Slack => Kind::Slack,
            DestinationType::Pagerduty => {
                let Some(file) = &self.routing_key_file else {
                    bail!("`type: pagerduty` needs `routing_key_file`");
                };
                let key = secret_file("routing_key_file", file)?;
                return Ok((
                    url.unwrap_or_else(|| PAGERDUTY_URL.into()),
                    Kind::PagerDuty {
                        routing_key: key.into(),
                    },
                ));
            }
        };
        let Some(url) = url else {
            bail!(
                "`type: {}` needs `url` or `url_file`",
                format!("{t:?}").to_lowercase()
            );
        };
        Ok((url, kind))
    }

    fn legacy(&self) -> anyhow::Result<(String, Kind)> {
        if self.url.is_some() || self.url_file.is_some() || self.routing_key_file.is_some() {
            bail!(
                "`url`, `url_file` and `routing_key_file` go with `type:` (webhook, alertmanager, pagerduty or slack)"
            );
        }
        let pagerduty = match &self.pagerduty_routing_key_file {
            Some(file) => Some((
                self.pagerduty_url
                    .clone()
                    .unwrap_or_else(|| PAGERDUTY_URL.into()),
                Kind::PagerDuty {
                    routing_key: secret_file("pagerduty_routing_key_file", file)?.into(),
                },
            )),
            None => None,
        };
        let mut kinds: Vec<(String, Kind)> = Vec::new();
        kinds.extend(self.webhook.clone().map(|u| (u, Kind::Webhook)));
        kinds.extend(self.alertmanager.clone().map(|u| (u, Kind::Alertmanager)));
        kinds.extend(self.slack.clone().map(|u| (u, Kind::Slack)));
        kinds.extend(pagerduty);
        if kinds.len() != 1 {
            bail!(
                "each destination is exactly one of `webhook`, `alertmanager`, `pagerduty_routing_key_file` or \
                 `slack` (this one has {}); better, write `type:` (webhook, alertmanager, pagerduty or slack) \
                 with `url`",
                kinds.len()
            );
        }
        Ok(kinds.pop().expect("one"))
    }
}

/// The signing key of `DATA/alerts/webhook.key`, created (32 random bytes, hex, mode 0600) if missing.
pub fn signing_key(alerts_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = alerts_dir.join("webhook.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| anyhow::anyhow!("failed to get random bytes for the signing key: {e}"))?;
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
    let mut out = Vec::new();
    for (name, line) in delivery::dead_letters(&outbox_dir(data))? {
        if let Ok(mut d) = serde_json::from_str::<DeadLetter>(&line) {
            d.destination = name;
            out.push(d);
        }
    }
    Ok(out)
}

/// Puts the dead letters of `destination` (every destination when `None`) back in their destinations'
/// replay queues, delivered before new alerts; the dead-letter files are kept, renamed `.replayed-<time>`.
/// Returns how many were queued.
pub fn replay(data: &Path, destination: Option<&str>) -> anyhow::Result<usize> {
    delivery::replay(&outbox_dir(data), destination)
}

fn outbox_dir(data: &Path) -> PathBuf {
    data.join("alerts").join("outbox")
}

/// One line of `alerts.jsonl` (or of a replay queue) waiting to be sent.
struct Item {
    /// The line as written, without its newline.
    line: Bytes,
    /// The alert, or why the line is none.
    alert: Result<Alert, String>,
}

impl Item {
    fn parse(line: Bytes) -> Item {
        let alert =
            serde_json::from_slice::<Alert>(&line).map_err(|e| format!("not an alert: {e}"));
        Item { line, alert }
    }
}

/// The alerts log, one line at a time, through the destination's cursor; lines the route does not want are
/// passed over.
struct AlertsLog {
    queue: LinesQueue,
    route: Route,
}

impl delivery::Source for AlertsLog {
    type Item = Item;

    fn next(&mut self, _stop: &AtomicBool) -> anyhow::Result<Option<(Vec<Item>, u64)>> {
        let Some((mut lines, next)) = self.queue.read(1)? else {
            return Ok(None);
        };
        let item = Item::parse(Bytes::from(lines.pop().unwrap_or_default()));
        let wanted = match &item.alert {
            Ok(a) => self.route.wants(a),
            // Dead-lettered with the reason.
            Err(_) => true,
        };
        Ok(Some((if wanted { vec![item] } else { Vec::new() }, next)))
    }

    fn commit(&mut self, position: u64) -> anyhow::Result<()> {
        self.queue.commit(position)
    }
}

/// One destination: its client, what it speaks, its key and latency histogram.
struct Destination {
    /// The destination without its path and query (a Slack webhook's path is its secret): for logs and the
    /// dead-letter list.
    url: String,
    kind: Kind,
    client: HttpClient,
    path: String,
    key: Vec<u8>,
    latency: Histogram,
    /// The status of the last answer (0 for none), for the dead-letter line.
    status: AtomicU16,
    /// The data directory, where a governance alert refused for good raises `kt-governance-undelivered`.
    data: PathBuf,
}

impl delivery::Destination for Destination {
    type Item = Item;

    async fn send(&self, items: &[&Item]) -> Outcome {
        // The log source and the replay queue hand out one alert at a time.
        debug_assert!(items.len() <= 1, "one alert per attempt");
        let Some(item) = items.first() else {
            return Outcome::Delivered;
        };
        self.status.store(0, Ordering::Relaxed);
        let alert = match &item.alert {
            Ok(a) => a,
            Err(e) => return Outcome::Dead { reason: e.clone() },
        };
        let body = match &self.kind {
            Kind::Webhook => item.line.clone(),
            Kind::Alertmanager => Bytes::from(payload::alertmanager_body(alert)),
            Kind::PagerDuty { routing_key } => {
                Bytes::from(payload::pagerduty_body(alert, routing_key.expose()))
            }
            Kind::Slack => Bytes::from(payload::slack_body(alert)),
        };
        let mut req = Request::new(hyper::Method::POST, self.path.clone());
        // The status decides; a long answer (a receiver echoing the alert) is cut, never a failure.
        req.max_response = 64 << 10;
        req.truncate_response = true;
        let mut req = req.header("x-kubetrail-signature", &signature(&self.key, &body));
        if let Ok(v) = hyper::http::HeaderValue::from_str(&alert.id) {
            req.headers.insert("x-kubetrail-alert-id", v);
        }
        let answer = match self.client.send(req.body(body, "application/json")).await {
            Ok(a) => a,
            Err(e) => return Outcome::retry(e),
        };
        self.status.store(answer.status, Ordering::Relaxed);
        match kubetrail_sinks::http::classify(answer.status) {
            Class::Success => Outcome::Delivered,
            Class::Retry => Outcome::Retry {
                after: answer.retry_after(),
                reason: format!("HTTP {}", answer.status),
            },
            Class::Dead => Outcome::Dead {
                reason: format!("HTTP {}: {}", answer.status, answer.text(300)),
            },
        }
    }

    fn dead_letter(&self, item: &Item, reason: &str) -> serde_json::Value {
        let alert: serde_json::Value = serde_json::from_slice(&item.line)
            .unwrap_or_else(|_| String::from_utf8_lossy(&item.line).into());
        serde_json::json!({
            "time": jiff::Timestamp::now().to_string(),
            "url": self.url,
            "status": self.status.load(Ordering::Relaxed),
            "reason": reason,
            "alert": alert,
        })
    }

    /// A governance alert this destination refused for good is itself a governance alert, which every
    /// destination receives: whoever watches suppressions learns that one of their channels stopped taking
    /// them. (Not for `kt-governance-undelivered` itself: one refusal raises one alert, never a chain.)
    fn refused(&self, items: &[(&Item, String)]) {
        for (item, reason) in items {
            let Ok(alert) = &item.alert else { continue };
            let rule = alert.rule.id.as_str();
            if !crate::alerting::store::is_governance(rule) || rule == UNDELIVERED {
                continue;
            }
            let summary = format!(
                "{} refused the governance alert {rule} ({}) for good: {}. It is in the destination's \
                 dead letters; fix the destination, then `kubetrail alerts dlq replay`",
                self.url, alert.id, reason
            );
            if let Err(e) = crate::alerting::store::raise_governance(
                &self.data,
                UNDELIVERED,
                "Governance alert not delivered",
                "kubetrail",
                &summary,
                &["kubetrail alerts dlq list"],
            ) {
                tracing::error!(error = %format!("{e:#}"), "{summary}");
            }
        }
    }

    fn replayed(&self, line: &[u8]) -> Option<Item> {
        // A dead letter (its `alert`), or an alert line (replay queues of earlier versions).
        let alert = match serde_json::from_slice::<DeadLetter>(line) {
            Ok(d) => serde_json::to_vec(&d.alert).ok()?,
            Err(_) => line.to_vec(),
        };
        Some(Item::parse(Bytes::from(alert)))
    }

    fn delivered(&self, items: &[&Item]) {
        for item in items {
            let Ok(alert) = &item.alert else { continue };
            if let Some(detected) = alert
                .detected
                .as_deref()
                .and_then(|d| d.parse::<jiff::Timestamp>().ok())
            {
                let secs = jiff::Timestamp::now()
                    .duration_since(detected)
                    .as_secs_f64()
                    .max(0.0);
                self.latency.observe(secs);
            }
            tracing::info!(url = %self.url, alert = %alert.id, "alert delivered");
        }
    }
}

/// Alert delivery's series: the delivery engine's counters and the latency histogram, per destination.
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    delivery: delivery::Metrics,
    latency: Family<Vec<(String, String)>, Histogram>,
}

impl Default for OutboxMetrics {
    fn default() -> OutboxMetrics {
        OutboxMetrics {
            delivery: delivery::Metrics::new(NAMES),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        }
    }
}

impl OutboxMetrics {
    /// Registers the series (clones: they share their values) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.delivery.register(registry);
        registry.register(
            "alert_delivery_seconds",
            "From detection writing an alert to the destination accepting it.",
            self.latency.clone(),
        );
    }
}

/// Starts one delivery worker per destination, counted in `metrics`; they stop when `stop` is set (an alert
/// in flight is sent again after a restart).
pub fn start(
    data: &Path,
    webhooks: &[Webhook],
    metrics: &OutboxMetrics,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Started> {
    if webhooks.is_empty() {
        return Ok(Vec::new());
    }
    let alerts_dir = data.join("alerts");
    let outbox = outbox_dir(data);
    std::fs::create_dir_all(&outbox)
        .with_context(|| format!("failed to create `{}`", outbox.display()))?;
    let key = signing_key(&alerts_dir)?;
    let mut threads = Vec::new();
    for w in webhooks {
        let name = dest_name(&w.url);
        let (client, path) = w.endpoint()?;
        let labels = [("destination", name.as_str())];
        let worker = Worker {
            name: name.clone(),
            source: AlertsLog {
                queue: LinesQueue::new(
                    alerts_dir.join("alerts.jsonl"),
                    outbox.join(format!("{name}.cursor")),
                ),
                route: w.route.clone(),
            },
            destination: Destination {
                url: redact_url(&w.url),
                kind: w.kind.clone(),
                client,
                path,
                key: key.clone(),
                latency: metrics
                    .latency
                    .get_or_create(&vec![("destination".to_string(), name.clone())])
                    .clone(),
                status: AtomicU16::new(0),
                data: data.to_path_buf(),
            },
            files: Files::new(&outbox, &name),
            stats: metrics.delivery.stats(&labels),
            replay_batch: 1,
        };
        threads.push(worker.spawn(stop.clone())?);
    }
    Ok(threads)
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
            redact_url("https://hooks.slack.com/services/T0/B0/secretsecret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("https://user:pw@example.com:8443/x?token=1"),
            "https://example.com:8443/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:9093"), "http://127.0.0.1:9093");
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
        // Governance alerts go everywhere, whatever the route; never when suppressed.
        for rule in crate::alerting::store::GOVERNANCE_RULES {
            let mut g = alert.clone();
            g.rule.id = rule.into();
            assert!(
                route(Level::Critical, &["kt-other"], &["staging"]).wants(&g),
                "{rule}"
            );
            g.suppressed = Some("s-x".into());
            assert!(!route(Level::Low, &[], &[]).wants(&g), "{rule}");
        }
        assert!(
            crate::text::glob("*pay*", "prod-payments")
                && !crate::text::glob("pay*", "prod-payments")
        );
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
        let hook = |url: &str| Webhook {
            url: url.into(),
            kind: Kind::Webhook,
            route: Route::medium_and_above(),
            http: HttpConfig::default(),
        };
        assert!(hook("ftp://x").endpoint().is_err());
        assert!(hook("https://user:pw@example.com/x").endpoint().is_err());
        let (_, path) = hook("http://127.0.0.1:9/hook?token=1").endpoint().unwrap();
        assert_eq!(path, "/hook?token=1");
        let am = Webhook {
            kind: Kind::Alertmanager,
            ..hook("http://127.0.0.1:9093/")
        };
        assert_eq!(am.endpoint().unwrap().1, "/api/v2/alerts");
    }
}
