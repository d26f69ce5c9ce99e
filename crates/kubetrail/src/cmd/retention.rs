//! `kubetrail retention`: show what retention would delete (`plan`), delete it with every deletion recorded in
//! a signed checkpoint first (`apply`), and manage legal holds (`hold add|list|release`). The policy is
//! `DATA/retention.yaml`; the rules are in `kubetrail_store::retention`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use jiff::Timestamp;
use kubetrail_store::retention::{
    self, Expiry, Hold, Plan, PlannedDeletion, RetainedBy, RetentionLock, RetentionPolicy,
};
use serde_json::{Value, json};

use crate::Outcome;
use crate::report::bytes;
use kubetrail_runtime::duration::parse_time;

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Show what retention would delete now, how many bytes, and which holds keep what.
    #[command(after_help = POLICY_HELP)]
    Plan(PlanArgs),
    /// Delete the expired partition files `plan` shows, recording every deletion in a signed checkpoint first.
    #[command(
        after_help = "Run it with the collector stopped (from cron between restarts, or after `systemctl stop \
                      kubetrail`): the signed checkpoint that records the deletions covers the write-ahead log as \
                      it is on disk, and a running collector may have written records it has not made durable \
                      yet.\n\n`kubetrail verify` accepts the deleted files afterwards (their deletion is signed); a \
                      file deleted any other way is reported missing.\n\nExamples:\n  kubetrail retention plan \
                      --data /var/lib/kubetrail\n  kubetrail retention apply --data /var/lib/kubetrail --yes"
    )]
    Apply(ApplyArgs),
    /// Legal holds: events retention never deletes while the hold exists.
    #[command(subcommand)]
    Hold(HoldCommand),
}

const POLICY_HELP: &str = "The policy is DATA/retention.yaml (400 days for everything when absent):\n\n  \
default_days: 400          # events that match no class; at least 365\n  \
classes:                   # a partition file stays as long as its longest-kept event\n    \
- name: kcm-watch\n      \
days: 30\n      \
match: {users: [system:kube-controller-manager], verbs: [watch]}\n  \
holds:                     # also added with `kubetrail retention hold add`\n    \
- {id: CASE-7, reason: litigation, created: 2026-01-01T00:00:00Z, since: 2025-06-01T00:00:00Z}\n\n\
Match lists (clusters, users, verbs, resources, namespaces) take exact values or prefixes ending in `*`. Alerts \
pin the events they point at in DATA/retention-pins.jsonl ({\"audit_id\"|\"since\"/\"until\", \"days\"}).\n\n\
Examples:\n  kubetrail retention plan --data /var/lib/kubetrail\n  kubetrail retention plan --at 2027-01-01T00:00:00Z \
--format json";

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
    /// Plan as of this time instead of now (RFC 3339): what will have expired by then.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub at: Option<Timestamp>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// Delete: without it, nothing is deleted and the command fails.
    #[arg(long)]
    pub yes: bool,
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Hold events by time range, user and cluster: files holding any of them are never deleted.
    #[command(
        after_help = "Times are RFC 3339 (`2026-11-01T00:00:00Z`) or a duration ago (`30d`). Without --since/--until \
                      the range is open; without --user/--cluster any user or cluster matches (users match the \
                      authenticated and the impersonated user; a trailing `*` is a prefix). Every hold added or \
                      released is logged with the OS user in DATA/retention-holds.log.\n\nExamples:\n  kubetrail \
                      retention hold add --id CASE-1234 --reason 'litigation hold, ticket LEG-88' --since \
                      2026-03-01T00:00:00Z --until 2026-04-01T00:00:00Z\n  kubetrail retention hold add --id IR-7 \
                      --reason 'compromised token' --user system:serviceaccount:ci:deployer"
    )]
    Add(HoldAddArgs),
    /// List the holds (those of retention.yaml and those added here).
    List(HoldListArgs),
    /// Release a hold: the files it kept come back under normal retention.
    Release(HoldReleaseArgs),
}

#[derive(Debug, Args)]
pub struct HoldAddArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// A new id (letters, digits, `.`, `_`, `:`, `-`, `/`), such as the case number.
    #[arg(long)]
    pub id: String,
    /// Why: kept with the hold and in the log.
    #[arg(long)]
    pub reason: String,
    /// Events from this time.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Events up to this time (inclusive).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<Timestamp>,
    /// Events of this user (repeatable).
    #[arg(long = "user", value_name = "USER")]
    pub users: Vec<String>,
    /// Events of this cluster (repeatable).
    #[arg(long = "cluster", value_name = "CLUSTER")]
    pub clusters: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HoldListArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
    pub format: crate::output::Format,
}

