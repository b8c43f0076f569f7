//! redb as a [`Database`](super::Database) engine: the hub's inbox.
//!
//! One table of byte keys. [`Redb::write`] commits a batch without an fsync, visible to every
//! read from then on; [`Engine::sync`] makes all of them durable at once, so one fsync serves
//! many batches. Ids only grow, across crashes too, as sled's `generate_id` did: the next one
//! is stored with every batch, so a batch that survives a crash also keeps its ids used.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::{Durability, ReadOnlyTable, ReadableTable, TableDefinition};

use super::{DbError, Engine};
use crate::reserve::is_storage_full;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";
/// Where a new database is made.
const NEW_FILE: &str = "store.redb.new";

/// The records, as of the last [`Redb::write`].
pub type Records = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A redb database of ordered byte keys.
#[derive(Debug)]
pub struct Redb {
    db: redb::Database,
    next_id: AtomicU64,
    /// Written since the last sync began.
    unsynced: AtomicBool,
}

impl Redb {
    /// Opens (or creates) the database in `dir`, keeping at most `cache` bytes of its pages in
    /// memory.
    ///
    /// # Errors
    /// When redb cannot open or create it.
    pub fn open(dir: &Path, cache: usize) -> Result<Self, DbError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::FILE);
        if !path.exists() {
            create(dir, &path)?;
        }
        let db = redb::Builder::new()
            .set_cache_size(cache)
            .create(path)
            .map_err(failed)?;
        Self::with(db)
    }

    /// Opens `db`, creating its tables first, so a read never finds them missing.
    fn with(db: redb::Database) -> Result<Self, DbError> {
        let tx = db.begin_write().map_err(failed)?;
        let next_id = {
            tx.open_table(RECORDS).map_err(failed)?;
            let meta = tx.open_table(META).map_err(failed)?;
            let next = meta.get(NEXT_ID).map_err(failed)?;
            next.map_or(0, |v| v.value())
        };
        tx.commit().map_err(failed)?;
        Ok(Self {
            db,
            next_id: AtomicU64::new(next_id),
            unsynced: AtomicBool::new(false),
        })
    }

    /// A number larger than any this database gave before, crash or not, provided what it
    /// numbers is written after it was taken.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Takes every id below `next` (records carried over from another store have them).
    pub fn take_ids_below(&self, next: u64) {
        self.next_id.fetch_max(next, Ordering::SeqCst);
    }

    /// Every record as of now.
    ///
    /// # Errors
    /// When redb fails.
    pub fn read(&self) -> Result<Records, DbError> {
        let tx = self.db.begin_read().map_err(failed)?;
        tx.open_table(RECORDS).map_err(failed)
    }

    /// Sets (`Some`) or removes (`None`) each key, in order, all at once: visible to reads
    /// when it returns, durable at the next [`Engine::sync`].
    ///
    /// # Errors
    /// When redb fails; then nothing was written.
    pub fn write(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin_write().map_err(failed)?;
        tx.set_durability(Durability::None);
        {
            let mut records = tx.open_table(RECORDS).map_err(failed)?;
            for (key, value) in ops {
                match value {
                    Some(v) => records.insert(key.as_slice(), v.as_slice()),
                    None => records.remove(key.as_slice()),
                }
                .map_err(failed)?;
            }
            let mut meta = tx.open_table(META).map_err(failed)?;
            meta.insert(NEXT_ID, self.next_id.load(Ordering::SeqCst))
                .map_err(failed)?;
        }
        self.unsynced.store(true, Ordering::SeqCst);
        tx.commit().map_err(failed)?;
        Ok(())
    }

    /// Whether something was written since the last sync began.
    pub fn unsynced(&self) -> bool {
        self.unsynced.load(Ordering::SeqCst)
    }

    /// A durable commit of nothing, which persists every write before it with one fsync.
    ///
    /// # Errors
    /// When redb fails.
    pub fn sync(&self) -> Result<(), DbError> {
        self.unsynced.store(false, Ordering::SeqCst);
        let committed = self
            .db
            .begin_write()
            .map_err(failed)
            .and_then(|tx| tx.commit().map_err(failed));
        if committed.is_err() {
            self.unsynced.store(true, Ordering::SeqCst);
        }
        committed
    }
}

