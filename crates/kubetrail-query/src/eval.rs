//! The reference semantics: an expression evaluated on one event's JSON, and the `kt_json_match` UDF.

use serde_json::Value as Json;

use crate::{Expr, Field, Op, Value};

impl Expr {
    /// Whether the event matches: the reference semantics that [`Expr::to_sql`] reproduces on the store's
    /// columns. `event` is the (redacted) event's JSON; `cluster` is the cluster it was received from (the
    /// one field that is not in the event). Each short name reads the event path listed in the crate
    /// documentation.
    pub fn matches(&self, event: &Json, cluster: &str) -> bool {
        match self {
            Expr::And(terms) => terms.iter().all(|t| t.matches(event, cluster)),
            Expr::Or(terms) => terms.iter().any(|t| t.matches(event, cluster)),
            Expr::Not(inner) => !inner.matches(event, cluster),
            Expr::Cmp { field, op, values } => {
                let texts: Vec<_> = values.iter().map(Value::text).collect();
                let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
                let (json_op, negate) = match op {
                    Op::Eq | Op::In => (JsonOp::Eq, false),
                    Op::Ne => (JsonOp::Eq, true),
                    Op::Glob => (JsonOp::Glob, false),
                };
                let found = match field {
                    Field::Column("cluster") => any_leaf_matches(json_op, &texts, cluster),
                    Field::Column(_) => {
                        let path = field.column().map_or(&[][..], |c| c.event_path);
                        any_leaf(event, path, &mut |leaf| {
                            any_leaf_matches(json_op, &texts, leaf)
                        })
                    }
                    Field::JsonPath(segments) => {
                        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
                        any_leaf(event, &segments, &mut |leaf| {
                            any_leaf_matches(json_op, &texts, leaf)
                        })
                    }
                };
                found != negate
            }
        }
    }
}

/// The comparison `kt_json_match` makes between each leaf at the path and the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonOp {
    /// `'='`: a leaf equals one of the values.
    Eq,
    /// `'~'`: a leaf matches one of the globs.
    Glob,
}

impl JsonOp {
    /// The op from its SQL argument (`'='` or `'~'`); the engine should refuse any other at planning time.
    pub fn parse(op: &str) -> Option<JsonOp> {
        match op {
            "=" => Some(JsonOp::Eq),
            "~" => Some(JsonOp::Glob),
            _ => None,
        }
    }

    /// The op as the SQL argument.
    pub fn as_str(self) -> &'static str {
        match self {
            JsonOp::Eq => "=",
            JsonOp::Glob => "~",
        }
    }
}

/// `kt_json_match`: whether any leaf at the dotted `path` of the event compares `op` with any of `values`.
///
/// A path descends into every element of an array it meets; at its end strings are themselves, numbers and
/// booleans their JSON text, `null` nothing, arrays their elements and objects their compact JSON text. A
/// segment that is not a key is joined with the following ones (`annotations.authorization.k8s.io/decision`).
pub fn json_match(event: &Json, path: &str, op: JsonOp, values: &[&str]) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    any_leaf(event, &segments, &mut |leaf| {
        any_leaf_matches(op, values, leaf)
    })
}

/// [`json_match`] on the event's JSON text, as the UDF gets it from the `event` column: false when it does
/// not parse.
pub fn json_match_str(event_json: &str, path: &str, op: JsonOp, values: &[&str]) -> bool {
    serde_json::from_str::<Json>(event_json).is_ok_and(|event| json_match(&event, path, op, values))
}

fn any_leaf_matches(op: JsonOp, values: &[&str], leaf: &str) -> bool {
    match op {
        JsonOp::Eq => values.contains(&leaf),
        JsonOp::Glob => values.iter().any(|glob| glob_match(glob, leaf)),
    }
}

