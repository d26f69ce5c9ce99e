//! `kubetrail whois` and `kubetrail rbac` over generated traffic (`gen --attacks`): the AccessGrant scenario
//! (an EKS admin's assumed-role session grants a contractor secret reads in prod-payments, the contractor
//! reads, the binding is widened to a group, then revoked, and the next read is refused) and the StolenToken
//! scenario (a pod's bound service-account token used from an outside address), with the simulated cluster's
//! RBAC snapshot (`gen --rbac-snapshot`) imported as the base.
//!
//! Who could `get secrets` in prod-payments at a moment is checked against an oracle written here, apart from
//! the code under test: the rules the snapshot holds for each binding's role (the stored rules a real
//! authorizer reads, aggregation already filled in by the controller), matched literally, plus the grants the
//! scenario's own recorded writes made. Every one of the contractor's recorded requests must agree: allowed
//! exactly when the answer at its time names her. The CLI and the API must give the same answers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use serde_json::Value;

mod common;

const NS: &str = "prod-payments";
const EVE: &str = "eve@contractor.example";
const BINDING: &str = "contractor-secrets";

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

struct Stored {
    dir: PathBuf,
    events: Vec<Value>,
    snapshot: Value,
    _tmp: tempfile::TempDir,
}

impl Stored {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

fn stored() -> &'static Stored {
    static STORED: OnceLock<Stored> = OnceLock::new();
    STORED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (file, snap) = (dir.join("gen.jsonl"), dir.join("rbac.json"));
        kubetrail()
            .args([
                "gen",
                "--attacks",
                "--count",
                "30000",
                "--rate",
                "3",
                "--seed",
                "1",
            ])
            .args(["--start", "2026-03-01T00:00:00Z", "-o"])
            .arg(&file)
            .arg("--rbac-snapshot")
            .arg(&snap)
            .assert()
            .success();
        let data = dir.join("data");
        kubetrail()
            .arg("import")
            .arg(&file)
            .arg("--data")
            .arg(&data)
            .assert()
            .success();
        let out = kubetrail()
            .args(["rbac", "import"])
            .arg(&snap)
            .args(["--taken", "2026-03-01T00:00:00Z", "--data"])
            .arg(&data)
            .assert()
            .success();
        let said = String::from_utf8_lossy(&out.get_output().stdout).to_string();
        assert!(said.starts_with("imported "), "{said}");
        let events = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let snapshot = serde_json::from_slice(&std::fs::read(&snap).unwrap()).unwrap();
        Stored {
            dir,
            events,
            snapshot,
            _tmp: tmp,
        }
    })
}

