//! A throw-away PostgreSQL cluster on a loopback port: `initdb` and `pg_ctl` from Debian's
//! packages in a temporary folder, run as the unprivileged `postgres` user when the test runs
//! as root (PostgreSQL refuses to run as root), stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{free_port, is_root, require};

/// The cluster.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Whether PostgreSQL's server programs are installed; [`require`]s them.
    pub fn available() -> bool {
        require(
            "PostgreSQL's initdb and pg_ctl (Debian package postgresql)",
            bin_dir().is_some(),
        )
    }

    /// Creates a cluster and starts it.
    ///
    /// # Panics
    /// When it cannot be created or does not start.
    pub fn start() -> Self {
        let bin = bin_dir().expect("PostgreSQL's programs");
        let dir = tempfile::tempdir().expect("a folder for the cluster");
        let data = dir.path().join("data");
        if is_root() {
            // Its files must be the postgres user's, and so must the way down to them.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(status.success(), "chown of the cluster's folder failed");
        }
        let out = as_postgres(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=warren",
                "--no-sync",
                "--encoding=UTF8",
            ])
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port().expect("a free port");
        let pg = Self {
            bin,
            data,
            port,
            _dir: dir,
        };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
             -c max_connections=200",
            pg.data.display()
        );
        let out = as_postgres(&pg.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&pg.data)
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(pg.data.join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .output()
            .expect("running pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(pg.data.join("log")).unwrap_or_default()
        );
        pg
    }

    /// The connection string of its `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=warren dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` with psql; returns what it printed (unaligned, tuples only).
    ///
    /// # Panics
    /// When psql fails.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `program`, run as the `postgres` user when this is root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Debian keeps the server's programs by major version, out of PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop()
}
