//! While `serve` runs: the identities' token files and the TLS files read again every [`EVERY`] and put in
//! force when they changed (`kubetrail_server::Live`): a token rotated, an identity's file replaced, or a
//! certificate renewed in place (cert-manager, the kubelet's Secret volume) needs no restart. A token file
//! that does not load (removed, exposed, too short) fails closed: its identity keeps no token until it loads.
//! TLS files that do not load keep the certificate in force (refusing every handshake would blind the
//! webhook). Either is logged once. Identities added, removed or given another role in the config file need a
//! restart. The server certificate's expiry is watched too: [`EXPIRY_WARNING`] before it, the `kt-tls-
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

/// The most bytes a TLS file may hold.
const MAX_TLS_FILE: u64 = 1 << 20;

/// What the TLS files hold now, or why one cannot be read (not a regular file, over 1 MiB, missing): read
/// without blocking (a FIFO put in a file's place cannot stall the reloads).
fn fingerprint(files: &TlsFiles) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let (bytes, _) = crate::config::read_regular(path, MAX_TLS_FILE)
            .map_err(|e| format!("`{}` cannot be read: {e}", path.display()))?;
        h.update(bytes);
        h.update([0]);
    }
    Ok(h.finalize().into())
}

/// Re-reads until `stop`: the identities `source` names (its `auth` and `tls`), in force now as `identities`,
/// and the `tls` files; raises the expiry alert into `alerts`. A round that panics is logged and the next one
/// runs: the reloads never stop silently.
pub fn run(
    live: &Live,
    source: Config,
    identities: Vec<Identity>,
    tls: Option<TlsFiles>,
    alerts: &Path,
    stop: &AtomicBool,
) {
    let mut state = State {
        tls_print: tls.as_ref().and_then(|f| fingerprint(f).ok()),
        identities,
        last_error: None,
        warned: None,
    };
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next = Instant::now() + EVERY;
        let round =
            std::panic::AssertUnwindSafe(|| state.round(live, &source, tls.as_ref(), alerts));
        if std::panic::catch_unwind(round).is_err() {
            tracing::error!("re-reading the token and TLS files failed unexpectedly; trying again");
        }
    }
}

/// What the rounds remember.
struct State {
    identities: Vec<Identity>,
    tls_print: Option<[u8; 32]>,
    /// The problems of the last round, logged when they changed.
    last_error: Option<String>,
    /// The certificate end the expiry alert was raised for.
    warned: Option<i64>,
}

impl State {
    fn round(&mut self, live: &Live, source: &Config, tls: Option<&TlsFiles>, alerts: &Path) {
        // Each identity fails closed: one whose token file does not load keeps no token (a revoked token must
        // not stay in force because its file was removed or broken).
        let (now, mut errors) = source.identities_failing_closed();
        if now != self.identities {
            live.identities(&now);
            tracing::info!(
                identities = now.len(),
                "identities read again and in force (sessions of a changed token ended)"
            );
            self.identities = now;
        }
        if let Some(files) = tls {
            match fingerprint(files) {
                Ok(print) if Some(print) != self.tls_print => match live.reload_tls() {
                    Ok(()) => {
                        tracing::info!(cert = %files.cert.display(), "TLS certificate, key and client CA read again and in force");
                        self.tls_print = Some(print);
                    }
                    Err(e) => errors.push(format!("keeping the TLS certificate in force: {e}")),
                },
                Ok(_) => {}
                Err(e) => errors.push(format!("keeping the TLS certificate in force: {e}")),
            }
            if live.certificate_expiry().is_none() {
                errors.push(format!(
                    "the end of validity of `{}` cannot be read: its expiry is not watched",
                    files.cert.display()
                ));
            }
        }
        // Each problem once, until it changes or passes.
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        if error.is_some() && error != self.last_error {
            tracing::error!("{}", error.as_deref().unwrap_or_default());
        }
        self.last_error = error;
        if let (Some(end), Some(files)) = (live.certificate_expiry(), tls)
            && self.warned != Some(end)
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
                self.warned = Some(end);
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
