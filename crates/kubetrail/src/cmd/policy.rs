//! `kubetrail policy ...`: check, lint, simulate, generate, explain.

use clap::Subcommand;

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {}

pub fn run(c: PolicyCommand) -> anyhow::Result<Outcome> {
    match c {}
}
