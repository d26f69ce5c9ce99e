//! Enrichment fields under `kubetrail.`: facts about an event that rules would otherwise spell out badly
//! (who kind of identity is this? is the pod privileged in any of its containers?).
//!
//! They are computed once per event, after extraction, and only those that some loaded rule (or tuning
//! exception) names; the pod spec paths they read are added to the extraction trie only then.
//!
//! | field | value |
//! |---|---|
//! | `kubetrail.identity.class` | `human`, `service-account`, `node`, `control-plane`, `anonymous` or `cloud-managed`, from `user.username` and `user.groups` (see [`IdentityClass::of`]) |
//! | `kubetrail.namespace.tier` | `production` (configurable patterns), `system` (`kube-system`, `kube-public`, `kube-node-lease`) or `other`; absent for cluster-scoped requests |
//! | `kubetrail.request.execAttach` | `true` for `pods/exec` and `pods/attach` with verb `create` or `get` (WebSocket clients send `get`), else `false` |
//! | `kubetrail.pod.privileged` | `true` if any container, init container or ephemeral container has `securityContext.privileged: true` |
//! | `kubetrail.pod.hostPID`, `.hostIPC`, `.hostNetwork` | the pod spec's flags |
//! | `kubetrail.pod.hostPaths` | every `hostPath` volume's `path` |
//! | `kubetrail.pod.capabilities` | every `securityContext.capabilities.add` entry of any container |
//! | `kubetrail.pod.images` | every container's `image` |
//! | `kubetrail.request.publicSourceIPs` | every address of `sourceIPs` outside the private, loopback, link-local, CGNAT and unique-local ranges; absent when there is none. Any one counts: the first entries come from `X-Forwarded-For`, which the client writes, so "every address is private" is no proof of an inside caller |
//! | `kubetrail.stream.apiserverStart` | `true` for the create of a kube-apiserver's identity Lease (`apiserver-*` in `kube-system`, by `system:apiserver`): a new apiserver identity (a new host, or one back after its Lease expired; a quick restart renews the Lease instead) |
//! | `kubetrail.stream.auditIdReuse` | `true` when the request reused an earlier request's auditID (kubetrail's `kubetrail.io/audit-id-reuse` mark), else `false` |
//! | `kubetrail.stream.delaySeconds` | when the event reached kubetrail minus its `stageTimestamp`, in seconds: minutes mean buffering or replay, a negative value a time in the future (a skewed clock, or a forged event that time-bounded searches would miss). Only where the receipt is known (`serve`; absent in `detect` over files) |
//! | `kubetrail.pod.owner` | for a pod the control plane creates for a workload, that workload as `Kind/name` (`Deployment/web`, `CronJob/backup`); absent otherwise (see [`crate::Owner`]) |
//!
//! The pod spec is read from `requestObject` wherever it is: a Pod (`spec`), a PodTemplate (`template.spec`),
//! a Deployment, DaemonSet, StatefulSet, ReplicaSet or Job template (`spec.template.spec`), a CronJob's
//! (`spec.jobTemplate.spec.template.spec`); patches are read the same way. The boolean pod fields are absent
//! when the request carries no pod spec, and `false` when it carries one without the flag.

use crate::fields::{Fields, Slot, Trie};
use crate::value::{StrPat, Val, tokenize};

/// An enrichment field and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrichField {
    pub name: &'static str,
    pub doc: &'static str,
}

