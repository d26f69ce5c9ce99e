//! Why a request gets the audit level it gets: the matching rule, and why each earlier rule did not match.

use kubetrail_model::{Attributes, Level, Stage};
use serde::Serialize;

use crate::policy::{Decision, Policy, StageSet};

/// The decision for one request, with the reasons behind it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub decision: Decision,
    /// The matching rule; `None` when no rule matched.
    pub matched: Option<RuleRef>,
    /// Whether an event is written at each stage, in request order.
    pub stages: Vec<StageKept>,
    /// Every rule before the matching one (all rules when none matched), with why it did not match.
    pub skipped: Vec<Skipped>,
}

/// A rule of the policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRef {
    /// 0-based.
    pub index: usize,
    /// 1-based line in the policy file (0 when unknown).
    pub line: usize,
    pub level: Level,
    /// The rule's own `omitStages` unioned with the policy's.
    pub omit_stages: StageSet,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageKept {
    pub stage: Stage,
    pub kept: bool,
}

/// A rule that did not match.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    #[serde(flatten)]
    pub rule: RuleRef,
    pub why: String,
}

/// Evaluates `a` against `policy` and records why each rule before the match was passed over.
pub fn explain(policy: &Policy, a: &Attributes<'_>) -> Explanation {
    let rule_ref = |index: usize| {
        let r = &policy.rules[index];
        RuleRef {
            index,
            line: r.line,
            level: r.level,
            omit_stages: r.omit_stages.union(policy.omit_stages),
        }
    };
    let mut skipped = Vec::new();
    let mut decision = policy.no_match();
    for (index, rule) in policy.rules.iter().enumerate() {
        match rule.mismatch(a) {
            Some(why) => skipped.push(Skipped {
                rule: rule_ref(index),
                why,
            }),
            None => {
                decision = policy.decision_for(index);
                break;
            }
        }
    }
    Explanation {
        matched: decision.rule.map(rule_ref),
        stages: Stage::ALL
            .into_iter()
            .map(|stage| StageKept {
                stage,
                kept: decision.keeps(stage),
            })
            .collect(),
        decision,
        skipped,
    }
}
