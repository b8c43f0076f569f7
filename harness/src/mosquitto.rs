//! A real mosquitto broker on a loopback port, started and stopped by the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Pki, Proc, free_port, listening, pause, require, which};

/// mosquitto with TLS (server certificate from a [`Pki`]) or plain TCP, and a password file.
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
        Self::start_with(dir, pki, users, "")
    }

    /// [`Mosquitto::start`] with `extra` lines in its config (an `acl_file`, …).
    ///
    /// # Panics
    /// When it does not start.
    pub fn start_with(dir: &Path, pki: Option<&Pki>, users: &[(&str, &str)], extra: &str) -> Self {
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
            let port = free_port().expect("a free port");
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "user root\npersistence false\nlistener {port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {}\nmax_queued_messages 100000\n{extra}\n",
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
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
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
