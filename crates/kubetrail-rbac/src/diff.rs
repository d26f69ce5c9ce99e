//! Grants gained and lost between two states: a grant is one subject's (binding, role) pair with the role's
//! effective rules, so a changed role changes the grants of every subject bound to it (and of the
//! ClusterRoles that aggregate it).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{Key, PolicyRule, Subject};
use crate::state::{Grant, State};

/// A grant added or removed, with the rules the subject gained or lost by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantChange {
    pub added: bool,
    pub subject: Subject,
    pub binding: Key,
    pub role: Key,
    /// What the subject gained (`added`) or lost by this binding.
    pub rules: Vec<PolicyRule>,
}

/// The grants added and removed from `before` to `after`.
pub fn diff(before: &State, after: &State) -> Vec<GrantChange> {
    diff_grants(before.grants(), after.grants())
}

/// The changes from one list of grants to another: removals first, then additions, each in key order.
pub(crate) fn diff_grants(before: Vec<Grant>, after: Vec<Grant>) -> Vec<GrantChange> {
    type Id = (Key, Key, Subject);
    let index = |gs: Vec<Grant>| -> BTreeMap<Id, Vec<PolicyRule>> {
        gs.into_iter()
            .map(|g| ((g.binding, g.role, g.subject), g.rules))
            .collect()
    };
    let (before, after) = (index(before), index(after));
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let minus = |a: &[PolicyRule], b: &[PolicyRule]| -> Vec<PolicyRule> {
        let b: BTreeSet<&PolicyRule> = b.iter().collect();
        let mut seen = BTreeSet::new();
        a.iter()
            .filter(|r| !b.contains(r) && seen.insert(*r))
            .cloned()
            .collect()
    };
    let change = |added: bool, (binding, role, subject): &Id, rules: Vec<PolicyRule>| GrantChange {
        added,
        subject: subject.clone(),
        binding: binding.clone(),
        role: role.clone(),
        rules,
    };
    for (id, rules) in &before {
        let lost = match after.get(id) {
            Some(now) => minus(rules, now),
            None => minus(rules, &[]),
        };
        if !lost.is_empty() {
            removed.push(change(false, id, lost));
        }
    }
    for (id, rules) in &after {
        let gained = match before.get(id) {
            Some(was) => minus(rules, was),
            None => minus(rules, &[]),
        };
        if !gained.is_empty() {
            added.push(change(true, id, gained));
        }
    }
    removed.extend(added);
    removed
}
