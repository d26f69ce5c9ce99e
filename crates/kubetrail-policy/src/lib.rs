//! kube-apiserver's AuditPolicy, with exactly its semantics.
//!
//! Owns loading (YAML with line numbers; unknown and misplaced fields dropped with a warning, as the apiserver
//! does), validation, evaluation (first matching rule wins), and the tools built on them: lint, simulate,
//! generate and explain. Pure: no IO, no async; evaluation never fails.
