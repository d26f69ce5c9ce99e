//! The collector end to end, as a new user tries it: `kubetrail setup webhook`, `kubetrail serve` with the
//! config it wrote, the apiserver's batches posted over mutual TLS with `curl`, kill -9 mid-stream and a
//! restart; and `kubetrail serve --file` following an audit log across rotation and a crash. What is stored is
//! read back from the write-ahead log, and its raw bytes are searched for secret values.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubetrail_gen::{Config, Generator};
use kubetrail_store::{EventRecord, Wal, WalOptions};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to reach a server with `curl`: its base URL and the TLS arguments (none for plain HTTP).
#[derive(Clone)]
struct Client {
    base: String,
    tls: Vec<String>,
}

impl Client {
    fn http(port: u16) -> Client {
        Client {
            base: format!("http://127.0.0.1:{port}"),
            tls: Vec::new(),
        }
    }

    /// Mutual TLS with the files `setup webhook` wrote in `dir` (or another directory's client pair).
    fn mtls(port: u16, ca: &Path, cert: Option<(&Path, &Path)>) -> Client {
        let mut tls = vec!["--cacert".to_string(), ca.display().to_string()];
        if let Some((cert, key)) = cert {
            tls.extend([
                "--cert".to_string(),
                cert.display().to_string(),
                "--key".to_string(),
                key.display().to_string(),
            ]);
        }
        Client {
            base: format!("https://127.0.0.1:{port}"),
            tls,
        }
    }

    fn curl(&self, path: &str, extra: &[&str]) -> Output {
        Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .args(&self.tls)
            .args(extra)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl is installed")
    }

