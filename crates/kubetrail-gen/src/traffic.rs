//! The everyday traffic of a cluster, weighted like measured ones: the controller-manager's informers,
//! kubelets renewing leases and reporting status, the scheduler, operators' watches, CI deploying, people
//! running kubectl, health probes, and the odd 403 and 404.

use crate::cluster::{Cluster, KUBECTL_UA, Pod, WorkloadKind, new_pod};
use crate::event::*;
use crate::objects;
use crate::rng::Rand;
use crate::time::{ts, ts_secs};

/// What the next request is drawn from, per `next`.
pub(crate) struct Ctx<'a> {
    pub rng: &'a mut Rand,
    pub c: &'a mut Cluster,
    pub now: i64,
    /// Requests this one causes a little later (binding after a pod create), with their delay in µs.
    pub follow: &'a mut Vec<(i64, Req)>,
    /// A quiet night ([`crate::Config::nights`]): people's requests are rare.
    pub night: bool,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    KcmWatchPods,
    KcmWatch,
    KcmList,
    KcmLease,
    ControllerStatus,
    ControllerEndpointSlices,
    ControllerEvents,
    PodCreate,
    KubeletLeaseUpdate,
    KubeletLeaseGet,
    KubeletNodeStatus,
    KubeletGetNode,
    KubeletWatchObject,
    KubeletWatchPods,
    KubeletGetSecret,
    KubeletGetConfigMap,
    KubeletGetPod,
    KubeletPodStatus,
    KubeletEvent,
    KubeletToken,
    KubeletCsiNode,
    SchedulerWatch,
    SchedulerLease,
    ApiserverLease,
    KubeProxy,
    Operator,
    Ci,
    Human,
    Health,
    Discovery,
    Forbidden,
    NotFound,
}

/// Relative weights of the requests drawn fresh (follow-ups such as bindings come on top).
const MIX: &[(Kind, u32)] = &[
    (Kind::KcmWatchPods, 140),
    (Kind::KcmWatch, 60),
    (Kind::KcmList, 20),
    (Kind::KcmLease, 30),
    (Kind::ControllerStatus, 8),
    (Kind::ControllerEndpointSlices, 10),
    (Kind::ControllerEvents, 10),
    (Kind::PodCreate, 25),
    (Kind::KubeletLeaseUpdate, 60),
    (Kind::KubeletLeaseGet, 10),
    (Kind::KubeletNodeStatus, 30),
    (Kind::KubeletGetNode, 10),
    (Kind::KubeletWatchObject, 20),
    (Kind::KubeletWatchPods, 5),
    (Kind::KubeletGetSecret, 15),
    (Kind::KubeletGetConfigMap, 10),
    (Kind::KubeletGetPod, 15),
    (Kind::KubeletPodStatus, 15),
    (Kind::KubeletEvent, 10),
    (Kind::KubeletToken, 15),
    (Kind::KubeletCsiNode, 3),
    (Kind::SchedulerWatch, 20),
    (Kind::SchedulerLease, 30),
    (Kind::ApiserverLease, 25),
    (Kind::KubeProxy, 20),
    (Kind::Operator, 110),
    (Kind::Ci, 20),
    (Kind::Human, 40),
    (Kind::Health, 70),
    (Kind::Discovery, 20),
    (Kind::Forbidden, 2),
    (Kind::NotFound, 12),
];

/// What the controller-manager's informers watch besides pods.
const KCM_WATCHED: &[Res] = &[
    NODES,
    SERVICES,
    ENDPOINTS,
    ENDPOINTSLICES,
    CONFIGMAPS,
    SECRETS,
    SERVICEACCOUNTS,
    NAMESPACES,
    REPLICASETS,
    DEPLOYMENTS,
    DAEMONSETS,
    STATEFULSETS,
    CONTROLLERREVISIONS,
    JOBS,
    CRONJOBS,
    PVCS,
    PVS,
    PDBS,
    HPAS,
    RESOURCEQUOTAS,
    LIMITRANGES,
    INGRESSES,
    NETWORKPOLICIES,
    CSINODES,
    STORAGECLASSES,
    LEASES,
    CSRS,
    CLUSTERROLES,
    ROLES,
    ROLEBINDINGS,
    CLUSTERROLEBINDINGS,
    MUTATINGWEBHOOKS,
    VALIDATINGWEBHOOKS,
    PRIORITYCLASSES,
    RUNTIMECLASSES,
    CSIDRIVERS,
    VOLUMEATTACHMENTS,
    REPLICATIONCONTROLLERS,
];

const SCHEDULER_WATCHED: &[Res] = &[
    NODES,
    PVCS,
    PVS,
    SERVICES,
    CSINODES,
    CSIDRIVERS,
    STORAGECLASSES,
    REPLICASETS,
    STATEFULSETS,
    NAMESPACES,
    REPLICATIONCONTROLLERS,
    PDBS,
];

