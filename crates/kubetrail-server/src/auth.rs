//! Who is calling and what they may do: configured [`Identity`]s (a bearer token, a client certificate's
//! common name, or both) each with one [`Role`]. Once any identity names a certificate, the names are an
//! allowlist: a verified certificate naming none is refused. Without such identities every certificate of
//! `client_ca` is `ingest`-only (how the apiserver's certificate worked before roles): it can send events and
//! nothing else, and its common name is stored with them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum_server::tls::TlsInfo;
use sha2::{Digest, Sha256};

use crate::ServerConfig;
use crate::der;

/// What an identity may do. Roles above `ingest` nest: a responder may do what a reader may, an admin what
/// a responder may; `ingest` is apart (it may send events and nothing else, and only it may).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `POST /k8s-audit` only: the apiserver (or a forwarder).
    Ingest,
    /// Every read of the API and the console, exports.
    Reader,
    /// A reader who also works alerts: ack, resolve, reopen, assign, note.
    Responder,
    /// A responder who also governs: suppressions, legal holds, retention.
    Admin,
}

impl Role {
    /// Whether this role may do what `needed` may.
    pub fn grants(self, needed: Role) -> bool {
        match needed {
            Role::Ingest => self == Role::Ingest,
            Role::Reader => matches!(self, Role::Reader | Role::Responder | Role::Admin),
            Role::Responder => matches!(self, Role::Responder | Role::Admin),
            Role::Admin => self == Role::Admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Reader => "reader",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured identity: a name for logs and records, a role, and how it proves itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    /// A bearer token (never logged: `Debug` hides it).
    pub token: Option<String>,
    /// The subject common name of a client certificate verified against `tls.client_ca`.
    pub client_cert_cn: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_cert_cn", &self.client_cert_cn)
            .finish()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) name: String,
    pub(crate) role: Role,
}

/// The authentication a router enforces.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    /// SHA-256 of each configured token, with its identity. Comparing digests makes the comparison's time
    /// independent of the tokens' lengths too.
    tokens: Vec<([u8; 32], Principal)>,
    /// Identities by client certificate common name.
    certs: HashMap<String, Principal>,
    /// Client certificates are verified by the TLS layer (a `client_ca` is configured).
    client_certs: bool,
    /// Identities are configured (whether or not their tokens load now): every request must authenticate.
    configured: bool,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization: Bearer` header (and no client certificate).
    Missing,
    /// A bearer token that matches none configured.
    Wrong,
    /// A verified client certificate whose common name no identity names (while some identity names one).
    UnknownCertificate,
}

impl Auth {
    pub(crate) fn new(cfg: &ServerConfig) -> Self {
        let client_certs = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        Auth::with(&cfg.identities, client_certs)
    }

    /// `identities`, with client certificates verified by the TLS layer when `client_certs`.
    pub(crate) fn with(identities: &[Identity], client_certs: bool) -> Self {
        let principal = |i: &Identity| Principal {
            name: i.name.clone(),
            role: i.role,
        };
        let tokens = identities
            .iter()
            .filter_map(|i| {
                let t = i.token.as_deref().filter(|t| !t.is_empty())?;
                Some((sha256(t.as_bytes()), principal(i)))
            })
            .collect();
        let certs = identities
            .iter()
            .filter_map(|i| Some((i.client_cert_cn.clone()?, principal(i))))
            .collect();
        Self {
            tokens,
            certs,
            client_certs,
            configured: !identities.is_empty(),
        }
    }

    /// This authentication, required whatever it holds when `required` (authentication never turns itself
    /// off because a token file stopped loading).
    pub(crate) fn required_if(mut self, required: bool) -> Self {
        self.configured |= required;
        self
    }

    /// Whether the token of SHA-256 `digest` still names `caller` (same identity, same role).
    pub(crate) fn still(&self, digest: &[u8; 32], caller: &Principal) -> bool {
        self.tokens.iter().any(|(d, p)| d == digest && p == caller)
    }

    /// Whether any authentication is configured (otherwise every request is let in).
    pub(crate) fn required(&self) -> bool {
        self.client_certs || self.configured || !self.tokens.is_empty()
    }

    /// Whether anyone can authenticate at all (a token that loaded, or client certificates).
    pub(crate) fn usable(&self) -> bool {
        self.client_certs || !self.tokens.is_empty()
    }

    /// Whether client certificates are verified (a `client_ca` is configured).
    pub(crate) fn client_certs(&self) -> bool {
        self.client_certs
    }

    pub(crate) fn has_tokens(&self) -> bool {
        self.configured || !self.tokens.is_empty()
    }

    /// The caller a verified client certificate names, if the request came with one.
    pub(crate) fn certificate(
        &self,
        tls: Option<&Arc<TlsInfo>>,
    ) -> Option<Result<Principal, Denied>> {
        // The TLS layer only completes a handshake with a certificate that verified against client_ca, and
        // asks for none without one: a peer certificate here is a verified one.
        if !self.client_certs {
            return None;
        }
        let leaf = tls.and_then(|t| t.peer_certificates.first())?;
        let cn = client_identity(leaf);
        Some(match self.certs.get(&cn) {
            Some(p) => Ok(p.clone()),
            None if !self.certs.is_empty() => Err(Denied::UnknownCertificate),
            // No identity names certificates: every one of the client CA is the apiserver's kind of caller.
            None => Ok(Principal {
                name: cn,
                role: Role::Ingest,
            }),
        })
    }

    /// The request's caller: `Ok(None)` when no authentication is configured.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        tls: Option<&Arc<TlsInfo>>,
    ) -> Result<Option<Principal>, Denied> {
        if let Some(p) = self.certificate(tls) {
            return p.map(Some);
        }
        if !self.required() {
            return Ok(None);
        }
        let Some(presented) = bearer(headers) else {
            return Err(Denied::Missing);
        };
        self.token(presented).map(Some)
    }

    /// The identity of a presented bearer token.
    pub(crate) fn token(&self, presented: &[u8]) -> Result<Principal, Denied> {
        let presented = sha256(presented);
        // Look at every configured token whatever matches, so timing says nothing about which one did.
        let mut found = None;
        for (digest, principal) in &self.tokens {
            if ct_eq(digest, &presented) {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(Denied::Wrong)
    }
}

/// The bearer token of an `Authorization` header, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
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

    fn with_tokens(tokens: &[(&str, Role)]) -> Auth {
        Auth::new(&ServerConfig {
            identities: tokens
                .iter()
                .enumerate()
                .map(|(i, (t, role))| Identity {
                    name: format!("id{i}"),
                    role: *role,
                    token: Some(t.to_string()),
                    client_cert_cn: None,
                })
                .collect(),
            ..ServerConfig::default()
        })
    }

    fn named(name: &str, role: Role) -> Option<Principal> {
        Some(Principal {
            name: name.into(),
            role,
        })
    }

    #[test]
    fn tokens_name_their_identity_and_role() {
        let auth = with_tokens(&[
            ("", Role::Admin),
            ("alpha", Role::Reader),
            ("beta", Role::Ingest),
        ]);
        let check = |h: &HeaderMap| auth.authenticate(h, None);
        assert_eq!(check(&HeaderMap::new()), Err(Denied::Missing));
        assert_eq!(check(&headers("Basic YWxwaGE=")), Err(Denied::Missing));
        assert_eq!(check(&headers("Bearer ")), Err(Denied::Missing));
        assert_eq!(check(&headers("Bearer alph")), Err(Denied::Wrong));
        assert_eq!(check(&headers("Bearer alphaa")), Err(Denied::Wrong));
        assert_eq!(
            check(&headers("Bearer alpha")),
            Ok(named("id1", Role::Reader))
        );
        assert_eq!(
            check(&headers("bearer  beta ")),
            Ok(named("id2", Role::Ingest))
        );
    }

    #[test]
    fn an_identity_with_an_empty_token_lets_no_one_in() {
        // Configured identities require authentication even when none has a token that loads.
        let auth = with_tokens(&[("", Role::Admin)]);
        assert!(auth.required());
        assert_eq!(
            auth.authenticate(&headers("Bearer "), None),
            Err(Denied::Missing)
        );
        assert_eq!(auth.token(b""), Err(Denied::Wrong));
    }

    #[test]
    fn certificate_without_client_ca_is_ignored() {
        let auth = with_tokens(&[("alpha", Role::Admin)]);
        let mut info = TlsInfo::default();
        info.peer_certificates = vec![b"not a cert".to_vec()];
        let info = Arc::new(info);
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), Some(&info)),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn roles_nest_above_ingest_and_ingest_stands_apart() {
        use Role::*;
        let all = [Ingest, Reader, Responder, Admin];
        let granted = |r: Role| all.iter().filter(|n| r.grants(**n)).count();
        assert!(Ingest.grants(Ingest) && !Admin.grants(Ingest) && !Reader.grants(Ingest));
        assert!(!Ingest.grants(Reader));
        assert_eq!(
            [
                granted(Ingest),
                granted(Reader),
                granted(Responder),
                granted(Admin)
            ],
            [1, 1, 2, 3]
        );
        assert!(Responder.grants(Reader) && !Responder.grants(Admin));
    }

    #[test]
    fn debug_hides_the_token() {
        let i = Identity {
            name: "lead".into(),
            role: Role::Responder,
            token: Some("s3cret-token-value".into()),
            client_cert_cn: None,
        };
        assert!(!format!("{i:?}").contains("s3cret"));
    }
}
