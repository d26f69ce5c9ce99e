//! Loading: what loads, what is kept as data, and every refusal with file, line, column and reason.

use kubetrail_detect::{Config, Document, Engine, Level, RuleSet, parse_file};

const HEAD: &str = "title: T\nid: r1\nlogsource:\n  product: kubernetes\n  service: audit\n";

fn err(src: &str) -> String {
    parse_file("rules/x.yml", src).unwrap_err().to_string()
}

fn rule(detection: &str) -> String {
    format!("{HEAD}detection:\n{detection}")
}

#[test]
fn unknown_modifier() {
    assert_eq!(
        err(&rule("  sel:\n    verb|contans: get\n  condition: sel\n")),
        "rules/x.yml:8:5: unknown modifier `contans` in `verb|contans`; supported: contains, startswith, endswith, all, cased, re (with i, m, s), cidr, exists, gt, gte, lt, lte, fieldref"
    );
}

#[test]
fn windows_modifiers_are_refused_clearly() {
    assert_eq!(
        err(&rule(
            "  sel:\n    requestURI|windash: x\n  condition: sel\n"
        )),
        "rules/x.yml:8:5: modifier `windash` in `requestURI|windash` is not supported for Kubernetes audit events (it encodes Windows command lines and binary data); remove it"
    );
}

#[test]
fn unknown_selection_in_condition() {
    assert_eq!(
        err(&rule(
            "  sel:\n    verb: get\n  condition: sel and not filtr\n"
        )),
        "rules/x.yml:9:26: in `condition`: unknown selection `filtr`; the detection defines `sel`"
    );
    // Quoted: the column still points at the name.
    assert_eq!(
        err(&rule("  sel:\n    verb: get\n  condition: 'sel or nope'\n")),
        "rules/x.yml:9:22: in `condition`: unknown selection `nope`; the detection defines `sel`"
    );
}

#[test]
fn condition_syntax_error() {
    assert_eq!(
        err(&rule("  sel:\n    verb: get\n  condition: (sel or\n")),
        "rules/x.yml:9:21: in `condition`: unexpected end of condition: expected a selection name, `not`, `(` or `1 of`"
    );
}

#[test]
fn bad_yaml() {
    let e = err("title: T\nid: [unclosed\n");
    assert!(e.starts_with("rules/x.yml:3:1: invalid YAML:"), "{e}");
    let e = err(&rule(
        "  sel:\n    verb: get\n   bad: indent\n  condition: sel\n",
    ));
    assert!(e.starts_with("rules/x.yml:9:4: invalid YAML:"), "{e}");
}

#[test]
fn unknown_field() {
    assert_eq!(
        err(&rule("  sel:\n    Image: evil\n  condition: sel\n")),
        "rules/x.yml:8:5: unknown field `Image`: a field is a dotted path into the audit event starting with one of `kind`, `apiVersion`, `level`, `auditID`, `stage`, `requestURI`, `verb`, `user`, `impersonatedUser`, `sourceIPs`, `userAgent`, `objectRef`, `responseStatus`, `requestObject`, `responseObject`, `requestReceivedTimestamp`, `stageTimestamp`, `annotations`, `timestamp`, `metadata`, or a `kubetrail.` enrichment field"
    );
    let e = err(&rule(
        "  sel:\n    kubetrail.pod.root: true\n  condition: sel\n",
    ));
    assert!(e.starts_with("rules/x.yml:8:5: unknown enrichment field `kubetrail.pod.root`; known: `kubetrail.identity.class`"), "{e}");
}

#[test]
fn not_a_kubernetes_rule() {
    let e = err(
        "title: T\nid: r1\nlogsource:\n  product: windows\ndetection:\n  sel:\n    verb: x\n  condition: sel\n",
    );
    assert_eq!(
        e,
        "rules/x.yml:1:1: not a Kubernetes audit rule: `logsource` must have `product: kubernetes` and `service: audit` (found product `windows`, service none)"
    );
}

#[test]
fn values_and_shapes_are_checked() {
    let cases = [
        (
            "  sel:\n    verb|exists: yes please\n  condition: sel\n",
            "rules/x.yml:8:18: `verb|exists` needs `true` or `false`",
        ),
        (
            "  sel:\n    sourceIPs|cidr: 10.0.0.0/33\n  condition: sel\n",
            "rules/x.yml:8:21: `sourceIPs|cidr`: `10.0.0.0/33` is not a CIDR network (e.g. `10.0.0.0/8`, `fd00::/8`)",
        ),
        (
            "  sel:\n    responseStatus.code|gt: many\n  condition: sel\n",
            "rules/x.yml:8:29: `responseStatus.code|gt` needs a number, found `many`",
        ),
        (
            "  sel:\n    verb|re: '(unclosed'\n  condition: sel\n",
            "rules/x.yml:8:14: `verb|re`: invalid regular expression: regex parse error:     (unclosed     ^ error: unclosed group",
        ),
        (
            "  sel:\n    verb|contains|startswith: x\n  condition: sel\n",
            "rules/x.yml:8:5: `verb|contains|startswith`: only one of `contains`, `startswith`, `endswith` may be used",
        ),
        (
            "  sel:\n    verb|cidr|contains: x\n  condition: sel\n",
            "rules/x.yml:8:5: `verb|cidr|contains`: these modifiers cannot be combined",
        ),
        (
            "  sel:\n    verb: []\n  condition: sel\n",
            "rules/x.yml:8:11: `verb` has an empty list of values",
        ),
        (
            "  sel:\n    verb: get\n",
            "rules/x.yml:7:3: `detection` has no `condition`",
        ),
        (
            "  sel: {}\n  condition: sel\n",
            "rules/x.yml:7:8: a selection mapping must not be empty",
        ),
        (
            "  sel:\n    verb: get\n  condition: sel | count() > 5\n",
            "rules/x.yml:9:18: in `condition`: aggregations after `|` are not supported: write a correlation rule",
        ),
    ];
    for (det, want) in cases {
        assert_eq!(err(&rule(det)), want);
    }
}

