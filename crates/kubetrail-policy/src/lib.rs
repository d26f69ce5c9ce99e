//! kube-apiserver's AuditPolicy, with exactly its semantics.
//!
//! Owns loading (YAML with line numbers; unknown and misplaced fields dropped with a warning, as the apiserver
//! does), validation, evaluation (first matching rule wins), and the tools built on them: lint, simulate,
//! generate, explain, and `observed` (the policy a cluster applied, read back from what it recorded). Pure:
//! no IO, no async; evaluation never fails.

mod coverage;
mod diagnostic;
mod evaluate;
mod explain;
mod generate;
mod lint;
mod load;
pub mod observed;
mod policy;
mod redact;
mod simulate;
mod validate;

pub use coverage::{RuleNeeds, coverage};
pub use diagnostic::{Diagnostic, Severity};
pub use explain::{Explanation, RuleRef, Skipped, StageKept, explain};
pub use generate::{GenerateOptions, generate};
pub use lint::{Finding, lint};
pub use load::{API_VERSION, Loaded, load};
pub use policy::{Decision, GroupResources, Policy, Rule, StageSet};
pub use redact::{
    Redacted, RedactionConfig, RedactionCounts, RedactionKey, Redactor, keyless_digest,
};
pub use simulate::{
    Comparison, EventRow, Grain, LevelChange, MAX_GROUPS, NOISY_SHARE, NoisyGroup, Report,
    RuleTarget, RuleVolume, RuleWho, Simulator, none_rule,
};
pub use validate::validate;
