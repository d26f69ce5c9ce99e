//! While `serve` runs: the identities' token files and the TLS files read again every [`EVERY`] and put in
//! force when they changed (`kubetrail_server::Live`): a token rotated, an identity's file replaced, or a
//! certificate renewed in place (cert-manager, the kubelet's Secret volume) needs no restart. What does not
//! load is logged once and the values in force stay, so a rotation caught half-written is taken on the next
//! round. The server certificate's expiry is watched too: [`EXPIRY_WARNING`] before it, the `kt-tls-
//! certificate-expiring` alert is raised (once per certificate), so a renewal that silently stopped is seen
//! before the apiserver's webhook calls start failing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kubetrail_server::{Identity, Live, TlsFiles};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// How often the files are read again.
pub const EVERY: Duration = Duration::from_secs(2);
/// How long before the certificate's end the alert is raised.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// What the TLS files hold now (`None` when one cannot be read).
fn fingerprint(files: &TlsFiles) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        h.update(std::fs::read(path).ok()?);
        h.update([0]);
    }
    Some(h.finalize().into())
}

/// Re-reads until `stop`: the identities `source` names (its `auth` and `tls`), in force now as `identities`,
/// and the `tls` files; raises the expiry alert into `alerts`.
pub fn run(
    live: &Live,
    source: Config,
    mut identities: Vec<Identity>,
    tls: Option<TlsFiles>,
    alerts: &Path,
    stop: &AtomicBool,
) {
    let mut tls_print = tls.as_ref().and_then(fingerprint);
    let mut last_error: Option<String> = None;
    let mut warned: Option<i64> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next = Instant::now() + EVERY;
        let mut errors = Vec::new();
        match source.identities() {
            Ok(now) if now != identities => {
                live.identities(&now);
                tracing::info!(
                    identities = now.len(),
                    "identities read again and in force (sessions of a changed token ended)"
                );
                identities = now;
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("keeping the identities in force: {e:#}")),
        }
        if let Some(files) = &tls {
            let print = fingerprint(files);
            if print.is_some() && print != tls_print {
                match live.reload_tls() {
                    Ok(()) => {
                        tracing::info!(cert = %files.cert.display(), "TLS certificate, key and client CA read again and in force");
                        tls_print = print;
                    }
                    Err(e) => errors.push(format!("keeping the TLS certificate in force: {e}")),
                }
            }
        }
        // Each failure once, until it changes or passes.
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        if error.is_some() && error != last_error {
            tracing::error!("{}", error.as_deref().unwrap_or_default());
        }
        last_error = error;
        if let (Some(end), Some(files)) = (live.certificate_expiry(), &tls)
            && warned != Some(end)
            && expiring(end, jiff::Timestamp::now().as_second())
        {
            let when = jiff::Timestamp::from_second(end)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| end.to_string());
            let summary = format!(
                "the server certificate `{}` stops being valid at {when}: kube-apiserver's webhook calls will \
                 fail then, and audit events pile up in its buffer until they are dropped. Renew it (cert-manager, \
                 `kubetrail setup webhook`); kubetrail takes the new files without a restart",
                files.cert.display()
            );
            let cert = files.cert.display().to_string();
            let command = format!("openssl x509 -noout -enddate -in {cert}");
            if crate::alerting::store::raise_system(
                alerts,
                "kt-tls-certificate-expiring",
                "TLS certificate about to expire",
                "high",
                &format!("tls:{end}"),
                &summary,
                &[&command],
            ) {
                warned = Some(end);
            }
        }
    }
}

/// Whether a certificate valid until `end` is within [`EXPIRY_WARNING`] of it (or past it) at `now`.
fn expiring(end: i64, now: i64) -> bool {
    end - now < EXPIRY_WARNING.as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_two_weeks_ahead() {
        let day = 86_400;
        assert!(!expiring(100 * day, 85 * day));
        assert!(expiring(100 * day, 87 * day));
        assert!(expiring(100 * day, 101 * day), "past its end");
    }
}
