//! Decoding one JSON value of input into native audit event records.
//!
//! Accepted shapes: a single `Event` (`audit.k8s.io/v1` or `v1beta1`); an `EventList` (the apiserver webhook's
//! body, whose items carry no `kind`/`apiVersion`); a JSON array of any of these; the managed clouds' envelopes:
//!
//! - **EKS**: a CloudWatch Logs record (`message`, or Logs Insights' `@message`, holding the event as a
//!   string), a subscription or export batch (`logEvents`/`events` with `logGroup` `/aws/eks/<cluster>/cluster`).
//!   Plain event lines exported from EKS are [`Envelope::Native`]. Nothing is lost when the inner event is intact.
//! - **AKS**: a diagnostic record of category `kube-audit` or `kube-audit-admin` whose `properties.log` holds
//!   the event as a string or an object, alone or in an Event Hub/Storage `{"records": [...]}` batch; the cluster
//!   comes from `resourceId`. Nothing is lost when the inner event is intact.
//! - **GKE**: a Cloud Audit Log entry (`protoPayload` with a `methodName` of `io.k8s.*`), from which a native
//!   `audit.k8s.io/v1` event is synthesized. Cloud Audit Logs do not carry, so the event cannot have: the user's
//!   `groups`, `uid` and `extra`; impersonation (`impersonatedUser`); the stages other than the final one (every
//!   event is `ResponseComplete`, `RequestReceived`/`ResponseStarted` never appear) and the separate
//!   receive/stage times (both are the entry's `timestamp`); the query string of `requestURI` (rebuilt from
//!   `resourceName`), `objectRef.uid` and `resourceVersion`; the exact HTTP code (mapped back from the
//!   `google.rpc` code: 0 is 200, or 201 for `create`, even for exec's 101); the policy level (`Metadata`, or
//!   `Request`/`RequestResponse` when a body is present); annotations other than the entry's `*.k8s.io/*` labels;
//!   the real `auditID` (the `insertId`, or a hash of the entry when it has none).
//!
//! Anything else (including GKE entries of other Google services) is a [`DecodeError`] with the reason.
//! Pure and total: no IO, never panics. Native events are detected with a borrowed probe and returned as a slice
//! of the input, without re-serialization.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{Event, Level, ObjectReference, ResponseStatus, Stage, UserInfo};

/// Where a record or error came from in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The 1-based line of a JSON-lines input.
    Line(usize),
    /// The `index`-th (0-based) event inside the value starting at `line`.
    Item { line: usize, index: usize },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "{line}"),
            Location::Item { line, index } => write!(f, "{line} (item {index})"),
        }
    }
}

/// The envelope an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Envelope {
    /// A bare `Event` or an `EventList` item, as kube-apiserver writes it.
    Native,
    /// An EKS control-plane log record from CloudWatch Logs.
    EksCloudWatch,
    /// An AKS `kube-audit`/`kube-audit-admin` diagnostic record.
    Aks,
    /// A GKE Cloud Audit Log entry (the event is synthesized, see the module docs).
    Gke,
}

impl Envelope {
    pub fn as_str(self) -> &'static str {
        match self {
            Envelope::Native => "native",
            Envelope::EksCloudWatch => "eks",
            Envelope::Aks => "aks",
            Envelope::Gke => "gke",
        }
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event found in the input.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The native audit `Event` JSON (borrowed from the input when it appears there verbatim); it parses with
    /// [`Event::parse`].
    pub json: Cow<'a, str>,
    pub envelope: Envelope,
    /// The cluster, when the envelope names it.
    pub cluster: Option<String>,
    /// The 0-based position of this event among those of its value (0 for a lone event).
    pub index: usize,
}

/// A value, or an item of it, that holds no audit event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", index.map(|i| format!("item {i}: ")).unwrap_or_default())]
pub struct DecodeError {
    /// The 0-based item the error is about, or `None` when it is about the whole value.
    pub index: Option<usize>,
    pub reason: String,
}

/// Decodes one JSON value (a line of JSON lines, or a whole document) into records, calling `out` for each record
/// or error, in order.
pub fn decode_value<'a>(json: &'a str, out: &mut dyn FnMut(Result<Record<'a>, DecodeError>)) {
    let mut d = Decoder { out, next: 0 };
    d.value(json.trim(), Ctx::TOP);
}

