//! An inbox an earlier build kept in sled, carried over to redb once, at the first start.
//!
//! Every record is copied into a redb database made beside it under another name and made
//! durable; a marker then says the copy is complete, the copy is renamed into place, and
//! sled's files go (`conf` last). A crash before the rename starts the copy again; one after
//! it only leaves sled's files to remove. sled files found beside a redb inbox without the
//! marker were written by an older build after the carry-over (a downgrade): they are moved
//! aside, not deleted, and not carried over again.

use std::path::Path;

use warren_daemon::database::redb::Redb;
use warren_daemon::database::{DbError, Engine};

use crate::inbox::InboxError;

/// Where the copy is made.
const COPY: &str = "carry-over";
/// Says that the redb inbox holds everything the sled files beside it hold.
const CARRIED: &str = "carried-over-from-sled";
/// Records per redb write while copying.
const CHUNK: usize = 10_000;

/// Whether `name`, in an inbox directory, is one of sled's files or directories.
fn is_sled(name: &str) -> bool {
    ["conf", "db", "blobs"].contains(&name) || name.starts_with("snap.")
}

/// Carries a sled inbox in `dir` over to redb, if there is one.
///
/// # Errors
/// When sled cannot read it, or redb cannot take it (a full disk): the hub does not start,
/// and sled's files are left as they were.
pub fn carry_over(dir: &Path) -> Result<(), InboxError> {
    if !dir.exists() {
        return Ok(());
    }
    let sled = sled_files(dir)?;
    let carried = dir.join(CARRIED);
    if sled.is_empty() {
        remove_if_there(&carried)?;
        return Ok(());
    }
    if !dir.join(Redb::FILE).exists() {
        remove_if_there(&carried)?;
        if let Err(error) = copy(dir) {
            // A partial copy takes room on what may be a full disk.
            let _ = std::fs::remove_dir_all(dir.join(COPY));
            return Err(error);
        }
    } else if !carried.exists() {
        let aside = dir.join(format!("sled-aside-{}", crate::now_ms()));
        std::fs::create_dir(&aside)?;
        for name in &sled {
            std::fs::rename(dir.join(name), aside.join(name))?;
        }
        tracing::warn!(aside = %aside.display(), "Found sled files beside the redb inbox, written by an older build after the carry-over: moved aside, not carried over (what they held is not delivered).");
        return Ok(());
    }
    let copy = dir.join(COPY);
    if copy.exists() {
        std::fs::remove_dir_all(&copy)?;
    }
    // Listed again: sled writes a snapshot as the copy closes it. `conf` last: while it is
    // there, the next start finishes this.
    let mut sled = sled_files(dir)?;
    sled.sort_by_key(|name| name == "conf");
    for name in &sled {
        let path = dir.join(name);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::remove_file(&carried)?;
    Ok(())
}

fn sled_files(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| is_sled(name))
        .collect())
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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
    std::fs::File::create(dir.join(CARRIED))?.sync_all()?;
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

    /// A redb inbox holding `k` = `redb` beside a sled one holding `k` = `sled`.
    fn both(path: &Path) {
        sled_inbox(path, &[(b"k".to_vec(), b"sled".to_vec())]);
        let db = Redb::open(path, 1 << 20).unwrap();
        db.write([(b"k".to_vec(), Some(b"redb".to_vec()))]).unwrap();
        db.sync().unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_carry_over_done_before_a_crash_only_removes_sled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        both(&path);
        // What a crash between the rename and the removal leaves.
        std::fs::write(path.join(CARRIED), b"").unwrap();
        std::fs::create_dir(path.join(COPY)).unwrap();
        carry_over(&path).unwrap();
        assert_eq!(names(&path), [Redb::FILE]);
        let db = Redb::open(&path, 1 << 20).unwrap();
        assert_eq!(records(&db), [(b"k".to_vec(), b"redb".to_vec())]);
    }

    #[test]
    fn sled_files_an_older_build_wrote_after_the_carry_over_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        both(&path);
        carry_over(&path).unwrap();
        let left = names(&path);
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left[0].starts_with("sled-aside-"), "{left:?}");
        assert_eq!(left[1], Redb::FILE);
        let aside = sled::open(path.join(&left[0])).unwrap();
        assert_eq!(
            aside.get(b"k").unwrap().unwrap(),
            b"sled",
            "kept, not deleted"
        );
        let db = Redb::open(&path, 1 << 20).unwrap();
        assert_eq!(
            records(&db),
            [(b"k".to_vec(), b"redb".to_vec())],
            "not carried over"
        );
    }
}