#[test]
fn metadata_and_extension_keys_are_kept() {
    let src = format!(
        "{HEAD}description: d\nauthor: me\nreferences: [https://example.com]\ntags: [attack.execution, attack.t1609]\nlevel: high\nfalsepositives: debugging\nfields: [user.username]\nrunbook: |\n  1. check\nkubetrail:\n  pack: builtin\n  version: 2\ndetection:\n  sel:\n    verb: get\n  condition: sel\n"
    );
    let docs = parse_file("r.yml", &src).unwrap();
    let Document::Rule(r) = &docs[0] else {
        panic!()
    };
    let m = &r.meta;
    assert_eq!(
        (m.id.as_str(), m.title.as_str(), m.level),
        ("r1", "T", Level::High)
    );
    assert_eq!(m.falsepositives, ["debugging"]);
    assert_eq!(m.references, ["https://example.com"]);
    assert_eq!(m.attack_techniques().collect::<Vec<_>>(), ["T1609"]);
    assert_eq!(m.extra_str("runbook"), Some("1. check\n"));
    assert_eq!(m.extra["kubetrail"]["version"], 2);
    assert_eq!(m.logsource.product.as_deref(), Some("kubernetes"));
    assert_eq!((m.location.line, m.location.column), (1, 1));
}

#[test]
fn missing_id_and_bad_level() {
    let e = err(
        "title: T\nlevel: urgent\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel: {verb: get}\n  condition: sel\n",
    );
    assert_eq!(
        e,
        "rules/x.yml:1:1: the rule has no `id`; give it a stable one (a UUID, or `kt-...` for ours)\nrules/x.yml:2:8: unknown level `urgent`; use one of informational, low, medium, high, critical"
    );
}

#[test]
fn multi_document_files_and_duplicate_ids() {
    let two = format!(
        "{}---\n{}",
        rule("  sel: {verb: get}\n  condition: sel\n"),
        rule("  sel: {verb: list}\n  condition: sel\n").replace("id: r1", "id: r2")
    );
    let mut set = RuleSet::new();
    assert_eq!(set.add_file("a.yml", &two).unwrap(), 2);
    let e = set
        .add_file("b.yml", &rule("  sel: {verb: get}\n  condition: sel\n"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "b.yml:1:1: duplicate rule id `r1` (first in a.yml:1); every rule needs its own id"
    );
    assert_eq!(set.len(), 2);
}

#[test]
fn correlation_and_filter_references_must_resolve() {
    let mut set = RuleSet::new();
    set.add_file("a.yml", &rule("  sel: {verb: get}\n  condition: sel\n"))
        .unwrap();
    set.add_file(
        "c.yml",
        "title: C\nid: c1\ncorrelation:\n  type: event_count\n  rules: [r1, nope]\n  group-by: [user.username]\n  timespan: 5m\n  condition: {gte: 3}\n",
    )
    .unwrap();
    let e = Engine::new(&set, Config::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "c.yml:5:15: no loaded rule has the id or name `nope`"
    );
}

#[test]
fn correlation_errors() {
    let cases = [
        (
            "  type: event_count\n  rules: [r1]\n  timespan: 5m\n",
            "c.yml:4:3: `correlation` needs a `condition` such as `gte: 10`",
        ),
        (
            "  type: value_count\n  rules: [r1]\n  timespan: 5m\n  condition: {gte: 2}\n",
            "c.yml:4:3: a value_count correlation needs `condition: field:`, the field whose distinct values are counted",
        ),
        (
            "  type: temporal\n  rules: [r1]\n  timespan: 5m\n",
            "c.yml:4:3: a temporal correlation needs at least two rules",
        ),
        (
            "  type: event_count\n  rules: [r1]\n  timespan: soon\n  condition: {gte: 2}\n",
            "c.yml:6:13: `timespan` must be a duration such as `30s`, `5m`, `1h` or `1d`",
        ),
        (
            "  type: sometimes\n  rules: [r1]\n  timespan: 5m\n",
            "c.yml:4:9: unknown correlation `type`; use event_count, value_count, temporal or temporal_ordered",
        ),
        (
            "  type: event_count\n  rules: [r1]\n  group-by: [User]\n  timespan: 5m\n  condition: {gte: 2}\n",
            "c.yml:6:14: unknown field `User`",
        ),
    ];
    for (body, want) in cases {
        let e = parse_file("c.yml", &format!("title: C\nid: c1\ncorrelation:\n{body}"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "{e}\n  wanted {want}");
    }
}
