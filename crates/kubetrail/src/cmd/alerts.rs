//! `kubetrail alerts list|show|ack|resolve|reopen|assign|note`: the analyst's workflow over the alerts
//! `serve` raised; every change is recorded with who made it and when.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use kubetrail_detect::Level;

use crate::Outcome;
use crate::alerts::{Action, Status, Tracked};

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
    /// Alerts a destination refused for good (dead letters): list them, or send them again.
    #[command(subcommand)]
    Dlq(DlqCommand),
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
    #[arg(long, value_enum, default_value_t = AlertsFormat::Table)]
    pub format: AlertsFormat,
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
    /// Data directory (default ./kubetrail-data, or KUBETRAIL_DATA).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AlertsFormat {
    #[default]
    Table,
    /// One JSON object per alert per line, with `status`, `assignee` and `history`.
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Only alerts in this status (default: open and acknowledged).
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// Every status.
    #[arg(long, conflicts_with = "status")]
    pub all: bool,
    /// Only alerts of this severity or above.
    #[arg(long, value_enum, default_value_t = crate::cmd::detect::Severity::Informational)]
    pub min_severity: crate::cmd::detect::Severity,
    #[arg(long, value_enum, default_value_t = AlertsFormat::Table)]
    pub format: AlertsFormat,
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
    let dir = crate::data::resolve(d.data.clone(), None);
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
        AlertsCommand::Dlq(DlqCommand::List(a)) => dlq_list(a),
        AlertsCommand::Dlq(DlqCommand::Replay(a)) => {
            let n = crate::outbox::replay(&dir(&a.data)?, a.destination.as_deref())?;
            println!(
                "{n} dead letter{} queued for delivery again",
                if n == 1 { "" } else { "s" }
            );
            Ok(Outcome::Ok)
        }
    }
}

fn dlq_list(args: DlqListArgs) -> anyhow::Result<Outcome> {
    let letters = crate::outbox::dead_letters(&dir(&args.data)?)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        AlertsFormat::Json => {
            for d in &letters {
                serde_json::to_writer(&mut out, d)?;
                writeln!(out)?;
            }
        }
        AlertsFormat::Table => {
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

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Open => "open",
        Status::Acknowledged => "acknowledged",
        Status::Resolved => "resolved",
    }
}

fn list(args: ListArgs) -> anyhow::Result<Outcome> {
    let data = dir(&args.data)?;
    let min: Level = args.min_severity.level();
    let mut alerts: Vec<Tracked> = crate::alerts::load(&data)?
        .into_iter()
        .filter(|t| t.alert.severity >= min)
        .filter(|t| match (args.all, args.status) {
            (true, _) => true,
            (false, Some(s)) => t.status == s,
            (false, None) => t.status != Status::Resolved,
        })
        .collect();
    alerts.reverse();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        AlertsFormat::Json => {
            for t in &alerts {
                serde_json::to_writer(&mut out, t)?;
                writeln!(out)?;
            }
        }
        AlertsFormat::Table => {
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
                        status_name(t.status).to_string(),
                        t.alert.severity.as_str().to_string(),
                        t.alert.rule.id.clone(),
                        t.alert.actor.username.clone(),
                        t.alert.time.clone(),
                        t.alert.count.to_string(),
                        t.assignee.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            crate::cmd::query::write_table(&mut out, &names, &rows)?;
            writeln!(out, "{} alerts", rows.len())?;
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

fn show(data: &std::path::Path, id: &str) -> anyhow::Result<Outcome> {
    let t = crate::alerts::find(data, id)?;
    let a = &t.alert;
    let mut s = crate::detection::render(a);
    s += &format!(
        "         status: {}{}\n",
        status_name(t.status),
        t.assignee
            .as_ref()
            .map(|u| format!(", assigned to {u}"))
            .unwrap_or_default()
    );
    s += &format!(
        "         investigate: kubetrail scope --user {u} --since 7d\n                      kubetrail timeline --user {u} --since 24h\n",
        u = shell_word(&a.actor.username)
    );
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
    if let Ok(rules) = crate::detection::load_rules(&crate::detection::Sources {
        builtin: true,
        paths: Vec::new(),
    }) && let Some(d) = rules.get(&a.rule.id)
        && let Some(runbook) = d.meta().extra_str("runbook")
    {
        s += "\nrunbook:\n";
        for l in runbook.trim_end().lines() {
            s += &format!("  {l}\n");
        }
    }
    print!("{s}");
    Ok(Outcome::Ok)
}

/// A value quoted for a shell when it needs to be.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "@._:-/".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn change(d: &DataArg, id: &str, action: Action, note: Option<String>) -> anyhow::Result<Outcome> {
    let data = dir(d)?;
    let by = crate::cmd::retention::os_user();
    let mut t = crate::alerts::record(&data, id, action, &by)?;
    if let Some(text) = note {
        t = crate::alerts::record(&data, &t.alert.id, Action::Note { text }, &by)?;
    }
    println!(
        "{}  {}{}  ({} {})",
        t.alert.id,
        status_name(t.status),
        t.assignee
            .as_ref()
            .map(|u| format!(", assigned to {u}"))
            .unwrap_or_default(),
        t.alert.rule.id,
        t.alert.actor.username
    );
    Ok(Outcome::Ok)
}
