//! What a policy blinds: for each detection rule, the requests it can only match, evaluated against the
//! policy as ordinary identities would make them. A rule is blind when the policy does not audit those
//! requests at all (level None, or every stage omitted), and half-blind when it audits them below the level
//! the rule reads (a rule on the pod spec needs Request; Metadata hides it).

use std::borrow::Cow;

use kubetrail_model::{Attributes, Level, Stage};

use crate::{Finding, Policy, Severity};

/// A detection rule as the policy sees it (from `kubetrail_detect::Rule::needs`): the values its condition
/// requires of the resource, subresource and verb (`None`: any), and the level it needs to see its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleNeeds {
    pub id: String,
    pub title: String,
    pub resources: Option<Vec<String>>,
    pub subresources: Option<Vec<String>>,
    pub verbs: Option<Vec<String>>,
    /// `Metadata`, `Request` or `RequestResponse`.
    pub level: Level,
}

/// Verbs probed when a rule names none.
const VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// Who makes the probes: a person and a workload.
const IDENTITIES: &[(&str, &[&str])] = &[
    ("jane@example.com", &["system:authenticated", "developers"]),
    (
        "system:serviceaccount:prod:app",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:prod",
            "system:authenticated",
        ],
    ),
];

/// The API group of a resource kube-apiserver serves (the common ones rules name); `None` when unknown
/// (probed in the core group and in any group a policy rule names for it).
fn group_of(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "pods"
        | "secrets"
        | "configmaps"
        | "serviceaccounts"
        | "nodes"
        | "namespaces"
        | "services"
        | "endpoints"
        | "persistentvolumes"
        | "persistentvolumeclaims"
        | "events"
        | "limitranges"
        | "resourcequotas"
        | "replicationcontrollers"
        | "podtemplates" => "",
        "deployments" | "daemonsets" | "statefulsets" | "replicasets" | "controllerrevisions" => {
            "apps"
        }
        "jobs" | "cronjobs" => "batch",
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => {
            "rbac.authorization.k8s.io"
        }
        "mutatingwebhookconfigurations"
        | "validatingwebhookconfigurations"
        | "validatingadmissionpolicies"
        | "validatingadmissionpolicybindings" => "admissionregistration.k8s.io",
        "certificatesigningrequests" => "certificates.k8s.io",
        "selfsubjectrulesreviews"
        | "selfsubjectaccessreviews"
        | "subjectaccessreviews"
        | "localsubjectaccessreviews" => "authorization.k8s.io",
        "tokenreviews" | "selfsubjectreviews" => "authentication.k8s.io",
        "networkpolicies" | "ingresses" => "networking.k8s.io",
        "customresourcedefinitions" => "apiextensions.k8s.io",
        "priorityclasses" => "scheduling.k8s.io",
        "leases" => "coordination.k8s.io",
        _ => return None,
    })
}

/// Whether a resource is cluster-scoped (probed with no namespace).
fn cluster_scoped(resource: &str) -> bool {
    matches!(
        resource,
        "nodes"
            | "namespaces"
            | "persistentvolumes"
            | "clusterroles"
            | "clusterrolebindings"
            | "mutatingwebhookconfigurations"
            | "validatingwebhookconfigurations"
            | "validatingadmissionpolicies"
            | "validatingadmissionpolicybindings"
            | "certificatesigningrequests"
            | "selfsubjectrulesreviews"
            | "selfsubjectaccessreviews"
            | "subjectaccessreviews"
            | "tokenreviews"
            | "selfsubjectreviews"
            | "customresourcedefinitions"
            | "priorityclasses"
    )
}

/// One probe's outcome: the request, and the policy rule that decided it.
struct Seen {
    request: String,
    level: Level,
    rule: Option<usize>,
    blind: bool,
}

