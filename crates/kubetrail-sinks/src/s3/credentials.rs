//! AWS credentials from the standard chain, in the order of the AWS SDKs:
//!
//! 1. explicit credentials in the sink's configuration;
//! 2. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//! 3. web identity, as IAM Roles for Service Accounts (IRSA) sets it up: `AWS_WEB_IDENTITY_TOKEN_FILE` and
//!    `AWS_ROLE_ARN` (and `AWS_ROLE_SESSION_NAME`, default `kubetrail`), exchanged with STS
//!    `AssumeRoleWithWebIdentity` at `https://sts.<region>.amazonaws.com` (the region from `AWS_REGION`,
//!    `AWS_DEFAULT_REGION` or the sink's; `AWS_STS_REGIONAL_ENDPOINTS=legacy` uses the global endpoint for the
//!    regions that had it; `AWS_ENDPOINT_URL_STS` overrides the endpoint). The token file is read again at every
//!    refresh: the kubelet rotates it;
//! 4. static keys in the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
//!    `AWS_PROFILE` or `default`);
//! 5. container credentials (ECS task roles, EKS Pod Identity): `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on
//!    `http://169.254.170.2`) or `AWS_CONTAINER_CREDENTIALS_FULL_URI` (https, or http to a loopback or the
//!    ECS/EKS link-local addresses), with an `Authorization` header from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
//!    (read again at every refresh) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//! 6. the EC2 instance metadata service, IMDSv2 only (a session token first), when nothing else is configured:
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` (or `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`) changes its
//!    address, `AWS_EC2_METADATA_DISABLED=true` turns it off, `AWS_METADATA_SERVICE_TIMEOUT` (seconds, default
//!    2) bounds each of its requests so that a machine without IMDS fails fast.
//!
//! Which source applies is decided when the client is made ([`CredentialsProvider::from_environment`]), without
//! connecting anywhere; temporary credentials are fetched on first use and fetched again when they are within
//! [`REFRESH_BEFORE`] of their expiration (a failed refresh keeps using the old ones while they are valid).
//!
//! Not supported, and named in the error when nothing is found: SSO, profiles that assume a role (`role_arn`,
//! `source_profile`) or run a `credential_process`, and anything only in `~/.aws/config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::header::AUTHORIZATION;
use hyper::http::{HeaderValue, Method};
use tokio::sync::Mutex;

use super::xml_text;
use crate::http::{HttpClient, HttpConfig, Proxy, Request, percent_encode};
use crate::{Error, Secret, shorten};

/// Temporary credentials are fetched again when they expire within this.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// What to do when nothing is found.
const NO_CREDENTIALS: &str = "no AWS credentials: set them in the sink's config; or AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (IAM Roles \
     for Service Accounts); or static keys in ~/.aws/credentials (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE); or \
     container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI: ECS, \
     EKS Pod Identity); or run on EC2 with an instance profile (instance metadata, IMDSv2). SSO, profiles that \
     assume a role and credential_process are not supported";

/// An access key.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The access key id (not secret: it names the key).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

impl Credentials {
    /// Static credentials.
    pub fn new(access_key_id: &str, secret_access_key: &str) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret_access_key),
            session_token: None,
        }
    }
}

/// Where credentials come from, and the last ones fetched: asked before every signature.
pub struct CredentialsProvider {
    source: Source,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    credentials: Credentials,
    expires: Option<jiff::Timestamp>,
}

#[derive(Debug)]
enum Source {
    Static {
        credentials: Credentials,
        origin: String,
    },
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
        sts: HttpClient,
    },
    Container {
        client: HttpClient,
        path: String,
        auth: Option<ContainerAuth>,
    },
    Imds {
        client: HttpClient,
    },
}

#[derive(Debug)]
enum ContainerAuth {
    File(PathBuf),
    Token(Secret),
}

impl std::fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsProvider")
            .field("source", &self.source())
            .finish_non_exhaustive()
    }
}

impl CredentialsProvider {
    /// These credentials, for ever.
    pub fn fixed(credentials: Credentials) -> CredentialsProvider {
        CredentialsProvider::of(Source::Static {
            credentials,
            origin: "the sink's configuration".into(),
        })
    }

