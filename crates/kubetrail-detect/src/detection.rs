//! A rule's `detection` block: named selections, their field checks with value modifiers, and the condition.
//!
//! Parsed from YAML into an AST whose field checks name canonical paths; [`Detection::bind`] turns the paths
//! into slots of the engine's trie, after which evaluation reads only the extracted values.

use std::cell::OnceCell;
use std::collections::BTreeSet;

use regex::RegexBuilder;
use saphyr::Scalar;

use crate::error::LoadError;
use crate::fields::{Fields, Slot, Trie, canonical};
use crate::value::{CmpOp, Net, Pattern, Prepared, StrPat, Tok, Val, lower, tokenize};
use crate::yaml::{Node, as_str, kind_name, mapping, pos, scalar, sequence};

/// Modifiers that exist in Sigma but make no sense for Kubernetes audit events.
const UNSUPPORTED_MODIFIERS: &[&str] = &[
    "base64",
    "base64offset",
    "wide",
    "utf16",
    "utf16le",
    "utf16be",
    "windash",
    "expand",
];

/// Regexes are compiled with this size limit, so a rule cannot make the engine use unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) struct Detection {
    pub(crate) selections: Vec<(String, Selection)>,
    pub(crate) condition: Cond,
}

#[derive(Debug, Clone)]
pub(crate) enum Selection {
    /// OR over maps, each an AND over its field checks.
    AnyOf(Vec<Vec<FieldCheck>>),
    /// Keywords: case-insensitive patterns matched anywhere in the event's JSON text.
    Keywords(Vec<StrPat>),
}

