//! `kubetrail query`: search the stored events with a `--where` expression or plain SQL.
//!
//! Before every query the write-ahead log's unconverted tail is flushed into Parquet
//! (`ColumnarWriter::flush`, nothing to do when the collector has kept up, which it does every second), so
//! what was acknowledged a moment ago is found.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use kubetrail_engine::{Cell, Engine, EventRow, RowQuery, Scope, Source};
use kubetrail_store::WalOptions;
use kubetrail_store::columnar::{ColumnarOptions, ColumnarWriter};

use crate::Outcome;

/// Where and when: the part of the store a query reads.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// Configuration file: its `data` directory, and its `query:` backend (`backend: clickhouse` asks the
    /// ClickHouse table a fleet of collectors ships to, instead of the local store).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ask the S3 archive's Parquet files (`s3://BUCKET/PREFIX`, the `s3` sink's) instead: only the
    /// partitions in range are fetched, into DATA/lake-cache. Region, endpoint and credentials from the
    /// standard AWS environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, ...), or the config's `query:` with
    /// `backend: lake`.
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    pub lake: Option<String>,
    /// Only this cluster (default: all).
    #[arg(long)]
    pub cluster: Option<String>,
    /// From this time: RFC 3339 (`2026-11-01T00:00:00Z`) or a duration ago (`30m`, `2h`, `7d`, `4w`).
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub since: Option<jiff::Timestamp>,
    /// Up to this time (inclusive), as --since; default now.
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub until: Option<jiff::Timestamp>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Without --since, the whole store is searched (all time); bound it with --since/--until \
                  on a large store: only the hours in range are read.\n\nExpressions (--where): FIELD = V, != V, \
                  ~ GLOB, in (V, ...), not in (...), and/or/not, parentheses. Fields: user, group, verb, resource, \
                  subresource, namespace, name, apigroup, code, ip, useragent, stage, level, auditid, uri, decision, \
                  impersonated, cluster, or a dotted path into the event (objectRef.name, \
                  requestObject.spec.containers.image).\n\nSQL (--sql) runs as is against the table `events` \
                  (columns: time, stage_time, received, seq, cluster, audit_id, stage, level, verb, user, groups, \
                  impersonated_user, impersonated_groups, source_ips, ip, user_agent, uri, resource, subresource, \
                  namespace, name, api_group, api_version, code, decision, reason, latency_us, event), already \
                  bounded by --since/--until/--cluster.\n\nExamples:\n  kubetrail query --since 2h --where \
                  'verb = delete and resource = pods and namespace = prod'\n  kubetrail query --since 7d --where \
                  'user ~ system:serviceaccount:* and resource = secrets' --format json\n  kubetrail query --sql \
                  'SELECT \"user\", count(*) AS n FROM events WHERE code = 403 GROUP BY \"user\" ORDER BY n DESC'"
)]
pub struct QueryArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// A filter expression (see below); every event when neither --where nor --sql is given.
    #[arg(long = "where", value_name = "EXPR", conflicts_with = "sql")]
    pub where_: Option<String>,
    /// A SQL query over the table `events`.
    #[arg(long, value_name = "SQL")]
    pub sql: Option<String>,
    #[arg(long, value_enum, default_value_t = crate::output::RowFormat::Table)]
    pub format: crate::output::RowFormat,
    /// At most N rows (requests, or stages with --all-stages); 0 for no limit.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    /// Every stored stage of each request, not one row per request (its ResponseComplete, else the latest).
    #[arg(long, conflicts_with = "sql")]
    pub all_stages: bool,
}

/// Receives each row of a SQL result with the column names; breaks to stop the query.
pub type RowSink<'a> = dyn FnMut(Vec<Cell>, &[String]) -> anyhow::Result<ControlFlow<()>> + 'a;

/// An engine over the data directory, after flushing the log's unconverted tail into Parquet.
pub struct Session {
    pub engine: Engine,
    pub rt: tokio::runtime::Runtime,
    /// What is read: `12 files (3.4 MB)`, or `ClickHouse kubetrail.audit_events at http://ch:8123`.
    pub reading: String,
}

