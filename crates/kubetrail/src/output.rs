//! Output formats shared by the commands.

use clap::ValueEnum;

/// `--format`: text for people, JSON (one object per line) for machines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}
