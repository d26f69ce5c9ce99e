//! Redaction: the one place secret material leaves an audit event, before anything stores, ships or shows it.
//!
//! kube-apiserver logs bodies verbatim at `Request` and `RequestResponse` level, whatever kind of object they
//! hold, and policies in the wild log secrets at those levels by mistake. So kubetrail never trusts the policy:
//! every event passes through [`Redactor::redact`] before its first byte reaches disk, and nothing downstream
//! can take an event that did not (a [`Redacted`] can only be made here).
//!
//! What is redacted (the key, name or flag stays; only the value becomes a marker):
//! - Secret `data` and `stringData` values, in request and response bodies: a Secret, a SecretList's items,
//!   a Secret nested anywhere (a `List`, a `Table` row, a `Status`, any object with `kind: Secret`), and, for
//!   requests on the `secrets` resource, anything shaped like one: merge and strategic merge patches
//!   (`{"data":{..},"stringData":{..}}` at any depth), JSON patches (`{"op":..,"path":"/data/x","value":..}`,
//!   `path: /data` with an object value, and any op whose path is not plainly metadata) and a body that is a
//!   bare string.
//! - ConfigMap `data` and `binaryData` values whose key is secret-like (see below), in ConfigMaps,
//!   ConfigMapLists and ConfigMaps nested anywhere (as for Secrets), and, for requests on the `configmaps`
//!   resource, in merge patches (`data`/`binaryData` at any depth) and JSON patches (`/data/<key>`,
//!   `/binaryData/<key>`, `/data` with an object value). Inside the other `data` values (files: properties,
//!   `.env`, INI, YAML, JSON) the secret values of lines `<secret-like> = value` / `<secret-like>: value`
//!   (YAML block scalars too), inline `<secret-like>=value` (query strings, connection strings),
//!   `"<secret-like>": "value"`, the password of URLs `scheme://user:password@host`, and PEM private key
//!   blocks (`-----BEGIN … PRIVATE KEY-----` to its `-----END …-----`). A YAML apply patch (a bare string
//!   body on `configmaps`) is read the same way.
//! - Container environment values: the literal `value` of an `env` array's entry whose `name` is secret-like,
//!   anywhere in a body: the `containers`, `initContainers` and `ephemeralContainers` of Pods and of the pod
//!   templates of Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs
//!   (`spec.jobTemplate.spec.template`), PodTemplates, ReplicationControllers and ControllerRevisions, lists
//!   and tables of these, custom resources, and merge and strategic merge patches. `valueFrom` references
//!   stay. In JSON patches: `…/env` (an array), `…/env/<i>` and `…/env/-` (an entry) and `…/env/<i>/value`
//!   (whose name is not in the patch, so it is always redacted).
//! - kubectl's `kubectl.kubernetes.io/last-applied-configuration` annotation, on any kind (and in JSON patches
//!   of it): it is a copy of the applied object and is redacted like that object (a Secret's values, a
//!   ConfigMap's secret-like keys, a Deployment's env values...) and re-serialized; a Secret's copy that is
//!   not JSON is replaced whole.
//! - The issued token of a TokenRequest (`status.token`, `serviceaccounts/token` responses).
//! - The reviewed token of a TokenReview (`spec.token`, in the request and the response).
//! - Credentials in the request URI's query string (keys compared case-insensitively after percent-decoding):
//!   `access_token`, `token`, `id_token`, `refresh_token`, `client_secret`, `password`, `passwd`, `secret`,
//!   `apikey`, `api_key`, `api-key`, `x-api-key`, `jwt`, `auth_token`, `private_token`, `signature`, `sig`,
//!   `X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`, the configured
//!   [`RedactionConfig::uri_parameters`], and any other parameter whose name is secret-like (kube-apiserver's
//!   own parameters, `watch`, `labelSelector`, `continue`..., never are).
//! - Passwords in the `command` arguments of exec requests (`pods/exec?command=mysql&command=-pS3cret...`),
//!   keeping the rest of the command: `-pVALUE` when the command runs a program that takes its password that
//!   way (the `mysql`/`mariadb` tools, `sshpass`), `--<secret-like>=VALUE` and `<secret-like>=VALUE` inside
//!   any argument (`sh -c "PGPASSWORD=x psql"`, quoted values whole), `--<secret-like> VALUE` (unless the flag
//!   names a file, path, directory or stdin), the password of `scheme://user:password@host`, curl's
//!   `-u user:password`, `Bearer <token>`, `Authorization: Basic <credentials>` and `<secret-like>: <value>`
//!   headers. The argument stays percent-encoded as it was; the marker is spliced in where the value's escaped
//!   bytes were (its characters need no escaping).
//!
//! Secret-like names. A name (an env name, a ConfigMap key, a query parameter, a flag) is compared with the
//! patterns after normalising both: ASCII letters lower-cased, and every other ASCII character (`-`, `_`, `.`,
//! space...) dropped, so `DB_PASSWORD`, `db-password`, `dbPassword` and `db.password` are all `dbpassword`.
//! A pattern of five or more characters matches anywhere in the name (`password` in `PGPASSWORD`, `token` in
//! `GITHUB_TOKEN`, `api_key` in `X-API-KEY`); a shorter one must be whole segments of the name, segments
//! being split at those dropped characters, at lower-to-upper case changes (`dbPwd`), at the end of an
//! acronym (`DBPass`) and between letters and digits. So `auth` makes `BASIC_AUTH`, `authToken` and
//! `REDIS_AUTH` secret-like but not `AUTHOR` or `OAUTH` (whose values are not credentials), and `pass` makes
//! `DB_PASS` secret-like but not `PASSTHROUGH`. The defaults are `password`, `passwd`, `passphrase`,
//! `secret`, `token`, `apikey`, `api_key`, `access_key`, `private_key`, `credential`, `connection_string`,
//! `encryption_key`, `signing_key`, `id_rsa`, `id_ecdsa`, `id_ed25519` (anywhere) and `pwd`, `pw`, `pass`,
//! `auth` (whole segments); [`RedactionConfig::key_patterns`] adds to them. Everything else keeps its value:
//! `LOG_LEVEL: info` stays readable. Being generous costs a little evidence (`MAX_TOKENS`, `SECRET_NAME`,
//! `GOOGLE_APPLICATION_CREDENTIALS` lose their values, which are rarely secrets), being stingy leaks.
//!
//! Not redacted: values in a container's `command`/`args`, env values whose name is not secret-like (a
//! `DATABASE_URL` with a password in it, a private key under `SSH_KEY`), probe headers, ConfigMap
//! `binaryData` values under other keys, the other fields of custom resources.
//!
//! The marker is `kubetrail-redacted:len=N:hmac=F`: `N` is the value's length in bytes (of the decoded value
//! for base64 `data`/`binaryData`, of the percent-decoded value in a URI) and `F` the first 16 bytes of
//! HMAC-SHA256 under the installation's [`RedactionKey`], base64url without padding, over the value's bytes
//! (decoded, so a value written through `stringData` and read back through `data`, or typed in an exec
//! command, has the same fingerprint). Why a keyed fingerprint and never a plain hash: it lets an investigator
//! tell that two events carried the same secret, or that a leaked token was the one a TokenRequest issued,
//! while a hash would let anyone holding the logs confirm guesses of low-entropy values (passwords, short
//! tokens) offline. Without the key, markers say nothing but the length.
//!
//! Cost: most events cannot carry any of this, and for them [`Redactor::redact`] decides with a few checks on
//! the raw text, without parsing it, and returns the input borrowed, untouched. Which checks depends on who
//! wrote a body. kube-apiserver logs the request body of a create or update, and every response body,
//! re-encoded from the typed object it decoded (unknown fields dropped, fields in their Go struct's order,
//! `kind` first), so such a body holds what its kind can:
//! - on built-in resources whose kinds hold none of the above (Leases, Nodes, Events, Services, Endpoints,
//!   EndpointSlices, RBAC objects, access reviews, `binding`, `eviction` and `scale` subresources...): it is
//!   not looked at;
//! - on pod-bearing resources, a body whose top-level kind is pod-bearing (a Pod, a DeploymentList): every
//!   `"value"` key is accounted for, because Go writes a literal env value only as `{"name":"N","value":V}`
//!   (`N` is checked; a Toleration's value is skipped; any other place sends the body to a full read of its
//!   env arrays), and its last-applied copies are read;
//! - on `configmaps`, a ConfigMap or ConfigMapList: the keys and values of its `data` and `binaryData` maps are
//!   read in place, and its last-applied copies.
//!
//! Everything else (patches, which are the client's bytes as sent; custom and unknown resources; bodies of
//! another top-level kind, such as a `Table`, a `List` or a `Status`; text with `\u` escapes of ASCII
//! characters, which kube-apiserver never writes) gets every check: Secret, TokenRequest, TokenReview and
//! ConfigMap kinds anywhere, env arrays and ConfigMap data read in place, last-applied copies. Only a possibly
//! sensitive event is parsed into a `serde_json::Value`, redacted and re-serialized (field order may change);
//! `benches/redact.rs` measures the cost on generated traffic. Values are never logged, here or in errors.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use kubetrail_model::Event;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

/// The prefix of every marker; a string of exactly the marker's shape is taken as already redacted.
const MARKER_PREFIX: &str = "kubetrail-redacted:len=";
/// Bytes of the HMAC kept in a marker (128 bits: collisions are not a concern at audit volumes).
const FINGERPRINT_BYTES: usize = 16;
/// kubectl's copy of the whole applied object, secret values included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The same key as a JSON pointer segment (`/` escaped as `~1`).
const LAST_APPLIED_POINTER: &str =
    "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration";

/// Query parameters that carry credentials whatever the key patterns say (compared case-insensitively).
const URI_CREDENTIALS: &[&str] = &[
    "access_token",
    "token",
    "id_token",
    "refresh_token",
    "client_secret",
    "password",
    "passwd",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "x-api-key",
    "jwt",
    "auth_token",
    "private_token",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// Secret-like name patterns (see the module docs for how they match).
const DEFAULT_KEY_PATTERNS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "access_key",
    "private_key",
    "credential",
    "connection_string",
    "encryption_key",
    "signing_key",
    "id_rsa",
    "id_ecdsa",
    "id_ed25519",
    "pwd",
    "pw",
    "pass",
    "auth",
];

/// Patterns shorter than this (normalised) must be whole segments of a name.
const WHOLE_SEGMENT_BELOW: usize = 5;

/// Programs whose `-pVALUE` is a password (`mysql -uroot -pS3cret`), not a port or a path.
const TAKES_P_PASSWORD: &[&str] = &[
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mysqlcheck",
    "mysqlshow",
    "mysqlslap",
    "mysqlpump",
    "mysqlbinlog",
    "mysqlsh",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
    "mariadb-import",
    "mariadb-check",
    "mariadb-show",
    "mariadb-slap",
    "mariadb-binlog",
    "sshpass",
];

/// The installation's secret key for fingerprints. The binary creates it once and stores it; never printed.
#[derive(Clone)]
pub struct RedactionKey([u8; 32]);

impl RedactionKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        RedactionKey(b)
    }
}

impl fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedactionKey(..)")
    }
}

/// Additions to the built-in secret-like patterns (the `redaction` section of the configuration). Entries are
/// added to the defaults, never replace them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RedactionConfig {
    /// More secret-like name patterns for env names, ConfigMap keys, query parameters and command flags,
    /// matched as the defaults are (case-insensitive, `-`/`_`/`.` ignored; shorter than five characters: whole
    /// segments only). Empty entries are ignored.
    #[serde(default)]
    pub key_patterns: Vec<String>,
    /// More query parameters whose values are credentials, compared case-insensitively after
    /// percent-decoding.
    #[serde(default)]
    pub uri_parameters: Vec<String>,
}

