//! Browser sessions for the web console: `POST /login` trades a configured bearer token for a session cookie
//! (random, `HttpOnly`, `SameSite=Strict`, `Secure` and `__Host-` under TLS), so the token never sits in the
//! page's JavaScript. A session carries a CSRF token that every state change made with the cookie must echo in
//! `X-CSRF-Token`; a browser's cross-site request can neither read it nor set the header without a preflight
//! the server never grants. Client certificates need no login: the browser presents them on every request.
//!
//! Sessions live in memory (a restart logs everyone out), at most [`MAX_SESSIONS`], each for [`SESSION_TTL`].
//! Only the SHA-256 of a cookie is kept, so the table holds nothing a memory dump could replay.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use sha2::{Digest, Sha256};

use crate::auth::Principal;

/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; the oldest goes first beyond.
pub const MAX_SESSIONS: usize = 10_000;
/// The header that carries the session's CSRF token on state changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) caller: Option<Principal>,
    /// SHA-256 of the token the session was opened with.
    pub(crate) token: Option<[u8; 32]>,
    pub(crate) csrf: String,
    expires: Instant,
}

#[derive(Debug)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    /// Under TLS: the cookie is `Secure` and `__Host-` prefixed.
    secure: bool,
    /// The CSRF token of an installation without authentication (loopback only): the console still needs
    /// one so that another site's page cannot change alerts through the visitor's browser.
    pub(crate) open_csrf: String,
}

impl Sessions {
    pub(crate) fn new(secure: bool) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            secure,
            open_csrf: random_token(),
        }
    }

    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-kubetrail_session"
        } else {
            "kubetrail_session"
        }
    }

    /// A new session for `caller`, opened with the token of SHA-256 `token`: the `Set-Cookie` value.
    pub(crate) fn create(&self, caller: Option<Principal>, token: Option<[u8; 32]>) -> String {
        let value = random_token();
        let session = Session {
            caller,
            token,
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(digest(&value), session);
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie_name(),
            SESSION_TTL.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The live session of the request's cookie, if any.
    pub(crate) fn lookup(&self, headers: &HeaderMap) -> Option<Session> {
        let value = cookie(headers, self.cookie_name())?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&digest(value))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Keeps the sessions opened with a token for which `keep(token digest, caller)` holds, and the others.
    pub(crate) fn retain(&self, keep: impl Fn(&[u8; 32], &Principal) -> bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| match (&s.token, &s.caller) {
            (Some(token), Some(caller)) => keep(token, caller),
            _ => true,
        });
    }

    /// Ends the request's session; the `Set-Cookie` value that clears the cookie.
    pub(crate) fn remove(&self, headers: &HeaderMap) -> String {
        if let Some(value) = cookie(headers, self.cookie_name()) {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&digest(value));
        }
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.cookie_name(),
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// 32 random bytes from the TLS provider's generator, as hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system's random number generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Compares two tokens in time independent of where they differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    digest(a)
        .iter()
        .zip(digest(b).iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A `next` location after login: a path of this server only (`/…`, never `//host` or a scheme).
pub(crate) fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if ok { next } else { "/" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {name}={value}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_on_logout() {
        let s = Sessions::new(false);
        let lead = Principal {
            name: "soc-lead".into(),
            role: crate::Role::Responder,
        };
        let set = s.create(Some(lead.clone()), None);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(!set.contains("Secure"));
        let value = set
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string();
        let h = with_cookie("kubetrail_session", &value);
        let found = s.lookup(&h).expect("the session");
        assert_eq!(found.caller, Some(lead));
        assert_eq!(found.csrf.len(), 64);
        assert!(
            s.lookup(&with_cookie("kubetrail_session", "guess"))
                .is_none()
        );
        assert!(s.remove(&h).contains("Max-Age=0"));
        assert!(s.lookup(&h).is_none());
    }

    #[test]
    fn under_tls_the_cookie_is_secure_and_host_bound() {
        let s = Sessions::new(true);
        let set = s.create(None, None);
        assert!(set.starts_with("__Host-kubetrail_session="));
        assert!(set.contains("; Secure"));
    }

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next("/alerts/a1"), "/alerts/a1");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next("https://evil.example"), "/");
        assert_eq!(safe_next("/a\nb"), "/");
    }

    #[test]
    fn tokens_are_random() {
        assert_ne!(random_token(), random_token());
        assert!(same_token("abc", "abc") && !same_token("abc", "abd"));
    }
}
