//! The HTTP(S) listener of `kubetrail serve`: the audit webhook (`POST /k8s-audit`, alias
//! `POST /api/v1/audit`), `GET /healthz`, `GET /readyz`, `GET /metrics`, and the caller's API and console routes
//! behind the same authentication as the webhook; for browsers, the console's login (`/login`, `/logout`: a
//! bearer token traded for a session cookie with a CSRF token) and strict security headers on every answer.
//!
//! It owns the edge of the system: TLS (rustls with the ring provider), who is calling (configured
//! [`Identity`]s: verified client certificates or bearer tokens compared in constant time, wrong tokens
//! throttled per address), what each may do (its [`Role`]: only `ingest` posts events, the API's routes say
//! the role they need with [`needs`]), which names it answers to (DNS rebinding: 421), and the hard limits on
//! what a request may cost (body bytes, decompressed bytes, bodies in flight). It answers the sender with the pipeline's verdict:
//! 2xx only once [`Ingest::ingest`] resolved, which the pipeline does only after the events are durable;
//! 429/503 with `Retry-After` under overload so the apiserver retries.
//!
//! It does not decode events, store them or know what a log is: everything behind the request body is the
//! pipeline's, reached through the [`Ingest`] trait. It never logs or echoes a request body.

mod auth;
mod conns;
mod der;
mod hosts;
mod live;
mod login;
mod metrics;
mod session;
mod throttle;
mod tls;
mod webhook;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

pub use crate::auth::{Identity, Role, client_identity};
pub use crate::conns::PER_ADDRESS;
pub use crate::live::Live;
pub use crate::login::CSP;
pub use crate::session::{CSRF_HEADER, SESSION_TTL};
pub use crate::throttle::{MAX_FAILURES, WINDOW as FAILURE_WINDOW};

/// The pipeline behind the webhook, as the server sees it.
pub trait Ingest: Send + Sync + 'static {
    /// One webhook body (already decompressed): an EventList, a single Event or JSON lines. Resolves when
    /// every accepted event is durable (fsynced); only then may the handler answer 2xx.
    fn ingest(
        &self,
        body: bytes::Bytes,
        peer: Peer,
    ) -> impl Future<Output = Result<Accepted, Rejected>> + Send;
    /// Ok when ready to accept (the log is open and under its disk budget); Err(reason) otherwise.
    fn ready(&self) -> Result<(), String>;
    /// Registers the pipeline's metrics in the server's registry, once, when the router is built: `/metrics`
    /// encodes that one registry as Prometheus text (format 0.0.4: no `info` metrics) (the server's `kubetrail_server_*` series and these). The registry has no
    /// prefix; register clones of the metrics (they share their values) or a
    /// [`Collector`](prometheus_client::collector::Collector).
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The TCP peer address (`0.0.0.0:0` when unknown, e.g. a router driven without a socket).
    pub addr: SocketAddr,
    /// The authenticated identity: the name of the configured [`Identity`] whose token or certificate it
    /// presented, or the subject CN of a verified client certificate that names none (or `sha256:<hex>` of
    /// the certificate when it has no usable CN); `None` when no authentication is configured.
    pub identity: Option<String>,
    /// The identity's role; `None` when no authentication is configured (everything is allowed).
    pub role: Option<Role>,
}

impl Peer {
    pub(crate) fn from_caller(addr: SocketAddr, caller: Option<auth::Principal>) -> Peer {
        match caller {
            Some(p) => Peer {
                addr,
                identity: Some(p.name),
                role: Some(p.role),
            },
            None => Peer {
                addr,
                identity: None,
                role: None,
            },
        }
    }

    /// Whether the caller may do what `needed` may.
    pub fn may(&self, needed: Role) -> bool {
        self.role.is_none_or(|r| r.grants(needed))
    }
}

/// What the pipeline took from one body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Events made durable.
    pub events: usize,
    /// Retries of events already stored (same cluster, auditID, stage and content), acknowledged but not
    /// written again.
    pub duplicates: usize,
    /// Values that were not events (each counted by the pipeline with a reason).
    pub skipped: usize,
}

/// Why the pipeline refused a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The body is not audit events: 400. The message must not quote the body.
    Malformed(String),
    /// Queues are full: 429 with `Retry-After`.
    Overloaded { retry_after_secs: u32 },
    /// The log cannot take events now (disk budget, closed): 503 with `Retry-After`.
    Unavailable {
        retry_after_secs: u32,
        reason: String,
    },
}

/// The files of the TLS listener, PEM encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain, leaf first.
    pub cert: PathBuf,
    /// The server private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that sign client certificates; when set, clients are verified against them.
    pub client_ca: Option<PathBuf>,
}

