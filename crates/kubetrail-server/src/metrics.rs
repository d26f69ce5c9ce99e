//! The server's own metrics, as `prometheus-client` types registered in a [`Registry`] (see [`Metrics::register`]);
//! the `/metrics` handler encodes that one registry, into which the pipeline registers its metrics too
//! ([`crate::Ingest::register_metrics`]). Label sets are closed (known endpoints, status codes, reasons) so no
//! request can grow them.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    /// The caller's role may not do it (403).
    Forbidden,
    /// Too many failed authentications from the address (429).
    Throttled,
    /// The `Host` is not a name of this server (421).
    Misdirected,
}

impl Reason {
    const ALL: [Reason; 13] = [
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
        Reason::Forbidden,
        Reason::Throttled,
        Reason::Misdirected,
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
            Reason::Forbidden => "forbidden",
            Reason::Throttled => "throttled",
            Reason::Misdirected => "misdirected",
        }
    }
}

/// Upper bounds (seconds) of the webhook duration histogram: a group commit takes milliseconds, a stalled
/// disk seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The one endpoint whose duration is observed.
const WEBHOOK: &str = "/k8s-audit";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The server's series (names as exposed; counters get `_total` from the encoder).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    body_bytes: Counter,
    decompressed_bytes: Counter,
    events: Counter,
    skipped: Counter,
    in_flight: Gauge,
    /// Of the webhook only: registered with the constant label `endpoint="/k8s-audit"` (a constant label
    /// comes before `le`, as the series always had it).
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            rejected: Family::default(),
            body_bytes: Counter::default(),
            decompressed_bytes: Counter::default(),
            events: Counter::default(),
            skipped: Counter::default(),
            in_flight: Gauge::default(),
            duration: Histogram::new(BUCKETS),
        };
        // Every reason is shown from the start, at zero.
        for reason in Reason::ALL {
            let _ = m.rejected.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        m
    }
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
    m.requests
        .get_or_create(&RequestLabels {
            endpoint,
            code: response.status().as_u16(),
        })
        .inc();
    if endpoint == WEBHOOK {
        m.duration.observe(start.elapsed().as_secs_f64());
    }
    response
}

impl Metrics {
    /// Registers the `kubetrail_server_*` series in `registry` (which should have no prefix of its own).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubetrail_server_requests",
            "HTTP requests by endpoint and status code",
            self.requests.clone(),
        );
        registry.register(
            "kubetrail_server_rejected",
            "Webhook requests refused, by reason",
            self.rejected.clone(),
        );
        registry.register(
            "kubetrail_server_body_bytes",
            "Webhook body bytes received (as sent, before decompression)",
            self.body_bytes.clone(),
        );
        registry.register(
            "kubetrail_server_decompressed_bytes",
            "Webhook body bytes handed to the pipeline (after decompression)",
            self.decompressed_bytes.clone(),
        );
        registry.register(
            "kubetrail_server_events_accepted",
            "Events the pipeline acknowledged as durable",
            self.events.clone(),
        );
        registry.register(
            "kubetrail_server_events_skipped",
            "Values in accepted bodies that were not events",
            self.skipped.clone(),
        );
        registry.register(
            "kubetrail_server_webhook_in_flight",
            "Webhook requests being handled now",
            self.in_flight.clone(),
        );
        registry
            .sub_registry_with_label((Cow::Borrowed("endpoint"), Cow::Borrowed(WEBHOOK)))
            .register(
                "kubetrail_server_request_duration_seconds",
                "Time to answer a webhook request, durable write included",
                self.duration.clone(),
            );
    }

    pub(crate) fn rejected(&self, reason: Reason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub(crate) fn body(&self, wire: usize, decoded: usize) {
        self.body_bytes.inc_by(wire as u64);
        self.decompressed_bytes.inc_by(decoded as u64);
    }

    /// Counts what the pipeline took (its duplicates are the pipeline's own `kubetrail_events_duplicate`).
    pub(crate) fn accepted(&self, a: &crate::Accepted) {
        self.events.inc_by(a.events as u64);
        self.skipped.inc_by(a.skipped as u64);
    }

    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(self)
    }
}

/// The Prometheus text (format 0.0.4) of `registry`: prometheus-client's encoding without OpenMetrics' `# EOF`,
/// so only types that format knows may be registered (counters, gauges, histograms; no `info`).
pub(crate) fn render(registry: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, registry)
        .expect("writing to a String cannot fail");
    match s.strip_suffix("# EOF\n") {
        Some(body) => body.to_string(),
        None => s,
    }
}

/// The media type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Decrements the in-flight gauge when the request is done, however it ends.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_names_help_types_and_labels() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.requests
            .get_or_create(&RequestLabels {
                endpoint: "/k8s-audit",
                code: 200,
            })
            .inc();
        m.rejected(Reason::GzipBomb);
        m.body(100, 400);
        m.accepted(&crate::Accepted {
            events: 3,
            duplicates: 1,
            skipped: 2,
        });
        let _busy = m.in_flight();
        m.duration.observe(0.003);
        let text = render(&registry);
        for line in [
            "# HELP kubetrail_server_requests HTTP requests by endpoint and status code.",
            "# TYPE kubetrail_server_requests counter",
            "kubetrail_server_requests_total{endpoint=\"/k8s-audit\",code=\"200\"} 1",
            "# TYPE kubetrail_server_rejected counter",
            "kubetrail_server_rejected_total{reason=\"gzip_bomb\"} 1",
            "kubetrail_server_rejected_total{reason=\"read_error\"} 0",
            "kubetrail_server_body_bytes_total 100",
            "kubetrail_server_decompressed_bytes_total 400",
            "kubetrail_server_events_accepted_total 3",
            "kubetrail_server_events_skipped_total 2",
            "# TYPE kubetrail_server_webhook_in_flight gauge",
            "kubetrail_server_webhook_in_flight 1",
            "# TYPE kubetrail_server_request_duration_seconds histogram",
            "kubetrail_server_request_duration_seconds_bucket{endpoint=\"/k8s-audit\",le=\"0.0025\"} 0",
            "kubetrail_server_request_duration_seconds_bucket{endpoint=\"/k8s-audit\",le=\"0.005\"} 1",
            "kubetrail_server_request_duration_seconds_bucket{endpoint=\"/k8s-audit\",le=\"+Inf\"} 1",
            "kubetrail_server_request_duration_seconds_count{endpoint=\"/k8s-audit\"} 1",
            "kubetrail_server_request_duration_seconds_sum{endpoint=\"/k8s-audit\"} 0.003",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // Every reason is there from the start; the pipeline's duplicates are not the server's.
        let reasons = text
            .lines()
            .filter(|l| l.starts_with("kubetrail_server_rejected_total{"))
            .count();
        assert_eq!(reasons, Reason::ALL.len(), "{text}");
        assert!(!text.contains("duplicate"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        drop(_busy);
        assert!(render(&registry).contains("kubetrail_server_webhook_in_flight 0\n"));
    }

    #[test]
    fn endpoints_are_a_closed_set() {
        for (path, want) in [
            ("/k8s-audit", "/k8s-audit"),
            ("/api/v1/audit", "/k8s-audit"),
            ("/api/v1/query", "/api/v1"),
            ("/metrics", "/metrics"),
            ("/wp-admin/../etc/passwd", "other"),
            ("/", "other"),
        ] {
            assert_eq!(endpoint(path), want, "{path}");
        }
    }
}
