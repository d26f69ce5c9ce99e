//! The immutable S3 archive as a sink: each batch becomes one zstd-compressed JSON-lines object per cluster
//! and hour, under `<prefix>cluster=<c>/year=<y>/month=<m>/day=<d>/hour=<h>/<first>-<last>.jsonl.zst` (the
//! log positions of its first and last record, so a re-send writes the same key), each put with a checksum
//! and a per-object Object Lock (mode, retain-until from the retention, legal hold), then verified by HEAD.
//!
//! Verifiable: every stored object (key, version, SHA-256, the log positions it holds) is recorded, and at
//! least every minute a manifest of the new ones is uploaded, locked, to `<prefix>manifests/<index>.json`:
//! signed with the installation's integrity key and chained to the previous manifest by its SHA-256, so
//! `kubetrail sinks verify` can prove from the bucket alone that every object is there, unchanged and locked,
//! and name any log position missing. The store's signed checkpoints are uploaded beside them
//! (`<prefix>checkpoints/`), and its Parquet files once final (`<prefix>parquet/`, the lake layout), listed
//! in the manifests too. With `ocsf` set, each batch is also written as OCSF API Activity Parquet, one file per
//! event day, in an Amazon Security Lake custom source's layout (`<prefix>ext/<source>/region=/accountId=/
//! eventDay=/`), locked and listed the same way; a record OCSF cannot map stays in the JSON lines only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use kubetrail_sinks::ocsf::{self, LakeSource, OcsfError};
use kubetrail_sinks::s3::{Lock, LockMode, S3};
use kubetrail_sinks::{Outcome, Record};
use kubetrail_store::Signer;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The largest store file archived: a put holds the file in memory (no multipart upload yet), so a bigger one
/// is left out, with a warning, rather than risk the collector's memory.
pub const MAX_PARQUET_BYTES: u64 = 512 << 20;

/// How often a manifest of the new objects is uploaded (when there are any), by default.
pub const MANIFEST_EVERY: Duration = Duration::from_secs(60);

/// One archived object, as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub key: String,
    pub version: Option<String>,
    /// Base64 SHA-256 of the object's bytes (S3's `x-amz-checksum-sha256`).
    pub sha256: String,
    pub events: u64,
    /// The log positions it holds, as runs `[first, last]` (empty for a Parquet file).
    pub seqs: Vec<[u64; 2]>,
    /// `parquet` for a file of the store; absent for the JSON lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A manifest: what was archived since the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub index: u64,
    pub created: String,
    /// Hex SHA-256 of the previous manifest object's bytes (`None` for the first).
    pub previous: Option<String>,
    pub objects: Vec<Entry>,
}

/// The uploaded form: the manifest's JSON text, and its signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub manifest: String,
    pub key_id: String,
    pub signature: String,
}

/// What survives a restart: the next manifest's index and chain link, the objects not yet in one, the
/// checkpoints already uploaded.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    index: u64,
    previous: Option<String>,
    pending: Vec<Entry>,
    #[serde(default)]
    checkpoints: Vec<String>,
    /// The store's Parquet files already archived (paths under `DATA/store`).
    #[serde(default)]
    parquet: std::collections::BTreeSet<String>,
    /// The prefix the manifest chain is under (absent in ledgers written before it was recorded).
    #[serde(default)]
    prefix: Option<String>,
}

/// The signing and the local state, set when `serve` starts the sink.
#[derive(Debug)]
struct Ledger {
    signer: Signer,
    data: PathBuf,
    path: PathBuf,
    state: State,
    last: Instant,
}

/// Runs of consecutive positions.
pub fn runs(seqs: impl IntoIterator<Item = u64>) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some(r) if r[1] + 1 == s => r[1] = s,
            _ => out.push([s, s]),
        }
    }
    out
}

