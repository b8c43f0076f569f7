//! The TLS front of the embedded broker: terminates TLS (verifying client certificates when a
//! client CA is configured), gives each handshake a deadline, caps connections, and relays the
//! plain MQTT stream to rumqttd on loopback. Each connection is its own task, so a client that
//! connects and says nothing delays no one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerError;

/// Builds the TLS acceptor from PEM files.
///
/// # Errors
/// Unreadable or invalid certificates or key.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, BrokerError> {
    let setup = |what: &Path, e: &dyn std::fmt::Display| {
        BrokerError::Setup(format!("{}: {e}", what.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| setup(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| setup(key, &e))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| setup(ca, &e))? {
                roots
                    .add(c.map_err(|e| setup(ca, &e))?)
                    .map_err(|e| setup(ca, &e))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| setup(ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| setup(cert, &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts on `listener` until `stop`, relaying each client to `upstream`.
pub async fn run(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    handshake_timeout: Duration,
    max_connections: usize,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
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
            tracing::warn!(%peer, max_connections, "Connection limit reached; refusing a client.");
            continue;
        };
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = stop.cancelled() => {}
                () = relay(tcp, peer, acceptor, upstream, handshake_timeout) => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
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
