//! The small HTTP/1.1 client every HTTP sink uses: hyper 1 over tokio, TLS through [`crate::tls`], a whole-request
//! timeout, Basic or bearer authentication and custom headers (all sent as sensitive header values), one kept-alive
//! connection reused while it is fresh, `Retry-After` as seconds or an HTTP-date, and the status classification
//! the sinks share ([`classify`]).
//!
//! A connection idle for more than [`REUSE_IDLE`] is not reused: servers close idle connections (ClickHouse after
//! 3 s by default) and a request written into a connection the server is closing fails in a way that cannot tell
//! whether it was processed. Every failure is reported, never retried here.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, USER_AGENT};
use hyper::http::{HeaderMap, HeaderValue, Method};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{Error, Secret};

/// How long a kept-alive connection may sit idle and still be reused.
pub const REUSE_IDLE: Duration = Duration::from_secs(2);

/// How to reach an HTTP target.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The longest one request may take, connecting and reading the whole answer included.
    pub timeout: Duration,
    /// A PEM file of CA certificates trusted in addition to the system's (self-signed servers).
    pub extra_ca: Option<PathBuf>,
    /// Credentials sent with every request.
    pub auth: Auth,
    /// Headers sent with every request (`X-API-Key: ...`); their values are treated as secrets.
    pub headers: Vec<(String, Secret)>,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_secs(30),
            extra_ca: None,
            auth: Auth::None,
            headers: Vec::new(),
        }
    }
}

/// Credentials for the `Authorization` header.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// None.
    #[default]
    None,
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `Bearer <token>`.
    Bearer(Secret),
    /// The whole header value, for schemes such as Splunk's `Splunk <token>` or Elasticsearch's `ApiKey <key>`.
    Raw(Secret),
}

/// A request relative to the client's base URL.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// Path and query, appended to the base URL's path (`/_bulk`, `/?query=...`).
    pub path: String,
    /// Headers besides Host, User-Agent, Content-Length and the client's own.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The most of the answer's body that is read; a longer one is an error.
    pub max_response: usize,
}

impl Request {
    /// A request without body; answers up to 16 MiB.
    pub fn new(method: Method, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            max_response: 16 << 20,
        }
    }

    /// Adds a header (a value that is not a valid header value is a bug of the caller: it panics).
    pub fn header(mut self, name: impl TryInto<HeaderName>, value: &str) -> Request {
        let name = name.try_into().ok().expect("a valid header name");
        self.headers.append(
            name,
            HeaderValue::from_str(value).expect("a valid header value"),
        );
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, body: impl Into<Bytes>, content_type: &str) -> Request {
        self.body = body.into();
        self.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("a valid content type"),
        );
        self
    }
}

/// An answer, its body read whole.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The `Retry-After` header, as seconds or an HTTP-date.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()))
    }

    /// The body as text, at most `n` characters.
    pub fn text(&self, n: usize) -> String {
        crate::shorten(&String::from_utf8_lossy(&self.body), n)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a status means for the request that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: done.
    Success,
    /// 408, 425, 429, 5xx: the server could not take it now. Also 401, 403 and 407: credentials are
    /// configuration, not data, so the data waits until the configuration is fixed instead of being
    /// dead-lettered.
    Retry,
    /// Any other status: the server refuses this request for what it is.
    Dead,
}

/// The shared classification of a status.
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        401 | 403 | 407 | 408 | 425 | 429 | 500..=599 => Class::Retry,
        _ => Class::Dead,
    }
}

/// `Retry-After` as delay seconds or an HTTP-date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) relative to
/// `now`; a date in the past is no delay. `None` when it is neither.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let d = when.duration_since(now);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

