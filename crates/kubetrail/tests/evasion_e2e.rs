//! What someone inside the cluster could do to hide from the trail, tried end to end through `kubetrail serve`
//! (webhook and a followed file) and `kubetrail import`: a reused Audit-ID, an event larger than a record, and
//! a followed file whose positions used to break the integrity proofs.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{BIN, free_port};
use kubetrail_store::{EventRecord, Wal, WalOptions};
use serde_json::{Value, json};

fn request(id: &str, ns: &str, resource: &str, name: &str, second: u32) -> Value {
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": id,
        "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/{ns}/{resource}/{name}"),
        "verb": "get",
        "user": {"username": "mallory@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.9"],
        "userAgent": "kubectl/v1.31.0",
        "objectRef": {"resource": resource, "namespace": ns, "name": name, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": format!("2026-12-05T10:00:{second:02}.000000Z"),
        "stageTimestamp": format!("2026-12-05T10:00:{second:02}.004000Z"),
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    })
}

/// A `list` at RequestResponse whose response is `mib` MiB, as JSON text with the body after the metadata
/// (kube-apiserver's field order: a line cut anywhere in the body keeps the request's metadata).
fn huge_list(id: &str, mib: usize) -> String {
    let mut e = request(id, "prod", "configmaps", "", 30);
    e["verb"] = "list".into();
    e["level"] = "RequestResponse".into();
    e["requestURI"] = "/api/v1/namespaces/prod/configmaps".into();
    let meta = line(&e);
    let item = line(&json!({"metadata": {"name": "cm"}, "data": {"v": "x".repeat(1 << 20)}}));
    let items = vec![item; mib].join(",");
    format!(
        r#"{},"responseObject":{{"kind":"ConfigMapList","items":[{items}]}}}}"#,
        &meta[..meta.len() - 1]
    )
}

fn line(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

/// An EventList of events given as JSON text (kept as they are: some are tens of MiB).
fn event_list(events: &[&str]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        events.join(",")
    )
}

/// Every record of the log, in order.
fn records(data: &Path) -> Vec<EventRecord<'static>> {
    let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
    wal.read_from(0)
        .unwrap()
        .map(|r| EventRecord::decode(&r.unwrap().1).unwrap().into_owned())
        .collect()
}

fn by_id(data: &Path, id: &str) -> Vec<Value> {
    records(data)
        .iter()
        .filter(|r| r.audit_id == id)
        .map(|r| serde_json::from_str(&r.event).unwrap())
        .collect()
}

