//! The hub's durable state: the only module that touches its store.
//!
//! One tree, several key spaces, so every commit is one atomic batch:
//! - `s` + event id → received-ms: ids seen inside the dedup window, pruned through their
//!   traces (below), which are in time order; an inbox written by an earlier build also has `t` +
//!   received-ms + event id (empty) for that, pruned the same way;
//! - `o` + notifier + `\0` + seq → [`OutboxEntry`]: deliveries still to make;
//! - `d` + seq → a dead letter: deliveries given up on;
//! - `w` + notifier → what that notifier was writing when the hub stopped ([`Inbox::set_memo`]);
//! - `x` + received-ms + event id + step number → a [`Step`] of the event's trace (`hub
//!   trace`), found through the id's `s` record and forgotten with it; time first, so a
//!   batch's traces land together rather than on a random page each. Every recorded id has
//!   one (its Received step), so these keys also say which ids to forget when;
//! - the [`Space`]s other modules keep their state in (known sources, throttles, presence),
//!   written through a [`Tx`] in the same batch as the events that change them.
//!
//! [`Inbox::commit`] records new events and their deliveries and makes them durable (one
//! fsync) before the caller acks them to the edge. A finished delivery is made durable at
//! once too, so only a crash between a send and its record repeats it; attempt counts and
//! dead letters are made durable by the next commit, or [`Inbox::flush_behind`] within
//! `FLUSH_EVERY`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warren_daemon::database::redb::Redb;
use warren_daemon::database::{Database, DbError, STALE_RETRIES, StorageFull};
use warren_proto::{Envelope, EventId};

use crate::known::KnownSourcesConfig;
use crate::notify::{Notification, NotifierName};
use crate::store::postgres::{Reads, Store};
use crate::store::{Batch, Kv, Order, prefix_end};
use crate::trace::{AttemptResult, Routing, Step, Trace};

const SEEN: u8 = b's';
const SEEN_BY_TIME: u8 = b't';
const OUTBOX: u8 = b'o';
const DEAD: u8 = b'd';
const TRACE: u8 = b'x';
const MEMO: u8 = b'w';
/// The step number of an event's one, updated, [`Step::Duplicates`] record.
const DUPLICATES_STEP: u64 = u64::MAX;
/// The installation's secret salt for the ids of events the hub makes itself.
const SALT: &[u8] = b"m:salt";
/// How long a write that needs no fsync of its own (an attempt count, a dead letter, a trace
/// step) waits for one at most: the window in which a crash can lose it.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// The store's page cache. The hot keys are the recent ones: the ids of the dedup window, the
/// outboxes' heads, the last traces.
const CACHE_BYTES: usize = 8 << 20;
/// How often a hub sharing its store says it is alive, and counts what the store holds.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Every how many heartbeats a hub sharing its store counts what it holds.
const RECOUNT_EVERY: u64 = 5;
/// How often ids past the dedup window are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Errors from the store.
#[derive(Debug, Error)]
pub enum InboxError {
    /// The hub's own store failed.
    #[error("inbox database: {0}")]
    Database(#[from] DbError),
    /// The disk is full: nothing new is recorded until it has room.
    #[error("inbox database: the disk is full")]
    DiskFull,
    /// The fsync after a flush failed.
    #[error("syncing inbox database: {0}")]
    Sync(#[from] std::io::Error),
    /// The shared store (PostgreSQL) failed.
    #[error("store: {}", crate::store::postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The shared store cannot be reached.
    #[error("store: {0}")]
    Unavailable(String),
    /// The shared store cannot be used as configured (its connection string, or a schema
    /// newer than this version's).
    #[error("store: {0}")]
    Unusable(String),
}

impl InboxError {
    /// Whether the shared store failed: nothing was recorded, and it is worth trying again
    /// later (an edge's events stay unacked meanwhile) rather than stopping the hub.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Postgres(_) | Self::Unavailable(_))
    }
}

impl StorageFull for InboxError {
    fn is_storage_full(&self) -> bool {
        match self {
            Self::Database(e) => e.is_storage_full(),
            Self::Sync(e) => warren_daemon::reserve::is_storage_full(e),
            Self::DiskFull | Self::Postgres(_) | Self::Unavailable(_) | Self::Unusable(_) => false,
        }
    }

    fn is_stale(&self) -> bool {
        matches!(self, Self::Database(e) if e.is_stale())
    }
}

/// One delivery still to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// What to deliver.
    pub notification: Notification,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When the first attempt failed, ms since the epoch: the retry budget runs from there.
    #[serde(default)]
    pub first_failure_ms: Option<u64>,
    /// The notifier this delivery is the fallback of; a fallback does not fall back again.
    #[serde(default)]
    pub fallback_of: Option<String>,
    /// When the hub recorded the event (its `s` record's value, the time its trace is filed
    /// under), so recording an attempt needs no read of that record. `None` in entries an
    /// earlier build wrote, and for digests, which have no trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_ms: Option<u64>,
}

impl OutboxEntry {
    /// A delivery not yet attempted.
    pub fn new(notification: Notification) -> Self {
        Self {
            notification,
            attempts: 0,
            last_error: None,
            first_failure_ms: None,
            fallback_of: None,
            recorded_ms: None,
        }
    }
}

/// A delivery made, for [`Inbox::done_many`].
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its outbox seq.
    pub seq: u64,
    /// The event.
    pub id: EventId,
    /// [`OutboxEntry::recorded_ms`], if known.
    pub recorded_ms: Option<u64>,
    /// The trace step that says when and at which attempt.
    pub step: Step,
}

/// A delivery given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its number, for `hub dead-letters retry|drop`.
    #[serde(default)]
    pub seq: u64,
    /// The notifier.
    pub notifier: String,
    /// The event id.
    pub id: EventId,
    /// The title it would have had.
    pub title: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was given up.
    pub error: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// A dead letter as stored: with what it would have delivered, so it can be sent again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadRecord {
    #[serde(flatten)]
    letter: DeadLetter,
    notification: Option<Notification>,
}

/// Which dead letters a `retry` or `drop` is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// These numbers.
    Seqs(Vec<u64>),
    /// Every one, or every one of this notifier.
    All(Option<String>),
}

impl Selection {
    fn wants(&self, d: &DeadLetter) -> bool {
        match self {
            Self::Seqs(seqs) => seqs.contains(&d.seq),
            Self::All(None) => true,
            Self::All(Some(n)) => *n == d.notifier,
        }
    }
}

/// A record of a [`Space`]: its key (without the space's prefix) and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// The deliveries an event causes: at most one per notifier.
pub type Deliveries = Vec<(NotifierName, Notification)>;

/// The key spaces the hub's other parts keep durable state in, through a [`Tx`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Space {
    /// The (user, source network) pairs seen per host or site.
    Known = b'k',
    /// Throttled routes' current intervals and what they folded.
    Throttle = b'g',
    /// What was last announced about each edge.
    Presence = b'p',
    /// The newest events, for the web page ([`crate::recent`]).
    Recent = b'r',
}

/// One atomic, durable write to the store ([`Inbox::transact`]): reads see its own writes.
pub struct Tx<'a> {
    kv: &'a dyn Kv,
    /// What it wrote (`None`: removed), the last write of each key: its reads see these
    /// first, and they are applied as one batch, in key order. Keeping one copy of each value
    /// costs no clone per write.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The next outbox number, for one hub's store; `None` when hubs share it (the store
    /// hands them out).
    next_seq: Option<u64>,
    added: BTreeMap<String, u64>,
    new_seen: u64,
    woken: Vec<NotifierName>,
    /// Whether anything but a trace was written, which must then be durable before the
    /// caller goes on (a batch of duplicates alone costs no fsync).
    durable: bool,
}

