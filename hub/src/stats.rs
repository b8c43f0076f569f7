//! Counters and the edge table, shared by the hub's tasks and read by `hub status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use warren_daemon::refusals::Refusals;
use warren_proto::{Presence, PresenceState};

use crate::notify::NotifierName;

/// Monotonic counters since start, and live state.
#[derive(Debug, Default)]
pub struct Stats {
    /// Envelopes received (valid).
    pub received: AtomicU64,
    /// Envelopes dropped as duplicates.
    pub duplicates: AtomicU64,
    /// Payloads that were not valid envelopes.
    pub invalid: Refusals,
    /// Event ids acked to edges.
    pub acked: AtomicU64,
    /// Envelopes left unacked because the hub's disk was full (their edges send them again).
    pub unacked_disk_full: AtomicU64,
    /// Envelopes left unacked because the shared store could not be reached.
    pub unacked_store: AtomicU64,
    /// Times the hub did not run (stopped, suspended).
    pub pauses: warren_daemon::pause::Pauses,
    /// Logins republished on the legacy topic.
    pub republished: AtomicU64,
    /// Notifications a route's throttle folded into a digest.
    pub folded: AtomicU64,
    /// Digests made.
    pub digests: AtomicU64,
    /// Clients, handshakes and packets the front turned away, by reason.
    pub refused: Refusals,
    /// Whether the hub's MQTT client is connected to the broker and subscribed to events; the
    /// TLS front waits for it before it lets edges in.
    pub bus_connected: watch::Sender<bool>,
    notifiers: Mutex<BTreeMap<String, Arc<NotifierCounters>>>,
    edges: Mutex<BTreeMap<String, EdgeInfo>>,
}

/// Per-notifier counters.
#[derive(Debug, Default)]
pub struct NotifierCounters {
    /// Deliveries made.
    pub delivered: AtomicU64,
    /// Failed attempts.
    pub failures: AtomicU64,
    /// Deliveries given up on.
    pub dead: AtomicU64,
    /// The last attempt's error, while it is failing.
    last_error: Mutex<Option<String>>,
}

impl NotifierCounters {
    /// Records the last attempt's error, or that it succeeded.
    pub fn set_last_error(&self, error: Option<String>) {
        *lock(&self.last_error) = error;
    }

    /// The last attempt's error, if it failed.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}

/// What the hub knows of one edge.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EdgeInfo {
    /// Its site.
    pub site: String,
    /// Whether its presence says it is connected.
    pub online: bool,
    /// Since when it has been online (or offline), ms since the epoch, if that changed while
    /// this hub was running: what a restarted hub first hears is a state, not a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// When this hub first heard from it, ms since the epoch (not for an edge it knows only
    /// from its store, found silent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_heard_ms: Option<u64>,
    /// Last envelope or presence from it, ms since the epoch.
    pub last_seen_ms: u64,
    /// Its queue depth, as its last presence said.
    pub queue_depth: u64,
    /// The age of its oldest queued event when its last presence was written, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_age_ms: Option<u64>,
    /// Its software version, as its last presence said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Events received from it.
    pub events: u64,
    /// When the certificate it last connected with ends, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_not_after: Option<i64>,
    /// What keeps it from accepting events, as its last presence said: `disk_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Whether `online` has been set (by a presence message or a decided change) rather than
    /// defaulted for an edge first heard of by its certificate or an event.
    #[serde(skip)]
    pub(crate) state_known: bool,
}

impl EdgeInfo {
    /// What a presence message says it is: a change once its state is known.
    fn said(&mut self, online: bool, at_ms: u64) {
        if self.state_known && online != self.online {
            self.since_ms = Some(at_ms);
        }
        self.state_known = true;
        self.online = online;
    }
}

