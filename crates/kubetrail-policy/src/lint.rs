//! `policy lint`: what a policy would leak, blind or cost, each finding with the rule, the line and a fix.
//!
//! Findings come from probing the policy with the requests that matter (a secret read, a ClusterRoleBinding
//! create, an exec...) made by ordinary identities, so they reflect rule order exactly as kube-apiserver
//! evaluates it: a RequestResponse catch-all after a Metadata rule for secrets is not reported.

use std::borrow::Cow;

use kubetrail_model::{Attributes, Level, Stage};
use serde::Serialize;

use crate::{Diagnostic, Loaded, Policy, Severity};

/// One lint finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier of the check, e.g. `secret-values-logged`.
    pub code: &'static str,
    /// 0-based index of the rule concerned, when there is one.
    pub rule: Option<usize>,
    pub line: Option<usize>,
    pub message: String,
    /// A concrete change that resolves the finding.
    pub fix: String,
}

/// A probe request: who does what to which resource.
#[derive(Debug, Clone, Copy)]
struct Probe {
    what: &'static str,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    namespace: &'static str,
}

const fn probe(
    what: &'static str,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
) -> Probe {
    Probe {
        what,
        verb,
        group,
        resource,
        subresource: "",
        namespace: "default",
    }
}

const fn sub(mut p: Probe, subresource: &'static str) -> Probe {
    p.subresource = subresource;
    p
}

const fn cluster(mut p: Probe) -> Probe {
    p.namespace = "";
    p
}

/// Identities that probes are made as: a human, a workload's service account, an unknown caller.
const IDENTITIES: &[(&str, &[&str])] = &[
    ("jane@example.com", &["system:authenticated", "developers"]),
    (
        "system:serviceaccount:default:app",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated",
        ],
    ),
];

const RBAC: &str = "rbac.authorization.k8s.io";

/// Requests whose bodies carry secret values or tokens.
const SENSITIVE: &[(Probe, Level)] = &[
    // Secret reads: the response carries the values.
    (
        probe("secret reads", "get", "", "secrets"),
        Level::RequestResponse,
    ),
    (
        probe("secret lists", "list", "", "secrets"),
        Level::RequestResponse,
    ),
    (
        probe("secret watches", "watch", "", "secrets"),
        Level::RequestResponse,
    ),
    // Secret writes: the request body carries the values.
    (
        probe("secret creates", "create", "", "secrets"),
        Level::Request,
    ),
    (
        probe("secret updates", "update", "", "secrets"),
        Level::Request,
    ),
    (
        probe("secret patches", "patch", "", "secrets"),
        Level::Request,
    ),
    (
        probe("configmap reads", "get", "", "configmaps"),
        Level::RequestResponse,
    ),
    (
        probe("configmap writes", "create", "", "configmaps"),
        Level::RequestResponse,
    ),
    (
        sub(
            probe("token requests", "create", "", "serviceaccounts"),
            "token",
        ),
        Level::RequestResponse,
    ),
    (
        cluster(probe(
            "token reviews",
            "create",
            "authentication.k8s.io",
            "tokenreviews",
        )),
        Level::Request,
    ),
];

/// Requests an investigation cannot do without.
const HIGH_VALUE: &[Probe] = &[
    probe("secret reads", "get", "", "secrets"),
    probe("secret lists", "list", "", "secrets"),
    cluster(probe("cluster-wide secret lists", "list", "", "secrets")),
    probe("RoleBinding creates", "create", RBAC, "rolebindings"),
    probe("Role updates", "update", RBAC, "roles"),
    cluster(probe(
        "ClusterRoleBinding creates",
        "create",
        RBAC,
        "clusterrolebindings",
    )),
    cluster(probe(
        "ClusterRoleBinding updates",
        "update",
        RBAC,
        "clusterrolebindings",
    )),
    cluster(probe("ClusterRole creates", "create", RBAC, "clusterroles")),
    probe("pod creates", "create", "", "pods"),
    sub(probe("pod exec", "create", "", "pods"), "exec"),
    sub(probe("pod exec (GET)", "get", "", "pods"), "exec"),
    sub(probe("pod attach", "create", "", "pods"), "attach"),
    sub(
        probe("pod port-forward", "create", "", "pods"),
        "portforward",
    ),
    sub(cluster(probe("node proxy", "get", "", "nodes")), "proxy"),
    sub(
        probe(
            "service account token requests",
            "create",
            "",
            "serviceaccounts",
        ),
        "token",
    ),
    cluster(probe(
        "validating webhook changes",
        "create",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    )),
    cluster(probe(
        "mutating webhook changes",
        "create",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    )),
    cluster(probe(
        "certificate signing requests",
        "create",
        "certificates.k8s.io",
        "certificatesigningrequests",
    )),
];

