//! The store several hubs share: PostgreSQL.
//!
//! The records are the inbox's own keys and values, in one table (`warren_kv`, bytea keys,
//! which PostgreSQL orders byte by byte as sled does). What one hub alone gets from holding a
//! lock, hubs sharing the store get from PostgreSQL's row locks, at READ COMMITTED:
//! - an event id is recorded with one `INSERT … ON CONFLICT DO NOTHING`
//!   ([`Kv::get_or_insert`]): of two hubs recording the same id, the second waits for the
//!   first's transaction and finds the id, a duplicate;
//! - in the transactions that record events ([`Reads::Locking`]), every record read is
//!   locked (`FOR UPDATE`) until the commit: two hubs deciding the same edge's presence, or
//!   closing the same digest, take turns, and the second finds what the first wrote;
//! - a transaction PostgreSQL ends for a deadlock is run again from the start;
//! - deliveries are claimed ([`Store::claim`]) with `FOR UPDATE SKIP LOCKED` and a lease
//!   (`holder`, `lease_until`): a hub delivers what it claimed, or what a hub that stopped
//!   renewing its lease (dead, cut off) had claimed, once the lease is over;
//! - ids and outbox numbers come from one sequence, in blocks, so hubs never hand out the
//!   same;
//! - each hub keeps a heartbeat row (`warren_hubs`), for `hub status`.
//!
//! Times of leases and heartbeats are the database's clock, so hubs' clocks need not agree.
//! Every method blocks: call it where the inbox is called, on tokio's blocking pool.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls};

use super::{Batch, Kv, Order, Pairs};
use crate::inbox::InboxError;

/// The schema this version reads and writes; [`MIGRATIONS`] lead to it.
pub const SCHEMA_VERSION: i32 = 1;

/// Each version's change, applied in order by the first hub that finds it missing.
const MIGRATIONS: [&str; 1] = ["
    CREATE TABLE warren_kv (
        k bytea PRIMARY KEY,
        v bytea NOT NULL,
        holder text,
        lease_until bigint
    );
    CREATE SEQUENCE warren_ids INCREMENT BY 1024;
    CREATE TABLE warren_hubs (
        name text PRIMARY KEY,
        host text NOT NULL,
        pid bigint NOT NULL,
        version text NOT NULL,
        started_ms bigint NOT NULL,
        seen_ms bigint NOT NULL
    );
"];

/// The database's clock, in ms since the epoch.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// tokio-postgres's `keepalives_idle` when the connection string sets none.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// How many times a transaction that deadlocked with another hub's is run again.
const CONFLICT_RETRIES: u32 = 20;

/// How a transaction reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Each record read is locked until the commit, so hubs take turns on it.
    Locking,
    /// Reads lock nothing (bookkeeping of deliveries this hub has claimed).
    Plain,
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct Options {
    /// libpq-style connection string or URL.
    pub url: String,
    /// Connections kept.
    pub pool_size: usize,
    /// How long a claimed delivery stays this hub's without being renewed.
    pub lease: Duration,
    /// This hub's name among those sharing the store.
    pub name: String,
}

/// A hub seen in the store, by its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its `[store] name`.
    pub name: String,
    /// Its host and pid.
    pub host: String,
    /// Its pid.
    pub pid: i64,
    /// Its warren version.
    pub version: String,
    /// When it started, ms since the epoch (the database's clock).
    pub started_ms: i64,
    /// How long ago its last heartbeat was, in ms.
    pub seen_ago_ms: i64,
}

/// The shared store.
pub struct Store {
    pool: Pool,
    rt: Handle,
    name: String,
    lease_ms: i64,
    /// The block of ids this hub hands out: next, end.
    ids: Mutex<(u64, u64)>,
    started_ms: i64,
    peers: Mutex<Vec<Peer>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("name", &self.name).finish()
    }
}

