//! The handlers: the audit webhook and the health, readiness and metrics endpoints.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_server::tls::TlsInfo;
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::auth::{Denied, Principal};
use crate::metrics::{Metrics, Reason};
use crate::session::{CSRF_HEADER, same_token};
use crate::throttle::Throttle;
use crate::{Ingest, Peer, Rejected, Role, ServerConfig};

/// Webhook bodies held in memory at once (each up to `max_body_bytes` plus `max_decompressed_bytes`);
/// beyond, the sender is told to retry (429). The apiserver sends a few batches at a time.
const BODIES_IN_FLIGHT: usize = 16;
/// A body must arrive within this time once the headers did.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// An API request's body (parameters, a note) must arrive within this time, and hold at most
/// [`API_BODY_BYTES`]: a client that sends a `Content-Length` and then nothing holds no connection for long.
const API_BODY_TIMEOUT: Duration = Duration::from_secs(10);
const API_BODY_BYTES: usize = 1 << 20;
/// Retry-After when too many bodies are in flight.
const BUSY_RETRY_AFTER_SECS: u32 = 1;
/// The pipeline's Malformed message is cut to this many characters (it must not quote bodies anyway).
const MAX_ERROR_CHARS: usize = 300;

#[derive(Debug)]
pub(crate) struct AppState<I> {
    ingest: Arc<I>,
    /// Identities, names, sessions and certificate, replaceable while serving.
    pub(crate) live: crate::Live,
    max_body_bytes: usize,
    max_decompressed_bytes: usize,
    bodies: Arc<Semaphore>,
    pub(crate) metrics: Arc<Metrics>,
    /// The server's metrics and the pipeline's, encoded by `GET /metrics`.
    registry: Registry,
    throttle: Throttle,
    metrics_public: bool,
}

/// Why a request has no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Denied(Denied),
    /// Too many wrong tokens from the address: retry after this many seconds.
    Throttled(u32),
}

impl<I: Ingest> AppState<I> {
    pub(crate) fn new(cfg: &ServerConfig, live: crate::Live, ingest: Arc<I>) -> Self {
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        live.register(&mut registry);
        ingest.register_metrics(&mut registry);
        Self {
            ingest,
            live,
            max_body_bytes: cfg.max_body_bytes,
            max_decompressed_bytes: cfg.max_decompressed_bytes,
            bodies: Arc::new(Semaphore::new(BODIES_IN_FLIGHT)),
            metrics,
            registry,
            throttle: Throttle::default(),
            metrics_public: cfg.metrics_public,
        }
    }

    /// The request's caller (`Ok(None)` when no authentication is configured). A wrong token counts against
    /// the address; past its count, wrong tokens are answered 429 (never a right one: whoever shares the
    /// address cannot lock the apiserver or an analyst out).
    pub(crate) fn identify(
        &self,
        addr: SocketAddr,
        headers: &HeaderMap,
        tls: Option<&Arc<TlsInfo>>,
    ) -> Result<Option<Principal>, Refused> {
        self.live
            .auth()
            .authenticate(headers, tls)
            .map_err(|denied| self.failed(addr, denied))
    }

    /// What a failed authentication from `addr` is answered: 429 once the address is over its count of
    /// wrong tokens.
    pub(crate) fn failed(&self, addr: SocketAddr, denied: Denied) -> Refused {
        if denied != Denied::Wrong {
            return Refused::Denied(denied);
        }
        let blocked = self.throttle.blocked(addr.ip());
        self.throttle.failed(addr.ip());
        match blocked {
            Some(secs) => Refused::Throttled(secs),
            None => Refused::Denied(denied),
        }
    }

    /// The answer to a request without a caller.
    pub(crate) fn refused(&self, addr: SocketAddr, refused: Refused) -> Response {
        match refused {
            Refused::Denied(denied) => self.unauthorized(addr, denied),
            Refused::Throttled(secs) => {
                let peer = Peer {
                    addr,
                    identity: None,
                    role: None,
                };
                let response = self.reject(
                    &peer,
                    Reason::Throttled,
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed authentications from this address: retry later",
                );
                with_retry_after(response, secs)
            }
        }
    }

