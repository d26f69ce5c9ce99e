//! `kubetrail setup kubernetes` as a user runs it: the base renders with `kubectl kustomize`, every rendered
//! object validates offline against Kubernetes 1.30's schemas (`kubernetes-validate --strict`, from PyPI;
//! scripts/test installs it), and the objects fit together: the pods are locked down, the Service and the
//! webhook kubeconfig name the same port, the config points into the Secret's mount.

use std::path::Path;
use std::process::Command as Process;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn setup(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("kubetrail")
        .unwrap()
        .args(["setup", "kubernetes", "--out"])
        .arg(out)
        .args(extra)
        .assert()
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `kubectl kustomize DIR`, one value per object (Debian's kubectl 1.20 and current ones render the base).
fn render(dir: &Path) -> Vec<Value> {
    let out = Process::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is missing: install kubernetes-client (scripts/test does)");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("rendered.yaml"), &text).unwrap();
    text.split("\n---\n").map(yaml).collect()
}

/// The object of `kind` named `name`, or else one whose name is `name` plus kustomize's hash suffix.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let named = |exact: bool| {
        objects.iter().find(move |o| {
            o["kind"] == kind
                && o["metadata"]["name"].as_str().is_some_and(|n| {
                    n == name
                        || !exact
                            && n.strip_prefix(name)
                                .and_then(|rest| rest.strip_prefix('-'))
                                .is_some_and(|h| {
                                    h.len() == 10 && h.bytes().all(|b| b.is_ascii_alphanumeric())
                                })
                })
        })
    };
    named(true)
        .or_else(|| named(false))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn base_renders_validates_and_fits_together() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k8s");
    let out = setup(
        &dir,
        &[
            "--namespace",
            "audit",
            "--service",
            "trail",
            "--apiserver-cidr",
            "10.0.0.0/28",
            "--storage",
            "50Gi",
            "--storage-class",
            "fast",
        ],
    )
    .success()
    .stdout(predicate::str::contains("kubectl apply -k"));
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
    assert!(!stdout.contains("PRIVATE KEY"), "no key printed");

    let kubeconfig = yaml(&std::fs::read_to_string(dir.join("webhook-kubeconfig.yaml")).unwrap());
    let url = kubeconfig["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(url, "https://trail.audit.svc:8443/k8s-audit");

    let objects = render(&dir);
    for o in &objects {
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "audit", "{}", o["kind"]);
        }
    }

    let sts = find(&objects, "StatefulSet", "trail");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        find(&objects, "ServiceAccount", "trail")["automountServiceAccountToken"],
        false
    );
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(psc["fsGroup"], 65532, "the data volume writable");
    let c = &pod["containers"][0];
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());
    // Each replica archives under its own name (the pod's), so replicas never share a manifest chain.
    assert_eq!(c["env"][0]["name"], "KUBETRAIL_REPLICA");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
    }
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "50Gi");
    assert_eq!(claim["spec"]["storageClassName"], "fast");
    let mount = |name: &str| -> String {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no mount {name}"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    assert_eq!(
        mount(claim["metadata"]["name"].as_str().unwrap()),
        "/var/lib/kubetrail"
    );

    // The Secret: made by kustomize from the files, referenced by its hashed name, owner-only files.
    let tls = volume("tls");
    assert_eq!(tls["secret"]["defaultMode"], 0o400);
    let secret = find(&objects, "Secret", "trail-tls");
    assert_eq!(tls["secret"]["secretName"], secret["metadata"]["name"]);
    let data = &secret["data"];
    assert_eq!(
        data["tls.key"].as_str().map(unbase64),
        Some(key.into_bytes()),
        "server.key in the Secret"
    );
    assert!(data["tls.crt"].is_string() && data["ca.crt"].is_string());

    // The config: listens where the container port is, reads TLS from the Secret's mount.
    let cm = find(&objects, "ConfigMap", "trail-config");
    assert_eq!(
        volume("config")["configMap"]["name"],
        cm["metadata"]["name"]
    );
    let config = yaml(cm["data"]["kubetrail.yaml"].as_str().unwrap());
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(config["listen"], format!("0.0.0.0:{port}"));
    assert_eq!(config["data"], "/var/lib/kubetrail");
    let tls_dir = mount("tls");
    for (k, file) in [
        ("cert", "tls.crt"),
        ("key", "tls.key"),
        ("client_ca", "ca.crt"),
    ] {
        assert_eq!(config["tls"][k], format!("{tls_dir}/{file}"));
        assert!(data[file].is_string(), "{file} in the Secret");
    }
    assert_eq!(
        config["auth"]["identities"],
        serde_json::json!([{"name": "apiserver", "client_cert_cn": "kube-apiserver-audit", "role": "ingest"}])
    );
    let names = config["server_names"].as_array().unwrap();
    assert!(names.iter().any(|n| n == "trail.audit.svc"), "{names:?}");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "serve",
            "--config",
            &format!("{}/kubetrail.yaml", mount("config"))
        ]
    );

    // The Service: the kubeconfig's port, onto the container's.
    let svc = find(&objects, "Service", "trail");
    assert_eq!(svc["metadata"]["name"], "trail");
    let sp = &svc["spec"]["ports"][0];
    assert_eq!(sp["port"], 8443);
    assert!(url.contains(&format!(":{}/", sp["port"])));
    assert_eq!(sp["targetPort"], c["ports"][0]["name"]);
    assert_eq!(
        svc["spec"]["selector"],
        sts["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        sts["spec"]["template"]["metadata"]["labels"],
        sts["spec"]["selector"]["matchLabels"]
    );

    // The NetworkPolicy: the port from the apiserver's CIDR and the namespace, nothing else.
    let np = find(&objects, "NetworkPolicy", "trail");
    let rule = &np["spec"]["ingress"][0];
    assert_eq!(np["spec"]["ingress"].as_array().unwrap().len(), 1);
    assert_eq!(rule["ports"][0]["port"], "https");
    assert_eq!(
        rule["from"],
        serde_json::json!([{"ipBlock": {"cidr": "10.0.0.0/28"}}, {"podSelector": {}}])
    );
    find(&objects, "PodDisruptionBudget", "trail");
    assert!(!objects.iter().any(|o| o["kind"] == "ServiceMonitor"));

    validate(&dir.join("rendered.yaml"));
}

