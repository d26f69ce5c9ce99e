//! Least privilege from what one identity did: audit2rbac's algorithm (github.com/liggitt/audit2rbac,
//! `pkg/process.go` `Generate` and `pkg/util.go`, with `DefaultGenerateOptions`), followed step by step:
//!
//! 1. the requests are sorted as `sortRequests` sorts them (nonResourceURL first, cluster-scoped before
//!    namespaced, unnamed before named, `list` before `get`, then group, resource, subresource, namespace,
//!    name, verb), with Go's stable sort (so ties and its odd `list`/`get` rule order as in Go);
//! 2. each request already allowed by the discovery role audit2rbac assumes (`get` on `/healthz`,
//!    `/version`, `/swagger*`, `/api*` for `system:authenticated` and `system:unauthenticated`) or by the
//!    rules generated so far is skipped;
//! 3. a nonResourceURL request adds `{verbs: [verb], nonResourceURLs: [path]}` to the ClusterRole;
//! 4. a resource request is widened: to every namespace when the same verb, group, resource and subresource
//!    was used in another namespace, to every name when used with another name; then it adds `{verbs: [verb
//!    + expansions], apiGroups, resources: [resource(/subresource)], resourceNames: \[name\] if named}` to the
//!    ClusterRole (no namespace) or to the Role of its namespace. The verb expansions: `watch` → get, list;
//!    `list` → get, watch; `update` → get, patch; `patch` → get, update;
//! 5. each role's rules are compacted (`compactRules`: broken down to one verb, group, resource and name each;
//!    verbs of a single group/resource merged; names, then resources, of otherwise equal rules merged; sorted
//!    by group then by Go's `CompactString`).
//!
//! Refused requests (`allowed: false`, a 403) are left out, unlike audit2rbac (which proposes what an
//! application needs and so includes them): kubetrail proposes for identities under suspicion, whose refused
//! probes are what they must not get. They are listed apart ([`Proposal::refused`], and in a comment) and
//! never widen a rule to every namespace or name. Each widened rule says why in a comment above it.
//!
//! The objects are named `kubetrail:least-privilege:<user>` (audit2rbac: `audit2rbac:<user>`; a service
//! account by its name unless it is `default`; lowercased, characters other than letters, digits and `:` as
//! `-`), bound to the user (or service account), and written as YAML. audit2rbac reads the request
//! URI with its query as a nonResourceURL's path and tells API versions apart; a [`Used`] has the path alone
//! and no version. At most [`MAX_USED`] requests are read.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::matching::rule_allows;
use crate::model::{PolicyRule, Subject, UserRef};
use crate::state::GrantedRule;
use crate::yaml;

/// The most requests read.
pub const MAX_USED: usize = 100_000;
/// The most refused requests named in the YAML's comment.
const MAX_COMMENT_LINES: usize = 100;

/// audit2rbac's default verb expansions.
const VERB_EXPANSIONS: [(&str, [&str; 2]); 4] = [
    ("watch", ["get", "list"]),
    ("list", ["get", "watch"]),
    ("update", ["get", "patch"]),
    ("patch", ["get", "update"]),
];

/// The discovery role audit2rbac assumes every client has (`getDiscoveryRoles`): its URLs, and the groups
/// bound to it.
const DISCOVERY_URLS: [&str; 4] = ["/healthz", "/version", "/swagger*", "/api*"];
const DISCOVERY_GROUPS: [&str; 2] = ["system:authenticated", "system:unauthenticated"];

/// One distinct request an identity made, how often, and whether the apiserver allowed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub non_resource_url: Option<String>,
    pub count: u64,
    pub allowed: bool,
}

impl Used {
    /// The request's authorization attributes.
    pub fn access(&self) -> Access {
        Access {
            verb: self.verb.clone(),
            api_group: self.api_group.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
            name: self.name.clone().filter(|n| !n.is_empty()),
            non_resource_url: self.non_resource_url.clone(),
        }
    }
}

/// The rules proposed for one namespace's Role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceRules {
    pub namespace: String,
    pub rules: Vec<PolicyRule>,
}

