//! The RBAC snapshot agrees with the traffic: every binding an `allow` reason names exists (at the start, or
//! once a scenario's own logged write made it), binds the role the reason names to a subject the user
//! matches, and that role's rules cover the request; no `forbid` is allowed by any binding.

use std::collections::{BTreeMap, BTreeSet};

use kubetrail_gen::{Config, Generator, access_grant as ag, rbac_snapshot};
use serde_json::Value;

/// The RBAC objects as a cluster holds them: (kind, namespace, name) to object; `None` when a write without a
/// logged body left it unknown.
type State = BTreeMap<(String, String, String), Option<Value>>;

fn key(kind: &str, ns: &str, name: &str) -> (String, String, String) {
    (kind.to_string(), ns.to_string(), name.to_string())
}

fn load(snapshot: &str) -> State {
    let list: Value = serde_json::from_str(snapshot).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["apiVersion"], "v1");
    let mut state = State::new();
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["apiVersion"], "rbac.authorization.k8s.io/v1");
        let m = &item["metadata"];
        assert!(m["uid"].is_string() && m["resourceVersion"].is_string());
        assert!(m["creationTimestamp"].is_string());
        let kind = item["kind"].as_str().unwrap();
        let ns = m["namespace"].as_str().unwrap_or("");
        assert_eq!(kind.starts_with("Cluster"), ns.is_empty(), "{item}");
        let k = key(kind, ns, m["name"].as_str().unwrap());
        assert!(state.insert(k, Some(item.clone())).is_none(), "{item}");
    }
    state
}

/// A JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// What a request asks, as the authorizer sees it.
struct Attrs<'a> {
    user: &'a str,
    groups: Vec<&'a str>,
    verb: &'a str,
    group: &'a str,
    resource: String,
    name: &'a str,
    namespace: &'a str,
    path: Option<&'a str>,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn attrs(e: &Value) -> Attrs<'_> {
    let o = &e["objectRef"];
    let verb = s(&e["verb"]);
    let (resource, sub) = (s(&o["resource"]), s(&o["subresource"]));
    Attrs {
        user: s(&e["user"]["username"]),
        groups: e["user"]["groups"]
            .as_array()
            .map(|g| g.iter().map(s).collect())
            .unwrap_or_default(),
        verb,
        group: s(&o["apiGroup"]),
        resource: if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        },
        // A create names its object in the body: the authorizer does not see it.
        name: if verb == "create" && sub.is_empty() {
            ""
        } else {
            s(&o["name"])
        },
        namespace: s(&o["namespace"]),
        path: o
            .is_null()
            .then(|| s(&e["requestURI"]).split('?').next().unwrap_or("")),
    }
}

fn has(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == want))
}

fn rule_allows(rule: &Value, a: &Attrs<'_>) -> bool {
    if !has(&rule["verbs"], a.verb) {
        return false;
    }
    if let Some(path) = a.path {
        return rule["nonResourceURLs"].as_array().is_some_and(|urls| {
            urls.iter().filter_map(Value::as_str).any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            })
        });
    }
    let resource_ok = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            r == "*"
                || r == a.resource
                || a.resource
                    .split_once('/')
                    .is_some_and(|(res, sub)| r == format!("*/{sub}") || r == format!("{res}/*"))
        })
    });
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => names.iter().any(|n| n == a.name),
        _ => true,
    };
    has(&rule["apiGroups"], a.group) && resource_ok && names_ok
}