/// An event's JSON after redaction. Only [`Redactor::redact`] makes one, so holding one proves it was redacted.
#[derive(Debug, Clone)]
pub struct Redacted<'a> {
    json: Cow<'a, str>,
}

impl Redacted<'_> {
    /// The event's JSON text, with every sensitive value replaced by a marker.
    pub fn as_str(&self) -> &str {
        &self.json
    }

    pub fn into_owned(self) -> Redacted<'static> {
        Redacted {
            json: Cow::Owned(self.json.into_owned()),
        }
    }

    /// Whether anything was replaced (otherwise the text is the input, byte for byte).
    pub fn is_modified(&self) -> bool {
        matches!(self.json, Cow::Owned(_))
    }
}

/// How many values of each kind one or more events had redacted.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedactionCounts {
    /// Secret `data`/`stringData` values (also inside last-applied annotations and patches).
    pub secret_values: u64,
    /// TokenRequest `status.token`.
    pub token_request_tokens: u64,
    /// TokenReview `spec.token`.
    pub token_review_tokens: u64,
    /// Credentials in request URI query strings.
    pub uri_tokens: u64,
    /// ConfigMap `data`/`binaryData` values under secret-like keys, and secret values inside the others
    /// (assignments, URL passwords, private keys); in objects, patches and last-applied copies.
    pub configmap_values: u64,
    /// Container `env` values under secret-like names, in any body (and in patches and last-applied copies).
    pub env_values: u64,
    /// Passwords and tokens in exec `command` arguments of the request URI.
    pub command_args: u64,
    /// Request or response bodies dropped whole because they could not be read as JSON values (nested past
    /// serde_json's depth limit, or numbers out of range): redacting what cannot be read means removing it.
    pub dropped_bodies: u64,
}

impl RedactionCounts {
    pub fn total(&self) -> u64 {
        self.secret_values
            + self.token_request_tokens
            + self.token_review_tokens
            + self.uri_tokens
            + self.configmap_values
            + self.env_values
            + self.command_args
            + self.dropped_bodies
    }

    pub fn add(&mut self, other: &Self) {
        self.secret_values += other.secret_values;
        self.token_request_tokens += other.token_request_tokens;
        self.token_review_tokens += other.token_review_tokens;
        self.uri_tokens += other.uri_tokens;
        self.configmap_values += other.configmap_values;
        self.env_values += other.env_values;
        self.command_args += other.command_args;
        self.dropped_bodies += other.dropped_bodies;
    }
}

/// Replaces secret values in audit events with keyed fingerprints. Cheap to share (the rules are behind an
/// `Arc`); pure.
#[derive(Clone)]
pub struct Redactor {
    key: RedactionKey,
    rules: Arc<Rules>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").finish_non_exhaustive()
    }
}

/// What the request was about, as far as redaction cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Secrets,
    TokenRequest,
    TokenReview,
    ConfigMaps,
    Other,
}

/// What a body can hold besides what its context says, by who wrote it (see `reach_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// A typed built-in object of a kind with no env, ConfigMap data or embedded objects (a Lease, a Node).
    Nothing,
    /// A typed object kube-apiserver wrote for a pod-bearing resource: if its top-level kind is a pod-bearing
    /// kind (a Pod, a DeploymentList), only its env arrays and last-applied copies; anything else (a `Table`,
    /// a `Status`, something odd) is read as `Anything`.
    PodSpecs,
    /// The same for the `configmaps` resource and the kinds `ConfigMap` and `ConfigMapList`: their data.
    ConfigMaps,
    /// Anything: patches (the client's bytes as sent), custom and unknown resources.
    Anything,
}

/// Which kinds of object a walk is inside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scope {
    secret: bool,
    configmap: bool,
}

impl Scope {
    fn of(context: Context) -> Scope {
        Scope {
            secret: context == Context::Secrets,
            configmap: context == Context::ConfigMaps,
        }
    }
}

/// How a value is measured and fingerprinted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Secret `data`, ConfigMap `binaryData`: base64 of the bytes (measured decoded when it decodes).
    Base64,
    Plain,
}

/// The secret-like name patterns and credential query parameters in force.
#[derive(Debug)]
struct Rules {
    keys: KeyPatterns,
    /// Lower-cased.
    uri_parameters: Vec<Vec<u8>>,
}

impl Redactor {
    /// A redactor with the default patterns.
    pub fn new(key: RedactionKey) -> Self {
        Redactor::with_config(key, &RedactionConfig::default())
    }

    /// A redactor with the default patterns plus the configured ones.
    pub fn with_config(key: RedactionKey, cfg: &RedactionConfig) -> Redactor {
        let mut uri_parameters: Vec<Vec<u8>> = URI_CREDENTIALS
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        for p in &cfg.uri_parameters {
            let p = percent_decode(p.trim()).to_ascii_lowercase();
            if !p.is_empty() && !uri_parameters.contains(&p) {
                uri_parameters.push(p);
            }
        }
        Redactor {
            key,
            rules: Arc::new(Rules {
                keys: KeyPatterns::new(&cfg.key_patterns),
                uri_parameters,
            }),
        }
    }