    /// Counts, logs (one line, never the body) and answers a refused request.
    fn reject(&self, peer: &Peer, reason: Reason, status: StatusCode, message: &str) -> Response {
        self.metrics.rejected(reason);
        tracing::warn!(
            peer = %peer.addr,
            identity = peer.identity.as_deref().unwrap_or("-"),
            reason = reason.as_str(),
            status = status.as_u16(),
            "request rejected: {message}"
        );
        error(status, message)
    }

    fn unauthorized(&self, addr: SocketAddr, denied: Denied) -> Response {
        let message = match denied {
            Denied::Missing => {
                "authentication required: present a client certificate or a bearer token"
            }
            Denied::Wrong => "the bearer token is not accepted",
            Denied::UnknownCertificate => {
                "the client certificate's common name is not the client_cert_cn of any identity"
            }
        };
        let peer = Peer {
            addr,
            identity: None,
            role: None,
        };
        let mut response = self.reject(
            &peer,
            Reason::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            message,
        );
        if self.live.auth().has_tokens() {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kubetrail\""),
            );
        }
        response
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn with_retry_after(mut response: Response, secs: u32) -> Response {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The TCP peer (`0.0.0.0:0` when the router runs without a socket: never loopback, so never trusted).
pub(crate) fn peer_addr(extensions: &Extensions) -> SocketAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// Whether the body is declared as something JSON-shaped (or not declared at all).
fn acceptable_media_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    [
        "application/json",
        "application/x-ndjson",
        "application/jsonl",
        "text/plain",
        "",
    ]
    .iter()
    .any(|m| essence.eq_ignore_ascii_case(m))
}

/// `Ok(true)` for a gzip body, `Ok(false)` for an identity one, `Err` for any other coding.
fn gzip_encoded(headers: &HeaderMap) -> Result<bool, ()> {
    let mut gzip = false;
    for value in headers.get_all(CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| ())?;
        for coding in value.split(',').map(str::trim) {
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                if gzip {
                    return Err(()); // gzip twice: not something an apiserver sends
                }
                gzip = true;
            } else if !(coding.is_empty() || coding.eq_ignore_ascii_case("identity")) {
                return Err(());
            }
        }
    }
    Ok(gzip)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

enum Gunzip {
    Bomb,
    Corrupt,
}

/// Decompresses every gzip member, stopping one byte past `limit`: a bomb costs at most `limit` bytes.
fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, Gunzip> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
    let decoder = flate2::read::MultiGzDecoder::new(data);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Gunzip::Corrupt)?;
    if out.len() > limit {
        return Err(Gunzip::Bomb);
    }
    Ok(out)
}

