//! Evaluation, exactly as kube-apiserver's `pkg/audit/policy/checker.go` (Kubernetes 1.36).
//!
//! Rules are tried in order and the first match wins; no match means level `None`. Matching allocates
//! nothing: it runs once per event on the ingestion path.

use std::fmt::{self, Write as _};

use kubetrail_model::{Attributes, Level};

use crate::policy::{Decision, GroupResources, Policy, Rule};

impl Policy {
    /// The audit configuration kube-apiserver applies to a request with these attributes.
    pub fn evaluate(&self, a: &Attributes<'_>) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(a) {
                return self.decision_for(i);
            }
        }
        self.no_match()
    }

    /// The decision when rule `index` matches: its level, its stages unioned with the policy's (upstream
    /// `NewPolicyRuleEvaluator`), and its `omitManagedFields` if set, else the policy's.
    pub(crate) fn decision_for(&self, index: usize) -> Decision {
        let rule = &self.rules[index];
        Decision {
            level: rule.level,
            omit_stages: rule.omit_stages.union(self.omit_stages),
            omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
            rule: Some(index),
        }
    }

    /// The decision when no rule matches.
    pub(crate) fn no_match(&self) -> Decision {
        Decision {
            level: Level::None,
            omit_stages: self.omit_stages,
            omit_managed_fields: self.omit_managed_fields,
            rule: None,
        }
    }
}

impl Rule {
    /// Whether this rule applies to the request (upstream `ruleMatches`).
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        self.first_mismatch(a).is_none()
    }

    /// Why the rule does not apply to the request, in words; `None` when it does.
    pub fn mismatch(&self, a: &Attributes<'_>) -> Option<String> {
        self.first_mismatch(a).map(|m| m.describe(self, a))
    }

    /// The first condition of the rule the request fails, in upstream's order of checks.
    fn first_mismatch(&self, a: &Attributes<'_>) -> Option<Mismatch> {
        if !self.users.is_empty() {
            match a.user {
                None => return Some(Mismatch::NoUser),
                Some(u) if !contains(&self.users, u) => return Some(Mismatch::User),
                Some(_) => {}
            }
        }
        if !self.user_groups.is_empty() {
            if a.user.is_none() {
                return Some(Mismatch::NoUserForGroups);
            }
            if !a.groups.iter().any(|g| contains(&self.user_groups, g)) {
                return Some(Mismatch::Groups);
            }
        }
        if !self.verbs.is_empty() && !contains(&self.verbs, a.verb) {
            return Some(Mismatch::Verb);
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.resource_mismatch(a);
        }
        if !self.non_resource_urls.is_empty() {
            if a.is_resource_request {
                return Some(Mismatch::ResourceRequest);
            }
            if !self
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(a.path, spec))
            {
                return Some(Mismatch::Path);
            }
        }
        None
    }

    /// Upstream `ruleMatchesResource`.
    fn resource_mismatch(&self, a: &Attributes<'_>) -> Option<Mismatch> {
        if !a.is_resource_request {
            return Some(Mismatch::NonResourceRequest);
        }
        if !self.namespaces.is_empty() && !contains(&self.namespaces, a.namespace) {
            return Some(Mismatch::Namespace);
        }
        if self.resources.is_empty() || self.resources.iter().any(|gr| gr_matches(gr, a)) {
            return None;
        }
        Some(Mismatch::Resource)
    }
}

fn contains(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == s)
}

/// One `resources` entry against the request: group, then each resource (with `resourceNames`).
fn gr_matches(gr: &GroupResources, a: &Attributes<'_>) -> bool {
    if gr.group != a.api_group && gr.group != "*" {
        return false;
    }
    if gr.resources.is_empty() {
        return true;
    }
    if !gr.resource_names.is_empty() && !contains(&gr.resource_names, a.name) {
        return false;
    }
    gr.resources
        .iter()
        .any(|res| resource_matches(res, a.resource, a.subresource))
}

/// `res` against `resource[/subresource]`: exact, `*`, `*/sub`, or `resource/*` (which also matches the resource
/// itself, without a subresource, as upstream does).
fn resource_matches(res: &str, resource: &str, subresource: &str) -> bool {
    if res == "*" || is_combined(res, resource, subresource) {
        return true;
    }
    if !subresource.is_empty() && res.strip_prefix("*/") == Some(subresource) {
        return true;
    }
    res.strip_suffix("/*") == Some(resource)
}

/// `res == resource + "/" + subresource` (or `res == resource` without a subresource), without allocating.
fn is_combined(res: &str, resource: &str, subresource: &str) -> bool {
    if subresource.is_empty() {
        return res == resource;
    }
    res.strip_prefix(resource)
        .and_then(|rest| rest.strip_prefix('/'))
        == Some(subresource)
}

/// Upstream `pathMatches`: `*`, exact, or a prefix when the spec ends in `*` (all trailing `*` trimmed).
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || (spec.ends_with('*') && path.starts_with(spec.trim_end_matches('*')))
}

