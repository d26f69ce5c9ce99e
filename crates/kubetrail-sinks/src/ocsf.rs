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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields as ArrowFields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use kubetrail_model::UserInfo;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::Record;
use crate::fields::{Fields, Verdict};

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
/// `ext/<source_name>/region=<region>/accountId=<account>/eventDay=<YYYYMMDD>/<first:020>-<last:020>.parquet`.
pub fn lake_key(src: &LakeSource, event_day: &str, first: u64, last: u64) -> String {
    format!(
        "ext/{}/region={}/accountId={}/eventDay={event_day}/{first:020}-{last:020}.parquet",
        src.source_name, src.region, src.account_id
    )
}

/// The UTC day (`YYYYMMDD`) of the record's OCSF `time`: its `eventDay` partition.
pub fn event_day(r: &Record<'_>) -> Result<String, String> {
    let f = Fields::parse(r).map_err(|e| format!("record {}: {e}", r.id))?;
    Ok(event_time(&f).0.strftime("%Y%m%d").to_string())
}

// ---------------------------------------------------------------------------------------------------------
// The mapping

#[derive(Debug, Serialize)]
struct ApiActivity {
    activity_id: i32,
    activity_name: String,
    category_uid: i32,
    category_name: &'static str,
    class_uid: i32,
    class_name: &'static str,
    type_uid: i64,
    type_name: String,
    severity_id: i32,
    severity: &'static str,
    status_id: i32,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<String>,
    message: String,
    time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<i64>,
    actor: Actor,
    api: Api,
    src_endpoint: Endpoint,
    http_request: HttpRequest,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<Resource>,
    cloud: Cloud,
    metadata: Metadata,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    observables: Vec<Observable>,
    unmapped: Box<RawValue>,
}

#[derive(Debug, Serialize)]
struct Actor {
    user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<Session>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorizations: Vec<Authorization>,
}

#[derive(Debug, Serialize)]
struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    type_id: i32,
    groups: Vec<Named>,
}

#[derive(Debug, Serialize)]
struct Named {
    name: String,
}

#[derive(Debug, Serialize)]
struct Session {
    credential_uid: String,
}

#[derive(Debug, Serialize)]
struct Authorization {
    decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<Policy>,
}

#[derive(Debug, Serialize)]
struct Policy {
    desc: String,
}

#[derive(Debug, Serialize)]
struct Api {
    operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    service: Named,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<Named>,
    request: ApiRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ApiResponse>,
}

#[derive(Debug, Serialize)]
struct ApiRequest {
    uid: String,
}

#[derive(Debug, Serialize)]
struct ApiResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    intermediate_ips: Vec<String>,
}

#[derive(Debug, Serialize)]
struct HttpRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    url: Url,
}

#[derive(Debug, Serialize)]
struct Url {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string: Option<String>,
}

#[derive(Debug, Serialize)]
struct Resource {
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

#[derive(Debug, Serialize)]
struct Cloud {
    provider: &'static str,
    region: String,
    account: Account,
}

#[derive(Debug, Serialize)]
struct Account {
    uid: String,
}

#[derive(Debug, Serialize)]
struct Metadata {
    version: &'static str,
    uid: String,
    correlation_uid: String,
    log_name: String,
    log_level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_time: Option<String>,
    logged_time: i64,
    profiles: Vec<&'static str>,
    product: Product,
}

#[derive(Debug, Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
    feature: Named,
}

#[derive(Debug, Serialize)]
struct Observable {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    type_id: i32,
    value: String,
}

/// The forensic rest of the event, in the audit event's own names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Unmapped<'e, 'a> {
    stage: &'e str,
    level: &'e str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_received_timestamp: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage_timestamp: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'e BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<&'e UserInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserExtra<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_object: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_object: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct UserExtra<'a> {
    extra: &'a RawValue,
}

