//! Loading a policy file as kube-apiserver's `pkg/audit/policy/reader.go` does, with a line for every finding.
//!
//! kube-apiserver decodes strictly first; when that fails only because of unknown or duplicate fields it logs a
//! warning and decodes leniently, dropping those fields. Type errors, an unknown `apiVersion`, validation
//! errors and a policy without rules stop it from starting. The YAML is parsed with spans and the (small)
//! schema is walked by hand so each of those outcomes becomes a located [`Diagnostic`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr::{MarkedYaml, Scalar, YamlData, YamlLoader};
use saphyr_parser::{Event, Span, SpannedEventReceiver};

use crate::diagnostic::{Diagnostic, Severity};
use crate::policy::{GroupResources, Policy, Rule, StageSet};
use crate::validate::{check_level, check_stage, validate_located};

/// The only `apiVersion` kube-apiserver reads (v1alpha1 and v1beta1 were removed in Kubernetes 1.24).
pub const API_VERSION: &str = "audit.k8s.io/v1";

/// A loaded policy file: the policy if kube-apiserver would start with it, and every finding.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `None` when kube-apiserver would refuse to start (some diagnostic is an error).
    pub policy: Option<Policy>,
    /// Sorted by line; findings without a line come last.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

/// Loads a policy file (YAML or JSON) with kube-apiserver's rules.
pub fn load(yaml: &str) -> Loaded {
    let mut cx = Cx {
        src: yaml,
        diags: Vec::new(),
        spans: HashMap::new(),
    };
    let policy = cx.load();
    let mut diagnostics = cx.diags;
    diagnostics.sort_by_key(|d| (d.line.is_none(), d.line, d.column));
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    Loaded {
        policy: policy.filter(|_| ok),
        diagnostics,
    }
}

type Node<'a> = MarkedYaml<'a>;
type Pos = Option<(usize, usize)>;

/// Which object a mapping is, for the fields it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Policy,
    Rule,
    GroupResources,
}

const POLICY_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "rules",
    "omitStages",
    "omitManagedFields",
];
const RULE_FIELDS: &[&str] = &[
    "level",
    "users",
    "userGroups",
    "verbs",
    "resources",
    "namespaces",
    "nonResourceURLs",
    "omitStages",
    "omitManagedFields",
];
const GROUP_RESOURCES_FIELDS: &[&str] = &["group", "resources", "resourceNames"];

impl Object {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Object::Policy => POLICY_FIELDS,
            Object::Rule => RULE_FIELDS,
            Object::GroupResources => GROUP_RESOURCES_FIELDS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Object::Policy => "the policy",
            Object::Rule => "a rule",
            Object::GroupResources => "a `resources` entry",
        }
    }
}

/// What a request-narrowing field narrows, to say what dropping it does.
fn narrows(field: &str) -> Option<&'static str> {
    Some(match field {
        "users" => "user",
        "userGroups" => "group",
        "verbs" => "verb",
        "namespaces" => "namespace",
        "resources" => "resource",
        "nonResourceURLs" => "non-resource URL",
        "resourceNames" => "name",
        _ => return None,
    })
}

struct Cx<'s> {
    src: &'s str,
    diags: Vec<Diagnostic>,
    /// Where each value is, by its fully indexed path, to locate validation errors.
    spans: HashMap<String, (usize, usize)>,
}

fn pos(node: &Node<'_>) -> Pos {
    let m = node.span.start;
    (m.line() > 0).then(|| (m.line(), m.col() + 1))
}

/// A node's value, through tags (`!!str`, `!!seq`, ...), which kube-apiserver's YAML reader ignores too.
fn untag<'n, 'a>(node: &'n Node<'a>) -> &'n Node<'a> {
    match &node.data {
        YamlData::Tagged(_, inner) => untag(inner),
        _ => node,
    }
}

fn kind_name(node: &Node<'_>) -> &'static str {
    match &untag(node).data {
        YamlData::Value(Scalar::Null) => "null",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::String(_)) | YamlData::Representation(..) => "a string",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        _ => "an unreadable value",
    }
}