#[derive(Debug, Args)]
pub struct HoldReleaseArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// The hold's id.
    pub id: String,
}

pub fn run(cmd: RetentionCommand) -> anyhow::Result<Outcome> {
    match cmd {
        RetentionCommand::Plan(args) => plan(args),
        RetentionCommand::Apply(args) => apply(args),
        RetentionCommand::Hold(HoldCommand::Add(args)) => hold_add(args),
        RetentionCommand::Hold(HoldCommand::List(args)) => hold_list(args),
        RetentionCommand::Hold(HoldCommand::Release(args)) => hold_release(args),
    }
}

fn existing_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = kubetrail_runtime::data::resolve(flag, None);
    if !dir.is_dir() {
        anyhow::bail!(
            "data directory `{}` does not exist: pass --data DIR",
            dir.display()
        );
    }
    Ok(dir)
}

fn load_policy(dir: &Path) -> anyhow::Result<RetentionPolicy> {
    RetentionPolicy::load(dir).context("failed to load the retention policy")
}

fn make_plan(dir: &Path, policy: &RetentionPolicy, now: Timestamp) -> anyhow::Result<Plan> {
    retention::plan(dir, policy, now)
        .with_context(|| format!("failed to plan retention in `{}`", dir.display()))
}

fn plan(args: PlanArgs) -> anyhow::Result<Outcome> {
    let dir = existing_dir(args.data)?;
    let policy = load_policy(&dir)?;
    let plan = make_plan(&dir, &policy, args.at.unwrap_or_else(now))?;
    match args.format {
        crate::output::Format::Json => {
            for d in &plan.delete {
                println!("{}", deletion_json("delete", d));
            }
            for line in other_lines_json(&plan) {
                println!("{line}");
            }
            println!("{}", summary_json(&plan, &policy));
        }
        crate::output::Format::Table => {
            println!("{}", policy_line(&dir, &policy));
            for d in &plan.delete {
                println!(
                    "delete  {}  {}  {}",
                    d.path.display(),
                    bytes(d.bytes),
                    why(&d.expiry)
                );
            }
            print_others(&plan);
            println!(
                "would delete {} ({}) as of {}; keep {} ({}), {} of them held{}",
                plural(plan.delete.len(), "file", "files"),
                bytes(plan.delete_bytes()),
                plan.now,
                plural(plan.keep_count as usize, "file", "files"),
                bytes(plan.keep_bytes),
                plan.kept_by_hold.len(),
                unreadable_note(&plan)
            );
        }
    }
    Ok(Outcome::Ok)
}

