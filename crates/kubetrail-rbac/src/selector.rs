//! Label selectors of a ClusterRole's `aggregationRule.clusterRoleSelectors`, as
//! k8s.io/apimachinery `metav1.LabelSelectorAsSelector` reads them: `matchLabels` (each an equality) and
//! `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`. An empty (or null) selector matches every
//! ClusterRole; `In`/`NotIn` without values, `Exists`/`DoesNotExist` with values and unknown operators are
//! refused (the aggregation controller then leaves the role's rules as they are).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::MAX_LABELS;

/// One parsed selector: all its requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// The operators, as data: `(name in the API, needs values)`.
const OPS: [(&str, Op, bool); 4] = [
    ("In", Op::In, true),
    ("NotIn", Op::NotIn, true),
    ("Exists", Op::Exists, false),
    ("DoesNotExist", Op::DoesNotExist, false),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Selector {
    /// A selector from its JSON, or why the apiserver would refuse it.
    pub fn parse(v: &Value) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        if v.is_null() {
            return Ok(Selector { requirements });
        }
        let Some(m) = v.as_object() else {
            return Err("a label selector is an object".to_string());
        };
        if let Some(labels) = m.get("matchLabels").filter(|l| !l.is_null()) {
            let Some(labels) = labels.as_object() else {
                return Err("matchLabels is not a map".to_string());
            };
            for (k, v) in labels.iter().take(MAX_LABELS) {
                let Some(v) = v.as_str() else {
                    return Err(format!("matchLabels[{k}] is not a string"));
                };
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::In,
                    values: vec![v.to_string()],
                });
            }
        }
        if let Some(exprs) = m.get("matchExpressions").filter(|e| !e.is_null()) {
            let Some(exprs) = exprs.as_array() else {
                return Err("matchExpressions is not a list".to_string());
            };
            for (i, e) in exprs.iter().take(MAX_LABELS).enumerate() {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                let op_name = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .take(MAX_LABELS)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let Some(&(_, op, needs_values)) = OPS.iter().find(|(n, ..)| *n == op_name) else {
                    return Err(format!(
                        "matchExpressions[{i}]: {op_name:?} is not a valid label selector operator"
                    ));
                };
                if needs_values == values.is_empty() {
                    let want = if needs_values { "must" } else { "must not" };
                    return Err(format!(
                        "matchExpressions[{i}]: for '{op_name}' the values set {want} be non-empty"
                    ));
                }
                requirements.push(Requirement {
                    key: key.to_string(),
                    op,
                    values,
                });
            }
        }
        Ok(Selector { requirements })
    }

    /// Whether a role with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match r.op {
                Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }
}
