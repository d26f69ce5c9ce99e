//! A request's authorization attributes (k8s.io/apiserver `authorizer.Attributes`), and reading them from the
//! words of `kubectl auth can-i VERB WHAT`: `secrets`, `deployments.apps`, `pods/exec`,
//! `deployments.apps/scale`, or a nonResourceURL path (`/healthz`). The name is given apart
//! ([`Access::with_name`]): `pods/exec` is always a subresource here.

use serde::{Deserialize, Serialize};

/// What a request asks: a resource request, or a nonResourceURL request when `non_resource_url` is set (its
/// namespace, resource fields and name are then ignored, as the apiserver has none for it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Access {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    /// `None` (or `Some("")`): cluster-wide.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub non_resource_url: Option<String>,
}

/// Why `parse_access` refused its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("the verb is empty")]
    NoVerb,
    #[error("the verb {0:?} has whitespace or '/' in it")]
    BadVerb(String),
    #[error(
        "nothing to ask about: give a resource (\"secrets\", \"deployments.apps\", \"pods/exec\") or a path (\"/healthz\")"
    )]
    Empty,
    #[error("{0:?}: a request path is concrete; '*' is only for rules")]
    WildcardPath(String),
    #[error("{0:?}: a nonResourceURL request has no namespace")]
    PathInNamespace(String),
    #[error("{what:?}: {why}")]
    BadResource { what: String, why: &'static str },
}

impl Access {
    /// A resource request.
    pub fn resource(verb: &str, api_group: &str, resource: &str, subresource: &str) -> Access {
        Access {
            verb: verb.to_string(),
            api_group: api_group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            ..Access::default()
        }
    }

    /// A nonResourceURL request.
    pub fn non_resource(verb: &str, url: &str) -> Access {
        Access {
            verb: verb.to_string(),
            non_resource_url: Some(url.to_string()),
            ..Access::default()
        }
    }

    /// The same request in `namespace` (`""`: cluster-wide).
    pub fn in_namespace(mut self, namespace: &str) -> Access {
        self.namespace = Some(namespace.to_string()).filter(|n| !n.is_empty());
        self
    }

    /// The same request for the object `name`.
    pub fn with_name(mut self, name: &str) -> Access {
        self.name = Some(name.to_string()).filter(|n| !n.is_empty());
        self
    }

    /// Whether it is a resource request.
    pub fn is_resource_request(&self) -> bool {
        self.non_resource_url.is_none()
    }

    /// The namespace the authorizer sees: none for a nonResourceURL request or a cluster-wide one.
    pub fn effective_namespace(&self) -> Option<&str> {
        if self.is_resource_request() {
            self.namespace.as_deref().filter(|n| !n.is_empty())
        } else {
            None
        }
    }
}

/// The request `kubectl auth can-i VERB WHAT [-n NAMESPACE]` asks about.
pub fn parse_access(
    verb: &str,
    what: &str,
    namespace: Option<&str>,
) -> Result<Access, AccessError> {
    if verb.is_empty() {
        return Err(AccessError::NoVerb);
    }
    if verb.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(AccessError::BadVerb(verb.to_string()));
    }
    let what = what.trim();
    if what.is_empty() {
        return Err(AccessError::Empty);
    }
    let namespace = namespace.filter(|n| !n.is_empty());
    if what.starts_with('/') {
        if what.contains('*') {
            return Err(AccessError::WildcardPath(what.to_string()));
        }
        if namespace.is_some() {
            return Err(AccessError::PathInNamespace(what.to_string()));
        }
        return Ok(Access::non_resource(verb, what));
    }
    let bad = |why| AccessError::BadResource {
        what: what.to_string(),
        why,
    };
    if what.chars().any(char::is_whitespace) {
        return Err(bad("has whitespace"));
    }
    let (typ, sub) = match what.split_once('/') {
        Some((t, s)) if s.contains('/') => {
            let _ = t;
            return Err(bad("has more than one '/': RESOURCE[.GROUP][/SUBRESOURCE]"));
        }
        Some((_, "")) => return Err(bad("the subresource after '/' is empty")),
        Some((t, s)) => (t, s),
        None => (what, ""),
    };
    let (resource, group) = typ.split_once('.').unwrap_or((typ, ""));
    if resource.is_empty() {
        return Err(bad("the resource is empty"));
    }
    if typ.ends_with('.') {
        return Err(bad("the group after '.' is empty"));
    }
    let mut a = Access::resource(verb, group, resource, sub);
    a.namespace = namespace.map(str::to_string);
    Ok(a)
}
