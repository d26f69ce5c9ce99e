//! `kubetrail setup`: the files that install kubetrail, one subcommand per way of running it (`webhook`: the
//! certificates and configs that connect kube-apiserver; `systemd`: a hardened service unit; `kubernetes`:
//! a kustomize base), and what they
//! share: refusing to overwrite without `--force`, and writing files with their mode from the start.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::Outcome;

mod kubernetes;
mod pki;
mod systemd;
mod webhook;

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Write the certificates, webhook kubeconfig, audit policy and kubetrail config that connect
    /// kube-apiserver's audit webhook to kubetrail over mutual TLS, and print how to install them.
    #[command(after_help = "Examples:
  kubetrail setup webhook --out ./kubetrail-webhook
  kubetrail setup webhook --out /etc/kubetrail --server-name kubetrail.internal --server-name 10.0.0.5 \\
      --url https://kubetrail.internal:8443/k8s-audit --days 730")]
    Webhook(webhook::WebhookArgs),
    /// Write a hardened systemd unit for `kubetrail serve`, with its service user (sysusers.d) and data
    /// directory (tmpfiles.d), and print how to install them.
    #[command(after_help = "Examples:
  kubetrail setup systemd --out ./kubetrail-systemd
  kubetrail setup systemd --out ./kubetrail-systemd --config /etc/kubetrail/kubetrail.yaml \\
      --data /srv/kubetrail --bin /usr/bin/kubetrail")]
    Systemd(systemd::SystemdArgs),
    /// Write a kustomize base that runs kubetrail in the cluster (StatefulSet, Service, NetworkPolicy,
    /// locked-down pods, TLS from `setup webhook`'s PKI) and the webhook kubeconfig for the control plane.
    #[command(after_help = "Examples:
  kubetrail setup kubernetes --out ./kubetrail-k8s && kubectl apply -k ./kubetrail-k8s
  kubetrail setup kubernetes --out ./kubetrail-k8s --apiserver-cidr 10.0.0.0/28 --storage 200Gi \\
      --storage-class fast-ssd --image registry.example.com/kubetrail:0.1.0 --service-monitor")]
    Kubernetes(kubernetes::KubernetesArgs),
}

pub fn run(cmd: SetupCommand) -> anyhow::Result<Outcome> {
    match cmd {
        SetupCommand::Webhook(args) => webhook::run(args),
        SetupCommand::Systemd(args) => systemd::run(args),
        SetupCommand::Kubernetes(args) => kubernetes::run(args),
    }
}

/// One file to write: its path under the output directory, whether it holds a secret, and its contents.
struct OutFile {
    name: &'static str,
    private: bool,
    contents: String,
}

/// Makes `dir` (mode `mode` if it is new) ready for `names`: refuses a file that exists unless `force`
/// (`replacing` says what overwriting means), before anything is written. Returns the absolute directory.
fn prepare_out(
    dir: &Path,
    names: &[&str],
    force: bool,
    mode: u32,
    replacing: &str,
) -> anyhow::Result<PathBuf> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "`{}` exists and is not a directory; choose another --out",
            dir.display()
        );
    }
    if !force {
        for name in names {
            let path = dir.join(name);
            if path.exists() || path.is_symlink() {
                bail!(
                    "`{}` already exists; pass --force to overwrite it{replacing}",
                    path.display()
                );
            }
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("failed to resolve `{}`", dir.display()))
}

/// Writes every file under `dir`, making the subdirectories their names hold.
fn write_files(dir: &Path, files: &[OutFile]) -> anyhow::Result<()> {
    for file in files {
        let path = dir.join(file.name);
        if let Some(parent) = path.parent().filter(|p| *p != dir) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("failed to create `{}`", parent.display()))?;
        }
        write_file(&path, file)?;
    }
    Ok(())
}

/// Writes one file; private ones are mode 0600 from their creation on (and made so if they existed).
fn write_file(path: &Path, file: &OutFile) -> anyhow::Result<()> {
    let mode = if file.private { 0o600 } else { 0o644 };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to set the mode of `{}`", path.display()))?;
    f.write_all(file.contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(())
}

/// A YAML double-quoted scalar (JSON's string syntax is YAML's).
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Standard base64 with padding, as kubeconfig `*-data` fields hold.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        for (input, expect) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expect, "{input}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }
}