fn apply(args: ApplyArgs) -> anyhow::Result<Outcome> {
    let dir = existing_dir(args.data)?;
    // Not while a collector writes: its checkpoints and conversions would race the deletions.
    let _writer = kubetrail_runtime::data::lock_writer(&dir, "retention apply")?;
    // Held from loading the policy to the last deletion: a hold added meanwhile waits, or is seen.
    let lock = RetentionLock::acquire(&dir)?;
    let policy = load_policy(&dir)?;
    let plan = make_plan(&dir, &policy, now())?;
    if !args.yes {
        anyhow::bail!(
            "refusing to delete {} files ({}) without --yes: review them with `kubetrail retention plan --data {}`, \
             then run this again with --yes",
            plan.delete.len(),
            bytes(plan.delete_bytes()),
            dir.display()
        );
    }
    let signer = kubetrail_runtime::integrity_key::signer(&dir)?;
    let applied = retention::apply(&lock, &plan, &signer, None)
        .with_context(|| format!("failed to apply retention in `{}`", dir.display()))?;
    drop(lock);
    match args.format {
        crate::output::Format::Json => {
            for d in &applied.deleted {
                println!("{}", deletion_json("deleted", d));
            }
            for p in &applied.skipped {
                println!(
                    "{}",
                    json!({"action": "skipped", "path": rel(p), "why": "gone or changed since planned"})
                );
            }
            for line in other_lines_json(&plan) {
                println!("{line}");
            }
            println!(
                "{}",
                json!({
                    "action": "summary",
                    "now": plan.now.to_string(),
                    "deleted_files": applied.deleted.len(),
                    "deleted_bytes": applied.bytes,
                    "skipped_files": applied.skipped.len(),
                    "held_files": plan.kept_by_hold.len(),
                    "unreadable_files": plan.unreadable.len(),
                    "checkpoint": applied.checkpoint.as_deref().map(|p| rel(p.strip_prefix(&dir).unwrap_or(p))),
                })
            );
        }
        crate::output::Format::Table => {
            for d in &applied.deleted {
                println!(
                    "deleted  {}  {}  {}",
                    d.path.display(),
                    bytes(d.bytes),
                    why(&d.expiry)
                );
            }
            for p in &applied.skipped {
                println!("skipped  {}  gone or changed since planned", p.display());
            }
            print_others(&plan);
            match &applied.checkpoint {
                Some(cp) => println!(
                    "deleted {} ({}), recorded in checkpoint `{}`; {} partition directories removed; {} held{}",
                    plural(applied.deleted.len(), "file", "files"),
                    bytes(applied.bytes),
                    cp.display(),
                    applied.dirs_removed,
                    plan.kept_by_hold.len(),
                    unreadable_note(&plan)
                ),
                None => println!(
                    "nothing has expired: {} ({}) kept, {} of them held{}",
                    plural(plan.keep_count as usize, "file", "files"),
                    bytes(plan.keep_bytes),
                    plan.kept_by_hold.len(),
                    unreadable_note(&plan)
                ),
            }
        }
    }
    Ok(Outcome::Ok)
}

fn hold_add(args: HoldAddArgs) -> anyhow::Result<Outcome> {
    let dir = existing_dir(args.data)?;
    let now = now();
    let hold = Hold {
        id: args.id,
        reason: args.reason,
        created: now,
        since: args.since,
        until: args.until,
        users: args.users,
        clusters: args.clusters,
    };
    let hold = retention::add_hold(&dir, hold, &os_user(), now)
        .with_context(|| format!("failed to add the hold in `{}`", dir.display()))?;
    println!(
        "added hold `{}`: {}; retention keeps the files holding these events until it is released",
        hold.id,
        scope(&hold)
    );
    Ok(Outcome::Ok)
}

fn hold_list(args: HoldListArgs) -> anyhow::Result<Outcome> {
    let dir = existing_dir(args.data)?;
    let policy = load_policy(&dir)?;
    let managed: Vec<String> = retention::read_holds(&dir)?
        .into_iter()
        .map(|h| h.id)
        .collect();
    for h in &policy.holds {
        let source = if managed.contains(&h.id) {
            retention::HOLDS_FILE
        } else {
            retention::POLICY_FILE
        };
        match args.format {
            crate::output::Format::Json => {
                let mut v = serde_json::to_value(h)?;
                v["source"] = json!(source);
                println!("{v}");
            }
            crate::output::Format::Table => println!(
                "{}  created {}  {}  ({source}): {}",
                h.id,
                h.created,
                scope(h),
                h.reason
            ),
        }
    }
    if args.format == crate::output::Format::Table && policy.holds.is_empty() {
        println!("no holds");
    }
    Ok(Outcome::Ok)
}

fn hold_release(args: HoldReleaseArgs) -> anyhow::Result<Outcome> {
    let dir = existing_dir(args.data)?;
    let by = os_user();
    let hold = retention::release_hold(&dir, &args.id, &by, now())
        .with_context(|| format!("failed to release the hold in `{}`", dir.display()))?;
    println!(
        "released hold `{}` ({}) as {by}, logged in `{}`; the files it kept are under normal retention again \
         (`kubetrail retention plan`)",
        hold.id,
        scope(&hold),
        dir.join(retention::HOLDS_LOG).display()
    );
    Ok(Outcome::Ok)
}

/// Who did something from the command line, for records of who did what: `cli:<user> (uid N)`, the user as
/// `$USER` (else `$LOGNAME`) claims and the uid the process runs as, which no environment changes; `cli:`
/// keeps it apart from the API's `api:<identity>`.
pub fn os_user() -> String {
    let claimed = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .map(|u| {
            u.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        });
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self") {
            return match claimed {
                Some(u) => format!("cli:{u} (uid {})", m.uid()),
                None => format!("cli:uid {}", m.uid()),
            };
        }
    }
    format!("cli:{}", claimed.unwrap_or_else(|| "unknown".into()))
}

