//! Who may read what a daemon keeps. Its state directory is its user's alone (0700) and every
//! file it creates is 0600 (umask 077): the queue and the inbox hold who logged in where. A key,
//! password or token file that other users can read is warned about at start.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// What a daemon does before it opens its state: every file and directory the process creates
/// from now on is private to its user, and `state_dir` is created private (or made so).
///
/// # Errors
/// See [`private_dir`].
pub fn secure_state(state_dir: &Path) -> io::Result<()> {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    private_dir(state_dir)
}

/// Creates `dir` (and its parents) if needed, and makes it accessible to its owner only.
///
/// # Errors
/// When it cannot be created or its mode set (e.g. another user owns it).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `text` to a new `file`, readable and writable by its owner only; with `overwrite`,
/// an existing file is truncated and made so. A symbolic link is never followed: it could
/// point the secret at a file another user reads.
///
/// # Errors
/// When it cannot be written, exists (without `overwrite`), or is a symbolic link.
pub fn write_private(file: &Path, text: &str, overwrite: bool) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed());
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(file)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

/// Warns when `file`, which holds a secret, can be read by users other than its owner.
pub fn warn_if_exposed(file: &Path) {
    if let Ok(meta) = std::fs::metadata(file) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %file.display(),
                mode = format_args!("{mode:03o}"),
                "A secret file can be read by other users; chmod 600 it."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_creates_and_tightens() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/state");
        private_dir(&dir).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("tightened");
        assert_eq!(mode(&dir), 0o700);
    }
}