/// An HTTP client for one base URL.
pub struct HttpClient {
    target: String,
    host: String,
    port: u16,
    authority: HeaderValue,
    base_path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    headers: HeaderMap,
    timeout: Duration,
    idle: Mutex<Option<(SendRequest<Full<Bytes>>, Instant)>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `url` (`http://` or `https://`, with an optional base path). Credentials go in `cfg`, never
    /// in the URL.
    pub fn new(url: &str, cfg: &HttpConfig) -> Result<HttpClient, Error> {
        let shown = redact_url(url);
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| Error::Config(format!("`{shown}` is not a URL")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(Error::Config(format!(
                    "`{shown}`: the URL must start with https:// or http://"
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| Error::Config(format!("`{shown}` names no host")))?;
        if authority.as_str().contains('@') {
            return Err(Error::Config(format!(
                "`{shown}`: put credentials in the sink's user/password or token settings, not in the URL"
            )));
        }
        if uri.query().is_some() {
            return Err(Error::Config(format!(
                "`{shown}`: the URL may not have a query"
            )));
        }
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| Error::Config(format!("`{host}` is not a valid TLS server name")))?;
            let config = crate::tls::client_config(cfg.extra_ca.as_deref(), &[b"http/1.1"])?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        let mut headers = HeaderMap::new();
        let auth = match &cfg.auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()))
            )),
            Auth::Bearer(token) => Some(format!("Bearer {}", token.expose())),
            Auth::Raw(value) => Some(value.expose().to_string()),
        };
        if let Some(auth) = auth {
            headers.insert(AUTHORIZATION, sensitive(&auth, "Authorization")?);
        }
        for (name, value) in &cfg.headers {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|_| Error::Config(format!("`{name}` is not a valid header name")))?;
            headers.append(header, sensitive(value.expose(), name)?);
        }
        headers.insert(USER_AGENT, HeaderValue::from_static("kubetrail"));
        Ok(HttpClient {
            target: format!("{}://{}", if https { "https" } else { "http" }, authority),
            host,
            port,
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|_| Error::Config(format!("`{shown}`: invalid host")))?,
            base_path: uri.path().trim_end_matches('/').to_string(),
            tls,
            headers,
            timeout: cfg.timeout,
            idle: Mutex::new(None),
        })
    }

    /// `scheme://host:port` of the target, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The Host header sent: the URL's `host[:port]`.
    pub fn authority(&self) -> &str {
        self.authority.to_str().unwrap_or("")
    }

    /// The URL's path without a trailing `/` (empty for none).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Sends one request and reads the whole answer. `Err` is a transport failure (connect, TLS, timeout,
    /// broken connection, answer too long), with the reason.
    pub async fn send(&self, req: Request) -> Result<Response, String> {
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{}: no answer within {:?}",
                self.target, self.timeout
            )),
        }
    }

    async fn exchange(&self, req: Request) -> Result<Response, String> {
        let cached = self
            .idle
            .lock()
            .expect("not poisoned")
            .take()
            .filter(|(s, at)| at.elapsed() < REUSE_IDLE && s.is_ready());
        let mut sender = match cached {
            Some((s, _)) => s,
            None => self.connect().await?,
        };
        let mut http = hyper::Request::builder()
            .method(req.method)
            .uri(format!("{}{}", self.base_path, req.path))
            .body(Full::new(req.body.clone()))
            .map_err(|e| format!("invalid request: {e}"))?;
        let h = http.headers_mut();
        h.insert(HOST, self.authority.clone());
        h.insert(CONTENT_LENGTH, HeaderValue::from(req.body.len()));
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in req.headers {
            if let Some(name) = name {
                h.insert(name, value);
            }
        }
        let resp = sender
            .send_request(http)
            .await
            .map_err(|e| format!("{}: request failed: {e}", self.target))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), req.max_response)
            .collect()
            .await
            .map_err(|e| format!("{}: failed to read the answer: {e}", self.target))?
            .to_bytes();
        let close = headers
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !close {
            *self.idle.lock().expect("not poisoned") = Some((sender, Instant::now()));
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("{}: cannot connect: {e}", self.target))?;
        tcp.set_nodelay(true).ok();
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("{}: TLS handshake failed: {e}", self.target))?;
                self.handshake(TokioIo::new(stream)).await
            }
            None => self.handshake(TokioIo::new(tcp)).await,
        }
    }

    async fn handshake<S>(&self, io: TokioIo<S>) -> Result<SendRequest<Full<Bytes>>, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("{}: HTTP handshake failed: {e}", self.target))?;
        tokio::spawn(async move { conn.await.ok() });
        Ok(sender)
    }
}

fn sensitive(value: &str, name: &str) -> Result<HeaderValue, Error> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::Config(format!(
            "the value of header `{name}` is not a valid header value"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`), as SigV4 and query
/// strings need it.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]/…` of a URL: without user info, path or query, which may carry credentials.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            let more = rest.len() > host.len();
            format!("{scheme}://{host}{}", if more { "/…" } else { "" })
        }
        None => "(invalid URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_dates() {
        let now: jiff::Timestamp = "1994-11-06T08:49:00Z".parse().unwrap();
        let check = |v: &str, want: Option<u64>| {
            assert_eq!(
                parse_retry_after(v, now),
                want.map(Duration::from_secs),
                "{v}"
            )
        };
        check("120", Some(120));
        check(" 0 ", Some(0));
        check("Sun, 06 Nov 1994 08:49:37 GMT", Some(37));
        check("Sun, 06 Nov 1994 08:48:37 GMT", Some(0));
        check("soon", None);
        check("-5", None);
    }

    #[test]
    fn statuses_are_classified() {
        for (s, c) in [
            (200, Class::Success),
            (204, Class::Success),
            (400, Class::Dead),
            (404, Class::Dead),
            (413, Class::Dead),
            (401, Class::Retry),
            (403, Class::Retry),
            (408, Class::Retry),
            (425, Class::Retry),
            (429, Class::Retry),
            (500, Class::Retry),
            (503, Class::Retry),
        ] {
            assert_eq!(classify(s), c, "{s}");
        }
    }

    #[test]
    fn urls_are_checked_and_never_echo_credentials() {
        let cfg = HttpConfig::default();
        let e = HttpClient::new("https://u:hunter2@example.com/x", &cfg).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(HttpClient::new("ftp://example.com", &cfg).is_err());
        assert!(HttpClient::new("http://example.com/a?b=c", &cfg).is_err());
        let c = HttpClient::new("http://example.com:8123/base/", &cfg).unwrap();
        assert_eq!(c.target(), "http://example.com:8123");
        assert_eq!(c.base_path, "/base");
        assert_eq!(redact_url("https://u:p@h:1/x?t=1"), "https://h:1/…");
    }

    #[test]
    fn debug_shows_no_credentials() {
        let cfg = HttpConfig {
            auth: Auth::Basic {
                user: "admin".into(),
                password: Secret::new("hunter2"),
            },
            headers: vec![("X-Key".into(), Secret::new("s3cr3t"))],
            ..HttpConfig::default()
        };
        let c = HttpClient::new("http://example.com", &cfg).unwrap();
        let shown = format!("{cfg:?} {c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
