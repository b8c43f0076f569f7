//! The embedded rumqttd broker, behind the hub's front.
//!
//! rumqttd listens only on loopback, in plain MQTT, and takes two logins made at each start:
//! the hub's own client's and the front's. Every other client comes through the [`front`]
//! (TLS for edges, plain loopback for local tools), which checks who it is and every packet
//! it sends ([`crate::session`]); a local user who finds rumqttd's port has no login for it.
//! rumqttd has no stop call: its threads end with the process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use thiserror::Error;
use warren_daemon::Secret;

use crate::bus::BusOptions;
use crate::front::Front;
use crate::passwd::{HUB_CLIENT_ID, Users};
use crate::session::{Gate, MAX_PACKET};
use crate::stats::Stats;
use crate::trust::{Trust, TrustSource};

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// A listener or the broker's thread could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// What the embedded broker needs, its files read ([`crate::resources`]).
pub struct Plan {
    /// The TLS listener for edges.
    pub listen_tls: Option<TlsSetup>,
    /// A plain listener on loopback for local tools.
    pub listen_local: Option<SocketAddr>,
    /// MQTT users; without them no password is asked.
    pub users: Option<Users>,
    /// TLS clients may connect with neither certificate nor password.
    pub anonymous: bool,
    /// Local tools may also use topics outside `warren/`.
    pub local_bus: bool,
    /// The legacy republish topic, which local tools may read.
    pub legacy_topic: String,
    /// Most connections.
    pub max_connections: usize,
    /// TLS handshake (and CONNECT) deadline.
    pub handshake_timeout: Duration,
}

/// The TLS listener's address and set-up.
pub struct TlsSetup {
    /// Where to listen.
    pub addr: SocketAddr,
    /// What the set-up is built from, to rebuild it when the revocation list changes.
    pub source: TrustSource,
    /// The set-up, built once already (so `check-config` has read every file).
    pub trust: Trust,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("listen_tls", &self.listen_tls.as_ref().map(|t| t.addr))
            .field("listen_local", &self.listen_local)
            .field("users", &self.users)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

/// The running broker: how the hub's own client reaches it, and the front to run.
pub struct Started {
    /// The hub's own client's connection.
    pub bus: BusOptions,
    /// The listeners, bound.
    pub front: Option<Front>,
}

/// Starts rumqttd on its own threads and binds the front's listeners.
///
/// # Errors
/// When a port cannot be had or the thread not started.
pub async fn start(plan: Plan, stats: Arc<Stats>) -> Result<Started, BrokerError> {
    let hub = (HUB_CLIENT_ID.to_owned(), per_start_secret()?);
    let front = ("warren-front".to_owned(), per_start_secret()?);
    let internal = spawn(plan.max_connections, [&hub, &front])?;
    owned_listener(internal.port()).await?;
    let bind = |what: &'static str, addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| BrokerError::Setup(format!("{what} {addr}: {e}")))
    };
    let tls = match plan.listen_tls {
        Some(t) => Some((bind("listen_tls", t.addr).await?, t.source, t.trust)),
        None => None,
    };
    let local = match plan.listen_local {
        Some(addr) => Some(bind("listen_local", addr).await?),
        None => None,
    };
    let gate = Gate {
        users: plan.users,
        anonymous: plan.anonymous,
        local_bus: plan.local_bus,
        legacy_topic: plan.legacy_topic,
        upstream: internal,
        login: front,
        handshake_timeout: plan.handshake_timeout,
        stats,
    };
    let front = (tls.is_some() || local.is_some()).then(|| Front {
        tls,
        local,
        gate: Arc::new(gate),
        max_connections: plan.max_connections,
    });
    let bus = BusOptions {
        host: internal.ip().to_string(),
        port: internal.port(),
        tls: None,
        credentials: Some(hub),
        client_id: HUB_CLIENT_ID.to_owned(),
        share_group: None,
    };
    Ok(Started { bus, front })
}