/// `POST /k8s-audit` and `POST /api/v1/audit`.
pub(crate) async fn webhook<I: Ingest>(
    State(st): State<Arc<AppState<I>>>,
    req: Request,
) -> Response {
    let _in_flight = st.metrics.in_flight();
    let (parts, body) = req.into_parts();
    let addr = peer_addr(&parts.extensions);
    let caller = match st.identify(addr, &parts.headers, parts.extensions.get::<Arc<TlsInfo>>()) {
        Ok(caller) => caller,
        Err(refused) => return st.refused(addr, refused),
    };
    let peer = Peer::from_caller(addr, caller);
    if !peer.may(Role::Ingest) {
        st.metrics.rejected(Reason::Forbidden);
        return refuse_role(Some(&peer), Role::Ingest, &parts.method, parts.uri.path());
    }
    if !acceptable_media_type(&parts.headers) {
        return st.reject(
            &peer,
            Reason::UnsupportedMediaType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Type: send application/json, application/x-ndjson or text/plain",
        );
    }
    let Ok(gzip) = gzip_encoded(&parts.headers) else {
        return st.reject(
            &peer,
            Reason::UnsupportedMediaType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Encoding: send the body plain or gzip",
        );
    };
    let too_large = format!("the body exceeds {} bytes", st.max_body_bytes);
    if declared_length(&parts.headers).is_some_and(|n| n > st.max_body_bytes as u64) {
        return st.reject(
            &peer,
            Reason::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            &too_large,
        );
    }
    // Held until the pipeline answered: the body stays in memory until then.
    let Ok(permit) = st.bodies.clone().try_acquire_owned() else {
        let response = st.reject(
            &peer,
            Reason::Overloaded,
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight: retry later",
        );
        return with_retry_after(response, BUSY_RETRY_AFTER_SECS);
    };
    let wire = match read_body(body, st.max_body_bytes).await {
        Ok(wire) => wire,
        Err(ReadError::TooLarge) => {
            return st.reject(
                &peer,
                Reason::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                &too_large,
            );
        }
        Err(ReadError::Timeout) => {
            return st.reject(
                &peer,
                Reason::Timeout,
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            );
        }
        Err(ReadError::Io) => {
            return st.reject(
                &peer,
                Reason::ReadError,
                StatusCode::BAD_REQUEST,
                "failed to read the body",
            );
        }
    };
    let wire_len = wire.len();
    let body = if gzip {
        let limit = st.max_decompressed_bytes;
        // Inflating up to 64 MiB is CPU work: keep it off the executor.
        match tokio::task::spawn_blocking(move || gunzip(&wire, limit)).await {
            Ok(Ok(plain)) => Bytes::from(plain),
            Ok(Err(Gunzip::Bomb)) => {
                let message = format!("the body decompresses to more than {limit} bytes");
                return st.reject(
                    &peer,
                    Reason::GzipBomb,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &message,
                );
            }
            Ok(Err(Gunzip::Corrupt)) => {
                return st.reject(
                    &peer,
                    Reason::BadGzip,
                    StatusCode::BAD_REQUEST,
                    "the body is not valid gzip",
                );
            }
            Err(e) => {
                tracing::error!(peer = %peer.addr, "gzip decompression failed: {e}");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        }
    } else {
        wire
    };
    st.metrics.body(wire_len, body.len());
    // The pipeline's work runs to its end even if the sender hangs up: an answer nobody reads is harmless
    // (the retry is deduplicated), a write abandoned halfway would not be.
    let ingest = st.ingest.clone();
    let sender = peer.clone();
    let outcome = tokio::spawn(async move {
        let outcome = ingest.ingest(body, sender).await;
        drop(permit);
        outcome
    })
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(peer = %peer.addr, "the pipeline failed on a request: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    match outcome {
        Ok(accepted) => {
            st.metrics.accepted(&accepted);
            let answer = serde_json::json!({
                "accepted": accepted.events,
                "duplicates": accepted.duplicates,
                "skipped": accepted.skipped,
            });
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(Rejected::Malformed(message)) => {
            let message: String = message.chars().take(MAX_ERROR_CHARS).collect();
            st.reject(&peer, Reason::Malformed, StatusCode::BAD_REQUEST, &message)
        }
        Err(Rejected::Overloaded { retry_after_secs }) => {
            let response = st.reject(
                &peer,
                Reason::Overloaded,
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded: retry later",
            );
            with_retry_after(response, retry_after_secs)
        }
        Err(Rejected::Unavailable {
            retry_after_secs,
            reason,
        }) => {
            let message: String = format!("unavailable: {reason}")
                .chars()
                .take(MAX_ERROR_CHARS)
                .collect();
            let response = st.reject(
                &peer,
                Reason::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                &message,
            );
            with_retry_after(response, retry_after_secs)
        }
    }
}

enum ReadError {
    TooLarge,
    Timeout,
    Io,
}

/// Reads at most `limit` bytes: a larger body is refused as soon as it crosses the limit, unread beyond.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    read_body_within(body, limit, BODY_TIMEOUT).await
}

/// [`read_body`] within `timeout`.
async fn read_body_within(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ReadError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ReadError::Timeout)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Io),
    }
}

