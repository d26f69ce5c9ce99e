//! Controller-made pods: which workload a pod belongs to, who last wrote that workload, and which of its
//! templates have already been reported.
//!
//! A pod spec rule reports a workload's template when a person or a tool writes it. But a policy that logs
//! workload writes at `Metadata` (the usual tiering) leaves the template's body out of the log, and the only
//! record of a privileged container is then the pod a controller creates from it. So a pod created by the
//! control plane (`replicaset-controller`, `daemon-set-controller`, `job-controller`, ...) on behalf of a
//! workload counts, attributed to the workload (ReplicaSet to its Deployment, Job to its CronJob) and to the
//! identity that last wrote it:
//!
//! - nothing is raised when the rule already reported this version of the template (one rollout is one
//!   alert, however many replicas or nodes it reaches), or reported the workload's template when it was
//!   written and nobody has written the workload since (a later write, even one logged without its body,
//!   may have changed the template);
//! - nothing is raised when only the platform (a node or a managed cloud's component) wrote the workload;
//! - otherwise the alert names the last person or tool that wrote it (a platform write after theirs does not
//!   hide their change) and keeps the rule's level; when no write of the workload is known (it predates the
//!   trail, or was evicted), the alert is `low`: an inventory finding rather than an attack step, which the
//!   binary may attribute from the store.
//!
//! The links ReplicaSet to Deployment and Job to CronJob are read from names, which a requester chooses: a
//! link is followed only when nobody but the control plane wrote the ReplicaSet or Job (a person's bare
//! ReplicaSet named like another's Deployment, with its hash label, is that person's ReplicaSet), and the
//! template version includes the direct owner's name, so a copied hash label matches nothing already
//! reported. Every key includes the cluster the event came from.
//!
//! The memory is the engine's (bounded, per cluster); `Engine::remember` seeds it with earlier alerts when a
//! collector restarts.
//!
//! Writes by the control plane itself (the deployment controller updating a Deployment's annotations) are
//! not "writes" here: the template is the last person's or tool's.
//!
//! The owner is read from the pod's controlling `ownerReferences` entry. A ReplicaSet is a Deployment's
//! when the pod carries the `pod-template-hash` label the Deployment controller sets, and its name is then
//! the Deployment's name and a hash segment; a Job is a CronJob's when its name is the CronJob's and the
//! scheduled minute (`<name>-<8 or more digits>`, the CronJob controller's naming).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::enrich::IdentityClass;
use crate::fields::{Fields, Slot, Trie};
use crate::value::Val;

/// The workload kinds whose controllers create pods, with their resource names.
const WORKLOADS: &[(&str, &str)] = &[
    ("Deployment", "deployments"),
    ("ReplicaSet", "replicasets"),
    ("DaemonSet", "daemonsets"),
    ("StatefulSet", "statefulsets"),
    ("Job", "jobs"),
    ("CronJob", "cronjobs"),
    ("ReplicationController", "replicationcontrollers"),
];

/// The workload a controller made a pod for, as an alert carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// `Deployment`, `DaemonSet`, `StatefulSet`, `CronJob`, `Job`, `ReplicaSet` or `ReplicationController`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The control-plane identity that created the pod.
    pub controller: String,
    /// Who last wrote the workload, when kubetrail saw it (a person or a tool, never the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// When (RFC 3339).
    #[serde(default, rename = "writtenAt", skip_serializing_if = "Option::is_none")]
    pub written_at: Option<String>,
}

impl Owner {
    /// The workload's resource name (`deployments`), to look it up in the store.
    pub fn resource(&self) -> Option<&'static str> {
        workload(&self.kind).map(|(_, r)| r)
    }
}

/// The paths the owner is read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnerSlots {
    kind: Slot,
    name: Slot,
    controller: Slot,
    template_hash: Slot,
    revision_hash: Slot,
}

impl OwnerSlots {
    pub(crate) fn new(trie: &mut Trie) -> OwnerSlots {
        OwnerSlots {
            kind: trie.insert("requestObject.metadata.ownerReferences.kind"),
            name: trie.insert("requestObject.metadata.ownerReferences.name"),
            controller: trie.insert("requestObject.metadata.ownerReferences.controller"),
            template_hash: trie.insert("requestObject.metadata.labels.pod-template-hash"),
            revision_hash: trie.insert("requestObject.metadata.labels.controller-revision-hash"),
        }
    }
}

/// A pod's owning workload as read from its request (no identity check here; the link to a Deployment or
/// CronJob is a guess from names, see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodOwner<'a> {
    /// The workload the template belongs to (a Deployment rather than its ReplicaSet).
    pub(crate) kind: &'static str,
    pub(crate) name: &'a str,
    /// The direct owner, when the workload above was derived from it (a ReplicaSet or Job).
    pub(crate) direct: Option<(&'static str, &'a str)>,
    /// Which version of the template (`pod-template-hash`, `controller-revision-hash`), or "".
    pub(crate) template: &'a str,
}

