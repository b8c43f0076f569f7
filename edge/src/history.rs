//! What the edge remembers of each recent event, for `edge trace ID`: when it was accepted and
//! from where, when it was sent to the hub and how often, when the hub acked it.
//!
//! The queue already keeps an event until its ack (and answers for it after a restart); this
//! keeps the last [`CAPACITY`] events in memory besides, so an acked one can still be traced.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use warren_proto::EventId;

/// Events remembered; the oldest is forgotten first.
pub const CAPACITY: usize = 10_000;

/// One event's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the edge accepted it, ms since the epoch.
    pub accepted_ms: u64,
    /// The datagram's source; unknown for an event queued before a restart.
    pub source: Option<SocketAddr>,
    /// The same id received again while remembered.
    pub duplicates: u32,
    /// Times published to the hub.
    pub sends: u32,
    /// The first publish, ms since the epoch.
    pub first_sent_ms: Option<u64>,
    /// The last publish.
    pub last_sent_ms: Option<u64>,
    /// When the hub's ack arrived.
    pub acked_ms: Option<u64>,
}

/// The recent events, by id.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<EventId, Record>,
    order: VecDeque<EventId>,
}

impl Inner {
    fn entry(&mut self, id: EventId, accepted_ms: u64) -> &mut Record {
        if !self.records.contains_key(&id) {
            while self.order.len() >= CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.records.remove(&old);
                }
            }
            self.order.push_back(id);
        }
        self.records.entry(id).or_insert_with(|| Record {
            accepted_ms,
            ..Record::default()
        })
    }
}

impl History {
    /// A datagram with this id passed every check.
    pub fn accepted(&self, id: EventId, source: SocketAddr, at_ms: u64) {
        let mut inner = self.lock();
        let known = inner.records.contains_key(&id);
        let r = inner.entry(id, at_ms);
        if known {
            r.duplicates += 1;
        } else {
            r.source = Some(source);
        }
    }

    /// The event accepted at `accepted_ms` was published to the hub at `at_ms`.
    pub fn sent(&self, id: EventId, accepted_ms: u64, at_ms: u64) {
        let mut inner = self.lock();
        let r = inner.entry(id, accepted_ms);
        r.sends += 1;
        r.first_sent_ms.get_or_insert(at_ms);
        r.last_sent_ms = Some(at_ms);
    }

    /// The hub acked these events at `at_ms`.
    pub fn acked(&self, ids: &[EventId], at_ms: u64) {
        let mut inner = self.lock();
        for id in ids {
            if let Some(r) = inner.records.get_mut(id) {
                r.acked_ms.get_or_insert(at_ms);
            }
        }
    }

    /// What is remembered of `id`.
    pub fn get(&self, id: &EventId) -> Option<Record> {
        self.lock().records.get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A history that is at worst stale keeps serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What `edge trace ID --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeTrace {
    /// The event id.
    pub id: EventId,
    /// This edge.
    pub edge_id: String,
    /// What the edge remembers of it.
    pub record: Option<Record>,
    /// Whether it is still in the queue (not yet acked).
    pub queued: bool,
    /// Whether the link to the hub is up now.
    pub connected: bool,
}

impl EdgeTrace {
    /// Whether the edge knows the event at all.
    pub fn found(&self) -> bool {
        self.record.is_some() || self.queued
    }
}

/// The trace for people.
pub fn human(t: &EdgeTrace) -> String {
    let time = warren_daemon::cli::local_time;
    let mut out = format!("event {} on edge {}\n", t.id, t.edge_id);
    let Some(r) = &t.record else {
        out += if t.queued {
            "queued; when it arrived is no longer remembered (a restart, or more than 10 000 \
             events since), and it has not been sent since\n"
        } else {
            "no record\n"
        };
        return out;
    };
    let from = r.source.map_or_else(
        || "a sender before the last restart".to_owned(),
        |s| s.to_string(),
    );
    let _ = writeln!(out, "{}  accepted from {from}", time(r.accepted_ms));
    if r.duplicates > 0 {
        let _ = writeln!(out, "received {} more time(s), queued once", r.duplicates);
    }
    if let Some(first) = r.first_sent_ms {
        let _ = writeln!(out, "{}  sent to the hub", time(first));
    }
    if let Some(last) = r.last_sent_ms.filter(|_| r.sends > 1) {
        let _ = writeln!(out, "{}  sent again ({} sends in all)", time(last), r.sends);
    }
    match (r.acked_ms, t.queued) {
        (Some(acked), _) => {
            let _ = writeln!(
                out,
                "{}  acked by the hub: it is durable there (`hub trace {}`)",
                time(acked),
                t.id
            );
        }
        (None, true) if !t.connected => {
            out += "queued, waiting for the hub: the link is down (`edge status` says why)\n";
        }
        (None, true) => out += "queued, waiting for the hub's ack\n",
        (None, false) => {
            out += "no longer queued: dropped to make room, or acked before a restart\n"
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> EventId {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&n.to_be_bytes());
        EventId::from_bytes(b)
    }

    #[test]
    fn follows_an_event_and_forgets_the_oldest() {
        let h = History::default();
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap_or_else(|_| unreachable!());
        h.accepted(id(0), src, 10);
        h.accepted(id(0), src, 11);
        h.sent(id(0), 10, 12);
        h.sent(id(0), 10, 20);
        h.acked(&[id(0)], 21);
        let r = h.get(&id(0)).unwrap_or_default();
        assert_eq!(
            r,
            Record {
                accepted_ms: 10,
                source: Some(src),
                duplicates: 1,
                sends: 2,
                first_sent_ms: Some(12),
                last_sent_ms: Some(20),
                acked_ms: Some(21),
            }
        );
        // An event queued before a restart is first heard of when it is sent.
        h.sent(id(1), 5, 30);
        assert_eq!(
            h.get(&id(1)).map(|r| (r.accepted_ms, r.source)),
            Some((5, None))
        );
        for n in 2..=CAPACITY as u32 {
            h.accepted(id(n), src, 40);
        }
        assert!(h.get(&id(0)).is_none(), "the oldest is forgotten");
        assert!(h.get(&id(1)).is_some() && h.get(&id(CAPACITY as u32)).is_some());
        assert_eq!(h.lock().order.len(), CAPACITY);
    }
}