/// A string value, null, or something else.
enum Str<'n> {
    Null,
    Value(&'n str),
    Other,
}

/// Plain scalars YAML 1.1 (which kube-apiserver's YAML reader speaks) reads as booleans, unlike YAML 1.2.
const YAML11_BOOLS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

impl<'s> Cx<'s> {
    fn load(&mut self) -> Option<Policy> {
        let docs = self.parse()?;
        let Some(root) = docs.first() else {
            self.zero_rules(None);
            return None;
        };
        if docs.len() > 1 {
            self.diags.push(
                Diagnostic::warning(
                    "",
                    "only the first YAML document is read; the others are ignored",
                )
                .at(pos(&docs[1]))
                .help("put the whole policy in one document (remove the `---` separator)"),
            );
        }
        let root = untag(root);
        let entries = match &root.data {
            YamlData::Value(Scalar::Null) => {
                self.zero_rules(None);
                return None;
            }
            YamlData::Mapping(m) => m,
            _ => {
                self.diags.push(
                    Diagnostic::error("", format!("the policy must be a mapping, found {}", kind_name(root)))
                        .at(pos(root))
                        .help("start the file with `apiVersion: audit.k8s.io/v1`, `kind: Policy` and `rules:`"),
                );
                return None;
            }
        };

        let mut policy = Policy::default();
        let mut api_version: Option<(&Node<'_>, Str<'_>)> = None;
        let mut kind: Option<(&Node<'_>, Str<'_>)> = None;
        let mut rules_pos = None;
        let mut rules_bad = false;
        for (k, v) in entries {
            let Some(key) = self.key(k, "", Object::Policy) else {
                continue;
            };
            match key {
                "apiVersion" => api_version = Some((v, self.str_of(v))),
                "kind" => kind = Some((v, self.str_of(v))),
                "metadata" => {
                    if !matches!(
                        untag(v).data,
                        YamlData::Mapping(_) | YamlData::Value(Scalar::Null)
                    ) {
                        self.type_error(v, "metadata", "a mapping", None);
                    }
                }
                "rules" => {
                    rules_pos = pos(k);
                    rules_bad = !matches!(
                        untag(v).data,
                        YamlData::Sequence(_) | YamlData::Value(Scalar::Null)
                    );
                    if let Some(items) = self.seq(v, "rules", "a list of rules") {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(rule) = self.rule(item, i) {
                                policy.rules.push(rule);
                            }
                        }
                    }
                }
                "omitStages" => policy.omit_stages = self.stages(v, "omitStages"),
                "omitManagedFields" => {
                    policy.omit_managed_fields = self.bool(v, "omitManagedFields").unwrap_or(false);
                }
                _ => self.unknown(k, key, "", Object::Policy),
            }
        }
        self.check_gvk(root, api_version, kind);