    /// HMAC-SHA256 of `purpose` under the installation key: a key for another keyed digest (deduplication,
    /// say), derived so the installation key itself never leaves the redactor. Use a fixed, namespaced
    /// purpose per use (`b"kubetrail/dedup/v1"`).
    pub fn derive_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose);
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag);
        out
    }

    /// Redacts one event. `json` must be the text `event` was parsed from (`Event::parse(json)`).
    ///
    /// Events that cannot carry a secret come back borrowed and byte-identical; the others are re-serialized
    /// with every sensitive value replaced by a marker (see the module docs).
    pub fn redact<'a>(&self, event: &Event<'_>, json: &'a str) -> (Redacted<'a>, RedactionCounts) {
        let mut counts = RedactionCounts::default();
        let uri = self.redact_uri(&event.request_uri, &mut counts);
        let has_body = event.request_object.is_some() || event.response_object.is_some();
        if !has_body && uri.is_none() {
            return (borrowed(json), counts);
        }
        let context = context_of(event);
        let bodies_sensitive = self.bodies_sensitive(event, context);
        if !bodies_sensitive.contains(&true) && uri.is_none() {
            return (borrowed(json), counts);
        }

        let Ok(Value::Object(mut root)) = serde_json::from_str::<Value>(json) else {
            return self.fallback(event, json, bodies_sensitive, counts);
        };
        if let Some(uri) = uri {
            root.insert("requestURI".to_owned(), Value::String(uri));
        }
        for field in ["requestObject", "responseObject"] {
            if let Some(body) = root.get_mut(field) {
                self.redact_body(body, context, &mut counts);
            }
        }
        if counts.total() == 0 {
            return (borrowed(json), counts);
        }
        let text = serde_json::to_string(&Value::Object(root))
            .unwrap_or_else(|_| unreachable!("a Value with string keys always serializes"));
        (
            Redacted {
                json: Cow::Owned(text),
            },
            counts,
        )
    }

    /// Which of the request and response bodies may hold something to redact (the fast path's decision).
    fn bodies_sensitive(&self, event: &Event<'_>, context: Context) -> [bool; 2] {
        let (request, response) = reach_of(event);
        [
            (event.request_object, request),
            (event.response_object, response),
        ]
        .map(|(body, holds)| {
            body.is_some_and(|b| self.may_hold_sensitive(b.get(), context, holds, 0))
        })
    }

    /// When the event text parsed as an `Event` but not as a `Value`: rebuild it from the typed event without
    /// the bodies that might hold a secret.
    fn fallback<'a>(
        &self,
        event: &Event<'_>,
        json: &'a str,
        sensitive: [bool; 2],
        mut counts: RedactionCounts,
    ) -> (Redacted<'a>, RedactionCounts) {
        let mut event = event.clone();
        for (body, sensitive) in [&mut event.request_object, &mut event.response_object]
            .into_iter()
            .zip(sensitive)
        {
            if sensitive {
                *body = None;
                counts.dropped_bodies += 1;
            }
        }
        let mut scratch = RedactionCounts::default();
        if let Some(uri) = self.redact_uri(&event.request_uri, &mut scratch) {
            event.request_uri = Cow::Owned(uri);
        }
        counts.uri_tokens = scratch.uri_tokens;
        counts.command_args = scratch.command_args;
        if counts.total() == 0 {
            return (borrowed(json), counts);
        }
        let text = serde_json::to_string(&event)
            .unwrap_or_else(|_| unreachable!("an Event with string keys always serializes"));
        (
            Redacted {
                json: Cow::Owned(text),
            },
            counts,
        )
    }

    fn redact_body(&self, body: &mut Value, context: Context, counts: &mut RedactionCounts) {
        match (context, &mut *body) {
            // Not JSON the apiserver decoded (a YAML apply patch, say): nothing tells keys from values.
            (Context::Secrets, Value::String(_)) => {
                self.replace(body, Encoding::Plain, &mut counts.secret_values)
            }
            // A YAML apply patch of a ConfigMap: read as a file.
            (Context::ConfigMaps, Value::String(text)) => {
                self.redact_text(text, &mut counts.configmap_values)
            }
            (_, Value::Array(ops)) => self.redact_json_patch(ops, context, counts),
            (Context::TokenRequest, Value::Object(map)) => {
                self.redact_at(map, "status", "token", &mut counts.token_request_tokens)
            }
            (Context::TokenReview, Value::Object(map)) => {
                self.redact_at(map, "spec", "token", &mut counts.token_review_tokens)
            }
            (Context::TokenRequest | Context::TokenReview, Value::String(_)) => {
                let counter = if context == Context::TokenRequest {
                    &mut counts.token_request_tokens
                } else {
                    &mut counts.token_review_tokens
                };
                self.replace(body, Encoding::Plain, counter)
            }
            _ => {}
        }
        self.walk(body, Scope::of(context), counts);
    }

    /// Visits every object: Secrets (by kind, or everything under a `secrets` request) lose their values,
    /// ConfigMaps their secret-like ones, env arrays theirs, TokenRequests and TokenReviews their tokens,
    /// wherever they are nested; last-applied copies are redacted like what they copy.
    fn walk(&self, value: &mut Value, scope: Scope, counts: &mut RedactionCounts) {
        match value {
            Value::Object(map) => {
                let mut scope = scope;
                match map.get("kind").and_then(Value::as_str) {
                    Some("Secret" | "SecretList") => scope.secret = true,
                    Some("ConfigMap" | "ConfigMapList") => scope.configmap = true,
                    Some("TokenRequest") => {
                        self.redact_at(map, "status", "token", &mut counts.token_request_tokens)
                    }
                    Some("TokenReview") => {
                        self.redact_at(map, "spec", "token", &mut counts.token_review_tokens)
                    }
                    _ => {}
                }
                for (key, child) in map.iter_mut() {
                    match key.as_str() {
                        "data" if scope.secret => {
                            self.redact_entries(child, Encoding::Base64, counts)
                        }
                        "stringData" if scope.secret => {
                            self.redact_entries(child, Encoding::Plain, counts)
                        }
                        "data" if scope.configmap => {
                            self.redact_configmap_data(child, Encoding::Plain, scope, counts)
                        }
                        "binaryData" if scope.configmap => {
                            self.redact_configmap_data(child, Encoding::Base64, scope, counts)
                        }
                        "env" => {
                            if let Value::Array(entries) = child {
                                self.redact_env(entries, counts);
                            }
                            self.walk(child, scope, counts);
                        }
                        LAST_APPLIED => self.redact_last_applied(child, scope, counts),
                        _ => self.walk(child, scope, counts),
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, scope, counts);
                }
            }
            _ => {}
        }
    }

    /// A Secret's `data` or `stringData`: each value becomes a marker; anything else there, whole.
    fn redact_entries(&self, value: &mut Value, encoding: Encoding, counts: &mut RedactionCounts) {
        match value {
            Value::Object(map) => {
                for entry in map.values_mut() {
                    self.replace(entry, encoding, &mut counts.secret_values);
                }
            }
            _ => self.replace(value, encoding, &mut counts.secret_values),
        }
    }

    /// A ConfigMap's `data` or `binaryData`: values under secret-like keys become markers, secrets inside the
    /// other `data` values (files) too.
    fn redact_configmap_data(
        &self,
        value: &mut Value,
        encoding: Encoding,
        scope: Scope,
        counts: &mut RedactionCounts,
    ) {
        let Value::Object(map) = value else {
            self.walk(value, scope, counts);
            return;
        };
        for (key, entry) in map.iter_mut() {
            if self.rules.keys.matches(key.as_bytes()) {
                self.replace(entry, encoding, &mut counts.configmap_values);
            } else if let Value::String(text) = entry {
                if encoding == Encoding::Plain {
                    self.redact_text(text, &mut counts.configmap_values);
                }
            } else {
                // Not a ConfigMap's value: whatever it holds.
                self.walk(entry, scope, counts);
            }
        }
    }

    /// An `env` array: the literal values of entries with a secret-like name.
    fn redact_env(&self, entries: &mut [Value], counts: &mut RedactionCounts) {
        for entry in entries {
            if let Value::Object(entry) = entry {
                self.redact_env_entry(entry, counts);
            }
        }
    }

    fn redact_env_entry(&self, entry: &mut Map<String, Value>, counts: &mut RedactionCounts) {
        let secret_name = entry
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| self.rules.keys.matches(n.as_bytes()));
        if secret_name && let Some(value) = entry.get_mut("value") {
            self.replace(value, Encoding::Plain, &mut counts.env_values);
        }
    }

    /// Secrets inside free text (a ConfigMap value that is a file): each becomes a marker in place.
    fn redact_text(&self, text: &mut String, counter: &mut u64) {
        let mut ranges = Vec::new();
        file_secrets(&self.rules.keys, text.as_bytes(), &mut ranges);
        if ranges.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len() + ranges.len() * 48);
        let mut at = 0;
        for r in ranges {
            out.push_str(&text[at..r.start]);
            out.push_str(&self.marker(&text.as_bytes()[r.clone()]));
            at = r.end;
            *counter += 1;
        }
        out.push_str(&text[at..]);
        *text = out;
    }

    /// kubectl's last-applied copy: redacted as the object it copies. A Secret's copy that is not JSON is
    /// replaced whole; other copies that are not JSON stay (kubectl only writes JSON).
    fn redact_last_applied(&self, value: &mut Value, scope: Scope, counts: &mut RedactionCounts) {
        let Value::String(text) = value else {
            self.walk(value, scope, counts);
            return;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(mut applied) => {
                let before = counts.total();
                self.walk(&mut applied, scope, counts);
                if counts.total() != before {
                    *text = applied.to_string();
                }
            }
            Err(_) if scope.secret => {
                self.replace(value, Encoding::Plain, &mut counts.secret_values)
            }
            Err(_) => {}
        }
    }

    /// A JSON patch (RFC 6902). On a Secret: values under `/data` and `/stringData` (whole maps too), and any
    /// value at a path that is not plainly metadata. On a ConfigMap: values under secret-like keys of `/data`
    /// and `/binaryData`. On anything: env arrays, entries and values, and last-applied copies. `walk` then
    /// reads every value (a whole object, a container with its env).
    fn redact_json_patch(&self, ops: &mut [Value], context: Context, counts: &mut RedactionCounts) {
        let scope = Scope::of(context);
        for op in ops {
            let Value::Object(op) = op else { continue };
            let Some(path) = op.get("path").and_then(Value::as_str) else {
                continue;
            };
            let path = path.to_owned();
            let Some(value) = op.get_mut("value") else {
                continue;
            };
            if context == Context::Secrets {
                self.redact_secret_patch_value(&path, value, counts);
                continue;
            }
            if path == LAST_APPLIED_POINTER {
                self.redact_last_applied(value, scope, counts);
                continue;
            }
            let segments: Vec<&str> = path.split('/').skip(1).collect();
            if let Some(env) = segments.iter().rposition(|s| *s == "env") {
                match (&segments[env + 1..], &mut *value) {
                    ([], Value::Array(entries)) => self.redact_env(entries, counts),
                    ([_], Value::Object(entry)) => self.redact_env_entry(entry, counts),
                    // The entry's name is not in the patch: it may be a secret.
                    ([index, "value"], _) if *index != "-" => {
                        self.replace(value, Encoding::Plain, &mut counts.env_values)
                    }
                    _ => {}
                }
            }
            if context == Context::ConfigMaps {
                match segments.as_slice() {
                    ["data"] => self.redact_configmap_data(value, Encoding::Plain, scope, counts),
                    ["binaryData"] => {
                        self.redact_configmap_data(value, Encoding::Base64, scope, counts)
                    }
                    [map @ ("data" | "binaryData"), key] => {
                        let encoding = if *map == "data" {
                            Encoding::Plain
                        } else {
                            Encoding::Base64
                        };
                        if self.rules.keys.matches(unescape_pointer(key).as_bytes()) {
                            self.replace(value, encoding, &mut counts.configmap_values);
                        } else if let (Encoding::Plain, Value::String(text)) =
                            (encoding, &mut *value)
                        {
                            self.redact_text(text, &mut counts.configmap_values);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// One JSON patch value on a Secret; whole-object and metadata values are left to `walk`.
    fn redact_secret_patch_value(
        &self,
        path: &str,
        value: &mut Value,
        counts: &mut RedactionCounts,
    ) {
        match path {
            "/data" => self.redact_entries(value, Encoding::Base64, counts),
            "/stringData" => self.redact_entries(value, Encoding::Plain, counts),
            p if p.starts_with("/data/") => {
                self.replace(value, Encoding::Base64, &mut counts.secret_values)
            }
            p if p.starts_with("/stringData/") => {
                self.replace(value, Encoding::Plain, &mut counts.secret_values)
            }
            LAST_APPLIED_POINTER => {
                self.redact_last_applied(value, Scope::of(Context::Secrets), counts)
            }
            "" | "/" | "/type" | "/immutable" | "/kind" | "/apiVersion" => {}
            p if p == "/metadata" || p.starts_with("/metadata/") => {}
            // A path we cannot read (a typo, other casing, an array index): its value may be a secret.
            _ => self.replace(value, Encoding::Plain, &mut counts.secret_values),
        }
    }

    /// `map[outer][inner]` becomes a marker, if present.
    fn redact_at(&self, map: &mut Map<String, Value>, outer: &str, inner: &str, counter: &mut u64) {
        if let Some(Value::Object(outer)) = map.get_mut(outer)
            && let Some(value) = outer.get_mut(inner)
        {
            self.replace(value, Encoding::Plain, counter);
        }
    }

    /// Replaces one value by its marker (null, and markers already made, stay as they are).
    fn replace(&self, value: &mut Value, encoding: Encoding, counter: &mut u64) {
        let marker = match &*value {
            Value::Null => return,
            Value::String(s) if is_marker(s) => return,
            Value::String(s) => match encoding {
                Encoding::Base64 => match STANDARD.decode(s.as_bytes()) {
                    Ok(bytes) => self.marker(&bytes),
                    Err(_) => self.marker(s.as_bytes()),
                },
                Encoding::Plain => self.marker(s.as_bytes()),
            },
            other => self.marker(other.to_string().as_bytes()),
        };
        *value = Value::String(marker);
        *counter += 1;
    }

    fn marker(&self, bytes: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(bytes);
        let tag = mac.finalize().into_bytes();
        format!(
            "{MARKER_PREFIX}{}:hmac={}",
            bytes.len(),
            URL_SAFE_NO_PAD.encode(&tag[..FINGERPRINT_BYTES])
        )
    }

    /// The request URI with credential values in its query, and passwords in exec command arguments,
    /// replaced; `None` if it has none.
    fn redact_uri(&self, uri: &str, counts: &mut RedactionCounts) -> Option<String> {
        let query_start = find_byte(uri.as_bytes(), 0, b'?')? + 1;
        if only_kube_parameters(&uri.as_bytes()[query_start..]) {
            return None;
        }
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        let mut commands: Vec<Range<usize>> = Vec::new();
        let mut at = query_start;
        for param in uri[query_start..].split('&') {
            let start = at;
            at += param.len() + 1;
            let Some(eq) = param.find('=') else { continue };
            let value = start + eq + 1..start + param.len();
            match self.uri_parameter(&param[..eq]) {
                Parameter::Plain => {}
                Parameter::Command => commands.push(value),
                Parameter::Credential => {
                    let text = &uri[value.clone()];
                    if !text.is_empty() && !is_marker(text) {
                        edits.push((value, self.marker(&percent_decode(text))));
                        counts.uri_tokens += 1;
                    }
                }
            }
        }
        if !commands.is_empty() {
            self.redact_command(uri, &commands, &mut edits, counts);
        }
        if edits.is_empty() {
            return None;
        }
        edits.sort_by_key(|(r, _)| r.start);
        let mut out = String::with_capacity(uri.len() + edits.len() * 48);
        let mut at = 0;
        for (range, marker) in edits {
            out.push_str(&uri[at..range.start]);
            out.push_str(&marker);
            at = range.end;
        }
        out.push_str(&uri[at..]);
        Some(out)
    }

    /// The edits that replace passwords in the `command` arguments at `ranges` of `uri` (percent-encoded).
    fn redact_command(
        &self,
        uri: &str,
        ranges: &[Range<usize>],
        edits: &mut Vec<(Range<usize>, String)>,
        counts: &mut RedactionCounts,
    ) {
        let decoded: Vec<(Vec<u8>, Vec<usize>)> = ranges
            .iter()
            .map(|r| percent_decode_mapped(&uri[r.clone()]))
            .collect();
        let args: Vec<&[u8]> = decoded.iter().map(|(d, _)| d.as_slice()).collect();
        let mut found = vec![Vec::new(); args.len()];
        command_secrets(&self.rules.keys, &args, &mut found);
        for ((range, (arg, offsets)), secrets) in ranges.iter().zip(&decoded).zip(found) {
            for r in secrets {
                let raw = range.start + offsets[r.start]..range.start + offsets[r.end];
                edits.push((raw, self.marker(&arg[r])));
                counts.command_args += 1;
            }
        }
    }

    fn uri_parameter(&self, key: &str) -> Parameter {
        if is_kube_parameter(key.as_bytes()) {
            return Parameter::Plain;
        }
        let key: Cow<'_, [u8]> = if key.contains(['%', '+']) {
            Cow::Owned(percent_decode(key))
        } else {
            Cow::Borrowed(key.as_bytes())
        };
        if key.eq_ignore_ascii_case(b"command") {
            Parameter::Command
        } else if self
            .rules
            .uri_parameters
            .iter()
            .any(|p| key.eq_ignore_ascii_case(p))
            || self.rules.keys.matches(&key)
        {
            Parameter::Credential
        } else {
            Parameter::Plain
        }
    }

    // The fast path: whether a raw body may hold something `walk` would redact. A superset of `walk`'s
    // checks within what `holds` says the body can be; it reads names in place and parses nothing.

    /// Whether `text` (a body, or a last-applied copy in one) may hold something to redact. `depth` counts
    /// last-applied copies within copies.
    fn may_hold_sensitive(&self, text: &str, context: Context, holds: Holds, depth: u8) -> bool {
        match context {
            Context::Secrets | Context::TokenRequest | Context::TokenReview => return true,
            Context::ConfigMaps | Context::Other => {}
        }
        if depth > 3 {
            return true;
        }
        // A typed object of the resource's own kind.
        let typed = match holds {
            Holds::Nothing => return false,
            Holds::Anything => None,
            Holds::PodSpecs => typed_kind(text)
                .filter(|k| matches!(k, TypedKind::PodSpecs | TypedKind::PodSpecsList)),
            Holds::ConfigMaps => typed_kind(text).filter(|k| *k == TypedKind::ConfigMap),
        };
        // Keys and kinds spelled with `\u` escapes are not seen by the substring checks (kube-apiserver writes
        // none; anything else may).
        if has_letter_escape(text) {
            return true;
        }
        // A typed object: what its kind carries, and its last-applied copy (any JSON a user wrote).
        match typed {
            Some(TypedKind::PodSpecs | TypedKind::PodSpecsList) => {
                return self.typed_env_may_hold(text)
                    || self.last_applied_may_hold(text, context, depth);
            }
            Some(TypedKind::ConfigMap) => {
                return self.configmap_may_hold(text, context == Context::ConfigMaps)
                    || self.last_applied_may_hold(text, context, depth);
            }
            None => {}
        }
        if text.contains("\"Secret") || text.contains("\"TokenRe") {
            return true;
        }
        // A JSON patch of an env array, entry or value, or of a last-applied copy.
        if text.trim_start().starts_with('[')
            && (text.contains("/env") || text.contains("last-applied-configuration"))
        {
            return true;
        }
        let configmap = context == Context::ConfigMaps || text.contains("\"ConfigMap");
        (configmap && self.configmap_may_hold(text, context == Context::ConfigMaps))
            || self.env_may_hold(text)
            || self.last_applied_may_hold(text, context, depth)
    }

    /// `env_may_hold` for a typed object kube-apiserver wrote, without reading its env arrays: Go writes a
    /// literal env entry as `{"name":"N","value":V}`, so every `"value"` key of the text is accounted for:
    /// preceded by `{"name":"N",` and ending its object, its `N` is checked (env entries, and HTTP headers
    /// and sysctls, which are read the same way); preceded by `"operator":"X",`, it is a Toleration's; in any
    /// other place (another key order, spaces, a duplicate key) the text is read by `env_may_hold`.
    fn typed_env_may_hold(&self, text: &str) -> bool {
        let b = text.as_bytes();
        let mut fallback = false;
        // `value"`, not `"value"`: `str::contains` probes a needle's first and last bytes, and `"`…`e` is a
        // common pair in JSON, `v`…`"` a rare one.
        let found = any_occurrence(text, "value\"", 0, |v| {
            let Some(at) = v.checked_sub(1).filter(|&at| b[at] == b'"') else {
                return false;
            };
            let after = at + 7;
            match b.get(after) {
                Some(b':') => {}
                // A string "value", not a key.
                Some(b',' | b'}' | b']') => return false,
                _ => {
                    fallback = true;
                    return true;
                }
            }
            match literal_env_entry(b, at, after + 1) {
                Some(Some(name)) => name.contains(&b'\\') || self.rules.keys.matches(name),
                Some(None) => false,
                None => {
                    fallback = true;
                    true
                }
            }
        });
        if fallback {
            return self.env_may_hold(text);
        }
        found
    }

    /// Whether an `env` array in `text` has an entry with a literal value and a secret-like name.
    fn env_may_hold(&self, text: &str) -> bool {
        let mut next = find_from(text, "\"env\"", 0);
        while let Some(at) = next {
            let mut scan = Scan::at(text, at + 5);
            scan.ws();
            if scan.eat(b':') {
                scan.ws();
                if scan.peek() == Some(b'[') && self.env_array_may_hold(&mut scan).unwrap_or(true) {
                    return true;
                }
            }
            next = find_from(text, "\"env\"", scan.i.max(at + 5));
        }
        false
    }

    /// At an `env` array's `[`; `None` if it is not readable JSON. Entries as kube-apiserver writes them
    /// (`{"name":"N","value":"V"}`, `{"name":"N","valueFrom":{..}}`, `{"name":"N"}`) are read by their fixed
    /// shape, anything else key by key.
    fn env_array_may_hold(&self, scan: &mut Scan<'_>) -> Option<bool> {
        scan.eat(b'[');
        loop {
            let entry = scan.i;
            let canonical = match self.canonical_env_entry(scan) {
                Some(secret) => {
                    if secret {
                        return Some(true);
                    }
                    true
                }
                None => false,
            };
            if !canonical {
                scan.i = entry;
                scan.ws();
                match scan.peek()? {
                    b']' => {
                        scan.i += 1;
                        return Some(false);
                    }
                    b'{' => {
                        if self.env_entry_may_hold(scan)? {
                            return Some(true);
                        }
                    }
                    _ => scan.skip_value()?,
                }
            }
            scan.ws();
            match scan.peek()? {
                b',' => scan.i += 1,
                b']' => {
                    scan.i += 1;
                    return Some(false);
                }
                _ => return None,
            }
        }
    }

    /// An env entry of kube-apiserver's shape at `scan`: whether it may hold a secret, and past it; `None`
    /// (and `scan` anywhere) if it is not of that shape.
    fn canonical_env_entry(&self, scan: &mut Scan<'_>) -> Option<bool> {
        if !scan.skip_literal(b"{\"name\":") {
            return None;
        }
        let name = scan.string()?;
        if scan.skip_literal(b",\"value\":") {
            scan.string()?;
            if !scan.eat(b'}') {
                return None;
            }
            Some(name.escaped || self.rules.keys.matches(scan.slice(&name)))
        } else if scan.skip_literal(b",\"valueFrom\":") {
            if scan.peek()? != b'{' {
                return None;
            }
            scan.skip_value()?;
            scan.eat(b'}').then_some(false)
        } else {
            scan.eat(b'}').then_some(false)
        }
    }

    /// At an env entry's `{`: whether it has a non-null `value` and a secret-like `name` (the last one, if
    /// repeated: serde_json keeps the last).
    fn env_entry_may_hold(&self, scan: &mut Scan<'_>) -> Option<bool> {
        scan.eat(b'{');
        let (mut name, mut has_value) = (None, false);
        loop {
            scan.ws();
            if scan.eat(b'}') {
                let secret_name = |n: &Str| n.escaped || self.rules.keys.matches(scan.slice(n));
                return Some(has_value && name.as_ref().is_some_and(secret_name));
            }
            let key = scan.string()?;
            scan.ws();
            if !scan.eat(b':') {
                return None;
            }
            scan.ws();
            if key.escaped {
                // A key spelled with escapes may be `name` or `value`.
                return Some(true);
            }
            match (scan.slice(&key), scan.peek()?) {
                (b"name", b'"') => name = Some(scan.string()?),
                (b"value", b'n') => scan.skip_value()?,
                (b"value", _) => {
                    has_value = true;
                    scan.skip_value()?;
                }
                _ => scan.skip_value()?,
            }
            scan.ws();
            if !scan.eat(b',') && scan.peek()? != b'}' {
                return None;
            }
        }
    }

    /// Whether a ConfigMap-ish `text` has a `data`/`binaryData` map with a secret-like key, or a `data` value
    /// with a secret inside (`file_secrets`). `whole`: the body is about the `configmaps` resource, so a body
    /// that is not an object (a JSON patch, a YAML apply patch) is read by `walk`.
    fn configmap_may_hold(&self, text: &str, whole: bool) -> bool {
        if whole && !text.trim_start().starts_with('{') {
            return true;
        }
        for (needle, files) in [("\"data\"", true), ("\"binaryData\"", false)] {
            let mut from = 0;
            while let Some(at) = find_from(text, needle, from) {
                from = at + needle.len();
                let mut scan = Scan::at(text, from);
                scan.ws();
                if !scan.eat(b':') {
                    continue;
                }
                scan.ws();
                if scan.peek() != Some(b'{') {
                    continue;
                }
                if self
                    .data_map_may_hold(&mut scan, text, files)
                    .unwrap_or(true)
                {
                    return true;
                }
                from = scan.i;
            }
        }
        false
    }

    /// At a `data`/`binaryData` map's `{`.
    fn data_map_may_hold(&self, scan: &mut Scan<'_>, text: &str, files: bool) -> Option<bool> {
        scan.eat(b'{');
        loop {
            scan.ws();
            if scan.eat(b'}') {
                return Some(false);
            }
            let key = scan.string()?;
            if key.escaped || self.rules.keys.matches(scan.slice(&key)) {
                return Some(true);
            }
            scan.ws();
            if !scan.eat(b':') {
                return None;
            }
            scan.ws();
            if files && scan.peek() == Some(b'"') {
                let value = scan.string()?;
                let content: Cow<'_, [u8]> = if value.escaped {
                    let quoted = &text[value.start - 1..value.end + 1];
                    Cow::Owned(serde_json::from_str::<String>(quoted).ok()?.into_bytes())
                } else {
                    Cow::Borrowed(scan.slice(&value))
                };
                if has_file_secrets(&self.rules.keys, &content) {
                    return Some(true);
                }
            } else {
                scan.skip_value()?;
            }
            scan.ws();
            if !scan.eat(b',') && scan.peek()? != b'}' {
                return None;
            }
        }
    }

    /// Whether a last-applied copy in `text` may hold something (read as `Anything`: it is the JSON a user
    /// wrote, not a typed object).
    fn last_applied_may_hold(&self, text: &str, context: Context, depth: u8) -> bool {
        const NEEDLE: &str = "last-applied-configuration\"";
        if !text.contains(NEEDLE) {
            return false;
        }
        let mut from = 0;
        while let Some(at) = find_from(text, NEEDLE, from) {
            from = at + NEEDLE.len();
            let mut scan = Scan::at(text, from);
            scan.ws();
            if !scan.eat(b':') {
                continue;
            }
            scan.ws();
            // Not a string: inline JSON, already read with the rest of `text`.
            if scan.peek() != Some(b'"') {
                continue;
            }
            let Some(copy) = scan.string() else {
                return true;
            };
            from = scan.i;
            let copy: Cow<'_, str> = if copy.escaped {
                match serde_json::from_str::<String>(&text[copy.start - 1..copy.end + 1]) {
                    Ok(s) => Cow::Owned(s),
                    Err(_) => return true,
                }
            } else {
                Cow::Borrowed(&text[copy.start..copy.end])
            };
            if self.may_hold_sensitive(&copy, context, Holds::Anything, depth + 1) {
                return true;
            }
        }
        false
    }
}

/// What a query parameter is to redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parameter {
    Plain,
    Credential,
    /// An exec argument, read for passwords.
    Command,
}

/// Whether every parameter of `query` is one of kube-apiserver's own (the common case, decided in one pass).
fn only_kube_parameters(query: &[u8]) -> bool {
    let mut i = 0;
    loop {
        let key = i;
        while i < query.len() && query[i] != b'=' && query[i] != b'&' {
            i += 1;
        }
        if !is_kube_parameter(&query[key..i]) {
            return false;
        }
        while i < query.len() && query[i] != b'&' {
            i += 1;
        }
        if i == query.len() {
            return true;
        }
        i += 1;
    }
}

/// kube-apiserver's own query parameters (and the exec/attach/log/port-forward options): never credentials,
/// decided without decoding. Exact, case-sensitive spellings; anything else is looked at.
fn is_kube_parameter(key: &[u8]) -> bool {
    match key.len() {
        2 => matches!(key, b"as"),
        3 => matches!(key, b"tty"),
        4 => matches!(key, b"path"),
        5 => matches!(key, b"force" | b"limit" | b"ports" | b"stdin" | b"watch"),
        6 => matches!(
            key,
            b"dryRun" | b"follow" | b"pretty" | b"stderr" | b"stdout"
        ),
        7 => matches!(key, b"timeout"),
        8 => matches!(key, b"continue" | b"previous"),
        9 => matches!(key, b"container" | b"sinceTime" | b"tailLines"),
        10 => matches!(key, b"limitBytes" | b"timestamps"),
        12 => matches!(key, b"fieldManager" | b"sinceSeconds"),
        13 => matches!(key, b"fieldSelector" | b"includeObject" | b"labelSelector"),
        14 => matches!(key, b"timeoutSeconds"),
        15 => matches!(key, b"fieldValidation" | b"resourceVersion"),
        16 => matches!(key, b"orphanDependents"),
        17 => matches!(key, b"propagationPolicy" | b"sendInitialEvents"),
        18 => matches!(key, b"gracePeriodSeconds"),
        19 => matches!(key, b"allowWatchBookmarks"),
        20 => matches!(key, b"resourceVersionMatch"),
        28 => matches!(key, b"insecureSkipTLSVerifyBackend"),
        48 => matches!(key, b"ignoreStoreReadErrorWithClusterBreakingPotential"),
        _ => false,
    }
}

fn borrowed(json: &str) -> Redacted<'_> {
    Redacted {
        json: Cow::Borrowed(json),
    }
}

