//! sled as a [`Database`](super::Database) engine: the edge's queue.

use std::fs::File;
use std::path::Path;

use super::{DbError, Engine};
use crate::reserve::is_storage_full;

impl Engine for sled::Db {
    const FILE: &'static str = "db";

    /// sled's flush (`sync_file_range`, which persists neither metadata nor the drive's cache),
    /// then fsync of its file.
    fn sync(&self, file: &File) -> Result<(), DbError> {
        self.flush()?;
        file.sync_all()?;
        Ok(())
    }

    fn tidy(dir: &Path) {
        remove_partial_snapshots(dir);
    }
}

/// Whether sled failed for want of space.
pub fn storage_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(e) if is_storage_full(e))
}

/// Removes the snapshots sled began and never finished. sled writes `snap.<lsn>.generating`,
/// fsyncs it and renames it to `snap.<lsn>`; but on opening it takes the last `snap.*` name
/// in sort order, which is such a leftover when a write failed (a full disk) or was cut short
/// (a crash), and then refuses the whole database as corrupt.
fn remove_partial_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::warn!(file = %name, "Removed an unfinished database snapshot."),
                Err(error) => {
                    tracing::warn!(file = %name, %error, "Could not remove an unfinished database snapshot.")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Database;
    use super::*;

    fn open(dir: &Path) -> Result<sled::Db, DbError> {
        Ok(sled::Config::new().path(dir).open()?)
    }

    #[test]
    fn an_unfinished_snapshot_does_not_make_the_database_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = Database::open(&path, 0, open).unwrap();
            db.get().unwrap().db.insert(b"k", b"v").unwrap();
            db.get().unwrap().sync().unwrap();
        }
        // What a snapshot cut short by a full disk leaves behind.
        std::fs::write(path.join("snap.00000000000FFFFF.generating"), b"\x01\x02").unwrap();
        assert!(
            matches!(
                open(&path),
                Err(DbError::Sled(sled::Error::Corruption { .. }))
            ),
            "sled alone refuses it"
        );
        let db = Database::open(&path, 1 << 16, open).unwrap();
        assert_eq!(db.get().unwrap().db.get(b"k").unwrap().unwrap(), b"v");
        assert!(db.full_since().is_none());
        assert_eq!(
            std::fs::metadata(path.join("reserve")).unwrap().len(),
            1 << 16
        );
    }
}
