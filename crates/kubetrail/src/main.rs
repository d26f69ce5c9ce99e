//! `kubetrail`: the command line. Parses arguments, hands them to `kubetrail-runtime` (where the services
//! live), prints, and maps errors to exit codes (0 ok, 1 findings, 2 usage or runtime error).

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the collector makes and frees small strings for every event (parsing,
/// detection, conversion), and glibc's malloc and free were 17% of a saturated `serve`'s CPU
/// (docs/benchmarks.md, "Ingest").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;
mod output;
mod progress;
mod report;

/// Kubernetes audit logging as the forensic foundation of a cluster's security.
#[derive(Debug, Parser)]
#[command(name = "kubetrail", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: receive audit events (webhook, audit log files), redact, store durably.
    Serve(cmd::serve::ServeArgs),
    /// Import audit files (native, EKS, GKE, AKS; plain or gzip) through the collector's pipeline.
    Import(cmd::import::ImportArgs),
    /// Check kubetrail's own configuration.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Write, check, lint, simulate and explain kube-apiserver audit policies.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Generate realistic, deterministic audit traffic (JSON lines) for load tests and demos.
    Gen(cmd::generate::GenArgs),
    /// Write certificates, webhook kubeconfig, audit policy and config to connect kube-apiserver to kubetrail.
    #[command(subcommand)]
    Setup(cmd::setup::SetupCommand),
    /// Check every record, file and checkpoint of the data directory; name the first damaged one (exit 1).
    Verify(cmd::verify::VerifyArgs),
    /// Sign a checkpoint now, export the newest one for anchoring off the node, print the public key.
    #[command(subcommand)]
    Checkpoint(cmd::checkpoint::CheckpointCommand),
    /// Search stored events with a filter expression or SQL.
    Query(cmd::query::QueryArgs),
    /// Who did VERB on RESOURCE[/NAME]: identity, source, time and outcome of each matching request.
    Who(cmd::report::WhoArgs),
    /// Everything an identity did, grouped by resource and verb.
    Timeline(cmd::report::TimelineArgs),
    /// An incident responder's first report on a suspect identity: secrets, RBAC, workloads, exec, tokens.
    Scope(cmd::report::ScopeReportArgs),
    /// Who or what is behind an identity: cloud principal and session, a token's pod and node, its first and
    /// last use and addresses, impersonation, shared credentials.
    Whois(cmd::report::WhoisArgs),
    /// RBAC at any moment: import a snapshot; who could do what when, grants added and removed, unused grants.
    #[command(subcommand)]
    Rbac(cmd::rbac::RbacCommand),
    /// Every write of one object, in order: who, from where, and each field it changed.
    History(cmd::history::HistoryArgs),
    /// Every exec, attach and port-forward: pod, container, command, terminal, who, start, end, duration.
    Sessions(cmd::history::SessionsArgs),
    /// The clusters whose events are stored (a fleet's, through ClickHouse): events, rate, last event.
    Clusters(cmd::report::ClustersArgs),
    /// The periods each cluster's audit sources delivered no event (exit 1 when there is one).
    Gaps(cmd::gaps::GapsArgs),
    /// Evidence of what the audit trail holds: per source hours with events, gaps, rate; levels and stages.
    Coverage(cmd::gaps::CoverageArgs),
    /// Run the detection rules (built-in pack, Sigma files) over audit files: alerts with severity and runbook.
    Detect(cmd::detect::DetectArgs),
    /// List the detection rules, show one's documentation and runbook, test rules against their fixtures.
    #[command(subcommand)]
    Rules(cmd::rules::RulesCommand),
    /// The alerts serve raised: list, show, acknowledge, resolve, assign, annotate (each change recorded).
    #[command(subcommand)]
    Alerts(cmd::alerts::AlertsCommand),
    /// Shipping off the node: each sink's progress and lag, and the records targets refused (dead letters).
    #[command(subcommand)]
    Sinks(cmd::sinks::SinksCommand),
    /// Delete expired partitions (classes by rule, default 400 days), keeping legal holds; every deletion signed.
    #[command(subcommand)]
    Retention(cmd::retention::RetentionCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(cmd::shell::CompletionArgs),
    /// Write man pages for kubetrail and every command to a directory.
    Man(cmd::shell::ManArgs),
}

/// What a command reports back: success, or findings (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Findings,
}

fn main() -> ExitCode {
    // `serve` runs each API query in a worker process of this binary.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            kubetrail_runtime::service::api::WORKER_ARG,
        ))
    {
        return kubetrail_runtime::service::api::worker_main();
    }
    // Queries are planned on the thread that runs the command (`block_on`): it gets the stack the largest
    // accepted query needs (address space: pages are used only as deep as a query goes).
    std::thread::Builder::new()
        .name("kubetrail".into())
        .stack_size(kubetrail_engine::limits::QUERY_STACK_BYTES)
        .spawn(command)
        .map_or(ExitCode::from(2), |t| {
            t.join().unwrap_or(ExitCode::from(101))
        })
}

fn command() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Config(c) => cmd::config::run(c),
        Command::Policy(c) => cmd::policy::run(c),
        Command::Gen(args) => cmd::generate::run(args),
        Command::Detect(args) => cmd::detect::run(args),
        Command::Rules(c) => cmd::rules::run(c),
        Command::Alerts(c) => cmd::alerts::run(c),
        Command::Sinks(c) => cmd::sinks::run(c),
        Command::Setup(c) => cmd::setup::run(c),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Checkpoint(c) => cmd::checkpoint::run(c),
        Command::Query(args) => cmd::query::run(args),
        Command::Who(args) => cmd::report::who(args),
        Command::Timeline(args) => cmd::report::timeline(args),
        Command::Scope(args) => cmd::report::scope(args),
        Command::Whois(args) => cmd::report::whois(args),
        Command::Rbac(cmd) => cmd::rbac::run(cmd),
        Command::History(args) => cmd::history::history(args),
        Command::Sessions(args) => cmd::history::sessions(args),
        Command::Clusters(args) => cmd::report::clusters(args),
        Command::Gaps(args) => cmd::gaps::gaps(args),
        Command::Coverage(args) => cmd::gaps::coverage(args),
        Command::Retention(c) => cmd::retention::run(c),
        Command::Completion(args) => cmd::shell::completion(args, Cli::command()),
        Command::Man(args) => cmd::shell::man(args, Cli::command()),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(err) => {
            // A closed pipe (`kubetrail gen | head`) is not an error worth reporting.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", message(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause the text before it already says (libraries
/// whose error wraps another and prints it, as DataFusion's and ours around it do).
fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
