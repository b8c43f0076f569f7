//! Known sources: the (user, source network) pairs the hub has seen log in, per host or per
//! site, remembered for `[known_sources] remember` (90 days by default).
//!
//! Fifty logins a day from the usual places are noise; the one from a network never seen for
//! that user is the alert that matters. A login is `first_seen` when its pair is not in the
//! memory; routes can match on it and templates show it. The memory is written in the same
//! transaction as the event, so a crash cannot make a source "known" without its alert.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use warren_proto::{Envelope, Kind};

use crate::inbox::{Inbox, InboxError, Space, Tx};

/// `[known_sources]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownSourcesConfig {
    /// How long a pair is remembered after it was last seen.
    #[serde(default = "default_remember", with = "humantime_serde")]
    pub remember: Duration,
    /// Whether a pair is known per host (`hostname`) or per site.
    #[serde(default)]
    pub scope: Scope,
    /// The network an IPv4 source counts as.
    #[serde(default = "default_v4")]
    pub ipv4_prefix: u8,
    /// The network an IPv6 source counts as.
    #[serde(default = "default_v6")]
    pub ipv6_prefix: u8,
}

impl Default for KnownSourcesConfig {
    fn default() -> Self {
        Self {
            remember: default_remember(),
            scope: Scope::default(),
            ipv4_prefix: default_v4(),
            ipv6_prefix: default_v6(),
        }
    }
}

impl KnownSourcesConfig {
    /// Checks the prefixes.
    ///
    /// # Errors
    /// `(key, reason)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.ipv4_prefix > 32 {
            return Err(("known_sources.ipv4_prefix", "must be 0 to 32".into()));
        }
        if self.ipv6_prefix > 128 {
            return Err(("known_sources.ipv6_prefix", "must be 0 to 128".into()));
        }
        if self.remember.is_zero() {
            return Err(("known_sources.remember", "must be more than 0".into()));
        }
        Ok(())
    }
}

/// Where a (user, network) pair is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Per host: a user's first login on a new host from a known network is new too.
    #[default]
    Host,
    /// Per site.
    Site,
}

impl KnownSourcesConfig {
    /// Whether `e` is a login from a source its user was not seen from (in scope) within
    /// `remember`; records the pair as seen now. `None` for events that are not logins with
    /// a user and a remote host. A test event is answered as its login would be, but leaves
    /// nothing behind: a test must not make a real login's source look known.
    ///
    /// # Errors
    /// When the store fails.
    pub fn observe(
        &self,
        tx: &mut Tx<'_>,
        e: &Envelope,
        now_ms: u64,
    ) -> Result<Option<bool>, InboxError> {
        let Some(key) = self.key(e) else {
            return Ok(None);
        };
        let last = tx
            .get(Space::Known, &key)?
            .and_then(|v| v.as_slice().try_into().ok())
            .map(u64::from_be_bytes);
        if *e.event.kind() == Kind::Login {
            tx.put(Space::Known, &key, now_ms.to_be_bytes().to_vec());
        }
        Ok(Some(last.is_none_or(|t| {
            t.saturating_add(self.remember_ms()) < now_ms
        })))
    }

