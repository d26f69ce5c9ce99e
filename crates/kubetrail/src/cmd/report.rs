//! `kubetrail who`, `timeline` and `scope`: task-shaped reports over the store, each a few SQL queries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use clap::{Args, ValueEnum};
use kubetrail_engine::{EventRow, RowQuery};

use crate::Outcome;
use crate::cmd::query::{ScopeArgs, Session, spinner, write_table};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    #[default]
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

/// A report: titled sections of rows.
#[derive(Debug, Default)]
struct Report {
    title: String,
    sections: Vec<Section>,
}

#[derive(Debug)]
struct Section {
    title: String,
    /// Column names; JSON keys are these lowercased with `_` for spaces.
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Printed after the rows (and when there are none).
    note: Option<String>,
}

impl Report {
    fn section(
        &mut self,
        title: &str,
        header: Vec<&'static str>,
        rows: Vec<Vec<String>>,
        note: Option<String>,
    ) {
        self.sections.push(Section {
            title: title.to_string(),
            header,
            rows,
            note,
        });
    }

    fn write(&self, format: ReportFormat) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        match format {
            ReportFormat::Table => {
                writeln!(out, "{}", self.title)?;
                for s in &self.sections {
                    writeln!(out, "\n{} ({})", s.title, s.rows.len())?;
                    if !s.rows.is_empty() {
                        let names: Vec<String> = s.header.iter().map(|h| h.to_string()).collect();
                        write_table(&mut out, &names, &s.rows)?;
                    }
                    if let Some(n) = &s.note {
                        writeln!(out, "{n}")?;
                    }
                }
            }
            ReportFormat::Markdown => {
                writeln!(out, "# {}", self.title)?;
                for s in &self.sections {
                    writeln!(out, "\n## {} ({})\n", s.title, s.rows.len())?;
                    if !s.rows.is_empty() {
                        let cell = |c: &str| c.replace('|', "\\|").replace(['\n', '\r'], " ");
                        writeln!(out, "| {} |", s.header.join(" | "))?;
                        writeln!(out, "|{}", " --- |".repeat(s.header.len()))?;
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
                for s in &self.sections {
                    let key = s.title.to_lowercase().replace([' ', '/'], "_");
                    for r in &s.rows {
                        let mut obj = serde_json::Map::new();
                        obj.insert("section".into(), key.clone().into());
                        for (h, c) in s.header.iter().zip(r) {
                            obj.insert(h.to_lowercase().replace(' ', "_"), c.clone().into());
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
}

/// A `--where` comparison, quoted so any value stays one value; a glob when the value has `*` or `?`.
fn cmp(field: &str, value: &str) -> String {
    let quoted = format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let op = if value.contains(['*', '?']) { "~" } else { "=" };
    format!("{field} {op} {quoted}")
}

/// A SQL string literal.
fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn level_meaning(level: &str) -> &'static str {
    match level {
        "Metadata" => "Metadata: the object body was not recorded",
        "Request" => "Request: the request body was recorded, the response body was not",
        "RequestResponse" => "RequestResponse: request and response bodies were recorded",
        "None" => "None: not audited",
        _ => "unknown level: what was recorded cannot be told",
    }
}

fn outcome(r: &EventRow) -> String {
    let mut s = match r.code {
        Some(c) if c < 400 => format!("{c} ok"),
        Some(c) => format!("{c} failed"),
        None => format!("no response recorded ({})", r.stage),
    };
    if let Some(d) = &r.decision {
        s.push_str(&format!(", authz {d}"));
    }
    s
}

fn identity(r: &EventRow) -> String {
    match &r.impersonated_user {
        Some(u) => format!("{} as {u}", r.user),
        None => r.user.clone(),
    }
}

fn object(r: &EventRow) -> String {
    match (&r.namespace, &r.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (Some(ns), None) => format!("{ns}/*"),
        (None, Some(n)) => n.clone(),
        (None, None) => "*".into(),
    }
}

pub fn who(args: WhoArgs) -> anyhow::Result<Outcome> {
    let (resource, name) = match args.resource.split_once('/') {
        Some((r, n)) if !n.is_empty() => (r.to_string(), Some(n.to_string())),
        _ => (args.resource.trim_end_matches('/').to_string(), None),
    };
    let mut terms = vec![cmp("verb", &args.verb), cmp("resource", &resource)];
    if let Some(n) = &name {
        terms.push(cmp("name", n));
    }
    if let Some(ns) = &args.namespace {
        terms.push(cmp("namespace", ns));
    }
    let expr = terms.join(" and ");
    let predicate = kubetrail_query::parse(&expr)?.to_sql();
    let session = Session::open(&args.scope)?;
    let bar = spinner("searching");
    let rows = session.rows(
        Some(&predicate),
        RowQuery {
            limit: Some(args.limit.max(1)),
            ..RowQuery::default()
        },
    )?;
    bar.finish_and_clear();
    let mut report = Report {
        title: format!(
            "who {} {}{}",
            args.verb,
            args.resource,
            args.namespace
                .as_ref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default()
        ),
        ..Report::default()
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.time(),
                identity(r),
                r.groups.join(","),
                r.source_ips.join(","),
                r.user_agent.clone().unwrap_or_default(),
                format!("{} {}", r.verb, r.resource_path()),
                object(r),
                outcome(r),
                r.audit_id.clone(),
                level_meaning(&r.level).to_string(),
            ]
        })
        .collect();
    let note = if rows.is_empty() {
        Some(format!(
            "no matching request in {} file(s){}",
            session.engine.files().len(),
            if args.scope.since.is_none() && args.scope.until.is_none() {
                ""
            } else {
                "; widen --since/--until?"
            }
        ))
    } else if rows.len() >= args.limit {
        Some(format!("showing the first {} (raise --limit)", rows.len()))
    } else {
        None
    };
    report.section(
        "requests",
        vec![
            "TIME",
            "USER",
            "GROUPS",
            "SOURCE IPS",
            "USER AGENT",
            "REQUEST",
            "OBJECT",
            "OUTCOME",
            "AUDIT ID",
            "LEVEL",
        ],
        table,
        note,
    );
    report.write(args.format)?;
    Ok(Outcome::Ok)
}

fn identity_predicate(user: &str) -> String {
    format!(
        "(\"user\" = {u} OR \"impersonated_user\" = {u})",
        u = sql_str(user)
    )
}

pub fn timeline(args: TimelineArgs) -> anyhow::Result<Outcome> {
    let session = Session::open(&args.scope)?;
    let bar = spinner("building the timeline");
    let sql = format!(
        "SELECT COALESCE(\"resource\" || CASE WHEN \"subresource\" IS NULL THEN '' ELSE '/' || \"subresource\" END, \
         \"uri\") AS res, \"verb\", \
         CASE WHEN \"user\" = {u} THEN '' ELSE 'as this identity, by ' || \"user\" END AS via, \
         min(\"time\") AS first_seen, max(\"time\") AS last_seen, count(DISTINCT \"audit_id\") AS requests, \
         count(DISTINCT CASE WHEN \"code\" >= 400 THEN \"audit_id\" END) AS failures, \
         count(DISTINCT \"namespace\") AS namespaces, \
         array_to_string(array_agg(DISTINCT \"ip\"), ',') AS ips, \
         array_to_string(array_agg(DISTINCT \"user_agent\"), ' | ') AS user_agents \
         FROM events WHERE {pred} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        u = sql_str(&args.user),
        pred = identity_predicate(&args.user)
    );
    let (_, rows) = session.sql(&sql)?;
    bar.finish_and_clear();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(kubetrail_engine::Cell::text).collect())
        .collect();
    let total_failures: u64 = rows
        .iter()
        .filter_map(|r| r.get(6))
        .map(|c| c.text().parse::<u64>().unwrap_or(0))
        .sum();
    let mut report = Report {
        title: format!("timeline of {}", args.user),
        ..Report::default()
    };
    let note = if table.is_empty() {
        Some("no request by this identity in range".to_string())
    } else {
        Some(format!("{total_failures} failed request(s)"))
    };
    report.section(
        "activity by resource and verb",
        vec![
            "RESOURCE",
            "VERB",
            "VIA",
            "FIRST SEEN",
            "LAST SEEN",
            "REQUESTS",
            "FAILURES",
            "NAMESPACES",
            "IPS",
            "USER AGENTS",
        ],
        table,
        note,
    );
    let failures = session.rows(
        Some(&format!(
            "{} AND \"code\" >= 400",
            identity_predicate(&args.user)
        )),
        RowQuery {
            limit: Some(50),
            ..RowQuery::default()
        },
    )?;
    report.section(
        "failures",
        vec![
            "TIME",
            "REQUEST",
            "OBJECT",
            "OUTCOME",
            "SOURCE IPS",
            "AUDIT ID",
        ],
        failures
            .iter()
            .map(|r| {
                vec![
                    r.time(),
                    format!("{} {}", r.verb, r.resource_path()),
                    object(r),
                    outcome(r),
                    r.source_ips.join(","),
                    r.audit_id.clone(),
                ]
            })
            .collect(),
        None,
    );
    report.write(args.format)?;
    Ok(Outcome::Ok)
}

const PERSISTENT: [&str; 12] = [
    "clusterrolebindings",
    "rolebindings",
    "clusterroles",
    "roles",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "cronjobs",
    "daemonsets",
    "deployments",
    "statefulsets",
    "serviceaccounts",
    "secrets",
];

/// Privilege flags of a created workload from its recorded body: `None` when the body was not recorded.
fn privilege(event: Option<&str>) -> Option<Vec<&'static str>> {
    let v: serde_json::Value = serde_json::from_str(event?).ok()?;
    v.get("requestObject")?;
    let mut flags = Vec::new();
    for prefix in [
        "requestObject.spec",
        "requestObject.spec.template.spec",
        "requestObject.spec.jobTemplate.spec.template.spec",
    ] {
        for (path, flag) in [
            ("containers.securityContext.privileged", "privileged"),
            ("initContainers.securityContext.privileged", "privileged"),
            ("hostPID", "hostPID"),
            ("hostNetwork", "hostNetwork"),
            ("hostIPC", "hostIPC"),
        ] {
            let full = format!("{prefix}.{path}");
            if kubetrail_query::json_match(&v, &full, kubetrail_query::JsonOp::Eq, &["true"])
                && !flags.contains(&flag)
            {
                flags.push(flag);
            }
        }
        if kubetrail_query::json_match(
            &v,
            &format!("{prefix}.volumes.hostPath.path"),
            kubetrail_query::JsonOp::Glob,
            &["*"],
        ) && !flags.contains(&"hostPath")
        {
            flags.push("hostPath");
        }
    }
    Some(flags)
}

/// For a binding: `subjects → roleRef` from the recorded body.
fn binding_summary(event: Option<&str>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(event?).ok()?;
    let obj = v.get("requestObject")?;
    let role = obj.get("roleRef")?;
    let subjects: Vec<String> = obj
        .get("subjects")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .map(|s| {
                    let g = |k: &str| s.get(k).and_then(|x| x.as_str()).unwrap_or("");
                    match g("namespace") {
                        "" => format!("{} {}", g("kind"), g("name")),
                        ns => format!("{} {ns}/{}", g("kind"), g("name")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let g = |k: &str| role.get(k).and_then(|x| x.as_str()).unwrap_or("");
    Some(format!(
        "{} -> {} {}",
        subjects.join(", "),
        g("kind"),
        g("name")
    ))
}

pub fn scope(args: ScopeReportArgs) -> anyhow::Result<Outcome> {
    let session = Session::open(&args.scope)?;
    let bar = spinner("scoping");
    let me = identity_predicate(&args.user);
    let all = RowQuery::default();
    let with_body = RowQuery {
        with_event: true,
        ..RowQuery::default()
    };
    let basic = |r: &EventRow| {
        vec![
            r.time(),
            identity(r),
            format!("{} {}", r.verb, r.resource_path()),
            object(r),
            outcome(r),
            r.source_ips.join(","),
            r.audit_id.clone(),
        ]
    };
    let basic_header = vec![
        "TIME",
        "USER",
        "REQUEST",
        "OBJECT",
        "OUTCOME",
        "SOURCE IPS",
        "AUDIT ID",
    ];
    let mut report = Report {
        title: format!("scope of {}", args.user),
        ..Report::default()
    };

    // Where it came from: its source IPs, and who else used them.
    let ips_sql = format!(
        "SELECT \"ip\", count(DISTINCT \"audit_id\") AS requests, min(\"time\") AS first_seen, max(\"time\") AS last_seen \
         FROM events WHERE {me} AND \"ip\" IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
    );
    let (_, ip_rows) = session.sql(&ips_sql)?;
    let ips: Vec<String> = ip_rows.iter().map(|r| r[0].text()).collect();
    report.section(
        "source IPs",
        vec!["IP", "REQUESTS", "FIRST SEEN", "LAST SEEN"],
        ip_rows
            .iter()
            .map(|r| r.iter().map(kubetrail_engine::Cell::text).collect())
            .collect(),
        None,
    );
    let ip_list = ips
        .iter()
        .map(|i| sql_str(i))
        .collect::<Vec<_>>()
        .join(", ");
    let same_ip = if ips.is_empty() {
        "FALSE".to_string()
    } else {
        format!("\"ip\" IN ({ip_list}) AND ({me}) IS NOT TRUE")
    };
    let (_, others) = session.sql(&format!(
        "SELECT \"user\", \"ip\", count(DISTINCT \"audit_id\") AS requests, min(\"time\") AS first_seen, \
         max(\"time\") AS last_seen FROM events WHERE {same_ip} GROUP BY 1, 2 ORDER BY 4"
    ))?;
    report.section(
        "other identities from the same source IPs",
        vec!["USER", "IP", "REQUESTS", "FIRST SEEN", "LAST SEEN"],
        others.iter().map(|r| r.iter().map(kubetrail_engine::Cell::text).collect()).collect(),
        Some("a stolen credential or a pivot shows up here: review each identity with `kubetrail scope --user`".into()),
    );

    // Secrets read.
    let secrets_pred = "\"resource\" = 'secrets' AND \"verb\" IN ('get', 'list', 'watch')";
    let mut secrets: Vec<Vec<String>> = Vec::new();
    for (who_pred, via) in [
        (me.clone(), "identity"),
        (same_ip.clone(), "same source IP"),
    ] {
        for r in session.rows(Some(&format!("{who_pred} AND {secrets_pred}")), all)? {
            let mut row = basic(&r);
            row.push(via.to_string());
            secrets.push(row);
        }
    }
    let mut h = basic_header.clone();
    h.push("FOUND BY");
    report.section("secrets read", h, secrets, None);

    // RBAC.
    let rbac = session.rows(
        Some(&format!(
            "{me} AND \"api_group\" = 'rbac.authorization.k8s.io' AND \"verb\" IN ('create', 'update', 'patch', 'delete', 'deletecollection')"
        )),
        with_body,
    )?;
    let mut h = basic_header.clone();
    h.push("GRANTS");
    report.section(
        "RBAC objects created or changed",
        h,
        rbac.iter()
            .map(|r| {
                let mut row = basic(r);
                row.push(binding_summary(r.event.as_deref()).unwrap_or_else(|| {
                    if r.level == "Metadata" {
                        "unknown (Metadata: the body was not recorded)".into()
                    } else {
                        String::new()
                    }
                }));
                row
            })
            .collect(),
        None,
    );

    // Workloads.
    let workloads = session.rows(
        Some(&format!(
            "{me} AND \"verb\" = 'create' AND \"subresource\" IS NULL AND \"resource\" IN ('pods', 'deployments', \
             'daemonsets', 'statefulsets', 'replicasets', 'jobs', 'cronjobs')"
        )),
        with_body,
    )?;
    let mut h = basic_header.clone();
    h.push("PRIVILEGE");
    report.section(
        "workloads created",
        h,
        workloads
            .iter()
            .map(|r| {
                let mut row = basic(r);
                row.push(match privilege(r.event.as_deref()) {
                    Some(f) if f.is_empty() => "not privileged".into(),
                    Some(f) => f.join(","),
                    None => "unknown (the body was not recorded)".into(),
                });
                row
            })
            .collect(),
        None,
    );

    // Exec, attach, port-forward.
    let sessions = session.rows(
        Some(&format!(
            "{me} AND \"resource\" = 'pods' AND \"subresource\" IN ('exec', 'attach', 'portforward')"
        )),
        all,
    )?;
    report.section(
        "exec/attach sessions",
        basic_header.clone(),
        sessions.iter().map(basic).collect(),
        None,
    );

    // Tokens and certificates.
    let tokens = session.rows(
        Some(&format!(
            "{me} AND \"verb\" = 'create' AND ((\"resource\" = 'serviceaccounts' AND \"subresource\" = 'token') OR \
             \"resource\" = 'certificatesigningrequests' OR \"resource\" = 'tokenrequests')"
        )),
        all,
    )?;
    report.section(
        "tokens minted",
        basic_header.clone(),
        tokens.iter().map(basic).collect(),
        None,
    );

    // Impersonation, both ways.
    let imp = session.rows(
        Some(&format!(
            "\"impersonated_user\" IS NOT NULL AND (\"user\" = {u} OR \"impersonated_user\" = {u})",
            u = sql_str(&args.user)
        )),
        RowQuery {
            limit: Some(1000),
            ..RowQuery::default()
        },
    )?;
    report.section(
        "impersonation",
        basic_header.clone(),
        imp.iter().map(basic).collect(),
        None,
    );

    // What persists: objects it created (successfully) with no later delete in the store.
    let kinds = PERSISTENT
        .iter()
        .map(|k| sql_str(k))
        .collect::<Vec<_>>()
        .join(", ");
    let created = session.rows(
        Some(&format!(
            "{me} AND \"verb\" = 'create' AND \"subresource\" IS NULL AND \"code\" < 400 AND \"resource\" IN ({kinds})"
        )),
        all,
    )?;
    let mut deleted: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let names: BTreeSet<String> = created.iter().filter_map(|r| r.name.clone()).collect();
    if !names.is_empty() {
        let name_list = names
            .iter()
            .map(|n| sql_str(n))
            .collect::<Vec<_>>()
            .join(", ");
        for r in session.rows(
            Some(&format!(
                "\"verb\" = 'delete' AND \"code\" < 400 AND \"resource\" IN ({kinds}) AND \"name\" IN ({name_list})"
            )),
            all,
        )? {
            deleted.insert(
                (r.resource.clone().unwrap_or_default(), r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()),
                r.time(),
            );
        }
    }
    let persists: Vec<Vec<String>> = created
        .iter()
        .filter(|r| {
            let key = (
                r.resource.clone().unwrap_or_default(),
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default(),
            );
            deleted.get(&key).is_none_or(|t| *t < r.time())
        })
        .map(|r| vec![r.resource_path(), object(r), r.time(), r.audit_id.clone()])
        .collect();
    report.section(
        "what persists now",
        vec!["KIND", "OBJECT", "CREATED", "AUDIT ID"],
        persists,
        Some("created by the identity and not deleted since, as far as the store records: check the cluster".into()),
    );
    bar.finish_and_clear();
    report.write(args.format)?;
    Ok(Outcome::Ok)
}
