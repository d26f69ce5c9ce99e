//! The built-in pack: every rule loads, is documented, and behaves on its fixtures.

use std::collections::{BTreeMap, BTreeSet};

use kubetrail_detect::{Alert, Config, Document, Engine, Level, RuleSet};

/// Rules that only feed correlations (they raise no alert of their own).
const INPUTS: &[&str] = &[
    "kt-forbidden",
    "kt-secret-get",
    "kt-rbac-change",
    "kt-workload-change",
    "kt-host-pod-created",
    "kt-exec-any",
];

/// Other alerting rules that a rule's positive fixtures also raise, and why that is right.
const ALSO_RAISED: &[(&str, &[&str])] = &[
    // The request hidden behind a reused auditID is a production secret read: both alerts stand.
    ("kt-audit-id-reuse", &["kt-secret-read-prod"]),
    // The address fixture holds the generated ForbiddenBurst too (one identity denied on many resources)
    // before the many identities denied from one address.
    // The generated burst tries secrets among other resources: each denied secret read is reported low.
    ("kt-forbidden-burst-user", &["kt-secret-denied"]),
    (
        "kt-forbidden-burst-ip",
        &["kt-forbidden-burst-user", "kt-secret-denied"],
    ),
    // The generated DaemonSet in kube-system is privileged, shares the host's PID and network namespaces and
    // mounts / : each finding stands on its own.
    (
        "kt-daemonset-system",
        &[
            "kt-pod-host-network",
            "kt-pod-host-pid-ipc",
            "kt-pod-privileged",
            "kt-pod-sensitive-hostpath",
        ],
    ),
    // The generated CronJob in kube-system runs with hostNetwork.
    ("kt-cronjob-system", &["kt-pod-host-network"]),
    // The generated exec into kube-system, and the stolen token asking what it may do, use service-account
    // tokens from outside the cluster.
    ("kt-exec-prod-system", &["kt-sa-token-external"]),
    ("kt-self-discovery", &["kt-sa-token-external"]),
    // The host pod and the exec into it are alerts of their own too.
    (
        "kt-host-pod-then-exec",
        &[
            "kt-exec-other",
            "kt-pod-privileged",
            "kt-pod-sensitive-hostpath",
        ],
    ),
    // Panther's modified system ClusterRole now grants every verb (write verbs among them).
    (
        "kt-rbac-system-role-changed",
        &["kt-rbac-role-dangerous", "kt-rbac-role-write"],
    ),
    // A role that may create pods/exec grants a write verb too (the low record of RBAC growth).
    ("kt-rbac-role-exec-proxy-token", &["kt-rbac-role-write"]),
    // The internet's scanner probing /vendor/phpunit/ without credentials: a public endpoint and a scanner.
    ("kt-anonymous-public", &["kt-api-scanner-probe"]),
    ("kt-api-scanner-probe", &["kt-anonymous-public"]),
    // A controller-named account in kube-system is also a service account created in a system namespace.
    ("kt-sa-control-plane-name", &["kt-sa-system-namespace"]),
    // Each refused read of the burst is reported on its own, at low.
    ("kt-secret-denied-burst", &["kt-secret-denied"]),
    // The secret read while impersonating system:admin is also a production secret read.
    ("kt-impersonate-privileged", &["kt-secret-read-prod"]),
];

fn load() -> RuleSet {
    let mut set = RuleSet::new();
    for f in kubetrail_rules::builtin() {
        set.add_file(f.name, f.yaml)
            .unwrap_or_else(|e| panic!("{} does not load:\n{e}", f.name));
    }
    set
}

fn engine(set: &RuleSet) -> Engine {
    Engine::new(set, Config::default()).unwrap_or_else(|e| panic!("the pack does not link: {e}"))
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty())
}

/// Alerts (first alerts and updates) of a fresh engine over the lines.
fn run(set: &RuleSet, text: &str) -> Vec<Alert> {
    let mut e = engine(set);
    let mut out = Vec::new();
    for l in lines(text) {
        e.process(l, &mut out)
            .unwrap_or_else(|err| panic!("{err}: {l}"));
    }
    e.flush(&mut out);
    out
}

fn also_raised(id: &str) -> BTreeSet<&'static str> {
    ALSO_RAISED
        .iter()
        .find(|(r, _)| *r == id)
        .map(|(_, also)| also.iter().copied().collect())
        .unwrap_or_default()
}

