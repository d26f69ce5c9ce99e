//! The config file's `sinks:` section: each entry names a target by `type` and becomes a [`crate::shipping::worker::Sink`]
//! (validated by `kubetrail config check`: names, URLs, files; nothing is contacted).
//!
//! ```yaml
//! sinks:
//!   - type: clickhouse
//!     url: http://127.0.0.1:8123
//!     database: kubetrail
//!     table: audit_events
//!     retention_days: 400
//!     # cluster: fleet            # a ClickHouse cluster: audit_events_local ON CLUSTER + a Distributed table
//!   - type: s3
//!     endpoint: https://s3.eu-west-1.amazonaws.com   # omit for AWS; MinIO, Ceph: their URL
//!     bucket: audit-archive
//!     region: eu-west-1
//!     prefix: prod/
//!     object_lock: {mode: compliance, retain_days: 400, legal_hold: false}
//!   - type: elasticsearch          # or OpenSearch
//!     url: https://es.example:9200
//!     index: kube-audit            # daily indices kube-audit-YYYY.MM.DD (data_stream: true for a data stream)
//!     user: kubetrail
//!     password_file: /etc/kubetrail/es.password    # or api_key_file
//!   - type: splunk_hec
//!     url: https://splunk.example:8088
//!     token_file: /etc/kubetrail/hec.token
//!     index: k8s_audit
//!     ack: true                    # indexer acknowledgement (the token must have it on)
//!   - type: syslog
//!     address: siem.example:6514
//!     tls: true                    # RFC 5425 (ca_file for a private CA); plain TCP otherwise
//!     format: cef                  # or rfc5424: the event's JSON as the message
//!     facility: local0
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use kubetrail_sinks::http::{Auth, HttpConfig};
use serde::Deserialize;

use crate::shipping::worker::{Batching, Sink, Target};

/// How a sink batches (all optional).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Send at most this long after the first record of a batch waited (default 5).
    pub flush_secs: Option<f64>,
    /// Records per batch at most (default 5000).
    pub max_events: Option<usize>,
    /// Event bytes per batch at most, in MiB (default 8).
    pub max_mb: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockModeConfig {
    Compliance,
    Governance,
}

/// Object Lock on every archived object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    pub mode: LockModeConfig,
    /// Retained for this many days from the upload (a year or more for forensics).
    pub retain_days: u32,
    #[serde(default)]
    pub legal_hold: bool,
}

/// The Security Lake custom source an S3 sink also writes OCSF for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcsfConfig {
    /// The custom source's name as registered in Security Lake.
    pub source_name: String,
    /// The AWS account of the lake (12 digits).
    pub account_id: String,
    /// The lake's region (default: the sink's).
    pub region: Option<String>,
}

