//! Sigma documents: detection rules, correlation rules and filters, loaded from YAML with positions.
//!
//! A file may hold several documents (`---`). A document with `detection` is a rule, with `correlation` a
//! correlation rule, with `filter` a filter (Sigma's meta-rule formats). Known Sigma metadata is typed; any
//! other top-level key (`runbook`, `kubetrail`, ...) is kept as JSON in [`RuleMeta::extra`]. Every problem in
//! the detection logic fails the load with the file, line, column and reason.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use saphyr::{LoadableYamlNode, Scalar};
use serde::{Deserialize, Serialize};

use crate::detection::{self, Detection};
use crate::error::{LoadError, LoadErrors};
use crate::fields::canonical;
use crate::yaml::{Node, as_str, kind_name, mapping, pos, scalar, sequence, text, to_json};

/// Sigma's severity levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Informational,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown level `{s}`; use one of informational, low, medium, high, critical"
                )
            })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a document or a value is: file and 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub(crate) fn error(&self, reason: String) -> LoadError {
        LoadError::new(&self.file, self.line, self.column, reason)
    }
}

/// A rule's `logsource`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Logsource {
    pub product: Option<String>,
    pub service: Option<String>,
    pub category: Option<String>,
}

/// The documentation of a rule, correlation or filter: Sigma's metadata, and extension keys as data.
#[derive(Debug, Clone, Serialize)]
pub struct RuleMeta {
    /// Sigma `id` (a UUID for SigmaHQ rules; any stable string for ours). Required.
    pub id: String,
    /// Sigma `name`, which correlation rules may reference instead of the id.
    pub name: Option<String>,
    pub title: String,
    pub status: Option<String>,
    pub description: Option<String>,
    pub references: Vec<String>,
    pub author: Option<String>,
    pub date: Option<String>,
    pub modified: Option<String>,
    pub tags: Vec<String>,
    /// Severity; `medium` when the rule does not say.
    pub level: Level,
    pub falsepositives: Vec<String>,
    pub fields: Vec<String>,
    pub logsource: Logsource,
    /// Top-level keys Sigma does not define (`runbook`, `kubetrail`, `license`, ...), as JSON.
    pub extra: BTreeMap<String, serde_json::Value>,
    pub location: Location,
}

impl RuleMeta {
    /// An extension key as text (`runbook` is usually a block string).
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(|v| v.as_str())
    }

    /// The rule's ATT&CK technique ids, from tags such as `attack.t1609` (as `T1609`).
    pub fn attack_techniques(&self) -> impl Iterator<Item = String> + '_ {
        self.tags.iter().filter_map(|t| {
            let t = t.strip_prefix("attack.")?;
            (t.len() > 1
                && t.starts_with(['t', 'T'])
                && t[1..].chars().all(|c| c.is_ascii_digit() || c == '.'))
            .then(|| t.to_ascii_uppercase())
        })
    }
}

/// A detection rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub meta: RuleMeta,
    pub(crate) detection: Detection,
}

/// How much of a request the audit policy must record for a rule to see what it looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BodyNeed {
    /// Metadata is enough.
    Metadata,
    /// The request body (`requestObject`, or a `kubetrail.pod.*` field read from it): level Request.
    Request,
    /// The response body (`responseObject`): level RequestResponse.
    Response,
}

/// What a rule can only match: the values its condition requires of `objectRef.resource`,
/// `objectRef.subresource` and `verb` (`None`: any), and the body it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub resources: Option<std::collections::BTreeSet<String>>,
    pub subresources: Option<std::collections::BTreeSet<String>>,
    pub verbs: Option<std::collections::BTreeSet<String>>,
    pub body: BodyNeed,
}

