//! RBAC at one moment: the four kinds keyed by [`Key`], each with an "uncertain since" marker, and the
//! questions asked of it, answered as kube-apiserver answers them:
//!
//! - [`State::authorize`]: the RBAC authorizer (plugin/pkg/auth/authorizer/rbac/rbac.go `Authorize` over
//!   pkg/registry/rbac/validation/rule.go `VisitRulesFor`): ClusterRoleBindings, then the RoleBindings of the
//!   request's namespace; the first rule that allows decides, and the reason names the binding, role and
//!   subject as the apiserver's `RBAC: allowed by ...`;
//! - [`State::who_can`]: the subject locator (subject_locator.go `AllowedSubjects`): `system:masters` first
//!   (allowed before any authorizer), then each subject of each binding whose role allows the request;
//! - [`State::grants`] and [`State::rules_for`]: who is granted what, by which binding and role.
//!
//! Subjects match as `appliesToUser` matches them: a User by name, a Group by membership, a ServiceAccount by
//! `system:serviceaccount:NS:NAME`, its empty namespace defaulted to the RoleBinding's (in a
//! ClusterRoleBinding it then matches no one). A RoleBinding applies only in its namespace, also when it
//! references a ClusterRole; its `Role` reference is to a Role of its own namespace; a reference to a missing
//! role grants nothing (the authorizer logs an error). nonResourceURL requests have no namespace, so only
//! ClusterRoleBindings grant them. Objects are iterated in key order (kind, namespace, name); the apiserver's
//! informer order is unspecified, so when two bindings allow a request the reason may name another one.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use serde::Serialize;
use serde_json::Value;

use crate::access::Access;
use crate::aggregate::{Resolved, Resolver};
use crate::matching::rule_allows;
use crate::model::{BindingBody, Body, Key, Kind, PolicyRule, Subject, UserRef, go_quote};
use crate::snapshot::Snapshot;

/// The `since` of an object uncertain from the snapshot on.
pub const SNAPSHOT_TIME: &str = "the snapshot";
/// The most notes on what was cut from one object.
const MAX_CUT_NOTES: usize = 10;

/// The group the apiserver allows everything before any authorizer runs.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The reason given for `system:masters`.
pub const MASTERS_WHY: &str =
    "system:masters: the apiserver allows this group before any authorizer";

/// RBAC at one moment.
#[derive(Debug, Clone, Default)]
pub struct State {
    objects: BTreeMap<Key, Entry>,
}

/// One object as known.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The object as last known (for an object whose content was never recorded: its kind and name).
    pub value: Value,
    pub body: Body,
    /// Whether any content of it was ever recorded.
    pub known: bool,
    pub uncertain: Option<Mark>,
}

/// Since when, and why, an object's state is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub since: String,
    pub why: String,
}

/// An object whose state is not known: it still grants what it last granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uncertain {
    pub key: Key,
    /// The time of the write that made it uncertain.
    pub since: String,
    /// `patch by X logged at Metadata: its body was not recorded`.
    pub why: String,
}

/// The authorizer's decision on one request of one identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The apiserver's reason: `RBAC: allowed by ...`, or for a denial the resolution errors it met (`RBAC:
    /// clusterrole.rbac.authorization.k8s.io "x" not found`), or empty.
    pub reason: String,
    /// The binding and role that allowed it.
    pub binding: Option<Key>,
    pub role: Option<Key>,
    pub rule: Option<PolicyRule>,
    /// Whether the decision depends on an uncertain object.
    pub uncertain: bool,
}

/// Who may make a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhoCan {
    pub allowed: Vec<Allowed>,
    pub notes: Vec<String>,
    /// The uncertain objects that could change the answer: bindings in scope, and the roles they use.
    pub uncertain: Vec<Uncertain>,
}

/// One subject allowed, and by what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed {
    pub subject: Subject,
    pub binding: Option<Key>,
    pub role: Option<Key>,
    /// The first rule of the role that allows the request (the one the authorizer stops at).
    pub rule: Option<PolicyRule>,
    /// `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`, as the apiserver says it.
    pub why: String,
    /// Whether the binding or role (or a role aggregated into it) is uncertain.
    pub uncertain: bool,
}