impl Tx<'_> {
    /// The record `key` of `space`.
    ///
    /// # Errors
    /// When the store fails.
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, InboxError> {
        self.raw_get(&spaced(space, key))
    }

    /// Writes the record `key` of `space`.
    pub fn put(&mut self, space: Space, key: &[u8], value: Vec<u8>) {
        self.raw_put(spaced(space, key), value);
    }

    /// Removes the record `key` of `space`.
    pub fn remove(&mut self, space: Space, key: &[u8]) {
        self.durable = true;
        self.writes.insert(spaced(space, key), None);
    }

    /// Adds a delivery to `notifier`'s outbox.
    ///
    /// # Errors
    /// When the store fails.
    pub fn enqueue(
        &mut self,
        notifier: NotifierName,
        notification: Notification,
    ) -> Result<(), InboxError> {
        self.enqueue_entry(notifier, OutboxEntry::new(notification))
    }

    fn enqueue_entry(
        &mut self,
        notifier: NotifierName,
        entry: OutboxEntry,
    ) -> Result<(), InboxError> {
        let seq = match &mut self.next_seq {
            Some(next) => {
                *next += 1;
                *next - 1
            }
            None => self.kv.next_id()?,
        };
        self.raw_put(outbox_key(&notifier, seq), encode(&entry));
        *self.added.entry(notifier.as_str().to_owned()).or_default() += 1;
        if !self.woken.contains(&notifier) {
            self.woken.push(notifier);
        }
        Ok(())
    }

    /// Records `envelopes` not seen inside `window_ms` of `now_ms`, with the deliveries `route`
    /// gives each. Duplicates are only counted.
    ///
    /// # Errors
    /// When the store or `route` fails.
    pub fn record(
        &mut self,
        envelopes: &[Envelope],
        now_ms: u64,
        window_ms: u64,
        mut route: impl FnMut(&Envelope, &mut Self) -> Result<(Deliveries, Routing), InboxError>,
    ) -> Result<Committed, InboxError> {
        let mut out = Committed::default();
        let now = now_ms.to_be_bytes();
        // Every id recorded, or found, at once: one round trip to a shared store.
        let mut fresh: Vec<Vec<u8>> = envelopes
            .iter()
            .map(|e| seen_key(&e.id).to_vec())
            .filter(|k| !self.writes.contains_key(k))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        let found = self.kv.get_or_insert_many(&fresh, &now)?;
        let before: HashMap<Vec<u8>, Option<Vec<u8>>> = fresh.into_iter().zip(found).collect();
        for (i, e) in envelopes.iter().enumerate() {
            let key = seen_key(&e.id);
            let seen_at = match self.writes.get(key.as_slice()) {
                Some(v) => v.clone(),
                // Not taken out: a second copy in this batch of an id already recorded is a
                // duplicate too (a first sighting is in `writes` by then).
                None => before.get(key.as_slice()).cloned().flatten(),
            };
            let seen_at = seen_at
                .and_then(|v| v.as_slice().try_into().ok())
                .map(u64::from_be_bytes);
            if let Some(first_ms) = seen_at.filter(|t| t.saturating_add(window_ms) >= now_ms) {
                out.duplicates += 1;
                self.trace_duplicate(e, first_ms, now_ms)?;
                continue;
            }
            if seen_at.is_none() {
                self.new_seen += 1;
            }
            self.raw_put(key.to_vec(), now.to_vec());
            let (deliveries, routing) = route(e, self)?;
            for (name, notification) in deliveries {
                // Digests of intervals this event closed are deliveries too, of events
                // without a trace.
                let entry = OutboxEntry {
                    recorded_ms: (notification.envelope.id == e.id).then_some(now_ms),
                    ..OutboxEntry::new(notification)
                };
                self.enqueue_entry(name, entry)?;
            }
            let step = Step::Received {
                at_ms: now_ms,
                edge: e.edge.clone(),
                site: e.site.clone(),
                edge_received_ms: e.received,
                remote: e.remote.clone(),
                signed: e.signed,
                what: crate::trace::summary(&e.event),
                routing,
            };
            self.raw_put(
                trace_key(now_ms, &e.id, self.kv.next_id()?).to_vec(),
                encode(&step),
            );
            out.new.push(i);
        }
        Ok(out)
    }

    /// Counts a duplicate in the id's one [`Step::Duplicates`] record, so resends cannot grow
    /// a trace without bound.
    fn trace_duplicate(
        &mut self,
        e: &Envelope,
        first_ms: u64,
        now_ms: u64,
    ) -> Result<(), InboxError> {
        let key = trace_key(first_ms, &e.id, DUPLICATES_STEP);
        let count = match self.raw_get(&key)?.map(|v| serde_json::from_slice(&v)) {
            Some(Ok(Step::Duplicates { count, .. })) => count,
            _ => 0,
        };
        let step = Step::Duplicates {
            count: count + 1,
            last_ms: now_ms,
            last_edge: e.edge.clone(),
        };
        self.trace_put(key.to_vec(), encode(&step));
        Ok(())
    }

    /// A number larger than any this store gave before (crash or not): to order records
    /// written in one millisecond.
    ///
    /// # Errors
    /// When the store fails.
    pub fn next_id(&self) -> Result<u64, InboxError> {
        self.kv.next_id()
    }

    /// Every record of `space` as stored before this transaction, in key order.
    ///
    /// # Errors
    /// When the store fails.
    pub fn scan(&self, space: Space) -> Result<Vec<Record>, InboxError> {
        scan(self.kv, space)
    }

    fn raw_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InboxError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.kv.get(key),
        }
    }

    fn raw_put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.durable = true;
        self.trace_put(key, value);
    }

    /// A write that may wait for the next fsync ([`Inbox::flush_behind`]): a trace's.
    fn trace_put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
}

fn scan(kv: &dyn Kv, space: Space) -> Result<Vec<Record>, InboxError> {
    Ok(unspaced(kv.scan_prefix(&[space as u8])?))
}

/// `records` with their keys' space prefix taken off.
fn unspaced(mut records: Vec<Record>) -> Vec<Record> {
    for (k, _) in &mut records {
        k.remove(0);
    }
    records
}

fn spaced(space: Space, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(space as u8);
    k.extend_from_slice(key);
    k
}

/// What a commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// Indices (into the committed slice) of events seen for the first time.
    pub new: Vec<usize>,
    /// Events already recorded inside the window.
    pub duplicates: u64,
    /// Notifiers that got new deliveries.
    pub woken: Vec<NotifierName>,
}

#[derive(Debug, Default)]
struct Counts {
    next_seq: u64,
    dead: u64,
    seen: u64,
}

/// Pending deliveries per notifier.
type Depths = BTreeMap<String, u64>;

/// Where the records are.
#[derive(Debug)]
enum Backend {
    /// redb, for one hub.
    Own(Database<Redb>),
    /// PostgreSQL, shared by hubs.
    Shared(Store),
}

/// The store. Every method blocks on disk: call from `spawn_blocking` in async code.
#[derive(Debug)]
pub struct Inbox {
    salt: String,
    backend: Backend,
    /// Locked while the database is, never before; held by a commit throughout, so commits
    /// take turns.
    counts: Mutex<Counts>,
    /// Locked after `counts`, if both, and only briefly: a delivery's end is counted without
    /// waiting for the commit running beside it.
    depths: Mutex<Depths>,
    /// Commits to the hub's own store, numbered as they begin to write: their deliveries can
    /// be read from then on, before they are durable.
    begun: AtomicU64,
    /// Every commit up to this number is durable, or lost to a reopening of the store.
    settled: watch::Sender<u64>,
}

/// When a delivery read its entries: see [`Inbox::settled`].
#[derive(Debug, Clone, Copy)]
pub struct ReadMark {
    begun: u64,
    opening: Option<u64>,
}

impl Inbox {
    /// Opens (or creates) the store in `dir`, keeping `reserve` bytes beside it for a full
    /// disk ([`Database`]).
    ///
    /// # Errors
    /// When the store cannot be opened, or an earlier build's sled inbox not carried over.
    pub fn open(dir: &Path, reserve: u64) -> Result<Self, InboxError> {
        crate::store::from_sled::carry_over(dir)?;
        let db = Database::open(dir, reserve, |dir| Redb::open(dir, CACHE_BYTES))?;
        Self::with(Backend::Own(db))
    }

    /// The store shared with other hubs.
    ///
    /// # Errors
    /// When the store fails.
    pub fn shared(store: Store) -> Result<Self, InboxError> {
        Self::with(Backend::Shared(store))
    }

