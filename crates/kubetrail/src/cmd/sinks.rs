//! `kubetrail sinks status|dlq list|dlq replay`: what `serve` shipped, how far behind each sink is, and the
//! records a target refused for good.

use std::io::Write;

use clap::{Args, Subcommand};

use crate::Outcome;
use crate::cmd::alerts::{AlertsFormat, DataArg};

#[derive(Debug, Subcommand)]
pub enum SinksCommand {
    /// Each sink: sent, retried, failed, dead-lettered, skipped, lag (events and seconds), the last error
    /// (as the running `serve` last wrote it, every second).
    Status(StatusArgs),
    /// Records a target refused for good: list them, or queue them to be sent again.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[arg(long, value_enum, default_value_t = AlertsFormat::Table)]
    pub format: AlertsFormat,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Every dead letter: sink, when, why, the record's id.
    List(DlqListArgs),
    /// Queue the dead letters for sending again (before new records) once the cause is fixed; the
    /// dead-letter files are kept aside, renamed `.replayed-<time>`.
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Only this sink.
    #[arg(long)]
    pub sink: Option<String>,
    #[arg(long, value_enum, default_value_t = AlertsFormat::Table)]
    pub format: AlertsFormat,
}

#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Only this sink.
    #[arg(long)]
    pub sink: Option<String>,
}

pub fn run(cmd: SinksCommand) -> anyhow::Result<Outcome> {
    let data = |d: &DataArg| crate::data::resolve(d.data.clone(), None);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match cmd {
        SinksCommand::Status(a) => {
            let all = crate::ship::statuses(&data(&a.data))?;
            match a.format {
                AlertsFormat::Json => {
                    for s in &all {
                        serde_json::to_writer(&mut out, s)?;
                        writeln!(out)?;
                    }
                }
                AlertsFormat::Table => {
                    let names: Vec<String> = [
                        "SINK",
                        "TYPE",
                        "SENT",
                        "RETRIED",
                        "FAILED",
                        "DEAD",
                        "SKIPPED",
                        "LAG",
                        "LAG AGE",
                        "LAST ERROR",
                        "AS OF",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                s.kind.clone(),
                                s.sent.to_string(),
                                s.retried.to_string(),
                                s.failed.to_string(),
                                s.dead_lettered.to_string(),
                                s.skipped.to_string(),
                                s.lag_events.to_string(),
                                format!("{}s", s.lag_seconds),
                                s.last_error.clone().unwrap_or_default(),
                                s.at.clone(),
                            ]
                        })
                        .collect();
                    crate::cmd::query::write_table(&mut out, &names, &rows)?;
                    if rows.is_empty() {
                        writeln!(
                            out,
                            "no sinks: configure `sinks:` in the config file and run `kubetrail serve`"
                        )?;
                    }
                }
            }
        }
        SinksCommand::Dlq(DlqCommand::List(a)) => {
            let all = crate::ship::dead_letters(&data(&a.data), a.sink.as_deref())?;
            match a.format {
                AlertsFormat::Json => {
                    for d in &all {
                        serde_json::to_writer(&mut out, d)?;
                        writeln!(out)?;
                    }
                }
                AlertsFormat::Table => {
                    let names: Vec<String> = ["SINK", "AT", "ID", "REASON"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|d| {
                            vec![
                                d.sink.clone(),
                                d.at.clone(),
                                d.id.clone(),
                                d.reason.chars().take(200).collect(),
                            ]
                        })
                        .collect();
                    crate::cmd::query::write_table(&mut out, &names, &rows)?;
                    writeln!(out, "{} dead letters", rows.len())?;
                }
            }
        }
        SinksCommand::Dlq(DlqCommand::Replay(a)) => {
            let n = crate::ship::replay(&data(&a.data), a.sink.as_deref())?;
            writeln!(
                out,
                "{n} records queued to be sent again (a running serve picks them up within a second)"
            )?;
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}
