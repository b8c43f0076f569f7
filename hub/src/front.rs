//! The embedded broker's front door, and the only one: the TLS listener for edges and the plain
//! loopback listener for local tools. It terminates TLS (verifying client certificates against
//! the CA and the revocation list), gives each handshake a deadline, caps connections, and
//! hands each client to a [`session`](crate::session), which checks every packet before
//! rumqttd sees it. Each connection is its own task, so a client that connects and says
//! nothing delays no one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_daemon::tls::CertFacts;

use crate::session::{self, Gate, Via};
use crate::trust::{Trust, TrustSource};

/// Most local tools connected at once.
pub const MAX_LOCAL: usize = 64;

/// The bound listeners, ready to let clients in.
pub struct Front {
    /// TLS, for edges: the listener, what its set-up is built from, and the set-up.
    pub tls: Option<(TcpListener, TrustSource, Trust)>,
    /// Plain MQTT on loopback, for local tools.
    pub local: Option<TcpListener>,
    /// Who may connect and do what.
    pub gate: Arc<Gate>,
    /// Most edges connected at once (local tools have their own limit).
    pub max_connections: usize,
}

impl Front {
    /// Lets clients in until `stop`, but only once `bus_connected` says the hub's own client is
    /// connected (and has sent its subscriptions): an edge's first events would otherwise
    /// reach no subscriber and wait for their resend. Early clients wait in the backlog.
    pub async fn run(self, mut bus_connected: watch::Receiver<bool>, stop: CancellationToken) {
        tokio::select! {
            () = stop.cancelled() => return,
            r = bus_connected.wait_for(|c| *c) => if r.is_err() { return },
        }
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let local_permits = Arc::new(Semaphore::new(MAX_LOCAL));
        let connections = TaskTracker::new();
        let listening = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let tls = self.tls.map(|(listener, source, trust)| {
            tracing::info!(addr = %listening(&listener), mtls = trust.mutual, "Listening for edges.");
            let (tx, rx) = watch::channel(trust);
            connections.spawn(source.watch(tx, stop.clone()));
            (listener, rx)
        });
        if let Some(l) = &self.local {
            tracing::info!(addr = %listening(l), "Listening for local tools.");
        }
        loop {
            let (tcp, peer, via_tls) = tokio::select! {
                () = stop.cancelled() => break,
                r = accept(tls.as_ref().map(|(l, _)| l)) => match r {
                    Some(c) => (c.0, c.1, true),
                    None => continue,
                },
                r = accept(self.local.as_ref()) => match r {
                    Some(c) => (c.0, c.1, false),
                    None => continue,
                },
            };
            // Local tools have their own few places, so that neither side can crowd out the other.
            let pool = if via_tls { &permits } else { &local_permits };
            let Ok(permit) = pool.clone().try_acquire_owned() else {
                let detail = format!(
                    "{} connections at once",
                    if via_tls {
                        self.max_connections
                    } else {
                        MAX_LOCAL
                    }
                );
                self.gate
                    .stats
                    .refused
                    .refuse("a connection", "connection_limit", &peer, &detail);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (gate, stop) = (self.gate.clone(), stop.clone());
            let trust = tls.as_ref().map(|(_, t)| t.clone());
            connections.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = connection(tcp, peer, trust.filter(|_| via_tls), gate, permit) => {}
                }
            });
        }
        connections.close();
        connections.wait().await;
    }
}

/// The next client of `listener`; never, without one. A failed accept (EMFILE and the like) is
/// logged and backed off from instead of spinning.
async fn accept(listener: Option<&TcpListener>) -> Option<(TcpStream, SocketAddr)> {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(error) => {
            tracing::warn!(%error, "Accepting a connection failed.");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    trust: Option<watch::Receiver<Trust>>,
    gate: Arc<Gate>,
    _permit: OwnedSemaphorePermit,
) {
    let Some(trust) = trust else {
        return session::serve(tcp, peer, Via::Local, gate, None).await;
    };
    let acceptor = trust.borrow().acceptor.clone();
    let tls = match tokio::time::timeout(gate.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            gate.stats
                .refused
                .refuse("a TLS handshake", "tls_handshake", &peer, &error);
            return;
        }
        Err(_) => {
            gate.stats.refused.refuse(
                "a TLS handshake",
                "tls_timeout",
                &peer,
                &"no handshake in time",
            );
            return;
        }
    };
    let cert = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(der) => match CertFacts::of(der) {
            Ok(facts) => Some(facts),
            Err(error) => {
                // Verified, yet unreadable: never fall back to "no certificate".
                gate.stats
                    .refused
                    .refuse("a TLS handshake", "certificate", &peer, &error);
                return;
            }
        },
        None => None,
    };
    session::serve(tls, peer, Via::Tls(cert), gate, Some(trust)).await;
}