impl Session {
    pub fn open(scope: &ScopeArgs) -> anyhow::Result<Session> {
        let cfg = match &scope.config {
            Some(path) => kubetrail_runtime::config::Config::load(path)?,
            None => kubetrail_runtime::config::Config::default(),
        };
        let dir = kubetrail_runtime::data::resolve(scope.data.clone(), cfg.data.clone());
        let source = match (&scope.lake, &cfg.query) {
            (Some(url), _) => Source::Lake(kubetrail_runtime::config::lake_source(
                url,
                None,
                None,
                None,
                None,
                dir.join("lake-cache"),
            )?),
            (None, Some(q)) => q.source(&dir).with_context(|| {
                format!(
                    "config file `{}`",
                    scope.config.as_deref().unwrap_or(Path::new("")).display()
                )
            })?,
            (None, None) => Source::Store(dir.join("store")),
        };
        if let Source::ClickHouse(_) = source {
            // What this collector has not shipped is not in ClickHouse: say so, never answer as if complete.
            if let Some(note) = kubetrail_runtime::shipping::worker::clickhouse_shortfall(&dir) {
                eprintln!("note: {note}");
            }
        }
        if let Source::Store(_) = source {
            if !dir.is_dir() {
                anyhow::bail!(
                    "data directory `{}` does not exist: pass --data DIR, or import audit logs first (`kubetrail import`)",
                    dir.display()
                );
            }
            flush(&dir)?;
        }
        // Threads with the stack the largest accepted query needs to plan (see `kubetrail_engine::limits`).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(kubetrail_engine::limits::QUERY_STACK_BYTES)
            .enable_all()
            .build()
            .context("failed to start the query runtime")?;
        let bar = matches!(source, Source::Lake(_)).then(|| spinner("fetching from the lake"));
        let engine = rt
            .block_on(Engine::open_any(
                &source,
                &Scope {
                    cluster: scope.cluster.clone(),
                    since: scope.since,
                    until: scope.until,
                },
                &kubetrail_engine::Resources::default(),
            ))
            .context("failed to open the store")?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let files = engine.files();
        let counted = format!(
            "{} file{} ({})",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            crate::report::bytes(files.iter().map(|f| f.bytes).sum())
        );
        let reading = match &source {
            Source::Store(_) | Source::Stores(_) => counted,
            Source::Lake(l) => format!("{counted} of s3://{}/{}", l.bucket, l.prefix),
            Source::ClickHouse(c) => format!(
                "ClickHouse {}.{} at {}",
                c.database,
                c.table,
                kubetrail_sinks::http::redact_url(&c.url)
            ),
        };
        Ok(Session {
            engine,
            rt,
            reading,
        })
    }

    /// Streams an arbitrary SQL query's rows to `f`, at most `limit`; returns the column names.
    pub fn sql_each(
        &self,
        sql: &str,
        limit: Option<usize>,
        f: &mut RowSink<'_>,
    ) -> anyhow::Result<Vec<String>> {
        self.rt.block_on(async {
            let mut stream = self.engine.stream(sql).await?;
            let names: Vec<String> = stream
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let mut n = 0;
            while let Some(batch) = stream.next().await {
                for row in kubetrail_engine::cells(&batch?)? {
                    if limit.is_some_and(|l| n >= l) || f(row, &names)?.is_break() {
                        return Ok(names);
                    }
                    n += 1;
                }
            }
            Ok(names)
        })
    }
}

