//! kube-apiserver's own audit-policy unit tests, as data (`tests/fixtures/policy-cases.yaml`): every case must
//! pass. Each policy is fed to the loader as JSON (valid YAML), so loading is exercised on every case too.

use std::borrow::Cow;
use std::collections::BTreeSet;

use kubetrail_model::{Attributes, Level, Stage};
use kubetrail_policy::{Severity, StageSet, load};
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{Map, Value, json};

/// Checks one case: `Err` says why it failed.
type Check = fn(&Value) -> Result<(), String>;

const FIXTURE: &str = include_str!("fixtures/policy-cases.yaml");

fn to_json(y: &Yaml<'_>) -> Value {
    match y {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => json!(b),
        Yaml::Value(Scalar::Integer(i)) => json!(i),
        Yaml::Value(Scalar::FloatingPoint(f)) => json!(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => json!(s),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::Value(Scalar::String(s)) => s.to_string(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect::<Map<_, _>>(),
        ),
        other => panic!("unexpected YAML node in the fixture: {other:?}"),
    }
}

fn fixture() -> Value {
    let docs = Yaml::load_from_str(FIXTURE).expect("fixture is YAML");
    to_json(&docs[0])
}

fn cases<'a>(f: &'a Value, section: &str) -> &'a [Value] {
    f[section]
        .as_array()
        .unwrap_or_else(|| panic!("no `{section}`"))
}

fn stages(v: &Value) -> StageSet {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| Stage::parse(s.as_str().unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Runs `check` over every case of `section`; returns the ids of the cases that failed, with the reason.
fn run(
    f: &Value,
    section: &str,
    check: impl Fn(&Value) -> Result<(), String>,
) -> (usize, Vec<String>) {
    let all = cases(f, section);
    let failed = all
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("{}: {e}", c["id"])))
        .collect();
    (all.len(), failed)
}

fn evaluation_case(c: &Value) -> Result<(), String> {
    let loaded = load(&c["policy"].to_string());
    let policy = loaded
        .policy
        .ok_or_else(|| format!("policy refused: {:?}", loaded.diagnostics))?;
    let r = &c["request"];
    let groups: Vec<Cow<'_, str>> = r["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| Cow::Borrowed(g.as_str().unwrap()))
        .collect();
    let a = Attributes {
        user: r["user"].as_str(),
        groups: &groups,
        verb: str_of(r, "verb"),
        namespace: str_of(r, "namespace"),
        api_group: str_of(r, "apiGroup"),
        resource: str_of(r, "resource"),
        subresource: str_of(r, "subresource"),
        name: str_of(r, "name"),
        path: str_of(r, "path"),
        is_resource_request: r["isResourceRequest"].as_bool().unwrap(),
    };
    let d = policy.evaluate(&a);
    let e = &c["expect"];
    let level = Level::parse(e["level"].as_str().unwrap()).unwrap();
    if d.level != level {
        return Err(format!("level {} != expected {level}", d.level));
    }
    if d.omit_stages != stages(&e["omitStages"]) {
        return Err(format!(
            "omitStages {} != expected {}",
            d.omit_stages,
            stages(&e["omitStages"])
        ));
    }
    if let Some(omf) = e["omitManagedFields"].as_bool()
        && d.omit_managed_fields != omf
    {
        return Err(format!(
            "omitManagedFields {} != expected {omf}",
            d.omit_managed_fields
        ));
    }
    if policy
        .rules
        .iter()
        .any(|r| r.matches(&a) != r.mismatch(&a).is_none())
    {
        return Err("matches and mismatch disagree".into());
    }
    Ok(())
}

