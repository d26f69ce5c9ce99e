//! Pods the control plane creates for a workload: reported as the workload's, in the name of its last
//! writer, once per template, and not when the template was already reported or the platform wrote it.

use kubetrail_detect::{Alert, Config, Engine, Level, RuleSet};

const RULE: &str = r#"
title: Privileged pod or template
id: t-privileged
level: high
logsource: {product: kubernetes, service: audit}
detection:
  workload:
    objectRef.resource: [pods, deployments, daemonsets, replicasets, jobs, cronjobs]
    verb: [create, update, patch]
  flag:
    kubetrail.pod.privileged: true
  system:
    kubetrail.identity.class: [node, control-plane, cloud-managed]
  controller_made:
    kubetrail.pod.owner|exists: true
  condition: workload and flag and (not system or controller_made)
"#;

fn engine() -> Engine {
    let mut set = RuleSet::new();
    set.add_file("t.yml", RULE).unwrap();
    Engine::new(&set, Config::default()).unwrap()
}

fn run(events: &[String]) -> Vec<Alert> {
    let mut e = engine();
    let mut out = Vec::new();
    for ev in events {
        e.process(ev, &mut out).unwrap();
    }
    e.flush(&mut out);
    out.into_iter().filter(|a| !a.update).collect()
}

fn time(t: u32) -> String {
    format!("2026-11-25T02:{:02}:{:02}.000000Z", t / 60, t % 60)
}

/// A workload write by `user`, with a privileged template body or none (Metadata level).
fn write(id: &str, t: u32, user: &str, kind: &str, name: &str, privileged: Option<bool>) -> String {
    let resource = format!("{}s", kind.to_lowercase());
    let body = match privileged {
        Some(p) => format!(
            r#","requestObject":{{"kind":"{kind}","metadata":{{"name":"{name}"}},"spec":{{"template":{{"spec":{{"containers":[{{"name":"c","image":"x","securityContext":{{"privileged":{p}}}}}]}}}}}}}}"#
        ),
        None => String::new(),
    };
    format!(
        r#"{{"kind":"Event","auditID":"{id}","stage":"ResponseComplete","verb":"create","user":{{"username":"{user}"}},"sourceIPs":["198.51.100.7","10.0.0.2"],"objectRef":{{"resource":"{resource}","namespace":"web","name":"{name}"}},"responseStatus":{{"code":201}},"requestReceivedTimestamp":"{}"{body}}}"#,
        time(t)
    )
}

/// A privileged pod created by `controller` for an owner (`kind`, `name`) with a template hash label.
fn pod(id: &str, t: u32, controller: &str, kind: &str, name: &str, hash: &str) -> String {
    format!(
        r#"{{"kind":"Event","auditID":"{id}","stage":"ResponseComplete","verb":"create","user":{{"username":"system:serviceaccount:kube-system:{controller}"}},"sourceIPs":["::1"],"userAgent":"kube-controller-manager/v1.30.2","objectRef":{{"resource":"pods","namespace":"web"}},"responseStatus":{{"code":201}},"requestReceivedTimestamp":"{}","requestObject":{{"kind":"Pod","metadata":{{"generateName":"{name}-","labels":{{"pod-template-hash":"{hash}"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"{kind}","name":"{name}","controller":true}}]}},"spec":{{"containers":[{{"name":"c","image":"x","securityContext":{{"privileged":true}}}}]}}}}}}"#,
        time(t)
    )
}

/// A privileged pod replicaset-controller creates for Deployment `api`'s current template.
fn api_pod(id: &str, t: u32) -> String {
    pod(
        id,
        t,
        "replicaset-controller",
        "ReplicaSet",
        "api-7d9f8c6b5",
        "7d9f8c6b5",
    )
}