#[derive(Debug, Clone)]
pub(crate) struct FieldCheck {
    pub(crate) field: String,
    pub(crate) slot: Slot,
    pub(crate) op: Op,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Any value of the field matches any pattern.
    Any(Vec<Pattern>),
    /// Every pattern matches some value of the field (`|all`).
    All(Vec<Pattern>),
    Exists(bool),
    /// Some value of the field equals some value of the other field.
    FieldRef {
        other: String,
        slot: Slot,
        cased: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Sel(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// At least n of the selections.
    AtLeast(usize, Vec<usize>),
    /// All of the selections (false when there are none).
    All(Vec<usize>),
}

/// What evaluation reads: the event's extracted fields and its raw text (for keywords).
#[derive(Debug)]
pub(crate) struct EvalCx<'f, 'a> {
    pub(crate) fields: &'f Fields<'a>,
    pub(crate) raw: &'f str,
    pub(crate) raw_lower: OnceCell<String>,
}

impl<'f, 'a> EvalCx<'f, 'a> {
    pub(crate) fn new(fields: &'f Fields<'a>, raw: &'f str) -> EvalCx<'f, 'a> {
        EvalCx {
            fields,
            raw,
            raw_lower: OnceCell::new(),
        }
    }
}

impl Detection {
    /// Gives every field check the slot of its path (creating slots as needed).
    pub(crate) fn bind(
        &mut self,
        trie: &mut Trie,
        enrich: &mut dyn FnMut(&str, &mut Trie) -> Slot,
    ) {
        let mut slot_of = |field: &str, trie: &mut Trie| {
            if field.starts_with("kubetrail.") {
                enrich(field, trie)
            } else {
                trie.insert(field)
            }
        };
        for (_, sel) in &mut self.selections {
            if let Selection::AnyOf(maps) = sel {
                for check in maps.iter_mut().flatten() {
                    check.slot = slot_of(&check.field, trie);
                    if let Op::FieldRef { other, slot, .. } = &mut check.op {
                        *slot = slot_of(other, trie);
                    }
                }
            }
        }
    }

    /// The values (lowercased) that `slot` must hold for this detection to match, or `None` when it can
    /// match whatever the slot holds. Used to index rules so an event is tested only against rules that can
    /// match it.
    pub(crate) fn necessary(&self, slot: Slot) -> Option<BTreeSet<String>> {
        self.nec_cond(&self.condition, &|c: &FieldCheck| c.slot == slot)
    }

    /// [`necessary`](Self::necessary) by field name (`objectRef.resource`), before slots are bound.
    pub(crate) fn necessary_field(&self, field: &str) -> Option<BTreeSet<String>> {
        self.nec_cond(&self.condition, &|c: &FieldCheck| c.field == field)
    }

    /// Every field a check names.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.selections.iter().flat_map(|(_, sel)| match sel {
            Selection::AnyOf(maps) => maps
                .iter()
                .flatten()
                .map(|c| c.field.as_str())
                .collect::<Vec<_>>(),
            Selection::Keywords(_) => Vec::new(),
        })
    }

    fn nec_cond(&self, c: &Cond, is: &dyn Fn(&FieldCheck) -> bool) -> Option<BTreeSet<String>> {
        let union = |sets: &mut dyn Iterator<Item = Option<BTreeSet<String>>>| {
            let mut all = BTreeSet::new();
            for s in sets {
                all.extend(s?);
            }
            Some(all)
        };
        match c {
            Cond::Sel(i) => self.nec_sel(*i, is),
            Cond::Not(_) => None,
            Cond::And(cs) => cs
                .iter()
                .filter_map(|c| self.nec_cond(c, is))
                .min_by_key(BTreeSet::len),
            Cond::Or(cs) => union(&mut cs.iter().map(|c| self.nec_cond(c, is))),
            Cond::AtLeast(_, sels) => union(&mut sels.iter().map(|i| self.nec_sel(*i, is))),
            Cond::All(sels) => sels
                .iter()
                .filter_map(|i| self.nec_sel(*i, is))
                .min_by_key(BTreeSet::len),
        }
    }

    fn nec_sel(&self, i: usize, is: &dyn Fn(&FieldCheck) -> bool) -> Option<BTreeSet<String>> {
        let Some((_, Selection::AnyOf(maps))) = self.selections.get(i) else {
            return None;
        };
        let mut all = BTreeSet::new();
        for checks in maps {
            let values = checks.iter().find_map(|c| match &c.op {
                Op::Any(pats) if is(c) => pats
                    .iter()
                    .map(|p| match p {
                        Pattern::Str {
                            pat: StrPat::Exact(l),
                            cased: false,
                            num: None,
                        } => Some(l.to_string()),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>(),
                _ => None,
            })?;
            all.extend(values);
        }
        Some(all)
    }

    pub(crate) fn eval(&self, cx: &EvalCx<'_, '_>) -> bool {
        self.cond(&self.condition, cx)
    }

    fn cond(&self, c: &Cond, cx: &EvalCx<'_, '_>) -> bool {
        match c {
            Cond::Sel(i) => self.sel(*i, cx),
            Cond::Not(c) => !self.cond(c, cx),
            Cond::And(cs) => cs.iter().all(|c| self.cond(c, cx)),
            Cond::Or(cs) => cs.iter().any(|c| self.cond(c, cx)),
            Cond::AtLeast(n, sels) => {
                let mut hits = 0;
                for &i in sels {
                    if self.sel(i, cx) {
                        hits += 1;
                        if hits >= *n {
                            return true;
                        }
                    }
                }
                false
            }
            Cond::All(sels) => !sels.is_empty() && sels.iter().all(|&i| self.sel(i, cx)),
        }
    }

    fn sel(&self, i: usize, cx: &EvalCx<'_, '_>) -> bool {
        match self.selections.get(i).map(|(_, s)| s) {
            Some(Selection::AnyOf(maps)) => maps
                .iter()
                .any(|checks| checks.iter().all(|c| c.eval(cx.fields))),
            Some(Selection::Keywords(pats)) => {
                let text = cx.raw_lower.get_or_init(|| lower(cx.raw).into_owned());
                pats.iter().any(|p| p.matches(text))
            }
            None => false,
        }
    }
}

impl FieldCheck {
    pub(crate) fn eval(&self, f: &Fields<'_>) -> bool {
        match &self.op {
            Op::Any(pats) => {
                let mut any_value = false;
                for v in f.get(self.slot) {
                    any_value |= !matches!(v, Val::Null);
                    let v = Prepared::new(v);
                    if pats.iter().any(|p| p.matches_prepared(&v)) {
                        return true;
                    }
                }
                !any_value && pats.iter().any(|p| matches!(p, Pattern::Null))
            }
            Op::All(pats) => pats.iter().all(|p| {
                if matches!(p, Pattern::Null) {
                    f.get(self.slot).all(|v| matches!(v, Val::Null))
                } else {
                    f.get(self.slot).any(|v| p.matches(v))
                }
            }),
            Op::Exists(want) => f.get(self.slot).any(|v| !matches!(v, Val::Null)) == *want,
            Op::FieldRef { slot, cased, .. } => f.get(self.slot).any(|a| {
                let Some(a) = a.text() else { return false };
                f.get(*slot).any(|b| {
                    b.text().is_some_and(|b| {
                        if *cased {
                            a == b
                        } else {
                            lower(&a) == lower(&b)
                        }
                    })
                })
            }),
        }
    }
}

/// Parses a `detection` (or a filter's selections and condition) block. `file` names errors.
pub(crate) fn parse(
    file: &str,
    node: &Node<'_>,
    skip_keys: &[&str],
) -> Result<Detection, Vec<LoadError>> {
    let err = |n: &Node<'_>, msg: String| {
        let (line, column) = pos(n);
        LoadError::new(file, line, column, msg)
    };
    let Some(entries) = mapping(node) else {
        return Err(vec![err(
            node,
            format!(
                "`detection` must be a mapping of selections and a `condition`, found {}",
                kind_name(node)
            ),
        )]);
    };
    let mut errors = Vec::new();
    let mut selections = Vec::new();
    let mut condition = None;
    for (k, v) in entries {
        let Some(name) = as_str(k) else {
            errors.push(err(
                k,
                format!("a selection name must be a string, found {}", kind_name(k)),
            ));
            continue;
        };
        if skip_keys.contains(&name) {
            continue;
        }
        match name {
            "condition" => condition = Some(v),
            "timeframe" => errors.push(err(
                k,
                "`timeframe` is not supported: write a correlation rule (`correlation:` with `timespan:`)".into(),
            )),
            _ => match selection(file, v) {
                Ok(s) => selections.push((name.to_string(), s)),
                Err(mut e) => {
                    errors.append(&mut e);
                    // Keep the name so the condition does not also report it as unknown.
                    selections.push((name.to_string(), Selection::Keywords(Vec::new())));
                }
            },
        }
    }
    let Some(cnode) = condition else {
        errors.push(err(node, "`detection` has no `condition`".into()));
        return Err(errors);
    };
    let names: Vec<&str> = selections.iter().map(|(n, _)| n.as_str()).collect();
    let condition = match (as_str(cnode), sequence(cnode)) {
        (Some(text), _) => parse_condition(text, &names)
            .map_err(|(off, msg)| cond_err(file, cnode, text, off, msg)),
        (None, Some(list)) if !list.is_empty() => {
            // Legacy: a list of conditions is their OR.
            let mut alts = Vec::new();
            for item in list {
                match as_str(item) {
                    Some(text) => match parse_condition(text, &names) {
                        Ok(c) => alts.push(c),
                        Err((off, msg)) => errors.push(cond_err(file, item, text, off, msg)),
                    },
                    None => errors.push(err(
                        item,
                        format!("a condition must be a string, found {}", kind_name(item)),
                    )),
                }
            }
            Ok(Cond::Or(alts))
        }
        _ => Err(err(
            cnode,
            format!("`condition` must be a string, found {}", kind_name(cnode)),
        )),
    };
    match condition {
        Ok(condition) if errors.is_empty() => Ok(Detection {
            selections,
            condition,
        }),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

fn cond_err(file: &str, node: &Node<'_>, text: &str, off: usize, msg: String) -> LoadError {
    let (line, mut column) = pos(node);
    // Point into the condition when it is written on one line (plain or quoted).
    if !text.contains('\n') {
        let quoted = node.span.start.index() < node.span.end.index()
            && node.span.end.index() - node.span.start.index() > text.len();
        column += text[..off.min(text.len())].chars().count() + usize::from(quoted);
    }
    LoadError::new(file, line, column, format!("in `condition`: {msg}"))
}

fn selection(file: &str, node: &Node<'_>) -> Result<Selection, Vec<LoadError>> {
    let err = |n: &Node<'_>, msg: String| {
        let (line, column) = pos(n);
        vec![LoadError::new(file, line, column, msg)]
    };
    if mapping(node).is_some() {
        return Ok(Selection::AnyOf(vec![field_map(file, node)?]));
    }
    let Some(items) = sequence(node) else {
        return Err(err(
            node,
            format!(
                "a selection must be a mapping of fields, a list of mappings or a list of keywords, found {}",
                kind_name(node)
            ),
        ));
    };
    if items.is_empty() {
        return Err(err(node, "a selection must not be empty".into()));
    }
    if items.iter().all(|i| mapping(i).is_some()) {
        let mut maps = Vec::new();
        let mut errors = Vec::new();
        for i in items {
            match field_map(file, i) {
                Ok(m) => maps.push(m),
                Err(mut e) => errors.append(&mut e),
            }
        }
        return if errors.is_empty() {
            Ok(Selection::AnyOf(maps))
        } else {
            Err(errors)
        };
    }
    let mut pats = Vec::new();
    for i in items {
        match scalar(i) {
            Some(Scalar::String(s)) => {
                pats.push(StrPat::new(wrap(lower_toks(tokenize(s)), true, true)))
            }
            Some(Scalar::Integer(n)) => {
                pats.push(StrPat::new(wrap(vec![Tok::Lit(n.to_string())], true, true)))
            }
            _ => {
                return Err(err(
                    i,
                    format!(
                        "a keyword list holds strings (or a selection is a list of mappings), found {}",
                        kind_name(i)
                    ),
                ));
            }
        }
    }
    Ok(Selection::Keywords(pats))
}

fn field_map(file: &str, node: &Node<'_>) -> Result<Vec<FieldCheck>, Vec<LoadError>> {
    let mut checks = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in mapping(node).into_iter().flatten() {
        let Some(key) = as_str(k) else {
            let (line, column) = pos(k);
            errors.push(LoadError::new(
                file,
                line,
                column,
                format!("a field name must be a string, found {}", kind_name(k)),
            ));
            continue;
        };
        match field_check(key, v) {
            Ok(c) => checks.push(c),
            Err((at_value, msg)) => {
                let (line, column) = pos(if at_value { v } else { k });
                errors.push(LoadError::new(file, line, column, msg));
            }
        }
    }
    if checks.is_empty() && errors.is_empty() {
        let (line, column) = pos(node);
        errors.push(LoadError::new(
            file,
            line,
            column,
            "a selection mapping must not be empty".into(),
        ));
    }
    if errors.is_empty() {
        Ok(checks)
    } else {
        Err(errors)
    }
}

#[derive(Default)]
struct Mods {
    wrap_start: bool,
    wrap_end: bool,
    all: bool,
    cased: bool,
    re: bool,
    re_flags: (bool, bool, bool),
    cidr: bool,
    exists: bool,
    cmp: Option<CmpOp>,
    fieldref: bool,
}

/// One `field|modifiers: value(s)` entry. The error flag says whether it is about the value (else the key).
fn field_check(key: &str, value: &Node<'_>) -> Result<FieldCheck, (bool, String)> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default();
    let field = canonical(field).map_err(|e| (false, e))?.to_string();
    let mut m = Mods::default();
    let mut kinds = 0;
    for md in parts {
        match md {
            "contains" | "startswith" | "endswith" => {
                if m.wrap_start || m.wrap_end {
                    return Err((
                        false,
                        format!(
                            "`{key}`: only one of `contains`, `startswith`, `endswith` may be used"
                        ),
                    ));
                }
                m.wrap_start = md != "startswith";
                m.wrap_end = md != "endswith";
            }
            "all" => m.all = true,
            "cased" => m.cased = true,
            "re" => {
                m.re = true;
                kinds += 1;
            }
            "i" | "m" | "s" if m.re => match md {
                "i" => m.re_flags.0 = true,
                "m" => m.re_flags.1 = true,
                _ => m.re_flags.2 = true,
            },
            "cidr" => {
                m.cidr = true;
                kinds += 1;
            }
            "exists" => {
                m.exists = true;
                kinds += 1;
            }
            "gt" | "gte" | "lt" | "lte" => {
                m.cmp = Some(match md {
                    "gt" => CmpOp::Gt,
                    "gte" => CmpOp::Gte,
                    "lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                });
                kinds += 1;
            }
            "fieldref" => {
                m.fieldref = true;
                kinds += 1;
            }
            md if UNSUPPORTED_MODIFIERS.contains(&md) => {
                return Err((
                    false,
                    format!(
                        "modifier `{md}` in `{key}` is not supported for Kubernetes audit events (it encodes Windows command lines and binary data); remove it"
                    ),
                ));
            }
            "" => return Err((false, format!("empty modifier in `{key}`"))),
            md => {
                return Err((
                    false,
                    format!(
                        "unknown modifier `{md}` in `{key}`; supported: contains, startswith, endswith, all, cased, re (with i, m, s), cidr, exists, gt, gte, lt, lte, fieldref"
                    ),
                ));
            }
        }
    }
    let wraps = m.wrap_start || m.wrap_end;
    if kinds > 1 || (kinds == 1 && wraps) {
        return Err((
            false,
            format!("`{key}`: these modifiers cannot be combined"),
        ));
    }
    if m.cased && (m.re || m.cidr || m.exists || m.cmp.is_some()) {
        return Err((
            false,
            format!("`{key}`: `cased` applies to string matching only"),
        ));
    }
    let values: Vec<&Node<'_>> = match sequence(value) {
        Some([]) => {
            return Err((true, format!("`{key}` has an empty list of values")));
        }
        Some(list) => list.iter().collect(),
        None => vec![value],
    };
    if m.exists {
        return match (values.as_slice(), scalar(value)) {
            ([_], Some(Scalar::Boolean(b))) => Ok(FieldCheck {
                field,
                slot: 0,
                op: Op::Exists(*b),
            }),
            _ => Err((true, format!("`{key}` needs `true` or `false`"))),
        };
    }
    if m.fieldref {
        let [one] = values.as_slice() else {
            return Err((true, format!("`{key}` names one other field")));
        };
        let Some(other) = as_str(one) else {
            return Err((
                true,
                format!("`{key}` needs a field name, found {}", kind_name(one)),
            ));
        };
        let other = canonical(other).map_err(|e| (true, e))?.to_string();
        return Ok(FieldCheck {
            field,
            slot: 0,
            op: Op::FieldRef {
                other,
                slot: 0,
                cased: m.cased,
            },
        });
    }
    let mut pats = Vec::with_capacity(values.len());
    for v in values {
        pats.push(pattern(key, &m, v).map_err(|e| (true, e))?);
    }
    let op = if m.all { Op::All(pats) } else { Op::Any(pats) };
    Ok(FieldCheck { field, slot: 0, op })
}

fn lower_toks(toks: Vec<Tok>) -> Vec<Tok> {
    toks.into_iter()
        .map(|t| match t {
            Tok::Lit(l) => Tok::Lit(l.to_lowercase()),
            t => t,
        })
        .collect()
}

fn wrap(mut toks: Vec<Tok>, start: bool, end: bool) -> Vec<Tok> {
    if start && toks.first() != Some(&Tok::Star) {
        toks.insert(0, Tok::Star);
    }
    if end && toks.last() != Some(&Tok::Star) {
        toks.push(Tok::Star);
    }
    toks
}

fn pattern(key: &str, m: &Mods, v: &Node<'_>) -> Result<Pattern, String> {
    let Some(s) = scalar(v) else {
        return Err(format!(
            "`{key}`: a value must be a string, number, boolean or null, found {}",
            kind_name(v)
        ));
    };
    let text = match s {
        Scalar::Null => {
            return if m.re || m.cidr || m.cmp.is_some() {
                Err(format!("`{key}`: null needs no modifier"))
            } else {
                Ok(Pattern::Null)
            };
        }
        Scalar::String(s) => s.to_string(),
        Scalar::Integer(i) => i.to_string(),
        Scalar::FloatingPoint(f) => f.to_string(),
        Scalar::Boolean(b) => b.to_string(),
    };
    if let Some(op) = m.cmp {
        let n = match s {
            Scalar::Integer(i) => *i as f64,
            Scalar::FloatingPoint(f) => f.into_inner(),
            Scalar::String(t) => t
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("`{key}` needs a number, found `{t}`"))?,
            _ => return Err(format!("`{key}` needs a number")),
        };
        if !n.is_finite() {
            return Err(format!("`{key}` needs a finite number"));
        }
        return Ok(Pattern::Cmp(op, n));
    }
    if m.cidr {
        return Net::parse(&text).map(Pattern::Cidr).ok_or_else(|| {
            format!("`{key}`: `{text}` is not a CIDR network (e.g. `10.0.0.0/8`, `fd00::/8`)")
        });
    }
    if m.re {
        let (i, ml, sl) = m.re_flags;
        return RegexBuilder::new(&text)
            .case_insensitive(i)
            .multi_line(ml)
            .dot_matches_new_line(sl)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Pattern::Re)
            .map_err(|e| {
                format!(
                    "`{key}`: invalid regular expression: {}",
                    e.to_string().replace('\n', " ")
                )
            });
    }
    let mut toks = tokenize(&text);
    if !m.cased {
        toks = lower_toks(toks);
    }
    let toks = wrap(toks, m.wrap_start, m.wrap_end);
    let num = match s {
        Scalar::Integer(i) => Some(*i as f64),
        Scalar::FloatingPoint(f) => Some(f.into_inner()),
        Scalar::String(t) if !m.wrap_start && !m.wrap_end && !t.contains(['*', '?']) => t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && !t.trim().is_empty()),
        _ => None,
    };
    Ok(Pattern::Str {
        pat: StrPat::new(toks),
        cased: m.cased,
        num,
    })
}