/// Every enrichment field rules may name.
pub const FIELDS: &[EnrichField] = &[
    EnrichField {
        name: "kubetrail.identity.class",
        doc: "human, service-account, node, control-plane, anonymous or cloud-managed",
    },
    EnrichField {
        name: "kubetrail.namespace.tier",
        doc: "production, system or other (absent without a namespace)",
    },
    EnrichField {
        name: "kubetrail.request.execAttach",
        doc: "pods/exec or pods/attach with verb create or get",
    },
    EnrichField {
        name: "kubetrail.pod.privileged",
        doc: "any container is privileged",
    },
    EnrichField {
        name: "kubetrail.pod.hostPID",
        doc: "the pod shares the host's PID namespace",
    },
    EnrichField {
        name: "kubetrail.pod.hostIPC",
        doc: "the pod shares the host's IPC namespace",
    },
    EnrichField {
        name: "kubetrail.pod.hostNetwork",
        doc: "the pod uses the host's network",
    },
    EnrichField {
        name: "kubetrail.pod.hostPaths",
        doc: "paths of hostPath volumes",
    },
    EnrichField {
        name: "kubetrail.pod.capabilities",
        doc: "capabilities added to any container",
    },
    EnrichField {
        name: "kubetrail.pod.images",
        doc: "images of every container",
    },
    EnrichField {
        name: "kubetrail.request.publicSourceIPs",
        doc: "source addresses outside private, loopback, link-local, CGNAT and unique-local ranges",
    },
    EnrichField {
        name: "kubetrail.pod.owner",
        doc: "the workload (Kind/name) a control-plane controller created this pod for",
    },
    EnrichField {
        name: "kubetrail.stream.apiserverStart",
        doc: "a kube-apiserver created its identity Lease: a new apiserver identity",
    },
    EnrichField {
        name: "kubetrail.stream.auditIdReuse",
        doc: "the request reused an earlier request's auditID",
    },
    EnrichField {
        name: "kubetrail.stream.delaySeconds",
        doc: "receipt minus stageTimestamp in seconds (serve only; negative: a time in the future)",
    },
];

/// Where a pod spec can be inside a `requestObject`.
const POD_SPECS: &[&str] = &[
    "requestObject.spec",
    "requestObject.template.spec",
    "requestObject.spec.template.spec",
    "requestObject.spec.jobTemplate.spec.template.spec",
];

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The namespaces of the `system` tier: Kubernetes' own, and GKE's for its managed components.
pub const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "gke-system",
    "gke-managed-system",
    "gke-gmp-system",
];

/// The default patterns of production namespaces (`*` is a wildcard).
pub const DEFAULT_PRODUCTION_NAMESPACES: &[&str] = &["prod", "prod-*", "*-prod", "production*"];

/// Who is making a request, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityClass {
    Human,
    ServiceAccount,
    Node,
    ControlPlane,
    Anonymous,
    CloudManaged,
}

/// Service accounts of kube-controller-manager's controllers (`--use-service-account-credentials`) whose
/// names do not end in `-controller`, and the bare names managed platforms give their controllers and
/// operators in kube-system.
const CONTROLLER_SAS: &[&str] = &[
    "generic-garbage-collector",
    "pod-garbage-collector",
    "persistent-volume-binder",
    "horizontal-pod-autoscaler",
    "root-ca-cert-publisher",
    "token-cleaner",
    "bootstrap-signer",
    "legacy-service-account-token-cleaner",
    "controller",
    "operator",
];

/// Usernames of the managed clouds' own components (exact, or prefix when ending in `*`).
const CLOUD_MANAGED: &[&str] = &[
    "eks:*",
    "system:gke-*",
    "system:gcp-*",
    "system:addon-manager",
    "system:clustermetrics",
    "system:l7-lb-controller",
    "system:managed-certificate-controller",
    "system:resource-tracker",
    "system:kubestore-collector",
    "aksService",
    "masterclient",
    "nodeclient",
    "aks-*",
];

/// GKE's service agent, `service-<project number>@container-engine-robot.iam.gserviceaccount.com`: a domain
/// only Google's own project holds. Not `container-engine-robot@<project>...`, which anyone can create in
/// their own project and have bound in a cluster.
fn gke_robot(username: &str) -> bool {
    username
        .strip_suffix("@container-engine-robot.iam.gserviceaccount.com")
        .and_then(|local| local.strip_prefix("service-"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn listed(list: &[&str], s: &str) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => s == *p,
    })
}

