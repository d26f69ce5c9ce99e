//! Audit events as OCSF 1.1.0 "API Activity" records (class 6003, category 6 "Application Activity") in
//! Parquet, for an Amazon Security Lake custom source.
//!
//! The mapping follows Amazon's EKS audit log mapping (`ocsf/examples`, `AWS/v1.1.0/EKS Audit Logs`), so queries
//! written for Security Lake's EKS table work on these records too:
//!
//! | OCSF | audit event |
//! |---|---|
//! | `activity_id` / `activity_name` | `verb`: create 1, get/list/watch 2 Read, update/patch 3, delete/deletecollection 4, other verbs 99 with the verb as name, none 0 |
//! | `type_uid` / `type_name` | 600300 + `activity_id` / `API Activity: <Create…Other>` |
//! | `time` | `stageTimestamp`, else `requestReceivedTimestamp` (else `v1beta1`'s `timestamp`, else when kubetrail received it) |
//! | `start_time` | `requestReceivedTimestamp` (else `v1beta1`'s `timestamp`) |
//! | `status_id` / `status` / `status_code` / `status_detail` | 1 Success (code below 400), 2 Failure (400 and above, or authorization `forbid`), 0 Unknown (no answer yet) / `responseStatus.code` / `responseStatus.message` |
//! | `message` | `stage` (as Amazon) |
//! | `actor.user` | `user`: `username` → `name`, `uid`, `groups[]` → `groups[].name`; `type_id` 3 System for `system:` names, 1 User otherwise |
//! | `actor.session.credential_uid` | `user.extra["authentication.kubernetes.io/credential-id"]` or EKS's `accessKeyId` |
//! | `actor.authorizations[]` | annotation `authorization.k8s.io/decision` → `decision`, `…/reason` → `policy.desc` |
//! | `api` | `verb` → `operation`, `auditID` → `request.uid`, `objectRef.apiVersion` → `version`, `objectRef.apiGroup` → `group.name`, `responseStatus` `code`/`message`/`reason` → `response.code`/`message`/`error`, `service.name` `kubernetes` |
//! | `src_endpoint` | `sourceIPs[0]` → `ip`, the rest (proxies) → `intermediate_ips` |
//! | `http_request` | `userAgent` → `user_agent`, `requestURI` → `url.path` and `url.query_string` |
//! | `resources[0]` | `objectRef`: `uid`, `name`, `namespace`, `resourceVersion` → `version`, `resource[/subresource]` → `type` (none for non-resource requests) |
//! | `cloud` | provider `AWS`, [`LakeSource`]'s region and account |
//! | `metadata` | version `1.1.0`, `uid` = [`Record::id`], `correlation_uid` = `auditID` (shared by a request's stages), `log_name` = the cluster, `log_level` = `level`, `log_version` = the event's `apiVersion`, `original_time` = the timestamp string `time` came from, `logged_time` = when kubetrail received it, product `kubetrail` (feature `audit`), profile `cloud` |
//! | `observables` | the user name, the impersonated user name, the source and proxy IPs, the object's uid |
//! | `unmapped` | a JSON string: `stage`, `level`, both timestamps as written (microseconds), `annotations`, `impersonatedUser`, `user.extra`, `requestObject`, `responseObject` |
//!
//! Impersonation: `actor.user` is the authenticated user (who is accountable, and what Amazon maps), the identity
//! they impersonated is `unmapped.impersonatedUser` and an observable named `unmapped.impersonatedUser.username`.
//! OCSF 1.1 has no attribute for it (`actor.invoked_by` is the name of a service).
//!
//! The Parquet schema is fixed ([`schema`]): every file has the same nested columns, nulls where the event has
//! nothing, built column by column from the mapped records (never inferred). Times are OCSF `timestamp_t` (Int64 epoch milliseconds), as in Security Lake's own OCSF 1.1 tables, with
//! `time_dt` (the `datetime` profile) as `Timestamp(ms, UTC)` beside `time`.
//! Rows are sorted by `time` (Security Lake's advice), compressed with zstd, in row groups of at most
//! [`ROW_GROUP_ROWS`] rows. The key of a file is [`lake_key`]; one file holds one event day (UTC) of
//! [`event_day`], which the caller groups by.
//!
//! An event that is not an audit event fails the whole conversion with [`OcsfError::Record`], naming the
//! record (index and id): nothing is dropped silently, the caller dead-letters it and converts the others.
//!
//! # Modules
//!
//! - `record`: the OCSF API Activity record as kubetrail writes it (serialised as JSON, and the source of the
//!   Parquet columns);
//! - `mapping`: an audit event to that record (the table above);
//! - `schema`: the fixed Arrow (Parquet) schema ([`schema`]);
//! - `columns`: the column builders that turn records into a batch of that schema.

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::Record;
use crate::fields::Fields;

