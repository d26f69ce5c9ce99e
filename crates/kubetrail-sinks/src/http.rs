//! The one outgoing HTTP/1.1 client (sinks, the S3 credential chain, `kubetrail gen --post`): hyper 1 over
//! tokio, TLS through [`crate::tls`] (system CAs plus an extra CA file, optionally a client certificate), a
//! whole-request timeout, Basic or bearer authentication and custom headers (all sent as sensitive header
//! values), HTTP proxies, one kept-alive connection reused while it is fresh, `Retry-After` as seconds or an
//! HTTP-date, and the status classification the sinks share ([`classify`]).
//!
//! A connection idle for more than [`HttpConfig::reuse_idle`] ([`REUSE_IDLE`] by default) is not reused: servers
//! close idle connections (ClickHouse after 3 s by default) and a request written into a connection the server
//! is closing fails in a way that cannot tell whether it was processed. Every failure is reported, never retried
//! here. A client holds one connection: concurrent streams of requests use one client each ([`Clone`] gives a
//! client with the same settings and a connection of its own).
//!
//! Proxies ([`Proxy`], from the environment by default), as curl reads them: `https_proxy` or `HTTPS_PROXY`
//! for https:// targets, `http_proxy` or `HTTP_PROXY` for http:// ones (the lowercase one wins; empty is
//! unset; no `ALL_PROXY`), read when the client is made. `no_proxy`/`NO_PROXY` lists the targets reached
//! directly ([`no_proxy_matches`]: `*`, domains with or without a leading dot, IP addresses, CIDR blocks, an
//! optional `:port`). As with curl, loopback is not exempt by itself: list `localhost,127.0.0.1` in
//! `NO_PROXY` if a proxy is set. A proxy is `http://[user:password@]host[:port]` (port 80 if none: curl
//! assumes 1080); an `https://` proxy is a configuration error naming the variable. An https:// target is
//! reached through a `CONNECT host:port` tunnel (TLS end to end with the target), an http:// one by sending
//! the request to the proxy in absolute form; the proxy's credentials go in `Proxy-Authorization: Basic`,
//! never in a message, which names the proxy as `http://host:port`. A proxy's refusal (407 included) is a
//! transport error, so the request is retried later.

mod proxy;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, PROXY_AUTHORIZATION, USER_AGENT,
};
use hyper::http::{HeaderMap, HeaderValue, Method};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use self::proxy::ProxyRoute;
pub use self::proxy::{Proxy, ProxyEnv, no_proxy_matches};
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
    /// A client certificate for https:// targets that ask for one (mutual TLS): its PEM chain, leaf first,
    /// and its PEM private key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The proxy, from the environment by default (see the module doc).
    pub proxy: Proxy,
    /// How long a kept-alive connection may sit idle and still be reused ([`REUSE_IDLE`]). Only for servers
    /// known to keep idle connections longer, such as a load test's target.
    pub reuse_idle: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_secs(30),
            extra_ca: None,
            auth: Auth::None,
            headers: Vec::new(),
            client_cert: None,
            proxy: Proxy::FromEnv,
            reuse_idle: REUSE_IDLE,
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
    /// The most of the answer's body that is read; a longer one is an error, unless `truncate_response`.
    pub max_response: usize,
    /// Keep the first `max_response` bytes of a longer answer instead of failing (the status is what counts;
    /// the connection is then not reused).
    pub truncate_response: bool,
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
            truncate_response: false,
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
    reuse_idle: Duration,
    proxy: Option<ProxyRoute>,
    idle: Mutex<Option<(SendRequest<Full<Bytes>>, Instant)>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .field("proxy", &self.proxy.as_ref().map(|p| &p.shown))
            .finish_non_exhaustive()
    }
}

