//! A small filesystem a test can fill: a tmpfs mounted over a directory (root only), and
//! unmounted when dropped, even when the test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path` (created if missing).
    ///
    /// # Panics
    /// When it cannot be mounted (not root, say: check with [`crate::is_root`] first).
    pub fn mount(path: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs at {}", path.display());
        Self {
            path: path.to_owned(),
        }
    }

    /// Writes a file named `name` until the filesystem is full; returns its path.
    ///
    /// # Panics
    /// When writing fails for another reason than space.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).expect("ballast");
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // The last partial chunk: byte by byte is too slow, halve until nothing fits.
        let mut size = chunk.len() / 2;
        while size > 0 {
            if file.write_all(&chunk[..size]).is_err() {
                size /= 2;
            }
        }
        path
    }

    /// Bytes free, as `statvfs` counts them.
    pub fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of a failed test may still hold a file in it.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
