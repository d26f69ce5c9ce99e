//! Syslog: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), or over TLS (RFC 5425), one
//! kept-open connection, re-opened after any error. The message is the audit event's JSON, or a CEF record
//! (see `cef` below); the structured data carries the record id, audit id, stage, verb, user and decision.
//!
//! PRI: the configured facility (default `local0`, 16: audit volume is high and SIEM relays route it by
//! facility; `authpriv` keeps it out of world-readable files where that matters more) and severity
//! `warning` for failed or forbidden requests, `informational` otherwise.
//!
//! TCP syslog has no acknowledgement: a write that succeeds has reached the kernel, not the server. A connection
//! the server closed is noticed before the next batch is written (a zero-byte read), so a batch is lost only if
//! the server dies between accepting its bytes and writing them out; RELP would close that gap.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::fields::{Fields, Verdict};
use crate::{Error, Outcome, Record};

/// What the message part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The audit event's JSON.
    Json,
    /// A CEF record (ArcSight Common Event Format).
    Cef,
}

/// TLS to the syslog server.
#[derive(Debug, Clone, Default)]
pub struct SyslogTls {
    /// A PEM file of CA certificates trusted in addition to the system's.
    pub extra_ca: Option<PathBuf>,
    /// The name the certificate must have; default: the address' host.
    pub server_name: Option<String>,
}

/// Configuration.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// `host:port`.
    pub address: String,
    /// TLS (RFC 5425) if set, plain TCP otherwise.
    pub tls: Option<SyslogTls>,
    /// JSON or CEF.
    pub format: Format,
    /// Facility number (0 to 23; [`facility`] maps names).
    pub facility: u8,
    /// APP-NAME (default `kubetrail`).
    pub app_name: String,
    /// SD-ID of the structured data (default `kubetrail@32473`; 32473 is the example enterprise number of
    /// RFC 5612: use your own if you have one).
    pub sd_id: String,
    /// The longest connecting or writing a batch may take.
    pub timeout: Duration,
}