/// A least-privilege proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proposal {
    /// The name of every proposed object.
    pub name: String,
    /// Who the bindings bind.
    pub subject: Subject,
    /// The ClusterRole's rules (empty: no ClusterRole is proposed).
    pub cluster_rules: Vec<PolicyRule>,
    /// The Roles' rules, in the order their namespaces were first needed.
    pub namespace_rules: Vec<NamespaceRules>,
    /// The objects as YAML (ClusterRole, ClusterRoleBinding, Roles, RoleBindings, separated by `---`).
    pub yaml: String,
    /// Granted rules no request used.
    pub unused: Vec<GrantedRule>,
    /// Every request read.
    pub used: Vec<Used>,
    /// Requests the apiserver allowed that the RBAC state does not grant (another authorizer allowed them,
    /// `system:masters` or the node authorizer, or the state is uncertain).
    pub not_granted: Vec<Used>,
    /// Requests the apiserver refused: not proposed (nor counted when widening to every namespace or name).
    pub refused: Vec<Used>,
}

/// One request as audit2rbac's `authorizer.AttributesRecord`.
#[derive(Debug, Clone, Copy)]
struct Req<'a> {
    resource_request: bool,
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    sub: &'a str,
    namespace: &'a str,
    name: &'a str,
    path: &'a str,
}

