//! Shared by the sink tests: fixtures, free ports, and the real servers the tests start (killed on drop).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubetrail_sinks::Record;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The fixture events (one JSON object per line) with ids (`<auditID>-<stage>`; the runtime adds a content
/// digest, which the sinks do not look into).
pub struct Events {
    pub lines: Vec<String>,
    pub ids: Vec<String>,
}

pub fn events() -> Events {
    let text = include_str!("../fixtures/events.jsonl");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let ids = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}-{}",
                v["auditID"].as_str().unwrap(),
                v["stage"].as_str().unwrap()
            )
        })
        .collect();
    Events { lines, ids }
}

impl Events {
    pub fn records(&self, cluster: &'static str) -> Vec<Record<'_>> {
        self.lines
            .iter()
            .zip(&self.ids)
            .enumerate()
            .map(|(i, (event, id))| Record {
                id,
                cluster,
                received_us: 1_700_000_000_000_000 + i as i64,
                event,
            })
            .collect()
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Polls `ready` every 20 ms until it holds, the child exits (fail with `log`) or 60 s pass (fail).
fn wait_until(child: &mut Child, what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited ({status}) before it was ready; its log:\n{log}");
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} not ready within 60 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process killed (and reaped) on drop, with its temporary directory.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn need(binary: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|p| p.join(binary))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{binary}` is missing: install it (`{package}`; scripts/test does) to run this test"
        )
    })
}

impl Server {
    /// Debian's clickhouse-server on 127.0.0.1, as the `clickhouse` user over a throwaway data directory.
    pub fn clickhouse() -> Server {
        let bin = need("clickhouse-server", "apt-get install clickhouse-server");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["data", "tmp", "uf", "fs"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let chown = Command::new("chown")
            .args(["-R", "clickhouse:clickhouse"])
            .arg(d)
            .status()
            .unwrap();
        assert!(
            chown.success(),
            "chown of the ClickHouse data directory failed (run as root)"
        );
        let (port, tcp_port, interserver) = (free_port(), free_port(), free_port());
        let p = |s: &str| format!("{}/{s}", d.display());
        let mut child = Command::new("setpriv")
            .args(["--reuid=clickhouse", "--regid=clickhouse", "--init-groups"])
            .arg(&bin)
            .args([
                "--config-file=/etc/clickhouse-server/config.xml".to_string(),
                "--".into(),
                format!("--path={}/", p("data")),
                format!("--tmp_path={}/", p("tmp")),
                format!("--user_files_path={}/", p("uf")),
                format!("--format_schema_path={}/", p("fs")),
                format!("--logger.log={}", p("s.log")),
                format!("--logger.errorlog={}", p("e.log")),
                "--logger.console=0".into(),
                "--listen_host=127.0.0.1".into(),
                format!("--http_port={port}"),
                format!("--tcp_port={tcp_port}"),
                format!("--interserver_http_port={interserver}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setpriv starts clickhouse-server");
        let log = d.join("e.log");
        wait_until(&mut child, "clickhouse-server", &log, || {
            ping(port, "/ping").is_some_and(|b| b.starts_with("Ok"))
        });
        Server { child, port, dir }
    }

    /// `moto_server` (PyPI `moto[server]`) on 127.0.0.1; with `Some(n)`, checking signatures and IAM permissions
    /// after its first `n` requests (`INITIAL_NO_AUTH_ACTION_COUNT`; ready checks don't count).
    pub fn moto(unauthenticated: Option<u32>) -> Server {
        let bin = need("moto_server", "pip install 'moto[server]'");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("moto.log");
        let mut cmd = Command::new(bin);
        if let Some(n) = unauthenticated {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let mut child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .expect("moto_server starts");
        wait_until(
            &mut child,
            "moto_server",
            &dir.path().join("moto.err"),
            || ping(port, "/moto-api/").is_some(),
        );
        Server { child, port, dir }
    }

    /// rsyslogd in the foreground with `conf` (its `{DIR}` replaced by the temporary directory, `{PORT}` and
    /// `{TLS_PORT}` by free ports); ready when both ports accept connections.
    pub fn rsyslog(conf: &str) -> (Server, u16) {
        let bin = need("rsyslogd", "apt-get install rsyslog rsyslog-gnutls");
        let dir = tempfile::tempdir().unwrap();
        let (port, tls_port) = (free_port(), free_port());
        let conf = conf
            .replace("{DIR}", &dir.path().display().to_string())
            .replace("{TLS_PORT}", &tls_port.to_string())
            .replace("{PORT}", &port.to_string());
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = dir.path().join("rsyslogd.log");
        let mut child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("rsyslogd.err")).unwrap())
            .spawn()
            .expect("rsyslogd starts");
        wait_until(
            &mut child,
            "rsyslogd",
            &dir.path().join("rsyslogd.err"),
            || listening(port) && listening(tls_port),
        );
        (Server { child, port, dir }, tls_port)
    }
}

/// POSTs a form with `headers` on 127.0.0.1:`port` (HTTP/1.0): the answer's body.
pub fn post_form(port: u16, headers: &str, form: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// GET `path` on 127.0.0.1:`port` with a bare HTTP/1.0 request: the body, or `None` if nothing answered.
pub fn ping(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}
