//! A role's effective rules, with ClusterRole aggregation computed as the clusterrole-aggregation controller
//! computes it (pkg/controller/clusterroleaggregation, `syncClusterRole`): for a ClusterRole with an
//! `aggregationRule`, the union of the rules of every *other* ClusterRole its selectors match, selector by
//! selector, matched roles by name, a rule kept once (its first place). The controller writes that result
//! within seconds of any ClusterRole change; kubetrail computes it on every evaluation, so a replayed write
//! (a new role labelled `aggregate-to-edit`) counts at once. A matched role that aggregates itself
//! contributes its own effective rules (what the controller converges to); in a cycle, a role already being
//! computed contributes its stored rules. A selector the apiserver refuses makes the controller fail: the
//! role keeps its stored rules. Results are bounded by [`MAX_AGGREGATED_RULES`]. Every uncertain ClusterRole
//! may be one an aggregated role includes (its labels may have changed unrecorded): the aggregated role's
//! rules depend on it.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use crate::model::{Body, Key, Kind, PolicyRule, RoleBody};
use crate::state::State;

/// The most rules an aggregated role collects.
pub const MAX_AGGREGATED_RULES: usize = 100_000;

/// A role's effective rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    pub rules: Vec<PolicyRule>,
    /// Per rule of `rules`: whether every role it comes from is uncertain (an uncertain role's rules may
    /// be gone; a rule a certain role also gives is certain).
    pub rule_uncertain: Vec<bool>,
    /// The uncertain objects these rules depend on: the role, and the roles aggregated into it (or any
    /// uncertain ClusterRole, which might be).
    pub uncertain: BTreeSet<Key>,
}

impl Resolved {
    /// Whether a rule that comes from a certain role allows `access`.
    pub fn certainly_allows(&self, access: &crate::access::Access) -> bool {
        self.rules
            .iter()
            .zip(&self.rule_uncertain)
            .any(|(r, u)| !u && crate::matching::rule_allows(access, r))
    }
}

/// Effective rules of roles, computed once per role for one evaluation of one state.
#[derive(Debug)]
pub(crate) struct Resolver<'a> {
    state: &'a State,
    cache: RefCell<HashMap<Key, Option<Rc<Resolved>>>>,
}

impl<'a> Resolver<'a> {
    pub fn new(state: &'a State) -> Resolver<'a> {
        Resolver {
            state,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The effective rules of role `key`; `None` when it does not exist (or is not a role).
    pub fn role(&self, key: &Key) -> Option<Rc<Resolved>> {
        if let Some(r) = self.cache.borrow().get(key) {
            return r.clone();
        }
        let r = self.compute(key, &mut Vec::new()).map(Rc::new);
        self.cache.borrow_mut().insert(key.clone(), r.clone());
        r
    }

    fn compute(&self, key: &Key, stack: &mut Vec<Key>) -> Option<Resolved> {
        let entry = self.state.entry(key)?;
        let Body::Role(role) = &entry.body else {
            return None;
        };
        let mut out = Resolved::default();
        if entry.uncertain.is_some() {
            out.uncertain.insert(key.clone());
        }
        match aggregated(key, role) {
            None => {
                out.rules = role.rules.clone();
                out.rule_uncertain = vec![entry.uncertain.is_some(); out.rules.len()];
            }
            Some(selectors) => {
                stack.push(key.clone());
                // The aggregated role's own selectors may have changed: all its rules are as uncertain as it.
                let own = entry.uncertain.is_some();
                let mut seen: HashMap<PolicyRule, usize> = HashMap::new();
                for sel in selectors {
                    for (k, e) in self.state.of_kind(Kind::ClusterRole) {
                        let Body::Role(member) = &e.body else {
                            continue;
                        };
                        if k == key || !sel.matches(&member.labels) {
                            continue;
                        }
                        let nested;
                        let member_uncertain = vec![e.uncertain.is_some(); member.rules.len()];
                        let (rules, rule_uncertain, uncertain) =
                            if aggregated(k, member).is_some() && !stack.contains(k) {
                                nested = self.compute(k, stack).unwrap_or_default();
                                (
                                    &nested.rules,
                                    &nested.rule_uncertain,
                                    nested.uncertain.iter().cloned().collect::<Vec<_>>(),
                                )
                            } else {
                                let u = e.uncertain.as_ref().map(|_| k.clone());
                                (&member.rules, &member_uncertain, u.into_iter().collect())
                            };
                        out.uncertain.extend(uncertain);
                        for (r, &u) in rules.iter().zip(rule_uncertain) {
                            let u = u || own;
                            if let Some(&i) = seen.get(r) {
                                out.rule_uncertain[i] &= u;
                                continue;
                            }
                            if out.rules.len() >= MAX_AGGREGATED_RULES {
                                break;
                            }
                            seen.insert(r.clone(), out.rules.len());
                            out.rules.push(r.clone());
                            out.rule_uncertain.push(u);
                        }
                    }
                }
                // An uncertain ClusterRole may be one the selectors match: its labels may have changed in a
                // way not recorded (a Metadata-level patch adding `aggregate-to-admin`), or never be known.
                for (k, e) in self.state.of_kind(Kind::ClusterRole) {
                    if (!e.known || e.uncertain.is_some()) && k != key {
                        out.uncertain.insert(k.clone());
                    }
                }
                stack.pop();
            }
        }
        Some(out)
    }
}

/// The selectors of an aggregated ClusterRole whose selectors all parse (else it keeps its stored rules).
fn aggregated<'r>(key: &Key, role: &'r RoleBody) -> Option<Vec<&'r crate::selector::Selector>> {
    if key.kind != Kind::ClusterRole {
        return None;
    }
    role.aggregation
        .as_ref()?
        .iter()
        .map(|s| s.as_ref().ok())
        .collect()
}
