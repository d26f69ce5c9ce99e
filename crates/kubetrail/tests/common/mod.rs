//! Helpers the `serve` end-to-end tests share: free ports, `curl`, starting `kubetrail serve` and waiting
//! until it is ready, an alert destination that reports what it received. Each test binary uses some of
//! them.
#![allow(dead_code)]

pub mod services;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");

/// A port nothing listens on right now, and never handed out before in this process: the kernel may give a
/// port back as soon as its probe closed, and two servers of one test (a ClickHouse cluster's shards, one's
/// interserver port the other's native port) would then race for it, one failing on every retry.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `curl` on loopback: the HTTP status (0 when there was no answer); `body` is POSTed as JSON.
pub fn curl(port: u16, path: &str, body: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "30",
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Starts `kubetrail serve --config CONFIG ARGS...` (stderr to `log`) and waits until `/readyz` answers 200
/// on `port`, at most 30 s; panics with the log if it exits first or never gets ready.
pub fn serve(config: &Path, args: &[&str], log: &Path, port: u16) -> Child {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(port, "/readyz", None) != 200 {
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kubetrail serve exited with {status}:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "serve did not become ready:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// A config for `serve` on `port` storing in `data`, detecting with the rules under `rules` only.
pub fn config(dir: &Path, port: u16, rules: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("kubetrail.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ndetection:\n  builtin: false\n  rules: [{}]\n{extra}",
            dir.join("data").display(),
            rules.display()
        ),
    )
    .unwrap();
    path
}

/// The rules and fixtures the detection tests use.
pub fn test_rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

/// A receiver answering 200 to every POST /hook, reporting each alert body.
pub fn receiver() -> (u16, Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(Request { body, .. }) =
                read_request(&stream).filter(|r| r.method == "POST" && r.path == "/hook")
            else {
                continue;
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            if tx
                .send(serde_json::from_slice(&body).unwrap_or(Value::Null))
                .is_err()
            {
                return;
            }
        }
    });
    (port, rx)
}

/// One HTTP/1.1 request as the test receivers read it.
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (lower case), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Reads one request (its head and its `Content-Length` body) from `stream`; `None` when it is not one.
pub fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut first = line.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let len: usize = match request.header("content-length") {
        "" => 0,
        n => n.parse().ok()?,
    };
    request.body = vec![0; len];
    r.read_exact(&mut request.body).ok()?;
    Some(request)
}

/// A destination that refuses every request for good (HTTP 400, as a revoked or misconfigured webhook
/// answers): its port.
pub fn refusing() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if read_request(&stream).is_none() {
                continue;
            }
            let answer = r#"{"error":"invalid_payload"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

/// `curl -k` over HTTPS (on 127.0.0.1) with a bearer token (or a cookie): (status, body).
pub fn https(port: u16, path: &str, token: Option<&str>, cookie: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "30", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(c) = cookie {
        cmd.args(["-H", &format!("Cookie: {c}")]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.parse().unwrap_or(0), body.to_string())
}

/// A self-signed certificate for 127.0.0.1 valid for `days`, and its key, written to `cert` and `key` (by
/// way of new files moved over the old, as the kubelet swaps a Secret's files).
pub fn write_cert(cert: &Path, key: &Path, days: u32) {
    let new =
        |p: &Path| p.with_file_name(format!("{}.new", p.file_name().unwrap().to_string_lossy()));
    let (new_cert, new_key) = (new(cert), new(key));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=kubetrail-reload-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-days", &days.to_string(), "-keyout"])
        .arg(&new_key)
        .arg("-out")
        .arg(&new_cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&new_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&new_key, key).unwrap();
    std::fs::rename(&new_cert, cert).unwrap();
}

/// `serve` under TLS: ready once `/healthz` answers over HTTPS.
pub struct ServeOverTls(Child);

impl ServeOverTls {
    pub fn start(config: &Path, log: &Path, port: u16) -> ServeOverTls {
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let server = ServeOverTls(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while https(port, "/healthz", None, None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "serve did not become ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServeOverTls {
    fn drop(&mut self) {
        self.stop();
    }
}

/// POSTs an EventList to `port`'s webhook: true only on 200 (an acknowledgement).
pub fn send(port: u16, body: &str) -> bool {
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://127.0.0.1:{port}/k8s-audit"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    out.stdout == b"200"
}

/// JSON lines as the apiserver's webhook batches them: an EventList of the items.
pub fn event_list(lines: &[&str]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        lines.join(",")
    )
}
