//! The warren hub: embedded MQTT broker (or a client of an external one), durable inbox,
//! dedup, routing, and notifiers with retries (docs/DESIGN.md).
//!
//! [`config`] reads the TOML, [`resources`] every file it names; [`run`] wires the tasks: the
//! [`bus`] client feeds the [`inbound`] task, which commits new events and their deliveries to
//! the [`inbox`] before acking them; one [`delivery`] task per notifier drains its outbox; the
//! status socket answers `hub status`, and the [`web`] listener serves the page and metrics.

pub mod acl;
pub mod broker;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod delivery;
pub mod front;
pub mod inbound;
pub mod inbox;
pub mod known;
pub mod metrics;
mod mqtt31;
pub mod mqttwarn;
pub mod notify;
pub mod passwd;
pub mod pki;
pub mod presence;
pub mod recent;
pub mod resources;
pub mod router;
pub mod session;
pub mod stats;
pub mod status;
pub mod store;
pub mod template;
#[cfg(test)]
mod testing;
pub mod throttle;
pub mod trace;
pub mod trust;
pub mod web;

use std::sync::Arc;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HubConfig;
use crate::inbox::Inbox;
use crate::resources::{BrokerSetup, Resources};
use crate::stats::Stats;

/// Messages from the broker waiting for the inbox.
const INBOUND_CHANNEL: usize = 4096;
/// How often an inbox on a full disk looks for room again.
const DISK_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the hub could not start, or stopped with an error.
#[derive(Debug, Error)]
pub enum HubError {
    /// The inbox failed.
    #[error(transparent)]
    Inbox(#[from] inbox::InboxError),
    /// The broker or its TLS front could not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
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

/// Runs the hub until `shutdown`, then drains: stop reading the broker, let the inbox commit
/// and ack what it holds, let the notifiers finish their current attempt within the grace
/// period, flush.
///
/// The tasks: the broker (embedded: rumqttd and its TLS [`front`]; or an external one), the
/// [`bus`] client feeding the [`inbound`] task, which commits to the [`inbox`] and acks; one
/// [`delivery`] task per notifier; the inbox's pruner; the status socket and the web page.
///
/// # Errors
/// When the inbox, the broker or a socket cannot be set up, or the inbox fails.
pub async fn run(
    cfg: HubConfig,
    res: Resources,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let cfg = Arc::new(cfg);
    let inbox = match &res.store {
        Some(options) => {
            let Some(store) = connect_store(options, &shutdown).await? else {
                return Ok(());
            };
            tracing::info!(name = %store.name(), "Using the shared store.");
            tokio::task::spawn_blocking(move || Inbox::shared(store)).await??
        }
        None => {
            let (dir, reserve) = (cfg.inbox_dir.clone(), cfg.reserve_bytes);
            tokio::task::spawn_blocking(move || Inbox::open(&dir, reserve)).await??
        }
    };
    let inbox = Arc::new(inbox);
    let stats = Arc::new(Stats::default());
    let tracker = TaskTracker::new();

    let (bus_opts, mode, listen) = match res.broker {
        BrokerSetup::Embedded(plan) => {
            let started = broker::start(plan, stats.clone()).await?;
            let listen = started
                .front
                .as_ref()
                .and_then(|f| f.tls.as_ref())
                .and_then(|(l, _, _)| l.local_addr().ok());
            if let Some(front) = started.front {
                let connected = stats.bus_connected.subscribe();
                tracker.spawn(front.run(connected, shutdown.child_token()));
            }
            (started.bus, "embedded", listen.map(|a| a.to_string()))
        }
        BrokerSetup::External(opts) => (opts, "external", None),
    };

    let names = res.notifiers.iter().map(|(n, _)| n.to_string()).collect();
    let stop_delivery = CancellationToken::new();
    let tasks = res
        .notifiers
        .into_iter()
        .map(|(name, notifier)| delivery::Task {
            fallback: cfg.notifiers.get(&name).and_then(|s| s.fallback.clone()),
            name,
            notifier,
        })
        .collect();
    let wakes = delivery::spawn(
        &tracker,
        tasks,
        &inbox,
        &cfg.delivery,
        &stats,
        &stop_delivery,
    );

    let (client, eventloop) = bus::connect(&bus_opts);
    let _ = res.hub_bus.set(client.clone());
    let (tx, rx) = mpsc::channel(INBOUND_CHANNEL);
    tracker.spawn(bus::drive(
        eventloop,
        client.clone(),
        bus_opts,
        tx,
        stats.clone(),
        shutdown.child_token(),
    ));
    let presence = {
        let (inbox, presence) = (inbox.clone(), cfg.presence.clone());
        tokio::task::spawn_blocking(move || {
            presence::Tracker::load(&inbox, &presence, clock::steady_ms())
        })
        .await??
    };
    let router = router::Router::new(
        cfg.routes.clone(),
        cfg.known_sources.clone(),
        inbox.salt().to_owned(),
        stats.clone(),
    );
    let pipeline = inbound::Pipeline {
        inbox: inbox.clone(),
        router: Arc::new(router),
        presence: Arc::new(std::sync::Mutex::new(presence)),
        client: client.clone(),
        stats: stats.clone(),
        wakes: wakes.clone(),
        cfg: cfg.clone(),
    };
    let mut inbound = tracker.spawn(inbound::run(rx, pipeline));
    tracker.spawn({
        let (stats, stop) = (stats.clone(), shutdown.child_token());
        async move { stats.pauses.watch(stop).await }
    });
    tracker.spawn({
        let wakes = wakes.clone();
        warren_daemon::database::watch(
            inbox.clone(),
            Inbox::database,
            DISK_CHECK,
            // A commit the full disk seemed to refuse may have landed: look again.
            move |_| delivery::wake_all(&wakes),
            shutdown.child_token(),
        )
    });
    tracker.spawn({
        let (stats, stop) = (stats.clone(), shutdown.child_token());
        warren_daemon::memory::trim_when_idle(move || stats.work(), stop)
    });
    tracker.spawn(inbox.clone().keep_in_touch(shutdown.child_token()));
    tracker.spawn(inbox.clone().flush_behind(shutdown.child_token()));
    tracker.spawn(
        inbox.clone().prune_expired(
            cfg.dedup.window,
            cfg.delivery.keep_dead_letters,
            cfg.known_sources.clone(),
            cfg.web
                .as_ref()
                .map_or(recent::Retention::NONE, |w| w.retention),
            shutdown.child_token(),
        ),
    );

    let web = match res.web {
        Some(guard) => {
            let addr = guard.web.listen;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| HubError::Bind {
                    what: "web listener",
                    addr: addr.to_string(),
                    source,
                })?;
            let url = format!(
                "{}://{}/",
                if guard.tls.is_some() { "https" } else { "http" },
                listener.local_addr().unwrap_or(addr)
            );
            let what = if guard.web.page {
                "the page, /api/v1 and /metrics"
            } else {
                "/metrics"
            };
            tracing::info!(%url, "Serving {what}.");
            // The status names the page, not a listener that has none.
            let page = guard.web.page.then_some(url);
            Some((listener, guard, page))
        }
        None => None,
    };
    let source = Arc::new(status::Source {
        mode,
        listen: listen.into_iter().collect(),
        web: web.as_ref().and_then(|(_, _, page)| page.clone()),
        stats: stats.clone(),
        inbox: inbox.clone(),
        notifiers: names,
        certificate: res.certificate,
        figures: std::sync::Mutex::new(None),
    });
    tracker.spawn(source.clone().keep_figures(shutdown.child_token()));
    if let Some((listener, guard, _)) = web {
        tracker.spawn(web::serve(
            listener,
            guard,
            source.clone(),
            shutdown.child_token(),
        ));
    }
    let status =
        warren_daemon::bind_status(&cfg.status_socket).map_err(|source| HubError::Bind {
            what: "status socket",
            addr: cfg.status_socket.display().to_string(),
            source,
        })?;
    let control = control::Control {
        source,
        inbox: inbox.clone(),
        wakes: wakes.clone(),
        dedup_window: cfg.dedup.window,
    };
    tracker.spawn(warren_daemon::control::serve(
        status,
        move |r| control.answer(&r),
        shutdown.child_token(),
    ));
    tracker.close();
    tracing::info!(mode, status = %cfg.status_socket.display(), "Hub ready.");
    warren_daemon::service::ready(&format!("{mode} broker"));

    // Every producer stops at `shutdown`; the inbox ends when the bus has; the notifiers are
    // stopped last, so what the inbox committed in between is still attempted.
    let mut result = tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        r = &mut inbound => {
            shutdown.cancel();
            r.map_err(HubError::from).and_then(|r| r.map_err(HubError::from))
        }
    };
    tracing::info!("Hub stopping.");
    warren_daemon::service::stopping();
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

/// Connects to the shared store, waiting while it cannot be reached (a hub started before its
/// database, or during its failover); `None` when `shutdown` comes first.
async fn connect_store(
    options: &store::postgres::Options,
    shutdown: &CancellationToken,
) -> Result<Option<store::postgres::Store>, HubError> {
    let mut backoff = warren_daemon::retry::RetrySchedule::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(30),
    );
    loop {
        match store::postgres::Store::connect(options).await {
            Ok(store) => return Ok(Some(store)),
            Err(error) if error.is_unreachable() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "Cannot reach the shared store yet.");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(None),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Milliseconds since the Unix epoch, by the wall clock ([`clock`] says when to use which).
pub fn now_ms() -> u64 {
    clock::wall_ms()
}