/// One sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    Clickhouse {
        /// Its name in status, metrics and file names (default `clickhouse`).
        name: Option<String>,
        url: String,
        #[serde(default = "default_database")]
        database: String,
        #[serde(default = "default_table")]
        table: String,
        /// Rows older than this (by event time) are dropped by ClickHouse's TTL.
        retention_days: Option<u32>,
        user: Option<String>,
        /// A file holding the password (kept out of the config and of process listings).
        password_file: Option<PathBuf>,
        /// Extra CA certificates (PEM) for a self-signed server.
        ca_file: Option<PathBuf>,
        /// A ClickHouse cluster (its `remote_servers` name): the rows go to `<table>_local` on every shard,
        /// created `ON CLUSTER`, through the Distributed table `table`.
        cluster: Option<String>,
        batch: Option<BatchConfig>,
    },
    S3 {
        name: Option<String>,
        /// The S3 endpoint (MinIO, Ceph, moto); omit for AWS.
        endpoint: Option<String>,
        bucket: String,
        #[serde(default = "default_region")]
        region: String,
        #[serde(default)]
        prefix: String,
        object_lock: ObjectLockConfig,
        /// Seconds between signed manifests of the archived objects (default 60).
        manifest_secs: Option<u64>,
        /// Also archive the store's Parquet files once final (default true).
        #[serde(default = "yes")]
        parquet: bool,
        /// Seconds a Parquet file must stay unchanged after its hour before it is archived (default 1800:
        /// compaction is done with it).
        parquet_after_secs: Option<u64>,
        /// Also write every batch as OCSF API Activity (class 6003) Parquet for an Amazon Security Lake custom
        /// source, under `<prefix>ext/<source_name>/region=<r>/accountId=<a>/eventDay=<YYYYMMDD>/`.
        ocsf: Option<OcsfConfig>,
        /// Credentials; without them the standard AWS chain: env keys, web identity (IRSA),
        /// ~/.aws/credentials, container credentials (ECS, EKS Pod Identity), EC2 instance metadata (IMDSv2).
        access_key_id: Option<String>,
        secret_access_key_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        batch: Option<BatchConfig>,
    },
    Elasticsearch {
        name: Option<String>,
        url: String,
        /// Daily indices `<index>-YYYY.MM.DD`, or the data stream's name with `data_stream: true`.
        index: String,
        #[serde(default)]
        data_stream: bool,
        user: Option<String>,
        password_file: Option<PathBuf>,
        /// A file holding an API key (base64 `id:key`, as Elasticsearch gives it).
        api_key_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        batch: Option<BatchConfig>,
    },
    SplunkHec {
        name: Option<String>,
        url: String,
        /// A file holding the HEC token.
        token_file: PathBuf,
        index: Option<String>,
        /// Wait for indexer acknowledgement before counting a batch delivered.
        #[serde(default)]
        ack: bool,
        ca_file: Option<PathBuf>,
        batch: Option<BatchConfig>,
    },
    Syslog {
        name: Option<String>,
        /// `host:port`.
        address: String,
        /// RFC 5425 (TLS); plain TCP (RFC 6587 octet counting) when false. Default true.
        #[serde(default = "yes")]
        tls: bool,
        /// `rfc5424` (the event's JSON as the message) or `cef`.
        #[serde(default)]
        format: SyslogFormat,
        /// Facility name (default `local0`).
        facility: Option<String>,
        ca_file: Option<PathBuf>,
        /// The name the server's certificate must have (default: the address' host).
        server_name: Option<String>,
        batch: Option<BatchConfig>,
    },
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    #[default]
    Rfc5424,
    Cef,
}

fn yes() -> bool {
    true
}

fn default_database() -> String {
    "kubetrail".into()
}
fn default_table() -> String {
    "audit_events".into()
}
fn default_region() -> String {
    "us-east-1".into()
}

fn secret_file(what: &str, p: &PathBuf) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(p)
        .with_context(|| format!("sinks: {what} `{}` cannot be read", p.display()))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        bail!("sinks: {what} `{}` is empty", p.display());
    }
    Ok(s)
}

fn batching(b: &Option<BatchConfig>) -> anyhow::Result<Batching> {
    let d = Batching::default();
    let b = b.clone().unwrap_or_default();
    let flush = b.flush_secs.unwrap_or(d.flush.as_secs_f64());
    if !(0.0..=3600.0).contains(&flush) {
        bail!("sinks: batch.flush_secs must be between 0 and 3600, got {flush}");
    }
    let max_events = b.max_events.unwrap_or(d.max_events);
    let max_mb = b.max_mb.unwrap_or(d.max_bytes >> 20);
    if max_events == 0 || max_events > 1_000_000 || max_mb == 0 || max_mb > 1024 {
        bail!("sinks: batch.max_events must be 1..=1000000 and batch.max_mb 1..=1024");
    }
    Ok(Batching {
        max_events,
        max_bytes: max_mb << 20,
        flush: Duration::from_secs_f64(flush),
    })
}

