//! `whois`: who or what is behind an identity, as far as the stored events show. The identity is a
//! username (also as impersonated, and as an EKS session name), an AWS ARN (a session's or its role's), or a
//! credential id (a token's `JTI=`, a certificate's `X509SHA256=`, an AWS access key id); the report gives
//! every identity found with its kind and principal (`kubetrail_model::Principal`), the cloud sessions, the
//! credentials with the pod and node a token was bound to, their first and last use and source addresses
//! (a node's, a private or a public one), the user agents, impersonation both ways and the identities that
//! share a credential or an AWS role.
//!
//! One scan of the matching requests, unsorted, aggregated as it streams: every list is capped at
//! [`MAX_ITEMS`] (the rest counted), so a busy identity costs time, not memory. `extra` is read from the
//! stored event; the search by ARN or credential keeps a `LIKE` on the event text before the JSON match.

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use futures::StreamExt;
use kubetrail_model::principal::{self, Principal};
use serde_json::Value;

use crate::reports::{Report, ReportError, sql_str};
use crate::{Engine, EventRow};

/// The most items each list of the report keeps (identities, credentials, addresses, ...).
pub const MAX_ITEMS: usize = 1000;
/// The most credentials whose other users are looked up.
const MAX_SHARED_LOOKUPS: usize = 20;

/// `whois IDENTITY`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WhoisRequest {
    pub identity: String,
}

/// The `extra` keys an identity can be looked up by, and what a match means.
const LOOKUP_KEYS: [(&str, &str); 5] = [
    ("arn", "AWS session ARN"),
    ("canonicalArn", "AWS role ARN"),
    ("sessionName", "AWS session name"),
    ("accessKeyId", "AWS access key"),
    (principal::CREDENTIAL_ID, "credential id"),
];

/// The longest run of characters that are written as they are in JSON text, whatever the encoder (Go escapes
/// `<`, `>`, `&` and some others): what a `LIKE` on the stored text may look for. `None` when shorter than
/// four characters (a prefilter that keeps everything).
fn like_fragment(value: &str) -> Option<String> {
    let safe =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '=' | ':' | '/' | '.' | '@' | '-' | '+');
    let best = value
        .split(|c: char| !safe(c))
        .max_by_key(|s| s.len())
        .unwrap_or("");
    (best.len() >= 4).then(|| format!("%{best}%"))
}

/// Events whose `user.extra[key]` holds `value` for one of `keys`, read from `column` (`"event"` of `events`,
/// or `"text"` of `events_text`, which holds `user` as it is without putting the event back together): a
/// `LIKE` on the text first (cheap), then the exact match ([`user_extra_udf`]: a request body nested deeper
/// than the JSON parser goes does not hide the user).
pub(crate) fn extra_predicate(column: &str, keys: &[&str], value: &str) -> String {
    let v = sql_str(value);
    let exact = keys
        .iter()
        .map(|k| format!("kt_user_extra(\"{column}\", {}) = {v}", sql_str(k)))
        .collect::<Vec<_>>()
        .join(" OR ");
    match like_fragment(value) {
        Some(like) => format!("(\"{column}\" LIKE {} AND ({exact}))", sql_str(&like)),
        None => format!("({exact})"),
    }
}

/// Events (of `events`) made with the credential `id` (`credential-id` or EKS's `accessKeyId`).
pub fn credential_predicate(id: &str) -> String {
    extra_predicate("event", &[principal::CREDENTIAL_ID, "accessKeyId"], id)
}

/// [`credential_predicate`] over `events_text`.
fn credential_text_predicate(id: &str) -> String {
    extra_predicate("text", &[principal::CREDENTIAL_ID, "accessKeyId"], id)
}

/// First and last time, and how many requests.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    first: i64,
    last: i64,
    requests: u64,
}

impl Seen {
    fn add(&mut self, t: i64, request: bool) {
        if self.requests == 0 && self.first == 0 && self.last == 0 {
            (self.first, self.last) = (t, t);
        }
        self.first = self.first.min(t);
        self.last = self.last.max(t);
        self.requests += u64::from(request);
    }
    fn cells(&self) -> [String; 3] {
        [
            crate::format_time_us(self.first),
            crate::format_time_us(self.last),
            self.requests.to_string(),
        ]
    }
}

/// A map capped at [`MAX_ITEMS`] keys; what does not fit is counted.
#[derive(Debug, Default)]
struct Capped<K: Ord, V> {
    map: BTreeMap<K, V>,
    dropped: u64,
}

