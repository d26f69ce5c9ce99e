//! Sources and the ingest pipeline: decode -> filter -> stamp -> cut to the record limit -> redact ->
//! deduplicate -> write-ahead log (the order `ingest.rs` runs them in).
//!
//! Owns turning received bytes (a webhook body, lines of an audit log file, an imported file) into durable
//! [`EventRecord`](kubetrail_store::EventRecord)s: one decoded event flows through every stage without being
//! parsed again; redaction happens before the first byte reaches disk; a batch is acknowledged only once the
//! log has fsynced it; duplicates (same cluster, auditID, stage and content: apiserver retries) are stored
//! once, while a reused auditID with other content is stored and marked; an event over the log's record
//! limit is stored cut, never refused with its neighbours; overload and
//! a full disk budget are answered with backpressure, never silent loss. Does not own the HTTP listener
//! (`kubetrail-server`) nor what reads the log afterwards.

mod dedup;
pub mod file;
mod ingest;
pub mod keys;
mod metrics;
pub mod shape;

/// Label types of the pipeline metrics, for sources that report their own (file lag).
pub mod metrics_labels {
    pub use crate::metrics::{
        KindLabel, OutcomeLabel, PathLabel, ReasonLabel, SourceLabel, StateLabel,
    };
}

pub use ingest::{
    Batch, BatchOutcome, InflightGuard, IngestError, KEPT_SKIPS, MAX_EVENT_BYTES, Pipeline,
    PipelineConfig, SkippedValue,
};
pub use metrics::Metrics;