impl SinkConfig {
    fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Clickhouse { .. } => "clickhouse",
            SinkConfig::S3 { .. } => "s3",
            SinkConfig::Elasticsearch { .. } => "elasticsearch",
            SinkConfig::SplunkHec { .. } => "splunk_hec",
            SinkConfig::Syslog { .. } => "syslog",
        }
    }

    fn name(&self) -> String {
        let n = match self {
            SinkConfig::Clickhouse { name, .. }
            | SinkConfig::S3 { name, .. }
            | SinkConfig::Elasticsearch { name, .. }
            | SinkConfig::SplunkHec { name, .. }
            | SinkConfig::Syslog { name, .. } => name.clone(),
        };
        n.unwrap_or_else(|| self.kind().to_string())
    }

    /// The sink, ready to start (reads its secret files; contacts nothing).
    pub fn build(&self) -> anyhow::Result<Sink> {
        let name = self.name();
        let http = |ca: &Option<PathBuf>| HttpConfig {
            extra_ca: ca.clone(),
            ..HttpConfig::default()
        };
        let (target, batch) = match self {
            SinkConfig::Clickhouse {
                url,
                database,
                table,
                retention_days,
                user,
                password_file,
                ca_file,
                cluster,
                batch,
                ..
            } => {
                let mut h = http(ca_file);
                if let Some(user) = user {
                    let password = match password_file {
                        Some(p) => secret_file("password_file", p)?,
                        None => String::new(),
                    };
                    h.auth = Auth::Basic {
                        user: user.clone(),
                        password: password.into(),
                    };
                }
                let c = kubetrail_sinks::clickhouse::ClickHouse::new(
                    kubetrail_sinks::clickhouse::ClickHouseConfig {
                        url: url.clone(),
                        database: database.clone(),
                        table: table.clone(),
                        retention_days: *retention_days,
                        cluster: cluster.clone(),
                        http: h,
                    },
                )
                .with_context(|| format!("sinks: `{name}`"))?;
                (Target::ClickHouse(c), batch)
            }
            SinkConfig::S3 {
                endpoint,
                bucket,
                region,
                prefix,
                object_lock,
                manifest_secs,
                parquet,
                parquet_after_secs,
                ocsf,
                access_key_id,
                secret_access_key_file,
                ca_file,
                batch,
                ..
            } => {
                if object_lock.retain_days == 0 {
                    bail!("sinks: `{name}`: object_lock.retain_days must be at least 1");
                }
                let credentials = match (access_key_id, secret_access_key_file) {
                    (Some(id), Some(f)) => Some(kubetrail_sinks::s3::Credentials::new(
                        id,
                        &secret_file("secret_access_key_file", f)?,
                    )),
                    (None, None) => None,
                    _ => bail!(
                        "sinks: `{name}`: give both access_key_id and secret_access_key_file, or neither (the standard chain)"
                    ),
                };
                let s3 = kubetrail_sinks::s3::S3::new(kubetrail_sinks::s3::S3Config {
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    bucket: bucket.clone(),
                    path_style: None,
                    credentials,
                    http: http(ca_file),
                })
                .with_context(|| format!("sinks: `{name}`"))?;
                let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                    prefix.clone()
                } else {
                    format!("{prefix}/")
                };
                let mut archive = crate::shipping::archive::Archive::new(
                    s3,
                    prefix,
                    match object_lock.mode {
                        LockModeConfig::Compliance => kubetrail_sinks::s3::LockMode::Compliance,
                        LockModeConfig::Governance => kubetrail_sinks::s3::LockMode::Governance,
                    },
                    object_lock.retain_days,
                    object_lock.legal_hold,
                );
                if let Some(secs) = manifest_secs {
                    if !(1..=3600).contains(secs) {
                        bail!("sinks: `{name}`: manifest_secs must be 1 to 3600");
                    }
                    archive.manifest_every = Duration::from_secs(*secs);
                }
                archive.parquet_after =
                    parquet.then(|| Duration::from_secs(parquet_after_secs.unwrap_or(1800)));
                if let Some(o) = ocsf {
                    let fine = |v: &str| {
                        !v.is_empty()
                            && v.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    };
                    if !fine(&o.source_name) {
                        bail!(
                            "sinks: `{name}`: ocsf.source_name `{}` must be letters, digits, `-` and `_` (Security Lake's custom source name)",
                            o.source_name
                        );
                    }
                    if o.account_id.len() != 12 || !o.account_id.chars().all(|c| c.is_ascii_digit())
                    {
                        bail!(
                            "sinks: `{name}`: ocsf.account_id `{}` is not a 12-digit AWS account id",
                            o.account_id
                        );
                    }
                    let region = o.region.clone().unwrap_or_else(|| region.clone());
                    if !fine(&region) {
                        bail!("sinks: `{name}`: ocsf.region `{region}` is not an AWS region");
                    }
                    archive.ocsf = Some(kubetrail_sinks::ocsf::LakeSource {
                        source_name: o.source_name.clone(),
                        region,
                        account_id: o.account_id.clone(),
                    });
                }
                (Target::Archive(Box::new(archive)), batch)
            }
            SinkConfig::Elasticsearch {
                url,
                index,
                data_stream,
                user,
                password_file,
                api_key_file,
                ca_file,
                batch,
                ..
            } => {
                use kubetrail_sinks::elasticsearch as es;
                let mut h = http(ca_file);
                h.auth = match (user, password_file, api_key_file) {
                    (Some(user), p, None) => Auth::Basic {
                        user: user.clone(),
                        password: match p {
                            Some(p) => secret_file("password_file", p)?,
                            None => String::new(),
                        }
                        .into(),
                    },
                    (None, None, Some(k)) => {
                        Auth::Raw(format!("ApiKey {}", secret_file("api_key_file", k)?).into())
                    }
                    (None, None, None) => Auth::None,
                    _ => bail!(
                        "sinks: `{name}`: give user (and password_file), or api_key_file, not both"
                    ),
                };
                let target = if *data_stream {
                    es::Target::DataStream(index.clone())
                } else {
                    es::Target::DailyIndex(index.clone())
                };
                let e = es::Elasticsearch::new(es::ElasticsearchConfig {
                    url: url.clone(),
                    target,
                    http: h,
                })
                .with_context(|| format!("sinks: `{name}`"))?;
                (Target::Elasticsearch(e), batch)
            }
            SinkConfig::SplunkHec {
                url,
                token_file,
                index,
                ack,
                ca_file,
                batch,
                ..
            } => {
                use kubetrail_sinks::splunk;
                let mut c =
                    splunk::SplunkConfig::new(url, secret_file("token_file", token_file)?.into());
                c.index = index.clone();
                c.ack = ack.then(splunk::Ack::default);
                c.http = http(ca_file);
                let s = splunk::Splunk::new(c).with_context(|| format!("sinks: `{name}`"))?;
                (Target::Splunk(s), batch)
            }
            SinkConfig::Syslog {
                address,
                tls,
                format,
                facility,
                ca_file,
                server_name,
                batch,
                ..
            } => {
                use kubetrail_sinks::syslog;
                let mut c = syslog::SyslogConfig::new(
                    address,
                    match format {
                        SyslogFormat::Rfc5424 => syslog::Format::Json,
                        SyslogFormat::Cef => syslog::Format::Cef,
                    },
                );
                if let Some(f) = facility {
                    c.facility = syslog::facility(f).with_context(|| {
                        format!("sinks: `{name}`: `{f}` is not a syslog facility (local0 .. local7, authpriv, ...)")
                    })?;
                }
                if *tls {
                    c.tls = Some(syslog::SyslogTls {
                        extra_ca: ca_file.clone(),
                        server_name: server_name.clone(),
                    });
                } else if ca_file.is_some() || server_name.is_some() {
                    bail!("sinks: `{name}`: ca_file and server_name need tls: true");
                }
                let s = syslog::Syslog::new(c).with_context(|| format!("sinks: `{name}`"))?;
                (Target::Syslog(s), batch)
            }
        };
        Ok(Sink {
            name,
            kind: self.kind(),
            target,
            batching: batching(batch)?,
        })
    }
}