/// One subject's grant by one binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub subject: Subject,
    pub binding: Key,
    pub role: Key,
    /// `None`: cluster-wide (a ClusterRoleBinding).
    pub namespace: Option<String>,
    /// The role's effective rules.
    pub rules: Vec<PolicyRule>,
    pub uncertain: bool,
}

/// The grants of one binding to one role.
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    /// The subjects as they match, each once, in the binding's order.
    pub subjects: Vec<Subject>,
    /// The role's effective rules (one copy per role).
    pub rules: Rc<Resolved>,
    pub uncertain: bool,
}

/// One rule an identity is granted, and where from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantedRule {
    pub rule: PolicyRule,
    pub binding: Key,
    pub role: Key,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
}

impl State {
    /// No objects.
    pub fn new() -> State {
        State::default()
    }

    /// The objects of a snapshot (a later object with the same key replaces an earlier one). An object too
    /// large to read whole is uncertain from the start (since `the snapshot`).
    pub fn from_snapshot(s: &Snapshot) -> State {
        let mut state = State::new();
        for o in &s.objects {
            state.put(o.key.clone(), o.value.clone(), SNAPSHOT_TIME);
        }
        state
    }

    /// The object as last known, for display.
    pub fn object(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key).map(|e| &e.value)
    }

    /// The keys of every object, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.objects.keys()
    }

    /// A role's effective rules (for an aggregated ClusterRole, the rules of the roles it selects); `None`
    /// when there is no such role.
    pub fn effective_rules(&self, role: &Key) -> Option<Vec<PolicyRule>> {
        Resolver::new(self).role(role).map(|r| r.rules.clone())
    }

    /// The objects whose state is not known.
    pub fn uncertain(&self) -> Vec<Uncertain> {
        self.objects
            .iter()
            .filter_map(|(k, e)| uncertain_of(k, e))
            .collect()
    }

    pub(crate) fn entry(&self, key: &Key) -> Option<&Entry> {
        self.objects.get(key)
    }

    pub(crate) fn entry_mut(&mut self, key: &Key) -> Option<&mut Entry> {
        self.objects.get_mut(key)
    }

    pub(crate) fn remove(&mut self, key: &Key) -> bool {
        self.objects.remove(key).is_some()
    }

    /// Sets `key` to the known object `value`, as of `since`: certain, unless a part of it was too large to
    /// read (the authorizer reads all of it: what was cut may grant more), which is noted and makes it
    /// uncertain. Returns the notes.
    pub(crate) fn put(&mut self, key: Key, value: Value, since: &str) -> Vec<String> {
        let (body, cuts) = Body::parse(key.kind, &value);
        let uncertain = cuts.first().map(|first| Mark {
            since: since.to_string(),
            why: match cuts.len() {
                1 => first.clone(),
                n => format!("{first} (and {} more parts cut)", n - 1),
            },
        });
        let mut notes: Vec<String> = cuts
            .iter()
            .take(MAX_CUT_NOTES)
            .map(|c| format!("{key}: {c}"))
            .collect();
        if cuts.len() > MAX_CUT_NOTES {
            notes.push(format!(
                "{key}: and {} more parts cut",
                cuts.len() - MAX_CUT_NOTES
            ));
        }
        self.objects.insert(
            key,
            Entry {
                value,
                body,
                known: true,
                uncertain,
            },
        );
        notes
    }

    /// Inserts an object whose content is not known.
    pub(crate) fn put_unknown(&mut self, key: Key, mark: Mark) {
        let mut metadata = serde_json::Map::new();
        metadata.insert("name".into(), Value::String(key.name.clone()));
        if !key.namespace.is_empty() {
            metadata.insert("namespace".into(), Value::String(key.namespace.clone()));
        }
        let value = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": key.kind.as_str(),
            "metadata": metadata,
        });
        let body = Body::empty(key.kind);
        self.objects.insert(
            key,
            Entry {
                value,
                body,
                known: false,
                uncertain: Some(mark),
            },
        );
    }

    /// The objects of one kind, in key order.
    pub(crate) fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&Key, &Entry)> {
        let start = Key {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
    }

    /// The objects of one kind in one namespace, in key order.
    pub(crate) fn of_kind_in<'s>(
        &'s self,
        kind: Kind,
        namespace: &'s str,
    ) -> impl Iterator<Item = (&'s Key, &'s Entry)> {
        let start = Key {
            kind,
            namespace: namespace.to_string(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind && k.namespace == namespace)
    }

    /// The RBAC authorizer's decision on `access` by `user` (`system:masters` allowed first, as the
    /// apiserver's privileged-group authorizer does).
    pub fn authorize(&self, user: &UserRef, access: &Access) -> Decision {
        let mut d = Decision {
            allowed: false,
            reason: String::new(),
            binding: None,
            role: None,
            rule: None,
            uncertain: false,
        };
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            d.allowed = true;
            d.reason = MASTERS_WHY.to_string();
            return d;
        }
        let resolver = Resolver::new(self);
        let mut errors = Vec::new();
        for (key, binding, scope) in self.bindings_for(access.effective_namespace()) {
            let Some(i) = binding
                .subjects
                .iter()
                .position(|s| applies_to(user, s, scope))
            else {
                continue;
            };
            let Some(role) = role_key(key, &binding.role_ref) else {
                errors.push(role_ref_error(&binding.role_ref));
                continue;
            };
            let Some(resolved) = resolver.role(&role) else {
                errors.push(role_ref_error(&binding.role_ref));
                continue;
            };
            if let Some(rule) = resolved.rules.iter().find(|r| rule_allows(access, r)) {
                d.allowed = true;
                d.reason = format!(
                    "RBAC: allowed by {}",
                    describe(key, binding, &binding.subjects[i])
                );
                d.uncertain = self.is_uncertain(key) || !resolved.certainly_allows(access);
                d.binding = Some(key.clone());
                d.role = Some(role);
                d.rule = Some(rule.clone());
                return d;
            }
        }
        match errors.len() {
            0 => {}
            1 => d.reason = format!("RBAC: {}", errors[0]),
            _ => d.reason = format!("RBAC: [{}]", errors.join(", ")),
        }
        d
    }

    /// Who may make `access`: `system:masters`, then every subject of every binding (ClusterRoleBindings,
    /// then the RoleBindings of the request's namespace) whose role allows it.
    pub fn who_can(&self, q: &Access) -> WhoCan {
        let mut out = WhoCan::default();
        out.allowed.push(Allowed {
            subject: Subject {
                kind: "Group".to_string(),
                name: SYSTEM_MASTERS.to_string(),
                namespace: String::new(),
            },
            binding: None,
            role: None,
            rule: None,
            why: MASTERS_WHY.to_string(),
            uncertain: false,
        });
        let resolver = Resolver::new(self);
        let mut uncertain: BTreeSet<Key> = BTreeSet::new();
        for (key, binding, scope) in self.bindings_for(q.effective_namespace()) {
            if self.is_uncertain(key) {
                uncertain.insert(key.clone());
            }
            let resolved =
                role_key(key, &binding.role_ref).and_then(|r| Some((resolver.role(&r)?, r)));
            let Some((resolved, role)) = resolved else {
                if self.entry(key).is_some_and(|e| e.known) {
                    out.notes.push(format!(
                        "{key} references {} {}, which does not exist: it grants nothing (the authorizer logs an error)",
                        binding.role_ref.kind,
                        go_quote(&binding.role_ref.name)
                    ));
                }
                continue;
            };
            uncertain.extend(resolved.uncertain.iter().cloned());
            let Some(rule) = resolved.rules.iter().find(|r| rule_allows(q, r)) else {
                continue;
            };
            // Certain when the binding is, and a rule of a certain role allows it: an uncertain role
            // aggregated (or maybe aggregated) beside it could only add rules, which the notes say.
            let dep_uncertain = self.is_uncertain(key) || !resolved.certainly_allows(q);
            for s in &binding.subjects {
                let Some(subject) = effective_subject(s, scope) else {
                    out.notes.push(format!(
                        "{key}: subject {} {} matches no one ({})",
                        s.kind,
                        go_quote(&s.name),
                        if s.kind == "ServiceAccount" {
                            "a ServiceAccount without a namespace in a ClusterRoleBinding"
                        } else {
                            "not a User, Group or ServiceAccount"
                        }
                    ));
                    continue;
                };
                out.allowed.push(Allowed {
                    subject,
                    binding: Some(key.clone()),
                    role: Some(role.clone()),
                    rule: Some(rule.clone()),
                    why: format!("RBAC: allowed by {}", describe(key, binding, s)),
                    uncertain: dep_uncertain,
                });
            }
        }
        out.uncertain = uncertain
            .iter()
            .filter_map(|k| uncertain_of(k, self.entry(k)?))
            .collect();
        if !out.uncertain.is_empty() {
            out.notes.push(format!(
                "{} object(s) in scope changed in ways the audit log did not record: the answer may be incomplete",
                out.uncertain.len()
            ));
        }
        out
    }

    /// Every grant: each subject of each binding whose role exists, with the role's effective rules.
    pub fn grants(&self) -> Vec<Grant> {
        let mut out = Vec::new();
        for ((binding, role), p) in self.pairs_where(&|_, _| true) {
            let namespace = (binding.kind == Kind::RoleBinding).then(|| binding.namespace.clone());
            for subject in p.subjects {
                out.push(Grant {
                    subject,
                    binding: binding.clone(),
                    role: role.clone(),
                    namespace: namespace.clone(),
                    rules: p.rules.rules.clone(),
                    uncertain: p.uncertain,
                });
            }
        }
        out
    }

    /// The (binding, role) pairs `pred(binding, role)` selects whose role exists, each with the binding's
    /// distinct subjects and the role's effective rules, shared by every binding to the role (a grant is one
    /// subject of a pair: expanding them here would copy a role's rules once per subject).
    pub(crate) fn pairs_where(
        &self,
        pred: &dyn Fn(&Key, &Key) -> bool,
    ) -> BTreeMap<(Key, Key), Pair> {
        let resolver = Resolver::new(self);
        let mut out = BTreeMap::new();
        for kind in [Kind::RoleBinding, Kind::ClusterRoleBinding] {
            for (key, e) in self.of_kind(kind) {
                let Body::Binding(b) = &e.body else { continue };
                let Some(role) = role_key(key, &b.role_ref) else {
                    continue;
                };
                if !pred(key, &role) {
                    continue;
                }
                let Some(rules) = resolver.role(&role) else {
                    continue;
                };
                let scope = if kind == Kind::RoleBinding {
                    key.namespace.as_str()
                } else {
                    ""
                };
                let uncertain = e.uncertain.is_some() || !rules.uncertain.is_empty();
                let mut seen = BTreeSet::new();
                let subjects = b
                    .subjects
                    .iter()
                    .filter_map(|s| effective_subject(s, scope))
                    .filter(|s| seen.insert(s.clone()))
                    .collect();
                out.insert(
                    (key.clone(), role),
                    Pair {
                        subjects,
                        rules,
                        uncertain,
                    },
                );
            }
        }
        out
    }

    /// Every rule `user` is granted, in every namespace, with the binding and role it comes from.
    pub fn rules_for(&self, user: &UserRef) -> Vec<GrantedRule> {
        let resolver = Resolver::new(self);
        let mut out = Vec::new();
        for kind in [Kind::ClusterRoleBinding, Kind::RoleBinding] {
            for (key, e) in self.of_kind(kind) {
                let Body::Binding(b) = &e.body else { continue };
                let scope = if kind == Kind::RoleBinding {
                    key.namespace.as_str()
                } else {
                    ""
                };
                if !b.subjects.iter().any(|s| applies_to(user, s, scope)) {
                    continue;
                }
                let Some(role) = role_key(key, &b.role_ref) else {
                    continue;
                };
                let Some(resolved) = resolver.role(&role) else {
                    continue;
                };
                for rule in &resolved.rules {
                    out.push(GrantedRule {
                        rule: rule.clone(),
                        binding: key.clone(),
                        role: role.clone(),
                        namespace: (!scope.is_empty()).then(|| scope.to_string()),
                    });
                }
            }
        }
        out
    }

    /// Marks `key` uncertain from `since` for `why`, when the caller knows what the writes alone do not (two
    /// writes to it in flight at once, whose order the apiserver chose); false when it is not known.
    pub fn mark_uncertain(&mut self, key: &Key, since: &str, why: String) -> bool {
        let Some(e) = self.entry_mut(key) else {
            return false;
        };
        if e.uncertain.is_none() {
            e.uncertain = Some(Mark {
                since: since.to_string(),
                why,
            });
        }
        true
    }

    fn is_uncertain(&self, key: &Key) -> bool {
        self.entry(key).is_some_and(|e| e.uncertain.is_some())
    }

    /// The bindings the authorizer visits for a request in `namespace`, in order, each with the namespace its
    /// subjects are matched in (`""` for ClusterRoleBindings).
    fn bindings_for<'s>(
        &'s self,
        namespace: Option<&'s str>,
    ) -> impl Iterator<Item = (&'s Key, &'s BindingBody, &'s str)> {
        let crbs = self
            .of_kind(Kind::ClusterRoleBinding)
            .map(|(k, e)| (k, e, ""));
        let rbs = namespace.into_iter().flat_map(move |ns| {
            self.of_kind_in(Kind::RoleBinding, ns)
                .map(move |(k, e)| (k, e, ns))
        });
        crbs.chain(rbs).filter_map(|(k, e, scope)| match &e.body {
            Body::Binding(b) => Some((k, b, scope)),
            Body::Role(_) => None,
        })
    }
}