/// `kubetrail serve`, stopped with SIGKILL when dropped.
struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Serve {
    fn start(dir: &Path, files: &[&Path]) -> Serve {
        Serve::start_with(dir, dir, files)
    }

    /// With its data directory under `dir` and its log in `logs`.
    fn start_in(dir: &Path, logs: &Path) -> Serve {
        Serve::start_with(dir, logs, &[])
    }

    fn start_with(dir: &Path, logs: &Path, files: &[&Path]) -> Serve {
        let port = free_port();
        let log = logs.join(format!(
            "serve-{}.log",
            std::fs::read_dir(logs).unwrap().count()
        ));
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.join("data"));
        for f in files {
            cmd.arg("--file").arg(f);
        }
        let config = dir.join("kubetrail.yaml");
        if config.exists() {
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Serve { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::curl(port, "/readyz", None) != 200 {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("serve exited with {status}:\n{}", s.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "serve not ready:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST /k8s-audit` of `body` (from a file: bodies can be tens of MiB): the HTTP status and the answer.
    fn post(&self, dir: &Path, body: &str) -> (u16, Value) {
        let file = dir.join("body.json");
        std::fs::write(&file, body).unwrap();
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "120", "-w", "\n%{http_code}"])
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("http://127.0.0.1:{}/k8s-audit", self.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (answer, code) = text.rsplit_once('\n').unwrap();
        (
            code.trim().parse().unwrap(),
            serde_json::from_str(answer).unwrap_or(Value::Null),
        )
    }

    /// `GET path` of the API, as JSON.
    fn get_json(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn metric(&self, name: &str) -> f64 {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .sum()
    }

    /// Polls until `name` reaches `want` (and then checks it is exactly `want`).
    fn wait_for(&mut self, name: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = self.metric(name);
            if got >= want {
                assert_eq!(got, want, "{name}");
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {got}, expected {want}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `alerts.jsonl` until an alert of `rule` whose summary or auditIDs contain `needle` is there (a
    /// repeat by the same actor is an update of the first alert, with every auditID).
    fn wait_for_alert(&mut self, data: &Path, rule: &str, needle: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text =
                std::fs::read_to_string(data.join("alerts/alerts.jsonl")).unwrap_or_default();
            if let Some(a) = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|a| {
                    a["rule"]["id"] == rule
                        && (a["summary"].as_str().unwrap().contains(needle)
                            || a["auditIDs"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|i| i == needle))
                })
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no {rule} alert with `{needle}` after 60 s:\n{text}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, as systemd stops it: the final conversion and a signed checkpoint.
    fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "serve exited with {status}:\n{}",
            self.log_text()
        );
        self.log_text()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_all().unwrap();
}

fn kubetrail(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `kubetrail ARGS...`, which must succeed: its stdout.
fn kubetrail_ok(args: &[&str]) -> String {
    let out = kubetrail(args);
    assert!(
        out.status.success(),
        "kubetrail {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubetrail verify --data DATA`: its exit code and everything it printed.
fn verify(data: &Path) -> (Option<i32>, String) {
    let out = kubetrail(&["verify", "--data", data.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `kubetrail query --where 'auditID = ID'` over the store: the stored events of every stage.
fn query_id(data: &Path, id: &str) -> Vec<Value> {
    kubetrail_ok(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--where",
        &format!("auditID = \"{id}\""),
        "--all-stages",
        "--format",
        "json",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn assert_reuse_marked(events: &[Value], first: &str, second: &str) {
    assert_eq!(events.len(), 2, "both requests stored: {events:#?}");
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["objectRef"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&first) && names.contains(&second),
        "{names:?}"
    );
    let marked: Vec<&Value> = events
        .iter()
        .filter(|e| e["annotations"]["kubetrail.io/audit-id-reuse"].is_string())
        .collect();
    assert_eq!(marked.len(), 1, "the later request is marked");
    assert_eq!(marked[0]["objectRef"]["name"], second);
    let mark = marked[0]["annotations"]["kubetrail.io/audit-id-reuse"]
        .as_str()
        .unwrap();
    assert!(
        mark.contains(first),
        "the mark names the first request: {mark}"
    );
}

// Regression: `GET pods/web` then `GET secrets/db-root` with the same Audit-ID header: the secret read was
// answered `duplicates: 1`, never stored, never alerted.
#[test]
fn a_reused_audit_id_is_stored_queried_and_alerted_through_webhook_file_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let log = dir.join("audit.log");
    std::fs::write(&log, "").unwrap();
    let mut serve = Serve::start(dir, &[&log]);

    let pod = request("reused-1", "default", "pods", "web", 1);
    let secret = request("reused-1", "prod", "secrets", "db-root", 2);
    let (code, answer) = serve.post(dir, &event_list(&[&line(&pod)]));
    assert_eq!((code, &answer["duplicates"]), (200, &json!(0)), "{answer}");
    let (code, answer) = serve.post(dir, &event_list(&[&line(&secret)]));
    assert_eq!(code, 200);
    assert_eq!(
        (&answer["accepted"], &answer["duplicates"]),
        (&json!(1), &json!(0)),
        "the secret read is stored: {answer}"
    );
    // The apiserver's retry of the same batch is a duplicate.
    let (code, answer) = serve.post(dir, &event_list(&[&line(&secret)]));
    assert_eq!((code, &answer["duplicates"]), (200, &json!(1)), "{answer}");
    serve.wait_for("kubetrail_events_persisted_total", 2.0);

    // The same through a followed file, retry included.
    // (Another actor: the same actor's repeats are one alert, updated when its window closes.)
    let mut pod2 = request("reused-2", "default", "pods", "api", 3);
    let mut secret2 = request("reused-2", "prod", "secrets", "stripe-key", 4);
    pod2["user"]["username"] = "eve@example.com".into();
    secret2["user"]["username"] = "eve@example.com".into();
    append(&log, &[line(&pod2), line(&secret2), line(&secret2)]);
    serve.wait_for("kubetrail_events_persisted_total", 4.0);
    assert_eq!(serve.metric("kubetrail_events_audit_id_reused_total"), 2.0);
    assert_eq!(serve.metric("kubetrail_events_duplicate_total"), 2.0);

    // Detection sees both and names both requests.
    let a = serve.wait_for_alert(&data, "kt-audit-id-reuse", "secrets db-root");
    assert_eq!(a["severity"], "high");
    let summary = a["summary"].as_str().unwrap();
    assert!(summary.contains("/pods/web"), "{summary}");
    serve.wait_for_alert(&data, "kt-secret-read-prod", "db-root");
    // The console's event view shows both requests.
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let v = serve.get_json("/api/v1/events/reused-1");
        if v["stages"].as_array().is_some_and(|s| s.len() == 2) || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stages = view["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{view}");
    assert_eq!(view["more"], false);
    assert_reuse_marked(stages, "web", "db-root");
    let a = serve.wait_for_alert(&data, "kt-audit-id-reuse", "stripe-key");
    assert!(a["summary"].as_str().unwrap().contains("/pods/api"), "{a}");
    serve.stop();

    // Queries and the store keep them apart; record ids stay unique (sinks merge on them).
    assert_reuse_marked(&query_id(&data, "reused-1"), "web", "db-root");
    assert_reuse_marked(&query_id(&data, "reused-2"), "api", "stripe-key");
    let ids: Vec<String> = records(&data)
        .iter()
        .map(|r| r.id(kubetrail_policy::keyless_digest(&r.event)))
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");

    // import: the same file twice stores each request once.
    let file = dir.join("reused.jsonl");
    std::fs::write(
        &file,
        format!("{}\n{}\n{}\n", line(&pod), line(&secret), line(&secret)),
    )
    .unwrap();
    let imported = dir.join("imported");
    for _ in 0..2 {
        kubetrail_ok(&[
            "import",
            "--data",
            imported.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
    }
    assert_reuse_marked(&by_id(&imported, "reused-1"), "web", "db-root");
    assert_eq!(records(&imported).len(), 2);
}

// Regression: a 24 MiB line stopped a followed file for good (nothing after it was stored) and a webhook batch
// holding one was refused whole.
#[test]
fn events_over_the_record_limit_are_stored_cut_through_webhook_file_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let log = dir.join("audit.log");
    std::fs::write(&log, "").unwrap();
    let mut serve = Serve::start(dir, &[&log]);

    let before = request("small-1", "default", "pods", "a", 1);
    let big = huge_list("big-1", 24);
    let after = request("small-2", "default", "pods", "b", 2);
    let (code, answer) = serve.post(dir, &event_list(&[&line(&before), &big, &line(&after)]));
    assert_eq!((code, &answer["accepted"]), (200, &json!(3)), "{answer}");

    // A followed file: a 24 MiB line, a 70 MiB line (over the 64 MiB line limit) and lines after them.
    let bigger = huge_list("big-2", 70);
    let tail = request("small-3", "default", "pods", "c", 3);
    append(&log, &[huge_list("big-3", 24), bigger, line(&tail)]);
    serve.wait_for("kubetrail_events_persisted_total", 6.0);
    assert_eq!(serve.metric("kubetrail_events_truncated_total"), 3.0);
    serve.wait_for_alert(&data, "kt-event-truncated", "configmaps");
    serve.stop();

    for id in ["small-1", "small-2", "small-3"] {
        assert_eq!(by_id(&data, id).len(), 1, "{id} stored");
    }
    for (id, mib) in [("big-1", 24), ("big-3", 24), ("big-2", 70)] {
        let e = &by_id(&data, id)[0];
        assert!(e.get("responseObject").is_none(), "{id}: body dropped");
        assert_eq!(e["verb"], "list", "{id}: metadata kept");
        let size: u64 = e["annotations"]["kubetrail.io/truncated"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(size > mib << 20, "{id}: original size recorded ({size})");
    }

    // import reads the same file whole.
    let imported = dir.join("imported");
    kubetrail_ok(&[
        "import",
        "--data",
        imported.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    let ids: Vec<String> = records(&imported)
        .iter()
        .map(|r| r.audit_id.to_string())
        .collect();
    assert_eq!(ids, ["big-3", "big-2", "small-3"]);
}

fn gzip(path: &Path) {
    let status = Command::new("gzip").arg(path).status().unwrap();
    assert!(status.success());
}

// Regression: `serve --file` kept its read position as `checkpoints/file-0-<path>.json`, beside the signed
// checkpoints: `verify` then failed and `serve` refused to sign checkpoints from then on.
#[test]
fn a_followed_file_across_rotations_keeps_the_store_verifiable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let logdir = dir.join("audit");
    std::fs::create_dir_all(&logdir).unwrap();
    let log = logdir.join("audit.log");
    let events: Vec<String> = (0..80)
        .map(|i| {
            line(&request(
                &format!("rot-{i}"),
                "default",
                "pods",
                &format!("p{i}"),
                i % 60,
            ))
        })
        .collect();
    append(&log, &events[..20]);
    let mut serve = Serve::start(dir, &[&log]);
    serve.wait_for("kubetrail_events_persisted_total", 20.0);

    // Rename (lumberjack), a few more lines into the renamed file, then a new file.
    std::fs::rename(&log, logdir.join("audit-2026-12-05T10-00-00.000.log")).unwrap();
    append(
        &logdir.join("audit-2026-12-05T10-00-00.000.log"),
        &events[20..30],
    );
    append(&log, &events[30..40]);
    serve.wait_for("kubetrail_events_persisted_total", 40.0);

    // Rename and gzip (logrotate with compress).
    let rotated = logdir.join("audit-2026-12-05T11-00-00.000.log");
    std::fs::rename(&log, &rotated).unwrap();
    gzip(&rotated);
    append(&log, &events[40..60]);
    serve.wait_for("kubetrail_events_persisted_total", 60.0);

    // copytruncate.
    std::fs::copy(&log, logdir.join("audit.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &events[60..80]);
    serve.wait_for("kubetrail_events_persisted_total", 80.0);
    let first_log = serve.stop();
    assert!(!first_log.contains("does not verify"), "{first_log}");

    let stored: HashMap<String, usize> = records(&data).iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.audit_id.to_string()).or_default() += 1;
        m
    });
    assert_eq!(stored.len(), 80, "0 lost");
    assert!(stored.values().all(|n| *n == 1), "none stored twice");
    let in_checkpoints: Vec<String> = std::fs::read_dir(data.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.chars().next().unwrap().is_ascii_digit())
        .collect();
    assert!(
        in_checkpoints.is_empty(),
        "only checkpoints: {in_checkpoints:?}"
    );

    let verifies = |what: &str| {
        let (code, text) = verify(&data);
        assert_eq!(code, Some(0), "{what}: {text}");
    };
    verifies("after the rotations");

    // A restart signs checkpoints again, and the file resumes where it was.
    let mut serve = Serve::start(dir, &[&log]);
    let extra = line(&request("rot-80", "default", "pods", "p80", 1));
    append(&log, &[extra]);
    serve.wait_for("kubetrail_events_persisted_total", 1.0);
    let second_log = serve.stop();
    assert!(!second_log.contains("does not verify"), "{second_log}");
    verifies("after a restart");
    assert_eq!(records(&data).len(), 81);
}

const ENOSPC_TEST: &str = "a_full_disk_answers_503_alerts_and_heals_once_space_is_freed";
const ENOSPC_DIR: &str = "KUBETRAIL_TEST_FULL_DISK_DIR";

// Regression: after ENOSPC or a failed fsync only a restart let the log write again.
// The test runs itself again inside a user and mount namespace over a small tmpfs (the data directory) and
// fills it; skipped, saying why, where namespaces are not allowed (the WAL's own tests inject the failures).
#[test]
fn a_full_disk_answers_503_alerts_and_heals_once_space_is_freed() {
    if let Some(dir) = std::env::var_os(ENOSPC_DIR) {
        return full_disk(Path::new(&dir));
    }
    let mnt = tempfile::tempdir().unwrap();
    let mount = "mount -t tmpfs -o size=24m kubetrail-full \"$0\"";
    let unshare = |script: &str| {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
            .arg(mnt.path());
        c
    };
    match unshare(mount).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: cannot mount a tmpfs in a user namespace here ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run `unshare`: {e}");
            return;
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = unshare(&format!(
        "{mount} && exec \"$1\" {ENOSPC_TEST} --exact --nocapture --test-threads=1"
    ))
    .arg(exe)
    .env(ENOSPC_DIR, mnt.path())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the test on a full tmpfs failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn full_disk(root: &Path) {
    let logs = tempfile::tempdir().unwrap();
    let mut serve = Serve::start_in(root, logs.path());
    let data = root.join("data");
    let batch = |from: usize| -> String {
        let events: Vec<String> = (from..from + 50)
            .map(|i| line(&request(&format!("disk-{i}"), "default", "pods", "p", 1)))
            .collect();
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        event_list(&refs)
    };
    assert_eq!(serve.post(logs.path(), &batch(0)).0, 200);
    serve.wait_for("kubetrail_events_persisted_total", 50.0);

    // Fill the disk.
    let ballast = root.join("ballast");
    let mut f = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    drop(f);
    let mut refused = 0;
    for i in 1..=20 {
        let (code, _) = serve.post(logs.path(), &batch(i * 50));
        assert!(code == 200 || code == 503, "{code}");
        if code == 503 {
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "a full disk is answered 503");
    assert_eq!(common::curl(serve.port, "/readyz", None), 503);
    assert_eq!(serve.metric("kubetrail_wal_failing"), 1.0);

    // Space freed: it heals by itself, without traffic, then stores again and records the alert.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::curl(serve.port, "/readyz", None) != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready again:\n{}",
            serve.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = serve.metric("kubetrail_events_persisted_total");
    assert_eq!(serve.post(logs.path(), &batch(5000)).0, 200);
    serve.wait_for("kubetrail_events_persisted_total", before + 50.0);
    serve.wait_for_alert(&data, "kt-log-write-failing", "could not write");
    serve.stop();
    let (code, text) = verify(&data);
    assert_eq!(code, Some(0), "{text}");
}

// Regression: damage in the log's active segment made recovery hand out seqs that detection, the Parquet
// conversion and the checkpoints had passed: new events were never detected nor converted, and checkpoints
// were refused from then on.
#[test]
fn after_damage_in_the_log_new_events_are_still_detected_and_verify_names_the_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let mut serve = Serve::start(dir, &[]);
    let events: Vec<String> = (0..40)
        .map(|i| line(&request(&format!("before-{i}"), "default", "pods", "p", 1)))
        .collect();
    let refs: Vec<&str> = events.iter().map(String::as_str).collect();
    assert_eq!(serve.post(dir, &event_list(&refs)).0, 200);
    serve.wait_for("kubetrail_events_persisted_total", 40.0);
    let log = serve.stop();
    assert!(!log.contains("does not verify"), "{log}");

    // Someone with the node's disk flips a byte in the middle of the active segment.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let active = segments.last().unwrap();
    let mut bytes = std::fs::read(active).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0xff;
    std::fs::write(active, &bytes).unwrap();

    let mut serve = Serve::start(dir, &[]);
    serve.wait_for_alert(&data, "kt-log-damaged", "damaged");
    let mut secret = request("after-1", "prod", "secrets", "db-root", 5);
    secret["user"]["username"] = "trudy@example.com".into();
    assert_eq!(serve.post(dir, &event_list(&[&line(&secret)])).0, 200);
    serve.wait_for_alert(&data, "kt-secret-read-prod", "trudy@example.com");
    let log = serve.stop();
    assert!(!log.contains("does not verify"), "checkpoints go on: {log}");
    assert_eq!(
        query_id(&data, "after-1").len(),
        1,
        "converted and queryable"
    );

    let (code, text) = verify(&data);
    assert_eq!(code, Some(1), "{text}");
    let name = active.file_name().unwrap().to_string_lossy();
    assert!(
        text.contains(name.as_ref()),
        "verify names the segment: {text}"
    );
}

const CM_PASSWORD: &str = "cm-hunter2-value";
const ENV_PASSWORD: &str = "env-s3cr3t-value";
const APPLIED_TOKEN: &str = "applied-token-value-77";
const URI_APIKEY: &str = "uri-apikey-value-88";
const URI_SIGNATURE: &str = "uri-amz-signature-99";
const EXEC_PASSWORD: &str = "exec-mysql-pass-11";
const EXEC_LONG_PASSWORD: &str = "exec-long-pass-12";
const URL_PASSWORD: &str = "url-userinfo-pass-13";
const CUSTOM_ENV: &str = "custom-pattern-value-14";
const CUSTOM_PARAM: &str = "custom-param-value-15";

/// Events that carry secret values outside Secrets, each at the level that logs it.
fn secrets_outside_secrets() -> Vec<Value> {
    let mut cm = request("out-cm", "prod", "configmaps", "app-config", 10);
    cm["verb"] = "create".into();
    cm["level"] = "RequestResponse".into();
    cm["requestURI"] = "/api/v1/namespaces/prod/configmaps".into();
    cm["requestObject"] = json!({"kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "app-config", "namespace": "prod"},
        "data": {"DB_PASSWORD": CM_PASSWORD, "LOG_LEVEL": "info"}});

    let container = json!({"name": "api", "image": "registry.example.com/api:1.4",
        "env": [{"name": "DB_PASSWORD", "value": ENV_PASSWORD}, {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "HUSH_VALUE", "value": CUSTOM_ENV}]});
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod"},
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "registry.example.com/api:1.4",
            "env": [{"name": "API_TOKEN", "value": APPLIED_TOKEN}]}]}}}});
    let mut deploy = request("out-deploy", "prod", "deployments", "api", 11);
    deploy["verb"] = "create".into();
    deploy["level"] = "Request".into();
    deploy["objectRef"]["apiGroup"] = "apps".into();
    deploy["requestURI"] = "/apis/apps/v1/namespaces/prod/deployments".into();
    deploy["requestObject"] = json!({"kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "api", "namespace": "prod", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": line(&applied)}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [container]}}}});

    let mut uri = request("out-uri", "prod", "pods", "", 12);
    uri["verb"] = "list".into();
    uri["requestURI"] = format!(
        "/api/v1/namespaces/prod/pods?apikey={URI_APIKEY}&X-Amz-Signature={URI_SIGNATURE}&sessionid={CUSTOM_PARAM}&limit=10"
    )
    .into();

    let mut exec = request("out-exec", "prod", "pods", "db-0", 13);
    exec["verb"] = "create".into();
    exec["objectRef"]["subresource"] = "exec".into();
    exec["requestURI"] = format!(
        "/api/v1/namespaces/prod/pods/db-0/exec?command=mysql&command=-uroot&command=-p{EXEC_PASSWORD}\
         &command=--password%3D{EXEC_LONG_PASSWORD}&command=postgres%3A%2F%2Fapp%3A{URL_PASSWORD}%40db%3A5432%2Fapp\
         &container=db&stdin=true&stdout=true&tty=true"
    )
    .into();
    vec![cm, deploy, uri, exec]
}

/// Every secret value above, and its base64 (unpadded).
fn outside_forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for v in [
        CM_PASSWORD,
        ENV_PASSWORD,
        APPLIED_TOKEN,
        URI_APIKEY,
        URI_SIGNATURE,
        EXEC_PASSWORD,
        EXEC_LONG_PASSWORD,
        URL_PASSWORD,
        CUSTOM_ENV,
        CUSTOM_PARAM,
    ] {
        out.push(v.to_string());
        use base64::Engine as _;
        out.push(
            base64::engine::general_purpose::STANDARD
                .encode(v)
                .trim_end_matches('=')
                .to_string(),
        );
    }
    out
}

/// Files under `dir` (recursively) holding any of `needles`.
fn leaks(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    found.push(format!("{} holds `{n}`", p.display()));
                }
            }
        }
    }
    found
}