/// Converts what the write-ahead log holds beyond the Parquet files (nothing when the collector has kept up).
/// A log that cannot be opened (none yet) is skipped: the files are all there is. While another process
/// writes the directory (`serve`, `import`) nothing is converted here: that writer converts the log itself
/// within seconds, and two writers must never share a log.
fn flush(dir: &Path) -> anyhow::Result<()> {
    if !dir.join("wal").is_dir() {
        return Ok(());
    }
    let _writer = match kubetrail_runtime::data::try_lock_writer(dir, "query") {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::debug!(
                "another kubetrail process writes the data directory: reading what it converted"
            );
            return Ok(());
        }
        // A read-only copy (evidence on a read-only mount): read the files as they are.
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "cannot lock the data directory: reading it as it is");
            return Ok(());
        }
    };
    let wal = kubetrail_runtime::data::open_wal(dir, WalOptions::default())?;
    let root = dir.join("store");
    let failed = || {
        format!(
            "failed to convert recent events into Parquet in `{}`",
            root.display()
        )
    };
    let mut writer = ColumnarWriter::open(&root, wal.clone(), ColumnarOptions::default())
        .with_context(failed)?;
    // Nothing to do when the collector kept up; a lot when an import was interrupted: say so.
    let waiting = wal.durable_seq().saturating_sub(writer.position());
    if waiting >= 10_000 {
        eprintln!(
            "kubetrail: converting {} events the log holds beyond the Parquet files first (an interrupted \
             import or collector)...",
            crate::report::thousands(waiting)
        );
    }
    writer.flush().with_context(failed)?;
    Ok(())
}

