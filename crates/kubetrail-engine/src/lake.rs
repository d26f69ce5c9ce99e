//! The lake: the S3 archive's Parquet files (`<prefix>parquet/cluster=/date=/hour=/`, and each HA replica's
//! under `<prefix>replica=<name>/parquet/`, as the `s3` sink writes them) as the `events` table: years of
//! archive, no server.
//!
//! The archive is pruned by its layout before anything is read: the replicas and clusters from one listing
//! each (or the question's cluster alone), the dates from the question's time range (or a listing when it is
//! open), and then only the files of those dates whose hour is in range (day files always). They are copied
//! into a local cache that mirrors the bucket (written whole, then renamed; a file already there with the
//! same size is not fetched again: archived files are immutable), and the embedded engine reads the cache as
//! it reads a store, day files and crash leftovers included. Every replica's files are read: an event that
//! both replicas of a pair stored (the apiserver retried a batch a dying replica had stored) is counted
//! twice, as it is in the archive.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use kubetrail_sinks::s3::{S3, S3Config};
use kubetrail_store::columnar;
use serde::{Deserialize, Serialize};

use crate::Scope;

/// Where the lake is and how to reach it (the config's `query:` with `backend: lake`, or `--lake URL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeSource {
    pub bucket: String,
    /// The archive's prefix (the `s3` sink's), empty or ending with `/`.
    pub prefix: String,
    /// The S3 endpoint (MinIO, Ceph, moto); AWS's when `None`.
    pub endpoint: Option<String>,
    pub region: String,
    /// An access key id and the file holding its secret; the standard AWS chain when `None`.
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// The local copy of the files read.
    pub cache: PathBuf,
}

/// At most this many days are enumerated from a time range; a longer range lists the dates instead.
const MAX_ENUMERATED_DAYS: i64 = 3660;

impl LakeSource {
    /// `s3://bucket/prefix` into the bucket and the prefix (ending with `/` unless empty).
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("lake `{url}`: give it as s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("lake `{url}`: no bucket"));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok((bucket.to_string(), prefix))
    }

    fn client(&self) -> Result<S3, String> {
        let credentials = match (&self.access_key_id, &self.secret_access_key_file) {
            (Some(id), Some(file)) => {
                let secret = crate::secret_file("lake: secret access key file", file)?;
                Some(kubetrail_sinks::s3::Credentials::new(id, &secret))
            }
            (None, None) => None,
            _ => return Err("lake: give access_key_id and secret_access_key_file together".into()),
        };
        S3::new(S3Config {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            path_style: None,
            credentials,
            http: kubetrail_sinks::http::HttpConfig {
                timeout: std::time::Duration::from_secs(300),
                ..Default::default()
            },
        })
        .map_err(|e| format!("lake: {e}"))
    }

    /// Copies the files `scope` may need into the cache, and returns the local roots to read as stores (one
    /// per replica, or the archive's own).
    pub async fn fetch(&self, scope: &Scope) -> Result<Vec<PathBuf>, String> {
        let s3 = self.client()?;
        let err =
            |what: &str, e: kubetrail_sinks::s3::S3Error| format!("lake: listing {what}: {e}");
        let top = s3
            .list(&self.prefix, true)
            .await
            .map_err(|e| err(&format!("s3://{}/{}", self.bucket, self.prefix), e))?;
        let mut roots: Vec<String> = Vec::new();
        if top
            .prefixes
            .iter()
            .any(|p| *p == format!("{}parquet/", self.prefix))
        {
            roots.push(self.prefix.clone());
        }
        for p in &top.prefixes {
            if p[self.prefix.len()..].starts_with("replica=") {
                roots.push(p.clone());
            }
        }
        let mut wanted: Vec<(String, u64)> = Vec::new();
        for root in &roots {
            let base = format!("{root}parquet/");
            let clusters = match &scope.cluster {
                Some(c) => vec![format!("{base}cluster={}/", columnar::cluster_dir_name(c))],
                None => {
                    s3.list(&base, true)
                        .await
                        .map_err(|e| err(&base, e))?
                        .prefixes
                }
            };
            for cluster in clusters {
                let dates = match days(scope) {
                    Some(days) => days
                        .into_iter()
                        .map(|d| format!("{cluster}date={d}/"))
                        .collect(),
                    None => {
                        s3.list(&cluster, true)
                            .await
                            .map_err(|e| err(&cluster, e))?
                            .prefixes
                    }
                };
                for date in dates {
                    let listing = s3.list(&date, false).await.map_err(|e| err(&date, e))?;
                    wanted.extend(
                        listing
                            .objects
                            .into_iter()
                            .filter(|(key, _)| key.ends_with(".parquet") && in_scope(key, scope)),
                    );
                }
            }
        }
        let cache = self.cache.join(&self.bucket);
        let fetched = futures::stream::iter(wanted.into_iter().map(|(key, size)| {
            let (s3, cache) = (&s3, &cache);
            async move { fetch_one(s3, cache, &key, size).await }
        }))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
        fetched.into_iter().collect::<Result<Vec<()>, String>>()?;
        Ok(roots
            .iter()
            .map(|r| cache.join(format!("{r}parquet")))
            .collect())
    }
}

