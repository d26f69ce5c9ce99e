//! kubetrail's built-in detection rule pack: Sigma rules for Kubernetes audit events, as data.
//!
//! Every rule is a Sigma file under `rules/` (`logsource: product: kubernetes, service: audit`), loaded by
//! `kubetrail-detect`. Each has a stable `id` (`kt-...`, never reused), a title, a level chosen so that a
//! tier-1 analyst is paged (medium and above) only for what matters, ATT&CK tags, a description,
//! false-positive notes, and a `runbook` extension key: what to check first with the exact `kubetrail who`,
//! `timeline`, `scope` and `query` commands, how to contain, when to escalate. Rules use the engine's
//! `kubetrail.*` enrichment fields (identity class, namespace tier, exec/attach, pod spec flags across
//! containers and workload templates) rather than spelling out pod spec paths.
//!
//! Correlation rules (Sigma `correlation`) live in the same file as the detection rules they count, as
//! multi-document YAML; those inputs (`kt-forbidden`, `kt-secret-get`, `kt-rbac-change`,
//! `kt-workload-change`, `kt-host-pod-created`, `kt-exec-any`) raise no alert of their own (Sigma's
//! `generate: false`).
//!
//! Each rule id has a fixture pair under `fixtures/<id>/`: `positive.jsonl` (events, or for a correlation
//! the sequence, that must raise it) and `negative.jsonl` (near misses that must not), real events from public
//! corpora where they exist (provenance in `fixtures/README.md`). Both the rules and the fixtures are embedded
//! with `include_str!`, so `kubetrail rules test` runs without the source tree.
//!
//! Owns no logic: no IO, no dependency at run time.
//!
//! ```
//! let files = kubetrail_rules::builtin();
//! assert!(files.iter().any(|f| f.name == "kt-secret-read-prod.yml"));
//! let (positive, negative) = kubetrail_rules::fixtures("kt-secret-read-prod").expect("every rule has fixtures");
//! assert!(!positive.is_empty() && !negative.is_empty());
//! ```

/// A rule file of the pack: its file name (`kt-....yml`) and YAML text (one or more Sigma documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinFile {
    pub name: &'static str,
    pub yaml: &'static str,
}

/// The fixtures of one rule id: JSON lines of `audit.k8s.io` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixture {
    pub rule_id: &'static str,
    /// Events (for a correlation, the sequence in time order) that must raise the rule.
    pub positive: &'static str,
    /// Near misses that must not raise it.
    pub negative: &'static str,
}

macro_rules! rule_files {
    ($($name:literal),* $(,)?) => {
        &[$(BuiltinFile {
            name: concat!($name, ".yml"),
            yaml: include_str!(concat!("../rules/", $name, ".yml")),
        }),*]
    };
}

macro_rules! fixture_dirs {
    ($($id:literal),* $(,)?) => {
        &[$(Fixture {
            rule_id: $id,
            positive: include_str!(concat!("../fixtures/", $id, "/positive.jsonl")),
            negative: include_str!(concat!("../fixtures/", $id, "/negative.jsonl")),
        }),*]
    };
}

/// Every file of `rules/`, by name (a test fails if one is missing here).
static FILES: &[BuiltinFile] = rule_files![
    "kt-anonymous-allowed",
    "kt-anonymous-public",
    "kt-api-scanner-probe",
    "kt-apiserver-restart",
    "kt-audit-id-reuse",
    "kt-configmap-credentials",
    "kt-cronjob-change",
    "kt-cronjob-system",
    "kt-csr-approval",
    "kt-csr-client-certificate",
    "kt-daemonset-change",
    "kt-daemonset-system",
    "kt-ephemeral-container",
    "kt-event-truncated",
    "kt-events-deleted",
    "kt-exec-other",
    "kt-exec-prod-system",
    "kt-forbidden-burst",
    "kt-host-pod-then-exec",
    "kt-impersonate-privileged",
    "kt-ingress-no-tls",
    "kt-node-proxy",
    "kt-node-proxy-command",
    "kt-offensive-tool-user-agent",
    "kt-pod-dangerous-capabilities",
    "kt-pod-host-network",
    "kt-pod-host-pid-ipc",
    "kt-pod-privileged",
    "kt-pod-run-as-root",
    "kt-pod-sensitive-hostpath",
    "kt-pod-system-namespace",
    "kt-port-forward-prod",
    "kt-rbac-bind-admin-edit",
    "kt-rbac-bind-cluster-admin",
    "kt-rbac-bind-system-role",
    "kt-rbac-role-dangerous",
    "kt-rbac-role-exec-proxy-token",
    "kt-rbac-role-write",
    "kt-rbac-system-role-changed",
    "kt-rbac-then-workload",
    "kt-sa-control-plane-name",
    "kt-sa-system-namespace",
    "kt-sa-token-external",
    "kt-sa-token-request",
    "kt-sa-token-system",
    "kt-secret-denied",
    "kt-secret-list-cluster",
    "kt-secret-read-prod",
    "kt-secrets-many-distinct",
    "kt-self-discovery",
    "kt-service-exposed",
    "kt-webhook-config-change",
];

