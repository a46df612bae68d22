//! Keys: parsing key material, the fingerprint, passphrase stretching, per-object keys, keyrings.
//!
//! Knows nothing of compression or storage. The chunked AES-256-GCM framing that uses these
//! keys lives in `chunk.rs`; `docs/FORMAT.md` gives every constant below and why.

use std::fmt;
use std::num::NonZeroU32;

use ring::{aead, hkdf, hmac, pbkdf2};

use crate::{Error, Result};

pub mod material;
mod metadata_key;
pub use material::PASSPHRASE_PREFIX;
pub use metadata_key::METADATA_MAC_INFO;

/// Length of a master key and of a per-object key, in bytes.
pub const KEY_LEN: usize = 32;

/// PBKDF2-HMAC-SHA256 iterations for passphrases: about 2 ms per process on one core in a
/// release build (see `docs/FORMAT.md`), paid once per `wal-push`/`wal-fetch` call. A modest speed bump for an
/// attacker, not a defence for a weak passphrase: random keys are recommended.
pub const PASSPHRASE_ITERATIONS: u32 = 10_000;
const ITERATIONS: NonZeroU32 = match NonZeroU32::new(PASSPHRASE_ITERATIONS) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};
/// The fixed PBKDF2 salt (domain separation; there is no per-repository salt).
pub const PASSPHRASE_SALT: &[u8] = b"walvault/v1/passphrase";
/// HMAC-SHA256 message whose output's first 8 bytes are the key fingerprint.
pub const FINGERPRINT_INFO: &[u8] = b"walvault/v1/key-fingerprint";
/// HMAC-SHA256 message whose output keys the content digest of encrypted objects.
pub const DIGEST_KEY_INFO: &[u8] = b"walvault/v1/content-digest-key";
/// HKDF-SHA256 info for the per-object AES-256-GCM key (the salt is the header's salt).
pub const OBJECT_KEY_INFO: &[u8] = b"walvault/v1/object-key";

/// A 32-byte master key and its fingerprint. `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct Key {
    master: [u8; KEY_LEN],
    fingerprint: [u8; 8],
    passphrase: bool,
}

impl Key {
    /// Build a key from configured key material (surrounding whitespace is ignored).
    ///
    /// A random 32-byte key written as 64 hex digits, or as base64 (standard or URL-safe
    /// alphabet, padded or not, e.g. `openssl rand -base64 32`), is used as is. A passphrase
    /// must be declared as one, `passphrase:<text>`: the text is stretched with
    /// PBKDF2-HMAC-SHA256 ([`PASSPHRASE_ITERATIONS`] rounds, fixed salt [`PASSPHRASE_SALT`]):
    /// about 2 ms per process, so a passphrase must itself be long and random (at least 128
    /// bits: e.g. 22 random letters and digits); prefer a random key. Anything else is an
    /// error, so that a typo never becomes a new key.
    ///
    /// # Errors
    /// [`Error::Config`] naming `setting` and what is allowed (see [`material::classify`]);
    /// the message never contains the material.
    pub fn from_material(material: &[u8], setting: &str) -> Result<Key> {
        match material::classify(material, setting)? {
            material::Material::Raw(master) => Ok(Key::from_bytes(master)),
            material::Material::Passphrase(text) => {
                let mut master = [0u8; KEY_LEN];
                pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, ITERATIONS, PASSPHRASE_SALT, text, &mut master);
                let mut key = Key::from_bytes(master);
                key.passphrase = true;
                Ok(key)
            }
        }
    }

    /// A key from exactly 32 bytes of key material.
    pub fn from_bytes(master: [u8; KEY_LEN]) -> Key {
        let mut fingerprint = [0u8; 8];
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &master), FINGERPRINT_INFO);
        copy_prefix(&mut fingerprint, tag.as_ref());
        Key { master, fingerprint, passphrase: false }
    }

    /// First 8 bytes of HMAC-SHA256(key, [`FINGERPRINT_INFO`]): names the key, never reveals it.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// The fingerprint as 16 lowercase hex digits.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// True when the key was stretched from a passphrase (a binary may warn about that).
    pub fn is_passphrase(&self) -> bool {
        self.passphrase
    }

    /// The HMAC key for content digests of encrypted objects.
    pub(crate) fn digest_key(&self) -> hmac::Key {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.master), DIGEST_KEY_INFO);
        hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
    }

    /// The AES-256-GCM key of one object: HKDF-SHA256(salt, master key, [`OBJECT_KEY_INFO`]).
    pub(crate) fn object_key(&self, salt: &[u8]) -> Result<aead::LessSafeKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.master);
        let okm = prk
            .expand(&[OBJECT_KEY_INFO], &aead::AES_256_GCM)
            .map_err(|_| Error::Invalid("hkdf expansion of the object key failed".into()))?;
        Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("fingerprint", &self.fingerprint_hex()).finish()
    }
}

