//! Runs warren's processes and their real peers, for the test suites and the demo: finding the
//! built binaries, child processes that are killed even when a test fails, waiting for
//! readiness instead of sleeping, a hub and edges started from their configs, a CA made with
//! `hub pki`, a real mosquitto, a real SMTP server (aiosmtpd), an HTTP server standing in for
//! web APIs, a headless browser, a TCP link that a test can cut, a server that never
//! answers, a small filesystem to fill, and a wall clock to move. It depends on
//! neither `warren-edge` nor `warren-hub`: it runs their binaries and reads their status socket
//! as JSON, so both crates' own tests can use it.

pub mod browser;
pub mod clock;
pub mod daemon;
pub mod http;
pub mod mosquitto;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod program;
pub mod proxy;
pub mod smtp;
pub mod tmpfs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use browser::Browser;
pub use clock::FakeClock;
pub use daemon::{Edge, Hub};
pub use mosquitto::Mosquitto;
pub use pki::Pki;
pub use postgres::Postgres;
pub use process::Proc;
pub use program::{Program, bin};
pub use proxy::Silent;
pub use smtp::SmtpServer;
pub use tmpfs::Tmpfs;

/// Set by CI (`.ci/run`): a test that lacks root or a component fails instead of skipping.
pub const REQUIRE_ALL_VAR: &str = "WARREN_REQUIRE_ALL";

/// How long one step of a test (a daemon coming up, a notification arriving) may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// The interval between two polls of a readiness check.
const POLL: Duration = Duration::from_millis(20);

/// Whether a test that needs `what` can run. When it cannot, it says so and the test returns
/// early, unless [`REQUIRE_ALL_VAR`] is set: then it panics, so CI cannot pass by skipping.
///
/// # Panics
/// When `available` is false and [`REQUIRE_ALL_VAR`] is set.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var_os(REQUIRE_ALL_VAR).is_some() {
        panic!("this test needs {what}, and {REQUIRE_ALL_VAR} forbids skipping it");
    }
    eprintln!("SKIPPED: this test needs {what}");
    false
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The path of an executable on `PATH` (or under `/usr/sbin`), if any.
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// A Python tool from the repository's virtual environment (`.venv/bin`, which `.ci/run`
/// creates), or else from `PATH`.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name);
    if venv.is_file() {
        return Some(venv);
    }
    which(name)
}

/// Polls `check` until it returns `Some`, or gives up after `timeout` with an error naming
/// `what`.
///
/// # Errors
/// On timeout.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        pause();
    }
}

/// [`wait_until`] for tests: a timeout fails the test.
///
/// # Panics
/// On timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_until(what, timeout, check).unwrap_or_else(|e| panic!("{e}"))
}

/// Sleeps one poll interval.
fn pause() {
    std::thread::sleep(POLL);
}

/// A free TCP port on loopback, for programs that cannot be told to bind port 0 and report it
/// (mosquitto, the hub's `listen_local`, sshd). Another process could take it before the
/// program binds it; [`Mosquitto`] retries on a new port when that happens, the others would
/// fail to start and say so.
///
/// # Errors
/// When no socket can be bound.
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}
