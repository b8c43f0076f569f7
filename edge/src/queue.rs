//! The durable FIFO of accepted events: the only module that touches sled.
//!
//! One sled tree holds `e` + seq (u64 big-endian) → received-ms (u64 BE), event id (16
//! bytes) and envelope payload. Each entry names its id, so the map from id to seq that acks
//! and the duplicate check need is kept in memory, built when the queue opens: one write per
//! event, and no read. (An earlier build kept it in sled, as `i` + id → seq; those keys are
//! removed when such a queue opens.)
//!
//! Durability: sled's `flush` writes with `sync_file_range`, which neither persists file
//! metadata nor flushes the drive's cache, so [`Queue::flush`] follows it with `fsync` of the
//! database file. An event is accepted only after that returns.
//!
//! A full disk ([`Database`]): the queue refuses new events but keeps reading and deleting the
//! ones it holds, and accepts again once the disk has room for its reserve and as much again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use thiserror::Error;
use warren_daemon::database::{Database, DbError, Opened, StorageFull};
use warren_proto::EventId;

const EVENT: u8 = b'e';
/// The id index an earlier build kept on disk.
const OLD_INDEX: u8 = b'i';
/// received-ms + event id ahead of the payload.
const HEADER_LEN: usize = 8 + 16;
/// What an entry costs beyond its payload: keys, header, and sled's per-entry bookkeeping,
/// roughly. The byte budget counts this so a flood of tiny events cannot exceed it by much.
const ENTRY_OVERHEAD: u64 = 64;

/// What to do with a new event when the byte budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest events to make room (the newest news is worth more).
    DropOldest,
    /// Refuse the new event.
    RejectNew,
}

/// How much the queue may hold, and what it keeps for a full disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The byte budget of queued events.
    pub max_bytes: u64,
    /// What to do beyond it.
    pub when_full: WhenFull,
    /// Space kept allocated beside the database, given back when the disk fills (0: none).
    pub reserve_bytes: u64,
}

impl Limits {
    /// No budget and no reserve.
    pub const UNBOUNDED: Self = Self {
        max_bytes: u64::MAX,
        when_full: WhenFull::RejectNew,
        reserve_bytes: 0,
    };
}

/// Errors from the store.
#[derive(Debug, Error)]
pub enum QueueError {
    /// sled failed.
    #[error("queue database: {0}")]
    Sled(#[from] sled::Error),
    /// Opening it, its fsync, or the reserve failed.
    #[error("queue database: {0}")]
    Database(#[from] DbError),
}

impl StorageFull for QueueError {
    fn is_storage_full(&self) -> bool {
        match self {
            Self::Sled(e) => warren_daemon::database::sled::storage_full(e),
            Self::Database(e) => e.is_storage_full(),
        }
    }

    fn is_stale(&self) -> bool {
        matches!(self, Self::Database(e) if e.is_stale())
    }
}

/// One queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the FIFO.
    pub seq: u64,
    /// The event id.
    pub id: EventId,
    /// When the edge accepted it, ms since the epoch.
    pub received_ms: u64,
    /// The MQTT envelope, ready to publish.
    pub payload: Vec<u8>,
}

/// An event to push.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The event id.
    pub id: EventId,
    /// When the edge accepted it, ms since the epoch.
    pub received_ms: u64,
    /// The MQTT envelope.
    pub payload: Vec<u8>,
}

/// What a push did with each event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Newly queued.
    pub queued: u64,
    /// Already queued under the same id (a resent legacy datagram): nothing to do.
    pub duplicates: u64,
    /// Refused because the queue was full (`reject_new`).
    pub rejected_full: u64,
    /// Old events deleted to make room (`drop_oldest`).
    pub dropped_oldest: u64,
    /// Refused because the disk is full.
    pub rejected_disk_full: u64,
}

/// What opening the store found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Where an unreadable database was moved before starting afresh.
    pub moved_aside: Option<PathBuf>,
    /// Entries that could not be read and were removed.
    pub corrupt_removed: u64,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    bytes: u64,
    /// Every queued event: id → (seq, cost); 40 to 80 bytes each with the table's room (up to
    /// about 150 right after it shrank).
    queued: HashMap<EventId, (u64, u64)>,
    /// The opening of the database this state was loaded from.
    generation: Option<u64>,
}