#[test]
fn service_monitor_and_console_cidr_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k8s");
    setup(
        &dir,
        &["--service-monitor", "--console-cidr", "192.168.0.0/16"],
    )
    .success();
    let objects = render(&dir);
    let sm = find(&objects, "ServiceMonitor", "kubetrail");
    assert_eq!(sm["spec"]["endpoints"][0]["scheme"], "https");
    let ca = find(&objects, "ConfigMap", "kubetrail-ca");
    assert_eq!(
        sm["spec"]["endpoints"][0]["tlsConfig"]["ca"]["configMap"]["name"],
        ca["metadata"]["name"]
    );
    let config = yaml(
        find(&objects, "ConfigMap", "kubetrail-config")["data"]["kubetrail.yaml"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(config["metrics"]["public"], true, "Prometheus has no token");
    let np = find(&objects, "NetworkPolicy", "kubetrail");
    let from = np["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert!(from.contains(&serde_json::json!({"ipBlock": {"cidr": "192.168.0.0/16"}})));
    assert!(from.contains(&serde_json::json!({"ipBlock": {"cidr": "0.0.0.0/0"}})));
    validate(&dir.join("rendered.yaml"));
}

#[test]
fn refuses_bad_inputs_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k8s");
    for (args, says) in [
        (&["--namespace", "Audit"][..], "--namespace `Audit`"),
        (&["--storage", "20 GB"], "--storage"),
        (&["--apiserver-cidr", "10.0.0.0"], "--apiserver-cidr"),
        (&["--console-cidr", "10.0.0.0/40"], "--console-cidr"),
    ] {
        setup(&dir, args)
            .failure()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    assert!(!dir.exists(), "nothing written on a usage error");
    setup(&dir, &[]).success();
    setup(&dir, &[])
        .failure()
        .stderr(predicate::str::contains("--force"));
}

/// Every object valid against Kubernetes 1.30 (strict: no unknown fields); CRDs it has no schema for are
/// only warned about.
fn validate(rendered: &Path) {
    let out = Process::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(rendered)
        .output()
        .expect(
            "kubernetes-validate is missing: pip install kubernetes-validate (scripts/test does)",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubernetes-validate: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("passed for resource statefulset/"),
        "{stdout}"
    );
}

fn unbase64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let s: String = s.split_whitespace().collect();
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let digits: Vec<u32> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | d << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}
