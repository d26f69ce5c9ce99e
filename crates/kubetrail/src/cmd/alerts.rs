//! `kubetrail alerts list|show|ack|resolve|reopen|assign|note`: the analyst's workflow over the alerts
//! `serve` raised; every change is recorded with who made it and when.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use kubetrail_detect::Level;

use crate::Outcome;
use kubetrail_runtime::alerting::store::{Action, Status, Tracked};

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// The alerts, newest first: id, status, severity, rule, actor, when, count.
    List(ListArgs),
    /// One alert: what, who, from where, when, its requests, its history, and the rule's runbook.
    Show(IdArgs),
    /// Acknowledge: someone is on it.
    Ack(ChangeArgs),
    /// Resolve: handled (a false positive, or contained).
    Resolve(ChangeArgs),
    /// Open again.
    Reopen(ChangeArgs),
    /// Assign to an analyst.
    Assign(AssignArgs),
    /// Add a note to the alert's history.
    Note(NoteArgs),
    /// Silence matching alerts until a time, with a reason (planned maintenance): they are still raised and
    /// recorded, with status `suppressed`, but not delivered. On record in `alerts/suppressions.jsonl`.
    Suppress(SuppressArgs),
    /// The suppressions in force (with `--all`, every one ever made, lifted and expired too).
    Suppressions(SuppressionsArgs),
    /// Lift a suppression before it expires.
    Unsuppress(UnsuppressArgs),
    /// Alerts a destination refused for good (dead letters): list them, or send them again.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("end").required(true).args(["for_", "until"])))]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["rule", "user", "namespace", "cluster"])))]
