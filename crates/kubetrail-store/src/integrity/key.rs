//! The installation's Ed25519 checkpoint signing key ([`Signer`], kept in `DATA/integrity.key`) and the public
//! key checkpoints are verified with ([`PublicKey`], as PEM for export).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{IntegrityError, hex, io_err, sync_dir};

/// SubjectPublicKeyInfo DER prefix of an Ed25519 public key (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The installation's checkpoint signing key.
pub struct Signer {
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte secret key (seed).
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Loads the key file (32 bytes), or creates it (mode 0600, written aside, synced, renamed into place) from
    /// `random()` when there is none.
    pub fn load_or_create(
        path: &Path,
        random: impl FnOnce() -> io::Result<[u8; 32]>,
    ) -> Result<Signer, IntegrityError> {
        match Signer::load(path) {
            Err(IntegrityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let seed = random().map_err(io_err(path))?;
        let tmp = path.with_extension("key.tmp");
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&seed)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(dir)?;
        }
        Ok(Signer::from_seed(seed))
    }

    /// Loads an existing key file.
    pub fn load(path: &Path) -> Result<Signer, IntegrityError> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| IntegrityError::Key {
                path: path.to_path_buf(),
                reason: format!("expected 32 bytes, found {}", bytes.len()),
            })?;
        Ok(Signer::from_seed(seed))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// The public key as PEM (SubjectPublicKeyInfo, what `openssl pkey -pubin` reads).
    pub fn public_key_pem(&self) -> String {
        self.public_key().to_pem()
    }

    pub(super) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// A detached Ed25519 signature of `message`, base64, for documents other than checkpoints (the S3
    /// archive's manifests).
    pub fn sign_detached(&self, message: &[u8]) -> String {
        BASE64.encode(self.sign(message))
    }
}

/// An Ed25519 public key that checkpoints are verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(super) VerifyingKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, IntegrityError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| IntegrityError::PublicKey("not a valid Ed25519 point".into()))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// First 16 hex digits of the SHA-256 of the 32 key bytes: names the key in every checkpoint.
    pub fn key_id(&self) -> String {
        hex(&Sha256::digest(self.to_bytes()))[..16].to_string()
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.to_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            BASE64.encode(der)
        )
    }

    /// Whether `signature` (base64, from [`Signer::sign_detached`]) is this key's signature of `message`.
    pub fn verify_detached(&self, message: &[u8], signature: &str) -> bool {
        BASE64
            .decode(signature)
            .ok()
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .is_some_and(|sig| {
                self.0
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
                    .is_ok()
            })
    }

    /// Reads a `PUBLIC KEY` PEM block (the first one in `text`).
    pub fn from_pem(text: &str) -> Result<PublicKey, IntegrityError> {
        let bad = |why: &str| IntegrityError::PublicKey(why.to_string());
        let start = text
            .find("-----BEGIN PUBLIC KEY-----")
            .ok_or_else(|| bad("no `-----BEGIN PUBLIC KEY-----` line"))?;
        let body = &text[start + "-----BEGIN PUBLIC KEY-----".len()..];
        let end = body
            .find("-----END PUBLIC KEY-----")
            .ok_or_else(|| bad("no `-----END PUBLIC KEY-----` line"))?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = BASE64
            .decode(b64)
            .map_err(|e| bad(&format!("bad base64: {e}")))?;
        if der.len() != 44 || der[..12] != SPKI_PREFIX {
            return Err(bad("not an Ed25519 SubjectPublicKeyInfo"));
        }
        PublicKey::from_bytes(der[12..].try_into().expect("32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_pem_round_trips() {
        let s = Signer::from_seed([7; 32]);
        let pem = s.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), s.public_key());
        assert_eq!(s.public_key().key_id().len(), 16);
    }

    #[test]
    fn detached_signatures_verify_only_for_their_message_and_key() {
        let s = Signer::from_seed([7; 32]);
        let sig = s.sign_detached(b"manifest");
        assert!(s.public_key().verify_detached(b"manifest", &sig));
        assert!(!s.public_key().verify_detached(b"manifesT", &sig));
        assert!(
            !Signer::from_seed([8; 32])
                .public_key()
                .verify_detached(b"manifest", &sig)
        );
        assert!(!s.public_key().verify_detached(b"manifest", "not base64"));
    }
}