/// Middleware over the caller's API routes: authenticated like the webhook (401 otherwise), at least the
/// `reader` role (403 otherwise: an `ingest` identity reads nothing), the caller handed to the handler as a
/// [`Peer`] extension and every call logged with who made it (a query of the audit trail is itself worth an
/// audit line).
pub(crate) async fn api_guard<I: Ingest>(
    State(st): State<Arc<AppState<I>>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let addr = peer_addr(req.extensions());
    let headers = req.headers();
    let changes = !matches!(req.method(), &Method::GET | &Method::HEAD);
    let page = req.method() == Method::GET && !req.uri().path().starts_with("/api/");
    let by_header = headers.contains_key(AUTHORIZATION);
    let (caller, csrf) = match st.identify(addr, headers, req.extensions().get::<Arc<TlsInfo>>()) {
        // A bearer token in a header cannot be sent by another site's page; a client certificate or an
        // installation without authentication can, so their state changes must come from this origin.
        Ok(caller) => {
            if changes && !by_header && st.live.hosts().cross_site(headers) {
                return forbidden(addr, "a change from another site's page is refused");
            }
            (caller, st.live.sessions().open_csrf.clone())
        }
        Err(Refused::Denied(Denied::Missing)) => match st.live.session(headers) {
            Some(session) => {
                if changes {
                    let echoed = headers
                        .get(CSRF_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if st.live.hosts().cross_site(headers) || !same_token(echoed, &session.csrf) {
                        return forbidden(
                            addr,
                            "a change made with the session cookie must carry its X-CSRF-Token",
                        );
                    }
                }
                (session.caller, session.csrf)
            }
            None if page => return to_login(&req),
            None => return st.unauthorized(addr, Denied::Missing),
        },
        Err(refused) => return st.refused(addr, refused),
    };
    let peer = Peer::from_caller(addr, caller);
    if !peer.may(Role::Reader) {
        return refuse_role(Some(&peer), Role::Reader, req.method(), req.uri().path());
    }
    // The body is read here, bounded in size and time, before any handler waits on it.
    if changes {
        let (parts, body) = req.into_parts();
        let bytes = match read_body_within(body, API_BODY_BYTES, API_BODY_TIMEOUT).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                let m = format!("the body exceeds {API_BODY_BYTES} bytes");
                return error(StatusCode::PAYLOAD_TOO_LARGE, &m);
            }
            Err(ReadError::Timeout) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time",
                );
            }
            Err(ReadError::Io) => return error(StatusCode::BAD_REQUEST, "failed to read the body"),
        };
        req = Request::from_parts(parts, Body::from(bytes));
    }
    let path = req.uri().path().to_string();
    req.extensions_mut().insert(peer.clone());
    req.extensions_mut().insert(Csrf(csrf));
    let response = next.run(req).await;
    if !page {
        tracing::info!(
            peer = %peer.addr,
            identity = peer.identity.as_deref().unwrap_or("-"),
            path,
            status = response.status().as_u16(),
            "api request"
        );
    }
    response
}

/// 403 for a caller whose role does not grant `needed`, naming the role the call needs.
pub(crate) fn refuse_role(
    peer: Option<&Peer>,
    needed: Role,
    method: &Method,
    path: &str,
) -> Response {
    let who = match peer {
        Some(Peer {
            identity: Some(name),
            role: Some(role),
            ..
        }) if *role == Role::Ingest => {
            format!("`{name}` has the ingest role, which may only send events")
        }
        Some(Peer {
            identity: Some(name),
            role: Some(role),
            ..
        }) => format!("`{name}` has the {role} role"),
        _ => "the caller has no role".to_string(),
    };
    let message = format!("{method} {path} needs the {needed} role; {who}");
    tracing::warn!(
        peer = %peer.map(|p| p.addr).unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
        identity = peer.and_then(|p| p.identity.as_deref()).unwrap_or("-"),
        needed = needed.as_str(),
        "request refused: {message}"
    );
    let mut response = error(StatusCode::FORBIDDEN, &message);
    if let Ok(v) = HeaderValue::from_str(needed.as_str()) {
        response.headers_mut().insert("x-kubetrail-needs-role", v);
    }
    response
}

