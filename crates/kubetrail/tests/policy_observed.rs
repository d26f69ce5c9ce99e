//! `kubetrail policy observed` over data directories built by `kubetrail import` of generated traffic: the
//! policy it prints loads cleanly and reproduces what was recorded; against `policy generate`'s policy it
//! names what gen records differently; a level that changed in the range is named with the time it changed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

/// What a run printed, and its exit code.
struct Run {
    out: String,
    err: String,
    code: i32,
}

fn run(args: &[&str]) -> Run {
    let out = cargo_bin_cmd!("kubetrail").args(args).output().unwrap();
    Run {
        out: String::from_utf8(out.stdout).unwrap(),
        err: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code().unwrap_or(-1),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Generated traffic (20,000 events with attacks, about three minutes of it) starting three hours ago, so
/// the default `--since 7d` covers it.
fn gen_lines(dir: &Path) -> String {
    let start = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3))
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string();
    let file = dir.join("gen.jsonl");
    let r = run(&[
        "gen",
        "--count",
        "20000",
        "--attacks",
        "--seed",
        "5",
        "--start",
        &start,
        "-o",
        path(&file),
    ]);
    assert_eq!(r.code, 0, "{}", r.err);
    std::fs::read_to_string(file).unwrap()
}

/// `kubetrail import`s `lines` into `dir/NAME`.
fn import(dir: &Path, name: &str, lines: &str) -> PathBuf {
    let file = dir.join(format!("{name}.jsonl"));
    std::fs::write(&file, lines).unwrap();
    let data = dir.join(name);
    let r = run(&["import", "--data", path(&data), path(&file)]);
    assert_eq!(r.code, 0, "{}", r.err);
    data
}

/// The temporary directory, the generated lines and the data directory they were imported into, shared by
/// every test.
fn fixture() -> &'static (tempfile::TempDir, String, PathBuf) {
    static FIXTURE: OnceLock<(tempfile::TempDir, String, PathBuf)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let lines = gen_lines(tmp.path());
        let data = import(tmp.path(), "data", &lines);
        (tmp, lines, data)
    })
}

fn write(name: &str, text: &str) -> PathBuf {
    let file = fixture().0.path().join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// The generated requests that succeeded (what `policy observed` reads: a refused or failed request's names
/// are the caller's to choose), as the report writes the count (`19,657`).
fn succeeded() -> (u64, String) {
    let n = fixture()
        .1
        .lines()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["responseStatus"]["code"].as_i64().is_none_or(|c| c < 400)
        })
        .count() as u64;
    assert!(n < 20_000, "gen's traffic holds refused requests");
    let text = n.to_string();
    let (head, tail) = text.split_at(text.len() - 3);
    (n, format!("{head},{tail}"))
}

/// The line of `out` that starts with `prefix`.
fn line_starting<'o>(out: &'o str, prefix: &str) -> &'o str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}:\n{out}"))
}

