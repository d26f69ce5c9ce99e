//! The rustls server configuration (ring provider only).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{ServerError, TlsFiles};

fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let read_err = |e: rustls_pki_types::pem::Error| ServerError::ReadPem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(certs)
}

/// Client certificates are verified against `client_ca` when given. With `optional_client_auth` a client may
/// present none (the routes then enforce authentication: 401 on the webhook, open health probes); a
/// certificate that does not verify always fails the handshake.
pub(crate) fn server_config(
    files: &TlsFiles,
    optional_client_auth: bool,
) -> Result<rustls::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&files.cert, "server certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| ServerError::ReadPem {
        path: files.key.clone(),
        reason: format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "client CA certificates")? {
                roots.add(cert).map_err(|e| ServerError::BadClientCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if optional_client_auth {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| ServerError::BadClientCa {
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::BadCertKey {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The leaf of the server certificate chain in `path`.
pub(crate) fn leaf(path: &Path) -> Result<CertificateDer<'static>, ServerError> {
    let mut certs = certificates(path, "server certificate chain")?;
    Ok(certs.swap_remove(0))
}