    fn with(backend: Backend) -> Result<Self, InboxError> {
        let mut inbox = Self {
            backend,
            counts: Mutex::new(Counts::default()),
            depths: Mutex::new(Depths::new()),
            begun: AtomicU64::new(0),
            settled: watch::Sender::new(0),
            salt: String::new(),
        };
        // The first hub to start makes it; the others read it.
        let salt = inbox.run(|kv| {
            let mut s = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s)
                .map_err(|_| InboxError::Sync(std::io::Error::other("no randomness")))?;
            if let Some(s) = kv.get_or_insert(SALT, &s)? {
                return Ok(s);
            }
            let mut batch = Batch::default();
            batch.insert(SALT, s);
            kv.apply(batch)?;
            kv.sync()?;
            Ok(s.to_vec())
        })?;
        inbox.salt = warren_daemon::tls::hex(&salt);
        inbox.reload()?;
        Ok(inbox)
    }

    /// Counts what the store holds (again, after it was reopened: writes the failure lost
    /// are gone; or another hub's changes, in a shared store).
    pub fn reload(&self) -> Result<(), InboxError> {
        let (mut held, mut held_depths, (mut counts, depths)) = match &self.backend {
            // Both locked throughout (after the database, as everywhere), so nothing lands
            // between the scan and the new counts: a delivery that ends meanwhile is counted
            // after them, not lost under them.
            Backend::Own(db) => {
                let o = db.get()?;
                let (held, held_depths) = (self.lock(), self.depths());
                (held, held_depths, count(&*o)?)
            }
            // Locked only at the end: another hub's commit in between is counted next time.
            Backend::Shared(store) => {
                let counts = store.atomically(Reads::Plain, count)?;
                (self.lock(), self.depths(), counts)
            }
        };
        // Seqs only grow: a lost write may have handed one out.
        counts.next_seq = counts.next_seq.max(held.next_seq);
        *held = counts;
        *held_depths = depths;
        // No numbered write is under way while `counts` is held: what the store holds now is
        // what there is (after a reopening, deliveries read it again).
        self.settle(self.begun.load(Ordering::SeqCst));
        Ok(())
    }

    /// Runs `op` on the store, once more after a full disk reopened it.
    fn run<R>(&self, op: impl Fn(&dyn Kv) -> Result<R, InboxError>) -> Result<R, InboxError> {
        match &self.backend {
            Backend::Own(db) => db.run(|o| op(o), || self.reload()),
            Backend::Shared(store) => store.atomically(Reads::Plain, op),
        }
    }

    /// Since when the disk is full (new events are then refused), ms since the epoch.
    pub fn disk_full_since(&self) -> Option<u64> {
        match &self.backend {
            Backend::Own(db) => db.full_since(),
            Backend::Shared(_) => None,
        }
    }

    /// The local database, for [`warren_daemon::database::watch`]; none with a shared store.
    pub fn database(&self) -> Option<&Database<Redb>> {
        match &self.backend {
            Backend::Own(db) => Some(db),
            Backend::Shared(_) => None,
        }
    }

    /// The store shared with other hubs, if it is one.
    pub fn shared_store(&self) -> Option<&Store> {
        match &self.backend {
            Backend::Own(_) => None,
            Backend::Shared(store) => Some(store),
        }
    }

    /// A secret of this installation, kept in the inbox: the ids of events the hub makes
    /// itself (edge offline, back online) are derived with it, so that no edge can send an
    /// event with such an id ahead of time and have the hub's own alert dropped as its
    /// duplicate.
    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// Records `envelopes` not seen inside `window_ms` of `now_ms`, with the deliveries `route`
    /// gives each, and makes it all durable. Duplicates are only counted.
    ///
    /// # Errors
    /// When the store fails: nothing may then be acked.
    pub fn commit(
        &self,
        envelopes: &[Envelope],
        now_ms: u64,
        window_ms: u64,
        route: impl FnMut(&Envelope, &mut Tx<'_>) -> Result<(Deliveries, Routing), InboxError>,
    ) -> Result<Committed, InboxError> {
        let mut route = route;
        let (mut c, woken) =
            self.transact(|tx| tx.record(envelopes, now_ms, window_ms, &mut route))?;
        c.woken = woken;
        Ok(c)
    }

    /// Runs `f` on a transaction and makes what it wrote durable as one atomic batch (nothing
    /// is written if `f` fails). Returns its result and the notifiers it gave deliveries.
    ///
    /// # Errors
    /// When `f` or the store fails.
    pub fn transact<R>(
        &self,
        f: impl FnMut(&mut Tx<'_>) -> Result<R, InboxError>,
    ) -> Result<(R, Vec<NotifierName>), InboxError> {
        self.transact_waking(f, |_| {})
    }

    /// [`Inbox::transact`], calling `wake` with the notifiers given deliveries as soon as they
    /// can read them: in the hub's own store before the fsync, so a delivery reads its entries
    /// while it runs, and sends them once it is done ([`Inbox::settled`]); in a shared store
    /// once the transaction committed.
    ///
    /// # Errors
    /// When `f` or the store fails.
    pub fn transact_waking<R, W: FnOnce(&[NotifierName])>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<R, InboxError>,
        wake: W,
    ) -> Result<(R, Vec<NotifierName>), InboxError> {
        let db = match &self.backend {
            Backend::Shared(store) => {
                let done = store.atomically(Reads::Locking, |kv| {
                    self.transact_in(kv, &mut f, &mut None::<W>)
                })?;
                wake(&done.1);
                return Ok(done);
            }
            Backend::Own(db) => db,
        };
        if self.disk_full_since().is_some() {
            return Err(InboxError::DiskFull);
        }
        let mut wake = Some(wake);
        let mut stale = 0;
        let (error, generation) = loop {
            let (error, generation) = {
                let o = db.get()?;
                match self.transact_in(&*o, &mut f, &mut wake) {
                    Err(e) if e.is_storage_full() || (e.is_stale() && stale < STALE_RETRIES) => {
                        (e, o.generation())
                    }
                    done => return done,
                }
            };
            if !error.is_stale() {
                break (error, generation);
            }
            // Another call's failure left the handle unusable: that call handles the failure;
            // this transaction, whose events are not acked yet, runs again on a new handle.
            stale += 1;
            let reopened = db
                .reopen(generation, &error)
                .map_err(InboxError::from)
                .and_then(|()| self.reload());
            if let Err(error) = reopened {
                // Not acked, so not lost: the next commit tries again.
                tracing::error!(%error, "The inbox database could not be opened again yet.");
                return Err(if error.is_storage_full() {
                    InboxError::DiskFull
                } else {
                    error
                });
            }
        };
        // Nothing is acked whatever happens next: a database that cannot be opened again now
        // is tried again by the next call.
        let reopened = db
            .filled(generation, &error)
            .map_err(InboxError::from)
            .and_then(|_| self.reload());
        if let Err(error) = reopened {
            tracing::error!(%error, "The inbox database could not be opened again yet.");
        }
        // Once the opening that failed is gone (reopened, or to be by the next read), what the
        // store holds is what there is: deliveries read it again.
        if db.generation() != Some(generation) {
            self.settle(self.begun.load(Ordering::SeqCst));
        }
        Err(InboxError::DiskFull)
    }

    fn transact_in<R>(
        &self,
        kv: &dyn Kv,
        f: &mut impl FnMut(&mut Tx<'_>) -> Result<R, InboxError>,
        wake: &mut Option<impl FnOnce(&[NotifierName])>,
    ) -> Result<(R, Vec<NotifierName>), InboxError> {
        // One hub's commits take turns on the counts (and its outbox numbers). Hubs sharing a
        // store take turns on its rows instead: holding a lock of this process while waiting
        // for one of PostgreSQL's could only add waits.
        let mut counts = match self.backend {
            Backend::Own(_) => Some(self.lock()),
            Backend::Shared(_) => None,
        };
        let mut tx = Tx {
            kv,
            writes: BTreeMap::new(),
            next_seq: counts.as_ref().map(|c| c.next_seq),
            added: BTreeMap::new(),
            new_seen: 0,
            woken: Vec::new(),
            durable: false,
        };
        let r = f(&mut tx)?;
        let Tx {
            writes,
            next_seq,
            added,
            new_seen,
            woken,
            durable,
            ..
        } = tx;
        // Numbered before the write, so a delivery that reads its entries sees the number.
        let commit = self.begin();
        if !writes.is_empty() {
            kv.apply(writes.into_iter().collect())?;
        }
        if let Some(wake) = wake.take_if(|_| !woken.is_empty()) {
            wake(&woken);
        }
        if durable {
            kv.sync()?;
        }
        // In a shared store the transaction commits after this, and may be run again: what
        // it added is counted by the next reload. In the hub's own, it is counted before it
        // settles, so before any of it can be delivered.
        if let (Some(counts), Some(next), Some(commit)) = (&mut counts, next_seq, commit) {
            counts.next_seq = next;
            counts.seen += new_seen;
            for (name, n) in added {
                self.bump_outbox(&name, i64::try_from(n).unwrap_or(i64::MAX));
            }
            self.settle(commit);
        }
        Ok((r, woken))
    }

    /// Every record of `space`, in key order.
    ///
    /// # Errors
    /// When the store fails.
    pub fn scan(&self, space: Space) -> Result<Vec<Record>, InboxError> {
        self.run(|kv| scan(kv, space))
    }

    /// Up to `limit` records of `space` with keys before `before` (or the last ones), from
    /// the last back.
    ///
    /// # Errors
    /// When the store fails.
    pub fn scan_back(
        &self,
        space: Space,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, InboxError> {
        self.run(|kv| {
            let end = match before {
                Some(key) => spaced(space, key),
                None => vec![space as u8 + 1],
            };
            let records = kv.range(&[space as u8], Some(&end), Order::Backward, limit)?;
            Ok(unspaced(records))
        })
    }

    /// Removes the records of `space` with keys before `cutoff`, and the first ones beyond the
    /// last `keep`; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub fn trim_space(&self, space: Space, cutoff: &[u8], keep: u64) -> Result<u64, InboxError> {
        self.run(|kv| {
            let cutoff = spaced(space, cutoff);
            let mut batch = Batch::default();
            let mut n = 0;
            // From the last back: the first `keep` at or after the cutoff stay.
            let records = kv.range(
                &[space as u8],
                Some(&[space as u8 + 1]),
                Order::Backward,
                usize::MAX,
            )?;
            for (i, (key, _)) in records.into_iter().enumerate() {
                if i as u64 >= keep || key < cutoff {
                    batch.remove(key);
                    n += 1;
                }
            }
            kv.apply(batch)?;
            Ok(n)
        })
    }

    /// Records in `space`.
    pub fn count(&self, space: Space) -> u64 {
        self.run(|kv| kv.count(&[space as u8], Some(&[space as u8 + 1])))
            .unwrap_or(0)
    }

    /// Removes the records of `space` for which `expired` holds; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune_space(
        &self,
        space: Space,
        expired: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<u64, InboxError> {
        self.run(|kv| {
            let mut batch = Batch::default();
            let mut n = 0;
            for (k, v) in kv.scan_prefix(&[space as u8])? {
                if expired(&k[1..], &v) {
                    batch.remove(k);
                    n += 1;
                }
            }
            kv.apply(batch)?;
            Ok(n)
        })
    }

    /// The oldest pending delivery for `notifier`.
    ///
    /// # Errors
    /// When the store fails.
    pub fn next(&self, notifier: &NotifierName) -> Result<Option<(u64, OutboxEntry)>, InboxError> {
        Ok(self.next_batch(notifier, 1)?.pop())
    }

    /// The oldest `max` pending deliveries for `notifier`, oldest first.
    ///
    /// # Errors
    /// When the store fails.
    pub fn next_batch(
        &self,
        notifier: &NotifierName,
        max: usize,
    ) -> Result<Vec<(u64, OutboxEntry)>, InboxError> {
        loop {
            let (batch, skipped) = self.next_batch_once(notifier, max)?;
            // Those removed took places in the batch: look again (they are gone now).
            if !skipped || batch.len() >= max {
                return Ok(batch);
            }
        }
    }

    /// [`Inbox::next_batch`], and whether unreadable entries were removed on the way.
    fn next_batch_once(
        &self,
        notifier: &NotifierName,
        max: usize,
    ) -> Result<(Vec<(u64, OutboxEntry)>, bool), InboxError> {
        let prefix = outbox_prefix(notifier);
        let end = prefix_end(&prefix).unwrap_or_else(|| vec![OUTBOX + 1]);
        let records = match &self.backend {
            // Hubs sharing the store take turns by claim; the records are this hub's to
            // deliver until its lease is over.
            Backend::Shared(store) => store.claim(&prefix, &end, max)?,
            Backend::Own(_) => self.run(|kv| kv.range(&prefix, Some(&end), Order::Forward, max))?,
        };
        let mut batch = Vec::new();
        let mut unreadable = Vec::new();
        for (key, value) in records {
            let Some((_, seq)) = split_outbox_key(&key) else {
                continue;
            };
            match serde_json::from_slice(&value) {
                Ok(entry) => batch.push((seq, entry)),
                Err(error) => {
                    // Written by this code, so only disk damage gets here: drop it loudly.
                    tracing::error!(%notifier, seq, %error, "Unreadable outbox entry removed.");
                    unreadable.push(key);
                    self.bump_outbox(notifier.as_str(), -1);
                }
            }
        }
        // A write only when there is something to remove: none on the usual path.
        let skipped = !unreadable.is_empty();
        if skipped {
            self.run(|kv| {
                let mut gone = Batch::default();
                for key in &unreadable {
                    gone.remove(key.clone());
                }
                kv.apply(gone)
            })?;
        }
        Ok((batch, skipped))
    }

    /// [`Inbox::next_batch`], with the mark [`Inbox::settled`] takes.
    ///
    /// # Errors
    /// When the store fails.
    pub fn next_batch_marked(
        &self,
        notifier: &NotifierName,
        max: usize,
    ) -> Result<(Vec<(u64, OutboxEntry)>, ReadMark), InboxError> {
        let opening = self.opening();
        let batch = self.next_batch(notifier, max)?;
        let begun = self.begun.load(Ordering::SeqCst);
        Ok((batch, ReadMark { begun, opening }))
    }

    /// Waits until the commits a read marked `mark` may have seen are durable: a commit wakes
    /// its notifiers before its fsync ([`Inbox::transact_waking`]). False when the store was
    /// reopened since (a full disk), which may have lost what was read: read it again. A
    /// shared store's commits are durable before anyone reads them.
    pub async fn settled(&self, mark: ReadMark) -> bool {
        let mut settled = self.settled.subscribe();
        // Its sender is this inbox's own, so it cannot have gone.
        let _ = settled.wait_for(|&n| n >= mark.begun).await;
        self.opening() == mark.opening
    }

    /// Numbers a write to the hub's own store that adds deliveries, before it is applied: a
    /// delivery that reads them waits for [`Inbox::settle`]. Call it holding `counts`, so
    /// numbered writes take turns. A shared store's writes are durable before they are read.
    fn begin(&self) -> Option<u64> {
        matches!(self.backend, Backend::Own(_))
            .then(|| self.begun.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn settle(&self, commit: u64) {
        self.settled.send_if_modified(|n| {
            let later = commit > *n;
            *n = (*n).max(commit);
            later
        });
    }

    /// Which opening of the hub's own store is current.
    fn opening(&self) -> Option<u64> {
        match &self.backend {
            Backend::Own(db) => db.generation(),
            Backend::Shared(_) => None,
        }
    }

    /// A delivery of event `id` succeeded (`step` says when): forget it, durably, so a crash
    /// cannot repeat it.
    ///
    /// # Errors
    /// When the store fails.
    pub fn done(
        &self,
        notifier: &NotifierName,
        seq: u64,
        id: &EventId,
        step: &Step,
    ) -> Result<(), InboxError> {
        let done = Delivered {
            seq,
            id: *id,
            recorded_ms: None,
            step: step.clone(),
        };
        self.done_many(notifier, &[done])
    }

    /// Deliveries succeeded: forget them, and the notifier's
    /// write memo ([`Inbox::set_memo`]), in one durable write.
    ///
    /// # Errors
    /// When the store fails.
    pub fn done_many(&self, notifier: &NotifierName, done: &[Delivered]) -> Result<(), InboxError> {
        self.run(|kv| {
            let mut batch = Batch::default();
            // Each a round trip to a shared store: all at once.
            let keys: Vec<Vec<u8>> = done.iter().map(|d| outbox_key(notifier, d.seq)).collect();
            let queued = kv.get_many(&keys)?.iter().flatten().count();
            // Only entries an earlier build wrote come without the time their trace is under.
            let unknown: Vec<&Delivered> =
                done.iter().filter(|d| d.recorded_ms.is_none()).collect();
            let seen_keys: Vec<Vec<u8>> =
                unknown.iter().map(|d| seen_key(&d.id).to_vec()).collect();
            let mut seen: HashMap<EventId, u64> = HashMap::new();
            for (d, value) in unknown.iter().zip(kv.get_many(&seen_keys)?) {
                if let Some(ms) = value.and_then(|v| Some(u64::from_be_bytes(v.try_into().ok()?))) {
                    seen.insert(d.id, ms);
                }
            }
            for (key, d) in keys.into_iter().zip(done) {
                batch.remove(key);
                if let Some(ms) = d.recorded_ms.or_else(|| seen.get(&d.id).copied()) {
                    batch.insert(trace_key(ms, &d.id, kv.next_id()?), encode(&d.step));
                }
            }
            let queued = i64::try_from(queued).unwrap_or(i64::MAX);
            batch.remove(self.memo_key(notifier));
            kv.apply(batch)?;
            kv.sync()?;
            // Counted once durable, so an outbox shown empty is one a crash cannot refill.
            self.bump_outbox(notifier.as_str(), -queued);
            Ok(())
        })
    }

    /// Records, durably, what a notifier is about to write: a crash before
    /// [`Inbox::done_many`] leaves it for the next start to check ([`Inbox::memo`]).
    ///
    /// # Errors
    /// When the store fails.
    pub fn set_memo(&self, notifier: &NotifierName, memo: &[u8]) -> Result<(), InboxError> {
        self.run(|kv| {
            let mut batch = Batch::default();
            batch.insert(self.memo_key(notifier), memo);
            kv.apply(batch)?;
            kv.sync()
        })
    }

    /// The write memo a crash left for `notifier`, if any.
    ///
    /// # Errors
    /// When the store fails.
    pub fn memo(&self, notifier: &NotifierName) -> Result<Option<Vec<u8>>, InboxError> {
        self.run(|kv| kv.get(&self.memo_key(notifier)))
    }

    /// Forgets `notifier`'s write memo (its write did not land).
    ///
    /// # Errors
    /// When the store fails.
    pub fn clear_memo(&self, notifier: &NotifierName) -> Result<(), InboxError> {
        self.run(|kv| {
            let mut batch = Batch::default();
            batch.remove(self.memo_key(notifier));
            kv.apply(batch)
        })
    }

    /// Records a failed attempt that will be retried in `retry_in`, and its trace `step`.
    /// In a shared store the delivery stays this hub's until then, so other hubs keep to its
    /// backoff.
    ///
    /// # Errors
    /// When the store fails.
    pub fn retry(
        &self,
        notifier: &NotifierName,
        seq: u64,
        entry: &OutboxEntry,
        step: &Step,
        retry_in: Duration,
    ) -> Result<(), InboxError> {
        self.run(|kv| {
            let key = outbox_key(notifier, seq);
            if !kv.holds(&key)? {
                tracing::info!(%notifier, seq, "Another hub took this delivery over.");
                return Ok(());
            }
            let mut batch = Batch::default();
            batch.insert(key.clone(), encode(entry));
            Self::trace(kv, &mut batch, entry, step)?;
            kv.apply(batch)?;
            kv.hold(
                &key,
                u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            )
        })
    }

    /// Adds an attempt's `step` to its event's trace in `batch`, if the event still has one
    /// (it is gone once the dedup window forgets the id; a digest never had one).
    fn trace(
        kv: &dyn Kv,
        batch: &mut Batch,
        entry: &OutboxEntry,
        step: &Step,
    ) -> Result<(), InboxError> {
        let id = &entry.notification.envelope.id;
        let recorded = match entry.recorded_ms {
            Some(ms) => Some(ms),
            None => seen_ms(kv, id)?,
        };
        if let Some(ms) = recorded {
            batch.insert(trace_key(ms, id, kv.next_id()?), encode(step));
        }
        Ok(())
    }

    /// The trace of event `id`, if the hub has one.
    ///
    /// # Errors
    /// When the store fails.
    pub fn trace_of(&self, id: &EventId) -> Result<Option<Trace>, InboxError> {
        self.run(|kv| {
            let Some(ms) = seen_ms(kv, id)? else {
                return Ok(None);
            };
            let mut steps = Vec::new();
            for (_, value) in kv.scan_prefix(&trace_prefix(ms, id))? {
                match serde_json::from_slice(&value) {
                    Ok(step) => steps.push(step),
                    Err(error) => tracing::warn!(%id, %error, "Unreadable trace step skipped."),
                }
            }
            Ok((!steps.is_empty()).then_some(Trace { id: *id, steps }))
        })
    }

    /// Moves a delivery to the dead letters and, if `fallback` is given, hands it to that
    /// notifier in the same atomic batch (so it falls back exactly once, crash or not).
    ///
    /// # Errors
    /// When the store fails.
    pub fn give_up(
        &self,
        notifier: &NotifierName,
        seq: u64,
        entry: &OutboxEntry,
        error: &str,
        now_ms: u64,
        fallback: Option<&NotifierName>,
    ) -> Result<(), InboxError> {
        self.run(|kv| {
            let dead = DeadRecord {
                letter: DeadLetter {
                    seq,
                    notifier: notifier.to_string(),
                    id: entry.notification.envelope.id,
                    title: entry.notification.title.clone(),
                    attempts: entry.attempts,
                    error: error.to_owned(),
                    at_ms: now_ms,
                },
                notification: Some(entry.notification.clone()),
            };
            if !kv.holds(&outbox_key(notifier, seq))? {
                tracing::info!(%notifier, seq, "Another hub took this delivery over.");
                return Ok(());
            }
            let mut counts = self.lock();
            // Run again after a full disk reopened the store, it may find its first write landed:
            // then the fallback is handed over already, and must not be twice.
            if !kv.contains_key(&outbox_key(notifier, seq))? && kv.contains_key(&dead_key(seq))? {
                return Ok(());
            }
            let mut batch = Batch::default();
            batch.remove(outbox_key(notifier, seq));
            batch.insert(dead_key(seq), encode(&dead));
            let step = Step::attempt(
                notifier,
                now_ms,
                entry.attempts,
                AttemptResult::DeadLetter {
                    error: error.to_owned(),
                    fallback: fallback.map(ToString::to_string),
                },
            );
            Self::trace(kv, &mut batch, entry, &step)?;
            let fallback_seq = match self.backend {
                Backend::Own(_) => counts.next_seq,
                Backend::Shared(_) => kv.next_id()?,
            };
            if let Some(to) = fallback {
                let handed = OutboxEntry {
                    fallback_of: Some(notifier.to_string()),
                    recorded_ms: entry.recorded_ms,
                    ..OutboxEntry::new(entry.notification.clone())
                };
                batch.insert(outbox_key(to, fallback_seq), encode(&handed));
            }
            let handing = fallback.and_then(|_| self.begin());
            kv.apply(batch)?;
            if let Some(to) = fallback {
                // The fallback must not be lost to a crash that keeps the dead letter.
                kv.sync()?;
                counts.next_seq += 1;
                self.bump_outbox(to.as_str(), 1);
            }
            if let Some(handing) = handing {
                self.settle(handing);
            }
            counts.dead += 1;
            drop(counts);
            self.bump_outbox(notifier.as_str(), -1);
            Ok(())
        })
    }

    /// The newest `limit` dead letters, newest first.
    ///
    /// # Errors
    /// When the store fails.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, InboxError> {
        self.run(|kv| {
            let mut out = Vec::new();
            for (key, value) in kv.range(&[DEAD], Some(&[DEAD + 1]), Order::Backward, limit)? {
                if let Ok(mut d) = serde_json::from_slice::<DeadRecord>(&value) {
                    d.letter.seq = dead_seq(&key).unwrap_or_default();
                    out.push(d.letter);
                }
            }
            Ok(out)
        })
    }

    /// Puts the selected dead letters back in their notifiers' outboxes, as new deliveries
    /// (their attempts and retry budget start again). Those of notifiers not in `known`, or
    /// kept by an older version without their notification, stay. Returns the notifiers to
    /// wake, and how many were put back.
    ///
    /// # Errors
    /// When the store fails.
    pub fn retry_dead(
        &self,
        which: &Selection,
        known: &[NotifierName],
    ) -> Result<(Vec<NotifierName>, u64), InboxError> {
        self.run(|kv| {
            let mut batch = Batch::default();
            let mut woken: Vec<NotifierName> = Vec::new();
            let mut moved: Vec<NotifierName> = Vec::new();
            for (key, value) in kv.scan_prefix(&[DEAD])? {
                let Ok(mut d) = serde_json::from_slice::<DeadRecord>(&value) else {
                    continue;
                };
                d.letter.seq = dead_seq(&key).unwrap_or_default();
                let Some(name) = known.iter().find(|n| n.as_str() == d.letter.notifier) else {
                    continue;
                };
                let Some(notification) = d.notification.filter(|_| which.wants(&d.letter)) else {
                    continue;
                };
                batch.remove(key);
                batch.insert(
                    outbox_key(name, d.letter.seq),
                    encode(&OutboxEntry::new(notification)),
                );
                if !woken.contains(name) {
                    woken.push(name.clone());
                }
                moved.push(name.clone());
            }
            // Held through the write, so it takes its turn among the numbered ones.
            let mut counts = self.lock();
            let putting = self.begin();
            kv.apply(batch)?;
            kv.sync()?;
            let n = moved.len() as u64;
            for name in &moved {
                self.bump_outbox(name.as_str(), 1);
            }
            if let Some(putting) = putting {
                self.settle(putting);
            }
            counts.dead = counts.dead.saturating_sub(n);
            Ok((woken, n))
        })
    }

    /// Forgets the selected dead letters; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub fn drop_dead(&self, which: &Selection) -> Result<u64, InboxError> {
        self.remove_dead(|d| which.wants(d))
    }

    /// Forgets dead letters given up before `before_ms`; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune_dead(&self, before_ms: u64) -> Result<u64, InboxError> {
        self.remove_dead(|d| d.at_ms < before_ms)
    }

    fn remove_dead(&self, doomed: impl Fn(&DeadLetter) -> bool) -> Result<u64, InboxError> {
        self.run(|kv| {
            let mut batch = Batch::default();
            let mut n = 0;
            for (key, value) in kv.scan_prefix(&[DEAD])? {
                let letter = serde_json::from_slice::<DeadRecord>(&value).map(|mut d| {
                    d.letter.seq = dead_seq(&key).unwrap_or_default();
                    d.letter
                });
                // An unreadable one can only be disk damage: it goes too.
                if letter.as_ref().is_ok_and(|d| !doomed(d)) {
                    continue;
                }
                batch.remove(key);
                n += 1;
            }
            kv.apply(batch)?;
            let mut counts = self.lock();
            counts.dead = counts.dead.saturating_sub(n);
            Ok(n)
        })
    }

    /// Forgets ids recorded before `before_ms`, and their traces; returns how many ids.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune(&self, before_ms: u64) -> Result<u64, InboxError> {
        self.run(|kv| {
            // Held throughout, so no commit can see an id again between the check and the removal.
            let mut counts = self.lock();
            let mut batch = Batch::default();
            let mut n = 0;
            // Every recorded id has a trace under the time it was recorded, so the traces in
            // time order find the ids to forget. An inbox written before that also has `t`
            // records (time + id, empty), read the same way until the last one is gone.
            let zero = EventId::from_bytes([0; 16]);
            let traces = kv.keys(&[TRACE], Some(&trace_prefix(before_ms, &zero)))?;
            let legacy = kv.keys(&[SEEN_BY_TIME], Some(&time_key(before_ms, &zero)))?;
            let mut checked = std::collections::HashSet::new();
            for key in traces.into_iter().chain(legacy) {
                let recorded = key.get(1..25).and_then(|b| {
                    let ms = u64::from_be_bytes(b[..8].try_into().ok()?);
                    Some((ms, EventId::from_bytes(b[8..].try_into().ok()?)))
                });
                if let Some((ms, id)) = recorded.filter(|r| checked.insert(*r)) {
                    // The id may have been seen again (after the window) under a later time.
                    if seen_ms(kv, &id)? == Some(ms) {
                        batch.remove(seen_key(&id));
                        n += 1;
                    }
                }
                batch.remove(key);
            }
            kv.apply(batch)?;
            counts.seen = counts.seen.saturating_sub(n);
            Ok(n)
        })
    }

    /// Forgets ids recorded before `before_ms` by reading every id's record: the ones
    /// [`Inbox::prune`] cannot find, whose traces an earlier build's prune removed without
    /// them (after a downgrade, or beside such a hub on a shared store). Returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune_untraced(&self, before_ms: u64) -> Result<u64, InboxError> {
        let expired = |value: Option<&[u8]>| {
            value
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .is_some_and(|v| u64::from_be_bytes(v) < before_ms)
        };
        // Read without the lock commits take, so a long read holds up no event; what it
        // found is read again under the lock.
        let found: Vec<Vec<u8>> = self.run(|kv| {
            let records = kv.range(&[SEEN], Some(&[SEEN + 1]), Order::Forward, usize::MAX)?;
            Ok(records
                .into_iter()
                .filter(|(_, value)| expired(Some(value)))
                .map(|(key, _)| key)
                .collect())
        })?;
        if found.is_empty() {
            return Ok(0);
        }
        self.run(|kv| {
            let mut counts = self.lock();
            let mut batch = Batch::default();
            let mut n = 0;
            for (key, value) in found.iter().zip(kv.get_many(&found)?) {
                if expired(value.as_deref()) {
                    batch.remove(key.clone());
                    n += 1;
                }
            }
            kv.apply(batch)?;
            counts.seen = counts.seen.saturating_sub(n);
            Ok(n)
        })
    }

    /// Pending deliveries per notifier.
    pub fn outbox_depths(&self) -> BTreeMap<String, u64> {
        self.depths().clone()
    }

    /// Dead letters held.
    pub fn dead_count(&self) -> u64 {
        self.lock().dead
    }

    /// Ids remembered for dedup.
    pub fn seen_count(&self) -> u64 {
        self.lock().seen
    }

    /// Flushes and fsyncs everything (shutdown). A hub sharing its store gives back the
    /// deliveries it has claimed, so that the others need not wait for the claims to run out.
    ///
    /// # Errors
    /// When the store fails.
    pub fn flush(&self) -> Result<(), InboxError> {
        match &self.backend {
            Backend::Own(_) => self.run(|kv| kv.sync()),
            Backend::Shared(store) => store.release(),
        }
    }

    /// In the hub's own store, every [`FLUSH_EVERY`] until `stop`: makes durable what was
    /// written since the last fsync and had no fsync of its own (while the disk has room).
    pub async fn flush_behind(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let inbox = self.clone();
            match tokio::task::spawn_blocking(move || inbox.flush_unsynced()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "Could not flush the inbox."),
                Err(error) => tracing::error!(%error, "Inbox flush task failed."),
            }
        }
    }

    fn flush_unsynced(&self) -> Result<(), InboxError> {
        let Backend::Own(db) = &self.backend else {
            return Ok(());
        };
        if db.full_since().is_some() || !db.get()?.db.unsynced() {
            return Ok(());
        }
        self.flush()
    }

    /// In a shared store, every [`HEARTBEAT`] until `stop`: writes this hub's heartbeat and
    /// reads the other hubs'; every [`RECOUNT_EVERY`] beats it counts the outbox, the dead
    /// letters and the ids again (other hubs change them).
    pub async fn keep_in_touch(self: Arc<Self>, stop: CancellationToken) {
        if self.shared_store().is_none() {
            return;
        }
        let mut tick = tokio::time::interval(HEARTBEAT);
        for beat in 0_u64.. {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let inbox = self.clone();
            let beat = tokio::task::spawn_blocking(move || {
                if let Some(store) = inbox.shared_store() {
                    store.heartbeat()?;
                }
                // Counting reads every id in the dedup window: not at every beat.
                match beat % RECOUNT_EVERY {
                    0 => inbox.reload(),
                    _ => Ok(()),
                }
            });
            match beat.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "Could not reach the shared store."),
                Err(error) => tracing::error!(%error, "Heartbeat task failed."),
            }
        }
    }

    /// Forgets, every [`PRUNE_EVERY`] until `stop`, the ids recorded longer than `window`
    /// ago, the dead letters older than `keep_dead`, and the sources not seen for `known`'s
    /// time.
    pub async fn prune_expired(
        self: Arc<Self>,
        window: Duration,
        keep_dead: Duration,
        known: KnownSourcesConfig,
        recent: crate::recent::Retention,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        let ago = |d: Duration| {
            crate::clock::window_ms()
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        // Once per start, the ids no trace leads to.
        let mut sweep = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            crate::clock::settle(window.max(keep_dead));
            let (ids_before, dead_before) = (ago(window), ago(keep_dead));
            let (inbox, known) = (self.clone(), known.clone());
            if sweep {
                let inbox = self.clone();
                match tokio::task::spawn_blocking(move || inbox.prune_untraced(ids_before)).await {
                    Ok(Ok(n)) => {
                        sweep = false;
                        if n > 0 {
                            tracing::info!(ids = n, "Forgot expired ids no trace led to.");
                        }
                    }
                    Ok(Err(error)) => tracing::error!(%error, "Sweeping expired ids failed."),
                    Err(error) => tracing::error!(%error, "Sweeping task failed."),
                }
            }
            let pruned = tokio::task::spawn_blocking(move || {
                Ok::<_, InboxError>((
                    inbox.prune(ids_before)?,
                    inbox.prune_dead(dead_before)?,
                    known.prune(&inbox, crate::clock::window_ms())?,
                    recent.prune(&inbox, crate::clock::window_ms())?,
                ))
            });
            match pruned.await {
                Ok(Ok((0, 0, 0, 0))) => {}
                Ok(Ok((ids, dead, sources, events))) => {
                    tracing::debug!(
                        ids,
                        dead_letters = dead,
                        sources,
                        events,
                        "Pruned expired records."
                    );
                }
                Ok(Err(error)) => tracing::error!(%error, "Pruning expired records failed."),
                Err(error) => tracing::error!(%error, "Pruning task failed."),
            }
        }
    }

    /// Where `notifier`'s write memo is kept: a file is this hub's own, so in a shared store
    /// each hub has its own memo.
    fn memo_key(&self, notifier: &NotifierName) -> Vec<u8> {
        let mut k = vec![MEMO];
        k.extend_from_slice(notifier.as_str().as_bytes());
        if let Backend::Shared(store) = &self.backend {
            k.push(0);
            k.extend_from_slice(store.name().as_bytes());
        }
        k
    }

    fn bump_outbox(&self, notifier: &str, delta: i64) {
        // Other hubs change a shared store's outbox too: it is counted by the next reload.
        if self.shared_store().is_some() {
            return;
        }
        let mut depths = self.depths();
        let n = depths.entry(notifier.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
    }

    fn depths(&self) -> std::sync::MutexGuard<'_, Depths> {
        self.depths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When event `id` was recorded, if it is inside the dedup window.
fn seen_ms(kv: &dyn Kv, id: &EventId) -> Result<Option<u64>, InboxError> {
    Ok(kv
        .get(&seen_key(id))?
        .and_then(|v| v.as_slice().try_into().ok())
        .map(u64::from_be_bytes))
}

/// What the store holds: dead letters, ids, the next seq; and deliveries per notifier.
fn count(kv: &dyn Kv) -> Result<(Counts, Depths), InboxError> {
    let mut counts = Counts::default();
    let mut depths = Depths::new();
    for key in kv.keys(&[OUTBOX], Some(&[OUTBOX + 1]))? {
        if let Some((name, seq)) = split_outbox_key(&key) {
            *depths.entry(name.to_owned()).or_default() += 1;
            counts.next_seq = counts.next_seq.max(seq + 1);
        }
    }
    let dead = kv.keys(&[DEAD], Some(&[DEAD + 1]))?;
    counts.dead = dead.len() as u64;
    for key in dead {
        if let Some(seq) = dead_seq(&key) {
            counts.next_seq = counts.next_seq.max(seq + 1);
        }
    }
    counts.seen = kv.count(&[SEEN], Some(&[SEEN + 1]))?;
    Ok((counts, depths))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Only this crate's own types, which always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

fn trace_prefix(ms: u64, id: &EventId) -> [u8; 25] {
    let mut k = [TRACE; 25];
    k[1..9].copy_from_slice(&ms.to_be_bytes());
    k[9..].copy_from_slice(id.as_bytes());
    k
}

fn trace_key(ms: u64, id: &EventId, step: u64) -> [u8; 33] {
    let mut k = [TRACE; 33];
    k[..25].copy_from_slice(&trace_prefix(ms, id));
    k[25..].copy_from_slice(&step.to_be_bytes());
    k
}

fn seen_key(id: &EventId) -> [u8; 17] {
    let mut k = [SEEN; 17];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

fn time_key(ms: u64, id: &EventId) -> [u8; 25] {
    let mut k = [SEEN_BY_TIME; 25];
    k[1..9].copy_from_slice(&ms.to_be_bytes());
    k[9..].copy_from_slice(id.as_bytes());
    k
}

fn outbox_prefix(notifier: &NotifierName) -> Vec<u8> {
    let mut k = vec![OUTBOX];
    k.extend_from_slice(notifier.as_str().as_bytes());
    k.push(0);
    k
}

fn outbox_key(notifier: &NotifierName, seq: u64) -> Vec<u8> {
    let mut k = outbox_prefix(notifier);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn split_outbox_key(key: &[u8]) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(&[OUTBOX])?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let seq = u64::from_be_bytes(rest.get(nul + 1..nul + 9)?.try_into().ok()?);
    Some((std::str::from_utf8(&rest[..nul]).ok()?, seq))
}

fn dead_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

fn dead_key(seq: u64) -> [u8; 9] {
    let mut k = [DEAD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::notification;

    fn open(dir: &Path) -> Inbox {
        Inbox::open(dir, 0).unwrap()
    }

    fn name(s: &str) -> NotifierName {
        NotifierName::try_from(s.to_owned()).unwrap()
    }

    fn route_to(
        names: &'static [&'static str],
    ) -> impl FnMut(&Envelope, &mut Tx<'_>) -> Result<(Deliveries, Routing), InboxError> {
        move |e, _| {
            let deliveries = names
                .iter()
                .map(|n| {
                    (
                        name(n),
                        Notification {
                            envelope: e.clone(),
                            ..notification("x")
                        },
                    )
                })
                .collect();
            Ok((deliveries, Routing::default()))
        }
    }

    fn steps(inbox: &Inbox, id: &EventId) -> Vec<Step> {
        inbox
            .trace_of(id)
            .unwrap()
            .map(|t| t.steps)
            .unwrap_or_default()
    }

    #[test]
    fn dedup_within_the_window_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = notification("a").envelope;
        let b = notification("b").envelope;
        {
            let inbox = open(dir.path());
            let c = inbox
                .commit(
                    &[a.clone(), a.clone(), b.clone()],
                    1000,
                    500,
                    route_to(&["f"]),
                )
                .unwrap();
            assert_eq!((c.new, c.duplicates), (vec![0, 2], 1));
            assert_eq!(inbox.outbox_depths()["f"], 2);
        }
        let inbox = open(dir.path());
        assert_eq!(inbox.outbox_depths()["f"], 2, "outbox survives a restart");
        // An edge's resend beside the original in one batch: both duplicates.
        let c = inbox
            .commit(&[a.clone(), a.clone()], 1400, 500, route_to(&["f"]))
            .unwrap();
        assert_eq!(
            (c.new, c.duplicates),
            (vec![], 2),
            "inside the window, across a restart"
        );
        assert_eq!(inbox.outbox_depths()["f"], 2, "nothing new to deliver");
        let a_steps = steps(&inbox, &a.id);
        assert!(
            matches!(
                a_steps.as_slice(),
                [
                    Step::Received { at_ms: 1000, .. },
                    Step::Duplicates {
                        count: 3,
                        last_ms: 1400,
                        ..
                    }
                ]
            ),
            "{a_steps:?}"
        );
        let c = inbox
            .commit(std::slice::from_ref(&a), 1600, 500, route_to(&["f"]))
            .unwrap();
        assert_eq!(c.new, [0], "past the window the id is new again");
        let a_steps = steps(&inbox, &a.id);
        assert!(
            matches!(a_steps.as_slice(), [Step::Received { at_ms: 1600, .. }]),
            "a new trace: {a_steps:?}"
        );
        assert_eq!(inbox.prune(1500).unwrap(), 1, "b was seen at 1000");
        assert_eq!(inbox.seen_count(), 1);
        assert!(inbox.trace_of(&b.id).unwrap().is_none(), "forgotten with b");
        assert_eq!(
            inbox
                .run(|kv| kv.scan_prefix(&trace_prefix(1000, &a.id)))
                .unwrap()
                .len(),
            0,
            "a's first trace is gone too"
        );
        assert_eq!(steps(&inbox, &a.id).len(), 1, "a's second trace stays");
    }

    #[test]
    fn ids_an_earlier_build_recorded_by_time_are_pruned_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (notification("a").envelope, notification("b").envelope);
        {
            let inbox = open(dir.path());
            inbox
                .commit(std::slice::from_ref(&a), 1000, 500, route_to(&[]))
                .unwrap();
            // What an earlier build wrote: a time record beside a's trace, and b with no
            // trace at all.
            inbox
                .run(|kv| {
                    let mut batch = Batch::default();
                    batch.insert(time_key(1000, &a.id).to_vec(), Vec::new());
                    batch.insert(seen_key(&b.id).to_vec(), 1000u64.to_be_bytes().to_vec());
                    batch.insert(time_key(1000, &b.id).to_vec(), Vec::new());
                    kv.apply(batch)
                })
                .unwrap();
        }
        let inbox = open(dir.path());
        assert_eq!(inbox.seen_count(), 2);
        assert_eq!(inbox.prune(1500).unwrap(), 2, "each id counted once");
        assert_eq!(inbox.seen_count(), 0);
        let left = inbox
            .run(|kv| Ok(kv.keys(&[SEEN], Some(&[TRACE + 1]))?.len()))
            .unwrap();
        assert_eq!(left, 0, "no id, time record or trace left");
    }

    #[test]
    fn ids_whose_traces_went_without_them_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let (a, b) = (notification("a").envelope, notification("b").envelope);
        inbox
            .commit(std::slice::from_ref(&a), 1000, 500, route_to(&[]))
            .unwrap();
        inbox
            .commit(std::slice::from_ref(&b), 2000, 500, route_to(&[]))
            .unwrap();
        // What an earlier build's prune leaves of a: its id, without its trace.
        inbox
            .run(|kv| {
                let mut batch = Batch::default();
                for key in kv.keys(&trace_prefix(1000, &a.id), Some(&trace_prefix(1001, &a.id)))? {
                    batch.remove(key);
                }
                kv.apply(batch)
            })
            .unwrap();
        assert_eq!(inbox.prune(1500).unwrap(), 0, "no trace leads to a");
        assert_eq!(inbox.prune_untraced(1500).unwrap(), 1);
        assert_eq!(inbox.seen_count(), 1, "b stays");
        assert!(inbox.trace_of(&b.id).unwrap().is_some());
    }

    #[test]
    fn notifiers_are_woken_once_their_deliveries_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let env = notification("a").envelope;
        let mut woken = Vec::new();
        inbox
            .transact_waking(
                |tx| tx.record(std::slice::from_ref(&env), 1000, 500, route_to(&["f", "g"])),
                |names| {
                    for n in names {
                        woken.push((n.to_string(), inbox.next_batch(n, 10).unwrap().len()));
                    }
                },
            )
            .unwrap();
        woken.sort();
        let want = [("f".to_owned(), 1), ("g".to_owned(), 1)];
        assert_eq!(woken, want, "each woken with its delivery readable");
        let mut again = false;
        inbox
            .transact_waking(
                |tx| tx.record(std::slice::from_ref(&env), 1001, 500, route_to(&["f"])),
                |_| again = true,
            )
            .unwrap();
        assert!(!again, "a duplicate wakes no one");
    }

    #[tokio::test]
    async fn deliveries_read_during_their_commit_wait_until_it_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let f = name("f");
        let env = notification("a").envelope;
        let mut read = None;
        inbox
            .transact_waking(
                |tx| tx.record(std::slice::from_ref(&env), 1000, 500, route_to(&["f"])),
                |_| {
                    let (entries, mark) = inbox.next_batch_marked(&f, 10).unwrap();
                    let settled = *inbox.settled.borrow() >= mark.begun;
                    read = Some((entries.len(), settled, mark));
                },
            )
            .unwrap();
        let (entries, settled, mark) = read.unwrap();
        assert_eq!(entries, 1, "readable when woken");
        assert!(!settled, "not to be sent before the commit's fsync");
        let soon = |mark| tokio::time::timeout(Duration::from_secs(5), inbox.settled(mark));
        assert_eq!(soon(mark).await, Ok(true), "sent once it is durable");
        // A read with nothing being written need not wait.
        let (_, idle) = inbox.next_batch_marked(&f, 10).unwrap();
        assert_eq!(soon(idle).await, Ok(true));
    }

    #[test]
    fn a_delivery_is_traced_under_the_time_its_entry_carries() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let f = name("f");
        let env = notification("a").envelope;
        inbox
            .commit(std::slice::from_ref(&env), 1000, 500, route_to(&["f"]))
            .unwrap();
        let (seq, entry) = inbox.next(&f).unwrap().unwrap();
        assert_eq!(
            entry.recorded_ms,
            Some(1000),
            "no read of the id's record needed"
        );
        let step = Step::attempt(&f, 1001, 1, AttemptResult::Delivered);
        let done = |recorded_ms| Delivered {
            seq,
            id: env.id,
            recorded_ms,
            step: step.clone(),
        };
        inbox.done_many(&f, &[done(entry.recorded_ms)]).unwrap();
        // An entry an earlier build wrote carries no time: the id's record gives it.
        inbox.done_many(&f, &[done(None)]).unwrap();
        let steps = inbox.trace_of(&env.id).unwrap().unwrap().steps;
        assert_eq!(steps.iter().filter(|s| **s == step).count(), 2, "{steps:?}");
        assert!(inbox.next(&f).unwrap().is_none());
    }

    #[test]
    fn deliveries_in_order_retry_and_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let (f, w) = (name("f"), name("w"));
        let envs = [notification("a").envelope, notification("b").envelope];
        inbox.commit(&envs, 1, 10, route_to(&["f", "w"])).unwrap();
        let (seq, mut entry) = inbox.next(&f).unwrap().unwrap();
        assert_eq!(entry.notification.envelope.event.get_str("user"), Some("a"));
        entry.attempts = 1;
        entry.last_error = Some("503".into());
        let id = entry.notification.envelope.id;
        let failed = Step::Attempt {
            at_ms: 2,
            notifier: "f".into(),
            attempt: 1,
            result: AttemptResult::Failed {
                error: "503".into(),
                retry_in_ms: 100,
            },
        };
        inbox
            .retry(&f, seq, &entry, &failed, Duration::ZERO)
            .unwrap();
        assert_eq!(inbox.next(&f).unwrap().unwrap().1.attempts, 1);
        let delivered = Step::Attempt {
            at_ms: 3,
            notifier: "f".into(),
            attempt: 2,
            result: AttemptResult::Delivered,
        };
        inbox.done(&f, seq, &id, &delivered).unwrap();
        assert_eq!(
            inbox
                .next(&f)
                .unwrap()
                .unwrap()
                .1
                .notification
                .envelope
                .event
                .get_str("user"),
            Some("b")
        );
        let (seq, entry) = inbox.next(&w).unwrap().unwrap();
        inbox.give_up(&w, seq, &entry, "HTTP 400", 5, None).unwrap();
        let a = steps(&inbox, &id);
        assert!(matches!(a[0], Step::Received { .. }), "{a:?}");
        assert_eq!(a[1..3], [failed, delivered]);
        assert!(
            matches!(&a[3], Step::Attempt { notifier, result: AttemptResult::DeadLetter { error, .. }, .. } if notifier == "w" && error == "HTTP 400"),
            "{a:?}"
        );
        assert_eq!(inbox.dead_count(), 1);
        assert_eq!(inbox.dead_letters(10).unwrap()[0].error, "HTTP 400");
        assert_eq!(
            inbox.outbox_depths(),
            BTreeMap::from([("f".into(), 1), ("w".into(), 1)])
        );
    }

    #[test]
    fn fallback_retry_and_drop_of_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let (f, w, mail) = (name("f"), name("w"), name("mail"));
        {
            let inbox = open(dir.path());
            let envs = [notification("a").envelope, notification("b").envelope];
            inbox.commit(&envs, 1, 10, route_to(&["f"])).unwrap();
            let (seq, entry) = inbox.next(&f).unwrap().unwrap();
            inbox
                .give_up(&f, seq, &entry, "HTTP 401", 5, Some(&mail))
                .unwrap();
            let (_, handed) = inbox.next(&mail).unwrap().unwrap();
            assert_eq!(handed.fallback_of.as_deref(), Some("f"));
            assert_eq!(handed.notification, entry.notification);
            let (seq, entry) = inbox.next(&f).unwrap().unwrap();
            inbox.give_up(&f, seq, &entry, "HTTP 401", 6, None).unwrap();
        }
        let inbox = open(dir.path());
        assert_eq!(
            inbox.outbox_depths()["mail"],
            1,
            "the fallback survives a restart"
        );
        let dead = inbox.dead_letters(10).unwrap();
        assert_eq!(dead.len(), 2);
        let (newest, oldest) = (dead[0].seq, dead[1].seq);
        assert_ne!(newest, oldest);
        let (woken, n) = inbox
            .retry_dead(&Selection::Seqs(vec![oldest]), std::slice::from_ref(&w))
            .unwrap();
        assert_eq!((woken.len(), n), (0, 0), "f is no longer configured");
        let (woken, n) = inbox
            .retry_dead(&Selection::Seqs(vec![oldest]), std::slice::from_ref(&f))
            .unwrap();
        assert_eq!((woken, n), (vec![f.clone()], 1));
        let (_, again) = inbox.next(&f).unwrap().unwrap();
        assert_eq!(again.attempts, 0);
        assert_eq!(again.notification.envelope.event.get_str("user"), Some("a"));
        assert_eq!(inbox.dead_count(), 1);
        assert_eq!(inbox.prune_dead(6).unwrap(), 0, "given up at 6, kept");
        assert_eq!(
            inbox.drop_dead(&Selection::All(Some("f".into()))).unwrap(),
            1
        );
        assert_eq!(
            (inbox.dead_count(), inbox.dead_letters(10).unwrap().len()),
            (0, 0)
        );
    }
}