/// The archive's bucket and lock.
#[derive(Debug)]
pub struct Archive {
    pub s3: S3,
    /// Where this collector's archive goes: the configured prefix, and `replica=<name>/` under it when it is
    /// one of several replicas ([`Archive::set_replica`]).
    pub prefix: String,
    /// The configured prefix, where OCSF files go for Security Lake (its layout has no room for replicas:
    /// their file names carry the replica instead).
    pub lake_prefix: String,
    pub replica: Option<String>,
    pub mode: LockMode,
    pub retain_days: u32,
    pub legal_hold: bool,
    /// How often a manifest is uploaded.
    pub manifest_every: Duration,
    /// Also archive the store's Parquet files, once their hour is over and they have not changed for this
    /// long (compaction is done with them); `None`: JSON lines only.
    pub parquet_after: Option<Duration>,
    /// Also write each batch as OCSF API Activity Parquet in the Security Lake layout
    /// (`<prefix>ext/<source>/region=/accountId=/eventDay=/`), locked and listed like the rest.
    pub ocsf: Option<LakeSource>,
    ledger: Mutex<Option<Ledger>>,
}

impl Archive {
    pub fn new(
        s3: S3,
        prefix: String,
        mode: LockMode,
        retain_days: u32,
        legal_hold: bool,
    ) -> Archive {
        Archive {
            s3,
            lake_prefix: prefix.clone(),
            prefix,
            replica: None,
            mode,
            retain_days,
            legal_hold,
            manifest_every: MANIFEST_EVERY,
            parquet_after: Some(Duration::from_secs(1800)),
            ocsf: None,
            ledger: Mutex::new(None),
        }
    }

    /// The archive of one of several replicas sharing the bucket and prefix: everything under
    /// `<prefix>replica=<name>/` (its own manifest chain), OCSF files at the prefix with the name in theirs.
    pub fn set_replica(&mut self, name: &str) {
        self.prefix = format!("{}replica={name}/", self.lake_prefix);
        self.replica = Some(name.to_string());
    }