#[test]
fn a_rollout_is_one_alert_in_the_writers_name() {
    let mut events = vec![write("w", 0, "alice", "Deployment", "api", None)];
    for i in 0..5 {
        events.push(pod(
            &format!("p{i}"),
            10 + i,
            "replicaset-controller",
            "ReplicaSet",
            "api-7d9f8c6b5",
            "7d9f8c6b5",
        ));
    }
    // Beyond the grouping window, more replicas of the same template: still the one alert.
    events.push(api_pod("late", 3000));
    let alerts = run(&events);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.actor.username, "alice");
    assert_eq!(a.severity, Level::High);
    // Where alice wrote it from, not the controller's address or agent.
    assert_eq!(a.source_ips, ["198.51.100.7"]);
    assert_eq!(a.user_agent, None);
    let o = a.owner.as_ref().unwrap();
    assert_eq!(
        (o.kind.as_str(), o.name.as_str(), o.namespace.as_str()),
        ("Deployment", "api", "web")
    );
    assert_eq!(o.writer.as_deref(), Some("alice"));
    assert!(o.controller.ends_with(":replicaset-controller"));
    assert!(
        a.summary
            .starts_with("alice wrote Deployment api in namespace web"),
        "{}",
        a.summary
    );

    // A new template (another rollout) is a new alert.
    events.push(pod(
        "new",
        3100,
        "replicaset-controller",
        "ReplicaSet",
        "api-5f6c7d8e9",
        "5f6c7d8e9",
    ));
    assert_eq!(run(&events).len(), 2);
}

#[test]
fn a_template_already_reported_is_not_reported_again_until_rewritten() {
    let events = vec![
        write("w", 0, "alice", "Deployment", "api", Some(true)),
        api_pod("p1", 10),
    ];
    let alerts = run(&events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].audit_ids, ["w"]);
    assert!(alerts[0].owner.is_none());

    // Someone rewrites it without the body being logged: its new pods are no longer covered.
    let mut events = events;
    events.push(write("w2", 20, "mallory", "Deployment", "api", None));
    events.push(pod(
        "p2",
        30,
        "replicaset-controller",
        "ReplicaSet",
        "api-5f6c7d8e9",
        "5f6c7d8e9",
    ));
    let alerts = run(&events);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[1].actor.username, "mallory");
    assert_eq!(alerts[1].audit_ids, ["p2"]);
}

#[test]
fn the_platforms_workloads_are_not_reported_and_unknown_writers_are_low() {
    let platform = vec![
        write("w", 0, "eks:addon-manager", "DaemonSet", "aws-node", None),
        pod(
            "p",
            10,
            "daemon-set-controller",
            "DaemonSet",
            "aws-node",
            "6d4b9c",
        ),
    ];
    assert!(run(&platform).is_empty());

    // The control plane's own writes do not make it the writer.
    let controller_write = vec![
        write(
            "w",
            0,
            "system:serviceaccount:kube-system:deployment-controller",
            "Deployment",
            "api",
            None,
        ),
        api_pod("p", 10),
    ];
    let alerts = run(&controller_write);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity, Level::Low);
    assert!(
        alerts[0]
            .summary
            .contains("whose last write is not in the trail"),
        "{}",
        alerts[0].summary
    );
    assert!(alerts[0].owner.as_ref().unwrap().writer.is_none());
}

#[test]
fn a_cronjobs_pods_are_the_cronjobs() {
    let events = vec![
        write("w", 0, "ci-bot", "CronJob", "backup", None),
        pod("p", 10, "job-controller", "Job", "backup-29412345", ""),
    ];
    let alerts = run(&events);
    assert_eq!(alerts.len(), 1);
    let o = alerts[0].owner.as_ref().unwrap();
    assert_eq!((o.kind.as_str(), o.name.as_str()), ("CronJob", "backup"));
    assert_eq!(alerts[0].actor.username, "ci-bot");
}

/// Owner references are the requester's words: a person who creates a pod naming an owner is still
/// reported as themselves, at the rule's level; a node's mirror pod is not a controller's.
#[test]
fn a_forged_owner_does_not_change_who_is_reported() {
    let forged = pod("p", 10, "x", "ReplicaSet", "api-7d9f8c6b5", "7d9f8c6b5")
        .replace("system:serviceaccount:kube-system:x", "mallory");
    let alerts = run(&[
        write("w", 0, "system:node:n1", "Deployment", "api", None),
        forged,
    ]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].actor.username, "mallory");
    assert_eq!(alerts[0].severity, Level::High);
    assert!(alerts[0].owner.is_none());

    let mirror = pod("m", 10, "x", "Node", "n1", "")
        .replace("system:serviceaccount:kube-system:x", "system:node:n1");
    assert!(run(&[mirror]).is_empty());
}

