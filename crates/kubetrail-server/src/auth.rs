//! Who may send events: verified client certificates and bearer tokens.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum_server::tls::TlsInfo;
use sha2::{Digest, Sha256};

use crate::ServerConfig;
use crate::der;

/// The authentication a router enforces.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    /// SHA-256 of each configured token, with its index in the configuration (empty tokens dropped).
    /// Comparing digests makes the comparison's time independent of the tokens' lengths too.
    tokens: Vec<(usize, [u8; 32])>,
    /// Client certificates are verified by the TLS layer (a `client_ca` is configured).
    client_certs: bool,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization: Bearer` header (and no client certificate).
    Missing,
    /// A bearer token that matches none configured.
    Wrong,
}

impl Auth {
    pub(crate) fn new(cfg: &ServerConfig) -> Self {
        let tokens = cfg
            .bearer_tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(i, t)| (i, sha256(t.as_bytes())))
            .collect();
        let client_certs = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        Self {
            tokens,
            client_certs,
        }
    }

    /// Whether any authentication is configured (otherwise every request is let in).
    pub(crate) fn required(&self) -> bool {
        self.client_certs || self.has_tokens()
    }

    pub(crate) fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The identity of the request's sender: `Ok(None)` when no authentication is configured.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        tls: Option<&Arc<TlsInfo>>,
    ) -> Result<Option<String>, Denied> {
        // The TLS layer only completes a handshake with a certificate that verified against client_ca, and
        // asks for none without one: a peer certificate here is a verified one.
        if self.client_certs
            && let Some(leaf) = tls.and_then(|t| t.peer_certificates.first())
        {
            return Ok(Some(client_identity(leaf)));
        }
        if !self.required() {
            return Ok(None);
        }
        let Some(presented) = bearer(headers) else {
            return Err(Denied::Missing);
        };
        let presented = sha256(presented);
        // Look at every configured token whatever matches, so timing says nothing about which one did.
        let mut found = None;
        for (index, digest) in &self.tokens {
            if ct_eq(digest, &presented) {
                found = Some(*index);
            }
        }
        match found {
            Some(index) => Ok(Some(format!("token:{index}"))),
            None => Err(Denied::Wrong),
        }
    }
}

/// The bearer token of an `Authorization` header, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The identity of a client certificate (DER): its subject common name, as Kubernetes takes the user name
/// from it, or `sha256:<hex>` of the certificate when it has no common name fit to print.
pub fn client_identity(cert_der: &[u8]) -> String {
    match der::subject_common_name(cert_der) {
        Some(cn) if !cn.is_empty() && !cn.chars().any(char::is_control) => cn,
        _ => {
            let mut out = String::with_capacity(7 + 64);
            out.push_str("sha256:");
            for b in sha256(cert_der) {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn with_tokens(tokens: &[&str]) -> Auth {
        Auth::new(&ServerConfig {
            bearer_tokens: tokens.iter().map(|t| t.to_string()).collect(),
            ..ServerConfig::default()
        })
    }

    #[test]
    fn tokens() {
        let auth = with_tokens(&["", "alpha", "beta"]);
        let check = |h: &HeaderMap| auth.authenticate(h, None);
        assert_eq!(check(&HeaderMap::new()), Err(Denied::Missing));
        assert_eq!(check(&headers("Basic YWxwaGE=")), Err(Denied::Missing));
        assert_eq!(check(&headers("Bearer ")), Err(Denied::Missing));
        assert_eq!(check(&headers("Bearer alph")), Err(Denied::Wrong));
        assert_eq!(check(&headers("Bearer alphaa")), Err(Denied::Wrong));
        assert_eq!(check(&headers("Bearer alpha")), Ok(Some("token:1".into())));
        assert_eq!(check(&headers("bearer  beta ")), Ok(Some("token:2".into())));
    }

    #[test]
    fn empty_tokens_are_no_authentication() {
        let auth = with_tokens(&[""]);
        assert!(!auth.required());
        assert_eq!(auth.authenticate(&headers("Bearer "), None), Ok(None));
    }

    #[test]
    fn certificate_without_client_ca_is_ignored() {
        let auth = with_tokens(&["alpha"]);
        let mut info = TlsInfo::default();
        info.peer_certificates = vec![b"not a cert".to_vec()];
        let info = Arc::new(info);
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), Some(&info)),
            Err(Denied::Missing)
        );
    }
}
