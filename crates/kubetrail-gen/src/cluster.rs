//! The simulated cluster: nodes, control plane, workloads and their pods, and the identities that talk to
//! kube-apiserver. Built once from the seed; pods churn as the traffic creates them.

use crate::event::{Actor, User};
use crate::rng::Rand;

pub(crate) const K8S_VERSION: &str = "v1.30.2";
const K8S_COMMIT: &str = "3968350";
pub(crate) const KUBECTL_UA: &str = "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225";

/// Nodes are numbered into 10.0.x.y, which holds this many.
pub(crate) const MAX_NODES: u32 = 40_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkloadKind {
    Deployment,
    DaemonSet,
}

#[derive(Debug, Clone)]
pub(crate) struct Pod {
    pub name: String,
    pub uid: String,
    pub node: usize,
    pub ip: String,
}

#[derive(Debug)]
pub(crate) struct Workload {
    pub ns: &'static str,
    pub app: &'static str,
    pub kind: WorkloadKind,
    pub image: String,
    pub sa: &'static str,
    pub hash: String,
    pub owner_uid: String,
    pub config_checksum: String,
    pub secrets: Vec<String>,
    pub configmaps: Vec<String>,
    pub port: i64,
    pub env: usize,
    pub sidecar: bool,
    pub init: bool,
    pub template_seed: u64,
    pub pods: Vec<Pod>,
}

impl Workload {
    pub(crate) fn version(&self) -> &str {
        self.image.rsplit(':').next().unwrap_or("latest")
    }