/// What the request was about: the object reference, or, when there is none, the request path.
fn context_of(event: &Event<'_>) -> Context {
    match &event.object_ref {
        Some(o) => context_for(&o.resource, &o.subresource),
        None => {
            let path = event.request_uri.split('?').next().unwrap_or("");
            // The last three segments, last first.
            let mut last = [""; 3];
            for (slot, segment) in last
                .iter_mut()
                .zip(path.rsplit('/').filter(|s| !s.is_empty()))
            {
                *slot = segment;
            }
            // The resource is the segment before the name or the last one; check both positions from the end.
            match last {
                [sub, _name, resource] if context_for(resource, sub) != Context::Other => {
                    context_for(resource, sub)
                }
                [_name, resource, _] if context_for(resource, "") != Context::Other => {
                    context_for(resource, "")
                }
                [resource, _, _] => context_for(resource, ""),
            }
        }
    }
}

fn context_for(resource: &str, subresource: &str) -> Context {
    match (resource, subresource) {
        ("secrets", _) => Context::Secrets,
        ("serviceaccounts", "token") | ("tokenrequests", _) => Context::TokenRequest,
        ("tokenreviews", _) => Context::TokenReview,
        ("configmaps", _) => Context::ConfigMaps,
        _ => Context::Other,
    }
}

