//! Detection over Kubernetes audit events: Sigma rules, correlation, enrichment, alerts.
//!
//! Owns the Sigma rule model and loader for `logsource: product: kubernetes, service: audit` (rules,
//! correlation rules and filters, with file:line:column errors), the compilation of rules into matchers over
//! one extraction pass per event, the `kubetrail.` enrichment fields, streaming correlation on event time,
//! one alert per request with grouping of repeats, and tuning (exceptions, filters, rule selection).
//! Does not own the built-in rule pack, reading files, or delivering alerts: the binary does.
//!
//! Pure: no IO, no async, total on any input; every piece of state is bounded and counted when a bound bites.
//!
//! # Rule language (Sigma, for `audit.k8s.io/v1` events)
//!
//! - Fields are dotted JSON paths into the event whose first segment is a top-level `Event` key
//!   ([`fields::EVENT_FIELDS`]), or an enrichment field ([`enrich::FIELDS`]); anything else fails to load.
//!   Arrays on the way match if any element matches; a key containing dots (annotations) is addressed as if
//!   nested (`annotations.authorization.k8s.io/decision`). SigmaHQ's non-path names `apiGroup`, `hostPath`
//!   and `capabilities` are mapped ([`fields::SIGMA_ALIASES`]) so their rules load unmodified.
//! - Values: strings match case-insensitively with `*`/`?` wildcards (`\*`, `\?`, `\\` escape); numbers
//!   also match numerically (`403` = `'403'`); `null` matches an absent or null field; lists are OR.
//! - Modifiers: `contains`, `startswith`, `endswith`, `all`, `cased`, `re` (case-sensitive; `re|i`, `re|m`,
//!   `re|s`), `cidr` (IPv4 and IPv6), `exists`, `gt`/`gte`/`lt`/`lte`, `fieldref`. The Windows encodings
//!   (`base64`, `wide`, `windash`, ...) and unknown modifiers fail to load.
//! - Selections: maps (AND), lists of maps (OR), keyword lists (matched anywhere in the event's JSON text).
//!   Conditions: `and`, `or`, `not`, parentheses, `N of pattern*`, `all of pattern*`, `1 of them`,
//!   `all of them` (`them` skips names starting with `_`).
//! - Correlation rules (`event_count`, `value_count`, `temporal`, `temporal_ordered`; `group-by`,
//!   `timespan`, `condition`, `aliases`, `generate`) and Sigma filters (`filter: rules:` + selections and a
//!   condition ANDed to the named rules) may sit in the same files (YAML documents separated by `---`).
//! - Event time is `requestReceivedTimestamp`, else `stageTimestamp` (else v1beta1 `timestamp`).
//!
//! ```
//! use kubetrail_detect::{Config, Engine, RuleSet};
//!
//! let mut rules = RuleSet::new();
//! rules.add_file("secrets.yml", r#"
//! title: Secrets listed
//! id: kt-secrets-list
//! level: medium
//! logsource: {product: kubernetes, service: audit}
//! detection:
//!   selection: {verb: list, objectRef.resource: secrets}
//!   condition: selection
//! "#).expect("the rule loads");
//! let mut engine = Engine::new(&rules, Config::default()).expect("the rules link");
//! let mut alerts = Vec::new();
//! for line in [r#"{"auditID":"1","verb":"list","objectRef":{"resource":"secrets"},"user":{"username":"eve"}}"#] {
//!     engine.process(line, &mut alerts).expect("valid JSON");
//! }
//! engine.flush(&mut alerts);
//! assert_eq!(alerts[0].actor.username, "eve");
//! ```

mod alert;
mod correlation;
mod detection;
mod engine;
pub mod enrich;
mod error;
pub mod fields;
mod owner;
mod rule;
mod ruleset;
pub mod triage;
pub mod tuning;
mod value;
pub mod watch;
mod yaml;

pub use alert::{Actor, Alert, AlertRule, MAX_AUDIT_IDS, MAX_SOURCE_IPS, Target};
pub use engine::{Config, Engine, EngineError, HEALTH_PATHS, Stats};
pub use enrich::IdentityClass;
pub use error::{EventError, LoadError, LoadErrors};
pub use owner::Owner;
pub use rule::{
    BodyNeed, Compare, Correlation, CorrelationKind, Document, Filter, Level, Location, Logsource,
    Needs, Rule, RuleMeta, parse_file,
};
pub use ruleset::RuleSet;
pub use tuning::{Exception, Selection, Text};