    /// `GET path`: (curl's exit code, body).
    fn get(&self, path: &str) -> (i32, String) {
        let out = self.curl(path, &["--fail"]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `POST /k8s-audit` of a file, as the apiserver's webhook does: Ok(HTTP status) or Err(curl's exit code
    /// and message) when there was no HTTP answer (refused, handshake failure, connection cut).
    fn post(&self, body: &Path) -> Result<u16, (i32, String)> {
        let data = format!("@{}", body.display());
        let out = self.curl(
            "/k8s-audit",
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &data,
            ],
        );
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            return Err((code, String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
    }

    /// The sum of a metric's samples (over all its labels) in `/metrics`, if it is there.
    fn metric(&self, name: &str) -> Option<f64> {
        let (code, text) = self.get("/metrics");
        assert_eq!(code, 0, "GET /metrics failed");
        metric(&text, name)
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let series_name = series.split('{').next().unwrap();
        if series_name == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

/// `kubetrail serve`, killed with SIGKILL when dropped so a failing test leaves nothing running. Its stderr
/// goes to a file, shown when it fails to start.
struct Server {
    child: Child,
    stderr: PathBuf,
}

impl Server {
    fn start(args: &[&str], log_dir: &Path, ready: &Client) -> Server {
        let n = std::fs::read_dir(log_dir).unwrap().count();
        let stderr = log_dir.join(format!("serve-{n}.stderr"));
        let child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "kubetrail serve exited with {status} before it was ready:\n{}",
                    server.stderr_text()
                );
            }
            if ready.get("/readyz").0 == 0 {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "kubetrail serve not ready after 30 s:\n{}",
                server.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record in the write-ahead log of `data`: (auditID/stage) -> (times stored, cluster, event JSON).
fn stored(data: &Path) -> HashMap<String, (usize, String, Value)> {
    let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
    let mut seen: HashMap<String, (usize, String, Value)> = HashMap::new();
    for item in wal.read_from(0).unwrap() {
        let (_, payload) = item.unwrap();
        let r = EventRecord::decode(&payload).unwrap();
        let event: Value = serde_json::from_str(&r.event).unwrap();
        let e = seen
            .entry(format!("{}/{}", r.audit_id, r.stage))
            .or_insert((0, r.cluster.to_string(), event));
        e.0 += 1;
    }
    seen
}

/// The raw bytes of every file under `dir`, recursively (segments, checkpoints, everything).
fn raw_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(raw_files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `auditID/stage` of a native event.
fn key(event: &Value) -> String {
    format!(
        "{}/{}",
        event["auditID"].as_str().unwrap(),
        event["stage"].as_str().unwrap()
    )
}

/// The apiserver's webhook body: an EventList whose items carry no kind/apiVersion.
fn event_list(events: &[Value]) -> Vec<u8> {
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let o = e.as_object_mut().unwrap();
            o.remove("kind");
            o.remove("apiVersion");
            e
        })
        .collect();
    serde_json::to_vec(&json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "metadata": {},
        "items": items,
    }))
    .unwrap()
}

fn generated(seed: u64, n: usize) -> Vec<Value> {
    Generator::new(Config {
        seed,
        attacks: true,
        ..Config::default()
    })
    .take(n)
    .map(|e| serde_json::from_str(&e).unwrap())
    .collect()
}

const PASSWORD: &str = "hunter2-very-secret";
const STRING_DATA: &str = "sk-live-stringdata-value-42";
const LISTED: &str = "another-listed-secret-value";
const ISSUED_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.issued-serviceaccount-token.c2lnbmF0dXJl";
const URI_TOKEN: &str = "uri-bearer-token-value-99";

fn base_event(id: &str, stage: &str, level: &str, verb: &str, uri: &str) -> Value {
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": id,
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.7"],
        "userAgent": "kubectl/v1.31.0",
        "requestReceivedTimestamp": "2026-11-25T10:00:00.000000Z",
        "stageTimestamp": "2026-11-25T10:00:00.010000Z",
    })
}

/// The events that carry secret material, each at the level that logs it.
fn sensitive_events() -> Vec<Value> {
    let secret = json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "db-creds", "namespace": "prod"},
        "type": "Opaque",
        "data": {"password": base64(PASSWORD.as_bytes())},
        "stringData": {"api-key": STRING_DATA},
    });
    let secret_ref =
        json!({"resource": "secrets", "namespace": "prod", "name": "db-creds", "apiVersion": "v1"});
    let mut received = base_event(
        "e2e-secret-create",
        "RequestReceived",
        "RequestResponse",
        "create",
        "/api/v1/namespaces/prod/secrets",
    );
    received["objectRef"] = secret_ref.clone();
    received["requestObject"] = secret.clone();
    let mut create = received.clone();
    create["stage"] = json!("ResponseComplete");
    create["responseStatus"] = json!({"metadata": {}, "code": 201});
    create["responseObject"] = json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "db-creds", "namespace": "prod", "uid": "0b6f0e2c-1111-2222-3333-444455556666"},
        "type": "Opaque",
        "data": {
            "password": base64(PASSWORD.as_bytes()),
            "api-key": base64(STRING_DATA.as_bytes()),
        },
    });

    let mut list = base_event(
        "e2e-secret-list",
        "ResponseComplete",
        "RequestResponse",
        "list",
        "/api/v1/namespaces/prod/secrets?limit=500",
    );
    list["objectRef"] = json!({"resource": "secrets", "namespace": "prod", "apiVersion": "v1"});
    list["responseStatus"] = json!({"metadata": {}, "code": 200});
    list["responseObject"] = json!({
        "kind": "SecretList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "4711"},
        "items": [
            {"metadata": {"name": "db-creds", "namespace": "prod"}, "type": "Opaque",
             "data": {"password": base64(PASSWORD.as_bytes())}},
            {"metadata": {"name": "ci-token", "namespace": "prod"}, "type": "Opaque",
             "data": {"token": base64(LISTED.as_bytes())}},
        ],
    });

    let mut token = base_event(
        "e2e-token-request",
        "ResponseComplete",
        "RequestResponse",
        "create",
        "/api/v1/namespaces/prod/serviceaccounts/builder/token",
    );
    token["objectRef"] = json!({"resource": "serviceaccounts", "subresource": "token", "namespace": "prod",
                                "name": "builder", "apiVersion": "v1"});
    token["responseStatus"] = json!({"metadata": {}, "code": 201});
    token["requestObject"] = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                                    "metadata": {}, "spec": {"audiences": ["https://kubernetes.default.svc"],
                                    "expirationSeconds": 3600}});
    token["responseObject"] = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                                     "metadata": {"name": "builder", "namespace": "prod"},
                                     "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
                                     "status": {"token": ISSUED_TOKEN, "expirationTimestamp": "2026-11-25T11:00:00Z"}});

    let mut uri = base_event(
        "e2e-uri-token",
        "ResponseComplete",
        "Metadata",
        "list",
        &format!("/api/v1/namespaces/prod/pods?access_token={URI_TOKEN}&limit=10"),
    );
    uri["objectRef"] = json!({"resource": "pods", "namespace": "prod", "apiVersion": "v1"});
    uri["responseStatus"] = json!({"metadata": {}, "code": 200});
    vec![received, create, list, token, uri]
}