/// The first condition a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mismatch {
    NoUser,
    User,
    NoUserForGroups,
    Groups,
    Verb,
    NonResourceRequest,
    Namespace,
    Resource,
    ResourceRequest,
    Path,
}

/// `[a, b]`, with `""` shown as such so an empty entry is visible.
struct List<'a>(&'a [String]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if s.is_empty() {
                f.write_str("\"\"")?;
            } else {
                f.write_str(s)?;
            }
        }
        f.write_str("]")
    }
}

fn combined(a: &Attributes<'_>) -> String {
    if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    }
}

impl Mismatch {
    fn describe(self, rule: &Rule, a: &Attributes<'_>) -> String {
        match self {
            Mismatch::NoUser => format!(
                "the request has no authenticated user, and the rule requires users {}",
                List(&rule.users)
            ),
            Mismatch::User => format!(
                "user `{}` is not in users {}",
                a.user.unwrap_or_default(),
                List(&rule.users)
            ),
            Mismatch::NoUserForGroups => format!(
                "the request has no authenticated user, and the rule requires userGroups {}",
                List(&rule.user_groups)
            ),
            Mismatch::Groups => {
                let groups: Vec<String> = a.groups.iter().map(|g| g.to_string()).collect();
                format!(
                    "none of the user's groups {} is in userGroups {}",
                    List(&groups),
                    List(&rule.user_groups)
                )
            }
            Mismatch::Verb => format!("verb `{}` is not in verbs {}", a.verb, List(&rule.verbs)),
            Mismatch::NonResourceRequest => format!(
                "`{}` is a non-resource request, and the rule matches resource requests only (it sets {})",
                a.path,
                if rule.resources.is_empty() {
                    "namespaces"
                } else {
                    "resources"
                }
            ),
            Mismatch::Namespace if a.namespace.is_empty() => format!(
                "the request is cluster-scoped (namespace \"\"), which is not in namespaces {}",
                List(&rule.namespaces)
            ),
            Mismatch::Namespace => format!(
                "namespace `{}` is not in namespaces {}",
                a.namespace,
                List(&rule.namespaces)
            ),
            Mismatch::Resource => {
                let mut s = format!(
                    "resource `{}` in group {} named `{}` matches none of resources ",
                    combined(a),
                    if a.api_group.is_empty() {
                        "\"\" (core)".to_string()
                    } else {
                        format!("`{}`", a.api_group)
                    },
                    a.name
                );
                for (i, gr) in rule.resources.iter().enumerate() {
                    s.push_str(if i == 0 { "[" } else { ", " });
                    let _ = write!(s, "{{group: {:?}", gr.group);
                    if !gr.resources.is_empty() {
                        let _ = write!(s, ", resources: {}", List(&gr.resources));
                    }
                    if !gr.resource_names.is_empty() {
                        let _ = write!(s, ", resourceNames: {}", List(&gr.resource_names));
                    }
                    s.push('}');
                }
                s.push(']');
                s
            }
            Mismatch::ResourceRequest => format!(
                "`{}` is a resource request, and the rule matches non-resource URLs only",
                combined(a)
            ),
            Mismatch::Path => format!(
                "path `{}` matches none of nonResourceURLs {}",
                a.path,
                List(&rule.non_resource_urls)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_forms() {
        assert!(resource_matches("pods", "pods", ""));
        assert!(!resource_matches("pods", "pods", "log"));
        assert!(resource_matches("pods/log", "pods", "log"));
        assert!(!resource_matches("pods/log", "pods", ""));
        assert!(!resource_matches("pods/lo", "pods", "log"));
        assert!(resource_matches("*", "pods", "log"));
        assert!(resource_matches("*/log", "pods", "log"));
        assert!(!resource_matches("*/log", "pods", ""));
        assert!(resource_matches("pods/*", "pods", "log"));
        assert!(resource_matches("pods/*", "pods", ""));
        assert!(!resource_matches("pods/*", "secrets", ""));
    }

    #[test]
    fn path_forms() {
        assert!(path_matches("/logs/kubelet.log", "/logs*"));
        assert!(path_matches("/logs", "/logs**"));
        assert!(path_matches("/anything", "*"));
        assert!(!path_matches("/metrics/x", "/metrics"));
    }

    #[test]
    fn mismatch_names_the_verb() {
        let mut rule = Rule::new(Level::Request);
        rule.verbs = vec!["create".into(), "update".into()];
        let a = Attributes {
            user: Some("tim"),
            groups: &[],
            verb: "get",
            namespace: "default",
            api_group: "",
            resource: "pods",
            subresource: "",
            name: "busybox",
            path: "/api/v1/namespaces/default/pods/busybox",
            is_resource_request: true,
        };
        assert_eq!(
            rule.mismatch(&a).as_deref(),
            Some("verb `get` is not in verbs [create, update]")
        );
    }
}
