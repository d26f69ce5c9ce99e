//! The mapping of an audit event to an OCSF API Activity record (the table in the module docs of `ocsf`),
//! following Amazon's EKS audit log mapping.

use std::collections::BTreeMap;

use kubetrail_model::UserInfo;
use serde_json::value::RawValue;

use super::record::{
    Account, Actor, Api, ApiActivity, ApiRequest, ApiResponse, Authorization, Cloud, Endpoint,
    HttpRequest, Metadata, Named, Observable, Policy, Product, Resource, Session, Unmapped, Url,
    User, UserExtra,
};
use super::{CATEGORY_UID, CLASS_UID, LakeSource, OCSF_VERSION};
use crate::Record;
use crate::fields::{Fields, Verdict};

fn ne(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The OCSF `time` and the event's timestamp string it came from (none: when kubetrail received it).
pub(super) fn event_time<'f>(f: &'f Fields<'_>) -> (jiff::Timestamp, Option<&'f str>) {
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

pub(super) fn map(r: &Record<'_>, src: &LakeSource) -> Result<ApiActivity, String> {
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
