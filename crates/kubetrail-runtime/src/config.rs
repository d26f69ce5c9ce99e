//! `kubetrail serve`'s configuration file: strict YAML (an unknown key is an error naming it), validated before
//! anything starts (`kubetrail config check FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// A replica name (from `from`: the config key, variable or flag that gave it) if it is 1 to 63 lowercase
/// letters, digits, `-`, `_` or `.`, starting with a letter or digit (it becomes part of object keys).
pub fn check_replica(name: &str, from: &str) -> anyhow::Result<String> {
    let ok = name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        bail!(
            "{from}: `{}` must be 1 to 63 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit",
            name.escape_debug()
        );
    }
    Ok(name.to_string())
}

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
    /// This collector's name among replicas that share one S3 archive (an HA pair, a StatefulSet): its
    /// archive goes under `<prefix>replica=<name>/`, so replicas never write each other's objects or
    /// manifest chain. `KUBETRAIL_REPLICA` overrides it (a StatefulSet sets it to the pod's name).
    pub replica: Option<String>,
    /// Allow a non-loopback listener without TLS or authentication (never in production).
    #[serde(default)]
    pub insecure: bool,
    pub tls: Option<Tls>,
    pub auth: Option<Auth>,
    /// Names clients reach this server by (`kubetrail.kubetrail.svc`, `kubetrail.corp.example`), besides IP
    /// addresses, `localhost` and the TLS certificate's names: requests for any other `Host` are refused with
    /// 421 (DNS rebinding).
    #[serde(default)]
    pub server_names: Vec<String>,
    pub metrics: Option<Metrics>,
    /// Audit log files to follow, as kube-apiserver's --audit-log-path writes them.
    #[serde(default)]
    pub files: Vec<FileSource>,
    /// An AuditPolicy whose None decisions drop events before storage (for clusters whose own policy cannot be
    /// changed, such as EKS).
    pub filter_policy: Option<PathBuf>,
    pub wal: Option<WalConfig>,
    pub limits: Option<Limits>,
    /// The API's queries: how long and how much memory each may take.
    pub query: Option<QueryConfig>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Verify client certificates against this CA (what kube-apiserver's webhook kubeconfig presents).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Who may call, each with one role.
    #[serde(default)]
    pub identities: Vec<IdentityConfig>,
    /// Deprecated: a file with one bearer token per line, each an `admin` (write `identities` instead).
    pub bearer_tokens_file: Option<PathBuf>,
}

/// One identity: `{name: soc-lead, token_file: /etc/kubetrail/tokens/lead, role: responder}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// How logs and workflow records name it.
    pub name: String,
    pub role: kubetrail_server::Role,
    /// A file holding its one bearer token (at least [`MIN_TOKEN_CHARS`] characters; readable by the owner
    /// only).
    pub token_file: Option<PathBuf>,
    /// The subject common name of its client certificate (verified against `tls.client_ca`).
    pub client_cert_cn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Serve `GET /metrics` without a credential (default false: any identity's token, e.g. Prometheus's
    /// `bearer_token_file`).
    #[serde(default)]
    pub public: bool,
}

/// The shortest bearer token accepted: 32 characters (`openssl rand -hex 32` makes 64).
pub const MIN_TOKEN_CHARS: usize = 32;
/// The fewest distinct characters a token may have (`aaaa…` is not a secret; random hex has 16).
pub const MIN_TOKEN_DISTINCT: usize = 8;

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

