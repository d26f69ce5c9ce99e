//! The OCSF 1.1.0 API Activity record as kubetrail writes it: serialised as the JSON of `api_activity`, and
//! read column by column into the Parquet of `to_parquet`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kubetrail_model::UserInfo;
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Debug, Serialize)]
pub(super) struct ApiActivity {
    pub(super) activity_id: i32,
    pub(super) activity_name: String,
    pub(super) category_uid: i32,
    pub(super) category_name: &'static str,
    pub(super) class_uid: i32,
    pub(super) class_name: &'static str,
    pub(super) type_uid: i64,
    pub(super) type_name: String,
    pub(super) severity_id: i32,
    pub(super) severity: &'static str,
    pub(super) status_id: i32,
    pub(super) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_detail: Option<String>,
    pub(super) message: String,
    pub(super) time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start_time: Option<i64>,
    pub(super) actor: Actor,
    pub(super) api: Api,
    pub(super) src_endpoint: Endpoint,
    pub(super) http_request: HttpRequest,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) resources: Vec<Resource>,
    pub(super) cloud: Cloud,
    pub(super) metadata: Metadata,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) observables: Vec<Observable>,
    pub(super) unmapped: Box<RawValue>,
}

#[derive(Debug, Serialize)]
pub(super) struct Actor {
    pub(super) user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) session: Option<Session>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) authorizations: Vec<Authorization>,
}

#[derive(Debug, Serialize)]
pub(super) struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) uid: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) type_id: i32,
    pub(super) groups: Vec<Named>,
}

#[derive(Debug, Serialize)]
pub(super) struct Named {
    pub(super) name: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Session {
    pub(super) credential_uid: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Authorization {
    pub(super) decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) policy: Option<Policy>,
}

#[derive(Debug, Serialize)]
pub(super) struct Policy {
    pub(super) desc: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Api {
    pub(super) operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<String>,
    pub(super) service: Named,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<Named>,
    pub(super) request: ApiRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response: Option<ApiResponse>,
}

#[derive(Debug, Serialize)]
pub(super) struct ApiRequest {
    pub(super) uid: String,
}

#[derive(Debug, Serialize)]
pub(super) struct ApiResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ip: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) intermediate_ips: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct HttpRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user_agent: Option<String>,
    pub(super) url: Url,
}

#[derive(Debug, Serialize)]
pub(super) struct Url {
    pub(super) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) query_string: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Resource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Cloud {
    pub(super) provider: &'static str,
    pub(super) region: String,
    pub(super) account: Account,
}

#[derive(Debug, Serialize)]
pub(super) struct Account {
    pub(super) uid: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Metadata {
    pub(super) version: &'static str,
    pub(super) uid: String,
    pub(super) correlation_uid: String,
    pub(super) log_name: String,
    pub(super) log_level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) log_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) original_time: Option<String>,
    pub(super) logged_time: i64,
    pub(super) profiles: Vec<&'static str>,
    pub(super) product: Product,
}

#[derive(Debug, Serialize)]
pub(super) struct Product {
    pub(super) name: &'static str,
    pub(super) vendor_name: &'static str,
    pub(super) version: &'static str,
    pub(super) feature: Named,
}

#[derive(Debug, Serialize)]
pub(super) struct Observable {
    pub(super) name: &'static str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) type_id: i32,
    pub(super) value: String,
}

/// The forensic rest of the event, in the audit event's own names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Unmapped<'e, 'a> {
    pub(super) stage: &'e str,
    pub(super) level: &'e str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) request_received_timestamp: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stage_timestamp: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) timestamp: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) annotations: Option<&'e BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) impersonated_user: Option<&'e UserInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<UserExtra<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) request_object: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response_object: Option<&'a RawValue>,
}

#[derive(Serialize)]
pub(super) struct UserExtra<'a> {
    pub(super) extra: &'a RawValue,
}