    /// The standard chain over the process' environment; `region` (the sink's) is STS' region unless
    /// `AWS_REGION` or `AWS_DEFAULT_REGION` say otherwise. Reads files but connects to nothing.
    pub fn from_environment(region: &str) -> Result<CredentialsProvider, Error> {
        CredentialsProvider::from_lookup(|k| std::env::var(k).ok(), region)
    }

    /// The standard chain over the variables `env` returns (an empty value counts as unset).
    pub fn from_lookup(
        env: impl Fn(&str) -> Option<String>,
        region: &str,
    ) -> Result<CredentialsProvider, Error> {
        resolve(&|k: &str| env(k).filter(|v| !v.trim().is_empty()), region).map(Self::of)
    }

    fn of(source: Source) -> CredentialsProvider {
        CredentialsProvider {
            source,
            cache: Mutex::new(None),
        }
    }

    /// Where the credentials come from, for messages (no secret).
    pub fn source(&self) -> String {
        match &self.source {
            Source::Static { origin, .. } => origin.clone(),
            Source::WebIdentity {
                role_arn,
                token_file,
                sts,
                ..
            } => format!(
                "web identity (role `{role_arn}`, token file `{}`, STS at {})",
                token_file.display(),
                sts.target()
            ),
            Source::Container { client, .. } => {
                format!("container credentials at {}", client.target())
            }
            Source::Imds { client } => {
                format!("EC2 instance metadata (IMDSv2) at {}", client.target())
            }
        }
    }

    /// Whether the credentials are temporary ones that this provider fetches and refreshes.
    pub fn is_refreshable(&self) -> bool {
        !matches!(self.source, Source::Static { .. })
    }

    /// The current credentials: the cached ones unless they expire within [`REFRESH_BEFORE`], else fetched
    /// (one fetch at a time). A failed fetch keeps the cached credentials while they are valid.
    pub async fn credentials(&self) -> Result<Credentials, String> {
        if let Source::Static { credentials, .. } = &self.source {
            return Ok(credentials.clone());
        }
        let mut cache = self.cache.lock().await;
        let now = jiff::Timestamp::now();
        if let Some(c) = &*cache
            && !needs_refresh(c.expires, now)
        {
            return Ok(c.credentials.clone());
        }
        match self.fetch().await {
            Ok((credentials, expires)) => {
                *cache = Some(Cached {
                    credentials: credentials.clone(),
                    expires,
                });
                Ok(credentials)
            }
            Err(why) => match &*cache {
                Some(c) if c.expires.is_none_or(|e| now < e) => Ok(c.credentials.clone()),
                _ => Err(format!("AWS credentials from {}: {why}", self.source())),
            },
        }
    }