/// Every directory of `fixtures/`, by rule id (a test fails if one is missing here).
static FIXTURES: &[Fixture] = fixture_dirs![
    "kt-anonymous-allowed",
    "kt-anonymous-public",
    "kt-api-scanner-probe",
    "kt-apiserver-restart",
    "kt-audit-id-reuse",
    "kt-configmap-credentials",
    "kt-cronjob-change",
    "kt-cronjob-system",
    "kt-csr-approval",
    "kt-csr-client-certificate",
    "kt-daemonset-change",
    "kt-daemonset-system",
    "kt-ephemeral-container",
    "kt-event-truncated",
    "kt-events-deleted",
    "kt-exec-any",
    "kt-exec-other",
    "kt-exec-prod-system",
    "kt-forbidden",
    "kt-forbidden-burst-ip",
    "kt-forbidden-burst-user",
    "kt-host-pod-created",
    "kt-host-pod-then-exec",
    "kt-impersonate-privileged",
    "kt-ingress-no-tls",
    "kt-node-proxy",
    "kt-node-proxy-command",
    "kt-offensive-tool-user-agent",
    "kt-pod-dangerous-capabilities",
    "kt-pod-host-network",
    "kt-pod-host-pid-ipc",
    "kt-pod-privileged",
    "kt-pod-run-as-root",
    "kt-pod-sensitive-hostpath",
    "kt-pod-system-namespace",
    "kt-port-forward-prod",
    "kt-rbac-bind-admin-edit",
    "kt-rbac-bind-cluster-admin",
    "kt-rbac-bind-system-role",
    "kt-rbac-change",
    "kt-rbac-role-dangerous",
    "kt-rbac-role-exec-proxy-token",
    "kt-rbac-role-write",
    "kt-rbac-system-role-changed",
    "kt-rbac-then-workload",
    "kt-sa-control-plane-name",
    "kt-sa-system-namespace",
    "kt-sa-token-external",
    "kt-sa-token-request",
    "kt-sa-token-system",
    "kt-secret-denied",
    "kt-secret-denied-burst",
    "kt-secret-get",
    "kt-secret-list-cluster",
    "kt-secret-read-prod",
    "kt-secrets-many-distinct",
    "kt-self-discovery",
    "kt-service-exposed",
    "kt-webhook-config-change",
    "kt-workload-change",
];

/// Every file of `stream/` (see [`stream`]).
static STREAM: &[BuiltinFile] = &[
    BuiltinFile {
        name: "kt-audit-silence.yml",
        yaml: include_str!("../stream/kt-audit-silence.yml"),
    },
    BuiltinFile {
        name: "kt-audit-resumed.yml",
        yaml: include_str!("../stream/kt-audit-resumed.yml"),
    },
    BuiltinFile {
        name: "kt-policy-drift.yml",
        yaml: include_str!("../stream/kt-policy-drift.yml"),
    },
];

/// The stream rules: alerts about the audit stream as a whole (`kt-audit-silence`, `kt-audit-resumed`,
/// `kt-policy-drift`), which `kubetrail_detect::watch` raises from what it learns of each source and kind of
/// request rather than from one event. Their files hold the same metadata as a Sigma rule (title, id, level,
/// tags, description, false positives, runbook) and no detection.
pub fn stream() -> &'static [BuiltinFile] {
    STREAM
}

/// Every rule file of the pack, in file-name order.
pub fn builtin() -> &'static [BuiltinFile] {
    FILES
}

/// Every fixture pair, in rule-id order.
pub fn all_fixtures() -> &'static [Fixture] {
    FIXTURES
}

/// The (positive, negative) fixtures of a rule id, as JSON lines.
pub fn fixtures(rule_id: &str) -> Option<(&'static str, &'static str)> {
    FIXTURES
        .iter()
        .find(|f| f.rule_id == rule_id)
        .map(|f| (f.positive, f.negative))
}