/// How every event kube-apiserver serializes starts.
const NATIVE_PREFIX: &str = r#"{"kind":"Event","#;

/// Nesting allowed for arrays and batches inside a value; real inputs need at most 2.
const MAX_DEPTH: usize = 4;

#[derive(Clone, Copy)]
struct Ctx {
    depth: usize,
    /// Inside an array or batch: errors name their item.
    in_container: bool,
}

impl Ctx {
    const TOP: Ctx = Ctx {
        depth: 0,
        in_container: false,
    };

    fn nested(self) -> Ctx {
        Ctx {
            depth: self.depth + 1,
            in_container: true,
        }
    }
}

struct Decoder<'o, 'a> {
    out: &'o mut dyn FnMut(Result<Record<'a>, DecodeError>),
    next: usize,
}

/// Just enough of any accepted top-level object to tell which shape it is. Every field is raw so that no value
/// of an unexpected type fails the probe.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe<'a> {
    #[serde(borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, rename = "auditID")]
    audit_id: Option<&'a RawValue>,
    #[serde(borrow)]
    items: Option<&'a RawValue>,
    #[serde(borrow)]
    proto_payload: Option<&'a RawValue>,
    #[serde(borrow)]
    category: Option<&'a RawValue>,
    #[serde(borrow)]
    records: Option<&'a RawValue>,
    #[serde(borrow)]
    log_events: Option<&'a RawValue>,
    #[serde(borrow)]
    events: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow, rename = "@message")]
    at_message: Option<&'a RawValue>,
}

fn as_str<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

type Found<'a> = (Cow<'a, str>, Envelope, Option<String>);