    pub(crate) fn generate_name(&self) -> String {
        match self.kind {
            WorkloadKind::Deployment => format!("{}-{}-", self.app, self.hash),
            WorkloadKind::DaemonSet => format!("{}-", self.app),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub name: String,
    pub ip: String,
    pub kubelet: Actor,
    pub lease_uid: String,
}

/// A service account's identity as a pod presents it (bound token with the pod's name in `extra`).
#[derive(Debug)]
pub(crate) struct Operator {
    pub key: &'static str,
    pub ns: &'static str,
    pub actor: Actor,
}

#[derive(Debug)]
pub(crate) struct Cluster {
    pub nodes: Vec<Node>,
    pub kcm: Actor,
    pub kcm_election: Actor,
    pub scheduler: Actor,
    pub scheduler_election: Actor,
    pub controllers: Vec<(&'static str, Actor)>,
    pub apiservers: Vec<(String, Actor)>,
    pub probes: Vec<Actor>,
    pub anonymous_reason: String,
    pub workloads: Vec<Workload>,
    pub operators: Vec<Operator>,
    pub kube_proxy: Vec<Actor>,
    pub humans: Vec<Actor>,
    pub ci_deployer: Actor,
    pub ci_runner: Actor,
    /// The build pod the runner created last (the one it polls and attaches to).
    pub ci_pod: Pod,
    pub rv: u64,
    pub ci_job: u64,
    /// `metadata.generation` of the prod payments API's Deployment as the workload-tamper scenario last left
    /// it (each of its runs goes on from there).
    pub payments_generation: i64,
    /// Until when (µs since the epoch) a run of that scenario is still under way: the next waits for it, so
    /// that the Deployment's history stays one story (at high rates scenarios come back within minutes).
    pub payments_busy_until: i64,
    /// Until when (µs since the epoch) a run of the access-grant scenario is under way (one grant at a time).
    pub access_grant_busy_until: i64,
}

/// (namespace, app, image, replicas per 50 nodes, service account, secrets, configmaps, env vars, sidecar, init)
type WorkloadSpec = (
    &'static str,
    &'static str,
    &'static str,
    u32,
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    usize,
    bool,
    bool,
);

const WORKLOADS: &[WorkloadSpec] = &[
    (
        "prod-payments",
        "payments-api",
        "registry.example.com/payments/api:v1.42.3",
        6,
        "payments-api",
        &["payments-api-db", "payments-api-tls", "stripe-api-key"],
        &["payments-api-config"],
        22,
        true,
        true,
    ),
    (
        "prod-payments",
        "ledger-worker",
        "registry.example.com/payments/ledger:v3.7.0",
        4,
        "ledger",
        &["ledger-db"],
        &["ledger-config"],
        18,
        true,
        true,
    ),
    (
        "prod-payments",
        "fraud-scorer",
        "registry.example.com/payments/fraud-scorer:v0.19.2",
        3,
        "fraud-scorer",
        &["fraud-model-credentials"],
        &["fraud-scorer-config"],
        14,
        false,
        false,
    ),
    (
        "production",
        "web-frontend",
        "registry.example.com/shop/web-frontend:v2024.12.3",
        10,
        "web-frontend",
        &["web-frontend-session"],
        &["web-frontend-config"],
        12,
        true,
        false,
    ),
    (
        "production",
        "checkout",
        "registry.example.com/shop/checkout:v5.2.1",
        5,
        "checkout",
        &["checkout-db"],
        &["checkout-config"],
        20,
        true,
        true,
    ),
    (
        "production",
        "cart",
        "registry.example.com/shop/cart:v1.18.0",
        4,
        "cart",
        &["cart-redis"],
        &["cart-config"],
        10,
        false,
        false,
    ),
    (
        "production",
        "search",
        "registry.example.com/shop/search:v4.0.6",
        4,
        "search",
        &["search-opensearch"],
        &["search-config"],
        16,
        true,
        false,
    ),
    (
        "production",
        "recommendations",
        "registry.example.com/shop/recommendations:v0.44.0",
        3,
        "recommendations",
        &["recs-db"],
        &["recs-config"],
        24,
        false,
        true,
    ),
    (
        "staging",
        "web-frontend",
        "registry.example.com/shop/web-frontend:v2025.01.0-rc.2",
        2,
        "web-frontend",
        &["web-frontend-session"],
        &["web-frontend-config"],
        12,
        true,
        false,
    ),
    (
        "staging",
        "checkout",
        "registry.example.com/shop/checkout:v5.3.0-rc.1",
        1,
        "checkout",
        &["checkout-db"],
        &["checkout-config"],
        20,
        false,
        true,
    ),
    (
        "staging",
        "payments-api",
        "registry.example.com/payments/api:v1.43.0-rc.4",
        1,
        "payments-api",
        &["payments-api-db"],
        &["payments-api-config"],
        22,
        false,
        true,
    ),
    (
        "default",
        "nginx-test",
        "nginx:1.25.4",
        1,
        "default",
        &[],
        &["nginx-test-conf"],
        6,
        false,
        false,
    ),
    (
        "kube-system",
        "coredns",
        "registry.k8s.io/coredns/coredns:v1.11.1",
        2,
        "coredns",
        &[],
        &["coredns"],
        4,
        false,
        false,
    ),
    (
        "kube-system",
        "metrics-server",
        "registry.k8s.io/metrics-server/metrics-server:v0.7.1",
        1,
        "metrics-server",
        &[],
        &["metrics-server-config"],
        6,
        false,
        false,
    ),
    (
        "monitoring",
        "prometheus",
        "quay.io/prometheus/prometheus:v2.51.2",
        2,
        "prometheus",
        &["prometheus-web-tls"],
        &["prometheus-config"],
        8,
        true,
        false,
    ),
    (
        "monitoring",
        "grafana",
        "docker.io/grafana/grafana:10.4.2",
        1,
        "grafana",
        &["grafana-admin"],
        &["grafana-ini"],
        14,
        false,
        true,
    ),
    (
        "monitoring",
        "kube-state-metrics",
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.12.0",
        1,
        "kube-state-metrics",
        &[],
        &["ksm-config"],
        6,
        false,
        false,
    ),
    (
        "cert-manager",
        "cert-manager",
        "quay.io/jetstack/cert-manager-controller:v1.14.4",
        1,
        "cert-manager",
        &[],
        &["cert-manager-config"],
        8,
        false,
        false,
    ),
    (
        "cert-manager",
        "cert-manager-cainjector",
        "quay.io/jetstack/cert-manager-cainjector:v1.14.4",
        1,
        "cert-manager-cainjector",
        &[],
        &["cainjector-config"],
        6,
        false,
        false,
    ),
    (
        "cert-manager",
        "cert-manager-webhook",
        "quay.io/jetstack/cert-manager-webhook:v1.14.4",
        1,
        "cert-manager-webhook",
        &["cert-manager-webhook-ca"],
        &["webhook-config"],
        6,
        false,
        false,
    ),
    (
        "argocd",
        "argocd-server",
        "quay.io/argoproj/argocd:v2.10.7",
        2,
        "argocd-server",
        &["argocd-secret"],
        &["argocd-cm"],
        16,
        false,
        false,
    ),
    (
        "argocd",
        "argocd-repo-server",
        "quay.io/argoproj/argocd:v2.10.7",
        2,
        "argocd-repo-server",
        &["argocd-repo-creds"],
        &["argocd-cmd-params-cm"],
        16,
        false,
        true,
    ),
    (
        "argocd",
        "argocd-application-controller",
        "quay.io/argoproj/argocd:v2.10.7",
        1,
        "argocd-application-controller",
        &["argocd-secret"],
        &["argocd-cm"],
        16,
        false,
        false,
    ),
    (
        "ingress-nginx",
        "ingress-nginx-controller",
        "registry.k8s.io/ingress-nginx/controller:v1.10.1",
        2,
        "ingress-nginx",
        &["ingress-nginx-admission"],
        &["ingress-nginx-controller"],
        10,
        false,
        false,
    ),
    (
        "ci",
        "gitlab-runner",
        "docker.io/gitlab/gitlab-runner:v16.11.0",
        1,
        "gitlab-runner",
        &["gitlab-runner-token"],
        &["gitlab-runner-config"],
        12,
        false,
        false,
    ),
    (
        "kube-system",
        "kube-proxy",
        "registry.k8s.io/kube-proxy:v1.30.2",
        0,
        "kube-proxy",
        &[],
        &["kube-proxy"],
        4,
        false,
        false,
    ),
    (
        "monitoring",
        "node-exporter",
        "quay.io/prometheus/node-exporter:v1.8.0",
        0,
        "node-exporter",
        &[],
        &[],
        4,
        false,
        false,
    ),
];

/// (key, namespace, service account, workload app, user agent)
const OPERATORS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "coredns",
        "kube-system",
        "coredns",
        "coredns",
        "coredns/v1.11.1 (linux/amd64) kubernetes/ae2bbc2",
    ),
    (
        "cert-manager",
        "cert-manager",
        "cert-manager",
        "cert-manager",
        "cert-manager-controller/v1.14.4 (linux/amd64) cert-manager/f8df6bc2a3b1e2a1d0b5f6e8a8d2c5c4e4b2f0a1",
    ),
    (
        "cainjector",
        "cert-manager",
        "cert-manager-cainjector",
        "cert-manager-cainjector",
        "cert-manager-cainjector/v1.14.4 (linux/amd64) cert-manager/f8df6bc2a3b1e2a1d0b5f6e8a8d2c5c4e4b2f0a1",
    ),
    (
        "argocd-controller",
        "argocd",
        "argocd-application-controller",
        "argocd-application-controller",
        "argocd-application-controller/v2.10.7+b060053 (linux/amd64) kubernetes/$Format",
    ),
    (
        "argocd-server",
        "argocd",
        "argocd-server",
        "argocd-server",
        "argocd-server/v2.10.7+b060053 (linux/amd64) kubernetes/$Format",
    ),
    (
        "ingress-nginx",
        "ingress-nginx",
        "ingress-nginx",
        "ingress-nginx-controller",
        "nginx-ingress-controller/v1.10.1 (linux/amd64) ingress-nginx/4fb5aac1dd3669daa3a14d9de3e3cdb371b4c518",
    ),
    (
        "prometheus",
        "monitoring",
        "prometheus",
        "prometheus",
        "Prometheus/2.51.2",
    ),
    (
        "kube-state-metrics",
        "monitoring",
        "kube-state-metrics",
        "kube-state-metrics",
        "kube-state-metrics/v2.12.0 (linux/amd64) kubernetes/$Format",
    ),
    (
        "metrics-server",
        "kube-system",
        "metrics-server",
        "metrics-server",
        "metrics-server/v0.7.1 (linux/amd64) kubernetes/$Format",
    ),
];

/// (username, groups, IP, user agent, RBAC reason for reads)
const HUMANS: &[(&str, &[&str], &str, &str, &str)] = &[
    (
        "alice@example.com",
        &["oidc:devs", "system:authenticated"],
        "203.0.113.14",
        "kubectl/v1.30.1 (darwin/arm64) kubernetes/6911225",
        "RBAC: allowed by ClusterRoleBinding \"oidc-devs-view\" of ClusterRole \"view\" to Group \"oidc:devs\"",
    ),
    (
        "bob@example.com",
        &["oidc:devs", "system:authenticated"],
        "203.0.113.27",
        "kubectl/v1.29.4 (darwin/amd64) kubernetes/55cd2e5",
        "RBAC: allowed by ClusterRoleBinding \"oidc-devs-view\" of ClusterRole \"view\" to Group \"oidc:devs\"",
    ),
    (
        "carol@example.com",
        &["oidc:devs", "oidc:payments", "system:authenticated"],
        "203.0.113.31",
        "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
        "RBAC: allowed by ClusterRoleBinding \"oidc-devs-view\" of ClusterRole \"view\" to Group \"oidc:devs\"",
    ),
    (
        "dave@example.com",
        &["oidc:sre", "oidc:platform-admins", "system:authenticated"],
        "203.0.113.40",
        "k9s/v0.32.4 (darwin/arm64) kubernetes/$Format",
        "RBAC: allowed by ClusterRoleBinding \"platform-admins\" of ClusterRole \"cluster-admin\" to Group \"oidc:platform-admins\"",
    ),
    (
        "erin@example.com",
        &["oidc:sre", "system:authenticated"],
        "203.0.113.52",
        "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
        "RBAC: allowed by ClusterRoleBinding \"sre-edit\" of ClusterRole \"edit\" to Group \"oidc:sre\"",
    ),
];

pub(crate) fn sa_groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_string(),
    ]
}

