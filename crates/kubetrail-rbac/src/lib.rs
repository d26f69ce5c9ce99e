//! RBAC at any moment: a base snapshot of the four RBAC kinds plus the RBAC writes recorded in the audit log
//! since, evaluated as kube-apiserver's RBAC authorizer evaluates them (kubernetes/kubernetes
//! plugin/pkg/auth/authorizer/rbac and pkg/registry/rbac/validation), with ClusterRole aggregation as the
//! clusterrole-aggregation controller computes it. Pure: no IO, no async; total on any JSON (odd input gives
//! notes or errors, never a panic) and bounded (at most 100,000 snapshot objects, 10,000 rules per role,
//! 10,000 subjects per binding, 10,000 strings per rule field: an object cut at a bound is uncertain; one
//! write's grant changes are found per binding and role, not per subject, and cut with a note past
//! [`diff::MAX_CHANGES`] changes).
//!
//! - [`snapshot`]: reading `kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A -o json`.
//! - [`state`]: the objects, who may do what ([`State::who_can`], [`State::authorize`]), grants.
//! - [`replay`]: one recorded write applied ([`State::apply`]), objects made uncertain when the log did not
//!   record what changed.
//! - [`diff()`]: grants gained and lost between two states.
//! - [`access`]: a request's attributes, from `kubectl auth can-i` words.
//! - [`matching`]: whether one rule allows one request.
//! - [`propose()`]: least-privilege roles from what an identity did (audit2rbac's algorithm).

pub mod access;
mod aggregate;
pub mod diff;
pub mod matching;
pub mod model;
pub mod propose;
pub mod replay;
pub mod selector;
pub mod snapshot;
pub mod state;
mod yaml;

pub use access::{Access, AccessError, parse_access};
pub use aggregate::MAX_AGGREGATED_RULES;
pub use diff::{GrantChange, diff};
pub use matching::rule_allows;
pub use model::{Key, Kind, PolicyRule, RBAC_GROUP, RoleRef, Subject, UserRef};
pub use propose::{NamespaceRules, Proposal, Used, propose};
pub use replay::{Applied, RbacWrite};
pub use snapshot::{MAX_OBJECTS, Object, Snapshot, SnapshotError, parse_snapshot};
pub use state::{Allowed, Decision, Grant, GrantedRule, State, Uncertain, WhoCan, applies_to};
