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
    after_help = "Requests made as the identity through impersonation are included and marked. With \
                  --credential-id, only the requests made with that credential (one token of a service account, one \
                  client certificate, one AWS access key): without --user, whoever presented it.\n\n\
                  Examples:\n  kubetrail timeline --user alice@example.com --since 7d\n  \
                  kubetrail timeline --user system:serviceaccount:ci:deployer --since 30d --format json\n  \
                  kubetrail timeline --credential-id JTI=7f3e9c1a-0b6d-4e0f-9a55-3c2b1d0e8f77 --since 30d"
)]
pub struct TimelineArgs {
    /// The identity: a username as the apiserver authenticated it.
    #[arg(long, required_unless_present = "credential_id")]
    pub user: Option<String>,
    /// Only requests made with this credential (`JTI=…`, `X509SHA256=…`, an AWS access key id; `kubetrail
    /// whois` lists them).
    #[arg(long, value_name = "ID")]
    pub credential_id: Option<String>,
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
    #[arg(long, required_unless_present = "credential_id")]
    pub user: Option<String>,
    /// Only what was done with this credential (`JTI=…` of a stolen token, `X509SHA256=…`, an AWS access key
    /// id); without --user, by whoever presented it.
    #[arg(long, value_name = "ID")]
    pub credential_id: Option<String>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Looks the identity up as a username (also as impersonated), an AWS ARN (a session's or its \
                  role's), an EKS session name (the human behind an assumed role, as the session name says), or a \
                  credential id (`JTI=` of a service-account token, `X509SHA256=` of a client certificate, an AWS \
                  access key id). Sections: identities found (kind, who is behind, uids, groups, first and last \
                  seen), cloud principals (EKS role, session, access keys), credentials (the pod and node a token \
                  was bound to, first and last use, source addresses; a token used from a public address is named, \
                  as rule kt-sa-token-external reports it), source addresses (a node's, private or public), user \
                  agents, impersonation both ways, and other identities sharing a credential or AWS role.\n\n\
                  Examples:\n  kubetrail whois dana@example.com --since 30d\n  \
                  kubetrail whois arn:aws:iam::111122223333:role/eks-platform-admins\n  \
                  kubetrail whois JTI=7f3e9c1a-0b6d-4e0f-9a55-3c2b1d0e8f77 --format json\n  \
                  kubetrail whois system:serviceaccount:staging:web-frontend"
)]
pub struct WhoisArgs {
    /// A username, an AWS ARN or session name, or a credential id.
    pub identity: String,
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
        ReportRequest::Whois(_) => "looking the identity up",
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
    let req = TimelineRequest {
        user: args.user.unwrap_or_default(),
        credential: args.credential_id,
    };
    run(&args.scope, ReportRequest::Timeline(req), args.format)
}

pub fn scope(args: ScopeReportArgs) -> anyhow::Result<Outcome> {
    let req = ScopeRequest {
        user: args.user.unwrap_or_default(),
        credential: args.credential_id,
    };
    run(&args.scope, ReportRequest::Scope(req), args.format)
}

pub fn whois(args: WhoisArgs) -> anyhow::Result<Outcome> {
    let req = kubetrail_engine::whois::WhoisRequest {
        identity: args.identity,
    };
    run(&args.scope, ReportRequest::Whois(req), args.format)
}

pub fn clusters(args: ClustersArgs) -> anyhow::Result<Outcome> {
    let req = ClustersRequest {
        now_us: jiff::Timestamp::now().as_microsecond(),
    };
    run(&args.scope, ReportRequest::Clusters(req), args.format)
}
