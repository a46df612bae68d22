//! The binding context of a format-2 object (`docs/FORMAT.md`, section 1.1): the place an
//! object belongs to. It is stored in the header, and every chunk's AAD covers the header,
//! so an encrypted object opens only where it was written: in this repository, this
//! environment, for this cluster, under this logical name.
//!
//! ```text
//! size  field
//!   16  repository id (random, `repository_id` in walvault.json)
//!    8  system identifier, u64 big-endian (0: not bound to a cluster)
//!    1  environment length E (1..=255), then E bytes of UTF-8
//!    2  object name length N (1..=1024), u16 big-endian, then N bytes of UTF-8
//! ```

use std::fmt;

/// Longest environment name a context holds, in bytes.
pub const MAX_ENV_LEN: usize = 255;
/// Longest logical object name a context holds, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest encoded context.
pub const MAX_CONTEXT_LEN: usize = 16 + 8 + 1 + MAX_ENV_LEN + 2 + MAX_NAME_LEN;

/// Where an object belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The repository's random id.
    pub repository: [u8; 16],
    /// The environment (`WALVAULT_ENV`).
    pub env: String,
    /// The PostgreSQL system identifier; 0 for objects that belong to no cluster.
    pub system_identifier: u64,
    /// The logical name: `wal/<file>`, `backup/<name>/part/<i>`, `backup/<name>/manifest`,
    /// `files/<kind>/<name>/<file>`, `report/<name>`.
    pub object: String,
}

impl Context {
    /// The context's bytes as stored in the header; `None` when a field is too long or empty.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let (env, name) = (self.env.as_bytes(), self.object.as_bytes());
        if env.is_empty() || env.len() > MAX_ENV_LEN || name.is_empty() || name.len() > MAX_NAME_LEN {
            return None;
        }
        let mut out = Vec::with_capacity(16 + 8 + 1 + env.len() + 2 + name.len());
        out.extend_from_slice(&self.repository);
        out.extend_from_slice(&self.system_identifier.to_be_bytes());
        out.push(u8::try_from(env.len()).ok()?);
        out.extend_from_slice(env);
        out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_be_bytes());
        out.extend_from_slice(name);
        Some(out)
    }

    /// Parse stored context bytes; `None` unless they are exactly one well-formed context.
    pub fn parse(bytes: &[u8]) -> Option<Context> {
        let repository: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let system_identifier = u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
        let env_len = usize::from(*bytes.get(24)?);
        let env = std::str::from_utf8(bytes.get(25..25 + env_len)?).ok()?;
        let at = 25 + env_len;
        let name_len = usize::from(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
        let name = std::str::from_utf8(bytes.get(at + 2..at + 2 + name_len)?).ok()?;
        let parsed = Context { repository, env: env.to_string(), system_identifier, object: name.to_string() };
        (at + 2 + name_len == bytes.len() && parsed.encode().is_some()).then_some(parsed)
    }

    /// The repository id as 32 lowercase hex digits.
    pub fn repository_hex(&self) -> String {
        hex::encode(self.repository)
    }

    /// How `self` (what an object says) differs from `wanted`, one clause per field; empty
    /// when they agree. A stored system identifier of 0 agrees when `cluster_optional`.
    pub fn differences(&self, wanted: &Context, cluster_optional: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.object != wanted.object {
            out.push(format!("it holds {}, not {} (the object was renamed or copied)", self.object, wanted.object));
        }
        if self.env != wanted.env {
            out.push(format!("it was written in environment {}, not {}", self.env, wanted.env));
        }
        let sysid_ok =
            self.system_identifier == wanted.system_identifier || (cluster_optional && self.system_identifier == 0);
        if !sysid_ok {
            out.push(format!(
                "it was written for the cluster with system identifier {}, not {}",
                self.system_identifier, wanted.system_identifier
            ));
        }
        if self.repository != wanted.repository {
            out.push(format!(
                "it was written in repository {}, not this repository {}",
                self.repository_hex(),
                wanted.repository_hex()
            ));
        }
        out
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in environment {} of repository {} (system identifier {})",
            self.object,
            self.env,
            self.repository_hex(),
            self.system_identifier
        )
    }
}

/// What a reader demands of an object's place.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The place the object must be bound to.
    pub context: Context,
    /// Whether a stored system identifier of 0 (written before the environment's cluster was
    /// known: a history file, for one) is accepted too.
    pub cluster_optional: bool,
    /// A format-1 object (bound to no place) is accepted only with `Ok`; `Err` says why not.
    pub format1: Result<(), String>,
}

impl Expect {
    /// Demand exactly `context`, refusing format-1 objects with `why`.
    pub fn strict(context: Context) -> Expect {
        Expect { context, cluster_optional: false, format1: Err("this repository writes format 2 only".into()) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            repository: [0x11; 16],
            env: "production".into(),
            system_identifier: 7_300_000_000_000_000_005,
            object: "wal/000000010000000000000003".into(),
        }
    }

    #[test]
    fn known_encoding() {
        let bytes = ctx().encode().unwrap();
        let mut want = vec![0x11; 16];
        want.extend_from_slice(&7_300_000_000_000_000_005u64.to_be_bytes());
        want.push(10);
        want.extend_from_slice(b"production");
        want.extend_from_slice(&[0, 28]);
        want.extend_from_slice(b"wal/000000010000000000000003");
        assert_eq!(bytes, want);
        assert_eq!(Context::parse(&bytes).unwrap(), ctx());
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let bytes = ctx().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Context::parse(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Context::parse(&longer).is_none());
    }

    #[test]
    fn field_limits() {
        let mut c = ctx();
        c.env = String::new();
        assert!(c.encode().is_none());
        c.env = "e".repeat(MAX_ENV_LEN);
        c.object = "o".repeat(MAX_NAME_LEN);
        assert_eq!(c.encode().unwrap().len(), MAX_CONTEXT_LEN);
        c.object.push('o');
        assert!(c.encode().is_none());
    }

    #[test]
    fn differences_name_each_field() {
        let want = ctx();
        assert!(ctx().differences(&want, false).is_empty());
        let mut other = ctx();
        other.object = "wal/000000010000000000000004".into();
        other.env = "staging".into();
        other.system_identifier = 0;
        other.repository = [0x22; 16];
        let d = other.differences(&want, false);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[0].contains("renamed or copied") && d[1].contains("staging") && d[3].contains(&"22".repeat(16)));
        assert_eq!(other.differences(&want, true).len(), 3, "system identifier 0 is accepted when optional");
    }
}
