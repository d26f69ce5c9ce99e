//! `kubetrail sinks status|dlq list|dlq replay`: what `serve` shipped, how far behind each sink is, and the
//! records a target refused for good.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::Outcome;
use crate::cmd::alerts::DataArg;

#[derive(Debug, Subcommand)]
pub enum SinksCommand {
    /// Each sink: sent, retried, failed, dead-lettered, skipped, lag (events and seconds), the last error
    /// (as the running `serve` last wrote it, every second).
    Status(StatusArgs),
    /// Records a target refused for good: list them, or queue them to be sent again.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Prove an S3 archive from the bucket alone: every signed manifest in its chain, every object they list
    /// present, unchanged (checksum) and locked, and no log position missing (exit 1 naming what is wrong).
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The config file naming the archive (its `sinks:` entry of type s3).
    #[arg(long)]
    pub config: PathBuf,
    /// The sink's name, when the config has more than one archive.
    #[arg(long)]
    pub sink: Option<String>,
    /// The integrity public key (PEM, from `kubetrail checkpoint public-key`); default: the data directory's key.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Also download every object and check its bytes and event count (slower).
    #[arg(long)]
    pub deep: bool,
    /// The replica whose archive to verify (under `<prefix>replica=NAME/`); default: the config's
    /// `replica`, or KUBETRAIL_REPLICA.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
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
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
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
    let data = |d: &DataArg| kubetrail_runtime::data::resolve(d.data.clone(), None);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match cmd {
        SinksCommand::Status(a) => {
            let all = kubetrail_runtime::shipping::worker::statuses(&data(&a.data))?;
            match a.format {
                crate::output::Format::Json => {
                    for s in &all {
                        serde_json::to_writer(&mut out, s)?;
                        writeln!(out)?;
                    }
                }
                crate::output::Format::Table => {
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
            let all = kubetrail_runtime::shipping::worker::dead_letters(
                &data(&a.data),
                a.sink.as_deref(),
            )?;
            match a.format {
                crate::output::Format::Json => {
                    for d in &all {
                        serde_json::to_writer(&mut out, d)?;
                        writeln!(out)?;
                    }
                }
                crate::output::Format::Table => {
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
        SinksCommand::Verify(a) => {
            drop(out);
            return verify(a);
        }
        SinksCommand::Dlq(DlqCommand::Replay(a)) => {
            let n = kubetrail_runtime::shipping::worker::replay(&data(&a.data), a.sink.as_deref())?;
            writeln!(
                out,
                "{n} records queued to be sent again (a running serve picks them up within a second)"
            )?;
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

fn verify(a: VerifyArgs) -> anyhow::Result<Outcome> {
    let cfg = kubetrail_runtime::config::Config::load(&a.config)?;
    let replica = match &a.replica {
        Some(r) => Some(kubetrail_runtime::config::check_replica(r, "--replica")?),
        None => cfg.replica()?,
    };
    let sinks = kubetrail_runtime::shipping::config::build_all(&cfg.sinks, replica.as_deref())?;
    let archives: Vec<&kubetrail_runtime::shipping::worker::Sink> = sinks
        .iter()
        .filter(|s| {
            matches!(
                s.target,
                kubetrail_runtime::shipping::worker::Target::Archive(_)
            )
        })
        .filter(|s| a.sink.as_ref().is_none_or(|n| *n == s.name))
        .collect();
    let sink = match archives.as_slice() {
        [one] => *one,
        [] => anyhow::bail!(
            "`{}` has no S3 archive{}",
            a.config.display(),
            a.sink
                .as_ref()
                .map(|n| format!(" named `{n}`"))
                .unwrap_or_default()
        ),
        _ => anyhow::bail!(
            "`{}` has several archives: pass --sink NAME",
            a.config.display()
        ),
    };
    let kubetrail_runtime::shipping::worker::Target::Archive(archive) = &sink.target else {
        unreachable!("filtered")
    };
    let key = match &a.public_key {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("failed to read `{}`: {e}", p.display()))?;
            kubetrail_store::PublicKey::from_pem(&text)?
        }
        None => {
            let data = kubetrail_runtime::data::resolve(a.data.data.clone(), cfg.data.clone());
            kubetrail_runtime::integrity_key::existing_signer(&data)?.public_key()
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let v = rt.block_on(kubetrail_runtime::shipping::archive::verify(
        archive, &key, a.deep,
    ));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "archive `{}`: {} manifests, {} objects ({} of them Parquet files of the store, {} OCSF files), {} events in JSON lines, log positions {}..{}",
        sink.name,
        v.manifests,
        v.objects,
        v.parquet_files,
        v.ocsf_files,
        v.events,
        v.first.map_or("-".into(), |f| f.to_string()),
        v.last.map_or("-".into(), |l| l.to_string()),
    )?;
    if v.manifests == 0 {
        writeln!(
            out,
            "no manifest yet: serve uploads one a minute after archiving"
        )?;
        return Ok(Outcome::Findings);
    }
    if v.problems.is_empty() {
        writeln!(
            out,
            "verified: every manifest signed by key {} and chained; every object present, unchanged and locked{}",
            key.key_id(),
            if a.deep { "; every event counted" } else { "" }
        )?;
        Ok(Outcome::Ok)
    } else {
        for p in &v.problems {
            writeln!(out, "FAILED: {p}")?;
        }
        Ok(Outcome::Findings)
    }
}