impl Rule {
    /// What the rule needs from the audit policy (`kubetrail policy lint --rules`).
    pub fn needs(&self) -> Needs {
        let d = &self.detection;
        let body = d
            .fields()
            .map(|f| {
                if f.starts_with("responseObject") {
                    BodyNeed::Response
                } else if f.starts_with("requestObject") || f.starts_with("kubetrail.pod.") {
                    BodyNeed::Request
                } else {
                    BodyNeed::Metadata
                }
            })
            .max()
            .unwrap_or(BodyNeed::Metadata);
        Needs {
            resources: d.necessary_field("objectRef.resource"),
            subresources: d.necessary_field("objectRef.subresource"),
            verbs: d.necessary_field("verb"),
            body,
        }
    }
}

/// The kinds of Sigma correlation rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationKind {
    /// At least (or at most, ...) N matching events per group within the timespan.
    EventCount,
    /// N distinct values of `field` per group within the timespan.
    ValueCount,
    /// All referenced rules matched per group within the timespan, in any order.
    Temporal,
    /// All referenced rules matched per group within the timespan, in the order listed.
    TemporalOrdered,
}

/// A correlation condition's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compare {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
}

impl Compare {
    pub(crate) fn holds(self, n: u64, threshold: u64) -> bool {
        match self {
            Compare::Gt => n > threshold,
            Compare::Gte => n >= threshold,
            Compare::Lt => n < threshold,
            Compare::Lte => n <= threshold,
            Compare::Eq => n == threshold,
        }
    }

    /// Whether the condition can be decided as soon as it holds (a count only grows inside a window).
    pub(crate) fn is_rising(self) -> bool {
        matches!(self, Compare::Gt | Compare::Gte)
    }
}

/// A Sigma correlation rule.
#[derive(Debug, Clone)]
pub struct Correlation {
    pub meta: RuleMeta,
    pub kind: CorrelationKind,
    /// The ids or names of the rules it correlates, with where each is written.
    pub rules: Vec<(String, Location)>,
    /// Canonical field paths (or alias names) the groups are keyed by.
    pub group_by: Vec<String>,
    /// Seconds.
    pub timespan: i64,
    /// `None` for temporal rules without a condition (all rules must match).
    pub condition: Option<(Compare, u64)>,
    /// For `value_count`: the field whose distinct values are counted.
    pub field: Option<String>,
    /// Whether the correlated rules still raise their own alerts (Sigma's default: no).
    pub generate: bool,
    /// `aliases`: alias name → rule id or name → field path.
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
}

/// A Sigma filter: extra conditions ANDed to the named rules' conditions, without editing them.
#[derive(Debug, Clone)]
pub struct Filter {
    pub meta: RuleMeta,
    pub rules: Vec<(String, Location)>,
    pub(crate) detection: Detection,
}

/// One YAML document of a rule file.
#[derive(Debug, Clone)]
pub enum Document {
    Rule(Rule),
    Correlation(Correlation),
    Filter(Filter),
}

impl Document {
    pub fn meta(&self) -> &RuleMeta {
        match self {
            Document::Rule(r) => &r.meta,
            Document::Correlation(c) => &c.meta,
            Document::Filter(f) => &f.meta,
        }
    }
}

const META_KEYS: &[&str] = &[
    "title",
    "id",
    "name",
    "status",
    "description",
    "references",
    "author",
    "date",
    "modified",
    "tags",
    "level",
    "falsepositives",
    "fields",
    "logsource",
    "detection",
    "correlation",
    "filter",
    "generate",
];