    /// Signs manifests with `signer`, keeping the ledger in `DATA/sinks/<name>.archive.json`.
    pub fn attach(&self, data: &Path, name: &str, signer: Signer) -> anyhow::Result<()> {
        let path = crate::shipping::sinks_dir(data).join(format!("{name}.archive.json"));
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("`{}` is not an archive ledger", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read `{}`", path.display()));
            }
        };
        *self.ledger.lock().expect("not poisoned") = Some(Ledger {
            signer,
            data: data.to_path_buf(),
            path,
            state,
            last: Instant::now(),
        });
        Ok(())
    }

    fn lock(&self) -> Lock {
        Lock {
            mode: self.mode,
            retain_until: jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_hours(
                    24 * i64::from(self.retain_days),
                ))
                .unwrap_or(jiff::Timestamp::MAX),
            legal_hold: self.legal_hold,
        }
    }

    /// Records stored objects (fsynced before the batch counts as delivered).
    fn record(&self, entries: Vec<Entry>) -> Result<(), String> {
        let mut g = self.ledger.lock().expect("not poisoned");
        let Some(l) = g.as_mut() else {
            return Ok(());
        };
        l.state.pending.extend(entries);
        save(&l.path, &l.state).map_err(|e| format!("{e:#}"))
    }

    /// Uploads a manifest of the objects stored since the last one when one is due, and new checkpoints.
    pub async fn tick(&self) -> Result<(), String> {
        let due = {
            let g = self.ledger.lock().expect("not poisoned");
            let Some(l) = g.as_ref() else {
                return Ok(());
            };
            !l.state.pending.is_empty() && l.last.elapsed() >= self.manifest_every
        };
        if due {
            self.upload_manifest().await?;
        }
        self.upload_parquet().await?;
        self.upload_checkpoints().await
    }

    /// Archives the store's Parquet files that are final: their hour is over and they have not changed for
    /// `parquet_after` (the lake layout `<prefix>parquet/cluster=/date=/hour=/<first>-<last>.parquet`, which
    /// Athena, Trino, Spark and DuckDB read). Each is listed in the next manifest.
    async fn upload_parquet(&self) -> Result<(), String> {
        let Some(after) = self.parquet_after else {
            return Ok(());
        };
        let (data, done) = {
            let g = self.ledger.lock().expect("not poisoned");
            let Some(l) = g.as_ref() else {
                return Ok(());
            };
            (l.data.clone(), l.state.parquet.clone())
        };
        let root = data.join("store");
        if !root.is_dir() {
            return Ok(());
        }
        let files = kubetrail_store::columnar::list_files(&root, None, None, None)
            .map_err(|e| format!("listing the store: {e}"))?;
        let now = jiff::Timestamp::now();
        for f in files {
            let Ok(rel) = f.path.strip_prefix(&root) else {
                continue;
            };
            let rel = rel.to_string_lossy().to_string();
            let hour_over = f.end() < now;
            // A day file replaces hourly files the archive may already hold: the lake keeps one or the other
            // for a date, never both.
            if f.day {
                let date = rel.rsplit_once("/hour=").map_or("", |(d, _)| d);
                if !date.is_empty() && done.iter().any(|d| d.starts_with(&format!("{date}/hour=")))
                {
                    continue;
                }
            }
            let settled = std::fs::metadata(&f.path)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m.elapsed().is_ok_and(|age| age >= after));
            if done.contains(&rel) || !hour_over || !settled {
                continue;
            }
            if f.bytes > MAX_PARQUET_BYTES {
                tracing::warn!(
                    file = %f.path.display(),
                    bytes = f.bytes,
                    "store file too large to archive in one put (over {} MiB); its events are in the JSON lines",
                    MAX_PARQUET_BYTES >> 20
                );
                let mut g = self.ledger.lock().expect("not poisoned");
                if let Some(l) = g.as_mut() {
                    l.state.parquet.insert(rel);
                    save(&l.path, &l.state).map_err(|e| format!("{e:#}"))?;
                }
                continue;
            }
            let bytes = match std::fs::read(&f.path) {
                Ok(b) => b,
                // Removed meanwhile (compaction, retention): a merged file replaces it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("`{}`: {e}", f.path.display())),
            };
            let key = format!("{}parquet/{rel}", self.prefix);
            let (put, _) = self
                .s3
                .put_object_verified(
                    &key,
                    Bytes::from(bytes),
                    "application/vnd.apache.parquet",
                    Some(&self.lock()),
                )
                .await
                .map_err(|e| format!("`{key}`: {e}"))?;
            let mut g = self.ledger.lock().expect("not poisoned");
            if let Some(l) = g.as_mut() {
                l.state.pending.push(Entry {
                    key,
                    version: put.version_id,
                    sha256: put.checksum_sha256,
                    events: 0,
                    seqs: Vec::new(),
                    format: Some("parquet".into()),
                });
                l.state.parquet.insert(rel);
                save(&l.path, &l.state).map_err(|e| format!("{e:#}"))?;
            }
        }
        Ok(())
    }

    /// Uploads the pending manifest now (at shutdown, and from [`Archive::tick`]).
    pub async fn upload_manifest(&self) -> Result<(), String> {
        let (key, body, index, sha) = {
            let mut g = self.ledger.lock().expect("not poisoned");
            let Some(l) = g.as_mut() else {
                return Ok(());
            };
            if l.state.pending.is_empty() {
                return Ok(());
            }
            let m = Manifest {
                version: 1,
                index: l.state.index,
                created: jiff::Timestamp::now().to_string(),
                previous: l.state.previous.clone(),
                objects: l.state.pending.clone(),
            };
            let text = serde_json::to_string(&m).map_err(|e| e.to_string())?;
            let signed = Signed {
                signature: l.signer.sign_detached(text.as_bytes()),
                key_id: l.signer.public_key().key_id(),
                manifest: text,
            };
            let mut body = serde_json::to_vec(&signed).map_err(|e| e.to_string())?;
            body.push(b'\n');
            let sha = hex(&sha2::Sha256::digest(&body));
            l.last = Instant::now();
            (manifest_key(&self.prefix, m.index), body, m.index, sha)
        };
        self.s3
            .put_object_verified(
                &key,
                Bytes::from(body),
                "application/json",
                Some(&self.lock()),
            )
            .await
            .map_err(|e| format!("manifest `{key}`: {e}"))?;
        let mut g = self.ledger.lock().expect("not poisoned");
        if let Some(l) = g.as_mut() {
            let n = l.state.pending.len();
            l.state.pending.clear();
            l.state.index = index + 1;
            l.state.previous = Some(sha);
            save(&l.path, &l.state).map_err(|e| format!("{e:#}"))?;
            tracing::info!(manifest = %key, objects = n, "archive manifest uploaded");
        }
        Ok(())
    }

    async fn upload_checkpoints(&self) -> Result<(), String> {
        let (data, done) = {
            let g = self.ledger.lock().expect("not poisoned");
            let Some(l) = g.as_ref() else {
                return Ok(());
            };
            (l.data.clone(), l.state.checkpoints.clone())
        };
        let dir = data.join("checkpoints");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json") && !done.contains(n))
            .collect();
        names.sort();
        for name in names {
            let bytes =
                std::fs::read(dir.join(&name)).map_err(|e| format!("checkpoint `{name}`: {e}"))?;
            let key = format!("{}checkpoints/{name}", self.prefix);
            self.s3
                .put_object_verified(
                    &key,
                    Bytes::from(bytes),
                    "application/json",
                    Some(&self.lock()),
                )
                .await
                .map_err(|e| format!("checkpoint `{key}`: {e}"))?;
            let mut g = self.ledger.lock().expect("not poisoned");
            if let Some(l) = g.as_mut() {
                l.state.checkpoints.push(name);
                save(&l.path, &l.state).map_err(|e| format!("{e:#}"))?;
            }
        }
        Ok(())
    }

    /// Checks the bucket has Object Lock and that the prefix is this collector's: a first manifest signed
    /// by another key means another collector (a replica without a `replica:` name of its own) writes there,
    /// and sharing would mix two manifest chains and overwrite each other's objects (an error names what is
    /// wrong). A chain this collector kept under another prefix (its replica name was set or changed) starts
    /// again at manifest 0 under the new one; what was archived under the old prefix stays there.
    pub async fn prepare(&self) -> Result<(), String> {
        self.s3.prepare().await.map_err(|e| e.to_string())?;
        let (ours, recorded, index) = {
            let g = self.ledger.lock().expect("not poisoned");
            match g.as_ref() {
                Some(l) => (
                    l.signer.public_key().key_id(),
                    l.state.prefix.clone(),
                    l.state.index,
                ),
                None => return Ok(()),
            }
        };
        let first = manifest_key(&self.prefix, 0);
        let mut unreadable = false;
        let found = match self.s3.get_object(&first, None).await {
            Ok(body) => Some(
                serde_json::from_slice::<Signed>(&body)
                    .map(|s| s.key_id)
                    .unwrap_or_else(|_| "(not a signed manifest)".into()),
            ),
            Err(e) if e.code() == Some("NoSuchKey") => None,
            // Without s3:ListBucket, S3 answers a missing key with 403: nothing to compare with.
            Err(e) if e.code() == Some("AccessDenied") => {
                tracing::warn!(manifest = %first, error = %e, "cannot read the archive's first manifest to check the prefix is this collector's (grant s3:GetObject and s3:ListBucket on it)");
                unreadable = true;
                None
            }
            Err(e) => return Err(format!("manifest `{first}`: {e}")),
        };
        if let Some(theirs) = &found
            && *theirs != ours
        {
            return Err(format!(
                "`{}` holds an archive signed by another key ({theirs}, in `{first}`; this collector's key is \
                 {ours}): either another collector writes there (give each replica its own `replica:` name or \
                 KUBETRAIL_REPLICA, or its own prefix), or this collector's data directory and its key were \
                 lost (give it a new prefix); nothing more is written there",
                self.prefix
            ));
        }
        let moved = match &recorded {
            Some(p) => *p != self.prefix,
            // A ledger from before prefixes were recorded: its chain is elsewhere if manifest 0 is not here.
            // (Not when it could not be read: the chain may well be here.)
            None => index > 0 && found.is_none() && !unreadable,
        };
        let mut g = self.ledger.lock().expect("not poisoned");
        if let Some(l) = g.as_mut()
            && (moved || recorded.is_none())
        {
            if moved {
                tracing::warn!(
                    from = recorded.as_deref().unwrap_or("(not recorded)"),
                    to = %self.prefix,
                    manifests = l.state.index,
                    "the archive's prefix changed: a new manifest chain starts under the new prefix; the old one stays where it is"
                );
                l.state.index = 0;
                l.state.previous = None;
            }
            l.state.prefix = Some(self.prefix.clone());
            save(&l.path, &l.state).map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    /// The object key of records of `cluster` received in the hour of `received_us`, first..=last.
    pub fn key(&self, cluster: &str, received_us: i64, first: u64, last: u64) -> String {
        let t =
            jiff::Timestamp::from_microsecond(received_us).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let safe: String = cluster
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "{}cluster={safe}/{}/{first:020}-{last:020}.jsonl.zst",
            self.prefix,
            t.strftime("year=%Y/month=%m/day=%d/hour=%H")
        )
    }

    pub async fn send(&self, batch: &[Record<'_>], seqs: &[u64]) -> Outcome {
        // Group by cluster and hour, keeping batch order.
        let mut groups: BTreeMap<(String, i64), Vec<usize>> = BTreeMap::new();
        for (i, r) in batch.iter().enumerate() {
            let hour = r.received_us.div_euclid(3_600_000_000);
            groups
                .entry((r.cluster.to_string(), hour))
                .or_default()
                .push(i);
        }
        let lock = self.lock();
        let mut retry = Vec::new();
        let mut stored = Vec::new();
        let mut reason = String::new();
        for ((cluster, _), idx) in &groups {
            let first = seqs[idx[0]];
            let last = seqs[*idx.last().expect("non-empty group")];
            let key = self.key(cluster, batch[idx[0]].received_us, first, last);
            let mut lines = Vec::new();
            for &i in idx {
                lines.extend_from_slice(batch[i].event.as_bytes());
                lines.push(b'\n');
            }
            let body = match zstd::bulk::compress(&lines, 3) {
                Ok(b) => Bytes::from(b),
                Err(e) => return Outcome::retry(format!("compression failed: {e}")),
            };
            match self
                .s3
                .put_object_verified(&key, body, "application/zstd", Some(&lock))
                .await
            {
                Ok((put, _)) => stored.push(Entry {
                    key,
                    version: put.version_id,
                    sha256: put.checksum_sha256,
                    events: idx.len() as u64,
                    seqs: runs(idx.iter().map(|&i| seqs[i])),
                    format: None,
                }),
                // Transport failures and 5xx, but also a refused lock, a bucket without Object Lock or a
                // failed verification: server or configuration problems, never the records' fault, so they
                // are kept and retried, never dead-lettered.
                Err(e) => {
                    reason = e.to_string();
                    retry.extend(idx.iter().copied());
                }
            }
        }
        if let Some(src) = &self.ocsf {
            // One OCSF file per event day of the batch (Security Lake partitions by it). A record that
            // cannot be mapped stays in the JSON lines above and is left out here, with a warning.
            let mut days: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, r) in batch.iter().enumerate() {
                if retry.contains(&i) {
                    continue;
                }
                match ocsf::event_day(r) {
                    Ok(day) => days.entry(day).or_default().push(i),
                    Err(e) => tracing::warn!(id = r.id, "left out of the OCSF archive: {e}"),
                }
            }
            for (day, mut idx) in days {
                let (body, events) = loop {
                    let records: Vec<Record<'_>> = idx.iter().map(|&i| batch[i]).collect();
                    match ocsf::to_parquet(&records, src) {
                        Ok(b) => break (b, idx.len()),
                        Err(OcsfError::Record { index, id, reason }) => {
                            tracing::warn!(id, "left out of the OCSF archive: {reason}");
                            idx.remove(index);
                            if idx.is_empty() {
                                break (Vec::new(), 0);
                            }
                        }
                        // Not the records' fault (the writer failed): keep what is stored on record and
                        // send this day's records again.
                        Err(e) => {
                            reason = format!("OCSF: {}", String::from(e));
                            retry.extend(idx.iter().copied());
                            break (Vec::new(), 0);
                        }
                    }
                };
                if events == 0 {
                    continue;
                }
                let first = seqs[idx[0]];
                let last = seqs[*idx.last().expect("non-empty")];
                let key = format!(
                    "{}{}",
                    self.lake_prefix,
                    ocsf::lake_key(src, &day, self.replica.as_deref(), first, last)
                );
                match self
                    .s3
                    .put_object_verified(
                        &key,
                        Bytes::from(body),
                        "application/vnd.apache.parquet",
                        Some(&lock),
                    )
                    .await
                {
                    Ok((put, _)) => stored.push(Entry {
                        key,
                        version: put.version_id,
                        sha256: put.checksum_sha256,
                        events: events as u64,
                        seqs: Vec::new(),
                        format: Some("ocsf".into()),
                    }),
                    Err(e) => {
                        reason = e.to_string();
                        retry.extend(idx.iter().copied());
                    }
                }
            }
            retry.sort_unstable();
            retry.dedup();
        }
        if let Err(e) = self.record(stored) {
            // Stored but not on record: send again (the same keys get new, identical versions).
            return Outcome::retry(format!("failed to record archived objects: {e}"));
        }
        if retry.is_empty() {
            Outcome::Delivered
        } else if retry.len() == batch.len() {
            Outcome::retry(reason)
        } else {
            Outcome::Partial {
                retry,
                dead: Vec::new(),
            }
        }
    }
}

