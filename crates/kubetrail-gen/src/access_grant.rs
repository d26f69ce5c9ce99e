//! The names of the access-grant scenario (see [`crate::Config::attacks`]), for tests that find its lines.
//!
//! An EKS administrator (an IAM role's session) grants a contractor reading secrets in `prod-payments`, the
//! contractor reads them from outside, the grant is widened to a group, one unrelated ClusterRole is changed
//! by the GitOps controller with its body unlogged, and the grant is revoked; the contractor's next read is
//! refused. Every step is a request of its own, found by its user and object:
//!
//! | step | user | verb, object | gap before it |
//! |------|------|--------------|---------------|
//! | 1 | [`ADMIN_USER`] | create Role [`ROLE`] in [`NAMESPACE`] (get, list secrets) | 1-5 min after the cycle starts |
//! | 2 | [`ADMIN_USER`] | create RoleBinding [`BINDING`] of it to User [`CONTRACTOR`] | 5-40 s |
//! | 3 | [`CONTRACTOR`] | list secrets in [`NAMESPACE`], then get [`SECRETS`] one by one | 3-20 min, then 10-60 s each |
//! | 4 | [`GITOPS_USER`] | patch ClusterRole [`METADATA_ONLY_ROLE`], audited at Metadata (no body) | 5-20 min |
//! | 5 | [`ADMIN_USER`] | patch [`BINDING`] (merge patch): subjects User [`CONTRACTOR`] and Group [`CONTRACTOR_GROUP`] | 5-15 min |
//! | 6 | [`CONTRACTOR`] | get secret [`SECRETS`]`[0]`, still allowed by [`BINDING`] | 2-10 min |
//! | 7 | [`ADMIN_USER`] | delete [`BINDING`] | 10-30 min |
//! | 8 | [`CONTRACTOR`] | get secret [`SECRETS`]`[0]`: 403, decision `forbid`, empty reason | 1-10 min |
//!
//! The RBAC writes (1, 2, 5, 7) are audited at RequestResponse: the request body and the stored object (a
//! Status for the delete). The contractor's requests are counted as an attack's
//! ([`crate::Generator::last_was_attack`]), the administrator's and the GitOps controller's are not. A run
//! lasts about 30 to 115 minutes; the next cycle of scenarios starts the next run once it is over. The
//! lines come on top of the everyday traffic (the other lines of a seed are the bytes they were before the
//! scenario existed). At [`crate::Config::start`], none of the scenario's grants exist:
//! [`crate::rbac_snapshot`] has no `secret-reader` Role and no `contractor-secrets` RoleBinding, and
//! [`CONTRACTOR`] is bound to nothing.
//! [`METADATA_ONLY_ROLE`] is not bound to anyone who reads secrets, so who can read secrets in
//! [`NAMESPACE`] stays exactly known from the snapshot and the logged bodies.

/// The namespace of the grant.
pub const NAMESPACE: &str = "prod-payments";
/// The Role the administrator creates (get and list on secrets).
pub const ROLE: &str = "secret-reader";
/// The RoleBinding of [`ROLE`] to the contractor.
pub const BINDING: &str = "contractor-secrets";
/// The secrets the contractor reads.
pub const SECRETS: [&str; 2] = ["payments-api-db", "stripe-api-key"];

/// The administrator: an IAM role's session, as EKS (access entries or aws-iam-authenticator) names it.
pub const ADMIN_USER: &str =
    "arn:aws:sts::111122223333:assumed-role/eks-platform-admins/dana@example.com";
/// The Kubernetes group EKS maps the IAM role to; bound to `cluster-admin` in the snapshot.
pub const ADMIN_GROUP: &str = "eks-platform-admins";
/// The IAM role itself (`extra.canonicalArn`).
pub const ADMIN_ROLE_ARN: &str = "arn:aws:iam::111122223333:role/eks-platform-admins";
/// The IAM role's unique id (in `uid` and `extra.principalId`).
pub const ADMIN_ROLE_ID: &str = "AROA3XFRBF23EXAMPLE5G";
/// The session name (`extra.sessionName`).
pub const ADMIN_SESSION: &str = "dana@example.com";
/// Where the administrator works from.
pub const ADMIN_IP: &str = "203.0.113.66";
/// What the administrator's requests are allowed by.
pub const ADMIN_REASON: &str = "RBAC: allowed by ClusterRoleBinding \"eks-platform-admins\" of ClusterRole \"cluster-admin\" to Group \"eks-platform-admins\"";

/// The contractor (an OIDC user), bound to nothing at the start.
pub const CONTRACTOR: &str = "eve@contractor.example";
/// The contractor's OIDC group, added to the binding by the patch.
pub const CONTRACTOR_GROUP: &str = "oidc:contractors";
/// Where the contractor works from (outside the company).
pub const CONTRACTOR_IP: &str = "192.0.2.44";
/// What the contractor's reads are allowed by while the binding exists (before and after the patch).
pub const CONTRACTOR_REASON: &str = "RBAC: allowed by RoleBinding \"contractor-secrets/prod-payments\" of Role \"secret-reader\" to User \"eve@contractor.example\"";

/// The GitOps controller whose RBAC write the audit policy logs at Metadata.
pub const GITOPS_USER: &str = "system:serviceaccount:argocd:argocd-application-controller";
/// The ClusterRole it patches (bound to the monitoring namespace's Grafana; nothing about secrets).
pub const METADATA_ONLY_ROLE: &str = "grafana-nodes";
