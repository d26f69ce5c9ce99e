//! `kubetrail history` (every write of one object, change by change) and `kubetrail sessions` (every exec,
//! attach and port-forward): `kubetrail_engine::history`, printed.

use std::io::Write;

use clap::{Args, ValueEnum};
use kubetrail_engine::history::{self, DEFAULT_HISTORY_LIMIT, History, HistoryRequest};
use kubetrail_engine::reports::ReportRequest;
use kubetrail_history::printable;

use crate::Outcome;
use crate::cmd::query::{ScopeArgs, Session, spinner};
use crate::cmd::report::{self, ReportFormat};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    /// One block per request: when, who, from where, and each field it changed.
    #[default]
    #[value(alias = "table")]
    Text,
    /// One JSON object: the object and its entries, each with its changes.
    Json,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Each request that created, updated, patched or deleted the object, in order: \
                  time, identity, source IP, user agent, verb, response code and what changed. A create shows \
                  the fields it set; a patch the fields its document sets (JSON patch, JSON merge patch, strategic \
                  merge patch: the audit log does not record which, so it is inferred and marked so); an update \
                  the fields that differ from the state recorded before it. A request logged at Metadata says \
                  so: its change was not recorded; a dry run changed nothing. Secret values show as [redacted], \
                  changed or not. Writes of the status subresource are counted, shown with --with-status.\n\n\
                  Examples:\n  kubetrail history deployments/payments-api -n prod --since 7d\n  \
                  kubetrail history clusterrolebinding/cluster-admin-2 --format json\n  \
                  kubetrail history cm/app-config -n prod --since 2026-11-01T00:00:00Z"
)]
pub struct HistoryArgs {
    /// The object: RESOURCE/NAME (`deployments/payments-api`; `deploy/payments-api` and other kubectl
    /// short names work; RESOURCE.GROUP/NAME for a custom resource whose plural a built-in kind has,
    /// `services.serving.knative.dev/api`).
    pub object: String,
    /// Its namespace (leave out for a cluster-scoped object).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[arg(long, value_enum, default_value_t = HistoryFormat::Text)]
    pub format: HistoryFormat,
    /// At most N requests (the first ones).
    #[arg(long, default_value_t = DEFAULT_HISTORY_LIMIT)]
    pub limit: usize,
    /// Also the writes of its `status` subresource (controllers reporting progress; counted otherwise).
    #[arg(long)]
    pub with_status: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Each exec, attach and port-forward: pod and container, the command with its \
                  arguments (passwords redacted), stdin and terminal, who and from where, start, end and duration \
                  (from the request's stages), and the outcome.\n\nExamples:\n  kubetrail sessions --since 24h\n  \
                  kubetrail sessions --user mallory@example.com --since 30d\n  \
                  kubetrail sessions -n prod-payments --format json"
)]
pub struct SessionsArgs {
    /// Only sessions this identity opened (also through impersonation).
    #[arg(long)]
    pub user: Option<String>,
    /// Only sessions opened with this credential (`JTI=…`, `X509SHA256=…`, an AWS access key id).
    #[arg(long, value_name = "ID")]
    pub credential_id: Option<String>,
    /// Only sessions into pods of this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// At most N sessions (the first ones).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

pub fn history(args: HistoryArgs) -> anyhow::Result<Outcome> {
    let mut req = HistoryRequest::parse(&args.object, args.namespace, args.limit)?;
    req.with_status = args.with_status;
    let session = Session::open(&args.scope)?;
    let bar = spinner(&format!(
        "reading the history of {} ({})",
        req.object(),
        session.reading
    ));
    let answer = session.rt.block_on(history::history(&session.engine, &req));
    bar.finish_and_clear();
    let answer = answer?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        HistoryFormat::Json => {
            serde_json::to_writer(&mut out, &answer)?;
            writeln!(out)?;
        }
        HistoryFormat::Text => write_text(&mut out, &answer)?,
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

/// The history as text: a line per request, then its changes indented. Every value goes through
/// [`printable`]: names, keys, user agents and notes are the watched's text, and a newline or a direction
/// change in them must not forge a line.
fn write_text(out: &mut impl Write, h: &History) -> std::io::Result<()> {
    writeln!(
        out,
        "history of {} ({} write(s))",
        printable(&h.object),
        h.entries.len()
    )?;
    let clusters: std::collections::BTreeSet<&str> =
        h.entries.iter().map(|e| e.cluster.as_str()).collect();
    for e in &h.entries {
        let code = e.code.map_or("no response".to_string(), |c| c.to_string());
        let mut line = format!("{}  {}  by {}", e.time, e.request(), e.who());
        if h.namespace.is_none()
            && let Some(ns) = &e.namespace
        {
            line.push_str(&format!("  in {ns}"));
        }
        if clusters.len() > 1 {
            line.push_str(&format!("  cluster {}", e.cluster));
        }
        line.push_str(&format!("  code {code}  audit {}", e.audit_id));
        writeln!(out, "\n{}", printable(&line))?;
        if let Some(ua) = &e.user_agent {
            writeln!(out, "    user agent: {}", printable(ua))?;
        }
        for c in &e.changes {
            writeln!(out, "    {}", printable(&c.to_string()))?;
        }
        if e.more > 0 {
            writeln!(out, "    … and {} more change(s)", e.more)?;
        }
        for n in &e.notes {
            writeln!(out, "    ({})", printable(n))?;
        }
    }
    for n in &h.notes {
        writeln!(out, "\n{}", printable(n))?;
    }
    Ok(())
}

pub fn sessions(args: SessionsArgs) -> anyhow::Result<Outcome> {
    let req = history::SessionsRequest {
        user: args.user.filter(|u| !u.is_empty()),
        credential: args.credential_id.filter(|c| !c.is_empty()),
        namespace: args.namespace.filter(|n| !n.is_empty()),
        limit: args.limit,
    };
    report::print(&args.scope, ReportRequest::Sessions(req), args.format)?;
    Ok(Outcome::Ok)
}
