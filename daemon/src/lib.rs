//! What every warren daemon shares: logging set-up, running until SIGTERM/SIGINT, config
//! file errors, and the status socket through which `edge status` and `hub status` ask the
//! running daemon (its sled database is locked, so the CLI never opens it).

pub mod cli;
pub mod config;
pub mod files;
pub mod nagios;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod refusals;
mod secret;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;

pub use secret::Secret;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// How long a status client waits for the daemon, and the daemon for a slow client.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Logs to stderr through tracing, filtered by `RUST_LOG` (default `info`); colours only on a
/// terminal, so journald gets plain text. rumqttd is silenced by default: it logs every
/// ordinary client disconnect at error level (`RUST_LOG=info,rumqttd=info` brings it back).
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Runs `daemon` on a two-thread runtime until it returns; SIGTERM or SIGINT cancels the token
/// it is given, and it is expected to drain and return. Exit code 0 on success, 1 (logged)
/// on failure.
pub fn run_until_signal<F, Fut, E>(name: &str, daemon: F) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("{name}: starting the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
        let r = daemon(shutdown).await;
        signals.abort();
        r
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "Stopped on an error.");
            eprintln!("{name}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGTERM (systemd, rc.d) or SIGINT (a terminal).
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received."),
        _ = int.recv() => tracing::info!("SIGINT received."),
    }
    shutdown.cancel();
}

/// Binds the status socket, replacing a stale one (the database lock already keeps a second
/// daemon from running on the same state, so a socket file left behind is a dead daemon's).
///
/// # Errors
/// When the directory cannot be created or the socket bound.
pub fn bind_status(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Answers each connection with one JSON document from `snapshot` (run on the blocking pool,
/// as it may read the database), until `shutdown`.
pub async fn serve_status<T, F>(listener: UnixListener, snapshot: F, shutdown: CancellationToken)
where
    T: Serialize + Send + 'static,
    F: Fn() -> T + Send + Sync + Clone + 'static,
{
    loop {
        let (mut stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning (and flooding the log).
                    tracing::warn!(%error, "Status socket accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let body = match tokio::task::spawn_blocking(snapshot.clone()).await {
            Ok(s) => serde_json::to_vec(&s).unwrap_or_default(),
            Err(error) => {
                tracing::error!(%error, "Status snapshot failed.");
                continue;
            }
        };
        // A client that does not read must not stall the next one.
        let _ = tokio::time::timeout(STATUS_TIMEOUT, stream.write_all(&body)).await;
    }
}

/// Asks the daemon on `path` for its status document.
///
/// # Errors
/// A message saying what went wrong: nothing listening, a timeout, a bad answer.
pub fn query_status<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, String> {
    let mut stream = UnixStream::connect(path)
        .map_err(|e| format!("no {what} answers on {}: {e}", path.display()))?;
    stream
        .set_read_timeout(Some(STATUS_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    stream
        .read_to_end(&mut body)
        .map_err(|e| format!("reading from {}: {e}", path.display()))?;
    serde_json::from_slice(&body).map_err(|e| format!("bad answer from {}: {e}", path.display()))
}

/// The retry schedule every warren loop uses (reconnects, deliveries): exponential from
/// `initial`, jittered by ±50 %, capped at `max`, never giving up.
pub fn retry_backoff(initial: Duration, max: Duration) -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        initial_interval: initial,
        max_interval: max,
        max_elapsed_time: None,
        ..backoff::ExponentialBackoff::default()
    }
}