/// How the listener runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:9443`).
    pub listen: SocketAddr,
    /// TLS; `None` serves plain HTTP (refused off loopback unless `insecure`).
    pub tls: Option<TlsFiles>,
    /// Who may call, and with which role. Identities without a token or certificate name authenticate no
    /// one; a verified client certificate that names no identity is `ingest`.
    pub identities: Vec<Identity>,
    /// Names clients reach this server by, besides IP addresses, `localhost` and (under TLS) the certificate's
    /// names: any other `Host` is refused with 421 (DNS rebinding).
    pub server_names: Vec<String>,
    /// `GET /metrics` without a credential.
    pub metrics_public: bool,
    /// Allow a non-loopback listener without TLS or authentication.
    pub insecure: bool,
    /// Largest request body on the wire (default 64 MiB: kube-apiserver does not cut its batches unless told
    /// to, and one `list` logged at RequestResponse can be tens of MiB; refusing the batch would lose its
    /// neighbours too).
    pub max_body_bytes: usize,
    /// Largest body after gzip decompression (default 64 MiB).
    pub max_decompressed_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9443),
            tls: None,
            identities: Vec::new(),
            server_names: Vec::new(),
            metrics_public: false,
            insecure: false,
            max_body_bytes: 64 << 20,
            max_decompressed_bytes: 64 << 20,
        }
    }
}

/// Errors of configuring or running the listener.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on `{addr}` without {missing}: add {add}, or pass `--insecure` to accept \
         anyone who can reach this address"
    )]
    Unsafe {
        addr: SocketAddr,
        missing: &'static str,
        add: &'static str,
    },
    #[error("the body limits must be above zero (`max_body_bytes` and `max_decompressed_bytes`)")]
    ZeroLimit,
    #[error("failed to read `{path}`: {reason}")]
    ReadPem { path: PathBuf, reason: String },
    #[error(
        "`{path}` holds no PEM certificate: give the {what} as `-----BEGIN CERTIFICATE-----` blocks"
    )]
    NoCertificate { path: PathBuf, what: &'static str },
    #[error("`{path}` is not a usable client CA certificate: {reason}")]
    BadClientCa { path: PathBuf, reason: String },
    #[error("the TLS certificate `{cert}` and key `{key}` do not make a usable pair: {reason}")]
    BadCertKey {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("failed to set up TLS: {0}")]
    Tls(String),
    #[error(
        "failed to listen on `{addr}`: {source} (is another process using it? choose another with `--listen`)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the listener on `{addr}` failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Refuses unsafe configurations: a non-loopback listen address without TLS, or without authentication
/// (client certs or bearer tokens), unless `insecure`.
pub fn check_config(cfg: &ServerConfig) -> Result<(), ServerError> {
    if cfg.max_body_bytes == 0 || cfg.max_decompressed_bytes == 0 {
        return Err(ServerError::ZeroLimit);
    }
    if cfg.insecure || cfg.listen.ip().is_loopback() {
        return Ok(());
    }
    let has_tls = cfg.tls.is_some();
    let has_auth = auth::Auth::new(cfg).usable();
    let (missing, add) = match (has_tls, has_auth) {
        (true, true) => return Ok(()),
        (false, false) => (
            "TLS and authentication",
            "`tls.cert` and `tls.key`, plus `tls.client_ca` (client certificates) or \
             `auth.identities`",
        ),
        (false, true) => ("TLS", "`tls.cert` and `tls.key`"),
        (true, false) => (
            "authentication",
            "`tls.client_ca` (client certificates) or `auth.identities`",
        ),
    };
    Err(ServerError::Unsafe {
        addr: cfg.listen,
        missing,
        add,
    })
}

/// The router (tests drive it without a socket via `tower::ServiceExt::oneshot`; put a
/// `ConnectInfo<SocketAddr>` in the request extensions to play a peer address).
pub fn router<I: Ingest>(cfg: &ServerConfig, ingest: Arc<I>) -> Router {
    router_with_api(cfg, ingest, Router::new())
}

/// [`router`] plus `api`'s routes, each behind the webhook's authentication: a request that does not
/// authenticate gets 401 before `api` sees it, one whose role is not at least `reader` 403; one that does
/// carries its [`Peer`] as a request extension (routes that need more say so with [`needs`]). Every API call
/// is logged with the caller's identity.
/// The TLS files are read when they load (names valid for the certificate accepted as `Host`); `serve`
/// loads them first and refuses to start without them ([`router_with_live`]).
pub fn router_with_api<I: Ingest>(cfg: &ServerConfig, ingest: Arc<I>, api: Router) -> Router {
    let live = Live::new(cfg).unwrap_or_else(|_| Live::unloaded(cfg));
    router_with_live(cfg, live, ingest, api)
}

/// [`router_with_api`] over identities, names and a certificate that `live` may replace while it serves.
pub fn router_with_live<I: Ingest>(
    cfg: &ServerConfig,
    live: Live,
    ingest: Arc<I>,
    api: Router,
) -> Router {
    let state = Arc::new(webhook::AppState::new(cfg, live, ingest));
    let metrics = state.metrics.clone();
    let api = if api.has_routes() {
        api.route("/api/v1/session", get(webhook::session_info))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                webhook::api_guard::<I>,
            ))
    } else {
        api
    };
    Router::new()
        .route("/k8s-audit", post(webhook::webhook::<I>))
        .route("/api/v1/audit", post(webhook::webhook::<I>))
        .route("/healthz", get(webhook::healthz))
        .route("/readyz", get(webhook::readyz::<I>))
        .route("/metrics", get(webhook::metrics::<I>))
        .route("/login", get(login::page::<I>).post(login::login::<I>))
        .route("/logout", post(login::logout::<I>))
        .route("/login.css", get(login::css))
        .with_state(state.clone())
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            webhook::host_guard::<I>,
        ))
        .layer(axum::middleware::from_fn(login::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// `routes` answered only to callers whose role grants `role` (403 naming it otherwise); for routes of the
/// `api` given to [`router_with_api`], which has authenticated the caller by then.
pub fn needs<S: Clone + Send + Sync + 'static>(role: Role, routes: Router<S>) -> Router<S> {
    routes.route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match req.extensions().get::<Peer>() {
                Some(peer) if peer.may(role) => next.run(req).await,
                peer => webhook::refuse_role(peer, role, req.method(), req.uri().path()),
            }
        },
    ))
}

