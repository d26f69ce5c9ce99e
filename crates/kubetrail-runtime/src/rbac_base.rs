//! The RBAC snapshots `kubetrail rbac import` keeps as bases for RBAC at any moment: the file as given (the
//! JSON of `kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A -o json`), checked, under
//! `DATA/rbac/base-<taken µs>-<cluster, hex>.json`, so the directory listing alone says which base answers
//! which moment. A file is written whole (a temporary file, fsynced, renamed) and never changed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kubetrail_engine::rbac::Base;

/// The largest snapshot taken, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// One base on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFile {
    pub path: PathBuf,
    /// The cluster it is of (`None`: the store's only cluster).
    pub cluster: Option<String>,
    pub taken_us: i64,
}

/// `DATA/rbac`.
pub fn dir(data: &Path) -> PathBuf {
    data.join("rbac")
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Checks `bytes` as a snapshot and keeps it as the base of `cluster` taken at `taken_us`; the number of
/// RBAC objects it holds and what it skipped.
pub fn import(
    data: &Path,
    bytes: &[u8],
    cluster: Option<&str>,
    taken_us: i64,
) -> anyhow::Result<(BaseFile, kubetrail_rbac::Snapshot)> {
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        bail!(
            "the snapshot is {} bytes, over the {MAX_SNAPSHOT_BYTES}-byte limit",
            bytes.len()
        );
    }
    let snapshot = kubetrail_rbac::parse_snapshot(bytes)?;
    if snapshot.objects.is_empty() {
        let skipped = snapshot.skipped.iter().take(5).cloned().collect::<Vec<_>>();
        bail!(
            "the snapshot holds no Role, ClusterRole, RoleBinding or ClusterRoleBinding{} (make it with `kubectl \
             get clusterroles,clusterrolebindings,roles,rolebindings -A -o json`)",
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; skipped {}", skipped.join("; "))
            }
        );
    }
    let dir = dir(data);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let name = format!(
        "base-{taken_us}-{}.json",
        cluster.map(hex).unwrap_or_else(|| "all".into())
    );
    let path = dir.join(&name);
    if path.exists() {
        let old = std::fs::read(&path).with_context(|| format!("reading `{}`", path.display()))?;
        if old != bytes {
            bail!(
                "a different snapshot of the same cluster taken at the same time is already imported (`{}`)",
                path.display()
            );
        }
    } else {
        let tmp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        };
        write().with_context(|| format!("writing `{}`", path.display()))?;
    }
    let file = BaseFile {
        path,
        cluster: cluster.map(str::to_string),
        taken_us,
    };
    Ok((file, snapshot))
}

/// The bases kept, oldest first (none when the directory does not exist).
pub fn list(data: &Path) -> anyhow::Result<Vec<BaseFile>> {
    let dir = dir(data);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing `{}`", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing `{}`", dir.display()))?;
        let name = entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_prefix("base-"))
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let Some((taken, cluster)) = stem.split_once('-') else {
            continue;
        };
        let Ok(taken_us) = taken.parse::<i64>() else {
            continue;
        };
        let cluster = match cluster {
            "all" => None,
            c => match unhex(c) {
                Some(c) => Some(c),
                None => continue,
            },
        };
        out.push(BaseFile {
            path: entry.path(),
            cluster,
            taken_us,
        });
    }
    out.sort_by(|a, b| (a.taken_us, &a.cluster).cmp(&(b.taken_us, &b.cluster)));
    Ok(out)
}

/// The base that answers `at_us` for `cluster`: the newest taken at or before it. Bases of several clusters
/// and no cluster asked is an error naming them.
pub fn choose<'a>(
    bases: &'a [BaseFile],
    cluster: Option<&str>,
    at_us: i64,
) -> Result<&'a BaseFile, String> {
    if bases.is_empty() {
        return Err(
            "no RBAC snapshot is imported: take one with `kubectl get clusterroles,clusterrolebindings,roles,\
             rolebindings -A -o json > rbac.json` and import it with `kubetrail rbac import rbac.json --taken \
             <when>`"
                .into(),
        );
    }
    let mut clusters: Vec<&str> = bases.iter().filter_map(|b| b.cluster.as_deref()).collect();
    clusters.dedup();
    if cluster.is_none() && clusters.len() > 1 {
        return Err(format!(
            "RBAC snapshots of several clusters are imported ({}): name one with --cluster",
            clusters.join(", ")
        ));
    }
    let mine = |b: &&BaseFile| match (cluster, &b.cluster) {
        (Some(c), Some(bc)) => c == bc,
        _ => true,
    };
    bases
        .iter()
        .filter(mine)
        .rfind(|b| b.taken_us <= at_us)
        .ok_or_else(|| {
            let first = bases.iter().find(mine).map(|b| b.taken_us);
            match first {
                Some(t) => format!(
                    "the first RBAC snapshot was taken at {}, after {}: RBAC before a snapshot is not known",
                    kubetrail_engine::format_time_us(t),
                    kubetrail_engine::format_time_us(at_us)
                ),
                None => format!(
                    "no RBAC snapshot of cluster {} is imported",
                    cluster.unwrap_or("")
                ),
            }
        })
}

/// Reads a base.
pub fn load(file: &BaseFile) -> anyhow::Result<Base> {
    let bytes =
        std::fs::read(&file.path).with_context(|| format!("reading `{}`", file.path.display()))?;
    let snapshot = kubetrail_rbac::parse_snapshot(&bytes)
        .with_context(|| format!("`{}`", file.path.display()))?;
    Ok(Base {
        cluster: file.cluster.clone(),
        taken_us: file.taken_us,
        snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAP: &str = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"view"},"rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]}]}]}"#;

    #[test]
    fn bases_are_kept_listed_and_chosen_by_time_and_cluster() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            choose(&[], None, 5)
                .unwrap_err()
                .contains("kubetrail rbac import")
        );
        import(dir.path(), SNAP.as_bytes(), Some("prod"), 100).unwrap();
        import(dir.path(), SNAP.as_bytes(), Some("prod"), 200).unwrap();
        // The same again is fine; a different one at the same time is not.
        import(dir.path(), SNAP.as_bytes(), Some("prod"), 200).unwrap();
        let other = SNAP.replace("pods", "secrets");
        assert!(
            import(dir.path(), other.as_bytes(), Some("prod"), 200)
                .unwrap_err()
                .to_string()
                .contains("already imported")
        );
        let bases = list(dir.path()).unwrap();
        assert_eq!(bases.len(), 2);
        assert_eq!(choose(&bases, None, 150).unwrap().taken_us, 100);
        assert_eq!(choose(&bases, Some("prod"), 250).unwrap().taken_us, 200);
        assert!(
            choose(&bases, None, 50)
                .unwrap_err()
                .contains("before a snapshot")
        );
        import(dir.path(), SNAP.as_bytes(), Some("dev/x"), 100).unwrap();
        let bases = list(dir.path()).unwrap();
        assert!(
            choose(&bases, None, 150)
                .unwrap_err()
                .contains("dev/x, prod")
        );
        let b = choose(&bases, Some("dev/x"), 150).unwrap();
        assert_eq!(b.cluster.as_deref(), Some("dev/x"));
        assert_eq!(load(b).unwrap().snapshot.objects.len(), 1);
        // Not a snapshot: refused, nothing kept.
        assert!(import(dir.path(), b"{\"kind\":\"List\",\"items\":[]}", None, 1).is_err());
        assert_eq!(list(dir.path()).unwrap().len(), 3);
    }
}