/// Condition tokens.
#[derive(Debug, Clone, PartialEq)]
enum T<'s> {
    Ident(&'s str),
    And,
    Or,
    Not,
    Of,
    Them,
    All,
    Num(usize),
    Open,
    Close,
    Pipe,
}

fn lex(s: &str) -> Result<Vec<(usize, T<'_>)>, (usize, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let t = match c {
            b'(' => T::Open,
            b')' => T::Close,
            b'|' => T::Pipe,
            _ => {
                let start = i;
                while i < b.len()
                    && !b[i].is_ascii_whitespace()
                    && !matches!(b[i], b'(' | b')' | b'|')
                {
                    i += 1;
                }
                let w = &s[start..i];
                let t = match w.to_ascii_lowercase().as_str() {
                    "and" => T::And,
                    "or" => T::Or,
                    "not" => T::Not,
                    "of" => T::Of,
                    "them" => T::Them,
                    "all" => T::All,
                    "any" => T::Num(1),
                    _ => match w.parse::<usize>() {
                        Ok(n) => T::Num(n),
                        Err(_) => T::Ident(w),
                    },
                };
                out.push((start, t));
                continue;
            }
        };
        out.push((i, t));
        i += 1;
    }
    Ok(out)
}

/// Parses a condition over the named selections. Errors carry a byte offset into the condition.
pub(crate) fn parse_condition(s: &str, names: &[&str]) -> Result<Cond, (usize, String)> {
    let toks = lex(s)?;
    let mut p = CondParser {
        toks,
        at: 0,
        names,
        len: s.len(),
        depth: 0,
    };
    let c = p.or()?;
    if let Some((off, t)) = p.toks.get(p.at) {
        return Err((
            *off,
            match t {
                T::Pipe => {
                    "aggregations after `|` are not supported: write a correlation rule".to_string()
                }
                T::Close => "unbalanced `)`".to_string(),
                _ => "expected `and`, `or` or the end of the condition".to_string(),
            },
        ));
    }
    Ok(c)
}