impl<'a> Decoder<'_, 'a> {
    fn emit(&mut self, ctx: Ctx, found: Result<Found<'a>, String>) {
        let index = self.next;
        let result = match found {
            Ok((json, envelope, cluster)) => {
                self.next += 1;
                Ok(Record {
                    json,
                    envelope,
                    cluster,
                    index,
                })
            }
            Err(reason) => {
                let index = ctx.in_container.then(|| {
                    self.next += 1;
                    index
                });
                Err(DecodeError { index, reason })
            }
        };
        (self.out)(result);
    }

    fn value(&mut self, json: &'a str, ctx: Ctx) {
        if ctx.depth > MAX_DEPTH {
            return self.emit(ctx, Err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match json.as_bytes().first() {
            Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(json) {
                Ok(items) => items
                    .into_iter()
                    .for_each(|item| self.value(item.get(), ctx.nested())),
                Err(e) => self.emit(ctx, Err(format!("invalid JSON array: {e}"))),
            },
            // kube-apiserver (Go's encoding/json) writes `kind` first: a native event needs no probe, which
            // would cost a second full scan of the line. Whether it is a valid event is `Event::parse`'s call.
            Some(b'{') if json.starts_with(NATIVE_PREFIX) => {
                self.emit(ctx, Ok((json.into(), Envelope::Native, None)))
            }
            Some(b'{') => match serde_json::from_str::<Probe>(json) {
                Ok(probe) => self.object(json, probe, ctx),
                Err(e) => self.emit(ctx, Err(format!("invalid JSON: {e}"))),
            },
            None => self.emit(ctx, Err("empty input".into())),
            Some(_) => self.emit(
                ctx,
                Err(format!(
                    "expected a JSON object or array, found `{}`",
                    excerpt(json)
                )),
            ),
        }
    }

    fn object(&mut self, json: &'a str, p: Probe<'a>, ctx: Ctx) {
        let kind = as_str(p.kind);
        match kind.as_deref() {
            Some("EventList") => return self.event_list(p.items, ctx),
            Some("Event") => return self.emit(ctx, Ok((json.into(), Envelope::Native, None))),
            Some(other) => {
                return self.emit(
                    ctx,
                    Err(format!(
                        "unexpected kind `{other}`, expected `Event` or `EventList`"
                    )),
                );
            }
            None if p.kind.is_some_and(|k| k.get() != "null") => {
                return self.emit(
                    ctx,
                    Err(format!(
                        "`kind` is `{}`, expected `Event` or `EventList`",
                        excerpt(p.kind.map_or("", RawValue::get))
                    )),
                );
            }
            None => {}
        }
        if !is_null(p.audit_id) {
            self.emit(ctx, Ok((json.into(), Envelope::Native, None)))
        } else if !is_null(p.proto_payload) {
            let found = gke(json);
            self.emit(ctx, found)
        } else if let Some(records) = p.records.filter(|r| r.get().starts_with('[')) {
            match serde_json::from_str::<Vec<&RawValue>>(records.get()) {
                Ok(items) => items
                    .into_iter()
                    .for_each(|item| self.value(item.get(), ctx.nested())),
                Err(e) => self.emit(ctx, Err(format!("invalid `records`: {e}"))),
            }
        } else if !is_null(p.category) {
            let found = aks(json);
            self.emit(ctx, found)
        } else if let Some(events) = p.log_events.or(p.events).filter(|r| r.get() != "null") {
            self.cloudwatch_batch(json, events, ctx)
        } else if let Some(message) = p.message.or(p.at_message).filter(|r| r.get() != "null") {
            let found = cloudwatch_message(message, None);
            self.emit(ctx, found)
        } else if !is_null(p.items) {
            // An `EventList` some tool stripped of its kind.
            self.event_list(p.items, ctx)
        } else {
            self.emit(
                ctx,
                Err("not an audit event: expected an `Event` (with `kind` or `auditID`), an `EventList`, or an EKS, AKS or GKE log record".into()),
            )
        }
    }

    fn event_list(&mut self, items: Option<&'a RawValue>, ctx: Ctx) {
        // Go writes an empty list's `items` as `null`.
        let items = match items.map(|i| serde_json::from_str::<Option<Vec<&RawValue>>>(i.get())) {
            Some(Ok(items)) => items.unwrap_or_default(),
            Some(Err(e)) => return self.emit(ctx, Err(format!("invalid `EventList` items: {e}"))),
            None => Vec::new(),
        };
        let ctx = ctx.nested();
        for item in items {
            let found = if item.get().starts_with('{') {
                Ok((item.get().into(), Envelope::Native, None))
            } else {
                Err(format!(
                    "`EventList` item is not an object: `{}`",
                    excerpt(item.get())
                ))
            };
            self.emit(ctx, found);
        }
    }

    fn cloudwatch_batch(&mut self, json: &'a str, events: &'a RawValue, ctx: Ctx) {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Batch<'a> {
            #[serde(borrow)]
            log_group: Option<Cow<'a, str>>,
            message_type: Option<Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct LogEvent<'a> {
            #[serde(borrow)]
            message: Option<&'a RawValue>,
        }
        let batch = match serde_json::from_str::<Batch>(json) {
            Ok(b) => b,
            Err(e) => return self.emit(ctx, Err(format!("invalid CloudWatch Logs batch: {e}"))),
        };
        // CloudWatch sends a control message to check that a subscription's destination is reachable.
        if batch.message_type.as_deref() == Some("CONTROL_MESSAGE") {
            return;
        }
        let cluster = batch.log_group.as_deref().and_then(eks_cluster);
        let events = match serde_json::from_str::<Vec<LogEvent>>(events.get()) {
            Ok(events) => events,
            Err(e) => return self.emit(ctx, Err(format!("invalid CloudWatch log events: {e}"))),
        };
        let ctx = ctx.nested();
        for ev in events {
            let found = match ev.message {
                Some(m) => cloudwatch_message(m, cluster.clone()),
                None => Err("CloudWatch log event without `message`".into()),
            };
            self.emit(ctx, found);
        }
    }
}

/// The cluster of an EKS log group, `/aws/eks/<cluster>/cluster`.
fn eks_cluster(log_group: &str) -> Option<String> {
    let name = log_group
        .strip_prefix("/aws/eks/")?
        .strip_suffix("/cluster")?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// The event in a CloudWatch `message`: a JSON string holding the native event.
fn cloudwatch_message<'a>(
    message: &'a RawValue,
    cluster: Option<String>,
) -> Result<Found<'a>, String> {
    let text: Cow<'a, str> = serde_json::from_str(message.get()).map_err(|_| {
        format!(
            "CloudWatch `message` is not a string: `{}`",
            excerpt(message.get())
        )
    })?;
    let inner = text.trim();
    if !is_native_event(inner) {
        return Err(format!(
            "CloudWatch message is not a Kubernetes audit event: `{}`",
            excerpt(inner)
        ));
    }
    let json = match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    };
    Ok((json, Envelope::EksCloudWatch, cluster))
}

