//! What happened to one Kubernetes object, change by change, from its stored audit events; and which exec,
//! attach or port-forward session a request was. Pure interpretation: no IO, no async; total on any input
//! (odd JSON gives notes, never a panic) and bounded output (capped change lists, cut values, a replay state
//! of one JSON value).
//!
//! - [`diff`]: the leaf-level changes between two states of an object.
//! - [`patch`]: the type of a stored patch request, applying it, and the fields it sets.
//! - [`replay`]: one object's writes in time order, each with what it changed.
//! - [`session`]: exec/attach/port-forward requests from their URIs.

pub mod diff;
#[cfg(test)]
mod fuzz;
mod marker;
pub mod patch;
mod path;
pub mod replay;
mod schema;
pub mod session;
mod strategic;

pub use diff::{FieldChange, Val};
pub use patch::PatchType;
pub use replay::{Action, Replay, Step, Write};
pub use session::{Session, SessionKind, printable, shell_word};

/// The command that shows an object's history: `kubetrail history deployments/api -n prod` (`namespace`
/// empty for a cluster-scoped object), each argument quoted for a shell ([`shell_word`]).
pub fn history_command(resource: &str, namespace: &str, name: &str) -> String {
    let object = shell_word(&format!("{resource}/{name}"));
    if namespace.is_empty() {
        format!("kubetrail history {object}")
    } else {
        format!("kubetrail history {object} -n {}", shell_word(namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_commands_are_quoted() {
        assert_eq!(
            history_command("deployments", "prod", "api"),
            "kubetrail history deployments/api -n prod"
        );
        assert_eq!(
            history_command("nodes", "", "n1"),
            "kubetrail history nodes/n1"
        );
        assert_eq!(
            history_command("configmaps", "a b", "x;rm"),
            "kubetrail history 'configmaps/x;rm' -n 'a b'"
        );
    }
}