/// The durable FIFO. Every method blocks on disk: call from `spawn_blocking` in async code.
#[derive(Debug)]
pub struct Queue {
    db: Database,
    limits: Limits,
    /// Locked while the database is, never before.
    state: Mutex<State>,
}

impl Queue {
    /// Opens (or creates) the store in `dir`, with its reserve beside it (`dir` + `.reserve`).
    ///
    /// A database sled reports as damaged is moved aside and a fresh one created, so the edge
    /// keeps accepting events; the report says where the old one went. On a full disk the
    /// reserve gives back what the database needs to open, and the queue starts refusing new
    /// events.
    ///
    /// # Errors
    /// When neither the existing nor a fresh database can be opened.
    pub fn open(dir: &Path, limits: Limits) -> Result<(Self, OpenReport), QueueError> {
        let mut report = OpenReport::default();
        let db = match Database::open(dir, limits.reserve_bytes, open_db) {
            Ok(db) => db,
            // Only damage is worth starting afresh for; an I/O error (a second daemon holding
            // the lock, permissions) must leave the database where it is.
            Err(DbError::Sled(
                damage @ (sled::Error::Corruption { .. }
                | sled::Error::Unsupported(_)
                | sled::Error::ReportableBug(_)),
            )) => {
                let aside = aside_path(dir);
                std::fs::rename(dir, &aside).map_err(|_| damage)?;
                report.moved_aside = Some(aside);
                Database::open(dir, limits.reserve_bytes, open_db)?
            }
            Err(other) => return Err(other.into()),
        };
        let queue = Self {
            db,
            limits,
            state: Mutex::new(State::default()),
        };
        report.corrupt_removed = queue.reload()?;
        // Inert once the map exists, so a failure (a full disk) only leaves them for later.
        if let Err(error) = queue
            .db
            .get()
            .map_err(QueueError::from)
            .and_then(|db| remove_all(&db, db.db.scan_prefix([OLD_INDEX]).keys()))
        {
            tracing::warn!(%error, "Could not remove the id index an earlier build kept.");
        }
        Ok((queue, report))
    }

    /// Loads the counters from the database (again, after it was reopened: writes the failure
    /// lost are gone) and removes unreadable entries; returns how many.
    fn reload(&self) -> Result<u64, QueueError> {
        let db = self.db.get()?;
        // Locked throughout, so no ack lands between the scan and the new counts.
        let mut state = self.lock();
        if state.generation == Some(db.generation()) {
            return Ok(0); // another caller reloaded after this reopening already
        }
        load(&db, &mut state)
    }