/// Parses every document of a rule file. `file` is the name errors carry.
pub fn parse_file(file: &str, src: &str) -> Result<Vec<Document>, LoadErrors> {
    let docs = match Node::load_from_str(src) {
        Ok(d) => d,
        Err(e) => {
            let m = e.marker();
            return Err(LoadErrors(vec![LoadError::new(
                file,
                m.line().max(1),
                m.col() + 1,
                format!("invalid YAML: {}", e.info()),
            )]));
        }
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for doc in &docs {
        if matches!(scalar(doc), Some(Scalar::Null)) {
            continue;
        }
        match document(file, doc) {
            Ok(d) => out.push(d),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(LoadError::new(file, 1, 1, "the file holds no rule".into()));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(LoadErrors(errors))
    }
}

fn document(file: &str, doc: &Node<'_>) -> Result<Document, Vec<LoadError>> {
    let at = |n: &Node<'_>| {
        let (line, column) = pos(n);
        Location {
            file: file.to_string(),
            line,
            column,
        }
    };
    let Some(entries) = mapping(doc) else {
        return Err(vec![at(doc).error(format!(
            "a rule must be a mapping with `title`, `id`, `logsource` and `detection`, found {}",
            kind_name(doc)
        ))]);
    };
    let mut errors = Vec::new();
    let mut get: BTreeMap<&str, (&Node<'_>, &Node<'_>)> = BTreeMap::new();
    let mut extra = BTreeMap::new();
    for (k, v) in entries {
        match as_str(k) {
            Some("action") => errors.push(at(k).error(
                "rule collections (`action: global`, `reset`, `repeat`) are not supported: write each rule as its own document".into(),
            )),
            Some(key) if META_KEYS.contains(&key) => {
                get.insert(key, (k, v));
            }
            Some(key) => {
                extra.insert(key.to_string(), to_json(v));
            }
            None => errors.push(at(k).error(format!("a key must be a string, found {}", kind_name(k)))),
        }
    }
    let string = |key: &str, errors: &mut Vec<LoadError>| -> Option<String> {
        let (_, v) = get.get(key)?;
        match text(v) {
            Some(s) => Some(s),
            None if matches!(scalar(v), Some(Scalar::Null)) => None,
            None => {
                errors
                    .push(at(v).error(format!("`{key}` must be a string, found {}", kind_name(v))));
                None
            }
        }
    };
    let list = |key: &str, errors: &mut Vec<LoadError>| -> Vec<String> {
        let Some((_, v)) = get.get(key) else {
            return Vec::new();
        };
        if let Some(s) = text(v) {
            return vec![s];
        }
        match sequence(v) {
            Some(items) => items
                .iter()
                .filter_map(|i| {
                    let t = text(i);
                    if t.is_none() {
                        errors.push(at(i).error(format!(
                            "`{key}` entries must be strings, found {}",
                            kind_name(i)
                        )));
                    }
                    t
                })
                .collect(),
            None if matches!(scalar(v), Some(Scalar::Null)) => Vec::new(),
            None => {
                errors.push(at(v).error(format!(
                    "`{key}` must be a list of strings, found {}",
                    kind_name(v)
                )));
                Vec::new()
            }
        }
    };
    let title = string("title", &mut errors);
    let id = string("id", &mut errors);
    let level = match get.get("level") {
        None => Level::Medium,
        Some((_, v)) => match as_str(v).map(Level::from_str) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                errors.push(at(v).error(e));
                Level::Medium
            }
            None => {
                errors
                    .push(at(v).error(format!("`level` must be a string, found {}", kind_name(v))));
                Level::Medium
            }
        },
    };
    let mut logsource = Logsource::default();
    if let Some((_, v)) = get.get("logsource") {
        match mapping(v) {
            Some(m) => {
                for (k, val) in m {
                    let t = text(val);
                    match as_str(k) {
                        Some("product") => logsource.product = t,
                        Some("service") => logsource.service = t,
                        Some("category") => logsource.category = t,
                        _ => {}
                    }
                }
            }
            None => errors.push(at(v).error(format!(
                "`logsource` must be a mapping, found {}",
                kind_name(v)
            ))),
        }
    }
    let meta = RuleMeta {
        id: id.clone().unwrap_or_default(),
        name: string("name", &mut errors),
        title: title.clone().unwrap_or_default(),
        status: string("status", &mut errors),
        description: string("description", &mut errors),
        references: list("references", &mut errors),
        author: string("author", &mut errors),
        date: string("date", &mut errors),
        modified: string("modified", &mut errors),
        tags: list("tags", &mut errors),
        level,
        falsepositives: list("falsepositives", &mut errors),
        fields: list("fields", &mut errors),
        logsource,
        extra,
        location: at(doc),
    };
    if title.is_none() {
        errors.push(at(doc).error("the rule has no `title`".into()));
    }
    if id.is_none() {
        errors.push(at(doc).error(
            "the rule has no `id`; give it a stable one (a UUID, or `kt-...` for ours)".into(),
        ));
    }
    let kinds = ["detection", "correlation", "filter"]
        .into_iter()
        .filter(|k| get.contains_key(k))
        .collect::<Vec<_>>();
    let doc = match kinds.as_slice() {
        ["detection"] => {
            let (_, d) = get["detection"];
            check_logsource(&meta, &mut errors);
            match detection::parse(file, d, &[]) {
                Ok(detection) => Some(Document::Rule(Rule { meta, detection })),
                Err(mut e) => {
                    errors.append(&mut e);
                    None
                }
            }
        }
        ["correlation"] => {
            let generate = get.get("generate").map(|(_, v)| v);
            correlation(file, get["correlation"].1, generate, meta, &mut errors)
                .map(Document::Correlation)
        }
        ["filter"] => {
            if meta.logsource.product.is_some() {
                check_logsource(&meta, &mut errors);
            }
            let (_, f) = get["filter"];
            let rules = references(file, f, "rules", &mut errors);
            match detection::parse(file, f, &["rules"]) {
                Ok(detection) => Some(Document::Filter(Filter {
                    meta,
                    rules,
                    detection,
                })),
                Err(mut e) => {
                    errors.append(&mut e);
                    None
                }
            }
        }
        [] => {
            errors.push(
                at(doc).error("the document has no `detection`, `correlation` or `filter`".into()),
            );
            None
        }
        _ => {
            errors.push(at(doc).error(format!(
                "a document is one of a rule, a correlation or a filter, but this one has {}",
                kinds.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
            )));
            None
        }
    };
    match doc {
        Some(d) if errors.is_empty() => Ok(d),
        _ => Err(errors),
    }
}

