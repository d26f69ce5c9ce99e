//! Elasticsearch and OpenSearch through the `_bulk` API, one `create` action per record with `_id` = the record
//! id, into a daily index (`<prefix>-YYYY.MM.DD` by the event's time, so a re-send lands in the same index) or a
//! data stream. `create` never overwrites: a re-sent record answers 409, which counts as delivered. (In a data
//! stream, ids are unique per backing index only: a re-send after a rollover duplicates.)
//!
//! Documents follow ECS (see [`ecs_document`]) with the original event under `kubernetes.audit`. Per-item results
//! decide: 2xx and 409 delivered; 429, 408 and 5xx retried; anything else (a mapping or parse error, 400) is
//! dead with the item's error type and reason. [`Elasticsearch::prepare`] installs an index template (ES 7.8+,
//! OpenSearch 1.0+) that maps `@timestamp` and keeps `requestObject`/`responseObject` unindexed: their shapes
//! differ per resource and would otherwise collide in dynamic mappings (the usual cause of 400s).

use hyper::http::Method;
use serde_json::{Map, Value, json};

use crate::fields::Fields;
use crate::http::{Class, HttpClient, HttpConfig, Request, classify};
use crate::{Error, Outcome, Record, shorten};

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Where documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `<prefix>-YYYY.MM.DD` (UTC day of the event).
    DailyIndex(String),
    /// A data stream (its template must exist: [`Elasticsearch::prepare`] makes one).
    DataStream(String),
}

/// Configuration.
#[derive(Debug, Clone)]
pub struct ElasticsearchConfig {
    /// `https://es.example:9200` (with a path prefix if behind a proxy).
    pub url: String,
    /// Index or data stream.
    pub target: Target,
    /// Timeout, TLS, credentials (Basic, or `Auth::Raw("ApiKey <base64>")`).
    pub http: HttpConfig,
}

/// A bulk client.
#[derive(Debug)]
pub struct Elasticsearch {
    client: HttpClient,
    target: Target,
}

