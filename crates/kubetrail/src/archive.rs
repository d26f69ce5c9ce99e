//! The immutable S3 archive as a sink: each batch becomes one zstd-compressed JSON-lines object per cluster
//! and hour, under `<prefix>cluster=<c>/year=<y>/month=<m>/day=<d>/hour=<h>/<first>-<last>.jsonl.zst` (the
//! log positions of its first and last record, so a re-send writes the same key), each put with a checksum
//! and a per-object Object Lock (mode, retain-until from the retention, legal hold), then verified by HEAD.

use std::collections::BTreeMap;

use bytes::Bytes;
use kubetrail_sinks::s3::{Lock, LockMode, S3};
use kubetrail_sinks::{Outcome, Record};

/// The archive's bucket and lock.
#[derive(Debug)]
pub struct Archive {
    pub s3: S3,
    pub prefix: String,
    pub mode: LockMode,
    pub retain_days: u32,
    pub legal_hold: bool,
}

impl Archive {
    /// Checks the bucket has Object Lock (an error names what is wrong).
    pub async fn prepare(&self) -> Result<(), String> {
        self.s3
            .prepare()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
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
        let retain_until = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(
                24 * i64::from(self.retain_days),
            ))
            .unwrap_or(jiff::Timestamp::MAX);
        let lock = Lock {
            mode: self.mode,
            retain_until,
            legal_hold: self.legal_hold,
        };
        let mut retry = Vec::new();
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
                Ok(_) => {}
                // Transport failures and 5xx, but also a refused lock, a bucket without Object Lock or a
                // failed verification: server or configuration problems, never the records' fault, so they
                // are kept and retried, never dead-lettered.
                Err(e) => {
                    reason = e.to_string();
                    retry.extend(idx.iter().copied());
                }
            }
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
