//! TLS client configuration shared by every outgoing connection (sinks, alert destinations, `gen --post`): web
//! PKI verification (rustls, ring provider) against the system's CAs plus an optional extra CA file for servers
//! with a private or self-signed certificate, and an optional client certificate for servers that require one
//! (mutual TLS). Verification is never turned off.
//!
//! The system's CAs, portably: the file `SSL_CERT_FILE` names (an error if it cannot be read: the operator
//! asked for it), else the first bundle found where Debian/Ubuntu, RHEL/Fedora, openSUSE and Alpine keep
//! one, else Mozilla's roots compiled in (`webpki-roots`), so a distroless or scratch image without a
//! bundle still verifies public servers.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// Where Linux distributions keep the system's CA bundle, in the order looked for.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",   // RHEL, Fedora, CentOS
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, macOS
];

/// The system's trust anchors (see the module doc): the store and where it came from.
pub fn system_roots() -> Result<(RootCertStore, String), Error> {
    roots_from(std::env::var("SSL_CERT_FILE").ok(), CA_BUNDLES)
}

fn roots_from(
    cert_file: Option<String>,
    bundles: &[&str],
) -> Result<(RootCertStore, String), Error> {
    let mut roots = RootCertStore::empty();
    if let Some(file) = cert_file.filter(|f| !f.is_empty()) {
        let certs = read_pem(Path::new(&file)).map_err(|e| {
            Error::Config(format!(
                "failed to read CA certificates from `{file}` (SSL_CERT_FILE): {e}"
            ))
        })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::Config(format!(
                "`{file}` (SSL_CERT_FILE) holds no usable CA certificate"
            )));
        }
        return Ok((roots, file));
    }
    for bundle in bundles {
        if let Ok(certs) = read_pem(Path::new(bundle)) {
            let (added, _) = roots.add_parsable_certificates(certs);
            if added > 0 {
                return Ok((roots, bundle.to_string()));
            }
        }
    }
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok((roots, "Mozilla's roots built into kubetrail".into()))
}

/// A client configuration trusting the system bundle and `extra_ca` (PEM, one or more certificates), offering
/// `alpn` (empty: none), without a client certificate.
pub fn client_config(extra_ca: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
    client_config_with_cert(extra_ca, None, alpn)
}

/// [`client_config`] presenting `client_cert` when the server asks for one (mutual TLS): a PEM certificate
/// chain, leaf first, and its PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn client_config_with_cert(
    extra_ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, Error> {
    let (mut roots, _) = system_roots()?;
    if let Some(extra) = extra_ca {
        let certs = read_pem(extra).map_err(|e| {
            Error::Config(format!(
                "failed to read the CA file `{}`: {e}",
                extra.display()
            ))
        })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::Config(format!(
                "`{}` holds no usable CA certificate",
                extra.display()
            )));
        }
    }
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("failed to set up TLS: {e}")))?
            .with_root_certificates(roots);
    let mut cfg = match client_cert {
        None => cfg.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_pem(cert).map_err(|e| {
                Error::Config(format!(
                    "failed to read the client certificate `{}`: {e}",
                    cert.display()
                ))
            })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::Config(format!(
                    "failed to read a private key from `{}`: {e}",
                    key.display()
                ))
            })?;
            cfg.with_client_auth_cert(chain, key).map_err(|e| {
                Error::Config(format!(
                    "the client certificate `{}` and its key do not make a usable pair: {e}",
                    cert.display()
                ))
            })?
        }
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_bundle_the_built_in_roots_are_used() {
        let (roots, from) = roots_from(None, &["/nonexistent/ca.crt"]).unwrap();
        assert!(roots.len() > 100, "{}", roots.len());
        assert!(from.contains("built into"), "{from}");
    }

    #[test]
    fn the_first_bundle_found_is_used() {
        let dir = std::env::temp_dir().join(format!("kt-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        // Whichever system bundle this machine has, or none: the built-in roots then.
        let found = CA_BUNDLES.iter().find(|b| Path::new(b).is_file());
        let (roots, from) = roots_from(None, &[empty.to_str().unwrap(), CA_BUNDLES[0]]).unwrap();
        assert!(!roots.is_empty());
        match found {
            Some(&b) if b == CA_BUNDLES[0] => assert_eq!(from, b),
            _ => {}
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_ssl_cert_file_is_an_error_naming_it() {
        let err = roots_from(Some("/nonexistent/my-ca.pem".into()), CA_BUNDLES)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/my-ca.pem") && err.contains("SSL_CERT_FILE"),
            "{err}"
        );
    }
}