/// A heartbeat: a Lease renewal the cluster makes every few seconds whatever else it does, so that an audit
/// stream with none of them has been cut rather than gone quiet.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    what: &'static str,
    user: &'static str,
    groups: &'static [&'static str],
    namespace: &'static str,
    /// The Lease's name.
    name: &'static str,
}

/// The heartbeat probes, the recommended one first: each kube-apiserver renews its identity Lease
/// (`apiserver-<hash>`, feature APIServerIdentity, on by default since 1.26) every 10 s through its loopback
/// client; the controller-manager and scheduler renew their leader-election Leases; kubelets their node Leases.
const HEARTBEATS: &[Heartbeat] = &[
    Heartbeat {
        what: "the kube-apiservers' identity-lease renewals",
        user: "system:apiserver",
        groups: &["system:masters", "system:authenticated"],
        namespace: "kube-system",
        name: "apiserver-07a5ea9b9b072c4a5f3d1c3702",
    },
    Heartbeat {
        what: "kube-controller-manager's leader-election lease renewals",
        user: "system:kube-controller-manager",
        groups: &["system:authenticated"],
        namespace: "kube-system",
        name: "kube-controller-manager",
    },
    Heartbeat {
        what: "kube-scheduler's leader-election lease renewals",
        user: "system:kube-scheduler",
        groups: &["system:authenticated"],
        namespace: "kube-system",
        name: "kube-scheduler",
    },
    Heartbeat {
        what: "the kubelets' node-lease renewals",
        user: "system:node:node-1",
        groups: &["system:nodes", "system:authenticated"],
        namespace: "kube-node-lease",
        name: "node-1",
    },
];

/// The rule that keeps the recommended heartbeat, as one line of YAML for a policy's `rules`.
const HEARTBEAT_RULE: &str = "- {level: Metadata, users: [\"system:apiserver\"], verbs: [\"create\", \"update\", \
     \"patch\"], resources: [{group: \"coordination.k8s.io\", resources: [\"leases\"]}], namespaces: [\"kube-system\"]}";

/// A heartbeat's renewal: an update of its Lease.
fn heartbeat_attrs<'a>(h: &'a Heartbeat, groups: &'a [Cow<'a, str>]) -> Attributes<'a> {
    Attributes {
        user: Some(h.user),
        groups,
        verb: "update",
        namespace: h.namespace,
        api_group: "coordination.k8s.io",
        resource: "leases",
        subresource: "",
        name: h.name,
        path: "",
        is_resource_request: true,
    }
}

/// `resource` or `resource/subresource`.
fn resource_name(p: &Probe) -> String {
    if p.subresource.is_empty() {
        p.resource.to_string()
    } else {
        format!("{}/{}", p.resource, p.subresource)
    }
}

/// Requests whose bodies carry values: never logged above Metadata.
fn is_sensitive(p: &Probe) -> bool {
    matches!(
        (p.resource, p.subresource),
        ("secrets" | "configmaps", _) | ("serviceaccounts", "token")
    )
}

/// A probe's request attributes as `user` with `groups`.
fn attrs<'a>(
    p: &'a Probe,
    user: &'a str,
    groups: &'a [Cow<'a, str>],
    path: &'a str,
) -> Attributes<'a> {
    Attributes {
        user: Some(user),
        groups,
        verb: p.verb,
        namespace: p.namespace,
        api_group: p.group,
        resource: p.resource,
        subresource: p.subresource,
        name: "",
        path,
        is_resource_request: true,
    }
}

fn non_resource<'a>(
    user: Option<&'a str>,
    groups: &'a [Cow<'a, str>],
    path: &'a str,
) -> Attributes<'a> {
    Attributes {
        user,
        groups,
        verb: "get",
        namespace: "",
        api_group: "",
        resource: "",
        subresource: "",
        name: "",
        path,
        is_resource_request: false,
    }
}

