//! `kubetrail verify`: walk every checkpoint, log segment and Parquet file of the data directory and name the
//! first one that is damaged, missing, truncated, reordered or badly signed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use kubetrail_store::integrity::{self, IntegrityReport, Problem, ProblemKind, PublicKey};

use crate::Outcome;
use crate::cmd::checkpoint::{EXPORT_FORMAT, Export};
use crate::output::Format;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every record, file and checkpoint is intact, 1 naming the first problem, 2 on \
                  usage or I/O errors.\n\nWithout --public-key the key in the data directory is used: that proves \
                  the data is consistent, but someone who controls the node could have re-signed it. Verify with \
                  the export kept off the node for evidence.\n\nExamples:\n  kubetrail verify --data \
                  /var/lib/kubetrail\n  kubetrail verify --data /var/lib/kubetrail --public-key anchor-2026-11-25.json \
                  --format json"
)]
pub struct VerifyArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// The public key: a PEM file (`kubetrail checkpoint public-key`) or an export (`kubetrail checkpoint
    /// export`), whose checkpoint must then still be in the data directory unchanged.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<Outcome> {
    let dir = kubetrail_runtime::data::resolve(args.data, None);
    if !dir.is_dir() {
        anyhow::bail!(
            "data directory `{}` does not exist: pass --data DIR",
            dir.display()
        );
    }
    let (key, anchor) = match &args.public_key {
        Some(file) => load_key(file)?,
        None => (
            kubetrail_runtime::integrity_key::existing_signer(&dir)?.public_key(),
            None,
        ),
    };
    let mut report = integrity::verify_store(&dir, &key)
        .with_context(|| format!("failed to verify `{}`", dir.display()))?;
    if let Some(export) = &anchor
        && let Some(p) =
            integrity::check_anchor(&dir, &export.checkpoint_file, &export.checkpoint_sha256)?
    {
        // The anchor is the root of trust: its problem comes first.
        report.problems.insert(0, p);
    }
    match args.format {
        Format::Json => println!("{}", json(&report, &key, anchor.is_some())),
        Format::Table => print!("{}", text(&dir, &report, &key, args.public_key.is_some())),
    }
    Ok(if report.is_intact() {
        Outcome::Ok
    } else {
        Outcome::Findings
    })
}

/// A PEM public key, or an export (its key, and its checkpoint as an anchor).
fn load_key(file: &Path) -> anyhow::Result<(PublicKey, Option<Export>)> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read public key `{}`", file.display()))?;
    if text.trim_start().starts_with('{') {
        let export: Export = serde_json::from_str(&text).with_context(|| {
            format!(
                "`{}` is not a checkpoint export (`kubetrail checkpoint export`)",
                file.display()
            )
        })?;
        if export.format != EXPORT_FORMAT {
            anyhow::bail!(
                "`{}` is a `{}` export; this kubetrail reads `{EXPORT_FORMAT}`",
                file.display(),
                export.format
            );
        }
        let key = PublicKey::from_pem(&export.public_key_pem)
            .with_context(|| format!("in `{}`", file.display()))?;
        return Ok((key, Some(export)));
    }
    let key = PublicKey::from_pem(&text).with_context(|| format!("in `{}`", file.display()))?;
    Ok((key, None))
}

fn json(report: &IntegrityReport, key: &PublicKey, anchored: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("reports serialise");
    v["ok"] = report.is_intact().into();
    v["key_id"] = key.key_id().into();
    v["anchored"] = anchored.into();
    v["first_problem"] = serde_json::to_value(report.first_problem()).expect("problems serialise");
    v
}

fn text(dir: &Path, r: &IntegrityReport, key: &PublicKey, key_given: bool) -> String {
    let mut out = String::new();
    if let Some(first) = r.first_problem() {
        out += &format!("verify failed: {first}\n");
        out += &format!("  {}\n", advice(first));
        if r.problems.len() > 1 {
            out += &format!("{} more problems:\n", r.problems.len() - 1);
            for p in &r.problems[1..] {
                out += &format!("  {p}\n");
            }
        }
        return out;
    }
    out += &format!(
        "verified `{}`: {} checkpoints (newest {}), {} segments, {} records, {} files, key {}\n",
        dir.display(),
        r.checkpoints,
        r.newest_checkpoint.as_deref().unwrap_or("none"),
        r.segments,
        r.records,
        r.files,
        key.key_id()
    );
    if r.records_after_checkpoint > 0 || r.files_after_checkpoint > 0 {
        out += &format!(
            "  since the newest checkpoint: {} records (verified by the hash chain only), {} files not yet covered\n",
            r.records_after_checkpoint, r.files_after_checkpoint
        );
    }
    if r.deleted_by_retention > 0 {
        out += &format!(
            "  {} deletions recorded in signed checkpoints (retention, compaction, converted log segments)\n",
            r.deleted_by_retention
        );
    }
    if r.torn_tail_bytes > 0 {
        out += &format!(
            "  {} bytes after the last intact record of the active segment (a write in progress, or torn by a crash)\n",
            r.torn_tail_bytes
        );
    }
    if !key_given {
        out += "  note: verified with the key in the data directory; pass --public-key with an export kept off the \
                node for evidence\n";
    }
    out
}

fn advice(p: &Problem) -> &'static str {
    match p.kind {
        ProblemKind::BadSignature => {
            "a checkpoint was altered or signed by another key: keep the data directory as evidence and compare \
             with an export kept off the node"
        }
        ProblemKind::Missing => {
            "something a signed checkpoint covers is gone without a recorded deletion (retention, compaction): restore it from \
             backup or the archive, and investigate who deleted it"
        }
        ProblemKind::Truncated => {
            "a file is shorter than a signed checkpoint says: restore it from backup or the archive, and \
             investigate"
        }
        ProblemKind::Damaged | ProblemKind::Reordered => {
            "stored bytes differ from what was signed: keep the data directory as evidence, restore the file from \
             backup or the archive, and investigate"
        }
    }
}
