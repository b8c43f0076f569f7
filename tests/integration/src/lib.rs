//! The test harness every warren crate's process tests share: finding the built binaries,
//! child processes that are killed even when a test fails, waiting for readiness instead of
//! sleeping, and the rule for tests that need root or an installed component.

pub mod http;
pub mod proxy;
pub mod topology;

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

/// A free TCP port on loopback, for programs that cannot be told to bind port 0 and report it
/// (mosquitto). Another process could take it before the program binds it; callers that start
/// such a program retry on a new port when it fails to start.
///
/// # Panics
/// When no socket can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

/// A CA, a server certificate for loopback and client certificates, made with `hub pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory holding every file.
    pub dir: PathBuf,
}

impl Pki {
    /// Creates the CA and the hub's server certificate in `dir`.
    ///
    /// # Panics
    /// When generation fails.
    pub fn new(dir: &Path) -> Self {
        warren_hub::pki::init(dir, &[]).expect("pki init");
        Self {
            dir: dir.to_owned(),
        }
    }

    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate and key (`hub.pem`, `hub.key`).
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("hub.pem"), self.dir.join("hub.key"))
    }

    /// Issues (once) and returns a client certificate and key with CN `name`.
    ///
    /// # Panics
    /// When issuing fails.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        let cert = self.dir.join(format!("{name}.pem"));
        if !cert.exists() {
            warren_hub::pki::issue(&self.dir, name).expect("pki issue");
        }
        (cert, self.dir.join(format!("{name}.key")))
    }
}

/// A real mosquitto broker on a loopback port, with TLS (server certificate from [`Pki`]) and
/// a password file, started and stopped by the test.
#[derive(Debug)]
pub struct Mosquitto {
    proc: Option<Proc>,
    conf: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl Mosquitto {
    /// Whether mosquitto is installed; [`require`]s it.
    pub fn available() -> bool {
        require(
            "mosquitto and mosquitto_passwd (Debian packages mosquitto, mosquitto-clients)",
            which("mosquitto").is_some() && which("mosquitto_passwd").is_some(),
        )
    }

    /// Starts mosquitto in `dir` with TLS from `pki` (or plain TCP when `None`) and `users`.
    ///
    /// # Panics
    /// When it does not start.
    pub fn start(dir: &Path, pki: Option<&Pki>, users: &[(&str, &str)]) -> Self {
        let passwords = dir.join("mosquitto.passwd");
        std::fs::write(&passwords, "").expect("password file");
        for (user, password) in users {
            let status = Command::new(which("mosquitto_passwd").expect("mosquitto_passwd"))
                .args(["-b"])
                .arg(&passwords)
                .args([user, password])
                .status()
                .expect("running mosquitto_passwd");
            assert!(status.success(), "mosquitto_passwd failed");
        }
        let tls = pki.map_or(String::new(), |p| {
            let (cert, key) = p.server();
            format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                p.ca().display(),
                cert.display(),
                key.display()
            )
        });
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "user root\npersistence false\nlistener {port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {}\nmax_queued_messages 100000\n",
                    passwords.display()
                ),
            )
            .expect("mosquitto.conf");
            let mut m = Self {
                proc: None,
                conf,
                port,
            };
            if m.try_start() {
                return m;
            }
            last = Some(port);
        }
        panic!("mosquitto did not start (last port {last:?})");
    }

    fn try_start(&mut self) -> bool {
        let mut proc = Proc::spawn(
            "mosquitto",
            Command::new(which("mosquitto").expect("mosquitto"))
                .arg("-c")
                .arg(&self.conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if listening(self.port) {
                self.proc = Some(proc);
                return true;
            }
            if !proc.running() {
                return false;
            }
            pause();
        }
        false
    }

    /// Kills the broker (its in-memory messages are lost, as in a crash).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts it again on the same port.
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not restart on port {}",
                self.port
            );
        }
    }
}