mod columns;
mod mapping;
mod record;
mod schema;
#[cfg(test)]
mod tests;

pub use schema::schema;

use columns::record_batch;
use mapping::{event_time, map};
use record::ApiActivity;

/// The OCSF schema version of the records.
pub const OCSF_VERSION: &str = "1.1.0";
/// API Activity.
pub const CLASS_UID: i32 = 6003;
/// Application Activity.
pub const CATEGORY_UID: i32 = 6;
/// The most rows in one Parquet row group (Security Lake wants row groups of at most 256 MB compressed; events
/// with request and response objects run to tens of kilobytes).
pub const ROW_GROUP_ROWS: usize = 16_384;

/// Where the records come from: OCSF `cloud`, and the Security Lake custom source's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeSource {
    /// The custom source's name in Security Lake (`ext/<source_name>/…`).
    pub source_name: String,
    /// The AWS region of the lake (`cloud.region`, `region=`).
    pub region: String,
    /// The AWS account that owns the lake (`cloud.account.uid`, `accountId=`).
    pub account_id: String,
}

/// Why a batch could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcsfError {
    /// The record is not an audit event: dead-letter it, convert the others.
    #[error("record {id} (#{index}): {reason}")]
    Record {
        /// Its index in the batch.
        index: usize,
        /// Its [`Record::id`].
        id: String,
        /// Why.
        reason: String,
    },
    /// Arrow or Parquet refused the batch (a bug, not the data).
    #[error("writing OCSF Parquet: {0}")]
    Write(String),
}

impl From<OcsfError> for String {
    fn from(e: OcsfError) -> String {
        e.to_string()
    }
}

/// One record as OCSF API Activity JSON (`time` fields in epoch milliseconds, absent attributes left out,
/// `unmapped` an object). The error names the record: it is not an audit event.
pub fn api_activity(r: &Record<'_>, src: &LakeSource) -> Result<serde_json::Value, String> {
    let a = map(r, src).map_err(|e| format!("record {}: {e}", r.id))?;
    serde_json::to_value(&a).map_err(|e| format!("record {}: {e}", r.id))
}

/// The Parquet file (zstd) of `records` as OCSF API Activity, sorted by `time`, in the fixed [`schema`].
/// The first record that is not an audit event fails it all with [`OcsfError::Record`].
pub fn to_parquet(records: &[Record<'_>], src: &LakeSource) -> Result<Vec<u8>, OcsfError> {
    let mut rows = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        rows.push(map(r, src).map_err(|reason| OcsfError::Record {
            index,
            id: r.id.to_string(),
            reason,
        })?);
    }
    let mut sorted: Vec<&ApiActivity> = rows.iter().collect();
    sorted.sort_by_key(|a| a.time);
    let write = |e: &dyn std::fmt::Display| OcsfError::Write(e.to_string());
    let batch = record_batch(&sorted).map_err(|e| write(&e))?;
    let zstd = ZstdLevel::try_new(3).map_err(|e| write(&e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut w = ArrowWriter::try_new(Vec::new(), schema(), Some(props)).map_err(|e| write(&e))?;
    w.write(&batch).map_err(|e| write(&e))?;
    w.into_inner().map_err(|e| write(&e))
}

/// The object key under the archive prefix:
/// `ext/<source_name>/region=<region>/accountId=<account>/eventDay=<YYYYMMDD>/[<replica>-]<first:020>-<last:020>.parquet`
/// (`replica` names the writer when several share one Security Lake source: their log positions overlap).
pub fn lake_key(
    src: &LakeSource,
    event_day: &str,
    replica: Option<&str>,
    first: u64,
    last: u64,
) -> String {
    let tag = replica.map(|r| format!("{r}-")).unwrap_or_default();
    format!(
        "ext/{}/region={}/accountId={}/eventDay={event_day}/{tag}{first:020}-{last:020}.parquet",
        src.source_name, src.region, src.account_id
    )
}

/// The UTC day (`YYYYMMDD`) of the record's OCSF `time`: its `eventDay` partition.
pub fn event_day(r: &Record<'_>) -> Result<String, String> {
    let f = Fields::parse(r).map_err(|e| format!("record {}: {e}", r.id))?;
    Ok(event_time(&f).0.strftime("%Y%m%d").to_string())
}