impl IdentityClass {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityClass::Human => "human",
            IdentityClass::ServiceAccount => "service-account",
            IdentityClass::Node => "node",
            IdentityClass::ControlPlane => "control-plane",
            IdentityClass::Anonymous => "anonymous",
            IdentityClass::CloudManaged => "cloud-managed",
        }
    }

    /// Classifies the authenticated user, first rule that applies:
    /// 1. anonymous: `system:anonymous`, or the group `system:unauthenticated`;
    /// 2. node: `system:node:*`, or the group `system:nodes`;
    /// 3. cloud-managed: EKS `eks:*`, GKE `system:gke-*`, `system:gcp-*` and its named components
    ///    (`system:addon-manager`, `system:l7-lb-controller`, ...) and its service agent
    ///    (`container-engine-robot`), AKS `aksService`, `masterclient`, `nodeclient`, `aks-*`;
    /// 4. control-plane: `system:apiserver`, `system:kube-*` (controller manager, scheduler, proxy,
    ///    aggregator), `system:volume-scheduler`, and controllers' service accounts in kube-system
    ///    (`*-controller`, `controller`, `operator`, `generic-garbage-collector`, ...): creating one is
    ///    itself alerted (`kt-sa-control-plane-name`), and a token of one used from outside is still
    ///    reported by the rules on service-account tokens. Third-party operators (`cilium-operator`) are
    ///    not the control plane;
    /// 5. service-account: any other `system:serviceaccount:*`;
    /// 6. human: everyone else (people, and certificates or OIDC identities of tools).
    pub fn of<'a>(username: &str, groups: impl IntoIterator<Item = &'a str>) -> IdentityClass {
        let mut unauthenticated = false;
        let mut nodes = false;
        for g in groups {
            unauthenticated |= g == "system:unauthenticated";
            nodes |= g == "system:nodes";
        }
        if username == "system:anonymous" || unauthenticated {
            return IdentityClass::Anonymous;
        }
        if username.starts_with("system:node:") || nodes {
            return IdentityClass::Node;
        }
        if listed(CLOUD_MANAGED, username) || gke_robot(username) {
            return IdentityClass::CloudManaged;
        }
        if username == "system:apiserver"
            || username.starts_with("system:kube-")
            || username == "system:volume-scheduler"
        {
            return IdentityClass::ControlPlane;
        }
        if let Some(sa) = username.strip_prefix("system:serviceaccount:") {
            if let Some(name) = sa.strip_prefix("kube-system:")
                && (name.ends_with("-controller") || CONTROLLER_SAS.contains(&name))
            {
                return IdentityClass::ControlPlane;
            }
            return IdentityClass::ServiceAccount;
        }
        IdentityClass::Human
    }
}

/// Namespace name patterns (`*` wildcards), matched case-sensitively as Kubernetes names are lowercase.
#[derive(Debug, Clone)]
pub(crate) struct NamespacePatterns(Vec<StrPat>);

impl NamespacePatterns {
    pub(crate) fn new(patterns: &[String]) -> NamespacePatterns {
        NamespacePatterns(patterns.iter().map(|p| StrPat::new(tokenize(p))).collect())
    }

    pub(crate) fn matches(&self, ns: &str) -> bool {
        self.0.iter().any(|p| p.matches(ns))
    }
}

/// The slots the enrichment reads from extraction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs {
    pub(crate) username: Slot,
    pub(crate) groups: Slot,
    pub(crate) namespace: Slot,
    pub(crate) resource: Slot,
    pub(crate) subresource: Slot,
    pub(crate) verb: Slot,
    pub(crate) source_ips: Slot,
    pub(crate) owner: crate::owner::OwnerSlots,
    pub(crate) name: Slot,
    pub(crate) reuse: Slot,
    pub(crate) stage_time: Slot,
}

#[derive(Debug, Clone, Copy)]
struct PodInputs {
    present: Slot,
    privileged: Slot,
    host_pid: Slot,
    host_ipc: Slot,
    host_network: Slot,
    host_paths: Slot,
    capabilities: Slot,
    images: Slot,
}

/// The compiled enrichment: which fields to compute, into which slots.
#[derive(Debug, Clone)]
pub(crate) struct Enricher {
    inputs: Inputs,
    /// Output slot per entry of [`FIELDS`], when requested.
    out: [Option<Slot>; 15],
    pod: Option<PodInputs>,
    production: NamespacePatterns,
    /// When the event being computed reached kubetrail (ms), when the caller knows.
    pub(crate) received: Option<i64>,
}

