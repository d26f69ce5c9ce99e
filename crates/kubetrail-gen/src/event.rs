//! One request as the generator models it, and its rendering as an `audit.k8s.io/v1` Event line per stage.

use std::sync::Arc;

use crate::json::Jw;
use crate::rng::Rand;
use crate::time::write_ts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
        }
    }
}

/// An authenticated identity, as `authentication.k8s.io/v1` UserInfo.
#[derive(Debug)]
pub(crate) struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    /// Sorted by key, as Go writes a map.
    pub extra: Vec<(&'static str, String)>,
}

impl User {
    pub(crate) fn new(name: impl Into<String>, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: Vec::new(),
        }
    }

    fn write(&self, w: &mut Jw<'_>) {
        w.str("username", &self.name);
        if let Some(uid) = &self.uid {
            w.str("uid", uid);
        }
        if !self.groups.is_empty() {
            w.arr("groups", |w| {
                for g in &self.groups {
                    w.el_str(g);
                }
            });
        }
        if !self.extra.is_empty() {
            w.obj("extra", |w| {
                for (k, v) in &self.extra {
                    w.strs(k, &[v]);
                }
            });
        }
    }
}

/// Who sends a request and from where: the identity, its address, its client and the RBAC reason it is
/// usually allowed by.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub user: Arc<User>,
    pub ip: Arc<str>,
    pub ua: Arc<str>,
    pub reason: Arc<str>,
}

impl Actor {
    pub(crate) fn new(user: User, ip: &str, ua: &str, reason: &str) -> Actor {
        Actor {
            user: Arc::new(user),
            ip: ip.into(),
            ua: ua.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn with_ua(&self, ua: &str) -> Actor {
        Actor {
            ua: ua.into(),
            ..self.clone()
        }
    }
}

/// A resource type: group, version, plural name and whether it lives in namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Res {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub namespaced: bool,
}

macro_rules! res {
    ($($name:ident = $group:literal $version:literal $resource:literal $namespaced:literal;)*) => {
        $(pub(crate) const $name: Res = Res {
            group: $group,
            version: $version,
            resource: $resource,
            namespaced: $namespaced,
        };)*
    };
}

res! {
    PODS = "" "v1" "pods" true;
    NODES = "" "v1" "nodes" false;
    SECRETS = "" "v1" "secrets" true;
    CONFIGMAPS = "" "v1" "configmaps" true;
    SERVICES = "" "v1" "services" true;
    ENDPOINTS = "" "v1" "endpoints" true;
    EVENTS = "" "v1" "events" true;
    NAMESPACES = "" "v1" "namespaces" false;
    SERVICEACCOUNTS = "" "v1" "serviceaccounts" true;
    PVCS = "" "v1" "persistentvolumeclaims" true;
    PVS = "" "v1" "persistentvolumes" false;
    RESOURCEQUOTAS = "" "v1" "resourcequotas" true;
    LIMITRANGES = "" "v1" "limitranges" true;
    REPLICATIONCONTROLLERS = "" "v1" "replicationcontrollers" true;
    LEASES = "coordination.k8s.io" "v1" "leases" true;
    ENDPOINTSLICES = "discovery.k8s.io" "v1" "endpointslices" true;
    DEPLOYMENTS = "apps" "v1" "deployments" true;
    REPLICASETS = "apps" "v1" "replicasets" true;
    DAEMONSETS = "apps" "v1" "daemonsets" true;
    STATEFULSETS = "apps" "v1" "statefulsets" true;
    CONTROLLERREVISIONS = "apps" "v1" "controllerrevisions" true;
    JOBS = "batch" "v1" "jobs" true;
    CRONJOBS = "batch" "v1" "cronjobs" true;
    EVENTS_V1 = "events.k8s.io" "v1" "events" true;
    INGRESSES = "networking.k8s.io" "v1" "ingresses" true;
    INGRESSCLASSES = "networking.k8s.io" "v1" "ingressclasses" false;
    NETWORKPOLICIES = "networking.k8s.io" "v1" "networkpolicies" true;
    PDBS = "policy" "v1" "poddisruptionbudgets" true;
    HPAS = "autoscaling" "v2" "horizontalpodautoscalers" true;
    CLUSTERROLES = "rbac.authorization.k8s.io" "v1" "clusterroles" false;
    CLUSTERROLEBINDINGS = "rbac.authorization.k8s.io" "v1" "clusterrolebindings" false;
    ROLES = "rbac.authorization.k8s.io" "v1" "roles" true;
    ROLEBINDINGS = "rbac.authorization.k8s.io" "v1" "rolebindings" true;
    STORAGECLASSES = "storage.k8s.io" "v1" "storageclasses" false;
    CSINODES = "storage.k8s.io" "v1" "csinodes" false;
    CSIDRIVERS = "storage.k8s.io" "v1" "csidrivers" false;
    VOLUMEATTACHMENTS = "storage.k8s.io" "v1" "volumeattachments" false;
    PRIORITYCLASSES = "scheduling.k8s.io" "v1" "priorityclasses" false;
    RUNTIMECLASSES = "node.k8s.io" "v1" "runtimeclasses" false;
    CSRS = "certificates.k8s.io" "v1" "certificatesigningrequests" false;
    MUTATINGWEBHOOKS = "admissionregistration.k8s.io" "v1" "mutatingwebhookconfigurations" false;
    VALIDATINGWEBHOOKS = "admissionregistration.k8s.io" "v1" "validatingwebhookconfigurations" false;
    CRDS = "apiextensions.k8s.io" "v1" "customresourcedefinitions" false;
    SELFSUBJECTRULESREVIEWS = "authorization.k8s.io" "v1" "selfsubjectrulesreviews" false;
    SELFSUBJECTACCESSREVIEWS = "authorization.k8s.io" "v1" "selfsubjectaccessreviews" false;
    SUBJECTACCESSREVIEWS = "authorization.k8s.io" "v1" "subjectaccessreviews" false;
    TOKENREVIEWS = "authentication.k8s.io" "v1" "tokenreviews" false;
    CERTIFICATES = "cert-manager.io" "v1" "certificates" true;
    CERTIFICATEREQUESTS = "cert-manager.io" "v1" "certificaterequests" true;
    ISSUERS = "cert-manager.io" "v1" "issuers" true;
    CLUSTERISSUERS = "cert-manager.io" "v1" "clusterissuers" false;
    ORDERS = "acme.cert-manager.io" "v1" "orders" true;
    APPLICATIONS = "argoproj.io" "v1alpha1" "applications" true;
    APPPROJECTS = "argoproj.io" "v1alpha1" "appprojects" true;
    VPAS = "autoscaling.k8s.io" "v1" "verticalpodautoscalers" true;
    SERVICEMONITORS = "monitoring.coreos.com" "v1" "servicemonitors" true;
}

impl Res {
    pub(crate) fn at(self, namespace: &str, name: &str, subresource: &'static str) -> ObjRef {
        ObjRef {
            res: self,
            namespace: if self.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
            subresource,
        }
    }

