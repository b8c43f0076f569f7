//! An inbox an earlier build kept in sled, carried over to redb once, at the first start.
//!
//! Every record is copied into a redb database made beside it under another name, made
//! durable, and only then renamed into place; sled's files go after that. A crash before the
//! rename starts the copy again, one after it only leaves sled's files to remove.

use std::path::Path;

use warren_daemon::database::redb::Redb;
use warren_daemon::database::{DbError, Engine};

use crate::inbox::InboxError;

/// sled's files and directories in its directory (besides `snap.*`).
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];
/// Where the copy is made.
const COPY: &str = "carry-over";
/// Records per redb write while copying.
const CHUNK: usize = 10_000;

/// Carries a sled inbox in `dir` over to redb, if there is one.
///
/// # Errors
/// When sled cannot read it, or redb cannot take it (a full disk): the hub does not start,
/// and sled's files are left as they were.
pub fn carry_over(dir: &Path) -> Result<(), InboxError> {
    if !dir.join("conf").exists() {
        return Ok(());
    }
    if !dir.join(Redb::FILE).exists() {
        copy(dir)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if SLED_FILES.contains(&name.as_ref()) || name.starts_with("snap.") {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

fn copy(dir: &Path) -> Result<(), InboxError> {
    <sled::Db as Engine>::tidy(dir);
    let old = sled::Config::new()
        .path(dir)
        .open()
        .map_err(DbError::from)?;
    let copy = dir.join(COPY);
    if copy.exists() {
        std::fs::remove_dir_all(&copy)?;
    }
    let mut records = 0u64;
    {
        let new = Redb::open(&copy, 8 << 20)?;
        // Past every id sled gave, so a trace step numbered later sorts after the old ones.
        new.take_ids_below(old.generate_id().map_err(DbError::from)?);
        let mut chunk = Vec::with_capacity(CHUNK);
        for item in old.iter() {
            let (k, v) = item.map_err(DbError::from)?;
            chunk.push((k.to_vec(), Some(v.to_vec())));
            if chunk.len() == CHUNK {
                records += chunk.len() as u64;
                new.write(std::mem::take(&mut chunk))?;
            }
        }
        records += chunk.len() as u64;
        new.write(chunk)?;
        new.sync()?;
    }
    std::fs::rename(copy.join(Redb::FILE), dir.join(Redb::FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::remove_dir_all(&copy)?;
    tracing::info!(records, dir = %dir.display(), "Carried the inbox over from sled to redb.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableTable;

    use super::*;
    use crate::inbox::Inbox;

    fn records(db: &Redb) -> Vec<(Vec<u8>, Vec<u8>)> {
        let records = db.read().unwrap();
        let all = records.iter().unwrap();
        all.map(|r| {
            let (k, v) = r.unwrap();
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect()
    }

    fn sled_inbox(dir: &Path, pairs: &[(Vec<u8>, Vec<u8>)]) -> u64 {
        let db = sled::open(dir).unwrap();
        for (k, v) in pairs {
            db.insert(k, v.as_slice()).unwrap();
        }
        let id = db.generate_id().unwrap();
        db.flush().unwrap();
        id
    }

    #[test]
    fn every_record_and_id_is_carried_over_and_sled_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..25_000u32)
            .map(|i| {
                (
                    format!("o-{i:08}").into_bytes(),
                    vec![7; (i % 300) as usize],
                )
            })
            .collect();
        pairs.push((b"m:salt".to_vec(), vec![0xab; 16]));
        let last_id = sled_inbox(&path, &pairs);
        std::fs::write(path.join("reserve"), b"kept").unwrap();
        // A copy cut short by a crash is made again.
        std::fs::create_dir_all(path.join(COPY)).unwrap();
        std::fs::write(path.join(COPY).join(Redb::FILE), b"half").unwrap();

        let inbox = Inbox::open(&path, 0).unwrap();
        assert_eq!(
            inbox.salt(),
            "ab".repeat(16),
            "the installation's salt is kept"
        );
        drop(inbox);

        let mut left: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["reserve", Redb::FILE]);
        pairs.sort();
        let db = Redb::open(&path, 1 << 20).unwrap();
        assert_eq!(records(&db), pairs);
        assert!(db.next_id() > last_id, "ids go on past sled's");
    }

    #[test]
    fn a_carry_over_done_before_a_crash_only_removes_sled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        sled_inbox(&path, &[(b"k".to_vec(), b"sled".to_vec())]);
        // What a crash between the rename and the removal leaves.
        {
            let db = Redb::open(&path, 1 << 20).unwrap();
            db.write([(b"k".to_vec(), Some(b"redb".to_vec()))]).unwrap();
            db.sync().unwrap();
        }
        carry_over(&path).unwrap();
        assert!(!path.join("conf").exists() && !path.join("db").exists());
        let db = Redb::open(&path, 1 << 20).unwrap();
        assert_eq!(records(&db), [(b"k".to_vec(), b"redb".to_vec())]);
    }
}
