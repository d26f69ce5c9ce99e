//! `kubetrail rules list|show|test`: the detection rules loaded (built-in pack and rule files), one rule's
//! documentation and runbook, and the rules run against their fixtures.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use kubetrail_detect::{Document, Engine, RuleMeta, RuleSet};

use crate::Outcome;
use kubetrail_detect::watch::StreamRule;
use kubetrail_runtime::alerting::rules::{DetectionConfig, Sources};

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// The rules that would run: id, severity, kind, title, ATT&CK techniques, where defined.
    List(ListArgs),
    /// One rule's documentation: description, false positives, ATT&CK, and the runbook for an analyst.
    Show(ShowArgs),
    /// Run rules against their fixtures: each must alert on its positive events and stay silent on its
    /// negative ones. Without PATH, the built-in pack; with PATH, the rule files there, each with
    /// `NAME.positive.jsonl` and `NAME.negative.jsonl` beside `NAME.yml`.
    Test(TestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Sigma rule files or directories (repeatable), added to the built-in pack.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Leave the built-in pack out.
    #[arg(long)]
    pub no_builtin: bool,
}

impl SourceArgs {
    fn sources(&self) -> Sources {
        Sources {
            builtin: !self.no_builtin,
            paths: self.rules.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// `table` for people, `json` (one object per line) or `csv` (formulas defused) for machines.
    #[arg(long, value_enum, default_value_t = crate::output::RowFormat::Table)]
    pub format: crate::output::RowFormat,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The rule's id (or Sigma name).
    pub id: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Rule files or directories to test (default: the built-in pack).
    pub path: Option<PathBuf>,
}

pub fn run(cmd: RulesCommand) -> anyhow::Result<Outcome> {
    match cmd {
        RulesCommand::List(a) => list(a),
        RulesCommand::Show(a) => show(a),
        RulesCommand::Test(a) => test(a),
    }
}

fn kind(d: &Document) -> &'static str {
    match d {
        Document::Rule(_) => "rule",
        Document::Correlation(_) => "correlation",
        Document::Filter(_) => "filter",
    }
}

fn techniques(m: &RuleMeta) -> String {
    m.attack_techniques().collect::<Vec<_>>().join(",")
}

/// The stream rules of the built-in pack (`kubetrail_detect::watch`), when it is loaded.
fn stream_rules(source: &SourceArgs) -> anyhow::Result<Vec<StreamRule>> {
    if source.no_builtin {
        return Ok(Vec::new());
    }
    kubetrail_rules::stream()
        .iter()
        .map(|f| StreamRule::parse(&format!("builtin/stream/{}", f.name), f.yaml))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("the stream rules do not load: {e}"))
}

