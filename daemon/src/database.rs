//! A database that outlives a full disk.
//!
//! After one failed write sled fails every call until it is opened again (redb too), and
//! opening needs room too. So a [`Database`] keeps a [`Reserve`] in its directory; when a call
//! fails for want of space it gives back a step of the reserve, opens the database again and
//! says the disk is full: the daemon then refuses new work (an event it has not yet acked or
//! accepted is refused, not retried) and finishes what it holds, whose calls [`Database::run`]
//! runs again. [`Database::try_resume`] fills the reserve again once the filesystem has room.
//!
//! The engines: sled for the edge's queue ([`sled`]), redb for the hub's inbox ([`redb`]).

pub mod redb;
pub mod sled;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::reserve::{Reserve, is_storage_full};

/// Free space wanted on top of the reserve before the disk counts as having room again, so a
/// small or absent reserve does not make the daemon accept work on a disk that is still full.
const MIN_FREE: u64 = 4 << 20;
/// How many times a call meeting a handle another call's failure left unusable
/// ([`StorageFull::is_stale`]) opens it again and runs once more.
pub const STALE_RETRIES: u32 = 3;
/// How long a reopen waits for the database's file lock, which sled's threads may hold for a
/// moment after the old handle is dropped.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Opens the database in a directory (the daemon's own cache and flush settings).
pub type Opener<D> = fn(&Path) -> Result<D, DbError>;

/// A store a [`Database`] can keep in its directory.
pub trait Engine: Sized {
    /// The file inside the directory that holds the data: fsynced after each opening.
    const FILE: &'static str;

    /// Makes everything written so far durable; `file` is [`Engine::FILE`], open.
    ///
    /// # Errors
    /// When a write or the fsync fails.
    fn sync(&self, file: &File) -> Result<(), DbError>;

    /// Tidies, before an opening, what a write cut short may have left in `dir`.
    fn tidy(_dir: &Path) {}
}

/// Errors of a [`Database`].
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// sled failed.
    #[error("{0}")]
    Sled(#[from] ::sled::Error),
    /// redb failed (boxed: its error is large, and errors are rare).
    #[error("{0}")]
    Redb(Box<::redb::Error>),
    /// The fsync, or the reserve, failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<::redb::Error> for DbError {
    fn from(e: ::redb::Error) -> Self {
        Self::Redb(Box::new(e))
    }
}

impl DbError {
    /// Whether an opening failed only because the old handle still holds the lock.
    fn is_lock_held(&self) -> bool {
        match self {
            Self::Sled(::sled::Error::Io(e)) => e.kind() == io::ErrorKind::Other,
            Self::Redb(e) => matches!(**e, ::redb::Error::DatabaseAlreadyOpen),
            _ => false,
        }
    }
}

/// An error that may say the disk is full.
pub trait StorageFull {
    /// Whether the disk (or the quota) is full.
    fn is_storage_full(&self) -> bool;

    /// Whether the handle failed earlier (a call of another thread) and must be opened again
    /// before it serves; the disk need not be full.
    fn is_stale(&self) -> bool {
        false
    }
}

impl StorageFull for DbError {
    fn is_storage_full(&self) -> bool {
        match self {
            Self::Sled(e) => sled::storage_full(e),
            Self::Redb(e) => redb::storage_full(e),
            Self::Io(e) => is_storage_full(e),
        }
    }

    fn is_stale(&self) -> bool {
        matches!(self, Self::Redb(e) if matches!(**e, ::redb::Error::PreviousIo))
    }
}

/// The database as opened once.
#[derive(Debug)]
pub struct Opened<D = ::sled::Db> {
    /// The engine's handle.
    pub db: D,
    /// An fd of its data file, for the fsync sled does not do on flush.
    file: File,
    /// Which opening this is: a failure seen on an older one is already handled.
    generation: u64,
}

impl<D: Engine> Opened<D> {
    /// Which opening this is, for [`Database::filled`], and for what callers keep of it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes everything written so far durable ([`Engine::sync`]).
    ///
    /// # Errors
    /// When a write or the fsync fails.
    pub fn sync(&self) -> Result<(), DbError> {
        self.db.sync(&self.file)
    }
}

/// A database with its reserve.
#[derive(Debug)]
pub struct Database<D = ::sled::Db> {
    dir: PathBuf,
    open: Opener<D>,
    /// `None` only while it is opened again, or when that failed (the next call tries again).
    current: RwLock<Option<Opened<D>>>,
    opened: AtomicU64,
    /// Locked around every change, so a release and a fill never interleave.
    reserve: Mutex<Reserve>,
    /// Since when the disk is full, ms since the epoch; 0 while there is room.
    full_since: AtomicU64,
}

