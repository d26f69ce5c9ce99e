//! Runs the cases translated from Kubernetes' and audit2rbac's own tests (tests/fixtures/*.txt; each file
//! names its source on its first line). The objects of a case go through `parse_snapshot` as a `List`.

use std::collections::HashMap;

use kubetrail_rbac::{
    Access, Key, Kind, PolicyRule, State, Subject, Used, UserRef, applies_to, parse_snapshot,
    propose, rule_allows,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        text.starts_with("# provenance: "),
        "{name} starts with its provenance line"
    );
    text
}

fn kv<'a>(tokens: &[&'a str]) -> HashMap<&'a str, &'a str> {
    tokens.iter().filter_map(|t| t.split_once('=')).collect()
}

/// A rule field: `-` is an empty list, `""` an empty string.
fn list(tok: &str) -> Vec<String> {
    if tok == "-" {
        return Vec::new();
    }
    tok.split(',')
        .map(|s| {
            if s == "\"\"" {
                String::new()
            } else {
                s.to_string()
            }
        })
        .collect()
}

/// `VERBS GROUPS RESOURCES URLS [NAMES]`.
fn rule(tokens: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: list(tokens[0]),
        api_groups: list(tokens[1]),
        resources: list(tokens[2]),
        non_resource_urls: list(tokens[3]),
        resource_names: tokens.get(4).map(|t| list(t)).unwrap_or_default(),
    }
}

/// `Kind:name` or `ServiceAccount:name@namespace`.
fn subject(tok: &str) -> Subject {
    let (kind, rest) = tok.split_once(':').expect("Kind:name");
    let (name, namespace) = rest.split_once('@').unwrap_or((rest, ""));
    Subject {
        kind: kind.to_string(),
        name: name.to_string(),
        namespace: namespace.to_string(),
    }
}

fn subject_json(s: &Subject) -> Value {
    let mut v = json!({"kind": s.kind, "name": s.name});
    if s.kind == "ServiceAccount" {
        v["namespace"] = json!(s.namespace);
    } else {
        v["apiGroup"] = json!("rbac.authorization.k8s.io");
    }
    v
}

