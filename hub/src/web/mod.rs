//! The hub's web listener (`[web] listen`): the page a person looks at (`/`), the same data as
//! JSON for other tools (`/api/v1/status`, `/api/v1/events`) and the Prometheus metrics
//! (`/metrics`). Read-only: no request changes anything.
//!
//! The page lists every login, so it is guarded like one: loopback by default; any other
//! address needs HTTPS and a token ([`config`]); without a token, only requests naming a
//! loopback host are answered, so a web site cannot read it through DNS rebinding. (An older
//! `[metrics]` listener serves `/metrics` alone, as before.) The store work of each request
//! runs on the blocking pool; connections are capped, must send their headers in time, and
//! live a bounded time, so a slow or hostile client cannot hold the listener or the hub's
//! shutdown.

pub mod config;
mod page;
mod routes;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_daemon::Secret;
use warren_daemon::config::ConfigError;

pub use self::config::{Web, WebConfig};
use self::routes::Site;
use crate::status::Source;

/// Most connections at once; the others wait in the backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not finished its TLS handshake, or sent a request's headers, by then is
/// dropped; so is one that has not read its answer by then when the hub stops.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is ended after this long (after its request in progress, or
/// [`CLIENT_TIMEOUT`] later): one that never reads its answers holds no slot for longer. A
/// browser just opens another.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);

/// The listener's settings with what protects it: TLS and the token, read from the files
/// `[web]` names.
pub struct Guard {
    /// `[web]`.
    pub web: Web,
    /// HTTPS.
    pub tls: Option<TlsAcceptor>,
    /// What every request must carry.
    pub token: Option<Secret>,
}

impl Guard {
    /// Reads the certificate, key and token `web` names in the config file `config`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key and the file at fault.
    pub fn load(config: &Path, web: &Web) -> Result<Self, ConfigError> {
        let tls = match &web.tls {
            Some((cert, key)) => {
                let pair = warren_daemon::tls::load_pair(
                    config,
                    ("web.cert_file", cert),
                    ("web.key_file", key),
                )?;
                let mut server = rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_single_cert(pair.certs, pair.key)
                    .map_err(|e| ConfigError::file(config, "web.cert_file", cert, &e))?;
                server.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsAcceptor::from(Arc::new(server)))
            }
            None => None,
        };
        let token = web
            .token_file
            .as_deref()
            .map(|p| {
                Secret::read(p).map_err(|e| ConfigError::file(config, "web.token_file", p, &e))
            })
            .transpose()?;
        Ok(Self {
            web: web.clone(),
            tls,
            token,
        })
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("web", &self.web)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token)
            .finish()
    }
}

/// Serves `site` on `listener` until `stop`; connections in progress finish their request.
pub async fn serve(
    listener: TcpListener,
    guard: Guard,
    source: Arc<Source>,
    stop: CancellationToken,
) {
    let Guard { web, tls, token } = guard;
    let site = Arc::new(Site {
        source,
        token,
        page: web.page,
        refresh: web.refresh,
    });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(%error, "Web listener accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (site, tls, stop) = (site.clone(), tls.clone(), stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => connection(tcp, peer, site, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, peer, site, stop).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "Web TLS handshake failed.")
                        }
                        Err(_) => tracing::debug!(%peer, "Web TLS handshake timed out."),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection<S>(stream: S, peer: SocketAddr, site: Arc<Site>, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| routes::respond(req, peer, site.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = stop.cancelled() => None,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            // A browser keeps its connection open, and a hostile client may never read: end
            // it after the request in progress, or soon.
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(CLIENT_TIMEOUT, conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "Web connection ended.");
    }
}