impl Store {
    /// Connects, brings the schema up to [`SCHEMA_VERSION`] and writes this hub's heartbeat.
    ///
    /// # Errors
    /// When the database cannot be reached, or holds a newer schema.
    pub async fn connect(o: &Options) -> Result<Self, InboxError> {
        let pool = pool(o)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        migrate(&mut client).await?;
        let row = client.query_one(&format!("SELECT {NOW_MS}"), &[]).await?;
        let store = Self {
            pool,
            rt: Handle::current(),
            name: o.name.clone(),
            lease_ms: i64::try_from(o.lease.as_millis()).unwrap_or(i64::MAX),
            ids: Mutex::new((0, 0)),
            started_ms: row.get(0),
            peers: Mutex::new(Vec::new()),
        };
        Ok(store)
    }

    /// This hub's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `op` in one transaction and commits it; runs it again from the start when
    /// PostgreSQL ends it for a deadlock with another hub's.
    ///
    /// # Errors
    /// `op`'s, or the store's.
    pub fn atomically<R>(
        &self,
        reads: Reads,
        mut op: impl FnMut(&dyn Kv) -> Result<R, InboxError>,
    ) -> Result<R, InboxError> {
        let mut attempt = 0;
        loop {
            let result = self.once(reads, &mut op);
            match result {
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    // Apart again, so the two hubs do not meet at once once more.
                    let jitter = u64::from(std::process::id() % 7 + attempt.min(20));
                    std::thread::sleep(Duration::from_millis(jitter));
                }
                done => return done,
            }
        }
    }

    fn once<R>(
        &self,
        reads: Reads,
        op: &mut impl FnMut(&dyn Kv) -> Result<R, InboxError>,
    ) -> Result<R, InboxError> {
        let mut client = self.rt.block_on(self.pool.get()).map_err(pool_error)?;
        let tx = self.rt.block_on(
            client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start(),
        )?;
        let kv = Tx {
            tx,
            store: self,
            lock: if reads == Reads::Locking {
                " FOR UPDATE"
            } else {
                ""
            },
        };
        let r = op(&kv)?;
        self.rt.block_on(kv.tx.commit())?;
        Ok(r)
    }

    /// Claims for this hub up to `max` records in `start..end`, in key order: those no hub
    /// holds, those whose lease is over, and those it holds itself (renewed).
    ///
    /// # Errors
    /// When the store fails.
    pub fn claim(&self, start: &[u8], end: &[u8], max: usize) -> Result<Pairs, InboxError> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let sql = format!(
            "WITH c AS (
                SELECT k FROM warren_kv
                WHERE k >= $1 AND k < $2
                  AND (lease_until IS NULL OR lease_until < {NOW_MS} OR holder = $3)
                ORDER BY k LIMIT $4
                FOR UPDATE SKIP LOCKED)
             UPDATE warren_kv w SET holder = $3, lease_until = {NOW_MS} + $5
             FROM c WHERE w.k = c.k
             RETURNING w.k, w.v"
        );
        let client = self.rt.block_on(self.pool.get()).map_err(pool_error)?;
        let rows = self
            .rt
            .block_on(client.query(&sql, &[&start, &end, &self.name, &limit, &self.lease_ms]))?;
        let mut out: Pairs = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Gives back every delivery this hub has claimed (it stops): other hubs take them at
    /// once rather than when the claims run out.
    ///
    /// # Errors
    /// When the store fails.
    pub fn release(&self) -> Result<(), InboxError> {
        let client = self.rt.block_on(self.pool.get()).map_err(pool_error)?;
        self.rt.block_on(client.execute(
            "UPDATE warren_kv SET holder = NULL, lease_until = NULL WHERE holder = $1",
            &[&self.name],
        ))?;
        Ok(())
    }

    /// Writes this hub's heartbeat and reads everyone's.
    ///
    /// # Errors
    /// When the store fails.
    pub fn heartbeat(&self) -> Result<(), InboxError> {
        let client = self.rt.block_on(self.pool.get()).map_err(pool_error)?;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let pid = i64::from(std::process::id());
        let version = env!("CARGO_PKG_VERSION");
        self.rt.block_on(client.execute(
            &format!(
                "INSERT INTO warren_hubs (name, host, pid, version, started_ms, seen_ms)
                 VALUES ($1, $2, $3, $4, $5, {NOW_MS})
                 ON CONFLICT (name) DO UPDATE SET host = $2, pid = $3, version = $4,
                     started_ms = $5, seen_ms = {NOW_MS}"
            ),
            &[&self.name, &host, &pid, &version, &self.started_ms],
        ))?;
        let rows = self.rt.block_on(client.query(
            &format!(
                "SELECT name, host, pid, version, started_ms, {NOW_MS} - seen_ms
                 FROM warren_hubs ORDER BY name"
            ),
            &[],
        ))?;
        let peers = rows
            .iter()
            .map(|r| Peer {
                name: r.get(0),
                host: r.get(1),
                pid: r.get(2),
                version: r.get(3),
                started_ms: r.get(4),
                seen_ago_ms: r.get(5),
            })
            .collect();
        *self.peers.lock().unwrap_or_else(PoisonError::into_inner) = peers;
        Ok(())
    }

    /// The hubs the last heartbeat saw, this one among them.
    pub fn peers(&self) -> Vec<Peer> {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn next_id(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<u64, InboxError> {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.0 >= ids.1 {
            // A sequence hands out each block once, whatever transaction asks and whether or
            // not it commits.
            let row = self
                .rt
                .block_on(tx.query_one("SELECT nextval('warren_ids')", &[]))?;
            let start = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            *ids = (start, start + 1024);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }
}

/// What `hub check-config` says of the store: reached, and at which schema version.
///
/// # Errors
/// When it cannot be reached, or its schema is not one this version can use.
pub async fn check(o: &Options) -> Result<String, InboxError> {
    let pool = pool(o)?;
    let client = pool.get().await.map_err(pool_error)?;
    let version = schema_version(&client).await?;
    match version {
        None => Ok("reached; empty: the hub creates its tables at its first start".to_owned()),
        Some(v) if v > SCHEMA_VERSION => Err(newer(v)),
        Some(v) if v < SCHEMA_VERSION => Ok(format!(
            "reached; schema version {v}, which the hub brings to {SCHEMA_VERSION} at its start"
        )),
        Some(v) => Ok(format!("reached; schema version {v}")),
    }
}

fn pool(o: &Options) -> Result<Pool, InboxError> {
    let mut cfg: tokio_postgres::Config = o
        .url
        .parse()
        .map_err(|e| InboxError::Unusable(format!("the connection string: {e}")))?;
    // A hub stuck on a dead connection would hold its row locks, and every other hub with
    // them: a link that stops answering is given up on, and so is a statement or a lock wait
    // that takes too long (the connection string may say otherwise).
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    if cfg.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE {
        cfg.keepalives_idle(Duration::from_secs(10));
    }
    if cfg.get_tcp_user_timeout().is_none() {
        cfg.tcp_user_timeout(Duration::from_secs(30));
    }
    let options = format!(
        "-c lock_timeout=30s -c statement_timeout=60s -c idle_in_transaction_session_timeout=60s {}",
        cfg.get_options().unwrap_or_default()
    );
    cfg.options(options.trim_end());
    let manager = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(o.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| InboxError::Unavailable(e.to_string()))
}

fn pool_error(e: deadpool_postgres::PoolError) -> InboxError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => InboxError::Postgres(e),
        e => InboxError::Unavailable(e.to_string()),
    }
}

