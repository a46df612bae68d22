//! The keys of a process from its settings, and the choice to run without one.
//!
//! Rules (`docs/FORMAT.md`, section 2.1; `docs/SECURITY.md`): a key is required unless
//! `WALVAULT_ENCRYPTION=none` says otherwise; an empty key or key file is an error, never
//! "no encryption"; material that is not a key is an error naming the setting, never
//! silently a passphrase (those are declared: `passphrase:<text>`).

use std::path::Path;

use super::RawSettings;
use crate::codec::crypt::{Key, Keyring};
use crate::{Error, Result};

/// Largest key file read (a key is 44 characters; a passphrase a line).
pub const MAX_KEY_FILE: u64 = 4096;

/// Why a process without a key does not start.
pub const NO_KEY: &str = "not set: walvault encrypts every object; set BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE to a random key (openssl rand -base64 32), or WALVAULT_ENCRYPTION=none to store objects unencrypted";

/// The keys, and whether running without one was asked for (`WALVAULT_ENCRYPTION=none`).
pub(super) fn keyring(raw: &RawSettings) -> Result<Keyring> {
    let unencrypted = match raw.get("WALVAULT_ENCRYPTION").map(str::trim) {
        None | Some("required") => false,
        Some("none") => true,
        Some(v) => {
            return Err(Error::config(
                "WALVAULT_ENCRYPTION",
                format!(
                    "{v:?} is not allowed; expected required (the default: a key must be configured) or none (objects are stored unencrypted)"
                ),
            ));
        }
    };
    let write = match (raw.get("BACKUP_ENCRYPTION_KEY"), raw.get("WALVAULT_KEY_FILE")) {
        (Some(_), Some(_)) => {
            return Err(Error::config(
                "WALVAULT_KEY_FILE",
                "set either BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE, not both",
            ));
        }
        (Some(material), None) => Some(Key::from_material(material.as_bytes(), "BACKUP_ENCRYPTION_KEY")?),
        (None, Some(path)) => Some(key_from_file(path, "WALVAULT_KEY_FILE")?),
        (None, None) => None,
    };
    let mut read = Vec::new();
    for material in list_setting(raw.get("WALVAULT_READ_KEYS")) {
        read.push(Key::from_material(material.as_bytes(), "WALVAULT_READ_KEYS")?);
    }
    for path in list_setting(raw.get("WALVAULT_READ_KEY_FILES")) {
        read.push(key_from_file(path, "WALVAULT_READ_KEY_FILES")?);
    }
    match (unencrypted, write.is_some() || !read.is_empty()) {
        (true, true) => Err(Error::config(
            "WALVAULT_ENCRYPTION",
            "is none but a key is configured (BACKUP_ENCRYPTION_KEY, WALVAULT_KEY_FILE, WALVAULT_READ_KEYS or WALVAULT_READ_KEY_FILES); remove one or the other",
        )),
        (true, false) => Ok(Keyring::unencrypted()),
        (false, false) => Err(Error::config("BACKUP_ENCRYPTION_KEY", NO_KEY)),
        (false, true) => Ok(Keyring::new(write, read)),
    }
}