/// Whether `json` is an object that says it is an audit event.
fn is_native_event(json: &str) -> bool {
    json.starts_with('{')
        && serde_json::from_str::<Probe>(json)
            .is_ok_and(|p| as_str(p.kind).as_deref() == Some("Event") || !is_null(p.audit_id))
}

fn aks(json: &str) -> Result<Found<'_>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Diagnostic<'a> {
        #[serde(borrow)]
        category: Option<Cow<'a, str>>,
        #[serde(borrow, alias = "ResourceId", alias = "resourceID")]
        resource_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        properties: Option<Properties<'a>>,
    }
    #[derive(Deserialize)]
    struct Properties<'a> {
        #[serde(borrow)]
        log: Option<&'a RawValue>,
    }
    let d: Diagnostic =
        serde_json::from_str(json).map_err(|e| format!("invalid AKS diagnostic record: {e}"))?;
    let category = d.category.as_deref().unwrap_or("");
    if !matches!(category, "kube-audit" | "kube-audit-admin") {
        return Err(format!(
            "AKS diagnostic record of category `{category}`, not a Kubernetes audit event (expected `kube-audit` or `kube-audit-admin`)"
        ));
    }
    let log = d
        .properties
        .and_then(|p| p.log)
        .ok_or("AKS `kube-audit` record without `properties.log`")?;
    let json: Cow<str> = if log.get().starts_with('"') {
        let text: Cow<str> = serde_json::from_str(log.get())
            .map_err(|e| format!("invalid `properties.log`: {e}"))?;
        match text {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
        }
    } else {
        Cow::Borrowed(log.get())
    };
    if !json.starts_with('{') {
        return Err(format!(
            "AKS `properties.log` is not an audit event: `{}`",
            excerpt(&json)
        ));
    }
    let cluster = d.resource_id.as_deref().and_then(aks_cluster);
    Ok((json, Envelope::Aks, cluster))
}

/// The cluster of an AKS resource id, `.../providers/Microsoft.ContainerService/managedClusters/<name>`. Azure
/// upper-cases ids in some exports, so the match ignores case.
fn aks_cluster(resource_id: &str) -> Option<String> {
    let mut parts = resource_id.split('/');
    parts.find(|p| p.eq_ignore_ascii_case("managedClusters"))?;
    parts.next().filter(|n| !n.is_empty()).map(str::to_owned)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GkeEntry<'a> {
    #[serde(borrow)]
    proto_payload: GkePayload<'a>,
    #[serde(borrow)]
    insert_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    receive_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resource: Option<GkeResource<'a>>,
    #[serde(borrow)]
    labels: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GkePayload<'a> {
    #[serde(borrow)]
    method_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    authentication_info: Option<GkeAuth<'a>>,
    #[serde(borrow)]
    request_metadata: Option<GkeRequestMetadata<'a>>,
    #[serde(borrow)]
    resource_name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "requestURI")]
    request_uri: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<&'a RawValue>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<GkeStatus<'a>>,
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GkeAuth<'a> {
    #[serde(borrow)]
    principal_email: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GkeRequestMetadata<'a> {
    #[serde(borrow, alias = "callerIP")]
    caller_ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    caller_supplied_user_agent: Option<Cow<'a, str>>,
}

/// The parts of a Kubernetes `Status` response that say a request failed.
#[derive(Deserialize)]
struct K8sStatus<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    code: Option<i64>,
}

#[derive(Deserialize)]
struct GkeStatus<'a> {
    code: Option<i64>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct GkeResource<'a> {
    #[serde(borrow)]
    labels: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

/// What a GKE entry says about the request, from `resourceName` and `methodName`.
#[derive(Debug, Default, PartialEq)]
struct GkeRequest<'a> {
    verb: &'a str,
    /// `None` for a non-resource request.
    object: Option<ObjectReference<'a>>,
    /// The URL path of a non-resource request.
    path: Option<String>,
}

