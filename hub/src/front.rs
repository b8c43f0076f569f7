//! The TLS front of the embedded broker: the only way in from outside. It terminates TLS
//! (verifying client certificates when a client CA is configured), gives each handshake a
//! deadline, caps connections, and relays the plain MQTT stream to rumqttd on loopback. Each
//! connection is its own task, so a client that connects and says nothing delays no one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A verifier of client certificates that chain to one of `cas`.
///
/// # Errors
/// When a certificate cannot serve as a root (the caller names the file).
pub fn client_verifier(
    cas: Vec<CertificateDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| e.to_string())?;
    }
    WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| e.to_string())
}

/// The server side of TLS: the hub's certificate and key, and the verifier of the edges'
/// certificates (none: no client certificate is asked for).
///
/// # Errors
/// When the certificate and key cannot serve.
pub fn acceptor(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<TlsAcceptor, String> {
    let builder = rustls::ServerConfig::builder();
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A bound TLS listener, ready to relay edges to the broker.
pub struct Front {
    /// The listener.
    pub listener: TcpListener,
    /// Its TLS set-up.
    pub acceptor: TlsAcceptor,
    /// Whether edges must present a certificate.
    pub mutual: bool,
    /// rumqttd's internal listener.
    pub upstream: SocketAddr,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
}

impl Front {
    /// Accepts edges until `stop`, but only once `bus_connected` says the hub's own client is
    /// connected (and has sent its subscriptions): an edge's first events would otherwise
    /// reach no subscriber and wait for their resend. Early clients wait in the backlog.
    pub async fn run(self, mut bus_connected: watch::Receiver<bool>, stop: CancellationToken) {
        tokio::select! {
            () = stop.cancelled() => return,
            r = bus_connected.wait_for(|c| *c) => if r.is_err() { return },
        }
        let addr = self
            .listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(%addr, mtls = self.mutual, "Listening for edges.");
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let connections = TaskTracker::new();
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(error) => {
                        // EMFILE and the like: back off a little instead of spinning.
                        tracing::warn!(%error, "TLS listener accept failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max_connections = self.max_connections, "Connection limit reached; refusing a client.");
                continue;
            };
            let (acceptor, stop) = (self.acceptor.clone(), stop.clone());
            let (upstream, timeout) = (self.upstream, self.handshake_timeout);
            connections.spawn(async move {
                let _permit = permit;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = relay(tcp, peer, acceptor, upstream, timeout) => {}
                }
            });
        }
        connections.close();
        connections.wait().await;
    }
}

async fn relay(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    handshake_timeout: Duration,
) {
    let _ = tcp.set_nodelay(true);
    let mut tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::warn!(%peer, %error, "TLS handshake refused.");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out; dropped the client.");
            return;
        }
    };
    let mut broker = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "Cannot reach the embedded broker.");
            return;
        }
    };
    let _ = broker.set_nodelay(true);
    if let Err(error) = tokio::io::copy_bidirectional(&mut tls, &mut broker).await {
        tracing::debug!(%peer, %error, "Connection ended.");
    }
}
