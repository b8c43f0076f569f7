//! A running hub or edge, started from its config file and waited for through its status
//! socket, as an operator's `hub status` / `edge status` would see it.
//!
//! The status is read as JSON into whatever type the caller names (`Hub<HubStatus>` in the
//! hub's tests); readiness needs only a field or two of it, read from the raw JSON.

use std::marker::PhantomData;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Proc, Program, WAIT, wait_for, wait_until};

/// How long a daemon gets to drain after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A running hub; `S` is the type its status is read into.
#[derive(Debug)]
pub struct Hub<S = Value> {
    /// The process.
    pub proc: Proc,
    /// Its config file.
    pub config: PathBuf,
    /// Its status socket.
    pub socket: PathBuf,
    /// Its TLS port (0 without `listen_tls`).
    pub port: u16,
    program: Program,
    status: PhantomData<fn() -> S>,
}

impl<S: DeserializeOwned> Hub<S> {
    /// Starts `hub run --config CONFIG` with `program` and waits until its own client is
    /// connected to its broker.
    ///
    /// # Errors
    /// When it does not start or come up within [`WAIT`].
    pub fn launch(program: &Program, config: &Path) -> Result<Self, String> {
        let socket = status_socket(config, "hub.sock")?;
        let mut proc = Proc::try_spawn(
            "hub",
            program.command()?.args(["run", "--config"]).arg(config),
        )?;
        let status = wait_until("the hub to connect to its broker", WAIT, || {
            if !proc.running() {
                return Some(Err("the hub exited".to_owned()));
            }
            query(&socket)
                .ok()
                .filter(|s| s["broker_connected"] == true)
                .map(Ok)
        })??;
        let port = status["listen"][0]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map_or(0, |a| a.port());
        Ok(Self {
            proc,
            config: config.to_owned(),
            socket,
            port,
            program: program.clone(),
            status: PhantomData,
        })
    }

    /// [`Hub::launch`] with the workspace's `hub`, quiet, for tests.
    ///
    /// # Panics
    /// When it does not come up.
    pub fn start(config: &Path) -> Self {
        Self::launch(&Program::built("hub").quiet(), config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The hub's status.
    ///
    /// # Errors
    /// When it does not answer, or answers something else than `S`.
    pub fn try_status(&self) -> Result<S, String> {
        warren_daemon::query_status(&self.socket, "hub")
    }

    /// The hub's status, for tests.
    ///
    /// # Panics
    /// When it does not answer.
    pub fn status(&self) -> S {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILL, and start it again from the same config.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn kill_and_restart(&mut self) {
        self.proc.kill9();
        *self = Self::launch(&self.program, &self.config).unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGTERM, and wait for it to drain and exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.proc.stop(STOP_GRACE)
    }
}

/// A running edge; `S` is the type its status is read into.
#[derive(Debug)]
pub struct Edge<S = Value> {
    /// Its id (the process name in messages).
    pub id: String,
    /// The process.
    pub proc: Proc,
    /// Its config file.
    pub config: PathBuf,
    /// Its status socket.
    pub socket: PathBuf,
    /// Where it takes datagrams (its first listen address, port 0 resolved).
    pub udp: SocketAddr,
    program: Program,
    status: PhantomData<fn() -> S>,
}

impl<S: DeserializeOwned> Edge<S> {
    /// Starts `edge run --config CONFIG` with `program` and waits for its status socket.
    ///
    /// # Errors
    /// When it does not start or come up within [`WAIT`].
    pub fn launch(program: &Program, id: &str, config: &Path) -> Result<Self, String> {
        let socket = status_socket(config, "edge.sock")?;
        let mut proc =
            Proc::try_spawn(id, program.command()?.args(["run", "--config"]).arg(config))?;
        let status = wait_until(id, WAIT, || {
            if !proc.running() {
                return Some(Err(format!("{id} exited")));
            }
            query(&socket).ok().map(Ok)
        })??;
        let udp = status["listen"][0]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{id} reports no listen address: {status}"))?;
        Ok(Self {
            id: id.to_owned(),
            proc,
            config: config.to_owned(),
            socket,
            udp,
            program: program.clone(),
            status: PhantomData,
        })
    }

    /// [`Edge::launch`] with the workspace's `edge`, quiet, for tests.
    ///
    /// # Panics
    /// When it does not come up.
    pub fn start(id: &str, config: &Path) -> Self {
        Self::launch(&Program::built("edge").quiet(), id, config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The edge's status.
    ///
    /// # Errors
    /// When it does not answer, or answers something else than `S`.
    pub fn try_status(&self) -> Result<S, String> {
        warren_daemon::query_status(&self.socket, "edge")
    }

    /// The edge's status, for tests.
    ///
    /// # Panics
    /// When it does not answer.
    pub fn status(&self) -> S {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILL, and start it again from the same config.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn kill_and_restart(&mut self) {
        self.proc.kill9();
        *self =
            Self::launch(&self.program, &self.id, &self.config).unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGTERM, and wait for it to drain and exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.proc.stop(STOP_GRACE)
    }

    /// Sends `datagrams` in chunks, each waited for until the edge counts it accepted (made
    /// durable), so the kernel's receive buffer never overflows; returns once all are in.
    ///
    /// # Panics
    /// When the edge does not accept them within [`WAIT`].
    pub fn send_confirmed(&self, datagrams: &[Vec<u8>]) {
        let accepted = || {
            query(&self.socket)
                .ok()
                .and_then(|s| s["counters"]["accepted"].as_u64())
        };
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let base = wait_for("the edge's status", WAIT, accepted);
        for (i, chunk) in datagrams.chunks(200).enumerate() {
            for d in chunk {
                sock.send_to(d, self.udp).expect("send");
            }
            let want = base + (i * 200 + chunk.len()) as u64;
            wait_for("the edge to accept", WAIT, || {
                accepted().filter(|&n| n >= want)
            });
        }
    }

    /// Sends `datagrams` without waiting.
    ///
    /// # Panics
    /// When a socket cannot be bound.
    pub fn send(&self, datagrams: &[Vec<u8>]) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
        for d in datagrams {
            let _ = sock.send_to(d, self.udp);
        }
    }
}

fn query(socket: &Path) -> Result<Value, String> {
    warren_daemon::query_status(socket, "daemon")
}

/// The status socket a daemon's config names: `status_socket`, or `<state_dir>/<file>`.
fn status_socket(config: &Path, file: &str) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let path = |key: &str| table.get(key).and_then(|v| v.as_str()).map(PathBuf::from);
    path("status_socket")
        .or_else(|| path("state_dir").map(|d| d.join(file)))
        .ok_or_else(|| {
            format!(
                "{}: the harness needs state_dir or status_socket",
                config.display()
            )
        })
}
