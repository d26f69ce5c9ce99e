//! What kubetrail knows of the built-in kinds' shapes without a schema: which lists are merged by a key (the
//! `patchMergeKey`/`patchStrategy:"merge"` Go struct tags of k8s.io/api), which fields are noise the apiserver
//! or controllers own, and which keys are strategic merge patch directives. A table of the common kinds,
//! not a schema: a list it does not name is replaced whole by a strategic merge patch (as by a JSON merge
//! patch) and compared by position in a diff.

use crate::path::Seg;

/// `(parent, field, merge key)`: the list `field` of a map that sits under `parent` (`None`: under any) is
/// merged by `merge key`. The parent of a list item's fields is the list's name (`containers`), so a
/// container's `ports` are told from a Service spec's.
const MERGE_KEYS: &[(Option<&str>, &str, &str)] = &[
    (Some("containers"), "ports", "containerPort"),
    (Some("initContainers"), "ports", "containerPort"),
    (Some("ephemeralContainers"), "ports", "containerPort"),
    (Some("spec"), "ports", "port"),
    (None, "containers", "name"),
    (None, "initContainers", "name"),
    (None, "ephemeralContainers", "name"),
    (None, "volumes", "name"),
    (None, "imagePullSecrets", "name"),
    (None, "env", "name"),
    (None, "volumeMounts", "mountPath"),
    (None, "volumeDevices", "devicePath"),
    (None, "hostAliases", "ip"),
    (None, "conditions", "type"),
    (None, "ownerReferences", "uid"),
    (None, "webhooks", "name"),
    (None, "topologySpreadConstraints", "topologyKey"),
    (None, "resourceClaims", "name"),
    (None, "schedulingGates", "name"),
];

/// `(parent, field)`: lists of primitives with patch strategy merge (their values are unioned).
const MERGE_PRIMITIVES: &[(Option<&str>, &str)] = &[(Some("metadata"), "finalizers")];

/// The merge key of the list `field` of a map under `parent`.
pub(crate) fn merge_key(parent: Option<&str>, field: &str) -> Option<&'static str> {
    MERGE_KEYS
        .iter()
        .find(|(p, f, _)| *f == field && (p.is_none() || *p == parent))
        .map(|(_, _, k)| *k)
}

/// Whether the list `field` of a map under `parent` is a merged list of primitives.
pub(crate) fn merges_primitives(parent: Option<&str>, field: &str) -> bool {
    MERGE_PRIMITIVES
        .iter()
        .any(|(p, f)| *f == field && (p.is_none() || *p == parent))
}

/// `metadata` fields the apiserver owns.
const NOISY_METADATA: &[&str] = &[
    "resourceVersion",
    "generation",
    "managedFields",
    "creationTimestamp",
    "uid",
    "selfLink",
];

/// kubectl's copy of the whole applied object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which fields of the object a change may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything but the noise.
    All,
    /// Everything but the noise and `status` (a write to the main resource cannot change status).
    NoStatus,
    /// Only `status` (a write to the status subresource changes nothing else).
    OnlyStatus,
}

impl Scope {
    /// Whether the field at `segs` (and everything under it) is left out.
    pub(crate) fn excludes(self, segs: &[Seg<'_>]) -> bool {
        let first = segs.first().and_then(Seg::key);
        match (self, first) {
            (Scope::NoStatus, Some("status")) => return true,
            (Scope::OnlyStatus, Some(k)) if k != "status" => return true,
            (Scope::OnlyStatus, None) if !segs.is_empty() => return true,
            _ => {}
        }
        match segs {
            [m, k, ..] if m.key() == Some("metadata") => {
                let k = k.key().unwrap_or("");
                NOISY_METADATA.contains(&k)
                    || (k == "annotations" && segs.get(2).and_then(Seg::key) == Some(LAST_APPLIED))
            }
            _ => false,
        }
    }
}

/// `$patch`: `replace`, `delete` (or `merge`) on the map or list item that holds it.
pub(crate) const PATCH: &str = "$patch";
/// `$retainKeys`: the keys of a map that stay.
pub(crate) const RETAIN_KEYS: &str = "$retainKeys";
/// `$setElementOrder/<list>`: the order of a merged list.
pub(crate) const SET_ORDER: &str = "$setElementOrder/";
/// `$deleteFromPrimitiveList/<list>`: values removed from a merged primitive list.
pub(crate) const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";

/// Whether the map key `k` is a strategic merge patch directive (not a field: a CRD schema's `$ref` is one).
pub(crate) fn is_directive(k: &str) -> bool {
    k == PATCH || k == RETAIN_KEYS || k.starts_with(SET_ORDER) || k.starts_with(DELETE_PRIMITIVES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn path(keys: &[&'static str]) -> Vec<Seg<'static>> {
        keys.iter().map(|k| Seg::Key(Cow::Borrowed(*k))).collect()
    }

    #[test]
    fn merge_keys_depend_on_the_parent_where_they_differ() {
        assert_eq!(merge_key(Some("spec"), "containers"), Some("name"));
        assert_eq!(
            merge_key(Some("containers"), "ports"),
            Some("containerPort")
        );
        assert_eq!(merge_key(Some("spec"), "ports"), Some("port"));
        assert_eq!(merge_key(Some("ingress"), "ports"), None);
        assert_eq!(merge_key(Some("spec"), "tolerations"), None);
        assert!(merges_primitives(Some("metadata"), "finalizers"));
        assert!(!merges_primitives(Some("spec"), "finalizers"));
    }

    #[test]
    fn scopes_leave_out_noise_and_status() {
        assert!(Scope::All.excludes(&path(&["metadata", "resourceVersion"])));
        assert!(Scope::All.excludes(&path(&["metadata", "managedFields"])));
        assert!(Scope::All.excludes(&path(&["metadata", "annotations", LAST_APPLIED])));
        assert!(!Scope::All.excludes(&path(&["metadata", "annotations", "team"])));
        assert!(!Scope::All.excludes(&path(&["spec", "metadata", "uid"])));
        assert!(!Scope::All.excludes(&path(&["status"])));
        assert!(Scope::NoStatus.excludes(&path(&["status", "phase"])));
        assert!(Scope::OnlyStatus.excludes(&path(&["spec"])));
        assert!(!Scope::OnlyStatus.excludes(&path(&["status", "phase"])));
        assert!(!Scope::OnlyStatus.excludes(&[]));
    }

    #[test]
    fn directives_are_only_the_four() {
        assert!(is_directive("$patch"));
        assert!(is_directive("$setElementOrder/containers"));
        assert!(is_directive("$deleteFromPrimitiveList/finalizers"));
        assert!(is_directive("$retainKeys"));
        assert!(!is_directive("$ref"));
        assert!(!is_directive("patch"));
    }
}