/// How long in-flight requests may finish after `shutdown` resolved.
const GRACE: Duration = Duration::from_secs(10);
/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds (TLS if configured, with client-certificate verification against `client_ca` when given: optional
/// if bearer tokens are also configured, required otherwise) and serves until `shutdown` resolves, then
/// finishes in-flight requests (graceful, at most 10 s).
pub async fn serve<I: Ingest>(
    cfg: ServerConfig,
    ingest: Arc<I>,
    api: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    check_config(&cfg)?;
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(|source| ServerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    serve_listener(listener, cfg, ingest, api, shutdown).await
}

/// [`serve`] on a listener that is already bound (`cfg.listen` is ignored but for the checks, which use the
/// listener's address): for tests on port 0 and for socket activation.
pub async fn serve_listener<I: Ingest>(
    listener: std::net::TcpListener,
    cfg: ServerConfig,
    ingest: Arc<I>,
    api: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let live = Live::new(&cfg)?;
    serve_live(listener, cfg, live, ingest, api, shutdown).await
}

/// [`serve_listener`] with identities and a certificate `live` may replace while it serves (made by
/// [`Live::new`] from `cfg`).
pub async fn serve_live<I: Ingest>(
    listener: std::net::TcpListener,
    mut cfg: ServerConfig,
    live: Live,
    ingest: Arc<I>,
    api: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    cfg.listen = addr;
    check_config(&cfg)?;
    if !addr.ip().is_loopback() && cfg.insecure {
        tracing::warn!(%addr, "listening off loopback with `--insecure`: TLS or authentication is missing");
    }
    // Client certificates are optional at the TLS layer and required per route: the webhook (and /metrics off
    // loopback) answer 401 without one, while health probes (a kubelet's httpGet, a load balancer) need none.
    // An unverifiable certificate still fails the handshake.
    let rustls = live.rustls();
    let app = router_with_live(&cfg, live, ingest, api)
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            handle.graceful_shutdown(Some(GRACE));
        }
    });
    let serve_err = |source| ServerError::Serve { addr, source };
    tracing::info!(%addr, tls = rustls.is_some(), "listening");
    let result = match rustls {
        Some(config) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .acceptor(conns::Capped::default());
            let mut server = axum_server::from_tcp(listener)
                .map_err(serve_err)?
                .acceptor(acceptor)
                .handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(HEADER_READ_TIMEOUT);
            server.http1_only().serve(app).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(serve_err)?
                .acceptor(conns::Capped::default())
                .handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(HEADER_READ_TIMEOUT);
            server.http1_only().serve(app).await
        }
    };
    stopper.abort();
    result.map_err(serve_err)
}