/// Now, to the second: what plans and holds print and record.
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn scope(h: &Hold) -> String {
    let mut parts = vec![match (h.since, h.until) {
        (Some(s), Some(u)) => format!("events from {s} to {u}"),
        (Some(s), None) => format!("events since {s}"),
        (None, Some(u)) => format!("events until {u}"),
        (None, None) => "events of any time".into(),
    }];
    if !h.users.is_empty() {
        parts.push(format!("users {}", h.users.join(", ")));
    }
    if !h.clusters.is_empty() {
        parts.push(format!("clusters {}", h.clusters.join(", ")));
    }
    parts.join(", ")
}

fn policy_line(dir: &Path, p: &RetentionPolicy) -> String {
    let source = dir.join(retention::POLICY_FILE);
    let source = if source.exists() {
        format!("`{}`", source.display())
    } else {
        "the defaults (no retention.yaml)".into()
    };
    let classes = if p.classes.is_empty() {
        "no classes".into()
    } else {
        p.classes
            .iter()
            .map(|c| format!("{} {} days", c.name, c.days))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "policy from {source}: default {} days; {classes}; {}, {}",
        p.default_days,
        plural(p.holds.len(), "hold", "holds"),
        plural(p.pins.len(), "pin", "pins")
    )
}

fn why(e: &Expiry) -> String {
    format!("{} {} days, expired {}", e.by, e.days, e.at)
}

fn unreadable_note(plan: &Plan) -> String {
    if plan.unreadable.is_empty() {
        String::new()
    } else {
        format!(
            ", {} unreadable (kept): run `kubetrail verify`",
            plan.unreadable.len()
        )
    }
}

fn print_others(plan: &Plan) {
    for h in &plan.kept_by_hold {
        println!(
            "held    {}  {}  by {} ({})",
            h.path.display(),
            bytes(h.bytes),
            h.holds.join(", "),
            why(&h.expiry)
        );
    }
    for u in &plan.unreadable {
        println!(
            "kept    {}  {}  unreadable: {}",
            u.path.display(),
            bytes(u.bytes),
            u.error
        );
    }
}

fn rel(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn expiry_json(e: &Expiry) -> Value {
    let (kind, name) = match &e.by {
        RetainedBy::Default => ("default", Value::Null),
        RetainedBy::Class(c) => ("class", json!(c)),
        RetainedBy::Pin(p) => ("pin", json!(p)),
    };
    json!({"by": kind, "name": name, "days": e.days, "expired": e.at.to_string()})
}

fn deletion_json(action: &str, d: &PlannedDeletion) -> Value {
    json!({
        "action": action,
        "path": rel(&d.path),
        "cluster": d.cluster,
        "hour": d.hour.to_string(),
        "bytes": d.bytes,
        "retention": expiry_json(&d.expiry),
    })
}

fn other_lines_json(plan: &Plan) -> Vec<Value> {
    let mut out = Vec::new();
    for h in &plan.kept_by_hold {
        out.push(json!({
            "action": "held",
            "path": rel(&h.path),
            "cluster": h.cluster,
            "hour": h.hour.to_string(),
            "bytes": h.bytes,
            "holds": h.holds,
            "retention": expiry_json(&h.expiry),
        }));
    }
    for u in &plan.unreadable {
        out.push(json!({
            "action": "unreadable",
            "path": rel(&u.path),
            "bytes": u.bytes,
            "error": u.error,
        }));
    }
    out
}

fn summary_json(plan: &Plan, policy: &RetentionPolicy) -> Value {
    json!({
        "action": "summary",
        "now": plan.now.to_string(),
        "delete_files": plan.delete.len(),
        "delete_bytes": plan.delete_bytes(),
        "keep_files": plan.keep_count,
        "keep_bytes": plan.keep_bytes,
        "held_files": plan.kept_by_hold.len(),
        "unreadable_files": plan.unreadable.len(),
        "default_days": policy.default_days,
        "classes": policy.classes.iter().map(|c| json!({"name": c.name, "days": c.days})).collect::<Vec<_>>(),
        "holds": policy.holds.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        "pins": policy.pins.len(),
    })
}
