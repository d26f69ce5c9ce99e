//! `kubetrail completion SHELL` and `kubetrail man DIR`: shell completions and man pages generated from the
//! command line's own definition, so they never drift from it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::Outcome;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubetrail completion bash > /etc/bash_completion.d/kubetrail\n  \
                  kubetrail completion zsh > \"${fpath[1]}/_kubetrail\"\n  \
                  kubetrail completion fish > ~/.config/fish/completions/kubetrail.fish"
)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubetrail man /usr/local/share/man/man1 && man kubetrail-query"
)]
pub struct ManArgs {
    /// Directory to write the pages to: kubetrail.1, and kubetrail-COMMAND.1 for every command and
    /// subcommand (created if missing).
    pub dir: PathBuf,
}

/// Writes the completion script for `shell` to standard output.
pub fn completion(args: CompletionArgs, mut cli: clap::Command) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cli, "kubetrail", &mut out);
    Ok(Outcome::Ok)
}

/// Writes one man page per command into `dir`.
pub fn man(args: ManArgs, cli: clap::Command) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("failed to create `{}`", args.dir.display()))?;
    clap_mangen::generate_to(cli, &args.dir)
        .with_context(|| format!("failed to write man pages to `{}`", args.dir.display()))?;
    let pages = std::fs::read_dir(&args.dir)
        .with_context(|| format!("failed to read `{}`", args.dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count();
    eprintln!("wrote {pages} man pages to {}", args.dir.display());
    Ok(Outcome::Ok)
}
