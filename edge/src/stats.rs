//! What the edge's tasks share for `edge status` and `edge trace`: counters, the link, the
//! last datagram received and rejected, the recent events' history; and rate-limited logging
//! of rejected datagrams.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use warren_daemon::refusals::Refusals;

use crate::history::History;

/// Monotonic counters, since the daemon started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams made durable.
    pub accepted: AtomicU64,
    /// Datagrams whose id was already queued.
    pub duplicates: AtomicU64,
    /// Envelopes published (first sends).
    pub sent: AtomicU64,
    /// Envelopes published again (reconnect or ack timeout).
    pub resent: AtomicU64,
    /// Events the hub acked.
    pub acked: AtomicU64,
    /// Old events deleted to make room (`drop_oldest`).
    pub dropped_oldest: AtomicU64,
    /// Events sent and awaiting the hub's ack (a gauge).
    pub in_flight: AtomicU64,
    /// The recent events, for `edge trace`.
    pub history: History,
    /// Times this edge did not run (stopped, suspended).
    pub pauses: warren_daemon::pause::Pauses,
    rejected: Refusals,
    link: Mutex<Link>,
    last_datagram: Mutex<Option<Datagram>>,
    last_rejected: Mutex<Option<Rejection>>,
}

/// A datagram received: "is the edge listening on that address?"
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// From where.
    pub source: SocketAddr,
}

/// A datagram refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// From where.
    pub source: SocketAddr,
    /// The counter it went to (`bad_signature`, `source_not_allowed`, …).
    pub reason: String,
    /// The details.
    pub detail: String,
}

/// The state of the link to the hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Link {
    /// Whether the MQTT session is up.
    pub connected: bool,
    /// Since when (ms since the epoch) it has been up or down; 0 before the first attempt.
    pub since_ms: u64,
    /// The last connection error.
    pub last_error: Option<String>,
    /// The `[hub] address` it is connected to, or last tried.
    #[serde(default)]
    pub broker: Option<String>,
}

/// A copy of the counters, for the status socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// See [`Stats::accepted`].
    pub accepted: u64,
    /// See [`Stats::duplicates`].
    pub duplicates: u64,
    /// See [`Stats::sent`].
    pub sent: u64,
    /// See [`Stats::resent`].
    pub resent: u64,
    /// See [`Stats::acked`].
    pub acked: u64,
    /// See [`Stats::dropped_oldest`].
    pub dropped_oldest: u64,
    /// Datagrams refused, by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl Stats {
    /// Counts a refused datagram and logs it, at most once per reason per 10 s (with the number
    /// of others since); it becomes the last rejected one.
    pub fn reject(&self, reason: &'static str, source: SocketAddr, detail: &dyn Display) {
        self.rejected.refuse("a datagram", reason, &source, detail);
        *lock(&self.last_rejected) = Some(Rejection {
            at_ms: crate::now_ms(),
            source,
            reason: reason.to_owned(),
            detail: detail.to_string(),
        });
    }

    /// Notes a datagram received from `source`, before any check.
    pub fn received(&self, source: SocketAddr, at_ms: u64) {
        *lock(&self.last_datagram) = Some(Datagram { at_ms, source });
    }

    /// The last datagram received.
    pub fn last_datagram(&self) -> Option<Datagram> {
        lock(&self.last_datagram).clone()
    }

    /// The last datagram rejected.
    pub fn last_rejected(&self) -> Option<Rejection> {
        lock(&self.last_rejected).clone()
    }

    /// Counts `n` events refused for `reason` after decoding (logged by the caller).
    pub fn reject_many(&self, reason: &'static str, n: u64) {
        self.rejected.count(reason, n);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A figure that grows with every event queued, sent or acked: the edge is idle while it
    /// stands still.
    pub fn work(&self) -> u64 {
        [&self.accepted, &self.sent, &self.acked]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Records a link state change, with `broker`'s address.
    pub fn set_link(&self, connected: bool, broker: String, error: Option<String>) {
        let mut link = lock(&self.link);
        link.broker = Some(broker);
        if link.connected != connected || link.since_ms == 0 {
            link.since_ms = crate::now_ms();
        }
        link.connected = connected;
        if error.is_some() {
            link.last_error = error;
        }
    }

    /// The link state.
    pub fn link(&self) -> Link {
        lock(&self.link).clone()
    }

    /// A snapshot of every counter.
    pub fn counters(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            sent: get(&self.sent),
            resent: get(&self.resent),
            acked: get(&self.acked),
            dropped_oldest: get(&self.dropped_oldest),
            rejected: self.rejected.counts(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay usable even if a holder panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