/// Every sink, with unique, file-safe names.
/// Builds every configured sink; `replica` (this collector's name among replicas sharing an archive) puts
/// each S3 archive under `<prefix>replica=<name>/`.
pub fn build_all(configs: &[SinkConfig], replica: Option<&str>) -> anyhow::Result<Vec<Sink>> {
    let mut out: Vec<Sink> = Vec::new();
    for c in configs {
        let mut s = c.build()?;
        if let (Some(r), Target::Archive(a)) = (replica, &mut s.target) {
            a.set_replica(r);
        }
        let ok = !s.name.is_empty()
            && s.name.len() <= 60
            && s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !ok {
            bail!(
                "sinks: name `{}` must be 1 to 60 letters, digits, `-` or `_`",
                s.name
            );
        }
        if out.iter().any(|o| o.name == s.name) {
            bail!(
                "sinks: two sinks are named `{}`: give each a distinct `name`",
                s.name
            );
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> anyhow::Result<Vec<Sink>> {
        let cfg: Vec<SinkConfig> =
            serde_saphyr::from_str(yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
        build_all(&cfg, None)
    }

    #[test]
    fn every_sink_type_builds_with_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "00000000-0000-0000-0000-000000000000\n").unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let sinks = parse(&format!(
            "- {{type: clickhouse, url: 'http://127.0.0.1:8123'}}\n\
             - {{type: s3, bucket: audit-archive, access_key_id: AKID, secret_access_key_file: {}, object_lock: {{mode: governance, retain_days: 30}}}}\n\
             - {{type: elasticsearch, url: 'http://127.0.0.1:9200', index: kube-audit, data_stream: true}}\n\
             - {{type: splunk_hec, url: 'https://127.0.0.1:8088', token_file: {}, ack: true}}\n\
             - {{type: syslog, address: '127.0.0.1:6514', format: cef, facility: authpriv, batch: {{flush_secs: 1}}}}\n",
            secret.display(),
            token.display()
        ))
        .unwrap();
        let kinds: Vec<(&str, &str)> = sinks.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("clickhouse", "clickhouse"),
                ("s3", "s3"),
                ("elasticsearch", "elasticsearch"),
                ("splunk_hec", "splunk_hec"),
                ("syslog", "syslog")
            ]
        );
        assert_eq!(
            sinks[0].batching.flush,
            Duration::from_secs(5),
            "default flush"
        );
        assert_eq!(sinks[4].batching.flush, Duration::from_secs(1));
        match &sinks[1].target {
            Target::Archive(a) => {
                assert_eq!(a.mode, kubetrail_sinks::s3::LockMode::Governance);
                assert_eq!(a.retain_days, 30);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mistakes_are_named() {
        let err = |yaml: &str| format!("{:#}", parse(yaml).expect_err("an error"));
        assert!(
            err(
                "- {type: clickhouse, url: 'http://x:1'}\n- {type: clickhouse, url: 'http://y:1'}\n"
            )
            .contains("two sinks are named `clickhouse`")
        );
        assert!(
            err("- {type: s3, bucket: audit-archive, access_key_id: x, secret_access_key_file: /dev/null, object_lock: {mode: compliance, retain_days: 0}}\n")
                .contains("retain_days must be at least 1")
        );
        assert!(
            err("- {type: syslog, address: 'h:1', facility: local9}\n")
                .contains("not a syslog facility")
        );
        assert!(err("- {type: s3, bucket: audit-archive, access_key_id: x, object_lock: {mode: compliance, retain_days: 1}}\n")
            .contains("secret_access_key_file"));
        assert!(
            err("- {type: clickhouse, url: 'http://x:1', name: 'a b'}\n").contains("name `a b`")
        );
        assert!(
            err("- {type: clickhouse, url: 'http://x:1', batch: {max_events: 0}}\n")
                .contains("max_events")
        );
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let s3 = |ocsf: &str| {
            format!(
                "- {{type: s3, bucket: audit-lake, access_key_id: x, secret_access_key_file: {}, \
                 object_lock: {{mode: compliance, retain_days: 1}}, ocsf: {ocsf}}}\n",
                secret.display()
            )
        };
        let e = err(&s3("{source_name: 'a b', account_id: '123456789012'}"));
        assert!(e.contains("ocsf.source_name `a b`"), "{e}");
        assert!(
            err(&s3("{source_name: kt, account_id: '12345'}"))
                .contains("`12345` is not a 12-digit AWS account id")
        );
        assert!(
            err(&s3(
                "{source_name: kt, account_id: '123456789012', region: 'eu west'}"
            ))
            .contains("ocsf.region `eu west`")
        );
        assert!(err(&s3("{source_name: kt}")).contains("account_id"));
        let ok = parse(&s3("{source_name: kt, account_id: '123456789012'}")).unwrap();
        match &ok[0].target {
            Target::Archive(a) => {
                let src = a.ocsf.as_ref().expect("ocsf set");
                assert_eq!(src.region, "us-east-1", "the sink's region by default");
            }
            other => panic!("{other:?}"),
        }
    }
}
