//! `kubetrail detect`: the detection engine over audit files, as `serve` runs it live.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kubetrail_detect::{Alert, Level};

use crate::Outcome;
use kubetrail_runtime::alerting::rules::{DetectionConfig, Sources};

/// Events handed from the reader thread to detection at once.
const CHUNK: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn level(self) -> Level {
        match self {
            Severity::Informational => Level::Informational,
            Severity::Low => Level::Low,
            Severity::Medium => Level::Medium,
            Severity::High => Level::High,
            Severity::Critical => Level::Critical,
        }
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Alerts are printed once the input is read, in time order: a rule that matched several \
                  stages of one request alerts once, and repeats of a rule by the same identity within 10 minutes \
                  are one alert with a count and every auditID. Exit status 1 when there is an alert.\n\n\
                  Examples:\n  kubetrail detect /var/log/kubernetes/audit.log\n  kubetrail detect --format json \
                  --min-severity high audit-*.log.gz\n  kubetrail detect --no-builtin --rules ./my-rules/ audit.log\n  \
                  kubetrail gen --attacks --count 20000 | kubetrail detect -"
)]
pub struct DetectArgs {
    /// Sigma rule files or directories (repeatable), added to the built-in pack.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Run only the rules given with --rules.
    #[arg(long)]
    pub no_builtin: bool,
    /// A kubetrail config file: its `detection:` section (rules, exceptions, disabled rules, production
    /// namespaces) applies.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
    /// Only alerts of this severity or above.
    #[arg(long, value_enum, default_value_t = Severity::Informational)]
    pub min_severity: Severity,
    /// Audit files (native JSON lines, EventLists, EKS, GKE, AKS exports; plain or gzip), `-` for stdin.
    pub files: Vec<PathBuf>,
}

pub fn run(args: DetectArgs) -> anyhow::Result<Outcome> {
    let cfg = match &args.config {
        Some(path) => kubetrail_runtime::config::Config::load(path)?
            .detection
            .unwrap_or_default(),
        None => DetectionConfig::default(),
    };
    let mut paths = cfg.rules.clone();
    paths.extend(args.rules.iter().cloned());
    let sources = Sources {
        builtin: !args.no_builtin && cfg.builtin.unwrap_or(true),
        paths,
    };
    let (_, mut engine) = kubetrail_runtime::alerting::rules::engine(&sources, &cfg)?;
    // The input as one stream, judged on event time: a pause inside it is a silence, its end is not.
    // An event dated past the next hour is not believed (a skewed clock or a forged line would move the clock
    // past everything after it).
    let mut watch = cfg
        .watch(sources.builtin)?
        .believing_until(jiff::Timestamp::now().as_millisecond() + 3_600_000);
    let files = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };

    // The latest state of each alert (an update supersedes what was handed out with the same id).
    let mut alerts: BTreeMap<String, Alert> = BTreeMap::new();
    let mut batch = Vec::new();
    let mut keep = |batch: &mut Vec<Alert>| {
        for a in batch.drain(..) {
            alerts.insert(a.id.clone(), a);
        }
    };
    let progress = crate::progress::bytes_bar(kubetrail_runtime::input::total_size(&files));
    // Reading, decompressing and decoding (a thread of its own) overlap with detection (this thread): on two
    // cores `detect` runs at the pace of the slower half. Events reach the engine in file order.
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<Vec<(String, kubetrail_runtime::input::Located)>>(4);
    let mut invalid: Vec<(kubetrail_runtime::input::Located, String)> = Vec::new();
    let mut stats = std::thread::scope(|scope| -> anyhow::Result<_> {
        let (files, progress) = (&files, &progress);
        let reader = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            let stats = kubetrail_runtime::input::for_each_record_located(
                files,
                &mut |bytes| progress.set_position(bytes),
                &mut |record, at| {
                    chunk.push((record.json.to_string(), at));
                    if chunk.len() >= CHUNK
                        && tx
                            .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                            .is_err()
                    {
                        anyhow::bail!("detection stopped");
                    }
                    Ok(None)
                },
            );
            let _ = tx.send(chunk);
            stats
        });
        for chunk in rx {
            for (json, at) in chunk {
                let mut stream = Vec::new();
                let r = engine.process_seen("", None, &json, &mut batch, &mut |seen| {
                    watch.observe("", "", None, seen, &mut stream)
                });
                batch.append(&mut stream);
                match r {
                    Ok(()) => keep(&mut batch),
                    Err(e) => invalid.push((at, e.to_string())),
                }
            }
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?
    })?;
    // Events the engine could not read are skipped values, named by file and line as the reader's own.
    stats.records -= invalid.len() as u64;
    for (at, reason) in invalid {
        stats.skip_located(&files, at, reason);
    }
    engine.flush(&mut batch);
    keep(&mut batch);
    progress.finish_and_clear();
    kubetrail_runtime::input::report_skipped(&stats);

    let min = args.min_severity.level();
    let mut shown: Vec<&Alert> = alerts.values().filter(|a| a.severity >= min).collect();
    shown.sort_by(|a, b| (&a.time, &a.rule.id).cmp(&(&b.time, &b.rule.id)));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for a in &shown {
        match args.format {
            crate::output::Format::Json => {
                serde_json::to_writer(&mut out, a)?;
                writeln!(out)?;
            }
            crate::output::Format::Table => {
                writeln!(out, "{}", kubetrail_runtime::alerting::rules::render(a))?
            }
        }
    }
    out.flush()?;
    let mut by_level: BTreeMap<Level, usize> = BTreeMap::new();
    for a in &shown {
        *by_level.entry(a.severity).or_default() += 1;
    }
    let levels: Vec<String> = by_level
        .iter()
        .rev()
        .map(|(l, n)| format!("{n} {}", l.as_str()))
        .collect();
    eprintln!(
        "kubetrail: {} events, {} alerts{}",
        crate::report::thousands(stats.records),
        shown.len(),
        if levels.is_empty() {
            String::new()
        } else {
            format!(" ({})", levels.join(", "))
        }
    );
    Ok(if shown.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Findings
    })
}
