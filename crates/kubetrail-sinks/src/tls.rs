//! TLS client configuration shared by every sink: web PKI verification (rustls, ring provider) against the
//! system's CA bundle (`/etc/ssl/certs/ca-certificates.crt`, or the file `SSL_CERT_FILE` names) plus an optional
//! extra CA file for servers with a private or self-signed certificate. Verification is never turned off.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// The system's CA bundle on Debian and most Linux distributions.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration trusting the system bundle and `extra_ca` (PEM, one or more certificates), offering
/// `alpn` (empty: none). A missing system bundle is fine when `extra_ca` is given.
pub fn client_config(extra_ca: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
    let bundle = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| CA_BUNDLE.to_string());
    let mut roots = RootCertStore::empty();
    match read_pem(Path::new(&bundle)) {
        Ok(certs) => {
            roots.add_parsable_certificates(certs);
        }
        Err(e) if extra_ca.is_none() => {
            return Err(Error::Config(format!(
                "failed to read CA certificates from `{bundle}`: {e} (install ca-certificates, or set SSL_CERT_FILE)"
            )));
        }
        Err(_) => {}
    }
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
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "`{bundle}` holds no usable CA certificate"
        )));
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("failed to set up TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
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