/// Whether `f` holds for any leaf at `segments` below `value`.
fn any_leaf(value: &Json, segments: &[&str], f: &mut dyn FnMut(&str) -> bool) -> bool {
    match value {
        Json::Array(items) => items.iter().any(|item| any_leaf(item, segments, f)),
        Json::Object(map) if !segments.is_empty() => {
            // A segment that is not a key is joined with the following ones, shortest key first, for keys
            // with dots such as annotation names; one key is followed per object, so the walk is linear.
            let mut key = String::new();
            for (n, segment) in segments.iter().enumerate() {
                if n > 0 {
                    key.push('.');
                }
                key.push_str(segment);
                if let Some(next) = map.get(&key) {
                    return any_leaf(next, &segments[n + 1..], f);
                }
            }
            false
        }
        _ if !segments.is_empty() => false,
        Json::Null => false,
        Json::String(s) => f(s),
        Json::Object(_) => f(&value.to_string()),
        Json::Number(n) => f(&n.to_string()),
        Json::Bool(b) => f(if *b { "true" } else { "false" }),
    }
}

/// Whether `text` matches the glob: `*` any run of characters, `?` exactly one, anything else itself.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut g, mut t) = (0, 0);
    // Where the last `*` was and the text position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == '*' {
            star = Some((g, t));
            g += 1;
        } else if g < glob.len() && (glob[g] == '?' || glob[g] == text[t]) {
            g += 1;
            t += 1;
        } else if let Some((star_g, star_t)) = star {
            g = star_g + 1;
            t = star_t + 1;
            star = Some((star_g, star_t + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    /// falco `trace_files/create_nginx_pod_privileged_2nd_container.json` (falcosecurity/plugins k8saudit
    /// test traces), verbatim.
    const POD: &str = r#"{"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"system:controller:replicaset-controller\" of ClusterRole \"system:controller:replicaset-controller\" to ServiceAccount \"replicaset-controller/kube-system\""},"auditID":"f83ecd50-5bf4-4fe7-a419-dea22852ca49","kind":"Event","level":"RequestResponse","metadata":{"creationTimestamp":"2018-10-25T17:53:07Z"},"objectRef":{"apiVersion":"v1","namespace":"default","resource":"pods"},"requestObject":{"apiVersion":"v1","kind":"Pod","metadata":{"creationTimestamp":null,"generateName":"nginx-deployment-544b59f8b8-","labels":{"app":"nginx","pod-template-hash":"1006159464"},"ownerReferences":[{"apiVersion":"apps/v1","blockOwnerDeletion":true,"controller":true,"kind":"ReplicaSet","name":"nginx-deployment-544b59f8b8","uid":"d40b40e1-d87e-11e8-a473-080027728ac4"}]},"spec":{"containers":[{"image":"nginx","imagePullPolicy":"Always","name":"nginx1","resources":{},"securityContext":{"privileged":false},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"},{"image":"mysql:latest","imagePullPolicy":"Always","name":"mysql","resources":{},"securityContext":{"privileged":true},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30},"status":{}},"requestReceivedTimestamp":"2018-10-25T17:53:06.995407Z","requestURI":"/api/v1/namespaces/default/pods","responseObject":{"apiVersion":"v1","kind":"Pod","metadata":{"creationTimestamp":"2018-10-25T17:53:06Z","generateName":"nginx-deployment-544b59f8b8-","labels":{"app":"nginx","pod-template-hash":"1006159464"},"name":"nginx-deployment-544b59f8b8-ffkxm","namespace":"default","ownerReferences":[{"apiVersion":"apps/v1","blockOwnerDeletion":true,"controller":true,"kind":"ReplicaSet","name":"nginx-deployment-544b59f8b8","uid":"d40b40e1-d87e-11e8-a473-080027728ac4"}],"resourceVersion":"246302","selfLink":"/api/v1/namespaces/default/pods/nginx-deployment-544b59f8b8-ffkxm","uid":"d40dfcd7-d87e-11e8-a473-080027728ac4"},"spec":{"containers":[{"image":"nginx","imagePullPolicy":"Always","name":"nginx1","resources":{},"securityContext":{"privileged":false},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","volumeMounts":[{"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount","name":"default-token-g2sp7","readOnly":true}]},{"image":"mysql:latest","imagePullPolicy":"Always","name":"mysql","resources":{},"securityContext":{"privileged":true},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","volumeMounts":[{"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount","name":"default-token-g2sp7","readOnly":true}]}],"dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"serviceAccount":"default","serviceAccountName":"default","terminationGracePeriodSeconds":30,"tolerations":[{"effect":"NoExecute","key":"node.kubernetes.io/not-ready","operator":"Exists","tolerationSeconds":300},{"effect":"NoExecute","key":"node.kubernetes.io/unreachable","operator":"Exists","tolerationSeconds":300}],"volumes":[{"name":"default-token-g2sp7","secret":{"defaultMode":420,"secretName":"default-token-g2sp7"}}]},"status":{"phase":"Pending","qosClass":"BestEffort"}},"responseStatus":{"code":201,"metadata":{}},"sourceIPs":["::1"],"stage":"ResponseComplete","stageTimestamp":"2018-10-25T17:53:07.006845Z","timestamp":"2018-10-25T17:53:06Z","user":{"groups":["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"],"uid":"8d5e1349-d30f-11e8-96d9-080027728ac4","username":"system:serviceaccount:kube-system:replicaset-controller"},"verb":"create"}"#;

    /// falco `trace_files/exec_pod.json`, verbatim.
    const EXEC: &str = r#"{"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""},"auditID":"ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6","kind":"Event","level":"Request","metadata":{"creationTimestamp":"2018-10-26T13:38:34Z"},"objectRef":{"apiVersion":"v1","name":"nginx-deployment-7998647bdf-phvq7","namespace":"default","resource":"pods","subresource":"exec"},"requestReceivedTimestamp":"2018-10-26T13:38:34.867116Z","requestURI":"/api/v1/namespaces/default/pods/nginx-deployment-7998647bdf-phvq7/exec?command=bash&container=nginx1&container=nginx1&stdin=true&stdout=true&tty=true","responseStatus":{"code":101,"metadata":{}},"sourceIPs":["192.168.99.1"],"stage":"ResponseStarted","stageTimestamp":"2018-10-26T13:38:34.902914Z","timestamp":"2018-10-26T13:38:34Z","user":{"groups":["system:masters","system:authenticated"],"username":"minikube-user"},"verb":"create"}"#;

    /// falco `trace_files/anonymous_creates_namespace_foo.json`, verbatim (`audit.k8s.io/v1beta1`).
    const ANONYMOUS: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1","metadata":{"creationTimestamp":"2018-10-25T13:58:49Z"},"level":"Request","timestamp":"2018-10-25T13:58:49Z","auditID":"841d3e6d-90d2-43df-8da4-684738bee3d5","stage":"ResponseComplete","requestURI":"/api/v1/namespaces","verb":"create","user":{"username":"system:anonymous","groups":["system:masters","system:authenticated"]},"sourceIPs":["192.168.99.1"],"objectRef":{"resource":"namespaces","name":"foo","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"foo","creationTimestamp":null},"spec":{},"status":{"phase":"Active"}},"requestReceivedTimestamp":"2018-10-25T13:58:49.730588Z","stageTimestamp":"2018-10-25T13:58:49.736141Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;

    /// Checks which of the three events (pod, exec, anonymous) the expression matches, on cluster `prod`.
    #[track_caller]
    fn check(input: &str, expect: [bool; 3]) {
        let expr = parse(input).unwrap_or_else(|e| panic!("{input}:\n{e}"));
        let got =
            [POD, EXEC, ANONYMOUS].map(|e| expr.matches(&serde_json::from_str(e).unwrap(), "prod"));
        assert_eq!(got, expect, "{input}");
    }

    #[test]
    fn short_names_on_real_events() {
        check("user = minikube-user", [false, true, false]);
        check(
            "user = system:serviceaccount:kube-system:replicaset-controller",
            [true, false, false],
        );
        check("user ~ system:*", [true, false, true]);
        check(
            "user ~ 'system:serviceaccount:*:replicaset-?ontroller'",
            [true, false, false],
        );
        check("group = system:masters", [false, true, true]);
        check("group != system:masters", [true, false, false]);
        check("group ~ system:serviceaccounts:*", [true, false, false]);
        check("group ~ *", [true, true, true]);
        check(
            "group in (system:serviceaccounts, nobody)",
            [true, false, false],
        );
        check("verb = create and resource = pods", [true, true, false]);
        check("subresource = exec", [false, true, false]);
        check("subresource != exec", [true, false, true]);
        check("namespace = default", [true, true, false]);
        check("namespace != default", [false, false, true]);
        check("name ~ nginx-*", [false, true, false]);
        check("name = foo", [false, false, true]);
        check("apigroup != apps", [true, true, true]);
        check("code = 201", [true, false, true]);
        check("code in (101, 500)", [false, true, false]);
        check("code ~ 2??", [true, false, true]);
        check("code != 201", [false, true, false]);
        check("ip = ::1", [true, false, false]);
        check("ip ~ 192.168.*", [false, true, true]);
        check("useragent ~ *", [false, false, false]);
        check("stage = ResponseStarted", [false, true, false]);
        check("level in (Request, Metadata)", [false, true, true]);
        check(
            "auditid = ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6",
            [false, true, false],
        );
        check("uri ~ '*/exec?*'", [false, true, false]);
        check("decision = allow", [true, true, true]);
        check("impersonated ~ *", [false, false, false]);
        check("impersonated != alice", [true, true, true]);
        check("cluster = prod", [true, true, true]);
        check("cluster != prod", [false, false, false]);
    }

    #[test]
    fn json_paths_on_real_events() {
        check(
            "requestObject.spec.containers.image = mysql:latest",
            [true, false, false],
        );
        check(
            "requestObject.spec.containers.securityContext.privileged = true",
            [true, false, false],
        );
        check(
            "requestObject.spec.containers.image ~ 'nginx*'",
            [true, false, false],
        );
        check(
            "requestObject.spec.containers.image != nginx",
            [false, true, true],
        );
        check("objectRef.subresource = exec", [false, true, false]);
        check("responseStatus.code = 101", [false, true, false]);
        check(
            "annotations.authorization.k8s.io/reason ~ 'RBAC: *'",
            [true, false, false],
        );
        check(
            "requestObject.metadata.labels ~ '*\"app\":\"nginx\"*'",
            [true, false, false],
        );
        check("apiVersion = audit.k8s.io/v1beta1", [false, false, true]);
        check(
            "requestObject.metadata.creationTimestamp ~ '*'",
            [false, false, false],
        );
        check("user.extra ~ *", [false, false, false]);
        check("requestURI ~ '/api/v1/namespaces'", [false, false, true]);
    }

    #[test]
    fn boolean_structure() {
        check("not verb = create", [false, false, false]);
        check(
            "namespace = default and not subresource = exec",
            [true, false, false],
        );
        check("user = minikube-user or name = foo", [false, true, true]);
        check(
            "not (user = minikube-user or name = foo) and verb = create",
            [true, false, false],
        );
        check("verb not in (get, list)", [true, true, true]);
        check(
            "NOT namespace IN (default) AND level = Request",
            [false, false, true],
        );
    }

    #[test]
    fn globs() {
        let check = |glob: &str, text: &str, expect: bool| {
            assert_eq!(glob_match(glob, text), expect, "{glob} {text}")
        };
        check("", "", true);
        check("", "a", false);
        check("*", "", true);
        check("a*", "abc", true);
        check("*c", "abc", true);
        check("a?c", "abc", true);
        check("a?c", "ac", false);
        check("*b*b*", "abxbb", true);
        check("*b*b*", "ab", false);
        check("a*b?d", "axxbxd", true);
        check("é?", "éz", true);
        check("?", "*", true);
        check("**a**", "a", true);
        check("a*", "ba", false);
    }

    #[test]
    fn json_match_str_is_false_on_malformed_events() {
        assert!(!json_match_str("{", "verb", JsonOp::Eq, &["create"]));
        assert!(json_match_str(EXEC, "verb", JsonOp::Eq, &["get", "create"]));
        assert!(json_match_str(
            EXEC,
            "user.groups",
            JsonOp::Glob,
            &["nope", "system:m*"]
        ));
        assert_eq!(JsonOp::parse("!="), None);
    }
}
