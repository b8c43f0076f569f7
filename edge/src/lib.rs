//! The warren edge: UDP ingest → durable sled queue → MQTT over TLS to the hub, deleting an
//! event only when the hub acknowledges it (docs/DESIGN.md).
//!
//! [`run`] wires the tasks: one ingest task per UDP socket feeds the group committer
//! ([`commit`]), which makes events durable in the [`queue`] and wakes the [`forward`]er; the
//! [`status`] socket answers `edge status`.

pub mod cli;
pub mod commit;
pub mod config;
pub mod control;
pub mod forward;
pub mod history;
pub mod ingest;
pub mod queue;
pub mod stats;
pub mod status;

use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_proto::sign::Verifier;

use crate::config::{EdgeConfig, Secrets};
use crate::ingest::Ingest;
use crate::queue::{Limits, Queue};
use crate::stats::Stats;

/// Datagrams decoded but not yet committed, at most; beyond it the kernel buffer holds them.
const COMMIT_CHANNEL: usize = 16 * 1024;
/// How often a queue refusing events for a full disk looks for room again.
const DISK_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the edge stopped with an error.
#[derive(Debug, Error)]
pub enum EdgeError {
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// A socket could not be bound.
    #[error("{what} {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The MQTT client failed for good.
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// A task panicked.
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the edge until `shutdown` is cancelled, then drains: ingest stops, the committer makes
/// what it holds durable, the forwarder disconnects.
///
/// # Errors
/// When the queue cannot be opened, a socket cannot be bound, or a task fails.
pub async fn run(
    cfg: EdgeConfig,
    secrets: Secrets,
    shutdown: CancellationToken,
) -> Result<(), EdgeError> {
    // rumqttc's TLS needs a process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = Arc::new(cfg);
    let cert_not_after = secrets.cert_not_after;
    let dir = cfg.queue_dir.clone();
    let limits = Limits {
        max_bytes: cfg.max_bytes,
        when_full: cfg.when_full,
        reserve_bytes: cfg.reserve_bytes,
    };
    let (queue, report) = tokio::task::spawn_blocking(move || Queue::open(&dir, limits)).await??;
    if let Some(aside) = &report.moved_aside {
        tracing::error!(path = %aside.display(), "Queue database was unreadable; moved it aside and started a new one.");
    }
    if report.corrupt_removed > 0 {
        tracing::error!(
            count = report.corrupt_removed,
            "Removed unreadable queue entries."
        );
    }
    let queue = Arc::new(queue);
    let stats = Arc::new(Stats::default());
    tracing::info!(edge = %cfg.edge_id, site = %cfg.site, queued = queue.len(), "Edge starting.");

    let mut sockets = Vec::new();
    for addr in &cfg.listen {
        let sock =
            ingest::bind(*addr, cfg.recv_buffer_bytes).map_err(|source| EdgeError::Bind {
                what: "UDP",
                addr: addr.to_string(),
                source,
            })?;
        sockets.push(sock);
    }
    let listen: Vec<String> = sockets
        .iter()
        .filter_map(|s| s.local_addr().ok().map(|a| a.to_string()))
        .collect();
    let status_listener =
        warren_daemon::bind_status(&cfg.status_socket).map_err(|source| EdgeError::Bind {
            what: "status socket",
            addr: cfg.status_socket.display().to_string(),
            source,
        })?;

    let tracker = TaskTracker::new();
    let wake = Arc::new(Notify::new());
    let ingest = Arc::new(Ingest {
        verifier: Mutex::new(Verifier::new(
            secrets.keys.clone(),
            cfg.accept_unsigned,
            cfg.max_skew.as_secs(),
        )),
        allow: cfg.allow.clone(),
        site: cfg.site.clone(),
        edge_id: cfg.edge_id.clone(),
        stats: stats.clone(),
        queue: queue.clone(),
    });
    let (tx, rx) = mpsc::channel(COMMIT_CHANNEL);
    for sock in sockets {
        tracker.spawn(ingest::run(
            sock,
            ingest.clone(),
            tx.clone(),
            shutdown.child_token(),
        ));
    }
    drop(tx);
    let committer = tracker.spawn(commit::run(queue.clone(), rx, stats.clone(), wake.clone()));
    tracker.spawn({
        let (stats, stop) = (stats.clone(), shutdown.child_token());
        async move { stats.pauses.watch(stop).await }
    });
    tracker.spawn({
        let (stats, stop) = (stats.clone(), shutdown.child_token());
        warren_daemon::memory::trim_when_idle(move || stats.work(), stop)
    });
    let announce = Arc::new(Notify::new());
    tracker.spawn({
        let announce = announce.clone();
        // The hub hears at once that the disk filled, or has room again.
        warren_daemon::database::watch(
            queue.clone(),
            |q| Some(q.database()),
            DISK_CHECK,
            move |_| announce.notify_one(),
            shutdown.child_token(),
        )
    });
    let forward_stop = CancellationToken::new();
    let forwarder = tracker.spawn({
        let (cfg, queue, stats, stop) = (
            cfg.clone(),
            queue.clone(),
            stats.clone(),
            forward_stop.clone(),
        );
        let wake = forward::Wake {
            queued: wake.clone(),
            announce,
        };
        async move { forward::run(cfg, &secrets, queue, stats, wake, stop).await }
    });
    let source = Arc::new(status::Source {
        edge_id: cfg.edge_id.clone(),
        site: cfg.site.clone(),
        listen: listen.clone(),
        queue: queue.clone(),
        stats: stats.clone(),
        max_bytes: cfg.max_bytes,
        cert_not_after,
    });
    tracker.spawn(warren_daemon::control::serve(
        status_listener,
        move |r| control::answer(&source, &r),
        shutdown.child_token(),
    ));
    tracker.close();
    tracing::info!(listen = ?listen, status = %cfg.status_socket.display(), "Edge ready.");
    warren_daemon::service::ready(&format!("accepting on {}", listen.join(", ")));

    // A committer or forwarder that fails takes the edge down: it can no longer keep its promise.
    let mut committer = committer;
    let mut forwarder = forwarder;
    let mut result = tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        r = &mut committer => { shutdown.cancel(); flatten(r) }
        r = &mut forwarder => { shutdown.cancel(); flatten(r) }
    };
    tracing::info!("Edge stopping.");
    warren_daemon::service::stopping();
    let drain = async {
        // Ingest has stopped, so the committer ends once it has flushed what it holds.
        if !committer.is_finished() {
            let r = flatten((&mut committer).await);
            if result.is_ok() {
                result = r;
            }
        }
        forward_stop.cancel();
        tracker.wait().await;
    };
    if tokio::time::timeout(cfg.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?cfg.shutdown_grace, "Shutdown grace period expired.");
    }
    let q = queue.clone();
    tokio::task::spawn_blocking(move || q.flush()).await??;
    let _ = std::fs::remove_file(&cfg.status_socket);
    tracing::info!(queued = queue.len(), "Edge stopped.");
    result
}

fn flatten(r: Result<Result<(), EdgeError>, tokio::task::JoinError>) -> Result<(), EdgeError> {
    r.map_err(EdgeError::from).and_then(|r| r)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    warren_daemon::wall_ms()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX)
}