impl WalConfig {
    /// The log's options with these settings applied to the defaults.
    pub fn options(cfg: Option<&WalConfig>) -> kubetrail_store::WalOptions {
        let mut opts = kubetrail_store::WalOptions::default();
        if let Some(w) = cfg {
            if let Some(mb) = w.segment_mb {
                opts.segment_bytes = mb << 20;
            }
            if let Some(gb) = w.budget_gb {
                opts.budget_bytes = (gb * (1u64 << 30) as f64) as u64;
            }
        }
        opts
    }
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The longest an API query may run (default `60s`, `service::api::QUERY_TIMEOUT`; at most `1h`): 504
    /// past it.
    pub timeout: Option<String>,
    /// The most memory an API query's worker process may use, in MiB (default 4096; at least 256): 422
    /// past it. Its threads' stacks are reserved beside it.
    pub memory_mb: Option<u64>,
    /// What answers queries: `embedded` (the local store, the default) or `clickhouse` (the table the
    /// `clickhouse` sink of this collector, or of a fleet of them, fills).
    #[serde(default)]
    pub backend: QueryBackend,
    /// ClickHouse's HTTP interface (`backend: clickhouse`).
    pub url: Option<String>,
    /// Database (default `kubetrail`, the sink's).
    pub database: Option<String>,
    /// Table (default `audit_events`, the sink's; the Distributed table of a ClickHouse cluster).
    pub table: Option<String>,
    /// A ClickHouse user; a read-only one is enough (every read runs with `readonly=1`).
    pub user: Option<String>,
    /// A file holding its password.
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for a self-signed server.
    pub ca_file: Option<PathBuf>,
    /// The most rows one ClickHouse read may return (default 1,000,000).
    pub max_rows: Option<u64>,
    /// The most MiB one ClickHouse read may return, as the server counts (default 256).
    pub max_mb: Option<u64>,
    /// The lake's S3 endpoint (MinIO, Ceph); AWS's when absent (`backend: lake`, whose `url` is
    /// `s3://BUCKET/PREFIX`, the archive's).
    pub endpoint: Option<String>,
    /// The lake's region (default `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// The lake's credentials; the standard AWS chain without them.
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Where the lake's files are copied (default `DATA/lake-cache`).
    pub cache_dir: Option<PathBuf>,
}

/// What answers queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryBackend {
    /// The local store under the data directory.
    #[default]
    Embedded,
    /// A ClickHouse table.
    Clickhouse,
    /// The S3 archive's Parquet files.
    Lake,
}

impl QueryConfig {
    /// The source queries read: the store under `data`, or the ClickHouse table this section names (its
    /// password file is read now, so a bad path fails at start).
    pub fn source(&self, data: &Path) -> anyhow::Result<kubetrail_engine::Source> {
        use kubetrail_engine::clickhouse::ClickHouseSource;
        let store = || kubetrail_engine::Source::Store(data.join("store"));
        // Each key, and the backends it is for.
        use QueryBackend::{Clickhouse, Lake};
        let given: [(&str, bool, &[QueryBackend]); 13] = [
            ("url", self.url.is_some(), &[Clickhouse, Lake]),
            ("database", self.database.is_some(), &[Clickhouse]),
            ("table", self.table.is_some(), &[Clickhouse]),
            ("user", self.user.is_some(), &[Clickhouse]),
            ("password_file", self.password_file.is_some(), &[Clickhouse]),
            ("ca_file", self.ca_file.is_some(), &[Clickhouse]),
            ("max_rows", self.max_rows.is_some(), &[Clickhouse]),
            ("max_mb", self.max_mb.is_some(), &[Clickhouse]),
            ("endpoint", self.endpoint.is_some(), &[Lake]),
            ("region", self.region.is_some(), &[Lake]),
            ("access_key_id", self.access_key_id.is_some(), &[Lake]),
            (
                "secret_access_key_file",
                self.secret_access_key_file.is_some(),
                &[Lake],
            ),
            ("cache_dir", self.cache_dir.is_some(), &[Lake]),
        ];
        if let Some((key, _, for_)) = given
            .iter()
            .find(|(_, set, for_)| *set && !for_.contains(&self.backend))
        {
            let name = |b: &QueryBackend| match b {
                QueryBackend::Embedded => "embedded",
                Clickhouse => "clickhouse",
                Lake => "lake",
            };
            let for_: Vec<&str> = for_.iter().map(name).collect();
            anyhow::bail!(
                "query.{key} is for `backend: {}`; the backend is `{}`",
                for_.join("` or `backend: "),
                name(&self.backend)
            );
        }
        match self.backend {
            QueryBackend::Embedded => return Ok(store()),
            Lake => {
                let Some(url) = &self.url else {
                    anyhow::bail!(
                        "query.url is required with `backend: lake` (`s3://BUCKET/PREFIX`)"
                    );
                };
                return lake_source(
                    url,
                    self.endpoint.clone(),
                    self.region.clone(),
                    self.access_key_id.clone(),
                    self.secret_access_key_file.clone(),
                    self.cache_dir
                        .clone()
                        .unwrap_or_else(|| data.join("lake-cache")),
                )
                .map(kubetrail_engine::Source::Lake);
            }
            Clickhouse => {}
        }
        let Some(url) = &self.url else {
            anyhow::bail!(
                "query.url is required with `backend: clickhouse` (`http://clickhouse:8123`)"
            );
        };
        let secs = match &self.timeout {
            Some(t) => {
                crate::duration::parse_secs(t).map_err(|e| anyhow::anyhow!("query.timeout: {e}"))?
            }
            None => ClickHouseSource::DEFAULT_MAX_SECONDS as f64,
        };
        let source = ClickHouseSource {
            url: url.clone(),
            database: self.database.clone().unwrap_or_else(|| "kubetrail".into()),
            table: self.table.clone().unwrap_or_else(|| "audit_events".into()),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            max_rows: match self.max_rows {
                None => ClickHouseSource::DEFAULT_MAX_ROWS,
                Some(n) if n >= 1 => n,
                Some(n) => anyhow::bail!("query.max_rows must be at least 1, got {n}"),
            },
            max_bytes: match self.max_mb {
                None => ClickHouseSource::DEFAULT_MAX_BYTES,
                Some(mb) if (1..=1 << 20).contains(&mb) => mb << 20,
                Some(mb) => anyhow::bail!("query.max_mb must be 1 to 1048576, got {mb}"),
            },
            max_seconds: secs.ceil().max(1.0) as u64,
        };
        if self.password_file.is_some() && self.user.is_none() {
            anyhow::bail!("query.password_file needs query.user");
        }
        source.client().map_err(|e| anyhow::anyhow!("query: {e}"))?;
        Ok(kubetrail_engine::Source::ClickHouse(source))
    }

