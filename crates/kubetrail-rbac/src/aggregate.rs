//! A role's effective rules, with ClusterRole aggregation computed as the clusterrole-aggregation controller
//! computes it (pkg/controller/clusterroleaggregation, `syncClusterRole`): for a ClusterRole with an
//! `aggregationRule`, the union of the rules of every *other* ClusterRole its selectors match, selector by
//! selector, matched roles by name, a rule kept once (its first place). The controller writes that result
//! within seconds of any ClusterRole change; kubetrail computes it on every evaluation, so a replayed write
//! (a new role labelled `aggregate-to-edit`) counts at once. A matched role that aggregates itself
//! contributes its own effective rules (what the controller converges to); in a cycle, a role already being
//! computed contributes its stored rules. A selector the apiserver refuses makes the controller fail: the
//! role keeps its stored rules. Results are bounded by [`MAX_AGGREGATED_RULES`].

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use crate::model::{Body, Key, Kind, PolicyRule, RoleBody};
use crate::state::State;

/// The most rules an aggregated role collects.
pub const MAX_AGGREGATED_RULES: usize = 100_000;

/// A role's effective rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    pub rules: Vec<PolicyRule>,
    /// The uncertain objects these rules depend on: the role, and the roles aggregated into it (or any
    /// ClusterRole of unknown content, which might be).
    pub uncertain: BTreeSet<Key>,
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
            None => out.rules = role.rules.clone(),
            Some(selectors) => {
                stack.push(key.clone());
                let mut seen: HashSet<PolicyRule> = HashSet::new();
                for sel in selectors {
                    for (k, e) in self.state.of_kind(Kind::ClusterRole) {
                        let Body::Role(member) = &e.body else {
                            continue;
                        };
                        if k == key || !sel.matches(&member.labels) {
                            continue;
                        }
                        let nested;
                        let (rules, uncertain) =
                            if aggregated(k, member).is_some() && !stack.contains(k) {
                                nested = self.compute(k, stack).unwrap_or_default();
                                (
                                    &nested.rules,
                                    nested.uncertain.iter().cloned().collect::<Vec<_>>(),
                                )
                            } else {
                                let u = e.uncertain.as_ref().map(|_| k.clone());
                                (&member.rules, u.into_iter().collect())
                            };
                        out.uncertain.extend(uncertain);
                        for r in rules {
                            if out.rules.len() >= MAX_AGGREGATED_RULES {
                                break;
                            }
                            if seen.insert(r.clone()) {
                                out.rules.push(r.clone());
                            }
                        }
                    }
                }
                // A ClusterRole whose labels are unknown may be one the selectors match.
                for (k, e) in self.state.of_kind(Kind::ClusterRole) {
                    if !e.known && k != key {
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
