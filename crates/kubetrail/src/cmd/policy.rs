//! `kubetrail policy ...`: check, lint, simulate, generate, explain, observed.
//!
//! One `Args` struct and one `fn` per subcommand; [`run`] only dispatches. Shared here: reading a policy file
//! and printing its diagnostics.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kubetrail_model::Event;
use kubetrail_policy::{Diagnostic, Explanation, Loaded, Policy, Severity};

use crate::Outcome;
use crate::output::Format;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check that kube-apiserver would start with an audit policy file.
    ///
    /// Loads POLICY exactly as kube-apiserver's `--audit-policy-file` does and prints every finding as
    /// `FILE:LINE:COL: SEVERITY: PATH: MESSAGE`, followed by `help:` saying what to change. Unknown and
    /// misplaced fields (a `verbs:` indented under `resources:`, say) are warnings: kube-apiserver drops them
    /// and starts, with a rule that matches more than it reads as. Exit 0 when kube-apiserver would start
    /// (warnings included), 1 when it would refuse, 2 when POLICY cannot be read.
    #[command(
        after_help = "Examples:\n  kubetrail policy check /etc/kubernetes/audit-policy.yaml\n  kubetrail policy check --format json policy.yaml | jq -r .message"
    )]
    Check(CheckArgs),
    /// Show which rule of a policy decides an event's audit level, and why the earlier rules do not match.
    ///
    /// Evaluates the request of one audit event against POLICY with kube-apiserver's semantics (first
    /// matching rule wins; no match means level None) and prints the matching rule (index, line, level,
    /// omitStages, whether each stage is written), then each earlier rule with why it did not match.
    #[command(
        after_help = "Examples:\n  kubetrail policy explain policy.yaml --event @event.json\n  kubetrail policy explain policy.yaml --event '{\"level\":\"Metadata\",\"auditID\":\"1\",\"stage\":\"ResponseComplete\",\"verb\":\"get\",\"requestURI\":\"/healthz\",\"user\":{\"username\":\"alice\"}}'"
    )]
    Explain(ExplainArgs),
    /// Find what a policy would leak, blind or waste, each finding with its rule, line and a fix.
    ///
    /// Errors: the policy is invalid; secrets, configmaps, token requests or token reviews logged with their
    /// values (RequestResponse, or Request where the request body carries them); fields kube-apiserver
    /// silently drops (a `verbs:` mis-indented under `resources:` silences every verb); high-value requests
    /// (secret reads, RBAC changes, pod creates, exec/attach/port-forward, nodes/proxy, token requests,
    /// admission webhooks, CSRs) that fall through to level None. Warnings: pod creates at Metadata (the spec
    /// privileged-pod detection needs is not recorded), controller watch/list loops or health probes not
    /// silenced, RequestReceived or managedFields kept, no heartbeat audited (every lease renewal, the
    /// kube-apiservers' identity leases included, at level None: `kt-audit-silence` could not tell a quiet
    /// cluster from a cut audit trail). Exit 1 if any error.
    #[command(
        after_help = "Examples:\n  kubetrail policy lint /etc/kubernetes/audit-policy.yaml\n  kubetrail policy lint --format json policy.yaml | jq -r 'select(.severity==\"error\") | .fix'"
    )]
    Lint(LintArgs),
    /// Replay recorded audit events through a policy: what it keeps, what it costs, what is noise.
    ///
    /// Reads audit events (JSON lines, arrays, EventLists, EKS/GKE/AKS exports; plain or gzip; stdin when no
    /// FILE or `-`) and reports events and bytes in and kept, volume per rule, the noisy groups (user,
    /// user+verb, user+verb+resource, userGroups) over 10% of the kept events with the None rule that would
    /// silence each, and GB/day extrapolated from the input's time span. Bytes kept are estimated from the
    /// recorded events: a lower level drops the bodies; a higher level cannot add bodies never recorded.
    #[command(
        after_help = "Examples:\n  kubetrail policy simulate --policy audit-policy.yaml /var/log/kubernetes/audit/audit.log\n  kubetrail gen --count 100000 | kubetrail policy simulate --policy new.yaml --against current.yaml\n  kubetrail policy simulate --policy p.yaml --per-event --format json events.jsonl"
    )]
    Simulate(SimulateArgs),
    /// Print a recommended tiered audit policy, commented rule by rule.
    ///
    /// None for the control plane's watch/list loops, kubelet heartbeats and health probes; Metadata for
    /// secrets, configmaps and tokens (never their values); Request for RBAC changes, pod and workload writes,
    /// admission webhooks and CSRs; Metadata for everything else. RequestReceived and managedFields omitted.
    /// The output passes `policy check` and `policy lint` cleanly.
    #[command(
        after_help = "Examples:\n  kubetrail policy generate > /etc/kubernetes/audit-policy.yaml\n  kubetrail policy generate --production-namespace prod --production-namespace payments --noisy-user system:serviceaccount:argocd:argocd-application-controller"
    )]
    Generate(GenerateArgs),
    /// The audit policy a cluster's kube-apiserver actually applied, read back from the stored events.
    ///
    /// Groups the events of the range by cluster, identity class (the control plane's users, nodes, service
    /// accounts, anonymous requests, everyone else), API group, resource and subresource (or URL) and verb,
    /// with every level and stage recorded, and prints the AuditPolicy that reproduces them: the level
    /// recorded (the lowest, with a comment, when there were several), the stages never recorded omitted.
    /// What was never observed is unknown, and the policy says so. With --against POLICY, prints where
    /// POLICY disagrees instead: the level it gives each group of requests (their namespace, a sample
    /// identity) against the level recorded and since when, and the stages it omits that were recorded or
    /// keeps that never were. Exit 1 when --against finds a difference, 0 otherwise.
    #[command(
        after_help = "Formats: yaml (default) prints the policy, or with --against the differences as text, like \
                      table; table prints the groups observed (or the differences); json prints one object per \
                      group (or per difference) per line.\n\nExamples:\n  \
                      kubetrail policy observed --since 7d --cluster prod > observed-policy.yaml\n  \
                      kubetrail policy observed --since 30d --cluster prod --against /etc/kubernetes/audit-policy.yaml\n  \
                      kubetrail policy observed --since 2026-11-01T00:00:00Z --until 2026-11-02T00:00:00Z --format table"
    )]
    Observed(ObservedArgs),
}