fn json_lines(args: &[&str]) -> Vec<Value> {
    let s = stored();
    let out = kubetrail()
        .args(args)
        .arg("--data")
        .arg(s.data())
        .args(["--format", "json"])
        .assert()
        .success();
    String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn who_can(at: &str) -> Value {
    json_lines(&["rbac", "who-can", "get", "secrets", "-n", NS, "--at", at]).remove(0)
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether a stored rule allows `get secrets` (core group) on any name: what the authorizer reads, literally.
fn rule_allows_get_secrets(rule: &Value) -> bool {
    let has = |k: &str, v: &str| strs(&rule[k]).iter().any(|x| *x == v || *x == "*");
    has("verbs", "get")
        && has("apiGroups", "")
        && has("resources", "secrets")
        && strs(&rule["resourceNames"]).is_empty()
}

/// The snapshot's objects with the recorded RBAC writes before `at` applied the simple way the scenarios
/// write them: a create or update's body, a merge patch's top-level fields, a delete (each scenario write is
/// recorded with its body; one without is not applied, and the answer must not depend on it).
fn objects_at(snapshot: &Value, events: &[Value], at: jiff::Timestamp) -> Vec<Value> {
    let mut items: Vec<Value> = snapshot["items"].as_array().unwrap().clone();
    let kinds = [
        "roles",
        "clusterroles",
        "rolebindings",
        "clusterrolebindings",
    ];
    let same = |i: &Value, o: &Value| {
        i["metadata"]["name"] == o["name"]
            && i["metadata"]["namespace"].as_str().unwrap_or("")
                == o["namespace"].as_str().unwrap_or("")
            && i["kind"].as_str().unwrap_or("").to_lowercase() + "s"
                == o["resource"].as_str().unwrap()
    };
    for e in events {
        let o = &e["objectRef"];
        let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
        if e["stage"] != "ResponseComplete"
            || !(200..300).contains(&code)
            || !kinds.contains(&o["resource"].as_str().unwrap_or(""))
            || time(e) >= at
        {
            continue;
        }
        let body = &e["requestObject"];
        match e["verb"].as_str().unwrap() {
            "create" | "update" if body.is_object() => {
                items.retain(|i| !same(i, o));
                let mut b = body.clone();
                if let Some(ns) = o["namespace"].as_str() {
                    b["metadata"]["namespace"] = ns.into();
                }
                items.push(b);
            }
            "patch" if body.is_object() => {
                for i in items.iter_mut().filter(|i| same(i, o)) {
                    for (k, v) in body.as_object().unwrap() {
                        i[k] = v.clone();
                    }
                }
            }
            "delete" => items.retain(|i| !same(i, o)),
            _ => {}
        }
    }
    items
}

/// The oracle: (kind, name as authenticated) of every subject `items`' bindings let `get secrets` in `ns`,
/// and `system:masters` for the apiserver's bypass.
fn oracle(items: &[Value], ns: &str) -> Vec<(String, String)> {
    let role = |kind: &str, rns: &str, name: &str| {
        items.iter().find(|i| {
            i["kind"] == kind
                && i["metadata"]["name"] == name
                && i["metadata"]["namespace"].as_str().unwrap_or("") == rns
        })
    };
    let mut out = vec![("Group".to_string(), "system:masters".to_string())];
    for b in items {
        let kind = b["kind"].as_str().unwrap_or("");
        let bns = b["metadata"]["namespace"].as_str().unwrap_or("");
        if !(kind == "ClusterRoleBinding" || (kind == "RoleBinding" && bns == ns)) {
            continue;
        }
        let rk = b["roleRef"]["kind"].as_str().unwrap();
        let rns = if rk == "Role" { bns } else { "" };
        let Some(r) = role(rk, rns, b["roleRef"]["name"].as_str().unwrap()) else {
            continue;
        };
        if !r["rules"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(rule_allows_get_secrets))
        {
            continue;
        }
        for s in b["subjects"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap().to_string();
            let skind = s["kind"].as_str().unwrap().to_string();
            let name = if skind == "ServiceAccount" {
                format!(
                    "system:serviceaccount:{}:{name}",
                    s["namespace"].as_str().unwrap_or(bns)
                )
            } else {
                name
            };
            out.push((skind, name));
        }
    }
    out.sort();
    out
}

fn answered(w: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = w["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().into(),
                a["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The scenario's request on the contractor's binding with `verb`.
fn binding_write(verb: &str) -> &'static Value {
    stored()
        .events
        .iter()
        .find(|e| {
            e["verb"] == verb
                && e["objectRef"]["resource"] == "rolebindings"
                && e["objectRef"]["name"] == BINDING
        })
        .unwrap_or_else(|| panic!("the traffic holds the access-grant scenario's {verb}"))
}

fn time(e: &Value) -> jiff::Timestamp {
    e["requestReceivedTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn plus(t: jiff::Timestamp, secs: i64) -> String {
    (t + jiff::SignedDuration::from_secs(secs)).to_string()
}

#[test]
fn who_can_names_exactly_what_the_authorizer_allowed_at_each_moment() {
    let s = stored();
    let expected = |at: &str| oracle(&objects_at(&s.snapshot, &s.events, at.parse().unwrap()), NS);
    let (create, patch, delete) = (
        binding_write("create"),
        binding_write("patch"),
        binding_write("delete"),
    );
    // At each moment of the scenario, the oracle's answer.
    for at in [
        plus(time(create), -1),
        plus(time(create), 1),
        plus(time(patch), 1),
        plus(time(delete), 1),
    ] {
        assert_eq!(answered(&who_can(&at)), expected(&at), "at {at}");
    }
    let base = expected(&plus(time(create), -1));
    assert!(
        base.len() > 5,
        "the snapshot grants secrets to several subjects: {base:?}"
    );
    assert!(!base.iter().any(|(_, n)| n == EVE));
    let with = |extra: &[(&str, &str)]| {
        let mut v = base.clone();
        v.extend(extra.iter().map(|(k, n)| (k.to_string(), n.to_string())));
        v.sort();
        v
    };
    // And the scenario's own changes to it: before the grant, between grant and widening, after the widening,
    // after the revocation.
    assert_eq!(answered(&who_can(&plus(time(create), -1))), base);
    let granted = who_can(&plus(time(create), 1));
    assert_eq!(answered(&granted), with(&[("User", EVE)]));
    let eve = granted["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["subject"] == EVE)
        .unwrap();
    assert_eq!(
        eve["why"],
        format!(
            r#"RBAC: allowed by RoleBinding "{BINDING}/{NS}" of Role "secret-reader" to User "{EVE}""#
        )
    );
    assert_eq!(eve["uncertain"], false);
    let widened = who_can(&plus(time(patch), 1));
    assert_eq!(
        answered(&widened),
        with(&[("User", EVE), ("Group", "oidc:contractors")])
    );
    let revoked = answered(&who_can(&plus(time(delete), 1)));
    assert!(
        !revoked
            .iter()
            .any(|(_, n)| n == EVE || n == "oidc:contractors"),
        "{revoked:?}"
    );
    // The Metadata-only patch of another role (grafana-nodes) made that role uncertain, said so; no subject
    // of this answer depends on it.
    assert!(
        widened["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("grafana-nodes")),
        "{widened}"
    );
    assert!(
        widened["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["uncertain"] == false)
    );

    // Every secret read of the contractor agrees with the answer at its time.
    let reads: Vec<&Value> = s
        .events
        .iter()
        .filter(|e| {
            e["user"]["username"] == EVE
                && e["objectRef"]["resource"] == "secrets"
                && e["verb"] == "get"
        })
        .collect();
    assert!(reads.len() >= 3, "{}", reads.len());
    let mut outcomes = BTreeSet::new();
    for r in reads {
        let allowed = r["annotations"]["authorization.k8s.io/decision"] == "allow";
        let w = who_can(&time(r).to_string());
        let named = answered(&w).iter().any(|(_, n)| n == EVE);
        assert_eq!(
            named,
            allowed,
            "eve's read at {}: recorded {allowed}, answered {named}",
            time(r)
        );
        outcomes.insert(allowed);
    }
    assert_eq!(outcomes.len(), 2, "reads both allowed and refused");
}

#[test]
fn diff_and_grants_name_who_granted_and_revoked_from_where() {
    let (create, delete) = (binding_write("create"), binding_write("delete"));
    let dana = create["user"]["username"].as_str().unwrap();
    let from = create["sourceIPs"][0].as_str().unwrap();
    let diff = json_lines(&[
        "rbac",
        "diff",
        "--since",
        "2026-03-01T00:00:00Z",
        "--until",
        &plus(time(delete), 60),
    ])
    .remove(0);
    let eve_changes: Vec<(bool, &str, &str)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["grants"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["subject"]["name"] == EVE)
                .map(move |g| {
                    (
                        g["added"].as_bool().unwrap(),
                        c["by"].as_str().unwrap(),
                        c["source_ips"][0].as_str().unwrap(),
                    )
                })
        })
        .collect();
    assert_eq!(eve_changes, [(true, dana, from), (false, dana, from)]);
    let grants = json_lines(&[
        "rbac",
        "grants",
        "--user",
        EVE,
        "--until",
        &plus(time(create), 1),
    ])
    .remove(0);
    let via: Vec<&Value> = grants["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["binding"].as_str().unwrap().contains(BINDING))
        .collect();
    assert_eq!(via.len(), 1, "{grants}");
    assert_eq!(via[0]["rule"], "get,list secrets");
    assert_eq!(via[0]["namespace"], NS);
    assert_eq!(grants["changes"][0]["added"], true, "{grants}");
    assert_eq!(grants["changes"][0]["by"], dana);
    assert_eq!(
        grants["groups"],
        serde_json::json!(["oidc:contractors", "system:authenticated"])
    );
    // What she used against what she was granted: the proposal allows exactly her reads.
    let out = kubetrail()
        .args([
            "rbac",
            "unused",
            "--user",
            EVE,
            "--since",
            "2026-03-01T00:00:00Z",
        ])
        .args(["--until", &plus(time(create), 3600), "--yaml", "--data"])
        .arg(stored().data())
        .assert()
        .success();
    let yaml = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        yaml.contains("kind: Role\n") && yaml.contains("namespace: prod-payments"),
        "{yaml}"
    );
    assert!(yaml.contains("- secrets"), "{yaml}");
    assert!(
        !yaml.contains("'*'") && !yaml.contains("\"*\""),
        "no wildcard proposed: {yaml}"
    );
}

fn rows<'a>(lines: &'a [Value], section: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["section"] == section).collect()
}

#[test]
fn whois_resolves_the_eks_session_to_its_role_and_human() {
    let create = binding_write("create");
    let user = &create["user"];
    let session = user["extra"]["sessionName"][0].as_str().unwrap();
    let lines = json_lines(&["whois", session]);
    let ids = rows(&lines, "identities");
    assert_eq!(ids.len(), 1, "{lines:?}");
    assert_eq!(ids[0]["user"], user["username"]);
    assert_eq!(ids[0]["matched_by"], "AWS session name");
    assert_eq!(
        ids[0]["behind"],
        format!("AWS role eks-platform-admins (account 111122223333), session {session}")
    );
    let cloud = rows(&lines, "cloud_principals");
    assert_eq!(cloud[0]["role_arn"], user["extra"]["canonicalArn"][0]);
    assert!(
        cloud[0]["access_keys"]
            .as_str()
            .unwrap()
            .contains(user["extra"]["accessKeyId"][0].as_str().unwrap()),
        "{lines:?}"
    );
    // By the role: the same session.
    let by_role = json_lines(&["whois", user["extra"]["canonicalArn"][0].as_str().unwrap()]);
    assert_eq!(rows(&by_role, "identities")[0]["user"], user["username"]);
}

#[test]
fn whois_resolves_a_stolen_token_to_its_pod_node_and_the_outside_address() {
    let s = stored();
    // The stolen-token scenario: a pod's bound token used from a public address.
    let stolen = s
        .events
        .iter()
        .find(|e| {
            e["user"]["username"] == "system:serviceaccount:staging:web-frontend"
                && strs(&e["sourceIPs"])
                    .iter()
                    .any(|ip| !ip.starts_with("10.") && !ip.starts_with("192.168."))
        })
        .expect("the traffic holds the stolen-token scenario");
    let extra = &stolen["user"]["extra"];
    let jti = extra["authentication.kubernetes.io/credential-id"][0]
        .as_str()
        .unwrap();
    let pod = extra["authentication.kubernetes.io/pod-name"][0]
        .as_str()
        .unwrap();
    let node = extra["authentication.kubernetes.io/node-name"][0]
        .as_str()
        .unwrap();
    let ip = stolen["sourceIPs"][0].as_str().unwrap();
    let lines = json_lines(&["whois", jti]);
    let creds = rows(&lines, "credentials");
    assert_eq!(creds.len(), 1, "{lines:?}");
    assert_eq!(creds[0]["kind"], "service-account token");
    assert!(
        creds[0]["bound_to"]
            .as_str()
            .unwrap()
            .starts_with(&format!("pod staging/{pod} on node {node}")),
        "{}",
        creds[0]["bound_to"]
    );
    assert!(creds[0]["source_ips"].as_str().unwrap().contains(ip));
    assert!(
        creds[0]["note"]
            .as_str()
            .unwrap()
            .contains("kt-sa-token-external"),
        "{}",
        creds[0]["note"]
    );
    let addr = rows(&lines, "source_addresses");
    assert!(
        addr.iter()
            .any(|a| a["ip"] == ip && a["what"] == "public: outside the cluster network"),
        "{addr:?}"
    );
    // Following the token: exactly its requests.
    let made = s
        .events
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["extra"]["authentication.kubernetes.io/credential-id"][0] == jti
        })
        .count();
    let timeline = json_lines(&["timeline", "--credential-id", jti]);
    let counted: u64 = rows(&timeline, "activity_by_resource_and_verb")
        .iter()
        .map(|r| r["requests"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, made as u64);
    // The scope of the token alone: its requests, with where they came from.
    let scope = json_lines(&["scope", "--credential-id", jti]);
    assert!(
        scope.iter().any(|l| l["ip"] == ip),
        "the token's scope names the outside address: {scope:?}"
    );
}

/// The same questions over the API give the CLI's answers.
#[test]
fn the_api_answers_as_the_cli() {
    let s = stored();
    // A copy of its own: a collector takes the data directory, which the other tests' commands lock a while.
    let data = s.dir.join("api-data");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(s.data())
        .arg(&data)
        .status()
        .unwrap();
    assert!(copied.success());
    let port = common::free_port();
    let token = "reader-token-0123456789abcdef0123456789";
    let token_file = s.dir.join("reader.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = s.dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\nauth:\n  identities:\n    - {{name: soc, token_file: {}, role: reader}}\n",
            data.display(),
            token_file.display()
        ),
    )
    .unwrap();
    let mut server = common::serve(&config, &[], &s.dir.join("serve.log"), port);
    let get = |path: &str| -> (u16, Value) {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let at = plus(time(binding_write("patch")), 1);
    let cli = who_can(&at);
    let (code, api) = get(&format!(
        "/api/v1/rbac/who-can?verb=get&resource=secrets&namespace={NS}&at={at}"
    ));
    assert_eq!(code, 200, "{api}");
    assert_eq!(api["allowed"], cli["allowed"]);
    assert_eq!(api["notes"], cli["notes"]);
    let session = binding_write("create")["user"]["extra"]["sessionName"][0]
        .as_str()
        .unwrap()
        .to_string();
    let cli = json_lines(&["whois", &session]);
    let (code, api) = get(&format!(
        "/api/v1/whois?identity={}",
        session.replace('@', "%40")
    ));
    assert_eq!(code, 200, "{api}");
    let api_ids = &api["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "identities")
        .unwrap()["rows"];
    let cli_ids: Vec<Value> = rows(&cli, "identities")
        .into_iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("section");
            r
        })
        .collect();
    assert_eq!(api_ids, &Value::from(cli_ids));
    // Refusals name what is wrong.
    let (code, e) = get("/api/v1/rbac/who-can?verb=get&resource=secrets&since=1h");
    assert_eq!(
        (code, e["error"].as_str().unwrap().contains("`since`")),
        (400, true),
        "{e}"
    );
    let (code, e) = get("/api/v1/rbac/who-can?verb=get&resource=secrets&at=last%20tuesday");
    assert_eq!(
        (code, e["error"].as_str().unwrap().contains("`at`")),
        (400, true),
        "{e}"
    );
    let (code, e) = get("/api/v1/rbac/who-can?verb=&resource=secrets");
    assert_eq!(
        (code, e["error"].as_str().unwrap().contains("`verb`")),
        (400, true),
        "{e}"
    );
    let (code, e) = get("/api/v1/rbac/who-can?verb=get&resource=secrets&at=2020-01-01T00:00:00Z");
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("before a snapshot"),
        "{e}"
    );
    let (code, _) = get("/api/v1/whois?identity=");
    assert_eq!(code, 400);
    server.kill().ok();
    server.wait().ok();
}

#[test]
fn bad_input_is_refused_with_what_and_where() {
    let s = stored();
    let bad = s.dir.join("bad.json");
    std::fs::write(&bad, r#"{"kind":"List","items":[{"kind":"Role","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"x","namespace":"a"},"rules":"nope"}]}"#).unwrap();
    let out = kubetrail()
        .args(["rbac", "import"])
        .arg(&bad)
        .args(["--taken", "now", "--data"])
        .arg(s.dir.join("other-data"))
        .assert()
        .failure()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("bad.json") && err.contains("items[0]"),
        "{err}"
    );
    let out = kubetrail()
        .args(["rbac", "who-can", "get", "secrets", "--data"])
        .arg(s.dir.join("no-such-data"))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("kubetrail rbac import"), "{err}");
    // Over the size limit (a sparse file): refused by its size, read no further than the limit.
    let huge = s.dir.join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let out = kubetrail()
        .args(["rbac", "import"])
        .arg(&huge)
        .args(["--taken", "now", "--data"])
        .arg(s.dir.join("other-data"))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("huge.json") && err.contains("limit"), "{err}");
    std::fs::remove_file(&huge).unwrap();
    // Nothing RBAC in it: says what was skipped, keeps nothing.
    std::fs::write(
        &bad,
        r#"{"kind":"List","items":[{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}}]}"#,
    )
    .unwrap();
    let out = kubetrail()
        .args(["rbac", "import"])
        .arg(&bad)
        .args(["--taken", "now", "--data"])
        .arg(s.dir.join("other-data"))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("kind Pod is not RBAC"), "{err}");
    assert!(
        !Path::new(&s.dir.join("other-data/rbac"))
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );
}
