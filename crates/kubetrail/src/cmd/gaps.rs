//! `kubetrail gaps` and `kubetrail coverage`: the audit trail's own silences (`kubetrail_engine::reports`'
//! `gaps` and `coverage`), over the store, the lake or ClickHouse as `query` reads them, printed like `who`.

use clap::Args;
use kubetrail_engine::reports::{GapsRequest, ReportRequest};

use crate::Outcome;
use crate::cmd::query::ScopeArgs;
use crate::cmd::report::ReportFormat;

/// The range `gaps` covers without --since.
const GAPS_SINCE: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);
/// The range `coverage` covers without --since.
const COVERAGE_SINCE: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

#[derive(Debug, Args)]
#[command(
    after_help = "Silences are measured on the collector's clock (`received`, when an event arrived), per \
                  cluster and source (`webhook:<identity>`, `file:<path>`, `import`; `unknown` from ClickHouse): \
                  a gap is a period longer than --longer-than between two events of a source, or from its last \
                  event to the end of the range (ONGOING). A source that had not started is not silent; one that \
                  delivered in the day before the range and then nothing is. --since and --until bound when \
                  events were received (default: the 7 days before --until or now).\n\nExit status: 1 when \
                  there is a gap, 0 when there is none.\n\nExamples:\n  kubetrail gaps\n  kubetrail gaps \
                  --since 24h --longer-than 1m --cluster prod\n  kubetrail gaps --config \
                  /etc/kubetrail/kubetrail.yaml --format json"
)]
pub struct GapsArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// A silence longer than this is a gap (at least 1s; `detection.silence_after`'s default).
    #[arg(long, value_name = "DURATION", default_value = "5m",
          value_parser = kubetrail_runtime::duration::parse)]
    pub longer_than: jiff::SignedDuration,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Evidence of what the audit trail holds over a range (default: the 30 days before --until \
                  or now, of when events were received): per cluster and source its first and last event, the \
                  hours of the range and those with events (and their share), the gaps longer than \
                  --longer-than (their count and total, and each listed), events per hour (average, the lowest \
                  full hour, the highest); per cluster the audit levels recorded (None never is) and the stages. \
                  The title names the range and when the report was produced; --format markdown prints it as a \
                  document.\n\nExamples:\n  kubetrail coverage\n  kubetrail coverage --since \
                  2026-10-01T00:00:00Z --until 2026-11-01T00:00:00Z --format markdown"
)]
pub struct CoverageArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// A silence longer than this is a gap (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "5m",
          value_parser = kubetrail_runtime::duration::parse)]
    pub longer_than: jiff::SignedDuration,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// The request of the flags (--since `default` before --until or now when not given, as the API), and the
/// scope to open for it: the store is partitioned by when events happened, the range is of when they arrived
/// ([`GapsRequest::scope`]).
fn request(
    scope: &ScopeArgs,
    longer_than: jiff::SignedDuration,
    default: jiff::SignedDuration,
) -> anyhow::Result<(GapsRequest, ScopeArgs)> {
    let now = jiff::Timestamp::now();
    let since = match scope.since {
        Some(t) => t,
        None => scope.until.unwrap_or(now).checked_sub(default)?,
    };
    let req = GapsRequest {
        since: Some(since),
        until: scope.until,
        cluster: scope.cluster.clone(),
        longer_than,
        now_us: now.as_microsecond(),
    };
    let wide = req.scope();
    let open = ScopeArgs {
        since: wide.since,
        until: wide.until,
        ..scope.clone()
    };
    Ok((req, open))
}

pub fn gaps(args: GapsArgs) -> anyhow::Result<Outcome> {
    let (req, scope) = request(&args.scope, args.longer_than, GAPS_SINCE)?;
    let report = crate::cmd::report::print(&scope, ReportRequest::Gaps(req), args.format)?;
    Ok(if report.sections.iter().any(|s| !s.rows.is_empty()) {
        Outcome::Findings
    } else {
        Outcome::Ok
    })
}

pub fn coverage(args: CoverageArgs) -> anyhow::Result<Outcome> {
    let (req, scope) = request(&args.scope, args.longer_than, COVERAGE_SINCE)?;
    crate::cmd::report::print(&scope, ReportRequest::Coverage(req), args.format)?;
    Ok(Outcome::Ok)
}
