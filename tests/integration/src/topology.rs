//! A whole warren on loopback for end-to-end tests: the real `hub` and `edge` binaries with
//! generated certificates, a file notifier whose lines the tests read, and datagram senders.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use warren_edge::status::EdgeStatus;
use warren_hub::status::HubStatus;

use crate::{Pki, Proc, bin, free_port, wait_for};

/// How long any one step may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running hub.
#[derive(Debug)]
pub struct Hub {
    /// The process.
    pub proc: Proc,
    /// Its config file.
    pub config: PathBuf,
    /// Its status socket.
    pub socket: PathBuf,
    /// Its TLS port.
    pub port: u16,
    /// Its plain loopback MQTT port (for mosquitto_sub).
    pub local_port: u16,
}

impl Hub {
    /// Starts `hub run` and waits until its client is connected to its broker.
    ///
    /// # Panics
    /// When it does not come up.
    pub fn start(config: &Path, local_port: u16) -> Self {
        let socket = config.parent().expect("dir").join("hub-state/hub.sock");
        let proc = Proc::spawn(
            "hub",
            Command::new(bin("hub"))
                .args(["run", "--config"])
                .arg(config)
                .env("RUST_LOG", "warn,rumqttd=off"),
        );
        let status = wait_for("the hub", WAIT, || {
            warren_hub::status::query(&socket)
                .ok()
                .filter(|s| s.broker_connected)
        });
        let port = status.listen.first().map_or(0, |a| {
            a.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        });
        Self {
            proc,
            config: config.to_owned(),
            socket,
            port,
            local_port,
        }
    }

    /// The hub's status.
    ///
    /// # Panics
    /// When it does not answer.
    pub fn status(&self) -> HubStatus {
        warren_hub::status::query(&self.socket).expect("hub status")
    }

    /// SIGKILL and start again (on the same port: the config pins it).
    pub fn kill_and_restart(&mut self) {
        self.proc.kill9();
        *self = Self::start(&self.config.clone(), self.local_port);
    }
}

/// A running edge.
#[derive(Debug)]
pub struct Edge {
    /// Its id.
    pub id: String,
    /// The process.
    pub proc: Proc,
    /// Its config file.
    pub config: PathBuf,
    /// Its status socket.
    pub socket: PathBuf,
    /// Where it takes datagrams.
    pub udp: SocketAddr,
}

impl Edge {
    /// Starts `edge run` and waits for its status socket.
    ///
    /// # Panics
    /// When it does not come up.
    pub fn start(id: &str, config: &Path) -> Self {
        let socket = config
            .parent()
            .expect("dir")
            .join(format!("{id}-state/edge.sock"));
        let proc = Proc::spawn(
            id,
            Command::new(bin("edge"))
                .args(["run", "--config"])
                .arg(config)
                .env("RUST_LOG", "warn,rumqttd=off"),
        );
        let status = wait_for("the edge", WAIT, || {
            warren_edge::status::query(&socket).ok()
        });
        Self {
            id: id.to_owned(),
            proc,
            config: config.to_owned(),
            socket,
            udp: status.listen[0].parse().expect("listen address"),
        }
    }

    /// The edge's status.
    ///
    /// # Panics
    /// When it does not answer.
    pub fn status(&self) -> EdgeStatus {
        warren_edge::status::query(&self.socket).expect("edge status")
    }

    /// SIGKILL and start again.
    pub fn kill_and_restart(&mut self) {
        self.proc.kill9();
        *self = Self::start(&self.id.clone(), &self.config.clone());
    }

    /// Sends legacy datagrams in chunks, each chunk waited for until the edge has made it
    /// durable (so the kernel's receive buffer never overflows). Returns once all are accepted.
    ///
    /// # Panics
    /// When the edge does not accept them.
    pub fn send_confirmed(&self, users: &[String]) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let base = self.status().counters.accepted;
        for (i, chunk) in users.chunks(200).enumerate() {
            for u in chunk {
                sock.send_to(&login(u), self.udp).expect("send");
            }
            let want = base + (i * 200 + chunk.len()) as u64;
            wait_for("the edge to accept", WAIT, || {
                (self.status().counters.accepted >= want).then_some(())
            });
        }
    }

    /// Sends legacy datagrams without waiting.
    ///
    /// # Panics
    /// When a socket cannot be bound.
    pub fn send(&self, users: &[String]) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
        for u in users {
            let _ = sock.send_to(&login(u), self.udp);
        }
    }
}