fn list(args: ListArgs) -> anyhow::Result<Outcome> {
    let rules = kubetrail_runtime::alerting::rules::load_rules(&args.source.sources())?;
    let stream = stream_rules(&args.source)?;
    let stream_attack = |r: &StreamRule| -> Vec<String> {
        r.tags
            .iter()
            .filter_map(|t| {
                t.strip_prefix("attack.t")
                    .map(|t| format!("T{}", t.to_ascii_uppercase()))
            })
            .collect()
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        crate::output::RowFormat::Json => {
            for r in &stream {
                let v = serde_json::json!({
                    "id": r.id,
                    "title": r.title,
                    "severity": r.level.as_str(),
                    "kind": "stream",
                    "attack": stream_attack(r),
                    "tags": r.tags,
                    "file": format!("builtin/stream/{}.yml", r.id),
                    "line": 1,
                });
                serde_json::to_writer(&mut out, &v)?;
                writeln!(out)?;
            }
            for d in rules.documents() {
                let m = d.meta();
                let v = serde_json::json!({
                    "id": m.id,
                    "title": m.title,
                    "severity": m.level.as_str(),
                    "kind": kind(d),
                    "attack": m.attack_techniques().collect::<Vec<_>>(),
                    "tags": m.tags,
                    "file": m.location.file,
                    "line": m.location.line,
                });
                serde_json::to_writer(&mut out, &v)?;
                writeln!(out)?;
            }
        }
        crate::output::RowFormat::Table | crate::output::RowFormat::Csv => {
            let names: Vec<String> = ["ID", "SEVERITY", "KIND", "TITLE", "ATT&CK", "DEFINED IN"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let rows: Vec<Vec<String>> = stream
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.level.as_str().to_string(),
                        "stream".to_string(),
                        r.title.clone(),
                        stream_attack(r).join(","),
                        format!("builtin/stream/{}.yml:1", r.id),
                    ]
                })
                .chain(rules.documents().iter().map(|d| {
                    let m = d.meta();
                    vec![
                        m.id.clone(),
                        m.level.as_str().to_string(),
                        kind(d).to_string(),
                        m.title.clone(),
                        techniques(m),
                        format!("{}:{}", m.location.file, m.location.line),
                    ]
                }))
                .collect();
            if args.format == crate::output::RowFormat::Csv {
                crate::cmd::query::write_csv(&mut out, &names, &rows)?;
            } else {
                crate::cmd::query::write_table(&mut out, &names, &rows)?;
                writeln!(out, "{} rules", rows.len())?;
            }
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

fn show(args: ShowArgs) -> anyhow::Result<Outcome> {
    let rules = kubetrail_runtime::alerting::rules::load_rules(&args.source.sources())?;
    if let Some(r) = stream_rules(&args.source)?
        .into_iter()
        .find(|r| r.id == args.id)
    {
        let mut s = format!("{}  {}\n", r.id, r.title);
        s += &format!(
            "severity: {}   kind: stream (raised from the stream as a whole, not from one event)\n",
            r.level.as_str()
        );
        if !r.tags.is_empty() {
            s += &format!("tags: {}\n", r.tags.join(", "));
        }
        if let Some(desc) = &r.description {
            s += &format!("\n{}\n", desc.trim_end());
        }
        if !r.falsepositives.is_empty() {
            s += "\nfalse positives:\n";
            for f in &r.falsepositives {
                s += &format!("  - {f}\n");
            }
        }
        if let Some(rb) = &r.runbook {
            s += &format!("\nrunbook:\n{}\n", indent(rb.trim_end()));
        }
        print!("{s}");
        return Ok(Outcome::Ok);
    }
    let Some(d) = rules.get(&args.id) else {
        anyhow::bail!(
            "no rule `{}`: `kubetrail rules list` shows the ids",
            args.id
        );
    };
    let m = d.meta();
    let mut s = format!("{}  {}\n", m.id, m.title);
    s += &format!(
        "severity: {}   kind: {}   status: {}\n",
        m.level.as_str(),
        kind(d),
        m.status.as_deref().unwrap_or("-")
    );
    s += &format!("defined in: {}:{}\n", m.location.file, m.location.line);
    let attack = techniques(m);
    if !attack.is_empty() {
        s += &format!("ATT&CK: {attack}\n");
    }
    if !m.tags.is_empty() {
        s += &format!("tags: {}\n", m.tags.join(", "));
    }
    if let Some(desc) = &m.description {
        s += &format!("\n{}\n", desc.trim_end());
    }
    if !m.falsepositives.is_empty() {
        s += "\nfalse positives:\n";
        for f in &m.falsepositives {
            s += &format!("  - {f}\n");
        }
    }
    match m.extra_str("runbook") {
        Some(r) => s += &format!("\nrunbook:\n{}\n", indent(r.trim_end())),
        None => s += "\nrunbook: none written for this rule\n",
    }
    if !m.references.is_empty() {
        s += "\nreferences:\n";
        for r in &m.references {
            s += &format!("  {r}\n");
        }
    }
    if let Some(a) = &m.author {
        s += &format!("author: {a}\n");
    }
    print!("{s}");
    Ok(Outcome::Ok)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("  {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rule file's (or the built-in pack's) rules and their fixtures.
struct Case {
    /// The rule ids the fixtures are for.
    ids: Vec<String>,
    name: String,
    positive: Option<String>,
    negative: Option<String>,
}

/// The rules that match or alert on `events` (JSON lines), run on a fresh engine.
fn fired(rules: &RuleSet, events: &str, what: &str) -> anyhow::Result<Vec<String>> {
    let mut engine = Engine::new(rules, DetectionConfig::default().engine_config())
        .map_err(|e| anyhow::anyhow!("the rules cannot run together: {e}"))?;
    let mut alerts = Vec::new();
    let mut matched = Vec::new();
    for (i, line) in events.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e| anyhow::anyhow!("{what}:{}: {e}", i + 1);
        // A rule a correlation uses with `generate: false` matches without alerting of its own.
        matched.extend(
            engine
                .matching_rules(line)
                .map_err(at)?
                .into_iter()
                .map(|m| m.id.clone()),
        );
        engine.process(line, &mut alerts).map_err(at)?;
    }
    engine.flush(&mut alerts);
    let mut ids: Vec<String> = alerts.into_iter().map(|a| a.rule.id).collect();
    ids.extend(matched);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn test(args: TestArgs) -> anyhow::Result<Outcome> {
    let (rules, cases) = match &args.path {
        None => {
            let rules = kubetrail_runtime::alerting::rules::load_rules(&Sources {
                builtin: true,
                paths: Vec::new(),
            })?;
            let cases = rules
                .documents()
                .iter()
                .filter(|d| !matches!(d, Document::Filter(_)))
                .map(|d| {
                    let id = d.meta().id.clone();
                    let (positive, negative) = match kubetrail_rules::fixtures(&id) {
                        Some((p, n)) => (Some(p.to_string()), Some(n.to_string())),
                        None => (None, None),
                    };
                    Case {
                        ids: vec![id.clone()],
                        name: id,
                        positive,
                        negative,
                    }
                })
                .collect();
            (rules, cases)
        }
        Some(path) => user_cases(path)?,
    };
    let mut failures = 0;
    let mut out = std::io::stdout().lock();
    for case in &cases {
        let mut problems = Vec::new();
        match &case.positive {
            Some(events) => {
                let got = fired(&rules, events, &format!("{}.positive", case.name))?;
                for id in &case.ids {
                    if !got.contains(id) {
                        problems.push(format!("`{id}` did not alert on its positive events"));
                    }
                }
            }
            None => problems.push("no positive fixture".into()),
        }
        match &case.negative {
            Some(events) => {
                let got = fired(&rules, events, &format!("{}.negative", case.name))?;
                for id in &case.ids {
                    if got.contains(id) {
                        problems.push(format!("`{id}` alerted on its negative events"));
                    }
                }
            }
            None => problems.push("no negative fixture".into()),
        }
        if problems.is_empty() {
            writeln!(out, "ok    {}", case.name)?;
        } else {
            failures += 1;
            writeln!(out, "FAIL  {}: {}", case.name, problems.join("; "))?;
        }
    }
    writeln!(
        out,
        "{} tested, {} passed, {failures} failed",
        cases.len(),
        cases.len() - failures
    )?;
    Ok(if failures == 0 {
        Outcome::Ok
    } else {
        Outcome::Findings
    })
}

/// The rule files under `path`, each a case with the fixtures beside it.
fn user_cases(path: &Path) -> anyhow::Result<(RuleSet, Vec<Case>)> {
    let rules = kubetrail_runtime::alerting::rules::load_rules(&Sources {
        builtin: false,
        paths: vec![path.to_path_buf()],
    })?;
    let mut files: Vec<String> = rules
        .documents()
        .iter()
        .map(|d| d.meta().location.file.clone())
        .collect();
    files.sort();
    files.dedup();
    let mut cases = Vec::new();
    for file in files {
        let ids: Vec<String> = rules
            .documents()
            .iter()
            .filter(|d| d.meta().location.file == file && !matches!(d, Document::Filter(_)))
            .map(|d| d.meta().id.clone())
            .collect();
        let stem = Path::new(&file).with_extension("");
        let read = |suffix: &str| -> anyhow::Result<Option<String>> {
            let p = PathBuf::from(format!("{}.{suffix}.jsonl", stem.display()));
            if !p.exists() {
                return Ok(None);
            }
            std::fs::read_to_string(&p)
                .map(Some)
                .with_context(|| format!("failed to read `{}`", p.display()))
        };
        cases.push(Case {
            ids,
            name: file.clone(),
            positive: read("positive")?,
            negative: read("negative")?,
        });
    }
    Ok((rules, cases))
}
