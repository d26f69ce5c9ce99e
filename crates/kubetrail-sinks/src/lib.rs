//! The wire protocols of the sinks that ship audit events off the node: ClickHouse, S3 with Object Lock,
//! Elasticsearch/OpenSearch, Splunk HEC and syslog (RFC 5424, optionally CEF).
//!
//! This crate owns one thing per destination: turning a batch of [`Record`]s into requests and the answers into
//! an [`Outcome`] (what was delivered, what to retry, what can never be delivered). It does not own cursors,
//! batching, backoff, the dead-letter queue, configuration files or metrics: `kubetrail-runtime`'s delivery
//! engine does, and a sink never retries on its own (`DESIGN.md`: the pipeline owns retries).
//!
//! The batch sinks ([`clickhouse::ClickHouse`], [`elasticsearch::Elasticsearch`], [`splunk::Splunk`],
//! [`syslog::Syslog`]) have one shape: `new(config)` only validates and reads files (CA certificates), then
//! `prepare().await` once before the first batch (create tables, install a template), then per batch:
//!
//! ```text
//! match sink.send(&batch).await {
//!     Outcome::Delivered => advance the cursor past the batch,
//!     Outcome::Retry { after, reason } => back off (at least `after`, capped), send the same batch again,
//!     Outcome::Partial { retry, dead } => dead-letter `dead`, send `retry` again, the rest is delivered,
//!     Outcome::Dead { reason } => dead-letter the whole batch,
//! }
//! ```
//!
//! [`s3::S3`] is a client, not a batch sink: the archive decides what to upload and calls it. [`ocsf`] is a
//! format, not a sink: audit events as OCSF API Activity Parquet for the archive's Security Lake layout (its
//! modules by concern: `record` the OCSF record, `mapping` event to record, `schema` the fixed Parquet schema,
//! `columns` records to a batch).
//! Credentials never appear in an error, an [`Outcome`] reason or `Debug` output ([`Secret`]).

#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

pub mod clickhouse;
pub mod elasticsearch;
mod fields;
pub mod http;
pub mod ocsf;
pub mod s3;
pub mod splunk;
pub mod syslog;
pub mod tls;

/// One event to ship: the redacted audit event JSON and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Deterministic across re-sends and replicas: `<auditID>-<stage>-<content digest>` (the runtime makes
    /// it). Targets that can deduplicate do it on this.
    pub id: &'a str,
    /// The cluster the event came from.
    pub cluster: &'a str,
    /// When kubetrail received the event, in microseconds since the Unix epoch.
    pub received_us: i64,
    /// The audit event, one JSON object.
    pub event: &'a str,
}

/// What happened to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record is stored.
    Delivered,
    /// Nothing (or nothing known) is stored and nothing is wrong with the records: send the whole batch again,
    /// not before `after` if the server said so (`Retry-After`, uncapped: the caller caps it).
    Retry {
        /// The server's `Retry-After`, if it gave one.
        after: Option<Duration>,
        /// Why, for logs and `sinks status`; never holds a credential.
        reason: String,
    },
    /// Some records are stored, some must be sent again (`retry`), some never can be (`dead`, with the
    /// reason: send them to the dead-letter queue). Indices are into the batch; an index in neither list was
    /// delivered.
    Partial {
        /// Records to send again.
        retry: Vec<usize>,
        /// Records the target refused for what they are, with the reason.
        dead: Vec<(usize, String)>,
    },
    /// The whole batch can never be delivered as it is (the target refused it for what it is, for example a
    /// 400 with a parse error it does not attribute to one record).
    Dead {
        /// The target's answer, shortened.
        reason: String,
    },
}

impl Outcome {
    /// `Retry` without a server-given delay.
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    /// Normalises a per-record result: nothing to retry or dead-letter is `Delivered`, everything to retry is
    /// `Retry`, everything dead is `Dead` with the first reason only when all reasons are the same.
    pub(crate) fn from_parts(
        len: usize,
        mut retry: Vec<usize>,
        mut dead: Vec<(usize, String)>,
        retry_reason: impl FnOnce() -> String,
        after: Option<Duration>,
    ) -> Outcome {
        retry.sort_unstable();
        retry.dedup();
        dead.sort_by_key(|d| d.0);
        if retry.is_empty() && dead.is_empty() {
            Outcome::Delivered
        } else if dead.is_empty() && retry.len() == len {
            Outcome::Retry {
                after,
                reason: retry_reason(),
            }
        } else {
            Outcome::Partial { retry, dead }
        }
    }
}

/// A configuration or setup error (`new`, `prepare`), or a failed call of the S3 client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (bad URL, bad name, unreadable CA file, no credentials).
    #[error("{0}")]
    Config(String),
    /// The target could not be reached or did not answer in time: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The target answered with an error.
    #[error("{target} answered HTTP {status}: {message}")]
    Http {
        /// Which target (host and port, never credentials).
        target: String,
        /// The HTTP status.
        status: u16,
        /// The target's error, shortened.
        message: String,
    },
}

/// A credential (password, token, secret key): shown as `***` by `Debug` and `Display`, so it never reaches a
/// log or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// At most `n` characters of `s` (on a character boundary), with `…` when cut: reasons stay short.
pub(crate) fn shorten(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn outcome_from_parts() {
        let r = || "busy".to_string();
        assert_eq!(
            Outcome::from_parts(2, vec![], vec![], r, None),
            Outcome::Delivered
        );
        assert_eq!(
            Outcome::from_parts(2, vec![1, 0], vec![], r, None),
            Outcome::retry("busy")
        );
        assert_eq!(
            Outcome::from_parts(3, vec![2], vec![(0, "bad".into())], r, None),
            Outcome::Partial {
                retry: vec![2],
                dead: vec![(0, "bad".into())]
            }
        );
    }

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten(" ok ", 10), "ok");
    }
}
