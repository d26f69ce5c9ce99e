//! `kubetrail config check`: validate a configuration file before starting with it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::Outcome;
use kubetrail_runtime::config::Config;
use kubetrail_runtime::service::collector::{Flags, Settings};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a `kubetrail serve` configuration file: strict keys, readable files, a valid filter policy, and a
    /// listener that is safe (TLS and authentication beyond loopback). Exit 0 if `serve` would start with it.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    pub file: PathBuf,
}

pub fn run(c: ConfigCommand) -> anyhow::Result<Outcome> {
    let ConfigCommand::Check(args) = c;
    // The same resolution `serve` does, with no flags: files read, listener checked.
    let checked = Config::load(&args.file).and_then(|cfg| {
        let deprecations = cfg.warnings();
        Settings::resolve(cfg, Flags::default())?;
        Ok(deprecations)
    });
    match checked {
        Ok(deprecations) => {
            for d in deprecations {
                eprintln!("{}: warning: {d}", args.file.display());
            }
            eprintln!("{}: ok", args.file.display());
            Ok(Outcome::Ok)
        }
        Err(e) => {
            println!("{}: error: {e:#}", args.file.display());
            Ok(Outcome::Findings)
        }
    }
}