fn gke(json: &str) -> Result<Found<'static>, String> {
    let entry: GkeEntry =
        serde_json::from_str(json).map_err(|e| format!("invalid GKE log entry: {e}"))?;
    let p = &entry.proto_payload;
    let method = p.method_name.as_deref().unwrap_or("");
    let is_k8s = method.starts_with("io.k8s.") || p.service_name.as_deref() == Some("k8s.io");
    if !is_k8s {
        let service = p.service_name.as_deref().unwrap_or(method);
        return Err(format!(
            "GKE entry for `{service}`, not a Kubernetes audit event (method `{method}`)"
        ));
    }
    let req = gke_request(method, p.resource_name.as_deref());
    let uri = match (&p.request_uri, &req.object, &req.path) {
        (Some(uri), _, _) => uri.to_string(),
        (None, Some(o), _) => request_uri(o),
        (None, None, Some(path)) => path.clone(),
        (None, None, None) => String::new(),
    };
    let rpc = p.status.as_ref().and_then(|s| s.code).unwrap_or(0);
    // A failed request's response is a Kubernetes `Status` (`"status": "Failure"`, with its HTTP `code`),
    // even when the entry carries no RPC status.
    let failure = p
        .response
        .and_then(|r| serde_json::from_str::<K8sStatus>(r.get()).ok())
        // A `Status` (or a bare one without a kind); an object whose own `status` field says "Failure"
        // (a custom resource's) is not an answer about the request.
        .filter(|s| {
            s.status.as_deref() == Some("Failure")
                && s.kind.as_deref().is_none_or(|k| k == "Status")
        });
    let http = match rpc {
        0 if failure.is_some() => failure
            .as_ref()
            .and_then(|s| s.code)
            .and_then(|c| i32::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or(500),
        0 if req.verb == "create" => 201,
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    };
    let message = p.status.as_ref().and_then(|s| s.message.clone());
    let time = [&entry.timestamp, &p.timestamp, &entry.receive_timestamp]
        .into_iter()
        .flatten()
        .find_map(|t| normalize_time(t));
    let audit_id = entry
        .insert_id
        .clone()
        .unwrap_or_else(|| format!("{:016x}", fnv1a(json.as_bytes())).into());
    let labels = |k: &str| {
        entry
            .resource
            .as_ref()
            .and_then(|r| r.labels.as_ref())
            .and_then(|l| l.get(k))
            .filter(|v| !v.is_empty())
    };
    let cluster = labels("cluster_name").map(|c| c.to_string());
    let annotations: BTreeMap<Cow<str>, Cow<str>> = entry
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.contains(".k8s.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let request = p.request.filter(|r| r.get() != "null");
    let response = p.response.filter(|r| r.get() != "null");
    let meta = p.request_metadata.as_ref();
    let event = Event {
        kind: Some("Event".into()),
        api_version: Some("audit.k8s.io/v1".into()),
        level: match (request, response) {
            (_, Some(_)) => Level::RequestResponse,
            (Some(_), None) => Level::Request,
            (None, None) => Level::Metadata,
        },
        audit_id,
        stage: Stage::ResponseComplete,
        request_uri: uri.into(),
        verb: req.verb.into(),
        user: UserInfo {
            username: p
                .authentication_info
                .as_ref()
                .and_then(|a| a.principal_email.clone())
                .unwrap_or_default(),
            ..UserInfo::default()
        },
        impersonated_user: None,
        source_ips: meta.and_then(|m| m.caller_ip.clone()).into_iter().collect(),
        user_agent: meta.and_then(|m| m.caller_supplied_user_agent.clone()),
        object_ref: req.object,
        response_status: Some(ResponseStatus {
            code: Some(http),
            status: Some(if http < 400 { "Success" } else { "Failure" }.into()),
            reason: None,
            message,
        }),
        request_object: request,
        response_object: response,
        request_received_timestamp: time.clone().map(Cow::Owned),
        stage_timestamp: time.map(Cow::Owned),
        annotations: (!annotations.is_empty()).then_some(annotations),
        timestamp: None,
        metadata: None,
    };
    let json =
        serde_json::to_string(&event).map_err(|e| format!("cannot rebuild GKE event: {e}"))?;
    Ok((json.into(), Envelope::Gke, cluster))
}

/// Reads `resourceName` (`core/v1/namespaces/ns/pods/name/exec`, `rbac.authorization.k8s.io/v1/clusterroles/x`)
/// the way kube-apiserver reads a request path, with `methodName` (`io.k8s.core.v1.pods.exec.create`) for the
/// verb and for whatever `resourceName` lacks.
fn gke_request<'a>(method: &'a str, resource_name: Option<&'a str>) -> GkeRequest<'a> {
    let parts: Vec<&str> = method.split('.').collect();
    let version_at = parts.iter().position(|p| is_api_version(p));
    let verb = match version_at {
        Some(v) if parts.len() > v + 2 => parts.last().copied().unwrap_or(""),
        Some(_) => "",
        None if parts.len() > 3 => parts.last().copied().unwrap_or(""),
        None => "get",
    };
    let from_name = resource_name.and_then(|n| {
        let mut segs = n.split('/');
        let group = segs.next()?;
        let version = segs.next().filter(|v| is_api_version(v))?;
        let rest: Vec<&str> = segs.filter(|s| !s.is_empty()).collect();
        Some((group, version, rest))
    });
    let (group, version, rest): (Cow<str>, &str, Vec<&str>) = match (from_name, version_at) {
        (Some((g, v, rest)), _) => (g.into(), v, rest),
        (None, Some(v)) => {
            let rest = parts
                .get(v + 1..parts.len().saturating_sub(1))
                .unwrap_or_default()
                .to_vec();
            (method_group(&parts[..v]).into(), parts[v], rest)
        }
        (None, None) => {
            // A non-resource request: `io.k8s.readyz`, `io.k8s.core.v1.healthz.get` is handled below.
            let path = parts
                .iter()
                .skip(2)
                .take(if parts.len() > 3 { parts.len() - 3 } else { 1 })
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            return GkeRequest {
                verb,
                object: None,
                path: Some(format!("/{path}")),
            };
        }
    };
    let group = if group == "core" {
        Cow::Borrowed("")
    } else {
        group
    };
    if group.is_empty()
        && matches!(
            rest.first(),
            Some(&("healthz" | "readyz" | "livez" | "version" | "metrics"))
        )
    {
        return GkeRequest {
            verb,
            object: None,
            path: Some(format!("/{}", rest.join("/"))),
        };
    }
    // kube-apiserver's RequestInfoFactory: `namespaces/<ns>/<resource>...`, except a namespace's own subresources.
    let mut namespace = "";
    let mut rest = rest.as_slice();
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1];
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let object = ObjectReference {
        resource: rest.first().copied().unwrap_or("").into(),
        namespace: namespace.into(),
        name: rest.get(1).copied().unwrap_or("").into(),
        api_group: group,
        api_version: version.into(),
        subresource: rest.get(2).copied().unwrap_or("").into(),
        ..ObjectReference::default()
    };
    GkeRequest {
        verb,
        object: Some(object),
        path: None,
    }
}