fn newer(v: i32) -> InboxError {
    InboxError::Unusable(format!(
        "the store's schema is version {v}, newer than this hub's {SCHEMA_VERSION}: upgrade the hub"
    ))
}

async fn schema_version(client: &tokio_postgres::Client) -> Result<Option<i32>, InboxError> {
    let exists = client
        .query_one("SELECT to_regclass('warren_schema') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM warren_schema", &[])
        .await?;
    Ok(row.get(0))
}

/// Applies the migrations the database lacks, under a lock, so hubs starting together apply
/// each once.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), InboxError> {
    let tx = client.transaction().await?;
    // Any constant: the lock is the database's, held until the commit.
    tx.execute("SELECT pg_advisory_xact_lock(7420331)", &[])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS warren_schema (version integer NOT NULL)")
        .await?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM warren_schema", &[])
        .await?;
    let have: i32 = row.get(0);
    if have > SCHEMA_VERSION {
        return Err(newer(have));
    }
    for (v, sql) in (1..).zip(MIGRATIONS.iter()) {
        if v > have {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO warren_schema (version) VALUES ($1)", &[&v])
                .await?;
            tracing::info!(version = v, "Store schema migrated.");
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One transaction, as [`Kv`].
struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    store: &'a Store,
    /// What ends each `SELECT` of records: `FOR UPDATE`, or nothing.
    lock: &'static str,
}

impl Tx<'_> {
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, InboxError> {
        Ok(self.store.rt.block_on(self.tx.query(sql, params))?)
    }
}

