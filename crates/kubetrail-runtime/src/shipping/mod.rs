//! Shipping events off the node: the per-sink workers over the log ([`worker`]), the S3 archive ([`archive`])
//! and the config file's `sinks:` section ([`config`]).

pub mod archive;
pub mod config;
pub mod worker;

/// `DATA/sinks`: each sink's dead letters, replay queue and status.
pub fn sinks_dir(data: &std::path::Path) -> std::path::PathBuf {
    data.join("sinks")
}