fn check_logsource(meta: &RuleMeta, errors: &mut Vec<LoadError>) {
    let ls = &meta.logsource;
    let is =
        |v: &Option<String>, want: &str| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(want));
    if !is(&ls.product, "kubernetes") || !is(&ls.service, "audit") {
        errors.push(meta.location.error(format!(
            "not a Kubernetes audit rule: `logsource` must have `product: kubernetes` and `service: audit` (found product {}, service {})",
            ls.product.as_deref().map_or("none".to_string(), |p| format!("`{p}`")),
            ls.service.as_deref().map_or("none".to_string(), |s| format!("`{s}`")),
        )));
    }
}

/// A list (or one) of rule ids/names under `key` of a mapping.
fn references(
    file: &str,
    node: &Node<'_>,
    key: &str,
    errors: &mut Vec<LoadError>,
) -> Vec<(String, Location)> {
    let at = |n: &Node<'_>| {
        let (line, column) = pos(n);
        Location {
            file: file.to_string(),
            line,
            column,
        }
    };
    let Some(v) =
        mapping(node).and_then(|mut m| m.find(|(k, _)| as_str(k) == Some(key)).map(|(_, v)| v))
    else {
        errors.push(at(node).error(format!(
            "no `{key}`: list the ids or names of the rules it applies to"
        )));
        return Vec::new();
    };
    let items: Vec<&Node<'_>> = match sequence(v) {
        Some(s) => s.iter().collect(),
        None => vec![v],
    };
    let mut out = Vec::new();
    for i in items {
        match text(i) {
            Some(s) => out.push((s, at(i))),
            None => errors.push(at(i).error(format!(
                "`{key}` entries are rule ids or names, found {}",
                kind_name(i)
            ))),
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(at(v).error(format!("`{key}` is empty")));
    }
    out
}

