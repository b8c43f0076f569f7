//! HMAC-SHA256 signing of datagrams, and the edge's acceptance policy: key set, clock-skew
//! window and replay guard.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::{Datagram, EventId, VerifyError};

/// Bytes in an HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;

/// The shortest secret accepted: 128 bits.
pub const MIN_SECRET_LEN: usize = 16;

/// A signature line as decoded; checked by [`Verifier::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Which key signed.
    pub key_id: String,
    /// The MAC over the first `signed_len` bytes of the datagram.
    pub mac: [u8; MAC_LEN],
    /// How many leading bytes of the datagram the MAC covers (the JSON part).
    pub signed_len: usize,
}

/// A named HMAC key. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Key {
    id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
}

/// Why a key or key file was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The id is empty, too long, or has characters other than `[A-Za-z0-9._-]`.
    #[error("key id must be 1 to 64 characters of [A-Za-z0-9._-]")]
    BadId,
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    /// A line of a key file is not `<key-id> <base64 secret>`.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file holds no key.
    #[error("no key in key file")]
    Empty,
}

impl Key {
    /// A key from its id and raw secret.
    ///
    /// # Errors
    /// [`KeyError::BadId`] or [`KeyError::ShortSecret`].
    pub fn new(id: &str, secret: Vec<u8>) -> Result<Self, KeyError> {
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return Err(KeyError::BadId);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::ShortSecret);
        }
        Ok(Self {
            id: id.to_owned(),
            secret,
        })
    }

    /// The key's id, as written in signature lines.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The HMAC-SHA256 of `bytes` under this key.
    pub fn mac(&self, bytes: &[u8]) -> [u8; MAC_LEN] {
        self.hmac(bytes).finalize().into_bytes().into()
    }

    /// Checks a MAC in constant time.
    pub fn verify(&self, bytes: &[u8], mac: &[u8]) -> bool {
        self.hmac(bytes).verify_slice(mac).is_ok()
    }

    fn hmac(&self, bytes: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(bytes);
        m
    }
}

