//! The warren hub: embedded MQTT broker (or a client of an external one), durable inbox,
//! dedup, routing, and notifiers with retries (DESIGN.md).
//!
//! [`run`] wires the tasks: the [`bus`] client feeds the [`inbound`] task, which commits new
//! events and their deliveries to the [`inbox`] before acking them; one [`delivery`] task per
//! notifier drains its outbox; the status socket answers `hub status`.

pub mod broker;
pub mod bus;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod guard;
pub mod inbound;
pub mod inbox;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod router;
pub mod stats;
pub mod status;
pub mod template;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rumqttc::TlsConfiguration;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::BusOptions;
use crate::config::{Broker, HubConfig};
use crate::inbox::Inbox;
use crate::notify::{BuildContext, Notifier};
use crate::stats::Stats;

/// How often ids past the dedup window are forgotten.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Messages from the broker waiting for the inbox.
const INBOUND_CHANNEL: usize = 4096;

/// Why the hub could not start, or stopped with an error.
#[derive(Debug, Error)]
pub enum HubError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The inbox failed.
    #[error(transparent)]
    Inbox(#[from] inbox::InboxError),
    /// The broker or its TLS front could not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// A notifier could not be built.
    #[error(transparent)]
    Notifier(#[from] notify::BuildError),
    /// A file named by the config could not be read.
    #[error("{0}")]
    File(String),
    /// A socket could not be bound.
    #[error("{what} {addr}: {source}")]
    Bind {
        /// Which.
        what: &'static str,
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A task panicked.
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Builds every notifier (reading token files, checking commands): `check-config` and `run`.
///
/// # Errors
/// The first notifier that cannot be built.
pub fn build_notifiers(cfg: &HubConfig) -> Result<Vec<(notify::NotifierName, Notifier)>, HubError> {
    let cx = BuildContext::new(cfg.delivery.timeout)?;
    cfg.notifiers
        .iter()
        .map(|(name, c)| Ok((name.clone(), Notifier::build(name, c, &cx)?)))
        .collect()
}

/// Runs the hub until `shutdown`, then drains: stop reading the broker, let the notifiers
/// finish their current delivery within the grace period, flush.
///
/// # Errors
/// When the inbox, broker, a notifier or a socket cannot be set up, or the inbox fails.
pub async fn run(cfg: HubConfig, shutdown: CancellationToken) -> Result<(), HubError> {
    // rumqttc's and the TLS front's rustls need a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = Arc::new(cfg);
    let notifiers = build_notifiers(&cfg)?;
    let dir = cfg.inbox_dir.clone();
    let inbox = Arc::new(tokio::task::spawn_blocking(move || Inbox::open(&dir)).await??);
    let stats = Arc::new(Stats::default());
    let tracker = TaskTracker::new();
    let stop_front = shutdown.child_token();

    let mut listen = Vec::new();
    let (bus_opts, mode) = match &cfg.broker {
        Broker::Embedded {
            listen_tls,
            listen_local,
            cert_key,
            client_ca,
            users_file,
            max_connections,
            handshake_timeout,
        } => {
            let users = users_file.as_deref().map(broker::read_users).transpose()?;
            let embedded = broker::start(*max_connections, users, *listen_local)?;
            if let (Some(addr), Some((cert, key))) = (listen_tls, cert_key) {
                let acceptor = guard::acceptor(cert, key, client_ca.as_deref())?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| HubError::Bind {
                        what: "TLS listener",
                        addr: addr.to_string(),
                        source,
                    })?;
                let bound = listener
                    .local_addr()
                    .map_or_else(|_| addr.to_string(), |a| a.to_string());
                tracing::info!(addr = %bound, mtls = client_ca.is_some(), "Listening for edges.");
                listen.push(bound);
                // Let edges in only once the hub's own client is connected (and has sent its
                // subscriptions): an edge's first events would otherwise reach no subscriber
                // and wait `ack_timeout` for their resend. Early clients wait in the backlog.
                let (stats, stop, upstream, timeout, max) = (
                    stats.clone(),
                    stop_front.clone(),
                    embedded.internal,
                    *handshake_timeout,
                    *max_connections,
                );
                tracker.spawn(async move {
                    while !stats
                        .bus_connected
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                        }
                    }
                    guard::run(listener, acceptor, upstream, timeout, max, stop).await;
                });
            }
            let opts = BusOptions {
                host: embedded.internal.ip().to_string(),
                port: embedded.internal.port(),
                tls: None,
                credentials: embedded.credentials,
                client_id: "warren-hub".to_owned(),
                share_group: None,
            };
            (opts, "embedded")
        }
        Broker::External {
            host,
            port,
            tls,
            ca_file,
            client_cert,
            username,
            password_file,
            client_id,
            share_group,
        } => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| HubError::File(format!("{}: {e}", p.display())))
            };
            let tls = if *tls {
                Some(TlsConfiguration::Simple {
                    ca: ca_file
                        .as_deref()
                        .map(read)
                        .transpose()?
                        .unwrap_or_default(),
                    alpn: None,
                    client_auth: client_cert
                        .as_ref()
                        .map(|(c, k)| Ok::<_, HubError>((read(c)?, read(k)?)))
                        .transpose()?,
                })
            } else {
                None
            };
            let password = password_file
                .as_deref()
                .map(|p| {
                    read(p).map(|b| {
                        String::from_utf8_lossy(&b)
                            .trim_end_matches(['\n', '\r'])
                            .to_owned()
                    })
                })
                .transpose()?;
            let opts = BusOptions {
                host: host.clone(),
                port: *port,
                tls,
                credentials: username
                    .clone()
                    .map(|u| (u, warren_daemon::Secret::new(password.unwrap_or_default()))),
                client_id: client_id.clone(),
                share_group: Some(share_group.clone()),
            };
            (opts, "external")
        }
    };

    let stop_delivery = CancellationToken::new();
    let mut wakes = HashMap::new();
    let names: Vec<String> = notifiers.iter().map(|(n, _)| n.to_string()).collect();
    for (name, notifier) in notifiers {
        let wake = Arc::new(Notify::new());
        // Entries left from a previous run are delivered at once.
        wake.notify_one();
        wakes.insert(name.clone(), wake.clone());
        let (inbox, policy, stats, stop) = (
            inbox.clone(),
            cfg.delivery.clone(),
            stats.clone(),
            stop_delivery.clone(),
        );
        tracker.spawn(async move {
            if let Err(error) =
                delivery::run(name.clone(), notifier, inbox, policy, wake, stats, stop).await
            {
                tracing::error!(notifier = %name, %error, "Delivery task failed.");
            }
        });
    }

    let (client, eventloop) = bus::connect(&bus_opts);
    let (tx, rx) = mpsc::channel(INBOUND_CHANNEL);
    let stop_bus = shutdown.child_token();
    tracker.spawn(bus::drive(
        eventloop,
        client.clone(),
        bus_opts,
        tx,
        stats.clone(),
        stop_bus,
    ));
    let pipeline = inbound::Pipeline {
        inbox: inbox.clone(),
        routes: Arc::new(cfg.routes.clone()),
        client: client.clone(),
        stats: stats.clone(),
        wakes,
        cfg: cfg.clone(),
    };
    let mut inbound = tracker.spawn(inbound::run(rx, pipeline));

    tracker.spawn({
        let (inbox, window, stop) = (inbox.clone(), cfg.dedup.window, shutdown.child_token());
        async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let before = crate::now_ms()
                    .saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
                let inbox = inbox.clone();
                match tokio::task::spawn_blocking(move || inbox.prune(before)).await {
                    Ok(Ok(n)) if n > 0 => {
                        tracing::debug!(forgotten = n, "Pruned the dedup window.")
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::error!(%error, "Pruning the dedup window failed."),
                    Err(error) => tracing::error!(%error, "Pruning task failed."),
                }
            }
        }
    });

    let status =
        warren_daemon::bind_status(&cfg.status_socket).map_err(|source| HubError::Bind {
            what: "status socket",
            addr: cfg.status_socket.display().to_string(),
            source,
        })?;
    let source = Arc::new(status::Source {
        mode,
        listen,
        stats: stats.clone(),
        inbox: inbox.clone(),
        notifiers: names,
    });
    if let Some(addr) = cfg.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HubError::Bind {
                what: "metrics listener",
                addr: addr.to_string(),
                source,
            })?;
        tracing::info!(%addr, "Serving Prometheus metrics on /metrics.");
        tracker.spawn(metrics::serve(
            listener,
            source.clone(),
            shutdown.child_token(),
        ));
    }
    tracker.spawn(warren_daemon::serve_status(
        status,
        move || source.snapshot(),
        shutdown.child_token(),
    ));
    tracker.close();
    tracing::info!(mode, status = %cfg.status_socket.display(), "Hub ready.");

    let mut result = tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        r = &mut inbound => {
            shutdown.cancel();
            r.map_err(HubError::from).and_then(|r| r.map_err(HubError::from))
        }
    };
    tracing::info!("Hub stopping.");
    let drain = async {
        if !inbound.is_finished() {
            // The bus has stopped, so the inbox ends once it has committed what it holds.
            if let Err(e) = (&mut inbound)
                .await
                .map_err(HubError::from)
                .and_then(|r| r.map_err(HubError::from))
            {
                result = Err(e);
            }
        }
        let _ = client.try_disconnect();
        stop_delivery.cancel();
        tracker.wait().await;
    };
    if tokio::time::timeout(cfg.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?cfg.shutdown_grace, "Shutdown grace period expired; undelivered notifications stay in the outbox.");
    }
    let i = inbox.clone();
    tokio::task::spawn_blocking(move || i.flush()).await??;
    let _ = std::fs::remove_file(&cfg.status_socket);
    tracing::info!("Hub stopped.");
    result
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