/// Refuses (421) a request whose `Host` names no name of this server: a DNS-rebinding page's.
pub(crate) async fn host_guard<I: Ingest>(
    State(st): State<Arc<AppState<I>>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if st.live.hosts().misdirected(req.headers()) {
        let addr = peer_addr(req.extensions());
        tracing::warn!(peer = %addr, "request refused: its Host is not a name of this server");
        st.metrics.rejected(Reason::Misdirected);
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "the Host header is not a name of this server: reach it by IP address, localhost or a name in \
             `server_names`",
        );
    }
    next.run(req).await
}

/// The CSRF token of the caller's session (or of the installation), for `GET /api/v1/session`.
#[derive(Debug, Clone)]
pub(crate) struct Csrf(pub(crate) String);

fn forbidden(addr: SocketAddr, message: &str) -> Response {
    tracing::warn!(peer = %addr, "request refused: {message}");
    error(StatusCode::FORBIDDEN, message)
}

/// A console page asked for without a session: to the login page, then back.
fn to_login(req: &Request) -> Response {
    let next = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("/login?next={}", crate::login::encode_component(next));
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(axum::http::header::LOCATION, location)
        .body(Body::empty())
        .expect("a valid redirect")
}

/// `GET /api/v1/session`: who the caller is, its role (`admin` when no authentication is configured), the
/// roles that grants, and the CSRF token its state changes must carry.
pub(crate) async fn session_info(req: Request) -> Response {
    let peer = req.extensions().get::<Peer>().cloned();
    let csrf = req.extensions().get::<Csrf>().map(|c| c.0.clone());
    let role = peer.as_ref().and_then(|p| p.role).unwrap_or(Role::Admin);
    let may: Vec<&str> = [Role::Reader, Role::Responder, Role::Admin]
        .into_iter()
        .filter(|r| role.grants(*r))
        .map(Role::as_str)
        .collect();
    Json(serde_json::json!({
        "identity": peer.and_then(|p| p.identity),
        "role": role,
        "may": may,
        "csrf": csrf,
    }))
    .into_response()
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the pipeline can take events.
pub(crate) async fn readyz<I: Ingest>(State(st): State<Arc<AppState<I>>>) -> Response {
    match st.ingest.ready() {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// `GET /metrics`: any identity's credential (any role), or none with `metrics_public`.
pub(crate) async fn metrics<I: Ingest>(
    State(st): State<Arc<AppState<I>>>,
    req: Request,
) -> Response {
    let addr = peer_addr(req.extensions());
    if !st.metrics_public
        && let Err(refused) =
            st.identify(addr, req.headers(), req.extensions().get::<Arc<TlsInfo>>())
    {
        return st.refused(addr, refused);
    }
    (
        [(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&st.registry),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let check = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            acceptable_media_type(&h)
        };
        assert!(acceptable_media_type(&HeaderMap::new()));
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(check("application/x-ndjson"));
        assert!(check("text/plain"));
        assert!(!check("application/xml"));
        assert!(!check("application/json-patch+json"));
    }

    #[test]
    fn encodings() {
        let check = |ce: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_ENCODING, HeaderValue::from_str(ce).unwrap());
            gzip_encoded(&h)
        };
        assert_eq!(gzip_encoded(&HeaderMap::new()), Ok(false));
        assert_eq!(check("identity"), Ok(false));
        assert_eq!(check("gzip"), Ok(true));
        assert_eq!(check("x-gzip"), Ok(true));
        assert_eq!(check("br"), Err(()));
        assert_eq!(check("gzip, gzip"), Err(()));
    }
}