/// Parses `30s`, `5m`, `1h`, `2d`, `1w` into seconds.
pub(crate) fn parse_timespan(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let mul = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    (n > 0).then(|| n.checked_mul(mul)).flatten()
}

fn correlation(
    file: &str,
    node: &Node<'_>,
    top_generate: Option<&&Node<'_>>,
    meta: RuleMeta,
    errors: &mut Vec<LoadError>,
) -> Option<Correlation> {
    let at = |n: &Node<'_>| {
        let (line, column) = pos(n);
        Location {
            file: file.to_string(),
            line,
            column,
        }
    };
    let Some(entries) = mapping(node) else {
        errors.push(at(node).error(format!(
            "`correlation` must be a mapping, found {}",
            kind_name(node)
        )));
        return None;
    };
    let n_errors = errors.len();
    let mut kind = None;
    let mut group_by = Vec::new();
    let mut timespan = None;
    let mut condition = None;
    let mut field = None;
    let mut generate = top_generate.and_then(|v| match scalar(v) {
        Some(Scalar::Boolean(b)) => Some(*b),
        _ => None,
    });
    let mut aliases: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cond_node = None;
    for (k, v) in entries {
        match as_str(k) {
            Some("type") => {
                kind = match as_str(v) {
                    Some("event_count") => Some(CorrelationKind::EventCount),
                    Some("value_count") => Some(CorrelationKind::ValueCount),
                    Some("temporal") => Some(CorrelationKind::Temporal),
                    Some("temporal_ordered") => Some(CorrelationKind::TemporalOrdered),
                    _ => {
                        errors.push(at(v).error(
                            "unknown correlation `type`; use event_count, value_count, temporal or temporal_ordered".into(),
                        ));
                        None
                    }
                }
            }
            Some("rules") => {}
            Some("group-by") => {
                let items: Vec<&Node<'_>> = match sequence(v) {
                    Some(s) => s.iter().collect(),
                    None => vec![v],
                };
                for i in items {
                    match as_str(i) {
                        Some(f) => group_by.push((f.to_string(), at(i))),
                        None => errors.push(at(i).error(format!("`group-by` entries are field names, found {}", kind_name(i)))),
                    }
                }
            }
            Some("timespan") => match text(v).as_deref().and_then(parse_timespan) {
                Some(t) => timespan = Some(t),
                None => errors.push(at(v).error("`timespan` must be a duration such as `30s`, `5m`, `1h` or `1d`".into())),
            },
            Some("condition") => cond_node = Some(v),
            Some("generate") => match scalar(v) {
                Some(Scalar::Boolean(b)) => generate = Some(*b),
                _ => errors.push(at(v).error("`generate` must be `true` or `false`".into())),
            },
            Some("aliases") => {
                for (alias, per_rule) in mapping(v).into_iter().flatten() {
                    let Some(alias) = as_str(alias) else { continue };
                    let mut m = BTreeMap::new();
                    for (rule, f) in mapping(per_rule).into_iter().flatten() {
                        match (text(rule), as_str(f)) {
                            (Some(r), Some(f)) => match canonical(f) {
                                Ok(c) => {
                                    m.insert(r, c.to_string());
                                }
                                Err(e) => errors.push(at(f_node(per_rule, f)).error(e)),
                            },
                            _ => errors.push(at(per_rule).error("`aliases` map rule ids or names to field names".into())),
                        }
                    }
                    aliases.insert(alias.to_string(), m);
                }
            }
            Some(other) => errors.push(at(k).error(format!(
                "unknown key `{other}` in `correlation`; expected type, rules, group-by, timespan, condition, generate, aliases"
            ))),
            None => errors.push(at(k).error("keys must be strings".into())),
        }
    }
    let rules = references(file, node, "rules", errors);
    let group_by: Vec<String> = group_by
        .into_iter()
        .filter_map(|(f, loc)| {
            if aliases.contains_key(&f) {
                return Some(f);
            }
            match canonical(&f) {
                Ok(c) => Some(c.to_string()),
                Err(e) => {
                    errors.push(loc.error(e));
                    None
                }
            }
        })
        .collect();
    if let Some(c) = cond_node {
        match mapping(c) {
            Some(m) => {
                for (k, v) in m {
                    let op = match as_str(k) {
                        Some("gt") => Some(Compare::Gt),
                        Some("gte") => Some(Compare::Gte),
                        Some("lt") => Some(Compare::Lt),
                        Some("lte") => Some(Compare::Lte),
                        Some("eq") => Some(Compare::Eq),
                        Some("field") => {
                            match as_str(v).map(canonical) {
                                Some(Ok(f)) => field = Some(f.to_string()),
                                Some(Err(e)) => errors.push(at(v).error(e)),
                                None => {
                                    errors.push(at(v).error("`field` must be a field name".into()))
                                }
                            }
                            None
                        }
                        _ => {
                            errors.push(at(k).error("a correlation condition has `gt`, `gte`, `lt`, `lte` or `eq` (and `field` for value_count)".into()));
                            None
                        }
                    };
                    if let Some(op) = op {
                        match scalar(v) {
                            Some(Scalar::Integer(n)) if *n >= 0 => {
                                if condition.is_some() {
                                    errors.push(at(k).error(
                                        "a correlation condition has one comparison".into(),
                                    ));
                                }
                                condition = Some((op, *n as u64));
                            }
                            _ => errors.push(
                                at(v).error("the threshold must be a non-negative integer".into()),
                            ),
                        }
                    }
                }
            }
            None => errors.push(at(c).error(format!(
                "`condition` must be a mapping such as `gte: 10`, found {}",
                kind_name(c)
            ))),
        }
    }
    let Some(kind) = kind else {
        if errors.len() == n_errors {
            errors.push(at(node).error("`correlation` has no `type`".into()));
        }
        return None;
    };
    let Some(timespan) = timespan else {
        if errors.len() == n_errors {
            errors.push(at(node).error("`correlation` has no `timespan`".into()));
        }
        return None;
    };
    match kind {
        CorrelationKind::EventCount | CorrelationKind::ValueCount if condition.is_none() => {
            errors
                .push(at(node).error("`correlation` needs a `condition` such as `gte: 10`".into()));
        }
        CorrelationKind::ValueCount if field.is_none() => {
            errors.push(at(node).error("a value_count correlation needs `condition: field:`, the field whose distinct values are counted".into()));
        }
        CorrelationKind::Temporal | CorrelationKind::TemporalOrdered if rules.len() < 2 => {
            errors.push(at(node).error("a temporal correlation needs at least two rules".into()));
        }
        _ => {}
    }
    if errors.len() > n_errors {
        return None;
    }
    Some(Correlation {
        meta,
        kind,
        rules,
        group_by,
        timespan,
        condition,
        field,
        generate: generate.unwrap_or(false),
        aliases,
    })
}

/// The node of an alias's field value, for its position (falls back to the mapping).
fn f_node<'n, 'a>(per_rule: &'n Node<'a>, f: &str) -> &'n Node<'a> {
    mapping(per_rule)
        .and_then(|mut m| m.find(|(_, v)| as_str(v) == Some(f)).map(|(_, v)| v))
        .unwrap_or(per_rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("30s"), Some(30));
        assert_eq!(parse_timespan("5m"), Some(300));
        assert_eq!(parse_timespan("1h"), Some(3600));
        assert_eq!(parse_timespan("2d"), Some(172_800));
        assert_eq!(parse_timespan("0m"), None);
        assert_eq!(parse_timespan("5"), None);
        assert_eq!(parse_timespan("m"), None);
        assert_eq!(parse_timespan("99999999999999999999d"), None);
    }
}