impl SyslogConfig {
    /// Defaults for `address`.
    pub fn new(address: &str, format: Format) -> SyslogConfig {
        SyslogConfig {
            address: address.into(),
            tls: None,
            format,
            facility: 16,
            app_name: "kubetrail".into(),
            sd_id: "kubetrail@32473".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The number of a facility name (`kern`, `user`, ..., `authpriv`, ..., `local0` to `local7`).
pub fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|p| p as u8)
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
        }
    }

    /// Whether the server has closed the connection (it never sends anything else).
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        // A zero timeout polls the read once: pending means open and quiet.
        let read = match self {
            Conn::Plain(s) => tokio::time::timeout(Duration::ZERO, s.read(&mut buf)).await,
            Conn::Tls(s) => tokio::time::timeout(Duration::ZERO, s.read(&mut buf)).await,
        };
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// A syslog sender.
pub struct Syslog {
    cfg: SyslogConfig,
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Syslog {
    /// Checks the configuration and reads the CA files; connects to nothing.
    pub fn new(cfg: SyslogConfig) -> Result<Syslog, Error> {
        let (host, port) = cfg
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_matches(['[', ']']).to_string(),
                    p.parse::<u16>().ok()?,
                ))
            })
            .ok_or_else(|| {
                Error::Config(format!("syslog address `{}`: use host:port", cfg.address))
            })?;
        if cfg.facility > 23 {
            return Err(Error::Config(format!(
                "syslog facility {} is not 0 to 23",
                cfg.facility
            )));
        }
        let printable = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
        };
        if !printable(&cfg.app_name, 48)
            || !printable(&cfg.sd_id, 32)
            || cfg.sd_id.contains(['=', ']', '"', ' '])
        {
            return Err(Error::Config(
                "syslog app_name (up to 48) and sd_id (up to 32, no `= ] \"`) are printable ASCII"
                    .into(),
            ));
        }
        let tls = match &cfg.tls {
            Some(t) => {
                let name = t.server_name.clone().unwrap_or_else(|| host.clone());
                let name = ServerName::try_from(name.clone()).map_err(|_| {
                    Error::Config(format!("`{name}` is not a valid TLS server name"))
                })?;
                let config = crate::tls::client_config(t.extra_ca.as_deref(), &[])?;
                Some((TlsConnector::from(config), name))
            }
            None => None,
        };
        Ok(Syslog {
            cfg,
            host,
            port,
            tls,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Nothing to set up: connects on the first batch.
    pub async fn prepare(&self) -> Result<(), Error> {
        Ok(())
    }

    /// The framed messages of a batch: `LEN SP MSG` each.
    pub fn frames(&self, batch: &[Record<'_>]) -> (Vec<u8>, Vec<(usize, String)>) {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            match Fields::parse(r) {
                Ok(f) => {
                    let msg = self.message(r, &f);
                    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                    out.extend_from_slice(msg.as_bytes());
                }
                Err(why) => dead.push((i, why)),
            }
        }
        (out, dead)
    }

    /// Writes the batch on the open connection (opening it if needed).
    pub async fn send(&self, batch: &[Record<'_>]) -> Outcome {
        let (bytes, dead) = self.frames(batch);
        let sent: Vec<usize> = (0..batch.len())
            .filter(|i| !dead.iter().any(|d| d.0 == *i))
            .collect();
        if sent.is_empty() {
            return Outcome::from_parts(batch.len(), vec![], dead, String::new, None);
        }
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_mut()
            && c.closed().await
        {
            *conn = None;
        }
        if conn.is_none() {
            match tokio::time::timeout(self.cfg.timeout, self.connect()).await {
                Ok(Ok(c)) => *conn = Some(c),
                Ok(Err(why)) => return Outcome::from_parts(batch.len(), sent, dead, || why, None),
                Err(_) => {
                    let why = format!(
                        "{}: no connection within {:?}",
                        self.cfg.address, self.cfg.timeout
                    );
                    return Outcome::from_parts(batch.len(), sent, dead, || why, None);
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let why = match tokio::time::timeout(self.cfg.timeout, c.write_all(&bytes)).await {
            Ok(Ok(())) => return Outcome::from_parts(batch.len(), vec![], dead, String::new, None),
            Ok(Err(e)) => format!("{}: write failed: {e}", self.cfg.address),
            Err(_) => format!(
                "{}: write took over {:?}",
                self.cfg.address, self.cfg.timeout
            ),
        };
        *conn = None;
        Outcome::from_parts(batch.len(), sent, dead, || why, None)
    }

    async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("{}: cannot connect: {e}", self.cfg.address))?;
        tcp.set_nodelay(true).ok();
        match &self.tls {
            Some((connector, name)) => connector
                .connect(name.clone(), tcp)
                .await
                .map(|s| Conn::Tls(Box::new(s)))
                .map_err(|e| format!("{}: TLS handshake failed: {e}", self.cfg.address)),
            None => Ok(Conn::Plain(tcp)),
        }
    }

    /// One RFC 5424 message (without framing).
    fn message(&self, r: &Record<'_>, f: &Fields<'_>) -> String {
        let failure = f.success() == Verdict::Failure;
        let pri = u32::from(self.cfg.facility) * 8 + if failure { 4 } else { 6 };
        let us = f.time_us();
        let ts = jiff::Timestamp::from_second(us.div_euclid(1_000_000))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let host: String = r
            .cluster
            .bytes()
            .filter(|b| (33..=126).contains(b))
            .map(char::from)
            .take(255)
            .collect();
        let ev = &f.ev;
        let mut sd = format!(
            "[{} id=\"{}\" auditID=\"{}\" stage=\"{}\"",
            self.cfg.sd_id,
            sd_escape(r.id),
            sd_escape(&ev.audit_id),
            ev.stage.as_str()
        );
        for (k, v) in [
            ("verb", ev.verb.as_ref()),
            ("user", ev.user.username.as_ref()),
            ("decision", f.decision()),
        ] {
            if !v.is_empty() {
                sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
            }
        }
        sd.push(']');
        let msg = match self.cfg.format {
            Format::Json => r.event.trim().to_string(),
            Format::Cef => cef(r, f),
        };
        format!(
            "<{pri}>1 {}.{:06}Z {} {} - audit {sd} {msg}",
            ts.strftime("%Y-%m-%dT%H:%M:%S"),
            us.rem_euclid(1_000_000),
            if host.is_empty() { "-" } else { &host },
            self.cfg.app_name,
        )
    }
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]`.
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// CEF header field escaping: `\` and `|`; line breaks become spaces (the header is one line).
pub fn cef_header_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// CEF extension value escaping: `\`, `=`, and line breaks as `\n` / `\r`.
pub fn cef_value_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// The CEF record of an event: `CEF:0|kubetrail|kubetrail|VERSION|<verb>:<resource>|<name>|<severity>|<ext>`,
/// severity 7 when forbidden, 5 when failed, 3 otherwise; the extension has `rt` (event time, epoch ms),
/// `suser`, `src` (IPv4) or `c6a2` (IPv6), `requestClientApplication`, `request`, `act`, `outcome`, `reason`,
/// `externalId` (record id), `dvchost` (cluster), `cn1` (response code) and labelled `cs1`..`cs6` (namespace,
/// resource, audit id, stage, impersonated user, groups).
pub(crate) fn cef(r: &Record<'_>, f: &Fields<'_>) -> String {
    let ev = &f.ev;
    let resource = f.resource_path();
    let obj = ev.object_ref.clone().unwrap_or_default();
    let target = match (obj.namespace.is_empty(), obj.name.is_empty()) {
        (_, true) => String::new(),
        (true, false) => format!(" {}", obj.name),
        (false, false) => format!(" {}/{}", obj.namespace, obj.name),
    };
    let forbidden = f.decision() == "forbid" || ev.code() == Some(403);
    let severity = match f.success() {
        _ if forbidden => 7,
        Verdict::Failure => 5,
        _ => 3,
    };
    let header = format!(
        "CEF:0|kubetrail|kubetrail|{}|{}|{}|{severity}|",
        env!("CARGO_PKG_VERSION"),
        cef_header_escape(&format!("{}:{resource}", ev.verb)),
        cef_header_escape(&format!("{} {resource}{target}", ev.verb)),
    );
    let mut ext: Vec<(&str, String)> = vec![("rt", (f.time_us().div_euclid(1000)).to_string())];
    let mut push = |k: &'static str, v: &str| {
        if !v.is_empty() {
            ext.push((k, v.to_string()));
        }
    };
    push("suser", &ev.user.username);
    if let Some(ip) = ev.source_ips.first() {
        push(if ip.contains(':') { "c6a2" } else { "src" }, ip);
    }
    push("requestClientApplication", f.user_agent());
    push("request", &ev.request_uri);
    push("act", &ev.verb);
    push("outcome", f.success().as_str());
    push("reason", f.reason());
    push("externalId", r.id);
    push("dvchost", r.cluster);
    if let Some(code) = ev.code() {
        push("cn1Label", "responseCode");
        push("cn1", &code.to_string());
    }
    let groups = ev.user.groups.join(",");
    for (n, label, v) in [
        (1, "namespace", obj.namespace.as_ref()),
        (2, "resource", resource.as_str()),
        (3, "auditID", ev.audit_id.as_ref()),
        (4, "stage", ev.stage.as_str()),
        (5, "impersonatedUser", f.impersonated()),
        (6, "groups", groups.as_str()),
    ] {
        if !v.is_empty() {
            let (lk, vk): (&'static str, &'static str) = match n {
                1 => ("cs1Label", "cs1"),
                2 => ("cs2Label", "cs2"),
                3 => ("cs3Label", "cs3"),
                4 => ("cs4Label", "cs4"),
                5 => ("cs5Label", "cs5"),
                _ => ("cs6Label", "cs6"),
            };
            push(lk, label);
            push(vk, v);
        }
    }
    let ext: Vec<String> = ext
        .iter()
        .map(|(k, v)| format!("{k}={}", cef_value_escape(v)))
        .collect();
    format!("{header}{}", ext.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cef_escaping() {
        assert_eq!(cef_header_escape(r"a|b\c"), r"a\|b\\c");
        assert_eq!(cef_header_escape("line\nbreak"), "line break");
        assert_eq!(cef_value_escape("a=b\\c|d\ne\r"), r"a\=b\\c|d\ne\r");
    }

    #[test]
    fn cef_record_of_a_forbidden_request() {
        let event = r#"{"annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":"no rule = allow | deny\nhere"},"auditID":"a1","level":"Metadata","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/db?x=1","verb":"get","user":{"username":"mallory|x","groups":["devs","system:authenticated"]},"sourceIPs":["2001:db8::1"],"objectRef":{"resource":"secrets","namespace":"prod","name":"db"},"responseStatus":{"code":403},"requestReceivedTimestamp":"2024-05-01T10:00:00.123456Z"}"#;
        let r = Record {
            id: "a1-ResponseComplete",
            cluster: "prod-eu",
            received_us: 0,
            event,
        };
        let got = cef(&r, &Fields::parse(&r).unwrap());
        let want = format!(
            "CEF:0|kubetrail|kubetrail|{}|get:secrets|get secrets prod/db|7|rt=1714557600123 suser=mallory|x \
             c6a2=2001:db8::1 request=/api/v1/namespaces/prod/secrets/db?x\\=1 act=get outcome=failure \
             reason=no rule \\= allow | deny\\nhere externalId=a1-ResponseComplete dvchost=prod-eu \
             cn1Label=responseCode cn1=403 cs1Label=namespace cs1=prod cs2Label=resource cs2=secrets \
             cs3Label=auditID cs3=a1 cs4Label=stage cs4=ResponseComplete cs6Label=groups \
             cs6=devs,system:authenticated",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(got, want);
    }

    #[test]
    fn rfc5424_message_and_framing() {
        let s = Syslog::new(SyslogConfig::new("127.0.0.1:514", Format::Json)).unwrap();
        let event = r#"{"auditID":"a\"]","level":"Metadata","stage":"ResponseComplete","verb":"list","user":{"username":"bob"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2024-05-01T10:00:00.000001Z"}"#;
        let r = Record {
            id: "x",
            cluster: "prod eu",
            received_us: 0,
            event,
        };
        let (bytes, dead) = s.frames(&[r]);
        assert!(dead.is_empty());
        let text = String::from_utf8(bytes).unwrap();
        let msg = format!(
            "<134>1 2024-05-01T10:00:00.000001Z prodeu kubetrail - audit [kubetrail@32473 id=\"x\" auditID=\"a\\\"\\]\" \
             stage=\"ResponseComplete\" verb=\"list\" user=\"bob\"] {event}"
        );
        assert_eq!(text, format!("{} {msg}", msg.len()));
        assert_eq!(facility("authpriv"), Some(10));
        assert_eq!(facility("local7"), Some(23));
    }
}