#[test]
fn every_rule_file_and_fixture_directory_is_listed() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let on_disk: BTreeSet<String> = std::fs::read_dir(format!("{dir}/rules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = kubetrail_rules::builtin()
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    assert_eq!(on_disk, listed, "list every file of rules/ in src/lib.rs");
    let on_disk: BTreeSet<String> = std::fs::read_dir(format!("{dir}/fixtures"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = kubetrail_rules::all_fixtures()
        .iter()
        .map(|f| f.rule_id.to_string())
        .collect();
    assert_eq!(
        on_disk, listed,
        "list every directory of fixtures/ in src/lib.rs"
    );
    for f in kubetrail_rules::builtin() {
        let docs = kubetrail_detect::parse_file(f.name, f.yaml).unwrap();
        assert!(
            docs.iter().any(|d| f.name.starts_with(&d.meta().id)
                || d.meta().id.starts_with(f.name.trim_end_matches(".yml"))),
            "{}: a file is named after the rules it holds",
            f.name
        );
    }
}

#[test]
fn every_rule_loads_and_links() {
    let set = load();
    let e = engine(&set);
    assert!(e.rules().count() >= 30, "{}", e.rules().count());
    assert!(set.correlations().count() >= 4);
}

#[test]
fn metadata_is_complete() {
    let set = load();
    let mut ids = BTreeSet::new();
    for d in set.documents() {
        let m = d.meta();
        let id = &m.id;
        assert!(ids.insert(id.clone()), "{id}: duplicate id");
        assert!(
            id.starts_with("kt-") && id.len() > 4,
            "{id}: ids are kt-<slug>"
        );
        assert!(
            id[3..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{id}: lowercase slug"
        );
        assert!(!m.title.trim().is_empty(), "{id}: title");
        assert!(
            matches!(m.status.as_deref(), Some("stable" | "test")),
            "{id}: status stable or test"
        );
        assert!(
            m.description.as_deref().is_some_and(|d| d.len() > 40),
            "{id}: description"
        );
        assert_eq!(m.author.as_deref(), Some("kubetrail"), "{id}: author");
        assert!(m.date.is_some(), "{id}: date");
        assert!(Level::ALL.contains(&m.level), "{id}: level");
        assert!(
            m.attack_techniques().count() >= 1,
            "{id}: an ATT&CK technique tag (attack.tNNNN)"
        );
        assert!(
            m.tags
                .iter()
                .any(|t| t.starts_with("attack.") && !t[7..].starts_with('t')),
            "{id}: an ATT&CK tactic tag"
        );
        assert!(
            m.tags
                .iter()
                .all(|t| t.starts_with("attack.") && t == &t.to_ascii_lowercase()),
            "{id}: tags are lowercase attack.* tags"
        );
        assert!(!m.falsepositives.is_empty(), "{id}: falsepositives");
        let runbook = m.extra_str("runbook").unwrap_or("");
        assert!(
            runbook.contains("kubetrail "),
            "{id}: the runbook names a kubetrail command"
        );
        if !INPUTS.contains(&id.as_str()) {
            assert!(runbook.len() > 200, "{id}: a runbook for a tier-1 analyst");
            assert!(
                runbook.contains("kubetrail timeline") || runbook.contains("kubetrail scope"),
                "{id}: the runbook looks at the actor's activity"
            );
            assert!(
                runbook.contains("scalate"),
                "{id}: the runbook says when to escalate"
            );
        }
        if let Document::Rule(_) = d {
            assert_eq!(m.logsource.product.as_deref(), Some("kubernetes"), "{id}");
            assert_eq!(m.logsource.service.as_deref(), Some("audit"), "{id}");
        }
        if INPUTS.contains(&id.as_str()) {
            assert_eq!(
                m.level,
                Level::Informational,
                "{id}: correlation inputs are informational"
            );
        }
        assert!(
            kubetrail_rules::fixtures(id).is_some(),
            "{id}: fixtures/{id}/ is missing"
        );
    }
    for f in kubetrail_rules::all_fixtures() {
        assert!(
            ids.contains(f.rule_id),
            "fixtures/{} has no rule",
            f.rule_id
        );
        assert!(
            lines(f.positive).count() >= 1,
            "{}: positive fixture",
            f.rule_id
        );
        assert!(
            lines(f.negative).count() >= 1,
            "{}: negative fixture",
            f.rule_id
        );
    }
}

#[test]
fn positive_fixtures_raise_their_rule() {
    let set = load();
    let e = engine(&set);
    let mut report = Vec::new();
    let mut mismatches = Vec::new();
    for fx in kubetrail_rules::all_fixtures() {
        let id = fx.rule_id;
        match set.get(id).unwrap() {
            Document::Rule(_) => {
                let mut others: BTreeSet<String> = BTreeSet::new();
                for l in lines(fx.positive) {
                    let matched: BTreeSet<String> = e
                        .matching_rules(l)
                        .unwrap_or_else(|err| panic!("{id}: {err}: {l}"))
                        .into_iter()
                        .map(|m| m.id.clone())
                        .collect();
                    assert!(matched.contains(id), "{id}: positive does not match: {l}");
                    others.extend(
                        matched
                            .into_iter()
                            .filter(|m| m != id && !INPUTS.contains(&m.as_str())),
                    );
                }
                // A correlation input shadows alerting rules (kt-exec-any is every exec): only the
                // alerting rules are held to the list.
                let want: BTreeSet<String> =
                    also_raised(id).into_iter().map(String::from).collect();
                if others != want && !INPUTS.contains(&id) {
                    mismatches.push(format!("{id}: also raised {others:?}, expected {want:?}"));
                }
                if !others.is_empty() {
                    report.push(format!("{id}: also {others:?}"));
                }
                if !INPUTS.contains(&id) {
                    let alerts = run(&set, fx.positive);
                    let n = alerts
                        .iter()
                        .filter(|a| a.rule.id == id)
                        .map(|a| a.count)
                        .max();
                    assert!(
                        n.is_some(),
                        "{id}: the engine raises no alert on the positive fixture"
                    );
                }
            }
            Document::Correlation(_) => {
                let alerts = run(&set, fx.positive);
                let raised: BTreeSet<&str> = alerts.iter().map(|a| a.rule.id.as_str()).collect();
                assert!(
                    raised.contains(id),
                    "{id}: the sequence does not fire it ({raised:?})"
                );
                let others: BTreeSet<String> = raised
                    .into_iter()
                    .filter(|r| *r != id)
                    .map(String::from)
                    .collect();
                let want: BTreeSet<String> =
                    also_raised(id).into_iter().map(String::from).collect();
                if others != want {
                    mismatches.push(format!("{id}: also raised {others:?}, expected {want:?}"));
                }
                if !others.is_empty() {
                    report.push(format!("{id}: also {others:?}"));
                }
            }
            Document::Filter(_) => panic!("{id}: the pack has no filters"),
        }
    }
    println!(
        "positive fixtures that raise other rules too:\n  {}",
        report.join("\n  ")
    );
    assert!(
        mismatches.is_empty(),
        "update ALSO_RAISED:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn negative_fixtures_do_not_raise_their_rule() {
    let set = load();
    let e = engine(&set);
    for fx in kubetrail_rules::all_fixtures() {
        let id = fx.rule_id;
        if let Document::Rule(_) = set.get(id).unwrap() {
            for l in lines(fx.negative) {
                let matched = e
                    .matching_rules(l)
                    .unwrap_or_else(|err| panic!("{id}: {err}: {l}"));
                assert!(
                    matched.iter().all(|m| m.id != id),
                    "{id}: the negative fixture matches: {l}"
                );
            }
        }
        let alerts = run(&set, fx.negative);
        assert!(
            alerts.iter().all(|a| a.rule.id != id),
            "{id}: the negative fixture raises it"
        );
    }
}

#[test]
fn anonymous_health_probes_never_alert() {
    let set = load();
    let e = engine(&set);
    let mut text = String::new();
    for (i, uri) in [
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/healthz/etcd",
        "/livez/ping",
        "/readyz/informer-sync",
        "/version/",
        "/readyz?verbose",
        "/livez?exclude=etcd",
        "/healthz/poststarthook/rbac/bootstrap-roles",
    ]
    .iter()
    .enumerate()
    {
        let line = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"probe-{i}","stage":"ResponseComplete","requestURI":"{uri}","verb":"get","user":{{"username":"system:anonymous","groups":["system:unauthenticated"]}},"sourceIPs":["203.0.113.{i}"],"userAgent":"kube-probe/1.30","responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-11-25T02:00:{i:02}.000000Z","stageTimestamp":"2026-11-25T02:00:{i:02}.001000Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\""}}}}"#
        );
        let matched = e.matching_rules(&line).unwrap();
        assert!(
            matched.is_empty(),
            "{uri}: {:?}",
            matched.iter().map(|m| &m.id).collect::<Vec<_>>()
        );
        text.push_str(&line);
        text.push('\n');
    }
    assert_eq!(run(&set, &text), Vec::new());
    // Not a health probe: a path that only starts like one.
    let line = text
        .lines()
        .next()
        .unwrap()
        .replace("\"/healthz\"", "\"/healthzz\"");
    let matched: Vec<String> = e
        .matching_rules(&line)
        .unwrap()
        .into_iter()
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(matched, ["kt-anonymous-allowed"]);
}

