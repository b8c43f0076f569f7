//! The edge's TOML configuration: [`RawEdgeConfig`] as written, [`EdgeConfig`] once validated.
//!
//! `validate` is pure; files named in the config (keys, certificates, password) are read by
//! [`EdgeConfig::load_secrets`], so `check-config` exercises both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
pub use warren_daemon::config::ConfigError;
use warren_proto::sign::KeySet;
use warren_proto::topic::valid_name;

use crate::queue::WhenFull;

const DEFAULT_STATE_DIR: &str = if cfg!(target_os = "freebsd") {
    "/var/db/warren/edge"
} else {
    "/var/lib/warren/edge"
};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeConfig {
    /// This edge's id: MQTT client id and certificate CN. Default: the host name.
    pub edge_id: Option<String>,
    /// The site this edge belongs to.
    pub site: String,
    /// Where the queue lives.
    pub state_dir: Option<PathBuf>,
    /// The status socket. Default: `<state_dir>/edge.sock`.
    pub status_socket: Option<PathBuf>,
    /// How long SIGTERM waits for in-flight work.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// UDP ingest.
    #[serde(default)]
    pub ingest: RawIngest,
    /// The durable queue.
    #[serde(default)]
    pub queue: RawQueue,
    /// The hub, or any MQTT broker standing in for it.
    pub hub: RawHub,
}

/// `[ingest]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// UDP addresses to listen on.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Source networks allowed to send; empty allows every source.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Whether unsigned (legacy or v2) datagrams are accepted.
    #[serde(default = "yes")]
    pub accept_unsigned: bool,
    /// Keys for signed datagrams: `<key-id> <base64 secret>` lines.
    pub key_file: Option<PathBuf>,
    /// How far a signed datagram's `tst` may be from the edge's clock.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub max_skew: Duration,
    /// SO_RCVBUF to ask for, so bursts wait in the kernel rather than being dropped.
    #[serde(default = "default_recv_buffer")]
    pub recv_buffer_bytes: usize,
}

impl Default for RawIngest {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            allow: Vec::new(),
            accept_unsigned: true,
            key_file: None,
            max_skew: default_skew(),
            recv_buffer_bytes: default_recv_buffer(),
        }
    }
}

/// `[queue]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// The byte budget of queued events.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// `drop_oldest` or `reject_new`.
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    /// Ignored, and never had an effect: a commit takes what arrived during the previous one
    /// and waits for nothing. Still read, so a config that sets it loads.
    #[serde(default, rename = "commit_delay", with = "humantime_serde")]
    pub _commit_delay: Option<Duration>,
    /// Space kept beside the queue for a full disk (0: none).
    #[serde(default = "default_reserve_bytes")]
    pub reserve_bytes: u64,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            when_full: default_when_full(),
            _commit_delay: None,
            reserve_bytes: default_reserve_bytes(),
        }
    }
}

/// `[hub]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHub {
    /// `host:port` of the broker, or several: tried in turn, so the edge reaches whichever
    /// hub or broker node is up.
    pub address: Addresses,
    /// TLS (the default), or plain TCP for a loopback broker.
    #[serde(default = "yes")]
    pub tls: bool,
    /// CA that signed the broker's certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// This edge's client certificate (PEM), for brokers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// MQTT username.
    pub username: Option<String>,
    /// File holding the MQTT password.
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive: a half-open link is noticed within about 1.5 times this.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Resend an event the hub has not acked within this.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Events sent and not yet acked, at most.
    #[serde(default = "default_window")]
    pub window: usize,
    /// The longest wait between reconnect attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How often the retained presence is refreshed.
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub status_interval: Duration,
}

/// `[hub] address`: one `host:port` or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Addresses {
    /// The one broker.
    One(String),
    /// Brokers in the order they are tried.
    Many(Vec<String>),
}