fn list_setting(value: Option<&str>) -> impl Iterator<Item = &str> {
    value.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Key material from a file: a regular file of at most [`MAX_KEY_FILE`] bytes (a FIFO or a
/// device is refused, never waited on or read without bound).
fn key_from_file(path: &str, setting: &str) -> Result<Key> {
    if path.trim().is_empty() {
        return Err(Error::config(setting, "is set but empty; expected the path of a key file"));
    }
    let path = Path::new(path);
    let (bytes, _) = crate::fsutil::read_regular(path, MAX_KEY_FILE)
        .map_err(|e| Error::config(setting, format!("cannot read key file {}: {e}", path.display())))?;
    warn_if_readable_by_others(path);
    Key::from_material(&bytes, setting)
}

/// Key files and config files holding keys should be 0600; say so once when they are not.
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!("{} is readable by group or others; chmod 600 it", path.display());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::tests::{err, raw};
    use super::super::{Config, MAX_CONFIG_FILE, Overrides, RawSettings};

    const REPO: (&str, &str) = ("WALVAULT_REPO", "file:///tmp/r");
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn a_key_is_required_unless_none_is_chosen() {
        assert_eq!(
            err(&[REPO, ("WALVAULT_ENCRYPTION", "required")]),
            format!("setting BACKUP_ENCRYPTION_KEY: {}", super::NO_KEY)
        );
        let cfg = Config::from_raw(&raw(&[REPO, ("WALVAULT_ENCRYPTION", "none")])).expect("config");
        assert!(cfg.keyring.unencrypted_by_choice() && !cfg.keyring.is_encrypted());
        let cfg = Config::from_raw(&raw(&[REPO, ("BACKUP_ENCRYPTION_KEY", KEY)])).expect("config");
        assert!(cfg.keyring.is_encrypted() && !cfg.keyring.unencrypted_by_choice());
        // read keys alone start (a restore), but are not a write key (see identity::check_can_write)
        let cfg = Config::from_raw(&raw(&[REPO, ("WALVAULT_READ_KEYS", KEY)])).expect("config");
        assert!(!cfg.keyring.is_encrypted() && !cfg.keyring.unencrypted_by_choice());
        let e = err(&[REPO, ("WALVAULT_ENCRYPTION", "none"), ("BACKUP_ENCRYPTION_KEY", KEY)]);
        assert!(e.starts_with("setting WALVAULT_ENCRYPTION: is none but a key is configured"), "{e}");
        let e = err(&[REPO, ("WALVAULT_ENCRYPTION", "off")]);
        assert!(e.starts_with("setting WALVAULT_ENCRYPTION: \"off\" is not allowed; expected required"), "{e}");
    }

    #[test]
    fn empty_key_settings_are_errors_not_unencrypted() {
        // An empty environment variable counts as set for the key settings.
        for (name, value) in
            [("BACKUP_ENCRYPTION_KEY", ""), ("BACKUP_ENCRYPTION_KEY", " \n"), ("WALVAULT_KEY_FILE", "")]
        {
            let env: BTreeMap<&str, &str> = BTreeMap::from([REPO, (name, value)]);
            let r =
                RawSettings::load_from(None, &Overrides::new(), |n| env.get(n).map(|v| v.to_string())).expect("load");
            let e = Config::from_raw(&r).expect_err("refused").to_string();
            assert!(e.starts_with(&format!("setting {name}: ")), "{e}");
            assert!(e.contains("empty"), "{e}");
        }
        let env = BTreeMap::from([REPO, ("WALVAULT_ENCRYPTION", "")]);
        let r = RawSettings::load_from(None, &Overrides::new(), |n| env.get(n).map(|v| v.to_string())).expect("load");
        assert!(Config::from_raw(&r).expect_err("refused").to_string().starts_with("setting WALVAULT_ENCRYPTION:"));
    }

    #[test]
    fn key_files_must_be_small_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            p.display().to_string()
        };
        let empty = file("empty", b"\n");
        let big = file("big", &vec![b'a'; 5000]);
        let good = file("good", format!("{KEY}\n").as_bytes());
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
        let fifo = fifo.display().to_string();
        let cases = [
            (empty.as_str(), "key material is empty"),
            (big.as_str(), "larger than 4096 bytes"),
            (fifo.as_str(), "not a regular file (a FIFO)"),
            ("/dev/zero", "not a regular file (a character device)"),
            (dir.path().to_str().expect("utf8"), "not a regular file (a directory)"),
        ];
        for (path, why) in cases {
            let e = err(&[REPO, ("WALVAULT_KEY_FILE", path)]);
            assert!(e.starts_with("setting WALVAULT_KEY_FILE: "), "{e}");
            assert!(e.contains(why), "{path}: {e}");
        }
        let e = err(&[REPO, ("WALVAULT_READ_KEY_FILES", &format!("{good},{fifo}"))]);
        assert!(e.starts_with("setting WALVAULT_READ_KEY_FILES: ") && e.contains("a FIFO"), "{e}");
        let cfg = Config::from_raw(&raw(&[REPO, ("WALVAULT_KEY_FILE", &good)])).expect("config");
        assert!(cfg.keyring.is_encrypted());
    }

    #[test]
    fn config_files_must_be_small_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
        let big = dir.path().join("big.conf");
        let line = "# a comment line of the config file, repeated\n";
        let text = line.repeat(usize::try_from(MAX_CONFIG_FILE).expect("size") / line.len() + 1);
        std::fs::write(&big, text).expect("write");
        let cases = [
            (Path::new("/dev/zero"), "not a regular file (a character device)"),
            (fifo.as_path(), "not a regular file (a FIFO)"),
            (big.as_path(), "larger than 1048576 bytes"),
        ];
        for (path, why) in cases {
            let e = RawSettings::load_from(Some(path), &Overrides::new(), |_| None).expect_err("refused").to_string();
            assert_eq!(e, format!("config file {}: {why}; expected a file of NAME=value lines", path.display()));
        }
    }
}