impl<'a> Req<'a> {
    fn of(u: &'a Used) -> Req<'a> {
        Req {
            resource_request: u.non_resource_url.is_none(),
            verb: &u.verb,
            group: &u.api_group,
            resource: &u.resource,
            sub: &u.subresource,
            namespace: u.namespace.as_deref().unwrap_or(""),
            name: u.name.as_deref().unwrap_or(""),
            path: u.non_resource_url.as_deref().unwrap_or(""),
        }
    }

    fn access(&self) -> Access {
        if self.resource_request {
            Access::resource(self.verb, self.group, self.resource, self.sub)
                .in_namespace(self.namespace)
                .with_name(self.name)
        } else {
            Access::non_resource(self.verb, self.path)
        }
    }

    /// Equal but for namespace, name and path (the comparison that widens a request).
    fn same_but_where(&self, o: &Req<'_>) -> bool {
        self.resource_request == o.resource_request
            && self.verb == o.verb
            && self.group == o.group
            && self.resource == o.resource
            && self.sub == o.sub
    }
}

/// The least-privilege roles covering `used` for `user`, and which of the `granted` rules went unused.
pub fn propose(user: &UserRef, granted: &[GrantedRule], used: &[Used]) -> Proposal {
    let used = &used[..used.len().min(MAX_USED)];
    // Only what the apiserver allowed: a refused probe is neither proposed nor a reason to widen.
    let mut reqs: Vec<Req<'_>> = used.iter().filter(|u| u.allowed).map(Req::of).collect();
    go_stable_sort(&mut reqs, less);
    let mut cluster: Vec<PolicyRule> = Vec::new();
    let mut has_cluster = false;
    let mut roles: Vec<(String, Vec<PolicyRule>)> = Vec::new();
    let mut widened: Vec<Widened> = Vec::new();
    for r in &reqs {
        let access = r.access();
        if discovery_allows(user, &access) || generated_allows(&cluster, &roles, r, &access) {
            continue;
        }
        if !r.resource_request {
            has_cluster = true;
            cluster.push(PolicyRule {
                verbs: vec![r.verb.to_string()],
                non_resource_urls: vec![r.path.to_string()],
                ..PolicyRule::default()
            });
            continue;
        }
        let (mut namespace, mut name) = (r.namespace, r.name);
        // The namespaces and names the same request was made in (for the comment on a widened rule).
        let mut namespaces: BTreeSet<&str> = BTreeSet::new();
        let mut names: BTreeSet<&str> = BTreeSet::new();
        if !namespace.is_empty() || !name.is_empty() {
            for a in reqs.iter().filter(|a| a.resource_request) {
                let other_namespace = !a.namespace.is_empty() && a.namespace != namespace;
                let other_name = !a.name.is_empty() && a.name != name;
                if a.same_but_where(r) {
                    namespaces.insert(a.namespace);
                    names.insert(a.name);
                    if other_namespace {
                        namespace = "";
                    }
                    if other_name {
                        name = "";
                    }
                }
            }
        }
        let rule = resource_rule(r, name);
        let mut why = Vec::new();
        if namespace.is_empty() && !r.namespace.is_empty() {
            let n = namespaces.iter().filter(|n| !n.is_empty()).count();
            why.push(format!(
                "used in {n} namespaces -> ClusterRole (every namespace)"
            ));
        }
        if name.is_empty() && !r.name.is_empty() {
            let n = names.iter().filter(|n| !n.is_empty()).count();
            why.push(format!("used with {n} names -> every name"));
        }
        if !why.is_empty() {
            widened.push(Widened {
                namespace: namespace.to_string(),
                note: yaml::escaped(&format!("{}: {}", describe_rule(&rule), why.join("; "))),
                rule: rule.clone(),
            });
        }
        if namespace.is_empty() {
            has_cluster = true;
            cluster.push(rule);
        } else {
            match roles.iter_mut().find(|(ns, _)| ns == namespace) {
                Some((_, rules)) => rules.push(rule),
                None => roles.push((namespace.to_string(), vec![rule])),
            }
        }
    }
    let cluster_rules = compact_rules(&cluster);
    let namespace_rules: Vec<NamespaceRules> = roles
        .into_iter()
        .map(|(namespace, rules)| NamespaceRules {
            namespace,
            rules: compact_rules(&rules),
        })
        .collect();
    let subject = user_subject(&user.name);
    let name = format!(
        "kubetrail:least-privilege:{}",
        sanitize_name(&name_part(&user.name))
    );
    let covered = |u: &Used| granted.iter().any(|g| covers(g, u));
    let unused = granted
        .iter()
        .filter(|g| !used.iter().any(|u| covers(g, u)))
        .cloned()
        .collect();
    let not_granted = used
        .iter()
        .filter(|u| u.allowed && !covered(u))
        .cloned()
        .collect();
    let refused: Vec<Used> = used.iter().filter(|u| !u.allowed).cloned().collect();
    let yaml = write_yaml(
        user,
        &name,
        &subject,
        has_cluster,
        &cluster_rules,
        &namespace_rules,
        &widened,
        used.len(),
        &refused,
    );
    Proposal {
        name,
        subject,
        cluster_rules,
        namespace_rules,
        yaml,
        unused,
        used: used.to_vec(),
        not_granted,
        refused,
    }
}

/// A generated rule widened to every namespace (`namespace` empty) or every name, and why.
struct Widened {
    namespace: String,
    rule: PolicyRule,
    note: String,
}

/// `get,list,watch secrets` (the comment's name for a generated rule).
fn describe_rule(r: &PolicyRule) -> String {
    let resources: Vec<String> = r
        .resources
        .iter()
        .map(|res| match r.api_groups.first().filter(|g| !g.is_empty()) {
            Some(g) => format!("{res}.{g}"),
            None => res.clone(),
        })
        .collect();
    format!("{} {}", r.verbs.join(","), resources.join(","))
}

/// The notes of the `widened` rules of the role of `namespace` (`""`: the ClusterRole), each on the first of
/// the compacted `rules` it went into.
fn widening_notes(widened: &[Widened], namespace: &str, rules: &[PolicyRule]) -> Vec<Vec<String>> {
    let mut notes = vec![Vec::new(); rules.len()];
    for w in widened.iter().filter(|w| w.namespace == namespace) {
        let into = rules.iter().position(|c| {
            w.rule.api_groups.iter().all(|g| c.api_groups.contains(g))
                && w.rule.resources.iter().all(|r| c.resources.contains(r))
                && w.rule.verbs.iter().any(|v| c.verbs.contains(v))
                && (!w.rule.resource_names.is_empty() || c.resource_names.is_empty())
        });
        if let Some(i) = into {
            notes[i].push(w.note.clone());
        }
    }
    notes
}

#[allow(clippy::too_many_arguments)]
fn write_yaml(
    user: &UserRef,
    name: &str,
    subject: &Subject,
    has_cluster: bool,
    cluster_rules: &[PolicyRule],
    namespace_rules: &[NamespaceRules],
    widened: &[Widened],
    requests: usize,
    refused: &[Used],
) -> String {
    let mut head = format!(
        "Least-privilege RBAC for {} from {requests} distinct request(s) (audit2rbac's algorithm).",
        yaml::escaped(&user.name)
    );
    if !refused.is_empty() {
        head.push_str(&format!(
            "\nRefused by the apiserver ({}), not proposed:",
            refused.len()
        ));
        for u in refused.iter().take(MAX_COMMENT_LINES) {
            head.push_str(&format!("\n  {}", describe(u)));
        }
        if refused.len() > MAX_COMMENT_LINES {
            head.push_str("\n  and more");
        }
    }
    let mut docs = Vec::new();
    if has_cluster {
        let notes = widening_notes(widened, "", cluster_rules);
        docs.push(yaml::role(name, None, cluster_rules, &notes));
        docs.push(yaml::binding(name, None, subject));
    }
    for nr in namespace_rules {
        let notes = widening_notes(widened, &nr.namespace, &nr.rules);
        docs.push(yaml::role(name, Some(&nr.namespace), &nr.rules, &notes));
    }
    for nr in namespace_rules {
        docs.push(yaml::binding(name, Some(&nr.namespace), subject));
    }
    let mut out = yaml::comment(&head);
    if docs.is_empty() {
        out.push_str(&yaml::comment(
            "Nothing to grant: every request is allowed by discovery.",
        ));
    }
    out.push_str(&docs.join("---\n"));
    out
}

/// `get secrets/NAME in ns1 (3 times)`.
fn describe(u: &Used) -> String {
    let what = match &u.non_resource_url {
        Some(p) => p.clone(),
        None => {
            let mut w = u.resource.clone();
            if !u.api_group.is_empty() {
                w = format!("{w}.{}", u.api_group);
            }
            if !u.subresource.is_empty() {
                w = format!("{w}/{}", u.subresource);
            }
            if let Some(n) = u.name.as_deref().filter(|n| !n.is_empty()) {
                w = format!("{w} {n}");
            }
            match u.namespace.as_deref().filter(|n| !n.is_empty()) {
                Some(ns) => format!("{w} in {ns}"),
                None => w,
            }
        }
    };
    yaml::escaped(&format!("{} {what} ({} times)", u.verb, u.count))
}

/// Whether granted rule `g` allows request `u` where it applies.
fn covers(g: &GrantedRule, u: &Used) -> bool {
    let access = u.access();
    let in_scope = match &g.namespace {
        None => true,
        Some(ns) => access.effective_namespace() == Some(ns.as_str()),
    };
    in_scope && rule_allows(&access, &g.rule)
}

fn discovery_allows(user: &UserRef, access: &Access) -> bool {
    let rule = PolicyRule {
        verbs: vec!["get".to_string()],
        non_resource_urls: DISCOVERY_URLS.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    };
    user.groups
        .iter()
        .any(|g| DISCOVERY_GROUPS.contains(&g.as_str()))
        && rule_allows(access, &rule)
}

/// Whether the rules generated so far allow the request (the ClusterRole's anywhere, a Role's in its
/// namespace).
fn generated_allows(
    cluster: &[PolicyRule],
    roles: &[(String, Vec<PolicyRule>)],
    r: &Req<'_>,
    access: &Access,
) -> bool {
    cluster.iter().any(|rule| rule_allows(access, rule))
        || (r.resource_request
            && !r.namespace.is_empty()
            && roles
                .iter()
                .filter(|(ns, _)| ns == r.namespace)
                .any(|(_, rules)| rules.iter().any(|rule| rule_allows(access, rule))))
}

/// `attributesToResourceRule`.
fn resource_rule(r: &Req<'_>, name: &str) -> PolicyRule {
    let mut verbs = vec![r.verb.to_string()];
    if let Some((_, more)) = VERB_EXPANSIONS.iter().find(|(v, _)| *v == r.verb) {
        verbs.extend(more.iter().map(|v| v.to_string()));
    }
    let resource = if r.sub.is_empty() {
        r.resource.to_string()
    } else {
        format!("{}/{}", r.resource, r.sub)
    };
    PolicyRule {
        verbs,
        api_groups: vec![r.group.to_string()],
        resources: vec![resource],
        resource_names: if name.is_empty() {
            Vec::new()
        } else {
            vec![name.to_string()]
        },
        non_resource_urls: Vec::new(),
    }
}

/// audit2rbac's `sortRequests` order: whether `a` sorts before `b`.
fn less(a: &Req<'_>, b: &Req<'_>) -> bool {
    if a.resource_request != b.resource_request {
        return !a.resource_request;
    }
    if a.resource_request {
        let (ca, cb) = (a.namespace.is_empty(), b.namespace.is_empty());
        if ca != cb {
            return ca;
        }
        let (ua, ub) = (a.name.is_empty(), b.name.is_empty());
        if ua != ub {
            return ua;
        }
        if a.verb == "list" && b.verb == "get" {
            return true;
        }
        if a.verb == "get" && b.verb == "list" {
            return false;
        }
        let keys = |r: &Req<'_>| {
            [r.group, r.resource, r.sub, r.namespace, r.name, r.verb].map(str::to_string)
        };
        for (x, y) in keys(a).iter().zip(keys(b).iter()) {
            if x != y {
                return x < y;
            }
        }
        false
    } else {
        (a.verb, a.path) < (b.verb, b.path)
    }
}