/// The same settings (TLS configuration shared), a connection of its own: one client per concurrent stream of
/// requests.
impl Clone for HttpClient {
    fn clone(&self) -> HttpClient {
        HttpClient {
            target: self.target.clone(),
            host: self.host.clone(),
            port: self.port,
            authority: self.authority.clone(),
            base_path: self.base_path.clone(),
            tls: self.tls.clone(),
            headers: self.headers.clone(),
            timeout: self.timeout,
            reuse_idle: self.reuse_idle,
            proxy: self.proxy.clone(),
            idle: Mutex::new(None),
        }
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
            let config = crate::tls::client_config_with_cert(
                cfg.extra_ca.as_deref(),
                cfg.client_cert
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path())),
                &[b"http/1.1"],
            )?;
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
        let proxy = cfg.proxy.route(https, &host, port)?;
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
            reuse_idle: cfg.reuse_idle,
            proxy,
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

    /// The proxy requests go through, as `http://host:port` (never with credentials).
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_ref().map(|p| p.shown.as_str())
    }

    /// Opens the connection the next [`send`](HttpClient::send) will use, unless the kept-alive one may be
    /// reused: for a caller that times requests without the connection set-up. Within the client's timeout;
    /// `Err` as from `send`.
    pub async fn ready(&self) -> Result<(), String> {
        let open = async {
            let sender = self.reuse_or_connect().await?;
            *self.idle.lock().expect("not poisoned") = Some((sender, Instant::now()));
            Ok(())
        };
        match tokio::time::timeout(self.timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{}: no connection within {:?}",
                self.target, self.timeout
            )),
        }
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

    /// The kept-alive connection if it is fresh and still open, else a new one.
    async fn reuse_or_connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let cached = self
            .idle
            .lock()
            .expect("not poisoned")
            .take()
            .filter(|(_, at)| at.elapsed() < self.reuse_idle);
        if let Some((mut sender, _)) = cached {
            // Resolves at once on an idle connection, with an error on a closed one (`is_ready` may still be
            // false just after an answer while the connection's task has not run).
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        self.connect().await
    }

    async fn exchange(&self, req: Request) -> Result<Response, String> {
        let mut sender = self.reuse_or_connect().await?;
        let path = format!("{}{}", self.base_path, req.path);
        // Through a proxy, an http:// request names its whole URL (absolute form).
        let uri = match (&self.proxy, &self.tls) {
            (Some(_), None) => {
                format!(
                    "{}{}",
                    self.target,
                    if path.starts_with('/') { "" } else { "/" }
                ) + &path
            }
            _ => path,
        };
        let mut http = hyper::Request::builder()
            .method(req.method)
            .uri(uri)
            .body(Full::new(req.body.clone()))
            .map_err(|e| format!("invalid request: {e}"))?;
        let h = http.headers_mut();
        h.insert(HOST, self.authority.clone());
        h.insert(CONTENT_LENGTH, HeaderValue::from(req.body.len()));
        if let (Some(proxy), None) = (&self.proxy, &self.tls)
            && let Some(auth) = &proxy.auth
        {
            h.insert(PROXY_AUTHORIZATION, auth.clone());
        }
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
            .map_err(|e| format!("{}: request failed: {}", self.target, with_sources(&e)))?;
        let status = resp.status().as_u16();
        // Only a proxy answers 407; through a tunnel the answer is the target's.
        if status == 407
            && let (Some(proxy), None) = (&self.proxy, &self.tls)
        {
            return Err(format!(
                "{}: the proxy {} answered 407 Proxy Authentication Required",
                self.target, proxy.shown
            ));
        }
        let headers = resp.headers().clone();
        let read_failed = |e: &(dyn std::error::Error + 'static)| {
            format!(
                "{}: failed to read the answer: {}",
                self.target,
                with_sources(e)
            )
        };
        let (body, complete) = if req.truncate_response {
            read_prefix(resp.into_body(), req.max_response)
                .await
                .map_err(|e| read_failed(&e))?
        } else {
            let body = Limited::new(resp.into_body(), req.max_response)
                .collect()
                .await
                .map_err(|e| read_failed(&*e))?
                .to_bytes();
            (body, true)
        };
        let close = !complete
            || headers
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
        let tcp = match &self.proxy {
            None => TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("{}: failed to connect: {e}", self.target))?,
            Some(proxy) => TcpStream::connect((proxy.host.as_str(), proxy.port))
                .await
                .map_err(|e| {
                    format!(
                        "{}: failed to connect to the proxy {}: {e}",
                        self.target, proxy.shown
                    )
                })?,
        };
        tcp.set_nodelay(true).ok();
        let tcp = match (&self.proxy, &self.tls) {
            (Some(proxy), Some(_)) => self.tunnel(tcp, proxy).await?,
            _ => tcp,
        };
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

    /// `CONNECT host:port` through the proxy; the stream then carries the TLS connection to the target.
    async fn tunnel(&self, mut tcp: TcpStream, proxy: &ProxyRoute) -> Result<TcpStream, String> {
        let to = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let failed = |why: String| {
            format!(
                "{}: the proxy {} did not open a tunnel to {to}: {why}",
                self.target, proxy.shown
            )
        };
        let mut head = format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n").into_bytes();
        if let Some(auth) = &proxy.auth {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(auth.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        tcp.write_all(&head)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // The answer's head; nothing may follow a 2xx before the client's TLS hello.
        let mut answer = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        let end = loop {
            if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if answer.len() > 16 * 1024 {
                return Err(failed("its answer's head is longer than 16 KiB".into()));
            }
            match tcp.read(&mut chunk).await {
                Ok(0) => return Err(failed("it closed the connection".into())),
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(failed(e.to_string())),
            }
        };
        let status_line = String::from_utf8_lossy(&answer[..end]);
        let status_line = status_line.lines().next().unwrap_or("").trim();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(200..=299) if version.starts_with("HTTP/1.") => {
                if end < answer.len() {
                    return Err(failed("it sent data after its answer".into()));
                }
                Ok(tcp)
            }
            Some(code) => Err(failed(format!(
                "it answered {code} {}",
                crate::shorten(parts.next().unwrap_or(""), 80)
            ))),
            None => Err(failed(format!(
                "it answered `{}`, not HTTP",
                crate::shorten(status_line, 80)
            ))),
        }
    }

    async fn handshake<S>(&self, io: TokioIo<S>) -> Result<SendRequest<Full<Bytes>>, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| {
                format!(
                    "{}: HTTP handshake failed: {}",
                    self.target,
                    with_sources(&e)
                )
            })?;
        tokio::spawn(async move { conn.await.ok() });
        Ok(sender)
    }
}

/// `error: its source: its source's source`: hyper's own Display names only the outermost.
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s = s.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = source.and_then(|e| e.source());
    }
    out
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

/// At most `max` bytes of `body`, and whether that was all of it (the rest is never read).
async fn read_prefix(
    mut body: hyper::body::Incoming,
    max: usize,
) -> Result<(Bytes, bool), hyper::Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let room = max - buf.len();
            if data.len() > room {
                buf.extend_from_slice(&data[..room]);
                return Ok((buf.freeze(), false));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((buf.freeze(), true))
}

/// `scheme://host[:port]/…` of a URL: without user info, path or query, which may carry credentials.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let more = rest.len() > authority.len();
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
        assert_eq!(redact_url("http://u:p@h:1"), "http://h:1");
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
