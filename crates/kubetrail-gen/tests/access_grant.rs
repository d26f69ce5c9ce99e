//! The access-grant scenario: an EKS administrator binds a contractor to a Role reading prod secrets, the
//! contractor reads them, the binding is widened to a group, an unrelated ClusterRole changes unlogged, the
//! binding is revoked and the contractor's next read refused.

use kubetrail_gen::{Config, Generator, access_grant as ag};
use serde_json::Value;

struct Line {
    v: Value,
    attack: bool,
}

impl Line {
    fn at(&self) -> jiff::Timestamp {
        self.v["stageTimestamp"].as_str().unwrap().parse().unwrap()
    }
}

/// The scenario's lines (checking on the way that all lines are in time order) and the line count.
fn generate(stages: bool, seed: u64) -> Vec<Line> {
    let mut g = Generator::new(Config {
        rate: 2.0,
        attacks: true,
        stages,
        seed,
        ..Config::default()
    });
    let mut last = String::new();
    let mut out = Vec::new();
    for _ in 0..50_000 {
        let raw = g.next().unwrap();
        let at = raw.find(r#""stageTimestamp":""#).unwrap() + 18;
        let ts = raw[at..at + 27].to_string();
        assert!(last <= ts, "{ts} after {last}");
        last = ts;
        if raw.contains(ag::CONTRACTOR)
            || raw.contains(ag::ADMIN_USER)
            || raw.contains(&format!(r#""name":"{}""#, ag::METADATA_ONLY_ROLE))
        {
            out.push(Line {
                v: serde_json::from_str(&raw).unwrap(),
                attack: g.last_was_attack(),
            });
        }
    }
    out
}

fn step(l: &Line) -> String {
    let o = &l.v["objectRef"];
    format!(
        "{} {} {}/{} {}",
        l.v["user"]["username"].as_str().unwrap(),
        l.v["verb"].as_str().unwrap(),
        o["resource"].as_str().unwrap(),
        o["name"].as_str().unwrap_or(""),
        l.v["responseStatus"]["code"],
    )
}

#[test]
fn grant_use_widen_revoke_refuse() {
    let lines = generate(false, 1);
    let run = &lines[..10];
    let want = [
        format!("{} create roles/{} 201", ag::ADMIN_USER, ag::ROLE),
        format!("{} create rolebindings/{} 201", ag::ADMIN_USER, ag::BINDING),
        format!("{} list secrets/ 200", ag::CONTRACTOR),
        format!("{} get secrets/{} 200", ag::CONTRACTOR, ag::SECRETS[0]),
        format!("{} get secrets/{} 200", ag::CONTRACTOR, ag::SECRETS[1]),
        format!(
            "{} patch clusterroles/{} 200",
            ag::GITOPS_USER,
            ag::METADATA_ONLY_ROLE
        ),
        format!("{} patch rolebindings/{} 200", ag::ADMIN_USER, ag::BINDING),
        format!("{} get secrets/{} 200", ag::CONTRACTOR, ag::SECRETS[0]),
        format!("{} delete rolebindings/{} 200", ag::ADMIN_USER, ag::BINDING),
        format!("{} get secrets/{} 403", ag::CONTRACTOR, ag::SECRETS[0]),
    ];
    assert_eq!(run.iter().map(step).collect::<Vec<_>>(), want);
    // More runs follow, one at a time.
    assert!(
        lines.len() >= 20 && lines.len().is_multiple_of(10),
        "{}",
        lines.len()
    );
    assert_eq!(
        lines[10..].iter().map(step).take(10).collect::<Vec<_>>(),
        want
    );

    // Gaps as documented (minutes).
    let gap = |i: usize| run[i].at().duration_since(run[i - 1].at()).as_secs_f64() / 60.0;
    for (i, lo, hi) in [
        (1, 0.08, 0.7),
        (2, 3.0, 20.1),
        (5, 5.0, 21.0),
        (6, 5.0, 15.1),
        (7, 2.0, 10.1),
        (8, 10.0, 30.1),
        (9, 1.0, 10.1),
    ] {
        assert!((lo..hi).contains(&gap(i)), "step {i}: {} min", gap(i));
    }

    for l in run {
        let user = &l.v["user"];
        let reason = l.v["annotations"]["authorization.k8s.io/reason"]
            .as_str()
            .unwrap();
        let rbac_write = l.v["objectRef"]["apiGroup"] == "rbac.authorization.k8s.io";
        if user["username"] == ag::ADMIN_USER {
            assert!(!l.attack);
            assert_eq!(reason, ag::ADMIN_REASON);
            assert_eq!(l.v["sourceIPs"][0], ag::ADMIN_IP);
            assert!(l.v["userAgent"].as_str().unwrap().starts_with("kubectl/"));
            assert_eq!(user["groups"][0], ag::ADMIN_GROUP);
            assert_eq!(
                user["uid"],
                format!("aws-iam-authenticator:111122223333:{}", ag::ADMIN_ROLE_ID)
            );
            let extra = &user["extra"];
            assert!(
                extra["accessKeyId"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("ASIA")
            );
            assert_eq!(extra["arn"][0], ag::ADMIN_USER);
            assert_eq!(extra["canonicalArn"][0], ag::ADMIN_ROLE_ARN);
            assert_eq!(extra["sessionName"][0], ag::ADMIN_SESSION);
            assert_eq!(
                extra["principalId"][0],
                format!("{}:{}", ag::ADMIN_ROLE_ID, ag::ADMIN_SESSION)
            );
            // RBAC writes carry the request and the stored object.
            assert!(rbac_write);
            assert_eq!(l.v["level"], "RequestResponse");
            assert!(l.v["requestObject"].is_object() && l.v["responseObject"].is_object());
        } else if user["username"] == ag::CONTRACTOR {
            assert!(l.attack);
            assert_eq!(l.v["sourceIPs"][0], ag::CONTRACTOR_IP);
            assert_eq!(user["groups"][0], ag::CONTRACTOR_GROUP);
            if l.v["responseStatus"]["code"] == 403 {
                assert_eq!(
                    l.v["annotations"]["authorization.k8s.io/decision"],
                    "forbid"
                );
                assert_eq!(reason, "");
            } else {
                assert_eq!(reason, ag::CONTRACTOR_REASON);
            }
        } else {
            assert!(!l.attack);
            assert_eq!(l.v["level"], "Metadata");
            assert!(l.v.get("requestObject").is_none());
            assert!(reason.contains("argocd-application-controller"), "{reason}");
        }
    }
    let role = &run[0].v["responseObject"];
    assert_eq!(role["kind"], "Role");
    assert_eq!(role["metadata"]["namespace"], ag::NAMESPACE);
    assert_eq!(role["rules"][0]["resources"][0], "secrets");
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    let binding = &run[1].v["requestObject"];
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], ag::ROLE);
    assert_eq!(binding["subjects"][0]["kind"], "User");
    assert_eq!(binding["subjects"][0]["name"], ag::CONTRACTOR);
    let widened = &run[6].v;
    assert_eq!(
        widened["requestObject"]["subjects"][1]["name"],
        ag::CONTRACTOR_GROUP
    );
    assert_eq!(widened["responseObject"]["subjects"][1]["kind"], "Group");
    assert_eq!(
        widened["responseObject"]["metadata"]["uid"],
        run[1].v["responseObject"]["metadata"]["uid"]
    );
    assert_eq!(run[8].v["responseObject"]["status"], "Success");
}

#[test]
fn with_stages_each_request_is_received_then_completed() {
    let lines = generate(true, 3);
    assert!(lines.len() >= 20, "{}", lines.len());
    let mut open = std::collections::BTreeMap::new();
    for l in &lines {
        let id = l.v["auditID"].as_str().unwrap().to_string();
        match l.v["stage"].as_str().unwrap() {
            "RequestReceived" => assert!(open.insert(id, l.at()).is_none()),
            "ResponseComplete" => {
                let received = open.remove(&id);
                assert!(received.is_some_and(|t| t <= l.at()), "{}", l.v);
            }
            s => panic!("{s}"),
        }
    }
    assert!(open.len() <= 1, "{open:?}");
}
