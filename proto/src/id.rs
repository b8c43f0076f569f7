//! Event ids: 128 bits, written as 32 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::DecodeError;

/// A 128-bit event id.
///
/// A v2 datagram carries its id, so every edge that receives it forwards the same one; a legacy
/// datagram gets [`EventId::derive_legacy`], which every edge computes alike.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId([u8; 16]);

impl EventId {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, e.g. as a database key.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A fresh random id from the OS (`/dev/urandom`).
    ///
    /// Where that cannot be read it falls back to hashing the clock, the process id and a
    /// counter: unique enough for dedup, which is all an id is used for.
    pub fn generate() -> Self {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok()
        {
            return Self(bytes);
        }
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(now.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(
            COUNTER
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
        Self::from_digest(h)
    }

    /// The id of a legacy datagram: SHA-256 over (hostname, user, service, rhost, tty, tst),
    /// truncated to 128 bits. Two edges receiving the same datagram derive the same id.
    ///
    /// Each string is length-prefixed and `null` has its own tag, so `("ab", "c")` and
    /// `("a", "bc")`, or `null` and `""`, never collide.
    pub fn derive_legacy(fields: [Option<&str>; 5], tst: i64) -> Self {
        let mut h = Sha256::new();
        h.update(b"warren-legacy-id\0");
        for field in fields {
            match field {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        h.update(tst.to_le_bytes());
        Self::from_digest(h)
    }

    fn from_digest(h: Sha256) -> Self {
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl FromStr for EventId {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: DecodeError = DecodeError::BadField {
            field: "id",
            expected: "32 hex digits",
        };
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(BAD);
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(BAD)?;
            let lo = hex_value(pair[1]).ok_or(BAD)?;
            bytes[i] = hi << 4 | lo;
        }
        Ok(Self(bytes))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = EventId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<EventId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<EventId>().unwrap(), id);
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"0".repeat(33),
            "é".repeat(16).as_str(),
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(EventId::generate(), EventId::generate());
    }

    #[test]
    fn legacy_derivation_separates_fields() {
        let a = EventId::derive_legacy([Some("ab"), Some("c"), None, None, None], 1);
        let b = EventId::derive_legacy([Some("a"), Some("bc"), None, None, None], 1);
        let c = EventId::derive_legacy([Some("ab"), Some("c"), Some(""), None, None], 1);
        let d = EventId::derive_legacy([Some("ab"), Some("c"), None, None, None], 2);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(
            a,
            EventId::derive_legacy([Some("ab"), Some("c"), None, None, None], 1)
        );
    }
}