pub struct SuppressArgs {
    /// A rule id or an ATT&CK technique (`T1609`, `attack.t1609`; not a tactic). A suppression names a rule
    /// or an exact --user.
    #[arg(long)]
    pub rule: Option<String>,
    /// The actor, exactly, or a prefix ending in `*` (`system:serviceaccount:ci:*`, only with --rule).
    #[arg(long)]
    pub user: Option<String>,
    /// The target namespace (`*` wildcards).
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    /// For how long (`30m`, `1.5h`, `2d`, `1w`; at most 30 days, or the config's
    /// alerts.max_suppression_days).
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
    /// Until this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Why (recorded with who and when; at most 500 characters).
    #[arg(long)]
    pub reason: String,
    /// The config `serve` runs with, for its alerts.max_suppression_days.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct SuppressionsArgs {
    /// Lifted and expired ones too.
    #[arg(long)]
    pub all: bool,
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct UnsuppressArgs {
    /// The suppression's id (`s-...`).
    pub id: String,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Every dead letter: destination, when, the answer, the alert.
    List(DlqListArgs),
    /// Queue the dead letters for delivery again (before new alerts), once the destination is fixed; the
    /// dead-letter files are kept aside, renamed `.replayed-<time>`.
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
}

#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Only this destination (its name as `dlq list` shows it).
    #[arg(long)]
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DataArg {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Only alerts in this status (default: open and acknowledged; suppressed ones are listed with
    /// `--status suppressed` or `--all`).
    #[arg(long, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(Status::ALL.map(Status::as_str)), |s| s.parse::<Status>().expect("a listed status")))]
    pub status: Option<Status>,
    /// Every status.
    #[arg(long, conflicts_with = "status")]
    pub all: bool,
    /// Only alerts of this severity or above.
    #[arg(long, value_enum, default_value_t = crate::cmd::detect::Severity::Informational)]
    pub min_severity: crate::cmd::detect::Severity,
    /// `table` for people, `json` (one object per line) or `csv` (formulas defused) for machines.
    #[arg(long, value_enum, default_value_t = crate::output::RowFormat::Table)]
    pub format: crate::output::RowFormat,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The alert id (or an unambiguous start of it).
    pub id: String,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// The alert id (or an unambiguous start of it).
    pub id: String,
    /// A note recorded with the change.
    #[arg(long)]
    pub note: Option<String>,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    pub id: String,
    /// The analyst.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct NoteArgs {
    pub id: String,
    /// The note.
    pub text: String,
    #[command(flatten)]
    pub data: DataArg,
}

fn dir(d: &DataArg) -> anyhow::Result<PathBuf> {
    let dir = kubetrail_runtime::data::resolve(d.data.clone(), None);
    if !dir.is_dir() {
        anyhow::bail!(
            "data directory `{}` does not exist: pass --data DIR",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn run(cmd: AlertsCommand) -> anyhow::Result<Outcome> {
    match cmd {
        AlertsCommand::List(a) => list(a),
        AlertsCommand::Show(a) => show(&dir(&a.data)?, &a.id),
        AlertsCommand::Ack(a) => change(&a.data, &a.id, Action::Ack, a.note),
        AlertsCommand::Resolve(a) => change(&a.data, &a.id, Action::Resolve, a.note),
        AlertsCommand::Reopen(a) => change(&a.data, &a.id, Action::Reopen, a.note),
        AlertsCommand::Assign(a) => change(&a.data, &a.id, Action::Assign { to: a.to }, None),
        AlertsCommand::Note(a) => change(&a.data, &a.id, Action::Note { text: a.text }, None),
        AlertsCommand::Suppress(a) => suppress(a),
        AlertsCommand::Suppressions(a) => suppressions(a),
        AlertsCommand::Unsuppress(a) => {
            let data = dir(&a.data)?;
            let s = kubetrail_runtime::alerting::suppress::lift(
                &data,
                &a.id,
                &crate::cmd::retention::os_user(),
            )?;
            println!(
                "{}  lifted; it silenced until {}: {}",
                s.id, s.until, s.reason
            );
            Ok(Outcome::Ok)
        }
        AlertsCommand::Dlq(DlqCommand::List(a)) => dlq_list(a),
        AlertsCommand::Dlq(DlqCommand::Replay(a)) => {
            let n = kubetrail_runtime::alerting::outbox::replay(
                &dir(&a.data)?,
                a.destination.as_deref(),
            )?;
            println!(
                "{n} dead letter{} queued for delivery again",
                if n == 1 { "" } else { "s" }
            );
            Ok(Outcome::Ok)
        }
    }
}

fn dlq_list(args: DlqListArgs) -> anyhow::Result<Outcome> {
    let letters = kubetrail_runtime::alerting::outbox::dead_letters(&dir(&args.data)?)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        crate::output::Format::Json => {
            for d in &letters {
                serde_json::to_writer(&mut out, d)?;
                writeln!(out)?;
            }
        }
        crate::output::Format::Table => {
            let names: Vec<String> = ["DESTINATION", "TIME", "STATUS", "REASON", "ALERT", "RULE"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|d| {
                    vec![
                        d.destination.clone(),
                        d.time.clone(),
                        d.status.to_string(),
                        d.reason.chars().take(80).collect(),
                        text(&d.alert["id"]),
                        text(&d.alert["rule"]["id"]),
                    ]
                })
                .collect();
            crate::cmd::query::write_table(&mut out, &names, &rows)?;
            writeln!(out, "{} dead letters", rows.len())?;
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

fn list(args: ListArgs) -> anyhow::Result<Outcome> {
    let data = dir(&args.data)?;
    let min: Level = args.min_severity.level();
    let mut alerts: Vec<Tracked> = kubetrail_runtime::alerting::store::load(&data)?
        .into_iter()
        .filter(|t| t.alert.severity >= min)
        .filter(|t| match (args.all, args.status) {
            (true, _) => true,
            (false, Some(s)) => t.status == s,
            (false, None) => matches!(t.status, Status::Open | Status::Acknowledged),
        })
        .collect();
    alerts.reverse();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        crate::output::RowFormat::Json => {
            for t in &alerts {
                serde_json::to_writer(&mut out, t)?;
                writeln!(out)?;
            }
        }
        crate::output::RowFormat::Table | crate::output::RowFormat::Csv => {
            let names: Vec<String> = [
                "ID",
                "STATUS",
                "SEVERITY",
                "RULE",
                "ACTOR",
                "FIRST SEEN",
                "COUNT",
                "ASSIGNEE",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let rows: Vec<Vec<String>> = alerts
                .iter()
                .map(|t| {
                    vec![
                        t.alert.id.clone(),
                        Status::as_str(t.status).to_string(),
                        t.alert.severity.as_str().to_string(),
                        t.alert.rule.id.clone(),
                        t.alert.actor.username.clone(),
                        t.alert.time.clone(),
                        t.alert.count.to_string(),
                        t.assignee.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            if args.format == crate::output::RowFormat::Csv {
                crate::cmd::query::write_csv(&mut out, &names, &rows)?;
            } else {
                crate::cmd::query::write_table(&mut out, &names, &rows)?;
                writeln!(out, "{} alerts", rows.len())?;
            }
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

fn show(data: &std::path::Path, id: &str) -> anyhow::Result<Outcome> {
    let t = kubetrail_runtime::alerting::store::find(data, id)?;
    let a = &t.alert;
    let mut s = kubetrail_runtime::alerting::rules::render(a);
    s += &format!(
        "         status: {}{}\n",
        Status::as_str(t.status),
        t.assignee
            .as_ref()
            .map(|u| format!(", assigned to {u}"))
            .unwrap_or_default()
    );
    if let Some(id) = &a.suppressed {
        s += &format!("         suppressed by: {id} (`kubetrail alerts suppressions --all`)\n");
    }
    if let Some(url) = &a.console {
        s += &format!("         console: {url}\n");
    }
    let investigate = if a.investigate.is_empty() {
        vec![
            format!(
                "kubetrail scope --user {} --since 7d",
                kubetrail_runtime::text::shell_word(&a.actor.username)
            ),
            format!(
                "kubetrail timeline --user {} --since 24h",
                kubetrail_runtime::text::shell_word(&a.actor.username)
            ),
        ]
    } else {
        a.investigate.clone()
    };
    for (i, cmd) in investigate.iter().enumerate() {
        let label = if i == 0 { "investigate:" } else { "" };
        s += &format!("         {label:<12} {cmd}\n");
    }
    if let Some(ctx) = &a.context {
        s += &kubetrail_runtime::alerting::rules::render_context(ctx);
    }
    if !t.history.is_empty() {
        s += "\nhistory:\n";
        for c in &t.history {
            let what = match &c.action {
                Action::Ack => "acknowledged".to_string(),
                Action::Resolve => "resolved".to_string(),
                Action::Reopen => "reopened".to_string(),
                Action::Assign { to } => format!("assigned to {to}"),
                Action::Note { text } => format!("note: {text}"),
            };
            s += &format!("  {}  {}  {what}\n", c.at, c.by);
        }
    }
    let runbook = a.runbook.clone().or_else(|| {
        let rules = kubetrail_runtime::alerting::rules::load_rules(
            &kubetrail_runtime::alerting::rules::Sources {
                builtin: true,
                paths: Vec::new(),
            },
        )
        .ok()?;
        rules
            .get(&a.rule.id)?
            .meta()
            .extra_str("runbook")
            .map(str::to_string)
    });
    if let Some(runbook) = runbook {
        s += "\nrunbook:\n";
        for l in runbook.trim_end().lines() {
            s += &format!("  {l}\n");
        }
    }
    print!("{s}");
    Ok(Outcome::Ok)
}

fn change(d: &DataArg, id: &str, action: Action, note: Option<String>) -> anyhow::Result<Outcome> {
    let data = dir(d)?;
    let by = crate::cmd::retention::os_user();
    let mut t = kubetrail_runtime::alerting::store::record(&data, id, action, &by)?;
    if let Some(text) = note {
        t = kubetrail_runtime::alerting::store::record(
            &data,
            &t.alert.id,
            Action::Note { text },
            &by,
        )?;
    }
    println!(
        "{}  {}{}  ({} {})",
        t.alert.id,
        Status::as_str(t.status),
        t.assignee
            .as_ref()
            .map(|u| format!(", assigned to {u}"))
            .unwrap_or_default(),
        t.alert.rule.id,
        t.alert.actor.username
    );
    Ok(Outcome::Ok)
}

fn suppress(a: SuppressArgs) -> anyhow::Result<Outcome> {
    let data = kubetrail_runtime::data::resolve(a.data.data.clone(), None);
    let until = match (&a.for_, &a.until) {
        (Some(d), _) => kubetrail_runtime::duration::from_now(d).map_err(anyhow::Error::msg)?,
        (None, Some(t)) => t.parse::<jiff::Timestamp>().map_err(|_| {
            anyhow::anyhow!("--until `{t}` is not an RFC 3339 time (`2026-11-26T06:00:00Z`)")
        })?,
        (None, None) => unreachable!("clap requires one"),
    };
    let max_days = match &a.config {
        Some(path) => kubetrail_runtime::config::Config::load(path)?
            .alerts
            .and_then(|al| al.max_suppression_days)
            .unwrap_or(kubetrail_runtime::alerting::suppress::DEFAULT_MAX_DAYS),
        None => kubetrail_runtime::alerting::suppress::DEFAULT_MAX_DAYS,
    };
    let selector = kubetrail_runtime::alerting::suppress::Selector {
        rule: a.rule,
        user: a.user,
        namespace: a.namespace,
        cluster: a.cluster,
    };
    let s = kubetrail_runtime::alerting::suppress::add(
        &data,
        selector,
        until,
        &a.reason,
        &crate::cmd::retention::os_user(),
        max_days,
    )?;
    println!(
        "{}  suppressing {} until {} ({})",
        s.id,
        kubetrail_runtime::alerting::suppress::describe(&s.selector),
        s.until,
        s.reason
    );
    Ok(Outcome::Ok)
}

fn suppressions(a: SuppressionsArgs) -> anyhow::Result<Outcome> {
    let data = kubetrail_runtime::data::resolve(a.data.data.clone(), None);
    let now = jiff::Timestamp::now();
    let all: Vec<kubetrail_runtime::alerting::suppress::Suppression> =
        kubetrail_runtime::alerting::suppress::load(&data)?
            .into_iter()
            .filter(|s| a.all || s.active(now))
            .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        crate::output::Format::Json => {
            for s in &all {
                let mut v = serde_json::to_value(s)?;
                v["active"] = serde_json::Value::Bool(s.active(now));
                serde_json::to_writer(&mut out, &v)?;
                writeln!(out)?;
            }
        }
        crate::output::Format::Table => {
            let names: Vec<String> = ["ID", "STATE", "SILENCES", "UNTIL", "REASON", "BY", "AT"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    let state = match (&s.lifted, s.active(now)) {
                        (Some((by, _)), _) => format!("lifted by {by}"),
                        (None, true) => "active".to_string(),
                        (None, false) => "expired".to_string(),
                    };
                    vec![
                        s.id.clone(),
                        state,
                        kubetrail_runtime::alerting::suppress::describe(&s.selector),
                        s.until.clone(),
                        s.reason.clone(),
                        s.by.clone(),
                        s.at.clone(),
                    ]
                })
                .collect();
            crate::cmd::query::write_table(&mut out, &names, &rows)?;
            writeln!(out, "{} suppressions", rows.len())?;
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}
