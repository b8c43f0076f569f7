//! Which executable plays `hub`, `edge` or `hare`: the workspace's own binaries in tests, or
//! one multi-call binary (the demo's `warren-demo --role hub …`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to run one of warren's programs.
#[derive(Debug, Clone)]
pub struct Program {
    exe: PathBuf,
    role: Option<OsString>,
    log: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Program {
    /// The workspace binary `name`, built by the same `cargo test` run (see [`bin`]).
    ///
    /// # Panics
    /// When it is not built.
    pub fn built(name: &str) -> Self {
        Self {
            exe: bin(name),
            role: None,
            log: None,
            env: Vec::new(),
        }
    }

    /// `exe --role ROLE …`: a multi-call binary that is every program.
    pub fn role(exe: &Path, role: &str) -> Self {
        Self {
            exe: exe.to_owned(),
            role: Some(role.into()),
            log: None,
            env: Vec::new(),
        }
    }

    /// The same program, quiet: warnings and errors only (tests read their output on failure).
    #[must_use]
    pub fn quiet(mut self) -> Self {
        self.env
            .push(("RUST_LOG".into(), "warn,rumqttd=off".into()));
        self
    }

    /// The same program, with `key` set to `value` in its environment.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The same program, with its standard error appended to `file` (default: inherited).
    #[must_use]
    pub fn logging_to(mut self, file: PathBuf) -> Self {
        self.log = Some(file);
        self
    }

    /// A command that runs the program, with standard input closed.
    ///
    /// # Errors
    /// When the log file cannot be opened.
    pub fn command(&self) -> Result<Command, String> {
        let mut cmd = Command::new(&self.exe);
        if let Some(role) = &self.role {
            cmd.arg("--role").arg(role);
        }
        cmd.stdin(Stdio::null())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(log) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| format!("{}: {e}", log.display()))?;
            cmd.stderr(file);
        }
        Ok(cmd)
    }
}

/// A workspace binary (`hare`, `edge`, `hub`) built by the same `cargo test` run.
///
/// `cargo test --workspace` builds every package's binaries before it runs any test, and puts
/// them next to the `deps/` folder that holds the test executable.
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
