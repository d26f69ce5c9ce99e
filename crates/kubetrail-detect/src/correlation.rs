//! Streaming Sigma correlation (event_count, value_count, temporal, temporal_ordered) on event time.
//!
//! Semantics, per group key (the values of `group-by`, joined):
//! - `gt`/`gte` conditions use a sliding window: the correlation fires as soon as the count of matches (or of
//!   distinct values) within the last `timespan` reaches the threshold, then stays quiet for one `timespan`
//!   so a long burst is one firing (the alert's grouping of repeats merges later ones);
//! - `lt`/`lte`/`eq` use a window that starts at the group's first match and is decided when it closes
//!   (a group that never matched cannot fire: a count of zero is never seen);
//! - `temporal` fires when every listed rule matched within `timespan`, `temporal_ordered` when they matched
//!   in the listed order within `timespan` of the first.
//!
//! State is bounded: windows are swept when they expire, each key holds at most threshold + 1 entries, and
//! the number of keys is capped (the least recently seen are evicted, counted in `evictions`).

use std::collections::{HashMap, VecDeque};

use crate::alert::MAX_AUDIT_IDS;
use crate::engine::evict_oldest;
use crate::fields::{Fields, Slot, Trie};
use crate::rule::{Compare, Correlation, CorrelationKind, RuleMeta};
use crate::value::Val;

/// Distinct values remembered per key for windows decided at their end.
const MAX_VALUES: usize = 10_000;

/// A correlation that fired.
#[derive(Debug, Clone)]
pub(crate) struct Fired {
    pub(crate) correlation: usize,
    pub(crate) username: String,
    pub(crate) audit_ids: Vec<String>,
    pub(crate) source_ips: Vec<String>,
    pub(crate) summary: String,
    pub(crate) count: u64,
    pub(crate) first: i64,
    pub(crate) last: i64,
}

/// The requests of a window: (event time, auditID).
type Requests = VecDeque<(i64, Box<str>)>;

