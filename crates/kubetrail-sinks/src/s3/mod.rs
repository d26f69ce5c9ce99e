//! An S3 client for the immutable archive: the few calls the archive needs, each SigV4-signed, with per-object
//! Object Lock (COMPLIANCE or GOVERNANCE retention, legal hold), a SHA-256 checksum on every upload (Object Lock
//! refuses uploads without an integrity header), and a HEAD after a write to check that the lock and checksum
//! came back as asked ([`S3::put_object_verified`]). Which files to upload, and when, is the pipeline's job.
//!
//! Works with AWS S3 (virtual-host addressing by default), MinIO, Ceph and moto (path-style addressing, the
//! default when an endpoint is given). Uploads carry `x-amz-checksum-sha256`, not `Content-MD5`: servers that
//! only accept `Content-MD5` with Object Lock (Ceph before its checksum support) refuse them, with their error.
//!
//! One rule is enforced here because not every server does (moto allows it, AWS refuses): a COMPLIANCE
//! retention is never shortened nor turned into GOVERNANCE ([`S3::put_retention`]).
//!
//! Credentials come from the sink's configuration or the standard AWS chain ([`CredentialsProvider`]): keys in
//! the environment, web identity (IRSA), the shared credentials file, container credentials (ECS, EKS Pod
//! Identity) and EC2 instance metadata; temporary ones are refreshed before they expire, and once more when S3
//! answers `ExpiredToken`.

mod credentials;
pub mod sigv4;

use base64::Engine as _;
use std::sync::Arc;

use bytes::Bytes;
use hyper::http::Method;
use sha2::Digest as _;

pub use credentials::{Credentials, CredentialsProvider, REFRESH_BEFORE};

use crate::http::{HttpClient, HttpConfig, Request, percent_encode};
use crate::{Error, shorten};