/// A broker the edge may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    /// Its host name or IP address.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl HubAddress {
    fn parse(address: &str) -> Option<Self> {
        let (host, port) = address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().ok()?;
        (!host.is_empty()).then(|| Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for HubAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where it came from, for messages.
    pub path: PathBuf,
    /// This edge's id.
    pub edge_id: String,
    /// Its site.
    pub site: String,
    /// Queue directory.
    pub queue_dir: PathBuf,
    /// Status socket path.
    pub status_socket: PathBuf,
    /// SIGTERM grace.
    pub shutdown_grace: Duration,
    /// UDP addresses.
    pub listen: Vec<SocketAddr>,
    /// Allowed sources; empty = all.
    pub allow: Vec<IpNet>,
    /// Unsigned datagrams accepted.
    pub accept_unsigned: bool,
    /// Key file, if any.
    pub key_file: Option<PathBuf>,
    /// Skew window for signed datagrams.
    pub max_skew: Duration,
    /// SO_RCVBUF.
    pub recv_buffer_bytes: usize,
    /// Byte budget.
    pub max_bytes: u64,
    /// Policy when full.
    pub when_full: WhenFull,
    /// Space kept for a full disk.
    pub reserve_bytes: u64,
    /// The brokers, in the order they are tried; never empty.
    pub hubs: Vec<HubAddress>,
    /// TLS on.
    pub tls: bool,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Username.
    pub username: Option<String>,
    /// Password file.
    pub password_file: Option<PathBuf>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Ack timeout.
    pub ack_timeout: Duration,
    /// In-flight window.
    pub window: usize,
    /// Reconnect backoff cap.
    pub max_backoff: Duration,
    /// Presence interval.
    pub status_interval: Duration,
}

/// Secrets and certificates read from the files the config names.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Datagram keys.
    pub keys: KeySet,
    /// CA PEM.
    pub ca: Option<Vec<u8>>,
    /// Client cert and key PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// MQTT password.
    pub password: Option<warren_daemon::Secret>,
    /// When the client certificate ends, seconds since the epoch.
    pub cert_not_after: Option<i64>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("keys", &self.keys)
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("client", &self.client.as_ref().map(|_| "<pem>"))
            .field("password", &self.password)
            .field("cert_not_after", &self.cert_not_after)
            .finish()
    }
}

impl EdgeConfig {
    /// Reads, parses and validates `path`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, and the line and key where toml knows them.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &warren_daemon::config::read(path)?)
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    /// See [`EdgeConfig::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        warren_daemon::config::parse::<RawEdgeConfig>(path, text)?.validate(path)
    }

    /// Reads the key file, certificates and password file.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key whose file is missing or wrong.
    pub fn load_secrets(&self) -> Result<Secrets, ConfigError> {
        use warren_daemon::tls;
        let bad = |key, file: &Path, e: &dyn std::fmt::Display| {
            ConfigError::file(&self.path, key, file, e)
        };
        let read = |key, p: &Path| std::fs::read(p).map_err(|e| bad(key, p, &e));
        let mut s = Secrets::default();
        if let Some(p) = &self.key_file {
            let text = String::from_utf8(read("ingest.key_file", p)?)
                .map_err(|_| bad("ingest.key_file", p, &"not UTF-8"))?;
            s.keys = KeySet::parse(&text).map_err(|e| bad("ingest.key_file", p, &e))?;
        }
        // Parsed here, not only handed to the MQTT client as bytes: a broken file is a config
        // error now rather than a connection that fails forever.
        if let Some(p) = &self.ca_file {
            s.ca = Some(tls::load_certificates(&self.path, "hub.ca_file", p)?.pem);
        }
        if let Some((c, k)) = &self.client_cert {
            let pair = tls::load_pair(&self.path, ("hub.cert_file", c), ("hub.key_file", k))?;
            s.cert_not_after = tls::CertFacts::of(&pair.certs[0]).ok().map(|f| f.not_after);
            s.client = Some((pair.cert_pem, pair.key_pem));
        }
        if let Some(p) = &self.password_file {
            s.password =
                Some(warren_daemon::Secret::read(p).map_err(|e| bad("hub.password_file", p, &e))?);
        }
        Ok(s)
    }
}