    /// The time limit and the memory limit in bytes, each when given.
    pub fn resolve(&self) -> anyhow::Result<(Option<std::time::Duration>, Option<u64>)> {
        let timeout = match &self.timeout {
            None => None,
            Some(t) => {
                let secs = crate::duration::parse_secs(t)
                    .map_err(|e| anyhow::anyhow!("query.timeout: {e}"))?;
                if !(1.0..=3600.0).contains(&secs) {
                    anyhow::bail!("query.timeout must be 1s to 1h, got `{t}`");
                }
                Some(std::time::Duration::from_secs_f64(secs))
            }
        };
        let memory = match self.memory_mb {
            None => None,
            Some(mb) if (256..=1 << 20).contains(&mb) => Some(mb << 20),
            Some(mb) => anyhow::bail!("query.memory_mb must be 256 to 1048576, got {mb}"),
        };
        Ok((timeout, memory))
    }
}

/// The lake at `url` (`s3://BUCKET/PREFIX`): the region from `AWS_REGION` (or `AWS_DEFAULT_REGION`) when
/// not given, else `us-east-1`; the endpoint from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` when not given.
pub fn lake_source(
    url: &str,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    cache: PathBuf,
) -> anyhow::Result<kubetrail_engine::lake::LakeSource> {
    let (bucket, prefix) = kubetrail_engine::lake::LakeSource::parse_url(url)
        .map_err(|e| anyhow::anyhow!("query: {e}"))?;
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    if access_key_id.is_some() != secret_access_key_file.is_some() {
        anyhow::bail!("query: give access_key_id and secret_access_key_file together");
    }
    Ok(kubetrail_engine::lake::LakeSource {
        bucket,
        prefix,
        endpoint: endpoint.or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
        region: region
            .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .unwrap_or_else(|| "us-east-1".into()),
        access_key_id,
        secret_access_key_file,
        cache,
    })
}

impl Config {
    /// What works but deserves a look: what is on its way out, and grants wider than they may look; for
    /// `config check` and `serve` to say.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let names_certs = self
            .auth
            .iter()
            .flat_map(|a| &a.identities)
            .any(|i| i.client_cert_cn.is_some());
        if self.tls.as_ref().is_some_and(|t| t.client_ca.is_some()) && !names_certs {
            out.push(
                "tls.client_ca is set and no identity names a client_cert_cn: every certificate that CA signs \
                 may send events (the ingest role); name the apiserver's certificate in auth.identities to \
                 allow it alone"
                    .into(),
            );
        }
        if self
            .auth
            .as_ref()
            .is_some_and(|a| a.bearer_tokens_file.is_some())
        {
            out.push(
                "auth.bearer_tokens_file is deprecated and its tokens are admins: give each holder an entry \
                 of `auth.identities` with its own token_file and the least role it needs"
                    .into(),
            );
        }
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
    /// The replica name: `KUBETRAIL_REPLICA` if set and not empty, else the config's `replica`.
    pub fn replica(&self) -> anyhow::Result<Option<String>> {
        match std::env::var("KUBETRAIL_REPLICA") {
            Ok(v) if !v.is_empty() => check_replica(&v, "KUBETRAIL_REPLICA").map(Some),
            _ => self
                .replica
                .as_deref()
                .map(|r| check_replica(r, "replica"))
                .transpose(),
        }
    }

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
        if let Some(tls) = &self.tls {
            owner_only("tls.key", &tls.key)?;
        }
        self.identities()?;
        if let Some(q) = &self.query {
            q.resolve()?;
        }
        if let Some(p) = &self.filter_policy {
            load_filter(p)?;
        }
        for (i, d) in self.alerts.iter().flat_map(|a| &a.destinations).enumerate() {
            d.webhook()
                .with_context(|| format!("alerts.destinations[{i}]"))?;
        }
        crate::shipping::config::build_all(&self.sinks, self.replica()?.as_deref())?;
        if let Some(d) = &self.detection {
            let sources = crate::alerting::rules::Sources {
                builtin: d.builtin.unwrap_or(true),
                paths: d.rules.clone(),
            };
            crate::alerting::rules::engine(&sources, d).context("detection:")?;
            d.watch(sources.builtin)?;
        }
        if let Some(c) = &self.cluster
            && (c.is_empty() || c.len() > 253)
        {
            bail!("cluster: must be 1 to 253 characters, got {}", c.len());
        }
        Ok(())
    }
}