pub fn manifest_key(prefix: &str, index: u64) -> String {
    format!("{prefix}manifests/{index:012}.json")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)
        .with_context(|| format!("failed to create `{}`", tmp.display()))?;
    f.write_all(&serde_json::to_vec(state)?)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to replace `{}`", path.display()))
}

/// What `kubetrail sinks verify` found.
#[derive(Debug, Default)]
pub struct Verified {
    pub manifests: u64,
    pub objects: u64,
    pub events: u64,
    /// Of the objects, the store's Parquet files.
    pub parquet_files: u64,
    /// Of the objects, the OCSF (Security Lake) Parquet files: their events are counted once, in the JSON
    /// lines.
    pub ocsf_files: u64,
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// Everything wrong, each naming the object or manifest.
    pub problems: Vec<String>,
}

/// Verifies the archive from the bucket alone: the manifest chain and signatures, every listed object's
/// presence, checksum and lock (with `deep`, its bytes and event count too), and which log positions are
/// missing between the first and the last archived one.
pub async fn verify(a: &Archive, key: &kubetrail_store::PublicKey, deep: bool) -> Verified {
    let mut v = Verified::default();
    let mut previous: Option<String> = None;
    let mut covered: Vec<[u64; 2]> = Vec::new();
    let mut seen_keys = std::collections::HashSet::new();
    for index in 0.. {
        let mkey = manifest_key(&a.prefix, index);
        let body = match a.s3.get_object(&mkey, None).await {
            Ok(b) => b,
            Err(e) if e.code() == Some("NoSuchKey") => break,
            Err(e) => {
                v.problems.push(format!("manifest `{mkey}`: {e}"));
                break;
            }
        };
        v.manifests += 1;
        let signed: Signed = match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                v.problems
                    .push(format!("manifest `{mkey}`: not a signed manifest ({e})"));
                break;
            }
        };
        if signed.key_id != key.key_id()
            || !key.verify_detached(signed.manifest.as_bytes(), &signed.signature)
        {
            v.problems.push(format!(
                "manifest `{mkey}`: bad signature (key {}, verified with {})",
                signed.key_id,
                key.key_id()
            ));
        }
        let m: Manifest = match serde_json::from_str(&signed.manifest) {
            Ok(m) => m,
            Err(e) => {
                v.problems.push(format!("manifest `{mkey}`: {e}"));
                break;
            }
        };
        if m.index != index || m.previous != previous {
            v.problems.push(format!(
                "manifest `{mkey}`: out of chain (index {}, previous {:?}; expected index {index}, previous {:?})",
                m.index, m.previous, previous
            ));
        }
        previous = Some(hex(&sha2::Sha256::digest(&body)));
        match a.s3.head_object(&mkey, None).await {
            Ok(info) if info.lock_mode.is_some() => {}
            Ok(_) => v.problems.push(format!("manifest `{mkey}`: not locked")),
            Err(e) => v.problems.push(format!("manifest `{mkey}`: {e}")),
        }
        for o in m.objects {
            if !seen_keys.insert((o.key.clone(), o.version.clone())) {
                continue;
            }
            v.objects += 1;
            let parquet = matches!(o.format.as_deref(), Some("parquet" | "ocsf"));
            match o.format.as_deref() {
                Some("parquet") => v.parquet_files += 1,
                Some("ocsf") => v.ocsf_files += 1,
                _ => v.events += o.events,
            }
            covered.extend(o.seqs.iter().copied());
            match a.s3.head_object(&o.key, o.version.as_deref()).await {
                Ok(info) => {
                    if info.lock_mode.is_none() {
                        v.problems.push(format!("object `{}`: not locked", o.key));
                    }
                    if info
                        .checksum_sha256
                        .as_deref()
                        .is_some_and(|c| c != o.sha256)
                    {
                        v.problems.push(format!(
                            "object `{}`: checksum differs from the manifest",
                            o.key
                        ));
                    }
                }
                Err(e) => v
                    .problems
                    .push(format!("object `{}` ({:?}): {e}", o.key, o.version)),
            }
            if deep {
                match a.s3.get_object(&o.key, o.version.as_deref()).await {
                    Ok(bytes) => {
                        use base64::Engine as _;
                        let sha = base64::engine::general_purpose::STANDARD
                            .encode(sha2::Sha256::digest(&bytes));
                        if sha != o.sha256 {
                            v.problems.push(format!(
                                "object `{}`: its bytes do not match the manifest's SHA-256",
                                o.key
                            ));
                        }
                        if parquet {
                            if !(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1")) {
                                v.problems
                                    .push(format!("object `{}`: not a Parquet file", o.key));
                            }
                            continue;
                        }
                        match zstd::decode_all(&bytes[..]) {
                            Ok(text) => {
                                let n = text
                                    .split(|b| *b == b'\n')
                                    .filter(|l| !l.is_empty())
                                    .count() as u64;
                                if n != o.events {
                                    v.problems.push(format!(
                                        "object `{}`: {n} events, the manifest says {}",
                                        o.key, o.events
                                    ));
                                }
                            }
                            Err(e) => v
                                .problems
                                .push(format!("object `{}`: not zstd ({e})", o.key)),
                        }
                    }
                    Err(e) => v.problems.push(format!("object `{}`: {e}", o.key)),
                }
            }
        }
    }
    covered.sort_unstable();
    let mut end: Option<u64> = None;
    for [first, last] in covered {
        match end {
            None => v.first = Some(first),
            Some(e) if first > e + 1 => v.problems.push(format!(
                "log positions {}..{} are not in the archive",
                e + 1,
                first - 1
            )),
            _ => {}
        }
        end = Some(end.map_or(last, |e| e.max(last)));
    }
    v.last = end;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_compress_consecutive_positions() {
        assert_eq!(runs([1, 2, 3, 5, 7, 8]), vec![[1, 3], [5, 5], [7, 8]]);
        assert!(runs([]).is_empty());
    }
}