fn cluster_reason(binding: &str, role: &str, subject: &str) -> String {
    format!(
        "RBAC: allowed by ClusterRoleBinding \"{binding}\" of ClusterRole \"{role}\" to {subject}"
    )
}

impl Cluster {
    pub(crate) fn new(rng: &mut Rand, nodes: u32) -> Cluster {
        let nodes_n = nodes.clamp(1, MAX_NODES) as usize;
        let ua = |c: &str, suffix: &str| {
            format!("{c}/{K8S_VERSION} (linux/amd64) kubernetes/{K8S_COMMIT}{suffix}")
        };
        let nodes: Vec<Node> = (0..nodes_n)
            .map(|i| {
                let ip = format!("10.0.{}.{}", 1 + i / 250, 4 + i % 250);
                let name = format!("ip-{}.eu-west-1.compute.internal", ip.replace('.', "-"));
                let user = User::new(
                    format!("system:node:{name}"),
                    &["system:nodes", "system:authenticated"],
                );
                Node {
                    kubelet: Actor::new(user, &ip, &ua("kubelet", ""), ""),
                    name,
                    ip,
                    lease_uid: rng.uuid(),
                }
            })
            .collect();
        let control_plane: Vec<String> = (0..3).map(|i| format!("10.0.0.{}", 10 + i)).collect();
        let kcm_user = || User::new("system:kube-controller-manager", &["system:authenticated"]);
        let kcm_reason = cluster_reason(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            "User \"system:kube-controller-manager\"",
        );
        let kcm = Actor::new(
            kcm_user(),
            &control_plane[0],
            &ua("kube-controller-manager", "/shared-informers"),
            &kcm_reason,
        );
        let kcm_election = kcm.with_ua(&ua("kube-controller-manager", "/leader-election"));
        let sched_reason = cluster_reason(
            "system:kube-scheduler",
            "system:kube-scheduler",
            "User \"system:kube-scheduler\"",
        );
        let scheduler = Actor::new(
            User::new("system:kube-scheduler", &["system:authenticated"]),
            &control_plane[1],
            &ua("kube-scheduler", "/scheduler"),
            &sched_reason,
        );
        let scheduler_election = scheduler.with_ua(&ua("kube-scheduler", "/leader-election"));
        let controllers = [
            "replicaset-controller",
            "deployment-controller",
            "daemon-set-controller",
            "endpointslice-controller",
            "job-controller",
            "node-controller",
        ]
        .into_iter()
        .map(|name| {
            let mut user = User {
                name: format!("system:serviceaccount:kube-system:{name}"),
                uid: Some(rng.uuid()),
                groups: sa_groups("kube-system"),
                extra: Vec::new(),
            };
            user.extra.push((
                "authentication.kubernetes.io/credential-id",
                format!("JTI={}", rng.uuid()),
            ));
            let reason = cluster_reason(
                &format!("system:controller:{name}"),
                &format!("system:controller:{name}"),
                &format!("ServiceAccount \"{name}/kube-system\""),
            );
            let agent = ua(
                "kube-controller-manager",
                &format!("/system:serviceaccount:kube-system:{name}"),
            );
            (name, Actor::new(user, &control_plane[0], &agent, &reason))
        })
        .collect();
        let apiservers = control_plane
            .iter()
            .map(|_| {
                let id = format!("apiserver-{}", rng.suffix(26));
                let user = User {
                    name: "system:apiserver".to_string(),
                    uid: Some(rng.uuid()),
                    groups: vec!["system:authenticated".into(), "system:masters".into()],
                    extra: Vec::new(),
                };
                (id, Actor::new(user, "::1", &ua("kube-apiserver", ""), ""))
            })
            .collect();
        let anonymous_reason = cluster_reason(
            "system:public-info-viewer",
            "system:public-info-viewer",
            "Group \"system:unauthenticated\"",
        );
        let anon = || User::new("system:anonymous", &["system:unauthenticated"]);
        let mut probes: Vec<Actor> = control_plane
            .iter()
            .map(|ip| Actor::new(anon(), ip, "kube-probe/1.30", &anonymous_reason))
            .collect();
        probes.push(Actor::new(
            anon(),
            "10.0.0.5",
            "ELB-HealthChecker/2.0",
            &anonymous_reason,
        ));

        let mut workloads = Vec::with_capacity(WORKLOADS.len());
        for &(ns, app, image, per50, sa, secrets, cms, env, sidecar, init) in WORKLOADS {
            let kind = if per50 == 0 {
                WorkloadKind::DaemonSet
            } else {
                WorkloadKind::Deployment
            };
            let mut wl = Workload {
                ns,
                app,
                kind,
                image: image.to_string(),
                sa,
                hash: if kind == WorkloadKind::Deployment {
                    rng.suffix(10)
                } else {
                    format!("{}", 5 + rng.below(4)) + &rng.suffix(8)
                },
                owner_uid: rng.uuid(),
                config_checksum: rng.hex(64),
                secrets: secrets.iter().map(|s| s.to_string()).collect(),
                configmaps: cms.iter().map(|s| s.to_string()).collect(),
                port: [8080, 8443, 3000, 9000][rng.below(4)],
                env,
                sidecar,
                init,
                template_seed: rng.u64(),
                pods: Vec::new(),
            };
            let replicas = match kind {
                WorkloadKind::DaemonSet => nodes_n,
                WorkloadKind::Deployment => ((per50 as usize * nodes_n).div_ceil(50)).clamp(1, 300),
            };
            for i in 0..replicas {
                let node = if kind == WorkloadKind::DaemonSet {
                    i
                } else {
                    rng.below(nodes_n)
                };
                let pod = new_pod(rng, &wl, node, &nodes[node]);
                wl.pods.push(pod);
            }
            workloads.push(wl);
        }

        let find = |ws: &[Workload], app: &str| ws.iter().position(|w| w.app == app).unwrap_or(0);
        let operators = OPERATORS
            .iter()
            .map(|&(key, ns, sa, app, agent)| {
                let wl = &workloads[find(&workloads, app)];
                let pod = &wl.pods[0];
                let reason = cluster_reason(sa, sa, &format!("ServiceAccount \"{sa}/{ns}\""));
                let user = sa_user(rng, ns, sa, pod, &nodes[pod.node].name);
                Operator {
                    key,
                    ns,
                    actor: Actor::new(user, &pod.ip, agent, &reason),
                }
            })
            .collect();
        let proxy = &workloads[find(&workloads, "kube-proxy")];
        let kube_proxy = proxy
            .pods
            .iter()
            .map(|pod| {
                let node = &nodes[pod.node];
                let user = sa_user(rng, "kube-system", "kube-proxy", pod, &node.name);
                let reason = cluster_reason(
                    "kubeadm:node-proxier",
                    "system:node-proxier",
                    "ServiceAccount \"kube-proxy/kube-system\"",
                );
                Actor::new(user, &node.ip, &ua("kube-proxy", ""), &reason)
            })
            .collect();
        let humans = HUMANS
            .iter()
            .map(|&(name, groups, ip, agent, reason)| {
                Actor::new(User::new(name, groups), ip, agent, reason)
            })
            .collect();
        let runner_wl = &workloads[find(&workloads, "gitlab-runner")];
        let runner_pod = &runner_wl.pods[0];
        let runner_node = &nodes[runner_pod.node].name;
        let ci_runner = Actor::new(
            sa_user(rng, "ci", "gitlab-runner", runner_pod, runner_node),
            &runner_pod.ip,
            "gitlab-runner 16.11.0 (16-11-stable; go1.21.9; linux/amd64)",
            "RBAC: allowed by RoleBinding \"gitlab-runner/ci\" of Role \"gitlab-runner\" to ServiceAccount \"gitlab-runner/ci\"",
        );
        let build_pod = Pod {
            name: format!(
                "runner-{}-project-42-concurrent-0-{}",
                rng.suffix(8),
                rng.suffix(5)
            ),
            uid: rng.uuid(),
            node: runner_pod.node,
            ip: pod_ip(rng, runner_pod.node),
        };
        let ci_deployer = Actor::new(
            sa_user(rng, "ci", "deployer", &build_pod, runner_node),
            &build_pod.ip,
            KUBECTL_UA,
            &cluster_reason(
                "ci-deployer",
                "ci-deployer",
                "ServiceAccount \"deployer/ci\"",
            ),
        );
        Cluster {
            nodes,
            kcm,
            kcm_election,
            scheduler,
            scheduler_election,
            controllers,
            apiservers,
            probes,
            anonymous_reason,
            workloads,
            operators,
            kube_proxy,
            humans,
            ci_deployer,
            ci_runner,
            ci_pod: build_pod,
            rv: 48_000_000 + rng.below(10_000_000) as u64,
            ci_job: 7_000_000 + rng.below(1_000_000) as u64,
            payments_generation: 41,
            payments_busy_until: i64::MIN,
            access_grant_busy_until: i64::MIN,
        }
    }

