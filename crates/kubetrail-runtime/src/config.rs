//! `kubetrail serve`'s configuration file: strict YAML (an unknown key is an error naming it), validated before
//! anything starts (`kubetrail config check FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The default listen address: loopback, for a local trial.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9443";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `HOST:PORT` to listen on (default 127.0.0.1:9443).
    pub listen: Option<SocketAddr>,
    /// Data directory (default ./kubetrail-data; `--data` and `KUBETRAIL_DATA` override it).
    pub data: Option<PathBuf>,
    /// The cluster name stamped on events whose source names none.
    pub cluster: Option<String>,
    /// Allow a non-loopback listener without TLS or authentication (never in production).
    #[serde(default)]
    pub insecure: bool,
    pub tls: Option<Tls>,
    pub auth: Option<Auth>,
    /// Audit log files to follow, as kube-apiserver's --audit-log-path writes them.
    #[serde(default)]
    pub files: Vec<FileSource>,
    /// An AuditPolicy whose None decisions drop events before storage (for clusters whose own policy cannot be
    /// changed, such as EKS).
    pub filter_policy: Option<PathBuf>,
    pub wal: Option<WalConfig>,
    pub limits: Option<Limits>,
    /// Detection: rule files, the built-in pack, production namespaces, exceptions, disabled rules.
    pub detection: Option<crate::alerting::rules::DetectionConfig>,
    /// Where alerts go, and which.
    pub alerts: Option<crate::alerting::outbox::AlertsConfig>,
    /// Where events are shipped off the node (ClickHouse, the S3 archive, ...).
    #[serde(default)]
    pub sinks: Vec<crate::shipping::config::SinkConfig>,
    /// More secret-like names (`key_patterns`: env names, ConfigMap keys, command flags) and credential query
    /// parameters (`uri_parameters`) to redact, added to the built-in ones.
    #[serde(default)]
    pub redaction: kubetrail_policy::RedactionConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Verify client certificates against this CA (what kube-apiserver's webhook kubeconfig presents).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// A file with one accepted bearer token per line (what a webhook kubeconfig's `token` presents).
    pub bearer_tokens_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// Segment size in MiB (default 64).
    pub segment_mb: Option<u64>,
    /// Disk budget of the log in GiB (default 8): at the budget, batches are refused with 503 until space frees.
    pub budget_gb: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, in MiB (default 64: the apiserver does not cut its batches, and one
    /// `list` at RequestResponse can be tens of MiB; events over the log's record limit are stored cut).
    pub max_body_mb: Option<usize>,
    /// Largest decompressed body, in MiB (default 64): a gzip bomb is refused with 413.
    pub max_decompressed_mb: Option<usize>,
    /// Bytes processed at once, in MiB (default 256): beyond it senders get 429 and retry.
    pub max_inflight_mb: Option<usize>,
}

impl Config {
    /// What still works but is on its way out, for `config check` and `serve` to say.
    pub fn deprecations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, d) in self.alerts.iter().flat_map(|a| &a.destinations).enumerate() {
            if let Some((old, new)) = d.deprecated() {
                out.push(format!(
                    "alerts.destinations[{i}]: `{old}` is deprecated; write `{new}` (a `type:`-tagged entry like `sinks:`)"
                ));
            }
        }
        out
    }

    /// Reads and parses a config file; unknown keys and wrong types are errors naming the key and the line.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read config file `{}`", path.display()))?;
        serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file `{}`: {e}", path.display()))
    }

    /// Checks what can be checked before starting: files exist and are readable, the filter policy loads.
    pub fn validate(&self) -> anyhow::Result<()> {
        let readable = |what: &str, p: &Path| -> anyhow::Result<()> {
            std::fs::File::open(p)
                .with_context(|| format!("{what} `{}` cannot be read", p.display()))?;
            Ok(())
        };
        if let Some(tls) = &self.tls {
            readable("tls.cert", &tls.cert)?;
            readable("tls.key", &tls.key)?;
            if let Some(ca) = &tls.client_ca {
                readable("tls.client_ca", ca)?;
            }
        }
        if let Some(auth) = &self.auth {
            let tokens = read_tokens(&auth.bearer_tokens_file)?;
            if tokens.is_empty() {
                bail!(
                    "auth.bearer_tokens_file `{}` holds no token",
                    auth.bearer_tokens_file.display()
                );
            }
        }
        if let Some(p) = &self.filter_policy {
            load_filter(p)?;
        }
        for (i, d) in self.alerts.iter().flat_map(|a| &a.destinations).enumerate() {
            d.webhook()
                .with_context(|| format!("alerts.destinations[{i}]"))?;
        }
        crate::shipping::config::build_all(&self.sinks)?;
        if let Some(d) = &self.detection {
            let sources = crate::alerting::rules::Sources {
                builtin: d.builtin.unwrap_or(true),
                paths: d.rules.clone(),
            };
            crate::alerting::rules::engine(&sources, d).context("detection:")?;
        }
        if let Some(c) = &self.cluster
            && (c.is_empty() || c.len() > 253)
        {
            bail!("cluster: must be 1 to 253 characters, got {}", c.len());
        }
        Ok(())
    }
}

/// One token per line; blank lines and `#` comments ignored.
pub fn read_tokens(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "auth.bearer_tokens_file `{}` cannot be read",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Loads the second-stage filter policy; it must be one kube-apiserver would accept.
pub fn load_filter(path: &Path) -> anyhow::Result<kubetrail_policy::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("filter_policy `{}` cannot be read", path.display()))?;
    let loaded = kubetrail_policy::load(&text);
    match loaded.policy {
        Some(p) => Ok(p),
        None => {
            let first = loaded
                .errors()
                .next()
                .map(|d| d.to_string())
                .unwrap_or_default();
            bail!(
                "filter_policy `{}` is not a valid audit policy: {first} (see `kubetrail policy check {}`)",
                path.display(),
                path.display()
            )
        }
    }
}