/// What the request and response bodies can hold. kube-apiserver logs the request body of a `create` or
/// `update`, and every response body, re-encoded from the typed object it decoded (unknown fields dropped),
/// so a body about a built-in resource holds what that kind has; a patch's request body is the client's bytes
/// as sent, and custom or unknown resources can hold anything.
fn reach_of(event: &Event<'_>) -> (Holds, Holds) {
    let Some(o) = &event.object_ref else {
        return (Holds::Anything, Holds::Anything);
    };
    let typed = builtin_holds(&o.api_group, &o.resource, &o.subresource);
    let request = if event.verb == "patch" {
        Holds::Anything
    } else {
        typed
    };
    (request, typed)
}

fn builtin_holds(group: &str, resource: &str, subresource: &str) -> Holds {
    const NOT_THE_OBJECT: &[&str] = &[
        "binding",
        "eviction",
        "scale",
        "rollback",
        "log",
        "exec",
        "attach",
        "portforward",
        "proxy",
    ];
    let typed = match group {
        "" => match resource {
            "pods" | "podtemplates" | "replicationcontrollers" => true,
            "configmaps" => return Holds::ConfigMaps,
            "bindings"
            | "componentstatuses"
            | "endpoints"
            | "events"
            | "limitranges"
            | "namespaces"
            | "nodes"
            | "persistentvolumeclaims"
            | "persistentvolumes"
            | "resourcequotas"
            | "serviceaccounts"
            | "services" => false,
            _ => return Holds::Anything,
        },
        "apps" | "extensions" => match resource {
            "deployments"
            | "replicasets"
            | "statefulsets"
            | "daemonsets"
            | "controllerrevisions" => true,
            "networkpolicies" | "ingresses" | "podsecuritypolicies" => false,
            _ => return Holds::Anything,
        },
        "batch" => match resource {
            "jobs" | "cronjobs" => true,
            _ => return Holds::Anything,
        },
        "admissionregistration.k8s.io"
        | "apiextensions.k8s.io"
        | "apiregistration.k8s.io"
        | "authentication.k8s.io"
        | "authorization.k8s.io"
        | "autoscaling"
        | "certificates.k8s.io"
        | "coordination.k8s.io"
        | "discovery.k8s.io"
        | "events.k8s.io"
        | "flowcontrol.apiserver.k8s.io"
        | "internal.apiserver.k8s.io"
        | "networking.k8s.io"
        | "node.k8s.io"
        | "policy"
        | "rbac.authorization.k8s.io"
        | "resource.k8s.io"
        | "scheduling.k8s.io"
        | "storage.k8s.io"
        | "storagemigration.k8s.io" => false,
        _ => return Holds::Anything,
    };
    if typed && !NOT_THE_OBJECT.contains(&subresource) {
        Holds::PodSpecs
    } else {
        Holds::Nothing
    }
}

/// What a typed body's top-level kind says it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypedKind {
    /// A pod-bearing object: env arrays.
    PodSpecs,
    /// A list of them.
    PodSpecsList,
    /// A ConfigMap or a list of them.
    ConfigMap,
}

/// The kind of a typed body kube-apiserver wrote, read from its first member (Go writes `kind` first), if
/// it is one whose fields are known to hold no more than env arrays or ConfigMap data.
fn typed_kind(text: &str) -> Option<TypedKind> {
    let mut scan = Scan::at(text, 0);
    scan.ws();
    if !scan.eat(b'{') {
        return None;
    }
    scan.ws();
    let key = scan.string()?;
    if scan.slice(&key) != b"kind" {
        return None;
    }
    scan.ws();
    if !scan.eat(b':') {
        return None;
    }
    scan.ws();
    let kind = scan.string()?;
    let kind = scan.slice(&kind);
    let (kind, list) = match kind.strip_suffix(b"List") {
        Some(item) => (item, true),
        None => (kind, false),
    };
    match kind {
        b"Pod"
        | b"PodTemplate"
        | b"ReplicationController"
        | b"Deployment"
        | b"ReplicaSet"
        | b"StatefulSet"
        | b"DaemonSet"
        | b"ControllerRevision"
        | b"Job"
        | b"CronJob" => Some(if list {
            TypedKind::PodSpecsList
        } else {
            TypedKind::PodSpecs
        }),
        b"ConfigMap" => Some(TypedKind::ConfigMap),
        _ => None,
    }
}

/// Whether the text may spell a letter, digit or punctuation with a `\u` escape (which the substring checks
/// would not see). kube-apiserver only writes `\u003c`, `\u003e`, `\u0026` and control characters that way.
fn has_letter_escape(text: &str) -> bool {
    if !text.contains("\\u") {
        return false;
    }
    text.match_indices("\\u").any(|(i, _)| {
        match text
            .get(i + 2..i + 6)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        {
            Some(c) => (0x20..0x80).contains(&c) && !matches!(c, 0x3c | 0x3e | 0x26),
            None => true,
        }
    })
}

/// Calls `f` with the position of each `needle` (ASCII) in `hay`, in order, until it returns true; whether
/// it did. `str::contains` (vectorised) picks the blocks that have the needle; in those, its byte at
/// `probe` (a rare one) is searched eight bytes at a time.
fn any_occurrence(hay: &str, needle: &str, probe: usize, mut f: impl FnMut(usize) -> bool) -> bool {
    const BLOCK: usize = 512;
    let (b, n) = (hay.as_bytes(), needle.as_bytes());
    let mut start = 0;
    while start < b.len() {
        let end = hay.ceil_char_boundary((start + BLOCK + n.len() - 1).min(b.len()));
        if hay[start..end].contains(needle) {
            // The occurrences that start in this block; the next block has the others.
            let limit = (start + BLOCK).min(b.len());
            let mut from = start + probe;
            while let Some(q) = find_byte(&b[..end], from, n[probe]) {
                let at = q - probe;
                if at >= limit {
                    break;
                }
                if b[at..].starts_with(n) && f(at) {
                    return true;
                }
                from = q + 1;
            }
        }
        start = hay.ceil_char_boundary(start + BLOCK);
    }
    false
}

/// The `"value"` key at `key` (its value at `value`) in kube-apiserver's shape of a literal env entry: the
/// entry's name (`Some(Some(name))`, raw) if it is `{"name":"N","value":V}`, `Some(None)` if it is a
/// Toleration's (`"operator":"X","value":V`), `None` if it is neither.
fn literal_env_entry(b: &[u8], key: usize, value: usize) -> Option<Option<&[u8]>> {
    // Backwards: `,` then a string (no escapes: a name or an operator), then its key.
    let comma = key.checked_sub(1)?;
    if b[comma] != b',' || b.get(comma.checked_sub(1)?) != Some(&b'"') {
        return None;
    }
    let close = comma - 1;
    let open = b[..close].iter().rposition(|&c| c == b'"')?;
    if open > 0 && b[open - 1] == b'\\' {
        return None;
    }
    let before = &b[..open];
    if before.ends_with(b"\"operator\":") {
        return Some(None);
    }
    if !before.ends_with(b"{\"name\":") {
        return None;
    }
    // Forwards: the value, then the end of the entry (a key after the value would be read by serde_json
    // too, and may be a second `name`).
    let mut scan = Scan { b, i: value };
    if scan.peek()? == b'"' {
        scan.string()?;
    } else {
        scan.skip_value()?;
    }
    (scan.peek() == Some(b'}')).then_some(Some(&b[open + 1..close]))
}

/// The first `needle` (ASCII) at or after `from` (a char boundary). `str::contains` is vectorised and
/// `str::find` is not, so this runs `contains` over blocks and narrows a block that has it down by halves.
fn find_from(hay: &str, needle: &str, from: usize) -> Option<usize> {
    const BLOCK: usize = 512;
    let overlap = needle.len() - 1;
    let mut start = from;
    while start < hay.len() {
        let end = hay.ceil_char_boundary((start + BLOCK + overlap).min(hay.len()));
        if hay[start..end].contains(needle) {
            return locate(hay, needle, start, end);
        }
        start = hay.ceil_char_boundary(start + BLOCK);
    }
    None
}

/// Where `needle` first is in `hay[start..end]`, which has it.
fn locate(hay: &str, needle: &str, mut start: usize, mut end: usize) -> Option<usize> {
    let overlap = needle.len() - 1;
    while end - start > 64 {
        let mid = hay.floor_char_boundary(start + (end - start) / 2);
        let left_end = hay.ceil_char_boundary((mid + overlap).min(end));
        // A match starting before `mid` ends before `left_end`.
        if hay[start..left_end].contains(needle) {
            end = left_end;
        } else {
            start = mid;
        }
    }
    let (b, n) = (hay.as_bytes(), needle.as_bytes());
    (start..=end.checked_sub(n.len())?).find(|&i| b[i] == n[0] && b[i..i + n.len()] == *n)
}

/// A minimal reader of raw JSON, for the fast path: enough to walk to names and skip values. Every method
/// returns `None` on text it cannot read, which callers take as "may hold a secret".
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// A string's content (without quotes) in the scanned text.
struct Str {
    start: usize,
    end: usize,
    escaped: bool,
}

impl<'a> Scan<'a> {
    fn at(s: &'a str, i: usize) -> Self {
        Scan { b: s.as_bytes(), i }
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn slice(&self, s: &Str) -> &'a [u8] {
        &self.b[s.start..s.end]
    }