impl Enricher {
    pub(crate) fn new(inputs: Inputs, production: NamespacePatterns) -> Enricher {
        Enricher {
            inputs,
            out: [None; 15],
            pod: None,
            production,
            received: None,
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.out.iter().any(Option::is_some)
    }

    /// The slot of an enrichment field (which must be in [`FIELDS`]), computing it from now on.
    pub(crate) fn request(&mut self, name: &str, trie: &mut Trie) -> Slot {
        let i = FIELDS.iter().position(|f| f.name == name).unwrap_or(0);
        if let Some(s) = self.out[i] {
            return s;
        }
        if name.starts_with("kubetrail.pod.") && name != "kubetrail.pod.owner" && self.pod.is_none()
        {
            self.pod = Some(pod_inputs(trie));
        }
        let s = trie.virtual_slot();
        self.out[i] = Some(s);
        s
    }

    pub(crate) fn compute<'a>(&self, f: &mut Fields<'a>) {
        let [
            class,
            tier,
            exec,
            privileged,
            host_pid,
            host_ipc,
            host_net,
            host_paths,
            caps,
            images,
            public_ips,
            owner,
            apiserver_start,
            reuse,
            delay,
        ] = self.out;
        let i = self.inputs;
        if let Some(out) = apiserver_start {
            let yes = f.first_str(i.resource) == Some("leases")
                && f.first_str(i.verb) == Some("create")
                && f.first_str(i.namespace) == Some("kube-system")
                && f.first_str(i.username) == Some("system:apiserver")
                && f.first_str(i.name)
                    .is_some_and(|n| n.starts_with("apiserver-"));
            f.push(out, Val::Bool(yes));
        }
        if let Some(out) = reuse {
            let yes = f.has(i.reuse);
            f.push(out, Val::Bool(yes));
        }
        if let (Some(out), Some(received)) = (delay, self.received)
            && let Some(at) = f.first_str(i.stage_time).and_then(crate::alert::parse_time)
        {
            f.push(out, Val::Num(((received - at) / 1000) as f64));
        }
        if let Some(out) = public_ips {
            let public: Vec<Val<'a>> = f
                .get(i.source_ips)
                .filter(|v| v.as_str().is_some_and(is_public))
                .cloned()
                .collect();
            for v in public {
                f.push(out, v);
            }
        }
        if let Some(out) = owner
            && f.first_str(i.resource) == Some("pods")
            && f.first_str(i.verb) == Some("create")
            && f.first_str(i.subresource).is_none_or(str::is_empty)
            && IdentityClass::of(
                f.first_str(i.username).unwrap_or(""),
                f.get(i.groups).filter_map(Val::as_str),
            ) == IdentityClass::ControlPlane
            && let Some(o) = crate::owner::pod_owner(f, i.owner)
        {
            let v = format!("{}/{}", o.kind, o.name);
            f.push(out, Val::Str(v.into()));
        }
        if let Some(out) = class {
            let user = f.first_str(i.username).unwrap_or("");
            let c = IdentityClass::of(user, f.get(i.groups).filter_map(Val::as_str));
            f.push(out, Val::Str(c.as_str().into()));
        }
        if let Some(out) = tier
            && let Some(ns) = f.first_str(i.namespace).filter(|ns| !ns.is_empty())
        {
            let t = if self.production.matches(ns) {
                "production"
            } else if SYSTEM_NAMESPACES.contains(&ns) {
                "system"
            } else {
                "other"
            };
            f.push(out, Val::Str(t.into()));
        }
        if let Some(out) = exec {
            let yes = f.first_str(i.resource) == Some("pods")
                && matches!(f.first_str(i.subresource), Some("exec" | "attach"))
                && matches!(f.first_str(i.verb), Some("create" | "get"));
            f.push(out, Val::Bool(yes));
        }
        let Some(p) = self.pod else { return };
        let truthy = |f: &Fields<'_>, s: Slot| f.get(s).any(|v| matches!(v, Val::Bool(true)));
        let present =
            f.has(p.present) || f.has(p.host_pid) || f.has(p.host_ipc) || f.has(p.host_network);
        for (out, input) in [
            (privileged, p.privileged),
            (host_pid, p.host_pid),
            (host_ipc, p.host_ipc),
            (host_net, p.host_network),
        ] {
            if let Some(out) = out {
                if truthy(f, input) {
                    f.push(out, Val::Bool(true));
                } else if present {
                    f.push(out, Val::Bool(false));
                }
            }
        }
        for (out, input) in [
            (host_paths, p.host_paths),
            (caps, p.capabilities),
            (images, p.images),
        ] {
            if let Some(out) = out {
                let vals: Vec<Val<'a>> = f
                    .get(input)
                    .filter(|v| v.as_str().is_some())
                    .cloned()
                    .collect();
                for v in vals {
                    f.push(out, v);
                }
            }
        }
    }
}

