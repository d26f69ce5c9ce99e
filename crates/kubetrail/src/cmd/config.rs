//! `kubetrail config check`: validate a configuration file before starting with it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::Outcome;
use crate::config::{self, Config};

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
    let checked = Config::load(&args.file).and_then(|cfg| {
        cfg.validate()?;
        let mut server = kubetrail_server::ServerConfig {
            listen: cfg
                .listen
                .unwrap_or_else(|| config::DEFAULT_LISTEN.parse().expect("valid")),
            insecure: cfg.insecure,
            ..Default::default()
        };
        if let Some(tls) = &cfg.tls {
            server.tls = Some(kubetrail_server::TlsFiles {
                cert: tls.cert.clone(),
                key: tls.key.clone(),
                client_ca: tls.client_ca.clone(),
            });
        }
        if let Some(auth) = &cfg.auth {
            server.bearer_tokens = config::read_tokens(&auth.bearer_tokens_file)?;
        }
        kubetrail_server::check_config(&server)?;
        Ok(())
    });
    match checked {
        Ok(()) => {
            eprintln!("{}: ok", args.file.display());
            Ok(Outcome::Ok)
        }
        Err(e) => {
            println!("{}: error: {e:#}", args.file.display());
            Ok(Outcome::Findings)
        }
    }
}