fn uncertain_of(key: &Key, e: &Entry) -> Option<Uncertain> {
    e.uncertain.as_ref().map(|m| Uncertain {
        key: key.clone(),
        since: m.since.clone(),
        why: m.why.clone(),
    })
}

/// The role a binding's `roleRef` resolves to (`GetRoleReferenceRules`): a Role of the binding's namespace
/// (none for a ClusterRoleBinding), or a ClusterRole.
pub(crate) fn role_key(binding: &Key, r: &crate::model::RoleRef) -> Option<Key> {
    match r.kind.as_str() {
        "Role" if !binding.namespace.is_empty() => {
            Some(Key::new(Kind::Role, &binding.namespace, &r.name))
        }
        "ClusterRole" => Some(Key::new(Kind::ClusterRole, "", &r.name)),
        _ => None,
    }
}

/// The error the authorizer logs for a role reference it cannot resolve.
fn role_ref_error(r: &crate::model::RoleRef) -> String {
    match r.kind.as_str() {
        "Role" => format!(
            "role.rbac.authorization.k8s.io {} not found",
            go_quote(&r.name)
        ),
        "ClusterRole" => format!(
            "clusterrole.rbac.authorization.k8s.io {} not found",
            go_quote(&r.name)
        ),
        k => format!("unsupported role reference kind: {}", go_quote(k)),
    }
}