pub(crate) use kubetrail_model::principal::is_public;

fn pod_inputs(trie: &mut Trie) -> PodInputs {
    let p = PodInputs {
        present: trie.virtual_slot(),
        privileged: trie.virtual_slot(),
        host_pid: trie.virtual_slot(),
        host_ipc: trie.virtual_slot(),
        host_network: trie.virtual_slot(),
        host_paths: trie.virtual_slot(),
        capabilities: trie.virtual_slot(),
        images: trie.virtual_slot(),
    };
    for spec in POD_SPECS {
        trie.insert_into(&format!("{spec}.hostPID"), p.host_pid);
        trie.insert_into(&format!("{spec}.hostIPC"), p.host_ipc);
        trie.insert_into(&format!("{spec}.hostNetwork"), p.host_network);
        trie.insert_into(&format!("{spec}.volumes.hostPath.path"), p.host_paths);
        for list in CONTAINER_LISTS {
            trie.insert_into(&format!("{spec}.{list}"), p.present);
            trie.insert_into(&format!("{spec}.{list}.image"), p.images);
            trie.insert_into(
                &format!("{spec}.{list}.securityContext.privileged"),
                p.privileged,
            );
            trie.insert_into(
                &format!("{spec}.{list}.securityContext.capabilities.add"),
                p.capabilities,
            );
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for ip in [
            "203.0.113.9",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            assert!(is_public(ip), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "not-an-ip",
            "",
        ] {
            assert!(!is_public(ip), "{ip}");
        }
    }

    #[test]
    fn identity_classes() {
        let check = |user: &str, groups: &[&str], want: IdentityClass| {
            assert_eq!(
                IdentityClass::of(user, groups.iter().copied()),
                want,
                "{user}"
            );
        };
        check("system:anonymous", &[], IdentityClass::Anonymous);
        check("x", &["system:unauthenticated"], IdentityClass::Anonymous);
        check(
            "system:node:ip-10-0-0-1",
            &["system:nodes"],
            IdentityClass::Node,
        );
        check(
            "system:kube-controller-manager",
            &[],
            IdentityClass::ControlPlane,
        );
        check("system:kube-scheduler", &[], IdentityClass::ControlPlane);
        check(
            "system:apiserver",
            &["system:masters"],
            IdentityClass::ControlPlane,
        );
        check(
            "system:serviceaccount:kube-system:replicaset-controller",
            &[],
            IdentityClass::ControlPlane,
        );
        check(
            "system:serviceaccount:kube-system:generic-garbage-collector",
            &[],
            IdentityClass::ControlPlane,
        );
        check(
            "system:serviceaccount:kube-system:coredns",
            &[],
            IdentityClass::ServiceAccount,
        );
        check(
            "system:serviceaccount:prod:evil-controller",
            &[],
            IdentityClass::ServiceAccount,
        );
        check("eks:node-manager", &[], IdentityClass::CloudManaged);
        check(
            "system:gke-common-webhooks",
            &[],
            IdentityClass::CloudManaged,
        );
        check("aksService", &[], IdentityClass::CloudManaged);
        check(
            "service-123@container-engine-robot.iam.gserviceaccount.com",
            &[],
            IdentityClass::CloudManaged,
        );
        check(
            "container-engine-robot@proj.iam.gserviceaccount.com",
            &[],
            IdentityClass::Human,
        );
        check(
            "service-x@container-engine-robot.iam.gserviceaccount.com",
            &[],
            IdentityClass::Human,
        );
        check(
            "container-engine-robot@evil.example.com",
            &[],
            IdentityClass::Human,
        );
        check(
            "system:serviceaccount:kube-system:cilium-operator",
            &[],
            IdentityClass::ServiceAccount,
        );
        check(
            "system:serviceaccount:kube-system:operator",
            &[],
            IdentityClass::ControlPlane,
        );
        check(
            "system:serviceaccount:prod:operator",
            &[],
            IdentityClass::ServiceAccount,
        );
        check(
            "alice@example.com",
            &["system:authenticated"],
            IdentityClass::Human,
        );
        check(
            "kubernetes-admin",
            &["system:masters"],
            IdentityClass::Human,
        );
        check("", &[], IdentityClass::Human);
    }
}
