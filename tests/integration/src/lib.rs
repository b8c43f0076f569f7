//! The end-to-end topology the chain tests share: the real `hub` and `edge` binaries with
//! certificates from `hub pki`, a file notifier whose lines the tests read, and datagram
//! senders. Starting processes, waiting and the real peers come from `warren-harness`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use warren_edge::status::EdgeStatus;
use warren_harness::{Pki, WAIT, free_port, wait_for};
use warren_hub::status::HubStatus;

/// A hub whose status is read as the hub's own type.
pub type Hub = warren_harness::Hub<HubStatus>;
/// An edge whose status is read as the edge's own type.
pub type Edge = warren_harness::Edge<EdgeStatus>;

/// The notifier's line format: the seed's.
pub const FORMAT: &str = "User {user} logged into {hostname} from {rhost} at {tstamp}";

/// A hub, its certificates and files; edges are added with [`Topology::edge`].
#[derive(Debug)]
pub struct Topology {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// Certificates.
    pub pki: Pki,
    /// The hub.
    pub hub: Hub,
    /// The hub's plain loopback MQTT port (for mosquitto_sub).
    pub local_port: u16,
}

impl Topology {
    /// A hub in embedded mode, TLS with client certificates, one file notifier.
    ///
    /// # Panics
    /// When it does not start.
    pub fn new() -> Self {
        Self::with_hub_config("")
    }

    /// [`Topology::new`] with `extra` appended to the hub's config (more sections, notifiers
    /// and routes; `{dir}` in it is the topology's directory).
    ///
    /// # Panics
    /// When it does not start.
    pub fn with_hub_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&dir.path().join("pki"));
        let (cert, key) = pki.server();
        let broker = format!(
            "listen_tls = \"127.0.0.1:{{port}}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\ncrl_file = \"{}\"",
            cert.display(),
            key.display(),
            pki.ca().display(),
            pki.crl().display()
        );
        let (hub, local_port) = start_hub_with(dir.path(), &broker, extra);
        Self {
            dir,
            pki,
            hub,
            local_port,
        }
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
        self.edge_with(id, hub_port, "")
    }

    /// [`Topology::edge`] with `extra` appended to its config (after `[hub]`). Its state is in
    /// `<dir>/<id>-state`.
    ///
    /// # Panics
    /// When it does not start.
    pub fn edge_with(&self, id: &str, hub_port: Option<u16>, extra: &str) -> Edge {
        Edge::start(id, &self.edge_config(id, hub_port, extra))
    }

    /// Writes the config [`Topology::edge_with`] starts an edge with; returns its path.
    ///
    /// # Panics
    /// When it cannot be written.
    pub fn edge_config(&self, id: &str, hub_port: Option<u16>, extra: &str) -> PathBuf {
        let (cert, key) = self.pki.client(id);
        let config = self.path(&format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "edge_id = \"{id}\"\nsite = \"site-{id}\"\nstate_dir = \"{dir}/{id}-state\"\nshutdown_grace = \"5s\"\n\
                 [ingest]\nlisten = [\"127.0.0.1:0\"]\n\
                 [hub]\naddress = \"127.0.0.1:{port}\"\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
                 keep_alive = \"5s\"\nack_timeout = \"5s\"\nmax_backoff = \"500ms\"\n{extra}",
                dir = self.dir.path().display(),
                port = hub_port.unwrap_or(self.hub.port),
                ca = self.pki.ca().display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("edge config");
        config
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

/// The original hare's datagram for a login of `user` (distinct users give distinct ids).
pub fn login(user: &str) -> Vec<u8> {
    format!(r#"{{"tst":1795708571,"hostname":"web","user":"{user}","service":"sshd","rhost":"192.0.2.10","tty":"ssh"}}"#)
        .into_bytes()
}

/// The original hare's datagrams for logins of `users`.
pub fn logins(users: &[String]) -> Vec<Vec<u8>> {
    users.iter().map(|u| login(u)).collect()
}

/// `prefix0`, `prefix1`, …
pub fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Writes `hub.toml` in `dir` with `broker` as the `[broker]` body (a `{port}` in it becomes
/// the TLS port, first 0, then pinned to what the OS chose, so a restarted hub is where the
/// edges look for it) and starts the hub. Returns it and its plain loopback MQTT port.
///
/// # Panics
/// When it does not start.
pub fn start_hub(dir: &Path, broker: &str) -> (Hub, u16) {
    start_hub_with(dir, broker, "")
}

/// [`start_hub`] with `extra` appended to the config, `{dir}` in it replaced by `dir`.
///
/// # Panics
/// When it does not start.
pub fn start_hub_with(dir: &Path, broker: &str, extra: &str) -> (Hub, u16) {
    let config = dir.join("hub.toml");
    let write = |port: u16, local_port: u16| {
        let text = format!(
            "state_dir = \"{dir}/hub-state\"\nshutdown_grace = \"5s\"\n[broker]\n{broker}\n{local}\
             [legacy]\nrepublish = true\n\
             [notifier.sshd_log]\ntype = \"file\"\npath = \"{dir}/notify.log\"\n\
             [[route]]\nmatch = {{ kind = \"login\" }}\nnotify = [\"sshd_log\"]\nformat = \"{FORMAT}\"\n{extra}",
            extra = extra.replace("{dir}", &dir.display().to_string()),
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
    // The local port is picked before the hub binds it, so a test running alongside can take
    // it in between: then try another.
    let mut tries = 0;
    loop {
        let local_port = free_port().expect("a free port");
        write(0, local_port);
        match Hub::launch(&warren_harness::Program::built("hub").quiet(), &config) {
            Ok(hub) => {
                write(hub.port, local_port);
                return (hub, local_port);
            }
            Err(e) if tries >= 3 => panic!("{e}"),
            Err(_) => tries += 1,
        }
    }
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
    assert_each_arrives_in(|| notification_lines(dir), expected, repeats, WAIT);
}

/// [`assert_each_arrives`] over the notification `lines` of wherever they are written (the
/// files of several hubs), waiting up to `wait`.
///
/// # Panics
/// On a missing notification, or more repeats than allowed.
pub fn assert_each_arrives_in(
    lines: impl Fn() -> Vec<String>,
    expected: &[String],
    repeats: usize,
    wait: std::time::Duration,
) {
    let count = || {
        let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
        for line in lines() {
            let user = line
                .strip_prefix("User ")
                .and_then(|l| l.split(' ').next())
                .unwrap_or_default()
                .to_owned();
            *per_user.entry(user).or_default() += 1;
        }
        per_user
    };
    let per_user = wait_for("every notification", wait, || {
        let c = count();
        expected.iter().all(|u| c.contains_key(u)).then_some(c)
    });
    let dups: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.len() <= repeats && dups.iter().all(|(_, n)| **n == 2),
        "notified more than once: {dups:?} (allowed: {repeats} repeated once)"
    );
}
