//! `kubetrail`: the command line. Parses arguments, wires the libraries together, maps errors to exit codes
//! (0 ok, 1 findings, 2 usage or runtime error). The only crate that uses `anyhow`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod input;
mod output;
mod progress;
mod report;

/// Kubernetes audit logging as the forensic foundation of a cluster's security.
#[derive(Debug, Parser)]
#[command(name = "kubetrail", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write, check, lint, simulate and explain kube-apiserver audit policies.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Generate realistic, deterministic audit traffic (JSON lines) for load tests and demos.
    Gen(cmd::generate::GenArgs),
    /// Write certificates, webhook kubeconfig, audit policy and config to connect kube-apiserver to kubetrail.
    #[command(subcommand)]
    Setup(cmd::setup::SetupCommand),
}

/// What a command reports back: success, or findings (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Findings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(c) => cmd::policy::run(c),
        Command::Gen(args) => cmd::generate::run(args),
        Command::Setup(c) => cmd::setup::run(c),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(err) => {
            // A closed pipe (`kubetrail gen | head`) is not an error worth reporting.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