impl Kv for Tx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InboxError> {
        let sql = format!("SELECT v FROM warren_kv WHERE k = $1{}", self.lock);
        let rows = self.query(&sql, &[&key])?;
        if !rows.is_empty() || self.lock.is_empty() {
            return Ok(rows.first().map(|r| r.get(0)));
        }
        // A row lock holds only a row that exists: for one that does not, the key itself is
        // locked, so that two hubs creating the same record (a throttle's first event, an
        // edge's first presence) take turns too; then read again, in a statement of its own
        // that sees what the other hub committed meanwhile.
        self.query(
            "SELECT pg_advisory_xact_lock(hashtextextended(encode($1::bytea, 'hex'), 0))",
            &[&key],
        )?;
        let rows = self.query(&sql, &[&key])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, InboxError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT k, v FROM warren_kv WHERE k = ANY($1){}", self.lock);
        let rows = self.query(&sql, &[&keys])?;
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    fn get_or_insert_many(
        &self,
        keys: &[Vec<u8>],
        value: &[u8],
    ) -> Result<Vec<Option<Vec<u8>>>, InboxError> {
        let inserted = self.query(
            "INSERT INTO warren_kv (k, v) SELECT k, $2 FROM unnest($1::bytea[]) AS k
             ON CONFLICT (k) DO NOTHING RETURNING k",
            &[&keys, &value],
        )?;
        let inserted: std::collections::BTreeSet<Vec<u8>> =
            inserted.iter().map(|r| r.get(0)).collect();
        let there: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| !inserted.contains(*k))
            .cloned()
            .collect();
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        if !there.is_empty() {
            let rows = self.query(
                "SELECT k, v FROM warren_kv WHERE k = ANY($1) FOR UPDATE",
                &[&there],
            )?;
            found = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    fn holds(&self, key: &[u8]) -> Result<bool, InboxError> {
        let rows = self.query(
            "SELECT 1 FROM warren_kv WHERE k = $1 AND holder = $2 FOR UPDATE",
            &[&key, &self.store.name],
        )?;
        Ok(!rows.is_empty())
    }

    fn get_or_insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, InboxError> {
        // Inserted, or waited for the transaction that inserted it and left alone.
        let inserted = self.query(
            "INSERT INTO warren_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING RETURNING 1",
            &[&key, &value],
        )?;
        if !inserted.is_empty() {
            return Ok(None);
        }
        // There: locked, as the first transaction's commit left it.
        let sql = "SELECT v FROM warren_kv WHERE k = $1 FOR UPDATE";
        let rows = self.query(sql, &[&key])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Pairs, InboxError> {
        let (mut sql, limit) = range_sql("k, v", end.is_some(), order, limit);
        sql += self.lock;
        let rows = match end {
            Some(end) => self.query(&sql, &[&start, &limit, &end])?,
            None => self.query(&sql, &[&start, &limit])?,
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn keys(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<Vec<u8>>, InboxError> {
        let (sql, limit) = range_sql("k", end.is_some(), Order::Forward, usize::MAX);
        let rows = match end {
            Some(end) => self.query(&sql, &[&start, &limit, &end])?,
            None => self.query(&sql, &[&start, &limit])?,
        };
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn count(&self, start: &[u8], end: Option<&[u8]>) -> Result<u64, InboxError> {
        let rows = match end {
            Some(end) => self.query(
                "SELECT count(*) FROM warren_kv WHERE k >= $1 AND k < $2",
                &[&start, &end],
            )?,
            None => self.query("SELECT count(*) FROM warren_kv WHERE k >= $1", &[&start])?,
        };
        let n: i64 = rows.first().map_or(0, |r| r.get(0));
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn next_id(&self) -> Result<u64, InboxError> {
        self.store.next_id(&self.tx)
    }

    fn apply(&self, batch: Batch) -> Result<(), InboxError> {
        // The last write to a key wins, as in sled's batches; one statement per kind.
        let last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = batch.into_iter().collect();
        let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in last {
            match v {
                Some(v) => {
                    keys.push(k);
                    values.push(v);
                }
                None => gone.push(k),
            }
        }
        if !gone.is_empty() {
            self.query(
                "DELETE FROM warren_kv WHERE k = ANY($1) RETURNING 1",
                &[&gone],
            )?;
        }
        if !keys.is_empty() {
            self.query(
                "INSERT INTO warren_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])
                 ON CONFLICT (k) DO UPDATE SET v = excluded.v RETURNING 1",
                &[&keys, &values],
            )?;
        }
        Ok(())
    }

    fn hold(&self, key: &[u8], ms: u64) -> Result<(), InboxError> {
        let ms = i64::try_from(ms).unwrap_or(i64::MAX / 2);
        self.query(
            &format!(
                "UPDATE warren_kv SET holder = $2, lease_until = {NOW_MS} + $3 + $4
                 WHERE k = $1 RETURNING 1"
            ),
            &[&key, &self.store.name, &ms, &self.store.lease_ms],
        )?;
        Ok(())
    }

    fn sync(&self) -> Result<(), InboxError> {
        // The commit is durable (synchronous_commit, PostgreSQL's default).
        Ok(())
    }
}

/// `SELECT what` over `$1 <= k (< $3)`, `LIMIT $2`, and the limit as PostgreSQL takes it.
fn range_sql(what: &str, bounded: bool, order: Order, limit: usize) -> (String, i64) {
    let end = if bounded { " AND k < $3" } else { "" };
    let dir = match order {
        Order::Forward => "ASC",
        Order::Backward => "DESC",
    };
    let sql = format!("SELECT {what} FROM warren_kv WHERE k >= $1{end} ORDER BY k {dir} LIMIT $2");
    (sql, i64::try_from(limit).unwrap_or(i64::MAX))
}

impl InboxError {
    /// Whether the store could not be reached (no answer, a refused or lost connection, a
    /// server starting or shutting down), rather than refused what it was asked: worth
    /// waiting for at start.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Postgres(e) => match e.code() {
                None => true,
                Some(c) => {
                    c.code().starts_with("08")
                        || *c == SqlState::CANNOT_CONNECT_NOW
                        || *c == SqlState::ADMIN_SHUTDOWN
                }
            },
            _ => false,
        }
    }

    /// Whether PostgreSQL ended a transaction for a conflict with another's: run it again.
    pub fn is_conflict(&self) -> bool {
        let Self::Postgres(e) = self else {
            return false;
        };
        e.code().is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        })
    }
}

/// `e` in words: PostgreSQL's message and code when it sent one (tokio-postgres says only
/// "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