/// A spinner on stderr while a scan runs, only on a terminal.
pub fn spinner(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// The SQL of a `--where` expression within the engine's limits (the API's too: `--where has 1200 terms; at
/// most 1000`).
fn where_sql(expr: &str) -> anyhow::Result<String> {
    use kubetrail_engine::limits;
    limits::check_where_bytes(expr).map_err(|e| anyhow::anyhow!("--where {e}"))?;
    let parsed = kubetrail_query::parse(expr)?;
    limits::check_where_terms(&parsed).map_err(|e| anyhow::anyhow!("--where {e}"))?;
    Ok(parsed.to_sql())
}

pub fn run(args: QueryArgs) -> anyhow::Result<Outcome> {
    let predicate = match &args.where_ {
        Some(expr) => Some(where_sql(expr)?),
        None => None,
    };
    let session = Session::open(&args.scope)?;
    let limit = (args.limit > 0).then_some(args.limit);
    let scanning = format!("scanning {}", session.reading);
    let bar = spinner(&scanning);
    let found = |n: usize| {
        if n.is_multiple_of(1000) {
            bar.set_message(format!(
                "{scanning}: {} rows so far",
                crate::report::thousands(n as u64)
            ));
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Some(sql) = &args.sql {
        kubetrail_engine::limits::check_sql(sql).map_err(|e| anyhow::anyhow!("--sql {e}"))?;
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut names_seen: Option<Vec<String>> = None;
        let json = args.format == crate::output::RowFormat::Json;
        let names = session.sql_each(sql, limit, &mut |row, names| {
            if !json {
                rows.push(row.iter().map(Cell::text).collect());
                found(rows.len());
                return Ok(ControlFlow::Continue(()));
            }
            let names = names_seen.get_or_insert_with(|| names.to_vec());
            let obj: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .cloned()
                .zip(row.into_iter().map(Cell::into_json))
                .collect();
            serde_json::to_writer(&mut out, &obj)?;
            out.write_all(b"\n")?;
            Ok(ControlFlow::Continue(()))
        });
        bar.finish_and_clear();
        let names = names?;
        match args.format {
            crate::output::RowFormat::Table => write_table(&mut out, &names, &rows)?,
            crate::output::RowFormat::Csv => write_csv(&mut out, &names, &rows)?,
            crate::output::RowFormat::Json => {}
        }
        out.flush()?;
        return Ok(Outcome::Ok);
    }

    let query = RowQuery {
        all_stages: args.all_stages,
        limit,
        with_event: args.format == crate::output::RowFormat::Json,
    };
    let mut rows = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    let result = session
        .rt
        .block_on(session.engine.requests(predicate.as_deref(), query, |row| {
            if args.format != crate::output::RowFormat::Json {
                rows.push(row);
                found(rows.len());
                return ControlFlow::Continue(());
            }
            bar.finish_and_clear();
            let event = row.event.unwrap_or_default();
            if let Err(e) = writeln!(out, "{event}") {
                failed = Some(e.into());
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }));
    bar.finish_and_clear();
    result?;
    if let Some(e) = failed {
        return Err(e);
    }
    let names: Vec<String> = ROW_HEADER.iter().map(|s| s.to_string()).collect();
    let cells: Vec<Vec<String>> = rows.iter().map(row_cells).collect();
    match args.format {
        crate::output::RowFormat::Table => write_table(&mut out, &names, &cells)?,
        crate::output::RowFormat::Csv => write_csv(&mut out, &names, &cells)?,
        crate::output::RowFormat::Json => {}
    }
    out.flush()?;
    if rows.is_empty() && args.format == crate::output::RowFormat::Table {
        eprintln!(
            "no matching events in {}{}",
            session.reading,
            if args.scope.since.is_none() {
                ""
            } else {
                " (widen --since/--until?)"
            }
        );
    } else if limit.is_some_and(|n| rows.len() >= n)
        && args.format == crate::output::RowFormat::Table
    {
        eprintln!(
            "showing the first {} (raise --limit, 0 for all)",
            rows.len()
        );
    }
    Ok(Outcome::Ok)
}

const ROW_HEADER: [&str; 10] = [
    "TIME",
    "USER",
    "VERB",
    "RESOURCE",
    "NAMESPACE/NAME",
    "IP",
    "CODE",
    "STAGE",
    "CLUSTER",
    "AUDIT ID",
];

fn row_cells(r: &EventRow) -> Vec<String> {
    let object = match (&r.namespace, &r.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (Some(ns), None) => format!("{ns}/"),
        (None, Some(n)) => n.clone(),
        (None, None) => String::new(),
    };
    vec![
        r.time(),
        r.user.clone(),
        r.verb.clone(),
        r.resource_path(),
        object,
        r.source_ips.join(","),
        r.code.map(|c| c.to_string()).unwrap_or_default(),
        r.stage.clone(),
        r.cluster.clone(),
        r.audit_id.clone(),
    ]
}

/// Columns padded to their widest value (control characters shown as spaces; invisible and
/// direction-changing ones escaped, `kubetrail_history::printable`: a user agent must not reorder a line).
pub fn write_table(
    out: &mut dyn Write,
    names: &[String],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let clean = |s: &str| -> String {
        let spaced: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        kubetrail_history::printable(&spaced).into_owned()
    };
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line =
        |out: &mut dyn Write, cells: &mut dyn Iterator<Item = String>| -> std::io::Result<()> {
            let mut s = String::new();
            for (i, (c, w)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(&c);
                if i + 1 < widths.len() {
                    s.extend(std::iter::repeat_n(
                        ' ',
                        w.saturating_sub(c.chars().count()),
                    ));
                }
            }
            writeln!(out, "{}", s.trim_end())
        };
    line(out, &mut names.iter().map(|n| clean(n)))?;
    for row in rows {
        line(out, &mut row.iter().map(|c| clean(c)))?;
    }
    Ok(())
}

/// RFC 4180: fields with a comma, quote or line break quoted, quotes doubled.
pub fn write_csv(
    out: &mut dyn Write,
    names: &[String],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let join = |cells: &[String]| {
        cells
            .iter()
            .map(|c| kubetrail_runtime::text::csv_field(c))
            .collect::<Vec<_>>()
            .join(",")
    };
    writeln!(out, "{}", join(names))?;
    for row in rows {
        writeln!(out, "{}", join(row))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `kubetrail query --format csv` defuses spreadsheet formulas as the API's export does: a user agent
    /// is the requester's words.
    #[test]
    fn csv_output_defuses_formulas() {
        let mut out = Vec::new();
        let names = vec!["user".to_string(), "user_agent".to_string()];
        let rows = vec![vec![
            "mallory".to_string(),
            "=HYPERLINK(\"http://x\",\"ok\")".to_string(),
        ]];
        super::write_csv(&mut out, &names, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "user,user_agent\nmallory,\"'=HYPERLINK(\"\"http://x\"\",\"\"ok\"\")\"\n"
        );
    }
}
