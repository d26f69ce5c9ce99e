//! One module per subcommand.

pub mod generate;
pub mod policy;
pub mod setup;
