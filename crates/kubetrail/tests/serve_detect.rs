//! Live detection in `kubetrail serve`: an event posted to the webhook is evaluated from the log once durable,
//! its alert appended to `DATA/alerts/alerts.jsonl`; a restart resumes from the detection cursor without
//! alerting twice; a config whose rules do not load refuses to start.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// SIGTERM and wait: a clean shutdown.
    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn curl(port: u16, path: &str, body: Option<&str>) -> u16 {
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

fn start(config: &Path, log: &Path, port: u16) -> Server {
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(port, "/readyz", None) != 200 {
        assert!(
            Instant::now() < deadline,
            "serve did not become ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn alerts(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("alerts/alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn serve_alerts_on_stored_events_and_resumes_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules");
    let data = tmp.path().join("data");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tmp.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ndetection:\n  builtin: false\n  rules: [{}]\n",
            data.display(),
            rules.display()
        ),
    )
    .unwrap();
    let positive = std::fs::read_to_string(rules.join("secrets-listed.positive.jsonl")).unwrap();
    let negative = std::fs::read_to_string(rules.join("secrets-listed.negative.jsonl")).unwrap();

    let server = start(&config, &tmp.path().join("serve-1.log"), port);
    assert_eq!(curl(port, "/k8s-audit", Some(&negative)), 200);
    assert_eq!(curl(port, "/k8s-audit", Some(&positive)), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts(&data).is_empty() {
        assert!(Instant::now() < deadline, "no alert written in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    let written = alerts(&data);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0]["rule"]["id"], "test-secrets-listed");
    assert_eq!(written[0]["actor"]["username"], "eve@example.com");
    assert_eq!(
        written[0]["auditIDs"][0],
        "5a1c0e55-0000-4000-8000-000000000001"
    );
    let log = std::fs::read_to_string(tmp.path().join("serve-1.log")).unwrap();
    assert!(log.contains("detecting with 1 rules"), "{log}");

    // A restart resumes after what was evaluated: the stored events do not alert again.
    let server = start(&config, &tmp.path().join("serve-2.log"), port);
    assert_eq!(curl(port, "/k8s-audit", Some(&negative)), 200);
    // A clean stop evaluates everything stored before it exits.
    server.stop();
    assert_eq!(alerts(&data).len(), 1, "{:?}", alerts(&data));

    // Rules that do not load: serve refuses to start and says where.
    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "title: Bad\nid: bad\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel: {verb|nope: get}\n  condition: sel\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ndetection:\n  builtin: false\n  rules: [{}]\n",
            data.display(),
            bad.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml:5:"), "{err}");
}
