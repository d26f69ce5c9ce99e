//! `audit.k8s.io/v1` Event, borrowed from the input.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The top-level keys of an `audit.k8s.io/v1` `Event`, and `v1beta1`'s `timestamp` and `metadata`: the first
/// segment of any field path into an event (the query language's and detection rules').
pub const EVENT_KEYS: &[&str] = &[
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
    "timestamp",
    "metadata",
];

/// How much of a request kube-apiserver records. Ordered: `None < Metadata < Request < RequestResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::None,
        Level::Metadata,
        Level::Request,
        Level::RequestResponse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }

    /// Parses the exact (case-sensitive) name kube-apiserver accepts.
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stage of request handling an event was generated at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::RequestReceived,
        Stage::ResponseStarted,
        Stage::ResponseComplete,
        Stage::Panic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }

    /// Parses the exact (case-sensitive) name kube-apiserver accepts.
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `authentication.k8s.io/v1` UserInfo.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo<'a> {
    #[serde(borrow, default, skip_serializing_if = "str_is_empty")]
    pub username: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub uid: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<&'a RawValue>,
}

/// The object a resource request is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference<'a> {
    #[serde(borrow, default, skip_serializing_if = "str_is_empty")]
    pub resource: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "str_is_empty")]
    pub namespace: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "str_is_empty")]
    pub name: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "str_is_empty")]
    pub api_group: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "str_is_empty")]
    pub api_version: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "str_is_empty")]
    pub subresource: Cow<'a, str>,
}

/// The parts of `metav1.Status` forensics needs; the rest stays in the raw event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<Cow<'a, str>>,
}

/// An `audit.k8s.io/v1` Event (also reads `v1beta1`, whose extra `timestamp` and `metadata` are kept).
///
/// Strings borrow from the input where they contain no escapes; `requestObject` and `responseObject` stay raw.
/// Unknown fields are ignored (newer apiservers add fields; nothing here may reject them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<Cow<'a, str>>,
    pub level: Level,
    #[serde(borrow, rename = "auditID")]
    pub audit_id: Cow<'a, str>,
    pub stage: Stage,
    #[serde(borrow, default, rename = "requestURI")]
    pub request_uri: Cow<'a, str>,
    #[serde(borrow, default)]
    pub verb: Cow<'a, str>,
    #[serde(borrow, default)]
    pub user: UserInfo<'a>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo<'a>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::vec",
        rename = "sourceIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub source_ips: Vec<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub response_object: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_received_timestamp: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub stage_timestamp: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub annotations: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    /// `v1beta1` only: when the event was generated.
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::borrow::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<Cow<'a, str>>,
    /// `v1beta1` only: `metadata.creationTimestamp` and friends, kept raw.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
}

#[allow(clippy::ptr_arg)] // serde's `skip_serializing_if` passes `&Cow`
fn str_is_empty(s: &Cow<'_, str>) -> bool {
    s.is_empty()
}

