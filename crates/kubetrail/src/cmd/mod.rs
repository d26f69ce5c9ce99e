//! One module per subcommand.

pub mod alerts;
pub mod checkpoint;
pub mod config;
pub mod detect;
pub mod gaps;
pub mod generate;
pub mod history;
pub mod import;
pub mod policy;
pub mod query;
pub mod rbac;
pub mod report;
pub mod retention;
pub mod rules;
pub mod serve;
pub mod setup;
pub mod shell;
pub mod sinks;
pub mod verify;