    /// Forgets pairs not seen for `remember`; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune(&self, inbox: &Inbox, now_ms: u64) -> Result<u64, InboxError> {
        let before = now_ms.saturating_sub(self.remember_ms());
        inbox.prune_space(Space::Known, |_, v| {
            v.try_into()
                .map(u64::from_be_bytes)
                .is_ok_and(|t| t < before)
        })
    }

    fn remember_ms(&self) -> u64 {
        u64::try_from(self.remember.as_millis()).unwrap_or(u64::MAX)
    }

    /// `scope \0 user \0 network`.
    fn key(&self, e: &Envelope) -> Option<Vec<u8>> {
        if !matches!(e.event.kind(), Kind::Login | Kind::Test) {
            return None;
        }
        let user = e.event.get_str("user").filter(|u| !u.is_empty())?;
        let rhost = e.event.get_str("rhost").filter(|r| !r.is_empty())?;
        let scope = match self.scope {
            Scope::Host => e.event.get_str("hostname").unwrap_or_default(),
            Scope::Site => e.site.as_str(),
        };
        let network = self.network(rhost);
        Some([scope, user, &network].join("\0").into_bytes())
    }

    /// The network `rhost` counts as: its prefix if it is an address, else the name itself
    /// (sshd gives a name when `UseDNS` is on).
    pub fn network(&self, rhost: &str) -> String {
        match rhost.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                let prefix = if ip.is_ipv4() {
                    self.ipv4_prefix
                } else {
                    self.ipv6_prefix
                };
                IpNet::new(ip, prefix)
                    .map(|n| n.trunc().to_string())
                    .unwrap_or_else(|_| ip.to_string())
            }
            Err(_) => rhost.to_ascii_lowercase(),
        }
    }
}

fn default_remember() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_v4() -> u8 {
    24
}
fn default_v6() -> u8 {
    64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str, host: &str, rhost: &str) -> Envelope {
        let mut e = crate::testing::envelope(user);
        e.event
            .set_str("hostname", Some(host))
            .set_str("rhost", Some(rhost));
        e
    }

    #[test]
    fn networks() {
        let k = KnownSourcesConfig::default();
        assert_eq!(k.network("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(k.network("::ffff:203.0.113.77"), "203.0.113.0/24");
        assert_eq!(k.network("2001:db8:1:2:3::9"), "2001:db8:1:2::/64");
        assert_eq!(k.network("Laptop.Example.org"), "laptop.example.org");
    }

    #[test]
    fn first_seen_per_user_network_and_host_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), 0).unwrap();
        let k = KnownSourcesConfig {
            remember: Duration::from_secs(100),
            ..KnownSourcesConfig::default()
        };
        let observe =
            |e: &Envelope, now: u64| inbox.transact(|tx| k.observe(tx, e, now)).unwrap().0;
        assert_eq!(
            observe(&login("dan", "web1", "203.0.113.7"), 1_000),
            Some(true)
        );
        assert_eq!(
            observe(&login("dan", "web1", "203.0.113.99"), 2_000),
            Some(false),
            "same /24"
        );
        assert_eq!(
            observe(&login("dan", "web1", "198.51.100.1"), 3_000),
            Some(true),
            "new network"
        );
        assert_eq!(
            observe(&login("eve", "web1", "203.0.113.7"), 4_000),
            Some(true),
            "new user"
        );
        assert_eq!(
            observe(&login("dan", "web2", "203.0.113.7"), 5_000),
            Some(true),
            "new host"
        );
        assert_eq!(observe(&login("dan", "web1", ""), 5_000), None, "no source");
        let mut logout = login("dan", "web1", "203.0.113.7");
        let mut event = warren_proto::Event::new(Kind::Logout, 1);
        event
            .set_str("user", Some("dan"))
            .set_str("hostname", Some("web1"))
            .set_str("rhost", Some("203.0.113.7"));
        logout.event = event;
        assert_eq!(observe(&logout, 5_000), None);
        // Seen at 2 000, remembered 100 s: still known at 101 000, forgotten after.
        assert_eq!(
            observe(&login("dan", "web1", "203.0.113.1"), 101_000),
            Some(false)
        );
        assert_eq!(
            k.prune(&inbox, 150_000).unwrap(),
            3,
            "dan@web1 last seen at 101 000 stays"
        );
        assert_eq!(inbox.count(Space::Known), 1);
        assert_eq!(
            observe(&login("dan", "web1", "198.51.100.1"), 160_000),
            Some(true)
        );
        assert_eq!(
            observe(&login("dan", "web1", "203.0.113.1"), 160_000),
            Some(false)
        );
    }
}