fn ne(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The OCSF `time` and the event's timestamp string it came from (none: when kubetrail received it).
fn event_time<'f>(f: &'f Fields<'_>) -> (jiff::Timestamp, Option<&'f str>) {
    let ev = &f.ev;
    [
        ev.stage_timestamp.as_deref(),
        ev.request_received_timestamp.as_deref(),
        ev.timestamp.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find_map(|s| s.parse::<jiff::Timestamp>().ok().map(|t| (t, Some(s))))
    .unwrap_or((f.time, None))
}

/// `activity_id` and the OCSF activity name of a verb.
fn activity(verb: &str) -> (i32, &'static str) {
    match verb {
        "create" => (1, "Create"),
        "get" | "list" | "watch" => (2, "Read"),
        "update" | "patch" => (3, "Update"),
        "delete" | "deletecollection" => (4, "Delete"),
        "" => (0, "Unknown"),
        _ => (99, "Other"),
    }
}

/// OCSF user `type_id` and `type`: Kubernetes reserves `system:` for its own identities (service accounts,
/// nodes, control-plane components, anonymous).
fn user_type(name: &str) -> (i32, &'static str) {
    if name.is_empty() {
        (0, "Unknown")
    } else if name.starts_with("system:") {
        (3, "System")
    } else {
        (1, "User")
    }
}

/// The credential the user authenticated with: Kubernetes' `credential-id` (`X509SHA256=…`, `JTI=…`), EKS's
/// `accessKeyId`.
fn credential_uid(user: &UserInfo<'_>) -> Option<String> {
    let extra: BTreeMap<String, Vec<String>> = serde_json::from_str(user.extra?.get()).ok()?;
    ["authentication.kubernetes.io/credential-id", "accessKeyId"]
        .iter()
        .find_map(|k| extra.get(*k).and_then(|v| v.first()).cloned())
}

fn map(r: &Record<'_>, src: &LakeSource) -> Result<ApiActivity, String> {
    let f = Fields::parse(r)?;
    let ev = &f.ev;
    let (time, original_time) = event_time(&f);
    let start_time = ev
        .request_received_timestamp
        .as_deref()
        .or(ev.timestamp.as_deref())
        .and_then(|s| s.parse::<jiff::Timestamp>().ok());

    let (activity_id, activity) = activity(&ev.verb);
    let activity_name = if activity_id == 99 {
        ev.verb.to_string()
    } else {
        activity.to_string()
    };
    let (status_id, status) = match f.success() {
        Verdict::Success => (1, "Success"),
        Verdict::Failure => (2, "Failure"),
        Verdict::Unknown => (0, "Unknown"),
    };
    let rs = ev.response_status.as_ref();

    let (type_id, kind) = user_type(&ev.user.username);
    let user = User {
        name: ne(&ev.user.username),
        uid: ev.user.uid.as_deref().and_then(ne),
        kind,
        type_id,
        groups: ev
            .user
            .groups
            .iter()
            .map(|g| Named {
                name: g.to_string(),
            })
            .collect(),
    };
    let authorizations = match f.decision() {
        "" => Vec::new(),
        d => vec![Authorization {
            decision: d.to_string(),
            policy: ne(f.reason()).map(|desc| Policy { desc }),
        }],
    };
    let actor = Actor {
        user,
        session: credential_uid(&ev.user).map(|credential_uid| Session { credential_uid }),
        authorizations,
    };

    let obj = ev.object_ref.as_ref();
    let api = Api {
        operation: ev.verb.to_string(),
        version: obj.and_then(|o| ne(&o.api_version)),
        service: Named {
            name: "kubernetes".to_string(),
        },
        group: obj
            .and_then(|o| ne(&o.api_group))
            .map(|name| Named { name }),
        request: ApiRequest {
            uid: ev.audit_id.to_string(),
        },
        response: rs.map(|s| ApiResponse {
            code: s.code,
            message: s.message.as_deref().and_then(ne),
            error: s.reason.as_deref().and_then(ne),
        }),
    };
    let resources = match obj {
        Some(o) => vec![Resource {
            uid: o.uid.as_deref().and_then(ne),
            name: ne(&o.name),
            kind: f.resource_path(),
            namespace: ne(&o.namespace),
            version: o.resource_version.as_deref().and_then(ne),
        }],
        None => Vec::new(),
    };

    let mut ips = ev.source_ips.iter().map(|ip| ip.to_string());
    let src_endpoint = Endpoint {
        ip: ips.next(),
        intermediate_ips: ips.collect(),
    };
    let (path, query) = match ev.request_uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (ev.request_uri.as_ref(), None),
    };
    let http_request = HttpRequest {
        user_agent: ne(f.user_agent()),
        url: Url {
            path: path.to_string(),
            query_string: query.and_then(ne),
        },
    };

    let mut observables = Vec::new();
    let mut observe = |name, kind, type_id, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            observables.push(Observable {
                name,
                kind,
                type_id,
                value: v.to_string(),
            });
        }
    };
    observe("actor.user.name", "User Name", 4, Some(&ev.user.username));
    observe(
        "unmapped.impersonatedUser.username",
        "User Name",
        4,
        Some(f.impersonated()),
    );
    observe(
        "src_endpoint.ip",
        "IP Address",
        2,
        src_endpoint.ip.as_deref(),
    );
    for ip in &src_endpoint.intermediate_ips {
        observe("src_endpoint.intermediate_ips", "IP Address", 2, Some(ip));
    }
    for res in &resources {
        observe("resources.uid", "Resource UID", 10, res.uid.as_deref());
    }

    let unmapped = Unmapped {
        stage: ev.stage.as_str(),
        level: ev.level.as_str(),
        request_received_timestamp: ev.request_received_timestamp.as_deref(),
        stage_timestamp: ev.stage_timestamp.as_deref(),
        timestamp: ev.timestamp.as_deref(),
        annotations: ev.annotations.as_ref().filter(|a| !a.is_empty()),
        impersonated_user: ev.impersonated_user.as_ref(),
        user: ev.user.extra.map(|extra| UserExtra { extra }),
        request_object: ev.request_object,
        response_object: ev.response_object,
    };
    let unmapped = serde_json::to_string(&unmapped)
        .and_then(RawValue::from_string)
        .map_err(|e| format!("unmapped fields: {e}"))?;

    Ok(ApiActivity {
        activity_id,
        activity_name,
        category_uid: CATEGORY_UID,
        category_name: "Application Activity",
        class_uid: CLASS_UID,
        class_name: "API Activity",
        type_uid: i64::from(CLASS_UID) * 100 + i64::from(activity_id),
        type_name: format!("API Activity: {activity}"),
        severity_id: 1,
        severity: "Informational",
        status_id,
        status,
        status_code: rs.and_then(|s| s.code).map(|c| c.to_string()),
        status_detail: rs.and_then(|s| s.message.as_deref()).and_then(ne),
        message: ev.stage.as_str().to_string(),
        time: time.as_millisecond(),
        start_time: start_time.map(|t| t.as_millisecond()),
        actor,
        api,
        src_endpoint,
        http_request,
        resources,
        cloud: Cloud {
            provider: "AWS",
            region: src.region.clone(),
            account: Account {
                uid: src.account_id.clone(),
            },
        },
        metadata: Metadata {
            version: OCSF_VERSION,
            uid: r.id.to_string(),
            correlation_uid: ev.audit_id.to_string(),
            log_name: r.cluster.to_string(),
            log_level: ev.level.as_str(),
            log_version: ev.api_version.as_deref().and_then(ne),
            original_time: original_time.map(str::to_string),
            logged_time: r.received_us.div_euclid(1000),
            profiles: vec!["cloud"],
            product: Product {
                name: "kubetrail",
                vendor_name: "kubetrail",
                version: env!("CARGO_PKG_VERSION"),
                feature: Named {
                    name: "audit".to_string(),
                },
            },
        },
        observables,
        unmapped,
    })
}