/// Where the bucket is and how to sign.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http://127.0.0.1:9000` (MinIO, Ceph, moto); `None` for AWS (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// The region requests are signed for (`us-east-1` for most non-AWS servers).
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`. Default: path-style when an
    /// endpoint is given, virtual-host for AWS.
    pub path_style: Option<bool>,
    /// Explicit credentials; `None` uses the standard chain ([`CredentialsProvider::from_environment`]).
    pub credentials: Option<Credentials>,
    /// Timeout and extra CA (its `auth` and `headers` must stay empty: requests are signed).
    pub http: HttpConfig,
}

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody, root included, can delete the version or shorten its retention before it ends.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can, with the bypass header.
    Governance,
}

impl LockMode {
    /// `COMPLIANCE` or `GOVERNANCE`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }

    fn parse(s: &str) -> Option<LockMode> {
        match s.trim() {
            "COMPLIANCE" => Some(LockMode::Compliance),
            "GOVERNANCE" => Some(LockMode::Governance),
            _ => None,
        }
    }
}

/// The lock of one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// Retention mode.
    pub mode: LockMode,
    /// Retained until then (whole seconds: finer parts are dropped).
    pub retain_until: jiff::Timestamp,
    /// Held regardless of retention until the hold is removed.
    pub legal_hold: bool,
}

/// A stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The version id (`None` on an unversioned bucket, which Object Lock never is).
    pub version_id: Option<String>,
    /// Base64 SHA-256 of the body, as sent in `x-amz-checksum-sha256`.
    pub checksum_sha256: String,
}

/// What HEAD says about a version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    /// The version id.
    pub version_id: Option<String>,
    /// Retention mode, if any.
    pub lock_mode: Option<LockMode>,
    /// Retention end, if any.
    pub retain_until: Option<jiff::Timestamp>,
    /// Whether a legal hold is on.
    pub legal_hold: bool,
    /// Base64 SHA-256, when the server keeps checksums.
    pub checksum_sha256: Option<String>,
    /// Size in bytes.
    pub content_length: Option<u64>,
}

/// The bucket's Object Lock configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketLock {
    /// The default retention of new versions, if the bucket has one: mode and days (or years as days).
    pub default_retention: Option<(LockMode, u32)>,
}

/// A failed S3 call.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// Not reached or no answer in time: try again.
    #[error("{0}")]
    Unavailable(String),
    /// S3 answered with an error (`AccessDenied`, `NoSuchKey`, `InvalidRequest`, ...).
    #[error("{request}: HTTP {status} {code}: {message}")]
    Service {
        /// `PUT key`.
        request: String,
        /// HTTP status.
        status: u16,
        /// S3's error code, or the status' name when the answer had no body (HEAD).
        code: String,
        /// S3's message.
        message: String,
    },
    /// Refused by this client before anything was sent (a rule the server may not enforce).
    #[error("{0}")]
    Refused(String),
    /// The object was written, but HEAD shows other lock or checksum values than asked.
    #[error("{0}")]
    Verification(String),
    /// The bucket or configuration cannot work for the archive.
    #[error("{0}")]
    Config(String),
}

impl S3Error {
    /// S3's error code, if S3 answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the same call may succeed later (transport failures, throttling, 5xx).
    pub fn is_retriable(&self) -> bool {
        match self {
            S3Error::Unavailable(_) => true,
            S3Error::Service { status, .. } => {
                crate::http::classify(*status) == crate::http::Class::Retry
            }
            _ => false,
        }
    }
}

/// A client for one bucket.
#[derive(Debug)]
pub struct S3 {
    client: HttpClient,
    /// The Host header as signed.
    host: String,
    /// `/bucket` with path-style addressing, empty with virtual-host addressing.
    prefix: String,
    bucket: String,
    region: String,
    credentials: Arc<CredentialsProvider>,
}

/// What [`S3::list`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Keys and sizes in bytes.
    pub objects: Vec<(String, u64)>,
    /// With `directories`, the prefixes one level down, each ending with `/`.
    pub prefixes: Vec<String>,
}

/// Empty body's SHA-256.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl S3 {
    /// Checks the configuration and resolves where credentials come from (the configured ones, else the
    /// standard chain); connects to nothing: temporary credentials are fetched on first use.
    pub fn new(cfg: S3Config) -> Result<S3, Error> {
        let provider = match &cfg.credentials {
            Some(c) => CredentialsProvider::fixed(c.clone()),
            None => CredentialsProvider::from_environment(&cfg.region)?,
        };
        S3::build(cfg, Arc::new(provider))
    }

    /// [`S3::new`] with credentials from `provider` (which may be shared by several clients);
    /// `cfg.credentials` must be `None`.
    pub fn with_credentials_provider(
        cfg: S3Config,
        provider: Arc<CredentialsProvider>,
    ) -> Result<S3, Error> {
        if cfg.credentials.is_some() {
            return Err(Error::Config(
                "S3: give either credentials in the configuration or a credentials provider, not both".into(),
            ));
        }
        S3::build(cfg, provider)
    }

    fn build(cfg: S3Config, provider: Arc<CredentialsProvider>) -> Result<S3, Error> {
        let b = &cfg.bucket;
        if b.len() < 3
            || b.len() > 63
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        {
            return Err(Error::Config(format!(
                "S3 bucket `{b}`: 3 to 63 lowercase letters, digits, `-` and `.`"
            )));
        }
        if !matches!(cfg.http.auth, crate::http::Auth::None) || !cfg.http.headers.is_empty() {
            return Err(Error::Config(
                "S3 requests are signed with the AWS credentials: no other auth or headers".into(),
            ));
        }
        let path_style = cfg.path_style.unwrap_or(cfg.endpoint.is_some());
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        let base = if path_style {
            endpoint.trim_end_matches('/').to_string()
        } else {
            let (scheme, rest) = endpoint
                .split_once("://")
                .ok_or_else(|| Error::Config(format!("S3 endpoint `{endpoint}` is not a URL")))?;
            format!("{scheme}://{b}.{}", rest.trim_end_matches('/'))
        };
        let client = HttpClient::new(&base, &cfg.http)?;
        if client.base_path() != "" {
            return Err(Error::Config(format!(
                "S3 endpoint `{endpoint}`: no path after the host"
            )));
        }
        Ok(S3 {
            host: client.authority().to_string(),
            client,
            prefix: if path_style {
                format!("/{b}")
            } else {
                String::new()
            },
            bucket: cfg.bucket,
            region: cfg.region,
            credentials: provider,
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks that the bucket exists and has Object Lock enabled: a clear error otherwise.
    pub async fn prepare(&self) -> Result<BucketLock, S3Error> {
        match self.object_lock_configuration().await {
            Ok(lock) => Ok(lock),
            Err(S3Error::Service { code, .. })
                if code == "ObjectLockConfigurationNotFoundError"
                    || code == "ObjectLockConfigurationNotFound" =>
            {
                Err(S3Error::Config(format!(
                    "bucket `{}` has no Object Lock: the archive needs a bucket created with Object Lock \
                     enabled (or Object Lock enabled on it), so that archived versions cannot be deleted",
                    self.bucket
                )))
            }
            Err(S3Error::Service { code, .. }) if code == "NoSuchBucket" => Err(S3Error::Config(
                format!("bucket `{}` does not exist", self.bucket),
            )),
            Err(e) => Err(e),
        }
    }

    /// `GetObjectLockConfiguration`.
    pub async fn object_lock_configuration(&self) -> Result<BucketLock, S3Error> {
        let resp = self
            .call(
                Method::GET,
                "",
                &[("object-lock", "")],
                vec![],
                Bytes::new(),
            )
            .await?;
        let body = String::from_utf8_lossy(&resp.body);
        if xml_text(&body, "ObjectLockEnabled").as_deref() != Some("Enabled") {
            return Err(S3Error::Config(format!(
                "bucket `{}` has no Object Lock enabled",
                self.bucket
            )));
        }
        let mode = xml_text(&body, "Mode").and_then(|m| LockMode::parse(&m));
        let days = xml_text(&body, "Days")
            .and_then(|d| d.parse::<u32>().ok())
            .or_else(|| {
                xml_text(&body, "Years")
                    .and_then(|y| y.parse::<u32>().ok())
                    .map(|y| y * 365)
            });
        Ok(BucketLock {
            default_retention: mode.zip(days),
        })
    }

    /// `CreateBucket`, with Object Lock enabled (which also enables versioning) when asked. For setup scripts
    /// and tests: the archive expects its bucket to exist.
    pub async fn create_bucket(&self, object_lock: bool) -> Result<(), S3Error> {
        let body = if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        };
        let headers = if object_lock {
            vec![("x-amz-bucket-object-lock-enabled", "true".to_string())]
        } else {
            vec![]
        };
        self.call(Method::PUT, "", &[], headers, body).await?;
        Ok(())
    }

    /// `PutObject` with a SHA-256 checksum and, if given, the version's lock. Returns the new version.
    pub async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        lock: Option<&Lock>,
    ) -> Result<Put, S3Error> {
        let checksum =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
        let mut headers = vec![
            ("content-type", content_type.to_string()),
            ("x-amz-sdk-checksum-algorithm", "SHA256".to_string()),
            ("x-amz-checksum-sha256", checksum.clone()),
        ];
        if let Some(lock) = lock {
            headers.push(("x-amz-object-lock-mode", lock.mode.as_str().to_string()));
            headers.push((
                "x-amz-object-lock-retain-until-date",
                iso(lock.retain_until),
            ));
            if lock.legal_hold {
                headers.push(("x-amz-object-lock-legal-hold", "ON".to_string()));
            }
        }
        let resp = self.call(Method::PUT, key, &[], headers, body).await?;
        Ok(Put {
            version_id: resp.header("x-amz-version-id").map(str::to_string),
            checksum_sha256: checksum,
        })
    }

    /// [`S3::put_object`], then HEAD of the new version: an error unless the lock, legal hold, size and
    /// checksum (when the server keeps checksums) are what was sent.
    pub async fn put_object_verified(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        lock: Option<&Lock>,
    ) -> Result<(Put, ObjectInfo), S3Error> {
        let len = body.len() as u64;
        let put = self.put_object(key, body, content_type, lock).await?;
        let info = self.head_object(key, put.version_id.as_deref()).await?;
        let mut wrong = Vec::new();
        if let Some(lock) = lock {
            if info.lock_mode != Some(lock.mode) {
                wrong.push(format!(
                    "lock mode {:?} instead of {:?}",
                    info.lock_mode, lock.mode
                ));
            }
            let want = truncate(lock.retain_until);
            if info.retain_until.map(truncate) != Some(want) {
                wrong.push(format!(
                    "retain-until {:?} instead of {want}",
                    info.retain_until
                ));
            }
            if info.legal_hold != lock.legal_hold {
                wrong.push(format!(
                    "legal hold {} instead of {}",
                    info.legal_hold, lock.legal_hold
                ));
            }
        }
        if info.content_length != Some(len) {
            wrong.push(format!("size {:?} instead of {len}", info.content_length));
        }
        if let Some(sum) = &info.checksum_sha256
            && *sum != put.checksum_sha256
        {
            wrong.push(format!("SHA-256 {sum} instead of {}", put.checksum_sha256));
        }
        if !wrong.is_empty() {
            return Err(S3Error::Verification(format!(
                "`{key}` version {:?} was stored with {}",
                put.version_id,
                wrong.join(", ")
            )));
        }
        Ok((put, info))
    }

    /// `HeadObject` (with checksum mode on) of the latest or a given version.
    pub async fn head_object(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectInfo, S3Error> {
        let query: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        let resp = self
            .call(
                Method::HEAD,
                key,
                &query,
                vec![("x-amz-checksum-mode", "ENABLED".to_string())],
                Bytes::new(),
            )
            .await?;
        Ok(ObjectInfo {
            version_id: resp.header("x-amz-version-id").map(str::to_string),
            lock_mode: resp
                .header("x-amz-object-lock-mode")
                .and_then(LockMode::parse),
            retain_until: resp
                .header("x-amz-object-lock-retain-until-date")
                .and_then(parse_time),
            legal_hold: resp.header("x-amz-object-lock-legal-hold") == Some("ON"),
            checksum_sha256: resp.header("x-amz-checksum-sha256").map(str::to_string),
            content_length: resp.header("content-length").and_then(|v| v.parse().ok()),
        })
    }

    /// `GetObject` of the latest or a given version (whole, up to 1 GiB).
    pub async fn get_object(&self, key: &str, version: Option<&str>) -> Result<Bytes, S3Error> {
        let query: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        Ok(self
            .call(Method::GET, key, &query, vec![], Bytes::new())
            .await?
            .body)
    }

    /// `ListObjectsV2` under `prefix`, every page: with `directories`, the common prefixes one `/` level down
    /// (`prefix/a/`, `prefix/b/`) instead of the keys beneath them. Keys come with their sizes.
    pub async fn list(&self, prefix: &str, directories: bool) -> Result<Listing, S3Error> {
        let mut out = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let mut query: Vec<(&str, &str)> = vec![("list-type", "2"), ("prefix", prefix)];
            if directories {
                query.push(("delimiter", "/"));
            }
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let body = self
                .call(Method::GET, "", &query, vec![], Bytes::new())
                .await?
                .body;
            let text = String::from_utf8_lossy(&body);
            for block in xml_blocks(&text, "Contents") {
                if let Some(key) = xml_text(block, "Key") {
                    let size = xml_text(block, "Size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    out.objects.push((key, size));
                }
            }
            for block in xml_blocks(&text, "CommonPrefixes") {
                out.prefixes.extend(xml_text(block, "Prefix"));
            }
            match xml_text(&text, "NextContinuationToken") {
                Some(t) if xml_text(&text, "IsTruncated").as_deref() == Some("true") => {
                    token = Some(t)
                }
                _ => return Ok(out),
            }
        }
    }

    /// `DeleteObject`. With a version, deletes that version, which a lock refuses (`AccessDenied`); GOVERNANCE
    /// yields to `bypass_governance` (and the permission for it). Without a version, adds a delete marker.
    pub async fn delete_object(
        &self,
        key: &str,
        version: Option<&str>,
        bypass_governance: bool,
    ) -> Result<(), S3Error> {
        let query: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        let headers = if bypass_governance {
            vec![("x-amz-bypass-governance-retention", "true".to_string())]
        } else {
            vec![]
        };
        self.call(Method::DELETE, key, &query, headers, Bytes::new())
            .await?;
        Ok(())
    }

    /// `PutObjectLegalHold` on a version.
    pub async fn put_legal_hold(&self, key: &str, version: &str, on: bool) -> Result<(), S3Error> {
        let body = format!(
            "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></LegalHold>",
            if on { "ON" } else { "OFF" }
        );
        self.call_with_checksum(
            key,
            &[("legal-hold", ""), ("versionId", version)],
            vec![],
            body,
        )
        .await
    }

    /// `PutObjectRetention` on a version, after checking its current retention (HEAD): a COMPLIANCE retention
    /// is never shortened nor changed to GOVERNANCE, whatever the server would allow.
    pub async fn put_retention(
        &self,
        key: &str,
        version: &str,
        mode: LockMode,
        retain_until: jiff::Timestamp,
        bypass_governance: bool,
    ) -> Result<(), S3Error> {
        let now = self.head_object(key, Some(version)).await?;
        if let (Some(LockMode::Compliance), Some(until)) = (now.lock_mode, now.retain_until)
            && (mode != LockMode::Compliance || truncate(retain_until) < truncate(until))
        {
            return Err(S3Error::Refused(format!(
                "`{key}` version {version} is under COMPLIANCE retention until {until}: it cannot be shortened \
                 or changed to {} (until {retain_until})",
                mode.as_str()
            )));
        }
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.as_str(),
            iso(retain_until)
        );
        let headers = if bypass_governance {
            vec![("x-amz-bypass-governance-retention", "true".to_string())]
        } else {
            vec![]
        };
        self.call_with_checksum(
            key,
            &[("retention", ""), ("versionId", version)],
            headers,
            body,
        )
        .await
    }

    async fn call_with_checksum(
        &self,
        key: &str,
        query: &[(&str, &str)],
        mut headers: Vec<(&'static str, String)>,
        body: String,
    ) -> Result<(), S3Error> {
        let checksum =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()));
        headers.push(("content-type", "application/xml".to_string()));
        headers.push(("x-amz-sdk-checksum-algorithm", "SHA256".to_string()));
        headers.push(("x-amz-checksum-sha256", checksum));
        self.call(Method::PUT, key, query, headers, Bytes::from(body))
            .await?;
        Ok(())
    }

    /// One signed request; any answer but 2xx is an error. Temporary credentials that S3 calls expired
    /// (`ExpiredToken`) are fetched again and the request is sent once more.
    async fn call(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<crate::http::Response, S3Error> {
        let path = if key.is_empty() {
            if self.prefix.is_empty() {
                "/".to_string()
            } else {
                self.prefix.clone()
            }
        } else {
            let encoded: Vec<String> = key.split('/').map(percent_encode).collect();
            format!("{}/{}", self.prefix, encoded.join("/"))
        };
        let what = format!(
            "{method} {}",
            if key.is_empty() {
                self.bucket.as_str()
            } else {
                key
            }
        );
        let payload = if body.is_empty() {
            EMPTY_SHA256.to_string()
        } else {
            sigv4::sha256_hex(&body)
        };
        let mut retried = false;
        loop {
            let credentials = self
                .credentials
                .credentials()
                .await
                .map_err(S3Error::Unavailable)?;
            let resp = self
                .send_signed(
                    &credentials,
                    method.clone(),
                    &path,
                    query,
                    &headers,
                    &payload,
                    body.clone(),
                )
                .await?;
            if (200..300).contains(&resp.status) {
                return Ok(resp);
            }
            let text = String::from_utf8_lossy(&resp.body);
            let code = xml_text(&text, "Code").unwrap_or_else(|| {
                match resp.status {
                    403 => "AccessDenied",
                    404 => "NotFound",
                    _ => "Error",
                }
                .to_string()
            });
            if !retried
                && self.credentials.is_refreshable()
                && matches!(code.as_str(), "ExpiredToken" | "TokenRefreshRequired")
            {
                retried = true;
                self.credentials.invalidate().await;
                continue;
            }
            let message = xml_text(&text, "Message").unwrap_or_else(|| shorten(&text, 200));
            return Err(S3Error::Service {
                request: what,
                status: resp.status,
                code,
                message: shorten(&message, 300),
            });
        }
    }

    /// Signs with `credentials` and sends.
    #[allow(clippy::too_many_arguments)]
    async fn send_signed(
        &self,
        credentials: &Credentials,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&'static str, String)],
        payload: &str,
        body: Bytes,
    ) -> Result<crate::http::Response, S3Error> {
        let now = jiff::Timestamp::now();
        let mut all: Vec<(&str, String)> = headers.to_vec();
        all.push(("host", self.host.clone()));
        all.push(("x-amz-date", sigv4::amz_date(now)));
        all.push(("x-amz-content-sha256", payload.to_string()));
        if let Some(token) = &credentials.session_token {
            all.push(("x-amz-security-token", token.expose().to_string()));
        }
        let signer = sigv4::Signer {
            access_key_id: &credentials.access_key_id,
            secret_access_key: credentials.secret_access_key.expose(),
            region: &self.region,
            service: "s3",
            time: now,
        };
        let signed: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let auth = signer.authorization(method.as_str(), path, query, &signed, payload);
        let qs = sigv4::canonical_query(query);
        let mut req = Request::new(
            method,
            if qs.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{qs}")
            },
        );
        req.max_response = 1 << 30;
        for (k, v) in &all {
            if *k != "host" {
                req = req.header(*k, v);
            }
        }
        req = req.header("authorization", &auth);
        if let Some(v) = req.headers.get_mut("authorization") {
            v.set_sensitive(true);
        }
        if let Some(v) = req.headers.get_mut("x-amz-security-token") {
            v.set_sensitive(true);
        }
        req.body = body;
        self.client.send(req).await.map_err(S3Error::Unavailable)
    }
}

/// `2026-01-01T00:00:00Z`: whole seconds, as Object Lock headers and bodies take it.
fn iso(t: jiff::Timestamp) -> String {
    truncate(t).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn truncate(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// An RFC 3339 time, or an HTTP-date.
fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.trim().parse().ok().or_else(|| {
        jiff::fmt::rfc2822::parse(s.trim())
            .ok()
            .map(|z| z.timestamp())
    })
}

/// The text of the first `<tag>` in an XML answer, entities decoded. S3's answers here are flat and small.
/// The inside of every `<tag>...</tag>` element, in order (S3's answers are flat enough for this: no
/// attributes, no nesting of the same tag).
fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let inner = &rest[i + open.len()..];
        let Some(j) = inner.find(&close) else { break };
        out.push(&inner[..j]);
        rest = &inner[j + close.len()..];
    }
    out
}

fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_read_from_their_xml() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated>\
                   <Contents><Key>k/a&amp;b.parquet</Key><Size>12</Size></Contents>\
                   <Contents><Key>k/c</Key><Size>3</Size></Contents>\
                   <CommonPrefixes><Prefix>k/replica=a/</Prefix></CommonPrefixes></ListBucketResult>";
        let keys: Vec<String> = xml_blocks(xml, "Contents")
            .into_iter()
            .filter_map(|b| xml_text(b, "Key"))
            .collect();
        assert_eq!(keys, ["k/a&b.parquet", "k/c"]);
        assert_eq!(
            xml_blocks(xml, "CommonPrefixes"),
            ["<Prefix>k/replica=a/</Prefix>"]
        );
        assert!(
            xml_blocks("<Contents><Key>x", "Contents").is_empty(),
            "an unclosed element is not one"
        );
    }

    fn cfg(endpoint: Option<&str>, path_style: Option<bool>) -> S3Config {
        S3Config {
            endpoint: endpoint.map(str::to_string),
            region: "eu-west-1".into(),
            bucket: "audit-archive".into(),
            path_style,
            credentials: Some(Credentials::new("AKIDEXAMPLE", "hunter2")),
            http: HttpConfig::default(),
        }
    }

    #[test]
    fn addressing() {
        let aws = S3::new(cfg(None, None)).unwrap();
        assert_eq!(aws.host, "audit-archive.s3.eu-west-1.amazonaws.com");
        assert_eq!(aws.prefix, "");
        let minio = S3::new(cfg(Some("http://127.0.0.1:9000"), None)).unwrap();
        assert_eq!(
            (minio.host.as_str(), minio.prefix.as_str()),
            ("127.0.0.1:9000", "/audit-archive")
        );
        let vhost = S3::new(cfg(Some("https://minio.example.com"), Some(false))).unwrap();
        assert_eq!(vhost.host, "audit-archive.minio.example.com");
        assert!(!format!("{aws:?}").contains("hunter2"));
        let mut bad = cfg(None, None);
        bad.bucket = "Bad_Bucket".into();
        assert!(S3::new(bad).is_err());
    }

    #[test]
    fn xml_and_times() {
        let err = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access &amp; denied</Message></Error>";
        assert_eq!(xml_text(err, "Code").unwrap(), "AccessDenied");
        assert_eq!(xml_text(err, "Message").unwrap(), "Access & denied");
        assert_eq!(xml_text(err, "Nope"), None);
        let t: jiff::Timestamp = "2030-01-02T03:04:05.678Z".parse().unwrap();
        assert_eq!(iso(t), "2030-01-02T03:04:05Z");
        assert_eq!(parse_time("2030-01-02T03:04:05.000Z"), Some(truncate(t)));
        assert_eq!(
            parse_time("Wed, 02 Jan 2030 03:04:05 GMT"),
            Some(truncate(t))
        );
    }
}