/// The secret values (and their base64) that must never reach disk.
fn forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for v in [PASSWORD, STRING_DATA, LISTED, ISSUED_TOKEN, URI_TOKEN] {
        out.push(v.to_string());
        // Unpadded, so that any base64 encoding of the value is caught whatever padding it got.
        out.push(base64(v.as_bytes()).trim_end_matches('=').to_string());
    }
    out
}

fn setup_webhook(out: &Path, port: u16) {
    let status = Command::new(BIN)
        .args(["setup", "webhook", "--out"])
        .arg(out)
        .args([
            "--url",
            &format!("https://127.0.0.1:{port}/k8s-audit"),
            "--server-name",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "setup webhook failed");
}

fn is_marker(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with("kubetrail-redacted:len="))
}

#[test]
fn webhook_over_mutual_tls_from_setup_to_kill_9_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (pki, data, logs, bodies) = (
        root.join("webhook"),
        root.join("data"),
        root.join("logs"),
        root.join("bodies"),
    );
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&bodies).unwrap();
    let port = free_port();
    setup_webhook(&pki, port);
    let config = pki.join("kubetrail.yaml");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains(&format!("listen: \"0.0.0.0:{port}\"")),
        "the generated config listens on all interfaces"
    );

    let ca = pki.join("ca.crt");
    let (cert, key_file) = (pki.join("client.crt"), pki.join("client.key"));
    let client = Client::mtls(port, &ca, Some((&cert, &key_file)));
    let serve_args = [
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    let server = Server::start(&serve_args, &logs, &client);

    // Health, over mutual TLS.
    assert_eq!(client.get("/healthz").0, 0, "GET /healthz");

    // The sensitive batch first.
    let sensitive = sensitive_events();
    let sensitive_body = bodies.join("sensitive.json");
    std::fs::write(&sensitive_body, event_list(&sensitive)).unwrap();
    assert_eq!(client.post(&sensitive_body), Ok(200), "sensitive batch");

    // A client without a certificate, and one whose certificate (same CN) comes from another CA: refused,
    // and nothing they sent is stored.
    let intruder = vec![base_event(
        "e2e-intruder",
        "ResponseComplete",
        "Metadata",
        "delete",
        "/api/v1/namespaces/prod/events",
    )];
    let intruder_body = bodies.join("intruder.json");
    std::fs::write(&intruder_body, event_list(&intruder)).unwrap();
    // Without a certificate the TLS handshake completes (kubelet probes and load balancers need /healthz), but
    // the webhook is refused with 401.
    let no_cert = Client::mtls(port, &ca, None);
    assert_eq!(
        no_cert.post(&intruder_body),
        Ok(401),
        "a client without a certificate"
    );
    assert_eq!(
        no_cert.get("/healthz").0,
        0,
        "health probes need no certificate"
    );
    let other = root.join("other-ca");
    setup_webhook(&other, port);
    let other_client = Client::mtls(
        port,
        &ca,
        Some((&other.join("client.crt"), &other.join("client.key"))),
    );
    match other_client.post(&intruder_body) {
        Err((code, _)) => assert_ne!(code, 0),
        Ok(status) => panic!("a client with another CA's certificate got HTTP {status}"),
    }
    assert_ne!(other_client.get("/healthz").0, 0, "other CA, /healthz");

    // Metrics over loopback.
    let persisted = client.metric("kubetrail_events_persisted_total");
    assert_eq!(persisted, Some(sensitive.len() as f64), "events persisted");
    let redactions = client.metric("kubetrail_redactions_total").unwrap_or(0.0);
    assert!(
        redactions >= 5.0,
        "kubetrail_redactions_total is {redactions}"
    );

    // The stream: batches from several connections, kill -9 once some are acknowledged.
    let all: Vec<(Vec<String>, PathBuf)> = generated(23, 160 * 40)
        .chunks(40)
        .enumerate()
        .map(|(i, events)| {
            let path = bodies.join(format!("batch-{i}.json"));
            std::fs::write(&path, event_list(events)).unwrap();
            (events.iter().map(key).collect(), path)
        })
        .collect();
    let all = Arc::new(all);
    let acked = Arc::new(Mutex::new(HashSet::<usize>::new()));
    let next = Arc::new(Mutex::new(0usize));
    let posters: Vec<_> = (0..4)
        .map(|_| {
            let (all, acked, next, client) =
                (all.clone(), acked.clone(), next.clone(), client.clone());
            std::thread::spawn(move || {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    if i >= all.len() {
                        return;
                    }
                    match client.post(&all[i].1) {
                        Ok(200) => {
                            acked.lock().unwrap().insert(i);
                        }
                        Ok(code) => panic!("batch {i}: HTTP {code}"),
                        Err(_) => return, // the server died under us
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill_9();
    for p in posters {
        p.join().unwrap();
    }
    let acked_before = acked.lock().unwrap().clone();
    assert!(
        acked_before.len() >= 20,
        "only {} batches acknowledged",
        acked_before.len()
    );
    assert!(
        acked_before.len() < all.len(),
        "the kill came after everything was posted: not a crash test"
    );

    let after_crash = stored(&data);
    for e in &sensitive {
        assert!(after_crash.contains_key(&key(e)), "{} lost", key(e));
    }
    for i in &acked_before {
        for id in &all[*i].0 {
            assert!(
                after_crash.contains_key(id),
                "acknowledged event {id} of batch {i} lost in the crash"
            );
        }
    }

    // Restart; the apiserver retries every batch (those it has a 200 for, too): each stored once.
    let server = Server::start(&serve_args, &logs, &client);
    assert_eq!(client.post(&sensitive_body), Ok(200), "sensitive retry");
    for (i, (_, body)) in all.iter().enumerate() {
        assert_eq!(client.post(body), Ok(200), "batch {i} after the restart");
    }
    let duplicates = client
        .metric("kubetrail_events_duplicate_total")
        .unwrap_or(0.0);
    assert!(
        duplicates >= (sensitive.len() + 20 * 40) as f64,
        "retries of stored events counted as duplicates: {duplicates}"
    );
    server.kill_9();

    let final_ = stored(&data);
    let mut expected: HashSet<String> = all.iter().flat_map(|(ids, _)| ids.clone()).collect();
    expected.extend(sensitive.iter().map(key));
    let got: HashSet<String> = final_.keys().cloned().collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "missing: {:?}, unexpected: {:?}",
        expected.difference(&got).take(5).collect::<Vec<_>>(),
        got.difference(&expected).take(5).collect::<Vec<_>>()
    );
    assert_eq!(got, expected);
    let twice: Vec<_> = final_.iter().filter(|(_, (n, _, _))| *n > 1).collect();
    assert!(
        twice.is_empty(),
        "stored more than once: {:?}",
        twice
            .iter()
            .map(|(k, (n, _, _))| (k, n))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        !final_.contains_key("e2e-intruder/ResponseComplete"),
        "an unauthenticated client's event was stored"
    );
    assert!(
        final_
            .values()
            .all(|(_, cluster, _)| cluster == "kubernetes"),
        "the cluster of the generated config is stamped"
    );

    // Redacted where the values were, with the marker.
    let get = |k: &str| &final_[k].2;
    let create = get("e2e-secret-create/ResponseComplete");
    let password = &create["requestObject"]["data"]["password"];
    assert!(
        password
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("kubetrail-redacted:len={}:", PASSWORD.len()))),
        "requestObject.data.password: {password}"
    );
    assert!(is_marker(&create["requestObject"]["stringData"]["api-key"]));
    assert!(is_marker(&create["responseObject"]["data"]["password"]));
    assert!(is_marker(&create["responseObject"]["data"]["api-key"]));
    assert_eq!(
        create["requestObject"]["metadata"]["name"], "db-creds",
        "only values are redacted"
    );
    let received = get("e2e-secret-create/RequestReceived");
    assert!(is_marker(&received["requestObject"]["data"]["password"]));
    let list = get("e2e-secret-list/ResponseComplete");
    for item in list["responseObject"]["items"].as_array().unwrap() {
        for (k, v) in item["data"].as_object().unwrap() {
            assert!(is_marker(v), "SecretList item data.{k}: {v}");
        }
    }
    let token = get("e2e-token-request/ResponseComplete");
    assert!(is_marker(&token["responseObject"]["status"]["token"]));
    let uri = get("e2e-uri-token/ResponseComplete")["requestURI"]
        .as_str()
        .unwrap();
    assert!(
        uri.contains("access_token=kubetrail-redacted:") && uri.ends_with("&limit=10"),
        "requestURI: {uri}"
    );

    // And no secret value, nor its base64, anywhere in the bytes on disk (the log's segments included).
    let files = raw_files(&data);
    let segments: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.starts_with(data.join("wal")))
        .collect();
    assert!(!segments.is_empty(), "no file under {}", data.display());
    assert!(
        segments
            .iter()
            .any(|(_, b)| contains(b, "e2e-token-request")),
        "the raw scan reads the stored events"
    );
    assert!(
        segments
            .iter()
            .any(|(_, b)| contains(b, "kubetrail-redacted:"))
    );
    for (path, bytes) in &files {
        for needle in forbidden() {
            assert!(
                !contains(bytes, &needle),
                "`{needle}` found in {}",
                path.display()
            );
        }
    }
}

/// Appends lines to a file (created if missing).
fn append(path: &Path, lines: &[String]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_all().unwrap();
}

/// Polls `/metrics` until `name` reaches `want`, with a deadline.
fn wait_for(client: &Client, server: &mut Server, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = client.metric(name).unwrap_or(0.0);
        if got >= want {
            assert_eq!(got, want, "{name}");
            return;
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "kubetrail serve exited with {status}:\n{}",
                server.stderr_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {got} after 60 s, expected {want}:\n{}",
            server.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn audit_log_file_followed_across_rotation_and_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (logdir, data, logs) = (root.join("audit"), root.join("data"), root.join("logs"));
    std::fs::create_dir_all(&logdir).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let log = logdir.join("audit.log");
    let port = free_port();
    let client = Client::http(port);

    let events: Vec<String> = generated(31, 400)
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let keys: Vec<String> = events
        .iter()
        .map(|e| key(&serde_json::from_str(e).unwrap()))
        .collect();
    assert_eq!(
        keys.iter().collect::<HashSet<_>>().len(),
        keys.len(),
        "generated events are distinct"
    );

    append(&log, &events[..100]);
    let listen = format!("127.0.0.1:{port}");
    let serve_args = [
        "--file",
        log.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &listen,
    ];
    let mut server = Server::start(&serve_args, &logs, &client);
    wait_for(
        &client,
        &mut server,
        "kubetrail_events_persisted_total",
        100.0,
    );

    // A line that is not JSON is skipped; the lines after it are stored.
    append(&log, &events[100..150]);
    append(&log, &["this is not JSON at all {".to_string()]);
    append(&log, &events[150..200]);
    wait_for(
        &client,
        &mut server,
        "kubetrail_events_persisted_total",
        200.0,
    );
    assert_eq!(
        client.metric("kubetrail_values_skipped_total"),
        Some(1.0),
        "the malformed line is counted as skipped"
    );

    // lumberjack's rotation: rename, the old handle still gets a few lines, a new file is created.
    let rotated = logdir.join("audit-2026-11-25T10-00-00.000.log");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, &events[200..220]);
    append(&log, &events[220..270]);
    wait_for(
        &client,
        &mut server,
        "kubetrail_events_persisted_total",
        270.0,
    );
    server.kill_9();

    let after_crash = stored(&data);
    assert_eq!(after_crash.len(), 270);
    for k in &keys[..270] {
        assert_eq!(after_crash.get(k).map(|e| e.0), Some(1), "{k}");
    }

    // Restart: nothing is read twice into the log, and new lines are stored.
    let mut server = Server::start(&serve_args, &logs, &client);
    append(&log, &events[270..300]);
    wait_for(
        &client,
        &mut server,
        "kubetrail_events_persisted_total",
        30.0,
    );
    server.kill_9();

    let final_ = stored(&data);
    assert_eq!(final_.len(), 300, "every line stored");
    for k in &keys[..300] {
        assert_eq!(final_.get(k).map(|e| e.0), Some(1), "{k} stored once");
    }
    assert!(
        final_.values().all(|(_, cluster, _)| cluster == "default"),
        "events of a file are stamped with the default cluster"
    );
}