impl Engine for Redb {
    const FILE: &'static str = "store.redb";

    fn sync(&self, _file: &File) -> Result<(), DbError> {
        Redb::sync(self)
    }
}

/// Creates an empty database at `path`, made under another name and renamed when it is
/// whole: redb writes its header last, and would refuse for good a file a crash or a full
/// disk cut short.
fn create(dir: &Path, path: &Path) -> Result<(), DbError> {
    let fresh = dir.join(NEW_FILE);
    match std::fs::remove_file(&fresh) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    drop(redb::Database::create(&fresh).map_err(failed)?);
    File::open(&fresh)?.sync_all()?;
    std::fs::rename(&fresh, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn failed(e: impl Into<redb::Error>) -> DbError {
    DbError::from(e.into())
}

/// Whether redb failed for want of space. (After one failed write redb answers every later
/// call with `PreviousIo` until it is opened again: [`super::StorageFull::is_stale`].)
pub fn storage_full(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(e) if is_storage_full(e))
}

#[cfg(test)]
mod tests {
    use super::super::{Database, StorageFull};
    use super::*;

    fn open(dir: &Path) -> Result<Redb, DbError> {
        Redb::open(dir, 1 << 20)
    }

    fn value(db: &Redb, key: &[u8]) -> Option<Vec<u8>> {
        let records = db.read().unwrap();
        records.get(key).unwrap().map(|v| v.value().to_vec())
    }

    #[test]
    fn a_write_is_read_at_once_and_kept_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let first = {
            let db = Database::open(&path, 1 << 16, open).unwrap();
            let o = db.get().unwrap();
            let first = o.db.next_id();
            assert!(o.db.next_id() > first);
            o.db.write([
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"2".to_vec())),
                (b"a".to_vec(), None),
            ])
            .unwrap();
            assert_eq!(value(&o.db, b"b").as_deref(), Some(&b"2"[..]));
            assert_eq!(value(&o.db, b"a"), None, "the last write to a key wins");
            assert!(o.db.unsynced());
            o.sync().unwrap();
            assert!(!o.db.unsynced());
            first
        };
        let db = Database::open(&path, 1 << 16, open).unwrap();
        let o = db.get().unwrap();
        assert_eq!(value(&o.db, b"b").as_deref(), Some(&b"2"[..]));
        assert!(
            o.db.next_id() > first + 1,
            "ids taken before a write stay taken"
        );
    }

    #[test]
    fn a_creation_cut_short_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        // What a crash or a full disk leaves of a creation: no header.
        std::fs::write(dir.path().join(NEW_FILE), [0u8; 4096]).unwrap();
        let db = Redb::open(dir.path(), 1 << 20).unwrap();
        db.write([(b"k".to_vec(), Some(b"v".to_vec()))]).unwrap();
        assert_eq!(value(&db, b"k").as_deref(), Some(&b"v"[..]));
        assert!(!dir.path().join(NEW_FILE).exists());
    }

    #[test]
    fn a_handle_another_call_left_unusable_is_opened_again_and_the_disk_not_called_full() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), 1 << 16, open).unwrap();
        let reserve = || std::fs::metadata(dir.path().join("reserve")).unwrap().len();
        let (first, held) = (db.generation().unwrap(), reserve());
        let calls = std::cell::Cell::new(0);
        let reloads = std::cell::Cell::new(0);
        let generation = db
            .run(
                |o| {
                    calls.set(calls.get() + 1);
                    match calls.get() {
                        1 => Err(DbError::from(redb::Error::PreviousIo)),
                        _ => Ok(o.generation()),
                    }
                },
                || {
                    reloads.set(reloads.get() + 1);
                    Ok::<(), DbError>(())
                },
            )
            .unwrap();
        assert_ne!(generation, first, "opened again");
        assert_eq!((calls.get(), reloads.get()), (2, 1));
        assert!(db.full_since().is_none());
        assert_eq!(reserve(), held, "no reserve given back");
        // A handle that keeps failing so is an error after a few tries, not a loop.
        let e = db.run(
            |_| Err::<(), _>(DbError::from(redb::Error::PreviousIo)),
            || Ok(()),
        );
        assert!(e.unwrap_err().is_stale());
    }
}
