//! The names this server answers to, against DNS rebinding: a page of `evil.example` whose name an attacker
//! re-points at 127.0.0.1 reaches a loopback listener as same-origin, but its requests say `Host:
//! evil.example`. Allowed are: IP literals (a page cannot be served from an address it does not own, so an
//! address in `Host` was typed, not rebound; probes and scrapers by pod IP keep working), `localhost` (not
//! `*.localhost`, which some resolvers forward to the network), the configured `server_names`, and under TLS the names the server certificate is valid for
//! (a browser would refuse the certificate for any other). Anything else is answered 421 Misdirected Request.
//! A request without `Host` (HTTP/1.0 tools; browsers always send one) is let through.
//!
//! The cross-site check of state changes compares a request's `Origin` with these names too, not merely
//! with its own `Host`, which a rebinding page controls.

use std::net::IpAddr;

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use rustls_pki_types::{CertificateDer, ServerName};

#[derive(Debug, Default)]
pub(crate) struct Hosts {
    /// Configured names, lower case, without a trailing dot.
    names: Vec<String>,
    /// The server certificate's leaf (DER), under TLS.
    cert: Option<CertificateDer<'static>>,
}

/// `host[:port]` (or `[v6]:port`) without the port, lower case, without a trailing dot.
fn hostname(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket.
        match rest.split_once(']') {
            Some((v6, "")) => v6,
            Some((v6, port))
                if port.len() > 1
                    && port.starts_with(':')
                    && port[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                v6
            }
            _ => return String::new(),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Hosts {
    pub(crate) fn new(names: &[String], cert: Option<CertificateDer<'static>>) -> Hosts {
        Hosts {
            names: names
                .iter()
                .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
            cert,
        }
    }

    /// Whether `authority` (a `Host` header or an origin's host and port) names this server.
    pub(crate) fn allowed(&self, authority: &str) -> bool {
        let host = hostname(authority);
        if host.is_empty() {
            return false;
        }
        if host.parse::<IpAddr>().is_ok() || host == "localhost" || self.names.contains(&host) {
            return true;
        }
        let Some(cert) = &self.cert else {
            return false;
        };
        let (Ok(name), Ok(parsed)) = (
            ServerName::try_from(host.as_str()),
            rustls::server::ParsedCertificate::try_from(cert),
        ) else {
            return false;
        };
        rustls::client::verify_server_name(&parsed, &name).is_ok()
    }

    /// Whether the request's `Host` is refused (present and naming no name of this server).
    pub(crate) fn misdirected(&self, headers: &HeaderMap) -> bool {
        match headers.get(HOST) {
            None => false,
            Some(v) => v.to_str().map_or(true, |h| !self.allowed(h)),
        }
    }

    /// Whether a state-changing request may come from a browser page of another site: the browser says so
    /// (`Sec-Fetch-Site` other than `same-origin`/`none`), or it names an `Origin` that is not one of this
    /// server's names or not the request's own `Host`. Non-browser clients (curl, kubectl, scripts) send
    /// neither.
    pub(crate) fn cross_site(&self, headers: &HeaderMap) -> bool {
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
            && !matches!(site, "same-origin" | "none")
        {
            return true;
        }
        let Some(origin) = headers.get(ORIGIN) else {
            return false;
        };
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .unwrap_or("");
        origin_host.is_empty()
            || !origin_host.eq_ignore_ascii_case(host)
            || !self.allowed(origin_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn addresses_localhost_and_configured_names_are_allowed() {
        let hosts = Hosts::new(&["Kubetrail.Example.".into()], None);
        for ok in [
            "127.0.0.1:9443",
            "[::1]:9443",
            "10.2.3.4",
            "localhost:9443",
            "LOCALHOST.",
            "kubetrail.example:443",
            "kubetrail.example",
        ] {
            assert!(hosts.allowed(ok), "{ok}");
        }
        for refused in [
            "evil.example:9443",
            "kubetrail.example.evil.example",
            "localhost.evil.example",
            "console.localhost",
            "[::1]evil.example",
            "[::1]:x",
            "",
            ":9443",
        ] {
            assert!(!hosts.allowed(refused), "{refused}");
        }
        assert!(hosts.misdirected(&h(&[("host", "rebind.evil.example:9443")])));
        assert!(!hosts.misdirected(&h(&[("host", "127.0.0.1:9443")])));
        assert!(!hosts.misdirected(&HeaderMap::new()));
    }

    #[test]
    fn the_certificate_names_are_allowed_under_tls() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["kubetrail.kubetrail.svc".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let hosts = Hosts::new(&[], Some(cert.der().clone()));
        assert!(hosts.allowed("kubetrail.kubetrail.svc:9443"));
        assert!(!hosts.allowed("evil.example:9443"));
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let hosts = Hosts::new(&[], None);
        assert!(!hosts.cross_site(&h(&[])));
        assert!(!hosts.cross_site(&h(&[
            ("host", "127.0.0.1:9443"),
            ("origin", "http://127.0.0.1:9443")
        ])));
        assert!(hosts.cross_site(&h(&[
            ("host", "127.0.0.1:9443"),
            ("origin", "https://evil.example")
        ])));
        // A rebinding page: its Origin and Host agree, but neither is a name of this server.
        assert!(hosts.cross_site(&h(&[
            ("host", "rebind.evil.example:9443"),
            ("origin", "http://rebind.evil.example:9443")
        ])));
        assert!(hosts.cross_site(&h(&[("host", "a"), ("origin", "null")])));
        assert!(hosts.cross_site(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!hosts.cross_site(&h(&[("sec-fetch-site", "same-origin")])));
    }
}