impl Config {
    /// The identities the listener accepts, their token files read and checked: each file readable by its
    /// owner only, each token at least [`MIN_TOKEN_CHARS`] characters, no token or name given twice, a
    /// certificate name only with `tls.client_ca`. The deprecated `bearer_tokens_file`'s tokens are admins
    /// named `token:<line>`.
    pub fn identities(&self) -> anyhow::Result<Vec<kubetrail_server::Identity>> {
        self.load_identities(true).map(|(ids, _)| ids)
    }

    /// The identities as [`Config::identities`] reads them, failing closed one by one: an identity whose token
    /// file does not load (removed, exposed, too short, the same as another's) keeps no token until it loads
    /// again, and the others are in force. For re-reading while serving, where refusing the whole set would
    /// keep a revoked token working. With what did not load.
    pub fn identities_failing_closed(&self) -> (Vec<kubetrail_server::Identity>, Vec<String>) {
        self.load_identities(false)
            .unwrap_or_else(|e| (Vec::new(), vec![format!("{e:#}")]))
    }

    /// `strict`: the first problem is the error; otherwise each identity whose token does not load loses it
    /// and the problem is listed.
    fn load_identities(
        &self,
        strict: bool,
    ) -> anyhow::Result<(Vec<kubetrail_server::Identity>, Vec<String>)> {
        let Some(auth) = &self.auth else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let mut failed = |e: anyhow::Error| -> anyhow::Result<()> {
            if strict {
                return Err(e);
            }
            problems.push(format!("{e:#}"));
            Ok(())
        };
        for (i, id) in auth.identities.iter().enumerate() {
            let at = format!("auth.identities[{i}]");
            let name = id.name.trim();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                bail!("{at}: `name` must be 1 to 128 printable characters");
            }
            let token = match &id.token_file {
                Some(path) => {
                    let what = format!("{at} ({name}): token_file");
                    match one_token(&what, path) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            failed(e)?;
                            None
                        }
                    }
                }
                None => None,
            };
            let cn = id.client_cert_cn.as_deref().map(str::trim);
            if cn.is_some_and(str::is_empty) {
                bail!("{at} ({name}): `client_cert_cn` is empty");
            }
            if cn.is_some() && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                bail!(
                    "{at} ({name}): `client_cert_cn` needs `tls.client_ca`, the CA its certificate is verified \
                     against"
                );
            }
            if id.token_file.is_none() && cn.is_none() {
                bail!("{at} ({name}): give it a `token_file` or a `client_cert_cn`");
            }
            out.push(kubetrail_server::Identity {
                name: name.to_string(),
                role: id.role,
                token,
                client_cert_cn: cn.map(String::from),
            });
        }
        if let Some(path) = &auth.bearer_tokens_file {
            let what = "auth.bearer_tokens_file";
            let legacy = || -> anyhow::Result<Vec<kubetrail_server::Identity>> {
                let text = read_secret(what, path)?;
                let tokens = token_lines(&text);
                if tokens.is_empty() {
                    bail!("{what} `{}` holds no token", path.display());
                }
                tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        Ok(kubetrail_server::Identity {
                            name: format!("token:{i}"),
                            role: kubetrail_server::Role::Admin,
                            token: Some(checked_token(what, path, t)?),
                            client_cert_cn: None,
                        })
                    })
                    .collect()
            };
            match legacy() {
                Ok(ids) => out.extend(ids),
                Err(e) => failed(e)?,
            }
        }
        for i in 0..out.len() {
            for j in 0..i {
                let (a, b) = (&out[i], &out[j]);
                if a.name == b.name {
                    bail!("auth.identities: the name `{}` is given twice", a.name);
                }
                if a.client_cert_cn.is_some() && a.client_cert_cn == b.client_cert_cn {
                    bail!(
                        "auth: `{}` and `{}` have the same client_cert_cn",
                        b.name,
                        a.name
                    );
                }
                if a.token.is_some() && a.token == b.token {
                    failed(anyhow::anyhow!(
                        "auth: `{}` and `{}` have the same token: each identity needs its own",
                        b.name,
                        a.name
                    ))?;
                    out[i].token = None;
                    out[j].token = None;
                }
            }
        }
        Ok((out, problems))
    }
}