struct CondParser<'s, 'n> {
    toks: Vec<(usize, T<'s>)>,
    at: usize,
    names: &'n [&'n str],
    len: usize,
    depth: usize,
}

impl<'s> CondParser<'s, '_> {
    fn peek(&self) -> Option<&T<'s>> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn off(&self) -> usize {
        self.toks.get(self.at).map_or(self.len, |(o, _)| *o)
    }

    fn or(&mut self) -> Result<Cond, (usize, String)> {
        let mut alts = vec![self.and()?];
        while self.peek() == Some(&T::Or) {
            self.at += 1;
            alts.push(self.and()?);
        }
        Ok(if alts.len() == 1 {
            alts.remove(0)
        } else {
            Cond::Or(alts)
        })
    }

    fn and(&mut self) -> Result<Cond, (usize, String)> {
        let mut all = vec![self.not()?];
        while self.peek() == Some(&T::And) {
            self.at += 1;
            all.push(self.not()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Cond::And(all)
        })
    }

    fn not(&mut self) -> Result<Cond, (usize, String)> {
        if self.peek() == Some(&T::Not) {
            self.at += 1;
            self.depth += 1;
            if self.depth > 64 {
                return Err((self.off(), "condition nested too deeply".into()));
            }
            let c = self.not()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(c)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, (usize, String)> {
        let off = self.off();
        let Some(t) = self.peek().cloned() else {
            return Err((
                off,
                "unexpected end of condition: expected a selection name, `not`, `(` or `1 of`"
                    .into(),
            ));
        };
        self.at += 1;
        match t {
            T::Open => {
                self.depth += 1;
                if self.depth > 64 {
                    return Err((off, "condition nested too deeply".into()));
                }
                let c = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&T::Close) {
                    return Err((
                        self.off(),
                        format!("expected `)` to close the `(` at column {}", off + 1),
                    ));
                }
                self.at += 1;
                Ok(c)
            }
            T::Ident(name) => match self.names.iter().position(|n| *n == name) {
                Some(i) => Ok(Cond::Sel(i)),
                None => Err((
                    off,
                    format!(
                        "unknown selection `{name}`; the detection defines {}",
                        self.names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            },
            T::Num(_) | T::All => {
                if self.peek() != Some(&T::Of) {
                    return Err((
                        self.off(),
                        "expected `of` (as in `1 of selection_*` or `all of them`)".into(),
                    ));
                }
                self.at += 1;
                let target_off = self.off();
                let sels: Vec<usize> = match self.peek().cloned() {
                    Some(T::Them) => self
                        .names
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| !n.starts_with('_'))
                        .map(|(i, _)| i)
                        .collect(),
                    Some(T::Ident(pat)) => {
                        let p = StrPat::new(tokenize(pat));
                        let m: Vec<usize> = self
                            .names
                            .iter()
                            .enumerate()
                            .filter(|(_, n)| p.matches(n))
                            .map(|(i, _)| i)
                            .collect();
                        if m.is_empty() {
                            return Err((target_off, format!("`{pat}` matches no selection")));
                        }
                        m
                    }
                    _ => {
                        return Err((
                            target_off,
                            "expected a selection pattern or `them` after `of`".into(),
                        ));
                    }
                };
                self.at += 1;
                match t {
                    T::Num(0) => Err((off, "`0 of` is always true; remove it".into())),
                    T::Num(n) => Ok(Cond::AtLeast(n, sels)),
                    _ => Ok(Cond::All(sels)),
                }
            }
            T::Pipe => Err((
                off,
                "aggregations after `|` are not supported: write a correlation rule".into(),
            )),
            _ => Err((
                off,
                "expected a selection name, `not`, `(` or `1 of`".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<String, (usize, String)> {
        let names = ["sel", "sel_a", "sel_b", "filter", "_hidden"];
        parse_condition(s, &names).map(|c| format!("{c:?}"))
    }

    #[test]
    fn conditions() {
        assert_eq!(parse("sel").unwrap(), "Sel(0)");
        assert_eq!(
            parse("sel and not filter").unwrap(),
            "And([Sel(0), Not(Sel(3))])"
        );
        assert_eq!(
            parse("sel or sel_a and sel_b").unwrap(),
            "Or([Sel(0), And([Sel(1), Sel(2)])])"
        );
        assert_eq!(
            parse("(sel or sel_a) and sel_b").unwrap(),
            "And([Or([Sel(0), Sel(1)]), Sel(2)])"
        );
        assert_eq!(parse("1 of sel_*").unwrap(), "AtLeast(1, [1, 2])");
        assert_eq!(parse("all of sel*").unwrap(), "All([0, 1, 2])");
        assert_eq!(parse("all of them").unwrap(), "All([0, 1, 2, 3])");
        assert_eq!(
            parse("1 of them and not filter").unwrap(),
            "And([AtLeast(1, [0, 1, 2, 3]), Not(Sel(3))])"
        );
        assert_eq!(
            parse("SEL AND NOT FILTER").unwrap_err().1,
            "unknown selection `SEL`; the detection defines `sel`, `sel_a`, `sel_b`, `filter`, `_hidden`"
        );
    }

    #[test]
    fn condition_errors_have_offsets() {
        assert_eq!(parse("sel and nope").unwrap_err().0, 8);
        assert_eq!(
            parse("(sel or sel_a").unwrap_err(),
            (13, "expected `)` to close the `(` at column 1".into())
        );
        assert_eq!(parse("sel sel_a").unwrap_err().0, 4);
        assert_eq!(parse("sel and").unwrap_err().0, 7);
        assert_eq!(
            parse("1 of x_*").unwrap_err(),
            (5, "`x_*` matches no selection".into())
        );
        assert!(
            parse("sel | count() > 5")
                .unwrap_err()
                .1
                .contains("correlation")
        );
        assert!(parse("sel )").unwrap_err().1.contains("unbalanced"));
        assert!(parse(&"(".repeat(100)).is_err());
        assert!(parse(&"not ".repeat(100)).is_err());
    }
}