    /// The collection: across all namespaces when `namespace` is empty.
    pub(crate) fn all(self, namespace: &str) -> ObjRef {
        self.at(namespace, "", "")
    }
}

/// The `objectRef` of a resource request.
#[derive(Debug, Clone)]
pub(crate) struct ObjRef {
    pub res: Res,
    pub namespace: String,
    pub name: String,
    pub subresource: &'static str,
}

impl ObjRef {
    /// The URL path kube-apiserver derived this reference from. A create names its object in the body, not
    /// in the path (unless it is a subresource such as `pods/binding`).
    pub(crate) fn path(&self, verb: &str) -> String {
        let mut p = String::with_capacity(96);
        if self.res.group.is_empty() {
            p.push_str("/api/v1");
        } else {
            p.push_str("/apis/");
            p.push_str(self.res.group);
            p.push('/');
            p.push_str(self.res.version);
        }
        if !self.namespace.is_empty() {
            p.push_str("/namespaces/");
            p.push_str(&self.namespace);
        }
        p.push('/');
        p.push_str(self.res.resource);
        let name_in_path = !(verb == "create" && self.subresource.is_empty());
        if !self.name.is_empty() && name_in_path {
            p.push('/');
            p.push_str(&self.name);
        }
        if !self.subresource.is_empty() {
            p.push('/');
            p.push_str(self.subresource);
        }
        p
    }

