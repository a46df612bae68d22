//! The system identifier of a PostgreSQL cluster (`pg_control`'s first field): the one
//! number every WAL page header, backup and repository environment carries. In JSON
//! (`walvault.json`, backup metadata, manifests) it is a decimal string, since JSON numbers
//! lose precision above 2^53; the cluster's own files carry it as a 64-bit integer.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A cluster's system identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SystemId {
    type Err = Error;

    /// Decimal digits only, written as [`Display`](fmt::Display) writes them (no sign, no
    /// leading zero), so that text and value stay one-to-one: the text is authenticated in
    /// backup metadata.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Invalid(format!("{s:?} is not a system identifier"));
        let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let id = s.parse::<u64>().ok().filter(|_| digits_only).map(SystemId).ok_or_else(bad)?;
        if id.to_string() != s {
            return Err(bad());
        }
        Ok(id)
    }
}

impl serde::Serialize for SystemId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SystemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_value_are_one_to_one() {
        let id: SystemId = "7324582734658237465".parse().expect("parses");
        assert_eq!(id, SystemId(7_324_582_734_658_237_465));
        assert_eq!(id.to_string(), "7324582734658237465");
        assert_eq!(serde_json::to_string(&id).expect("json"), "\"7324582734658237465\"");
        assert_eq!(serde_json::from_str::<SystemId>("\"18446744073709551615\"").expect("max"), SystemId(u64::MAX));
        for bad in ["", "+1", "-1", "01", " 1", "1 ", "0x10", "18446744073709551616", "1e3"] {
            assert!(bad.parse::<SystemId>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<SystemId>("7324582734658237465").is_err(), "a JSON number is refused");
        assert_eq!("0".parse::<SystemId>().expect("zero parses"), SystemId(0));
    }
}