    /// Forgets the cached credentials (the server said they expired): the next call fetches new ones.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<(Credentials, Option<jiff::Timestamp>), String> {
        match &self.source {
            Source::Static { credentials, .. } => Ok((credentials.clone(), None)),
            Source::WebIdentity {
                token_file,
                role_arn,
                session_name,
                sts,
            } => {
                let token = std::fs::read_to_string(token_file).map_err(|e| {
                    format!(
                        "cannot read the web identity token file `{}` (AWS_WEB_IDENTITY_TOKEN_FILE): {e}",
                        token_file.display()
                    )
                })?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(format!(
                        "the web identity token file `{}` (AWS_WEB_IDENTITY_TOKEN_FILE) is empty",
                        token_file.display()
                    ));
                }
                let form = format!(
                    "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}\
                     &WebIdentityToken={}",
                    percent_encode(role_arn),
                    percent_encode(session_name),
                    percent_encode(token)
                );
                let req =
                    Request::new(Method::POST, "/").body(form, "application/x-www-form-urlencoded");
                let resp = sts
                    .send(req)
                    .await
                    .map_err(|e| format!("STS not reached: {e}"))?;
                parse_sts(resp.status, &String::from_utf8_lossy(&resp.body))
            }
            Source::Container { client, path, auth } => {
                let mut req = Request::new(Method::GET, path.clone());
                if let Some(auth) = auth {
                    let value = match auth {
                        ContainerAuth::Token(t) => t.expose().trim().to_string(),
                        ContainerAuth::File(f) => std::fs::read_to_string(f)
                            .map_err(|e| {
                                format!(
                                    "cannot read the authorization token file `{}` \
                                     (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE): {e}",
                                    f.display()
                                )
                            })?
                            .trim()
                            .to_string(),
                    };
                    let mut value = HeaderValue::from_str(&value).map_err(|_| {
                        "the container authorization token has characters not allowed in an HTTP header"
                            .to_string()
                    })?;
                    value.set_sensitive(true);
                    req.headers.insert(AUTHORIZATION, value);
                }
                let resp = client
                    .send(req)
                    .await
                    .map_err(|e| format!("the container credentials endpoint not reached: {e}"))?;
                if !(200..300).contains(&resp.status) {
                    return Err(format!(
                        "the container credentials endpoint answered HTTP {}{}{}",
                        resp.status,
                        json_error(&resp.body),
                        if matches!(resp.status, 401 | 403) {
                            " (check AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or AWS_CONTAINER_AUTHORIZATION_TOKEN)"
                        } else {
                            ""
                        }
                    ));
                }
                parse_json(&resp.body)
            }
            Source::Imds { client } => imds(client).await,
        }
    }
}

/// Whether credentials expiring at `expires` must be fetched again at `now`.
fn needs_refresh(expires: Option<jiff::Timestamp>, now: jiff::Timestamp) -> bool {
    let margin = jiff::SignedDuration::try_from(REFRESH_BEFORE).expect("a small duration");
    expires.is_some_and(|e| now.checked_add(margin).map_or(true, |soon| soon >= e))
}