impl<K: Ord, V: Default> Capped<K, V> {
    fn entry(&mut self, k: K) -> Option<&mut V> {
        if !self.map.contains_key(&k) && self.map.len() >= MAX_ITEMS {
            self.dropped += 1;
            return None;
        }
        Some(self.map.entry(k).or_default())
    }
    fn note(&self, what: &str) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "only the first {MAX_ITEMS} {what} are listed: {} more request(s) were of others",
                self.dropped
            )
        })
    }
}

#[derive(Debug, Default)]
struct Identity {
    seen: Seen,
    kind: String,
    matched: BTreeSet<String>,
    uids: BTreeSet<String>,
    groups: BTreeSet<String>,
    principals: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Credential {
    seen: Seen,
    users: BTreeSet<String>,
    bound: BTreeSet<String>,
    ips: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Aws {
    seen: Seen,
    access_keys: BTreeSet<String>,
    principal_ids: BTreeSet<String>,
}

/// What the scan gathers.
#[derive(Debug, Default)]
struct Gathered {
    identities: Capped<String, Identity>,
    credentials: Capped<String, Credential>,
    /// (user, role ARN, session ARN, session name)
    aws: Capped<(String, String, String, String), Aws>,
    addresses: Capped<String, Seen>,
    agents: Capped<String, Seen>,
    /// (direction, other identity)
    impersonation: Capped<(&'static str, String), Seen>,
    /// (user, key) -> values
    claims: Capped<(String, String), BTreeSet<String>>,
}

/// The `user` and `impersonatedUser` of a stored event (a deep body does not stop it: the part too deep for
/// the parser is cut).
fn users_of(event: &str) -> (Value, Value) {
    #[derive(serde::Deserialize)]
    struct Users {
        #[serde(default)]
        user: Value,
        #[serde(default, rename = "impersonatedUser")]
        impersonated: Value,
    }
    match serde_json::from_str::<Users>(event) {
        Ok(u) => (u.user, u.impersonated),
        Err(_) => match kubetrail_history::parse_event(event) {
            Some(mut v) => (v["user"].take(), v["impersonatedUser"].take()),
            None => (Value::Null, Value::Null),
        },
    }
}

/// `kt_user_extra(event, key) -> Utf8`: the first string of the stored event's `user.extra[key]` (null when it
/// has none), read as `users_of` reads it: the part of a body too deep for the parser is cut, never the user.
pub fn user_extra_udf() -> ScalarUDF {
    ScalarUDF::from(UserExtra {
        signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UserExtra {
    signature: Signature,
}

impl ScalarUDFImpl for UserExtra {
    fn name(&self) -> &str {
        "kt_user_extra"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        use arrow::array::{Array, AsArray, StringBuilder};
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (events, keys) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
        let mut out = StringBuilder::with_capacity(events.len(), 0);
        for i in 0..events.len() {
            let value = (events.is_valid(i) && keys.is_valid(i))
                .then(|| {
                    let (user, _) = users_of(events.value(i));
                    match user.get("extra") {
                        Some(Value::Object(extra)) => principal::first(extra, keys.value(i)),
                        _ => None,
                    }
                })
                .flatten();
            out.append_option(value);
        }
        Ok(ColumnarValue::Array(std::sync::Arc::new(out.finish())))
    }
}

/// Whether `row` is a request's final stage (counted once per request).
fn is_final(row: &EventRow) -> bool {
    matches!(row.stage.as_str(), "ResponseComplete" | "Panic")
}

fn kind_of(user: &str, principal: &Principal) -> String {
    if let Some(sa) = user.strip_prefix("system:serviceaccount:") {
        let (ns, name) = sa.split_once(':').unwrap_or(("?", sa));
        return format!("service account {name} in {ns}");
    }
    if let Some(node) = user.strip_prefix("system:node:") {
        return format!("node {node} (its kubelet)");
    }
    match user {
        "system:anonymous" => return "anonymous (no credential)".into(),
        "system:apiserver" | "system:kube-controller-manager" | "system:kube-scheduler" => {
            return "control plane".into();
        }
        _ => {}
    }
    if principal.aws.is_some() {
        return "AWS IAM principal (EKS)".into();
    }
    if user.starts_with("system:") {
        return "system identity".into();
    }
    "user".into()
}

impl Gathered {
    fn observe(&mut self, row: &EventRow, asked: &str) {
        let request = is_final(row);
        let t = row.time_us;
        let (user, impersonated) = row
            .event
            .as_deref()
            .map(users_of)
            .unwrap_or((Value::Null, Value::Null));
        let principal = Principal::from_user(&user);
        let username = row.user.clone();
        // How the row matched what was asked.
        let mut matched = BTreeSet::new();
        if username == asked {
            matched.insert("username".to_string());
        }
        if row.impersonated_user.as_deref() == Some(asked) {
            matched.insert("impersonated username".to_string());
        }
        if let Some(Value::Object(extra)) = user.get("extra") {
            for (key, what) in LOOKUP_KEYS {
                if principal::first(extra, key).as_deref() == Some(asked) {
                    matched.insert(what.to_string());
                }
            }
        }
        // The identity the request was made as: the impersonated one when asked for.
        let (id_name, id_user) = match (&row.impersonated_user, impersonated.is_object()) {
            (Some(imp), true) if imp == asked && username != asked => (imp.clone(), &impersonated),
            _ => (username.clone(), &user),
        };
        if let Some(id) = self.identities.entry(id_name.clone()) {
            id.seen.add(t, request);
            if id.kind.is_empty() || (id_name == username && principal.aws.is_some()) {
                let p = if id_name == username {
                    &principal
                } else {
                    &Principal::default()
                };
                id.kind = kind_of(&id_name, p);
            }
            id.matched.extend(matched);
            if let Some(uid) = id_user.get("uid").and_then(Value::as_str)
                && id.uids.len() < 16
            {
                id.uids
                    .insert(uid.chars().take(principal::MAX_VALUE).collect());
            }
            let groups = if id_name == username {
                &row.groups
            } else {
                &row.impersonated_groups
            };
            for g in groups.iter().take(64) {
                if id.groups.len() < 256 {
                    id.groups.insert(g.clone());
                }
            }
            if id_name == username
                && let Some(s) = principal.summary(&username)
                && id.principals.len() < 16
            {
                id.principals.insert(s);
            }
        }
        if let Some(cred) = &principal.credential
            && let Some(c) = self.credentials.entry(cred.clone())
        {
            c.seen.add(t, request);
            if c.users.len() < 16 {
                c.users.insert(username.clone());
            }
            if let Some(pod) = &principal.pod
                && c.bound.len() < 16
            {
                let mut b = match principal.summary(&username) {
                    Some(s) => s.trim_start_matches("token of ").to_string(),
                    None => format!("pod {}", pod.name),
                };
                if let Some(uid) = &pod.uid {
                    b.push_str(&format!(" (pod uid {uid})"));
                }
                c.bound.insert(b);
            }
            for ip in row.source_ips.iter().take(16) {
                if c.ips.len() < 64 {
                    c.ips.insert(ip.clone());
                }
            }
        }
        if let Some(aws) = &principal.aws {
            let key = (
                username.clone(),
                aws.canonical_arn.clone().unwrap_or_default(),
                aws.arn.clone().unwrap_or_default(),
                aws.session_name.clone().unwrap_or_default(),
            );
            if let Some(a) = self.aws.entry(key) {
                a.seen.add(t, request);
                if let Some(k) = &aws.access_key_id
                    && a.access_keys.len() < 64
                {
                    a.access_keys.insert(k.clone());
                }
                if let Some(p) = &aws.principal_id
                    && a.principal_ids.len() < 16
                {
                    a.principal_ids.insert(p.clone());
                }
            }
        }
        for ip in row.source_ips.iter().take(16) {
            if let Some(s) = self.addresses.entry(ip.clone()) {
                s.add(t, request);
            }
        }
        if let Some(ua) = &row.user_agent
            && let Some(s) = self
                .agents
                .entry(ua.chars().take(principal::MAX_VALUE).collect())
        {
            s.add(t, request);
        }
        if let Some(imp) = &row.impersonated_user {
            let key = if username == asked {
                Some(("impersonated", imp.clone()))
            } else if imp == asked {
                Some(("impersonated by", username.clone()))
            } else {
                None
            };
            if let Some(s) = key.and_then(|k| self.impersonation.entry(k)) {
                s.add(t, request);
            }
        }
        if let Some(Value::Object(extra)) = user.get("extra") {
            for (key, values) in extra.iter().take(64) {
                if principal::KNOWN_KEYS.contains(&key.as_str()) {
                    continue;
                }
                let key: String = key.chars().take(principal::MAX_VALUE).collect();
                if let Some(set) = self.claims.entry((username.clone(), key)) {
                    let values = values.as_array().map(|a| a.as_slice()).unwrap_or_default();
                    for v in values.iter().filter_map(Value::as_str).take(16) {
                        if set.len() < 16 {
                            set.insert(v.chars().take(principal::MAX_VALUE).collect());
                        }
                    }
                }
            }
        }
    }
}

/// What an address is: a node's (by the kubelets' own requests), private, or public.
fn address_kind(ip: &str, node_ips: &BTreeMap<String, String>) -> String {
    if let Some(node) = node_ips.get(ip) {
        return format!("node {node}");
    }
    if principal::is_public(ip) {
        return "public: outside the cluster network".into();
    }
    if ip.parse::<std::net::IpAddr>().is_ok() {
        "private".into()
    } else {
        "not an address".into()
    }
}

/// Streams the rows of `predicate` (every stage, unsorted) into `f`.
async fn scan(
    engine: &Engine,
    predicate: &str,
    mut f: impl FnMut(&EventRow),
) -> Result<(), ReportError> {
    let sql = format!(
        "SELECT \"time\", \"stage\", \"user\", \"groups\", \"impersonated_user\", \"impersonated_groups\", \
         \"source_ips\", \"user_agent\", \"event\" FROM events_text WHERE {predicate}"
    );
    let mut stream = engine.stream(&sql).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(crate::EngineError::from)?;
        for row in EventRow::from_batch(&batch)? {
            f(&row);
        }
    }
    Ok(())
}

/// The addresses the kubelets made their own requests from (`system:node:NAME`), to name a node's address.
async fn node_addresses(engine: &Engine) -> Result<BTreeMap<String, String>, ReportError> {
    let (_, rows) = engine
        .sql_rows(
            "SELECT \"ip\", min(\"user\") FROM events WHERE \"user\" LIKE 'system:node:%' AND \"ip\" IS NOT NULL \
             GROUP BY 1",
            Some(10_000),
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let ip = r.first()?.text();
            let node = r.get(1)?.text();
            Some((ip, node.trim_start_matches("system:node:").to_string()))
        })
        .collect())
}

/// Who or what is behind `req.identity` (see the module docs).
pub async fn whois(engine: &Engine, req: &WhoisRequest) -> Result<Report, ReportError> {
    let asked = req.identity.trim();
    if asked.is_empty() {
        return Err(ReportError::Invalid(
            "give the identity: a username, an AWS ARN, or a credential id (JTI=..., X509SHA256=..., an access \
             key id)"
                .into(),
        ));
    }
    let keys: Vec<&str> = LOOKUP_KEYS.iter().map(|(k, _)| *k).collect();
    let predicate = format!(
        "(\"user\" = {u} OR \"impersonated_user\" = {u} OR {extra})",
        u = sql_str(asked),
        extra = extra_predicate("text", &keys, asked)
    );
    let node_ips = node_addresses(engine).await?;
    let mut g = Gathered::default();
    scan(engine, &predicate, |row| g.observe(row, asked)).await?;

    // Who else presented the same credentials or the same AWS role.
    let mut shared: Capped<(String, String), Seen> = Capped::default();
    let own: BTreeSet<&String> = g.identities.map.keys().collect();
    let mut lookups: Vec<String> = g
        .credentials
        .map
        .keys()
        // The credential asked for was searched already: every identity that presented it is in `own`.
        .filter(|id| id.as_str() != asked)
        .take(MAX_SHARED_LOOKUPS)
        .map(|id| credential_text_predicate(id))
        .collect();
    let roles: BTreeSet<String> = g
        .aws
        .map
        .keys()
        .map(|k| k.1.clone())
        .filter(|r| !r.is_empty() && r != asked)
        .take(MAX_SHARED_LOOKUPS)
        .collect();
    lookups.extend(
        roles
            .iter()
            .map(|r| extra_predicate("text", &["canonicalArn"], r)),
    );
    if !lookups.is_empty() {
        let others = own
            .iter()
            .map(|u| sql_str(u))
            .collect::<Vec<_>>()
            .join(", ");
        let predicate = format!("({}) AND \"user\" NOT IN ({others})", lookups.join(" OR "));
        let creds: BTreeSet<String> = g.credentials.map.keys().cloned().collect();
        scan(engine, &predicate, |row| {
            let (user, _) = row.event.as_deref().map(users_of).unwrap_or_default();
            let p = Principal::from_user(&user);
            let via = match (&p.credential, &p.aws) {
                (Some(c), _) if creds.contains(c) => format!("credential {c}"),
                (_, Some(aws))
                    if aws
                        .canonical_arn
                        .as_ref()
                        .is_some_and(|r| roles.contains(r)) =>
                {
                    format!("AWS role {}", aws.canonical_arn.clone().unwrap_or_default())
                }
                _ => return,
            };
            if let Some(s) = shared.entry((via, row.user.clone())) {
                s.add(row.time_us, is_final(row));
            }
        })
        .await?;
    }
    Ok(render(asked, &g, &shared, &node_ips))
}

fn render(
    asked: &str,
    g: &Gathered,
    shared: &Capped<(String, String), Seen>,
    node_ips: &BTreeMap<String, String>,
) -> Report {
    let mut report = Report::new(format!("whois {asked}"));
    let join = |s: &BTreeSet<String>, sep: &str| s.iter().cloned().collect::<Vec<_>>().join(sep);
    let identities = g
        .identities
        .map
        .iter()
        .map(|(user, id)| {
            let [first, last, n] = id.seen.cells();
            vec![
                user.clone(),
                id.kind.clone(),
                join(&id.principals, "; "),
                join(&id.matched, ", "),
                join(&id.uids, ", "),
                join(&id.groups, ","),
                first,
                last,
                n,
            ]
        })
        .collect::<Vec<_>>();
    let note = if identities.is_empty() {
        Some(
            "no request by, as or with this identity in the time range (a username, an AWS ARN or session \
             name, or a credential id); widen since/until?"
                .to_string(),
        )
    } else {
        g.identities.note("identities")
    };
    report.section(
        "identities",
        vec![
            "USER",
            "KIND",
            "BEHIND",
            "MATCHED BY",
            "UIDS",
            "GROUPS",
            "FIRST SEEN",
            "LAST SEEN",
            "REQUESTS",
        ],
        identities,
        note,
    );

    let aws: Vec<Vec<String>> = g
        .aws
        .map
        .iter()
        .map(|((user, role, arn, session), a)| {
            let [first, last, n] = a.seen.cells();
            vec![
                user.clone(),
                role.clone(),
                arn.clone(),
                session.clone(),
                join(&a.access_keys, ","),
                join(&a.principal_ids, ","),
                first,
                last,
                n,
            ]
        })
        .collect();
    if !aws.is_empty() {
        report.section(
            "cloud principals",
            vec![
                "USER",
                "ROLE ARN",
                "SESSION ARN",
                "SESSION NAME",
                "ACCESS KEYS",
                "PRINCIPAL ID",
                "FIRST SEEN",
                "LAST SEEN",
                "REQUESTS",
            ],
            aws,
            Some(
                "an assumed role's session name is chosen by whoever called sts:AssumeRole (unless the role's \
                 trust policy requires sts:RoleSessionName or sts:SourceIdentity): it names the human behind the \
                 role as far as that caller is trusted; CloudTrail's AssumeRole event with the access key id names \
                 the caller. user.extra is what the authenticator said: with a webhook or structured authenticator \
                 that maps a client's claims into it, it is what the client said"
                    .into(),
            ),
        );
    }

    let credentials: Vec<Vec<String>> = g
        .credentials
        .map
        .iter()
        .map(|(id, c)| {
            let kind = if id.starts_with("JTI=") {
                "service-account token"
            } else if id.starts_with("X509SHA256=") {
                "client certificate"
            } else if id.starts_with("ASIA") {
                "AWS temporary access key"
            } else if id.starts_with("AKIA") {
                "AWS access key"
            } else {
                "credential"
            };
            let public: Vec<&String> = c.ips.iter().filter(|ip| principal::is_public(ip)).collect();
            let mut note = Vec::new();
            if !public.is_empty() && c.users.iter().any(|u| u.starts_with("system:serviceaccount:")) {
                note.push(format!(
                    "used from a public address ({}): outside the cluster network, as rule kt-sa-token-external \
                     reports",
                    public.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                ));
            } else if !public.is_empty() {
                note.push(format!(
                    "used from a public address ({})",
                    public.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                ));
            }
            if c.users.len() > 1 {
                note.push("presented by more than one identity".into());
            }
            let from_nodes: BTreeSet<&String> =
                c.ips.iter().filter_map(|ip| node_ips.get(ip)).collect();
            if !from_nodes.is_empty() && !c.bound.is_empty() {
                let bound_nodes = join(&c.bound, " ");
                let foreign: Vec<&str> = from_nodes
                    .iter()
                    .filter(|n| !bound_nodes.contains(&format!("on node {n}")))
                    .map(|n| n.as_str())
                    .collect();
                if !foreign.is_empty() {
                    note.push(format!(
                        "used from the address of node(s) {} it was not bound to",
                        foreign.join(",")
                    ));
                }
            }
            let [first, last, n] = c.seen.cells();
            vec![
                id.clone(),
                kind.to_string(),
                join(&c.users, ","),
                join(&c.bound, "; "),
                first,
                last,
                n,
                join(&c.ips, ","),
                note.join("; "),
            ]
        })
        .collect();
    let note = g.credentials.note("credentials").or_else(|| {
        credentials.is_empty().then(|| {
            "no credential id recorded (Kubernetes 1.29+ records authentication.kubernetes.io/credential-id; \
             EKS records accessKeyId)"
                .into()
        })
    });
    report.section(
        "credentials",
        vec![
            "CREDENTIAL",
            "KIND",
            "USERS",
            "BOUND TO",
            "FIRST USE",
            "LAST USE",
            "REQUESTS",
            "SOURCE IPS",
            "NOTE",
        ],
        credentials,
        note,
    );

    let addresses = g
        .addresses
        .map
        .iter()
        .map(|(ip, s)| {
            let [first, last, n] = s.cells();
            vec![ip.clone(), address_kind(ip, node_ips), first, last, n]
        })
        .collect();
    report.section(
        "source addresses",
        vec!["IP", "WHAT", "FIRST SEEN", "LAST SEEN", "REQUESTS"],
        addresses,
        g.addresses.note("addresses").or(Some(
            "every address in sourceIPs; the first ones come from X-Forwarded-For, which the client writes; a \
             node's address is one its kubelet made requests from"
                .into(),
        )),
    );

    let agents = g
        .agents
        .map
        .iter()
        .map(|(ua, s)| {
            let [first, last, n] = s.cells();
            vec![ua.clone(), first, last, n]
        })
        .collect();
    report.section(
        "user agents",
        vec!["USER AGENT", "FIRST SEEN", "LAST SEEN", "REQUESTS"],
        agents,
        g.agents.note("user agents"),
    );

    let impersonation = g
        .impersonation
        .map
        .iter()
        .map(|((dir, other), s)| {
            let [first, last, n] = s.cells();
            vec![dir.to_string(), other.clone(), first, last, n]
        })
        .collect();
    report.section(
        "impersonation",
        vec![
            "DIRECTION",
            "IDENTITY",
            "FIRST SEEN",
            "LAST SEEN",
            "REQUESTS",
        ],
        impersonation,
        g.impersonation.note("impersonations"),
    );

    let shared_rows = shared
        .map
        .iter()
        .map(|((via, user), s)| {
            let [first, last, n] = s.cells();
            vec![via.clone(), user.clone(), first, last, n]
        })
        .collect();
    report.section(
        "shared credentials",
        vec!["SHARED", "OTHER IDENTITY", "FIRST SEEN", "LAST SEEN", "REQUESTS"],
        shared_rows,
        shared.note("identities").or(Some(
            "other identities that presented one of these credentials, or sessions of the same AWS role".into(),
        )),
    );

    let claims = g
        .claims
        .map
        .iter()
        .map(|((user, key), values)| vec![user.clone(), key.clone(), join(values, ", ")])
        .collect::<Vec<Vec<String>>>();
    if !claims.is_empty() {
        report.section(
            "other claims",
            vec!["USER", "KEY", "VALUES"],
            claims,
            Some("the rest of user.extra, as the authenticator set it".into()),
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_like_fragment_is_the_longest_safe_run() {
        assert_eq!(
            like_fragment("JTI=1b2c-3d4e").as_deref(),
            Some("%JTI=1b2c-3d4e%")
        );
        assert_eq!(
            like_fragment("arn:aws:sts::1:assumed-role/a<b>/x").as_deref(),
            Some("%arn:aws:sts::1:assumed-role/a%")
        );
        assert_eq!(like_fragment("a%_b"), None);
        // The predicate's values are SQL literals, whatever the text.
        let p = credential_predicate("x' OR 1=1 --");
        assert!(p.contains("'x'' OR 1=1 --'"), "{p}");
    }
}