/// Waits until rumqttd listens on `port`, and makes sure the listener is this process's: the
/// port was free when chosen, but another local process could have bound it before rumqttd
/// did, and would then be sent both logins. Linux only (it reads /proc); elsewhere it waits for
/// the port and trusts it.
async fn owned_listener(port: u16) -> Result<(), BrokerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match listener_owner(port) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(BrokerError::Setup(format!(
                    "another process listens on the embedded broker's port 127.0.0.1:{port}"
                )));
            }
            None if tokio::time::Instant::now() > deadline => {
                return Err(BrokerError::Setup(format!(
                    "the embedded broker did not listen on 127.0.0.1:{port}"
                )));
            }
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Whether the socket listening on 127.0.0.1:`port` is this process's; `None` while nothing
/// listens there. When it is, it gets `TCP_NODELAY`, which Linux passes on to every socket it
/// accepts: rumqttd sets no option on its sockets, and with Nagle's algorithm a small packet
/// it writes (a PUBLISH to the hub's client, an ack for an edge) waits for the peer's delayed
/// ACK, up to 40 ms, whenever an earlier one is still unacknowledged.
#[cfg(target_os = "linux")]
fn listener_owner(port: u16) -> Option<bool> {
    use warren_daemon::procfs;
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
    let (_, inode) = procfs::tcp_listeners()
        .into_iter()
        .find(|(a, _)| *a == addr)?;
    let Some(&fd) = procfs::socket_fds("self").get(&inode) else {
        return Some(false);
    };
    if let Err(error) = no_delay(fd) {
        tracing::warn!(%error, "Could not set TCP_NODELAY on the embedded broker's listener.");
    }
    Some(true)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn no_delay(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: `fd` is rumqttd's listening socket (its inode was just matched), which stays
    // open as long as the process: rumqttd has no stop.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).set_tcp_nodelay(true)
}

#[cfg(not(target_os = "linux"))]
fn listener_owner(port: u16) -> Option<bool> {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .is_ok()
        .then_some(true)
}

/// 256 bits from the system's random source; no fallback: a guessable login would open
/// rumqttd to any local user.
fn per_start_secret() -> Result<Secret, BrokerError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| BrokerError::Setup("no randomness for the broker's logins".into()))?;
    Ok(Secret::new(warren_daemon::tls::hex(&bytes)))
}

/// Starts rumqttd on its own thread, taking only `logins`; returns its internal listener.
/// The clients connect (retrying) once it listens.
fn spawn(
    max_connections: usize,
    logins: [&(String, Secret); 2],
) -> Result<SocketAddr, BrokerError> {
    // rumqttd binds by address and cannot report a port it chose: take a free one. Another
    // process could grab it first: the hub then never connects, which `hub status` shows.
    let internal = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BrokerError::Setup(format!("picking a loopback port: {e}")))?;
    let auth = logins
        .iter()
        .map(|(user, pass)| (user.clone(), pass.expose().to_owned()))
        .collect::<HashMap<_, _>>();
    let settings = ServerSettings {
        name: "internal".to_owned(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PACKET,
            max_inflight_count: 100,
            auth: Some(auth),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let v4 = HashMap::from([("internal".to_owned(), settings)]);
    let config = Config {
        id: 0,
        router: RouterConfig {
            // Edges, local tools, the hub itself.
            max_connections: max_connections + crate::front::MAX_LOCAL + 1,
            max_outgoing_packet_count: 200,
            // Small segments: rumqttd keeps every message in memory, and the edges' queues,
            // not the broker, are where a backlog belongs.
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "Embedded broker stopped.");
            }
        })
        .map_err(|e| BrokerError::Setup(format!("starting the broker thread: {e}")))?;
    Ok(internal)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    #[test]
    fn a_listener_of_another_process_is_told_apart() {
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = ours.local_addr().unwrap().port();
        assert_eq!(listener_owner(port), Some(true));
        assert!(socket2::SockRef::from(&ours).tcp_nodelay().unwrap());
        drop(ours);
        assert_eq!(listener_owner(port), None);

        // Another local process listening: a squatter on the broker's port.
        let mut squatter = Command::new("python3")
            .args(["-c", "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(squatter.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        assert_eq!(listener_owner(port), Some(false));
        squatter.kill().unwrap();
        squatter.wait().unwrap();
    }
}