    pub(crate) fn controller(&self, name: &str) -> &Actor {
        self.controllers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a)
            .unwrap_or(&self.kcm)
    }

    pub(crate) fn operator(&self, key: &str) -> &Operator {
        self.operators
            .iter()
            .find(|o| o.key == key)
            .unwrap_or(&self.operators[0])
    }

    /// A new resourceVersion, as every write gets one.
    pub(crate) fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// A resourceVersion a little in the past, as informers resume watches from.
    pub(crate) fn recent_rv(&self, rng: &mut Rand) -> u64 {
        self.rv.saturating_sub(rng.below(50_000) as u64)
    }
}

pub(crate) fn pod_ip(rng: &mut Rand, node: usize) -> String {
    format!(
        "10.{}.{}.{}",
        64 + node / 256,
        node % 256,
        2 + rng.below(250)
    )
}

pub(crate) fn new_pod(rng: &mut Rand, wl: &Workload, node: usize, n: &Node) -> Pod {
    let ip = if wl.kind == WorkloadKind::DaemonSet {
        n.ip.clone()
    } else {
        pod_ip(rng, node)
    };
    Pod {
        name: format!("{}{}", wl.generate_name(), rng.suffix(5)),
        uid: rng.uuid(),
        node,
        ip,
    }
}

