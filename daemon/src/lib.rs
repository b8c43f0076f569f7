//! What every warren daemon shares: logging set-up, running until SIGTERM/SIGINT, config
//! file errors, and the status socket through which `edge status` and `hub status` ask the
//! running daemon (its sled database is locked, so the CLI never opens it).

pub mod cli;
pub mod config;
pub mod control;
pub mod database;
pub mod fds;
pub mod files;
pub mod memory;
pub mod nagios;
pub mod pause;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod refusals;
pub mod reserve;
pub mod retry;
mod secret;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;

pub use control::{STATUS_TIMEOUT, bind_status, query_status};
pub use secret::Secret;

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This host's name up to its first dot: the default edge id, and what makes a client id
/// differ between hosts.
pub fn short_hostname() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    host.split('.').next().unwrap_or_default().to_owned()
}

use tokio_util::sync::CancellationToken;

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
/// it is given, and it is expected to drain and return. The open-file limit is raised to its
/// hard limit first ([`fds::raise_limit`]). Exit code 0 on success, 1 (logged) on
/// failure.
pub fn run_until_signal<F, Fut, E>(name: &str, daemon: F) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let files = fds::raise_limit();
    tracing::info!(?files, "Open-file limit raised to the hard limit.");
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
