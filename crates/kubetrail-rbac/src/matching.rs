//! Whether one policy rule allows one request: kube-apiserver's `RuleAllows`
//! (plugin/pkg/auth/authorizer/rbac/rbac.go) over the matchers of pkg/apis/rbac/v1/evaluation_helpers.go.
//!
//! - verbs and API groups: `*` or an exact match;
//! - resources: `*`, an exact match of `resource` or `resource/subresource`, or `*/subresource` for any
//!   resource's subresource (`pods/*` is not a wildcard: it only matches a subresource named `*`);
//! - resource names: an empty list allows every name;
//! - nonResourceURLs: `*`, an exact match, or a prefix for a rule ending in `*` (`/apis/*` does not match
//!   `/apis`).

use crate::access::Access;
use crate::model::PolicyRule;

/// Whether `rule` allows `access`.
pub fn rule_allows(access: &Access, rule: &PolicyRule) -> bool {
    match &access.non_resource_url {
        None => {
            let combined;
            let resource = if access.subresource.is_empty() {
                access.resource.as_str()
            } else {
                combined = format!("{}/{}", access.resource, access.subresource);
                combined.as_str()
            };
            verb_matches(rule, &access.verb)
                && api_group_matches(rule, &access.api_group)
                && resource_matches(rule, resource, &access.subresource)
                && resource_name_matches(rule, access.name.as_deref().unwrap_or(""))
        }
        Some(path) => verb_matches(rule, &access.verb) && non_resource_url_matches(rule, path),
    }
}

/// `VerbMatches`.
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

/// `APIGroupMatches`.
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == "*" || g == group)
}

/// `ResourceMatches`: `combined` is `resource` or `resource/subresource`.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// `ResourceNameMatches`.
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name)
}

/// `NonResourceURLMatches`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}