/// Go's `sort.SliceStable` (insertion sort of blocks of 20, then `symMerge`), so that an order that is not a
/// strict weak order (audit2rbac's `list` before `get` rule) sorts as in Go, and never panics.
pub(crate) fn go_stable_sort<T: Copy>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = v.len();
    let mut block = 20;
    let (mut a, mut b) = (0, block);
    while b <= n {
        insertion_sort(v, a, b, &less);
        a = b;
        b += block;
    }
    insertion_sort(v, a, n, &less);
    while block < n {
        a = 0;
        b = 2 * block;
        while b <= n {
            sym_merge(v, a, a + block, b, &less);
            a = b;
            b += 2 * block;
        }
        let m = a + block;
        if m < n {
            sym_merge(v, a, m, n, &less);
        }
        block *= 2;
    }
}

fn insertion_sort<T: Copy>(v: &mut [T], a: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    for i in a + 1..b {
        let mut j = i;
        while j > a && less(&v[j], &v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn sym_merge<T: Copy>(v: &mut [T], a: usize, m: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    if m - a == 1 {
        let (mut i, mut j) = (m, b);
        while i < j {
            let h = (i + j) / 2;
            if less(&v[h], &v[a]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        for k in a..i - 1 {
            v.swap(k, k + 1);
        }
        return;
    }
    if b - m == 1 {
        let (mut i, mut j) = (a, m);
        while i < j {
            let h = (i + j) / 2;
            if !less(&v[m], &v[h]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        let mut k = m;
        while k > i {
            v.swap(k, k - 1);
            k -= 1;
        }
        return;
    }
    let mid = (a + b) / 2;
    let n = mid + m;
    let (mut start, mut r) = if m > mid { (n - b, mid) } else { (a, m) };
    let p = n - 1;
    while start < r {
        let c = (start + r) / 2;
        if !less(&v[p - c], &v[c]) {
            start = c + 1;
        } else {
            r = c;
        }
    }
    let end = n - start;
    if start < m && m < end {
        v[start..end].rotate_left(m - start);
    }
    if a < start && start < mid {
        sym_merge(v, a, start, mid, less);
    }
    if mid < end && end < b {
        sym_merge(v, mid, end, b, less);
    }
}

/// audit2rbac's `compactRules`.
pub(crate) fn compact_rules(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let broken: Vec<PolicyRule> = rules.iter().flat_map(breakdown).collect();
    let mut compacted = compact(broken);
    for r in &mut compacted {
        r.verbs.sort();
        r.verbs.dedup();
    }
    let mut acc: Vec<PolicyRule> = Vec::new();
    for rule in compacted {
        if rule.resources.is_empty() {
            acc.push(rule);
            continue;
        }
        let nameless = PolicyRule {
            resource_names: Vec::new(),
            ..rule.clone()
        };
        let resourceless = PolicyRule {
            resources: Vec::new(),
            ..rule.clone()
        };
        let mut merged = false;
        for a in acc.iter_mut() {
            if (PolicyRule {
                resource_names: Vec::new(),
                ..a.clone()
            }) == nameless
            {
                a.resource_names.extend(rule.resource_names.iter().cloned());
                a.resource_names.sort();
                a.resource_names.dedup();
                merged = true;
                break;
            }
            if (PolicyRule {
                resources: Vec::new(),
                ..a.clone()
            }) == resourceless
            {
                a.resources.extend(rule.resources.iter().cloned());
                a.resources.sort();
                a.resources.dedup();
                merged = true;
                break;
            }
        }
        if !merged {
            acc.push(rule);
        }
    }
    acc.sort_by(|x, y| {
        x.api_groups
            .join(",")
            .cmp(&y.api_groups.join(","))
            .then_with(|| compact_string(x).cmp(&compact_string(y)))
    });
    acc
}

/// component-helpers' `BreakdownRule`: one rule per group, resource, verb (and name), and per URL and verb.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let one = |s: &String| vec![s.clone()];
    for g in &rule.api_groups {
        for r in &rule.resources {
            for v in &rule.verbs {
                let base = PolicyRule {
                    verbs: one(v),
                    api_groups: one(g),
                    resources: one(r),
                    ..PolicyRule::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for n in &rule.resource_names {
                        out.push(PolicyRule {
                            resource_names: one(n),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for v in &rule.verbs {
            out.push(PolicyRule {
                verbs: one(v),
                non_resource_urls: one(u),
                ..PolicyRule::default()
            });
        }
    }
    out
}

/// pkg/registry/rbac/validation `CompactRules`: rules of one group and one resource and nothing else merged
/// (their verbs appended), after the others.
fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let is_simple = rule.resource_names.is_empty()
            && rule.non_resource_urls.is_empty()
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1;
        if !is_simple {
            out.push(rule);
            continue;
        }
        match simple
            .iter_mut()
            .find(|s| s.api_groups == rule.api_groups && s.resources == rule.resources)
        {
            Some(s) => s.verbs.extend(rule.verbs),
            None => simple.push(rule),
        }
    }
    out.extend(simple);
    out
}

/// Go's `rbacv1helpers.CompactString`: `{APIGroups:["" "apps"], Resources:["pods"], Verbs:["get"]}`.
fn compact_string(r: &PolicyRule) -> String {
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|s| crate::model::go_quote(s)).collect();
        format!("[{}]", quoted.join(" "))
    };
    let parts: Vec<String> = [
        ("APIGroups", &r.api_groups),
        ("Resources", &r.resources),
        ("NonResourceURLs", &r.non_resource_urls),
        ("ResourceNames", &r.resource_names),
        ("Verbs", &r.verbs),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}:{}", list(v)))
    .collect();
    format!("{{{}}}", parts.join(", "))
}

/// `serviceaccount.SplitUsername`: the namespace and name of a service account's user name.
fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// audit2rbac's `userToSubject`.
fn user_subject(user: &str) -> Subject {
    match split_service_account(user) {
        Some((ns, name)) => Subject {
            kind: "ServiceAccount".to_string(),
            name: name.to_string(),
            namespace: ns.to_string(),
        },
        None => Subject {
            kind: "User".to_string(),
            name: user.to_string(),
            namespace: String::new(),
        },
    }
}

/// The user part of the generated name: a service account's name unless it is `default`.
fn name_part(user: &str) -> String {
    match split_service_account(user) {
        Some((_, name)) if name != "default" => name.to_string(),
        _ => user.to_string(),
    }
}

/// audit2rbac's `sanitizeName`: characters other than ASCII letters, digits and `:` as `-`, lowercased.
fn sanitize_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ':' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_stable_sort_agrees_with_a_stable_sort_on_a_total_order() {
        let mut v: Vec<(u8, usize)> = (0..257).map(|i| (((i * 7919) % 13) as u8, i)).collect();
        let mut w = v.clone();
        go_stable_sort(&mut v, |a, b| a.0 < b.0);
        w.sort_by_key(|x| x.0);
        assert_eq!(v, w);
    }

    #[test]
    fn compact_string_is_go_s() {
        let r = PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into(), "apps".into()],
            resources: vec!["pods".into()],
            ..PolicyRule::default()
        };
        assert_eq!(
            compact_string(&r),
            r#"{APIGroups:["" "apps"], Resources:["pods"], Verbs:["get" "list"]}"#
        );
    }
}