        let spans = &self.spans;
        let found = validate_located(&policy, &|key| spans.get(key).copied());
        self.diags.extend(found);
        // `rules` of the wrong type already stops kube-apiserver; no need to also count its rules.
        if policy.rules.is_empty() && !rules_bad {
            self.zero_rules(rules_pos);
        }
        Some(policy)
    }

    /// Parses the documents with spans. Duplicate keys are a warning (last wins), as kube-apiserver's lenient
    /// decoding has it.
    fn parse(&mut self) -> Option<Vec<Node<'s>>> {
        let mut dups = DuplicateKeys::default();
        // A syntax error stops this pass too; the loading pass below reports it.
        let _ = saphyr_parser::Parser::new_from_str(self.src).load(&mut dups, true);
        for (key, m) in dups.found {
            self.diags.push(
                Diagnostic::warning(
                    "",
                    format!("duplicate key `{key}` in a mapping: the last value wins"),
                )
                .at(Some((m.line(), m.col() + 1)))
                .help("remove one of the two entries (kube-apiserver warns and keeps the last)"),
            );
        }
        let mut loader = YamlLoader::<Node<'s>>::default();
        loader.allow_duplicate_keys(true);
        let mut parser = saphyr_parser::Parser::new_from_str(self.src);
        let err = match parser.load(&mut loader, true) {
            Err(e) => Some(e),
            Ok(()) => loader.error().cloned(),
        };
        if let Some(e) = err {
            let m = *e.marker();
            self.diags.push(
                Diagnostic::error("", format!("invalid YAML: {}", e.info()))
                    .at(Some((m.line(), m.col() + 1)))
                    .help("fix the YAML syntax here (indent with spaces, not tabs; quote values containing `: ` or starting with `*`, `&`, `!`, `{` or `[`)"),
            );
            return None;
        }
        Some(loader.into_documents())
    }

    fn zero_rules(&mut self, at: Pos) {
        self.diags.push(
            Diagnostic::error("rules", "loaded illegal policy with 0 rules")
                .at(at)
                .help("add at least one rule under `rules:`, e.g. `- level: Metadata` (a policy that logs nothing is `- level: None`)"),
        );
    }

    fn check_gvk(
        &mut self,
        root: &Node<'_>,
        api_version: Option<(&Node<'_>, Str<'_>)>,
        kind: Option<(&Node<'_>, Str<'_>)>,
    ) {
        let add_both =
            "add `apiVersion: audit.k8s.io/v1` and `kind: Policy` at the top of the file";
        match api_version {
            None | Some((_, Str::Null)) => {
                let what = if matches!(kind, None | Some((_, Str::Null))) {
                    "`apiVersion` and `kind` are missing"
                } else {
                    "`apiVersion` is missing"
                };
                self.diags.push(
                    Diagnostic::error(
                        "apiVersion",
                        format!("unknown group version field in policy: {what}"),
                    )
                    .at(pos(root))
                    .help(add_both),
                );
                return;
            }
            Some((v, Str::Other)) => self.type_error(v, "apiVersion", "a string", None),
            Some((_, Str::Value(API_VERSION))) => {}
            Some((v, Str::Value(other @ ("audit.k8s.io/v1beta1" | "audit.k8s.io/v1alpha1")))) => {
                self.diags.push(
                    Diagnostic::error(
                        "apiVersion",
                        format!(
                            "`{other}` was removed in Kubernetes 1.24; kube-apiserver reads `{API_VERSION}` only"
                        ),
                    )
                    .at(pos(v))
                    .help(format!("change it to `apiVersion: {API_VERSION}` (the Policy schema is the same)")),
                );
            }
            Some((v, Str::Value(other))) => {
                self.diags.push(
                    Diagnostic::error(
                        "apiVersion",
                        format!("unknown group version field `{other}` in policy; kube-apiserver reads `{API_VERSION}` only"),
                    )
                    .at(pos(v))
                    .help(format!("change it to `apiVersion: {API_VERSION}`")),
                );
            }
        }
        match kind {
            None | Some((_, Str::Null)) => self.diags.push(
                Diagnostic::error("kind", "unknown group version field in policy: `kind` is missing")
                    .at(pos(root))
                    .help("add `kind: Policy` at the top of the file"),
            ),
            Some((v, Str::Other)) => self.type_error(v, "kind", "a string", None),
            Some((_, Str::Value("Policy"))) => {}
            Some((v, Str::Value(other))) => self.diags.push(
                Diagnostic::error(
                    "kind",
                    format!("`{other}` is not a kind of `{API_VERSION}`; an audit policy is `kind: Policy`"),
                )
                .at(pos(v))
                .help("change it to `kind: Policy`"),
            ),
        }
    }

    fn rule(&mut self, node: &Node<'_>, i: usize) -> Option<Rule> {
        let path = format!("rules[{i}]");
        let at = pos(node);
        if let Some(p) = at {
            self.spans.insert(path.clone(), p);
        }
        let mut rule = Rule::new(kubetrail_model::Level::None);
        rule.line = at.map_or(0, |p| p.0);
        let mut level = None;
        let mut level_pos = at;
        match &untag(node).data {
            YamlData::Value(Scalar::Null) => {}
            YamlData::Mapping(m) => {
                for (k, v) in m {
                    let Some(key) = self.key(k, &path, Object::Rule) else {
                        continue;
                    };
                    let field = format!("{path}.{key}");
                    if let Some(p) = pos(k) {
                        self.spans.insert(field.clone(), p);
                    }
                    match key {
                        "level" => match self.str_of(v) {
                            Str::Value(s) => {
                                level = Some(s.to_string());
                                level_pos = pos(v);
                            }
                            Str::Null => {}
                            Str::Other => self.type_error(v, &field, "a string", None),
                        },
                        "users" => rule.users = self.strings(v, &field),
                        "userGroups" => rule.user_groups = self.strings(v, &field),
                        "verbs" => rule.verbs = self.strings(v, &field),
                        "namespaces" => rule.namespaces = self.strings(v, &field),
                        "nonResourceURLs" => rule.non_resource_urls = self.strings(v, &field),
                        "omitStages" => rule.omit_stages = self.stages(v, &field),
                        "omitManagedFields" => rule.omit_managed_fields = self.bool(v, &field),
                        "resources" => {
                            if let Some(items) =
                                self.seq(v, &field, "a list of {group, resources} entries")
                            {
                                for (j, item) in items.iter().enumerate() {
                                    if let Some(gr) =
                                        self.group_resources(item, &format!("{field}[{j}]"))
                                    {
                                        rule.resources.push(gr);
                                    }
                                }
                            }
                        }
                        _ => self.unknown(k, key, &path, Object::Rule),
                    }
                }
            }
            _ => {
                self.type_error(
                    node,
                    &path,
                    "a rule (a mapping with `level` and matchers)",
                    None,
                );
                return None;
            }
        }
        match check_level(level.as_deref(), &format!("{path}.level")) {
            Ok(l) => rule.level = l,
            Err(d) => self.diags.push(d.at(level_pos)),
        }
        Some(rule)
    }

    fn group_resources(&mut self, node: &Node<'_>, path: &str) -> Option<GroupResources> {
        let mut gr = GroupResources::default();
        match &untag(node).data {
            YamlData::Value(Scalar::Null) => {}
            YamlData::Mapping(m) => {
                for (k, v) in m {
                    let Some(key) = self.key(k, path, Object::GroupResources) else {
                        continue;
                    };
                    let field = format!("{path}.{key}");
                    match key {
                        "group" => {
                            if let Some(p) = pos(v) {
                                self.spans.insert(field.clone(), p);
                            }
                            gr.group = self.string(v, &field);
                        }
                        "resources" => gr.resources = self.strings(v, &field),
                        "resourceNames" => {
                            if let Some(p) = pos(k) {
                                self.spans.insert(field.clone(), p);
                            }
                            gr.resource_names = self.strings(v, &field);
                        }
                        _ => self.unknown(k, key, path, Object::GroupResources),
                    }
                }
            }
            _ => {
                self.type_error(
                    node,
                    path,
                    "a mapping with `group` and `resources`",
                    Some(
                        "write `- group: \"\"` then `resources: [pods]` on the next line, indented",
                    ),
                );
                return None;
            }
        }
        Some(gr)
    }

    /// A mapping key as a field name; non-string keys are unknown fields.
    fn key<'n>(&mut self, k: &'n Node<'_>, parent: &str, obj: Object) -> Option<&'n str> {
        match &untag(k).data {
            YamlData::Value(Scalar::String(s)) => Some(s.as_ref()),
            _ => {
                let shown = match &untag(k).data {
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    YamlData::Value(Scalar::FloatingPoint(f)) => f.to_string(),
                    _ => "null".to_string(),
                };
                self.unknown(k, &shown, parent, obj);
                None
            }
        }
    }

    /// An unknown (or misplaced) field: kube-apiserver drops it with a warning and loads the rest.
    fn unknown(&mut self, k: &Node<'_>, key: &str, parent: &str, obj: Object) {
        let path = if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        };
        let dropped = format!(
            "unknown field `{key}` in {} is dropped (kube-apiserver warns and ignores it)",
            obj.name()
        );
        let effect = match narrows(key) {
            Some(n) => format!(", so as written the rule matches every {n}"),
            None => String::new(),
        };
        let (message, help) = if let Some(f) =
            obj.fields().iter().find(|f| f.eq_ignore_ascii_case(key))
        {
            (
                format!("{dropped}; field names are case-sensitive"),
                format!("write `{f}`"),
            )
        } else if obj == Object::GroupResources && RULE_FIELDS.contains(&key) {
            (
                format!(
                    "{dropped}; `{key}` belongs to the rule, not to a `resources` entry{effect}"
                ),
                self.rule_indent_help(parent, key),
            )
        } else if obj == Object::Rule && GROUP_RESOURCES_FIELDS.contains(&key) {
            (
                format!(
                    "{dropped}; `{key}` belongs in a `resources` entry, not in the rule itself{effect}"
                ),
                format!(
                    "move `{key}` into the `resources` entry it belongs to, next to `group:` and `resources:`"
                ),
            )
        } else if obj != Object::Policy && POLICY_FIELDS.contains(&key) {
            (
                format!("{dropped}; `{key}` is a top-level field of the policy"),
                format!("move `{key}` to the top level of the file, unindented"),
            )
        } else if obj == Object::Policy && RULE_FIELDS.contains(&key) {
            (
                format!("{dropped}; `{key}` is a field of a rule, not of the policy"),
                format!("move `{key}` into a rule under `rules:`"),
            )
        } else {
            let near = obj
                .fields()
                .iter()
                .filter(|f| edit_distance(&f.to_ascii_lowercase(), &key.to_ascii_lowercase()) <= 2)
                .min_by_key(|f| edit_distance(f, key));
            (
                dropped,
                match near {
                    Some(f) => format!("did you mean `{f}`?"),
                    None => format!(
                        "remove it; the fields of {} are {}",
                        obj.name(),
                        obj.fields().join(", ")
                    ),
                },
            )
        };
        self.diags.push(
            Diagnostic::new(Severity::Warning, path, message)
                .at(pos(k))
                .help(help),
        );
    }

    /// For a rule field misplaced in `rules[i].resources[j]`: indent it like the rule's `resources:` key.
    fn rule_indent_help(&self, gr_path: &str, key: &str) -> String {
        let rule_resources = gr_path.rsplit_once('[').map_or(gr_path, |(p, _)| p);
        match self.spans.get(rule_resources) {
            Some((_, col)) => format!(
                "indent `{key}` to column {col}, like `resources:` of the rule, so it applies to the rule"
            ),
            None => {
                format!("indent `{key}` like `resources:` of the rule, so it applies to the rule")
            }
        }
    }

    fn str_of<'n>(&self, node: &'n Node<'_>) -> Str<'n> {
        match &untag(node).data {
            YamlData::Value(Scalar::Null) => Str::Null,
            YamlData::Value(Scalar::String(s)) if !self.is_yaml11_bool(node, s) => Str::Value(s),
            _ => Str::Other,
        }
    }

    /// Whether a string saphyr read (YAML 1.2) is a plain `yes`/`no`/`on`/`off`/`y`/`n`, a boolean in YAML 1.1.
    fn is_yaml11_bool(&self, node: &Node<'_>, s: &str) -> bool {
        YAML11_BOOLS.contains(&s)
            && self
                .src
                .chars()
                .nth(node.span.start.index())
                .is_some_and(|c| c != '\'' && c != '"')
    }

    /// A string field; null reads as `""` (as JSON null into a Go string does).
    fn string(&mut self, node: &Node<'_>, path: &str) -> String {
        match self.str_of(node) {
            Str::Value(s) => s.to_string(),
            Str::Null => String::new(),
            Str::Other => {
                let quoted = match &untag(node).data {
                    YamlData::Value(Scalar::String(s)) => Some(format!("quote it: `'{s}'`")),
                    YamlData::Value(
                        Scalar::Integer(_) | Scalar::FloatingPoint(_) | Scalar::Boolean(_),
                    ) => Some("quote it to make it a string".to_string()),
                    _ => None,
                };
                self.type_error(node, path, "a string", quoted.as_deref());
                String::new()
            }
        }
    }

    fn seq<'n>(&mut self, node: &'n Node<'_>, path: &str, what: &str) -> Option<&'n [Node<'n>]>
    where
        's: 'n,
    {
        match &untag(node).data {
            YamlData::Sequence(items) => Some(items.as_slice()),
            YamlData::Value(Scalar::Null) => None,
            _ => {
                self.type_error(node, path, what, None);
                None
            }
        }
    }

    fn strings(&mut self, node: &Node<'_>, path: &str) -> Vec<String> {
        match &untag(node).data {
            YamlData::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let p = format!("{path}[{i}]");
                    if let Some(at) = pos(item) {
                        self.spans.insert(p.clone(), at);
                    }
                    self.string(item, &p)
                })
                .collect(),
            YamlData::Value(Scalar::Null) => Vec::new(),
            YamlData::Value(Scalar::String(s)) => {
                let field = path.rsplit('.').next().unwrap_or(path);
                let help = format!(
                    "write a list: `{field}: [\"{s}\"]`, or `- {s}` on the next line, indented"
                );
                self.type_error(node, path, "a list of strings", Some(&help));
                Vec::new()
            }
            _ => {
                self.type_error(node, path, "a list of strings", None);
                Vec::new()
            }
        }
    }

    fn stages(&mut self, node: &Node<'_>, path: &str) -> StageSet {
        let mut set = StageSet::EMPTY;
        let raw = self.strings(node, path);
        for (i, s) in raw.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match check_stage(s, &p) {
                Ok(stage) => set.insert(stage),
                Err(d) => {
                    let at = self.spans.get(&p).copied();
                    self.diags.push(d.at(at));
                }
            }
        }
        set
    }

    /// A boolean; YAML 1.1's `yes`/`no`/`on`/`off` count, as they do for kube-apiserver.
    fn bool(&mut self, node: &Node<'_>, path: &str) -> Option<bool> {
        match &untag(node).data {
            YamlData::Value(Scalar::Boolean(b)) => Some(*b),
            YamlData::Value(Scalar::Null) => None,
            YamlData::Value(Scalar::String(s)) if self.is_yaml11_bool(node, s) => Some(matches!(
                s.as_ref(),
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON"
            )),
            _ => {
                self.type_error(
                    node,
                    path,
                    "true or false",
                    Some("write `true` or `false`, unquoted"),
                );
                None
            }
        }
    }

    /// A value of the wrong type: kube-apiserver fails to decode the file.
    fn type_error(&mut self, node: &Node<'_>, path: &str, expected: &str, help: Option<&str>) {
        let found = kind_name(node);
        let found = match &untag(node).data {
            YamlData::Value(Scalar::String(s)) if self.is_yaml11_bool(node, s) => {
                format!("`{s}`, which kube-apiserver's YAML 1.1 reader takes for a boolean")
            }
            YamlData::Value(Scalar::String(s)) => format!("the string `{s}`"),
            YamlData::Value(Scalar::Integer(i)) => format!("the integer {i}"),
            YamlData::Value(Scalar::Boolean(b)) => format!("the boolean {b}"),
            _ => found.to_string(),
        };
        let mut d =
            Diagnostic::error(path, format!("expected {expected}, found {found}")).at(pos(node));
        if let Some(h) = help {
            d = d.help(h);
        } else {
            d = d.help(format!(
                "make `{}` {expected}",
                path.rsplit('.').next().unwrap_or(path)
            ));
        }
        self.diags.push(d);
    }
}