/// The rules `policy` blinds (error: never sees its requests) or half-blinds (warning: sees them below the
/// level it reads), one finding per detection rule naming the requests and the policy rule that decides.
pub fn coverage(policy: &Policy, rules: &[RuleNeeds]) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in rules {
        let Some(resources) = &r.resources else {
            continue;
        };
        let subresources: Vec<&str> = match &r.subresources {
            Some(s) => s.iter().map(String::as_str).collect(),
            None => vec![""],
        };
        let verbs: Vec<&str> = match &r.verbs {
            Some(v) => v.iter().map(String::as_str).collect(),
            None => VERBS.to_vec(),
        };
        let mut blind: Vec<Seen> = Vec::new();
        let mut low: Vec<Seen> = Vec::new();
        for resource in resources {
            let group = group_of(resource).unwrap_or("");
            let namespace = if cluster_scoped(resource) { "" } else { "prod" };
            for sub in &subresources {
                for verb in &verbs {
                    // The least any identity gets: an attacker is whoever the policy audits least.
                    let mut worst: Option<Seen> = None;
                    for (user, gs) in IDENTITIES {
                        let groups: Vec<Cow<'_, str>> =
                            gs.iter().map(|g| Cow::Borrowed(*g)).collect();
                        let a = Attributes {
                            user: Some(user),
                            groups: &groups,
                            verb,
                            namespace,
                            api_group: group,
                            resource,
                            subresource: sub,
                            name: "",
                            path: "",
                            is_resource_request: true,
                        };
                        let d = policy.evaluate(&a);
                        let never = !d.keeps(Stage::ResponseComplete)
                            && !d.keeps(Stage::ResponseStarted)
                            && !d.keeps(Stage::Panic);
                        let level = if never { Level::None } else { d.level };
                        let request = match *sub {
                            "" => format!("{verb} {resource}"),
                            s => format!("{verb} {resource}/{s}"),
                        };
                        if worst.as_ref().is_none_or(|w| level < w.level) {
                            worst = Some(Seen {
                                request,
                                level,
                                rule: d.rule,
                                blind: never || d.level == Level::None,
                            });
                        }
                    }
                    let Some(w) = worst else { continue };
                    if w.blind {
                        blind.push(w);
                    } else if w.level < r.level {
                        low.push(w);
                    }
                }
            }
        }
        let name = |rule: Option<usize>| {
            rule.map_or_else(
                || "no rule (the default, None)".to_string(),
                |i| format!("rule {i}"),
            )
        };
        let summary = |seen: &[Seen]| {
            let mut reqs: Vec<&str> = seen.iter().map(|s| s.request.as_str()).collect();
            reqs.dedup();
            let shown = reqs.iter().take(6).copied().collect::<Vec<_>>().join(", ");
            if reqs.len() > 6 {
                format!("{shown} and {} more", reqs.len() - 6)
            } else {
                shown
            }
        };
        if let Some(first) = blind.first() {
            out.push(Finding {
                severity: Severity::Error,
                code: "detection-blind",
                rule: first.rule,
                line: first.rule.map(|i| policy.rules[i].line),
                message: format!(
                    "detection rule `{}` ({}) never sees {}: {} does not audit it",
                    r.id,
                    r.title,
                    summary(&blind),
                    name(first.rule)
                ),
                fix: format!(
                    "audit these requests at {} or above before any rule that drops them",
                    level_name(r.level.max(Level::Metadata))
                ),
            });
        } else if let Some(first) = low.first() {
            out.push(Finding {
                severity: Severity::Warning,
                code: "detection-half-blind",
                rule: first.rule,
                line: first.rule.map(|i| policy.rules[i].line),
                message: format!(
                    "detection rule `{}` ({}) reads the {} body, but {} logs {} at {}: it cannot match",
                    r.id,
                    r.title,
                    if r.level == Level::RequestResponse {
                        "response"
                    } else {
                        "request"
                    },
                    name(first.rule),
                    summary(&low),
                    level_name(first.level)
                ),
                fix: format!(
                    "log these requests at {} (a rule for them before {})",
                    level_name(r.level),
                    name(first.rule)
                ),
            });
        }
    }
    out
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::None => "None",
        Level::Metadata => "Metadata",
        Level::Request => "Request",
        Level::RequestResponse => "RequestResponse",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    resources: [{group: "", resources: [secrets]}]
  - level: Metadata
    resources: [{group: "", resources: [pods]}]
  - level: Request
    resources: [{group: apps, resources: [deployments]}]
  - level: Metadata
"#;

    fn needs(id: &str, resources: &[&str], verbs: &[&str], level: Level) -> RuleNeeds {
        RuleNeeds {
            id: id.into(),
            title: id.into(),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            subresources: None,
            verbs: Some(verbs.iter().map(|s| s.to_string()).collect()),
            level,
        }
    }

    #[test]
    fn blind_half_blind_and_covered() {
        let loaded = crate::load(POLICY);
        let policy = loaded.policy.expect("the policy loads");
        let rules = [
            needs(
                "secret-reads",
                &["secrets"],
                &["get", "list"],
                Level::Metadata,
            ),
            needs(
                "privileged-pods",
                &["pods", "deployments"],
                &["create"],
                Level::Request,
            ),
            needs(
                "crb",
                &["clusterrolebindings"],
                &["create"],
                Level::Metadata,
            ),
            needs("templates", &["deployments"], &["create"], Level::Request),
        ];
        let f = coverage(&policy, &rules);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].code, "detection-blind");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].rule, Some(0));
        assert!(f[0].message.contains("`secret-reads`"), "{}", f[0].message);
        assert!(
            f[0].message.contains("get secrets, list secrets"),
            "{}",
            f[0].message
        );
        assert_eq!(f[1].code, "detection-half-blind");
        assert_eq!(f[1].rule, Some(1));
        assert!(
            f[1].message.contains("create pods at Metadata"),
            "{}",
            f[1].message
        );
        assert!(!f[1].message.contains("deployments"), "{}", f[1].message);
        // A rule the policy cannot be probed for (no resource required) is left alone.
        let any = RuleNeeds {
            resources: None,
            ..needs("anon", &[], &[], Level::Metadata)
        };
        assert!(coverage(&policy, &[any]).is_empty());
    }
}