fn user(kv: &HashMap<&str, &str>) -> UserRef {
    UserRef {
        name: kv.get("user").copied().unwrap_or("").to_string(),
        groups: kv
            .get("groups")
            .filter(|g| !g.is_empty())
            .map(|g| g.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

fn access(kv: &HashMap<&str, &str>) -> Access {
    let get = |k| kv.get(k).copied().unwrap_or("");
    match kv.get("path") {
        Some(p) => Access::non_resource(get("verb"), p),
        None => Access::resource(get("verb"), get("group"), get("resource"), get("sub"))
            .in_namespace(get("ns"))
            .with_name(get("name")),
    }
}

fn used(kv: &HashMap<&str, &str>) -> Used {
    let get = |k| kv.get(k).copied().unwrap_or("").to_string();
    let opt = |k| kv.get(k).map(|s| s.to_string()).filter(|s| !s.is_empty());
    Used {
        verb: get("verb"),
        api_group: get("group"),
        resource: get("resource"),
        subresource: get("sub"),
        namespace: opt("ns"),
        name: opt("name"),
        non_resource_url: opt("path"),
        count: 1,
        allowed: kv.get("allowed") != Some(&"false"),
    }
}

/// An expectation being collected from the lines after it.
enum Pending {
    None,
    Resolve(UserRef, Option<String>, Vec<PolicyRule>),
    Effective(String, Vec<PolicyRule>),
    Who(Access),
}

#[derive(Default)]
struct Case {
    name: String,
    objects: Vec<Value>,
    last_role: Option<usize>,
    standalone: Option<PolicyRule>,
    subjects: Vec<Subject>,
    last_reason: Option<String>,
    propose_user: Option<UserRef>,
    used: Vec<Used>,
    want_cluster: Vec<PolicyRule>,
    want_roles: Vec<(String, Vec<PolicyRule>)>,
}

impl Case {
    fn state(&self) -> State {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.objects});
        let snap = parse_snapshot(list.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert_eq!(snap.objects.len(), self.objects.len(), "{}", self.name);
        State::from_snapshot(&snap)
    }
}

/// Runs every case of a fixture; returns how many checks ran.
fn run(name: &str) -> usize {
    let text = fixture(name);
    let mut checks = 0;
    let mut case = Case::default();
    let mut pending = Pending::None;
    let finish = |case: &mut Case, pending: &mut Pending, checks: &mut usize| {
        let p = std::mem::replace(pending, Pending::None);
        match p {
            Pending::None => {}
            Pending::Resolve(user, ns, mut want) => {
                let mut got: Vec<PolicyRule> = case
                    .state()
                    .rules_for(&user)
                    .into_iter()
                    .filter(|g| g.namespace.is_none() || g.namespace == ns)
                    .map(|g| g.rule)
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "{}: rules for {user:?} in {ns:?}", case.name);
                *checks += 1;
            }
            Pending::Effective(role, want) => {
                let got = case
                    .state()
                    .effective_rules(&Key::new(Kind::ClusterRole, "", &role))
                    .expect("role exists");
                assert_eq!(got, want, "{}: effective rules of {role}", case.name);
                *checks += 1;
            }
            Pending::Who(_) => panic!("{}: who without expect", case.name),
        }
    };
    let end_case = |case: &mut Case, checks: &mut usize| {
        if let Some(user) = &case.propose_user {
            let p = propose(user, &[], &case.used);
            assert_eq!(
                p.cluster_rules, case.want_cluster,
                "{}: cluster rules",
                case.name
            );
            let got: Vec<(String, Vec<PolicyRule>)> = p
                .namespace_rules
                .iter()
                .map(|n| (n.namespace.clone(), n.rules.clone()))
                .collect();
            assert_eq!(got, case.want_roles, "{}: roles", case.name);
            assert_eq!(
                p.yaml.contains("kind: ClusterRole\n"),
                !case.want_cluster.is_empty(),
                "{}: yaml",
                case.name
            );
            *checks += 1;
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let (word, rest) = (tokens[0], &tokens[1..]);
        if !matches!(word, "expect-rule" | "expect") {
            finish(&mut case, &mut pending, &mut checks);
        }
        match word {
            "case" => {
                end_case(&mut case, &mut checks);
                case = Case {
                    name: rest.join(" "),
                    ..Case::default()
                };
            }
            "clusterrole" | "role" => {
                let (ns, name, extra) = if word == "role" {
                    (Some(rest[0]), rest[1], &rest[2..])
                } else {
                    (None, rest[0], &rest[1..])
                };
                let mut md = json!({"name": name});
                if let Some(ns) = ns {
                    md["namespace"] = json!(ns);
                }
                if let Some(labels) = kv(extra).get("labels") {
                    let m: serde_json::Map<String, Value> = labels
                        .split(',')
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect();
                    md["labels"] = Value::Object(m);
                }
                let kind = if ns.is_some() { "Role" } else { "ClusterRole" };
                case.objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": md, "rules": []}));
                case.last_role = Some(case.objects.len() - 1);
            }
            "rule" => {
                let r = rule(rest);
                match case.last_role {
                    Some(i) => case.objects[i]["rules"]
                        .as_array_mut()
                        .expect("rules")
                        .push(serde_json::to_value(&r).expect("json")),
                    None => case.standalone = Some(r),
                }
            }
            "aggregate" => {
                let sel: Value = serde_json::from_str(&rest.join(" ")).expect("selector JSON");
                let i = case.last_role.expect("aggregate after a clusterrole");
                let role = &mut case.objects[i];
                if role.get("aggregationRule").is_none() {
                    role["aggregationRule"] = json!({"clusterRoleSelectors": []});
                }
                role["aggregationRule"]["clusterRoleSelectors"]
                    .as_array_mut()
                    .expect("selectors")
                    .push(sel);
            }
            "rolebinding" | "clusterrolebinding" => {
                let (ns, name, role_kind, role, subjects) = if word == "rolebinding" {
                    (Some(rest[0]), rest[1], rest[2], rest[3], &rest[4..])
                } else {
                    (None, rest[0], "ClusterRole", rest[1], &rest[2..])
                };
                let mut md = json!({"name": name});
                if let Some(ns) = ns {
                    md["namespace"] = json!(ns);
                }
                let kind = if ns.is_some() {
                    "RoleBinding"
                } else {
                    "ClusterRoleBinding"
                };
                let subjects: Vec<Value> =
                    subjects.iter().map(|s| subject_json(&subject(s))).collect();
                case.objects.push(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": md,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                    "subjects": subjects,
                }));
                case.last_role = None;
            }
            "allow" | "deny" => {
                let kv = kv(rest);
                let d = case.state().authorize(&user(&kv), &access(&kv));
                assert_eq!(
                    d.allowed,
                    word == "allow",
                    "{}: {line} ({})",
                    case.name,
                    d.reason
                );
                case.last_reason = Some(d.reason);
                checks += 1;
            }
            "reason" => {
                assert_eq!(
                    case.last_reason.as_deref(),
                    Some(rest.join(" ").as_str()),
                    "{}",
                    case.name
                );
                checks += 1;
            }
            "match" | "nomatch" => {
                let r = case.standalone.as_ref().expect("a rule");
                assert_eq!(
                    rule_allows(&access(&kv(rest)), r),
                    word == "match",
                    "{}: {line}",
                    case.name
                );
                checks += 1;
            }
            "subjects" => case.subjects = rest.iter().map(|s| subject(s)).collect(),
            "applies" | "not" => {
                let kv = kv(rest);
                let ns = kv.get("ns").copied().unwrap_or("");
                let got = case.subjects.iter().any(|s| applies_to(&user(&kv), s, ns));
                assert_eq!(got, word == "applies", "{}: {line}", case.name);
                checks += 1;
            }
            "resolve" => {
                let kv = kv(rest);
                pending =
                    Pending::Resolve(user(&kv), kv.get("ns").map(|s| s.to_string()), Vec::new());
            }
            "effective" => pending = Pending::Effective(rest[0].to_string(), Vec::new()),
            "expect-rule" => match &mut pending {
                Pending::Resolve(_, _, want) | Pending::Effective(_, want) => want.push(rule(rest)),
                _ => panic!("{}: expect-rule without resolve/effective", case.name),
            },
            "who" => pending = Pending::Who(access(&kv(rest))),
            "expect" => {
                let Pending::Who(q) = std::mem::replace(&mut pending, Pending::None) else {
                    panic!("{}: expect without who", case.name)
                };
                let got: Vec<String> = case
                    .state()
                    .who_can(&q)
                    .allowed
                    .iter()
                    .map(|a| format!("{}:{}", a.subject.kind, a.subject.name))
                    .collect();
                assert_eq!(got, rest.to_vec(), "{}: who can {q:?}", case.name);
                checks += 1;
            }
            "user" => {
                let mut kv = kv(&rest[1..]);
                kv.insert("user", rest[0]);
                case.propose_user = Some(user(&kv));
            }
            "used" => case.used.push(used(&kv(rest))),
            "expect-cluster" => case.want_cluster.push(rule(rest)),
            "expect-role" => {
                let r = rule(&rest[1..]);
                match case.want_roles.iter_mut().find(|(n, _)| n == rest[0]) {
                    Some((_, rules)) => rules.push(r),
                    None => case.want_roles.push((rest[0].to_string(), vec![r])),
                }
            }
            other => panic!("{name}: unknown line {other:?}"),
        }
    }
    finish(&mut case, &mut pending, &mut checks);
    end_case(&mut case, &mut checks);
    checks
}

#[test]
fn authorizer_cases_from_rbac_test_go() {
    assert_eq!(run("authorizer.txt"), 34);
}

#[test]
fn rule_matching_cases_from_rbac_test_go() {
    assert_eq!(run("rules.txt"), 70);
}

#[test]
fn rule_matching_cases_from_evaluation_helpers_go() {
    assert_eq!(run("evaluation_helpers.txt"), 19);
}

#[test]
fn subject_matching_cases_from_rule_test_go() {
    assert_eq!(run("subjects.txt"), 13);
}

#[test]
fn rule_resolution_cases_from_rule_test_go() {
    assert_eq!(run("resolver.txt"), 4);
}

#[test]
fn subject_locator_cases_from_subject_locator_test_go() {
    assert_eq!(run("subject_locator.txt"), 6);
}

#[test]
fn aggregation_cases_from_the_controller_test() {
    assert_eq!(run("aggregation.txt"), 9);
}

#[test]
fn audit2rbac_generation_cases() {
    assert_eq!(run("audit2rbac.txt"), 7);
}