/// Copy as much of `src` as fits into `dst`.
pub(crate) fn copy_prefix(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

/// The keys of a process: at most one for writing, any number for reading. The write key is
/// also a read key; the fingerprint in an object's header picks the key that opens it.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    write: Option<Key>,
    read: Vec<Key>,
    /// Unencrypted writes were asked for explicitly (`WALVAULT_ENCRYPTION=none`).
    unencrypted: bool,
}

impl Keyring {
    /// A keyring that writes with `write` (if any) and reads with it and every key in `read`.
    /// Keys repeated by fingerprint are kept once.
    pub fn new(write: Option<Key>, read: Vec<Key>) -> Keyring {
        let mut ring = Keyring { write, read: Vec::with_capacity(read.len()), unencrypted: false };
        for key in read {
            if ring.find(&key.fingerprint).is_none() {
                ring.read.push(key);
            }
        }
        ring
    }

    /// No keys: objects are written unencrypted and encrypted objects cannot be read.
    pub fn none() -> Keyring {
        Keyring::default()
    }

    /// No keys, by explicit choice (`WALVAULT_ENCRYPTION=none`): objects are written
    /// unencrypted, and writers accept that.
    pub fn unencrypted() -> Keyring {
        Keyring { unencrypted: true, ..Keyring::default() }
    }

    /// True when objects may be written unencrypted: no write key, and that was asked for
    /// explicitly. A writer with neither a write key nor this refuses to write.
    pub fn unencrypted_by_choice(&self) -> bool {
        self.unencrypted && self.write.is_none()
    }

    /// The key new objects are encrypted with, if encryption is on.
    pub fn write_key(&self) -> Option<&Key> {
        self.write.as_ref()
    }

    /// The key with this fingerprint, if configured (for reading or writing).
    pub fn find(&self, fingerprint: &[u8; 8]) -> Option<&Key> {
        self.keys().find(|k| &k.fingerprint == fingerprint)
    }

    /// True when new objects are encrypted (there is a write key).
    pub fn is_encrypted(&self) -> bool {
        self.write.is_some()
    }

    /// True when no key at all is configured.
    pub fn is_empty(&self) -> bool {
        self.write.is_none() && self.read.is_empty()
    }

