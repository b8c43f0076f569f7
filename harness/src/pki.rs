//! A CA, the hub's server certificate and edges' client certificates, made by `hub pki` as an
//! operator would make them.

use std::path::{Path, PathBuf};

use crate::Program;

/// The files of one `hub pki` directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory holding every file.
    pub dir: PathBuf,
    hub: Program,
}

impl Pki {
    /// `hub pki init` in `dir` with `hub` (loopback names only), unless `dir` already holds a CA.
    ///
    /// # Errors
    /// When `hub pki init` fails.
    pub fn init(hub: &Program, dir: &Path) -> Result<Self, String> {
        let pki = Self {
            dir: dir.to_owned(),
            hub: hub.clone(),
        };
        if !pki.ca().exists() {
            pki.run(&["init"])?;
        }
        Ok(pki)
    }

    /// [`Pki::init`] with the workspace's `hub`, for tests.
    ///
    /// # Panics
    /// When `hub pki init` fails.
    pub fn new(dir: &Path) -> Self {
        Self::init(&Program::built("hub"), dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The revocation list, `crl.pem`.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// `hub pki revoke NAME`.
    ///
    /// # Panics
    /// When it fails.
    pub fn revoke(&self, name: &str) {
        self.run(&["revoke", name])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The server certificate and key (`hub.pem`, `hub.key`).
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("hub.pem"), self.dir.join("hub.key"))
    }

    /// Issues (once) a client certificate with CN `name`; returns it and its key.
    ///
    /// # Errors
    /// When `hub pki issue` fails.
    pub fn try_client(&self, name: &str) -> Result<(PathBuf, PathBuf), String> {
        let cert = self.dir.join(format!("{name}.pem"));
        if !cert.exists() {
            self.run(&["issue", name])?;
        }
        Ok((cert, self.dir.join(format!("{name}.key"))))
    }

    /// [`Pki::try_client`] for tests.
    ///
    /// # Panics
    /// When `hub pki issue` fails.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        self.try_client(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .hub
            .command()?
            .args(["pki", args[0], "--dir"])
            .arg(&self.dir)
            .args(&args[1..])
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("running hub pki: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "hub pki {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}