/// Whether `subject` (of a binding in `binding_ns`) is the user, one of its groups, or its service account.
fn subject_matches(subject: &Value, a: &Attrs<'_>) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => name == a.user,
        Some("Group") => a.groups.contains(&name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or("");
            a.user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The rules a binding grants, or `None` when its role is unknown (a write without body changed it).
fn role_rules(state: &State, binding: &Value) -> Option<Vec<Value>> {
    let r = &binding["roleRef"];
    let ns = match r["kind"].as_str() {
        Some("Role") => binding["metadata"]["namespace"].as_str().unwrap_or(""),
        _ => "",
    };
    let k = key(r["kind"].as_str()?, ns, r["name"].as_str()?);
    match state.get(&k) {
        Some(Some(role)) => Some(role["rules"].as_array().cloned().unwrap_or_default()),
        Some(None) => None,
        None => Some(Vec::new()),
    }
}

/// Whether any binding grants the request.
fn granted(state: &State, a: &Attrs<'_>) -> bool {
    state.values().flatten().any(|b| {
        let ns = b["metadata"]["namespace"].as_str().unwrap_or("");
        b["kind"].as_str().is_some_and(|k| k.ends_with("Binding"))
            && (ns.is_empty() || ns == a.namespace)
            && b["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| subject_matches(s, a)))
            && role_rules(state, b).is_some_and(|rules| rules.iter().any(|r| rule_allows(r, a)))
    })
}

/// Requests whose reason names a binding that does not cover them, though another of the user's does: the
/// generator names `system:kube-scheduler` for all the scheduler's requests, where kube-apiserver names
/// `system:volume-scheduler` for its storage classes. (binding named, resource)
const MISATTRIBUTED: &[(&str, &str)] = &[("system:kube-scheduler", "storageclasses")];

/// Parses `RBAC: allowed by KIND "NAME[/NS]" of ROLEKIND "ROLE" to SUBJECTKIND "SUBJECT"`.
fn parse_reason(reason: &str) -> Option<(&str, &str, &str, &str, &str, &str)> {
    let rest = reason.strip_prefix("RBAC: allowed by ")?;
    let (kind, rest) = rest.split_once(" \"")?;
    let (name, rest) = rest.split_once("\" of ")?;
    let (role_kind, rest) = rest.split_once(" \"")?;
    let (role, rest) = rest.split_once("\" to ")?;
    let (subject_kind, rest) = rest.split_once(" \"")?;
    Some((
        kind,
        name,
        role_kind,
        role,
        subject_kind,
        rest.strip_suffix('"')?,
    ))
}

#[test]
fn every_allow_reason_holds_in_the_snapshot_and_no_forbid_is_granted() {
    let cfg = Config {
        rate: 200_000.0 / 86_400.0,
        attacks: true,
        ..Config::default()
    };
    let mut state = load(&rbac_snapshot(&cfg));
    // The scenarios' own grants do not exist yet; the access grant's administrator has its group bound.
    for (kind, ns, name) in [
        ("ClusterRoleBinding", "", "default-sa-admin"),
        ("RoleBinding", ag::NAMESPACE, ag::BINDING),
        ("Role", ag::NAMESPACE, ag::ROLE),
    ] {
        assert!(!state.contains_key(&key(kind, ns, name)), "{kind} {name}");
    }
    let bound_to = |state: &State, who: &str| {
        state.values().flatten().any(|o| {
            o["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == who))
        })
    };
    assert!(bound_to(&state, ag::ADMIN_GROUP));
    assert!(!bound_to(&state, ag::CONTRACTOR) && !bound_to(&state, ag::CONTRACTOR_GROUP));

    let mut who: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong: BTreeSet<String> = BTreeSet::new();
    let mut misattributed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut forbids = 0;
    for line in Generator::new(cfg).take(200_000) {
        let e: Value = serde_json::from_str(&line).unwrap();
        let a = attrs(&e);
        let decision = &e["annotations"]["authorization.k8s.io/decision"];
        let reason = e["annotations"]["authorization.k8s.io/reason"]
            .as_str()
            .unwrap();
        let code = e["responseStatus"]["code"].as_i64().unwrap();
        if decision == "forbid" {
            forbids += 1;
            if granted(&state, &a) {
                wrong.insert(format!(
                    "forbidden yet granted: {} {} {}",
                    a.user, a.verb, a.resource
                ));
            }
        } else if !reason.is_empty() {
            who.entry(reason.to_string())
                .or_default()
                .insert(format!("{} {:?}", a.user, a.groups));
            let Some((kind, name, role_kind, role, subject_kind, subject)) = parse_reason(reason)
            else {
                wrong.insert(format!("unparsed reason: {reason}"));
                continue;
            };
            let (name, ns) = match kind {
                "RoleBinding" => name.split_once('/').unwrap(),
                _ => (name, ""),
            };
            let verdict = match state.get(&key(kind, ns, name)) {
                None => Err("no such binding"),
                Some(None) => Ok(()),
                Some(Some(b)) => {
                    let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
                    let named = subjects.iter().find(|s| {
                        let full = match s["namespace"].as_str() {
                            Some(n) => format!("{}/{n}", s["name"].as_str().unwrap()),
                            None => s["name"].as_str().unwrap().to_string(),
                        };
                        s["kind"] == subject_kind && full == subject
                    });
                    if b["roleRef"]["kind"] != role_kind || b["roleRef"]["name"] != role {
                        Err("other role")
                    } else if !named.is_some_and(|s| subject_matches(s, &a)) {
                        Err("subject not the user's")
                    } else if !ns.is_empty() && ns != a.namespace {
                        Err("other namespace")
                    } else {
                        match role_rules(&state, b) {
                            Some(rules) if !rules.iter().any(|r| rule_allows(r, &a)) => {
                                if granted(&state, &a) {
                                    misattributed.insert((name.to_string(), a.resource.clone()));
                                    Ok(())
                                } else {
                                    Err("rules do not cover it")
                                }
                            }
                            _ => Ok(()),
                        }
                    }
                }
            };
            if let Err(why) = verdict {
                let what = a.path.map_or(
                    format!("{} {}.{} in {:?}", a.verb, a.resource, a.group, a.namespace),
                    |p| format!("{} {p}", a.verb),
                );
                wrong.insert(format!("{why}: {reason}: {} {what}", a.user));
            }
        }

        // Apply the RBAC writes that succeeded, as logged.
        let o = &e["objectRef"];
        if o["apiGroup"] != "rbac.authorization.k8s.io" || code >= 300 {
            continue;
        }
        let kind = match o["resource"].as_str().unwrap() {
            "clusterroles" => "ClusterRole",
            "clusterrolebindings" => "ClusterRoleBinding",
            "roles" => "Role",
            "rolebindings" => "RoleBinding",
            _ => continue,
        };
        let ns = o["namespace"].as_str().unwrap_or("");
        let body = e.get("responseObject").or(e.get("requestObject"));
        let name = o["name"]
            .as_str()
            .or_else(|| body.and_then(|b| b["metadata"]["name"].as_str()));
        let Some(name) = name else { continue };
        let k = key(kind, ns, name);
        match (a.verb, e.get("responseObject"), e.get("requestObject")) {
            ("delete", ..) => {
                state.remove(&k);
            }
            ("create" | "update", Some(obj), _) | ("create" | "update", None, Some(obj)) => {
                state.insert(k, Some(obj.clone()));
            }
            ("patch", Some(obj), _) => {
                state.insert(k, Some(obj.clone()));
            }
            ("patch", None, Some(patch)) => {
                if let Some(Some(obj)) = state.get_mut(&k) {
                    merge(obj, patch);
                }
            }
            ("create" | "update" | "patch", None, None) => {
                state.insert(k, None);
            }
            _ => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
    for (binding, resource) in &misattributed {
        assert!(
            MISATTRIBUTED.contains(&(binding.as_str(), resource.as_str())),
            "{binding} named for {resource}, which another binding grants"
        );
    }
    assert!(forbids > 100, "{forbids}");
    // The access grant ran, with its reason and the contractor's refusal after the revocation.
    assert!(
        who[ag::CONTRACTOR_REASON]
            .iter()
            .all(|u| u.starts_with(ag::CONTRACTOR))
    );
    assert_eq!(
        state.get(&key("ClusterRole", "", ag::METADATA_ONLY_ROLE)),
        Some(&None)
    );
    assert!(who.len() > 25, "{who:#?}");
}

#[test]
fn the_snapshot_is_deterministic_and_holds_the_bootstrap_policy() {
    let cfg = Config::default();
    let a = rbac_snapshot(&cfg);
    assert_eq!(a, rbac_snapshot(&cfg));
    assert_ne!(
        a,
        rbac_snapshot(&Config {
            seed: 2,
            ..cfg.clone()
        })
    );
    let state = load(&a);
    for (kind, name) in [
        ("ClusterRole", "cluster-admin"),
        ("ClusterRole", "system:controller:generic-garbage-collector"),
        ("ClusterRoleBinding", "system:basic-user"),
        (
            "ClusterRoleBinding",
            "system:controller:replicaset-controller",
        ),
    ] {
        assert!(state.contains_key(&key(kind, "", name)), "{name}");
    }
    assert!(state.contains_key(&key(
        "RoleBinding",
        "kube-system",
        "system:controller:token-cleaner"
    )));
    // Aggregated roles carry their rules: edit (and so admin) can read secrets, view cannot.
    let rules = |name: &str| -> Vec<Value> {
        state[&key("ClusterRole", "", name)].as_ref().unwrap()["rules"]
            .as_array()
            .unwrap()
            .clone()
    };
    let secrets = |name: &str| {
        rules(name).iter().any(|r| {
            has(&r["resources"], "secrets") && has(&r["verbs"], "get") && has(&r["apiGroups"], "")
        })
    };
    assert!(secrets("edit") && secrets("admin") && !secrets("view"));
    assert!(rules("admin").len() > rules("edit").len());
}
