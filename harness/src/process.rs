//! Child processes that never outlive the test (or demo) that started them.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process, killed and reaped when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `cmd`.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn try_spawn(name: &str, cmd: &mut Command) -> Result<Self, String> {
        let child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// [`Proc::try_spawn`] for tests.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        Self::try_spawn(name, cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The process id (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name or number (through `kill(1)`: the harness stays libc-free).
    ///
    /// # Panics
    /// When `kill` fails.
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

    /// SIGTERM, then up to `grace` for it to exit by itself (a daemon drains), then SIGKILL.
    /// Returns the exit code of a process that exited by itself.
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let code = crate::wait_until(&self.name, grace, || {
            child.try_wait().ok().flatten().map(|s| s.code())
        });
        match code {
            Ok(code) => {
                self.child = None;
                code
            }
            Err(_) => {
                eprintln!("{} did not stop within {grace:?}; killing it", self.name);
                self.kill9();
                None
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its exit code.
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
            crate::pause();
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
