//! Grants gained and lost between two states: a grant is one subject's (binding, role) pair with the role's
//! effective rules, so a changed role changes the grants of every subject bound to it (and of the
//! ClusterRoles that aggregate it).
//!
//! The change is computed per (binding, role) pair, on the role's rules as resolved once for each state:
//! the rules a role lost and gained are found once per role, the subjects a binding lost and gained once per
//! binding, and only the changes reported are expanded to subjects. A replayed write reports at most
//! [`MAX_CHANGES`] changes holding at most [`MAX_CHANGED_RULES`] rules, after at most [`MAX_COMPARED`] rule
//! comparisons; past that, its changes are cut with a note (the state itself is updated whole).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use serde::Serialize;

use crate::aggregate::Resolved;
use crate::model::{Key, PolicyRule, Subject};
use crate::state::{Pair, State};

/// The most grant changes one write reports.
pub const MAX_CHANGES: usize = 10_000;
/// The most rules, over all its changes, one write reports.
pub const MAX_CHANGED_RULES: usize = 100_000;
/// The most rule comparisons made to find what one write changed.
pub const MAX_COMPARED: usize = 1_000_000;

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

/// The grants added and removed from `before` to `after` (all of them).
pub fn diff(before: &State, after: &State) -> Vec<GrantChange> {
    let all = |_: &Key, _: &Key| true;
    diff_pairs(
        &before.pairs_where(&all),
        &after.pairs_where(&all),
        Limits::NONE,
    )
    .changes
}

/// How much a diff may do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub changes: usize,
    pub rules: usize,
    pub compared: usize,
}

impl Limits {
    pub const NONE: Limits = Limits {
        changes: usize::MAX,
        rules: usize::MAX,
        compared: usize::MAX,
    };
    /// A replayed write's.
    pub const WRITE: Limits = Limits {
        changes: MAX_CHANGES,
        rules: MAX_CHANGED_RULES,
        compared: MAX_COMPARED,
    };
}

/// The changes found, and whether they were cut at a limit (the note says which).
#[derive(Debug, Default)]
pub(crate) struct Diffed {
    pub changes: Vec<GrantChange>,
    pub cut: Option<String>,
    /// Rule comparisons made.
    pub compared: usize,
}

/// One subject of one pair, and the rules it lost or gained (shared by the subjects of a role).
type Change<'p> = (&'p (Key, Key), &'p Subject, Rc<Vec<PolicyRule>>);

pub(crate) type Pairs = BTreeMap<(Key, Key), Pair>;

/// What a role's rules lost and gained, and its rules on each side (each without duplicates).
struct RoleDiff {
    lost: Rc<Vec<PolicyRule>>,
    gained: Rc<Vec<PolicyRule>>,
    was: Rc<Vec<PolicyRule>>,
    now: Rc<Vec<PolicyRule>>,
}

/// The changes from one set of pairs to another: removals first, then additions, each in (binding, role,
/// subject) order.
pub(crate) fn diff_pairs(before: &Pairs, after: &Pairs, limits: Limits) -> Diffed {
    let mut out = Diffed::default();
    // Each role's rules on each side (the same for every binding to it).
    let rules_of = |pairs: &'_ Pairs| -> HashMap<Key, Rc<Resolved>> {
        pairs
            .iter()
            .map(|((_, role), p)| (role.clone(), p.rules.clone()))
            .collect()
    };
    let (was_of, now_of) = (rules_of(before), rules_of(after));
    let mut roles: HashMap<Key, RoleDiff> = HashMap::new();
    let ids: BTreeSet<&(Key, Key)> = before.keys().chain(after.keys()).collect();
    // Each pair's subjects removed and added, with the rules each lost or gained.
    let mut removed: Vec<Change<'_>> = Vec::new();
    let mut added: Vec<Change<'_>> = Vec::new();
    for id in ids {
        let (b, a) = (before.get(id), after.get(id));
        if !roles.contains_key(&id.1) {
            let was = was_of.get(&id.1).map(|r| &r.rules[..]).unwrap_or(&[]);
            let now = now_of.get(&id.1).map(|r| &r.rules[..]).unwrap_or(&[]);
            let cost = 2 * (was.len() + now.len());
            if out.compared.saturating_add(cost) > limits.compared {
                out.cut = Some(format!(
                    "grant changes not all listed: finding them needs more than {} rule comparisons",
                    limits.compared
                ));
                break;
            }
            out.compared += cost;
            roles.insert(id.1.clone(), role_diff(was, now));
        }
        let d = &roles[&id.1];
        let (sb, sa) = (subjects(b), subjects(a));
        for s in b.map(|p| &p.subjects[..]).unwrap_or(&[]) {
            let lost = if sa.contains(s) { &d.lost } else { &d.was };
            if !lost.is_empty() {
                removed.push((id, s, lost.clone()));
            }
        }
        for s in a.map(|p| &p.subjects[..]).unwrap_or(&[]) {
            let gained = if sb.contains(s) { &d.gained } else { &d.now };
            if !gained.is_empty() {
                added.push((id, s, gained.clone()));
            }
        }
    }
    removed.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    added.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    let mut rules = 0usize;
    for (is_added, list) in [(false, removed), (true, added)] {
        for (id, subject, r) in list {
            if out.changes.len() >= limits.changes || rules.saturating_add(r.len()) > limits.rules {
                out.cut.get_or_insert_with(|| {
                    format!(
                        "grant changes not all listed: more than {} changes or {} rules (ask who-can or diff for them)",
                        limits.changes, limits.rules
                    )
                });
                return out;
            }
            rules += r.len();
            out.changes.push(GrantChange {
                added: is_added,
                subject: subject.clone(),
                binding: id.0.clone(),
                role: id.1.clone(),
                rules: r.to_vec(),
            });
        }
    }
    out
}

/// A pair's subjects (none for a pair on one side only).
fn subjects(p: Option<&Pair>) -> HashSet<&Subject> {
    p.map(|p| p.subjects.iter().collect()).unwrap_or_default()
}

/// The rules of `was` not in `now`, and of `now` not in `was`, in order, each once.
fn role_diff(was: &[PolicyRule], now: &[PolicyRule]) -> RoleDiff {
    let in_was: HashSet<&PolicyRule> = was.iter().collect();
    let in_now: HashSet<&PolicyRule> = now.iter().collect();
    let only = |a: &[PolicyRule], b: Option<&HashSet<&PolicyRule>>| -> Vec<PolicyRule> {
        let mut seen = HashSet::new();
        a.iter()
            .filter(|r| b.is_none_or(|b| !b.contains(r)) && seen.insert(*r))
            .cloned()
            .collect()
    };
    RoleDiff {
        lost: Rc::new(only(was, Some(&in_now))),
        gained: Rc::new(only(now, Some(&in_was))),
        was: Rc::new(only(was, None)),
        now: Rc::new(only(now, None)),
    }
}
