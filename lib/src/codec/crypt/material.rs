//! Key material as configured: a random key (hex or base64), a declared passphrase, or a
//! mistake. A mistake is always an error naming the setting and what is allowed, never a
//! passphrase by default: a typo must not become a new key (`docs/FORMAT.md`, section 2.1).
//!
//! Error messages describe the material (its length, the kind of character that is wrong),
//! never its content.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use super::KEY_LEN;
use crate::{Error, Result};

/// Prefix that declares key material a passphrase: `passphrase:<text>`.
pub const PASSPHRASE_PREFIX: &str = "passphrase:";

/// What is allowed, for every error message.
pub const ALLOWED: &str = "expected 64 hex digits (openssl rand -hex 32), base64 of 32 bytes (openssl rand -base64 32), or passphrase:<text> for a passphrase";

/// Configured key material, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Material<'a> {
    /// 32 bytes given as hex or base64: the master key itself.
    Raw([u8; KEY_LEN]),
    /// The text after `passphrase:`, without surrounding whitespace.
    Passphrase(&'a [u8]),
}

/// Classify `material` (surrounding whitespace ignored).
///
/// # Errors
/// [`Error::Config`] naming `setting`: empty material, an empty passphrase or one with a
/// quote or control character, a quote or whitespace inside a key, hex digits that are not
/// exactly 64, base64 that does not encode exactly 32 bytes, or anything else.
pub fn classify<'a>(material: &'a [u8], setting: &str) -> Result<Material<'a>> {
    let bad = |why: String| Error::config(setting, format!("{why}; {ALLOWED}"));
    let material = material.trim_ascii();
    if material.is_empty() {
        return Err(Error::config(setting, format!("key material is empty; {ALLOWED}")));
    }
    if let Some(text) = material.strip_prefix(PASSPHRASE_PREFIX.as_bytes()) {
        return passphrase(text.trim_ascii()).map(Material::Passphrase).map_err(|why| bad(why.to_string()));
    }
    if let Some(c) = material.iter().find(|c| matches!(c, b'"' | b'\'' | b'`')) {
        return Err(bad(format!("key material contains a quote ({})", *c as char)));
    }
    if material.iter().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) {
        return Err(bad("key material contains whitespace or a control character inside".to_string()));
    }
    let len = material.len();
    if material.iter().all(u8::is_ascii_hexdigit) {
        let mut key = [0u8; KEY_LEN];
        if len == 2 * KEY_LEN && hex::decode_to_slice(material, &mut key).is_ok() {
            return Ok(Material::Raw(key));
        }
        // 43 or 44 characters of base64 may happen to be hex digits only.
        return match decode_base64(material) {
            Some(key) => Ok(Material::Raw(key)),
            None => Err(bad(format!("key material is {len} hex digits, not 64"))),
        };
    }
    if is_base64_alphabet(material) {
        return match decode_base64(material) {
            Some(key) => Ok(Material::Raw(key)),
            None => Err(bad(format!(
                "key material looks like base64 but is not the encoding of exactly 32 bytes ({len} characters; a 32-byte key is 43, or 44 with its =)"
            ))),
        };
    }
    Err(bad("key material is neither hex nor base64".to_string()))
}

/// A declared passphrase: not empty, no quotes (a config file quoting mistake), no control
/// characters (a line break or tab pasted inside); spaces are allowed.
fn passphrase(text: &[u8]) -> std::result::Result<&[u8], &'static str> {
    if text.is_empty() {
        return Err("the passphrase after passphrase: is empty");
    }
    if text.iter().any(|c| matches!(c, b'"' | b'\'' | b'`')) {
        return Err("the passphrase contains a quote (check the quoting in the config file)");
    }
    if text.iter().any(u8::is_ascii_control) {
        return Err("the passphrase contains a control character (a line break or tab inside)");
    }
    Ok(text)
}

/// Letters, digits, `+/` or `-_`, and at most two `=` at the end.
fn is_base64_alphabet(material: &[u8]) -> bool {
    let body = material.strip_suffix(b"==").or_else(|| material.strip_suffix(b"=")).unwrap_or(material);
    !body.is_empty() && body.iter().all(|c| c.is_ascii_alphanumeric() || b"+/-_".contains(c))
}

/// Base64 (standard or URL-safe, with or without its one `=`) of exactly 32 bytes.
fn decode_base64(material: &[u8]) -> Option<[u8; KEY_LEN]> {
    let unpadded = material.strip_suffix(b"=").unwrap_or(material);
    [STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .filter_map(|engine| engine.decode(unpadded).ok())
        .find_map(|bytes| <[u8; KEY_LEN]>::try_from(bytes.as_slice()).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn err(material: &str) -> String {
        classify(material.as_bytes(), "BACKUP_ENCRYPTION_KEY").unwrap_err().to_string()
    }

    #[test]
    fn keys_and_declared_passphrases() {
        assert!(matches!(classify(HEX.as_bytes(), "K").unwrap(), Material::Raw(_)));
        assert!(matches!(classify(B64.as_bytes(), "K").unwrap(), Material::Raw(_)));
        assert_eq!(classify(b"passphrase:correct horse", "K").unwrap(), Material::Passphrase(b"correct horse"));
        assert_eq!(classify(b" passphrase:  two words \n", "K").unwrap(), Material::Passphrase(b"two words"));
        // declared, even when the text would be a key
        assert_eq!(
            classify(format!("passphrase:{HEX}").as_bytes(), "K").unwrap(),
            Material::Passphrase(HEX.as_bytes())
        );
    }

    #[test]
    fn mistakes_are_errors_naming_the_setting_and_what_is_allowed() {
        let cases = [
            ("", "key material is empty"),
            (" \n\t", "key material is empty"),
            (&format!("{HEX}0"), "key material is 65 hex digits, not 64"),
            (&HEX[1..], "key material is 63 hex digits, not 64"),
            ("deadbeef", "key material is 8 hex digits, not 64"),
            (&format!("\"{B64}"), "key material contains a quote (\")"),
            (&format!("{HEX}'"), "key material contains a quote (')"),
            (
                &format!("{} {}", &HEX[..32], &HEX[32..]),
                "key material contains whitespace or a control character inside",
            ),
            (&B64[4..], "key material looks like base64 but is not the encoding of exactly 32 bytes (40 characters"),
            ("correct-horse-battery-staple", "key material looks like base64 but is not"),
            ("correct horse battery staple", "key material contains whitespace"),
            ("hunter2!", "key material is neither hex nor base64"),
            ("passphrase:", "the passphrase after passphrase: is empty"),
            ("passphrase:  \n", "the passphrase after passphrase: is empty"),
            ("passphrase:it's", "the passphrase contains a quote"),
            ("passphrase:a\tb", "the passphrase contains a control character"),
        ];
        for (material, why) in cases {
            let e = err(material);
            assert!(e.starts_with(&format!("setting BACKUP_ENCRYPTION_KEY: {why}")), "{material:?}: {e}");
            assert!(e.ends_with(ALLOWED), "{material:?}: {e}");
        }
    }

    #[test]
    fn errors_never_quote_the_material() {
        for material in ["Zm9vYmFyYmF6cXV4cXV1eHF1dXg", "s3cr3t-v4lu3!", "passphrase:it's-s3cr3t", "abcdef0123"] {
            let e = err(material);
            assert!(!e.contains(material), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