/// The API group of a reversed-domain `methodName` prefix: `io.k8s.core` is `""`, `io.k8s.apps` is `apps`,
/// `io.k8s.authorization.rbac` is `rbac.authorization.k8s.io`, `io.istio.networking` is `networking.istio.io`.
fn method_group(parts: &[&str]) -> String {
    match parts {
        ["io", "k8s", "core"] => String::new(),
        [
            "io",
            "k8s",
            g @ ("apps" | "batch" | "autoscaling" | "policy" | "extensions"),
        ] => (*g).to_owned(),
        _ => parts.iter().rev().copied().collect::<Vec<_>>().join("."),
    }
}

fn is_api_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let tail = &rest[digits..];
    digits > 0
        && (tail.is_empty()
            || ["alpha", "beta"].iter().any(|t| {
                tail.strip_prefix(t)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }))
}

/// The request path kube-apiserver serves an object reference at.
fn request_uri(o: &ObjectReference<'_>) -> String {
    let mut uri = if o.api_group.is_empty() {
        format!("/api/{}", o.api_version)
    } else {
        format!("/apis/{}/{}", o.api_group, o.api_version)
    };
    if !o.namespace.is_empty() && o.resource != "namespaces" {
        uri.push_str("/namespaces/");
        uri.push_str(&o.namespace);
    }
    for part in [&o.resource, &o.name, &o.subresource] {
        if !part.is_empty() {
            uri.push('/');
            uri.push_str(part);
        }
    }
    uri
}