/// Only rules that name `kubetrail.pod.owner` treat a controller's pod as its workload's: another rule on
/// the same event sees the controller's request as it is.
#[test]
fn rules_without_the_owner_field_are_unchanged() {
    let mut set = RuleSet::new();
    set.add_file("t.yml", RULE).unwrap();
    set.add_file(
        "plain.yml",
        r#"
title: Any privileged pod
id: t-plain
level: medium
logsource: {product: kubernetes, service: audit}
detection:
  selection: {objectRef.resource: pods, verb: create, kubetrail.pod.privileged: true}
  condition: selection
"#,
    )
    .unwrap();
    let mut e = Engine::new(&set, Config::default()).unwrap();
    let mut out = Vec::new();
    for ev in [
        write("w", 0, "alice", "Deployment", "api", None),
        api_pod("p", 10),
    ] {
        e.process(&ev, &mut out).unwrap();
    }
    e.flush(&mut out);
    let by = |id: &str| out.iter().find(|a| a.rule.id == id).unwrap();
    assert_eq!(by("t-privileged").actor.username, "alice");
    let plain = by("t-plain");
    assert!(plain.actor.username.ends_with(":replicaset-controller"));
    assert_eq!(plain.severity, Level::Medium);
    assert!(plain.owner.is_none());
    assert_eq!(e.stats().controller_pods, 1);
}

fn run_from(events: &[(&str, String)]) -> Vec<Alert> {
    let mut e = engine();
    let mut out = Vec::new();
    for (cluster, ev) in events {
        e.process_from(cluster, ev, &mut out).unwrap();
    }
    e.flush(&mut out);
    out.into_iter().filter(|a| !a.update).collect()
}

/// A person's bare ReplicaSet named like another's Deployment, carrying that Deployment's hash label: its
/// pods are that person's ReplicaSet's, never covered by the Deployment's report nor blamed on its writer.
#[test]
fn a_replicaset_named_like_a_reported_deployment_is_its_writers() {
    let events = vec![
        write("w", 0, "alice", "Deployment", "api", Some(true)),
        api_pod("p1", 10),
        write("rs", 20, "mallory", "ReplicaSet", "api-x", None),
        pod(
            "p2",
            30,
            "replicaset-controller",
            "ReplicaSet",
            "api-x",
            "7d9f8c6b5",
        ),
    ];
    let alerts = run(&events);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[1].actor.username, "mallory");
    assert_eq!(alerts[1].severity, Level::High);
    let o = alerts[1].owner.as_ref().unwrap();
    assert_eq!((o.kind.as_str(), o.name.as_str()), ("ReplicaSet", "api-x"));
}

/// A template without a version label (a CronJob's Jobs): a report covers it only until the next write.
#[test]
fn a_cronjob_rewritten_after_its_report_is_reported_again() {
    let job = |id: &str, t: u32, n: u32| {
        pod(
            id,
            t,
            "job-controller",
            "Job",
            &format!("backup-{}", 29_412_340 + n),
            "",
        )
        .replace(r#""pod-template-hash":"""#, r#""job-name":"x""#)
    };
    let mut events = vec![
        write("w", 0, "ci-bot", "CronJob", "backup", Some(true)),
        job("j1", 60, 1),
    ];
    assert_eq!(
        run(&events).len(),
        1,
        "the template's own alert covers its runs"
    );
    events.push(write("w2", 100, "mallory", "CronJob", "backup", None));
    events.push(job("j2", 120, 2));
    events.push(job("j3", 180, 3));
    let alerts = run(&events);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[1].actor.username, "mallory");
}

/// The platform reconciling a workload after a person changed it does not make the change the platform's.
#[test]
fn a_platform_write_after_a_persons_does_not_hide_it() {
    let events = vec![
        write("w", 0, "alice", "Deployment", "api", None),
        write("w2", 5, "eks:addon-manager", "Deployment", "api", None),
        api_pod("p", 10),
    ];
    let alerts = run(&events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].actor.username, "alice");
}

