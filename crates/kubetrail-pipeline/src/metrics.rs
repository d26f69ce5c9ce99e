//! The pipeline's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Every counter of the pipeline; cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub received: Family<SourceLabel, Counter>,
    pub persisted: Counter,
    pub persisted_bytes: Counter,
    pub duplicates: Counter,
    pub truncated: Counter,
    pub reused_ids: Counter,
    pub filtered: Counter,
    pub skipped: Family<ReasonLabel, Counter>,
    pub rejected_batches: Family<ReasonLabel, Counter>,
    pub redactions: Family<KindLabel, Counter>,
    pub append_seconds: Histogram,
    pub inflight_bytes: Gauge,
    pub wal_bytes: Gauge,
    pub wal_budget_bytes: Gauge,
    /// 1 while the log cannot write (a failed write or fsync, such as a full disk), until it heals.
    pub wal_failing: Gauge,
    pub file_lag_bytes: Family<PathLabel, Gauge>,
    /// Stored events that live detection could not read or evaluate, by reason (`record`, `event`).
    pub detection_unreadable: Family<ReasonLabel, Counter>,
    /// Events live detection evaluated.
    pub detection_events: Counter,
    /// Alerts live detection wrote, by kind (`new`, `update`).
    pub detection_alerts: Family<KindLabel, Counter>,
    /// Streaming state forgotten early because a bound bit, by state (`requests`, `groups`,
    /// `correlation_keys`, `workloads`): alerts may have been missed or split.
    pub detection_evictions: Family<StateLabel, Counter>,
    /// Rule matches on pods the control plane made for a workload, by outcome (`reported`, `covered`,
    /// `platform`).
    pub detection_controller_pods: Family<OutcomeLabel, Counter>,
    /// Approximate bytes of the detection engine's streaming state.
    pub detection_state_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubetrail");
        let m = Metrics {
            received: Family::default(),
            persisted: Counter::default(),
            persisted_bytes: Counter::default(),
            duplicates: Counter::default(),
            truncated: Counter::default(),
            reused_ids: Counter::default(),
            filtered: Counter::default(),
            skipped: Family::default(),
            rejected_batches: Family::default(),
            redactions: Family::default(),
            // 100 us .. ~1.6 s: fsync on a good disk is under a millisecond, on a bad one hundreds.
            append_seconds: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
            inflight_bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            wal_budget_bytes: Gauge::default(),
            wal_failing: Gauge::default(),
            file_lag_bytes: Family::default(),
            detection_unreadable: Family::default(),
            detection_events: Counter::default(),
            detection_alerts: Family::default(),
            detection_evictions: Family::default(),
            detection_controller_pods: Family::default(),
            detection_state_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        // Both kinds from the start: a dashboard shows no alerts as 0, not as no data.
        for kind in ["new", "update"] {
            let _ = m
                .detection_alerts
                .get_or_create(&KindLabel { kind: kind.into() });
        }
        m.register(&mut registry);
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Registers every series in `registry` (whose prefix should be `kubetrail`): the collector renders the
    /// pipeline's series with everyone else's from one registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_received",
            "Audit events decoded from a source",
            self.received.clone(),
        );
        registry.register(
            "events_persisted",
            "Audit events durably written to the log",
            self.persisted.clone(),
        );
        registry.register(
            "persisted_bytes",
            "Bytes of records durably written to the log",
            self.persisted_bytes.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events stored once already (same cluster, auditID, stage and content: a retry)",
            self.duplicates.clone(),
        );
        registry.register(
            "events_truncated",
            "Events stored cut to fit the log's record limit (bodies dropped, or metadata only)",
            self.truncated.clone(),
        );
        registry.register(
            "events_audit_id_reused",
            "Events stored whose cluster, auditID and stage an earlier event with other content had",
            self.reused_ids.clone(),
        );
        registry.register(
            "events_filtered",
            "Events dropped by the second-stage filter policy",
            self.filtered.clone(),
        );
        registry.register(
            "values_skipped",
            "Input values that held no readable event, by reason",
            self.skipped.clone(),
        );
        registry.register(
            "batches_rejected",
            "Batches refused with backpressure, by reason",
            self.rejected_batches.clone(),
        );
        registry.register(
            "redactions",
            "Values redacted before storage, by kind",
            self.redactions.clone(),
        );
        registry.register(
            "wal_append_seconds",
            "Time to write and fsync a batch",
            self.append_seconds.clone(),
        );
        registry.register(
            "inflight_bytes",
            "Bytes of batches being processed (the queue depth)",
            self.inflight_bytes.clone(),
        );
        registry.register(
            "wal_bytes",
            "Bytes of write-ahead log segments on disk",
            self.wal_bytes.clone(),
        );
        registry.register(
            "wal_budget_bytes",
            "Disk budget of the write-ahead log",
            self.wal_budget_bytes.clone(),
        );
        registry.register(
            "wal_failing",
            "1 while the write-ahead log cannot write (a failed write or fsync, such as a full disk): batches \
             are answered 503 until it heals",
            self.wal_failing.clone(),
        );
        registry.register(
            "file_lag_bytes",
            "Bytes of audit log files not yet read",
            self.file_lag_bytes.clone(),
        );
        registry.register(
            "detection_events_unreadable",
            "Stored events live detection could not read (record) or evaluate (event): they raised no alert",
            self.detection_unreadable.clone(),
        );
        registry.register(
            "detection_events",
            "Stored events live detection evaluated",
            self.detection_events.clone(),
        );
        registry.register(
            "detection_alerts",
            "Alerts live detection wrote, by kind (new, update of a grouped alert)",
            self.detection_alerts.clone(),
        );
        registry.register(
            "detection_evictions",
            "Detection state forgotten early (or not learned) because its bound was reached, by state (requests, groups, \
             correlation_keys, workloads, stream_sources, stream_kinds): alerts may have been missed or split",
            self.detection_evictions.clone(),
        );
        registry.register(
            "detection_controller_pods",
            "Rule matches on pods the control plane made for a workload, by outcome: reported; covered (the \
             template was already reported, or only the platform wrote it); platform (the store named the \
             platform as its writer, the alert was dropped)",
            self.detection_controller_pods.clone(),
        );
        registry.register(
            "detection_state_bytes",
            "Approximate bytes of live detection's streaming state",
            self.detection_state_bytes.clone(),
        );
    }

    /// Prometheus text exposition format, without the trailing `# EOF` (the server appends its own metrics).
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        match s.strip_suffix("# EOF\n") {
            Some(body) => body.to_string(),
            None => s,
        }
    }

    pub fn skipped(&self, reason: &str) -> Counter {
        self.skipped
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .clone()
    }

    pub fn rejected(&self, reason: &str) -> Counter {
        self.rejected_batches
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .clone()
    }
}