fn groups_of(gs: &[&'static str]) -> Vec<Cow<'static, str>> {
    gs.iter().map(|g| Cow::Borrowed(*g)).collect()
}

struct Linter<'p> {
    policy: &'p Policy,
    findings: Vec<Finding>,
    /// `(code, rule, subject)` already reported: one finding per resource and rule, not per probe.
    seen: Vec<(&'static str, Option<usize>, String)>,
}

impl Linter<'_> {
    fn line(&self, rule: Option<usize>) -> Option<usize> {
        rule.map(|i| self.policy.rules[i].line)
    }

    /// Adds a finding unless the same check already reported the same rule for the same subject.
    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        rule: Option<usize>,
        subject: &str,
        message: String,
        fix: String,
    ) {
        let key = (code, rule, subject.to_string());
        if self.seen.contains(&key) {
            return;
        }
        self.seen.push(key);
        let line = self.line(rule);
        self.findings.push(Finding {
            severity,
            code,
            rule,
            line,
            message,
            fix,
        });
    }

    fn rule_name(rule: Option<usize>) -> String {
        rule.map_or_else(
            || "no rule (the default, None)".to_string(),
            |i| format!("rule {i}"),
        )
    }

    fn sensitive(&mut self) {
        for (user, gs) in IDENTITIES {
            let groups = groups_of(gs);
            for (p, max_unsafe) in SENSITIVE {
                let d = self.policy.evaluate(&attrs(p, user, &groups, ""));
                if d.level >= *max_unsafe {
                    let resource = resource_name(p);
                    self.push(
                        Severity::Error,
                        "sensitive-values-logged",
                        d.rule,
                        &resource,
                        format!(
                            "{} are logged at {}: the {} carries secret values or tokens, which would be written \
                             into the audit log",
                            p.what,
                            d.level,
                            if *max_unsafe == Level::Request { "request body" } else { "response body" }
                        ),
                        format!(
                            "insert before {}: `- level: Metadata` with `resources: [{{group: \"{}\", resources: \
                             [\"{resource}\"]}}]` (who touched which object is kept; the values are not)",
                            Self::rule_name(d.rule),
                            p.group
                        ),
                    );
                }
            }
        }
    }

    fn high_value(&mut self) {
        for (user, gs) in IDENTITIES {
            let groups = groups_of(gs);
            for p in HIGH_VALUE {
                let d = self.policy.evaluate(&attrs(p, user, &groups, ""));
                let resource = resource_name(p);
                if d.level == Level::None {
                    let how = match d.rule {
                        Some(i) => format!("rule {i} sets level None for them"),
                        None => "no rule matches them, so they default to None".to_string(),
                    };
                    self.push(
                        Severity::Error,
                        "high-value-unaudited",
                        d.rule,
                        &resource,
                        format!("{} (verb `{}` on `{resource}`) are not audited: {how}", p.what, p.verb),
                        format!(
                            "insert before {}: `- level: {}` with `resources: [{{group: \"{}\", resources: \
                             [\"{resource}\"]}}]`",
                            Self::rule_name(d.rule),
                            if matches!(p.verb, "create" | "update" | "patch") && !is_sensitive(p) { "Request" } else { "Metadata" },
                            p.group
                        ),
                    );
                } else if p.resource == "pods"
                    && p.subresource.is_empty()
                    && p.verb == "create"
                    && d.level == Level::Metadata
                {
                    self.push(
                        Severity::Warning,
                        "pod-spec-not-logged",
                        d.rule,
                        "pods",
                        "pod creates are logged at Metadata: the pod spec is not recorded, so privileged, hostPID, \
                         hostPath and image rules cannot see it"
                            .to_string(),
                        format!(
                            "add a rule before {} with `level: Request` for verbs create, update, patch on `pods` \
                             (and the workload resources in apps and batch)",
                            Self::rule_name(d.rule)
                        ),
                    );
                }
            }
        }
    }

    fn noise(&mut self) {
        let cm = groups_of(&["system:authenticated"]);
        let watch = probe("", "watch", "", "pods");
        let list = probe("", "list", "", "pods");
        let loops = [
            ("system:kube-controller-manager", &watch),
            ("system:kube-controller-manager", &list),
            ("system:kube-scheduler", &watch),
        ];
        for (user, p) in loops {
            let d = self.policy.evaluate(&attrs(p, user, &cm, ""));
            if d.level != Level::None {
                self.push(
                    Severity::Warning,
                    "controller-loops-logged",
                    d.rule,
                    "",
                    format!(
                        "the control plane's watch/list loops (`{user}` {} pods) are logged at {}: they are the largest \
                         source of audit volume and have no forensic value",
                        p.verb, d.level
                    ),
                    "add a rule early in the policy: `level: None`, users [system:kube-controller-manager, \
                     system:kube-scheduler], verbs [get, list, watch]"
                        .to_string(),
                );
                break;
            }
        }
        let anonymous = groups_of(&["system:unauthenticated"]);
        for path in ["/healthz", "/livez", "/readyz"] {
            let d = self
                .policy
                .evaluate(&non_resource(Some("system:anonymous"), &anonymous, path));
            if d.level != Level::None {
                self.push(
                    Severity::Warning,
                    "health-probes-logged",
                    d.rule,
                    "",
                    format!(
                        "health probes (`GET {path}`) are logged at {}: constant noise",
                        d.level
                    ),
                    "add a rule: `level: None` with nonResourceURLs [/healthz*, /livez*, /readyz*]"
                        .to_string(),
                );
                break;
            }
        }
    }

    /// Warns when every heartbeat falls to level None: `kt-audit-silence` would then fire on every quiet
    /// cluster, or never be trusted. Reports the rule that silences the recommended heartbeat.
    fn heartbeat(&mut self) {
        let mut silenced = Vec::with_capacity(HEARTBEATS.len());
        for h in HEARTBEATS {
            let groups = groups_of(h.groups);
            let d = self.policy.evaluate(&heartbeat_attrs(h, &groups));
            if d.level != Level::None {
                return;
            }
            silenced.push((h, d.rule));
        }
        let how = |rule: Option<usize>| match rule {
            Some(i) => format!("rule {i} sets level None for them"),
            None => "no rule matches them, so they default to None".to_string(),
        };
        let (apiserver, rule) = silenced[0];
        let others: Vec<String> = silenced[1..]
            .iter()
            .map(|(h, r)| format!("{}: {}", h.what, how(*r)))
            .collect();
        let fix = match rule {
            Some(i) => format!("insert before rule {i}: `{HEARTBEAT_RULE}`"),
            None => format!("add to the rules: `{HEARTBEAT_RULE}`"),
        };
        self.push(
            Severity::Warning,
            "heartbeat-unaudited",
            rule,
            "",
            format!(
                "no heartbeat is audited: {} (`{}` updating `leases` in {}, every 10 s): {}; {}. Without a \
                 heartbeat kubetrail cannot tell a quiet cluster from a cut audit trail (kt-audit-silence)",
                apiserver.what,
                apiserver.user,
                apiserver.namespace,
                how(rule),
                others.join("; ")
            ),
            format!("{fix} (one event per kube-apiserver every 10 s, about 10 MB a day each)"),
        );
    }

    fn stages_and_fields(&mut self) {
        let mut received = None;
        for (i, rule) in self.policy.rules.iter().enumerate() {
            let omitted = rule
                .omit_stages
                .union(self.policy.omit_stages)
                .contains(Stage::RequestReceived);
            if rule.level != Level::None && !omitted {
                received = Some(i);
                break;
            }
        }
        if let Some(i) = received {
            self.push(
                Severity::Warning,
                "request-received-kept",
                Some(i),
                "",
                format!(
                    "the RequestReceived stage is kept (rule {i} and possibly others): every request is written twice"
                ),
                "add `omitStages: [\"RequestReceived\"]` at the top level of the policy".to_string(),
            );
        }
        let bodies = self
            .policy
            .rules
            .iter()
            .position(|r| r.level >= Level::Request && r.omit_managed_fields != Some(true));
        if let (false, Some(i)) = (self.policy.omit_managed_fields, bodies) {
            self.push(
                    Severity::Warning,
                    "managed-fields-kept",
                    Some(i),
                    "",
                    format!(
                        "managedFields are kept in request and response bodies (rule {i} logs bodies): large \
                         server-side-apply bookkeeping no investigation needs"
                    ),
                    "add `omitManagedFields: true` at the top level of the policy".to_string(),
                );
        }
    }
}