pub fn run(c: PolicyCommand) -> anyhow::Result<Outcome> {
    match c {
        PolicyCommand::Check(args) => check(args),
        PolicyCommand::Explain(args) => explain(args),
        PolicyCommand::Lint(args) => lint(args),
        PolicyCommand::Simulate(args) => simulate(args),
        PolicyCommand::Generate(args) => generate(args),
        PolicyCommand::Observed(args) => observed(args),
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The audit policy file (YAML or JSON), as passed to kube-apiserver's --audit-policy-file; `-` for stdin.
    pub policy: PathBuf,
    /// text: `FILE:LINE:COL: error: ...` lines; json: one object per diagnostic per line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let loaded = read_policy(&args.policy)?;
    print_diagnostics(&args.policy, &loaded.diagnostics, args.format)?;
    let errors = loaded.errors().count();
    let warnings = count(&loaded.diagnostics, Severity::Warning);
    if args.format == Format::Table {
        let file = args.policy.display();
        if loaded.policy.is_some() {
            eprintln!(
                "{file}: ok: kube-apiserver would start with this policy ({warnings} warning{})",
                plural(warnings)
            );
        } else {
            eprintln!(
                "{file}: kube-apiserver would refuse to start with this policy ({errors} error{}, {warnings} warning{})",
                plural(errors),
                plural(warnings)
            );
        }
    }
    Ok(if loaded.policy.is_some() {
        Outcome::Ok
    } else {
        Outcome::Findings
    })
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The audit policy file (YAML or JSON).
    pub policy: PathBuf,
    /// One audit event: its JSON text, or `@PATH` to read it from a file.
    #[arg(long, value_name = "JSON|@PATH")]
    pub event: String,
    /// text for people; json: one object with the decision, the matching rule and the skipped rules.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

fn explain(args: ExplainArgs) -> anyhow::Result<Outcome> {
    let policy = read_valid_policy(&args.policy)?;
    let text = match args.event.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("failed to read event file `{path}`"))?,
        None => args.event.clone(),
    };
    let event = Event::parse(text.trim()).context("failed to parse --event as an audit event")?;
    let ex = kubetrail_policy::explain(&policy, &event.attributes());
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&ex)?;
            v["file"] = args.policy.display().to_string().into();
            v["auditID"] = event.audit_id.as_ref().into();
            println!("{v}");
        }
        Format::Table => print!("{}", explain_text(&args.policy, &policy, &ex)),
    }
    Ok(Outcome::Ok)
}