#[test]
fn the_observed_policy_loads_and_reproduces_what_was_recorded() {
    let data = path(&fixture().2);
    let r = run(&["policy", "observed", "--data", data]);
    assert_eq!(r.code, 0, "{}", r.err);
    let yaml = &r.out;
    assert!(
        yaml.contains("apiVersion: audit.k8s.io/v1\nkind: Policy\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(&format!("from the {} events recorded there", succeeded().1)),
        "{yaml}"
    );
    // gen writes ResponseComplete only: every other stage omitted.
    assert!(
        yaml.contains("omitStages: [\"RequestReceived\", \"ResponseStarted\", \"Panic\"]"),
        "{yaml}"
    );
    for selector in [
        "users: [\"system:apiserver\", \"system:cloud-controller-manager\", \"system:kube-controller-manager\"",
        "userGroups: [\"system:nodes\"]",
        "userGroups: [\"system:serviceaccounts\"]",
        "userGroups: [\"system:unauthenticated\"]",
        "nonResourceURLs: [\"/healthz\", \"/livez\", \"/readyz\"",
    ] {
        assert!(yaml.contains(selector), "{selector}\n{yaml}");
    }
    assert!(
        yaml.contains("Anything never observed is unknown"),
        "{yaml}"
    );
    let file = write("observed.yaml", yaml);

    // kube-apiserver would start with it, and kubetrail's loader has nothing to say about it.
    let check = run(&["policy", "check", path(&file)]);
    assert_eq!(check.code, 0, "{}{}", check.out, check.err);
    assert_eq!(check.out, "", "no diagnostic");
    assert!(check.err.contains("(0 warnings)"), "{}", check.err);

    // Against itself: no difference, exit 0.
    let same = run(&[
        "policy",
        "observed",
        "--data",
        data,
        "--against",
        path(&file),
    ]);
    assert_eq!(same.code, 0, "{}{}", same.out, same.err);
    assert_eq!(same.out, "");
    assert!(
        same.err.contains(&format!(
            "no difference with what was recorded ({} events",
            succeeded().1
        )),
        "{}",
        same.err
    );

    // The same groups as rows.
    let table = run(&["policy", "observed", "--data", data, "--format", "table"]);
    assert_eq!(table.code, 0, "{}", table.err);
    assert!(table.out.starts_with("CLUSTER "), "{}", table.out);
    let kubelet = line_starting(&table.out, "default  nodes ");
    assert!(
        kubelet.contains("Metadata") || kubelet.contains("Request"),
        "{kubelet}"
    );
    let json = run(&["policy", "observed", "--data", data, "--format", "json"]);
    assert_eq!(json.code, 0, "{}", json.err);
    let groups: Vec<Value> = json
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: u64 = groups.iter().map(|g| g["events"].as_u64().unwrap()).sum();
    assert_eq!(events, succeeded().0);
    let readyz = groups
        .iter()
        .find(|g| g["target"]["path"] == "/readyz" && g["class"] == "unauthenticated")
        .unwrap();
    assert_eq!(readyz["stages"], serde_json::json!(["ResponseComplete"]));
    assert!(readyz["levels"]["Metadata"]["events"].as_u64().unwrap() > 0);

    // Outside the range there is nothing to read a policy from.
    let before = run(&[
        "policy",
        "observed",
        "--data",
        data,
        "--since",
        "2020-01-01T00:00:00Z",
        "--until",
        "2020-01-02T00:00:00Z",
    ]);
    assert_eq!(before.code, 2, "{}", before.out);
    assert!(before.err.contains("no event is stored"), "{}", before.err);
}

#[test]
fn against_the_generated_policy_it_names_what_gen_records_differently() {
    let data = path(&fixture().2);
    let generated = run(&["policy", "generate"]);
    assert_eq!(generated.code, 0);
    let file = write("generated.yaml", &generated.out);
    let name = path(&file);
    let r = run(&["policy", "observed", "--data", data, "--against", name]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    let says = |prefix: &str, policy: &str, recorded: &str| {
        let line = line_starting(&r.out, prefix);
        assert!(
            line.contains(&format!(": {name} says {policy} (rule ")),
            "{line}"
        );
        assert!(
            line.contains(&format!(", recorded {recorded} (since ")),
            "{line}"
        );
    };
    // The generated policy silences what gen records at Metadata: the control plane's watches, the health
    // probes, Kubernetes Event writes.
    says("pods watch by the control plane:", "None", "Metadata");
    says("/readyz get by anonymous users:", "None", "Metadata");
    says("/livez get by anonymous users:", "None", "Metadata");
    says("events create by nodes in ", "None", "Metadata");
    // Secrets and tokens at Metadata, never with bodies: gen's token reviews carry theirs.
    says(
        "tokenreviews.authentication.k8s.io create by service accounts:",
        "Metadata",
        "Request",
    );
    // gen writes ResponseComplete only; the policy keeps ResponseStarted of exec sessions.
    let exec = line_starting(&r.out, "pods/exec create by users in ");
    assert!(
        exec.contains(&format!(": {name} keeps ResponseStarted (rule ")),
        "{exec}"
    );
    assert!(exec.contains(", never recorded ("), "{exec}");
    // Where they agree, nothing: the ci runner's secrets at Metadata, pod creates at Request, and the
    // RequestReceived stage that both leave out.
    for agrees in [
        "secrets create by service accounts",
        "pods create by service accounts",
        "pods create by the control plane",
    ] {
        assert!(!r.out.contains(agrees), "{agrees}\n{}", r.out);
    }
    assert!(!r.out.contains("RequestReceived"), "{}", r.out);
    assert!(
        r.err.contains(&format!(
            " differences with what was recorded ({} events",
            succeeded().1
        )),
        "{}",
        r.err
    );

    let json = run(&[
        "policy",
        "observed",
        "--data",
        data,
        "--against",
        name,
        "--format",
        "json",
    ]);
    assert_eq!(json.code, 1);
    let differences: Vec<Value> = json
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(differences.len(), r.out.lines().count());
    let readyz = differences
        .iter()
        .find(|d| d["target"]["path"] == "/readyz")
        .unwrap();
    assert_eq!(readyz["difference"], "level");
    assert_eq!(readyz["policy"], "None");
    assert_eq!(readyz["recorded"], "Metadata");
    assert_eq!(readyz["class"], "unauthenticated");
    assert!(
        readyz["message"]
            .as_str()
            .unwrap()
            .starts_with("/readyz get by anonymous users: ")
    );

    // A rule for one username among identities that share its groups: Prometheus's watches silenced,
    // kube-state-metrics' (same namespace, same groups, same watch) not. The requests of the user a rule
    // names are compared as that user's.
    let noisy = run(&[
        "policy",
        "generate",
        "--noisy-user",
        "system:serviceaccount:monitoring:prometheus",
    ]);
    let noisy = write("noisy.yaml", &noisy.out);
    let r = run(&[
        "policy",
        "observed",
        "--data",
        data,
        "--against",
        path(&noisy),
    ]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    let silenced: Vec<&str> = r
        .out
        .lines()
        .filter(|l| {
            l.starts_with("pods watch by service accounts:") && l.contains(" says None (rule ")
        })
        .collect();
    assert_eq!(silenced.len(), 1, "{}", r.out);
    assert!(
        silenced[0].contains(", recorded Metadata (since "),
        "{}",
        silenced[0]
    );
}

/// The time of an event line.
fn received(event: &Value) -> jiff::Timestamp {
    event["requestReceivedTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_level_that_changed_is_named_with_the_time_it_changed() {
    let (tmp, lines, _) = fixture();
    // The ci runner's secret creates were recorded with their request until `cut`, at Metadata after it:
    // someone changed the policy.
    let is_secret_create =
        |e: &Value| e["verb"] == "create" && e["objectRef"]["resource"] == "secrets";
    let mut events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut times: Vec<jiff::Timestamp> = events
        .iter()
        .filter(|e| is_secret_create(e))
        .map(received)
        .collect();
    times.sort();
    assert!(times.len() >= 10, "{} secret creates", times.len());
    let cut = times[times.len() / 2];
    for e in events.iter_mut().filter(|e| is_secret_create(e)) {
        if received(e) < cut {
            e["level"] = "Request".into();
            e["requestObject"] = serde_json::json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "build-token"}});
        } else {
            e["level"] = "Metadata".into();
            let object = e.as_object_mut().unwrap();
            object.remove("requestObject");
            object.remove("responseObject");
        }
    }
    let changed: String = events.iter().map(|e| format!("{e}\n")).collect();
    let data = import(tmp.path(), "changed", &changed);
    let data = path(&data);
    let policy = write(
        "secrets-at-request.yaml",
        r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Request
    verbs: ["create"]
    resources:
      - group: ""
        resources: ["secrets"]
  - level: Metadata
"#,
    );
    let name = path(&policy);
    let r = run(&["policy", "observed", "--data", data, "--against", name]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    let line = line_starting(&r.out, "secrets create by service accounts in ci: ");
    let expected = format!(
        "secrets create by service accounts in ci: {name} says Request (rule 0, line 5), recorded Metadata (since "
    );
    assert!(line.starts_with(&expected), "{line}");
    let since: jiff::Timestamp = line[expected.len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(since, cut, "{line}");
    let after = times.iter().filter(|t| **t >= cut).count();
    assert!(line.ends_with(&format!(", {after} events)")), "{line}");
    // Before the cut the policy and the log agree: no line for the creates recorded at Request.
    let secrets: Vec<&str> = r
        .out
        .lines()
        .filter(|l| l.starts_with("secrets create by "))
        .collect();
    assert_eq!(secrets, [line], "{}", r.out);

    // The observed policy keeps the lowest level and says the other was recorded too.
    let observed = run(&["policy", "observed", "--data", data]);
    assert_eq!(observed.code, 0, "{}", observed.err);
    assert!(
        observed
            .out
            .contains("# secrets create by service accounts was also recorded at Request: "),
        "{}",
        observed.out
    );
    let table = run(&["policy", "observed", "--data", data, "--format", "table"]);
    let secrets = line_starting(&table.out, "default  service-accounts  secrets ");
    assert!(
        secrets.contains(&format!("Metadata ({after}), Request (")),
        "{secrets}"
    );
}