    /// Moves past `literal` if the text continues with it.
    fn skip_literal(&mut self, literal: &[u8]) -> bool {
        let hit = self
            .b
            .get(self.i..self.i + literal.len())
            .is_some_and(|b| b.iter().zip(literal).all(|(x, y)| x == y));
        if hit {
            self.i += literal.len();
        }
        hit
    }

    /// At an opening quote: the string, and past its closing quote.
    fn string(&mut self) -> Option<Str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = quote_or_backslash(self.b, self.i)?;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Some(Str {
                    start,
                    end: self.i - 1,
                    escaped,
                });
            }
            escaped = true;
            self.i += 2;
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace() {
                        break;
                    }
                    self.i += 1;
                }
            }
        }
        Some(())
    }
}

/// A word with a high bit set in each byte of `word` that is zero; the lowest is exact (a borrow only
/// flags higher bytes).
fn zero_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The first `byte` in `b` at or after `from`, eight bytes at a time.
fn find_byte(b: &[u8], from: usize, byte: u8) -> Option<usize> {
    let pattern = u64::from_ne_bytes([byte; 8]);
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?);
        let found = zero_bytes(word ^ pattern);
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| c == byte).map(|p| i + p)
}

/// The first `"` or `\\` in `b` at or after `from`, eight bytes at a time (the strings of bodies are many
/// and mostly short, too short for `memchr`'s setup to pay).
fn quote_or_backslash(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?);
        let found = zero_bytes(word ^ u64::from_ne_bytes([b'"'; 8]))
            | zero_bytes(word ^ u64::from_ne_bytes([b'\\'; 8]));
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| i + p)
}

/// Secret-like name patterns, normalised (see the module docs).
#[derive(Debug)]
struct KeyPatterns {
    patterns: Vec<KeyPattern>,
    /// By bigram of byte classes (`anchor_index`): in the low half, the patterns (bit `i`: pattern `i`, bit
    /// 31: patterns 31 and later) whose first anchor, their rarest bigram, it is; in the high half, those whose
    /// second anchor, their next rarest, it is. A name that matches a pattern has both its anchors, so a name
    /// is searched only for the patterns whose two anchors it has, and most names for none.
    anchors: Box<[u64; 4096]>,
    /// Patterns of one character (no bigram): searched in every name.
    singles: u32,
}

#[derive(Debug)]
struct KeyPattern {
    text: Box<[u8]>,
    /// Must be whole segments of the name (short patterns).
    whole: bool,
}

/// The class of no byte: the "previous class" before a name's first kept byte (its row of anchors is empty).
const NO_CLASS: usize = 63;

/// Where the anchors of bigram (`a`, `b`) are (classes below 64; masked, so indexing needs no bounds check).
fn anchor_index(a: usize, b: usize) -> usize {
    ((a << 6) | b) & 4095
}

/// The class of the punctuation a normalised name drops.
const DROPPED: u8 = u8::MAX;
/// `CLASS_OF[byte]`: its class (`a`-`z` either case: 0-25, `0`-`9`: 26-35, non-ASCII: 36), or `DROPPED`.
const CLASS_OF: [u8; 256] = {
    let mut table = [DROPPED; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'a'..=b'z' => c as u8 - b'a',
            b'A'..=b'Z' => c as u8 - b'A',
            b'0'..=b'9' => 26 + (c as u8 - b'0'),
            0x80.. => 36,
            _ => DROPPED,
        };
        c += 1;
    }
    table
};

/// How common a byte class is in names (rough English letter frequencies, per mille): a pattern's anchor
/// is its bigram with the rarest letters.
fn commonness(class: u8) -> u32 {
    const LETTERS: [u32; 26] = [
        82, 15, 28, 43, 127, 22, 20, 61, 70, 2, 8, 40, 24, 67, 75, 19, 1, 60, 63, 91, 28, 10, 24,
        2, 20, 1,
    ];
    LETTERS.get(usize::from(class)).copied().unwrap_or(30)
}

/// The bit of pattern `i` in the masks of `KeyPatterns::anchors`.
fn pattern_bit(i: usize) -> u32 {
    1 << i.min(31)
}

impl KeyPatterns {
    fn new(extra: &[String]) -> KeyPatterns {
        let mut patterns: Vec<KeyPattern> = Vec::new();
        let mut anchors = Box::new([0u64; 4096]);
        let mut singles = 0;
        let all = DEFAULT_KEY_PATTERNS
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str));
        for p in all {
            let text: Vec<u8> = p
                .bytes()
                .filter(|&c| is_kept(c))
                .map(|c| c.to_ascii_lowercase())
                .collect();
            if text.is_empty() || patterns.iter().any(|q| *q.text == *text) {
                continue;
            }
            let bit = u64::from(pattern_bit(patterns.len()));
            let classes: Vec<u8> = text.iter().map(|&c| CLASS_OF[usize::from(c)]).collect();
            let mut bigrams: Vec<(u32, usize)> = classes
                .windows(2)
                .map(|w| {
                    let (a, b) = (usize::from(w[0]), usize::from(w[1]));
                    (commonness(w[0]) * commonness(w[1]), anchor_index(a, b))
                })
                .collect();
            bigrams.sort_unstable();
            match bigrams.as_slice() {
                [] => singles |= bit as u32,
                [(_, only)] => anchors[*only] |= bit | bit << 32,
                [(_, first), (_, second), ..] => {
                    anchors[*first] |= bit;
                    anchors[*second] |= bit << 32;
                }
            }
            patterns.push(KeyPattern {
                whole: text.len() < WHOLE_SEGMENT_BELOW,
                text: text.into(),
            });
        }
        KeyPatterns {
            patterns,
            anchors,
            singles,
        }
    }

    /// Whether `name` is secret-like.
    fn matches(&self, name: &[u8]) -> bool {
        let candidates = self.candidates(name);
        if candidates == 0 {
            return false;
        }
        if name.len() < SHORT_NAME {
            let mut text = [0u8; SHORT_NAME];
            let mut starts = Starts::Bits(0);
            self.matches_in(name, candidates, &mut text, &mut starts)
        } else {
            let mut text = vec![0u8; name.len()];
            let mut starts = Starts::Flags(vec![false; name.len() + 1]);
            self.matches_in(name, candidates, &mut text, &mut starts)
        }
    }

    /// The patterns (`pattern_bit`s) whose two anchors the normalised `name` has.
    fn candidates(&self, name: &[u8]) -> u32 {
        let mut found = 0u64;
        let mut prev = NO_CLASS;
        for &c in name {
            let class = usize::from(CLASS_OF[usize::from(c)]);
            if class < 64 {
                found |= self.anchors[anchor_index(prev, class)];
                prev = class;
            }
        }
        (found as u32 & (found >> 32) as u32) | self.singles
    }

    /// `text` has room for `name.len()`, `starts` for one more.
    fn matches_in(
        &self,
        name: &[u8],
        candidates: u32,
        text: &mut [u8],
        starts: &mut Starts,
    ) -> bool {
        let n = normalise(name, text, starts);
        let text = &text[..n];
        self.patterns.iter().enumerate().any(|(i, p)| {
            let len = p.text.len();
            candidates & pattern_bit(i) != 0
                && len <= n
                && (0..=n - len).any(|s| {
                    text[s] == p.text[0]
                        && (!p.whole || (starts.get(s) && starts.get(s + len)))
                        && text[s + 1..s + len] == p.text[1..]
                })
        })
    }
}

/// Names shorter than this are matched without allocating.
const SHORT_NAME: usize = 64;

/// Where the segments of a normalised name start (and its end).
#[derive(Debug)]
enum Starts {
    /// For names shorter than `SHORT_NAME`.
    Bits(u128),
    Flags(Vec<bool>),
}

impl Starts {
    fn set(&mut self, i: usize, start: bool) {
        match self {
            Starts::Bits(bits) => *bits |= u128::from(start) << i,
            Starts::Flags(flags) => flags[i] = start,
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Starts::Bits(bits) => bits >> i & 1 == 1,
            Starts::Flags(flags) => flags[i],
        }
    }
}

/// Writes `name` lower-cased without its ASCII punctuation into `text`, and where its segments start into
/// `starts` (the end, `len`, is one); returns the length.
fn normalise(name: &[u8], text: &mut [u8], starts: &mut Starts) -> usize {
    let mut n = 0usize;
    let mut prev: Option<u8> = None;
    for (j, &c) in name.iter().enumerate() {
        if !is_kept(c) {
            prev = None;
            continue;
        }
        let start = match prev {
            None => true,
            Some(p) => {
                (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                    || (p.is_ascii_uppercase()
                        && c.is_ascii_uppercase()
                        && name.get(j + 1).is_some_and(u8::is_ascii_lowercase))
                    || (p.is_ascii_digit() != c.is_ascii_digit())
            }
        };
        starts.set(n, start);
        text[n] = c.to_ascii_lowercase();
        n += 1;
        prev = Some(c);
    }
    starts.set(n, true);
    n
}

/// The characters a normalised name keeps: ASCII letters and digits, and any non-ASCII byte.
fn is_kept(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    find_bytes(hay, needle, 0).is_some()
}

fn find_bytes(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// A JSON pointer segment unescaped (`~1` is `/`, `~0` is `~`).
fn unescape_pointer(segment: &str) -> Cow<'_, str> {
    if segment.contains('~') {
        Cow::Owned(segment.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(segment)
    }
}

// Secrets inside free text. Ranges are byte ranges of the values, sorted and disjoint; they start and end at
// ASCII characters (or the text's ends), so they are char boundaries of UTF-8 text.

fn has_file_secrets(keys: &KeyPatterns, text: &[u8]) -> bool {
    let mut ranges = Vec::new();
    file_secrets(keys, text, &mut ranges);
    !ranges.is_empty()
}

/// The secret values in a file (a ConfigMap value): assignments to secret-like names on a line
/// (`name = value`, `name: value`, YAML block scalars) or inside one (`name=value`, `"name": "value"`), URL
/// passwords and PEM private key blocks.
fn file_secrets(keys: &KeyPatterns, text: &[u8], out: &mut Vec<Range<usize>>) {
    if contains_bytes(text, b"PRIVATE KEY") {
        pem_blocks(text, out);
    }
    let lines = line_ranges(text);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].clone();
        let (separator, block) = line_assignment(keys, text, &lines, i, out);
        inline_assignments(keys, text, line.clone(), separator, out);
        url_passwords(text, line, out);
        i += 1 + block;
    }
    tidy(out);
}

fn line_ranges(text: &[u8]) -> Vec<Range<usize>> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &c) in text.iter().enumerate() {
        if c == b'\n' {
            lines.push(start..i);
            start = i + 1;
        }
    }
    lines.push(start..text.len());
    lines
}

fn indent(text: &[u8], line: &Range<usize>) -> usize {
    text[line.clone()]
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count()
}

fn is_blank(text: &[u8], line: &Range<usize>) -> bool {
    text[line.clone()].iter().all(u8::is_ascii_whitespace)
}