#[test]
fn levels_page_only_for_what_matters() {
    let set = load();
    let mut by_level: BTreeMap<Level, Vec<String>> = BTreeMap::new();
    for d in set.documents() {
        by_level
            .entry(d.meta().level)
            .or_default()
            .push(d.meta().id.clone());
    }
    for (l, ids) in &by_level {
        println!("{l}: {}", ids.join(", "));
    }
    let level = |id: &str| set.get(id).unwrap().meta().level;
    for id in [
        "kt-rbac-bind-cluster-admin",
        "kt-impersonate-privileged",
        "kt-node-proxy-command",
    ] {
        assert_eq!(level(id), Level::Critical, "{id}");
    }
    for id in [
        "kt-secret-read-prod",
        "kt-pod-privileged",
        "kt-exec-prod-system",
        "kt-pod-sensitive-hostpath",
    ] {
        assert_eq!(level(id), Level::High, "{id}");
    }
    for id in ["kt-self-discovery", "kt-exec-other"] {
        assert_eq!(level(id), Level::Low, "{id}");
    }
}

/// Every command a runbook tells the analyst to run exists, and every `--where` expression parses.
#[test]
fn runbook_commands_are_valid() {
    let set = load();
    let mut queries = 0;
    // The stream rules' runbooks too (they have no detection, so they are not in the rule set).
    let stream: Vec<(String, String)> = kubetrail_rules::stream()
        .iter()
        .map(|f| {
            let r = kubetrail_detect::watch::StreamRule::parse(f.name, f.yaml).unwrap();
            (r.id, r.runbook.unwrap_or_default())
        })
        .collect();
    assert_eq!(stream.len(), 3);
    let runbooks = set
        .documents()
        .iter()
        .map(|d| {
            (
                d.meta().id.clone(),
                d.meta().extra_str("runbook").unwrap_or("").to_string(),
            )
        })
        .chain(stream);
    for (id, runbook) in runbooks {
        for line in runbook.lines().filter(|l| l.contains("kubetrail ")) {
            let cmd = &line[line.find("kubetrail ").unwrap() + "kubetrail ".len()..];
            let sub = cmd.split_whitespace().next().unwrap_or("");
            let words: Vec<&str> = cmd.split_whitespace().collect();
            if words.len() > 1 && words[0] == "policy" {
                assert_eq!(words[1], "observed", "{id}: {line}");
            }
            assert!(
                [
                    "who", "timeline", "scope", "query", "gaps", "policy", "coverage"
                ]
                .contains(&sub),
                "{id}: unknown command `kubetrail {sub}` in: {line}"
            );
            match sub {
                "timeline" | "scope" => assert!(cmd.contains("--user "), "{id}: {line}"),
                "who" => assert!(cmd.split_whitespace().count() >= 3, "{id}: {line}"),
                _ => {}
            }
            assert!(
                cmd.contains("--since "),
                "{id}: bound the time range: {line}"
            );
            if sub == "query" {
                let expr = cmd
                    .split_once("--where '")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(e, _)| e)
                    .unwrap_or_else(|| panic!("{id}: query without a quoted --where: {line}"));
                let filled = expr
                    .replace("<actor>", "alice@example.com")
                    .replace("<source ip>", "198.51.100.7")
                    .replace("<namespace>", "prod")
                    .replace("<pod>", "api-1")
                    .replace("<name>", "generic-garbage-collector")
                    .replace("<tool>", "peirates");
                kubetrail_query::parse(&filled)
                    .unwrap_or_else(|e| panic!("{id}: `{expr}` does not parse: {e}"));
                queries += 1;
            }
        }
    }
    assert!(queries > 20, "{queries}");
}