// ---------------------------------------------------------------------------------------------------------
// The Parquet schema and its columns. Each `*_fields` function and the builder of the same struct list the
// children in the same order; `RecordBatch::try_new` checks every type against `schema()`.

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn int32(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int32, nullable)
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn struct_field(name: &str, fields: ArrowFields, nullable: bool) -> Field {
    Field::new(name, DataType::Struct(fields), nullable)
}

fn list_type(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

fn list_field(name: &str, item: DataType) -> Field {
    Field::new(name, list_type(item), true)
}

fn named_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("name")])
}

fn user_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("name"),
        utf8("uid"),
        utf8("type"),
        int32("type_id", true),
        list_field("groups", DataType::Struct(named_fields())),
    ])
}

fn session_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("credential_uid")])
}

fn policy_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("desc")])
}

fn authorization_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("decision"),
        struct_field("policy", policy_fields(), true),
    ])
}

fn actor_fields() -> ArrowFields {
    ArrowFields::from(vec![
        struct_field("user", user_fields(), true),
        struct_field("session", session_fields(), true),
        list_field("authorizations", DataType::Struct(authorization_fields())),
    ])
}

fn api_request_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("uid")])
}

fn api_response_fields() -> ArrowFields {
    ArrowFields::from(vec![int32("code", true), utf8("message"), utf8("error")])
}

fn api_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("operation"),
        utf8("version"),
        struct_field("service", named_fields(), true),
        struct_field("group", named_fields(), true),
        struct_field("request", api_request_fields(), true),
        struct_field("response", api_response_fields(), true),
    ])
}

fn endpoint_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("ip"),
        list_field("intermediate_ips", DataType::Utf8),
    ])
}

fn url_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("path"), utf8("query_string")])
}

fn http_request_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("user_agent"),
        struct_field("url", url_fields(), true),
    ])
}

fn resource_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("uid"),
        utf8("name"),
        utf8("type"),
        utf8("namespace"),
        utf8("version"),
    ])
}

fn account_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("uid")])
}

fn cloud_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("provider"),
        utf8("region"),
        struct_field("account", account_fields(), true),
    ])
}

fn product_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("name"),
        utf8("vendor_name"),
        utf8("version"),
        struct_field("feature", named_fields(), true),
    ])
}

fn metadata_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("version"),
        utf8("uid"),
        utf8("correlation_uid"),
        utf8("log_name"),
        utf8("log_level"),
        utf8("log_version"),
        utf8("original_time"),
        Field::new("logged_time", ts_type(), true),
        list_field("profiles", DataType::Utf8),
        struct_field("product", product_fields(), true),
    ])
}

fn observable_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("name"),
        utf8("type"),
        int32("type_id", true),
        utf8("value"),
    ])
}

/// The Arrow schema of every file (the Parquet schema follows from it).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        int32("activity_id", false),
        utf8("activity_name"),
        int32("category_uid", false),
        utf8("category_name"),
        int32("class_uid", false),
        utf8("class_name"),
        Field::new("type_uid", DataType::Int64, false),
        utf8("type_name"),
        int32("severity_id", false),
        utf8("severity"),
        int32("status_id", true),
        utf8("status"),
        utf8("status_code"),
        utf8("status_detail"),
        utf8("message"),
        Field::new("time", DataType::Int64, false),
        Field::new("time_dt", ts_type(), false),
        Field::new("start_time", DataType::Int64, true),
        struct_field("actor", actor_fields(), false),
        struct_field("api", api_fields(), false),
        struct_field("src_endpoint", endpoint_fields(), false),
        struct_field("http_request", http_request_fields(), true),
        list_field("resources", DataType::Struct(resource_fields())),
        struct_field("cloud", cloud_fields(), false),
        struct_field("metadata", metadata_fields(), false),
        list_field("observables", DataType::Struct(observable_fields())),
        utf8("unmapped"),
    ]))
}

fn strs<'a, T>(rows: &[&'a T], f: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(|r| f(r)).collect::<StringArray>())
}

fn i32s<T>(rows: &[&T], f: impl Fn(&T) -> Option<i32>) -> ArrayRef {
    Arc::new(rows.iter().map(|r| f(r)).collect::<Int32Array>())
}

fn i64s<T>(rows: &[&T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(rows.iter().map(|r| f(r)).collect::<Int64Array>())
}

fn times<T>(rows: &[&T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(|r| f(r))
            .collect::<TimestampMillisecondArray>()
            .with_timezone("UTC"),
    )
}

/// A struct column; `valid` says which rows have one (none: all).
fn structs(
    fields: ArrowFields,
    children: Vec<ArrayRef>,
    valid: Option<Vec<bool>>,
) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(StructArray::try_new(
        fields,
        children,
        valid.map(NullBuffer::from),
    )?))
}

