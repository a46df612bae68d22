//! The key that authenticates backup metadata (`*_metadata.json`, `docs/FORMAT.md` section 7):
//! derived from a master key with HKDF-SHA256 under its own label, so it is never the master
//! key itself and never any object's key.

use ring::{hkdf, hmac};

use super::Key;
use crate::{Error, Result};

/// HKDF-SHA256 info for the backup-metadata MAC key (the salt is empty).
pub const METADATA_MAC_INFO: &[u8] = b"walvault/v1/backup-metadata-mac";

impl Key {
    /// The HMAC-SHA256 key of backup metadata: HKDF-SHA256(salt = empty, input key material =
    /// master key, info = [`METADATA_MAC_INFO`], length = 32).
    ///
    /// # Errors
    /// Only if HKDF refused the length (it does not for 32 bytes).
    pub fn metadata_mac_key(&self) -> Result<hmac::Key> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&self.master);
        let okm = prk
            .expand(&[METADATA_MAC_INFO], hmac::HMAC_SHA256)
            .map_err(|_| Error::Invalid("hkdf expansion of the metadata key failed".into()))?;
        Ok(hmac::Key::from(okm))
    }
}