    fn write(&self, w: &mut Jw<'_>) {
        w.str("resource", self.res.resource);
        w.opt("namespace", &self.namespace);
        w.opt("name", &self.name);
        w.opt("apiGroup", self.res.group);
        w.str("apiVersion", self.res.version);
        w.opt("subresource", self.subresource);
    }
}

/// Why a request failed, as `metav1.Status` says it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub reason: &'static str,
    pub message: String,
}

/// One request through kube-apiserver, rendered once per stage it is audited at.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub level: Level,
    pub audit_id: String,
    pub uri: String,
    pub verb: &'static str,
    pub actor: Actor,
    pub impersonated: Option<Arc<User>>,
    pub object_ref: Option<ObjRef>,
    pub code: u16,
    pub failure: Option<Failure>,
    pub request_object: Option<Vec<u8>>,
    pub response_object: Option<Vec<u8>>,
    pub allowed: bool,
    pub reason: Arc<str>,
    pub annotations: Vec<(&'static str, String)>,
    /// From receipt to completion (for watches and exec sessions, how long they stayed open).
    pub latency_us: i64,
    /// Watch, exec, attach, port-forward, log and proxy: audited at ResponseStarted too.
    pub long_running: bool,
    /// Set when the first stage of this request is emitted.
    pub received_us: Option<i64>,
    pub attack: bool,
}

