//! Validation, as kube-apiserver's `pkg/apis/audit/validation` (paths and wording of its field errors), with a
//! `help` on each saying what to change.
//!
//! `level` and `omitStages` are typed in [`Policy`], so their checks run on the raw strings while loading
//! ([`check_level`], [`check_stage`]); [`validate`] checks everything else.

use kubetrail_model::{Level, Stage};

use crate::diagnostic::Diagnostic;
use crate::policy::Policy;

const LEVELS: &str = "None, Metadata, Request, RequestResponse";
const STAGES: &str = "RequestReceived,ResponseStarted,ResponseComplete,Panic";

/// Validates a policy as kube-apiserver does, except for the rule count (an empty policy is valid here; the
/// loader refuses it). Diagnostics carry the rule's line when the policy was loaded from a file.
pub fn validate(policy: &Policy) -> Vec<Diagnostic> {
    validate_located(policy, &|key| {
        let index: usize = key
            .strip_prefix("rules[")?
            .split(']')
            .next()?
            .parse()
            .ok()?;
        let line = policy.rules.get(index)?.line;
        (line > 0).then_some((line, 1))
    })
}

/// [`validate`], locating each diagnostic through `locate`, called with the fully indexed path of the offending
/// value (`rules[0].resources[1].group`; upstream omits the `resources` index in its paths).
pub(crate) fn validate_located(
    policy: &Policy,
    locate: &dyn Fn(&str) -> Option<(usize, usize)>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let urls_path = format!("rules[{i}].nonResourceURLs");
        for (j, url) in rule.non_resource_urls.iter().enumerate() {
            if url == "*" {
                continue;
            }
            let path = format!("{urls_path}[{j}]");
            if !url.starts_with('/') {
                out.push(
                    Diagnostic::error(
                        &path,
                        format!(
                            "Invalid value: '{url}': non-resource URL rules must begin with '/'"
                        ),
                    )
                    .at(locate(&path))
                    .help(format!(
                        "write the URL path from its leading slash, e.g. `/{}`",
                        url.trim_start_matches('/')
                    )),
                );
            }
            // Bytes, as kube-apiserver's Go compares them: slicing a `str` there panics on a multi-byte last character.
            if !url.is_empty() && url.as_bytes()[..url.len() - 1].contains(&b'*') {
                out.push(
                    Diagnostic::error(
                        &path,
                        format!(
                            "Invalid value: '{url}': non-resource URL wildcards '*' must be the final character of the rule"
                        ),
                    )
                    .at(locate(&path))
                    .help(format!(
                        "match a prefix with a single trailing `*`, e.g. `{}*`",
                        &url[..url.find('*').unwrap_or(url.len())]
                    )),
                );
            }
        }
        for (j, gr) in rule.resources.iter().enumerate() {
            let group_key = format!("rules[{i}].resources[{j}].group");
            let group_path = format!("rules[{i}].resources.group");
            if gr.group == "*" {
                out.push(
                    Diagnostic::warning(
                        &group_path,
                        "group '*' (every API group) needs Kubernetes 1.36 or later; older kube-apiservers refuse to start with it",
                    )
                    .at(locate(&group_key))
                    .help("on clusters older than 1.36, list the groups, e.g. one entry each for \"\", `apps` and `rbac.authorization.k8s.io`"),
                );
            } else if !gr.group.is_empty()
                && let Some(why) = dns1123_subdomain_error(&gr.group)
            {
                let help = match gr.group.split_once('/') {
                    Some((g, _)) => format!(
                        "a group has no version: write `group: {g}` (\"\" is the core group)"
                    ),
                    None => "write the API group's name in lowercase, e.g. `apps` or `rbac.authorization.k8s.io`; \"\" is the core group, \"*\" every group".to_string(),
                };
                out.push(
                    Diagnostic::error(&group_path, format!("Invalid value: '{}': {why}", gr.group))
                        .at(locate(&group_key))
                        .help(help),
                );
            }
            if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                out.push(
                    Diagnostic::error(
                        format!("rules[{i}].resources.resourceNames"),
                        format!(
                            "Invalid value: [{}]: using resourceNames requires at least one resource",
                            gr.resource_names.join(", ")
                        ),
                    )
                    .at(locate(&format!("rules[{i}].resources[{j}].resourceNames")))
                    .help("list the resources these names belong to next to them, e.g. `resources: [configmaps]`"),
                );
            }
        }
        if !rule.non_resource_urls.is_empty()
            && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
        {
            out.push(
                Diagnostic::error(
                    &urls_path,
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
                .at(locate(&urls_path))
                .help("split it into two rules: one with `resources`/`namespaces`, one with `nonResourceURLs`"),
            );
        }
    }
    out
}

/// Upstream `validateLevel` on the raw value (`None` when the field is absent or null).
pub(crate) fn check_level(raw: Option<&str>, path: &str) -> Result<Level, Diagnostic> {
    match raw {
        None | Some("") => Err(Diagnostic::error(path, "Required value: every rule needs a level")
            .help(format!("add `level:` with one of {LEVELS} (case-sensitive)"))),
        Some(s) => Level::parse(s).ok_or_else(|| {
            let help = match Level::ALL.iter().find(|l| l.as_str().eq_ignore_ascii_case(s)) {
                Some(l) => format!("levels are case-sensitive: write `{l}`"),
                None => format!("use one of {LEVELS} (case-sensitive)"),
            };
            Diagnostic::error(
                path,
                format!(
                    "Unsupported value: '{s}': supported values: \"Metadata\", \"None\", \"Request\", \"RequestResponse\""
                ),
            )
            .help(help)
        }),
    }
}

/// Upstream `validateOmitStages`, one element.
pub(crate) fn check_stage(raw: &str, path: &str) -> Result<Stage, Diagnostic> {
    Stage::parse(raw).ok_or_else(|| {
        let help = match Stage::ALL
            .iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(raw))
        {
            Some(s) => format!("stages are case-sensitive: write `{s}`"),
            None => format!("use one of {} (case-sensitive)", STAGES.replace(',', ", ")),
        };
        Diagnostic::error(
            path,
            format!("Invalid value: '{raw}': allowed stages are {STAGES}"),
        )
        .help(help)
    })
}

/// apimachinery's `IsDNS1123Subdomain`, its messages joined as upstream joins them.
fn dns1123_subdomain_error(s: &str) -> Option<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'-')
    };
    if !s.split('.').all(label_ok) {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    (!errs.is_empty()).then(|| errs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_subdomains() {
        for ok in ["apps", "rbac.authorization.k8s.io", "a-b.c1"] {
            assert_eq!(dns1123_subdomain_error(ok), None, "{ok}");
        }
        for bad in ["Apps", "rbac.authorization.k8s.io/v1", "-a", "a..b", "a."] {
            assert!(dns1123_subdomain_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn level_help_suggests_the_right_case() {
        let d = check_level(Some("metadata"), "rules[0].level").unwrap_err();
        assert_eq!(
            d.help.as_deref(),
            Some("levels are case-sensitive: write `Metadata`")
        );
    }
}
