//! The embedded rumqttd broker, and the TLS listener in front of it.
//!
//! rumqttd listens only on loopback, in plain MQTT: edges reach it through the hub's own TLS
//! front ([`crate::front`]), which verifies certificates and drops clients that stall their
//! handshake — rumqttd's accept loop waits for each TLS handshake in turn, so one idle peer
//! would hold up every other edge. rumqttd has no stop call: its threads end with the process.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use warren_daemon::Secret;
use warren_proto::envelope::MAX_PAYLOAD;

use crate::bus::BusOptions;
use crate::front::Front;

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
    /// MQTT users and passwords; without them no password is asked.
    pub users: Option<BTreeMap<String, String>>,
    /// Most connections.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
}

/// The TLS listener's address and set-up.
pub struct TlsSetup {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The hub's certificate, and the verifier of the edges' ones.
    pub acceptor: TlsAcceptor,
    /// Whether edges must present a certificate.
    pub mutual: bool,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("listen_tls", &self.listen_tls.as_ref().map(|t| t.addr))
            .field("listen_local", &self.listen_local)
            .field("users", &self.users.as_ref().map(BTreeMap::len))
            .finish_non_exhaustive()
    }
}

/// The running broker: how the hub's own client reaches it, and the TLS front to run.
pub struct Started {
    /// The hub's own client's connection.
    pub bus: BusOptions,
    /// The TLS listener, bound.
    pub front: Option<Front>,
}

/// Starts rumqttd on its own threads and binds the TLS listener in front of it.
///
/// # Errors
/// When a port cannot be had or the thread not started.
pub async fn start(plan: Plan) -> Result<Started, BrokerError> {
    let (internal, credentials) = spawn(plan.max_connections, plan.users, plan.listen_local)?;
    let front = match plan.listen_tls {
        Some(TlsSetup {
            addr,
            acceptor,
            mutual,
        }) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| BrokerError::Setup(format!("listen_tls {addr}: {e}")))?;
            Some(Front {
                listener,
                acceptor,
                mutual,
                upstream: internal,
                handshake_timeout: plan.handshake_timeout,
                max_connections: plan.max_connections,
            })
        }
        None => None,
    };
    let bus = BusOptions {
        host: internal.ip().to_string(),
        port: internal.port(),
        tls: None,
        credentials,
        client_id: "warren-hub".to_owned(),
        share_group: None,
    };
    Ok(Started { bus, front })
}

/// Reads a users file: one `username password` per line, `#` comments.
///
/// # Errors
/// Why the file is unusable, naming the line (the caller names the file).
pub fn read_users(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut users = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(char::is_whitespace) else {
            return Err(format!("line {}: expected `username password`", n + 1));
        };
        users.insert(user.to_owned(), password.trim().to_owned());
    }
    Ok(users)
}

/// Starts rumqttd on its own thread; returns its internal listener and the credentials of the
/// hub's own client. The hub's client connects (retrying) once it listens.
///
/// With `users`, every client needs a password, the hub's own client included (it gets a
/// random one); without, the broker is open to whoever reaches its loopback listeners.
fn spawn(
    max_connections: usize,
    users: Option<BTreeMap<String, String>>,
    listen_local: Option<SocketAddr>,
) -> Result<(SocketAddr, Option<(String, Secret)>), BrokerError> {
    // rumqttd binds by address and cannot report a port it chose: take a free one. Another
    // process could grab it first: the hub then never connects, which `hub status` shows.
    let internal = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BrokerError::Setup(format!("picking a loopback port: {e}")))?;
    if let Some(local) = listen_local {
        // rumqttd would only log a failed bind from its thread: find out here, clearly.
        std::net::TcpListener::bind(local)
            .map_err(|e| BrokerError::Setup(format!("listen_local {local}: {e}")))?;
    }
    let credentials = users.as_ref().map(|_| {
        (
            "warren-hub".to_owned(),
            Secret::new(warren_proto::EventId::generate().to_string()),
        )
    });
    let auth = users.map(|mut u| {
        if let Some((user, pass)) = &credentials {
            u.insert(user.clone(), pass.expose().to_owned());
        }
        u.into_iter().collect::<HashMap<_, _>>()
    });
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: auth.clone(),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let mut v4 = HashMap::from([("internal".to_owned(), server("internal", internal))]);
    if let Some(local) = listen_local {
        v4.insert("local".to_owned(), server("local", local));
    }
    let config = Config {
        id: 0,
        router: RouterConfig {
            // Edges plus the hub itself and local tools.
            max_connections: max_connections + 16,
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
    Ok((internal, credentials))
}