// Regression: secret values in ConfigMaps, env values, last-applied copies of any kind, URI credentials
// beyond six names and exec commands reached disk in clear.
#[test]
fn secret_values_outside_secrets_never_reach_disk_through_webhook_file_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    std::fs::write(
        dir.join("kubetrail.yaml"),
        "redaction:\n  key_patterns: [hush]\n  uri_parameters: [sessionid]\n",
    )
    .unwrap();
    let log = dir.join("audit.log");
    std::fs::write(&log, "").unwrap();
    let mut serve = Serve::start(dir, &[&log]);
    let events = secrets_outside_secrets();
    let lines: Vec<String> = events.iter().map(line).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(serve.post(dir, &event_list(&refs)).0, 200);
    // The same requests through the followed file (other auditIDs: they are other requests).
    let from_file: Vec<String> = lines
        .iter()
        .map(|l| l.replace("\"out-", "\"file-"))
        .collect();
    append(&log, &from_file);
    serve.wait_for("kubetrail_events_persisted_total", 8.0);
    std::fs::remove_file(&log).unwrap();
    serve.stop();

    let imported = dir.join("imported");
    let file = dir.join("outside.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    kubetrail_ok(&[
        "import",
        "--config",
        dir.join("kubetrail.yaml").to_str().unwrap(),
        "--data",
        imported.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(dir.join("body.json")).unwrap();

    // Nothing of a secret value anywhere under the data directories (log, Parquet, alerts, everything).
    let found = leaks(dir, &outside_forbidden());
    assert!(found.is_empty(), "{found:#?}");

    // What is not a secret stays as evidence.
    for (store, prefix) in [(&data, "out-"), (&data, "file-"), (&imported, "out-")] {
        let cm = &by_id(store, &format!("{prefix}cm"))[0];
        assert_eq!(cm["requestObject"]["data"]["LOG_LEVEL"], "info");
        let marker = cm["requestObject"]["data"]["DB_PASSWORD"].as_str().unwrap();
        assert!(marker.starts_with("kubetrail-redacted:len="), "{marker}");
        let exec = &by_id(store, &format!("{prefix}exec"))[0];
        let uri = exec["requestURI"].as_str().unwrap();
        assert!(uri.contains("command=mysql&command=-uroot"), "{uri}");
        assert!(uri.contains("container=db"), "{uri}");
        let deploy = &by_id(store, &format!("{prefix}deploy"))[0];
        let env = &deploy["requestObject"]["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[1]["value"], "debug");
    }
}