/// Finds the keys repeated within a mapping, by the parser's events (the loaded tree keeps only the last).
#[derive(Default)]
struct DuplicateKeys<'i> {
    stack: Vec<Option<Keys<'i>>>,
    found: Vec<(String, saphyr::Marker)>,
}

/// A mapping being read: the keys seen, and whether the next node is a key.
struct Keys<'i> {
    seen: HashSet<Cow<'i, str>>,
    expect_key: bool,
}

impl<'i> DuplicateKeys<'i> {
    /// A node starts; `scalar` is its text when it is a scalar.
    fn node(&mut self, scalar: Option<Cow<'i, str>>, span: Span) {
        if let Some(Some(keys)) = self.stack.last_mut() {
            if keys.expect_key
                && let Some(k) = scalar
                && !keys.seen.insert(k.clone())
            {
                self.found.push((k.into_owned(), span.start));
            }
            keys.expect_key = !keys.expect_key;
        }
    }
}

impl<'i> SpannedEventReceiver<'i> for DuplicateKeys<'i> {
    fn on_event(&mut self, ev: Event<'i>, span: Span) {
        match ev {
            Event::Scalar(s, ..) => self.node(Some(s), span),
            Event::Alias(_) => self.node(None, span),
            Event::SequenceStart(..) => {
                self.node(None, span);
                self.stack.push(None);
            }
            Event::MappingStart(..) => {
                self.node(None, span);
                self.stack.push(Some(Keys {
                    seen: HashSet::new(),
                    expect_key: true,
                }));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use kubetrail_model::Level;

    use super::*;

    const HEAD: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";

    /// Loads `HEAD + body` and renders its diagnostics as `LINE:COL severity path`.
    fn check(body: &str, expect: &[&str]) -> Loaded {
        let loaded = load(&format!("{HEAD}{body}"));
        let got: Vec<String> = loaded
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {} {}",
                    d.line.unwrap_or(0),
                    d.column.unwrap_or(0),
                    d.severity,
                    d.path
                )
            })
            .collect();
        assert_eq!(got, expect, "{:#?}", loaded.diagnostics);
        loaded
    }

    #[test]
    fn misplaced_verbs_under_resources_is_dropped_with_a_warning() {
        let loaded = check(
            "rules:\n- level: None\n  resources:\n  - group: coordination.k8s.io\n    resources:\n    - \"leases\"\n    verbs: [\"watch\", \"get\", \"list\"]\n",
            &["9:5 warning rules[0].resources[0].verbs"],
        );
        let policy = loaded.policy.unwrap();
        assert!(policy.rules[0].verbs.is_empty());
        assert_eq!(policy.rules[0].line, 4);
        let d = &loaded.diagnostics[0];
        assert!(d.message.contains("every verb"), "{}", d.message);
        assert!(d.help.as_deref().unwrap().contains("column 3"), "{d:?}");
    }

    #[test]
    fn resource_names_at_rule_level_is_dropped() {
        let loaded = check(
            "rules:\n- level: Metadata\n  resourceNames: [leader]\n",
            &["5:3 warning rules[0].resourceNames"],
        );
        assert!(loaded.policy.is_some());
    }

    #[test]
    fn case_mistake_in_field_name_suggests_the_field() {
        let loaded = check(
            "rules:\n- Level: Metadata\n",
            &["4:3 warning rules[0].Level", "4:3 error rules[0].level"],
        );
        assert_eq!(loaded.diagnostics[0].help.as_deref(), Some("write `level`"));
        assert!(loaded.policy.is_none());
    }

    #[test]
    fn wrong_types_are_errors() {
        let loaded = check(
            "rules:\n- level: Metadata\n  verbs: get\n  omitManagedFields: maybe\n  namespaces: [1, no]\n",
            &[
                "5:10 error rules[0].verbs",
                "6:22 error rules[0].omitManagedFields",
                "7:16 error rules[0].namespaces[0]",
                "7:19 error rules[0].namespaces[1]",
            ],
        );
        assert!(loaded.policy.is_none());
    }

    #[test]
    fn invalid_values_are_located() {
        check(
            "omitStages: [Foo]\nrules:\n- level: metadata\n  nonResourceURLs: [logs]\n- level: None\n  resources:\n  - group: apps/v1\n",
            &[
                "3:14 error omitStages[0]",
                "5:10 error rules[0].level",
                "6:21 error rules[0].nonResourceURLs[0]",
                "9:12 error rules[1].resources.group",
            ],
        );
    }

    #[test]
    fn zero_rules_and_empty_file_are_errors() {
        check("", &["0:0 error rules"]);
        let empty = load("");
        assert!(empty.policy.is_none());
        assert_eq!(
            empty.diagnostics[0].message,
            "loaded illegal policy with 0 rules"
        );
        check("rules: []\n", &["3:1 error rules"]);
    }

    #[test]
    fn missing_or_old_api_version() {
        let l = load("kind: Policy\nrules:\n- level: None\n");
        assert!(
            l.diagnostics[0]
                .message
                .contains("unknown group version field")
        );
        let l = load("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: None\n");
        let d = &l.diagnostics[0];
        assert_eq!((d.line, d.column), (Some(1), Some(13)));
        assert!(d.message.contains("audit.k8s.io/v1`"), "{}", d.message);
        assert!(d.help.as_deref().unwrap().contains("audit.k8s.io/v1"));
    }

    #[test]
    fn duplicate_keys_warn_and_last_wins() {
        let loaded = check(
            "rules:\n- level: None\n  level: Metadata\n  verbs: [get]\n  verbs: [list]\n",
            &["5:3 warning ", "7:3 warning "],
        );
        assert!(loaded.diagnostics[1].message.contains("`verbs`"));
        assert_eq!(loaded.policy.unwrap().rules[0].level, Level::Metadata);
    }

    #[test]
    fn rules_of_the_wrong_type_is_one_error() {
        check("rules: {level: None}\n", &["3:8 error rules"]);
    }

    #[test]
    fn anchors_tags_and_yaml11_booleans() {
        let l = load(&format!(
            "---\n{HEAD}rules:\n- &r\n  level: None\n  verbs: [get]\n- *r\n- level: !!str Metadata\n  omitManagedFields: yes\n"
        ));
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        let p = l.policy.unwrap();
        assert_eq!(p.rules[1].verbs, ["get"]);
        assert_eq!(p.rules[2].omit_managed_fields, Some(true));
    }

    #[test]
    fn json_policy_loads() {
        let l = load(
            r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","omitStages":["RequestReceived"],"rules":[{"level":"Metadata","omitManagedFields":true}]}"#,
        );
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        let p = l.policy.unwrap();
        assert_eq!(p.rules[0].omit_managed_fields, Some(true));
        assert_eq!(p.rules[0].line, 1);
    }

    #[test]
    fn syntax_error_is_located() {
        let l = load("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: [\n");
        assert!(l.policy.is_none());
        assert!(l.diagnostics[0].message.starts_with("invalid YAML"));
        assert!(l.diagnostics[0].line.is_some());
    }

    /// Regression (found by `fuzz/` target `policy`): a non-ASCII last character in a nonResourceURLs entry
    /// panicked in validation (a `str` sliced inside a character).
    #[test]
    fn non_ascii_non_resource_url_does_not_panic() {
        let l = load(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [\"/café\", \"/a*é\"]\n",
        );
        assert!(l.policy.is_none());
        let errors: Vec<_> = l.errors().map(|d| d.path.clone()).collect();
        assert_eq!(
            errors,
            ["rules[0].nonResourceURLs[1]"],
            "{:?}",
            l.diagnostics
        );
        let l = load("rules:\n- nonResourceURLs:\n  - \u{ff}");
        assert!(l.policy.is_none());
    }
}