/// The one token of a token file.
fn one_token(what: &str, path: &Path) -> anyhow::Result<String> {
    let text = read_secret(what, path)?;
    let tokens = token_lines(&text);
    match tokens.as_slice() {
        [one] => checked_token(what, path, one),
        [] => bail!("{what} `{}` holds no token", path.display()),
        _ => bail!(
            "{what} `{}` holds {} tokens: a token_file holds one (give each holder its own identity)",
            path.display(),
            tokens.len()
        ),
    }
}

/// The non-blank, non-`#` lines of a token file.
fn token_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn checked_token(what: &str, path: &Path, token: &str) -> anyhow::Result<String> {
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        bail!(
            "{what} `{}` holds a token of {chars} characters: tokens need at least {MIN_TOKEN_CHARS} (make one \
             with `openssl rand -hex 32`)",
            path.display()
        );
    }
    let mut distinct: Vec<char> = token.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_TOKEN_DISTINCT {
        bail!(
            "{what} `{}` holds a token of only {} distinct characters: use a random one (`openssl rand -hex 32`)",
            path.display(),
            distinct.len()
        );
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "{what} `{}` holds a token with spaces or control characters",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// Refuses a secret file that its group or others may read or write. One exception: a root-owned file that
/// only its group may also read, when that group is one of this process's own, is how Kubernetes mounts a
/// Secret for a pod with `fsGroup` (0440, whatever `defaultMode` says; kubernetes#57923); PostgreSQL accepts
/// its key on the same terms. Nobody but root and this process's own group can read such a file.
pub fn owner_only(what: &str, path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what} `{}` cannot be read", path.display()))?;
    if !meta.is_file() {
        bail!("{what} `{}` is not a regular file", path.display());
    }
    check_mode(what, path, &meta)
}

/// [`owner_only`]'s rule on a file's metadata.
fn check_mode(what: &str, path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 && !fs_group_secret(mode, meta.uid(), meta.gid(), &own_groups()) {
        bail!(
            "{what} `{}` is readable or writable by others than its owner (mode {mode:03o}): `chmod 600` it \
             (in Kubernetes: `defaultMode: 0400` on the Secret's volume)",
            path.display()
        );
    }
    Ok(())
}

/// Whether a file of `mode`, owner `uid` and group `gid` is a root-owned secret readable by its group only,
/// that group being one of `groups` (see [`owner_only`]).
fn fs_group_secret(mode: u32, uid: u32, gid: u32, groups: &[u32]) -> bool {
    uid == 0 && mode & 0o077 == 0o040 && groups.contains(&gid)
}

/// This process's effective and supplementary group ids (from `/proc/self/status`; none when unreadable).
fn own_groups() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut out = Vec::new();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Gid:") {
            // Real, effective, saved, filesystem: the effective one decides access.
            out.extend(
                rest.split_whitespace()
                    .nth(1)
                    .and_then(|g| g.parse::<u32>().ok()),
            );
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            out.extend(
                rest.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The most bytes a secret file (a token, a key) may hold.
const MAX_SECRET_BYTES: u64 = 64 << 10;

/// A regular file's bytes, at most `max` (more is an error), read without blocking on a FIFO or a device:
/// opened non-blocking, checked as opened (`fstat`: no window between the check and the read), read bounded.
/// With its metadata.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok((out, meta))
}

