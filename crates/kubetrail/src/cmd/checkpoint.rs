//! `kubetrail checkpoint`: sign a checkpoint of the data directory now, export the newest one (with the public
//! key) for anchoring off the node, print the public key.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use kubetrail_store::integrity;
use serde_json::value::RawValue;

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Sign a checkpoint of the write-ahead log and the Parquet files now (the collector also writes them
    /// periodically and at shutdown).
    #[command(
        after_help = "Run it with the collector stopped, or let `kubetrail serve` write checkpoints: a running collector \
                      may be writing records this command would cover before they are durable.\n\nExamples:\n  \
                      kubetrail checkpoint create --data /var/lib/kubetrail"
    )]
    Create(DataArgs),
    /// Print the newest checkpoint with the public key, as one JSON document to keep off the node.
    #[command(
        after_help = "Keep the export where an attacker on the node cannot change it (another machine, WORM storage); \
                      `kubetrail verify --public-key EXPORT` then checks the data directory against it.\n\nExamples:\n  \
                      kubetrail checkpoint export --data /var/lib/kubetrail --out anchor-$(date +%F).json"
    )]
    Export(ExportArgs),
    /// Print the public key checkpoints are signed with (PEM), creating the key pair if needed.
    PublicKey(DataArgs),
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// Write the export here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// What `checkpoint export` writes: enough to verify the data directory later from off the node.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Export {
    pub format: String,
    pub key_id: String,
    pub public_key_pem: String,
    /// The checkpoint file, relative to the data directory.
    pub checkpoint_file: String,
    /// SHA-256 of the checkpoint file's bytes.
    pub checkpoint_sha256: String,
    pub checkpoint: Box<RawValue>,
}

pub const EXPORT_FORMAT: &str = "kubetrail-checkpoint-export/v1";

pub fn run(cmd: CheckpointCommand) -> anyhow::Result<Outcome> {
    match cmd {
        CheckpointCommand::Create(args) => create(args),
        CheckpointCommand::Export(args) => export(args),
        CheckpointCommand::PublicKey(args) => {
            let dir = kubetrail_runtime::data::resolve(args.data, None);
            kubetrail_runtime::data::ensure(&dir)?;
            print!(
                "{}",
                kubetrail_runtime::integrity_key::signer(&dir)?.public_key_pem()
            );
            Ok(Outcome::Ok)
        }
    }
}

fn create(args: DataArgs) -> anyhow::Result<Outcome> {
    let dir = kubetrail_runtime::data::resolve(args.data, None);
    kubetrail_runtime::data::ensure(&dir)?;
    let _writer = kubetrail_runtime::data::lock_writer(&dir, "checkpoint create")?;
    let signer = kubetrail_runtime::integrity_key::signer(&dir)?;
    let files = integrity::parquet_files(&dir)?;
    let path = integrity::write_checkpoint_offline(&dir, &signer, &files, &[])
        .with_context(|| format!("failed to write a checkpoint of `{}`", dir.display()))?;
    let bytes =
        std::fs::read(&path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let cp =
        integrity::read_checkpoint(&bytes, &signer.public_key()).map_err(anyhow::Error::msg)?;
    println!(
        "wrote checkpoint {} `{}`: write-ahead log up to seq {} ({} sealed segments), {} files, key {}",
        cp.index,
        path.display(),
        cp.wal.next_seq.saturating_sub(1),
        cp.wal.segments.len(),
        cp.files_count,
        signer.public_key().key_id()
    );
    Ok(Outcome::Ok)
}

fn export(args: ExportArgs) -> anyhow::Result<Outcome> {
    let dir = kubetrail_runtime::data::resolve(args.data, None);
    let signer = kubetrail_runtime::integrity_key::existing_signer(&dir)?;
    let key = signer.public_key();
    let Some((path, bytes)) = integrity::latest_checkpoint(&dir)? else {
        anyhow::bail!(
            "no checkpoint in `{}`: run `kubetrail checkpoint create --data {}` first",
            dir.join(integrity::CHECKPOINT_DIR).display(),
            dir.display()
        );
    };
    integrity::read_checkpoint(&bytes, &key).map_err(|why| {
        anyhow::anyhow!(
            "the newest checkpoint `{}` does not verify ({why}); run `kubetrail verify`",
            path.display()
        )
    })?;
    let text = std::str::from_utf8(&bytes).context("checkpoint is not UTF-8")?;
    let export = Export {
        format: EXPORT_FORMAT.into(),
        key_id: key.key_id(),
        public_key_pem: key.to_pem(),
        checkpoint_file: format!(
            "{}/{}",
            integrity::CHECKPOINT_DIR,
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        checkpoint_sha256: integrity::sha256_hex(&bytes),
        checkpoint: RawValue::from_string(text.trim_end().to_string())
            .context("checkpoint is not JSON")?,
    };
    let mut out = serde_json::to_vec_pretty(&export)?;
    out.push(b'\n');
    match args.out {
        Some(file) => std::fs::write(&file, &out)
            .with_context(|| format!("failed to write `{}`", file.display()))?,
        None => std::io::stdout().write_all(&out)?,
    }
    Ok(Outcome::Ok)
}