    /// Every key that can read, the write key first.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.write.iter().chain(self.read.iter())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn raw() -> [u8; 32] {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        k
    }

    #[test]
    fn hex_and_base64_forms_give_the_same_key() {
        let want = Key::from_bytes(raw()).fingerprint();
        let std_b64 = base64::engine::general_purpose::STANDARD.encode(raw());
        let url_b64 = base64::engine::general_purpose::URL_SAFE.encode(raw());
        let forms = [
            HEX.to_string(),
            HEX.to_uppercase(),
            format!("  {HEX}\n"),
            std_b64.clone(),
            format!("{std_b64}\n"),
            std_b64.trim_end_matches('=').to_string(),
            url_b64.clone(),
            url_b64.trim_end_matches('=').to_string(),
        ];
        for form in forms {
            let key = Key::from_material(form.as_bytes(), "K").unwrap();
            assert_eq!(key.fingerprint(), want, "{form:?}");
            assert!(!key.is_passphrase(), "{form:?}");
        }
    }

    #[test]
    fn url_safe_alphabet_is_accepted() {
        let bytes = [0xfbu8; 32]; // encodes with '+' / '-' and '/' / '_'
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert!(url.contains('-') || url.contains('_'));
        let key = Key::from_material(url.as_bytes(), "K").unwrap();
        assert_eq!(key.fingerprint(), Key::from_bytes(bytes).fingerprint());
    }

    #[test]
    fn declared_passphrases_are_stretched() {
        let a = Key::from_material(b"passphrase:correct horse battery staple\n", "K").unwrap();
        let b = Key::from_material(b"passphrase: correct horse battery staple", "K").unwrap();
        let c = Key::from_material(b"passphrase:correct horse battery stapler", "K").unwrap();
        assert!(a.is_passphrase());
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        // declared, 64 hex digits are a passphrase too (and not the key they spell)
        let declared = Key::from_material(format!("passphrase:{HEX}").as_bytes(), "K").unwrap();
        assert!(declared.is_passphrase());
        assert_ne!(declared.fingerprint(), Key::from_bytes(raw()).fingerprint());
    }

    #[test]
    fn undeclared_material_that_is_not_a_key_is_an_error() {
        // 63 hex digits, base64 of 31 bytes, a bare passphrase: never silently a passphrase
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
        for m in [&HEX[1..], short.as_str(), "correct horse battery staple"] {
            let e = Key::from_material(m.as_bytes(), "WALVAULT_READ_KEYS").unwrap_err();
            assert!(e.to_string().starts_with("setting WALVAULT_READ_KEYS: key material "), "{e}");
            assert!(e.to_string().contains("passphrase:<text>"), "{e}");
        }
    }

    #[test]
    fn passphrase_derivation_known_answer() {
        // PBKDF2-HMAC-SHA256("walvault test passphrase", "walvault/v1/passphrase", 10000)
        // then HMAC-SHA256(key, "walvault/v1/key-fingerprint")[..8]; see testdata/codec/README.md.
        // The prefix declares the passphrase and is not part of it.
        let key = Key::from_material(b"passphrase:walvault test passphrase", "K").unwrap();
        assert_eq!(key.fingerprint_hex(), include_str!("../../../testdata/codec/passphrase.fingerprint").trim());
    }

    #[test]
    fn empty_material_names_the_setting() {
        for empty in [&b""[..], b"  \n", b"\t"] {
            let err = Key::from_material(empty, "BACKUP_ENCRYPTION_KEY").unwrap_err();
            assert!(err.to_string().starts_with("setting BACKUP_ENCRYPTION_KEY: key material is empty; "), "{err}");
        }
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let key = Key::from_bytes(raw());
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("Key {{ fingerprint: {:?} }}", key.fingerprint_hex()));
        assert!(!shown.contains("0102"));
        assert_eq!(key.fingerprint_hex().len(), 16);
    }

    #[test]
    fn keyring_finds_write_and_read_keys() {
        let a = Key::from_bytes([1; 32]);
        let b = Key::from_bytes([2; 32]);
        let ring = Keyring::new(Some(b.clone()), vec![a.clone(), b.clone(), a.clone()]);
        assert!(ring.is_encrypted());
        assert_eq!(ring.keys().count(), 2);
        assert_eq!(ring.write_key().map(Key::fingerprint), Some(b.fingerprint()));
        assert!(ring.find(&a.fingerprint()).is_some());
        assert!(ring.find(&b.fingerprint()).is_some());
        assert!(ring.find(&[0; 8]).is_none());
        let reader = Keyring::new(None, vec![a]);
        assert!(!reader.is_encrypted() && !reader.is_empty());
        assert!(Keyring::none().is_empty());
    }

    #[test]
    fn object_keys_differ_by_salt() {
        let key = Key::from_bytes(raw());
        let nonce = || aead::Nonce::assume_unique_for_key([0; 12]);
        let seal = |salt: &[u8]| {
            let mut data = *b"same plaintext";
            let k = key.object_key(salt).unwrap();
            let _tag = k.seal_in_place_separate_tag(nonce(), aead::Aad::empty(), &mut data).unwrap();
            data
        };
        assert_ne!(seal(&[0; 32]), seal(&[1; 32]));
        assert_eq!(seal(&[0; 32]), seal(&[0; 32]));
    }
}