fn from_diagnostic(d: &Diagnostic) -> Finding {
    // A field kube-apiserver drops is silently ignored: a rule that looks narrow matches more than it says.
    let (severity, code) = match d.severity {
        Severity::Error => (Severity::Error, "invalid-policy"),
        _ if d.message.contains("is dropped") => (Severity::Error, "ignored-field"),
        _ => (Severity::Warning, "policy-warning"),
    };
    Finding {
        severity,
        code,
        rule: rule_index(&d.path),
        line: d.line,
        message: format!("{}: {}", d.path, d.message),
        fix: d
            .help
            .clone()
            .unwrap_or_else(|| "fix the field named above".to_string()),
    }
}

/// `rules[3].resources[0]` -> 3.
fn rule_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("rules[")?;
    rest[..rest.find(']')?].parse().ok()
}

/// Lints a loaded policy. Findings are ordered by severity, then by line.
pub fn lint(loaded: &Loaded) -> Vec<Finding> {
    let mut findings: Vec<Finding> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity != Severity::Info)
        .map(from_diagnostic)
        .collect();
    if let Some(policy) = &loaded.policy {
        let mut l = Linter {
            policy,
            findings: Vec::new(),
            seen: Vec::new(),
        };
        l.sensitive();
        l.high_value();
        l.noise();
        l.heartbeat();
        l.stages_and_fields();
        findings.extend(l.findings);
    }
    findings.sort_by_key(|f| (severity_rank(f.severity), f.line.unwrap_or(0)));
    findings
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Error => 0,
        Severity::Warning => 1,
        Severity::Info => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GenerateOptions, generate, load};

    const HEADER: &str =
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n";

    fn heartbeat_findings(yaml: &str) -> Vec<Finding> {
        let loaded = load(yaml);
        assert!(loaded.policy.is_some(), "{:?}", loaded.diagnostics);
        lint(&loaded)
            .into_iter()
            .filter(|f| f.code == "heartbeat-unaudited")
            .collect()
    }

    #[test]
    fn silencing_every_lease_warns_and_names_the_rule_silencing_the_apiserver_lease() {
        // Rule 1 silences the apiserver's loopback identity; rule 2 every other lease.
        let yaml = format!(
            "{HEADER}rules:\n\
             - level: Metadata\n  resources: [{{group: \"\", resources: [secrets]}}]\n\
             - level: None\n  users: [\"system:apiserver\"]\n\
             - level: None\n  resources: [{{group: coordination.k8s.io, resources: [leases]}}]\n\
             - level: Metadata\n"
        );
        let findings = heartbeat_findings(&yaml);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(
            (f.severity, f.rule, f.line),
            (Severity::Warning, Some(1), Some(7))
        );
        assert!(
            f.message.contains("identity-lease renewals")
                && f.message.contains("rule 1 sets level None")
                && f.message.contains("rule 2 sets level None")
                && f.message.contains("quiet cluster from a cut audit trail"),
            "{}",
            f.message
        );
        assert!(
            f.fix.starts_with(
                "insert before rule 1: `- {level: Metadata, users: [\"system:apiserver\"]"
            ) && f.fix.contains("namespaces: [\"kube-system\"]"),
            "{}",
            f.fix
        );
        // The fix is YAML kube-apiserver accepts, and inserted where it says, it ends the finding.
        let snippet = f.fix.split('`').nth(1).unwrap();
        let fixed = yaml.replacen(
            "- level: None\n  users: [\"system:apiserver\"]\n",
            &format!("{snippet}\n- level: None\n  users: [\"system:apiserver\"]\n"),
            1,
        );
        assert!(heartbeat_findings(&fixed).is_empty(), "{fixed}");
    }

    #[test]
    fn no_rule_at_all_for_leases_is_the_default_none() {
        let yaml = format!(
            "{HEADER}rules:\n- level: Metadata\n  resources: [{{group: \"\", resources: [secrets]}}]\n"
        );
        let findings = heartbeat_findings(&yaml);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!((findings[0].rule, findings[0].line), (None, None));
        assert!(
            findings[0]
                .fix
                .starts_with("add to the rules: `- {level: Metadata"),
            "{}",
            findings[0].fix
        );
    }

    #[test]
    fn the_generated_policy_keeps_a_heartbeat() {
        for pod_bodies in [true, false] {
            let yaml = generate(&GenerateOptions {
                pod_bodies,
                ..GenerateOptions::default()
            });
            assert!(heartbeat_findings(&yaml).is_empty());
        }
    }

    #[test]
    fn node_leases_at_metadata_are_a_heartbeat() {
        let yaml = format!(
            "{HEADER}rules:\n\
             - level: Metadata\n  userGroups: [\"system:nodes\"]\n  namespaces: [kube-node-lease]\n  resources: [{{group: coordination.k8s.io, resources: [leases]}}]\n\
             - level: None\n  resources: [{{group: coordination.k8s.io, resources: [leases]}}]\n\
             - level: Metadata\n"
        );
        assert!(heartbeat_findings(&yaml).is_empty());
    }

    #[test]
    fn a_heartbeat_rule_after_the_silencing_rule_does_not_count() {
        // First match wins: the Metadata rule for the apiserver lease is never reached.
        let yaml = format!(
            "{HEADER}rules:\n\
             - level: None\n  resources: [{{group: coordination.k8s.io, resources: [leases]}}]\n\
             {HEARTBEAT_RULE}\n\
             - level: Metadata\n"
        );
        let findings = heartbeat_findings(&yaml);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].rule, Some(0));
    }
}