/// `appliesToUser`: whether binding subject `s` matches `user`, `namespace` being the RoleBinding's (`""`
/// for a ClusterRoleBinding).
pub fn applies_to(user: &UserRef, s: &Subject, namespace: &str) -> bool {
    match s.kind.as_str() {
        "User" => user.name == s.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                namespace
            } else {
                &s.namespace
            };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

/// The subject as it matches: a ServiceAccount's empty namespace defaulted to `namespace`; `None` for a
/// subject that matches no one.
fn effective_subject(s: &Subject, namespace: &str) -> Option<Subject> {
    match s.kind.as_str() {
        "User" | "Group" => Some(Subject {
            kind: s.kind.clone(),
            name: s.name.clone(),
            namespace: String::new(),
        }),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                namespace
            } else {
                &s.namespace
            };
            (!ns.is_empty()).then(|| Subject {
                kind: s.kind.clone(),
                name: s.name.clone(),
                namespace: ns.to_string(),
            })
        }
        _ => None,
    }
}

/// The authorizer's source description: `ClusterRoleBinding "b" of ClusterRole "r" to User "u"`,
/// `RoleBinding "b/ns" of Role "r" to ServiceAccount "sa/ns"` (rule.go's describers).
fn describe(key: &Key, b: &BindingBody, s: &Subject) -> String {
    let subject = match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                key.namespace.as_str()
            } else {
                s.namespace.as_str()
            };
            format!("{} {}", s.kind, go_quote(&format!("{}/{}", s.name, ns)))
        }
        _ => format!("{} {}", s.kind, go_quote(&s.name)),
    };
    let binding = if key.kind == Kind::RoleBinding {
        go_quote(&format!("{}/{}", key.name, key.namespace))
    } else {
        go_quote(&key.name)
    };
    format!(
        "{} {binding} of {} {} to {subject}",
        key.kind,
        b.role_ref.kind,
        go_quote(&b.role_ref.name)
    )
}