impl Elasticsearch {
    /// Checks the configuration; connects to nothing.
    pub fn new(cfg: ElasticsearchConfig) -> Result<Elasticsearch, Error> {
        let name = match &cfg.target {
            Target::DailyIndex(n) | Target::DataStream(n) => n,
        };
        if name.is_empty()
            || name.starts_with(['-', '_', '+'])
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(Error::Config(format!(
                "index `{name}`: lowercase letters, digits, `-`, `_` and `.`, not starting with `-`, `_` or `+`"
            )));
        }
        Ok(Elasticsearch {
            client: HttpClient::new(&cfg.url, &cfg.http)?,
            target: cfg.target,
        })
    }

    /// The index template `PUT _index_template/<name>` installs.
    pub fn index_template(&self) -> Value {
        let (pattern, data_stream) = match &self.target {
            Target::DailyIndex(p) => (format!("{p}-*"), false),
            Target::DataStream(d) => (d.clone(), true),
        };
        let mut t = json!({
            "index_patterns": [pattern],
            "priority": 200,
            "template": {
                "mappings": {
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "event": {"properties": {
                            "created": {"type": "date"}, "start": {"type": "date"}, "end": {"type": "date"},
                        }},
                        "source": {"properties": {"ip": {"type": "ip"}}},
                        "related": {"properties": {"ip": {"type": "ip"}}},
                        "kubernetes": {"properties": {"audit": {"properties": {
                            "requestObject": {"type": "object", "enabled": false},
                            "responseObject": {"type": "object", "enabled": false},
                        }}}},
                    }
                }
            },
            "_meta": {"created_by": "kubetrail"},
        });
        if data_stream {
            t["data_stream"] = json!({});
        }
        t
    }

    /// Installs (or replaces) the index template. Optional: without it, dynamic mapping applies.
    pub async fn prepare(&self) -> Result<(), Error> {
        let name = match &self.target {
            Target::DailyIndex(n) | Target::DataStream(n) => n,
        };
        let req = Request::new(Method::PUT, format!("/_index_template/{name}"))
            .body(self.index_template().to_string(), "application/json");
        let resp = self.client.send(req).await.map_err(Error::Unavailable)?;
        if classify(resp.status) == Class::Success {
            Ok(())
        } else {
            Err(Error::Http {
                target: self.client.target().to_string(),
                status: resp.status,
                message: resp.text(500),
            })
        }
    }

    /// The NDJSON body for the batch: the indices sent and the records dead before sending.
    fn bulk_body(&self, batch: &[Record<'_>]) -> (Vec<u8>, Vec<usize>, Vec<(usize, String)>) {
        let mut body = Vec::new();
        let (mut sent, mut dead) = (Vec::new(), Vec::new());
        for (i, r) in batch.iter().enumerate() {
            let f = match Fields::parse(r) {
                Ok(f) => f,
                Err(why) => {
                    dead.push((i, why));
                    continue;
                }
            };
            let index = match &self.target {
                Target::DailyIndex(p) => format!("{p}-{}", f.time.strftime("%Y.%m.%d")),
                Target::DataStream(d) => d.clone(),
            };
            let action = json!({"create": {"_index": index, "_id": r.id}});
            serde_json::to_writer(&mut body, &action).expect("serialises");
            body.push(b'\n');
            serde_json::to_writer(&mut body, &ecs_from(r, &f)).expect("serialises");
            body.push(b'\n');
            sent.push(i);
        }
        (body, sent, dead)
    }

    /// One `_bulk` request for the batch.
    pub async fn send(&self, batch: &[Record<'_>]) -> Outcome {
        let (body, sent, mut dead) = self.bulk_body(batch);
        if sent.is_empty() {
            return Outcome::from_parts(batch.len(), vec![], dead, String::new, None);
        }
        let req = Request::new(Method::POST, "/_bulk").body(body, "application/x-ndjson");
        let resp = match self.client.send(req).await {
            Ok(r) => r,
            Err(why) => return Outcome::from_parts(batch.len(), sent, dead, || why, None),
        };
        match classify(resp.status) {
            Class::Success => {}
            Class::Retry => {
                let reason = format!("HTTP {} {}", resp.status, error_text(&resp.body));
                return Outcome::from_parts(batch.len(), sent, dead, || reason, resp.retry_after());
            }
            Class::Dead => {
                return Outcome::Dead {
                    reason: format!("HTTP {} {}", resp.status, error_text(&resp.body)),
                };
            }
        }
        let answer: Value = match serde_json::from_slice(&resp.body) {
            Ok(v) => v,
            Err(e) => {
                let reason = format!("unreadable bulk answer: {e}");
                return Outcome::from_parts(batch.len(), sent, dead, || reason, None);
            }
        };
        if answer["errors"] == Value::Bool(false) {
            return Outcome::from_parts(batch.len(), vec![], dead, String::new, None);
        }
        let items = answer["items"].as_array().map_or(&[][..], Vec::as_slice);
        if items.len() != sent.len() {
            let reason = format!(
                "bulk answer has {} items for {} actions",
                items.len(),
                sent.len()
            );
            return Outcome::from_parts(batch.len(), sent, dead, || reason, None);
        }
        let mut retry = Vec::new();
        let mut first_retry = None;
        for (&i, item) in sent.iter().zip(items) {
            let result = item
                .as_object()
                .and_then(|o| o.values().next())
                .unwrap_or(&Value::Null);
            let status = result["status"].as_u64().unwrap_or(0) as u16;
            if status == 409 || classify(status) == Class::Success {
                continue;
            }
            let error = &result["error"];
            let mut why = format!(
                "HTTP {status} {}: {}",
                error["type"].as_str().unwrap_or("error"),
                error["reason"].as_str().unwrap_or("")
            );
            if let Some(cause) = error["caused_by"]["reason"].as_str() {
                why.push_str(&format!(
                    " (caused by {}: {cause})",
                    error["caused_by"]["type"].as_str().unwrap_or("")
                ));
            }
            let why = shorten(&why, 500);
            if matches!(status, 408 | 429) || status >= 500 || status == 0 {
                first_retry.get_or_insert(why);
                retry.push(i);
            } else {
                dead.push((i, why));
            }
        }
        Outcome::from_parts(
            batch.len(),
            retry,
            dead,
            || first_retry.unwrap_or_default(),
            None,
        )
    }
}

/// `type: reason` of an Elasticsearch error answer, else its start.
fn error_text(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (v["error"]["type"].as_str(), v["error"]["reason"].as_str()) {
        (Some(t), Some(r)) => shorten(&format!("{t}: {r}"), 300),
        _ => shorten(&String::from_utf8_lossy(body), 300),
    }
}

/// The ECS document of an event: `@timestamp` (when kube-apiserver received the request), `event.*` (kind
/// `event`, category `api`, type from the verb and the decision, action = verb, outcome from the authorization
/// decision and the response code), `user.name`, `user.group.name` (the groups), `user.effective.name` (the
/// impersonated user), `source.ip` (the first source IP, the client), `related.*`, `user_agent.original`,
/// `url.*`, `http.response.status_code`, `orchestrator.*` (type kubernetes, cluster, namespace, resource type
/// and name, API version), and the event itself under `kubernetes.audit`.
///
/// `Err` says why the record is not an audit event.
pub fn ecs_document(r: &Record<'_>) -> Result<Value, String> {
    Ok(ecs_from(r, &Fields::parse(r)?))
}

fn ecs_from(r: &Record<'_>, f: &Fields<'_>) -> Value {
    let ev = &f.ev;
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(f.time.to_string()));
    let verb = ev.verb.as_ref();
    let mut types = vec![match verb {
        "create" => "creation",
        "delete" | "deletecollection" => "deletion",
        "update" | "patch" => "change",
        "get" | "list" | "watch" => "access",
        _ => "info",
    }];
    match f.decision() {
        "allow" => types.push("allowed"),
        "forbid" => types.push("denied"),
        _ => {}
    }
    let mut event = json!({
        "kind": "event",
        "category": ["api"],
        "type": types,
        "outcome": f.success().as_str(),
        "id": r.id,
        "dataset": "kubernetes.audit",
        "module": "kubernetes",
    });
    if !verb.is_empty() {
        event["action"] = json!(verb);
    }
    if let Ok(created) = jiff::Timestamp::from_microsecond(r.received_us) {
        event["created"] = json!(created.to_string());
    }
    if let Some(t) = &ev.request_received_timestamp {
        event["start"] = json!(t);
    }
    if let Some(t) = &ev.stage_timestamp {
        event["end"] = json!(t);
    }
    if !f.reason().is_empty() {
        event["reason"] = json!(f.reason());
    }
    doc.insert("event".into(), event);

    let mut user = Map::new();
    if !ev.user.username.is_empty() {
        user.insert("name".into(), json!(ev.user.username));
    }
    if let Some(uid) = &ev.user.uid {
        user.insert("id".into(), json!(uid));
    }
    if !ev.user.groups.is_empty() {
        user.insert("group".into(), json!({"name": ev.user.groups}));
    }
    if !f.impersonated().is_empty() {
        user.insert("effective".into(), json!({"name": f.impersonated()}));
    }
    if !user.is_empty() {
        doc.insert("user".into(), Value::Object(user));
    }
    if let Some(ip) = ev.source_ips.first() {
        doc.insert("source".into(), json!({"ip": ip}));
    }
    let mut related = Map::new();
    if !ev.source_ips.is_empty() {
        related.insert("ip".into(), json!(ev.source_ips));
    }
    let users: Vec<&str> = [ev.user.username.as_ref(), f.impersonated()]
        .into_iter()
        .filter(|u| !u.is_empty())
        .collect();
    if !users.is_empty() {
        related.insert("user".into(), json!(users));
    }
    if !related.is_empty() {
        doc.insert("related".into(), Value::Object(related));
    }
    if !f.user_agent().is_empty() {
        doc.insert("user_agent".into(), json!({"original": f.user_agent()}));
    }
    if !ev.request_uri.is_empty() {
        doc.insert(
            "url".into(),
            json!({"original": ev.request_uri, "path": ev.request_uri.split('?').next()}),
        );
    }
    if let Some(code) = ev.code() {
        doc.insert("http".into(), json!({"response": {"status_code": code}}));
    }
    let mut orch = json!({"type": "kubernetes", "cluster": {"name": r.cluster}});
    if let Some(o) = &ev.object_ref {
        if !o.namespace.is_empty() {
            orch["namespace"] = json!(o.namespace);
        }
        let mut resource = Map::new();
        if !o.resource.is_empty() {
            resource.insert("type".into(), json!(f.resource_path()));
        }
        if !o.name.is_empty() {
            resource.insert("name".into(), json!(o.name));
        }
        if !resource.is_empty() {
            orch["resource"] = Value::Object(resource);
        }
        if !o.api_version.is_empty() {
            let v = if o.api_group.is_empty() {
                o.api_version.to_string()
            } else {
                format!("{}/{}", o.api_group, o.api_version)
            };
            orch["api_version"] = json!(v);
        }
    }
    doc.insert("orchestrator".into(), orch);
    let original: Value = serde_json::from_str(r.event).unwrap_or(Value::Null);
    doc.insert("kubernetes".into(), json!({"audit": original}));
    doc.insert("ecs".into(), json!({"version": ECS_VERSION}));
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_mapping_of_an_exec() {
        let event = r#"{"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding"},"auditID":"ca1e","kind":"Event","level":"Request","objectRef":{"apiVersion":"v1","name":"nginx-1","namespace":"default","resource":"pods","subresource":"exec"},"requestReceivedTimestamp":"2018-10-26T13:38:34.867116Z","requestURI":"/api/v1/namespaces/default/pods/nginx-1/exec?command=bash","responseStatus":{"code":101},"sourceIPs":["192.168.99.1","10.0.0.1"],"stage":"ResponseStarted","stageTimestamp":"2018-10-26T13:38:34.902914Z","user":{"groups":["system:masters","system:authenticated"],"username":"minikube-user"},"impersonatedUser":{"username":"bob"},"userAgent":"kubectl/v1.30.0","verb":"create"}"#;
        let r = Record {
            id: "ca1e-ResponseStarted",
            cluster: "prod-eu",
            received_us: 1_540_561_115_000_000,
            event,
        };
        let doc = ecs_document(&r).unwrap();
        let want = json!({
            "@timestamp": "2018-10-26T13:38:34.867116Z",
            "event": {
                "kind": "event", "category": ["api"], "type": ["creation", "allowed"], "action": "create",
                "outcome": "success", "id": "ca1e-ResponseStarted", "dataset": "kubernetes.audit",
                "module": "kubernetes", "created": "2018-10-26T13:38:35Z",
                "start": "2018-10-26T13:38:34.867116Z", "end": "2018-10-26T13:38:34.902914Z",
                "reason": "RBAC: allowed by ClusterRoleBinding",
            },
            "user": {"name": "minikube-user", "group": {"name": ["system:masters", "system:authenticated"]},
                     "effective": {"name": "bob"}},
            "source": {"ip": "192.168.99.1"},
            "related": {"ip": ["192.168.99.1", "10.0.0.1"], "user": ["minikube-user", "bob"]},
            "user_agent": {"original": "kubectl/v1.30.0"},
            "url": {"original": "/api/v1/namespaces/default/pods/nginx-1/exec?command=bash",
                    "path": "/api/v1/namespaces/default/pods/nginx-1/exec"},
            "http": {"response": {"status_code": 101}},
            "orchestrator": {"type": "kubernetes", "cluster": {"name": "prod-eu"}, "namespace": "default",
                             "resource": {"type": "pods/exec", "name": "nginx-1"}, "api_version": "v1"},
            "kubernetes": {"audit": serde_json::from_str::<Value>(event).unwrap()},
            "ecs": {"version": ECS_VERSION},
        });
        assert_eq!(doc, want);
    }

    #[test]
    fn forbidden_is_failure_and_denied() {
        let event = r#"{"annotations":{"authorization.k8s.io/decision":"forbid"},"auditID":"a","level":"Metadata","stage":"ResponseComplete","verb":"list","user":{"username":"bob"},"objectRef":{"resource":"secrets","namespace":"prod","apiGroup":"","apiVersion":"v1"},"responseStatus":{"code":403}}"#;
        let r = Record {
            id: "a",
            cluster: "c",
            received_us: 0,
            event,
        };
        let doc = ecs_document(&r).unwrap();
        assert_eq!(doc["event"]["outcome"], "failure");
        assert_eq!(doc["event"]["type"], json!(["access", "denied"]));
        assert!(doc.get("source").is_none());
    }
}