/// The controlling workload owner of the pod in this request, if it names one.
pub(crate) fn pod_owner<'f>(f: &'f Fields<'_>, s: OwnerSlots) -> Option<PodOwner<'f>> {
    let kinds: Vec<&str> = f.get(s.kind).filter_map(Val::as_str).collect();
    let names: Vec<&str> = f.get(s.name).filter_map(Val::as_str).collect();
    if kinds.is_empty() || kinds.len() != names.len() {
        return None;
    }
    let controllers: Vec<bool> = f
        .get(s.controller)
        .map(|v| matches!(v, Val::Bool(true)))
        .collect();
    // The entry the controller flag marks (entries align when each has the flag); else the only workload.
    let pick = if controllers.len() == kinds.len() {
        controllers.iter().position(|c| *c)?
    } else if !f.has(s.controller) {
        let mut workloads = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| workload(k).is_some());
        let (i, _) = workloads.next()?;
        if workloads.next().is_some() {
            return None;
        }
        i
    } else {
        // Flags on some entries only: which entry a flag belongs to is unknown.
        return None;
    };
    let kind = workload(kinds[pick])?.0;
    let name = names[pick];
    if name.is_empty() {
        return None;
    }
    let template_hash = f.first_str(s.template_hash).unwrap_or("");
    let template = if template_hash.is_empty() {
        f.first_str(s.revision_hash).unwrap_or("")
    } else {
        template_hash
    };
    let (kind, name, direct) = match kind {
        // The Deployment controller names a ReplicaSet `<deployment>-<hash>` and labels its pods with the
        // hash (older releases label a different encoding of it, so the name's last segment is cut).
        "ReplicaSet" if !template_hash.is_empty() => match name.rsplit_once('-') {
            Some((deployment, _)) if !deployment.is_empty() => {
                ("Deployment", deployment, Some((kind, name)))
            }
            _ => (kind, name, None),
        },
        // The CronJob controller names a Job `<cronjob>-<scheduled minute since the epoch>`.
        "Job" => match name.rsplit_once('-') {
            Some((cron, minute))
                if !cron.is_empty()
                    && minute.len() >= 8
                    && minute.bytes().all(|b| b.is_ascii_digit()) =>
            {
                ("CronJob", cron, Some((kind, name)))
            }
            _ => (kind, name, None),
        },
        _ => (kind, name, None),
    };
    Some(PodOwner {
        kind,
        name,
        direct,
        template,
    })
}

/// The kind and resource of a workload kind or resource name.
pub(crate) fn workload(kind_or_resource: &str) -> Option<(&'static str, &'static str)> {
    WORKLOADS
        .iter()
        .find(|(k, r)| *k == kind_or_resource || *r == kind_or_resource)
        .copied()
}

/// Identifies a workload of a cluster (and, with a template, one version of its template) in the maps below.
pub(crate) fn key(cluster: &str, kind: &str, namespace: &str, name: &str, template: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in [cluster, kind, namespace, name, template] {
        for b in p.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// One write of a workload.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) username: Box<str>,
    pub(crate) class: IdentityClass,
    pub(crate) time: i64,
    /// The client's address (the first of `sourceIPs`).
    pub(crate) source_ip: Option<Box<str>>,
}

impl Write {
    /// A node's or a managed cloud's component.
    pub(crate) fn by_platform(&self) -> bool {
        matches!(
            self.class,
            IdentityClass::Node | IdentityClass::CloudManaged
        )
    }
}

/// Who wrote a workload: the last write, and the last one by anyone but the platform. A platform write after
/// a person's (an add-on manager reconciling) does not make the person's change the platform's.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub(crate) last: Write,
    pub(crate) person: Option<Write>,
}

impl Writer {
    /// Whom an alert on the workload's pods names: the last person, else the platform.
    pub(crate) fn author(&self) -> &Write {
        self.person.as_ref().unwrap_or(&self.last)
    }
}

/// Bounded memory of workload writers and reported templates (the oldest are forgotten beyond `max`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Workloads {
    writers: HashMap<u64, Writer>,
    /// (rule, workload or workload template key) → when it was reported.
    reported: HashMap<(u32, u64), i64>,
    pub(crate) evictions: u64,
}

impl Workloads {
    pub(crate) fn wrote(&mut self, key: u64, w: Write, max: usize) {
        if self.writers.len() >= max.max(1) && !self.writers.contains_key(&key) {
            self.evictions +=
                crate::engine::evict_oldest(&mut self.writers, |w| w.last.time) as u64;
        }
        let person = if w.by_platform() {
            self.writers.get(&key).and_then(|old| old.person.clone())
        } else {
            Some(w.clone())
        };
        self.writers.insert(key, Writer { last: w, person });
    }

    pub(crate) fn writer(&self, key: u64) -> Option<&Writer> {
        self.writers.get(&key)
    }

    /// When the rule reported this workload (or template version), if it did.
    pub(crate) fn reported(&self, rule: u32, key: u64) -> Option<i64> {
        self.reported.get(&(rule, key)).copied()
    }

    pub(crate) fn report(&mut self, rule: u32, key: u64, now: i64, max: usize) {
        if self.reported.len() >= max.max(1) && !self.reported.contains_key(&(rule, key)) {
            self.evictions += crate::engine::evict_oldest(&mut self.reported, |t| *t) as u64;
        }
        self.reported.insert((rule, key), now);
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        self.writers.capacity() * (size_of::<(u64, Writer)>() + 40)
            + self.reported.capacity() * (size_of::<((u32, u64), i64)>() + 1)
    }
}
