//! The server's own counters, rendered in Prometheus text exposition format. Label sets are closed (known
//! endpoints, reasons) so no request can grow them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Why a webhook request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Unauthenticated,
    TooLarge,
    GzipBomb,
    BadGzip,
    UnsupportedMediaType,
    Malformed,
    Overloaded,
    Unavailable,
    /// The body did not arrive in time.
    Timeout,
    /// The connection failed while the body was read.
    ReadError,
}

impl Reason {
    const ALL: [Reason; 10] = [
        Reason::Unauthenticated,
        Reason::TooLarge,
        Reason::GzipBomb,
        Reason::BadGzip,
        Reason::UnsupportedMediaType,
        Reason::Malformed,
        Reason::Overloaded,
        Reason::Unavailable,
        Reason::Timeout,
        Reason::ReadError,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Unauthenticated => "unauthenticated",
            Reason::TooLarge => "too_large",
            Reason::GzipBomb => "gzip_bomb",
            Reason::BadGzip => "bad_gzip",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::Malformed => "malformed",
            Reason::Overloaded => "overloaded",
            Reason::Unavailable => "unavailable",
            Reason::Timeout => "timeout",
            Reason::ReadError => "read_error",
        }
    }
}

/// Upper bounds (seconds) of the webhook duration histogram: a group commit takes milliseconds, a stalled
/// disk seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    rejected: [AtomicU64; Reason::ALL.len()],
    body_bytes: AtomicU64,
    decompressed_bytes: AtomicU64,
    events: AtomicU64,
    duplicates: AtomicU64,
    skipped: AtomicU64,
    in_flight: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
}

/// The `endpoint` label of a path; anything unknown is `other`.
fn endpoint(path: &str) -> &'static str {
    match path {
        "/k8s-audit" | "/api/v1/audit" => "/k8s-audit",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        p if p.starts_with("/api/v1/") => "/api/v1",
        _ => "other",
    }
}

/// Middleware: counts every request by endpoint and status, times the webhook.
pub(crate) async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let endpoint = endpoint(req.uri().path());
    let start = Instant::now();
    let response = next.run(req).await;
    m.request(endpoint, response.status().as_u16());
    if endpoint == "/k8s-audit" {
        m.observe(start.elapsed().as_secs_f64());
    }
    response
}

impl Metrics {
    fn request(&self, endpoint: &'static str, code: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((endpoint, code)).or_default() += 1;
    }

    fn observe(&self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.duration_count.fetch_add(1, Relaxed);
        self.duration_sum_micros
            .fetch_add((secs * 1e6) as u64, Relaxed);
    }

    pub(crate) fn rejected(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|&r| r == reason).unwrap_or(0);
        self.rejected[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn body(&self, wire: usize, decoded: usize) {
        self.body_bytes.fetch_add(wire as u64, Relaxed);
        self.decompressed_bytes.fetch_add(decoded as u64, Relaxed);
    }

    pub(crate) fn accepted(&self, a: &crate::Accepted) {
        self.events.fetch_add(a.events as u64, Relaxed);
        self.duplicates.fetch_add(a.duplicates as u64, Relaxed);
        self.skipped.fetch_add(a.skipped as u64, Relaxed);
    }

    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let o = &mut out;
        head(
            o,
            "kubetrail_server_requests_total",
            "counter",
            "HTTP requests by endpoint and status code.",
        );
        for ((endpoint, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "kubetrail_server_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}} {n}"
            );
        }
        head(
            o,
            "kubetrail_server_rejected_total",
            "counter",
            "Webhook requests refused, by reason.",
        );
        for (reason, n) in Reason::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                o,
                "kubetrail_server_rejected_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                n.load(Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "kubetrail_server_body_bytes_total",
                "Webhook body bytes received (as sent, before decompression).",
                &self.body_bytes,
            ),
            (
                "kubetrail_server_decompressed_bytes_total",
                "Webhook body bytes handed to the pipeline (after decompression).",
                &self.decompressed_bytes,
            ),
            (
                "kubetrail_server_events_accepted_total",
                "Events the pipeline acknowledged as durable.",
                &self.events,
            ),
            (
                "kubetrail_server_events_duplicate_total",
                "Events acknowledged as already stored.",
                &self.duplicates,
            ),
            (
                "kubetrail_server_events_skipped_total",
                "Values in accepted bodies that were not events.",
                &self.skipped,
            ),
        ] {
            head(o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", v.load(Relaxed));
        }
        head(
            o,
            "kubetrail_server_webhook_in_flight",
            "gauge",
            "Webhook requests being handled now.",
        );
        let _ = writeln!(
            o,
            "kubetrail_server_webhook_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        let name = "kubetrail_server_request_duration_seconds";
        head(
            o,
            name,
            "histogram",
            "Time to answer a webhook request, durable write included.",
        );
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                o,
                "{name}_bucket{{endpoint=\"/k8s-audit\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.duration_count.load(Relaxed);
        let _ = writeln!(
            o,
            "{name}_bucket{{endpoint=\"/k8s-audit\",le=\"+Inf\"}} {count}"
        );
        let sum = self.duration_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "{name}_sum{{endpoint=\"/k8s-audit\"}} {sum}");
        let _ = writeln!(o, "{name}_count{{endpoint=\"/k8s-audit\"}} {count}");
        out
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Decrements the in-flight gauge when the request is done, however it ends.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}