/// A secret file's text: a regular file of at most 64 KiB that passes [`owner_only`]'s rule.
fn read_secret(what: &str, path: &Path) -> anyhow::Result<String> {
    let (bytes, meta) = read_regular(path, MAX_SECRET_BYTES).map_err(|e| {
        if e.to_string() == "not a regular file" {
            anyhow::anyhow!("{what} `{}` is not a regular file", path.display())
        } else {
            anyhow::anyhow!("{what} `{}` cannot be read: {e}", path.display())
        }
    })?;
    check_mode(what, path, &meta)?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{what} `{}` is not UTF-8 text", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_owned_secrets_readable_by_our_own_group_pass_as_kubernetes_mounts_them() {
        let ours = [1000, 65532];
        assert!(
            fs_group_secret(0o440, 0, 65532, &ours),
            "a Secret with fsGroup"
        );
        assert!(fs_group_secret(0o640, 0, 65532, &ours));
        assert!(!fs_group_secret(0o440, 1001, 65532, &ours), "not root's");
        assert!(
            !fs_group_secret(0o440, 0, 4242, &ours),
            "someone else's group"
        );
        assert!(!fs_group_secret(0o460, 0, 65532, &ours), "group-writable");
        assert!(!fs_group_secret(0o444, 0, 65532, &ours), "world-readable");
        assert!(!fs_group_secret(0o450, 0, 65532, &ours), "group-executable");
        let own = own_groups();
        assert!(!own.is_empty(), "this process has an effective group");
    }

    /// A replica name becomes a folder of object keys: nothing that could climb out of it or hide.
    #[test]
    fn replica_names_are_plain() {
        for ok in ["a", "kubetrail-0", "eu.west_1"] {
            assert_eq!(check_replica(ok, "replica").unwrap(), ok);
        }
        for bad in [
            "",
            "..",
            ".a",
            "-a",
            "A",
            "a/b",
            "a b",
            "a\n",
            &"x".repeat(64),
        ] {
            let e = check_replica(bad, "replica").unwrap_err().to_string();
            assert!(
                e.starts_with("replica: `") && e.contains("1 to 63"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn query_backend_is_checked() {
        let source = |yaml: &str| {
            let cfg: Config = serde_saphyr::from_str(yaml).unwrap();
            cfg.query.unwrap_or_default().source(Path::new("/d"))
        };
        assert_eq!(
            source("query: {timeout: 30s}\n").unwrap(),
            kubetrail_engine::Source::Store("/d/store".into())
        );
        let kubetrail_engine::Source::ClickHouse(c) = source(
            "query: {backend: clickhouse, url: 'http://ch:8123', table: audit_all, timeout: 90s, max_mb: 64}\n",
        )
        .unwrap() else {
            panic!("not ClickHouse");
        };
        assert_eq!(
            (
                c.database.as_str(),
                c.table.as_str(),
                c.max_seconds,
                c.max_bytes
            ),
            ("kubetrail", "audit_all", 90, 64 << 20)
        );
        let err = |yaml: &str| source(yaml).unwrap_err().to_string();
        assert_eq!(
            err("query: {url: 'http://ch:8123'}\n"),
            "query.url is for `backend: clickhouse` or `backend: lake`; the backend is `embedded`"
        );
        assert!(err("query: {backend: clickhouse}\n").starts_with("query.url is required"));
        assert!(
            err("query: {backend: clickhouse, url: 'http://ch:8123', table: 'x; DROP'}\n")
                .contains("use letters, digits and `_`")
        );
        assert!(
            err("query: {backend: clickhouse, url: 'http://ch', user: r, password_file: /nope}\n")
                .contains("`/nope`")
        );
        assert!(
            serde_saphyr::from_str::<Config>("query: {backend: duckdb}\n").is_err(),
            "an unknown backend is refused"
        );
    }

    #[test]
    fn query_limits_have_bounds() {
        let q = |timeout: Option<&str>, memory_mb| QueryConfig {
            timeout: timeout.map(String::from),
            memory_mb,
            ..QueryConfig::default()
        };
        assert_eq!(q(None, None).resolve().unwrap(), (None, None));
        assert_eq!(
            q(Some("90s"), Some(512)).resolve().unwrap(),
            (Some(std::time::Duration::from_secs(90)), Some(512 << 20))
        );
        let err = |timeout, memory| q(timeout, memory).resolve().unwrap_err().to_string();
        assert_eq!(
            err(Some("2h"), None),
            "query.timeout must be 1s to 1h, got `2h`"
        );
        assert!(err(Some("soon"), None).starts_with("query.timeout: `soon` is not a duration"));
        assert_eq!(
            err(None, Some(100)),
            "query.memory_mb must be 256 to 1048576, got 100"
        );
    }
}