impl<D: Engine> Database<D> {
    /// Opens the database in `dir` with `open`, keeping `reserve` bytes in `dir/reserve` (on
    /// the database's own filesystem; neither engine minds the name). On a full disk the reserve gives
    /// back what opening needs, and the database starts out [full](Database::full_since).
    ///
    /// # Errors
    /// When the engine cannot open it for another reason than space (the caller may move a
    /// damaged one aside), or no reserve is left to give.
    pub fn open(dir: &Path, reserve: u64, open: Opener<D>) -> Result<Self, DbError> {
        let db = Self {
            dir: dir.to_owned(),
            open,
            current: RwLock::new(None),
            opened: AtomicU64::new(0),
            reserve: Mutex::new(Reserve::new(dir.join("reserve"), reserve)),
            full_since: AtomicU64::new(0),
        };
        let opened = db.open_once()?;
        *db.current.write().unwrap_or_else(PoisonError::into_inner) = Some(opened);
        if db.has_room()? {
            db.full_since.store(0, Ordering::Relaxed);
        } else {
            db.set_full();
        }
        Ok(db)
    }

    fn open_once(&self) -> Result<Opened<D>, DbError> {
        let reopening = self.opened.load(Ordering::Relaxed) > 0;
        let lock_deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            D::tidy(&self.dir);
            match (self.open)(&self.dir) {
                Ok(db) => break db,
                Err(e) if e.is_storage_full() => {
                    self.set_full();
                    let freed = self.release()?;
                    if freed == 0 {
                        return Err(e);
                    }
                    tracing::warn!(freed, dir = %self.dir.display(), "Disk full: gave back reserve to open the database.");
                }
                // The old handle's threads may still hold the lock for a moment; at start, a
                // lock held is another daemon's, and an error at once.
                Err(e)
                    if reopening
                        && e.is_lock_held()
                        && std::time::Instant::now() < lock_deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        let file = File::open(self.dir.join(D::FILE))?;
        // What the old handle wrote may sit in the page cache only, and a duplicate is acked
        // on the strength of it: push it to the disk (as far as the kernel still has it after
        // a failed fsync). And the directory entry of a new database must survive a power
        // loss too.
        file.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        Ok(Opened {
            db,
            file,
            generation: self.opened.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Which opening is current ([`Opened::generation`]), if the database is open; it opens
    /// nothing, so it never blocks on the disk.
    pub fn generation(&self) -> Option<u64> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|o| o.generation)
    }

    /// The open database, opened again first if an earlier attempt failed.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn get(&self) -> Result<Guard<'_, D>, DbError> {
        loop {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if current.is_some() {
                return Ok(Guard(current));
            }
            drop(current);
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            if current.is_none() {
                *current = Some(self.open_once()?);
            }
        }
    }

    /// Runs `op`; when it fails for want of space, handles that ([`Database::filled`]) and
    /// runs it again, while there is reserve left to give. `reopened` is called after each
    /// reopening, before `op` runs again, to reload what the caller keeps from the database;
    /// so `op` must be safe to run again after a write of its that may or may not have landed.
    ///
    /// # Errors
    /// `op`'s (still storage-full once the reserve is gone), or the database's when it cannot
    /// be opened again.
    pub fn run<R, E>(
        &self,
        op: impl Fn(&Opened<D>) -> Result<R, E>,
        reopened: impl Fn() -> Result<(), E>,
    ) -> Result<R, E>
    where
        E: From<DbError> + StorageFull + std::fmt::Display,
    {
        let mut stale = 0;
        loop {
            let (error, generation) = {
                let current = self.get()?;
                match op(&current) {
                    Err(e) if e.is_storage_full() || (e.is_stale() && stale < STALE_RETRIES) => {
                        (e, current.generation)
                    }
                    done => return done,
                }
            };
            if error.is_stale() {
                stale += 1;
                self.reopen(generation, &error)?;
            } else if !self.filled(generation, &error)? {
                return Err(error);
            }
            reopened()?;
        }
    }

    /// The opening `generation` failed earlier and serves no more ([`StorageFull::is_stale`]):
    /// open the database again, unless a caller already did. The failure itself was handled
    /// by the call that met it ([`Database::filled`] if the disk is full).
    ///
    /// # Errors
    /// When the database cannot be opened again (the next [`Database::get`] tries again).
    pub fn reopen(&self, generation: u64, error: &dyn std::fmt::Display) -> Result<(), DbError> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| c.generation != generation) {
            return Ok(());
        }
        tracing::warn!(%error, dir = %self.dir.display(), "The database failed earlier: opening it again.");
        *current = None;
        *current = Some(self.open_once()?);
        Ok(())
    }

    /// The disk filled under the opening `generation` (from an [`Opened`] that failed): say
    /// so, give back a step of the reserve, and open the database again, unless a caller
    /// already did. Returns whether it is worth trying again: false when no reserve was left
    /// to give. Call it with no [`Guard`] held.
    ///
    /// # Errors
    /// When the reserve cannot be shrunk or the database cannot be opened again (the next
    /// [`Database::get`] tries again).
    pub fn filled(&self, generation: u64, error: &dyn std::fmt::Display) -> Result<bool, DbError> {
        self.set_full();
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| c.generation != generation) {
            return Ok(true);
        }
        let freed = self.release()?;
        tracing::error!(%error, freed, dir = %self.dir.display(), "Disk full: refusing new work until there is room; what is held is still handled.");
        // The engine's lock on its files goes with its last handle: drop it before opening
        // again.
        *current = None;
        *current = Some(self.open_once()?);
        Ok(freed > 0)
    }

    fn release(&self) -> Result<u64, DbError> {
        Ok(self
            .reserve
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release()?)
    }

    /// Since when the disk is full, ms since the epoch.
    pub fn full_since(&self) -> Option<u64> {
        match self.full_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    /// Leaves the full state if the reserve can be filled again and as much is still free;
    /// returns whether there is room now.
    ///
    /// # Errors
    /// When the reserve cannot be written for another reason than space.
    pub fn try_resume(&self) -> Result<bool, DbError> {
        if self.full_since().is_none() {
            return Ok(true);
        }
        if !self.has_room()? {
            return Ok(false);
        }
        self.full_since.store(0, Ordering::Relaxed);
        tracing::info!(dir = %self.dir.display(), "The disk has room again.");
        Ok(true)
    }

    /// Whether the disk has room for the whole reserve and as much again (at least
    /// [`MIN_FREE`]) — a disk that only just has room would fill at once and flap — and, if
    /// so, the reserve is filled. Checked first, so a refill never takes back what the
    /// database was given.
    fn has_room(&self) -> Result<bool, DbError> {
        let reserve = self.reserve.lock().unwrap_or_else(PoisonError::into_inner);
        let missing = reserve.size().saturating_sub(reserve.held());
        if free_bytes(&self.dir) < missing.saturating_add(reserve.size().max(MIN_FREE)) {
            return Ok(false);
        }
        Ok(reserve.fill()?)
    }

    fn set_full(&self) {
        let now = crate::wall_ms();
        let _ =
            self.full_since
                .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Bytes free to an unprivileged user on the filesystem of `dir` (0 when unknown).
fn free_bytes(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir).map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// While the disk under `owner`'s database is full, looks for room every `every` (on the
/// blocking pool), and calls `changed` with the new state whenever it changes; until `stop`.
/// An owner without a local database (`database` gives `None`) has nothing to watch.
pub async fn watch<T: Send + Sync + 'static, D: Engine + 'static>(
    owner: std::sync::Arc<T>,
    database: fn(&T) -> Option<&Database<D>>,
    every: std::time::Duration,
    changed: impl Fn(bool),
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(db) = database(&owner) else {
        return;
    };
    let mut was_full = db.full_since().is_some();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let full_since = || database(&owner).and_then(Database::full_since);
        if full_since().is_some() {
            let o = owner.clone();
            let resumed =
                tokio::task::spawn_blocking(move || database(&o).map(Database::try_resume));
            if let Ok(Some(Err(error))) = resumed.await {
                tracing::warn!(%error, "Could not allocate the disk reserve.");
            }
        }
        let full = full_since().is_some();
        if full != was_full {
            was_full = full;
            changed(full);
        }
    }
}

/// A read lock on the open database.
#[derive(Debug)]
pub struct Guard<'a, D = ::sled::Db>(RwLockReadGuard<'a, Option<Opened<D>>>);

impl<D> std::ops::Deref for Guard<'_, D> {
    type Target = Opened<D>;
    fn deref(&self) -> &Opened<D> {
        // `Database::get` hands out guards of an open database only.
        self.0.as_ref().expect("database is open")
    }
}