    /// The state as of the open database, or as last loaded when it cannot be opened.
    fn current(&self) -> std::sync::MutexGuard<'_, State> {
        match self.db.get() {
            Ok(db) => self.state_for(&db).unwrap_or_else(|_| self.lock()),
            Err(_) => self.lock(),
        }
    }

    /// The state, loaded again first if the database was reopened since it was last (by any
    /// caller: what the map says must be what this handle's tree holds).
    fn state_for(&self, db: &Opened) -> Result<std::sync::MutexGuard<'_, State>, QueueError> {
        let mut state = self.lock();
        if state.generation != Some(db.generation()) {
            load(db, &mut state)?;
        }
        Ok(state)
    }

    /// Runs `op` on the database, once more after a full disk reopened it.
    fn run<R>(&self, op: impl Fn(&Opened) -> Result<R, QueueError>) -> Result<R, QueueError> {
        self.db.run(op, || self.reload().map(drop))
    }

    /// Queues `entries` and makes them durable. On a full disk they are refused (and the
    /// database reopened once, if this is how the queue learns of it).
    ///
    /// `queued` runs once they are in the tree, before the flush: the forwarder may read and
    /// send them while the fsync runs, since the hub acks only after its own (an ack that beats
    /// the fsync deletes them after their insert all the same). Should the flush then fail, an
    /// event refused here may still reach the hub; seqs only grow, so none is passed by.
    ///
    /// # Errors
    /// When sled or the fsync fail for another reason than space, or the database cannot be
    /// opened again; the caller must then not report the events as accepted.
    pub fn commit(
        &self,
        entries: &[NewEntry],
        queued: impl FnOnce(),
    ) -> Result<PushOutcome, QueueError> {
        let refused = PushOutcome {
            rejected_disk_full: entries.len() as u64,
            ..PushOutcome::default()
        };
        if self.disk_full_since().is_some() {
            return Ok(refused);
        }
        let (error, generation) = {
            let db = self.db.get()?;
            let pushed = self.push_to(&db, entries).inspect(|o| {
                if o.queued > 0 {
                    queued();
                }
            });
            match pushed.and_then(|o| Ok(db.sync().map(|()| o)?)) {
                Err(e) if e.is_storage_full() => (e, db.generation()),
                done => return done,
            }
        };
        // Refused whatever happens next: a database that cannot be opened again now is tried
        // again by the next call.
        let reopened = self
            .db
            .filled(generation, &error)
            .map_err(QueueError::from)
            .and_then(|_| self.reload());
        if let Err(error) = reopened {
            tracing::error!(%error, "The queue database could not be opened again yet.");
        }
        Ok(refused)
    }

    /// Queues `entries` in order (not yet durable: call [`Queue::flush`]).
    ///
    /// # Errors
    /// When sled fails; nothing of the batch is then queued.
    pub fn push(&self, entries: &[NewEntry]) -> Result<PushOutcome, QueueError> {
        self.push_to(&*self.db.get()?, entries)
    }

    fn push_to(&self, db: &Opened, entries: &[NewEntry]) -> Result<PushOutcome, QueueError> {
        let mut state = self.state_for(db)?;
        let db = &db.db;
        let mut out = PushOutcome::default();
        let mut writes = Writes::default();
        let mut next_seq = state.next_seq;
        let mut bytes = state.bytes;
        let max_bytes = self.limits.max_bytes;
        // Oldest entries this batch deletes, read lazily from the front of the FIFO.
        let mut oldest = db.scan_prefix([EVENT]);
        // What the batch adds and drops, applied to the map once sled took the batch.
        let mut added: HashMap<EventId, (u64, u64)> = HashMap::new();
        let mut dropped = std::collections::HashSet::new();
        // What this batch adds: room no drop can make.
        let mut adding = 0;
        for e in entries {
            let queued = state.queued.contains_key(&e.id) && !dropped.contains(&e.id);
            if queued || added.contains_key(&e.id) {
                out.duplicates += 1;
                continue;
            }
            let need = cost(e.payload.len());
            if bytes + need > max_bytes {
                match self.limits.when_full {
                    WhenFull::RejectNew => {
                        out.rejected_full += 1;
                        continue;
                    }
                    // Larger than the whole budget, or the room is held by this batch: dropping
                    // older events would not make room, so none is dropped for it.
                    WhenFull::DropOldest if adding + need > max_bytes => {
                        out.rejected_full += 1;
                        continue;
                    }
                    WhenFull::DropOldest => {
                        while bytes + need > max_bytes {
                            let Some(item) = oldest.next() else { break };
                            let (key, value) = item?;
                            // Only entries that existed before this batch: their values are in the tree.
                            if let Some((_, id, old_cost)) = decode_head(&key, &value) {
                                writes.remove(&key);
                                dropped.insert(id);
                                bytes = bytes.saturating_sub(old_cost);
                                out.dropped_oldest += 1;
                            }
                        }
                        if bytes + need > max_bytes {
                            // Entries the queue could not read back hold the room.
                            out.rejected_full += 1;
                            continue;
                        }
                    }
                }
            }
            let mut value = Vec::with_capacity(HEADER_LEN + e.payload.len());
            value.extend_from_slice(&e.received_ms.to_be_bytes());
            value.extend_from_slice(e.id.as_bytes());
            value.extend_from_slice(&e.payload);
            writes.insert(&event_key(next_seq), value);
            added.insert(e.id, (next_seq, need));
            next_seq += 1;
            bytes += need;
            adding += need;
            out.queued += 1;
        }
        drop(oldest);
        writes.apply(db)?;
        for id in &dropped {
            state.queued.remove(id);
        }
        state.queued.extend(added);
        state.next_seq = next_seq;
        state.bytes = bytes;
        Ok(out)
    }

    /// Makes everything pushed so far durable: sled's flush, then fsync of its file.
    ///
    /// # Errors
    /// When either fails; the caller must then not report the events as accepted.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.run(|db| Ok(db.sync()?))
    }

    /// Deletes acked events; returns how many were queued. Not flushed: a delete lost to a
    /// crash only means a resend, which the hub drops as a duplicate.
    ///
    /// # Errors
    /// When sled fails.
    pub fn ack(&self, ids: &[EventId]) -> Result<u64, QueueError> {
        self.run(|store| {
            let mut state = self.state_for(store)?;
            // One remove at a time, not a batch: removes need no atomicity (an entry a crash
            // leaves is sent again and found a duplicate), and a batch writes sled's log out
            // at once. The map follows each, so it matches what sled holds if one fails.
            let mut gone = 0;
            for id in ids {
                // An ack may name an id twice: the second finds it gone.
                if let Some(&(seq, cost)) = state.queued.get(id) {
                    store.db.remove(event_key(seq))?;
                    state.queued.remove(id);
                    state.bytes = state.bytes.saturating_sub(cost);
                    gone += 1;
                }
            }
            // A drained backlog gives its table back (a map never shrinks by itself).
            let (len, room) = (state.queued.len(), state.queued.capacity());
            if room > 4096 && len < room / 4 {
                state.queued.shrink_to(len * 2);
            }
            Ok(gone)
        })
    }

    /// Up to `max` entries with `from <= seq < until`, in FIFO order.
    ///
    /// # Errors
    /// When sled fails.
    pub fn read(&self, from: u64, until: u64, max: usize) -> Result<Vec<Entry>, QueueError> {
        if from >= until {
            return Ok(Vec::new());
        }
        self.run(|store| {
            let mut out = Vec::new();
            for item in store.db.range(event_key(from)..event_key(until)).take(max) {
                let (key, value) = item?;
                if let Some(entry) = decode(&key, &value) {
                    out.push(entry);
                }
            }
            Ok(out)
        })
    }

    /// Whether event `id` is queued.
    ///
    /// # Errors
    /// When the database was reopened and cannot be read again.
    pub fn contains(&self, id: &EventId) -> Result<bool, QueueError> {
        let db = self.db.get()?;
        Ok(self.state_for(&db)?.queued.contains_key(id))
    }

    /// The seq the next pushed event will get.
    pub fn next_seq(&self) -> u64 {
        self.current().next_seq
    }

    /// Events queued.
    pub fn len(&self) -> u64 {
        self.current().queued.len() as u64
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the queue counts against its budget.
    pub fn bytes(&self) -> u64 {
        self.current().bytes
    }

    /// When the queued event that arrived first was accepted, if any.
    ///
    /// # Errors
    /// When sled fails.
    pub fn oldest_received_ms(&self) -> Result<Option<u64>, QueueError> {
        self.run(|store| {
            Ok(match store.db.scan_prefix([EVENT]).next().transpose()? {
                Some((key, value)) => decode(&key, &value).map(|e| e.received_ms),
                None => None,
            })
        })
    }

    /// Since when new events are refused for want of disk space, ms since the epoch.
    pub fn disk_full_since(&self) -> Option<u64> {
        self.db.full_since()
    }

    /// The database, for [`warren_daemon::database::watch`].
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are at worst stale; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Rebuilds `state` from what `db` holds and removes unreadable entries; returns how many.
fn load(db: &Opened, state: &mut State) -> Result<u64, QueueError> {
    let mut loaded = State::default();
    let mut corrupt = Vec::new();
    for item in db.db.scan_prefix([EVENT]) {
        let (key, value) = item?;
        match decode_head(&key, &value) {
            // A second entry of one id (which no build writes) is damage like any other.
            Some((seq, id, cost)) if !loaded.queued.contains_key(&id) => {
                loaded.next_seq = seq + 1;
                loaded.bytes += cost;
                loaded.queued.insert(id, (seq, cost));
            }
            _ => corrupt.push(key),
        }
    }
    let removed = corrupt.len() as u64;
    remove_all(db, corrupt.into_iter().map(Ok))?;
    // Seqs only grow: the forwarder may have read events a failed write then lost.
    loaded.next_seq = loaded.next_seq.max(state.next_seq);
    loaded.generation = Some(db.generation());
    *state = loaded;
    Ok(removed)
}

/// Removes `keys`, each on its own, in steps: millions of them make no one batch.
fn remove_all(
    db: &Opened,
    keys: impl Iterator<Item = Result<sled::IVec, sled::Error>>,
) -> Result<(), QueueError> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for key in keys {
        batch.remove(key?);
        in_batch += 1;
        if in_batch == 10_000 {
            db.db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        db.db.apply_batch(batch)?;
    }
    Ok(())
}

fn open_db(dir: &Path) -> Result<sled::Db, DbError> {
    Ok(sled::Config::new()
        .path(dir)
        // Small cache: the edge's working set is the head of the FIFO.
        .cache_capacity(16 * 1024 * 1024)
        // The background flusher is a backstop; accepted events are flushed explicitly.
        .flush_every_ms(Some(1000))
        .open()?)
}

fn aside_path(dir: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{stamp}"));
    dir.with_file_name(name)
}

/// The writes of one push, applied atomically.
#[derive(Default)]
struct Writes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        self.0.push((key.to_vec(), Some(value)));
    }

    fn remove(&mut self, key: &[u8]) {
        self.0.push((key.to_vec(), None));
    }

    /// One write goes as a plain insert or remove, atomic by itself: a sled batch first
    /// writes out the log buffer and then a manifest, each with its own `sync_file_range`,
    /// which an edge at rest, committing one event at a time, would pay on every event.
    fn apply(self, db: &sled::Db) -> sled::Result<()> {
        match <[_; 1]>::try_from(self.0) {
            Ok([(key, Some(value))]) => db.insert(key, value).map(drop),
            Ok([(key, None)]) => db.remove(key).map(drop),
            Err(writes) if writes.is_empty() => Ok(()),
            Err(writes) => {
                let mut batch = sled::Batch::default();
                for (key, value) in writes {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                db.apply_batch(batch)
            }
        }
    }
}