#[derive(Debug, Clone)]
enum State {
    /// Sliding (rising) or tumbling (falling) event counts: (time, auditID).
    Count(VecDeque<(i64, Box<str>)>, u64),
    /// Distinct values with their last time, and the requests seen (boxed: keys are mostly counts, and every
    /// key pays for the largest variant).
    Values(Box<(HashMap<Box<str>, i64>, Requests)>),
    /// Per listed rule: unordered, when it last matched; ordered, the latest start of a chain through it.
    Temporal(Vec<Option<(i64, Box<str>)>>),
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    first: i64,
    last: i64,
    quiet_until: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct CorrelationState {
    index: usize,
    actor_index: Option<usize>,
    pub(crate) meta: RuleMeta,
    kind: CorrelationKind,
    span: i64,
    condition: Option<(Compare, u64)>,
    /// Per position in `rules`: the slots of the group-by fields.
    group_slots: Vec<Vec<Slot>>,
    group_names: Vec<String>,
    value_slot: Option<Slot>,
    value_field: String,
    rule_names: Vec<String>,
    keys: HashMap<Box<str>, Entry>,
    max_keys: usize,
    next_sweep: i64,
    pub(crate) evictions: u64,
}

impl CorrelationState {
    /// `members`: per position, (reference as written, rule id, rule name).
    pub(crate) fn new(
        index: usize,
        c: &Correlation,
        members: &[(String, String, Option<String>)],
        trie: &mut Trie,
        enrich: &mut dyn FnMut(&str, &mut Trie) -> Slot,
        max_keys: usize,
    ) -> CorrelationState {
        let mut slot = |f: &str, trie: &mut Trie| {
            if f.starts_with("kubetrail.") {
                enrich(f, trie)
            } else {
                trie.insert(f)
            }
        };
        let group_slots = members
            .iter()
            .map(|(written, id, name)| {
                c.group_by
                    .iter()
                    .map(|g| {
                        let field = c
                            .aliases
                            .get(g)
                            .and_then(|m| {
                                m.get(written)
                                    .or_else(|| m.get(id))
                                    .or_else(|| name.as_ref().and_then(|n| m.get(n)))
                            })
                            .map_or(g.as_str(), String::as_str);
                        (field == "user.username", slot(field, trie))
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        // The group value that names the actor: a group-by field that is `user.username` for every rule.
        let actor_index = (0..c.group_by.len())
            .find(|&g| !group_slots.is_empty() && group_slots.iter().all(|per_rule| per_rule[g].0));
        let group_slots = group_slots
            .into_iter()
            .map(|per_rule| per_rule.into_iter().map(|(_, s)| s).collect())
            .collect();
        let value_slot = c.field.as_deref().map(|f| slot(f, trie));
        CorrelationState {
            index,
            actor_index,
            meta: c.meta.clone(),
            kind: c.kind,
            span: c.timespan.saturating_mul(1000),
            condition: c.condition,
            group_slots,
            group_names: c.group_by.clone(),
            value_slot,
            value_field: c.field.clone().unwrap_or_default(),
            rule_names: members.iter().map(|(w, _, _)| w.clone()).collect(),
            keys: HashMap::new(),
            max_keys: max_keys.max(1),
            next_sweep: i64::MIN,
            evictions: 0,
        }
    }

    fn rising(&self) -> bool {
        self.condition.is_none_or(|(c, _)| c.is_rising())
    }

    /// One match of the rule at `pos` of `rules`, at event time `now`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe(
        &mut self,
        pos: usize,
        f: &Fields<'_>,
        now: i64,
        audit_id: Option<&str>,
        username: &str,
        source_ips: &[String],
        fired: &mut Vec<Fired>,
    ) {
        let Some(slots) = self.group_slots.get(pos) else {
            return;
        };
        let mut key = String::new();
        for (i, s) in slots.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            if let Some(t) = f.get(*s).find_map(Val::text) {
                key.push_str(&t);
            }
        }
        let value: Option<Box<str>> = match self.value_slot {
            Some(s) => match f.get(s).find_map(Val::text) {
                Some(v) => Some(v.into()),
                None => return,
            },
            None => None,
        };
        let id: Box<str> = audit_id.unwrap_or("").into();
        if !self.keys.contains_key(key.as_str()) && self.keys.len() >= self.max_keys {
            self.sweep(now, fired);
            if self.keys.len() >= self.max_keys {
                self.evictions += evict_oldest(&mut self.keys, |e| e.last) as u64;
            }
        }
        let rules = self.rule_names.len();
        let kind = self.kind;
        let e = self
            .keys
            .entry(key.as_str().into())
            .or_insert_with(|| Entry {
                state: match kind {
                    // Most keys see one event (a million scanned identities): room for one.
                    CorrelationKind::EventCount => State::Count(VecDeque::with_capacity(1), 0),
                    CorrelationKind::ValueCount => State::Values(Box::default()),
                    _ => State::Temporal(vec![None; rules]),
                },
                first: now,
                last: now,
                quiet_until: i64::MIN,
            });
        e.last = e.last.max(now);
        if now < e.quiet_until {
            return;
        }
        let span = self.span;
        let rising = self.condition.is_none_or(|(c, _)| c.is_rising());
        let (cmp, threshold) = self.condition.unwrap_or((Compare::Gte, rules as u64));
        let keep = (threshold as usize).saturating_add(1).min(MAX_AUDIT_IDS);
        let mut fire: Option<(u64, Vec<String>, i64)> = None;
        match &mut e.state {
            State::Count(events, n) => {
                if rising {
                    while events.front().is_some_and(|(t, _)| *t <= now - span) {
                        events.pop_front();
                    }
                    events.push_back((now, id));
                    while events.len() > keep {
                        events.pop_front();
                    }
                    if cmp.holds(events.len() as u64, threshold) {
                        let first = events.front().map_or(now, |(t, _)| *t);
                        fire = Some((
                            events.len() as u64,
                            events.drain(..).map(|(_, a)| a.into()).collect(),
                            first,
                        ));
                    }
                } else {
                    *n += 1;
                    if events.len() < MAX_AUDIT_IDS {
                        events.push_back((now, id));
                    }
                }
            }
            State::Values(b) => {
                let (values, events) = &mut **b;
                let value = value.unwrap_or_default();
                if rising {
                    values.retain(|_, t| *t > now - span);
                    while events.front().is_some_and(|(t, _)| *t <= now - span) {
                        events.pop_front();
                    }
                    values.insert(value, now);
                    events.push_back((now, id));
                    while events.len() > keep {
                        events.pop_front();
                    }
                    if values.len() > keep {
                        // Keep the newest values only; the count cannot need more than threshold + 1.
                        if let Some(oldest) = values
                            .iter()
                            .min_by_key(|(_, t)| **t)
                            .map(|(k, _)| k.clone())
                        {
                            values.remove(&oldest);
                        }
                    }
                    if cmp.holds(values.len() as u64, threshold) {
                        let first = events.front().map_or(now, |(t, _)| *t);
                        let n = values.len() as u64;
                        values.clear();
                        fire = Some((n, events.drain(..).map(|(_, a)| a.into()).collect(), first));
                    }
                } else {
                    if values.len() < MAX_VALUES {
                        values.insert(value, now);
                    }
                    if events.len() < MAX_AUDIT_IDS {
                        events.push_back((now, id));
                    }
                }
            }
            State::Temporal(seen) => {
                let ordered = kind == CorrelationKind::TemporalOrdered;
                // Forget what is out of the window.
                for s in seen.iter_mut() {
                    if s.as_ref().is_some_and(|(t, _)| *t <= now - span) {
                        *s = None;
                    }
                }
                if ordered {
                    if pos == 0 {
                        seen[0] = Some((now, id));
                    } else if seen[pos - 1].is_some() {
                        // The chain keeps its start time: its window is measured from the first rule.
                        let start = seen[pos - 1].as_ref().map_or(now, |(t, _)| *t);
                        seen[pos] = Some((start, id));
                    }
                    if seen.last().is_some_and(Option::is_some) {
                        let first = seen[0].as_ref().map_or(now, |(t, _)| *t);
                        let ids = seen
                            .iter_mut()
                            .filter_map(|s| s.take())
                            .map(|(_, a)| a.into())
                            .collect();
                        fire = Some((rules as u64, ids, first));
                    }
                } else {
                    seen[pos] = Some((now, id));
                    let n = seen.iter().filter(|s| s.is_some()).count() as u64;
                    if cmp.holds(n, threshold) {
                        let first = seen.iter().flatten().map(|(t, _)| *t).min().unwrap_or(now);
                        let ids = seen
                            .iter_mut()
                            .filter_map(|s| s.take())
                            .map(|(_, a)| a.into())
                            .collect();
                        fire = Some((n, ids, first));
                    }
                }
            }
        }
        if let Some((count, ids, first)) = fire {
            e.quiet_until = now.saturating_add(span);
            let username = username.to_string();
            let summary = self.summary(&key, count);
            fired.push(Fired {
                correlation: self.index,
                username,
                audit_ids: ids.into_iter().filter(|a: &String| !a.is_empty()).collect(),
                source_ips: source_ips.to_vec(),
                summary,
                count: 1,
                first,
                last: now,
            });
        }
    }

    /// The actor of a window decided at its end: the `user.username` group value, if grouped by it
    /// (directly or through an alias).
    fn actor(&self, key: &str) -> String {
        self.actor_index
            .and_then(|i| key.split('\u{1f}').nth(i))
            .unwrap_or("")
            .to_string()
    }

    fn summary(&self, key: &str, count: u64) -> String {
        let group: Vec<String> = self
            .group_names
            .iter()
            .zip(key.split('\u{1f}'))
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let what = match self.kind {
            CorrelationKind::EventCount => {
                format!("{count} requests matching {}", self.rule_names.join(", "))
            }
            CorrelationKind::ValueCount => format!(
                "{count} distinct `{}` in requests matching {}",
                self.value_field,
                self.rule_names.join(", ")
            ),
            CorrelationKind::Temporal => format!("{} all matched", self.rule_names.join(", ")),
            CorrelationKind::TemporalOrdered => {
                format!("{} matched in order", self.rule_names.join(" then "))
            }
        };
        format!(
            "{what} within {}s for {}",
            self.span / 1000,
            if group.is_empty() {
                "all events".to_string()
            } else {
                group.join(", ")
            }
        )
    }

    /// Sweeps expired windows when due (at most every quarter timespan of event time, clamped to 1-60 s).
    pub(crate) fn expire(&mut self, now: i64, fired: &mut Vec<Fired>) {
        if now >= self.next_sweep {
            self.sweep(now, fired);
            self.next_sweep = now.saturating_add((self.span / 4).clamp(1000, 60_000));
        }
    }

    fn sweep(&mut self, now: i64, fired: &mut Vec<Fired>) {
        let span = self.span;
        if self.rising() {
            self.keys
                .retain(|_, e| e.last > now - span || e.quiet_until > now);
            return;
        }
        let done: Vec<Box<str>> = self
            .keys
            .iter()
            .filter(|(_, e)| e.first.saturating_add(span) <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut done = done;
        done.sort();
        for k in done {
            if let Some(e) = self.keys.remove(&k) {
                self.decide(&k, e, fired);
            }
        }
    }

    /// Decides a window that closed (falling conditions).
    fn decide(&self, key: &str, e: Entry, fired: &mut Vec<Fired>) {
        let Some((cmp, threshold)) = self.condition else {
            return;
        };
        let (n, ids) = match e.state {
            State::Count(events, n) => (n, events),
            State::Values(b) => (b.0.len() as u64, b.1),
            State::Temporal(_) => return,
        };
        if cmp.holds(n, threshold) {
            fired.push(Fired {
                correlation: self.index,
                username: self.actor(key),
                audit_ids: ids
                    .into_iter()
                    .map(|(_, a)| a.into())
                    .filter(|a: &String| !a.is_empty())
                    .collect(),
                source_ips: Vec::new(),
                summary: self.summary(key, n),
                count: 1,
                first: e.first,
                last: e.last,
            });
        }
    }

    /// End of stream: decide every open window.
    pub(crate) fn flush(&mut self, fired: &mut Vec<Fired>) {
        if self.rising() {
            self.keys.clear();
            return;
        }
        let mut all: Vec<(Box<str>, Entry)> = self.keys.drain().collect();
        all.sort_by(|a, b| (a.1.first, &a.0).cmp(&(b.1.first, &b.0)));
        for (k, e) in all {
            self.decide(&k, e, fired);
        }
    }

    pub(crate) fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Approximate heap bytes of the state.
    pub(crate) fn approx_bytes(&self) -> usize {
        let table = self.keys.capacity() * (size_of::<(Box<str>, Entry)>() + 1);
        let heap: usize = self
            .keys
            .iter()
            .map(|(k, e)| {
                k.len()
                    + match &e.state {
                        State::Count(ev, _) => {
                            ev.capacity() * size_of::<(i64, Box<str>)>()
                                + ev.iter().map(|(_, a)| a.len()).sum::<usize>()
                        }
                        State::Values(b) => {
                            let (v, ev) = &**b;
                            v.capacity() * (size_of::<(Box<str>, i64)>() + 1)
                                + v.keys().map(|k| k.len()).sum::<usize>()
                                + ev.capacity() * size_of::<(i64, Box<str>)>()
                                + ev.iter().map(|(_, a)| a.len()).sum::<usize>()
                        }
                        State::Temporal(s) => {
                            s.capacity() * size_of::<Option<(i64, Box<str>)>>()
                                + s.iter().flatten().map(|(_, a)| a.len()).sum::<usize>()
                        }
                    }
            })
            .sum();
        table + heap
    }
}