impl Stats {
    /// The counters of `name`, created on first use.
    pub fn notifier(&self, name: &NotifierName) -> Arc<NotifierCounters> {
        lock(&self.notifiers)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A figure that grows with every event received and every delivery attempted: the hub
    /// is idle while it stands still.
    pub fn work(&self) -> u64 {
        let attempts: u64 = lock(&self.notifiers)
            .values()
            .map(|n| n.delivered.load(Ordering::Relaxed) + n.failures.load(Ordering::Relaxed))
            .sum();
        self.received.load(Ordering::Relaxed) + attempts
    }

    /// Records an envelope from `edge`.
    pub fn saw_event(&self, edge: &str, site: &str, now_ms: u64) {
        let mut edges = lock(&self.edges);
        let e = heard(&mut edges, edge, now_ms);
        site.clone_into(&mut e.site);
        e.last_seen_ms = now_ms;
        e.events += 1;
    }

    /// Records the end of the certificate `edge` connected with.
    pub fn saw_certificate(&self, edge: &str, not_after: i64) {
        heard(&mut lock(&self.edges), edge, crate::now_ms()).cert_not_after = Some(not_after);
    }

    /// Applies a presence message.
    pub fn saw_presence(&self, p: &Presence, now_ms: u64) {
        let mut edges = lock(&self.edges);
        let e = heard(&mut edges, &p.edge, now_ms);
        e.site.clone_from(&p.site);
        e.said(p.state == PresenceState::Online, now_ms);
        e.queue_depth = p.queue_depth;
        e.oldest_age_ms = p.oldest_age_ms;
        e.version.clone_from(&p.version);
        e.last_seen_ms = now_ms;
        if p.state == PresenceState::Online {
            e.problem.clone_from(&p.problem);
        }
    }

    /// Records a presence change decided by [`crate::presence`] (silence, too) — also of an
    /// edge known only from before a restart, so monitoring sees the one that never came back.
    pub fn set_online(&self, edge: &str, site: &str, online: bool, since_ms: u64) {
        let mut edges = lock(&self.edges);
        let e = edges.entry(edge.to_owned()).or_default();
        site.clone_into(&mut e.site);
        // A decided change; one the presence messages already showed keeps its time. (Only
        // one they showed: after a restart, the first presence is a state, and the change the
        // tracker announces from its store is the news.)
        if !e.state_known || online != e.online || e.since_ms.is_none() {
            e.since_ms = Some(since_ms);
        }
        e.state_known = true;
        e.online = online;
    }

    /// The edge table.
    pub fn edges(&self) -> BTreeMap<String, EdgeInfo> {
        lock(&self.edges).clone()
    }

    /// Per-notifier counters.
    pub fn notifiers(&self) -> BTreeMap<String, Arc<NotifierCounters>> {
        lock(&self.notifiers).clone()
    }
}

/// The entry of `edge`, heard from at `now_ms`.
fn heard<'a>(
    edges: &'a mut BTreeMap<String, EdgeInfo>,
    edge: &str,
    now_ms: u64,
) -> &'a mut EdgeInfo {
    let e = edges.entry(edge.to_owned()).or_default();
    e.first_heard_ms.get_or_insert(now_ms);
    e
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(online: bool) -> Presence {
        Presence {
            version: "0.1.0".into(),
            oldest_age_ms: Some(2000),
            ..crate::testing::presence("gw", online)
        }
    }

    #[test]
    fn since_is_a_change_seen_not_the_first_state_heard() {
        let s = Stats::default();
        s.saw_certificate("gw", 1);
        s.saw_presence(&presence(true), 1000);
        let gw = &s.edges()["gw"];
        assert!(gw.online);
        assert_eq!(
            gw.since_ms, None,
            "a restarted hub hears a state, not a change"
        );
        assert!(gw.first_heard_ms.is_some());
        assert_eq!((gw.queue_depth, gw.oldest_age_ms), (3, Some(2000)));
        s.saw_presence(&presence(true), 2000);
        assert_eq!(s.edges()["gw"].since_ms, None);
        s.saw_presence(&presence(false), 3000);
        assert_eq!(s.edges()["gw"].since_ms, Some(3000));
        // The presence tracker's decision of the same change keeps the time it was seen.
        s.set_online("gw", "paris", false, 3500);
        assert_eq!(s.edges()["gw"].since_ms, Some(3000));
        s.set_online("gw", "paris", true, 4000);
        assert_eq!(
            (s.edges()["gw"].online, s.edges()["gw"].since_ms),
            (true, Some(4000))
        );
        // An edge the hub knew only from its store, found silent: the decision is the change,
        // and the hub never heard from it.
        s.set_online("ups", "lyon", false, 5000);
        assert_eq!(
            (s.edges()["ups"].since_ms, s.edges()["ups"].first_heard_ms),
            (Some(5000), None)
        );
        // One offline in the store that reconnects after a restart: its first presence is a
        // state; the tracker's "back online" is the change.
        let db = Presence {
            edge: "db".into(),
            ..presence(true)
        };
        s.saw_presence(&db, 6000);
        s.set_online("db", "paris", true, 6000);
        assert_eq!(s.edges()["db"].since_ms, Some(6000));
    }
}