/// The validator, reached through the loader (whose typed policy cannot hold an invalid level or stage). The
/// loader's own rule-count check is not the validator's: it is left out here, and checked to refuse.
fn validation_case(c: &Value) -> Result<(), String> {
    let mut doc = json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy"});
    for (k, v) in c["policy"].as_object().unwrap() {
        doc[k] = v.clone();
    }
    let loaded = load(&doc.to_string());
    let zero_rules =
        |d: &&kubetrail_policy::Diagnostic| d.message == "loaded illegal policy with 0 rules";
    let errors: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error && !zero_rules(d))
        .collect();
    let rules = c["policy"]["rules"].as_array().map_or(0, Vec::len);
    if rules == 0 && (loaded.policy.is_some() || !loaded.diagnostics.iter().any(|d| zero_rules(&d)))
    {
        return Err("a policy without rules must be refused by the loader".into());
    }
    if c["expect_valid"].as_bool().unwrap() {
        return match errors.is_empty() {
            true => Ok(()),
            false => Err(format!("expected valid, got {errors:?}")),
        };
    }
    let expected: BTreeSet<(&str, &str)> = c["port_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().split_once(": ").unwrap())
        .collect();
    let got: BTreeSet<&str> = errors.iter().map(|d| d.path.as_str()).collect();
    let want: BTreeSet<&str> = expected.iter().map(|(p, _)| *p).collect();
    if got != want {
        return Err(format!(
            "error paths {got:?} != expected {want:?}: {errors:?}"
        ));
    }
    for (path, wording) in &expected {
        if !errors
            .iter()
            .any(|d| d.path == *path && d.message.contains(wording))
        {
            return Err(format!("no error at `{path}` says `{wording}`: {errors:?}"));
        }
        if errors.iter().any(|d| d.line.is_none() || d.help.is_none()) {
            return Err(format!("every error needs a line and a help: {errors:?}"));
        }
    }
    Ok(())
}

fn loader_case(c: &Value) -> Result<(), String> {
    let loaded = load(c["input"].as_str().unwrap());
    let e = &c["expect"];
    let errors: Vec<_> = loaded.errors().collect();
    if !e["ok"].as_bool().unwrap() {
        if loaded.policy.is_some() || errors.is_empty() {
            return Err("expected the loader to refuse the policy".into());
        }
        if let Some(want) = e["error_contains"].as_str()
            && !errors.iter().any(|d| d.message.contains(want))
        {
            return Err(format!("no error contains `{want}`: {errors:?}"));
        }
        return Ok(());
    }
    let policy = loaded
        .policy
        .as_ref()
        .ok_or_else(|| format!("refused: {errors:?}"))?;
    if let Some(n) = e["rule_count"].as_u64()
        && policy.rules.len() as u64 != n
    {
        return Err(format!("{} rules, expected {n}", policy.rules.len()));
    }
    if c["id"] == "reader/TestParsePolicyWithUnknownField" {
        // The misplaced `verbs` is dropped: the rule silences every verb on leases.
        if !policy.rules[0].verbs.is_empty() {
            return Err("the misplaced verbs were not dropped".into());
        }
        let warned = loaded.diagnostics.iter().any(|d| {
            d.severity == Severity::Warning
                && d.path == "rules[0].resources[0].verbs"
                && d.line == Some(9)
                && d.message.contains("`verbs`")
        });
        if !warned {
            return Err(format!(
                "no warning for the misplaced verbs: {:?}",
                loaded.diagnostics
            ));
        }
    }
    Ok(())
}

fn union_case(c: &Value) -> Result<(), String> {
    let got = stages(&c["s1"]).union(stages(&c["s2"]));
    let want = stages(&c["expect"]);
    match got == want {
        true => Ok(()),
        false => Err(format!("{got} != expected {want}")),
    }
}

fn invert_case(c: &Value) -> Result<(), String> {
    let got = stages(&c["stages"]).invert();
    let want = stages(&c["expect"]);
    match got == want {
        true => Ok(()),
        false => Err(format!("{got} != expected {want}")),
    }
}

#[test]
fn every_conformance_case_passes() {
    let f = fixture();
    let sections: [(&str, Check, usize); 5] = [
        ("evaluation_cases", evaluation_case, 108),
        ("validation_cases", validation_case, 22),
        ("loader_cases", loader_case, 5),
        ("union_stages_cases", union_case, 7),
        ("invert_stages_cases", invert_case, 4),
    ];
    let mut total = 0;
    let mut failed = Vec::new();
    for (section, check, count) in sections {
        let (n, f) = run(&f, section, check);
        assert_eq!(n, count, "{section}: the fixture changed size");
        total += n;
        failed.extend(f);
    }
    for id in &failed {
        eprintln!("FAILED {id}");
    }
    eprintln!("{}/{total} conformance cases pass", total - failed.len());
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed",
        failed.len()
    );
}