/// The source the chain picks, without fetching anything. `env` returns only non-empty values.
fn resolve(env: &dyn Fn(&str) -> Option<String>, region: &str) -> Result<Source, Error> {
    // 2. Keys in the environment.
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            return Ok(Source::Static {
                credentials: Credentials {
                    access_key_id: id,
                    secret_access_key: Secret::new(secret),
                    session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
                },
                origin: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            });
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::Config(
                "AWS credentials: only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set: set both, \
                 or neither"
                    .into(),
            ));
        }
        (None, None) => {}
    }
    // 3. Web identity (IRSA).
    if let Some(token_file) = env("AWS_WEB_IDENTITY_TOKEN_FILE") {
        let role_arn = env("AWS_ROLE_ARN").ok_or_else(|| {
            Error::Config(
                "AWS credentials: AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not: set the ARN of \
                 the role to assume"
                    .into(),
            )
        })?;
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| region.to_string());
        let (endpoint, origin) = match env("AWS_ENDPOINT_URL_STS") {
            Some(url) => (url, "AWS_ENDPOINT_URL_STS"),
            None => (
                sts_endpoint(&region, env("AWS_STS_REGIONAL_ENDPOINTS").as_deref()),
                "the region",
            ),
        };
        let sts =
            HttpClient::new(&endpoint, &http_config(Duration::from_secs(10))).map_err(|e| {
                Error::Config(format!("AWS web identity: STS endpoint from {origin}: {e}"))
            })?;
        return Ok(Source::WebIdentity {
            token_file: token_file.into(),
            role_arn,
            session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "kubetrail".into()),
            sts,
        });
    }
    // 4. Static keys in the shared credentials file.
    let explicit_profile = env("AWS_PROFILE");
    let profile = explicit_profile.clone().unwrap_or_else(|| "default".into());
    let explicit_file = env("AWS_SHARED_CREDENTIALS_FILE");
    let file = explicit_file
        .clone()
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    if let Some(file) = file {
        match std::fs::read_to_string(&file) {
            Ok(text) => match from_profile(&text, &profile) {
                Ok(credentials) => {
                    return Ok(Source::Static {
                        credentials,
                        origin: format!(
                            "the AWS credentials file `{}`, profile `{profile}`",
                            file.display()
                        ),
                    });
                }
                // The default profile may be missing from a file that has others.
                Err(ProfileError::NoSuchProfile) if explicit_profile.is_none() => {}
                Err(why) => {
                    return Err(Error::Config(format!(
                        "AWS credentials file `{}`, profile `{profile}`: {why}",
                        file.display()
                    )));
                }
            },
            Err(e) if explicit_file.is_some() => {
                return Err(Error::Config(format!(
                    "AWS credentials file `{}` (AWS_SHARED_CREDENTIALS_FILE) cannot be read: {e}",
                    file.display()
                )));
            }
            Err(_) => {}
        }
    }
    // 5. Container credentials (ECS, EKS Pod Identity).
    let container = if let Some(relative) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        if !relative.starts_with('/') {
            return Err(Error::Config(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with `/`".into(),
            ));
        }
        Some(("http://169.254.170.2".to_string(), relative))
    } else if let Some(full) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        Some(split_full_uri(&full)?)
    } else {
        None
    };
    if let Some((base, path)) = container {
        let client = HttpClient::new(&base, &link_local(Duration::from_secs(5)))
            .map_err(|e| Error::Config(format!("AWS container credentials: {e}")))?;
        let auth = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            .map(|f| ContainerAuth::File(f.into()))
            .or_else(|| {
                env("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                    .map(|t| ContainerAuth::Token(Secret::new(t)))
            });
        return Ok(Source::Container { client, path, auth });
    }
    // 6. The instance metadata service, when nothing else is configured.
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Err(Error::Config(format!(
            "{NO_CREDENTIALS} (AWS_EC2_METADATA_DISABLED=true turns instance metadata off)"
        )));
    }
    let endpoint = match env("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        Some(e) => e,
        None if env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("ipv6")) =>
        {
            "http://[fd00:ec2::254]".into()
        }
        None => "http://169.254.169.254".into(),
    };
    let timeout = match env("AWS_METADATA_SERVICE_TIMEOUT") {
        Some(t) => t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && *s <= 60.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Error::Config(
                    "AWS_METADATA_SERVICE_TIMEOUT must be a number of seconds (at most 60)".into(),
                )
            })?,
        None => Duration::from_secs(2),
    };
    let client =
        HttpClient::new(endpoint.trim_end_matches('/'), &link_local(timeout)).map_err(|e| {
            Error::Config(format!(
                "AWS instance metadata (AWS_EC2_METADATA_SERVICE_ENDPOINT): {e}"
            ))
        })?;
    Ok(Source::Imds { client })
}

fn http_config(timeout: Duration) -> HttpConfig {
    HttpConfig {
        timeout,
        ..HttpConfig::default()
    }
}

/// The instance's own metadata and container credential endpoints (link-local or loopback) are never reached
/// through a proxy: through one they are unreachable, or worse, the proxy host's.
fn link_local(timeout: Duration) -> HttpConfig {
    HttpConfig {
        proxy: Proxy::None,
        ..http_config(timeout)
    }
}

