//! `kubetrail gen`: realistic audit traffic as JSON lines.

use clap::Args;

use crate::Outcome;

#[derive(Debug, Args)]
pub struct GenArgs {}

pub fn run(_args: GenArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("`kubetrail gen` is being built")
}