/// The EKS administrator of the access-grant scenario, one IAM role session (its temporary access key) as
/// EKS authenticates it: the assumed role's ARN as username, the role's id as uid, the mapped group.
pub(crate) fn eks_admin(access_key_id: String) -> Actor {
    use crate::access_grant as ag;
    let user = User {
        name: ag::ADMIN_USER.to_string(),
        uid: Some(format!(
            "aws-iam-authenticator:111122223333:{}",
            ag::ADMIN_ROLE_ID
        )),
        groups: vec![ag::ADMIN_GROUP.into(), "system:authenticated".into()],
        extra: vec![
            ("accessKeyId", access_key_id),
            ("arn", ag::ADMIN_USER.to_string()),
            ("canonicalArn", ag::ADMIN_ROLE_ARN.to_string()),
            (
                "principalId",
                format!("{}:{}", ag::ADMIN_ROLE_ID, ag::ADMIN_SESSION),
            ),
            ("sessionName", ag::ADMIN_SESSION.to_string()),
        ],
    };
    Actor::new(
        user,
        ag::ADMIN_IP,
        "kubectl/v1.30.1 (darwin/arm64) kubernetes/6911225",
        ag::ADMIN_REASON,
    )
}

/// The contractor of the access-grant scenario (an OIDC user), allowed by the scenario's binding.
pub(crate) fn contractor() -> Actor {
    use crate::access_grant as ag;
    Actor::new(
        User::new(
            ag::CONTRACTOR,
            &[ag::CONTRACTOR_GROUP, "system:authenticated"],
        ),
        ag::CONTRACTOR_IP,
        "kubectl/v1.29.2 (windows/amd64) kubernetes/4b8e819",
        ag::CONTRACTOR_REASON,
    )
}

/// A service account as a pod's bound token presents it.
pub(crate) fn sa_user(rng: &mut Rand, ns: &str, sa: &str, pod: &Pod, node: &str) -> User {
    User {
        name: format!("system:serviceaccount:{ns}:{sa}"),
        uid: Some(rng.uuid()),
        groups: sa_groups(ns),
        extra: vec![
            (
                "authentication.kubernetes.io/credential-id",
                format!("JTI={}", rng.uuid()),
            ),
            ("authentication.kubernetes.io/node-name", node.to_string()),
            ("authentication.kubernetes.io/node-uid", rng.uuid()),
            ("authentication.kubernetes.io/pod-name", pod.name.clone()),
            ("authentication.kubernetes.io/pod-uid", pod.uid.clone()),
        ],
    }
}