fn cost(payload_len: usize) -> u64 {
    payload_len as u64 + ENTRY_OVERHEAD
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// An entry's seq, id and cost, without copying its payload.
fn decode_head(key: &[u8], value: &[u8]) -> Option<(u64, EventId, u64)> {
    let seq = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    let id = EventId::from_bytes(value.get(8..HEADER_LEN)?.try_into().ok()?);
    Some((seq, id, cost(value.len().checked_sub(HEADER_LEN)?)))
}

fn decode(key: &[u8], value: &[u8]) -> Option<Entry> {
    let seq = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    let received_ms = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let id = EventId::from_bytes(value.get(8..HEADER_LEN)?.try_into().ok()?);
    Some(Entry {
        seq,
        id,
        received_ms,
        payload: value.get(HEADER_LEN..)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};
    use std::collections::BTreeMap;

    fn entry(n: u8, len: usize) -> NewEntry {
        NewEntry {
            id: EventId::from_bytes([n; 16]),
            received_ms: u64::from(n),
            payload: vec![n; len],
        }
    }

    /// Opens, waiting for sled's background threads of a just-dropped instance to let go of
    /// the directory lock (they outlive the drop briefly).
    fn open(dir: &Path, max_bytes: u64, when_full: WhenFull) -> Queue {
        let limits = Limits {
            max_bytes,
            when_full,
            reserve_bytes: 0,
        };
        for _ in 0..500 {
            if let Ok((q, _)) = Queue::open(dir, limits) {
                return q;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Queue::open(dir, limits).unwrap().0
    }

    #[test]
    fn a_commit_wakes_the_forwarder_once_its_events_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir.path().join("q"), u64::MAX, WhenFull::RejectNew);
        let mut readable = None;
        let out = q
            .commit(&[entry(1, 10), entry(2, 20)], || {
                readable = Some(q.read(0, u64::MAX, 10).unwrap().len());
            })
            .unwrap();
        assert_eq!(out.queued, 2);
        assert_eq!(
            readable,
            Some(2),
            "both readable when the forwarder is woken"
        );
        let mut woken = false;
        let out = q.commit(&[entry(1, 10)], || woken = true).unwrap();
        assert_eq!(out.duplicates, 1);
        assert!(!woken, "a batch of duplicates wakes no one");
    }

    #[test]
    fn a_queue_an_earlier_build_indexed_on_disk_opens_without_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        {
            let q = open(&path, u64::MAX, WhenFull::RejectNew);
            q.push(&[entry(1, 10), entry(2, 20)]).unwrap();
            // What the earlier build wrote beside each entry.
            let db = q.db.get().unwrap();
            for (n, seq) in [(1u8, 0u64), (2, 1)] {
                let mut key = vec![OLD_INDEX];
                key.extend_from_slice(&[n; 16]);
                db.db.insert(key, &seq.to_be_bytes()).unwrap();
            }
            db.sync().unwrap();
        }
        let q = open(&path, u64::MAX, WhenFull::RejectNew);
        let db = q.db.get().unwrap();
        assert_eq!(db.db.scan_prefix([OLD_INDEX]).count(), 0, "index removed");
        drop(db);
        assert_eq!(q.len(), 2);
        let out = q.push(&[entry(2, 20), entry(3, 30)]).unwrap();
        assert_eq!(
            (out.queued, out.duplicates),
            (1, 1),
            "ids known after a restart"
        );
        let two = EventId::from_bytes([2; 16]);
        assert_eq!(q.ack(&[two, two]).unwrap(), 1, "acked by id, once");
        let left = q.read(0, u64::MAX, 10).unwrap();
        assert_eq!(
            left.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(q.bytes(), 40 + 2 * ENTRY_OVERHEAD);
    }

    #[test]
    fn an_event_dropped_for_room_and_sent_again_in_the_same_batch_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir.path().join("q"), 2 * cost(10), WhenFull::DropOldest);
        q.push(&[entry(1, 10), entry(3, 10)]).unwrap();
        // 2 drops 1, the oldest; 1 again is no duplicate of what was just dropped.
        let out = q.push(&[entry(2, 10), entry(1, 10)]).unwrap();
        assert_eq!((out.queued, out.duplicates, out.dropped_oldest), (2, 0, 2));
        let held = q.read(0, u64::MAX, 10).unwrap();
        assert_eq!(
            held.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
            [2, 1]
        );
        assert!(q.contains(&EventId::from_bytes([1; 16])).unwrap());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn an_event_that_cannot_fit_drops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir.path().join("q"), 2 * cost(10), WhenFull::DropOldest);
        q.push(&[entry(1, 10), entry(2, 10)]).unwrap();
        let too_big = usize::try_from(3 * cost(10)).unwrap();
        let out = q.push(&[entry(3, too_big)]).unwrap();
        assert_eq!(
            (out.queued, out.rejected_full, out.dropped_oldest),
            (0, 1, 0)
        );
        // 4 and 5 take the room of 1 and 2; 6 finds it held by them and drops nothing.
        let out = q.push(&[entry(4, 10), entry(5, 10), entry(6, 10)]).unwrap();
        assert_eq!(
            (out.queued, out.rejected_full, out.dropped_oldest),
            (2, 1, 2)
        );
        let held = q.read(0, u64::MAX, 10).unwrap();
        assert_eq!(
            held.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
            [4, 5]
        );
    }

    #[test]
    fn fifo_ack_in_any_order_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        {
            let q = open(&path, u64::MAX, WhenFull::RejectNew);
            let out = q
                .push(&[entry(1, 10), entry(2, 20), entry(3, 30), entry(1, 10)])
                .unwrap();
            assert_eq!((out.queued, out.duplicates), (3, 1));
            q.flush().unwrap();
            assert_eq!(
                q.ack(&[EventId::from_bytes([2; 16]), EventId::from_bytes([9; 16])])
                    .unwrap(),
                1
            );
            assert_eq!(q.len(), 2);
        }
        let q = open(&path, u64::MAX, WhenFull::RejectNew);
        let all = q.read(0, u64::MAX, 10).unwrap();
        assert_eq!(all.iter().map(|e| e.payload[0]).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(q.next_seq(), 3, "seq continues after the last event");
        assert_eq!(q.bytes(), 40 + 2 * ENTRY_OVERHEAD);
        assert_eq!(q.oldest_received_ms().unwrap(), Some(1));
    }

    #[test]
    fn budget_policies() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 3 * cost(100);
        let q = open(&dir.path().join("r"), budget, WhenFull::RejectNew);
        let out = q
            .push(&(1..=5).map(|n| entry(n, 100)).collect::<Vec<_>>())
            .unwrap();
        assert_eq!((out.queued, out.rejected_full), (3, 2));

        let q = open(&dir.path().join("d"), budget, WhenFull::DropOldest);
        q.push(&[entry(1, 100), entry(2, 100), entry(3, 100)])
            .unwrap();
        let out = q.push(&[entry(4, 100), entry(5, 100)]).unwrap();
        assert_eq!((out.queued, out.dropped_oldest), (2, 2));
        let left: Vec<_> = q
            .read(0, u64::MAX, 10)
            .unwrap()
            .iter()
            .map(|e| e.payload[0])
            .collect();
        assert_eq!(left, [3, 4, 5]);
        let out = q.push(&[entry(6, 10_000)]).unwrap();
        assert_eq!(out.rejected_full, 1, "larger than the whole budget");
    }

    #[test]
    fn an_unreadable_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(path.join("db"), vec![0xa5; 4096]).unwrap();
        let (q, report) = Queue::open(&path, Limits::UNBOUNDED).unwrap();
        assert!(report.moved_aside.is_some_and(|p| p.exists()));
        q.push(&[entry(1, 5)]).unwrap();
        q.flush().unwrap();
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_locked_database_is_an_error_and_stays_put() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let q = open(&path, u64::MAX, WhenFull::RejectNew);
        q.push(&[entry(1, 5)]).unwrap();
        q.flush().unwrap();
        assert!(Queue::open(&path, Limits::UNBOUNDED).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing moved aside"
        );
        assert_eq!(q.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<u8>),
        Ack(Vec<u8>),
        Restart,
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            let ids = |g: &mut Gen| {
                Vec::<u8>::arbitrary(g)
                    .into_iter()
                    .map(|b| b % 32)
                    .collect()
            };
            match u8::arbitrary(g) % 8 {
                0 => Op::Restart,
                1..=3 => Op::Ack(ids(g)),
                _ => Op::Push(ids(g)),
            }
        }
    }

    /// The queue against a BTreeMap model: same contents, same order, across restarts.
    #[test]
    fn matches_a_model() {
        fn prop(ops: Vec<Op>) -> bool {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q");
            let mut q = Some(open(&path, u64::MAX, WhenFull::RejectNew));
            let mut model: BTreeMap<u64, u8> = BTreeMap::new();
            let mut next = 0;
            for op in ops {
                let queue = q.as_ref().unwrap();
                match op {
                    Op::Push(ns) => {
                        queue
                            .push(
                                &ns.iter()
                                    .map(|&n| entry(n, usize::from(n)))
                                    .collect::<Vec<_>>(),
                            )
                            .unwrap();
                        for n in ns {
                            if !model.values().any(|&m| m == n) {
                                model.insert(next, n);
                                next += 1;
                            }
                        }
                        queue.flush().unwrap();
                    }
                    Op::Ack(ns) => {
                        queue
                            .ack(
                                &ns.iter()
                                    .map(|&n| EventId::from_bytes([n; 16]))
                                    .collect::<Vec<_>>(),
                            )
                            .unwrap();
                        model.retain(|_, m| !ns.contains(m));
                    }
                    Op::Restart => {
                        queue.flush().unwrap();
                        drop(q.take()); // release sled's lock before reopening
                        q = Some(open(&path, u64::MAX, WhenFull::RejectNew));
                    }
                }
                let queue = q.as_ref().unwrap();
                let got: Vec<u8> = queue
                    .read(0, u64::MAX, usize::MAX)
                    .unwrap()
                    .iter()
                    .map(|e| e.id.as_bytes()[0])
                    .collect();
                let want: Vec<u8> = model.values().copied().collect();
                let bytes: u64 = want.iter().map(|&n| cost(usize::from(n))).sum();
                if got != want || queue.len() != want.len() as u64 || queue.bytes() != bytes {
                    return false;
                }
            }
            true
        }
        QuickCheck::new()
            .tests(60)
            .quickcheck(prop as fn(Vec<Op>) -> bool);
    }
}
