//! The embedded rumqttd broker.
//!
//! rumqttd listens only on loopback, in plain MQTT: edges reach it through the hub's own TLS
//! front ([`crate::guard`]), which verifies certificates and drops clients that stall their
//! handshake — rumqttd's accept loop waits for each TLS handshake in turn, so one idle peer
//! would hold up every other edge. rumqttd has no stop call: its threads end with the process.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use thiserror::Error;
use warren_daemon::Secret;
use warren_proto::envelope::MAX_PAYLOAD;

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The users file could not be read or parsed.
    #[error("{path}: {reason}")]
    Users {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A listener or TLS set-up failed.
    #[error("{0}")]
    Setup(String),
}

/// The running embedded broker, as the hub's own client sees it.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// rumqttd's internal loopback listener.
    pub internal: SocketAddr,
    /// The credentials of the hub's own client, when the broker asks for passwords.
    pub credentials: Option<(String, Secret)>,
}

/// Reads a users file: one `username password` per line, `#` comments.
///
/// # Errors
/// [`BrokerError::Users`] naming the line.
pub fn read_users(path: &Path) -> Result<BTreeMap<String, String>, BrokerError> {
    let err = |reason: String| BrokerError::Users {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut users = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(char::is_whitespace) else {
            return Err(err(format!("line {}: expected `username password`", n + 1)));
        };
        users.insert(user.to_owned(), password.trim().to_owned());
    }
    Ok(users)
}

/// Starts rumqttd on its own threads. The hub's client connects (retrying) once it listens.
///
/// With `users`, every client needs a password, the hub's own client included (it gets a
/// random one); without, the broker is open to whoever reaches its loopback listeners.
///
/// # Errors
/// When a port cannot be had or the thread not started.
pub fn start(
    max_connections: usize,
    users: Option<BTreeMap<String, String>>,
    listen_local: Option<SocketAddr>,
) -> Result<Embedded, BrokerError> {
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
    Ok(Embedded {
        internal,
        credentials,
    })
}
