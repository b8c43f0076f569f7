//! MQTT users, in the file `mosquitto_passwd` writes, so operators keep their tool: one
//! `username:hash` per line, the hash PBKDF2-SHA512 (`$7$iterations$salt$hash`, mosquitto 2's
//! default) or salted SHA-512 (`$6$salt$hash`, older mosquitto). A plain-text password is
//! refused: `mosquitto_passwd -U FILE` hashes a file in place.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::pbkdf2;
use subtle::ConstantTimeEq;
use warren_proto::topic::valid_name;

/// `mosquitto_passwd`'s PBKDF2 iteration count.
const MOSQUITTO_ITERATIONS: u32 = 101;

/// A user name the hub keeps for itself: its own client on the embedded broker.
pub const HUB_CLIENT_ID: &str = "warren-hub";

/// Users and their password hashes.
#[derive(Clone, Default)]
pub struct Users(BTreeMap<String, Hash>);

#[derive(Clone)]
enum Hash {
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl Users {
    /// Reads a password file.
    ///
    /// # Errors
    /// Why the file is unusable, naming the line (the caller names the file).
    pub fn read(path: &Path) -> Result<Self, String> {
        warren_daemon::files::warn_if_exposed(path);
        Self::parse(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)
    }

    /// Parses a password file's text.
    ///
    /// # Errors
    /// See [`Users::read`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |reason: String| format!("line {}: {reason}", n + 1);
            let Some((user, hash)) = line.split_once(':') else {
                return Err(at(
                    "expected `username:hash` as mosquitto_passwd writes it".into()
                ));
            };
            if !valid_name(user) || user.starts_with(HUB_CLIENT_ID) {
                return Err(at(format!(
                    "`{user}` cannot be a user: 1 to 64 characters of [A-Za-z0-9._-], not starting with `{HUB_CLIENT_ID}`"
                )));
            }
            let hash = Hash::parse(hash).map_err(|reason| at(format!("`{user}`: {reason}")))?;
            users.insert(user.to_owned(), hash);
        }
        Ok(Self(users))
    }

    /// Whether `user` exists and `password` is theirs. Constant-time in the password, and an
    /// unknown user costs the same work, so timing does not tell which users exist.
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        match self.0.get(user) {
            Some(h) => h.verify(password),
            None => {
                let unknown = Hash::Pbkdf2 {
                    iterations: NonZeroU32::new(MOSQUITTO_ITERATIONS).unwrap_or(NonZeroU32::MIN),
                    salt: vec![0; 12],
                    hash: vec![0; 64],
                };
                let _ = unknown.verify(password);
                false
            }
        }
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Hash {
    fn parse(text: &str) -> Result<Self, String> {
        let b64 = |s: &str| STANDARD.decode(s).map_err(|e| format!("bad base64: {e}"));
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => Ok(Self::Pbkdf2 {
                iterations: iterations
                    .parse()
                    .map_err(|_| format!("bad iteration count `{iterations}`"))?,
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            ["", "6", salt, hash] => Ok(Self::Sha512 {
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            _ if !text.starts_with('$') => Err(
                "the password is not hashed; hash the file with `mosquitto_passwd -U FILE`".into(),
            ),
            _ => Err("unknown hash; expected $7$ (PBKDF2-SHA512) or $6$ (SHA-512)".into()),
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Self::Sha512 { salt, hash } => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                let digest = ctx.finish();
                digest.as_ref().ct_eq(hash).into()
            }
        }
    }
}

/// A `$7$` line's hash of `password`, as `mosquitto_passwd` makes it (101 iterations, 12
/// bytes of salt), for tests and tools.
pub fn hash(password: &str, salt: &[u8]) -> String {
    let mut out = [0u8; 64];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(MOSQUITTO_ITERATIONS).unwrap_or(NonZeroU32::MIN),
        salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "$7${MOSQUITTO_ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_mosquitto_passwds() {
        // mosquitto_passwd 2.0.11's line for alice/secret, its salt fixed to bytes 0..12.
        let line = "alice:$7$101$AAECAwQFBgcICQoL$Xr99N9ym9ys8TWxis5ajETJq6EVYzmc6nb8t3pUYnPBbCAbICS4xejTltonXWCtJNBvA+By+TXUqU6qCblO00w==";
        let salt: Vec<u8> = (0..12).collect();
        assert_eq!(format!("alice:{}", hash("secret", &salt)), line);
        let users = Users::parse(line).unwrap();
        assert!(users.check("alice", b"secret"));
        assert!(!users.check("alice", b"Secret"));
    }

    #[test]
    fn hashed_users_check_and_plain_ones_are_refused() {
        let text = format!(
            "# edges\ngw:{}\n\ngw2:{}\n",
            hash("gw-pw", b"0123456789ab"),
            hash("other", b"ba9876543210")
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.check("gw", b"gw-pw"));
        assert!(!users.check("gw", b"other"));
        assert!(!users.check("gw2", b"gw-pw"));
        assert!(!users.check("nobody", b"gw-pw"));

        let plain = Users::parse("gw:gw-pw\n").unwrap_err();
        assert!(
            plain.contains("line 1") && plain.contains("mosquitto_passwd -U"),
            "{plain}"
        );
        let old = Users::parse("gw gw-pw\n").unwrap_err();
        assert!(old.contains("username:hash"), "{old}");
        let hub = Users::parse(&format!("warren-hub:{}\n", hash("x", b"s"))).unwrap_err();
        assert!(hub.contains("cannot be a user"), "{hub}");
        assert!(
            Users::parse("gw:$5$abc$def\n")
                .unwrap_err()
                .contains("unknown hash")
        );
    }
}