/// `name = value` / `name: value` at the start of line `i` (after indentation, `- ` and `export `): the
/// value, to the end of the line (a YAML block scalar: its lines). Returns the separator's position, if the
/// line has a secret-like name, and the number of further lines the value took.
fn line_assignment(
    keys: &KeyPatterns,
    text: &[u8],
    lines: &[Range<usize>],
    i: usize,
    out: &mut Vec<Range<usize>>,
) -> (Option<usize>, usize) {
    let line = lines[i].clone();
    let mut p = line.start + indent(text, &line);
    for prefix in [&b"- "[..], b"export "] {
        if text[p..line.end].starts_with(prefix) {
            p += prefix.len();
            while p < line.end && text[p] == b' ' {
                p += 1;
            }
        }
    }
    let Some(sep) = (p..line.end).find(|&k| text[k] == b'=' || text[k] == b':') else {
        return (None, 0);
    };
    let name = unquote(trim(&text[p..sep]));
    if name.is_empty() || name.iter().any(u8::is_ascii_whitespace) || !keys.matches(name) {
        return (None, 0);
    }
    let mut value = sep + 1..line.end;
    while value.start < value.end && matches!(text[value.start], b' ' | b'\t') {
        value.start += 1;
    }
    while value.start < value.end && text[value.end - 1].is_ascii_whitespace() {
        value.end -= 1;
    }
    if value.start < value.end && matches!(text[value.end - 1], b',' | b';') {
        value.end -= 1;
    }
    let v = &text[value.clone()];
    if !v.is_empty() && v.len() <= 3 && matches!(v[0], b'|' | b'>') {
        // A YAML block scalar: the following lines indented deeper than the key.
        let key_indent = indent(text, &line);
        let (mut first, mut last) = (None, None);
        let mut k = i + 1;
        while k < lines.len() {
            let l = &lines[k];
            if !is_blank(text, l) {
                if indent(text, l) <= key_indent {
                    break;
                }
                first.get_or_insert(l.start + indent(text, l));
                last = Some(l.start + trim_end_len(&text[l.clone()]));
            }
            k += 1;
        }
        if let (Some(f), Some(l)) = (first, last)
            && !is_marker_bytes(&text[f..l])
        {
            out.push(f..l);
        }
        return (Some(sep), k - i - 1);
    }
    let value = unquote_range(text, value);
    let v = &text[value.clone()];
    if !v.is_empty()
        && !matches!(v, b"{" | b"[" | b"{}" | b"[]" | b"null" | b"~")
        && !is_marker_bytes(v)
    {
        out.push(value);
    }
    (Some(sep), 0)
}

/// `name=value` (bare name characters before the `=`; the value to a space, `&`, `;`, `,` or quote, or the
/// whole quoted value) and `"name": "value"` anywhere in `range`, except at `skip` (the line's own separator).
fn inline_assignments(
    keys: &KeyPatterns,
    text: &[u8],
    range: Range<usize>,
    skip: Option<usize>,
    out: &mut Vec<Range<usize>>,
) {
    for k in range.clone() {
        if Some(k) == skip {
            continue;
        }
        match text[k] {
            b'=' => {
                let mut s = k;
                while s > range.start && is_name_char(text[s - 1]) {
                    s -= 1;
                }
                let name = trim_dashes(&text[s..k]);
                if !name.is_empty() && keys.matches(name) {
                    push_value(text, k + 1, range.end, out);
                }
            }
            b':' => {
                // `"name": value`: the name is quoted.
                let mut q = k;
                while q > range.start && text[q - 1] == b' ' {
                    q -= 1;
                }
                if q <= range.start || text[q - 1] != b'"' {
                    continue;
                }
                let close = q - 1;
                let Some(open) = text[range.start..close].iter().rposition(|&c| c == b'"') else {
                    continue;
                };
                let name = &text[range.start + open + 1..close];
                if !name.is_empty() && keys.matches(name) {
                    let mut v = k + 1;
                    while v < range.end && text[v] == b' ' {
                        v += 1;
                    }
                    push_value(text, v, range.end, out);
                }
            }
            _ => {}
        }
    }
}

/// The value starting at `v`: quoted (to its closing quote, within `end`), or bare to a delimiter.
fn push_value(text: &[u8], v: usize, end: usize, out: &mut Vec<Range<usize>>) {
    if v >= end {
        return;
    }
    let range = if matches!(text[v], b'"' | b'\'') {
        let quote = text[v];
        match text[v + 1..end].iter().position(|&c| c == quote) {
            Some(len) => v + 1..v + 1 + len,
            None => v + 1..end,
        }
    } else {
        let len = text[v..end]
            .iter()
            .position(|&c| {
                c.is_ascii_whitespace() || matches!(c, b'&' | b';' | b',' | b'"' | b'\'')
            })
            .unwrap_or(end - v);
        v..v + len
    };
    if !range.is_empty() && !is_marker_bytes(&text[range.clone()]) {
        out.push(range);
    }
}