impl Req {
    /// A resource request; `query` (without `?`) is appended to the path derived from `oref`.
    pub(crate) fn resource(
        rng: &mut Rand,
        actor: &Actor,
        verb: &'static str,
        oref: ObjRef,
        query: &str,
    ) -> Req {
        let mut uri = oref.path(verb);
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(query);
        }
        let long_running = verb == "watch"
            || matches!(
                oref.subresource,
                "exec" | "attach" | "portforward" | "log" | "proxy"
            );
        let level = match verb {
            "create" | "update" | "patch" if oref.subresource.is_empty() => Level::Request,
            _ => Level::Metadata,
        };
        let code = if verb == "create" && oref.subresource.is_empty() {
            201
        } else {
            200
        };
        let mut req = Req::base(rng, actor, verb, uri);
        req.level = level;
        req.code = code;
        req.long_running = long_running;
        req.object_ref = Some(oref);
        req
    }

    /// A non-resource request such as `/healthz` or `/apis` (verb is the lower-cased HTTP method).
    pub(crate) fn non_resource(
        rng: &mut Rand,
        actor: &Actor,
        verb: &'static str,
        uri: &str,
    ) -> Req {
        Req::base(rng, actor, verb, uri.to_string())
    }

    fn base(rng: &mut Rand, actor: &Actor, verb: &'static str, uri: String) -> Req {
        // Most requests take a few milliseconds; a long tail takes tens.
        let latency_us =
            300 + rng.exp(2_500.0) as i64 + rng.exp(400.0) as i64 * i64::from(rng.chance(0.05));
        Req {
            level: Level::Metadata,
            audit_id: rng.uuid(),
            uri,
            verb,
            actor: actor.clone(),
            impersonated: None,
            object_ref: None,
            code: 200,
            failure: None,
            request_object: None,
            response_object: None,
            allowed: true,
            reason: actor.reason.clone(),
            annotations: Vec::new(),
            latency_us,
            long_running: false,
            received_us: None,
            attack: false,
        }
    }

    pub(crate) fn with_object(mut self, level: Level, obj: Vec<u8>) -> Req {
        self.level = level;
        self.request_object = Some(obj);
        self
    }

    /// Denied by authorization: 403, decision `forbid`, the message kube-apiserver writes.
    pub(crate) fn forbidden(mut self) -> Req {
        let user = &self.actor.user.name;
        let message = match &self.object_ref {
            Some(o) => {
                let what = if o.subresource.is_empty() {
                    o.res.resource.to_string()
                } else {
                    format!("{}/{}", o.res.resource, o.subresource)
                };
                let named = if o.name.is_empty() || self.verb == "create" {
                    what.clone()
                } else {
                    format!("{what} \"{}\"", o.name)
                };
                let scope = if o.namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace \"{}\"", o.namespace)
                };
                format!(
                    "{named} is forbidden: User \"{user}\" cannot {} resource \"{what}\" in API group \"{}\" {scope}",
                    self.verb, o.res.group
                )
            }
            None => format!(
                "forbidden: User \"{user}\" cannot {} path \"{}\"",
                self.verb,
                self.uri.split('?').next().unwrap_or("")
            ),
        };
        self.code = 403;
        self.allowed = false;
        self.reason = "".into();
        self.level = Level::Metadata;
        self.request_object = None;
        self.response_object = None;
        self.long_running = false;
        self.failure = Some(Failure {
            reason: "Forbidden",
            message,
        });
        self
    }

    /// A create audited at Metadata: the body is not logged, so the objectRef has no name either.
    pub(crate) fn with_metadata_level(mut self) -> Req {
        self.level = Level::Metadata;
        self.request_object = None;
        if let Some(o) = &mut self.object_ref {
            o.name.clear();
        }
        self
    }

    /// A create of something that is already there: 409.
    pub(crate) fn already_exists(mut self) -> Req {
        if let Some(o) = &self.object_ref {
            let what = match o.res.group {
                "" => o.res.resource.to_string(),
                g => format!("{}.{g}", o.res.resource),
            };
            self.failure = Some(Failure {
                reason: "AlreadyExists",
                message: format!("{what} \"{}\" already exists", o.name),
            });
        }
        self.code = 409;
        self
    }

    /// The object does not exist: 404.
    pub(crate) fn not_found(mut self) -> Req {
        if let Some(o) = &self.object_ref {
            let what = match o.res.group {
                "" => o.res.resource.to_string(),
                g => format!("{}.{g}", o.res.resource),
            };
            self.failure = Some(Failure {
                reason: "NotFound",
                message: format!("{what} \"{}\" not found", o.name),
            });
        }
        self.code = 404;
        self
    }

    pub(crate) fn annotate(mut self, key: &'static str, value: impl Into<String>) -> Req {
        self.annotations.push((key, value.into()));
        self
    }

    /// Writes this request as audited at `stage`, completed (or started) at `stage_us`.
    pub(crate) fn render(&self, buf: &mut Vec<u8>, stage: Stage, stage_us: i64) {
        let received_us = self.received_us.unwrap_or(stage_us);
        Jw::object(buf, |w| {
            w.str("kind", "Event");
            w.str("apiVersion", "audit.k8s.io/v1");
            w.str("level", self.level.as_str());
            w.str("auditID", &self.audit_id);
            w.str("stage", stage.as_str());
            w.str("requestURI", &self.uri);
            w.str("verb", self.verb);
            w.obj("user", |w| self.actor.user.write(w));
            if let Some(imp) = &self.impersonated {
                w.obj("impersonatedUser", |w| imp.write(w));
            }
            w.strs("sourceIPs", &[&self.actor.ip]);
            w.str("userAgent", &self.actor.ua);
            if let Some(o) = &self.object_ref {
                w.obj("objectRef", |w| o.write(w));
            }
            if stage != Stage::RequestReceived {
                w.obj("responseStatus", |w| {
                    w.obj("metadata", |_| {});
                    if let Some(f) = &self.failure {
                        w.str("status", "Failure");
                        w.str("message", &f.message);
                        w.str("reason", f.reason);
                    }
                    w.num("code", i64::from(self.code));
                });
                if let Some(obj) = &self.request_object {
                    w.raw("requestObject", obj);
                }
                if stage == Stage::ResponseComplete
                    && let Some(obj) = &self.response_object
                {
                    w.raw("responseObject", obj);
                }
            }
            w.raw_with("requestReceivedTimestamp", |buf| {
                quoted_ts(buf, received_us)
            });
            w.raw_with("stageTimestamp", |buf| quoted_ts(buf, stage_us));
            if stage != Stage::RequestReceived {
                // Go writes map keys sorted; every other annotation sorts after `authorization.`.
                w.obj("annotations", |w| {
                    w.str(
                        "authorization.k8s.io/decision",
                        if self.allowed { "allow" } else { "forbid" },
                    );
                    w.str("authorization.k8s.io/reason", &self.reason);
                    for (k, v) in &self.annotations {
                        w.str(k, v);
                    }
                });
            }
        });
    }
}

fn quoted_ts(buf: &mut Vec<u8>, us: i64) {
    buf.push(b'"');
    write_ts(buf, us);
    buf.push(b'"');
}
