//! Verification: [`verify_store`] walks every checkpoint, log segment and listed Parquet file of the data
//! directory read-only and reports what does not verify ([`IntegrityReport`]); [`check_anchor`] checks a
//! checkpoint exported off the node against the one still in the data directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::wal::format;

use super::checkpoint::{deleted_items, list_checkpoint_files, parse_checkpoint};
use super::scan::{list_segment_files, scan_segment};
use super::{
    CHECKPOINT_DIR, Checkpoint, Deletion, FileSet, IntegrityError, PublicKey, SegmentEntry,
    checkpoint_file_name, parquet_files, sha256_hex,
};
use super::{hash_file, hex, io_err, is_safe_rel, rel_string};

/// Checks that a checkpoint anchored off the node (by its file, relative to `DATA`, and the SHA-256 of its
/// bytes, as `kubetrail checkpoint export` records them) is still in the data directory unchanged: a chain cut
/// back or rebuilt after the export fails here even when it is consistent in itself.
pub fn check_anchor(
    data_dir: &Path,
    checkpoint_file: &str,
    sha256: &str,
) -> Result<Option<Problem>, IntegrityError> {
    let problem = |kind, detail: &str| Problem {
        kind,
        item: checkpoint_file.to_string(),
        offset: None,
        detail: detail.to_string(),
    };
    if !is_safe_rel(checkpoint_file) || !checkpoint_file.starts_with(&format!("{CHECKPOINT_DIR}/"))
    {
        return Ok(Some(problem(
            ProblemKind::Damaged,
            "the anchor names a file outside the checkpoint directory",
        )));
    }
    let path = data_dir.join(checkpoint_file);
    match fs::read(&path) {
        Ok(bytes) if sha256_hex(&bytes) == sha256 => Ok(None),
        Ok(_) => Ok(Some(problem(
            ProblemKind::Damaged,
            "differs from the copy exported off the node: the checkpoint chain was rewritten",
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(problem(
            ProblemKind::Missing,
            "exported off the node, and gone from the data directory: the checkpoint chain was cut back",
        ))),
        Err(e) => Err(io_err(&path)(e)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Bytes changed (checksum, hash chain or SHA-256 mismatch, unparsable).
    Damaged,
    /// Listed by a checkpoint (or implied by the chain) and gone, with no recorded deletion.
    Missing,
    /// Shorter than it was.
    Truncated,
    /// In the wrong place: renamed, swapped, out of order.
    Reordered,
    /// A checkpoint whose signature does not verify, or that another key signed.
    BadSignature,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Damaged => "damaged",
            ProblemKind::Missing => "missing",
            ProblemKind::Truncated => "truncated",
            ProblemKind::Reordered => "reordered",
            ProblemKind::BadSignature => "bad signature",
        })
    }
}

/// One thing that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The file, relative to the data directory (`wal/0000..0001.seg`, `checkpoints/...json`, a Parquet path).
    pub item: String,
    /// Byte offset in `item` where the problem starts, when known.
    pub offset: Option<u64>,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`", self.kind, self.item)?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What [`verify_store`] walked and found. Intact when `problems` is empty; the first problem is the first in
/// walking order: checkpoints (the root of trust), then segments by seq, then files by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IntegrityReport {
    pub checkpoints: usize,
    /// `created` of the newest checkpoint.
    pub newest_checkpoint: Option<String>,
    pub segments: usize,
    pub records: u64,
    pub wal_bytes: u64,
    /// Parquet files checked against the newest checkpoint.
    pub files: usize,
    /// Records written after the newest checkpoint's head: verified by the hash chain only.
    pub records_after_checkpoint: u64,
    /// Parquet files on disk that no checkpoint lists yet (not verified).
    pub files_after_checkpoint: usize,
    /// Deletions on purpose (retention, compaction, released log segments) that checkpoints record: their
    /// items may be gone.
    pub deleted_by_retention: usize,
    /// Bytes after the last intact record of the active segment (a write in progress or torn by a crash).
    pub torn_tail_bytes: u64,
    pub problems: Vec<Problem>,
}

impl IntegrityReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

/// At most this many problems are listed: the first is what matters, the count says how bad.
const MAX_PROBLEMS: usize = 100;

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, kind: ProblemKind, item: String, offset: Option<u64>, detail: String) {
        if self.0.len() < MAX_PROBLEMS {
            self.0.push(Problem {
                kind,
                item,
                offset,
                detail,
            });
        }
    }
}

/// Walks every checkpoint, segment and listed file of `DATA` without modifying anything and reports what does
/// not verify with `key`. IO errors other than a missing file are errors.
pub fn verify_store(data_dir: &Path, key: &PublicKey) -> Result<IntegrityReport, IntegrityError> {
    let mut report = IntegrityReport::default();
    let mut problems = Problems(Vec::new());

    // 1. Checkpoints: each authentic, named for what it holds, and chained to the one before.
    let cp_dir = data_dir.join(CHECKPOINT_DIR);
    let mut chain: Vec<(String, Checkpoint, String)> = Vec::new();
    for name in list_checkpoint_files(&cp_dir)? {
        let path = cp_dir.join(&name);
        let item = format!("{CHECKPOINT_DIR}/{name}");
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        match parse_checkpoint(&bytes, key) {
            Err((kind, why)) => problems.push(kind, item, None, why),
            Ok(cp) => {
                let expect = checkpoint_file_name(&cp);
                if expect != name {
                    problems.push(
                        ProblemKind::Reordered,
                        item,
                        None,
                        format!("holds checkpoint {} (`{expect}`)", cp.index),
                    );
                } else {
                    chain.push((name, cp, hex(&Sha256::digest(&bytes))));
                }
            }
        }
    }
    report.checkpoints = chain.len();
    chain.sort_by_key(|(_, cp, _)| cp.index);
    let mut prev: Option<&(String, Checkpoint, String)> = None;
    for link in &chain {
        let (name, cp, _) = link;
        let item = format!("{CHECKPOINT_DIR}/{name}");
        match prev {
            None if cp.index > 0 => problems.push(
                ProblemKind::Missing,
                format!("{CHECKPOINT_DIR}/"),
                None,
                format!(
                    "checkpoints 0 to {} are missing (the oldest left is `{name}`)",
                    cp.index - 1
                ),
            ),
            None if cp.previous.is_some() => problems.push(
                ProblemKind::Damaged,
                item,
                None,
                "checkpoint 0 names a previous checkpoint".into(),
            ),
            None => {}
            Some((pname, p, phash)) => {
                if cp.index == p.index {
                    problems.push(
                        ProblemKind::Reordered,
                        item,
                        None,
                        format!("has the same index ({}) as `{pname}`", cp.index),
                    );
                } else if cp.index > p.index + 1 {
                    problems.push(
                        ProblemKind::Missing,
                        format!("{CHECKPOINT_DIR}/"),
                        None,
                        format!(
                            "checkpoint {} (between `{pname}` and `{name}`) is missing",
                            if cp.index == p.index + 2 {
                                (p.index + 1).to_string()
                            } else {
                                format!("{} to {}", p.index + 1, cp.index - 1)
                            }
                        ),
                    );
                } else if cp.previous.as_deref() != Some(phash.as_str()) {
                    problems.push(
                        ProblemKind::Damaged,
                        item,
                        None,
                        format!("does not chain to the checkpoint before it (`{pname}`)"),
                    );
                } else if cp.wal.next_seq < p.wal.next_seq || cp.created < p.created {
                    problems.push(
                        ProblemKind::Reordered,
                        item,
                        None,
                        format!("goes back in seq or time from `{pname}`"),
                    );
                }
            }
        }
        prev = Some(link);
    }
    // The file listing each checkpoint states: folded along the chain, each checked against its digest.
    let mut listing = FileSet::default();
    let mut listing_ok = true;
    for (name, cp, _) in &chain {
        listing.apply(cp);
        if listing_ok && !listing.matches(cp) {
            listing_ok = false;
            // A missing checkpoint is reported above; this one's listing cannot be rebuilt without it.
            if problems.0.is_empty() {
                problems.push(
                    ProblemKind::Damaged,
                    format!("{CHECKPOINT_DIR}/{name}"),
                    None,
                    format!(
                        "lists {} files with digest {}, the checkpoints before it add up to {} files with digest {}",
                        cp.files_count,
                        &cp.files_digest[..cp.files_digest.len().min(16)],
                        listing.len(),
                        &listing.digest()[..16]
                    ),
                );
            }
        }
        if cp.files_full {
            listing_ok = true;
        }
    }
    let latest = chain.last().map(|(_, cp, _)| cp);
    report.newest_checkpoint = latest.map(|cp| cp.created.clone());
    if latest.is_none() && problems.0.is_empty() {
        problems.push(
            ProblemKind::Missing,
            format!("{CHECKPOINT_DIR}/"),
            None,
            "no signed checkpoint: nothing proves what the data directory held; run `kubetrail checkpoint create`"
                .into(),
        );
    }
    let deletions: Vec<&Deletion> = chain
        .iter()
        .flat_map(|(_, cp, _)| cp.deletions.iter())
        .collect();
    report.deleted_by_retention = deletions.len();
    let (deleted_segments, deleted_files) = deleted_items(deletions.iter().copied());

    // 2. The log.
    verify_wal(
        &data_dir.join("wal"),
        latest,
        &chain,
        &deleted_segments,
        &mut report,
        &mut problems,
    )?;

    // 3. Parquet files listed by the newest checkpoint.
    if latest.is_some() {
        let mut listed = HashSet::new();
        for f in listing.iter() {
            listed.insert(f.path.as_str());
            if !is_safe_rel(&f.path) {
                problems.push(
                    ProblemKind::Damaged,
                    f.path.clone(),
                    None,
                    "listed with a path outside the data directory".into(),
                );
                continue;
            }
            let path = data_dir.join(&f.path);
            let (bytes, sha256) = match hash_file(&path) {
                Ok(h) => h,
                Err(IntegrityError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    if !deleted_files.contains(f.path.as_str()) {
                        problems.push(
                            ProblemKind::Missing,
                            f.path.clone(),
                            None,
                            "listed by the newest checkpoint, and no checkpoint records its deletion".into(),
                        );
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.files += 1;
            if bytes < f.bytes {
                problems.push(
                    ProblemKind::Truncated,
                    f.path.clone(),
                    Some(bytes),
                    format!("{bytes} bytes, the checkpoint says {}", f.bytes),
                );
            } else if bytes != f.bytes || sha256 != f.sha256 {
                problems.push(
                    ProblemKind::Damaged,
                    f.path.clone(),
                    None,
                    format!(
                        "SHA-256 {} ({bytes} bytes), the checkpoint says {} ({} bytes)",
                        &sha256[..16],
                        &f.sha256[..f.sha256.len().min(16)],
                        f.bytes
                    ),
                );
            }
        }
        report.files_after_checkpoint = parquet_files(data_dir)?
            .iter()
            .filter(|p| !listed.contains(rel_string(p).as_str()))
            .count();
    }
    report.problems = problems.0;
    Ok(report)
}

fn verify_wal(
    wal_dir: &Path,
    latest: Option<&Checkpoint>,
    chain: &[(String, Checkpoint, String)],
    deleted: &HashSet<&str>,
    report: &mut IntegrityReport,
    problems: &mut Problems,
) -> Result<(), IntegrityError> {
    let item = |name: &str| format!("wal/{name}");
    let disk = match fs::metadata(wal_dir) {
        Ok(_) => list_segment_files(wal_dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(wal_dir)(e)),
    };
    // Every checkpoint's head must lie on the chain: seq -> (hash, checkpoint name).
    let heads: HashMap<u64, Vec<(String, &str)>> =
        chain.iter().fold(HashMap::new(), |mut m, (name, cp, _)| {
            m.entry(cp.wal.next_seq)
                .or_default()
                .push((cp.wal.head_hash.clone(), name.as_str()));
            m
        });
    let listed: BTreeMap<u64, &SegmentEntry> = latest
        .map(|cp| cp.wal.segments.iter().map(|s| (s.first_seq, s)).collect())
        .unwrap_or_default();
    let on_disk: HashSet<&str> = disk.iter().map(|s| s.name.as_str()).collect();

    // Listed segments that are gone: retention when recorded, otherwise missing. Reported in seq order with
    // what is on disk, so the first problem is the earliest.
    let mut gone: BTreeMap<u64, Problem> = BTreeMap::new();
    for (first, e) in &listed {
        if on_disk.contains(e.name.as_str()) {
            continue;
        }
        if !deleted.contains(e.name.as_str()) {
            gone.insert(
                *first,
                Problem {
                    kind: ProblemKind::Missing,
                    item: item(&e.name),
                    offset: None,
                    detail: format!(
                        "seqs {} to {} are listed by the newest checkpoint and no checkpoint records their \
                         deletion",
                        e.first_seq,
                        e.next_seq.saturating_sub(1)
                    ),
                },
            );
        }
    }
    if let Some(a) = latest.and_then(|cp| cp.wal.active.as_ref())
        && !on_disk.contains(a.name.as_str())
        && !deleted.contains(a.name.as_str())
        && !listed.contains_key(&a.first_seq)
        && disk
            .iter()
            .filter_map(|s| s.first_seq)
            .all(|f| f <= a.first_seq)
    {
        gone.insert(
            a.first_seq,
            Problem {
                kind: ProblemKind::Missing,
                item: item(&a.name),
                offset: None,
                detail: format!(
                    "the active segment of the newest checkpoint (from seq {}) is gone",
                    a.first_seq
                ),
            },
        );
    }

    let mut emit_gone_before = |seq: u64, problems: &mut Problems| {
        let later = gone.split_off(&seq);
        for (_, p) in std::mem::replace(&mut gone, later) {
            problems.push(p.kind, p.item, p.offset, p.detail);
        }
    };

    // Where the chain is expected to continue: (next seq, hash), None at the start or after damage.
    let mut link: Option<(u64, [u8; 32])> = None;
    // The segment before, with its length: where recovery cut it, if it left a gap after it.
    let mut prev: Option<(String, u64)> = None;
    let mut passed_heads = HashSet::new();
    for (i, seg) in disk.iter().enumerate() {
        let is_last = i + 1 == disk.len();
        let Some(first_seq) = seg.first_seq else {
            emit_gone_before(0, problems);
            problems.push(
                ProblemKind::Damaged,
                item(&seg.name),
                None,
                "not a segment name (its first seq in 20 digits)".into(),
            );
            link = None;
            continue;
        };
        emit_gone_before(first_seq, problems);
        let path = wal_dir.join(&seg.name);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        report.segments += 1;
        report.wal_bytes += bytes.len() as u64;
        let scan = scan_segment(&bytes, None);
        let entry = listed.get(&first_seq).filter(|e| e.name == seg.name);
        let mut before = problems.0.len();
        let mut recovery_gap = false;

        if let Some(h) = &scan.header {
            if h.first_seq != first_seq {
                problems.push(
                    ProblemKind::Reordered,
                    item(&seg.name),
                    Some(8),
                    format!(
                        "holds the segment that starts at seq {} (`{}`)",
                        h.first_seq,
                        format::segment_name(h.first_seq)
                    ),
                );
            } else if let Some((next, hash)) = link {
                if first_seq > next
                    && h.start_hash == hash
                    && let Some((pname, plen)) = &prev
                {
                    // Chained across a gap: the log was cut at damage and continued after seqs that had been
                    // written or passed (see `wal`). The lost records are the damage, named at the cut.
                    recovery_gap = true;
                    let copy = format::damaged_copy_name(pname, next);
                    let kept = if wal_dir.join(&copy).exists() {
                        format!("a copy of the segment as found is kept at `wal/{copy}`")
                    } else {
                        "no copy of it was kept".into()
                    };
                    problems.push(
                        ProblemKind::Damaged,
                        item(pname),
                        Some(*plen),
                        format!(
                            "records {next} to {} were lost: the segment was found damaged when the log was \
                             opened and cut here ({kept}); the log continues at seq {first_seq} in `wal/{}`",
                            first_seq - 1,
                            seg.name
                        ),
                    );
                    // This segment itself is checked as any other.
                    before = problems.0.len();
                } else if first_seq > next {
                    let range = next..first_seq;
                    // Listed segments in the gap were reported above (missing, or deleted on purpose).
                    if listed.range(range.clone()).next().is_none() {
                        problems.push(
                            ProblemKind::Missing,
                            item(&format::segment_name(next)),
                            None,
                            format!(
                                "seqs {} to {} are gone from between the segments around them",
                                range.start,
                                range.end - 1
                            ),
                        );
                    }
                } else if first_seq < next {
                    problems.push(
                        ProblemKind::Reordered,
                        item(&seg.name),
                        Some(8),
                        format!("starts at seq {first_seq}, inside the segment before it (which ends at seq {next})"),
                    );
                } else if h.start_hash != hash {
                    problems.push(
                        ProblemKind::Damaged,
                        item(&seg.name),
                        Some(16),
                        "does not continue the hash chain of the segment before it".into(),
                    );
                }
            }
            // A segment starting exactly at a checkpoint's head carries that head's hash in its header (not
            // after a gap: the head's record is among those lost).
            if !recovery_gap {
                check_head(
                    &heads,
                    first_seq,
                    &h.start_hash,
                    &seg.name,
                    &mut passed_heads,
                    problems,
                );
            }
        }
        if let Some(p) = &scan.problem {
            let tolerated = is_last && p.incomplete && entry.is_none();
            if tolerated {
                report.torn_tail_bytes = bytes.len() as u64 - p.offset;
            } else {
                let kind = if p.incomplete {
                    ProblemKind::Truncated
                } else {
                    ProblemKind::Damaged
                };
                problems.push(kind, item(&seg.name), Some(p.offset), p.detail.clone());
            }
        }
        // Every checkpoint head inside this segment must be on its chain.
        for (seq, hash) in &scan.hashes_at {
            check_head(&heads, *seq, hash, &seg.name, &mut passed_heads, problems);
        }
        if let Some(e) = entry
            && problems.0.len() == before
        {
            let len = bytes.len() as u64;
            let sha = hex(&Sha256::digest(&bytes));
            if len < e.bytes {
                problems.push(
                    ProblemKind::Truncated,
                    item(&seg.name),
                    Some(len),
                    format!("{len} bytes, the checkpoint says {}", e.bytes),
                );
            } else if len != e.bytes || sha != e.sha256 {
                problems.push(
                    ProblemKind::Damaged,
                    item(&seg.name),
                    None,
                    format!(
                        "SHA-256 {} ({len} bytes), the checkpoint says {} ({} bytes)",
                        &sha[..16],
                        &e.sha256[..e.sha256.len().min(16)],
                        e.bytes
                    ),
                );
            }
        }
        report.records += scan.next_seq.saturating_sub(first_seq);
        prev = Some((seg.name.clone(), bytes.len() as u64));
        link = if problems.0.len() == before {
            Some((scan.next_seq, scan.end_hash))
        } else {
            // Already reported: do not report the next segment's link to damaged bytes as a second problem.
            None
        };
        if is_last && let Some(cp) = latest {
            let head = cp.wal.next_seq;
            if problems.0.len() == before && scan.next_seq < head && first_seq <= head {
                problems.push(
                    ProblemKind::Truncated,
                    item(&seg.name),
                    Some(scan.end_offset),
                    format!(
                        "the log ends at seq {}, the newest checkpoint covers up to seq {}",
                        scan.next_seq,
                        head - 1
                    ),
                );
            }
            report.records_after_checkpoint = scan.next_seq.saturating_sub(head);
        }
    }
    emit_gone_before(u64::MAX, problems);
    if disk.is_empty()
        && let Some(cp) = latest
        && cp.wal.next_seq > 1
        && cp.wal.segments.is_empty()
    {
        problems.push(
            ProblemKind::Missing,
            "wal/".into(),
            None,
            format!(
                "no segment, the newest checkpoint covers up to seq {}",
                cp.wal.next_seq - 1
            ),
        );
    }
    Ok(())
}

fn check_head(
    heads: &HashMap<u64, Vec<(String, &str)>>,
    seq: u64,
    hash: &[u8; 32],
    segment: &str,
    passed: &mut HashSet<u64>,
    problems: &mut Problems,
) {
    if !passed.insert(seq) {
        return;
    }
    let Some(at) = heads.get(&seq) else {
        return;
    };
    let hash = hex(hash);
    if let Some((_, name)) = at.iter().find(|(h, _)| *h != hash) {
        problems.push(
            ProblemKind::Damaged,
            format!("wal/{segment}"),
            None,
            format!(
                "the hash chain at seq {seq} differs from the one checkpoint `{name}` signed: records before it \
                 were rewritten"
            ),
        );
    }
}