/// The password of every `scheme://user:password@host` in `range`.
fn url_passwords(text: &[u8], range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut from = range.start;
    while let Some(at) = find_bytes(&text[..range.end], b"://", from) {
        let start = at + 3;
        let end = text[start..range.end]
            .iter()
            .position(|&c| {
                matches!(c, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`')
                    || c.is_ascii_whitespace()
            })
            .map_or(range.end, |p| start + p);
        from = start;
        let Some(at_sign) = text[start..end].iter().rposition(|&c| c == b'@') else {
            continue;
        };
        let user_info = start..start + at_sign;
        let Some(colon) = text[user_info.clone()].iter().position(|&c| c == b':') else {
            continue;
        };
        let password = user_info.start + colon + 1..user_info.end;
        if !password.is_empty() && !is_marker_bytes(&text[password.clone()]) {
            out.push(password);
        }
    }
}

/// Every PEM private key block, from its `-----BEGIN` to the end of its `-----END …-----`.
fn pem_blocks(text: &[u8], out: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(begin) = find_bytes(text, b"-----BEGIN ", from) {
        let Some(label_end) = find_bytes(text, b"-----", begin + 11) else {
            return;
        };
        from = label_end + 5;
        if !contains_bytes(&text[begin + 11..label_end], b"PRIVATE KEY") {
            continue;
        }
        let end = find_bytes(text, b"-----END ", from)
            .and_then(|e| find_bytes(text, b"-----", e + 9))
            .map_or(text.len(), |e| e + 5);
        out.push(begin..end);
        from = end;
    }
}

/// The secret values in an exec command's arguments (`found[i]`: in `args[i]`), see the module docs.
fn command_secrets(keys: &KeyPatterns, args: &[&[u8]], found: &mut [Vec<Range<usize>>]) {
    // Within each argument: `name=value`, `--name=value`, `"name": value`, URL passwords.
    for (text, out) in args.iter().zip(found.iter_mut()) {
        inline_assignments(keys, text, 0..text.len(), None, out);
        url_passwords(text, 0..text.len(), out);
    }
    // Across words (an argument may be a whole `sh -c` script): flags and their values.
    let words: Vec<(usize, Range<usize>)> = args
        .iter()
        .enumerate()
        .flat_map(|(arg, text)| word_ranges(text).into_iter().map(move |r| (arg, r)))
        .collect();
    let word = |i: usize| -> &[u8] {
        let (arg, range) = &words[i];
        &args[*arg][range.clone()]
    };
    // Word `i` as a value: quotes and a trailing `;` off, and, if `after_colon`, what follows its first `:`.
    let value_of = |i: usize, after_colon: bool| -> Option<(usize, Range<usize>)> {
        let (arg, range) = words.get(i)?;
        let text = args[*arg];
        let mut r = range.clone();
        while r.start < r.end && matches!(text[r.end - 1], b';' | b'"' | b'\'') {
            r.end -= 1;
        }
        while r.start < r.end && matches!(text[r.start], b'"' | b'\'') {
            r.start += 1;
        }
        if after_colon {
            // `user:password`, not a URL (read by `url_passwords`).
            if contains_bytes(&text[r.clone()], b"://") {
                return None;
            }
            r.start += text[r.clone()].iter().position(|&c| c == b':')? + 1;
        }
        Some((*arg, r))
    };
    let takes_p = (0..words.len()).any(|i| {
        let program = unquote_loose(word(i));
        let program = program.rsplit(|&c| c == b'/').next().unwrap_or_default();
        TAKES_P_PASSWORD.iter().any(|p| program == p.as_bytes())
    });
    let mut values: Vec<(usize, Range<usize>)> = Vec::new();
    for i in 0..words.len() {
        let (arg, range) = (words[i].0, words[i].1.clone());
        let this = word(i);
        if takes_p && this.len() > 2 && this.starts_with(b"-p") {
            // `-pVALUE` of mysql and friends.
            values.push((arg, range.start + 2..range.end));
        } else if this.len() > 1 && this[0] == b'-' && !this.contains(&b'=') {
            let flag = trim_dashes(this);
            let colon = this.iter().position(|&c| c == b':');
            if flag == b"u" || flag == b"user" {
                // curl's `-u user:password`.
                values.extend(value_of(i + 1, true));
            } else if this[1] != b'-'
                && flag.first() == Some(&b'u')
                && !contains_bytes(flag, b"://")
                && let Some(colon) = colon
            {
                // `-uuser:password`.
                values.push((arg, range.start + colon + 1..range.end));
            } else if !flag.is_empty()
                && keys.matches(flag)
                && !names_a_place(flag)
                && i + 1 < words.len()
                && !word(i + 1).starts_with(b"-")
            {
                // `--password VALUE` (not `--password-stdin`, `--token-file`).
                values.extend(value_of(i + 1, false));
            }
        } else if this.starts_with(b"--user=") && !contains_bytes(this, b"://") {
            if let Some(colon) = this.iter().position(|&c| c == b':') {
                values.push((arg, range.start + colon + 1..range.end));
            }
        } else {
            let bare = unquote_loose(this);
            let after_authorization = i > 0
                && unquote_loose(word(i - 1))
                    .to_ascii_lowercase()
                    .ends_with(b"authorization:");
            if bare.eq_ignore_ascii_case(b"bearer")
                || (bare.eq_ignore_ascii_case(b"basic") && after_authorization)
                || (bare.len() > 1 && bare.ends_with(b":") && keys.matches(&bare[..bare.len() - 1]))
            {
                // `Bearer TOKEN`, `Authorization: Basic CREDENTIALS`, a header `X-Api-Key: VALUE`.
                values.extend(value_of(i + 1, false));
            }
        }
    }
    for (arg, r) in values {
        if !r.is_empty() && !is_marker_bytes(&args[arg][r.clone()]) {
            found[arg].push(r);
        }
    }
    for f in found.iter_mut() {
        tidy(f);
    }
}

/// Flags whose value is where a secret is, not the secret (`--password-file`, `--token-path`).
fn names_a_place(flag: &[u8]) -> bool {
    let lower = flag.to_ascii_lowercase();
    ["stdin", "file", "path", "dir", "prompt", "env"]
        .iter()
        .any(|s| lower.ends_with(s.as_bytes()))
}

fn word_ranges(text: &[u8]) -> Vec<Range<usize>> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, &c) in text.iter().enumerate() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                words.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(s..text.len());
    }
    words
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

fn trim_end_len(s: &[u8]) -> usize {
    s.trim_ascii_end().len()
}

fn trim_dashes(s: &[u8]) -> &[u8] {
    let start = s.iter().take_while(|&&c| c == b'-').count();
    &s[start..]
}

/// One layer of matching quotes removed.
fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [q @ (b'"' | b'\''), inner @ .., last] if q == last => inner,
        _ => s,
    }
}

/// Quotes removed from either end, matching or not (a word of a shell command split at spaces).
fn unquote_loose(s: &[u8]) -> &[u8] {
    let start = s.iter().take_while(|&&c| c == b'"' || c == b'\'').count();
    let s = &s[start..];
    let end = s.len()
        - s.iter()
            .rev()
            .take_while(|&&c| c == b'"' || c == b'\'')
            .count();
    &s[..end]
}

fn unquote_range(text: &[u8], r: Range<usize>) -> Range<usize> {
    let s = &text[r.clone()];
    if s.len() >= 2 && matches!(s[0], b'"' | b'\'') && s[s.len() - 1] == s[0] {
        r.start + 1..r.end - 1
    } else {
        r
    }
}

/// Sorts ranges and merges those that overlap (a value found by two rules is one value).
fn tidy(ranges: &mut Vec<Range<usize>>) {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if r.start < last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    *ranges = merged;
}

/// `%XX` decoded (and `+` as space, as query strings do); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> Vec<u8> {
    percent_decode_mapped(s).0
}

/// `percent_decode`, with where each decoded byte starts in `s` (and `s.len()` after the last).
fn percent_decode_mapped(s: &str) -> (Vec<u8>, Vec<usize>) {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut offsets = Vec::with_capacity(bytes.len() + 1);
    let mut i = 0;
    while i < bytes.len() {
        offsets.push(i);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    offsets.push(bytes.len());
    (out, offsets)
}

/// A digest of redacted event text that every installation computes alike: the SHA-256 of the text with
/// each marker's keyed fingerprint left out (its length stays), first 8 bytes. Two collectors that stored the
/// same event under their own redaction keys agree on it; two different requests do not (their timestamps
/// alone, set by kube-apiserver to the microsecond, differ). The shipping id is made of it.
pub fn keyless_digest(text: &str) -> u64 {
    use sha2::Digest as _;
    let bytes = text.as_bytes();
    let mut h = Sha256::new();
    let mut from = 0;
    let mut at = 0;
    while let Some(i) = find_bytes(bytes, MARKER_PREFIX.as_bytes(), at) {
        // `kubetrail-redacted:len=<digits>:hmac=` then 22 fingerprint characters.
        let digits = bytes[i + MARKER_PREFIX.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let hmac = i + MARKER_PREFIX.len() + digits;
        let end = hmac + 6 + 22;
        if digits > 0 && end <= bytes.len() && is_marker_bytes(&bytes[i..end]) {
            h.update(&bytes[from..hmac + 6]);
            from = end;
            at = end;
        } else {
            at = i + 1;
        }
    }
    h.update(&bytes[from..]);
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Exactly the shape `marker` makes: `kubetrail-redacted:len=<digits>:hmac=<22 base64url chars>`.
fn is_marker(s: &str) -> bool {
    is_marker_bytes(s.as_bytes())
}

fn is_marker_bytes(s: &[u8]) -> bool {
    let Some(rest) = s.strip_prefix(MARKER_PREFIX.as_bytes()) else {
        return false;
    };
    let Some(split) = find_bytes(rest, b":hmac=", 0) else {
        return false;
    };
    let (len, fingerprint) = (&rest[..split], &rest[split + 6..]);
    !len.is_empty()
        && len.iter().all(u8::is_ascii_digit)
        && fingerprint.len() == 22
        && fingerprint
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%41b"), b"aAb");
        assert_eq!(percent_decode("a%4"), b"a%4");
        assert_eq!(percent_decode("%zz"), b"%zz");
        assert_eq!(percent_decode("a+b"), b"a b");
        assert_eq!(percent_decode("%41"), b"A");
        let (decoded, offsets) = percent_decode_mapped("-p%53x+y");
        assert_eq!(decoded, b"-pSx y");
        assert_eq!(offsets, [0, 1, 2, 5, 6, 7, 8]);
    }

    #[test]
    fn keyless_digests_agree_across_keys_and_tell_events_apart() {
        let event = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets","verb":"create","user":{"username":"u"},"objectRef":{"resource":"secrets","namespace":"prod","name":"db","apiVersion":"v1"},"requestReceivedTimestamp":"2026-01-01T00:00:00.000001Z","requestObject":{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}}"#;
        let redact = |key: u8, text: &str| {
            let r = Redactor::new(RedactionKey::from_bytes([key; 32]));
            let e = Event::parse(text).unwrap();
            r.redact(&e, text).0.as_str().to_string()
        };
        let (a, b) = (redact(1, event), redact(2, event));
        assert_ne!(a, b, "the fingerprints differ by key");
        assert_eq!(keyless_digest(&a), keyless_digest(&b));
        // Another request with the same auditID: a microsecond later, or another value.
        let later = event.replace(".000001Z", ".000002Z");
        assert_ne!(keyless_digest(&redact(1, &later)), keyless_digest(&a));
        let other = event.replace("aHVudGVyMg==", "aHVudGVyMw==");
        assert_eq!(
            keyless_digest(&redact(1, &other)),
            keyless_digest(&a),
            "the same length of secret: only the fingerprint told them apart"
        );
        let longer = event.replace("aHVudGVyMg==", "bG9uZ2VyLXNlY3JldA==");
        assert_ne!(keyless_digest(&redact(1, &longer)), keyless_digest(&a));
        // Markers' fingerprints are left out; text that only looks like a marker is hashed whole.
        assert_eq!(
            keyless_digest("x kubetrail-redacted:len=1:hmac=AAAAAAAAAAAAAAAAAAAAAA y"),
            keyless_digest("x kubetrail-redacted:len=1:hmac=BBBBBBBBBBBBBBBBBBBBBB y"),
        );
        assert_ne!(
            keyless_digest("kubetrail-redacted:len=1:hmac=AAAAAAAAAAAAAAAAAAAAA!"),
            keyless_digest("kubetrail-redacted:len=1:hmac=BBBBBBBBBBBBBBBBBBBBB!"),
        );
    }

    #[test]
    fn markers_are_recognised() {
        let r = Redactor::new(RedactionKey::from_bytes([7; 32]));
        let m = r.marker(b"hunter2");
        assert!(is_marker(&m), "{m}");
        assert!(m.starts_with("kubetrail-redacted:len=7:hmac="));
        assert!(!is_marker("kubetrail-redacted:len=7:hmac=short"));
        assert!(!is_marker(
            "kubetrail-redacted:len=:hmac=AAAAAAAAAAAAAAAAAAAAAA"
        ));
    }

    #[test]
    fn debug_never_prints_the_key() {
        let key = RedactionKey::from_bytes([0xAB; 32]);
        assert_eq!(format!("{key:?}"), "RedactionKey(..)");
        assert!(!format!("{:?}", Redactor::new(key)).contains("171"));
    }

    #[test]
    fn secret_like_names() {
        let keys = KeyPatterns::new(&[]);
        for name in [
            "DB_PASSWORD",
            "db-password",
            "dbPassword",
            "db.password",
            "PGPASSWORD",
            "MYSQL_ROOT_PASSWORD",
            "passwd",
            "GITHUB_TOKEN",
            "authToken",
            "x-api-key",
            "API_KEY",
            "apiKey",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "private_key",
            "tls.privateKey",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "BASIC_AUTH",
            "REDIS_AUTH",
            "auth",
            "DB_PASS",
            "DBPass",
            "dbPwd",
            "PWD",
            "SMTP_PW",
            "client_secret",
            "id_rsa",
            "ConnectionStrings__Default",
        ] {
            assert!(
                keys.matches(name.as_bytes()),
                "{name} should be secret-like"
            );
        }
        for name in [
            "LOG_LEVEL",
            "AUTHOR",
            "CI_COMMIT_AUTHOR",
            "authorName",
            "OAUTH_URL",
            "PASSTHROUGH",
            "BYPASS_CACHE",
            "HTTP_PORT",
            "KAFKA_BOOTSTRAP_SERVERS",
            "keyspace",
            "POD_NAME",
            "color",
            "ui.properties",
            "",
        ] {
            assert!(
                !keys.matches(name.as_bytes()),
                "{name} should not be secret-like"
            );
        }
        let long = format!("{}_PASSWORD", "A".repeat(300));
        assert!(keys.matches(long.as_bytes()));
        let extra = KeyPatterns::new(&["pin".into(), "session-id".into(), "--".into()]);
        assert!(extra.matches(b"CARD_PIN") && !extra.matches(b"PINNED"));
        assert!(extra.matches(b"userSessionId") && extra.matches(b"DB_PASSWORD"));
        assert!(!extra.matches(b"LOG_LEVEL"));
    }

    #[test]
    fn file_values() {
        let keys = KeyPatterns::new(&[]);
        let text = "color=blue\n\
                    db.password = hunter2\n\
                    url: postgres://app:s3cr3t@db:5432/app?sslmode=require\n\
                    jdbc=jdbc:mysql://db/app?user=app&password=pa55&ssl=true\n\
                    token: |\n  line-one\n  line-two\nafter: x\n\
                    \"apiKey\": \"abc123\",\n\
                    passwordPolicy:\n\
                    -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n";
        let mut out = Vec::new();
        file_secrets(&keys, text.as_bytes(), &mut out);
        let values: Vec<&str> = out.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(
            values,
            [
                "hunter2",
                "s3cr3t",
                "pa55",
                "line-one\n  line-two",
                "abc123",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
            ]
        );
    }

    #[test]
    fn command_arguments() {
        let keys = KeyPatterns::new(&[]);
        let cases: &[(&[&str], &[&str])] = &[
            (&["mysql", "-uroot", "-pS3cret", "db"], &["S3cret"]),
            (&["mkdir", "-p", "/x"], &[]),
            (&["netstat", "-plnt"], &[]),
            (&["psql", "--password=pw1", "-h", "db"], &["pw1"]),
            (&["sh", "-c", "PGPASSWORD='a b' psql -h db"], &["a b"]),
            (&["sh", "-c", "export DB_PASSWORD=xyz; run"], &["xyz"]),
            (
                &["redis-cli", "-u", "redis://default:rpw@redis:6379"],
                &["rpw"],
            ),
            (&["vault", "login", "--token", "hvs.abc"], &["hvs.abc"]),
            (&["docker", "login", "--password-stdin", "reg.io"], &[]),
            (&["curl", "-u", "bob:bobpw", "https://x"], &["bobpw"]),
            (
                &["curl", "-H", "Authorization: Bearer tok123", "https://x"],
                &["tok123"],
            ),
            (&["curl", "-H", "X-Api-Key: k-1", "https://x"], &["k-1"]),
            (&["ls", "-la", "/"], &[]),
        ];
        for (args, expected) in cases {
            let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let mut found = vec![Vec::new(); args.len()];
            command_secrets(&keys, &bytes, &mut found);
            let values: Vec<&str> = found
                .iter()
                .enumerate()
                .flat_map(|(i, rs)| rs.iter().map(move |r| &args[i][r.clone()]))
                .collect();
            assert_eq!(&values, expected, "{args:?}");
        }
    }

    #[test]
    fn quotes_and_backslashes_are_found() {
        let text = br#"abcdefghijklmnopqrstuvw"xyz\"#;
        for from in 0..text.len() {
            let expected = text[from..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .map(|p| from + p);
            assert_eq!(quote_or_backslash(text, from), expected, "from {from}");
        }
        assert_eq!(
            quote_or_backslash(b"\xff\xfe\x22\x00\x80\x80\x80\x80\x80", 0),
            Some(2)
        );
        let query = b"watch=true&resourceVersion=1&x=\xa6&&=";
        for from in 0..query.len() {
            for byte in [b'&', b'=', 0xa6, b'?'] {
                let expected = query[from..]
                    .iter()
                    .position(|&c| c == byte)
                    .map(|p| from + p);
                assert_eq!(find_byte(query, from, byte), expected, "{byte} from {from}");
            }
        }
        assert_eq!(
            quote_or_backslash(b"\x01\x00\x00\x00\x00\x00\x00\x00\\", 0),
            Some(8)
        );
    }

    #[test]
    fn find_from_finds_every_occurrence() {
        let mut text = "x".repeat(3000);
        for at in [0, 63, 64, 1020, 1023, 1024, 2047, 2990] {
            text.replace_range(at..at + 5, "\"env\"");
        }
        text.push('é');
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = find_from(&text, "\"env\"", from) {
            found.push(at);
            from = at + 1;
        }
        let expected: Vec<usize> = text.match_indices("\"env\"").map(|(i, _)| i).collect();
        assert_eq!(found, expected);
    }
}