impl RawEdgeConfig {
    /// Checks values and resolves defaults; no I/O.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first value that cannot work.
    pub fn validate(self, path: &Path) -> Result<EdgeConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::invalid(path, key, reason);
        const NAME_RULE: &str = "must be 1 to 64 characters of [A-Za-z0-9._-]";
        let edge_id = match self.edge_id {
            Some(id) => id,
            None => warren_daemon::short_hostname(),
        };
        if !valid_name(&edge_id) {
            return Err(invalid("edge_id", NAME_RULE));
        }
        if !valid_name(&self.site) {
            return Err(invalid("site", NAME_RULE));
        }
        let state_dir = self.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        let i = self.ingest;
        if i.listen.is_empty() {
            return Err(invalid("ingest.listen", "needs at least one address"));
        }
        if !i.accept_unsigned && i.key_file.is_none() {
            return Err(invalid(
                "ingest.accept_unsigned",
                "is false but no ingest.key_file is set: nothing could be accepted",
            ));
        }
        let h = self.hub;
        let addresses = match h.address {
            Addresses::One(a) => vec![a],
            Addresses::Many(list) if list.is_empty() => {
                return Err(invalid("hub.address", "needs at least one host:port"));
            }
            Addresses::Many(list) => list,
        };
        let hubs = addresses
            .iter()
            .map(|a| {
                HubAddress::parse(a)
                    .ok_or_else(|| invalid("hub.address", &format!("{a:?} must be host:port")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_cert = match (h.cert_file, h.key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(invalid("hub.cert_file", "and hub.key_file go together")),
        };
        if h.tls && h.ca_file.is_none() {
            return Err(invalid(
                "hub.ca_file",
                "is required with TLS (the hub's CA certificate)",
            ));
        }
        if h.password_file.is_some() && h.username.is_none() {
            return Err(invalid("hub.password_file", "needs hub.username"));
        }
        if h.window == 0 {
            return Err(invalid("hub.window", "must be at least 1"));
        }
        if h.keep_alive < Duration::from_secs(5) {
            return Err(invalid("hub.keep_alive", "must be at least 5s"));
        }
        Ok(EdgeConfig {
            path: path.to_owned(),
            status_socket: self
                .status_socket
                .unwrap_or_else(|| state_dir.join("edge.sock")),
            queue_dir: state_dir.join("queue"),
            edge_id,
            site: self.site,
            shutdown_grace: self.shutdown_grace,
            listen: i.listen,
            allow: i.allow,
            accept_unsigned: i.accept_unsigned,
            key_file: i.key_file,
            max_skew: i.max_skew,
            recv_buffer_bytes: i.recv_buffer_bytes,
            max_bytes: self.queue.max_bytes,
            when_full: self.queue.when_full,
            reserve_bytes: self.queue.reserve_bytes,
            hubs,
            tls: h.tls,
            ca_file: h.ca_file,
            client_cert,
            username: h.username,
            password_file: h.password_file,
            keep_alive: h.keep_alive,
            ack_timeout: h.ack_timeout,
            window: h.window,
            max_backoff: h.max_backoff,
            status_interval: h.status_interval,
        })
    }
}

fn yes() -> bool {
    true
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from((
        [127, 0, 0, 1],
        warren_proto::DEFAULT_PORT,
    ))]
}
fn default_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_recv_buffer() -> usize {
    8 * 1024 * 1024
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_reserve_bytes() -> u64 {
    16 << 20
}
fn default_when_full() -> WhenFull {
    WhenFull::DropOldest
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_window() -> usize {
    1000
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_status_interval() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
site = "home"
edge_id = "gw"
[hub]
address = "hub.example:8883"
ca_file = "/etc/warren/ca.pem"
"#;

    #[test]
    fn defaults() {
        let c = EdgeConfig::parse(Path::new("edge.toml"), MINIMAL).unwrap();
        assert_eq!(c.listen, default_listen());
        let hub = HubAddress {
            host: "hub.example".into(),
            port: 8883,
        };
        assert_eq!(c.hubs, [hub]);
        assert_eq!(c.when_full, WhenFull::DropOldest);
        assert!(c.accept_unsigned && c.tls);
        assert!(c.status_socket.ends_with("edge/edge.sock"));
    }

    #[test]
    fn several_hub_addresses_are_kept_in_order() {
        let text = MINIMAL.replace(
            "\"hub.example:8883\"",
            "[\"hub-a.example:8883\", \"[fd00::1]:1883\"]",
        );
        let c = EdgeConfig::parse(Path::new("edge.toml"), &text).unwrap();
        let shown: Vec<String> = c.hubs.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["hub-a.example:8883", "[fd00::1]:1883"]);
        assert_eq!(c.hubs[1].host, "fd00::1");
        for (bad, says) in [
            ("[]", "at least one"),
            ("[\"a:1\", \"b\"]", "\"b\" must be"),
        ] {
            let text = MINIMAL.replace("\"hub.example:8883\"", bad);
            let e = EdgeConfig::parse(Path::new("edge.toml"), &text).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_config_setting_the_old_commit_delay_still_loads() {
        let text = format!("{MINIMAL}\n[queue]\ncommit_delay = \"2ms\"\n");
        EdgeConfig::parse(Path::new("edge.toml"), &text).unwrap();
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (MINIMAL.replace("site", "sitte"), "unknown field `sitte`"),
            (
                format!("{MINIMAL}\n[ingest]\nlisten = [\"nope\"]\n"),
                "line 9",
            ),
            (MINIMAL.replace("\"home\"", "\"a/b\""), "`site`"),
            (
                MINIMAL.replace("hub.example:8883", "hub.example"),
                "`hub.address`",
            ),
            (
                format!("{MINIMAL}\n[queue]\nwhen_full = \"panic\"\n"),
                "unknown variant `panic`",
            ),
            (
                format!("{MINIMAL}\n[ingest]\naccept_unsigned = false\n"),
                "`ingest.accept_unsigned`",
            ),
            (
                MINIMAL.replace("ca_file = \"/etc/warren/ca.pem\"", ""),
                "`hub.ca_file`",
            ),
        ];
        for (text, needle) in cases {
            let err = EdgeConfig::parse(Path::new("/etc/warren/edge.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("/etc/warren/edge.toml"), "{err}");
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn secrets_are_read_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let (ca, _) = warren_daemon::testing::self_signed(dir.path(), "ca");
        let (cert, key) = warren_daemon::testing::self_signed(dir.path(), "gw");
        let base = MINIMAL.replace("ca_file = \"/etc/warren/ca.pem\"\n", "");
        let with = |extra: &str| {
            EdgeConfig::parse(Path::new("e.toml"), &format!("{base}{extra}"))
                .unwrap()
                .load_secrets()
        };
        let good = format!(
            "username = \"gw\"\npassword_file = \"{}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pw.display(),
            ca.display(),
            cert.display(),
            key.display()
        );
        let s = with(&good).unwrap();
        assert_eq!(s.password.as_ref().map(|p| p.expose()), Some("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));

        let (_, other_key) = warren_daemon::testing::self_signed(dir.path(), "other");
        for (broken, key, why) in [
            (
                good.replace(&ca.display().to_string(), &pw.display().to_string()),
                "hub.ca_file",
                "no PEM",
            ),
            (
                good.replace(&key.display().to_string(), &other_key.display().to_string()),
                "hub.key_file",
                "does not belong",
            ),
            (
                good.replace(&cert.display().to_string(), "/nonexistent.pem"),
                "hub.cert_file",
                "No such file",
            ),
            (
                good.replace(&pw.display().to_string(), "/nonexistent"),
                "hub.password_file",
                "No such file",
            ),
        ] {
            let err = with(&broken).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(why),
                "{key}: {err}"
            );
        }
        let missing = EdgeConfig::parse(Path::new("e.toml"), MINIMAL)
            .unwrap()
            .load_secrets()
            .unwrap_err();
        assert!(missing.to_string().contains("hub.ca_file"), "{missing}");
    }
}
