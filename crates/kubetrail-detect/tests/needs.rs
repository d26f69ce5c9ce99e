//! `Rule::needs`: what a rule can only match, for checking an audit policy against the rules.

use kubetrail_detect::{BodyNeed, RuleSet};

fn needs(src: &str) -> kubetrail_detect::Needs {
    let mut set = RuleSet::new();
    set.add_file("r.yml", src).unwrap();
    set.rules().next().unwrap().needs()
}

fn set(v: &[&str]) -> Option<std::collections::BTreeSet<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn resources_verbs_and_body() {
    let n = needs(
        "title: t\nid: a\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel:\n    verb: create\n    objectRef.resource: [pods, deployments]\n    kubetrail.pod.privileged: true\n  condition: sel\n",
    );
    assert_eq!(n.resources, set(&["deployments", "pods"]));
    assert_eq!(n.verbs, set(&["create"]));
    assert_eq!(n.subresources, None);
    assert_eq!(n.body, BodyNeed::Request);

    // `or` unions; `and not` keeps the positive side; a field read only under `not` still counts as read.
    let n = needs(
        "title: t\nid: b\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  exec:\n    objectRef.resource: pods\n    objectRef.subresource: exec\n  attach:\n    objectRef.resource: pods\n    objectRef.subresource: attach\n  quiet:\n    responseObject.status: x\n  condition: (exec or attach) and not quiet\n",
    );
    assert_eq!(n.resources, set(&["pods"]));
    assert_eq!(n.subresources, set(&["attach", "exec"]));
    assert_eq!(n.verbs, None, "any verb");
    assert_eq!(n.body, BodyNeed::Response);

    // Nothing required of the resource: it can match anything.
    let n = needs(
        "title: t\nid: c\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel:\n    user.username: system:anonymous\n  condition: sel\n",
    );
    assert_eq!((n.resources, n.body), (None, BodyNeed::Metadata));
}