/// A list column: `items` of each row (`None`: null), their values built by `values` from all rows' items.
fn lists<'a, T, U: 'a>(
    rows: &[&'a T],
    items: impl Fn(&'a T) -> Option<&'a [U]>,
    item_type: DataType,
    values: impl FnOnce(&[&'a U]) -> Result<ArrayRef, ArrowError>,
) -> Result<ArrayRef, ArrowError> {
    let mut flat = Vec::new();
    let mut lengths = Vec::with_capacity(rows.len());
    let mut valid = Vec::with_capacity(rows.len());
    for r in rows {
        let xs = items(r);
        valid.push(xs.is_some());
        let xs = xs.unwrap_or_default();
        lengths.push(xs.len());
        flat.extend(xs);
    }
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new_list_field(item_type, true)),
        OffsetBuffer::from_lengths(lengths),
        values(&flat)?,
        Some(NullBuffer::from(valid)),
    )?))
}

fn named(rows: &[&Named]) -> Result<ArrayRef, ArrowError> {
    structs(named_fields(), vec![strs(rows, |n| Some(&n.name))], None)
}

fn string_list<'a, T>(
    rows: &[&'a T],
    items: impl Fn(&'a T) -> Option<&'a [String]>,
) -> Result<ArrayRef, ArrowError> {
    lists(rows, items, DataType::Utf8, |xs| {
        Ok(strs(xs, |s| Some(s.as_str())))
    })
}

fn non_empty<T>(v: &[T]) -> Option<&[T]> {
    (!v.is_empty()).then_some(v)
}

fn actor_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let actors: Vec<&Actor> = rows.iter().map(|a| &a.actor).collect();
    let users: Vec<&User> = actors.iter().map(|a| &a.user).collect();
    let user = structs(
        user_fields(),
        vec![
            strs(&users, |u| u.name.as_deref()),
            strs(&users, |u| u.uid.as_deref()),
            strs(&users, |u| Some(u.kind)),
            i32s(&users, |u| Some(u.type_id)),
            lists(
                &users,
                |u| Some(&u.groups[..]),
                DataType::Struct(named_fields()),
                named,
            )?,
        ],
        None,
    )?;
    let session = structs(
        session_fields(),
        vec![strs(&actors, |a| {
            a.session.as_ref().map(|s| s.credential_uid.as_str())
        })],
        Some(actors.iter().map(|a| a.session.is_some()).collect()),
    )?;
    let authorizations = lists(
        &actors,
        |a| non_empty(&a.authorizations),
        DataType::Struct(authorization_fields()),
        |az| {
            let policy = structs(
                policy_fields(),
                vec![strs(az, |z| z.policy.as_ref().map(|p| p.desc.as_str()))],
                Some(az.iter().map(|z| z.policy.is_some()).collect()),
            )?;
            structs(
                authorization_fields(),
                vec![strs(az, |z| Some(&z.decision)), policy],
                None,
            )
        },
    )?;
    structs(actor_fields(), vec![user, session, authorizations], None)
}

fn api_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let apis: Vec<&Api> = rows.iter().map(|a| &a.api).collect();
    let services: Vec<&Named> = apis.iter().map(|a| &a.service).collect();
    let group = structs(
        named_fields(),
        vec![strs(&apis, |a| a.group.as_ref().map(|g| g.name.as_str()))],
        Some(apis.iter().map(|a| a.group.is_some()).collect()),
    )?;
    let request = structs(
        api_request_fields(),
        vec![strs(&apis, |a| Some(&a.request.uid))],
        None,
    )?;
    let response = structs(
        api_response_fields(),
        vec![
            i32s(&apis, |a| a.response.as_ref().and_then(|r| r.code)),
            strs(&apis, |a| {
                a.response.as_ref().and_then(|r| r.message.as_deref())
            }),
            strs(&apis, |a| {
                a.response.as_ref().and_then(|r| r.error.as_deref())
            }),
        ],
        Some(apis.iter().map(|a| a.response.is_some()).collect()),
    )?;
    structs(
        api_fields(),
        vec![
            strs(&apis, |a| Some(&a.operation)),
            strs(&apis, |a| a.version.as_deref()),
            named(&services)?,
            group,
            request,
            response,
        ],
        None,
    )
}

fn src_endpoint_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let eps: Vec<&Endpoint> = rows.iter().map(|a| &a.src_endpoint).collect();
    structs(
        endpoint_fields(),
        vec![
            strs(&eps, |e| e.ip.as_deref()),
            string_list(&eps, |e| non_empty(&e.intermediate_ips))?,
        ],
        None,
    )
}

fn http_request_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let reqs: Vec<&HttpRequest> = rows.iter().map(|a| &a.http_request).collect();
    let url = structs(
        url_fields(),
        vec![
            strs(&reqs, |h| Some(&h.url.path)),
            strs(&reqs, |h| h.url.query_string.as_deref()),
        ],
        None,
    )?;
    structs(
        http_request_fields(),
        vec![strs(&reqs, |h| h.user_agent.as_deref()), url],
        None,
    )
}

fn resources_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    lists(
        rows,
        |a| non_empty(&a.resources),
        DataType::Struct(resource_fields()),
        |rs| {
            structs(
                resource_fields(),
                vec![
                    strs(rs, |r| r.uid.as_deref()),
                    strs(rs, |r| r.name.as_deref()),
                    strs(rs, |r| Some(&r.kind)),
                    strs(rs, |r| r.namespace.as_deref()),
                    strs(rs, |r| r.version.as_deref()),
                ],
                None,
            )
        },
    )
}

fn cloud_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let clouds: Vec<&Cloud> = rows.iter().map(|a| &a.cloud).collect();
    let account = structs(
        account_fields(),
        vec![strs(&clouds, |c| Some(&c.account.uid))],
        None,
    )?;
    structs(
        cloud_fields(),
        vec![
            strs(&clouds, |c| Some(c.provider)),
            strs(&clouds, |c| Some(&c.region)),
            account,
        ],
        None,
    )
}