/// The dates (`YYYY-MM-DD`) of the scope's time range, when it is bounded and not too long.
fn days(scope: &Scope) -> Option<Vec<String>> {
    let (since, until) = (scope.since?, scope.until?);
    let first = jiff::tz::Offset::UTC.to_datetime(since).date();
    let last = jiff::tz::Offset::UTC.to_datetime(until).date();
    let span = (last - first).get_days() as i64;
    if !(0..=MAX_ENUMERATED_DAYS).contains(&span) {
        return None;
    }
    let mut out = Vec::new();
    let mut d = first;
    while d <= last {
        out.push(d.to_string());
        d = d.tomorrow().ok()?;
    }
    Some(out)
}

/// Whether a file's partition (`.../date=D/hour=H/x.parquet`) may hold events of the scope: its date within
/// the range, its hour too when the date is at an end of it; day files (`hour=all`) and anything unparsed are
/// kept (the engine filters the rows).
fn in_scope(key: &str, scope: &Scope) -> bool {
    let part = |name: &str| {
        key.split('/')
            .find_map(|p| p.strip_prefix(name))
            .map(str::to_string)
    };
    let (Some(date), Some(hour)) = (part("date="), part("hour=")) else {
        return true;
    };
    let Ok(date) = date.parse::<jiff::civil::Date>() else {
        return true;
    };
    let start = match hour.parse::<i8>() {
        Ok(h) if (0..24).contains(&h) => date.at(h, 0, 0, 0),
        _ => return true,
    };
    let Ok(start) = jiff::tz::Offset::UTC.to_timestamp(start) else {
        return true;
    };
    let end = start + jiff::SignedDuration::from_hours(1);
    scope.since.is_none_or(|s| end > s) && scope.until.is_none_or(|u| start <= u)
}

/// Copies one object into the cache unless a file of its size is there.
async fn fetch_one(s3: &S3, cache: &Path, key: &str, size: u64) -> Result<(), String> {
    if key
        .split('/')
        .any(|p| p == ".." || p == "." || p.is_empty())
    {
        return Err(format!(
            "lake: refusing the key `{key}` (it would leave the cache)"
        ));
    }
    let path = cache.join(key);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    let bytes = s3
        .get_object(key, None)
        .await
        .map_err(|e| format!("lake: reading `{key}`: {e}"))?;
    let dir = path.parent().expect("a key has a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("lake: `{}`: {e}", dir.display()))?;
    // A name the store's listing ignores until it is whole.
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, &bytes).map_err(|e| format!("lake: `{}`: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("lake: `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        assert_eq!(
            LakeSource::parse_url("s3://audit-archive/k8s/prod").unwrap(),
            ("audit-archive".into(), "k8s/prod/".into())
        );
        assert_eq!(
            LakeSource::parse_url("s3://audit-archive").unwrap(),
            ("audit-archive".into(), String::new())
        );
        assert!(LakeSource::parse_url("https://x/y").is_err());
        assert!(LakeSource::parse_url("s3:///y").is_err());
    }

    #[test]
    fn partitions_are_pruned_by_the_time_range() {
        let t = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        let scope = Scope {
            cluster: None,
            since: t("2026-01-02T10:30:00Z"),
            until: t("2026-01-04T01:00:00Z"),
        };
        assert_eq!(
            days(&scope).unwrap(),
            ["2026-01-02", "2026-01-03", "2026-01-04"]
        );
        let key =
            |d: &str, h: &str| format!("k/parquet/cluster=prod/date={d}/hour={h}/1-2.parquet");
        assert!(!in_scope(&key("2026-01-02", "09"), &scope));
        assert!(
            in_scope(&key("2026-01-02", "10"), &scope),
            "the hour holding since"
        );
        assert!(in_scope(&key("2026-01-03", "23"), &scope));
        assert!(
            in_scope(&key("2026-01-04", "01"), &scope),
            "the hour starting at until"
        );
        assert!(!in_scope(&key("2026-01-04", "02"), &scope));
        assert!(
            in_scope(&key("2026-01-02", "all"), &scope),
            "day files are kept"
        );
        assert!(!in_scope(&key("2026-01-05", "00"), &scope));
        assert!(
            in_scope(&key("2026-01-02", "99"), &scope),
            "a name the archive does not write: kept"
        );
        assert_eq!(
            days(&Scope::default()),
            None,
            "an open range lists the dates"
        );
    }
}
