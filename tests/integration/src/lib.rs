//! The test harness every warren crate's process tests share: finding the built binaries,
//! child processes that are killed even when a test fails, waiting for readiness instead of
//! sleeping, and the rule for tests that need root or an installed component.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Set by CI (`.ci/run`): a test that lacks root or a component fails instead of skipping.
pub const REQUIRE_ALL_VAR: &str = "WARREN_REQUIRE_ALL";

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

/// A workspace binary (`hare`, `edge`, `hub`) built by the same `cargo test` run.
///
/// `cargo test --workspace` builds every package's binaries before it runs any test, and puts
/// them next to the `deps/` folder that holds this test executable.
///
/// # Panics
/// When the binary is not there (run `cargo build --workspace --bins` first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo test --workspace` or `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// A child process that is killed and reaped when dropped, so a failing test leaves nothing
/// running.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    /// Spawns `cmd`.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by number (`libc`-free: through `kill(1)`).
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{sig} {} failed", self.name);
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself, up to `timeout`; returns its exit code.
    ///
    /// # Panics
    /// When it does not exit in time (it is then killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("process already reaped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            pause();
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout` with `what`.
///
/// # Panics
/// On timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        pause();
    }
}

/// The interval between two polls of a readiness check.
fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}
