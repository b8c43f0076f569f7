//! Counters shared by the edge's tasks, and rate-limited logging of rejected datagrams.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use warren_daemon::refusals::Refusals;

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
    rejected: Refusals,
    link: Mutex<Link>,
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
    /// of others since).
    pub fn reject(&self, reason: &'static str, source: SocketAddr, detail: &dyn Display) {
        self.rejected.refuse("a datagram", reason, &source, detail);
    }

    /// Counts `n` events refused for `reason` after decoding (logged by the caller).
    pub fn reject_many(&self, reason: &'static str, n: u64) {
        self.rejected.count(reason, n);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a link state change.
    pub fn set_link(&self, connected: bool, error: Option<String>) {
        let mut link = lock(&self.link);
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