fn metadata_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let metas: Vec<&Metadata> = rows.iter().map(|a| &a.metadata).collect();
    let products: Vec<&Product> = metas.iter().map(|m| &m.product).collect();
    let features: Vec<&Named> = products.iter().map(|p| &p.feature).collect();
    let product = structs(
        product_fields(),
        vec![
            strs(&products, |p| Some(p.name)),
            strs(&products, |p| Some(p.vendor_name)),
            strs(&products, |p| Some(p.version)),
            named(&features)?,
        ],
        None,
    )?;
    let profiles = lists(
        &metas,
        |m| Some(&m.profiles[..]),
        DataType::Utf8,
        |ps| Ok(strs(ps, |p| Some(*p))),
    )?;
    structs(
        metadata_fields(),
        vec![
            strs(&metas, |m| Some(m.version)),
            strs(&metas, |m| Some(&m.uid)),
            strs(&metas, |m| Some(&m.correlation_uid)),
            strs(&metas, |m| Some(&m.log_name)),
            strs(&metas, |m| Some(m.log_level)),
            strs(&metas, |m| m.log_version.as_deref()),
            strs(&metas, |m| m.original_time.as_deref()),
            times(&metas, |m| Some(m.logged_time)),
            profiles,
            product,
        ],
        None,
    )
}

fn observables_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    lists(
        rows,
        |a| non_empty(&a.observables),
        DataType::Struct(observable_fields()),
        |os| {
            structs(
                observable_fields(),
                vec![
                    strs(os, |o| Some(o.name)),
                    strs(os, |o| Some(o.kind)),
                    i32s(os, |o| Some(o.type_id)),
                    strs(os, |o| Some(&o.value)),
                ],
                None,
            )
        },
    )
}

