//! Matching semantics: modifiers, wildcards, case, arrays, annotation keys, CIDR, numbers, fieldref, exists,
//! conditions, and the enrichment fields over pods and workload templates.

use kubetrail_detect::{Config, Engine, RuleSet};

fn engine(detection: &str, cfg: Config) -> Engine {
    let src = format!(
        "title: T\nid: t\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n{detection}"
    );
    let mut set = RuleSet::new();
    set.add_file("t.yml", &src)
        .unwrap_or_else(|e| panic!("{e}"));
    Engine::new(&set, cfg).unwrap()
}

/// Checks a detection block against events: (event JSON, whether it matches).
fn check(detection: &str, cases: &[(&str, bool)]) {
    let e = engine(detection, Config::default());
    for (event, want) in cases {
        let got = !e.matching_rules(event).unwrap().is_empty();
        assert_eq!(got, *want, "detection:\n{detection}\nevent: {event}");
    }
}

#[test]
fn plain_values_are_case_insensitive_and_lists_are_or() {
    check(
        "  sel:\n    verb: [Get, list]\n  condition: sel\n",
        &[
            (r#"{"verb":"get"}"#, true),
            (r#"{"verb":"LIST"}"#, true),
            (r#"{"verb":"watch"}"#, false),
            (r#"{}"#, false),
        ],
    );
}

#[test]
fn wildcards_and_escapes() {
    check(
        "  sel:\n    user.username: 'system:serviceaccount:*:default'\n  condition: sel\n",
        &[
            (
                r#"{"user":{"username":"system:serviceaccount:prod:default"}}"#,
                true,
            ),
            (
                r#"{"user":{"username":"system:serviceaccount:prod:api"}}"#,
                false,
            ),
        ],
    );
    check(
        "  sel:\n    objectRef.name: 'pod-?'\n  condition: sel\n",
        &[
            (r#"{"objectRef":{"name":"pod-a"}}"#, true),
            (r#"{"objectRef":{"name":"pod-ab"}}"#, false),
        ],
    );
    check(
        "  sel:\n    objectRef.name: 'a\\*b'\n  condition: sel\n",
        &[
            (r#"{"objectRef":{"name":"a*b"}}"#, true),
            (r#"{"objectRef":{"name":"axb"}}"#, false),
        ],
    );
}

#[test]
fn contains_startswith_endswith_all() {
    check(
        "  sel:\n    requestURI|contains: '/exec'\n  condition: sel\n",
        &[
            (
                r#"{"requestURI":"/api/v1/namespaces/a/pods/b/EXEC?x"}"#,
                true,
            ),
            (r#"{"requestURI":"/api/v1/pods"}"#, false),
        ],
    );
    check(
        "  sel:\n    userAgent|startswith: kubectl/\n  condition: sel\n",
        &[
            (r#"{"userAgent":"kubectl/v1.29.0"}"#, true),
            (r#"{"userAgent":"curl kubectl/"}"#, false),
        ],
    );
    check(
        "  sel:\n    objectRef.name|endswith: -admin\n  condition: sel\n",
        &[
            (r#"{"objectRef":{"name":"cluster-admin"}}"#, true),
            (r#"{"objectRef":{"name":"admin-x"}}"#, false),
        ],
    );
    check(
        "  sel:\n    requestURI|contains|all: [pods, exec]\n  condition: sel\n",
        &[
            (r#"{"requestURI":"/pods/x/exec"}"#, true),
            (r#"{"requestURI":"/pods/x/attach"}"#, false),
        ],
    );
}

#[test]
fn cased_and_re() {
    check(
        "  sel:\n    objectRef.name|cased: Api\n  condition: sel\n",
        &[
            (r#"{"objectRef":{"name":"Api"}}"#, true),
            (r#"{"objectRef":{"name":"api"}}"#, false),
        ],
    );
    check(
        "  sel:\n    objectRef.name|re: '^api-[0-9]+$'\n  condition: sel\n",
        &[
            (r#"{"objectRef":{"name":"api-12"}}"#, true),
            (r#"{"objectRef":{"name":"API-12"}}"#, false),
        ],
    );
    check(
        "  sel:\n    objectRef.name|re|i: '^api-[0-9]+$'\n  condition: sel\n",
        &[(r#"{"objectRef":{"name":"API-12"}}"#, true)],
    );
}

#[test]
fn arrays_match_if_any_element_matches() {
    let d = "  sel:\n    requestObject.spec.containers.securityContext.privileged: true\n  condition: sel\n";
    check(
        d,
        &[
            (
                r#"{"requestObject":{"spec":{"containers":[{"name":"a"},{"securityContext":{"privileged":true}}]}}}"#,
                true,
            ),
            (
                r#"{"requestObject":{"spec":{"containers":[{"securityContext":{"privileged":false}}]}}}"#,
                false,
            ),
        ],
    );
    check(
        "  sel:\n    user.groups: system:masters\n  condition: sel\n",
        &[
            (
                r#"{"user":{"groups":["system:authenticated","system:masters"]}}"#,
                true,
            ),
            (r#"{"user":{"groups":[]}}"#, false),
        ],
    );
}

#[test]
fn annotation_keys_with_dots_and_slashes() {
    check(
        "  sel:\n    annotations.authorization.k8s.io/decision: forbid\n  condition: sel\n",
        &[
            (
                r#"{"annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}"#,
                true,
            ),
            (
                r#"{"annotations":{"authorization.k8s.io/decision":"allow"}}"#,
                false,
            ),
            (
                r#"{"annotations":{"pod-security.kubernetes.io/enforce-policy":"forbid"}}"#,
                false,
            ),
        ],
    );
}

#[test]
fn cidr_v4_and_v6() {
    let d = "  sel:\n    sourceIPs|cidr: ['10.0.0.0/8', 'fd00::/8']\n  condition: sel\n";
    check(
        d,
        &[
            (r#"{"sourceIPs":["10.1.2.3"]}"#, true),
            (r#"{"sourceIPs":["203.0.113.9","10.0.0.1"]}"#, true),
            (r#"{"sourceIPs":["fd00:1::5"]}"#, true),
            (r#"{"sourceIPs":["203.0.113.9"]}"#, false),
            (r#"{"sourceIPs":["2001:db8::1"]}"#, false),
            (r#"{"sourceIPs":["not-an-ip"]}"#, false),
        ],
    );
}

#[test]
fn numbers_compare_and_equal_across_types() {
    check(
        "  sel:\n    responseStatus.code|gte: 400\n  condition: sel\n",
        &[
            (r#"{"responseStatus":{"code":403}}"#, true),
            (r#"{"responseStatus":{"code":201}}"#, false),
            (r#"{"responseStatus":{}}"#, false),
        ],
    );
    check(
        "  sel:\n    responseStatus.code|lt: 300\n  condition: sel\n",
        &[
            (r#"{"responseStatus":{"code":200}}"#, true),
            (r#"{"responseStatus":{"code":"200"}}"#, true),
            (r#"{"responseStatus":{"code":404}}"#, false),
        ],
    );
    check(
        "  sel:\n    responseStatus.code: '403'\n  condition: sel\n",
        &[
            (r#"{"responseStatus":{"code":403}}"#, true),
            (r#"{"responseStatus":{"code":403.0}}"#, true),
            (r#"{"responseStatus":{"code":4030}}"#, false),
        ],
    );
}

#[test]
fn fieldref() {
    // A user acting on their own service account (self-referencing).
    check(
        "  sel:\n    user.username|fieldref: impersonatedUser.username\n  condition: sel\n",
        &[
            (
                r#"{"user":{"username":"Alice"},"impersonatedUser":{"username":"alice"}}"#,
                true,
            ),
            (
                r#"{"user":{"username":"alice"},"impersonatedUser":{"username":"bob"}}"#,
                false,
            ),
            (r#"{"user":{"username":"alice"}}"#, false),
        ],
    );
}

#[test]
fn exists_and_null() {
    check(
        "  sel:\n    impersonatedUser|exists: true\n  condition: sel\n",
        &[
            (r#"{"impersonatedUser":{"username":"x"}}"#, true),
            (r#"{"user":{}}"#, false),
            (r#"{"impersonatedUser":null}"#, false),
        ],
    );
    check(
        "  sel:\n    objectRef.namespace|exists: false\n  condition: sel\n",
        &[
            (r#"{"objectRef":{"resource":"nodes"}}"#, true),
            (r#"{"objectRef":{"namespace":"a"}}"#, false),
        ],
    );
    check(
        "  sel:\n    objectRef.namespace: null\n  condition: sel\n",
        &[
            (r#"{"objectRef":{}}"#, true),
            (r#"{"objectRef":{"namespace":null}}"#, true),
            (r#"{"objectRef":{"namespace":"a"}}"#, false),
        ],
    );
}

#[test]
fn conditions_of_selections() {
    let d = "  sel_a:\n    verb: get\n  sel_b:\n    verb: list\n  filter:\n    user.username: admin\n  condition: 1 of sel_* and not filter\n";
    check(
        d,
        &[
            (r#"{"verb":"get","user":{"username":"x"}}"#, true),
            (r#"{"verb":"list","user":{"username":"admin"}}"#, false),
            (r#"{"verb":"watch"}"#, false),
        ],
    );
    let d =
        "  a:\n    verb: get\n  b:\n    objectRef.resource: secrets\n  condition: all of them\n";
    check(
        d,
        &[
            (r#"{"verb":"get","objectRef":{"resource":"secrets"}}"#, true),
            (r#"{"verb":"get"}"#, false),
        ],
    );
    let d = "  a:\n    - verb: get\n      objectRef.resource: secrets\n    - verb: delete\n  condition: a\n";
    check(
        d,
        &[
            (r#"{"verb":"get","objectRef":{"resource":"secrets"}}"#, true),
            (r#"{"verb":"delete"}"#, true),
            (r#"{"verb":"get"}"#, false),
        ],
    );
}

#[test]
fn keywords_match_anywhere_in_the_event() {
    check(
        "  keywords:\n    - 'xmrig'\n    - 'stratum+tcp'\n  condition: keywords\n",
        &[
            (
                r#"{"requestObject":{"spec":{"containers":[{"image":"evil/XMRig:1"}]}}}"#,
                true,
            ),
            (r#"{"verb":"get"}"#, false),
        ],
    );
}

#[test]
fn sigma_aliases_read_the_pod_spec() {
    check(
        "  sel:\n    hostPath: '*'\n  condition: sel\n",
        &[
            (
                r#"{"requestObject":{"spec":{"volumes":[{"name":"a","hostPath":{"path":"/etc"}}]}}}"#,
                true,
            ),
            (
                r#"{"requestObject":{"spec":{"volumes":[{"name":"a","emptyDir":{}}]}}}"#,
                false,
            ),
        ],
    );
}

const POD: &str = r#"{"verb":"create","objectRef":{"resource":"pods","namespace":"prod"},"requestObject":{"kind":"Pod","spec":{
    "hostPID":true,"volumes":[{"hostPath":{"path":"/var/run/docker.sock"}}],
    "initContainers":[{"image":"busybox:1","securityContext":{"privileged":true}}],
    "containers":[{"image":"nginx:1.25","securityContext":{"capabilities":{"add":["NET_ADMIN"]}}}],
    "ephemeralContainers":[{"image":"debug@sha256:abc","securityContext":{"capabilities":{"add":["SYS_PTRACE"]}}}]}}}"#;

const DEPLOYMENT: &str = r#"{"verb":"create","objectRef":{"resource":"deployments","namespace":"dev","apiGroup":"apps"},"requestObject":{"kind":"Deployment","spec":{"replicas":1,"template":{"spec":{
    "hostNetwork":true,"containers":[{"image":"app:2","securityContext":{"privileged":true}}]}}}}}"#;

const CRONJOB: &str = r#"{"verb":"create","objectRef":{"resource":"cronjobs","namespace":"kube-system","apiGroup":"batch"},"requestObject":{"kind":"CronJob","spec":{"schedule":"* * * * *","jobTemplate":{"spec":{"template":{"spec":{
    "hostIPC":true,"volumes":[{"hostPath":{"path":"/"}}],"containers":[{"image":"miner:latest","securityContext":{"capabilities":{"add":["SYS_ADMIN"]}}}]}}}}}}}"#;

const PLAIN_POD: &str = r#"{"verb":"create","objectRef":{"resource":"pods","namespace":"prod-eu"},"requestObject":{"spec":{"containers":[{"image":"nginx"}]}}}"#;

const NO_SPEC: &str = r#"{"verb":"delete","objectRef":{"resource":"pods","namespace":"prod"},"requestObject":{"kind":"DeleteOptions"}}"#;

#[test]
fn pod_flags_across_containers_and_templates() {
    let check_field = |field: &str, value: &str, cases: &[(&str, bool)]| {
        check(
            &format!("  sel:\n    {field}: {value}\n  condition: sel\n"),
            cases,
        );
    };
    check_field(
        "kubetrail.pod.privileged",
        "true",
        &[
            (POD, true),
            (DEPLOYMENT, true),
            (CRONJOB, false),
            (PLAIN_POD, false),
            (NO_SPEC, false),
        ],
    );
    check_field(
        "kubetrail.pod.privileged",
        "false",
        &[(CRONJOB, true), (PLAIN_POD, true), (NO_SPEC, false)],
    );
    check_field(
        "kubetrail.pod.hostPID",
        "true",
        &[(POD, true), (DEPLOYMENT, false), (CRONJOB, false)],
    );
    check_field(
        "kubetrail.pod.hostIPC",
        "true",
        &[(POD, false), (CRONJOB, true)],
    );
    check_field(
        "kubetrail.pod.hostNetwork",
        "true",
        &[(DEPLOYMENT, true), (POD, false)],
    );
    check_field(
        "kubetrail.pod.hostPaths",
        "'/var/run/*'",
        &[(POD, true), (CRONJOB, false)],
    );
    check_field(
        "kubetrail.pod.hostPaths",
        "'/'",
        &[(CRONJOB, true), (POD, false)],
    );
    check_field(
        "kubetrail.pod.capabilities",
        "SYS_PTRACE",
        &[(POD, true), (CRONJOB, false)],
    );
    check_field(
        "kubetrail.pod.capabilities",
        "sys_admin",
        &[(CRONJOB, true), (DEPLOYMENT, false)],
    );
    check_field("kubetrail.pod.images", "'debug'", &[(POD, false)]);
    check_field("kubetrail.pod.images", "'debug@*'", &[(POD, true)]);
    check_field("kubetrail.pod.images", "busybox:1", &[(POD, true)]);
    check_field(
        "kubetrail.pod.images",
        "miner:latest",
        &[(CRONJOB, true), (DEPLOYMENT, false)],
    );
}

#[test]
fn namespace_tiers_identity_classes_exec() {
    let tier = |v: &str, cases: &[(&str, bool)]| {
        check(
            &format!("  sel:\n    kubetrail.namespace.tier: {v}\n  condition: sel\n"),
            cases,
        );
    };
    tier(
        "production",
        &[
            (POD, true),
            (PLAIN_POD, true),
            (DEPLOYMENT, false),
            (CRONJOB, false),
        ],
    );
    tier("system", &[(CRONJOB, true), (POD, false)]);
    tier("other", &[(DEPLOYMENT, true)]);
    tier("'*'", &[(r#"{"objectRef":{"resource":"nodes"}}"#, false)]);
    // Configurable production patterns.
    let e = engine(
        "  sel:\n    kubetrail.namespace.tier: production\n  condition: sel\n",
        Config {
            production_namespaces: vec!["payments".into(), "live-*".into()],
            ..Config::default()
        },
    );
    assert!(
        e.matching_rules(r#"{"objectRef":{"namespace":"live-eu"}}"#)
            .unwrap()
            .len()
            == 1
    );
    assert!(
        e.matching_rules(r#"{"objectRef":{"namespace":"prod"}}"#)
            .unwrap()
            .is_empty()
    );

    let class = |v: &str, cases: &[(&str, bool)]| {
        check(
            &format!("  sel:\n    kubetrail.identity.class: {v}\n  condition: sel\n"),
            cases,
        );
    };
    class(
        "service-account",
        &[
            (
                r#"{"user":{"username":"system:serviceaccount:ci:deployer"}}"#,
                true,
            ),
            (r#"{"user":{"username":"alice"}}"#, false),
        ],
    );
    class(
        "anonymous",
        &[(
            r#"{"user":{"username":"x","groups":["system:unauthenticated"]}}"#,
            true,
        )],
    );
    class(
        "node",
        &[(
            r#"{"user":{"username":"system:node:ip-1","groups":["system:nodes"]}}"#,
            true,
        )],
    );
    class(
        "cloud-managed",
        &[(
            r#"{"user":{"username":"eks:certificate-controller"}}"#,
            true,
        )],
    );
    class(
        "human",
        &[
            (r#"{"user":{"username":"alice@example.com"}}"#, true),
            (r#"{}"#, true),
        ],
    );

    let exec = "  sel:\n    kubetrail.request.execAttach: true\n  condition: sel\n";
    check(
        exec,
        &[
            (
                r#"{"verb":"create","objectRef":{"resource":"pods","subresource":"exec"}}"#,
                true,
            ),
            (
                r#"{"verb":"get","objectRef":{"resource":"pods","subresource":"attach"}}"#,
                true,
            ),
            (
                r#"{"verb":"get","objectRef":{"resource":"pods","subresource":"log"}}"#,
                false,
            ),
            (
                r#"{"verb":"delete","objectRef":{"resource":"pods","subresource":"exec"}}"#,
                false,
            ),
        ],
    );
}
