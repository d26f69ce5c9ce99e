//! The certificates that connect kube-apiserver to kubetrail over mutual TLS, for every `setup` that
//! installs kubetrail: a private CA, kubetrail's server certificate, kube-apiserver's client certificate
//! (CN [`CLIENT_CN`]), and the webhook kubeconfig that carries the client side.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

use super::{base64, quote};

/// The client certificate's CN: the identity kube-apiserver presents to kubetrail.
pub const CLIENT_CN: &str = "kube-apiserver-audit";

/// The certificates and keys, PEM-encoded.
pub(super) struct Pki {
    pub(super) ca_cert: String,
    pub(super) ca_key: String,
    pub(super) server_cert: String,
    pub(super) server_key: String,
    pub(super) client_cert: String,
    pub(super) client_key: String,
    /// When the certificates expire (RFC 3339 date).
    pub(super) not_after: String,
}

impl Pki {
    pub(super) fn generate(server_names: &[String], days: u32) -> anyhow::Result<Pki> {
        let today = jiff::tz::Offset::UTC
            .to_datetime(jiff::Timestamp::now())
            .date();
        let day = |offset: i64| -> anyhow::Result<jiff::civil::Date> {
            today
                .checked_add(jiff::Span::new().days(offset))
                .context("--days reaches past the calendar's end; choose fewer days")
        };
        // From yesterday (clocks of the apiserver and kubetrail may disagree) to at least `days` from now.
        let (start, end) = (day(-1)?, day(i64::from(days) + 1)?);
        let ymd = |d: jiff::civil::Date| {
            date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
        };
        let validity = |p: &mut CertificateParams| {
            p.not_before = ymd(start);
            p.not_after = ymd(end);
        };

        let ca_key = KeyPair::generate().context("failed to generate the CA key")?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "kubetrail audit webhook CA");
        ca.distinguished_name
            .push(DnType::OrganizationName, "kubetrail");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca);
        let ca_cert = ca
            .self_signed(&ca_key)
            .context("failed to sign the CA certificate")?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().context("failed to generate the server key")?;
        let mut server = CertificateParams::new(server_names.to_vec())
            .context("a --server-name cannot go in a certificate")?;
        server.distinguished_name = rcgen::DistinguishedName::new();
        server
            .distinguished_name
            .push(DnType::CommonName, server_names[0].as_str());
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        validity(&mut server);
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .context("failed to sign the server certificate")?;

        let client_key = KeyPair::generate().context("failed to generate the client key")?;
        let mut client = CertificateParams::default();
        client.distinguished_name = rcgen::DistinguishedName::new();
        client
            .distinguished_name
            .push(DnType::CommonName, CLIENT_CN);
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.use_authority_key_identifier_extension = true;
        validity(&mut client);
        let client_cert = client
            .signed_by(&client_key, &issuer)
            .context("failed to sign the client certificate")?;

        Ok(Pki {
            ca_cert: ca_cert.pem(),
            ca_key: issuer.key().serialize_pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
            not_after: end.to_string(),
        })
    }
}

/// The kubeconfig for `--audit-webhook-config-file`: the cluster is kubetrail, the user is kube-apiserver.
pub(super) fn kubeconfig(url: &str, pki: &Pki) -> String {
    format!(
        "# kube-apiserver's audit webhook configuration (--audit-webhook-config-file), written by\n\
         # `kubetrail setup`. It holds kube-apiserver's client key: keep it mode 0600.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kubetrail\n\
         \x20 cluster:\n\
         \x20   server: {server}\n\
         \x20   certificate-authority-data: {ca}\n\
         users:\n\
         - name: {CLIENT_CN}\n\
         \x20 user:\n\
         \x20   client-certificate-data: {cert}\n\
         \x20   client-key-data: {key}\n\
         contexts:\n\
         - name: kubetrail\n\
         \x20 context:\n\
         \x20   cluster: kubetrail\n\
         \x20   user: {CLIENT_CN}\n\
         current-context: kubetrail\n",
        server = quote(url),
        ca = base64(pki.ca_cert.as_bytes()),
        cert = base64(pki.client_cert.as_bytes()),
        key = base64(pki.client_key.as_bytes()),
    )
}
