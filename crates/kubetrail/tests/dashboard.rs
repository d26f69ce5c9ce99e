//! The Grafana dashboard (`deploy/grafana/kubetrail-dashboard.json`) names only metrics `kubetrail serve`
//! exposes: a collector with TLS, an identity, an alert destination, a sink and a followed file (so every
//! family is registered) is scraped, and every `kubetrail_*` name in the dashboard's queries must be among
//! its series. The dashboard's shape is checked as Grafana reads it (panels placed, queries with ids).

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

mod common;

use common::{ServeOverTls, free_port, https, receiver, write_cert};

const TOKEN: &str = "dashboard-reader-0123456789abcdef01234567";

/// Every series name `/metrics` can show: the samples present, and for each family declared, the names its
/// type gives its samples (a family without a series yet declares itself only).
fn exposed(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_string());
        }
    }
    out
}

/// Every query (`expr`) in the dashboard, with its panel's title.
fn queries(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            let title = m.get("title").and_then(Value::as_str).unwrap_or(title);
            if let Some(Value::String(e)) = m.get("expr") {
                out.push((title.to_string(), e.clone()));
            }
            for v in m.values() {
                queries(v, title, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, title, out)),
        _ => {}
    }
}

/// The `kubetrail_*` metric names an expression refers to.
fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("kubetrail_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_the_dashboard_names_exists() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/kubetrail-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();

    // Shape: placed panels with unique ids; every query has a reference id and reads the chosen source.
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() > 10);
    let mut ids = HashSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        assert!(p["gridPos"]["w"].as_u64().unwrap() <= 24, "{p}");
        if p["type"] != "row" {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{p}");
            assert!(targets.iter().all(|t| t["refId"].is_string()), "{p}");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        }
    }

    // A collector with every family registered.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    write_cert(&cert, &key, 90);
    let token = dir.join("reader.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let followed = dir.join("audit.log");
    std::fs::write(&followed, "").unwrap();
    let (hook, _alerts) = receiver();
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {data}\ntls: {{cert: {cert}, key: {key}}}\n\
             auth:\n  identities:\n    - {{name: prometheus, token_file: {token}, role: reader}}\n\
             files: [{{path: {followed}}}]\n\
             alerts:\n  destinations:\n    - {{type: webhook, url: 'http://127.0.0.1:{hook}/hook'}}\n\
             sinks:\n  - {{name: siem, type: syslog, address: '127.0.0.1:9', tls: false}}\n",
            data = dir.join("data").display(),
            cert = cert.display(),
            key = key.display(),
            token = token.display(),
            followed = followed.display(),
        ),
    )
    .unwrap();
    let _server = ServeOverTls::start(&config, &dir.join("serve.log"), port);
    let (status, text) = https(port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200, "{text}");
    let exposed = exposed(&text);

    let mut all = Vec::new();
    queries(&dashboard, "", &mut all);
    assert!(all.len() > 20, "{all:?}");
    let mut missing = Vec::new();
    for (title, expr) in &all {
        let found = names(expr);
        assert!(
            !found.is_empty(),
            "`{title}` queries no kubetrail metric: {expr}"
        );
        for name in found {
            if !exposed.contains(&name) {
                missing.push(format!("{name} (panel `{title}`)"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard names metrics serve does not expose: {missing:#?}"
    );
}
