//! The console's login and logout (`GET|POST /login`, `POST /logout`, `GET /login.css`) and the security
//! headers every answer of the server carries (a strict Content-Security-Policy: scripts, styles and data
//! from this origin only, no inline script, no framing).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_server::tls::TlsInfo;
use serde::Deserialize;

use crate::auth::Denied;
use crate::session::safe_next;
use crate::webhook::AppState;
use crate::{Ingest, Role};

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest login form.
const MAX_FORM_BYTES: usize = 16 << 10;

const LOGIN_CSS: &str = include_str!("login.css");

/// Adds the security headers (and `Cache-Control: no-store` unless the handler chose a policy).
pub(crate) async fn security_headers(req: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

/// `GET /login`: the form; straight on when no login is needed (no authentication configured, or a client
/// certificate already identifies the browser).
pub(crate) async fn page<I: Ingest>(
    State(st): State<Arc<AppState<I>>>,
    Query(q): Query<Next>,
    req: Request,
) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or("/")).to_string();
    let tls = req.extensions().get::<Arc<TlsInfo>>();
    if st
        .live
        .auth()
        .authenticate(req.headers(), tls)
        .is_ok_and(|c| c.is_none_or(|c| c.role.grants(Role::Reader)))
        || st.live.session(req.headers()).is_some()
    {
        return see_other(&next, None);
    }
    form(StatusCode::OK, &next, None)
}

#[derive(Debug)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login` (`token`, `next`): a session for a configured bearer token of a role that may read (an
/// `ingest` token logs in nowhere). Wrong tokens count against the address like the API's.
pub(crate) async fn login<I: Ingest>(State(st): State<Arc<AppState<I>>>, req: Request) -> Response {
    let addr = crate::webhook::peer_addr(req.extensions());
    if st.live.hosts().cross_site(req.headers()) {
        return form(
            StatusCode::FORBIDDEN,
            "/",
            Some("a login from another site's page is refused"),
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return form(
                StatusCode::PAYLOAD_TOO_LARGE,
                "/",
                Some("the form is too large"),
            );
        }
    };
    let Ok(f) = serde_urlencoded_form(&body) else {
        return form(StatusCode::BAD_REQUEST, "/", Some("the form is not valid"));
    };
    let next = safe_next(f.next.as_deref().unwrap_or("/")).to_string();
    if !st.live.auth().required() {
        // Nothing to log in with (loopback without authentication needs no login).
        return see_other(&next, None);
    }
    let token = f.token.trim();
    let outcome = if token.is_empty() {
        Err(Denied::Missing)
    } else {
        st.live.auth().token(token.as_bytes())
    };
    match outcome {
        Ok(caller) if caller.role.grants(Role::Reader) => {
            tracing::info!(peer = %addr, identity = caller.name, role = caller.role.as_str(), "console login");
            let digest = crate::auth::sha256(token.as_bytes());
            let cookie = st.live.sessions().create(Some(caller), Some(digest));
            see_other(&next, Some(&cookie))
        }
        Ok(caller) => {
            tracing::warn!(peer = %addr, identity = caller.name, "console login refused: the ingest role has no console");
            form(
                StatusCode::FORBIDDEN,
                &next,
                Some(
                    "That token may only send events (the ingest role): the console needs reader or above.",
                ),
            )
        }
        Err(denied) => {
            if let crate::webhook::Refused::Throttled(secs) = st.failed(addr, denied) {
                st.metrics.rejected(crate::metrics::Reason::Throttled);
                tracing::warn!(peer = %addr, "console login refused: too many failed authentications");
                let mut r = form(
                    StatusCode::TOO_MANY_REQUESTS,
                    &next,
                    Some("Too many failed logins from this address: wait a minute."),
                );
                r.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
                return r;
            }
            st.metrics.rejected(crate::metrics::Reason::Unauthenticated);
            tracing::warn!(peer = %addr, "console login refused: the token is not accepted");
            form(
                StatusCode::UNAUTHORIZED,
                &next,
                Some("That token is not accepted."),
            )
        }
    }
}

/// `POST /logout`: ends the session.
pub(crate) async fn logout<I: Ingest>(
    State(st): State<Arc<AppState<I>>>,
    req: Request,
) -> Response {
    if st.live.hosts().cross_site(req.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "a logout from another site's page is refused",
        )
            .into_response();
    }
    let cookie = st.live.sessions().remove(req.headers());
    see_other("/login", Some(&cookie))
}

/// `GET /login.css`.
pub(crate) async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "max-age=3600"),
        ],
        LOGIN_CSS,
    )
        .into_response()
}

fn serde_urlencoded_form(body: &[u8]) -> Result<LoginForm, ()> {
    let mut token = None;
    let mut next = None;
    let text = std::str::from_utf8(body).map_err(|_| ())?;
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode_component(v).ok_or(())?;
        match k {
            "token" => token = Some(v),
            "next" => next = Some(v),
            _ => return Err(()),
        }
    }
    Ok(LoginForm {
        token: token.ok_or(())?,
        next,
    })
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn decode_component(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters and `/`.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn see_other(location: &str, cookie: Option<&str>) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(LOCATION, location);
    if let Some(c) = cookie {
        r = r.header(SET_COOKIE, c);
    }
    r.body(Body::empty()).expect("a valid redirect")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn form(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>kubetrail: log in</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/login.css\"></head>\
         <body><main><h1>kubetrail</h1><p>Log in with your bearer token \
         (the <code>token_file</code> of your identity in <code>auth.identities</code>).</p>{error}\
         <form method=\"post\" action=\"/login\"><label for=\"token\">Bearer token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><button type=\"submit\">Log in</button></form>\
         </main></body></html>\n",
        escape(next)
    );
    (status, [(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = serde_urlencoded_form(b"token=a%2Bb+c&next=%2Falerts%2Fx").unwrap();
        assert_eq!(f.token, "a+b c");
        assert_eq!(f.next.as_deref(), Some("/alerts/x"));
        assert!(serde_urlencoded_form(b"next=/").is_err());
        assert!(serde_urlencoded_form(b"token=x&evil=1").is_err());
        assert!(serde_urlencoded_form(b"token=%zz").is_err());
    }

    #[test]
    fn next_is_encoded_and_escaped() {
        assert_eq!(encode_component("/a b?c=<d>"), "/a%20b%3Fc%3D%3Cd%3E");
        let r = form(StatusCode::OK, "\"><script>x</script>", None);
        let body = futures_body(r);
        assert!(!body.contains("<script>x"));
        assert!(body.contains("&lt;script&gt;"));
    }

    fn futures_body(r: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