/// The keys an edge accepts, or the one a hare signs with.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a key file: one `<key-id> <base64 secret>` per line; blank lines and lines
    /// starting with `#` are ignored. Make one with
    /// `printf 'site-a %s\n' "$(head -c32 /dev/urandom | base64)"`.
    ///
    /// # Errors
    /// A [`KeyError`] naming the first bad line, or [`KeyError::Empty`].
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| KeyError::Line {
                line: n + 1,
                reason: reason.to_owned(),
            };
            let mut parts = line.split_whitespace();
            let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err("expected `<key-id> <base64 secret>`"));
            };
            let secret = BASE64
                .decode(secret)
                .map_err(|_| err("secret is not valid base64"))?;
            let key = Key::new(id, secret).map_err(|e| err(&e.to_string()))?;
            if keys.iter().any(|k: &Key| k.id == key.id) {
                return Err(err("duplicate key id"));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// A key by id.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The first key of the file: the one a sender signs with.
    pub fn first(&self) -> Option<&Key> {
        self.keys.first()
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The edge's acceptance policy for datagrams.
///
/// Unsigned datagrams pass only when `accept_unsigned`; signed ones need a known key, a valid
/// MAC, a `tst` within `skew_secs` of now, and an id not seen before while that `tst` is still
/// inside the window. Past the window the stale check refuses a replay, so that is all the
/// memory the guard needs.
#[derive(Debug)]
pub struct Verifier {
    keys: KeySet,
    accept_unsigned: bool,
    skew_secs: i64,
    seen: HashMap<EventId, i64>,
    expiries: VecDeque<(i64, EventId)>,
}

impl Verifier {
    /// A policy with these keys (possibly none), skew window and unsigned policy.
    pub fn new(keys: KeySet, accept_unsigned: bool, skew_secs: u64) -> Self {
        Self {
            keys,
            accept_unsigned,
            skew_secs: i64::try_from(skew_secs).unwrap_or(i64::MAX),
            seen: HashMap::new(),
            expiries: VecDeque::new(),
        }
    }

    /// Checks `datagram`, decoded from `raw`, at `now` (Unix seconds). Returns whether it was signed.
    ///
    /// # Errors
    /// The [`VerifyError`] that refuses it.
    pub fn check(
        &mut self,
        raw: &[u8],
        datagram: &Datagram,
        now: i64,
    ) -> Result<bool, VerifyError> {
        let Some(sig) = &datagram.signature else {
            return if self.accept_unsigned {
                Ok(false)
            } else {
                Err(VerifyError::Unsigned)
            };
        };
        let key = self
            .keys
            .get(&sig.key_id)
            .ok_or_else(|| VerifyError::UnknownKey(sig.key_id.clone()))?;
        let signed = raw.get(..sig.signed_len).ok_or(VerifyError::BadMac)?;
        if !key.verify(signed, &sig.mac) {
            return Err(VerifyError::BadMac);
        }
        let tst = datagram.event.tst();
        let off = tst.saturating_sub(now).saturating_abs();
        if off > self.skew_secs {
            return Err(VerifyError::Stale {
                tst,
                off_by: off - self.skew_secs,
            });
        }
        self.prune(now);
        if self.seen.contains_key(&datagram.id) {
            return Err(VerifyError::Replayed);
        }
        let expiry = tst.saturating_add(self.skew_secs);
        self.seen.insert(datagram.id, expiry);
        self.expiries.push_back((expiry, datagram.id));
        Ok(true)
    }

    /// Forgets ids whose `tst` has left the window. Expiries are nearly in arrival order; an
    /// out-of-order one is simply kept until those before it expire.
    fn prune(&mut self, now: i64) {
        while let Some(&(expiry, id)) = self.expiries.front() {
            if expiry >= now {
                break;
            }
            self.expiries.pop_front();
            if self.seen.get(&id) == Some(&expiry) {
                self.seen.remove(&id);
            }
        }
    }

    /// Ids currently remembered by the replay guard.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagram::encode_v2;
    use crate::{Event, Kind};

    fn keys() -> KeySet {
        KeySet::parse("# comment\n\nk1 MDEyMzQ1Njc4OWFiY2RlZg==\nk2 ZmVkY2JhOTg3NjU0MzIxMA==\n")
            .unwrap()
    }

    fn signed(key: &str, tst: i64, id: EventId) -> Vec<u8> {
        let k = keys();
        encode_v2(id, &Event::new(Kind::Login, tst), k.get(key), false)
    }

    fn check(v: &mut Verifier, raw: &[u8], now: i64) -> Result<bool, VerifyError> {
        let d = Datagram::decode(raw).unwrap();
        v.check(raw, &d, now)
    }

    #[test]
    fn key_file_errors_name_the_line() {
        assert_eq!(keys().len(), 2);
        for (text, needle) in [
            ("", "no key"),
            ("k1\n", "line 1"),
            ("\nk1 !!!\n", "line 2: secret is not valid base64"),
            ("k1 c2hvcnQ=\n", "at least 16"),
            ("k/1 MDEyMzQ1Njc4OWFiY2RlZg==\n", "key id"),
            (
                "k1 MDEyMzQ1Njc4OWFiY2RlZg==\nk1 MDEyMzQ1Njc4OWFiY2RlZg==",
                "duplicate",
            ),
        ] {
            let err = KeySet::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    /// The edge's wall clock jumps, hare's with it (same host) or not (another host): a replay
    /// is refused either way, and a fresh datagram passes when the two clocks agree.
    #[test]
    fn clock_jumps_never_let_a_replay_through() {
        let mut v = Verifier::new(keys(), false, 300);
        let now = 1_000_000;
        let before = signed("k1", now, EventId::generate());
        assert_eq!(check(&mut v, &before, now), Ok(true));
        for jump in [3_600, -3_600, 86_400] {
            let later = now + jump;
            // The replay guard may forget `before` once its window is past: then it is stale.
            assert!(
                matches!(
                    check(&mut v, &before, later),
                    Err(VerifyError::Stale { .. })
                ),
                "a replay after a jump of {jump} s"
            );
            let fresh = signed("k1", later, EventId::generate());
            assert_eq!(
                check(&mut v, &fresh, later),
                Ok(true),
                "same clock, {jump} s"
            );
            assert!(
                matches!(check(&mut v, &fresh, later), Err(VerifyError::Replayed)),
                "replayed at once"
            );
            let other_host = signed("k1", now + 10, EventId::generate());
            assert!(
                matches!(
                    check(&mut v, &other_host, later),
                    Err(VerifyError::Stale { .. })
                ),
                "a sender whose clock did not jump is {jump} s off"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let dbg = format!("{:?}", keys());
        assert!(dbg.contains("k1") && !dbg.contains("48, 49"), "{dbg}");
    }

    #[test]
    fn accepts_good_and_refuses_each_bad_kind() {
        let mut v = Verifier::new(keys(), false, 300);
        let now = 1_000_000;
        let good = signed("k1", now, EventId::generate());
        assert_eq!(check(&mut v, &good, now), Ok(true));
        assert_eq!(check(&mut v, &good, now + 10), Err(VerifyError::Replayed));

        let unsigned = br#"{"tst":1000000,"user":"dan"}"#;
        assert_eq!(check(&mut v, unsigned, now), Err(VerifyError::Unsigned));

        let other = KeySet::parse("k3 MDEyMzQ1Njc4OWFiY2RlZg==").unwrap();
        let unknown = encode_v2(
            EventId::generate(),
            &Event::new(Kind::Login, now),
            other.first(),
            false,
        );
        assert!(
            matches!(check(&mut v, &unknown, now), Err(VerifyError::UnknownKey(k)) if k == "k3")
        );

        let mut tampered = signed("k1", now, EventId::generate());
        let pos = tampered.iter().position(|&b| b == b'1').unwrap();
        tampered[pos] = b'2';
        assert_eq!(check(&mut v, &tampered, now), Err(VerifyError::BadMac));

        // Same key id, other secret.
        let forged_keys = KeySet::parse("k1 ZmVkY2JhOTg3NjU0MzIxMA==").unwrap();
        let forged = encode_v2(
            EventId::generate(),
            &Event::new(Kind::Login, now),
            forged_keys.first(),
            false,
        );
        assert_eq!(check(&mut v, &forged, now), Err(VerifyError::BadMac));

        let stale = signed("k2", now - 301, EventId::generate());
        assert!(matches!(
            check(&mut v, &stale, now),
            Err(VerifyError::Stale { off_by: 1, .. })
        ));
        let future = signed("k2", now + 400, EventId::generate());
        assert!(matches!(
            check(&mut v, &future, now),
            Err(VerifyError::Stale { .. })
        ));
    }

    #[test]
    fn unsigned_policy_and_replay_memory_is_bounded_by_the_window() {
        let mut v = Verifier::new(keys(), true, 60);
        assert_eq!(check(&mut v, br#"{"tst":5}"#, 5), Ok(false));
        for i in 0..100 {
            let raw = signed("k1", 1000 + i, EventId::generate());
            assert_eq!(check(&mut v, &raw, 1000 + i), Ok(true));
        }
        // Ids whose tst left the 60 s window are forgotten as new ones arrive.
        assert_eq!(v.remembered(), 61);
        let raw = signed("k1", 2000, EventId::generate());
        assert_eq!(check(&mut v, &raw, 2000), Ok(true));
        assert_eq!(v.remembered(), 1);
    }
}
