//! `kubetrail rbac import|who-can|diff|grants|unused`: RBAC at any moment, from an imported snapshot and the
//! RBAC writes recorded since (`kubetrail_engine::rbac`), printed.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use kubetrail_engine::rbac::{self, Base};
use kubetrail_rbac::UserRef;
use kubetrail_runtime::rbac_base;

use crate::Outcome;
use crate::cmd::query::{ScopeArgs, Session, spinner, write_table};
use crate::output::Format;

#[derive(Debug, Subcommand)]
pub enum RbacCommand {
    /// Keep an RBAC snapshot (`kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A -o json`) as the
    /// base the recorded RBAC writes are replayed on.
    #[command(
        after_help = "The writes recorded after --taken are replayed on the snapshot: give the time it was \
                  taken (a snapshot taken before kubetrail's first event makes every later write count). Several \
                  snapshots may be kept; each question is answered from the newest taken before its moment.\n\n\
                  Examples:\n  kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A -o json > rbac.json\n  \
                  kubetrail rbac import rbac.json --taken now --cluster prod\n  \
                  kubetrail rbac import rbac-2026-11-01.json --taken 2026-11-01T00:00:00Z"
    )]
    Import(ImportArgs),
    /// Who could make a request at a moment, and through which binding and role (aggregation and wildcards
    /// resolved as the apiserver's RBAC authorizer does).
    #[command(
        after_help = "RESOURCE as `kubectl auth can-i` takes it: `secrets`, `deployments.apps`, `pods/exec`; a \
                  non-resource URL starts with `/` (`/metrics`). Subjects that depend on an RBAC object changed without \
                  its body being recorded (logged at Metadata) are marked uncertain.\n\nExamples:\n  \
                  kubetrail rbac who-can get secrets -n prod-payments --at 2026-03-01T12:00:00Z\n  \
                  kubetrail rbac who-can create pods/exec -n production\n  \
                  kubetrail rbac who-can get /metrics --format json"
    )]
    WhoCan(WhoCanArgs),
    /// The grants added and removed in a range, write by write: by whom, from where, what each subject gained
    /// or lost.
    #[command(after_help = "Examples:\n  kubetrail rbac diff --since 7d\n  \
                  kubetrail rbac diff --since 2026-03-01T00:00:00Z --until 2026-03-02T00:00:00Z --format json")]
    Diff(DiffArgs),
    /// What an identity was granted (at --until, default now), and every change to its grants since --since.
    #[command(
        after_help = "The identity's groups are those of its last request in the store.\n\nExamples:\n  \
                  kubetrail rbac grants --user eve@contractor.example --since 30d"
    )]
    Grants(UserArgs),
    /// What an identity was granted against what it used (its requests since --since, default 30 days), with
    /// the least-privilege Roles and ClusterRole as YAML (audit2rbac's proposal, from the store).
    #[command(
        after_help = "Examples:\n  kubetrail rbac unused --user system:serviceaccount:ci:deployer --since 30d\n  \
                  kubetrail rbac unused --user alice@example.com --since 90d --yaml > least-privilege.yaml"
    )]
    Unused(UnusedArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The snapshot file (JSON, as kubectl prints it); `-` for stdin.
    pub snapshot: PathBuf,
    /// When the snapshot was taken: RFC 3339, a duration ago (`2h`) or `now`.
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub taken: jiff::Timestamp,
    /// The cluster it is of (default: the store's only cluster).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WhoCanArgs {
    /// The verb (`get`, `list`, `create`, `impersonate`, `*`, ...).
    pub verb: String,
    /// The resource (`secrets`, `deployments.apps`, `pods/exec`) or a non-resource URL (`/metrics`).
    pub resource: String,
    /// In this namespace (default: cluster-wide, which only ClusterRoleBindings grant).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// One object by name (rules with resourceNames then count).
    #[arg(long)]
    pub name: Option<String>,
    /// The moment: RFC 3339, a duration ago (`3d`) or `now` (default).
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub at: Option<jiff::Timestamp>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Where the events are (the moment's range is the command's own).
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// Configuration file (its `data` directory and `query:` backend).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The cluster whose RBAC is asked (default: the only one imported).
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// From this time: RFC 3339 or a duration ago (`7d`).
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub since: jiff::Timestamp,
    /// Up to this time (default now).
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub until: Option<jiff::Timestamp>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The identity (a username as authenticated; a service account is system:serviceaccount:NS:NAME).
    #[arg(long)]
    pub user: String,
    /// Changes from this time (default: from the snapshot).
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub since: Option<jiff::Timestamp>,
    /// Grants at this time (default now).
    #[arg(long, value_name = "T", value_parser = kubetrail_runtime::duration::parse_time)]
    pub until: Option<jiff::Timestamp>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct UnusedArgs {
    #[command(flatten)]
    pub who: UserArgs,
    /// Print only the proposed Roles and bindings, as YAML for `kubectl apply`.
    #[arg(long)]
    pub yaml: bool,
}

fn data_dir(data: Option<PathBuf>, config: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let cfg = match config {
        Some(path) => Some(kubetrail_runtime::config::Config::load(path)?),
        None => None,
    };
    Ok(kubetrail_runtime::data::resolve(
        data,
        cfg.and_then(|c| c.data),
    ))
}

pub fn run(cmd: RbacCommand) -> anyhow::Result<Outcome> {
    match cmd {
        RbacCommand::Import(a) => import(a),
        RbacCommand::WhoCan(a) => who_can(a),
        RbacCommand::Diff(a) => diff(a),
        RbacCommand::Grants(a) => grants(a),
        RbacCommand::Unused(a) => unused(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<Outcome> {
    let dir = data_dir(a.data, None)?;
    let bytes = if a.snapshot.as_os_str() == "-" {
        let mut b = Vec::new();
        Read::read_to_end(
            &mut std::io::stdin()
                .lock()
                .take(rbac_base::MAX_SNAPSHOT_BYTES as u64 + 1),
            &mut b,
        )
        .context("reading the snapshot from stdin")?;
        b
    } else {
        // Read at most one byte past the limit: a huge file is refused by `import`, never loaded whole.
        let mut b = Vec::new();
        std::fs::File::open(&a.snapshot)
            .and_then(|f| {
                f.take(rbac_base::MAX_SNAPSHOT_BYTES as u64 + 1)
                    .read_to_end(&mut b)
            })
            .with_context(|| format!("reading `{}`", a.snapshot.display()))?;
        b
    };
    let (file, snapshot) =
        rbac_base::import(&dir, &bytes, a.cluster.as_deref(), a.taken.as_microsecond())
            .with_context(|| format!("importing `{}`", a.snapshot.display()))?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for o in &snapshot.objects {
        *counts.entry(o.key.kind.to_string()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "imported {} RBAC objects ({}) as the RBAC of {} at {}: `{}`",
        snapshot.objects.len(),
        counts.join(", "),
        a.cluster
            .as_deref()
            .map_or("the store's cluster".to_string(), |c| format!(
                "cluster {c}"
            )),
        kubetrail_engine::format_time_us(a.taken.as_microsecond()),
        file.path.display()
    );
    for s in snapshot.skipped.iter().take(20) {
        println!("skipped {s}");
    }
    if snapshot.skipped.len() > 20 {
        println!("… and {} more skipped", snapshot.skipped.len() - 20);
    }
    Ok(Outcome::Ok)
}

/// The base for `at`, and a session over the store from it to `at`.
fn open(store: &StoreArgs, at: jiff::Timestamp) -> anyhow::Result<(Base, Session)> {
    let dir = data_dir(store.data.clone(), store.config.as_deref())?;
    let bases = rbac_base::list(&dir)?;
    let file = rbac_base::choose(&bases, store.cluster.as_deref(), at.as_microsecond())
        .map_err(anyhow::Error::msg)?;
    let base = rbac_base::load(file)?;
    let scope = base.scope(at.as_microsecond());
    let session = Session::open(&ScopeArgs {
        data: store.data.clone(),
        config: store.config.clone(),
        lake: None,
        cluster: scope.cluster,
        since: scope.since,
        until: scope.until,
    })?;
    Ok((base, session))
}

fn table(names: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    write_table(&mut out, &names, rows)?;
    Ok(())
}

fn notes(notes: &[String]) {
    for n in notes {
        println!("note: {}", kubetrail_history::printable(n));
    }
}

fn json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn who_can(a: WhoCanArgs) -> anyhow::Result<Outcome> {
    let mut access = kubetrail_rbac::parse_access(&a.verb, &a.resource, a.namespace.as_deref())?;
    if let Some(n) = &a.name {
        access = access.with_name(n);
    }
    let at = a.at.unwrap_or_else(jiff::Timestamp::now);
    let (base, session) = open(&a.store, at)?;
    let bar = spinner(&format!("replaying RBAC writes ({})", session.reading));
    let answer = session.rt.block_on(rbac::who_can(
        &session.engine,
        &base,
        &access,
        at.as_microsecond(),
    ));
    bar.finish_and_clear();
    let answer = answer?;
    if a.format == Format::Json {
        json(&answer)?;
        return Ok(Outcome::Ok);
    }
    println!(
        "who can {} {}{}{} at {} (snapshot of {}, {} RBAC write(s) since)",
        a.verb,
        a.resource,
        a.name
            .as_deref()
            .map(|n| format!("/{n}"))
            .unwrap_or_default(),
        a.namespace
            .as_deref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default(),
        answer.at,
        answer.base,
        answer.writes
    );
    let rows: Vec<Vec<String>> = answer
        .allowed
        .iter()
        .map(|r| {
            vec![
                r.subject.clone(),
                r.kind.clone(),
                r.why.clone(),
                if r.uncertain { "no" } else { "yes" }.to_string(),
            ]
        })
        .collect();
    table(&["SUBJECT", "KIND", "WHY", "CERTAIN"], &rows)?;
    notes(&answer.notes);
    Ok(Outcome::Ok)
}

fn rules_text(rules: &[kubetrail_rbac::PolicyRule]) -> String {
    rules
        .iter()
        .map(rbac::rule_text)
        .collect::<Vec<_>>()
        .join("; ")
}

fn diff(a: DiffArgs) -> anyhow::Result<Outcome> {
    let until = a.until.unwrap_or_else(jiff::Timestamp::now);
    if a.since >= until {
        bail!("the range is empty: --since is not before --until");
    }
    let (base, session) = open(&a.store, until)?;
    let bar = spinner(&format!("replaying RBAC writes ({})", session.reading));
    let answer = session.rt.block_on(rbac::diff(
        &session.engine,
        &base,
        a.since.as_microsecond(),
        until.as_microsecond(),
    ));
    bar.finish_and_clear();
    let answer = answer?;
    if a.format == Format::Json {
        json(&answer)?;
        return Ok(Outcome::Ok);
    }
    println!(
        "RBAC grants added and removed from {} to {} (snapshot of {}, {} RBAC write(s) read)",
        answer.since, answer.until, answer.base, answer.writes
    );
    let mut rows = Vec::new();
    for c in &answer.changes {
        let by = match &c.impersonated_user {
            Some(i) => format!("{} as {i}", c.by),
            None => c.by.clone(),
        };
        if c.grants.is_empty() {
            rows.push(vec![
                c.time.clone(),
                by.clone(),
                c.source_ips.join(","),
                c.write.clone(),
                "uncertain".into(),
                String::new(),
                String::new(),
                String::new(),
                c.notes.join("; "),
            ]);
        }
        for g in &c.grants {
            rows.push(vec![
                c.time.clone(),
                by.clone(),
                c.source_ips.join(","),
                c.write.clone(),
                if g.added { "granted" } else { "revoked" }.into(),
                rbac::subject_text(&g.subject),
                g.binding.to_string(),
                g.role.to_string(),
                rules_text(&g.rules),
            ]);
        }
    }
    table(
        &[
            "TIME", "BY", "FROM", "WRITE", "CHANGE", "SUBJECT", "BINDING", "ROLE", "RULES",
        ],
        &rows,
    )?;
    if answer.more > 0 {
        println!("… and {} more write(s) not listed", answer.more);
    }
    notes(&answer.notes);
    Ok(Outcome::Ok)
}

/// A session over the store of `store`'s cluster, from `since` to `until`.
fn usage(
    store: &StoreArgs,
    cluster: Option<String>,
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
) -> anyhow::Result<Session> {
    Session::open(&ScopeArgs {
        data: store.data.clone(),
        config: store.config.clone(),
        lake: None,
        cluster,
        since,
        until,
    })
}

/// `user` with the groups it presented (its last request up to `until`, else its first after).
fn user_ref(session: &Session, user: &str, until: jiff::Timestamp) -> anyhow::Result<UserRef> {
    let groups = session.rt.block_on(rbac::groups_of(
        &session.engine,
        user,
        until.as_microsecond(),
    ))?;
    Ok(UserRef {
        name: user.to_string(),
        groups,
    })
}

fn grants(a: UserArgs) -> anyhow::Result<Outcome> {
    let until = a.until.unwrap_or_else(jiff::Timestamp::now);
    let (base, session) = open(&a.store, until)?;
    let all = usage(&a.store, base.cluster.clone(), None, None)?;
    let who = user_ref(&all, &a.user, until)?;
    let answer = session.rt.block_on(rbac::grants(
        &session.engine,
        &base,
        &who,
        a.since.map(|t| t.as_microsecond()),
        until.as_microsecond(),
    ))?;
    if a.format == Format::Json {
        json(&answer)?;
        return Ok(Outcome::Ok);
    }
    println!(
        "grants of {} (groups {}) at {} (snapshot of {})",
        answer.user,
        answer.groups.join(","),
        answer.at,
        answer.base
    );
    let rows: Vec<Vec<String>> = answer
        .grants
        .iter()
        .map(|g| {
            vec![
                g.binding.clone(),
                g.role.clone(),
                g.namespace.clone().unwrap_or_else(|| "cluster-wide".into()),
                g.rule.clone(),
                g.uncertain
                    .clone()
                    .map_or("yes".into(), |w| format!("no: {w}")),
            ]
        })
        .collect();
    table(&["VIA", "ROLE", "WHERE", "RULE", "CERTAIN"], &rows)?;
    if !answer.changes.is_empty() {
        println!("\nchanges ({})", answer.changes.len());
        let rows: Vec<Vec<String>> = answer
            .changes
            .iter()
            .map(|c| {
                vec![
                    c.time.clone(),
                    if c.added { "granted" } else { "revoked" }.into(),
                    c.subject.clone(),
                    c.binding.clone(),
                    c.role.clone(),
                    c.by.clone(),
                    c.source_ips.join(","),
                ]
            })
            .collect();
        table(
            &["TIME", "CHANGE", "SUBJECT", "BINDING", "ROLE", "BY", "FROM"],
            &rows,
        )?;
    }
    notes(&answer.notes);
    Ok(Outcome::Ok)
}

fn unused(a: UnusedArgs) -> anyhow::Result<Outcome> {
    let w = a.who;
    let until = w.until.unwrap_or_else(jiff::Timestamp::now);
    let since = w
        .since
        .map(|t| t.as_microsecond())
        .unwrap_or(until.as_microsecond() - 30 * 86_400 * 1_000_000);
    let (base, session) = open(&w.store, until)?;
    let used = usage(
        &w.store,
        base.cluster.clone(),
        jiff::Timestamp::from_microsecond(since).ok(),
        Some(until),
    )?;
    let all = usage(&w.store, base.cluster.clone(), None, None)?;
    let who = user_ref(&all, &w.user, until)?;
    let answer = session.rt.block_on(rbac::unused(
        &session.engine,
        &used.engine,
        &base,
        &who,
        since,
        until.as_microsecond(),
    ))?;
    if a.yaml {
        print!("{}", answer.proposal.yaml);
        return Ok(Outcome::Ok);
    }
    if w.format == Format::Json {
        json(&answer)?;
        return Ok(Outcome::Ok);
    }
    println!(
        "{} (groups {}): granted at {} against used from {} (snapshot of {})",
        answer.user,
        answer.groups.join(","),
        answer.at,
        answer.since,
        answer.base
    );
    let p = &answer.proposal;
    println!("\ngranted, never used ({})", p.unused.len());
    let rows: Vec<Vec<String>> = p
        .unused
        .iter()
        .map(|g| {
            vec![
                g.binding.to_string(),
                g.role.to_string(),
                g.namespace.clone().unwrap_or_else(|| "cluster-wide".into()),
                rbac::rule_text(&g.rule),
            ]
        })
        .collect();
    table(&["VIA", "ROLE", "WHERE", "RULE"], &rows)?;
    if !p.not_granted.is_empty() {
        println!(
            "\nused, not granted by RBAC as known ({})",
            p.not_granted.len()
        );
        let rows: Vec<Vec<String>> = p
            .not_granted
            .iter()
            .map(|u| {
                vec![
                    u.verb.clone(),
                    u.non_resource_url.clone().unwrap_or_else(|| {
                        let mut r = u.resource.clone();
                        if !u.subresource.is_empty() {
                            r = format!("{r}/{}", u.subresource);
                        }
                        if !u.api_group.is_empty() {
                            r = format!("{r}.{}", u.api_group);
                        }
                        r
                    }),
                    u.namespace.clone().unwrap_or_default(),
                    u.count.to_string(),
                    if u.allowed { "allowed" } else { "refused" }.into(),
                ]
            })
            .collect();
        table(
            &["VERB", "RESOURCE", "NAMESPACE", "REQUESTS", "OUTCOME"],
            &rows,
        )?;
    }
    println!("\nleast-privilege proposal (kubectl apply -f):\n{}", p.yaml);
    notes(&answer.notes);
    Ok(Outcome::Ok)
}