/// An event that could not be read, with the reason in serde_json's words (line and column within the record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl<'a> Event<'a> {
    /// Parses one event object. Strings without escapes borrow from `json`.
    pub fn parse(json: &'a str) -> Result<Event<'a>, ParseError> {
        serde_json::from_str(json).map_err(|e| ParseError(e.to_string()))
    }

    /// The request attributes audit policies match on, as kube-apiserver saw them when it evaluated its policy
    /// (the authenticated user before impersonation; the URL path without its query string).
    pub fn attributes(&'a self) -> Attributes<'a> {
        let user_present = !self.user.username.is_empty() || !self.user.groups.is_empty();
        let obj = self.object_ref.as_ref();
        let get = |f: fn(&'a ObjectReference<'a>) -> &'a str| obj.map(f).unwrap_or("");
        Attributes {
            user: user_present.then_some(self.user.username.as_ref()),
            groups: &self.user.groups,
            verb: &self.verb,
            namespace: get(|o| &o.namespace),
            api_group: get(|o| &o.api_group),
            resource: get(|o| &o.resource),
            subresource: get(|o| &o.subresource),
            name: get(|o| &o.name),
            path: self.request_uri.split('?').next().unwrap_or(""),
            is_resource_request: obj.is_some(),
        }
    }

    /// When kube-apiserver received the request (`requestReceivedTimestamp`, or `v1beta1`'s `timestamp`), else
    /// when it wrote the stage (`stageTimestamp`), whichever first parses in that order.
    pub fn received_at(&self) -> Option<jiff::Timestamp> {
        // The store's `time` column is computed the same way (`kubetrail_store::columnar`): a fleet's
        // ClickHouse rows and the store agree on every event's time, even one whose first timestamp is bad.
        let parse = |t: Option<&str>| t.and_then(|t| t.parse().ok());
        parse(
            self.request_received_timestamp
                .as_deref()
                .or(self.timestamp.as_deref()),
        )
        .or_else(|| parse(self.stage_timestamp.as_deref()))
    }

    /// The response code, if the request got that far.
    pub fn code(&self) -> Option<i32> {
        self.response_status.as_ref().and_then(|s| s.code)
    }
}

/// The attributes of a request that kube-apiserver's audit policy (and RBAC) decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// The authenticated username; `None` when no user was authenticated at all (not the same as `""`).
    pub user: Option<&'a str>,
    pub groups: &'a [Cow<'a, str>],
    /// The Kubernetes verb for resource requests, the lower-cased HTTP method for non-resource requests.
    pub verb: &'a str,
    /// `""` for cluster-scoped objects and lists across all namespaces.
    pub namespace: &'a str,
    /// `""` is the core group.
    pub api_group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub name: &'a str,
    /// The URL path without the query string.
    pub path: &'a str,
    pub is_resource_request: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_event_borrowed() {
        let json = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"55a8","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/secrets?limit=5","verb":"create","user":{"username":"minikube-user","groups":["system:masters","system:authenticated"]},"sourceIPs":["192.168.64.1"],"objectRef":{"resource":"secrets","namespace":"default","name":"example-secret","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Secret","data":{"a":"b"}},"requestReceivedTimestamp":"2020-04-21T17:57:05.541358Z","unknownField":1}"#;
        let ev = Event::parse(json).unwrap();
        assert!(matches!(ev.user.username, Cow::Borrowed("minikube-user")));
        assert_eq!(
            ev.request_object.unwrap().get(),
            r#"{"kind":"Secret","data":{"a":"b"}}"#
        );
        assert_eq!(ev.code(), Some(201));
        let a = ev.attributes();
        assert_eq!(a.path, "/api/v1/namespaces/default/secrets");
        assert_eq!(
            (a.resource, a.namespace, a.name),
            ("secrets", "default", "example-secret")
        );
        assert!(a.is_resource_request);
        assert_eq!(a.user, Some("minikube-user"));
        assert_eq!(
            ev.received_at().unwrap().to_string(),
            "2020-04-21T17:57:05.541358Z"
        );
    }

    /// A first timestamp that does not parse falls back to the stage's, as the store's `time` does: the
    /// ClickHouse sink and the store agree on when a request was received.
    #[test]
    fn received_at_falls_back_to_the_stage_timestamp() {
        let ev = |fields: &str| {
            let json = format!(
                r#"{{"level":"Metadata","auditID":"a","stage":"ResponseComplete",{fields}}}"#
            );
            Event::parse(&json)
                .unwrap()
                .received_at()
                .map(|t| t.to_string())
        };
        let stage = r#""stageTimestamp":"2026-01-01T00:00:02Z""#;
        assert_eq!(
            ev(&format!(
                r#""requestReceivedTimestamp":"yesterday",{stage}"#
            ))
            .as_deref(),
            Some("2026-01-01T00:00:02Z")
        );
        assert_eq!(
            ev(&format!(
                r#""requestReceivedTimestamp":"2026-01-01T00:00:01Z",{stage}"#
            ))
            .as_deref(),
            Some("2026-01-01T00:00:01Z")
        );
        assert_eq!(ev(r#""requestReceivedTimestamp":"never""#), None);
    }

    /// Strings inside options, lists and maps borrow too (they were each an allocation); one with an escape
    /// is decoded into its own string; `null` is absent.
    #[test]
    fn strings_in_options_lists_and_maps_borrow() {
        let json = r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","user":{"username":"u","groups":["g1","g\u0032"]},"sourceIPs":["10.0.0.1"],"userAgent":"kubectl/v1.30","requestReceivedTimestamp":"2026-01-01T00:00:00.000001Z","stageTimestamp":null,"annotations":{"authorization.k8s.io/decision":"allow","k\u0031":"v"}}"#;
        let ev = Event::parse(json).unwrap();
        assert!(matches!(
            ev.user_agent,
            Some(Cow::Borrowed("kubectl/v1.30"))
        ));
        assert!(matches!(
            ev.request_received_timestamp,
            Some(Cow::Borrowed("2026-01-01T00:00:00.000001Z"))
        ));
        assert_eq!(ev.stage_timestamp, None);
        assert!(matches!(ev.user.groups[0], Cow::Borrowed("g1")));
        assert!(matches!(&ev.user.groups[1], Cow::Owned(g) if g == "g2"));
        assert!(matches!(ev.source_ips[0], Cow::Borrowed("10.0.0.1")));
        let a = ev.annotations.unwrap();
        let (k, v) = a.iter().next().unwrap();
        assert!(matches!((k, v), (Cow::Borrowed(_), Cow::Borrowed("allow"))));
        assert_eq!(a.get("k1").map(|v| v.as_ref()), Some("v"));
        // Not a string where one is expected: still an error.
        assert!(
            Event::parse(&json.replace(r#""userAgent":"kubectl/v1.30""#, r#""userAgent":5"#))
                .is_err()
        );
    }

    #[test]
    fn event_without_user_has_no_user_attribute() {
        let json = r#"{"level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/healthz","verb":"get","user":{}}"#;
        let ev = Event::parse(json).unwrap();
        assert_eq!(ev.attributes().user, None);
        assert!(!ev.attributes().is_resource_request);
    }

    #[test]
    fn unknown_level_is_an_error() {
        let json = r#"{"level":"Everything","auditID":"x","stage":"ResponseComplete"}"#;
        let err = Event::parse(json).unwrap_err();
        assert!(err.0.contains("Everything"), "{err}");
    }
}
