//! What changes while the server runs, swapped in without a restart: the identities (a token file rotated,
//! an identity added, changed or removed) and the TLS certificate, key and client CA (cert-manager rewrites a
//! Secret in place and the kubelet swaps the mounted files). The collector re-reads them and hands them over
//! ([`Live::identities`], [`Live::reload_tls`]); what does not load is refused and what is in force kept, so a
//! rotation caught half-written is picked up on the next try. New handshakes use the new certificate; open
//! connections keep theirs. A console session lives only while the token it was opened with still names the
//! same identity and role: rotating a token (or removing its identity) ends the sessions opened with it.
//!
//! The server certificate's end of validity is the gauge `kubetrail_tls_certificate_expiry_timestamp_seconds`
//! (Unix seconds, as cert-manager's own `certmanager_certificate_expiration_timestamp_seconds`; 0 when the
//! certificate does not say in a form read here).

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use axum_server::tls_rustls::RustlsConfig;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::auth::Auth;
use crate::hosts::Hosts;
use crate::session::Sessions;
use crate::{Identity, ServerConfig, ServerError, TlsFiles};

/// The listener's identities, names and certificate, replaceable while it serves. Clones share them.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    auth: RwLock<Auth>,
    hosts: RwLock<Hosts>,
    sessions: Sessions,
    server_names: Vec<String>,
    /// The files and the configuration handshakes take, under TLS.
    tls: Option<(TlsFiles, RustlsConfig)>,
    /// The server certificate's `notAfter` (Unix seconds; 0 without TLS).
    expiry: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("tls", &self.inner.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Loads what `cfg` names (the TLS files, read now).
    pub fn new(cfg: &ServerConfig) -> Result<Live, ServerError> {
        let expiry = Gauge::<i64, AtomicI64>::default();
        let (tls, leaf) = match &cfg.tls {
            Some(files) => {
                let config = crate::tls::server_config(files, true)?;
                let leaf = crate::tls::leaf(&files.cert)?;
                let rustls = RustlsConfig::from_config(Arc::new(config));
                (Some((files.clone(), rustls)), Some(leaf))
            }
            None => (None, None),
        };
        // 0 when the certificate's end cannot be read: unknown, not 1970.
        expiry.set(
            leaf.as_ref()
                .and_then(|l| crate::der::not_after(l))
                .unwrap_or(0),
        );
        Ok(Live {
            inner: Arc::new(Inner {
                auth: RwLock::new(Auth::new(cfg)),
                hosts: RwLock::new(Hosts::new(&cfg.server_names, leaf)),
                sessions: Sessions::new(cfg.tls.is_some()),
                server_names: cfg.server_names.clone(),
                tls,
                expiry,
            }),
        })
    }

    /// What `cfg` names without reading its TLS files (a router driven without a socket, in tests): TLS is
    /// assumed for cookies and client certificates as configured, and never reloaded.
    pub(crate) fn unloaded(cfg: &ServerConfig) -> Live {
        Live {
            inner: Arc::new(Inner {
                auth: RwLock::new(Auth::new(cfg)),
                hosts: RwLock::new(Hosts::new(&cfg.server_names, None)),
                sessions: Sessions::new(cfg.tls.is_some()),
                server_names: cfg.server_names.clone(),
                tls: None,
                expiry: Gauge::default(),
            }),
        }
    }

    /// Puts `identities` in force; ends the console sessions whose token no longer names the same identity
    /// and role.
    pub fn identities(&self, identities: &[Identity]) {
        // Client certificates as configured; and once authentication is required it stays so, whatever loads
        // now (a token file that stopped loading must not open the door).
        let (client_certs, required) = {
            let now = self.auth();
            (now.client_certs(), now.required())
        };
        let auth = Auth::with(identities, client_certs).required_if(required);
        self.inner
            .sessions
            .retain(|token, caller| auth.still(token, caller));
        *self.inner.auth.write().unwrap_or_else(|e| e.into_inner()) = auth;
    }

    /// Reads the TLS files again and puts them in force for new handshakes; on an error (a file missing,
    /// unreadable, or a key that does not match its certificate) nothing changes.
    pub fn reload_tls(&self) -> Result<(), ServerError> {
        let Some((files, rustls)) = &self.inner.tls else {
            return Ok(());
        };
        let config = crate::tls::server_config(files, true)?;
        let leaf = crate::tls::leaf(&files.cert)?;
        self.inner
            .expiry
            .set(crate::der::not_after(&leaf).unwrap_or(0));
        *self.inner.hosts.write().unwrap_or_else(|e| e.into_inner()) =
            Hosts::new(&self.inner.server_names, Some(leaf));
        rustls.reload_from_config(Arc::new(config));
        Ok(())
    }

    /// When the server certificate in force stops being valid (Unix seconds), under TLS, when its DER says.
    pub fn certificate_expiry(&self) -> Option<i64> {
        self.inner.tls.as_ref()?;
        Some(self.inner.expiry.get()).filter(|t| *t != 0)
    }

    pub(crate) fn auth(&self) -> RwLockReadGuard<'_, Auth> {
        self.inner.auth.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn hosts(&self) -> RwLockReadGuard<'_, Hosts> {
        self.inner.hosts.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The request's session, while the token it was opened with still names its identity and role (checked
    /// on every use: a login racing a rotation cannot keep a session the rotation ended).
    pub(crate) fn session(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Option<crate::session::Session> {
        let session = self.inner.sessions.lookup(headers)?;
        match (&session.token, &session.caller) {
            (Some(token), Some(caller)) if !self.auth().still(token, caller) => None,
            _ => Some(session),
        }
    }

    /// The configuration TLS handshakes take.
    pub(crate) fn rustls(&self) -> Option<RustlsConfig> {
        self.inner.tls.as_ref().map(|(_, r)| r.clone())
    }

    /// Registers the certificate's expiry gauge (under TLS).
    pub(crate) fn register(&self, registry: &mut Registry) {
        if self.inner.tls.is_some() {
            registry.register(
                "kubetrail_tls_certificate_expiry_timestamp_seconds",
                "When the server certificate in force stops being valid (Unix seconds).",
                self.inner.expiry.clone(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    #[test]
    fn a_session_lives_only_while_its_token_names_its_identity() {
        let identity = |token: &str| Identity {
            name: "soc-lead".into(),
            role: Role::Responder,
            token: Some(token.into()),
            client_cert_cn: None,
        };
        let live = Live::unloaded(&ServerConfig {
            identities: vec![identity("old-token-0123456789abcdef0123456789")],
            ..ServerConfig::default()
        });
        let caller = live
            .auth()
            .token(b"old-token-0123456789abcdef0123456789")
            .unwrap();
        let digest = crate::auth::sha256(b"old-token-0123456789abcdef0123456789");
        // A login that checked the old token just before a rotation, and makes its session just after the
        // rotation ended the old token's sessions.
        let rotated = Auth::with(&[identity("new-token-0123456789abcdef0123456789")], false);
        *live.inner.auth.write().unwrap() = rotated;
        let cookie = live.sessions().create(Some(caller), Some(digest));
        let value = cookie.split(';').next().unwrap().to_string();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value.parse().unwrap());
        assert!(live.sessions().lookup(&headers).is_some(), "stored");
        assert!(live.session(&headers).is_none(), "but no longer a session");
    }

    #[test]
    fn authentication_never_turns_itself_off() {
        let live = Live::unloaded(&ServerConfig {
            identities: vec![Identity {
                name: "soc-lead".into(),
                role: Role::Responder,
                token: Some("old-token-0123456789abcdef0123456789".into()),
                client_cert_cn: None,
            }],
            ..ServerConfig::default()
        });
        assert!(live.auth().required());
        // Every token file stopped loading (identities gone or without tokens): still required, nobody in.
        live.identities(&[]);
        assert!(live.auth().required());
        assert!(
            live.auth()
                .token(b"old-token-0123456789abcdef0123456789")
                .is_err()
        );
    }
}
