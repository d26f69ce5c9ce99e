//! `kubetrail who`, `timeline` and `scope`: the task-shaped reports of `kubetrail_engine::reports`, printed.

use std::io::Write;

use clap::{Args, ValueEnum};
use kubetrail_engine::reports::{
    self, ClustersRequest, Report, ReportRequest, ScopeRequest, TimelineRequest, WhoRequest,
};

use crate::Outcome;
use crate::cmd::query::{ScopeArgs, Session, spinner, write_table};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    #[default]
    #[value(alias = "text")]
    Table,
    /// One JSON object per line, with a `section` key.
    Json,
    Markdown,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubetrail who delete pods/payments-api-7f9c -n prod --since 24h\n  \
                  kubetrail who get secrets -n prod-payments --since 2026-11-01T00:00:00Z --until 2026-11-02T00:00:00Z\n  \
                  kubetrail who create clusterrolebindings --since 7d --format markdown"
)]
pub struct WhoArgs {
    /// The verb (`get`, `list`, `create`, `delete`, `patch`, ...; a glob such as `*` for any).
    pub verb: String,
    /// The resource, optionally with a name: `pods`, `pods/web-1`, `secrets/db-password`.
    pub resource: String,
    /// Only in this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// At most N requests.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Requests made as the identity through impersonation are included and marked.\n\n\
                  Examples:\n  kubetrail timeline --user alice@example.com --since 7d\n  \
                  kubetrail timeline --user system:serviceaccount:ci:deployer --since 30d --format json"
)]
pub struct TimelineArgs {
    /// The identity: a username as the apiserver authenticated it.
    #[arg(long)]
    pub user: String,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Sections: secrets read (by the identity, and by other identities from its source IPs), \
                  RBAC objects created or changed, workloads created (privileged or not), exec/attach/portforward \
                  sessions, tokens and certificates requested, impersonation, and what it created that still \
                  exists as far as the store knows (no later delete).\n\nExamples:\n  kubetrail scope --user \
                  dave@example.com --since 30d\n  kubetrail scope --user system:serviceaccount:staging:web --format \
                  markdown > incident.md"
)]
pub struct ScopeReportArgs {
    /// The suspect identity (username).
    #[arg(long)]
    pub user: String,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
#[command(
    after_help = "With a config whose `query.backend` is clickhouse, every cluster that ships to the fleet's \
                  ClickHouse is listed.\n\nExamples:\n  kubetrail clusters --since 24h\n  \
                  kubetrail clusters --config /etc/kubetrail/kubetrail.yaml --format json"
)]
pub struct ClustersArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// Prints a report as a table, markdown or JSON lines (one object per row, with a `section` key).
fn write(report: &Report, format: ReportFormat) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        ReportFormat::Table => {
            writeln!(out, "{}", report.title)?;
            for s in &report.sections {
                writeln!(out, "\n{} ({})", s.title, s.rows.len())?;
                if !s.rows.is_empty() {
                    let names: Vec<String> = s.columns.iter().map(|h| h.to_string()).collect();
                    write_table(&mut out, &names, &s.rows)?;
                }
                if let Some(n) = &s.note {
                    writeln!(out, "{n}")?;
                }
            }
        }
        ReportFormat::Markdown => {
            writeln!(out, "# {}", report.title)?;
            for s in &report.sections {
                writeln!(out, "\n## {} ({})\n", s.title, s.rows.len())?;
                if !s.rows.is_empty() {
                    let cell = |c: &str| c.replace('|', "\\|").replace(['\n', '\r'], " ");
                    writeln!(out, "| {} |", s.columns.join(" | "))?;
                    writeln!(out, "|{}", " --- |".repeat(s.columns.len()))?;
                    for r in &s.rows {
                        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
                        writeln!(out, "| {} |", cells.join(" | "))?;
                    }
                }
                if let Some(n) = &s.note {
                    writeln!(out, "\n{n}")?;
                }
            }
        }
        ReportFormat::Json => {
            for s in &report.sections {
                let keys = s.json_keys();
                for r in &s.rows {
                    let mut obj = serde_json::Map::new();
                    obj.insert("section".into(), s.key.clone().into());
                    for (k, c) in keys.iter().zip(r) {
                        obj.insert(k.clone(), c.clone().into());
                    }
                    serde_json::to_writer(&mut out, &obj)?;
                    writeln!(out)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Opens the store for `scope`, builds the report under a progress spinner, prints it.
fn run(scope: &ScopeArgs, req: ReportRequest, format: ReportFormat) -> anyhow::Result<Outcome> {
    print(scope, req, format)?;
    Ok(Outcome::Ok)
}

/// [`run`], handing the report back (for a command whose exit code depends on it).
pub(crate) fn print(
    scope: &ScopeArgs,
    req: ReportRequest,
    format: ReportFormat,
) -> anyhow::Result<Report> {
    let session = Session::open(scope)?;
    let what = match &req {
        ReportRequest::Who(_) => "searching",
        ReportRequest::Timeline(_) => "building the timeline",
        ReportRequest::Scope(_) => "scoping",
        ReportRequest::Clusters(_) => "counting",
        ReportRequest::Gaps(_) | ReportRequest::Coverage(_) => "looking for silences",
        ReportRequest::Sessions(_) => "listing sessions",
    };
    let bar = spinner(&format!("{what} ({})", session.reading));
    let report = session.rt.block_on(reports::build(&session.engine, &req));
    bar.finish_and_clear();
    let report = report?;
    write(&report, format)?;
    Ok(report)
}

pub fn who(args: WhoArgs) -> anyhow::Result<Outcome> {
    let req = WhoRequest {
        verb: args.verb,
        resource: args.resource,
        namespace: args.namespace,
        limit: args.limit,
    };
    run(&args.scope, ReportRequest::Who(req), args.format)
}

pub fn timeline(args: TimelineArgs) -> anyhow::Result<Outcome> {
    let req = TimelineRequest { user: args.user };
    run(&args.scope, ReportRequest::Timeline(req), args.format)
}

pub fn scope(args: ScopeReportArgs) -> anyhow::Result<Outcome> {
    let req = ScopeRequest { user: args.user };
    run(&args.scope, ReportRequest::Scope(req), args.format)
}

pub fn clusters(args: ClustersArgs) -> anyhow::Result<Outcome> {
    let req = ClustersRequest {
        now_us: jiff::Timestamp::now().as_microsecond(),
    };
    run(&args.scope, ReportRequest::Clusters(req), args.format)
}