/// The original hare's datagram for a login of `user` (distinct users give distinct ids).
pub fn login(user: &str) -> Vec<u8> {
    format!(r#"{{"tst":1795708571,"hostname":"web","user":"{user}","service":"sshd","rhost":"192.0.2.10","tty":"ssh"}}"#)
        .into_bytes()
}

/// `prefix0`, `prefix1`, …
pub fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// A hub, its certificates and files; edges are added with [`Topology::edge`].
#[derive(Debug)]
pub struct Topology {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// Certificates.
    pub pki: Pki,
    /// The hub.
    pub hub: Hub,
}

/// The notifier's line format: the seed's.
pub const FORMAT: &str = "User {user} logged into {hostname} from {rhost} at {tstamp}";

impl Topology {
    /// A hub in embedded mode, TLS with client certificates, one file notifier.
    ///
    /// # Panics
    /// When it does not start.
    pub fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&dir.path().join("pki"));
        let (cert, key) = pki.server();
        let broker = format!(
            "listen_tls = \"127.0.0.1:{{port}}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"",
            cert.display(),
            key.display(),
            pki.ca().display()
        );
        let hub = start_hub(dir.path(), &broker);
        Self { dir, pki, hub }
    }

    /// A path in the topology's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an edge config reaching the hub at `hub_port` (default: the hub's TLS port) and
    /// starts it.
    ///
    /// # Panics
    /// When it does not start.
    pub fn edge(&self, id: &str, hub_port: Option<u16>) -> Edge {
        let (cert, key) = self.pki.client(id);
        let config = self.path(&format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "edge_id = \"{id}\"\nsite = \"site-{id}\"\nstate_dir = \"{dir}/{id}-state\"\nshutdown_grace = \"5s\"\n\
                 [ingest]\nlisten = [\"127.0.0.1:0\"]\n\
                 [hub]\naddress = \"127.0.0.1:{port}\"\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
                 keep_alive = \"5s\"\nack_timeout = \"5s\"\nmax_backoff = \"500ms\"\n",
                dir = self.dir.path().display(),
                port = hub_port.unwrap_or(self.hub.port),
                ca = self.pki.ca().display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("edge config");
        Edge::start(id, &config)
    }

    /// The notifier's lines so far.
    pub fn lines(&self) -> Vec<String> {
        notification_lines(self.dir.path())
    }

    /// Waits until every user of `expected` has a line, then checks none has two.
    ///
    /// # Panics
    /// On a missing or duplicated notification.
    pub fn assert_each_once(&self, expected: &[String]) {
        assert_each_arrives(self.dir.path(), expected, 0);
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `hub.toml` in `dir` with `broker` as the `[broker]` body (a `{port}` in it becomes
/// the TLS port, first 0, then pinned to what the OS chose) and starts the hub.
///
/// # Panics
/// When it does not start.
pub fn start_hub(dir: &Path, broker: &str) -> Hub {
    let local_port = free_port();
    let config = dir.join("hub.toml");
    let write = |port: u16| {
        let text = format!(
            "state_dir = \"{dir}/hub-state\"\nshutdown_grace = \"5s\"\n[broker]\n{broker}\n{local}\
             [legacy]\nrepublish = true\n\
             [notifier.sshd_log]\ntype = \"file\"\npath = \"{dir}/notify.log\"\n\
             [[route]]\nmatch = {{ kind = \"login\" }}\nnotify = [\"sshd_log\"]\nformat = \"{FORMAT}\"\n",
            dir = dir.display(),
            broker = broker.replace("{port}", &port.to_string()),
            local = if broker.contains("external") {
                String::new()
            } else {
                format!("listen_local = \"127.0.0.1:{local_port}\"\n")
            },
        );
        std::fs::write(&config, text).expect("hub config");
    };
    write(0);
    let hub = Hub::start(&config, local_port);
    write(hub.port);
    hub
}

/// The file notifier's lines in `dir`.
pub fn notification_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("notify.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until every user of `expected` has a notification in `dir`, then checks that at most
/// `repeats` of them have two (a hub killed between writing a notification and recording it
/// as done delivers it again after the restart: one per kill at most), none more.
///
/// # Panics
/// On a missing notification, or more repeats than allowed.
pub fn assert_each_arrives(dir: &Path, expected: &[String], repeats: usize) {
    let count = || {
        let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
        for line in notification_lines(dir) {
            let user = line
                .strip_prefix("User ")
                .and_then(|l| l.split(' ').next())
                .unwrap_or_default()
                .to_owned();
            *per_user.entry(user).or_default() += 1;
        }
        per_user
    };
    let per_user = wait_for("every notification", WAIT, || {
        let c = count();
        expected.iter().all(|u| c.contains_key(u)).then_some(c)
    });
    let dups: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.len() <= repeats && dups.iter().all(|(_, n)| **n == 2),
        "notified more than once: {dups:?} (allowed: {repeats} repeated once)"
    );
}