/// What one cluster's requests taught the engine never covers another cluster's pods.
#[test]
fn workloads_are_remembered_per_cluster() {
    let alerts = run_from(&[
        (
            "dev",
            write("w", 0, "eks:addon-manager", "Deployment", "api", None),
        ),
        ("prod", write("w", 1, "mallory", "Deployment", "api", None)),
        ("dev", api_pod("p1", 10)),
        ("prod", api_pod("p2", 11)),
    ]);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].actor.username, "mallory");
    assert_eq!(alerts[0].audit_ids, ["p2"]);
}

/// A server-side dry run writes nothing: it does not make its requester the writer. A parameter merely
/// containing `dryRun=All` is a real write.
#[test]
fn dry_runs_are_not_writes() {
    let dry = |id: &str, t: u32, user: &str, query: &str| {
        write(id, t, user, "Deployment", "api", None).replace(
            r#""verb":"create""#,
            &format!(
                r#""requestURI":"/apis/apps/v1/namespaces/web/deployments{query}","verb":"create""#
            ),
        )
    };
    let events = vec![
        write("w", 0, "alice", "Deployment", "api", None),
        dry("d", 5, "eks:addon-manager", "?dryRun=All"),
        api_pod("p", 10),
    ];
    assert_eq!(run(&events)[0].actor.username, "alice");
    let events = vec![
        dry("d", 5, "mallory", "?fieldManager=dryRun=All"),
        api_pod("p", 10),
    ];
    assert_eq!(run(&events)[0].actor.username, "mallory");
    // A pair Go's query parser drops (a `;`, a bad escape) is no dry run to kube-apiserver: a real write.
    for query in ["?dryRun=All;", "?dryRun=All%zz"] {
        let events = vec![
            write("w", 0, "alice", "Deployment", "api", None),
            dry("d", 5, "mallory", query),
            api_pod("p", 10),
        ];
        assert_eq!(run(&events)[0].actor.username, "mallory", "{query}");
    }
}

/// The alert's actor says who is behind the username: an EKS session's role and session name, a bound
/// token's pod and node (from `user.extra`, as the authenticator set it).
#[test]
fn the_actor_carries_the_principal_behind_the_username() {
    let eks = write("e1", 1, "kubernetes-admin", "Deployment", "api", Some(true)).replace(
        r#""user":{"username":"kubernetes-admin"}"#,
        r#""user":{"username":"kubernetes-admin","extra":{"arn":["arn:aws:sts::111122223333:assumed-role/Admin/dana@example.com"],"canonicalArn":["arn:aws:iam::111122223333:role/Admin"],"sessionName":["dana@example.com"],"accessKeyId":["ASIAEXAMPLE"]}}"#,
    );
    let token = write("t1", 2, "system:serviceaccount:web:deployer", "Deployment", "web", Some(true)).replace(
        r#""user":{"username":"system:serviceaccount:web:deployer"}"#,
        r#""user":{"username":"system:serviceaccount:web:deployer","extra":{"authentication.kubernetes.io/pod-name":["ci-7f9c"],"authentication.kubernetes.io/node-name":["node-3"],"authentication.kubernetes.io/credential-id":["JTI=1"]}}"#,
    );
    let plain = write("p1", 3, "alice", "Deployment", "db", Some(true));
    let alerts = run(&[eks, token, plain]);
    let principal = |user: &str| {
        alerts
            .iter()
            .find(|a| a.actor.username == user)
            .unwrap_or_else(|| panic!("no alert of {user}: {alerts:?}"))
            .actor
            .principal
            .clone()
    };
    assert_eq!(
        principal("kubernetes-admin").as_deref(),
        Some("AWS role Admin (account 111122223333), session dana@example.com")
    );
    assert_eq!(
        principal("system:serviceaccount:web:deployer").as_deref(),
        Some("token of pod web/ci-7f9c on node node-3")
    );
    assert_eq!(principal("alice"), None);
    let line = serde_json::to_value(
        alerts
            .iter()
            .find(|a| a.actor.username == "kubernetes-admin")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        line["actor"]["principal"],
        "AWS role Admin (account 111122223333), session dana@example.com"
    );
}