fn record_batch(rows: &[&ApiActivity]) -> Result<RecordBatch, ArrowError> {
    let columns = vec![
        i32s(rows, |a| Some(a.activity_id)),
        strs(rows, |a| Some(&a.activity_name)),
        i32s(rows, |a| Some(a.category_uid)),
        strs(rows, |a| Some(a.category_name)),
        i32s(rows, |a| Some(a.class_uid)),
        strs(rows, |a| Some(a.class_name)),
        i64s(rows, |a| Some(a.type_uid)),
        strs(rows, |a| Some(&a.type_name)),
        i32s(rows, |a| Some(a.severity_id)),
        strs(rows, |a| Some(a.severity)),
        i32s(rows, |a| Some(a.status_id)),
        strs(rows, |a| Some(a.status)),
        strs(rows, |a| a.status_code.as_deref()),
        strs(rows, |a| a.status_detail.as_deref()),
        strs(rows, |a| Some(&a.message)),
        i64s(rows, |a| Some(a.time)),
        times(rows, |a| Some(a.time)),
        i64s(rows, |a| a.start_time),
        actor_column(rows)?,
        api_column(rows)?,
        src_endpoint_column(rows)?,
        http_request_column(rows)?,
        resources_column(rows)?,
        cloud_column(rows)?,
        metadata_column(rows)?,
        observables_column(rows)?,
        strs(rows, |a| Some(a.unmapped.get())),
    ];
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampMillisecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::{Value, json};

    fn src() -> LakeSource {
        LakeSource {
            source_name: "kubetrail".to_string(),
            region: "eu-west-1".to_string(),
            account_id: "123456789012".to_string(),
        }
    }

    fn rec<'a>(id: &'a str, event: &'a str) -> Record<'a> {
        Record {
            id,
            cluster: "prod-eu",
            received_us: 1_717_000_000_123_456,
            event,
        }
    }

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    const CREATE_POD: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods?fieldManager=kubectl-client-side-apply&dryRun=","verb":"create","user":{"username":"alice@example.com","uid":"u-1","groups":["devs","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=ab12"]}},"sourceIPs":["10.0.0.7","172.16.0.2"],"userAgent":"kubectl/v1.30.0 (linux/amd64)","objectRef":{"resource":"pods","namespace":"default","name":"nginx","uid":"p-9","apiVersion":"v1","resourceVersion":"42"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Pod","spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}},"requestReceivedTimestamp":"2024-05-29T16:26:40.100200Z","stageTimestamp":"2024-05-29T16:26:40.250300Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"devs\""}}"#;

    const GET_SECRET_FORBIDDEN: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/secrets/admin-token","verb":"get","user":{"username":"mallory","groups":["system:authenticated"]},"sourceIPs":["203.0.113.9"],"userAgent":"curl/8.5.0","objectRef":{"resource":"secrets","namespace":"kube-system","name":"admin-token","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","message":"secrets \"admin-token\" is forbidden: User \"mallory\" cannot get resource \"secrets\" in API group \"\" in the namespace \"kube-system\"","reason":"Forbidden","details":{"name":"admin-token","kind":"secrets"},"code":403},"requestReceivedTimestamp":"2024-05-29T16:27:00.000000Z","stageTimestamp":"2024-05-29T16:27:00.001000Z","annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}"#;

    const DELETE_DEPLOYMENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/shop/deployments/cart","verb":"delete","user":{"username":"system:serviceaccount:argocd:argocd-application-controller","uid":"sa-1","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["10.1.2.3"],"objectRef":{"resource":"deployments","namespace":"shop","name":"cart","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Success","code":200},"requestReceivedTimestamp":"2024-05-29T23:59:59.900000Z","stageTimestamp":"2024-05-30T00:00:00.100000Z"}"#;

    const EXEC: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"a4","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/shop/pods/cart-7d9/exec?command=sh&container=cart&stdin=true&stdout=true&tty=true","verb":"create","user":{"username":"bob","groups":["system:authenticated"]},"sourceIPs":["10.0.0.8"],"userAgent":"kubectl/v1.30.0","objectRef":{"resource":"pods","namespace":"shop","name":"cart-7d9","apiVersion":"v1","subresource":"exec"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2024-05-29T16:28:00.000000Z","stageTimestamp":"2024-05-29T16:28:00.050000Z"}"#;

    const IMPERSONATED: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a5","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/configmaps","verb":"list","user":{"username":"admin","groups":["system:masters"]},"impersonatedUser":{"username":"system:serviceaccount:kube-system:deployer","groups":["system:serviceaccounts"]},"sourceIPs":["10.0.0.9"],"objectRef":{"resource":"configmaps","namespace":"kube-system","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2024-05-29T16:29:00.000000Z","stageTimestamp":"2024-05-29T16:29:00.010000Z"}"#;

    fn map_json(id: &str, event: &str) -> Value {
        api_activity(&rec(id, event), &src()).unwrap()
    }

    #[test]
    fn create_pod() {
        let v = map_json("a1-ResponseComplete", CREATE_POD);
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["class_name"], "API Activity");
        assert_eq!(v["category_uid"], 6);
        assert_eq!(v["category_name"], "Application Activity");
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["activity_name"], "Create");
        assert_eq!(v["type_uid"], 600301);
        assert_eq!(v["type_name"], "API Activity: Create");
        assert_eq!(v["severity_id"], 1);
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["status"], "Success");
        assert_eq!(v["status_code"], "201");
        assert_eq!(v["time"], ms("2024-05-29T16:26:40.250Z"), "stageTimestamp");
        assert_eq!(v["start_time"], ms("2024-05-29T16:26:40.100Z"));
        assert_eq!(v["message"], "ResponseComplete");

        let user = &v["actor"]["user"];
        assert_eq!(user["name"], "alice@example.com");
        assert_eq!(user["uid"], "u-1");
        assert_eq!(user["type_id"], 1);
        assert_eq!(
            user["groups"],
            json!([{"name": "devs"}, {"name": "system:authenticated"}])
        );
        assert_eq!(v["actor"]["session"]["credential_uid"], "X509SHA256=ab12");
        assert_eq!(v["actor"]["authorizations"][0]["decision"], "allow");
        assert_eq!(
            v["actor"]["authorizations"][0]["policy"]["desc"],
            "RBAC: allowed by RoleBinding \"devs\""
        );

        let api = &v["api"];
        assert_eq!(api["operation"], "create");
        assert_eq!(api["request"]["uid"], "a1");
        assert_eq!(api["response"]["code"], 201);
        assert_eq!(api["service"]["name"], "kubernetes");
        assert_eq!(api["version"], "v1");
        assert!(api.get("group").is_none(), "the core group has no name");

        assert_eq!(v["src_endpoint"]["ip"], "10.0.0.7");
        assert_eq!(v["src_endpoint"]["intermediate_ips"], json!(["172.16.0.2"]));
        assert_eq!(
            v["http_request"]["user_agent"],
            "kubectl/v1.30.0 (linux/amd64)"
        );
        assert_eq!(
            v["http_request"]["url"]["path"],
            "/api/v1/namespaces/default/pods"
        );
        assert_eq!(
            v["http_request"]["url"]["query_string"],
            "fieldManager=kubectl-client-side-apply&dryRun="
        );
        assert_eq!(
            v["resources"],
            json!([{"uid": "p-9", "name": "nginx", "type": "pods", "namespace": "default", "version": "42"}])
        );
        assert_eq!(
            v["cloud"],
            json!({"provider": "AWS", "region": "eu-west-1", "account": {"uid": "123456789012"}})
        );

        let m = &v["metadata"];
        assert_eq!(m["version"], "1.1.0");
        assert_eq!(m["uid"], "a1-ResponseComplete");
        assert_eq!(m["correlation_uid"], "a1");
        assert_eq!(m["log_name"], "prod-eu");
        assert_eq!(m["log_level"], "RequestResponse");
        assert_eq!(m["log_version"], "audit.k8s.io/v1");
        assert_eq!(m["original_time"], "2024-05-29T16:26:40.250300Z");
        assert_eq!(m["logged_time"], 1_717_000_000_123_i64);
        assert_eq!(m["product"]["name"], "kubetrail");
        assert_eq!(m["product"]["vendor_name"], "kubetrail");
        assert_eq!(m["product"]["feature"]["name"], "audit");
        assert_eq!(m["profiles"], json!(["cloud"]));

        let obs: Vec<(&str, &str)> = v["observables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["name"].as_str().unwrap(), o["value"].as_str().unwrap()))
            .collect();
        assert!(obs.contains(&("actor.user.name", "alice@example.com")));
        assert!(obs.contains(&("src_endpoint.ip", "10.0.0.7")));
        assert!(obs.contains(&("resources.uid", "p-9")));

        let u = &v["unmapped"];
        assert_eq!(u["stage"], "ResponseComplete");
        assert_eq!(u["level"], "RequestResponse");
        assert_eq!(u["annotations"]["authorization.k8s.io/decision"], "allow");
        assert_eq!(
            u["requestObject"]["spec"]["containers"][0]["image"],
            "nginx:1.27"
        );
        assert_eq!(
            u["stageTimestamp"], "2024-05-29T16:26:40.250300Z",
            "microseconds kept"
        );
        assert_eq!(
            u["user"]["extra"]["authentication.kubernetes.io/credential-id"][0],
            "X509SHA256=ab12"
        );
    }

    #[test]
    fn get_secret_forbidden() {
        let v = map_json("a2-ResponseComplete", GET_SECRET_FORBIDDEN);
        assert_eq!(v["activity_id"], 2);
        assert_eq!(v["activity_name"], "Read");
        assert_eq!(v["type_uid"], 600302);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["status_code"], "403");
        assert!(
            v["status_detail"]
                .as_str()
                .unwrap()
                .starts_with("secrets \"admin-token\" is forbidden")
        );
        assert_eq!(v["api"]["response"]["code"], 403);
        assert_eq!(v["api"]["response"]["error"], "Forbidden");
        assert_eq!(v["actor"]["authorizations"][0]["decision"], "forbid");
        assert!(
            v["actor"]["authorizations"][0].get("policy").is_none(),
            "empty reason"
        );
        assert_eq!(v["resources"][0]["type"], "secrets");
        assert_eq!(v["resources"][0]["namespace"], "kube-system");
        assert!(
            v["http_request"]["url"].get("query_string").is_none(),
            "{v}"
        );
        assert!(v["actor"].get("session").is_none());
    }

    #[test]
    fn delete_and_other_verbs() {
        let v = map_json("a3-ResponseComplete", DELETE_DEPLOYMENT);
        assert_eq!(v["activity_id"], 4);
        assert_eq!(v["activity_name"], "Delete");
        assert_eq!(v["type_uid"], 600304);
        assert_eq!(v["api"]["group"]["name"], "apps");
        assert_eq!(v["resources"][0]["type"], "deployments");
        assert_eq!(
            v["actor"]["user"]["type_id"], 3,
            "service accounts are System"
        );
        assert_eq!(v["actor"]["user"]["type"], "System");
        assert_eq!(v["status_id"], 1);

        for (verb, id, name) in [
            ("deletecollection", 4, "Delete"),
            ("list", 2, "Read"),
            ("watch", 2, "Read"),
            ("patch", 3, "Update"),
            ("update", 3, "Update"),
            ("proxy", 99, "proxy"),
        ] {
            let ev =
                DELETE_DEPLOYMENT.replace(r#""verb":"delete""#, &format!(r#""verb":"{verb}""#));
            let v = map_json("x", &ev);
            assert_eq!(v["activity_id"], id, "{verb}");
            assert_eq!(v["activity_name"], name, "{verb}");
            assert_eq!(v["type_uid"], 600300 + id, "{verb}");
            assert_eq!(v["api"]["operation"], verb);
        }
        let v = map_json(
            "x",
            &DELETE_DEPLOYMENT.replace(r#""verb":"delete""#, r#""verb":"proxy""#),
        );
        assert_eq!(v["type_name"], "API Activity: Other");
    }

    #[test]
    fn exec_subresource() {
        let v = map_json("a4-ResponseStarted", EXEC);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["resources"][0]["type"], "pods/exec");
        assert_eq!(v["resources"][0]["name"], "cart-7d9");
        assert_eq!(v["status_id"], 1, "101 Switching Protocols");
        assert_eq!(v["message"], "ResponseStarted");
        assert_eq!(
            v["http_request"]["url"]["query_string"],
            "command=sh&container=cart&stdin=true&stdout=true&tty=true"
        );
    }

    #[test]
    fn impersonation_keeps_the_authenticated_user_as_actor() {
        let v = map_json("a5-ResponseComplete", IMPERSONATED);
        assert_eq!(v["actor"]["user"]["name"], "admin");
        assert_eq!(
            v["actor"]["user"]["groups"],
            json!([{"name": "system:masters"}])
        );
        assert_eq!(
            v["unmapped"]["impersonatedUser"]["username"],
            "system:serviceaccount:kube-system:deployer"
        );
        assert!(v["observables"].as_array().unwrap().iter().any(|o| {
            o["name"] == "unmapped.impersonatedUser.username"
                && o["value"] == "system:serviceaccount:kube-system:deployer"
                && o["type_id"] == 4
        }));
        assert_eq!(v["activity_id"], 2);
        assert!(
            v["resources"][0].get("name").is_none(),
            "a list names no object"
        );
    }

    #[test]
    fn time_falls_back() {
        let ev = r#"{"level":"Metadata","auditID":"a6","stage":"RequestReceived","verb":"get","requestURI":"/healthz","requestReceivedTimestamp":"2024-05-29T16:30:00.123456Z"}"#;
        let v = map_json("a6-RequestReceived", ev);
        assert_eq!(v["time"], ms("2024-05-29T16:30:00.123Z"));
        assert_eq!(v["status_id"], 0, "no answer yet");
        assert_eq!(v["status"], "Unknown");
        assert!(v.get("resources").is_none(), "non-resource request");
        assert!(v["api"].get("response").is_none());
        assert_eq!(v["http_request"]["url"]["path"], "/healthz");

        let ev = r#"{"level":"Metadata","auditID":"a7","stage":"RequestReceived","verb":"get"}"#;
        let v = map_json("a7-RequestReceived", ev);
        assert_eq!(
            v["time"], 1_717_000_000_123_i64,
            "when kubetrail received it"
        );
        assert!(v.get("start_time").is_none());
        assert!(v["metadata"].get("original_time").is_none());
    }

    #[test]
    fn malformed_events_name_the_record() {
        let e = api_activity(&rec("bad-1", "not json"), &src()).unwrap_err();
        assert!(e.starts_with("record bad-1: not an audit event"), "{e}");

        let good = rec("a1-ResponseComplete", CREATE_POD);
        let bad = rec(
            "bad-2",
            r#"{"level":"Metadata","stage":"ResponseComplete"}"#,
        );
        match to_parquet(&[good, bad], &src()) {
            Err(OcsfError::Record { index, id, reason }) => {
                assert_eq!((index, id.as_str()), (1, "bad-2"));
                assert!(reason.contains("auditID"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let e: String = to_parquet(&[bad], &src()).unwrap_err().into();
        assert!(
            e.starts_with("record bad-2 (#0): not an audit event"),
            "{e}"
        );
        assert!(event_day(&bad).unwrap_err().contains("bad-2"));
    }

    #[test]
    fn parquet_round_trip() {
        let records = [
            rec("a3-ResponseComplete", DELETE_DEPLOYMENT),
            rec("a1-ResponseComplete", CREATE_POD),
            rec(
                "a6-RequestReceived",
                r#"{"level":"Metadata","auditID":"a6","stage":"RequestReceived","verb":"get","requestURI":"/healthz","requestReceivedTimestamp":"2024-05-29T16:30:00Z"}"#,
            ),
            rec("a5-ResponseComplete", IMPERSONATED),
        ];
        let bytes = to_parquet(&records, &src()).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");

        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        let md = builder.metadata().clone();
        assert!(matches!(
            md.row_group(0).column(0).compression(),
            Compression::ZSTD(_)
        ));
        let reader = builder.build().unwrap();
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 4);
        assert_eq!(b.schema(), schema(), "the schema survives the round trip");

        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        for want in [
            "class_uid",
            "category_uid",
            "activity_id",
            "type_uid",
            "time",
            "start_time",
            "actor",
            "api",
            "src_endpoint",
            "http_request",
            "resources",
            "metadata",
            "cloud",
            "observables",
            "unmapped",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(
            b.schema_ref().field_with_name("time").unwrap().data_type(),
            &DataType::Int64,
            "OCSF timestamp_t: epoch milliseconds"
        );
        assert_eq!(
            b.schema_ref()
                .field_with_name("time_dt")
                .unwrap()
                .data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );

        let class = b
            .column_by_name("class_uid")
            .unwrap()
            .as_primitive::<Int32Type>();
        assert!(class.iter().all(|c| c == Some(6003)));

        // Sorted by time: create (16:26), list (16:29), healthz (16:30), delete (next day).
        let time = b
            .column_by_name("time_dt")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        assert_eq!(time.value(0), ms("2024-05-29T16:26:40.250Z"));
        assert!(time.values().windows(2).all(|w| w[0] <= w[1]));
        let ids = b.column_by_name("metadata").unwrap().as_struct();
        let ids = ids.column_by_name("uid").unwrap().as_string::<i32>();
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            [
                Some("a1-ResponseComplete"),
                Some("a5-ResponseComplete"),
                Some("a6-RequestReceived"),
                Some("a3-ResponseComplete")
            ]
        );

        let actor = b.column_by_name("actor").unwrap().as_struct();
        let user = actor.column_by_name("user").unwrap().as_struct();
        let user_names = user.column_by_name("name").unwrap().as_string::<i32>();
        assert_eq!(user_names.value(0), "alice@example.com");
        assert_eq!(user_names.value(1), "admin");
        assert!(user_names.is_null(2), "no user");
        let groups = user.column_by_name("groups").unwrap().as_list::<i32>();
        let g0 = groups.value(0);
        let g0 = g0
            .as_struct()
            .column_by_name("name")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(g0.value(1), "system:authenticated");

        let resources = b.column_by_name("resources").unwrap().as_list::<i32>();
        assert!(resources.is_null(2), "non-resource request");
        let r0 = resources.value(0);
        let r0 = r0.as_struct();
        assert_eq!(
            r0.column_by_name("type")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "pods"
        );

        let api = b.column_by_name("api").unwrap().as_struct();
        let response = api.column_by_name("response").unwrap().as_struct();
        assert!(response.is_null(2), "no response yet");
        let code = response
            .column_by_name("code")
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(code.value(0), 201);

        let cloud = b.column_by_name("cloud").unwrap().as_struct();
        assert_eq!(
            cloud
                .column_by_name("region")
                .unwrap()
                .as_string::<i32>()
                .value(3),
            "eu-west-1"
        );

        let unmapped = b.column_by_name("unmapped").unwrap().as_string::<i32>();
        let u: Value = serde_json::from_str(unmapped.value(1)).unwrap();
        assert_eq!(
            u["impersonatedUser"]["username"],
            "system:serviceaccount:kube-system:deployer"
        );
    }

    #[test]
    fn empty_batch_is_a_valid_file() {
        let bytes = to_parquet(&[], &src()).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.schema().as_ref(), schema().as_ref());
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }

    #[test]
    fn keys_and_event_days() {
        assert_eq!(
            lake_key(&src(), "20240529", 7, 1234),
            "ext/kubetrail/region=eu-west-1/accountId=123456789012/eventDay=20240529/\
             00000000000000000007-00000000000000001234.parquet"
        );
        assert_eq!(event_day(&rec("a1", CREATE_POD)).unwrap(), "20240529");
        assert_eq!(
            event_day(&rec("a3", DELETE_DEPLOYMENT)).unwrap(),
            "20240530",
            "the stage timestamp, past midnight"
        );
        let ev = r#"{"level":"Metadata","auditID":"a8","stage":"ResponseComplete","stageTimestamp":"2024-05-30T01:30:00+02:00"}"#;
        assert_eq!(event_day(&rec("a8", ev)).unwrap(), "20240529", "UTC");
    }
}
