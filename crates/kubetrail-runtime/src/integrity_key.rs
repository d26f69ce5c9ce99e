//! The installation's checkpoint signing key (`integrity.key` in the data directory), made on first use from
//! the system's random source.

use std::path::Path;

use anyhow::Context;
use kubetrail_store::Signer;
use kubetrail_store::integrity::KEY_FILE;

/// Loads the signing key, creating it (32 random bytes, mode 0600) if the data directory has none.
pub fn signer(dir: &Path) -> anyhow::Result<Signer> {
    let path = dir.join(KEY_FILE);
    Signer::load_or_create(&path, random_seed).with_context(|| {
        format!(
            "failed to load or create the integrity key `{}`",
            path.display()
        )
    })
}

/// Loads the signing key; a data directory without one is an error that says what to do.
pub fn existing_signer(dir: &Path) -> anyhow::Result<Signer> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        anyhow::bail!(
            "no integrity key `{}`: the data directory has never been checkpointed; run `kubetrail checkpoint \
             create --data {}`, or pass --public-key FILE",
            path.display(),
            dir.display()
        );
    }
    Signer::load(&path)
        .with_context(|| format!("failed to load the integrity key `{}`", path.display()))
}

fn random_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
    Ok(seed)
}