fn explain_text(file: &Path, policy: &Policy, ex: &Explanation) -> String {
    let file = file.display();
    let d = &ex.decision;
    let mut out = String::new();
    match &ex.matched {
        Some(m) => {
            let _ = writeln!(
                out,
                "rule {} ({file}:{}) matches: level {}",
                m.index, m.line, m.level
            );
        }
        None => {
            let _ = writeln!(
                out,
                "no rule matches: level None (kube-apiserver writes no event for this request)"
            );
        }
    }
    let _ = writeln!(out, "  omitStages: {}", d.omit_stages);
    if !policy.omit_stages.is_empty() {
        let _ = writeln!(out, "    (includes the policy's {})", policy.omit_stages);
    }
    let _ = writeln!(out, "  omitManagedFields: {}", d.omit_managed_fields);
    for s in &ex.stages {
        let _ = writeln!(
            out,
            "  {:<17} {}",
            s.stage.as_str(),
            if s.kept { "kept" } else { "omitted" }
        );
    }
    if !ex.skipped.is_empty() {
        let _ = writeln!(
            out,
            "{}:",
            if ex.matched.is_some() {
                "earlier rules"
            } else {
                "rules"
            }
        );
        for s in &ex.skipped {
            let _ = writeln!(
                out,
                "  rule {} ({file}:{}, level {}): {}",
                s.rule.index, s.rule.line, s.rule.level, s.why
            );
        }
    }
    out
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The audit policy file (YAML or JSON); `-` for stdin.
    pub policy: PathBuf,
    /// text: `FILE:LINE: SEVERITY[CODE]: MESSAGE` and `fix:`; json: one object per finding per line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also report the detection rules the policy blinds: the built-in pack with `--rules` alone, or the
    /// Sigma rule files under PATH (a rule that never sees its requests is an error; one that sees them
    /// below the level it reads, such as a pod-spec rule at Metadata, a warning).
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub rules: Option<Option<PathBuf>>,
}

/// The detection rules' needs, for `policy lint --rules`.
fn rule_needs(path: Option<&PathBuf>) -> anyhow::Result<Vec<kubetrail_policy::RuleNeeds>> {
    let sources = kubetrail_runtime::alerting::rules::Sources {
        builtin: path.is_none(),
        paths: path.into_iter().cloned().collect(),
    };
    let rules = kubetrail_runtime::alerting::rules::load_rules(&sources)?;
    let list = |s: Option<std::collections::BTreeSet<String>>| s.map(|s| s.into_iter().collect());
    Ok(rules
        .rules()
        .map(|r| {
            let n = r.needs();
            kubetrail_policy::RuleNeeds {
                id: r.meta.id.clone(),
                title: r.meta.title.clone(),
                resources: list(n.resources),
                subresources: list(n.subresources),
                verbs: list(n.verbs),
                level: match n.body {
                    kubetrail_detect::BodyNeed::Metadata => kubetrail_model::Level::Metadata,
                    kubetrail_detect::BodyNeed::Request => kubetrail_model::Level::Request,
                    kubetrail_detect::BodyNeed::Response => kubetrail_model::Level::RequestResponse,
                },
            }
        })
        .collect())
}