#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Across all namespaces (or cluster-scoped).
    All,
    /// The operator's own namespace.
    Own,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Watch(Res, Scope),
    List(Res, Scope),
    Get(Res, &'static str),
    Patch(Res, &'static str),
    Lease(&'static str, &'static str),
    Create(Res),
}

/// Operators' requests: (operator key, weight, request).
const OPS: &[(&str, u32, Op)] = &[
    ("coredns", 6, Op::Watch(ENDPOINTSLICES, Scope::All)),
    ("coredns", 4, Op::Watch(SERVICES, Scope::All)),
    ("coredns", 2, Op::Watch(NAMESPACES, Scope::All)),
    ("coredns", 1, Op::List(ENDPOINTSLICES, Scope::All)),
    ("cert-manager", 4, Op::Watch(CERTIFICATES, Scope::All)),
    (
        "cert-manager",
        3,
        Op::Watch(CERTIFICATEREQUESTS, Scope::All),
    ),
    ("cert-manager", 1, Op::Watch(ISSUERS, Scope::All)),
    ("cert-manager", 1, Op::Watch(CLUSTERISSUERS, Scope::All)),
    ("cert-manager", 1, Op::Watch(ORDERS, Scope::All)),
    ("cert-manager", 3, Op::Watch(SECRETS, Scope::All)),
    ("cert-manager", 1, Op::List(SECRETS, Scope::All)),
    (
        "cert-manager",
        8,
        Op::Lease("kube-system", "cert-manager-controller"),
    ),
    ("cainjector", 1, Op::Watch(MUTATINGWEBHOOKS, Scope::All)),
    ("cainjector", 1, Op::Watch(VALIDATINGWEBHOOKS, Scope::All)),
    ("cainjector", 2, Op::Watch(CRDS, Scope::All)),
    (
        "cainjector",
        6,
        Op::Lease("kube-system", "cert-manager-cainjector-leader-election"),
    ),
    ("argocd-controller", 4, Op::Watch(APPLICATIONS, Scope::Own)),
    ("argocd-controller", 2, Op::List(DEPLOYMENTS, Scope::All)),
    ("argocd-controller", 2, Op::Watch(DEPLOYMENTS, Scope::All)),
    ("argocd-controller", 1, Op::Watch(SERVICES, Scope::All)),
    ("argocd-controller", 1, Op::Watch(CONFIGMAPS, Scope::All)),
    ("argocd-controller", 4, Op::Patch(APPLICATIONS, "payments")),
    ("argocd-controller", 3, Op::Patch(APPLICATIONS, "shop")),
    ("argocd-controller", 2, Op::Get(APPPROJECTS, "default")),
    ("argocd-server", 3, Op::List(APPLICATIONS, Scope::Own)),
    ("argocd-server", 2, Op::Get(APPLICATIONS, "shop")),
    ("ingress-nginx", 3, Op::Watch(INGRESSES, Scope::All)),
    ("ingress-nginx", 1, Op::Watch(INGRESSCLASSES, Scope::All)),
    ("ingress-nginx", 3, Op::Watch(ENDPOINTSLICES, Scope::All)),
    ("ingress-nginx", 1, Op::Watch(SERVICES, Scope::All)),
    ("ingress-nginx", 2, Op::Watch(SECRETS, Scope::All)),
    ("ingress-nginx", 1, Op::Watch(CONFIGMAPS, Scope::Own)),
    (
        "ingress-nginx",
        8,
        Op::Lease("ingress-nginx", "ingress-nginx-leader"),
    ),
    ("prometheus", 2, Op::List(PODS, Scope::All)),
    ("prometheus", 2, Op::Watch(PODS, Scope::All)),
    ("prometheus", 2, Op::Watch(ENDPOINTS, Scope::All)),
    ("prometheus", 1, Op::Watch(SERVICES, Scope::All)),
    ("prometheus", 2, Op::Watch(ENDPOINTSLICES, Scope::All)),
    ("prometheus", 1, Op::Watch(SERVICEMONITORS, Scope::All)),
    ("prometheus", 1, Op::Get(CONFIGMAPS, "prometheus-config")),
    ("kube-state-metrics", 2, Op::Watch(PODS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(DEPLOYMENTS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(NODES, Scope::All)),
    ("kube-state-metrics", 2, Op::List(SECRETS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(CONFIGMAPS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(JOBS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(CRONJOBS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(PVCS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(NAMESPACES, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(REPLICASETS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(DAEMONSETS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(STATEFULSETS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(HPAS, Scope::All)),
    ("kube-state-metrics", 1, Op::Watch(LEASES, Scope::All)),
    ("metrics-server", 2, Op::Watch(NODES, Scope::All)),
    ("metrics-server", 3, Op::Create(SUBJECTACCESSREVIEWS)),
    ("metrics-server", 1, Op::Create(TOKENREVIEWS)),
    ("metrics-server", 1, Op::List(NODES, Scope::All)),
];

/// Draws by weight from `table`, using `w` to read each entry's weight.
fn weighted<'a, T>(rng: &mut Rand, table: &'a [T], w: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = table.iter().map(&w).sum();
    let mut x = rng.below(total as usize) as u32;
    for e in table {
        let we = w(e);
        if x < we {
            return e;
        }
        x -= we;
    }
    &table[table.len() - 1]
}

fn watch(ctx: &mut Ctx<'_>, actor: &Actor, oref: ObjRef, selector: &str) -> Req {
    let t = ctx.rng.range(300, 600) as i64;
    let rv = ctx.c.recent_rv(ctx.rng);
    let sel = if selector.is_empty() {
        String::new()
    } else {
        format!("{selector}&")
    };
    let q = format!(
        "allowWatchBookmarks=true&{sel}resourceVersion={rv}&timeout={}m{}s&timeoutSeconds={t}&watch=true",
        t / 60,
        t % 60
    );
    let mut r = Req::resource(ctx.rng, actor, "watch", oref, &q);
    r.latency_us += t * 1_000_000;
    r
}

fn list(ctx: &mut Ctx<'_>, actor: &Actor, oref: ObjRef) -> Req {
    let mut r = Req::resource(ctx.rng, actor, "list", oref, "limit=500&resourceVersion=0");
    r.latency_us += ctx.rng.exp(15_000.0) as i64;
    r
}

fn get(ctx: &mut Ctx<'_>, actor: &Actor, oref: ObjRef, query: &str) -> Req {
    Req::resource(ctx.rng, actor, "get", oref, query)
}

/// Leader election or heartbeat: get, or update with the renewed Lease.
fn lease(
    ctx: &mut Ctx<'_>,
    actor: &Actor,
    ns: &str,
    name: &str,
    holder: &str,
    duration: i64,
    get_share: f64,
) -> Req {
    let oref = LEASES.at(ns, name, "");
    if ctx.rng.chance(get_share) {
        return get(ctx, actor, oref, "timeout=5s");
    }
    let rv = ctx.c.bump();
    let uid = format!("{:032x}", fxhash(name));
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &uid[..8],
        &uid[8..12],
        &uid[12..16],
        &uid[16..20],
        &uid[20..]
    );
    let obj = objects::lease(name, ns, &uid, rv, holder, duration, &ts(ctx.now));
    Req::resource(ctx.rng, actor, "update", oref, "timeout=5s").with_object(Level::Request, obj)
}

/// A stable pseudo-UID for objects that exist before the run (leases), from their name.
fn fxhash(s: &str) -> u128 {
    let mut h: u128 = 0xcbf2_9ce4_8422_2325_6a09_e667_f3bc_c908;
    for b in s.bytes() {
        h = (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h
}

fn pick_pod(ctx: &mut Ctx<'_>) -> (usize, Pod) {
    let w = ctx.rng.below(ctx.c.workloads.len());
    let wl = &ctx.c.workloads[w];
    let pod = wl.pods[ctx.rng.below(wl.pods.len())].clone();
    (w, pod)
}

fn pss_level(ns: &str) -> &'static str {
    match ns {
        "kube-system" | "monitoring" | "ingress-nginx" => "privileged:latest",
        "prod-payments" | "production" => "restricted:latest",
        _ => "baseline:latest",
    }
}

pub(crate) fn next(ctx: &mut Ctx<'_>) -> Req {
    let mut kind = weighted(ctx.rng, MIX, |(_, w)| *w).0;
    // At night people, CI and the pods they make (and their discovery, 403s and 404s) are rare: drawn again
    // 29 times in 30.
    while ctx.night
        && matches!(
            kind,
            Kind::Human
                | Kind::Ci
                | Kind::PodCreate
                | Kind::Discovery
                | Kind::Forbidden
                | Kind::NotFound
        )
        && ctx.rng.below(30) > 0
    {
        kind = weighted(ctx.rng, MIX, |(_, w)| *w).0;
    }
    match kind {
        Kind::KcmWatchPods => {
            let kcm = ctx.c.kcm.clone();
            watch(ctx, &kcm, PODS.all(""), "")
        }
        Kind::KcmWatch => {
            let kcm = ctx.c.kcm.clone();
            let res = *ctx.rng.pick(KCM_WATCHED);
            watch(ctx, &kcm, res.all(""), "")
        }
        Kind::KcmList => {
            let kcm = ctx.c.kcm.clone();
            let res = *ctx.rng.pick(KCM_WATCHED);
            list(ctx, &kcm, res.all(""))
        }
        Kind::KcmLease => {
            let a = ctx.c.kcm_election.clone();
            let holder = format!(
                "ip-10-0-0-10.eu-west-1.compute.internal_{}",
                "4f1c6a77-1b6e-4a43-9d5e-0c3b7c2f5e11"
            );
            lease(
                ctx,
                &a,
                "kube-system",
                "kube-controller-manager",
                &holder,
                15,
                0.5,
            )
        }
        Kind::ControllerStatus => {
            let a = ctx.c.controller("deployment-controller").clone();
            let w = ctx.rng.below(ctx.c.workloads.len());
            let wl = &ctx.c.workloads[w];
            if wl.kind != WorkloadKind::Deployment {
                let a = ctx.c.controller("daemon-set-controller").clone();
                let oref = DAEMONSETS.at(wl.ns, wl.app, "status");
                return Req::resource(ctx.rng, &a, "update", oref, "");
            }
            let obj = objects::deployment(wl, wl.pods.len());
            let oref = DEPLOYMENTS.at(wl.ns, wl.app, "status");
            ctx.c.bump();
            Req::resource(ctx.rng, &a, "update", oref, "").with_object(Level::Request, obj)
        }
        Kind::ControllerEndpointSlices => {
            let a = ctx.c.controller("endpointslice-controller").clone();
            let w = ctx.rng.below(ctx.c.workloads.len());
            let wl = &ctx.c.workloads[w];
            let name = format!("{}-{}", wl.app, &wl.hash[..5]);
            let mut obj = Vec::with_capacity(1024);
            crate::json::Jw::object(&mut obj, |j| {
                j.str("kind", "EndpointSlice");
                j.str("apiVersion", "discovery.k8s.io/v1");
                j.obj("metadata", |j| {
                    j.str("name", &name);
                    j.str("namespace", wl.ns);
                    j.obj("labels", |j| {
                        j.str(
                            "endpointslice.kubernetes.io/managed-by",
                            "endpointslice-controller.k8s.io",
                        );
                        j.str("kubernetes.io/service-name", wl.app);
                    });
                });
                j.str("addressType", "IPv4");
                j.arr("endpoints", |j| {
                    for p in wl.pods.iter().take(8) {
                        j.el_obj(|j| {
                            j.strs("addresses", &[&p.ip]);
                            j.obj("conditions", |j| {
                                j.bool("ready", true);
                                j.bool("serving", true);
                                j.bool("terminating", false);
                            });
                            j.obj("targetRef", |j| {
                                j.str("kind", "Pod");
                                j.str("namespace", wl.ns);
                                j.str("name", &p.name);
                                j.str("uid", &p.uid);
                            });
                        });
                    }
                });
                j.arr("ports", |j| {
                    j.el_obj(|j| {
                        j.str("name", "http");
                        j.num("port", wl.port);
                        j.str("protocol", "TCP");
                    })
                });
            });
            let oref = ENDPOINTSLICES.at(wl.ns, &name, "");
            ctx.c.bump();
            Req::resource(ctx.rng, &a, "update", oref, "").with_object(Level::Request, obj)
        }
        Kind::ControllerEvents => {
            let a = ctx
                .c
                .controller(if ctx.rng.chance(0.5) {
                    "replicaset-controller"
                } else {
                    "deployment-controller"
                })
                .clone();
            let (w, _) = pick_pod(ctx);
            let ns = ctx.c.workloads[w].ns;
            Req::resource(ctx.rng, &a, "create", EVENTS_V1.all(ns), "").with_metadata_level()
        }
        Kind::PodCreate => pod_create(ctx),
        Kind::KubeletLeaseUpdate | Kind::KubeletLeaseGet => {
            let n = ctx.rng.below(ctx.c.nodes.len());
            let node = &ctx.c.nodes[n];
            let a = node.kubelet.clone();
            let oref = LEASES.at("kube-node-lease", &node.name, "");
            if matches!(kind, Kind::KubeletLeaseGet) {
                return get(ctx, &a, oref, "timeout=10s");
            }
            let (name, uid) = (node.name.clone(), node.lease_uid.clone());
            let rv = ctx.c.bump();
            let obj = objects::lease(&name, "kube-node-lease", &uid, rv, &name, 40, &ts(ctx.now));
            Req::resource(ctx.rng, &a, "update", oref, "timeout=10s")
                .with_object(Level::Request, obj)
        }
        Kind::KubeletNodeStatus => {
            let n = ctx.rng.below(ctx.c.nodes.len());
            let node = &ctx.c.nodes[n];
            let a = node.kubelet.clone();
            let oref = NODES.at("", &node.name, "status");
            ctx.c.bump();
            let obj = objects::node_status_patch(&ts_secs(ctx.now));
            Req::resource(ctx.rng, &a, "patch", oref, "timeout=10s")
                .with_object(Level::Request, obj)
        }
        Kind::KubeletGetNode | Kind::KubeletCsiNode => {
            let n = ctx.rng.below(ctx.c.nodes.len());
            let node = &ctx.c.nodes[n];
            let a = node.kubelet.clone();
            let res = if matches!(kind, Kind::KubeletCsiNode) {
                CSINODES
            } else {
                NODES
            };
            let oref = res.at("", &node.name, "");
            get(ctx, &a, oref, "resourceVersion=0&timeout=10s")
        }
        Kind::KubeletWatchObject => {
            let (w, pod) = pick_pod(ctx);
            let wl = &ctx.c.workloads[w];
            let a = ctx.c.nodes[pod.node].kubelet.clone();
            let ns = wl.ns;
            let k = ctx.rng.below(wl.secrets.len() + wl.configmaps.len() + 1);
            let (res, name) = if k < wl.secrets.len() {
                (SECRETS, wl.secrets[k].clone())
            } else if k < wl.secrets.len() + wl.configmaps.len() {
                (CONFIGMAPS, wl.configmaps[k - wl.secrets.len()].clone())
            } else {
                (CONFIGMAPS, "kube-root-ca.crt".to_string())
            };
            let sel = format!("fieldSelector=metadata.name%3D{name}");
            watch(ctx, &a, res.all(ns), &sel)
        }
        Kind::KubeletWatchPods => {
            let n = ctx.rng.below(ctx.c.nodes.len());
            let a = ctx.c.nodes[n].kubelet.clone();
            let sel = format!("fieldSelector=spec.nodeName%3D{}", ctx.c.nodes[n].name);
            watch(ctx, &a, PODS.all(""), &sel)
        }
        Kind::KubeletGetSecret | Kind::KubeletGetConfigMap => {
            let (w, pod) = pick_pod(ctx);
            let wl = &ctx.c.workloads[w];
            let a = ctx.c.nodes[pod.node].kubelet.clone();
            let secret = matches!(kind, Kind::KubeletGetSecret) && !wl.secrets.is_empty();
            let oref = if secret {
                SECRETS.at(wl.ns, &wl.secrets[ctx.rng.below(wl.secrets.len())], "")
            } else {
                let name = wl
                    .configmaps
                    .first()
                    .map_or("kube-root-ca.crt", |s| s.as_str());
                CONFIGMAPS.at(wl.ns, name, "")
            };
            get(ctx, &a, oref, "")
        }
        Kind::KubeletGetPod => {
            let (w, pod) = pick_pod(ctx);
            let a = ctx.c.nodes[pod.node].kubelet.clone();
            let oref = PODS.at(ctx.c.workloads[w].ns, &pod.name, "");
            get(ctx, &a, oref, "")
        }
        Kind::KubeletPodStatus => {
            let (w, pod) = pick_pod(ctx);
            kubelet_pod_status(ctx, ctx.c.workloads[w].ns, &pod)
        }
        Kind::KubeletEvent => {
            let (w, pod) = pick_pod(ctx);
            let a = ctx.c.nodes[pod.node].kubelet.clone();
            let ns = ctx.c.workloads[w].ns;
            Req::resource(ctx.rng, &a, "create", EVENTS.all(ns), "").with_metadata_level()
        }
        Kind::KubeletToken => {
            let (w, pod) = pick_pod(ctx);
            let wl = &ctx.c.workloads[w];
            let a = ctx.c.nodes[pod.node].kubelet.clone();
            let oref = SERVICEACCOUNTS.at(wl.ns, wl.sa, "token");
            let mut r = Req::resource(ctx.rng, &a, "create", oref, "");
            r.code = 201;
            r
        }
        Kind::SchedulerWatch => {
            let a = ctx.c.scheduler.clone();
            if ctx.rng.chance(0.35) {
                watch(
                    ctx,
                    &a,
                    PODS.all(""),
                    "fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed",
                )
            } else {
                let res = *ctx.rng.pick(SCHEDULER_WATCHED);
                watch(ctx, &a, res.all(""), "")
            }
        }
        Kind::SchedulerLease => {
            let a = ctx.c.scheduler_election.clone();
            let holder =
                "ip-10-0-0-11.eu-west-1.compute.internal_0b7d0f8e-3f3e-4d0e-a0a5-8c1f4b1e9d27";
            lease(ctx, &a, "kube-system", "kube-scheduler", holder, 15, 0.5)
        }
        Kind::ApiserverLease => {
            let i = ctx.rng.below(ctx.c.apiservers.len());
            let (id, a) = ctx.c.apiservers[i].clone();
            lease(ctx, &a, "kube-system", &id, &id, 3600, 0.1)
        }
        Kind::KubeProxy => {
            let n = ctx.rng.below(ctx.c.kube_proxy.len());
            let a = ctx.c.kube_proxy[n].clone();
            let sel = "labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name";
            match ctx.rng.below(3) {
                0 => watch(ctx, &a, ENDPOINTSLICES.all(""), sel),
                1 => watch(ctx, &a, SERVICES.all(""), sel),
                _ => {
                    let node = ctx
                        .c
                        .workloads
                        .iter()
                        .find(|w| w.app == "kube-proxy")
                        .map_or(0, |w| w.pods[n].node);
                    let sel = format!("fieldSelector=metadata.name%3D{}", ctx.c.nodes[node].name);
                    watch(ctx, &a, NODES.all(""), &sel)
                }
            }
        }
        Kind::Operator => operator(ctx),
        Kind::Ci => ci(ctx),
        Kind::Human => human(ctx),
        Kind::Health => {
            let a = ctx.rng.pick(&ctx.c.probes).clone();
            let uri = if a.ua.starts_with("ELB") {
                "/readyz"
            } else {
                *ctx.rng
                    .pick(&["/livez", "/readyz", "/livez", "/readyz", "/healthz"])
            };
            let mut r = Req::non_resource(ctx.rng, &a, "get", uri);
            r.latency_us = 200 + ctx.rng.exp(600.0) as i64;
            r
        }
        Kind::Discovery => {
            let who = ctx.rng.below(10);
            let mut a = if who < 6 {
                ctx.rng.pick(&ctx.c.humans).clone()
            } else if who < 9 {
                ctx.rng.pick(&ctx.c.operators).actor.clone()
            } else {
                ctx.c.kcm.clone()
            };
            a.reason = "RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\"".into();
            let uri = *ctx.rng.pick(&[
                "/api?timeout=32s",
                "/apis?timeout=32s",
                "/apis?timeout=32s",
                "/version",
                "/openapi/v2?timeout=32s",
                "/apis/metrics.k8s.io/v1beta1?timeout=32s",
            ]);
            Req::non_resource(ctx.rng, &a, "get", uri)
        }
        Kind::Forbidden => {
            let req = match ctx.rng.below(4) {
                0 => {
                    let a = ctx.c.operator("kube-state-metrics").actor.clone();
                    list(ctx, &a, VPAS.all(""))
                }
                1 => {
                    let a = ctx.c.humans[1].clone();
                    list(ctx, &a, SECRETS.all("production"))
                }
                2 => {
                    let a = ctx.c.humans[0].clone();
                    list(ctx, &a, NODES.all(""))
                }
                _ => {
                    let a = ctx.c.operator("argocd-server").actor.clone();
                    get(
                        ctx,
                        &a,
                        CONFIGMAPS.at("kube-system", "kubeadm-config", ""),
                        "",
                    )
                }
            };
            req.forbidden()
        }
        Kind::NotFound => {
            let req = match ctx.rng.below(4) {
                0 => {
                    let (w, pod) = pick_pod(ctx);
                    let wl = &ctx.c.workloads[w];
                    let a = ctx.c.nodes[pod.node].kubelet.clone();
                    let name = format!("{}-overrides", wl.app);
                    get(ctx, &a, CONFIGMAPS.at(wl.ns, &name, ""), "")
                }
                1 => {
                    let a = ctx.rng.pick(&ctx.c.humans).clone();
                    let name = format!("web-frontend-{}-{}", ctx.rng.suffix(10), ctx.rng.suffix(5));
                    get(ctx, &a, PODS.at("production", &name, ""), "")
                }
                2 => {
                    let a = ctx.c.operator("cert-manager").actor.clone();
                    let name = format!("shop-tls-{}", ctx.rng.below(9) + 1);
                    get(ctx, &a, CERTIFICATEREQUESTS.at("production", &name, ""), "")
                }
                _ => {
                    let a = ctx.c.operator("argocd-controller").actor.clone();
                    get(ctx, &a, DEPLOYMENTS.at("production", "legacy-api", ""), "")
                }
            };
            req.not_found()
        }
    }
}

/// A ReplicaSet (or DaemonSet) controller creates a pod; the scheduler binds it and its kubelet reports it
/// running shortly after.
fn pod_create(ctx: &mut Ctx<'_>) -> Req {
    let w = ctx.rng.below(ctx.c.workloads.len());
    let wl = &ctx.c.workloads[w];
    let (controller, ds) = match wl.kind {
        WorkloadKind::Deployment => ("replicaset-controller", false),
        WorkloadKind::DaemonSet => ("daemon-set-controller", true),
    };
    let i = ctx.rng.below(wl.pods.len());
    let node = if ds {
        wl.pods[i].node
    } else {
        ctx.rng.below(ctx.c.nodes.len())
    };
    let pod = new_pod(ctx.rng, wl, node, &ctx.c.nodes[node]);
    let node_name = ctx.c.nodes[node].name.clone();
    let obj = objects::controller_pod(wl, ds.then_some(node_name.as_str()));
    let ns = wl.ns;
    let a = ctx.c.controller(controller).clone();
    let req = Req::resource(ctx.rng, &a, "create", PODS.all(ns), "")
        .with_object(Level::Request, obj)
        .annotate("pod-security.kubernetes.io/enforce-policy", pss_level(ns));
    ctx.c.bump();
    if !ds {
        let sched = ctx.c.scheduler.clone();
        let body = objects::binding(&pod.name, ns, &pod.uid, &node_name);
        let mut bind = Req::resource(
            ctx.rng,
            &sched,
            "create",
            PODS.at(ns, &pod.name, "binding"),
            "",
        )
        .with_object(Level::Request, body);
        bind.code = 201;
        let delay = 2_000 + ctx.rng.exp(20_000.0) as i64;
        ctx.follow.push((delay, bind));
    }
    let status = kubelet_pod_status(ctx, ns, &pod);
    let delay = 1_000_000 + ctx.rng.exp(2_000_000.0) as i64;
    ctx.follow.push((delay, status));
    ctx.c.workloads[w].pods[i] = pod;
    req
}

fn kubelet_pod_status(ctx: &mut Ctx<'_>, ns: &str, pod: &Pod) -> Req {
    let a = ctx.c.nodes[pod.node].kubelet.clone();
    let obj = objects::pod_status_patch(&pod.uid, &pod.ip, &ts_secs(ctx.now));
    ctx.c.bump();
    Req::resource(ctx.rng, &a, "patch", PODS.at(ns, &pod.name, "status"), "")
        .with_object(Level::Request, obj)
}

fn operator(ctx: &mut Ctx<'_>) -> Req {
    let &(key, _, op) = weighted(ctx.rng, OPS, |(_, w, _)| *w);
    let o = ctx.c.operator(key);
    let (a, own) = (o.actor.clone(), o.ns);
    let scope = |s: Scope| match s {
        Scope::All => "",
        Scope::Own => own,
    };
    match op {
        Op::Watch(res, s) => watch(ctx, &a, res.all(scope(s)), ""),
        Op::List(res, s) => list(ctx, &a, res.all(scope(s))),
        Op::Get(res, name) => get(ctx, &a, res.at(own, name, ""), ""),
        Op::Patch(res, name) => {
            ctx.c.bump();
            let body = format!(
                r#"{{"status":{{"reconciledAt":"{}","sync":{{"status":"Synced"}},"health":{{"status":"Healthy"}}}}}}"#,
                ts_secs(ctx.now)
            );
            Req::resource(ctx.rng, &a, "patch", res.at(own, name, ""), "")
                .with_object(Level::Request, body.into_bytes())
        }
        Op::Lease(ns, name) => {
            let holder = format!("{}-{}", key, &a.user.uid.clone().unwrap_or_default()[..8]);
            lease(ctx, &a, ns, name, &holder, 60, 0.4)
        }
        Op::Create(res) => {
            let body = if res == TOKENREVIEWS {
                format!(
                    r#"{{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{{"creationTimestamp":null}},"spec":{{"token":"eyJhbGciOiJSUzI1NiIsImtpZCI6IjNkYzQifQ.{}.{}"}},"status":{{"user":{{}}}}}}"#,
                    ctx.rng.hex(96),
                    ctx.rng.hex(86)
                )
            } else {
                let ns = *ctx.rng.pick(&["production", "prod-payments", "staging"]);
                format!(
                    r#"{{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","metadata":{{"creationTimestamp":null}},"spec":{{"resourceAttributes":{{"namespace":"{ns}","verb":"list","group":"metrics.k8s.io","version":"v1beta1","resource":"pods"}},"user":"system:serviceaccount:kube-system:horizontal-pod-autoscaler","groups":["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]}},"status":{{"allowed":false}}}}"#
                )
            };
            Req::resource(ctx.rng, &a, "create", res.all(""), "timeout=10s")
                .with_object(Level::Request, body.into_bytes())
        }
    }
}

/// CI deploying: a GitLab runner creating build pods, a deploy job patching Deployments.
fn ci(ctx: &mut Ctx<'_>) -> Req {
    let deployer = ctx.c.ci_deployer.clone();
    let runner = ctx.c.ci_runner.clone();
    let targets: Vec<usize> = ctx
        .c
        .workloads
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.kind == WorkloadKind::Deployment
                && matches!(w.ns, "production" | "prod-payments" | "staging")
        })
        .map(|(i, _)| i)
        .collect();
    let w = *ctx.rng.pick(&targets);
    let (ns, app) = (ctx.c.workloads[w].ns, ctx.c.workloads[w].app);
    match ctx.rng.below(20) {
        0..=5 => get(ctx, &deployer, DEPLOYMENTS.at(ns, app, ""), ""),
        6..=9 => {
            let wl = &ctx.c.workloads[w];
            let base = wl
                .image
                .rsplit_once(':')
                .map_or(wl.image.as_str(), |(b, _)| b);
            let image = format!("{base}:{}", ctx.rng.hex(12));
            let body = objects::image_patch(wl, &image, &ts_secs(ctx.now));
            ctx.c.bump();
            Req::resource(
                ctx.rng,
                &deployer,
                "patch",
                DEPLOYMENTS.at(ns, app, ""),
                "fieldManager=kubectl-set",
            )
            .with_object(Level::Request, body)
        }
        10..=11 => {
            let sel = format!("fieldSelector=metadata.name%3D{app}");
            watch(ctx, &deployer, DEPLOYMENTS.all(ns), &sel)
        }
        12 => {
            let wl = &ctx.c.workloads[w];
            let body = objects::deployment(wl, wl.pods.len());
            ctx.c.bump();
            let r = Req::resource(
                ctx.rng,
                &deployer,
                "create",
                DEPLOYMENTS.at(ns, app, ""),
                "fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
            )
            .with_object(Level::Request, body);
            if ctx.rng.chance(0.7) {
                r.already_exists()
            } else {
                r
            }
        }
        13..=15 => {
            ctx.c.ci_job += 1 + ctx.rng.below(40) as u64;
            let job = ctx.c.ci_job;
            let name = format!(
                "runner-{}-project-42-concurrent-{}-{}",
                ctx.rng.suffix(8),
                ctx.rng.below(4),
                ctx.rng.suffix(5)
            );
            let node = ctx.c.ci_pod.node;
            let pod = Pod {
                name: name.clone(),
                uid: ctx.rng.uuid(),
                node,
                ip: crate::cluster::pod_ip(ctx.rng, node),
            };
            let body = objects::ci_build_pod(ctx.rng, &name, job, 42);
            let req = Req::resource(ctx.rng, &runner, "create", PODS.at("ci", &name, ""), "")
                .with_object(Level::Request, body)
                .annotate("pod-security.kubernetes.io/enforce-policy", pss_level("ci"));
            ctx.c.bump();
            let sched = ctx.c.scheduler.clone();
            let node_name = ctx.c.nodes[node].name.clone();
            let bind_body = objects::binding(&name, "ci", &pod.uid, &node_name);
            let mut bind = Req::resource(
                ctx.rng,
                &sched,
                "create",
                PODS.at("ci", &name, "binding"),
                "",
            )
            .with_object(Level::Request, bind_body);
            bind.code = 201;
            let delay = 2_000 + ctx.rng.exp(20_000.0) as i64;
            ctx.follow.push((delay, bind));
            ctx.c.ci_pod = pod;
            req
        }
        16 | 17 => {
            let name = ctx.c.ci_pod.name.clone();
            get(ctx, &runner, PODS.at("ci", &name, ""), "")
        }
        18 => {
            Req::resource(ctx.rng, &runner, "create", SECRETS.all("ci"), "").with_metadata_level()
        }
        _ => {
            let name = ctx.c.ci_pod.name.clone();
            let mut r = Req::resource(
                ctx.rng,
                &runner,
                "create",
                PODS.at("ci", &name, "attach"),
                "container=build&stdin=true&stdout=true&stderr=true",
            );
            r.code = 101;
            r.latency_us += ctx.rng.exp(90_000_000.0) as i64;
            r
        }
    }
}

/// People at a terminal: kubectl and k9s reads, logs, the odd exec into staging.
fn human(ctx: &mut Ctx<'_>) -> Req {
    let h = ctx.rng.below(ctx.c.humans.len());
    let mut a = ctx.c.humans[h].clone();
    let sre = h >= 3;
    let ns = *ctx.rng.pick(&[
        "staging",
        "staging",
        "production",
        "prod-payments",
        "default",
        "production",
    ]);
    let in_ns: Vec<usize> = ctx
        .c
        .workloads
        .iter()
        .enumerate()
        .filter(|(_, w)| w.ns == ns)
        .map(|(i, _)| i)
        .collect();
    let w = *ctx.rng.pick(&in_ns);
    let wl = &ctx.c.workloads[w];
    let pod = wl.pods[ctx.rng.below(wl.pods.len())].clone();
    let app = wl.app;
    let edit_reason = |a: &mut Actor, ns: &str| {
        if !sre {
            a.reason = format!("RBAC: allowed by RoleBinding \"devs-edit/{ns}\" of ClusterRole \"edit\" to Group \"oidc:devs\"").into();
        }
    };
    match ctx.rng.below(100) {
        0..=24 => Req::resource(ctx.rng, &a, "list", PODS.all(ns), "limit=500"),
        25..=39 => get(ctx, &a, PODS.at(ns, &pod.name, ""), ""),
        40..=47 => Req::resource(ctx.rng, &a, "list", DEPLOYMENTS.all(ns), "limit=500"),
        48..=52 => get(ctx, &a, DEPLOYMENTS.at(ns, app, ""), ""),
        53..=64 => {
            let mut r = get(
                ctx,
                &a,
                PODS.at(ns, &pod.name, "log"),
                "container=app&follow=true&tailLines=100",
            );
            r.latency_us += ctx.rng.exp(90_000_000.0) as i64;
            r
        }
        65..=70 => {
            let q = format!(
                "fieldSelector=involvedObject.name%3D{},involvedObject.namespace%3D{ns},involvedObject.uid%3D{}",
                pod.name, pod.uid
            );
            Req::resource(ctx.rng, &a, "list", EVENTS.all(ns), &q)
        }
        71..=75 => {
            // Exec happens in staging and default only; in production it is the attack's business.
            let ns = if matches!(ns, "staging" | "default") {
                ns
            } else {
                "staging"
            };
            let target = ctx
                .c
                .workloads
                .iter()
                .find(|w| w.ns == ns)
                .map(|w| w.pods[0].name.clone())
                .unwrap_or_default();
            edit_reason(&mut a, ns);
            let verb = if ctx.rng.chance(0.6) { "create" } else { "get" };
            let mut r = Req::resource(
                ctx.rng,
                &a,
                verb,
                PODS.at(ns, &target, "exec"),
                "command=%2Fbin%2Fsh&container=app&stdin=true&stdout=true&tty=true",
            );
            r.code = 101;
            r.latency_us += ctx.rng.exp(120_000_000.0) as i64;
            r
        }
        76..=77 => {
            let ns = "staging";
            let target = ctx
                .c
                .workloads
                .iter()
                .find(|w| w.ns == ns)
                .map(|w| w.pods[0].name.clone())
                .unwrap_or_default();
            edit_reason(&mut a, ns);
            let mut r = Req::resource(
                ctx.rng,
                &a,
                "create",
                PODS.at(ns, &target, "portforward"),
                "",
            );
            r.code = 101;
            r.latency_us += ctx.rng.exp(300_000_000.0) as i64;
            r
        }
        78..=80 => {
            let body = format!(
                r#"{{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","metadata":{{"creationTimestamp":null}},"spec":{{"resourceAttributes":{{"namespace":"{ns}","verb":"create","group":"apps","resource":"deployments"}}}},"status":{{"allowed":false}}}}"#
            );
            a.reason = "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\"".into();
            let mut r = Req::resource(ctx.rng, &a, "create", SELFSUBJECTACCESSREVIEWS.all(""), "")
                .with_object(Level::Request, body.into_bytes());
            r.code = 201;
            r
        }
        81..=84 => {
            let r = Req::resource(ctx.rng, &a, "list", NODES.all(""), "limit=500");
            if sre { r } else { r.forbidden() }
        }
        85..=86 if sre => {
            ctx.c.bump();
            Req::resource(ctx.rng, &a, "delete", PODS.at(ns, &pod.name, ""), "")
        }
        85..=89 => Req::resource(ctx.rng, &a, "list", NAMESPACES.all(""), "limit=500"),
        _ => {
            let mut a = a;
            a.ua = KUBECTL_UA.into();
            Req::resource(ctx.rng, &a, "list", SERVICES.all(ns), "limit=500")
        }
    }
}
