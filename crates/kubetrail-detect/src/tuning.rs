//! Tuning: exceptions that silence a rule (or every rule) for known-good activity, and rule selection.
//!
//! Exceptions match exactly or by prefix, never by substring, so an attacker cannot slip under one by naming
//! a pod or a user after an allowed one.

use serde::{Deserialize, Serialize};

use crate::value::Net;

/// An exact value, or a prefix when written with one trailing `*` (`system:serviceaccount:ci:*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Text {
    Exact(String),
    Prefix(String),
}

impl Text {
    /// Parses `value` or `prefix*`; any other `*` is refused (exceptions never match by substring).
    pub fn parse(s: &str) -> Result<Text, String> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(format!(
                "`{s}`: exceptions match exactly or by prefix (one trailing `*`), never by substring"
            ));
        }
        if prefix && body.is_empty() {
            return Err(format!(
                "`{s}` would match everything; disable the rule instead"
            ));
        }
        Ok(if prefix {
            Text::Prefix(body.to_string())
        } else {
            Text::Exact(body.to_string())
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            Text::Exact(e) => s == e,
            Text::Prefix(p) => s.starts_with(p.as_str()),
        }
    }
}

impl TryFrom<String> for Text {
    type Error = String;

    fn try_from(s: String) -> Result<Text, String> {
        Text::parse(&s)
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        match t {
            Text::Exact(s) => s,
            Text::Prefix(p) => format!("{p}*"),
        }
    }
}

/// Silences alerts of one rule (or of every rule when `rule` is `None`) for requests that match every
/// criterion given. An exception with no criterion is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// A rule id (or Sigma name); `None` applies to every rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// The authenticated `user.username`.
    #[serde(default)]
    pub user: Option<Text>,
    /// `objectRef.namespace`.
    #[serde(default)]
    pub namespace: Option<Text>,
    /// Image repository (the image without `:tag` or `@digest`): matches when every image of the request's
    /// pod spec matches, so one trusted image does not hide an untrusted one beside it.
    #[serde(default)]
    pub image: Option<Text>,
    /// A prefix of `userAgent`.
    #[serde(default, rename = "userAgentPrefix")]
    pub user_agent_prefix: Option<String>,
    /// A CIDR every `sourceIPs` entry must be in (so a forged `X-Forwarded-For` cannot add a trusted one).
    #[serde(default, rename = "sourceCIDR")]
    pub source_cidr: Option<String>,
    /// Why the exception exists (kept for the audit trail of tuning).
    #[serde(default)]
    pub reason: Option<String>,
}

/// An exception ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct CompiledException {
    pub(crate) user: Option<Text>,
    pub(crate) namespace: Option<Text>,
    pub(crate) image: Option<Text>,
    pub(crate) user_agent_prefix: Option<String>,
    pub(crate) source: Option<Net>,
}

/// The request facts an exception looks at.
#[derive(Debug)]
pub(crate) struct Subject<'e> {
    pub(crate) user: &'e str,
    pub(crate) namespace: Option<&'e str>,
    pub(crate) images: Vec<&'e str>,
    pub(crate) user_agent: Option<&'e str>,
    pub(crate) source_ips: Vec<&'e str>,
}

impl CompiledException {
    pub(crate) fn new(e: &Exception) -> Result<CompiledException, String> {
        let source = match &e.source_cidr {
            Some(c) => Some(Net::parse(c).ok_or_else(|| format!("`{c}` is not a CIDR network"))?),
            None => None,
        };
        if e.user.is_none()
            && e.namespace.is_none()
            && e.image.is_none()
            && e.user_agent_prefix.is_none()
            && source.is_none()
        {
            return Err("an exception needs at least one of user, namespace, image, userAgentPrefix, sourceCIDR; to silence a rule entirely, disable it".into());
        }
        if e.user_agent_prefix.as_deref() == Some("") {
            return Err("`userAgentPrefix` must not be empty".into());
        }
        Ok(CompiledException {
            user: e.user.clone(),
            namespace: e.namespace.clone(),
            image: e.image.clone(),
            user_agent_prefix: e.user_agent_prefix.clone(),
            source,
        })
    }

    pub(crate) fn matches(&self, s: &Subject<'_>) -> bool {
        if let Some(u) = &self.user
            && !u.matches(s.user)
        {
            return false;
        }
        if let Some(n) = &self.namespace
            && !s.namespace.is_some_and(|ns| n.matches(ns))
        {
            return false;
        }
        if let Some(i) = &self.image
            && (s.images.is_empty() || !s.images.iter().all(|img| i.matches(repository(img))))
        {
            return false;
        }
        if let Some(p) = &self.user_agent_prefix
            && !s.user_agent.is_some_and(|ua| ua.starts_with(p.as_str()))
        {
            return false;
        }
        if let Some(net) = &self.source
            && (s.source_ips.is_empty() || !s.source_ips.iter().all(|ip| net.contains(ip)))
        {
            return false;
        }
        true
    }
}

/// An image reference without its digest or tag: `registry:5000/team/app:1.2@sha256:..` →
/// `registry:5000/team/app`.
pub fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(r, _)| r);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(c) => &image[..last_slash + c],
        None => image,
    }
}

/// Which rules run: everything loaded, minus rules disabled by id or tag, unless re-enabled by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Rule ids (or names) that do not run.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Tags (such as `attack.t1613`) whose rules do not run.
    #[serde(default, rename = "disabledTags")]
    pub disabled_tags: Vec<String>,
    /// Rule ids that run even if one of their tags is disabled.
    #[serde(default)]
    pub enabled: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_exact_or_prefix_never_substring() {
        assert!(Text::parse("alice").unwrap().matches("alice"));
        assert!(!Text::parse("alice").unwrap().matches("alice2"));
        let p = Text::parse("system:serviceaccount:ci:*").unwrap();
        assert!(p.matches("system:serviceaccount:ci:deployer"));
        assert!(!p.matches("evil-system:serviceaccount:ci:x"));
        assert!(Text::parse("*ci*").is_err());
        assert!(Text::parse("a*b").is_err());
        assert!(Text::parse("*").is_err());
    }

    #[test]
    fn repositories() {
        assert_eq!(repository("nginx"), "nginx");
        assert_eq!(repository("nginx:1.25"), "nginx");
        assert_eq!(
            repository("registry:5000/team/app:1.2@sha256:abc"),
            "registry:5000/team/app"
        );
        assert_eq!(
            repository("registry:5000/team/app"),
            "registry:5000/team/app"
        );
        assert_eq!(
            repository("registry.k8s.io/kube-proxy@sha256:abc"),
            "registry.k8s.io/kube-proxy"
        );
    }
}