/// STS' endpoint in `region`: regional, unless `AWS_STS_REGIONAL_ENDPOINTS=legacy` and the region had the
/// global endpoint.
fn sts_endpoint(region: &str, mode: Option<&str>) -> String {
    const GLOBAL: &[&str] = &[
        "ap-northeast-1",
        "ap-south-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "aws-global",
        "ca-central-1",
        "eu-central-1",
        "eu-north-1",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
    ];
    let legacy = mode.is_some_and(|m| m.trim().eq_ignore_ascii_case("legacy"));
    if region == "aws-global" || (legacy && GLOBAL.contains(&region)) {
        "https://sts.amazonaws.com".into()
    } else if region.starts_with("cn-") {
        format!("https://sts.{region}.amazonaws.com.cn")
    } else {
        format!("https://sts.{region}.amazonaws.com")
    }
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` as base URL and path (with query): https anywhere, http only to a
/// loopback address or ECS/EKS' link-local ones, as the SDKs allow.
fn split_full_uri(full: &str) -> Result<(String, String), Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI `{}`: {why}",
            crate::http::redact_url(full)
        ))
    };
    let uri: hyper::Uri = full.parse().map_err(|_| bad("not a URL"))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    let host = authority.host().trim_matches(['[', ']']);
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            let allowed = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
                || matches!(host, "169.254.170.2" | "169.254.170.23" | "fd00:ec2::23");
            if !allowed {
                return Err(bad(
                    "http is only allowed to a loopback address, 169.254.170.2, 169.254.170.23 or \
                     fd00:ec2::23: use https",
                ));
            }
        }
        _ => return Err(bad("must be an http:// or https:// URL")),
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok((
        format!("{}://{authority}", uri.scheme_str().unwrap_or("http")),
        path,
    ))
}

/// IMDSv2: a session token, the instance profile's role, its credentials.
async fn imds(client: &HttpClient) -> Result<(Credentials, Option<jiff::Timestamp>), String> {
    let resp = client
        .send(
            Request::new(Method::PUT, "/latest/api/token")
                .header("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
        )
        .await
        .map_err(|e| {
            format!(
                "{NO_CREDENTIALS}. Nothing else is configured, and the instance metadata service did not \
                 answer ({e}): not on EC2? (on EKS, give the pod a role with IRSA or Pod Identity, or raise \
                 the instance's IMDS hop limit to 2; elsewhere set AWS_EC2_METADATA_DISABLED=true and \
                 another source)"
            )
        })?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "{NO_CREDENTIALS}. Nothing else is configured, and the instance metadata service refused an \
             IMDSv2 session token: HTTP {} (is IMDS turned off on this instance?)",
            resp.status
        ));
    }
    let token = String::from_utf8_lossy(&resp.body).trim().to_string();
    let mut token = HeaderValue::from_str(&token)
        .map_err(|_| "the instance metadata service sent an invalid session token".to_string())?;
    token.set_sensitive(true);
    let get = |path: String| {
        let mut req = Request::new(Method::GET, path);
        req.headers
            .insert("x-aws-ec2-metadata-token", token.clone());
        client.send(req)
    };
    const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
    let resp = get(ROLES.into())
        .await
        .map_err(|e| format!("instance metadata: {e}"))?;
    if resp.status == 404 {
        return Err(
            "the instance has no IAM role: attach an instance profile (or configure another source)"
                .into(),
        );
    }
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "instance metadata: {ROLES} answered HTTP {}",
            resp.status
        ));
    }
    let text = String::from_utf8_lossy(&resp.body);
    let role = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("the instance has no IAM role: attach an instance profile")?
        .to_string();
    let resp = get(format!("{ROLES}{}", percent_encode(&role)))
        .await
        .map_err(|e| format!("instance metadata: {e}"))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "instance metadata: the credentials of role `{role}` answered HTTP {}{}",
            resp.status,
            json_error(&resp.body)
        ));
    }
    parse_json(&resp.body).map_err(|e| format!("instance metadata, role `{role}`: {e}"))
}

/// STS' answer to `AssumeRoleWithWebIdentity`: the credentials, or an error naming STS' code.
fn parse_sts(status: u16, xml: &str) -> Result<(Credentials, Option<jiff::Timestamp>), String> {
    if !(200..300).contains(&status) || xml.contains("<ErrorResponse") {
        let code = xml_text(xml, "Code").unwrap_or_else(|| "no error code".into());
        let message = xml_text(xml, "Message").unwrap_or_else(|| shorten(xml, 200));
        let hint = match code.as_str() {
            "AccessDenied" => {
                " (does the role's trust policy allow sts:AssumeRoleWithWebIdentity for this service account, \
                 and is AWS_ROLE_ARN right?)"
            }
            "InvalidIdentityToken" => {
                " (is the cluster's OIDC provider registered in IAM, with audience sts.amazonaws.com?)"
            }
            "ExpiredTokenException" => {
                " (the token in AWS_WEB_IDENTITY_TOKEN_FILE expired: is the kubelet still rotating it?)"
            }
            _ => "",
        };
        return Err(format!(
            "STS AssumeRoleWithWebIdentity refused: HTTP {status} {code}: {}{hint}",
            shorten(&message, 300)
        ));
    }
    let open = xml
        .find("<Credentials>")
        .ok_or("STS answered without <Credentials>")?;
    let section = &xml[open..];
    let field = |tag: &str| {
        xml_text(section, tag)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("STS answered without <{tag}>"))
    };
    let expiration = field("Expiration")?;
    let expires = expiration
        .parse::<jiff::Timestamp>()
        .map_err(|_| format!("STS answered an invalid <Expiration> `{expiration}`"))?;
    Ok((
        Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: Secret::new(field("SecretAccessKey")?),
            session_token: Some(Secret::new(field("SessionToken")?)),
        },
        Some(expires),
    ))
}

/// The JSON of container credentials and instance metadata: `AccessKeyId`, `SecretAccessKey`, `Token`,
/// `Expiration` (and `Code`, `Success` unless it failed).
fn parse_json(body: &[u8]) -> Result<(Credentials, Option<jiff::Timestamp>), String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "the answer is not JSON credentials".to_string())?;
    if let Some(code) = v["Code"].as_str()
        && code != "Success"
    {
        return Err(format!(
            "the answer is an error: {code}: {}",
            shorten(v["Message"].as_str().unwrap_or(""), 300)
        ));
    }
    let field = |k: &str| {
        v[k].as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let missing = |k: &str| format!("the answer has no `{k}`");
    let expires = match field("Expiration") {
        Some(e) => Some(
            e.parse::<jiff::Timestamp>()
                .map_err(|_| format!("the answer has an invalid `Expiration` `{e}`"))?,
        ),
        None => None,
    };
    Ok((
        Credentials {
            access_key_id: field("AccessKeyId").ok_or_else(|| missing("AccessKeyId"))?,
            secret_access_key: Secret::new(
                field("SecretAccessKey").ok_or_else(|| missing("SecretAccessKey"))?,
            ),
            session_token: field("Token").map(Secret::new),
        },
        expires,
    ))
}

/// `: Code: Message` of a JSON error answer, if it is one.
fn json_error(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    match (v["Code"].as_str(), v["Message"].as_str()) {
        (Some(c), Some(m)) => format!(": {c}: {}", shorten(m, 200)),
        (Some(c), None) => format!(": {c}"),
        (None, Some(m)) => format!(": {}", shorten(m, 200)),
        (None, None) => String::new(),
    }
}

#[derive(Debug, PartialEq)]
enum ProfileError {
    NoSuchProfile,
    Other(String),
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::NoSuchProfile => f.write_str("no such profile"),
            ProfileError::Other(why) => f.write_str(why),
        }
    }
}
/// The static keys of `[profile]` in a credentials file.
fn from_profile(text: &str, profile: &str) -> Result<Credentials, ProfileError> {
    let mut in_section = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut unsupported = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_section =
                name == profile || name.strip_prefix("profile ").map(str::trim) == Some(profile);
            found |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        match k {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            "role_arn"
            | "source_profile"
            | "credential_process"
            | "sso_session"
            | "sso_start_url"
            | "web_identity_token_file" => unsupported = Some(k.to_string()),
            _ => {}
        }
    }
    match (found, id, secret) {
        (false, ..) => Err(ProfileError::NoSuchProfile),
        (true, Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: token.map(Secret::new),
        }),
        (true, ..) => Err(ProfileError::Other(match unsupported {
            Some(k) => format!(
                "`{k}` is not supported: only static aws_access_key_id/aws_secret_access_key (SSO, assumed \
                 roles and credential_process are not)"
            ),
            None => "no aws_access_key_id and aws_secret_access_key".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_of_the_credentials_file() {
        let text = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n\n# comment\n[archive]\n\
                    aws_access_key_id=AKIA2\naws_secret_access_key=s2\naws_session_token = t2\n[role]\nrole_arn = arn:x\n";
        let c = from_profile(text, "default").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.expose()),
            ("AKIA1", "s1")
        );
        assert!(c.session_token.is_none());
        let c = from_profile(text, "archive").unwrap();
        assert_eq!(c.session_token.unwrap().expose(), "t2");
        assert!(
            from_profile(text, "role")
                .unwrap_err()
                .to_string()
                .contains("`role_arn` is not supported")
        );
        assert_eq!(
            from_profile(text, "nope").unwrap_err(),
            ProfileError::NoSuchProfile
        );
        let shown = format!("{:?}", from_profile(text, "archive").unwrap());
        assert!(!shown.contains("s2") && !shown.contains("t2"), "{shown}");
    }

    const STS_OK: &str = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
        <AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:serviceaccount:kt:kt\
        </SubjectFromWebIdentityToken><Credentials><SessionToken>FwoGZX&amp;token</SessionToken>\
        <SecretAccessKey>wJalr/secret</SecretAccessKey><Expiration>2026-11-26T00:04:13Z</Expiration>\
        <AccessKeyId>ASIAEXAMPLE</AccessKeyId></Credentials><Provider>oidc</Provider>\
        </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";

    #[test]
    fn sts_answers() {
        let (c, exp) = parse_sts(200, STS_OK).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key.expose(), "wJalr/secret");
        assert_eq!(c.session_token.unwrap().expose(), "FwoGZX&token");
        assert_eq!(exp, Some("2026-11-26T00:04:13Z".parse().unwrap()));

        let denied = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
            <Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>\
            </Error><RequestId>1</RequestId></ErrorResponse>";
        let e = parse_sts(403, denied).unwrap_err();
        assert!(e.contains("HTTP 403 AccessDenied"), "{e}");
        assert!(e.contains("Not authorized"), "{e}");
        assert!(e.contains("trust policy"), "{e}");
        // An error body with a 200 is still an error.
        assert!(parse_sts(200, denied).unwrap_err().contains("AccessDenied"));
        let e = parse_sts(
            400,
            "<ErrorResponse><Error><Code>InvalidIdentityToken</Code></Error></ErrorResponse>",
        )
        .unwrap_err();
        assert!(
            e.contains("InvalidIdentityToken") && e.contains("OIDC"),
            "{e}"
        );
        let e = parse_sts(
            200,
            &STS_OK.replace("<Expiration>2026-11-26T00:04:13Z</Expiration>", ""),
        )
        .unwrap_err();
        assert!(e.contains("<Expiration>"), "{e}");
        assert!(parse_sts(200, "<html>proxy</html>").is_err());
    }

    #[test]
    fn json_answers() {
        let body = br#"{"Code":"Success","LastUpdated":"2026-11-25T22:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIAJSON","SecretAccessKey":"sec/ret","Token":"tok==","Expiration":"2026-11-26T04:00:00Z"}"#;
        let (c, exp) = parse_json(body).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.expose()),
            ("ASIAJSON", "sec/ret")
        );
        assert_eq!(c.session_token.unwrap().expose(), "tok==");
        assert_eq!(exp, Some("2026-11-26T04:00:00Z".parse().unwrap()));
        let (c, exp) = parse_json(br#"{"AccessKeyId":"A","SecretAccessKey":"S"}"#).unwrap();
        assert!(c.session_token.is_none() && exp.is_none());
        let e = parse_json(br#"{"Code":"AccessDenied","Message":"no role"}"#).unwrap_err();
        assert!(e.contains("AccessDenied: no role"), "{e}");
        let e = parse_json(br#"{"SecretAccessKey":"hunter2"}"#).unwrap_err();
        assert!(e.contains("`AccessKeyId`") && !e.contains("hunter2"), "{e}");
        let e = parse_json(br#"{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"soon"}"#)
            .unwrap_err();
        assert!(e.contains("Expiration"), "{e}");
        assert!(parse_json(b"not json").is_err());
        assert_eq!(json_error(br#"{"Code":"X","Message":"m"}"#), ": X: m");
    }

    #[test]
    fn refresh_within_five_minutes_of_expiry() {
        let now: jiff::Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let at = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        assert!(!needs_refresh(None, now), "static credentials never expire");
        assert!(!needs_refresh(at("2026-01-01T13:00:00Z"), now));
        assert!(!needs_refresh(at("2026-01-01T12:05:01Z"), now));
        assert!(needs_refresh(at("2026-01-01T12:05:00Z"), now));
        assert!(needs_refresh(at("2026-01-01T12:01:00Z"), now));
        assert!(needs_refresh(at("2026-01-01T11:00:00Z"), now));
    }

    fn chain(vars: &[(&str, &str)]) -> Result<CredentialsProvider, Error> {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CredentialsProvider::from_lookup(|k| map.get(k).cloned(), "eu-west-1")
    }

    #[test]
    fn chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = s\n[sso]\nsso_session = x\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let keys = [
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
        ];
        let irsa = [
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kubetrail"),
        ];
        let container = [(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.23/v1/credentials",
        )];
        let shared = [("AWS_SHARED_CREDENTIALS_FILE", file)];
        let src = |vars: &[(&str, &str)]| chain(vars).unwrap().source();

        let all: Vec<_> = [&keys[..], &irsa, &shared, &container].concat();
        assert_eq!(src(&all), "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
        assert!(!chain(&all).unwrap().is_refreshable());
        let s = src(&[&irsa[..], &shared, &container].concat());
        assert!(
            s.starts_with("web identity (role `arn:aws:iam::123456789012:role/kubetrail`"),
            "{s}"
        );
        assert!(
            s.contains("STS at https://sts.eu-west-1.amazonaws.com"),
            "{s}"
        );
        let s = src(&[&shared[..], &container].concat());
        assert!(
            s.contains("credentials file") && s.contains("profile `default`"),
            "{s}"
        );
        assert_eq!(
            src(&container),
            "container credentials at http://169.254.170.23"
        );
        let relative = [(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        )];
        assert_eq!(
            src(&relative),
            "container credentials at http://169.254.170.2"
        );
        assert_eq!(
            src(&[]),
            "EC2 instance metadata (IMDSv2) at http://169.254.169.254"
        );
        assert!(chain(&[]).unwrap().is_refreshable());
        assert_eq!(
            src(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")]),
            "EC2 instance metadata (IMDSv2) at http://[fd00:ec2::254]"
        );

        // A missing default profile falls through; a missing named one, or an unsupported one, is an error.
        let other = dir.path().join("other");
        std::fs::write(
            &other,
            "[archive]\naws_access_key_id = A\naws_secret_access_key = s\n",
        )
        .unwrap();
        let other = other.to_str().unwrap();
        assert!(
            src(&[("AWS_SHARED_CREDENTIALS_FILE", other)]).starts_with("EC2 instance metadata")
        );
        let e = chain(&[
            ("AWS_SHARED_CREDENTIALS_FILE", other),
            ("AWS_PROFILE", "prod"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("no such profile"), "{e}");
        let e = chain(&[
            ("AWS_SHARED_CREDENTIALS_FILE", file),
            ("AWS_PROFILE", "sso"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("`sso_session` is not supported"),
            "{e}"
        );

        // Configuration mistakes say what to fix.
        let e = chain(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_ROLE_ARN"), "{e}");
        let e = chain(&[("AWS_ACCESS_KEY_ID", "AKIA")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let e = chain(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://evil.example.com/creds",
        )])
        .unwrap_err()
        .to_string();
        assert!(e.contains("use https"), "{e}");
        let e = chain(&[("AWS_EC2_METADATA_DISABLED", "true")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no AWS credentials") && e.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
            "{e}"
        );
        assert!(
            e.contains("SSO, profiles that assume a role and credential_process are not supported"),
            "{e}"
        );
        let e = chain(&[("AWS_SECRET_ACCESS_KEY", "hunter2")])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let shown = format!("{:?}", chain(&keys).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn sts_endpoints() {
        assert_eq!(
            sts_endpoint("eu-west-1", None),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint("eu-west-1", Some("regional")),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint("eu-west-1", Some("legacy")),
            "https://sts.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint("af-south-1", Some("legacy")),
            "https://sts.af-south-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint("cn-north-1", None),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        let region_env = chain(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_REGION", "us-west-2"),
        ])
        .unwrap()
        .source();
        assert!(
            region_env.contains("https://sts.us-west-2.amazonaws.com"),
            "{region_env}"
        );
    }
}