fn lint(args: LintArgs) -> anyhow::Result<Outcome> {
    use std::io::Write as _;
    let loaded = read_policy(&args.policy)?;
    let mut findings = kubetrail_policy::lint(&loaded);
    if let Some(path) = &args.rules
        && let Some(policy) = &loaded.policy
    {
        let needs = rule_needs(path.as_ref())?;
        findings.extend(kubetrail_policy::coverage(policy, &needs));
        let rank = |s: Severity| match s {
            Severity::Error => 0,
            Severity::Warning => 1,
            Severity::Info => 2,
        };
        findings.sort_by_key(|f| (rank(f.severity), f.line.unwrap_or(0)));
    }
    let file = args.policy.display().to_string();
    let mut out = std::io::stdout().lock();
    for f in &findings {
        match args.format {
            Format::Json => {
                let mut v = serde_json::to_value(f)?;
                v["file"] = file.clone().into();
                writeln!(out, "{v}")?;
            }
            Format::Table => {
                let at = f
                    .line
                    .map_or_else(|| file.clone(), |l| format!("{file}:{l}"));
                let rule = f.rule.map(|r| format!(" (rule {r})")).unwrap_or_default();
                writeln!(out, "{at}: {}[{}]{rule}: {}", f.severity, f.code, f.message)?;
                writeln!(out, "  fix: {}", f.fix)?;
            }
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if args.format == Format::Table {
        let warnings = findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        eprintln!(
            "{file}: {errors} error{}, {warnings} warning{}",
            plural(errors),
            plural(warnings)
        );
    }
    Ok(if errors > 0 {
        Outcome::Findings
    } else {
        Outcome::Ok
    })
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The policy to simulate.
    #[arg(long)]
    pub policy: PathBuf,
    /// A second policy to compare with: which events change level, and the volume difference.
    #[arg(long, value_name = "OTHER_POLICY")]
    pub against: Option<PathBuf>,
    /// With `--format json`, one row per input event, in input order:
    /// `{"auditID","stage","level","omitStages","omitManagedFields","rule","kept"}`.
    #[arg(long)]
    pub per_event: bool,
    /// text: a report for people; json: one object with the whole report (or the per-event rows).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Audit event files (plain or .gz); `-` or none reads stdin.
    pub files: Vec<PathBuf>,
}

fn simulate(args: SimulateArgs) -> anyhow::Result<Outcome> {
    use std::io::Write as _;
    let policy = read_valid_policy(&args.policy)?;
    let against = args.against.as_deref().map(read_valid_policy).transpose()?;
    let files = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    let mut sim = kubetrail_policy::Simulator::new(&policy, against.as_ref());
    let progress = crate::progress::bytes_bar(kubetrail_runtime::input::total_size(&files));
    let per_event = args.per_event && args.format == Format::Json;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let stats = kubetrail_runtime::input::for_each_event(
        &files,
        &mut |bytes| progress.set_position(bytes),
        &mut |record, event| {
            let d = sim.observe(event, record.json.len() as u64);
            if per_event {
                serde_json::to_writer(&mut out, &kubetrail_policy::EventRow::new(event, &d))?;
                out.write_all(b"\n")?;
            }
            Ok(())
        },
    )?;
    progress.finish_and_clear();
    kubetrail_runtime::input::report_skipped(&stats);
    let report = sim.report();
    if !per_event {
        match args.format {
            Format::Json => {
                serde_json::to_writer(&mut out, &report)?;
                out.write_all(b"\n")?;
            }
            Format::Table => out.write_all(crate::report::simulation(&report).as_bytes())?,
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A namespace treated as production: every write there is kept with its request body (repeatable).
    #[arg(long = "production-namespace", value_name = "NAMESPACE")]
    pub production_namespaces: Vec<String>,
    /// An extra identity whose read loops (get, list, watch) are noise, e.g. an operator (repeatable).
    #[arg(long = "noisy-user", value_name = "USER")]
    pub noisy_users: Vec<String>,
    /// Drop the request bodies of pod and workload writes (smaller logs; privileged-pod, hostPath and
    /// image detection can no longer see the spec).
    #[arg(long)]
    pub no_pod_bodies: bool,
}

fn generate(args: GenerateArgs) -> anyhow::Result<Outcome> {
    let yaml = kubetrail_policy::generate(&kubetrail_policy::GenerateOptions {
        production_namespaces: args.production_namespaces,
        noisy_users: args.noisy_users,
        pod_bodies: !args.no_pod_bodies,
    });
    print!("{yaml}");
    Ok(Outcome::Ok)
}

/// `policy observed --format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ObservedFormat {
    /// The policy (with --against, the differences as text).
    #[default]
    Yaml,
    /// The groups observed as a table (with --against, the differences as text).
    #[value(alias = "text")]
    Table,
    /// One object per group (with --against, per difference) per line.
    Json,
}

#[derive(Debug, Args)]
#[command(mut_arg("since", |a| a.default_value("7d")))]
pub struct ObservedArgs {
    #[command(flatten)]
    pub scope: crate::cmd::query::ScopeArgs,
    /// Compare with this policy file: print only where it disagrees with what was recorded (exit 1 if
    /// anywhere).
    #[arg(long, value_name = "POLICY")]
    pub against: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ObservedFormat::Yaml)]
    pub format: ObservedFormat,
}

fn observed(args: ObservedArgs) -> anyhow::Result<Outcome> {
    use kubetrail_policy::observed::{self as obs, Observed};
    use std::io::Write as _;
    let against = args.against.as_deref().map(read_valid_policy).transpose()?;
    let session = crate::cmd::query::Session::open(&args.scope)?;
    let bar =
        crate::cmd::query::spinner(&format!("reading what was recorded ({})", session.reading));
    // Usernames a rule can tell apart are read one by one (the control plane's for the classes, and every
    // one POLICY names); any other username decides nothing, so the query lets one stand for its peers.
    let mut named: std::collections::BTreeSet<&str> =
        obs::CONTROL_PLANE_USERS.into_iter().collect();
    for rule in against.iter().flat_map(|p| &p.rules) {
        named.extend(rule.users.iter().map(String::as_str));
    }
    let named: Vec<&str> = named.into_iter().collect();
    let found = session.rt.block_on(kubetrail_engine::observed::observed(
        &session.engine,
        &named,
        kubetrail_engine::observed::MAX_ROWS,
    ));
    bar.finish_and_clear();
    let found = found.context("failed to read the stored events")?;
    if found.truncated {
        eprintln!(
            "note: the range holds more than {} kinds of requests: the least frequent were left out; narrow it \
             (--since, --until, --cluster) to see them all",
            crate::report::thousands(found.rows.len() as u64)
        );
    }
    let mut unknown = 0u64;
    let rows: Vec<obs::ObservedRow> = found
        .rows
        .into_iter()
        .filter_map(|r| {
            let row = observed_row(r);
            if row.is_none() {
                unknown += 1;
            }
            row
        })
        .collect();
    if unknown > 0 {
        eprintln!(
            "note: {unknown} kinds of requests with a level or stage kube-apiserver does not write were left out"
        );
    }
    let observed = Observed::from_rows(&rows);
    let clusters: Vec<&str> = observed.clusters().collect();
    let Some(seen) = observed.seen(None) else {
        let cluster = args
            .scope
            .cluster
            .as_deref()
            .map(|c| format!(" of cluster `{c}`"))
            .unwrap_or_default();
        bail!(
            "no event{cluster} is stored from {} to {}: nothing to read a policy from; widen --since, or check \
             --cluster and --data",
            args.scope
                .since
                .map_or("the first event".to_string(), |t| format!("{t:.0}")),
            args.scope
                .until
                .map_or("now".to_string(), |t| format!("{t:.0}")),
        );
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let (Some(policy), Some(file)) = (&against, &args.against) {
        let differences = obs::diff(&observed, policy);
        let name = file.display().to_string();
        for d in &differences {
            let message = d.describe(&name, clusters.len() > 1);
            match args.format {
                ObservedFormat::Json => {
                    let mut v = serde_json::to_value(d)?;
                    v["message"] = message.into();
                    writeln!(out, "{v}")?;
                }
                ObservedFormat::Yaml | ObservedFormat::Table => writeln!(out, "{message}")?,
            }
        }
        out.flush()?;
        if args.format != ObservedFormat::Json {
            eprintln!(
                "{name}: {} with what was recorded ({} event{} from {} to {})",
                match differences.len() {
                    0 => "no difference".to_string(),
                    1 => "1 difference".to_string(),
                    n => format!("{n} differences"),
                },
                crate::report::thousands(seen.events),
                plural(seen.events as usize),
                seen.first,
                seen.last
            );
        }
        if differences.is_empty() && found.truncated {
            bail!(
                "no difference among the {} most frequent kinds of requests, but the range holds more: the \
                 comparison is incomplete; narrow it (--since, --until, --cluster)",
                crate::report::thousands(kubetrail_engine::observed::MAX_ROWS as u64)
            );
        }
        return Ok(if differences.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Findings
        });
    }
    match args.format {
        ObservedFormat::Yaml => {
            let [cluster] = clusters.as_slice() else {
                bail!(
                    "events of {} clusters are stored ({}): an audit policy is one cluster's; pass --cluster NAME",
                    clusters.len(),
                    clusters.join(", ")
                );
            };
            let yaml = obs::render(
                &observed,
                &obs::RenderOptions {
                    cluster,
                    since: args.scope.since,
                    until: args.scope.until,
                    truncated: found.truncated,
                },
            );
            out.write_all(yaml.as_bytes())?;
        }
        ObservedFormat::Json => {
            for g in observed.summaries() {
                // Text first: an error writing it stays an io::Error (a closed pipe is not reported).
                writeln!(out, "{}", serde_json::to_string(&g)?)?;
            }
        }
        ObservedFormat::Table => {
            let names: Vec<String> = [
                "CLUSTER",
                "CLASS",
                "RESOURCE",
                "VERB",
                "LEVEL",
                "STAGES",
                "NAMESPACES",
                "EVENTS",
                "FIRST",
                "LAST",
            ]
            .map(String::from)
            .to_vec();
            let rows: Vec<Vec<String>> = observed
                .summaries()
                .into_iter()
                .map(|g| {
                    let levels = if g.levels.len() == 1 {
                        g.levels.keys().map(|l| l.to_string()).collect()
                    } else {
                        g.levels
                            .iter()
                            .map(|(l, s)| format!("{l} ({})", crate::report::thousands(s.events)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    vec![
                        g.cluster,
                        g.class.to_string(),
                        g.target.to_string(),
                        g.verb,
                        levels,
                        g.stages
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        g.namespaces.to_string(),
                        crate::report::thousands(g.events),
                        g.first.to_string(),
                        g.last.to_string(),
                    ]
                })
                .collect();
            crate::cmd::query::write_table(&mut out, &names, &rows)?;
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

/// The engine's row as the policy crate's; `None` for a level or stage kube-apiserver does not write.
fn observed_row(
    r: kubetrail_engine::observed::ObservedRow,
) -> Option<kubetrail_policy::observed::ObservedRow> {
    let time = |us: i64| jiff::Timestamp::from_microsecond(us).ok();
    Some(kubetrail_policy::observed::ObservedRow {
        level: kubetrail_model::Level::parse(&r.level)?,
        stage: kubetrail_model::Stage::parse(&r.stage)?,
        first: time(r.first_us)?,
        last: time(r.last_us)?,
        cluster: r.cluster,
        api_group: r.api_group,
        resource: r.resource,
        subresource: r.subresource,
        path: r.path,
        verb: r.verb,
        namespace: r.namespace,
        user: r.user,
        groups: r.groups,
        count: r.count,
    })
}

/// Reads and loads a policy file; an unreadable file is an error (exit 2) naming the path.
/// `-` reads the policy from stdin (`kubetrail policy generate | kubetrail policy check -`).
fn read_policy(path: &Path) -> anyhow::Result<Loaded> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("failed to read the policy from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("failed to read policy file `{}`", path.display()))?
    };
    Ok(kubetrail_policy::load(&text))
}

/// A policy kube-apiserver would start with; otherwise its errors go to stderr and this fails.
fn read_valid_policy(path: &Path) -> anyhow::Result<Policy> {
    let loaded = read_policy(path)?;
    let Some(policy) = loaded.policy else {
        let errors: Vec<&Diagnostic> = loaded.errors().collect();
        for d in &errors {
            eprint!("{}", diagnostic_text(path, d));
        }
        bail!(
            "kube-apiserver would refuse the policy `{}` ({} error{}); fix it first (`kubetrail policy check {}`)",
            path.display(),
            errors.len(),
            plural(errors.len()),
            path.display()
        );
    };
    Ok(policy)
}

/// Prints diagnostics: `FILE:LINE:COL: SEVERITY: PATH: MESSAGE` and `  help: ...`, or one JSON object each.
fn print_diagnostics(file: &Path, diags: &[Diagnostic], format: Format) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for d in diags {
        match format {
            Format::Table => write!(out, "{}", diagnostic_text(file, d))?,
            Format::Json => {
                let mut v = serde_json::to_value(d)?;
                v["file"] = file.display().to_string().into();
                writeln!(out, "{v}")?;
            }
        }
    }
    Ok(())
}

fn diagnostic_text(file: &Path, d: &Diagnostic) -> String {
    let mut s = format!("{}:{d}\n", file.display());
    if d.line.is_none() {
        // `Display` starts with the severity when there is no line: keep `FILE: severity: ...`.
        s = format!("{}: {d}\n", file.display());
    }
    if let Some(help) = &d.help {
        let _ = writeln!(s, "  help: {help}");
    }
    s
}

fn count(diags: &[Diagnostic], severity: Severity) -> usize {
    diags.iter().filter(|d| d.severity == severity).count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
