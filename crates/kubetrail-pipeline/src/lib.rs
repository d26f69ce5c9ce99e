//! Sources and the ingest pipeline: decode -> stamp -> redact -> filter -> deduplicate -> write-ahead log.
//!
//! Owns turning received bytes (a webhook body, lines of an audit log file, an imported file) into durable
//! [`EventRecord`](kubetrail_store::EventRecord)s: one decoded event flows through every stage without being
//! parsed again; redaction happens before the first byte reaches disk; a batch is acknowledged only once the
//! log has fsynced it; duplicates (same cluster, auditID and stage, from apiserver retries) are stored once; overload and
//! a full disk budget are answered with backpressure, never silent loss. Does not own the HTTP listener
//! (`kubetrail-server`) nor what reads the log afterwards.

mod dedup;
pub mod file;
mod ingest;
mod metrics;

/// Label types of the pipeline metrics, for sources that report their own (file lag).
pub mod metrics_labels {
    pub use crate::metrics::{KindLabel, PathLabel, ReasonLabel, SourceLabel};
}

pub use ingest::{
    Batch, BatchOutcome, InflightGuard, IngestError, KEPT_SKIPS, Pipeline, PipelineConfig,
    SkippedValue,
};
pub use metrics::Metrics;
