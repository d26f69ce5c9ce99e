//! kubetrail's runtime: the services `kubetrail serve` runs and the commands share, as a library. The binary
//! (`crates/kubetrail`) keeps only clap definitions, argument resolution and printing.
//!
//! Modules, lowest first (a module uses only those above it in this list; `tests/layers.rs` checks it):
//! - [`text`], [`duration`]: CSV fields, shell words, the one time and duration grammar.
//! - [`logging`]: the process's log subscriber, log-safe escaping.
//! - [`data`], [`integrity_key`]: the data directory (resolution, the writer lock, the log, the redaction key)
//!   and the signing key of checkpoints.
//! - [`input`]: audit files read the same way by import, detect and policy simulate.
//! - [`delivery`]: the one delivery engine: a durable queue, a destination, backoff, Retry-After, dead
//!   letters, replay and metrics, for alerts and sinks alike.
//! - [`alerting`]: the alert store and analyst workflow, suppressions, rule loading, live detection, and the
//!   alert destinations (webhook, Alertmanager, PagerDuty, Slack) over the delivery engine.
//! - [`shipping`]: the sinks over the delivery engine, the S3 archive, the `sinks:` section.
//! - [`config`]: `kubetrail.yaml`, each section typed by the component it configures.
//! - [`service`]: storage housekeeping, the HTTP API and console, and the collector's assembly.

pub mod alerting;
pub mod config;
pub mod data;
pub mod delivery;
pub mod duration;
pub mod input;
pub mod integrity_key;
pub mod logging;
pub mod rbac_base;
pub mod service;
pub mod shipping;
pub mod text;