/// RFC 3339 UTC from an RFC 3339 time or the zone-less `2024-01-19 13:47:18.279921000` some exports write (UTC).
fn normalize_time(t: &str) -> Option<String> {
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Some(ts.to_string());
    }
    let utc = format!("{}Z", t.trim().replacen(' ', "T", 1));
    utc.parse::<jiff::Timestamp>().ok().map(|ts| ts.to_string())
}

/// FNV-1a: a stable id for an entry without `insertId` (the same entry always gets the same id).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The start of `s`, for error messages.
fn excerpt(s: &str) -> &str {
    let end = s.char_indices().nth(60).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Vec<Result<Record<'_>, DecodeError>> {
        let mut v = Vec::new();
        decode_value(json, &mut |r| v.push(r));
        v
    }

    #[test]
    fn native_event_is_borrowed() {
        let json = r#" {"kind":"Event","level":"None","auditID":"a","stage":"Panic"} "#;
        let r = decode(json);
        let rec = r[0].as_ref().unwrap();
        assert!(matches!(rec.json, Cow::Borrowed(s) if s == json.trim()));
        assert_eq!((rec.envelope, rec.index), (Envelope::Native, 0));
    }

    #[test]
    fn location_display() {
        assert_eq!(Location::Line(12).to_string(), "12");
        assert_eq!(
            Location::Item { line: 12, index: 3 }.to_string(),
            "12 (item 3)"
        );
    }

    #[test]
    fn gke_resource_names() {
        let check = |method,
                     name: Option<&'static str>,
                     expect: (&str, &str, &str, &str, &str, &str, &str)| {
            let r = gke_request(method, name);
            let o = r.object.unwrap_or_default();
            let got = (
                r.verb,
                o.api_group.as_ref(),
                o.api_version.as_ref(),
                o.resource.as_ref(),
                o.subresource.as_ref(),
                o.namespace.as_ref(),
                o.name.as_ref(),
            );
            assert_eq!(got, expect, "{method} {name:?}");
        };
        check(
            "io.k8s.core.v1.pods.exec.create",
            Some("core/v1/namespaces/ns/pods/p/exec"),
            ("create", "", "v1", "pods", "exec", "ns", "p"),
        );
        check(
            "io.k8s.authorization.rbac.v1.clusterroles.create",
            None,
            (
                "create",
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "",
                "",
                "",
            ),
        );
        check(
            "io.k8s.rbac.v1.clusterroles.create",
            Some("rbac.authorization.k8s.io/v1/clusterroles/x"),
            (
                "create",
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "",
                "",
                "x",
            ),
        );
        check(
            "io.k8s.core.v1.namespaces.status.update",
            Some("core/v1/namespaces/ns/status"),
            ("update", "", "v1", "namespaces", "status", "ns", "ns"),
        );
        check(
            "io.k8s.apps.v1beta2.deployments.list",
            None,
            ("list", "apps", "v1beta2", "deployments", "", "", ""),
        );
        assert_eq!(
            gke_request("io.k8s.readyz", None).path.as_deref(),
            Some("/readyz")
        );
        let healthz = gke_request("io.k8s.core.v1.healthz.get", None);
        assert_eq!(
            (healthz.verb, healthz.path.as_deref()),
            ("get", Some("/healthz"))
        );
    }

    #[test]
    fn times_are_normalized() {
        assert_eq!(
            normalize_time("2024-01-19 13:47:18.279921000").as_deref(),
            Some("2024-01-19T13:47:18.279921Z")
        );
        assert_eq!(
            normalize_time("2022-03-04T16:01:49.978756Z").as_deref(),
            Some("2022-03-04T16:01:49.978756Z")
        );
        assert_eq!(normalize_time("yesterday"), None);
    }

    #[test]
    fn cluster_names() {
        assert_eq!(
            eks_cluster("/aws/eks/prod/cluster").as_deref(),
            Some("prod")
        );
        assert_eq!(eks_cluster("/aws/lambda/x"), None);
        assert_eq!(
            aks_cluster("/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS1").as_deref(),
            Some("AKS1")
        );
    }

    #[test]
    fn api_versions() {
        for v in ["v1", "v1beta1", "v2alpha3", "v10"] {
            assert!(is_api_version(v), "{v}");
        }
        for v in ["v", "vbeta1", "v1beta", "pods", "v1gamma1", "v1é"] {
            assert!(!is_api_version(v), "{v}");
        }
    }
}
